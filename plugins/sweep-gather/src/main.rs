//! Example stage of a parameter sweep: gathers every `sweep-point` job (gather input
//! `points`) into `/out/combined.csv` (`slope,intercept,mean_y,max_y`, one row per job,
//! sorted by slope then intercept), `/out/combined.svg` (one labelled line per job) and
//! `/out/metrics.json` (`points`: the number of jobs).
//!
//! No parameters.

use std::fmt::Write as _;

use serde::Deserialize;
use xy::Series;

/// The parameters of an upstream `sweep-point` job.
#[derive(Deserialize)]
struct Point {
    slope: f64,
    #[serde(default)]
    intercept: f64,
}

struct Line {
    slope: f64,
    intercept: f64,
    points: Vec<(f64, f64)>,
}

fn main() {
    repx_guest::run(|ctx| {
        let mut lines = Vec::new();
        for job in ctx.gather("points")? {
            let params: Point = serde_json::from_value(job.params)
                .map_err(|e| format!("parameters of upstream job {}: {e}", job.id))?;
            let points = xy::read_csv(&job.path.join("points.csv"))?;
            lines.push(Line {
                slope: params.slope,
                intercept: params.intercept,
                points,
            });
        }
        lines.sort_by(|a, b| {
            a.slope
                .total_cmp(&b.slope)
                .then(a.intercept.total_cmp(&b.intercept))
        });

        let mut csv = String::from("slope,intercept,mean_y,max_y\n");
        for line in &lines {
            let ys = line.points.iter().map(|&(_, y)| y);
            let mean_y = ys.clone().sum::<f64>() / line.points.len() as f64;
            let max_y = ys.fold(f64::NEG_INFINITY, f64::max);
            writeln!(csv, "{},{},{mean_y},{max_y}", line.slope, line.intercept)?;
        }
        std::fs::write(ctx.out().join("combined.csv"), csv)?;

        let metrics = serde_json::json!({ "points": lines.len() });
        std::fs::write(
            ctx.out().join("metrics.json"),
            serde_json::to_string_pretty(&metrics)?,
        )?;

        let series: Vec<Series> = lines
            .into_iter()
            .map(|line| Series {
                label: Some(format!(
                    "slope {}, intercept {}",
                    line.slope, line.intercept
                )),
                points: line.points,
            })
            .collect();
        std::fs::write(
            ctx.out().join("combined.svg"),
            xy::line_chart("x", "y", &series),
        )?;
        Ok(())
    })
}
