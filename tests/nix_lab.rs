//! End-to-end tests of labs defined in Nix: `lab.nix` (evaluated by the real
//! `nix-instantiate`) and `lab.json` describe the same labs as `repx.toml`, with the same
//! job ids and outputs; the flake exposes the library offline; bad labs are refused with
//! exit 2 and a message naming the file and the key.
//!
//! Needs Nix (`nix-instantiate`, `nix`) and the plugins (`scripts/build-plugins`).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::{TempDir, copy_example, job_dirs, repo_root, repx, repx_with_env};

const INVALID: i32 = 2;

/// The `repx list jobs` lines of the lab at `lab` (a file or directory), run in `dir`.
fn jobs(dir: &Path, lab: &str) -> String {
    let out = repx(dir, &["--lab", lab, "list", "jobs"]);
    out.expect_code(0);
    assert!(out.stdout.lines().count() > 0, "no jobs: {out:?}");
    out.stdout
}

/// Every file under each committed job's `out/`, by job id and relative path.
fn outputs(lab: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for job in job_dirs(lab) {
        let id = job.file_name().unwrap().to_string_lossy().into_owned();
        for entry in walk(&job.join("out")) {
            let relative = entry.strip_prefix(job.join("out")).unwrap();
            files.insert(
                format!("{id}/{}", relative.display()),
                fs::read(&entry).unwrap(),
            );
        }
    }
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Runs a real Nix command and returns its stdout; fails the test when it fails.
#[track_caller]
fn nix(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} (is Nix installed? scripts/nix-setup): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// What the library in this repository makes of the lab.nix at `lab`.
fn evaluated(lab: &Path) -> serde_json::Value {
    let library = format!("import {}", repo_root().join("nix/lib.nix").display());
    let json = nix(
        "nix-instantiate",
        &[
            "--eval",
            "--strict",
            "--json",
            "--arg",
            "repx",
            &library,
            lab.to_str().unwrap(),
        ],
    );
    serde_json::from_str(&json).unwrap()
}

/// A lab directory holding the simple example's plugins and `lab.nix` with `text`.
fn nix_lab(text: &str) -> TempDir {
    let dir = copy_example("simple");
    fs::remove_file(dir.path().join("repx.toml")).unwrap();
    fs::write(dir.path().join("lab.nix"), text).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------
// The examples, in Nix and in TOML

#[test]
fn simple_lab_nix_gives_the_job_ids_and_outputs_of_repx_toml() {
    let (toml, nix) = (copy_example("simple"), copy_example("simple"));
    let ids = jobs(toml.path(), "repx.toml");
    assert_eq!(ids.lines().count(), 3, "{ids}");
    assert_eq!(jobs(nix.path(), "lab.nix"), ids);

    let ran = repx(toml.path(), &["--lab", "repx.toml", "run"]);
    ran.expect_code(0);
    let ran_nix = repx(nix.path(), &["--lab", "lab.nix", "run"]);
    ran_nix.expect_code(0);
    assert_eq!(ran_nix.summary(), ran.summary());
    assert_eq!(
        ran.summary(),
        "3 jobs: 3 ran, 0 cached, 0 failed, 0 skipped"
    );
    let (from_toml, from_nix) = (outputs(toml.path()), outputs(nix.path()));
    assert_eq!(
        from_nix.keys().collect::<Vec<_>>(),
        from_toml.keys().collect::<Vec<_>>()
    );
    assert!(from_nix.keys().any(|k| k.ends_with("/sum.txt")));
    assert!(from_nix == from_toml, "the outputs differ");

    // The other commands read lab.nix too: a re-run, verify, show, and gc's roots.
    assert_eq!(
        repx(nix.path(), &["--lab", "lab.nix", "run"]).summary(),
        "3 jobs: 0 ran, 3 cached, 0 failed, 0 skipped"
    );
    let verify = repx(nix.path(), &["--lab", "lab.nix", "verify"]);
    verify.expect_code(0);
    assert!(
        verify.stdout.contains("3 outputs checked, 0 damaged"),
        "{}",
        verify.stdout
    );
    let id = &ids[..12];
    let show = repx(nix.path(), &["--lab", "lab.nix", "show", "job", id]);
    show.expect_code(0);
    assert!(show.stdout.contains("generate"), "{}", show.stdout);
    let gc = repx(nix.path(), &["--lab", "lab.nix", "gc"]);
    gc.expect_code(0).expect_stderr(&["kept 3 jobs", "lab.nix"]);
    assert_eq!(job_dirs(nix.path()).len(), 3);
}

#[test]
fn param_sweep_lab_nix_gives_the_job_ids_of_repx_toml() {
    let lab = copy_example("param-sweep");
    let ids = jobs(lab.path(), "repx.toml");
    assert_eq!(ids.lines().count(), 7, "{ids}");
    assert_eq!(jobs(lab.path(), "lab.nix"), ids);
    // Its plugins are Nix paths, read in place: they need no pin.
    let out = repx(lab.path(), &["--lab", "lab.nix", "run"]);
    out.expect_code(0);
    assert_eq!(
        out.summary(),
        "7 jobs: 7 ran, 0 cached, 0 failed, 0 skipped"
    );
}

/// The simple example with each plugin given as `generate`, `sum` and `plot` say.
fn simple_with_plugins(generate: &str, sum: &str, plot: &str) -> String {
    format!(
        r#"{{ repx }}:
with repx;
let
  generate = mkStage {{ name = "generate"; plugin = {generate}; params = {{ n = 100; }}; outputs = [ "data.csv" ]; }};
  sum = mkStage {{ name = "sum"; plugin = {sum}; inputs = {{ data = generate; }}; outputs = [ "sum.txt" ]; }};
  plot = mkStage {{ name = "plot"; plugin = {plot}; inputs = {{ data = generate; }}; outputs = [ "plot.svg" ]; }};
  main = mkPipeline {{ name = "main"; stages = [ generate sum plot ]; }};
in
mkLab {{ name = "simple"; runs = [ (mkRun {{ name = "simple"; pipelines = [ main ]; }}) ]; }}
"#
    )
}

#[test]
fn plugins_as_nix_paths_and_store_paths_give_the_ids_of_strings() {
    let ids = jobs(copy_example("simple").path(), "repx.toml");
    // A Nix path is read in place; a store path is a copy in the Nix store, which needs no
    // pin since it cannot change. Same bytes, same ids.
    let lab = nix_lab(&simple_with_plugins(
        "./plugins/generate.wasm",
        "\"${./plugins/sum.wasm}\"",
        "\"plugins/plot.wasm\"",
    ));
    assert_eq!(jobs(lab.path(), "lab.nix"), ids);
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    assert_eq!(
        out.summary(),
        "3 jobs: 3 ran, 0 cached, 0 failed, 0 skipped"
    );

    // A plugin outside the project and outside the store must be pinned, said in Nix.
    let elsewhere = TempDir::new();
    let outside = elsewhere.path().join("generate.wasm");
    fs::copy(lab.path().join("plugins/generate.wasm"), &outside).unwrap();
    let outside = format!("\"{}\"", outside.display());
    let lab = nix_lab(&simple_with_plugins(
        &outside,
        "\"plugins/sum.wasm\"",
        "\"plugins/plot.wasm\"",
    ));
    repx(lab.path(), &["run"])
        .expect_code(INVALID)
        .expect_stderr(&[
            "outside the project directory, so it must be pinned",
            "to the mkStage of `generate` in",
        ]);
    assert!(job_dirs(lab.path()).is_empty(), "something ran");
}

#[test]
fn a_directory_reads_repx_toml_then_lab_nix_then_lab_json() {
    let lab = copy_example("simple");
    let ids = jobs(lab.path(), "repx.toml");
    // Both there: repx.toml, and a warning that lab.nix is not read.
    let out = repx(lab.path(), &["list", "jobs"]);
    out.expect_code(0)
        .expect_stderr(&["repx.toml is the lab here", "lab.nix beside it is not read"]);
    assert_eq!(out.stdout, ids);

    // A directory with only lab.nix reads it, without a warning.
    fs::remove_file(lab.path().join("repx.toml")).unwrap();
    let out = repx(lab.path(), &["list", "jobs"]);
    out.expect_code(0);
    assert_eq!(out.stdout, ids);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);

    // lab.nix before lab.json: a broken lab.json beside it is not read.
    fs::write(lab.path().join("lab.json"), "{ not json").unwrap();
    let out = repx(lab.path(), &["list", "jobs"]);
    out.expect_code(0).expect_stderr(&["lab.json beside it"]);
    assert_eq!(out.stdout, ids);

    // And none at all is one message listing what was looked for.
    let empty = TempDir::new();
    repx(empty.path(), &["list", "jobs"])
        .expect_code(INVALID)
        .expect_stderr(&["no lab in", "repx.toml, lab.nix, lab.json"]);
}

#[test]
fn lab_json_is_the_evaluated_lab() {
    let lab = copy_example("simple");
    let ids = jobs(lab.path(), "repx.toml");
    let json = evaluated(&lab.path().join("lab.nix"));
    assert_eq!(json["stages"]["sum"]["inputs"]["data"], "generate");
    fs::remove_file(lab.path().join("repx.toml")).unwrap();
    fs::remove_file(lab.path().join("lab.nix")).unwrap();
    fs::write(
        lab.path().join("lab.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    assert_eq!(jobs(lab.path(), "."), ids);
    let out = repx(lab.path(), &["--lab", "lab.json", "run"]);
    out.expect_code(0);
    assert_eq!(
        out.summary(),
        "3 jobs: 3 ran, 0 cached, 0 failed, 0 skipped"
    );

    // Its problems are named by key, and a syntax error by the file's own line.
    let mut wrong = json.clone();
    wrong["stages"]["sum"]["outputs"] = serde_json::json!(5);
    fs::write(lab.path().join("lab.json"), wrong.to_string()).unwrap();
    repx(lab.path(), &["list", "jobs"])
        .expect_code(INVALID)
        .expect_stderr(&["lab.json: `stages.sum.outputs`: invalid type: integer `5`"]);
    fs::write(lab.path().join("lab.json"), "{\n  \"stages\": {,\n}").unwrap();
    repx(lab.path(), &["list", "jobs"])
        .expect_code(INVALID)
        .expect_stderr(&["lab.json:2: not valid JSON"]);
}

// ---------------------------------------------------------------------------------------
// The flake

#[test]
fn the_flake_exposes_the_library_offline_and_it_is_nix_lib_nix() {
    // A copy of what the flake needs, so Nix does not copy the whole checkout (target/).
    let flake = TempDir::new();
    fs::copy(
        repo_root().join("flake.nix"),
        flake.path().join("flake.nix"),
    )
    .unwrap();
    fs::create_dir(flake.path().join("nix")).unwrap();
    fs::copy(
        repo_root().join("nix/lib.nix"),
        flake.path().join("nix/lib.nix"),
    )
    .unwrap();
    let reference = format!("path:{}", flake.path().display());
    let flakes = ["--extra-experimental-features", "nix-command flakes"];
    let eval = |apply: &str, impure: bool| {
        let mut args = flakes.to_vec();
        args.extend(["eval", "--offline", "--json"]);
        if impure {
            args.push("--impure");
        }
        let installable = format!("{reference}#lib");
        args.extend([installable.as_str(), "--apply", apply]);
        let json = nix("nix", &args);
        serde_json::from_str::<serde_json::Value>(&json).unwrap()
    };
    assert_eq!(
        eval("builtins.attrNames", false),
        serde_json::json!(["gather", "mkLab", "mkPipeline", "mkRun", "mkStage"])
    );
    // No inputs: nothing to fetch, nothing locked.
    let mut args = flakes.to_vec();
    args.extend(["flake", "metadata", "--offline", "--json", &reference]);
    let metadata: serde_json::Value = serde_json::from_str(&nix("nix", &args)).unwrap();
    assert_eq!(
        metadata["locks"]["nodes"].as_object().map(|n| n.len()),
        Some(1),
        "{metadata}"
    );

    for example in ["simple", "param-sweep"] {
        let lab = repo_root().join("examples").join(example).join("lab.nix");
        let from_flake = eval(
            &format!("lib: import {} {{ repx = lib; }}", lab.display()),
            true,
        );
        assert_eq!(from_flake, evaluated(&lab), "{example}");
        assert_eq!(from_flake["lab"]["name"], example);
    }
}

// ---------------------------------------------------------------------------------------
// Bad labs

#[test]
fn a_lab_nix_that_does_not_evaluate_shows_nixs_error() {
    let lab = nix_lab("{ repx }:\nrepx.mkLab {\n  runs = [ simpel ];\n}\n");
    let out = repx(lab.path(), &["--lab", "lab.nix", "run"]);
    out.expect_code(INVALID).expect_stderr(&[
        "lab.nix: Nix could not evaluate it",
        "undefined variable 'simpel'",
    ]);
    assert!(job_dirs(lab.path()).is_empty(), "something ran");

    // The library's own checks name the stage.
    let lab = nix_lab(
        "{ repx }: with repx; mkLab { runs = [ (mkRun { name = \"r\"; pipelines = [ \
         (mkPipeline { name = \"p\"; stages = [ (mkStage { name = \"sum\"; outputs = [ \"sum.txt\" ]; }) ]; }) ]; }) ]; }",
    );
    repx(lab.path(), &["list", "jobs"])
        .expect_code(INVALID)
        .expect_stderr(&[
            "lab.nix: Nix could not evaluate it",
            "repx.mkStage `sum`: has no `plugin`",
        ]);
}

#[test]
fn an_invalid_lab_nix_is_refused_naming_the_file_and_key() {
    let lab = nix_lab(
        r#"{ repx }:
with repx;
let
  generate = mkStage { name = "generate"; plugin = "plugins/generate.wasm"; params = { n = 5; }; };
  sum = mkStage { name = "sum"; plugin = "plugins/sum.wasm"; inputs = { data = "generat"; }; };
  main = mkPipeline { name = "main"; stages = [ generate sum "plto" ]; };
in
mkLab { runs = [ (mkRun { name = "r"; pipelines = [ main ]; params = { m = [ 1 2 ]; }; }) ]; }
"#,
    );
    let out = repx(lab.path(), &["--lab", "lab.nix", "run"]);
    out.expect_code(INVALID).expect_stderr(&[
        "lab.nix: `pipelines.main.stages`: unknown stage `plto`",
        "lab.nix: `stages.sum.inputs.data`: unknown stage `generat`",
        "did you mean `generate`?",
        "lab.nix: `runs.r.params.m`: no stage of this run declares parameter `m`",
    ]);
    // Lines of the document repx made from the JSON would mislead: none are shown.
    assert!(
        !out.stderr
            .split("lab.nix:")
            .skip(1)
            .any(|after| after.starts_with(|c: char| c.is_ascii_digit())),
        "{}",
        out.stderr
    );
    assert!(job_dirs(lab.path()).is_empty(), "something ran");
}

#[test]
fn floats_nix_would_round_are_refused_in_nix() {
    let lab = nix_lab(
        "{ repx }: with repx; let g = mkStage { name = \"generate\"; plugin = \"plugins/generate.wasm\"; \
         params = { n = 5; scale = 0.123456789; }; }; in \
         mkLab { runs = [ (mkRun { name = \"r\"; pipelines = [ (mkPipeline { name = \"p\"; stages = [ g ]; }) ]; }) ]; }",
    );
    repx(lab.path(), &["list", "jobs"])
        .expect_code(INVALID)
        .expect_stderr(&["repx.mkStage `generate`: parameter `scale` has more digits"]);
}

#[test]
fn without_nix_a_nix_lab_says_how_to_get_it() {
    let lab = copy_example("simple");
    let out = repx_with_env(
        lab.path(),
        &["--lab", "lab.nix", "list", "jobs"],
        &[("PATH", "/nonexistent")],
    );
    out.expect_code(INVALID).expect_stderr(&[
        "lab.nix: this lab is written in Nix, but `nix-instantiate` is not on PATH",
        "apt-get install nix-bin",
        "scripts/nix-setup",
        "repx.toml",
    ]);
    // The TOML lab beside it needs no Nix.
    repx_with_env(lab.path(), &["list", "jobs"], &[("PATH", "/nonexistent")]).expect_code(0);
}

#[test]
fn plugin_pin_on_a_nix_lab_says_what_to_add_and_edits_nothing() {
    let lab = copy_example("simple");
    let before = fs::read(lab.path().join("lab.nix")).unwrap();
    let wasm = lab.path().join("plugins/sum.wasm");
    let digest = nix(
        "nix-hash",
        &["--type", "sha256", "--flat", wasm.to_str().unwrap()],
    );
    repx(lab.path(), &["--lab", "lab.nix", "plugin", "pin"])
        .expect_code(INVALID)
        .expect_stderr(&[
            "lab.nix is not TOML",
            &format!("sum: sha256 = \"{}\";", digest.trim()),
        ]);
    assert_eq!(fs::read(lab.path().join("lab.nix")).unwrap(), before);
}

// ---------------------------------------------------------------------------------------
// Evaluating a lab.nix is bounded and pure: looking at a lab (`repx show stage`,
// `repx list jobs`) runs its code, before anyone has decided to trust it.

/// The simple example's lab.nix with `extra` added to its stage `generate`'s params: code
/// that runs when the lab is evaluated.
fn hostile_lab(extra: &str) -> TempDir {
    let dir = copy_example("simple");
    fs::remove_file(dir.path().join("repx.toml")).unwrap();
    let text = fs::read_to_string(dir.path().join("lab.nix")).unwrap();
    let text = text.replace(
        "params = { n = 100; };",
        &format!("params = {{ n = 100; {extra} }};"),
    );
    assert!(
        text.contains(extra),
        "the example's lab.nix changed: {text}"
    );
    fs::write(dir.path().join("lab.nix"), text).unwrap();
    dir
}

/// Runs `command`, killing it after `limit`: a hang fails the test instead of stalling it.
fn killed_after(mut command: Command, limit: std::time::Duration) -> std::process::Output {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output().unwrap()));
    finished.recv_timeout(limit).unwrap_or_else(|_| {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("repx still ran after {limit:?}")
    })
}

#[test]
fn a_lab_nix_that_never_ends_is_stopped_at_the_timeout() {
    // 10^10 steps in constant memory: without a timeout it holds `list jobs` for hours.
    let lab = hostile_lab(
        "spin = builtins.foldl' (a: i: builtins.foldl' (b: j: b + 1) a \
         (builtins.genList (x: x) 100000)) 0 (builtins.genList (x: x) 100000);",
    );
    let mut command = common::repx_command(lab.path(), &["list", "jobs"]);
    command.env("REPX_NIX_EVAL_TIMEOUT", "2s");
    let out = killed_after(command, std::time::Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INVALID), "{stderr}");
    for needle in [
        "lab.nix: evaluating it took longer than 2s and was stopped",
        "REPX_NIX_EVAL_TIMEOUT=",
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in:\n{stderr}");
    }
    assert!(out.stdout.is_empty(), "listed jobs");

    let bad = repx_with_env(
        lab.path(),
        &["list", "jobs"],
        &[("REPX_NIX_EVAL_TIMEOUT", "soon")],
    );
    bad.expect_code(INVALID)
        .expect_stderr(&["REPX_NIX_EVAL_TIMEOUT=soon: expected a duration"]);
}

