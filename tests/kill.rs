//! Real process crashes: a child process appends and prints each acknowledged LSN, and is
//! killed with SIGKILL at a random moment; after each kill, every LSN it printed must be in
//! the log with its payload, and the log must be a dense prefix of well-formed records.
//!
//! The child is this test binary itself, re-executed (`std::env::current_exe()`) to run only
//! `kill_child` with `GROUPWAL_KILL_CHILD` set to the log directory; without the variable
//! `kill_child` does nothing, so it passes in a normal run. Each record's payload names who
//! wrote it (iteration, thread, sequence number within the thread, and with one writer
//! thread the LSN it was given) and is otherwise a deterministic function of those, so the
//! parent can check every record in the log, printed or not.
//!
//! Randomness (when to kill, counted from the child's start or from its first open) comes
//! from a seeded generator; `GROUPWAL_KILL_SEED` overrides the seed. Every wait is bounded
//! and the child is killed on every failure path, so a broken build fails instead of
//! hanging, and no child outlives the test.
//!
//! The directory lock between processes is tested here too, with the same kind of child.
//!
//! # Forks and `flock`
//!
//! A directory lock is an `flock` on an open descriptor, and a fork copies every descriptor:
//! until the forked child execs (the descriptors are close-on-exec), it holds the locks its
//! parent held at the fork. Tests in one process run in parallel threads, so one test's
//! spawn can briefly hold another test's lock, and that test's next open (or its child's)
//! fails with `Locked`. That is how `flock` works, not a groupwal bug, so the tests follow a
//! rule instead: this process spawns a child or holds a log open only under
//! [`PARENT_LOCKS`]. `Command::spawn` returns after the exec, so no fork outlives the lock.

use groupwal::{Durability, Error, Record, Wal, WalOptions};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "GROUPWAL_KILL_CHILD";
const THREADS_ENV: &str = "GROUPWAL_KILL_THREADS";
const ITERATION_ENV: &str = "GROUPWAL_KILL_ITERATION";
const SEED_ENV: &str = "GROUPWAL_KILL_SEED";

const ITERATIONS: u32 = 30;
/// How long a child may take to open the log, and the most any single wait lasts.
const WAIT_MAX: Duration = Duration::from_secs(15);
/// A child that is still alive after this exits by itself (a parent that died cannot kill).
const CHILD_LIFETIME_MAX: Duration = Duration::from_secs(30);
/// Payload header: LSN hint, iteration, thread, sequence number, length.
const PAYLOAD_HEADER: usize = 8 + 4 + 4 + 8 + 4;

/// Held while this process spawns a child or holds a log open (see the module docs).
static PARENT_LOCKS: Mutex<()> = Mutex::new(());

fn parent_locks() -> MutexGuard<'static, ()> {
    // A test that failed while holding it does not make the others fail.
    PARENT_LOCKS.lock().unwrap_or_else(|e| e.into_inner())
}

fn options() -> WalOptions {
    WalOptions::default()
        .segment_bytes(64 << 10)
        .record_bytes_max(16 << 10)
}

/// Who wrote a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Writer {
    iteration: u32,
    thread: u32,
    seq: u64,
}

/// The payload of `writer`'s record: a header, then filler drawn from a generator seeded by
/// the header, so any damage shows. `lsn_hint` is the LSN the writer expects (0 if it
/// cannot know it, with several threads).
fn make_payload(lsn_hint: u64, w: Writer) -> Vec<u8> {
    let seed = (u64::from(w.iteration) << 40) ^ (u64::from(w.thread) << 32) ^ w.seq ^ lsn_hint;
    let mut rng = fastrand::Rng::with_seed(seed);
    let len = if rng.u8(..4) == 0 {
        rng.usize(4000..12_000)
    } else {
        rng.usize(PAYLOAD_HEADER..2000)
    };
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&lsn_hint.to_le_bytes());
    p.extend_from_slice(&w.iteration.to_le_bytes());
    p.extend_from_slice(&w.thread.to_le_bytes());
    p.extend_from_slice(&w.seq.to_le_bytes());
    p.extend_from_slice(&(len as u32).to_le_bytes());
    while p.len() < len {
        p.push(rng.u8(..));
    }
    p
}

