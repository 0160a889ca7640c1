//! `repx bench` end to end: the real binary runs every case in its quick form and reports
//! them as JSON in the shape BENCHMARKS.md and scripts read. The figures of a test build
//! mean nothing and are not looked at; what is checked is that each case ran and reported
//! its measures, baselines, ratios and targets.

mod common;

use std::path::PathBuf;

use common::{TempDir, built, plugin_wasm, repo_root, repx};
use serde_json::Value;

const CASES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "h", "j"];

/// The directories the bench reads its plugins from, checked to hold them.
fn plugin_dirs() -> (PathBuf, PathBuf) {
    let wasm = plugin_wasm("bench-trivial");
    plugin_wasm("bench-kernel");
    plugin_wasm("bench-io");
    let native = built("plugins/target/release/bench-kernel");
    built("plugins/target/release/bench-io");
    (
        wasm.parent().unwrap().to_path_buf(),
        native.parent().unwrap().to_path_buf(),
    )
}

fn number(figure: &Value, key: &str) -> f64 {
    figure[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {figure}"))
}

/// `repx bench --quick --json` with `args`, its figures checked for the shape every figure
/// has.
fn quick_figures(args: &[&str]) -> Vec<Value> {
    let (wasm, native) = plugin_dirs();
    let work = TempDir::new();
    let mut all = vec![
        "bench",
        "--quick",
        "--json",
        "--plugins",
        wasm.to_str().unwrap(),
        "--native",
        native.to_str().unwrap(),
        "--work",
        work.path().to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = repx(&repo_root(), &all);
    out.expect_code(0);
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: not JSON:\n{}", out.stdout));
    assert_eq!(report["quick"], Value::Bool(true));
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    let figures = report["figures"].as_array().expect("a list of figures");

    for figure in figures {
        let value = number(figure, "value");
        assert!(value.is_finite() && value >= 0.0, "{figure}");
        assert!(figure["name"].as_str().is_some_and(|n| !n.is_empty()));
        assert!(figure["unit"].is_string(), "{figure}");
        let role = figure["role"].as_str().unwrap_or_default();
        assert!(
            ["measure", "baseline", "ratio", "detail"].contains(&role),
            "{figure}"
        );
        let extra = figure["extra"].as_bool().expect("`extra` is a boolean");
        match figure.get("target") {
            Some(target) => {
                let bound = target
                    .get("at_most")
                    .or_else(|| target.get("at_least"))
                    .and_then(Value::as_f64);
                assert!(bound.is_some(), "a target is a bound: {figure}");
                assert!(figure["met"].is_boolean(), "{figure}");
                assert!(!extra, "an extra figure has no target: {figure}");
            }
            None => assert!(figure.get("met").is_none(), "{figure}"),
        }
        if let Some(spread) = figure.get("spread") {
            let (min, max) = (number(spread, "min"), number(spread, "max"));
            assert!(min <= value && value <= max, "{figure}");
            assert!(spread["samples"].as_u64().unwrap() >= 2, "{figure}");
        }
    }
    figures.clone()
}

#[test]
fn a_quick_bench_reports_every_case_with_its_baselines_ratios_and_targets() {
    let figures = quick_figures(&[]);
    let of_case = |case: &str| -> Vec<&Value> {
        figures
            .iter()
            .filter(|f| f["case"].as_str() == Some(case))
            .collect()
    };
    let has = |figures: &[&Value], role: &str| figures.iter().any(|f| f["role"] == role);
    for case in CASES {
        let figures = of_case(case);
        assert!(
            figures.iter().any(|f| f.get("target").is_some()),
            "case {case} has no figure with a target"
        );
        // (b)'s baseline is its target: there is nothing to run the other way.
        if case != "b" {
            assert!(has(&figures, "baseline"), "case {case} has no baseline");
            assert!(has(&figures, "ratio"), "case {case} has no ratio");
        }
    }

    // (a) is the median of several sweeps, shown with its spread.
    let a = of_case("a");
    let ratio = a.iter().find(|f| f["role"] == "ratio").unwrap();
    assert_eq!(ratio["target"]["at_most"].as_f64(), Some(0.5));
    assert!(ratio.get("spread").is_some(), "{ratio}");

    // (d)'s target is SHA-256's; n-body is there, marked extra, without one.
    let d = of_case("d");
    let sha = d
        .iter()
        .find(|f| f["role"] == "ratio" && f["name"].as_str().unwrap().contains("SHA-256"))
        .expect("a SHA-256 ratio");
    assert_eq!(sha["target"]["at_least"].as_f64(), Some(0.7));
    assert_eq!(sha["extra"], Value::Bool(false));
    let nbody: Vec<_> = d
        .iter()
        .filter(|f| f["name"].as_str().unwrap().contains("n-body"))
        .collect();
    assert_eq!(nbody.len(), 3, "n-body's wasm, native and ratio: {nbody:?}");
    assert!(nbody.iter().all(|f| f["extra"] == Value::Bool(true)));

    // (c) loads the plugin from its file within 5 ms as its target.
    let c = of_case("c");
    let load = c.iter().find(|f| f["role"] == "measure").unwrap();
    assert_eq!(load["target"]["at_most"].as_f64(), Some(5.0));
}

/// Case (i) in its languages that build in seconds: Rust's plugin is `bench-trivial`, C's
/// is built by `repx plugin build` (a Python or JavaScript build takes 20 s or more, and
/// they go through the same code). Each measured language has its per-job cost, first
/// and cached, and its cached load; the ratio to the baseline whose sides were measured is
/// there with its target, the other is not.
#[test]
fn case_i_measures_the_languages_asked_for_against_python3() {
    let figures = quick_figures(&["--cases", "i", "--languages", "rust,c"]);
    assert!(figures.iter().all(|f| f["case"] == "i"), "{figures:?}");
    let named = |role: &str, name: &str| -> Vec<&Value> {
        figures
            .iter()
            .filter(|f| f["role"] == role && f["name"].as_str().unwrap().starts_with(name))
            .collect()
    };
    assert_eq!(named("baseline", "one /usr/bin/python3 -c pass").len(), 1);
    for language in ["Rust", "C"] {
        let measures = named("measure", &format!("{language}: "));
        assert_eq!(
            measures.len(),
            2,
            "per job and load of {language}: {figures:?}"
        );
        let first = named("detail", &format!("{language}: per job, first run"));
        assert_eq!(first.len(), 1, "{figures:?}");
    }
    assert_eq!(
        named("detail", "C: repx plugin build").len(),
        1,
        "{figures:?}"
    );
    let ratios: Vec<&str> = figures
        .iter()
        .filter(|f| f["role"] == "ratio")
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(ratios, ["C job / Rust job"]);
    let c_over_rust = named("ratio", "C job / Rust job")[0];
    assert_eq!(c_over_rust["target"]["at_most"].as_f64(), Some(1.2));
    assert!(
        !figures
            .iter()
            .any(|f| f["name"].as_str().unwrap().starts_with("Python:")),
        "Python was not asked for: {figures:?}"
    );

    repx(
        &repo_root(),
        &["bench", "--cases", "i", "--languages", "cobol"],
    )
    .expect_code(2)
    .expect_stderr(&["cobol", "rust, c, python, js"]);
}

#[test]
fn a_missing_bench_plugin_is_named_with_how_to_build_it() {
    let empty = TempDir::new();
    let dir = empty.path().to_str().unwrap();
    let out = repx(
        &repo_root(),
        &["bench", "--quick", "--cases", "a", "--plugins", dir],
    );
    out.expect_code(2)
        .expect_stderr(&["bench-trivial.wasm", "scripts/build-plugins", "--plugins"]);

    let (wasm, _) = plugin_dirs();
    let out = repx(
        &repo_root(),
        &[
            "bench",
            "--quick",
            "--cases",
            "d",
            "--plugins",
            wasm.to_str().unwrap(),
            "--native",
            dir,
        ],
    );
    out.expect_code(2).expect_stderr(&[
        "the native build of bench-kernel",
        "scripts/build-plugins",
        "--native",
    ]);
}

#[test]
fn the_global_lab_and_store_flags_are_not_offered_to_bench_and_are_refused() {
    let help = repx(&repo_root(), &["bench", "--help"]);
    help.expect_code(0);
    assert!(help.stdout.contains("--work"), "{}", help.stdout);
    for flag in ["--lab", "--store"] {
        assert!(!help.stdout.contains(flag), "{}", help.stdout);
    }
    for args in [
        &["bench", "--lab", "elsewhere"][..],
        &["--store", "elsewhere", "bench"],
    ] {
        repx(&repo_root(), args)
            .expect_code(2)
            .expect_stderr(&["do not apply to `repx bench`", "--work"]);
    }
}
