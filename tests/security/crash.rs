//! The crash suite: `repx run -j 8` of a sweep, killed with SIGKILL at 64 different moments
//! spread over its work, each run resuming from what the runs before it left.
//!
//! A lab's sweep starts with [`WORK`] jobs, run once uninterrupted and timed, and grows
//! before every later run so that at least [`WORK`] of its jobs (more on a later try) are
//! not done: those are the run's work, and the moments are counted in them. A run is so
//! of a few hundred jobs (100 to about 1,400), those done before found cached. The moments:
//! - at spawn, before the lab or the store is opened; once it reported `run_started`; once
//!   it found the first, and half, of the jobs done before it cached;
//! - once its 1st and 8th job started (every worker busy), and 5 %, 10 %, …, 95 % of its work;
//! - once its 1st, 2nd and 3rd job finished, and 5 %, 10 %, …, 95 % of its work;
//! - once 1, 2, 4, 6, 12, 24 or 48 outputs were sealed and not yet reported committed
//!   (jobs started and not finished, beyond the 8 the workers may be running). The
//!   committer commits everything sealed since its last round as one batch, and flushes a
//!   batch of 6 jobs or more (over 32 files and directories) with one `syncfs`: from 12 on,
//!   the batch it commits or the next one is that large (but in the instant between a
//!   batch's commit and its report);
//! - 5 %, 15 %, …, 95 % of the lab's first run's duration after spawn.
//!
//! A kill interrupted a run when the run did not exit on its own and work remained in the
//! store. One that came too late (the run had finished, or had committed everything) proves
//! nothing and fails nothing. Once every moment was tried, those that came too late are
//! tried again, with twice the work and then four times, for as long as fewer than
//! [`DISTINCT`] different moments interrupted a run: at least that many must have. Every
//! kill is listed with its moment and the jobs done before and after it.
//!
//! After every run: `repx verify` is clean; `records.jsonl` still begins with every record
//! it held, unchanged, and its new lines are whole records of new jobs (only a last line
//! torn by the kill may lack its newline, and is no record); every job any run reported
//! done (a `job_finished` or `job_cached` event of `--json`, those written just before the
//! kill included) is recorded and its output holds exactly what its parameters make; the
//! run started no job that was done before it, and, once it started one, had found every
//! such job cached. Once the store holds [`STORE_BOUND`] jobs (so that checking stays
//! quick), and at the end, an uninterrupted run completes exactly the jobs not yet done,
//! the run after it runs nothing, and a fresh lab takes over.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::common::{TempDir, copy_example, repx, repx_command};

/// `repx run -j`.
const WORKERS: usize = 8;
/// Jobs not done yet when a run starts: at least this many (more on a later try).
const WORK: usize = 100;
/// How often a moment is tried at most.
const TRIES: u32 = 3;
/// How many different moments must interrupt a run.
const DISTINCT: usize = 50;
/// Once the store holds this many jobs, the lab is finished and a fresh one takes over.
const STORE_BOUND: usize = 1000;
const INTERCEPT: i64 = 7;
const SIGKILL: i32 = 9;

/// A number of a run's jobs: so many, or a percentage of the jobs not done when it started.
#[derive(Debug, Clone, Copy)]
enum Count {
    Jobs(usize),
    Percent(usize),
}

impl Count {
    fn of(self, jobs: usize) -> usize {
        match self {
            Count::Jobs(n) => n,
            Count::Percent(p) => (jobs * p).div_ceil(100).max(1),
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Jobs(n) => write!(f, "#{n}"),
            Count::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// When a run is killed.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// As soon as it is spawned.
    Spawned,
    /// Once it reported that it started.
    Started,
    /// Once it found this percentage of the jobs done before it cached (0: the first).
    Cached(usize),
    /// Once this many of its jobs started.
    JobsStarted(Count),
    /// Once it reported this many of its jobs finished.
    Finished(Count),
    /// Once this many outputs were sealed and not yet reported committed.
    Sealed(usize),
    /// This percentage of the lab's first run's duration after it was spawned.
    After(usize),
}

impl fmt::Display for Moment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Moment::Spawned => write!(f, "spawn"),
            Moment::Started => write!(f, "run_started"),
            Moment::Cached(0) => write!(f, "cached first"),
            Moment::Cached(p) => write!(f, "cached {p}%"),
            Moment::JobsStarted(n) => write!(f, "started {n}"),
            Moment::Finished(n) => write!(f, "finished {n}"),
            Moment::Sealed(n) => write!(f, "sealed {n}"),
            Moment::After(p) => write!(f, "after {p}% of a run"),
        }
    }
}

