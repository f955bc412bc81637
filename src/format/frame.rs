//! The record frame: one record as it lies in a segment.
//!
//! | offset | size | field            | meaning                                                  |
//! |-------:|-----:|------------------|----------------------------------------------------------|
//! |      0 |    4 | `payload_len`    | payload bytes, little endian                             |
//! |      4 |    4 | `crc`            | CRC-32, see below                                        |
//! |      8 |    8 | `lsn`            | log sequence number, ≥ 1                                 |
//! |     16 |    1 | `flags`          | bit 0: a correlation id follows; other bits zero         |
//! |     17 |   16 | `correlation_id` | only when flag bit 0 is set                              |
//! | 17/33  |  len | `payload`        |                                                          |
//!
//! The checksum is CRC-32 over, in this order: `payload_len`, `flags`, the correlation id
//! (when present), the payload, `lsn`, and the segment's salt (8 bytes, little endian). The
//! LSN and salt come last so that a writer can checksum its payload before it takes the log's
//! lock and finish the checksum cheaply once the lock has given it an LSN
//! ([`PartialFrame::finish_into`]).
//!
//! A header of all zeros (length, checksum and LSN zero) marks the end of the log: LSNs start
//! at 1, so no valid frame has one.

use super::read_u32;
use super::read_u64;
use crate::CorrelationId;

/// Frame header bytes without a correlation id.
pub const FRAME_HEADER_BYTES: usize = 17;
/// Bytes of a stored correlation id.
pub const CORRELATION_ID_BYTES: usize = 16;
/// The most bytes a frame adds to its payload.
pub const FRAME_OVERHEAD_MAX: usize = FRAME_HEADER_BYTES + CORRELATION_ID_BYTES;
/// The largest payload the format can describe (the length field is 32 bits).
pub const PAYLOAD_BYTES_FORMAT_MAX: usize = u32::MAX as usize - FRAME_OVERHEAD_MAX;

/// Flag bit: a 16-byte correlation id follows the header.
pub const FLAG_CORRELATION_ID: u8 = 1;
const FLAGS_KNOWN: u8 = FLAG_CORRELATION_ID;

const OFF_LEN: usize = 0;
const OFF_CRC: usize = OFF_LEN + 4;
/// Offset of the LSN field in a frame header (`docs/FORMAT.md`).
pub(crate) const OFF_LSN: usize = OFF_CRC + 4;
const OFF_FLAGS: usize = OFF_LSN + 8;
const _: () = assert!(OFF_FLAGS + 1 == FRAME_HEADER_BYTES);

/// The size on disk of a frame with a payload of `payload_len` bytes.
pub fn frame_len(payload_len: usize, has_correlation_id: bool) -> usize {
    FRAME_HEADER_BYTES
        + if has_correlation_id {
            CORRELATION_ID_BYTES
        } else {
            0
        }
        + payload_len
}

/// A frame whose checksum covers everything but the LSN and salt, which are not known yet.
///
/// Built before a writer takes the log's lock; [`PartialFrame::finish_into`] appends the
/// complete frame once the LSN is assigned.
#[derive(Clone)]
pub struct PartialFrame<'a> {
    payload: &'a [u8],
    correlation_id: Option<CorrelationId>,
    hasher: crc32fast::Hasher,
}

