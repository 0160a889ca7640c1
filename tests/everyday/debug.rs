//! `repx debug JOB`: one job run again outside the store, with a trace of every file
//! access and tool run of its plugin, refusals included.

use std::fs;

use crate::INVALID;
use crate::common::{TempDir, copy_example, job_dirs, lab_dir, read_output, repx};

/// The short id on `repx list jobs`' line for `stage`.
fn id_of(lab: &std::path::Path, stage: &str) -> String {
    let list = repx(lab, &["list", "jobs", "--stage", stage]);
    list.expect_code(0);
    list.stdout.split_whitespace().next().unwrap().to_string()
}

#[test]
fn debug_reruns_a_job_outside_the_store_and_traces_its_file_accesses() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    let records =
        fs::read_to_string(crate::common::default_store(lab.path()).join("records.jsonl")).unwrap();
    let scratch = TempDir::new();
    let dir = scratch.path().join("sum");
    let out = repx(
        lab.path(),
        &[
            "debug",
            &id_of(lab.path(), "sum"),
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    out.expect_code(0).expect_stderr(&[
        "open     /in/data/data.csv  ok\n",
        "read     /in/data/data.csv  ok\n",
        "open     /out/sum.txt  ok, for writing\n",
        "nothing was committed",
    ]);
    assert_eq!(
        fs::read_to_string(dir.join("out/sum.txt")).unwrap(),
        read_output(lab.path(), "sum.txt")
    );
    // The store is as it was: three jobs, the same records.
    assert_eq!(job_dirs(lab.path()).len(), 3);
    let after =
        fs::read_to_string(crate::common::default_store(lab.path()).join("records.jsonl")).unwrap();
    assert_eq!(records, after);
}

#[test]
fn debug_shows_what_was_refused() {
    let toml = r#"
[stages.generate]
plugin = "plugins/generate.wasm"
params = { n = 3 }
outputs = ["data.csv"]

[stages.attack]
plugin = "plugins/write-in-input.wasm"
inputs = { data = "generate" }

[stages.tool]
plugin = "plugins/test-tool.wasm"
params = { tool = "sh", args = ["-c", "echo hi"] }

[pipelines.main]
stages = ["generate", "attack", "tool"]

[runs.main]
pipelines = ["main"]
"#;
    let lab = lab_dir(toml, &["write-in-input", "test-tool"]);
    let run = repx(lab.path(), &["run", "--continue-on-failure"]);
    assert_eq!(run.ran(), ["attack", "generate"], "{}", run.stderr);

    let attack = repx(lab.path(), &["debug", &id_of(lab.path(), "attack")]);
    attack
        .expect_code(0)
        .expect_stderr(&["open     /in/data/data.csv  ok\n"]);
    assert!(
        attack
            .stderr
            .contains("open     /in/data/data.csv  error not-permitted, for writing\n"),
        "{}",
        attack.stderr
    );

    let tool = repx(lab.path(), &["debug", &id_of(lab.path(), "tool")]);
    tool.expect_code(1)
        .expect_stderr(&["run-tool sh -c echo hi  refused: ", "FAILED"]);
}

#[test]
fn debug_needs_the_upstream_jobs_done() {
    let lab = copy_example("simple");
    let out = repx(lab.path(), &["debug", &id_of(lab.path(), "sum")]);
    out.expect_code(INVALID).expect_stderr(&[
        "needs generate [n=100]",
        "which is not done",
        "repx run ",
    ]);
    assert!(job_dirs(lab.path()).is_empty());
}
