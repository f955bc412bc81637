//! The model behind `SimStorage`: inodes and directories, each with a live and a durable
//! version and a log of the changes between them; the calls on them; and what a crash makes
//! of them.
//!
//! Invariants (checked where cheap):
//! - For every inode, replaying its `unsynced` log on `durable` gives `live`; an empty log
//!   means `live == durable`. The same holds for every directory's entry maps.
//! - An inode exists while something can still reach it: a live name (`live_links`), an
//!   open handle (`open_handles`), a durable name, or an unsynced directory change that a
//!   torn crash could replay. `collect_garbage` drops the rest.

use super::fault::{FaultKind, Faults};
use super::{CrashMode, Image, SimStats};
use crate::io::OpenMode;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

type InodeId = u64;

/// The largest file the simulation holds: a larger length fails with `EFBIG` instead of
/// exhausting the test's memory. Small enough that every checked length fits a `usize`.
const FILE_BYTES_MAX: u64 = if usize::BITS >= 64 { 1 << 32 } else { 1 << 30 };

/// Torn writes are cut at multiples of this file offset: the sector size devices write
/// atomically.
const SECTOR_BYTES: u64 = 512;

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn stale() -> io::Error {
    io::Error::other("sim: stale handle after a crash")
}

/// `offset + len` as a file length, if the simulation can hold it.
fn checked_end(offset: u64, len: usize) -> io::Result<u64> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= FILE_BYTES_MAX => Ok(end),
        _ => Err(os_error(libc::EFBIG)),
    }
}

/// Writes `bytes` at `offset`, extending `data` with zeros as needed. Callers have checked
/// the end against `FILE_BYTES_MAX`, so the casts cannot truncate.
fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = offset as usize;
    let end = start + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

/// How many bytes of a write of `len` bytes at `offset` survive when it is torn: up to a
/// random sector boundary strictly inside it, or all of it if it spans no boundary.
fn sector_cut(offset: u64, len: usize, rng: &mut fastrand::Rng) -> usize {
    let end = offset + len as u64;
    let first = (offset / SECTOR_BYTES + 1) * SECTOR_BYTES;
    if first >= end {
        return len;
    }
    let boundaries = (end - 1 - first) / SECTOR_BYTES + 1;
    let cut = first + SECTOR_BYTES * rng.u64(0..boundaries);
    debug_assert!(
        offset < cut && cut < end,
        "a cut lies strictly inside the write"
    );
    (cut - offset) as usize
}

/// A change to a file's bytes or length, kept until the file is synced.
#[derive(Clone, Debug)]
enum FileEvent {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl FileEvent {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            FileEvent::Write { offset, bytes } => write_into(data, *offset, bytes),
            // Checked against FILE_BYTES_MAX when recorded.
            FileEvent::SetLen(len) => data.resize(*len as usize, 0),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Changes since the last sync, oldest first.
    unsynced: Vec<FileEvent>,
    /// Payload bytes held by `unsynced`.
    unsynced_bytes: usize,
    /// Live directory entries naming this inode.
    live_links: usize,
    /// Open handles (of the current epoch) on this inode.
    open_handles: usize,
}

impl Inode {
    fn record(&mut self, event: FileEvent) {
        event.apply(&mut self.live);
        if let FileEvent::Write { bytes, .. } = &event {
            self.unsynced_bytes += bytes.len();
        }
        self.unsynced.push(event);
    }

    fn sync(&mut self) {
        // Replaying the log copies only what changed; when the log holds more than the file,
        // copying the file is cheaper. Both give `live` (first invariant).
        if self.unsynced_bytes < self.live.len() {
            for event in &self.unsynced {
                event.apply(&mut self.durable);
            }
        } else {
            self.durable.clone_from(&self.live);
        }
        self.unsynced.clear();
        self.unsynced_bytes = 0;
        debug_assert_eq!(
            self.durable.len(),
            self.live.len(),
            "sync reached the live length"
        );
    }

