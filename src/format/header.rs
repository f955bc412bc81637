//! The segment header: the first [`SEGMENT_HEADER_BYTES`] bytes of every segment file.
//!
//! | offset | size | field            | meaning                                              |
//! |-------:|-----:|------------------|------------------------------------------------------|
//! |      0 |    8 | `magic`          | [`SEGMENT_MAGIC`]                                    |
//! |      8 |    2 | `format_version` | [`FORMAT_VERSION`], little endian                    |
//! |     10 |    2 | `checksum_alg`   | [`CHECKSUM_CRC32`]                                   |
//! |     12 |    4 | `header_bytes`   | [`SEGMENT_HEADER_BYTES`]                             |
//! |     16 |    8 | `segment_seq`    | sequence number, 1 for the first segment ever        |
//! |     24 |    8 | `first_lsn`      | LSN of the segment's first record (or the next LSN)  |
//! |     32 |    8 | `salt`           | random; mixed into every frame checksum              |
//! |     40 |   20 | reserved         | zero                                                 |
//! |     60 |    4 | `header_crc`     | CRC-32 of bytes 0..60                                |

use super::{read_u16, read_u32, read_u64};

/// The first eight bytes of every segment. The high byte and the CR LF / SUB pair catch
/// files mangled by text-mode transfers, as in PNG's signature.
pub const SEGMENT_MAGIC: [u8; 8] = *b"\x89GWAL\r\n\x1a";
/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Checksum algorithm id: CRC-32 (ISO-HDLC, as computed by `crc32fast`).
pub const CHECKSUM_CRC32: u16 = 1;
/// Size of the segment header; records start at this offset.
pub const SEGMENT_HEADER_BYTES: usize = 64;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = OFF_MAGIC + 8;
const OFF_CHECKSUM_ALG: usize = OFF_VERSION + 2;
const OFF_HEADER_BYTES: usize = OFF_CHECKSUM_ALG + 2;
const OFF_SEQ: usize = OFF_HEADER_BYTES + 4;
const OFF_FIRST_LSN: usize = OFF_SEQ + 8;
const OFF_SALT: usize = OFF_FIRST_LSN + 8;
const OFF_RESERVED: usize = OFF_SALT + 8;
const OFF_CRC: usize = SEGMENT_HEADER_BYTES - 4;
const _: () = assert!(OFF_RESERVED + 20 == OFF_CRC);

/// The decoded fields of a segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence number of the segment (1, 2, …), also its file name.
    pub segment_seq: u64,
    /// LSN of the first record in the segment.
    pub first_lsn: u64,
    /// Random salt mixed into every frame's checksum, so that frames left over from another
    /// segment (a recycled file, an older log) never validate here.
    pub salt: u64,
}

/// Why a segment header failed validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`SEGMENT_HEADER_BYTES`] bytes.
    Short,
    /// The magic bytes are wrong: not a groupwal segment.
    BadMagic,
    /// The header checksum does not match.
    Checksum {
        /// Checksum stored in the header.
        stored: u32,
        /// Checksum computed over the header bytes.
        computed: u32,
    },
    /// A format version this build does not read.
    UnsupportedVersion(u16),
    /// A checksum algorithm this build does not know.
    UnsupportedChecksum(u16),
    /// `header_bytes` or a reserved byte has a value this version never writes.
    Malformed,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => write!(f, "segment header is truncated"),
            HeaderError::BadMagic => write!(f, "bad magic: not a groupwal segment"),
            HeaderError::Checksum { stored, computed } => write!(
                f,
                "segment header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            HeaderError::UnsupportedVersion(v) => {
                write!(f, "format version {v} is not supported (this build reads {FORMAT_VERSION})")
            }
            HeaderError::UnsupportedChecksum(c) => write!(f, "unknown checksum algorithm id {c}"),
            HeaderError::Malformed => write!(f, "malformed segment header"),
        }
    }
}

impl SegmentHeader {
    /// Encodes the header into its fixed-size byte form.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[OFF_MAGIC..OFF_VERSION].copy_from_slice(&SEGMENT_MAGIC);
        b[OFF_VERSION..OFF_CHECKSUM_ALG].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[OFF_CHECKSUM_ALG..OFF_HEADER_BYTES].copy_from_slice(&CHECKSUM_CRC32.to_le_bytes());
        b[OFF_HEADER_BYTES..OFF_SEQ].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        b[OFF_SEQ..OFF_FIRST_LSN].copy_from_slice(&self.segment_seq.to_le_bytes());
        b[OFF_FIRST_LSN..OFF_SALT].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[OFF_SALT..OFF_RESERVED].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc32fast::hash(&b[..OFF_CRC]);
        b[OFF_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates a header from the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let b = bytes
            .get(..SEGMENT_HEADER_BYTES)
            .ok_or(HeaderError::Short)?;
        if b[OFF_MAGIC..OFF_VERSION] != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let stored = read_u32(b, OFF_CRC);
        let computed = crc32fast::hash(&b[..OFF_CRC]);
        if stored != computed {
            return Err(HeaderError::Checksum { stored, computed });
        }
        let version = read_u16(b, OFF_VERSION);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let alg = read_u16(b, OFF_CHECKSUM_ALG);
        if alg != CHECKSUM_CRC32 {
            return Err(HeaderError::UnsupportedChecksum(alg));
        }
        let header_bytes = read_u32(b, OFF_HEADER_BYTES);
        if header_bytes as usize != SEGMENT_HEADER_BYTES
            || b[OFF_RESERVED..OFF_CRC].iter().any(|&x| x != 0)
        {
            return Err(HeaderError::Malformed);
        }
        Ok(SegmentHeader {
            segment_seq: read_u64(b, OFF_SEQ),
            first_lsn: read_u64(b, OFF_FIRST_LSN),
            salt: read_u64(b, OFF_SALT),
        })
    }
}
