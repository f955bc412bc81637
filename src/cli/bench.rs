//! `groupwal bench`: the disk's fdatasync ceiling, naive commits against group commit, a
//! durable batch against one naive write, and sweeps of the batching knobs, each point
//! measured for a fixed time.
//!
//! The naive baseline is what an application without group commit does: one `pwrite` and one
//! `fdatasync` per record, under a mutex, into a preallocated (zero-filled) file, so that it
//! is compared fairly with groupwal's preallocated segments. Group commit is a [`Wal`] in a
//! fresh directory with W threads calling [`Wal::append`]. The durable batch is one thread
//! calling [`Wal::append_many`], against the same naive writer writing the batch's bytes at
//! once.

use super::report::{
    self, Batch, BatchFigure, BenchConfig, BenchReport, Ceiling, CeilingFigure, Environment,
    Latency, Point,
};
use super::{exit, plot, sys, Failure, Outcome};
use clap::{Args, ValueEnum};
use groupwal::format::frame_len;
use groupwal::stats::Histogram;
use groupwal::{Durability, Record, Wal, WalOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One-line description of the verb (`groupwal --help`).
pub const ABOUT: &str =
    "Measure the disk's fdatasync ceiling, naive commits against group commit, a durable \
             batch, and sweeps of the batching knobs";

/// The verb's full description (`groupwal bench --help`).
pub const LONG_ABOUT: &str = "Measure, on the disk that holds --dir:\n  \
1. the disk's ceiling with one thread and no groupwal: 4 KiB append + fdatasync per second, \
4 KiB overwrite + fdatasync per second on already-written blocks, and sequential MB/s with \
1 MiB writes + fdatasync (the figures of pg_test_fsync and fio);\n  \
2. naive commits (one pwrite + fdatasync per record under a mutex, into a preallocated file) \
against groupwal's group commit, for each --writers count: commits/s, MB/s, p50/p99/p999 \
latency, fdatasyncs/s, records per group, CPU per commit, speedup over naive and share of the \
bandwidth ceiling;\n  \
3. a durable batch of --batch-records records of --batch-record-bytes, Sync, one thread: \
one write of its bytes + fdatasync into a preallocated file (naive) against Wal::append_many \
(groupwal, its log truncated every 64 batches to one segment's worth, as a checkpointing \
application keeps it): batches/s, MB/s, p50/p99 latency, groups and fdatasyncs per batch, and \
groupwal's ratio to naive;\n  \
4. group commit at --sweep-writers with one batching knob changed at a time (--commit-delay, \
--group-bytes-max, --lock-hold-max), so you can pick the best setting for your own disk.\n\n\
Each point runs for --duration after a warm-up of a tenth of it; naive and group commit at one \
writer count, and the two sides of the batch, alternate in --rounds slices, so that noise from \
other work hits both alike. The default run takes about a \
minute. Tables go to stdout, progress to stderr. Ctrl-C stops the run and removes its scratch \
directory. MB is 10^6 bytes; latencies are upper bounds \
within 12.5% (groupwal's histogram).";

/// Example and exit status, after the options of `groupwal bench --help`.
pub fn after_help() -> String {
    format!(
        "Example:\n  groupwal bench --dir /mnt/nvme --writers 1,8,64 --record-bytes 4KiB \
         --duration 1s --json bench.json --plot bench.svg\n\n{}",
        super::EXIT_STATUS_HELP
    )
}

/// Arguments of `groupwal bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Directory on the disk to measure. A temporary subdirectory is made in it and removed
    /// afterwards. Default: the current directory. Warns when it is on tmpfs or another file
    /// system that does not persist to a disk.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Writer thread counts to compare naive and group commit at (comma separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4,8,16,32,64",
        value_parser = clap::value_parser!(u64).range(1..=4096),
        value_name = "N,..."
    )]
    pub writers: Vec<u64>,

    /// Payload bytes per record (B, KiB, MiB suffixes allowed).
    #[arg(long, default_value = "512", value_parser = super::parse_bytes_usize, value_name = "BYTES")]
    pub record_bytes: usize,

    /// What must survive before each append returns: sync (fdatasync), flush (written to the
    /// OS) or buffer (queued in memory). The naive baseline syncs only for `sync`.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Sync)]
    pub durability: DurabilityArg,

    /// Measured time per point (e.g. 2s, 200ms). Each point is preceded by a warm-up of a
    /// tenth of it.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration, value_name = "TIME")]
    pub duration: Duration,

    /// Naive and group commit (and the two sides of the durable batch) are measured in this
    /// many alternating slices of --duration / N each (naive, group commit, naive, ...), so
    /// that noise from other work on the machine or from the disk's own housekeeping hits both
    /// alike.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=100), value_name = "N")]
    pub rounds: u64,

    /// Writer threads of the knob sweeps.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096), value_name = "N")]
    pub sweep_writers: u64,

    /// Values of commit_delay to sweep: `off` or a duration up to 100ms (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "off,100us,1ms", value_parser = super::parse_optional_duration, value_name = "TIME,...")]
    pub commit_delay: Vec<Option<Duration>>,

    /// commit_siblings used with a commit delay: the delay applies only when at least this
    /// many writers are active.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub commit_siblings: usize,

    /// Values of group_bytes_max to sweep (4KiB to 1GiB, comma separated).
    #[arg(long, value_delimiter = ',', default_value = "64KiB,1MiB", value_parser = super::parse_bytes_usize, value_name = "BYTES,...")]
    pub group_bytes_max: Vec<usize>,

    /// Values of lock_hold_max to sweep (100us to 10s, comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1ms,10ms", value_parser = super::parse_duration, value_name = "TIME,...")]
    pub lock_hold_max: Vec<Duration>,

    /// Skip the knob sweeps.
    #[arg(long)]
    pub no_sweeps: bool,

    /// Records per durable batch: one thread commits batches of this many records, `Sync`
    /// whatever --durability says, through `append_many`, against one naive write + fdatasync
    /// of the same bytes. 0 skips the step.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000), value_name = "N")]
    pub batch_records: u64,

    /// Payload bytes of each record of the durable batch (B, KiB, MiB suffixes allowed). The
    /// whole batch must fit in --segment-bytes.
    #[arg(long, default_value = "1KiB", value_parser = super::parse_bytes_usize, value_name = "BYTES")]
    pub batch_record_bytes: usize,

    /// Segment size of the log; also the size of the preallocated files of the naive baseline
    /// and the overwrite ceilings.
    #[arg(long, default_value = "64MiB", value_parser = super::parse_bytes, value_name = "BYTES")]
    pub segment_bytes: u64,

    /// Write every measured figure to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write every measured figure to FILE as CSV (one row per ceiling figure, per point and
    /// per side of the durable batch).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Draw throughput against writers (naive, group commit, the ceiling) and latency
    /// percentiles into FILE as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// `--durability`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum DurabilityArg {
    /// fdatasync before each append returns.
    Sync,
    /// Written to the operating system before each append returns.
    Flush,
    /// Queued in memory; written with the next group or the background sync.
    Buffer,
}

