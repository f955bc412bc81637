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
const HEIGHT: u32 = 640;
/// Height of the strip under each chart that holds its legend.
const LEGEND_HEIGHT: u32 = 96;
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
    let chart_height = HEIGHT - LEGEND_HEIGHT - 40;
    let (left, left_legend) = left.split_vertically(chart_height);
    let (right, right_legend) = right.split_vertically(chart_height);
    let entries = throughput_panel(report, &left).map_err(|e| fail(&e))?;
    legend(&left_legend, &entries).map_err(|e| fail(&e))?;
    let entries = latency_panel(report, &right).map_err(|e| fail(&e))?;
    legend(&right_legend, &entries).map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// How a legend entry's line is drawn.
#[derive(Clone, Copy)]
enum Stroke {
    Solid,
    Dashed,
    Dotted,
}

/// One legend entry: a label and its line.
#[derive(Clone)]
struct Entry {
    label: String,
    color: RGBColor,
    stroke: Stroke,
}

fn entry(label: impl Into<String>, color: RGBColor, stroke: Stroke) -> Entry {
    Entry {
        label: label.into(),
        color,
        stroke,
    }
}

/// Draws the entries in rows under a chart: a sample of each line, then its label. Drawn
/// outside the plot so it never hides a line.
fn legend(area: &Area<'_>, entries: &[Entry]) -> DrawResult {
    let (width, _) = area.dim_in_pixel();
    let columns = if entries.len() > 4 { 2 } else { 1 };
    let column_width = (width as i32 - 80) / columns;
    for (i, e) in entries.iter().enumerate() {
        let col = i as i32 % columns;
        let row = i as i32 / columns;
        let x = 80 + col * column_width;
        let y = 12 + row * 22;
        let style = e.color.stroke_width(match e.stroke {
            Stroke::Solid => 3,
            _ => 2,
        });
        let (dash, gap) = match e.stroke {
            Stroke::Solid => (30, 0),
            Stroke::Dashed => (8, 4),
            Stroke::Dotted => (2, 4),
        };
        let mut from = x;
        while from < x + 30 {
            let to = (from + dash).min(x + 30);
            area.draw(&PathElement::new(vec![(from, y), (to, y)], style))?;
            from = to + gap.max(1);
        }
        area.draw(&Text::new(
            e.label.clone(),
            (x + 40, y - 7),
            ("sans-serif", 15).into_font(),
        ))?;
    }
    Ok(())
}

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

fn throughput_panel(report: &BenchReport, area: &Area<'_>) -> DrawResult<Vec<Entry>> {
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
    chart.draw_series(DashedLineSeries::new(
        flat(bandwidth_ceiling),
        10,
        6,
        BANDWIDTH_CEILING.stroke_width(2),
    ))?;
    chart.draw_series(DashedLineSeries::new(
        flat(sync_ceiling),
        10,
        6,
        SYNC_CEILING.stroke_width(2),
    ))?;
    for (mode, color) in [("group_commit", GROUP), ("naive", NAIVE)] {
        let pts: Vec<(f64, f64)> = series(&report.comparison, mode)
            .map(|p| (p.writers as f64, p.commits_per_s))
            .collect();
        chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))?;
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    Ok(vec![
        entry("group commit (groupwal)", GROUP, Stroke::Solid),
        entry(
            "naive: one write + fdatasync per record, under a mutex",
            NAIVE,
            Stroke::Solid,
        ),
        entry(
            format!(
                "sync ceiling: {}/s (4 KiB overwrite + fdatasync, 1 thread)",
                si(sync_ceiling)
            ),
            SYNC_CEILING,
            Stroke::Dashed,
        ),
        entry(
            format!(
                "bandwidth ceiling: {} records/s ({:.0} MB/s, 1 MiB writes + fdatasync)",
                si(bandwidth_ceiling),
                report.ceiling.sequential_1m_fdatasync.mb_per_s
            ),
            BANDWIDTH_CEILING,
            Stroke::Dashed,
        ),
    ])
}

fn latency_panel(report: &BenchReport, area: &Area<'_>) -> DrawResult<Vec<Entry>> {
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
    let mut entries = Vec::new();
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
        chart.draw_series(LineSeries::new(p50.clone(), color.stroke_width(3)))?;
        chart.draw_series(p50.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        chart.draw_series(DashedLineSeries::new(
            at(|p| p.latency.latency_us_p99),
            10,
            5,
            color.stroke_width(2),
        ))?;
        chart.draw_series(DashedLineSeries::new(
            at(|p| p.latency.latency_us_p999),
            3,
            4,
            color.stroke_width(2),
        ))?;
        entries.push(entry(format!("{name} p50"), color, Stroke::Solid));
        entries.push(entry(format!("{name} p99"), color, Stroke::Dashed));
        entries.push(entry(format!("{name} p999"), color, Stroke::Dotted));
    }
    // Group commit's three entries in the left column, naive's in the right.
    let (group, naive) = entries.split_at(3);
    Ok(group
        .iter()
        .zip(naive)
        .flat_map(|(g, n)| [g.clone(), n.clone()])
        .collect())
}
