//! Hermetic mode with real Nix (sandbox on): jobs built as derivations by a static repx,
//! outputs byte-identical to pure mode, Nix's cache standing in for a second build, tools
//! that must be store paths, and clear errors when Nix or the builder is missing.
//!
//! Needs `scripts/nix-setup` (Nix configured) and the static repx that `scripts/test`
//! builds (see `common::static_repx`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use common::{Output, TempDir, copy_example, lab_dir, repx, repx_with_env};

/// `repx` with the static builder named.
fn hermetic(lab: &Path, args: &[&str]) -> Output {
    let builder = common::static_repx();
    repx_with_env(
        lab,
        args,
        &[("REPX_NIX_BUILDER", builder.to_str().unwrap())],
    )
}

/// Every file under `root`, relative, with its bytes and executable bit.
fn files(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else {
                let exec = meta.permissions().mode() & 0o111 != 0;
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                files.insert(rel, (fs::read(&path).unwrap(), exec));
            }
        }
    }
    files
}

/// Each recorded job of the lab's store: id → record.
fn records(lab: &Path) -> BTreeMap<String, serde_json::Value> {
    fs::read_to_string(lab.join(".repx/records.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect()
}

/// Derivation build logs Nix wrote since `since` for the jobs `ids`: one per derivation
/// it built (other tests build theirs meanwhile).
fn builds_since(since: SystemTime, ids: &[String]) -> usize {
    let mut count = 0;
    let mut stack = vec![PathBuf::from("/nix/var/log/nix/drvs")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.modified().unwrap() >= since {
                let name = entry.file_name().to_string_lossy().into_owned();
                count += ids.iter().filter(|id| name.contains(&id[..12])).count();
            }
        }
    }
    count
}

/// A parameter no earlier test run used, so that Nix has to build.
fn fresh_n() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    1000 + (nanos % 1_000_000) as u64
}

/// Runs `example` pure and hermetic in two copies; asserts the same jobs with the same
/// bytes, and that each hermetic output came from the Nix store path its record names.
fn assert_hermetic_equals_pure(example: &str) {
    let pure = copy_example(example);
    let nix = copy_example(example);
    repx(pure.path(), &["run", "--pure"]).expect_code(0);
    let out = hermetic(nix.path(), &["run", "--hermetic"]);
    out.expect_code(0);
    let (pure_records, nix_records) = (records(pure.path()), records(nix.path()));
    assert!(!pure_records.is_empty());
    assert_eq!(
        pure_records.keys().collect::<Vec<_>>(),
        nix_records.keys().collect::<Vec<_>>(),
        "the job ids differ"
    );
    for (id, record) in &nix_records {
        assert_eq!(record["mode"], "hermetic");
        assert_eq!(record["hash"], pure_records[id]["hash"], "job {id}");
        let out = |lab: &TempDir| lab.path().join(".repx/jobs").join(id).join("out");
        let expected = files(&out(&pure));
        assert!(!expected.is_empty(), "job {id} left nothing");
        assert_eq!(files(&out(&nix)), expected, "job {id} differs from pure");
        let store_path = record["nix"]
            .as_str()
            .expect("a hermetic record names its Nix path");
        assert!(store_path.starts_with("/nix/store/"), "{store_path}");
        assert_eq!(files(Path::new(store_path)), expected, "{store_path}");
    }
}

#[test]
fn simple_is_byte_identical_to_pure() {
    assert_hermetic_equals_pure("simple");
}

#[test]
fn param_sweep_is_byte_identical_to_pure() {
    assert_hermetic_equals_pure("param-sweep");
}

