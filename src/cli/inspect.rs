//! `groupwal inspect`: a log's segments and records, read through a read-only handle. Never
//! writes to the log: not even a torn-tail cut.

use super::report::Table;
use super::{check_log_dir, exit, print_json, Failure, Outcome};
use clap::Args;
use groupwal::format::{frame_len, CorrelationId, SEGMENT_HEADER_BYTES};
use groupwal::{Wal, WalOptions};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One-line description of the verb (`groupwal --help`).
pub const ABOUT: &str = "List a log's segments and records (never modifies the log)";

/// The verb's full description (`groupwal inspect --help`).
pub const LONG_ABOUT: &str = "List a log's segments (sequence number, first and last LSN, records, bytes, \
sealed or active) and its records (LSN, payload length, correlation id).\n\n\
Never modifies the log: it is opened read-only with a shared lock, and nothing is written, not even the cut of a \
torn tail, which is reported instead. A log held open for writing by another handle is \
refused (exit 75).";

/// Arguments of `groupwal inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The log's directory.
    pub dir: PathBuf,

    /// List records from this LSN on.
    #[arg(long, default_value_t = 1, value_name = "LSN")]
    pub from: u64,

    /// List at most N records (0 lists segments only). Default: all.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,

    /// List only records with this correlation id (up to 32 hex digits, `0x` optional).
    #[arg(long, value_name = "ID", value_parser = parse_correlation)]
    pub correlation: Option<CorrelationId>,

    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

fn parse_correlation(s: &str) -> Result<CorrelationId, String> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if digits.is_empty() || digits.len() > 32 {
        return Err(format!(
            "`{s}` is not a correlation id (1 to 32 hex digits)"
        ));
    }
    s.parse()
        .map_err(|_| format!("`{s}` is not a correlation id (1 to 32 hex digits)"))
}

/// One segment, as `inspect` shows it.
#[derive(Serialize, Debug)]
struct SegmentInfo {
    seq: u64,
    file: String,
    first_lsn: Option<u64>,
    last_lsn: Option<u64>,
    records: u64,
    /// Bytes of the header and the frames of its records.
    used_bytes: u64,
    /// Size of the file (segments are preallocated).
    file_bytes: u64,
    /// `sealed`, `active` (the last one, where appends go) or `unreadable header`.
    state: &'static str,
}

#[derive(Serialize, Debug)]
struct RecordInfo {
    lsn: u64,
    len: usize,
    correlation_id: Option<String>,
}

#[derive(Serialize, Debug)]
struct TornTail {
    segment: u64,
    offset: u64,
    len: u64,
    reason: String,
}

#[derive(Serialize, Debug)]
struct Inspection {
    dir: String,
    first_lsn: u64,
    next_lsn: u64,
    records: u64,
    segments: Vec<SegmentInfo>,
    torn_tail: Option<TornTail>,
    previously_quarantined: usize,
    /// Records that match `--from` and `--correlation`.
    records_matched: u64,
    /// The records listed (at most `--limit`).
    listed: Vec<RecordInfo>,
}

