//! Regression tests for the bugs the model-based tests, the soak and the fuzzers found. Each
//! test's doc comment tells the story of its bug: how it showed up, why it happened, and
//! what the fix changed. They run on the simulated storage, deterministically.

use groupwal::format::{encode_frame, SEGMENT_HEADER_BYTES};
use groupwal::io::sim::{CrashMode, FaultKind, SimStorage};
use groupwal::io::{OpenMode, Storage};
use groupwal::{
    Durability, Error, GroupEvent, GroupListener, LogRecord, Record, RecoveryMode, Wal, WalOptions,
};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DIR: &str = "log";
const SEGMENT: &str = "log/00000000000000000001.wal";

fn options(sim: &Arc<SimStorage>) -> WalOptions {
    let storage: Arc<dyn Storage> = sim.clone();
    WalOptions::default()
        .storage(storage)
        .segment_bytes(64 << 10)
        .record_bytes_max(60 << 10)
        .sync_interval(Duration::from_secs(3600))
        .sync_interval_jitter(Duration::ZERO)
        .seed(Some(7))
}

fn read_all(wal: &Wal) -> Vec<LogRecord> {
    wal.read_from(0)
        .collect::<Result<Vec<_>, _>>()
        .expect("read the log")
}

fn lsns(records: &[LogRecord]) -> Vec<u64> {
    records.iter().map(|r| r.lsn).collect()
}

/// Appends `Sync` records of `len` bytes until the active segment has less than `left`
/// bytes of room; returns the LSNs.
fn fill_segment(wal: &Wal, len: usize, left: u64) -> Vec<u64> {
    let frame = (len + 17) as u64;
    let mut room = (64 << 10) - SEGMENT_HEADER_BYTES as u64;
    let mut out = Vec::new();
    while room >= left + frame {
        out.push(wal.append(Record::new(&vec![1; len])).expect("append").lsn);
        room -= frame;
    }
    out
}

/// **A failed directory sync during rotation let two segments claim the same LSNs.**
///
/// Found by the soak (seed 17): after an injected `sync_dir` failure, reopening the log
/// failed with "segment 4 starts at LSN 60, but the previous one ends before LSN 62".
/// Rotation creates the next segment under a temporary name, renames it into place and
/// syncs the directory. When that last sync failed, the append that needed the new segment
/// got an IO error and the log stayed usable, still appending to the old segment; but the
/// new segment, with `first_lsn` = the next LSN, was already in the directory under its
/// real name. The next small record then took that LSN in the old segment, and recovery
/// (after a reopen, a process crash, or a power cut that kept the rename) found two
/// segments with the same LSNs and refused to open. A failed directory sync is now
/// fail-stop like any failed sync: the log is poisoned, and reopening recovers.
#[test]
fn failed_directory_sync_during_rotation_poisons_instead_of_reusing_lsns() {
    let sim = SimStorage::new(1);
    let wal = Wal::open(DIR, options(&sim)).unwrap();
    let mut acked = fill_segment(&wal, 1000, 2000);
    sim.fail_nth(FaultKind::SyncDir, 1);
    // Does not fit: rotation, whose directory sync fails after the rename.
    let big = wal.append(Record::new(&[2; 4000]));
    assert!(
        matches!(big, Err(Error::Poisoned { .. })),
        "a failed directory sync after the rename must poison the log, got {big:?}"
    );
    // Before the fix this small record went into the old segment, at the new one's LSN.
    let small = wal.append(Record::new(&[3; 10]));
    assert!(matches!(small, Err(Error::Poisoned { .. })), "{small:?}");
    drop(wal);

    // A reopen (the process went on) and a power cut that kept the rename both recover.
    let after_crash = sim.fork();
    after_crash.crash(CrashMode::Torn);
    for sim in [sim, after_crash] {
        let wal = Wal::open(DIR, options(&sim)).expect("the log must open");
        let records = read_all(&wal);
        assert_eq!(
            lsns(&records),
            acked,
            "every acknowledged record, nothing else"
        );
        let next = wal.append(Record::new(&[4; 10])).unwrap().lsn;
        assert_eq!(next, acked.last().unwrap() + 1);
    }
    acked.clear();
}

