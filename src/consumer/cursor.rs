//! The durable cursor: `consumers/<name>.cursor`, two checksummed slots written in turn.
//!
//! The file is [`CURSOR_FILE_BYTES`] long and holds two slots of [`SLOT_BYTES`]. Each write
//! of the state goes to the slot *not* holding the current state, with a write number one
//! higher, followed by one `fdatasync`; reading takes the valid slot with the higher write
//! number. A write torn by a crash therefore damages only the slot being written, whose
//! state was never acknowledged, and the other slot still holds the last acknowledged
//! state. A file whose slots are both invalid is an error, never a reset to LSN 1 (that would
//! reprocess the whole log).
//!
//! Why slots rather than "write a temporary file, sync it, rename it over, sync the
//! directory": one `fdatasync` of bytes inside the file's length per state change, instead
//! of a file creation, an `fsync`, a rename and a directory `fsync`. The file itself is
//! created once that way (temporary name, synced, renamed, directory synced), so it is never
//! seen half-made.
//!
//! Slot layout (little endian; the same table is in `docs/CONSUMERS.md`):
//!
//! | offset | size | field               | meaning                                          |
//! |-------:|-----:|---------------------|--------------------------------------------------|
//! |      0 |    4 | `magic`             | `GWCS`                                           |
//! |      4 |    2 | `version`           | 1                                                |
//! |      6 |    2 | `flags`             | bit 0 in flight, bit 1 bisecting, bit 2 retrying |
//! |      8 |    8 | `write_seq`         | 1, 2, 3, …: the higher valid slot is current     |
//! |     16 |    8 | `next_lsn`          | next LSN to process; all below are done          |
//! |     24 |    8 | `in_flight_last`    | last LSN of the batch handed out                 |
//! |     32 |    4 | `in_flight_attempt` | how many times that batch was handed out         |
//! |     36 |    4 | `retry_attempts`    | `Retry` outcomes of the record being retried     |
//! |     40 |    8 | `retry_lsn`         | the record being retried                         |
//! |     48 |    8 | `suspect_last`      | bisecting: a poison record is in `[next, this]`  |
//! |     56 |    4 | `error_len`         | bytes of the retried record's last error         |
//! |     60 |    4 | `crc`               | CRC-32 of bytes 0..60 and of the error bytes     |
//! |     64 |    n | `error`             | UTF-8, at most [`ERROR_BYTES_MAX`] bytes          |

use crate::error::{Error, Result};
use crate::io::{read_full_at, OpenMode, Storage, StorageFile};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: [u8; 4] = *b"GWCS";
const VERSION: u16 = 1;
const FLAG_IN_FLIGHT: u16 = 1;
const FLAG_SUSPECT: u16 = 2;
const FLAG_RETRY: u16 = 4;
const FLAGS_KNOWN: u16 = FLAG_IN_FLIGHT | FLAG_SUSPECT | FLAG_RETRY;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = OFF_MAGIC + 4;
const OFF_FLAGS: usize = OFF_VERSION + 2;
const OFF_SEQ: usize = OFF_FLAGS + 2;
const OFF_NEXT: usize = OFF_SEQ + 8;
const OFF_IN_FLIGHT_LAST: usize = OFF_NEXT + 8;
const OFF_IN_FLIGHT_ATTEMPT: usize = OFF_IN_FLIGHT_LAST + 8;
const OFF_RETRY_ATTEMPTS: usize = OFF_IN_FLIGHT_ATTEMPT + 4;
const OFF_RETRY_LSN: usize = OFF_RETRY_ATTEMPTS + 4;
const OFF_SUSPECT_LAST: usize = OFF_RETRY_LSN + 8;
const OFF_ERROR_LEN: usize = OFF_SUSPECT_LAST + 8;
const OFF_CRC: usize = OFF_ERROR_LEN + 4;
const OFF_ERROR: usize = OFF_CRC + 4;

/// Bytes of one slot.
pub(crate) const SLOT_BYTES: usize = 4096;
/// Bytes of the cursor file: two slots.
pub(crate) const CURSOR_FILE_BYTES: u64 = 2 * SLOT_BYTES as u64;
/// The most bytes of an error message kept (in the cursor and in dead letters).
pub(crate) const ERROR_BYTES_MAX: usize = 2048;
const _: () = assert!(OFF_ERROR == 64);
const _: () = assert!(OFF_ERROR + ERROR_BYTES_MAX <= SLOT_BYTES);

