//! `repx worker`: one batch on one allocation, in-process, with the local scheduler.
//!
//! The worker expands the same runs as its coordinator, so job indices agree, and checks
//! that each job of its batch still has the id the coordinator gave it: a lab or input
//! changed since submission fails the batch instead of committing something else under
//! the old id. It runs exactly its batch's jobs (the upstream jobs they read are done in
//! the store) and reports each outcome in its events file.
//!
//! A worker never evaluates a `lab.nix`: the coordinator writes the lab it evaluated
//! beside the batches ([`write_evaluated`]) and names its digest in each batch, and the
//! worker reads that, checked ([`read_evaluated`]). Evaluating it once per batch would
//! run the lab's code on every allocation, and could give a different lab.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::batch::{Batch, Evaluated, EventWriter, WorkerEvent};
use crate::graph::JobIndex;
use crate::lab::Mode;
use crate::plan::Plan;
use crate::sched::dispatch::Emit;
use crate::sched::local;
use crate::sched::{Event, Force, Options, Summary};
use crate::store::Store;
use crate::wasm::Runtime;

/// Where the coordinator writes the evaluated lab, in the run's directory `dir`.
const EVALUATED: &str = "lab.evaluated.json";

/// Writes `json`, the evaluated lab, into the run's directory `dir`, for the batches to
/// name.
pub fn write_evaluated(dir: &Path, json: &str) -> std::io::Result<Evaluated> {
    let path = dir.join(EVALUATED);
    std::fs::write(&path, json)?;
    Ok(Evaluated {
        path,
        blake3: blake3::hash(json.as_bytes()).to_hex().to_string(),
    })
}

/// The evaluated lab a batch names, if its bytes have the digest the batch gives.
pub fn read_evaluated(evaluated: &Evaluated) -> Result<String, String> {
    let path = &evaluated.path;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let digest = blake3::hash(&bytes).to_hex().to_string();
    if digest != evaluated.blake3 {
        return Err(format!(
            "{}: the evaluated lab changed since `repx run` submitted this batch (BLAKE3 {digest}, not {}); run `repx run` again",
            path.display(),
            evaluated.blake3
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", path.display()))
}

/// Checks the batch against the plan; returns the jobs that can run, or why none can.
/// Jobs whose upstream is missing from the store are reported failed on `events`.
pub fn check(
    plan: &Plan,
    store: &Store,
    batch: &Batch,
    events: &EventWriter,
) -> Result<Vec<JobIndex>, String> {
    let jobs = &plan.graph.jobs;
    for job in batch.jobs.iter().chain(&batch.upstream) {
        if jobs.get(job.index).is_none_or(|j| j.stage != job.stage) {
            return Err(format!(
                "the lab changed since `repx run` submitted this batch: job {} is no longer of stage `{}`; run `repx run` again",
                job.index, job.stage
            ));
        }
    }
    let mut keys: Vec<Option<String>> = vec![None; jobs.len()];
    for up in &batch.upstream {
        if store.done(&up.id).is_some() {
            keys[up.index] = plan.key(up.index, &up.id, store);
        }
    }
    let mut runnable = Vec::new();
    let in_batch: BTreeSet<JobIndex> = batch.jobs.iter().map(|j| j.index).collect();
    let mut blocked: BTreeSet<JobIndex> = BTreeSet::new();
    for job in &batch.jobs {
        let deps = jobs[job.index].deps();
        let missing = deps
            .iter()
            .find(|d| blocked.contains(d) || (!in_batch.contains(d) && keys[**d].is_none()));
        if let Some(missing) = missing {
            blocked.insert(job.index);
            events.write(&WorkerEvent::Failed {
                job: job.index,
                id: job.id.clone(),
                kind: crate::sched::FailureKind::UpstreamFailed,
                failure: format!(
                    "upstream job of stage `{}` is not in the store {}",
                    jobs[*missing].stage,
                    store.root().display()
                ),
            });
            continue;
        }
        match plan.id(job.index, &keys) {
            Some(id) if id != job.id => {
                return Err(format!(
                    "the lab or its inputs changed since `repx run` submitted this batch: job {} (stage `{}`) now has id {id}, not {}; run `repx run` again",
                    job.index, job.stage, job.id
                ));
            }
            _ => {}
        }
        if jobs[job.index].mode != Mode::Impure {
            keys[job.index] = Some(job.id.clone());
        }
        runnable.push(job.index);
    }
    Ok(runnable)
}

/// A worker's batch and what it runs with.
pub struct Work<'a> {
    pub plan: &'a Plan,
    pub store: &'a Store,
    pub runtime: &'a Runtime,
    pub nix: Option<Arc<crate::nix::Nix>>,
    pub batch: &'a Batch,
    pub guard: Option<Arc<crate::lab::guard::Guard>>,
    /// The jobs of the batch that [`check`] found runnable.
    pub runnable: Vec<JobIndex>,
}

/// Runs the batch's runnable jobs; reports on `events` and `emit`.
pub fn run(
    work: Work,
    events: Arc<EventWriter>,
    interrupted: Arc<AtomicBool>,
    emit: Emit,
) -> Summary {
    let Work {
        plan,
        store,
        runtime,
        nix,
        batch,
        guard,
        runnable,
    } = work;
    let ours: HashMap<JobIndex, String> =
        batch.jobs.iter().map(|j| (j.index, j.id.clone())).collect();
    let forward: Emit = Arc::new(move |event: Event| {
        let line = match &event {
            Event::JobStarted { job, .. } if ours.contains_key(job) => {
                Some(WorkerEvent::Started { job: *job })
            }
            Event::JobFinished { job, id, .. } | Event::JobCached { job, id, .. }
                if ours.contains_key(job) =>
            {
                Some(WorkerEvent::Finished {
                    job: *job,
                    id: id.clone(),
                })
            }
            Event::JobFailed {
                job, id, failure, ..
            } if ours.contains_key(job) => Some(WorkerEvent::Failed {
                job: *job,
                id: id.clone(),
                failure: failure.message.clone(),
                kind: failure.kind,
            }),
            Event::JobSkipped { job, .. } if ours.contains_key(job) => {
                Some(WorkerEvent::Skipped { job: *job })
            }
            _ => None,
        };
        if let Some(line) = line {
            events.write(&line);
        }
        emit(event);
    });
    let options = Options {
        jobs: batch.parallel.max(1),
        continue_on_failure: batch.continue_on_failure,
        retries: batch.retries,
        // The node's available memory, or the allocation's room when SLURM bounds it by a
        // control group: what the allocation holds is SLURM's to bound.
        mem: None,
        // The coordinator found these not done, or was told to run them again.
        force: Force::Jobs(runnable.iter().copied().collect()),
        targets: Some(runnable),
        interrupted,
        nix,
        guard,
    };
    local::run(plan, store, runtime, &options, forward)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_evaluated_lab_is_read_back_only_as_written() {
        let dir = std::env::temp_dir().join(format!("repx-evaluated-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = r#"{"lab":{"name":"x"}}"#;
        let evaluated = write_evaluated(&dir, json).unwrap();
        assert_eq!(read_evaluated(&evaluated).unwrap(), json);
        std::fs::write(&evaluated.path, r#"{"lab":{"name":"y"}}"#).unwrap();
        let err = read_evaluated(&evaluated).unwrap_err();
        assert!(err.contains("changed since `repx run` submitted"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
