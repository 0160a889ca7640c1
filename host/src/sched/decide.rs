//! What the dispatcher asks of a plan and its store: ids, the cache rule and why a job
//! runs, upstream ids.
//!
//! The cache rule: a job's output stands in for running it when the store holds it with
//! every declared output, and
//! - for an impure job, the files it depends on are as they were when it ran;
//! - for a hermetic job, Nix has built the same (a pure run's output stands in only then);
//! - for a job with upstream jobs, it read exactly the outputs its upstream has now (records
//!   written before jobs kept their inputs' digest are trusted as they are);
//! - for a job that wrote a fan-out's list, the fan-out takes that list.
//!
//! Why a job that is not cached runs ([`Reason`]) is told against its own record when the
//! store has one (an output missing or changed, sources changed, an upstream output
//! changed), else against the last job of its stage at the same point of the run (the
//! record of the stage with the same parameters, else the latest with the most of them):
//! a parameter, the plugin, a tool, the mode, else what it reads upstream. A job with none
//! before it never ran; one whose last attempt failed failed last time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use super::dispatch::{Decision, Jobs};
use super::{Reason, ReasonKind};
use crate::graph::JobIndex;
use crate::graph::JobInput;
use crate::lab::Mode;
use crate::plan::Plan;
use crate::store::{self, Record, Store};

/// How many changed files a reason names.
const FILES_NAMED: usize = 5;

/// A plan's jobs, decided against `store`.
pub struct PlanJobs<'a> {
    plan: &'a Plan,
    store: &'a Store,
    /// The store's records by stage: read once, when a first job runs.
    by_stage: OnceLock<HashMap<String, StageRecords>>,
    /// Jobs decided ahead ([`Jobs::ahead`]), by index: each answer is taken once, and a
    /// job asked about again is decided afresh.
    ahead: Mutex<Vec<Ahead>>,
}

/// A job decided ahead of the dispatcher: its id, and whether the store stands in for it.
#[derive(Default)]
struct Ahead {
    id: Option<String>,
    cached: Option<bool>,
}

/// Below this many jobs to decide, deciding ahead on other threads gains nothing.
const AHEAD_AT_LEAST: usize = 512;

/// One stage's records, newest first, and the newest for each set of parameters.
#[derive(Default)]
struct StageRecords {
    newest_first: Vec<Record>,
    /// By the parameters' canonical JSON (keys sorted): an index into `newest_first`.
    by_params: HashMap<String, usize>,
}

/// How many of a stage's newest records are compared when none has the job's parameters:
/// the cost of a reason stays bounded however many jobs the stage ran.
const COMPARED: usize = 256;

