//! `repx run`: a lab's runs or jobs, or one plugin ad hoc.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::{CliError, invalid};
use super::render::{self, Format, JobInfo, Reporter, label};
use super::{Cli, RunArgs, exit};
use crate::graph::JobGraph;
use crate::lab::{Lab, Mode, did_you_mean};
use crate::plan::Plan;
use crate::sched::{Force, Options, local};
use crate::store::{self, Store, location};
use crate::wasm::Runtime;

pub fn run(cli: &Cli, args: &RunArgs) -> Result<i32, CliError> {
    let mode = if args.impure {
        Some(Mode::Impure)
    } else if args.pure {
        Some(Mode::Pure)
    } else if args.hermetic {
        Some(Mode::Hermetic)
    } else {
        None
    };
    super::slurm::check_args(args.scheduler, &args.slurm, args.plugin.is_some())?;
    let nix_settings = nix_settings(&args.nix_options, args.publish_private_inputs)?;
    let lab = match &args.plugin {
        Some(plugin) => super::adhoc::lab(plugin, args, mode)?,
        None => Lab::load(&cli.lab)?,
    };
    for warning in &lab.warnings {
        errln!("warning: {warning}");
    }
    if args.dry_run {
        for stage in lab.stages.values() {
            out!(
                "{}",
                super::grants::describe(&lab, stage, mode).map_err(invalid)?
            );
        }
        return Ok(exit::SUCCESS);
    }
    check_store_out_of_reach(cli, &lab, mode)?;
    let store = Store::open(&store_path(cli, &lab)?)?;
    super::verify::warn(&store);
    if args.plugin.is_none() {
        // `repx gc` keeps what this lab's runs reach, in this mode.
        store.add_root(&lab.file, mode)?;
    }
    let (runs, targets) = super::targets::select(&lab, &store, &args.targets, &args.stages, mode)?;
    let graph = JobGraph::expand(
        &lab,
        &runs.iter().map(String::as_str).collect::<Vec<_>>(),
        mode,
    );
    let force = match args.force.as_deref() {
        None => Force::None,
        Some("") => Force::All,
        Some(stage) if lab.stages.contains_key(stage) => Force::Stage(stage.to_string()),
        // A run's jobs, when no stage has the name.
        Some(run) if lab.runs.contains_key(run) => match graph.runs.get(run) {
            Some(jobs) => Force::Jobs(jobs.iter().copied().collect()),
            None => {
                return Err(invalid(format!(
                    "--force {run}: run `{run}` is not among the runs this command runs; \
                     run it too: `repx run {run} --force {run}`"
                )));
            }
        },
        Some(name) => {
            let names = lab.stages.keys().chain(lab.runs.keys());
            let hint = did_you_mean(name, names.map(String::as_str));
            return Err(invalid(format!(
                "--force {name}: no stage or run `{name}` in {}{hint}; \
                 `--force` alone re-runs every job",
                lab.file.display()
            )));
        }
    };
    let plan = Plan::new(lab, graph, &store)?;
    let impure = plan
        .graph
        .jobs
        .iter()
        .filter(|j| j.mode == Mode::Impure)
        .count();
    if impure > 0 {
        errln!(
            "warning: {impure} impure job(s): their results depend on the project directory as it is now and are not reproducible"
        );
    }
    let targets = targets.map(|targets| targets.indices(&plan, &store));

    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = Arc::new(Runtime::new(plugin_cache(&plan, &store), jobs)?);
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let (interrupted, runtime) = (interrupted.clone(), runtime.clone());
        // A second handler cannot be set in one process; tests run one command per process.
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
        parallelism: jobs,
    };
    let reporter = Arc::new(Reporter::new(Format::detect(args.json), context));
    let options = Options {
        nix: crate::nix::Nix::for_plan(&plan, &store, nix_settings)?,
        guard: crate::sched::guard(&plan).map_err(|e| CliError::Failed(e.into()))?,
        jobs,
        continue_on_failure: args.continue_on_failure,
        force,
        targets,
        interrupted,
    };
    let emit = {
        let reporter = reporter.clone();
        Arc::new(move |event: crate::sched::Event| reporter.event(&event))
    };
    let summary = match args.scheduler {
        super::slurm::Scheduler::Local => local::run(&plan, &store, &runtime, &options, emit),
        super::slurm::Scheduler::Slurm => {
            super::slurm::run(&plan, &store, &options, &runs, mode, &args.slurm, emit)?
        }
    };
    reporter.summary(&summary);

    if args.plugin.is_some() {
        super::adhoc::deliver(&plan, &store, args.out.as_deref(), args.force_out)?;
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

/// The compiled-plugin cache, unless a job could write it. Loading an artifact runs its
/// machine code, so a cache inside the store (outputs, scratch) or inside the project
/// directory is not used, whatever this run's modes: an impure job of any run has the
/// project directory at `/work`, and a later pure run would load what it left. Plugins are
/// then compiled in memory. `repx run` and `repx worker` both take their cache from here,
/// so one rule holds for both.
pub(crate) fn plugin_cache(plan: &Plan, store: &Store) -> Option<PathBuf> {
    let cache = crate::wasm::cache_dir()?;
    match writable_by_jobs(&cache, store.root(), &plan.lab.dir) {
        Some((what, dir)) => {
            errln!(
                "warning: the plugin cache {} is not used: it lies in {what} ({}), which \
                 plugins may write; set REPX_CACHE_DIR to a directory outside it",
                cache.display(),
                dir.display()
            );
            None
        }
        None => Some(cache),
    }
}

/// What a job may write that contains `cache`, named, with its path: the store, or the
/// project directory (impure jobs of any run have it at `/work`).
fn writable_by_jobs<'a>(
    cache: &Path,
    store: &'a Path,
    project: &'a Path,
) -> Option<(&'static str, &'a Path)> {
    let writable = [("the store", store), ("the project directory", project)];
    let real = location::real_path(cache);
    writable
        .into_iter()
        .find(|(_, dir)| real.starts_with(location::real_path(dir)))
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

/// The store of `lab`: `--store`, else the project's own store outside it (see
/// [`store::location`]), with the `.repx` link to it made or checked.
pub fn store_path(cli: &Cli, lab: &Lab) -> Result<PathBuf, CliError> {
    if let Some(store) = &cli.store {
        return Ok(store.clone());
    }
    let store = location::default_store(&lab.dir).map_err(invalid)?;
    // Before the link: a store that cannot be made leaves no link that leads nowhere.
    std::fs::create_dir_all(&store)
        .map_err(|e| invalid(format!("store {}: {e}", store.display())))?;
    if let location::Linked::Moved { from } = location::link(&lab.dir, &store).map_err(invalid)? {
        eprintln!(
            "note: {} led to {}, the store of the project's former place; it now leads to \
             this project's store, {}",
            lab.dir.join(store::DEFAULT_DIR).display(),
            from.display(),
            store.display()
        );
    }
    Ok(store)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_jobs_could_write_is_named_with_what_contains_it() {
        let dir = std::env::temp_dir().join(format!("repx-plugin-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let project = dir.join("project");
        let store = project.join(".repx");
        let outside = dir.join("home/.cache");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // A link from outside into the project: where the cache really is decides.
        std::os::unix::fs::symlink(&project, dir.join("home/linked")).unwrap();

        let check = |cache: &Path| writable_by_jobs(cache, &store, &project).map(|(what, _)| what);
        assert_eq!(check(&store.join("cache/repx")), Some("the store"));
        assert_eq!(check(&outside.join("repx")), None);
        // Whatever this run's modes: an impure job of another run may write the project.
        let project_named = Some("the project directory");
        assert_eq!(check(&project.join(".cache/repx")), project_named);
        assert_eq!(check(&dir.join("home/linked/.cache/repx")), project_named);
        // A sibling whose name merely starts like the project's is outside it.
        assert_eq!(check(&dir.join("project-cache/repx")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