#[test]
fn a_lab_nix_that_grows_without_end_is_stopped_at_the_memory_cap() {
    let lab = hostile_lab(
        "big = builtins.length (builtins.filter (x: x < 0) (builtins.genList (x: x) 100000000));",
    );
    let out = repx_with_env(
        lab.path(),
        &["list", "jobs"],
        &[("REPX_NIX_EVAL_MEMORY", "256M")],
    );
    out.expect_code(INVALID).expect_stderr(&[
        "lab.nix: evaluating it needed more than 256M of memory and was stopped",
        "REPX_NIX_EVAL_MEMORY=",
    ]);
    assert!(!out.stderr.contains("GC Warning"), "{}", out.stderr);
}

#[test]
fn a_lab_nix_reads_only_its_own_directory() {
    let outer = TempDir::new();
    let secret = "SECRET-beside-the-lab";
    fs::write(outer.path().join("secret.txt"), secret).unwrap();
    let project = outer.path().join("project");
    for (read, what) in [
        ("builtins.readFile /etc/hostname", "/etc/hostname"),
        ("builtins.readFile ../secret.txt", "secret.txt"),
        ("builtins.readFile ./link/secret.txt", "secret.txt"),
        ("builtins.readDir /etc", "/etc"),
        ("import /etc/hostname", "/etc/hostname"),
    ] {
        let lab = hostile_lab(&format!("leak = {read};"));
        fs::rename(lab.path(), &project).unwrap();
        std::os::unix::fs::symlink(outer.path(), project.join("link")).unwrap();
        // `show stage` is what the README tells a user to run before trusting a stage.
        let out = repx(&project, &["--lab", "lab.nix", "show", "stage", "generate"]);
        out.expect_code(INVALID).expect_stderr(&[
            "lab.nix: Nix could not evaluate it",
            "forbidden in restricted mode",
            what,
        ]);
        assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret));
        common::remove_tree(&project);
    }

    // Its own files it may read, also through a link to its directory.
    let lab = hostile_lab("note = builtins.readFile ./plugins/../lab.nix;");
    std::os::unix::fs::symlink(lab.path(), &project).unwrap();
    repx(&project, &["--lab", "lab.nix", "show", "stage", "generate"]).expect_code(0);
}

#[test]
fn a_lab_nix_fetches_nothing() {
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/leak", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    {
        let connections = connections.clone();
        // Each connection is counted and closed at once, so a fetch fails fast.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                connections.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
    }
    for fetch in [
        format!("builtins.fetchurl \"{url}\""),
        format!("builtins.fetchTarball \"{url}\""),
        format!("builtins.fetchGit \"{url}\""),
        format!("import (builtins.fetchurl \"{url}?${{builtins.readFile ./lab.nix}}\")"),
    ] {
        let lab = hostile_lab(&format!("leak = {fetch};"));
        let out = repx(
            lab.path(),
            &["--lab", "lab.nix", "show", "stage", "generate"],
        );
        out.expect_code(INVALID).expect_stderr(&[
            "lab.nix: Nix could not evaluate it",
            "forbidden in restricted mode",
        ]);
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a fetch reached the listener"
    );
}
