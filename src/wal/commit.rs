//! Group commit: many writers, one sequential write and one `fdatasync` per group.
//!
//! A writer checksums its record, takes the state lock only to get an LSN and copy its frame
//! into the *open* group, and sleeps on that group's completion word. One thread at a time
//! is the *leader*: it takes the open group (a fresh one opens at once for newcomers),
//! releases the lock, writes the group with one positioned write, `fdatasync`s it if any
//! record asked for `Sync`, and wakes the whole group with one futex call (none if nobody
//! sleeps on it, as when a lone writer leads its own group). The lock is never
//! held across the write or the sync; there is one sync stream.
//!
//! Leadership passes without a thundering herd: the first writer to join the open group
//! while a leader is busy becomes the *designated* next leader and sleeps on its own word;
//! the finishing leader wakes only that thread. A lone writer finds no leader and leads its
//! own group at once: its latency is one write plus one `fdatasync`. If the open group has
//! waiters but no designated leader (its first members were a batch or a submit), the
//! finishing leader simply leads again.
//!
//! The background thread makes `Buffer` and `Flush` records durable every `sync_interval`
//! (+ jitter), leads for `submit` callers (who never block), and asks a busy leader to keep
//! going (`flush_requested`) when it finds one.
//!
//! A large `Sync` batch whose caller leads its own groups is *pipelined*: it joins a piece
//! of about `pipeline_bytes`, leads it as a group that is written and handed to the device
//! but not synced (its completion deferred to the next sync, which covers it), and
//! checksums its next piece while the device writes. Only its last group syncs.
//!
//! Failure is fail-stop: a failed write or sync poisons the state, fails the group being
//! written and any deferred pieces (outcome unknown) and the open group (poisoned), and
//! wakes everyone.

use crate::error::{Error, Result};
use crate::format::{CorrelationId, PartialFrame, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::io::{futex_wait, futex_wake_all, futex_wake_one, Storage};
use crate::stats::{Counter, Histogram};
use crate::wal::record::{Durability, GroupEvent, Receipt, RecordLocation};
use crate::wal::segment::{create_segment, prepare_spare, CreateError, Pool, Segment, Spare};
use crate::wal::WalOptions;
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A group whose first submission is at most this many bytes takes at most this many more:
/// a small writer never waits behind a huge record that happened to arrive after it
/// (RocksDB's rule for its write groups).
pub(crate) const SMALL_LEADER_BYTES: usize = 128 << 10;

/// A leader commits up to this many groups in a row before handing over to the designated
/// leader of the next one. Continuing is cheaper (this thread is running; a woken one must
/// first be scheduled), handing over bounds the extra latency of the leader's own append.
const LEADER_GROUPS_MAX: u32 = 16;

/// Page size assumed when a pipelined piece is handed to the device (the common 4 KiB; a
/// larger page only means a partial page is written back twice).
const WRITEBACK_PAGE: u64 = 4096;

/// `Group::status`: no outcome yet, and nobody asleep on it.
const PENDING: u32 = 0;
/// No outcome yet, and a writer may be asleep on it: the outcome owes a wake-up call.
const SLEEPING: u32 = 1;
const DONE: u32 = 2;
const FAILED: u32 = 3;

/// `Group::lead`: no writer sleeps as the group's designated leader.
const UNCLAIMED: u32 = 0;
/// The designated leader sleeps, until told to lead or that the group is done.
const CLAIMED: u32 = 1;
/// Lead, or look at the outcome.
const GO: u32 = 2;

/// Why a group failed.
#[derive(Clone, Debug)]
enum Failure {
    /// Its write or sync failed: its records may or may not be on disk.
    Unknown {
        kind: io::ErrorKind,
        message: String,
    },
    /// It was never written because the log was poisoned (or closed) first.
    Refused(RefusalKind),
}

impl Failure {
    /// What a group event says about it.
    fn message(&self) -> String {
        match self {
            Failure::Unknown { message, .. } => message.clone(),
            Failure::Refused(r) => r.error().to_string(),
        }
    }
}

#[derive(Clone, Debug)]
enum RefusalKind {
    Poisoned(String),
    Closed,
}

impl RefusalKind {
    fn error(&self) -> Error {
        match self {
            RefusalKind::Poisoned(reason) => Error::Poisoned {
                reason: reason.clone(),
            },
            RefusalKind::Closed => Error::Closed,
        }
    }
}

/// One group's completion, shared by its writers.
#[derive(Debug)]
pub(crate) struct Group {
    pub id: u64,
    records: AtomicU32,
    /// Futex word: PENDING, SLEEPING, DONE or FAILED.
    status: AtomicU32,
    /// Futex word of the designated next leader: UNCLAIMED, CLAIMED or GO.
    lead: AtomicU32,
    failure: OnceLock<Failure>,
}

impl Group {
    fn new(id: u64) -> Arc<Group> {
        Arc::new(Group {
            id,
            records: AtomicU32::new(0),
            status: AtomicU32::new(PENDING),
            lead: AtomicU32::new(UNCLAIMED),
            failure: OnceLock::new(),
        })
    }

    pub fn is_done(&self) -> bool {
        self.status.load(Ordering::Acquire) >= DONE
    }

    /// Sleeps until the group is done; false if `timeout` passed first.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let status = self.status.load(Ordering::Acquire);
            if status >= DONE {
                return true;
            }
            // Before announcing: a poll that gives up at once owes the leader no wake-up.
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return false,
                },
                None => None,
            };
            // Announce the sleep, so that the finishing leader knows it owes a wake-up.
            if status == PENDING
                && self
                    .status
                    .compare_exchange(PENDING, SLEEPING, Ordering::Acquire, Ordering::Acquire)
                    .is_err()
            {
                continue;
            }
            futex_wait(&self.status, SLEEPING, left);
        }
    }

    /// The outcome for the record `lsn` of this (finished) group.
    pub fn receipt(
        &self,
        lsn: u64,
        durability: Durability,
        correlation_id: Option<CorrelationId>,
        location: RecordLocation,
    ) -> Result<Receipt> {
        debug_assert!(self.is_done());
        match self.failure.get() {
            None => Ok(Receipt {
                lsn,
                group_id: self.id,
                group_records: self.records.load(Ordering::Relaxed),
                durability,
                correlation_id,
                location,
            }),
            Some(Failure::Unknown { kind, message }) => Err(Error::OutcomeUnknown {
                group_id: self.id,
                kind: *kind,
                message: message.clone(),
            }),
            Some(Failure::Refused(r)) => Err(r.error()),
        }
    }

    /// Records the outcome and wakes whoever sleeps on it. No system call when nobody does:
    /// a lone writer leads its own group and never sleeps.
    fn finish(&self, failure: Option<Failure>) {
        let status = match failure {
            Some(f) => {
                let _ = self.failure.set(f);
                FAILED
            }
            None => DONE,
        };
        if self.status.swap(status, Ordering::AcqRel) == SLEEPING {
            futex_wake_all(&self.status);
        }
        // A designated leader sleeps on its own word; let it see the outcome.
        if self.lead.swap(GO, Ordering::AcqRel) == CLAIMED {
            futex_wake_one(&self.lead);
        }
    }

    /// Marks the writer that becomes the designated leader (under the state lock, before it
    /// sleeps in `wait_for_lead`).
    fn claim(&self) {
        self.lead.store(CLAIMED, Ordering::Relaxed);
    }

    /// Tells the designated leader to lead. Called under the state lock, on the open group
    /// that a writer has claimed: no `finish` can have set the word before (a group is
    /// finished only after it is taken from `State::open`).
    fn hand_over(&self) {
        self.lead.store(GO, Ordering::Release);
        futex_wake_one(&self.lead);
    }

    /// Designated leader: sleeps until told to lead (true) or the group is done (false).
    fn wait_for_lead(&self) -> bool {
        loop {
            if self.lead.load(Ordering::Acquire) == GO {
                return !self.is_done();
            }
            futex_wait(&self.lead, CLAIMED, None);
        }
    }
}

