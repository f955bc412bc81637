//! Recovery on open and the log's life across reopenings (issue 2): torn tails cut at every
//! byte, bit rot reported (never truncated) or salvaged, stale bytes that never come back,
//! rotation, `truncate_before`, locking, option checks.
//!
//! Every scenario is written once against `Arc<dyn Storage>` and runs twice: on the real file
//! system (`StdStorage` in a temporary directory) and on the simulated one (`SimStorage`).
//! Files are damaged through the storage trait, so the same helpers work on both. The
//! `on_both!` macro turns each scenario `fn name(env: &Env)` into the tests `name::std` and
//! `name::sim`. Power loss only exists in the simulation, so that scenario is a plain test;
//! lock contention between processes is in `tests/kill.rs` with the other child processes.

use groupwal::format::{decode_frame, encode_frame, SegmentHeader, SEGMENT_HEADER_BYTES};
use groupwal::io::sim::{CrashMode, FaultKind, SimStorage};
use groupwal::io::{read_full_at, OpenMode, StdStorage, Storage};
use groupwal::wal::{DamagedRange, QUARANTINE_DIR, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};
use groupwal::{
    CorrelationId, Durability, Error, LogRecord, Record, RecoveryMode, Wal, WalOptions,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Backends and helpers
// ---------------------------------------------------------------------------------------

/// Segments as small as the options allow: scenarios span several of them quickly.
const SEGMENT_BYTES: u64 = SEGMENT_BYTES_MIN;
const RECORD_BYTES_MAX: usize = 16 << 10;
/// Frame header bytes, restated (the tests check the format, they must not share it).
const FRAME_HEADER: u64 = 17;
/// Room for a payload in a segment: header, and a frame header with a correlation id.
const PAYLOAD_ROOM: usize = SEGMENT_BYTES as usize - 64 - 33;

/// One storage backend with a root directory for the scenario's logs.
struct Env {
    storage: Arc<dyn Storage>,
    sim: Option<Arc<SimStorage>>,
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Env {
    fn std() -> Env {
        let tmp = tempfile::tempdir().expect("create a temporary directory");
        Env {
            storage: StdStorage::shared(),
            sim: None,
            root: tmp.path().to_path_buf(),
            _tmp: Some(tmp),
        }
    }

    fn sim(seed: u64) -> Env {
        let sim = SimStorage::new(seed);
        let storage: Arc<dyn Storage> = sim.clone();
        let root = PathBuf::from("/recovery-test");
        storage.create_dir_all(&root).unwrap();
        Env {
            storage,
            sim: Some(sim),
            root,
            _tmp: None,
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn opts(&self) -> WalOptions {
        WalOptions::default()
            .storage(self.storage.clone())
            .segment_bytes(SEGMENT_BYTES)
            .record_bytes_max(RECORD_BYTES_MAX)
    }

    fn mode(&self, mode: RecoveryMode) -> WalOptions {
        self.opts().recovery_mode(mode)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.storage.list_dir(path).is_ok()
    }

    fn read(&self, path: &Path) -> Vec<u8> {
        let f = self
            .storage
            .open_file(path, OpenMode::ReadOnly)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let len = f.len().unwrap() as usize;
        let mut buf = vec![0; len];
        assert_eq!(read_full_at(&*f, &mut buf, 0).unwrap(), len);
        buf
    }

    /// Whether the test's own changes must be made durable: only where a scenario may cut
    /// the power (the simulation). On the real file system no test loses power, and skipping
    /// the syncs keeps the many-case scenarios fast.
    fn needs_sync(&self) -> bool {
        self.sim.is_some()
    }

    fn write_at(&self, path: &Path, offset: u64, bytes: &[u8]) {
        let f = self.storage.open_file(path, OpenMode::ReadWrite).unwrap();
        f.write_all_at(bytes, offset).unwrap();
        if self.needs_sync() {
            f.sync_data().unwrap();
        }
    }

    fn set_len(&self, path: &Path, len: u64) {
        let f = self.storage.open_file(path, OpenMode::ReadWrite).unwrap();
        f.set_len(len).unwrap();
        if self.needs_sync() {
            f.sync_all().unwrap();
        }
    }

    fn create(&self, path: &Path, bytes: &[u8]) {
        let f = self.storage.open_file(path, OpenMode::CreateNew).unwrap();
        f.write_all_at(bytes, 0).unwrap();
        if self.needs_sync() {
            f.sync_all().unwrap();
            self.storage.sync_dir(path.parent().unwrap()).unwrap();
        }
    }

    fn remove(&self, path: &Path) {
        self.storage.remove_file(path).unwrap();
        if self.needs_sync() {
            self.storage.sync_dir(path.parent().unwrap()).unwrap();
        }
    }

    fn flip_bit(&self, path: &Path, offset: u64, bit: u8) {
        let mut b = [0u8];
        let f = self.storage.open_file(path, OpenMode::ReadWrite).unwrap();
        assert_eq!(read_full_at(&*f, &mut b, offset).unwrap(), 1);
        b[0] ^= 1 << bit;
        f.write_all_at(&b, offset).unwrap();
        if self.needs_sync() {
            f.sync_data().unwrap();
        }
    }

    /// Every file under `dir` (recursively) with its bytes, by path relative to `dir`.
    fn snapshot(&self, dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        self.snapshot_into(dir, "", &mut out);
        out
    }

    fn snapshot_into(&self, dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        for name in self.storage.list_dir(dir).unwrap() {
            let path = dir.join(&name);
            if self.is_dir(&path) {
                self.snapshot_into(&path, &format!("{prefix}{name}/"), out);
            } else {
                out.insert(format!("{prefix}{name}"), self.read(&path));
            }
        }
    }

    /// Writes the files of a snapshot (top level only) into a new directory `to`.
    fn restore(&self, files: &BTreeMap<String, Vec<u8>>, to: &Path) {
        self.storage.create_dir_all(to).unwrap();
        for (name, bytes) in files {
            assert!(!name.contains('/'), "restore copies a flat log");
            self.create(&to.join(name), bytes);
        }
    }

    /// The segment files of the log in `dir`, in order.
    fn segments(&self, dir: &Path) -> Vec<(u64, PathBuf)> {
        let mut out: Vec<_> = self
            .storage
            .list_dir(dir)
            .unwrap()
            .into_iter()
            .filter_map(|name| {
                let digits = name.strip_suffix(".wal")?;
                (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| (digits.parse().unwrap(), dir.join(&name)))
            })
            .collect();
        out.sort();
        out
    }

    /// The header and the valid frames of a segment, walked from its start.
    fn frames(&self, path: &Path) -> (SegmentHeader, Vec<FrameAt>) {
        let bytes = self.read(path);
        let header = SegmentHeader::decode(&bytes).expect("a valid segment header");
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut frames = Vec::new();
        while let Ok(f) = decode_frame(&bytes[offset..], header.salt) {
            frames.push(FrameAt {
                offset: offset as u64,
                len: f.frame_len as u64,
                lsn: f.lsn,
            });
            offset += f.frame_len;
        }
        (header, frames)
    }

    /// Simulates a crash of the process holding `wal`. On the simulated storage it is a
    /// power loss (a torn one: part of the unsynced writes survive); on the real file system
    /// the handle is dropped, which is what a process crash leaves after a completed
    /// append: everything written to the OS.
    fn crash(&self, wal: Wal) {
        if let Some(sim) = &self.sim {
            sim.crash(CrashMode::Torn);
        }
        drop(wal);
    }
}

#[derive(Clone, Copy, Debug)]
struct FrameAt {
    offset: u64,
    len: u64,
    lsn: u64,
}

/// A recognisable payload: the LSN, an epoch (which life of the log wrote it), filler.
fn payload(lsn: u64, epoch: u32, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len.max(12));
    p.extend_from_slice(&lsn.to_le_bytes());
    p.extend_from_slice(&epoch.to_le_bytes());
    let mut x = lsn.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(epoch);
    while p.len() < len {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        p.push((x >> 33) as u8);
    }
    p
}

/// Appends one `Sync` record whose payload encodes its LSN; checks the LSN and records it.
fn append(wal: &Wal, model: &mut Vec<LogRecord>, epoch: u32, len: usize, id: Option<u64>) {
    append_with(wal, model, epoch, len, id, Durability::Sync);
}

fn append_with(
    wal: &Wal,
    model: &mut Vec<LogRecord>,
    epoch: u32,
    len: usize,
    id: Option<u64>,
    durability: Durability,
) {
    let lsn = wal.next_lsn();
    let p = payload(lsn, epoch, len);
    let mut record = Record::new(&p).durability(durability);
    if let Some(id) = id {
        record = record.correlation_id(id);
    }
    let receipt = wal.append(record).expect("append");
    assert_eq!(receipt.lsn, lsn, "the LSN next_lsn promised");
    model.push(LogRecord {
        lsn,
        correlation_id: id.map(CorrelationId::from),
        payload: p,
    });
}

fn read_all(wal: &Wal) -> Vec<LogRecord> {
    read_from(wal, 1)
}

fn read_from(wal: &Wal, lsn: u64) -> Vec<LogRecord> {
    wal.read_from(lsn)
        .collect::<Result<Vec<_>, _>>()
        .expect("read the log")
}

/// Compares what the log holds with the model, by LSN first for a readable failure.
#[track_caller]
fn assert_log(wal: &Wal, model: &[LogRecord]) {
    let got = read_all(wal);
    let got_lsns: Vec<u64> = got.iter().map(|r| r.lsn).collect();
    let want_lsns: Vec<u64> = model.iter().map(|r| r.lsn).collect();
    assert_eq!(got_lsns, want_lsns, "LSNs in the log");
    for (g, w) in got.iter().zip(model) {
        assert_eq!(g, w, "record {}", w.lsn);
    }
}

#[track_caller]
fn assert_dense(records: &[LogRecord], first: u64, last: u64) {
    let lsns: Vec<u64> = records.iter().map(|r| r.lsn).collect();
    let want: Vec<u64> = (first..=last).collect();
    assert_eq!(lsns, want, "LSNs {first}..={last}, dense");
}

#[track_caller]
fn expect_err(result: Result<Wal, Error>) -> Error {
    match result {
        Ok(wal) => panic!("open succeeded: {:?}", wal.recovery_report()),
        Err(e) => e,
    }
}

/// Asserts `e` is `Corruption` at `segment`/`offset` and returns its reason.
#[track_caller]
fn assert_corruption(e: &Error, segment: u64, offset: u64) -> String {
    match e {
        Error::Corruption {
            segment: s,
            offset: o,
            reason,
        } => {
            assert_eq!((*s, *o), (segment, offset), "corruption at {e}");
            assert!(!reason.is_empty(), "a reason is given");
            let text = e.to_string();
            assert!(
                text.contains(&format!("segment {segment}"))
                    && text.contains(&format!("offset {offset}")),
                "the message names segment and offset: {text}"
            );
            reason.clone()
        }
        other => panic!("expected Corruption at {segment}/{offset}, got {other:?}"),
    }
}

/// Builds a log of `count` records in `dir`; `len(lsn)` gives each payload's length, every
/// third record carries a correlation id. Returns the model. The log is closed.
fn build(env: &Env, dir: &Path, count: u64, len: impl Fn(u64) -> usize) -> Vec<LogRecord> {
    let wal = Wal::open(dir, env.opts()).unwrap();
    let mut model = Vec::new();
    for lsn in 1..=count {
        let id = (lsn % 3 == 0).then_some(lsn * 1000);
        append(&wal, &mut model, 0, len(lsn), id);
    }
    wal.close().unwrap();
    model
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn std() {
                    super::$name(&super::Env::std());
                }

                #[test]
                fn sim() {
                    super::$name(&super::Env::sim(0x5eed));
                }
            }
        )*
    };
}

