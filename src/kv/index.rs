//! The in-memory index: every live key and where its value lies, in 48 bytes per entry plus
//! the key bytes of keys longer than 30 bytes.
//!
//! - [`Key`] (32 bytes) keeps keys of up to 30 bytes inline, so a lookup compares bytes that
//!   are in the tree's node instead of chasing one pointer per comparison, and a short key
//!   costs no allocation.
//! - [`ValueLoc`] (16 bytes) says where the value is: in a log segment (sequence number,
//!   file offset, length), in one of the two checkpoint slots (file offset, length), inline
//!   (values of at most [`INLINE_VALUE_BYTES_MAX`] bytes live in the 12 bytes that would
//!   otherwise hold offset and length: no read, no extra memory), or *pending*: a `Buffer`
//!   write whose log record is not written to the file yet, whose value is held in
//!   [`Index::pending`] until it is.

use crate::io::MappedBytes;
use crate::kv::batch::OpRef;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Keys up to this many bytes are stored inside the index entry.
pub(crate) const KEY_INLINE_BYTES_MAX: usize = 30;

/// Values up to this many bytes are stored inside the index entry, at no extra memory.
pub const INLINE_VALUE_BYTES_MAX: usize = 12;

/// A key of the index: short ones inline, long ones on the heap.
#[derive(Clone)]
pub(crate) enum Key {
    // The size difference is the point: short keys inline, no allocation.
    Inline {
        len: u8,
        bytes: [u8; KEY_INLINE_BYTES_MAX],
    },
    Heap(Box<[u8]>),
}

const _: () = assert!(std::mem::size_of::<Key>() == 32);
const _: () = assert!(std::mem::size_of::<ValueLoc>() == 16);

