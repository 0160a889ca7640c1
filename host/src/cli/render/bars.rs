//! Live progress bars on a terminal.
//!
//! One bar for the run (jobs settled out of all, how many ran, are running, were cached
//! or failed, and an ETA) and one line per running job under it: a spinner with the job's
//! stage and parameters, which becomes a bar once the plugin reports its own progress.
//! Jobs that ran or failed scroll above the bars as the same lines [`super::lines`] prints.
//! "running" counts the jobs that hold one of the `-j` slots: a job whose output waits to
//! be committed (sealed) no longer does, and its line goes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Cached, Context, columns, event_line, summary_line};
use crate::graph::JobIndex;
use crate::sched::{Event, Summary};

const TICK: Duration = Duration::from_millis(120);

pub struct Bars {
    pub(super) context: Context,
    /// Templates of a running job's line: before and after its plugin reports progress.
    job_spinner: String,
    job_bar: String,
    multi: MultiProgress,
    main: ProgressBar,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: HashMap<JobIndex, ProgressBar>,
    ran: usize,
    cached: usize,
    cached_by_stage: Cached,
    failed: usize,
    skipped: usize,
    /// Time spent by the jobs that ran, for the ETA.
    ran_for: Duration,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("progress templates are valid")
        .progress_chars("=> ")
}

impl Bars {
    pub fn new(context: Context) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let main = multi.add(ProgressBar::new(0));
        // A bar only where it fits beside the counts; the message is cut to the width.
        // A terminal that does not say how wide it is gets bars only when asked for them.
        let columns = columns().unwrap_or(80);
        main.set_style(style(if columns >= 60 {
            "{spinner:.cyan} [{bar:20.cyan/blue}] {pos}/{len} {wide_msg}"
        } else {
            "{spinner:.cyan} {pos}/{len} {wide_msg}"
        }));
        main.enable_steady_tick(TICK);
        // Labels padded to the longest (as far as the width allows), so job bars line up.
        let count = context.jobs().len();
        let longest = (0..count)
            .map(|j| context.label(j).chars().count())
            .max()
            .unwrap_or(0);
        let width = longest.min(columns.saturating_sub(32)).max(8);
        let (job_spinner, job_bar) = if columns >= 60 {
            (
                format!("  {{spinner:.green}} {{msg:{width}!}} {{elapsed:>4}}"),
                format!(
                    "  {{spinner:.green}} {{msg:{width}!}} [{{bar:20.green/white}}] {{pos}}/{{len}}"
                ),
            )
        } else {
            (
                "  {spinner:.green} {wide_msg}".to_string(),
                "  {spinner:.green} {wide_msg} {pos}/{len}".to_string(),
            )
        };
        Bars {
            context,
            job_spinner,
            job_bar,
            multi,
            main,
            state: Mutex::default(),
        }
    }

    fn println(&self, line: &str) {
        // Hidden when the terminal went away; nothing useful to do about it then.
        let _ = self.multi.println(line);
    }

    pub fn event(&self, event: &Event) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Started { jobs } => self.main.set_length(*jobs as u64),
            Event::JobStarted { job, .. } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(style(&self.job_spinner));
                bar.set_message(self.context.label(*job));
                bar.enable_steady_tick(TICK);
                state.running.insert(*job, bar);
            }
            Event::Progress { job, done, total } => {
                if let Some(bar) = state.running.get(job) {
                    if bar.length().is_none() {
                        bar.set_style(style(&self.job_bar));
                    }
                    bar.set_length(*total);
                    bar.set_position(*done);
                }
            }
            Event::JobSealed { job } => {
                if let Some(bar) = state.running.remove(job) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
            }
            Event::JobFinished { job, duration, .. } => {
                state.ran += 1;
                state.ran_for += *duration;
                self.settle(&mut state, *job);
            }
            Event::JobCached { job, .. } => {
                state.cached += 1;
                state.cached_by_stage.add(&self.context, *job);
                self.settle(&mut state, *job);
            }
            Event::JobFailed { job, failure, .. } => {
                // An interrupted job is not counted as failed (see `Summary::not_run`).
                state.failed += usize::from(failure.kind != crate::sched::FailureKind::Interrupted);
                self.settle(&mut state, *job);
            }
            Event::JobSkipped { job, .. } => {
                state.skipped += 1;
                self.settle(&mut state, *job);
            }
            Event::Warning { .. } | Event::JobRetried { .. } => {}
        }
        let cached = matches!(event, Event::JobCached { .. });
        if let Some(line) = event_line(&self.context, event)
            && (!cached || self.context.verbose)
        {
            self.println(&line);
        }
        self.main.set_message(self.status(&state));
    }

    /// A job reached its outcome: its line goes, the run bar moves.
    fn settle(&self, state: &mut State, job: JobIndex) {
        if let Some(bar) = state.running.remove(&job) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.main.inc(1);
    }

    fn status(&self, state: &State) -> String {
        let mut parts = vec![format!("{} ran", state.ran)];
        if !state.running.is_empty() {
            parts.push(format!("{} running", state.running.len()));
        }
        parts.push(format!("{} cached", state.cached));
        if state.failed > 0 {
            parts.push(format!("{} failed", state.failed));
        }
        if state.skipped > 0 {
            parts.push(format!("{} skipped", state.skipped));
        }
        if let Some(eta) = self.eta(state) {
            parts.push(format!("ETA {}", human_duration(eta)));
        }
        parts.join(", ")
    }

    /// The mean time of the jobs that ran, times the jobs left, over the jobs at once.
    fn eta(&self, state: &State) -> Option<Duration> {
        let settled = state.ran + state.cached + state.failed + state.skipped;
        let left = (self.main.length()? as usize).saturating_sub(settled);
        if state.ran == 0 || left == 0 {
            return None;
        }
        let mean = state.ran_for / state.ran as u32;
        let waves = left.div_ceil(self.context.parallelism.clamp(1, left));
        Some(mean * waves as u32)
    }

    pub fn summary(&self, summary: &Summary) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for bar in state.running.values() {
            bar.finish_and_clear();
        }
        self.main.finish_and_clear();
        let _ = self.multi.clear();
        if !self.context.verbose {
            for line in state.cached_by_stage.lines() {
                errln!("{line}");
            }
        }
        drop(state);
        errln!("{}", summary_line(summary));
    }
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}s", s.max(1))
    }
}
