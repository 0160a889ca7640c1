//! `repx run`: a lab's runs or jobs, or one plugin ad hoc.

use std::collections::{BTreeMap, BTreeSet};

use super::engine;
use super::error::{CliError, invalid};
use super::escape::{self, terminal};
use super::render::{Format, label, short};
use super::store_path::store_path;
use super::{Cli, RunArgs, exit};
use crate::graph::JobGraph;
use crate::lab::{Lab, Mode, did_you_mean};
use crate::plan::Plan;
use crate::sched::decide::PlanJobs;
use crate::sched::dispatch::{Emit, selection};
use crate::sched::explain::{Planned, explain};
use crate::sched::{Force, Options};
use crate::store::{Store, location};

pub fn run(cli: &Cli, args: &RunArgs) -> Result<i32, CliError> {
    if args.watch {
        return super::watch::watch(cli, args);
    }
    once(cli, args, None)
}

/// What `repx run --watch` asks of one of its runs.
pub struct Cycle {
    /// Takes the run's events, instead of the reporter: the watcher prints one line a run.
    pub emit: Emit,
    /// Whether this is the first run, the only one that warns about impure jobs.
    pub first: bool,
    /// Set by the run: the stages of the jobs it selected and of everything upstream of
    /// them, which is all the next run can depend on.
    pub stages: Option<BTreeSet<String>>,
    /// The runtime of the runs before, with the plugins they loaded.
    pub runtime: engine::Kept,
}

/// The effective mode `--impure`, `--pure` or `--hermetic` asks for, if any.
pub fn mode(args: &RunArgs) -> Option<Mode> {
    if args.impure {
        Some(Mode::Impure)
    } else if args.pure {
        Some(Mode::Pure)
    } else if args.hermetic {
        Some(Mode::Hermetic)
    } else {
        None
    }
}

/// Refuses `--force NAME` when the lab has no stage or run of that name.
fn check_force_name(lab: &Lab, force: Option<&str>) -> Result<(), CliError> {
    match force {
        Some(name)
            if !name.is_empty()
                && !lab.stages.contains_key(name)
                && !lab.runs.contains_key(name) =>
        {
            let names = lab.stages.keys().chain(lab.runs.keys());
            let hint = did_you_mean(name, names.map(String::as_str));
            Err(invalid(format!(
                "--force {name}: no stage or run `{name}` in {}{hint}; \
                 `--force` alone re-runs every job",
                lab.file.display()
            )))
        }
        _ => Ok(()),
    }
}

