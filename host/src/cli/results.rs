//! `repx results`: a run's jobs as a table, one row per job, with its parameters and the
//! numbers its plugin wrote to `metrics.json` in its output.
//!
//! Which jobs: every job of the run, or of `--stage` when given; a job without some
//! parameter or metric has an empty cell there, so one table holds a sweep's points and the
//! job that gathers them. Nothing runs: rows of jobs not done yet have a state and
//! parameters but no metrics.
//!
//! A plugin names its metrics and chooses their values, so in the table and in CSV every
//! cell goes through [`escape::terminal`] (control characters shown as `\u{1b}`, `\n`), and
//! in CSV also through [`escape::csv_cell`] (no cell a spreadsheet takes for a formula);
//! `--format json` has the exact strings, escaped by JSON itself.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde_json::Value;

use super::error::{CliError, invalid};
use super::escape;
use super::inspect::open;
use super::render::short;
use super::{Cli, TableFormat, exit};
use crate::graph::JobGraph;
use crate::lab::{Lab, did_you_mean};
use crate::plan::Plan;
use crate::store::Store;

/// The file in a job's output whose numbers become columns.
pub const METRICS_FILE: &str = "metrics.json";

/// Where [`Results::header`] puts the job's short id and its state.
pub const ID_COLUMN: usize = 0;
pub const STATE_COLUMN: usize = 2;

/// One job of a run, as the results table shows it.
pub struct Row {
    /// The full id, when it follows from the store (not downstream of an impure job that
    /// has not run).
    pub id: Option<String>,
    pub stage: String,
    /// `done`, `failed` or `todo`.
    pub state: &'static str,
    pub params: BTreeMap<String, Value>,
    /// `metrics.json` flattened: nested keys joined with `.`; scalars only.
    pub metrics: BTreeMap<String, Value>,
    pub duration_ms: Option<u64>,
    /// What it used, as its record says (see [`crate::store::Usage`]).
    pub usage: Option<crate::store::Usage>,
    pub output: Option<PathBuf>,
}

/// A run's rows and the union of their parameter and metric names, in column order.
pub struct Results {
    pub run: String,
    pub params: Vec<String>,
    pub metrics: Vec<String>,
    pub rows: Vec<Row>,
}

