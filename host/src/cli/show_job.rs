//! `repx show job`: everything about one job in one place: what it is (stage,
//! parameters, inputs), where it stands (state, output, timings) and the end of its log.
//!
//! Every value is printed through [`terminal`]: the log tail is the plugin's own text, and
//! the record, which names the parameters and the Nix path, is a file in the store.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::escape::terminal;
use super::render::short;
use crate::graph::{JobGraph, JobIndex, JobInput};
use crate::lab::{Lab, Mode};
use crate::plan::Plan;
use crate::sched::explain::{JobState, states};
use crate::store::Store;

/// How many lines of the log `show job` prints.
const LOG_TAIL_LINES: usize = 10;

/// The job with `id` in the lab's current runs, expanded as run in `mode`.
fn find(
    lab: &Lab,
    store: &Store,
    id: &str,
    mode: Option<Mode>,
) -> Option<(Plan, JobIndex, Vec<Option<String>>)> {
    let runs: Vec<&str> = lab.runs.keys().map(String::as_str).collect();
    let graph = JobGraph::expand(lab, &runs, mode);
    let plan = Plan::new(lab.clone(), graph, store).ok()?;
    let ids = plan.static_ids(store);
    let index = ids.iter().position(|i| i.as_deref() == Some(id))?;
    Some((plan, index, ids))
}

/// Shows job `id`; without a lab (an ad hoc run's job), what its record and logs say.
pub fn show(lab: Option<&Lab>, store: &Store, id: &str) {
    let record = store.record(id);
    let found = lab.and_then(|lab| {
        find(lab, store, id, None)
            .or_else(|| {
                record
                    .as_ref()
                    .and_then(|r| find(lab, store, id, Some(r.mode)))
            })
            .or_else(|| {
                [Mode::Pure, Mode::Impure]
                    .into_iter()
                    .find_map(|m| find(lab, store, id, Some(m)))
            })
    });
    // The lab's own state for the job (see `sched::explain::JobState`): an output in the
    // store that a run would not take (an impure job whose sources changed) is to do.
    let job_states = found.as_ref().map(|(plan, _, _)| states(plan, store));
    let planned = found
        .as_ref()
        .zip(job_states.as_ref())
        .map(|((_, index, _), states)| states[*index]);
    let state = match (
        &record,
        store.done(id).is_some(),
        store.failed_dir(id).is_dir(),
    ) {
        // An impure job whose last run failed keeps its earlier output, and its id.
        (_, true, true) if planned == Some(JobState::Failed) => {
            "failed (its output in the store is an earlier run's)"
        }
        (_, true, true) if planned == Some(JobState::Interrupted) => {
            "interrupted (its output in the store is an earlier run's)"
        }
        (_, true, _) if planned == Some(JobState::Todo) => {
            "todo (its output is out of date: `repx run --dry-run` says why)"
        }
        (_, true, _) => "done",
        (_, false, true) if store.was_interrupted(id) => "interrupted",
        (_, false, true) => "failed",
        (Some(_), false, false) => "output deleted",
        (None, false, false) => "not run",
    };
    let row = |key: &str, value: &dyn std::fmt::Display| {
        outln!("{:<10}{}", format!("{key}:"), terminal(&value.to_string()))
    };
    row("id", &id);
    let stage = record.as_ref().map(|r| r.stage.clone()).or_else(|| {
        found
            .as_ref()
            .map(|(p, i, _)| p.graph.jobs[*i].stage.clone())
    });
    row("stage", &stage.as_deref().unwrap_or("?"));
    let mode = record
        .as_ref()
        .map(|r| r.mode)
        .or_else(|| found.as_ref().map(|(p, i, _)| p.graph.jobs[*i].mode));
    if let Some(mode) = mode {
        let note = if mode == Mode::Impure {
            "  (not reproducible)"
        } else {
            ""
        };
        row("mode", &format!("{mode}{note}"));
    }
    row("state", &state);

    let params: Vec<String> = match (&record, &found) {
        (Some(record), _) => record
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        (None, Some((plan, index, _))) => plan.graph.jobs[*index]
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        (None, None) => Vec::new(),
    };
    row(
        "params",
        &if params.is_empty() {
            "(none)".to_string()
        } else {
            params.join(" ")
        },
    );

    match &found {
        Some((plan, index, ids)) => {
            let job = &plan.graph.jobs[*index];
            row("plugin", &plan.lab.stages[&job.stage].plugin);
            if job.inputs.is_empty() {
                row("inputs", &"(none)");
            } else {
                outln!("inputs:");
            }
            for (name, input) in &job.inputs {
                let upstream = |up: &JobIndex| {
                    let up_id = ids[*up].as_deref();
                    let up_state = job_states
                        .as_ref()
                        .map_or(JobState::Todo, |states| states[*up])
                        .as_str();
                    format!(
                        "{} {} ({up_state})",
                        plan.graph.jobs[*up].stage,
                        up_id.map_or("(pending)", short)
                    )
                };
                match input {
                    JobInput::Path(path) => {
                        let shown = terminal(&path.to_string_lossy()).into_owned();
                        match plan.snapshot_hash(job, path) {
                            Some(hash) => {
                                outln!("  {name} <- {shown} (snapshot {})", short(hash))
                            }
                            None => outln!("  {name} <- {shown} (live)"),
                        }
                    }
                    JobInput::Job(up) => outln!("  {name} <- {}", upstream(up)),
                    JobInput::Gather(ups) => {
                        outln!(
                            "  {name} <- every job of {} ({}):",
                            plan.graph.jobs[ups[0]].stage,
                            ups.len()
                        );
                        for up in ups {
                            outln!("    {}", upstream(up));
                        }
                    }
                }
            }
        }
        None if lab.is_none() => row("inputs", &"(no lab here to say)"),
        None => row("inputs", &"(the job is not in the lab's current runs)"),
    }

    if let Some(record) = &record {
        row("hash", &record.hash);
        let started_ms = record.finished_ms.saturating_sub(record.duration_ms);
        row("started", &when(started_ms));
        row("finished", &when(record.finished_ms));
        row(
            "duration",
            &format!("{:.3}s", record.duration_ms as f64 / 1000.0),
        );
        if let Some(usage) = record.usage {
            let seconds = |us: u64| format!("{:.3}s", us as f64 / 1e6);
            let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20));
            row(
                "cpu",
                &format!(
                    "{} plugin, {} tools",
                    seconds(usage.cpu_us),
                    seconds(usage.tools_cpu_us)
                ),
            );
            row(
                "memory",
                &format!(
                    "{} plugin (peak linear memory), {} tools (peak RSS)",
                    mib(usage.mem),
                    mib(usage.tools_rss)
                ),
            );
        }
        if let Some(attempt) = record.attempt {
            row(
                "attempt",
                &format!("{attempt} (the attempts before it failed)"),
            );
        }
    }
    attempts(store, id);
    if state == "done" {
        row("output", &store.output_dir(id).display());
        if let Some(nix) = record.as_ref().and_then(|r| r.nix.as_ref()) {
            row("nix", nix);
        }
    }

    let dir = if matches!(state, "failed" | "interrupted") {
        store.failed_dir(id)
    } else {
        store.job_dir(id)
    };
    for name in ["stderr", "stdout"] {
        if let Some(tail) = tail(&dir.join(name)) {
            outln!("{name} (last lines):");
            for line in tail {
                outln!("    | {}", terminal(&line));
            }
            break;
        }
    }
    outln!("whole log: repx log {}", short(id));
}