/// One run of the lab, or of a plugin ad hoc.
pub fn once(cli: &Cli, args: &RunArgs, mut cycle: Option<&mut Cycle>) -> Result<i32, CliError> {
    let mode = mode(args);
    let last = cycle.is_none();
    engine::check_scheduler(args.scheduler, &args.slurm, args.plugin.is_some())?;
    let nix_settings = nix_settings(&args.nix_options, args.publish_private_inputs)?;
    let lab = match &args.plugin {
        Some(plugin) => super::adhoc::lab(plugin, args, mode)?,
        None => Lab::load(&cli.lab)?,
    };
    for warning in &lab.warnings {
        errln!("warning: {}", terminal(&warning.to_string()));
    }
    if args.dry_run && args.plugin.is_some() {
        for stage in lab.stages.values() {
            out!(
                "{}",
                super::grants::describe(&lab, stage, mode).map_err(invalid)?
            );
        }
        return Ok(exit::SUCCESS);
    }
    // Flags that the lab alone can check, before the store is opened (or made).
    check_force_name(&lab, args.force.as_deref())?;
    check_store_out_of_reach(cli, &lab, mode)?;
    // A dry run only reads the store: it takes no lock and writes nothing there.
    let store = match args.dry_run {
        true => Store::open_reader(&store_path(cli, &lab)?)?,
        false => Store::open(&store_path(cli, &lab)?)?,
    };
    // The store's warnings wait for its records, which a large store checks beside the
    // graph's expansion.
    let (runs, targets) = super::targets::select(&lab, &store, &args.targets, &args.stages, mode)
        .inspect_err(|_| super::verify::warn(&store))?;
    let graph = JobGraph::expand(
        &lab,
        &runs.iter().map(String::as_str).collect::<Vec<_>>(),
        mode,
    );
    super::verify::warn(&store);
    // A run's jobs, when no stage has the name: refused before anything runs when the
    // run is not among those run.
    let force_of = |plan: &Plan| match args.force.as_deref() {
        None => Force::None,
        Some("") => Force::All,
        Some(stage) if plan.lab.stages.contains_key(stage) => Force::Stage(stage.to_string()),
        Some(run) => Force::Jobs(
            plan.graph
                .runs
                .get(run)
                .map(|jobs| jobs.iter().copied().collect())
                .unwrap_or_default(),
        ),
    };
    if let Some(run) = args.force.as_deref().filter(|r| lab.runs.contains_key(*r))
        && !lab.stages.contains_key(run)
        && !graph.runs.contains_key(run)
    {
        return Err(invalid(format!(
            "--force {run}: run `{run}` is not among the runs this command runs; \
             run it too: `repx run {run} --force {run}`"
        )));
    }
    if args.plugin.is_none() && !args.dry_run {
        // `repx gc` keeps what this lab's runs reach, in this mode: written once every
        // flag is known good.
        store.add_root(&lab.file, mode)?;
    }
    let mut plan = Plan::new(lab, graph, &store)?;
    let force = force_of(&plan);
    let impure = plan
        .graph
        .jobs
        .iter()
        .filter(|j| j.mode == Mode::Impure)
        .count();
    if impure > 0 && cycle.as_deref().is_none_or(|c| c.first) {
        errln!(
            "warning: {impure} impure job(s): their results depend on the project directory as it is now and are not reproducible"
        );
    }
    let targets_of = |plan: &Plan| targets.as_ref().map(|t| t.indices(plan, &store));
    let targets = targets_of(&plan);
    if let Some(cycle) = cycle.as_deref_mut() {
        let jobs = PlanJobs::new(&plan, &store);
        let selected = selection(&jobs, targets.as_deref());
        let mut stages: BTreeSet<String> = selected
            .iter()
            .map(|&j| plan.graph.jobs[j].stage.clone())
            .collect();
        // A fan-out not known yet has no jobs: its run's stages may all come to depend.
        for run in plan
            .graph
            .runs
            .keys()
            .filter(|_| !plan.graph.waiting.is_empty())
        {
            let run = &plan.lab.runs[run];
            stages.extend(plan.lab.run_stages(run).iter().map(|s| s.name.clone()));
        }
        cycle.stages = Some(stages);
    }

    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if args.dry_run {
        let options = Options {
            nix: None,
            guard: None,
            jobs,
            continue_on_failure: args.continue_on_failure,
            retries: args.retries,
            mem: args.mem,
            force,
            targets,
            interrupted: Default::default(),
        };
        dry_run(&plan, &store, &options);
        return Ok(exit::SUCCESS);
    }
    // A plain local run makes its runtime, and loads its plugins, only when a first job
    // is to run (a no-op loads none); a watch keeps its runtime from run to run, and a
    // SLURM run checks every plugin before it submits.
    let on_demand = cycle.is_none() && args.scheduler == super::slurm::Scheduler::Local;
    let made_on_demand = engine::OnDemand::new(&store, jobs);
    // Targets may leave the stale stage out: then no job is sure to run.
    if on_demand && args.targets.is_empty() && args.stages.is_empty() {
        made_on_demand.start_early(&plan);
    }
    let (runtime, interrupted) = match on_demand {
        true => (None, super::interrupt::flag()),
        false => {
            let kept = cycle.as_deref_mut().map(|c| &mut c.runtime);
            let (runtime, interrupted) = engine::runtime(&plan, &store, jobs, kept)?;
            (Some(runtime), interrupted)
        }
    };
    let (reporter, emit) = match cycle {
        Some(cycle) => (None, cycle.emit.clone()),
        None => {
            let format = Format::detect(args.json, args.progress);
            let (reporter, emit) = engine::reporter(&plan, &store, format, jobs, args.verbose);
            (Some(reporter), emit)
        }
    };
    let mut options = Options {
        nix: crate::nix::Nix::for_plan(&plan, &store, nix_settings)?,
        guard: crate::sched::guard(&plan).map_err(|e| CliError::Failed(e.into()))?,
        jobs,
        continue_on_failure: args.continue_on_failure,
        retries: args.retries,
        mem: args.mem,
        force,
        targets,
        interrupted,
    };
    let pick = engine::Pick {
        scheduler: args.scheduler,
        slurm: &args.slurm,
        runs: &runs,
        mode,
    };
    let rounds = crate::sched::fanout::Selection {
        targets: &targets_of,
        force: &force_of,
    };
    let summary = crate::sched::fanout::rounds(
        &mut plan,
        &store,
        &mut options,
        rounds,
        emit,
        |plan, first| {
            if let Some(reporter) = &reporter {
                reporter.add_jobs(engine::job_infos(plan, first));
            }
        },
        |plan, options, emit| match &runtime {
            Some(runtime) => engine::run_jobs(plan, &store, &**runtime, options, emit, pick),
            None => {
                let runtime = made_on_demand.of(plan);
                let summary = engine::run_jobs(plan, &store, &runtime, options, emit, pick)?;
                match made_on_demand.take_failure() {
                    Some(refused) => Err(refused),
                    None => Ok(summary),
                }
            }
        },
    )?;
    if let Some(reporter) = reporter {
        reporter.summary(&summary);
    }

    if args.plugin.is_some() {
        super::adhoc::deliver(&plan, &store, args.out.as_deref(), args.force_out)?;
    }
    if last {
        // The process ends with this run: the plan (a few maps per job) is memory it gives
        // back at exit, not freed piece by piece first. Nothing else is in it.
        std::mem::forget(plan);
    }
    Ok(if summary.interrupted {
        exit::INTERRUPTED
    } else if summary.failed > 0 && store.io_failed() {
        // Jobs failed because the store could not take their results.
        exit::STORE
    } else if summary.failed > 0 {
        exit::FAILED
    } else {
        exit::SUCCESS
    })
}

