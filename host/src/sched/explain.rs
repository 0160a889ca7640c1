//! What a run would do, decided by the dispatcher's own rules without running anything:
//! `repx run --dry-run`, and each job's [`JobState`], the one state `list jobs`,
//! `results`, `report` and `viz` show.
//!
//! The dispatcher runs against an executor that runs nothing: each job handed to it counts
//! as done at once, with the output it has in the store now (for an impure job, whose
//! output decides the ids downstream, a stand-in). So jobs downstream of a job that would
//! run are decided as if it produced what it produced last time; below an impure job that
//! would run, nothing can be known but that they wait for it ([`Planned::Waits`]).
//! Nothing here writes the store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::decide::PlanJobs;
use super::dispatch::{self, Admission, Emit, Executor, Handoff, Report};
use super::{Event, Options, Reason};
use crate::lab::Mode;
use crate::plan::Plan;
use crate::store::{Record, Store};

/// What a run would do with one job.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// Not selected.
    Unselected,
    /// The store stands in for it.
    Cached { id: String },
    /// It would run, for this reason.
    Run { id: String, reason: Reason },
    /// Below an impure job that would run: its id waits for that job's output.
    Waits { upstream: String },
}

/// What a run with `options` would do with each job of `plan`, by index.
pub fn explain(plan: &Plan, store: &Store, options: &Options) -> Vec<Planned> {
    let jobs = PlanJobs::new(plan, store);
    let n = plan.graph.jobs.len();
    let planned = Arc::new(Mutex::new(vec![Planned::Unselected; n]));
    let emit: Emit = {
        let planned = planned.clone();
        Arc::new(move |event| {
            let (job, outcome) = match event {
                Event::JobCached { job, id, .. } => (job, Planned::Cached { id }),
                Event::JobStarted {
                    job,
                    id,
                    reason: Some(reason),
                    ..
                } => (job, Planned::Run { id, reason }),
                _ => return,
            };
            planned.lock().unwrap_or_else(|e| e.into_inner())[job] = outcome;
        })
    };
    let mut dry = Dry {
        plan,
        held: Vec::new(),
    };
    dispatch::run(&jobs, &mut dry, options, emit);
    let mut planned = planned.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Below an impure job that would run, ids follow from a stand-in: they wait for it.
    for index in 0..n {
        let waits = plan.graph.jobs[index].deps().into_iter().find_map(|d| {
            let impure_runs = plan.graph.jobs[d].mode == Mode::Impure
                && matches!(planned[d], Planned::Run { .. });
            match &planned[d] {
                Planned::Waits { upstream } => Some(upstream.clone()),
                _ if impure_runs => Some(plan.graph.jobs[d].stage.clone()),
                _ => None,
            }
        });
        if let Some(upstream) = waits
            && planned[index] != Planned::Unselected
        {
            planned[index] = Planned::Waits { upstream };
        }
    }
    planned
}

/// Where a job stands, by the rule `repx run` acts on: done only when a run would take it
/// from the store (an impure job whose sources changed is not, even with its output still
/// there), failed or interrupted when its last attempt was, else to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Done,
    Failed,
    Interrupted,
    Todo,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Interrupted => "interrupted",
            JobState::Todo => "todo",
        }
    }
}

/// The state of every job of `plan`, by index: what a run of every job would decide.
pub fn states(plan: &Plan, store: &Store) -> Vec<JobState> {
    explain(plan, store, &Options::explain())
        .into_iter()
        .map(|planned| match planned {
            Planned::Cached { .. } => JobState::Done,
            // Whatever else makes it run: a success clears a failure, so a failure kept
            // is its last run's (an impure job keeps its id across edits).
            Planned::Run { id, .. } if store.failed_dir(&id).is_dir() => {
                match store.was_interrupted(&id) {
                    true => JobState::Interrupted,
                    false => JobState::Failed,
                }
            }
            _ => JobState::Todo,
        })
        .collect()
}

/// The executor that runs nothing: every job it is handed is done at once.
struct Dry<'a> {
    plan: &'a Plan,
    held: Vec<Handoff>,
}

impl Executor for Dry<'_> {
    fn admission(&self) -> Admission {
        Admission {
            slots: None,
            impure_alone: false,
            chain: false,
            retries_itself: false,
            budget: None,
        }
    }

    fn start(&mut self, offered: Vec<Handoff>) -> Vec<Handoff> {
        self.held.extend(offered);
        Vec::new()
    }

    fn wait(&mut self, _timeout: Duration) -> Vec<Report> {
        let mut reports = Vec::new();
        for handoff in self.held.drain(..) {
            let job = &self.plan.graph.jobs[handoff.job];
            reports.push(Report::Started(handoff.job));
            let record = Record {
                // An impure job's key is its output's hash: a stand-in no job has.
                hash: format!("(the output {} would make)", handoff.id),
                stage: job.stage.clone(),
                mode: job.mode,
                params: job
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
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
                id: handoff.id,
            };
            reports.push(Report::Committed(handoff.job, Box::new(record)));
        }
        reports
    }

    fn stop(&mut self) {}

    fn interrupt(&mut self) {}
}
