//! `bench --plot`: one SVG with two panels, both against writers on a log2 axis.
//!
//! Left: commits/s of naive and group commit, with the disk's ceilings as flat lines (4 KiB
//! overwrite + fdatasync per second: what one sync per record can reach; and the sequential
//! bandwidth in records per second: what batching can reach at best). Right: p50, p99 and
//! p999 commit latency of both.

use super::report::{BenchReport, Point};
use super::{exit, Failure};
use plotters::prelude::*;
use std::path::Path;

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 560;
const NAIVE: RGBColor = RGBColor(214, 39, 40);
const GROUP: RGBColor = RGBColor(31, 119, 180);
const SYNC_CEILING: RGBColor = RGBColor(90, 90, 90);
const BANDWIDTH_CEILING: RGBColor = RGBColor(44, 160, 44);

/// Draws the plot of `report` into `path` (SVG).
pub fn draw(report: &BenchReport, path: &Path) -> Result<(), Failure> {
    let fail = |e: &dyn std::fmt::Display| {
        Failure::new(exit::IO, format!("draw plot {}: {e}", path.display()))
    };
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let title = format!(
        "groupwal bench: {} B records, durability {}, {} ({})",
        report.config.record_bytes,
        report.config.durability,
        report.environment.dir,
        report.environment.filesystem.as_deref().unwrap_or("?"),
    );
    let root = root
        .titled(&title, ("sans-serif", 22))
        .map_err(|e| fail(&e))?;
    let (left, right) = root.split_horizontally(WIDTH / 2);
    throughput_panel(report, &left).map_err(|e| fail(&e))?;
    latency_panel(report, &right).map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn series<'a>(points: &'a [Point], mode: &'a str) -> impl Iterator<Item = &'a Point> + Clone {
    points.iter().filter(move |p| p.mode == mode)
}

/// The x range: writer counts with a margin on the log2 axis.
fn x_range(report: &BenchReport) -> (f64, f64, Vec<f64>) {
    let ws: Vec<f64> = report.config.writers.iter().map(|&w| w as f64).collect();
    let lo = ws.iter().cloned().fold(f64::INFINITY, f64::min).max(1.0);
    let hi = ws.iter().cloned().fold(0.0, f64::max).max(lo * 2.0);
    (lo / 1.25, hi * 1.25, ws)
}

/// A log range `[lo / 2, hi * 2]` around positive values.
fn y_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi <= 0.0 {
        return (0.1, 10.0);
    }
    (lo / 2.0, hi * 2.0)
}

/// 1.2k, 35k, 1.5M.
fn si(v: f64) -> String {
    let (x, suffix) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if x >= 10.0 || x.fract().abs() < 1e-9 {
        format!("{x:.0}{suffix}")
    } else {
        format!("{x:.1}{suffix}")
    }
}

fn throughput_panel(report: &BenchReport, area: &Area<'_>) -> DrawResult {
    let (x_lo, x_hi, ws) = x_range(report);
    let sync_ceiling = report.ceiling.overwrite_4k_fdatasync.ops_per_s;
    let bandwidth_ceiling = report.ceiling.sequential_1m_fdatasync.mb_per_s * 1e6
        / report.config.record_bytes.max(1) as f64;
    let (y_lo, y_hi) = y_range(
        report
            .comparison
            .iter()
            .map(|p| p.commits_per_s)
            .chain([sync_ceiling, bandwidth_ceiling]),
    );
    let mut chart = ChartBuilder::on(area)
        .caption("throughput: commits per second", ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (x_lo..x_hi)
                .log_scale()
                .base(2.0)
                .with_key_points(ws.clone()),
            (y_lo..y_hi).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("writer threads")
        .y_desc("commits/s (log)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| si(*y))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let flat = |y: f64| vec![(x_lo, y), (x_hi, y)];
    chart
        .draw_series(DashedLineSeries::new(
            flat(bandwidth_ceiling),
            10,
            6,
            BANDWIDTH_CEILING.stroke_width(2),
        ))?
        .label(format!(
            "bandwidth ceiling: {} records/s (1 MiB seq + fdatasync, {:.0} MB/s)",
            si(bandwidth_ceiling),
            report.ceiling.sequential_1m_fdatasync.mb_per_s
        ))
        .legend(|(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], BANDWIDTH_CEILING.stroke_width(2))
        });
    chart
        .draw_series(DashedLineSeries::new(
            flat(sync_ceiling),
            10,
            6,
            SYNC_CEILING.stroke_width(2),
        ))?
        .label(format!(
            "sync ceiling: {}/s (4 KiB overwrite + fdatasync, 1 thread)",
            si(sync_ceiling)
        ))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], SYNC_CEILING.stroke_width(2)));
    for (mode, color, label) in [
        ("group_commit", GROUP, "group commit"),
        ("naive", NAIVE, "naive: write + fdatasync per record, mutex"),
    ] {
        let pts: Vec<(f64, f64)> = series(&report.comparison, mode)
            .map(|p| (p.writers as f64, p.commits_per_s))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

fn latency_panel(report: &BenchReport, area: &Area<'_>) -> DrawResult {
    let (x_lo, x_hi, ws) = x_range(report);
    let (y_lo, y_hi) = y_range(report.comparison.iter().flat_map(|p| {
        [
            p.latency.latency_us_p50,
            p.latency.latency_us_p99,
            p.latency.latency_us_p999,
        ]
    }));
    let mut chart = ChartBuilder::on(area)
        .caption(
            "commit latency (p50 solid, p99 dashed, p999 dotted)",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(
            (x_lo..x_hi).log_scale().base(2.0).with_key_points(ws),
            (y_lo..y_hi).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("writer threads")
        .y_desc("latency (log)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| super::report::fmt_us(*y))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (mode, color, name) in [
        ("group_commit", GROUP, "group commit"),
        ("naive", NAIVE, "naive"),
    ] {
        let at = |f: fn(&Point) -> f64| -> Vec<(f64, f64)> {
            series(&report.comparison, mode)
                .map(|p| (p.writers as f64, f(p)))
                .collect()
        };
        let p50 = at(|p| p.latency.latency_us_p50);
        chart
            .draw_series(LineSeries::new(p50.clone(), color.stroke_width(3)))?
            .label(format!("{name} p50"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart.draw_series(p50.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        chart
            .draw_series(DashedLineSeries::new(
                at(|p| p.latency.latency_us_p99),
                10,
                5,
                color.stroke_width(2),
            ))?
            .label(format!("{name} p99"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 8, y)], color.stroke_width(2))
            });
        chart
            .draw_series(DashedLineSeries::new(
                at(|p| p.latency.latency_us_p999),
                3,
                4,
                color.stroke_width(2),
            ))?
            .label(format!("{name} p999"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 3, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}
