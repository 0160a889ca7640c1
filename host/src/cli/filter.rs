//! `--stage`, `--status` and `--param` of `repx list jobs`: which jobs a listing shows.
//!
//! Names are checked against the lab before anything is listed, so a misspelt stage or
//! parameter is an error naming it, not an empty list.

use clap::Args;

use super::error::{CliError, invalid};
use crate::graph::Job;
use crate::lab::{Lab, did_you_mean};
use crate::sched::explain::JobState;

/// Where a job stands (a [`JobState`]), as `--status` names it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Its output is in the store.
    Done,
    /// Its last attempt failed.
    Failed,
    /// Its last attempt was cut off: the run was interrupted while it ran.
    Interrupted,
    /// Not run yet (or its output was removed).
    Todo,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
            Status::Todo => "todo",
        }
    }
}

impl From<JobState> for Status {
    fn from(state: JobState) -> Status {
        match state {
            JobState::Done => Status::Done,
            JobState::Failed => Status::Failed,
            JobState::Interrupted => Status::Interrupted,
            JobState::Todo => Status::Todo,
        }
    }
}

#[derive(Args, Debug, Default)]
pub struct JobFilter {
    /// Only this stage's jobs.
    #[arg(long, value_name = "STAGE")]
    pub stage: Option<String>,
    /// Only jobs in this state.
    #[arg(long, value_enum)]
    pub status: Option<Status>,
    /// Only jobs with this parameter value (repeatable; all must hold). VALUE is compared
    /// as written in the listing: `-p slope=2`, `-p method=fast`.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
}

impl JobFilter {
    /// Checks the stage and parameter names against `lab`.
    pub fn check(&self, lab: &Lab) -> Result<(), CliError> {
        if let Some(stage) = &self.stage
            && !lab.stages.contains_key(stage)
        {
            let hint = did_you_mean(stage, lab.stages.keys().map(String::as_str));
            return Err(invalid(format!(
                "--stage {stage}: no stage `{stage}` in {}{hint}",
                lab.file.display()
            )));
        }
        let declared: Vec<&str> = lab
            .stages
            .values()
            .flat_map(|s| s.params.keys().map(String::as_str))
            .collect();
        for spec in &self.params {
            let Some((key, _)) = spec.split_once('=') else {
                return Err(invalid(format!(
                    "--param {spec}: write it as KEY=VALUE, like `-p slope=2`"
                )));
            };
            if !declared.contains(&key) {
                let hint = did_you_mean(key, declared.iter().copied());
                return Err(invalid(format!(
                    "--param {spec}: no stage of {} has parameter `{key}`{hint}",
                    lab.file.display()
                )));
            }
        }
        Ok(())
    }

    /// Whether `job`, in `status`, is one to show.
    pub fn keep(&self, job: &Job, status: Status) -> bool {
        self.stage.as_ref().is_none_or(|s| *s == job.stage)
            && self.status.is_none_or(|s| s == status)
            && self.params.iter().all(|spec| {
                let (key, value) = spec.split_once('=').unwrap_or((spec, ""));
                // `-p method=fast` and `-p 'method="fast"'` both match the string.
                let wanted = serde_json::from_str(value)
                    .unwrap_or_else(|_| serde_json::Value::String(value.into()));
                job.params
                    .get(key)
                    .is_some_and(|v| *v == wanted || shown(v) == value)
            })
    }
}

/// A parameter's value as listings show it: a string without its quotes.
fn shown(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