impl DurabilityArg {
    fn durability(self) -> Durability {
        match self {
            DurabilityArg::Sync => Durability::Sync,
            DurabilityArg::Flush => Durability::Flush,
            DurabilityArg::Buffer => Durability::Buffer,
        }
    }

    fn name(self) -> &'static str {
        match self {
            DurabilityArg::Sync => "sync",
            DurabilityArg::Flush => "flush",
            DurabilityArg::Buffer => "buffer",
        }
    }
}

/// Size of each write of the 4 KiB ceilings.
const SMALL_WRITE_BYTES: usize = 4096;
/// Size of each write of the sequential ceiling.
const LARGE_WRITE_BYTES: usize = 1 << 20;
/// Bytes of zeros written at a time when preallocating.
const ZERO_CHUNK_BYTES: usize = 1 << 20;
/// The smallest `group_bytes_max` a log accepts.
const GROUP_BYTES_MIN: usize = 4096;
/// The durable batch's log truncates its old records every this many batches.
const BATCHES_PER_TRUNCATION: u64 = 64;

/// Runs `groupwal bench`.
pub fn run(args: BenchArgs) -> Outcome {
    let started = Instant::now();
    let options = check_args(&args)?;
    let batch_options = batch_options(&args, &options)?;
    sys::catch_interrupts();
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()
            .map_err(|e| Failure::io("find current directory", Path::new("."), e))?,
    };
    let meta = std::fs::metadata(&base).map_err(|e| Failure::io("stat", &base, e))?;
    if !meta.is_dir() {
        return Err(Failure::new(
            exit::NO_LOG,
            format!("{} is not a directory", base.display()),
        ));
    }
    let filesystem = sys::filesystem_type(&base);
    let persistent = match filesystem.as_deref().and_then(sys::non_persistent_reason) {
        Some(reason) => {
            eprintln!(
                "groupwal: warning: {} is on {}: {reason}; the figures will not describe a disk. \
                 Use --dir to measure a directory on the disk you care about.",
                base.display(),
                filesystem.as_deref().unwrap_or("?")
            );
            false
        }
        None => true,
    };
    let scratch = Scratch::new(&base)?;
    check_knobs(&args, &options)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let writers: Vec<usize> = args.writers.iter().map(|&w| w as usize).collect();
    let sweep_writers = args.sweep_writers as usize;

    let sweeps = if args.no_sweeps {
        Vec::new()
    } else {
        sweep_plan(&args, &options)
    };
    let steps = 3 + writers.len() + usize::from(batch_options.is_some()) + sweeps.len();
    let mut progress = Progress::new(steps);
    let env = Environment {
        dir: base.display().to_string(),
        filesystem: filesystem.clone(),
        persistent,
        cpus,
        load_average_1m: sys::load_average_1m(),
    };
    if let Some(load) = env.load_average_1m.filter(|&l| l > cpus as f64) {
        eprintln!(
            "groupwal: warning: the machine is busy (load average {load:.2} on {cpus} CPUs): \
             other work competes for the CPU and the disk, and the figures will be noisy"
        );
    }
    println!(
        "groupwal bench: {} ({}), {cpus} CPUs, load average {}; records of {} bytes, durability \
         {}; {} per point after a {} warm-up\n",
        env.dir,
        filesystem.as_deref().unwrap_or("unknown file system"),
        env.load_average_1m
            .map_or_else(|| "unknown".to_string(), |l| format!("{l:.2}")),
        args.record_bytes,
        args.durability.name(),
        fmt_duration(args.duration),
        fmt_duration(warmup(args.duration)),
    );

    let ceiling = measure_ceiling(&args, &scratch, &mut progress)?;
    println!("{}", report::ceiling_table(&ceiling));

    let payload = payload(args.record_bytes);
    let durability = args.durability.durability();
    let append_one = |wal: &Wal| {
        wal.append(Record::new(&payload).durability(durability))
            .map(drop)
            .map_err(Failure::from)
    };
    let rounds = Rounds::new(&args);
    let mut comparison = Vec::new();
    let mut naive_rate = std::collections::HashMap::new();
    for &w in &writers {
        let what = format!("naive and group commit, {}", plural(w, "writer"));
        let bar = progress.start(&what, rounds.total());
        let mut naive = Naive::create(
            &scratch,
            args.segment_bytes,
            args.durability == DurabilityArg::Sync,
        )?;
        let mut group = Group::open(&scratch, options.clone())?;
        rounds.run(
            bar.as_ref(),
            |slice, ticker| naive.run(w, &payload, slice, ticker),
            |slice, ticker| group.run(w, slice, ticker, append_one),
        )?;
        let naive = naive.finish(w, payload.len(), &ceiling);
        let mut group = group.finish(w, (None, None), payload.len(), &ceiling)?;
        group.speedup_over_naive = speedup(group.commits_per_s, naive.commits_per_s);
        naive_rate.insert(w, naive.commits_per_s);
        progress.finish(
            bar,
            &what,
            &format!(
                "naive {} commits/s (p99 {}), group commit {} commits/s (p99 {}, {:.1} rec/group)",
                report::fmt_rate(naive.commits_per_s),
                report::fmt_us(naive.latency.latency_us_p99),
                report::fmt_rate(group.commits_per_s),
                report::fmt_us(group.latency.latency_us_p99),
                group.records_per_group
            ),
        );
        comparison.push(naive);
        comparison.push(group);
    }
    println!("{}", report::points_table(&comparison, false));

    let batch = match batch_options {
        Some(opts) => {
            let b = measure_batch(&args, opts, &scratch, &mut progress, rounds)?;
            println!(
                "durable batch: {} records of {} bytes ({:.2} MB) per batch, sync, 1 thread",
                report::fmt_rate(b.records as f64),
                b.record_bytes,
                b.batch_bytes as f64 / 1e6
            );
            println!("{}", report::batch_table(&b));
            Some(b)
        }
        None => None,
    };

    let mut swept = Vec::new();
    for (knob, value, opts) in sweeps {
        let what = format!(
            "group commit, {}, {knob} = {value}",
            plural(sweep_writers, "writer")
        );
        let bar = progress.start(&what, args.duration + warmup(args.duration));
        let mut group = Group::open(&scratch, opts)?;
        group.run(
            sweep_writers,
            args.duration,
            Ticker::new(bar.as_ref(), Duration::ZERO),
            append_one,
        )?;
        let mut p = group.finish(
            sweep_writers,
            (Some(knob), Some(value)),
            payload.len(),
            &ceiling,
        )?;
        p.speedup_over_naive = naive_rate
            .get(&sweep_writers)
            .and_then(|&n| speedup(p.commits_per_s, n));
        progress.finish(bar, &what, &point_summary(&p));
        swept.push(p);
    }
    if !swept.is_empty() {
        println!(
            "knob sweeps: group commit, {}, one knob changed from its default",
            plural(sweep_writers, "writer")
        );
        println!("{}", report::points_table(&swept, true));
    }
    drop(scratch);

    let report = BenchReport {
        groupwal_version: env!("CARGO_PKG_VERSION"),
        environment: env,
        config: BenchConfig {
            duration_ms: args.duration.as_secs_f64() * 1e3,
            rounds: rounds.count,
            warmup_ms: warmup(args.duration).as_secs_f64() * 1e3,
            record_bytes: args.record_bytes,
            durability: args.durability.name().into(),
            writers,
            sweep_writers,
            commit_delay: args.commit_delay.iter().map(|d| fmt_delay(*d)).collect(),
            commit_siblings: args.commit_siblings,
            group_bytes_max: args.group_bytes_max.clone(),
            lock_hold_max_us: args
                .lock_hold_max
                .iter()
                .map(|d| d.as_secs_f64() * 1e6)
                .collect(),
            segment_bytes: args.segment_bytes,
            batch_records: args.batch_records as usize,
            batch_record_bytes: args.batch_record_bytes,
        },
        ceiling,
        comparison,
        batch,
        sweeps: swept,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    write_outputs(&args, &report)?;
    Ok(exit::OK)
}

