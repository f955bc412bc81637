//! Concurrent writers under SIGKILL, on the real file system.
//!
//! The parent test re-executes this test binary as a child (`child_writer`, selected by the
//! environment variable `GROUPWAL_KILL_CONCURRENT_DIR`). The child opens the log and runs 8
//! writer threads appending `Sync` records whose payload encodes (iteration, thread,
//! sequence number); after each acknowledgement it prints `thread seq lsn` on stdout. The
//! parent kills the child with SIGKILL at a random moment (5–80 ms after its first
//! acknowledgement, or after its start one time in four, which also kills it during
//! recovery), then reopens the log itself and checks: every printed record is present at
//! its LSN with its payload; LSNs are dense from the first; every record in the log is one a
//! child appended (no garbage), and none twice. 25 iterations on one directory with 64 KiB
//! segments, so kills also land during rotations.
//!
//! The kill moments come from `fastrand` seeded with `KILL_CONCURRENT_SEED` (default 1),
//! printed on failure. Every wait has a timeout, and the child exits by itself after 30 s or
//! as soon as its stdout is closed, so a failure can never leave it running.

use groupwal::{Record, Wal, WalOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHILD_DIR_ENV: &str = "GROUPWAL_KILL_CONCURRENT_DIR";
const CHILD_ITER_ENV: &str = "GROUPWAL_KILL_CONCURRENT_ITER";
const SEED_ENV: &str = "KILL_CONCURRENT_SEED";
const THREADS: u64 = 8;
const ITERATIONS: u32 = 25;
/// How long a child may take to acknowledge its first record.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the killed child's output may take to end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole test, as a last bound.
const TEST_TIMEOUT: Duration = Duration::from_secs(150);

fn options() -> WalOptions {
    WalOptions::default()
        .segment_bytes(64 << 10)
        .record_bytes_max(4 << 10)
}

/// "iter thread seq;" then a filler whose length and byte depend on all three.
fn payload(iter: u32, thread: u64, seq: u64) -> Vec<u8> {
    let mut p = format!("{iter} {thread} {seq};").into_bytes();
    let filler = ((thread * 7919 + seq * 104_729 + iter as u64) % 300) as usize;
    p.extend(std::iter::repeat(b'a' + (seq % 26) as u8).take(filler));
    p
}

/// The (iteration, thread, seq) a payload was made from, if it is exactly such a payload.
fn parse_payload(p: &[u8]) -> Option<(u32, u64, u64)> {
    let text = std::str::from_utf8(p).ok()?;
    let (head, _) = text.split_once(';')?;
    let mut it = head.split(' ');
    let iter = it.next()?.parse().ok()?;
    let thread = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    (payload(iter, thread, seq) == p).then_some((iter, thread, seq))
}

/// The child: runs only when re-executed by the parent test.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // not a child: nothing to do
    };
    let iter: u32 = std::env::var(CHILD_ITER_ENV)
        .expect("iteration")
        .parse()
        .expect("iteration number");
    // A safety net: never outlive the parent by long.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(30));
        std::process::exit(3);
    });
    let wal = Arc::new(Wal::open(&dir, options()).expect("child: open"));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let writers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (wal, out) = (wal.clone(), out.clone());
            std::thread::spawn(move || {
                for seq in 0.. {
                    let p = payload(iter, thread, seq);
                    match wal.append(Record::new(&p)) {
                        Ok(r) => {
                            let mut out = out.lock().unwrap();
                            let printed = writeln!(out, "{thread} {seq} {}", r.lsn)
                                .and_then(|()| out.flush());
                            if printed.is_err() {
                                std::process::exit(4); // the parent is gone
                            }
                        }
                        Err(e) => {
                            eprintln!("child: append failed: {e}");
                            std::process::exit(5);
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        let _ = w.join();
    }
}

/// Kills and reaps the child however the parent test ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill_and_reap(child: &mut Child) {
    child.kill().expect("SIGKILL the child");
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match child.try_wait().expect("wait for the child") {
            Some(_) => return,
            None if Instant::now() > deadline => panic!("the killed child did not exit"),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// One acknowledged record as the child printed it.
#[derive(Clone, Copy, Debug)]
struct Ack {
    iter: u32,
    thread: u64,
    seq: u64,
}

fn parse_ack(line: &str) -> Option<(u64, u64, u64)> {
    let mut it = line.split_ascii_whitespace().map(|w| w.parse::<u64>().ok());
    let (t, s, l) = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some((t, s, l))
}

/// Reopens the log and checks it against every acknowledgement so far.
fn verify(dir: &Path, acked: &BTreeMap<u64, Ack>, iter: u32, seed: u64) -> usize {
    let fail =
        |msg: String| -> ! { panic!("iteration {iter} (reproduce with {SEED_ENV}={seed}): {msg}") };
    let wal = Wal::open(dir, options()).unwrap_or_else(|e| fail(format!("reopen failed: {e}")));
    let first = wal.first_lsn();
    let mut log = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (i, item) in wal.read_from(first).enumerate() {
        let record = item.unwrap_or_else(|e| fail(format!("read failed: {e}")));
        if record.lsn != first + i as u64 {
            fail(format!(
                "LSN {} where {} was expected (not dense)",
                record.lsn,
                first + i as u64
            ));
        }
        let Some(id) = parse_payload(&record.payload) else {
            fail(format!("garbage record at LSN {}", record.lsn));
        };
        if !seen.insert(id) {
            fail(format!(
                "record {id:?} appears twice (again at LSN {})",
                record.lsn
            ));
        }
        log.insert(record.lsn, id);
    }
    if wal.next_lsn() != first + log.len() as u64 {
        fail(format!(
            "next_lsn {} does not follow the last record {}",
            wal.next_lsn(),
            first + log.len() as u64 - 1
        ));
    }
    for (lsn, ack) in acked {
        match log.get(lsn) {
            Some(&(i, t, s)) if (i, t, s) == (ack.iter, ack.thread, ack.seq) => {}
            Some(other) => fail(format!(
                "LSN {lsn} holds {other:?}, but {ack:?} was acknowledged there"
            )),
            None => fail(format!(
                "acknowledged record {ack:?} at LSN {lsn} is missing"
            )),
        }
    }
    wal.close()
        .unwrap_or_else(|e| fail(format!("close failed: {e}")));
    log.len()
}

#[test]
fn concurrent_writers_survive_sigkill() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return; // inside a child: only `child_writer` runs there
    }
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("test binary");
    let mut acked: BTreeMap<u64, Ack> = BTreeMap::new();
    let mut records = 0;
    for iter in 0..ITERATIONS {
        assert!(
            started.elapsed() < TEST_TIMEOUT,
            "the test ran past {TEST_TIMEOUT:?} (seed {seed})"
        );
        let mut child = ChildGuard(
            Command::new(&exe)
                .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_DIR_ENV, dir.path())
                .env(CHILD_ITER_ENV, iter.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn the child"),
        );
        let stdout = child.0.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            // A line cut by the kill has no newline: it was not (fully) printed.
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                if line.ends_with('\n') && tx.send(line.clone()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let delay = Duration::from_millis(rng.u64(5..=80));
        let mut lines = Vec::new();
        if iter % 4 != 0 {
            // Wait for the first acknowledgement, skipping the harness's own lines.
            let deadline = Instant::now() + FIRST_ACK_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => {
                        let ack = parse_ack(&line).is_some();
                        lines.push(line);
                        if ack {
                            break;
                        }
                    }
                    Err(e) => panic!(
                        "iteration {iter}: no acknowledgement from the child within \
                         {FIRST_ACK_TIMEOUT:?} ({e}; seed {seed})"
                    ),
                }
            }
        }
        std::thread::sleep(delay);
        kill_and_reap(&mut child.0);
        // The child is dead, so its stdout is closed and the reader ends.
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("iteration {iter}: the child's output did not end (seed {seed})")
                }
            }
        }
        for line in &lines {
            if let Some((thread, seq, lsn)) = parse_ack(line) {
                let ack = Ack { iter, thread, seq };
                if let Some(old) = acked.insert(lsn, ack) {
                    panic!("LSN {lsn} acknowledged twice: {old:?} and {ack:?} (seed {seed})");
                }
            }
        }
        records = verify(dir.path(), &acked, iter, seed);
    }
    eprintln!(
        "kill_concurrent: {ITERATIONS} kills, {} acknowledged records checked, {records} records \
         in the log, {:.1} s (seed {seed})",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        acked.len() >= ITERATIONS as usize,
        "too few acknowledgements ({}) for the test to mean anything",
        acked.len()
    );
}
