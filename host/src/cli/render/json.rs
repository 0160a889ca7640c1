//! One JSON object per line on stdout, for other tools.
//!
//! Every object has an `event` field: `run_started`, `job_started`, `job_finished`,
//! `job_cached`, `job_failed`, `job_skipped`, `progress`, `warning`, `run_finished`. Job
//! events carry the job's `id` (when known), `stage` and `params`; finished and cached
//! jobs their `output` directory, finished ones their `duration_s`, failed ones the
//! `error` and the `log` command. The last line counts the jobs by outcome. A job's
//! `progress` events come at most every [`PROGRESS_EVERY`], and always when it is complete.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{Context, short};
use crate::graph::JobIndex;
use crate::sched::{Event, Summary};

/// The least time between two progress events of one job.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);

pub struct Json {
    context: Context,
    started: Instant,
    /// Ids of started jobs, for their progress events.
    ids: Mutex<HashMap<JobIndex, String>>,
    /// When each job's last progress event went out.
    progress: Mutex<HashMap<JobIndex, Instant>>,
    out: Mutex<std::io::Stdout>,
}

impl Json {
    pub fn new(context: Context) -> Json {
        Json {
            context,
            started: Instant::now(),
            ids: Mutex::default(),
            progress: Mutex::default(),
            out: Mutex::new(std::io::stdout()),
        }
    }

    fn job(&self, event: &str, job: JobIndex, id: Option<&str>) -> Map<String, Value> {
        let info = &self.context.jobs[job];
        let mut object = Map::new();
        object.insert("event".into(), event.into());
        if let Some(id) = id {
            object.insert("id".into(), id.into());
        }
        object.insert("stage".into(), info.stage.clone().into());
        object.insert("params".into(), json!(info.params));
        object
    }

    pub fn event(&self, event: &Event) {
        let object = match event {
            Event::Started { jobs } => {
                let mut object = Map::new();
                object.insert("event".into(), "run_started".into());
                object.insert("jobs".into(), (*jobs).into());
                object
            }
            Event::JobStarted { job, id, .. } => {
                self.ids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(*job, id.clone());
                self.job("job_started", *job, Some(id))
            }
            Event::JobFinished {
                job, id, duration, ..
            } => {
                let mut object = self.job("job_finished", *job, Some(id));
                object.insert("duration_s".into(), duration.as_secs_f64().into());
                object.insert(
                    "output".into(),
                    self.context.output(id).to_string_lossy().into(),
                );
                object
            }
            Event::JobCached { job, id, .. } => {
                let mut object = self.job("job_cached", *job, Some(id));
                object.insert(
                    "output".into(),
                    self.context.output(id).to_string_lossy().into(),
                );
                object
            }
            Event::JobFailed {
                job, id, failure, ..
            } => {
                let mut object = self.job("job_failed", *job, Some(id));
                object.insert("error".into(), failure.clone().into());
                object.insert("log".into(), format!("repx log {}", short(id)).into());
                object
            }
            Event::JobSkipped {
                job,
                failed_upstream,
                ..
            } => {
                let mut object = self.job("job_skipped", *job, None);
                object.insert("failed_upstream".into(), failed_upstream.clone().into());
                object
            }
            Event::Progress { job, done, total } => {
                let now = Instant::now();
                let mut last = self.progress.lock().unwrap_or_else(|e| e.into_inner());
                let due = last
                    .get(job)
                    .is_none_or(|t| now.duration_since(*t) >= PROGRESS_EVERY);
                if !due && done < total {
                    return;
                }
                last.insert(*job, now);
                drop(last);
                let id = self
                    .ids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(job)
                    .cloned();
                let mut object = self.job("progress", *job, id.as_deref());
                object.insert("done".into(), (*done).into());
                object.insert("total".into(), (*total).into());
                object
            }
            Event::Warning { job, message, .. } => {
                let id = self
                    .ids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(job)
                    .cloned();
                let mut object = self.job("warning", *job, id.as_deref());
                object.insert("message".into(), message.clone().into());
                object
            }
        };
        self.write(Value::Object(object));
    }

    pub fn summary(&self, summary: &Summary) {
        self.write(json!({
            "event": "run_finished",
            "ran": summary.ran,
            "cached": summary.cached,
            "failed": summary.failed,
            "skipped": summary.skipped,
            "not_run": summary.not_run,
            "interrupted": summary.interrupted,
            "duration_s": self.started.elapsed().as_secs_f64(),
        }));
    }

    fn write(&self, value: Value) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A closed pipe only means nobody is reading any more.
        let _ = writeln!(out, "{value}").and_then(|()| out.flush());
    }
}
