//! summarise: the count, range and mean of the samples (`/in/scaled/scaled.csv`) and the
//! size of the chart (`/in/chart/chart.svg`), as `/out/summary.json` and, for
//! `repx results`, `/out/metrics.json`.
//!
//! No parameters.

fn main() {
    repx_guest::run(|ctx| {
        let table = std::fs::read_to_string(ctx.input("scaled")?.join("scaled.csv"))?;
        let xs: Vec<f64> = table
            .lines()
            .skip(1)
            .filter_map(|line| line.split(',').nth(1)?.parse().ok())
            .collect();
        let chart = std::fs::metadata(ctx.input("chart")?.join("chart.svg"))?.len();
        let count = xs.len();
        let mean = xs.iter().sum::<f64>() / count.max(1) as f64;
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let summary = serde_json::json!({
            "count": count, "min": min, "max": max, "mean": mean, "chart_bytes": chart,
        });
        std::fs::write(
            ctx.out().join("summary.json"),
            serde_json::to_string_pretty(&summary)? + "\n",
        )?;
        std::fs::write(
            ctx.out().join("metrics.json"),
            serde_json::json!({ "count": count, "mean": mean }).to_string() + "\n",
        )?;
        Ok(())
    })
}
