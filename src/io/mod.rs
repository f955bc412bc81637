//! The storage seam: the only layer that touches the operating system.
//!
//! Everything above this module sees files and directories through two small traits,
//! [`Storage`] and [`StorageFile`]. [`StdStorage`] implements them on the real file system
//! (with `libc` for `fdatasync`, `fallocate` and `flock`, and `memmap2` for read-only maps);
//! the simulated storage of the `sim` feature implements them in memory with power loss and
//! fault injection. Nothing above `io` calls `std::fs`.
//!
//! Paths handed to a [`Storage`] are relative to nothing in particular: the WAL always passes
//! the paths the user gave it joined with file names it chose, and a storage resolves them as
//! it likes (the std one on the real file system, the simulated one in its own name space).

mod futex;
#[cfg(feature = "sim")]
pub mod sim;
mod std_fs;

pub(crate) use futex::{futex_wait, futex_wake_all, futex_wake_one};
pub use std_fs::StdStorage;

use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

/// How [`Storage::open_file`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create a new, empty file for reading and writing; fail if it exists.
    CreateNew,
    /// Open an existing file for reading and writing.
    ReadWrite,
    /// Open an existing file for reading only.
    ReadOnly,
}

/// A file of a [`Storage`]: positioned reads and writes, length, allocation and syncs.
///
/// Implementations are shared between threads; positioned IO needs no cursor, so no call
/// takes `&mut self`.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at or past
    /// the end of the file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Sets the file's length, truncating or extending with zeros.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes sure the first `len` bytes of the file are allocated on the device, so that later
    /// writes inside them cannot fail for lack of space and, where the method writes zeros,
    /// need no metadata update when synced. See [`Preallocation`].
    fn allocate(&self, len: u64, how: Preallocation) -> io::Result<()>;

    /// Makes the file's data (and the metadata needed to read it back) durable: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;

    /// Makes the file's data and all its metadata durable: `fsync`.
    fn sync_all(&self) -> io::Result<()>;

    /// Asks the device to start writing `len` bytes at `offset` now, without waiting for
    /// them. Only a hint, so that a large batch's disk work overlaps the encoding of its
    /// next piece: nothing is durable until [`StorageFile::sync_data`], which also reports
    /// any error of this writeback (Linux keeps it for the next `fdatasync`). The real file
    /// system uses `sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE`; the default does
    /// nothing.
    fn start_writeback(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }

    /// A read-only view of the whole file as it is now. The caller promises not to write or
    /// shrink the file while the view is alive (the WAL maps only sealed segments).
    fn map(&self) -> io::Result<MappedBytes>;
}

/// How a file's space is reserved ahead of writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Preallocation {
    /// `fallocate(2)`: fast to create, but the blocks are "unwritten extents" whose first
    /// write must convert them, so an `fdatasync` after it still updates metadata. Falls back
    /// to [`Preallocation::ZeroFill`] where the file system does not support it.
    Fallocate,
    /// Write zeros over the whole range once: slower to create, but every later overwrite
    /// inside the range is a pure data write and its `fdatasync` touches no metadata.
    #[default]
    ZeroFill,
}

/// A directory lock held for as long as the value lives.
pub trait DirLock: Send + Sync + fmt::Debug {}

/// A file system: directories and the files in them.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `path` and any missing parents, durably: when it returns, the names of
    /// `path` and of every directory it created survive power loss (their parents are
    /// synced; `path`'s parent is synced even if `path` existed, since a process that died
    /// between creating it and syncing may have left a name a power cut can still take).
    /// Succeeds if it already exists.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Whether `path` exists (file or directory).
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// The names of the entries of directory `path`, in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;

    /// Opens or creates a file.
    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;

    /// Renames `from` to `to`, replacing `to` if it exists. Durable only after the parent
    /// directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file. Durable only after the parent directory is synced.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Takes a lock on directory `path`: exclusive for a writer, shared for readers. Fails
    /// at once with [`io::ErrorKind::WouldBlock`] when a conflicting lock is held, in this
    /// process or another.
    fn lock_dir(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn DirLock>>;
}

/// Bytes of a file mapped (or copied) into memory for reading.
pub struct MappedBytes(MappedInner);

enum MappedInner {
    Os(memmap2::Mmap),
    Shared(Arc<[u8]>),
    Empty,
}

impl MappedBytes {
    /// A view over bytes held in memory (used by in-memory storages).
    pub fn from_shared(bytes: Arc<[u8]>) -> Self {
        MappedBytes(MappedInner::Shared(bytes))
    }

    fn from_mmap(map: memmap2::Mmap) -> Self {
        MappedBytes(MappedInner::Os(map))
    }

    fn empty() -> Self {
        MappedBytes(MappedInner::Empty)
    }
}

impl Deref for MappedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            MappedInner::Os(map) => map,
            MappedInner::Shared(bytes) => bytes,
            MappedInner::Empty => &[],
        }
    }
}

impl fmt::Debug for MappedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedBytes")
            .field("len", &self.len())
            .finish()
    }
}

/// Reads exactly `buf.len()` bytes at `offset`, or fewer only at the end of the file; returns
/// the count read.
pub fn read_full_at(file: &dyn StorageFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
