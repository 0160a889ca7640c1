//! `repx run --scheduler slurm` against a real SLURM: the one-node cluster that
//! `scripts/slurm-setup` starts on this machine (CI runs it before the tests). Nothing here
//! imitates `sbatch`; a test finds SLURM down and says so rather than skipping.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{FAILING, Output, copy_example, job_dirs, lab_dir, repx, repx_command, repx_with_env};

const FAILED: i32 = 1;
const INVALID: i32 = 2;
const INTERRUPTED: i32 = 130;
/// How long a test waits for SLURM to get somewhere: generous, for a busy machine where
/// other tests hold the node's CPUs for a while.
const PATIENCE: Duration = Duration::from_secs(180);

/// Fails the test unless SLURM answers and its node can take jobs.
#[track_caller]
fn require_slurm() {
    let sinfo = Command::new("sinfo")
        .args(["--noheader", "--format=%T"])
        .output();
    let states = match sinfo {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => panic!(
            "SLURM is not up (sinfo: {}): run scripts/slurm-setup first",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("SLURM is not installed (sinfo: {e}): run scripts/slurm-setup first"),
    };
    let usable = states.lines().any(|s| {
        ["idle", "mixed", "allocated", "completing"]
            .iter()
            .any(|ok| s.trim().starts_with(ok))
    });
    assert!(
        usable,
        "SLURM has no node that takes jobs (sinfo: {states:?}): run scripts/slurm-setup"
    );
}

/// A user config file that does not exist: the user's own SLURM settings stay out.
fn no_user_config(dir: &Path) -> String {
    dir.join("no-user-config.toml").display().to_string()
}

fn slurm_run(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--scheduler", "slurm"];
    args.extend(extra);
    repx_with_env(dir, &args, &[("REPX_CONFIG", &no_user_config(dir))])
}

/// Every file under `root`, by relative path, with its bytes.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_path_buf();
                files.insert(relative, fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// `(id, hash)` of every record in the store, sorted.
fn recorded(lab: &Path) -> Vec<(String, String)> {
    let text = fs::read_to_string(lab.join(".repx/records.jsonl")).unwrap_or_default();
    let mut records: Vec<(String, String)> = text
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                record["id"].as_str().unwrap().to_string(),
                record["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    records.sort();
    records.dedup();
    records
}

/// The records of the store whose lines are whole (a worker may be appending one).
fn records(lab: &Path) -> Vec<Value> {
    fs::read_to_string(lab.join(".repx/records.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The one SLURM run directory of the store, `.repx/slurm/<run>`, newest when several.
fn run_dir(lab: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = fs::read_dir(lab.join(".repx/slurm"))
        .expect("the store has a slurm/ directory")
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    dirs.pop().expect("a SLURM run directory")
}

/// The lines of the run's `submissions.jsonl`.
fn submissions(dir: &Path) -> Vec<Value> {
    fs::read_to_string(dir.join("submissions.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The batch file of one array task (or single allocation) of submission `number`.
fn batch(dir: &Path, number: usize, task: usize) -> Value {
    let path = dir.join(format!("batch-{number}-{task}.json"));
    serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap()
}

/// The stages of the jobs the run's workers have started, from their events files.
fn started_stages(dir: &Path) -> Vec<String> {
    let mut stages = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "events") {
            continue;
        }
        let Ok(text) = fs::read_to_string(path.with_extension("json")) else {
            continue;
        };
        let batch: Value = serde_json::from_str(&text).unwrap();
        let stage_of = |job: &Value| {
            batch["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["index"] == *job)
                .map(|j| j["stage"].as_str().unwrap().to_string())
        };
        for line in fs::read_to_string(&path).unwrap_or_default().lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if event["event"] == "started" {
                stages.extend(stage_of(&event["job"]));
            }
        }
    }
    stages
}

/// Polls `done` until it holds; fails the test after [`PATIENCE`].
#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < PATIENCE,
            "waited {PATIENCE:?} for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The state SLURM leaves the job in, once it has ended: the run may exit while SLURM is
/// still completing an allocation.
#[track_caller]
fn final_state(id: &str) -> String {
    let mut state = String::new();
    wait_until("the allocation to end", || {
        state = scontrol(id).remove("JobState").unwrap_or_default();
        !["PENDING", "RUNNING", "COMPLETING"].contains(&state.as_str())
    });
    state
}

/// Releases jobs submitted with `--hold`.
fn release(ids: &[&str]) {
    let status = Command::new("scontrol")
        .arg("release")
        .args(ids)
        .status()
        .unwrap();
    assert!(status.success(), "scontrol release {ids:?}");
}

/// The CPUs of the largest node of the default partition.
fn node_cpus() -> u32 {
    let out = Command::new("sinfo")
        .args(["--noheader", "--Node", "--format=%P %c"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("* ").and_then(|(_, c)| c.trim().parse().ok()))
        .max()
        .unwrap_or(0)
}

/// `scontrol show job ID` as `key=value` pairs.
fn scontrol(id: &str) -> BTreeMap<String, String> {
    let out = Command::new("scontrol")
        .args(["show", "job", id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Jobs of a run SLURM still has queued or running (`squeue`'s default states).
fn active(name: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args([
            "--noheader",
            "--array",
            &format!("--name={name}"),
            "--format=%i %T",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `repx run --scheduler slurm` in the background. Its output goes to files, which
/// cannot fill up and stall it as an unread pipe would. If the test fails first, the run
/// is killed and what it submitted cancelled.
struct Background {
    child: Child,
    lab: PathBuf,
    /// The run's SLURM job name, once it submitted.
    name: String,
}

fn start_slurm_run(lab: &Path, extra: &[&str]) -> Background {
    let mut args = vec!["run", "--scheduler", "slurm"];
    args.extend(extra);
    let child = repx_command(lab, &args)
        .env("REPX_CONFIG", no_user_config(lab))
        .stdout(File::create(lab.join("run.stdout")).unwrap())
        .stderr(File::create(lab.join("run.stderr")).unwrap())
        .spawn()
        .expect("starting repx");
    Background {
        child,
        lab: lab.to_path_buf(),
        name: String::new(),
    }
}

impl Background {
    /// The run's `submissions.jsonl` lines so far.
    fn submitted(&mut self) -> Vec<Value> {
        if !self.lab.join(".repx/slurm").is_dir() {
            return Vec::new();
        }
        let subs = submissions(&run_dir(&self.lab));
        if let Some(first) = subs.first() {
            self.name = first["name"].as_str().unwrap().to_string();
        }
        subs
    }

    /// The number of allocations submitted so far.
    fn allocations(&mut self) -> u64 {
        self.submitted()
            .iter()
            .map(|s| s["tasks"].as_u64().unwrap())
            .sum()
    }

    /// Ctrl-C, as a person would.
    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the run to exit; its code and output.
    #[track_caller]
    fn finish(&mut self) -> Output {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "repx run still ran after {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Output {
            code: status.code().unwrap_or(-1),
            stdout: fs::read_to_string(self.lab.join("run.stdout")).unwrap(),
            stderr: fs::read_to_string(self.lab.join("run.stderr")).unwrap(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.name.is_empty() {
            let _ = Command::new("scancel")
                .arg(format!("--name={}", self.name))
                .status();
        }
    }
}

#[test]
fn param_sweep_on_slurm_commits_the_same_files_as_a_local_run() {
    require_slurm();
    let local = copy_example("param-sweep");
    repx(local.path(), &["run"]).expect_code(0);

    // Two jobs per allocation: the six points go out as one array of three tasks, and the
    // gather is chained after them with `afterok`. Held until the test has seen both
    // submissions, so the points cannot have finished before the gather is submitted.
    let cluster = copy_example("param-sweep");
    let mut run = start_slurm_run(
        cluster.path(),
        &["--batch-size", "2", "--sbatch-flag=--hold"],
    );
    wait_until("both submissions", || run.submitted().len() == 2);
    let subs = run.submitted();
    let points = subs[0]["slurm_id"].as_str().unwrap();
    let gather = subs[1]["slurm_id"].as_str().unwrap();
    let dependency = &scontrol(gather)["Dependency"];
    let chained: Vec<String> = (0..3)
        .map(|task| format!("afterok:{points}_{task}(unfulfilled)"))
        .collect();
    assert_eq!(dependency, &chained.join(","), "the gather's dependency");
    release(&[points, gather]);
    let out = run.finish();
    out.expect_code(0).expect_stderr(&[
        "slurm: 4 allocation(s) from 2 submission(s)",
        "7 jobs: 7 ran, 0 cached, 0 failed, 0 skipped",
    ]);
    assert_eq!(out.ran().len(), 7, "{}", out.stderr);
    assert_eq!(
        (subs[0]["tasks"].as_u64(), subs[0]["jobs"].as_u64()),
        (Some(3), Some(6))
    );
    assert_eq!(
        (subs[1]["tasks"].as_u64(), subs[1]["jobs"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(submissions(&run_dir(cluster.path())).len(), 2);

    // The same job ids, and byte for byte the same committed files: outputs, manifests, logs.
    let names = |lab: &Path| -> Vec<_> {
        job_dirs(lab)
            .iter()
            .map(|d| d.file_name().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(local.path()), names(cluster.path()));
    assert_eq!(job_dirs(local.path()).len(), 7);
    for (here, there) in job_dirs(local.path()).iter().zip(job_dirs(cluster.path())) {
        let (a, b) = (files(here), files(&there));
        assert!(a.keys().any(|p| p.starts_with("out")), "{here:?}");
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{here:?}"
        );
        for (path, bytes) in &a {
            assert!(bytes == &b[path], "{} differs", here.join(path).display());
        }
    }
    assert_eq!(recorded(local.path()), recorded(cluster.path()));

    // Either scheduler finds the other's results: nothing runs again.
    let again = repx(cluster.path(), &["run"]);
    again.expect_code(0);
    assert_eq!(
        again.summary(),
        "7 jobs: 0 ran, 7 cached, 0 failed, 0 skipped"
    );
    let again = slurm_run(local.path(), &[]);
    again.expect_code(0);
    assert_eq!(
        again.summary(),
        "7 jobs: 0 ran, 7 cached, 0 failed, 0 skipped"
    );
    assert!(
        !again.stderr.contains("slurm:"),
        "submitted: {}",
        again.stderr
    );
}

#[test]
fn a_run_mixes_jobs_done_locally_with_jobs_run_on_slurm() {
    require_slurm();
    let lab = copy_example("param-sweep");
    repx(lab.path(), &["run"]).expect_code(0);
    // One more slope: two new points and a new gather; the six old points are done.
    let toml = lab.path().join("repx.toml");
    let text = fs::read_to_string(&toml).unwrap();
    fs::write(
        &toml,
        text.replace("slope = [1, 2, 5]", "slope = [1, 2, 5, 7]"),
    )
    .unwrap();
    let out = slurm_run(lab.path(), &[]);
    out.expect_code(0)
        .expect_stderr(&["slurm: 1 allocation(s) from 1 submission(s)"]);
    assert_eq!(
        out.summary(),
        "9 jobs: 3 ran, 6 cached, 0 failed, 0 skipped"
    );
    assert_eq!(out.ran(), ["combine", "point", "point"], "{}", out.stderr);
    let batch = batch(&run_dir(lab.path()), 0, 0);
    assert_eq!(batch["jobs"].as_array().unwrap().len(), 3, "{batch}");
    // The two points at once, then the gather.
    assert_eq!(batch["parallel"], 2, "{batch}");
    // The gather reads the six old points from the store.
    assert_eq!(batch["upstream"].as_array().unwrap().len(), 6, "{batch}");
    // The new gather, committed by the worker, holds all eight points.
    let gather = batch["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["stage"] == "combine")
        .expect("the gather is in the batch");
    let combined = fs::read_to_string(
        lab.path()
            .join(".repx/jobs")
            .join(gather["id"].as_str().unwrap())
            .join("out/combined.csv"),
    )
    .unwrap();
    for slope in ["1", "2", "5", "7"] {
        assert!(
            combined.lines().any(|l| l.split(',').any(|f| f == slope)),
            "no slope {slope} in\n{combined}"
        );
    }
    repx(lab.path(), &["verify"]).expect_code(0);
}

/// The `SLURM job ID, log: PATH` line of a failure.
#[track_caller]
fn slurm_place(stderr: &str) -> (String, PathBuf) {
    let line = stderr
        .lines()
        .find_map(|l| l.split_once("SLURM job ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no SLURM job named\n{stderr}"));
    let (id, log) = line.split_once(", log: ").expect("a log path");
    (id.to_string(), PathBuf::from(log.trim()))
}

#[test]
fn a_failing_job_on_slurm_skips_its_dependents_and_names_its_slurm_job_and_log() {
    require_slurm();
    let lab = lab_dir(FAILING, &["test-fail"]);
    let out = slurm_run(lab.path(), &[]);
    out.expect_code(FAILED).expect_stderr(&[
        "FAILED a-bad [code=3]",
        "exit status",
        "line 30",
        "skip b-after: upstream `a-bad` failed",
    ]);
    let id = common::failed_id(&out.stderr, "a-bad");
    let (slurm_id, log) = slurm_place(&out.stderr);
    assert!(
        slurm_id.bytes().all(|b| b.is_ascii_digit() || b == b'_'),
        "{slurm_id}"
    );
    let log_text =
        fs::read_to_string(&log).unwrap_or_else(|e| panic!("the named log {}: {e}", log.display()));
    assert!(log_text.contains("FAILED a-bad"), "{log_text}");
    assert_eq!(final_state(&slurm_id), "FAILED");
    // The job's own logs are where a local run leaves them.
    let failed = lab.path().join(".repx/failed");
    let dir = fs::read_dir(&failed)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&id))
        .expect("failed/<id>");
    assert!(
        fs::read_to_string(dir.join("stderr"))
            .unwrap()
            .contains("line 1\n")
    );
    assert!(
        !out.ran().contains(&"b-after".to_string()),
        "{}",
        out.stderr
    );

    // One job per allocation, in a fresh store: `b-after` is chained after `a-bad`'s
    // allocation, which fails; SLURM cancels it, and the coordinator skips `b-after`.
    // `c-indep` runs. All are held until the test has seen `b-after` submitted, so that
    // `a-bad` cannot have failed first: exactly three sbatch calls, one per job.
    let lab = lab_dir(FAILING, &["test-fail"]);
    let mut run = start_slurm_run(
        lab.path(),
        &[
            "--batch-size",
            "1",
            "--no-job-arrays",
            "--continue-on-failure",
            "--sbatch-flag=--hold",
        ],
    );
    wait_until("three submissions", || run.submitted().len() == 3);
    let dir = run_dir(lab.path());
    let subs = run.submitted();
    let id_of = |stage: &str| {
        let number = (0..subs.len())
            .find(|n| batch(&dir, *n, 0)["jobs"][0]["stage"] == stage)
            .unwrap_or_else(|| panic!("no batch of {stage}"));
        subs[number]["slurm_id"].as_str().unwrap().to_string()
    };
    let (bad, after, indep) = (id_of("a-bad"), id_of("b-after"), id_of("c-indep"));
    assert_eq!(
        scontrol(&after)["Dependency"],
        format!("afterok:{bad}(unfulfilled)")
    );
    release(&[&bad, &after, &indep]);
    let out = run.finish();
    out.expect_code(FAILED)
        .expect_stderr(&["FAILED a-bad", "skip b-after: upstream `a-bad` failed"]);
    assert_eq!(
        out.summary(),
        "3 jobs: 1 ran, 0 cached, 1 failed, 1 skipped"
    );
    assert_eq!(out.ran(), ["c-indep"]);
    let subs = submissions(&dir);
    assert_eq!(subs.len(), 3, "one sbatch per job, none again: {subs:?}");
    assert!(subs.iter().all(|s| s["jobs"] == 1), "{subs:?}");
    assert_eq!(final_state(&after), "CANCELLED");
    repx(lab.path(), &["verify"]).expect_code(0);
}

/// Four quick jobs, each read by a job that spins until it is cancelled (bench-kernel
/// ignores `n`; it is there to make one spinning job per quick one).
const QUICK_THEN_SPINNING: &str = r#"
[stages.quick]
plugin = "plugins/generate.wasm"
params = { n = 3 }

[stages.spin]
plugin = "plugins/bench-kernel.wasm"
inputs = { data = "quick" }
params = { kernel = "nbody", steps = 4000000000, n = 0 }
outputs = ["result.json"]

[pipelines.p]
stages = ["quick", "spin"]

[runs.r]
pipelines = ["p"]
params = { n = [3, 4, 5, 6] }
"#;

#[test]
fn interrupting_a_slurm_run_cancels_its_jobs_and_commits_nothing_half_written() {
    require_slurm();
    let lab = lab_dir(QUICK_THEN_SPINNING, &["bench-kernel"]);
    // Each allocation runs a quick job, then the spinning job that reads it, on one CPU:
    // some allocations are cut off mid-batch, others before they start.
    let mut run = start_slurm_run(lab.path(), &["--batch-size", "2", "--batch-cpus", "1"]);
    wait_until("a quick job committed and a spinning job started", || {
        let quick_done = records(lab.path()).iter().any(|r| r["stage"] == "quick");
        let spinning = lab.path().join(".repx/slurm").is_dir()
            && started_stages(&run_dir(lab.path())).contains(&"spin".to_string());
        quick_done && spinning
    });
    let subs = run.submitted();
    assert_eq!(subs[0]["tasks"], 4, "{subs:?}");
    assert_eq!(
        scontrol(&format!("{}_0", subs[0]["slurm_id"].as_str().unwrap()))["NumCPUs"],
        "1"
    );

    run.interrupt();
    let out = run.finish();
    // The spinning jobs it stopped count as failed, as in a local run; those of
    // allocations that never started as not run.
    out.expect_code(INTERRUPTED).expect_stderr(&[
        "(interrupted)",
        "interrupted: the run was cancelled",
        " not run",
    ]);

    // Nothing of the run is left queued or running.
    assert_eq!(active(&run.name), Vec::<String>::new());
    // Whole record lines only, each of a quick job committed before the interrupt; no
    // spinning job is recorded or in jobs/.
    let text = fs::read_to_string(lab.path().join(".repx/records.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "a record line cut short:\n{text}");
    let committed: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a whole record"))
        .collect();
    assert!(!committed.is_empty());
    assert!(
        committed.iter().all(|r| r["stage"] == "quick"),
        "{committed:?}"
    );
    let mut ids: Vec<&str> = committed
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    let dirs: Vec<String> = job_dirs(lab.path())
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, ids, "jobs/ holds exactly the recorded jobs");
    // Those are intact: every output on disk matches its record.
    let verify = repx(lab.path(), &["verify"]);
    verify.expect_code(0);
    assert!(verify.stdout.contains("0 damaged") || verify.stderr.contains("0 damaged"));
    let leftovers: Vec<_> = fs::read_dir(lab.path().join(".repx/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().starts_with("inputs-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left in tmp/: {leftovers:?}");
}

/// Two quick jobs, then three that spin until they are cancelled.
const QUICK_FIRST: &str = r#"
[stages.kernel]
plugin = "plugins/bench-kernel.wasm"
params = { kernel = "nbody", steps = 1000 }
outputs = ["result.json"]

[pipelines.p]
stages = ["kernel"]

[runs.r]
pipelines = ["p"]
params = { steps = [1000, 1001, 4000000000, 4000000001, 4000000002] }
"#;

#[test]
fn max_submissions_caps_the_allocations_in_flight_not_in_all() {
    require_slurm();
    let lab = lab_dir(QUICK_FIRST, &["bench-kernel"]);
    let mut run = start_slurm_run(lab.path(), &["--batch-size", "1", "--max-submissions", "2"]);
    // Five batches are ready; two go out.
    wait_until("the first submission", || run.allocations() > 0);
    let subs = run.submitted();
    assert_eq!(subs[0]["tasks"], 2, "{subs:?}");
    let dir = run_dir(lab.path());
    // As they finish, two spinning jobs take their places; the third waits for a place
    // while those spin.
    wait_until("two quick jobs committed and two more allocations", || {
        records(lab.path()).len() == 2 && run.allocations() == 4
    });
    wait_until("a spinning job started", || started_stages(&dir).len() >= 3);
    assert_eq!(run.allocations(), 4, "{:?}", run.submitted());
    // The first two were the quick jobs, in the lab's order.
    let mut first: Vec<Value> = (0..2)
        .map(|t| batch(&dir, 0, t)["jobs"][0]["id"].clone())
        .collect();
    let mut quick: Vec<Value> = records(lab.path())
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    first.sort_by_key(Value::to_string);
    quick.sort_by_key(Value::to_string);
    assert_eq!(first, quick);

    run.interrupt();
    let out = run.finish();
    // The third spinning job was never submitted: no batch holds it.
    out.expect_code(INTERRUPTED);
    assert!(
        out.summary().starts_with("5 jobs: 2 ran, 0 cached, "),
        "{}",
        out.stderr
    );
    let batches = fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(batches, 4);
    assert_eq!(active(&run.name), Vec::<String>::new());
}

#[test]
fn stage_resources_and_slurm_settings_become_sbatch_options() {
    require_slurm();
    let toml = r#"
[stages.generate]
plugin = "plugins/generate.wasm"
params = { n = 3 }
resources = { cpus = 2, mem = "64M", time = "10m" }

[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]

[slurm]
partition = "debug"
sbatch_flags = ["--comment=from-lab"]
"#;
    let lab = lab_dir(toml, &[]);
    // The user's file is overridden by the lab, the lab by the command line.
    let config = lab.path().join("config.toml");
    fs::write(
        &config,
        "[slurm]\npartition = \"no-such-partition\"\nsbatch_flags = [\"--comment=from-user\"]\n",
    )
    .unwrap();
    let out = repx_with_env(
        lab.path(),
        &[
            "run",
            "--scheduler",
            "slurm",
            "--sbatch-flag=--comment=from-cli",
        ],
        &[("REPX_CONFIG", config.to_str().unwrap())],
    );
    out.expect_code(0);
    let subs = submissions(&run_dir(lab.path()));
    let job = scontrol(subs[0]["slurm_id"].as_str().unwrap());
    assert_eq!(job["Partition"], "debug", "{job:?}");
    assert_eq!(job["CPUs/Task"], "2");
    assert_eq!(job["MinMemoryNode"], "64M");
    // The batch's summed time, plus a minute for the worker to start.
    assert_eq!(job["TimeLimit"], "00:11:00");
    assert_eq!(job["Comment"], "from-cli");
    assert_eq!(
        final_state(subs[0]["slurm_id"].as_str().unwrap()),
        "COMPLETED"
    );
}

/// Two CPU-bound jobs of about a second each, with hints for one job.
const PAIR: &str = r#"
[stages.kernel]
plugin = "plugins/bench-kernel.wasm"
params = { kernel = "nbody", steps = 20000000 }
outputs = ["result.json"]
resources = { mem = "64M", time = "10m" }

[pipelines.p]
stages = ["kernel"]

[runs.r]
pipelines = ["p"]
params = { steps = [20000000, 20000001] }
"#;

#[test]
fn a_batch_runs_its_jobs_at_once_on_the_cpus_its_allocation_asks_for() {
    require_slurm();
    assert!(
        node_cpus() >= 2,
        "this test needs a node of two CPUs or more"
    );
    let lab = lab_dir(PAIR, &["bench-kernel"]);
    // By default a batch asks for up to 4 CPUs, cut to what the node has: both jobs fit.
    let out = slurm_run(lab.path(), &[]);
    out.expect_code(0)
        .expect_stderr(&["slurm: 1 allocation(s) from 1 submission(s)"]);
    let dir = run_dir(lab.path());
    assert_eq!(batch(&dir, 0, 0)["parallel"], 2);
    let job = scontrol(submissions(&dir)[0]["slurm_id"].as_str().unwrap());
    assert_eq!(job["NumCPUs"], "2", "{job:?}");
    // Memory for both jobs; time for one, as both run at once, plus a minute to start.
    assert_eq!(job["MinMemoryNode"], "128M");
    assert_eq!(job["TimeLimit"], "00:11:00");
    assert_eq!(
        final_state(submissions(&dir)[0]["slurm_id"].as_str().unwrap()),
        "COMPLETED"
    );
    // The worker started both jobs before either finished.
    let events: Vec<Value> = fs::read_to_string(dir.join("batch-0-0.events"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first_done = events
        .iter()
        .position(|e| e["event"] == "finished")
        .expect("a job finished");
    let started = events[..first_done]
        .iter()
        .filter(|e| e["event"] == "started")
        .count();
    assert_eq!(started, 2, "{events:?}");
    // The same ids and output hashes as one after the other, here.
    let local = lab_dir(PAIR, &["bench-kernel"]);
    repx(local.path(), &["run", "-j", "1"]).expect_code(0);
    assert_eq!(recorded(local.path()), recorded(lab.path()));
    assert_eq!(recorded(lab.path()).len(), 2);
}

/// Two quick jobs: one allocation of two CPUs by default.
const TWO_QUICK: &str = r#"
[stages.generate]
plugin = "plugins/generate.wasm"
params = { n = 3 }

[pipelines.p]
stages = ["generate"]

[runs.r]
pipelines = ["p"]
params = { n = [3, 4] }
"#;

#[test]
fn the_users_config_file_is_found_in_xdg_config_home_else_in_home() {
    require_slurm();
    assert!(
        node_cpus() >= 2,
        "this test needs a node of two CPUs or more"
    );
    // Only the user's file sets anything: no lab `[slurm]` table, no flags.
    let run = |lab: &Path, home: &Path, xdg: Option<&Path>| {
        let mut command = repx_command(lab, &["run", "--scheduler", "slurm"]);
        command
            .env_remove("REPX_CONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .env("HOME", home);
        if let Some(xdg) = xdg {
            command.env("XDG_CONFIG_HOME", xdg);
        }
        let out = command.output().expect("running repx");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        scontrol(submissions(&run_dir(lab))[0]["slurm_id"].as_str().unwrap())
    };
    let write = |path: &Path, text: &str| {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };

    let lab = lab_dir(TWO_QUICK, &[]);
    let home = lab.path().join("home");
    write(
        &home.join(".config/repx/config.toml"),
        "[slurm]\nbatch_cpus = 1\nsbatch_flags = [\"--comment=from-home\"]\n",
    );
    let job = run(lab.path(), &home, None);
    assert_eq!(job["Comment"], "from-home", "{job:?}");
    assert_eq!(job["NumCPUs"], "1");

    // XDG_CONFIG_HOME, when set, is where the file is; the one under HOME is not read.
    let lab = lab_dir(TWO_QUICK, &[]);
    let xdg = lab.path().join("xdg");
    write(
        &xdg.join("repx/config.toml"),
        "[slurm]\nsbatch_flags = [\"--comment=from-xdg\"]\n",
    );
    let job = run(lab.path(), &home, Some(&xdg));
    assert_eq!(job["Comment"], "from-xdg", "{job:?}");
    assert_eq!(job["NumCPUs"], "2");
}

#[test]
fn slurm_settings_are_checked_before_anything_is_submitted() {
    let lab = lab_dir(
        "[stages.g]\nplugin = \"plugins/generate.wasm\"\nresources = { cpus = 0, memory = \"1G\" }\n\
         [pipelines.p]\nstages = [\"g\"]\n[runs.r]\npipelines = [\"p\"]\n[slurm]\nbatch_size = 0\n",
        &[],
    );
    let out = repx(lab.path(), &["run", "--scheduler", "slurm"]);
    out.expect_code(INVALID).expect_stderr(&[
        "stages.g.resources.cpus",
        "stages.g.resources.memory",
        "did you mean `mem`",
        "`batch_size` must be at least 1",
    ]);
    assert!(!lab.path().join(".repx/slurm").exists());

    let lab = copy_example("param-sweep");
    repx(lab.path(), &["run", "--partition", "debug"])
        .expect_code(INVALID)
        .expect_stderr(&["--partition is for `--scheduler slurm`"]);
    repx(
        lab.path(),
        &["run", "--scheduler", "slurm", "--batch-size", "0"],
    )
    .expect_code(INVALID);
}

#[test]
fn impure_jobs_on_slurm_run_one_at_a_time_and_the_worker_keeps_its_cache_out_of_the_project() {
    require_slurm();
    let lab = lab_dir(
        &TWO_QUICK.replace(
            "params = { n = 3 }",
            "params = { n = 3 }\nmode = \"impure\"",
        ),
        &["generate"],
    );
    // A cache in the project directory: an impure job could plant machine code there.
    let cache = lab.path().join(".cache/repx");
    let out = repx_with_env(
        lab.path(),
        &["run", "--scheduler", "slurm"],
        &[
            ("REPX_CONFIG", &no_user_config(lab.path())),
            ("REPX_CACHE_DIR", cache.to_str().unwrap()),
        ],
    );
    out.expect_code(0)
        .expect_stderr(&["slurm: 1 allocation(s) from 1 submission(s)"]);
    assert_eq!(out.ran(), ["generate", "generate"], "{}", out.stderr);
    let dir = run_dir(lab.path());
    // The worker runs impure jobs one after another: one slot, not two.
    assert_eq!(batch(&dir, 0, 0)["parallel"], 1);
    let job = scontrol(submissions(&dir)[0]["slurm_id"].as_str().unwrap());
    assert_eq!(job["NumCPUs"], "1", "{job:?}");
    // Neither the coordinator nor the worker wrote a compiled plugin into the project.
    let compiled: Vec<PathBuf> = files(lab.path())
        .into_keys()
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert!(compiled.is_empty(), "{compiled:?}");
    let logs: String = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("slurm-")
        })
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        logs.contains(&format!(
            "warning: the plugin cache {} is not used",
            cache.display()
        )),
        "the worker's log:\n{logs}"
    );
}

/// What a worker leaves in the store beside the coordinator, without SLURM: its own
/// staging names, commits the lock holder reads once it refreshes, and a `tmp/` the next
/// lock holder leaves alone while a worker lives.
#[test]
fn workers_commit_beside_the_lock_holder_who_reads_their_records() {
    use repx::store::{Logs, Record, Store, StoreError};
    use std::io::Write;

    let record = |id: &str| Record {
        id: id.into(),
        stage: "s".into(),
        mode: repx::lab::Mode::Pure,
        params: Default::default(),
        hash: String::new(),
        fingerprint: None,
        finished_ms: 0,
        duration_ms: 0,
        nix: None,
        out_mtime_ns: None,
        stamps: Vec::new(),
        sealed_ns: None,
        inputs: None,
        plugin: None,
        tools: None,
        attempt: None,
        attempts: Vec::new(),
        usage: None,
    };
    let dir = common::TempDir::new();
    let root = dir.path().join("store");
    let owner = Store::open(&root).unwrap();
    assert!(matches!(Store::open(&root), Err(StoreError::Locked { .. })));
    let worker = Store::open_worker(&root).unwrap();

    let mine = owner.stage("j1", 0).unwrap();
    let theirs = worker.stage("j1", 0).unwrap();
    assert_ne!(mine.dir, theirs.dir);
    // A later worker with the same host and pid (pids are reused across a thousand
    // allocations) stages beside the scratch and staging an earlier one left.
    let later = Store::open_worker(&root).unwrap();
    let again = later.stage("j1", 0).unwrap();
    assert_ne!(again.dir, theirs.dir);
    later.discard(again, &Logs::default()).unwrap();
    drop(later);
    owner.discard(mine, &Logs::default()).unwrap();
    fs::write(theirs.out.join("x"), "1").unwrap();
    worker
        .commit(theirs, &[], u64::MAX, &Logs::default(), record("j1"))
        .unwrap();
    assert!(owner.done("j1").is_none(), "not read yet");
    assert_eq!(owner.refresh().unwrap().len(), 1);
    assert!(owner.done("j1").is_some());
    assert!(owner.refresh().unwrap().is_empty());

    let staged = worker.stage("j2", 0).unwrap();
    drop(owner);
    let next = Store::open(&root).unwrap();
    assert!(staged.dir.is_dir(), "a live worker's staging was cleared");
    assert!(next.done("j1").is_some());
    drop(next);
    drop(worker);
    let last = Store::open(&root).unwrap();
    assert!(!staged.dir.exists(), "a dead worker's staging was kept");

    // A record line still being written is read once it is whole.
    let path = root.join("records.jsonl");
    let mut line = serde_json::to_vec(&record("j3")).unwrap();
    let rest = line.split_off(10);
    let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&line).unwrap();
    assert!(last.refresh().unwrap().is_empty());
    file.write_all(&rest).unwrap();
    file.write_all(b"\n").unwrap();
    assert_eq!(last.refresh().unwrap()[0].id, "j3");
}

#[test]
fn a_retry_with_twice_the_memory_behaves_the_same_on_slurm() {
    require_slurm();
    let lab = lab_dir(
        r#"
[stages.big]
plugin = "plugins/bench-kernel.wasm"
params = { mib = 40 }
limits = { memory = "32M" }
outputs = ["result.json"]
[pipelines.p]
stages = ["big"]
[runs.r]
pipelines = ["p"]
"#,
        &["bench-kernel"],
    );
    // As locally (day_to_day::a_job_over_its_memory_limit_succeeds_on_a_retry_with_twice_the_memory):
    // attempt 1 fails on its memory limit, attempt 2 succeeds, and the record says so.
    let out = slurm_run(lab.path(), &["--retries", "1", "--json"]);
    out.expect_code(0);
    let finished: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "job_finished")
        .collect();
    assert_eq!(finished.len(), 1, "{}", out.stdout);
    assert_eq!(finished[0]["attempt"], 2, "{}", finished[0]);
    let records = records(lab.path());
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["attempt"], 2, "{records:?}");
    // The same attempts as a local run records: the first failed on its 32M, the second
    // had 64M.
    let attempts: Vec<(&Value, &Value, &Value)> = records[0]["attempts"]
        .as_array()
        .expect("every attempt in the record")
        .iter()
        .map(|a| (&a["failure"], &a["limit"], &a["memory"]))
        .collect();
    assert_eq!(
        attempts,
        [
            (
                &Value::from("limit"),
                &Value::from("memory"),
                &Value::from(32 << 20)
            ),
            (&Value::Null, &Value::Null, &Value::from(64 << 20)),
        ],
        "{records:?}"
    );
    // The allocation's log shows the retry, as a local run's lines do.
    let log = fs::read_dir(run_dir(lab.path()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("slurm-")
        })
        .map(|p| fs::read_to_string(p).unwrap())
        .collect::<String>();
    assert!(log.contains("retry big [mib=40]"), "{log}");
    assert!(log.contains("attempt 1 failed (limit)"), "{log}");
}

/// `examples/scatter` with a fan-out chained after the first: each item lists its parts,
/// one job each, and the gather reads the parts.
fn chained_scatter() -> common::TempDir {
    let lab = copy_example("scatter");
    fs::write(
        lab.path().join("data/samples.txt"),
        "alpha 1\nbeta 2\ngamma 3\n",
    )
    .unwrap();
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    let toml = toml
        .replace(
            "outputs = [\"result.json\"]",
            "outputs = [\"result.json\", \"parts.json\"]\n\n\
             [stages.part]\nplugin = \"plugins/scatter-work.wasm\"\n\
             foreach = \"work:parts.json\"\noutputs = [\"result.json\"]",
        )
        .replace("results = \"work[*]\"", "results = \"part[*]\"")
        .replace(
            "stages = [\"split\", \"work\", \"summary\"]",
            "stages = [\"split\", \"work\", \"part\", \"summary\"]",
        );
    fs::write(lab.path().join("repx.toml"), toml).unwrap();
    lab
}

#[test]
fn a_chained_fan_out_on_slurm_commits_the_same_jobs_and_records_as_a_local_run() {
    require_slurm();
    let local = chained_scatter();
    let here = repx(local.path(), &["run"]);
    here.expect_code(0);
    let cluster = chained_scatter();
    // Items go out once the job that lists them is done: a round of submissions per list.
    let out = slurm_run(cluster.path(), &["--batch-size", "2"]);
    out.expect_code(0);
    assert_eq!(out.ran().len(), 11, "{}", out.stderr);
    assert_eq!(here.ran(), out.ran());
    let names = |lab: &Path| -> Vec<_> {
        job_dirs(lab)
            .iter()
            .map(|d| d.file_name().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(local.path()), names(cluster.path()));
    for (here, there) in job_dirs(local.path()).iter().zip(job_dirs(cluster.path())) {
        let (a, b) = (files(&here.join("out")), files(&there.join("out")));
        assert_eq!(a, b, "{here:?}");
    }
    assert_eq!(recorded(local.path()), recorded(cluster.path()));

    // One more sample: its item and its parts go to SLURM, the rest is cached, and the
    // worker grows its plan as the coordinator did, from lists already in the store.
    for lab in [&local, &cluster] {
        fs::write(
            lab.path().join("data/samples.txt"),
            "alpha 1\nbeta 2\ngamma 3\ndelta 2\n",
        )
        .unwrap();
    }
    let here = repx(local.path(), &["run"]);
    here.expect_code(0);
    let out = slurm_run(cluster.path(), &["--batch-size", "2"]);
    out.expect_code(0);
    assert_eq!(here.ran(), out.ran());
    assert_eq!(out.ran(), ["part", "part", "split", "summary", "work"]);
    assert_eq!(names(local.path()), names(cluster.path()));
}
