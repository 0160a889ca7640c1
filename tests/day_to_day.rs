//! End-to-end tests of the real `repx` binary for day-to-day use: progress on a terminal,
//! `--json` events, results tables, graphs and the report page, garbage collection,
//! scaffolding, completions and the job views.
//!
//! Needs the plugins: `scripts/build-plugins`.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{cache_dir, copy_example, repx};

/// The lines of `text` parsed as JSON objects.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
        })
        .collect()
}

fn count(events: &[serde_json::Value], name: &str) -> usize {
    events.iter().filter(|e| e["event"] == name).count()
}

// ---------------------------------------------------------------------------------------
// Progress and events

#[test]
fn json_events_parse_and_count_the_jobs() {
    let lab = copy_example("param-sweep");
    let out = repx(lab.path(), &["run", "--json"]);
    out.expect_code(0);
    let events = json_lines(&out.stdout);
    assert_eq!(events.first().unwrap()["event"], "run_started");
    assert_eq!(events[0]["jobs"], 7);
    assert_eq!(count(&events, "job_started"), 7, "{}", out.stdout);
    assert_eq!(count(&events, "job_finished"), 7, "{}", out.stdout);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["ran"], 7);
    assert_eq!(last["failed"], 0);

    let points: BTreeSet<(i64, i64)> = events
        .iter()
        .filter(|e| e["event"] == "job_finished" && e["stage"] == "point")
        .map(|e| {
            let output = std::path::Path::new(e["output"].as_str().unwrap());
            assert!(output.join("metrics.json").is_file(), "{e}");
            assert!(e["duration_s"].as_f64().is_some(), "{e}");
            assert_eq!(e["id"].as_str().unwrap().len(), 64, "{e}");
            (
                e["params"]["slope"].as_i64().unwrap(),
                e["params"]["intercept"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: BTreeSet<(i64, i64)> = [1, 2, 5]
        .into_iter()
        .flat_map(|s| [0, 10].map(|i| (s, i)))
        .collect();
    assert_eq!(points, expected);

    let again = repx(lab.path(), &["run", "--json"]);
    again.expect_code(0);
    let events = json_lines(&again.stdout);
    assert_eq!(count(&events, "job_cached"), 7, "{}", again.stdout);
    assert_eq!(count(&events, "job_started"), 0, "{}", again.stdout);
}

#[test]
fn a_failed_job_is_a_json_event_with_its_error_and_log_command() {
    let lab = common::lab_dir(
        r#"
[stages.fail]
plugin = "plugins/test-fail.wasm"
[pipelines.p]
stages = ["fail"]
[runs.r]
pipelines = ["p"]
"#,
        &["test-fail"],
    );
    let out = repx(lab.path(), &["run", "--json"]);
    out.expect_code(1);
    let events = json_lines(&out.stdout);
    let failed: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "job_failed").collect();
    assert_eq!(failed.len(), 1, "{}", out.stdout);
    assert!(failed[0]["error"].as_str().unwrap().contains("exit status"), "{}", failed[0]);
    assert!(failed[0]["log"].as_str().unwrap().starts_with("repx log "), "{}", failed[0]);
    assert_eq!(events.last().unwrap()["failed"], 1);
}

/// Runs `repx ARGS` in `dir` on a pseudo-terminal `columns` wide; returns what it drew
/// and its exit code.
fn on_terminal(dir: &std::path::Path, columns: u16, args: &str) -> (String, i32) {
    let command = format!(
        "stty cols {columns} rows 12; {} {args}; echo \"exit=$?\"",
        env!("CARGO_BIN_EXE_repx")
    );
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .env("REPX_CACHE_DIR", cache_dir())
        .env("TERM", "xterm-256color")
        .output()
        .expect("running `script` (util-linux)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let code = text
        .rsplit("exit=")
        .next()
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no exit code in:\n{text}"));
    (text, code)
}

#[test]
fn progress_bars_on_narrow_and_wide_terminals_do_not_panic() {
    for columns in [20, 120] {
        let lab = copy_example("param-sweep");
        let (screen, code) = on_terminal(lab.path(), columns, "run");
        assert_eq!(code, 0, "{columns} columns:\n{screen}");
        assert!(!screen.contains("panicked"), "{columns} columns:\n{screen}");
        assert!(screen.contains("7 jobs: 7 ran, 0 cached"), "{columns} columns:\n{screen}");
        // The bars are drawn with cursor movements; plain lines are not.
        assert!(screen.contains("\x1b["), "{columns} columns: no bars drawn:\n{screen}");
        assert!(screen.contains("ran point [intercept=0 slope=1]"), "{screen}");
    }
}

#[test]
fn plain_lines_when_not_on_a_terminal() {
    let lab = copy_example("param-sweep");
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    assert!(!out.stderr.contains('\x1b'), "{}", out.stderr);
    assert_eq!(out.ran().len(), 7, "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------
// Results

/// A CSV document as its header and rows (no quoted fields expected here).
fn parse_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(String::from).collect::<Vec<_>>())
        .collect();
    for row in &rows {
        assert_eq!(row.len(), header.len(), "ragged CSV:\n{text}");
    }
    (header, rows)
}

#[test]
fn results_of_the_sweep_are_a_row_per_point_with_metrics() {
    let lab = copy_example("param-sweep");
    repx(lab.path(), &["run"]).expect_code(0);
    let out = repx(lab.path(), &["results", "sweep", "--format", "csv"]);
    out.expect_code(0);
    let (header, rows) = parse_csv(&out.stdout);
    for column in ["id", "stage", "state", "slope", "intercept", "mean_y", "max_y"] {
        assert!(header.iter().any(|h| h == column), "no column {column}: {header:?}");
    }
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows.len(), 6, "{}", out.stdout);
    let mut points = BTreeSet::new();
    for row in &rows {
        assert_eq!(row[col("stage")], "point");
        assert_eq!(row[col("state")], "done");
        let slope: f64 = row[col("slope")].parse().unwrap();
        let intercept: f64 = row[col("intercept")].parse().unwrap();
        let mean: f64 = row[col("mean_y")].parse().unwrap();
        let max: f64 = row[col("max_y")].parse().unwrap();
        // y = slope·x + intercept for x in 0..=10.
        assert!((mean - (5.0 * slope + intercept)).abs() < 1e-9, "{row:?}");
        assert!((max - (10.0 * slope + intercept)).abs() < 1e-9, "{row:?}");
        points.insert((slope as i64, intercept as i64));
    }
    assert_eq!(points.len(), 6);

    let json = repx(lab.path(), &["results", "--format", "json"]);
    json.expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["jobs"].as_array().unwrap().len(), 6);

    let table = repx(lab.path(), &["results", "--stage", "combine"]);
    table.expect_code(0);
    assert_eq!(table.stdout.lines().count(), 2, "{}", table.stdout);
}

#[test]
fn results_before_running_show_jobs_to_do() {
    let lab = copy_example("param-sweep");
    let out = repx(lab.path(), &["results", "--format", "csv", "--stage", "point"]);
    out.expect_code(0);
    let (header, rows) = parse_csv(&out.stdout);
    let state = header.iter().position(|h| h == "state").unwrap();
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r[state] == "todo"), "{}", out.stdout);
}

#[test]
fn results_suggest_close_run_and_stage_names() {
    let lab = copy_example("param-sweep");
    repx(lab.path(), &["results", "swep"])
        .expect_code(2)
        .expect_stderr(&["no run `swep`", "did you mean `sweep`?"]);
    repx(lab.path(), &["results", "--stage", "pint"])
        .expect_code(2)
        .expect_stderr(&["no stage `pint`", "did you mean `point`?"]);
}