/// Checks the arguments, and the options they make, before anything is measured.
fn check_args(args: &BenchArgs) -> Result<WalOptions, Failure> {
    let usage = |m: String| Err(Failure::new(exit::USAGE, m));
    if args.duration < Duration::from_millis(10) {
        return usage(format!(
            "--duration {:?} is too short to measure anything; use at least 10ms",
            args.duration
        ));
    }
    if args.duration / (args.rounds as u32) < Duration::from_millis(10) {
        return usage(format!(
            "--duration {:?} split into --rounds {} leaves slices under 10ms; use fewer rounds",
            args.duration, args.rounds
        ));
    }
    if args.record_bytes == 0 {
        return usage("--record-bytes must be at least 1".into());
    }
    if args.segment_bytes < LARGE_WRITE_BYTES as u64 {
        return usage(format!(
            "--segment-bytes {} is below 1MiB (the sequential ceiling writes 1 MiB at a time)",
            args.segment_bytes
        ));
    }
    if args.record_bytes as u64 > args.segment_bytes / 4 {
        return usage(format!(
            "--record-bytes {} is above a quarter of --segment-bytes {}",
            args.record_bytes, args.segment_bytes
        ));
    }
    let options = WalOptions::default()
        .segment_bytes(args.segment_bytes)
        .record_bytes_max(args.record_bytes)
        .commit_siblings(args.commit_siblings);
    Ok(options)
}

