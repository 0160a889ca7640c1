//! Scheduling jobs: the order they run in, what is cached, what a failure skips.
//!
//! [`dispatch`] decides all of it, once, for every executor: [`local`] runs jobs in this
//! process, [`slurm`] on a cluster. [`decide`] is what the dispatcher asks of the plan and
//! the store. None of them prints: the dispatcher reports [`Event`]s through a callback
//! and the CLI renders them, so the same run can feed a terminal, JSON lines or a test.

pub mod admit;
pub mod decide;
pub mod dispatch;
mod execute;
pub(crate) use execute::policy;
pub mod explain;
pub mod fanout;
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
        /// Why it runs.
        reason: Option<Reason>,
    },
    /// The job ran and its output waits to be committed: it no longer takes one of the
    /// `-j` slots, and `JobFinished` follows once it is committed.
    JobSealed {
        job: JobIndex,
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
        /// Why it ran.
        reason: Option<Reason>,
        /// The attempt that succeeded, from 1.
        attempt: u32,
    },
    JobFailed {
        job: JobIndex,
        id: String,
        stage: String,
        failure: Failure,
    },
    /// An attempt failed; the job runs again, as attempt `attempt + 1`.
    JobRetried {
        job: JobIndex,
        id: String,
        stage: String,
        attempt: u32,
        failure: Failure,
    },
    JobSkipped {
        job: JobIndex,
        /// `None` only downstream of a failed impure job: its output, which the id
        /// depends on, does not exist.
        id: Option<String>,
        stage: String,
        failed_upstream: String,
        /// Not started because the run was interrupted (its upstream was cut off): it
        /// counts as not run, not as skipped.
        interrupted: bool,
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

/// Why a job runs: its kind, for other tools, and what changed, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub kind: ReasonKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonKind {
    /// No job of its stage ran at this point of the run before.
    NeverRun,
    /// A parameter differs from the stage's last job at the same point of the run.
    ParamChanged,
    PluginChanged,
    ToolsChanged,
    ModeChanged,
    /// What it reads of an upstream job (or a `path:` input) changed.
    UpstreamChanged,
    /// An impure stage's sources changed since it ran.
    SourcesChanged,
    /// A declared output is missing, or the output changed since it was sealed.
    OutputChanged,
    FailedLastTime,
    Forced,
}

impl ReasonKind {
    /// The kind's name, as `--json` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::NeverRun => "never_run",
            ReasonKind::ParamChanged => "param_changed",
            ReasonKind::PluginChanged => "plugin_changed",
            ReasonKind::ToolsChanged => "tools_changed",
            ReasonKind::ModeChanged => "mode_changed",
            ReasonKind::UpstreamChanged => "upstream_changed",
            ReasonKind::SourcesChanged => "sources_changed",
            ReasonKind::OutputChanged => "output_changed",
            ReasonKind::FailedLastTime => "failed_last_time",
            ReasonKind::Forced => "forced",
        }
    }
}

impl Reason {
    pub fn new(kind: ReasonKind, detail: impl Into<String>) -> Reason {
        Reason {
            kind,
            detail: detail.into(),
        }
    }
}

/// What kind of failure a job had. JSON consumers read it as `kind` (and `limit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The plugin exited with a non-zero status.
    ExitStatus,
    /// The plugin trapped.
    Trap,
    /// A limit of its stage ended it: `memory`, `time`, `output` or `files`.
    Limit(Limit),
    /// A declared output is missing from `/out`.
    MissingOutput,
    /// It failed after a tool call was refused.
    ToolRefused,
    /// The run was interrupted while it ran (Ctrl-C, SIGTERM).
    Interrupted,
    /// What it reads of an upstream job is not there.
    UpstreamFailed,
    /// An impure job changed what decides grants: no further job starts.
    GrantsChanged,
    /// The executor would not take it (SLURM refused the batch): no further job starts.
    Refused,
    /// It asks for more memory than the run's budget (`--mem`) holds: it never started.
    OverBudget,
    /// The store could not take its result.
    Store,
    /// A list it wrote for a fan-out is not one its stage takes (see [`fanout`]).
    BadList,
    /// Anything else: a Nix build, its sources unreadable.
    #[default]
    Other,
}

/// Which limit of a stage ended a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Memory,
    Time,
    Output,
    Files,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Memory => "memory",
            Limit::Time => "time",
            Limit::Output => "output",
            Limit::Files => "files",
        }
    }
}

impl FailureKind {
    /// Whether another attempt may succeed: the job's own failure, not a refusal, an
    /// interrupt or the store.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            FailureKind::ExitStatus
                | FailureKind::Trap
                | FailureKind::Limit(_)
                | FailureKind::MissingOutput
                | FailureKind::Other
        )
    }

    /// Whether a failure of this kind at `attempt` (from 1) is the job's last, with
    /// `retries` retries.
    pub fn is_final(self, attempt: u32, retries: u32) -> bool {
        !self.retryable() || attempt > retries
    }

    /// Whether a failure of this kind stops the run even with `--continue-on-failure`.
    pub fn halts_run(self) -> bool {
        matches!(self, FailureKind::GrantsChanged | FailureKind::Refused)
    }

    /// The kind's name, as `--json` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::ExitStatus => "exit_status",
            FailureKind::Trap => "trap",
            FailureKind::Limit(_) => "limit",
            FailureKind::MissingOutput => "missing_output",
            FailureKind::ToolRefused => "tool_refused",
            FailureKind::Interrupted => "interrupted",
            FailureKind::UpstreamFailed => "upstream_failed",
            FailureKind::GrantsChanged => "grants_changed",
            FailureKind::Refused => "refused",
            FailureKind::OverBudget => "over_budget",
            FailureKind::Store => "store",
            FailureKind::BadList => "bad_list",
            FailureKind::Other => "other",
        }
    }
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    pub fn other(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Other, message)
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
    /// How many times a failed job runs again (each time with its stage's limits escalated,
    /// see [`crate::lab::Escalation`]): `--retries N` for every stage, else each stage's
    /// `retries`.
    pub retries: Option<u32>,
    /// The memory the local executor's jobs may reserve together (`--mem`, in bytes);
    /// `None`: the machine's available memory (see [`admit`]).
    pub mem: Option<u64>,
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

impl Options {
    /// The options of a plain `repx run`, for what only decides: every job, none forced.
    pub fn explain() -> Options {
        Options {
            jobs: 1,
            continue_on_failure: false,
            retries: None,
            mem: None,
            force: Force::None,
            targets: None,
            interrupted: Default::default(),
            nix: None,
            guard: None,
        }
    }
}

impl Options {
    /// How many times a failed job of `stage` runs again.
    pub fn retries_of(&self, stage: &crate::lab::Stage) -> u32 {
        self.retries.unwrap_or(stage.retries)
    }
}

/// The guard of the files that decide `plan`'s grants, when it has impure jobs: the only
/// jobs that may write the project, where those files are.
pub fn guard(plan: &Plan) -> Result<Option<Arc<Guard>>, GuardError> {
    if !plan.graph.jobs.iter().any(|j| j.mode == Mode::Impure) {
        return Ok(None);
    }
    let tools = plan.stages.values().flat_map(|s| {
        s.tools
            .iter()
            .map(|t| (t.path.as_path(), t.digest.as_str()))
    });
    Guard::record(&plan.lab, tools).map(|g| Some(Arc::new(g)))
}

/// How a run ended, by count.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Jobs not started because the run stopped early, and jobs cut off by an interrupt.
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
