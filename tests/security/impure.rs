//! Impure mode against what must stay out of a plugin's reach though it writes the project
//! at `/work`: the store (outside the project, shown by the `.repx` link), and the files that
//! decide grants (the lab file, the `.nix` files it reads, plugins and tools), which no job
//! may change during a run.

use std::fs;
use std::path::Path;

use crate::common::{default_store, job_dirs, repx};
use crate::{HostState, LIMITS, assert_refused, assert_untouched, attack_lab, refusals};

/// `victim` (pure, run `a`) writes `data.csv`; `attack` (impure, run `b`) aims at it.
fn store_lab(params: &str) -> String {
    format!(
        r#"
[stages.victim]
plugin = "plugins/generate.wasm"
params = {{ n = 5 }}
outputs = ["data.csv"]

[stages.attack]
plugin = "plugins/reach-store-link.wasm"
mode = "impure"
params = {{ {params} }}
{LIMITS}

[pipelines.victim]
stages = ["victim"]

[pipelines.attack]
stages = ["attack"]

[runs.a]
pipelines = ["victim"]

[runs.b]
pipelines = ["attack"]
"#
    )
}

/// Runs `a` and returns the victim's id and its committed `data.csv`.
fn victim(lab: &Path) -> (String, String) {
    repx(lab, &["run", "a"]).expect_code(0);
    let dirs = job_dirs(lab);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let id = dirs[0].file_name().unwrap().to_string_lossy().into_owned();
    let data = fs::read_to_string(dirs[0].join("out/data.csv")).unwrap();
    (id, data)
}

#[test]
fn the_store_behind_the_link_is_out_of_an_impure_plugins_reach() {
    let lab = attack_lab(&store_lab(""), &["generate", "reach-store-link"]);
    let (id, data) = victim(lab.path());
    let store = default_store(lab.path());
    assert!(
        !store.starts_with(lab.path()),
        "the default store {} lies in the project",
        store.display()
    );
    fs::write(
        lab.path().join("repx.toml"),
        store_lab(&format!(
            r#"victim = "{id}", store = "{}""#,
            store.display()
        )),
    )
    .unwrap();

    let before = HostState::of(lab.path());
    let out = repx(lab.path(), &["run", "b"]);
    out.expect_code(0);
    let refused = refusals(lab.path(), &out, "attack");
    let target = store.display().to_string();
    for attempt in [
        "read the link /work/.repx".to_string(),
        "read /work/.repx/records.jsonl".to_string(),
        "list /work/.repx/jobs".to_string(),
        format!("rewrite /work/.repx/jobs/{id}/out/data.csv"),
        format!("remove /work/.repx/jobs/{id}/out/data.csv"),
        "read /work/./.repx/../.repx/records.jsonl".to_string(),
        format!(
            "read /work/../{}/records.jsonl",
            target.trim_start_matches('/')
        ),
        format!("write {target}/PWNED-reach-store-link"),
        format!("rewrite {target}/jobs/{id}/out/data.csv"),
        format!("rewrite /work/own-link/jobs/{id}/out/data.csv"),
        format!("rewrite /work/own-relative-link/jobs/{id}/out/data.csv"),
        format!("rewrite .repx/jobs/{id}/out/data.csv"),
    ] {
        assert_refused(&refused, &attempt);
    }
    // The links it made are its own business in the project; the store is untouched.
    fs::remove_file(lab.path().join("own-link")).ok();
    fs::remove_file(lab.path().join("own-relative-link")).ok();
    assert_untouched(lab.path(), &before);
    let victim_output = store.join("jobs").join(&id).join("out/data.csv");
    assert_eq!(fs::read_to_string(victim_output).unwrap(), data);
}

#[test]
fn a_forged_store_in_place_of_the_link_is_refused_and_changes_nothing() {
    let lab = attack_lab(&store_lab(""), &["generate", "reach-store-link"]);
    let (id, data) = victim(lab.path());
    let store = default_store(lab.path());
    fs::write(
        lab.path().join("repx.toml"),
        store_lab(&format!(
            r#"victim = "{id}", store = "{}", forge = "yes""#,
            store.display()
        )),
    )
    .unwrap();
    repx(lab.path(), &["run", "b"]).expect_code(0);
    let forged = lab.path().join(".repx");
    assert!(
        fs::symlink_metadata(&forged).unwrap().is_dir(),
        "the plugin could not replace the link, so this test tests nothing"
    );

    // Every command that uses the default store refuses the forged one, saying what to do.
    for args in [&["run", "a"][..], &["list", "jobs"], &["verify"]] {
        let out = repx(lab.path(), args);
        out.expect_code(2)
            .expect_stderr(&[".repx is a directory", "rm -r", "--store"]);
    }
    // The real store is where it was, as it was.
    let real = store.join("jobs").join(&id).join("out/data.csv");
    assert_eq!(fs::read_to_string(real).unwrap(), data);

    fs::remove_dir_all(&forged).unwrap();
    let out = repx(lab.path(), &["run", "a"]);
    out.expect_code(0);
    assert_eq!(out.cached(), ["victim"], "{}", out.stderr);
    assert_eq!(default_store(lab.path()), store);
    repx(lab.path(), &["verify"]).expect_code(0);
}

