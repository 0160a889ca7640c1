//! End-to-end tests of the real `repx` binary for the "Foundation" issue: the examples run
//! and give the right numbers, re-runs are free, deleted outputs are rebuilt, bad labs are
//! refused with a message naming the file and key, failures are reported and contained,
//! and a plugin sees exactly the contract of DESIGN.md.
//!
//! Needs the plugins: `scripts/build-plugins`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::{
    FAILING, TempDir, copy_example, failed_id, job_dirs, job_with_output, lab_dir, plugin_wasm,
    plugin_wasm_p1, read_output, remove_tree, repx, tree_state,
};

const INVALID: i32 = 2;
const FAILED: i32 = 1;

// ---------------------------------------------------------------------------------------
// The simple example

#[test]
fn simple_example_computes_the_right_outputs() {
    let lab = copy_example("simple");
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    assert_eq!(out.ran(), ["generate", "plot", "sum"], "{}", out.stderr);
    assert_eq!(
        out.summary(),
        "3 jobs: 3 ran, 0 cached, 0 failed, 0 skipped"
    );

    let expected: f64 = (0..100).map(|i| (f64::from(i) / 10.0).sin() + 2.0).sum();
    let sum_txt = read_output(lab.path(), "sum.txt");
    let sum: f64 = sum_txt
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("sum.txt {sum_txt:?}: {e}"));
    assert!(
        (sum - expected).abs() < 1e-6,
        "sum.txt says {sum}, expected {expected}"
    );

    let csv = read_output(lab.path(), "data.csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 101, "data.csv:\n{csv}");
    assert_eq!(lines[0], "i,value");
    for (i, line) in lines[1..].iter().enumerate() {
        let (index, value) = line.split_once(',').expect("two columns");
        assert_eq!(index, i.to_string());
        let value: f64 = value.parse().unwrap();
        assert!(
            (value - ((i as f64 / 10.0).sin() + 2.0)).abs() < 1e-12,
            "row {line}"
        );
    }

    let svg = read_output(lab.path(), "plot.svg");
    let head = svg.trim_start();
    assert!(
        head.starts_with("<svg") || head.starts_with("<?xml"),
        "plot.svg starts {:?}",
        &head[..head.len().min(40)]
    );
    assert!(svg.contains("<svg"), "plot.svg has no <svg> element");
    assert!(svg.trim_end().ends_with("</svg>"), "plot.svg is not closed");

    // One committed directory per job, and no failures.
    assert_eq!(job_dirs(lab.path()).len(), 3);
    let failed: Vec<_> = fs::read_dir(lab.path().join(".repx/failed"))
        .unwrap()
        .collect();
    assert!(failed.is_empty(), "failed attempts: {failed:?}");
}

#[test]
fn committed_outputs_are_read_only() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    let job = job_with_output(lab.path(), "sum.txt");
    for path in [job.join("out"), job.join("out/sum.txt")] {
        let perms = fs::metadata(&path).unwrap().permissions();
        assert!(perms.readonly(), "{} is writable", path.display());
    }
}

#[test]
fn rerun_runs_nothing_and_rewrites_nothing() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    let jobs = lab.path().join(".repx/jobs");
    let records = lab.path().join(".repx/records.jsonl");
    let before = tree_state(&jobs);
    let records_before = fs::read(&records).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&records_before).lines().count(),
        3,
        "one record per job"
    );

    let out = repx(lab.path(), &["run"]);
    out.expect_code(0).expect_stderr(&["0 ran, 3 cached"]);
    assert!(out.ran().is_empty(), "re-ran {:?}", out.ran());
    assert_eq!(out.cached(), ["generate", "plot", "sum"]);

    assert_eq!(tree_state(&jobs), before, "files under .repx/jobs changed");
    assert_eq!(
        fs::read(&records).unwrap(),
        records_before,
        "records.jsonl changed"
    );
}

#[test]
fn deleting_an_output_reruns_that_job_and_keeps_what_read_the_same_bytes() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    let sum_before = read_output(lab.path(), "sum.txt");
    let plot_job = job_with_output(lab.path(), "plot.svg");
    let plot_state = tree_state(&plot_job);
    let plot_svg_len = fs::metadata(plot_job.join("out/plot.svg")).unwrap().len();

    // One file of generate's output is deleted. Generate runs again, under the same id,
    // and gives the same bytes, so sum and plot, computed from those bytes, stay.
    let generate = job_with_output(lab.path(), "data.csv");
    delete_from_output(&generate.join("out/data.csv"));
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    assert_eq!(out.ran(), ["generate"], "{}", out.stderr);
    assert_eq!(out.cached(), ["plot", "sum"], "{}", out.stderr);
    assert_eq!(
        out.summary(),
        "3 jobs: 1 ran, 2 cached, 0 failed, 0 skipped"
    );
    assert_eq!(job_with_output(lab.path(), "data.csv"), generate, "same id");
    assert_eq!(tree_state(&plot_job), plot_state, "plot was rewritten");

    // A file added to plot's output: it is no longer the output that was sealed.
    let stray = plot_job.join("out/stray.txt");
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(stray.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(&stray, "not from plot").unwrap();
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    assert_eq!(out.ran(), ["plot"], "{}", out.stderr);
    assert!(!stray.exists(), "the stray file stayed in plot's output");
    assert_eq!(
        read_output(lab.path(), "plot.svg").len() as u64,
        plot_svg_len
    );

    let sum = job_with_output(lab.path(), "sum.txt");
    remove_tree(&sum);
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    assert_eq!(out.ran(), ["sum"], "{}", out.stderr);
    assert_eq!(out.cached(), ["generate", "plot"], "{}", out.stderr);
    assert_eq!(
        out.summary(),
        "3 jobs: 1 ran, 2 cached, 0 failed, 0 skipped"
    );
    assert_eq!(read_output(lab.path(), "sum.txt"), sum_before);
}

/// Deletes a file from a committed (read-only) output, as a user with rights to would.
fn delete_from_output(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let dir = file.parent().unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
}

#[test]
fn a_job_whose_upstream_output_came_back_different_runs_again() {
    // A pure stage's tool sees the real clock, so its output comes back other when it is
    // recomputed; what was made from the old bytes must not stay.
    let toml = r#"
[stages.stamp]
plugin = "plugins/test-tool.wasm"
tools = ["date"]
params = { tool = "date", args = ["+%s%N"], stdout_file = "/out/stamp.txt" }
outputs = ["stamp.txt"]

[stages.copy]
plugin = "plugins/test-tool.wasm"
tools = ["cat"]
inputs = { stamp = "stamp" }
params = { tool = "cat", args = ["/in/stamp/stamp.txt"], stdout_file = "/out/copy.txt" }
outputs = ["copy.txt"]

[pipelines.main]
stages = ["stamp", "copy"]

[runs.r]
pipelines = ["main"]
"#;
    let lab = lab_dir(toml, &["test-tool"]);
    repx(lab.path(), &["run"]).expect_code(0);
    let first = read_output(lab.path(), "stamp.txt");
    assert_eq!(read_output(lab.path(), "copy.txt"), first);

    remove_tree(&job_with_output(lab.path(), "stamp.txt"));
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    assert_eq!(out.ran(), ["copy", "stamp"], "{}", out.stderr);
    let second = read_output(lab.path(), "stamp.txt");
    assert_ne!(second, first, "the clock did not move");
    assert_eq!(read_output(lab.path(), "copy.txt"), second);

    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    assert_eq!(
        out.summary(),
        "2 jobs: 0 ran, 2 cached, 0 failed, 0 skipped"
    );
}

