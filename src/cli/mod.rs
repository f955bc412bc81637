//! The verbs of the `groupwal` tool, over the public library API only.
//!
//! Every verb returns `Ok(exit code)` or a [`Failure`]: one line for stderr and an exit code
//! from [`exit`]. Nothing here panics on bad input, missing files or IO errors.

pub mod bench;
pub mod inspect;
pub mod plot;
pub mod report;
pub mod salvage;
pub mod sys;
pub mod verify;

use groupwal::format::SEGMENT_MAGIC;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit codes. Usage errors use `EX_USAGE` (64), not clap's default 2, because `verify` gives
/// 1 and 2 their own meanings; the others follow `sysexits.h`.
pub mod exit {
    /// Success (for `verify`: every frame is valid).
    pub const OK: u8 = 0;
    /// `verify`: the log ends in a torn tail (an incomplete last record) and is otherwise clean.
    pub const TORN_TAIL: u8 = 1;
    /// The log is corrupt (`verify`, and any verb that refuses to open a corrupt log).
    pub const CORRUPTION: u8 = 2;
    /// Bad invocation: unknown flag, bad value, missing argument (`EX_USAGE`).
    pub const USAGE: u8 = 64;
    /// The directory is missing or holds no groupwal log (`EX_NOINPUT`).
    pub const NO_LOG: u8 = 66;
    /// Unexpected internal error (`EX_SOFTWARE`).
    pub const SOFTWARE: u8 = 70;
    /// A file could not be read, written or synced (`EX_IOERR`).
    pub const IO: u8 = 74;
    /// Another groupwal handle has the log open (`EX_TEMPFAIL`: try again later).
    pub const LOCKED: u8 = 75;
    /// `bench` was interrupted (SIGINT or SIGTERM); its scratch directory was removed.
    pub const INTERRUPTED: u8 = 130;
}

/// The exit-status section of every help page.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0   success (verify: the log is clean)
  1   verify: the log ends in a torn tail (an incomplete last record, never acknowledged)
  2   the log is corrupt (verify; other verbs refuse to open a corrupt log)
  64  bad invocation: unknown flag, bad value, missing argument
  66  the directory is missing or is not a groupwal log
  70  internal error
  74  a file could not be read or written
  75  the log is locked by another groupwal handle (in this or another process)
  130 bench was interrupted (Ctrl-C); its scratch directory was removed
Errors are printed as one line on stderr, `groupwal: <what went wrong>`.";

/// Why a verb failed: one line for stderr and the process exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code, from [`exit`].
    pub code: u8,
    /// One line, without the `groupwal: ` prefix.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        let message: String = message.into();
        // One line on stderr, whatever the message contains.
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        Failure { code, message }
    }

    /// An IO failure while doing `what` on `path`.
    pub fn io(what: &str, path: &Path, e: io::Error) -> Failure {
        let code = if e.kind() == io::ErrorKind::NotFound {
            exit::NO_LOG
        } else {
            exit::IO
        };
        Failure::new(code, format!("{what} {}: {e}", path.display()))
    }
}

impl From<groupwal::Error> for Failure {
    fn from(e: groupwal::Error) -> Failure {
        use groupwal::Error as E;
        let code = match &e {
            E::Locked { .. } => exit::LOCKED,
            E::Corruption { .. } | E::TornTail { .. } => exit::CORRUPTION,
            E::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => exit::NO_LOG,
            E::Io { .. } | E::OutcomeUnknown { .. } | E::Poisoned { .. } => exit::IO,
            E::InvalidOptions { .. } | E::RecordTooLarge { .. } => exit::USAGE,
            _ => exit::SOFTWARE,
        };
        Failure::new(code, e.to_string())
    }
}

/// What a verb returns: an exit code, or a failure to print.
pub type Outcome = Result<u8, Failure>;

/// Prints a clap error. Help and version go to stdout with exit 0; a usage error becomes one
/// line on stderr (clap's message, its context folded in) and exit [`exit::USAGE`].
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::from(exit::OK);
    }
    // Point at the help of the verb that was called, if one was.
    let verb = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .filter(|a| ["bench", "inspect", "verify", "salvage"].contains(&a.as_str()));
    let help = match verb {
        Some(v) => format!("groupwal {v} --help"),
        None => "groupwal --help".to_string(),
    };
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        eprintln!("groupwal: missing verb: bench, inspect, verify or salvage (see `{help}`)");
        return ExitCode::from(exit::USAGE);
    }
    let rendered = e.render().to_string();
    // clap's text is "error: <what>\n  <context>\n\nUsage: ...\n\nFor more information, ...":
    // keep what comes before the usage section, on one line.
    let what: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let what = what.join(" ");
    let what = what.strip_prefix("error: ").unwrap_or(&what);
    eprintln!("groupwal: {what} (see `{help}`)");
    ExitCode::from(exit::USAGE)
}