/// The options of the durable batch's log, or `None` when the step is skipped: the run's
/// options with `record_bytes_max` the batch's record size and `group_bytes_max` its frame
/// bytes, so that bound does not split a batch. Checks that the batch fits the log's limits
/// and the naive writer's file (`--segment-bytes`).
fn batch_options(args: &BenchArgs, options: &WalOptions) -> Result<Option<WalOptions>, Failure> {
    let (records, record_bytes) = (args.batch_records, args.batch_record_bytes);
    if records == 0 {
        return Ok(None);
    }
    let usage = |m: String| Err(Failure::new(exit::USAGE, m));
    if record_bytes == 0 {
        return usage("--batch-record-bytes must be at least 1".into());
    }
    let what = format!("--batch-records {records} of --batch-record-bytes {record_bytes}");
    let batch_bytes = records.saturating_mul(record_bytes as u64);
    if batch_bytes > args.segment_bytes {
        return usage(format!(
            "{what} make a batch of {batch_bytes} bytes, above --segment-bytes {} (the naive \
             writer's file holds one batch)",
            args.segment_bytes
        ));
    }
    let frame_bytes = records as usize * frame_len(record_bytes, false);
    let opts = options
        .clone()
        .record_bytes_max(record_bytes)
        .group_bytes_max(frame_bytes.max(GROUP_BYTES_MIN));
    opts.validate().map_err(|e| match e {
        groupwal::Error::InvalidOptions { name, reason } => Failure::new(
            exit::USAGE,
            format!("{what} do not fit the log's limits: {name} {reason}"),
        ),
        other => Failure::from(other),
    })?;
    Ok(Some(opts))
}

/// Rejects out-of-range knobs before anything is measured rather than after a minute of
/// measuring, with the library's own checks.
fn check_knobs(args: &BenchArgs, options: &WalOptions) -> Result<(), Failure> {
    let mut combos = vec![options.clone()];
    combos.extend(
        args.commit_delay
            .iter()
            .map(|&d| options.clone().commit_delay(d)),
    );
    combos.extend(
        args.group_bytes_max
            .iter()
            .map(|&b| options.clone().group_bytes_max(b)),
    );
    combos.extend(
        args.lock_hold_max
            .iter()
            .map(|&d| options.clone().lock_hold_max(d)),
    );
    for o in combos {
        o.validate().map_err(|e| match e {
            groupwal::Error::InvalidOptions { name, reason } => Failure::new(
                exit::USAGE,
                format!("--{}: {reason}", name.replace('_', "-")),
            ),
            other => Failure::from(other),
        })?;
    }
    Ok(())
}

/// The sweep points: (knob, value shown, options).
fn sweep_plan(args: &BenchArgs, options: &WalOptions) -> Vec<(&'static str, String, WalOptions)> {
    let mut plan = Vec::new();
    for &d in &args.commit_delay {
        plan.push((
            "commit_delay",
            fmt_delay(d),
            options.clone().commit_delay(d),
        ));
    }
    for &b in &args.group_bytes_max {
        plan.push((
            "group_bytes_max",
            fmt_bytes(b as u64),
            options.clone().group_bytes_max(b),
        ));
    }
    for &d in &args.lock_hold_max {
        plan.push((
            "lock_hold_max",
            fmt_duration(d),
            options.clone().lock_hold_max(d),
        ));
    }
    plan
}

fn fmt_delay(d: Option<Duration>) -> String {
    d.map_or_else(|| "off".into(), fmt_duration)
}