    /// The bytes a torn crash leaves: the durable bytes plus a random prefix of the unsynced
    /// events, the last of them possibly cut at a sector boundary.
    fn torn(&self, rng: &mut fastrand::Rng) -> Vec<u8> {
        let mut data = self.durable.clone();
        let keep = rng.usize(0..=self.unsynced.len());
        for (index, event) in self.unsynced[..keep].iter().enumerate() {
            match event {
                FileEvent::Write { offset, bytes } if index + 1 == keep && rng.bool() => {
                    let cut = sector_cut(*offset, bytes.len(), rng);
                    write_into(&mut data, *offset, &bytes[..cut]);
                }
                _ => event.apply(&mut data),
            }
        }
        data
    }
}

/// Entry changes made by one call, applied together: `None` removes the name.
type EntryChange = Vec<(String, Option<InodeId>)>;

fn apply_change(entries: &mut BTreeMap<String, InodeId>, change: &EntryChange) {
    for (name, target) in change {
        match target {
            Some(id) => entries.insert(name.clone(), *id),
            None => entries.remove(name),
        };
    }
}

#[derive(Clone, Debug, Default)]
struct Dir {
    live: BTreeMap<String, InodeId>,
    durable: BTreeMap<String, InodeId>,
    /// Entry changes since the last sync, oldest first.
    unsynced: Vec<EntryChange>,
    /// Subdirectories, durable as soon as created.
    subdirs: BTreeSet<String>,
}

/// What a file handle holds: an inode, as of an epoch.
#[derive(Clone, Debug)]
pub(super) struct Handle {
    inode: InodeId,
    epoch: u64,
    writable: bool,
}

/// What a directory lock guard holds.
#[derive(Clone, Debug)]
pub(super) struct HeldLock {
    dir: PathBuf,
    exclusive: bool,
    epoch: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct LockCount {
    shared: usize,
    exclusive: bool,
}

/// The paths the simulation uses as keys: lexically normalised.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(prefix) => out.push(prefix.as_os_str()),
            Component::RootDir => out.push(Component::RootDir.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
        }
    }
    out
}

/// A file path's directory and name.
fn split_file(path: &Path) -> io::Result<(PathBuf, String)> {
    let path = normalize(path);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "sim: the path names no file")
    })?;
    let name = name
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "sim: names must be UTF-8"))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((dir, name.to_owned()))
}

pub(super) struct State {
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: BTreeMap<InodeId, Inode>,
    next_inode: InodeId,
    /// Bumped by each crash; handles and locks of an older epoch are stale.
    epoch: u64,
    locks: BTreeMap<PathBuf, LockCount>,
    pub(super) rng: fastrand::Rng,
    pub(super) faults: Faults,
    pub(super) space_budget: Option<u64>,
    pub(super) stats: SimStats,
}

impl State {
    pub(super) fn new(seed: u64) -> Self {
        let mut dirs = BTreeMap::new();
        dirs.insert(PathBuf::new(), Dir::default());
        dirs.insert(normalize(Path::new("/")), Dir::default());
        State {
            dirs,
            inodes: BTreeMap::new(),
            next_inode: 0,
            epoch: 0,
            locks: BTreeMap::new(),
            rng: fastrand::Rng::with_seed(seed),
            faults: Faults::default(),
            space_budget: None,
            stats: SimStats::default(),
        }
    }

    pub(super) fn fork(&self) -> State {
        let mut copy = State {
            dirs: self.dirs.clone(),
            inodes: self.inodes.clone(),
            next_inode: self.next_inode,
            epoch: self.epoch,
            locks: BTreeMap::new(),
            rng: self.rng.clone(),
            faults: self.faults.clone(),
            space_budget: self.space_budget,
            stats: self.stats,
        };
        for inode in copy.inodes.values_mut() {
            inode.open_handles = 0;
        }
        copy.collect_garbage();
        copy
    }

    pub(super) fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    // ----- faults and space -----

    /// Counts a call against the armed faults; see `Faults::check`.
    fn fault(&mut self, call: FaultKind) -> Option<usize> {
        let fired = self.faults.check(call);
        if fired.is_some() {
            self.stats.faults_injected += 1;
        }
        fired
    }

    fn fail_if_faulted(&mut self, call: FaultKind) -> io::Result<()> {
        match self.fault(call) {
            Some(_) => Err(os_error(libc::EIO)),
            None => Ok(()),
        }
    }

