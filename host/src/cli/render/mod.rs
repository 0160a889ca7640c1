//! Rendering run events: what a person or another tool sees while a run goes on.
//!
//! The scheduler emits [`Event`]s and never prints; [`Reporter`] turns them into one of
//! three forms:
//! - [`Format::Bars`]: live progress bars on a terminal (jobs done, running, cached and
//!   failed, the running stages with their own progress, an ETA), with a line above the
//!   bars for each finished job;
//! - [`Format::Lines`]: one plain line per finished job, for logs and pipes;
//! - [`Format::Json`]: one JSON object per line on stdout, for other tools.
//!
//! Failures are shown in full in the two human forms: stage and parameters, exit status,
//! the tail of the plugin's stderr, and the command that prints the whole log. What a
//! plugin wrote (its stderr, its warnings) is shown through [`escape::terminal`], a line
//! at a time under a `|` margin, so it can neither drive the terminal nor pass for a line
//! of repx's own.

mod bars;
mod json;
mod lines;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use serde_json::Value;

use super::escape;
use crate::sched::{Event, FailureKind, Reason, ReasonKind, Summary};

/// How run events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Lines,
    Bars,
    Json,
}

impl Format {
    /// JSON when asked for; bars when stderr is a terminal that can draw them; else lines.
    pub fn detect(json: bool) -> Format {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        if json {
            Format::Json
        } else if std::io::stderr().is_terminal() && !dumb {
            Format::Bars
        } else {
            Format::Lines
        }
    }
}

/// What a reporter knows of a job besides what its events carry.
pub struct JobInfo {
    pub stage: String,
    pub params: BTreeMap<String, Value>,
    /// `stage [k=v …]`, see [`label`].
    pub label: String,
    /// Its stage's limits and how they grow with each retry: what each attempt ran with.
    pub limits: crate::lab::Limits,
    pub escalate: crate::lab::Escalation,
}

/// Where the run's facts come from: the jobs by index, and the store's job directory.
pub struct Context {
    /// Grows when a fan-out adds jobs to a run (see [`Reporter::add_jobs`]).
    pub jobs: std::sync::RwLock<Vec<JobInfo>>,
    /// `<store>/jobs`: a done job's output is `<jobs_dir>/<id>/out`.
    pub jobs_dir: PathBuf,
    /// Jobs run at once (`-j`), for the ETA.
    pub parallelism: usize,
}

impl Context {
    /// The jobs known so far.
    fn jobs(&self) -> std::sync::RwLockReadGuard<'_, Vec<JobInfo>> {
        self.jobs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn output(&self, id: &str) -> PathBuf {
        self.jobs_dir.join(id).join("out")
    }
}

/// Renders a run's events in one [`Format`]; shared by the scheduler's threads.
pub enum Reporter {
    Lines(lines::Lines),
    Bars(bars::Bars),
    Json(json::Json),
}

impl Reporter {
    pub fn new(format: Format, context: Context) -> Reporter {
        match format {
            Format::Lines => Reporter::Lines(lines::Lines::new(context)),
            Format::Bars => Reporter::Bars(bars::Bars::new(context)),
            Format::Json => Reporter::Json(json::Json::new(context)),
        }
    }

    pub fn event(&self, event: &Event) {
        match self {
            Reporter::Lines(r) => r.event(event),
            Reporter::Bars(r) => r.event(event),
            Reporter::Json(r) => r.event(event),
        }
    }

    /// Jobs a fan-out added to the run, in index order after those known.
    pub fn add_jobs(&self, jobs: impl IntoIterator<Item = JobInfo>) {
        let context = match self {
            Reporter::Lines(r) => &r.context,
            Reporter::Bars(r) => &r.context,
            Reporter::Json(r) => &r.context,
        };
        let mut known = context.jobs.write().unwrap_or_else(|e| e.into_inner());
        known.extend(jobs);
    }

    /// The end of the run: clears the bars and prints the counts.
    pub fn summary(&self, summary: &Summary) {
        match self {
            Reporter::Lines(r) => r.summary(summary),
            Reporter::Bars(r) => r.summary(summary),
            Reporter::Json(r) => r.summary(summary),
        }
    }
}

