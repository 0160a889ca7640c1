//! The main flows as an unprivileged user: the seed example impure and pure, the simple
//! example pure and hermetic, a parameter sweep, `verify` and `gc`.
//!
//! Root skips the permission checks that an ordinary user meets (renaming a sealed
//! directory, entering one), so a suite run as root alone says nothing of them. Run as
//! root (as CI runs), this test creates the system user `repx-nonroot` (in the group
//! `nix-users`, which may use the Nix daemon) if it is missing, copies repx, the static
//! repx that builds hermetic jobs and the example labs with their plugins into a fresh
//! world-readable directory (the checkout may lie under a 0700 `/root`), hands the labs
//! and a home to that user, and runs each flow through `runuser`. Run as any other user,
//! it runs the same flows directly.
//!
//! Needs the plugins (`scripts/build-plugins`), the static repx that `scripts/test` builds,
//! bubblewrap, and `scripts/nix-setup` (Nix, and its daemon for users other than root).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Output, copy_example, remove_tree, static_repx};

/// The unprivileged user the flows run as, when this test runs as root.
const USER: &str = "repx-nonroot";

/// Everything the flows need, in a directory every user can read.
struct Fixture {
    root: PathBuf,
    /// `Some(user)` when the flows run as another user.
    user: Option<String>,
    repx: PathBuf,
    builder: PathBuf,
    home: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        remove_tree(&self.root);
    }
}

fn is_root() -> bool {
    // SAFETY: getuid cannot fail and touches no memory.
    unsafe { libc::getuid() == 0 }
}

#[track_caller]
fn run_ok(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The user, created if missing: a system user with a home, allowed to use the Nix daemon.
fn ensure_user() -> String {
    let exists = Command::new("id")
        .arg(USER)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        run_ok(Command::new("useradd").args([
            "--system",
            "--create-home",
            "--shell",
            "/bin/sh",
            USER,
        ]));
    }
    // Debian's multi-user Nix lets members of nix-users reach the daemon.
    let group = Command::new("getent")
        .args(["group", "nix-users"])
        .output()
        .unwrap();
    if group.status.success() {
        run_ok(Command::new("usermod").args(["-aG", "nix-users", USER]));
    }
    USER.to_string()
}

fn fixture() -> Fixture {
    let user = is_root().then(ensure_user);
    let root = std::env::temp_dir().join(format!("repx-nonroot-{}", std::process::id()));
    remove_tree(&root);
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let repx = root.join("bin/repx");
    let builder = root.join("bin/repx-static");
    fs::copy(env!("CARGO_BIN_EXE_repx"), &repx).unwrap();
    fs::copy(static_repx(), &builder).unwrap();
    let home = root.join("home");
    fs::create_dir_all(&home).unwrap();
    if let Some(user) = &user {
        run_ok(Command::new("chown").args(["-R", user]).arg(&home));
    }
    Fixture {
        root,
        user,
        repx,
        builder,
        home,
    }
}

impl Fixture {
    /// A copy of `examples/<name>` owned by the user, at `<root>/<copy>`.
    fn lab(&self, name: &str, copy: &str) -> PathBuf {
        let example = copy_example(name);
        let lab = self.root.join(copy);
        run_ok(Command::new("cp").arg("-a").arg(example.path()).arg(&lab));
        run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&lab));
        if let Some(user) = &self.user {
            run_ok(Command::new("chown").args(["-R", user]).arg(&lab));
        }
        lab
    }

    /// Runs repx as the user in `dir`, with a home, cache and plugin cache of its own.
    fn repx(&self, dir: &Path, args: &[&str]) -> Output {
        let env = [
            ("HOME", self.home.clone()),
            ("XDG_CACHE_HOME", self.home.join(".cache")),
            ("REPX_CACHE_DIR", self.home.join("wasm-cache")),
            ("REPX_NIX_BUILDER", self.builder.clone()),
        ];
        let mut command = match &self.user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--", "env"]);
                for (name, value) in &env {
                    command.arg(format!("{name}={}", value.display()));
                }
                command.arg(&self.repx);
                command
            }
            None => {
                let mut command = Command::new(&self.repx);
                command.envs(env.iter().map(|(n, v)| (n, v)));
                command
            }
        };
        let output = command.args(args).current_dir(dir).output().unwrap();
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// `repx verify` in `lab` finds every output as committed.
#[track_caller]
fn verified(fixture: &Fixture, lab: &Path) {
    let verify = fixture.repx(lab, &["verify"]);
    verify.expect_code(0);
    assert!(verify.stdout.contains(" 0 damaged"), "{}", verify.stdout);
}

#[test]
fn the_main_flows_run_as_an_unprivileged_user() {
    let fixture = fixture();

    // The seed example, impure (the edit–run loop), then pure from a snapshot of src/.
    for (copy, args) in [
        ("seed-impure", &["run"][..]),
        ("seed-pure", &["run", "--pure"]),
    ] {
        let lab = fixture.lab("impure-incremental", copy);
        let out = fixture.repx(&lab, args);
        out.expect_code(0);
        assert_eq!(
            out.summary(),
            "2 jobs: 2 ran, 0 cached, 0 failed, 0 skipped",
            "{copy}"
        );
        assert_eq!(
            common::read_output(&lab, "run.log"),
            "Main\nF1\nF2\n",
            "{copy}"
        );
        let again = fixture.repx(&lab, args);
        again.expect_code(0);
        assert_eq!(
            again.summary(),
            "2 jobs: 0 ran, 2 cached, 0 failed, 0 skipped"
        );
        verified(&fixture, &lab);
    }

    // A sweep, gathered.
    let sweep = fixture.lab("param-sweep", "sweep");
    let out = fixture.repx(&sweep, &["run"]);
    out.expect_code(0);
    assert!(
        out.summary().ends_with("0 failed, 0 skipped"),
        "{}",
        out.summary()
    );
    assert!(common::read_output(&sweep, "combined.csv").lines().count() > 1);
    verified(&fixture, &sweep);

    // The simple example pure, then hermetic through the Nix daemon: the same bytes.
    let pure = fixture.lab("simple", "simple-pure");
    fixture.repx(&pure, &["run", "--pure"]).expect_code(0);
    let hermetic = fixture.lab("simple", "simple-hermetic");
    let out = fixture.repx(&hermetic, &["run", "--hermetic"]);
    out.expect_code(0);
    assert_eq!(
        out.summary(),
        "3 jobs: 3 ran, 0 cached, 0 failed, 0 skipped"
    );
    for file in ["data.csv", "sum.txt", "plot.svg"] {
        assert_eq!(
            common::read_output(&hermetic, file),
            common::read_output(&pure, file),
            "{file}"
        );
    }
    verified(&fixture, &hermetic);

    // gc: a narrower sweep no longer reaches most of the jobs; they go, sealed as they are.
    let toml = sweep.join("repx.toml");
    let text = fs::read_to_string(&toml).unwrap();
    fs::write(&toml, text.replace("slope = [1, 2, 5]", "slope = [1]")).unwrap();
    let before = common::job_dirs(&sweep).len();
    let gc = fixture.repx(&sweep, &["gc"]);
    gc.expect_code(0);
    let after = common::job_dirs(&sweep).len();
    assert!(
        after < before,
        "gc removed nothing ({before} jobs):\n{}",
        gc.stdout
    );
    // The points kept are still there; only the gather, over fewer points, runs again.
    let narrower = fixture.repx(&sweep, &["run"]);
    narrower.expect_code(0);
    assert_eq!(narrower.cached(), ["point", "point"]);
    assert_eq!(narrower.ran(), ["combine"]);
    verified(&fixture, &sweep);
}
