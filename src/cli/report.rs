//! What `bench` measured, and its three renderings: aligned tables, JSON and CSV.

use serde::Serialize;
use std::fmt::Write as _;

/// Everything one `groupwal bench` run measured (the `--json` document).
#[derive(Serialize, Clone, Debug)]
pub struct BenchReport {
    /// Version of the groupwal that measured.
    pub groupwal_version: &'static str,
    /// Where and on what it ran.
    pub environment: Environment,
    /// The settings of the run.
    pub config: BenchConfig,
    /// The disk's ceiling, measured without groupwal.
    pub ceiling: Ceiling,
    /// Naive one-sync-per-record commits and group commit, for each writer count.
    pub comparison: Vec<Point>,
    /// A durable batch through `append_many` against one naive write of the same bytes; null
    /// when skipped (`--batch-records 0`).
    pub batch: Option<Batch>,
    /// Group commit at `config.sweep_writers` writers with one batching knob changed.
    pub sweeps: Vec<Point>,
    /// Wall-clock seconds of the whole run.
    pub total_seconds: f64,
}

/// Where the benchmark ran.
#[derive(Serialize, Clone, Debug)]
pub struct Environment {
    /// The directory measured in (a temporary subdirectory of it, removed afterwards).
    pub dir: String,
    /// File system type of that directory, from /proc/mounts.
    pub filesystem: Option<String>,
    /// False when the file system does not persist to a disk (tmpfs, ...).
    pub persistent: bool,
    /// CPUs available to this process.
    pub cpus: usize,
    /// The 1-minute load average when the run started (from /proc/loadavg): other work on
    /// the machine makes the figures noisy.
    pub load_average_1m: Option<f64>,
}

/// The settings of a run.
#[derive(Serialize, Clone, Debug)]
pub struct BenchConfig {
    /// Measured time per point, in milliseconds.
    pub duration_ms: f64,
    /// Slices the naive and group-commit points of the comparison (and the two sides of the
    /// durable batch) are measured in, alternating (naive, group commit, naive, ...), each
    /// `duration_ms / rounds` long.
    pub rounds: usize,
    /// Unmeasured warm-up per point, in milliseconds: a tenth of each measured slice.
    pub warmup_ms: f64,
    /// Payload bytes of each record.
    pub record_bytes: usize,
    /// Durability of each record: sync, flush or buffer.
    pub durability: String,
    /// Writer counts of the comparison.
    pub writers: Vec<usize>,
    /// Writer count of the knob sweeps.
    pub sweep_writers: usize,
    /// Values of `commit_delay` swept (`off` or a duration).
    pub commit_delay: Vec<String>,
    /// `commit_siblings` used with a commit delay.
    pub commit_siblings: usize,
    /// Values of `group_bytes_max` swept.
    pub group_bytes_max: Vec<usize>,
    /// Values of `lock_hold_max` swept, in microseconds.
    pub lock_hold_max_us: Vec<f64>,
    /// Segment size of the log (and size of the preallocated files of the naive baseline and
    /// the overwrite ceiling).
    pub segment_bytes: u64,
    /// Records per durable batch (0: the batch step was skipped).
    pub batch_records: usize,
    /// Payload bytes of each record of the durable batch.
    pub batch_record_bytes: usize,
}

/// The disk's ceiling: what one thread gets with plain writes and `fdatasync`.
#[derive(Serialize, Clone, Debug)]
pub struct Ceiling {
    /// 4 KiB appended at the end of a growing file, then `fdatasync`.
    pub append_4k_fdatasync: CeilingFigure,
    /// 4 KiB overwritten in an already-written (zero-filled) file, then `fdatasync`.
    pub overwrite_4k_fdatasync: CeilingFigure,
    /// 1 MiB written sequentially (over already-written blocks), then `fdatasync`.
    pub sequential_1m_fdatasync: CeilingFigure,
}

/// One ceiling measurement.
#[derive(Serialize, Clone, Debug)]
pub struct CeilingFigure {
    /// Bytes of each write.
    pub write_bytes: usize,
    /// Write + fdatasync operations measured.
    pub ops: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Operations per second.
    pub ops_per_s: f64,
    /// Megabytes (10^6 bytes) written per second.
    pub mb_per_s: f64,
    /// Latency of one write + fdatasync.
    pub latency: Latency,
}

