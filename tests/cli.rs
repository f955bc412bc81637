//! The `groupwal` binary, run as a user runs it: every verb's success path, every error path
//! (bad invocation, missing or foreign directory, locked log, unreadable file), and a small
//! `bench` whose `--json`, `--csv` and `--plot` outputs are checked. No assertion on speed.

use groupwal::format::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use groupwal::{Record, Wal, WalOptions};
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A run of the binary that takes longer than this is a hang, reported as a failure.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const PAYLOAD_BYTES: usize = 1000;
const FRAME_BYTES: u64 = (FRAME_HEADER_BYTES + PAYLOAD_BYTES) as u64;

fn groupwal(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_groupwal"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .spawn()
        .expect("spawn the groupwal binary");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait for groupwal").is_some() {
            return child.wait_with_output().expect("collect groupwal output");
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            panic!("groupwal {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `groupwal VERB DIR EXTRA...` once.
fn run_path_once(verb: &str, dir: &Path, extra: &[&str]) -> Output {
    let dir = dir.to_str().expect("utf-8 temp path");
    let mut args = vec![verb, dir];
    args.extend_from_slice(extra);
    groupwal(&args)
}

/// Runs `groupwal VERB DIR EXTRA...`, again if it finds the log locked (exit 75) within the
/// first seconds: see [`open_wal`] for how a closed handle's lock can outlive it briefly
/// when other tests spawn processes.
fn run_path(verb: &str, dir: &Path, extra: &[&str]) -> Output {
    let start = Instant::now();
    loop {
        let o = run_path_once(verb, dir, extra);
        if o.status.code() != Some(75) || start.elapsed() > Duration::from_secs(5) {
            return o;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The run failed with `code` and exactly one line on stderr, `groupwal: ...` containing
/// `needle`, and no panic.
#[track_caller]
fn assert_error(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code; stderr: {err}; stdout: {}",
        stdout(o)
    );
    assert_eq!(err.lines().count(), 1, "one line on stderr, got: {err:?}");
    assert!(err.starts_with("groupwal: "), "prefix: {err:?}");
    assert!(
        err.contains(needle),
        "stderr should mention {needle:?}: {err:?}"
    );
    assert!(!err.contains("panicked"), "no panic: {err:?}");
    assert!(!err.contains("RUST_BACKTRACE"), "no backtrace: {err:?}");
}

#[track_caller]
fn assert_ok(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// Opens the log for writing, retrying briefly on `Locked`: a lock of a handle just dropped
/// by this test can live on for a moment in a child that another test is spawning (flock
/// locks belong to the open file, which a fork shares until the child's exec closes it).
fn open_wal(dir: &Path) -> Wal {
    let start = Instant::now();
    loop {
        match Wal::open(dir, options()) {
            Ok(wal) => return wal,
            Err(groupwal::Error::Locked { .. }) if start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("open {dir:?}: {e}"),
        }
    }
}

fn options() -> WalOptions {
    WalOptions::default()
        .segment_bytes(64 << 10)
        .record_bytes_max(4096)
}

/// A log of `records` records of `PAYLOAD_BYTES` bytes; every third one carries correlation
/// id `lsn * 1000` (they get LSNs 1, 2, ...).
fn make_log(dir: &Path, records: u64) {
    let wal = open_wal(dir);
    for lsn in 1..=records {
        let payload = vec![(lsn % 251) as u8 + 1; PAYLOAD_BYTES];
        let mut record = Record::new(&payload);
        if lsn % 3 == 0 {
            record = record.correlation_id(lsn * 1000);
        }
        let receipt = wal.append(record).expect("append");
        assert_eq!(receipt.lsn, lsn);
    }
    wal.close().expect("close");
}

/// A one-segment log of `records` records without correlation ids: record `i` (from 0)
/// starts at `SEGMENT_HEADER_BYTES + i * FRAME_BYTES` of segment 1.
fn make_plain_log(dir: &Path, records: u64) -> PathBuf {
    let wal = open_wal(dir);
    for _ in 0..records {
        let payload = vec![0x42; PAYLOAD_BYTES];
        wal.append(Record::new(&payload)).expect("append");
    }
    wal.close().expect("close");
    let path = wal.segment_path(1);
    drop(wal);
    path
}

/// Flips one payload byte of record `index` (from 0) of a plain log's segment 1.
fn damage_record(segment: &Path, index: u64) {
    let offset = SEGMENT_HEADER_BYTES as u64 + index * FRAME_BYTES + FRAME_HEADER_BYTES as u64 + 7;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment)
        .expect("open segment");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).expect("read byte");
    file.write_all_at(&[byte[0] ^ 0xff], offset)
        .expect("write byte");
}

/// Every file under `dir` with its bytes: to check that a verb changed nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path.clone());
                out.insert(path, Vec::new());
            } else {
                let bytes = std::fs::read(&path).expect("read");
                out.insert(path, bytes);
            }
        }
    }
    out
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(o)))
}

fn is_root() -> bool {
    // The uid of this process owns the files it creates.
    let probe = tempfile::tempfile().expect("temp file");
    std::os::unix::fs::MetadataExt::uid(&probe.metadata().expect("stat")) == 0
}

