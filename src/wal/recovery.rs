//! Recovery on open: scan every segment, verify every frame, and decide what damaged bytes
//! are. `docs/DESIGN.md` ("Recovery") explains each case.
//!
//! - A zeroed frame header with no valid later frame is the end of a segment's records,
//!   whatever bytes follow it: every group is written with an *end marker* (a zeroed header)
//!   after its last frame, and a recycled segment file holds stale bytes after it.
//! - A bad frame with no valid later frame at the end of the last segment is a *torn tail*:
//!   a write the crash cut short, never acknowledged as durable. It is cut (an end marker
//!   written over its header) before new appends, or refused in `Strict` mode.
//! - A bad frame followed by a valid later frame, a bad frame in a sealed segment, a bad
//!   segment header, or a missing or out-of-order segment is *corruption*: opening fails,
//!   naming segment, offset and reason, unless the mode is `Salvage`.
//! - `Salvage` copies the bad bytes into `quarantine/`, writes a report line, records the
//!   skip in `quarantine/ledger` (so later opens in any mode accept the gap it leaves), and
//!   continues after them. Skipped LSNs are never reused.

use crate::error::{Error, Result};
use crate::format::{
    decode_frame, peek_frame_len, peek_lsn, FrameError, SegmentHeader, FRAME_HEADER_BYTES, OFF_LSN,
    SEGMENT_HEADER_BYTES,
};
use crate::io::{OpenMode, Storage};
use crate::wal::segment::{is_free_file_name, parse_segment_file_name, Segment, TMP_SUFFIX};
use crate::wal::RecoveryMode;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the folder that holds quarantined bytes.
pub const QUARANTINE_DIR: &str = "quarantine";
const LEDGER_FILE: &str = "ledger";
const REPORT_FILE: &str = "report.txt";

/// What recovery found and did when the log was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments scanned.
    pub segments: usize,
    /// Valid records found.
    pub records: u64,
    /// Bytes of records verified.
    pub bytes_scanned: u64,
    /// An incomplete record at the end of the log, cut (or, read-only, ignored).
    pub torn_tail: Option<DamagedRange>,
    /// Ranges that `Salvage` copied to `quarantine/` and skipped during this open. With
    /// `open_read_only` (a dry run), every damaged range found, copied nowhere.
    pub quarantined: Vec<DamagedRange>,
    /// Ranges skipped because an earlier salvage quarantined them (from the ledger).
    pub previously_quarantined: usize,
    /// Leftover temporary files of interrupted segment creations that were removed.
    pub temp_files_removed: usize,
}

/// A range of damaged bytes in a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRange {
    /// Segment sequence number.
    pub segment: u64,
    /// Byte offset in the segment file (0 with `len` 0 for a whole missing segment).
    pub offset: u64,
    /// Bytes in the range.
    pub len: u64,
    /// Why the bytes are not records.
    pub reason: String,
    /// Where salvage copied them, if it did.
    pub quarantine_file: Option<PathBuf>,
}

impl DamagedRange {
    /// Bytes `start..end` of segment `segment`, not (yet) copied anywhere.
    fn new(segment: u64, start: u64, end: u64, reason: String) -> DamagedRange {
        DamagedRange {
            segment,
            offset: start,
            len: end - start,
            reason,
            quarantine_file: None,
        }
    }
}

/// The log as recovery left it.
pub(crate) struct Recovered {
    /// Every segment, in order; the last is the active one.
    pub segments: Vec<Arc<Segment>>,
    /// Where the next frame goes in the last segment.
    pub tail_offset: u64,
    /// LSN of the next record.
    pub next_lsn: u64,
    /// True when appends must start a new segment (no segment, or the last one was skipped).
    pub needs_new_segment: bool,
    /// Sequence number for the next segment created.
    pub next_segment_seq: u64,
    /// Names of the freed segment files kept for reuse (`<seq>.wal.free`).
    pub pool_files: Vec<String>,
    pub report: RecoveryReport,
}