impl<'a> PlanJobs<'a> {
    pub fn new(plan: &'a Plan, store: &'a Store) -> PlanJobs<'a> {
        PlanJobs {
            plan,
            store,
            by_stage: OnceLock::new(),
            ahead: Mutex::new(Vec::new()),
        }
    }

    /// Whether the job's decision needs nothing but its own record and output: a pure job
    /// with no upstream job, whose list (if it writes one) no fan-out refused.
    fn standalone(&self, index: JobIndex) -> bool {
        let job = &self.plan.graph.jobs[index];
        job.mode == Mode::Pure && job.deps().is_empty() && !self.plan.bad_lists.contains_key(&index)
    }

    fn ahead(&self) -> std::sync::MutexGuard<'_, Vec<Ahead>> {
        self.ahead.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key of the job's output when the store may stand in for running it; else why
    /// not, when `explain`.
    fn cached(&self, index: JobIndex, id: &str, ids: &[Option<String>]) -> Result<String, Why> {
        let (plan, store) = (self.plan, self.store);
        let job = &plan.graph.jobs[index];
        let outputs = &plan.lab.stages[&job.stage].outputs;
        let deps = job.deps();
        if self.standalone(index) {
            // Most jobs of a sweep: a `stat` of `out/` and one of each file the seal stamped
            // or the stage declares, and no copy of the record.
            return match store.is_done_with(id, outputs) {
                true => Ok(id.to_string()),
                false => Err(Why::Unknown),
            };
        }
        if !store.has_declared(id, outputs) {
            return Err(Why::Unknown);
        }
        if plan.bad_lists.contains_key(&index) {
            return Err(Why::BadList);
        }
        let record = store.done(id).ok_or(Why::Unknown)?;
        match job.mode {
            Mode::Impure => {
                let sources = plan.sources.get(&job.stage).ok_or(Why::Unknown)?;
                let fingerprint = record.fingerprint.as_deref().ok_or(Why::Unknown)?;
                if !sources.up_to_date(fingerprint) {
                    return Err(Why::Sources);
                }
            }
            // A pure run's output stands in only once Nix has built the same.
            Mode::Hermetic => {
                if record.nix.is_none() {
                    return Err(Why::NotBuiltByNix);
                }
            }
            Mode::Pure => {}
        }
        // Records written before jobs kept their inputs' digest are trusted as they are.
        if let Some(read) = &record.inputs {
            let upstream: Option<Vec<&str>> = deps.iter().map(|dep| ids[*dep].as_deref()).collect();
            let upstream = upstream.ok_or(Why::Unknown)?;
            if store::inputs_digest(store, upstream).as_ref() != Some(read) {
                return Err(Why::Upstream);
            }
        }
        plan.key(index, id, store).ok_or(Why::Unknown)
    }

    /// Why job `index`, with id `id`, runs.
    pub fn reason(&self, index: JobIndex, id: &str, why: Why) -> Reason {
        let (plan, store) = (self.plan, self.store);
        let job = &plan.graph.jobs[index];
        let upstream = || self.upstream_stages(index);
        match why {
            Why::Sources => {
                let changed = plan.sources.get(&job.stage).map(|s| s.changed());
                let detail = match changed {
                    Some([]) | None => "the stage's sources changed since it ran".to_string(),
                    Some(files) => name_files(files),
                };
                return Reason::new(ReasonKind::SourcesChanged, detail);
            }
            Why::NotBuiltByNix => {
                return Reason::new(
                    ReasonKind::ModeChanged,
                    "it ran pure; hermetic needs the output Nix builds",
                );
            }
            Why::Upstream => {
                return Reason::new(
                    ReasonKind::UpstreamChanged,
                    format!("the output of {} changed", upstream()),
                );
            }
            Why::BadList => {
                let detail = plan.bad_lists.get(&index).cloned().unwrap_or_default();
                return Reason::new(ReasonKind::OutputChanged, detail);
            }
            Why::Unknown => {}
        }
        if let Some(record) = store.record(id) {
            // See `crate::sources`: such a job is never up to date, and its stage runs again.
            if record.mode == Mode::Impure
                && record.fingerprint.is_none()
                && store.done(&record.id).is_some()
            {
                return Reason::new(
                    ReasonKind::SourcesChanged,
                    "its sources changed while it ran (an edit, or a file it rewrote that no \
                     job of the stage created)",
                );
            }
            let outputs = &plan.lab.stages[&job.stage].outputs;
            let detail = match outputs
                .iter()
                .find(|o| !store.has_declared(id, &[(*o).clone()]))
            {
                Some(missing) => format!("declared output `{}` is missing", missing.display()),
                None if store.done(&record.id).is_none() => {
                    "its output changed or went missing since it was sealed".to_string()
                }
                None => "its output is not what it sealed".to_string(),
            };
            return Reason::new(ReasonKind::OutputChanged, detail);
        }
        if store.failed_dir(id).is_dir() {
            let how = match store.was_interrupted(id) {
                true => "was interrupted",
                false => "failed",
            };
            return Reason::new(
                ReasonKind::FailedLastTime,
                format!(
                    "it {how} last time (`repx log {}`)",
                    &id[..id.len().min(12)]
                ),
            );
        }
        let by_stage = self.by_stage.get_or_init(|| {
            let mut by_stage: HashMap<String, StageRecords> = HashMap::new();
            for record in store.records() {
                by_stage
                    .entry(record.stage.clone())
                    .or_default()
                    .newest_first
                    .push(record);
            }
            for stage in by_stage.values_mut() {
                stage
                    .newest_first
                    .sort_by_key(|r| std::cmp::Reverse(r.finished_ms));
                for (at, record) in stage.newest_first.iter().enumerate().rev() {
                    let params = serde_json::to_string(&record.params).unwrap_or_default();
                    stage.by_params.insert(params, at);
                }
            }
            by_stage
        });
        let Some(records) = by_stage.get(&job.stage) else {
            return Reason::new(ReasonKind::NeverRun, "no job of its stage ran before");
        };
        // The stage's last job at the same point of the run: the same parameters, else the
        // most of them the same among its newest jobs.
        let params = plan.graph.params_json(index);
        let same = |r: &Record| {
            job.params
                .iter()
                .filter(|(k, v)| r.params.get(*k) == Some(*v))
                .count()
        };
        let last = match records.by_params.get(params) {
            Some(at) => &records.newest_first[*at],
            None => {
                let newest = records.newest_first.iter().take(COMPARED);
                let mut last = &records.newest_first[0];
                for record in newest {
                    if same(record) > same(last) {
                        last = record;
                    }
                }
                last
            }
        };
        let changed: Vec<String> = job
            .params
            .iter()
            .filter(|(k, v)| last.params.get(*k) != Some(*v))
            .map(|(k, v)| match last.params.get(k) {
                Some(was) => format!("{k}: {was} -> {v}"),
                None => format!("{k}: (none) -> {v}"),
            })
            .collect();
        if !changed.is_empty() {
            return Reason::new(ReasonKind::ParamChanged, changed.join(", "));
        }
        let resources = &plan.stages[&job.stage];
        if last
            .plugin
            .as_ref()
            .is_some_and(|p| *p != resources.plugin.digest)
        {
            return Reason::new(
                ReasonKind::PluginChanged,
                format!("plugin {} changed", resources.plugin.name),
            );
        }
        if let Some(tools) = &last.tools {
            let now: BTreeMap<&str, &str> = resources
                .tools
                .iter()
                .map(|t| (t.name.as_str(), t.digest.as_str()))
                .collect();
            let changed: Vec<&str> = now
                .iter()
                .filter(|(name, digest)| tools.get(**name).map(String::as_str) != Some(**digest))
                .map(|(name, _)| *name)
                .chain(
                    tools
                        .keys()
                        .map(String::as_str)
                        .filter(|name| !now.contains_key(name)),
                )
                .collect();
            if !changed.is_empty() {
                let named: Vec<String> = changed.iter().map(|t| format!("`{t}`")).collect();
                return Reason::new(
                    ReasonKind::ToolsChanged,
                    format!("tool {} changed", named.join(", ")),
                );
            }
        }
        if last.mode != job.mode {
            return Reason::new(
                ReasonKind::ModeChanged,
                format!("{} -> {}", last.mode.as_str(), job.mode.as_str()),
            );
        }
        let paths = job.inputs.values().any(|i| matches!(i, JobInput::Path(_)));
        let detail = match (job.deps().is_empty(), paths) {
            (false, _) => format!("the output of {} changed", upstream()),
            (true, true) => "a `path:` input changed".to_string(),
            (true, false) => "its definition changed".to_string(),
        };
        Reason::new(ReasonKind::UpstreamChanged, detail)
    }

    /// `stage `a`, `b``: the upstream stages of a job, for a reason.
    fn upstream_stages(&self, index: JobIndex) -> String {
        let jobs = &self.plan.graph.jobs;
        let mut stages: Vec<&str> = jobs[index]
            .deps()
            .iter()
            .map(|d| jobs[*d].stage.as_str())
            .collect();
        stages.dedup();
        let named: Vec<String> = stages.iter().map(|s| format!("`{s}`")).collect();
        match named.len() {
            0 => "an input".to_string(),
            1 => format!("stage {}", named[0]),
            _ => format!("stages {}", named.join(", ")),
        }
    }
}

