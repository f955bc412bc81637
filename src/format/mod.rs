//! Bytes on disk: the segment header and the record frame. Pure functions, no IO.
//!
//! `docs/FORMAT.md` has the same byte tables and the reasons torn, stale and garbage frames
//! fail validation.

mod frame;
mod header;

pub(crate) use frame::OFF_LSN;
pub use frame::{
    decode_frame, encode_frame, frame_len, peek_frame_len, peek_lsn, DecodedFrame, FrameError,
    PartialFrame, CORRELATION_ID_BYTES, FLAG_CORRELATION_ID, FRAME_HEADER_BYTES,
    FRAME_OVERHEAD_MAX, PAYLOAD_BYTES_FORMAT_MAX,
};
pub use header::{
    HeaderError, SegmentHeader, CHECKSUM_CRC32, FORMAT_VERSION, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
};

/// A caller-chosen id stored with a record, to follow one request across the batch boundary.
///
/// 128 bits, so a W3C trace id or a UUID fits as it is, without hashing and without
/// collisions between services that generate ids independently. It costs 16 bytes on disk,
/// and only on records that carry one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CorrelationId(pub u128);

impl CorrelationId {
    /// The id's on-disk form (little endian).
    pub fn to_bytes(self) -> [u8; CORRELATION_ID_BYTES] {
        self.0.to_le_bytes()
    }

    /// The id from its on-disk form.
    pub fn from_bytes(bytes: [u8; CORRELATION_ID_BYTES]) -> Self {
        CorrelationId(u128::from_le_bytes(bytes))
    }
}

impl From<u128> for CorrelationId {
    fn from(v: u128) -> Self {
        CorrelationId(v)
    }
}

impl From<u64> for CorrelationId {
    fn from(v: u64) -> Self {
        CorrelationId(v as u128)
    }
}

impl std::fmt::Display for CorrelationId {
    /// 32 lowercase hex digits, the form of a W3C trace id.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for CorrelationId {
    type Err = std::num::ParseIntError;

    /// Parses up to 32 hex digits (an optional `0x` prefix is accepted).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        u128::from_str_radix(digits, 16).map(CorrelationId)
    }
}

fn read_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn read_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn read_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}
