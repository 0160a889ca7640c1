//! The plugin contract as the Rust SDK sees it; see README.md beside this file.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::time::{SystemTime, UNIX_EPOCH};

use repx_guest::{Level, Tool};
use serde_json::{Value, json};

fn sorted_names(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn main() {
    let out_empty = sorted_names("/out").is_empty();
    repx_guest::run(|_ctx| {
        let mut report = BTreeMap::new();
        report.insert("out_empty_at_start", json!(out_empty));
        report.insert("inputs", json!(sorted_names("/in")));
        let refused = fs::File::create("/in/data/new-file").is_err()
            && OpenOptions::new()
                .write(true)
                .open("/in/data/a.txt")
                .is_err();
        report.insert("input_write_refused", json!(refused));
        let params = std::env::var("REPX_PARAMS").ok();
        report.insert("params", json!(params));
        let mut env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
        env.sort();
        report.insert("env_names", json!(env));
        let clock = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        report.insert("clock_s", json!(clock));
        // std's RandomState keys come from the WASI random source.
        let random = std::collections::hash_map::RandomState::new();
        let random = std::hash::BuildHasher::hash_one(&random, 0u64);
        report.insert("random", json!(format!("{random:016x}")));
        let granted = Tool::new("echo")
            .arg("granted")
            .stdout_file("/out/tool.txt")
            .status()?;
        report.insert("tool_granted", json!(granted));
        let refusal = match Tool::new("nope").status() {
            Ok(status) => Value::from(format!("ran, status {status}")),
            Err(refused) => Value::from(refused.to_string()),
        };
        report.insert("tool_refused", refusal);
        fs::write("/out/report.json", serde_json::to_string_pretty(&report)?)?;
        repx_guest::log(Level::Warn, "conformance: Rust warns");
        repx_guest::progress(1, 2);
        repx_guest::progress(2, 2);
        let code = params
            .and_then(|p| serde_json::from_str::<Value>(&p).ok())
            .and_then(|p| p["exit"].as_u64())
            .unwrap_or(0);
        if code != 0 {
            repx_guest::exit(code as u8);
        }
        Ok(())
    })
}
