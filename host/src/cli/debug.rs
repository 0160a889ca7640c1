//! `repx debug JOB [--dir DIR]`: runs one job again, outside the store, and prints every
//! host call and file access its plugin makes.
//!
//! The job gets what a run would give it (the same policy: its inputs from the store, its
//! parameters, tools, limits, mode), but its output, scratch and logs go to a directory
//! of its own, which is kept for a look afterwards; nothing is committed or recorded. Its
//! upstream jobs must be done. An impure job still has the project at `/work`, as in a
//! run. The trace (see `wasm::trace`) is printed as the calls happen, each path escaped,
//! since the plugin chose it; a refused access shows with the error the plugin got.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{CliError, invalid};
use super::escape::terminal;
use super::inspect::open;
use super::render::{label, short};
use super::{Cli, exit};
use crate::graph::JobGraph;
use crate::plan::Plan;
use crate::store::Staging;
use crate::wasm::{Call, JobRun, Runtime, Tracer, host::Observer};

/// Prints each call as it completes.
struct Printer;

impl Tracer for Printer {
    fn call(&self, call: Call) {
        errln!(
            "  {:<8} {}  {}",
            call.what,
            terminal(&call.subject),
            terminal(&call.outcome)
        );
    }
}

impl Observer for Printer {
    fn progress(&self, done: u64, total: u64) {
        errln!("  progress {done}/{total}");
    }
    fn warn(&self, message: &str) {
        errln!("  warning  {}", terminal(message));
    }
}

pub fn debug(cli: &Cli, prefix: &str, dir: Option<&Path>) -> Result<i32, CliError> {
    let (lab, store) = open(cli)?;
    let runs: Vec<&str> = lab.runs.keys().map(String::as_str).collect();
    let graph = JobGraph::expand(&lab, &runs, None);
    let plan = Plan::new(lab, graph, &store)?;
    let ids = plan.static_ids(&store);
    let mut found: Vec<(usize, &String)> = ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| id.as_ref().map(|id| (i, id)))
        .filter(|(_, id)| id.starts_with(prefix))
        .collect();
    found.dedup_by(|a, b| a.1 == b.1);
    let (index, id) = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(invalid(format!(
                "no job of {} has an id starting with `{prefix}` (a job after an impure one \
                 has its id once that ran); see `repx list jobs`",
                plan.lab.file.display()
            )));
        }
        many => {
            return Err(invalid(format!(
                "`{prefix}` matches {} jobs: give more digits",
                many.len()
            )));
        }
    };
    let job = &plan.graph.jobs[index];
    let mut upstream_ids = std::collections::BTreeMap::new();
    for dep in job.deps() {
        let up = &plan.graph.jobs[dep];
        match &ids[dep] {
            Some(up_id) if store.done(up_id).is_some() => {
                upstream_ids.insert(dep, up_id.clone());
            }
            up_id => {
                let shown = up_id.as_deref().map_or("(pending)", short);
                return Err(invalid(format!(
                    "job {} needs {} {shown}, which is not done: `repx run {}` runs it (and \
                     what it needs), then debug again",
                    short(id),
                    label(&up.stage, &up.params),
                    short(id)
                )));
            }
        }
    }

    let root = match dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            std::env::temp_dir().join(format!("repx-debug-{}-{}", short(id), std::process::id()))
        }
    };
    let staging = scratch(&root, id)?;
    let policy = crate::sched::policy(&plan, &store, index, id, &staging, &upstream_ids)
        .map_err(|e| CliError::Failed(anyhow::anyhow!("preparing job {}: {e}", short(id))))?;
    let resources = &plan.stages[&job.stage];
    let printer = Arc::new(Printer);
    let runtime = Runtime::traced(super::engine::plugin_cache(&plan, &store), printer.clone())?;
    errln!(
        "debugging {} {} ({} mode) into {}",
        label(&job.stage, &job.params),
        short(id),
        job.mode,
        root.display()
    );
    let finished = runtime.run(
        &resources.plugin,
        JobRun {
            stage: job.stage.clone(),
            policy: Arc::new(policy),
            grants: resources.tools.clone(),
            observer: printer,
            limits: plan.lab.stages[&job.stage].limits,
            live: None,
        },
    )?;
    for (name, bytes) in [
        ("stdout", &finished.stdout),
        ("stderr", &finished.stderr),
        ("host.log", &finished.host_log),
    ] {
        std::fs::write(root.join(name), bytes)?;
    }
    let failure = finished.failure();
    match &failure {
        None => errln!("ok: its output is in {}", staging.out.display()),
        Some(why) => errln!("FAILED: {}", terminal(why)),
    }
    errln!(
        "logs: {} (stdout, stderr, host.log); nothing was committed",
        root.display()
    );
    Ok(if failure.is_none() {
        exit::SUCCESS
    } else {
        exit::FAILED
    })
}

/// Makes `root` (missing or empty) with the job's output, scratch and private directories.
fn scratch(root: &Path, id: &str) -> Result<Staging, CliError> {
    if root
        .read_dir()
        .is_ok_and(|mut entries| entries.next().is_some())
    {
        return Err(invalid(format!(
            "--dir {}: the directory is not empty; name a new one",
            root.display()
        )));
    }
    let dirs: [PathBuf; 3] = [root.join("out"), root.join("tmp"), root.join("private")];
    for dir in &dirs {
        std::fs::create_dir_all(dir)?;
    }
    let [out, scratch, private] = dirs;
    Ok(Staging {
        id: id.to_string(),
        attempt: 1,
        dir: private,
        out,
        scratch,
    })
}