/// Every attempt the store kept of a retried (or failed) job: how it ended, the limits it
/// ran with, and where its logs are.
fn attempts(store: &Store, id: &str) {
    let attempts = store.attempts(id);
    if attempts.is_empty() {
        return;
    }
    outln!("attempts:");
    for (attempt, _) in attempts {
        let outcome = match (&attempt.failure, &attempt.limit) {
            (None, _) => "succeeded".to_string(),
            (Some(kind), Some(limit)) => format!("failed: {kind} ({limit})"),
            (Some(kind), None) => format!("failed: {kind}"),
        };
        let limits = format!(
            "memory {}, time {}",
            crate::lab::limits::bytes(attempt.memory),
            crate::lab::limits::duration(std::time::Duration::from_millis(attempt.time_ms))
        );
        outln!(
            "  {:<3}{:<26}{:<24}repx log {} --attempt {}",
            attempt.attempt,
            terminal(&outcome),
            limits,
            short(id),
            attempt.attempt
        );
    }
}

/// The last lines of a log file, if it has any.
fn tail(path: &Path) -> Option<Vec<String>> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<String> = text.lines().map(String::from).collect();
    if lines.is_empty() {
        return None;
    }
    Some(lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].to_vec())
}

/// A Unix time in milliseconds as `YYYY-MM-DD hh:mm:ss UTC (N ago)`.
pub(super) fn when(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ago = now.saturating_sub(secs);
    let ago = match ago {
        0..60 => format!("{ago}s ago"),
        60..3600 => format!("{}m ago", ago / 60),
        3600..86_400 => format!("{}h ago", ago / 3600),
        _ => format!("{}d ago", ago / 86_400),
    };
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC ({ago})",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn days_since_the_epoch_become_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_782), (2026, 11, 25));
    }
}
