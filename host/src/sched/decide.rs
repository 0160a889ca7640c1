//! What the dispatcher asks of a plan and its store: ids, the cache rule, upstream ids.
//!
//! The cache rule: a job's output stands in for running it when the store holds it with
//! every declared output, and
//! - for an impure job, the files it depends on are as they were when it ran;
//! - for a hermetic job, Nix has built the same (a pure run's output stands in only then);
//! - for a job with upstream jobs, it read exactly the outputs its upstream has now (records
//!   written before jobs kept their inputs' digest are trusted as they are).

use std::collections::BTreeMap;

use super::dispatch::Jobs;
use crate::graph::JobIndex;
use crate::lab::Mode;
use crate::plan::Plan;
use crate::store::{self, Store};

/// A plan's jobs, decided against `store`.
pub struct PlanJobs<'a> {
    pub plan: &'a Plan,
    pub store: &'a Store,
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
        self.plan.id(job, keys)
    }

    fn cached(&self, index: JobIndex, id: &str, ids: &[Option<String>]) -> Option<String> {
        let (plan, store) = (self.plan, self.store);
        let job = &plan.graph.jobs[index];
        if !store.has_declared(id, &plan.lab.stages[&job.stage].outputs) {
            return None;
        }
        let deps = job.deps();
        if job.mode == Mode::Pure && deps.is_empty() {
            // Most jobs of a sweep: a `stat` of `out/` and of each declared output, and no
            // copy of the record.
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
            Mode::Hermetic => _ = record.nix.as_ref()?,
            Mode::Pure => {}
        }
        if let Some(read) = &record.inputs {
            let upstream: Option<Vec<&str>> = deps.iter().map(|dep| ids[*dep].as_deref()).collect();
            if store::inputs_digest(store, upstream?).as_ref() != Some(read) {
                return None;
            }
        }
        plan.key(index, id, store)
    }

    fn in_store(&self, id: &str) -> bool {
        self.store.done(id).is_some()
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
