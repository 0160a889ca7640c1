//! The local scheduler: jobs run in-process on `-j N` worker threads, in dependency order.
//!
//! One coordinator owns all job states. A job's id is computed once its upstream keys are
//! known; if the store already has it the job is cached, otherwise it is queued for the
//! workers. A failure skips everything downstream of it and, unless
//! `--continue-on-failure`, stops new jobs from starting; an impure job that changed what
//! decides grants (see [`crate::lab::guard`]) stops them in any case. Impure jobs run one at a time,
//! beside any pure ones: they all work in the one project directory, where two builds at
//! once would write the same files.
//!
//! A worker that finished a job seals its output and hands it to one committer thread,
//! then takes the next job at once; the committer commits whatever was sealed since its
//! last round as one batch (see [`crate::store::Store::commit_sealed`]), so a run of many
//! small jobs pays for one flush to disk per batch, not several per job. A job is done, and
//! its dependents may start, only once its batch is committed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::execute::{Attempt, execute};
use super::{Event, Force, Options, Summary};
use crate::graph::JobIndex;
use crate::lab::Mode;
use crate::plan::Plan;
use crate::store::{self, Record, Sealed, Store};
use crate::wasm::Runtime;
use crate::wasm::host::Observer;

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting,
    Queued,
    /// Ran, its output sealed and waiting for the committer.
    Sealed,
    /// Done, with the key downstream jobs see.
    Done(String),
    Failed,
    Skipped,
}

/// A job handed to a worker.
struct Work {
    index: JobIndex,
    id: String,
    upstream_ids: BTreeMap<JobIndex, String>,
}

fn next_work(work: &Mutex<mpsc::Receiver<Work>>) -> Option<Work> {
    work.lock().ok()?.recv().ok()
}

/// What the workers and the committer tell the coordinator about a job.
enum Report {
    /// The job ran and its output waits for the committer: its worker is free.
    Sealed,
    /// The run is stopping: the worker gave the job back without starting it.
    NotStarted,
    /// The job is over: committed, or failed (on its worker or in its commit). Boxed, as
    /// the record is large beside the other reports.
    Done(Result<Box<Record>, String>),
}

/// Where events go; shared with the plugins' observers on the worker threads.
pub type Emit = Arc<dyn Fn(Event) + Send + Sync>;

struct EventObserver {
    job: JobIndex,
    stage: String,
    emit: Emit,
}

impl Observer for EventObserver {
    fn progress(&self, done: u64, total: u64) {
        (self.emit)(Event::Progress {
            job: self.job,
            done,
            total,
        });
    }
    fn warn(&self, message: &str) {
        (self.emit)(Event::Warning {
            job: self.job,
            stage: self.stage.clone(),
            message: message.into(),
        });
    }
}

