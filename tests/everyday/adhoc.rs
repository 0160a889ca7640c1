//! Ad hoc runs (`repx run --plugin`): where the output is, `log` and `show` without a lab,
//! hints in the command line's words, and `--out DIR --force-out`.

use std::fs;

use crate::INVALID;
use crate::common::{TempDir, built, repx};

fn generate() -> String {
    built("examples/simple/plugins/generate.wasm")
        .to_string_lossy()
        .into_owned()
}

fn sum() -> String {
    built("examples/simple/plugins/sum.wasm")
        .to_string_lossy()
        .into_owned()
}

/// The path on the `output: PATH` line.
#[track_caller]
fn output_path(stderr: &str) -> std::path::PathBuf {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("output: "))
        .unwrap_or_else(|| panic!("no output line\n{stderr}"));
    line.into()
}

/// The short id of the job whose output the `output: PATH` line names.
#[track_caller]
fn job_id(stderr: &str) -> String {
    let path = output_path(stderr);
    let id = path.parent().and_then(|p| p.file_name()).unwrap();
    id.to_string_lossy()[..12].to_string()
}

#[test]
fn the_output_path_is_printed_and_holds_the_output() {
    let dir = TempDir::new();
    let out = repx(
        dir.path(),
        &["run", "--plugin", &generate(), "--param", "n=4"],
    );
    out.expect_code(0);
    let path = output_path(&out.stderr);
    let data = fs::read_to_string(path.join("data.csv")).unwrap();
    assert_eq!(data.lines().count(), 5, "{data}");
}

#[test]
fn log_and_show_find_an_ad_hoc_job_without_a_lab() {
    let dir = TempDir::new();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    let ran = repx(
        dir.path(),
        &[
            "run",
            "--plugin",
            &generate(),
            "--param",
            "n=3",
            "--store",
            store,
        ],
    );
    ran.expect_code(0);
    let id = job_id(&ran.stderr);

    let show = repx(dir.path(), &["show", "job", &id, "--store", store]);
    show.expect_code(0);
    assert!(show.stdout.contains("state:    done"), "{}", show.stdout);
    assert!(show.stdout.contains("params:   n=3"), "{}", show.stdout);
    let output = repx(dir.path(), &["show", "output", &id, "--store", store]);
    output.expect_code(0);
    assert!(output.stdout.contains("data.csv"), "{}", output.stdout);
    repx(dir.path(), &["log", &id, "--store", store]).expect_code(0);

    // Without --store, the store of the directory the run was made in.
    let here = repx(
        dir.path(),
        &["run", "--plugin", &generate(), "--param", "n=5"],
    );
    here.expect_code(0);
    let id = job_id(&here.stderr);
    let show = repx(dir.path(), &["show", "job", &id]);
    show.expect_code(0);
    assert!(show.stdout.contains("params:   n=5"), "{}", show.stdout);

    // A directory with no lab and no store of its own still says there is no lab.
    let empty = TempDir::new();
    repx(empty.path(), &["log", &id])
        .expect_code(INVALID)
        .expect_stderr(&["no lab in "]);
}

#[test]
fn a_missing_input_is_hinted_with_the_input_flag() {
    let dir = TempDir::new();
    let out = repx(dir.path(), &["run", "--plugin", &sum()]);
    out.expect_code(1)
        .expect_stderr(&["has no input `data`", "pass `--input data=DIR`"]);
}

#[test]
fn out_replaces_a_directory_only_with_force_out() {
    let dir = TempDir::new();
    let target = dir.path().join("result");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("old.txt"), "old").unwrap();
    let target_arg = target.to_str().unwrap();

    let refused = repx(
        dir.path(),
        &["run", "--plugin", &generate(), "--out", target_arg],
    );
    refused
        .expect_code(INVALID)
        .expect_stderr(&["--out", "is not empty", "--force-out"]);
    assert_eq!(fs::read_to_string(target.join("old.txt")).unwrap(), "old");

    let forced = repx(
        dir.path(),
        &[
            "run",
            "--plugin",
            &generate(),
            "--param",
            "n=2",
            "--out",
            target_arg,
            "--force-out",
        ],
    );
    forced.expect_code(0).expect_stderr(&["output copied to"]);
    assert!(!target.join("old.txt").exists(), "the old content stayed");
    let data = fs::read_to_string(target.join("data.csv")).unwrap();
    assert_eq!(data.lines().count(), 3, "{data}");
    // Nothing left beside it.
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".result"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A file is not a directory to replace.
    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    repx(
        dir.path(),
        &[
            "run",
            "--plugin",
            &generate(),
            "--out",
            file.to_str().unwrap(),
            "--force-out",
        ],
    )
    .expect_code(INVALID)
    .expect_stderr(&["is not a directory"]);
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
}
