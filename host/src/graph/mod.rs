//! Expanding a lab into jobs: runs × pipelines × parameter space.
//!
//! Every list in a run's `params` is an axis; the jobs of a run are the Cartesian
//! product of its axes (zip groups advance together). A stage's job takes the run's
//! value for each parameter it declares and its own default otherwise, so a stage that
//! does not use an axis is one job for all its values, unless its upstream differs.
//! Jobs that are structurally equal are one job, within and across runs. Job ids are not
//! computed here: they need plugin digests and upstream keys, see [`id`].
//!
//! A fan-out stage (`foreach = "STAGE:FILE"`) has one job per item of the list that a job
//! of STAGE wrote, at each point: its parameters plus the item's fields as `item.NAME`,
//! and its inputs, but not the index of the item nor the job that wrote it, so an item
//! that stays in a list keeps its job when the list grows or is reordered. A stage that
//! reads a fan-out one to one has one job per item too; a gather (`STAGE[*]`) reads them
//! all, in the list's order. Until a list is known ([`JobGraph::grow`], once the job that
//! writes it is done) what reads its items has no jobs, and the fan-out is
//! [`JobGraph::waiting`]. Growing appends jobs: an index, once given, stays.

pub mod id;
pub mod items;
mod space;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

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

/// One item of a fan-out's list: a JSON object.
pub type Item = serde_json::Map<String, Value>;

/// A fan-out whose list is not known yet: the job that writes it has not run (or is not
/// done). Nothing that reads the fan-out's items is a job yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The job that writes the list.
    pub splitter: JobIndex,
    /// The list's file in that job's output.
    pub file: PathBuf,
    /// The stage that runs once per item, and the most items it takes.
    pub stage: String,
    pub max_items: usize,
}

/// All jobs of the selected runs, upstream before downstream.
#[derive(Debug, Default)]
pub struct JobGraph {
    pub jobs: Vec<Job>,
    /// Each run's jobs, in graph order.
    pub runs: BTreeMap<String, Vec<JobIndex>>,
    /// Fan-outs whose lists are not known yet, in graph order.
    pub waiting: Vec<Waiting>,
    /// Each item's job with the job whose list it is an item of, and the list's file.
    pub listed: BTreeSet<(JobIndex, JobIndex, PathBuf)>,
    /// The lists known, by the job that wrote each and its file.
    lists: BTreeMap<(JobIndex, PathBuf), Vec<Item>>,
    /// What was expanded: the runs and the mode override, for [`JobGraph::grow`].
    expanded: Vec<String>,
    mode: Option<Mode>,
    seen: HashMap<JobKey, JobIndex>,
}

/// A stage's jobs at one point of the space: one job, or one per item of the fan-out it
/// follows; `complete` unless a list they come from is not known yet.
#[derive(Clone)]
struct Lanes {
    jobs: Vec<JobIndex>,
    complete: bool,
}

impl JobGraph {
    /// Expands `runs` of `lab`; `mode` overrides every stage's mode when given. A fan-out
    /// has no jobs until its list is known ([`JobGraph::grow`]).
    pub fn expand(lab: &Lab, runs: &[&str], mode: Option<Mode>) -> JobGraph {
        let mut graph = JobGraph {
            expanded: runs.iter().map(|r| r.to_string()).collect(),
            mode,
            ..JobGraph::default()
        };
        graph.expand_runs(lab);
        graph
    }

    /// Adds lists, each the items of the list `file` that job `splitter` wrote: the jobs
    /// that follow from them are appended, and every job keeps its index.
    pub fn grow(&mut self, lab: &Lab, lists: Vec<(JobIndex, PathBuf, Vec<Item>)>) {
        for (splitter, file, items) in lists {
            self.lists.insert((splitter, file), items);
        }
        self.expand_runs(lab);
    }

    /// The mode of `stage`'s jobs, those of a fan-out not known yet too.
    pub fn mode_of(&self, stage: &crate::lab::Stage) -> Mode {
        self.mode.unwrap_or(stage.mode)
    }

    /// The items of the list `file` of job `splitter`, once known.
    pub fn items(&self, splitter: JobIndex, file: &Path) -> Option<&[Item]> {
        self.lists
            .get(&(splitter, file.to_path_buf()))
            .map(Vec::as_slice)
    }

    /// Expands the runs again with the lists known: equal jobs are found by their
    /// structure, so those there already keep their index and new ones are appended.
    fn expand_runs(&mut self, lab: &Lab) {
        self.waiting.clear();
        self.runs.clear();
        for run_name in self.expanded.clone() {
            let run = &lab.runs[&run_name];
            let points = points(run);
            let mut run_jobs: Vec<JobIndex> = Vec::new();
            // For each stage, its jobs at every point of the space.
            let mut at_point: HashMap<&str, Vec<Lanes>> = HashMap::new();
            let stages = stage_order(lab, &lab.run_stages(run));
            // A job per stage and point, at most (fan-outs aside): the maps are not regrown.
            self.seen.reserve(points.len() * stages.len());
            self.jobs.reserve(points.len() * stages.len());
            for stage in stages {
                let mut column: Vec<Lanes> = Vec::with_capacity(points.len());
                for (p, point) in points.iter().enumerate() {
                    let lanes = self.lanes(lab, stage, p, point, &at_point);
                    column.push(lanes);
                }
                let all: Vec<JobIndex> =
                    column.iter().flat_map(|l| l.jobs.iter().copied()).collect();
                run_jobs.extend(distinct(&all));
                at_point.insert(&stage.name, column);
            }
            let mut seen = std::collections::HashSet::new();
            run_jobs.retain(|j| seen.insert(*j));
            self.runs.insert(run_name, run_jobs);
        }
        let mut seen = std::collections::HashSet::new();
        self.waiting
            .retain(|w| seen.insert((w.splitter, w.file.clone(), w.stage.clone())));
    }