/// Runs the plan's selected jobs; returns the counts.
pub fn run(
    plan: &Plan,
    store: &Store,
    runtime: &Runtime,
    options: &Options,
    emit: Emit,
) -> Summary {
    let jobs = &plan.graph.jobs;
    let selected = selection(plan, options.targets.as_deref());
    let dependents = plan.graph.dependents();
    let mut state = vec![State::Waiting; jobs.len()];
    let mut ids: Vec<Option<String>> = vec![None; jobs.len()];
    // The key of every done job, kept beside `state` so that resolving a job costs its
    // inputs, not the whole graph. A failed or skipped job that is not impure has its id
    // as key, as it would have had, so that the jobs skipped after it have ids too.
    let mut keys: Vec<Option<String>> = vec![None; jobs.len()];
    let mut summary = Summary::default();
    emit(Event::Started {
        jobs: selected.len(),
    });

    let (results_tx, results_rx) = mpsc::channel::<(JobIndex, Report)>();
    let (sealed_tx, sealed_rx) = mpsc::channel::<(JobIndex, Sealed)>();
    let (work_tx, work_rx) = mpsc::channel::<Work>();
    let work_rx = Arc::new(Mutex::new(work_rx));
    // Jobs on the workers, and jobs sealed but not yet committed.
    let mut running = 0usize;
    let mut committing = 0usize;
    let mut impure_running = false;
    let mut stopping = false;
    // Workers keep one job queued each beyond the one they run, so that none waits for
    // the coordinator between jobs; `stop` tells them not to start what is queued. A
    // failure sets it where it happens, before anyone hears of it, so that without
    // `--continue-on-failure` no job starts after one failed.
    let stop = AtomicBool::new(false);
    let stop_on_failure = !options.continue_on_failure;
    let in_flight = options.jobs.max(1) * 2;

    std::thread::scope(|scope| {
        {
            let results_tx = results_tx.clone();
            let stop = &stop;
            scope.spawn(move || {
                commit_batches(
                    store,
                    &sealed_rx,
                    &results_tx,
                    stop_on_failure.then_some(stop),
                );
            });
        }
        for _ in 0..options.jobs.max(1) {
            let (work_rx, results_tx, emit) = (work_rx.clone(), results_tx.clone(), emit.clone());
            let (sealed_tx, stop) = (sealed_tx.clone(), &stop);
            scope.spawn(move || {
                // The lock is held only while waiting for the next job, not while running it.
                while let Some(Work {
                    index,
                    id,
                    upstream_ids,
                }) = next_work(&work_rx)
                {
                    if stop.load(Ordering::Relaxed) {
                        let _ = results_tx.send((index, Report::NotStarted));
                        continue;
                    }
                    emit(Event::JobStarted {
                        job: index,
                        id: id.clone(),
                        stage: jobs[index].stage.clone(),
                    });
                    let observer = Arc::new(EventObserver {
                        job: index,
                        stage: jobs[index].stage.clone(),
                        emit: emit.clone(),
                    });
                    let attempt = Attempt {
                        plan,
                        store,
                        runtime,
                        nix: options.nix.as_deref(),
                        job: index,
                        id: &id,
                        upstream_ids,
                        observer,
                        guard: options.guard.as_deref(),
                    };
                    match execute(attempt) {
                        // The coordinator hears of it before the committer can finish it.
                        Ok(sealed) => {
                            let _ = results_tx.send((index, Report::Sealed));
                            let _ = sealed_tx.send((index, sealed));
                        }
                        Err(failure) => {
                            if stop_on_failure || tripped(options) {
                                stop.store(true, Ordering::Relaxed);
                            }
                            let _ = results_tx.send((index, Report::Done(Err(failure))));
                        }
                    }
                }
            });
        }
        drop(results_tx);
        drop(sealed_tx);

        let mut pending: VecDeque<JobIndex> = selected.iter().copied().collect();
        // Ready jobs wait here, and only a few in the workers' channel, so that stopping
        // stops them.
        let mut ready: VecDeque<Work> = VecDeque::new();
        loop {
            // Resolve whatever became resolvable: cached jobs cascade without running.
            while let Some(index) = pending.pop_front() {
                if state[index] != State::Waiting || !selected.contains(&index) {
                    continue;
                }
                let deps = jobs[index].deps();
                if deps
                    .iter()
                    .any(|d| matches!(state[*d], State::Failed | State::Skipped))
                {
                    let failed = deps
                        .iter()
                        .find(|d| matches!(state[**d], State::Failed | State::Skipped))
                        .unwrap();
                    state[index] = State::Skipped;
                    summary.skipped += 1;
                    let id = plan.id(index, &keys);
                    if jobs[index].mode != Mode::Impure {
                        keys[index] = id.clone();
                    }
                    emit(Event::JobSkipped {
                        job: index,
                        id,
                        stage: jobs[index].stage.clone(),
                        failed_upstream: jobs[*failed].stage.clone(),
                    });
                    pending.extend(&dependents[index]);
                    continue;
                }
                if !deps.iter().all(|d| keys[*d].is_some()) {
                    continue;
                }
                let id = plan.id(index, &keys).expect("upstream keys are known");
                ids[index] = Some(id.clone());
                if let Some(key) = cached(plan, store, index, &id, &ids, &options.force) {
                    keys[index] = Some(key.clone());
                    state[index] = State::Done(key);
                    summary.cached += 1;
                    emit(Event::JobCached {
                        job: index,
                        id,
                        stage: jobs[index].stage.clone(),
                    });
                    pending.extend(&dependents[index]);
                    continue;
                }
                let upstream_ids = upstream_ids(plan, index, &ids);
                state[index] = State::Queued;
                ready.push_back(Work {
                    index,
                    id,
                    upstream_ids,
                });
            }
            if stopping {
                stop.store(true, Ordering::Relaxed);
            }
            while running < in_flight && !stopping {
                // Impure jobs all build in the one project directory: one at a time.
                let next = ready
                    .iter()
                    .position(|w| !(impure_running && jobs[w.index].mode == Mode::Impure));
                let Some(work) = next.and_then(|n| ready.remove(n)) else {
                    break;
                };
                impure_running |= jobs[work.index].mode == Mode::Impure;
                let _ = work_tx.send(work);
                running += 1;
            }
            if running == 0 && committing == 0 {
                break;
            }
            let Ok((index, report)) = results_rx.recv_timeout(Duration::from_millis(100)) else {
                if options.interrupted.load(Ordering::Relaxed) && !stopping {
                    stopping = true;
                    summary.interrupted = true;
                    runtime.interrupt();
                }
                continue;
            };
            if jobs[index].mode == Mode::Impure && state[index] != State::Sealed {
                // Off its worker: it no longer touches the project directory.
                impure_running = false;
            }
            let result = match report {
                Report::Sealed => {
                    state[index] = State::Sealed;
                    running -= 1;
                    committing += 1;
                    continue;
                }
                Report::NotStarted => {
                    state[index] = State::Waiting;
                    running -= 1;
                    continue;
                }
                Report::Done(result) if state[index] == State::Sealed => {
                    committing -= 1;
                    result
                }
                Report::Done(result) => {
                    running -= 1;
                    result
                }
            };
            let stage = jobs[index].stage.clone();
            let id = ids[index].clone().unwrap_or_default();
            match result {
                Ok(record) => {
                    let key = if jobs[index].mode == Mode::Impure {
                        record.hash.clone()
                    } else {
                        id.clone()
                    };
                    keys[index] = Some(key.clone());
                    state[index] = State::Done(key);
                    summary.ran += 1;
                    emit(Event::JobFinished {
                        job: index,
                        id,
                        stage,
                        duration: Duration::from_millis(record.duration_ms),
                    });
                }
                Err(failure) => {
                    state[index] = State::Failed;
                    summary.failed += 1;
                    if jobs[index].mode != Mode::Impure {
                        keys[index] = Some(id.clone());
                    }
                    emit(Event::JobFailed {
                        job: index,
                        id,
                        stage,
                        failure,
                    });
                    stopping |= !options.continue_on_failure || tripped(options);
                }
            }
            if options.interrupted.load(Ordering::Relaxed) {
                stopping = true;
                summary.interrupted = true;
            }
            pending.extend(&dependents[index]);
        }
        drop(work_tx);
    });
    summary.not_run =
        selected.len() - summary.ran - summary.cached - summary.failed - summary.skipped;
    summary
}

