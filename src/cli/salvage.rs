//! `groupwal salvage`: opens the log in `RecoveryMode::Salvage`, which copies damaged bytes to
//! `quarantine/` (with a report and a ledger), skips them, and keeps every valid record.

use super::report::Table;
use super::{check_log_dir, exit, print_json, Failure, Outcome};
use clap::Args;
use groupwal::format::{FRAME_OVERHEAD_MAX, SEGMENT_HEADER_BYTES};
use groupwal::wal::{QUARANTINE_DIR, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};
use groupwal::{RecoveryMode, Wal, WalOptions};
use serde::Serialize;
use std::path::PathBuf;

/// One-line description of the verb (`groupwal --help`).
pub const ABOUT: &str =
    "Quarantine a log's damaged bytes and keep the rest (opens in Salvage mode)";

/// The verb's full description (`groupwal salvage --help`).
pub const LONG_ABOUT: &str =
    "Open the log for writing in Salvage mode: every damaged range (a bad frame, \
a bad segment header, a missing segment, a torn tail) is copied to quarantine/ under the log \
directory, described in quarantine/report.txt and recorded in quarantine/ledger so later opens \
accept the gap; the valid records are kept and the log can be opened again. Skipped LSNs are \
never reused. Prints what was quarantined and where.\n\n\
Refuses a directory none of whose segment files starts with the groupwal magic (it is likely \
not a log at all) unless --force is given.";

/// Arguments of `groupwal salvage`.
#[derive(Args, Debug)]
pub struct SalvageArgs {
    /// The log's directory.
    pub dir: PathBuf,

    /// Salvage even when no segment file starts with the groupwal magic (every segment is then
    /// quarantined).
    #[arg(long)]
    pub force: bool,

    /// Print the outcome as one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
struct Range {
    segment: u64,
    offset: u64,
    len: u64,
    reason: String,
    /// Where the bytes were copied (none for a missing segment or an empty range).
    quarantine_file: Option<String>,
    torn_tail: bool,
}

#[derive(Serialize, Debug)]
struct Outcome_ {
    dir: String,
    quarantine_dir: String,
    segments: usize,
    records: u64,
    quarantined: Vec<Range>,
    previously_quarantined: usize,
    temp_files_removed: usize,
}

/// Runs `groupwal salvage`.
pub fn run(args: SalvageArgs) -> Outcome {
    let files = check_log_dir(&args.dir, !args.force)?;
    // Keep the segment size the log was made with: opening for writing gives the active
    // segment the configured size, and segment files do not record theirs.
    let mut segment_bytes = SEGMENT_BYTES_MIN;
    for (_, path) in &files {
        let len = std::fs::metadata(path)
            .map_err(|e| Failure::io("stat", path, e))?
            .len();
        segment_bytes = segment_bytes.max(len);
    }
    let segment_bytes = segment_bytes.min(SEGMENT_BYTES_MAX);
    let room = segment_bytes as usize - SEGMENT_HEADER_BYTES - FRAME_OVERHEAD_MAX;
    let options = WalOptions::default()
        .segment_bytes(segment_bytes)
        .record_bytes_max(room.min(16 << 20))
        .recovery_mode(RecoveryMode::Salvage);
    let wal = Wal::open(&args.dir, options)?;
    let report = wal.recovery_report().clone();
    wal.close()?;
    drop(wal);
    let torn = report.torn_tail.as_ref();
    let outcome = Outcome_ {
        dir: args.dir.display().to_string(),
        quarantine_dir: args.dir.join(QUARANTINE_DIR).display().to_string(),
        segments: report.segments,
        records: report.records,
        quarantined: report
            .quarantined
            .iter()
            .map(|r| Range {
                segment: r.segment,
                offset: r.offset,
                len: r.len,
                reason: r.reason.clone(),
                quarantine_file: r.quarantine_file.as_ref().map(|p| p.display().to_string()),
                torn_tail: torn.is_some_and(|t| t.segment == r.segment && t.offset == r.offset),
            })
            .collect(),
        previously_quarantined: report.previously_quarantined,
        temp_files_removed: report.temp_files_removed,
    };
    if args.json {
        print_json(&outcome)?;
    } else {
        print_text(&outcome);
    }
    Ok(exit::OK)
}

fn print_text(o: &Outcome_) {
    println!(
        "salvaged {}: kept {} record(s) in {} segment(s)",
        o.dir, o.records, o.segments
    );
    if o.quarantined.is_empty() {
        println!("nothing to quarantine: every frame is valid");
    } else {
        println!(
            "quarantined {} damaged range(s) into {} (described in {}/report.txt):\n",
            o.quarantined.len(),
            o.quarantine_dir,
            o.quarantine_dir
        );
        let mut t = Table::new(&["segment", "offset", "bytes", "copy", "reason"]);
        for r in &o.quarantined {
            let reason = if r.torn_tail {
                format!("torn tail: {}", r.reason)
            } else {
                r.reason.clone()
            };
            t.row(vec![
                r.segment.to_string(),
                r.offset.to_string(),
                r.len.to_string(),
                r.quarantine_file.clone().unwrap_or_else(|| "-".into()),
                reason,
            ]);
        }
        print!("{}", t.render());
    }
    if o.previously_quarantined > 0 {
        println!(
            "{} range(s) quarantined by an earlier salvage were skipped again",
            o.previously_quarantined
        );
    }
    if o.temp_files_removed > 0 {
        println!(
            "{} leftover temporary segment file(s) of an interrupted creation were removed",
            o.temp_files_removed
        );
    }
}
