//! groupwal: an embedded write-ahead log with group commit.
//!
//! Many threads append; concurrent records are collected into one sequential write and one
//! `fdatasync` per group, and each writer gets back its own [`Receipt`] (LSN and group id)
//! or its own error. Records are CRC-framed in preallocated segments; recovery cuts a torn
//! tail, refuses mid-log corruption, and can salvage. [`Wal::consumer`] reads the log in
//! batches with a durable cursor, retries and a dead-letter log (see [`consumer`]).
//!
//! ```
//! use groupwal::{Durability, Record, Wal, WalOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let options = WalOptions::default().segment_bytes(1 << 20);
//! let wal = Wal::open(dir.path(), options.clone())?;
//! let receipt = wal.append(Record::new(b"hello").correlation_id(42u64))?;
//! assert_eq!(receipt.lsn, 1);
//! wal.append(Record::new(b"world").durability(Durability::Flush))?;
//! wal.close()?;
//! drop(wal);
//!
//! let wal = Wal::open(dir.path(), options)?;
//! let records: Vec<_> = wal.read_from(1).collect::<Result<_, _>>()?;
//! assert_eq!(records[0].payload, b"hello");
//! assert_eq!(records[1].lsn, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod consumer;
mod error;
pub mod format;
pub mod io;
pub mod kv;
#[cfg(feature = "openraft")]
pub mod raft;
pub mod stats;
#[cfg(feature = "sim")]
#[doc(hidden)]
pub mod testing;
pub mod wal;

pub use consumer::{
    Batch, Consumer, ConsumerMetrics, ConsumerOptions, DeadLetter, DeadLetterCause, Outcome,
    Redriven,
};
pub use error::{Error, Result};
pub use format::CorrelationId;
pub use kv::{BatchOutcome, Db, DbOptions, WriteBatch};
pub use wal::{
    Durability, GroupEvent, GroupListener, LogRecord, Receipt, Record, RecordLocation,
    RecoveryMode, RecoveryReport, Ticket, Wal, WalOptions, WalReader, WalStats,
};
