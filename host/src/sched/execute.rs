//! Running one job: its mounts and environment, the plugin, and the commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{Failure, FailureKind, Limit};
use crate::contract::{self, Gathered, Source};
use crate::graph::{JobIndex, JobInput};
use crate::lab::Mode;
use crate::lab::guard::Guard;
use crate::nix::Nix;
use crate::plan::Plan;
use crate::store::{self, Logs, Record, Sealed, Staging, Store};
use crate::wasm::host::Observer;
use crate::wasm::policy::Policy;
use crate::wasm::{Cause, JobRun, Runtime};

pub struct Attempt<'a> {
    pub plan: &'a Plan,
    pub store: &'a Store,
    pub runtime: &'a Runtime,
    pub nix: Option<&'a Nix>,
    pub job: JobIndex,
    pub id: &'a str,
    /// From 1: a retry has the stage's limits escalated (see [`crate::lab::Escalation`]).
    pub attempt: u32,
    /// Ids of every upstream job, by index; for a hermetic job, also those of the jobs
    /// upstream of its hermetic upstream jobs (see [`crate::nix::spec::closure`]).
    pub upstream_ids: BTreeMap<JobIndex, String>,
    pub observer: Arc<dyn Observer>,
    /// What decides grants, checked once an impure job is over, before anything of it is
    /// committed.
    pub guard: Option<&'a Guard>,
}

