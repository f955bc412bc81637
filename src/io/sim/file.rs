//! Handles given out by the simulated storage: open files and directory locks. Each keeps the
//! shared state alive and names what it holds by inode or path plus the crash epoch it was
//! made in, so a crash (which bumps the epoch) makes it stale.

use super::state::{Handle, HeldLock, State};
use crate::io::{DirLock, MappedBytes, Preallocation, StorageFile};
use parking_lot::Mutex;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file of a `SimStorage`.
pub(super) struct SimFile {
    state: Arc<Mutex<State>>,
    handle: Handle,
    /// The path it was opened by, for `Debug` only (the file may have been renamed since).
    opened_as: PathBuf,
}

impl SimFile {
    pub(super) fn new(state: Arc<Mutex<State>>, handle: Handle, opened_as: &Path) -> Self {
        SimFile {
            state,
            handle,
            opened_as: opened_as.to_path_buf(),
        }
    }
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("opened_as", &self.opened_as)
            .field("handle", &self.handle)
            .finish()
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.state.lock().read_at(&self.handle, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.state.lock().write_at(&self.handle, buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        self.state.lock().len(&self.handle)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.state.lock().resize(&self.handle, len, false)
    }

    fn allocate(&self, len: u64, _how: Preallocation) -> io::Result<()> {
        // Both ways of preallocating leave the same bytes (zeros) and the same crash
        // behaviour here: a resize that is durable only once the file is synced.
        self.state.lock().resize(&self.handle, len, true)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.state.lock().sync_file(&self.handle, false)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.state.lock().sync_file(&self.handle, true)
    }

    fn map(&self) -> io::Result<MappedBytes> {
        let snapshot = self.state.lock().snapshot(&self.handle)?;
        Ok(MappedBytes::from_shared(snapshot))
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        self.state.lock().close(&self.handle);
    }
}

/// A directory lock of a `SimStorage`, released when dropped (unless a crash dropped it
/// first).
pub(super) struct SimDirLock {
    state: Arc<Mutex<State>>,
    held: HeldLock,
}

impl SimDirLock {
    pub(super) fn new(state: Arc<Mutex<State>>, held: HeldLock) -> Self {
        SimDirLock { state, held }
    }
}

impl fmt::Debug for SimDirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDirLock")
            .field("held", &self.held)
            .finish()
    }
}

impl DirLock for SimDirLock {}

impl Drop for SimDirLock {
    fn drop(&mut self) {
        self.state.lock().unlock_dir(&self.held);
    }
}