    /// The jobs of `stage` at point `p`.
    fn lanes(
        &mut self,
        lab: &Lab,
        stage: &crate::lab::Stage,
        p: usize,
        point: &space::Point,
        at_point: &HashMap<&str, Vec<Lanes>>,
    ) -> Lanes {
        // Inserted in the stage's order, which is the map's: no sort, no buffer, per job.
        let mut params = BTreeMap::new();
        for (k, default) in &stage.params {
            params.insert(k.clone(), point.get(k).unwrap_or(default).clone());
        }
        let mut fixed = BTreeMap::new();
        // The input whose items this stage follows one to one, if any (the lab allows one).
        let mut follows: Option<(&str, &Lanes)> = None;
        for (name, input) in &stage.inputs {
            let input = match input {
                Input::Path(path) => JobInput::Path(path.clone()),
                Input::Stage(up) => {
                    let lanes = &at_point[up.as_str()][p];
                    if lab.follows_items(up) {
                        follows = Some((name, lanes));
                        continue;
                    }
                    match lanes.jobs.first() {
                        Some(job) if lanes.complete => JobInput::Job(*job),
                        _ => return Lanes::unknown(),
                    }
                }
                Input::Gather(up) => {
                    let column = &at_point[up.as_str()];
                    if column.iter().any(|l| !l.complete) {
                        return Lanes::unknown();
                    }
                    let all: Vec<JobIndex> = column.iter().flat_map(|l| l.jobs.clone()).collect();
                    JobInput::Gather(distinct(&all))
                }
            };
            fixed.insert(name.clone(), input);
        }
        let mode = self.mode_of(stage);
        let mut lanes = Lanes {
            jobs: Vec::new(),
            complete: true,
        };
        if let Some(foreach) = &stage.foreach {
            let splitters = &at_point[foreach.stage.as_str()][p];
            lanes.complete = splitters.complete;
            for splitter in splitters.jobs.clone() {
                let key = (splitter, foreach.file.clone());
                let Some(items) = self.lists.get(&key).cloned() else {
                    lanes.complete = false;
                    self.waiting.push(Waiting {
                        splitter,
                        file: foreach.file.clone(),
                        stage: stage.name.clone(),
                        max_items: foreach.max_items,
                    });
                    continue;
                };
                for item in items {
                    let mut params = params.clone();
                    for (field, value) in item {
                        params.insert(format!("{}{field}", crate::lab::ITEM_PREFIX), value);
                    }
                    let job = self.add(stage, mode, params, fixed.clone());
                    self.listed.insert((splitter, job, foreach.file.clone()));
                    lanes.jobs.push(job);
                }
            }
        } else if let Some((name, upstream)) = follows {
            lanes.complete = upstream.complete;
            for job in upstream.jobs.clone() {
                let mut inputs = fixed.clone();
                inputs.insert(name.to_string(), JobInput::Job(job));
                lanes
                    .jobs
                    .push(self.add(stage, mode, params.clone(), inputs));
            }
        } else {
            lanes.jobs.push(self.add(stage, mode, params, fixed));
        }
        lanes.jobs = distinct(&lanes.jobs);
        lanes
    }

    /// The index of the job, added unless an equal one is there.
    fn add(
        &mut self,
        stage: &crate::lab::Stage,
        mode: Mode,
        params: BTreeMap<String, Value>,
        inputs: BTreeMap<String, JobInput>,
    ) -> JobIndex {
        let job = Job {
            stage: stage.name.clone(),
            mode,
            params,
            inputs,
        };
        let jobs = &mut self.jobs;
        *self.seen.entry(JobKey::of(&job)).or_insert_with(|| {
            jobs.push(job);
            jobs.len() - 1
        })
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
#[derive(Debug, PartialEq, Eq, Hash)]
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

impl Lanes {
    /// Nothing known yet: an input's list is not.
    fn unknown() -> Lanes {
        Lanes {
            jobs: Vec::new(),
            complete: false,
        }
    }
}

fn distinct(indices: &[JobIndex]) -> Vec<JobIndex> {
    if indices.len() < 2 {
        return indices.to_vec();
    }
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
            let ready = stage.upstream().all(|up| placed.contains(up));
            if !placed.contains(stage.name.as_str()) && ready {
                placed.insert(stage.name.as_str());
                order.push(&lab.stages[&stage.name]);
            }
        }
    }
    order
}
