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
    /// Shared: a reporter keeps each job's parameters for its labels beside the plan.
    pub params: std::sync::Arc<BTreeMap<String, Value>>,
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
    /// Each job's parameters as JSON, by index: serde_json's maps are sorted, so this is
    /// canonical; it is what a job's id hashes, and one of what tells equal jobs.
    params_json: Vec<String>,
    /// Jobs by a hash of their structure (stage, mode, parameters, inputs): equal jobs are
    /// one. A job whose hash an unequal one had first is in `collided`, looked through one
    /// by one.
    seen: HashMap<u64, JobIndex, std::hash::BuildHasherDefault<AsItself>>,
    collided: Vec<JobIndex>,
    hasher: std::hash::RandomState,
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

    /// The job's parameters as canonical JSON (keys sorted).
    pub fn params_json(&self, job: JobIndex) -> &str {
        &self.params_json[job]
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
            self.params_json.reserve(points.len() * stages.len());
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
            let mut seen = vec![false; self.jobs.len()];
            run_jobs.retain(|j| !std::mem::replace(&mut seen[*j], true));
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
            params.insert(
                k.clone(),
                (*point.get(k.as_str()).unwrap_or(&default)).clone(),
            );
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
        use std::hash::BuildHasher;
        let json = serde_json::to_string(&params).unwrap_or_default();
        let hash = self
            .hasher
            .hash_one((stage.name.as_str(), mode, json.as_str(), &inputs));
        let same = |j: &JobIndex| {
            let job = &self.jobs[*j];
            job.stage == stage.name
                && job.mode == mode
                && self.params_json[*j] == json
                && job.inputs == inputs
        };
        let first = self.seen.get(&hash).copied();
        if let Some(found) = first.iter().chain(&self.collided).find(|j| same(j)) {
            return *found;
        }
        let index = self.jobs.len();
        self.jobs.push(Job {
            stage: stage.name.clone(),
            mode,
            params: params.into(),
            inputs,
        });
        self.params_json.push(json);
        match first {
            Some(_) => self.collided.push(index),
            None => {
                self.seen.insert(hash, index);
            }
        }
        index
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
    let (low, high) = indices
        .iter()
        .fold((usize::MAX, 0), |(l, h), i| (l.min(*i), h.max(*i)));
    // A column of a stage's jobs is mostly a run of indices: a flag each, not a hash each.
    if high - low < 4 * indices.len() {
        let mut seen = vec![false; high - low + 1];
        return indices
            .iter()
            .copied()
            .filter(|i| !std::mem::replace(&mut seen[i - low], true))
            .collect();
    }
    let mut seen = std::collections::HashSet::new();
    indices
        .iter()
        .copied()
        .filter(|i| seen.insert(*i))
        .collect()
}

/// Hashes a hash (a job's structure's, see [`JobGraph::add`]) as itself.
#[derive(Default)]
struct AsItself(u64);

impl std::hash::Hasher for AsItself {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; anything else still hashes, if slowly.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
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