#[test]
fn a_second_run_realises_nothing() {
    let lab = fresh_simple();

    let before_first = SystemTime::now();
    let first = hermetic(lab.path(), &["run", "--hermetic"]);
    first.expect_code(0);
    assert_eq!(first.ran(), ["generate", "plot", "sum"]);
    let ids: Vec<String> = records(lab.path()).into_keys().collect();
    assert_eq!(
        builds_since(before_first, &ids),
        3,
        "the first run should build the three derivations"
    );
    let outputs: BTreeMap<String, _> = records(lab.path())
        .into_keys()
        .map(|id| {
            let out = files(&lab.path().join(".repx/jobs").join(&id).join("out"));
            (id, out)
        })
        .collect();

    // repx's own store knows the jobs are done.
    let before_second = SystemTime::now();
    let second = hermetic(lab.path(), &["run", "--hermetic"]);
    second.expect_code(0);
    assert_eq!(second.cached(), ["generate", "plot", "sum"]);
    assert_eq!(builds_since(before_second, &ids), 0);

    // Without it, Nix finds every derivation valid and builds none.
    common::remove_tree(&common::default_store(lab.path()));
    let third = hermetic(lab.path(), &["run", "--hermetic"]);
    third.expect_code(0);
    assert_eq!(third.ran(), ["generate", "plot", "sum"]);
    assert_eq!(builds_since(before_second, &ids), 0, "Nix built again");
    for (id, files_before) in &outputs {
        let out = lab.path().join(".repx/jobs").join(id).join("out");
        assert_eq!(&files(&out), files_before, "job {id}");
        let log = repx(lab.path(), &["log", &id[..12]]);
        log.expect_code(0);
        assert!(
            log.stdout.contains("found valid in the Nix store"),
            "{}",
            log.stdout
        );
    }
}

#[test]
fn show_and_list_name_the_nix_output() {
    let lab = copy_example("simple");
    hermetic(lab.path(), &["run", "--hermetic"]).expect_code(0);
    let records = records(lab.path());
    let (id, record) = records
        .iter()
        .find(|(_, r)| r["stage"] == "sum")
        .expect("a sum job");
    let store_path = record["nix"].as_str().unwrap();
    let show = repx(lab.path(), &["show", "job", &id[..12]]);
    show.expect_code(0);
    assert!(show.stdout.contains(store_path), "{}", show.stdout);
    assert!(show.stdout.contains("hermetic"), "{}", show.stdout);
    let listed = repx(lab.path(), &["list", "jobs", "--output-paths"]);
    listed.expect_code(0);
    assert!(listed.stdout.contains(store_path), "{}", listed.stdout);
    // The output stays in the Nix store while repx keeps the job: its GC root is ours.
    let roots = Command::new("nix-store")
        .args(["--gc", "--print-roots"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&roots.stdout).contains(store_path));
}

#[test]
fn a_failing_plugin_fails_as_in_pure_mode() {
    /// The `FAILED` line of `stage` and the lines under it.
    fn failure(out: &Output, stage: &str) -> Vec<String> {
        let mut lines = out
            .stderr
            .lines()
            .skip_while(|l| !l.starts_with(&format!("FAILED {stage} ")));
        let first = lines.next().expect("a FAILED line").to_string();
        std::iter::once(first)
            .chain(
                lines
                    .take_while(|l| l.starts_with("    "))
                    .map(str::to_string),
            )
            .collect()
    }
    let pure = lab_dir(common::FAILING, &["test-fail"]);
    let pure_out = repx(pure.path(), &["run", "--pure", "--continue-on-failure"]);
    pure_out.expect_code(1);
    let lab = lab_dir(common::FAILING, &["test-fail"]);
    let out = hermetic(lab.path(), &["run", "--hermetic", "--continue-on-failure"]);
    out.expect_code(1);
    out.expect_stderr(&["skip b-after", "line 30"]);
    assert_eq!(out.ran(), ["c-indep"]);
    assert_eq!(failure(&out, "a-bad"), failure(&pure_out, "a-bad"));
    let failed = common::failed_id(&out.stderr, "a-bad");
    let log = repx(lab.path(), &["log", &failed]);
    assert!(log.stdout.contains("line 1\n"), "{}", log.stdout);
    assert!(!lab.path().join(".repx/jobs").join(&failed).exists());
}

