//! Consumers: batched readers of the log with a durable cursor each, retries with jittered
//! exponential backoff, and a dead-letter log, so that one record the handler cannot process
//! (a *poison pill*) never blocks the records after it.
//!
//! ```
//! use groupwal::{ConsumerOptions, Outcome, Record, Wal, WalOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let wal = Wal::open(dir.path(), WalOptions::default().segment_bytes(1 << 20))?;
//! for body in [&b"ok 1"[..], b"garbage", b"ok 2"] {
//!     wal.append(Record::new(body))?;
//! }
//! let mut consumer = wal.consumer("billing", ConsumerOptions::default())?;
//! let mut batch = consumer.poll(100, std::time::Duration::from_secs(1))?;
//! batch.handle(|record| match record.payload.starts_with(b"ok") {
//!     true => Outcome::Ok,
//!     false => Outcome::Fail("not an order".into()),
//! });
//! consumer.commit(batch)?;
//! assert_eq!(consumer.cursor(), 4);
//! let dead = consumer.dead_letters()?;
//! assert_eq!((dead[0].lsn, dead[0].error.as_str()), (2, "not an order"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `docs/CONSUMERS.md` states the semantics: at-least-once delivery, ordering, what
//! dead-lettering gives up, and when duplicates appear.
//!
//! # The protocol in short
//!
//! - The cursor file (`consumers/<name>.cursor`, see `cursor.rs`) holds the next LSN to
//!   process and, while a batch is out, its range and how many times it was handed out.
//!   `poll` stores that *before* returning the batch; `commit` stores the new cursor and
//!   clears it. So a process that dies in the handler, however it dies, leaves a count that
//!   grows with every restart.
//! - A batch handed out `max_attempts` times without coming back is *bisected*: its first
//!   half goes out alone, then (once that commits) the first half of the rest, and so on;
//!   a half that does not come back `max_attempts` times is split in turn. A record that does
//!   not come back `max_attempts` times while alone in its batch is dead-lettered, and the
//!   others are processed normally.
//! - A record the handler answers [`Outcome::Retry`] for is committed up to (not including)
//!   it, then handed out again after a jittered backoff; after `max_attempts` it is
//!   dead-lettered. [`Outcome::Fail`] dead-letters it at once. Dead letters are appended
//!   (with `Sync`) to the dead-letter log before the cursor passes them.
//!
//! # Why `Consumer<'a>` borrows the log
//!
//! A consumer holds `&'a Wal`: [`Wal`] is `Sync` and not `Clone`, several consumers (and
//! writers) can share one log, and the borrow proves the log outlives its consumers without
//! a reference count on every call. Keep the log in an `Arc` or a scoped thread to move a
//! consumer to another thread.

mod backoff;
mod cursor;
mod dead_letter;
mod options;

pub use backoff::Backoff;
pub use dead_letter::{DeadLetter, DeadLetterCause, Redriven, DEAD_LETTER_DIR};
pub use options::{
    ConsumerOptions, Start, ATTEMPTS_MAX, BACKOFF_CAP_MAX, BATCH_BYTES_MAX, BATCH_RECORDS_MAX,
};

use crate::error::{Error, Result};
use crate::io::Storage;
use crate::wal::{LogRecord, Wal, WalReader};
use cursor::{CursorFile, CursorState, InFlight, Retrying};
use dead_letter::{dead_letter_dir, dead_letter_options};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Folder of the cursor files, in the log directory.
pub const CONSUMERS_DIR: &str = "consumers";
/// The longest consumer name, in bytes.
pub const CONSUMER_NAME_BYTES_MAX: usize = 64;

/// Shortest and longest pause between looks at the log while a poll waits for records.
const POLL_PAUSE_MIN: Duration = Duration::from_micros(100);
const POLL_PAUSE_MAX: Duration = Duration::from_millis(2);

