//! Example stage of a parameter sweep: one straight line y = slope·x + intercept for
//! x in 0..=10, written as `/out/points.csv` (`x,y`), `/out/plot.svg` and
//! `/out/metrics.json` (`mean_y`, `max_y`).
//!
//! Parameters:
//! - `slope` (float).
//! - `intercept` (float, default 0).

use std::fmt::Write as _;

use serde::Deserialize;
use xy::Series;

#[derive(Deserialize)]
struct Params {
    slope: f64,
    #[serde(default)]
    intercept: f64,
}

fn main() {
    repx_guest::run(|ctx| {
        let p: Params = ctx.params()?;
        let points: Vec<(f64, f64)> = (0..=10)
            .map(f64::from)
            .map(|x| (x, p.slope * x + p.intercept))
            .collect();

        let mut csv = String::from("x,y\n");
        for (x, y) in &points {
            writeln!(csv, "{x},{y}")?;
        }
        std::fs::write(ctx.out().join("points.csv"), csv)?;

        let mean_y = points.iter().map(|&(_, y)| y).sum::<f64>() / points.len() as f64;
        let max_y = points
            .iter()
            .map(|&(_, y)| y)
            .fold(f64::NEG_INFINITY, f64::max);
        let metrics = serde_json::json!({ "mean_y": mean_y, "max_y": max_y });
        std::fs::write(
            ctx.out().join("metrics.json"),
            serde_json::to_string_pretty(&metrics)?,
        )?;

        let series = [Series {
            label: None,
            points,
        }];
        std::fs::write(
            ctx.out().join("plot.svg"),
            xy::line_chart("x", "y", &series),
        )?;
        Ok(())
    })
}
