//! The operation language and the model checker.
//!
//! The model is deliberately small: the records that may be in the log (by LSN, with their
//! payload and correlation id), the LSN the next record must get, and two watermarks: what
//! must survive power loss (`durable_mark`) and what must survive a process crash
//! (`written_mark`). Everything else is derived from the contract in `docs/DESIGN.md` §1
//! and `docs/DURABILITY.md`.
//!
//! Runs are single-threaded and deterministic: the same seed and operations give the same
//! storage images, byte for byte, so a failing seed reproduces. For that the background
//! sync is pushed out of the way (`sync_interval` = 1 hour, no jitter: it never fires
//! within a run; `sync`, `Sync` records and `close` make things durable) and the
//! lock-hold budget is set to its maximum so that group sizes never depend on measured
//! times. `submit` still uses the background thread to lead, but the runner waits for each
//! ticket before the next step, so nothing else touches the storage meanwhile.

use crate::io::sim::{CrashMode, FaultKind, SimStorage};
use crate::io::Storage;
use crate::{CorrelationId, Durability, Error, Receipt, Record, Wal, WalOptions};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// The log's directory inside the simulated storage.
pub const LOG_DIR: &str = "log";

/// How long a `submit` ticket may take before the run reports a hang.
const TICKET_TIMEOUT: Duration = Duration::from_secs(20);

/// What kind of crash [`Op::Crash`] simulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrashKind {
    /// Power loss: only what was synced survives.
    Clean,
    /// Power loss that keeps a random in-order part of the unsynced writes, the last one
    /// possibly cut at a sector boundary.
    Torn,
    /// The process dies (kill -9): everything written to the OS survives, synced or not.
    Process,
}

/// One step of a workload. Lengths are payload bytes; a length above the run's
/// `record_bytes_max` makes an invalid record that must fail alone with
/// `RecordTooLarge`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `Wal::append` of one record.
    Append {
        /// Payload bytes.
        len: u32,
        /// Durability of the record.
        durability: Durability,
        /// Whether it carries a correlation id.
        with_id: bool,
    },
    /// `Wal::append_many` of `count` records of lengths derived from `len`.
    AppendMany {
        /// Records in the batch (0 is allowed).
        count: u8,
        /// Base payload length; each record varies it.
        len: u32,
        /// Durability of the batch.
        durability: Durability,
        /// Whether one record of the batch is too large (it must fail alone).
        one_invalid: bool,
    },
    /// `Wal::submit`, then waiting for the ticket.
    Submit {
        /// Payload bytes.
        len: u32,
        /// Durability of the record.
        durability: Durability,
    },
    /// `Wal::sync`.
    Sync,
    /// Reads the live log from a point between `first_lsn` and `written_lsn` and checks it.
    Read {
        /// Where to start, as a fraction (of 255) of the readable range.
        frac: u8,
    },
    /// `Wal::truncate_before` an LSN between `first_lsn` and `next_lsn`.
    TruncateBefore {
        /// The LSN, as a fraction (of 255) of that range.
        frac: u8,
    },
    /// A crash, then reopening and checking the recovered log.
    Crash(CrashKind),
    /// Makes the `nth` next call of `kind` fail with `EIO`.
    Fail {
        /// The kind of call.
        kind: FaultKind,
        /// Which call, counting from 1 (0 counts as 1).
        nth: u8,
    },
    /// Makes the next write land only its first `keep` bytes, then fail with `EIO`.
    ShortWrite {
        /// Bytes that land.
        keep: u32,
    },
    /// Sets the space budget to the bytes in use plus this many (`None` lifts it).
    SetBudget(Option<u32>),
    /// `Wal::close`, then reopening and checking the recovered log.
    Reopen,
}

/// The shape of a run, derived from its seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunConfig {
    /// `segment_bytes` of the log.
    pub segment_bytes: u64,
    /// `record_bytes_max` of the log.
    pub record_bytes_max: usize,
    /// `recycle_segments` of the log.
    pub recycle_segments: usize,
}

impl RunConfig {
    /// The configuration of the run with `seed`: the smallest segments, one of four record
    /// limits (from many records per segment to one record filling a segment), and one of
    /// four pool sizes for segments freed by truncation (none: every freed segment deleted;
    /// up to more than a run usually frees).
    pub fn for_seed(seed: u64) -> RunConfig {
        const LIMITS: [usize; 4] = [512, 4096, 16384, 65536 - 64 - 33];
        const POOLS: [usize; 4] = [0, 1, 2, 8];
        let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        RunConfig {
            segment_bytes: 64 << 10,
            record_bytes_max: LIMITS[(mixed >> 62) as usize],
            recycle_segments: POOLS[(mixed >> 60 & 3) as usize],
        }
    }
}

