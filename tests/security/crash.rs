//! The crash suite: `repx run` of a sweep of 1,000 jobs and more, killed with SIGKILL at 50 different moments
//! (before its first event, after its first job started, after its 1st to 9th job finished,
//! and at a few fixed delays), resuming each time from what the previous runs left.
//!
//! After every kill: `repx verify` is clean; every job any run reported done (a
//! `job_finished` or `job_cached` event of `--json`) is recorded and its output holds
//! exactly what its parameters make; and no later run starts a job reported done. At the
//! end an uninterrupted run completes only what remained, and the run after it runs nothing.
//!
//! The sweep grows by a few slopes before every run, so that each run has work when its
//! moment comes, however much the runs before it committed beyond what they reported.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{copy_example, repx, repx_command};

const JOBS: i64 = 1000;
/// Slopes added before each run: more than any `Finished(n)` moment waits for.
const GROWN: i64 = 25;
const KILLS: usize = 50;
const INTERCEPT: i64 = 7;

/// When a run is killed.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// Once it reported that it started (before any job ran or was found cached).
    Started,
    /// Once its first job started.
    FirstJob,
    /// Once it reported this many jobs finished.
    Finished(usize),
    /// This long after it was started, whatever it was doing (opening the store, planning).
    After(Duration),
}

fn moment(k: usize) -> Moment {
    match k % 10 {
        0 => Moment::Started,
        1 => Moment::FirstJob,
        9 => Moment::After(Duration::from_millis(5 * (k as u64 / 10))),
        n => Moment::Finished(n - 1 + (k / 10) % 3),
    }
}

/// The param-sweep example's point stage over slopes `0..jobs`.
fn write_sweep(lab: &Path, jobs: i64) {
    let slopes: Vec<String> = (0..jobs).map(|s| s.to_string()).collect();
    let toml = format!(
        r#"
[stages.point]
plugin = "plugins/sweep-point.wasm"
params = {{ slope = 1.0, intercept = 0.0 }}
outputs = ["points.csv", "plot.svg", "metrics.json"]

[pipelines.sweep]
stages = ["point"]

[runs.sweep]
pipelines = ["sweep"]
params = {{ slope = [{}], intercept = [{INTERCEPT}] }}
"#,
        slopes.join(", ")
    );
    fs::write(lab.join("repx.toml"), toml).unwrap();
}

/// What a point job must leave in `points.csv`.
fn expected_points(slope: i64) -> String {
    let mut csv = String::from("x,y\n");
    for x in (0..=10).map(f64::from) {
        let y = slope as f64 * x + INTERCEPT as f64;
        csv.push_str(&format!("{x},{y}\n"));
    }
    csv
}

/// What one run reported, up to where it was killed.
#[derive(Default)]
struct Seen {
    /// Job id → slope, of the jobs reported finished or cached.
    done: BTreeMap<String, i64>,
    started: Vec<String>,
    cached_ids: std::collections::BTreeSet<String>,
    finished: usize,
    cached: usize,
    completed: bool,
}

