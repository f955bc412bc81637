//! Options of the Raft log store.

use crate::wal::{Durability, WalOptions};

/// Options for [`GroupwalLogStore::open`](super::GroupwalLogStore::open).
#[derive(Clone, Debug)]
pub struct LogStoreOptions {
    pub(crate) wal: WalOptions,
    pub(crate) cache_entries_max: usize,
    pub(crate) committed_durability: Durability,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions {
            wal: WalOptions::default(),
            cache_entries_max: 4096,
            committed_durability: Durability::Sync,
        }
    }
}

impl LogStoreOptions {
    /// Options of the WAL under the store (segment size, storage, group bounds …).
    /// Default: [`WalOptions::default`]. Every entry is one WAL record, so
    /// `record_bytes_max` bounds the size of one encoded entry.
    pub fn wal(mut self, v: WalOptions) -> Self {
        self.wal = v;
        self
    }

    /// Most recent entries kept in memory, encoded, for readers (replication to followers
    /// reads the newest entries); older ones are read back from the WAL. Entries not yet
    /// written to the OS always stay cached. Default: 4096. Range: any; 0 caches only
    /// entries not yet written.
    pub fn cache_entries_max(mut self, v: usize) -> Self {
        self.cache_entries_max = v;
        self
    }

    /// How durable the committed log id is when `save_committed` returns.
    /// Default: [`Durability::Sync`] (`fdatasync`ed). `Flush` survives a process crash;
    /// `Buffer` returns at once and the record rides the next group commit. Losing the
    /// committed id is safe in Raft (it is re-learned from the leader), it only means a
    /// restarted node re-applies less from its own log before hearing from the leader.
    pub fn committed_durability(mut self, v: Durability) -> Self {
        self.committed_durability = v;
        self
    }
}