on_both!(
    torn_tail_at_every_byte,
    bit_flip_in_a_middle_frame,
    bit_flip_in_a_sealed_segment,
    missing_middle_segment,
    bad_segment_headers,
    stale_frames_after_the_tail,
    torn_tail_cut_writes_only_an_end_marker,
    segment_longer_than_segment_bytes_with_junk,
    rotation_and_reopen_keep_lsns_continuous,
    truncate_before_removes_whole_segments,
    lock_contention_in_process,
    invalid_options_rejected_before_touching_disk,
    oversized_record_rejected_alone,
    corrupt_directory_is_a_clear_error,
    regression_reader_steps_over_a_salvaged_range_in_the_active_segment,
    regression_salvage_of_a_sealed_segments_last_frame_lets_the_lsn_jump,
    regression_salvage_of_a_bad_last_header_never_reuses_lsns,
);

// ---------------------------------------------------------------------------------------
// Torn tail
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tear {
    /// Zero the bytes `[k, end of frame)`, leaving the file length.
    Zero,
    /// Overwrite `[k, end of frame)` with garbage (no zero byte).
    Garbage,
    /// Cut the file at `k`.
    Truncate,
}

/// A log whose last record is torn at every byte offset inside its frame, three ways:
/// recovery must cut exactly that record, report it, refuse it in `Strict`, leave it alone
/// read-only, and never let it reappear after a new append reuses its LSN.
fn torn_tail_at_every_byte(env: &Env) {
    let base = env.dir("base");
    // Six records of 10 000 bytes fill segment 1; the rest, small, go to segment 2. The last
    // has a correlation id so the tear also runs through the id.
    let n = 12;
    let model = build(env, &base, n - 1, |lsn| if lsn <= 9 { 10_000 } else { 40 });
    let mut model = model;
    {
        let wal = Wal::open(&base, env.opts()).unwrap();
        // No zero byte in the payload: zeroing any suffix of the frame changes it.
        let p = b"torn-tail-12";
        let receipt = wal
            .append(Record::new(p).correlation_id(0xfeedu64))
            .unwrap();
        assert_eq!(receipt.lsn, n);
        model.push(LogRecord {
            lsn: n,
            correlation_id: Some(CorrelationId::from(0xfeedu64)),
            payload: p.to_vec(),
        });
        wal.close().unwrap();
    }
    let files = env.snapshot(&base);
    let segments = env.segments(&base);
    assert_eq!(segments.len(), 2, "the log spans two segments");
    let (last_seq, last_path) = segments[1].clone();
    let (_, frames) = env.frames(&last_path);
    let last = *frames.last().unwrap();
    assert_eq!(last.lsn, n);
    assert_eq!(last.len, FRAME_HEADER + 16 + 12);
    let seg_name = last_path.file_name().unwrap().to_str().unwrap().to_string();
    let original = files[&seg_name].clone();
    let kept = &model[..n as usize - 1];

    for k in last.offset..last.offset + last.len {
        for tear in [Tear::Zero, Tear::Garbage, Tear::Truncate] {
            let ctx = format!("tear {tear:?} at {k} (frame {}+{})", last.offset, last.len);
            let dir = env.dir(&format!("torn-{tear:?}-{k}"));
            env.restore(&files, &dir);
            let seg = dir.join(&seg_name);
            let end = last.offset + last.len;
            match tear {
                Tear::Zero => env.write_at(&seg, k, &vec![0; (end - k) as usize]),
                Tear::Garbage => {
                    // Every byte differs from what was there.
                    let junk: Vec<u8> = original[k as usize..end as usize]
                        .iter()
                        .map(|b| !b)
                        .collect();
                    env.write_at(&seg, k, &junk);
                }
                Tear::Truncate => env.set_len(&seg, k),
            }
            // What is left of the frame is all zeros only if the tear kept nothing of it:
            // then the position reads as the end of the log, and nothing is torn.
            let left = &original[last.offset as usize..k as usize];
            let torn = tear == Tear::Garbage || left.iter().any(|&b| b != 0);
            assert_ne!(
                original[end as usize - 1],
                0,
                "every tear changes the frame"
            );
            let before = env.snapshot(&dir);

            // Read-only: the N-1 records, the torn tail reported, not one byte written.
            {
                let wal = Wal::open_read_only(&dir, env.opts()).expect(&ctx);
                assert_log(&wal, kept);
                let report = wal.recovery_report();
                assert_eq!(report.torn_tail.is_some(), torn, "{ctx}: {report:?}");
                assert_eq!(wal.next_lsn(), n, "{ctx}");
            }
            assert!(env.snapshot(&dir) == before, "{ctx}: read-only open wrote");

            // Strict: a torn tail is an error naming segment and offset, and changes nothing.
            match Wal::open(&dir, env.mode(RecoveryMode::Strict)) {
                Err(Error::TornTail {
                    segment, offset, ..
                }) => {
                    assert!(torn, "{ctx}: TornTail for an intact log");
                    assert_eq!((segment, offset), (last_seq, last.offset), "{ctx}");
                    assert!(env.snapshot(&dir) == before, "{ctx}: Strict refusal wrote");
                }
                Err(e) => panic!("{ctx}: {e}"),
                Ok(wal) => {
                    assert!(!torn, "{ctx}: Strict opened a torn log");
                    assert_log(&wal, kept);
                }
            }

            // Default: cut, reported, and the next append takes the torn record's LSN.
            let wal = Wal::open(&dir, env.opts()).expect(&ctx);
            let report = wal.recovery_report().clone();
            if torn {
                let range = report.torn_tail.as_ref().expect(&ctx);
                assert_eq!(
                    (range.segment, range.offset),
                    (last_seq, last.offset),
                    "{ctx}"
                );
                assert!(range.len >= 1 && range.len <= last.len, "{ctx}: {range:?}");
                assert!(!range.reason.is_empty());
            } else {
                assert_eq!(report.torn_tail, None, "{ctx}");
            }
            assert_eq!(report.records, n - 1, "{ctx}");
            assert_log(&wal, kept);
            assert_eq!(wal.next_lsn(), n, "{ctx}");
            let mut now = kept.to_vec();
            append(&wal, &mut now, 1, 20, None);
            wal.close().unwrap();
            drop(wal);

            let wal = Wal::open(&dir, env.opts()).expect(&ctx);
            assert_eq!(wal.recovery_report().torn_tail, None, "{ctx}");
            assert_log(&wal, &now);
            drop(wal);
            // Nothing of the torn frame is left after the new one: the cut zeroed it.
            let bytes = env.read(&seg);
            let new_end = (last.offset + FRAME_HEADER + 20) as usize;
            assert_eq!(bytes.len() as u64, SEGMENT_BYTES, "{ctx}");
            assert!(
                bytes[new_end..].iter().all(|&b| b == 0),
                "{ctx}: bytes after the tail are not zero"
            );
        }
    }
}

/// Opens the log in `dir`, which has a torn tail, in the default mode; checks (on the
/// simulated storage, which counts writes) that the cut is one write of 17 bytes, an end
/// marker; returns the log and the torn range.
fn open_cutting_a_torn_tail(env: &Env, dir: &Path) -> (Wal, DamagedRange) {
    let before = env.sim.as_ref().map(|sim| sim.stats());
    let wal = Wal::open(dir, env.opts()).unwrap();
    if let (Some(sim), Some(before)) = (&env.sim, before) {
        let after = sim.stats();
        assert_eq!(
            (
                after.writes - before.writes,
                after.bytes_written - before.bytes_written
            ),
            (1, FRAME_HEADER),
            "the cut is one write of an end marker"
        );
    }
    let torn = wal
        .recovery_report()
        .torn_tail
        .clone()
        .expect("a torn tail");
    (wal, torn)
}

/// After a torn tail is cut, records appended over the cut bytes are shorter than the old
/// ones, and the stale bytes of the old frames stay after them: the cut writes only an end
/// marker (17 zero bytes) over the first bad frame's header, never the rest of the segment,
/// and every group ends in an end marker of its own. No old record comes back, after a
/// crash or a clean reopen, in any mode.
fn torn_tail_cut_writes_only_an_end_marker(env: &Env) {
    let dir = env.dir("log");
    let mut model = build(env, &dir, 20, |_| 500);
    let (seq, seg) = env.segments(&dir).pop().unwrap();
    let (_, frames) = env.frames(&seg);
    // Damage the last byte of each of the last three frames: a torn tail of three frames
    // (none of them valid, so none "follows" the first bad one).
    for f in &frames[17..] {
        env.flip_bit(&seg, f.offset + f.len - 1, 0);
    }
    let cut_at = frames[17].offset;
    let damaged = env.read(&seg);
    let (wal, torn) = open_cutting_a_torn_tail(env, &dir);
    // The damaged range is the first bad frame: what follows it cannot be told apart from
    // stale bytes.
    assert_eq!(
        (torn.segment, torn.offset, torn.len),
        (seq, cut_at, frames[17].len)
    );
    model.truncate(17);
    assert_log(&wal, &model);
    let cut = env.read(&seg);
    let marker_end = (cut_at + FRAME_HEADER) as usize;
    assert!(cut[cut_at as usize..marker_end].iter().all(|&b| b == 0));
    assert_eq!(
        cut[marker_end..],
        damaged[marker_end..],
        "the bytes after the end marker are left alone"
    );
    // Fewer, shorter records over the old ones.
    for _ in 0..2 {
        append(&wal, &mut model, 1, 30, None);
    }
    env.crash(wal);

    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        let wal = Wal::open(&dir, env.mode(mode)).unwrap();
        assert_eq!(wal.recovery_report().torn_tail, None);
        assert_log(&wal, &model);
        assert!(read_all(&wal)
            .iter()
            .all(|r| r.lsn <= 17 || r.payload.len() == 30));
    }
    let bytes = env.read(&seg);
    let tail = cut_at as usize + 2 * (FRAME_HEADER as usize + 30);
    let marker_end = tail + FRAME_HEADER as usize;
    assert!(
        bytes[tail..marker_end].iter().all(|&b| b == 0),
        "an end marker follows the last record"
    );
    assert_eq!(
        bytes[marker_end..],
        damaged[marker_end..],
        "stale bytes of the old frames stay after it"
    );
}

// ---------------------------------------------------------------------------------------
// Corruption
// ---------------------------------------------------------------------------------------

/// Bit positions to flip inside a frame, relative to its start: the length (low and high
/// byte), the checksum, the LSN, the flags (the correlation-id bit and an unknown one), the
/// payload and its last byte.
fn flip_positions(frame: FrameAt) -> Vec<(u64, u8)> {
    vec![
        (0, 0),
        (3, 7),
        (5, 2),
        (8, 0),
        (15, 6),
        (16, 0),
        (16, 3),
        (FRAME_HEADER + 3, 4),
        (frame.len - 1, 1),
    ]
}