/// A batch handed out and not committed: `[next_lsn, last]`, handed out `attempt` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InFlight {
    pub last: u64,
    pub attempt: u32,
}

/// The record at the cursor, answered `Retry` `attempts` times so far, last with `error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Retrying {
    pub lsn: u64,
    pub attempts: u32,
    pub error: String,
}

/// What the cursor file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CursorState {
    /// The next LSN to process: every record below it was processed or dead-lettered.
    pub next_lsn: u64,
    /// The batch handed out and not yet committed; it starts at `next_lsn`.
    pub in_flight: Option<InFlight>,
    /// While bisecting: a record that kills the consumer is believed to be in
    /// `[next_lsn, suspect_last]`.
    pub suspect_last: Option<u64>,
    /// The record at `next_lsn` while it is being retried.
    pub retry: Option<Retrying>,
}

impl CursorState {
    /// A cursor with nothing in flight at `next_lsn`.
    pub fn at(next_lsn: u64) -> CursorState {
        CursorState {
            next_lsn,
            in_flight: None,
            suspect_last: None,
            retry: None,
        }
    }

    /// Why this state cannot be, if it cannot: each range starts at the cursor.
    fn check(&self) -> std::result::Result<(), String> {
        if self.next_lsn == 0 {
            return Err("next LSN is 0 (LSNs start at 1)".into());
        }
        if let Some(f) = self.in_flight {
            if f.last < self.next_lsn || f.attempt == 0 {
                return Err(format!(
                    "in-flight batch ends at LSN {} (attempt {}) before the cursor {}",
                    f.last, f.attempt, self.next_lsn
                ));
            }
        }
        if let Some(s) = self.suspect_last {
            if s < self.next_lsn {
                return Err(format!(
                    "bisect range ends at LSN {s} before the cursor {}",
                    self.next_lsn
                ));
            }
        }
        if let Some(r) = &self.retry {
            if r.lsn != self.next_lsn || r.attempts == 0 {
                return Err(format!(
                    "retried record {} (attempts {}) is not at the cursor {}",
                    r.lsn, r.attempts, self.next_lsn
                ));
            }
        }
        Ok(())
    }

