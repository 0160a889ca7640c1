//! What a user sees before trusting a stage: `repx show stage` and `run --plugin …
//! --dry-run` list exactly what a job gets, and `repx plugin pin` pins plugins so that a
//! swapped one is refused.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{Output, TempDir, copy_example, job_dirs, repx, tree_state};

/// Where `name` is on this test's PATH, as a shell would find it.
fn on_path(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH is set");
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH: run scripts/setup"))
}

/// The lines of `out`'s stdout, trimmed at the end.
fn lines(out: &Output) -> Vec<&str> {
    out.stdout.lines().map(str::trim_end).collect()
}

/// The one line that starts with `start` (after the indent).
#[track_caller]
fn line<'a>(out: &'a Output, start: &str) -> &'a str {
    let found: Vec<&str> = lines(out)
        .into_iter()
        .filter(|l| l.trim_start().starts_with(start))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "lines starting with {start:?}\n{}",
        out.stdout
    );
    found[0]
}

/// Asserts that no line starts with `start`.
#[track_caller]
fn no_line(out: &Output, start: &str) {
    assert!(
        !lines(out).iter().any(|l| l.trim_start().starts_with(start)),
        "a line starts with {start:?}\n{}",
        out.stdout
    );
}

/// Splits a grant line into its words.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn show_stage_lists_what_an_impure_build_gets() {
    let lab = copy_example("impure-incremental");
    let dir = lab.path().display().to_string();
    let out = repx(lab.path(), &["show", "stage", "build"]);
    out.expect_code(0);

    let mode = line(&out, "mode ");
    assert!(mode.starts_with("mode     impure  !!"), "{mode}");
    // The writable project directory stands out.
    let work = line(&out, "/work ");
    assert_eq!(
        words(work)[..3],
        ["/work", "READ-WRITE", &dir],
        "{}",
        out.stdout
    );
    assert!(work.ends_with("!!"), "{work}");
    let src = line(&out, "/in/src ");
    assert_eq!(
        words(src),
        ["/in/src", "read-only", &format!("{dir}/src"), "(live)"]
    );
    assert_eq!(words(line(&out, "/out "))[1], "read-write");
    assert_eq!(words(line(&out, "/tmp "))[1], "read-write");
    // Each tool with the path it resolves to, under a marked line.
    assert!(line(&out, "tools ").ends_with("!!"), "{}", out.stdout);
    for tool in ["make", "cc"] {
        let resolved = on_path(tool).display().to_string();
        assert_eq!(words(line(&out, &format!("{tool} "))), [tool, &resolved]);
    }
    // The whole environment, with the stage's parameters.
    assert_eq!(
        words(line(&out, "REPX_PARAMS "))[..2],
        ["REPX_PARAMS", r#"{"target":"mybinary"}"#]
    );
    assert_eq!(words(line(&out, "REPX_STAGE ")), ["REPX_STAGE", "build"]);
    assert_eq!(words(line(&out, "REPX_MODE ")), ["REPX_MODE", "impure"]);
    line(&out, "REPX_JOB_ID ");
    assert!(line(&out, "env ").contains("nothing from the host"));
    assert_eq!(line(&out, "network "), "network  none");
    assert_eq!(
        line(&out, "limits "),
        "limits   memory 1G, time 1h, output 4G, log 16M, files 1024"
    );
    // Showing runs nothing and writes nothing.
    assert!(!lab.path().join(".repx").exists());
}

