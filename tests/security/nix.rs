//! Hermetic mode against its own configuration: Nix settings that would build a job
//! outside the sandbox, or make Nix trust an output nobody built there, are refused before
//! anything runs; the builder refuses to run unsandboxed whatever Nix was told.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::{Output, TempDir, copy_example, job_dirs, repx_with_env, static_repx};

/// `repx` in `lab` with the static builder named and `env` added.
fn hermetic(lab: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let builder = static_repx();
    let mut env = env.to_vec();
    env.push(("REPX_NIX_BUILDER", builder.to_str().unwrap()));
    repx_with_env(lab, args, &env)
}

/// The simple example with a parameter no other run used, so Nix would have to build it.
fn fresh_simple() -> TempDir {
    let lab = copy_example("simple");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    let toml = toml.replace("n = 100", &format!("n = {}", 2_000_000 + nanos % 1_000_000));
    fs::write(lab.path().join("repx.toml"), toml).unwrap();
    lab
}

#[test]
fn nix_settings_that_weaken_hermetic_mode_are_refused() {
    let lab = fresh_simple();
    for option in [
        // The issue's own: this built unsandboxed, recorded the job as hermetic, and a later
        // plain `--hermetic` run took the output from the Nix store.
        "sandbox=false",
        "sandbox=relaxed",
        "sandbox-fallback=true",
        "extra-sandbox-paths=/etc",
        "sandbox-paths=/bin/sh=/bin/busybox /root",
        "build-users-group=",
        "allowed-impure-host-deps=/usr/lib",
        "pre-build-hook=/bin/true",
        "post-build-hook=/bin/true",
        "builders=ssh://elsewhere x86_64-linux",
        "require-sigs=false",
        "trusted-public-keys=mine:AAAA",
        "trusted-substituters=file:///tmp",
    ] {
        let out = hermetic(
            lab.path(),
            &["run", "--hermetic", "--nix-option", option],
            &[],
        );
        out.expect_code(2).expect_stderr(&[
            &format!("--nix-option {option}: hermetic jobs take no per-run Nix setting"),
            "/etc/nix/nix.conf",
        ]);
        assert!(job_dirs(lab.path()).is_empty(), "{option}: a job ran");
    }
    // NIX_CONFIG is a per-run setting too.
    let out = hermetic(
        lab.path(),
        &["run", "--hermetic"],
        &[("NIX_CONFIG", "max-jobs = 2\nsandbox = false")],
    );
    out.expect_code(2)
        .expect_stderr(&["NIX_CONFIG: sandbox = false: hermetic jobs take no per-run"]);
    assert!(job_dirs(lab.path()).is_empty(), "a job ran");

    // A configuration file that turns the sandbox off is caught by the effective setting.
    let conf = TempDir::new();
    fs::write(conf.path().join("nix.conf"), "sandbox = false\n").unwrap();
    let file = conf.path().join("nix.conf");
    let out = hermetic(
        lab.path(),
        &["run", "--hermetic"],
        &[("NIX_USER_CONF_FILES", file.to_str().unwrap())],
    );
    out.expect_code(2)
        .expect_stderr(&["without its sandbox", "sandbox = true"]);
    assert!(job_dirs(lab.path()).is_empty(), "a job ran");
}

/// Builds a derivation whose builder is the static repx running `command`, with Nix's
/// sandbox `sandbox`; Nix's output.
fn build_with_repx(command: &str, sandbox: bool) -> std::process::Output {
    let added = Command::new("nix-store")
        .arg("--add")
        .arg(static_repx())
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let builder = String::from_utf8(added.stdout).unwrap();
    let expression = format!(
        r#"derivation {{
  name = "repx-sandbox-probe-{command}";
  system = builtins.currentSystem;
  builder = builtins.storePath "{}";
  args = [ "{command}" ];
  outputs = [ "out" "log" ];
}}"#,
        builder.trim()
    );
    Command::new("nix-build")
        .args(["--no-out-link", "--option", "sandbox"])
        .arg(if sandbox { "true" } else { "false" })
        .args(["-E", &expression])
        .output()
        .unwrap()
}