/// Runs the job and seals its output, ready for [`Store::commit_sealed`]; the error is the
/// failure to report.
pub fn execute(attempt: Attempt) -> Result<Sealed, Failure> {
    let Attempt {
        plan,
        store,
        runtime,
        nix,
        job: index,
        id,
        attempt: number,
        upstream_ids,
        observer,
        guard,
    } = attempt;
    let job = &plan.graph.jobs[index];
    let stage = &plan.lab.stages[&job.stage];
    let started = Instant::now();
    let sources = match job.mode {
        Mode::Impure => Some(&plan.sources[&job.stage]),
        _ => None,
    };
    let unread = |sources, e| Failure::other(format!("reading the {sources}: {e}"));
    // What the job reads: an edit that lands while it runs must not count as built.
    let before = match sources {
        Some(sources) => Some(sources.before_job().map_err(|e| unread(sources, e))?),
        None => None,
    };
    let staging = store.stage(id, u64::from(number)).map_err(store_failure)?;
    let limits = stage.escalate.at(stage.limits, number);
    // How this attempt ends, noted beside its logs when it fails.
    let attempt_record = |failure: Option<&Failure>| store::AttemptRecord {
        attempt: number,
        memory: limits.memory,
        time_ms: limits.time.as_millis() as u64,
        failure: failure.map(|f| f.kind.as_str().to_string()),
        limit: failure.and_then(|f| match f.kind {
            FailureKind::Limit(limit) => Some(limit.as_str().to_string()),
            _ => None,
        }),
        message: failure.map(|f| f.message.clone()),
    };
    let noted = |failure: Failure| {
        // The failure stands whether or not it could be noted.
        let _ = store.note_failure(id, &attempt_record(Some(&failure)));
        failure
    };
    let ran = match (job.mode, nix) {
        (Mode::Hermetic, Some(nix)) => in_nix(plan, store, nix, index, id, &staging, &upstream_ids),
        (Mode::Hermetic, None) => Err(Failed::plain("hermetic job, but no Nix backend".into())),
        _ => here(
            plan,
            store,
            runtime,
            index,
            id,
            &staging,
            &upstream_ids,
            observer,
            limits,
        ),
    };
    // Whether it succeeded or not, an impure job that changed what decides grants fails,
    // naming the file, and nothing of it is kept.
    if let Some(changed) = guard
        .filter(|_| job.mode == Mode::Impure)
        .and_then(|g| g.check().err())
    {
        let logs = match &ran {
            Ok(ran) => &ran.logs,
            Err(failed) => &failed.logs,
        };
        store.discard(staging, logs).map_err(store_failure)?;
        return Err(noted(Failure::new(
            FailureKind::GrantsChanged,
            changed.to_string(),
        )));
    }
    let ran = match ran {
        Ok(ran) => ran,
        Err(failed) => {
            // What it read still counts for the next job (see `Sources::before_job`); the
            // failure stands whether or not that could be kept.
            if let (Some(sources), Some(before)) = (sources, &before) {
                let _ = sources.after_failure(before);
            }
            // The job's own failure first, whether or not its logs could be kept.
            let message = match store.discard(staging, &failed.logs) {
                Ok(()) => failed.message,
                Err(e) => format!("{}\n(its logs were not kept: {e})", failed.message),
            };
            return Err(noted(Failure::new(failed.kind, message)));
        }
    };
    // A list for a fan-out that its stage does not take fails the job that wrote it.
    if let Err(failure) = super::fanout::check_lists(plan, &job.stage, &staging.out) {
        return match store.discard(staging, &ran.logs) {
            Ok(()) => Err(noted(failure)),
            Err(e) => Err(Failure::new(
                failure.kind,
                format!(
                    "{}
(its logs were not kept: {e})",
                    failure.message
                ),
            )),
        };
    }
    let mut attempts = store.take_attempts(&staging).map_err(store_failure)?;
    if !attempts.is_empty() {
        attempts.push(attempt_record(None));
    }
    let fingerprint = match (sources, &before) {
        (Some(sources), Some(before)) => {
            sources.after_job(before).map_err(|e| unread(sources, e))?
        }
        _ => None,
    };
    let record = Record {
        id: id.to_string(),
        stage: job.stage.clone(),
        mode: job.mode,
        params: job
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        hash: String::new(),
        fingerprint,
        finished_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        duration_ms: started.elapsed().as_millis() as u64,
        nix: ran.nix,
        out_mtime_ns: None,
        stamps: Vec::new(),
        sealed_ns: None,
        inputs: read_inputs(job, store, &upstream_ids),
        attempt: (number > 1).then_some(number),
        attempts,
        usage: ran.usage,
        plugin: Some(plan.stages[&job.stage].plugin.digest.clone()),
        tools: Some(
            plan.stages[&job.stage]
                .tools
                .iter()
                .map(|t| (t.name.clone(), t.digest.clone()))
                .collect(),
        ),
    };
    store
        .seal(
            staging,
            &stage.outputs,
            stage.limits.output,
            &ran.logs,
            record,
        )
        .map_err(|e| {
            let kind = match &e {
                store::StoreError::MissingOutput { .. } => FailureKind::MissingOutput,
                store::StoreError::OutputLimit { .. } => FailureKind::Limit(Limit::Output),
                store::StoreError::Io { .. } | store::StoreError::Locked { .. } => {
                    FailureKind::Store
                }
                store::StoreError::Output { .. } => FailureKind::Other,
            };
            noted(Failure::new(kind, e.to_string()))
        })
}

fn store_failure(e: store::StoreError) -> Failure {
    Failure::new(FailureKind::Store, e.to_string())
}

/// [`Record::inputs`] of a job that ran on the outputs of `upstream_ids`.
fn read_inputs(
    job: &crate::graph::Job,
    store: &Store,
    upstream_ids: &BTreeMap<JobIndex, String>,
) -> Option<String> {
    let deps = job.deps();
    if deps.is_empty() {
        return None;
    }
    store::inputs_digest(store, deps.iter().map(|dep| upstream_ids[dep].as_str()))
}

/// What a job that ran left besides its output.
struct Ran {
    logs: Logs,
    /// What an in-process run used.
    usage: Option<store::Usage>,
    /// The Nix store path of a hermetic job's output.
    nix: Option<String>,
}

struct Failed {
    kind: FailureKind,
    message: String,
    logs: Logs,
}

impl Failed {
    fn plain(message: String) -> Failed {
        Failed {
            kind: FailureKind::Other,
            message,
            logs: Logs::default(),
        }
    }
}