/// What the handler says about one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Processed: the cursor may pass it.
    Ok,
    /// Not processed this time, for the given reason: hand it out again after a backoff, up
    /// to `max_attempts` times in all, then dead-letter it. The records after it wait.
    Retry(String),
    /// Cannot be processed, for the given reason: dead-letter it now, without retries.
    Fail(String),
}

/// Counters of one consumer handle (since it was opened) and its position.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerMetrics {
    /// Records the handler answered [`Outcome::Ok`] for (a record delivered again after a
    /// crash counts again).
    pub processed: u64,
    /// [`Outcome::Retry`] answers that scheduled another attempt.
    pub retried: u64,
    /// Records this handle appended to the dead-letter log.
    pub dead_lettered: u64,
    /// Batches handed out again because an earlier delivery did not come back.
    pub redelivered: u64,
    /// Records in the log the consumer has not passed yet: the log's next LSN less the
    /// cursor.
    pub lag: u64,
    /// The cursor: the next LSN to process.
    pub cursor: u64,
    /// Sum of the retry delays scheduled.
    pub backoff_total: Duration,
}

/// Records handed out by [`Consumer::poll`], to be answered one [`Outcome`] each and
/// given back to [`Consumer::commit`].
///
/// The records are in LSN order. Dropping a batch without committing it counts as a
/// delivery that did not come back, like a crash: the next poll hands the same records out
/// again with a higher [`Batch::attempt`].
#[derive(Debug)]
pub struct Batch {
    /// `None` for an empty batch, which commits nothing.
    generation: Option<u64>,
    first_lsn: u64,
    last_lsn: u64,
    attempt: u32,
    records: Vec<LogRecord>,
    outcomes: Vec<Option<Outcome>>,
}

impl Batch {
    fn empty(next_lsn: u64) -> Batch {
        Batch {
            generation: None,
            first_lsn: next_lsn,
            last_lsn: next_lsn - 1,
            attempt: 0,
            records: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    /// The records, in LSN order.
    pub fn records(&self) -> &[LogRecord] {
        &self.records
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the poll found nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// How many times this range of the log has been handed out, this time included
    /// (1 the first time; 0 for an empty batch).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The first LSN the batch covers (the cursor when it was polled).
    pub fn first_lsn(&self) -> u64 {
        self.first_lsn
    }

    /// The last LSN the batch covers. Records in the range that were dead-lettered before
    /// a crash kept the cursor from passing them are not handed out again.
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// Records the handler's answer for record `index`.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`Batch::len`].
    pub fn set_outcome(&mut self, index: usize, outcome: Outcome) {
        self.outcomes[index] = Some(outcome);
    }

    /// The answer recorded for record `index`, if any.
    pub fn outcome(&self, index: usize) -> Option<&Outcome> {
        self.outcomes.get(index).and_then(Option::as_ref)
    }

    /// Calls `handler` on each record without an answer, in order, and records its answers,
    /// stopping after the first [`Outcome::Retry`] (the records after it are handed out again
    /// after the retry, so that order is kept). A panic in the handler is caught and counts
    /// as `Retry` with the panic message: the handler must tolerate being called again after
    /// it panicked.
    pub fn handle(&mut self, mut handler: impl FnMut(&LogRecord) -> Outcome) {
        for (record, outcome) in self.records.iter().zip(self.outcomes.iter_mut()) {
            let answer = match outcome {
                Some(Outcome::Retry(_)) => return,
                Some(_) => continue,
                None => catch_unwind(AssertUnwindSafe(|| handler(record))).unwrap_or_else(|p| {
                    Outcome::Retry(format!("handler panicked: {}", panic_message(&*p)))
                }),
            };
            let stop = matches!(answer, Outcome::Retry(_));
            *outcome = Some(answer);
            if stop {
                return;
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a payload that is not a string)".to_string()
    }
}

/// A named, durable reader of a [`Wal`]: see the [module documentation](self).
///
/// Made by [`Wal::consumer`]. It hands out only records that are durable (they survive power
/// loss), so its cursor never passes a record a crash could take back.
pub struct Consumer<'a> {
    wal: &'a Wal,
    name: String,
    options: ConsumerOptions,
    cursor: CursorFile,
    /// The cursor's state: as last stored, plus the changes not stored yet when `dirty`.
    state: CursorState,
    dirty: bool,
    dead_letters: Wal,
    /// The highest original LSN in the dead-letter log: records up to it that the cursor
    /// has not passed (a crash came between the dead-lettering and the cursor write) are
    /// not handed out again.
    dead_lettered_through: u64,
    backoff: Backoff,
    /// When the record being retried may be handed out again.
    retry_due: Option<Instant>,
    reader: WalReader,
    /// The last LSN `reader` reaches.
    read_through: u64,
    /// Records read but not handed out, from the cursor on, in LSN order (at most about one
    /// batch).
    unread: VecDeque<LogRecord>,
    /// Generation of the batch handed out and not yet committed.
    outstanding: Option<u64>,
    generation: u64,
    metrics: ConsumerMetrics,
    /// Set by a failed cursor or dead-letter write: the consumer refuses further work.
    poisoned: Option<String>,
}

impl std::fmt::Debug for Consumer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .field("cursor", &self.state.next_lsn)
            .field("in_flight", &self.state.in_flight)
            .field("suspect_last", &self.state.suspect_last)
            .finish_non_exhaustive()
    }
}

fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > CONSUMER_NAME_BYTES_MAX {
        "it is longer than 64 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        "it holds a character other than an ASCII letter, digit, '_' or '-'"
    } else {
        return Ok(());
    };
    Err(Error::InvalidConsumerName {
        name: name.to_string(),
        reason,
    })
}

