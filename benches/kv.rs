//! The key-value store (`Db`) against the raw log, in one run.
//!
//! `cargo bench --bench kv`. Groups:
//!
//! - `kv_put_sync/{wal,db}/W`: one `Sync` put of a 16-byte key and 100-byte value per
//!   iteration, spread over W = 1, 4, 16, 64 threads; `wal` appends the same 126-byte
//!   payload to a raw [`Wal`]. Compare the two at each W from one run (fsync latency drifts).
//! - `kv_get/1M_100B/{checkpoint,segments,std_btreemap}`: one `get` of a random key among
//!   1 M keys with 100-byte values, one thread; values read from the checkpoint's map, or
//!   from sealed log segments' maps; and, as the machine's reference, a `get` + clone from a
//!   `std::collections::BTreeMap<Vec<u8>, Vec<u8>>` holding everything in memory.
//! - `kv_recovery/{log,checkpoint}/64MiB`: `Db::open` of ~64 MiB of puts (16 MiB segments),
//!   replayed from the log, or loaded from a checkpoint.
//!
//! Before the groups, the bench prints `put` (`Sync`) throughput of the store and of the raw
//! log measured *interleaved* (wal, db, wal, db… for 1.5 s each, 5 rounds per W, median of
//! the per-round ratios), which is robust to the fsync latency drifting between criterion's
//! separate groups; and memory per key: heap bytes (counted by a global
//! allocator) of a store holding 1 M keys of 16 bytes, after writing them and after
//! reopening from a checkpoint. With `KV_BENCH_RECOVERY_MB=1024` it also times one recovery
//! of 1 GB of log, with and without a checkpoint.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use groupwal::{Db, DbOptions, Durability, Record, Wal, WalOptions, WriteBatch};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Counts live heap bytes, for the memory-per-key measurement.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const VALUE_BYTES: usize = 100;
const N_KEYS: u32 = 1_000_000;

fn key(i: u32) -> [u8; 16] {
    let mut k = *b"key-000000000000";
    k[4..].copy_from_slice(format!("{i:012}").as_bytes());
    k
}

fn wal_options() -> WalOptions {
    WalOptions::default().segment_bytes(256 << 20)
}

fn db_options() -> DbOptions {
    DbOptions::default()
        .wal_options(wal_options())
        .log_bytes_max(None)
}

/// Runs `iters` calls of `f` spread over `writers` threads; returns the time for `iters`.
fn run_threads(writers: usize, iters: u64, f: &(dyn Fn(u64) + Sync)) -> Duration {
    let per = iters.div_ceil(writers as u64);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..writers as u64 {
            s.spawn(move || {
                for i in 0..per {
                    f(t * per + i);
                }
            });
        }
    });
    start
        .elapsed()
        .mul_f64(iters as f64 / (per * writers as u64) as f64)
}

fn put_sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("kv_put_sync");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(1));
    let value = vec![7u8; VALUE_BYTES];
    for writers in [1usize, 4, 16, 64] {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path().join("raw"), wal_options()).unwrap();
        let payload = vec![7u8; 16 + VALUE_BYTES + 10];
        g.bench_with_input(BenchmarkId::new("wal", writers), &writers, |b, &w| {
            b.iter_custom(|iters| {
                run_threads(w, iters, &|_| {
                    wal.append(Record::new(&payload)).unwrap();
                })
            })
        });
        drop(wal);
        let db = Db::open(dir.path().join("db"), db_options()).unwrap();
        g.bench_with_input(BenchmarkId::new("db", writers), &writers, |b, &w| {
            b.iter_custom(|iters| {
                run_threads(w, iters, &|i| {
                    db.put(key(i as u32 % N_KEYS), &value).unwrap();
                })
            })
        });
    }
    g.finish();
}

/// Puts keys `0..n` with 100-byte values into `db`, in batches of 10,000.
fn put_keys(db: &Db, n: u32) {
    let value = vec![3u8; VALUE_BYTES];
    for chunk in 0..n.div_ceil(10_000) {
        let mut batch = WriteBatch::new();
        for i in chunk * 10_000..((chunk + 1) * 10_000).min(n) {
            batch.put(key(i), &value);
        }
        db.write(batch).unwrap();
    }
}

/// A store with `n` keys of 100-byte values written in batches.
fn fill(dir: &std::path::Path, n: u32) -> Db {
    let db = Db::open(dir, db_options().durability(Durability::Buffer)).unwrap();
    put_keys(&db, n);
    db.sync().unwrap();
    db
}

fn get(c: &mut Criterion) {
    let mut g = c.benchmark_group("kv_get");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    let dir = tempfile::tempdir().unwrap();
    let db = fill(dir.path(), N_KEYS);
    // Roll the log past its 256 MiB segment so the values are in a sealed (mapped) one.
    for i in 0..16u8 {
        db.put_with([b'r', i], vec![0u8; 8 << 20], Durability::Buffer)
            .unwrap();
    }
    db.sync().unwrap();
    let mut rng = fastrand::Rng::with_seed(1);
    g.bench_function("1M_100B/segments", |b| {
        b.iter(|| db.get(key(rng.u32(..N_KEYS))).unwrap().unwrap())
    });
    db.checkpoint().unwrap();
    g.bench_function("1M_100B/checkpoint", |b| {
        b.iter(|| db.get(key(rng.u32(..N_KEYS))).unwrap().unwrap())
    });
    drop(db);
    let mut reference = std::collections::BTreeMap::new();
    for i in 0..N_KEYS {
        reference.insert(key(i).to_vec(), vec![3u8; VALUE_BYTES]);
    }
    g.bench_function("1M_100B/std_btreemap", |b| {
        b.iter(|| reference.get(&key(rng.u32(..N_KEYS))[..]).unwrap().clone())
    });
    g.finish();
}

