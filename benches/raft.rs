//! Replicated write throughput of a three-node Raft cluster on groupwal logs (one process,
//! loopback TCP), with many concurrent clients: commits per second, commit latency
//! percentiles, and how many `fdatasync`s each committed entry costs.
//!
//! ```sh
//! cargo bench --features openraft --bench raft -- [--secs S] [--committed sync|flush|buffer] \
//!     [--fsync-delay-us N] [CLIENTS...]
//! ```
//!
//! Not a criterion bench: one cluster run per client count, printed as a table.

#[path = "../tests/support/cluster.rs"]
mod cluster;

use cluster::Cluster;
use groupwal::io::{
    DirLock, MappedBytes, OpenMode, Preallocation, StdStorage, Storage, StorageFile,
};
use groupwal::raft::kv::KvRequest;
use groupwal::raft::LogStoreOptions;
use groupwal::{Durability, WalOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The real file system with extra latency on every `fdatasync`/`fsync` of a file: this
/// machine's virtual disk syncs in tens of microseconds, while a drive without power-loss
/// protection or a network disk takes milliseconds. `--fsync-delay-us` emulates those.
#[derive(Debug)]
struct SlowSync {
    inner: Arc<dyn Storage>,
    delay: Duration,
}

#[derive(Debug)]
struct SlowFile {
    inner: Arc<dyn StorageFile>,
    delay: Duration,
}

impl StorageFile for SlowFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, len: u64, how: Preallocation) -> io::Result<()> {
        self.inner.allocate(len, how)
    }
    fn sync_data(&self) -> io::Result<()> {
        std::thread::sleep(self.delay);
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        std::thread::sleep(self.delay);
        self.inner.sync_all()
    }
    fn map(&self) -> io::Result<MappedBytes> {
        self.inner.map()
    }
}