    /// The slot bytes of this state with write number `seq`.
    pub fn encode(&self, seq: u64) -> Vec<u8> {
        debug_assert_eq!(self.check(), Ok(()));
        let error = self
            .retry
            .as_ref()
            .map_or(&b""[..], |r| truncated(&r.error).as_bytes());
        let mut b = vec![0u8; OFF_ERROR + error.len()];
        let mut flags = 0;
        b[OFF_MAGIC..OFF_VERSION].copy_from_slice(&MAGIC);
        b[OFF_VERSION..OFF_FLAGS].copy_from_slice(&VERSION.to_le_bytes());
        b[OFF_SEQ..OFF_NEXT].copy_from_slice(&seq.to_le_bytes());
        b[OFF_NEXT..OFF_IN_FLIGHT_LAST].copy_from_slice(&self.next_lsn.to_le_bytes());
        if let Some(f) = self.in_flight {
            flags |= FLAG_IN_FLIGHT;
            b[OFF_IN_FLIGHT_LAST..OFF_IN_FLIGHT_ATTEMPT].copy_from_slice(&f.last.to_le_bytes());
            b[OFF_IN_FLIGHT_ATTEMPT..OFF_RETRY_ATTEMPTS].copy_from_slice(&f.attempt.to_le_bytes());
        }
        if let Some(r) = &self.retry {
            flags |= FLAG_RETRY;
            b[OFF_RETRY_ATTEMPTS..OFF_RETRY_LSN].copy_from_slice(&r.attempts.to_le_bytes());
            b[OFF_RETRY_LSN..OFF_SUSPECT_LAST].copy_from_slice(&r.lsn.to_le_bytes());
        }
        if let Some(s) = self.suspect_last {
            flags |= FLAG_SUSPECT;
            b[OFF_SUSPECT_LAST..OFF_ERROR_LEN].copy_from_slice(&s.to_le_bytes());
        }
        b[OFF_FLAGS..OFF_SEQ].copy_from_slice(&flags.to_le_bytes());
        b[OFF_ERROR_LEN..OFF_CRC].copy_from_slice(&(error.len() as u32).to_le_bytes());
        b[OFF_ERROR..].copy_from_slice(error);
        let crc = slot_crc(&b[..OFF_CRC], error);
        b[OFF_CRC..OFF_ERROR].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The state and write number in a slot, or why there is none. An all-zero slot (never
    /// written) is `Ok(None)`.
    pub fn decode(slot: &[u8]) -> std::result::Result<Option<(u64, CursorState)>, String> {
        if slot.len() < OFF_ERROR {
            return Err(format!(
                "slot holds {} bytes, fewer than a header",
                slot.len()
            ));
        }
        if slot[..OFF_ERROR].iter().all(|&b| b == 0) {
            return Ok(None);
        }
        if slot[OFF_MAGIC..OFF_VERSION] != MAGIC {
            return Err("bad magic".into());
        }
        let u16_at = |off: usize| u16::from_le_bytes([slot[off], slot[off + 1]]);
        let u32_at = |off: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&slot[off..off + 4]);
            u32::from_le_bytes(a)
        };
        let u64_at = |off: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&slot[off..off + 8]);
            u64::from_le_bytes(a)
        };
        let version = u16_at(OFF_VERSION);
        if version != VERSION {
            return Err(format!(
                "version {version} (this build reads version {VERSION})"
            ));
        }
        let error_len = u32_at(OFF_ERROR_LEN) as usize;
        if error_len > ERROR_BYTES_MAX || OFF_ERROR + error_len > slot.len() {
            return Err(format!("error length {error_len} is out of range"));
        }
        let error = &slot[OFF_ERROR..OFF_ERROR + error_len];
        let crc = u32_at(OFF_CRC);
        let actual = slot_crc(&slot[..OFF_CRC], error);
        if crc != actual {
            return Err(format!(
                "checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
            ));
        }
        let flags = u16_at(OFF_FLAGS);
        if flags & !FLAGS_KNOWN != 0 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        let state = CursorState {
            next_lsn: u64_at(OFF_NEXT),
            in_flight: (flags & FLAG_IN_FLIGHT != 0).then(|| InFlight {
                last: u64_at(OFF_IN_FLIGHT_LAST),
                attempt: u32_at(OFF_IN_FLIGHT_ATTEMPT),
            }),
            suspect_last: (flags & FLAG_SUSPECT != 0).then(|| u64_at(OFF_SUSPECT_LAST)),
            retry: (flags & FLAG_RETRY != 0).then(|| Retrying {
                lsn: u64_at(OFF_RETRY_LSN),
                attempts: u32_at(OFF_RETRY_ATTEMPTS),
                error: String::from_utf8_lossy(error).into_owned(),
            }),
        };
        state.check()?;
        Ok(Some((u64_at(OFF_SEQ), state)))
    }
}

fn slot_crc(header: &[u8], error: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(error);
    h.finalize()
}

