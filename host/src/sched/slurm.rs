//! The SLURM executor: the dispatcher's jobs (see [`super::dispatch`]), run on a cluster in
//! few allocations.
//!
//! `repx run --scheduler slurm` is the coordinator. The dispatcher decides (ids, cache
//! hits, skips) and hands over jobs as soon as their ids are known; this executor packs
//! them into batches ([`pack`]) and submits them with `sbatch`, a wave's batches of one
//! shape as one job array. Each allocation runs `repx worker` on a batch file in the store:
//! the same binary running the batch's jobs in-process with the local executor, several at
//! once on the allocation's CPUs (`batch_cpus`), committing into the shared store
//! ([`Store::open_worker`]) while the coordinator holds its lock. Jobs whose upstream is
//! already submitted are chained with `afterok` rather than waiting a round; an allocation
//! whose upstream failed is cancelled by SLURM and its jobs are given back to the
//! dispatcher, which skips them.
//!
//! What is done is read from the store (records plus `jobs/<id>`), as the local executor
//! commits it; the workers' events files add progress and failure messages, and `squeue`
//! (polled with back-off, `sacct` where accounting is on) catches allocations that ended
//! without their worker finishing. Ctrl-C cancels every allocation of the run and waits
//! until SLURM has stopped them; a worker interrupted mid-job discards it, so nothing
//! half-written is committed. The executor never prints and decides nothing: it reports.
//!
//! Layout: `<store>/slurm/<run>/` holds `worker.sh`, `batch-<submission>-<task>.json`,
//! their `.events`, `slurm-<id>.log` (the allocations' output) and `submissions.jsonl`.

mod batch;
mod command;
pub mod config;
mod pack;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use batch::{Batch, EventWriter, WorkerEvent};
pub use config::Config;

use super::decide::PlanJobs;
use super::dispatch::{self, Admission, Emit, Executor, Handoff, Report};
use super::{Failure, FailureKind, Options, Summary};
use crate::graph::JobIndex;
use crate::lab::Mode;
use crate::plan::Plan;
use crate::store::Store;
use batch::{BatchJob, EventReader};
use command::{JobState, Node, Submission};
use pack::{Alloc, Candidate, Shape};

/// How often the store and the workers' events are read.
const STORE_POLL: Duration = Duration::from_millis(200);
/// `squeue` back-off: from the first to the last interval, doubling while nothing changes.
const SQUEUE_FIRST: Duration = Duration::from_secs(1);
const SQUEUE_LAST: Duration = Duration::from_secs(10);
/// How long an allocation may be missing from `squeue` before it counts as gone.
const SQUEUE_GRACE: Duration = Duration::from_secs(5);
/// How long Ctrl-C waits for SLURM to stop what it cancelled.
const CANCEL_WAIT: Duration = Duration::from_secs(90);
/// The most allocations one batch is chained after; more, and it waits for them instead.
const MAX_AFTER: usize = 100;
/// A worker's start-up, added to a batch's summed time hints.
const STARTUP: Duration = Duration::from_secs(60);
/// Lines of an allocation's log quoted when it ended without its worker finishing.
const LOG_TAIL_LINES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "`{command}` is not installed: the SLURM scheduler needs SLURM's commands (for a one-node cluster on this machine, run scripts/slurm-setup)"
    )]
    Missing { command: String },
    #[error(
        "{command}: {message}\n(is SLURM up? `sinfo` shows its nodes; for a one-node cluster on this machine, run scripts/slurm-setup)"
    )]
    Command { command: String, message: String },
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SlurmError + '_ {
    move |source| SlurmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the coordinator needs besides the plan: how to submit, and how a worker finds
/// the same plan.
pub struct Cluster {
    pub config: Config,
    /// The `repx` binary the allocations run; it must be reachable from the nodes.
    pub exe: PathBuf,
    pub lab_file: PathBuf,
    /// The runs the plan's graph was expanded from, and the mode override.
    pub runs: Vec<String>,
    pub mode: Option<Mode>,
}

/// What a SLURM run submitted, for the closing line.
#[derive(Debug, Default, Clone)]
pub struct Submitted {
    /// `<store>/slurm/<run>`.
    pub dir: PathBuf,
    /// `sbatch` calls.
    pub submissions: usize,
    /// Allocations (array tasks count one each).
    pub allocations: usize,
}

