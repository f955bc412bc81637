//! `groupwal verify`: checks every segment header and frame with the same rules as opening
//! the log, and lists every damaged range: it opens the log read-only in
//! `RecoveryMode::Salvage`, which is a dry run (nothing is copied or changed). Its verdict is
//! the one `Wal::open` would reach.

use super::{check_log_dir, exit, print_json, Outcome};
use clap::Args;
use groupwal::wal::DamagedRange;
use groupwal::{RecoveryMode, Wal, WalOptions};
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
Every damaged range is printed as segment number, file, byte offset and length.";

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
    /// Where the first damage starts.
    segment: Option<u64>,
    file: Option<String>,
    offset: Option<u64>,
    reason: Option<String>,
    /// Every damaged range, in log order (the torn tail last).
    problems: Vec<Problem>,
}

#[derive(Serialize, Debug)]
struct Problem {
    /// `corruption` or `torn_tail`.
    kind: &'static str,
    segment: u64,
    file: String,
    offset: u64,
    len: u64,
    reason: String,
}

/// Runs `groupwal verify`.
pub fn run(args: VerifyArgs) -> Outcome {
    check_log_dir(&args.dir, true)?;
    let options = WalOptions::default().recovery_mode(RecoveryMode::Salvage);
    let wal = Wal::open_read_only(&args.dir, options)?;
    let r = wal.recovery_report();
    let problem = |kind, d: &DamagedRange| Problem {
        kind,
        segment: d.segment,
        file: args
            .dir
            .join(groupwal::wal::segment_file_name(d.segment))
            .display()
            .to_string(),
        offset: d.offset,
        len: d.len,
        reason: d.reason.clone(),
    };
    let mut problems: Vec<Problem> = r
        .quarantined
        .iter()
        .map(|d| problem("corruption", d))
        .collect();
    problems.extend(r.torn_tail.iter().map(|d| problem("torn_tail", d)));
    let (status, code) = match problems.first().map(|p| p.kind) {
        None => ("clean", exit::OK),
        Some("torn_tail") => ("torn_tail", exit::TORN_TAIL),
        Some(_) => ("corruption", exit::CORRUPTION),
    };
    let first = problems.first();
    let verdict = Verdict {
        dir: args.dir.display().to_string(),
        status,
        segments: Some(r.segments),
        records: Some(r.records),
        bytes_checked: Some(r.bytes_scanned),
        previously_quarantined: Some(r.previously_quarantined),
        segment: first.map(|p| p.segment),
        file: first.map(|p| p.file.clone()),
        offset: first.map(|p| p.offset),
        reason: first.map(|p| p.reason.clone()),
        problems,
    };
    if args.json {
        print_json(&verdict)?;
    } else {
        print_text(&verdict);
    }
    Ok(code)
}

fn print_text(v: &Verdict) {
    let at = |p: &Problem| {
        format!(
            "segment {} ({}) at offset {}, {} bytes: {}",
            p.segment, p.file, p.offset, p.len, p.reason
        )
    };
    println!(
        "{}: {}: {} segment(s), {} valid record(s), {} bytes of frames verified",
        v.status.replace('_', " "),
        v.dir,
        v.segments.unwrap_or(0),
        v.records.unwrap_or(0),
        v.bytes_checked.unwrap_or(0)
    );
    if let Some(n) = v.previously_quarantined.filter(|&n| n > 0) {
        println!("({n} range(s) quarantined by an earlier salvage are accepted as gaps)");
    }
    for p in &v.problems {
        match p.kind {
            "torn_tail" => {
                println!("torn tail: {}", at(p));
                println!(
                    "  the incomplete last record was never acknowledged; opening the log for \
                     writing cuts it"
                );
            }
            _ => println!("corruption: {}", at(p)),
        }
    }
    if v.status == "corruption" {
        println!(
            "the log will not open until the damage is quarantined: `groupwal salvage {}` \
             copies it to quarantine/ and keeps every valid record",
            v.dir
        );
    }
}
