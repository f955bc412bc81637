//! Key-value operations as log payloads, [`WriteBatch`], and the per-item outcome of
//! [`Db::write_each`](crate::Db::write_each).
//!
//! # Payload encoding (version 1)
//!
//! One log record holds one batch of operations. The log's frame already checksums the
//! payload, so the encoding has no checksum of its own. All integers are little endian.
//!
//! | offset | size | field      | meaning                                   |
//! |-------:|-----:|------------|-------------------------------------------|
//! |      0 |    1 | `version`  | `1`                                       |
//! |      1 |    4 | `op_count` | `u32`, operations that follow             |
//! |      5 |      | ops        | `op_count` operations, back to back       |
//!
//! Each operation:
//!
//! | offset | size | field       | meaning                                  |
//! |-------:|-----:|-------------|------------------------------------------|
//! |      0 |    1 | `tag`       | `1` put, `2` delete                      |
//! |      1 |    4 | `key_len`   | `u32`                                    |
//! |      5 |    4 | `value_len` | `u32`, **put only**                      |
//! |  5 / 9 |  len | `key`       |                                          |
//! |        |  len | `value`     | **put only**                             |
//!
//! A reader that meets another version, an unknown tag, a length running past the payload,
//! or bytes left over after `op_count` operations refuses the record (a *poison pill*, see
//! `docs/KV.md`); it never guesses.

use crate::error::{Error, Result};
use crate::format::CorrelationId;
use crate::wal::Durability;
use serde::Serialize;

/// Version byte of the payload encoding.
pub(crate) const PAYLOAD_VERSION: u8 = 1;
/// Bytes before the first operation.
pub(crate) const PAYLOAD_HEADER_BYTES: usize = 5;
/// Bytes a put adds to its key and value.
pub(crate) const OP_OVERHEAD_BYTES: usize = 9;
const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;

/// One operation as encoded in a payload: offsets of its key and value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpRef {
    pub key_start: usize,
    pub key_len: usize,
    /// Offset and length of the value; `None` for a delete.
    pub value: Option<(usize, usize)>,
}

/// Builds a payload operation by operation.
#[derive(Clone, Debug)]
pub(crate) struct PayloadBuilder {
    pub bytes: Vec<u8>,
    pub ops: Vec<OpRef>,
}

impl PayloadBuilder {
    pub fn new() -> Self {
        let mut bytes = Vec::with_capacity(64);
        bytes.push(PAYLOAD_VERSION);
        bytes.extend_from_slice(&0u32.to_le_bytes());
        PayloadBuilder {
            bytes,
            ops: Vec::new(),
        }
    }

    /// Payload bytes an operation adds.
    pub fn op_bytes(key: &[u8], value: Option<&[u8]>) -> usize {
        5 + key.len() + value.map_or(0, |v| 4 + v.len())
    }

    pub fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        let b = &mut self.bytes;
        b.reserve(Self::op_bytes(key, value));
        b.push(if value.is_some() { TAG_PUT } else { TAG_DELETE });
        b.extend_from_slice(&(key.len() as u32).to_le_bytes());
        if let Some(v) = value {
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        let key_start = b.len();
        b.extend_from_slice(key);
        let value = value.map(|v| {
            let start = b.len();
            b.extend_from_slice(v);
            (start, v.len())
        });
        self.ops.push(OpRef {
            key_start,
            key_len: key.len(),
            value,
        });
        let count = self.ops.len() as u32;
        self.bytes[1..5].copy_from_slice(&count.to_le_bytes());
    }

    pub fn key(&self, op: &OpRef) -> &[u8] {
        &self.bytes[op.key_start..op.key_start + op.key_len]
    }

    pub fn value(&self, op: &OpRef) -> Option<&[u8]> {
        op.value.map(|(s, l)| &self.bytes[s..s + l])
    }
}

