//! The real file system: `std::fs` plus `libc` where std has no call (`fallocate`, `flock`).

use super::{DirLock, MappedBytes, OpenMode, Preallocation, Storage, StorageFile};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

/// The operating system's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdStorage;

impl StdStorage {
    /// The real file system, shared.
    pub fn shared() -> Arc<dyn Storage> {
        Arc::new(StdStorage)
    }
}

#[derive(Debug)]
struct StdFile {
    file: File,
}

#[derive(Debug)]
struct StdDirLock {
    // Held open for the lock's lifetime: `flock` locks are released when the descriptor closes.
    _dir: File,
}

impl DirLock for StdDirLock {}

/// The size of the chunks of zeros written by [`Preallocation::ZeroFill`].
const ZERO_CHUNK_BYTES: usize = 1 << 20;

impl StdFile {
    fn zero_fill(&self, from: u64, to: u64) -> io::Result<()> {
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut offset = from;
        while offset < to {
            let n = (to - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
            self.file.write_all_at(&zeros[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }

    fn fallocate(&self, len: u64) -> io::Result<()> {
        let len = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        #[allow(unsafe_code)]
        // SAFETY: `fallocate` only reads its integer arguments; the descriptor is owned by
        // `self.file`, which outlives the call.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl StorageFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn allocate(&self, len: u64, how: Preallocation) -> io::Result<()> {
        let current = self.len()?;
        if current >= len {
            return Ok(());
        }
        match how {
            Preallocation::ZeroFill => self.zero_fill(current, len),
            Preallocation::Fallocate => match self.fallocate(len) {
                Ok(()) => Ok(()),
                // Not supported by this file system (tmpfs before 3.5, some FUSE, NFSv3):
                // reserve the space the slow way.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    self.zero_fill(current, len)
                }
                Err(e) => Err(e),
            },
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        // `File::sync_data` is `fdatasync(2)` on Linux.
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn start_writeback(&self, offset: u64, len: u64) {
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        #[allow(unsafe_code)]
        // SAFETY: `sync_file_range` only reads its integer arguments; the descriptor is owned
        // by `self.file`, which outlives the call.
        let rc = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                offset,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        // A hint: an error here (a file system without the call, an IO error) changes nothing
        // the caller relies on; the following `fdatasync` reports IO errors.
        let _ = rc;
    }

    fn map(&self) -> io::Result<MappedBytes> {
        if self.len()? == 0 {
            // mmap(2) rejects a zero-length mapping.
            return Ok(MappedBytes::empty());
        }
        #[allow(unsafe_code)]
        // SAFETY: a mapping is undefined behaviour if the file is changed or shrunk while it
        // lives. The WAL maps only sealed segments, which it never writes again; the directory
        // is locked (exclusively by a writer, shared by readers) so no other groupwal process
        // writes them either; removing a segment unlinks it, which leaves existing mappings
        // valid, and a freed segment is kept for reuse (renamed, then written as a new
        // segment) only when no reader holds it (`Wal::truncate_before`). A process that ignores the lock and edits segments by hand is outside this
        // contract, as with every mmap-based reader.
        let map = unsafe { memmap2::Mmap::map(&self.file)? };
        Ok(MappedBytes::from_mmap(map))
    }
}

impl Storage for StdStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // The directories that get created: `path` and its missing ancestors.
        let mut created = Vec::new();
        let mut p = path;
        while !p.try_exists()? {
            created.push(p);
            match p.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                _ => break,
            }
        }
        fs::create_dir_all(path)?;
        // A directory's name is durable once its parent is synced. Outermost first, so that
        // each synced parent is itself already reachable; `path`'s parent in any case.
        let mut parents: Vec<&Path> = created.iter().rev().filter_map(|d| d.parent()).collect();
        if created.is_empty() {
            parents.extend(path.parent());
        }
        for parent in parents {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            self.sync_dir(parent)?;
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::CreateNew => options.read(true).write(true).create_new(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::ReadOnly => options.read(true),
        };
        Ok(Arc::new(StdFile {
            file: options.open(path)?,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn lock_dir(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn DirLock>> {
        let dir = File::open(path)?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        #[allow(unsafe_code)]
        // SAFETY: `flock` only reads its integer arguments; the descriptor is owned by `dir`,
        // which the returned guard keeps open for as long as the lock is held.
        let rc = unsafe { libc::flock(dir.as_raw_fd(), op | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Box::new(StdDirLock { _dir: dir }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `create_dir_all` creates missing ancestors (syncing each one's parent), accepts an
    /// existing directory (syncing its parent again), and fails under a file.
    #[test]
    fn create_dir_all_creates_nested_existing_and_relative_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let nested = tmp.path().join("a/b/c");
        StdStorage.create_dir_all(&nested).expect("nested");
        assert!(nested.is_dir());
        StdStorage.create_dir_all(&nested).expect("existing");
        let file = tmp.path().join("a/file");
        fs::write(&file, b"x").expect("write");
        assert!(
            StdStorage.create_dir_all(&file.join("d")).is_err(),
            "under a file"
        );
    }
}
