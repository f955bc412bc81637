//! Options of a [`Wal`](crate::Wal), each with its default and range.

use crate::error::{Error, Result};
use crate::format::{FRAME_OVERHEAD_MAX, SEGMENT_HEADER_BYTES};
use crate::io::{Preallocation, StdStorage, Storage};
use crate::wal::GroupListener;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What opening a log does about damaged bytes. See `docs/DESIGN.md`, "Recovery".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Cut an incomplete record at the end of the last segment (a write the crash cut short,
    /// never acknowledged as durable); refuse to open on anything else.
    #[default]
    TolerateTornTail,
    /// Refuse to open on any damaged byte, even a torn tail.
    Strict,
    /// Copy damaged bytes into `quarantine/` with a report, skip them, and open with what is
    /// left. Skipped LSNs are never reused, so the log may have gaps. With
    /// [`Wal::open_read_only`](crate::Wal::open_read_only) it is a dry run: every damaged
    /// range is listed in the recovery report, nothing is copied or changed.
    Salvage,
}

/// Options for [`Wal::open`](crate::Wal::open). Build with [`WalOptions::default`] and the
/// setters; every value is checked when the log opens.
#[derive(Clone)]
pub struct WalOptions {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) segment_bytes: u64,
    /// `None`: the default, 16 MiB or what fits in a segment, whichever is smaller.
    pub(crate) record_bytes_max: Option<usize>,
    pub(crate) preallocation: Preallocation,
    pub(crate) recovery_mode: RecoveryMode,
    pub(crate) group_bytes_max: usize,
    pub(crate) group_records_max: usize,
    pub(crate) pipeline_bytes: Option<usize>,
    pub(crate) lock_hold_max: Duration,
    pub(crate) commit_delay: Option<Duration>,
    pub(crate) commit_siblings: usize,
    pub(crate) sync_interval: Duration,
    pub(crate) sync_interval_jitter: Duration,
    pub(crate) seed: Option<u64>,
    pub(crate) listener: Option<Arc<dyn GroupListener>>,
    pub(crate) trace_sample_rate: f64,
    pub(crate) prepare_next_segment: bool,
    pub(crate) recycle_segments: usize,
}

/// Smallest allowed segment.
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// Largest allowed segment.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 40;
/// Largest allowed record payload.
pub const RECORD_BYTES_MAX: usize = 1 << 30;
const _: () = assert!(RECORD_BYTES_MAX as u64 <= SEGMENT_BYTES_MAX / 4);

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            storage: StdStorage::shared(),
            segment_bytes: 64 << 20,
            record_bytes_max: None,
            preallocation: Preallocation::default(),
            recovery_mode: RecoveryMode::default(),
            group_bytes_max: 1 << 20,
            group_records_max: 4096,
            pipeline_bytes: Some(256 << 10),
            lock_hold_max: Duration::from_millis(10),
            commit_delay: None,
            commit_siblings: 5,
            sync_interval: Duration::from_millis(100),
            sync_interval_jitter: Duration::from_millis(20),
            seed: None,
            listener: None,
            trace_sample_rate: 0.01,
            prepare_next_segment: true,
            recycle_segments: 2,
        }
    }
}

impl fmt::Debug for WalOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalOptions")
            .field("storage", &self.storage)
            .field("segment_bytes", &self.segment_bytes)
            .field("record_bytes_max", &self.record_bytes_max)
            .field("preallocation", &self.preallocation)
            .field("recovery_mode", &self.recovery_mode)
            .field("group_bytes_max", &self.group_bytes_max)
            .field("group_records_max", &self.group_records_max)
            .field("pipeline_bytes", &self.pipeline_bytes)
            .field("lock_hold_max", &self.lock_hold_max)
            .field("commit_delay", &self.commit_delay)
            .field("commit_siblings", &self.commit_siblings)
            .field("sync_interval", &self.sync_interval)
            .field("sync_interval_jitter", &self.sync_interval_jitter)
            .field("seed", &self.seed)
            .field("listener", &self.listener.is_some())
            .field("trace_sample_rate", &self.trace_sample_rate)
            .field("prepare_next_segment", &self.prepare_next_segment)
            .field("recycle_segments", &self.recycle_segments)
            .finish()
    }
}

impl WalOptions {
    /// The storage the log lives on. Default: the real file system ([`StdStorage`]).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Size of each segment file, preallocated when created. Default: 64 MiB. Range: 64 KiB
    /// to 1 TiB, and large enough for one record of `record_bytes_max`.
    pub fn segment_bytes(mut self, v: u64) -> Self {
        self.segment_bytes = v;
        self
    }

    /// Largest record payload accepted; larger records fail alone with
    /// [`Error::RecordTooLarge`]. Default: 16 MiB, or the most that fits in a segment if
    /// that is less. Range: 1 byte to 1 GiB, and at most the segment size less its header
    /// and one frame header.
    pub fn record_bytes_max(mut self, v: usize) -> Self {
        self.record_bytes_max = Some(v);
        self
    }

