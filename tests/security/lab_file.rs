//! Lab files that ask for too much or say one thing twice: a sweep too large to expand is
//! refused with its count before anything is expanded, and a `lab.json` that a JSON parser
//! would read silently one way (a duplicate key, an integer out of range) is refused by
//! file, line and key.

use std::fs;

use crate::common::{lab_dir, repx};

/// A run `big` sweeping four axes of `values` values each over one stage.
fn sweep_lab(values: usize, lab_table: &str) -> String {
    let axis: Vec<String> = (0..values).map(|v| v.to_string()).collect();
    let axis = axis.join(", ");
    format!(
        r#"
[lab]
{lab_table}

[stages.point]
plugin = "plugins/generate.wasm"
params = {{ n = 1, a = 0, b = 0, c = 0 }}

[pipelines.p]
stages = ["point"]

[runs.small]
pipelines = ["p"]
params = {{ n = [1, 2] }}

[runs.big]
pipelines = ["p"]
params = {{ n = [{axis}], a = [{axis}], b = [{axis}], c = [{axis}] }}
"#
    )
}

#[test]
fn a_sweep_past_the_bound_is_refused_with_its_count_before_it_is_expanded() {
    let lab = lab_dir(&sweep_lab(300, ""), &[]);
    for args in [
        &["list", "jobs"][..],
        &["run", "small"],
        &["show", "stage", "point"],
    ] {
        let out = repx(lab.path(), args);
        out.expect_code(2).expect_stderr(&[
            "repx.toml:",
            "`runs.big`",
            "the sweep expands to 8,100,000,000 jobs",
            "a: 300 × b: 300 × c: 300 × n: 300, 1 stage(s)",
            "more than the 10,000,000",
            "max_jobs",
        ]);
    }
    // Past u64: counted without overflow.
    let lab = lab_dir(&sweep_lab(70_000, ""), &[]);
    repx(lab.path(), &["list", "jobs"])
        .expect_code(2)
        .expect_stderr(&["more than 18 billion billion jobs"]);
}

#[test]
fn max_jobs_sets_the_bound() {
    let lab = lab_dir(&sweep_lab(3, "max_jobs = 80"), &[]);
    repx(lab.path(), &["list", "jobs"])
        .expect_code(2)
        .expect_stderr(&["expands to 81 jobs", "more than the 80"]);
    fs::write(lab.path().join("repx.toml"), sweep_lab(3, "max_jobs = 81")).unwrap();
    let out = repx(lab.path(), &["list", "jobs", "big"]);
    out.expect_code(0);
    assert_eq!(out.stdout.lines().count(), 81, "{}", out.stdout);
    fs::write(lab.path().join("repx.toml"), sweep_lab(3, "max_jobs = 0")).unwrap();
    repx(lab.path(), &["list", "jobs"])
        .expect_code(2)
        .expect_stderr(&["`lab.max_jobs`: is 0"]);
}

fn json_lab(stage: &str) -> String {
    format!(
        r#"{{
  "lab": {{ "name": "strict" }},
  "stages": {{
    "gen": {{
{stage}
    }}
  }},
  "pipelines": {{ "p": {{ "stages": ["gen"] }} }},
  "runs": {{ "r": {{ "pipelines": ["p"] }} }}
}}
"#
    )
}

#[test]
fn lab_json_refuses_a_duplicate_key_and_an_integer_out_of_range() {
    let lab = lab_dir("", &[]);
    let file = lab.path().join("lab.json");
    let good = r#"      "plugin": "plugins/generate.wasm",
      "params": { "n": 9223372036854775807 }"#;
    fs::write(&file, json_lab(good)).unwrap();
    fs::remove_file(lab.path().join("repx.toml")).ok();
    repx(lab.path(), &["list", "jobs"]).expect_code(0);

    let twice = r#"      "plugin": "plugins/generate.wasm",
      "mode": "pure",
      "mode": "impure""#;
    fs::write(&file, json_lab(twice)).unwrap();
    repx(lab.path(), &["list", "jobs"])
        .expect_code(2)
        .expect_stderr(&["lab.json:7: `stages.gen.mode`: is given twice"]);

    let huge = r#"      "plugin": "plugins/generate.wasm",
      "params": { "n": 18446744073709551616 }"#;
    fs::write(&file, json_lab(huge)).unwrap();
    repx(lab.path(), &["list", "jobs"])
        .expect_code(2)
        .expect_stderr(&[
            "lab.json:6: `stages.gen.params.n`: 18446744073709551616 is out of range",
        ]);
}
