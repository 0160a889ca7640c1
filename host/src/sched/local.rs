//! The local executor: jobs run in-process on `-j N` worker threads, as the dispatcher
//! hands them over (see [`super::dispatch`]).
//!
//! A worker that finished a job seals its output and hands it to one committer thread,
//! then takes the next job at once; the committer commits whatever was sealed since its
//! last round as one batch (see [`crate::store::Store::commit_sealed`]), so a run of many
//! small jobs pays for one flush to disk per batch, not several per job. A job is done, and
//! its dependents may start, only once its batch is committed.
//!
//! Workers keep one job queued each beyond the one they run, so that none waits for the
//! dispatcher between jobs, unless the run's CPU and memory budget can bind (see
//! [`admit::local_budget`]): then the dispatcher hands over only what runs, `-j` jobs at
//! most, within the budget. A shared stop flag tells them not to start what is queued: the
//! dispatcher sets it to stop the run, and, without `--continue-on-failure`, a failure sets
//! it where it happens, before anyone hears of it, so that no job starts after one failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::admit::{self, Budget};
use super::decide::PlanJobs;
use super::dispatch::{self, Admission, Emit, Executor, Handoff, Report};
use super::execute::{Attempt, execute};
use super::{Failure, FailureKind, Options, Summary};
use crate::graph::JobIndex;
use crate::plan::Plan;
use crate::store::{Sealed, Store};
use crate::wasm::Runtime;
use crate::wasm::host::Observer;

/// The runtime jobs run in, as the executor asks for it: a run that only finds its jobs
/// in the store need not make one (nor load its plugins).
pub trait Runtimes: Sync {
    /// The runtime, made now if it is not yet; `None` when it could not be made (whoever
    /// made it says why), and then no job is started.
    fn get(&self) -> Option<&Runtime>;
    /// The runtime, if it was made.
    fn made(&self) -> Option<&Runtime>;
}

impl Runtimes for Runtime {
    fn get(&self) -> Option<&Runtime> {
        Some(self)
    }
    fn made(&self) -> Option<&Runtime> {
        Some(self)
    }
}

/// Runs the plan's selected jobs in this process; returns the counts.
pub fn run(
    plan: &Plan,
    store: &Store,
    runtime: &dyn Runtimes,
    options: &Options,
    emit: Emit,
) -> Summary {
    let jobs = PlanJobs::new(plan, store);
    with_executor(plan, store, runtime, options, |executor| {
        dispatch::run(&jobs, executor, options, emit)
    })
}

/// Starts the workers and the committer, gives `f` the executor over them, and waits for
/// them once `f` is done.
pub fn with_executor<R>(
    plan: &Plan,
    store: &Store,
    runtime: &dyn Runtimes,
    options: &Options,
    f: impl FnOnce(&mut dyn Executor) -> R,
) -> R {
    let (reports_tx, reports) = mpsc::channel::<Report>();
    let (sealed_tx, sealed_rx) = mpsc::channel::<(JobIndex, Sealed)>();
    let (work_tx, work_rx) = mpsc::channel::<Handoff>();
    let work_rx = Arc::new(Mutex::new(work_rx));
    let stop = AtomicBool::new(false);
    let stop_on_failure = !options.continue_on_failure;
    let workers = options.jobs.max(1);
    std::thread::scope(|scope| {
        {
            let reports_tx = reports_tx.clone();
            let stop = &stop;
            scope.spawn(move || {
                commit_batches(
                    store,
                    &sealed_rx,
                    &reports_tx,
                    stop_on_failure.then_some(stop),
                );
            });
        }
        for _ in 0..workers {
            let (work_rx, reports_tx) = (work_rx.clone(), reports_tx.clone());
            let (sealed_tx, stop) = (sealed_tx.clone(), &stop);
            scope.spawn(move || {
                // The lock is held only while waiting for the next job, not while running it.
                while let Some(Handoff {
                    job,
                    id,
                    attempt: number,
                    upstream_ids,
                }) = next_work(&work_rx)
                {
                    if stop.load(Ordering::Relaxed) {
                        let _ = reports_tx.send(Report::NotStarted(job));
                        continue;
                    }
                    // Handed over only once the runtime was made.
                    let Some(runtime) = runtime.made() else {
                        let _ = reports_tx.send(Report::NotStarted(job));
                        continue;
                    };
                    let _ = reports_tx.send(Report::Started(job));
                    let observer = Arc::new(ReportObserver {
                        job,
                        reports: reports_tx.clone(),
                    });
                    let attempt = Attempt {
                        plan,
                        store,
                        runtime,
                        nix: options.nix.as_deref(),
                        job,
                        id: &id,
                        attempt: number,
                        upstream_ids,
                        observer,
                        guard: options.guard.as_deref(),
                    };
                    match execute(attempt) {
                        // The dispatcher hears of it before the committer can finish it.
                        Ok(sealed) => {
                            let _ = reports_tx.send(Report::Sealed(job));
                            let _ = sealed_tx.send((job, sealed));
                        }
                        Err(failure) => {
                            // A failure that will be retried stops nothing.
                            let stage = &plan.lab.stages[&plan.graph.jobs[job].stage];
                            let last = failure.kind.is_final(number, options.retries_of(stage));
                            if (stop_on_failure && last) || failure.kind.halts_run() {
                                stop.store(true, Ordering::Relaxed);
                            }
                            let _ = reports_tx.send(Report::Failed(job, failure));
                        }
                    }
                }
            });
        }
        drop(reports_tx);
        drop(sealed_tx);
        let slots = workers * 2;
        let stages = plan.stages.keys().map(|name| {
            let stage = &plan.lab.stages[name];
            (stage, options.retries_of(stage))
        });
        // A budget that binds takes the jobs queued ahead of the workers: what is handed
        // over is what runs.
        let budget = admit::local_budget(stages, workers, slots, options.mem);
        let mut executor = Local {
            work: Some(work_tx),
            reports,
            stop: &stop,
            runtime,
            slots: if budget.is_some() { workers } else { slots },
            budget,
        };
        let result = f(&mut executor);
        // The workers end once no more work can come.
        executor.work = None;
        result
    })
}

