//! `groupwal verify`: checks every segment header and frame with the same rules as opening
//! the log (`RecoveryMode::Strict`, read-only), so its verdict is the one `Wal::open` would
//! reach. Never writes to the log.

use super::{check_log_dir, exit, print_json, Failure, Outcome};
use clap::Args;
use groupwal::{Error, RecoveryMode, Wal, WalOptions};
use serde::Serialize;
use std::path::PathBuf;

/// One-line description of the verb (`groupwal --help`).
pub const ABOUT: &str =
    "Check every frame of a log: exit 0 clean, 1 torn tail only, 2 corruption (never \
             modifies the log)";

/// The verb's full description (`groupwal verify --help`).
pub const LONG_ABOUT: &str = "Check every segment header and every frame checksum, LSN and segment \
sequence of a log with the rules recovery uses when the log is opened. Never modifies the log: it is \
opened read-only, and nothing is written (not even the cut of a torn tail).\n\n\
Verdicts (and exit codes):\n  \
0  clean: every frame is valid;\n  \
1  torn tail: the last record was cut short by a crash (it was never acknowledged) and \
everything before it is valid; opening the log for writing cuts it;\n  \
2  corruption: a damaged frame with valid frames after it, or damage in a sealed segment; \
opening the log refuses it until `groupwal salvage` quarantines the damage.\n\n\
The damaged place is printed as segment number, file and byte offset. Verification stops at \
the first damaged frame, as opening the log does: after salvaging, run verify again to see \
whether anything else is wrong.";

/// Arguments of `groupwal verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The log's directory.
    pub dir: PathBuf,

    /// Print the verdict as one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
struct Verdict {
    dir: String,
    /// `clean`, `torn_tail` or `corruption`.
    status: &'static str,
    /// Segments checked (when clean).
    segments: Option<usize>,
    /// Valid records found (when clean).
    records: Option<u64>,
    /// Bytes of valid frames checked (when clean).
    bytes_checked: Option<u64>,
    /// Ranges quarantined by an earlier salvage, accepted as gaps.
    previously_quarantined: Option<usize>,
    /// Where the damage starts.
    segment: Option<u64>,
    file: Option<String>,
    offset: Option<u64>,
    reason: Option<String>,
}

/// Runs `groupwal verify`.
pub fn run(args: VerifyArgs) -> Outcome {
    check_log_dir(&args.dir, true)?;
    let options = WalOptions::default().recovery_mode(RecoveryMode::Strict);
    let mut verdict = Verdict {
        dir: args.dir.display().to_string(),
        status: "clean",
        segments: None,
        records: None,
        bytes_checked: None,
        previously_quarantined: None,
        segment: None,
        file: None,
        offset: None,
        reason: None,
    };
    let code = match Wal::open_read_only(&args.dir, options) {
        Ok(wal) => {
            let r = wal.recovery_report();
            verdict.segments = Some(r.segments);
            verdict.records = Some(r.records);
            verdict.bytes_checked = Some(r.bytes_scanned);
            verdict.previously_quarantined = Some(r.previously_quarantined);
            exit::OK
        }
        Err(e) => {
            let (status, code, segment, offset, reason) = match e {
                Error::TornTail {
                    segment,
                    offset,
                    reason,
                } => ("torn_tail", exit::TORN_TAIL, segment, offset, reason),
                Error::Corruption {
                    segment,
                    offset,
                    reason,
                } => ("corruption", exit::CORRUPTION, segment, offset, reason),
                other => return Err(Failure::from(other)),
            };
            verdict.status = status;
            verdict.segment = Some(segment);
            verdict.file = Some(
                args.dir
                    .join(format!("{segment:020}.wal"))
                    .display()
                    .to_string(),
            );
            verdict.offset = Some(offset);
            verdict.reason = Some(reason);
            code
        }
    };
    if args.json {
        print_json(&verdict)?;
    } else {
        print_text(&verdict);
    }
    Ok(code)
}

fn print_text(v: &Verdict) {
    let at = || {
        format!(
            "segment {} ({}) at offset {}: {}",
            v.segment.unwrap_or(0),
            v.file.as_deref().unwrap_or("?"),
            v.offset.unwrap_or(0),
            v.reason.as_deref().unwrap_or("?")
        )
    };
    match v.status {
        "clean" => {
            println!(
                "clean: {}: {} segment(s), {} record(s), {} bytes of frames verified",
                v.dir,
                v.segments.unwrap_or(0),
                v.records.unwrap_or(0),
                v.bytes_checked.unwrap_or(0)
            );
            if let Some(n) = v.previously_quarantined.filter(|&n| n > 0) {
                println!("({n} range(s) quarantined by an earlier salvage are accepted as gaps)");
            }
        }
        "torn_tail" => {
            println!("torn tail: {}", at());
            println!(
                "every frame before it is valid; the incomplete last record was never \
                 acknowledged, and opening the log for writing cuts it"
            );
        }
        _ => {
            println!("corruption: {}", at());
            println!(
                "the log will not open until the damage is quarantined: `groupwal salvage {}` \
                 copies it to quarantine/ and keeps every valid record (verification stops at \
                 the first damaged frame; run verify again after salvaging)",
                v.dir
            );
        }
    }
}
