//! What `repx run TARGET…` runs: runs, stages and job-id prefixes, each with what it needs.
//!
//! A target is looked up as a run first, then as a stage, then as the prefix of a job id. A
//! name that is both a run and a stage is the run (the seed example's run `build` is also
//! its first stage), with a note saying so; `--stage NAME` names the stage. A stage target
//! is every job of that stage in the runs that have it; the scheduler adds what they need.
//! For a stage whose jobs come from a fan-out's list not written yet, that is the job
//! that writes the list, then the stage's jobs once it is.

use std::collections::BTreeSet;

use super::error::{CliError, invalid};
use crate::graph::{JobGraph, JobIndex};
use crate::lab::{Lab, Mode, did_you_mean};
use crate::plan::Plan;
use crate::store::Store;

/// The jobs named on the command line, before their upstream jobs are added.
#[derive(Debug, Default)]
pub(super) struct Targets {
    runs: Vec<String>,
    stages: BTreeSet<String>,
    /// Full job ids.
    ids: Vec<String>,
}

impl Targets {
    /// The indices in `plan` of the jobs targeted.
    pub(super) fn indices(&self, plan: &Plan, store: &Store) -> Vec<JobIndex> {
        let ids = if self.ids.is_empty() {
            Vec::new()
        } else {
            plan.static_ids(store)
        };
        let mut chosen: BTreeSet<JobIndex> = self
            .runs
            .iter()
            .filter_map(|run| plan.graph.runs.get(run))
            .flatten()
            .copied()
            .collect();
        // A stage that follows a fan-out whose list is not written yet has no jobs until
        // the job that writes the list is done: that job is targeted now, and the rounds
        // after it target the stage's jobs as they appear (see `sched::fanout`).
        let needed = upstream_stages(&plan.lab, &self.stages);
        for waiting in &plan.graph.waiting {
            if needed.contains(&waiting.stage) {
                chosen.insert(waiting.splitter);
            }
        }
        for (index, job) in plan.graph.jobs.iter().enumerate() {
            let by_id = ids
                .get(index)
                .and_then(Option::as_ref)
                .is_some_and(|id| self.ids.contains(id));
            if by_id || self.stages.contains(&job.stage) {
                chosen.insert(index);
            }
        }
        chosen.into_iter().collect()
    }
}

/// `stages` and every stage they read from, however far upstream.
fn upstream_stages(lab: &Lab, stages: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = stages.clone();
    let mut todo: Vec<&str> = stages.iter().map(String::as_str).collect();
    while let Some(stage) = todo.pop() {
        for up in lab.stages[stage].upstream() {
            if found.insert(up.to_string()) {
                todo.push(up);
            }
        }
    }
    found
}

/// The runs to expand and, when a stage or a job was named, the jobs to run (with what
/// they need). Only runs named: those runs whole, as before.
pub(super) fn select(
    lab: &Lab,
    store: &Store,
    targets: &[String],
    stage_flags: &[String],
    mode: Option<Mode>,
) -> Result<(Vec<String>, Option<Targets>), CliError> {
    let all_runs: Vec<String> = lab.runs.keys().cloned().collect();
    if targets.is_empty() && stage_flags.is_empty() {
        return Ok((all_runs, None));
    }
    let mut chosen = Targets::default();
    let mut prefixes = Vec::new();
    for target in targets {
        if lab.runs.contains_key(target) {
            if lab.stages.contains_key(target) {
                errln!(
                    "note: `{target}` is a run and a stage: running the run; `--stage {target}` \
                     runs the stage's jobs and what they need"
                );
            }
            chosen.runs.push(target.clone());
        } else if lab.stages.contains_key(target) {
            chosen.stages.insert(target.clone());
        } else {
            prefixes.push(target);
        }
    }
    for stage in stage_flags {
        if !lab.stages.contains_key(stage) {
            let hint = did_you_mean(stage, lab.stages.keys().map(String::as_str));
            return Err(invalid(format!(
                "--stage {stage}: no stage `{stage}` in {}{hint}",
                lab.file.display()
            )));
        }
        chosen.stages.insert(stage.clone());
    }
    if chosen.stages.is_empty() && prefixes.is_empty() {
        return Ok((chosen.runs.clone(), None));
    }
    let runs_of = |stage: &str| -> Vec<String> {
        lab.runs
            .values()
            .filter(|run| lab.run_stages(run).iter().any(|s| s.name == stage))
            .map(|run| run.name.clone())
            .collect()
    };
    let mut expand: BTreeSet<String> = chosen.runs.iter().cloned().collect();
    for stage in &chosen.stages {
        let runs = runs_of(stage);
        if runs.is_empty() {
            return Err(invalid(format!(
                "stage `{stage}` is in no run's pipelines, so it has no jobs: add it to a \
                 pipeline of a run in {}",
                lab.file.display()
            )));
        }
        expand.extend(runs);
    }
    if !prefixes.is_empty() {
        // Job ids need the whole graph resolved; expand every run to find them.
        let graph = JobGraph::expand(
            lab,
            &all_runs.iter().map(String::as_str).collect::<Vec<_>>(),
            mode,
        );
        let plan = Plan::new(lab.clone(), graph, store)?;
        let ids: Vec<String> = plan.static_ids(store).into_iter().flatten().collect();
        for prefix in prefixes {
            let matching: Vec<&String> = ids
                .iter()
                .filter(|id| id.starts_with(prefix.as_str()))
                .collect();
            match matching.as_slice() {
                [one] => chosen.ids.push((*one).clone()),
                [] => {
                    let names = lab.runs.keys().chain(lab.stages.keys());
                    let hint = did_you_mean(prefix, names.map(String::as_str));
                    return Err(invalid(format!(
                        "`{prefix}` is neither a run nor a stage in {} nor the prefix of a job \
                         id{hint}; see `repx list runs` and `repx list jobs`",
                        lab.file.display()
                    )));
                }
                many => {
                    return Err(invalid(format!(
                        "job id prefix `{prefix}` matches {} jobs: give more digits",
                        many.len()
                    )));
                }
            }
        }
        expand.extend(all_runs);
    }
    Ok((expand.into_iter().collect(), Some(chosen)))
}