    pub(super) fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .filter(|inode| inode.live_links > 0 || inode.open_handles > 0)
            .map(|inode| inode.live.len() as u64)
            .sum()
    }

    /// Fails with `ENOSPC` if growing inode `id` to `new_len` would pass the budget.
    fn check_space(&self, id: InodeId, new_len: u64) -> io::Result<()> {
        let Some(budget) = self.space_budget else {
            return Ok(());
        };
        let current = self.inodes[&id].live.len() as u64;
        if new_len <= current || self.used_bytes() + (new_len - current) <= budget {
            Ok(())
        } else {
            Err(os_error(libc::ENOSPC))
        }
    }

    // ----- the name space -----

    /// The error for a directory that is not there: `ENOTDIR` if a file has its name.
    fn missing_dir(&self, path: &Path) -> io::Error {
        if self.exists(path) {
            os_error(libc::ENOTDIR)
        } else {
            os_error(libc::ENOENT)
        }
    }

    /// The inode named `name` in directory `dir`, live.
    fn lookup(&self, dir: &Path, name: &str) -> io::Result<InodeId> {
        let Some(entries) = self.dirs.get(dir) else {
            return Err(self.missing_dir(dir));
        };
        if entries.subdirs.contains(name) {
            return Err(os_error(libc::EISDIR));
        }
        entries
            .live
            .get(name)
            .copied()
            .ok_or_else(|| os_error(libc::ENOENT))
    }

    /// Applies `change` to the live entries of `dir` and logs it until the next `sync_dir`.
    fn change_entries(&mut self, dir: &Path, change: EntryChange) {
        let entries = self
            .dirs
            .get_mut(dir)
            .expect("callers check that the directory exists");
        for (name, target) in &change {
            let old = match target {
                Some(id) => entries.live.insert(name.clone(), *id),
                None => entries.live.remove(name),
            };
            if let Some(id) = target {
                self.inodes
                    .get_mut(id)
                    .expect("a name is given only to an existing inode")
                    .live_links += 1;
            }
            if let Some(old) = old {
                self.inodes
                    .get_mut(&old)
                    .expect("a live name keeps its inode")
                    .live_links -= 1;
            }
        }
        entries.unsynced.push(change);
    }

    /// Drops the inodes nothing can reach any more (second invariant).
    fn collect_garbage(&mut self) {
        let mut reachable = BTreeSet::new();
        for dir in self.dirs.values() {
            reachable.extend(dir.durable.values().copied());
            for change in &dir.unsynced {
                reachable.extend(change.iter().filter_map(|(_, target)| *target));
            }
        }
        self.inodes.retain(|id, inode| {
            inode.live_links > 0 || inode.open_handles > 0 || reachable.contains(id)
        });
    }

    pub(super) fn create_dir_all(&mut self, path: &Path) -> io::Result<()> {
        let path = normalize(path);
        let mut current = PathBuf::new();
        for component in path.components() {
            let parent = current.clone();
            current.push(component);
            if self.dirs.contains_key(&current) {
                continue;
            }
            let name = component
                .as_os_str()
                .to_str()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "sim: names must be UTF-8")
                })?
                .to_owned();
            let dir = self
                .dirs
                .get_mut(&parent)
                .expect("the parent was found or created by the previous step");
            if dir.live.contains_key(&name) {
                return Err(os_error(libc::EEXIST));
            }
            // A removal or rename of a file of this name that is not durable yet could come
            // back on a crash and clash with the directory: make it durable with the mkdir,
            // as a journaling file system commits both in one transaction.
            dir.durable.remove(&name);
            for change in &mut dir.unsynced {
                change.retain(|(entry, _)| *entry != name);
            }
            dir.unsynced.retain(|change| !change.is_empty());
            dir.subdirs.insert(name);
            self.dirs.insert(current.clone(), Dir::default());
        }
        Ok(())
    }

    pub(super) fn exists(&self, path: &Path) -> bool {
        let path = normalize(path);
        if self.dirs.contains_key(&path) {
            return true;
        }
        match split_file(&path) {
            Ok((dir, name)) => self
                .dirs
                .get(&dir)
                .is_some_and(|dir| dir.live.contains_key(&name)),
            Err(_) => false,
        }
    }

    pub(super) fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = normalize(path);
        let Some(dir) = self.dirs.get(&path) else {
            return Err(self.missing_dir(&path));
        };
        Ok(dir.live.keys().chain(&dir.subdirs).cloned().collect())
    }

    pub(super) fn open_file(&mut self, path: &Path, mode: OpenMode) -> io::Result<Handle> {
        if mode == OpenMode::CreateNew {
            self.stats.creates += 1;
            self.fail_if_faulted(FaultKind::Create)?;
        }
        let (dir_path, name) = split_file(path)?;
        let Some(dir) = self.dirs.get(&dir_path) else {
            return Err(self.missing_dir(&dir_path));
        };
        if dir.subdirs.contains(&name) {
            return Err(os_error(match mode {
                OpenMode::CreateNew => libc::EEXIST,
                OpenMode::ReadWrite | OpenMode::ReadOnly => libc::EISDIR,
            }));
        }
        let id = match (mode, dir.live.get(&name).copied()) {
            (OpenMode::CreateNew, Some(_)) => return Err(os_error(libc::EEXIST)),
            (OpenMode::CreateNew, None) => {
                let id = self.next_inode;
                self.next_inode += 1;
                self.inodes.insert(id, Inode::default());
                self.change_entries(&dir_path, vec![(name, Some(id))]);
                id
            }
            (OpenMode::ReadWrite | OpenMode::ReadOnly, Some(id)) => id,
            (OpenMode::ReadWrite | OpenMode::ReadOnly, None) => return Err(os_error(libc::ENOENT)),
        };
        self.inodes
            .get_mut(&id)
            .expect("a live name keeps its inode")
            .open_handles += 1;
        Ok(Handle {
            inode: id,
            epoch: self.epoch,
            writable: mode != OpenMode::ReadOnly,
        })
    }

    pub(super) fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.stats.renames += 1;
        self.fail_if_faulted(FaultKind::Rename)?;
        let (from_dir, from_name) = split_file(from)?;
        let (to_dir, to_name) = split_file(to)?;
        let id = self.lookup(&from_dir, &from_name)?;
        let Some(target_dir) = self.dirs.get(&to_dir) else {
            return Err(self.missing_dir(&to_dir));
        };
        if target_dir.subdirs.contains(&to_name) {
            return Err(os_error(libc::EISDIR));
        }
        if from_dir == to_dir && from_name == to_name {
            return Ok(());
        }
        if from_dir == to_dir {
            // One change, so a torn crash keeps or loses the rename whole.
            self.change_entries(&from_dir, vec![(to_name, Some(id)), (from_name, None)]);
        } else {
            // Two directories, each durable only once synced itself.
            self.change_entries(&from_dir, vec![(from_name, None)]);
            self.change_entries(&to_dir, vec![(to_name, Some(id))]);
        }
        Ok(())
    }

    pub(super) fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        self.stats.removes += 1;
        self.fail_if_faulted(FaultKind::Remove)?;
        let (dir, name) = split_file(path)?;
        self.lookup(&dir, &name)?;
        self.change_entries(&dir, vec![(name, None)]);
        Ok(())
    }

    pub(super) fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
        self.stats.sync_dir += 1;
        self.fail_if_faulted(FaultKind::SyncDir)?;
        let path = normalize(path);
        let missing = self.missing_dir(&path);
        let dir = self.dirs.get_mut(&path).ok_or(missing)?;
        dir.durable.clone_from(&dir.live);
        dir.unsynced.clear();
        self.collect_garbage();
        Ok(())
    }

    pub(super) fn lock_dir(&mut self, path: &Path, exclusive: bool) -> io::Result<HeldLock> {
        let dir = normalize(path);
        if !self.dirs.contains_key(&dir) {
            return Err(self.missing_dir(&dir));
        }
        let count = self.locks.entry(dir.clone()).or_default();
        let conflict = count.exclusive || (exclusive && count.shared > 0);
        if conflict {
            return Err(os_error(libc::EWOULDBLOCK));
        }
        if exclusive {
            count.exclusive = true;
        } else {
            count.shared += 1;
        }
        Ok(HeldLock {
            dir,
            exclusive,
            epoch: self.epoch,
        })
    }

    pub(super) fn unlock_dir(&mut self, held: &HeldLock) {
        if held.epoch != self.epoch {
            // A crash dropped every lock already.
            return;
        }
        let count = self
            .locks
            .get_mut(&held.dir)
            .expect("a held lock is counted");
        if held.exclusive {
            count.exclusive = false;
        } else {
            count.shared -= 1;
        }
        if !count.exclusive && count.shared == 0 {
            self.locks.remove(&held.dir);
        }
    }

    // ----- files -----

    fn inode(&self, handle: &Handle) -> io::Result<&Inode> {
        if handle.epoch != self.epoch {
            return Err(stale());
        }
        Ok(self
            .inodes
            .get(&handle.inode)
            .expect("an open handle keeps its inode"))
    }

    fn inode_mut(&mut self, handle: &Handle) -> io::Result<&mut Inode> {
        if handle.epoch != self.epoch {
            return Err(stale());
        }
        Ok(self
            .inodes
            .get_mut(&handle.inode)
            .expect("an open handle keeps its inode"))
    }

    /// Checks that `handle` may write: not stale, not read-only.
    fn check_writable(&self, handle: &Handle) -> io::Result<()> {
        self.inode(handle)?;
        if handle.writable {
            Ok(())
        } else {
            Err(os_error(libc::EBADF))
        }
    }

    pub(super) fn read_at(
        &self,
        handle: &Handle,
        buf: &mut [u8],
        offset: u64,
    ) -> io::Result<usize> {
        let data = &self.inode(handle)?.live;
        let start = match usize::try_from(offset) {
            Ok(start) if start < data.len() => start,
            _ => return Ok(0),
        };
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    pub(super) fn write_at(&mut self, handle: &Handle, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable(handle)?;
        self.stats.writes += 1;
        let fault = self.fault(FaultKind::Write);
        let keep = fault.map_or(buf.len(), |keep| keep.min(buf.len()));
        if keep > 0 {
            let end = checked_end(offset, keep)?;
            self.check_space(handle.inode, end)?;
            self.inode_mut(handle)?.record(FileEvent::Write {
                offset,
                bytes: buf[..keep].to_vec(),
            });
            self.stats.bytes_written += keep as u64;
        }
        match fault {
            Some(_) => Err(os_error(libc::EIO)),
            None => Ok(()),
        }
    }

    pub(super) fn len(&self, handle: &Handle) -> io::Result<u64> {
        Ok(self.inode(handle)?.live.len() as u64)
    }

    /// `set_len` (`grow_only == false`) or `allocate` (`grow_only == true`).
    pub(super) fn resize(&mut self, handle: &Handle, len: u64, grow_only: bool) -> io::Result<()> {
        self.check_writable(handle)?;
        self.stats.resizes += 1;
        self.fail_if_faulted(FaultKind::Resize)?;
        if len > FILE_BYTES_MAX {
            return Err(os_error(libc::EFBIG));
        }
        let current = self.len(handle)?;
        if len == current || (grow_only && len < current) {
            return Ok(());
        }
        self.check_space(handle.inode, len)?;
        self.inode_mut(handle)?.record(FileEvent::SetLen(len));
        Ok(())
    }

    /// `sync_all` (`all == true`) or `sync_data`: the same here, both make the bytes and the
    /// length durable (not the name).
    pub(super) fn sync_file(&mut self, handle: &Handle, all: bool) -> io::Result<()> {
        self.inode(handle)?;
        if all {
            self.stats.sync_all += 1;
            self.fail_if_faulted(FaultKind::SyncAll)?;
        } else {
            self.stats.sync_data += 1;
            self.fail_if_faulted(FaultKind::SyncData)?;
        }
        self.inode_mut(handle)?.sync();
        Ok(())
    }

    pub(super) fn snapshot(&self, handle: &Handle) -> io::Result<Arc<[u8]>> {
        Ok(Arc::from(self.inode(handle)?.live.as_slice()))
    }

    pub(super) fn close(&mut self, handle: &Handle) {
        if handle.epoch != self.epoch {
            // A crash closed every handle already.
            return;
        }
        let inode = self
            .inodes
            .get_mut(&handle.inode)
            .expect("an open handle keeps its inode");
        inode.open_handles -= 1;
        if inode.open_handles == 0 && inode.live_links == 0 {
            self.collect_garbage();
        }
    }

    // ----- crashes and images -----

    pub(super) fn crash(&mut self, mode: CrashMode, rng: &mut fastrand::Rng) {
        self.epoch += 1;
        self.locks.clear();
        self.stats.crashes += 1;

        for dir in self.dirs.values_mut() {
            let keep = match mode {
                CrashMode::Clean => 0,
                CrashMode::Torn if dir.unsynced.is_empty() => 0,
                CrashMode::Torn => rng.usize(0..=dir.unsynced.len()),
            };
            for change in &dir.unsynced[..keep] {
                apply_change(&mut dir.durable, change);
            }
            dir.unsynced.clear();
            dir.live.clone_from(&dir.durable);
        }

        for inode in self.inodes.values_mut() {
            inode.live_links = 0;
            inode.open_handles = 0;
        }
        for dir in self.dirs.values() {
            for id in dir.live.values() {
                self.inodes
                    .get_mut(id)
                    .expect("a durable name or unsynced change keeps its inode")
                    .live_links += 1;
            }
        }
        self.collect_garbage();

        for inode in self.inodes.values_mut() {
            if inode.unsynced.is_empty() {
                continue;
            }
            match mode {
                CrashMode::Clean => inode.live.clone_from(&inode.durable),
                CrashMode::Torn => {
                    let survived = inode.torn(rng);
                    inode.live.clone_from(&survived);
                    inode.durable = survived;
                }
            }
            inode.unsynced.clear();
            inode.unsynced_bytes = 0;
        }
    }

    pub(super) fn image(&self, which: Image) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        for (dir_path, dir) in &self.dirs {
            let entries = match which {
                Image::Live => &dir.live,
                Image::Durable => &dir.durable,
            };
            for (name, id) in entries {
                let inode = &self.inodes[id];
                let bytes = match which {
                    Image::Live => &inode.live,
                    Image::Durable => &inode.durable,
                };
                files.insert(dir_path.join(name), bytes.clone());
            }
        }
        files
    }
}
