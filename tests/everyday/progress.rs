//! What a run shows while it goes: cached jobs counted per stage (`-v` lists each), labels
//! that keep the swept parameters, plain lines on a terminal of unknown width,
//! `--progress`, "running" within `-j`, and a timestamp on every JSON event.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::common::{FAILING, cache_dir, cache_home, copy_example, lab_dir, repx};

/// `repx ARGS` in `dir` on a pseudo-terminal of `columns` (`script`), as its transcript and
/// exit code.
fn on_terminal(dir: &Path, columns: u16, args: &str) -> (String, i32) {
    let command = format!(
        "stty cols {columns} rows {}; {} {args}; echo \"exit=$?\"",
        if columns == 0 { 0 } else { 24 },
        env!("CARGO_BIN_EXE_repx")
    );
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .env("REPX_CACHE_DIR", cache_dir())
        .env("XDG_CACHE_HOME", cache_home(dir))
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

/// Three `demo-train` jobs: `seed` swept, `steps` and `work` the same for all.
const TRAIN: &str = r#"
[stages.train]
plugin = "plugins/demo-train.wasm"
params = { seed = 1, steps = 10, work = 1000 }
outputs = ["metrics.json"]
[pipelines.main]
stages = ["train"]
[runs.grid]
pipelines = ["main"]
params = { seed = [1, 2, 3] }
"#;

#[test]
fn a_noop_prints_one_cached_line_per_stage_and_verbose_lists_every_job() {
    let lab = copy_example("param-sweep");
    repx(lab.path(), &["run"]).expect_code(0);
    let again = repx(lab.path(), &["run"]);
    again.expect_code(0);
    // The example has a lab.nix beside its repx.toml, which a warning notes.
    let lines: Vec<&str> = again
        .stderr
        .lines()
        .filter(|l| !l.starts_with("warning: "))
        .collect();
    assert_eq!(
        lines,
        [
            "cached  point    6 jobs",
            "cached  combine  1 job",
            "7 jobs: 0 ran, 7 cached, 0 failed, 0 skipped"
        ],
        "{}",
        again.stderr
    );

    let verbose = repx(lab.path(), &["run", "-v"]);
    verbose.expect_code(0);
    let each: Vec<&str> = verbose
        .stderr
        .lines()
        .filter(|l| l.starts_with("cached "))
        .collect();
    assert_eq!(each.len(), 7, "{}", verbose.stderr);
    let points: BTreeSet<&str> = each
        .iter()
        .filter_map(|l| l.strip_prefix("cached point ["))
        .filter_map(|rest| rest.split_once(']').map(|(params, _)| params))
        .collect();
    assert_eq!(points.len(), 6, "one line per point: {}", verbose.stderr);
    assert!(points.contains("intercept=10 slope=5"), "{points:?}");
}

#[test]
fn labels_keep_the_swept_parameters_and_the_others_where_there_is_room() {
    let lab = lab_dir(TRAIN, &["demo-train"]);
    // 40 columns leave a label 24: the swept seed, then what fits.
    let (narrow, code) = on_terminal(lab.path(), 40, "run --progress plain");
    assert_eq!(code, 0, "{narrow}");
    for seed in 1..=3 {
        let label = format!("ran train [seed={seed} steps=10 …]");
        assert!(narrow.contains(&label), "no {label:?} in:\n{narrow}");
    }
    assert!(!narrow.contains("work="), "{narrow}");
    // In a log there is room for all of them.
    let wide = repx(lab.path(), &["run", "--force"]);
    wide.expect_code(0)
        .expect_stderr(&["ran train [seed=2 steps=10 work=1000]"]);
}

#[test]
fn a_terminal_of_unknown_width_gets_plain_lines_and_progress_says_which() {
    let lab = copy_example("param-sweep");
    // `script`'s own pseudo-terminal is 0×0.
    let (transcript, code) = on_terminal(lab.path(), 0, "run");
    assert_eq!(code, 0, "{transcript}");
    assert!(!transcript.contains("\x1b["), "bars drawn:\n{transcript:?}");
    let ran = transcript
        .lines()
        .filter(|l| l.starts_with("   ran point ["))
        .count();
    assert_eq!(ran, 6, "{transcript}");
    let longest = transcript.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 200, "a {longest}-byte line:\n{transcript:?}");

    // Bars where they are asked for, plain lines where those are.
    let (bars, code) = on_terminal(lab.path(), 0, "run --force --progress bars");
    assert_eq!(code, 0, "{bars}");
    assert!(bars.contains("\x1b["), "no bars drawn:\n{bars:?}");
    let (plain, code) = on_terminal(lab.path(), 100, "run --force --progress plain");
    assert_eq!(code, 0, "{plain}");
    assert!(!plain.contains("\x1b["), "bars drawn:\n{plain:?}");
    assert!(plain.contains("7 jobs: 7 ran"), "{plain}");
}

#[test]
fn progress_none_shows_only_failures_and_the_counts() {
    let lab = lab_dir(FAILING, &["test-fail"]);
    let out = repx(
        lab.path(),
        &["run", "--progress", "none", "--continue-on-failure"],
    );
    out.expect_code(1).expect_stderr(&[
        "FAILED a-bad [code=3]",
        "1 ran, 0 cached, 1 failed, 1 skipped",
    ]);
    assert!(out.ran().is_empty(), "{}", out.stderr);
    assert!(!out.stderr.contains("skip "), "{}", out.stderr);

    let both = repx(lab.path(), &["run", "--json", "--progress", "plain"]);
    both.expect_code(2).expect_stderr(&["--progress", "--json"]);
}

#[test]
fn json_events_have_timestamps_and_running_jobs_stay_within_j() {
    let lab = copy_example("param-sweep");
    let out = repx(lab.path(), &["run", "--json", "-j", "2"]);
    out.expect_code(0);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    for event in &events {
        let time = event["time"]
            .as_str()
            .unwrap_or_else(|| panic!("no time: {event}"));
        // RFC 3339 in UTC with milliseconds: 2026-12-05T19:50:01.123Z.
        let shape: String = time
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999-99-99T99:99:99.999Z", "{event}");
    }
    // Running: started and neither sealed (ran, waiting to be committed) nor failed.
    let mut running = BTreeSet::new();
    let mut most = 0;
    for event in &events {
        let id = event["id"].as_str().unwrap_or_default().to_string();
        match event["event"].as_str() {
            Some("job_started") => {
                running.insert(id);
            }
            Some("job_sealed") | Some("job_failed") => {
                assert!(running.remove(&id), "{id} was not running: {event}");
            }
            Some("job_finished") => assert!(!running.contains(&id), "finished unsealed: {event}"),
            _ => {}
        }
        most = most.max(running.len());
    }
    assert!(most <= 2, "{most} running at -j 2:\n{}", out.stdout);
    let sealed = events.iter().filter(|e| e["event"] == "job_sealed").count();
    assert_eq!(sealed, 7, "{}", out.stdout);
}
