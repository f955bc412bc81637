//! Consumers: poison pills never block the log.
//!
//! One bad record among a thousand is retried, dead-lettered with its context, and the 999
//! others are processed exactly once; a panicking handler; a child process that aborts on
//! the poison record, restarted in a loop until bisection isolates it; cursor durability
//! across a SIGKILL and across simulated power loss (clean and torn); jitter bounds; redrive.
//! Every wait is bounded; sleeps happen only inside the backoff under test.

use groupwal::consumer::{Backoff, Start, CONSUMERS_DIR};
use groupwal::io::sim::{CrashMode, FaultKind, SimStorage};
use groupwal::io::{OpenMode, Storage};
use groupwal::{
    Consumer, ConsumerOptions, CorrelationId, DeadLetterCause, Durability, Error, LogRecord,
    Outcome, Record, Wal, WalOptions,
};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECORDS: u64 = 1000;
/// LSN of the poison record in the standard log (its payload is `poison`).
const POISON_LSN: u64 = 501;

fn small() -> WalOptions {
    WalOptions::default()
        .segment_bytes(1 << 20)
        .record_bytes_max(64 << 10)
}

/// Consumer options with a tiny backoff, so tests run fast.
fn quick() -> ConsumerOptions {
    ConsumerOptions::default()
        .max_attempts(4)
        .backoff_base(Duration::from_micros(200))
        .backoff_cap(Duration::from_millis(2))
        .poll_wait(Duration::from_millis(5))
        .seed(Some(7))
}

/// Appends `RECORDS` records, `order-<i>` with correlation id `i` (LSN `i + 1`), except
/// LSN [`POISON_LSN`], whose payload is `poison`.
fn fill(wal: &Wal) {
    let payloads: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| match i + 1 {
            POISON_LSN => b"poison".to_vec(),
            _ => format!("order-{i}").into_bytes(),
        })
        .collect();
    let records: Vec<Record<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| Record::new(p).correlation_id(i as u64))
        .collect();
    for r in wal.append_many(&records) {
        r.unwrap();
    }
}

/// A simulated disk seeded with `seed`, the options that open the log on it, and the log,
/// open and [filled](fill).
fn filled_sim_log(seed: u64) -> (Arc<SimStorage>, WalOptions, Wal) {
    let sim = SimStorage::new(seed);
    let opts = small().storage(sim.clone());
    let wal = Wal::open("log", opts.clone()).unwrap();
    fill(&wal);
    (sim, opts, wal)
}

/// Polls a batch of up to `max` records, handles every record `Ok` and commits it.
fn commit_all_ok(consumer: &mut Consumer<'_>, max: usize) {
    let mut batch = consumer.poll(max, Duration::from_secs(5)).unwrap();
    batch.handle(|_| Outcome::Ok);
    consumer.commit(batch).unwrap();
}

/// Each scenario on the real file system and on the simulated one.
fn on_both(test: impl Fn(&Wal)) {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    test(&wal);
    let sim = SimStorage::new(11);
    let wal = Wal::open("log", small().storage(sim)).unwrap();
    test(&wal);
}

/// Handler calls per LSN.
type Calls = BTreeMap<u64, u32>;

/// Drains `consumer` with `handle`, counting its calls per LSN.
fn drain_counting(
    consumer: &mut Consumer<'_>,
    mut handle: impl FnMut(&LogRecord) -> Outcome,
) -> Calls {
    let mut calls = Calls::new();
    consumer
        .drain(|r| {
            *calls.entry(r.lsn).or_default() += 1;
            handle(r)
        })
        .unwrap();
    calls
}

fn assert_exactly_once_except_poison(calls: &Calls, poison_calls: u32) {
    for lsn in 1..=RECORDS {
        let expected = if lsn == POISON_LSN { poison_calls } else { 1 };
        assert_eq!(
            calls.get(&lsn).copied().unwrap_or(0),
            expected,
            "handler calls for LSN {lsn}"
        );
    }
}

