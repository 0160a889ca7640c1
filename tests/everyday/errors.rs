//! Errors said once, and rightly: a missing lab, a bare word in TOML, `verify --repair`.

use crate::INVALID;
use crate::common::{TempDir, copy_example, job_with_output, lab_dir, repx};

#[test]
fn a_missing_lab_is_said_once_with_what_to_do() {
    let dir = TempDir::new();
    for args in [
        &["run", "--lab", "nope"][..],
        &["list", "jobs", "--lab", "nope/repx.toml"],
        &["show", "stage", "x", "--lab", "nope"],
    ] {
        let out = repx(dir.path(), args);
        out.expect_code(INVALID).expect_stderr(&[
            "no lab at ",
            "nope",
            "no such file or directory",
        ]);
        assert_eq!(
            out.stderr.matches("No such file or directory").count()
                + out.stderr.matches("no such file or directory").count(),
            1,
            "{}",
            out.stderr
        );
    }
}

#[test]
fn an_unquoted_string_is_named_as_such_not_as_a_bad_boolean() {
    for (value, word) in [
        ("mode = impure", "impure"),
        ("plugin = tool", "tool"),
        ("plugin = nope", "nope"),
    ] {
        let toml = format!("[stages.a]\n{value}\n");
        let lab = lab_dir(&toml, &[]);
        let out = repx(lab.path(), &["run"]);
        let key = value.split(' ').next().unwrap();
        out.expect_code(INVALID).expect_stderr(&[&format!(
            "repx.toml:2: `stages.a.{key}`: `{word}` is not a value: quote a string (\"{word}\")"
        )]);
        assert!(
            !out.stderr.contains("invalid boolean") && !out.stderr.contains("invalid float"),
            "{}",
            out.stderr
        );
    }
}

/// `inf` and `nan` are TOML floats but no JSON, which a plugin reads its parameters as:
/// refused with the key and line, not passed on as `null` (which made a sweep over
/// `[inf, nan]` one job).
#[test]
fn a_parameter_of_inf_or_nan_is_refused_naming_its_key() {
    let lab = lab_dir(
        "[stages.a]\nplugin = \"plugins/generate.wasm\"\nparams = { n = 3, w = { x = [1.0, -inf] } }\n\
         [pipelines.p]\nstages = [\"a\"]\n\
         [runs.r]\npipelines = [\"p\"]\nparams = { n = [inf, nan] }\n",
        &[],
    );
    let out = repx(lab.path(), &["list", "jobs"]);
    out.expect_code(INVALID).expect_stderr(&[
        "repx.toml:1: `stages.a.params.w`: `-inf` is no number a plugin can read",
        "repx.toml:8: `runs.r.params.n`: `inf` is no number a plugin can read",
        "or a string (\"inf\")",
    ]);
}

#[test]
fn verify_repair_exits_zero_once_the_damage_is_removed() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    let sum = job_with_output(lab.path(), "sum.txt");
    crate::common::remove_tree(&sum.join("out"));
    repx(lab.path(), &["verify"]).expect_code(1);
    let repair = repx(lab.path(), &["verify", "--repair"]);
    repair.expect_code(0);
    assert!(
        repair.stdout.contains("removed 1 damaged outputs"),
        "{}",
        repair.stdout
    );
    repx(lab.path(), &["verify"]).expect_code(0);
}
