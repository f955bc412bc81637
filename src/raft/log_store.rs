//! [`GroupwalLogStore`]: openraft's `RaftLogStorage` on one groupwal log.
//!
//! Everything the store must keep is a record in one WAL: entries, votes, committed ids,
//! truncation markers and purge markers (see [`codec`](super::codec)). Opening replays the
//! WAL into an in-memory index (log index → WAL LSN and log id) plus the metadata; entries
//! are read back from the WAL on demand, with the most recent ones cached.

use super::codec::{self, Checkpoint, Payload};
use super::completion::{self, Done, Pending};
use super::options::LogStoreOptions;
use crate::error::Error;
use crate::wal::{Durability, Record, Ticket, Wal, WalStats};
use crossbeam_channel::Sender;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader,
    RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

type NodeIdOf<C> = <C as RaftTypeConfig>::NodeId;
type StorageResult<T, C> = Result<T, StorageError<NodeIdOf<C>>>;

/// Why [`GroupwalLogStore::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The WAL could not be opened or read (IO, corruption, lock held by another handle).
    #[error(transparent)]
    Wal(#[from] Error),
    /// A WAL record is not a valid Raft log record, or the entries it describes break the
    /// log's order (a hole or a step back in log indexes without a truncation marker).
    #[error("raft log record at LSN {lsn}: {reason}; the directory is not a groupwal Raft log or it is damaged")]
    BadRecord {
        /// The WAL record's LSN.
        lsn: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The completion thread could not be started.
    #[error("start the completion thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Counters of one store, besides the WAL's own ([`RaftLogStats::wal`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RaftLogStats {
    /// `append` calls.
    pub append_calls: u64,
    /// Entries appended.
    pub entries: u64,
    /// Metadata records written (votes, committed ids, truncation and purge markers).
    pub meta_records: u64,
    /// Entries read back from the WAL because they were not in the cache.
    pub cache_misses: u64,
    /// The WAL's statistics: `wal.syncs` is the number of `fdatasync`s.
    pub wal: WalStats,
}

/// A live entry: where it is in the WAL and its log id.
#[derive(Clone, Debug)]
struct Slot<NID: openraft::NodeId> {
    lsn: u64,
    log_id: LogId<NID>,
}

/// What the store knows, rebuilt from the WAL on open.
struct State<C: RaftTypeConfig> {
    /// The live entries, by log index: consecutive, all above `purged`.
    slots: BTreeMap<u64, Slot<NodeIdOf<C>>>,
    /// Encoded bodies of recent entries, by log index (a subset of `slots`).
    cache: BTreeMap<u64, Arc<[u8]>>,
    purged: Option<LogId<NodeIdOf<C>>>,
    vote: Option<Vote<NodeIdOf<C>>>,
    committed: Option<LogId<NodeIdOf<C>>>,
}

impl<C: RaftTypeConfig> State<C> {
    fn last_log_id(&self) -> Option<LogId<NodeIdOf<C>>> {
        self.slots
            .last_key_value()
            .map(|(_, s)| s.log_id.clone())
            .or_else(|| self.purged.clone())
    }

    /// Index the next entry must have, if known.
    fn next_index(&self) -> Option<u64> {
        match self.slots.last_key_value() {
            Some((&i, _)) => Some(i + 1),
            None => self.purged.as_ref().map(|p| p.index + 1),
        }
    }

    fn truncate(&mut self, since: u64) {
        self.slots.split_off(&since);
        self.cache.split_off(&since);
    }

    fn purge(&mut self, upto: &LogId<NodeIdOf<C>>) {
        let keep_from = upto.index.saturating_add(1);
        self.slots = self.slots.split_off(&keep_from);
        self.cache = self.cache.split_off(&keep_from);
        if self.purged.as_ref().map_or(true, |p| p.index < upto.index) {
            self.purged = Some(upto.clone());
        }
    }
}

struct Shared<C: RaftTypeConfig> {
    wal: Wal,
    state: Mutex<State<C>>,
    completions: Mutex<Option<Sender<Pending<C>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    options: LogStoreOptions,
    record_bytes_max: usize,
    append_calls: AtomicU64,
    entries: AtomicU64,
    meta_records: AtomicU64,
    cache_misses: AtomicU64,
}

impl<C: RaftTypeConfig> Drop for Shared<C> {
    fn drop(&mut self) {
        // Close first: it writes and syncs whatever is queued, so every ticket completes and
        // the completion thread can deliver every callback before it sees the channel close.
        let _ = self.wal.close();
        self.completions.lock().take();
        if let Some(handle) = self.thread.lock().take() {
            // The thread only waits on tickets, which the close has completed.
            let _ = handle.join();
        }
    }
}

/// openraft's log storage on a groupwal log (openraft 0.9, `storage-v2`).
///
/// Entries, votes, committed ids and truncation/purge markers are records of one WAL, so one
/// `fdatasync` stream makes all of them durable, in order. `append` returns once the entries
/// are readable and queued; its callback fires on a single completion thread when the group
/// commit covering them is durable, so concurrent appends share `fdatasync`s. See
/// `docs/RAFT.md` for what is durable when and how recovery treats each crash.
///
/// Cloning is cheap and shares the log (the clone is a second handle, not a copy).
pub struct GroupwalLogStore<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
}

