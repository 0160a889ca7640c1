//! The original RepX's verbs: `gc pin|unpin`, `cache list|stats|clear`, `log -f`.

use std::fs;

use crate::INVALID;
use crate::common::{TempDir, copy_example, job_dirs, lab_dir, repx, repx_command, repx_with_env};

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

const FOLLOW_LAB: &str = r#"
[stages.slow]
plugin = "plugins/test-follow.wasm"
mode = "impure"

[pipelines.main]
stages = ["slow"]

[runs.main]
pipelines = ["main"]
"#;

/// Waits (at most a minute, so a hang fails the test) until `found` says yes.
#[track_caller]
fn wait_for<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no {what} after a minute"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn log_follow_prints_a_running_job_as_it_writes_until_it_is_committed() {
    use std::io::BufRead;
    use std::process::Stdio;
    let lab = lab_dir(FOLLOW_LAB, &["test-follow"]);
    let mut run = repx_command(lab.path(), &["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The job is running when its live stdout holds its first line.
    let id = wait_for("live log", || {
        let store = fs::canonicalize(lab.path().join(".repx")).ok()?;
        let live = fs::read_dir(store.join("tmp/live"))
            .ok()?
            .flatten()
            .next()?;
        let text = fs::read_to_string(live.path().join("stdout")).ok()?;
        text.contains("first line")
            .then(|| live.file_name().to_string_lossy().into_owned())
    });

    let mut follower = repx_command(lab.path(), &["log", "-f", &id[..12]])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = lines.send(line.unwrap());
        }
    });
    // The follower shows the first line while the job still waits for `go`.
    let mut seen = Vec::new();
    wait_for("first line from the follower", || {
        seen.extend(received.try_iter());
        seen.iter().any(|l| l == "first line").then_some(())
    });
    assert!(!seen.iter().any(|l| l == "second line"), "{seen:?}");
    fs::write(lab.path().join("go"), "").unwrap();

    let status = follower.wait().unwrap();
    reader.join().unwrap();
    seen.extend(received.try_iter());
    assert!(status.success(), "{seen:?}");
    assert_eq!(
        seen,
        [
            "==> stdout <==",
            "first line",
            "second line",
            "",
            "==> stderr <==",
            "to stderr"
        ],
        "each line once, in order"
    );
    assert!(run.wait().unwrap().success());
    // Nothing is left of the live logs.
    let store = fs::canonicalize(lab.path().join(".repx")).unwrap();
    assert!(!store.join("tmp/live").exists());
}

#[test]
fn log_follow_of_a_job_nothing_runs_says_so() {
    let lab = lab_dir(FOLLOW_LAB, &["test-follow"]);
    let listed = repx(lab.path(), &["list", "jobs"]);
    let id = listed.stdout.split_whitespace().next().unwrap().to_string();
    let out = repx(lab.path(), &["log", "-f", &id]);
    out.expect_code(1).expect_stderr(&["is not running"]);
}