/// Whether an impure job changed what decides grants: then no further job starts, even
/// with `--continue-on-failure`.
fn tripped(options: &Options) -> bool {
    options.guard.as_ref().is_some_and(|g| g.tripped())
}

/// The ids of the job's upstream jobs; for a hermetic job, also of those its hermetic
/// upstream jobs read, all of which its derivation describes.
fn upstream_ids(
    plan: &Plan,
    index: JobIndex,
    ids: &[Option<String>],
) -> BTreeMap<JobIndex, String> {
    let jobs = &plan.graph.jobs;
    let hermetic = jobs[index].mode == Mode::Hermetic;
    let mut found = BTreeMap::new();
    let mut stack = vec![index];
    while let Some(job) = stack.pop() {
        for dep in jobs[job].deps() {
            let new = found
                .insert(dep, ids[dep].clone().unwrap_or_default())
                .is_none();
            if new && hermetic && jobs[dep].mode == Mode::Hermetic {
                stack.push(dep);
            }
        }
    }
    found
}

/// The committer: commits every output sealed since its last round as one batch, until
/// the workers are gone and nothing is left.
fn commit_batches(
    store: &Store,
    sealed: &mpsc::Receiver<(JobIndex, Sealed)>,
    results: &mpsc::Sender<(JobIndex, Report)>,
    stop_on_failure: Option<&AtomicBool>,
) {
    while let Ok(first) = sealed.recv() {
        let (indices, batch): (Vec<JobIndex>, Vec<Sealed>) =
            std::iter::once(first).chain(sealed.try_iter()).unzip();
        for (index, result) in indices.into_iter().zip(store.commit_sealed(batch)) {
            match &result {
                Ok(record) => store.clear_failure(&record.id),
                Err(_) => {
                    if let Some(stop) = stop_on_failure {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
            let _ = results.send((
                index,
                Report::Done(result.map(Box::new).map_err(|e| e.to_string())),
            ));
        }
    }
}

/// The key of the job's output when the store may stand in for running it.
pub(super) fn cached(
    plan: &Plan,
    store: &Store,
    index: JobIndex,
    id: &str,
    ids: &[Option<String>],
    force: &Force,
) -> Option<String> {
    let job = &plan.graph.jobs[index];
    if force.covers(index, &job.stage) {
        return None;
    }
    if !store.has_declared(id, &plan.lab.stages[&job.stage].outputs) {
        return None;
    }
    let deps = job.deps();
    if job.mode == Mode::Pure && deps.is_empty() {
        // Most jobs of a sweep: a `stat` of `out/` and of each declared output, and no copy
        // of the record.
        return store.is_done(id).then(|| id.to_string());
    }
    let record = store.done(id)?;
    match job.mode {
        Mode::Impure => {
            let sources = plan.sources.get(&job.stage)?;
            if !sources.up_to_date(record.fingerprint.as_deref()?) {
                return None;
            }
        }
        // A pure run's output stands in only once Nix has built the same.
        Mode::Hermetic => _ = record.nix.as_ref()?,
        Mode::Pure => {}
    }
    // Records written before jobs kept their inputs' digest are trusted as they are.
    if let Some(read) = &record.inputs {
        let upstream: Option<Vec<&str>> = deps.iter().map(|dep| ids[*dep].as_deref()).collect();
        if store::inputs_digest(store, upstream?).as_ref() != Some(read) {
            return None;
        }
    }
    plan.key(index, id, store)
}

/// The targets and everything upstream of them.
pub(super) fn selection(plan: &Plan, targets: Option<&[JobIndex]>) -> BTreeSet<JobIndex> {
    let Some(targets) = targets else {
        return (0..plan.graph.jobs.len()).collect();
    };
    let mut selected = BTreeSet::new();
    let mut stack: Vec<JobIndex> = targets.to_vec();
    while let Some(index) = stack.pop() {
        if selected.insert(index) {
            stack.extend(plan.graph.jobs[index].deps());
        }
    }
    selected
}
