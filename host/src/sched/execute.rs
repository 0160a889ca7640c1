//! Running one job: its mounts and environment, the plugin, and the commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::graph::{JobIndex, JobInput};
use crate::lab::Mode;
use crate::plan::Plan;
use crate::store::{Logs, Record, Sealed, Staging, Store};
use crate::wasm::host::Observer;
use crate::wasm::policy::{Mount, Policy};
use crate::wasm::{Ending, JobRun, Runtime};

/// How many lines of stderr a failure message carries.
const STDERR_TAIL_LINES: usize = 10;

pub struct Attempt<'a> {
    pub plan: &'a Plan,
    pub store: &'a Store,
    pub runtime: &'a Runtime,
    pub job: JobIndex,
    pub id: &'a str,
    /// Ids of every upstream job, by index.
    pub upstream_ids: BTreeMap<JobIndex, String>,
    pub observer: Arc<dyn Observer>,
}

/// Runs the job and seals its output, ready for [`Store::commit_sealed`]; the error is the
/// failure to report.
pub fn execute(attempt: Attempt) -> Result<Sealed, String> {
    let Attempt {
        plan,
        store,
        runtime,
        job: index,
        id,
        upstream_ids,
        observer,
    } = attempt;
    let job = &plan.graph.jobs[index];
    let stage = &plan.lab.stages[&job.stage];
    let resources = &plan.stages[&job.stage];
    let started = Instant::now();
    let staging = store.stage(id, 0).map_err(|e| e.to_string())?;
    let policy = match policy(plan, store, index, id, &staging, &upstream_ids) {
        Ok(policy) => policy,
        Err(e) => {
            let _ = store.discard(staging, &Logs::default());
            return Err(e);
        }
    };
    let run = JobRun {
        stage: job.stage.clone(),
        policy: Arc::new(policy),
        grants: resources.tools.clone(),
        observer,
        limits: stage.limits,
    };
    let finished = match runtime.run(&resources.plugin, run) {
        Ok(finished) => finished,
        Err(e) => {
            let _ = store.discard(staging, &Logs::default());
            return Err(e.to_string());
        }
    };
    let logs = Logs {
        stdout: finished.stdout,
        stderr: finished.stderr,
        host: finished.host_log,
    };
    let failure = match finished.ending {
        Ending::Exit(0) => None,
        Ending::Exit(code) => Some(format!("exit status {code}")),
        Ending::Trap(trap) => Some(format!("trap: {}", trap.lines().next().unwrap_or_default())),
    };
    if let Some(failure) = failure {
        let tail = stderr_tail(&logs.stderr);
        store.discard(staging, &logs).map_err(|e| e.to_string())?;
        return Err(if tail.is_empty() {
            failure
        } else {
            format!("{failure}\n{tail}")
        });
    }
    let fingerprint = match job.mode {
        Mode::Impure => Some(
            crate::sources::fingerprint(&plan.lab.dir, &stage.sources)
                .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    let record = Record {
        id: id.to_string(),
        stage: job.stage.clone(),
        mode: job.mode,
        params: job.params.clone().into_iter().collect(),
        hash: String::new(),
        fingerprint,
        finished_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    store
        .seal(staging, &stage.outputs, stage.limits.output, &logs, record)
        .map_err(|e| e.to_string())
}

fn policy(
    plan: &Plan,
    store: &Store,
    index: JobIndex,
    id: &str,
    staging: &Staging,
    upstream_ids: &BTreeMap<JobIndex, String>,
) -> Result<Policy, String> {
    let job = &plan.graph.jobs[index];
    let read_only = |host, guest: String| Mount {
        host,
        guest,
        writable: false,
    };
    let mut mounts = Vec::new();
    if !job.inputs.is_empty() {
        mounts.push(read_only(
            input_listing(store, &job.stage, job.inputs.keys())?,
            "/in".into(),
        ));
    }
    for (name, input) in &job.inputs {
        let guest = format!("/in/{name}");
        match input {
            JobInput::Path(path) => match plan.snapshots.get(path) {
                Some(hash) => mounts.push(read_only(store.snapshots().join(hash), guest)),
                None => mounts.push(read_only(path.clone(), guest)),
            },
            JobInput::Job(up) => mounts.push(read_only(store.output_dir(&upstream_ids[up]), guest)),
            JobInput::Gather(ups) => {
                // One directory per upstream job, each its own read-only mount, under a
                // directory that holds only their names and `index.json`.
                let dir = staging.dir.join(format!("gather-{name}"));
                let mut index = Vec::new();
                for up in ups {
                    let up_id = &upstream_ids[up];
                    std::fs::create_dir_all(dir.join(up_id)).map_err(|e| e.to_string())?;
                    index.push(serde_json::json!({
                        "id": up_id,
                        "dir": up_id,
                        "params": plan.graph.jobs[*up].params,
                    }));
                    mounts.push(read_only(
                        store.output_dir(up_id),
                        format!("{guest}/{up_id}"),
                    ));
                }
                let index = serde_json::to_vec_pretty(&serde_json::json!({ "jobs": index }))
                    .map_err(|e| e.to_string())?;
                std::fs::write(dir.join("index.json"), index).map_err(|e| e.to_string())?;
                mounts.push(read_only(dir, guest));
            }
        }
    }
    mounts.push(Mount {
        host: staging.out.clone(),
        guest: "/out".into(),
        writable: true,
    });
    mounts.push(Mount {
        host: staging.scratch.clone(),
        guest: "/tmp".into(),
        writable: true,
    });
    let impure = job.mode == Mode::Impure;
    if impure {
        mounts.push(Mount {
            host: plan.lab.dir.clone(),
            guest: "/work".into(),
            writable: true,
        });
    }
    let params = serde_json::to_string(&job.params).map_err(|e| e.to_string())?;
    Ok(Policy {
        mode: job.mode,
        mounts,
        env: vec![
            ("REPX_PARAMS".into(), params),
            ("REPX_JOB_ID".into(), id.to_string()),
            ("REPX_STAGE".into(), job.stage.clone()),
            ("REPX_MODE".into(), job.mode.as_str().into()),
        ],
        args: vec![job.stage.clone()],
        cwd: impure.then(|| "/work".to_string()),
        seed: (!impure).then(|| *blake3::hash(id.as_bytes()).as_bytes()),
    })
}

/// A directory of empty subdirectories named after the stage's inputs, mounted at `/in` so
/// that a plugin can list its inputs; each input is its own mount below it.
fn input_listing<'a>(
    store: &Store,
    stage: &str,
    inputs: impl Iterator<Item = &'a String>,
) -> Result<std::path::PathBuf, String> {
    let dir = store.root().join("tmp").join(format!("inputs-{stage}"));
    if !dir.is_dir() {
        // Built aside and renamed, so concurrent jobs of the stage never see half of it.
        static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let building = dir.with_extension(n.to_string());
        for input in inputs {
            std::fs::create_dir_all(building.join(input)).map_err(|e| e.to_string())?;
        }
        if std::fs::rename(&building, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&building);
        }
    }
    Ok(dir)
}

fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n")
}