/// Checks a log damaged at `bad` (frame `bad_lsn` of segment `seq`): refused with the same
/// `Corruption` by default, `Strict` and read-only, with nothing written; then salvaged.
fn check_corrupt_frame_then_salvage(
    env: &Env,
    dir: &Path,
    seq: u64,
    bad: FrameAt,
    last_in_segment: bool,
    model: &[LogRecord],
    ctx: &str,
) {
    let before = env.snapshot(dir);
    for (name, result) in [
        ("default", Wal::open(dir, env.opts())),
        ("strict", Wal::open(dir, env.mode(RecoveryMode::Strict))),
        ("read-only", Wal::open_read_only(dir, env.opts())),
    ] {
        let e = expect_err(result);
        assert_corruption(&e, seq, bad.offset);
        assert!(e.is_corruption());
        assert!(
            env.snapshot(dir) == before,
            "{ctx}: {name} open changed files"
        );
    }

    // Salvage: the bad bytes go to quarantine/, the rest opens with its original LSNs.
    let seg_bytes = env.read(&env.segments(dir).iter().find(|s| s.0 == seq).unwrap().1);
    let wal = Wal::open(dir, env.mode(RecoveryMode::Salvage)).expect(ctx);
    let report = wal.recovery_report().clone();
    assert_eq!(report.quarantined.len(), 1, "{ctx}: {report:?}");
    let q: &DamagedRange = &report.quarantined[0];
    assert_eq!((q.segment, q.offset), (seq, bad.offset), "{ctx}");
    if last_in_segment {
        // The frame as its header claims, or its header alone if the damage makes it claim
        // more than the segment holds.
        assert!(q.len >= 1 && q.len <= bad.len, "{ctx}: {q:?}");
    } else {
        assert_eq!(q.len, bad.len, "{ctx}: exactly the bad frame");
    }
    let cut = &seg_bytes[q.offset as usize..(q.offset + q.len) as usize];
    let qfile = q.quarantine_file.clone().expect("a quarantine file");
    assert_eq!(
        env.read(&qfile),
        cut,
        "{ctx}: the quarantine file holds the bad bytes"
    );
    assert!(qfile.starts_with(dir.join(QUARANTINE_DIR)));
    let report_txt = String::from_utf8(env.read(&dir.join(QUARANTINE_DIR).join("report.txt")))
        .expect("report.txt is text");
    let line = format!("segment={seq} offset={} len={}", q.offset, q.len);
    assert!(
        report_txt.contains(&line),
        "{ctx}: report.txt: {report_txt}"
    );
    assert_eq!(
        report_txt.lines().count(),
        1,
        "{ctx}: one line per damaged range"
    );
    // The segment itself is left as it was: salvage copies, it does not rewrite.
    assert_eq!(
        env.read(&env.segments(dir).iter().find(|s| s.0 == seq).unwrap().1),
        seg_bytes
    );

    let survivors: Vec<LogRecord> = model.iter().filter(|r| r.lsn != bad.lsn).cloned().collect();
    assert_log(&wal, &survivors);
    let last = model.last().unwrap().lsn;
    // Reading from the skipped LSN starts at the one after it.
    assert_eq!(
        read_from(&wal, bad.lsn).first().map(|r| r.lsn),
        Some(bad.lsn + 1)
    );
    assert_eq!(
        wal.next_lsn(),
        last + 1,
        "{ctx}: skipped LSNs are never reused"
    );
    let mut now = survivors;
    append(&wal, &mut now, 1, 64, None);
    wal.close().unwrap();
    drop(wal);

    // The ledger remembers the salvage: every mode opens now.
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        let wal = Wal::open(dir, env.mode(mode)).expect(ctx);
        let report = wal.recovery_report();
        assert_eq!(report.previously_quarantined, 1, "{ctx}: {report:?}");
        assert!(report.quarantined.is_empty());
        assert_log(&wal, &now);
    }
    let wal = Wal::open_read_only(dir, env.opts()).expect(ctx);
    assert_log(&wal, &now);
}

/// For each `(byte, bit)` of `positions`: restores `files` into a new directory, flips that
/// bit of frame `bad` of segment `seq` (file `name`), and checks the damage with
/// [`check_corrupt_frame_then_salvage`].
#[allow(clippy::too_many_arguments)]
fn flip_bits_then_salvage(
    env: &Env,
    label: &str,
    files: &BTreeMap<String, Vec<u8>>,
    name: &str,
    (seq, bad, last_in_segment): (u64, FrameAt, bool),
    positions: &[(u64, u8)],
    model: &[LogRecord],
) {
    for &(at, bit) in positions {
        let ctx = format!("{label}: flip bit {bit} of byte {at} of frame {}", bad.lsn);
        let dir = env.dir(&format!("{label}-{at}-{bit}"));
        env.restore(files, &dir);
        env.flip_bit(&dir.join(name), bad.offset + at, bit);
        check_corrupt_frame_then_salvage(env, &dir, seq, bad, last_in_segment, model, &ctx);
    }
}

/// A bit flipped in a frame in the middle of the active segment is corruption, not a torn
/// tail: valid frames follow it.
fn bit_flip_in_a_middle_frame(env: &Env) {
    let base = env.dir("base");
    // Segment 1: 13 records of 5000 bytes; segment 2 (active): 14..=30.
    let model = build(env, &base, 30, |lsn| if lsn <= 20 { 5_000 } else { 100 });
    let files = env.snapshot(&base);
    let segments = env.segments(&base);
    assert_eq!(segments.len(), 2);
    let (seq, path) = segments[1].clone();
    let (_, frames) = env.frames(&path);
    let bad = frames[frames.len() / 2];
    assert!(bad.lsn < 30, "a middle frame");
    let name = path.file_name().unwrap().to_str().unwrap();
    let positions = flip_positions(bad);
    let damage = (seq, bad, false);
    flip_bits_then_salvage(env, "flip", &files, name, damage, &positions, &model);
}

/// Damage in a sealed segment is corruption wherever it is, even in its last frame (which
/// in the last segment would be a torn tail).
fn bit_flip_in_a_sealed_segment(env: &Env) {
    let base = env.dir("base");
    let model = build(env, &base, 30, |lsn| if lsn <= 20 { 5_000 } else { 100 });
    let files = env.snapshot(&base);
    let (seq, path) = env.segments(&base)[0].clone();
    assert_eq!(seq, 1);
    let (_, frames) = env.frames(&path);
    let name = path.file_name().unwrap().to_str().unwrap();
    for (which, bad, last) in [
        ("last", *frames.last().unwrap(), true),
        ("middle", frames[5], false),
    ] {
        let positions = [(5, 2), (FRAME_HEADER + 100, 0)];
        let label = format!("sealed-{which}");
        flip_bits_then_salvage(
            env,
            &label,
            &files,
            name,
            (seq, bad, last),
            &positions,
            &model,
        );
    }
}

/// A missing middle segment is corruption naming it; salvage records the gap and keeps the
/// LSNs of the segments around it.
fn missing_middle_segment(env: &Env) {
    let dir = env.dir("log");
    let model = build(env, &dir, 20, |_| 10_000);
    let segments = env.segments(&dir);
    assert!(segments.len() >= 4, "{segments:?}");
    let (_, frames2) = env.frames(&segments[1].1);
    env.remove(&segments[1].1);
    let before = env.snapshot(&dir);
    for result in [
        Wal::open(&dir, env.opts()),
        Wal::open(&dir, env.mode(RecoveryMode::Strict)),
        Wal::open_read_only(&dir, env.opts()),
    ] {
        let reason = assert_corruption(&expect_err(result), 2, 0);
        assert!(reason.contains("missing"), "{reason}");
    }
    assert!(env.snapshot(&dir) == before);

    let wal = Wal::open(&dir, env.mode(RecoveryMode::Salvage)).unwrap();
    let q = &wal.recovery_report().quarantined;
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].segment, q[0].offset, q[0].len), (2, 0, 0));
    let gone: Vec<u64> = frames2.iter().map(|f| f.lsn).collect();
    let mut now: Vec<_> = model
        .iter()
        .filter(|r| !gone.contains(&r.lsn))
        .cloned()
        .collect();
    assert_log(&wal, &now);
    append(&wal, &mut now, 1, 10, None);
    assert_eq!(now.last().unwrap().lsn, 21);
    drop(wal);
    let wal = Wal::open(&dir, env.opts()).unwrap();
    assert_log(&wal, &now);
}