impl<C: RaftTypeConfig> Clone for GroupwalLogStore<C> {
    fn clone(&self) -> Self {
        GroupwalLogStore {
            shared: self.shared.clone(),
        }
    }
}

impl<C: RaftTypeConfig> Debug for GroupwalLogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupwalLogStore")
            .field("wal", &self.shared.wal)
            .finish()
    }
}

/// A reader of a [`GroupwalLogStore`]'s entries, for openraft's replication tasks.
pub struct GroupwalLogReader<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
}

impl<C: RaftTypeConfig> Clone for GroupwalLogReader<C> {
    fn clone(&self) -> Self {
        GroupwalLogReader {
            shared: self.shared.clone(),
        }
    }
}

fn io_err<C: RaftTypeConfig>(
    subject: ErrorSubject<NodeIdOf<C>>,
    verb: ErrorVerb,
    e: &(dyn std::error::Error + 'static),
) -> StorageError<NodeIdOf<C>> {
    StorageIOError::new(subject, verb, AnyError::from_dyn(e, None)).into()
}

fn write_err<C: RaftTypeConfig>(
    subject: ErrorSubject<NodeIdOf<C>>,
    e: &(dyn std::error::Error + 'static),
) -> StorageError<NodeIdOf<C>> {
    io_err::<C>(subject, ErrorVerb::Write, e)
}

impl<C: RaftTypeConfig> GroupwalLogStore<C> {
    /// Opens (creating if needed) the Raft log in directory `dir`, replaying it to rebuild the
    /// index and the metadata. Blocks for the replay; call it before starting the Raft node.
    pub fn open(dir: impl AsRef<Path>, options: LogStoreOptions) -> Result<Self, OpenError> {
        let wal = Wal::open(dir, options.wal.clone())?;
        let mut state = State::<C> {
            slots: BTreeMap::new(),
            cache: BTreeMap::new(),
            purged: None,
            vote: None,
            committed: None,
        };
        for record in wal.read_from(wal.first_lsn()) {
            let record = record?;
            let lsn = record.lsn;
            let bad = |reason: String| OpenError::BadRecord { lsn, reason };
            match codec::decode::<NodeIdOf<C>>(&record.payload).map_err(bad)? {
                Payload::Entry { log_id, .. } => {
                    // An entry at or below the last one needs a truncation marker between
                    // them: without one the log was not written by this store (or is
                    // damaged). A gap above is the caller's (openraft never leaves one,
                    // though its test suite does), so it is kept as written.
                    if let Some(next) = state.next_index() {
                        if log_id.index < next {
                            return Err(bad(format!(
                                "entry {log_id} overwrites index {} with no truncation marker",
                                log_id.index
                            )));
                        }
                    }
                    state.slots.insert(log_id.index, Slot { lsn, log_id });
                }
                Payload::Vote(vote) => state.vote = Some(vote),
                Payload::Committed(committed) => state.committed = committed,
                Payload::Truncate { since } => state.truncate(since),
                Payload::Purge(Checkpoint {
                    purged,
                    vote,
                    committed,
                }) => {
                    state.purge(&purged);
                    state.vote = vote;
                    state.committed = committed;
                }
            }
        }
        let (tx, thread) = completion::start::<C>().map_err(OpenError::Thread)?;
        let record_bytes_max = options.wal.effective_record_bytes_max();
        Ok(GroupwalLogStore {
            shared: Arc::new(Shared {
                wal,
                state: Mutex::new(state),
                completions: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                options,
                record_bytes_max,
                append_calls: AtomicU64::new(0),
                entries: AtomicU64::new(0),
                meta_records: AtomicU64::new(0),
                cache_misses: AtomicU64::new(0),
            }),
        })
    }

    /// The WAL under the store (for its statistics, `durable_lsn`, a `sync`).
    pub fn wal(&self) -> &Wal {
        &self.shared.wal
    }

    /// The store's counters and the WAL's.
    pub fn stats(&self) -> RaftLogStats {
        let s = &self.shared;
        RaftLogStats {
            append_calls: s.append_calls.load(Ordering::Relaxed),
            entries: s.entries.load(Ordering::Relaxed),
            meta_records: s.meta_records.load(Ordering::Relaxed),
            cache_misses: s.cache_misses.load(Ordering::Relaxed),
            wal: s.wal.stats(),
        }
    }
}

impl<C: RaftTypeConfig> Shared<C> {
    fn enqueue(&self, pending: Pending<C>) -> Result<(), Error> {
        let tx = self.completions.lock().clone().ok_or(Error::Closed)?;
        tx.send(pending).map_err(|_| Error::Closed)
    }

    /// Submits a metadata record and, unless it is `Buffer`, waits (without blocking a
    /// thread) until it is as durable as asked. Returns its LSN.
    async fn write_meta(&self, payload: Vec<u8>, durability: Durability) -> Result<u64, Error> {
        let ticket = self
            .wal
            .submit(Record::new(&payload).durability(durability))?;
        self.meta_records.fetch_add(1, Ordering::Relaxed);
        let lsn = ticket.lsn();
        if durability != Durability::Buffer {
            self.wait(Some(ticket)).await?;
        }
        Ok(lsn)
    }

    /// Waits, through the completion thread, for `ticket` (or for everything queued so far).
    async fn wait(&self, ticket: Option<Ticket>) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Pending {
            ticket,
            done: Done::Notify(tx),
        })?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Evicts the oldest cached entries beyond the cache's bound, but only those already
    /// written to the OS (a reader of the WAL sees only written records).
    fn evict(&self, st: &mut State<C>) {
        let written = self.wal.written_lsn();
        while st.cache.len() > self.options.cache_entries_max {
            let Some((&index, _)) = st.cache.first_key_value() else {
                break;
            };
            match st.slots.get(&index) {
                Some(slot) if slot.lsn > written => break,
                _ => {
                    st.cache.remove(&index);
                }
            }
        }
    }

    /// The live entries of `range`, in order (stopping at a hole a concurrent purge made).
    fn read_range(&self, range: &impl RangeBounds<u64>) -> StorageResult<Vec<C::Entry>, C> {
        let (start, end) = bounds(range);
        if start >= end {
            return Ok(Vec::new());
        }
        // Under the lock: which entries (index, LSN), and the cached bodies.
        let plan: Vec<(u64, u64, Cached)> = {
            let st = self.state.lock();
            st.slots
                .range(start..end)
                .map(|(&index, slot)| (index, slot.lsn, st.cache.get(&index).cloned()))
                .collect()
        };
        let mut bodies: Vec<Cached> = Vec::with_capacity(plan.len());
        let mut missing: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, (_, lsn, body)) in plan.iter().enumerate() {
            if body.is_none() {
                missing.insert(*lsn, i);
            }
            bodies.push(body.clone());
        }
        if let (Some((&first, _)), Some((&last, _))) =
            (missing.first_key_value(), missing.last_key_value())
        {
            self.cache_misses
                .fetch_add(missing.len() as u64, Ordering::Relaxed);
            let read_err = |e: &(dyn std::error::Error + 'static)| {
                io_err::<C>(ErrorSubject::Logs, ErrorVerb::Read, e)
            };
            for record in self.wal.read_from(first) {
                let record = record.map_err(|e| read_err(&e))?;
                if record.lsn > last {
                    break;
                }
                if let Some(&i) = missing.get(&record.lsn) {
                    match codec::decode::<NodeIdOf<C>>(&record.payload) {
                        Ok(Payload::Entry { entry, .. }) => bodies[i] = Some(entry.into()),
                        Ok(_) => {
                            let e = AnyError::error(format!(
                                "LSN {} is not an entry record",
                                record.lsn
                            ));
                            return Err(StorageIOError::read_logs(e).into());
                        }
                        Err(reason) => {
                            return Err(StorageIOError::read_logs(AnyError::error(reason)).into())
                        }
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(plan.len());
        for ((index, _, _), body) in plan.iter().zip(bodies) {
            // An entry purged (and its segment removed) while we read: stop at the hole.
            let Some(body) = body else { break };
            let entry = codec::decode_entry::<C::Entry>(&body)
                .map_err(|e| io_err::<C>(ErrorSubject::LogIndex(*index), ErrorVerb::Read, &e))?;
            out.push(entry);
        }
        Ok(out)
    }
}

/// An entry's encoded body, if it is in the cache.
type Cached = Option<Arc<[u8]>>;

/// `[start, end)` of a range of log indexes.
fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl<C: RaftTypeConfig> RaftLogReader<C> for GroupwalLogReader<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<C::Entry>, C> {
        self.shared.read_range(&range)
    }
}

impl<C: RaftTypeConfig> RaftLogReader<C> for GroupwalLogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<C::Entry>, C> {
        self.shared.read_range(&range)
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for GroupwalLogStore<C> {
    type LogReader = GroupwalLogReader<C>;

    async fn get_log_state(&mut self) -> StorageResult<LogState<C>, C> {
        let st = self.shared.state.lock();
        Ok(LogState {
            last_purged_log_id: st.purged.clone(),
            last_log_id: st.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        GroupwalLogReader {
            shared: self.shared.clone(),
        }
    }

    /// Returns once the vote's record is durable (`fdatasync`ed).
    async fn save_vote(&mut self, vote: &Vote<NodeIdOf<C>>) -> StorageResult<(), C> {
        self.shared.state.lock().vote = Some(vote.clone());
        self.shared
            .write_meta(codec::encode_vote(vote), Durability::Sync)
            .await
            .map_err(|e| write_err::<C>(ErrorSubject::Vote, &e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeIdOf<C>>>, C> {
        Ok(self.shared.state.lock().vote.clone())
    }

    /// Returns once the record is as durable as `LogStoreOptions::committed_durability`
    /// says (default: `fdatasync`ed).
    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeIdOf<C>>>,
    ) -> StorageResult<(), C> {
        self.shared.state.lock().committed = committed.clone();
        let durability = self.shared.options.committed_durability;
        self.shared
            .write_meta(codec::encode_committed(&committed), durability)
            .await
            .map_err(|e| write_err::<C>(ErrorSubject::Store, &e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeIdOf<C>>>, C> {
        Ok(self.shared.state.lock().committed.clone())
    }

    /// Entries are readable when this returns; `callback` fires on the completion thread
    /// once the group commit covering the last of them is durable.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> StorageResult<(), C>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let shared = &self.shared;
        shared.append_calls.fetch_add(1, Ordering::Relaxed);
        // Encode and check every entry before submitting any, so a bad entry fails the call
        // without leaving part of it in the log.
        let mut encoded = Vec::new();
        for entry in entries {
            let log_id = entry.get_log_id().clone();
            let bytes = codec::encode_entry(&log_id, &entry)
                .map_err(|e| write_err::<C>(ErrorSubject::Log(log_id.clone()), &e))?;
            if bytes.len() > shared.record_bytes_max {
                let e = Error::RecordTooLarge {
                    len: bytes.len(),
                    max: shared.record_bytes_max,
                };
                return Err(write_err::<C>(ErrorSubject::Log(log_id), &e));
            }
            encoded.push((log_id, bytes));
        }
        let mut last_ticket = None;
        let mut slots = Vec::with_capacity(encoded.len());
        for (log_id, bytes) in encoded {
            // Blocks only while the WAL's two in-memory groups are full (backpressure).
            let ticket = shared
                .wal
                .submit(Record::new(&bytes))
                .map_err(|e| write_err::<C>(ErrorSubject::Log(log_id.clone()), &e))?;
            let header = bytes.len() - body_len_of(&bytes);
            let body: Arc<[u8]> = bytes[header..].into();
            slots.push((
                Slot {
                    lsn: ticket.lsn(),
                    log_id,
                },
                body,
            ));
            last_ticket = Some(ticket);
        }
        shared
            .entries
            .fetch_add(slots.len() as u64, Ordering::Relaxed);
        {
            let mut st = shared.state.lock();
            for (slot, body) in slots {
                let index = slot.log_id.index;
                st.cache.insert(index, body);
                st.slots.insert(index, slot);
            }
            shared.evict(&mut st);
        }
        // With no entries there is nothing of ours to wait for; the callback still waits
        // for everything queued before it, in order.
        shared
            .enqueue(Pending {
                ticket: last_ticket,
                done: Done::Flushed(callback),
            })
            .map_err(|e| write_err::<C>(ErrorSubject::Logs, &e))
    }

    /// Removes entries from `log_id.index` on, at once in memory, and returns once a
    /// truncation marker saying so is durable. Recovery applies the marker, so the removed
    /// entries never come back.
    async fn truncate(&mut self, log_id: LogId<NodeIdOf<C>>) -> StorageResult<(), C> {
        self.shared.state.lock().truncate(log_id.index);
        self.shared
            .write_meta(codec::encode_truncate(log_id.index), Durability::Sync)
            .await
            .map_err(|e| write_err::<C>(ErrorSubject::Logs, &e))?;
        Ok(())
    }

    /// Hides entries up to `log_id` at once, returns once a purge marker (carrying the vote
    /// and committed id) is durable, then removes whole WAL segments that hold nothing live.
    async fn purge(&mut self, log_id: LogId<NodeIdOf<C>>) -> StorageResult<(), C> {
        let checkpoint = {
            let mut st = self.shared.state.lock();
            st.purge(&log_id);
            Checkpoint {
                purged: st.purged.clone().unwrap_or(log_id),
                vote: st.vote.clone(),
                committed: st.committed.clone(),
            }
        };
        let marker_lsn = self
            .shared
            .write_meta(codec::encode_purge(&checkpoint), Durability::Sync)
            .await
            .map_err(|e| write_err::<C>(ErrorSubject::Logs, &e))?;
        // Everything below the first live entry (or below the marker, if no entry is live)
        // is dead: purged entries, superseded metadata, truncated suffixes and their markers.
        let keep_from = {
            let st = self.shared.state.lock();
            st.slots
                .first_key_value()
                .map_or(marker_lsn, |(_, s)| s.lsn.min(marker_lsn))
        };
        let shared = self.shared.clone();
        // Unlinking and syncing the directory are blocking calls: off the async workers.
        tokio::task::spawn_blocking(move || shared.wal.truncate_before(keep_from))
            .await
            .map_err(|e| write_err::<C>(ErrorSubject::Logs, &e))?
            .map_err(|e| write_err::<C>(ErrorSubject::Logs, &e))?;
        Ok(())
    }
}

/// Length of an encoded entry's body (the entry's JSON after the kind byte and log id).
fn body_len_of(encoded: &[u8]) -> usize {
    // The layout is ours and was just written by `encode_entry`: kind, u32 length, log id.
    let id_len = u32::from_le_bytes([encoded[1], encoded[2], encoded[3], encoded[4]]) as usize;
    encoded.len() - 5 - id_len
}