/// A knob's duration as given: `100µs`, `1ms`, `1.5s`.
fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0".into()
    } else if ns % 1_000_000_000 == 0 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns % 1_000_000 == 0 {
        format!("{}ms", ns / 1_000_000)
    } else if ns % 1_000 == 0 {
        format!("{}µs", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn fmt_bytes(b: u64) -> String {
    if b >= 1 << 20 && b % (1 << 20) == 0 {
        format!("{}MiB", b >> 20)
    } else if b >= 1 << 10 && b % (1 << 10) == 0 {
        format!("{}KiB", b >> 10)
    } else {
        format!("{b}B")
    }
}

fn warmup(duration: Duration) -> Duration {
    duration / 10
}

fn speedup(rate: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0).then(|| rate / baseline)
}

fn payload(len: usize) -> Vec<u8> {
    // Not compressible and not zero: like real records, and never mistaken for end of log.
    let mut rng = fastrand::Rng::with_seed(0x6772_6f75_7077_616c);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// The temporary directory of a run, removed when dropped (also on error).
struct Scratch {
    path: PathBuf,
    next: AtomicU64,
}

impl Scratch {
    fn new(base: &Path) -> Result<Scratch, Failure> {
        let path = base.join(format!(
            ".groupwal-bench-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir(&path)
            .map_err(|e| Failure::io("create scratch directory", &path, e))?;
        Ok(Scratch {
            path,
            next: AtomicU64::new(0),
        })
    }

    /// A fresh path inside the scratch directory.
    fn fresh(&self, what: &str) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.path.join(format!("{n:03}-{what}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!(
                "groupwal: warning: could not remove {}: {e}",
                self.path.display()
            );
        }
    }
}

/// A progress bar per step on a terminal, plain lines otherwise (both on stderr).
struct Progress {
    steps: usize,
    step: usize,
    terminal: bool,
}

impl Progress {
    fn new(steps: usize) -> Progress {
        Progress {
            steps,
            step: 0,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Starts a step expected to take `total`; the returned bar is ticked by [`timed_run`].
    fn start(&mut self, what: &str, total: Duration) -> Option<ProgressBar> {
        self.step += 1;
        let prefix = format!("[{:>2}/{}]", self.step, self.steps);
        if !self.terminal {
            eprintln!("{prefix} {what} ...");
            return None;
        }
        let bar = ProgressBar::new((total.as_millis() as u64).max(1));
        let style = ProgressStyle::with_template("{prefix} {msg:<48} [{bar:30}] {elapsed:>3}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(prefix);
        bar.set_message(what.to_string());
        Some(bar)
    }

    fn finish(&self, bar: Option<ProgressBar>, what: &str, result: &str) {
        match bar {
            Some(bar) => {
                if let Ok(style) = ProgressStyle::with_template("{prefix} {msg}") {
                    bar.set_style(style);
                }
                bar.finish_with_message(format!("{what}: {result}"));
            }
            None => eprintln!("[{:>2}/{}] {what}: {result}", self.step, self.steps),
        }
    }
}

/// What one timed run counted in its measured window (its latencies go to the histogram the
/// caller passed).
struct Slice {
    ops: u64,
    seconds: f64,
    cpu: Duration,
}

/// What the slices of one point add up to.
#[derive(Default)]
struct Tally {
    histogram: Histogram,
    ops: u64,
    seconds: f64,
    cpu: Duration,
    syncs: u64,
    groups: u64,
    records: u64,
}

impl Tally {
    fn add(&mut self, slice: &Slice) {
        self.ops += slice.ops;
        self.seconds += slice.seconds;
        self.cpu += slice.cpu;
    }
}

/// Moves a step's progress bar (if any) during one of its slices, which starts `base` into
/// the step.
#[derive(Clone, Copy)]
struct Ticker<'a> {
    bar: Option<&'a ProgressBar>,
    base: Duration,
}

impl<'a> Ticker<'a> {
    fn new(bar: Option<&'a ProgressBar>, base: Duration) -> Ticker<'a> {
        Ticker { bar, base }
    }

    fn at(&self, elapsed: Duration) {
        if let Some(bar) = self.bar {
            bar.set_position((self.base + elapsed).as_millis() as u64);
        }
    }
}

/// The alternating slices in which naive and groupwal are measured at one point: `--rounds`
/// of each, naive first, each a `--duration / --rounds` slice after its own warm-up.
#[derive(Clone, Copy)]
struct Rounds {
    count: usize,
    slice: Duration,
}

impl Rounds {
    fn new(args: &BenchArgs) -> Rounds {
        let count = args.rounds as usize;
        Rounds {
            count,
            slice: args.duration / count as u32,
        }
    }

    /// One slice with its warm-up.
    fn per_slice(&self) -> Duration {
        self.slice + warmup(self.slice)
    }

    /// The time of the whole step, for its progress bar.
    fn total(&self) -> Duration {
        self.per_slice() * (2 * self.count) as u32
    }

    /// Runs `naive` and `group` (each given its slice's length and ticker) in turn, `count`
    /// times each.
    fn run(
        &self,
        bar: Option<&ProgressBar>,
        mut naive: impl FnMut(Duration, Ticker<'_>) -> Result<(), Failure>,
        mut group: impl FnMut(Duration, Ticker<'_>) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let per_slice = self.per_slice();
        for round in 0..self.count {
            let base = per_slice * (2 * round) as u32;
            naive(self.slice, Ticker::new(bar, base))?;
            group(self.slice, Ticker::new(bar, base + per_slice))?;
        }
        Ok(())
    }
}

/// How long a window may stay open past its planned end while waiting for its first
/// operation to finish: past this the disk is taken to be stuck.
const WINDOW_OVERTIME_MAX: Duration = Duration::from_secs(60);

/// Runs `threads` copies of `op` for a warm-up and then `duration`; counts the operations
/// that start and end inside the measured window, and records their latency into
/// `histogram`. The window stays open
/// past `duration` until at least one operation has been counted (on a slow or busy disk one
/// write + fdatasync can outlast a short window), and its real length is returned.
/// `at_window(open)` is called by the timing thread when the window opens (`true`) and closes
/// (`false`), so callers can snapshot their own counters at the same instants. The first error
/// of any thread stops the run and is returned.
fn timed_run<F>(
    threads: usize,
    duration: Duration,
    ticker: Ticker<'_>,
    histogram: &Histogram,
    op: F,
    mut at_window: impl FnMut(bool),
) -> Result<Slice, Failure>
where
    F: Fn() -> Result<(), Failure> + Sync,
{
    let stop = AtomicBool::new(false);
    let opened = AtomicBool::new(false);
    let closed = AtomicBool::new(false);
    let counted = AtomicU64::new(0);
    let first_error: Mutex<Option<Failure>> = Mutex::new(None);
    let fail = |e: Failure| {
        first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    };
    let begin = Instant::now();
    let window_start = begin + warmup(duration);
    let window_end = window_start + duration;
    let mut cpu = Duration::ZERO;
    let mut seconds = duration.as_secs_f64();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    // Read before the operation starts: it counts only if the window (and
                    // the callers' counter snapshots) opened before it began.
                    let in_window = opened.load(Ordering::Acquire);
                    let t0 = Instant::now();
                    if let Err(e) = op() {
                        fail(e);
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    let t1 = Instant::now();
                    if in_window && !closed.load(Ordering::Acquire) {
                        histogram.record((t1 - t0).as_nanos() as u64);
                        counted.fetch_add(1, Ordering::Release);
                    }
                }
            });
        }
        // The timing thread: open the window, close it, stop the workers. Snapshots are taken
        // before the window opens and after it closes, so they cover every counted operation.
        let mut is_open = false;
        let mut opened_at = window_start;
        let mut cpu_start = Duration::ZERO;
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if sys::interrupted() {
                fail(Failure::new(exit::INTERRUPTED, "interrupted"));
                break;
            }
            if !is_open && now >= window_start {
                is_open = true;
                at_window(true);
                cpu_start = sys::process_cpu_time();
                opened_at = Instant::now();
                opened.store(true, Ordering::Release);
            }
            if now >= window_end && counted.load(Ordering::Acquire) > 0 {
                closed.store(true, Ordering::Release);
                seconds = opened_at.elapsed().as_secs_f64();
                cpu = sys::process_cpu_time().saturating_sub(cpu_start);
                at_window(false);
                break;
            }
            if now >= window_end + WINDOW_OVERTIME_MAX {
                fail(Failure::new(
                    exit::IO,
                    format!(
                        "no write + fdatasync finished within {:?}: is the disk stuck?",
                        now - window_start
                    ),
                ));
                break;
            }
            ticker.at(now - begin);
            let next = if is_open { window_end } else { window_start };
            let nap = next.saturating_duration_since(now);
            std::thread::sleep(nap.clamp(Duration::from_millis(1), Duration::from_millis(100)));
        }
        stop.store(true, Ordering::Relaxed);
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(Slice {
        ops: counted.into_inner(),
        seconds,
        cpu,
    })
}

/// Creates `path` and writes `len` bytes of zeros into it, synced: already-written blocks,
/// as in groupwal's zero-filled segments.
fn zero_filled_file(path: &Path, len: u64) -> Result<File, Failure> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Failure::io("create", path, e))?;
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros[..n], offset)
            .map_err(|e| Failure::io("preallocate", path, e))?;
        offset += n as u64;
    }
    file.sync_all().map_err(|e| Failure::io("sync", path, e))?;
    Ok(file)
}