/// What a run did, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Operations run (including the two final checks).
    pub ops: usize,
    /// Records acknowledged.
    pub acked: u64,
    /// Records whose outcome was unknown (their group's write or sync failed).
    pub unknown: u64,
    /// Invalid records refused.
    pub refused: u64,
    /// Crashes simulated.
    pub crashes: u64,
    /// Recoveries checked (after crashes and reopens).
    pub recoveries: u64,
    /// Faults that fired.
    pub faults: u64,
    /// Times the handle was poisoned.
    pub poisonings: u64,
    /// Records in the log at the end.
    pub records_at_end: u64,
    /// Highest LSN the log reached.
    pub lsn_max: u64,
    /// Pool files (freed segments kept for reuse, `<seq>.wal.free`) that went away between
    /// two steps: reused by a new segment, or removed.
    pub pool_files_used: u64,
}

/// The payload of the `sub`-th record of operation `op_index`: zeros, `0xff`s or seeded
/// random bytes (zeros and `0xff`s are the patterns a torn write or fresh preallocated
/// space look like, so they are the interesting ones).
pub fn payload(op_index: usize, sub: usize, len: usize) -> Vec<u8> {
    let tag = ((op_index as u64) << 16) | sub as u64;
    let mut rng = fastrand::Rng::with_seed(tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32);
    match rng.u8(0..4) {
        0 => vec![0; len],
        1 => vec![0xff; len],
        _ => {
            let mut bytes = vec![0; len];
            rng.fill(&mut bytes);
            bytes
        }
    }
}

fn correlation_id(op_index: usize, sub: usize) -> CorrelationId {
    CorrelationId(((op_index as u128) << 64) | (sub as u128 + 1))
}

/// A record the model knows: what was appended at an LSN.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Expected {
    payload: Vec<u8>,
    correlation_id: Option<CorrelationId>,
}

#[derive(Debug, Default)]
struct Model {
    /// Every record that may be in the log: acknowledged, or of a failed group (outcome
    /// unknown). Dense from 1 up to the last LSN assigned.
    records: BTreeMap<u64, Expected>,
    /// LSN the next record must get (meaningful while not poisoned).
    next_lsn: u64,
    /// Everything up to here must survive power loss.
    durable_mark: u64,
    /// Everything up to here must survive a process crash.
    written_mark: u64,
    /// Highest LSN passed to `truncate_before`: the first LSN may rise up to it, never above.
    truncate_mark: u64,
    /// The handle refuses work after an IO failure.
    poisoned: bool,
}

/// How an append-like call ended, for the model.
enum Outcome {
    Acked,
    /// The group failed: the record may or may not be on disk.
    Unknown,
    /// The record never reached a group that was written.
    NotWritten,
}

type Check<T = ()> = Result<T, String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

struct Harness {
    seed: u64,
    cfg: RunConfig,
    sim: Arc<SimStorage>,
    wal: Option<Wal>,
    model: Model,
    summary: Summary,
    /// A space budget is set (ENOSPC may happen).
    budget: bool,
    /// `durable_lsn` and `written_lsn` last seen on the current handle (never go back).
    seen_durable: u64,
    seen_written: u64,
    /// Fault counter before the current step.
    faults_before: u64,
    /// Print every step (`GROUPWAL_MODEL_TRACE`).
    trace: bool,
    /// Pool files in the log's directory after the last step.
    pool_files: Vec<String>,
}

fn is_enospc(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
}

impl Harness {
    fn new(seed: u64) -> Check<Harness> {
        let sim = SimStorage::new(seed);
        let mut h = Harness {
            seed,
            cfg: RunConfig::for_seed(seed),
            sim,
            wal: None,
            model: Model {
                next_lsn: 1,
                ..Model::default()
            },
            summary: Summary::default(),
            budget: false,
            seen_durable: 0,
            seen_written: 0,
            faults_before: 0,
            trace: std::env::var_os("GROUPWAL_MODEL_TRACE").is_some(),
            pool_files: Vec::new(),
        };
        h.reopen(0, "initial open")?;
        Ok(h)
    }

