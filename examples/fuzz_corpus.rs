//! Writes the seed corpora of the fuzz targets (`groupwal::testing::fuzz::seed_corpus`) into
//! `<dir>/<target>/seed-NNNN` (default dir: `fuzz/corpus`). `fuzz/smoke.sh` runs it before
//! fuzzing; the corpus folders are not committed.
//!
//! ```sh
//! cargo run --features sim --example fuzz_corpus -- fuzz/corpus
//! ```

use groupwal::testing::fuzz::{seed_corpus, TARGETS};
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    for target in TARGETS {
        let out = dir.join(target);
        std::fs::create_dir_all(&out)?;
        let inputs = seed_corpus(target);
        for (i, input) in inputs.iter().enumerate() {
            std::fs::write(out.join(format!("seed-{i:04}")), input)?;
        }
        println!(
            "{target}: {} seed inputs in {}",
            inputs.len(),
            out.display()
        );
    }
    Ok(())
}
