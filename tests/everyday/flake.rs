//! The seed's own commands, with the real Nix: `examples/impure-incremental/flake.nix`
//! builds the example into a lab directory in the Nix store, `repx run build --lab
//! ./result` runs it in the checkout, and `nix run --impure .` does both. A lab directory
//! in the Nix store is read, never written.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::{TempDir, cache_dir, cache_home, copy_example, read_output, repo_root, repx};

/// Nix 2.8 has flakes and the `nix` command behind this flag.
const FLAKES: [&str; 2] = ["--extra-experimental-features", "nix-command flakes"];

/// Runs `nix ARGS…` in `dir` with `repx` (this test's) first on PATH, as the repx of the
/// tests runs (its plugin cache, a cache home beside the test's directory).
fn nix(dir: &Path, args: &[&str]) -> std::process::Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_repx")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("nix")
        .args(FLAKES)
        .args(args)
        .current_dir(dir)
        // What a shell sets, and what the flake reads as the lab's project directory.
        .env("PWD", dir)
        .env("PATH", path)
        .env("REPX_CACHE_DIR", cache_dir())
        .env("XDG_CACHE_HOME", cache_home(dir))
        .output()
        .expect("running nix (is Nix installed? scripts/nix-setup)")
}

/// A git checkout holding what the example's flake uses: nix/lib.nix and the example, as
/// the repository has them (a flake in a git repository sees its tracked files).
fn checkout() -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new();
    let root = repo_root();
    let example = Path::new("examples/impure-incremental");
    for file in [
        Path::new("nix/lib.nix"),
        &example.join("flake.nix"),
        &example.join("repx.toml"),
        &example.join("src/Makefile"),
        &example.join("src/main.c"),
        &example.join("src/file1.c"),
        &example.join("src/file2.c"),
    ] {
        fs::create_dir_all(dir.path().join(file).parent().unwrap()).unwrap();
        fs::copy(root.join(file), dir.path().join(file)).unwrap();
    }
    for args in [&["init", "-q"][..], &["add", "-A"]] {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }
    let example = dir.path().join(example);
    (dir, example)
}

#[test]
fn nix_builds_the_lab_and_repx_runs_it_from_the_nix_store() {
    let (_dir, example) = checkout();
    let built = nix(
        &example,
        &["build", ".#lab-impure", "--impure", "--offline"],
    );
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let result = fs::canonicalize(example.join("result")).unwrap();
    assert!(result.starts_with("/nix/store"), "{}", result.display());
    assert!(result.join("lab.json").is_file());

    let run = repx(&example, &["run", "build", "--lab", "./result"]);
    run.expect_code(0);
    assert_eq!(run.ran(), ["build", "run"], "{}", run.stderr);
    assert_eq!(read_output(&example, "run.log"), "Main\nF1\nF2\n");
    // make ran in the checkout, in place; nothing was written into the Nix store.
    assert!(example.join("src/main.o").is_file());
    let mut entries: Vec<String> = fs::read_dir(&result)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["bin", "lab.json"]);

    // The app builds the same lab and runs it: nothing changed, so nothing runs.
    let app = nix(&example, &["run", "--impure", "--offline", "."]);
    let stderr = String::from_utf8_lossy(&app.stderr);
    assert!(app.status.success(), "{stderr}");
    assert!(stderr.contains("2 jobs: 0 ran, 2 cached"), "{stderr}");
    // An edit runs again through the app, as `repx run` in the checkout would.
    fs::write(
        example.join("src/file1.c"),
        fs::read_to_string(example.join("src/file1.c"))
            .unwrap()
            .replace("F1", "F1 edited"),
    )
    .unwrap();
    let edited = nix(&example, &["run", "--impure", "--offline", "."]);
    assert!(
        edited.status.success(),
        "{}",
        String::from_utf8_lossy(&edited.stderr)
    );
    let log = repx(&example, &["run"]);
    log.expect_code(0);
    assert!(
        log.ran().is_empty(),
        "the checkout's own lab shares the store: {}",
        log.stderr
    );
}

#[test]
fn the_lab_needs_impure_to_name_its_project() {
    let (_dir, example) = checkout();
    let pure = nix(&example, &["build", ".#lab-impure", "--offline"]);
    assert!(!pure.status.success());
    let stderr = String::from_utf8_lossy(&pure.stderr);
    assert!(stderr.contains("build the lab with --impure"), "{stderr}");
}

#[test]
fn a_lab_directory_in_the_nix_store_is_run_and_not_written() {
    let simple = copy_example("simple");
    fs::remove_file(simple.path().join("lab.nix")).unwrap();
    let added = Command::new("nix-store")
        .arg("--add")
        .arg(simple.path())
        .output()
        .expect("nix-store");
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let lab = String::from_utf8(added.stdout).unwrap().trim().to_string();

    let work = TempDir::new();
    let out = repx(work.path(), &["run", "--lab", &lab]);
    out.expect_code(0);
    assert_eq!(out.ran(), ["generate", "plot", "sum"], "{}", out.stderr);
    assert!(
        !Path::new(&lab).join(".repx").exists(),
        "a link was made in the Nix store"
    );
    let again = repx(work.path(), &["run", "--lab", &lab]);
    again.expect_code(0);
    assert!(again.ran().is_empty(), "{}", again.stderr);
}