    fn options(&self) -> WalOptions {
        let storage: Arc<dyn Storage> = self.sim.clone();
        WalOptions::default()
            .storage(storage)
            .segment_bytes(self.cfg.segment_bytes)
            .record_bytes_max(self.cfg.record_bytes_max)
            .lock_hold_max(Duration::from_secs(10))
            .sync_interval(Duration::from_secs(3600))
            .sync_interval_jitter(Duration::ZERO)
            // Deterministic runs: no background IO at moments that depend on thread timing
            // (fault injection counts calls, crashes cut at call boundaries).
            .prepare_next_segment(false)
            // Small pieces, so that `Sync` batches are pipelined (pieces written, one sync
            // at the end) and crashes and faults land between their pieces.
            .pipeline_bytes(Some(4096))
            .recycle_segments(self.cfg.recycle_segments)
            .seed(Some(self.seed))
    }

    /// The pool files in the log's directory, sorted.
    fn list_pool_files(&self) -> Check<Vec<String>> {
        let mut names: Vec<String> = self
            .sim
            .list_dir(std::path::Path::new(LOG_DIR))
            .map_err(|e| format!("listing the log directory failed: {e}"))?
            .into_iter()
            .filter(|n| n.ends_with(".wal.free"))
            .collect();
        names.sort_unstable();
        Ok(names)
    }

    fn wal(&self) -> &Wal {
        self.wal.as_ref().expect("the log is open between steps")
    }

    /// A fault fired during this step, or the space budget may have refused a write.
    fn faulty(&self) -> bool {
        self.budget || self.sim.stats().faults_injected > self.faults_before
    }

    fn state(&self) -> String {
        let m = &self.model;
        let mut s = format!(
            "model: next_lsn {} durable_mark {} written_mark {} truncate_mark {} poisoned {}",
            m.next_lsn, m.durable_mark, m.written_mark, m.truncate_mark, m.poisoned
        );
        if let Some(wal) = &self.wal {
            let _ = write!(
                s,
                "; log: first_lsn {} durable_lsn {} written_lsn {} next_lsn {}",
                wal.first_lsn(),
                wal.durable_lsn(),
                wal.written_lsn(),
                wal.next_lsn()
            );
        }
        s
    }

    fn record_len(&self, len: u32) -> usize {
        len as usize
    }

    /// Classifies the result of appending one record that the model expected at
    /// `expected_lsn`, and updates the model.
    fn outcome(
        &mut self,
        result: crate::Result<Receipt>,
        durability: Durability,
        expected_lsn: u64,
        record: Expected,
    ) -> Check<Outcome> {
        let faulty = self.faulty();
        if self.trace {
            eprintln!("  -> {result:?}");
        }
        let outcome = match result {
            Ok(r) => {
                ensure!(
                    !self.model.poisoned,
                    "record acknowledged (LSN {}) by a poisoned handle",
                    r.lsn
                );
                ensure!(
                    r.lsn == expected_lsn,
                    "record acknowledged with LSN {}, expected {expected_lsn} (LSNs must be dense and never reused)",
                    r.lsn
                );
                ensure!(
                    r.durability == durability,
                    "receipt says {:?}, the record asked for {durability:?}",
                    r.durability
                );
                ensure!(r.group_records >= 1, "receipt of a group with no records");
                self.summary.acked += 1;
                self.model.records.insert(r.lsn, record);
                match durability {
                    Durability::Sync => {
                        self.model.durable_mark = self.model.durable_mark.max(r.lsn);
                        self.model.written_mark = self.model.written_mark.max(r.lsn);
                    }
                    Durability::Flush => {
                        self.model.written_mark = self.model.written_mark.max(r.lsn)
                    }
                    Durability::Buffer => {}
                }
                Outcome::Acked
            }
            Err(Error::OutcomeUnknown { .. }) => {
                ensure!(faulty, "OutcomeUnknown without any injected fault");
                self.summary.unknown += 1;
                self.model.records.insert(expected_lsn, record);
                self.poison();
                Outcome::Unknown
            }
            Err(Error::Poisoned { reason }) => {
                ensure!(
                    self.model.poisoned || faulty,
                    "Poisoned ({reason}) without any IO failure"
                );
                self.poison();
                Outcome::NotWritten
            }
            Err(e @ Error::Io { .. }) => {
                ensure!(faulty, "IO error without any injected fault: {e}");
                ensure!(
                    !self.model.poisoned,
                    "a poisoned handle answered with an IO error instead of Poisoned: {e}"
                );
                Outcome::NotWritten
            }
            Err(e) => return Err(format!("unexpected error: {e}")),
        };
        Ok(outcome)
    }

