//! The local scheduler: jobs run in-process on `-j N` worker threads, in dependency order.
//!
//! One coordinator owns all job states. A job's id is computed once its upstream keys are
//! known; if the store already has it the job is cached, otherwise it is queued for the
//! workers. A failure skips everything downstream of it and, unless
//! `--continue-on-failure`, stops new jobs from starting.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::execute::{Attempt, execute};
use super::{Event, Force, Options, Summary};
use crate::graph::JobIndex;
use crate::lab::Mode;
use crate::plan::Plan;
use crate::store::{Record, Store};
use crate::wasm::Runtime;
use crate::wasm::host::Observer;

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting,
    Queued,
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
    let mut summary = Summary::default();
    emit(Event::Started {
        jobs: selected.len(),
    });

    let (results_tx, results_rx) = mpsc::channel::<(JobIndex, Result<Record, String>)>();
    let (work_tx, work_rx) = mpsc::channel::<Work>();
    let work_rx = Arc::new(Mutex::new(work_rx));
    let mut running = 0usize;
    let mut stopping = false;

    std::thread::scope(|scope| {
        for _ in 0..options.jobs.max(1) {
            let (work_rx, results_tx, emit) = (work_rx.clone(), results_tx.clone(), emit.clone());
            scope.spawn(move || {
                // The lock is held only while waiting for the next job, not while running it.
                while let Some(Work {
                    index,
                    id,
                    upstream_ids,
                }) = next_work(&work_rx)
                {
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
                        job: index,
                        id: &id,
                        upstream_ids,
                        observer,
                    };
                    let _ = results_tx.send((index, execute(attempt)));
                }
            });
        }
        drop(results_tx);

        let mut pending: VecDeque<JobIndex> = selected.iter().copied().collect();
        // Ready jobs wait here, not in the workers' channel, so that stopping stops them.
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
                    emit(Event::JobSkipped {
                        job: index,
                        stage: jobs[index].stage.clone(),
                        failed_upstream: jobs[*failed].stage.clone(),
                    });
                    pending.extend(&dependents[index]);
                    continue;
                }
                let keys: Vec<Option<String>> = state
                    .iter()
                    .map(|s| match s {
                        State::Done(key) => Some(key.clone()),
                        _ => None,
                    })
                    .collect();
                if !deps.iter().all(|d| keys[*d].is_some()) {
                    continue;
                }
                let id = plan.id(index, &keys).expect("upstream keys are known");
                ids[index] = Some(id.clone());
                if let Some(key) = cached(plan, store, index, &id, &options.force) {
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
                let upstream_ids = deps
                    .iter()
                    .map(|d| (*d, ids[*d].clone().unwrap_or_default()))
                    .collect();
                state[index] = State::Queued;
                ready.push_back(Work {
                    index,
                    id,
                    upstream_ids,
                });
            }
            while running < options.jobs.max(1) && !stopping {
                let Some(work) = ready.pop_front() else { break };
                let _ = work_tx.send(work);
                running += 1;
            }
            if running == 0 {
                break;
            }
            let Ok((index, result)) = results_rx.recv_timeout(Duration::from_millis(100)) else {
                if options.interrupted.load(Ordering::Relaxed) && !stopping {
                    stopping = true;
                    summary.interrupted = true;
                    runtime.interrupt();
                }
                continue;
            };
            running -= 1;
            let stage = jobs[index].stage.clone();
            let id = ids[index].clone().unwrap_or_default();
            match result {
                Ok(record) => {
                    let key = if jobs[index].mode == Mode::Impure {
                        record.hash.clone()
                    } else {
                        id.clone()
                    };
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
                    emit(Event::JobFailed {
                        job: index,
                        id,
                        stage,
                        failure,
                    });
                    stopping |= !options.continue_on_failure;
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

/// The key of the job's output when the store may stand in for running it.
pub(super) fn cached(
    plan: &Plan,
    store: &Store,
    index: JobIndex,
    id: &str,
    force: &Force,
) -> Option<String> {
    let job = &plan.graph.jobs[index];
    let forced = match force {
        Force::None => false,
        Force::All => true,
        Force::Stage(stage) => *stage == job.stage,
        Force::Jobs(jobs) => jobs.contains(&index),
    };
    if forced {
        return None;
    }
    let record = store.done(id)?;
    if job.mode == Mode::Impure {
        let current = plan.fingerprints.get(&job.stage)?;
        if record.fingerprint.as_ref() != Some(current) {
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