    /// Room for one record's payload in a segment: its size less the segment header and
    /// the largest frame header.
    fn segment_room(&self) -> u64 {
        self.segment_bytes
            .saturating_sub((SEGMENT_HEADER_BYTES + FRAME_OVERHEAD_MAX) as u64)
    }

    /// The record size limit in force.
    pub(crate) fn effective_record_bytes_max(&self) -> usize {
        self.record_bytes_max
            .unwrap_or_else(|| (16 << 20).min(self.segment_room() as usize))
    }

    /// How new segments reserve their space. Default: [`Preallocation::ZeroFill`] (see
    /// `docs/BENCHMARKS.md` for the measurement behind the choice).
    pub fn preallocation(mut self, v: Preallocation) -> Self {
        self.preallocation = v;
        self
    }

    /// What opening does about damaged bytes. Default: [`RecoveryMode::TolerateTornTail`].
    pub fn recovery_mode(mut self, v: RecoveryMode) -> Self {
        self.recovery_mode = v;
        self
    }

    /// A group closes once it holds this many bytes of frames (a single larger record forms
    /// a group of its own). Default: 1 MiB. Range: 4 KiB to 1 GiB.
    pub fn group_bytes_max(mut self, v: usize) -> Self {
        self.group_bytes_max = v;
        self
    }

    /// A group closes once it holds this many records. Default: 4096. Range: 1 to 1,048,576.
    pub fn group_records_max(mut self, v: usize) -> Self {
        self.group_records_max = v;
        self
    }

    /// A `Sync` batch ([`Wal::append_many`](crate::Wal::append_many)) whose caller leads its
    /// own groups is committed in pieces of about this many bytes: each piece is one group,
    /// written with one write and handed to the device at once
    /// ([`StorageFile::start_writeback`](crate::io::StorageFile::start_writeback)), and only
    /// the batch's last group is synced; every piece's records are acknowledged after that
    /// `fdatasync`, or all fail with it. The checksums and copies of the next piece then
    /// overlap the device's work on the previous one, instead of all of them preceding one
    /// large write (`docs/BENCHMARKS.md`, "Durable batch"). A piece that other waiting
    /// writers share is synced as usual. Default: 256 KiB. `None` turns pipelining off.
    /// Range: 4 KiB to 1 GiB.
    pub fn pipeline_bytes(mut self, v: Option<usize>) -> Self {
        self.pipeline_bytes = v;
        self
    }

    /// Budget for how long one group may hold the log's critical section (its write and
    /// `fdatasync`), predicted from the measured cost per byte; a group closes before its
    /// prediction passes the budget, and a single record that alone passes it forms a group
    /// of its own. When the fixed cost every group pays (mostly the flush) alone reaches the
    /// budget, so that no group could meet it, a group may add half the budget to that cost:
    /// a device whose flush is slower than the budget still batches. Default: 10 ms. Range:
    /// 100 µs to 10 s.
    pub fn lock_hold_max(mut self, v: Duration) -> Self {
        self.lock_hold_max = v;
        self
    }

    /// Optional pause before a group is written, so more writers can join it; applies only
    /// when at least `commit_siblings` writers are inside the log. Default: off. Range: up to
    /// 100 ms.
    pub fn commit_delay(mut self, v: Option<Duration>) -> Self {
        self.commit_delay = v;
        self
    }

    /// Writers that must be active for `commit_delay` to apply. Default: 5. Range: 1 to 100,000.
    pub fn commit_siblings(mut self, v: usize) -> Self {
        self.commit_siblings = v;
        self
    }

    /// Mean interval of the background sync that makes `Buffer` and `Flush` records durable.
    /// Default: 100 ms. Range: 1 ms to 1 hour.
    pub fn sync_interval(mut self, v: Duration) -> Self {
        self.sync_interval = v;
        self
    }

    /// Uniform random extra added to each background interval, so many logs on one disk do
    /// not sync in lockstep. Default: 20 ms. Range: up to `sync_interval`.
    pub fn sync_interval_jitter(mut self, v: Duration) -> Self {
        self.sync_interval_jitter = v;
        self
    }

    /// Seed of this instance's random numbers (segment salts, jitter). Default: random.
    pub fn seed(mut self, v: Option<u64>) -> Self {
        self.seed = v;
        self
    }

    /// A listener told about every committed or failed group, on a thread of its own.
    /// Default: none.
    pub fn listener(mut self, v: Option<Arc<dyn GroupListener>>) -> Self {
        self.listener = v;
        self
    }

