//! Segment files: names, creation, and the in-memory description of each segment.

use crate::error::{Error, Result};
use crate::format::SegmentHeader;
use crate::io::{MappedBytes, OpenMode, Preallocation, Storage, StorageFile};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Extension of segment files.
pub(crate) const SEGMENT_EXT: &str = ".wal";
/// Suffix of a segment being created; recovery removes leftovers.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// The file name of segment `seq`: its sequence number in 20 decimal digits, then `.wal`.
pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:020}{SEGMENT_EXT}")
}

/// The sequence number of a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_EXT)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One segment of an open log.
#[derive(Debug)]
pub(crate) struct Segment {
    pub header: SegmentHeader,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    /// A read-only map, made on first read once the segment is sealed.
    map: OnceLock<Arc<MappedBytes>>,
}

impl Segment {
    pub fn new(header: SegmentHeader, path: PathBuf, file: Arc<dyn StorageFile>) -> Segment {
        Segment {
            header,
            path,
            file,
            map: OnceLock::new(),
        }
    }

    pub fn seq(&self) -> u64 {
        self.header.segment_seq
    }

    /// The segment's bytes through a map; only for sealed segments, which are never written
    /// again (see the `SAFETY` note of `StorageFile::map`).
    pub fn mapped(&self) -> Result<Arc<MappedBytes>> {
        if let Some(m) = self.map.get() {
            return Ok(m.clone());
        }
        let m = Arc::new(
            self.file
                .map()
                .map_err(|e| Error::io("map segment", &self.path, e))?,
        );
        Ok(self.map.get_or_init(|| m).clone())
    }
}

/// A file prepared ahead of need under the temporary name of segment `seq`: preallocated
/// (zero-filled by default) and synced, but without a header, so it is not yet a segment.
/// Rotation turns it into one with a header write, a sync and a rename, instead of stalling
/// every writer while 64 MiB of zeros are written. A spare left by a crash is a `.tmp` file,
/// which recovery removes.
#[derive(Debug)]
pub(crate) struct Spare {
    pub seq: u64,
    file: Arc<dyn StorageFile>,
    tmp: PathBuf,
}

impl Spare {
    /// Deletes the spare's file (best effort: recovery removes it anyway).
    pub fn discard(self, storage: &dyn Storage) {
        let _ = storage.remove_file(&self.tmp);
    }
}

fn tmp_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{}{TMP_SUFFIX}", segment_file_name(seq)))
}

/// Removes a leftover temporary file of segment `seq`, then creates it afresh.
fn create_tmp(storage: &dyn Storage, tmp: &Path) -> Result<Arc<dyn StorageFile>> {
    if storage.exists(tmp).map_err(|e| Error::io("stat", tmp, e))? {
        storage
            .remove_file(tmp)
            .map_err(|e| Error::io("remove stale temporary segment", tmp, e))?;
    }
    storage
        .open_file(tmp, OpenMode::CreateNew)
        .map_err(|e| Error::io("create segment", tmp, e))
}

/// Bytes a spare is preallocated by at a time.
const SPARE_STEP_BYTES: u64 = 1 << 20;

/// Prepares the file of segment `seq` ahead of need (see [`Spare`]).
pub(crate) fn prepare_spare(
    storage: &dyn Storage,
    dir: &Path,
    seq: u64,
    segment_bytes: u64,
    preallocation: Preallocation,
) -> Result<Spare> {
    let tmp = tmp_path(dir, seq);
    let result = create_tmp(storage, &tmp).and_then(|file| {
        // In steps, so the log's own writes interleave with the zeros instead of queueing
        // behind tens of megabytes of them.
        let mut len = 0;
        while len < segment_bytes {
            len = (len + SPARE_STEP_BYTES).min(segment_bytes);
            file.allocate(len, preallocation)
                .map_err(|e| Error::io("preallocate segment", &tmp, e))?;
        }
        file.sync_all()
            .map_err(|e| Error::io("sync prepared segment", &tmp, e))?;
        Ok(file)
    });
    match result {
        Ok(file) => Ok(Spare { seq, file, tmp }),
        Err(e) => {
            let _ = storage.remove_file(&tmp);
            Err(e)
        }
    }
}

/// A failed [`create_segment`].
#[derive(Debug)]
pub(crate) struct CreateError {
    pub error: Error,
    /// The rename into place happened (only the directory sync after it failed): a segment
    /// file with the new header may exist under its real name, now and after a crash.
    pub named: bool,
}

impl From<CreateError> for Error {
    fn from(e: CreateError) -> Error {
        e.error
    }
}

/// Creates segment `header.segment_seq` durably: written to a temporary name (or taken from
/// a prepared `spare` of the same sequence number), preallocated, header written and synced,
/// renamed into place, directory synced. Only then may a record in it be acknowledged. A
/// failure before the rename leaves nothing behind that recovery would trip over (a leftover
/// `.tmp` file is removed here or at the next open); a failure of the directory sync after it
/// leaves the new, empty segment under its real name ([`CreateError::named`]), and the caller
/// must not append to the previous segment again.
pub(crate) fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    header: SegmentHeader,
    segment_bytes: u64,
    preallocation: Preallocation,
    spare: Option<Spare>,
) -> Result<Segment, CreateError> {
    let path = dir.join(segment_file_name(header.segment_seq));
    let tmp = tmp_path(dir, header.segment_seq);
    let mut named = false;
    let result = (|| {
        let file = match spare {
            Some(spare) if spare.seq == header.segment_seq => spare.file,
            other => {
                if let Some(spare) = other {
                    spare.discard(storage);
                }
                create_tmp(storage, &tmp)?
            }
        };
        file.write_all_at(&header.encode(), 0)
            .map_err(|e| Error::io("write segment header", &tmp, e))?;
        // A no-op for a prepared spare, which has its full size already.
        file.allocate(segment_bytes, preallocation)
            .map_err(|e| Error::io("preallocate segment", &tmp, e))?;
        file.sync_all()
            .map_err(|e| Error::io("sync new segment", &tmp, e))?;
        storage
            .rename(&tmp, &path)
            .map_err(|e| Error::io("rename new segment", &path, e))?;
        named = true;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
        Ok(file)
    })();
    match result {
        Ok(file) => Ok(Segment::new(header, path, file)),
        Err(error) => {
            // Best effort: free the space at once (ENOSPC is the common cause). If the rename
            // happened but the directory sync failed, the segment is complete and empty, which
            // recovery accepts as long as nothing was appended to the previous one since.
            if !named {
                let _ = storage.remove_file(&tmp);
            }
            Err(CreateError { error, named })
        }
    }
}