/// Creates directory `path` if it is missing; its name is durable on return
/// ([`Storage::create_dir_all`]).
fn ensure_dir(storage: &dyn Storage, path: &Path) -> Result<()> {
    storage
        .create_dir_all(path)
        .map_err(|e| Error::io("create directory", path, e))
}

/// Opens consumer `name`'s dead-letter log (which must exist), mapping a lock conflict to
/// [`Error::ConsumerLocked`].
fn open_dead_letter_log(wal: &Wal, name: &str, read_only: bool) -> Result<Wal> {
    validate_name(name)?;
    let dir = dead_letter_dir(wal.dir(), name);
    let options = dead_letter_options(wal.options())?;
    let storage = &options.storage;
    if !storage
        .exists(&dir)
        .map_err(|e| Error::io("stat", &dir, e))?
    {
        return Err(Error::UnknownConsumer {
            name: name.to_string(),
        });
    }
    let opened = if read_only {
        Wal::open_read_only(&dir, options)
    } else {
        Wal::open(&dir, options)
    };
    opened.map_err(|e| match e {
        Error::Locked { .. } => Error::ConsumerLocked {
            name: name.to_string(),
        },
        e => e,
    })
}

impl Wal {
    /// Opens consumer `name` (creating its cursor and dead-letter log on first use): a
    /// durable position in this log with retries and a dead-letter log. One handle per name
    /// at a time, in all processes ([`Error::ConsumerLocked`] otherwise).
    ///
    /// `name`: 1 to 64 ASCII letters, digits, `_` or `-`. Fails with [`Error::ReadOnly`] on
    /// a read-only log, [`Error::ConsumerCorrupt`] if the cursor file is damaged (it is never
    /// reset), and [`Error::CursorOutOfRange`] if records the consumer had not processed were
    /// truncated away.
    pub fn consumer(&self, name: &str, options: ConsumerOptions) -> Result<Consumer<'_>> {
        Consumer::open(self, name, options)
    }

    /// The dead letters of consumer `name`, oldest first, including redriven ones (with
    /// [`DeadLetter::redriven_lsn`] set). The consumer must not be open
    /// ([`Error::ConsumerLocked`]); use [`Consumer::dead_letters`] while it is.
    pub fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>> {
        let log = open_dead_letter_log(self, name, true)?;
        dead_letter::read_all(&log)
    }

    /// Appends again to this log, with `Sync`, the dead letters of consumer `name` that
    /// `select` chooses among those not redriven yet, in their order, with their payloads
    /// and correlation ids; then marks them redriven. The consumer must not be open
    /// ([`Error::ConsumerLocked`]); use [`Consumer::redrive`] while it is.
    ///
    /// At least once: a crash after the append and before the mark leaves them unmarked, and
    /// a second redrive appends them again.
    pub fn redrive(
        &self,
        name: &str,
        select: impl FnMut(&DeadLetter) -> bool,
    ) -> Result<Vec<Redriven>> {
        let log = open_dead_letter_log(self, name, false)?;
        let redriven = dead_letter::redrive(self, &log, select)?;
        log.close()?;
        Ok(redriven)
    }
}

