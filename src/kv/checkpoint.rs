//! Checkpoint files: every live key and value, sorted by key, covering the log up to an LSN.
//!
//! # Layout (version 1)
//!
//! All integers little endian. Each offset is the previous offset plus the previous size.
//!
//! | offset | size | field          | meaning                                                |
//! |-------:|-----:|----------------|--------------------------------------------------------|
//! |      0 |    8 | `magic`        | `89 47 57 4B 56 0D 0A 1A` (`\x89GWKV\r\n\x1a`)           |
//! |      8 |    2 | `version`      | `u16`, `1`                                             |
//! |     10 |    2 | reserved       | zero                                                   |
//! |     12 |    4 | `header_bytes` | `u32`, `64`                                            |
//! |     16 |    8 | `lsn`          | `u64`, every log record up to this LSN is included     |
//! |     24 |    8 | `entries`      | `u64`, number of entries                               |
//! |     32 |    8 | `data_bytes`   | `u64`, bytes of the entries section                    |
//! |     40 |   20 | reserved       | zero                                                   |
//! |     60 |    4 | `header_crc`   | CRC-32 of bytes `0..60`                                |
//! |     64 |      | entries        | `key_len u32, value_len u32, key, value`, keys strictly increasing |
//! | 64 + data_bytes | 4 | `data_crc` | CRC-32 of the entries section                        |
//! |      +4 |   4 | `end_magic`   | `GWKE`                                                 |
//!
//! The file is written under a `.tmp` name, synced (`sync_all`), renamed into place and the
//! directory synced: a checkpoint with its final name is complete. Loading checks both
//! checksums, the length, and every entry's bounds and order before anything is used.

use crate::io::{MappedBytes, OpenMode, Storage, StorageFile};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: [u8; 8] = *b"\x89GWKV\r\n\x1a";
const END_MAGIC: [u8; 4] = *b"GWKE";
const VERSION: u16 = 1;
pub(crate) const HEADER_BYTES: usize = 64;
const OFF_VERSION: usize = MAGIC.len();
const OFF_RESERVED1: usize = OFF_VERSION + 2;
const OFF_HEADER_BYTES: usize = OFF_RESERVED1 + 2;
const OFF_LSN: usize = OFF_HEADER_BYTES + 4;
const OFF_ENTRIES: usize = OFF_LSN + 8;
const OFF_DATA_BYTES: usize = OFF_ENTRIES + 8;
const OFF_RESERVED2: usize = OFF_DATA_BYTES + 8;
const OFF_HEADER_CRC: usize = OFF_RESERVED2 + 20;
const _: () = assert!(OFF_HEADER_CRC + 4 == HEADER_BYTES);
const TRAILER_BYTES: usize = 8;
/// Bytes an entry adds to its key and value.
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = 8;
const PREFIX: &str = "checkpoint-";
const EXT: &str = ".kvc";
/// Suffix of a checkpoint being written; removed at open.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// The file name of the checkpoint covering the log up to `lsn`.
pub(crate) fn file_name(lsn: u64) -> String {
    format!("{PREFIX}{lsn:020}{EXT}")
}

