//! One JSON object per line on stdout, for other tools.
//!
//! A failed attempt that runs again is `job_retried`, with its `attempt` (from 1), `kind`,
//! `error` and the `limits` it ran with (`{memory, time_s}`, memory in bytes); a finished
//! job carries the `attempt` that succeeded and its `limits`.
//! Started and finished jobs carry the `reason` they ran for, `{kind, detail}`: `kind` is
//! one of `never_run`, `param_changed`, `plugin_changed`, `tools_changed`, `mode_changed`,
//! `upstream_changed`, `sources_changed`, `output_changed`, `failed_last_time`, `forced`.
//!
//! Every object has an `event` field: `run_started`, `job_started`, `job_sealed`,
//! `job_finished`, `job_cached`, `job_failed`, `job_retried`, `job_skipped`, `progress`,
//! `warning`, `run_finished`, and a `time`: when repx emitted it, in UTC, RFC 3339 with
//! milliseconds (`2026-12-05T19:50:01.123Z`). `job_sealed` says a started job ran and its
//! output waits to be committed: from then on it no longer counts against `-j`, so the jobs
//! started and neither sealed nor failed are never more than `-j`; `job_finished` follows
//! once the output is committed. Job
//! events carry the job's `id`, `stage` and `params`; the id is `null` only for a job
//! skipped downstream of a failed impure job (its id depends on an output that does not
//! exist). Finished and cached jobs carry their `output` directory; finished and failed
//! ones their `duration_s`: for a failed job, from its start to its failure as this run
//! saw them (`null` if it failed before it started, as when SLURM refuses a batch). Failed
//! jobs carry the `error`, its `kind` (`exit_status`, `trap`, `limit` with the `limit` that
//! ended it: `memory`, `time`, `output` or `files`; `missing_output`, `tool_refused`,
//! `interrupted`, `upstream_failed`, `grants_changed`, `refused`, `over_budget` (it asks
//! for more memory than `--mem` holds, and never started), `store`, `other`) and the
//! `log` command; skipped ones the `failed_upstream` stage, and `interrupted` when they were
//! not started because the run was interrupted.
//! The last line counts the jobs by outcome. A job's `progress` events are the reports its
//! plugin made that the host let through: at most one every
//! [`PROGRESS_EVERY`](crate::wasm::host::PROGRESS_EVERY), and the first that says it is
//! complete (see [`crate::wasm::host::Gate`]), however often the plugin calls.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::{Context, short};
use crate::graph::JobIndex;
use crate::sched::{Event, FailureKind, Reason, Summary};

/// A job's reason to run: `{kind, detail}`, or `null`.
fn reason_json(reason: Option<&Reason>) -> Value {
    match reason {
        Some(reason) => json!({"kind": reason.kind.as_str(), "detail": reason.detail}),
        None => Value::Null,
    }
}

pub struct Json {
    pub(super) context: Context,
    started: Instant,
    /// Started jobs: their ids, for their progress events, and when they started, for
    /// the duration of those that fail (the scheduler times only the jobs that finish).
    started_jobs: Mutex<HashMap<JobIndex, (String, Instant)>>,
    out: Mutex<std::io::Stdout>,
}

impl Json {
    pub fn new(context: Context) -> Json {
        Json {
            context,
            started: Instant::now(),
            started_jobs: Mutex::default(),
            out: Mutex::new(std::io::stdout()),
        }
    }

    fn job(&self, event: &str, job: JobIndex, id: Option<&str>) -> Map<String, Value> {
        let jobs = self.context.jobs();
        let info = &jobs[job];
        let mut object = Map::new();
        object.insert("event".into(), event.into());
        object.insert("id".into(), id.into());
        object.insert("stage".into(), info.stage.clone().into());
        object.insert("params".into(), json!(*info.params));
        object
    }

    /// The memory (bytes) and time (seconds) limits of `job`'s attempt `attempt`.
    fn limits(&self, job: JobIndex, attempt: u32) -> Value {
        let jobs = self.context.jobs();
        let info = &jobs[job];
        let limits = info.escalate.at(info.limits, attempt);
        json!({"memory": limits.memory, "time_s": limits.time.as_secs_f64()})
    }

