//! Options of a [`Db`](crate::Db), each with its default and range, checked at open.

use crate::error::{Error, Result};
use crate::io::Storage;
use crate::kv::batch::{OP_OVERHEAD_BYTES, PAYLOAD_HEADER_BYTES};
use crate::wal::{Durability, RecoveryMode, WalOptions};
use std::sync::Arc;
use std::time::Duration;

/// Largest allowed `key_bytes_max`.
pub const KEY_BYTES_MAX: usize = 64 << 10;

/// Options for [`Db::open`](crate::Db::open). Build with [`DbOptions::default`] and the
/// setters; every value is checked when the store opens, and the first one out of range is
/// named in [`Error::InvalidOptions`].
#[derive(Clone, Debug)]
pub struct DbOptions {
    pub(crate) wal: WalOptions,
    pub(crate) durability: Durability,
    pub(crate) key_bytes_max: usize,
    pub(crate) value_bytes_max: usize,
    pub(crate) batch_ops_max: usize,
    pub(crate) log_bytes_max: Option<u64>,
    pub(crate) checkpoint_interval: Option<Duration>,
    pub(crate) checkpoint_interval_jitter: Duration,
    pub(crate) lock_hold_max: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            wal: WalOptions::default(),
            durability: Durability::Sync,
            key_bytes_max: 4096,
            value_bytes_max: 8 << 20,
            batch_ops_max: 16384,
            log_bytes_max: Some(256 << 20),
            checkpoint_interval: None,
            checkpoint_interval_jitter: Duration::ZERO,
            lock_hold_max: Duration::from_millis(1),
        }
    }
}

impl DbOptions {
    /// Options of the write-ahead log under the store (segment size, record limit, group
    /// commit bounds, storage, recovery mode…). Default: [`WalOptions::default`]. The log's
    /// `record_bytes_max` must hold the largest put: `key_bytes_max + value_bytes_max` plus
    /// 14 bytes of encoding.
    pub fn wal_options(mut self, v: WalOptions) -> Self {
        self.wal = v;
        self
    }

    /// The storage everything lives on (log segments, checkpoints, quarantine); a shortcut
    /// for setting it in the log's options. Default: the real file system.
    pub fn storage(mut self, v: Arc<dyn Storage>) -> Self {
        self.wal = self.wal.storage(v);
        self
    }

    /// What opening does about damaged log bytes (the log's own recovery) and about log
    /// records that are not key-value operations (poison pills): by default opening fails
    /// naming the record's LSN; [`RecoveryMode::Salvage`] quarantines them and replays the
    /// rest. Default: [`RecoveryMode::TolerateTornTail`]. A shortcut for the log's option.
    pub fn recovery_mode(mut self, v: RecoveryMode) -> Self {
        self.wal = self.wal.recovery_mode(v);
        self
    }

    /// Durability of writes that do not name one. Default: [`Durability::Sync`].
    pub fn durability(mut self, v: Durability) -> Self {
        self.durability = v;
        self
    }

    /// Longest key accepted; longer keys fail alone. Default: 4096 bytes. Range: 1 to
    /// 65,536 bytes.
    pub fn key_bytes_max(mut self, v: usize) -> Self {
        self.key_bytes_max = v;
        self
    }

    /// Longest value accepted; longer values fail alone. Default: 8 MiB. Range: 0 to the
    /// log's `record_bytes_max` less `key_bytes_max` and 14 bytes of encoding.
    pub fn value_bytes_max(mut self, v: usize) -> Self {
        self.value_bytes_max = v;
        self
    }

    /// Most operations in one [`WriteBatch`](crate::WriteBatch), which is applied to the
    /// index under one lock hold so that readers see all of it or none. Default: 16,384.
    /// Range: 1 to 1,048,576.
    pub fn batch_ops_max(mut self, v: usize) -> Self {
        self.batch_ops_max = v;
        self
    }

