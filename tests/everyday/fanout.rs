//! Fan-outs (`foreach = "STAGE:FILE"`) on `examples/scatter`: one job per item of a list
//! that a job writes, and what runs again when the list changes.

use std::fs;
use std::path::Path;

use crate::INVALID;
use crate::common::{Output, TempDir, copy_example, default_store, repx};

/// The short ids on the `ran` (or `cached`) lines of `stage`, in order.
fn ids(out: &Output, word: &str, stage: &str) -> Vec<String> {
    out.stderr
        .lines()
        .filter(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some(word) && words.next() == Some(stage)
        })
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.len() == 12 && w.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_string)
        })
        .collect()
}

/// The file `file` of the output of the job of `stage` that ran or was cached in `out`.
/// Runs read here are `-v`, so that each cached job has its line with its id.
#[track_caller]
fn output(lab: &Path, out: &Output, stage: &str, file: &str) -> String {
    let mut found = ids(out, "ran", stage);
    found.extend(ids(out, "cached", stage));
    assert_eq!(found.len(), 1, "{stage}: {found:?}\n{}", out.stderr);
    let jobs = default_store(lab).join("jobs");
    let dir = fs::read_dir(&jobs)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&found[0]))
        .unwrap_or_else(|| panic!("no job {} in {}", found[0], jobs.display()));
    fs::read_to_string(dir.path().join("out").join(file)).unwrap()
}

fn samples(lab: &TempDir, lines: &str) {
    fs::write(lab.path().join("data/samples.txt"), lines).unwrap();
}