#[test]
fn one_record_that_keeps_failing_is_retried_then_dead_lettered_and_999_run_exactly_once() {
    on_both(|wal| {
        fill(wal);
        let mut consumer = wal.consumer("billing", quick()).unwrap();
        let t0 = now_ms();
        let mut order = Vec::new();
        let calls = drain_counting(&mut consumer, |r| {
            order.push(r.lsn);
            if r.payload == b"poison" {
                Outcome::Retry("cannot parse order".into())
            } else {
                Outcome::Ok
            }
        });
        let t1 = now_ms();
        assert_exactly_once_except_poison(&calls, 4);
        assert!(
            order.windows(2).all(|w| w[0] <= w[1]),
            "records reach the handler in LSN order; a retry delays the ones after it"
        );
        let dead = consumer.dead_letters().unwrap();
        assert_eq!(dead.len(), 1, "{dead:?}");
        let d = &dead[0];
        assert_eq!(d.lsn, POISON_LSN);
        assert_eq!(
            d.correlation_id,
            Some(CorrelationId(POISON_LSN as u128 - 1))
        );
        assert_eq!(d.attempts, 4);
        assert_eq!(d.cause, DeadLetterCause::RetriesExhausted);
        assert_eq!(d.error, "cannot parse order");
        assert_eq!(d.payload, b"poison");
        assert!(
            (t0..=t1).contains(&d.time_unix_ms),
            "dead-lettered during the run"
        );
        assert_eq!(d.redriven_lsn, None);
        let m = consumer.metrics();
        assert_eq!(
            (m.processed, m.retried, m.dead_lettered, m.redelivered),
            (999, 3, 1, 0)
        );
        assert_eq!((m.cursor, m.lag), (RECORDS + 1, 0));
        // Retries k = 1, 2, 3 waited at most min(cap, base·2^(k−1)) each.
        let b = Backoff::new(Duration::from_micros(200), Duration::from_millis(2), None);
        let bound: Duration = (1..=3).map(|k| b.ceiling(k)).sum();
        assert!(
            m.backoff_total <= bound,
            "{:?} > {bound:?}",
            m.backoff_total
        );
    });
}

#[test]
fn a_record_answered_fail_is_dead_lettered_at_once_without_retries() {
    on_both(|wal| {
        fill(wal);
        let mut consumer = wal.consumer("billing", quick()).unwrap();
        let calls = drain_counting(&mut consumer, |r| match r.payload == b"poison" {
            true => Outcome::Fail("missing field: amount".into()),
            false => Outcome::Ok,
        });
        assert_exactly_once_except_poison(&calls, 1);
        let dead = consumer.dead_letters().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].lsn, dead[0].attempts, dead[0].cause),
            (POISON_LSN, 1, DeadLetterCause::Failed)
        );
        assert_eq!(dead[0].error, "missing field: amount");
        assert_eq!(consumer.metrics().retried, 0);
    });
}

#[test]
fn a_handler_that_panics_on_one_record_is_caught_and_the_record_dead_lettered() {
    on_both(|wal| {
        fill(wal);
        let mut consumer = wal.consumer("billing", quick()).unwrap();
        let calls = drain_counting(&mut consumer, |r| {
            if r.payload == b"poison" {
                panic!("unexpected byte in order {}", r.lsn);
            }
            Outcome::Ok
        });
        assert_exactly_once_except_poison(&calls, 4);
        let dead = consumer.dead_letters().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].cause, DeadLetterCause::RetriesExhausted);
        assert_eq!(
            dead[0].error,
            format!("handler panicked: unexpected byte in order {POISON_LSN}")
        );
    });
}

/// A panic that escapes the caller's own loop drops the batch: the next poll hands it out
/// again with a higher attempt, and bisection isolates the record in-process as it does
/// across process crashes.
#[test]
fn a_panic_that_escapes_the_batch_loop_grows_the_attempt_count_until_bisection_isolates_it() {
    on_both(|wal| {
        fill(wal);
        let opts = quick().max_attempts(3);
        let mut consumer = wal.consumer("billing", opts).unwrap();
        let mut deliveries = Calls::new();
        let mut escaped = 0;
        let mut rounds = 0;
        while consumer.cursor() <= RECORDS {
            rounds += 1;
            assert!(rounds < 200, "no progress after {rounds} rounds");
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut batch = consumer.poll(1000, Duration::from_secs(5)).unwrap();
                for i in 0..batch.len() {
                    let lsn = batch.records()[i].lsn;
                    *deliveries.entry(lsn).or_default() += 1;
                    if batch.records()[i].payload == b"poison" {
                        panic!("boom"); // unwinds through the caller's loop: no commit
                    }
                    batch.set_outcome(i, Outcome::Ok);
                }
                consumer.commit(batch).unwrap();
            }));
            escaped += result.is_err() as u32;
        }
        // 3 deliveries of the full batch; its first half passes; then one per halving
        // that keeps the poison (the first record of each range: 500, 250, …, 2 records,
        // 8 halvings); then 3 of the poison alone. At most 2·3 + ⌈log2 1000⌉ = 16.
        assert_eq!(escaped, 3 + 8 + 3, "escaped panics");
        assert_eq!(deliveries.get(&POISON_LSN), Some(&escaped));
        for lsn in (1..=RECORDS).filter(|&l| l != POISON_LSN) {
            assert!(
                deliveries.get(&lsn).copied().unwrap_or(0) >= 1,
                "LSN {lsn} never ran"
            );
        }
        let dead = consumer.dead_letters().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].lsn, dead[0].cause, dead[0].attempts),
            (POISON_LSN, DeadLetterCause::Crashed, 3)
        );
        assert_eq!(dead[0].payload, b"poison");
        assert!(consumer.metrics().redelivered > 0);
    });
}

