//! Stages as targets: `repx run STAGE` runs that stage's jobs and what they need; `--stage`
//! on `run`, `list jobs`, `results` and `report`; and the filters of `list jobs`.

use std::fs;

use crate::INVALID;
use crate::common::{TempDir, copy_example, job_dirs, repx};

/// A fresh `repx init --template sweep` lab: stage `point` swept over 6 points, gathered by
/// `combine`; run `sweep`.
fn sweep_lab() -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new();
    repx(dir.path(), &["init", "--template", "sweep", "lab"]).expect_code(0);
    let lab = dir.path().join("lab");
    (dir, lab)
}

#[test]
fn a_stage_target_runs_its_jobs_and_what_they_need_only() {
    let (_dir, lab) = sweep_lab();
    let points = repx(&lab, &["run", "point"]);
    points.expect_code(0);
    assert_eq!(points.ran(), ["point"; 6], "{}", points.stderr);
    let combine = repx(&lab, &["run", "combine"]);
    combine.expect_code(0);
    assert_eq!(combine.ran(), ["combine"], "{}", combine.stderr);

    // Upstream is run, siblings are not: `sum` needs `generate`, not `plot`.
    let simple = copy_example("simple");
    let sum = repx(simple.path(), &["run", "sum"]);
    sum.expect_code(0);
    assert_eq!(sum.ran(), ["generate", "sum"], "{}", sum.stderr);
    assert_eq!(job_dirs(simple.path()).len(), 2);
}

#[test]
fn a_name_that_is_a_run_and_a_stage_is_the_run_and_stage_names_the_stage() {
    let lab = copy_example("impure-incremental");
    let stage = repx(lab.path(), &["run", "--stage", "build"]);
    stage.expect_code(0);
    assert_eq!(stage.ran(), ["build"], "{}", stage.stderr);
    let run = repx(lab.path(), &["run", "build"]);
    run.expect_code(0)
        .expect_stderr(&["note: `build` is a run and a stage: running the run"]);
    assert_eq!(run.ran(), ["run"], "{}", run.stderr);
}

#[test]
fn a_stage_with_no_jobs_or_no_such_stage_is_refused() {
    let (_dir, lab) = sweep_lab();
    let toml = fs::read_to_string(lab.join("repx.toml")).unwrap();
    fs::write(
        lab.join("repx.toml"),
        format!("{toml}\n[stages.spare]\nplugin = \"plugins/sweep-point.wasm\"\n"),
    )
    .unwrap();
    repx(&lab, &["run", "spare"])
        .expect_code(INVALID)
        .expect_stderr(&["stage `spare` is in no run's pipelines"]);
    repx(&lab, &["run", "--stage", "pont"])
        .expect_code(INVALID)
        .expect_stderr(&["--stage pont", "did you mean `point`"]);
    repx(&lab, &["run", "pont"])
        .expect_code(INVALID)
        .expect_stderr(&[
            "`pont` is neither a run nor a stage",
            "did you mean `point`",
        ]);
    assert!(job_dirs(&lab).is_empty());
}

#[test]
fn list_jobs_filters_by_stage_status_and_parameter() {
    let (_dir, lab) = sweep_lab();
    repx(&lab, &["run", "point"]).expect_code(0);
    let lines = |args: &[&str]| {
        let mut all = vec!["list", "jobs"];
        all.extend_from_slice(args);
        let out = repx(&lab, &all);
        out.expect_code(0);
        out.stdout.lines().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(lines(&[]).len(), 7);
    let points = lines(&["--stage", "point"]);
    assert_eq!(points.len(), 6, "{points:?}");
    assert!(points.iter().all(|l| l.contains(" point [")), "{points:?}");
    let todo = lines(&["--status", "todo"]);
    assert_eq!(todo.len(), 1, "{todo:?}");
    assert!(todo[0].contains("combine"), "{todo:?}");
    let slope2 = lines(&["-p", "slope=2"]);
    assert_eq!(slope2.len(), 2, "{slope2:?}");
    assert!(slope2.iter().all(|l| l.contains("slope=2")), "{slope2:?}");
    let one = lines(&[
        "--stage",
        "point",
        "--status",
        "done",
        "-p",
        "slope=5",
        "-p",
        "intercept=10",
    ]);
    assert_eq!(one.len(), 1, "{one:?}");

    repx(&lab, &["list", "jobs", "--stage", "pont"])
        .expect_code(INVALID)
        .expect_stderr(&["--stage pont", "did you mean `point`"]);
    repx(&lab, &["list", "jobs", "-p", "slop=2"])
        .expect_code(INVALID)
        .expect_stderr(&["--param slop=2", "did you mean `slope`"]);
}

#[test]
fn report_and_results_take_a_stage() {
    let (_dir, lab) = sweep_lab();
    repx(&lab, &["run"]).expect_code(0);
    let results = repx(&lab, &["results", "--stage", "combine"]);
    results.expect_code(0);
    assert_eq!(results.stdout.lines().count(), 2, "{}", results.stdout);
    let page = lab.join("point.html");
    repx(
        &lab,
        &["report", "--stage", "point", "-o", page.to_str().unwrap()],
    )
    .expect_code(0);
    let html = fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("<span>6 jobs</span>"),
        "the counts are the stage's"
    );
    repx(&lab, &["report", "--stage", "pont"])
        .expect_code(INVALID)
        .expect_stderr(&["no stage `pont`"]);
}