/// Decodes a payload into its operations, or says why it is not one this build reads.
pub(crate) fn decode_payload(p: &[u8]) -> std::result::Result<Vec<OpRef>, String> {
    let version = *p.first().ok_or("empty payload")?;
    if version != PAYLOAD_VERSION {
        return Err(format!(
            "payload version {version} is not supported (this build reads {PAYLOAD_VERSION})"
        ));
    }
    if p.len() < PAYLOAD_HEADER_BYTES {
        return Err(format!(
            "payload of {} bytes is shorter than its header",
            p.len()
        ));
    }
    let read_u32 = |at: usize| -> Option<usize> {
        let b = p.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = read_u32(1).expect("length checked above");
    // Every operation takes at least 5 bytes: a count above that is garbage, and must not
    // make us allocate.
    if count > (p.len() - PAYLOAD_HEADER_BYTES) / 5 {
        return Err(format!(
            "{count} operations cannot fit in {} bytes",
            p.len()
        ));
    }
    let mut ops = Vec::with_capacity(count);
    let mut at = PAYLOAD_HEADER_BYTES;
    let truncated = |i: usize| format!("operation {i} runs past the end of the payload");
    for i in 0..count {
        let tag = *p.get(at).ok_or_else(|| truncated(i))?;
        let key_len = read_u32(at + 1).ok_or_else(|| truncated(i))?;
        let (value_len, mut pos) = match tag {
            TAG_PUT => (Some(read_u32(at + 5).ok_or_else(|| truncated(i))?), at + 9),
            TAG_DELETE => (None, at + 5),
            other => return Err(format!("operation {i} has unknown tag {other}")),
        };
        if key_len == 0 {
            return Err(format!("operation {i} has an empty key"));
        }
        let key_start = pos;
        pos = pos.checked_add(key_len).ok_or_else(|| truncated(i))?;
        let value = match value_len {
            Some(len) => {
                let start = pos;
                pos = pos.checked_add(len).ok_or_else(|| truncated(i))?;
                Some((start, len))
            }
            None => None,
        };
        if pos > p.len() {
            return Err(truncated(i));
        }
        ops.push(OpRef {
            key_start,
            key_len,
            value,
        });
        at = pos;
    }
    if at != p.len() {
        return Err(format!(
            "{} bytes left over after {count} operations",
            p.len() - at
        ));
    }
    Ok(ops)
}

/// Puts and deletes written atomically, as one log record: after a crash all of them are
/// there or none, and readers see all of them or none.
///
/// Operations apply in the order they were added; a later one on the same key wins.
///
/// ```
/// use groupwal::{Db, DbOptions, WriteBatch};
///
/// let dir = tempfile::tempdir()?;
/// let db = Db::open(dir.path(), DbOptions::default())?;
/// let mut batch = WriteBatch::new();
/// batch.put(b"alice", b"10").put(b"bob", b"20").delete(b"carol");
/// db.write(batch)?;
/// assert_eq!(db.get(b"bob")?.as_deref(), Some(&b"20"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct WriteBatch {
    pub(crate) payload: PayloadBuilder,
    pub(crate) durability: Option<Durability>,
    pub(crate) correlation_id: Option<CorrelationId>,
}

impl Default for WriteBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteBatch {
    /// An empty batch with the store's default durability.
    pub fn new() -> Self {
        WriteBatch {
            payload: PayloadBuilder::new(),
            durability: None,
            correlation_id: None,
        }
    }

    /// Adds a put of `value` under `key`. Limits are checked when the batch is written.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        self.payload.push(key.as_ref(), Some(value.as_ref()));
        self
    }

    /// Adds a delete of `key` (deleting a missing key is not an error).
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.payload.push(key.as_ref(), None);
        self
    }

    /// Sets the batch's durability (default: the store's, [`DbOptions::durability`]).
    ///
    /// [`DbOptions::durability`]: crate::DbOptions::durability
    pub fn durability(&mut self, d: Durability) -> &mut Self {
        self.durability = Some(d);
        self
    }

    /// Sets a correlation id stored with the batch's log record (see `groupwal inspect`).
    pub fn correlation_id(&mut self, id: impl Into<CorrelationId>) -> &mut Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Operations in the batch.
    pub fn len(&self) -> usize {
        self.payload.ops.len()
    }

    /// Whether the batch has no operation.
    pub fn is_empty(&self) -> bool {
        self.payload.ops.is_empty()
    }

    /// Bytes of the encoded batch (the log record's payload).
    pub fn encoded_bytes(&self) -> usize {
        self.payload.bytes.len()
    }
}

/// One item of [`Db::write_each`](crate::Db::write_each): a put or a delete with an id the
/// caller chooses, echoed in its result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteItem<Id = String> {
    /// The caller's id for the item.
    pub id: Id,
    /// The key.
    pub key: Vec<u8>,
    /// The value to put, or `None` to delete the key.
    pub value: Option<Vec<u8>>,
}

impl<Id> WriteItem<Id> {
    /// A put of `value` under `key`.
    pub fn put(id: Id, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        WriteItem {
            id,
            key: key.into(),
            value: Some(value.into()),
        }
    }

