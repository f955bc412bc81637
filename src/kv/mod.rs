//! An ordered key-value store whose durability is the write-ahead log: [`Db`].
//!
//! Every write is one log record (a batch of puts and deletes, [`batch`] has the encoding).
//! Keys live in an in-memory index; values stay where they were written: in a log segment,
//! in a checkpoint file, or (values of at most 12 bytes) inside the index entry. Reads copy
//! them out through the segment's or checkpoint's memory map, or a positioned read for the
//! segment being written. Memory therefore holds the keys plus a fixed 48 bytes or so per
//! key, not the values. `docs/KV.md` explains the design, the checkpoint protocol and every
//! crash case, with measurements.
//!
//! ```
//! use groupwal::{Db, DbOptions, Durability};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Db::open(dir.path(), DbOptions::default())?;
//! db.put(b"apple", b"red")?; // Sync: durable when it returns
//! db.put_with(b"banana", b"yellow", Durability::Flush)?;
//! assert_eq!(db.get(b"apple")?.as_deref(), Some(&b"red"[..]));
//! let fruits: Vec<_> = db.prefix(b"b")?.collect::<Result<_, _>>()?;
//! assert_eq!(fruits, [(b"banana".to_vec(), b"yellow".to_vec())]);
//! db.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod batch;
mod checkpoint;
mod index;
mod options;

pub use batch::{status, BatchOutcome, ItemResult, WriteBatch, WriteItem};
pub use index::INLINE_VALUE_BYTES_MAX;
pub use options::{DbOptions, KEY_BYTES_MAX};

use crate::error::{Error, Result};
use crate::format::CorrelationId;
use crate::io::{MappedBytes, OpenMode, Storage};
use crate::wal::{Durability, Receipt, Record, RecoveryMode, RecoveryReport, Wal, WalStats};
use batch::{check_op, decode_payload, failure_status, PayloadBuilder};
use index::{InFlight, Index, Key, Loc, PendingRecord, ValueLoc, SEGMENT_SEQ_MAX};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sub-directory of the store's directory that holds the log.
pub const WAL_DIR: &str = "wal";
/// Sub-directory for quarantined records and checkpoints, with `report.txt`.
pub const QUARANTINE_DIR: &str = "quarantine";
const REPORT_FILE: &str = "report.txt";

/// How often the background thread wakes to move written `Buffer` values out of memory and
/// to retry a deferred log truncation.
const MAINTENANCE_TICK: Duration = Duration::from_millis(100);
/// Wait after a failed automatic checkpoint before trying again.
const CHECKPOINT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Entries copied per index read-lock hold while a checkpoint is written.
const CHECKPOINT_CHUNK_ENTRIES: usize = 1024;

/// An ordered key-value store on a write-ahead log. `Send + Sync`: share it between threads;
/// concurrent writes share the log's group commit, reads never wait for an `fdatasync`.
///
/// **Visibility.** A write becomes visible to readers when the log acknowledges it, just
/// before the call returns: a `Sync` write once it is durable, a `Flush` write once it is
/// written to the operating system, a `Buffer` write once it is queued. Readers therefore
/// never see a `Sync` write that could still be lost. Writes to one key become visible in
/// log order, whatever order their acknowledgements come in.
///
/// Dropping the store closes it as [`Db::close`] does, ignoring errors.
pub struct Db {
    inner: Arc<Inner>,
    background: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dir", &self.inner.dir)
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    opts: DbOptions,
    wal: Wal,
    index: RwLock<Index>,
    inflight: Mutex<InFlight>,
    /// One checkpoint at a time; what the last one left to do.
    checkpoint: Mutex<CheckpointState>,
    /// Live iterators: while any exists, log segments are not removed.
    pins: AtomicUsize,
    /// Log bytes appended or replayed since the last checkpoint (approximate).
    log_bytes: AtomicU64,
    /// Operations per write-lock hold for bulk applies, adapted to `lock_hold_max`.
    chunk_ops: AtomicUsize,
    maintenance: Mutex<Maintenance>,
    maintenance_cv: Condvar,
    closed: AtomicBool,
    report: DbRecoveryReport,
    checkpoints_written: AtomicU64,
}

#[derive(Debug, Default)]
struct CheckpointState {
    /// LSN covered by the current checkpoint (0: none).
    lsn: u64,
    path: Option<PathBuf>,
    /// A log truncation (before this LSN) put off while iterators were alive.
    truncate_before: Option<u64>,
}

#[derive(Debug, Default)]
struct Maintenance {
    stop: bool,
    requested: bool,
    last_failure: Option<Instant>,
    last_error: Option<String>,
}

/// What opening a [`Db`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DbRecoveryReport {
    /// LSN covered by the checkpoint loaded, if any.
    pub checkpoint_lsn: Option<u64>,
    /// Entries loaded from it.
    pub checkpoint_entries: u64,
    /// Log records replayed after it.
    pub replayed_records: u64,
    /// Records that are not key-value operations, quarantined by `RecoveryMode::Salvage`.
    pub quarantined: Vec<QuarantinedRecord>,
    /// Damaged checkpoints moved to `quarantine/` by `RecoveryMode::Salvage`.
    pub checkpoints_set_aside: Vec<PathBuf>,
    /// Leftovers of interrupted checkpoints removed, and older checkpoints removed.
    pub files_removed: usize,
}

/// A log record that replay skipped because it is not a key-value operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantinedRecord {
    /// Its LSN.
    pub lsn: u64,
    /// Why it does not decode.
    pub reason: String,
    /// Where its payload was copied.
    pub file: PathBuf,
}

/// What [`Db::checkpoint`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointReport {
    /// LSN the checkpoint covers (the previous one's if nothing new was written).
    pub lsn: u64,
    /// False when nothing was written since the last checkpoint, so none was made.
    pub written: bool,
    /// Entries in the checkpoint.
    pub entries: u64,
    /// Size of the checkpoint file.
    pub file_bytes: u64,
    /// Log segments removed.
    pub segments_removed: usize,
    /// True when iterators were alive, so removing log segments waits for a later
    /// checkpoint or the background thread.
    pub truncation_deferred: bool,
}

