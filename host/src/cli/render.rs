//! Rendering run events for a person: one line per finished job, failures in full.

use std::io::Write;
use std::sync::Mutex;

use crate::sched::{Event, Summary};

/// Prints events to stderr; `labels` names each job (stage and parameters).
pub struct Human {
    labels: Vec<String>,
    out: Mutex<std::io::Stderr>,
}

impl Human {
    pub fn new(labels: Vec<String>) -> Human {
        Human { labels, out: Mutex::new(std::io::stderr()) }
    }

    pub fn event(&self, event: &Event) {
        let line = match event {
            Event::JobFinished { job, id, duration, .. } => {
                format!("   ran {} {} ({:.2}s)", self.labels[*job], short(id), duration.as_secs_f64())
            }
            Event::JobCached { job, id, .. } => format!("cached {} {}", self.labels[*job], short(id)),
            Event::JobFailed { job, id, failure, .. } => {
                let mut lines = failure.lines();
                let mut text = format!("FAILED {} {}: {}", self.labels[*job], short(id), lines.next().unwrap_or_default());
                for line in lines {
                    text.push_str(&format!("\n    | {line}"));
                }
                text.push_str(&format!("\n    whole log: repx log {}", short(id)));
                text
            }
            Event::JobSkipped { job, failed_upstream, .. } => {
                format!("  skip {}: upstream `{failed_upstream}` failed", self.labels[*job])
            }
            Event::Warning { job, message, .. } => format!("warning: {}: {message}", self.labels[*job]),
            Event::Started { .. } | Event::JobStarted { .. } | Event::Progress { .. } => return,
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{line}");
    }

    pub fn summary(&self, summary: &Summary) {
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
        let _ = writeln!(self.out.lock().unwrap_or_else(|e| e.into_inner()), "{line}");
    }
}

/// The short form of a job id that messages show.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// `stage` plus its parameters as `key=value`, for a line that tells jobs apart.
pub fn label(stage: &str, params: &std::collections::BTreeMap<String, serde_json::Value>) -> String {
    if params.is_empty() {
        return stage.to_string();
    }
    let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{stage} [{}]", params.join(" "))
}
