//! How fast can *any* group commit go on this machine? A bound to read `groupwal bench` by.
//!
//! With many writers, group commit stops being limited by the disk: each commit still costs
//! its writer one sleep and one wake-up, and with more writer threads than CPUs those are
//! context switches that the kernel serialises. This program measures, in alternating slices
//! of one run, with the same writer threads and the same records:
//!
//! - **naive**: one `pwrite` + `fdatasync` per record under a mutex (the baseline of
//!   `groupwal bench`);
//! - **floor**: the least a group commit can do. A writer appends its bytes to a buffer under
//!   a mutex and sleeps on a futex; a dedicated thread writes each group with one `pwrite` and
//!   one `fdatasync`, and a second dedicated thread wakes the group's writers with one futex
//!   call, so that the next group's write never waits for the wake-ups. No framing, no
//!   checksums, no LSNs, no statistics, no recovery: nothing a real log needs beyond the
//!   commit itself. (Waking from the syncing thread itself measured lower.)
//! - **groupwal**: [`Wal::append`] of a `Sync` record with the default options, its log
//!   truncated after each round so that new segments are recycled, not zero-filled.
//!
//! and prints each one's commits/s, its ratio to naive, its CPU time per commit and its
//! records per `fdatasync`, and groupwal's share of the floor. The floor is not a proof that
//! nothing can go faster; it is the fastest minimal design measured (`docs/BENCHMARKS.md`,
//! "The floor"). Nothing here is a test: the figures are for that document.
//!
//! ```text
//! cargo run --release --example group_commit_floor -- [DIR] [WRITERS] [SECONDS] [BYTES]
//! ```
//!
//! Defaults: a temporary directory under the current one, 64 writers, 9 seconds per mode
//! (in 3 rounds), 116-byte records. The floor is a bound for many writers only: with one or
//! a few, its hand-off to the syncing thread costs a wake-up per commit that a writer
//! leading its own group (as groupwal's does) never pays.

use atomic_wait::{wait, wake_all, wake_one};
use groupwal::{Record, Wal, WalOptions};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bytes of the preallocated file the naive writer and the floor overwrite in a ring.
const REGION: u64 = 64 << 20;
const ROUNDS: u32 = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--help" || a == "-h") {
        println!("usage: group_commit_floor [DIR] [WRITERS] [SECONDS] [BYTES]");
        return;
    }
    let arg = |i: usize, default: u64| -> u64 {
        args.get(i).map_or(default, |s| {
            s.parse()
                .unwrap_or_else(|_| exit(&format!("argument {} must be a number: {s}", i + 1)))
        })
    };
    let base = args
        .first()
        .map_or_else(|| Path::new(".").to_path_buf(), Into::into);
    let writers = arg(1, 64).max(1) as usize;
    let seconds = arg(2, 9).max(1);
    let bytes = arg(3, 116).clamp(1, 1 << 20) as usize;
    let scratch = tempfile::Builder::new()
        .prefix("group_commit_floor")
        .tempdir_in(&base)
        .unwrap_or_else(|e| exit(&format!("create a directory in {}: {e}", base.display())));
    let payload = vec![0x5a_u8; bytes];
    let slice = Duration::from_secs(seconds) / ROUNDS;

    let naive = Naive::new(&scratch.path().join("naive"));
    let floor = Floor::new(&scratch.path().join("floor"));
    let wal = Wal::open(scratch.path().join("wal"), WalOptions::default())
        .unwrap_or_else(|e| exit(&format!("open the log: {e}")));
    // Each mode: its name, one commit, and its count of `fdatasync` calls so far.
    let modes: [Mode<'_>; 3] = [
        ("naive", &|| naive.commit(&payload), &|| {
            naive.syncs.load(Ordering::Relaxed)
        }),
        ("floor", &|| floor.commit(&payload), &|| {
            floor.syncs.load(Ordering::Relaxed)
        }),
        (
            "groupwal",
            &|| {
                wal.append(Record::new(&payload))
                    .unwrap_or_else(|e| exit(&format!("append: {e}")));
            },
            &|| wal.stats().syncs,
        ),
    ];
    // The other two overwrite a preallocated file; the log gets the same footing once its
    // first segments are freed: new segments then come from the recycling pool, with no
    // zero-filling, as in an application that checkpoints.
    let checkpoint = || {
        wal.truncate_before(wal.durable_lsn())
            .unwrap_or_else(|e| exit(&format!("truncate: {e}")));
    };
    println!(
        "{writers} writers, {bytes}-byte records, fdatasync each commit; {ROUNDS} alternating \
         rounds of {slice:?} per mode, in {}",
        scratch.path().display()
    );
    let mut totals = [Tally::default(); 3];
    std::thread::scope(|s| {
        let floor = &floor;
        s.spawn(move || floor.sync_loop());
        s.spawn(move || floor.wake_loop());
        for _ in 0..ROUNDS {
            for (total, (_, op, syncs)) in totals.iter_mut().zip(&modes) {
                let before = syncs();
                let t = measure(writers, slice, op);
                total.counted += t.counted;
                total.calls += t.calls;
                total.took += t.took;
                total.cpu += t.cpu;
                total.syncs += syncs() - before;
            }
            checkpoint();
        }
        floor.stop();
    });
    let rate = |t: &Tally| t.counted as f64 / t.took.as_secs_f64();
    let naive_rate = rate(&totals[0]);
    println!(
        "\n{:<9} {:>10} {:>9} {:>11} {:>12}",
        "mode", "commits/s", "vs naive", "CPU/commit", "rec/fsync"
    );
    for ((name, ..), total) in modes.iter().zip(&totals) {
        println!(
            "{name:<9} {:>10.0} {:>8.1}x {:>9.2}µs {:>12.1}",
            rate(total),
            rate(total) / naive_rate,
            total.cpu.as_secs_f64() * 1e6 / total.counted.max(1) as f64,
            total.calls as f64 / total.syncs.max(1) as f64
        );
    }
    println!(
        "\ngroupwal reaches {:.0}% of the floor",
        100.0 * rate(&totals[2]) / rate(&totals[1])
    );
}