// ---------------------------------------------------------------------------------------
// Child processes: a consumer that aborts on the poison record, and one that is SIGKILLed.

const CHILD_MODE: &str = "GROUPWAL_CONSUMER_TEST_CHILD";
const CHILD_DIR: &str = "GROUPWAL_CONSUMER_TEST_DIR";

/// Not a test by itself: the entry point of the child processes the tests below start. It
/// returns at once unless started by them.
#[test]
fn child_process_entry() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(CHILD_DIR).unwrap());
    match mode.as_str() {
        "abort-on-poison" => child_abort_on_poison(&dir),
        "commit-then-hang" => child_commit_then_hang(&dir),
        other => panic!("unknown child mode {other}"),
    }
}

fn child_abort_on_poison(dir: &Path) {
    let wal = Wal::open(dir.join("log"), small()).unwrap();
    let opts = quick().max_attempts(3).batch_records_max(1000);
    let mut consumer = wal.consumer("crashy", opts).unwrap();
    // Unbuffered: every line reaches the file before a later abort.
    let mut seen = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("processed.txt"))
        .unwrap();
    consumer
        .drain(|r| {
            if r.payload == b"poison" {
                std::process::abort();
            }
            writeln!(seen, "{}", r.lsn).unwrap();
            Outcome::Ok
        })
        .unwrap();
}

fn child_commit_then_hang(dir: &Path) {
    let wal = Wal::open(dir.join("log"), small()).unwrap();
    let mut consumer = wal.consumer("steady", quick()).unwrap();
    let mut out = std::io::stdout();
    for _ in 0..5 {
        commit_all_ok(&mut consumer, 37);
        writeln!(out, "committed {}", consumer.cursor()).unwrap();
        out.flush().unwrap();
    }
    // One more batch out and never committed, then wait to be killed.
    let batch = consumer.poll(37, Duration::from_secs(5)).unwrap();
    writeln!(
        out,
        "in flight {}..={}",
        batch.first_lsn(),
        batch.last_lsn()
    )
    .unwrap();
    out.flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
    panic!("the parent should have killed this process");
}

fn child(mode: &str, dir: &Path, stdout: Stdio) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `c` to exit, at most `secs`, killing it on timeout.
fn wait_bounded(c: &mut std::process::Child, secs: u64) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = c.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("child did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_child_that_aborts_on_the_poison_record_is_restarted_until_the_record_is_dead_lettered() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path().join("log"), small()).unwrap();
        fill(&wal);
    }
    let mut crashes = 0;
    loop {
        assert!(crashes <= 16, "still crashing after {crashes} restarts");
        let mut c = child("abort-on-poison", dir.path(), Stdio::null());
        let status = wait_bounded(&mut c, 30);
        if status.success() {
            break;
        }
        let mut err = String::new();
        std::io::Read::read_to_string(&mut c.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGABRT),
            "the child only dies by abort: {status:?}\n{err}"
        );
        crashes += 1;
    }
    // 3 aborts on the full batch, one per halving that keeps the poison, 3 on it alone
    // (see the in-process test above).
    assert_eq!(crashes, 3 + 8 + 3, "restarts for max_attempts 3");
    let wal = Wal::open(dir.path().join("log"), small()).unwrap();
    let dead = wal.dead_letters("crashy").unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(
        (d.lsn, d.cause, d.attempts),
        (POISON_LSN, DeadLetterCause::Crashed, 3)
    );
    assert_eq!(
        d.correlation_id,
        Some(CorrelationId(POISON_LSN as u128 - 1))
    );
    assert_eq!(d.payload, b"poison");
    let text = std::fs::read_to_string(dir.path().join("processed.txt")).unwrap();
    let mut seen = Calls::new();
    for line in text.lines() {
        *seen.entry(line.parse().unwrap()).or_default() += 1;
    }
    for lsn in 1..=RECORDS {
        let n = seen.get(&lsn).copied().unwrap_or(0);
        if lsn == POISON_LSN {
            assert_eq!(n, 0);
        } else {
            // At least once; the records before the poison in a crashed batch ran again.
            assert!((1..=crashes + 1).contains(&n), "LSN {lsn} ran {n} times");
        }
    }
    let consumer = wal.consumer("crashy", quick()).unwrap();
    let m = consumer.metrics();
    assert_eq!(
        (m.cursor, m.lag),
        (RECORDS + 1, 0),
        "the consumer caught up"
    );
}