/// One allocation: a single job or one task of an array.
struct Allocation {
    slurm_id: String,
    log: PathBuf,
    events: PathBuf,
    reader: EventReader,
    jobs: Vec<JobIndex>,
    /// Allocations it was chained after.
    after: BTreeSet<Alloc>,
    submitted: Instant,
    /// The worker wrote something: it started.
    started: bool,
    exited: Option<i32>,
    error: Option<String>,
    over: Option<JobState>,
    /// Absent from `squeue` since then.
    missing_since: Option<Instant>,
    cancelled_by_us: bool,
    finished: bool,
}

/// The SLURM executor.
struct Slurm<'a> {
    plan: &'a Plan,
    store: &'a Store,
    options: &'a Options,
    cluster: &'a Cluster,
    /// The partition's nodes, which no allocation can outgrow; none when unknown.
    nodes: Vec<Node>,
    dir: PathBuf,
    name: String,
    script: PathBuf,
    /// The evaluated lab.nix the workers read, if the lab is one.
    evaluated: Option<batch::Evaluated>,
    /// The jobs it holds, with their allocation and id.
    held: HashMap<JobIndex, Held>,
    by_id: HashMap<String, JobIndex>,
    allocations: Vec<Allocation>,
    /// What it has to tell the dispatcher.
    outbox: Vec<Report>,
    submitted: Submitted,
    stopping: bool,
    changed: bool,
    squeue_every: Duration,
    squeue_last: Instant,
}

struct Held {
    alloc: Alloc,
    id: String,
}

/// Runs the plan's selected jobs on SLURM; returns the counts and what was submitted.
pub fn run(
    plan: &Plan,
    store: &Store,
    options: &Options,
    cluster: &Cluster,
    emit: Emit,
) -> Result<(Summary, Submitted), SlurmError> {
    command::check()?;
    // Without sizes, `batch_cpus` alone bounds an allocation; SLURM says if it is too big.
    let nodes = command::nodes(cluster.config.partition.as_deref()).unwrap_or_default();
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A run with fan-outs submits in rounds, each its own directory, maybe in one second.
    static ROUNDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let tag = match ROUNDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
        0 => format!("{stamp}-{}", std::process::id()),
        round => format!("{stamp}-{}-{round}", std::process::id()),
    };
    let dir = store.slurm_dir(&tag);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let script = dir.join("worker.sh");
    write_script(&script, cluster, store, &dir)?;
    let evaluated = match &plan.lab.evaluated {
        Some(json) => Some(worker::write_evaluated(&dir, json).map_err(io(&dir))?),
        None => None,
    };
    let mut executor = Slurm {
        plan,
        store,
        options,
        cluster,
        nodes,
        name: format!("repx-{tag}"),
        script,
        evaluated,
        held: HashMap::new(),
        by_id: HashMap::new(),
        allocations: Vec::new(),
        outbox: Vec::new(),
        submitted: Submitted {
            dir: dir.clone(),
            ..Default::default()
        },
        dir,
        stopping: false,
        changed: false,
        squeue_every: SQUEUE_FIRST,
        squeue_last: Instant::now(),
    };
    let jobs = PlanJobs::new(plan, store);
    let summary = dispatch::run(&jobs, &mut executor, options, emit);
    Ok((summary, executor.submitted))
}

