//! One thread that turns WAL tickets into Raft completions, in submission order.
//!
//! `append` submits its entries with [`Wal::submit`](crate::Wal::submit), which does not wait
//! for the disk, and hands the last entry's [`Ticket`] here with openraft's callback. This
//! thread waits on the tickets one after another and fires each callback when its ticket's
//! group is durable. Groups complete in LSN order, so waiting in order costs nothing, and one
//! thread serves every append: many appends in flight share the log's `fdatasync`s and no
//! thread blocks per call. Metadata writes (vote, committed, truncate, purge) use the same
//! queue with a oneshot channel that their `async fn` awaits.

use crate::error::Error;
use crate::wal::Ticket;
use crossbeam_channel::{Receiver, Sender};
use openraft::storage::LogFlushed;
use openraft::RaftTypeConfig;
use std::io;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// Completions queued before `append` waits for the thread (backpressure). The WAL itself
/// holds at most two groups in memory, so the queue is normally far from full.
pub(crate) const COMPLETION_QUEUE_LEN: usize = 1 << 16;

/// Whom to tell when a ticket is durable.
pub(crate) enum Done<C: RaftTypeConfig> {
    /// openraft's append callback.
    Flushed(LogFlushed<C>),
    /// An `async fn` of the store awaiting its metadata record.
    Notify(oneshot::Sender<Result<(), Error>>),
}

/// A ticket to wait for (none: everything queued before it), and whom to tell.
pub(crate) struct Pending<C: RaftTypeConfig> {
    pub ticket: Option<Ticket>,
    pub done: Done<C>,
}

/// Starts the completion thread.
pub(crate) fn start<C: RaftTypeConfig>() -> io::Result<(Sender<Pending<C>>, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(COMPLETION_QUEUE_LEN);
    let handle = std::thread::Builder::new()
        .name("groupwal-raft-completion".into())
        .spawn(move || run(rx))?;
    Ok((tx, handle))
}

/// Ends when every sender is gone and the queue is drained. Never hangs on a ticket: the WAL
/// wakes every waiter of a group when it commits, fails, or is closed.
fn run<C: RaftTypeConfig>(rx: Receiver<Pending<C>>) {
    for pending in rx {
        let result = match &pending.ticket {
            Some(ticket) => ticket.wait().map(|_| ()),
            None => Ok(()),
        };
        match pending.done {
            Done::Flushed(callback) => {
                callback.log_io_completed(result.map_err(|e| io::Error::other(e.to_string())))
            }
            // The receiver is gone only if the awaiting future was dropped: nobody to tell.
            Done::Notify(tx) => drop(tx.send(result)),
        }
    }
}