/// One write of `buf` at `offset`, then an `fdatasync`: a step of the disk ceiling.
fn write_synced(
    file: &File,
    buf: &[u8],
    offset: u64,
    what: &str,
    path: &Path,
) -> Result<(), Failure> {
    file.write_all_at(buf, offset)
        .and_then(|()| file.sync_data())
        .map_err(|e| Failure::io(what, path, e))
}

fn measure_ceiling(
    args: &BenchArgs,
    scratch: &Scratch,
    progress: &mut Progress,
) -> Result<Ceiling, Failure> {
    let small = vec![0xa5u8; SMALL_WRITE_BYTES];
    let large = vec![0x5au8; LARGE_WRITE_BYTES];
    let region = args.segment_bytes;

    // 4 KiB appends: the file grows, so each fdatasync also commits its new size.
    let path = scratch.fresh("append");
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Failure::io("create", &path, e))?;
    file.sync_all().map_err(|e| Failure::io("sync", &path, e))?;
    let end = AtomicU64::new(0);
    let append = ceiling_step(
        args,
        progress,
        "ceiling: 4 KiB append + fdatasync",
        &small,
        || {
            let offset = end.fetch_add(SMALL_WRITE_BYTES as u64, Ordering::Relaxed);
            write_synced(&file, &small, offset, "append + fdatasync", &path)
        },
    )?;
    drop(file);
    let _ = std::fs::remove_file(&path);

    // 4 KiB overwrites of already-written blocks: pure data writes.
    let path = scratch.fresh("overwrite");
    let file = zero_filled_file(&path, region)?;
    let next = AtomicU64::new(0);
    let overwrite = ceiling_step(
        args,
        progress,
        "ceiling: 4 KiB overwrite + fdatasync",
        &small,
        || {
            let offset = wrap(&next, SMALL_WRITE_BYTES as u64, region);
            write_synced(&file, &small, offset, "overwrite + fdatasync", &path)
        },
    )?;

    // 1 MiB sequential writes over the same already-written blocks.
    let next = AtomicU64::new(0);
    let sequential = ceiling_step(
        args,
        progress,
        "ceiling: 1 MiB sequential + fdatasync",
        &large,
        || {
            let offset = wrap(&next, LARGE_WRITE_BYTES as u64, region);
            write_synced(&file, &large, offset, "sequential write + fdatasync", &path)
        },
    )?;
    drop(file);
    let _ = std::fs::remove_file(&path);

    Ok(Ceiling {
        append_4k_fdatasync: append,
        overwrite_4k_fdatasync: overwrite,
        sequential_1m_fdatasync: sequential,
    })
}

/// One single-threaded ceiling measurement of `op` (a write of `buf` plus `fdatasync`) for
/// `--duration`, with its progress bar.
fn ceiling_step(
    args: &BenchArgs,
    progress: &mut Progress,
    what: &str,
    buf: &[u8],
    op: impl Fn() -> Result<(), Failure> + Sync,
) -> Result<CeilingFigure, Failure> {
    let bar = progress.start(what, args.duration + warmup(args.duration));
    let mut tally = Tally::default();
    let slice = timed_run(
        1,
        args.duration,
        Ticker::new(bar.as_ref(), Duration::ZERO),
        &tally.histogram,
        op,
        |_| {},
    )?;
    tally.add(&slice);
    let figure = ceiling_figure(&tally, buf.len());
    progress.finish(bar, what, &ceiling_summary(&figure));
    Ok(figure)
}

/// The next offset of `step` bytes in a region of `len` bytes, wrapping to its start.
fn wrap(next: &AtomicU64, step: u64, len: u64) -> u64 {
    let slots = (len / step).max(1);
    (next.fetch_add(1, Ordering::Relaxed) % slots) * step
}

