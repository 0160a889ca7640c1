//! Runs with fan-outs: rounds of the dispatcher over a plan that grows.
//!
//! A fan-out stage's jobs are known only once the job that writes its list is done. A run
//! is therefore one or more rounds: each round is one run of the dispatcher (on whichever
//! executor) over the plan as it is; after it, the lists that its jobs wrote are read and
//! the plan grows by the jobs that follow from them ([`Plan::grow`]), which the next round
//! runs. Growing appends jobs, so indices stay; a job done in an earlier round is done for
//! the next one too ([`Plan::earlier`]): the dispatcher takes it as a cache hit, which this
//! module does not report again, and it is never forced or run twice.
//!
//! A list is checked when the job that writes it is sealed ([`check_lists`]), so a bad
//! list fails that job, with its file and what is wrong, and nothing that reads its items
//! is ever a job. A round after a failure runs only the new jobs that no failed or skipped
//! job is upstream of, and only with `--continue-on-failure`; an interrupt ends the run.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::decide::PlanJobs;
use super::dispatch::{Emit, selection};
use super::{Event, Failure, FailureKind, Force, Options, Summary};
use crate::graph::JobIndex;
use crate::plan::{Plan, PlanError};
use crate::store::Store;

/// What a run asks of each round: the targets and what is forced, on the plan as it is
/// (see [`rounds`]).
pub struct Selection<'a> {
    pub targets: &'a dyn Fn(&Plan) -> Option<Vec<JobIndex>>,
    pub force: &'a dyn Fn(&Plan) -> Force,
}

/// Runs the plan in rounds until no fan-out grows it: `round` runs the selected jobs once,
/// `grown` hears of the jobs a round adds (from the index given) before they run. Returns
/// the counts of all rounds, each job counted once.
pub fn rounds<E: From<PlanError>>(
    plan: &mut Plan,
    store: &Store,
    options: &mut Options,
    pick: Selection,
    emit: Emit,
    mut grown: impl FnMut(&Plan, JobIndex),
    mut round: impl FnMut(&Plan, &Options, Emit) -> Result<Summary, E>,
) -> Result<Summary, E> {
    let mut total = Summary::default();
    // Every job settled so far, and whether it is done.
    let settled: Arc<Mutex<HashMap<JobIndex, Settled>>> = Arc::default();
    let mut first_new: Option<JobIndex> = None;
    loop {
        // Only a fan-out whose list is not known yet grows the plan after this round: then
        // what this round settles stands for the next (a sweep keeps no such account).
        let grows = !plan.graph.waiting.is_empty();
        let repeated: BTreeSet<JobIndex> = plan.earlier.keys().copied().collect();
        let emit_round: Emit = {
            let (emit, settled, repeated) = (emit.clone(), settled.clone(), repeated.clone());
            let started = first_new.map(|_| settled.lock().map_or(0, |s| s.len()));
            Arc::new(move |event: Event| {
                if let Some(job) = settled_job(&event) {
                    if repeated.contains(&job) {
                        return;
                    }
                    if grows && let Ok(mut settled) = settled.lock() {
                        settled.insert(job, Settled::of(&event));
                    }
                }
                match (event, started) {
                    // A later round's total counts what the earlier ones settled.
                    (Event::Started { jobs }, Some(before)) => {
                        let again = repeated.len().min(jobs);
                        emit(Event::Started {
                            jobs: before + jobs - again,
                        })
                    }
                    (event, _) => emit(event),
                }
            })
        };
        let summary = round(plan, options, emit_round)?;
        // The jobs of earlier rounds that this one selected were reported as cached.
        let again = match repeated.is_empty() {
            true => 0,
            false => selection(&PlanJobs::new(plan, store), options.targets.as_deref())
                .iter()
                .filter(|j| repeated.contains(j))
                .count(),
        };
        total.ran += summary.ran;
        total.cached += summary.cached.saturating_sub(again);
        total.failed += summary.failed;
        total.skipped += summary.skipped;
        total.not_run += summary.not_run;
        total.interrupted |= summary.interrupted;
        let failed = summary.failed + summary.skipped > 0;
        if summary.interrupted || (failed && !options.continue_on_failure) || !grows {
            return Ok(total);
        }
        // What this round did stands for the next.
        let settled_now = settled.lock().map(|s| s.clone()).unwrap_or_default();
        for (job, outcome) in &settled_now {
            if let Settled::Done(id) = outcome
                && let Some(key) = plan.key(*job, id, store)
            {
                plan.earlier.insert(*job, key);
            }
        }
        let first = plan.grow(store)?;
        if first == plan.graph.jobs.len() {
            return Ok(total);
        }
        first_new = Some(first);
        grown(plan, first);
        let fresh = runnable(plan, first, &settled_now);
        let targets = match (pick.targets)(plan) {
            Some(targets) => targets.into_iter().filter(|j| fresh.contains(j)).collect(),
            None => fresh.iter().copied().collect(),
        };
        options.targets = Some(targets);
        options.force = match (pick.force)(plan) {
            Force::None => Force::None,
            Force::All => Force::Jobs(fresh.clone()),
            Force::Stage(stage) => Force::Jobs(
                fresh
                    .iter()
                    .copied()
                    .filter(|j| plan.graph.jobs[*j].stage == stage)
                    .collect(),
            ),
            Force::Jobs(jobs) => Force::Jobs(jobs.intersection(&fresh).copied().collect()),
        };
    }
}

