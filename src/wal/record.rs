//! What callers hand to the log and what they get back.

use crate::error::Result;
use crate::format::CorrelationId;
use crate::wal::commit::Group;
use std::sync::Arc;
use std::time::Duration;

/// What must survive before an append returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// Survives power loss: acknowledged only after an `fdatasync` that covers the record.
    #[default]
    Sync,
    /// Survives a process crash: acknowledged once written to the operating system; made
    /// durable by the next sync group or the background sync within `sync_interval`.
    Flush,
    /// Survives nothing yet: acknowledged once queued in memory; written with the next group
    /// or by the background sync within `sync_interval` (+ jitter).
    Buffer,
}

/// A record to append: a payload, an optional correlation id, a durability.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub(crate) payload: &'a [u8],
    pub(crate) correlation_id: Option<CorrelationId>,
    pub(crate) durability: Durability,
}

impl<'a> Record<'a> {
    /// A [`Durability::Sync`] record without a correlation id.
    pub fn new(payload: &'a [u8]) -> Self {
        Record {
            payload,
            correlation_id: None,
            durability: Durability::Sync,
        }
    }

    /// Sets the correlation id stored with the record.
    pub fn correlation_id(mut self, id: impl Into<CorrelationId>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the durability.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The correlation id, if set.
    pub fn get_correlation_id(&self) -> Option<CorrelationId> {
        self.correlation_id
    }

    /// The durability.
    pub fn get_durability(&self) -> Durability {
        self.durability
    }
}

impl<'a> From<&'a [u8]> for Record<'a> {
    fn from(payload: &'a [u8]) -> Self {
        Record::new(payload)
    }
}

/// Where a record's frame lies in the log: the segment's sequence number and the byte offset
/// of the frame in that segment file.
///
/// The payload starts [`RecordLocation::payload_offset`] bytes into the file (after the
/// 17-byte frame header, or 33 bytes with a correlation id; see `docs/FORMAT.md`). Read bytes
/// back with [`Wal::read_at`](crate::Wal::read_at). A location stays valid until
/// [`Wal::truncate_before`](crate::Wal::truncate_before) removes its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RecordLocation {
    /// Sequence number of the segment (its file name).
    pub segment: u64,
    /// Byte offset of the frame in the segment file.
    pub offset: u64,
}

impl RecordLocation {
    /// Byte offset, in the segment file, of the record's payload.
    pub fn payload_offset(&self, has_correlation_id: bool) -> u64 {
        self.offset + crate::format::frame_len(0, has_correlation_id) as u64
    }
}

/// Proof that a record is in the log, as durable as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The record's log sequence number.
    pub lsn: u64,
    /// The group that carried it (ids increase within one open handle).
    pub group_id: u64,
    /// Records in that group. For `Buffer` records, which are acknowledged before their group
    /// closes, the number it had when the record joined.
    pub group_records: u32,
    /// The durability the record was appended with.
    pub durability: Durability,
    /// The correlation id the record was appended with.
    pub correlation_id: Option<CorrelationId>,
    /// Where the record's frame is in the log. Its bytes can be read back with
    /// [`Wal::read_at`](crate::Wal::read_at) once written: at once for `Flush` and `Sync`
    /// receipts, for `Buffer` ones once [`Wal::written_lsn`](crate::Wal::written_lsn) has
    /// reached `lsn`.
    pub location: RecordLocation,
}

/// A record joined to a group: everything its receipt needs besides the group.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Joining {
    pub lsn: u64,
    pub durability: Durability,
    /// Records in the group when this one joined (a `Buffer` receipt's `group_records`).
    pub records_at_join: u32,
    pub correlation_id: Option<CorrelationId>,
    pub location: RecordLocation,
}

impl Joining {
    /// The record's receipt, waiting for `group` as long as it takes.
    pub fn wait(&self, group: &Group) -> Result<Receipt> {
        self.receipt(group, None)
            .expect("a wait without timeout ends with the outcome")
    }

    /// The record's receipt once `group` is done (at once for `Buffer`); `None` if `timeout`
    /// passed first.
    pub fn receipt(&self, group: &Group, timeout: Option<Duration>) -> Option<Result<Receipt>> {
        if self.durability == Durability::Buffer {
            return Some(Ok(Receipt {
                lsn: self.lsn,
                group_id: group.id,
                group_records: self.records_at_join,
                durability: self.durability,
                correlation_id: self.correlation_id,
                location: self.location,
            }));
        }
        if !group.wait(timeout) {
            return None;
        }
        Some(group.receipt(
            self.lsn,
            self.durability,
            self.correlation_id,
            self.location,
        ))
    }
}

/// A record submitted without waiting; [`Ticket::wait`] returns its receipt.
#[derive(Debug)]
pub struct Ticket {
    pub(crate) group: Arc<Group>,
    pub(crate) record: Joining,
}

impl Ticket {
    /// The record's LSN (assigned at submit).
    pub fn lsn(&self) -> u64 {
        self.record.lsn
    }

    /// The id of the group carrying the record.
    pub fn group_id(&self) -> u64 {
        self.group.id
    }

    /// True once the outcome is known ([`Ticket::wait`] will not block). A `Buffer` record
    /// is done as soon as it is queued.
    pub fn is_done(&self) -> bool {
        self.record.durability == Durability::Buffer || self.group.is_done()
    }

    /// Blocks until the record is as durable as asked, or its group failed.
    pub fn wait(&self) -> Result<Receipt> {
        self.record.wait(&self.group)
    }

    /// Like [`Ticket::wait`], but gives up after `timeout`: `Ok(None)` means not yet.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<Receipt>> {
        self.record.receipt(&self.group, Some(timeout)).transpose()
    }
}

/// What a [`GroupListener`] is told about one group.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GroupEvent {
    /// The group's id.
    pub group_id: u64,
    /// LSN of its first record (for a sync-only group, the first LSN it made durable).
    pub first_lsn: u64,
    /// LSN of its last record.
    pub last_lsn: u64,
    /// Records written by the group (0 for a sync-only group).
    pub records: u32,
    /// Bytes written by the group.
    pub bytes: u64,
    /// Whether the group ended with an `fdatasync`: its own, or for a piece of a pipelined
    /// batch (`WalOptions::pipeline_bytes`), the later one that covered it.
    pub synced: bool,
    /// How long the group's first record waited before the group was taken for writing.
    pub queue_wait: std::time::Duration,
    /// Time spent in the write.
    pub write_time: Duration,
    /// Time spent in the `fdatasync`.
    pub sync_time: Duration,
    /// `(lsn, correlation id)` of the group's records that carry an id: a sample (see
    /// `WalOptions::trace_sample_rate`) of a committed group's, all of a failed group's.
    pub correlation_ids: Vec<(u64, CorrelationId)>,
    /// The error that failed the group, if it failed.
    pub error: Option<String>,
    /// The group failed without being written: the log was poisoned (or closed) before its
    /// turn, so its records are certainly not in the log. `false` for a group whose write or
    /// `fdatasync` failed, whose records' outcome is unknown.
    pub refused: bool,
}

/// Told about every group the log commits or fails, once, in group order. Called on a
/// thread of the log's own, off the commit path; if it falls 1024 groups behind, commits
/// wait for it. A panicking listener stops receiving events; the log goes on.
pub trait GroupListener: Send + Sync {
    /// One group finished.
    fn on_group(&self, event: &GroupEvent);
}
