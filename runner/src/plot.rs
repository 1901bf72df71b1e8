//! `--plot FILE.svg`: a picture of a run, to look at and to share. One run: its latency
//! distribution (the share of requests answered within each latency). With `--compare`:
//! processes and the service drawn on the same axes, and beside them the throughput and the
//! memory each used (the fleet's peak PSS for processes, the server's RSS for the service).

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Record, Summary};

/// One run to draw: its name, summary and records.
pub struct Run<'a> {
    /// `processes` or `serve`.
    pub mode: &'a str,
    /// What the report prints.
    pub summary: &'a Summary,
    /// Every counted request.
    pub records: &'a [Record],
}

/// The runs' colours, in order: processes, then the service.
const COLOURS: [RGBColor; 2] = [RGBColor(31, 119, 180), RGBColor(214, 39, 40)];

/// Draws `runs` into the SVG file `path`.
pub fn draw(path: &Path, title: &str, runs: &[Run<'_>]) -> Result<(), String> {
    let size = if runs.len() > 1 {
        (960, 720)
    } else {
        (960, 540)
    };
    let root = SVGBackend::new(path, size).into_drawing_area();
    let failed = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| failed(&e))?;
    if runs.len() > 1 {
        let (top, bottom) = root.split_vertically(size.1 * 58 / 100 - 40);
        latency(&top, runs).map_err(|e| failed(&e))?;
        let (left, right) = bottom.split_horizontally(size.0 / 2);
        bars(&left, "throughput (requests per second)", runs, |s| {
            Some(s.throughput_per_s)
        })
        .map_err(|e| failed(&e))?;
        bars(
            &right,
            "memory (MiB): the processes' peak PSS, the service's RSS",
            runs,
            |s| {
                s.fleet_pss_peak_kib
                    .or(s.server_rss_kib.map(|(_, after)| after))
                    .map(|k| k as f64 / 1024.0)
            },
        )
        .map_err(|e| failed(&e))?;
    } else {
        latency(&root, runs).map_err(|e| failed(&e))?;
    }
    root.present().map_err(|e| failed(&e))
}

/// The latency distribution of each run: for every latency, the share of its successful
/// requests answered within it.
fn latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    runs: &[Run<'_>],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let sorted: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| {
            let mut ms: Vec<f64> = r
                .records
                .iter()
                .filter(|x| x.ok)
                .map(|x| x.latency_us as f64 / 1000.0)
                .collect();
            ms.sort_by(f64::total_cmp);
            ms
        })
        .collect();
    // A log scale: a process's start-up and a service's round trip differ by an order of
    // magnitude, and the tail would squash the body of both on a linear one.
    let top = sorted
        .iter()
        .filter_map(|v| v.last())
        .fold(0.0_f64, |a, b| a.max(*b))
        .max(0.01);
    let bottom = sorted
        .iter()
        .filter_map(|v| v.first())
        .fold(top, |a, b| a.min(*b))
        .max(0.001);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .caption("latency distribution", ("sans-serif", 16))
        .build_cartesian_2d((bottom / 1.2..top * 1.2).log_scale(), 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("requests answered within (%)")
        .draw()?;
    for (i, (run, ms)) in runs.iter().zip(&sorted).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let n = ms.len().max(1) as f64;
        let points = ms
            .iter()
            .enumerate()
            .map(|(k, v)| (*v, (k + 1) as f64 * 100.0 / n));
        let p50 = run.summary.latency_ms.as_ref().map_or(0.0, |l| l.p50);
        let label = format!("{} (p50 {p50:.2} ms, n = {})", run.mode, ms.len());
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
}

/// One bar per run of `value` (runs without one get none).
fn bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    runs: &[Run<'_>],
    value: impl Fn(&Summary) -> Option<f64>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let values: Vec<Option<f64>> = runs.iter().map(|r| value(r.summary)).collect();
    let top = values
        .iter()
        .flatten()
        .fold(0.0_f64, |a, b| a.max(*b))
        .max(1.0);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(64)
        .caption(caption, ("sans-serif", 16))
        .build_cartesian_2d(0.0..runs.len() as f64, 0.0..top * 1.15)?;
    let names: Vec<String> = runs.iter().map(|r| r.mode.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(runs.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < names.len() {
                names[i].clone()
            } else {
                String::new()
            }
        })
        .draw()?;
    for (i, v) in values.iter().enumerate() {
        let Some(v) = v else { continue };
        let colour = COLOURS[i % COLOURS.len()];
        let x = i as f64;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x + 0.2, 0.0), (x + 0.8, *v)],
            colour.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{v:.1}"),
            (x + 0.42, *v + top * 0.06),
            ("sans-serif", 14),
        )))?;
    }
    Ok(())
}