impl Key {
    pub fn new(k: &[u8]) -> Key {
        if k.len() <= KEY_INLINE_BYTES_MAX {
            let mut bytes = [0u8; KEY_INLINE_BYTES_MAX];
            bytes[..k.len()].copy_from_slice(k);
            Key::Inline {
                len: k.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(k.into())
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Heap(b) => b,
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::hash::Hash for Key {
    // Must agree with `[u8]`'s hash: lookups go through `Borrow<[u8]>`.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    // Must agree with `[u8]`'s order: range lookups go through `Borrow<[u8]>`.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::Inline { len: a, bytes: x }, Key::Inline { len: b, bytes: y }) => {
                // Both are zero-padded to 30 bytes: comparing them as big-endian words is
                // comparing bytes in order, where a missing byte counts as a zero; the
                // length then breaks the tie ("ab" < "ab\0"). That is `[u8]`'s order,
                // without a call to `memcmp` per comparison (the search's hot spot).
                for at in [0, 8, 16, KEY_INLINE_BYTES_MAX - 8] {
                    let w = |b: &[u8; KEY_INLINE_BYTES_MAX]| {
                        u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
                    };
                    // The last word overlaps the third; once the first three are equal,
                    // comparing it compares bytes 24..30 only.
                    match w(x).cmp(&w(y)) {
                        Ordering::Equal => continue,
                        o => return o,
                    }
                }
                a.cmp(b)
            }
            _ => self.as_bytes().cmp(other.as_bytes()),
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Where a value lies, packed in 16 bytes. `file` says what the other fields mean:
///
/// | `file`                              | meaning   | `pos`          | `len`          |
/// |-------------------------------------|-----------|----------------|----------------|
/// | `1 ..= SEGMENT_SEQ_MAX`             | segment   | file offset    | value bytes    |
/// | `CHECKPOINT_SLOT_0`, `_1`           | checkpoint| file offset    | value bytes    |
/// | `PENDING`                           | pending   | LSN            | op index       |
/// | `INLINE_BASE + n` (`n ≤ 12`)        | inline    | value bytes 0..8 | bytes 8..12  |
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct ValueLoc {
    pos: u64,
    len: u32,
    file: u32,
}

const INLINE_BASE: u32 = u32::MAX - INLINE_VALUE_BYTES_MAX as u32;
const PENDING: u32 = INLINE_BASE - 1;
const CHECKPOINT_SLOT_0: u32 = PENDING - 2;
/// Largest segment sequence number an index entry can name.
pub(crate) const SEGMENT_SEQ_MAX: u64 = (CHECKPOINT_SLOT_0 - 1) as u64;

/// A [`ValueLoc`] decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Loc {
    Segment {
        seq: u64,
        pos: u64,
        len: usize,
    },
    Checkpoint {
        slot: usize,
        pos: u64,
        len: usize,
    },
    Pending {
        lsn: u64,
        op: u32,
    },
    Inline {
        bytes: [u8; INLINE_VALUE_BYTES_MAX],
        len: usize,
    },
}

impl ValueLoc {
    pub fn segment(seq: u64, pos: u64, len: usize) -> ValueLoc {
        debug_assert!((1..=SEGMENT_SEQ_MAX).contains(&seq));
        ValueLoc {
            pos,
            len: len as u32,
            file: seq as u32,
        }
    }

    pub fn checkpoint(slot: usize, pos: u64, len: usize) -> ValueLoc {
        debug_assert!(slot < 2);
        ValueLoc {
            pos,
            len: len as u32,
            file: CHECKPOINT_SLOT_0 + slot as u32,
        }
    }

    pub fn pending(lsn: u64, op: u32) -> ValueLoc {
        ValueLoc {
            pos: lsn,
            len: op,
            file: PENDING,
        }
    }

    pub fn inline(v: &[u8]) -> ValueLoc {
        debug_assert!(v.len() <= INLINE_VALUE_BYTES_MAX);
        let mut b = [0u8; INLINE_VALUE_BYTES_MAX];
        b[..v.len()].copy_from_slice(v);
        ValueLoc {
            pos: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            len: u32::from_le_bytes(b[8..].try_into().expect("4 bytes")),
            file: INLINE_BASE + v.len() as u32,
        }
    }

    pub fn decode(self) -> Loc {
        match self.file {
            f if f >= INLINE_BASE => {
                let mut bytes = [0u8; INLINE_VALUE_BYTES_MAX];
                bytes[..8].copy_from_slice(&self.pos.to_le_bytes());
                bytes[8..].copy_from_slice(&self.len.to_le_bytes());
                Loc::Inline {
                    bytes,
                    len: (f - INLINE_BASE) as usize,
                }
            }
            PENDING => Loc::Pending {
                lsn: self.pos,
                op: self.len,
            },
            f if f >= CHECKPOINT_SLOT_0 => Loc::Checkpoint {
                slot: (f - CHECKPOINT_SLOT_0) as usize,
                pos: self.pos,
                len: self.len as usize,
            },
            f => Loc::Segment {
                seq: f as u64,
                pos: self.pos,
                len: self.len as usize,
            },
        }
    }

    pub fn is_inline(self) -> bool {
        self.file >= INLINE_BASE
    }
}

/// A `Buffer` write's record, held until it is written to the log file: its payload (one
/// copy per record, not per value) and where that payload will be.
#[derive(Debug)]
pub(crate) struct PendingRecord {
    pub payload: Arc<[u8]>,
    pub ops: Vec<OpRef>,
    pub segment: u64,
    /// File offset of the payload in the segment.
    pub base: u64,
}

impl PendingRecord {
    /// The value of operation `op` and where it will be once written.
    pub fn value(&self, op: u32) -> Option<(std::ops::Range<usize>, ValueLoc)> {
        let (start, len) = self.ops.get(op as usize)?.value?;
        let stored = ValueLoc::segment(self.segment, self.base + start as u64, len);
        Some((start..start + len, stored))
    }
}

/// The index proper, behind the store's `RwLock`.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub map: BTreeMap<Key, ValueLoc>,
    /// `Buffer` records not written to the log file yet, by LSN. Entries may point into
    /// them; a record stays until it is written, even if no entry points into it any more.
    pub pending: BTreeMap<u64, PendingRecord>,
    /// The maps of the current checkpoint and, while a checkpoint is being installed, the
    /// previous one. `checkpoint_slot` is the current one's slot.
    pub checkpoints: [Option<Arc<MappedBytes>>; 2],
    pub checkpoint_slot: usize,
}

impl Index {
    pub fn put(&mut self, key: Key, loc: ValueLoc) {
        self.map.insert(key, loc);
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.map.remove(key);
    }

    /// The location a value will keep while unchanged: a pending one's written place.
    pub fn stable(&self, loc: ValueLoc) -> ValueLoc {
        stable(&self.pending, loc)
    }

    /// Points entries whose log record is now written (`lsn <= written_lsn`) at the log
    /// instead of memory. Returns how many records were released.
    pub fn drain_pending(&mut self, written_lsn: u64) -> usize {
        let mut n = 0;
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > written_lsn {
                break;
            }
            let (lsn, record) = entry.remove_entry();
            for (i, op) in record.ops.iter().enumerate() {
                let key = &record.payload[op.key_start..op.key_start + op.key_len];
                if let Some(loc) = self.map.get_mut(key) {
                    if *loc == ValueLoc::pending(lsn, i as u32) {
                        *loc = record.value(i as u32).expect("a pending entry is a put").1;
                    }
                }
            }
            n += 1;
        }
        n
    }
}

/// See [`Index::stable`].
pub(crate) fn stable(pending: &BTreeMap<u64, PendingRecord>, loc: ValueLoc) -> ValueLoc {
    match loc.decode() {
        Loc::Pending { lsn, op } => pending
            .get(&lsn)
            .and_then(|r| r.value(op))
            .map_or(loc, |(_, stored)| stored),
        _ => loc,
    }
}

/// Writes between registering and applying: orders applies of one key by LSN, and tells a
/// checkpoint which LSNs are surely applied.
///
/// A writer registers its keys and a lower bound of the LSN it will get *before* appending,
/// and unregisters after applying. Writes of one key can finish out of LSN order (a `Buffer`
/// write is acknowledged before an earlier `Sync` one); the registry remembers, while any
/// writer of a key is in flight, the highest LSN applied to it, and an older write applied
/// later is skipped, so the index always ends in log order.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    keys: HashMap<Key, KeyState>,
    /// Lower bounds of the LSNs of registered writes (a multiset).
    lows: BTreeMap<u64, u32>,
}