/// Latency percentiles in microseconds (from groupwal's histogram: upper bounds within
/// 12.5%).
#[derive(Serialize, Clone, Copy, Debug, Default)]
pub struct Latency {
    /// Mean.
    pub latency_us_mean: f64,
    /// Median.
    pub latency_us_p50: f64,
    /// 99th percentile.
    pub latency_us_p99: f64,
    /// 99.9th percentile.
    pub latency_us_p999: f64,
    /// Largest.
    pub latency_us_max: f64,
}

impl Latency {
    /// Percentiles of a histogram of nanoseconds.
    pub fn from_ns(h: &groupwal::stats::HistogramSnapshot) -> Latency {
        let us = |ns: u64| ns as f64 / 1e3;
        Latency {
            latency_us_mean: h.mean() / 1e3,
            latency_us_p50: us(h.quantile(0.5)),
            latency_us_p99: us(h.quantile(0.99)),
            latency_us_p999: us(h.quantile(0.999)),
            latency_us_max: us(h.max),
        }
    }
}

/// One measured configuration of naive commits or group commit.
#[derive(Serialize, Clone, Debug)]
pub struct Point {
    /// `naive` (one write + fdatasync per record under a mutex) or `group_commit`.
    pub mode: &'static str,
    /// The knob changed from its default in a sweep (`commit_delay`, `group_bytes_max`,
    /// `lock_hold_max`), or null.
    pub knob: Option<&'static str>,
    /// The knob's value in a sweep, or null.
    pub knob_value: Option<String>,
    /// Concurrent writer threads.
    pub writers: usize,
    /// Records committed (acknowledged) in the measured time.
    pub commits: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Commits per second.
    pub commits_per_s: f64,
    /// Payload megabytes (10^6 bytes) committed per second.
    pub mb_per_s: f64,
    /// Latency of one commit (from the call to its acknowledgement).
    pub latency: Latency,
    /// `fdatasync` calls per second.
    pub fdatasyncs_per_s: f64,
    /// Mean records per group (1 for naive).
    pub records_per_group: f64,
    /// Process CPU time (user + system) per commit, in microseconds.
    pub cpu_us_per_commit: f64,
    /// Commits/s over the naive commits/s at the same writer count (null when naive was not
    /// measured at that count).
    pub speedup_over_naive: Option<f64>,
    /// MB/s over the disk's sequential 1 MiB + fdatasync MB/s: how much of the bandwidth
    /// ceiling is used.
    pub ceiling_share: f64,
    /// fdatasyncs/s over the 4 KiB overwrite + fdatasync ceiling: how much of the disk's sync
    /// rate is used.
    pub sync_share: f64,
}

/// The durable batch: one thread commits `records` records of `record_bytes` each, `Sync`, as
/// one batch at a time. Naive writes the batch's payloads as one write + `fdatasync` into a
/// preallocated file (wrapping around); groupwal calls `Wal::append_many`, truncating the
/// records older than one segment's worth every 64 batches. Both are measured in the
/// comparison's alternating slices.
#[derive(Serialize, Clone, Debug)]
pub struct Batch {
    /// Records per batch.
    pub records: usize,
    /// Payload bytes of each record.
    pub record_bytes: usize,
    /// Payload bytes of a whole batch (`records * record_bytes`).
    pub batch_bytes: u64,
    /// One write of the batch's payloads + `fdatasync`.
    pub naive: BatchFigure,
    /// `Wal::append_many` of the batch's records.
    pub groupwal: BatchFigure,
    /// groupwal's batches/s over naive's (the same as their MB/s ratio: the same bytes).
    pub ratio_to_naive: Option<f64>,
}

/// One side of the durable batch.
#[derive(Serialize, Clone, Debug)]
pub struct BatchFigure {
    /// Batches committed in the measured time.
    pub batches: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Batches per second.
    pub batches_per_s: f64,
    /// Payload megabytes (10^6 bytes) committed per second.
    pub mb_per_s: f64,
    /// Latency of one batch (from the call until every record of it is durable).
    pub latency: Latency,
    /// Groups per batch (1 for naive; for groupwal, `Wal::stats` deltas over the measured
    /// windows).
    pub groups_per_batch: f64,
    /// `fdatasync` calls per batch (1 for naive; for groupwal, `Wal::stats` deltas over the
    /// measured windows).
    pub fdatasyncs_per_batch: f64,
}