/// `repx run --dry-run` on a lab: each job that would run with its reason, on stdout, then
/// the counts per stage.
fn dry_run(plan: &Plan, store: &Store, options: &Options) {
    let planned = explain(plan, store, options);
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (index, outcome) in planned.iter().enumerate() {
        let job = &plan.graph.jobs[index];
        let label = label(&job.stage, &job.params);
        let count = counts.entry(job.stage.as_str()).or_default();
        match outcome {
            Planned::Unselected => {}
            Planned::Cached { .. } => count.1 += 1,
            Planned::Run { id, reason } => {
                count.0 += 1;
                outln!(
                    "would run {label} {}: {}: {}",
                    short(id),
                    reason.kind.as_str(),
                    escape::terminal(&reason.detail)
                );
            }
            Planned::Waits { upstream } => {
                count.0 += 1;
                outln!(
                    "would run {label} -: upstream_changed: after `{}`, whose output decides its id",
                    escape::terminal(upstream)
                );
            }
        }
    }
    let (mut run, mut cached) = (0, 0);
    for (stage, (to_run, hits)) in &counts {
        if to_run + hits == 0 {
            continue;
        }
        outln!(
            "stage {}: {to_run} to run, {hits} cached",
            escape::terminal(stage)
        );
        run += to_run;
        cached += hits;
    }
    // A fan-out whose list is not in the store: its jobs, and all that reads them, are
    // known only once that list's job has run. One whose list is there has its items above.
    for waiting in &plan.graph.waiting {
        let splitter = &plan.graph.jobs[waiting.splitter];
        outln!(
            "would fan out {} over {} of {}: how many jobs is unknown until that job runs",
            escape::terminal(&waiting.stage),
            escape::terminal(&waiting.file.display().to_string()),
            label(&splitter.stage, &splitter.params)
        );
    }
    outln!("{} jobs: {run} to run, {cached} cached", run + cached);
}

/// `--nix-option NAME=VALUE`, each one a setting a run may pass (see [`crate::nix::settings`]).
fn nix_settings(
    given: &[String],
    publish_private: bool,
) -> Result<crate::nix::settings::Settings, CliError> {
    let options = given
        .iter()
        .map(|option| match option.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                let (name, value) = (name.trim(), value.trim());
                crate::nix::settings::check(name, value, &format!("--nix-option {option}"))
                    .map_err(invalid)?;
                Ok((name.to_string(), value.to_string()))
            }
            _ => Err(invalid(format!(
                "--nix-option {option}: expected NAME=VALUE, e.g. --nix-option max-jobs=4"
            ))),
        })
        .collect::<Result<_, CliError>>()?;
    Ok(crate::nix::settings::Settings {
        options,
        publish_private,
    })
}

/// A store inside the project is writable by impure jobs at `/work`: refused, before the
/// store is touched, when a stage of the lab is impure in this run's mode. So is the
/// default store, which lies inside the project when the cache directory does (`HOME` or
/// `XDG_CACHE_HOME` in the project).
fn check_store_out_of_reach(cli: &Cli, lab: &Lab, mode: Option<Mode>) -> Result<(), CliError> {
    let impure = lab
        .stages
        .values()
        .find(|stage| mode.unwrap_or(stage.mode) == Mode::Impure);
    let Some(stage) = impure else {
        return Ok(());
    };
    let (dir, what, fix) = match &cli.store {
        Some(dir) => (
            dir.clone(),
            format!("--store {}", dir.display()),
            "name a store outside the project, or leave --store out to use the project's own",
        ),
        None => {
            let dir = location::default_store(&lab.dir).map_err(invalid)?;
            let what = format!("the default store {}", dir.display());
            (
                dir,
                what,
                "set XDG_CACHE_HOME to a directory outside the project, or pass --store DIR \
                 outside it",
            )
        }
    };
    if !location::inside(&dir, &lab.dir) {
        return Ok(());
    }
    Err(invalid(format!(
        "{what}: the store lies inside the project directory {}, which impure stage `{}` may \
         write at /work, outputs and records included; {fix}",
        lab.dir.display(),
        stage.name
    )))
}