/// A snapshot of a store's counters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DbStats {
    /// Live keys.
    pub keys: usize,
    /// Bytes logged since the last checkpoint (approximate).
    pub log_bytes: u64,
    /// LSN the current checkpoint covers (0: none).
    pub checkpoint_lsn: u64,
    /// Checkpoints written by this handle.
    pub checkpoints_written: u64,
    /// `Buffer` records whose values are held in memory until the log writes them.
    pub pending_values: usize,
    /// The last automatic checkpoint's error, if it failed.
    pub last_checkpoint_error: Option<String>,
    /// The log's statistics.
    pub wal: WalStats,
}

/// Unregisters a write from the in-flight registry, on every path out of a commit.
struct Registration<'a> {
    inner: &'a Inner,
    low: u64,
    keys: &'a [Vec<Key>],
    /// Set once the apply unregistered the write itself (saving a lock round trip).
    done: bool,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.inner
                .inflight
                .lock()
                .unregister(self.low, self.keys.iter().flatten());
        }
    }
}

/// A value to install, prepared outside the index lock.
enum Prepared {
    Delete,
    At(ValueLoc),
    /// A `Buffer` write's value: pending in memory if its record is not written yet.
    Buffered(ValueLoc),
}

impl Db {
    /// Opens (creating if needed) the store in `dir`: loads the newest valid checkpoint and
    /// replays the log after it. The log lives in `dir/wal`, checkpoints in `dir`.
    ///
    /// A log record that is not a key-value operation (a poison pill) fails the open with
    /// [`Error::BadRecord`] naming its LSN, unless the recovery mode is
    /// [`RecoveryMode::Salvage`], which copies it to `dir/quarantine/` with a report line
    /// and goes on.
    pub fn open(dir: impl AsRef<Path>, options: DbOptions) -> Result<Db> {
        let dir = dir.as_ref();
        options.validate()?;
        let storage = options.wal.storage.clone();
        storage
            .create_dir_all(dir)
            .map_err(|e| Error::io("create store directory", dir, e))?;
        // The log takes the directory lock: after this, nobody else touches the store.
        let wal = Wal::open(dir.join(WAL_DIR), options.wal.clone())?;
        let mut report = DbRecoveryReport::default();
        let salvage = options.wal.recovery_mode == RecoveryMode::Salvage;

        let names = storage
            .list_dir(dir)
            .map_err(|e| Error::io("list store directory", dir, e))?;
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for name in &names {
            if checkpoint::is_tmp_name(name) {
                // An interrupted checkpoint: never renamed into place, never relied on.
                let p = dir.join(name);
                storage
                    .remove_file(&p)
                    .map_err(|e| Error::io("remove unfinished checkpoint", &p, e))?;
                report.files_removed += 1;
            } else if let Some(lsn) = checkpoint::parse_file_name(name) {
                found.push((lsn, dir.join(name)));
            }
        }
        found.sort_unstable_by_key(|f| std::cmp::Reverse(f.0));

        let mut index = Index::default();
        let mut state = CheckpointState::default();
        let mut obsolete = Vec::new();
        for (lsn, path) in found {
            if state.path.is_some() {
                obsolete.push(path);
                continue;
            }
            let loaded = checkpoint::load(&*storage, &path).and_then(|l| {
                if l.lsn == lsn {
                    Ok(l)
                } else {
                    Err(format!("header says LSN {}, file name {lsn}", l.lsn))
                }
            });
            match loaded {
                Ok(loaded) => {
                    let slot = 0;
                    let entries: Vec<(Key, ValueLoc)> = checkpoint::Entries::new(&loaded.map)
                        .map(|e| {
                            let loc = if e.len <= INLINE_VALUE_BYTES_MAX {
                                let at = e.pos as usize;
                                ValueLoc::inline(&loaded.map[at..at + e.len])
                            } else {
                                ValueLoc::checkpoint(slot, e.pos, e.len)
                            };
                            (Key::new(e.key), loc)
                        })
                        .collect();
                    // Sorted input: the map is built densely packed, in one pass.
                    index.map = BTreeMap::from_iter(entries);
                    index.checkpoints[slot] = Some(loaded.map);
                    index.checkpoint_slot = slot;
                    report.checkpoint_lsn = Some(loaded.lsn);
                    report.checkpoint_entries = loaded.entries;
                    state.lsn = loaded.lsn;
                    state.path = Some(path);
                }
                Err(reason) if salvage => {
                    let qdir = dir.join(QUARANTINE_DIR);
                    let file_name = path.file_name().map(|n| n.to_os_string());
                    let to = qdir.join(file_name.unwrap_or_default());
                    storage
                        .create_dir_all(&qdir)
                        .and_then(|()| storage.rename(&path, &to))
                        .and_then(|()| storage.sync_dir(dir))
                        .and_then(|()| storage.sync_dir(&qdir))
                        .map_err(|e| Error::io("set damaged checkpoint aside", &path, e))?;
                    append_report(
                        &*storage,
                        &qdir,
                        &format!("checkpoint={} reason={reason}\n", to.display()),
                    )?;
                    report.checkpoints_set_aside.push(to);
                }
                Err(reason) => return Err(Error::BadCheckpoint { path, reason }),
            }
        }
        let first = wal.first_lsn();
        if first > state.lsn + 1 {
            return Err(Error::BadCheckpoint {
                path: state
                    .path
                    .clone()
                    .unwrap_or_else(|| dir.join("checkpoint-*")),
                reason: format!(
                    "the log starts at LSN {first}, but the checkpoint covers only LSNs up to \
                     {}: records {}..{first} are missing",
                    state.lsn,
                    state.lsn + 1
                ),
            });
        }

        // Replay the log after the checkpoint.
        let mut log_bytes = 0u64;
        let mut reader = wal.read_from(state.lsn + 1);
        while let Some(record) = reader.next() {
            let record = record?;
            let location = reader
                .last_location()
                .expect("the reader sets a location for every record it returns");
            log_bytes +=
                crate::format::frame_len(record.payload.len(), record.correlation_id.is_some())
                    as u64;
            report.replayed_records += 1;
            let ops = match decode_payload(&record.payload) {
                Ok(ops) => ops,
                Err(reason) if salvage => {
                    let q =
                        quarantine_record(&*storage, dir, record.lsn, &record.payload, &reason)?;
                    report.quarantined.push(q);
                    continue;
                }
                Err(reason) => {
                    return Err(Error::BadRecord {
                        lsn: record.lsn,
                        reason,
                    })
                }
            };
            if location.segment > SEGMENT_SEQ_MAX {
                return Err(segment_seq_error(location.segment));
            }
            let base = location.payload_offset(record.correlation_id.is_some());
            for op in &ops {
                let key = &record.payload[op.key_start..op.key_start + op.key_len];
                match op.value {
                    None => index.delete(key),
                    Some((start, len)) => {
                        let loc = if len <= INLINE_VALUE_BYTES_MAX {
                            ValueLoc::inline(&record.payload[start..start + len])
                        } else {
                            ValueLoc::segment(location.segment, base + start as u64, len)
                        };
                        index.put(Key::new(key), loc);
                    }
                }
            }
        }
        drop(reader);

        // Older checkpoints left by a crash between publishing a new one and removing them.
        for path in obsolete {
            storage
                .remove_file(&path)
                .map_err(|e| Error::io("remove old checkpoint", &path, e))?;
            report.files_removed += 1;
        }
        if report.files_removed > 0 {
            storage
                .sync_dir(dir)
                .map_err(|e| Error::io("sync store directory", dir, e))?;
        }

        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            storage,
            chunk_ops: AtomicUsize::new(options.batch_ops_max.min(1024)),
            opts: options,
            wal,
            index: RwLock::new(index),
            inflight: Mutex::new(InFlight::default()),
            checkpoint: Mutex::new(state),
            pins: AtomicUsize::new(0),
            log_bytes: AtomicU64::new(log_bytes),
            maintenance: Mutex::new(Maintenance::default()),
            maintenance_cv: Condvar::new(),
            closed: AtomicBool::new(false),
            report,
            checkpoints_written: AtomicU64::new(0),
        });
        let background = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("groupwal-kv".into())
                .spawn(move || inner.background())
                .map_err(|e| Error::io("start background thread", dir, e))?
        };
        inner.request_checkpoint_if_due();
        Ok(Db {
            inner,
            background: Mutex::new(Some(background)),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// What opening the store found and did.
    pub fn recovery_report(&self) -> &DbRecoveryReport {
        &self.inner.report
    }

    /// What the log's own recovery found and did when the store opened.
    pub fn wal_recovery_report(&self) -> &RecoveryReport {
        self.inner.wal.recovery_report()
    }

    /// The value of `key`, if it is present.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        // The value is read under the read lock: a checkpoint re-points entries under the
        // write lock before it removes the segments they pointed into.
        let key = Key::new(key.as_ref()); // an inline key compares faster than a slice
        let index = self.inner.index.read();
        match index.map.get(&key) {
            None => Ok(None),
            Some(&loc) => self.inner.read_value(&index, loc, None).map(Some),
        }
    }

    /// Whether `key` is present (reads no value).
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> bool {
        let key = Key::new(key.as_ref());
        self.inner.index.read().map.contains_key(&key)
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.inner.index.read().map.len()
    }

    /// Whether the store has no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts `value` under `key` with the default durability.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<Receipt> {
        self.put_with(key, value, self.inner.opts.durability)
    }

    /// Puts `value` under `key`, returning once it is as durable as `durability` asks.
    pub fn put_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        durability: Durability,
    ) -> Result<Receipt> {
        let mut batch = WriteBatch::new();
        batch.put(key, value).durability(durability);
        self.write(batch)
    }

    /// Deletes `key` (not an error if it is absent) with the default durability.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<Receipt> {
        self.delete_with(key, self.inner.opts.durability)
    }

    /// Deletes `key`, returning once the delete is as durable as `durability` asks.
    pub fn delete_with(&self, key: impl AsRef<[u8]>, durability: Durability) -> Result<Receipt> {
        let mut batch = WriteBatch::new();
        batch.delete(key).durability(durability);
        self.write(batch)
    }

    /// Writes a batch atomically, as one log record: after a crash all of it is there or
    /// none, and readers see all of it or none. Fails as a whole, writing nothing, if any
    /// operation is invalid ([`Error::InvalidInput`]) or the batch has more than
    /// `batch_ops_max` operations or does not fit in one log record.
    pub fn write(&self, batch: WriteBatch) -> Result<Receipt> {
        let opts = &self.inner.opts;
        if batch.is_empty() {
            return Err(Error::InvalidInput {
                reason: "empty batch".into(),
            });
        }
        if batch.len() > opts.batch_ops_max {
            return Err(Error::InvalidInput {
                reason: format!(
                    "batch of {} operations is above batch_ops_max of {}",
                    batch.len(),
                    opts.batch_ops_max
                ),
            });
        }
        let p = &batch.payload;
        for op in &p.ops {
            check_op(
                p.key(op),
                p.value(op),
                opts.key_bytes_max,
                opts.value_bytes_max,
            )?;
        }
        if p.bytes.len() > opts.wal.effective_record_bytes_max() {
            return Err(Error::InvalidInput {
                reason: format!(
                    "batch encodes to {} bytes, above the log's record_bytes_max of {}; split it",
                    p.bytes.len(),
                    opts.wal.effective_record_bytes_max()
                ),
            });
        }
        let durability = batch.durability.unwrap_or(opts.durability);
        self.inner
            .commit(&[p], durability, batch.correlation_id)
            .pop()
            .expect("one result per payload")
    }

    /// Writes items each on its own, like HTTP 207 Multi-Status, with the default
    /// durability: an invalid item (empty key, key above `key_bytes_max`, value above
    /// `value_bytes_max`) is rejected alone with its reason; the valid ones are committed
    /// together (in as few log records and groups as the limits allow). Results come in
    /// input order. Not atomic as a whole: use [`Db::write`] for that.
    ///
    /// ```
    /// use groupwal::{Db, DbOptions};
    /// use groupwal::kv::WriteItem;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let db = Db::open(dir.path(), DbOptions::default())?;
    /// let outcome = db.write_each(vec![
    ///     WriteItem::put("a".to_string(), "k1", "v1"),
    ///     WriteItem::put("b".to_string(), "", "v2"),
    /// ]);
    /// assert_eq!(outcome.results[0].status, 200);
    /// assert_eq!(outcome.results[1].status, 400);
    /// assert_eq!(outcome.http_status(), 207);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_each<Id>(
        &self,
        items: impl IntoIterator<Item = WriteItem<Id>>,
    ) -> BatchOutcome<Id> {
        self.write_each_with(items, self.inner.opts.durability)
    }

    /// [`Db::write_each`] with a durability for all the items.
    pub fn write_each_with<Id>(
        &self,
        items: impl IntoIterator<Item = WriteItem<Id>>,
        durability: Durability,
    ) -> BatchOutcome<Id> {
        let opts = &self.inner.opts;
        let items: Vec<WriteItem<Id>> = items.into_iter().collect();
        let mut outcome: Vec<(u16, Option<String>, Option<u64>)> =
            vec![(0, None, None); items.len()];
        // Valid items, packed into records of bounded size and operation count: each record
        // is applied under one lock hold, so its size follows the lock-hold budget.
        let ops_per_record = self
            .inner
            .chunk_ops
            .load(Ordering::Relaxed)
            .clamp(1, opts.batch_ops_max);
        let mut records: Vec<(PayloadBuilder, Vec<usize>)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Err(e) = check_op(
                &item.key,
                item.value.as_deref(),
                opts.key_bytes_max,
                opts.value_bytes_max,
            ) {
                let (code, msg) = failure_status(&e);
                outcome[i] = (code, Some(msg), None);
                continue;
            }
            let add = PayloadBuilder::op_bytes(&item.key, item.value.as_deref());
            let full = records.last().map_or(true, |(p, members)| {
                members.len() >= ops_per_record
                    || p.bytes.len() + add > opts.wal.effective_record_bytes_max()
            });
            if full {
                records.push((PayloadBuilder::new(), Vec::new()));
            }
            let (p, members) = records.last_mut().expect("pushed above");
            p.push(&item.key, item.value.as_deref());
            members.push(i);
        }
        let payloads: Vec<&PayloadBuilder> = records.iter().map(|(p, _)| p).collect();
        let results = self.inner.commit(&payloads, durability, None);
        for ((_, members), result) in records.iter().zip(results) {
            for &i in members {
                outcome[i] = match &result {
                    Ok(r) => (status::OK, None, Some(r.lsn)),
                    Err(e) => {
                        let (code, msg) = failure_status(e);
                        (code, Some(msg), None)
                    }
                };
            }
        }
        BatchOutcome {
            results: items
                .into_iter()
                .zip(outcome)
                .map(|(item, (status, error, lsn))| ItemResult {
                    id: item.id,
                    status,
                    error,
                    lsn,
                })
                .collect(),
        }
    }

    /// Iterates, in key order, over the keys in `range` and their values, as they were when
    /// the call was made (later writes are not seen). Values are read as the iterator
    /// advances; the keys of the range are copied when it is made.
    ///
    /// While an iterator is alive, checkpoints do not remove log segments (they are removed
    /// by the next checkpoint or within about 100 ms after the last iterator is dropped).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let db = groupwal::Db::open(dir.path(), groupwal::DbOptions::default())?;
    /// db.put("a", "1")?;
    /// db.put("b", "2")?;
    /// let first: Vec<_> = db.range("a".."b")?.collect::<Result<_, _>>()?;
    /// assert_eq!(first, [(b"a".to_vec(), b"1".to_vec())]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn range<K, R>(&self, range: R) -> Result<DbIter>
    where
        K: AsRef<[u8]> + ?Sized,
        R: RangeBounds<K>,
    {
        let start = clone_bound(range.start_bound());
        let end = clone_bound(range.end_bound());
        Ok(self.inner.snapshot(start, end))
    }

    /// Iterates over every key and value in key order, as [`Db::range`] does.
    pub fn iter(&self) -> Result<DbIter> {
        Ok(self.inner.snapshot(Bound::Unbounded, Bound::Unbounded))
    }

    /// Iterates, in key order, over the keys that start with `prefix` and their values, as
    /// [`Db::range`] does.
    pub fn prefix(&self, prefix: impl AsRef<[u8]>) -> Result<DbIter> {
        let p = prefix.as_ref();
        let end = match prefix_successor(p) {
            Some(s) => Bound::Excluded(s),
            None => Bound::Unbounded,
        };
        Ok(self.inner.snapshot(Bound::Included(p.to_vec()), end))
    }

    /// Makes every write made so far durable (including `Buffer` and `Flush` ones).
    pub fn sync(&self) -> Result<()> {
        self.inner.wal.sync()
    }

    /// Writes a checkpoint of the live data, then truncates the log below it: the new file
    /// is written under a temporary name, synced, renamed into place and the directory
    /// synced; only then are index entries pointed at it, log segments it covers removed,
    /// and older checkpoints deleted. Writers and readers go on meanwhile. A crash at any
    /// point loses nothing (see `docs/KV.md`).
    pub fn checkpoint(&self) -> Result<CheckpointReport> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.inner.checkpoint()
    }

    /// Counters of the store and its log.
    pub fn stats(&self) -> DbStats {
        let (keys, pending_values) = {
            let index = self.inner.index.read();
            (index.map.len(), index.pending.len())
        };
        DbStats {
            keys,
            log_bytes: self.inner.log_bytes.load(Ordering::Relaxed),
            checkpoint_lsn: self.inner.checkpoint.lock().lsn,
            checkpoints_written: self.inner.checkpoints_written.load(Ordering::Relaxed),
            pending_values,
            last_checkpoint_error: self.inner.maintenance.lock().last_error.clone(),
            wal: self.inner.wal.stats(),
        }
    }

    /// Stops the background thread, writes and syncs everything queued, and closes the log;
    /// later writes fail with [`Error::Closed`] (reads still work). Returns the log's error
    /// if an earlier IO failure poisoned it. Calling it again is harmless.
    pub fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        {
            let mut m = self.inner.maintenance.lock();
            m.stop = true;
            self.inner.maintenance_cv.notify_all();
        }
        if let Some(handle) = self.background.lock().take() {
            // The thread only leaves its loop; a checkpoint's error is stored, not raised.
            let _ = handle.join();
        }
        self.inner.wal.close()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Inner {
    /// Appends `payloads` (already validated) as log records, one per payload, and applies
    /// each committed one to the index. One result per payload.
    fn commit(
        &self,
        payloads: &[&PayloadBuilder],
        durability: Durability,
        correlation_id: Option<CorrelationId>,
    ) -> Vec<Result<Receipt>> {
        if payloads.is_empty() {
            return Vec::new();
        }
        if self.closed.load(Ordering::Acquire) {
            return payloads.iter().map(|_| Err(Error::Closed)).collect();
        }
        let keys: Vec<Vec<Key>> = payloads
            .iter()
            .map(|p| p.ops.iter().map(|o| Key::new(p.key(o))).collect())
            .collect();
        // Register before appending, with a lower bound of the LSN the records will get.
        let low = self.wal.written_lsn() + 1;
        self.inflight.lock().register(low, keys.iter().flatten());
        let mut registration = Registration {
            inner: self,
            low,
            keys: &keys,
            done: false,
        };
        fn record(p: &PayloadBuilder, d: Durability, id: Option<CorrelationId>) -> Record<'_> {
            let r = Record::new(&p.bytes).durability(d);
            match id {
                Some(id) => r.correlation_id(id),
                None => r,
            }
        }
        let receipts = if payloads.len() == 1 {
            vec![self
                .wal
                .append(record(payloads[0], durability, correlation_id))]
        } else {
            let records: Vec<Record<'_>> = payloads
                .iter()
                .map(|p| record(p, durability, correlation_id))
                .collect();
            self.wal.append_many(&records)
        };
        // A single record unregisters inside its apply's critical section.
        let single = payloads.len() == 1;
        let results = payloads
            .iter()
            .zip(&keys)
            .zip(receipts)
            .map(|((p, keys), r)| {
                let r = r?;
                let unregister = single.then_some(low);
                self.apply(p, keys, &r, correlation_id.is_some(), unregister)?;
                registration.done |= single;
                Ok(r)
            })
            .collect();
        drop(registration);
        results
    }

    /// Applies one committed record to the index, under one write-lock hold; with
    /// `unregister`, also unregisters the write (whose lower bound it is) from the in-flight
    /// registry in the same critical section.
    fn apply(
        &self,
        p: &PayloadBuilder,
        keys: &[Key],
        r: &Receipt,
        has_id: bool,
        unregister: Option<u64>,
    ) -> Result<()> {
        let seq = r.location.segment;
        if seq > SEGMENT_SEQ_MAX {
            return Err(segment_seq_error(seq));
        }
        let base = r.location.payload_offset(has_id);
        let buffered = r.durability == Durability::Buffer && self.wal.written_lsn() < r.lsn;
        // Everything that allocates or copies happens before the lock.
        let prepared: Vec<Prepared> = p
            .ops
            .iter()
            .map(|op| match op.value {
                None => Prepared::Delete,
                Some((start, len)) if len <= INLINE_VALUE_BYTES_MAX => {
                    Prepared::At(ValueLoc::inline(&p.bytes[start..start + len]))
                }
                Some((start, len)) => {
                    let stored = ValueLoc::segment(seq, base + start as u64, len);
                    if buffered {
                        Prepared::Buffered(stored)
                    } else {
                        Prepared::At(stored)
                    }
                }
            })
            .collect();
        let mut record = prepared
            .iter()
            .any(|x| matches!(x, Prepared::Buffered(_)))
            .then(|| PendingRecord {
                payload: p.bytes.as_slice().into(),
                ops: p.ops.clone(),
                segment: seq,
                base,
            });
        let frame_bytes = crate::format::frame_len(p.bytes.len(), has_id) as u64;
        let n = prepared.len();
        let start = Instant::now();
        {
            let mut index = self.index.write();
            let written = self.wal.written_lsn();
            if !index.pending.is_empty() {
                index.drain_pending(written);
            }
            let still_pending = r.lsn > written;
            let mut inflight = self.inflight.lock();
            for (i, (key, prep)) in keys.iter().zip(prepared).enumerate() {
                if !inflight.admit(key.as_bytes(), r.lsn) {
                    continue; // a later write of this key is already applied
                }
                match prep {
                    Prepared::Delete => index.delete(key.as_bytes()),
                    Prepared::At(loc) => index.put(key.clone(), loc),
                    Prepared::Buffered(stored) if !still_pending => index.put(key.clone(), stored),
                    Prepared::Buffered(_) => {
                        index.put(key.clone(), ValueLoc::pending(r.lsn, i as u32))
                    }
                }
            }
            if let Some(low) = unregister {
                inflight.unregister(low, keys.iter());
            }
            if still_pending {
                if let Some(record) = record.take() {
                    index.pending.insert(r.lsn, record);
                }
            }
        }
        drop(record);
        self.observe_apply(n, start.elapsed());
        self.log_bytes.fetch_add(frame_bytes, Ordering::Relaxed);
        self.request_checkpoint_if_due();
        Ok(())
    }

    /// Adapts the operations per lock hold of bulk applies to `lock_hold_max`.
    fn observe_apply(&self, ops: usize, took: Duration) {
        if ops < 64 {
            return; // too small to say anything about the cost per operation
        }
        let per_op = took.as_nanos() as f64 / ops as f64;
        let budget = self.opts.lock_hold_max.as_nanos() as f64;
        let fit = (budget / per_op.max(1.0)) as usize;
        let old = self.chunk_ops.load(Ordering::Relaxed);
        let new = ((old + fit) / 2).clamp(64, self.opts.batch_ops_max.max(64));
        self.chunk_ops.store(new, Ordering::Relaxed);
    }

    fn request_checkpoint_if_due(&self) {
        let Some(max) = self.opts.log_bytes_max else {
            return;
        };
        if self.log_bytes.load(Ordering::Relaxed) >= max {
            let mut m = self.maintenance.lock();
            if !m.requested {
                m.requested = true;
                self.maintenance_cv.notify_all();
            }
        }
    }

    /// Copies a value out. The caller holds the index's read (or write) lock, or owns a pin
    /// (iterators), so the segment or checkpoint it points into is still there.
    fn read_value(
        &self,
        index: &Index,
        loc: ValueLoc,
        maps: Option<&[Option<Arc<MappedBytes>>; 2]>,
    ) -> Result<Vec<u8>> {
        match loc.decode() {
            Loc::Inline { bytes, len } => Ok(bytes[..len].to_vec()),
            Loc::Pending { lsn, op } => index
                .pending
                .get(&lsn)
                .and_then(|r| r.value(op).map(|(range, _)| r.payload[range].to_vec()))
                .ok_or_else(|| internal(format!("pending value {lsn}/{op} is missing"))),
            Loc::Checkpoint { slot, pos, len } => {
                let map = maps.unwrap_or(&index.checkpoints)[slot]
                    .as_ref()
                    .ok_or_else(|| internal(format!("checkpoint slot {slot} is empty")))?;
                let at = pos as usize;
                map.get(at..at + len)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| internal("value past the end of the checkpoint".into()))
            }
            Loc::Segment { seq, pos, len } => {
                let mut v = vec![0u8; len];
                self.wal.read_at(seq, pos, &mut v)?;
                Ok(v)
            }
        }
    }

    /// A consistent snapshot of a key range for an iterator.
    fn snapshot(self: &Arc<Self>, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> DbIter {
        let empty = match (&start, &end) {
            (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) => {
                s > e
                    || (s == e
                        && (matches!(start, Bound::Excluded(_))
                            || matches!(end, Bound::Excluded(_))))
            }
            _ => false,
        };
        let index = self.index.read();
        self.pins.fetch_add(1, Ordering::AcqRel);
        let mut items = Vec::new();
        if !empty {
            let range = (as_slice_bound(&start), as_slice_bound(&end));
            for (k, &loc) in index.map.range::<[u8], _>(range) {
                items.push((Box::<[u8]>::from(k.as_bytes()), Source::of(&index, loc)));
            }
        }
        DbIter {
            maps: index.checkpoints.clone(),
            items: items.into_iter(),
            inner: self.clone(),
        }
    }

    /// The highest LSN such that it and every earlier record are applied to the index.
    /// The caller holds the index lock.
    fn applied_lsn(&self) -> u64 {
        let inflight = self.inflight.lock();
        let next = self.wal.written_lsn() + 1;
        inflight.low().unwrap_or(next).min(next) - 1
    }

    fn checkpoint(&self) -> Result<CheckpointReport> {
        let mut state = self.checkpoint.lock();
        let removed_before = self.truncate_deferred(&mut state)?;
        // Sync first: the cut below is bounded by what the log has written, and a `Buffer`
        // write acknowledged before this call must be covered by it. The log must also
        // hold at least up to the cut after any crash, or new records would reuse LSNs the
        // checkpoint claims.
        self.wal.sync()?;
        self.drain_written();
        let c = self.applied_lsn_now();
        if c <= state.lsn {
            return Ok(CheckpointReport {
                lsn: state.lsn,
                written: false,
                entries: 0,
                file_bytes: 0,
                segments_removed: removed_before,
                truncation_deferred: state.truncate_before.is_some(),
            });
        }
        let log_bytes_at_start = self.log_bytes.load(Ordering::Relaxed);
        let (new_slot, old_slot) = {
            let index = self.index.read();
            let cur = index.checkpoint_slot;
            if index.checkpoints[cur].is_some() {
                (1 - cur, Some(cur))
            } else {
                (cur, None)
            }
        };
        let (path, captured, entries, file_bytes) = self.write_checkpoint_file(c)?;

        // The file is durable under its final name. Point unchanged entries at it.
        let map = checkpoint::load(&*self.storage, &path)
            .map_err(|reason| Error::BadCheckpoint {
                path: path.clone(),
                reason: format!("just written, yet {reason}"),
            })?
            .map;
        self.index.write().checkpoints[new_slot] = Some(map.clone());
        let mut iter = checkpoint::Entries::new(&map);
        let mut i = 0;
        while i < captured.len() {
            let chunk = self.chunk_ops.load(Ordering::Relaxed).max(64);
            let start = Instant::now();
            let mut index = self.index.write();
            let Index {
                map: m, pending, ..
            } = &mut *index;
            let end = (i + chunk).min(captured.len());
            for &was in &captured[i..end] {
                let e = iter.next().expect("one entry per captured location");
                if was.is_inline() {
                    continue;
                }
                if let Some(loc) = m.get_mut(e.key) {
                    // Unchanged since copied (a pending value that got written meanwhile
                    // is unchanged too): the checkpoint holds this very value.
                    if index::stable(pending, *loc) == was {
                        *loc = ValueLoc::checkpoint(new_slot, e.pos, e.len);
                    }
                }
            }
            index.checkpoint_slot = new_slot;
            drop(index);
            self.observe_apply(end - i, start.elapsed());
            i = end;
        }
        {
            let mut index = self.index.write();
            index.checkpoint_slot = new_slot;
            if let Some(old) = old_slot {
                // Every entry that pointed into the old checkpoint was captured unchanged
                // (only checkpoints make such entries) and re-pointed above.
                index.checkpoints[old] = None;
            }
        }
        let old_path = state.path.replace(path.clone());
        state.lsn = c;
        state.truncate_before = Some(c + 1);
        self.checkpoints_written.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .log_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(log_bytes_at_start))
            });
        let removed = self.truncate_deferred(&mut state)?;
        if let Some(old) = old_path.filter(|p| *p != path) {
            self.storage
                .remove_file(&old)
                .and_then(|()| self.storage.sync_dir(&self.dir))
                .map_err(|e| Error::io("remove old checkpoint", &old, e))?;
        }
        Ok(CheckpointReport {
            lsn: c,
            written: true,
            entries,
            file_bytes,
            segments_removed: removed_before + removed,
            truncation_deferred: state.truncate_before.is_some(),
        })
    }

    /// Releases the in-memory copies of `Buffer` records the log has written.
    fn drain_written(&self) {
        if !self.index.read().pending.is_empty() {
            let written = self.wal.written_lsn();
            self.index.write().drain_pending(written);
        }
    }

    fn applied_lsn_now(&self) -> u64 {
        let _index = self.index.read();
        self.applied_lsn()
    }

    /// Writes and publishes the checkpoint file for LSN `c`. Returns its path, the stable
    /// location each entry had when copied (in key order), the entry count and file size.
    fn write_checkpoint_file(&self, c: u64) -> Result<(PathBuf, Vec<ValueLoc>, u64, u64)> {
        let dir = &self.dir;
        let mut writer = checkpoint::CheckpointWriter::create(&*self.storage, dir, c)
            .map_err(|e| Error::io("create checkpoint", dir.join(checkpoint::file_name(c)), e))?;
        let tmp = writer.tmp.clone();
        let path = writer.path.clone();
        let result = (|| -> Result<(Vec<ValueLoc>, u64, u64)> {
            let mut captured = Vec::new();
            let mut last: Option<Box<[u8]>> = None;
            let mut value;
            loop {
                // Copy a chunk of entries (and in-memory values) under the read lock; read
                // the values outside it. Segments stay: only checkpoints remove them, and
                // this is the only one running.
                let mut chunk: Vec<(Box<[u8]>, ValueLoc, Source)> = Vec::new();
                let maps = {
                    let index = self.index.read();
                    let from = match &last {
                        Some(k) => Bound::Excluded(&k[..]),
                        None => Bound::Unbounded,
                    };
                    for (k, &loc) in index
                        .map
                        .range::<[u8], _>((from, Bound::Unbounded))
                        .take(CHECKPOINT_CHUNK_ENTRIES)
                    {
                        chunk.push((
                            k.as_bytes().into(),
                            index.stable(loc),
                            Source::of(&index, loc),
                        ));
                    }
                    index.checkpoints.clone()
                };
                let Some(end) = chunk.last().map(|c| c.0.clone()) else {
                    break;
                };
                for (key, stable, src) in &chunk {
                    let bytes: &[u8] = match src {
                        Source::Memory(v, range) => &v[range.clone()],
                        Source::Loc(loc) => {
                            value = self.read_value(&Index::default(), *loc, Some(&maps))?;
                            &value
                        }
                    };
                    writer
                        .push(key, bytes)
                        .map_err(|e| Error::io("write checkpoint", &tmp, e))?;
                    captured.push(*stable);
                }
                last = Some(end);
            }
            let entries = captured.len() as u64;
            let (_file, len) = writer
                .finish()
                .map_err(|e| Error::io("write and sync checkpoint", &tmp, e))?;
            self.storage
                .rename(&tmp, &path)
                .map_err(|e| Error::io("rename checkpoint into place", &path, e))?;
            Ok((captured, entries, len))
        })();
        match result {
            Ok((captured, entries, len)) => {
                // If this sync fails the checkpoint may or may not survive a crash; either
                // way the log still holds everything after the previous checkpoint.
                self.storage
                    .sync_dir(dir)
                    .map_err(|e| Error::io("sync store directory", dir, e))?;
                Ok((path, captured, entries, len))
            }
            Err(e) => {
                let _ = self.storage.remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Removes the log segments the current checkpoint covers, unless iterators pin them.
    fn truncate_deferred(&self, state: &mut CheckpointState) -> Result<usize> {
        let Some(before) = state.truncate_before else {
            return Ok(0);
        };
        if self.pins.load(Ordering::Acquire) > 0 {
            return Ok(0);
        }
        let removed = self.wal.truncate_before(before)?;
        state.truncate_before = None;
        Ok(removed)
    }

    /// The background thread: automatic checkpoints, moving written `Buffer` values out of
    /// memory, deferred truncations.
    fn background(&self) {
        let jitter = self.opts.checkpoint_interval_jitter.as_nanos() as u64;
        let mut rng = fastrand::Rng::new();
        let mut next_interval = self.opts.checkpoint_interval.map(|i| {
            Instant::now()
                + i
                + Duration::from_nanos(if jitter == 0 { 0 } else { rng.u64(0..=jitter) })
        });
        loop {
            let due = {
                let mut m = self.maintenance.lock();
                if !m.stop && !m.requested {
                    let tick = Instant::now() + MAINTENANCE_TICK;
                    let until = next_interval.map_or(tick, |t| t.min(tick));
                    self.maintenance_cv.wait_until(&mut m, until);
                }
                if m.stop {
                    return;
                }
                let now = Instant::now();
                let by_interval = next_interval.is_some_and(|t| now >= t)
                    && self.log_bytes.load(Ordering::Relaxed) > 0;
                if next_interval.is_some_and(|t| now >= t) {
                    let extra = if jitter == 0 { 0 } else { rng.u64(0..=jitter) };
                    next_interval = self
                        .opts
                        .checkpoint_interval
                        .map(|i| now + i + Duration::from_nanos(extra));
                }
                let backoff = m
                    .last_failure
                    .is_some_and(|t| now.duration_since(t) < CHECKPOINT_RETRY_DELAY);
                let due = (m.requested || by_interval) && !backoff;
                if due {
                    m.requested = false;
                }
                due
            };
            self.drain_written();
            if due {
                let result = self.checkpoint();
                let mut m = self.maintenance.lock();
                match result {
                    Ok(_) => {
                        m.last_failure = None;
                        m.last_error = None;
                    }
                    Err(e) => {
                        m.last_failure = Some(Instant::now());
                        m.last_error = Some(e.to_string());
                    }
                }
            } else {
                let mut state = self.checkpoint.lock();
                if state.truncate_before.is_some() {
                    if let Err(e) = self.truncate_deferred(&mut state) {
                        self.maintenance.lock().last_error = Some(e.to_string());
                    }
                }
            }
        }
    }
}

/// Where an iterator finds a value.
enum Source {
    Loc(ValueLoc),
    /// A pending `Buffer` record's payload and the value's range in it.
    Memory(Arc<[u8]>, std::ops::Range<usize>),
}

impl Source {
    fn of(index: &Index, loc: ValueLoc) -> Source {
        if let Loc::Pending { lsn, op } = loc.decode() {
            if let Some(r) = index.pending.get(&lsn) {
                if let Some((range, _)) = r.value(op) {
                    return Source::Memory(r.payload.clone(), range);
                }
            }
        }
        Source::Loc(loc)
    }
}

/// An iterator over a consistent snapshot of a key range ([`Db::range`], [`Db::prefix`]):
/// `(key, value)` pairs in key order (or reverse, with [`Iterator::rev`]).
pub struct DbIter {
    inner: Arc<Inner>,
    items: std::vec::IntoIter<(Box<[u8]>, Source)>,
    maps: [Option<Arc<MappedBytes>>; 2],
}

impl std::fmt::Debug for DbIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbIter")
            .field("remaining", &self.items.len())
            .finish()
    }
}

