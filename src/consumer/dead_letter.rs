//! The dead-letter log: a [`Wal`] of its own under `dead-letter/<name>/`, holding the records
//! a consumer gave up on, each with its context, and marks of the ones redriven since.
//!
//! Each entry is one record of that log, in a small binary format with a version byte
//! (little endian; the same tables are in `docs/CONSUMERS.md`). A dead letter:
//!
//! | offset | size | field            | meaning                                           |
//! |-------:|-----:|------------------|---------------------------------------------------|
//! |      0 |    1 | `version`        | 1                                                 |
//! |      1 |    1 | `kind`           | 1: dead letter                                    |
//! |      2 |    1 | `cause`          | 1 failed, 2 retries exhausted, 3 crashed          |
//! |      3 |    1 | `flags`          | bit 0: the record had a correlation id            |
//! |      4 |    4 | `attempts`       | times the record was handed to the handler        |
//! |      8 |    8 | `lsn`            | the record's LSN in the main log                  |
//! |     16 |   16 | `correlation_id` | zeros without one                                 |
//! |     32 |    8 | `time_unix_ms`   | when it was dead-lettered                         |
//! |     40 |    4 | `error_len`      | bytes of the last error                           |
//! |     44 |    4 | `payload_len`    | bytes of the payload                              |
//! |     48 |    … | `error`, `payload` | UTF-8 error, then the record's payload          |
//!
//! A redrive mark, appended once a dead letter was appended to the main log again:
//!
//! | offset | size | field          | meaning                                   |
//! |-------:|-----:|----------------|-------------------------------------------|
//! |      0 |    1 | `version`      | 1                                         |
//! |      1 |    1 | `kind`         | 2: redriven                               |
//! |      2 |    6 | zero           |                                           |
//! |      8 |    8 | `id`           | the dead letter's LSN in this log         |
//! |     16 |    8 | `new_lsn`      | its LSN in the main log after the redrive |
//! |     24 |    8 | `time_unix_ms` | when                                      |
//!
//! The frame of each entry also carries the original correlation id, so `groupwal inspect`
//! finds a request in the dead-letter log as in the main one.

use crate::consumer::cursor::truncated;
use crate::error::{Error, Result};
use crate::format::{CorrelationId, FRAME_OVERHEAD_MAX, SEGMENT_HEADER_BYTES};
use crate::io::Preallocation;
use crate::wal::{Durability, LogRecord, Record, Wal, WalOptions, RECORD_BYTES_MAX};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const VERSION: u8 = 1;
const KIND_DEAD_LETTER: u8 = 1;
const KIND_REDRIVEN: u8 = 2;
const FLAG_CORRELATION_ID: u8 = 1;
/// Bytes of a dead letter before its error and payload.
const DEAD_LETTER_HEADER_BYTES: usize = 48;
const REDRIVEN_BYTES: usize = 32;

/// Folder of the dead-letter logs, in the log directory.
pub const DEAD_LETTER_DIR: &str = "dead-letter";

/// Why a record was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadLetterCause {
    /// The handler answered [`Outcome::Fail`](super::Outcome::Fail): no retries.
    Failed,
    /// The handler answered [`Outcome::Retry`](super::Outcome::Retry) (or panicked) on each
    /// of `max_attempts` attempts.
    RetriesExhausted,
    /// The consumer died (or dropped its batch) `max_attempts` times while this record was
    /// alone in its batch: found by bisection.
    Crashed,
}

impl DeadLetterCause {
    fn code(self) -> u8 {
        match self {
            DeadLetterCause::Failed => 1,
            DeadLetterCause::RetriesExhausted => 2,
            DeadLetterCause::Crashed => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => DeadLetterCause::Failed,
            2 => DeadLetterCause::RetriesExhausted,
            3 => DeadLetterCause::Crashed,
            _ => return None,
        })
    }
}

