//! `repx run --scheduler slurm` and `repx worker`: the SLURM flags, the coordinator's
//! closing line, and the worker command an allocation runs.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;

use super::error::{CliError, invalid};
use super::render::{self, Format, JobInfo, Reporter, label};
use super::{Cli, exit};
use crate::graph::JobGraph;
use crate::lab::{Lab, Mode, SlurmSettings};
use crate::plan::Plan;
use crate::sched::local::Emit;
use crate::sched::slurm::{self, Batch, Cluster, EventWriter, WorkerEvent, config};
use crate::sched::{Options, Summary};
use crate::store::Store;
use crate::wasm::Runtime;

/// Where `repx run` runs its jobs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheduler {
    /// In this process, on `-j N` threads.
    #[default]
    Local,
    /// On a SLURM cluster, batched into few allocations that run `repx worker`.
    Slurm,
}

#[derive(Args, Debug, Default)]
#[command(next_help_heading = "With --scheduler slurm")]
pub struct SlurmArgs {
    /// The partition to submit to (`sbatch --partition`).
    #[arg(long, value_name = "NAME")]
    pub partition: Option<String>,
    /// The account to charge (`sbatch --account`).
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// The quality of service (`sbatch --qos`).
    #[arg(long, value_name = "NAME")]
    pub qos: Option<String>,
    /// One more `sbatch` option, as one argument (`--sbatch-flag=--constraint=avx2`).
    #[arg(long = "sbatch-flag", value_name = "FLAG", allow_hyphen_values = true)]
    pub sbatch_flags: Vec<String>,
    /// The most jobs one allocation runs [default: 256].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: Option<u32>,
    /// The most CPUs one allocation asks for; it runs as many jobs at once as fit
    /// [default: 4, or the partition's largest node when smaller].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_cpus: Option<u32>,
    /// The most allocations of this run queued or running at once [default: 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_submissions: Option<u32>,
    /// Submit each batch with its own `sbatch` instead of a wave's batches as one job array.
    #[arg(long)]
    pub no_job_arrays: bool,
}

impl SlurmArgs {
    fn settings(&self) -> SlurmSettings {
        SlurmSettings {
            partition: self.partition.clone(),
            account: self.account.clone(),
            qos: self.qos.clone(),
            sbatch_flags: self.sbatch_flags.clone(),
            batch_size: self.batch_size.map(|n| n as usize),
            batch_cpus: self.batch_cpus,
            max_submissions: self.max_submissions.map(|n| n as usize),
            arrays: self.no_job_arrays.then_some(false),
            batch_time: None,
        }
    }

    /// The flags given, by name, so that a local run can refuse them.
    fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        for (name, set) in [
            ("--partition", self.partition.is_some()),
            ("--account", self.account.is_some()),
            ("--qos", self.qos.is_some()),
            ("--sbatch-flag", !self.sbatch_flags.is_empty()),
            ("--batch-size", self.batch_size.is_some()),
            ("--batch-cpus", self.batch_cpus.is_some()),
            ("--max-submissions", self.max_submissions.is_some()),
            ("--no-job-arrays", self.no_job_arrays),
        ] {
            if set {
                given.push(name);
            }
        }
        given
    }
}

/// Refuses SLURM flags on a local run, and a SLURM run of an ad hoc plugin.
pub fn check_args(scheduler: Scheduler, args: &SlurmArgs, ad_hoc: bool) -> Result<(), CliError> {
    match scheduler {
        Scheduler::Local => match args.given().first() {
            Some(flag) => Err(invalid(format!(
                "{flag} is for `--scheduler slurm`; add it, or leave {flag} out"
            ))),
            None => Ok(()),
        },
        Scheduler::Slurm if ad_hoc => Err(invalid(
            "--plugin runs one plugin here; it cannot go to SLURM: leave out --scheduler slurm",
        )),
        Scheduler::Slurm => Ok(()),
    }
}

/// Runs the plan on SLURM; prints where its batches and logs are.
pub fn run(
    plan: &Plan,
    store: &Store,
    options: &Options,
    runs: &[String],
    mode: Option<Mode>,
    args: &SlurmArgs,
    emit: Emit,
) -> Result<Summary, CliError> {
    let (user, warnings) = config::user_settings().map_err(|e| CliError::Invalid(e.into()))?;
    for warning in warnings {
        errln!("warning: {warning}");
    }
    let cluster = Cluster {
        config: config::resolve(&[&args.settings(), &plan.lab.slurm, &user]),
        exe: std::env::current_exe()?,
        lab_file: plan.lab.file.clone(),
        runs: runs.to_vec(),
        mode,
    };
    let (summary, report) =
        slurm::run(plan, store, options, &cluster, emit).map_err(|e| CliError::Failed(e.into()))?;
    if report.submissions > 0 {
        errln!(
            "slurm: {} allocation(s) from {} submission(s); batches and logs in {}",
            report.allocations,
            report.submissions,
            report.dir.display()
        );
    }
    Ok(summary)
}

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
        errln!("warning: {warning}");
    }
    let store = Store::open_worker(&super::run::store_path(cli, &lab)?)?;
    super::verify::warn(&store);
    let runs: Vec<&str> = batch.runs.iter().map(String::as_str).collect();
    if let Some(run) = runs.iter().find(|r| !lab.runs.contains_key(**r)) {
        return Err(invalid(format!(
            "the lab changed since `repx run` submitted this batch: it has no run `{run}` now"
        )));
    }
    let graph = JobGraph::expand(&lab, &runs, batch.mode);
    let plan = Plan::new(lab, graph, &store)?;
    let runnable = slurm::worker::check(&plan, &store, &batch, &events)
        .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    let complete = runnable.len() == batch.jobs.len();
    let nix = crate::nix::Nix::for_plan(&plan, &store, batch.nix.clone())?;

    let cache = super::run::plugin_cache(&plan, &store);
    let runtime = Arc::new(Runtime::new(cache, batch.parallel)?);
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let (interrupted, runtime) = (interrupted.clone(), runtime.clone());
        // SIGTERM too: that is how `scancel` stops an allocation.
        let _ = ctrlc::set_handler(move || {
            interrupted.store(true, Ordering::Relaxed);
            runtime.interrupt();
        });
    }
    crate::sched::prepare(&plan, &runtime)?;
    for recompiled in runtime.take_recompiled() {
        errln!("warning: {recompiled}");
    }
    let infos = plan.graph.jobs.iter().map(|j| JobInfo {
        stage: j.stage.clone(),
        params: j.params.clone(),
        label: label(&j.stage, &j.params),
    });
    let context = render::Context {
        jobs: infos.collect(),
        jobs_dir: store.root().join("jobs"),
        parallelism: batch.parallel,
    };
    // The allocation's log is a file: plain lines.
    let reporter = Arc::new(Reporter::new(Format::Lines, context));
    let emit: Emit = {
        let reporter = reporter.clone();
        Arc::new(move |event| reporter.event(&event))
    };
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