#[test]
fn the_cursor_survives_a_sigkill_and_the_batch_in_flight_comes_back_as_attempt_two() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path().join("log"), small()).unwrap();
        fill(&wal);
    }
    let mut c = child("commit-then-hang", dir.path(), Stdio::piped());
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = c.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let mut committed = 0;
    let in_flight = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child reports within 30 s");
        if let Some(n) = line.strip_prefix("committed ") {
            committed = n.parse::<u64>().unwrap();
        } else if let Some(range) = line.strip_prefix("in flight ") {
            break range.to_string();
        }
    };
    c.kill().unwrap(); // SIGKILL
    wait_bounded(&mut c, 30);
    assert_eq!(committed, 5 * 37 + 1);
    let wal = Wal::open(dir.path().join("log"), small()).unwrap();
    let mut consumer = wal.consumer("steady", quick()).unwrap();
    assert_eq!(consumer.cursor(), committed, "the last commit survived");
    let batch = consumer.poll(37, Duration::from_secs(5)).unwrap();
    assert_eq!(
        format!("{}..={}", batch.first_lsn(), batch.last_lsn()),
        in_flight
    );
    assert_eq!(batch.attempt(), 2, "the killed delivery counted");
}

// ---------------------------------------------------------------------------------------
// Simulated power loss.

#[test]
fn after_power_loss_the_cursor_is_the_last_commit_and_the_batch_in_flight_counts() {
    for seed in 0..16u64 {
        for mode in [CrashMode::Clean, CrashMode::Torn] {
            let (sim, opts, wal) = filled_sim_log(seed);
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut consumer = wal.consumer("c", quick()).unwrap();
            for _ in 0..rng.usize(1..6) {
                commit_all_ok(&mut consumer, rng.usize(1..200));
            }
            let committed = consumer.cursor();
            let out = consumer.poll(50, Duration::from_secs(5)).unwrap();
            let out_range = (out.first_lsn(), out.last_lsn());
            sim.crash(mode);
            drop(out);
            drop(consumer);
            drop(wal);
            let wal = Wal::open("log", opts).unwrap();
            let mut consumer = wal.consumer("c", quick()).unwrap();
            assert_eq!(consumer.cursor(), committed, "seed {seed} {mode:?}");
            let again = consumer.poll(50, Duration::from_secs(5)).unwrap();
            assert_eq!((again.first_lsn(), again.last_lsn()), out_range);
            assert_eq!(again.attempt(), 2, "seed {seed} {mode:?}");
        }
    }
}

/// A cursor write whose `fdatasync` fails: the consumer refuses further work (fsync is never
/// retried), and after power loss the cursor is the old or the new state, whole, never an
/// error and never a reset.
#[test]
fn a_failed_cursor_sync_poisons_the_consumer_and_a_torn_slot_falls_back_to_the_other() {
    let (mut lost, mut kept, mut torn) = (0, 0, 0);
    for seed in 0..24u64 {
        let (sim, opts, wal) = filled_sim_log(seed);
        let mut consumer = wal.consumer("c", quick()).unwrap();
        commit_all_ok(&mut consumer, 10);
        let before = consumer.cursor();
        let mut batch = consumer.poll(10, Duration::from_secs(5)).unwrap();
        for i in 0..5 {
            batch.set_outcome(i, Outcome::Ok);
        }
        // A long reason makes the slot span several 512-byte blocks, so a torn crash can cut it.
        batch.set_outcome(5, Outcome::Retry("x".repeat(2000)));
        sim.fail_nth(FaultKind::SyncData, 1);
        let err = consumer.commit(batch).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let refused = consumer.poll(10, Duration::ZERO).unwrap_err();
        assert!(matches!(refused, Error::Poisoned { .. }), "{refused}");
        sim.crash(CrashMode::Torn);
        drop(consumer);
        drop(wal);
        // Write 5 (open, poll, commit, poll, this commit) went to slot 1, over write 3.
        let path = Path::new("log").join(CONSUMERS_DIR).join("c.cursor");
        let bytes = sim.image(groupwal::io::sim::Image::Live)[&path].clone();
        let slot = &bytes[4096..];
        let seq = u64::from_le_bytes(slot[8..16].try_into().unwrap());
        let xs = slot[64..2064].iter().filter(|&&b| b == b'x').count();
        let wal = Wal::open("log", opts).unwrap();
        let consumer = wal.consumer("c", quick()).unwrap();
        let expected = match (seq, xs) {
            (3, 0) => {
                lost += 1;
                before
            }
            (5, 2000) => {
                kept += 1;
                before + 5
            }
            (5, _) => {
                torn += 1;
                before // the torn slot fails its checksum: the other slot holds write 4
            }
            other => panic!("seed {seed}: unexpected slot {other:?}"),
        };
        assert_eq!(
            consumer.cursor(),
            expected,
            "seed {seed}: seq {seq}, {xs} bytes"
        );
    }
    assert!(
        lost > 0 && kept > 0 && torn > 0,
        "{lost} lost, {kept} kept, {torn} torn"
    );
}