/// A record a consumer gave up on, with its context.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The entry's LSN in the dead-letter log: what [`Redriven::id`] refers to.
    pub id: u64,
    /// The record's LSN in the main log.
    pub lsn: u64,
    /// The record's correlation id.
    pub correlation_id: Option<CorrelationId>,
    /// Times the record was handed to the handler (or, for [`DeadLetterCause::Crashed`],
    /// deliveries of it alone that did not come back).
    pub attempts: u32,
    /// Why it was dead-lettered.
    pub cause: DeadLetterCause,
    /// The last error: the handler's reason, a panic message, or what the consumer saw.
    /// At most 2048 bytes (longer ones are cut).
    pub error: String,
    /// When it was dead-lettered, in milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// The record's payload.
    pub payload: Vec<u8>,
    /// The LSN it was appended at in the main log by a redrive, if it was redriven.
    pub redriven_lsn: Option<u64>,
}

/// A dead letter appended to the main log again by a redrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Redriven {
    /// The dead letter's id (its LSN in the dead-letter log).
    pub id: u64,
    /// The record's original LSN.
    pub lsn: u64,
    /// Its new LSN in the main log.
    pub new_lsn: u64,
}

/// Milliseconds since the Unix epoch now (0 if the clock is before it).
fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A `Sync` record of the dead-letter log (or, redriven, of the main log) carrying the
/// original correlation id.
fn sync_record(bytes: &[u8], correlation_id: Option<CorrelationId>) -> Record<'_> {
    let record = Record::new(bytes).durability(Durability::Sync);
    match correlation_id {
        Some(id) => record.correlation_id(id),
        None => record,
    }
}

/// Appends dead letters `(record, cause, attempts, last error)` to `log` in one `Sync`
/// batch: when it returns `Ok`, they are durable.
pub(crate) fn append(
    log: &Wal,
    entries: &[(&LogRecord, DeadLetterCause, u32, &str)],
) -> Result<()> {
    let now = now_unix_ms();
    let encoded: Vec<Vec<u8>> = entries
        .iter()
        .map(|&(record, cause, attempts, error)| {
            encode_dead_letter(record, cause, attempts, error, now)
        })
        .collect();
    let records: Vec<Record<'_>> = encoded
        .iter()
        .zip(entries)
        .map(|(bytes, entry)| sync_record(bytes, entry.0.correlation_id))
        .collect();
    log.append_many(&records)
        .into_iter()
        .try_for_each(|r| r.map(drop))
}

/// The encoded entry for `record`.
fn encode_dead_letter(
    record: &LogRecord,
    cause: DeadLetterCause,
    attempts: u32,
    error: &str,
    time_unix_ms: u64,
) -> Vec<u8> {
    let error = truncated(error).as_bytes();
    let mut b = Vec::with_capacity(DEAD_LETTER_HEADER_BYTES + error.len() + record.payload.len());
    b.push(VERSION);
    b.push(KIND_DEAD_LETTER);
    b.push(cause.code());
    b.push(if record.correlation_id.is_some() {
        FLAG_CORRELATION_ID
    } else {
        0
    });
    b.extend_from_slice(&attempts.to_le_bytes());
    b.extend_from_slice(&record.lsn.to_le_bytes());
    b.extend_from_slice(&record.correlation_id.unwrap_or_default().to_bytes());
    b.extend_from_slice(&time_unix_ms.to_le_bytes());
    b.extend_from_slice(&(error.len() as u32).to_le_bytes());
    b.extend_from_slice(&(record.payload.len() as u32).to_le_bytes());
    debug_assert_eq!(b.len(), DEAD_LETTER_HEADER_BYTES);
    b.extend_from_slice(error);
    b.extend_from_slice(&record.payload);
    b
}

fn encode_redriven(id: u64, new_lsn: u64, time_unix_ms: u64) -> Vec<u8> {
    let mut b = vec![VERSION, KIND_REDRIVEN, 0, 0, 0, 0, 0, 0];
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&new_lsn.to_le_bytes());
    b.extend_from_slice(&time_unix_ms.to_le_bytes());
    debug_assert_eq!(b.len(), REDRIVEN_BYTES);
    b
}

enum Entry {
    DeadLetter(DeadLetter),
    Redriven { id: u64, new_lsn: u64 },
}