#[test]
fn the_builder_refuses_to_build_outside_the_sandbox() {
    // Whatever Nix is told (here by root, on the command line), a repx derivation built
    // unsandboxed fails: no output of one can become valid in the Nix store.
    for command in ["exec-job", "compile-plugin"] {
        let out = build_with_repx(command, false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{command} built unsandboxed:\n{stderr}"
        );
        assert!(
            stderr.contains("this build is not running in the Nix sandbox"),
            "{command}:\n{stderr}"
        );
        // In the sandbox the same builder gets past that check (and fails on what this
        // probe lacks, a job).
        let out = build_with_repx(command, true);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            !stderr.contains("not running in the Nix sandbox"),
            "{stderr}"
        );
        assert!(stderr.contains("is not set"), "{command}:\n{stderr}");
    }
}

/// A hermetic stage reading a `path:` input (run `input`) and one reading a pure upstream
/// job's output (run `upstream`). `data/data.csv` holds `secret` in its second line.
fn private_lab(secret: u64) -> TempDir {
    let lab = crate::common::lab_dir(
        &format!(
            r#"
[stages.secret]
plugin = "plugins/sum.wasm"
mode = "hermetic"
inputs = {{ data = "path:data" }}
outputs = ["sum.txt"]

[stages.generate]
plugin = "plugins/generate.wasm"
params = {{ n = {n} }}

[stages.sum]
plugin = "plugins/sum.wasm"
mode = "hermetic"
inputs = {{ data = "generate" }}
outputs = ["sum.txt"]

[pipelines.p]
stages = ["secret"]

[pipelines.q]
stages = ["generate", "sum"]

[runs.input]
pipelines = ["p"]

[runs.upstream]
pipelines = ["q"]
"#,
            n = 10 + secret % 1000
        ),
        &[],
    );
    fs::create_dir_all(lab.path().join("data")).unwrap();
    fs::write(
        lab.path().join("data/data.csv"),
        format!("x,y\n{secret},1\n"),
    )
    .unwrap();
    lab
}

/// Whether a file in the Nix store holds `needle`.
fn in_nix_store(needle: &str) -> bool {
    let mut stack = vec![std::path::PathBuf::from("/nix/store")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file()
                && meta.len() < 4096
                && fs::read(entry.path())
                    .is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
            {
                return true;
            }
        }
    }
    false
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn private_inputs_are_not_published_to_the_nix_store() {
    let secret = 7_000_000_000
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            % 1_000_000_000;
    let needle = format!("{secret},1");

    // A 0600 file: only its owner may read it here; in the Nix store, everyone could.
    let lab = private_lab(secret);
    let data = lab.path().join("data/data.csv");
    chmod(&data, 0o600);
    let out = hermetic(lab.path(), &["run", "input"], &[]);
    out.expect_code(2).expect_stderr(&[
        "input `data` of stage `secret`",
        &format!(
            "{}: {} cannot be read by other local users",
            lab.path().join("data").display(),
            data.display()
        ),
        "--publish-private-inputs",
    ]);
    assert!(job_dirs(lab.path()).is_empty(), "a job ran");
    assert!(
        !in_nix_store(&needle),
        "the private file is in the Nix store"
    );

    // Readable files in a 0700 project are private all the same.
    chmod(&data, 0o644);
    chmod(lab.path(), 0o700);
    let out = hermetic(lab.path(), &["run", "input"], &[]);
    out.expect_code(2).expect_stderr(&[&format!(
        "{} cannot be read by other local users",
        lab.path().display()
    )]);
    assert!(
        !in_nix_store(&needle),
        "the private file is in the Nix store"
    );

    // So is a pure upstream output, in a store no other user can enter.
    chmod(lab.path(), 0o755);
    let private = TempDir::new();
    chmod(private.path(), 0o700);
    let store = private.path().join("store");
    let out = hermetic(
        lab.path(),
        &["--store", store.to_str().unwrap(), "run", "upstream"],
        &[],
    );
    out.expect_code(2).expect_stderr(&[
        "input `data` of stage `sum`, an upstream output in the repx store",
        &format!(
            "{} cannot be read by other local users",
            private.path().display()
        ),
        "--publish-private-inputs",
    ]);
    assert!(
        !store.join("jobs").exists() || fs::read_dir(store.join("jobs")).unwrap().next().is_none()
    );

    // Readable where it is, it may go; or the user says to publish it.
    hermetic(lab.path(), &["run", "upstream"], &[]).expect_code(0);
    chmod(lab.path(), 0o700);
    hermetic(
        lab.path(),
        &["run", "input", "--publish-private-inputs"],
        &[],
    )
    .expect_code(0);
    chmod(lab.path(), 0o755);
}