/// The name of the one run to show: `run` if given and known, else the lab's only run.
pub fn pick_run(lab: &Lab, run: Option<&str>) -> Result<String, CliError> {
    match run {
        Some(run) if lab.runs.contains_key(run) => Ok(run.to_string()),
        Some(run) => {
            let hint = did_you_mean(run, lab.runs.keys().map(String::as_str));
            Err(invalid(format!(
                "no run `{run}` in {}{hint}; see `repx list runs`",
                lab.file.display()
            )))
        }
        None if lab.runs.len() == 1 => Ok(lab.runs.keys().next().cloned().unwrap_or_default()),
        None => Err(invalid(format!(
            "{} has {} runs: name one ({})",
            lab.file.display(),
            lab.runs.len(),
            lab.runs.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Reads the rows of `run` (its jobs of `stage`, when given) from the store.
pub fn collect(
    lab: &Lab,
    store: &Store,
    run: &str,
    stage: Option<&str>,
) -> Result<Results, CliError> {
    let graph = JobGraph::expand(lab, &[run], None);
    let plan = Plan::new(lab.clone(), graph, store)?;
    let ids = plan.static_ids(store);
    let states = crate::sched::explain::states(&plan, store);
    let in_run = &plan.graph.runs[run];
    if let Some(stage) = stage
        && !in_run.iter().any(|j| plan.graph.jobs[*j].stage == stage)
    {
        let mut stages: Vec<&str> = in_run
            .iter()
            .map(|j| plan.graph.jobs[*j].stage.as_str())
            .collect();
        stages.sort_unstable();
        stages.dedup();
        let hint = did_you_mean(stage, stages.iter().copied());
        return Err(invalid(format!(
            "run `{run}` has no stage `{stage}`{hint}; its stages: {}",
            stages.join(", ")
        )));
    }
    let mut rows = Vec::new();
    for &index in in_run {
        let job = &plan.graph.jobs[index];
        if stage.is_some_and(|s| s != job.stage) {
            continue;
        }
        let id = ids[index].clone();
        let record = id.as_deref().and_then(|id| store.done(id));
        let state = states[index].as_str();
        let output = record.as_ref().map(|r| store.output_dir(&r.id));
        let metrics = output
            .as_ref()
            .map(|out| read_metrics(&out.join(METRICS_FILE)))
            .unwrap_or_default();
        rows.push(Row {
            id,
            stage: job.stage.clone(),
            state,
            params: (*job.params).clone(),
            metrics,
            duration_ms: record.as_ref().map(|r| r.duration_ms),
            usage: record.as_ref().and_then(|r| r.usage),
            output,
        });
    }
    let mut params = Vec::new();
    let mut metrics = Vec::new();
    for row in &rows {
        for key in row.params.keys() {
            if !params.contains(key) {
                params.push(key.clone());
            }
        }
        for key in row.metrics.keys() {
            if !metrics.contains(key) {
                metrics.push(key.clone());
            }
        }
    }
    params.sort();
    metrics.sort();
    Ok(Results {
        run: run.to_string(),
        params,
        metrics,
        rows,
    })
}

/// The scalar values of a `metrics.json`, flattened; empty when it is missing, not a
/// regular file, or not an object.
fn read_metrics(path: &std::path::Path) -> BTreeMap<String, Value> {
    let mut metrics = BTreeMap::new();
    // A plugin shapes its output as it likes: a link named metrics.json could lead to any
    // file of the host (`/dev/zero`, someone's secrets), so links are not followed.
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        return metrics;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return metrics;
    };
    if let Ok(Value::Object(object)) = serde_json::from_str::<Value>(&text) {
        flatten("", &Value::Object(object), &mut metrics);
    }
    metrics
}

fn flatten(prefix: &str, value: &Value, into: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, value, into);
            }
        }
        Value::Array(_) | Value::Null => {}
        scalar => {
            into.insert(prefix.to_string(), scalar.clone());
        }
    }
}

impl Results {
    /// The column names: `id`, `stage`, `state`, the parameters, the metrics (prefixed
    /// `metrics.` where a parameter has the same name), `duration_s` and what the job used:
    /// `cpu_s` and `mem_mib` of the plugin, `tools_cpu_s` and `tools_rss_mib` of its tools.
    pub fn header(&self) -> Vec<String> {
        let mut header: Vec<String> = ["id", "stage", "state"].map(String::from).to_vec();
        header.extend(self.params.iter().cloned());
        for metric in &self.metrics {
            let clash = self.params.contains(metric) || header.contains(metric);
            header.push(if clash {
                format!("metrics.{metric}")
            } else {
                metric.clone()
            });
        }
        header.extend(USAGE_COLUMNS.map(String::from));
        header
    }

    /// Each row's cells, as text, in [`Results::header`] order.
    pub fn cells(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|row| {
                let mut cells = vec![
                    row.id.as_deref().map(short).unwrap_or("-").to_string(),
                    row.stage.clone(),
                    row.state.to_string(),
                ];
                cells.extend(self.params.iter().map(|p| text(row.params.get(p))));
                cells.extend(self.metrics.iter().map(|m| text(row.metrics.get(m))));
                cells.push(
                    row.duration_ms
                        .map(|ms| format!("{:.3}", ms as f64 / 1000.0))
                        .unwrap_or_default(),
                );
                cells.extend(usage_cells(row.usage.as_ref()).map(|v| match v {
                    Value::Null => String::new(),
                    v => v.to_string(),
                }));
                cells
            })
            .collect()
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                serde_json::json!({
                    "id": row.id,
                    "stage": row.stage,
                    "state": row.state,
                    "params": row.params,
                    "metrics": row.metrics,
                    "duration_s": row.duration_ms.map(|ms| ms as f64 / 1000.0),
                    "usage": usage_cells(row.usage.as_ref())
                        .into_iter()
                        .zip(&USAGE_COLUMNS[1..])
                        .map(|(v, k)| (k.to_string(), v))
                        .collect::<serde_json::Map<_, _>>(),
                    "output": row.output,
                })
            })
            .collect();
        serde_json::json!({ "run": self.run, "jobs": rows })
    }
}