struct Local<'a> {
    work: Option<mpsc::Sender<Handoff>>,
    reports: mpsc::Receiver<Report>,
    stop: &'a AtomicBool,
    runtime: &'a dyn Runtimes,
    slots: usize,
    budget: Option<Budget>,
}

impl Executor for Local<'_> {
    fn admission(&self) -> Admission {
        Admission {
            slots: Some(self.slots),
            // Impure jobs all build in the one project directory.
            impure_alone: true,
            chain: false,
            retries_itself: false,
            budget: self.budget,
        }
    }

    fn start(&mut self, offered: Vec<Handoff>) -> Vec<Handoff> {
        // Without a runtime nothing starts: the dispatcher ends the run with them not run.
        if offered.is_empty() || self.runtime.get().is_none() {
            return offered;
        }
        if let Some(work) = &self.work {
            for handoff in offered {
                let _ = work.send(handoff);
            }
        }
        Vec::new()
    }

    fn wait(&mut self, timeout: Duration) -> Vec<Report> {
        let Ok(first) = self.reports.recv_timeout(timeout) else {
            return Vec::new();
        };
        let mut reports = vec![first];
        reports.extend(self.reports.try_iter());
        reports
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn interrupt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(runtime) = self.runtime.made() {
            runtime.interrupt();
        }
    }
}

fn next_work(work: &Mutex<mpsc::Receiver<Handoff>>) -> Option<Handoff> {
    work.lock().ok()?.recv().ok()
}

/// A plugin's progress and warnings, on their way to the dispatcher.
struct ReportObserver {
    job: JobIndex,
    reports: mpsc::Sender<Report>,
}

impl Observer for ReportObserver {
    fn progress(&self, done: u64, total: u64) {
        let _ = self.reports.send(Report::Progress {
            job: self.job,
            done,
            total,
        });
    }
    fn warn(&self, message: &str) {
        let _ = self.reports.send(Report::Warning {
            job: self.job,
            message: message.into(),
        });
    }
}

/// The committer: commits every output sealed since its last round as one batch, until
/// the workers are gone and nothing is left.
fn commit_batches(
    store: &Store,
    sealed: &mpsc::Receiver<(JobIndex, Sealed)>,
    reports: &mpsc::Sender<Report>,
    stop_on_failure: Option<&AtomicBool>,
) {
    while let Ok(first) = sealed.recv() {
        let (indices, batch): (Vec<JobIndex>, Vec<Sealed>) =
            std::iter::once(first).chain(sealed.try_iter()).unzip();
        for (job, result) in indices.into_iter().zip(store.commit_sealed(batch)) {
            let report = match result {
                Ok(record) => {
                    store.clear_failure(&record.id);
                    Report::Committed(job, Box::new(record))
                }
                Err(e) => {
                    if let Some(stop) = stop_on_failure {
                        stop.store(true, Ordering::Relaxed);
                    }
                    Report::Failed(job, Failure::new(FailureKind::Store, e.to_string()))
                }
            };
            let _ = reports.send(report);
        }
    }
}
