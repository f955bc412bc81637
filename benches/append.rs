//! Append throughput: single writer by record size, and group commit against a naive
//! baseline (one write + fdatasync per record under a mutex) at several writer counts.
//!
//! `cargo bench --bench append`. Each measurement is one record committed `Sync`; criterion
//! reports time per record, so throughput is its inverse. Compare ratios from one run: the
//! disk's fsync latency drifts with whatever else the machine does.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use groupwal::{Record, Wal, WalOptions};
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 16-byte key + 100-byte value, the record of the targets.
const SMALL_RECORD: usize = 116;
const FILE_BYTES: u64 = 256 << 20;

fn options() -> WalOptions {
    WalOptions::default().segment_bytes(FILE_BYTES)
}

/// The naive baseline: one preallocated file, one pwrite + fdatasync per record, under a lock.
struct Naive {
    file: Mutex<(File, u64)>,
}

impl Naive {
    fn new(dir: &std::path::Path) -> Naive {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join("naive"))
            .expect("create naive file");
        // Zero-filled like groupwal's segments, so both overwrite written blocks.
        let zeros = vec![0u8; 1 << 20];
        for i in 0..FILE_BYTES >> 20 {
            file.write_all_at(&zeros, i << 20).expect("zero fill");
        }
        file.sync_all().expect("sync");
        Naive {
            file: Mutex::new((file, 0)),
        }
    }

    fn append(&self, payload: &[u8]) {
        let mut g = self.file.lock();
        let off = g.1;
        g.0.write_all_at(payload, off).expect("write");
        g.0.sync_data().expect("fdatasync");
        g.1 = (off + payload.len() as u64) % (FILE_BYTES - (1 << 20));
    }
}

/// Runs `iters` appends spread over `writers` threads; returns the elapsed time.
fn run_threads(writers: usize, iters: u64, append: &(dyn Fn(&[u8]) + Sync)) -> Duration {
    let per = iters.div_ceil(writers as u64);
    let payload = vec![7u8; SMALL_RECORD];
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..writers {
            s.spawn(|| {
                for _ in 0..per {
                    append(&payload);
                }
            });
        }
    });
    start
        .elapsed()
        .mul_f64(iters as f64 / (per * writers as u64) as f64)
}

fn single_writer_by_size(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_sync_1_writer");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for size in [64usize, 512, 4096, 16 << 10, 64 << 10] {
        let dir = tempfile::tempdir_in(".").expect("tempdir");
        let wal = Wal::open(dir.path(), options()).expect("open");
        let payload = vec![1u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| wal.append(Record::new(&payload)).expect("append"))
        });
    }
    g.finish();
}

fn group_commit_vs_naive(c: &mut Criterion) {
    let mut g = c.benchmark_group("commit_116B_sync");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for writers in [1usize, 4, 16, 64] {
        g.throughput(Throughput::Elements(1));
        let dir = tempfile::tempdir_in(".").expect("tempdir");
        let wal = Arc::new(Wal::open(dir.path(), options()).expect("open"));
        g.bench_with_input(BenchmarkId::new("group", writers), &writers, |b, &w| {
            b.iter_custom(|iters| {
                run_threads(w, iters, &|p| {
                    wal.append(Record::new(p)).expect("append");
                })
            })
        });
        let naive = Naive::new(dir.path());
        g.bench_with_input(BenchmarkId::new("naive", writers), &writers, |b, &w| {
            b.iter_custom(|iters| run_threads(w, iters, &|p| naive.append(p)))
        });
    }
    g.finish();
}

fn durable_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_many_1000x1KiB");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let payloads: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 1024]).collect();
    g.throughput(Throughput::Bytes(1000 * 1024));
    let batch = |wal: &Wal| {
        let records: Vec<Record<'_>> = payloads.iter().map(|p| Record::new(p)).collect();
        let mut last = 0;
        for r in wal.append_many(&records) {
            last = r.expect("append").lsn;
        }
        last
    };
    // Steady state of a log whose owner checkpoints: the records older than the last
    // segment's worth are truncated every 64 batches, and the freed segment files are
    // recycled, so every write lands on already-written blocks, as the naive writer's does.
    let keep = FILE_BYTES / groupwal::format::frame_len(1024, false) as u64;
    let checkpointed = |wal: &Wal, batches: &mut u64| {
        let last = batch(wal);
        *batches += 1;
        if *batches % 64 == 0 {
            wal.truncate_before(last.saturating_sub(keep))
                .expect("truncate");
        }
    };
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let wal = Wal::open(dir.path(), options().group_bytes_max(4 << 20)).expect("open");
    let mut batches = 0u64;
    g.bench_function("groupwal", |b| b.iter(|| checkpointed(&wal, &mut batches)));
    // A log that only grows: every segment is new space, zero-filled in the background.
    let dir_growing = tempfile::tempdir_in(".").expect("tempdir");
    let growing = Wal::open(dir_growing.path(), options().group_bytes_max(4 << 20)).expect("open");
    g.bench_function("groupwal_growing", |b| b.iter(|| batch(&growing)));
    // Without pipelining: checksums and copies of the whole batch, then one write and sync.
    let dir_serial = tempfile::tempdir_in(".").expect("tempdir");
    let serial = Wal::open(
        dir_serial.path(),
        options().group_bytes_max(4 << 20).pipeline_bytes(None),
    )
    .expect("open");
    let mut serial_batches = 0u64;
    g.bench_function("groupwal_unpipelined", |b| {
        b.iter(|| checkpointed(&serial, &mut serial_batches))
    });
    let naive = Naive::new(dir.path());
    let joined: Vec<u8> = payloads.concat();
    g.bench_function("naive_one_write", |b| b.iter(|| naive.append(&joined)));
    g.finish();
}

criterion_group!(
    benches,
    single_writer_by_size,
    group_commit_vs_naive,
    durable_batch
);
criterion_main!(benches);