/// A mode's name, one commit, and its count of `fdatasync` calls so far.
type Mode<'a> = (&'a str, &'a (dyn Fn() + Sync), &'a dyn Fn() -> u64);

/// What `measure` saw.
#[derive(Clone, Copy, Default)]
struct Tally {
    /// Commits that finished in the measured window.
    counted: u64,
    /// All commits, the warm-up's included (the `fdatasync` count covers the same span).
    calls: u64,
    took: Duration,
    /// The process's CPU time in the measured window.
    cpu: Duration,
    syncs: u64,
}

fn exit(message: &str) -> ! {
    eprintln!("group_commit_floor: {message}");
    std::process::exit(1)
}

/// Runs `op` on `writers` threads for a tenth of `slice` (warm-up), then counts the calls
/// that finish within `slice`.
fn measure(writers: usize, slice: Duration, op: &(dyn Fn() + Sync)) -> Tally {
    let counting = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let counted = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    let mut tally = Tally::default();
    std::thread::scope(|s| {
        for _ in 0..writers {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    op();
                    calls.fetch_add(1, Ordering::Relaxed);
                    if counting.load(Ordering::Relaxed) {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // The main thread only keeps time here; the writers never wait for it.
        std::thread::sleep(slice / 10);
        let (start, cpu_start) = (Instant::now(), process_cpu());
        counting.store(true, Ordering::Relaxed);
        std::thread::sleep(slice);
        counting.store(false, Ordering::Relaxed);
        tally.took = start.elapsed();
        tally.cpu = process_cpu().saturating_sub(cpu_start);
        stop.store(true, Ordering::Relaxed);
    });
    tally.counted = counted.into_inner();
    tally.calls = calls.into_inner();
    tally
}

/// CPU time (user + system) of the whole process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A zero-filled file of `REGION` bytes, synced: both writers overwrite written blocks, so
/// no `fdatasync` has to update file metadata.
fn region_file(path: &Path) -> File {
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| exit(&format!("create {}: {e}", path.display())));
    let zeros = vec![0u8; 1 << 20];
    for i in 0..REGION / zeros.len() as u64 {
        file.write_all_at(&zeros, i * zeros.len() as u64)
            .unwrap_or_else(|e| exit(&format!("fill {}: {e}", path.display())));
    }
    file.sync_all()
        .unwrap_or_else(|e| exit(&format!("sync {}: {e}", path.display())));
    file
}

/// One `pwrite` + `fdatasync` per record under a mutex.
struct Naive {
    file: File,
    next: Mutex<u64>,
    syncs: AtomicU64,
}

impl Naive {
    fn new(path: &Path) -> Naive {
        Naive {
            file: region_file(path),
            next: Mutex::new(0),
            syncs: AtomicU64::new(0),
        }
    }

    fn commit(&self, payload: &[u8]) {
        let mut next = self.next.lock().unwrap();
        if *next + payload.len() as u64 > REGION {
            *next = 0;
        }
        self.file
            .write_all_at(payload, *next)
            .and_then(|()| self.file.sync_data())
            .unwrap_or_else(|e| exit(&format!("naive commit: {e}")));
        self.syncs.fetch_add(1, Ordering::Relaxed);
        *next += payload.len() as u64;
    }
}

/// The least a group commit can do (see the module comment).
struct Floor {
    file: File,
    open: Mutex<Open>,
    /// Tells the syncing thread that the open group has bytes (or that the run is over).
    work: Condvar,
    /// `done[g % 4]` holds the last durable generation with that remainder: writers of group
    /// `g` sleep on it. At most two generations are in flight (one open, one syncing), so
    /// four words never alias.
    done: [AtomicU32; 4],
    /// The last durable generation, for the waking thread (its futex word).
    to_wake: AtomicU32,
    stop: AtomicBool,
    syncs: AtomicU64,
}

struct Open {
    buf: Vec<u8>,
    /// The generation the buffer's bytes belong to; the first is 1.
    generation: u32,
    syncer_idle: bool,
}

impl Floor {
    fn new(path: &Path) -> Floor {
        Floor {
            file: region_file(path),
            open: Mutex::new(Open {
                buf: Vec::new(),
                generation: 1,
                syncer_idle: false,
            }),
            work: Condvar::new(),
            done: Default::default(),
            to_wake: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
        }
    }

    fn commit(&self, payload: &[u8]) {
        let generation = {
            let mut open = self.open.lock().unwrap();
            open.buf.extend_from_slice(payload);
            if open.syncer_idle {
                open.syncer_idle = false;
                self.work.notify_one();
            }
            open.generation
        };
        let word = &self.done[generation as usize % 4];
        loop {
            let done = word.load(Ordering::Acquire);
            if done >= generation {
                return;
            }
            wait(word, done);
        }
    }

    /// The syncing thread: takes the open group, writes and syncs it, hands it to the
    /// waking thread.
    fn sync_loop(&self) {
        let mut spare = Vec::new();
        let mut offset = 0u64;
        loop {
            let (buf, generation) = {
                let mut open = self.open.lock().unwrap();
                while open.buf.is_empty() && !self.stop.load(Ordering::Relaxed) {
                    open.syncer_idle = true;
                    open = self.work.wait(open).unwrap();
                }
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                let generation = open.generation;
                open.generation += 1;
                (
                    std::mem::replace(&mut open.buf, std::mem::take(&mut spare)),
                    generation,
                )
            };
            if offset + buf.len() as u64 > REGION {
                offset = 0;
            }
            self.file
                .write_all_at(&buf, offset)
                .and_then(|()| self.file.sync_data())
                .unwrap_or_else(|e| exit(&format!("floor commit: {e}")));
            self.syncs.fetch_add(1, Ordering::Relaxed);
            offset += buf.len() as u64;
            spare = buf;
            spare.clear();
            self.done[generation as usize % 4].store(generation, Ordering::Release);
            self.to_wake.fetch_max(generation, Ordering::AcqRel);
            wake_one(&self.to_wake);
        }
    }

    /// The waking thread: wakes the writers of each durable generation.
    fn wake_loop(&self) {
        let mut woken = 0;
        loop {
            let durable = self.to_wake.load(Ordering::Acquire);
            if durable == woken {
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                wait(&self.to_wake, woken);
                continue;
            }
            // Behind by four or more generations: waking the four words wakes everyone.
            for generation in (woken + 1).max(durable.saturating_sub(3))..=durable {
                wake_all(&self.done[generation as usize % 4]);
            }
            woken = durable;
        }
    }

    /// Ends both threads (after the last measurement: no writer is waiting).
    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let open = self.open.lock().unwrap();
        self.work.notify_one();
        drop(open);
        // Move the word, so that the waking thread cannot sleep through the stop.
        self.to_wake.fetch_add(1, Ordering::AcqRel);
        wake_one(&self.to_wake);
    }
}