#[test]
fn a_host_tool_is_refused_and_a_store_tool_runs() {
    let toml = |tool: &str| {
        format!(
            r#"
[stages.t]
plugin = "plugins/test-tool.wasm"
tools = ["{tool}"]
params = {{ tool = "{tool}", args = ["echo", "from the store"], stdout_file = "/out/echo.txt" }}
outputs = ["echo.txt", "status.txt"]

[pipelines.p]
stages = ["t"]

[runs.r]
pipelines = ["p"]
"#
        )
    };
    let host = lab_dir(&toml("/bin/busybox"), &["test-tool"]);
    let out = hermetic(host.path(), &["run", "--hermetic"]);
    out.expect_code(2);
    out.expect_stderr(&["stage `t`", "/bin/busybox", "not a Nix store path"]);
    assert!(!host.path().join(".repx/jobs").exists() || common::job_dirs(host.path()).is_empty());

    let dir = TempDir::new();
    fs::create_dir_all(dir.path().join("bin")).unwrap();
    fs::copy("/bin/busybox", dir.path().join("bin/busybox")).unwrap();
    let added = Command::new("nix-store")
        .arg("--add")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(added.status.success());
    let busybox = format!(
        "{}/bin/busybox",
        String::from_utf8(added.stdout).unwrap().trim()
    );
    let lab = lab_dir(&toml(&busybox), &["test-tool"]);
    hermetic(lab.path(), &["run", "--hermetic"]).expect_code(0);
    assert_eq!(
        common::read_output(lab.path(), "echo.txt"),
        "from the store\n"
    );
    assert_eq!(common::read_output(lab.path(), "status.txt"), "0\n");
}

#[test]
fn missing_nix_an_unsandboxed_nix_or_no_builder_is_explained() {
    let lab = copy_example("simple");
    let builder = common::static_repx();
    let no_nix = repx_with_env(
        lab.path(),
        &["run", "--hermetic"],
        &[
            ("PATH", "/nonexistent"),
            ("REPX_NIX_BUILDER", builder.to_str().unwrap()),
        ],
    );
    no_nix.expect_code(2);
    no_nix.expect_stderr(&["hermetic mode needs Nix", "nix-bin"]);

    // Nix's configuration turns its sandbox off (a per-run setting would be refused).
    let conf = TempDir::new();
    let conf_file = conf.path().join("nix.conf");
    fs::write(&conf_file, "sandbox = false\n").unwrap();
    let unsandboxed = repx_with_env(
        lab.path(),
        &["run", "--hermetic"],
        &[
            ("NIX_USER_CONF_FILES", conf_file.to_str().unwrap()),
            ("REPX_NIX_BUILDER", builder.to_str().unwrap()),
        ],
    );
    unsandboxed.expect_code(2);
    unsandboxed.expect_stderr(&["without its sandbox", "sandbox = true", "/etc/nix/nix.conf"]);

    let dynamic = repx_with_env(
        lab.path(),
        &["run", "--hermetic"],
        &[("REPX_NIX_BUILDER", env!("CARGO_BIN_EXE_repx"))],
    );
    dynamic.expect_code(2);
    dynamic.expect_stderr(&[
        "not a statically linked executable",
        "x86_64-unknown-linux-musl",
    ]);

    let none = common::repx_command(lab.path(), &["run", "--hermetic"])
        .env_remove("REPX_NIX_BUILDER")
        .output()
        .unwrap();
    let none = Output {
        code: none.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&none.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&none.stderr).into_owned(),
    };
    none.expect_code(2);
    none.expect_stderr(&["statically linked repx", "REPX_NIX_BUILDER"]);
    assert!(common::job_dirs(lab.path()).is_empty(), "a job ran");
}

#[test]
fn a_pure_output_is_checked_against_the_hermetic_build() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run", "--pure"]).expect_code(0);
    // Same ids: the hermetic run builds each job and finds the same bytes.
    let out = hermetic(lab.path(), &["run", "--hermetic"]);
    out.expect_code(0);
    assert_eq!(out.ran(), ["generate", "plot", "sum"]);
    assert!(records(lab.path()).values().all(|r| r["nix"].is_string()));
    repx(lab.path(), &["verify"]).expect_code(0);

    // A pure output that differs (as if the plugin had been nondeterministic) is caught.
    let lab = copy_example("simple");
    repx(lab.path(), &["run", "--pure"]).expect_code(0);
    let sum = common::job_with_output(lab.path(), "sum.txt");
    let records_path = lab.path().join(".repx/records.jsonl");
    let id = sum.file_name().unwrap().to_str().unwrap().to_string();
    let text = fs::read_to_string(&records_path).unwrap();
    let hash = records(lab.path())[&id]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    fs::write(&records_path, text.replace(&hash, &"0".repeat(hash.len()))).unwrap();
    let out = hermetic(lab.path(), &["run", "--hermetic"]);
    out.expect_code(1);
    out.expect_stderr(&["FAILED sum", "differs from this job's pure output"]);
}