/// Parses a duration: a number with a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`), e.g. `200ms`,
/// `1.5s`, `100us`. A bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` needs a unit: ns, us, ms, s or m (e.g. 200ms)"))?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 200ms, 1.5s)"))?;
    let ns_per_unit = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}` (use ns, us, ms, s, m)"
            ))
        }
    };
    let ns = value * ns_per_unit;
    if !ns.is_finite() || ns > 1e18 {
        return Err(format!("`{s}` is too long"));
    }
    Ok(Duration::from_nanos(ns.round() as u64))
}

/// Parses an optional duration: `off` (or `none`) for no value, else as [`parse_duration`].
pub fn parse_optional_duration(s: &str) -> Result<Option<Duration>, String> {
    match s.trim() {
        "off" | "none" => Ok(None),
        other => parse_duration(other).map(Some),
    }
}

/// Parses a byte count: a number with an optional unit (`B`, `KiB`/`K`/`k`, `MiB`/`M`,
/// `GiB`/`G`; binary multiples), e.g. `4096`, `4KiB`, `1M`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a byte count (e.g. 4096, 4KiB, 1MiB)"))?;
    let multiple: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "K" | "k" | "KiB" | "KB" | "kB" => 1 << 10,
        "M" | "MiB" | "MB" => 1 << 20,
        "G" | "GiB" | "GB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}` (use B, KiB, MiB, GiB)"
            ))
        }
    };
    value
        .checked_mul(multiple)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// [`parse_bytes`] into a `usize`.
pub fn parse_bytes_usize(s: &str) -> Result<usize, String> {
    let v = parse_bytes(s)?;
    usize::try_from(v).map_err(|_| format!("`{s}` is too large"))
}

/// The segment files of `dir`, sorted by sequence number.
pub fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Failure> {
    let entries = std::fs::read_dir(dir).map_err(|e| Failure::io("list", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Failure::io("list", dir, e))?;
        if let Some(seq) = entry
            .file_name()
            .to_str()
            .and_then(groupwal::wal::parse_segment_file_name)
        {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Checks, without writing anything, that `dir` exists and holds a groupwal log: at least one
/// segment file, and (with `require_magic`) at least one that starts with the groupwal magic.
/// Returns the segment files. An unreadable segment file is an IO failure.
pub fn check_log_dir(dir: &Path, require_magic: bool) -> Result<Vec<(u64, PathBuf)>, Failure> {
    let meta = std::fs::metadata(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Failure::new(
            exit::NO_LOG,
            format!("{}: no such directory", dir.display()),
        ),
        _ => Failure::io("stat", dir, e),
    })?;
    if !meta.is_dir() {
        return Err(Failure::new(
            exit::NO_LOG,
            format!(
                "{} is not a directory (give the log's directory)",
                dir.display()
            ),
        ));
    }
    let segments = segment_files(dir)?;
    if segments.is_empty() {
        return Err(Failure::new(
            exit::NO_LOG,
            format!(
                "{} is not a groupwal log: it has no segment files (named like \
                 00000000000000000001.wal)",
                dir.display()
            ),
        ));
    }
    let mut any_magic = false;
    for (_, path) in &segments {
        let mut magic = [0u8; SEGMENT_MAGIC.len()];
        let mut file = std::fs::File::open(path).map_err(|e| Failure::io("open", path, e))?;
        let n = read_up_to(&mut file, &mut magic).map_err(|e| Failure::io("read", path, e))?;
        any_magic |= n == magic.len() && magic == SEGMENT_MAGIC;
    }
    if require_magic && !any_magic {
        return Err(Failure::new(
            exit::NO_LOG,
            format!(
                "{} is not a groupwal log: none of its {} segment file(s) starts with the \
                 groupwal magic (if it is a damaged log, `groupwal salvage --force` quarantines them)",
                dir.display(),
                segments.len()
            ),
        ));
    }
    Ok(segments)
}

/// Reads into `buf` until it is full or the file ends; returns the count read.
fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("100µs"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("200").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_optional_duration("off"), Ok(None));
    }

    #[test]
    fn byte_counts_parse_with_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("4KiB"), Ok(4096));
        assert_eq!(parse_bytes("1M"), Ok(1 << 20));
        assert!(parse_bytes("1.5M").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999999G").is_err());
    }

    #[test]
    fn segment_names_are_recognised() {
        use groupwal::wal::parse_segment_file_name as segment_seq_of;
        assert_eq!(segment_seq_of("00000000000000000007.wal"), Some(7));
        assert_eq!(segment_seq_of("7.wal"), None);
        assert_eq!(segment_seq_of("00000000000000000007.wal.tmp"), None);
    }
}
