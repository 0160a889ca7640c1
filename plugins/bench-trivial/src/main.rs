//! Benchmark plugin: the smallest useful job. Writes `/out/result.json` holding its
//! parameters and job id, and nothing else, so a run of many of them measures what the
//! runner spends per job. Std only, so the plugin is small and quick to instantiate.
//!
//! Parameters: any; they are copied into the result as given.

fn main() {
    let params = std::env::var("REPX_PARAMS").unwrap_or_else(|_| "{}".into());
    let job = std::env::var("REPX_JOB_ID").unwrap_or_default();
    let result = format!("{{\"job\":\"{job}\",\"params\":{params}}}\n");
    if let Err(e) = std::fs::write("/out/result.json", result) {
        eprintln!("error: writing /out/result.json: {e}");
        std::process::exit(1);
    }
}