#[test]
fn show_stage_under_a_mode_override() {
    let lab = copy_example("impure-incremental");
    let dir = lab.path().display().to_string();

    let pure = repx(lab.path(), &["show", "stage", "build", "--pure"]);
    pure.expect_code(0);
    assert_eq!(line(&pure, "mode "), "mode     pure");
    no_line(&pure, "/work");
    assert!(line(&pure, "/in/src ").ends_with(&format!("snapshot of {dir}/src")));
    assert!(line(&pure, "tools ").contains("bubblewrap sandbox"));
    assert_eq!(words(line(&pure, "REPX_MODE ")), ["REPX_MODE", "pure"]);
    assert!(line(&pure, "time ").contains("fixed clock"));

    let hermetic = repx(lab.path(), &["show", "stage", "build", "--hermetic"]);
    hermetic.expect_code(0);
    assert!(line(&hermetic, "mode ").contains("Nix derivation"));
    assert!(line(&hermetic, "tools ").contains("must be a Nix store path"));
    no_line(&hermetic, "read-only ");
    // Host tools are refused in hermetic mode, as the run itself refuses them.
    for tool in ["make", "cc"] {
        let shown = line(&hermetic, &format!("{tool} "));
        assert!(shown.contains("REFUSED: not a Nix store path"), "{shown}");
    }
    let run = repx(lab.path(), &["run", "--hermetic"]);
    run.expect_code(2)
        .expect_stderr(&["tool `make`", "not a Nix store path"]);
    assert!(job_dirs(lab.path()).is_empty());

    // The mode of a job is part of it: the flags go with `show stage` only.
    let job = repx(lab.path(), &["show", "job", "0", "--pure"]);
    job.expect_code(2)
        .expect_stderr(&["--pure goes with `repx show stage` only"]);
}

#[test]
fn show_stage_lists_the_tool_sandbox() {
    let lab = TempDir::new();
    let bin = lab.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(on_path("true"), bin.join("mytool")).unwrap();
    let tool = bin.join("mytool");
    fs::write(
        lab.path().join("repx.toml"),
        format!(
            r#"
[stages.check]
plugin = "builtin:exec"
tools = ["make", "{}"]
params = {{ program = "mytool" }}

[pipelines.main]
stages = ["check"]

[runs.main]
pipelines = ["main"]
"#,
            tool.display()
        ),
    )
    .unwrap();
    let out = repx(lab.path(), &["show", "stage", "check"]);
    out.expect_code(0);
    let read_only = words(line(&out, "read-only "));
    // The system's tool directories that exist here, and the granted tool's own directory.
    for dir in ["/usr", "/bin", "/lib", "/etc/ld.so.cache"] {
        assert_eq!(
            read_only.contains(&dir),
            Path::new(dir).exists(),
            "{dir} in {read_only:?}"
        );
    }
    assert!(read_only.contains(&bin.to_str().unwrap()), "{read_only:?}");
    // Nothing else of the host: not the lab, not /home, not /etc as a whole.
    for absent in [lab.path().to_str().unwrap(), "/home", "/etc", "/root"] {
        assert!(!read_only.contains(&absent), "{absent} in {read_only:?}");
    }
}