impl<'a> PartialFrame<'a> {
    /// Checksums the LSN-independent part of a frame. `payload` must not exceed
    /// [`PAYLOAD_BYTES_FORMAT_MAX`] (the WAL checks its own, smaller limit first).
    pub fn new(payload: &'a [u8], correlation_id: Option<CorrelationId>) -> Self {
        assert!(
            payload.len() <= PAYLOAD_BYTES_FORMAT_MAX,
            "payload above the format's limit: the caller must check record_bytes_max first"
        );
        // Length, flags and id in one update: the checksum is the same as byte by byte, and
        // each small update has a fixed cost.
        let mut head = [0u8; 4 + 1 + CORRELATION_ID_BYTES];
        head[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let head_len = match correlation_id {
            Some(id) => {
                head[4] = FLAG_CORRELATION_ID;
                head[5..].copy_from_slice(&id.to_bytes());
                head.len()
            }
            None => 5,
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head[..head_len]);
        hasher.update(payload);
        PartialFrame {
            payload,
            correlation_id,
            hasher,
        }
    }

    /// The correlation id the frame carries.
    pub fn correlation_id(&self) -> Option<CorrelationId> {
        self.correlation_id
    }

    /// The frame's size on disk.
    pub fn len(&self) -> usize {
        frame_len(self.payload.len(), self.correlation_id.is_some())
    }

    /// Always false: a frame has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the finished frame for `lsn` in a segment with `salt` to `out`.
    pub fn finish_into(&self, lsn: u64, salt: u64, out: &mut Vec<u8>) {
        debug_assert!(lsn >= 1, "LSN 0 is reserved for the end-of-log marker");
        let mut tail = [0u8; 16];
        tail[..8].copy_from_slice(&lsn.to_le_bytes());
        tail[8..].copy_from_slice(&salt.to_le_bytes());
        let mut hasher = self.hasher.clone();
        hasher.update(&tail);
        let crc = hasher.finalize();
        let mut header = [0u8; FRAME_HEADER_BYTES + CORRELATION_ID_BYTES];
        header[OFF_LEN..OFF_LEN + 4].copy_from_slice(&(self.payload.len() as u32).to_le_bytes());
        header[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        header[OFF_LSN..OFF_LSN + 8].copy_from_slice(&lsn.to_le_bytes());
        let header_len = match self.correlation_id {
            Some(id) => {
                header[OFF_FLAGS] = FLAG_CORRELATION_ID;
                header[FRAME_HEADER_BYTES..].copy_from_slice(&id.to_bytes());
                header.len()
            }
            None => FRAME_HEADER_BYTES,
        };
        out.reserve(self.len());
        out.extend_from_slice(&header[..header_len]);
        out.extend_from_slice(self.payload);
    }
}

/// Encodes a whole frame into a new vector (convenience for tests and tools).
pub fn encode_frame(
    lsn: u64,
    salt: u64,
    correlation_id: Option<CorrelationId>,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    PartialFrame::new(payload, correlation_id).finish_into(lsn, salt, &mut out);
    out
}

/// A frame read back and validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedFrame<'a> {
    /// The record's LSN.
    pub lsn: u64,
    /// The record's correlation id, if it has one.
    pub correlation_id: Option<CorrelationId>,
    /// The record's payload.
    pub payload: &'a [u8],
    /// Bytes the frame takes on disk.
    pub frame_len: usize,
}

/// Why the bytes at a position are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// An all-zero header: the end of the written log.
    EndOfLog,
    /// Fewer bytes remain than the header, or than the header says the frame needs.
    Truncated,
    /// Flag bits this version never writes.
    UnknownFlags(u8),
    /// The checksum does not match (a torn write, bit rot, or a stale frame of another segment).
    Checksum {
        /// Checksum stored in the frame.
        stored: u32,
        /// Checksum computed over the frame.
        computed: u32,
    },
    /// LSN 0 with a non-zero header: never written by groupwal.
    ZeroLsn,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::EndOfLog => write!(f, "end of log (zero header)"),
            FrameError::Truncated => write!(f, "frame is truncated"),
            FrameError::UnknownFlags(x) => write!(f, "unknown frame flags {x:#04x}"),
            FrameError::Checksum { stored, computed } => write!(
                f,
                "frame checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            FrameError::ZeroLsn => write!(f, "frame has LSN 0"),
        }
    }
}

/// Decodes and validates the frame at the start of `bytes`, written in a segment whose salt
/// is `salt`. Never panics, whatever the bytes.
pub fn decode_frame(bytes: &[u8], salt: u64) -> Result<DecodedFrame<'_>, FrameError> {
    let header = bytes.get(..FRAME_HEADER_BYTES).ok_or_else(|| {
        if bytes.iter().all(|&b| b == 0) {
            FrameError::EndOfLog
        } else {
            FrameError::Truncated
        }
    })?;
    let payload_len = read_u32(header, OFF_LEN) as usize;
    let stored = read_u32(header, OFF_CRC);
    let lsn = read_u64(header, OFF_LSN);
    let flags = header[OFF_FLAGS];
    if payload_len == 0 && stored == 0 && lsn == 0 && flags == 0 {
        return Err(FrameError::EndOfLog);
    }
    if lsn == 0 {
        return Err(FrameError::ZeroLsn);
    }
    if flags & !FLAGS_KNOWN != 0 {
        return Err(FrameError::UnknownFlags(flags));
    }
    let has_id = flags & FLAG_CORRELATION_ID != 0;
    let id_len = if has_id { CORRELATION_ID_BYTES } else { 0 };
    let total = FRAME_HEADER_BYTES
        .checked_add(id_len)
        .and_then(|n| n.checked_add(payload_len))
        .ok_or(FrameError::Truncated)?;
    let body = bytes
        .get(FRAME_HEADER_BYTES..total)
        .ok_or(FrameError::Truncated)?;
    let (id_bytes, payload) = body.split_at(id_len);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[OFF_LEN..OFF_CRC]);
    hasher.update(&[flags]);
    hasher.update(id_bytes);
    hasher.update(payload);
    hasher.update(&lsn.to_le_bytes());
    hasher.update(&salt.to_le_bytes());
    let computed = hasher.finalize();
    if computed != stored {
        return Err(FrameError::Checksum { stored, computed });
    }
    let correlation_id = if has_id {
        let mut b = [0u8; CORRELATION_ID_BYTES];
        b.copy_from_slice(id_bytes);
        Some(CorrelationId::from_bytes(b))
    } else {
        None
    };
    Ok(DecodedFrame {
        lsn,
        correlation_id,
        payload,
        frame_len: total,
    })
}

/// Reads the LSN field of a would-be frame at the start of `bytes` without validating it
/// (used by recovery to skip quickly over positions that cannot hold the frame it looks for).
pub fn peek_lsn(bytes: &[u8]) -> Option<u64> {
    (bytes.len() >= FRAME_HEADER_BYTES).then(|| read_u64(bytes, OFF_LSN))
}

/// The length a would-be frame at the start of `bytes` claims, from its header alone and
/// without validating anything; `None` if fewer than [`FRAME_HEADER_BYTES`] bytes remain.
/// Readers use it to know how many bytes to fetch before [`decode_frame`].
pub fn peek_frame_len(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..FRAME_HEADER_BYTES)?;
    let has_id = header[OFF_FLAGS] & FLAG_CORRELATION_ID != 0;
    Some(frame_len(read_u32(header, OFF_LEN) as usize, has_id))
}