/// Segment headers that are damaged, name another segment, or start at the wrong LSN.
fn bad_segment_headers(env: &Env) {
    let base = env.dir("base");
    build(env, &base, 20, |_| 10_000);
    let files = env.snapshot(&base);
    let segments = env.segments(&base);
    let n = segments.len() as u64;
    assert!(n >= 3);
    let header = |seq: u64| env.frames(&segments[seq as usize - 1].1).0;

    type Damage<'a> = (&'a str, u64, Box<dyn Fn(&Path) + 'a>);
    let h2 = header(2);
    let cases: Vec<Damage> = vec![
        (
            "bit flip in the middle header",
            2,
            Box::new(|p| env.flip_bit(p, 33, 1)),
        ),
        (
            "bit flip in the last header",
            n,
            Box::new(|p| env.flip_bit(p, 20, 4)),
        ),
        (
            "bad magic",
            2,
            Box::new(|p| env.write_at(p, 0, b"NOTAWAL!")),
        ),
        ("short header", n, Box::new(|p| env.set_len(p, 40))),
        (
            "header names another segment",
            2,
            Box::new(move |p| {
                let h = SegmentHeader {
                    segment_seq: 7,
                    ..h2
                };
                env.write_at(p, 0, &h.encode())
            }),
        ),
        (
            "segment starts at the wrong LSN",
            2,
            Box::new(move |p| {
                let h = SegmentHeader {
                    first_lsn: h2.first_lsn + 1,
                    ..h2
                };
                env.write_at(p, 0, &h.encode())
            }),
        ),
    ];
    for (i, (what, seq, damage)) in cases.iter().enumerate() {
        let dir = env.dir(&format!("case-{i}"));
        env.restore(&files, &dir);
        damage(&dir.join(segments[*seq as usize - 1].1.file_name().unwrap()));
        let before = env.snapshot(&dir);
        for result in [
            Wal::open(&dir, env.opts()),
            Wal::open(&dir, env.mode(RecoveryMode::Strict)),
            Wal::open_read_only(&dir, env.opts()),
        ] {
            let reason = assert_corruption(&expect_err(result), *seq, 0);
            assert!(!reason.is_empty(), "{what}");
        }
        assert!(
            env.snapshot(&dir) == before,
            "{what}: a refused open changed files"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Stale bytes
// ---------------------------------------------------------------------------------------

/// Frames that are valid somewhere else (another segment's salt, or this segment's salt with
/// old LSNs) placed right after the tail or after a gap never come back as records.
fn stale_frames_after_the_tail(env: &Env) {
    let base = env.dir("base");
    let model = build(env, &base, 8, |_| 100);
    let files = env.snapshot(&base);
    let (seq, path) = env.segments(&base).pop().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let (header, frames) = env.frames(&path);
    let tail = frames.last().map(|f| f.offset + f.len).unwrap();
    let other_salt = header.salt ^ 0x0123_4567_89ab_cdef;
    let stale_other: Vec<u8> = (9..=14u64)
        .flat_map(|lsn| encode_frame(lsn, other_salt, None, &payload(lsn, 9, 100)))
        .collect();
    let stale_old: Vec<u8> = (1..=8u64)
        .flat_map(|lsn| encode_frame(lsn, header.salt, None, &payload(lsn, 9, 100)))
        .collect();
    for (i, (what, bytes, gap)) in [
        ("another salt, right after the tail", &stale_other, 0u64),
        ("another salt, after a gap", &stale_other, 4096),
        ("old LSNs of this salt, right after the tail", &stale_old, 0),
        ("old LSNs of this salt, after a gap", &stale_old, 777),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = env.dir(&format!("stale-{i}"));
        env.restore(&files, &dir);
        env.write_at(&dir.join(&name), tail + gap, bytes);
        let wal = Wal::open(&dir, env.opts()).expect(what);
        let report = wal.recovery_report().clone();
        assert_eq!(report.records, 8, "{what}");
        if gap == 0 {
            // Right after the tail, the stale frames read as a torn tail: cut.
            let torn = report.torn_tail.as_ref().expect(what);
            assert_eq!((torn.segment, torn.offset), (seq, tail), "{what}");
        }
        assert_log(&wal, &model);
        // Append over and past the stale bytes, reopen: still only our records.
        let mut now = model.clone();
        for _ in 0..12 {
            append(&wal, &mut now, 1, 90, None);
        }
        assert_log(&wal, &now);
        env.crash(wal);
        let wal = Wal::open(&dir, env.opts()).expect(what);
        let got = read_all(&wal);
        assert!(got.len() >= model.len(), "{what}");
        for r in &got {
            assert_eq!(r, &now[r.lsn as usize - 1], "{what}: record {}", r.lsn);
        }
    }
}

/// A segment file longer than `segment_bytes` (written by a build with bigger segments, or
/// extended by hand) with junk after its records and after `segment_bytes`: the junk is
/// never read as records, and the log goes on in the next segment.
fn segment_longer_than_segment_bytes_with_junk(env: &Env) {
    let dir = env.dir("log");
    let mut model = build(env, &dir, 5, |_| 1000);
    let (seq, path) = env.segments(&dir).pop().unwrap();
    let (header, _) = env.frames(&path);
    let mut junk: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // Frames valid under another salt, continuing the LSNs, in the junk.
    junk.extend((6..=9u64).flat_map(|lsn| {
        encode_frame(lsn, header.salt.rotate_left(7), None, &payload(lsn, 9, 300))
    }));
    env.write_at(&path, SEGMENT_BYTES + 100, &junk);
    let len = env.read(&path).len() as u64;
    assert!(len > SEGMENT_BYTES);
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        let wal = Wal::open(&dir, env.mode(mode)).unwrap();
        assert_eq!(wal.recovery_report().torn_tail, None);
        assert_log(&wal, &model);
    }
    {
        let wal = Wal::open(&dir, env.opts()).unwrap();
        // Fill the segment (its records stop at segment_bytes) and go on in the next ones.
        for _ in 0..150 {
            append(&wal, &mut model, 1, 1000, None);
        }
        assert_log(&wal, &model);
        wal.close().unwrap();
    }
    let segments = env.segments(&dir);
    assert!(segments.len() >= 3 && segments[0].0 == seq);
    let (_, frames) = env.frames(&segments[0].1);
    assert!(frames.last().map(|f| f.offset + f.len).unwrap() <= SEGMENT_BYTES);
    assert_eq!(
        env.read(&segments[0].1).len() as u64,
        len,
        "the junk is left alone"
    );
    let wal = Wal::open(&dir, env.mode(RecoveryMode::Strict)).unwrap();
    assert_log(&wal, &model);
}

// ---------------------------------------------------------------------------------------
// Rotation and truncation
// ---------------------------------------------------------------------------------------

/// Many segments, several reopenings with every kind of append: LSNs are dense from 1,
/// every segment starts where the previous ended, and `read_from` is exact around every
/// segment boundary.
fn rotation_and_reopen_keep_lsns_continuous(env: &Env) {
    let dir = env.dir("log");
    let mut rng = fastrand::Rng::with_seed(42);
    let mut model: Vec<LogRecord> = Vec::new();
    for round in 0..5u32 {
        let wal = Wal::open(&dir, env.opts()).unwrap();
        assert_eq!(wal.next_lsn(), model.len() as u64 + 1, "round {round}");
        assert_log(&wal, &model);
        for i in 0..40 {
            let len = rng.usize(12..3000);
            let durability = [Durability::Sync, Durability::Flush, Durability::Buffer][i % 3];
            let id = rng.bool().then(|| rng.u64(..));
            append_with(&wal, &mut model, round, len, id, durability);
        }
        // A batch, committed together.
        let next = wal.next_lsn();
        let payloads: Vec<Vec<u8>> = (0..20)
            .map(|j| payload(next + j, round, rng.usize(12..2000)))
            .collect();
        let records: Vec<Record> = payloads.iter().map(|p| Record::new(p)).collect();
        for (j, r) in wal.append_many(&records).into_iter().enumerate() {
            assert_eq!(r.unwrap().lsn, next + j as u64);
        }
        model.extend(payloads.into_iter().enumerate().map(|(j, p)| LogRecord {
            lsn: next + j as u64,
            correlation_id: None,
            payload: p,
        }));
        wal.sync().unwrap();
        assert_log(&wal, &model);
        wal.close().unwrap();
    }
    let n = model.len() as u64;
    let segments = env.segments(&dir);
    assert!(segments.len() >= 5, "{} segments", segments.len());
    // Segment headers and frames agree: each starts where the previous ended.
    let mut expect = 1;
    let mut boundaries = Vec::new();
    for (i, (seq, path)) in segments.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        let (header, frames) = env.frames(path);
        assert_eq!(header.segment_seq, *seq);
        assert_eq!(header.first_lsn, expect, "segment {seq}");
        boundaries.push(expect);
        for f in &frames {
            assert_eq!(f.lsn, expect);
            expect += 1;
        }
    }
    assert_eq!(expect, n + 1);

    let wal = Wal::open(&dir, env.opts()).unwrap();
    assert_dense(&read_all(&wal), 1, n);
    let mut starts = vec![0, 1, 2, n - 1, n, n + 1, n + 100];
    for b in boundaries {
        starts.extend([b.saturating_sub(1), b, b + 1]);
    }
    for k in starts {
        let got = read_from(&wal, k);
        let want: Vec<&LogRecord> = model.iter().filter(|r| r.lsn >= k).collect();
        assert_eq!(got.len(), want.len(), "read_from({k})");
        assert!(got.iter().zip(want).all(|(g, w)| g == w), "read_from({k})");
    }
}

/// `truncate_before` removes whole segments below the LSN (never the active one), durably.
fn truncate_before_removes_whole_segments(env: &Env) {
    let dir = env.dir("log");
    let mut model = build(env, &dir, 40, |_| 10_000);
    let segments = env.segments(&dir);
    assert!(segments.len() >= 6);
    let firsts: Vec<u64> = segments
        .iter()
        .map(|(_, p)| env.frames(p).0.first_lsn)
        .collect();

    let wal = Wal::open(&dir, env.opts()).unwrap();
    assert_eq!(wal.first_lsn(), 1);
    assert_eq!(wal.truncate_before(0).unwrap(), 0);
    assert_eq!(
        wal.truncate_before(firsts[1] - 1).unwrap(),
        0,
        "segment 1 still has a record"
    );
    // An LSN inside segment 4: segments 1..=3 go.
    let lsn = firsts[3] + 1;
    assert_eq!(wal.truncate_before(lsn).unwrap(), 3);
    assert_eq!(wal.first_lsn(), firsts[3]);
    for (seq, path) in &segments[..3] {
        assert!(!env.storage.exists(path).unwrap(), "segment {seq} removed");
    }
    for (_, path) in &segments[3..] {
        assert!(env.storage.exists(path).unwrap());
    }
    let kept: Vec<LogRecord> = model
        .iter()
        .filter(|r| r.lsn >= firsts[3])
        .cloned()
        .collect();
    assert_log(&wal, &kept);
    assert_eq!(read_from(&wal, wal.first_lsn()), kept);
    assert_eq!(
        read_from(&wal, 1),
        kept,
        "reading below first_lsn starts at first_lsn"
    );
    assert_eq!(wal.truncate_before(lsn).unwrap(), 0, "idempotent");
    model.retain(|r| r.lsn >= firsts[3]);
    append(&wal, &mut model, 1, 100, None);
    drop(wal);

    let wal = Wal::open(&dir, env.mode(RecoveryMode::Strict)).unwrap();
    assert_eq!(wal.first_lsn(), firsts[3]);
    assert_log(&wal, &model);
    // Everything below the last record: only the active segment stays.
    let removed = wal.truncate_before(u64::MAX).unwrap();
    assert_eq!(removed, segments.len() - 4);
    let active = env.segments(&dir);
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].0, segments.last().unwrap().0);
    model.retain(|r| r.lsn >= wal.first_lsn());
    assert_log(&wal, &model);
    append(&wal, &mut model, 2, 100, None);
    env.crash(wal);
    let wal = Wal::open(&dir, env.opts()).unwrap();
    assert_eq!(env.segments(&dir).len(), 1, "the removals were durable");
    assert_log(&wal, &model);
    drop(wal);
    let ro = Wal::open_read_only(&dir, env.opts()).unwrap();
    assert!(matches!(ro.truncate_before(u64::MAX), Err(Error::ReadOnly)));
}

// ---------------------------------------------------------------------------------------
// Locking
// ---------------------------------------------------------------------------------------

#[track_caller]
fn assert_locked(result: Result<Wal, Error>, dir: &Path) {
    match expect_err(result) {
        Error::Locked { path } => assert_eq!(path, dir),
        other => panic!("expected Locked, got {other:?}"),
    }
}

/// Within one process: one writer or any number of readers.
fn lock_contention_in_process(env: &Env) {
    let dir = env.dir("log");
    let wal = Wal::open(&dir, env.opts()).unwrap();
    assert_locked(Wal::open(&dir, env.opts()), &dir);
    assert_locked(Wal::open_read_only(&dir, env.opts()), &dir);
    let mut model = Vec::new();
    append(&wal, &mut model, 0, 10, None);
    drop(wal);
    let r1 = Wal::open_read_only(&dir, env.opts()).unwrap();
    let r2 = Wal::open_read_only(&dir, env.opts()).unwrap();
    assert_log(&r1, &model);
    assert_log(&r2, &model);
    assert_locked(Wal::open(&dir, env.opts()), &dir);
    drop(r1);
    assert_locked(Wal::open(&dir, env.opts()), &dir);
    drop(r2);
    let wal = Wal::open(&dir, env.opts()).unwrap();
    assert_log(&wal, &model);
}

// Contention across processes is in `tests/kill.rs`, which spawns child processes under a
// rule that keeps forked children from briefly inheriting other tests' directory locks.

// ---------------------------------------------------------------------------------------
// Options and input
// ---------------------------------------------------------------------------------------