/// A skip recorded by an earlier salvage.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Skip {
    /// `len` bytes at `offset` of segment `seq` are not records; the LSN may jump after them.
    Region { seq: u64, offset: u64, len: u64 },
    /// Segment `seq` is absent; the LSN may jump at its place.
    Segment { seq: u64 },
    /// Segment `seq` starts at a higher LSN than the previous one ends before (that one was
    /// cut short); the LSN may jump at its start.
    Jump { seq: u64 },
}

impl Skip {
    fn to_line(&self) -> String {
        match self {
            Skip::Region { seq, offset, len } => format!("region {seq} {offset} {len}\n"),
            Skip::Segment { seq } => format!("segment {seq}\n"),
            Skip::Jump { seq } => format!("jump {seq}\n"),
        }
    }

    fn parse(line: &str) -> Option<Skip> {
        let mut it = line.split_ascii_whitespace();
        let kind = it.next()?;
        let mut num = || it.next()?.parse::<u64>().ok();
        match kind {
            "region" => Some(Skip::Region {
                seq: num()?,
                offset: num()?,
                len: num()?,
            }),
            "segment" => Some(Skip::Segment { seq: num()? }),
            "jump" => Some(Skip::Jump { seq: num()? }),
            _ => None,
        }
    }
}

/// How the scan of one segment ended.
enum Stop {
    /// An end-of-log header with no valid frame after it.
    End,
    /// A bad frame with no valid frame after it; damaged bytes reach `garbage_end` (the
    /// frame, if the segment holds as much as its header claims, else its header).
    Torn { reason: String, garbage_end: u64 },
    /// A bad frame with a valid frame (LSN `next_lsn`) at `resume_at`.
    Corrupt {
        reason: String,
        resume_at: u64,
        next_lsn: u64,
    },
}

/// Search window for the LSN of a valid frame after a bad one: LSNs in
/// `[expected, expected + LSN_SEARCH_WINDOW)` are candidates.
const LSN_SEARCH_WINDOW: u64 = 1 << 32;

/// Finds the first offset at or after `from` holding a valid frame whose LSN is at least
/// `min_lsn`. Cheap per position: most are rejected on their LSN field before any checksum,
/// and long runs of them without looking at each: zeros (a preallocated segment), and bytes
/// that cannot end an LSN of the window (the stale frames of a recycled segment).
pub(crate) fn find_valid_frame(
    bytes: &[u8],
    from: usize,
    salt: u64,
    min_lsn: u64,
) -> Option<(usize, u64)> {
    find_valid_frame_below(
        bytes,
        from,
        salt,
        min_lsn,
        min_lsn.saturating_add(LSN_SEARCH_WINDOW),
    )
}

/// Where the records resume after position `at` of `bytes` could not continue the run
/// expecting LSN `expected`: `found` is the LSN of the valid frame there, if it is one (else
/// it is a bad frame or a zero header). A valid frame with an earlier LSN is stale: step
/// over it. One with a later LSN is where the records resume after a gap, unless a valid
/// frame of an LSN in between follows it: then it is a stale copy of a later record, out of
/// place. Recovery and readers decide alike. Each way of guessing wrong lost an intact
/// record to `Salvage` (`tests/sim_regressions.rs`,
/// `readers_skip_stale_frames_in_a_salvaged_range` and
/// `salvage_keeps_the_record_after_a_stale_copy`).
pub(crate) fn resume_point(
    bytes: &[u8],
    at: usize,
    salt: u64,
    expected: u64,
    found: Option<u64>,
) -> Option<(usize, u64)> {
    match found {
        Some(lsn) if lsn > expected && lsn - expected < LSN_SEARCH_WINDOW => {
            Some(find_valid_frame_below(bytes, at + 1, salt, expected, lsn).unwrap_or((at, lsn)))
        }
        _ => find_valid_frame(bytes, at + 1, salt, expected),
    }
}