/// `examples/scatter` whose `split` writes `list` as its list, as it is (its `raw` mode
/// copies `data/list.json`); with the lab file's text.
fn raw_scatter(list: &str) -> (TempDir, String) {
    let lab = copy_example("scatter");
    let toml = fs::read_to_string(lab.path().join("repx.toml"))
        .unwrap()
        .replace(
            "outputs = [\"items.json\"]",
            "outputs = [\"items.json\"]\nparams = { raw = true }",
        );
    fs::write(lab.path().join("repx.toml"), &toml).unwrap();
    fs::write(lab.path().join("data/list.json"), list).unwrap();
    (lab, toml)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn an_item_added_removed_or_moved_runs_only_itself_and_the_gather() {
    let lab = copy_example("scatter");
    samples(&lab, "alpha 1\nbeta 2\ngamma 3\n");
    let first = repx(lab.path(), &["run", "-v"]);
    first.expect_code(0);
    assert_eq!(first.ran(), ["split", "summary", "work", "work", "work"]);
    assert_eq!(
        output(lab.path(), &first, "summary", "summary.csv"),
        "name,value\nalpha,1\nbeta,4\ngamma,9\n"
    );
    let items = sorted(ids(&first, "ran", "work"));

    // Added: that item's job and the gather run; the others are cached, by the same ids.
    samples(&lab, "alpha 1\nbeta 2\ngamma 3\ndelta 4\n");
    let added = repx(lab.path(), &["run", "-v"]);
    added.expect_code(0);
    assert_eq!(added.ran(), ["split", "summary", "work"]);
    assert_eq!(sorted(ids(&added, "cached", "work")), items);
    assert_eq!(
        output(lab.path(), &added, "summary", "summary.csv"),
        "name,value\nalpha,1\nbeta,4\ngamma,9\ndelta,16\n"
    );

    // Removed: no item runs, the gather does.
    samples(&lab, "alpha 1\ngamma 3\ndelta 4\n");
    let removed = repx(lab.path(), &["run", "-v"]);
    removed.expect_code(0);
    assert_eq!(removed.ran(), ["split", "summary"]);
    assert_eq!(removed.cached(), ["work", "work", "work"]);

    // Moved: the gather runs, and its index follows the list's order.
    samples(&lab, "delta 4\nalpha 1\ngamma 3\n");
    let moved = repx(lab.path(), &["run", "-v"]);
    moved.expect_code(0);
    assert_eq!(moved.ran(), ["split", "summary"]);
    assert_eq!(
        output(lab.path(), &moved, "summary", "summary.csv"),
        "name,value\ndelta,16\nalpha,1\ngamma,9\n"
    );

    // Nothing changed: everything is cached, items included.
    let again = repx(lab.path(), &["run", "-v"]);
    again.expect_code(0);
    assert_eq!(again.ran(), Vec::<String>::new());
    assert!(
        again.summary().contains("5 jobs: 0 ran, 5 cached"),
        "{}",
        again.summary()
    );
}

#[test]
fn an_empty_list_gives_an_empty_gather() {
    let lab = copy_example("scatter");
    samples(&lab, "# no samples yet\n");
    let out = repx(lab.path(), &["run", "-v"]);
    out.expect_code(0);
    assert_eq!(out.ran(), ["split", "summary"]);
    assert_eq!(
        output(lab.path(), &out, "summary", "count.json"),
        r#"{"items":0}"#
    );
}

#[test]
fn a_bad_list_fails_the_job_that_wrote_it_naming_the_file_and_nothing_after_it_runs() {
    let cases: [(Option<&str>, &str, &str); 4] = [
        (Some(r#"{"name": "a"}"#), "", "is an object, not an array"),
        (
            Some(r#"[{"name": "a"}, 7]"#),
            "",
            "has item 1 (from 0) that is a number",
        ),
        (None, "", "is missing"),
        (
            Some(r#"[{"name": "a"}, {"name": "b"}, {"name": "c"}]"#),
            "max_items = 2\n",
            "has 3 items, more than the 2",
        ),
    ];
    for (list, extra, wrong) in cases {
        let lab = copy_example("scatter");
        let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
        let toml = toml
            .replace(
                "outputs = [\"items.json\"]",
                "outputs = [\"items.json\"]\nparams = { raw = true }",
            )
            .replace(
                "foreach = \"split:items.json\"",
                &format!("foreach = \"split:items.json\"\n{extra}"),
            );
        fs::write(lab.path().join("repx.toml"), toml).unwrap();
        if let Some(list) = list {
            fs::write(lab.path().join("data/list.json"), list).unwrap();
        }
        let out = repx(lab.path(), &["run", "-v"]);
        out.expect_code(1);
        out.expect_stderr(&["FAILED split", "items.json", "stage `work`", wrong]);
        let id = crate::common::failed_id(&out.stderr, "split");
        assert!(out.stderr.contains(&id));
        assert_eq!(out.ran(), Vec::<String>::new(), "{wrong}");
        // Nothing of it was committed, and no item ran.
        let jobs = default_store(lab.path()).join("jobs");
        assert_eq!(
            fs::read_dir(&jobs).map_or(0, |d| d.count()),
            0,
            "{wrong}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_fan_out_that_names_no_declared_output_or_takes_an_item_parameter_is_refused() {
    let lab = copy_example("scatter");
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    let cases = [
        (
            toml.replace("split:items.json", "split:list.json"),
            [
                "stages.work.foreach",
                "`list.json` is not a declared output of stage `split`",
            ],
        ),
        (
            toml.replace(
                "params = { power = 2 }",
                "params = { power = 2, \"item.x\" = 1 }",
            ),
            ["stages.work.params", "parameter `item.x`"],
        ),
    ];
    for (bad, needles) in cases {
        fs::write(lab.path().join("repx.toml"), bad).unwrap();
        let out = repx(lab.path(), &["run", "-v"]);
        out.expect_code(INVALID);
        out.expect_stderr(&needles);
    }
}

#[test]
fn a_swept_splitter_fans_out_per_point_and_chains_fan_out_again() {
    let lab = copy_example("scatter");
    samples(&lab, "alpha 1\nbeta 2\ngamma 3\n");
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    // Each point lists the first `take` samples; each item lists its parts, and each
    // part is a job of its own; `summary` gathers the parts.
    let toml = toml
        .replace(
            "outputs = [\"items.json\"]",
            "outputs = [\"items.json\"]\nparams = { take = 0 }",
        )
        .replace(
            "outputs = [\"result.json\"]",
            "outputs = [\"result.json\", \"parts.json\"]\n\n\
             [stages.part]\nplugin = \"plugins/scatter-work.wasm\"\n\
             foreach = \"work:parts.json\"\noutputs = [\"result.json\"]",
        )
        .replace("results = \"work[*]\"", "results = \"part[*]\"")
        .replace(
            "stages = [\"split\", \"work\", \"summary\"]",
            "stages = [\"split\", \"work\", \"part\", \"summary\"]",
        )
        .replace(
            "pipelines = [\"scatter\"]\n",
            "pipelines = [\"scatter\"]\nparams = { take = [2, 3] }\n",
        );
    fs::write(lab.path().join("repx.toml"), toml).unwrap();
    let out = repx(lab.path(), &["run", "-v"]);
    out.expect_code(0);
    // Two splits; alpha and beta are one job each for both points, gamma is the third;
    // their parts: 1 + 2 + 3; one gather of them all.
    assert_eq!(ids(&out, "ran", "split").len(), 2);
    assert_eq!(ids(&out, "ran", "work").len(), 3);
    assert_eq!(ids(&out, "ran", "part").len(), 6);
    assert_eq!(
        output(lab.path(), &out, "summary", "summary.csv"),
        "name,value\nalpha.0,1\nbeta.0,4\nbeta.1,4\ngamma.0,9\ngamma.1,9\ngamma.2,9\n"
    );
    assert!(
        out.summary().contains("12 jobs: 12 ran"),
        "{}",
        out.summary()
    );
    let again = repx(lab.path(), &["run", "-v"]);
    again.expect_code(0);
    assert!(
        again.summary().contains("12 jobs: 0 ran, 12 cached"),
        "{}",
        again.summary()
    );
}

#[test]
fn dry_run_viz_and_results_show_a_fan_out_before_and_after_its_list_is_written() {
    let lab = copy_example("scatter");
    samples(&lab, "alpha 1\nbeta 2\n");
    let dry = repx(lab.path(), &["run", "--dry-run"]);
    dry.expect_code(0);
    assert!(
        dry.stdout.contains(
            "would fan out work over items.json of split: how many jobs is unknown until that job runs"
        ),
        "{}",
        dry.stdout
    );
    let viz = repx(lab.path(), &["viz"]);
    viz.expect_code(0);
    assert!(
        viz.stdout
            .contains("[label=\"foreach items.json\", style=dotted]"),
        "{}",
        viz.stdout
    );

    repx(lab.path(), &["run", "-v"]).expect_code(0);
    // The split is cached: its list says how many jobs there are.
    let dry = repx(lab.path(), &["run", "--dry-run"]);
    dry.expect_code(0);
    assert!(
        dry.stdout.contains("stage work: 0 to run, 2 cached"),
        "{}",
        dry.stdout
    );
    assert!(!dry.stdout.contains("would fan out"), "{}", dry.stdout);
    let jobs = repx(lab.path(), &["viz", "--jobs"]);
    jobs.expect_code(0);
    assert_eq!(
        jobs.stdout.matches("style=dotted").count(),
        2,
        "{}",
        jobs.stdout
    );
    let results = repx(lab.path(), &["results", "--stage", "work"]);
    results.expect_code(0);
    let rows: Vec<&str> = results.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{}", results.stdout);
    assert!(
        rows[0].contains("alpha") && rows[1].contains("beta"),
        "{}",
        results.stdout
    );
}

#[test]
fn a_stage_after_a_fan_out_named_as_target_runs_the_splitter_first() {
    let lab = copy_example("scatter");
    samples(&lab, "alpha 1\nbeta 2\n");
    // The fan-out itself: the list is written first, then one job per item; not the gather.
    let work = repx(lab.path(), &["run", "work"]);
    work.expect_code(0);
    assert_eq!(work.ran(), ["split", "work", "work"]);

    // A stage downstream of it, in a fresh lab: everything it needs.
    let lab = copy_example("scatter");
    samples(&lab, "alpha 1\nbeta 2\ngamma 3\n");
    let dry = repx(lab.path(), &["run", "--dry-run", "summary"]);
    dry.expect_code(0);
    assert!(dry.stdout.contains("split"), "{}", dry.stdout);
    let summary = repx(lab.path(), &["run", "summary"]);
    summary.expect_code(0);
    assert_eq!(summary.ran(), ["split", "summary", "work", "work", "work"]);
    assert_eq!(
        output(lab.path(), &summary, "summary", "summary.csv"),
        "name,value\nalpha,1\nbeta,4\ngamma,9\n"
    );
}

#[test]
fn a_list_in_the_store_that_the_fan_out_no_longer_takes_runs_its_job_again_and_locks_nothing() {
    let (lab, toml) = raw_scatter(
        r#"[{"name": "a", "value": 1}, {"name": "b", "value": 2}, {"name": "c", "value": 3}]"#,
    );
    repx(lab.path(), &["run", "-v"]).expect_code(0);

    // The list in the store has three items; the fan-out now takes two.
    let lowered = toml.replace(
        "foreach = \"split:items.json\"",
        "foreach = \"split:items.json\"\nmax_items = 2",
    );
    fs::write(lab.path().join("repx.toml"), &lowered).unwrap();
    for read_only in [
        &["list", "jobs"][..],
        &["gc", "--dry-run"],
        &["run", "--dry-run"],
    ] {
        let out = repx(lab.path(), read_only);
        out.expect_code(0);
    }
    let dry = repx(lab.path(), &["run", "--dry-run"]);
    assert!(
        dry.stdout.contains("has 3 items, more than the 2"),
        "{}",
        dry.stdout
    );
    let out = repx(lab.path(), &["run", "-v"]);
    out.expect_code(1);
    out.expect_stderr(&["FAILED split", "items.json", "has 3 items, more than the 2"]);
    assert_eq!(out.ran(), Vec::<String>::new());

    // Taken again: the items and the gather come from the store as before.
    fs::write(lab.path().join("repx.toml"), &toml).unwrap();
    let back = repx(lab.path(), &["run", "-v"]);
    back.expect_code(0);
    assert_eq!(
        output(lab.path(), &back, "summary", "summary.csv"),
        "name,value\na,1\nb,4\nc,9\n"
    );
}

#[test]
fn control_characters_in_an_item_reach_no_terminal_table_or_page() {
    // ESC and BEL in a field's value, which becomes a parameter of the item's job.
    let (lab, _) = raw_scatter(r#"[{"name": "<b>a\u001b]52;c;aGk=\u0007\u001b[2J", "value": 1}]"#);
    let run = repx(lab.path(), &["run"]);
    run.expect_code(0);
    let page = lab.path().join("page.html");
    let page_arg = page.to_str().unwrap();
    let outputs = [
        run,
        repx(lab.path(), &["list", "jobs"]),
        repx(lab.path(), &["results", "--stage", "work"]),
        repx(lab.path(), &["viz", "--jobs"]),
        repx(lab.path(), &["report", "-o", page_arg]),
    ];
    for out in &outputs {
        out.expect_code(0);
        assert!(
            !out.stdout.contains('\u{1b}') && !out.stderr.contains('\u{1b}'),
            "{}{}",
            out.stdout,
            out.stderr
        );
    }
    let html = fs::read_to_string(&page).unwrap();
    assert!(!html.contains('\u{1b}') && !html.contains('\u{7}'));
    assert!(html.contains("\\u{1b}"), "the escape is shown, visibly");
    assert!(!html.contains("<b>"));
}

#[test]
fn gc_keeps_the_items_a_list_still_names_and_verify_checks_them() {
    let lab = copy_example("scatter");
    samples(&lab, "alpha 1\nbeta 2\n");
    let first = repx(lab.path(), &["run", "-v"]);
    first.expect_code(0);
    let store = default_store(lab.path());
    let jobs = || -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(store.join("jobs"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(ids(&first, "ran", "work").len(), 2);
    // The item the list will drop, by its label: which id sorts first varies with the
    // plugins' bytes.
    let beta = first
        .stderr
        .lines()
        .find(|l| l.contains("work [") && l.contains(r#"item.name="beta""#))
        .and_then(|l| {
            l.split_whitespace()
                .find(|w| w.len() == 12 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .unwrap_or_else(|| panic!("no `ran work` line of beta: {}", first.stderr))
        .to_string();
    assert_eq!(jobs().len(), 4, "split, two items and the gather");
    repx(lab.path(), &["gc"]).expect_code(0);
    assert_eq!(jobs().len(), 4, "gc removed a job its lab reaches");
    repx(lab.path(), &["verify"]).expect_code(0);

    // Beta's output, damaged: verify names it, and repair removes the job.
    let beta = jobs().into_iter().find(|j| j.starts_with(&beta)).unwrap();
    let result = store.join("jobs").join(&beta).join("out/result.json");
    fs::write(&result, "{}").unwrap();
    let verify = repx(lab.path(), &["verify"]);
    assert_ne!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
    assert!(
        format!("{}{}", verify.stdout, verify.stderr).contains("result.json"),
        "{}{}",
        verify.stdout,
        verify.stderr
    );
    repx(lab.path(), &["verify", "--repair"]).expect_code(0);

    // An item dropped from the list: gc removes its job, and keeps the one still listed.
    samples(&lab, "alpha 1\n");
    let after = repx(lab.path(), &["run", "-v"]);
    after.expect_code(0);
    let kept = ids(&after, "cached", "work");
    assert_eq!(kept.len(), 1, "{}", after.stderr);
    repx(lab.path(), &["gc"]).expect_code(0);
    let left = jobs();
    assert_eq!(
        left.len(),
        3,
        "the new split, alpha and the new gather: {left:?}"
    );
    assert!(left.iter().any(|j| j.starts_with(&kept[0])), "{left:?}");
}
