//! The SLURM scheduler: the same jobs as the local scheduler, run on a cluster in few
//! allocations.
//!
//! `repx run --scheduler slurm` is the coordinator. It resolves jobs as the local
//! scheduler does (ids, cache hits, skips), packs the jobs it may submit into batches
//! ([`pack`]) and submits them with `sbatch`, a wave's batches of one shape as one job
//! array. Each allocation runs `repx worker` on a batch file in the store: the same binary
//! running the batch's jobs in-process, several at once on the allocation's CPUs
//! (`batch_cpus`), committing into the shared store
//! ([`Store::open_worker`]) while the coordinator holds its lock. Jobs whose upstream is
//! already submitted are chained with `afterok` rather than waiting a round; an allocation
//! whose upstream failed is cancelled by SLURM and its jobs are resolved again.
//!
//! What is done is read from the store (records plus `jobs/<id>`), as the local scheduler
//! commits it; the workers' events files add progress and failure messages, and `squeue`
//! (polled with back-off, `sacct` where accounting is on) catches allocations that ended
//! without their worker finishing. Ctrl-C cancels every allocation of the run and waits
//! until SLURM has stopped them; a worker interrupted mid-job discards it, so nothing
//! half-written is committed. The coordinator never prints: it emits [`Event`]s.
//!
//! Layout: `<store>/slurm/<run>/` holds `worker.sh`, `batch-<submission>-<task>.json`,
//! their `.events`, `slurm-<id>.log` (the allocations' output) and `submissions.jsonl`.

mod batch;
mod command;
pub mod config;
mod pack;
pub mod worker;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use batch::{Batch, EventWriter, WorkerEvent};
pub use config::Config;

use super::local::{Emit, cached, selection};
use super::{Event, Options, Summary};
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
pub struct Report {
    /// `<store>/slurm/<run>`.
    pub dir: PathBuf,
    /// `sbatch` calls.
    pub submissions: usize,
    /// Allocations (array tasks count one each).
    pub allocations: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting,
    /// May be submitted now: its id is known, its upstream done or submitted.
    Candidate,
    Submitted(Alloc),
    /// Done, with the key downstream jobs see.
    Done(String),
    Failed,
    Skipped,
    /// Not run: the run stopped first.
    NotRun,
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

struct Coordinator<'a> {
    plan: &'a Plan,
    store: &'a Store,
    options: &'a Options,
    cluster: &'a Cluster,
    /// The partition's nodes, which no allocation can outgrow; none when unknown.
    nodes: Vec<Node>,
    emit: Emit,
    dir: PathBuf,
    name: String,
    script: PathBuf,
    /// The evaluated lab.nix the workers read, if the lab is one.
    evaluated: Option<batch::Evaluated>,
    selected: BTreeSet<JobIndex>,
    dependents: Vec<Vec<JobIndex>>,
    state: Vec<State>,
    ids: Vec<Option<String>>,
    /// What downstream jobs see of each job, as soon as it is known: a pure job's id once
    /// computed, an impure job's output hash once done.
    keys: Vec<Option<String>>,
    by_id: HashMap<String, JobIndex>,
    pending: VecDeque<JobIndex>,
    allocations: Vec<Allocation>,
    summary: Summary,
    report: Report,
    stopping: bool,
    /// Pending allocations were cancelled after a failure.
    stopped_pending: bool,
    changed: bool,
}