// ---------------------------------------------------------------------------------------
// The parameter sweep example

#[test]
fn param_sweep_gathers_every_point() {
    let lab = copy_example("param-sweep");
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    assert_eq!(
        out.summary(),
        "7 jobs: 7 ran, 0 cached, 0 failed, 0 skipped"
    );
    let mut ran = out.ran();
    ran.dedup();
    assert_eq!(ran, ["combine", "point"]);
    assert_eq!(out.ran().len(), 7);

    let csv = read_output(lab.path(), "combined.csv");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("slope,intercept,mean_y,max_y"));
    let mut points = BTreeSet::new();
    let mut rows = 0;
    for line in lines {
        rows += 1;
        let fields: Vec<f64> = line
            .split(',')
            .map(|f| f.parse().unwrap_or_else(|e| panic!("{line}: {e}")))
            .collect();
        let [slope, intercept, mean_y, max_y] = fields[..] else {
            panic!("row {line:?} has not 4 fields");
        };
        assert!(
            (mean_y - (slope * 5.0 + intercept)).abs() < 1e-9,
            "row {line}"
        );
        assert!(
            (max_y - (slope * 10.0 + intercept)).abs() < 1e-9,
            "row {line}"
        );
        points.insert((slope as i64, intercept as i64));
    }
    assert_eq!(rows, 6, "combined.csv:\n{csv}");
    let expected: BTreeSet<(i64, i64)> = [1, 2, 5]
        .into_iter()
        .flat_map(|s| [0, 10].map(|i| (s, i)))
        .collect();
    assert_eq!(points, expected);
}

// ---------------------------------------------------------------------------------------
// Invalid labs and command lines: exit 2, the file and key named, nothing run

const GENERATE: &str = r#"
[stages.generate]
plugin = "plugins/generate.wasm"
params = { n = 10, seed = 1 }
"#;

/// Runs `repx run` (plus `args`) on a lab made of `toml` and checks that it is refused
/// with exit 2, a message holding each of `needles`, and no job run.
#[track_caller]
fn assert_invalid(toml: &str, args: &[&str], needles: &[&str]) {
    let lab = lab_dir(toml, &[]);
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let out = repx(lab.path(), &all);
    out.expect_code(INVALID).expect_stderr(needles);
    assert!(
        job_dirs(lab.path()).is_empty(),
        "a job ran:\n{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(" jobs: "),
        "jobs were scheduled:\n{}",
        out.stderr
    );
}

#[test]
fn unknown_input_stage_is_named_with_a_suggestion() {
    let toml = format!(
        r#"{GENERATE}
[stages.sum]
plugin = "plugins/sum.wasm"
inputs = {{ data = "generat" }}

[pipelines.p]
stages = ["generate", "sum"]

[runs.r]
pipelines = ["p"]
"#
    );
    assert_invalid(
        &toml,
        &[],
        &[
            "repx.toml:",
            "stages.sum.inputs.data",
            "unknown stage `generat`",
            "did you mean `generate`",
        ],
    );
}

#[test]
fn a_cycle_is_refused() {
    let toml = r#"
[stages.a]
plugin = "plugins/sum.wasm"
inputs = { x = "b" }

[stages.b]
plugin = "plugins/sum.wasm"
inputs = { y = "a" }

[pipelines.p]
stages = ["a", "b"]

[runs.r]
pipelines = ["p"]
"#;
    assert_invalid(
        toml,
        &[],
        &["repx.toml:", "stages.a", "cycle", "a -> b -> a"],
    );
}

#[test]
fn a_missing_plugin_file_is_refused() {
    let toml = r#"
[stages.a]
plugin = "plugins/nope.wasm"

[pipelines.p]
stages = ["a"]

[runs.r]
pipelines = ["p"]
"#;
    assert_invalid(
        toml,
        &[],
        &[
            "repx.toml:3:",
            "stages.a.plugin",
            "nope.wasm",
            "does not exist",
        ],
    );
}

#[test]
fn a_stage_listed_twice_in_a_pipeline_is_refused() {
    let toml = format!(
        r#"{GENERATE}
[pipelines.p]
stages = ["generate", "generate"]

[runs.r]
pipelines = ["p"]
"#
    );
    assert_invalid(
        &toml,
        &[],
        &[
            "repx.toml:",
            "pipelines.p.stages",
            "`generate` is listed twice",
        ],
    );
}

#[test]
fn a_duplicate_table_is_a_syntax_error_with_its_line() {
    let toml = format!(
        r#"{GENERATE}
[stages.generate]
plugin = "plugins/generate.wasm"

[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]
"#
    );
    // Line 1 is empty, the first table is on line 2, the duplicate on line 6.
    assert_invalid(&toml, &[], &["repx.toml:6:", "duplicate key"]);
}