/// The writer and LSN hint of a well-formed payload; `None` if it is not one.
fn parse_payload(p: &[u8]) -> Option<(u64, Writer)> {
    let u64_at = |o: usize| u64::from_le_bytes(p[o..o + 8].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(p[o..o + 4].try_into().unwrap());
    if p.len() < PAYLOAD_HEADER {
        return None;
    }
    let hint = u64_at(0);
    let w = Writer {
        iteration: u32_at(8),
        thread: u32_at(12),
        seq: u64_at(16),
    };
    (make_payload(hint, w) == p).then_some((hint, w))
}

// ---------------------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------------------

/// Writes one line to stdout and flushes it; exits if the parent is gone.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{MARK} {line}")
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(5);
    }
}

fn env_number<T: std::str::FromStr>(name: &str) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} must be set to a number"))
}

/// Not a test on its own: the child process of the tests below (see the module docs).
#[test]
fn kill_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let threads: u32 = env_number(THREADS_ENV);
    let iteration: u32 = env_number(ITERATION_ENV);
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIFETIME_MAX);
        eprintln!("kill child: still alive after {CHILD_LIFETIME_MAX:?}, exiting");
        std::process::exit(4);
    });
    let wal = match Wal::open(&dir, options()) {
        Ok(wal) => Arc::new(wal),
        Err(e) => {
            eprintln!("kill child: open failed: {e}");
            std::process::exit(3);
        }
    };
    say(&format!("READY {}", wal.next_lsn()));
    let writers: Vec<_> = (0..threads)
        .map(|thread| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                // With several threads, one of them acknowledges with Flush: written to the
                // OS, which survives a process crash just as well.
                let durability = if thread == 3 {
                    Durability::Flush
                } else {
                    Durability::Sync
                };
                for seq in 0.. {
                    let hint = if threads == 1 { wal.next_lsn() } else { 0 };
                    let w = Writer {
                        iteration,
                        thread,
                        seq,
                    };
                    let p = make_payload(hint, w);
                    match wal.append(Record::new(&p).durability(durability)) {
                        Ok(r) if threads == 1 && r.lsn != hint => {
                            eprintln!("kill child: LSN {} where {hint} was expected", r.lsn);
                            std::process::exit(2);
                        }
                        Ok(r) => say(&format!("ACK {} {thread} {seq}", r.lsn)),
                        Err(e) => {
                            eprintln!("kill child: append failed: {e}");
                            std::process::exit(2);
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        let _ = w.join();
    }
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------------------

/// A child process that is killed (and reaped) when dropped, whatever happened.
struct ChildGuard(Child);

impl ChildGuard {
    fn kill(&mut self) {
        // SIGKILL; an error means it has exited already, which `wait` then reaps.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a child printed.
enum Line {
    Ready,
    Ack(u64, u32, u64),
    Other,
}

/// Marks the child's lines: libtest may print its own text at the start of the first one.
const MARK: &str = "groupwal-kill:";

fn parse_line(line: &str) -> Line {
    let Some(at) = line.find(MARK) else {
        return Line::Other;
    };
    let mut it = line[at + MARK.len()..].split_ascii_whitespace();
    match it.next() {
        Some("READY") => Line::Ready,
        Some("ACK") => {
            let mut num = || it.next().and_then(|v| v.parse::<u64>().ok());
            match (num(), num(), num()) {
                (Some(lsn), Some(thread), Some(seq)) => Line::Ack(lsn, thread as u32, seq),
                _ => Line::Other,
            }
        }
        _ => Line::Other,
    }
}

/// Starts a child on `dir`; returns it, a channel of its complete stdout lines (a line cut
/// by the kill is dropped: it was not fully printed), and a thread collecting its stderr.
fn spawn_child(
    dir: &Path,
    threads: u32,
    iteration: u32,
) -> (
    ChildGuard,
    mpsc::Receiver<String>,
    std::thread::JoinHandle<String>,
) {
    let locks = parent_locks();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(THREADS_ENV, threads.to_string())
        .env(ITERATION_ENV, iteration.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the kill child");
    drop(locks);
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if !line.ends_with('\n') => break,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    (ChildGuard(child), rx, errors)
}

/// Everything the parent knows must be in the log.
#[derive(Default)]
struct Acked {
    by_lsn: BTreeMap<u64, Writer>,
}

impl Acked {
    fn add(&mut self, lsn: u64, w: Writer, ctx: &str) {
        if let Some(old) = self.by_lsn.insert(lsn, w) {
            panic!("{ctx}: LSN {lsn} acknowledged twice: to {old:?} and to {w:?}");
        }
    }
}

/// Opens the log read-only and checks it: dense LSNs from 1, well-formed payloads, each
/// writer's records in order without holes, every acknowledged record present with its
/// payload. Returns the number of records.
fn verify(dir: &Path, threads: u32, acked: &Acked, ctx: &str) -> u64 {
    let _locks = parent_locks();
    let wal = match Wal::open_read_only(dir, options()) {
        Ok(wal) => wal,
        // Killed before the first segment was in place.
        Err(Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && acked.by_lsn.is_empty() =>
        {
            return 0;
        }
        Err(e) => panic!("{ctx}: the log does not open after a kill: {e}"),
    };
    let mut next_seq: HashMap<(u32, u32), u64> = HashMap::new();
    let mut count = 0;
    for (i, record) in wal.read_from(1).enumerate() {
        let record = record.unwrap_or_else(|e| panic!("{ctx}: reading: {e}"));
        let lsn = record.lsn;
        assert_eq!(lsn, i as u64 + 1, "{ctx}: LSNs are dense from 1");
        let Some((hint, w)) = parse_payload(&record.payload) else {
            panic!("{ctx}: record {lsn} has a damaged payload");
        };
        if threads == 1 {
            assert_eq!(hint, lsn, "{ctx}: record {lsn} was written as {hint}");
        }
        let expected = next_seq.entry((w.iteration, w.thread)).or_insert(0);
        assert_eq!(
            w.seq, *expected,
            "{ctx}: record {lsn}: a writer's records are in order, without holes"
        );
        *expected += 1;
        if let Some(a) = acked.by_lsn.get(&lsn) {
            assert_eq!(*a, w, "{ctx}: record {lsn} is not the acknowledged one");
        }
        count += 1;
    }
    if let Some((&last, _)) = acked.by_lsn.last_key_value() {
        assert!(
            count >= last,
            "{ctx}: acknowledged LSN {last} is missing (the log ends at {count})"
        );
    }
    count
}

/// Kills a child appending with `threads` threads at random moments, `ITERATIONS` times on
/// one log, checking the log after each kill.
fn kill_repeatedly(threads: u32, default_seed: u64) {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_seed);
    let mut rng = fastrand::Rng::with_seed(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("log");
    let mut acked = Acked::default();
    let mut records = 0;
    let mut kills_after_ready = 0;
    for iteration in 0..ITERATIONS {
        let ctx = format!("seed {seed}, {threads} threads, iteration {iteration}");
        let kill_after = Duration::from_millis(rng.u64(5..=50));
        // Mostly counted from the end of the child's open (a kill among appends), sometimes
        // from its start (a kill during start-up or recovery).
        let from_ready = rng.u8(..10) < 8;
        let (mut child, lines, errors) = spawn_child(&dir, threads, iteration);
        let started = Instant::now();
        let mut ready_at = None;
        let handle = |line: &str, ready_at: &mut Option<Instant>, acked: &mut Acked| {
            match parse_line(line) {
                Line::Ready => *ready_at = Some(Instant::now()),
                Line::Ack(lsn, thread, seq) => {
                    let w = Writer {
                        iteration,
                        thread,
                        seq,
                    };
                    acked.add(lsn, w, &ctx);
                }
                Line::Other => {}
            }
        };
        loop {
            let kill_at = if from_ready {
                ready_at.map(|r: Instant| r + kill_after)
            } else {
                Some(started + kill_after)
            };
            let until = kill_at.unwrap_or(started + WAIT_MAX);
            let now = Instant::now();
            if now >= until {
                if kill_at.is_none() {
                    child.kill();
                    panic!("{ctx}: the child did not open the log in {WAIT_MAX:?}");
                }
                break;
            }
            match lines.recv_timeout(until - now) {
                Ok(line) => handle(&line, &mut ready_at, &mut acked),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    child.kill();
                    let stderr = errors.join().unwrap_or_default();
                    panic!("{ctx}: the child exited before it was killed:\n{stderr}");
                }
            }
        }
        child.kill();
        if ready_at.is_some() {
            kills_after_ready += 1;
        }
        // Lines printed before the kill are still in the pipe: each was printed after its
        // append returned, so each counts.
        loop {
            match lines.recv_timeout(WAIT_MAX) {
                Ok(line) => handle(&line, &mut ready_at, &mut acked),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{ctx}: the child's stdout stayed open after the kill")
                }
            }
        }
        drop(errors);
        let now = verify(&dir, threads, &acked, &ctx);
        assert!(
            now >= records,
            "{ctx}: the log shrank from {records} to {now}"
        );
        records = now;
    }

    // The log goes on after the last kill: a writer recovers it and appends after it.
    let ctx = format!("seed {seed}, {threads} threads, after the kills");
    let locks = parent_locks();
    let wal = Wal::open(&dir, options()).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    assert_eq!(wal.next_lsn(), records + 1, "{ctx}");
    let w = Writer {
        iteration: ITERATIONS,
        thread: 0,
        seq: 0,
    };
    let hint = if threads == 1 { records + 1 } else { 0 };
    let receipt = wal.append(Record::new(&make_payload(hint, w))).unwrap();
    assert_eq!(receipt.lsn, records + 1);
    acked.add(receipt.lsn, w, &ctx);
    drop(wal);
    drop(locks);
    assert_eq!(verify(&dir, threads, &acked, &ctx), records + 1);
    let segments = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".wal")
        })
        .count();
    println!(
        "{ctx}: {records} records ({} acknowledged) in {segments} segments; \
         {kills_after_ready} of {ITERATIONS} kills came after the open",
        acked.by_lsn.len()
    );
    assert!(
        kills_after_ready > 0,
        "{ctx}: no kill happened among appends"
    );
    assert!(
        segments >= 2,
        "{ctx}: the log should span segments ({records} records, {} acknowledged)",
        acked.by_lsn.len()
    );
}

/// One writer thread: every printed LSN survives, and each record has the LSN it expected.
#[test]
fn sigkill_single_writer() {
    kill_repeatedly(1, 0x6b11_0001);
}

/// Four writer threads sharing groups (one of them acknowledged at `Flush`).
#[test]
fn sigkill_four_writers() {
    kill_repeatedly(4, 0x6b11_0004);
}

// ---------------------------------------------------------------------------------------
// The directory lock between processes
// ---------------------------------------------------------------------------------------

const LOCK_CHILD_ENV: &str = "GROUPWAL_LOCK_CHILD";

/// Runs this binary's `lock_child` in a child process on `dir` and returns what it printed.
/// Bounded: the child is killed after `WAIT_MAX`. The caller holds `PARENT_LOCKS`.
fn run_lock_child(dir: &Path) -> String {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lock_child", "--nocapture", "--test-threads=1"])
        .env(LOCK_CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the lock child");
    let mut child = ChildGuard(child);
    let deadline = Instant::now() + WAIT_MAX;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the lock child did not finish in {WAIT_MAX:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "the lock child failed: {out}");
    out
}

/// Not a test on its own: the child of `lock_contention_across_processes`, run with the log
/// directory in `GROUPWAL_LOCK_CHILD`. Tries a read-only open, then a writer's open (after
/// closing the first), and prints what each gave.
#[test]
fn lock_child() {
    let Some(dir) = std::env::var_os(LOCK_CHILD_ENV) else {
        return;
    };
    let describe = |r: Result<Wal, Error>| match r {
        Ok(wal) => format!("ok {}", wal.next_lsn()),
        Err(Error::Locked { .. }) => "locked".to_string(),
        Err(e) => format!("error {e}"),
    };
    let read_only = describe(Wal::open_read_only(&dir, options()));
    let writer = describe(Wal::open(&dir, options()));
    say(&format!("read_only={read_only};"));
    say(&format!("writer={writer};"));
}

/// The directory lock holds across processes: a writer excludes everyone, readers share.
#[test]
fn lock_contention_across_processes() {
    let _locks = parent_locks();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let wal = Wal::open(&dir, options()).unwrap();
    wal.append(Record::new(b"one")).unwrap();
    let out = run_lock_child(&dir);
    assert!(out.contains("read_only=locked;"), "{out}");
    assert!(out.contains("writer=locked;"), "{out}");
    drop(wal);

    let reader = Wal::open_read_only(&dir, options()).unwrap();
    let out = run_lock_child(&dir);
    assert!(out.contains("read_only=ok 2;"), "{out}");
    assert!(out.contains("writer=locked;"), "{out}");
    // While the child held its reader, this process could not write either.
    drop(reader);

    let out = run_lock_child(&dir);
    assert!(out.contains("read_only=ok 2;"), "{out}");
    assert!(out.contains("writer=ok 2;"), "{out}");
    // And after the child exited, the lock is free here again.
    let wal = Wal::open(&dir, options()).unwrap();
    assert_eq!(wal.next_lsn(), 2);
}