/// [`find_valid_frame`] for LSNs in `[min_lsn, max_lsn)`.
fn find_valid_frame_below(
    bytes: &[u8],
    from: usize,
    salt: u64,
    min_lsn: u64,
    max_lsn: u64,
) -> Option<(usize, u64)> {
    // Every LSN in the window has a zero top byte (frame header byte 15), unless the window
    // reaches 2^56: only positions 15 bytes before a zero byte can hold a candidate.
    let top_byte_zero = max_lsn <= 1 << 56;
    let mut q = from;
    loop {
        if top_byte_zero {
            q = next_zero(bytes, q + OFF_LSN + 7).checked_sub(OFF_LSN + 7)?;
        }
        let lsn = bytes.get(q..).and_then(peek_lsn)?;
        if lsn == 0 {
            // A frame's LSN is never zero: jump to the first position whose LSN field
            // reaches the next non-zero byte. The zero tail of a preallocated segment is
            // thus skipped 16 bytes at a time instead of one position at a time.
            let nonzero = next_nonzero(bytes, q + OFF_LSN);
            q = (q + 1).max(nonzero.saturating_sub(OFF_LSN + 7));
            continue;
        }
        if lsn >= min_lsn && lsn < max_lsn {
            if let Ok(frame) = decode_frame(&bytes[q..], salt) {
                return Some((q, frame.lsn));
            }
        }
        q += 1;
    }
}

/// Index of the first zero byte of `bytes` at or after `from` (`bytes.len()` if none),
/// eight bytes at a time.
fn next_zero(bytes: &[u8], from: usize) -> usize {
    let Some(rest) = bytes.get(from..) else {
        return bytes.len();
    };
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut skipped = 0;
    for chunk in rest.chunks_exact(8) {
        let w = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
        if w.wrapping_sub(ONES) & !w & HIGHS != 0 {
            break;
        }
        skipped += 8;
    }
    rest[skipped..]
        .iter()
        .position(|&b| b == 0)
        .map_or(bytes.len(), |i| from + skipped + i)
}

/// Index of the first non-zero byte of `bytes` at or after `from` (`bytes.len()` if none).
fn next_nonzero(bytes: &[u8], from: usize) -> usize {
    let Some(rest) = bytes.get(from..) else {
        return bytes.len();
    };
    let mut skipped = 0;
    for chunk in rest.chunks_exact(16) {
        if u128::from_ne_bytes(chunk.try_into().expect("16 bytes")) != 0 {
            break;
        }
        skipped += 16;
    }
    rest[skipped..]
        .iter()
        .position(|&b| b != 0)
        .map_or(bytes.len(), |i| from + skipped + i)
}

/// One past the highest LSN of the frames of a segment whose header is unusable (so its salt
/// is unknown and no checksum can be verified), or `min_lsn` if none is found: walks the
/// chain of frames from the first one by their lengths while the LSNs go up by one from a
/// value in `[min_lsn, min_lsn + LSN_SEARCH_WINDOW)`. Header damage leaves the frames
/// intact, so the walk finds them all; over garbage it stops at once or overestimates, and
/// a gap in the LSNs is harmless where a reused LSN is not.
fn lsn_after_frames(bytes: &[u8], min_lsn: u64) -> u64 {
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut next = None::<u64>;
    while let (Some(lsn), Some(len)) = (
        bytes.get(offset..).and_then(peek_lsn),
        bytes.get(offset..).and_then(peek_frame_len),
    ) {
        let plausible = match next {
            None => lsn >= min_lsn && lsn - min_lsn < LSN_SEARCH_WINDOW,
            Some(n) => lsn == n,
        };
        if !plausible || len > bytes.len() - offset {
            break;
        }
        next = Some(lsn.saturating_add(1));
        offset += len;
    }
    next.unwrap_or(min_lsn)
}

/// Offset just past a bad frame at `at`: as far as its header claims if the segment holds
/// that much, else past its header (or what is left of one). The bytes after a bad frame
/// cannot be told apart from stale bytes of a recycled file, so they are not counted.
fn bad_frame_end(bytes: &[u8], at: usize) -> usize {
    let rest = bytes.len() - at;
    match peek_frame_len(&bytes[at..]) {
        Some(len) if len <= rest => at + len,
        _ => at + rest.min(FRAME_HEADER_BYTES),
    }
}