/// The LSN of a checkpoint file name, if it is one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(EXT)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` is a leftover of an interrupted checkpoint.
pub(crate) fn is_tmp_name(name: &str) -> bool {
    name.strip_suffix(TMP_SUFFIX)
        .is_some_and(|n| parse_file_name(n).is_some())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Writes a checkpoint under its temporary name; [`CheckpointWriter::finish`] publishes it.
pub(crate) struct CheckpointWriter {
    file: Arc<dyn StorageFile>,
    pub tmp: PathBuf,
    pub path: PathBuf,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    crc: crc32fast::Hasher,
    entries: u64,
    lsn: u64,
}

impl CheckpointWriter {
    /// Creates `dir/checkpoint-<lsn>.kvc.tmp` (replacing a leftover one).
    pub fn create(storage: &dyn Storage, dir: &Path, lsn: u64) -> std::io::Result<Self> {
        let path = dir.join(file_name(lsn));
        let tmp = dir.join(format!("{}{TMP_SUFFIX}", file_name(lsn)));
        if storage.exists(&tmp)? {
            storage.remove_file(&tmp)?;
        }
        let file = storage.open_file(&tmp, OpenMode::CreateNew)?;
        Ok(CheckpointWriter {
            file,
            tmp,
            path,
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
            buf_offset: HEADER_BYTES as u64,
            crc: crc32fast::Hasher::new(),
            entries: 0,
            lsn,
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.buf_offset)?;
            self.buf_offset += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    fn put_bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc.update(b);
        if self.buf.len() + b.len() > WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        if b.len() >= WRITE_BUFFER_BYTES {
            self.file.write_all_at(b, self.buf_offset)?;
            self.buf_offset += b.len() as u64;
        } else {
            self.buf.extend_from_slice(b);
        }
        Ok(())
    }

    /// Appends an entry (keys must come in increasing order); returns the value's offset in
    /// the file.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<u64> {
        let mut head = [0u8; ENTRY_OVERHEAD_BYTES];
        head[..4].copy_from_slice(&(key.len() as u32).to_le_bytes());
        head[4..].copy_from_slice(&(value.len() as u32).to_le_bytes());
        self.put_bytes(&head)?;
        self.put_bytes(key)?;
        let pos = self.buf_offset + self.buf.len() as u64;
        self.put_bytes(value)?;
        self.entries += 1;
        Ok(pos)
    }

    /// Writes trailer and header and syncs the file; the caller then renames it into place
    /// ([`publish`]). Returns the file's length.
    pub fn finish(mut self) -> std::io::Result<(Arc<dyn StorageFile>, u64)> {
        self.flush()?;
        let data_bytes = self.buf_offset - HEADER_BYTES as u64;
        let crc = std::mem::take(&mut self.crc).finalize();
        let mut trailer = [0u8; TRAILER_BYTES];
        trailer[..4].copy_from_slice(&crc.to_le_bytes());
        trailer[4..].copy_from_slice(&END_MAGIC);
        self.file.write_all_at(&trailer, self.buf_offset)?;
        let mut h = [0u8; HEADER_BYTES];
        h[..OFF_VERSION].copy_from_slice(&MAGIC);
        h[OFF_VERSION..OFF_RESERVED1].copy_from_slice(&VERSION.to_le_bytes());
        h[OFF_HEADER_BYTES..OFF_LSN].copy_from_slice(&(HEADER_BYTES as u32).to_le_bytes());
        h[OFF_LSN..OFF_ENTRIES].copy_from_slice(&self.lsn.to_le_bytes());
        h[OFF_ENTRIES..OFF_DATA_BYTES].copy_from_slice(&self.entries.to_le_bytes());
        h[OFF_DATA_BYTES..OFF_RESERVED2].copy_from_slice(&data_bytes.to_le_bytes());
        let hcrc = crc32fast::hash(&h[..OFF_HEADER_CRC]);
        h[OFF_HEADER_CRC..].copy_from_slice(&hcrc.to_le_bytes());
        self.file.write_all_at(&h, 0)?;
        self.file.sync_all()?;
        Ok((self.file, self.buf_offset + TRAILER_BYTES as u64))
    }
}

/// A checkpoint file whose checksums and structure were verified.
pub(crate) struct Loaded {
    pub lsn: u64,
    pub entries: u64,
    pub map: Arc<MappedBytes>,
}

/// One entry of a verified checkpoint: the key and the value's offset and length.
pub(crate) struct Entry<'a> {
    pub key: &'a [u8],
    pub pos: u64,
    pub len: usize,
}

/// Iterates the entries of a verified checkpoint's bytes.
pub(crate) struct Entries<'a> {
    bytes: &'a [u8],
    at: usize,
    end: usize,
}

