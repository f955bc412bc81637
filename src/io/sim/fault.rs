//! Injected faults: which calls fail, counted deterministically from when a fault is armed.

/// A kind of call that [`SimStorage::fail_nth`](super::SimStorage::fail_nth) and
/// [`SimStorage::fail_after`](super::SimStorage::fail_after) can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `StorageFile::write_all_at`.
    Write,
    /// `StorageFile::set_len` and `StorageFile::allocate`.
    Resize,
    /// `StorageFile::sync_data`.
    SyncData,
    /// `StorageFile::sync_all`.
    SyncAll,
    /// `Storage::sync_dir`.
    SyncDir,
    /// Any sync: `sync_data`, `sync_all` or `sync_dir`.
    Sync,
    /// `Storage::open_file` with `OpenMode::CreateNew`.
    Create,
    /// `Storage::rename`.
    Rename,
    /// `Storage::remove_file`.
    Remove,
}

impl FaultKind {
    /// Whether a fault of this kind counts (and can fail) a call of kind `call`, which is
    /// never [`FaultKind::Sync`].
    fn covers(self, call: FaultKind) -> bool {
        debug_assert_ne!(call, FaultKind::Sync, "a call has one precise kind");
        self == call
            || (self == FaultKind::Sync
                && matches!(
                    call,
                    FaultKind::SyncData | FaultKind::SyncAll | FaultKind::SyncDir
                ))
    }
}

#[derive(Clone, Debug)]
struct ArmedFault {
    kind: FaultKind,
    /// Calls still to let through before firing.
    skip: u64,
    /// Keep firing after the first time (`fail_after`) rather than disarm (`fail_nth`).
    sticky: bool,
    /// Bytes a failing write still lands (a short write); 0 for a plain `EIO`.
    keep_bytes: usize,
}

/// The armed faults, in the order they were armed.
#[derive(Clone, Debug, Default)]
pub(super) struct Faults {
    armed: Vec<ArmedFault>,
}

impl Faults {
    pub(super) fn arm(&mut self, kind: FaultKind, skip: u64, sticky: bool, keep_bytes: usize) {
        self.armed.push(ArmedFault {
            kind,
            skip,
            sticky,
            keep_bytes,
        });
    }

    pub(super) fn clear(&mut self) {
        self.armed.clear();
    }

    /// Counts one call of kind `call` against every armed fault that covers it. Returns
    /// `Some(keep_bytes)` if the call must fail (after landing `keep_bytes` bytes, for a
    /// write); when several faults fire at once, the one that keeps least wins.
    pub(super) fn check(&mut self, call: FaultKind) -> Option<usize> {
        let mut fired: Option<usize> = None;
        self.armed.retain_mut(|fault| {
            if !fault.kind.covers(call) {
                return true;
            }
            if fault.skip > 0 {
                fault.skip -= 1;
                return true;
            }
            fired = Some(fired.map_or(fault.keep_bytes, |keep| keep.min(fault.keep_bytes)));
            fault.sticky
        });
        fired
    }
}