/// **A segment renamed into place but never made durable was appended to after a restart.**
///
/// Found while fixing the bug above, by the model's process-crash step: if the process dies
/// (or is poisoned) between renaming a new segment into place and syncing the directory,
/// the page cache still shows the new segment. The next open found it, took it as the
/// active segment and acknowledged `Sync` records in it; a power cut then took the name
/// away, and those acknowledged records with it. Opening a log for writing now syncs the
/// directory before it accepts appends.
#[test]
fn open_makes_segment_names_durable_before_appending() {
    let sim = SimStorage::new(2);
    let wal = Wal::open(DIR, options(&sim)).unwrap();
    fill_segment(&wal, 1000, 2000);
    sim.fail_nth(FaultKind::SyncDir, 1);
    assert!(wal.append(Record::new(&[2; 4000])).is_err());
    // The process dies: the next one sees the live directory, with the new segment.
    let restarted = sim.fork();
    drop(wal);
    let wal = Wal::open(DIR, options(&restarted)).unwrap();
    let lsn = wal
        .append(Record::new(b"acknowledged as durable"))
        .unwrap()
        .lsn;
    drop(wal);
    // Power cut: only what was synced survives.
    restarted.crash(CrashMode::Clean);
    let wal = Wal::open(DIR, options(&restarted)).unwrap();
    let records = read_all(&wal);
    assert_eq!(
        records.last().map(|r| r.lsn),
        Some(lsn),
        "the acknowledged Sync record was lost with the segment's name"
    );
}