/// Scans frames from `offset` expecting `lsn`; returns where valid frames end, the next LSN,
/// the count of records, and why the scan stopped.
fn scan_frames(
    bytes: &[u8],
    salt: u64,
    mut offset: usize,
    mut lsn: u64,
) -> (usize, u64, u64, Stop) {
    let mut records = 0;
    loop {
        let (reason, found) = match decode_frame(&bytes[offset.min(bytes.len())..], salt) {
            Ok(f) if f.lsn == lsn => {
                offset += f.frame_len;
                lsn += 1;
                records += 1;
                continue;
            }
            Ok(f) => (
                format!("frame has LSN {}, expected {lsn}", f.lsn),
                Some(f.lsn),
            ),
            Err(FrameError::EndOfLog) => (String::new(), None),
            Err(e) => (e.to_string(), None),
        };
        let stop = match resume_point(bytes, offset, salt, lsn, found) {
            Some((resume_at, next_lsn)) => Stop::Corrupt {
                reason: if reason.is_empty() {
                    "zeroed frame header followed by valid frames".to_string()
                } else {
                    reason
                },
                resume_at: resume_at as u64,
                next_lsn,
            },
            None if reason.is_empty() => Stop::End,
            None => Stop::Torn {
                reason,
                garbage_end: bad_frame_end(bytes, offset) as u64,
            },
        };
        return (offset, lsn, records, stop);
    }
}

struct Recovery<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    mode: RecoveryMode,
    writable: bool,
    /// `segment_bytes`: a writable open preallocates the active segment this far.
    segment_bytes: u64,
    skips: BTreeSet<Skip>,
    report: RecoveryReport,
}