/// A failed plugin run's kind.
fn kind_of(cause: Cause) -> FailureKind {
    match cause {
        Cause::Exit(_) => FailureKind::ExitStatus,
        Cause::Trap => FailureKind::Trap,
        Cause::Limit(which) => FailureKind::Limit(match which {
            "memory" => Limit::Memory,
            "time" => Limit::Time,
            "output" => Limit::Output,
            _ => Limit::Files,
        }),
        Cause::Interrupted => FailureKind::Interrupted,
        Cause::ToolRefused => FailureKind::ToolRefused,
    }
}

/// Runs the job's plugin in this process, its output into `staging`.
#[allow(clippy::too_many_arguments)]
fn here(
    plan: &Plan,
    store: &Store,
    runtime: &Runtime,
    index: JobIndex,
    id: &str,
    staging: &Staging,
    upstream_ids: &BTreeMap<JobIndex, String>,
    observer: Arc<dyn Observer>,
    limits: crate::lab::Limits,
) -> Result<Ran, Failed> {
    let job = &plan.graph.jobs[index];
    let resources = &plan.stages[&job.stage];
    let policy = policy(plan, store, index, id, staging, upstream_ids).map_err(Failed::plain)?;
    let run = JobRun {
        stage: job.stage.clone(),
        policy: Arc::new(policy),
        grants: resources.tools.clone(),
        observer,
        limits,
        live: Some(store.live_logs(id)),
    };
    let finished = runtime
        .run(&resources.plugin, run)
        .map_err(|e| Failed::plain(e.to_string()))?;
    let failure = finished.failure();
    let kind = finished.cause().map_or(FailureKind::Other, kind_of);
    let logs = Logs {
        stdout: finished.stdout,
        stderr: finished.stderr,
        host: finished.host_log,
    };
    match failure {
        Some(message) => Err(Failed {
            kind,
            message,
            logs,
        }),
        None => Ok(Ran {
            logs,
            nix: None,
            usage: Some(store::Usage {
                cpu_us: finished.usage.cpu.as_micros() as u64,
                mem: finished.usage.peak_memory,
                tools_cpu_us: finished.usage.tools.cpu.as_micros() as u64,
                tools_rss: finished.usage.tools.peak_rss,
            }),
        }),
    }
}

/// Builds the job's derivation with Nix and copies its output into `staging`. A job the
/// store already holds from a pure run must come out the same, byte for byte.
fn in_nix(
    plan: &Plan,
    store: &Store,
    nix: &Nix,
    index: JobIndex,
    id: &str,
    staging: &Staging,
    upstream_ids: &BTreeMap<JobIndex, String>,
) -> Result<Ran, Failed> {
    let specs = crate::nix::spec::closure(plan, store, nix, index, id, upstream_ids)
        .map_err(Failed::plain)?;
    let root = store.nix_root(id);
    let built = nix
        .build(&specs, id, &staging.dir, &root)
        .map_err(|failure| Failed {
            kind: FailureKind::Other,
            message: failure.message,
            logs: Logs {
                stderr: failure.log,
                ..Logs::default()
            },
        })?;
    let limit = plan.lab.stages[&plan.graph.jobs[index].stage].limits.log;
    let logs = read_build_logs(&built.log, limit).map_err(Failed::plain)?;
    let mut host = logs.host;
    host.extend_from_slice(
        format!(
            "[nix] {} {}\n",
            if built.realised {
                "built"
            } else {
                "found valid in the Nix store:"
            },
            built.out.display()
        )
        .as_bytes(),
    );
    let logs = Logs { host, ..logs };
    // A link as the output's root is refused, not followed: a tool of the build may have
    // left `$out` a link to a host directory.
    if let Err(e) = store::copy_tree(&built.out, &staging.out) {
        return Err(Failed {
            kind: FailureKind::Store,
            message: format!("copying {}: {e}", built.out.display()),
            logs,
        });
    }
    if let Some(pure) = store.done(id) {
        let hash = store::hash_tree(&staging.out).map(|s| s.hash);
        if hash.as_ref().ok() != Some(&pure.hash) {
            return Err(Failed {
                kind: FailureKind::Other,
                message: format!(
                    "the hermetic output ({}) differs from this job's {} output in the store: \
                     the plugin's output depends on something the contract does not fix; \
                     compare them, then `repx run --force` the job to keep one",
                    built.out.display(),
                    pure.mode.as_str()
                ),
                logs,
            });
        }
    }
    Ok(Ran {
        logs,
        nix: Some(built.out.display().to_string()),
        usage: None,
    })
}

