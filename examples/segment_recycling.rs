//! Measures what segment recycling saves: the append that rotates into a new segment when
//! the segment is (a) a new file zero-filled to 64 MiB, (b) a freed segment file from the
//! pool; and the time to reopen a log whose active segment is (a) zero-filled or (b) a
//! recycled file (63 MiB of stale frames after its one record, which recovery's search for
//! a valid frame after the end must look through). Rounds are interleaved (a, b, a, b, …).
//! The background preparation of the next segment is off, so the rotating append pays for
//! the whole creation.
//!
//! `cargo run --release --example segment_recycling -- [DIR] [ROUNDS]`

use groupwal::{Record, Wal, WalOptions};
use std::path::Path;
use std::time::{Duration, Instant};

const SEGMENT_BYTES: u64 = 64 << 20;
const RECORD_BYTES: usize = 1 << 20;

fn options(recycle: usize) -> WalOptions {
    WalOptions::default()
        .segment_bytes(SEGMENT_BYTES)
        .recycle_segments(recycle)
        .prepare_next_segment(false)
}

/// Appends 1 MiB `Sync` records until the log has `segments` segments; returns the time of
/// the append that rotated and the median of the others.
fn fill_until(wal: &Wal, segments: usize) -> (Duration, Duration) {
    let payload = vec![0x5au8; RECORD_BYTES];
    let mut others = Vec::new();
    loop {
        let before = wal.segments().len();
        let t = Instant::now();
        wal.append(Record::new(&payload)).expect("append");
        let took = t.elapsed();
        if wal.segments().len() > before && wal.segments().len() >= segments {
            others.sort();
            return (took, others[others.len() / 2]);
        }
        others.push(took);
    }
}

/// One round of one case in a fresh directory: (rotating append, median append, reopen).
fn round(dir: &Path, recycled: bool) -> (Duration, Duration, Duration) {
    let _ = std::fs::remove_dir_all(dir);
    let wal = Wal::open(dir, options(if recycled { 2 } else { 0 })).expect("open");
    let timed = if recycled {
        // Segment 1 filled and freed into the pool; segment 3 is made from it.
        fill_until(&wal, 2);
        assert_eq!(wal.truncate_before(wal.segments()[1].first_lsn).unwrap(), 1);
        fill_until(&wal, 2)
    } else {
        fill_until(&wal, 2)
    };
    wal.close().expect("close");
    drop(wal);
    let t = Instant::now();
    let wal = Wal::open(dir, options(2)).expect("reopen");
    let reopen = t.elapsed();
    assert_eq!(wal.recovery_report().torn_tail, None);
    drop(wal);
    (timed.0, timed.1, reopen)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("groupwal-recycling-probe"));
    let rounds: usize = args.next().map_or(5, |r| r.parse().expect("ROUNDS"));
    println!("case        rotating append ms   other appends (median) ms   reopen ms");
    for _ in 0..rounds {
        for (name, recycled) in [("zero-filled", false), ("recycled", true)] {
            let (rotating, median, reopen) = round(&base.join(name), recycled);
            println!(
                "{name:<11} {:>19} {:>27} {:>11}",
                ms(rotating),
                ms(median),
                ms(reopen)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
