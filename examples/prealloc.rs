//! Measures what the segment preallocation choice costs: 4 KiB sequential writes, each
//! followed by `fdatasync`, into a file that is (a) growing by appends, (b) preallocated with
//! `fallocate` (unwritten extents), (c) zero-filled. Also times creating a segment each way.
//!
//! `cargo run --release --example prealloc -- [DIR] [SECONDS_PER_CASE]`

use groupwal::io::{OpenMode, Preallocation, StdStorage, Storage, StorageFile};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLOCK: usize = 4096;
const FILE_BYTES: u64 = 64 << 20;

fn open(dir: &Path, name: &str) -> Arc<dyn StorageFile> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    StdStorage
        .open_file(&path, OpenMode::CreateNew)
        .expect("create file")
}

/// Writes+syncs 4 KiB blocks sequentially for `secs`; returns syncs per second.
fn run(file: &dyn StorageFile, secs: f64) -> f64 {
    let block = vec![0xabu8; BLOCK];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs && (n + 1) * (BLOCK as u64) < FILE_BYTES {
        file.write_all_at(&block, n * BLOCK as u64).expect("write");
        file.sync_data().expect("fdatasync");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn create(dir: &Path, name: &str, how: Option<Preallocation>) -> (Arc<dyn StorageFile>, Duration) {
    let t = Instant::now();
    let f = open(dir, name);
    if let Some(how) = how {
        f.allocate(FILE_BYTES, how).expect("allocate");
    }
    f.sync_all().expect("fsync");
    (f, t.elapsed())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| ".".into());
    let secs: f64 = args.next().map_or(3.0, |s| s.parse().expect("seconds"));
    let dir = tempfile::tempdir_in(dir).expect("temp dir");
    println!(
        "{:<28} {:>14} {:>16}",
        "file", "create (ms)", "4K write+fdatasync/s"
    );
    for _round in 0..2 {
        for (name, how) in [
            ("append (no prealloc)", None),
            ("fallocate", Some(Preallocation::Fallocate)),
            ("zero-fill", Some(Preallocation::ZeroFill)),
        ] {
            let (file, took) = create(dir.path(), "f", how);
            let rate = run(&*file, secs);
            println!("{name:<28} {:>14.1} {rate:>16.0}", took.as_secs_f64() * 1e3);
        }
    }
}
