//! A simulated storage for power-loss tests: an in-memory file system with a *live* image,
//! a *durable* image, seeded crashes and injected faults.
//!
//! # The model
//!
//! Files are inodes (an id owning bytes) and directories are maps from names to inodes. Each
//! inode and each directory has two versions: the **live** one, which every call reads and
//! writes, and the **durable** one, which is what the device would hold after a power cut.
//! Calls move state from live to durable exactly where a real file system promises to:
//!
//! - `sync_data` and `sync_all` of a file make its live bytes and length durable. That is all
//!   they do: the file's *name* is not made durable by them.
//! - Creating, renaming and removing a file change only the live map of the directory (or of
//!   both directories, for a rename across directories). `sync_dir` of that directory makes
//!   all of its entry changes durable at once.
//! - [`SimStorage::crash`] turns the durable image into the new live image, as after power
//!   loss: every open [`StorageFile`] handle becomes stale (each later call on it fails with
//!   [`io::ErrorKind::Other`], "stale handle after a crash"), and every directory lock is
//!   dropped.
//!
//! So a file created and filled and `sync_data`-ed, but whose directory was never synced,
//! vanishes on a crash; a rename that was not followed by a directory sync may be undone (the
//! old name comes back, holding what that inode had made durable); a removal likewise.
//!
//! # Crash modes
//!
//! [`CrashMode::Clean`] loses everything not made durable. [`CrashMode::Torn`] keeps some of
//! it, as a disk that wrote part of its cache before the power went: for each file, a random
//! in-order prefix of its writes since its last sync (writes, `set_len` and `allocate`)
//! survives on top of its durable bytes, and the last surviving write may be cut at a
//! 512-byte boundary of the file offset; for each directory, a random in-order prefix of its
//! unsynced entry changes survives (a rename within one directory is one change). Whatever
//! survives a crash is durable afterwards. Randomness comes from the storage's seeded
//! generator ([`SimStorage::crash`]) or from a seed given for one crash
//! ([`SimStorage::crash_with_seed`]), so the same seed and the same calls give the same
//! images, byte for byte.
//!
//! # Directories and paths
//!
//! Paths are keys in the simulation's own name space, normalised lexically (`a/./b` is
//! `a/b`, `a/x/../b` is `a/b`); `a` and `/a` are different paths. The roots `""` and `"/"`
//! always exist; any other directory must be created with
//! [`Storage::create_dir_all`] before a file can be opened in it (else
//! [`io::ErrorKind::NotFound`], as on a real file system). Directory creation is durable at
//! once: the simulation models what happens to files and their names, not to directory
//! trees. Directories cannot be renamed or removed.
//!
//! # Faults
//!
//! [`SimStorage::fail_nth`], [`SimStorage::fail_after`] and [`SimStorage::short_write_nth`]
//! make chosen calls fail with `EIO` (as [`io::Error::from_raw_os_error`], so callers see
//! [`io::Error::raw_os_error`]); [`SimStorage::set_space_budget`] makes writes that would grow
//! the live files past a budget fail with `ENOSPC`, writing nothing. A failed call changes
//! nothing, except a short write, which leaves its prefix in the live image. A failed sync
//! makes nothing durable.

mod fault;
mod file;
mod state;
#[cfg(test)]
mod tests;

pub use fault::FaultKind;

