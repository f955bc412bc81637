//! The log: segments, the group-commit write path, readers, recovery and truncation.

mod commit;
mod options;
mod reader;
mod record;
pub(crate) mod recovery;
mod segment;

pub use options::{
    RecoveryMode, WalOptions, RECORD_BYTES_MAX, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use reader::{LogRecord, WalReader};
pub use record::{Durability, GroupEvent, GroupListener, Receipt, Record, RecordLocation, Ticket};
pub use recovery::{DamagedRange, RecoveryReport, QUARANTINE_DIR};
pub use segment::{parse_segment_file_name, segment_file_name};

use crate::error::{Error, Result};
use crate::format::{PartialFrame, SegmentHeader};
use crate::io::DirLock;
use crate::stats::HistogramSnapshot;
use commit::{Commit, Joined, LeadMode};
use parking_lot::Mutex;
use record::Joining;
use segment::{create_segment, Pool};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// Group events queued for the listener thread before commits wait for it.
const EVENT_QUEUE_LEN: usize = 1024;

/// Each thread times one blocking append in this many: two clock reads and a shared
/// histogram update per append would cost more than the rest of the statistics together.
const COMMIT_LATENCY_SAMPLE_EVERY: u32 = 8;

/// Whether this append is one whose latency is measured (the first of every
/// [`COMMIT_LATENCY_SAMPLE_EVERY`] on this thread).
fn sample_commit_latency() -> bool {
    thread_local!(static APPENDS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
    APPENDS.with(|n| {
        let v = n.get();
        n.set(v.wrapping_add(1));
        v % COMMIT_LATENCY_SAMPLE_EVERY == 0
    })
}

/// A write-ahead log. `Send + Sync`: share it between threads (by reference or in an `Arc`);
/// concurrent appends are committed together, one write and one `fdatasync` per group.
///
/// Dropping the last handle closes it as [`Wal::close`] does, ignoring errors: queued
/// `Buffer` records are written and synced on a clean drop. Call `close` to see errors.
pub struct Wal {
    commit: Arc<Commit>,
    read_only: bool,
    report: RecoveryReport,
    /// The background sync thread and, with a listener, the event thread.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The directory lock, released by `close` so another handle can open the log.
    lock: Mutex<Option<Box<dyn DirLock>>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.commit.dir)
            .field("read_only", &self.read_only)
            .field("durable_lsn", &self.durable_lsn())
            .finish()
    }
}

/// One segment of a log, as [`Wal::segments`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// Sequence number (the file's name).
    pub seq: u64,
    /// LSN of its first record (or the next LSN, for an empty active segment).
    pub first_lsn: u64,
    /// The segment file.
    pub path: PathBuf,
    /// Sealed segments are never written again; the last segment is active.
    pub sealed: bool,
}