#[test]
fn an_unclosed_string_is_one_error_on_its_line_not_a_cascade() {
    let toml = format!(
        r#"{GENERATE}outputs = ["data.csv]

[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]
"#
    );
    // The string opens on line 5 and swallows the lines after it: those are no errors.
    let lab = lab_dir(&toml, &[]);
    let out = repx(lab.path(), &["run"]);
    out.expect_code(INVALID).expect_stderr(&[
        "repx.toml:5: `stages.generate.outputs",
        "invalid basic string",
    ]);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn an_empty_axis_is_refused() {
    let toml = format!(
        r#"{GENERATE}
[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]
params = {{ seed = [] }}
"#
    );
    assert_invalid(
        &toml,
        &[],
        &["repx.toml:", "runs.r.params.seed", "empty axis"],
    );
}

#[test]
fn an_output_outside_out_is_refused() {
    let toml = r#"
[stages.generate]
plugin = "plugins/generate.wasm"
outputs = ["../x"]

[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]
"#;
    assert_invalid(
        toml,
        &[],
        &[
            "repx.toml:4:",
            "stages.generate.outputs",
            "`../x`",
            "relative path inside /out",
        ],
    );
}

#[test]
fn an_unknown_run_parameter_is_refused() {
    let toml = format!(
        r#"{GENERATE}
[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]
params = {{ sede = [1, 2] }}
"#
    );
    assert_invalid(
        &toml,
        &[],
        &[
            "repx.toml:",
            "runs.r.params.sede",
            "parameter `sede`",
            "did you mean `seed`",
        ],
    );
}

#[test]
fn an_unknown_run_on_the_command_line_is_refused() {
    let toml = format!(
        r#"{GENERATE}
[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]
"#
    );
    assert_invalid(
        &toml,
        &["nosuchrun"],
        &["repx.toml", "`nosuchrun`", "repx list runs"],
    );
}

#[test]
fn a_bad_flag_is_refused() {
    let toml = format!(
        r#"{GENERATE}
[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]
"#
    );
    assert_invalid(&toml, &["--no-such-flag"], &["--no-such-flag", "Usage"]);
}

#[test]
fn a_value_of_the_wrong_type_is_named_by_its_key_and_line() {
    let toml = r#"
[stages.generate]
plugin = "plugins/generate.wasm"
params = { n = 10 }
outputs = "data.csv"

[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]
"#;
    assert_invalid(
        toml,
        &[],
        &[
            "repx.toml:5: `stages.generate.outputs`: invalid type: string \"data.csv\", \
             expected a list of relative paths",
        ],
    );
}

#[test]
fn an_unknown_key_is_an_error_with_its_line_and_a_suggestion() {
    let toml = r#"
[stages.generate]
plugin = "plugins/generate.wasm"
ouputs = ["data.csv"]

[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]
"#;
    assert_invalid(
        toml,
        &[],
        &["repx.toml:4: `stages.generate.ouputs`: unknown key (did you mean `outputs`?)"],
    );
}

#[test]
fn a_misspelt_plugin_key_is_suggested() {
    let toml = r#"
[stages.generate]
plugn = "plugins/generate.wasm"

[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]
"#;
    assert_invalid(
        toml,
        &[],
        &["repx.toml:3: `stages.generate.plugn`: unknown key (did you mean `plugin`?)"],
    );
}

#[test]
fn a_tool_not_on_path_is_named_by_its_key_and_line() {
    let toml = r#"
[stages.generate]
plugin = "plugins/generate.wasm"
tools = ["repx-no-such-tool"]

[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]
"#;
    assert_invalid(
        toml,
        &[],
        &[
            "repx.toml:4: `stages.generate.tools`: tool `repx-no-such-tool`",
            "install it",
            "fix the name or give its absolute path",
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Failures

#[test]
fn a_failure_is_reported_and_its_dependents_skipped() {
    let lab = lab_dir(FAILING, &["test-fail"]);
    let out = repx(lab.path(), &["run"]);
    out.expect_code(FAILED).expect_stderr(&[
        "FAILED a-bad [code=3]",
        "exit status",
        "line 21",
        "line 30",
        "skip b-after",
        "1 failed, 1 skipped",
    ]);
    // Only the tail of stderr is shown.
    assert!(!out.stderr.contains("line 20\n"), "{}", out.stderr);
    let id = failed_id(&out.stderr, "a-bad");
    out.expect_stderr(&[&format!("repx log {id}")]);
    assert!(!out.ran().contains(&"b-after".to_string()));

    // Nothing of the failed job is committed; its logs are kept.
    let committed: Vec<_> = job_dirs(lab.path())
        .into_iter()
        .filter(|d| d.file_name().unwrap().to_string_lossy().starts_with(&id))
        .collect();
    assert!(committed.is_empty(), "failed job committed: {committed:?}");
    let failed: Vec<_> = fs::read_dir(lab.path().join(".repx/failed"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&id)
    );
    let stderr = fs::read_to_string(failed[0].join("stderr")).unwrap();
    assert!(
        stderr.starts_with("line 1\n") && stderr.contains("line 30"),
        "{stderr}"
    );

    // `repx log` shows the whole stderr; `repx list jobs` shows the states.
    let log = repx(lab.path(), &["log", &id]);
    log.expect_code(0);
    assert!(
        log.stdout.contains("line 1\n") && log.stdout.contains("line 30"),
        "repx log:\n{}",
        log.stdout
    );
    let jobs = repx(lab.path(), &["list", "jobs"]);
    jobs.expect_code(0);
    let state = |stage: &str| {
        jobs.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(stage))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no {stage} in\n{}", jobs.stdout))
            .to_string()
    };
    assert_eq!(state("a-bad"), "failed");
    assert_eq!(state("b-after"), "todo");
}

#[test]
fn continue_on_failure_runs_independent_jobs() {
    let lab = lab_dir(FAILING, &["test-fail"]);
    let out = repx(lab.path(), &["run", "-j", "1", "--continue-on-failure"]);
    out.expect_code(FAILED)
        .expect_stderr(&["FAILED a-bad", "skip b-after"]);
    assert_eq!(out.ran(), ["c-indep"], "{}", out.stderr);
    assert_eq!(
        out.summary(),
        "3 jobs: 1 ran, 0 cached, 1 failed, 1 skipped"
    );
    let data = read_output(lab.path(), "data.csv");
    assert_eq!(data.lines().count(), 6, "generate n=5:\n{data}");
}

#[test]
fn without_continue_on_failure_no_job_starts_after_a_failure() {
    // With one worker the jobs run one after another; `a-bad` is queued first, so once it
    // has failed `c-indep` must not start.
    let lab = lab_dir(FAILING, &["test-fail"]);
    let out = repx(lab.path(), &["run", "-j", "1"]);
    out.expect_code(FAILED);
    let after_failure = out
        .stderr
        .split_once("FAILED a-bad")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no failure reported:\n{}", out.stderr));
    assert!(
        !after_failure
            .lines()
            .any(|l| l.trim_start().starts_with("ran ")),
        "a job started after the failure:\n{}",
        out.stderr
    );
    assert!(
        read_output_missing(lab.path(), "data.csv"),
        "c-indep was committed after the failure"
    );
}

fn read_output_missing(lab: &Path, file: &str) -> bool {
    !job_dirs(lab)
        .iter()
        .any(|d| d.join("out").join(file).exists())
}

const TRAPPING: &str = r#"
[stages.t]
plugin = "plugins/test-trap.wasm"

[pipelines.p]
stages = ["t"]

[runs.r]
pipelines = ["p"]
"#;

#[test]
fn a_trap_fails_the_job() {
    let lab = lab_dir(TRAPPING, &["test-trap"]);
    let out = repx(lab.path(), &["run"]);
    out.expect_code(FAILED)
        .expect_stderr(&["FAILED t", "trap", "1 failed"]);
    let id = failed_id(&out.stderr, "t");
    out.expect_stderr(&[&format!("repx log {id}")]);
    assert!(job_dirs(lab.path()).is_empty());
}

#[test]
fn a_trap_names_its_cause() {
    // The plugin executes `unreachable`; the user must learn that from the report or the log.
    let lab = lab_dir(TRAPPING, &["test-trap"]);
    let out = repx(lab.path(), &["run"]);
    out.expect_code(FAILED);
    let id = failed_id(&out.stderr, "t");
    let log = repx(lab.path(), &["log", &id]);
    assert!(
        out.stderr.contains("unreachable") || log.stdout.contains("unreachable"),
        "the trap's cause is not told\n--- run stderr:\n{}\n--- repx log:\n{}{}",
        out.stderr,
        log.stdout,
        log.stderr
    );
}

#[test]
fn a_misnamed_input_fails_its_job_with_a_suggestion() {
    let lab = lab_dir(
        r#"
[stages.generate]
plugin = "plugins/generate.wasm"
params = { n = 10 }

[stages.sum]
plugin = "plugins/sum.wasm"
inputs = { dta = "generate" }

[pipelines.p]
stages = ["generate", "sum"]

[runs.r]
pipelines = ["p"]
"#,
        &[],
    );
    let out = repx(lab.path(), &["run"]);
    out.expect_code(FAILED).expect_stderr(&[
        "FAILED sum",
        "stage `sum` has no input `data` (it was given `dta`: did you mean `data`?); \
         name it in `stages.sum.inputs` of the lab",
    ]);
    assert_eq!(out.ran(), ["generate"], "{}", out.stderr);
}

#[test]
fn an_unknown_stage_parameter_fails_its_job_with_a_suggestion() {
    let lab = lab_dir(
        r#"
[stages.generate]
plugin = "plugins/generate.wasm"
params = { nn = 10 }

[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]
"#,
        &[],
    );
    let out = repx(lab.path(), &["run"]);
    // Not a run with the default `n` instead.
    out.expect_code(FAILED).expect_stderr(&[
        "FAILED generate",
        "stage `generate` has no parameter `nn` (did you mean `n`?): it takes `n`",
        "stages.generate.params",
    ]);
    assert!(job_dirs(lab.path()).is_empty(), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------
// The plugin contract, seen from inside (ad hoc mode)

fn contract(plugin: &Path) {
    let dir = TempDir::new();
    let input = dir.path().join("input");
    fs::create_dir_all(input.join("sub")).unwrap();
    fs::write(input.join("a.txt"), "hello\n").unwrap();
    fs::write(input.join("sub/b.txt"), "world\n").unwrap();
    let input_before = tree_state(&input);

    let plugin = plugin.to_str().unwrap();
    let run = |store: &str, out: &str, x: &str| {
        let result = repx(
            dir.path(),
            &[
                "run",
                "--plugin",
                plugin,
                "--input",
                "data=input",
                "--param",
                x,
                "--out",
                out,
                "--store",
                store,
            ],
        );
        result.expect_code(0);
        assert_eq!(
            result.summary(),
            "1 jobs: 1 ran, 0 cached, 0 failed, 0 skipped"
        );
        fs::read(dir.path().join(out).join("report.json")).unwrap()
    };
    let first = run("store1", "out1", "x=1");
    let report: serde_json::Value = serde_json::from_slice(&first)
        .unwrap_or_else(|e| panic!("report.json: {e}\n{}", String::from_utf8_lossy(&first)));
    let field = |key: &str| {
        report
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {report}"))
    };
    for (key, expected) in [
        ("out_empty_at_start", true),
        ("input_write_refused", true),
        ("escape_refused", true),
        ("work_present", false),
        ("tmp_writable", true),
    ] {
        assert_eq!(
            field(key),
            &serde_json::Value::Bool(expected),
            "{key} in {report:#}"
        );
    }
    assert_eq!(
        field("env_names"),
        &serde_json::json!(["REPX_JOB_ID", "REPX_MODE", "REPX_PARAMS", "REPX_STAGE"])
    );
    assert_eq!(field("inputs"), &serde_json::json!(["data"]));
    assert_eq!(
        field("input_write_untested"),
        &serde_json::json!([]),
        "an input file was tried"
    );
    assert_eq!(field("mode"), "pure");
    assert_eq!(field("clock_unix_nanos"), "1577836800000000000");
    let params: serde_json::Value =
        serde_json::from_str(field("params").as_str().expect("REPX_PARAMS is set")).unwrap();
    assert_eq!(params, serde_json::json!({ "x": 1 }));

    // The host's input directory is untouched.
    assert_eq!(
        tree_state(&input),
        input_before,
        "the input directory changed"
    );
    assert_eq!(fs::read_to_string(input.join("a.txt")).unwrap(), "hello\n");

    // The same job in another store: byte-identical (fixed clock, seeded random).
    let second = run("store2", "out2", "x=1");
    assert_eq!(
        String::from_utf8_lossy(&second),
        String::from_utf8_lossy(&first),
        "the same job differs between stores"
    );

    // Another job draws other numbers: the random source is seeded from the job id, not
    // constant. (Two `RandomState`s of one job differ even under a constant source, since
    // std steps its keys, so only another job can show this.)
    let other = run("store3", "out3", "x=2");
    let other: serde_json::Value = serde_json::from_slice(&other).unwrap();
    for key in ["random", "random2"] {
        assert_ne!(other[key], report[key], "{key} is the same for two jobs");
    }
    assert_eq!(other["clock_unix_nanos"], report["clock_unix_nanos"]);
}

#[test]
fn contract_holds_for_a_component() {
    contract(&plugin_wasm("contract-check"));
}

#[test]
fn contract_holds_for_a_core_module() {
    contract(&plugin_wasm_p1("contract-check"));
}

// ---------------------------------------------------------------------------------------
// Inspecting a lab and its store

#[test]
fn list_show_and_log() {
    let lab = copy_example("simple");
    let runs = repx(lab.path(), &["list", "runs"]);
    runs.expect_code(0);
    assert_eq!(
        runs.stdout.lines().next(),
        Some("simple"),
        "{}",
        runs.stdout
    );

    let jobs_of = |out: &common::Output| -> Vec<(String, String, String)> {
        out.stdout
            .lines()
            .map(|l| {
                let mut w = l.split_whitespace();
                let (id, state, stage) = (w.next(), w.next(), w.next());
                (
                    id.unwrap_or_default().to_string(),
                    state.unwrap_or_default().to_string(),
                    stage.unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let before = repx(lab.path(), &["list", "jobs"]);
    before.expect_code(0);
    let before = jobs_of(&before);
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(
        before.iter().all(|(_, state, _)| state == "todo"),
        "{before:?}"
    );

    repx(lab.path(), &["run"]).expect_code(0);
    let after = repx(lab.path(), &["list", "jobs"]);
    after.expect_code(0);
    let after = jobs_of(&after);
    assert_eq!(after.len(), 3, "{after:?}");
    let stages: BTreeSet<&str> = after.iter().map(|(_, _, s)| s.as_str()).collect();
    assert_eq!(stages, BTreeSet::from(["generate", "plot", "sum"]));
    assert!(
        after.iter().all(|(_, state, _)| state == "done"),
        "{after:?}"
    );
    // Ids are known before running and do not change by running.
    assert_eq!(
        before.iter().map(|j| &j.0).collect::<Vec<_>>(),
        after.iter().map(|j| &j.0).collect::<Vec<_>>()
    );

    let (sum_id, _, _) = after.iter().find(|(_, _, s)| s == "sum").unwrap();
    assert_eq!(sum_id.len(), 12);
    let full_id = job_with_output(lab.path(), "sum.txt")
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        full_id.starts_with(sum_id.as_str()),
        "{full_id} vs {sum_id}"
    );

    let show = repx(lab.path(), &["show", "job", &sum_id[..6]]);
    show.expect_code(0);
    assert!(show.stdout.contains(&full_id), "{}", show.stdout);
    let stage_line = show.stdout.lines().find(|l| l.starts_with("stage:"));
    assert_eq!(
        stage_line.map(|l| l.split_whitespace().nth(1)),
        Some(Some("sum")),
        "{}",
        show.stdout
    );

    let output = repx(lab.path(), &["show", "output", sum_id]);
    output.expect_code(0);
    assert!(output.stdout.contains("sum.txt"), "{}", output.stdout);

    let unknown = repx(lab.path(), &["show", "job", "zzzz"]);
    unknown.expect_code(INVALID);
}

#[test]
fn reading_commands_work_while_a_run_holds_the_store() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    // Hold the store's lock the way a running `repx run` does: on its directory.
    let lock = std::fs::File::open(lab.path().join(".repx")).unwrap();
    lock.lock().unwrap();
    repx(lab.path(), &["run", "--force"])
        .expect_code(1)
        .expect_stderr(&["in use by another repx process"]);
    let jobs = repx(lab.path(), &["list", "jobs"]);
    jobs.expect_code(0);
    assert_eq!(
        jobs.stdout.lines().filter(|l| l.contains(" done ")).count(),
        3,
        "{}",
        jobs.stdout
    );
    let id = jobs.stdout.split_whitespace().next().unwrap().to_string();
    repx(lab.path(), &["show", "job", &id]).expect_code(0);
    repx(lab.path(), &["log", &id]).expect_code(0);
    drop(lock);
}

#[test]
fn an_input_holding_the_store_is_snapshotted_without_it() {
    // `--input data=.` beside the default store `./.repx`: the snapshot must not copy the
    // store into itself, and the store's own changes must not change the input.
    let dir = TempDir::new();
    fs::write(dir.path().join("a.txt"), "hello\n").unwrap();
    let plugin = plugin_wasm("contract-check");
    let run = || {
        repx(
            dir.path(),
            &[
                "run",
                "--plugin",
                plugin.to_str().unwrap(),
                "--input",
                "data=.",
            ],
        )
    };
    let first = run();
    first.expect_code(0);
    let snapshots: Vec<_> = fs::read_dir(dir.path().join(".repx/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    let names: BTreeSet<String> = fs::read_dir(&snapshots[0])
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, BTreeSet::from(["a.txt".to_string()]));
    let leftovers: Vec<_> = fs::read_dir(dir.path().join(".repx/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name.to_string_lossy().starts_with("snapshot-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The store now holds a job; the input is the same, so the job is too.
    let second = run();
    second.expect_code(0);
    assert_eq!(
        second.summary(),
        "1 jobs: 0 ran, 1 cached, 0 failed, 0 skipped"
    );
}

// ---------------------------------------------------------------------------------------
// What the job id covers, and the CLI's smaller verbs

/// Each job of `repx list jobs` as (stage, short id).
fn listed_jobs(lab: &Path) -> Vec<(String, String)> {
    let jobs = repx(lab, &["list", "jobs"]);
    jobs.expect_code(0);
    jobs.stdout
        .lines()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (words[2].to_string(), words[0].to_string())
        })
        .collect()
}

#[test]
fn list_deps_prints_each_edge_and_a_job_id_runs_that_job_and_its_upstream() {
    let lab = copy_example("simple");
    let ids: std::collections::BTreeMap<String, String> =
        listed_jobs(lab.path()).into_iter().collect();
    let (generate, sum, plot) = (&ids["generate"], &ids["sum"], &ids["plot"]);

    let deps = repx(lab.path(), &["list", "deps"]);
    deps.expect_code(0);
    let mut edges: Vec<&str> = deps.stdout.lines().collect();
    edges.sort();
    let mut expected = [
        format!("{plot} plot -> {generate} generate"),
        format!("{sum} sum -> {generate} generate"),
    ];
    expected.sort();
    assert_eq!(edges, expected);

    // A prefix of sum's id: sum and what it reads, not plot.
    let run = repx(lab.path(), &["run", &sum[..6]]);
    run.expect_code(0);
    assert_eq!(run.ran(), ["generate", "sum"], "{}", run.stderr);
    assert_eq!(
        run.summary(),
        "2 jobs: 2 ran, 0 cached, 0 failed, 0 skipped"
    );
    assert!(read_output_missing(lab.path(), "plot.svg"));
    let states: BTreeSet<String> = repx(lab.path(), &["list", "jobs"])
        .stdout
        .lines()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        states,
        BTreeSet::from([
            format!("{generate} done generate"),
            format!("{sum} done sum"),
            format!("{plot} todo plot"),
        ])
    );
}

#[test]
fn zipped_axes_advance_together_and_cross_the_other_axes() {
    let plugin = plugin_wasm("contract-check");
    let lab = TempDir::new();
    fs::create_dir_all(lab.path().join("plugins")).unwrap();
    fs::copy(&plugin, lab.path().join("plugins/probe.wasm")).unwrap();
    fs::write(
        lab.path().join("repx.toml"),
        r#"
[stages.probe]
plugin = "plugins/probe.wasm"
params = { a = 0, b = "", c = 0 }

[pipelines.p]
stages = ["probe"]

[runs.r]
pipelines = ["p"]
params = { a = [1, 2, 3], b = ["one", "two", "three"], c = [10, 20] }
zip = [["a", "b"]]
"#,
    )
    .unwrap();
    let run = repx(lab.path(), &["run"]);
    run.expect_code(0);
    assert_eq!(
        run.summary(),
        "6 jobs: 6 ran, 0 cached, 0 failed, 0 skipped"
    );

    // The parameters each plugin was given, found through `repx results`.
    let results = repx(lab.path(), &["results", "--format", "json"]);
    results.expect_code(0);
    let results: serde_json::Value = serde_json::from_str(&results.stdout).unwrap();
    let seen: BTreeSet<String> = results["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| {
            let out = Path::new(job["output"].as_str().unwrap());
            let report: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(out.join("report.json")).unwrap())
                    .unwrap();
            let params: serde_json::Value =
                serde_json::from_str(report["params"].as_str().unwrap()).unwrap();
            assert_eq!(params, job["params"], "the plugin saw other parameters");
            params.to_string()
        })
        .collect();
    let expected: BTreeSet<String> = [(1, "one"), (2, "two"), (3, "three")]
        .into_iter()
        .flat_map(|(a, b)| [10, 20].map(|c| serde_json::json!({"a": a, "b": b, "c": c})))
        .map(|p| p.to_string())
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn equal_jobs_of_two_runs_and_pipelines_are_one_job() {
    let lab = lab_dir(
        r#"
[stages.generate]
plugin = "plugins/generate.wasm"
params = { n = 10 }

[stages.sum]
plugin = "plugins/sum.wasm"
inputs = { data = "generate" }

[stages.plot]
plugin = "plugins/plot.wasm"
inputs = { data = "generate" }

[pipelines.sums]
stages = ["generate", "sum"]

[pipelines.plots]
stages = ["generate", "plot"]

[runs.small]
pipelines = ["sums"]
params = { n = [3, 5] }

[runs.large]
pipelines = ["plots"]
params = { n = [5, 7] }
"#,
        &[],
    );
    // generate n=5 is in both runs: 3 generate, 2 sum, 2 plot.
    let run = repx(lab.path(), &["run"]);
    run.expect_code(0);
    assert_eq!(
        run.summary(),
        "7 jobs: 7 ran, 0 cached, 0 failed, 0 skipped"
    );
    assert_eq!(
        run.ran(),
        [
            "generate", "generate", "generate", "plot", "plot", "sum", "sum"
        ]
    );
    let shared: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("ran generate [n=5]"))
        .collect();
    assert_eq!(shared.len(), 1, "{}", run.stderr);
    assert_eq!(job_dirs(lab.path()).len(), 7);

    // Each run alone finds the shared job done.
    let large = repx(lab.path(), &["run", "large"]);
    large.expect_code(0);
    assert_eq!(
        large.summary(),
        "4 jobs: 0 ran, 4 cached, 0 failed, 0 skipped"
    );
}

/// `repx` with the compiled-plugin cache where it is by default: `$XDG_CACHE_HOME/repx`.
fn repx_caching_in(dir: &Path, args: &[&str], xdg_cache: &Path) -> common::Output {
    let output = common::repx_command(dir, args)
        .env_remove("REPX_CACHE_DIR")
        .env("XDG_CACHE_HOME", xdg_cache)
        .output()
        .unwrap();
    common::Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Every file under `root` whose name ends with `.cwasm`.
fn artifacts(root: &Path) -> Vec<std::path::PathBuf> {
    tree_state(root)
        .into_iter()
        .map(|(path, _, _)| path)
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect()
}

#[test]
fn compiled_plugins_are_cached_outside_the_lab_and_reused_by_a_fresh_store() {
    let cache = TempDir::new();
    let first = copy_example("simple");
    repx_caching_in(first.path(), &["run"], cache.path()).expect_code(0);
    let compiled = artifacts(cache.path());
    assert_eq!(compiled.len(), 3, "one per plugin: {compiled:?}");
    assert!(
        compiled
            .iter()
            .all(|p| p.starts_with(cache.path().join("repx")))
    );
    // Nothing compiled lies in the lab's directory or its store, which plugins write.
    assert_eq!(artifacts(first.path()), Vec::<std::path::PathBuf>::new());

    // Another lab, another store: every job runs, no plugin is compiled again. (The
    // stores are in the same cache directory, beside the compiled plugins.)
    let compiled_dir = cache.path().join("repx/wasm");
    let before = tree_state(&compiled_dir);
    let second = copy_example("simple");
    let run = repx_caching_in(second.path(), &["run"], cache.path());
    run.expect_code(0);
    assert_eq!(
        run.summary(),
        "3 jobs: 3 ran, 0 cached, 0 failed, 0 skipped"
    );
    assert_eq!(tree_state(&compiled_dir), before, "the cache was rewritten");
    assert_eq!(artifacts(second.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_cached_artifact_is_what_runs() {
    // Whoever can write the cache decides what runs: it must be a place no plugin writes.
    let cache = TempDir::new();
    let dir = TempDir::new();
    let ad_hoc = |plugin: &Path, out: &str, param: &str| {
        let plugin = plugin.to_str().unwrap();
        let args = ["run", "--plugin", plugin, "--param", param, "--out", out];
        repx_caching_in(dir.path(), &args, cache.path()).expect_code(0);
    };
    ad_hoc(&plugin_wasm("generate"), "generated", "n=3");
    let generate = artifacts(cache.path());
    assert_eq!(generate.len(), 1);
    ad_hoc(&plugin_wasm("contract-check"), "checked", "n=3");
    assert!(dir.path().join("checked/report.json").is_file());
    let contract_check: Vec<_> = artifacts(cache.path())
        .into_iter()
        .filter(|p| !generate.contains(p))
        .collect();
    assert_eq!(contract_check.len(), 1);

    // contract-check's artifact replaced by generate's: contract-check, run in a fresh
    // store, is generate.
    fs::copy(&generate[0], &contract_check[0]).unwrap();
    remove_tree(&common::default_store(dir.path()));
    ad_hoc(&plugin_wasm("contract-check"), "swapped", "n=3");
    let out = dir.path().join("swapped");
    assert!(!out.join("report.json").exists());
    assert_eq!(
        fs::read_to_string(out.join("data.csv"))
            .unwrap()
            .lines()
            .count(),
        4
    );
}

#[test]
fn param_sweep_draws_a_plot_per_point_and_one_line_per_point_combined() {
    let lab = copy_example("param-sweep");
    repx(lab.path(), &["run"]).expect_code(0);
    let polylines = |svg: &str| -> Vec<String> {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}:\n{svg}"));
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .map(|n| n.attribute("points").unwrap().to_string())
            .collect()
    };

    // Each point's plot: one line through its points.csv rows.
    let points: Vec<_> = job_dirs(lab.path())
        .into_iter()
        .filter(|d| d.join("out/points.csv").is_file())
        .collect();
    assert_eq!(points.len(), 6);
    for job in &points {
        let rows = fs::read_to_string(job.join("out/points.csv"))
            .unwrap()
            .lines()
            .count()
            - 1;
        let lines = polylines(&fs::read_to_string(job.join("out/plot.svg")).unwrap());
        assert_eq!(lines.len(), 1, "{}", job.display());
        assert_eq!(lines[0].split_whitespace().count(), rows);
    }

    // The combined plot: one distinct line per point, each labelled with its point.
    let svg = read_output(lab.path(), "combined.svg");
    let lines = polylines(&svg);
    assert_eq!(lines.len(), 6);
    assert_eq!(lines.iter().collect::<BTreeSet<_>>().len(), 6);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let labels: BTreeSet<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .filter(|t| t.starts_with("slope "))
        .collect();
    let expected: BTreeSet<String> = [1, 2, 5]
        .into_iter()
        .flat_map(|s| [0, 10].map(|i| format!("slope {s}, intercept {i}")))
        .collect();
    assert_eq!(
        labels,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
}

#[test]
fn an_ad_hoc_param_is_json_when_it_parses_and_a_string_otherwise() {
    let dir = TempDir::new();
    let plugin = plugin_wasm("contract-check");
    let run = repx(
        dir.path(),
        &[
            "run",
            "--plugin",
            plugin.to_str().unwrap(),
            "--param",
            "k=hello",
            "--param",
            "n=3",
            "--param",
            "quoted=\"3\"",
            "--out",
            "out",
        ],
    );
    run.expect_code(0);
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("out/report.json")).unwrap())
            .unwrap();
    let params: serde_json::Value =
        serde_json::from_str(report["params"].as_str().unwrap()).unwrap();
    assert_eq!(
        params,
        serde_json::json!({ "k": "hello", "n": 3, "quoted": "3" })
    );
}

// ---------------------------------------------------------------------------------------
// Interrupting a run

/// `repx run`'s exit code when interrupted (SIGINT, SIGTERM).
const INTERRUPTED: i32 = 130;

/// How long a signalled run may take to stop: far below the minute (or day) its sleeping
/// job would take, far above what stopping takes on a slow machine.
const STOP_BOUND: std::time::Duration = std::time::Duration::from_secs(20);

/// How long a run may take to reach a point the test waits for (plugins compile first).
const START_BOUND: std::time::Duration = std::time::Duration::from_secs(300);

/// A lab of two independent stages: `quick` (the simple example's `generate`) and `slow`,
/// whose `[stages.slow]` body is `slow`.
fn interrupt_lab(slow: &str, plugins: &[&str]) -> TempDir {
    let toml = format!(
        r#"
[stages.quick]
plugin = "plugins/generate.wasm"
params = {{ n = 100 }}
outputs = ["data.csv"]

[stages.slow]
{slow}

[pipelines.main]
stages = ["quick", "slow"]

[runs.main]
pipelines = ["main"]
"#
    );
    lab_dir(&toml, plugins)
}

/// `slow` in `mode` runs the granted tools `sh` and `sleep 60` (in pure mode inside
/// bubblewrap, in impure mode on the host), after leaving `sleeping` in its `/tmp`; with
/// `sleep = false`, only the mark.
fn sleeping_tool(mode: &str, sleep: bool) -> String {
    let script = if sleep {
        ": > sleeping && sleep 60"
    } else {
        ": > sleeping"
    };
    format!(
        r#"plugin = "plugins/test-tool.wasm"
mode = "{mode}"
tools = ["sh", "sleep"]
params = {{ tool = "sh", args = ["-c", "{script}"], cwd = "/tmp" }}"#
    )
}

/// A `repx run -j 2 --json` in progress, its events read as they come.
struct Running {
    child: std::process::Child,
    events: std::sync::mpsc::Receiver<serde_json::Value>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn start(lab: &Path) -> Running {
        use std::io::{BufRead, BufReader, Read};
        use std::process::Stdio;
        let mut child = common::repx_command(lab, &["run", "-j", "2", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running repx");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON event: {line:?}: {e}"));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        Running {
            child,
            events,
            stderr: Some(stderr),
        }
    }

    /// Reads events until each `(event, stage)` of `wanted` has come.
    #[track_caller]
    fn wait_for(&mut self, wanted: &[(&str, &str)]) {
        let until = std::time::Instant::now() + START_BOUND;
        let mut missing: BTreeSet<(&str, &str)> = wanted.iter().copied().collect();
        while !missing.is_empty() {
            let left = until.saturating_duration_since(std::time::Instant::now());
            let Ok(event) = self.events.recv_timeout(left) else {
                self.fail(&format!("no {missing:?} event within {START_BOUND:?}"));
            };
            let (Some(name), Some(stage)) = (event["event"].as_str(), event["stage"].as_str())
            else {
                continue;
            };
            assert_ne!(name, "job_failed", "{event}");
            missing.retain(|&(n, s)| (n, s) != (name, stage));
        }
    }

    /// Waits until `ready` holds.
    #[track_caller]
    fn wait_until(&mut self, what: &str, ready: impl Fn() -> bool) {
        let until = std::time::Instant::now() + START_BOUND;
        while !ready() {
            if std::time::Instant::now() > until {
                self.fail(&format!("not {what} within {START_BOUND:?}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// As [`Running::stop_with`], and the events not read yet.
    #[track_caller]
    fn stop_with_events(mut self, signal: libc::c_int) -> (i32, String, Vec<serde_json::Value>) {
        let (_, none) = std::sync::mpsc::channel();
        let events = std::mem::replace(&mut self.events, none);
        let (code, stderr) = self.stop_with(signal);
        // The reader ends with the run's stdout.
        (code, stderr, events.iter().collect())
    }

    /// Sends `signal` and waits for the run to exit: its exit code and stderr. A run still
    /// going after [`STOP_BOUND`] is killed and fails the test.
    #[track_caller]
    fn stop_with(mut self, signal: libc::c_int) -> (i32, String) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: a plain system call; the child is not reaped yet, so `pid` is still it.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let signalled = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let code = status.code().unwrap_or(-1);
                return (code, self.stderr());
            }
            if signalled.elapsed() > STOP_BOUND {
                self.fail(&format!(
                    "still running {STOP_BOUND:?} after signal {signal}"
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Everything the run wrote to stderr, once it has exited.
    fn stderr(&mut self) -> String {
        let reader = self.stderr.take();
        reader.and_then(|r| r.join().ok()).unwrap_or_default()
    }

    /// Kills the run and fails the test with `problem` and the run's stderr.
    #[track_caller]
    fn fail(&mut self, problem: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("repx run: {problem}\n--- stderr:\n{}", self.stderr());
    }
}

/// Every file (not directory) under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                stack.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            }
            Ok(_) => files.push(path),
            Err(_) => {}
        }
    }
    files
}

/// What an interrupted run must leave: `quick` committed and intact, nothing of `slow`
/// committed, nothing staged.
#[track_caller]
fn assert_only_quick_committed(lab: &Path, stderr: &str) {
    let jobs = job_dirs(lab);
    assert_eq!(jobs.len(), 1, "committed: {jobs:?}\n--- stderr:\n{stderr}");
    assert_eq!(jobs[0], job_with_output(lab, "data.csv"));
    // `tmp/` is cleared by the next command that opens the store: look before.
    let staged = files_under(&lab.join(".repx/tmp"));
    assert!(staged.is_empty(), "left staged: {staged:?}");
    let verify = repx(lab, &["verify"]);
    verify.expect_code(0);
    assert!(
        verify.stdout.contains("1 outputs checked, 0 damaged"),
        "{}",
        verify.stdout
    );
}

#[test]
fn ctrl_c_stops_a_running_tool_at_once_and_commits_nothing_half_done() {
    for mode in ["pure", "impure"] {
        let lab = interrupt_lab(&sleeping_tool(mode, true), &["test-tool"]);
        let mut run = Running::start(lab.path());
        run.wait_for(&[("job_finished", "quick"), ("job_started", "slow")]);
        // The tool is running once it has left its mark in the job's scratch `/tmp`.
        let tmp = lab.path().join(".repx/tmp");
        run.wait_until("running the tool", || {
            files_under(&tmp).iter().any(|f| f.ends_with("sleeping"))
        });

        let (code, stderr) = run.stop_with(libc::SIGINT);
        assert_eq!(code, INTERRUPTED, "{mode}\n--- stderr:\n{stderr}");
        assert_only_quick_committed(lab.path(), &stderr);

        // Made quick, the rest completes; what was committed is not run again.
        let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
        let toml = toml.replace(&sleeping_tool(mode, true), &sleeping_tool(mode, false));
        fs::write(lab.path().join("repx.toml"), toml).unwrap();
        let rerun = repx(lab.path(), &["run"]);
        rerun.expect_code(0);
        assert_eq!(rerun.cached(), ["quick"], "{mode}\n{}", rerun.stderr);
        assert_eq!(rerun.ran(), ["slow"], "{mode}\n{}", rerun.stderr);
        assert_eq!(read_output(lab.path(), "status.txt"), "0\n", "{mode}");
    }
}

#[test]
fn sigterm_and_ctrl_c_stop_a_plugin_asleep_in_the_host() {
    let lab = interrupt_lab(
        r#"plugin = "plugins/sleep-forever.wasm""#,
        &["sleep-forever"],
    );
    let mut run = Running::start(lab.path());
    run.wait_for(&[("job_finished", "quick"), ("job_started", "slow")]);
    wait_until_asleep(&mut run, lab.path());
    let (code, stderr) = run.stop_with(libc::SIGTERM);
    assert_eq!(code, INTERRUPTED, "--- stderr:\n{stderr}");
    assert_only_quick_committed(lab.path(), &stderr);

    // A re-run starts it again (and Ctrl-C stops it as well).
    let mut rerun = Running::start(lab.path());
    rerun.wait_for(&[("job_cached", "quick"), ("job_started", "slow")]);
    wait_until_asleep(&mut rerun, lab.path());
    let (code, stderr) = rerun.stop_with(libc::SIGINT);
    assert_eq!(code, INTERRUPTED, "--- stderr:\n{stderr}");
    assert_only_quick_committed(lab.path(), &stderr);
}

#[test]
fn an_interrupted_job_reads_interrupted_and_its_dependents_not_started() {
    let toml = r#"
[stages.quick]
plugin = "plugins/generate.wasm"
params = { n = 100 }
outputs = ["data.csv"]

[stages.slow]
plugin = "plugins/sleep-forever.wasm"
inputs = { data = "quick" }

[stages.after]
plugin = "plugins/sum.wasm"
inputs = { data = "slow" }

[pipelines.main]
stages = ["quick", "slow", "after"]

[runs.main]
pipelines = ["main"]
"#;
    let lab = lab_dir(toml, &["sleep-forever"]);
    let mut run = Running::start(lab.path());
    run.wait_for(&[("job_finished", "quick"), ("job_started", "slow")]);
    wait_until_asleep(&mut run, lab.path());
    let (code, stderr, events) = run.stop_with_events(libc::SIGINT);
    assert_eq!(code, INTERRUPTED, "--- stderr:\n{stderr}");
    let of = |name: &str, stage: &str| {
        events
            .iter()
            .find(|e| e["event"] == name && e["stage"] == stage)
            .unwrap_or_else(|| panic!("no {name} of {stage} in {events:#?}"))
            .clone()
    };
    // The job the interrupt cut off is of kind `interrupted`, not a failure of its own.
    assert_eq!(of("job_failed", "slow")["kind"], "interrupted");
    let after = of("job_skipped", "after");
    assert_eq!(after["interrupted"], true, "{after}");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(
        (last["failed"].as_u64(), last["skipped"].as_u64()),
        (Some(0), Some(0)),
        "{last}"
    );
    assert_eq!(last["not_run"], 2, "{last}");

    // In lines: `interrupted`, never FAILED, and the dependent is not started.
    let run = common::repx_command(lab.path(), &["run", "-j", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tmp = lab.path().join(".repx/tmp");
    let until = std::time::Instant::now() + START_BOUND;
    while !files_under(&tmp).iter().any(|f| f.ends_with("out/asleep")) {
        assert!(std::time::Instant::now() < until, "not asleep in time");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = libc::pid_t::try_from(run.id()).unwrap();
    // SAFETY: a plain system call; the child is not reaped yet, so `pid` is still it.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INTERRUPTED), "{stderr}");
    assert!(stderr.contains("interrupted slow "), "{stderr}");
    assert!(!stderr.contains("FAILED"), "{stderr}");
    assert!(
        stderr.contains("skip after: not started: the run was interrupted"),
        "{stderr}"
    );

    // The listing and the job's page say so too: cut off, not failed.
    let list = repx(lab.path(), &["list", "jobs"]);
    list.expect_code(0);
    let slow = list.stdout.lines().find(|l| l.contains(" slow")).unwrap();
    assert!(slow.contains("  interrupted slow"), "{}", list.stdout);
    let id = slow.split_whitespace().next().unwrap();
    let only = repx(lab.path(), &["list", "jobs", "--status", "interrupted"]);
    assert_eq!(
        only.stdout.lines().collect::<Vec<_>>(),
        [slow],
        "{}",
        only.stdout
    );
    let show = repx(lab.path(), &["show", "job", id]);
    assert!(show.stdout.contains("interrupted"), "{}", show.stdout);
    // And why it runs next: cut off, not failed.
    let dry = repx(lab.path(), &["run", "--dry-run"]);
    dry.expect_code(0);
    let said = format!("{}{}", dry.stdout, dry.stderr);
    assert!(said.contains("interrupted last time"), "{said}");
    assert!(!said.contains("failed last time"), "{said}");
    let viz = repx(lab.path(), &["viz", "--jobs"]);
    assert!(
        viz.stdout
            .lines()
            .any(|l| l.contains("label=\"slow") && l.contains("interrupted")),
        "{}",
        viz.stdout
    );
}

/// Waits for `sleep-forever`'s mark in its staged `/out`: then it is in a day's sleep in the
/// host, which no wasm runs to interrupt.
fn wait_until_asleep(run: &mut Running, lab: &Path) {
    let tmp = lab.join(".repx/tmp");
    run.wait_until("asleep in the host", || {
        files_under(&tmp).iter().any(|f| f.ends_with("out/asleep"))
    });
}