/// Runs `repx run --json` and kills it at `moment` (never, with `None`).
fn run_until(lab: &Path, moment: Option<Moment>) -> Seen {
    let mut child = repx_command(lab, &["run", "--json", "-j", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut seen = Seen::default();
    if let Some(Moment::After(delay)) = moment {
        std::thread::sleep(delay.saturating_sub(started.elapsed()));
        let _ = child.kill();
    }
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON event: {line:?}: {e}"));
        let id = event["id"].as_str().unwrap_or_default().to_string();
        let slope = event["params"]["slope"].as_i64();
        match event["event"].as_str().unwrap() {
            "job_started" => seen.started.push(id),
            "job_finished" => {
                seen.finished += 1;
                seen.done.insert(id, slope.unwrap());
            }
            "job_cached" => {
                seen.cached += 1;
                seen.cached_ids.insert(id.clone());
                seen.done.insert(id, slope.unwrap());
            }
            "job_failed" => panic!("a job failed: {line}"),
            "run_finished" => seen.completed = true,
            _ => {}
        }
        let kill = match moment {
            Some(Moment::Started) => event["event"] == "run_started",
            Some(Moment::FirstJob) => !seen.started.is_empty(),
            Some(Moment::Finished(n)) => seen.finished >= n,
            _ => false,
        };
        if kill {
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait().unwrap();
    if moment.is_none() {
        assert_eq!(status.code(), Some(0), "the uninterrupted run failed");
    }
    seen
}

/// Asserts that the store is clean and holds every job in `done`, intact.
#[track_caller]
fn assert_intact(lab: &Path, done: &BTreeMap<String, i64>, after: &str) {
    let verify = repx(lab, &["verify"]);
    assert_eq!(
        verify.code, 0,
        "verify after {after}:\n{}{}",
        verify.stdout, verify.stderr
    );
    let records = fs::read_to_string(lab.join(".repx/records.jsonl")).unwrap_or_default();
    let recorded: BTreeMap<String, i64> = records
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("torn record after {after}: {l:?}: {e}"));
            (
                r["id"].as_str().unwrap().to_string(),
                r["params"]["slope"].as_i64().unwrap(),
            )
        })
        .collect();
    for (id, slope) in done {
        assert_eq!(
            recorded.get(id),
            Some(slope),
            "job {id} lost its record after {after}"
        );
        let out: PathBuf = lab.join(".repx/jobs").join(id).join("out");
        let points = fs::read_to_string(out.join("points.csv"))
            .unwrap_or_else(|e| panic!("job {id} (slope {slope}) lost after {after}: {e}"));
        assert_eq!(points, expected_points(*slope), "job {id} after {after}");
        let metrics: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
        let max = metrics["max_y"].as_f64().unwrap();
        assert_eq!(
            max,
            (*slope as f64 * 10.0 + INTERCEPT as f64).max(INTERCEPT as f64)
        );
        assert!(out.join("plot.svg").is_file());
    }
}

#[test]
fn killed_at_fifty_moments_loses_nothing() {
    let lab = copy_example("param-sweep");
    let started = Instant::now();
    let mut done: BTreeMap<String, i64> = BTreeMap::new();
    let mut kills = 0;
    for k in 0..KILLS {
        let moment = moment(k);
        write_sweep(lab.path(), JOBS + GROWN * k as i64);
        let seen = run_until(lab.path(), Some(moment));
        let after = format!("kill {k} ({moment:?})");
        for id in &seen.started {
            assert!(
                !done.contains_key(id),
                "{after}: started {id}, already done"
            );
        }
        // Cached jobs are all found before any job starts: once one started, everything
        // an earlier run reported done was found done again.
        if !seen.started.is_empty() {
            let missing: Vec<&String> = done
                .keys()
                .filter(|id| !seen.cached_ids.contains(*id))
                .collect();
            assert!(missing.is_empty(), "{after}: not found cached: {missing:?}");
        }
        eprintln!(
            "{after}: {} finished, {} cached, {} started",
            seen.finished,
            seen.cached,
            seen.started.len()
        );
        done.extend(seen.done);
        if !seen.completed {
            kills += 1;
        }
        assert_intact(lab.path(), &done, &after);
    }
    assert!(
        kills >= KILLS * 4 / 5,
        "only {kills} of the runs were killed before finishing"
    );
    let reported = done.len();

    // The next run completes only what remained: what the kills left, and the new slopes.
    let total = (JOBS + GROWN * KILLS as i64) as usize;
    write_sweep(lab.path(), total as i64);
    let last = run_until(lab.path(), None);
    assert!(last.completed);
    for id in &last.started {
        assert!(
            !done.contains_key(id),
            "the last run re-ran {id}, done before"
        );
    }
    assert_eq!(last.finished + last.cached, total);
    assert_eq!(last.started.len(), last.finished);
    assert!(last.finished >= GROWN as usize);
    assert!(last.cached >= done.len());
    done.extend(last.done);
    assert_eq!(done.len(), total);
    assert_intact(lab.path(), &done, "the last run");

    // And the one after runs nothing.
    let noop = run_until(lab.path(), None);
    assert_eq!((noop.finished, noop.cached), (0, total));
    assert!(noop.started.is_empty());
    eprintln!(
        "crash suite: {KILLS} runs, {kills} killed, {reported} jobs reported done by them, \
         {} run by the last run, {:?}",
        last.finished,
        started.elapsed()
    );
}
