//! Expanding a lab into jobs: runs × pipelines × parameter space.
//!
//! Every list in a run's `params` is an axis; the jobs of a run are the Cartesian
//! product of its axes (zip groups advance together). A stage's job takes the run's
//! value for each parameter it declares and its own default otherwise, so a stage that
//! does not use an axis is one job for all its values, unless its upstream differs.
//! Jobs that are structurally equal are one job, within and across runs. Job ids are not
//! computed here: they need plugin digests and upstream keys, see [`id`].

pub mod id;
mod space;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde_json::Value;

use crate::lab::{Input, Lab, Mode};

pub use space::points;

/// Index of a job in [`JobGraph::jobs`].
pub type JobIndex = usize;

/// One input of a job, mounted at `/in/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobInput {
    Path(PathBuf),
    Job(JobIndex),
    Gather(Vec<JobIndex>),
}

/// A stage with concrete parameters and inputs.
#[derive(Debug, Clone)]
pub struct Job {
    pub stage: String,
    pub mode: Mode,
    pub params: BTreeMap<String, Value>,
    pub inputs: BTreeMap<String, JobInput>,
}

impl Job {
    /// Upstream jobs, each once.
    pub fn deps(&self) -> Vec<JobIndex> {
        let mut deps: Vec<JobIndex> = self
            .inputs
            .values()
            .flat_map(|input| match input {
                JobInput::Path(_) => Vec::new(),
                JobInput::Job(j) => vec![*j],
                JobInput::Gather(js) => js.clone(),
            })
            .collect();
        deps.sort_unstable();
        deps.dedup();
        deps
    }
}

/// All jobs of the selected runs, upstream before downstream.
#[derive(Debug, Default)]
pub struct JobGraph {
    pub jobs: Vec<Job>,
    /// Each run's jobs, in graph order.
    pub runs: BTreeMap<String, Vec<JobIndex>>,
}

impl JobGraph {
    /// Expands `runs` of `lab`; `mode` overrides every stage's mode when given.
    pub fn expand(lab: &Lab, runs: &[&str], mode: Option<Mode>) -> JobGraph {
        let mut graph = JobGraph::default();
        let mut seen: HashMap<JobKey, JobIndex> = HashMap::new();
        for run_name in runs {
            let run = &lab.runs[*run_name];
            let points = points(run);
            let mut run_jobs: Vec<JobIndex> = Vec::new();
            // For each stage, the job at every point of the space.
            let mut at_point: HashMap<&str, Vec<JobIndex>> = HashMap::new();
            for stage in stage_order(lab, &lab.run_stages(run)) {
                let mut column = Vec::with_capacity(points.len());
                for point in &points {
                    let params = stage
                        .params
                        .iter()
                        .map(|(k, default)| (k.clone(), point.get(k).unwrap_or(default).clone()))
                        .collect();
                    let inputs = stage
                        .inputs
                        .iter()
                        .map(|(name, input)| {
                            let input = match input {
                                Input::Path(path) => JobInput::Path(path.clone()),
                                Input::Stage(up) => {
                                    JobInput::Job(at_point[up.as_str()][column.len()])
                                }
                                Input::Gather(up) => {
                                    JobInput::Gather(distinct(&at_point[up.as_str()]))
                                }
                            };
                            (name.clone(), input)
                        })
                        .collect();
                    let job = Job {
                        stage: stage.name.clone(),
                        mode: mode.unwrap_or(stage.mode),
                        params,
                        inputs,
                    };
                    let index = *seen.entry(JobKey::of(&job)).or_insert_with(|| {
                        graph.jobs.push(job);
                        graph.jobs.len() - 1
                    });
                    column.push(index);
                }
                run_jobs.extend(distinct(&column));
                at_point.insert(&stage.name, column);
            }
            graph.runs.insert(run_name.to_string(), run_jobs);
        }
        graph
    }

    /// For each job, the jobs that read it.
    pub fn dependents(&self) -> Vec<Vec<JobIndex>> {
        let mut dependents = vec![Vec::new(); self.jobs.len()];
        for (index, job) in self.jobs.iter().enumerate() {
            for dep in job.deps() {
                dependents[dep].push(index);
            }
        }
        dependents
    }
}

/// Structural identity, for merging equal jobs before their ids are known.
#[derive(PartialEq, Eq, Hash)]
struct JobKey {
    stage: String,
    mode: Mode,
    params: String,
    inputs: Vec<(String, JobInput)>,
}

impl JobKey {
    fn of(job: &Job) -> JobKey {
        JobKey {
            stage: job.stage.clone(),
            mode: job.mode,
            params: serde_json::to_string(&job.params).unwrap_or_default(),
            inputs: job
                .inputs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

fn distinct(indices: &[JobIndex]) -> Vec<JobIndex> {
    let mut seen = std::collections::HashSet::new();
    indices
        .iter()
        .copied()
        .filter(|i| seen.insert(*i))
        .collect()
}

/// The run's stages ordered so that every stage comes after the stages it reads.
fn stage_order<'a>(lab: &'a Lab, stages: &[&'a crate::lab::Stage]) -> Vec<&'a crate::lab::Stage> {
    let mut order: Vec<&crate::lab::Stage> = Vec::new();
    let mut placed = std::collections::BTreeSet::new();
    // The lab was checked for cycles, so every pass places at least one stage.
    while order.len() < stages.len() {
        for stage in stages {
            let ready = stage
                .inputs
                .values()
                .filter_map(Input::upstream)
                .all(|up| placed.contains(up));
            if !placed.contains(stage.name.as_str()) && ready {
                placed.insert(stage.name.as_str());
                order.push(&lab.stages[&stage.name]);
            }
        }
    }
    order
}