/// A piece of a pipelined batch (`WalOptions::pipeline_bytes`), written and waiting for the
/// sync that covers it.
struct Deferred {
    group: Arc<Group>,
    /// Its event, emitted once its outcome is known (when someone listens).
    event: Option<GroupEvent>,
}

/// The group that is accepting records.
struct OpenGroup {
    group: Arc<Group>,
    buf: Vec<u8>,
    first_lsn: u64,
    records: u32,
    /// Some record asked for `Sync`.
    needs_sync: bool,
    /// Someone waits for the result (a `Sync` or `Flush` record, or a `sync()` call).
    has_waiters: bool,
    /// A piece of a pipelined `Sync` batch (`WalOptions::pipeline_bytes`): its records want
    /// `Sync`, but a later group of the same batch syncs them, so this one is only written.
    sync_deferred: bool,
    /// A writer sleeps as the designated leader of this group.
    leader_claimed: bool,
    /// Bytes of the group's first submission, for the small-leader rule.
    first_unit_bytes: usize,
    /// When the first record joined (for the queue-wait histogram).
    opened_at: Option<Instant>,
    /// `(lsn, id)` of the records that carry a correlation id, kept only when someone
    /// listens (a listener or the `tracing` feature).
    ids: Vec<(u64, CorrelationId)>,
}

impl OpenGroup {
    fn new(id: u64, buf: Vec<u8>, first_lsn: u64) -> OpenGroup {
        debug_assert!(buf.is_empty());
        OpenGroup {
            group: Group::new(id),
            buf,
            first_lsn,
            records: 0,
            needs_sync: false,
            has_waiters: false,
            sync_deferred: false,
            leader_claimed: false,
            first_unit_bytes: 0,
            opened_at: None,
            ids: Vec::new(),
        }
    }
}

/// Online least-squares fit of `time = fixed + bytes * per_byte` over recent groups, with
/// exponential forgetting, to predict how long a group of a given size holds the sync stream.
#[derive(Debug)]
struct CostModel {
    n: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    sxy: f64,
}

impl CostModel {
    const DECAY: f64 = 0.98;
    /// Before any measurement: 1 ms fixed, 1 ns per byte (1 GB/s).
    const PRIOR_FIXED_NS: f64 = 1_000_000.0;
    const PRIOR_NS_PER_BYTE: f64 = 1.0;
    /// Once fitted, an observation counts as at most this many times its prediction (or the
    /// prior's fixed cost, if more): one stalled flush (a scheduler hiccup, a journal commit)
    /// used to own the model for the next fifty groups, so that groups either stopped
    /// batching or, with the slow-device limit of `CostModel::budget_bytes`, ignored the
    /// budget (tests/group_commit.rs, regression_one_stalled_flush_does_not_skew_groups).
    /// A device that really slows down still moves the model, a few groups later.
    const OUTLIER_FACTOR: f64 = 4.0;

    fn new() -> Self {
        CostModel {
            n: 0.0,
            sx: 0.0,
            sy: 0.0,
            sxx: 0.0,
            sxy: 0.0,
        }
    }

    fn observe(&mut self, bytes: usize, ns: u64) {
        let (x, mut y) = (bytes as f64, ns as f64);
        if self.n >= 2.0 {
            let cap = (self.predict_ns(bytes) * Self::OUTLIER_FACTOR).max(Self::PRIOR_FIXED_NS);
            y = y.min(cap);
        }
        self.n = self.n * Self::DECAY + 1.0;
        self.sx = self.sx * Self::DECAY + x;
        self.sy = self.sy * Self::DECAY + y;
        self.sxx = self.sxx * Self::DECAY + x * x;
        self.sxy = self.sxy * Self::DECAY + x * y;
    }

    /// Predicted hold time in nanoseconds for a group of `bytes`.
    fn predict_ns(&self, bytes: usize) -> f64 {
        let (fixed, slope) = self.line();
        fixed + slope * bytes as f64
    }

    /// The largest group, in bytes, predicted to hold the sync stream at most `budget_ns`,
    /// unless the fixed cost every group pays (mostly the flush) alone reaches the budget. No
    /// group can meet it then, and holding groups to it made every group one record: group
    /// commit turned off on a device whose flush is slower than the budget
    /// (tests/group_commit.rs, regression_slow_fdatasync_does_not_turn_group_commit_off).
    /// Such a group may add half the budget to the fixed cost.
    fn budget_bytes(&self, budget_ns: f64) -> usize {
        let (fixed, slope) = self.line();
        let limit = if fixed < budget_ns {
            budget_ns
        } else {
            fixed + budget_ns / 2.0
        };
        if slope <= 0.0 {
            usize::MAX
        } else {
            // Saturating float-to-integer conversion.
            ((limit - fixed) / slope) as usize
        }
    }