/// Runs `groupwal inspect`.
pub fn run(args: InspectArgs) -> Outcome {
    check_log_dir(&args.dir, true)?;
    let wal = Wal::open_read_only(&args.dir, WalOptions::default())?;
    let mut segments = Vec::new();
    for segment in wal.segments() {
        let file_bytes = std::fs::metadata(&segment.path)
            .map_err(|e| Failure::io("stat", &segment.path, e))?
            .len();
        segments.push(SegmentInfo {
            seq: segment.seq,
            file: file_name(&segment.path),
            first_lsn: Some(segment.first_lsn),
            last_lsn: None,
            records: 0,
            used_bytes: SEGMENT_HEADER_BYTES as u64,
            file_bytes,
            state: if segment.sealed { "sealed" } else { "active" },
        });
    }
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut listed = Vec::new();
    let mut matched = 0u64;
    let mut total = 0u64;
    let mut index = 0usize;
    for record in wal.read_from(wal.first_lsn()) {
        let record = record?;
        total += 1;
        // Segments hold consecutive LSN ranges: move to the last one starting at or before it.
        while let Some(next) = segments.get(index + 1) {
            match next.first_lsn {
                Some(first) if first <= record.lsn => index += 1,
                None => index += 1,
                Some(_) => break,
            }
        }
        if let Some(s) = segments.get_mut(index) {
            s.records += 1;
            s.last_lsn = Some(record.lsn);
            s.used_bytes += frame_len(record.payload.len(), record.correlation_id.is_some()) as u64;
        }
        let wanted =
            record.lsn >= args.from && args.correlation.is_none_or_eq(record.correlation_id);
        if wanted {
            matched += 1;
            if (listed.len() as u64) < limit {
                listed.push(RecordInfo {
                    lsn: record.lsn,
                    len: record.payload.len(),
                    correlation_id: record.correlation_id.map(|c| c.to_string()),
                });
            }
        }
    }
    let report = wal.recovery_report();
    let inspection = Inspection {
        dir: args.dir.display().to_string(),
        first_lsn: wal.first_lsn(),
        next_lsn: wal.next_lsn(),
        records: total,
        segments,
        torn_tail: report.torn_tail.as_ref().map(|t| TornTail {
            segment: t.segment,
            offset: t.offset,
            len: t.len,
            reason: t.reason.clone(),
        }),
        previously_quarantined: report.previously_quarantined,
        records_matched: matched,
        listed,
    };
    drop(wal);
    if args.json {
        print_json(&inspection)?;
    } else {
        print_text(&inspection, args.limit == Some(0));
    }
    Ok(exit::OK)
}

/// A small extension so the filter reads as one condition.
trait CorrelationFilter {
    fn is_none_or_eq(&self, id: Option<CorrelationId>) -> bool;
}

impl CorrelationFilter for Option<CorrelationId> {
    fn is_none_or_eq(&self, id: Option<CorrelationId>) -> bool {
        match self {
            None => true,
            Some(want) => id == Some(*want),
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn print_text(i: &Inspection, segments_only: bool) {
    let last = i.next_lsn.saturating_sub(1);
    println!(
        "log {}: {} segment(s), {} record(s){}, next LSN {}",
        i.dir,
        i.segments.len(),
        i.records,
        if i.records > 0 {
            format!(" (LSN {}..={last})", i.first_lsn)
        } else {
            String::new()
        },
        i.next_lsn
    );
    if let Some(t) = &i.torn_tail {
        println!(
            "torn tail: segment {} at offset {}, {} bytes: {} (not changed: a writer's open cuts it)",
            t.segment, t.offset, t.len, t.reason
        );
    }
    if i.previously_quarantined > 0 {
        println!(
            "{} damaged range(s) were quarantined by an earlier salvage (see quarantine/report.txt)",
            i.previously_quarantined
        );
    }
    println!();
    let mut t = Table::new(&[
        "segment",
        "file",
        "first LSN",
        "last LSN",
        "records",
        "used bytes",
        "file bytes",
        "state",
    ]);
    for s in &i.segments {
        t.row(vec![
            s.seq.to_string(),
            s.file.clone(),
            opt(s.first_lsn),
            opt(s.last_lsn),
            s.records.to_string(),
            s.used_bytes.to_string(),
            s.file_bytes.to_string(),
            s.state.to_string(),
        ]);
    }
    print!("{}", t.render());
    if segments_only {
        return;
    }
    println!();
    let mut t = Table::new(&["LSN", "bytes", "correlation id"]);
    for r in &i.listed {
        t.row(vec![
            r.lsn.to_string(),
            r.len.to_string(),
            r.correlation_id.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    print!("{}", t.render());
    let shown = i.listed.len() as u64;
    if shown < i.records_matched {
        println!(
            "({} more matching record(s) not listed; raise --limit)",
            i.records_matched - shown
        );
    }
}