/// The simple example with a parameter no earlier test run used: Nix must build it.
fn fresh_simple() -> TempDir {
    let lab = copy_example("simple");
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    let toml = toml.replace("n = 100", &format!("n = {}", fresh_n()));
    fs::write(lab.path().join("repx.toml"), toml).unwrap();
    lab
}

#[test]
fn nix_options_reach_the_build() {
    let lab = fresh_simple();
    // No local builds and no remote builders: Nix itself refuses, so the option got there.
    let out = hermetic(
        lab.path(),
        &["run", "--hermetic", "--nix-option", "max-jobs=0"],
    );
    out.expect_code(1);
    out.expect_stderr(&["FAILED generate", "max-jobs"]);
    let bad = hermetic(
        lab.path(),
        &["run", "--hermetic", "--nix-option", "max-jobs"],
    );
    bad.expect_code(2);
    bad.expect_stderr(&["--nix-option max-jobs: expected NAME=VALUE"]);
}

#[test]
fn a_binary_cache_stands_in_for_building() {
    let lab = fresh_simple();
    hermetic(lab.path(), &["run", "--hermetic"]).expect_code(0);
    let before: BTreeMap<String, _> = records(lab.path())
        .into_iter()
        .map(|(id, r)| {
            let path = r["nix"].as_str().unwrap().to_string();
            (id, (path.clone(), files(Path::new(&path))))
        })
        .collect();
    let ids: Vec<String> = before.keys().cloned().collect();
    let mut paths: Vec<String> = before.values().map(|(p, _)| p.clone()).collect();
    for id in &ids {
        let log = fs::read_link(lab.path().join(".repx/nix").join(format!("{id}-log"))).unwrap();
        paths.push(log.display().to_string());
    }

    // The cache is signed with a key the user's Nix configuration trusts: a run may name a
    // cache, but not make Nix trust what it holds.
    let cache = TempDir::new();
    let keys = TempDir::new();
    let (secret, public) = (keys.path().join("secret"), keys.path().join("public"));
    let generated = Command::new("nix-store")
        .args(["--generate-binary-cache-key", "repx-test-cache-1"])
        .args([&secret, &public])
        .status()
        .unwrap();
    assert!(generated.success());
    let signed = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "store",
            "sign",
            "--key-file",
        ])
        .arg(&secret)
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let conf = keys.path().join("nix.conf");
    let key = fs::read_to_string(&public).unwrap();
    fs::write(
        &conf,
        format!("extra-trusted-public-keys = {}\n", key.trim()),
    )
    .unwrap();
    let url = format!("file://{}", cache.path().display());
    let copied = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "copy",
            "--to",
            &url,
        ])
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    common::remove_tree(&common::default_store(lab.path()));
    let deleted = Command::new("nix-store")
        .arg("--delete")
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert!(!Path::new(&paths[0]).exists());

    let since = SystemTime::now();
    let builder = common::static_repx();
    let out = repx_with_env(
        lab.path(),
        &[
            "run",
            "--hermetic",
            "--nix-option",
            &format!("substituters={url}"),
        ],
        &[
            ("REPX_NIX_BUILDER", builder.to_str().unwrap()),
            ("NIX_USER_CONF_FILES", conf.to_str().unwrap()),
        ],
    );
    out.expect_code(0);
    assert_eq!(
        builds_since(since, &ids),
        0,
        "built instead of substituting"
    );
    for (id, (path, files_before)) in &before {
        assert_eq!(&files(Path::new(path)), files_before, "{path}");
        let out = lab.path().join(".repx/jobs").join(id).join("out");
        assert_eq!(&files(&out), files_before, "job {id}");
    }
}