#[test]
fn a_cursor_with_both_slots_damaged_is_an_error_and_is_left_alone() {
    let (sim, _, wal) = filled_sim_log(5);
    let mut consumer = wal.consumer("c", quick()).unwrap();
    for _ in 0..3 {
        commit_all_ok(&mut consumer, 10);
    }
    drop(consumer);
    let storage: Arc<dyn Storage> = sim.clone();
    let path = Path::new("log").join(CONSUMERS_DIR).join("c.cursor");
    let file = storage.open_file(&path, OpenMode::ReadWrite).unwrap();
    // The current slot (write 7: open, then a poll and a commit per batch) is slot 1.
    file.write_all_at(b"garbage", 4096 + 20).unwrap();
    file.sync_data().unwrap();
    let consumer = wal.consumer("c", quick()).unwrap();
    assert_eq!(
        consumer.cursor(),
        21,
        "fell back to the older slot: one step back, no reset"
    );
    drop(consumer);
    file.write_all_at(b"garbage", 20).unwrap();
    file.write_all_at(b"garbage", 4096 + 20).unwrap();
    file.sync_data().unwrap();
    let damaged = sim.image(groupwal::io::sim::Image::Live)[&path].clone();
    let err = wal.consumer("c", quick()).unwrap_err();
    assert!(matches!(err, Error::ConsumerCorrupt { .. }), "{err}");
    assert!(err.is_corruption());
    assert!(err.to_string().contains("Nothing was reset"), "{err}");
    assert_eq!(
        sim.image(groupwal::io::sim::Image::Live)[&path],
        damaged,
        "the file was not rewritten"
    );
}

/// The attempts of the record being retried are in the cursor: a crash between retries does
/// not give it a fresh set.
#[test]
fn retry_attempts_survive_power_loss() {
    let (sim, opts, wal) = filled_sim_log(8);
    let mut consumer = wal.consumer("c", quick()).unwrap();
    let mut poison_calls = 0;
    while poison_calls < 2 {
        let mut batch = consumer.poll(1000, Duration::from_secs(5)).unwrap();
        batch.handle(|r| match r.payload == b"poison" {
            true => {
                poison_calls += 1;
                Outcome::Retry(format!("timeout {poison_calls}"))
            }
            false => Outcome::Ok,
        });
        consumer.commit(batch).unwrap();
    }
    assert_eq!(consumer.cursor(), POISON_LSN);
    sim.crash(CrashMode::Clean);
    drop(consumer);
    drop(wal);
    let wal = Wal::open("log", opts).unwrap();
    let mut consumer = wal.consumer("c", quick()).unwrap();
    let mut calls_after = 0;
    consumer
        .drain(|r| match r.payload == b"poison" {
            true => {
                calls_after += 1;
                Outcome::Retry(format!("timeout {}", 2 + calls_after))
            }
            false => Outcome::Ok,
        })
        .unwrap();
    assert_eq!(calls_after, 2, "attempts 3 and 4 of max_attempts 4");
    let dead = consumer.dead_letters().unwrap();
    assert_eq!((dead[0].attempts, dead[0].error.as_str()), (4, "timeout 4"));
}

// ---------------------------------------------------------------------------------------
// Backoff.

