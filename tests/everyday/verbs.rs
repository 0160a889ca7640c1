//! The original RepX's verbs: `gc pin|unpin`, `cache list|stats|clear`, `log -f`.

use std::fs;

use crate::INVALID;
use crate::common::{TempDir, copy_example, job_dirs, repx, repx_with_env};

fn job_names(lab: &std::path::Path) -> Vec<String> {
    job_dirs(lab)
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_pinned_run_survives_gc_until_unpinned() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    let first = job_names(lab.path());
    assert_eq!(first.len(), 3);
    let pin = repx(lab.path(), &["gc", "pin", "simple"]);
    pin.expect_code(0)
        .expect_stderr(&["pinned run simple: 3 of its 3 jobs are done"]);

    // The lab moves on: its run now reaches other jobs, and none of the first three.
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    fs::write(
        lab.path().join("repx.toml"),
        toml.replace("params = { n = 100 }", "params = { n = 7 }"),
    )
    .unwrap();
    repx(lab.path(), &["run"]).expect_code(0);
    assert_eq!(job_dirs(lab.path()).len(), 6);
    let gc = repx(lab.path(), &["gc"]);
    gc.expect_code(0).expect_stderr(&["kept pinned run simple"]);
    let kept = job_names(lab.path());
    for id in &first {
        assert!(kept.contains(id), "pinned job {id} was collected");
    }
    assert_eq!(kept.len(), 6, "{}", gc.stderr);

    repx(lab.path(), &["gc", "unpin", "simple"]).expect_code(0);
    repx(lab.path(), &["gc"]).expect_code(0);
    let left = job_names(lab.path());
    assert_eq!(left.len(), 3);
    assert!(first.iter().all(|id| !left.contains(id)), "{left:?}");

    repx(lab.path(), &["gc", "unpin", "simple"])
        .expect_code(INVALID)
        .expect_stderr(&["run `simple`", "is not pinned"]);
    repx(lab.path(), &["gc", "pin", "simpel"])
        .expect_code(INVALID)
        .expect_stderr(&["no run `simpel`", "did you mean `simple`"]);
}

#[test]
fn cache_stats_and_clear_the_compiled_plugins() {
    let lab = copy_example("simple");
    let cache = TempDir::new();
    let env = [("REPX_CACHE_DIR", cache.path().to_str().unwrap())];
    let cached = |args: &[&str]| repx_with_env(lab.path(), args, &env);
    cached(&["run"]).expect_code(0);
    let compiled = fs::read_dir(cache.path().join("wasm")).unwrap().count();
    assert_eq!(compiled, 3, "one artifact per plugin");

    let stats = cached(&["cache", "stats"]);
    stats.expect_code(0);
    assert!(
        stats.stdout.contains("plugins:   3 compiled"),
        "{}",
        stats.stdout
    );
    let list = cached(&["cache", "list"]);
    assert_eq!(list.stdout.lines().count(), 3, "{}", list.stdout);

    // Nothing is older than a day yet; one artifact is made three days old; all of it is
    // older than nothing.
    let none = cached(&["cache", "clear", "--older-than", "1d"]);
    none.expect_code(0);
    assert!(
        none.stdout.contains("removed 0 compiled plugins"),
        "{}",
        none.stdout
    );
    let artifact = fs::read_dir(cache.path().join("wasm"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86_400);
    fs::File::options()
        .write(true)
        .open(artifact.path())
        .unwrap()
        .set_modified(old)
        .unwrap();
    let stale = cached(&["cache", "clear", "--older-than", "2d"]);
    assert!(
        stale.stdout.contains("removed 1 compiled plugins"),
        "{}",
        stale.stdout
    );
    assert!(!artifact.path().exists());
    // A run that loads an artifact marks it used, so an old but used one is kept.
    let used = fs::read_dir(cache.path().join("wasm"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    fs::File::options()
        .write(true)
        .open(used.path())
        .unwrap()
        .set_modified(old)
        .unwrap();
    cached(&["run", "--force"]).expect_code(0);
    let kept = cached(&["cache", "clear", "--older-than", "2d"]);
    assert!(
        kept.stdout.contains("removed 0 compiled plugins"),
        "{}",
        kept.stdout
    );
    let all = cached(&["cache", "clear"]);
    all.expect_code(0);
    assert!(
        all.stdout.contains("removed 3 compiled plugins"),
        "{}",
        all.stdout
    );
    assert_eq!(fs::read_dir(cache.path().join("wasm")).unwrap().count(), 0);

    cached(&["cache", "clear", "--older-than", "soon"])
        .expect_code(INVALID)
        .expect_stderr(&["--older-than soon"]);
    // The next run compiles again and still gives the same outputs (all cached here).
    let again = cached(&["run", "--force"]);
    again.expect_code(0);
    assert_eq!(fs::read_dir(cache.path().join("wasm")).unwrap().count(), 3);
}