fn decode(record: &LogRecord) -> std::result::Result<Entry, String> {
    let b = &record.payload;
    let u32_at = |off: usize| u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"));
    let u64_at = |off: usize| u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"));
    match (b.first(), b.get(1)) {
        (Some(&VERSION), Some(&KIND_DEAD_LETTER)) => {
            if b.len() < DEAD_LETTER_HEADER_BYTES {
                return Err(format!("dead letter of {} bytes is too short", b.len()));
            }
            let cause = DeadLetterCause::from_code(b[2])
                .ok_or_else(|| format!("unknown cause {}", b[2]))?;
            let error_len = u32_at(40) as usize;
            let payload_len = u32_at(44) as usize;
            if DEAD_LETTER_HEADER_BYTES + error_len + payload_len != b.len() {
                return Err(format!(
                    "lengths {error_len} + {payload_len} do not match the entry's {} bytes",
                    b.len()
                ));
            }
            let error = &b[DEAD_LETTER_HEADER_BYTES..DEAD_LETTER_HEADER_BYTES + error_len];
            let mut id = [0u8; 16];
            id.copy_from_slice(&b[16..32]);
            Ok(Entry::DeadLetter(DeadLetter {
                id: record.lsn,
                lsn: u64_at(8),
                correlation_id: (b[3] & FLAG_CORRELATION_ID != 0)
                    .then(|| CorrelationId::from_bytes(id)),
                attempts: u32_at(4),
                cause,
                error: String::from_utf8_lossy(error).into_owned(),
                time_unix_ms: u64_at(32),
                payload: b[DEAD_LETTER_HEADER_BYTES + error_len..].to_vec(),
                redriven_lsn: None,
            }))
        }
        (Some(&VERSION), Some(&KIND_REDRIVEN)) if b.len() == REDRIVEN_BYTES => {
            Ok(Entry::Redriven {
                id: u64_at(8),
                new_lsn: u64_at(16),
            })
        }
        (Some(&VERSION), Some(kind)) => Err(format!("unknown entry kind {kind}")),
        (Some(version), _) => Err(format!("unknown entry version {version}")),
        (None, _) => Err("empty entry".into()),
    }
}

/// The dead-letter log directory of consumer `name` in log directory `dir`.
pub(crate) fn dead_letter_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(DEAD_LETTER_DIR).join(name)
}

/// Options of a dead-letter log: the main log's storage, room for any of its records plus
/// the context, small segments reserved with `fallocate` (dead letters are rare).
pub(crate) fn dead_letter_options(main: &WalOptions) -> Result<WalOptions> {
    let record_bytes_max = main
        .effective_record_bytes_max()
        .saturating_add(DEAD_LETTER_HEADER_BYTES + super::cursor::ERROR_BYTES_MAX);
    if record_bytes_max > RECORD_BYTES_MAX {
        return Err(Error::InvalidOptions {
            name: "record_bytes_max",
            reason: format!(
                "consumers need room for a record plus its dead-letter context: at most {} \
                 bytes",
                RECORD_BYTES_MAX - DEAD_LETTER_HEADER_BYTES - super::cursor::ERROR_BYTES_MAX
            ),
        });
    }
    const ALIGN: u64 = 64 << 10;
    let need = (record_bytes_max + SEGMENT_HEADER_BYTES + FRAME_OVERHEAD_MAX) as u64;
    let segment_bytes = need.div_ceil(ALIGN).saturating_mul(ALIGN).max(256 << 10);
    Ok(WalOptions::default()
        .storage(main.storage.clone())
        .segment_bytes(segment_bytes)
        .record_bytes_max(record_bytes_max)
        .preallocation(Preallocation::Fallocate))
}