    /// A delete of `key`.
    pub fn delete(id: Id, key: impl Into<Vec<u8>>) -> Self {
        WriteItem {
            id,
            key: key.into(),
            value: None,
        }
    }
}

/// HTTP-style status of one item of a [`BatchOutcome`].
pub mod status {
    /// The item was committed (as durable as asked).
    pub const OK: u16 = 200;
    /// The item was invalid (empty key, key or value above its limit) and was not written.
    pub const BAD_REQUEST: u16 = 400;
    /// Writing failed (an IO error, or the outcome of the write is unknown).
    pub const INTERNAL_ERROR: u16 = 500;
    /// The store refused the write: it is closed, or poisoned by an earlier IO failure.
    pub const UNAVAILABLE: u16 = 503;
}

/// The result of one item of [`Db::write_each`](crate::Db::write_each).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemResult<Id = String> {
    /// The id the caller gave the item.
    pub id: Id,
    /// 200 committed, 400 invalid (rejected alone), 500 write failed, 503 store unavailable
    /// (see [`status`]).
    pub status: u16,
    /// Why the item failed; absent when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// LSN of the log record that carried the item, if it was committed (not serialized).
    #[serde(skip)]
    pub lsn: Option<u64>,
}

/// Per-item outcome of [`Db::write_each`](crate::Db::write_each), like HTTP 207
/// Multi-Status: one result per item, in input order. It serializes to the body an HTTP
/// service can return as it is:
///
/// ```json
/// {"results":[{"id":"a","status":200},{"id":"b","status":400,"error":"empty key"}]}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BatchOutcome<Id = String> {
    /// One result per item, in input order.
    pub results: Vec<ItemResult<Id>>,
}

impl<Id> BatchOutcome<Id> {
    /// Whether every item was committed.
    pub fn all_ok(&self) -> bool {
        self.results.iter().all(|r| r.status == status::OK)
    }

    /// The status for the whole response: 200 when every item succeeded (or there were
    /// none), else 207 Multi-Status.
    pub fn http_status(&self) -> u16 {
        if self.all_ok() {
            200
        } else {
            207
        }
    }
}

/// The status and message of an item whose write failed with `e`.
pub(crate) fn failure_status(e: &Error) -> (u16, String) {
    let code = match e {
        Error::InvalidInput { .. } | Error::RecordTooLarge { .. } => status::BAD_REQUEST,
        Error::Closed | Error::Poisoned { .. } | Error::ReadOnly | Error::WouldBlock => {
            status::UNAVAILABLE
        }
        _ => status::INTERNAL_ERROR,
    };
    (code, e.to_string())
}

/// Checks one operation against the limits; the error says which limit and by how much.
pub(crate) fn check_op(
    key: &[u8],
    value: Option<&[u8]>,
    key_bytes_max: usize,
    value_bytes_max: usize,
) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidInput {
            reason: "empty key; keys must have at least one byte".into(),
        });
    }
    if key.len() > key_bytes_max {
        return Err(Error::InvalidInput {
            reason: format!(
                "key of {} bytes is above key_bytes_max of {key_bytes_max}",
                key.len()
            ),
        });
    }
    if let Some(v) = value {
        if v.len() > value_bytes_max {
            return Err(Error::InvalidInput {
                reason: format!(
                    "value of {} bytes is above value_bytes_max of {value_bytes_max}",
                    v.len()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(ops in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 1..20),
             prop::option::of(prop::collection::vec(any::<u8>(), 0..40))), 0..20)) {
            let mut b = PayloadBuilder::new();
            for (k, v) in &ops {
                b.push(k, v.as_deref());
            }
            let decoded = decode_payload(&b.bytes).unwrap();
            prop_assert_eq!(decoded.len(), ops.len());
            for (d, (k, v)) in decoded.iter().zip(&ops) {
                prop_assert_eq!(b.key(d), &k[..]);
                prop_assert_eq!(b.value(d), v.as_deref());
            }
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_payload(&bytes);
        }
    }

    #[test]
    fn refuses_other_versions_and_leftovers() {
        let mut b = PayloadBuilder::new();
        b.push(b"k", Some(b"v"));
        let mut p = b.bytes.clone();
        p[0] = 2;
        assert!(decode_payload(&p).unwrap_err().contains("version 2"));
        let mut p = b.bytes.clone();
        p.push(0);
        assert!(decode_payload(&p).unwrap_err().contains("left over"));
        let p = &b.bytes[..b.bytes.len() - 1];
        assert!(decode_payload(p).unwrap_err().contains("past the end"));
    }
}