/// Runs the plan's selected jobs on SLURM; returns the counts and what was submitted.
pub fn run(
    plan: &Plan,
    store: &Store,
    options: &Options,
    cluster: &Cluster,
    emit: Emit,
) -> Result<(Summary, Report), SlurmError> {
    command::check()?;
    // Without sizes, `batch_cpus` alone bounds an allocation; SLURM says if it is too big.
    let nodes = command::nodes(cluster.config.partition.as_deref()).unwrap_or_default();
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tag = format!("{stamp}-{}", std::process::id());
    let dir = store.root().join("slurm").join(&tag);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let script = dir.join("worker.sh");
    write_script(&script, cluster, store, &dir)?;
    let evaluated = match &plan.lab.evaluated {
        Some(json) => Some(worker::write_evaluated(&dir, json).map_err(io(&dir))?),
        None => None,
    };

    let selected = selection(plan, options.targets.as_deref());
    let n = plan.graph.jobs.len();
    let mut c = Coordinator {
        plan,
        store,
        options,
        cluster,
        nodes,
        emit,
        name: format!("repx-{tag}"),
        script,
        evaluated,
        pending: selected.iter().copied().collect(),
        selected,
        dependents: plan.graph.dependents(),
        state: vec![State::Waiting; n],
        ids: vec![None; n],
        keys: vec![None; n],
        by_id: HashMap::new(),
        allocations: Vec::new(),
        summary: Summary::default(),
        report: Report {
            dir: dir.clone(),
            ..Default::default()
        },
        dir,
        stopping: false,
        stopped_pending: false,
        changed: false,
    };
    (c.emit)(Event::Started {
        jobs: c.selected.len(),
    });

    let mut squeue_every = SQUEUE_FIRST;
    let mut squeue_last = Instant::now();
    loop {
        c.resolve();
        if !c.stopping {
            c.submit_round()?;
        }
        if c.in_flight() == 0 && (c.stopping || !c.has_candidates()) {
            break;
        }
        if c.options.interrupted.load(Ordering::Relaxed) {
            c.cancel();
            break;
        }
        if c.stopping && !c.stopped_pending {
            c.stop_pending();
        }
        sleep_unless_interrupted(STORE_POLL, c.options);
        c.changed = false;
        if squeue_last.elapsed() >= squeue_every {
            c.poll_squeue();
            squeue_last = Instant::now();
        }
        c.poll_workers();
        c.finish_ended();
        squeue_every = if c.changed {
            SQUEUE_FIRST
        } else {
            (squeue_every * 2).min(SQUEUE_LAST)
        };
    }
    let s = &mut c.summary;
    s.not_run = c.selected.len() - s.ran - s.cached - s.failed - s.skipped;
    Ok((c.summary, c.report))
}

