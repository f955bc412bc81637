//! A Raft log store for [openraft](https://docs.rs/openraft/0.9) (feature `openraft`).
//!
//! [`GroupwalLogStore`] implements openraft 0.9's `RaftLogStorage` and `RaftLogReader`
//! (`storage-v2`) on one groupwal log: entries, the vote, the committed id, and markers for
//! truncation and purge are all records of one WAL, made durable by its group commit.
//! `append` never blocks a thread per call: the entries are submitted without waiting and a
//! single completion thread fires openraft's callbacks as groups become durable.
//!
//! [`kv`] holds a small in-memory key-value state machine to try it with. `docs/RAFT.md`
//! explains what is durable when and how each crash is recovered.
//!
//! ```no_run
//! use groupwal::raft::{GroupwalLogStore, LogStoreOptions, kv::{KvConfig, KvStateMachine}};
//! # async fn start(network: impl openraft::RaftNetworkFactory<KvConfig>) -> Result<(), Box<dyn std::error::Error>> {
//! let log_store = GroupwalLogStore::<KvConfig>::open("node-1/raft-log", LogStoreOptions::default())?;
//! let config = std::sync::Arc::new(openraft::Config::default().validate()?);
//! let raft = openraft::Raft::new(1, config, network, log_store, KvStateMachine::new()).await?;
//! # let _ = raft; Ok(()) }
//! ```

// openraft's traits return its `StorageError` (about 200 bytes); helpers return it too.
#![allow(clippy::result_large_err)]

mod codec;
mod completion;
pub mod kv;
mod log_store;
mod options;

pub use log_store::{GroupwalLogReader, GroupwalLogStore, OpenError, RaftLogStats};
pub use options::LogStoreOptions;
