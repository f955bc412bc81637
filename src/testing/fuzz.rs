//! The bodies of the fuzz targets in `fuzz/fuzz_targets/` and their seed corpora. Each body
//! panics (with a description) on a violated property; the fuzz targets only call them, and
//! `tests/sim_model.rs` runs them over the seed corpora so that `cargo test` covers them
//! without cargo-fuzz.

use super::gen::{ops_from_bytes, ops_to_bytes, random_ops};
use super::model::{run_ops, LOG_DIR};
use crate::format::{
    decode_frame, encode_frame, peek_frame_len, peek_lsn, FrameError, SegmentHeader,
    FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::io::sim::SimStorage;
use crate::io::{OpenMode, Storage};
use crate::{CorrelationId, Error, LogRecord, Record, RecoveryMode, Wal, WalOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The fuzz targets, by name.
pub const TARGETS: [&str; 3] = ["frame_decode", "recover_dir", "sim_model"];

/// Runs the body of fuzz target `target` on `data`.
///
/// # Panics
///
/// On a violated property, or if `target` is not one of [`TARGETS`].
pub fn run_target(target: &str, data: &[u8]) {
    match target {
        "frame_decode" => frame_decode(data),
        "recover_dir" => recover_dir(data),
        "sim_model" => sim_model(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// Reads fuzzer bytes front to back; missing bytes read as zero.
struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

// ----- frame_decode -----

/// `frame_decode`: 8 bytes of salt, then bytes to decode. The decoder never panics; a frame
/// it accepts re-encodes to exactly the bytes it was read from, and the peek functions agree
/// with it. The same for the segment header.
pub fn frame_decode(data: &[u8]) {
    let mut salt = [0u8; 8];
    let head = data.len().min(8);
    salt[..head].copy_from_slice(&data[..head]);
    let salt = u64::from_le_bytes(salt);
    let bytes = &data[head..];
    match decode_frame(bytes, salt) {
        Ok(frame) => {
            assert!(frame.lsn >= 1, "accepted a frame with LSN 0");
            assert!(frame.frame_len <= bytes.len(), "frame_len past the input");
            let again = encode_frame(frame.lsn, salt, frame.correlation_id, frame.payload);
            assert_eq!(
                again,
                &bytes[..frame.frame_len],
                "an accepted frame must re-encode to the same bytes"
            );
            assert_eq!(peek_lsn(bytes), Some(frame.lsn), "peek_lsn disagrees");
            assert_eq!(
                peek_frame_len(bytes),
                Some(frame.frame_len),
                "peek_frame_len disagrees"
            );
        }
        Err(FrameError::EndOfLog) => {
            let n = bytes.len().min(FRAME_HEADER_BYTES);
            assert!(
                bytes[..n].iter().all(|&b| b == 0),
                "EndOfLog for a header that is not all zeros"
            );
        }
        Err(_) => {}
    }
    if let Ok(header) = SegmentHeader::decode(bytes) {
        assert_eq!(
            header.encode()[..],
            bytes[..SEGMENT_HEADER_BYTES],
            "an accepted segment header must re-encode to the same bytes"
        );
    }
}

// ----- recover_dir -----

/// A record as the generator wrote it.
#[derive(Clone, Debug)]
struct Original {
    segment: usize,
    offset: usize,
    frame_len: usize,
    lsn: u64,
    payload: Vec<u8>,
    correlation_id: Option<CorrelationId>,
}

impl Original {
    fn matches(&self, lsn: u64, payload: &[u8], id: Option<CorrelationId>) -> bool {
        self.lsn == lsn && self.payload == payload && self.correlation_id == id
    }
}

/// A log directory built from fuzzer bytes: valid segments, then damage.
struct DirCase {
    first_seq: u64,
    headers: Vec<SegmentHeader>,
    /// The files as written, before damage.
    clean: Vec<Vec<u8>>,
    /// End of the frames in each clean file (zeros follow).
    frames_end: Vec<usize>,
    /// The damaged files (`None`: removed).
    files: Vec<Option<Vec<u8>>>,
    originals: Vec<Original>,
}

fn pattern(kind: u8, lsn: u64, len: usize) -> Vec<u8> {
    match kind % 3 {
        0 => vec![0; len],
        1 => vec![0xff; len],
        _ => {
            let mut v = vec![0; len];
            fastrand::Rng::with_seed(lsn).fill(&mut v);
            v
        }
    }
}

impl DirCase {
    /// Input layout: segments (1 + b % 4), salt seed, first LSN selector, first segment
    /// number selector; per segment: records (b % 12), per record a length byte and a
    /// pattern byte (bit 0: correlation id), then zero padding (b × 16 bytes); then damage
    /// until the input ends: kind, segment, offset (u16), length, and data bytes for the
    /// kinds that write fuzzer bytes. Kind 7 with a length of 128 or more writes a frame of
    /// the segment under another salt (the stale bytes of a recycled file), below 128 it
    /// pads with zeros.
    fn build(data: &[u8]) -> DirCase {
        let mut c = Cursor { data };
        let n = 1 + (c.u8() % 4) as usize;
        let mut salts = fastrand::Rng::with_seed(c.u8() as u64);
        let mut lsn = 1 + (c.u8() % 4) as u64 * 1000;
        let first_seq = 1 + (c.u8() % 3) as u64;
        let mut case = DirCase {
            first_seq,
            headers: Vec::new(),
            clean: Vec::new(),
            frames_end: Vec::new(),
            files: Vec::new(),
            originals: Vec::new(),
        };
        for s in 0..n {
            // Distinct salts: frames of one segment never validate in another.
            let header = SegmentHeader {
                segment_seq: first_seq + s as u64,
                first_lsn: lsn,
                salt: (salts.u64(..) & !0xf) | s as u64,
            };
            let mut bytes = header.encode().to_vec();
            for _ in 0..c.u8() % 12 {
                let l = c.u8();
                let pat = c.u8();
                let len = match l >> 6 {
                    0 => (l & 63) as usize,
                    1 => (l & 63) as usize * 4,
                    2 => (l & 63) as usize * 16,
                    _ => 0,
                };
                let id = (pat & 1 == 1).then(|| CorrelationId(lsn as u128 * 31 + 7));
                let payload = pattern(pat >> 1, lsn, len);
                let frame = encode_frame(lsn, header.salt, id, &payload);
                case.originals.push(Original {
                    segment: s,
                    offset: bytes.len(),
                    frame_len: frame.len(),
                    lsn,
                    payload,
                    correlation_id: id,
                });
                bytes.extend_from_slice(&frame);
                lsn += 1;
            }
            case.frames_end.push(bytes.len());
            let pad = c.u8() as usize * 16;
            bytes.resize(bytes.len() + pad, 0);
            case.headers.push(header);
            case.clean.push(bytes);
        }
        case.files = case.clean.iter().cloned().map(Some).collect();
        while !c.is_empty() {
            let kind = c.u8() % 8;
            let s = c.u8() as usize % n;
            let off = c.u16() as usize;
            let len = c.u8() as usize;
            let originals_here: Vec<&Original> =
                case.originals.iter().filter(|o| o.segment == s).collect();
            let original = originals_here.get(len % originals_here.len().max(1));
            let Some(file) = case.files[s].as_mut() else {
                continue;
            };
            let off = off % (file.len() + 1);
            match kind {
                // Overwrite with fuzzer bytes.
                0 => write_at(file, off, c.bytes(len)),
                // Fuzzer bytes after the end: a valid prefix with an arbitrary tail.
                1 => file.extend_from_slice(c.bytes(len)),
                2 => file.truncate(off),
                3 => {
                    if off < file.len() {
                        file[off] ^= 1 << (len % 8);
                    }
                }
                4 => {
                    let end = (off + len).min(file.len());
                    file[off..end].fill(0);
                }
                5 => case.files[s] = None,
                // A stale copy of one of the segment's own frames somewhere else.
                6 => {
                    if let Some(o) = original {
                        write_at(file, off, &case.clean[s][o.offset..o.offset + o.frame_len]);
                    }
                }
                // The same record under another salt: what a recycled segment file holds
                // after its end marker (frames of the segment it was before).
                _ if len >= 128 => {
                    if let Some(o) = original {
                        let salt = case.headers[s].salt ^ 0x5a5a_0000_0000_0000;
                        write_at(
                            file,
                            off,
                            &encode_frame(o.lsn, salt, o.correlation_id, &o.payload),
                        );
                    }
                }
                _ => file.resize(file.len() + len * 16, 0),
            }
        }
        case
    }

    fn path(&self, s: usize) -> String {
        format!("{LOG_DIR}/{:020}.wal", self.first_seq + s as u64)
    }

    /// The damaged directory on a fresh simulated storage, everything durable.
    fn storage(&self) -> Arc<SimStorage> {
        let sim = SimStorage::new(0);
        sim.create_dir_all(Path::new(LOG_DIR)).expect("mkdir");
        for (s, file) in self.files.iter().enumerate() {
            if let Some(bytes) = file {
                let f = sim
                    .open_file(Path::new(&self.path(s)), OpenMode::CreateNew)
                    .expect("create segment");
                if !bytes.is_empty() {
                    f.write_all_at(bytes, 0).expect("write segment");
                }
                f.sync_all().expect("sync segment");
            }
        }
        sim.sync_dir(Path::new(LOG_DIR)).expect("sync dir");
        sim
    }

    /// Whether original `o` is still there byte for byte, under its segment's header.
    fn intact(&self, o: &Original) -> bool {
        let Some(file) = &self.files[o.segment] else {
            return false;
        };
        SegmentHeader::decode(file).ok() == Some(self.headers[o.segment])
            && file.get(o.offset..o.offset + o.frame_len)
                == self.clean[o.segment].get(o.offset..o.offset + o.frame_len)
    }

    /// Only the end of the last segment, after its frames, was damaged.
    fn tail_only(&self) -> bool {
        let last = self.clean.len() - 1;
        self.files.iter().enumerate().all(|(s, f)| match f {
            None => false,
            Some(f) if s < last => *f == self.clean[s],
            Some(f) => f.get(..self.frames_end[s]) == Some(&self.clean[s][..self.frames_end[s]]),
        })
    }

    /// Looks for valid frames the generator did not put where they are. Returns
    /// (`foreign`: one differs from the original of its LSN, so record contents cannot be
    /// checked; `displaced`: one could be taken for a later record or overlaps an intact
    /// one, so completeness cannot be checked). Both stay false unless the damage itself
    /// forged a checksum or copied a frame where it could be taken for the next one.
    fn valid_frames_elsewhere(&self) -> (bool, bool) {
        let (mut foreign, mut displaced) = (false, false);
        let first_lsn = self.headers[0].first_lsn;
        for (s, file) in self.files.iter().enumerate() {
            let Some(bytes) = file else { continue };
            let Ok(header) = SegmentHeader::decode(bytes) else {
                continue;
            };
            if header != self.headers[s] {
                // A forged header: its frames mean whatever it says.
                return (true, true);
            }
            let here: Vec<&Original> = self.originals.iter().filter(|o| o.segment == s).collect();
            for q in SEGMENT_HEADER_BYTES..bytes.len() {
                match peek_lsn(&bytes[q..]) {
                    None => break,
                    Some(0) => continue,
                    Some(_) => {}
                }
                let Ok(frame) = decode_frame(&bytes[q..], header.salt) else {
                    continue;
                };
                let (lsn, payload, id) = (frame.lsn, frame.payload, frame.correlation_id);
                if here
                    .iter()
                    .any(|o| o.offset == q && o.matches(lsn, payload, id))
                {
                    continue;
                }
                let original = lsn
                    .checked_sub(first_lsn)
                    .and_then(|i| self.originals.get(i as usize));
                if !original.is_some_and(|o| o.matches(lsn, payload, id)) {
                    foreign = true;
                }
                // Recovery could take it for the next record if its LSN is above those of
                // the frames that end before it, and taking it could skip an intact frame it
                // overlaps.
                let before = here
                    .iter()
                    .filter(|o| o.offset + o.frame_len <= q)
                    .map(|o| o.lsn)
                    .max()
                    .unwrap_or(0);
                let end = q + frame.frame_len;
                let overlaps = here
                    .iter()
                    .any(|o| o.offset < end && q < o.offset + o.frame_len && self.intact(o));
                if lsn > before || overlaps {
                    displaced = true;
                }
            }
        }
        (foreign, displaced)
    }

    fn original(&self, lsn: u64) -> Option<&Original> {
        let i = lsn.checked_sub(self.headers[0].first_lsn)?;
        self.originals.get(i as usize)
    }
}

fn write_at(file: &mut Vec<u8>, off: usize, data: &[u8]) {
    if file.len() < off + data.len() {
        file.resize(off + data.len(), 0);
    }
    file[off..off + data.len()].copy_from_slice(data);
}

fn dir_options(sim: &Arc<SimStorage>, mode: RecoveryMode) -> WalOptions {
    let storage: Arc<dyn Storage> = sim.clone();
    WalOptions::default()
        .storage(storage)
        .segment_bytes(64 << 10)
        .record_bytes_max(8 << 10)
        .recovery_mode(mode)
        .lock_hold_max(Duration::from_secs(10))
        .sync_interval(Duration::from_secs(3600))
        .sync_interval_jitter(Duration::ZERO)
        .prepare_next_segment(false)
        .seed(Some(1))
}

fn read_all(wal: &Wal, what: &str) -> Vec<LogRecord> {
    wal.read_from(0)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{what}: reading a log that opened failed: {e}"))
}

fn lsns(records: &[LogRecord]) -> Vec<u64> {
    records.iter().map(|r| r.lsn).collect()
}

/// `recover_dir`: a log directory of valid segments with damage from the fuzzer (valid
/// prefixes with arbitrary tails, overwrites, truncations, bit flips, zeroed ranges,
/// removed segments, stale frame copies). Opening never panics, in any mode. Default and
/// `Strict` open to a dense run of the original records (a prefix of the log, possibly
/// missing removed leading segments) or refuse with a corruption error; a log damaged only
/// after its last frame opens complete. Read-only opening agrees with writable opening.
/// After a default open, appends continue the log and nothing stale reappears after them.
/// `Salvage` always opens, keeps every intact frame, returns nothing else, and leaves a log
/// that the default mode then opens to the same records.
pub fn recover_dir(data: &[u8]) {
    let case = DirCase::build(data);
    let base = case.storage();
    let (foreign, displaced) = case.valid_frames_elsewhere();
    let clean = !foreign && !displaced;

    let check_records = |records: &[LogRecord], dense: bool, what: &str| {
        for w in records.windows(2) {
            if dense {
                assert_eq!(w[1].lsn, w[0].lsn + 1, "{what}: LSNs not dense");
            } else {
                assert!(w[1].lsn > w[0].lsn, "{what}: LSNs not increasing");
            }
        }
        if !foreign {
            for r in records {
                let o = case
                    .original(r.lsn)
                    .unwrap_or_else(|| panic!("{what}: invented a record at LSN {}", r.lsn));
                assert!(
                    o.matches(r.lsn, &r.payload, r.correlation_id),
                    "{what}: record at LSN {} is not the one written there",
                    r.lsn
                );
            }
        }
        if clean {
            let have: std::collections::BTreeSet<u64> = records.iter().map(|r| r.lsn).collect();
            let first = records.first().map_or(u64::MAX, |r| r.lsn);
            for o in case.originals.iter().filter(|o| case.intact(o)) {
                // Dense modes may start late (a removed leading segment looks truncated),
                // but never drop an intact record after the start.
                if dense && o.lsn < first {
                    continue;
                }
                assert!(
                    have.contains(&o.lsn),
                    "{what}: intact record at LSN {} (segment {}, offset {}) was dropped",
                    o.lsn,
                    case.first_seq + o.segment as u64,
                    o.offset
                );
            }
        }
    };

    // Default mode, writable.
    let sim = base.fork();
    let tolerant = match Wal::open(LOG_DIR, dir_options(&sim, RecoveryMode::TolerateTornTail)) {
        Ok(wal) => {
            let records = read_all(&wal, "default open");
            check_records(&records, true, "default open");
            if let Some(first) = records.first() {
                assert_eq!(first.lsn, wal.first_lsn(), "first record is not first_lsn");
            }
            assert_eq!(
                records.last().map_or(wal.first_lsn(), |r| r.lsn + 1),
                wal.next_lsn(),
                "next_lsn does not follow the last record"
            );
            // Appends continue the log; a clean reopen shows them and nothing stale.
            let next = wal.next_lsn();
            let appended = [b"after recovery".to_vec(), vec![0xab; 100]];
            for (i, p) in appended.iter().enumerate() {
                let r = wal
                    .append(Record::new(p))
                    .unwrap_or_else(|e| panic!("append after recovery failed: {e}"));
                assert_eq!(r.lsn, next + i as u64, "append after recovery: LSN");
            }
            wal.close().expect("close after recovery");
            drop(wal);
            let wal = Wal::open(LOG_DIR, dir_options(&sim, RecoveryMode::TolerateTornTail))
                .unwrap_or_else(|e| panic!("reopening after appends failed: {e}"));
            let again = read_all(&wal, "reopen after appends");
            assert_eq!(
                again.len(),
                records.len() + 2,
                "reopen after appends: count"
            );
            assert_eq!(again[..records.len()], records[..], "reopen after appends");
            for (i, p) in appended.iter().enumerate() {
                assert_eq!(again[records.len() + i].payload, *p, "appended record");
            }
            Some(records)
        }
        Err(e) => {
            assert!(
                matches!(e, Error::Corruption { .. }),
                "default open may only refuse with Corruption, got: {e}"
            );
            assert!(
                !(clean && case.tail_only()),
                "a log damaged only after its last frame must open: {e}"
            );
            None
        }
    };

    // Read-only agrees with writable.
    let sim = base.fork();
    match Wal::open_read_only(LOG_DIR, dir_options(&sim, RecoveryMode::TolerateTornTail)) {
        Ok(wal) => {
            let records = read_all(&wal, "read-only open");
            match &tolerant {
                Some(t) => assert_eq!(lsns(&records), lsns(t), "read-only and writable differ"),
                None => panic!("read-only open succeeded where writable open failed"),
            }
        }
        Err(e) => {
            let no_segments = case.files.iter().all(Option::is_none);
            assert!(
                tolerant.is_none() || no_segments,
                "read-only open failed where writable open succeeded: {e}"
            );
        }
    }

    // Strict: the same, or a refusal.
    let sim = base.fork();
    match Wal::open(LOG_DIR, dir_options(&sim, RecoveryMode::Strict)) {
        Ok(wal) => {
            let records = read_all(&wal, "strict open");
            check_records(&records, true, "strict open");
            match &tolerant {
                Some(t) => assert_eq!(lsns(&records), lsns(t), "strict and default differ"),
                None => panic!("strict open succeeded where the default mode refused"),
            }
        }
        Err(e) => assert!(
            e.is_corruption(),
            "strict open may only refuse with Corruption or TornTail, got: {e}"
        ),
    }

    // Salvage: always opens, keeps every intact record, and leaves a log the default mode
    // opens.
    let sim = base.fork();
    match Wal::open(LOG_DIR, dir_options(&sim, RecoveryMode::Salvage)) {
        Ok(wal) => {
            let records = read_all(&wal, "salvage open");
            check_records(&records, false, "salvage open");
            if let Some(t) = &tolerant {
                assert_eq!(
                    lsns(&records),
                    lsns(t),
                    "salvage lost what the default mode kept"
                );
            }
            drop(wal);
            let wal = Wal::open(LOG_DIR, dir_options(&sim, RecoveryMode::TolerateTornTail))
                .unwrap_or_else(|e| panic!("default open after salvage failed: {e}"));
            let again = read_all(&wal, "default open after salvage");
            assert_eq!(
                lsns(&again),
                lsns(&records),
                "default open after salvage differs"
            );
        }
        Err(e) => assert!(
            !clean,
            "salvage must open a damaged log (no forged frames here): {e}"
        ),
    }
}

// ----- sim_model -----

/// `sim_model`: fuzzer bytes decoded into a seed and operations ([`ops_from_bytes`]), run
/// against the model ([`run_ops`]).
pub fn sim_model(data: &[u8]) {
    let (seed, ops) = ops_from_bytes(data);
    if let Err(e) = run_ops(seed, &ops) {
        panic!("{e}");
    }
}

// ----- seed corpora -----

/// Seed inputs for fuzz target `target`: valid inputs of many shapes, so the fuzzer starts
/// from the interesting part of the input space.
pub fn seed_corpus(target: &str) -> Vec<Vec<u8>> {
    match target {
        "frame_decode" => frame_corpus(),
        "recover_dir" => dir_corpus(),
        "sim_model" => (0..32u64)
            .map(|seed| ops_to_bytes(seed, &random_ops(seed, 20 + (seed as usize * 7) % 100)))
            .collect(),
        other => panic!("no fuzz target {other}"),
    }
}

fn frame_corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for (i, len) in [0usize, 1, 16, 17, 100, 1000].into_iter().enumerate() {
        for id in [None, Some(CorrelationId(0x0123_4567_89ab_cdef_u128 << 32))] {
            let salt = rng.u64(..);
            let mut payload = vec![0u8; len];
            rng.fill(&mut payload);
            let frame = encode_frame(1 + i as u64 * 1000, salt, id, &payload);
            let mut v = salt.to_le_bytes().to_vec();
            v.extend_from_slice(&frame);
            out.push(v.clone());
            // Torn: cut short, and followed by more bytes.
            out.push(v[..v.len() - 1].to_vec());
            v.extend_from_slice(&[0u8; 17]);
            out.push(v);
        }
    }
    out.push(vec![0u8; 8 + 17]);
    let header = SegmentHeader {
        segment_seq: 3,
        first_lsn: 77,
        salt: 0x5eed,
    };
    let mut v = 0x5eedu64.to_le_bytes().to_vec();
    v.extend_from_slice(&header.encode());
    out.push(v);
    out
}

/// Builds a `recover_dir` input: the given segments (records as (length byte, pattern
/// byte), padding byte) and damage (kind, segment, offset, length, data).
fn dir_input(
    first: [u8; 4],
    segments: &[(&[(u8, u8)], u8)],
    damage: &[(u8, u8, u16, u8, &[u8])],
) -> Vec<u8> {
    let mut v = first.to_vec();
    v[0] = (segments.len() as u8).saturating_sub(1);
    for (records, pad) in segments {
        v.push(records.len() as u8);
        for (l, p) in *records {
            v.push(*l);
            v.push(*p);
        }
        v.push(*pad);
    }
    for (kind, s, off, len, data) in damage {
        v.push(*kind);
        v.push(*s);
        v.extend_from_slice(&off.to_le_bytes());
        v.push(*len);
        v.extend_from_slice(data);
    }
    v
}

fn dir_corpus() -> Vec<Vec<u8>> {
    let three: &[(u8, u8)] = &[(10, 4), (70, 5), (140, 2)];
    let many: &[(u8, u8)] = &[(5, 4), (0, 1), (200, 4), (63, 2), (1, 0), (129, 5), (9, 4)];
    let zeros: &[(u8, u8)] = &[(20, 0), (20, 0), (20, 0)];
    let garbage: &[u8] = &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa];
    let mut out = vec![
        // Undamaged logs.
        dir_input([0, 1, 0, 0], &[(three, 4)], &[]),
        dir_input([0, 2, 1, 2], &[(many, 8), (three, 8), (zeros, 2)], &[]),
        dir_input([0, 3, 0, 0], &[(&[], 0)], &[]),
        // A valid prefix with a garbage tail.
        dir_input([0, 4, 0, 0], &[(three, 2)], &[(1, 0, 0, 10, garbage)]),
        dir_input(
            [0, 4, 0, 0],
            &[(three, 0), (many, 0)],
            &[(1, 1, 0, 10, garbage)],
        ),
        // Torn last frame; a sealed segment cut short.
        dir_input([0, 5, 0, 0], &[(many, 4)], &[(2, 0, 300, 0, &[])]),
        dir_input(
            [0, 5, 0, 0],
            &[(many, 4), (three, 4)],
            &[(2, 0, 200, 0, &[])],
        ),
        // Bit rot in the middle; zeroed frames with valid ones after.
        dir_input([0, 6, 0, 0], &[(many, 4)], &[(3, 0, 100, 3, &[])]),
        dir_input(
            [0, 6, 0, 0],
            &[(many, 4), (three, 1)],
            &[(4, 0, 90, 40, &[])],
        ),
        // A segment removed; a header damaged.
        dir_input(
            [0, 7, 0, 0],
            &[(three, 1), (three, 1), (three, 1)],
            &[(5, 1, 0, 0, &[])],
        ),
        dir_input(
            [0, 7, 0, 0],
            &[(three, 1), (three, 1)],
            &[(3, 1, 20, 0, &[])],
        ),
        // A stale copy of a frame after the end, and in the middle.
        dir_input([0, 8, 0, 0], &[(many, 0)], &[(6, 0, 65535, 2, &[])]),
        dir_input([0, 8, 0, 0], &[(many, 0)], &[(6, 0, 150, 5, &[])]),
        // Fuzzer bytes over the middle.
        dir_input(
            [0, 9, 0, 0],
            &[(three, 4), (three, 4)],
            &[(0, 0, 120, 10, garbage)],
        ),
        // Recycled files: frames of another salt after the end (`three` ends at 357, its
        // padding of 64 zeros holds an end marker), in the active and in a sealed segment;
        // and right after the last frame, with no marker between (a torn tail).
        dir_input([0, 10, 0, 0], &[(three, 4)], &[(7, 0, 380, 130, &[])]),
        dir_input(
            [0, 10, 0, 0],
            &[(three, 4), (three, 4)],
            &[(7, 0, 380, 131, &[]), (7, 1, 400, 200, &[])],
        ),
        dir_input([0, 10, 0, 0], &[(three, 0)], &[(7, 0, 357, 129, &[])]),
    ];
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..24 {
        let len = rng.usize(4..200);
        out.push(std::iter::repeat_with(|| rng.u8(..)).take(len).collect());
    }
    out
}