#[test]
fn gc_lets_nix_collect_what_repx_no_longer_keeps() {
    let lab = fresh_simple();
    hermetic(lab.path(), &["run", "--hermetic"]).expect_code(0);
    let old = records(lab.path());
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    let n = toml
        .lines()
        .find_map(|l| l.strip_prefix("params = { n = "))
        .unwrap()
        .trim_end_matches(" }")
        .to_string();
    fs::write(
        lab.path().join("repx.toml"),
        toml.replace(
            &format!("n = {n}"),
            &format!("n = {}", n.parse::<u64>().unwrap() + 1),
        ),
    )
    .unwrap();
    hermetic(lab.path(), &["run", "--hermetic"]).expect_code(0);
    repx(lab.path(), &["gc"]).expect_code(0);
    let roots = Command::new("nix-store")
        .args(["--gc", "--print-roots"])
        .output()
        .unwrap();
    let roots = String::from_utf8_lossy(&roots.stdout);
    for (id, record) in &old {
        assert!(!lab.path().join(".repx/nix").join(id).exists(), "{id}");
        let path = record["nix"].as_str().unwrap();
        assert!(!roots.contains(path), "{path} is still a root");
    }
    for (id, record) in records(lab.path()) {
        assert!(lab.path().join(".repx/nix").join(&id).exists(), "{id}");
        assert!(roots.contains(record["nix"].as_str().unwrap()));
    }
}

#[test]
fn a_hermetic_stage_reads_a_pure_upstream() {
    let pure = copy_example("simple");
    repx(pure.path(), &["run"]).expect_code(0);
    let mixed = copy_example("simple");
    let toml = fs::read_to_string(mixed.path().join("repx.toml")).unwrap();
    let toml = toml.replace("[stages.sum]\n", "[stages.sum]\nmode = \"hermetic\"\n");
    fs::write(mixed.path().join("repx.toml"), toml).unwrap();
    // No --hermetic: the stage's own mode sends it to Nix, and only it.
    hermetic(mixed.path(), &["run"]).expect_code(0);
    let modes: BTreeMap<String, String> = records(mixed.path())
        .into_values()
        .map(|r| {
            let stage = r["stage"].as_str().unwrap().to_string();
            (stage, r["mode"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(modes["sum"], "hermetic");
    assert_eq!(modes["generate"], "pure");
    assert_eq!(modes["plot"], "pure");
    assert_eq!(
        common::read_output(mixed.path(), "sum.txt"),
        common::read_output(pure.path(), "sum.txt")
    );
}

#[test]
fn a_fan_out_is_byte_identical_to_pure() {
    assert_hermetic_equals_pure("scatter");
}

#[test]
fn a_hermetic_fan_out_over_a_pure_splitter_builds_its_items_in_nix() {
    let pure = copy_example("scatter");
    repx(pure.path(), &["run"]).expect_code(0);
    let mixed = copy_example("scatter");
    let toml = fs::read_to_string(mixed.path().join("repx.toml")).unwrap();
    let toml = toml.replace("[stages.work]\n", "[stages.work]\nmode = \"hermetic\"\n");
    fs::write(mixed.path().join("repx.toml"), toml).unwrap();
    // Before the run no item is a job yet: the fan-out's own mode still calls for Nix.
    hermetic(mixed.path(), &["run"]).expect_code(0);
    let modes: BTreeSet<(String, String)> = records(mixed.path())
        .into_values()
        .map(|r| {
            let stage = r["stage"].as_str().unwrap().to_string();
            (stage, r["mode"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(
        modes.contains(&("work".to_string(), "hermetic".to_string())),
        "{modes:?}"
    );
    assert!(
        !modes.contains(&("work".to_string(), "pure".to_string())),
        "{modes:?}"
    );
    assert_eq!(
        common::read_output(mixed.path(), "summary.csv"),
        common::read_output(pure.path(), "summary.csv")
    );
}