/// An aligned text table: the first column left-aligned, the others right-aligned.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len(), "row width");
        self.rows.push(cells);
    }

    /// The table as text, one line per row, a rule under the headers.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                let pad = " ".repeat(w - width(cell));
                if i == 0 {
                    out.push_str(cell);
                    out.push_str(&pad);
                } else {
                    out.push_str("  ");
                    out.push_str(&pad);
                    out.push_str(cell);
                }
            }
            out.trim_end().to_string()
        };
        let mut out = line(&self.headers);
        out.push('\n');
        let total: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }
}

/// A count per second with thousands separators: `12,345`.
pub fn fmt_rate(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency given in microseconds, in the unit that suits it: `85µs`, `1.25ms`, `2.1s`.
pub fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 10_000.0 {
        format!("{:.2}ms", us / 1e3)
    } else if us < 1_000_000.0 {
        format!("{:.1}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// A ratio with `decimals` decimals: `3.2x`, `0.97x`.
pub fn fmt_ratio(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}x"),
        _ => "-".into(),
    }
}

/// A share as a percentage: `42%`, `0.3%`.
pub fn fmt_share(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v < 0.1 {
        format!("{:.1}%", v * 100.0)
    } else {
        format!("{:.0}%", v * 100.0)
    }
}

/// The ceiling table.
pub fn ceiling_table(c: &Ceiling) -> String {
    let mut t = Table::new(&[
        "disk ceiling (1 thread)",
        "ops/s",
        "MB/s",
        "p50",
        "p99",
        "p999",
    ]);
    for (name, f) in [
        ("4 KiB append + fdatasync", &c.append_4k_fdatasync),
        ("4 KiB overwrite + fdatasync", &c.overwrite_4k_fdatasync),
        ("1 MiB sequential + fdatasync", &c.sequential_1m_fdatasync),
    ] {
        t.row(vec![
            name.into(),
            fmt_rate(f.ops_per_s),
            format!("{:.1}", f.mb_per_s),
            fmt_us(f.latency.latency_us_p50),
            fmt_us(f.latency.latency_us_p99),
            fmt_us(f.latency.latency_us_p999),
        ]);
    }
    t.render()
}

/// The table of naive against group commit (or of a sweep, with `knob` columns).
pub fn points_table(points: &[Point], with_knob: bool) -> String {
    let mut headers = Vec::new();
    if with_knob {
        headers.extend(["knob", "value"]);
    } else {
        headers.push("mode");
    }
    headers.extend([
        "writers",
        "commits/s",
        "MB/s",
        "p50",
        "p99",
        "p999",
        "fsyncs/s",
        "rec/group",
        "cpu/commit",
        "vs naive",
        "of ceiling",
    ]);
    let mut t = Table::new(&headers);
    for p in points {
        let mut row = Vec::new();
        if with_knob {
            row.push(p.knob.unwrap_or("-").to_string());
            row.push(p.knob_value.clone().unwrap_or_else(|| "-".into()));
        } else {
            row.push(p.mode.replace('_', " "));
        }
        row.extend([
            p.writers.to_string(),
            fmt_rate(p.commits_per_s),
            format!("{:.2}", p.mb_per_s),
            fmt_us(p.latency.latency_us_p50),
            fmt_us(p.latency.latency_us_p99),
            fmt_us(p.latency.latency_us_p999),
            fmt_rate(p.fdatasyncs_per_s),
            format!("{:.1}", p.records_per_group),
            format!("{:.1}µs", p.cpu_us_per_commit),
            fmt_ratio(p.speedup_over_naive, 1),
            fmt_share(p.ceiling_share),
        ]);
        t.row(row);
    }
    t.render()
}

/// The durable batch's table: naive and groupwal, one row each.
pub fn batch_table(b: &Batch) -> String {
    let mut t = Table::new(&[
        "durable batch (1 thread)",
        "batches/s",
        "MB/s",
        "p50",
        "p99",
        "groups/batch",
        "fsyncs/batch",
        "vs naive",
    ]);
    for (name, f, ratio) in [
        ("naive: 1 write + fdatasync", &b.naive, Some(1.0)),
        ("groupwal: append_many", &b.groupwal, b.ratio_to_naive),
    ] {
        t.row(vec![
            name.into(),
            fmt_rate(f.batches_per_s),
            format!("{:.1}", f.mb_per_s),
            fmt_us(f.latency.latency_us_p50),
            fmt_us(f.latency.latency_us_p99),
            format!("{:.1}", f.groups_per_batch),
            format!("{:.1}", f.fdatasyncs_per_batch),
            fmt_ratio(ratio, 2),
        ]);
    }
    t.render()
}

/// Every measured figure as CSV: one row per ceiling figure, per point and per side of the
/// durable batch (whose `ops` are batches and `records_per_group` records per group).
pub fn to_csv(r: &BenchReport) -> String {
    let mut out = String::from(
        "section,mode,knob,knob_value,writers,record_bytes,durability,ops,seconds,ops_per_s,\
         mb_per_s,latency_us_mean,latency_us_p50,latency_us_p99,latency_us_p999,latency_us_max,\
         fdatasyncs_per_s,records_per_group,cpu_us_per_commit,speedup_over_naive,ceiling_share,\
         sync_share\n",
    );
    let lat = |l: &Latency| {
        format!(
            "{:.3},{:.3},{:.3},{:.3},{:.3}",
            l.latency_us_mean,
            l.latency_us_p50,
            l.latency_us_p99,
            l.latency_us_p999,
            l.latency_us_max
        )
    };
    for (mode, f) in [
        ("append_4k_fdatasync", &r.ceiling.append_4k_fdatasync),
        ("overwrite_4k_fdatasync", &r.ceiling.overwrite_4k_fdatasync),
        (
            "sequential_1m_fdatasync",
            &r.ceiling.sequential_1m_fdatasync,
        ),
    ] {
        let _ = writeln!(
            out,
            "ceiling,{mode},,,1,{},sync,{},{:.6},{:.3},{:.3},{},{:.3},1,,,,",
            f.write_bytes,
            f.ops,
            f.seconds,
            f.ops_per_s,
            f.mb_per_s,
            lat(&f.latency),
            f.ops_per_s,
        );
    }
    for (section, points) in [("comparison", &r.comparison), ("sweep", &r.sweeps)] {
        for p in points {
            let _ = writeln!(
                out,
                "{section},{},{},{},{},{},{},{},{:.6},{:.3},{:.3},{},{:.3},{:.3},{:.3},{},{:.6},{:.6}",
                p.mode,
                p.knob.unwrap_or(""),
                p.knob_value.as_deref().unwrap_or(""),
                p.writers,
                r.config.record_bytes,
                r.config.durability,
                p.commits,
                p.seconds,
                p.commits_per_s,
                p.mb_per_s,
                lat(&p.latency),
                p.fdatasyncs_per_s,
                p.records_per_group,
                p.cpu_us_per_commit,
                p.speedup_over_naive
                    .map_or(String::new(), |v| format!("{v:.3}")),
                p.ceiling_share,
                p.sync_share,
            );
        }
    }
    if let Some(b) = &r.batch {
        for (mode, f, ratio) in [
            ("naive", &b.naive, Some(1.0)),
            ("groupwal", &b.groupwal, b.ratio_to_naive),
        ] {
            let _ = writeln!(
                out,
                "batch,{mode},,,1,{},sync,{},{:.6},{:.3},{:.3},{},{:.3},{:.3},,{},,",
                b.record_bytes,
                f.batches,
                f.seconds,
                f.batches_per_s,
                f.mb_per_s,
                lat(&f.latency),
                f.fdatasyncs_per_batch * f.batches_per_s,
                b.records as f64 / f.groups_per_batch,
                ratio.map_or(String::new(), |v| format!("{v:.3}")),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["name", "n"]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["longer".into(), "1,000".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "name        n");
        assert_eq!(lines[2], "a           1");
        assert_eq!(lines[3], "longer  1,000");
    }

    #[test]
    fn numbers_are_formatted_for_people() {
        assert_eq!(fmt_rate(1234567.4), "1,234,567");
        assert_eq!(fmt_rate(999.0), "999");
        assert_eq!(fmt_us(85.2), "85µs");
        assert_eq!(fmt_us(1250.0), "1.25ms");
        assert_eq!(fmt_us(25_000.0), "25.0ms");
        assert_eq!(fmt_share(0.42), "42%");
        assert_eq!(fmt_ratio(Some(3.21), 1), "3.2x");
        assert_eq!(fmt_ratio(Some(0.966), 2), "0.97x");
        assert_eq!(fmt_ratio(None, 1), "-");
    }
}