/// The short form of a job id that messages show.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// `stage` plus its parameters as `key=value`, for a line that tells jobs apart; fit for a
/// terminal (values are JSON, keys escaped).
pub fn label(stage: &str, params: &BTreeMap<String, Value>) -> String {
    if params.is_empty() {
        return escape::terminal(stage).into_owned();
    }
    let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    escape::terminal(&format!("{stage} [{}]", params.join(" "))).into_owned()
}

/// The line a human form prints for an event; `None` for events shown otherwise.
fn event_line(jobs: &[JobInfo], event: &Event) -> Option<String> {
    let line = match event {
        Event::JobFinished {
            job,
            id,
            duration,
            reason,
            ..
        } => {
            let mut line = format!(
                "   ran {} {} ({:.2}s)",
                jobs[*job].label,
                short(id),
                duration.as_secs_f64()
            );
            if let Some(reason) = reason {
                line.push_str(&format!(" [{}]", reason_short(reason)));
            }
            line
        }
        Event::JobCached { job, id, .. } => format!("cached {} {}", jobs[*job].label, short(id)),
        Event::JobFailed {
            job, id, failure, ..
        } => {
            // An interrupted job did not fail: it was cut off.
            let head = match failure.kind {
                FailureKind::Interrupted => "interrupted",
                _ => "FAILED",
            };
            let mut lines = failure.message.lines();
            let mut text = format!(
                "{head} {} {}: {}",
                jobs[*job].label,
                short(id),
                escape::terminal(lines.next().unwrap_or_default())
            );
            for line in lines {
                text.push_str(&format!("\n    | {}", escape::terminal(line)));
            }
            text.push_str(&format!("\n    whole log: repx log {}", short(id)));
            text
        }
        Event::JobRetried {
            job,
            id,
            attempt,
            failure,
            ..
        } => format!(
            " retry {} {}: attempt {attempt} failed ({}): {}",
            jobs[*job].label,
            short(id),
            failure.kind.as_str(),
            escape::terminal(failure.message.lines().next().unwrap_or_default())
        ),
        Event::JobSkipped {
            job,
            interrupted: true,
            ..
        } => format!(
            "  skip {}: not started: the run was interrupted",
            jobs[*job].label
        ),
        Event::JobSkipped {
            job,
            failed_upstream,
            ..
        } => {
            format!(
                "  skip {}: upstream `{failed_upstream}` failed",
                jobs[*job].label
            )
        }
        Event::Warning { job, message, .. } => format!(
            "warning: {}: {}",
            jobs[*job].label,
            escape::terminal(message)
        ),
        Event::Started { .. } | Event::JobStarted { .. } | Event::Progress { .. } => return None,
    };
    Some(line)
}

/// A reason to run in a few words, fit for a terminal: `param n: 3 -> 4`, `new`.
pub fn reason_short(reason: &Reason) -> String {
    let short = match reason.kind {
        ReasonKind::NeverRun => "new".to_string(),
        ReasonKind::ParamChanged => format!("param {}", reason.detail),
        ReasonKind::PluginChanged => "plugin changed".to_string(),
        ReasonKind::ToolsChanged
        | ReasonKind::ModeChanged
        | ReasonKind::UpstreamChanged
        | ReasonKind::SourcesChanged
        | ReasonKind::OutputChanged => reason.detail.clone(),
        ReasonKind::FailedLastTime => "failed last time".to_string(),
        ReasonKind::Forced => "forced".to_string(),
    };
    escape::terminal(&short).into_owned()
}

/// The final `N jobs: …` line.
fn summary_line(summary: &Summary) -> String {
    let total = summary.ran + summary.cached + summary.failed + summary.skipped + summary.not_run;
    let mut line = format!(
        "{total} jobs: {} ran, {} cached, {} failed, {} skipped",
        summary.ran, summary.cached, summary.failed, summary.skipped
    );
    if summary.not_run > 0 {
        line.push_str(&format!(", {} not run", summary.not_run));
    }
    if summary.interrupted {
        line.push_str(" (interrupted)");
    }
    line
}