fn ceiling_figure(t: &Tally, write_bytes: usize) -> CeilingFigure {
    let ops_per_s = t.ops as f64 / t.seconds;
    CeilingFigure {
        write_bytes,
        ops: t.ops,
        seconds: t.seconds,
        ops_per_s,
        mb_per_s: ops_per_s * write_bytes as f64 / 1e6,
        latency: Latency::from_ns(&t.histogram.snapshot()),
    }
}

/// The durable batch, one thread, in alternating slices: naive (the batch's payloads as one
/// write + `fdatasync` into a zero-filled file of `--segment-bytes`, wrapping around) against
/// `append_many` of its records, `Sync`, on a log with `options`. Every
/// [`BATCHES_PER_TRUNCATION`] batches the log drops the records older than one segment's
/// worth, as an application that checkpoints does, so it stays bounded and in its steady
/// state; that call's time is counted in the batch that makes it.
fn measure_batch(
    args: &BenchArgs,
    options: WalOptions,
    scratch: &Scratch,
    progress: &mut Progress,
    rounds: Rounds,
) -> Result<Batch, Failure> {
    let records = args.batch_records as usize;
    let record_bytes = args.batch_record_bytes;
    let bytes = payload(records * record_bytes);
    let batch: Vec<Record<'_>> = bytes
        .chunks(record_bytes)
        .map(|p| Record::new(p).durability(Durability::Sync))
        .collect();
    // Records of one segment's worth: the log keeps at least these.
    let keep = args.segment_bytes / frame_len(record_bytes, false) as u64;
    let appended = AtomicU64::new(0);
    let append_batch = |wal: &Wal| {
        let mut last = 0;
        for receipt in wal.append_many(&batch) {
            last = receipt?.lsn;
        }
        if appended.fetch_add(1, Ordering::Relaxed) % BATCHES_PER_TRUNCATION
            == BATCHES_PER_TRUNCATION - 1
        {
            wal.truncate_before(last.saturating_sub(keep))?;
        }
        Ok(())
    };

    let what = format!(
        "durable batch, {} x {}",
        report::fmt_rate(records as f64),
        fmt_bytes(record_bytes as u64)
    );
    let bar = progress.start(&what, rounds.total());
    let mut naive = Naive::create(scratch, args.segment_bytes, true)?;
    let mut group = Group::open(scratch, options)?;
    rounds.run(
        bar.as_ref(),
        |slice, ticker| naive.run(1, &bytes, slice, ticker),
        |slice, ticker| group.run(1, slice, ticker, append_batch),
    )?;
    let naive = batch_figure(&naive.close(), bytes.len());
    let groupwal = batch_figure(&group.close()?, bytes.len());
    let b = Batch {
        records,
        record_bytes,
        batch_bytes: bytes.len() as u64,
        ratio_to_naive: speedup(groupwal.batches_per_s, naive.batches_per_s),
        naive,
        groupwal,
    };
    progress.finish(
        bar,
        &what,
        &format!(
            "naive {:.1} MB/s (p99 {}), groupwal {:.1} MB/s (p99 {}), {} naive",
            b.naive.mb_per_s,
            report::fmt_us(b.naive.latency.latency_us_p99),
            b.groupwal.mb_per_s,
            report::fmt_us(b.groupwal.latency.latency_us_p99),
            report::fmt_ratio(b.ratio_to_naive, 2)
        ),
    );
    Ok(b)
}

/// One side of the durable batch from what its slices counted: each operation is a batch of
/// `batch_bytes` payload bytes.
fn batch_figure(t: &Tally, batch_bytes: usize) -> BatchFigure {
    let batches_per_s = t.ops as f64 / t.seconds;
    let per_batch = |n: u64| n as f64 / t.ops as f64;
    BatchFigure {
        batches: t.ops,
        seconds: t.seconds,
        batches_per_s,
        mb_per_s: batches_per_s * batch_bytes as f64 / 1e6,
        latency: Latency::from_ns(&t.histogram.snapshot()),
        groups_per_batch: per_batch(t.groups),
        fdatasyncs_per_batch: per_batch(t.syncs),
    }
}

fn ceiling_summary(f: &CeilingFigure) -> String {
    format!(
        "{} ops/s, {:.1} MB/s, p99 {}",
        report::fmt_rate(f.ops_per_s),
        f.mb_per_s,
        report::fmt_us(f.latency.latency_us_p99)
    )
}

fn point_summary(p: &Point) -> String {
    format!(
        "{} commits/s, p99 {}, {:.1} rec/group",
        report::fmt_rate(p.commits_per_s),
        report::fmt_us(p.latency.latency_us_p99),
        p.records_per_group
    )
}

