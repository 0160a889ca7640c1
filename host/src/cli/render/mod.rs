//! Rendering run events: what a person or another tool sees while a run goes on.
//!
//! The scheduler emits [`Event`]s and never prints; [`Reporter`] turns them into one of
//! four forms (`repx run --progress`, `--json`):
//! - [`Format::Bars`]: live progress bars on a terminal (jobs done, running, cached and
//!   failed, the running stages with their own progress, an ETA), with a line above the
//!   bars for each job that ran or failed;
//! - [`Format::Lines`]: one plain line per job that ran or failed, for logs, pipes and
//!   terminals of unknown width (`script`'s pseudo-terminal is 0×0);
//! - [`Format::Quiet`]: failures and warnings only;
//! - [`Format::Json`]: one JSON object per line on stdout, for other tools.
//!
//! Quiet by default: in the human forms, cached jobs are one line per stage at the end
//! (`cached  point  300 jobs`), unless verbose, which lists each. A job's label shows its
//! stage and the parameters its stage sweeps in this run, then the ones that are the same
//! for all its jobs while the label fits its width ([`Labels`]).
//!
//! Failures are shown in full in the human forms: stage and parameters, exit status,
//! the tail of the plugin's stderr, and the command that prints the whole log. What a
//! plugin wrote (its stderr, its warnings) is shown through [`escape::terminal`], a line
//! at a time under a `|` margin, so it can neither drive the terminal nor pass for a line
//! of repx's own.

mod bars;
mod json;
mod lines;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{RwLock, RwLockReadGuard};

use serde_json::Value;

use super::escape;
use crate::sched::{Event, FailureKind, Reason, ReasonKind, Summary};
use crate::store::Outputs;

/// How run events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Lines,
    Bars,
    /// Failures and warnings only, then the counts.
    Quiet,
    Json,
}

/// `repx run --progress`: how a person sees a run go on.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Progress {
    /// Bars on a terminal that says how wide it is; plain lines elsewhere.
    #[default]
    Auto,
    /// Bars whenever stderr is a terminal (80 columns if it does not say).
    Bars,
    /// One line per job that ran or failed.
    Plain,
    /// Only failures, warnings and the closing counts.
    None,
}

impl Format {
    /// JSON when asked for; else what `progress` asks for, bars only where they can be
    /// drawn: on a terminal, and for `auto` one that is not `TERM=dumb` and has a width
    /// (`script`'s pseudo-terminal is 0×0, and bars there would be one endless line).
    pub fn detect(json: bool, progress: Progress) -> Format {
        if json {
            return Format::Json;
        }
        let terminal = std::io::stderr().is_terminal();
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        match progress {
            Progress::Plain => Format::Lines,
            Progress::None => Format::Quiet,
            Progress::Bars if terminal => Format::Bars,
            Progress::Auto if terminal && !dumb && columns().is_some() => Format::Bars,
            Progress::Auto | Progress::Bars => Format::Lines,
        }
    }
}

/// The columns of the terminal on stderr, when it is one that says (neither 0 nor unknown).
pub fn columns() -> Option<usize> {
    console::Term::stderr()
        .size_checked()
        .map(|(_, columns)| usize::from(columns))
}

/// The columns a label may take on a line whose terminal width is unknown.
const LABEL_WIDTH_UNKNOWN: usize = 80;
/// What a line needs beside its label: the verb, the id, the duration.
const LINE_BESIDE_LABEL: usize = 32;

/// What a reporter knows of a job besides what its events carry.
pub struct JobInfo {
    pub stage: String,
    pub params: std::sync::Arc<BTreeMap<String, Value>>,
    /// Its stage's limits and how they grow with each retry: what each attempt ran with.
    pub limits: crate::lab::Limits,
    pub escalate: crate::lab::Escalation,
}

/// Where the run's facts come from: the jobs by index, and the store's job directory.
pub struct Context {
    /// Grows when a fan-out adds jobs to a run (see [`Reporter::add_jobs`]).
    jobs: RwLock<Vec<JobInfo>>,
    /// Where a done job's output is.
    pub outputs: Outputs,
    /// Jobs run at once (`-j`), for the ETA.
    pub parallelism: usize,
    /// Each cached job on a line of its own, not a count per stage.
    pub verbose: bool,
    /// Made when a first label is asked for: a run whose jobs are all cached shows none.
    labels: RwLock<Option<Labels>>,
    width: usize,
}

impl Context {
    pub fn new(jobs: Vec<JobInfo>, outputs: Outputs, parallelism: usize, verbose: bool) -> Context {
        let width = columns().map_or(LABEL_WIDTH_UNKNOWN, |c| {
            c.saturating_sub(LINE_BESIDE_LABEL).max(24)
        });
        Context {
            jobs: RwLock::new(jobs),
            outputs,
            parallelism,
            verbose,
            labels: RwLock::new(None),
            width,
        }
    }

    /// The jobs known so far.
    fn jobs(&self) -> RwLockReadGuard<'_, Vec<JobInfo>> {
        self.jobs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn output(&self, id: &str) -> PathBuf {
        self.outputs.of(id)
    }

