//! Segment files: names, creation, and the in-memory description of each segment.

use crate::error::{Error, Result};
use crate::format::{SegmentHeader, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::io::{MappedBytes, OpenMode, Preallocation, Storage, StorageFile};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Extension of segment files.
pub(crate) const SEGMENT_EXT: &str = ".wal";
/// Suffix of a segment being created; recovery removes leftovers.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
/// Suffix of a freed segment file kept for reuse (`<20 digits>.wal.free`): never a segment,
/// never a temporary file, so recovery and the CLI leave it alone.
pub(crate) const FREE_SUFFIX: &str = ".free";

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

/// The name of the pool file a freed segment `seq` becomes (`<20 digits>.wal.free`).
fn free_file_name(seq: u64) -> String {
    format!("{}{FREE_SUFFIX}", segment_file_name(seq))
}

/// Whether `name` is a pool file's name.
pub(crate) fn is_free_file_name(name: &str) -> bool {
    name.strip_suffix(FREE_SUFFIX)
        .and_then(parse_segment_file_name)
        .is_some()
}

/// One segment of an open log.
#[derive(Debug)]
pub(crate) struct Segment {
    pub header: SegmentHeader,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    /// End markers are written up to this offset: the file's length, which in a writable log
    /// is at least `segment_bytes` for the segments appended to. The bytes after the records
    /// of a recycled file (or of a file longer than `segment_bytes`) are stale, so the marker
    /// must cover all 17 bytes of a header wherever the file has them.
    write_limit: u64,
    /// A read-only map, made on first read once the segment is sealed.
    map: OnceLock<Arc<MappedBytes>>,
}

impl Segment {
    pub fn new(
        header: SegmentHeader,
        path: PathBuf,
        file: Arc<dyn StorageFile>,
        write_limit: u64,
    ) -> Segment {
        Segment {
            header,
            path,
            file,
            write_limit,
            map: OnceLock::new(),
        }
    }

    pub fn seq(&self) -> u64 {
        self.header.segment_seq
    }

    /// Bytes of the *end marker* that follows data ending at `end`: a zeroed frame header
    /// (`docs/FORMAT.md`, "End of log"), cut short only where the file ends first. Every
    /// write that ends the log's records in this segment (a group, a new segment's header,
    /// a torn-tail cut) carries one, so whatever stale bytes come after it read as the end
    /// of the log.
    pub fn end_marker_len(&self, end: u64) -> usize {
        self.write_limit
            .saturating_sub(end)
            .min(FRAME_HEADER_BYTES as u64) as usize
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

/// A file ready to become the next segment without being preallocated while writers wait:
/// either prepared ahead of need under the temporary name of segment `seq` (preallocated,
/// zero-filled by default, and synced, but without a header, so not yet a segment), or a
/// recycled file from the [`Pool`], whose blocks are written already and which suits any
/// segment. Rotation turns it into a segment with a header write, a sync and a rename,
/// instead of stalling every writer while 64 MiB of zeros are written. A prepared file left
/// by a crash is a `.tmp` file, which recovery removes; a recycled one is still a pool file.
#[derive(Debug)]
pub(crate) struct Spare {
    file: Arc<dyn StorageFile>,
    /// Where the file is now: `<seq>.wal.tmp`, or its name in the pool.
    path: PathBuf,
    /// The segment a prepared file was made for (its name says so); `None` when recycled.
    seq: Option<u64>,
}

impl Spare {
    /// Whether it can become segment `seq`.
    pub fn suits(&self, seq: u64) -> bool {
        self.seq.map_or(true, |s| s == seq)
    }
}

/// Freed segment files kept for reuse (`WalOptions::recycle_segments`): a new segment made
/// from one needs no preallocation, since its blocks are written already. A file joins the
/// pool only once its pool name is durable, so that a header written into it for reuse can
/// never reach the disk under its old segment name.
#[derive(Debug)]
pub(crate) struct Pool {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    /// Files kept at most.
    keep: usize,
    /// Only files of this length are reused.
    segment_bytes: u64,
    files: Mutex<Vec<PathBuf>>,
}

impl Pool {
    /// The pool of a log whose directory holds the pool files `names` (listed by recovery,
    /// their names made durable by the caller before any is reused). Files beyond `keep`
    /// are removed (best effort: a leftover is removed at the next open).
    pub fn new(
        storage: Arc<dyn Storage>,
        dir: &Path,
        keep: usize,
        segment_bytes: u64,
        mut names: Vec<String>,
    ) -> Pool {
        names.sort_unstable();
        let mut files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        for extra in files.drain(keep.min(files.len())..) {
            let _ = storage.remove_file(&extra);
        }
        Pool {
            storage,
            dir: dir.to_path_buf(),
            keep,
            segment_bytes,
            files: Mutex::new(files),
        }
    }

    /// How many more files the pool keeps.
    pub fn room(&self) -> usize {
        self.keep.saturating_sub(self.files.lock().len())
    }

    /// Only files of `segment_bytes` are reused; others are removed, not recycled.
    pub fn fits(&self, len: u64) -> bool {
        len == self.segment_bytes
    }

    /// The name freed segment `seq` takes in the pool.
    pub fn path_for(&self, seq: u64) -> PathBuf {
        self.dir.join(free_file_name(seq))
    }

    /// Adds files renamed into the pool, once those names are durable; removes any beyond
    /// `keep` (another thread may have filled the pool meanwhile).
    pub fn add(&self, paths: Vec<PathBuf>) {
        let mut files = self.files.lock();
        for path in paths {
            if files.len() < self.keep {
                files.push(path);
            } else {
                let _ = self.storage.remove_file(&path);
            }
        }
    }

    /// A pool file ready to become a segment, if there is one. A file that cannot be opened
    /// or has another length than `segment_bytes` (left by a log opened with other options)
    /// is removed instead.
    pub fn take(&self) -> Option<Spare> {
        loop {
            let path = self.files.lock().pop()?;
            let opened = self
                .storage
                .open_file(&path, OpenMode::ReadWrite)
                .and_then(|file| Ok((file.len()?, file)));
            match opened {
                Ok((len, file)) if self.fits(len) => {
                    return Some(Spare {
                        file,
                        path,
                        seq: None,
                    })
                }
                _ => {
                    let _ = self.storage.remove_file(&path);
                }
            }
        }
    }

    /// Disposes of a spare that will not be used: a recycled file goes back to the pool (if
    /// it has room), a prepared one is deleted (best effort: recovery removes it anyway).
    pub fn discard(&self, spare: Spare) {
        if spare.seq.is_none() {
            self.add(vec![spare.path]);
        } else {
            let _ = self.storage.remove_file(&spare.path);
        }
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

/// Prepares the file of segment `seq` ahead of need (see [`Spare`]): a pool file if there
/// is one, else a new file preallocated under the segment's temporary name.
pub(crate) fn prepare_spare(
    storage: &dyn Storage,
    dir: &Path,
    seq: u64,
    segment_bytes: u64,
    preallocation: Preallocation,
    pool: &Pool,
) -> Result<Spare> {
    if let Some(spare) = pool.take() {
        return Ok(spare);
    }
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
        Ok(file) => Ok(Spare {
            file,
            path: tmp,
            seq: Some(seq),
        }),
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

/// Creates segment `header.segment_seq` durably: its file is a prepared `spare` of the same
/// sequence number or a recycled one, else a pool file, else a new file under a temporary
/// name, preallocated; its header (followed by an end marker, since a recycled file holds
/// stale bytes) is written and synced, the file renamed into place, the directory synced.
/// Only then may a record in it be acknowledged. A failure before the rename leaves nothing
/// behind that recovery would trip over (the file is removed here, or a leftover `.tmp` at
/// the next open); a failure of the directory sync after it leaves the new, empty segment
/// under its real name ([`CreateError::named`]), and the caller must not append to the
/// previous segment again.
pub(crate) fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    header: SegmentHeader,
    segment_bytes: u64,
    preallocation: Preallocation,
    spare: Option<Spare>,
    pool: &Pool,
) -> Result<Segment, CreateError> {
    let path = dir.join(segment_file_name(header.segment_seq));
    let mut from = tmp_path(dir, header.segment_seq);
    let mut named = false;
    let result = (|| {
        let spare = match spare {
            Some(spare) if spare.suits(header.segment_seq) => Some(spare),
            other => {
                if let Some(spare) = other {
                    pool.discard(spare);
                }
                pool.take()
            }
        };
        let file = match spare {
            Some(spare) => {
                from = spare.path;
                spare.file
            }
            None => create_tmp(storage, &from)?,
        };
        // The header and an end marker: the records start at the marker, and a recycled
        // file's stale bytes after it read as the end of the log (segments are at least
        // 64 KiB, so a whole frame header fits).
        let mut head = header.encode().to_vec();
        head.resize(SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES, 0);
        file.write_all_at(&head, 0)
            .map_err(|e| Error::io("write segment header", &from, e))?;
        // A no-op for a prepared or recycled file, which has its full size already.
        file.allocate(segment_bytes, preallocation)
            .map_err(|e| Error::io("preallocate segment", &from, e))?;
        file.sync_all()
            .map_err(|e| Error::io("sync new segment", &from, e))?;
        storage
            .rename(&from, &path)
            .map_err(|e| Error::io("rename new segment", &path, e))?;
        named = true;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
        Ok(file)
    })();
    match result {
        Ok(file) => Ok(Segment::new(header, path, file, segment_bytes)),
        Err(error) => {
            // Best effort: free the space at once (ENOSPC is the common cause). If the rename
            // happened but the directory sync failed, the segment is complete and empty, which
            // recovery accepts as long as nothing was appended to the previous one since.
            if !named {
                let _ = storage.remove_file(&from);
            }
            Err(CreateError { error, named })
        }
    }
}