fn point(
    mode: &'static str,
    sweep: (Option<&'static str>, Option<String>),
    writers: usize,
    t: &Tally,
    record_bytes: usize,
    ceiling: &Ceiling,
) -> Point {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let commits_per_s = ratio(t.ops as f64, t.seconds);
    let mb_per_s = commits_per_s * record_bytes as f64 / 1e6;
    let fdatasyncs_per_s = ratio(t.syncs as f64, t.seconds);
    Point {
        mode,
        knob: sweep.0,
        knob_value: sweep.1,
        writers,
        commits: t.ops,
        seconds: t.seconds,
        commits_per_s,
        mb_per_s,
        latency: Latency::from_ns(&t.histogram.snapshot()),
        fdatasyncs_per_s,
        records_per_group: ratio(t.records as f64, t.groups as f64),
        cpu_us_per_commit: ratio(t.cpu.as_secs_f64() * 1e6, t.ops as f64),
        speedup_over_naive: None,
        ceiling_share: ratio(mb_per_s, ceiling.sequential_1m_fdatasync.mb_per_s),
        sync_share: ratio(fdatasyncs_per_s, ceiling.overwrite_4k_fdatasync.ops_per_s),
    }
}

/// The naive baseline: one `pwrite` + one `fdatasync` per record under a mutex, into a
/// preallocated (zero-filled) file, as an application without group commit does. The file
/// stays open across the slices of a point.
struct Naive {
    path: PathBuf,
    file: File,
    /// The mutex that serialises each write + sync; it guards the next offset.
    next: Mutex<u64>,
    region: u64,
    sync: bool,
    tally: Tally,
}

impl Naive {
    /// A naive writer over a fresh zero-filled file of `region` bytes; `sync`: whether each
    /// write is followed by `fdatasync`.
    fn create(scratch: &Scratch, region: u64, sync: bool) -> Result<Naive, Failure> {
        let path = scratch.fresh("naive");
        let file = zero_filled_file(&path, region)?;
        Ok(Naive {
            path,
            file,
            next: Mutex::new(0),
            region,
            sync,
            tally: Tally::default(),
        })
    }

    /// Measures one slice with `writers` threads.
    fn run(
        &mut self,
        writers: usize,
        payload: &[u8],
        duration: Duration,
        ticker: Ticker<'_>,
    ) -> Result<(), Failure> {
        let Naive {
            path,
            file,
            next,
            region,
            sync,
            tally,
        } = self;
        let step = payload.len() as u64;
        // Shared by the writer threads: the mutex is what serialises them.
        let (path, file, next, region, sync) = (&*path, &*file, &*next, *region, *sync);
        let slice = timed_run(
            writers,
            duration,
            ticker,
            &tally.histogram,
            || {
                let mut offset = next.lock().unwrap_or_else(|p| p.into_inner());
                if *offset + step > region {
                    *offset = 0;
                }
                file.write_all_at(payload, *offset)
                    .map_err(|e| Failure::io("write", path, e))?;
                if sync {
                    file.sync_data()
                        .map_err(|e| Failure::io("fdatasync", path, e))?;
                }
                *offset += step;
                Ok(())
            },
            |_| {},
        )?;
        if sync {
            tally.syncs += slice.ops;
        }
        tally.groups += slice.ops;
        tally.records += slice.ops;
        tally.add(&slice);
        Ok(())
    }

    /// Removes the file; returns what the slices counted.
    fn close(self) -> Tally {
        drop(self.file);
        let _ = std::fs::remove_file(&self.path);
        self.tally
    }

    fn finish(self, writers: usize, record_bytes: usize, ceiling: &Ceiling) -> Point {
        let tally = self.close();
        let mut p = point(
            "naive",
            (None, None),
            writers,
            &tally,
            record_bytes,
            ceiling,
        );
        p.speedup_over_naive = Some(1.0);
        p
    }
}

/// Group commit: a [`Wal`] in a fresh directory with W threads calling an operation on it
/// ([`Wal::append`] of one record, for the comparison and the sweeps). The log stays open
/// across the slices of a point.
struct Group {
    dir: PathBuf,
    wal: Wal,
    tally: Tally,
}

impl Group {
    fn open(scratch: &Scratch, options: WalOptions) -> Result<Group, Failure> {
        let dir = scratch.fresh("wal");
        let wal = Wal::open(&dir, options)?;
        Ok(Group {
            dir,
            wal,
            tally: Tally::default(),
        })
    }

    /// Measures one slice of `op` with `writers` threads; syncs, groups and records are the
    /// log's own counters over the window.
    fn run(
        &mut self,
        writers: usize,
        duration: Duration,
        ticker: Ticker<'_>,
        op: impl Fn(&Wal) -> Result<(), Failure> + Sync,
    ) -> Result<(), Failure> {
        let Group { wal, tally, .. } = self;
        let wal = &*wal;
        let stats_at = Mutex::new((None, None));
        let slice = timed_run(
            writers,
            duration,
            ticker,
            &tally.histogram,
            || op(wal),
            |opening| {
                let s = wal.stats();
                let mut at = stats_at.lock().unwrap_or_else(|p| p.into_inner());
                if opening {
                    at.0 = Some(s);
                } else {
                    at.1 = Some(s);
                }
            },
        )?;
        if let (Some(a), Some(b)) = stats_at.into_inner().unwrap_or_else(|p| p.into_inner()) {
            tally.syncs += b.syncs - a.syncs;
            tally.groups += b.groups - a.groups;
            tally.records += b.records - a.records;
        }
        tally.add(&slice);
        Ok(())
    }

    /// Closes the log and removes its directory; returns what the slices counted.
    fn close(self) -> Result<Tally, Failure> {
        self.wal.close()?;
        drop(self.wal);
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(self.tally)
    }

    fn finish(
        self,
        writers: usize,
        sweep: (Option<&'static str>, Option<String>),
        record_bytes: usize,
        ceiling: &Ceiling,
    ) -> Result<Point, Failure> {
        Ok(point(
            "group_commit",
            sweep,
            writers,
            &self.close()?,
            record_bytes,
            ceiling,
        ))
    }
}

fn write_outputs(args: &BenchArgs, report: &BenchReport) -> Result<(), Failure> {
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| Failure::new(exit::SOFTWARE, format!("encode JSON: {e}")))?;
        std::fs::write(path, text + "\n").map_err(|e| Failure::io("write", path, e))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, report::to_csv(report)).map_err(|e| Failure::io("write", path, e))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        plot::draw(report, path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
