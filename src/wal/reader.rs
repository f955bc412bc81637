//! Reading records back: from any LSN, across segments. Sealed segments are read through a
//! memory map; the active one through positioned reads, since it is still being written.

use crate::error::{Error, Result};
use crate::format::{
    decode_frame, peek_frame_len, CorrelationId, FrameError, FRAME_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::io::read_full_at;
use crate::wal::record::RecordLocation;
use crate::wal::recovery::resume_point;
use crate::wal::segment::Segment;
use std::sync::Arc;

/// A record read from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// The record's LSN.
    pub lsn: u64,
    /// The correlation id it was appended with.
    pub correlation_id: Option<CorrelationId>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// An iterator over the records of a log from some LSN up to the last record written when
/// the reader was made. Yields an error (then ends) if a segment cannot be read.
pub struct WalReader {
    segments: Vec<Arc<Segment>>,
    /// Index of the current segment.
    index: usize,
    /// Byte offset of the next frame in the current segment.
    offset: u64,
    /// Buffer over the current segment: a map of a sealed one, or chunks of the active one.
    window: Window,
    from_lsn: u64,
    last_lsn: u64,
    /// The lowest LSN not yet passed.
    next_lsn: u64,
    done: bool,
    /// Where the record last returned lies.
    last_location: Option<RecordLocation>,
}

enum Window {
    None,
    Mapped(Arc<crate::io::MappedBytes>),
    /// Bytes of the active segment starting at file offset `start`.
    Read {
        start: u64,
        bytes: Vec<u8>,
    },
}

/// Bytes read at a time from the active segment.
const READ_CHUNK_BYTES: usize = 1 << 20;

impl WalReader {
    /// A reader over `segments` (in order; the last is active) for LSNs
    /// `from_lsn..=last_lsn`.
    pub(crate) fn new(segments: Vec<Arc<Segment>>, from_lsn: u64, last_lsn: u64) -> WalReader {
        // The last segment whose first LSN is at most from_lsn holds it (or the first does).
        let index = segments
            .partition_point(|s| s.header.first_lsn <= from_lsn)
            .saturating_sub(1);
        let next_lsn = segments.get(index).map_or(1, |s| s.header.first_lsn);
        WalReader {
            next_lsn,
            done: segments.is_empty() || from_lsn > last_lsn,
            segments,
            index,
            offset: SEGMENT_HEADER_BYTES as u64,
            window: Window::None,
            from_lsn,
            last_lsn,
            last_location: None,
        }
    }

    /// Continues the reader where it stopped, over a newer snapshot of the log's segments,
    /// up to `last_lsn`: a consumer follows the log's head without rescanning its segment
    /// from the start (which a new reader does to find its first LSN).
    pub(crate) fn extend(&mut self, segments: Vec<Arc<Segment>>, last_lsn: u64) {
        let current = self.segments.get(self.index).map(|s| s.seq());
        match current.and_then(|seq| segments.iter().position(|s| s.seq() == seq)) {
            Some(index) => {
                self.index = index;
                self.segments = segments;
                // Cached bytes of the active segment may predate frames written since.
                self.window = Window::None;
                self.last_lsn = last_lsn;
                self.done = false;
            }
            // The reader's segment was removed by truncation: start over from where it was.
            None => *self = WalReader::new(segments, self.next_lsn.max(self.from_lsn), last_lsn),
        }
    }

    /// Where the record last returned by [`Iterator::next`] lies in the log (`None` before
    /// the first). With [`Wal::read_at`](crate::Wal::read_at), lets an index remember where
    /// a payload is instead of keeping it in memory.
    pub fn last_location(&self) -> Option<RecordLocation> {
        self.last_location
    }

    fn is_active(&self) -> bool {
        self.index + 1 == self.segments.len()
    }

    /// The bytes of the current segment from `self.offset`: at least `need` of them, or all
    /// that remain in the file. A sealed segment is mapped whole; the active one is read in
    /// chunks, never more than the file holds (a garbage length cannot make it allocate more).
    fn bytes_at(&mut self, need: usize) -> Result<&[u8]> {
        let segment = &self.segments[self.index];
        if !self.is_active() {
            if !matches!(self.window, Window::Mapped(_)) {
                self.window = Window::Mapped(segment.mapped()?);
            }
        } else {
            let have = match &self.window {
                // Saturating: `need` is usize::MAX when a skip over a salvaged range asks for
                // the rest of the segment, and a wrapped sum would pass for a window that
                // holds only a chunk of it (the skip would then miss the records after it).
                Window::Read { start, bytes } => {
                    self.offset >= *start
                        && self.offset.saturating_add(need as u64) <= start + bytes.len() as u64
                }
                _ => false,
            };
            if !have {
                let file_len = segment
                    .file
                    .len()
                    .map_err(|e| Error::io("stat segment", &segment.path, e))?;
                let left = file_len.saturating_sub(self.offset) as usize;
                let mut bytes = vec![0u8; need.max(READ_CHUNK_BYTES).min(left)];
                let n = read_full_at(&*segment.file, &mut bytes, self.offset)
                    .map_err(|e| Error::io("read segment", &segment.path, e))?;
                bytes.truncate(n);
                self.window = Window::Read {
                    start: self.offset,
                    bytes,
                };
            }
        }
        Ok(match &self.window {
            Window::Mapped(m) => m.get(self.offset as usize..).unwrap_or(&[]),
            Window::Read { start, bytes } => &bytes[(self.offset - start) as usize..],
            Window::None => &[],
        })
    }

    /// Moves to the next segment; false at the end of the log.
    fn next_segment(&mut self) -> bool {
        self.index += 1;
        self.offset = SEGMENT_HEADER_BYTES as u64;
        self.window = Window::None;
        match self.segments.get(self.index) {
            Some(s) => {
                self.next_lsn = self.next_lsn.max(s.header.first_lsn);
                true
            }
            None => false,
        }
    }

    fn step(&mut self) -> Result<Option<LogRecord>> {
        loop {
            if self.next_lsn > self.last_lsn {
                return Ok(None);
            }
            let salt = self.segments[self.index].header.salt;
            let header = self.bytes_at(FRAME_HEADER_BYTES)?;
            let Some(need) = peek_frame_len(header) else {
                if !self.next_segment() {
                    return Ok(None);
                }
                continue;
            };
            let (last_lsn, from_lsn) = (self.last_lsn, self.from_lsn);
            let bytes = self.bytes_at(need)?;
            // Copy out what is needed before moving on (the frame borrows the window).
            let decoded = decode_frame(bytes, salt).map(|frame| {
                let record = (frame.lsn >= from_lsn && frame.lsn <= last_lsn).then(|| LogRecord {
                    lsn: frame.lsn,
                    correlation_id: frame.correlation_id,
                    payload: frame.payload.to_vec(),
                });
                (frame.lsn, frame.frame_len, record)
            });
            match decoded {
                // `lsn <= last_lsn`: the loop's first check passed for `next_lsn`.
                Ok((lsn, frame_len, record)) if lsn == self.next_lsn => {
                    if record.is_some() {
                        self.last_location = Some(RecordLocation {
                            segment: self.segments[self.index].seq(),
                            offset: self.offset,
                        });
                    }
                    self.offset += frame_len as u64;
                    self.next_lsn = lsn + 1;
                    if record.is_some() {
                        return Ok(record);
                    }
                    continue;
                }
                Err(FrameError::EndOfLog) => {
                    // The end of this segment's records, unless records are still missing
                    // before the next segment's first LSN (or, in the active segment, before
                    // the last written LSN, which the loop's first check has not reached):
                    // then this zero header starts a range an earlier salvage skipped, and
                    // the records resume after it. A healthy log never searches here.
                    let more_here = self
                        .segments
                        .get(self.index + 1)
                        .map_or(true, |next| self.next_lsn < next.header.first_lsn);
                    if more_here && self.skip_damage(salt, None)? {
                        continue;
                    }
                    if !self.next_segment() {
                        return Ok(None);
                    }
                }
                // A valid frame with another LSN than the next one, or a bad frame.
                // Recovery accepted this log, so either is part of a range an earlier
                // salvage skipped: resume where recovery did.
                other => {
                    let found = other.ok().map(|(lsn, _, _)| lsn);
                    if self.skip_damage(salt, found)? {
                        continue;
                    }
                    if !self.next_segment() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Moves to where the records resume after the current position, in the current
    /// segment ([`resume_point`]; `found`: the LSN of the valid frame here, if it is one);
    /// false if they do not.
    fn skip_damage(&mut self, salt: u64, found: Option<u64>) -> Result<bool> {
        let next_lsn = self.next_lsn;
        let rest = self.bytes_at(usize::MAX)?;
        Ok(match resume_point(rest, 0, salt, next_lsn, found) {
            Some((skip, lsn)) => {
                self.offset += skip as u64;
                self.next_lsn = lsn;
                true
            }
            None => false,
        })
    }
}

impl Iterator for WalReader {
    type Item = Result<LogRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}