impl Executor for Slurm<'_> {
    fn admission(&self) -> Admission {
        Admission {
            // Bounded by `--max-submissions` allocations, not jobs: see `submit_round`.
            slots: None,
            // A batch with an impure job runs its jobs one at a time (see `pack`).
            impure_alone: false,
            chain: true,
            retries_itself: true,
            budget: None,
        }
    }

    fn start(&mut self, offered: Vec<Handoff>) -> Vec<Handoff> {
        self.submit_round(offered)
    }

    fn wait(&mut self, _timeout: Duration) -> Vec<Report> {
        if self.outbox.is_empty() {
            sleep_unless_interrupted(STORE_POLL, self.options);
            self.changed = false;
            if self.squeue_last.elapsed() >= self.squeue_every {
                self.poll_squeue();
                self.squeue_last = Instant::now();
            }
            self.poll_workers();
            self.finish_ended();
            self.squeue_every = if self.changed {
                SQUEUE_FIRST
            } else {
                (self.squeue_every * 2).min(SQUEUE_LAST)
            };
        }
        std::mem::take(&mut self.outbox)
    }

    /// After a failure (without `--continue-on-failure`): allocations not started yet are
    /// cancelled; running ones finish what they started.
    fn stop(&mut self) {
        self.stopping = true;
        let ids: Vec<String> = self
            .allocations
            .iter_mut()
            .filter(|a| !a.finished)
            .map(|a| {
                a.cancelled_by_us = true;
                a.slurm_id.clone()
            })
            .collect();
        let _ = command::scancel(&ids, true);
    }

    /// Ctrl-C: cancels every allocation of the run and waits until SLURM has stopped them.
    fn interrupt(&mut self) {
        self.stopping = true;
        let mut ids: Vec<String> = Vec::new();
        for a in self.allocations.iter_mut().filter(|a| !a.finished) {
            a.cancelled_by_us = true;
            // A whole array at once: `123` for `123_4`.
            let base = a.slurm_id.split('_').next().unwrap_or_default().to_string();
            if !ids.contains(&base) {
                ids.push(base);
            }
        }
        let _ = command::scancel(&ids, false);
        let deadline = Instant::now() + CANCEL_WAIT;
        while Instant::now() < deadline {
            match command::squeue(&self.name) {
                Ok(states) if states.values().all(|s| s.is_over()) => break,
                Err(_) => break,
                Ok(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
        // What committed before the cancel counts; the rest did not run.
        self.poll_workers();
        for alloc in 0..self.allocations.len() {
            self.allocations[alloc].finished = true;
        }
        let jobs: Vec<JobIndex> = self.held.keys().copied().collect();
        for job in jobs {
            self.give_back(job);
        }
    }
}

impl Slurm<'_> {
    fn in_flight(&self) -> usize {
        self.allocations.iter().filter(|a| !a.finished).count()
    }

    /// Whether the job is held on allocation `alloc`.
    fn on(&self, job: JobIndex, alloc: Alloc) -> bool {
        self.held.get(&job).is_some_and(|h| h.alloc == alloc)
    }

    fn release(&mut self, job: JobIndex) -> Option<Held> {
        let held = self.held.remove(&job)?;
        self.by_id.remove(&held.id);
        Some(held)
    }

    fn give_back(&mut self, job: JobIndex) {
        if self.release(job).is_some() {
            self.outbox.push(Report::NotStarted(job));
        }
    }

    fn fail(&mut self, job: JobIndex, failure: Failure) {
        if self.release(job).is_some() {
            self.outbox.push(Report::Failed(job, failure));
        }
    }

    /// Packs and submits what may be submitted, within `--max-submissions`; returns the
    /// jobs it did not submit.
    fn submit_round(&mut self, offered: Vec<Handoff>) -> Vec<Handoff> {
        let config = &self.cluster.config;
        let slots = config.max_submissions.saturating_sub(self.in_flight());
        if slots == 0 {
            return offered;
        }
        let jobs = &self.plan.graph.jobs;
        let in_offer: BTreeSet<JobIndex> = offered.iter().map(|h| h.job).collect();
        let candidates: Vec<Candidate> = offered
            .iter()
            .map(|h| {
                let j = h.job;
                let deps = jobs[j].deps();
                let resources = self.plan.lab.stages[&jobs[j].stage].resources;
                Candidate {
                    index: j,
                    shape: Shape {
                        cpus: resources.cpus.unwrap_or(1),
                        mem: resources.mem,
                    },
                    time: resources.time,
                    impure: jobs[j].mode == Mode::Impure,
                    after: deps
                        .iter()
                        .filter_map(|d| self.held.get(d).map(|h| h.alloc))
                        .filter(|alloc| !self.allocations[*alloc].finished)
                        .collect(),
                    upstream: deps.into_iter().filter(|d| in_offer.contains(d)).collect(),
                }
            })
            .collect();
        let limits = pack::Limits {
            batch_size: config.batch_size,
            batch_time: config.batch_time,
            batch_cpus: config.batch_cpus,
            nodes: &self.nodes,
            max_after: MAX_AFTER,
        };
        let mut packed = pack::pack(&candidates, &limits);
        packed.truncate(slots);
        // Batches of one shape, parallelism, time and `after` set go out as one array.
        let mut groups: Vec<Vec<pack::Packed>> = Vec::new();
        for batch in packed {
            let same = |g: &Vec<pack::Packed>| {
                let first = &g[0];
                first.shape == batch.shape
                    && first.parallel == batch.parallel
                    && first.time == batch.time
                    && first.after == batch.after
            };
            match groups.iter_mut().find(|g| config.arrays && same(g)) {
                Some(group) => group.push(batch),
                None => groups.push(vec![batch]),
            }
        }
        let mut offered: HashMap<JobIndex, Handoff> =
            offered.into_iter().map(|h| (h.job, h)).collect();
        for group in groups {
            let handoffs: Vec<Vec<Handoff>> = group
                .iter()
                .map(|p| {
                    p.jobs
                        .iter()
                        .map(|j| offered.remove(j).expect("packed from the offer"))
                        .collect()
                })
                .collect();
            self.submit(group, handoffs);
        }
        let mut rest: Vec<Handoff> = offered.into_values().collect();
        rest.sort_by_key(|h| h.job);
        rest
    }

    /// Writes the group's batch files and submits them as one `sbatch`. A batch that cannot
    /// go out fails its jobs, and the run stops.
    fn submit(&mut self, group: Vec<pack::Packed>, handoffs: Vec<Vec<Handoff>>) {
        if let Err(failure) = self.try_submit(&group, &handoffs) {
            for handoff in handoffs.into_iter().flatten() {
                self.outbox
                    .push(Report::Failed(handoff.job, failure.clone()));
            }
        }
    }

    fn try_submit(
        &mut self,
        group: &[pack::Packed],
        handoffs: &[Vec<Handoff>],
    ) -> Result<(), Failure> {
        let number = self.submitted.submissions;
        let jobs = &self.plan.graph.jobs;
        let config = &self.cluster.config;
        for (task, batch_jobs) in handoffs.iter().enumerate() {
            let in_batch: BTreeSet<JobIndex> = batch_jobs.iter().map(|h| h.job).collect();
            let entry = |j: JobIndex, id: &str| BatchJob {
                index: j,
                stage: jobs[j].stage.clone(),
                id: id.to_string(),
            };
            let upstream: BTreeMap<JobIndex, &str> = batch_jobs
                .iter()
                .flat_map(|h| {
                    jobs[h.job]
                        .deps()
                        .into_iter()
                        .map(|d| (d, h.upstream_ids[&d].as_str()))
                })
                .filter(|(d, _)| !in_batch.contains(d))
                .collect();
            let batch = Batch {
                version: batch::VERSION,
                runs: self.cluster.runs.clone(),
                mode: self.cluster.mode,
                jobs: batch_jobs.iter().map(|h| entry(h.job, &h.id)).collect(),
                upstream: upstream.into_iter().map(|(j, id)| entry(j, id)).collect(),
                parallel: group[task].parallel,
                continue_on_failure: self.options.continue_on_failure,
                retries: self.options.retries,
                lab: self.evaluated.clone(),
                nix: self
                    .options
                    .nix
                    .as_ref()
                    .map(|n| n.settings().clone())
                    .unwrap_or_default(),
                grown: self.plan.grown.clone(),
            };
            let path = self.dir.join(format!("batch-{number}-{task}.json"));
            batch.write(&path).map_err(|e| {
                Failure::new(FailureKind::Refused, format!("{}: {e}", path.display()))
            })?;
            for job in &batch.jobs {
                // A failure left from an earlier attempt is not this one's.
                self.store.clear_failure(&job.id);
            }
        }
        let first = &group[0];
        let array = (group.len() > 1).then_some(group.len());
        let after: Vec<String> = first
            .after
            .iter()
            .map(|a| self.allocations[*a].slurm_id.clone())
            .collect();
        let output = if array.is_some() {
            self.dir.join("slurm-%A_%a.log")
        } else {
            self.dir.join("slurm-%j.log")
        };
        let submission = Submission {
            script: self.script.clone(),
            args: vec![number.to_string()],
            name: self.name.clone(),
            output,
            // The jobs running at once, together.
            cpus: first.shape.cpus.max(1) * first.parallel as u32,
            mem: first.shape.mem.map(|m| m * first.parallel as u64),
            time: first.time.map(|t| t + STARTUP),
            array,
            after,
            partition: config.partition.clone(),
            account: config.account.clone(),
            qos: config.qos.clone(),
            flags: config.sbatch_flags.clone(),
        };
        self.submitted.submissions += 1;
        // Refused (a bad partition, a limit): its jobs fail, and the run stops.
        let slurm_id = command::sbatch(&submission).map_err(|e| {
            Failure::new(
                FailureKind::Refused,
                format!("sbatch refused the batch: {e}"),
            )
        })?;
        self.log_submission(&slurm_id, group);
        for (task, (packed, batch_jobs)) in group.iter().zip(handoffs).enumerate() {
            let (id, log) = match array {
                Some(_) => (
                    format!("{slurm_id}_{task}"),
                    self.dir.join(format!("slurm-{slurm_id}_{task}.log")),
                ),
                None => (
                    slurm_id.clone(),
                    self.dir.join(format!("slurm-{slurm_id}.log")),
                ),
            };
            let alloc = self.allocations.len();
            for handoff in batch_jobs {
                self.by_id.insert(handoff.id.clone(), handoff.job);
                self.held.insert(
                    handoff.job,
                    Held {
                        alloc,
                        id: handoff.id.clone(),
                    },
                );
            }
            self.allocations.push(Allocation {
                slurm_id: id,
                log,
                events: Batch::events_path(&self.dir.join(format!("batch-{number}-{task}.json"))),
                reader: EventReader::default(),
                jobs: packed.jobs.clone(),
                after: packed.after.clone(),
                submitted: Instant::now(),
                started: false,
                exited: None,
                error: None,
                over: None,
                missing_since: None,
                cancelled_by_us: false,
                finished: false,
            });
            self.submitted.allocations += 1;
        }
        Ok(())
    }

    /// One line per `sbatch` in `submissions.jsonl`, for people and tests.
    fn log_submission(&self, slurm_id: &str, group: &[pack::Packed]) {
        let line = serde_json::json!({
            "slurm_id": slurm_id,
            "name": self.name,
            "tasks": group.len(),
            "jobs": group.iter().map(|p| p.jobs.len()).sum::<usize>(),
        });
        let path = self.dir.join("submissions.jsonl");
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }

    /// Where to look when a job failed on an allocation.
    fn place(&self, alloc: Alloc) -> String {
        let a = &self.allocations[alloc];
        format!("SLURM job {}, log: {}", a.slurm_id, a.log.display())
    }

    /// Reads the workers' events and the store's new records.
    fn poll_workers(&mut self) {
        for alloc in 0..self.allocations.len() {
            if self.allocations[alloc].finished {
                continue;
            }
            let a = &mut self.allocations[alloc];
            let events = a.reader.read_new(&a.events);
            a.started |= !events.is_empty();
            for event in events {
                self.changed = true;
                match event {
                    WorkerEvent::Started { job } if self.on(job, alloc) => {
                        self.outbox.push(Report::Started(job));
                    }
                    WorkerEvent::Failed {
                        job, failure, kind, ..
                    } if self.on(job, alloc) => {
                        let message = format!("{failure}\n{}", self.place(alloc));
                        self.fail(job, Failure::new(kind, message));
                    }
                    WorkerEvent::Error { message } => self.allocations[alloc].error = Some(message),
                    WorkerEvent::Exit { code } => self.allocations[alloc].exited = Some(code),
                    _ => {}
                }
            }
        }
        let records = match self.store.refresh() {
            Ok(records) => records,
            Err(_) => return,
        };
        for record in records {
            let Some(&job) = self.by_id.get(&record.id) else {
                continue;
            };
            if self.store.done(&record.id).is_none() {
                continue;
            }
            self.release(job);
            self.outbox.push(Report::Committed(job, Box::new(record)));
        }
    }

    /// Asks SLURM how this run's allocations are, for those that end without a word.
    fn poll_squeue(&mut self) {
        let Ok(states) = command::squeue(&self.name) else {
            return;
        };
        let mut gone = Vec::new();
        let mut stuck = Vec::new();
        for (alloc, a) in self.allocations.iter_mut().enumerate() {
            if a.finished {
                continue;
            }
            match states.get(&a.slurm_id) {
                Some(state) => {
                    a.missing_since = None;
                    if state.never_runs() {
                        stuck.push(a.slurm_id.clone());
                    }
                    if state.is_over() && a.over.as_ref() != Some(state) {
                        a.over = Some(state.clone());
                        self.changed = true;
                    }
                }
                None if a.submitted.elapsed() > SQUEUE_GRACE => {
                    let since = *a.missing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > SQUEUE_GRACE {
                        gone.push(alloc);
                    }
                }
                None => {}
            }
        }
        // Chained after an allocation that failed, and kept pending: cancel it here.
        let _ = command::scancel(&stuck, false);
        if gone.is_empty() {
            return;
        }
        let ids: Vec<String> = gone
            .iter()
            .map(|a| self.allocations[*a].slurm_id.clone())
            .collect();
        let known = command::sacct(&ids).unwrap_or_default();
        for alloc in gone {
            let a = &mut self.allocations[alloc];
            a.over = Some(known.get(&a.slurm_id).cloned().unwrap_or(JobState {
                state: "GONE".into(),
                reason: "no longer known to squeue".into(),
            }));
            self.changed = true;
        }
    }

    /// Settles the jobs of allocations that ended.
    fn finish_ended(&mut self) {
        for alloc in 0..self.allocations.len() {
            let a = &self.allocations[alloc];
            if a.finished || (a.exited.is_none() && a.over.is_none()) {
                continue;
            }
            self.allocations[alloc].finished = true;
            self.changed = true;
            let jobs = self.allocations[alloc].jobs.clone();
            for job in jobs {
                if self.on(job, alloc) {
                    self.settle_unfinished(alloc, job);
                }
            }
        }
    }

    /// A job whose allocation ended without committing it or reporting its failure. The
    /// dispatcher skips it if its upstream failed, whatever is said here.
    fn settle_unfinished(&mut self, alloc: Alloc, job: JobIndex) {
        let a = &self.allocations[alloc];
        let cancelled = a
            .over
            .as_ref()
            .is_some_and(|s| s.state.starts_with("CANCELLED"));
        let never_began = cancelled && !a.started && !a.cancelled_by_us && !a.after.is_empty();
        // Chained after an allocation that failed: SLURM cancelled it before it began. Its
        // jobs are decided again, and go out once their upstream is settled.
        let requeue = never_began && !self.stopping;
        let stopped = self.stopping && a.error.is_none() && (a.exited.is_some() || never_began);
        if requeue || a.cancelled_by_us || stopped {
            self.give_back(job);
            return;
        }
        let cause = if let Some(error) = &a.error {
            error.clone()
        } else if a.exited.is_some() {
            "its worker ended without running it".to_string()
        } else {
            let state = a.over.as_ref().expect("ended");
            let mut cause = format!(
                "SLURM job {} ended {} ({}) before this job finished",
                a.slurm_id, state.state, state.reason
            );
            for line in log_tail(&a.log) {
                cause.push('\n');
                cause.push_str(&line);
            }
            cause
        };
        let failure = format!("{cause}\n{}", self.place(alloc));
        self.fail(job, Failure::other(failure));
    }
}

fn sleep_unless_interrupted(total: Duration, options: &Options) {
    let step = Duration::from_millis(50);
    let end = Instant::now() + total;
    while Instant::now() < end && !options.interrupted.load(Ordering::Relaxed) {
        std::thread::sleep(step.min(end - Instant::now()));
    }
}

/// The last lines of an allocation's log, when it has one.
fn log_tail(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// The script every allocation of the run runs: `repx worker` on its batch.
fn write_script(
    path: &Path,
    cluster: &Cluster,
    store: &Store,
    dir: &Path,
) -> Result<(), SlurmError> {
    let q = command::shell_quote;
    let text = format!(
        "#!/bin/sh\n\
         # repx run --scheduler slurm: each allocation runs one batch of jobs in-process.\n\
         # $1 is the submission; an array task picks its batch by SLURM_ARRAY_TASK_ID.\n\
         exec {} --lab {} --store {} worker {}/batch-\"$1\"-\"${{SLURM_ARRAY_TASK_ID:-0}}\".json\n",
        q(&cluster.exe),
        q(&cluster.lab_file),
        q(store.root()),
        q(dir),
    );
    std::fs::write(path, text).map_err(io(path))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(io(path))
}