    /// The job's label, fitted to the line's width (see [`Labels`]).
    pub fn label(&self, job: usize) -> String {
        let jobs = self.jobs();
        let read = |labels: &Option<Labels>| {
            labels
                .as_ref()
                .map(|l| l.fit(&jobs[job].stage, &jobs[job].params))
        };
        if let Some(label) = read(&self.labels.read().unwrap_or_else(|e| e.into_inner())) {
            return label;
        }
        let mut labels = self.labels.write().unwrap_or_else(|e| e.into_inner());
        let labels = labels.get_or_insert_with(|| Labels::new(&jobs, self.width));
        labels.fit(&jobs[job].stage, &jobs[job].params)
    }
}

/// A run's job labels: `stage [swept… constant…]`. The parameters a stage sweeps in the
/// run (those whose values differ among its jobs) come first and are always shown: they
/// tell its jobs apart. Those that are the same for all of them follow, in key order, as
/// long as the label stays within its width; `…` says some were left out.
struct Labels {
    /// By stage: the parameters whose values differ among its jobs.
    swept: HashMap<String, BTreeSet<String>>,
    width: usize,
}

impl Labels {
    fn new(jobs: &[JobInfo], width: usize) -> Labels {
        let mut first: HashMap<&str, &BTreeMap<String, Value>> = HashMap::new();
        let mut swept: HashMap<String, BTreeSet<String>> = HashMap::new();
        for job in jobs {
            let first = *first.entry(job.stage.as_str()).or_insert(&job.params);
            let keys = first.keys().chain(job.params.keys());
            for key in keys {
                if first.get(key) != job.params.get(key) {
                    let stage = swept.entry(job.stage.clone()).or_default();
                    if !stage.contains(key) {
                        stage.insert(key.clone());
                    }
                }
            }
        }
        Labels { swept, width }
    }

    fn fit(&self, stage: &str, params: &BTreeMap<String, Value>) -> String {
        if params.is_empty() {
            return escape::terminal(stage).into_owned();
        }
        let none = BTreeSet::new();
        let swept = self.swept.get(stage).unwrap_or(&none);
        let part = |(k, v): (&String, &Value)| format!("{k}={v}");
        let mut parts: Vec<String> = params
            .iter()
            .filter(|(k, _)| swept.contains(*k))
            .map(part)
            .collect();
        // `stage [` and `]`, and a space before each part.
        let mut length =
            stage.chars().count() + 2 + parts.iter().map(|p| p.chars().count() + 1).sum::<usize>();
        let mut left_out = false;
        for constant in params.iter().filter(|(k, _)| !swept.contains(*k)) {
            let constant = part(constant);
            let length_with = length + constant.chars().count() + 1;
            if left_out || length_with > self.width {
                left_out = true;
                continue;
            }
            length = length_with;
            parts.push(constant);
        }
        if left_out {
            parts.push("…".to_string());
        }
        escape::terminal(&format!("{stage} [{}]", parts.join(" "))).into_owned()
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
            Format::Lines => Reporter::Lines(lines::Lines::new(context, false)),
            Format::Quiet => Reporter::Lines(lines::Lines::new(context, true)),
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
        // What a stage sweeps may change with the jobs added.
        *context.labels.write().unwrap_or_else(|e| e.into_inner()) = None;
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

/// Cached jobs by stage, in the order their stages first had one, for the human forms'
/// closing lines.
#[derive(Default)]
struct Cached {
    by_stage: Vec<(String, usize)>,
}

impl Cached {
    fn add(&mut self, context: &Context, job: usize) {
        let jobs = context.jobs();
        let stage = &jobs[job].stage;
        match self.by_stage.iter_mut().find(|(s, _)| s == stage) {
            Some((_, n)) => *n += 1,
            None => self.by_stage.push((stage.clone(), 1)),
        }
    }

    /// `cached  point  300 jobs`: one line per stage that had cached jobs, names aligned.
    fn lines(&self) -> Vec<String> {
        let width = self
            .by_stage
            .iter()
            .map(|(s, _)| s.chars().count())
            .max()
            .unwrap_or(0);
        self.by_stage
            .iter()
            .map(|(stage, n)| {
                let jobs = if *n == 1 { "job" } else { "jobs" };
                let stage = escape::terminal(stage);
                format!("cached  {stage:<width$}  {n} {jobs}")
            })
            .collect()
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
fn event_line(context: &Context, event: &Event) -> Option<String> {
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
                context.label(*job),
                short(id),
                duration.as_secs_f64()
            );
            if let Some(reason) = reason {
                line.push_str(&format!(" [{}]", reason_short(reason)));
            }
            line
        }
        Event::JobCached { job, id, .. } => format!("cached {} {}", context.label(*job), short(id)),
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
                context.label(*job),
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
            context.label(*job),
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
            context.label(*job)
        ),
        Event::JobSkipped {
            job,
            failed_upstream,
            ..
        } => {
            format!(
                "  skip {}: upstream `{failed_upstream}` failed",
                context.label(*job)
            )
        }
        Event::Warning { job, message, .. } => format!(
            "warning: {}: {}",
            context.label(*job),
            escape::terminal(message)
        ),
        Event::Started { .. }
        | Event::JobStarted { .. }
        | Event::JobSealed { .. }
        | Event::Progress { .. } => return None,
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
        ReasonKind::FailedLastTime if reason.detail.starts_with("it was interrupted") => {
            "interrupted last time".to_string()
        }
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
