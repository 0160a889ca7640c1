//! The security suite: hostile plugins against the real `repx` binary, crashes at many
//! moments of a run, and damage to the store.
//!
//! Each attack is a plain WASI program in `plugins/hostile*`, named after what it tries.
//! A filesystem attack records every attempt in `/out/result.txt` (`refused …` or
//! `ESCAPED …`) and exits 1 on any escape; its test asserts both the refusal and that the
//! host is untouched: the files around the lab keep their content, size and time, no
//! `PWNED-*` file appeared anywhere the attack aimed, and the store verifies clean.
//!
//! - `filesystem`: traversal, links, writes to inputs, `/proc`, `/dev`, env, network, gather.
//! - `grants`: what `repx show stage` and `run --dry-run` show a stage gets; pins.
//! - `tools`: the `run-tool` host function: grants, working directories, arguments, env.
//! - `limits`: memory, time, logs, open files, output size; malformed and over-reaching
//!   plugins; pins.
//! - `integrity`: `repx verify` against damage, and two runs on one store.
//! - `crash`: `repx run` SIGKILLed at 64 moments spread over runs of a few hundred jobs (at
//!   least 50 must interrupt one), each resumed; nothing reported done is lost.
//! - `hermetic`: filesystem attacks built by Nix, refused as in pure mode.
//! - `lab_file`: a sweep too large to expand, a `lab.json` with a key twice or a huge integer.
//! - `impure`: an impure plugin against what stays out of its reach: the store behind the
//!   project's `.repx` link, and the files that decide grants.
//! - `nix`: Nix settings that would weaken hermetic mode, and the builder outside a sandbox.
//! - `hygiene`: plugin and lab text escaped for terminals, CSV and the report; files the CLI
//!   writes replaced whole, never written through a link; `--input` names checked.
//!
//! Needs the plugins (`scripts/build-plugins`); `hermetic` also needs Nix (`scripts/nix-setup`)
//! and the static repx that `scripts/test` builds.

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod filesystem;
mod grants;
mod handmade;
mod hermetic;
mod hygiene;
mod impure;
mod integrity;
mod lab_file;
mod limits;
mod nix;
mod tools;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::{Output, TempDir, built, repx};

/// Small limits, so that every attack on them ends fast.
pub const LIMITS: &str =
    r#"limits = { memory = "64M", time = "2s", output = "1M", log = "64K", files = 64 }"#;

/// What the lab's `sentinel.txt` holds; attacks aim at it.
pub const SENTINEL: &str = "SENTINEL: the host's own file\n";

/// A hostile plugin built as a component.
pub fn hostile(name: &str) -> PathBuf {
    built(&format!("plugins/target/wasm32-wasip2/release/{name}.wasm"))
}

/// A lab for attacks: `repx.toml` from `toml` with `{lab}` replaced by the lab's own path,
/// the named plugins in `plugins/` (hostile ones, or the simple example's `generate`),
/// a `path:` input `data/` (`file.txt`, `sub/nested.txt`) and `sentinel.txt` beside them.
pub fn attack_lab(toml: &str, plugins: &[&str]) -> TempDir {
    let dir = TempDir::new();
    let lab = dir.path();
    fs::create_dir_all(lab.join("plugins")).unwrap();
    for name in plugins {
        let from = match *name {
            "generate" => built("examples/simple/plugins/generate.wasm"),
            _ => hostile(name),
        };
        fs::copy(from, lab.join("plugins").join(format!("{name}.wasm"))).unwrap();
    }
    fs::create_dir_all(lab.join("data/sub")).unwrap();
    fs::write(lab.join("data/file.txt"), "input file\n").unwrap();
    fs::write(lab.join("data/sub/nested.txt"), "nested input file\n").unwrap();
    fs::write(lab.join("sentinel.txt"), SENTINEL).unwrap();
    let toml = toml.replace("{lab}", lab.to_str().unwrap());
    fs::write(lab.join("repx.toml"), toml).unwrap();
    dir
}

/// A lab of one attack stage with the common inputs: `data` (a `path:` input), `up` (the
/// committed output of a benign upstream job) and `all` (the same job gathered, with the
/// host's `index.json`); small limits, and `params`.
pub fn one_attack(plugin: &str, params: &str) -> TempDir {
    let toml = format!(
        r#"
[stages.up]
plugin = "plugins/generate.wasm"
params = {{ n = 5 }}

[stages.attack]
plugin = "plugins/{plugin}.wasm"
inputs = {{ data = "path:data", up = "up", all = "up[*]" }}
params = {{ {params} }}
{LIMITS}

[pipelines.main]
stages = ["up", "attack"]

[runs.main]
pipelines = ["main"]
"#
    );
    attack_lab(&toml, &["generate", plugin])
}

/// Everything on the host an attack could reach, as it is now: every entry of the lab
/// (store excluded) with its time, size and content, the store's snapshots by hash, and
/// the `PWNED-*` files wherever attacks aim.
#[derive(Debug, PartialEq)]
pub struct HostState {
    entries: Vec<(PathBuf, SystemTime, u64, Option<Vec<u8>>)>,
    pwned: Vec<PathBuf>,
}