/// The logs a hermetic build left in its log output, each at most `limit` bytes. What the
/// build left there is the build's, and its tools may have run anything: each log is opened
/// without following a link, from the directory opened without following one, and must be
/// a regular file. A missing log is empty; a link or anything else fails the job.
fn read_build_logs(dir: &std::path::Path, limit: u64) -> Result<Logs, String> {
    use std::io::Read;
    let dir_fd = store::Tree::open(dir).map_err(|e| format!("the build's logs: {e}"))?;
    let read = |name: &str| -> Result<Vec<u8>, String> {
        let path = dir.join(name);
        let file = match store::open_regular(&dir_fd, name) {
            Ok(Some(file)) => file,
            Ok(None) => return Ok(Vec::new()),
            Err(e) => {
                return Err(format!(
                    "the build's log {}: {e}; a hermetic job's tools must leave its logs as files",
                    path.display()
                ));
            }
        };
        let mut bytes = Vec::new();
        file.take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(bytes)
    };
    Ok(Logs {
        stdout: read("stdout")?,
        stderr: read("stderr")?,
        host: read("host.log")?,
    })
}

/// Job `index`'s policy, its output and scratch where `staging` says: the store's
/// staging for a run, a directory of its own for `repx debug`.
pub(crate) fn policy(
    plan: &Plan,
    store: &Store,
    index: JobIndex,
    id: &str,
    staging: &Staging,
    upstream_ids: &BTreeMap<JobIndex, String>,
) -> Result<Policy, String> {
    let job = &plan.graph.jobs[index];
    let inputs = job
        .inputs
        .iter()
        .map(|(name, input)| {
            let source = match input {
                JobInput::Path(path) => Source::Dir(
                    plan.input_dir(job.mode, path, store)
                        .map_err(|e| e.to_string())?,
                ),
                JobInput::Job(up) => Source::Dir(store.output_dir(&upstream_ids[up])),
                JobInput::Gather(ups) => Source::Gather(
                    ups.iter()
                        .map(|up| Gathered {
                            id: upstream_ids[up].clone(),
                            dir: store.output_dir(&upstream_ids[up]),
                            params: (*plan.graph.jobs[*up].params).clone(),
                        })
                        .collect(),
                ),
            };
            Ok((name.as_str(), source))
        })
        .collect::<Result<_, String>>()?;
    let listing = if job.inputs.is_empty() {
        None
    } else {
        Some(input_listing(store, &job.stage, job.inputs.keys())?)
    };
    contract::policy(contract::Job {
        mode: job.mode,
        id,
        stage: &job.stage,
        params: &job.params,
        inputs,
        listing,
        private: &staging.dir,
        out: staging.out.clone(),
        scratch: staging.scratch.clone(),
        work: Some(plan.lab.dir.clone()),
    })
}

/// The stage's input listing (see [`contract::make_listing`]), shared by its jobs.
fn input_listing<'a>(
    store: &Store,
    stage: &str,
    inputs: impl Iterator<Item = &'a String>,
) -> Result<std::path::PathBuf, String> {
    let dir = store.input_listing_dir(stage);
    if !dir.is_dir() {
        // Built aside and renamed, so concurrent jobs of the stage never see half of it.
        static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let building = dir.with_extension(n.to_string());
        contract::make_listing(&building, inputs).map_err(|e| e.to_string())?;
        if std::fs::rename(&building, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&building);
        }
    }
    Ok(dir)
}