impl DbIter {
    fn resolve(&self, (key, src): (Box<[u8]>, Source)) -> Result<(Vec<u8>, Vec<u8>)> {
        let value = match src {
            Source::Memory(v, range) => v[range].to_vec(),
            Source::Loc(loc) => self
                .inner
                .read_value(&Index::default(), loc, Some(&self.maps))?,
        };
        Ok((key.into_vec(), value))
    }
}

impl Iterator for DbIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.items.next()?;
        Some(self.resolve(item))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.items.size_hint()
    }
}

impl DoubleEndedIterator for DbIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        let item = self.items.next_back()?;
        Some(self.resolve(item))
    }
}

impl ExactSizeIterator for DbIter {}

impl Drop for DbIter {
    fn drop(&mut self) {
        self.inner.pins.fetch_sub(1, Ordering::AcqRel);
    }
}

fn internal(reason: String) -> Error {
    Error::InvalidInput {
        reason: format!("internal error (a bug in groupwal): {reason}"),
    }
}

fn segment_seq_error(seq: u64) -> Error {
    Error::InvalidInput {
        reason: format!(
            "log segment {seq} is above the {SEGMENT_SEQ_MAX} segments an index entry can \
             name; checkpoint the store into a new directory"
        ),
    }
}

fn clone_bound<K: AsRef<[u8]> + ?Sized>(b: Bound<&K>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn as_slice_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key greater than every key starting with `p`, if there is one.
fn prefix_successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut s = p.to_vec();
    while let Some(last) = s.pop() {
        if last < u8::MAX {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

fn append_report(storage: &dyn Storage, qdir: &Path, line: &str) -> Result<()> {
    crate::wal::recovery::append_line_durably(storage, qdir, REPORT_FILE, line)
}

/// Copies a poison pill's payload to `quarantine/kv-<lsn>.bin` with a report line (once:
/// replay meets the record again at every open until a checkpoint covers it).
fn quarantine_record(
    storage: &dyn Storage,
    dir: &Path,
    lsn: u64,
    payload: &[u8],
    reason: &str,
) -> Result<QuarantinedRecord> {
    let qdir = dir.join(QUARANTINE_DIR);
    let path = qdir.join(format!("kv-{lsn:020}.bin"));
    storage
        .create_dir_all(&qdir)
        .map_err(|e| Error::io("create quarantine folder", &qdir, e))?;
    if !storage
        .exists(&path)
        .map_err(|e| Error::io("stat", &path, e))?
    {
        let tmp = qdir.join(format!("kv-{lsn:020}.bin.tmp"));
        if storage
            .exists(&tmp)
            .map_err(|e| Error::io("stat", &tmp, e))?
        {
            storage
                .remove_file(&tmp)
                .map_err(|e| Error::io("remove", &tmp, e))?;
        }
        let f = storage
            .open_file(&tmp, OpenMode::CreateNew)
            .map_err(|e| Error::io("create quarantine file", &tmp, e))?;
        f.write_all_at(payload, 0)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("write quarantine file", &tmp, e))?;
        storage
            .rename(&tmp, &path)
            .and_then(|()| storage.sync_dir(&qdir))
            .map_err(|e| Error::io("publish quarantine file", &path, e))?;
        append_report(
            storage,
            &qdir,
            &format!(
                "lsn={lsn} bytes={} file={} reason={reason}\n",
                payload.len(),
                path.display()
            ),
        )?;
    }
    Ok(QuarantinedRecord {
        lsn,
        reason: reason.to_string(),
        file: path,
    })
}

#[cfg(test)]
mod tests {
    use super::prefix_successor;

    #[test]
    fn prefix_successors() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