/// The moments, interleaved so that each lab sees early, middle and late ones.
fn moments() -> Vec<Moment> {
    use Count::{Jobs, Percent};
    let mut all = vec![
        Moment::Spawned,
        Moment::Started,
        Moment::Cached(0),
        Moment::Cached(50),
        Moment::JobsStarted(Jobs(1)),
        Moment::JobsStarted(Jobs(WORKERS)),
    ];
    all.extend((1..=19).map(|i| Moment::JobsStarted(Percent(5 * i))));
    all.extend((1..=3).map(|n| Moment::Finished(Jobs(n))));
    all.extend((1..=19).map(|i| Moment::Finished(Percent(5 * i))));
    all.extend([1, 2, 4, 6, 12, 24, 48].map(Moment::Sealed));
    all.extend((0..10).map(|i| Moment::After(5 + 10 * i)));
    assert_eq!(all.len(), 64);
    // 27 is coprime to 64: this visits each moment once, in an order that mixes them.
    (0..all.len()).map(|i| all[i * 27 % all.len()]).collect()
}

/// What a run is killed against.
struct Plan {
    /// Its jobs: those not done when it starts.
    work: usize,
    /// The jobs done when it starts.
    resumed: usize,
    /// How long the lab's first run took, uninterrupted.
    duration: Duration,
}

/// Counts of a run's events so far.
#[derive(Default)]
struct Progress {
    run_started: bool,
    cached: usize,
    started: usize,
    finished: usize,
}

impl Progress {
    /// Outputs sealed and not yet reported committed, at least: jobs started and not
    /// finished, less those the workers may still be running.
    fn sealed(&self) -> usize {
        self.started
            .saturating_sub(self.finished)
            .saturating_sub(WORKERS)
    }
}

impl Moment {
    fn reached(self, seen: &Progress, plan: &Plan) -> bool {
        match self {
            Moment::Spawned => true,
            Moment::Started => seen.run_started,
            Moment::Cached(p) => {
                plan.resumed > 0 && seen.cached >= Count::Percent(p).of(plan.resumed)
            }
            Moment::JobsStarted(n) => seen.started >= n.of(plan.work),
            Moment::Finished(n) => seen.finished >= n.of(plan.work),
            Moment::Sealed(n) => seen.sealed() >= n,
            Moment::After(_) => false,
        }
    }
}

/// One line of `repx run --json`.
#[derive(Deserialize)]
struct Event {
    event: String,
    id: Option<String>,
    params: Option<Params>,
}

#[derive(Deserialize)]
struct Params {
    slope: i64,
}

impl Event {
    fn job(&self) -> (String, i64) {
        (
            self.id.clone().expect("a job event has an id"),
            self.params.as_ref().expect("a job event has params").slope,
        )
    }
}

/// What one run reported (up to its death, when killed) and how it ended.
#[derive(Default)]
struct Run {
    /// Job id → slope, of the jobs reported started, finished and cached.
    started: BTreeMap<String, i64>,
    finished: BTreeMap<String, i64>,
    cached: BTreeMap<String, i64>,
    /// It reported `run_finished`.
    completed: bool,
    /// It died of the test's SIGKILL.
    killed: bool,
    /// The most outputs it had sealed and not reported committed.
    most_sealed: usize,
    elapsed: Duration,
}

fn kill(child: &mut Child, sent: &mut bool) {
    if !*sent {
        let _ = child.kill();
        *sent = true;
    }
}