#[test]
fn backoff_delays_stay_within_the_full_jitter_bounds_and_vary() {
    let base = Duration::from_millis(10);
    let cap = Duration::from_secs(1);
    let mut b = Backoff::new(base, cap, Some(42));
    for attempt in 1..=12u32 {
        let ceiling = cap.min(base * 2u32.pow(attempt - 1));
        assert_eq!(b.ceiling(attempt), ceiling);
        let delays: Vec<Duration> = (0..2000).map(|_| b.delay(attempt)).collect();
        assert!(delays.iter().all(|&d| d <= ceiling), "attempt {attempt}");
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 1000, "attempt {attempt}: jitter present");
        // Full jitter: the whole range is used, not just its top.
        let low = delays.iter().filter(|&&d| d < ceiling / 4).count();
        assert!(
            (300..=700).contains(&low),
            "attempt {attempt}: {low} in the lowest quarter"
        );
    }
    let mut a = Backoff::new(base, cap, Some(9));
    let mut same = Backoff::new(base, cap, Some(9));
    let mut other = Backoff::new(base, cap, Some(10));
    let xs: Vec<_> = (1..50).map(|k| a.delay(k)).collect();
    assert_eq!(xs, (1..50).map(|k| same.delay(k)).collect::<Vec<_>>());
    assert_ne!(xs, (1..50).map(|k| other.delay(k)).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------
// Redrive.

#[test]
fn redrive_round_trip_appends_the_fixed_record_again_and_marks_it() {
    on_both(|wal| {
        fill(wal);
        let mut consumer = wal.consumer("billing", quick()).unwrap();
        let fixed = std::cell::Cell::new(false);
        let mut handled = Vec::new();
        let mut handler = |r: &LogRecord| {
            if r.payload == b"poison" && !fixed.get() {
                return Outcome::Fail("schema v2 not supported".into());
            }
            handled.push((r.lsn, r.correlation_id, r.payload.clone()));
            Outcome::Ok
        };
        consumer.drain(&mut handler).unwrap();
        assert_eq!(consumer.dead_letters().unwrap().len(), 1);
        // The fix ships; the poison is redriven.
        fixed.set(true);
        let redriven = consumer.redrive(|d| d.lsn == POISON_LSN).unwrap();
        assert_eq!(redriven.len(), 1);
        let new_lsn = redriven[0].new_lsn;
        assert_eq!((redriven[0].lsn, new_lsn), (POISON_LSN, RECORDS + 1));
        assert!(
            consumer.redrive(|_| true).unwrap().is_empty(),
            "a redriven letter is not redriven twice"
        );
        consumer.drain(&mut handler).unwrap();
        let last = handled.last().unwrap();
        assert_eq!(
            last,
            &(
                new_lsn,
                Some(CorrelationId(POISON_LSN as u128 - 1)),
                b"poison".to_vec()
            )
        );
        let dead = consumer.dead_letters().unwrap();
        assert_eq!(dead[0].redriven_lsn, Some(new_lsn));
        // Through the log while the consumer is open: refused; once it is closed: fine.
        let locked = wal.dead_letters("billing").unwrap_err();
        assert!(matches!(locked, Error::ConsumerLocked { .. }), "{locked}");
        consumer.close().unwrap();
        let dead = wal.dead_letters("billing").unwrap();
        assert_eq!((dead.len(), dead[0].redriven_lsn), (1, Some(new_lsn)));
        assert!(wal.redrive("billing", |_| true).unwrap().is_empty());
        let unknown = wal.dead_letters("nobody").unwrap_err();
        assert!(
            matches!(unknown, Error::UnknownConsumer { .. }),
            "{unknown}"
        );
    });
}

#[test]
fn redrive_through_the_log_while_the_consumer_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    fill(&wal);
    let mut consumer = wal.consumer("c", quick()).unwrap();
    consumer
        .drain(|r| match r.lsn % 100 {
            0 => Outcome::Fail(format!("bad {}", r.lsn)),
            _ => Outcome::Ok,
        })
        .unwrap();
    drop(consumer);
    let dead = wal.dead_letters("c").unwrap();
    assert_eq!(
        dead.iter().map(|d| d.lsn).collect::<Vec<_>>(),
        (1..=10).map(|i| i * 100).collect::<Vec<_>>()
    );
    let redriven = wal.redrive("c", |d| d.lsn >= 500).unwrap();
    assert_eq!(redriven.len(), 6);
    let news: Vec<u64> = redriven.iter().map(|r| r.new_lsn).collect();
    assert_eq!(
        news,
        (RECORDS + 1..=RECORDS + 6).collect::<Vec<_>>(),
        "in their order"
    );
    let again: Vec<Vec<u8>> = wal
        .read_from(RECORDS + 1)
        .map(|r| r.unwrap().payload)
        .collect();
    let originals: Vec<Vec<u8>> = dead[4..].iter().map(|d| d.payload.clone()).collect();
    assert_eq!(again, originals);
}

// ---------------------------------------------------------------------------------------
// The cursor's cost, the log's recovery, and the edges.

#[test]
fn the_normal_path_costs_one_cursor_write_per_poll_and_commit_not_per_record() {
    let sim = SimStorage::new(1);
    let wal = Wal::open("log", small().storage(sim.clone())).unwrap();
    fill(&wal);
    let mut consumer = wal.consumer("c", quick()).unwrap();
    let syncs = || sim.stats().sync_data;
    let s0 = syncs();
    let mut batch = consumer.poll(400, Duration::from_secs(5)).unwrap();
    assert_eq!(batch.len(), 400);
    assert_eq!(
        syncs() - s0,
        1,
        "poll: one write, before handing out 400 records"
    );
    batch.handle(|_| Outcome::Ok);
    consumer.commit(batch).unwrap();
    assert_eq!(syncs() - s0, 2, "commit: one write");
    // Fused: the commit rides the next batch's write while records keep coming.
    let s1 = syncs();
    let mut batch = consumer.poll(100, Duration::from_secs(5)).unwrap();
    for _ in 0..4 {
        batch.handle(|_| Outcome::Ok);
        batch = consumer
            .commit_and_poll(batch, 100, Duration::from_secs(5))
            .unwrap();
    }
    assert_eq!(syncs() - s1, 5, "one write per batch");
    batch.handle(|_| Outcome::Ok);
    consumer.commit(batch).unwrap();
    assert_eq!(consumer.cursor(), 901);
}