impl Recovery<'_> {
    fn quarantine_dir(&self) -> PathBuf {
        self.dir.join(QUARANTINE_DIR)
    }

    fn corruption(segment: u64, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corruption {
            segment,
            offset,
            reason: reason.into(),
        }
    }

    fn load_ledger(&mut self) -> Result<()> {
        let path = self.quarantine_dir().join(LEDGER_FILE);
        if !self
            .storage
            .exists(&path)
            .map_err(|e| Error::io("stat", &path, e))?
        {
            return Ok(());
        }
        let file = self
            .storage
            .open_file(&path, OpenMode::ReadOnly)
            .map_err(|e| Error::io("open salvage ledger", &path, e))?;
        let text = file
            .map()
            .map_err(|e| Error::io("read salvage ledger", &path, e))?;
        // A line cut by a crash during salvage has no newline and is ignored: that salvage
        // did not finish, and the next one redoes it.
        for line in String::from_utf8_lossy(&text).lines() {
            if let Some(skip) = Skip::parse(line) {
                self.skips.insert(skip);
            }
        }
        Ok(())
    }

    /// Copies `bytes` to `quarantine/`, appends to the report and the ledger, syncs all.
    fn quarantine(&mut self, range: DamagedRange, bytes: &[u8], skip: Option<Skip>) -> Result<()> {
        let qdir = self.quarantine_dir();
        let io = |op, p: &Path, e| Error::io(op, p, e);
        self.storage
            .create_dir_all(&qdir)
            .map_err(|e| io("create quarantine folder", &qdir, e))?;
        let name = format!("{:020}-{:012}.bin", range.segment, range.offset);
        let path = qdir.join(&name);
        if !bytes.is_empty() {
            if self
                .storage
                .exists(&path)
                .map_err(|e| io("stat", &path, e))?
            {
                self.storage
                    .remove_file(&path)
                    .map_err(|e| io("replace quarantine file", &path, e))?;
            }
            let f = self
                .storage
                .open_file(&path, OpenMode::CreateNew)
                .map_err(|e| io("create quarantine file", &path, e))?;
            f.write_all_at(bytes, 0)
                .map_err(|e| io("write quarantine file", &path, e))?;
            f.sync_all()
                .map_err(|e| io("sync quarantine file", &path, e))?;
        }
        let line = format!(
            "segment={} offset={} len={} file={} reason={}\n",
            range.segment,
            range.offset,
            range.len,
            if bytes.is_empty() { "-" } else { &name },
            range.reason
        );
        self.append_line(REPORT_FILE, &line)?;
        if let Some(skip) = skip {
            self.append_line(LEDGER_FILE, &skip.to_line())?;
            self.skips.insert(skip);
        }
        // The log folder's entry for `quarantine/` was made durable by `create_dir_all`.
        self.storage
            .sync_dir(&qdir)
            .map_err(|e| io("sync quarantine folder", &qdir, e))?;
        self.report.quarantined.push(DamagedRange {
            quarantine_file: (!bytes.is_empty()).then_some(path),
            ..range
        });
        Ok(())
    }

    fn append_line(&self, file_name: &str, line: &str) -> Result<()> {
        append_line_durably(self.storage, &self.quarantine_dir(), file_name, line)
    }

    /// Deals with damage that is not a torn tail: an error, unless salvaging or already
    /// salvaged. Returns whether the caller may skip it.
    fn damage(&mut self, range: DamagedRange, bytes: &[u8], skip: Skip) -> Result<()> {
        if self.skips.contains(&skip) {
            self.report.previously_quarantined += 1;
            return Ok(());
        }
        if self.mode != RecoveryMode::Salvage {
            return Err(Self::corruption(range.segment, range.offset, range.reason));
        }
        if !self.writable {
            // A dry run: report the damage, copy and change nothing, and keep scanning so
            // that every damaged range is listed (`groupwal verify` relies on this).
            self.skips.insert(skip);
            self.report.quarantined.push(range);
            return Ok(());
        }
        self.quarantine(range, bytes, Some(skip))
    }

    /// The length of a ledger region at `offset` of segment `seq`. Builds before segment
    /// recycling recorded damage at the end of a sealed segment up to its last non-zero
    /// byte; such a line still covers the damage found there now, since the rest of the
    /// segment is skipped either way.
    fn recorded_len(&self, seq: u64, offset: u64) -> Option<u64> {
        let from = Skip::Region {
            seq,
            offset,
            len: 0,
        };
        match self.skips.range(from..).next() {
            Some(&Skip::Region {
                seq: s,
                offset: o,
                len,
            }) if (s, o) == (seq, offset) => Some(len),
            _ => None,
        }
    }

    fn run(mut self) -> Result<Recovered> {
        self.load_ledger()?;
        let names = self
            .storage
            .list_dir(self.dir)
            .map_err(|e| Error::io("list log directory", self.dir, e))?;
        let mut seqs = Vec::new();
        let mut pool_files = Vec::new();
        for name in &names {
            if let Some(seq) = parse_segment_file_name(name) {
                seqs.push(seq);
            } else if is_free_file_name(name) {
                // A freed segment kept for reuse: not part of the log, whatever it holds.
                pool_files.push(name.clone());
            } else if self.writable
                && name
                    .strip_suffix(TMP_SUFFIX)
                    .and_then(parse_segment_file_name)
                    .is_some()
            {
                // An interrupted segment creation: it was never renamed into place, so no
                // record in it was ever acknowledged. Only names segment creation makes:
                // other entries (consumer folders, a user's files) are not the log's.
                let p = self.dir.join(name);
                self.storage
                    .remove_file(&p)
                    .map_err(|e| Error::io("remove temporary segment", &p, e))?;
                self.report.temp_files_removed += 1;
            }
        }
        seqs.sort_unstable();
        if self.report.temp_files_removed > 0 {
            self.storage
                .sync_dir(self.dir)
                .map_err(|e| Error::io("sync directory", self.dir, e))?;
        }

        let mut segments: Vec<Arc<Segment>> = Vec::new();
        let mut next_lsn: Option<u64> = None;
        let mut tail_offset = SEGMENT_HEADER_BYTES as u64;
        let mut prev_seq: Option<u64> = None;
        let open_mode = if self.writable {
            OpenMode::ReadWrite
        } else {
            OpenMode::ReadOnly
        };
        // Set when the LSN may jump at the next segment (a skipped or missing segment).
        let mut lsn_gap_allowed = false;
        // The lowest next LSN that reuses none held by a skipped segment.
        let mut lsn_floor = 1;
        let last_seq = seqs.last().copied();

        for &seq in &seqs {
            if let Some(p) = prev_seq {
                for missing in p + 1..seq {
                    self.damage(
                        DamagedRange::new(missing, 0, 0, format!("segment {missing} is missing")),
                        &[],
                        Skip::Segment { seq: missing },
                    )?;
                    lsn_gap_allowed = true;
                }
            }
            prev_seq = Some(seq);
            let path = self.dir.join(crate::wal::segment::segment_file_name(seq));
            let file = self
                .storage
                .open_file(&path, open_mode)
                .map_err(|e| Error::io("open segment", &path, e))?;
            let bytes = file.map().map_err(|e| Error::io("map segment", &path, e))?;
            let header = match SegmentHeader::decode(&bytes) {
                Ok(h) if h.segment_seq == seq => h,
                other => {
                    let reason = match other {
                        Ok(h) => format!("header names segment {}", h.segment_seq),
                        Err(e) => e.to_string(),
                    };
                    self.bad_segment(seq, &bytes, reason)?;
                    lsn_gap_allowed = true;
                    // Its header cannot say which LSNs it held; its frames can. A later
                    // segment's header moves past them anyway, but if none follows, the next
                    // record must not reuse them.
                    let expected = next_lsn.unwrap_or(1);
                    lsn_floor = lsn_floor.max(lsn_after_frames(&bytes, expected));
                    continue;
                }
            };
            if let Some(expected) = next_lsn {
                let jump_ok = lsn_gap_allowed && header.first_lsn > expected;
                if header.first_lsn != expected && !jump_ok {
                    let reason = format!(
                        "segment starts at LSN {}, but the previous one ends before LSN {expected}",
                        header.first_lsn
                    );
                    if header.first_lsn < expected {
                        // LSNs would repeat: no mode can keep both segments.
                        return Err(Self::corruption(seq, 0, reason));
                    }
                    // Records are missing between the segments (the previous one was cut
                    // short): an error, unless salvaging, which records the gap (in the
                    // ledger, so later opens accept it) and goes on, as for a missing
                    // segment.
                    self.damage(
                        DamagedRange::new(seq, 0, 0, reason),
                        &[],
                        Skip::Jump { seq },
                    )?;
                }
            }
            let is_last = Some(seq) == last_seq;
            let (end, lsn, skipped_tail) = self.scan_segment(seq, &bytes, header, is_last)?;
            // Records in a skipped range at the end of a segment are gone: the next segment
            // starts after them.
            lsn_gap_allowed = skipped_tail;
            self.report.segments += 1;
            let bytes_len = bytes.len() as u64;
            drop(bytes);
            if is_last {
                tail_offset = end;
            }
            next_lsn = Some(lsn);
            let write_limit = (bytes_len).max(self.segment_bytes);
            segments.push(Arc::new(Segment::new(header, path, file, write_limit)));
        }
        Ok(Recovered {
            // When the last segment on disk was skipped, the log continues in a new one.
            needs_new_segment: segments.is_empty() || segments.last().map(|s| s.seq()) != last_seq,
            next_segment_seq: last_seq.map_or(1, |s| s + 1),
            pool_files,
            segments,
            tail_offset,
            next_lsn: next_lsn.unwrap_or(1).max(lsn_floor),
            report: self.report,
        })
    }

    /// A segment whose header is unusable: corruption, or (salvage) moved whole into
    /// quarantine.
    fn bad_segment(&mut self, seq: u64, bytes: &[u8], reason: String) -> Result<()> {
        let range = DamagedRange::new(
            seq,
            0,
            bytes.len() as u64,
            format!("bad segment header: {reason}"),
        );
        self.damage(range, bytes, Skip::Segment { seq })?;
        if self.mode == RecoveryMode::Salvage && self.writable {
            // The copy is in quarantine; take the file out of the log directory so no later
            // open trips over its header. New segments still get higher sequence numbers.
            let path = self.dir.join(crate::wal::segment::segment_file_name(seq));
            self.storage
                .remove_file(&path)
                .map_err(|e| Error::io("remove quarantined segment", &path, e))?;
            self.storage
                .sync_dir(self.dir)
                .map_err(|e| Error::io("sync directory", self.dir, e))?;
        }
        Ok(())
    }

    /// Scans one segment; returns the end offset of its records, the next LSN, and whether
    /// the segment ends in a damaged range that was skipped (so the LSN may jump after it).
    fn scan_segment(
        &mut self,
        seq: u64,
        bytes: &[u8],
        header: SegmentHeader,
        is_last: bool,
    ) -> Result<(u64, u64, bool)> {
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut lsn = header.first_lsn;
        loop {
            let (end, next, records, stop) = scan_frames(bytes, header.salt, offset, lsn);
            self.report.records += records;
            self.report.bytes_scanned += (end - offset) as u64;
            // A zeroed header with nothing valid after it ends the segment's records,
            // whatever follows: the stale bytes of a recycled file, the rest of a write whose
            // first sectors were lost, or what a torn-tail cut left. Records appended there
            // end in an end marker of their own, so those bytes are never read as records.
            match stop {
                Stop::End => return Ok((end as u64, next, false)),
                Stop::Corrupt {
                    reason,
                    resume_at,
                    next_lsn,
                } => {
                    let range = DamagedRange::new(seq, end as u64, resume_at, reason);
                    let skip = Skip::Region {
                        seq,
                        offset: range.offset,
                        len: range.len,
                    };
                    self.damage(range, &bytes[end..resume_at as usize], skip)?;
                    offset = resume_at as usize;
                    lsn = next_lsn;
                }
                Stop::Torn {
                    reason,
                    garbage_end,
                } => {
                    let range = DamagedRange::new(seq, end as u64, garbage_end, reason);
                    if !is_last {
                        let skip = Skip::Region {
                            seq,
                            offset: range.offset,
                            len: self.recorded_len(seq, range.offset).unwrap_or(range.len),
                        };
                        self.damage(range, &bytes[end..garbage_end as usize], skip)?;
                        return Ok((end as u64, next, true));
                    }
                    if self.mode == RecoveryMode::Strict {
                        return Err(Error::TornTail {
                            segment: seq,
                            offset: range.offset,
                            reason: range.reason,
                        });
                    }
                    if self.mode == RecoveryMode::Salvage && self.writable {
                        self.quarantine(range.clone(), &bytes[end..garbage_end as usize], None)?;
                    }
                    self.report.torn_tail = Some(range);
                    return Ok((end as u64, next, false));
                }
            }
        }
    }
}

