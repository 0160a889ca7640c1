//! Scheduling jobs: the order they run in, what is cached, what a failure skips.
//!
//! Schedulers never print. They report [`Event`]s through a callback and the CLI renders
//! them, so the same run can feed a terminal, JSON lines or a test.

mod execute;
pub mod local;
pub mod slurm;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::graph::JobIndex;

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
        failure: String,
    },
    JobSkipped {
        job: JobIndex,
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

/// Which jobs re-run even when their output is in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Force {
    None,
    All,
    Stage(String),
    /// These jobs: a SLURM worker's batch, which its coordinator found not done or forced.
    Jobs(BTreeSet<JobIndex>),
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