#[test]
fn the_log_recovers_past_the_consumer_folders_and_they_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    fill(&wal);
    let mut consumer = wal.consumer("c", quick()).unwrap();
    consumer
        .drain(|r| match r.payload == b"poison" {
            true => Outcome::Fail("bad".into()),
            false => Outcome::Ok,
        })
        .unwrap();
    drop(consumer);
    // A leftover of an interrupted cursor creation, for another consumer.
    std::fs::write(
        dir.path().join(CONSUMERS_DIR).join("other.cursor.tmp"),
        b"half",
    )
    .unwrap();
    wal.close().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    let report = wal.recovery_report();
    assert_eq!((report.segments, report.records), (1, RECORDS));
    assert_eq!(
        report.temp_files_removed, 0,
        "recovery leaves consumer files alone"
    );
    assert!(report.torn_tail.is_none() && report.quarantined.is_empty());
    assert_eq!(wal.read_from(1).count() as u64, RECORDS);
    let consumer = wal.consumer("c", quick()).unwrap();
    assert_eq!(consumer.cursor(), RECORDS + 1);
    assert_eq!(consumer.dead_letters().unwrap().len(), 1);
    let other = wal.consumer("other", quick()).unwrap();
    assert_eq!(
        other.cursor(),
        1,
        "the half-made cursor was discarded, not read"
    );
}

#[test]
fn names_handles_and_read_only_logs_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    let long = "x".repeat(65);
    for bad in ["", "a/b", "..", "with space", "é", long.as_str()] {
        let err = wal.consumer(bad, quick()).unwrap_err();
        assert!(
            matches!(err, Error::InvalidConsumerName { .. }),
            "{bad:?}: {err}"
        );
    }
    wal.consumer(&"x".repeat(64), quick()).unwrap();
    let _first = wal.consumer("A-z_09", quick()).unwrap();
    let second = wal.consumer("A-z_09", quick()).unwrap_err();
    assert!(matches!(second, Error::ConsumerLocked { .. }), "{second}");
    let err = wal.consumer("c", quick().max_attempts(0)).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidOptions {
            name: "max_attempts",
            ..
        }
    ));
    let c = wal.consumer("c", quick());
    let err = c.unwrap().poll(0, Duration::ZERO).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidOptions {
            name: "max_records",
            ..
        }
    ));
    drop(_first);
    wal.close().unwrap();
    drop(wal);
    let ro = Wal::open_read_only(dir.path(), small()).unwrap();
    assert!(matches!(ro.consumer("c", quick()), Err(Error::ReadOnly)));
}

#[test]
fn only_durable_records_are_handed_out() {
    let sim = SimStorage::new(2);
    let opts = small()
        .storage(sim)
        .sync_interval(Duration::from_secs(3600))
        .sync_interval_jitter(Duration::ZERO);
    let wal = Wal::open("log", opts).unwrap();
    wal.append(Record::new(b"synced")).unwrap();
    wal.append(Record::new(b"flushed").durability(Durability::Flush))
        .unwrap();
    let mut consumer = wal.consumer("c", quick()).unwrap();
    let batch = consumer.poll(10, Duration::from_millis(20)).unwrap();
    assert_eq!(batch.len(), 1, "the Flush record is not durable yet");
    let mut batch = batch;
    batch.handle(|_| Outcome::Ok);
    consumer.commit(batch).unwrap();
    assert!(consumer
        .poll(10, Duration::from_millis(20))
        .unwrap()
        .is_empty());
    wal.sync().unwrap();
    let batch = consumer.poll(10, Duration::from_secs(5)).unwrap();
    assert_eq!(batch.records()[0].payload, b"flushed");
}

#[test]
fn start_latest_skips_what_was_there_and_stale_batches_are_refused() {
    let sim = SimStorage::new(3);
    let wal = Wal::open("log", small().storage(sim)).unwrap();
    fill(&wal);
    let mut consumer = wal.consumer("late", quick().start(Start::Latest)).unwrap();
    assert_eq!(consumer.cursor(), RECORDS + 1);
    wal.append(Record::new(b"new")).unwrap();
    let first = consumer.poll(10, Duration::from_secs(5)).unwrap();
    assert_eq!(first.records()[0].payload, b"new");
    let second = consumer.poll(10, Duration::from_secs(5)).unwrap();
    assert_eq!(
        second.attempt(),
        2,
        "the dropped-by-repoll batch counts as an attempt"
    );
    let stale = consumer.commit(first).unwrap_err();
    assert!(matches!(stale, Error::StaleBatch { .. }), "{stale}");
    consumer.commit(second).unwrap();
    assert_eq!(
        consumer.cursor(),
        RECORDS + 1,
        "nothing answered: nothing passed"
    );
}

#[test]
fn truncating_records_a_consumer_has_not_processed_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small().segment_bytes(64 << 10).record_bytes_max(1024);
    let wal = Wal::open(dir.path(), opts).unwrap();
    drop(wal.consumer("slow", quick()).unwrap());
    let payload = [7u8; 1000];
    for _ in 0..200 {
        wal.append(Record::new(&payload).durability(Durability::Flush))
            .unwrap();
    }
    wal.sync().unwrap();
    assert!(wal.truncate_before(150).unwrap() > 0);
    let err = wal.consumer("slow", quick()).unwrap_err();
    assert!(
        matches!(err, Error::CursorOutOfRange { cursor: 1, .. }),
        "{err}"
    );
}