/// Appends `line` to `dir/file_name` (creating it) and makes it durable: the file synced,
/// and the folder synced when the file is new. Used for quarantine reports and ledgers.
pub(crate) fn append_line_durably(
    storage: &dyn Storage,
    dir: &Path,
    file_name: &str,
    line: &str,
) -> Result<()> {
    let path = dir.join(file_name);
    let exists = storage
        .exists(&path)
        .map_err(|e| Error::io("stat", &path, e))?;
    let mode = if exists {
        OpenMode::ReadWrite
    } else {
        OpenMode::CreateNew
    };
    let f = storage
        .open_file(&path, mode)
        .map_err(|e| Error::io("open", &path, e))?;
    let len = f.len().map_err(|e| Error::io("stat", &path, e))?;
    f.write_all_at(line.as_bytes(), len)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("append durably", &path, e))?;
    if !exists {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }
    Ok(())
}

/// Recovers the log in `dir`. Writable recovery removes leftovers of interrupted segment
/// creations; cutting a torn tail is left to the caller, which owns the active segment.
pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    mode: RecoveryMode,
    writable: bool,
    segment_bytes: u64,
) -> Result<Recovered> {
    Recovery {
        storage,
        dir,
        mode,
        writable,
        segment_bytes,
        skips: BTreeSet::new(),
        report: RecoveryReport::default(),
    }
    .run()
}