impl<'a> Entries<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        let data = u64_at(bytes, OFF_DATA_BYTES) as usize;
        Entries {
            bytes,
            at: HEADER_BYTES,
            end: HEADER_BYTES + data,
        }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        if self.at >= self.end {
            return None;
        }
        // Bounds were verified by `load`.
        let key_len = u32_at(self.bytes, self.at) as usize;
        let len = u32_at(self.bytes, self.at + 4) as usize;
        let key_start = self.at + ENTRY_OVERHEAD_BYTES;
        let pos = key_start + key_len;
        self.at = pos + len;
        Some(Entry {
            key: &self.bytes[key_start..pos],
            pos: pos as u64,
            len,
        })
    }
}

/// Opens, maps and verifies a checkpoint file. The error is the reason it is unusable.
pub(crate) fn load(storage: &dyn Storage, path: &Path) -> Result<Loaded, String> {
    let file = storage
        .open_file(path, OpenMode::ReadOnly)
        .map_err(|e| format!("cannot open: {e}"))?;
    let map = file.map().map_err(|e| format!("cannot map: {e}"))?;
    let b: &[u8] = &map;
    if b.len() < HEADER_BYTES + TRAILER_BYTES {
        return Err(format!(
            "{} bytes is shorter than header and trailer",
            b.len()
        ));
    }
    if b[..OFF_VERSION] != MAGIC {
        return Err("not a groupwal checkpoint (bad magic)".into());
    }
    let stored = u32_at(b, OFF_HEADER_CRC);
    let computed = crc32fast::hash(&b[..OFF_HEADER_CRC]);
    if stored != computed {
        return Err(format!(
            "header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let version = u16::from_le_bytes([b[OFF_VERSION], b[OFF_VERSION + 1]]);
    if version != VERSION {
        return Err(format!(
            "checkpoint version {version} is not supported (this build reads {VERSION})"
        ));
    }
    let lsn = u64_at(b, OFF_LSN);
    let entries = u64_at(b, OFF_ENTRIES);
    let data = u64_at(b, OFF_DATA_BYTES);
    if u32_at(b, OFF_HEADER_BYTES) as usize != HEADER_BYTES
        || (data as u128 + (HEADER_BYTES + TRAILER_BYTES) as u128) != b.len() as u128
    {
        return Err(format!(
            "length {} does not match the header (data_bytes {data})",
            b.len()
        ));
    }
    let end = HEADER_BYTES + data as usize;
    if b[end + 4..] != END_MAGIC {
        return Err("bad end marker".into());
    }
    let stored = u32_at(b, end);
    let computed = crc32fast::hash(&b[HEADER_BYTES..end]);
    if stored != computed {
        return Err(format!(
            "data checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    // Structure: every entry inside the data, keys strictly increasing, count right.
    let mut at = HEADER_BYTES;
    let mut count = 0u64;
    let mut prev: Option<&[u8]> = None;
    while at < end {
        if end - at < ENTRY_OVERHEAD_BYTES {
            return Err(format!("entry {count} is cut short"));
        }
        let key_len = u32_at(b, at) as usize;
        let len = u32_at(b, at + 4) as usize;
        let key_start = at + ENTRY_OVERHEAD_BYTES;
        let next = key_start as u128 + key_len as u128 + len as u128;
        if next > end as u128 {
            return Err(format!("entry {count} runs past the data"));
        }
        let key = &b[key_start..key_start + key_len];
        if key.is_empty() || prev.is_some_and(|p| p >= key) {
            return Err(format!("entry {count}: keys are not strictly increasing"));
        }
        prev = Some(key);
        at = next as usize;
        count += 1;
    }
    if count != entries {
        return Err(format!("holds {count} entries, header says {entries}"));
    }
    Ok(Loaded {
        lsn,
        entries,
        map: Arc::new(map),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert!(is_tmp_name(&format!("{}{TMP_SUFFIX}", file_name(7))));
        assert_eq!(parse_file_name("checkpoint-1.kvc"), None);
        assert!(!is_tmp_name("00000000000000000001.wal.tmp"));
    }
}