impl<'a> Consumer<'a> {
    fn open(wal: &'a Wal, name: &str, options: ConsumerOptions) -> Result<Consumer<'a>> {
        options.validate()?;
        validate_name(name)?;
        wal.check_writable()?;
        let storage = wal.options().storage.clone();
        let dir = wal.dir();
        // The dead-letter log first: its directory lock is the consumer's lock.
        let dead_letter_root = dir.join(DEAD_LETTER_DIR);
        // One level at a time: each call makes its directory's name durable, even where an
        // earlier process created it and died before syncing.
        ensure_dir(&*storage, &dead_letter_root)?;
        ensure_dir(&*storage, &dead_letter_dir(dir, name))?;
        let dead_letters = open_dead_letter_log(wal, name, false)?;
        let consumers = dir.join(CONSUMERS_DIR);
        ensure_dir(&*storage, &consumers)?;
        let path = consumers.join(format!("{name}.cursor"));
        let (cursor, state) = CursorFile::open_or_create(&*storage, &path, || {
            CursorState::at(match options.start {
                Start::Oldest => wal.first_lsn(),
                // Durable, not appended: a cursor past records that power loss then takes
                // back would point beyond the recovered log.
                Start::Latest => wal.durable_lsn() + 1,
            })
        })?;
        let dead_lettered_through = dead_letter::read_all(&dead_letters)?
            .iter()
            .map(|d| d.lsn)
            .max()
            .unwrap_or(0);
        let (reader, read_through) = wal.read_durable_from(state.next_lsn);
        let consumer = Consumer {
            wal,
            name: name.to_string(),
            backoff: Backoff::new(options.backoff_base, options.backoff_cap, options.seed),
            options,
            cursor,
            state,
            dirty: false,
            dead_letters,
            dead_lettered_through,
            retry_due: None,
            reader,
            read_through,
            unread: VecDeque::new(),
            outstanding: None,
            generation: 0,
            metrics: ConsumerMetrics::default(),
            poisoned: None,
        };
        consumer.check_in_log(true)?;
        Ok(consumer)
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cursor: the next LSN to process. Every record below it was processed or
    /// dead-lettered, and that is durable once the call that moved it returned.
    pub fn cursor(&self) -> u64 {
        self.state.next_lsn
    }

    /// Counters of this handle, the lag and the cursor.
    pub fn metrics(&self) -> ConsumerMetrics {
        ConsumerMetrics {
            lag: self.wal.next_lsn().saturating_sub(self.state.next_lsn),
            cursor: self.state.next_lsn,
            ..self.metrics.clone()
        }
    }

    /// Hands out up to `max_records` durable records from the cursor (fewer if
    /// `batch_bytes_max` is reached, or while a retry or a bisection limits the batch),
    /// waiting up to `max_wait` for the first. An empty batch means none came in time.
    ///
    /// Before it returns a batch, the batch's range and attempt number are durable in the
    /// cursor file. A batch polled before and not committed is handed out again, as a new
    /// attempt. `max_records`: 1 to [`BATCH_RECORDS_MAX`].
    pub fn poll(&mut self, max_records: usize, max_wait: Duration) -> Result<Batch> {
        self.check_usable()?;
        options::check_batch_records("max_records", max_records)?;
        self.abandon_outstanding();
        self.next_batch(max_records, max_wait)
    }

    /// Acts on the batch's outcomes and stores the cursor durably: it passes every record
    /// answered `Ok` or `Fail` (dead-lettered first) up to the first record answered `Retry`
    /// (retried after a backoff, or dead-lettered once it has had `max_attempts`) or not
    /// answered at all (handed out again). One cursor write, and one `Sync` append to the
    /// dead-letter log if any record was dead-lettered.
    pub fn commit(&mut self, batch: Batch) -> Result<()> {
        self.check_usable()?;
        self.apply(batch)?;
        self.store_if_dirty()
    }

    /// [`Consumer::commit`] then [`Consumer::poll`], with one cursor write for both when the
    /// next batch is ready at once (otherwise the commit is stored before waiting).
    pub fn commit_and_poll(
        &mut self,
        batch: Batch,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Batch> {
        self.check_usable()?;
        options::check_batch_records("max_records", max_records)?;
        self.apply(batch)?;
        self.next_batch(max_records, max_wait)
    }

    /// Polls, handles (as [`Batch::handle`]: in order, panics caught) and commits batches of
    /// `batch_records_max` until `stop` is set; it is checked after every batch and every
    /// `poll_wait`. One cursor write per batch while records keep coming.
    pub fn run(
        &mut self,
        mut handler: impl FnMut(&LogRecord) -> Outcome,
        stop: &AtomicBool,
    ) -> Result<()> {
        self.run_until(&mut handler, |_| stop.load(Ordering::Acquire))
    }

    /// Like [`Consumer::run`], until the cursor has passed every record that was durable
    /// when `drain` was called (retries and bisections included).
    pub fn drain(&mut self, mut handler: impl FnMut(&LogRecord) -> Outcome) -> Result<()> {
        let target = self.wal.durable_lsn();
        self.run_until(&mut handler, |c| c.state.next_lsn > target)
    }

    /// This consumer's dead letters, oldest first, including redriven ones.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        dead_letter::read_all(&self.dead_letters)
    }

    /// As [`Wal::redrive`], while the consumer is open: appends the chosen dead letters to
    /// the log again (the consumer will meet them at their new LSNs) and marks them redriven.
    pub fn redrive(&mut self, select: impl FnMut(&DeadLetter) -> bool) -> Result<Vec<Redriven>> {
        self.check_usable()?;
        dead_letter::redrive(self.wal, &self.dead_letters, select)
    }

    /// Closes the dead-letter log and releases the consumer's lock, reporting errors that
    /// dropping would ignore. A batch polled and not committed counts as a delivery that did
    /// not come back.
    pub fn close(mut self) -> Result<()> {
        if self.poisoned.is_none() {
            self.store_if_dirty()?;
        }
        self.dead_letters.close()
    }

    fn run_until(
        &mut self,
        handler: &mut dyn FnMut(&LogRecord) -> Outcome,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<()> {
        self.check_usable()?;
        self.abandon_outstanding();
        let (records_max, wait) = (self.options.batch_records_max, self.options.poll_wait);
        if done(self) {
            return Ok(());
        }
        let mut batch = self.next_batch(records_max, wait)?;
        loop {
            batch.handle(&mut *handler);
            // Stored with the next batch's range (one write), or alone before waiting.
            self.apply(batch)?;
            if done(self) {
                return self.store_if_dirty();
            }
            batch = self.next_batch(records_max, wait)?;
        }
    }

    fn check_usable(&self) -> Result<()> {
        match &self.poisoned {
            Some(reason) => Err(Error::Poisoned {
                reason: format!("consumer {:?}: {reason}", self.name),
            }),
            None => Ok(()),
        }
    }

    fn poison(&mut self, e: Error) -> Error {
        self.poisoned.get_or_insert_with(|| e.to_string());
        e
    }

    /// Fails if the cursor is outside the log: below its first LSN (records truncated
    /// before they were processed) or, when `check_next` is set, past its next LSN.
    fn check_in_log(&self, check_next: bool) -> Result<()> {
        let first_lsn = self.wal.first_lsn();
        let cursor = self.state.next_lsn;
        if cursor < first_lsn || (check_next && cursor > self.wal.next_lsn()) {
            return Err(Error::CursorOutOfRange {
                name: self.name.clone(),
                cursor,
                first_lsn,
                next_lsn: self.wal.next_lsn(),
            });
        }
        Ok(())
    }

    /// A batch handed out and never committed: its records must be read again.
    fn abandon_outstanding(&mut self) {
        if self.outstanding.take().is_some() {
            self.unread.clear();
            let (reader, through) = self.wal.read_durable_from(self.state.next_lsn);
            self.reader = reader;
            self.read_through = through;
        }
    }

    fn store(&mut self) -> Result<()> {
        if let Err(e) = self.cursor.store(&self.state) {
            // Never retried: after a failed fdatasync the written bytes may be lost.
            return Err(self.poison(e));
        }
        self.dirty = false;
        Ok(())
    }

    fn store_if_dirty(&mut self) -> Result<()> {
        if self.dirty {
            self.store()?;
        }
        Ok(())
    }

    /// Moves the cursor to `next` in memory (stored by the caller): whatever was in flight
    /// came back; a bisection or retry that is behind the cursor is over.
    fn advance(&mut self, next: u64) {
        let s = &mut self.state;
        debug_assert!(next >= s.next_lsn, "the cursor never goes back");
        s.next_lsn = next;
        s.in_flight = None;
        s.suspect_last = s.suspect_last.filter(|&last| last >= next);
        if s.retry.as_ref().is_some_and(|r| r.lsn != next) {
            s.retry = None;
            self.retry_due = None;
        }
        self.dirty = true;
    }

    /// Appends `entries` to the dead-letter log with one `Sync`, before the cursor may pass
    /// them.
    fn dead_letter(&mut self, entries: &[(&LogRecord, DeadLetterCause, u32, &str)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if let Err(e) = dead_letter::append(&self.dead_letters, entries) {
            return Err(self.poison(e));
        }
        let highest = entries.iter().map(|e| e.0.lsn).max().unwrap_or(0);
        self.dead_lettered_through = self.dead_lettered_through.max(highest);
        self.metrics.dead_lettered += entries.len() as u64;
        Ok(())
    }

    /// Acts on a batch's outcomes in memory and in the dead-letter log; the caller stores
    /// the cursor.
    fn apply(&mut self, batch: Batch) -> Result<()> {
        let Some(generation) = batch.generation else {
            return Ok(());
        };
        if self.outstanding != Some(generation) {
            return Err(Error::StaleBatch {
                first_lsn: batch.first_lsn,
                last_lsn: batch.last_lsn,
            });
        }
        self.outstanding = None;
        let Batch {
            records,
            outcomes,
            last_lsn,
            ..
        } = batch;
        let max_attempts = self.options.max_attempts;
        let mut dead = Vec::new();
        let mut stop = records.len();
        let mut retry = None;
        let mut processed = 0;
        for (i, (record, outcome)) in records.iter().zip(&outcomes).enumerate() {
            let prior = match &self.state.retry {
                Some(r) if r.lsn == record.lsn => r.attempts,
                _ => 0,
            };
            match outcome {
                Some(Outcome::Ok) => processed += 1,
                Some(Outcome::Fail(reason)) => {
                    dead.push((record, DeadLetterCause::Failed, prior + 1, reason.as_str()));
                }
                Some(Outcome::Retry(reason)) if prior + 1 >= max_attempts => {
                    let cause = DeadLetterCause::RetriesExhausted;
                    dead.push((record, cause, prior + 1, reason.as_str()));
                }
                Some(Outcome::Retry(reason)) => {
                    retry = Some(Retrying {
                        lsn: record.lsn,
                        attempts: prior + 1,
                        error: reason.clone(),
                    });
                    stop = i;
                    break;
                }
                None => {
                    stop = i;
                    break;
                }
            }
        }
        self.dead_letter(&dead)?;
        self.metrics.processed += processed;
        let next = records.get(stop).map_or(last_lsn + 1, |r| r.lsn);
        self.advance(next);
        if let Some(r) = retry {
            let delay = self.backoff.delay(r.attempts);
            self.retry_due = Some(Instant::now() + delay);
            self.metrics.retried += 1;
            self.metrics.backoff_total += delay;
            self.state.retry = Some(r);
        }
        // The records from the stop on are handed out again, in order.
        for record in records.into_iter().skip(stop).rev() {
            self.unread.push_front(record);
        }
        Ok(())
    }

    /// The next batch, waiting up to `max_wait`; stores the cursor before returning, also
    /// when it fails (a commit applied just before is not lost with the error).
    fn next_batch(&mut self, max_records: usize, max_wait: Duration) -> Result<Batch> {
        let result = self.next_batch_inner(max_records, max_wait);
        if result.is_err() && self.poisoned.is_none() {
            // The first error is the one to report; a failed store poisons the consumer.
            let _ = self.store_if_dirty();
        }
        result
    }

    fn next_batch_inner(&mut self, max_records: usize, max_wait: Duration) -> Result<Batch> {
        let deadline = Instant::now().checked_add(max_wait);
        let mut pause = POLL_PAUSE_MIN;
        loop {
            self.check_in_log(false)?;
            let now = Instant::now();
            let retry_wait = self.retry_due.filter(|&due| due > now);
            if retry_wait.is_none() {
                if let Some(batch) = self.take_batch(max_records)? {
                    return Ok(batch);
                }
            }
            self.store_if_dirty()?;
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(Batch::empty(self.state.next_lsn));
            }
            let mut wake = retry_wait.unwrap_or(now + pause);
            if let Some(d) = deadline {
                wake = wake.min(d);
            }
            std::thread::sleep(wake.saturating_duration_since(now));
            pause = (pause * 2).min(POLL_PAUSE_MAX);
        }
    }

    /// Hands out the next batch if there are records for it, after storing its range and
    /// attempt number.
    fn take_batch(&mut self, max_records: usize) -> Result<Option<Batch>> {
        let bytes_max = self.options.batch_bytes_max;
        loop {
            if self.resolve_exhausted()? {
                continue;
            }
            let mut records = if let Some(f) = self.state.in_flight {
                // Not come back: the same range again (or its start, if the batch is smaller).
                self.gather(f.last, max_records, bytes_max)?
            } else if let Some(last) = self.state.suspect_last {
                // Bisecting: the first half of the suspect range goes out alone.
                let mut records = self.gather(last, max_records, bytes_max)?;
                let rest = records.split_off(records.len().div_ceil(2));
                self.unread_front(rest);
                records
            } else {
                self.gather(u64::MAX, max_records, bytes_max)?
            };
            let Some(last) = records.last().map(|r| r.lsn) else {
                return Ok(None);
            };
            let attempt = self.state.in_flight.map_or(1, |f| f.attempt + 1);
            let through = self.dead_lettered_through;
            records.retain(|r| r.lsn > through);
            if records.is_empty() {
                // All of them were dead-lettered before a crash kept the cursor from moving.
                self.advance(last + 1);
                continue;
            }
            self.state.in_flight = Some(InFlight { last, attempt });
            self.dirty = true;
            self.store()?;
            if attempt > 1 {
                self.metrics.redelivered += 1;
            }
            self.generation += 1;
            self.outstanding = Some(self.generation);
            return Ok(Some(Batch {
                generation: Some(self.generation),
                first_lsn: self.state.next_lsn,
                last_lsn: last,
                attempt,
                outcomes: vec![None; records.len()],
                records,
            }));
        }
    }

    /// Deals with a batch that did not come back: a lone record handed out `max_attempts`
    /// times is dead-lettered; a larger batch handed out `max_attempts` times becomes the
    /// range to bisect, and while bisecting, a half that did not come back once narrows the
    /// range to it (the whole batch already failed `max_attempts` times, so the failure
    /// repeats; a flaky one narrows to a range that then passes, which ends the bisection).
    /// Returns whether it changed anything.
    fn resolve_exhausted(&mut self) -> Result<bool> {
        let Some(f) = self.state.in_flight else {
            return Ok(false);
        };
        let exhausted = f.attempt >= self.options.max_attempts;
        if !exhausted && self.state.suspect_last.is_none() {
            return Ok(false);
        }
        // Two are enough to tell a lone record from a batch; no byte limit, so a large
        // record does not make its batch look like one record.
        let mut records = self.gather(f.last, 2, usize::MAX)?;
        match records.len() {
            0 => return Ok(false),
            // A lone record must fail all its attempts alone.
            1 if !exhausted => {
                self.unread_front(records);
                return Ok(false);
            }
            1 => {
                let record = records.remove(0);
                if record.lsn > self.dead_lettered_through {
                    let mut error = format!(
                        "the consumer did not come back from {} deliveries of this record \
                         alone (the process died or the batch was dropped)",
                        f.attempt
                    );
                    if let Some(r) = self.state.retry.as_ref().filter(|r| r.lsn == record.lsn) {
                        error.push_str(&format!("; last reported error: {}", r.error));
                    }
                    self.dead_letter(&[(&record, DeadLetterCause::Crashed, f.attempt, &error)])?;
                }
                self.advance(f.last + 1);
            }
            _ => {
                self.unread_front(records);
                self.state.suspect_last = Some(f.last);
                self.state.in_flight = None;
                self.dirty = true;
            }
        }
        Ok(true)
    }

    /// Puts records back in front of the unread ones, in order.
    fn unread_front(&mut self, records: Vec<LogRecord>) {
        for record in records.into_iter().rev() {
            self.unread.push_front(record);
        }
    }

    /// Up to `count_max` records with LSNs up to `last`, stopping before `bytes_max`
    /// payload bytes (but taking at least one).
    fn gather(&mut self, last: u64, count_max: usize, bytes_max: usize) -> Result<Vec<LogRecord>> {
        let mut out: Vec<LogRecord> = Vec::new();
        let mut bytes = 0usize;
        while out.len() < count_max {
            let Some(record) = self.next_record()? else {
                break;
            };
            let too_big = !out.is_empty() && bytes.saturating_add(record.payload.len()) > bytes_max;
            if record.lsn > last || too_big {
                self.unread.push_front(record);
                break;
            }
            bytes += record.payload.len();
            out.push(record);
        }
        Ok(out)
    }

    /// The next durable record at or after the cursor not handed out yet.
    fn next_record(&mut self) -> Result<Option<LogRecord>> {
        if let Some(record) = self.unread.pop_front() {
            return Ok(Some(record));
        }
        loop {
            match self.reader.next() {
                Some(Ok(record)) if record.lsn < self.state.next_lsn => continue,
                Some(Ok(record)) => return Ok(Some(record)),
                Some(Err(e)) => return Err(e),
                None => {
                    if self.wal.durable_lsn() <= self.read_through {
                        return Ok(None);
                    }
                    self.read_through = self.wal.extend_durable(&mut self.reader);
                }
            }
        }
    }
}