/// A snapshot of a log's counters and histograms (times in nanoseconds).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WalStats {
    /// Records written.
    pub records: u64,
    /// Frame bytes written.
    pub bytes: u64,
    /// Groups committed (including sync-only ones made by the background sync).
    pub groups: u64,
    /// `fdatasync` calls on segments.
    pub syncs: u64,
    /// Groups whose write or sync failed.
    pub failed_groups: u64,
    /// Records rejected before joining a group (invalid input).
    pub rejected: u64,
    /// Records per group.
    pub group_records: HistogramSnapshot,
    /// Bytes per group.
    pub group_bytes: HistogramSnapshot,
    /// Time of each group's write.
    pub write_ns: HistogramSnapshot,
    /// Time of each group's `fdatasync`.
    pub sync_ns: HistogramSnapshot,
    /// Time each group held the sync stream (write + sync): what `lock_hold_max` bounds.
    pub hold_ns: HistogramSnapshot,
    /// Time from a blocking append's start to its acknowledgement (`Sync` and `Flush`),
    /// measured on one append in eight per thread.
    pub commit_ns: HistogramSnapshot,
    /// Time each group's first record waited before the group was taken for writing.
    pub queue_wait_ns: HistogramSnapshot,
    /// Records waiting in memory (the group taken plus writers blocked on a full group)
    /// each time a group is taken.
    pub queue_depth: HistogramSnapshot,
    /// Whether an IO failure poisoned the handle.
    pub poisoned: bool,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir` for writing, recovering it first as
    /// `options.recovery_mode` says. Fails with [`Error::Locked`] if another handle has it.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<Wal> {
        Self::open_inner(dir.as_ref(), options, false)
    }

    /// Opens an existing log for reading only: writes nothing (not even a torn-tail cut), so
    /// it works on a full disk or a read-only mount. Shares the directory lock with other
    /// readers but not with a writer.
    pub fn open_read_only(dir: impl AsRef<Path>, options: WalOptions) -> Result<Wal> {
        Self::open_inner(dir.as_ref(), options, true)
    }

    fn open_inner(dir: &Path, options: WalOptions, read_only: bool) -> Result<Wal> {
        options.validate()?;
        let storage = options.storage.clone();
        if read_only {
            if !storage.exists(dir).map_err(|e| Error::io("stat", dir, e))? {
                return Err(Error::io(
                    "open log",
                    dir,
                    io::Error::new(io::ErrorKind::NotFound, "no such directory"),
                ));
            }
        } else {
            storage
                .create_dir_all(dir)
                .map_err(|e| Error::io("create log directory", dir, e))?;
        }
        let lock = storage.lock_dir(dir, !read_only).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                Error::Locked {
                    path: dir.to_path_buf(),
                }
            } else {
                Error::io("lock log directory", dir, e)
            }
        })?;
        let recovered = recovery::recover(
            &*storage,
            dir,
            options.recovery_mode,
            !read_only,
            options.segment_bytes,
        )?;
        let mut segments = recovered.segments;
        let mut tail = recovered.tail_offset;
        let mut next_segment_seq = recovered.next_segment_seq;
        // A read-only handle neither reuses nor removes pool files.
        let (keep, pool_files) = if read_only {
            (0, Vec::new())
        } else {
            (options.recycle_segments, recovered.pool_files)
        };
        let pool = Pool::new(
            storage.clone(),
            dir,
            keep,
            options.segment_bytes,
            pool_files,
        );
        if read_only {
            if segments.is_empty() {
                return Err(Error::io(
                    "open log",
                    dir,
                    io::Error::new(io::ErrorKind::NotFound, "no groupwal segments here"),
                ));
            }
        } else {
            if let (Some(torn), Some(last)) = (&recovered.report.torn_tail, segments.last()) {
                recovery::cut_tail(last, torn.offset)?;
            }
            // The names in the directory must be durable before a record is acknowledged in
            // a segment or a pool file is reused: the previous process may have died (or been
            // poisoned) between renaming a new segment into place, or a freed one into the
            // pool, and syncing the directory, and the page cache still shows a name that a
            // power cut would take away (a reused file could then come back under its old
            // segment name, holding a new header).
            storage
                .sync_dir(dir)
                .map_err(|e| Error::io("sync directory", dir, e))?;
            if let Some(last) = segments.last().filter(|_| !recovered.needs_new_segment) {
                // A segment shortened by hand or made with a smaller segment_bytes: give it
                // its full size again so appends into it need no allocation. Whatever lies
                // between the end of its records and the end of the file goes first: zeros
                // added after a frame that the end of the file cut short can complete it (a
                // payload that ends in zeros validates), and a valid frame after the end of
                // the log reads as corruption at the next open
                // (fuzz/regressions/recover_dir/salvage-then-default-zero-header).
                let extend = |file: &dyn crate::io::StorageFile| -> io::Result<()> {
                    let len = file.len()?;
                    if len < options.segment_bytes && len > tail {
                        file.set_len(tail)?;
                    }
                    file.allocate(options.segment_bytes, options.preallocation)?;
                    file.sync_data()
                };
                extend(&*last.file)
                    .map_err(|e| Error::io("preallocate active segment", &last.path, e))?;
            } else {
                let header = SegmentHeader {
                    segment_seq: next_segment_seq,
                    first_lsn: recovered.next_lsn,
                    salt: options
                        .seed
                        .map_or_else(|| fastrand::u64(..), |s| s ^ next_segment_seq),
                };
                let segment = create_segment(
                    &*storage,
                    dir,
                    header,
                    options.segment_bytes,
                    options.preallocation,
                    None,
                    &pool,
                )?;
                segments.push(Arc::new(segment));
                tail = crate::format::SEGMENT_HEADER_BYTES as u64;
                next_segment_seq += 1;
            }
        }
        let (events, listener_thread) = match (&options.listener, read_only) {
            (Some(listener), false) => {
                let (tx, rx) = crossbeam_channel::bounded::<GroupEvent>(EVENT_QUEUE_LEN);
                let listener = listener.clone();
                let handle = std::thread::Builder::new()
                    .name("groupwal-events".into())
                    .spawn(move || {
                        for event in rx {
                            listener.on_group(&event);
                        }
                    })
                    .map_err(|e| Error::io("start listener thread", dir, e))?;
                (Some(tx), Some(handle))
            }
            _ => (None, None),
        };
        let commit = Arc::new(Commit::new(
            dir.to_path_buf(),
            storage,
            options,
            segments,
            tail,
            recovered.next_lsn,
            next_segment_seq,
            pool,
            events,
        ));
        let background = if read_only {
            None
        } else {
            let c = commit.clone();
            Some(
                std::thread::Builder::new()
                    .name("groupwal-sync".into())
                    .spawn(move || c.background())
                    .map_err(|e| Error::io("start background sync thread", dir, e))?,
            )
        };
        Ok(Wal {
            commit,
            read_only,
            report: recovered.report,
            threads: Mutex::new(background.into_iter().chain(listener_thread).collect()),
            lock: Mutex::new(Some(lock)),
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.commit.dir
    }

    /// What recovery found and did when this handle opened the log.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Rejects a record the log cannot take (today: a payload above `record_bytes_max`).
    fn check(&self, record: &Record<'_>) -> Result<()> {
        let max = self.commit.opts.effective_record_bytes_max();
        if record.payload.len() > max {
            self.commit.stats.rejected.add(1);
            return Err(Error::RecordTooLarge {
                len: record.payload.len(),
                max,
            });
        }
        Ok(())
    }

    fn validate<'a>(&self, record: &Record<'a>) -> Result<PartialFrame<'a>> {
        self.check(record)?;
        Ok(PartialFrame::new(record.payload, record.correlation_id))
    }

    /// Joins one record to a group; with `LeadMode::Inline` it may lead (write and sync)
    /// before returning.
    fn join_one(&self, record: &Record<'_>, lead_mode: LeadMode) -> Result<Ticket> {
        let frame = self.validate(record)?;
        let mut joined = None;
        let error = self.commit.join(
            std::slice::from_ref(&frame),
            &[0],
            record.durability,
            lead_mode,
            false,
            |j| joined = Some(ticket(j, record)),
        );
        match (joined, error) {
            (Some(t), _) => Ok(t),
            (None, Some(e)) => Err(e),
            (None, None) => unreachable!("join either joins the record or says why not"),
        }
    }

    /// Appends one record and blocks until it is as durable as its [`Durability`] asks.
    ///
    /// Concurrent callers share groups: one write and (for `Sync`) one `fdatasync` each.
    pub fn append(&self, record: Record<'_>) -> Result<Receipt> {
        self.check_writable()?;
        let start = sample_commit_latency().then(Instant::now);
        self.commit.writer_enter();
        let joined = self.join_one(&record, LeadMode::Inline);
        self.commit.writer_exit();
        let result = joined.and_then(|t| t.wait());
        if let (Some(start), true) = (start, result.is_ok()) {
            if record.durability != Durability::Buffer {
                self.commit
                    .stats
                    .commit_ns
                    .record(start.elapsed().as_nanos() as u64);
            }
        }
        result
    }

    /// Appends records, each validated alone: an invalid one (too large, …) gets its own
    /// error and never reaches the log, the valid ones commit together in as few groups as
    /// the bounds allow. Results come in input order, like HTTP 207 Multi-Status.
    ///
    /// All records share the durability of the first one (records of one batch are
    /// committed as one unit; mix durabilities with separate calls). A large `Sync` batch
    /// is pipelined ([`WalOptions::pipeline_bytes`]): each piece is checksummed just before
    /// it joins, while the device writes the previous one.
    pub fn append_many(&self, records: &[Record<'_>]) -> Vec<Result<Receipt>> {
        if let Err(e) = self.check_writable() {
            return records.iter().map(|_| Err(clone_refusal(&e))).collect();
        }
        let durability = records.first().map_or(Durability::Sync, |r| r.durability);
        // Rejections first (cheap), so that a piece knows whether valid records follow it.
        let mut outcomes: Vec<Outcome> = records
            .iter()
            .map(|r| match self.check(r) {
                Ok(()) => Outcome::Waiting,
                Err(e) => Outcome::Done(Err(e)),
            })
            .collect();
        let mut valid_left = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Waiting))
            .count();
        let piece_bytes = match (durability, self.commit.opts.pipeline_bytes) {
            (Durability::Sync, Some(bytes)) => bytes,
            _ => usize::MAX,
        };
        let mut groups: Vec<Arc<commit::Group>> = Vec::new();
        let mut frames = Vec::new();
        let mut indices = Vec::new();
        let mut next = 0;
        let mut error = None;
        self.commit.writer_enter();
        while valid_left > 0 && error.is_none() {
            // Checksum the next piece only now: the previous one is being written.
            frames.clear();
            indices.clear();
            let mut bytes = 0;
            while next < records.len() && bytes < piece_bytes {
                if matches!(outcomes[next], Outcome::Waiting) {
                    let r = &records[next];
                    let frame = PartialFrame::new(r.payload, r.correlation_id);
                    bytes += frame.len();
                    frames.push(frame);
                    indices.push(next);
                }
                next += 1;
            }
            valid_left -= frames.len();
            error = self.commit.join(
                &frames,
                &indices,
                durability,
                LeadMode::Inline,
                valid_left > 0,
                |j| {
                    if !groups.last().is_some_and(|g| Arc::ptr_eq(g, j.group)) {
                        groups.push(j.group.clone());
                    }
                    outcomes[j.index] = Outcome::Joined {
                        group: groups.len() - 1,
                        record: joining(&j, &records[j.index]),
                    };
                },
            );
        }
        self.commit.writer_exit();
        outcomes
            .into_iter()
            .map(|o| match o {
                Outcome::Done(result) => result,
                Outcome::Joined { group, record } => record.wait(&groups[group]),
                Outcome::Waiting => Err(error.as_ref().map_or(Error::Closed, clone_refusal)),
            })
            .collect()
    }

    /// Queues a record without waiting for it to be written; [`Ticket::wait`] returns its
    /// receipt. Blocks only while the queue is full (backpressure). The background thread
    /// commits the group if no writer is leading one.
    pub fn submit(&self, record: Record<'_>) -> Result<Ticket> {
        self.submit_inner(record, true)
    }

    /// Like [`Wal::submit`], but returns [`Error::WouldBlock`] instead of waiting when the
    /// queue is full.
    pub fn try_submit(&self, record: Record<'_>) -> Result<Ticket> {
        self.submit_inner(record, false)
    }

    fn submit_inner(&self, record: Record<'_>, may_wait: bool) -> Result<Ticket> {
        self.check_writable()?;
        if !may_wait {
            self.check(&record)?;
            if self.commit.would_block(frame_len(&record)) {
                return Err(Error::WouldBlock);
            }
        }
        self.join_one(&record, LeadMode::Background)
    }

    /// Blocks until every record appended so far (any durability) is durable.
    pub fn sync(&self) -> Result<()> {
        self.check_writable()?;
        self.commit.sync()
    }

    /// The highest LSN known durable: it and every record before it survive power loss.
    /// Never goes backwards.
    pub fn durable_lsn(&self) -> u64 {
        self.commit.durable_lsn.load(Ordering::Acquire)
    }

    /// The highest LSN written to the operating system (survives a process crash).
    pub fn written_lsn(&self) -> u64 {
        self.commit.written_lsn.load(Ordering::Acquire)
    }

    /// The LSN the next record will get.
    pub fn next_lsn(&self) -> u64 {
        self.commit.next_lsn()
    }

    /// The LSN of the oldest record still in the log (after [`Wal::truncate_before`]).
    pub fn first_lsn(&self) -> u64 {
        self.commit.segments.read()[0].header.first_lsn
    }

    /// Reads the records with LSN `from_lsn` and above that were written (to the operating
    /// system) when the reader was made.
    pub fn read_from(&self, from_lsn: u64) -> WalReader {
        let (segments, written) = self.commit.read_snapshot();
        WalReader::new(segments, from_lsn, written)
    }

    /// A reader of the records durable now (they survive power loss), from `from_lsn`:
    /// what consumers act on. Follow the log with [`Wal::extend_durable`].
    pub(crate) fn read_durable_from(&self, from_lsn: u64) -> (WalReader, u64) {
        // Read durable first: the snapshot taken after it reaches at least as far.
        let durable = self.durable_lsn();
        let (segments, _) = self.commit.read_snapshot();
        (WalReader::new(segments, from_lsn, durable), durable)
    }

    /// Extends `reader` (made by [`Wal::read_durable_from`]) to the records durable now;
    /// returns the last LSN it now reaches.
    pub(crate) fn extend_durable(&self, reader: &mut WalReader) -> u64 {
        let durable = self.durable_lsn();
        let (segments, _) = self.commit.read_snapshot();
        reader.extend(segments, durable);
        durable
    }

    /// The options the log was opened with.
    pub(crate) fn options(&self) -> &WalOptions {
        &self.commit.opts
    }

    /// Copies `buf.len()` bytes at byte `offset` of segment `segment` into `buf`: random
    /// access to bytes of records already written, such as a part of a payload whose place
    /// came from [`Receipt::location`] or [`WalReader::last_location`].
    ///
    /// Sealed segments are read through their memory map, the active one with a positioned
    /// read. Nothing is verified here (the frame's checksum was checked when it was written
    /// or recovered); reading bytes that are not written yet returns whatever the file holds
    /// there (zeros of the preallocation). Fails with an IO error of kind `NotFound` if the
    /// segment is not in the log (removed by [`Wal::truncate_before`]) and `UnexpectedEof` if
    /// the range runs past the end of the file.
    pub fn read_at(&self, segment: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        let segments = self.commit.segments.read();
        let i = segments
            .binary_search_by_key(&segment, |s| s.seq())
            .map_err(|_| {
                Error::io(
                    "read segment",
                    self.segment_path(segment),
                    io::Error::new(io::ErrorKind::NotFound, "segment is not in the log"),
                )
            })?;
        let s = &segments[i];
        let eof = || {
            Error::io(
                "read segment",
                &s.path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "range past the end of the file",
                ),
            )
        };
        // Only the last segment is ever written; the others are sealed and may be mapped.
        if i + 1 < segments.len() {
            let map = s.mapped()?;
            let start = usize::try_from(offset).map_err(|_| eof())?;
            let bytes = start
                .checked_add(buf.len())
                .and_then(|end| map.get(start..end))
                .ok_or_else(eof)?;
            buf.copy_from_slice(bytes);
            Ok(())
        } else {
            // Hold the segment, not only its file: `truncate_before` recycles a file only
            // when the log's list holds the sole reference, so a rotation and truncation
            // during this read cannot give the file to another segment under it.
            let s = Arc::clone(s);
            drop(segments);
            let n = crate::io::read_full_at(&*s.file, buf, offset)
                .map_err(|e| Error::io("read segment", &s.path, e))?;
            if n < buf.len() {
                return Err(Error::io(
                    "read segment",
                    &s.path,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "range past the end of the file",
                    ),
                ));
            }
            Ok(())
        }
    }

    /// Removes, durably, every whole segment whose records all have LSNs below `lsn`. The
    /// active segment is never removed. Returns how many segments were removed.
    ///
    /// Up to [`WalOptions::recycle_segments`] of the freed files are kept for reuse by new
    /// segments (renamed to `<seq>.wal.free`), the others deleted. A segment that a reader
    /// (a [`WalReader`]) still holds is always deleted: its bytes must not change under the
    /// reader, and an unlinked file keeps them.
    pub fn truncate_before(&self, lsn: u64) -> Result<usize> {
        self.check_writable()?;
        let mut segments = self.commit.segments.write();
        // Segment i may go if segment i + 1 starts at or below `lsn`.
        let removable = segments
            .windows(2)
            .take_while(|w| w[1].header.first_lsn <= lsn)
            .count();
        let storage = &self.commit.storage;
        let dir = &self.commit.dir;
        let pool = &self.commit.pool;
        let mut room = pool.room();
        let mut recycled = Vec::new();
        let mut removed = 0;
        let mut result = Ok(());
        // Oldest first, whether renamed or deleted: a crash part way leaves a contiguous log.
        for segment in segments.iter().take(removable) {
            // The list's reference is the only one: no reader holds the segment, and none
            // can take it while the list is locked.
            let reuse = room > 0
                && Arc::strong_count(segment) == 1
                && segment.file.len().is_ok_and(|len| pool.fits(len));
            let done = if reuse {
                let to = pool.path_for(segment.seq());
                storage.rename(&segment.path, &to).map(|()| {
                    recycled.push(to);
                    room -= 1;
                })
            } else {
                storage.remove_file(&segment.path)
            };
            if let Err(e) = done {
                let op = if reuse {
                    "recycle segment"
                } else {
                    "remove segment"
                };
                result = Err(Error::io(op, &segment.path, e));
                break;
            }
            removed += 1;
        }
        segments.drain(..removed);
        drop(segments);
        if removed > 0 {
            storage
                .sync_dir(dir)
                .map_err(|e| Error::io("sync directory", dir, e))?;
            // Only now that their pool names are durable may the files be reused: a header
            // written into one before could come back, after a power cut, under the old
            // segment name.
            pool.add(recycled);
        }
        result.map(|()| removed)
    }

    /// Counters and histograms of the write path.
    pub fn stats(&self) -> WalStats {
        let s = &self.commit.stats;
        WalStats {
            records: s.records.get(),
            bytes: s.bytes.get(),
            groups: s.groups.get(),
            syncs: s.syncs.get(),
            failed_groups: s.failed_groups.get(),
            rejected: s.rejected.get(),
            group_records: s.group_records.snapshot(),
            group_bytes: s.group_bytes.snapshot(),
            write_ns: s.write_ns.snapshot(),
            sync_ns: s.sync_ns.snapshot(),
            hold_ns: s.hold_ns.snapshot(),
            commit_ns: s.commit_ns.snapshot(),
            queue_wait_ns: s.queue_wait_ns.snapshot(),
            queue_depth: s.queue_depth.snapshot(),
            poisoned: self.commit.is_poisoned(),
        }
    }

    /// Refuses new records with [`Error::Closed`] from the moment it is called, then writes
    /// and syncs everything already queued: a concurrent append either succeeds and its
    /// record is in the log, or fails with `Closed` and it is not. Returns the poisoning error
    /// if an earlier IO failure poisoned the log, and releases the directory lock so another
    /// handle may open the log. Calling it again is harmless.
    pub fn close(&self) -> Result<()> {
        if self.read_only {
            self.lock.lock().take();
            return Ok(());
        }
        let result = self.commit.close();
        for handle in self.threads.lock().drain(..) {
            // The sync thread cannot panic on IO errors; a panicking listener has already
            // lost its events, and its panic is not the caller's error.
            let _ = handle.join();
        }
        self.lock.lock().take();
        result
    }

    /// The log's segments, oldest first; the last is the active one.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let segments = self.commit.segments.read();
        let last = segments.len().saturating_sub(1);
        segments
            .iter()
            .enumerate()
            .map(|(i, s)| SegmentInfo {
                seq: s.seq(),
                first_lsn: s.header.first_lsn,
                path: s.path.clone(),
                sealed: i < last,
            })
            .collect()
    }

    /// The path of segment `seq` of this log (for tools and tests).
    pub fn segment_path(&self, seq: u64) -> PathBuf {
        self.commit.dir.join(segment::segment_file_name(seq))
    }
}

/// Where one record of `append_many` stands.
enum Outcome {
    /// Valid, not joined (yet).
    Waiting,
    /// Joined to the batch's group number `group`.
    Joined { group: usize, record: Joining },
    /// Rejected.
    Done(Result<Receipt>),
}

/// What a joined record's receipt needs besides its group.
fn joining(j: &Joined<'_>, record: &Record<'_>) -> Joining {
    Joining {
        lsn: j.lsn,
        durability: record.durability,
        records_at_join: j.records_at_join,
        correlation_id: record.correlation_id,
        location: j.location,
    }
}

fn ticket(j: Joined<'_>, record: &Record<'_>) -> Ticket {
    Ticket {
        group: j.group.clone(),
        record: joining(&j, record),
    }
}

/// The size of a record's frame on disk.
fn frame_len(record: &Record<'_>) -> usize {
    crate::format::frame_len(record.payload.len(), record.correlation_id.is_some())
}

/// The refusal errors a batch reports for every record it could not join.
fn clone_refusal(e: &Error) -> Error {
    match e {
        Error::Poisoned { reason } => Error::Poisoned {
            reason: reason.clone(),
        },
        Error::ReadOnly => Error::ReadOnly,
        Error::WouldBlock => Error::WouldBlock,
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        _ => Error::Closed,
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
