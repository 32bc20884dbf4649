//! SVG line plots of each metric against the number of edits, one line per method (native
//! only: plotters' SVG backend with its built-in text layout, no system fonts).
//!
//! PNG output is not offered: plotters' bitmap backend needs a font rasteriser and system
//! fonts, too much for a plot a browser draws from the SVG (or from the same numbers, kept in
//! the report's `curves`).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::sequential::Curve;
use crate::{Error, Result};

/// Plot size in pixels.
const SIZE: (u32, u32) = (640, 400);

/// Line colours, one per method in order.
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// The SVG of one metric's curves (all with `metric` equal to `metric`).
///
/// # Errors
/// No curve for the metric; a drawing failure.
pub fn svg(metric: &str, curves: &[&Curve]) -> Result<String> {
    if curves.is_empty() {
        return Err(Error::input(format!("no curve for {metric}")));
    }
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let x_max = pts.clone().map(|p| p.0).max().unwrap_or(1).max(1);
    let (mut lo, mut hi) = pts
        .filter(|p| p.1.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-6 * hi.abs().max(1.0));
    let (lo, hi) = (lo - pad, hi + pad);
    let draw_err =
        |e: &dyn std::fmt::Display| Error::input(format!("drawing the {metric} plot: {e}"));
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(metric, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0..x_max, lo..hi)
            .map_err(|e| draw_err(&e))?;
        chart
            .configure_mesh()
            .x_desc("edits (x = 0: the unedited model on all cases; then the cases edited so far)")
            .y_desc(metric)
            .draw()
            .map_err(|e| draw_err(&e))?;
        for (i, c) in curves.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let line: Vec<(usize, f64)> = c
                .points
                .iter()
                .filter(|p| p.1.is_finite())
                .copied()
                .collect();
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| draw_err(&e))?;
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(|e| draw_err(&e))?
                .label(c.method.clone())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    }
    Ok(buf)
}

/// Writes `<dir>/<metric>.svg` for every metric of `curves`; returns the paths.
///
/// # Errors
/// The directory cannot be created or a file written.
pub fn write_svgs(dir: &Path, curves: &[Curve]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut metrics: Vec<&str> = vec![];
    for c in curves {
        if !metrics.contains(&c.metric.as_str()) {
            metrics.push(&c.metric);
        }
    }
    let mut paths = vec![];
    for m in metrics {
        let of_metric: Vec<&Curve> = curves.iter().filter(|c| c.metric == m).collect();
        let path = dir.join(format!("{m}.svg"));
        std::fs::write(&path, svg(m, &of_metric)?).map_err(|e| Error::io(&path, e))?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_line_per_method() {
        let curve = |method: &str, y: f64| Curve {
            metric: "rewrite_success".into(),
            method: method.into(),
            points: vec![(0, 37.0), (10, y), (20, y + 1.0)],
        };
        let (a, b) = (curve("nse", 98.0), curve("memit-seq", 95.0));
        let s = svg("rewrite_success", &[&a, &b]).unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..40]);
        assert!(s.contains("memit-seq") && s.contains("nse") && s.contains("edits"));
        assert!(s.matches("<polyline").count() >= 2);
    }
}