/// Options for the recovery measurements: 16 MiB segments, so a checkpoint can remove all
/// but the active one.
fn recovery_options() -> DbOptions {
    DbOptions::default()
        .wal_options(
            WalOptions::default()
                .segment_bytes(16 << 20)
                .record_bytes_max(4 << 20),
        )
        .value_bytes_max(1 << 20)
        .log_bytes_max(None)
}

/// Puts of ~`mb` MiB of log (16-byte keys, 100-byte values, in batches of 10,000).
fn fill_log(dir: &std::path::Path, mb: u64) -> u32 {
    let n = (mb * (1 << 20) / (16 + VALUE_BYTES as u64 + 9)) as u32;
    let db = Db::open(dir, recovery_options().durability(Durability::Buffer)).unwrap();
    put_keys(&db, n);
    db.close().unwrap();
    n
}

fn recovery(c: &mut Criterion) {
    let mb: u64 = 64;
    let mut g = c.benchmark_group("kv_recovery");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes(mb * (1 << 20)));
    let dir = tempfile::tempdir().unwrap();
    let n = fill_log(dir.path(), mb);
    g.bench_function(format!("log/{mb}MiB"), |b| {
        b.iter(|| {
            let db = Db::open(dir.path(), recovery_options()).unwrap();
            assert_eq!(db.len(), n as usize);
        })
    });
    let db = Db::open(dir.path(), recovery_options()).unwrap();
    db.checkpoint().unwrap();
    drop(db);
    g.bench_function(format!("checkpoint/{mb}MiB"), |b| {
        b.iter(|| {
            let db = Db::open(dir.path(), recovery_options()).unwrap();
            assert_eq!(db.len(), n as usize);
        })
    });
    g.finish();
}

/// Prints heap bytes per key of a store of 1 M 16-byte keys (100-byte values).
fn memory_per_key() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let dir = tempfile::tempdir().unwrap();
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        let db = fill(dir.path(), N_KEYS);
        let written = LIVE_BYTES.load(Ordering::Relaxed) - before;
        db.checkpoint().unwrap();
        drop(db);
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        let db = Db::open(dir.path(), db_options()).unwrap();
        let loaded = LIVE_BYTES.load(Ordering::Relaxed) - before;
        assert_eq!(db.len(), N_KEYS as usize);
        eprintln!(
            "memory per key (1M keys of 16 B, values of 100 B, heap bytes incl. the log's \
             buffers): after writing {:.1} B/key, after reopening from a checkpoint {:.1} B/key",
            written as f64 / N_KEYS as f64,
            loaded as f64 / N_KEYS as f64
        );
    });
}

/// With `KV_BENCH_RECOVERY_MB` set, times one recovery of that much log, replayed and from
/// a checkpoint (too slow to repeat under criterion at 1 GB).
fn one_shot_recovery() {
    let Some(mb) = std::env::var("KV_BENCH_RECOVERY_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let n = fill_log(dir.path(), mb);
    let t = Instant::now();
    let db = Db::open(dir.path(), recovery_options()).unwrap();
    let replayed = t.elapsed();
    assert_eq!(db.len(), n as usize);
    db.checkpoint().unwrap();
    drop(db);
    let t = Instant::now();
    let db = Db::open(dir.path(), recovery_options()).unwrap();
    let loaded = t.elapsed();
    assert_eq!(db.len(), n as usize);
    eprintln!(
        "recovery of {mb} MiB of log ({n} puts): replayed {replayed:?}, from a checkpoint \
         {loaded:?}"
    );
}

/// Puts per second over `window` with `writers` threads calling `f`.
fn rate(writers: usize, window: Duration, f: &(dyn Fn(u64) + Sync)) -> f64 {
    let count = std::sync::atomic::AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..writers as u64 {
            let count = &count;
            s.spawn(move || {
                let mut i = t << 32;
                while start.elapsed() < window {
                    f(i);
                    i += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// `put` (`Sync`) against the raw log's `append`, interleaved; prints a table.
fn put_sync_interleaved() {
    let rounds: usize = std::env::var("KV_BENCH_PUT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let window = Duration::from_millis(1500);
    let value = vec![7u8; VALUE_BYTES];
    let payload = vec![7u8; 16 + VALUE_BYTES + 14];
    eprintln!("put Sync, interleaved ({rounds} rounds of {window:?} each): W, wal/s, db/s, db/wal");
    for writers in [1usize, 4, 16, 64] {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path().join("raw"), wal_options()).unwrap();
        let db = Db::open(dir.path().join("db"), db_options()).unwrap();
        let (mut w, mut d, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let a = rate(writers, window, &|_| {
                wal.append(Record::new(&payload)).unwrap();
            });
            let b = rate(writers, window, &|i| {
                db.put(key(i as u32 % N_KEYS), &value).unwrap();
            });
            w.push(a);
            d.push(b);
            ratios.push(b / a);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        eprintln!(
            "  W={writers:>2}  wal {:>8.0}/s  db {:>8.0}/s  ratio {:.2} (rounds: {})",
            median(&mut w),
            median(&mut d),
            median(&mut ratios),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

fn memory(_: &mut Criterion) {
    put_sync_interleaved();
    memory_per_key();
    one_shot_recovery();
}

criterion_group!(benches, memory, put_sync, get, recovery);
criterion_main!(benches);