/// Runs `repx run --json` and kills it at `moment` (never, with `None`). Every event it
/// wrote before it died is read.
fn run(lab: &Path, moment: Option<Moment>, plan: &Plan) -> Run {
    let workers = WORKERS.to_string();
    let spawned = Instant::now();
    let mut child = repx_command(lab, &["run", "--json", "-j", &workers])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, events) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if lines.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let deadline = match moment {
        Some(Moment::After(p)) => Some(spawned + plan.duration * p as u32 / 100),
        _ => None,
    };
    let mut sent = false;
    if let Some(Moment::Spawned) = moment {
        kill(&mut child, &mut sent);
    }
    let mut seen = Progress::default();
    let mut ran = Run::default();
    loop {
        let line = match deadline {
            Some(deadline) if !sent => {
                match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(line) => line,
                    Err(RecvTimeoutError::Timeout) => {
                        kill(&mut child, &mut sent);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            _ => match events.recv() {
                Ok(line) => line,
                Err(_) => break,
            },
        };
        // The kill may tear the last line; every whole line is an event.
        let Some(line) = line.strip_suffix('\n') else {
            assert!(
                sent,
                "a run that was not killed ended in a torn line: {line:?}"
            );
            break;
        };
        let event: Event = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON event: {line:?}: {e}"));
        match event.event.as_str() {
            "run_started" => seen.run_started = true,
            "job_started" => {
                seen.started += 1;
                let (id, slope) = event.job();
                ran.started.insert(id, slope);
            }
            "job_finished" => {
                seen.finished += 1;
                let (id, slope) = event.job();
                ran.finished.insert(id, slope);
            }
            "job_cached" => {
                seen.cached += 1;
                let (id, slope) = event.job();
                ran.cached.insert(id, slope);
            }
            "job_failed" => panic!("a job failed: {line}"),
            "run_finished" => ran.completed = true,
            _ => {}
        }
        ran.most_sealed = ran.most_sealed.max(seen.sealed());
        if moment.is_some_and(|m| m.reached(&seen, plan)) {
            kill(&mut child, &mut sent);
        }
    }
    reader.join().unwrap();
    let status = child.wait().unwrap();
    ran.elapsed = spawned.elapsed();
    ran.killed = status.signal() == Some(SIGKILL);
    if !ran.killed {
        assert!(
            status.success() && ran.completed,
            "a run exited on its own without finishing: {status}"
        );
    }
    if moment.is_none() {
        assert!(
            !sent && ran.completed,
            "the uninterrupted run did not finish"
        );
    }
    ran
}

/// One line of `records.jsonl`.
#[derive(Deserialize)]
struct Record {
    id: String,
    params: Params,
}

/// What one kill did.
struct Kill {
    label: String,
    tries: u32,
    /// Jobs in the sweep.
    jobs: usize,
    /// Jobs done before it, and after.
    before: usize,
    after: usize,
    /// It stopped a run that did not exit on its own while work remained.
    interrupted: bool,
    /// The most outputs the run had sealed and not reported committed.
    most_sealed: usize,
    /// From spawn to death or exit.
    elapsed: Duration,
}

/// A copy of the param-sweep example, swept over slopes `0..slopes`, and what the test
/// knows of its store.
struct Lab {
    dir: TempDir,
    slopes: usize,
    /// How long its first run, uninterrupted, of [`WORK`] jobs on a fresh store took.
    duration: Duration,
    /// The whole lines of `records.jsonl` read so far.
    records_text: String,
    /// Job id → slope, of every job recorded.
    records: BTreeMap<String, i64>,
    /// Job id → slope, of every job a run reported done.
    reported: BTreeMap<String, i64>,
    /// The reported jobs whose files were read and found right.
    checked: BTreeSet<String>,
}

impl Lab {
    /// A fresh lab, after its first run: uninterrupted, of [`WORK`] jobs, timed.
    fn new() -> Lab {
        let mut lab = Lab {
            dir: copy_example("param-sweep"),
            slopes: 0,
            duration: Duration::ZERO,
            records_text: String::new(),
            records: BTreeMap::new(),
            reported: BTreeMap::new(),
            checked: BTreeSet::new(),
        };
        let plan = lab.grow(WORK);
        let first = run(lab.path(), None, &plan);
        lab.check(&first, "the first run");
        lab.duration = first.elapsed;
        lab
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Grows the sweep so that at least `work` of its jobs are not done; returns the plan.
    fn grow(&mut self, work: usize) -> Plan {
        let done = self.records.len();
        self.slopes = self.slopes.max(done + work);
        write_sweep(self.path(), self.slopes);
        Plan {
            work: self.slopes - done,
            resumed: done,
            duration: self.duration,
        }
    }

    /// Reads the records appended since the last look: the file must still begin with
    /// what it held, and every new whole line must record a new job. A last line without
    /// its newline (torn by a kill during the append) is no record yet.
    #[track_caller]
    fn read_records(&mut self, after: &str) {
        let text = fs::read_to_string(self.path().join(".repx/records.jsonl")).unwrap_or_default();
        assert!(
            text.starts_with(&self.records_text),
            "records.jsonl lost or changed records after {after}"
        );
        let whole = text.rfind('\n').map_or(0, |end| end + 1);
        for line in text[self.records_text.len()..whole].lines() {
            let r: Record = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("torn record after {after}: {line:?}: {e}"));
            let was = self.records.insert(r.id.clone(), r.params.slope);
            assert!(was.is_none(), "{after}: {} recorded again", r.id);
        }
        self.records_text = text[..whole].to_string();
    }

    /// Kills a run of at least `work` jobs at `moment`; checks what it left.
    fn kill(&mut self, moment: Moment, work: usize, tries: u32) -> Kill {
        let label = moment.to_string();
        let after = format!("the kill at {label} (try {})", tries + 1);
        let plan = self.grow(work);
        let ran = run(self.path(), Some(moment), &plan);
        self.check(&ran, &after);
        Kill {
            label,
            tries,
            jobs: self.slopes,
            before: plan.resumed,
            after: self.records.len(),
            interrupted: ran.killed && self.records.len() < self.slopes,
            most_sealed: ran.most_sealed,
            elapsed: ran.elapsed,
        }
    }

    /// Asserts that `ran` kept to what was done before it and that the store is intact.
    #[track_caller]
    fn check(&mut self, ran: &Run, after: &str) {
        for (id, slope) in &ran.started {
            assert!(
                !self.records.contains_key(id),
                "{after}: started {id} (slope {slope}), done before"
            );
        }
        // Cached jobs are all found before any job starts: once one started, everything
        // done before was found done again, and nothing else.
        if !ran.started.is_empty() {
            let missing: Vec<&String> = self
                .records
                .keys()
                .filter(|id| !ran.cached.contains_key(*id))
                .collect();
            assert!(missing.is_empty(), "{after}: not found cached: {missing:?}");
            assert_eq!(ran.cached.len(), self.records.len(), "{after}: cached");
        }
        self.reported.extend(ran.finished.clone());
        self.reported.extend(ran.cached.clone());
        self.assert_intact(after);
    }

    /// Asserts that the store verifies clean and holds every reported job intact.
    #[track_caller]
    fn assert_intact(&mut self, after: &str) {
        let verify = repx(self.path(), &["verify"]);
        assert_eq!(
            verify.code, 0,
            "verify after {after}:\n{}{}",
            verify.stdout, verify.stderr
        );
        self.read_records(after);
        for (id, slope) in &self.reported {
            let Some(recorded) = self.records.get(id) else {
                panic!("job {id} (slope {slope}) lost its record after {after}");
            };
            assert_eq!(recorded, slope, "job {id} after {after}");
            let out = self.path().join(".repx/jobs").join(id).join("out");
            // verify skips an output that is gone altogether and re-hashes the others
            // against their records, which never change: an output read once and present
            // is unchanged.
            assert!(out.is_dir(), "job {id} (slope {slope}) lost after {after}");
            if !self.checked.contains(id) {
                assert_output(&out, *slope, id, after);
                self.checked.insert(id.clone());
            }
        }
    }

    /// An uninterrupted run completes exactly the jobs not done (the sweep grown first if
    /// fewer than 8 remain), and the run after it runs nothing. Returns how many jobs the
    /// first ran.
    fn finish(&mut self) -> usize {
        let plan = self.grow(WORKERS);
        let done: BTreeSet<i64> = self.records.values().copied().collect();
        let last = run(self.path(), None, &plan);
        let remained: BTreeSet<i64> = (0..self.slopes as i64)
            .filter(|s| !done.contains(s))
            .collect();
        let started: BTreeSet<i64> = last.started.values().copied().collect();
        assert_eq!(
            started, remained,
            "the last run ran other jobs than remained"
        );
        assert_eq!(last.started.len(), last.finished.len());
        self.check(&last, "the last run");
        assert_eq!(self.records.len(), self.slopes, "jobs recorded");
        assert_eq!(self.reported.len(), self.slopes, "jobs reported done");

        let noop = run(self.path(), None, &plan);
        assert_eq!((noop.finished.len(), noop.cached.len()), (0, self.slopes));
        assert!(noop.started.is_empty());
        last.finished.len()
    }
}

/// The param-sweep example's point stage over slopes `0..slopes`.
fn write_sweep(lab: &Path, slopes: usize) {
    let slopes: Vec<String> = (0..slopes).map(|s| s.to_string()).collect();
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

/// Asserts that a point job's output holds what its parameters make.
#[track_caller]
fn assert_output(out: &Path, slope: i64, id: &str, after: &str) {
    let mut csv = String::from("x,y\n");
    for x in (0..=10).map(f64::from) {
        let y = slope as f64 * x + INTERCEPT as f64;
        csv.push_str(&format!("{x},{y}\n"));
    }
    let points = fs::read_to_string(out.join("points.csv"))
        .unwrap_or_else(|e| panic!("job {id} (slope {slope}) lost after {after}: {e}"));
    assert_eq!(points, csv, "job {id} after {after}");
    let metrics: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(
        metrics["max_y"].as_f64().unwrap(),
        (slope as f64 * 10.0 + INTERCEPT as f64).max(INTERCEPT as f64),
        "job {id} after {after}"
    );
    assert!(out.join("plot.svg").is_file(), "job {id} after {after}");
}

#[test]
fn killed_at_fifty_moments_loses_nothing() {
    let clock = Instant::now();
    let mut lab = Lab::new();
    let mut durations = vec![lab.duration];
    let mut most_sealed = 0;

    let mut queue: VecDeque<(Moment, u32)> = moments().into_iter().map(|m| (m, 0)).collect();
    let mut kills: Vec<Kill> = Vec::new();
    let mut interrupted: BTreeSet<String> = BTreeSet::new();
    let mut finishing = 0;
    while let Some((moment, tries)) = queue.pop_front() {
        // Moments are tried again only while too few interrupted a run.
        if tries > 0 && interrupted.len() >= DISTINCT {
            continue;
        }
        if lab.records.len() >= STORE_BOUND {
            finishing += lab.finish();
            lab = Lab::new();
            durations.push(lab.duration);
        }
        let kill = lab.kill(moment, WORK << tries, tries);
        eprintln!(
            "kill {:>2} at {:<20} try {}: {:>4} jobs, {:>4} done before, {:>4} after, {:>4} ms: {}",
            kills.len(),
            kill.label,
            kill.tries + 1,
            kill.jobs,
            kill.before,
            kill.after,
            kill.elapsed.as_millis(),
            if kill.interrupted {
                "interrupted"
            } else {
                "too late"
            }
        );
        most_sealed = most_sealed.max(kill.most_sealed);
        if kill.interrupted {
            interrupted.insert(kill.label.clone());
        } else if tries + 1 < TRIES {
            queue.push_back((moment, tries + 1));
        }
        kills.push(kill);
    }
    finishing += lab.finish();

    // How far into its work each interrupting kill landed, by what the store held after it.
    let mut thirds = [0; 3];
    for k in kills.iter().filter(|k| k.interrupted) {
        thirds[(3 * (k.after - k.before) / (k.jobs - k.before)).min(2)] += 1;
    }
    eprintln!(
        "crash suite: {} kills in {} labs; {} interrupted a run, at {} distinct moments, \
         having committed under a third, a third to two, over two thirds of its work: \
         {thirds:?}; up to {most_sealed} outputs sealed and uncommitted at once; {finishing} \
         jobs left to the finishing runs; a first run of {WORK} jobs took {durations:?}; \
         {:?} in all",
        kills.len(),
        durations.len(),
        kills.iter().filter(|k| k.interrupted).count(),
        interrupted.len(),
        clock.elapsed()
    );
    assert!(
        interrupted.len() >= DISTINCT,
        "only {} distinct moments interrupted a run: {interrupted:?}",
        interrupted.len()
    );
}