#[test]
fn a_default_store_inside_the_project_is_refused_when_a_stage_is_impure() {
    // The cache directory, and with it the default store, may lie in the project
    // (`HOME=$PWD`, or XDG_CACHE_HOME there), where impure jobs write at /work.
    let lab = attack_lab(&store_lab(""), &["generate", "reach-store-link"]);
    let cache = lab.path().join("cache");
    let out = crate::common::repx_with_env(
        lab.path(),
        &["run", "b"],
        &[("XDG_CACHE_HOME", cache.to_str().unwrap())],
    );
    out.expect_code(2).expect_stderr(&[
        "the default store",
        "impure stage `attack`",
        "XDG_CACHE_HOME",
        "--store",
    ]);
    assert!(!cache.exists(), "the store was made");
    assert!(
        fs::symlink_metadata(lab.path().join(".repx")).is_err(),
        "the link was made"
    );
}

#[test]
fn a_project_with_a_long_name_has_a_store() {
    // A directory's name may be 255 bytes; the store's name adds a digest to it.
    let lab = attack_lab(&store_lab(""), &["generate", "reach-store-link"]);
    let project = lab.path().join("l".repeat(250));
    fs::create_dir(&project).unwrap();
    for entry in fs::read_dir(lab.path()).unwrap().flatten() {
        if entry.path() != project {
            fs::rename(entry.path(), project.join(entry.file_name())).unwrap();
        }
    }
    repx(&project, &["run", "a"]).expect_code(0);
    assert_eq!(job_dirs(&project).len(), 1);
    let store = default_store(&project);
    assert!(store.join("jobs").is_dir(), "{}", store.display());
}

#[test]
fn a_store_inside_the_project_is_refused_when_a_stage_is_impure() {
    let lab = attack_lab(&store_lab(""), &["generate", "reach-store-link"]);
    let out = repx(lab.path(), &["--store", "inner/store", "run", "b"]);
    out.expect_code(2)
        .expect_stderr(&["--store inner/store", "impure stage `attack`", "/work"]);
    assert!(!lab.path().join("inner").exists(), "the store was made");
    // Outside the project, or with every stage pure, it is the user's choice.
    let outside = crate::common::TempDir::new();
    let store = outside.path().join("store");
    repx(
        lab.path(),
        &["--store", store.to_str().unwrap(), "run", "a"],
    )
    .expect_code(0);
    repx(
        lab.path(),
        &["--store", "inner/store", "run", "a", "--pure"],
    )
    .expect_code(0);
}

/// `a-attack` (impure) rewrites `file` as `how` says; `b-after` reads its output;
/// `c-indep` is independent of it and queued after it.
fn rewrite_lab(file: &str, how: &str, pin: bool) -> crate::common::TempDir {
    let toml = format!(
        r#"
[stages.a-attack]
plugin = "plugins/rewrite-lab.wasm"
mode = "impure"
params = {{ file = "{file}", how = "{how}", text = "\n# changed\n" }}
{LIMITS}

[stages.b-after]
plugin = "plugins/generate.wasm"
inputs = {{ up = "a-attack" }}
params = {{ n = 3 }}

[stages.c-indep]
plugin = "plugins/generate.wasm"
params = {{ n = 4 }}

[pipelines.p]
stages = ["a-attack", "b-after", "c-indep"]

[runs.r]
pipelines = ["p"]
"#
    );
    let lab = attack_lab(&toml, &["generate", "rewrite-lab"]);
    if pin {
        repx(lab.path(), &["plugin", "pin"]).expect_code(0);
        let pinned = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
        assert_eq!(pinned.matches("sha256").count(), 3, "{pinned}");
    }
    lab
}

/// Runs the lab, one job at a time and past failures, and checks that the attack's job
/// failed naming `file`, and that nothing at all was committed.
fn assert_stopped_at(lab: &Path, file: &str) {
    let out = repx(lab, &["run", "-j", "1", "--continue-on-failure"]);
    out.expect_code(1).expect_stderr(&[
        "FAILED a-attack",
        &format!("{file} changed while this impure job ran"),
    ]);
    assert!(out.ran().is_empty(), "jobs ran after it: {:?}", out.ran());
    assert!(job_dirs(lab).is_empty(), "committed: {:?}", job_dirs(lab));
}

#[test]
fn an_impure_job_that_grants_itself_a_shell_fails_and_nothing_runs_after_it() {
    let lab = rewrite_lab("repx.toml", "grant-shell", false);
    assert_stopped_at(lab.path(), "repx.toml");
    let changed = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    assert!(changed.contains("tools = [\"sh\"]"), "{changed}");
}

#[test]
fn an_impure_job_that_drops_the_pins_fails() {
    let lab = rewrite_lab("repx.toml", "drop-pins", true);
    assert_stopped_at(lab.path(), "repx.toml");
}

#[test]
fn an_impure_job_that_changes_a_plugin_fails() {
    let lab = rewrite_lab("plugins/generate.wasm", "append", false);
    assert_stopped_at(lab.path(), "plugins/generate.wasm");
}

#[test]
fn files_that_decide_no_grant_and_the_users_own_edits_are_normal() {
    let lab = rewrite_lab("notes.txt", "create", false);
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    assert_eq!(out.ran().len(), 3, "{}", out.stderr);
    // The user edits the lab and a plugin between runs: read as usual.
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    fs::write(lab.path().join("repx.toml"), toml.replace("n = 4", "n = 6")).unwrap();
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    assert!(out.ran().contains(&"c-indep".to_string()), "{}", out.stderr);
}