#[derive(Debug)]
struct KeyState {
    refs: u32,
    applied_lsn: u64,
}

impl InFlight {
    pub fn register<'a>(&mut self, low: u64, keys: impl Iterator<Item = &'a Key>) {
        *self.lows.entry(low).or_insert(0) += 1;
        for k in keys {
            match self.keys.get_mut(k.as_bytes()) {
                Some(s) => s.refs += 1,
                None => {
                    self.keys.insert(
                        k.clone(),
                        KeyState {
                            refs: 1,
                            applied_lsn: 0,
                        },
                    );
                }
            }
        }
    }

    pub fn unregister<'a>(&mut self, low: u64, keys: impl Iterator<Item = &'a Key>) {
        if let Some(n) = self.lows.get_mut(&low) {
            *n -= 1;
            if *n == 0 {
                self.lows.remove(&low);
            }
        }
        for k in keys {
            if let Some(s) = self.keys.get_mut(k.as_bytes()) {
                s.refs -= 1;
                if s.refs == 0 {
                    self.keys.remove(k.as_bytes());
                }
            }
        }
    }

    /// Whether an operation at `lsn` on `key` may apply (no later one was applied), and
    /// records it as applied.
    pub fn admit(&mut self, key: &[u8], lsn: u64) -> bool {
        match self.keys.get_mut(key) {
            Some(s) if s.applied_lsn > lsn => false,
            Some(s) => {
                s.applied_lsn = lsn;
                true
            }
            // Registered writes always find their keys; replay registers nothing.
            None => true,
        }
    }

    /// The lowest LSN a registered write may still have.
    pub fn low(&self) -> Option<u64> {
        self.lows.keys().next().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip() {
        let cases = [
            ValueLoc::segment(1, 64, 100),
            ValueLoc::segment(SEGMENT_SEQ_MAX, u64::MAX, u32::MAX as usize),
            ValueLoc::checkpoint(0, 5, 6),
            ValueLoc::checkpoint(1, 5, 6),
            ValueLoc::pending(7, 3),
        ];
        let decoded: Vec<_> = cases.iter().map(|c| c.decode()).collect();
        assert_eq!(
            decoded,
            [
                Loc::Segment {
                    seq: 1,
                    pos: 64,
                    len: 100
                },
                Loc::Segment {
                    seq: SEGMENT_SEQ_MAX,
                    pos: u64::MAX,
                    len: u32::MAX as usize
                },
                Loc::Checkpoint {
                    slot: 0,
                    pos: 5,
                    len: 6
                },
                Loc::Checkpoint {
                    slot: 1,
                    pos: 5,
                    len: 6
                },
                Loc::Pending { lsn: 7, op: 3 },
            ]
        );
        for n in 0..=INLINE_VALUE_BYTES_MAX {
            let v: Vec<u8> = (0..n as u8).map(|b| b.wrapping_mul(37) ^ 0xff).collect();
            match ValueLoc::inline(&v).decode() {
                Loc::Inline { bytes, len } => assert_eq!(&bytes[..len], &v[..]),
                other => panic!("{other:?}"),
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn key_order_is_byte_order(
            a in proptest::collection::vec(0u8..4, 0..40),
            b in proptest::collection::vec(0u8..4, 0..40),
        ) {
            proptest::prop_assert_eq!(Key::new(&a).cmp(&Key::new(&b)), a.cmp(&b));
            proptest::prop_assert_eq!(Key::new(&a) == Key::new(&b), a == b);
        }
    }

    #[test]
    fn keys_order_as_bytes() {
        let long = vec![b'a'; 40];
        let mut keys = [
            Key::new(b"b"),
            Key::new(&long),
            Key::new(b"a"),
            Key::new(b""),
        ];
        keys.sort();
        let bytes: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        assert_eq!(bytes, [&b""[..], b"a", &long[..], b"b"]);
    }
}