    /// The fitted `(fixed ns, ns per byte)`.
    fn line(&self) -> (f64, f64) {
        if self.n < 2.0 {
            return (Self::PRIOR_FIXED_NS, Self::PRIOR_NS_PER_BYTE);
        }
        let mean_x = self.sx / self.n;
        let mean_y = self.sy / self.n;
        let var_x = self.sxx / self.n - mean_x * mean_x;
        // With groups of (nearly) one size the slope is unknowable: keep the prior's. "Nearly"
        // is relative: sizes a few bytes apart turn one slow flush into a slope of
        // microseconds per byte (tests/group_commit.rs,
        // regression_one_slow_flush_does_not_make_buffer_appends_sync).
        let spread_min = (mean_x / 4.0).max(1.0);
        let slope = if var_x > spread_min * spread_min {
            ((self.sxy / self.n - mean_x * mean_y) / var_x).max(0.0)
        } else {
            Self::PRIOR_NS_PER_BYTE
        };
        ((mean_y - slope * mean_x).max(0.0), slope)
    }
}

/// The bounds of the open group once it holds a record: frames of at most `bytes` in all,
/// at most `records` records. Fixed while the state lock is held.
struct Cap {
    bytes: usize,
    records: usize,
}

/// Everything the write path shares.
pub(crate) struct State {
    next_lsn: u64,
    open: OpenGroup,
    leader_active: bool,
    rotating: bool,
    active: Arc<Segment>,
    next_segment_seq: u64,
    /// Where the open group will be written in the active segment.
    tail: u64,
    written_lsn: u64,
    durable_lsn: u64,
    /// Pieces of a pipelined batch, written but not yet synced: they finish (or fail) with
    /// the next sync, which covers them.
    deferred: Vec<Deferred>,
    refusal: Option<RefusalKind>,
    /// `close` has begun: new records are refused while it drains the queued ones.
    closing: bool,
    next_group_id: u64,
    /// The background thread wants the next leader cycle to sync, even for a buffer-only
    /// group or no group at all.
    flush_requested: bool,
    /// A `submit` left a group without a leader; the background thread should lead.
    kick: bool,
    /// Set when the background thread must exit.
    stop: bool,
    spare: Vec<Vec<u8>>,
    /// The next segment's file, prepared by the background thread ahead of rotation.
    spare_segment: Option<Spare>,
    /// The background thread is preparing it (rotation waits rather than race it).
    preparing_spare: bool,
    /// A spare is wanted: the active segment passed half full.
    spare_wanted: bool,
    space_waiters: usize,
    cost: CostModel,
    rng: fastrand::Rng,
}

/// Statistics of the write path.
#[derive(Debug, Default)]
pub(crate) struct CommitStats {
    pub records: Counter,
    pub bytes: Counter,
    pub groups: Counter,
    pub syncs: Counter,
    pub failed_groups: Counter,
    pub rejected: Counter,
    pub group_records: Histogram,
    pub group_bytes: Histogram,
    pub write_ns: Histogram,
    pub sync_ns: Histogram,
    pub hold_ns: Histogram,
    pub commit_ns: Histogram,
    pub queue_wait_ns: Histogram,
    pub queue_depth: Histogram,
}

/// The write path of an open, writable log.
pub(crate) struct Commit {
    pub dir: PathBuf,
    pub storage: Arc<dyn Storage>,
    pub opts: WalOptions,
    state: Mutex<State>,
    space_cv: Condvar,
    background_cv: Condvar,
    pub durable_lsn: AtomicU64,
    pub written_lsn: AtomicU64,
    /// Writers inside an append (for `commit_siblings`).
    active_writers: AtomicUsize,
    pub segments: RwLock<Vec<Arc<Segment>>>,
    /// Freed segment files kept for reuse by new segments.
    pub pool: Pool,
    pub stats: CommitStats,
    /// Keep correlation ids per group (someone listens).
    track_ids: bool,
    /// A record is sampled for per-record events when a hash of its LSN is below this.
    sample_threshold: u64,
    sample_seed: u64,
    /// Where group events go: the listener thread. Taken (closed) by `close`.
    events: Mutex<Option<crossbeam_channel::Sender<GroupEvent>>>,
}

/// Who leads when a submission needs a leader and none is active.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeadMode {
    /// The calling thread leads (blocking calls).
    Inline,
    /// The background thread leads (`submit`, which never blocks on IO).
    Background,
}

/// One record joined to a group, as `Commit::join` reports it.
pub(crate) struct Joined<'a> {
    pub index: usize,
    pub lsn: u64,
    /// Borrowed: a batch keeps one reference per group, not one per record.
    pub group: &'a Arc<Group>,
    /// Records in the group when this one joined (for `Buffer` receipts).
    pub records_at_join: u32,
    /// Where the frame will be written.
    pub location: RecordLocation,
}

