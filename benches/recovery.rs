//! Recovery scan speed: opening a log verifies every frame of every segment.
//!
//! `cargo bench --bench recovery`. Reports bytes of log scanned per second by
//! `Wal::open_read_only` (which scans and verifies everything, writing nothing).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use groupwal::{Durability, Record, Wal, WalOptions};
use std::time::Duration;

const LOG_BYTES: usize = 256 << 20;

fn recovery_scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("recovery_scan");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for record_bytes in [116usize, 4096] {
        let dir = tempfile::tempdir_in(".").expect("tempdir");
        let options = WalOptions::default().segment_bytes(64 << 20);
        let scanned = {
            let wal = Wal::open(dir.path(), options.clone()).expect("open");
            let payload = vec![3u8; record_bytes];
            let batch: Vec<Record<'_>> = (0..1000)
                .map(|_| Record::new(&payload).durability(Durability::Flush))
                .collect();
            while wal.stats().bytes < LOG_BYTES as u64 {
                for r in wal.append_many(&batch) {
                    r.expect("append");
                }
            }
            wal.close().expect("close");
            wal.stats().bytes
        };
        g.throughput(Throughput::Bytes(scanned));
        g.bench_function(format!("{record_bytes}B_records"), |b| {
            b.iter(|| {
                let wal = Wal::open_read_only(dir.path(), options.clone()).expect("open");
                assert_eq!(wal.recovery_report().bytes_scanned, scanned);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, recovery_scan);
criterion_main!(benches);