/// Every out-of-range option is refused at open, naming the option, before anything is
/// created: the directory of a new log does not appear.
fn invalid_options_rejected_before_touching_disk(env: &Env) {
    type Edit = fn(WalOptions) -> WalOptions;
    let cases: Vec<(&str, Edit)> = vec![
        ("segment_bytes", |o| o.segment_bytes(SEGMENT_BYTES_MIN - 1)),
        ("segment_bytes", |o| o.segment_bytes(SEGMENT_BYTES_MAX + 1)),
        ("segment_bytes", |o| o.segment_bytes(0)),
        ("record_bytes_max", |o| o.record_bytes_max(0)),
        ("record_bytes_max", |o| o.record_bytes_max(PAYLOAD_ROOM + 1)),
        ("record_bytes_max", |o| {
            o.segment_bytes(1 << 40).record_bytes_max((1 << 30) + 1)
        }),
        ("group_bytes_max", |o| o.group_bytes_max(4095)),
        ("group_bytes_max", |o| o.group_bytes_max((1 << 30) + 1)),
        ("group_records_max", |o| o.group_records_max(0)),
        ("group_records_max", |o| o.group_records_max((1 << 20) + 1)),
        ("lock_hold_max", |o| {
            o.lock_hold_max(Duration::from_micros(99))
        }),
        ("lock_hold_max", |o| {
            o.lock_hold_max(Duration::from_secs(11))
        }),
        ("commit_delay", |o| {
            o.commit_delay(Some(Duration::from_millis(101)))
        }),
        ("commit_siblings", |o| o.commit_siblings(0)),
        ("commit_siblings", |o| o.commit_siblings(100_001)),
        ("sync_interval", |o| {
            o.sync_interval(Duration::from_micros(999))
        }),
        ("sync_interval", |o| {
            o.sync_interval(Duration::from_secs(3601))
        }),
        ("sync_interval_jitter", |o| {
            o.sync_interval(Duration::from_millis(10))
                .sync_interval_jitter(Duration::from_millis(11))
        }),
    ];
    for (i, (name, edit)) in cases.iter().enumerate() {
        let dir = env.dir(&format!("new-{i}"));
        for read_only in [false, true] {
            let result = if read_only {
                Wal::open_read_only(&dir, edit(env.opts()))
            } else {
                Wal::open(&dir, edit(env.opts()))
            };
            match expect_err(result) {
                Error::InvalidOptions { name: got, reason } => {
                    assert_eq!(got, *name, "case {i}: {reason}");
                    assert!(!reason.is_empty());
                }
                other => panic!("case {i} ({name}): expected InvalidOptions, got {other:?}"),
            }
            assert!(
                !env.storage.exists(&dir).unwrap(),
                "case {i}: the directory was created"
            );
        }
    }
    // An existing log is not touched by a refused open either.
    let dir = env.dir("existing");
    build(env, &dir, 3, |_| 10);
    let before = env.snapshot(&dir);
    for (_, edit) in &cases {
        assert!(matches!(
            Wal::open(&dir, edit(env.opts())),
            Err(Error::InvalidOptions { .. })
        ));
    }
    assert!(env.snapshot(&dir) == before);

    // The edges of each range are accepted.
    let edges: Vec<Edit> = vec![
        |o| {
            o.segment_bytes(SEGMENT_BYTES_MIN)
                .record_bytes_max(PAYLOAD_ROOM)
        },
        |o| o.record_bytes_max(1),
        |o| o.group_bytes_max(4096).group_records_max(1),
        // (Not group_bytes_max = 1 GiB: the log reserves buffers of that size up front.)
        |o| o.group_records_max(1 << 20),
        |o| {
            o.lock_hold_max(Duration::from_micros(100))
                .commit_siblings(1)
        },
        |o| {
            o.lock_hold_max(Duration::from_secs(10))
                .commit_siblings(100_000)
        },
        |o| {
            o.commit_delay(Some(Duration::from_millis(100)))
                .commit_delay(None)
        },
        |o| {
            o.sync_interval(Duration::from_millis(1))
                .sync_interval_jitter(Duration::from_millis(1))
        },
        |o| {
            o.sync_interval(Duration::from_secs(3600))
                .sync_interval_jitter(Duration::ZERO)
        },
    ];
    for (i, edit) in edges.iter().enumerate() {
        let wal = Wal::open(env.dir(&format!("edge-{i}")), edit(env.opts()))
            .unwrap_or_else(|e| panic!("edge case {i}: {e}"));
        wal.close().unwrap();
    }
}