impl HostState {
    pub fn of(lab: &Path) -> HostState {
        let mut entries = Vec::new();
        let mut stack = vec![lab.to_path_buf()];
        while let Some(path) = stack.pop() {
            let meta = fs::symlink_metadata(&path).unwrap();
            if path != lab {
                let content = meta.is_file().then(|| fs::read(&path).unwrap());
                entries.push((path.clone(), meta.modified().unwrap(), meta.len(), content));
            }
            if meta.is_dir() {
                for entry in fs::read_dir(&path).unwrap() {
                    let entry = entry.unwrap();
                    if path == lab && entry.file_name() == ".repx" {
                        continue;
                    }
                    stack.push(entry.path());
                }
            }
        }
        entries.sort();
        HostState {
            entries,
            pwned: pwned_files(lab),
        }
    }
}

/// `PWNED-*` files in the lab (store included), beside it, and at `/`, `/etc`, `/tmp`.
pub fn pwned_files(lab: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![lab.to_path_buf()];
    // The store lies outside the lab, behind the `.repx` link, which the walk does not follow.
    stack.extend(fs::canonicalize(lab.join(".repx")));
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let kind = entry.file_type().unwrap();
            if entry.file_name().to_string_lossy().starts_with("PWNED") {
                found.push(entry.path());
            }
            if kind.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    let around = [
        lab.parent().unwrap().to_path_buf(),
        PathBuf::from("/"),
        PathBuf::from("/etc"),
        std::env::temp_dir(),
    ];
    for dir in around {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with("PWNED") {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Asserts that nothing on the host changed since `before`, and that the store's committed
/// outputs and snapshots are intact.
#[track_caller]
pub fn assert_untouched(lab: &Path, before: &HostState) {
    let after = HostState::of(lab);
    assert_eq!(
        after.pwned,
        Vec::<PathBuf>::new(),
        "files created by an attack"
    );
    if after.entries != before.entries {
        let changed: Vec<_> = after
            .entries
            .iter()
            .filter(|e| !before.entries.contains(e))
            .map(|e| &e.0)
            .collect();
        let gone: Vec<_> = before
            .entries
            .iter()
            .filter(|e| !after.entries.contains(e))
            .map(|e| &e.0)
            .collect();
        panic!("host files changed: new or different {changed:?}, gone or different {gone:?}");
    }
    assert_eq!(
        fs::read_to_string(lab.join("sentinel.txt")).unwrap(),
        SENTINEL
    );
    let snapshots = lab.join(".repx/snapshots");
    for entry in fs::read_dir(&snapshots).into_iter().flatten().flatten() {
        let hash = repx::store::hash_tree(&entry.path()).unwrap().hash;
        assert_eq!(
            hash,
            entry.file_name().to_string_lossy(),
            "snapshot {} changed",
            entry.path().display()
        );
    }
    if lab.join(".repx").is_dir() {
        let verify = repx(lab, &["verify"]);
        assert_eq!(
            verify.code, 0,
            "the store does not verify after the attack\n{}{}",
            verify.stdout, verify.stderr
        );
    }
}

/// Runs `repx run` on an attack lab, checking the host before and after.
pub fn run_attack(lab: &TempDir, args: &[&str]) -> Output {
    let before = HostState::of(lab.path());
    let mut all = vec!["run", "--continue-on-failure"];
    all.extend_from_slice(args);
    let out = repx(lab.path(), &all);
    assert_untouched(lab.path(), &before);
    out
}

/// The committed `result.txt` of `stage`'s job: its `refused …` lines. Fails with the
/// plugin's report when the job failed or anything escaped.
#[track_caller]
pub fn refusals(lab: &Path, out: &Output, stage: &str) -> Vec<String> {
    assert!(
        !out.stderr.contains(&format!("FAILED {stage} ")),
        "the attack job failed (an escape, or a crash)\n--- stderr:\n{}",
        out.stderr
    );
    let text = fs::read_to_string(output_of(lab, stage).join("result.txt")).unwrap();
    let escapes: Vec<&str> = text.lines().filter(|l| l.starts_with("ESCAPED")).collect();
    assert!(
        escapes.is_empty(),
        "{stage} escaped:\n{}",
        escapes.join("\n")
    );
    text.lines()
        .filter(|l| l.starts_with("refused "))
        .map(str::to_string)
        .collect()
}

/// The committed output directory of the one recorded job of `stage`.
#[track_caller]
pub fn output_of(lab: &Path, stage: &str) -> PathBuf {
    let records = fs::read_to_string(lab.join(".repx/records.jsonl")).unwrap_or_default();
    let ids: Vec<String> = records
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["stage"] == stage)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "jobs of {stage}: {ids:?}");
    lab.join(".repx/jobs").join(&ids[0]).join("out")
}

/// Asserts that some refusal line starts with `refused <attempt>`.
#[track_caller]
pub fn assert_refused(refusals: &[String], attempt: &str) {
    let prefix = format!("refused {attempt}");
    assert!(
        refusals.iter().any(|r| r.starts_with(&prefix)),
        "no refusal of {attempt:?} among:\n{}",
        refusals.join("\n")
    );
}

/// The failure message of `stage` (its `FAILED` line and the lines under it).
#[track_caller]
pub fn failure(out: &Output, stage: &str) -> String {
    let mut lines = out
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with(&format!("FAILED {stage} ")));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("{stage} did not fail\n--- stderr:\n{}", out.stderr));
    let mut message = vec![first.to_string()];
    message.extend(lines.take_while(|l| l.starts_with(' ')).map(str::to_string));
    message.join("\n")
}