    /// Once about this many bytes were logged since the last checkpoint, a background
    /// thread writes a checkpoint and truncates the log. `None` turns automatic checkpoints
    /// by size off. Default: 256 MiB. Range: 64 KiB to 1 TiB.
    pub fn log_bytes_max(mut self, v: Option<u64>) -> Self {
        self.log_bytes_max = v;
        self
    }

    /// Also checkpoint on this interval (plus jitter) when anything was written since the
    /// last checkpoint. Default: off. Range: 10 ms to 7 days.
    pub fn checkpoint_interval(mut self, v: Option<Duration>) -> Self {
        self.checkpoint_interval = v;
        self
    }

    /// Uniform random extra added to each checkpoint interval, so that many stores on one
    /// disk do not checkpoint in lockstep. Default: 0. Range: up to `checkpoint_interval`.
    pub fn checkpoint_interval_jitter(mut self, v: Duration) -> Self {
        self.checkpoint_interval_jitter = v;
        self
    }

    /// Budget for how long bulk work holds the index's write lock at a time (readers wait
    /// for it): `write_each` applies its items, and a checkpoint re-points the index, in
    /// chunks sized from the measured cost per operation to stay within it. A single
    /// [`WriteBatch`](crate::WriteBatch) is applied in one hold (it is atomic to readers),
    /// bounded by `batch_ops_max`. Default: 1 ms. Range: 10 µs to 1 s.
    pub fn lock_hold_max(mut self, v: Duration) -> Self {
        self.lock_hold_max = v;
        self
    }

    /// Checks every value; the first out of range is named in the error.
    pub(crate) fn validate(&self) -> Result<()> {
        fn bad(name: &'static str, reason: String) -> Result<()> {
            Err(Error::InvalidOptions { name, reason })
        }
        self.wal.validate()?;
        if !(1..=KEY_BYTES_MAX).contains(&self.key_bytes_max) {
            return bad(
                "key_bytes_max",
                format!("{} is outside 1..={KEY_BYTES_MAX}", self.key_bytes_max),
            );
        }
        let room = self
            .wal
            .effective_record_bytes_max()
            .saturating_sub(self.key_bytes_max + PAYLOAD_HEADER_BYTES + OP_OVERHEAD_BYTES);
        if self.value_bytes_max > room {
            return bad(
                "value_bytes_max",
                format!(
                    "{} does not fit in one log record: at most {room} with the log's \
                     record_bytes_max = {} and key_bytes_max = {}",
                    self.value_bytes_max,
                    self.wal.effective_record_bytes_max(),
                    self.key_bytes_max
                ),
            );
        }
        if !(1..=1 << 20).contains(&self.batch_ops_max) {
            return bad(
                "batch_ops_max",
                format!("{} is outside 1..=1048576", self.batch_ops_max),
            );
        }
        if let Some(v) = self.log_bytes_max {
            if !(64 << 10..=1 << 40).contains(&v) {
                return bad(
                    "log_bytes_max",
                    format!("{v} is outside 65536..=1099511627776"),
                );
            }
        }
        if let Some(v) = self.checkpoint_interval {
            if !(Duration::from_millis(10)..=Duration::from_secs(7 * 86400)).contains(&v) {
                return bad("checkpoint_interval", format!("{v:?} is outside 10ms..=7d"));
            }
        }
        let interval = self.checkpoint_interval.unwrap_or(Duration::ZERO);
        if self.checkpoint_interval_jitter > interval {
            return bad(
                "checkpoint_interval_jitter",
                format!(
                    "{:?} is above checkpoint_interval ({interval:?})",
                    self.checkpoint_interval_jitter
                ),
            );
        }
        if !(Duration::from_micros(10)..=Duration::from_secs(1)).contains(&self.lock_hold_max) {
            return bad(
                "lock_hold_max",
                format!("{:?} is outside 10µs..=1s", self.lock_hold_max),
            );
        }
        Ok(())
    }
}