/// Cuts the active segment's torn tail at `at`: writes an end marker over the torn frame's
/// header and syncs it, before any new record can be written after it. The rest of the torn
/// write stays, like any stale bytes after the end of the log: 17 bytes are written, not
/// the rest of the segment.
pub(crate) fn cut_tail(segment: &Segment, at: u64) -> Result<()> {
    segment
        .file
        .write_all_at(&[0; FRAME_HEADER_BYTES][..segment.end_marker_len(at)], at)
        .map_err(|e| Error::io("cut torn tail", &segment.path, e))?;
    segment
        .file
        .sync_data()
        .map_err(|e| Error::io("sync after cutting torn tail", &segment.path, e))
}

/// Regression: opening a log took time proportional to its preallocated space.
///
/// The story: to tell a torn tail from corruption, recovery looks for any valid frame after
/// the end of a segment's records (`find_valid_frame`). It tried every byte position of the
/// rest of the segment, and the rest of the active segment is its preallocated zeros: an
/// *empty* log with the default 64 MiB segments took 170–230 ms to open, with 256 MiB
/// segments 0.6–0.8 s (measured while building `Db`'s recovery benchmark, whose checkpoint
/// case was slower than replaying the log). A frame's LSN is never zero, so positions whose
/// LSN bytes are all zero are now skipped 16 bytes at a time: 17–21 ms for the empty 64 MiB
/// log, 106 ms for 256 MiB (what is left is faulting the map in).
///
/// Segment recycling brought it back in another shape: the active segment may be a recycled
/// file, its rest stale frames rather than zeros, and each position of them was looked at
/// in turn, with the zero skip's bookkeeping: reopening a log whose active segment was
/// a recycled 64 MiB file took 0.6–2.2 s against 40–130 ms zero-filled (interleaved, load
/// average 8). An LSN of the search window has a zero top byte (below 2^56), so only
/// positions 15 bytes before a zero byte are candidates, and zero bytes are found eight at a
/// time: 37–70 ms recycled against 17–28 ms zero-filled (`examples/segment_recycling.rs`,
/// docs/BENCHMARKS.md). These tests pin that the skips change no answer, near 2^56 too;
/// speed is measured, not asserted.
#[cfg(test)]
mod find_valid_frame_skips_zeros {
    use super::*;
    use crate::format::{encode_frame, FRAME_HEADER_BYTES};
    use proptest::prelude::*;

