//! The same attacks in hermetic mode, built by Nix in its sandbox: each is refused exactly
//! as in pure mode (the attack's `result.txt`, every attempt and how it ended, is the same
//! file byte for byte), and the host around the lab is untouched.
//!
//! Then what the host reads back from a build: a tool granted to a hermetic stage (busybox
//! from the Nix store) leaves links where the job's log or output should be, aimed at
//! `/proc/self/cwd/…`, which is the build's directory in the sandbox but the project when
//! the host repx follows it. The host's secret must not reach the store, and the job fails.

use std::fs;

use crate::common::{repx_with_env, static_repx};
use crate::{HostState, assert_untouched, one_attack, output_of, refusals, run_attack};

/// Runs the attack pure, then hermetic on the same lab from an empty store; returns the
/// two `result.txt`.
fn pure_and_hermetic(plugin: &str, params: &str) -> (String, String) {
    let lab = one_attack(plugin, params);
    let pure = run_attack(&lab, &["--pure"]);
    pure.expect_code(0);
    refusals(lab.path(), &pure, "attack");
    let pure_result =
        fs::read_to_string(output_of(lab.path(), "attack").join("result.txt")).unwrap();
    crate::common::remove_tree(&crate::common::default_store(lab.path()));

    let before = HostState::of(lab.path());
    let builder = static_repx();
    let hermetic = repx_with_env(
        lab.path(),
        &["run", "--continue-on-failure", "--hermetic"],
        &[("REPX_NIX_BUILDER", builder.to_str().unwrap())],
    );
    assert_untouched(lab.path(), &before);
    hermetic.expect_code(0);
    refusals(lab.path(), &hermetic, "attack");
    let record = fs::read_to_string(lab.path().join(".repx/records.jsonl")).unwrap();
    assert!(record.contains("\"mode\":\"hermetic\""), "{record}");
    let hermetic_result =
        fs::read_to_string(output_of(lab.path(), "attack").join("result.txt")).unwrap();
    (pure_result, hermetic_result)
}

#[test]
fn read_outside_the_inputs_is_refused_as_in_pure_mode() {
    let (pure, hermetic) = pure_and_hermetic("traverse-dotdot", "");
    assert!(pure.lines().filter(|l| l.starts_with("refused ")).count() > 250);
    assert_eq!(hermetic, pure);
}

#[test]
fn absolute_paths_are_refused_as_in_pure_mode() {
    let (pure, hermetic) = pure_and_hermetic("traverse-absolute", r#"host_dir = "{lab}""#);
    assert!(pure.contains("refused read /etc/passwd"), "{pure}");
    assert_eq!(hermetic, pure);
}

#[test]
fn writing_into_the_inputs_is_refused_as_in_pure_mode() {
    let (pure, hermetic) = pure_and_hermetic("write-in-input", "");
    assert!(
        pure.contains("refused overwrite /in/data/file.txt"),
        "{pure}"
    );
    assert_eq!(hermetic, pure);
}

/// busybox, added to the Nix store: a tool a hermetic stage may be granted.
fn busybox_in_nix_store() -> String {
    let dir = crate::common::TempDir::new();
    fs::create_dir_all(dir.path().join("bin")).unwrap();
    fs::copy("/bin/busybox", dir.path().join("bin/busybox")).unwrap();
    let added = std::process::Command::new("nix-store")
        .arg("--add")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    format!(
        "{}/bin/busybox",
        String::from_utf8(added.stdout).unwrap().trim()
    )
}

/// A lab of one hermetic stage granted busybox, whose plugin runs `script` with busybox's
/// `sh` inside the build, with `.env` (holding `secret`) and `secret-dir/.env` in the
/// project, where the host repx runs. The parameter `nonce` makes every build new to Nix.
fn hermetic_script_lab(script: &str, secret: &str) -> crate::common::TempDir {
    let busybox = busybox_in_nix_store();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let script = script.replace('\\', "\\\\").replace('"', "\\\"");
    let toml = format!(
        r#"
[stages.t]
plugin = "plugins/test-tool.wasm"
mode = "hermetic"
tools = ["{busybox}"]
params = {{ tool = "{busybox}", args = ["sh", "-c", "{script}"], nonce = "{nonce}" }}

[pipelines.p]
stages = ["t"]

[runs.r]
pipelines = ["p"]
"#
    );
    let lab = crate::common::lab_dir(&toml, &["test-tool"]);
    fs::write(lab.path().join(".env"), secret).unwrap();
    fs::create_dir(lab.path().join("secret-dir")).unwrap();
    fs::write(lab.path().join("secret-dir/.env"), secret).unwrap();
    lab
}

/// Runs the lab hermetic; asserts that `secret` is in no file of the store nor in what
/// `repx log` shows of the job, and that the job failed.
fn assert_not_read_back(lab: &std::path::Path, secret: &str) {
    let builder = static_repx();
    let out = repx_with_env(
        lab,
        &["run", "--hermetic"],
        &[("REPX_NIX_BUILDER", builder.to_str().unwrap())],
    );
    let mut stack = vec![lab.join(".repx")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                let bytes = fs::read(entry.path()).unwrap();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(secret),
                    "{} holds the host's secret\n--- stderr:\n{}",
                    entry.path().display(),
                    out.stderr
                );
            }
        }
    }
    assert!(!out.stderr.contains(secret), "{}", out.stderr);
    out.expect_code(1);
    let failed = crate::common::failed_id(&out.stderr, "t");
    let log = crate::common::repx(lab, &["log", &failed]);
    assert!(!log.stdout.contains(secret), "{}", log.stdout);
}

/// Where a tool of the build finds the build's own outputs: the builder's environment.
const OUTPUTS: &str = "out=$(tr '\\0' '\\n' < /proc/$PPID/environ | sed -n 's/^out=//p'); \
                       log=$(tr '\\0' '\\n' < /proc/$PPID/environ | sed -n 's/^log=//p'); ";

#[test]
fn a_log_left_as_a_link_is_not_followed() {
    // `/proc/self/cwd/.env` is the build's directory inside the sandbox, and the host
    // repx's own directory (the project) when it reads the log back.
    const SECRET: &str = "host-dotenv-4c2d";
    let script = format!("{OUTPUTS}ln -s /proc/self/cwd/.env \"$log/stdout\"");
    let lab = hermetic_script_lab(&script, SECRET);
    assert_not_read_back(lab.path(), SECRET);
}

#[test]
fn an_output_left_as_a_link_is_not_followed() {
    // `$out` moved aside (the plugin's /out still works) and replaced by a link to
    // `/proc/self/cwd/secret-dir`: a directory of the build inside the sandbox, made here so
    // the build succeeds, and the project's `secret-dir` on the host.
    const SECRET: &str = "host-secret-dir-91fa";
    let script = format!(
        "{OUTPUTS}mkdir -p /proc/$PPID/cwd/secret-dir && mv \"$out\" \"$out-moved\" && \
         ln -s /proc/self/cwd/secret-dir \"$out\""
    );
    let lab = hermetic_script_lab(&script, SECRET);
    assert_not_read_back(lab.path(), SECRET);
}