impl Commit {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: PathBuf,
        storage: Arc<dyn Storage>,
        opts: WalOptions,
        segments: Vec<Arc<Segment>>,
        tail: u64,
        next_lsn: u64,
        next_segment_seq: u64,
        pool: Pool,
        events: Option<crossbeam_channel::Sender<GroupEvent>>,
    ) -> Commit {
        let active = segments
            .last()
            .expect("a writable log has an active segment")
            .clone();
        let seed = opts.seed.unwrap_or_else(|| fastrand::u64(..));
        let last = next_lsn - 1;
        // Group buffers grow to what groups need; a large group_bytes_max reserves nothing
        // up front.
        let initial_buffer = opts.group_bytes_max.min(256 << 10);
        let track_ids = events.is_some() || cfg!(feature = "tracing");
        // rate × 2^64, saturating: 1.0 samples everything, 0.0 nothing.
        let sample_threshold = if opts.trace_sample_rate >= 1.0 {
            u64::MAX
        } else {
            (opts.trace_sample_rate * 18_446_744_073_709_551_616.0) as u64
        };
        Commit {
            track_ids,
            sample_threshold,
            sample_seed: splitmix64(seed ^ 0x5eed),
            events: Mutex::new(events),
            dir,
            storage,
            state: Mutex::new(State {
                next_lsn,
                open: OpenGroup::new(1, Vec::with_capacity(initial_buffer), next_lsn),
                leader_active: false,
                rotating: false,
                active,
                next_segment_seq,
                tail,
                written_lsn: last,
                durable_lsn: last,
                deferred: Vec::new(),
                refusal: None,
                closing: false,
                next_group_id: 2,
                flush_requested: false,
                kick: false,
                stop: false,
                spare: vec![Vec::with_capacity(initial_buffer)],
                spare_segment: None,
                preparing_spare: false,
                spare_wanted: false,
                space_waiters: 0,
                cost: CostModel::new(),
                rng: fastrand::Rng::with_seed(seed),
            }),
            opts,
            space_cv: Condvar::new(),
            background_cv: Condvar::new(),
            durable_lsn: AtomicU64::new(last),
            written_lsn: AtomicU64::new(last),
            active_writers: AtomicUsize::new(0),
            segments: RwLock::new(segments),
            pool,
            stats: CommitStats::default(),
        }
    }

    /// The next LSN to be assigned.
    pub fn next_lsn(&self) -> u64 {
        self.state.lock().next_lsn
    }

    /// Snapshot for readers: the segments and the LSN and offset written so far.
    pub fn read_snapshot(&self) -> (Vec<Arc<Segment>>, u64) {
        // Lock order: state, then segments (rotation pushes under both).
        let st = self.state.lock();
        // The atomic, not `st.written_lsn`: a leader publishes the atomic before it wakes
        // its group and updates the state's copy only once it has the lock again, so a
        // writer that another thread led can return before the copy moves. Its own record
        // must be readable at once (read-your-writes).
        let written = self.written_lsn.load(Ordering::Acquire).max(st.written_lsn);
        (self.segments.read().clone(), written)
    }

    /// Whether `frame_len` more bytes may join the open group.
    fn fits(&self, st: &State, frame_len: usize) -> bool {
        let bytes = st.open.buf.len() + frame_len;
        if st.open.records == 0 {
            return st.tail + bytes as u64 <= self.opts.segment_bytes;
        }
        let cap = self.cap(st);
        (st.open.records as usize) < cap.records && bytes <= cap.bytes
    }

    /// The open group's bounds: the room left in the segment, `group_bytes_max`,
    /// `group_records_max`, the small-leader rule and the lock-hold budget.
    fn cap(&self, st: &State) -> Cap {
        let room = usize::try_from(self.opts.segment_bytes - st.tail).unwrap_or(usize::MAX);
        let mut bytes = room.min(self.opts.group_bytes_max);
        let first = st.open.first_unit_bytes;
        if first <= SMALL_LEADER_BYTES {
            bytes = bytes.min(first + SMALL_LEADER_BYTES);
        }
        Cap {
            bytes: bytes.min(
                st.cost
                    .budget_bytes(self.opts.lock_hold_max.as_nanos() as f64),
            ),
            records: self.opts.group_records_max,
        }
    }

    /// Joins `frames` (already validated) to groups, in order, calling `on_join` for each,
    /// and makes sure each group that has waiters gets a leader. Returns the error that
    /// stopped the rest, if any. `more`: the caller (a pipelined batch) joins more records
    /// of the same batch right after, so it neither waits here nor ends the batch's pieces.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &self,
        frames: &[PartialFrame<'_>],
        indices: &[usize],
        durability: Durability,
        lead_mode: LeadMode,
        more: bool,
        mut on_join: impl FnMut(Joined<'_>),
    ) -> Option<Error> {
        let n = frames.len();
        if n == 0 {
            // Nothing to join and nothing to wait for. Going on would let an empty batch
            // claim the designated leadership of a group that holds only `Buffer` records:
            // no leader ever runs such a group, so the caller would sleep until the next
            // background sync (an hour, with the longest `sync_interval`).
            return None;
        }
        let mut remaining_bytes: usize = frames.iter().map(|f| f.len()).sum();
        let mut i = 0;
        let mut st = self.state.lock();
        while i < n {
            if let Some(r) = &st.refusal {
                return Some(r.error());
            }
            if st.closing {
                return Some(Error::Closed);
            }
            if st.rotating {
                self.wait_space(&mut st);
                continue;
            }
            if !self.fits(&st, frames[i].len()) {
                if st.leader_active {
                    self.wait_space(&mut st);
                    continue;
                }
                if st.open.records > 0 && lead_mode == LeadMode::Background {
                    // A full group nobody leads, and this caller must not block on IO:
                    // hand it to the background thread and wait for room.
                    st.kick = true;
                    self.background_cv.notify_one();
                    self.wait_space(&mut st);
                    continue;
                }
                if st.open.records > 0 {
                    // A full group with nobody leading it (buffer-only): write it first.
                    st.leader_active = true;
                    self.lead(&mut st, true);
                } else if let Err(e) = self.rotate(&mut st) {
                    return Some(e);
                }
                continue;
            }
            if st.open.records == 0 {
                st.open.first_unit_bytes = remaining_bytes;
                st.open.first_lsn = st.next_lsn;
                st.open.opened_at = Some(Instant::now());
            }
            let salt = st.active.header.salt;
            // A `Sync` batch that leads its own group (nobody else waits in it, no leader is
            // busy) is written in pieces, each synced only by the batch's last group: see
            // `WalOptions::pipeline_bytes`.
            let pipeline_at = match self.opts.pipeline_bytes {
                Some(bytes)
                    if lead_mode == LeadMode::Inline
                        && durability == Durability::Sync
                        && !st.open.has_waiters
                        && !st.leader_active =>
                {
                    bytes
                }
                _ => usize::MAX,
            };
            // The bounds, computed once the group holds a record: they cannot change while
            // this loop holds the lock.
            let mut cap = None;
            loop {
                let lsn = st.next_lsn;
                st.next_lsn += 1;
                let frame = &frames[i];
                // `tail` is where the open group will be written, in the active segment: a
                // group never spans segments and rotation waits for an empty open group.
                let location = RecordLocation {
                    segment: st.active.seq(),
                    offset: st.tail + st.open.buf.len() as u64,
                };
                frame.finish_into(lsn, salt, &mut st.open.buf);
                st.open.records += 1;
                if let (true, Some(id)) = (self.track_ids, frame.correlation_id()) {
                    st.open.ids.push((lsn, id));
                }
                remaining_bytes -= frame.len();
                on_join(Joined {
                    index: indices[i],
                    lsn,
                    group: &st.open.group,
                    records_at_join: st.open.records,
                    location,
                });
                i += 1;
                if i == n || st.open.buf.len() >= pipeline_at {
                    break;
                }
                let cap = cap.get_or_insert_with(|| self.cap(&st));
                if st.open.records as usize >= cap.records
                    || st.open.buf.len() + frames[i].len() > cap.bytes
                {
                    break;
                }
            }
            let piece = (i < n || more) && pipeline_at != usize::MAX;
            if durability != Durability::Buffer {
                st.open.has_waiters = true;
                st.open.sync_deferred |= piece;
                st.open.needs_sync |= durability == Durability::Sync && !piece;
            }
            if piece {
                // This caller leads anyway, and its next piece is encoded while the device
                // writes this one.
                st.leader_active = true;
                self.lead(&mut st, false);
            }
        }
        if durability == Durability::Buffer {
            return None;
        }
        if !st.leader_active {
            match lead_mode {
                LeadMode::Inline => {
                    st.leader_active = true;
                    self.lead(&mut st, false);
                }
                LeadMode::Background => {
                    st.kick = true;
                    self.background_cv.notify_one();
                }
            }
        } else if more {
            // The busy leader runs the group these records joined; the batch goes on.
        } else if lead_mode == LeadMode::Inline && !st.open.leader_claimed && st.open.records > 0 {
            // Become the designated next leader of the group we are in.
            st.open.leader_claimed = true;
            st.open.group.claim();
            let group = st.open.group.clone();
            drop(st);
            if group.wait_for_lead() {
                let mut st = self.state.lock();
                self.lead(&mut st, false);
            }
        }
        None
    }

    /// Waits until the open group is taken, a leader finishes, or rotation ends.
    fn wait_space(&self, st: &mut MutexGuard<'_, State>) {
        st.space_waiters += 1;
        self.space_cv.wait(st);
        st.space_waiters -= 1;
    }

    /// Whether `try_submit` would have to wait for room.
    pub fn would_block(&self, frame_len: usize) -> bool {
        let st = self.state.lock();
        st.rotating || (st.leader_active && !self.fits(&st, frame_len))
    }

    /// The leader loop. Called with `leader_active` set by the caller; returns with it clear
    /// or handed to a designated leader. `force` makes the first cycle run (and sync) even
    /// for a buffer-only group or no group at all.
    fn lead(&self, st: &mut MutexGuard<'_, State>, mut force: bool) {
        debug_assert!(st.leader_active);
        let mut led = 0;
        loop {
            force |= std::mem::take(&mut st.flush_requested);
            let unsynced = st.written_lsn > st.durable_lsn;
            let run =
                (st.open.records > 0 && (st.open.has_waiters || force)) || (force && unsynced);
            if !run {
                st.leader_active = false;
                if st.space_waiters > 0 {
                    self.space_cv.notify_all();
                }
                return;
            }
            if let Some(delay) = self.opts.commit_delay {
                if self.active_writers.load(Ordering::Relaxed) >= self.opts.commit_siblings {
                    MutexGuard::unlocked(st, || std::thread::sleep(delay));
                }
            }
            self.run_group(st, force);
            led += 1;
            force = false;
            if st.refusal.is_some() {
                st.leader_active = false;
                self.space_cv.notify_all();
                return;
            }
            if led >= LEADER_GROUPS_MAX
                && st.open.records > 0
                && st.open.has_waiters
                && st.open.leader_claimed
            {
                // Hand over to the designated leader, which is asleep on its own word.
                st.open.group.hand_over();
                return;
            }
        }
    }

    /// One leader cycle: take the open group, write it and sync it outside the lock, wake
    /// its writers.
    fn run_group(&self, st: &mut MutexGuard<'_, State>, force_sync: bool) {
        let spare = st.spare.pop().unwrap_or_default();
        let next_id = st.next_group_id;
        st.next_group_id += 1;
        let next_lsn = st.next_lsn;
        let open = std::mem::replace(&mut st.open, OpenGroup::new(next_id, spare, next_lsn));
        // The group being written is the one taken, not the one that opens in its place:
        // events and messages must name the id its receipts carry.
        let group_id = open.group.id;
        let records = open.records;
        open.group.records.store(records, Ordering::Relaxed);
        let offset = st.tail;
        st.tail += open.buf.len() as u64;
        if self.opts.prepare_next_segment
            && st.tail > self.opts.segment_bytes / 2
            && offset <= self.opts.segment_bytes / 2
            && st.spare_segment.is_none()
        {
            // Half way through the active segment: time to prepare the next one, so that
            // rotation does not zero-fill it while every writer waits.
            st.spare_wanted = true;
            self.background_cv.notify_one();
        }
        let segment = st.active.clone();
        let sync = open.needs_sync || force_sync;
        // A pipelined piece is only written; a synced group settles the pieces before it.
        let deferred = open.sync_deferred && !sync;
        let mut settled = if sync {
            std::mem::take(&mut st.deferred)
        } else {
            Vec::new()
        };
        let (first_lsn, last_lsn) = if records > 0 {
            (open.first_lsn, open.first_lsn + records as u64 - 1)
        } else {
            (st.durable_lsn + 1, st.written_lsn)
        };
        let queue_wait = open.opened_at.map_or(Duration::ZERO, |t| t.elapsed());
        self.stats
            .queue_depth
            .record(records as u64 + st.space_waiters as u64);
        if st.space_waiters > 0 {
            self.space_cv.notify_all();
        }
        let group = open.group;
        let mut buf = open.buf;
        let bytes = buf.len();
        if bytes > 0 {
            // The end marker (docs/FORMAT.md, "End of log"): zeros after the last frame, in
            // the same write. `tail` moved by the frames only: the next group overwrites it.
            buf.resize(bytes + segment.end_marker_len(offset + bytes as u64), 0);
        }
        #[cfg(feature = "tracing")]
        let span = tracing::debug_span!(
            "group_commit",
            group_id,
            first_lsn,
            last_lsn,
            records,
            bytes,
            synced = sync
        );

        let (result, write_time, sync_time) = MutexGuard::unlocked(st, || {
            #[cfg(feature = "tracing")]
            let _entered = span.enter();
            let t0 = Instant::now();
            let mut result = if bytes > 0 {
                segment.file.write_all_at(&buf, offset)
            } else {
                Ok(())
            };
            if deferred && result.is_ok() {
                // Whole pages only: the next piece writes the rest of the last one, and a
                // page written back twice costs the device twice.
                let from = offset / WRITEBACK_PAGE * WRITEBACK_PAGE;
                let to = (offset + bytes as u64) / WRITEBACK_PAGE * WRITEBACK_PAGE;
                if to > from {
                    segment.file.start_writeback(from, to - from);
                }
            }
            let t1 = Instant::now();
            if result.is_ok() && sync {
                result = segment.file.sync_data();
                self.stats.syncs.add(1);
            }
            let t2 = Instant::now();
            if result.is_ok() {
                // Publish before waking: a woken writer may read durable_lsn at once.
                self.written_lsn.fetch_max(last_lsn, Ordering::Release);
                if sync {
                    self.durable_lsn.fetch_max(last_lsn, Ordering::Release);
                }
                for piece in &settled {
                    piece.group.finish(None);
                }
                if !deferred {
                    group.finish(None);
                }
            }
            (result, t1 - t0, t2 - t1)
        });

        buf.clear();
        st.spare.push(buf);
        let hold = write_time + sync_time;
        self.stats.groups.add(1);
        self.stats.group_records.record(records as u64);
        self.stats.group_bytes.record(bytes as u64);
        self.stats.write_ns.record(write_time.as_nanos() as u64);
        if sync {
            self.stats.sync_ns.record(sync_time.as_nanos() as u64);
        }
        self.stats.hold_ns.record(hold.as_nanos() as u64);
        self.stats
            .queue_wait_ns
            .record(queue_wait.as_nanos() as u64);
        let failure = match result {
            Ok(()) => {
                st.written_lsn = last_lsn.max(st.written_lsn);
                if sync {
                    st.durable_lsn = st.written_lsn;
                }
                if bytes > 0 && sync {
                    st.cost.observe(bytes, hold.as_nanos() as u64);
                }
                self.stats.records.add(records as u64);
                self.stats.bytes.add(bytes as u64);
                None
            }
            Err(e) => {
                let message = e.to_string();
                // Pieces written before this group (if it was not to sync them) were never
                // synced: they fail with it, not with the poisoning that follows.
                settled.append(&mut st.deferred);
                self.poison(st, format!("group {group_id} failed: {message}"));
                self.stats.failed_groups.add(1);
                let failure = Failure::Unknown {
                    kind: e.kind(),
                    message,
                };
                group.finish(Some(failure.clone()));
                Some(failure)
            }
        };
        // The pieces this sync covered share its outcome; their events come first (group
        // order).
        self.settle(settled, failure.as_ref());
        let event = self.track_ids.then(|| GroupEvent {
            group_id,
            first_lsn,
            last_lsn,
            records,
            bytes: bytes as u64,
            synced: sync,
            queue_wait,
            write_time,
            sync_time,
            correlation_ids: open.ids,
            error: failure.as_ref().map(Failure::message),
            refused: false,
        });
        if deferred && failure.is_none() {
            st.deferred.push(Deferred { group, event });
        } else if let Some(event) = event {
            self.emit_outcome(event);
        }
    }

    /// Finishes pieces of a pipelined batch once the sync that covers them is done: the
    /// groups were already woken if it succeeded, and fail with `failure` if it did not.
    /// Emits their events.
    fn settle(&self, pieces: Vec<Deferred>, failure: Option<&Failure>) {
        for piece in pieces {
            if let Some(f) = failure {
                piece.group.finish(Some(f.clone()));
                self.stats.failed_groups.add(1);
            }
            if let Some(mut event) = piece.event {
                event.synced = failure.is_none();
                event.error = failure.map(Failure::message);
                self.emit_outcome(event);
            }
        }
    }

    /// Emits a finished group's event: all the correlation ids of a failed group, a sample
    /// of a committed one's.
    fn emit_outcome(&self, mut event: GroupEvent) {
        if event.error.is_none() {
            event.correlation_ids.retain(|&(lsn, _)| self.sampled(lsn));
        }
        self.emit(event);
    }

    /// Whether per-record events are emitted for `lsn`: a deterministic hash of the LSN
    /// under `trace_sample_rate`, so no state is shared between writers.
    fn sampled(&self, lsn: u64) -> bool {
        self.sample_threshold == u64::MAX
            || splitmix64(lsn ^ self.sample_seed) < self.sample_threshold
    }

    /// Hands a group's event to the listener thread and to `tracing`. Never called with
    /// the state lock's critical work pending: the group's writers are already woken.
    fn emit(&self, event: GroupEvent) {
        #[cfg(feature = "tracing")]
        {
            match &event.error {
                Some(error) => tracing::error!(
                    group_id = event.group_id,
                    first_lsn = event.first_lsn,
                    last_lsn = event.last_lsn,
                    error = %error,
                    "group failed"
                ),
                None => tracing::debug!(
                    group_id = event.group_id,
                    records = event.records,
                    bytes = event.bytes,
                    write_us = event.write_time.as_micros() as u64,
                    sync_us = event.sync_time.as_micros() as u64,
                    "group committed"
                ),
            }
            for (lsn, id) in &event.correlation_ids {
                tracing::trace!(group_id = event.group_id, lsn, correlation_id = %id, "record");
            }
        }
        if let Some(tx) = &*self.events.lock() {
            // Blocks only if the listener is 1024 events behind (backpressure); fails only
            // if the listener thread died (a panicking listener), which loses its events.
            let _ = tx.send(event);
        }
    }

    /// Refuses all further work and fails the open group. Everyone waiting is woken.
    fn poison(&self, st: &mut State, reason: String) {
        // Pieces of a pipelined batch were written, but the sync meant to cover them will
        // never come: their outcome is unknown.
        let pieces = std::mem::take(&mut st.deferred);
        self.settle(
            pieces,
            Some(&Failure::Unknown {
                kind: io::ErrorKind::Other,
                message: reason.clone(),
            }),
        );
        if st.refusal.is_none() {
            st.refusal = Some(RefusalKind::Poisoned(reason));
        }
        self.fail_open_group(st);
    }

    fn fail_open_group(&self, st: &mut State) {
        let refusal = st.refusal.clone().expect("called once refused");
        if st.open.records > 0 || st.open.has_waiters {
            let id = st.next_group_id;
            st.next_group_id += 1;
            let next_lsn = st.next_lsn;
            let spare = st.spare.pop().unwrap_or_default();
            let mut open = std::mem::replace(&mut st.open, OpenGroup::new(id, spare, next_lsn));
            open.group.finish(Some(Failure::Refused(refusal.clone())));
            open.buf.clear();
            st.spare.push(open.buf);
            if open.records > 0 {
                self.stats.failed_groups.add(1);
                let error = refusal.error().to_string();
                self.emit(GroupEvent {
                    group_id: open.group.id,
                    first_lsn: open.first_lsn,
                    last_lsn: open.first_lsn + open.records as u64 - 1,
                    records: open.records,
                    bytes: 0,
                    synced: false,
                    queue_wait: open.opened_at.map_or(Duration::ZERO, |t| t.elapsed()),
                    write_time: Duration::ZERO,
                    sync_time: Duration::ZERO,
                    correlation_ids: open.ids,
                    error: Some(error),
                    refused: true,
                });
            }
        }
        self.space_cv.notify_all();
        self.background_cv.notify_all();
    }

    /// Seals the active segment (syncing what it holds) and creates the next one. Called
    /// with an empty open group and no leader. A creation failure before the new segment is
    /// named (a full disk) fails only the caller and leaves the log usable; a failed seal
    /// sync, or a failed directory sync after the new segment was named, poisons it.
    fn rotate(&self, st: &mut MutexGuard<'_, State>) -> Result<()> {
        debug_assert!(st.open.records == 0 && !st.leader_active);
        st.rotating = true;
        st.leader_active = true;
        while st.preparing_spare {
            self.wait_space(st);
        }
        let spare = st.spare_segment.take();
        let old = st.active.clone();
        let unsynced = st.written_lsn > st.durable_lsn;
        let header = SegmentHeader {
            segment_seq: st.next_segment_seq,
            first_lsn: st.next_lsn,
            salt: st.rng.u64(..),
        };
        let written = st.written_lsn;
        // The seal's sync covers the pieces of a pipelined batch written so far.
        let settled = std::mem::take(&mut st.deferred);
        debug_assert!(
            settled.is_empty() || unsynced,
            "written pieces are unsynced"
        );
        let (seal, created) = MutexGuard::unlocked(st, || {
            if unsynced {
                self.stats.syncs.add(1);
                if let Err(e) = old.file.sync_data() {
                    if let Some(spare) = spare {
                        self.pool.discard(spare);
                    }
                    return (Err(e), None);
                }
                self.durable_lsn.fetch_max(written, Ordering::Release);
            }
            for piece in &settled {
                piece.group.finish(None);
            }
            let created = create_segment(
                &*self.storage,
                &self.dir,
                header,
                self.opts.segment_bytes,
                self.opts.preallocation,
                spare,
                &self.pool,
            );
            (Ok(()), Some(created))
        });
        st.rotating = false;
        st.leader_active = false;
        self.space_cv.notify_all();
        if let Err(e) = seal {
            let reason = format!("sealing segment {} failed: {e}", old.seq());
            self.settle(
                settled,
                Some(&Failure::Unknown {
                    kind: e.kind(),
                    message: reason.clone(),
                }),
            );
            self.poison(st, reason.clone());
            return Err(Error::Poisoned { reason });
        }
        self.settle(settled, None);
        if unsynced {
            st.durable_lsn = written;
        }
        let segment = match created.expect("created when the seal succeeded") {
            Ok(segment) => Arc::new(segment),
            Err(CreateError { error, named: true }) => {
                // The new segment exists under its name, starting at the next LSN, but the
                // directory sync that would make it durable failed. Appending to the old
                // segment now would give two segments the same LSNs (recovery refuses such
                // a log), and retrying the sync proves nothing: fail-stop, as for any failed
                // sync. Reopening syncs the directory before it accepts appends.
                let reason = format!("creating segment {} failed: {error}", header.segment_seq);
                self.poison(st, reason.clone());
                return Err(Error::Poisoned { reason });
            }
            Err(CreateError {
                error,
                named: false,
            }) => return Err(error),
        };
        self.segments.write().push(segment.clone());
        st.active = segment;
        st.tail = SEGMENT_HEADER_BYTES as u64;
        st.next_segment_seq += 1;
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<()> {
        let mut st = self.state.lock();
        // The barrier is what was appended before the call. Re-reading it on every turn let
        // a steady stream of appends starve the caller for seconds.
        let target = st.next_lsn - 1;
        loop {
            if let Some(r) = &st.refusal {
                return Err(r.error());
            }
            if st.durable_lsn >= target {
                return Ok(());
            }
            if !st.leader_active && !st.rotating {
                st.leader_active = true;
                self.lead(&mut st, true);
            } else if st.open.records > 0 {
                st.open.has_waiters = true;
                st.open.needs_sync = true;
                let group = st.open.group.clone();
                MutexGuard::unlocked(&mut st, || group.wait(None));
            } else {
                // The last records are in the group being written, which may not sync.
                st.flush_requested = true;
                self.wait_space(&mut st);
            }
        }
    }

    /// Counts a writer in or out of the log, for `commit_siblings`; free when `commit_delay`
    /// is off (a shared counter touched by every append costs cache-line traffic).
    pub fn writer_enter(&self) {
        if self.opts.commit_delay.is_some() {
            self.active_writers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// See [`Commit::writer_enter`].
    pub fn writer_exit(&self) {
        if self.opts.commit_delay.is_some() {
            self.active_writers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The background thread: periodic syncs with jitter, and leading for `submit`.
    pub fn background(&self) {
        let mut st = self.state.lock();
        loop {
            let jitter = self.opts.sync_interval_jitter.as_nanos() as u64;
            let extra = if jitter == 0 {
                0
            } else {
                st.rng.u64(0..=jitter)
            };
            let deadline = Instant::now() + self.opts.sync_interval + Duration::from_nanos(extra);
            while !st.stop && !st.kick && !st.spare_wanted && Instant::now() < deadline {
                self.background_cv.wait_until(&mut st, deadline);
            }
            if st.stop {
                return;
            }
            if st.spare_wanted {
                self.prepare_spare(&mut st);
                if st.stop {
                    return;
                }
            }
            st.kick = false;
            let pending = st.open.records > 0 || st.written_lsn > st.durable_lsn;
            if !pending || st.refusal.is_some() {
                continue;
            }
            if st.leader_active || st.rotating {
                st.flush_requested = true;
            } else {
                st.leader_active = true;
                self.lead(&mut st, true);
            }
        }
    }

    /// Background: prepares the next segment's file so rotation need not zero-fill it while
    /// every writer waits. A failure (a full disk) is not an error here: rotation then creates
    /// the segment itself and reports what goes wrong to the writer that needed it.
    fn prepare_spare(&self, st: &mut MutexGuard<'_, State>) {
        st.spare_wanted = false;
        // A rotation in flight is creating the segment `next_segment_seq` names: preparing
        // it too once replaced the rotation's `.tmp` file with a header-less one, which the
        // rotation then renamed into place (tests/api.rs tells the story). The next segment
        // becomes half full soon enough to ask again.
        if st.refusal.is_some() || st.spare_segment.is_some() || st.rotating {
            return;
        }
        st.preparing_spare = true;
        let seq = st.next_segment_seq;
        let prepared = MutexGuard::unlocked(st, || {
            prepare_spare(
                &*self.storage,
                &self.dir,
                seq,
                self.opts.segment_bytes,
                self.opts.preallocation,
                &self.pool,
            )
        });
        st.preparing_spare = false;
        self.space_cv.notify_all();
        if let Ok(spare) = prepared {
            if spare.suits(st.next_segment_seq) && !st.stop {
                st.spare_segment = Some(spare);
            } else {
                self.pool.discard(spare);
            }
        }
    }

    /// Drains and stops: refuses new records, writes and syncs everything queued, stops the
    /// background thread. Returns the poisoning error, if the log was poisoned.
    pub fn close(&self) -> Result<()> {
        let mut st = self.state.lock();
        if st.stop {
            return match &st.refusal {
                Some(RefusalKind::Poisoned(reason)) => Err(Error::Poisoned {
                    reason: reason.clone(),
                }),
                _ => Ok(()),
            };
        }
        // Refuse new records first: records that joined while the final group was being
        // written used to be acknowledged (`Buffer`) and then dropped with the open group.
        st.closing = true;
        self.space_cv.notify_all();
        while st.leader_active || st.rotating {
            self.wait_space(&mut st);
        }
        let result = match &st.refusal {
            Some(r) => Err(r.error()),
            None => {
                st.leader_active = true;
                self.lead(&mut st, true);
                match &st.refusal {
                    Some(r) => Err(r.error()),
                    None => Ok(()),
                }
            }
        };
        if st.refusal.is_none() {
            st.refusal = Some(RefusalKind::Closed);
        }
        self.fail_open_group(&mut st);
        st.stop = true;
        if let Some(spare) = st.spare_segment.take() {
            self.pool.discard(spare);
        }
        self.background_cv.notify_all();
        drop(st);
        // Closing the channel ends the listener thread once it has seen every event.
        self.events.lock().take();
        result
    }

    /// Whether an IO failure poisoned the log.
    pub fn is_poisoned(&self) -> bool {
        matches!(self.state.lock().refusal, Some(RefusalKind::Poisoned(_)))
    }
}

/// SplitMix64: a fast, well-mixed 64-bit hash (Steele, Lea and Flood 2014).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// How long a test waits for a thread that should wake: long enough for any machine, and
    /// only reached when a wake-up is lost.
    const BOUND: Duration = Duration::from_secs(30);

    /// A thread running a closure: its kernel thread id, and where its result arrives.
    struct Spawned<T> {
        tid: libc::pid_t,
        result: mpsc::Receiver<T>,
    }

    /// Runs `f` on a new thread.
    fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Spawned<T> {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (tx, result) = mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            #[allow(unsafe_code)]
            let _ = tid_tx.send(unsafe { libc::gettid() });
            let _ = tx.send(f());
        });
        let tid = tid_rx
            .recv_timeout(BOUND)
            .expect("a new thread reports its id");
        Spawned { tid, result }
    }

    /// The thread's result, or a failed test if it does not return within `BOUND` (a lost
    /// wake-up).
    fn joined<T>(thread: &Spawned<T>, what: &str) -> T {
        thread
            .result
            .recv_timeout(BOUND)
            .unwrap_or_else(|_| panic!("{what} did not return within {BOUND:?}: a lost wake-up"))
    }

    /// Returns once the thread is asleep in the kernel (state `S` in
    /// `/proc/self/task/<tid>/stat`); the closures here only block in a futex wait. Fails
    /// the test if it is not asleep within `BOUND`.
    fn until_asleep<T>(thread: &Spawned<T>, what: &str) {
        let path = format!("/proc/self/task/{}/stat", thread.tid);
        let deadline = Instant::now() + BOUND;
        loop {
            let stat = std::fs::read_to_string(&path).unwrap_or_default();
            // The state follows the command name, which is in parentheses.
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            if state == Some('S') {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} was not asleep within {BOUND:?} (state {state:?})"
            );
            std::thread::yield_now();
        }
    }

    /// Returns once a writer has announced its sleep on `group`; fails the test if none does
    /// within `BOUND`.
    fn until_a_writer_sleeps_on(group: &Group) {
        let deadline = Instant::now() + BOUND;
        while group.status.load(Ordering::Acquire) != SLEEPING {
            assert!(
                Instant::now() < deadline,
                "no writer announced its sleep within {BOUND:?}"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn sleeping_writers_and_the_designated_leader_see_the_outcome() {
        for round in 0..200 {
            let group = Group::new(round);
            let waiters: Vec<_> = (0..4)
                .map(|_| {
                    let g = group.clone();
                    on_thread(move || g.wait(None))
                })
                .collect();
            group.claim();
            let claimant = {
                let g = group.clone();
                on_thread(move || g.wait_for_lead())
            };
            // Finish at once on even rounds (racing the waiters into their sleep); on odd
            // ones, once every waiter and the claimant are asleep.
            if round % 2 == 1 {
                until_a_writer_sleeps_on(&group);
                for w in &waiters {
                    until_asleep(w, "a writer waiting for its group");
                }
                until_asleep(&claimant, "the designated leader");
            }
            group.finish(None);
            for w in &waiters {
                assert!(joined(w, "a writer waiting for its group"));
            }
            assert!(
                !joined(&claimant, "the designated leader"),
                "a finished group's designated leader must not lead it"
            );
            assert!(group.is_done());
        }
    }

    #[test]
    fn a_failed_group_wakes_its_writers_with_the_failure() {
        let group = Group::new(7);
        let g = group.clone();
        let waiter = on_thread(move || {
            assert!(g.wait(None));
            g.receipt(
                3,
                Durability::Sync,
                None,
                RecordLocation {
                    segment: 1,
                    offset: 0,
                },
            )
        });
        until_a_writer_sleeps_on(&group);
        until_asleep(&waiter, "a writer waiting for its group");
        group.finish(Some(Failure::Unknown {
            kind: io::ErrorKind::Other,
            message: "injected".into(),
        }));
        match joined(&waiter, "a writer of a failed group") {
            Err(Error::OutcomeUnknown { group_id: 7, .. }) => {}
            other => panic!("expected OutcomeUnknown for group 7, got {other:?}"),
        }
    }

    #[test]
    fn a_designated_leader_told_to_lead_leads() {
        let group = Group::new(1);
        group.claim();
        let g = group.clone();
        let claimant = on_thread(move || g.wait_for_lead());
        until_asleep(&claimant, "the designated leader");
        group.hand_over();
        assert!(joined(&claimant, "the designated leader"));
        // The group it leads then finishes without anyone left to wake on the lead word.
        group.finish(None);
        assert!(group.wait(Some(Duration::ZERO)));
    }

    #[test]
    fn a_wait_with_a_timeout_gives_up_while_pending_and_returns_at_once_when_done() {
        let group = Group::new(1);
        // A poll that gives up at once announces no sleep: the leader owes it no wake-up.
        assert!(!group.wait(Some(Duration::ZERO)));
        assert_eq!(group.status.load(Ordering::Acquire), PENDING);
        assert!(!group.wait(Some(Duration::from_millis(1))));
        assert!(!group.is_done());
        group.finish(None);
        assert!(group.wait(Some(Duration::ZERO)));
        assert!(group.wait(None));
    }
}
