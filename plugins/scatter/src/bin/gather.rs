//! Example stage of a fan-out: gathers every job of `scatter-work` (gather input
//! `results`) into `/out/summary.csv` (`name,value`, one row per item in the list's
//! order) and `/out/count.json` (`items`: how many).
//!
//! No parameters.

use std::fmt::Write as _;

use serde::Deserialize;

#[derive(Deserialize)]
struct Result {
    name: String,
    value: f64,
}

fn main() {
    repx_guest::run(|ctx| {
        let jobs = ctx.gather("results")?;
        let mut csv = String::from("name,value\n");
        for job in &jobs {
            let text = std::fs::read_to_string(job.path.join("result.json"))?;
            let r: Result = serde_json::from_str(&text)
                .map_err(|e| format!("result.json of job {}: {e}", job.id))?;
            writeln!(csv, "{},{}", r.name, r.value)?;
        }
        std::fs::write(ctx.out().join("summary.csv"), csv)?;
        let count = serde_json::json!({ "items": jobs.len() });
        std::fs::write(ctx.out().join("count.json"), count.to_string())?;
        Ok(())
    })
}