impl Storage for SlowSync {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let inner = self.inner.open_file(path, mode)?;
        Ok(Arc::new(SlowFile {
            inner,
            delay: self.delay,
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn lock_dir(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn DirLock>> {
        self.inner.lock_dir(path, exclusive)
    }
}

struct Args {
    secs: u64,
    fsync_delay: Duration,
    committed: Durability,
    clients: Vec<usize>,
}

fn args() -> Args {
    let mut args = Args {
        secs: 3,
        fsync_delay: Duration::ZERO,
        committed: Durability::Sync,
        clients: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => args.secs = it.next().and_then(|s| s.parse().ok()).expect("--secs N"),
            "--fsync-delay-us" => {
                let us = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--fsync-delay-us N");
                args.fsync_delay = Duration::from_micros(us);
            }
            "--committed" => {
                args.committed = match it.next().as_deref() {
                    Some("sync") => Durability::Sync,
                    Some("flush") => Durability::Flush,
                    Some("buffer") => Durability::Buffer,
                    other => panic!("--committed sync|flush|buffer, not {other:?}"),
                }
            }
            // cargo bench passes --bench; ignore flags we do not know.
            s if s.starts_with("--") => {}
            s => args.clients.push(s.parse().expect("a client count")),
        }
    }
    if args.clients.is_empty() {
        args.clients = vec![1, 16, 64, 256];
    }
    args
}

/// The log's WAL options: the real file system, with `--fsync-delay-us` added to every
/// sync when it is set.
fn wal_options(args: &Args) -> WalOptions {
    let mut wal = WalOptions::default();
    if !args.fsync_delay.is_zero() {
        wal = wal.storage(Arc::new(SlowSync {
            inner: StdStorage::shared(),
            delay: args.fsync_delay,
        }));
    }
    wal
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(clients: usize, args: &Args) {
    let (secs, committed) = (args.secs, args.committed);
    let dir = tempfile::tempdir_in(".").expect("a directory on the real disk");
    let wal = wal_options(args);
    let options = LogStoreOptions::default()
        .committed_durability(committed)
        .wal(wal);
    let cluster = Arc::new(
        Cluster::start(dir.path(), &[1, 2, 3], options)
            .await
            .expect("cluster"),
    );
    let leader = cluster
        .wait_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    // Warm up: connections, first elections' entries.
    for i in 0..10 {
        let req = KvRequest {
            key: format!("warm-{i}"),
            value: "x".into(),
        };
        cluster
            .write(req, Instant::now() + Duration::from_secs(10))
            .await
            .expect("warm-up");
    }
    let before = cluster.stats();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while Instant::now() < end {
                    let req = KvRequest {
                        key: format!("c{c}-{i}"),
                        value: format!("value {c} {i} {}", "x".repeat(100)),
                    };
                    let t = Instant::now();
                    // Follows the leader if an election happens (a starved CPU can delay
                    // heartbeats past the election timeout); such rows are marked.
                    cluster
                        .write(req, t + Duration::from_secs(10))
                        .await
                        .expect("write through the leader");
                    latencies.push(t.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client"));
    }
    let elapsed = start.elapsed();
    let after = cluster.stats();
    latencies.sort();
    let commits = latencies.len();
    // Calls that each need a durable write: appends, votes, committed ids, markers.
    let mut durable_calls = 0;
    let mut syncs = 0;
    for (id, a) in &after {
        let b = &before[id];
        syncs += a.wal.syncs - b.wal.syncs;
        durable_calls += (a.append_calls - b.append_calls) + (a.meta_records - b.meta_records);
    }
    let leader_now = cluster.leader();
    let leader_after = &after[&leader];
    let leader_syncs = leader_after.wal.syncs - before[&leader].wal.syncs;
    let commits_f = commits.max(1) as f64;
    println!(
        "{clients:>7} {:>10.0} {:>8.2} {:>8.2} {:>9.2} {:>11.3} {:>11.3} {:>11.2} {:>10.2} {:>9.3}",
        commits as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 0.999).as_secs_f64() * 1e3,
        leader_syncs as f64 / commits_f,
        syncs as f64 / commits_f,
        durable_calls as f64 / syncs.max(1) as f64,
        leader_after.wal.group_records.mean(),
        leader_after.wal.sync_ns.quantile(0.5) as f64 / 1e6,
    );
    if leader_now != Some(leader) {
        println!("        (leadership moved from {leader} to {leader_now:?} during this row)");
    }
    cluster.shutdown().await;
}

struct NoWake;

impl std::task::Wake for NoWake {
    fn wake(self: Arc<Self>) {}
}

/// The log store alone, driven by an engine that does not wait for each append's callback
/// before the next append (openraft 0.9's core does wait: see docs/RAFT.md): `n` one-entry
/// appends issued back to back, then one awaited append that makes them all durable.
async fn store_only(n: u64, args: &Args) {
    use groupwal::raft::kv::KvConfig;
    use groupwal::raft::GroupwalLogStore;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use std::future::Future;

    let dir = tempfile::tempdir_in(".").expect("a directory on the real disk");
    let wal = wal_options(args);
    let mut store = GroupwalLogStore::<KvConfig>::open(
        dir.path().join("log"),
        LogStoreOptions::default().wal(wal),
    )
    .expect("open");
    let entry = |i: u64| Entry::<KvConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
        payload: EntryPayload::Normal(KvRequest {
            key: format!("k{i}"),
            value: format!("value {i} {}", "x".repeat(100)),
        }),
    };
    let waker = std::task::Waker::from(Arc::new(NoWake));
    let mut cx = std::task::Context::from_waker(&waker);
    let start = Instant::now();
    for i in 0..n {
        // One poll runs the whole append; the callback fires later on the store's thread.
        let mut append = std::pin::pin!(store.blocking_append([entry(i)]));
        let _ = append.as_mut().poll(&mut cx);
    }
    store
        .blocking_append([entry(n)])
        .await
        .expect("last append");
    let elapsed = start.elapsed();
    let s = store.stats();
    println!(
        "store alone: {} appends durable in {:.1} ms ({:.0}/s), {} fdatasyncs, {:.1} records per group",
        n + 1,
        elapsed.as_secs_f64() * 1e3,
        (n + 1) as f64 / elapsed.as_secs_f64(),
        s.wal.syncs,
        s.wal.group_records.mean()
    );
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "3 nodes, loopback TCP, {} s per row, committed id durability {:?}, extra fsync delay {:?}",
        args.secs, args.committed, args.fsync_delay
    );
    let header = [
        ("clients", ""),
        ("commits/s", ""),
        ("p50 ms", ""),
        ("p99 ms", ""),
        ("p99.9 ms", ""),
        ("fsync/cmt", "leader"),
        ("fsync/cmt", "3 nodes"),
        ("calls/fsync", "3 nodes"),
        ("recs/group", "leader"),
        ("fsync ms", "p50 ldr"),
    ];
    let widths = [7, 10, 8, 8, 9, 11, 11, 11, 10, 9];
    for row in [0, 1] {
        let line: Vec<String> = header
            .iter()
            .zip(widths)
            .map(|(h, w)| format!("{:>w$}", if row == 0 { h.0 } else { h.1 }))
            .collect();
        println!("{}", line.join(" "));
    }
    for &clients in &args.clients {
        rt.block_on(run(clients, &args));
    }
    rt.block_on(store_only(20_000, &args));
}