impl Coordinator<'_> {
    fn stage(&self, job: JobIndex) -> String {
        self.plan.graph.jobs[job].stage.clone()
    }

    fn in_flight(&self) -> usize {
        self.allocations.iter().filter(|a| !a.finished).count()
    }

    fn has_candidates(&self) -> bool {
        self.state.contains(&State::Candidate)
    }

    fn set_state(&mut self, job: JobIndex, state: State) {
        self.state[job] = state;
        self.changed = true;
        let dependents = self.dependents[job].clone();
        self.pending.extend(dependents);
    }

    /// Settles whatever became settleable: skips, cache hits (cascading), candidates.
    fn resolve(&mut self) {
        let jobs = &self.plan.graph.jobs;
        while let Some(index) = self.pending.pop_front() {
            // A candidate is looked at again: its upstream may have failed meanwhile.
            if !matches!(self.state[index], State::Waiting | State::Candidate)
                || !self.selected.contains(&index)
            {
                continue;
            }
            let deps = jobs[index].deps();
            if let Some(failed) = deps
                .iter()
                .find(|d| matches!(self.state[**d], State::Failed | State::Skipped))
            {
                let failed_upstream = self.stage(*failed);
                self.summary.skipped += 1;
                self.set_state(index, State::Skipped);
                (self.emit)(Event::JobSkipped {
                    job: index,
                    id: self.plan.id(index, &self.keys),
                    stage: self.stage(index),
                    failed_upstream,
                });
                continue;
            }
            if !deps.iter().all(|d| self.keys[*d].is_some()) {
                self.state[index] = State::Waiting;
                continue;
            }
            let id = self
                .plan
                .id(index, &self.keys)
                .expect("upstream keys known");
            self.ids[index] = Some(id.clone());
            let upstream_done = deps
                .iter()
                .all(|d| matches!(self.state[*d], State::Done(_)));
            if upstream_done {
                if let Some(key) = cached(
                    self.plan,
                    self.store,
                    index,
                    &id,
                    &self.ids,
                    &self.options.force,
                ) {
                    self.keys[index] = Some(key.clone());
                    self.summary.cached += 1;
                    self.set_state(index, State::Done(key));
                    (self.emit)(Event::JobCached {
                        job: index,
                        id,
                        stage: self.stage(index),
                    });
                    continue;
                }
            } else if self.store.done(&id).is_some()
                && !self.options.force.covers(index, &jobs[index].stage)
            {
                // In the store already: wait for its upstream, then it is a cache hit.
                self.state[index] = State::Waiting;
                continue;
            }
            if jobs[index].mode != Mode::Impure {
                self.keys[index] = Some(id);
            }
            if self.state[index] != State::Candidate {
                self.set_state(index, State::Candidate);
            }
        }
    }

    /// Packs and submits what may be submitted, within `--max-submissions`.
    fn submit_round(&mut self) -> Result<(), SlurmError> {
        let config = &self.cluster.config;
        let slots = config.max_submissions.saturating_sub(self.in_flight());
        if slots == 0 || !self.has_candidates() {
            return Ok(());
        }
        let jobs = &self.plan.graph.jobs;
        let candidates: Vec<Candidate> = (0..jobs.len())
            .filter(|j| self.state[*j] == State::Candidate)
            .map(|j| {
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
                        .filter_map(|d| match self.state[*d] {
                            State::Submitted(alloc) if !self.allocations[alloc].finished => {
                                Some(alloc)
                            }
                            _ => None,
                        })
                        .collect(),
                    upstream: deps
                        .into_iter()
                        .filter(|d| self.state[*d] == State::Candidate)
                        .collect(),
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
        for group in groups {
            self.submit(group)?;
        }
        Ok(())
    }

    /// Writes the group's batch files and submits them as one `sbatch`.
    fn submit(&mut self, group: Vec<pack::Packed>) -> Result<(), SlurmError> {
        let number = self.report.submissions;
        let jobs = &self.plan.graph.jobs;
        let config = &self.cluster.config;
        for (task, packed) in group.iter().enumerate() {
            let in_batch: BTreeSet<JobIndex> = packed.jobs.iter().copied().collect();
            let entry = |j: JobIndex| BatchJob {
                index: j,
                stage: jobs[j].stage.clone(),
                id: self.ids[j].clone().expect("candidates have ids"),
            };
            let upstream: BTreeSet<JobIndex> = packed
                .jobs
                .iter()
                .flat_map(|j| jobs[*j].deps())
                .filter(|d| !in_batch.contains(d))
                .collect();
            let batch = Batch {
                version: batch::VERSION,
                runs: self.cluster.runs.clone(),
                mode: self.cluster.mode,
                jobs: packed.jobs.iter().map(|j| entry(*j)).collect(),
                upstream: upstream.into_iter().map(entry).collect(),
                parallel: packed.parallel,
                continue_on_failure: self.options.continue_on_failure,
                lab: self.evaluated.clone(),
                nix: self
                    .options
                    .nix
                    .as_ref()
                    .map(|n| n.settings().clone())
                    .unwrap_or_default(),
            };
            let path = self.dir.join(format!("batch-{number}-{task}.json"));
            batch.write(&path).map_err(io(&path))?;
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
        self.report.submissions += 1;
        let slurm_id = match command::sbatch(&submission) {
            Ok(id) => id,
            Err(e) => {
                // Refused (a bad partition, a limit): its jobs fail, and the run stops.
                let failure = format!("sbatch refused the batch: {e}");
                for packed in &group {
                    for job in &packed.jobs {
                        self.fail(*job, failure.clone());
                    }
                }
                self.stopping = true;
                return Ok(());
            }
        };
        self.log_submission(&slurm_id, &group);
        for (task, packed) in group.into_iter().enumerate() {
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
            for job in &packed.jobs {
                let job_id = self.ids[*job].clone().expect("candidates have ids");
                self.by_id.insert(job_id, *job);
                self.set_state(*job, State::Submitted(alloc));
            }
            self.allocations.push(Allocation {
                slurm_id: id,
                log,
                events: Batch::events_path(&self.dir.join(format!("batch-{number}-{task}.json"))),
                reader: EventReader::default(),
                jobs: packed.jobs,
                after: packed.after,
                submitted: Instant::now(),
                started: false,
                exited: None,
                error: None,
                over: None,
                missing_since: None,
                cancelled_by_us: false,
                finished: false,
            });
            self.report.allocations += 1;
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

    fn fail(&mut self, job: JobIndex, failure: String) {
        self.summary.failed += 1;
        self.set_state(job, State::Failed);
        (self.emit)(Event::JobFailed {
            job,
            id: self.ids[job].clone().unwrap_or_default(),
            stage: self.stage(job),
            failure,
        });
        self.stopping |= !self.options.continue_on_failure;
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
                    WorkerEvent::Started { job } => {
                        if self.state[job] == State::Submitted(alloc) {
                            (self.emit)(Event::JobStarted {
                                job,
                                id: self.ids[job].clone().unwrap_or_default(),
                                stage: self.stage(job),
                            });
                        }
                    }
                    WorkerEvent::Failed { job, failure, .. } => {
                        if self.state[job] == State::Submitted(alloc) {
                            let failure = format!("{failure}\n{}", self.place(alloc));
                            self.fail(job, failure);
                        }
                    }
                    WorkerEvent::Finished { .. } | WorkerEvent::Skipped { .. } => {}
                    WorkerEvent::Error { message } => self.allocations[alloc].error = Some(message),
                    WorkerEvent::Exit { code } => self.allocations[alloc].exited = Some(code),
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
            if !matches!(self.state[job], State::Submitted(_))
                || self.store.done(&record.id).is_none()
            {
                continue;
            }
            let key = if self.plan.graph.jobs[job].mode == Mode::Impure {
                record.hash.clone()
            } else {
                record.id.clone()
            };
            self.keys[job] = Some(key.clone());
            self.summary.ran += 1;
            self.set_state(job, State::Done(key));
            (self.emit)(Event::JobFinished {
                job,
                id: record.id,
                stage: self.stage(job),
                duration: Duration::from_millis(record.duration_ms),
            });
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
                if self.state[job] != State::Submitted(alloc) {
                    continue;
                }
                self.settle_unfinished(alloc, job);
            }
        }
    }

    /// A job whose allocation ended without committing it or reporting its failure.
    fn settle_unfinished(&mut self, alloc: Alloc, job: JobIndex) {
        let deps = self.plan.graph.jobs[job].deps();
        if let Some(failed) = deps
            .iter()
            .find(|d| matches!(self.state[**d], State::Failed | State::Skipped))
        {
            let failed_upstream = self.stage(*failed);
            self.summary.skipped += 1;
            self.set_state(job, State::Skipped);
            (self.emit)(Event::JobSkipped {
                job,
                id: self.plan.id(job, &self.keys),
                stage: self.stage(job),
                failed_upstream,
            });
            return;
        }
        let a = &self.allocations[alloc];
        let cancelled = a
            .over
            .as_ref()
            .is_some_and(|s| s.state.starts_with("CANCELLED"));
        let never_began = cancelled && !a.started && !a.cancelled_by_us && !a.after.is_empty();
        if never_began && !self.stopping {
            // Chained after an allocation that failed: SLURM cancelled it before it began.
            // Resolve its jobs again; they go out once their upstream is settled.
            self.state[job] = State::Waiting;
            self.pending.push_back(job);
            self.changed = true;
            return;
        }
        let stopped = self.stopping && a.error.is_none() && (a.exited.is_some() || never_began);
        if a.cancelled_by_us || stopped {
            self.set_state(job, State::NotRun);
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
        self.fail(job, failure);
    }

    /// After a failure (without `--continue-on-failure`): allocations not started yet are
    /// cancelled; running ones finish what they started.
    fn stop_pending(&mut self) {
        self.stopped_pending = true;
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
    fn cancel(&mut self) {
        self.summary.interrupted = true;
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
            if !self.allocations[alloc].finished {
                self.allocations[alloc].finished = true;
                let jobs = self.allocations[alloc].jobs.clone();
                for job in jobs {
                    if self.state[job] == State::Submitted(alloc) {
                        self.state[job] = State::NotRun;
                    }
                }
            }
        }
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