    fn started_id(&self, job: JobIndex) -> Option<String> {
        self.started_jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&job)
            .map(|(id, _)| id.clone())
    }

    pub fn event(&self, event: &Event) {
        let object = match event {
            Event::Started { jobs } => {
                let mut object = Map::new();
                object.insert("event".into(), "run_started".into());
                object.insert("jobs".into(), (*jobs).into());
                object
            }
            Event::JobStarted {
                job, id, reason, ..
            } => {
                self.started_jobs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(*job, (id.clone(), Instant::now()));
                let mut object = self.job("job_started", *job, Some(id));
                object.insert("reason".into(), reason_json(reason.as_ref()));
                object
            }
            Event::JobFinished {
                job,
                id,
                duration,
                reason,
                attempt,
                ..
            } => {
                let mut object = self.job("job_finished", *job, Some(id));
                object.insert("attempt".into(), (*attempt).into());
                object.insert("limits".into(), self.limits(*job, *attempt));
                object.insert("reason".into(), reason_json(reason.as_ref()));
                object.insert("duration_s".into(), duration.as_secs_f64().into());
                object.insert(
                    "output".into(),
                    self.context.output(id).to_string_lossy().into(),
                );
                object
            }
            Event::JobSealed { job } => {
                let id = self.started_id(*job);
                self.job("job_sealed", *job, id.as_deref())
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
                let started = self
                    .started_jobs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(job)
                    .map(|(_, at)| at.elapsed().as_secs_f64());
                object.insert("duration_s".into(), started.into());
                object.insert("error".into(), failure.message.clone().into());
                object.insert("kind".into(), failure.kind.as_str().into());
                if let FailureKind::Limit(limit) = failure.kind {
                    object.insert("limit".into(), limit.as_str().into());
                }
                object.insert("log".into(), format!("repx log {}", short(id)).into());
                object
            }
            Event::JobRetried {
                job,
                id,
                attempt,
                failure,
                ..
            } => {
                let mut object = self.job("job_retried", *job, Some(id));
                object.insert("attempt".into(), (*attempt).into());
                object.insert("limits".into(), self.limits(*job, *attempt));
                object.insert("error".into(), failure.message.clone().into());
                object.insert("kind".into(), failure.kind.as_str().into());
                if let FailureKind::Limit(limit) = failure.kind {
                    object.insert("limit".into(), limit.as_str().into());
                }
                object
            }
            Event::JobSkipped {
                job,
                id,
                failed_upstream,
                interrupted,
                ..
            } => {
                let mut object = self.job("job_skipped", *job, id.as_deref());
                object.insert("failed_upstream".into(), failed_upstream.clone().into());
                object.insert("interrupted".into(), (*interrupted).into());
                object
            }
            Event::Progress { job, done, total } => {
                let id = self.started_id(*job);
                let mut object = self.job("progress", *job, id.as_deref());
                object.insert("done".into(), (*done).into());
                object.insert("total".into(), (*total).into());
                object
            }
            Event::Warning { job, message, .. } => {
                let id = self.started_id(*job);
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

    fn write(&self, mut value: Value) {
        if let Value::Object(object) = &mut value {
            object.insert("time".into(), timestamp(SystemTime::now()).into());
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A closed pipe only means nobody is reading any more.
        let _ = writeln!(out, "{value}").and_then(|()| out.flush());
    }
}

/// `time` as RFC 3339 in UTC with milliseconds: `2026-12-05T19:50:01.123Z`.
fn timestamp(time: SystemTime) -> String {
    let ms = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let (secs, ms) = ((ms / 1000) as u64, ms % 1000);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = super::super::show_job::civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::timestamp;

    #[test]
    fn timestamps_are_rfc3339_in_utc_with_milliseconds() {
        let at = UNIX_EPOCH + Duration::from_millis(1_796_500_201_123);
        assert_eq!(timestamp(at), "2026-12-05T19:50:01.123Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
