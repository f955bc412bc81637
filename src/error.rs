//! The crate's error type: IO, corruption and invalid input kept apart.

use std::io;
use std::path::PathBuf;

/// What went wrong. Each variant says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What groupwal was doing ("open segment", "sync directory", …).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The log holds bytes that are not a valid log and are not a torn tail: bit rot, a bad
    /// frame followed by valid ones, a missing or out-of-order segment.
    #[error(
        "corruption in segment {segment} at offset {offset}: {reason}; nothing was changed. \
         Run `groupwal verify` to see every bad frame, or open with RecoveryMode::Salvage \
         (`groupwal salvage`) to quarantine them and keep the rest"
    )]
    Corruption {
        /// Sequence number of the segment (its file name).
        segment: u64,
        /// Byte offset in the segment file.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },

    /// The last segment ends in an incomplete record (a write cut short by a crash), and the
    /// log was opened with `RecoveryMode::Strict`.
    #[error(
        "torn tail in segment {segment} at offset {offset}: {reason}; open with the default \
         RecoveryMode::TolerateTornTail to cut it (it was never acknowledged as durable)"
    )]
    TornTail {
        /// Sequence number of the last segment.
        segment: u64,
        /// Byte offset where the incomplete record starts.
        offset: u64,
        /// Why the bytes there do not form a record.
        reason: String,
    },

    /// A record is larger than the configured limit; it was not written.
    #[error("record of {len} bytes exceeds record_bytes_max of {max} bytes; split it or raise the limit")]
    RecordTooLarge {
        /// Payload bytes of the record.
        len: usize,
        /// The configured limit.
        max: usize,
    },

    /// An option is out of range; the log was not opened.
    #[error("invalid option {name}: {reason}")]
    InvalidOptions {
        /// The option's name.
        name: &'static str,
        /// What is wrong with its value and what is allowed.
        reason: String,
    },

    /// Another handle, in this or another process, has the log open.
    #[error(
        "{path} is locked by another groupwal handle (in this or another process); close it first"
    )]
    Locked {
        /// The log directory.
        path: PathBuf,
    },

    /// A write or `fdatasync` failed while this record's group was being made durable. The
    /// record may or may not be on disk. The handle is now poisoned; reopen the log to learn
    /// what survived.
    #[error(
        "group {group_id} failed while being made durable ({kind:?}: {message}); the outcome of \
         its records is unknown. Reopen the log to recover the durable state"
    )]
    OutcomeUnknown {
        /// The group that failed.
        group_id: u64,
        /// Kind of the underlying IO error.
        kind: io::ErrorKind,
        /// Message of the underlying IO error.
        message: String,
    },

    /// An earlier write or `fdatasync` failed, so this handle refuses all further work: the
    /// kernel may have dropped the unsynced pages, and retrying could acknowledge data that is
    /// not on disk.
    #[error("the log handle is poisoned by an earlier IO failure ({reason}); reopen the log")]
    Poisoned {
        /// The failure that poisoned the handle.
        reason: String,
    },

    /// The handle was closed.
    #[error("the log is closed")]
    Closed,

    /// The handle was opened read-only.
    #[error("the log was opened read-only")]
    ReadOnly,

    /// The in-memory queue is full (`try_submit`); try again later or use a blocking call.
    #[error("the commit queue is full; retry later or use a blocking append")]
    WouldBlock,

    /// A consumer name that cannot name files; nothing was created.
    #[error(
        "invalid consumer name {name:?}: {reason}. Use 1 to 64 ASCII letters, digits, '_' or '-'"
    )]
    InvalidConsumerName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// No consumer of this name was ever opened on this log.
    #[error(
        "no consumer named {name:?} in this log (it has no dead-letter log); check the name, \
         or open it with Wal::consumer first"
    )]
    UnknownConsumer {
        /// The name given.
        name: String,
    },

    /// Another handle, in this or another process, has this consumer open.
    #[error(
        "consumer {name:?} is open in another handle (in this or another process); drop or \
         close that Consumer first, or use its own dead_letters and redrive methods"
    )]
    ConsumerLocked {
        /// The consumer's name.
        name: String,
    },

    /// A consumer's cursor file or dead-letter entry is damaged. Nothing was reset:
    /// restarting the consumer from the start of the log would reprocess every record.
    #[error(
        "consumer state {path} is damaged: {reason}. Nothing was reset (that would reprocess \
         the whole log); restore the file from a backup, or remove it deliberately to \
         restart the consumer from its start position"
    )]
    ConsumerCorrupt {
        /// The cursor file or dead-letter log.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A consumer's cursor points outside the log: records it had not processed were
    /// removed by `truncate_before`, or the cursor belongs to another log.
    #[error(
        "the cursor of consumer {name:?} is at LSN {cursor}, outside the log's LSNs \
         {first_lsn}..{next_lsn}: records it had not processed were truncated away, or the \
         cursor belongs to another log. Truncate only below every consumer's cursor; remove \
         consumers/{name}.cursor to restart the consumer from its start position"
    )]
    CursorOutOfRange {
        /// The consumer's name.
        name: String,
        /// The cursor: the next LSN it would process.
        cursor: u64,
        /// The oldest LSN in the log.
        first_lsn: u64,
        /// The LSN the log's next record will get.
        next_lsn: u64,
    },

    /// A batch was committed after a later poll replaced it (or it was committed already).
    #[error(
        "the batch of LSNs {first_lsn}..={last_lsn} was already committed or replaced by a \
         later poll, which delivers its records again; commit each batch once, before polling"
    )]
    StaleBatch {
        /// First LSN the batch covered.
        first_lsn: u64,
        /// Last LSN the batch covered.
        last_lsn: u64,
    },

    /// A log record is whole (its checksum is right) but is not a key-value operation this
    /// build understands: written by a newer version, or by something other than a
    /// [`Db`](crate::Db). Nothing was changed.
    #[error(
        "log record {lsn} is not a key-value operation this build can read ({reason}); nothing \
         was changed. Open with the version that wrote it, or with RecoveryMode::Salvage to \
         quarantine the record (a copy and a report line go to quarantine/) and replay the rest"
    )]
    BadRecord {
        /// The record's LSN.
        lsn: u64,
        /// Why it does not decode.
        reason: String,
    },

    /// A checkpoint file of a [`Db`](crate::Db) is damaged (bit rot, a hand edit) or does
    /// not fit the log it belongs to. Nothing was changed.
    #[error(
        "checkpoint {path}: {reason}; nothing was changed. Restore the file from a backup, or \
         open with RecoveryMode::Salvage to set it aside and fall back to an older checkpoint \
         if the log still holds the records after it"
    )]
    BadCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An argument is invalid (an empty key, a key or value above its configured limit, …);
    /// nothing was written.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong and what is allowed.
        reason: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True for errors that say the log's bytes are damaged (as opposed to IO failures or
    /// invalid input).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corruption { .. }
                | Error::TornTail { .. }
                | Error::ConsumerCorrupt { .. }
                | Error::BadCheckpoint { .. }
        )
    }
}