/// How a job ended in a round.
#[derive(Debug, Clone)]
enum Settled {
    /// Ran or cached, with its id.
    Done(String),
    /// Failed, skipped or cut off.
    NotDone,
}

impl Settled {
    fn of(event: &Event) -> Settled {
        match event {
            Event::JobFinished { id, .. } | Event::JobCached { id, .. } => {
                Settled::Done(id.clone())
            }
            _ => Settled::NotDone,
        }
    }
}

/// The job an event settles, if it settles one.
fn settled_job(event: &Event) -> Option<JobIndex> {
    match event {
        Event::JobFinished { job, .. }
        | Event::JobCached { job, .. }
        | Event::JobFailed { job, .. }
        | Event::JobSkipped { job, .. } => Some(*job),
        _ => None,
    }
}

/// The jobs from `first` on that may run: none of their upstream jobs is one of an
/// earlier round that did not end done.
fn runnable(
    plan: &Plan,
    first: JobIndex,
    settled: &HashMap<JobIndex, Settled>,
) -> BTreeSet<JobIndex> {
    let jobs = &plan.graph.jobs;
    let mut blocked = vec![false; jobs.len()];
    let mut fresh = BTreeSet::new();
    // Appended jobs come after their upstream jobs.
    for index in first..jobs.len() {
        blocked[index] = jobs[index].deps().iter().any(|dep| {
            blocked[*dep]
                || (*dep < first
                    && !plan.earlier.contains_key(dep)
                    && !matches!(settled.get(dep), Some(Settled::Done(_))))
        });
        if !blocked[index] {
            fresh.insert(index);
        }
    }
    fresh
}

/// Checks every list the job of `stage` wrote in `out` for the fan-outs that run over
/// it; the failure names the file and what is wrong.
pub fn check_lists(plan: &Plan, stage: &str, out: &Path) -> Result<(), Failure> {
    for fanout in plan.lab.stages.values() {
        let Some(foreach) = fanout.foreach.as_ref().filter(|f| f.stage == stage) else {
            continue;
        };
        if !plan.stages.contains_key(&fanout.name) {
            continue;
        }
        crate::graph::items::read(out, &foreach.file, foreach.max_items).map_err(|message| {
            Failure::new(
                FailureKind::BadList,
                format!(
                    "the list {} it wrote for stage `{}` {message}; nothing that reads its items runs",
                    foreach.file.display(),
                    fanout.name
                ),
            )
        })?;
    }
    Ok(())
}