/// `s` cut to at most [`ERROR_BYTES_MAX`] bytes, at a character boundary.
pub(crate) fn truncated(s: &str) -> &str {
    if s.len() <= ERROR_BYTES_MAX {
        return s;
    }
    let mut end = ERROR_BYTES_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An open cursor file.
#[derive(Debug)]
pub(crate) struct CursorFile {
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    /// Write number of the current slot.
    seq: u64,
}

impl CursorFile {
    /// Opens the cursor at `path`, creating it with `initial` (crash-safely) if it does not
    /// exist. Returns the file and the state it holds.
    pub fn open_or_create(
        storage: &dyn Storage,
        path: &Path,
        initial: impl FnOnce() -> CursorState,
    ) -> Result<(CursorFile, CursorState)> {
        let tmp = tmp_path(path);
        let io = |op, e| Error::io(op, path, e);
        if storage.exists(&tmp).map_err(|e| io("stat", e))? {
            // A creation cut short by a crash: it was never renamed into place.
            storage
                .remove_file(&tmp)
                .map_err(|e| Error::io("remove temporary cursor", &tmp, e))?;
        }
        if storage.exists(path).map_err(|e| io("stat", e))? {
            // A process that died between its rename and its directory sync left a name
            // that a power cut can still take back, with every commit made to the file: it
            // is made durable before the first commit here is acknowledged.
            sync_parent(storage, path)?;
        } else {
            let state = initial();
            Self::create(storage, path, &tmp, &state)?;
        }
        let file = storage
            .open_file(path, OpenMode::ReadWrite)
            .map_err(|e| io("open cursor", e))?;
        let corrupt = |reason: String| Error::ConsumerCorrupt {
            path: path.to_path_buf(),
            reason,
        };
        let len = file.len().map_err(|e| io("stat cursor", e))?;
        if len != CURSOR_FILE_BYTES {
            return Err(corrupt(format!(
                "the file is {len} bytes, expected {CURSOR_FILE_BYTES}"
            )));
        }
        let mut bytes = vec![0u8; CURSOR_FILE_BYTES as usize];
        let n = read_full_at(&*file, &mut bytes, 0).map_err(|e| io("read cursor", e))?;
        if n != bytes.len() {
            return Err(corrupt(format!("read {n} of {len} bytes")));
        }
        let (a, b) = bytes.split_at(SLOT_BYTES);
        let (slot_a, slot_b) = (CursorState::decode(a), CursorState::decode(b));
        let best = [&slot_a, &slot_b]
            .into_iter()
            .filter_map(|s| s.as_ref().ok().and_then(|s| s.as_ref()))
            .max_by_key(|(seq, _)| *seq)
            .cloned();
        match best {
            Some((seq, state)) => Ok((
                CursorFile {
                    path: path.to_path_buf(),
                    file,
                    seq,
                },
                state,
            )),
            None => {
                let why = |s: &std::result::Result<_, String>| match s {
                    Err(e) => e.clone(),
                    Ok(_) => "never written".to_string(),
                };
                Err(corrupt(format!(
                    "no valid slot (slot 0: {}; slot 1: {})",
                    why(&slot_a),
                    why(&slot_b)
                )))
            }
        }
    }

    /// Creates the file under a temporary name, syncs it, renames it into place and syncs
    /// the directory: it is never seen half-made.
    fn create(storage: &dyn Storage, path: &Path, tmp: &Path, state: &CursorState) -> Result<()> {
        let io = |op, e| Error::io(op, tmp, e);
        let file = storage
            .open_file(tmp, OpenMode::CreateNew)
            .map_err(|e| io("create cursor", e))?;
        file.set_len(CURSOR_FILE_BYTES)
            .and_then(|()| file.write_all_at(&state.encode(1), slot_offset(1)))
            .and_then(|()| file.sync_all())
            .map_err(|e| io("write new cursor", e))?;
        storage
            .rename(tmp, path)
            .map_err(|e| Error::io("rename cursor into place", path, e))?;
        sync_parent(storage, path)
    }

    /// Makes `state` the cursor's durable state: one write into the other slot and one
    /// `fdatasync`. On error the caller must stop using the cursor (the write may or may not
    /// have reached the disk, and a failed sync is never retried).
    pub fn store(&mut self, state: &CursorState) -> Result<()> {
        let seq = self.seq + 1;
        self.file
            .write_all_at(&state.encode(seq), slot_offset(seq))
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io("write cursor", &self.path, e))?;
        self.seq = seq;
        Ok(())
    }
}

/// Syncs the folder holding the cursor at `path`, making its name durable.
fn sync_parent(storage: &dyn Storage, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new(""));
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("sync consumers directory", dir, e))
}

/// Where write number `seq` goes: odd writes in slot 1, even ones in slot 0, so a write
/// never lands on the slot holding the current state (write `seq − 1`).
fn slot_offset(seq: u64) -> u64 {
    (seq % 2) * SLOT_BYTES as u64
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> CursorState {
        CursorState {
            next_lsn: 42,
            in_flight: Some(InFlight {
                last: 99,
                attempt: 3,
            }),
            suspect_last: Some(70),
            retry: Some(Retrying {
                lsn: 42,
                attempts: 2,
                error: "database timeout".into(),
            }),
        }
    }

    #[test]
    fn states_round_trip() {
        for state in [CursorState::at(1), full()] {
            let bytes = state.encode(7);
            assert_eq!(CursorState::decode(&bytes), Ok(Some((7, state))));
        }
        assert_eq!(CursorState::decode(&[0u8; SLOT_BYTES]), Ok(None));
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let bytes = full().encode(9);
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                !matches!(CursorState::decode(&b), Ok(Some(_))),
                "flipping bit {i} went unnoticed"
            );
        }
    }

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        let long = "é".repeat(ERROR_BYTES_MAX);
        let cut = truncated(&long);
        assert!(cut.len() <= ERROR_BYTES_MAX && cut.len() >= ERROR_BYTES_MAX - 1);
        let mut state = full();
        state.retry.as_mut().unwrap().error = long.clone();
        let (_, back) = CursorState::decode(&state.encode(1)).unwrap().unwrap();
        assert_eq!(back.retry.unwrap().error, cut);
    }
}