    /// Whether the background thread prepares the next segment's file once the active one is
    /// half full, so that rotation does not preallocate it while every writer waits (see
    /// `docs/DESIGN.md`, "Segments and preallocation"). Default: on. Turn it off for
    /// deterministic simulation runs, where IO at moments set by thread timing would change
    /// which call an injected fault hits.
    pub fn prepare_next_segment(mut self, v: bool) -> Self {
        self.prepare_next_segment = v;
        self
    }

    /// How many segment files freed by [`Wal::truncate_before`](crate::Wal::truncate_before)
    /// are kept for reuse instead of deleted. A new segment (at rotation, or prepared ahead
    /// of it) is then made from a kept file: its blocks are written already, so it needs no
    /// preallocation, where a new file is zero-filled to `segment_bytes` first (every byte
    /// of the log would otherwise be written twice, zeros then records). Only files of
    /// `segment_bytes` are kept; `0` deletes every freed segment. Kept files are named
    /// `<seq>.wal.free` (see `docs/FORMAT.md`); on open, any beyond this number are removed.
    ///
    /// Default: 2. A log truncated after each checkpoint frees one or two segments at a
    /// time and needs one per rotation, so two cover the common case; each kept file
    /// reserves `segment_bytes` of disk that the log held a moment before, so the footprint
    /// stays within two segments of the log's high-water mark. Range: 0 to 1,024.
    pub fn recycle_segments(mut self, v: usize) -> Self {
        self.recycle_segments = v;
        self
    }

    /// Share of records whose correlation ids are reported per record (in
    /// [`GroupEvent::correlation_ids`](crate::GroupEvent) and `tracing` events); a failed
    /// group reports all of its ids. Sampling hashes the LSN, so it needs no shared state.
    /// Default: 0.01. Range: 0.0 to 1.0.
    pub fn trace_sample_rate(mut self, v: f64) -> Self {
        self.trace_sample_rate = v;
        self
    }

    /// Checks every value, as opening a log does; the first that is out of range is named
    /// in [`Error::InvalidOptions`]. Useful to reject configuration before doing any work.
    pub fn validate(&self) -> Result<()> {
        fn bad(name: &'static str, reason: String) -> Result<()> {
            Err(Error::InvalidOptions { name, reason })
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return bad(
                "segment_bytes",
                format!(
                    "{} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                    self.segment_bytes
                ),
            );
        }
        let room = self.segment_room();
        let record_bytes_max = self.effective_record_bytes_max();
        if record_bytes_max == 0
            || record_bytes_max > RECORD_BYTES_MAX
            || record_bytes_max as u64 > room
        {
            return bad(
                "record_bytes_max",
                format!(
                    "{} must be at least 1, at most {RECORD_BYTES_MAX}, and fit in one segment \
                     ({room} bytes with segment_bytes = {})",
                    record_bytes_max, self.segment_bytes
                ),
            );
        }
        if !(4096..=1 << 30).contains(&self.group_bytes_max) {
            return bad(
                "group_bytes_max",
                format!("{} is outside 4096..=1073741824", self.group_bytes_max),
            );
        }
        if let Some(v) = self.pipeline_bytes {
            if !(4096..=1 << 30).contains(&v) {
                return bad(
                    "pipeline_bytes",
                    format!("{v} is outside 4096..=1073741824"),
                );
            }
        }
        if !(1..=1 << 20).contains(&self.group_records_max) {
            return bad(
                "group_records_max",
                format!("{} is outside 1..=1048576", self.group_records_max),
            );
        }
        if !(Duration::from_micros(100)..=Duration::from_secs(10)).contains(&self.lock_hold_max) {
            return bad(
                "lock_hold_max",
                format!("{:?} is outside 100µs..=10s", self.lock_hold_max),
            );
        }
        if let Some(d) = self.commit_delay {
            if d > Duration::from_millis(100) {
                return bad("commit_delay", format!("{d:?} is above 100ms"));
            }
        }
        if !(1..=100_000).contains(&self.commit_siblings) {
            return bad(
                "commit_siblings",
                format!("{} is outside 1..=100000", self.commit_siblings),
            );
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(3600)).contains(&self.sync_interval) {
            return bad(
                "sync_interval",
                format!("{:?} is outside 1ms..=1h", self.sync_interval),
            );
        }
        if self.recycle_segments > 1024 {
            return bad(
                "recycle_segments",
                format!("{} is above 1024", self.recycle_segments),
            );
        }
        if !(0.0..=1.0).contains(&self.trace_sample_rate) {
            return bad(
                "trace_sample_rate",
                format!("{} is outside 0.0..=1.0", self.trace_sample_rate),
            );
        }
        if self.sync_interval_jitter > self.sync_interval {
            return bad(
                "sync_interval_jitter",
                format!(
                    "{:?} is above sync_interval ({:?})",
                    self.sync_interval_jitter, self.sync_interval
                ),
            );
        }
        Ok(())
    }
}