// ---------------------------------------------------------------------------------------
// Help and bad invocations

#[test]
fn help_lists_every_verb_flag_and_exit_status() {
    let o = groupwal(&["--help"]);
    assert_ok(&o);
    let text = stdout(&o);
    for word in [
        "bench",
        "inspect",
        "verify",
        "salvage",
        "Exit status",
        "64",
        "75",
    ] {
        assert!(text.contains(word), "--help mentions {word}: {text}");
    }
    let expected: [(&str, &[&str]); 4] = [
        (
            "bench",
            &[
                "--dir",
                "--writers",
                "--record-bytes",
                "--durability",
                "--duration",
                "--rounds",
                "--sweep-writers",
                "--commit-delay",
                "--commit-siblings",
                "--group-bytes-max",
                "--lock-hold-max",
                "--no-sweeps",
                "--segment-bytes",
                "--json",
                "--csv",
                "--plot",
                "tmpfs",
                "Exit status",
            ],
        ),
        (
            "inspect",
            &[
                "<DIR>",
                "--from",
                "--limit",
                "--correlation",
                "--json",
                "Never modifies",
            ],
        ),
        (
            "verify",
            &[
                "<DIR>",
                "--json",
                "torn tail",
                "corruption",
                "offset",
                "Never modifies",
            ],
        ),
        ("salvage", &["<DIR>", "--force", "--json", "quarantine"]),
    ];
    for (verb, flags) in expected {
        let o = groupwal(&[verb, "--help"]);
        assert_ok(&o);
        let text = stdout(&o);
        for flag in flags {
            assert!(
                text.contains(flag),
                "`{verb} --help` mentions {flag}: {text}"
            );
        }
    }
    let o = groupwal(&["--version"]);
    assert_ok(&o);
    assert!(stdout(&o).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_invocations_get_one_line_and_exit_64() {
    let cases: [(&[&str], &str); 10] = [
        (&[], "missing verb"),
        (&["frobnicate"], "frobnicate"),
        (&["bench", "--frobnicate"], "--frobnicate"),
        (&["bench", "--writers", "0"], "--writers"),
        (&["bench", "--duration", "5parsecs"], "parsecs"),
        (&["bench", "--durability", "eventually"], "eventually"),
        (&["bench", "--record-bytes", "lots"], "lots"),
        (&["inspect"], "<DIR>"),
        (&["inspect", "/tmp", "--limit", "-3"], "-3"),
        (&["inspect", "/tmp", "--correlation", "not-hex"], "not-hex"),
    ];
    for (args, needle) in cases {
        let o = groupwal(args);
        assert_error(&o, 64, needle);
    }
}

// ---------------------------------------------------------------------------------------
// inspect

#[test]
fn inspect_lists_segments_and_records_without_changing_the_log() {
    let tmp = tempfile::tempdir().expect("temp dir");
    make_log(tmp.path(), 200);
    let before = snapshot(tmp.path());

    let o = run_path("inspect", tmp.path(), &[]);
    assert_ok(&o);
    let text = stdout(&o);
    assert!(text.contains("200 record(s) (LSN 1..=200)"), "{text}");
    assert!(text.contains("sealed") && text.contains("active"), "{text}");
    assert!(text.contains("00000000000000000001.wal"), "{text}");
    assert!(
        text.contains(&format!("{:032x}", 3000)),
        "correlation id shown: {text}"
    );

    let o = run_path("inspect", tmp.path(), &["--json"]);
    assert_ok(&o);
    let v = json(&o);
    assert_eq!(v["records"], 200);
    assert_eq!(v["first_lsn"], 1);
    assert_eq!(v["next_lsn"], 201);
    assert!(v["torn_tail"].is_null());
    let segments = v["segments"].as_array().expect("segments");
    assert!(segments.len() >= 3, "200 KB of records in 64 KiB segments");
    let mut next = 1;
    let mut counted = 0;
    for (i, s) in segments.iter().enumerate() {
        assert_eq!(s["seq"], i as u64 + 1);
        assert_eq!(s["first_lsn"], next, "segments hold consecutive LSNs");
        let records = s["records"].as_u64().expect("records");
        counted += records;
        next += records;
        if records > 0 {
            assert_eq!(s["last_lsn"], next - 1);
        }
        let state = if i + 1 == segments.len() {
            "active"
        } else {
            "sealed"
        };
        assert_eq!(s["state"], state);
        assert_eq!(s["file_bytes"], 64 << 10);
        assert!(s["used_bytes"].as_u64().expect("used") <= 64 << 10);
    }
    assert_eq!(counted, 200);
    let listed = v["listed"].as_array().expect("listed");
    assert_eq!(listed.len(), 200);
    assert_eq!(listed[0]["lsn"], 1);
    assert_eq!(listed[0]["len"], PAYLOAD_BYTES);
    assert!(listed[0]["correlation_id"].is_null());
    assert_eq!(listed[2]["correlation_id"], format!("{:032x}", 3000));

    let o = run_path(
        "inspect",
        tmp.path(),
        &["--json", "--from", "150", "--limit", "10"],
    );
    assert_ok(&o);
    let v = json(&o);
    let lsns: Vec<u64> = v["listed"]
        .as_array()
        .expect("listed")
        .iter()
        .map(|r| r["lsn"].as_u64().expect("lsn"))
        .collect();
    assert_eq!(lsns, (150..160).collect::<Vec<_>>());
    assert_eq!(v["records_matched"], 51);

    let o = run_path(
        "inspect",
        tmp.path(),
        &["--json", "--correlation", "0x2ee0"],
    );
    assert_ok(&o);
    let v = json(&o);
    let listed = v["listed"].as_array().expect("listed");
    assert_eq!(listed.len(), 1, "only LSN 12 has id 12000 = 0x2ee0");
    assert_eq!(listed[0]["lsn"], 12);

    let o = run_path("inspect", tmp.path(), &["--limit", "0"]);
    assert_ok(&o);
    assert!(!stdout(&o).contains("correlation id"), "segments only");

    assert_eq!(snapshot(tmp.path()), before, "inspect changed nothing");
}

#[test]
fn inspect_into_a_closed_pipe_ends_quietly() {
    // `groupwal inspect DIR | head -1`: the reader goes away early; no panic message.
    let tmp = tempfile::tempdir().expect("temp dir");
    make_log(tmp.path(), 300);
    let mut child = Command::new(env!("CARGO_BIN_EXE_groupwal"))
        .args(["inspect", tmp.path().to_str().expect("utf-8")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    let err = stderr(&output);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "nothing on stderr: {err}");
}

#[test]
fn inspect_reports_a_torn_tail_without_cutting_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let segment = make_plain_log(tmp.path(), 10);
    damage_record(&segment, 9);
    let before = snapshot(tmp.path());
    let o = run_path("inspect", tmp.path(), &["--json"]);
    assert_ok(&o);
    let v = json(&o);
    assert_eq!(v["records"], 9);
    assert_eq!(v["torn_tail"]["segment"], 1);
    assert_eq!(
        v["torn_tail"]["offset"],
        SEGMENT_HEADER_BYTES as u64 + 9 * FRAME_BYTES
    );
    assert_eq!(snapshot(tmp.path()), before, "inspect cut nothing");
}

// ---------------------------------------------------------------------------------------
// verify

#[test]
fn verify_exits_0_on_a_clean_log() {
    let tmp = tempfile::tempdir().expect("temp dir");
    make_log(tmp.path(), 200);
    let before = snapshot(tmp.path());
    let o = run_path("verify", tmp.path(), &[]);
    assert_ok(&o);
    assert!(stdout(&o).starts_with("clean:"), "{}", stdout(&o));
    assert!(stdout(&o).contains("200 valid record(s)"), "{}", stdout(&o));
    let o = run_path("verify", tmp.path(), &["--json"]);
    assert_ok(&o);
    let v = json(&o);
    assert_eq!(v["status"], "clean");
    assert_eq!(v["records"], 200);
    assert_eq!(snapshot(tmp.path()), before, "verify changed nothing");
}

#[test]
fn verify_exits_1_on_a_torn_tail_with_segment_and_offset() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let segment = make_plain_log(tmp.path(), 10);
    damage_record(&segment, 9);
    let before = snapshot(tmp.path());
    let offset = SEGMENT_HEADER_BYTES as u64 + 9 * FRAME_BYTES;
    let o = run_path("verify", tmp.path(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("torn tail: "), "{text}");
    assert!(text.contains("\ntorn tail: segment 1"), "{text}");
    assert!(text.contains(&format!("at offset {offset}")), "{text}");
    assert!(text.contains("00000000000000000001.wal"), "{text}");
    let o = run_path("verify", tmp.path(), &["--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["status"], "torn_tail");
    assert_eq!(v["segment"], 1);
    assert_eq!(v["offset"], offset);
    assert_eq!(snapshot(tmp.path()), before, "verify changed nothing");
}

#[test]
fn verify_exits_2_on_corruption_with_segment_and_offset() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let segment = make_plain_log(tmp.path(), 10);
    damage_record(&segment, 3);
    let before = snapshot(tmp.path());
    let offset = SEGMENT_HEADER_BYTES as u64 + 3 * FRAME_BYTES;
    let o = run_path("verify", tmp.path(), &[]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("corruption: "), "{text}");
    assert!(text.contains("corruption: segment 1"), "{text}");
    assert!(text.contains(&format!("at offset {offset}")), "{text}");
    assert!(text.contains("groupwal salvage"), "says what to do: {text}");
    let o = run_path("verify", tmp.path(), &["--json"]);
    assert_eq!(o.status.code(), Some(2));
    let v = json(&o);
    assert_eq!(v["status"], "corruption");
    assert_eq!(v["offset"], offset);
    assert_eq!(snapshot(tmp.path()), before, "verify changed nothing");

    // Other verbs refuse to open a corrupt log, with the same code.
    let o = run_path("inspect", tmp.path(), &[]);
    assert_error(&o, 2, "corruption in segment 1");
}

/// Verify lists every damaged range, not only the first (the `Corruption` error's message
/// sends users to it for exactly that), and still changes nothing.
#[test]
fn verify_lists_every_damaged_range() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let segment = make_plain_log(tmp.path(), 10);
    damage_record(&segment, 2);
    damage_record(&segment, 6);
    let before = snapshot(tmp.path());
    let o = run_path("verify", tmp.path(), &["--json"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let v = json(&o);
    let problems = v["problems"].as_array().expect("problems");
    let offsets: Vec<u64> = problems
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset"))
        .collect();
    let at = |i: u64| SEGMENT_HEADER_BYTES as u64 + i * FRAME_BYTES;
    assert_eq!(offsets, vec![at(2), at(6)], "{v}");
    assert!(problems.iter().all(|p| p["kind"] == "corruption"), "{v}");
    assert_eq!(v["records"], 8, "the valid records around the damage: {v}");
    let text = stdout(&run_path("verify", tmp.path(), &[]));
    assert_eq!(text.matches("corruption: segment 1").count(), 2, "{text}");
    assert_eq!(snapshot(tmp.path()), before, "verify changed nothing");
}

// ---------------------------------------------------------------------------------------
// salvage

#[test]
fn salvage_quarantines_damage_and_reports_where() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let segment = make_plain_log(tmp.path(), 10);
    damage_record(&segment, 3);
    let o = run_path("salvage", tmp.path(), &["--json"]);
    assert_ok(&o);
    let v = json(&o);
    assert_eq!(v["records"], 9, "every valid record kept");
    let ranges = v["quarantined"].as_array().expect("quarantined");
    assert_eq!(ranges.len(), 1, "{v}");
    assert_eq!(ranges[0]["segment"], 1);
    assert_eq!(
        ranges[0]["offset"],
        SEGMENT_HEADER_BYTES as u64 + 3 * FRAME_BYTES
    );
    assert_eq!(ranges[0]["torn_tail"], false);
    let copy = PathBuf::from(ranges[0]["quarantine_file"].as_str().expect("copy path"));
    assert!(copy.exists(), "{copy:?}");
    assert!(copy.starts_with(tmp.path().join("quarantine")));

    // The log now verifies and opens; a second salvage has nothing to do.
    assert_ok(&run_path("verify", tmp.path(), &[]));
    let o = run_path("salvage", tmp.path(), &[]);
    assert_ok(&o);
    assert!(
        stdout(&o).contains("nothing to quarantine"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn salvage_prints_a_table_of_what_it_moved() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let segment = make_plain_log(tmp.path(), 10);
    damage_record(&segment, 9);
    let o = run_path("salvage", tmp.path(), &[]);
    assert_ok(&o);
    let text = stdout(&o);
    assert!(text.contains("kept 9 record(s)"), "{text}");
    assert!(text.contains("quarantined 1 damaged range(s)"), "{text}");
    assert!(text.contains("torn tail"), "{text}");
    assert!(text.contains("quarantine"), "{text}");
    assert_ok(&run_path("verify", tmp.path(), &[]));
}

// ---------------------------------------------------------------------------------------
// Error paths of the log verbs

const LOG_VERBS: [&str; 3] = ["inspect", "verify", "salvage"];

#[test]
fn a_missing_directory_is_one_line_and_exit_66() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let missing = tmp.path().join("nope");
    for verb in LOG_VERBS {
        let o = run_path(verb, &missing, &[]);
        assert_error(&o, 66, "no such directory");
        assert!(!missing.exists(), "{verb} created nothing");
    }
}

#[test]
fn a_file_or_an_empty_directory_is_not_a_log() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("file");
    std::fs::write(&file, b"hello").expect("write");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    for verb in LOG_VERBS {
        assert_error(&run_path(verb, &file, &[]), 66, "not a directory");
        assert_error(&run_path(verb, &empty, &[]), 66, "not a groupwal log");
        assert_eq!(std::fs::read_dir(&empty).expect("list").count(), 0);
    }
}

#[test]
fn a_foreign_directory_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        tmp.path().join("00000000000000000001.wal"),
        b"this is somebody else's file, not a groupwal segment",
    )
    .expect("write");
    std::fs::write(tmp.path().join("notes.txt"), b"keep me").expect("write");
    let before = snapshot(tmp.path());
    for verb in LOG_VERBS {
        let o = run_path(verb, tmp.path(), &[]);
        assert_error(&o, 66, "not a groupwal log");
    }
    assert_eq!(snapshot(tmp.path()), before, "nothing touched");
}

#[test]
fn a_locked_log_is_one_line_and_exit_75() {
    let tmp = tempfile::tempdir().expect("temp dir");
    make_log(tmp.path(), 5);
    let holder = open_wal(tmp.path());
    for verb in LOG_VERBS {
        let o = run_path_once(verb, tmp.path(), &[]);
        assert_error(&o, 75, "locked");
    }
    drop(holder);
    assert_ok(&run_path("verify", tmp.path(), &[]));
}

#[test]
fn an_unreadable_segment_is_one_line_and_exit_74() {
    // A directory where a segment file should be: every read of it fails, even as root.
    let tmp = tempfile::tempdir().expect("temp dir");
    make_log(tmp.path(), 5);
    std::fs::create_dir(tmp.path().join("00000000000000000002.wal")).expect("mkdir");
    for verb in LOG_VERBS {
        let o = run_path(verb, tmp.path(), &[]);
        assert_error(&o, 74, "00000000000000000002.wal");
    }

    // Permission bits: root reads through them, so this half only runs as another user.
    let tmp = tempfile::tempdir().expect("temp dir");
    let segment = make_plain_log(tmp.path(), 3);
    if is_root() {
        eprintln!("note: running as root, which reads files whatever their mode: skipping the chmod 000 case");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&segment, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    for verb in LOG_VERBS {
        let o = run_path(verb, tmp.path(), &[]);
        assert_error(&o, 74, "Permission denied");
    }
    std::fs::set_permissions(&segment, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

// ---------------------------------------------------------------------------------------
// bench

fn bench_dir() -> tempfile::TempDir {
    // On the target's disk rather than /tmp, which may be tmpfs (and would warn).
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

#[track_caller]
fn positive(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is a number: {v}"));
    assert!(x.is_finite() && x > 0.0, "{what} = {x} is positive");
    x
}

#[track_caller]
fn check_latency(v: &Value, what: &str) {
    let p50 = positive(&v["latency_us_p50"], what);
    let p99 = positive(&v["latency_us_p99"], what);
    let p999 = positive(&v["latency_us_p999"], what);
    let max = positive(&v["latency_us_max"], what);
    positive(&v["latency_us_mean"], what);
    assert!(p50 <= p99 && p99 <= p999 && p999 <= max, "{what}: {v}");
}

/// The run succeeded and its tables (stdout) have each of `headings`.
#[track_caller]
fn assert_tables(o: &Output, headings: &[&str]) {
    assert_ok(o);
    let text = stdout(o);
    for heading in headings {
        assert!(text.contains(heading), "table has {heading}: {text}");
    }
}

/// One measured figure of the JSON report: its `count` of operations over its `seconds` is
/// its `rate` per second, its `mb_per_s` is that rate times `bytes` per operation, all
/// positive, and its latency percentiles are in order. Returns the rate and the MB/s.
#[track_caller]
fn check_figure(v: &Value, count: &str, rate: &str, bytes: f64, what: &str) -> (f64, f64) {
    let n = positive(&v[count], what);
    let seconds = positive(&v["seconds"], what);
    let per_s = positive(&v[rate], what);
    assert!((per_s - n / seconds).abs() < 1e-6 * per_s, "{what}");
    let mb = positive(&v["mb_per_s"], what);
    assert!((mb - per_s * bytes / 1e6).abs() < 1e-6 * mb, "{what}");
    check_latency(&v["latency"], what);
    (per_s, mb)
}

#[test]
fn a_small_bench_measures_everything_and_writes_json_csv_and_svg() {
    let tmp = bench_dir();
    let out = tempfile::tempdir().expect("temp dir");
    let json_path = out.path().join("bench.json");
    let csv_path = out.path().join("bench.csv");
    let svg_path = out.path().join("bench.svg");
    let o = groupwal(&[
        "bench",
        "--dir",
        tmp.path().to_str().expect("utf-8"),
        "--writers",
        "1,2",
        "--duration",
        "60ms",
        "--rounds",
        "2",
        "--record-bytes",
        "100",
        "--sweep-writers",
        "2",
        "--commit-delay",
        "off,100us",
        "--group-bytes-max",
        "64KiB",
        "--lock-hold-max",
        "10ms",
        "--segment-bytes",
        "2MiB",
        "--batch-records",
        "50",
        "--batch-record-bytes",
        "512",
        "--json",
        json_path.to_str().expect("utf-8"),
        "--csv",
        csv_path.to_str().expect("utf-8"),
        "--plot",
        svg_path.to_str().expect("utf-8"),
    ]);
    assert_tables(
        &o,
        &[
            "disk ceiling",
            "4 KiB overwrite + fdatasync",
            "group commit",
            "naive",
            "durable batch",
            "knob",
        ],
    );
    // Not a terminal: plain progress lines, one per step start and end.
    let progress = stderr(&o);
    // 3 ceiling figures, 2 writer counts (naive and group commit together), the durable
    // batch, 4 sweep points.
    assert!(
        progress.contains("[ 1/10]") && progress.contains("[10/10]"),
        "{progress}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).expect("list").count(),
        0,
        "the scratch directory was removed"
    );

    let v: Value = serde_json::from_slice(&std::fs::read(&json_path).expect("json written"))
        .expect("valid JSON");
    assert_eq!(v["groupwal_version"], env!("CARGO_PKG_VERSION"));
    assert!(v["environment"]["dir"].is_string());
    assert!(v["environment"]["persistent"].is_boolean());
    positive(&v["environment"]["cpus"], "cpus");
    let load = &v["environment"]["load_average_1m"];
    assert!(
        load.is_null() || load.as_f64().is_some_and(|l| l >= 0.0),
        "{load}"
    );
    positive(&v["total_seconds"], "total_seconds");
    let c = &v["config"];
    assert_eq!(c["duration_ms"], 60.0);
    assert_eq!(c["rounds"], 2);
    assert_eq!(c["warmup_ms"], 6.0);
    assert_eq!(c["record_bytes"], 100);
    assert_eq!(c["durability"], "sync");
    assert_eq!(c["writers"], serde_json::json!([1, 2]));
    assert_eq!(c["sweep_writers"], 2);
    assert_eq!(c["commit_delay"], serde_json::json!(["off", "100µs"]));
    assert_eq!(c["commit_siblings"], 5);
    assert_eq!(c["group_bytes_max"], serde_json::json!([65536]));
    assert_eq!(c["lock_hold_max_us"], serde_json::json!([10000.0]));
    assert_eq!(c["segment_bytes"], 2 << 20);

    for (name, bytes) in [
        ("append_4k_fdatasync", 4096),
        ("overwrite_4k_fdatasync", 4096),
        ("sequential_1m_fdatasync", 1 << 20),
    ] {
        let f = &v["ceiling"][name];
        assert_eq!(f["write_bytes"], bytes, "{name}");
        check_figure(f, "ops", "ops_per_s", bytes as f64, name);
    }

    let comparison = v["comparison"].as_array().expect("comparison");
    assert_eq!(
        comparison.len(),
        4,
        "naive and group commit at 1 and 2 writers"
    );
    let sweeps = v["sweeps"].as_array().expect("sweeps");
    assert_eq!(
        sweeps.len(),
        4,
        "2 commit delays, 1 group size, 1 lock hold"
    );
    let knobs: Vec<(&str, &str)> = sweeps
        .iter()
        .map(|p| {
            (
                p["knob"].as_str().expect("knob"),
                p["knob_value"].as_str().expect("value"),
            )
        })
        .collect();
    assert_eq!(
        knobs,
        [
            ("commit_delay", "off"),
            ("commit_delay", "100µs"),
            ("group_bytes_max", "64KiB"),
            ("lock_hold_max", "10ms")
        ]
    );
    for (i, p) in comparison.iter().chain(sweeps).enumerate() {
        let what = format!("point {i}: {p}");
        let mode = p["mode"].as_str().expect("mode");
        assert!(mode == "naive" || mode == "group_commit", "{what}");
        if i < comparison.len() {
            assert_eq!(
                mode,
                if i % 2 == 0 { "naive" } else { "group_commit" },
                "{what}"
            );
            assert_eq!(p["writers"], [1, 1, 2, 2][i], "{what}");
            assert!(p["knob"].is_null() && p["knob_value"].is_null(), "{what}");
        } else {
            assert_eq!(mode, "group_commit", "{what}");
            assert_eq!(p["writers"], 2, "{what}");
        }
        check_figure(p, "commits", "commits_per_s", 100.0, &what);
        positive(&p["fdatasyncs_per_s"], &what);
        let per_group = positive(&p["records_per_group"], &what);
        if mode == "naive" {
            assert_eq!(per_group, 1.0, "{what}");
            assert_eq!(p["speedup_over_naive"], 1.0, "{what}");
        }
        positive(&p["speedup_over_naive"], &what);
        let cpu = p["cpu_us_per_commit"].as_f64().expect("cpu");
        assert!(cpu.is_finite() && cpu >= 0.0, "{what}");
        positive(&p["ceiling_share"], &what);
        positive(&p["sync_share"], &what);
    }

    let csv = std::fs::read_to_string(&csv_path).expect("csv written");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    for column in [
        "section",
        "mode",
        "writers",
        "ops_per_s",
        "latency_us_p99",
        "records_per_group",
    ] {
        assert!(header.contains(&column), "csv column {column}");
    }
    let rows: Vec<&str> = lines.collect();
    assert_eq!(
        rows.len(),
        3 + 4 + 4 + 2,
        "one row per ceiling figure, per point and per side of the durable batch"
    );
    for row in &rows {
        assert_eq!(row.split(',').count(), header.len(), "row {row}");
    }
    assert!(rows[0].starts_with("ceiling,append_4k_fdatasync,"));
    assert!(rows[3].starts_with("comparison,naive,"));
    assert!(rows[10].starts_with("sweep,group_commit,lock_hold_max,10ms,"));
    // The batch rows count batches: the JSON's figures.
    let ops = header.iter().position(|&c| c == "ops").expect("ops column");
    for (row, side) in rows[11..].iter().zip(["naive", "groupwal"]) {
        assert!(
            row.starts_with(&format!("batch,{side},,,1,512,sync,")),
            "{row}"
        );
        let batches = row.split(',').nth(ops).expect("ops");
        assert_eq!(
            batches,
            v["batch"][side]["batches"].to_string(),
            "{side}: {row}"
        );
    }

    let svg = std::fs::read_to_string(&svg_path).expect("svg written");
    assert!(svg.contains("<svg"), "an SVG document");
    for label in [
        "group commit",
        "naive",
        "ceiling",
        "writer threads",
        "latency",
    ] {
        assert!(svg.contains(label), "plot has {label}");
    }
}

/// Runs a short bench without sweeps (2 rounds, 1 MiB segments) with `extra` arguments in a
/// fresh directory; returns its output and its `--json` report.
fn short_bench(extra: &[&str]) -> (Output, Value) {
    let tmp = bench_dir();
    let dir = tmp.path().to_str().expect("utf-8");
    let json_path = tmp.path().join("out.json");
    let json = json_path.to_str().expect("utf-8");
    let mut args = vec![
        "bench",
        "--dir",
        dir,
        "--rounds",
        "2",
        "--no-sweeps",
        "--segment-bytes",
        "1MiB",
        "--json",
        json,
    ];
    args.extend_from_slice(extra);
    let o = groupwal(&args);
    assert_ok(&o);
    let v = serde_json::from_slice(&std::fs::read(&json_path).expect("json")).expect("json");
    (o, v)
}

#[test]
fn bench_without_sweeps_in_flush_mode() {
    let (o, v) = short_bench(&[
        "--writers",
        "3",
        "--duration",
        "30ms",
        "--durability",
        "flush",
        "--batch-records",
        "0",
    ]);
    assert!(!stdout(&o).contains("durable batch"), "{}", stdout(&o));
    let progress = stderr(&o);
    // 3 ceiling figures and 1 writer count: no sweeps, no batch.
    assert!(
        progress.contains("[ 4/4]") && !progress.contains("durable batch"),
        "{progress}"
    );
    assert_eq!(v["config"]["durability"], "flush");
    assert_eq!(v["config"]["batch_records"], 0);
    assert!(v["batch"].is_null(), "skipped: {}", v["batch"]);
    assert_eq!(v["sweeps"], serde_json::json!([]));
    let naive = &v["comparison"][0];
    assert_eq!(naive["mode"], "naive");
    assert_eq!(
        naive["fdatasyncs_per_s"], 0.0,
        "flush: the naive baseline never syncs"
    );
    positive(&v["comparison"][1]["commits_per_s"], "group commit");
}

#[test]
fn bench_measures_a_durable_batch_against_one_naive_write() {
    let (o, v) = short_bench(&[
        "--writers",
        "1",
        "--duration",
        "40ms",
        "--batch-records",
        "50",
        "--batch-record-bytes",
        "512",
    ]);
    assert_tables(
        &o,
        &[
            "durable batch",
            "batches/s",
            "naive: 1 write",
            "append_many",
        ],
    );
    let progress = stderr(&o);
    assert!(
        progress.contains("[ 5/5] durable batch, 50 x 512B"),
        "{progress}"
    );

    assert_eq!(v["config"]["batch_records"], 50);
    assert_eq!(v["config"]["batch_record_bytes"], 512);
    let b = &v["batch"];
    assert_eq!(b["records"], 50, "{b}");
    assert_eq!(b["record_bytes"], 512, "{b}");
    assert_eq!(b["batch_bytes"], 50 * 512, "{b}");
    let mut rates = Vec::new();
    for side in ["naive", "groupwal"] {
        let f = &b[side];
        let what = format!("{side}: {f}");
        let (rate, mb) = check_figure(f, "batches", "batches_per_s", (50 * 512) as f64, &what);
        // Each batch is acknowledged after a group and an fdatasync of its own (one thread).
        let groups = positive(&f["groups_per_batch"], &what);
        let syncs = positive(&f["fdatasyncs_per_batch"], &what);
        assert!(groups >= 1.0 && syncs >= 1.0, "{what}");
        if side == "naive" {
            assert_eq!((groups, syncs), (1.0, 1.0), "{what}");
        }
        rates.push((rate, mb));
    }
    let ratio = positive(&b["ratio_to_naive"], "ratio_to_naive");
    let [(naive_rate, naive_mb), (group_rate, group_mb)] = rates[..] else {
        unreachable!("two sides")
    };
    assert!(
        (ratio - group_rate / naive_rate).abs() < 1e-9 * ratio,
        "{b}"
    );
    assert!((ratio - group_mb / naive_mb).abs() < 1e-6 * ratio, "{b}");
}

#[test]
fn bench_errors_are_one_line() {
    let tmp = bench_dir();
    let dir = tmp.path().to_str().expect("utf-8").to_string();
    let missing = format!("{dir}/missing");
    let file = format!("{dir}/file");
    std::fs::write(&file, b"x").expect("write");
    let cases: [(&[&str], i32, &str); 6] = [
        (
            &[
                "bench",
                "--dir",
                &dir,
                "--duration",
                "20ms",
                "--rounds",
                "4",
            ],
            64,
            "--rounds",
        ),
        (&["bench", "--dir", &missing], 66, "missing"),
        (&["bench", "--dir", &file], 66, "not a directory"),
        (
            &["bench", "--dir", &dir, "--group-bytes-max", "1"],
            64,
            "--group-bytes-max",
        ),
        (
            &["bench", "--dir", &dir, "--commit-delay", "5s"],
            64,
            "--commit-delay",
        ),
        (
            &["bench", "--dir", &dir, "--record-bytes", "0"],
            64,
            "--record-bytes",
        ),
    ];
    for (args, code, needle) in cases {
        let o = groupwal(args);
        assert_error(&o, code, needle);
    }
    // The durable batch's flags: each bad value is a usage error that names its flag.
    let batch_cases: [(&[&str], &str); 5] = [
        (&["--batch-records", "1000001"], "--batch-records"),
        (&["--batch-record-bytes", "0"], "--batch-record-bytes"),
        (&["--batch-record-bytes", "lots"], "--batch-record-bytes"),
        // 1,000 x 2 KiB is above the 1 MiB segment the naive writer's file has.
        (
            &["--batch-record-bytes", "2KiB", "--segment-bytes", "1MiB"],
            "--segment-bytes",
        ),
        // As large as the segment, but its one record does not fit in a segment with the
        // segment's header and its own frame header.
        (
            &[
                "--batch-records",
                "1",
                "--batch-record-bytes",
                "1MiB",
                "--segment-bytes",
                "1MiB",
            ],
            "--batch-record-bytes",
        ),
    ];
    for (extra, needle) in batch_cases {
        let mut args = vec!["bench", "--dir", &dir];
        args.extend_from_slice(extra);
        assert_error(&groupwal(&args), 64, needle);
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["file"], "no scratch directory left behind");
}

#[test]
fn an_interrupted_bench_removes_its_scratch_directory() {
    let tmp = bench_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_groupwal"))
        .args(["bench", "--dir", tmp.path().to_str().expect("utf-8")])
        .args(["--duration", "10s", "--segment-bytes", "1MiB"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait until the run is measuring (its scratch directory exists), then press Ctrl-C.
    let start = Instant::now();
    while std::fs::read_dir(tmp.path()).expect("list").count() == 0 {
        assert!(start.elapsed() < RUN_TIMEOUT, "bench never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(start.elapsed() < RUN_TIMEOUT, "bench ignored SIGINT");
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().expect("output");
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert_eq!(err.lines().last(), Some("groupwal: interrupted"), "{err}");
    assert_eq!(
        std::fs::read_dir(tmp.path()).expect("list").count(),
        0,
        "scratch directory removed"
    );
}

#[test]
fn bench_warns_on_a_file_system_in_memory() {
    let shm = Path::new("/dev/shm");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/dev/shm") && l.contains(" tmpfs "))
    {
        eprintln!("note: /dev/shm is not a tmpfs mount here: skipping the tmpfs warning test");
        return;
    }
    let tmp = tempfile::tempdir_in(shm).expect("temp dir in /dev/shm");
    let o = groupwal(&[
        "bench",
        "--dir",
        tmp.path().to_str().expect("utf-8"),
        "--writers",
        "1",
        "--duration",
        "20ms",
        "--rounds",
        "1",
        "--no-sweeps",
        "--segment-bytes",
        "1MiB",
    ]);
    assert_ok(&o);
    let err = stderr(&o);
    assert!(err.contains("warning") && err.contains("tmpfs"), "{err}");
}

/// A log with recycled segments and pool files (`<seq>.wal.free`): `inspect` lists only the
/// segments, `verify` finds it clean although stale frames lie after the end of its
/// records, and `salvage` finds nothing to quarantine and leaves the pool files alone.
#[test]
fn verbs_work_on_recycled_segments_and_ignore_pool_files() {
    let tmp = tempfile::tempdir().expect("temp dir");
    make_log(tmp.path(), 200);
    let wal = open_wal(tmp.path());
    let bound = wal.segments()[2].first_lsn;
    assert_eq!(wal.truncate_before(bound).expect("truncate"), 2);
    // Rotate into a pool file, then leave it with a few short records over its stale ones.
    let segments = wal.segments().len();
    while wal.segments().len() == segments {
        wal.append(Record::new(&[9u8; PAYLOAD_BYTES]))
            .expect("append");
    }
    for _ in 0..3 {
        wal.append(Record::new(b"short")).expect("append");
    }
    let last = wal.next_lsn() - 1;
    wal.close().expect("close");
    drop(wal);
    let pool: Vec<String> = std::fs::read_dir(tmp.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wal.free"))
        .collect();
    assert_eq!(pool.len(), 1, "{pool:?}");
    let before = snapshot(tmp.path());

    let o = run_path("inspect", tmp.path(), &["--json"]);
    assert_ok(&o);
    let v = json(&o);
    assert_eq!(v["first_lsn"], bound);
    assert_eq!(v["next_lsn"], last + 1);
    assert_eq!(v["records"], last + 1 - bound);
    let files: Vec<&str> = v["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| s["file"].as_str().expect("file"))
        .collect();
    assert!(files.iter().all(|f| f.ends_with(".wal")), "{files:?}");

    let o = run_path("verify", tmp.path(), &["--json"]);
    assert_ok(&o);
    let v = json(&o);
    assert_eq!(v["status"], "clean");
    assert_eq!(v["records"], last + 1 - bound);
    assert_eq!(
        snapshot(tmp.path()),
        before,
        "inspect and verify changed nothing"
    );

    let o = run_path("salvage", tmp.path(), &["--json"]);
    assert_ok(&o);
    let v = json(&o);
    assert_eq!(v["quarantined"].as_array().expect("quarantined").len(), 0);
    assert_eq!(v["records"], last + 1 - bound);
    for name in &pool {
        assert!(tmp.path().join(name).exists(), "salvage kept {name}");
    }
}