/// The consumer keeps one reader and extends it as the log grows, across segment rotations
/// and a truncation behind it, instead of rescanning its segment on every poll.
#[test]
fn run_follows_a_growing_log_across_segments_and_sees_every_record_once_in_order() {
    let opts = small().segment_bytes(64 << 10).record_bytes_max(1024);
    let dir = tempfile::tempdir().unwrap();
    follow(Wal::open(dir.path(), opts.clone()).unwrap());
    follow(Wal::open("log", opts.storage(SimStorage::new(4))).unwrap());
}

fn follow(wal: Wal) {
    const N: u64 = 3000;
    let wal = Arc::new(wal);
    let mut consumer = wal
        .consumer("follower", quick().batch_records_max(64))
        .unwrap();
    let append = |i: u64| {
        let body = format!("{i:0>100}");
        let durability = match i % 7 {
            0 => Durability::Sync,
            _ => Durability::Flush,
        };
        wal.append(Record::new(body.as_bytes()).durability(durability))
            .unwrap();
    };
    // In turns: each drain finds its reader exhausted and extends it, across rotations.
    let mut seen = Vec::new();
    for chunk in 0..10u64 {
        (chunk * 150 + 1..=chunk * 150 + 150).for_each(append);
        wal.sync().unwrap();
        consumer
            .drain(|r| {
                seen.push(r.lsn);
                Outcome::Ok
            })
            .unwrap();
        if chunk == 5 {
            assert!(wal.truncate_before(consumer.cursor()).unwrap() > 0);
        }
    }
    assert_eq!(seen, (1..=N / 2).collect::<Vec<_>>());
    // Concurrently, with `run`.
    let writer = {
        let wal = wal.clone();
        std::thread::spawn(move || {
            for i in N / 2 + 1..=N {
                let body = format!("{i:0>100}");
                wal.append(Record::new(body.as_bytes()).durability(Durability::Flush))
                    .unwrap();
            }
            wal.sync().unwrap();
        })
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    consumer
        .run(
            |r| {
                assert!(Instant::now() < deadline, "not done within 30 s");
                assert_eq!(r.payload, format!("{:0>100}", r.lsn).as_bytes());
                seen.push(r.lsn);
                if r.lsn == N {
                    stop.store(true, std::sync::atomic::Ordering::Release);
                }
                if r.lsn == N * 3 / 4 {
                    // Truncation behind the cursor does not disturb the reader.
                    wal.truncate_before(N / 2).unwrap();
                }
                Outcome::Ok
            },
            &stop,
        )
        .unwrap();
    writer.join().unwrap();
    assert_eq!(seen, (1..=N).collect::<Vec<_>>());
    assert!(wal.first_lsn() > 1, "segments were removed");
    assert_eq!(consumer.metrics().lag, 0);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A cursor created by a process that died between renaming the file into place and syncing
/// the consumers folder: the next process opens the existing file and commits to it. Its
/// name must be made durable before a commit is acknowledged, or power loss takes the
/// cursor (and every acknowledged commit) back to the start.
#[test]
fn a_commit_survives_power_loss_after_a_cursor_creation_cut_short() {
    let sim = SimStorage::new(3);
    let wal = Wal::open("log", small().storage(sim.clone())).unwrap();
    fill(&wal);
    // Count the directory syncs a first open makes, on a copy of the disk: the last one
    // is the cursor's, after its rename.
    let syncs = {
        let copy = sim.fork();
        let wal = Wal::open("log", small().storage(copy.clone())).unwrap();
        let before = copy.stats().sync_dir;
        drop(wal.consumer("c", quick()).unwrap());
        copy.stats().sync_dir - before
    };
    sim.fail_nth(FaultKind::SyncDir, syncs);
    assert!(
        wal.consumer("c", quick()).is_err(),
        "the failed sync surfaces"
    );
    // The process dies; the next one finds the cursor under its name.
    let next = sim.fork();
    drop(wal);
    let opts = small().storage(next.clone());
    let wal = Wal::open("log", opts.clone()).unwrap();
    let mut consumer = wal.consumer("c", quick()).unwrap();
    let mut batch = consumer.poll(100, Duration::from_secs(5)).unwrap();
    batch.handle(|_| Outcome::Ok);
    consumer.commit(batch).unwrap();
    let committed = consumer.cursor();
    assert!(committed > 1);
    next.crash(CrashMode::Clean);
    drop(consumer);
    drop(wal);
    let wal = Wal::open("log", opts).unwrap();
    let consumer = wal.consumer("c", quick()).unwrap();
    assert_eq!(consumer.cursor(), committed);
}
