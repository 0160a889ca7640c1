//! Scheduling jobs: the order they run in, what is cached, what a failure skips.
//!
//! [`dispatch`] decides all of it, once, for every executor: [`local`] runs jobs in this
//! process, [`slurm`] on a cluster. [`decide`] is what the dispatcher asks of the plan and
//! the store. None of them prints: the dispatcher reports [`Event`]s through a callback
//! and the CLI renders them, so the same run can feed a terminal, JSON lines or a test.

pub mod decide;
pub mod dispatch;
mod execute;
pub(crate) use execute::policy;
pub mod local;
pub mod slurm;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::graph::JobIndex;
use crate::lab::guard::{Guard, GuardError};
use crate::lab::{Format, Mode, PluginRef};
use crate::plan::{Plan, PlanError};
use crate::wasm::Runtime;

/// What happened in a run, in the order it happened.
#[derive(Debug, Clone)]
pub enum Event {
    Started {
        jobs: usize,
    },
    JobStarted {
        job: JobIndex,
        id: String,
        stage: String,
    },
    JobCached {
        job: JobIndex,
        id: String,
        stage: String,
    },
    JobFinished {
        job: JobIndex,
        id: String,
        stage: String,
        duration: Duration,
    },
    JobFailed {
        job: JobIndex,
        id: String,
        stage: String,
        failure: Failure,
    },
    JobSkipped {
        job: JobIndex,
        /// `None` only downstream of a failed impure job: its output, which the id
        /// depends on, does not exist.
        id: Option<String>,
        stage: String,
        failed_upstream: String,
    },
    Progress {
        job: JobIndex,
        done: u64,
        total: u64,
    },
    Warning {
        job: JobIndex,
        stage: String,
        message: String,
    },
}

/// Why a job failed: its kind, for what follows from it and for other tools, and the
/// message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The job itself failed: its plugin, its tools, its output.
    #[default]
    Job,
    /// The store could not take its result.
    Store,
    /// An impure job changed what decides grants: no further job starts.
    GrantsChanged,
    /// The executor would not take it (SLURM refused the batch): no further job starts.
    Refused,
}

impl FailureKind {
    /// Whether a failure of this kind stops the run even with `--continue-on-failure`.
    pub fn halts_run(self) -> bool {
        matches!(self, FailureKind::GrantsChanged | FailureKind::Refused)
    }
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    pub fn job(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Job, message)
    }
}

/// Which jobs re-run even when their output is in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Force {
    None,
    All,
    Stage(String),
    /// These jobs: `--force RUN`'s, or a SLURM worker's batch, which its coordinator found
    /// not done or forced.
    Jobs(BTreeSet<JobIndex>),
}

impl Force {
    /// Whether job `index`, of stage `stage`, must re-run.
    pub fn covers(&self, index: JobIndex, stage: &str) -> bool {
        match self {
            Force::None => false,
            Force::All => true,
            Force::Stage(forced) => forced == stage,
            Force::Jobs(jobs) => jobs.contains(&index),
        }
    }
}

pub struct Options {
    pub jobs: usize,
    pub continue_on_failure: bool,
    pub force: Force,
    /// Only these jobs and what they need; `None`: every job of the plan.
    pub targets: Option<Vec<JobIndex>>,
    /// Set from outside (Ctrl-C) to stop starting jobs and interrupt running ones.
    pub interrupted: Arc<AtomicBool>,
    /// The Nix backend, when the plan has hermetic jobs.
    pub nix: Option<Arc<crate::nix::Nix>>,
    /// What decides grants, checked after each impure job (see [`guard`]).
    pub guard: Option<Arc<Guard>>,
}

/// The guard of the files that decide `plan`'s grants, when it has impure jobs: the only
/// jobs that may write the project, where those files are.
pub fn guard(plan: &Plan) -> Result<Option<Arc<Guard>>, GuardError> {
    if !plan.graph.jobs.iter().any(|j| j.mode == Mode::Impure) {
        return Ok(None);
    }
    let tools = plan
        .stages
        .values()
        .flat_map(|s| s.tools.iter().map(|t| t.path.as_path()));
    Guard::record(&plan.lab, tools).map(|g| Some(Arc::new(g)))
}

/// How a run ended, by count.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Jobs not started because the run stopped early.
    pub not_run: usize,
    pub interrupted: bool,
}

/// Compiles and links the plugin of every stage in the plan, before any job starts: a
/// plugin that cannot run refuses the whole run, as an invalid lab does, instead of
/// failing its jobs one by one. Compiled plugins are cached, so a later run only loads them.
pub fn prepare(plan: &Plan, runtime: &Runtime) -> Result<(), PlanError> {
    for (stage, resources) in &plan.stages {
        runtime
            .prepare(&resources.plugin)
            .map_err(|refused| PlanError::Stage {
                stage: stage.clone(),
                message: format!("{refused}; {}", how_to_fix(plan, stage)),
            })?;
    }
    Ok(())
}

/// Where to fix a stage's plugin: a plugin run with `repx run --plugin` is its own lab file.
fn how_to_fix(plan: &Plan, stage: &str) -> String {
    let lab = &plan.lab;
    match (&lab.stages[stage].plugin, Format::of(&lab.file)) {
        (PluginRef::File(path), _) if *path == lab.file => "rebuild it".into(),
        (_, Format::Nix) => format!(
            "rebuild it or fix the `plugin` of stage `{stage}` in {}",
            lab.file.display()
        ),
        _ => format!(
            "rebuild it or fix `stages.{stage}.plugin` in {}",
            lab.file.display()
        ),
    }
}