#[test]
fn dry_run_shows_the_grants_and_runs_nothing() {
    let here = TempDir::new();
    let plugin = here.path().join("generate.wasm");
    fs::copy(
        crate::common::built("examples/simple/plugins/generate.wasm"),
        &plugin,
    )
    .unwrap();
    fs::create_dir_all(here.path().join("data")).unwrap();
    fs::write(here.path().join("data/file.txt"), "input\n").unwrap();
    let before = tree_state(here.path());
    let digest = repx::wasm::sha256_hex(&fs::read(&plugin).unwrap());

    let out = repx(
        here.path(),
        &[
            "run",
            "--plugin",
            "generate.wasm",
            "--input",
            "data=data",
            "--param",
            "n=3",
            "--dry-run",
        ],
    );
    out.expect_code(0);
    assert_eq!(line(&out, "stage "), "stage    generate");
    assert_eq!(line(&out, "sha256 "), format!("sha256   {digest} (pinned)"));
    assert_eq!(line(&out, "mode "), "mode     pure");
    let data = here.path().join("data").display().to_string();
    assert_eq!(
        words(line(&out, "/in/data ")),
        ["/in/data", "read-only", "snapshot", "of", &data]
    );
    no_line(&out, "/work");
    assert_eq!(
        words(line(&out, "REPX_PARAMS "))[..2],
        ["REPX_PARAMS", r#"{"n":3}"#]
    );
    line(&out, "limits ");

    let impure = repx(
        here.path(),
        &["run", "--plugin", "generate.wasm", "--impure", "--dry-run"],
    );
    impure.expect_code(0);
    assert!(line(&impure, "/work ").contains("READ-WRITE"));

    // No store, no job, no snapshot: the directory is as it was.
    assert_eq!(tree_state(here.path()), before);
}

#[test]
fn plugin_pin_pins_every_plugin_and_a_swap_is_refused() {
    let lab = copy_example("simple");
    let file = lab.path().join("repx.toml");
    let original = fs::read_to_string(&file).unwrap();
    let digest = |stage: &str| {
        repx::wasm::sha256_hex(&fs::read(lab.path().join(format!("plugins/{stage}.wasm"))).unwrap())
    };

    let pin = repx(lab.path(), &["plugin", "pin"]);
    pin.expect_code(0);
    let pinned = fs::read_to_string(&file).unwrap();
    let doc: toml::Table = pinned.parse().unwrap();
    for stage in ["generate", "sum", "plot"] {
        assert_eq!(
            doc["stages"][stage]["sha256"].as_str(),
            Some(digest(stage).as_str()),
            "{pinned}"
        );
        assert!(pin.stdout.contains(&format!("pinned {}", digest(stage))));
    }
    // Only the pins were added: every line of the file is still there, comments first.
    let comments: Vec<&str> = original.lines().filter(|l| l.starts_with('#')).collect();
    assert!(!comments.is_empty());
    assert!(pinned.starts_with(&comments.join("\n")), "{pinned}");
    for kept in original.lines() {
        assert!(
            pinned.lines().any(|l| l == kept),
            "{kept:?} lost:\n{pinned}"
        );
    }
    // Pinning again changes nothing.
    repx(lab.path(), &["plugin", "pin"]).expect_code(0);
    assert_eq!(fs::read_to_string(&file).unwrap(), pinned);

    repx(lab.path(), &["run"]).expect_code(0);
    let jobs = job_dirs(lab.path());
    assert_eq!(jobs.len(), 3);

    // The pinned `sum` is swapped for another plugin.
    let pinned_sum = digest("sum");
    let swapped = fs::read(lab.path().join("plugins/plot.wasm")).unwrap();
    fs::write(lab.path().join("plugins/sum.wasm"), &swapped).unwrap();
    let show = repx(lab.path(), &["show", "stage", "sum"]);
    assert!(
        line(&show, "sha256 ").contains("PIN MISMATCH"),
        "{}",
        show.stdout
    );
    let refused = repx(lab.path(), &["run"]);
    refused.expect_code(2).expect_stderr(&[
        "stage `sum`",
        "does not match its pin",
        &format!("pinned sha256: {pinned_sum}"),
        &format!("actual sha256: {}", digest("sum")),
    ]);
    assert_eq!(job_dirs(lab.path()), jobs, "a job ran");
}

#[test]
fn a_plugin_from_outside_the_lab_runs_once_pinned() {
    let lab = copy_example("simple");
    let elsewhere = TempDir::new();
    let outside = elsewhere.path().join("sum.wasm");
    fs::rename(lab.path().join("plugins/sum.wasm"), &outside).unwrap();
    let file = lab.path().join("repx.toml");
    let text = fs::read_to_string(&file).unwrap().replace(
        r#"plugin = "plugins/sum.wasm""#,
        &format!("plugin = {:?}", outside.display().to_string()),
    );
    fs::write(&file, text).unwrap();

    repx(lab.path(), &["run"])
        .expect_code(2)
        .expect_stderr(&["outside the project directory", "must be pinned"]);
    assert!(job_dirs(lab.path()).is_empty());
    repx(lab.path(), &["plugin", "pin", "sum"]).expect_code(0);
    let doc: toml::Table = fs::read_to_string(&file).unwrap().parse().unwrap();
    assert!(doc["stages"]["sum"].get("sha256").is_some());
    assert!(doc["stages"]["generate"].get("sha256").is_none());
    repx(lab.path(), &["run"]).expect_code(0);
    assert_eq!(job_dirs(lab.path()).len(), 3);
}
