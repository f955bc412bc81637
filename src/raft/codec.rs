//! The payloads the Raft log store writes into the WAL: one kind byte, then the body.
//!
//! | kind | byte | body |
//! |---|---|---|
//! | entry | `1` | `u32` LE length of the log id's JSON, the log id's JSON, the entry's JSON |
//! | vote | `2` | the vote's JSON |
//! | committed | `3` | the committed log id's JSON (`null` for none) |
//! | truncate | `4` | `u64` LE: the first log index removed |
//! | purge | `5` | a [`Checkpoint`]'s JSON |
//!
//! An entry carries its log id apart from the entry so that recovery rebuilds the index
//! without decoding any entry. Every WAL record is checksummed and whole or absent after a
//! crash, so each payload is applied entirely or not at all.

use openraft::{LogId, NodeId, Vote};
use serde::{Deserialize, Serialize};

const KIND_ENTRY: u8 = 1;
const KIND_VOTE: u8 = 2;
const KIND_COMMITTED: u8 = 3;
const KIND_TRUNCATE: u8 = 4;
const KIND_PURGE: u8 = 5;

/// What a purge marker records: the purge itself plus the rest of the metadata as it stood,
/// so that removing the segments below the marker loses no vote or committed id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct Checkpoint<NID: NodeId> {
    /// Every entry up to and including this log id is gone.
    pub purged: LogId<NID>,
    /// The vote in force when the purge was written.
    pub vote: Option<Vote<NID>>,
    /// The committed log id in force when the purge was written.
    pub committed: Option<LogId<NID>>,
}

/// A decoded payload. Entries stay encoded: only their log id is decoded.
#[derive(Debug)]
pub(crate) enum Payload<'a, NID: NodeId> {
    Entry { log_id: LogId<NID>, entry: &'a [u8] },
    Vote(Vote<NID>),
    Committed(Option<LogId<NID>>),
    Truncate { since: u64 },
    Purge(Checkpoint<NID>),
}

/// Why a payload could not be decoded.
pub(crate) type DecodeError = String;

/// Encodes an entry: its log id apart, then the whole entry.
pub(crate) fn encode_entry<NID: NodeId, E: Serialize>(
    log_id: &LogId<NID>,
    entry: &E,
) -> Result<Vec<u8>, serde_json::Error> {
    let id = serde_json::to_vec(log_id)?;
    let mut out = Vec::with_capacity(5 + id.len() + 64);
    out.push(KIND_ENTRY);
    // A log id's JSON is a few dozen bytes; u32 cannot overflow.
    out.extend_from_slice(&(id.len() as u32).to_le_bytes());
    out.extend_from_slice(&id);
    serde_json::to_writer(&mut out, entry)?;
    Ok(out)
}

/// Encodes a vote.
pub(crate) fn encode_vote<NID: NodeId>(vote: &Vote<NID>) -> Vec<u8> {
    tagged(KIND_VOTE, vote)
}

/// Encodes the committed log id.
pub(crate) fn encode_committed<NID: NodeId>(committed: &Option<LogId<NID>>) -> Vec<u8> {
    tagged(KIND_COMMITTED, committed)
}

/// Encodes a truncation marker: entries from `since` on are gone.
pub(crate) fn encode_truncate(since: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(KIND_TRUNCATE);
    out.extend_from_slice(&since.to_le_bytes());
    out
}

/// Encodes a purge marker.
pub(crate) fn encode_purge<NID: NodeId>(checkpoint: &Checkpoint<NID>) -> Vec<u8> {
    tagged(KIND_PURGE, checkpoint)
}

fn tagged<T: Serialize>(kind: u8, value: &T) -> Vec<u8> {
    let mut out = vec![kind];
    // Serializing votes and log ids into a Vec cannot fail: they are plain structs of
    // integers and node ids whose Serialize impls (derived) do not fail on a Vec writer.
    serde_json::to_writer(&mut out, value).expect("metadata serializes");
    out
}

/// Decodes one payload.
pub(crate) fn decode<NID: NodeId>(payload: &[u8]) -> Result<Payload<'_, NID>, DecodeError> {
    let (&kind, body) = payload.split_first().ok_or("empty payload")?;
    let json = |e: serde_json::Error| format!("kind {kind}: {e}");
    Ok(match kind {
        KIND_ENTRY => {
            let len_bytes: [u8; 4] = body
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or("entry shorter than its header")?;
            let len = u32::from_le_bytes(len_bytes) as usize;
            let id = body
                .get(4..4 + len)
                .ok_or("entry shorter than its log id")?;
            Payload::Entry {
                log_id: serde_json::from_slice(id).map_err(json)?,
                entry: &body[4 + len..],
            }
        }
        KIND_VOTE => Payload::Vote(serde_json::from_slice(body).map_err(json)?),
        KIND_COMMITTED => Payload::Committed(serde_json::from_slice(body).map_err(json)?),
        KIND_TRUNCATE => {
            let since: [u8; 8] = body
                .try_into()
                .map_err(|_| format!("truncate marker of {} bytes, not 8", body.len()))?;
            Payload::Truncate {
                since: u64::from_le_bytes(since),
            }
        }
        KIND_PURGE => Payload::Purge(serde_json::from_slice(body).map_err(json)?),
        other => return Err(format!("unknown record kind {other}")),
    })
}

/// Decodes an entry's body (the part after its log id).
pub(crate) fn decode_entry<E: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<E, serde_json::Error> {
    serde_json::from_slice(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn id(term: u64, node: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    #[test]
    fn every_kind_round_trips() {
        let log_id = id(3, 1, 42);
        let bytes = encode_entry(&log_id, &"payload").unwrap();
        match decode::<u64>(&bytes).unwrap() {
            Payload::Entry { log_id: got, entry } => {
                assert_eq!(got, log_id);
                assert_eq!(decode_entry::<String>(entry).unwrap(), "payload");
            }
            other => panic!("{other:?}"),
        }
        let vote = Vote::new_committed(7, 2);
        assert!(
            matches!(decode::<u64>(&encode_vote(&vote)).unwrap(), Payload::Vote(v) if v == vote)
        );
        let committed = Some(id(1, 1, 9));
        assert!(matches!(
            decode::<u64>(&encode_committed(&committed)).unwrap(),
            Payload::Committed(c) if c == committed
        ));
        assert!(matches!(
            decode::<u64>(&encode_committed::<u64>(&None)).unwrap(),
            Payload::Committed(None)
        ));
        assert!(matches!(
            decode::<u64>(&encode_truncate(11)).unwrap(),
            Payload::Truncate { since: 11 }
        ));
        let cp = Checkpoint {
            purged: id(2, 1, 5),
            vote: Some(vote),
            committed,
        };
        assert!(matches!(decode::<u64>(&encode_purge(&cp)).unwrap(), Payload::Purge(c) if c == cp));
    }

    #[test]
    fn damaged_payloads_are_errors_not_panics() {
        for bad in [
            &b""[..],
            &[9],
            &[KIND_ENTRY, 1],
            &[KIND_TRUNCATE, 1, 2],
            &[KIND_VOTE, b'{'],
        ] {
            assert!(decode::<u64>(bad).is_err(), "{bad:?}");
        }
        let mut long_id = vec![KIND_ENTRY];
        long_id.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode::<u64>(&long_id).is_err());
    }
}