/// Why the store could not stand in for a job, as far as the cache rule saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Not in the store, or nothing more specific: found by comparing records.
    Unknown,
    Sources,
    NotBuiltByNix,
    Upstream,
    /// A list it wrote is not one its fan-out takes (see [`Plan::bad_lists`]).
    BadList,
}

/// Up to [`FILES_NAMED`] changed files, and how many more.
fn name_files(files: &[String]) -> String {
    let named: Vec<&str> = files.iter().take(FILES_NAMED).map(String::as_str).collect();
    let more = match files.len().saturating_sub(FILES_NAMED) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!("changed: {}{more}", named.join(", "))
}

impl Jobs for PlanJobs<'_> {
    fn count(&self) -> usize {
        self.plan.graph.jobs.len()
    }

    fn stage(&self, job: JobIndex) -> &str {
        &self.plan.graph.jobs[job].stage
    }

    fn deps(&self, job: JobIndex) -> Vec<JobIndex> {
        self.plan.graph.jobs[job].deps()
    }

    fn dependents(&self) -> Vec<Vec<JobIndex>> {
        self.plan.graph.dependents()
    }

    fn impure(&self, job: JobIndex) -> bool {
        self.plan.graph.jobs[job].mode == Mode::Impure
    }

    fn id(&self, job: JobIndex, keys: &[Option<String>]) -> Option<String> {
        if let Some(id) = self.ahead().get_mut(job).and_then(|a| a.id.take()) {
            return Some(id);
        }
        self.plan.id(job, keys)
    }

    fn decide(&self, index: JobIndex, id: &str, ids: &[Option<String>]) -> Decision {
        // Done in an earlier round of this run (see `super::fanout`).
        if let Some(key) = self.plan.earlier.get(&index) {
            return Decision::Cached(key.clone());
        }
        match self.ahead().get_mut(index).and_then(|a| a.cached.take()) {
            Some(true) => return Decision::Cached(id.to_string()),
            Some(false) => return Decision::Run(self.reason(index, id, Why::Unknown)),
            None => {}
        }
        match self.cached(index, id, ids) {
            Ok(key) => Decision::Cached(key),
            Err(why) => Decision::Run(self.reason(index, id, why)),
        }
    }

    fn why(&self, index: JobIndex, id: &str) -> Reason {
        self.reason(index, id, Why::Unknown)
    }

    fn retries(&self, job: JobIndex) -> u32 {
        self.plan.lab.stages[&self.plan.graph.jobs[job].stage].retries
    }

    fn request(&self, job: JobIndex, attempt: u32) -> super::admit::Request {
        let stage = &self.plan.lab.stages[&self.plan.graph.jobs[job].stage];
        super::admit::Request::of(stage, attempt)
    }

    fn in_store(&self, id: &str) -> bool {
        self.store.done(id).is_some()
    }

    /// A large sweep's jobs are each one id to hash and a stat or two, with no order among
    /// them: they are decided on `threads` threads at once (the run's `-j`), each by the
    /// rule [`PlanJobs::cached`] applies to them. Nothing they read changes before the
    /// dispatcher asks: a job's output is committed only after it was decided to run.
    fn ahead(&self, jobs: &[JobIndex], threads: usize) {
        let plan = self.plan;
        let standalone: Vec<JobIndex> = jobs
            .iter()
            .copied()
            .filter(|j| !plan.earlier.contains_key(j) && self.standalone(*j))
            .collect();
        if threads < 2 || standalone.len() < AHEAD_AT_LEAST {
            return;
        }
        let decide = |part: &[JobIndex]| -> Vec<(JobIndex, Option<String>, bool)> {
            part.iter()
                .map(|&job| {
                    // No upstream: the id needs no key.
                    let id = plan.id(job, &[]);
                    let outputs = &plan.lab.stages[&plan.graph.jobs[job].stage].outputs;
                    let cached = id
                        .as_deref()
                        .is_some_and(|id| self.store.is_done_with(id, outputs));
                    (job, id, cached)
                })
                .collect()
        };
        let mut parts = standalone.chunks(standalone.len().div_ceil(threads));
        let first = parts.next().unwrap_or_default();
        let found: Vec<_> = std::thread::scope(|scope| {
            let others: Vec<_> = parts
                .map(|part| scope.spawn(move || decide(part)))
                .collect();
            let mut found = vec![decide(first)];
            found.extend(others.into_iter().filter_map(|h| h.join().ok()));
            found
        });
        let mut ahead = self.ahead();
        ahead.resize_with(plan.graph.jobs.len(), Ahead::default);
        for (job, id, cached) in found.into_iter().flatten() {
            if id.is_some() {
                ahead[job] = Ahead {
                    id,
                    cached: Some(cached),
                };
            }
        }
    }

    fn upstream_ids(&self, index: JobIndex, ids: &[Option<String>]) -> BTreeMap<JobIndex, String> {
        let jobs = &self.plan.graph.jobs;
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
}