/// Every dead letter of `log`, oldest first, with redrives applied.
pub(crate) fn read_all(log: &Wal) -> Result<Vec<DeadLetter>> {
    let mut letters = BTreeMap::new();
    for record in log.read_from(log.first_lsn()) {
        let record = record?;
        let corrupt = |reason: String| Error::ConsumerCorrupt {
            path: log.dir().to_path_buf(),
            reason: format!("dead-letter entry {}: {reason}", record.lsn),
        };
        match decode(&record).map_err(corrupt)? {
            Entry::DeadLetter(d) => {
                letters.insert(d.id, d);
            }
            Entry::Redriven { id, new_lsn } => match letters.get_mut(&id) {
                Some(d) => d.redriven_lsn = Some(new_lsn),
                None => return Err(corrupt(format!("marks unknown dead letter {id} redriven"))),
            },
        }
    }
    Ok(letters.into_values().collect())
}

/// Appends the chosen dead letters of `log` that were not redriven yet to `main` (one
/// `Sync` batch), then marks them redriven in `log` (another). A crash between the two
/// leaves them unmarked: a second redrive appends them again (at least once).
pub(crate) fn redrive(
    main: &Wal,
    log: &Wal,
    mut select: impl FnMut(&DeadLetter) -> bool,
) -> Result<Vec<Redriven>> {
    let chosen: Vec<DeadLetter> = read_all(log)?
        .into_iter()
        .filter(|d| d.redriven_lsn.is_none() && select(d))
        .collect();
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let records: Vec<Record<'_>> = chosen
        .iter()
        .map(|d| sync_record(&d.payload, d.correlation_id))
        .collect();
    let mut done = Vec::with_capacity(chosen.len());
    let mut first_error = None;
    for (d, result) in chosen.iter().zip(main.append_many(&records)) {
        match result {
            Ok(receipt) => done.push(Redriven {
                id: d.id,
                lsn: d.lsn,
                new_lsn: receipt.lsn,
            }),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let now = now_unix_ms();
    let marks: Vec<Vec<u8>> = done
        .iter()
        .map(|r| encode_redriven(r.id, r.new_lsn, now))
        .collect();
    let mark_records: Vec<Record<'_>> = marks.iter().map(|m| Record::new(m)).collect();
    for result in log.append_many(&mark_records) {
        result?;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let record = LogRecord {
            lsn: 77,
            correlation_id: Some(CorrelationId(0xfeed)),
            payload: b"{\"broken\": ".to_vec(),
        };
        let bytes = encode_dead_letter(&record, DeadLetterCause::Crashed, 3, "boom", 1234);
        let stored = LogRecord {
            lsn: 5,
            correlation_id: record.correlation_id,
            payload: bytes,
        };
        match decode(&stored) {
            Ok(Entry::DeadLetter(d)) => {
                assert_eq!(
                    (d.id, d.lsn, d.correlation_id, d.attempts, d.cause),
                    (
                        5,
                        77,
                        Some(CorrelationId(0xfeed)),
                        3,
                        DeadLetterCause::Crashed
                    )
                );
                assert_eq!((d.error.as_str(), d.time_unix_ms), ("boom", 1234));
                assert_eq!(d.payload, record.payload);
            }
            _ => panic!("expected a dead letter"),
        }
        let mark = LogRecord {
            lsn: 6,
            correlation_id: None,
            payload: encode_redriven(5, 900, 1),
        };
        assert!(matches!(
            decode(&mark),
            Ok(Entry::Redriven {
                id: 5,
                new_lsn: 900
            })
        ));
    }

    #[test]
    fn truncated_or_unknown_entries_are_errors() {
        let record = LogRecord {
            lsn: 1,
            correlation_id: None,
            payload: b"x".to_vec(),
        };
        let bytes = encode_dead_letter(&record, DeadLetterCause::Failed, 1, "e", 0);
        for len in 0..bytes.len() {
            let cut = LogRecord {
                lsn: 1,
                correlation_id: None,
                payload: bytes[..len].to_vec(),
            };
            assert!(decode(&cut).is_err(), "a {len}-byte prefix decoded");
        }
        let mut unknown = bytes.clone();
        unknown[0] = 9;
        let r = LogRecord {
            lsn: 1,
            correlation_id: None,
            payload: unknown,
        };
        assert!(decode(&r).is_err());
    }
}