/// A record over `record_bytes_max` fails alone and leaves the log as it was; one of exactly
/// the limit (with a correlation id, in a segment with no room to spare) is fine.
fn oversized_record_rejected_alone(env: &Env) {
    let dir = env.dir("log");
    let opts = env.opts().record_bytes_max(PAYLOAD_ROOM);
    let wal = Wal::open(&dir, opts.clone()).unwrap();
    let mut model = Vec::new();
    append(&wal, &mut model, 0, 100, None);
    let before = env.snapshot(&dir);
    let big = vec![7u8; PAYLOAD_ROOM + 1];
    match wal.append(Record::new(&big)) {
        Err(Error::RecordTooLarge { len, max }) => {
            assert_eq!((len, max), (PAYLOAD_ROOM + 1, PAYLOAD_ROOM))
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert!(matches!(
        wal.submit(Record::new(&big)),
        Err(Error::RecordTooLarge { .. })
    ));
    assert_eq!(wal.next_lsn(), 2, "no LSN was spent");
    assert!(env.snapshot(&dir) == before, "the log is unchanged");
    assert_eq!(wal.stats().rejected, 2);
    // A batch with the oversized record in the middle: the others commit.
    let small = payload(2, 0, 50);
    let small2 = payload(3, 0, 60);
    let results = wal.append_many(&[Record::new(&small), Record::new(&big), Record::new(&small2)]);
    assert_eq!(results[0].as_ref().unwrap().lsn, 2);
    assert!(matches!(results[1], Err(Error::RecordTooLarge { .. })));
    assert_eq!(results[2].as_ref().unwrap().lsn, 3);
    for (lsn, p) in [(2, small), (3, small2)] {
        model.push(LogRecord {
            lsn,
            correlation_id: None,
            payload: p,
        });
    }
    // Exactly the limit, with an id: fills a fresh segment to the last byte.
    append(&wal, &mut model, 0, PAYLOAD_ROOM, Some(u64::MAX));
    append(&wal, &mut model, 0, 10, None);
    assert_log(&wal, &model);
    drop(wal);
    let wal = Wal::open(&dir, opts.recovery_mode(RecoveryMode::Strict)).unwrap();
    assert_log(&wal, &model);
    assert_eq!(env.segments(&dir).len(), 3);
}

/// Files in the log directory that are not a log, and directories that hold no log.
fn corrupt_directory_is_a_clear_error(env: &Env) {
    // A file named like a segment holding garbage, or nothing.
    for (i, bytes) in [vec![0xa5u8; 5000], Vec::new(), vec![0u8; 200]]
        .iter()
        .enumerate()
    {
        let dir = env.dir(&format!("garbage-{i}"));
        env.storage.create_dir_all(&dir).unwrap();
        env.create(&dir.join("00000000000000000001.wal"), bytes);
        for result in [
            Wal::open(&dir, env.opts()),
            Wal::open(&dir, env.mode(RecoveryMode::Strict)),
            Wal::open_read_only(&dir, env.opts()),
        ] {
            let reason = assert_corruption(&expect_err(result), 1, 0);
            assert!(reason.contains("header"), "{reason}");
        }
    }
    // A garbage segment after a good log.
    let dir = env.dir("garbage-after");
    build(env, &dir, 3, |_| 10);
    env.create(&dir.join("00000000000000000002.wal"), &[1, 2, 3]);
    assert_corruption(&expect_err(Wal::open(&dir, env.opts())), 2, 0);

    // Names that are not segments are ignored; a leftover .tmp is removed.
    let dir = env.dir("other-files");
    let model = build(env, &dir, 3, |_| 10);
    env.create(&dir.join("README"), b"not a segment");
    env.create(&dir.join("1.wal"), b"not a segment name");
    env.create(&dir.join("00000000000000000002.wal.tmp"), b"half-made");
    let before = env.snapshot(&dir);
    let ro = Wal::open_read_only(&dir, env.opts()).unwrap();
    assert_log(&ro, &model);
    drop(ro);
    assert!(
        env.snapshot(&dir) == before,
        "read-only removed the leftover"
    );
    let wal = Wal::open(&dir, env.mode(RecoveryMode::Strict)).unwrap();
    assert_eq!(wal.recovery_report().temp_files_removed, 1);
    assert!(!env
        .storage
        .exists(&dir.join("00000000000000000002.wal.tmp"))
        .unwrap());
    assert!(env.storage.exists(&dir.join("README")).unwrap());
    assert_log(&wal, &model);
    drop(wal);

    // Read-only opens of a directory that is missing or holds no log.
    let missing = env.dir("missing");
    let e = expect_err(Wal::open_read_only(&missing, env.opts()));
    assert!(
        matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    assert!(
        !env.storage.exists(&missing).unwrap(),
        "read-only created the directory"
    );
    let empty = env.dir("empty");
    env.storage.create_dir_all(&empty).unwrap();
    let e = expect_err(Wal::open_read_only(&empty, env.opts()));
    assert!(
        matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    assert!(
        env.storage.list_dir(&empty).unwrap().is_empty(),
        "read-only wrote"
    );
    // A writer opening the empty directory starts a log there.
    let wal = Wal::open(&empty, env.opts()).unwrap();
    assert_eq!(wal.next_lsn(), 1);
    assert_eq!(read_all(&wal), vec![]);
}

// ---------------------------------------------------------------------------------------
// Regressions
// ---------------------------------------------------------------------------------------

/// Regression: reading across a salvaged range in the *active* segment panicked.
///
/// The reader treats a bad frame below the last written LSN as a range an earlier salvage
/// skipped, and asks for "all that remains" of the segment (`bytes_at(usize::MAX)`) to search
/// it for the next valid frame. For a sealed segment that is a map and worked. For the active
/// segment, read in chunks, the check whether the current chunk already covers the request
/// computed `offset + need` and overflowed: a panic in debug builds, and in release builds a
/// wrapped sum that made the reader search only the current 1 MiB chunk, so records after a
/// salvaged range further than that were silently not returned. Salvaging a bit flip in the
/// last segment and reading the log was enough. Fixed with a saturating add.
fn regression_reader_steps_over_a_salvaged_range_in_the_active_segment(env: &Env) {
    let dir = env.dir("log");
    let model = build(env, &dir, 10, |_| 200);
    let (_, path) = env.segments(&dir).pop().unwrap();
    let (_, frames) = env.frames(&path);
    env.flip_bit(&path, frames[4].offset + 30, 5);
    let wal = Wal::open(&dir, env.mode(RecoveryMode::Salvage)).unwrap();
    let survivors: Vec<_> = model.iter().filter(|r| r.lsn != 5).cloned().collect();
    assert_log(&wal, &survivors);
    for from in 1..=11 {
        let want: Vec<u64> = survivors
            .iter()
            .map(|r| r.lsn)
            .filter(|&l| l >= from)
            .collect();
        let got: Vec<u64> = read_from(&wal, from).iter().map(|r| r.lsn).collect();
        assert_eq!(got, want, "read_from({from})");
    }
}

/// Regression: salvage could not open a log whose damage was at the end of a sealed segment.
///
/// A bad frame with no valid frame after it in a *sealed* segment is corruption (only the
/// last segment can have a torn tail), so `Salvage` quarantines it and skips it. But the
/// scan then reported the segment as ending before the skipped record's LSN, and the next
/// segment's header, which starts after it, was refused as out of order ("segment starts at
/// LSN 13, but the previous one ends before LSN 12"): `Salvage` failed with `Corruption`,
/// and so did every later open, although the ledger recorded the skip. A skipped range at
/// the end of a segment now lets the LSN jump at the next one, as a skipped segment does.
fn regression_salvage_of_a_sealed_segments_last_frame_lets_the_lsn_jump(env: &Env) {
    let dir = env.dir("log");
    let model = build(env, &dir, 20, |_| 10_000);
    let (_, path) = env.segments(&dir)[1].clone();
    let (_, frames) = env.frames(&path);
    let bad = *frames.last().unwrap();
    env.flip_bit(&path, bad.offset + 100, 3);
    assert_corruption(&expect_err(Wal::open(&dir, env.opts())), 2, bad.offset);
    let wal = Wal::open(&dir, env.mode(RecoveryMode::Salvage)).unwrap();
    let mut now: Vec<_> = model.iter().filter(|r| r.lsn != bad.lsn).cloned().collect();
    assert_log(&wal, &now);
    append(&wal, &mut now, 1, 10, None);
    assert_eq!(now.last().unwrap().lsn, 21);
    drop(wal);
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        let wal = Wal::open(&dir, env.mode(mode)).unwrap();
        assert_log(&wal, &now);
    }
}

/// Regression: salvaging a last segment with an unreadable header reused its LSNs.
///
/// When a segment's header fails its checks, `Salvage` copies the whole file to
/// `quarantine/` and removes it. For a middle segment the next segment's header says where
/// the log goes on. For the *last* segment nothing did: the next LSN was computed from the
/// segment before it, so the records appended next took the very LSNs of the quarantined
/// records (13, 14, 15 here). A consumer that had seen record 13 would then see a different
/// record 13, and the quarantine could no longer be matched to the log. Recovery now walks
/// the frames of such a segment (header damage leaves them intact) and starts the next LSN
/// after the highest one it finds.
fn regression_salvage_of_a_bad_last_header_never_reuses_lsns(env: &Env) {
    let dir = env.dir("log");
    let model = build(env, &dir, 15, |_| 10_000);
    let segments = env.segments(&dir);
    let (last_seq, last_path) = segments.last().unwrap().clone();
    let (_, frames) = env.frames(&last_path);
    let max_lsn = frames.last().map_or(0, |f| f.lsn);
    assert_eq!(max_lsn, 15);
    env.flip_bit(&last_path, 50, 0); // in the reserved bytes: a checksum mismatch
    let wal = Wal::open(&dir, env.mode(RecoveryMode::Salvage)).unwrap();
    let q = &wal.recovery_report().quarantined;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!((q[0].segment, q[0].offset), (last_seq, 0));
    let first_gone = frames[0].lsn;
    let mut now: Vec<_> = model
        .iter()
        .filter(|r| r.lsn < first_gone)
        .cloned()
        .collect();
    assert_log(&wal, &now);
    assert_eq!(
        wal.next_lsn(),
        max_lsn + 1,
        "the next LSN must not reuse one of the quarantined segment (up to {max_lsn})"
    );
    append(&wal, &mut now, 1, 10, None);
    drop(wal);
    let wal = Wal::open(&dir, env.opts()).unwrap();
    assert_log(&wal, &now);
    assert_eq!(wal.next_lsn(), max_lsn + 2);
}

// ---------------------------------------------------------------------------------------
// Power loss (simulated storage only)
// ---------------------------------------------------------------------------------------

/// Rounds of appends of every durability across rotations, each ended by a torn power loss:
/// after each, the log is a dense prefix that holds every acknowledged `Sync` record and
/// only records as written (no torn, stale or resurrected one), and appends continue it.
#[test]
fn power_loss_keeps_the_acknowledged_prefix() {
    for seed in 0..6u64 {
        let env = Env::sim(seed);
        let sim = env.sim.clone().unwrap();
        let dir = env.dir("log");
        let mut rng = fastrand::Rng::with_seed(seed);
        // Every record ever appended, by LSN and epoch: after a crash a record of an older
        // epoch may be replaced by a newer one at the same LSN, never the other way.
        let mut model: Vec<LogRecord> = Vec::new();
        let mut acked_sync = 0;
        for epoch in 0..8u32 {
            let wal = Wal::open(&dir, env.opts()).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let got = read_all(&wal);
            let ctx = format!("seed {seed} epoch {epoch}");
            assert_dense(&got, 1, got.len() as u64);
            assert!(
                got.len() as u64 >= acked_sync,
                "{ctx}: lost acknowledged records"
            );
            assert!(got.len() <= model.len(), "{ctx}: records from nowhere");
            for r in &got {
                assert_eq!(r, &model[r.lsn as usize - 1], "{ctx}: record {}", r.lsn);
            }
            model.truncate(got.len());
            for _ in 0..rng.usize(1..60) {
                let durability =
                    [Durability::Sync, Durability::Flush, Durability::Buffer][rng.usize(..3)];
                let len = if rng.u8(..10) == 0 {
                    rng.usize(5000..15000)
                } else {
                    rng.usize(12..500)
                };
                append_with(&wal, &mut model, epoch, len, None, durability);
                if durability == Durability::Sync {
                    acked_sync = model.len() as u64;
                }
            }
            sim.crash(CrashMode::Torn);
            drop(wal);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Segment recycling
// ---------------------------------------------------------------------------------------

on_both!(
    truncate_recycle_reopen_yields_exactly_the_records,
    stale_frames_of_a_recycled_segment_never_come_back,
    torn_tail_in_a_recycled_active_segment_is_cut_cheaply,
    bit_flip_in_the_last_frame_of_a_sealed_recycled_segment,
    a_pool_file_of_another_length_is_not_reused,
    recycle_segments_zero_deletes_freed_segments,
    a_segment_a_reader_holds_is_deleted_not_recycled,
    end_marker_covers_junk_past_segment_bytes,
);

impl Env {
    /// The pool files (freed segments kept for reuse) of the log in `dir`, sorted.
    fn pool_files(&self, dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = self
            .storage
            .list_dir(dir)
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".wal.free"))
            .collect();
        names.sort();
        names
    }

    /// Files created (`OpenMode::CreateNew`) so far, on the simulated storage.
    fn creates(&self) -> Option<u64> {
        self.sim.as_ref().map(|sim| sim.stats().creates)
    }
}

/// The file identity of `path` on the real file system (its inode), to tell a recycled file
/// from a new one; `None` on the simulated storage.
fn inode(env: &Env, path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    env.sim
        .is_none()
        .then(|| std::fs::metadata(path).unwrap().ino())
}

/// Appends records of `len` bytes until the log has `segments` segments.
fn append_until_segments(
    wal: &Wal,
    model: &mut Vec<LogRecord>,
    epoch: u32,
    len: usize,
    segments: usize,
) {
    for _ in 0..1000 {
        if wal.segments().len() >= segments {
            return;
        }
        append(wal, model, epoch, len, None);
    }
    panic!("no rotation to {segments} segments after 1000 records");
}

/// A log whose last segment is recycled: 130 records of 1000 bytes fill segments 1 and 2
/// (64 each) and start segment 3; truncation frees 1 and 2 into the pool; 64 more records
/// fill segment 3, and `after` records of `len` bytes go to segment 4, made from segment
/// 2's file, after its stale frames (LSNs 65..=128, another salt). Returns the model.
fn recycled_log(env: &Env, dir: &Path, after: usize, len: usize) -> Vec<LogRecord> {
    let mut model = build(env, dir, 130, |_| 1000);
    let wal = Wal::open(dir, env.opts()).unwrap();
    assert_eq!(wal.segments().len(), 3);
    assert_eq!(wal.truncate_before(129).unwrap(), 2);
    model.retain(|r| r.lsn >= 129);
    assert_eq!(
        env.pool_files(dir),
        [
            "00000000000000000001.wal.free",
            "00000000000000000002.wal.free"
        ]
    );
    let pool_inode = inode(env, &dir.join("00000000000000000002.wal.free"));
    append_until_segments(&wal, &mut model, 1, 1000, 2);
    // The record that rotated is the first of segment 4; `after - 1` more of `len` follow.
    assert_eq!(wal.segments()[1].first_lsn, model.last().unwrap().lsn);
    for _ in 1..after {
        append(&wal, &mut model, 2, len, None);
    }
    wal.close().unwrap();
    assert_eq!(inode(env, &wal.segment_path(4)), pool_inode);
    assert_eq!(env.pool_files(dir), ["00000000000000000001.wal.free"]);
    model
}

/// Truncation keeps up to two freed segments (oldest first) as pool files, never listed as
/// segments; the next rotations make their segments from them (no file is created); after
/// a reopen in every mode the log holds exactly its records.
fn truncate_recycle_reopen_yields_exactly_the_records(env: &Env) {
    let dir = env.dir("log");
    let mut model = build(env, &dir, 30, |_| 10_000);
    let wal = Wal::open(&dir, env.opts()).unwrap();
    let segments = wal.segments();
    assert_eq!(segments.len(), 5);
    let bound = segments[3].first_lsn;
    assert_eq!(wal.truncate_before(bound).unwrap(), 3);
    model.retain(|r| r.lsn >= bound);
    // Segments 1 and 2 are kept (the pool holds two by default), segment 3 is deleted.
    assert_eq!(
        env.pool_files(&dir),
        [
            "00000000000000000001.wal.free",
            "00000000000000000002.wal.free"
        ]
    );
    assert_eq!(
        env.segments(&dir).iter().map(|s| s.0).collect::<Vec<_>>(),
        [4, 5]
    );
    assert!(wal.segments().iter().all(|s| s.seq >= 4));
    let pool_inodes: Vec<Option<u64>> = env
        .pool_files(&dir)
        .iter()
        .map(|n| inode(env, &dir.join(n)))
        .collect();
    let creates = env.creates();
    append_until_segments(&wal, &mut model, 1, 10_000, 4);
    assert!(env.pool_files(&dir).is_empty(), "both pool files reused");
    assert_eq!(env.creates(), creates, "no segment file created");
    for seq in [6, 7] {
        let path = wal.segment_path(seq);
        assert!(pool_inodes.contains(&inode(env, &path)), "segment {seq}");
        assert_eq!(env.read(&path).len() as u64, SEGMENT_BYTES);
    }
    assert_log(&wal, &model);
    wal.close().unwrap();
    drop(wal);
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        let wal = Wal::open(&dir, env.mode(mode)).unwrap();
        assert_eq!(wal.recovery_report().torn_tail, None);
        assert_eq!(wal.first_lsn(), bound);
        assert_log(&wal, &model);
        for r in &model {
            assert_eq!(read_from(&wal, r.lsn).first(), Some(r));
        }
    }
    let wal = Wal::open_read_only(&dir, env.opts()).unwrap();
    assert_log(&wal, &model);
}

/// A segment file full of records is freed and reused for a few short records: its stale
/// frames (another salt, lower LSNs) are still there after the new records, and no reader,
/// recovery mode or crash ever returns one.
fn stale_frames_of_a_recycled_segment_never_come_back(env: &Env) {
    let dir = env.dir("log");
    let model = recycled_log(env, &dir, 3, 50);
    let path = env.segments(&dir)[1].1.clone();
    let (header, frames) = env.frames(&path);
    assert_eq!((header.segment_seq, frames.len()), (4, 3));
    let end = (frames[2].offset + frames[2].len) as usize;
    let bytes = env.read(&path);
    let marker_end = end + FRAME_HEADER as usize;
    assert!(bytes[end..marker_end].iter().all(|&b| b == 0), "end marker");
    assert!(
        bytes[marker_end..].iter().filter(|&&b| b != 0).count() > 60_000,
        "the old segment's frames are still there"
    );
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        let wal = Wal::open(&dir, env.mode(mode)).unwrap();
        let report = wal.recovery_report().clone();
        assert_eq!((report.torn_tail, report.records), (None, 67));
        assert_log(&wal, &model);
        for r in &model {
            assert_eq!(read_from(&wal, r.lsn).first(), Some(r));
        }
        drop(wal);
    }
    let wal = Wal::open_read_only(&dir, env.mode(RecoveryMode::Salvage)).unwrap();
    assert!(wal.recovery_report().quarantined.is_empty());
    assert_log(&wal, &model);
    drop(wal);
    // More records over the stale ones, a crash, and the log is still exactly its records.
    let wal = Wal::open(&dir, env.opts()).unwrap();
    let mut now = model;
    for i in 0..10 {
        append(&wal, &mut now, 3, 10 + i * 7, None);
    }
    env.crash(wal);
    let wal = Wal::open(&dir, env.mode(RecoveryMode::Strict)).unwrap();
    assert_log(&wal, &now);
}

/// A torn last frame in a recycled active segment: the cut writes one end marker (17 bytes)
/// and leaves the stale bytes after it untouched; the next open is clean, even `Strict`.
fn torn_tail_in_a_recycled_active_segment_is_cut_cheaply(env: &Env) {
    let dir = env.dir("log");
    let mut model = recycled_log(env, &dir, 5, 200);
    let path = env.segments(&dir)[1].1.clone();
    let (_, frames) = env.frames(&path);
    let last = *frames.last().unwrap();
    env.flip_bit(&path, last.offset + last.len - 1, 2);
    let before = env.read(&path);
    assert!(matches!(
        Wal::open(&dir, env.mode(RecoveryMode::Strict)),
        Err(Error::TornTail { segment: 4, offset, .. }) if offset == last.offset
    ));
    let (wal, torn) = open_cutting_a_torn_tail(env, &dir);
    assert_eq!(
        (torn.segment, torn.offset, torn.len),
        (4, last.offset, last.len)
    );
    model.pop();
    assert_log(&wal, &model);
    drop(wal);
    let after = env.read(&path);
    let cut = last.offset as usize;
    assert!(after[cut..cut + FRAME_HEADER as usize]
        .iter()
        .all(|&b| b == 0));
    assert_eq!(after[..cut], before[..cut]);
    assert_eq!(
        after[cut + FRAME_HEADER as usize..],
        before[cut + FRAME_HEADER as usize..],
        "the stale bytes after the cut are untouched"
    );
    let wal = Wal::open(&dir, env.mode(RecoveryMode::Strict)).unwrap();
    assert_eq!(wal.recovery_report().torn_tail, None);
    assert_log(&wal, &model);
    append(&wal, &mut model, 3, 20, None);
    drop(wal);
    let wal = Wal::open(&dir, env.mode(RecoveryMode::Strict)).unwrap();
    assert_log(&wal, &model);
}

/// A sealed recycled segment ends in an end marker, so a bit flipped in its last frame is
/// corruption (never dropped as if it were the end of the log), and `Salvage` quarantines
/// exactly that frame.
fn bit_flip_in_the_last_frame_of_a_sealed_recycled_segment(env: &Env) {
    let base = env.dir("base");
    let mut model = recycled_log(env, &base, 1, 1000);
    {
        // Fill segment 4 (recycled) with shorter records until segment 5 starts: segment 4
        // is sealed with stale bytes after its end marker.
        let wal = Wal::open(&base, env.opts()).unwrap();
        append_until_segments(&wal, &mut model, 4, 700, 3);
        wal.close().unwrap();
    }
    let files = env.snapshot(&base);
    let (seq, path) = env.segments(&base)[1].clone();
    assert_eq!(seq, 4);
    let (_, frames) = env.frames(&path);
    let bad = *frames.last().unwrap();
    let end = (bad.offset + bad.len) as usize;
    let bytes = env.read(&path);
    assert!(bytes[end..end + FRAME_HEADER as usize]
        .iter()
        .all(|&b| b == 0));
    assert!(bytes[end + FRAME_HEADER as usize..].iter().any(|&b| b != 0));
    let name = path.file_name().unwrap().to_str().unwrap();
    let positions = [(9, 1), (FRAME_HEADER + 100, 5), (bad.len - 1, 0)];
    let damage = (seq, bad, true);
    flip_bits_then_salvage(env, "recycled", &files, name, damage, &positions, &model);
}

/// Only files of `segment_bytes` are reused: a pool file of another length (left by a log
/// opened with other options) is removed when a segment would take it, and a freed segment
/// of another length is deleted, not kept.
fn a_pool_file_of_another_length_is_not_reused(env: &Env) {
    let dir = env.dir("log");
    let mut model = build(env, &dir, 5, |_| 10_000);
    let odd = dir.join("00000000000000000077.wal.free");
    env.create(&odd, &vec![0xab; SEGMENT_BYTES as usize / 2]);
    let wal = Wal::open(&dir, env.opts()).unwrap();
    let creates = env.creates();
    append_until_segments(&wal, &mut model, 1, 10_000, 2);
    assert!(!env.storage.exists(&odd).unwrap(), "removed, not reused");
    assert_eq!(
        env.creates().map(|c| c - creates.unwrap()),
        Some(1).filter(|_| env.sim.is_some())
    );
    assert_eq!(env.read(&wal.segment_path(2)).len() as u64, SEGMENT_BYTES);
    append_until_segments(&wal, &mut model, 1, 10_000, 3);
    drop(wal);
    // Segment 1 made longer than segment_bytes: freed, it is deleted.
    let (_, first) = env.segments(&dir)[0].clone();
    env.set_len(&first, SEGMENT_BYTES + 4096);
    let wal = Wal::open(&dir, env.opts()).unwrap();
    assert_eq!(wal.truncate_before(wal.segments()[1].first_lsn).unwrap(), 1);
    assert!(env.pool_files(&dir).is_empty());
    assert!(!env.storage.exists(&first).unwrap());
    model.retain(|r| r.lsn >= wal.first_lsn());
    assert_log(&wal, &model);
}

/// `recycle_segments(0)` deletes every freed segment, and opening with a smaller pool
/// removes the pool files beyond it.
fn recycle_segments_zero_deletes_freed_segments(env: &Env) {
    let dir = env.dir("log");
    let mut model = build(env, &dir, 30, |_| 10_000);
    let wal = Wal::open(&dir, env.opts().recycle_segments(0)).unwrap();
    let bound = wal.segments()[2].first_lsn;
    assert_eq!(wal.truncate_before(bound).unwrap(), 2);
    assert!(env.pool_files(&dir).is_empty());
    assert_eq!(env.segments(&dir).len(), 3);
    model.retain(|r| r.lsn >= bound);
    assert_log(&wal, &model);
    drop(wal);
    // Four kept, then opened with room for one, then none.
    let wal = Wal::open(&dir, env.opts().recycle_segments(4)).unwrap();
    append_until_segments(&wal, &mut model, 1, 10_000, 7);
    let bound = wal.segments()[4].first_lsn;
    assert_eq!(wal.truncate_before(bound).unwrap(), 4);
    model.retain(|r| r.lsn >= bound);
    assert_eq!(env.pool_files(&dir).len(), 4);
    drop(wal);
    for (keep, left) in [(1, 1), (0, 0)] {
        let wal = Wal::open(&dir, env.opts().recycle_segments(keep)).unwrap();
        assert_eq!(env.pool_files(&dir).len(), left, "recycle_segments({keep})");
        assert_log(&wal, &model);
    }
}

/// A reader made before a truncation holds the segments it reads: freed, they are deleted
/// (their bytes stay readable through the reader), never reused under it. Once the reader
/// is gone, freed segments are kept again.
fn a_segment_a_reader_holds_is_deleted_not_recycled(env: &Env) {
    let dir = env.dir("log");
    let mut model = build(env, &dir, 30, |_| 10_000);
    let wal = Wal::open(&dir, env.opts()).unwrap();
    let reader = wal.read_from(1);
    let everything = model.clone();
    let bound = wal.segments()[3].first_lsn;
    assert_eq!(wal.truncate_before(bound).unwrap(), 3);
    assert!(env.pool_files(&dir).is_empty(), "held segments are deleted");
    model.retain(|r| r.lsn >= bound);
    // New segments, which would reuse the freed files if they had been kept.
    append_until_segments(&wal, &mut model, 1, 10_000, 4);
    let read: Vec<LogRecord> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(read, everything, "the reader reads what it was made over");
    let bound = wal.segments()[2].first_lsn;
    assert_eq!(wal.truncate_before(bound).unwrap(), 2);
    assert_eq!(env.pool_files(&dir).len(), 2, "no reader: kept for reuse");
    model.retain(|r| r.lsn >= bound);
    assert_log(&wal, &model);
}

/// A segment file longer than `segment_bytes` with junk right after `segment_bytes`, filled
/// to a few bytes short of `segment_bytes`: the end marker still covers 17 bytes (over the
/// junk), so the sealed segment ends in a zeroed header and opens, `Strict` too.
fn end_marker_covers_junk_past_segment_bytes(env: &Env) {
    let dir = env.dir("log");
    let mut model = build(env, &dir, 3, |_| 10_000);
    let (_, path) = env.segments(&dir)[0].clone();
    env.write_at(&path, SEGMENT_BYTES, &[0xcd; 4096]);
    let wal = Wal::open(&dir, env.opts()).unwrap();
    let (_, frames) = env.frames(&path);
    let mut end = frames.last().map(|f| f.offset + f.len).unwrap();
    // Records up to 5 bytes short of segment_bytes.
    while SEGMENT_BYTES - end > 5 {
        let room = (SEGMENT_BYTES - end - 5 - FRAME_HEADER) as usize;
        let len = room.min(RECORD_BYTES_MAX);
        append(&wal, &mut model, 1, len, None);
        end += FRAME_HEADER + len as u64;
    }
    assert_eq!(SEGMENT_BYTES - end, 5);
    append(&wal, &mut model, 1, 100, None);
    assert_eq!(wal.segments().len(), 2, "the last record rotated");
    drop(wal);
    let bytes = env.read(&path);
    assert!(bytes[end as usize..end as usize + 17]
        .iter()
        .all(|&b| b == 0));
    assert_eq!(bytes[end as usize + 17], 0xcd);
    let wal = Wal::open(&dir, env.mode(RecoveryMode::Strict)).unwrap();
    assert_log(&wal, &model);
}

// ---------------------------------------------------------------------------------------
// Recycling under crashes and faults (simulated storage only)
// ---------------------------------------------------------------------------------------

/// What a crash test of one step knows: the records acknowledged, those whose outcome is
/// unknown (their group's write or sync failed), and how far the log may start.
struct Expect {
    acked: Vec<LogRecord>,
    unknown: Vec<LogRecord>,
    first_lsn_max: u64,
}

/// Appends a `Sync` record of `len` bytes; an acknowledged one joins `expect.acked`, one of
/// unknown outcome `expect.unknown`. Returns false once an append failed.
fn append_expecting(wal: &Wal, expect: &mut Expect, len: usize) -> bool {
    let lsn = wal.next_lsn();
    let record = LogRecord {
        lsn,
        correlation_id: None,
        payload: payload(lsn, 7, len),
    };
    match wal.append(Record::new(&record.payload)) {
        Ok(r) => {
            assert_eq!(r.lsn, lsn);
            expect.acked.push(record);
            true
        }
        Err(Error::OutcomeUnknown { .. }) => {
            expect.unknown.push(record);
            false
        }
        Err(_) => false,
    }
}

/// Options of the crash tests: no background preparation (its IO would happen at moments
/// set by thread timing, so a fault's count would not say which call it hits).
fn crash_opts(sim: &Arc<SimStorage>) -> WalOptions {
    let storage: Arc<dyn Storage> = sim.clone();
    WalOptions::default()
        .storage(storage)
        .segment_bytes(SEGMENT_BYTES)
        .record_bytes_max(RECORD_BYTES_MAX)
        .prepare_next_segment(false)
        .seed(Some(3))
}

/// Checks the log recovered from `sim`: it opens, starts at most at `first_lsn_max`, is
/// dense, holds every acknowledged record and otherwise only records of unknown outcome, as
/// written, and at most two pool files remain; then appends continue it across a reopen.
fn check_recovered(sim: &Arc<SimStorage>, dir: &Path, expect: &Expect, ctx: &str) {
    let wal = Wal::open(dir, crash_opts(sim)).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
    let got = read_all(&wal);
    let first = wal.first_lsn();
    assert!(
        first <= expect.first_lsn_max,
        "{ctx}: log starts at {first}"
    );
    assert_dense(&got, first, wal.next_lsn() - 1);
    let last_acked = expect.acked.last().unwrap().lsn;
    assert!(
        wal.next_lsn() > last_acked,
        "{ctx}: acknowledged records lost"
    );
    for r in &got {
        let want = expect
            .acked
            .iter()
            .chain(&expect.unknown)
            .find(|w| w.lsn == r.lsn);
        assert_eq!(Some(r), want, "{ctx}: record {}", r.lsn);
    }
    let pool = sim
        .list_dir(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".wal.free"))
        .count();
    assert!(pool <= 2, "{ctx}: {pool} pool files");
    let mut now = got;
    append(&wal, &mut now, 9, 3000, None);
    wal.close().unwrap();
    drop(wal);
    let wal = Wal::open(dir, crash_opts(sim).recovery_mode(RecoveryMode::Strict))
        .unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    assert_log(&wal, &now);
}

/// Runs `step` on a log opened on a copy of `base`: once without faults to count the calls
/// it makes, then once per call with that call failing (`EIO`, which changes nothing: the
/// same as a crash just before it). After each run, crashes a copy four ways (clean power
/// loss, torn power loss with two seeds, process kill) and checks what recovers.
fn crash_at_every_call(
    base: &Arc<SimStorage>,
    dir: &Path,
    expect: &Expect,
    step: impl Fn(&Wal, &mut Expect),
) {
    let counts = {
        let sim = base.fork();
        let wal = Wal::open(dir, crash_opts(&sim)).unwrap();
        let before = sim.stats();
        step(
            &wal,
            &mut Expect {
                ..clone_expect(expect)
            },
        );
        let after = sim.stats();
        [
            (FaultKind::Write, after.writes - before.writes),
            (FaultKind::Resize, after.resizes - before.resizes),
            (FaultKind::SyncData, after.sync_data - before.sync_data),
            (FaultKind::SyncAll, after.sync_all - before.sync_all),
            (FaultKind::SyncDir, after.sync_dir - before.sync_dir),
            (FaultKind::Create, after.creates - before.creates),
            (FaultKind::Rename, after.renames - before.renames),
            (FaultKind::Remove, after.removes - before.removes),
        ]
    };
    let cases = std::iter::once(None).chain(
        counts
            .iter()
            .flat_map(|&(kind, n)| (1..=n).map(move |nth| Some((kind, nth)))),
    );
    for fault in cases {
        let sim = base.fork();
        let wal = Wal::open(dir, crash_opts(&sim)).unwrap();
        if let Some((kind, nth)) = fault {
            sim.fail_nth(kind, nth);
        }
        let mut expect = clone_expect(expect);
        step(&wal, &mut expect);
        for crash in ["clean", "torn 1", "torn 2", "process"] {
            let after = sim.fork();
            match crash {
                "clean" => after.crash(CrashMode::Clean),
                "torn 1" => after.crash_with_seed(CrashMode::Torn, 1),
                "torn 2" => after.crash_with_seed(CrashMode::Torn, 2),
                _ => {}
            }
            after.clear_faults();
            check_recovered(&after, dir, &expect, &format!("{fault:?}, {crash} crash"));
        }
        drop(wal);
    }
}

fn clone_expect(e: &Expect) -> Expect {
    Expect {
        acked: e.acked.clone(),
        unknown: e.unknown.clone(),
        first_lsn_max: e.first_lsn_max,
    }
}

/// A log of five segments, closed, on the simulated storage; returns it and its records.
fn five_segments() -> (Arc<SimStorage>, PathBuf, Vec<LogRecord>) {
    let sim = SimStorage::new(11);
    let dir = PathBuf::from("/log");
    sim.create_dir_all(&dir).unwrap();
    let wal = Wal::open(&dir, crash_opts(&sim)).unwrap();
    let mut model = Vec::new();
    append_until_segments(&wal, &mut model, 0, 10_000, 5);
    wal.close().unwrap();
    (sim, dir, model)
}

/// A crash (or failure) at every step of a truncation that renames two freed segments into
/// the pool and deletes a third: the log stays contiguous with every record, wherever it
/// now starts, and a pool file never comes back as a segment.
#[test]
fn crash_at_every_step_of_truncation_into_the_pool() {
    let (sim, dir, model) = five_segments();
    let bound = {
        let wal = Wal::open_read_only(&dir, crash_opts(&sim)).unwrap();
        wal.segments()[3].first_lsn
    };
    let expect = Expect {
        acked: model,
        unknown: Vec::new(),
        first_lsn_max: bound,
    };
    crash_at_every_call(&sim, &dir, &expect, |wal, _| {
        let _ = wal.truncate_before(bound);
    });
}

/// A crash (or failure) at every step of a rotation that makes the new segment from a pool
/// file (header and end marker written, synced, renamed, directory synced) and of the
/// appends after it: the log opens with every acknowledged record and nothing else.
#[test]
fn crash_at_every_step_of_reusing_a_pool_file() {
    let (sim, dir, model) = five_segments();
    let bound = {
        let wal = Wal::open(&dir, crash_opts(&sim)).unwrap();
        let bound = wal.segments()[3].first_lsn;
        assert_eq!(wal.truncate_before(bound).unwrap(), 3);
        wal.close().unwrap();
        bound
    };
    let expect = Expect {
        acked: model.into_iter().filter(|r| r.lsn >= bound).collect(),
        unknown: Vec::new(),
        first_lsn_max: bound,
    };
    crash_at_every_call(&sim, &dir, &expect, |wal, expect| {
        let segments = wal.segments().len();
        while wal.segments().len() == segments && append_expecting(wal, expect, 10_000) {}
        // A few records in the recycled segment, after its new header.
        for len in [10, 300, 4000] {
            if !append_expecting(wal, expect, len) {
                break;
            }
        }
    });
}

/// A freed segment joins the pool only once its pool name is durable. Here a truncation's
/// directory sync fails, so the renames into the pool are in the page cache only: the same
/// handle does not reuse those files, and after the process dies, open makes the names
/// durable before it reuses them. Otherwise a power cut after a new header was written into
/// one (here: its rename to the new segment's name fails) could bring it back under its old
/// segment name, holding the new header, and the log would not open.
#[test]
fn pool_files_are_reused_only_once_their_names_are_durable() {
    for process_dies in [false, true] {
        for rename_fails in [false, true] {
            let ctx = format!(
                "process dies: {process_dies}, rename of the new segment fails: {rename_fails}"
            );
            let (sim, dir, model) = five_segments();
            let wal = Wal::open(&dir, crash_opts(&sim)).unwrap();
            let bound = wal.segments()[3].first_lsn;
            sim.fail_nth(FaultKind::SyncDir, 1);
            assert!(
                wal.truncate_before(bound).is_err(),
                "the failed sync surfaces"
            );
            let (sim, wal) = if process_dies {
                let next = sim.fork();
                drop(wal);
                let wal = Wal::open(&dir, crash_opts(&next)).unwrap();
                (next, wal)
            } else {
                (sim, wal)
            };
            let pool = sim
                .list_dir(&dir)
                .unwrap()
                .into_iter()
                .filter(|n| n.ends_with(".wal.free"))
                .count();
            assert_eq!(pool, 2, "{ctx}");
            let creates = sim.stats().creates;
            if rename_fails {
                sim.fail_nth(FaultKind::Rename, 1);
            }
            let mut expect = Expect {
                acked: model,
                unknown: Vec::new(),
                first_lsn_max: bound,
            };
            let segments = wal.segments().len();
            while wal.segments().len() < segments + 2 && append_expecting(&wal, &mut expect, 10_000)
            {
            }
            let reused = sim.stats().creates == creates;
            assert_eq!(reused, process_dies, "{ctx}: pool files reused");
            sim.crash(CrashMode::Clean);
            drop(wal);
            check_recovered(&sim, &dir, &expect, &ctx);
        }
    }
}

/// A rotation into a pool file whose first group then fails: the recycled segment is empty
/// but for its header and end marker, so even `Strict` opens it (the stale bytes after the
/// marker are the end of the log, not a torn tail).
#[test]
fn strict_opens_an_empty_recycled_segment() {
    let (sim, dir, model) = five_segments();
    let wal = Wal::open(&dir, crash_opts(&sim)).unwrap();
    let bound = wal.segments()[3].first_lsn;
    assert_eq!(wal.truncate_before(bound).unwrap(), 3);
    let mut expect = Expect {
        acked: model.into_iter().filter(|r| r.lsn >= bound).collect(),
        unknown: Vec::new(),
        first_lsn_max: bound,
    };
    // Fill the active segment; the next append rotates into a pool file. Its first write is
    // the new segment's header, the second the group: that one fails.
    let segments = wal.segments().len();
    let room = |wal: &Wal| {
        let last = wal.segments().last().unwrap().clone();
        let bytes = env_read(&sim, &last.path);
        let header = SegmentHeader::decode(&bytes).unwrap();
        let mut offset = SEGMENT_HEADER_BYTES;
        while let Ok(f) = decode_frame(&bytes[offset..], header.salt) {
            offset += f.frame_len;
        }
        SEGMENT_BYTES - offset as u64
    };
    while room(&wal) > 10_000 + FRAME_HEADER {
        assert!(append_expecting(&wal, &mut expect, 10_000));
    }
    sim.fail_nth(FaultKind::Write, 2);
    assert!(!append_expecting(&wal, &mut expect, 10_000));
    assert_eq!(wal.segments().len(), segments + 1, "the rotation happened");
    let seq = wal.segments().last().unwrap().seq;
    sim.crash(CrashMode::Clean);
    drop(wal);
    let wal = Wal::open(&dir, crash_opts(&sim).recovery_mode(RecoveryMode::Strict)).unwrap();
    assert_eq!(wal.segments().last().unwrap().seq, seq);
    assert_eq!(wal.recovery_report().torn_tail, None);
    drop(wal);
    check_recovered(&sim, &dir, &expect, "empty recycled segment");
}

fn env_read(sim: &Arc<SimStorage>, path: &Path) -> Vec<u8> {
    sim.open_file(path, OpenMode::ReadOnly)
        .unwrap()
        .map()
        .unwrap()
        .to_vec()
}
