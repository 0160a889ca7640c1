//! `repx worker BATCH`: the command an allocation of `repx run --scheduler slurm` runs:
//! one batch of jobs, in-process, reported on in the batch's events file.

use std::path::Path;
use std::sync::Arc;

use super::engine;
use super::error::{CliError, invalid};
use super::render::Format;
use super::{Cli, exit};
use crate::graph::JobGraph;
use crate::lab::Lab;
use crate::plan::Plan;
use crate::sched::slurm::{self, Batch, EventWriter, WorkerEvent};
use crate::store::Store;

/// `repx worker BATCH`: runs one batch on this allocation; exits 0 when every job of it
/// is done.
pub fn worker(cli: &Cli, batch: &Path) -> Result<i32, CliError> {
    let events_path = Batch::events_path(batch);
    let events = Arc::new(
        EventWriter::create(&events_path)
            .map_err(|e| CliError::Failed(anyhow::anyhow!("{}: {e}", events_path.display())))?,
    );
    let result = run_batch(cli, batch, events.clone());
    let code = match &result {
        Ok(code) => *code,
        Err(e) => {
            events.write(&WorkerEvent::Error {
                message: format!("repx worker: {}", e.render().trim_start_matches("error: ")),
            });
            e.exit_code()
        }
    };
    events.write(&WorkerEvent::Exit { code });
    result
}

fn run_batch(cli: &Cli, path: &Path, events: Arc<EventWriter>) -> Result<i32, CliError> {
    let batch = Batch::read(path).map_err(invalid)?;
    let lab = match &batch.lab {
        Some(evaluated) => {
            let json = slurm::worker::read_evaluated(evaluated)
                .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
            Lab::from_evaluated(&cli.lab, &json)?
        }
        // A lab.nix is evaluated by the coordinator only.
        None if crate::lab::Format::of(&cli.lab) == crate::lab::Format::Nix => {
            return Err(invalid(format!(
                "{}: this batch carries no evaluated lab, and a worker does not evaluate a lab.nix; run `repx run` again",
                path.display()
            )));
        }
        None => Lab::load(&cli.lab)?,
    };
    for warning in &lab.warnings {
        errln!("warning: {}", super::escape::terminal(&warning.to_string()));
    }
    let store = Store::open_worker(&super::store_path::store_path(cli, &lab)?)?;
    super::verify::warn(&store);
    let runs: Vec<&str> = batch.runs.iter().map(String::as_str).collect();
    if let Some(run) = runs.iter().find(|r| !lab.runs.contains_key(**r)) {
        return Err(invalid(format!(
            "the lab changed since `repx run` submitted this batch: it has no run `{run}` now"
        )));
    }
    let graph = JobGraph::expand(&lab, &runs, batch.mode);
    let plan = Plan::replay(lab, graph, &store, &batch.grown)?;
    let runnable = slurm::worker::check(&plan, &store, &batch, &events)
        .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    let complete = runnable.len() == batch.jobs.len();
    let nix = crate::nix::Nix::for_plan(&plan, &store, batch.nix.clone())?;

    let (runtime, interrupted) = engine::runtime(&plan, &store, batch.parallel, None)?;
    // The allocation's log is a file: plain lines.
    let (reporter, emit) = engine::reporter(&plan, &store, Format::Lines, batch.parallel, false);
    let work = slurm::worker::Work {
        plan: &plan,
        store: &store,
        runtime: &runtime,
        nix,
        batch: &batch,
        guard: crate::sched::guard(&plan).map_err(|e| CliError::Failed(e.into()))?,
        runnable,
    };
    let summary = slurm::worker::run(work, events, interrupted, emit);
    reporter.summary(&summary);
    let all_ran = complete && summary.failed == 0 && summary.not_run == 0 && summary.skipped == 0;
    Ok(if summary.interrupted {
        exit::INTERRUPTED
    } else if all_ran {
        exit::SUCCESS
    } else {
        exit::FAILED
    })
}
