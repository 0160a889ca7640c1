//! A lab file is strict: a key nothing reads is an error naming the file, the line, the key
//! and what it may have meant; a lab that would run nothing is an error; what is merely odd
//! is a warning.

use crate::INVALID;
use crate::common::{copy_example, job_dirs, lab_dir, repx};

/// Runs `repx run` on a lab made of `toml` and checks that it is refused with exit 2,
/// naming each of `needles`, and that nothing ran.
#[track_caller]
fn refused(toml: &str, needles: &[&str]) -> String {
    let lab = lab_dir(toml, &[]);
    let out = repx(lab.path(), &["run"]);
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
    out.stderr
}

const PIPELINE: &str = r#"
[pipelines.main]
stages = ["generate", "sum"]

[runs.main]
pipelines = ["main"]
"#;

#[test]
fn a_misspelt_inputs_key_is_refused_before_anything_runs() {
    let toml = format!(
        r#"[stages.generate]
plugin = "plugins/generate.wasm"
params = {{ n = 10 }}
outputs = ["data.csv"]

[stages.sum]
plugin = "plugins/sum.wasm"
inptus = {{ data = "generate" }}
outputs = ["sum.txt"]
{PIPELINE}"#
    );
    refused(
        &toml,
        &["repx.toml:8: `stages.sum.inptus`: unknown key (did you mean `inputs`?)"],
    );
}

#[test]
fn a_misspelt_outputs_key_is_refused() {
    let toml = format!(
        r#"[stages.generate]
plugin = "plugins/generate.wasm"
output = ["data.csv"]

[stages.sum]
plugin = "plugins/sum.wasm"
inputs = {{ data = "generate" }}
{PIPELINE}"#
    );
    refused(
        &toml,
        &["repx.toml:3: `stages.generate.output`: unknown key (did you mean `outputs`?)"],
    );
}

#[test]
fn a_run_table_instead_of_runs_is_refused_and_not_zero_jobs() {
    let toml = r#"[stages.generate]
plugin = "plugins/generate.wasm"

[pipelines.main]
stages = ["generate"]

[run.grid]
pipelines = ["main"]
"#;
    let stderr = refused(
        toml,
        &["repx.toml:7: `run`: unknown key (did you mean `runs`?)"],
    );
    // The misspelling explains the missing runs; it is not said twice.
    assert!(!stderr.contains("has no runs"), "{stderr}");
}

#[test]
fn a_lab_with_no_runs_is_refused() {
    let toml = r#"[stages.generate]
plugin = "plugins/generate.wasm"

[pipelines.main]
stages = ["generate"]
"#;
    refused(toml, &["repx.toml: `runs`: this lab has no runs"]);
}

#[test]
fn an_unknown_key_without_a_near_name_lists_what_the_table_takes() {
    let toml = r#"[stages.generate]
plugin = "plugins/generate.wasm"
colour = "blue"

[pipelines.main]
stages = ["generate"]

[runs.main]
pipelines = ["main"]
"#;
    refused(
        toml,
        &["repx.toml:3: `stages.generate.colour`: unknown key; `stages.generate` takes `plugin`"],
    );
}

#[test]
fn an_unknown_key_in_lab_json_is_refused_by_its_key() {
    let lab = lab_dir("", &[]);
    std::fs::remove_file(lab.path().join("repx.toml")).unwrap();
    std::fs::write(
        lab.path().join("lab.json"),
        r#"{"stages": {"generate": {"plugin": "plugins/generate.wasm", "ouputs": ["data.csv"]}},
 "pipelines": {"main": {"stages": ["generate"]}},
 "runs": {"main": {"pipelines": ["main"]}}}"#,
    )
    .unwrap();
    let out = repx(lab.path(), &["run"]);
    out.expect_code(INVALID).expect_stderr(&[
        "lab.json",
        "`stages.generate.ouputs`: unknown key (did you mean `outputs`?)",
    ]);
    assert!(job_dirs(lab.path()).is_empty());
}

#[test]
fn a_stage_in_no_pipeline_is_only_a_warning() {
    let toml = r#"[stages.generate]
plugin = "plugins/generate.wasm"
params = { n = 5 }
outputs = ["data.csv"]

[stages.later]
plugin = "plugins/sum.wasm"

[pipelines.main]
stages = ["generate"]

[pipelines.spare]
stages = ["generate"]

[runs.main]
pipelines = ["main"]
"#;
    let lab = lab_dir(toml, &[]);
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0).expect_stderr(&[
        "warning: ",
        "repx.toml:6: stage `later` is in no pipeline",
        "repx.toml:12: pipeline `spare` is in no run",
    ]);
    assert_eq!(job_dirs(lab.path()).len(), 1, "{}", out.stderr);
}

#[test]
fn every_example_lab_loads_without_a_warning() {
    for (example, file) in [
        ("simple", "repx.toml"),
        ("simple", "lab.nix"),
        ("param-sweep", "repx.toml"),
        ("param-sweep", "lab.nix"),
        ("impure-incremental", "repx.toml"),
        ("scatter", "repx.toml"),
    ] {
        let dir = copy_example(example);
        let out = repx(dir.path(), &["list", "runs", "--lab", file]);
        out.expect_code(0);
        assert!(
            !out.stderr.contains("warning"),
            "{example}/{file}: {}",
            out.stderr
        );
        assert!(!out.stdout.is_empty(), "{example}/{file} lists no runs");
    }
}