use super::{DirLock, OpenMode, Storage, StorageFile};
use file::{SimDirLock, SimFile};
use parking_lot::Mutex;
use state::State;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What survives a [`SimStorage::crash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Only the durable image survives: every unsynced write and every unsynced directory
    /// change is lost.
    Clean,
    /// A random part of the unsynced state survives, in order: per file, a prefix of the
    /// writes since its last sync, the last one possibly cut at a 512-byte boundary; per
    /// directory, a prefix of the entry changes since its last sync.
    Torn,
}

/// Which image [`SimStorage::image`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    /// What the calls see now.
    Live,
    /// What a [`CrashMode::Clean`] crash would leave.
    Durable,
}

/// Counts of calls made on a [`SimStorage`] and its files since it was created.
///
/// Every call counts, whether it succeeded or failed (by an injected fault or otherwise),
/// except calls on handles made stale by a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// `write_all_at` calls.
    pub writes: u64,
    /// Bytes that reached the live image through `write_all_at` (a short write counts its
    /// prefix).
    pub bytes_written: u64,
    /// `set_len` and `allocate` calls.
    pub resizes: u64,
    /// `sync_data` calls.
    pub sync_data: u64,
    /// `sync_all` calls.
    pub sync_all: u64,
    /// `sync_dir` calls.
    pub sync_dir: u64,
    /// `open_file` calls with [`OpenMode::CreateNew`].
    pub creates: u64,
    /// `rename` calls.
    pub renames: u64,
    /// `remove_file` calls.
    pub removes: u64,
    /// Simulated crashes.
    pub crashes: u64,
    /// Calls failed by an armed fault (not counting `ENOSPC` from the space budget).
    pub faults_injected: u64,
}

/// An in-memory [`Storage`] with a live and a durable image, seeded crashes and injected
/// faults. See the [module documentation](self) for what survives which crash.
///
/// ```
/// use groupwal::io::sim::{CrashMode, Image, SimStorage};
/// use groupwal::io::{OpenMode, Storage};
/// use std::path::Path;
///
/// let sim = SimStorage::new(7);
/// let storage: std::sync::Arc<dyn Storage> = sim.clone();
/// storage.create_dir_all(Path::new("db")).unwrap();
/// let file = storage.open_file(Path::new("db/a"), OpenMode::CreateNew).unwrap();
/// file.write_all_at(b"hello", 0).unwrap();
/// file.sync_data().unwrap();
/// // The data is durable, but the name is not: the directory was never synced.
/// sim.crash(CrashMode::Clean);
/// assert!(!storage.exists(Path::new("db/a")).unwrap());
/// assert!(sim.image(Image::Live).is_empty());
/// ```
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

impl SimStorage {
    /// An empty storage (only the roots `""` and `"/"` exist) whose crashes draw from a
    /// generator seeded with `seed`.
    pub fn new(seed: u64) -> Arc<SimStorage> {
        Arc::new(SimStorage {
            state: Arc::new(Mutex::new(State::new(seed))),
        })
    }

    /// Simulates power loss, drawing randomness from the storage's own generator: the
    /// durable image (plus, for [`CrashMode::Torn`], part of the unsynced state) becomes the
    /// live image, open file handles go stale and directory locks are dropped. Armed faults
    /// and the space budget stay as they were.
    pub fn crash(&self, mode: CrashMode) {
        let mut state = self.state.lock();
        // Taken out for the call so the model can be borrowed mutably beside it.
        let mut rng = std::mem::replace(&mut state.rng, fastrand::Rng::with_seed(0));
        state.crash(mode, &mut rng);
        state.rng = rng;
    }

    /// Like [`SimStorage::crash`], but draws this crash's randomness from a generator seeded
    /// with `seed`, leaving the storage's own generator untouched. With [`SimStorage::fork`],
    /// this explores many crashes of one state.
    pub fn crash_with_seed(&self, mode: CrashMode, seed: u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        self.state.lock().crash(mode, &mut rng);
    }

    /// A new storage holding a copy of this one's whole state (live and durable images,
    /// unsynced changes, generator, faults, budget, stats), as a second machine with the
    /// same disk. Handles and directory locks of this storage do not reach the copy, which
    /// has none.
    pub fn fork(&self) -> Arc<SimStorage> {
        let copy = self.state.lock().fork();
        Arc::new(SimStorage {
            state: Arc::new(Mutex::new(copy)),
        })
    }

    /// Makes the `n`-th call of `kind` from now fail with `EIO` (once), `n` counting from 1.
    /// The failed call changes nothing. Faults add up: each armed fault counts the calls of
    /// its own kind.
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    pub fn fail_nth(&self, kind: FaultKind, n: u64) {
        assert!(n >= 1, "fail_nth counts calls from 1");
        self.state.lock().faults.arm(kind, n - 1, false, 0);
    }

    /// Lets the next `n` calls of `kind` succeed, then makes every later call of `kind` fail
    /// with `EIO`, until [`SimStorage::clear_faults`]. `n = 0` fails from the next call on.
    pub fn fail_after(&self, kind: FaultKind, n: u64) {
        self.state.lock().faults.arm(kind, n, true, 0);
    }

    /// Makes the `n`-th `write_all_at` from now (counting from 1) write only its first
    /// `keep_bytes` bytes (all of them if it is shorter) into the live image, then fail with
    /// `EIO`, as a write cut short by a device error.
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    pub fn short_write_nth(&self, n: u64, keep_bytes: usize) {
        assert!(n >= 1, "short_write_nth counts calls from 1");
        self.state
            .lock()
            .faults
            .arm(FaultKind::Write, n - 1, false, keep_bytes);
    }

    /// Disarms every fault armed with [`SimStorage::fail_nth`], [`SimStorage::fail_after`]
    /// or [`SimStorage::short_write_nth`].
    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// Sets the space budget: a write, `set_len` or `allocate` that would make the live bytes
    /// of all files ([`SimStorage::used_bytes`]) pass `budget` fails with `ENOSPC` and writes
    /// nothing. Writes inside a file's current length always fit. `None` (the default)
    /// removes the limit.
    pub fn set_space_budget(&self, budget: Option<u64>) {
        self.state.lock().space_budget = budget;
    }

    /// The live bytes of all files that have a name or an open handle: what the space
    /// budget is checked against.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().used_bytes()
    }

    /// The call counters.
    pub fn stats(&self) -> SimStats {
        self.state.lock().stats
    }

    /// Every file of `which` image, by path, with its bytes. Directories are not listed.
    pub fn image(&self, which: Image) -> BTreeMap<PathBuf, Vec<u8>> {
        self.state.lock().image(which)
    }
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("SimStorage")
            .field("files", &state.inode_count())
            .field("used_bytes", &state.used_bytes())
            .field("crashes", &state.stats.crashes)
            .finish_non_exhaustive()
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.state.lock().create_dir_all(path)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.state.lock().exists(path))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.state.lock().list_dir(path)
    }

    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let handle = self.state.lock().open_file(path, mode)?;
        Ok(Arc::new(SimFile::new(self.state.clone(), handle, path)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.state.lock().rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.state.lock().remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.state.lock().sync_dir(path)
    }

    fn lock_dir(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn DirLock>> {
        let held = self.state.lock().lock_dir(path, exclusive)?;
        Ok(Box::new(SimDirLock::new(self.state.clone(), held)))
    }
}