/// The columns after the parameters and metrics: wall time, then what the job used.
const USAGE_COLUMNS: [&str; 5] = [
    "duration_s",
    "cpu_s",
    "mem_mib",
    "tools_cpu_s",
    "tools_rss_mib",
];

/// The usage columns but `duration_s`, rounded for a table; null where the record has none.
fn usage_cells(usage: Option<&crate::store::Usage>) -> [Value; 4] {
    let Some(u) = usage else {
        return [Value::Null, Value::Null, Value::Null, Value::Null];
    };
    let seconds = |us: u64| serde_json::json!((us as f64 / 1e6 * 1000.0).round() / 1000.0);
    let mib =
        |bytes: u64| serde_json::json!((bytes as f64 / f64::from(1 << 20) * 10.0).round() / 10.0);
    [
        seconds(u.cpu_us),
        mib(u.mem),
        seconds(u.tools_cpu_us),
        mib(u.tools_rss),
    ]
}

/// A value as a table cell: strings bare, everything else as JSON, missing as empty.
fn text(value: Option<&Value>) -> String {
    match value {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `cells` as CSV (RFC 4180: fields with commas, quotes or newlines quoted), each field
/// safe for a terminal and for a spreadsheet.
pub fn csv(header: &[String], cells: &[Vec<String>]) -> String {
    let field = |f: &String| escape::csv_cell(&escape::terminal(f)).into_owned();
    let mut out = String::new();
    for line in std::iter::once(header).chain(cells.iter().map(Vec::as_slice)) {
        out.push_str(&line.iter().map(field).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// `cells` as aligned columns, safe for a terminal; numbers right-aligned.
pub fn table(header: &[String], cells: &[Vec<String>]) -> String {
    let shown = |line: &[String]| -> Vec<String> {
        line.iter()
            .map(|cell| escape::terminal(cell).into_owned())
            .collect()
    };
    let header = &shown(header)[..];
    let cells: &Vec<Vec<String>> = &cells.iter().map(|row| shown(row)).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..header.len())
        .map(|c| {
            cells.iter().any(|r| !r[c].is_empty())
                && cells
                    .iter()
                    .all(|r| r[c].is_empty() || r[c].parse::<f64>().is_ok())
        })
        .collect();
    let mut out = String::new();
    for line in std::iter::once(header).chain(cells.iter().map(Vec::as_slice)) {
        let padded: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                // Padded by hand: a format width past 65,535 (a long parameter) panics.
                let pad = " ".repeat(widths[c].saturating_sub(cell.chars().count()));
                if numeric[c] {
                    format!("{pad}{cell}")
                } else {
                    format!("{cell}{pad}")
                }
            })
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn results(
    cli: &Cli,
    run: Option<&str>,
    stage: Option<&str>,
    format: TableFormat,
) -> Result<i32, CliError> {
    let (lab, store) = open(cli)?;
    let run = pick_run(&lab, run)?;
    let results = collect(&lab, &store, &run, stage)?;
    let text = match format {
        TableFormat::Table => table(&results.header(), &results.cells()),
        TableFormat::Csv => csv(&results.header(), &results.cells()),
        TableFormat::Json => format!("{:#}\n", results.to_json()),
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    Ok(exit::SUCCESS)
}