/// Blocks the first group's listener call until released.
struct BlockFirst {
    entered: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl GroupListener for BlockFirst {
    fn on_group(&self, _: &GroupEvent) {
        if let Some(entered) = self.entered.lock().unwrap().take() {
            entered.send(()).unwrap();
            let _ = self
                .release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
        }
    }
}

/// **An empty `append_many` could sleep for a whole `sync_interval`.**
///
/// Found by the soak (seed 130) as a hang: `append_many(&[])` never returned. An empty
/// batch joined nothing, but still went through the leader hand-off: finding a leader busy,
/// it became the *designated* next leader of the open group, which held only `Buffer`
/// records. The busy leader, finding no waiters in that group, stopped without waking the
/// designated leader, and nothing woke it until the background sync ran (an hour here; up
/// to `sync_interval` + jitter in general). An empty batch now returns at once.
#[test]
fn empty_batch_returns_while_another_thread_leads() {
    let sim = SimStorage::new(3);
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let listener = Arc::new(BlockFirst {
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(release_rx),
    });
    let wal = Arc::new(Wal::open(DIR, options(&sim).listener(Some(listener))).unwrap());
    // A leader that stays busy (in the listener) until released.
    let leader = {
        let wal = wal.clone();
        std::thread::spawn(move || wal.append(Record::new(b"first")).unwrap())
    };
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("leader entered the listener");
    wal.append(Record::new(b"buffered").durability(Durability::Buffer))
        .unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    {
        let wal = wal.clone();
        std::thread::spawn(move || done_tx.send(wal.append_many(&[]).len()).unwrap());
    }
    std::thread::sleep(Duration::from_millis(50));
    release_tx.send(()).unwrap();
    leader.join().unwrap();
    assert_eq!(
        done_rx.recv_timeout(Duration::from_secs(5)),
        Ok(0),
        "append_many(&[]) hung"
    );
}

/// **A reader made right after an acknowledged append could miss that record.**
///
/// Found by the model (seeds 12, 21, 96, …): a `Read` step after a `Submit` and a `Flush`
/// append saw the log end one record early, although `written_lsn()` already covered the
/// record. A leader publishes `written_lsn` (the atomic) and wakes its group before it
/// takes the state lock again to update the state's copy; `read_from` took its end from
/// that copy. A writer led by another thread could return, call `read_from`, and not find
/// its own record. Readers now take the end from the published atomic.
///
/// The race needs another thread to lead, so this test runs many threads that each append
/// and at once read their record back; before the fix it failed within a few hundred
/// appends.
#[test]
fn a_reader_sees_the_record_just_acknowledged() {
    let sim = SimStorage::new(4);
    let wal = Arc::new(Wal::open(DIR, options(&sim).segment_bytes(1 << 20)).unwrap());
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for i in 0..400u32 {
                    let durability = if i % 2 == 0 {
                        Durability::Flush
                    } else {
                        Durability::Sync
                    };
                    let payload = format!("{t} {i}");
                    let lsn = wal
                        .append(Record::new(payload.as_bytes()).durability(durability))
                        .unwrap()
                        .lsn;
                    let first = wal.read_from(lsn).next().map(|r| r.unwrap());
                    assert_eq!(
                        first.map(|r| (r.lsn, r.payload)),
                        Some((lsn, payload.into_bytes())),
                        "read_from({lsn}) right after its append"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// **An interrupted torn-tail cut left garbage that later made the log unopenable.**
///
/// Found by the soak (seed 9758): after a torn crash, an injected short write and a few
/// hundred more steps, a clean crash's recovery failed with "corruption in segment 1 at
/// offset 19544: unknown frame flags 0xff". Recovery cut a torn tail by zeroing it. That
/// write was cut short (a crash or an IO error can do that), so the next open found zeros
/// where the torn frame began, took that as the end of the log, and left the rest of the
/// torn frame in place. New records were then appended over the zeros, the garbage stayed
/// after them, and once the segment was sealed the garbage was corruption in a sealed
/// segment. The first fix cut such garbage at the next open too. Since segment recycling,
/// every group is written with an end marker (a zeroed frame header) after its last frame
/// and a cut writes only such a marker, so a sealed segment ends in a zero header and the
/// garbage after it is never read. Here the cut itself is interrupted: it lands 5 of its 17
/// bytes.
#[test]
fn garbage_left_by_an_interrupted_tail_cut_never_becomes_corruption() {
    let sim = SimStorage::new(5);
    let wal = Wal::open(DIR, options(&sim)).unwrap();
    let mut acked: Vec<u64> = (0..3)
        .map(|_| wal.append(Record::new(&[5; 100])).unwrap().lsn)
        .collect();
    wal.close().unwrap();
    drop(wal);
    // A torn write after the end: bytes that are no frame, up to near the segment's end.
    let end = SEGMENT_HEADER_BYTES as u64 + 3 * 117;
    let file = sim
        .open_file(Path::new(SEGMENT), OpenMode::ReadWrite)
        .unwrap();
    file.write_all_at(&vec![0xab; 65_000 - end as usize], end)
        .unwrap();
    file.sync_data().unwrap();
    drop(file);
    // The cut lands only its first 5 bytes of zeros, then fails.
    sim.short_write_nth(1, 5);
    assert!(Wal::open(DIR, options(&sim)).is_err());
    let wal = Wal::open(DIR, options(&sim)).expect("open after the interrupted cut");
    // Records over the zeros and part of the garbage, then one that needs a new segment:
    // segment 1 is sealed with the rest of the garbage after its last record.
    for _ in 0..5 {
        acked.push(wal.append(Record::new(&[6; 150])).unwrap().lsn);
    }
    for _ in 0..2 {
        acked.push(wal.append(Record::new(&[7; 60_000])).unwrap().lsn);
    }
    wal.close().unwrap();
    drop(wal);
    let wal = Wal::open(DIR, options(&sim)).expect("the sealed segment must hold no garbage");
    assert_eq!(lsns(&read_all(&wal)), acked);
}

/// Writes a log of `n` records of `len` bytes in one segment, closed.
fn one_segment_log(sim: &Arc<SimStorage>, n: usize, len: usize) -> Vec<u64> {
    let wal = Wal::open(DIR, options(sim)).unwrap();
    let lsns = (0..n)
        .map(|i| {
            wal.append(Record::new(&vec![i as u8 + 1; len]))
                .unwrap()
                .lsn
        })
        .collect();
    wal.close().unwrap();
    lsns
}

fn segment_bytes(sim: &SimStorage) -> (Arc<dyn groupwal::io::StorageFile>, Vec<u8>) {
    let file = sim
        .open_file(Path::new(SEGMENT), OpenMode::ReadWrite)
        .unwrap();
    let bytes = file.map().unwrap().to_vec();
    (file, bytes)
}

/// Damages the segment: `damage` gets the open file and its bytes as they were; then the
/// file is synced and closed. Returns those bytes.
fn damage_segment(
    sim: &SimStorage,
    damage: impl FnOnce(&dyn groupwal::io::StorageFile, &[u8]),
) -> Vec<u8> {
    let (file, bytes) = segment_bytes(sim);
    damage(&*file, &bytes);
    file.sync_data().unwrap();
    drop(file);
    bytes
}

/// Where record `lsn`'s frame starts in a one-segment log of frames of `frame` bytes.
fn frame_start(lsn: u64, frame: usize) -> usize {
    SEGMENT_HEADER_BYTES + (lsn as usize - 1) * frame
}

/// Writes record `from`'s frame (of `frame` bytes), byte for byte, where record `to` was.
fn copy_frame(
    file: &dyn groupwal::io::StorageFile,
    bytes: &[u8],
    frame: usize,
    from: u64,
    to: u64,
) {
    let from = frame_start(from, frame);
    file.write_all_at(&bytes[from..from + frame], frame_start(to, frame) as u64)
        .unwrap();
}

/// The default open refuses the damaged log.
fn assert_refused_by_default(sim: &Arc<SimStorage>) {
    assert!(matches!(
        Wal::open(DIR, options(sim)),
        Err(Error::Corruption { .. })
    ));
}

/// `written` without `lost`.
fn without(written: &[u64], lost: u64) -> Vec<u64> {
    written.iter().copied().filter(|&l| l != lost).collect()
}

/// Opens the log in `Salvage` mode; asserts it reads back the records `expected` and
/// returns them.
fn open_salvaged(sim: &Arc<SimStorage>, expected: &[u64]) -> Vec<LogRecord> {
    let wal =
        Wal::open(DIR, options(sim).recovery_mode(RecoveryMode::Salvage)).expect("salvage opens");
    let records = read_all(&wal);
    assert_eq!(lsns(&records), expected);
    records
}

/// Opens the log in the default mode (`what` says why it must open); asserts it reads back
/// the records `expected`.
fn assert_opens_by_default(sim: &Arc<SimStorage>, expected: &[u64], what: &str) {
    let wal = Wal::open(DIR, options(sim)).expect(what);
    assert_eq!(lsns(&read_all(&wal)), expected);
}

/// **`Salvage` refused a sealed segment that was cut short.**
///
/// Found by the `recover_dir` fuzz target's seed corpus: with the records at the end of a
/// sealed segment gone (the file truncated at a frame boundary), every mode, `Salvage`
/// included, refused to open with "segment starts at LSN 8, but the previous one ends
/// before LSN 4". DESIGN.md promises that `Salvage` records such a gap and goes on, as it
/// does for a missing segment. It now does, and writes the gap to the ledger (`jump`), so
/// that later opens in any mode accept it.
#[test]
fn salvage_records_a_gap_after_a_segment_cut_short() {
    let sim = SimStorage::new(6);
    let wal = Wal::open(DIR, options(&sim)).unwrap();
    let first: Vec<u64> = (0..5)
        .map(|_| wal.append(Record::new(&[8; 10_000])).unwrap().lsn)
        .collect();
    let second = wal.append(Record::new(&[9; 60_000])).unwrap().lsn; // in segment 2
    wal.close().unwrap();
    drop(wal);
    // Lose the last two records of the sealed segment 1.
    damage_segment(&sim, |file, _| {
        file.set_len(SEGMENT_HEADER_BYTES as u64 + 3 * 10_017)
            .unwrap();
    });
    assert_refused_by_default(&sim);
    let kept = vec![first[0], first[1], first[2], second];
    open_salvaged(&sim, &kept);
    assert_opens_by_default(&sim, &kept, "the default mode accepts the salvaged gap");
}

/// **Reading a salvaged active segment overflowed (and could skip records).**
///
/// Found by the `recover_dir` seed corpus in a debug build: "attempt to add with overflow"
/// in `WalReader::bytes_at`. To skip a range an earlier salvage quarantined, the reader asks
/// for the rest of the segment with `need = usize::MAX`, and `offset + need` overflowed. In
/// a release build the sum wrapped, a window holding only a chunk of the segment passed for
/// enough, and the skip could miss the records after a long damaged range. The sum now
/// saturates.
#[test]
fn reading_past_a_salvaged_range_in_the_active_segment() {
    let sim = SimStorage::new(7);
    let written = one_segment_log(&sim, 6, 300);
    damage_segment(&sim, |file, _| {
        // Flip a payload bit of record 3.
        let at = SEGMENT_HEADER_BYTES as u64 + 2 * 317 + 100;
        file.write_all_at(&[0x55], at).unwrap();
    });
    open_salvaged(&sim, &without(&written, 3));
}

/// **After a salvage, readers stopped at a zeroed frame header and lost the records after
/// it.**
///
/// Found by the `recover_dir` seed corpus: zeroing bytes in the middle of a segment made a
/// frame's header all zeros (its length was 0 already). Recovery saw the valid frames after
/// it and `Salvage` quarantined the range and kept them, but the reader took the zero
/// header for the end of the segment and went on to the next one, so `read_from` silently
/// skipped every record after the range. The reader now looks for the next valid frame when
/// a zero header comes before the records it still expects.
#[test]
fn readers_resume_after_a_salvaged_zeroed_header() {
    let sim = SimStorage::new(8);
    let written = one_segment_log(&sim, 6, 0);
    damage_segment(&sim, |file, _| {
        // Record 3's header (17 bytes, payload length 0) becomes zeros.
        file.write_all_at(&[0; 17], frame_start(3, 17) as u64)
            .unwrap();
    });
    assert_refused_by_default(&sim);
    open_salvaged(&sim, &without(&written, 3));
}

/// **After a salvage, readers returned stale frames out of order.**
///
/// Found by the `recover_dir` fuzz target within a minute: a copy of record 6's frame lay
/// where record 3 had been. Recovery rightly treated it as damage (its LSN was not the one
/// expected there) and `Salvage` skipped it, but the reader accepted any frame with a valid
/// checksum, whatever its LSN, and returned records 1, 2, 6, 4, 5, 6. FORMAT.md says the
/// reader checks that each frame has the next expected LSN; it now does, and skips a frame
/// with any other LSN as recovery did.
#[test]
fn readers_skip_stale_frames_in_a_salvaged_range() {
    let sim = SimStorage::new(9);
    let written = one_segment_log(&sim, 6, 20);
    let frame = 37;
    // Record 6's frame, byte for byte, where record 3 was.
    let bytes = damage_segment(&sim, |file, bytes| copy_frame(file, bytes, frame, 6, 3));
    open_salvaged(&sim, &without(&written, 3));
    // The frame is what it looks like: a valid frame of record 6.
    let salt = groupwal::format::SegmentHeader::decode(&bytes)
        .unwrap()
        .salt;
    let at6 = frame_start(6, frame);
    assert_eq!(
        &bytes[at6..at6 + frame],
        &encode_frame(6, salt, None, &[6; 20])[..]
    );
}

/// **Extending a short active segment brought a cut-off frame back to life.**
///
/// Found by the `recover_dir` fuzz target in CI, right after segment recycling
/// (`fuzz/regressions/recover_dir/salvage-then-default-zero-header`): after a `Salvage`
/// open, the default open refused the log with "zeroed frame header followed by valid
/// frames". The active segment was shorter than `segment_bytes` and ended in a torn frame,
/// then a frame whose zero-filled payload the end of the file cut short. Recovery rightly
/// called the torn frame the end of the log (the cut-off frame was not valid) and cut it with
/// an end marker; it used to zero everything after it, but since recycling the cut writes one
/// marker. Opening then gave the segment its full size with zeros, which completed the
/// cut-off frame: a valid frame after the end, which the next open reports. Before a short
/// active segment is extended, what lies after the end of its records now goes first.
#[test]
fn extending_a_short_active_segment_resurrects_no_frame() {
    let sim = SimStorage::new(9);
    let kept = one_segment_log(&sim, 1, 100);
    let wal = Wal::open(DIR, options(&sim)).unwrap();
    wal.append(Record::new(&[3; 100])).unwrap();
    wal.append(Record::new(&[0; 2000])).unwrap();
    wal.close().unwrap();
    drop(wal);
    let (file, bytes) = segment_bytes(&sim);
    // Record 2 torn (a bit flipped in its payload), record 3 cut off by the end of the file
    // in the middle of its zeros.
    let second = SEGMENT_HEADER_BYTES + 117;
    let third = second + 117;
    let mut damaged = bytes[..third + 17 + 1000].to_vec();
    damaged[second + 17 + 50] ^= 1;
    file.set_len(0).unwrap();
    file.write_all_at(&damaged, 0).unwrap();
    file.sync_data().unwrap();
    drop(file);

    for mode in [RecoveryMode::Salvage, RecoveryMode::TolerateTornTail] {
        let wal = Wal::open(DIR, options(&sim).recovery_mode(mode))
            .unwrap_or_else(|e| panic!("{mode:?} open: {e}"));
        assert_eq!(lsns(&read_all(&wal)), kept, "{mode:?}");
        drop(wal);
    }
    let wal = Wal::open(DIR, options(&sim).recovery_mode(RecoveryMode::Strict))
        .expect("a cut tail leaves nothing that looks like a record");
    assert_eq!(lsns(&read_all(&wal)), kept);
}

/// **`Salvage` stepped over the intact record that followed a stale copy.**
///
/// Found by the `recover_dir` fuzz target (`fuzz/regressions/recover_dir/
/// salvage-kept-stale-copy-dropped-next`): record 1 was damaged, an exact copy of its frame
/// lay where record 2 had been, and record 3 was intact. `Salvage` resumed at the copy (a
/// valid frame of the LSN it expected) and then met record 3 while expecting LSN 2. A valid
/// frame with another LSN counted as stale, so it was stepped over, and the intact record 3
/// was dropped. But a later LSN is where records resume after a gap, unless a frame of an
/// LSN in between follows it (then it is a stale copy of a later record, the case of
/// `readers_skip_stale_frames_in_a_salvaged_range`). Recovery and readers now decide
/// alike, by that rule.
#[test]
fn salvage_keeps_the_record_after_a_stale_copy() {
    let sim = SimStorage::new(10);
    let written = one_segment_log(&sim, 8, 20);
    let frame = 37;
    damage_segment(&sim, |file, bytes| {
        // Record 1 damaged; an exact copy of its frame where record 2 was.
        copy_frame(file, bytes, frame, 1, 2);
        let at1 = frame_start(1, frame);
        file.write_all_at(&[bytes[at1 + 20] ^ 4], at1 as u64 + 20)
            .unwrap();
    });
    assert_refused_by_default(&sim);
    let expected = without(&written, 2);
    let records = open_salvaged(&sim, &expected);
    assert_eq!(
        records[0].payload,
        vec![1; 20],
        "the copy is record 1's frame"
    );
    assert_opens_by_default(&sim, &expected, "the salvaged log opens by default");
}