    fn poison(&mut self) {
        if !self.model.poisoned {
            self.summary.poisonings += 1;
        }
        self.model.poisoned = true;
    }

    fn refused(&mut self, result: &crate::Result<Receipt>, len: usize) -> Check {
        match result {
            Err(Error::RecordTooLarge { len: l, max })
                if *l == len && *max == self.cfg.record_bytes_max =>
            {
                self.summary.refused += 1;
                Ok(())
            }
            other => Err(format!(
                "a record of {len} bytes (limit {}) must fail alone with RecordTooLarge, got {other:?}",
                self.cfg.record_bytes_max
            )),
        }
    }

    /// After a step that poisoned the handle: it must refuse work.
    fn check_poisoned(&self) -> Check {
        match self.wal().sync() {
            Err(Error::Poisoned { .. }) => Ok(()),
            other => Err(format!(
                "after an IO failure the handle must be poisoned, but sync() returned {other:?}"
            )),
        }
    }

    fn step(&mut self, index: usize, op: &Op) -> Check {
        self.faults_before = self.sim.stats().faults_injected;
        let poisoned_before = self.model.poisoned;
        match op {
            Op::Append {
                len,
                durability,
                with_id,
            } => {
                let len = self.record_len(*len);
                let bytes = payload(index, 0, len);
                let id = with_id.then(|| correlation_id(index, 0));
                let mut record = Record::new(&bytes).durability(*durability);
                if let Some(id) = id {
                    record = record.correlation_id(id);
                }
                let result = self.wal().append(record);
                if len > self.cfg.record_bytes_max {
                    self.refused(&result, len)?;
                } else {
                    let expected_lsn = self.model.next_lsn;
                    let expected = Expected {
                        payload: bytes.clone(),
                        correlation_id: id,
                    };
                    if let Outcome::Acked | Outcome::Unknown =
                        self.outcome(result, *durability, expected_lsn, expected)?
                    {
                        self.model.next_lsn = expected_lsn + 1;
                    }
                }
            }
            Op::AppendMany {
                count,
                len,
                durability,
                one_invalid,
            } => self.append_many(index, *count as usize, *len, *durability, *one_invalid)?,
            Op::Submit { len, durability } => {
                let len = self.record_len(*len);
                let bytes = payload(index, 0, len);
                let record = Record::new(&bytes).durability(*durability);
                let expected_lsn = self.model.next_lsn;
                let result = match self.wal().submit(record) {
                    Ok(ticket) => {
                        ensure!(
                            ticket.lsn() == expected_lsn || len > self.cfg.record_bytes_max,
                            "submit gave LSN {}, expected {expected_lsn}",
                            ticket.lsn()
                        );
                        match ticket.wait_timeout(TICKET_TIMEOUT) {
                            Ok(Some(r)) => Ok(r),
                            Ok(None) => {
                                return Err(format!(
                                    "submitted record (LSN {}) not done after {TICKET_TIMEOUT:?}: a waiter hangs",
                                    ticket.lsn()
                                ))
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                if len > self.cfg.record_bytes_max {
                    self.refused(&result, len)?;
                } else {
                    let expected = Expected {
                        payload: bytes.clone(),
                        correlation_id: None,
                    };
                    if let Outcome::Acked | Outcome::Unknown =
                        self.outcome(result, *durability, expected_lsn, expected)?
                    {
                        self.model.next_lsn = expected_lsn + 1;
                    }
                }
            }
            Op::Sync => match self.wal().sync() {
                Ok(()) => {
                    ensure!(
                        !self.model.poisoned,
                        "sync() succeeded on a poisoned handle"
                    );
                    let last = self.model.next_lsn - 1;
                    self.model.durable_mark = self.model.durable_mark.max(last);
                    self.model.written_mark = self.model.written_mark.max(last);
                    let durable = self.wal().durable_lsn();
                    ensure!(
                        durable >= last,
                        "sync() returned but durable_lsn is {durable}, below the last record {last}"
                    );
                }
                Err(Error::Poisoned { reason }) => {
                    ensure!(
                        self.model.poisoned || self.faulty(),
                        "sync() says Poisoned ({reason}) without any IO failure"
                    );
                    self.poison();
                }
                Err(e) => return Err(format!("sync() failed unexpectedly: {e}")),
            },
            Op::Read { frac } => self.read_live(*frac)?,
            Op::TruncateBefore { frac } => {
                let wal = self.wal();
                let (first, next) = (wal.first_lsn(), wal.next_lsn());
                let lsn = first + (next - first) * *frac as u64 / 255;
                let result = wal.truncate_before(lsn);
                let new_first = wal.first_lsn();
                match result {
                    Ok(_) => {}
                    Err(e @ Error::Io { .. }) => {
                        ensure!(self.faulty(), "truncate_before failed without a fault: {e}")
                    }
                    Err(e) => return Err(format!("truncate_before failed unexpectedly: {e}")),
                }
                self.model.truncate_mark = self.model.truncate_mark.max(lsn);
                ensure!(
                    new_first >= first && new_first <= lsn.max(first),
                    "truncate_before({lsn}) moved first_lsn from {first} to {new_first}"
                );
            }
            Op::Crash(kind) => {
                self.summary.crashes += 1;
                // The machine (or process) dies: the next one starts from a copy of the
                // storage, and the old handle is closed against the old storage only.
                let next = self.sim.fork();
                drop(self.wal.take());
                match kind {
                    CrashKind::Clean => next.crash(CrashMode::Clean),
                    CrashKind::Torn => next.crash(CrashMode::Torn),
                    CrashKind::Process => {}
                }
                self.sim = next;
                let required = match kind {
                    CrashKind::Process => self.model.durable_mark.max(self.model.written_mark),
                    CrashKind::Clean | CrashKind::Torn => self.model.durable_mark,
                };
                self.reopen(required, &format!("after a {kind:?} crash"))?;
            }
            Op::Fail { kind, nth } => self.sim.fail_nth(*kind, (*nth).max(1) as u64),
            Op::ShortWrite { keep } => self.sim.short_write_nth(1, *keep as usize),
            Op::SetBudget(extra) => {
                let budget = extra.map(|x| self.sim.used_bytes() + x as u64);
                self.sim.set_space_budget(budget);
                self.budget = budget.is_some();
            }
            Op::Reopen => {
                let wal = self.wal.take().expect("open between steps");
                let result = wal.close();
                self.observe(&wal)?;
                match result {
                    Ok(()) => {
                        ensure!(
                            !self.model.poisoned,
                            "close() succeeded on a poisoned handle"
                        );
                        let last = self.model.next_lsn - 1;
                        ensure!(
                            wal.durable_lsn() >= last,
                            "close() returned Ok but durable_lsn {} is below the last record {last}",
                            wal.durable_lsn()
                        );
                        self.model.durable_mark = last;
                        self.model.written_mark = last;
                    }
                    Err(Error::Poisoned { reason }) => ensure!(
                        self.model.poisoned || self.faulty(),
                        "close() says Poisoned ({reason}) without any IO failure"
                    ),
                    Err(e) => return Err(format!("close() failed unexpectedly: {e}")),
                }
                drop(wal);
                let required = self.model.durable_mark.max(self.model.written_mark);
                self.reopen(required, "after close and reopen")?;
            }
        }
        self.summary.faults += self.sim.stats().faults_injected - self.faults_before;
        let pool_files = self.list_pool_files()?;
        self.summary.pool_files_used += self
            .pool_files
            .iter()
            .filter(|n| pool_files.binary_search(n).is_err())
            .count() as u64;
        self.pool_files = pool_files;
        if let Some(wal) = self.wal.take() {
            let checked = self.observe(&wal);
            self.wal = Some(wal);
            checked?;
            if self.model.poisoned && !poisoned_before {
                self.check_poisoned()?;
            }
            if !self.model.poisoned {
                let next = self.wal().next_lsn();
                ensure!(
                    next == self.model.next_lsn,
                    "next_lsn is {next}, the model expects {}",
                    self.model.next_lsn
                );
            }
        }
        Ok(())
    }

    fn append_many(
        &mut self,
        index: usize,
        count: usize,
        len: u32,
        durability: Durability,
        one_invalid: bool,
    ) -> Check {
        let max = self.cfg.record_bytes_max;
        let invalid = (one_invalid && count > 0).then(|| (index * 7 + 3) % count);
        let lens: Vec<usize> = (0..count)
            .map(|j| {
                if Some(j) == invalid {
                    max + 1 + j
                } else {
                    (len as usize + j * 37) % (max + 1)
                }
            })
            .collect();
        let payloads: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(j, &l)| payload(index, j, l))
            .collect();
        let ids: Vec<Option<CorrelationId>> = (0..count)
            .map(|j| (j % 3 == 1).then(|| correlation_id(index, j)))
            .collect();
        let records: Vec<Record<'_>> = payloads
            .iter()
            .zip(&ids)
            .map(|(p, id)| {
                let r = Record::new(p).durability(durability);
                match id {
                    Some(id) => r.correlation_id(*id),
                    None => r,
                }
            })
            .collect();
        let results = self.wal().append_many(&records);
        ensure!(
            results.len() == count,
            "append_many of {count} records returned {} results",
            results.len()
        );
        let mut expected_lsn = self.model.next_lsn;
        let mut stopped = false;
        for (j, result) in results.into_iter().enumerate() {
            if Some(j) == invalid {
                self.refused(&result, lens[j])
                    .map_err(|e| format!("batch record {j}: {e}"))?;
                continue;
            }
            let expected = Expected {
                payload: payloads[j].clone(),
                correlation_id: ids[j],
            };
            match self
                .outcome(result, durability, expected_lsn, expected)
                .map_err(|e| format!("batch record {j}: {e}"))?
            {
                Outcome::Acked | Outcome::Unknown => {
                    ensure!(
                        !stopped,
                        "batch record {j} joined the log after an earlier record of the batch was refused"
                    );
                    expected_lsn += 1;
                }
                Outcome::NotWritten => stopped = true,
            }
        }
        self.model.next_lsn = expected_lsn;
        Ok(())
    }

    /// Checks the handle's watermarks and folds them into the model.
    fn observe(&mut self, wal: &Wal) -> Check {
        let (durable, written, next) = (wal.durable_lsn(), wal.written_lsn(), wal.next_lsn());
        ensure!(
            durable <= written,
            "durable_lsn {durable} passed written_lsn {written}"
        );
        ensure!(
            written < next,
            "written_lsn {written} reached next_lsn {next}"
        );
        ensure!(
            durable >= self.seen_durable,
            "durable_lsn went backwards from {} to {durable}",
            self.seen_durable
        );
        ensure!(
            written >= self.seen_written,
            "written_lsn went backwards from {} to {written}",
            self.seen_written
        );
        self.seen_durable = durable;
        self.seen_written = written;
        self.model.durable_mark = self.model.durable_mark.max(durable);
        self.model.written_mark = self.model.written_mark.max(written);
        Ok(())
    }

    /// Checks one record read back against the model.
    fn check_record(&self, record: &crate::LogRecord, expected_lsn: u64) -> Check {
        ensure!(
            record.lsn == expected_lsn,
            "read LSN {} where LSN {expected_lsn} was expected (LSNs must be dense)",
            record.lsn
        );
        let Some(expected) = self.model.records.get(&record.lsn) else {
            return Err(format!(
                "read a record at LSN {} that was never appended (a garbage or stale record)",
                record.lsn
            ));
        };
        ensure!(
            record.payload == expected.payload,
            "record at LSN {} has a {}-byte payload that differs from the {}-byte payload appended there",
            record.lsn,
            record.payload.len(),
            expected.payload.len()
        );
        ensure!(
            record.correlation_id == expected.correlation_id,
            "record at LSN {} has correlation id {:?}, appended with {:?}",
            record.lsn,
            record.correlation_id,
            expected.correlation_id
        );
        Ok(())
    }

    fn read_live(&self, frac: u8) -> Check {
        let wal = self.wal();
        let (first, written) = (wal.first_lsn(), wal.written_lsn());
        let end = (written + 1).max(first);
        let from = first + (end - first) * frac as u64 / 255;
        let mut expected_lsn = from;
        for item in wal.read_from(from) {
            let record = item.map_err(|e| format!("reading from LSN {from} failed: {e}"))?;
            self.check_record(&record, expected_lsn)
                .map_err(|e| format!("live read from LSN {from}: {e}"))?;
            expected_lsn += 1;
        }
        ensure!(
            expected_lsn == end.max(from),
            "live read from LSN {from} ended before LSN {expected_lsn}; written_lsn is {written}"
        );
        Ok(())
    }

    /// Opens the log (retrying once a fault or the space budget made it fail), checks what
    /// recovery returned, and resets the model to it. `required`: the last LSN that must
    /// have survived.
    fn reopen(&mut self, required: u64, what: &str) -> Check {
        self.summary.recoveries += 1;
        let mut attempts = 0;
        let wal = loop {
            let before = self.sim.stats().faults_injected;
            match Wal::open(LOG_DIR, self.options()) {
                Ok(wal) => break wal,
                Err(e) => {
                    let fired = self.sim.stats().faults_injected > before;
                    attempts += 1;
                    ensure!(
                        (fired || (self.budget && is_enospc(&e))) && attempts < 4,
                        "{what}: open failed: {e}"
                    );
                    // The failure was injected: the next attempt runs without faults.
                    self.sim.clear_faults();
                    self.sim.set_space_budget(None);
                    self.budget = false;
                }
            }
        };
        let (first, next) = (wal.first_lsn(), wal.next_lsn());
        let result = (|| {
            ensure!(
                wal.durable_lsn() == next - 1 && wal.written_lsn() == next - 1,
                "after open durable_lsn {} and written_lsn {} must both be the last record {}",
                wal.durable_lsn(),
                wal.written_lsn(),
                next - 1
            );
            ensure!(
                first >= 1 && first <= next,
                "first_lsn {first} outside 1..={next}"
            );
            ensure!(
                first <= self.model.truncate_mark.max(1),
                "the log starts at LSN {first}, but nothing below {} was truncated: records were dropped",
                self.model.truncate_mark.max(1)
            );
            let mut expected_lsn = first;
            for item in wal.read_from(first) {
                let record = item.map_err(|e| format!("reading the recovered log failed: {e}"))?;
                self.check_record(&record, expected_lsn)?;
                expected_lsn += 1;
            }
            ensure!(
                expected_lsn == next,
                "the recovered log reads up to LSN {} but next_lsn is {next}",
                expected_lsn - 1
            );
            ensure!(
                next > required,
                "acknowledged records lost: the log ends at LSN {} but LSN {required} had to survive",
                next - 1
            );
            Ok(())
        })();
        result.map_err(|e| format!("{what}: {e}"))?;
        // Records past the end were lost (never acknowledged as durable); their LSNs are
        // free again.
        self.model.records.split_off(&next);
        self.model.next_lsn = next;
        self.model.durable_mark = next - 1;
        self.model.written_mark = next - 1;
        self.model.poisoned = false;
        self.seen_durable = next - 1;
        self.seen_written = next - 1;
        let pool_files = self.list_pool_files()?;
        // Open removes pool files beyond the limit, best effort: an injected fault may keep one.
        ensure!(
            pool_files.len() <= self.cfg.recycle_segments || self.faulty(),
            "{what}: {} pool files after open, recycle_segments is {}: {pool_files:?}",
            pool_files.len(),
            self.cfg.recycle_segments
        );
        self.summary.records_at_end = next - first;
        self.summary.lsn_max = self.summary.lsn_max.max(next - 1);
        self.wal = Some(wal);
        Ok(())
    }
}

/// Runs `ops` on a fresh simulated storage seeded with `seed`, checking the log against the
/// model after every step and after every recovery, then ends with a torn crash and a clean
/// reopen, each checked. Returns what the run did, or a description of the first violation
/// (with the step and the model's state).
pub fn run_ops(seed: u64, ops: &[Op]) -> Result<Summary, String> {
    let mut h = Harness::new(seed).map_err(|e| format!("seed {seed}: {e}"))?;
    let finale = [Op::Crash(CrashKind::Torn), Op::Reopen];
    // GROUPWAL_MODEL_TRACE=1 prints every step with the model's state, to follow a failure.
    for (index, op) in ops.iter().chain(&finale).enumerate() {
        if h.trace {
            eprintln!("op {index} {op:?}\n  {}", h.state());
        }
        h.step(index, op).map_err(|e| {
            let shown = if index < ops.len() {
                format!("op {index} {op:?}")
            } else {
                format!("final check {op:?}")
            };
            format!("seed {seed}, {shown}: {e}\n  {}", h.state())
        })?;
        h.summary.ops += 1;
    }
    Ok(h.summary)
}