    /// The search as it was: every position.
    fn naive(bytes: &[u8], from: usize, salt: u64, min_lsn: u64) -> Option<(usize, u64)> {
        let max_lsn = min_lsn.saturating_add(LSN_SEARCH_WINDOW);
        (from..bytes.len()).find_map(|q| {
            let lsn = peek_lsn(&bytes[q..])?;
            if lsn < min_lsn || lsn >= max_lsn {
                return None;
            }
            let frame = decode_frame(&bytes[q..], salt).ok()?;
            Some((q, frame.lsn))
        })
    }

    proptest! {
        #[test]
        fn same_answer_as_trying_every_position(
            zeros_before in 0usize..300,
            zeros_after in 0usize..300,
            garbage in prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..64),
            payload in prop::collection::vec(any::<u8>(), 0..40),
            lsn in 1u64..4,
            min_lsn in 1u64..4,
            from in 0usize..100,
            near_top in any::<bool>(),
        ) {
            // Near 2^56 the window's LSNs may have a non-zero top byte, and every position
            // is looked at.
            let top = if near_top { (1 << 56) - LSN_SEARCH_WINDOW - 2 } else { 0 };
            let (lsn, min_lsn) = (top + lsn, top + min_lsn);
            let salt = 9;
            let mut bytes = garbage.clone();
            bytes.extend(std::iter::repeat(0).take(zeros_before));
            let frame = encode_frame(lsn, salt, None, &payload);
            bytes.extend_from_slice(&frame);
            bytes.extend(std::iter::repeat(0).take(zeros_after));
            bytes.extend_from_slice(&garbage);
            let from = from.min(bytes.len());
            prop_assert_eq!(
                find_valid_frame(&bytes, from, salt, min_lsn),
                naive(&bytes, from, salt, min_lsn)
            );
        }
    }

    #[test]
    fn finds_a_frame_after_a_long_zero_run() {
        let salt = 3;
        let mut bytes = vec![0u8; 1 << 20];
        let frame = encode_frame(5, salt, None, b"x");
        let at = (1 << 20) - 1000 + 3;
        bytes[at..at + frame.len()].copy_from_slice(&frame);
        assert_eq!(find_valid_frame(&bytes, 1, salt, 5), Some((at, 5)));
        assert_eq!(find_valid_frame(&bytes, at + 1, salt, 5), None);
        assert_eq!(
            find_valid_frame(&bytes[..at + FRAME_HEADER_BYTES], 0, salt, 5),
            None
        );
    }
}
