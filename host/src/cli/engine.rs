//! What `repx run` and `repx worker` share to run jobs: the store, the plugin cache, the
//! runtime with its Ctrl-C handler, the reporter, and the executor the command line picks
//! (see [`crate::sched::dispatch`]). Commands set up here and never wire a scheduler
//! themselves.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use super::error::CliError;
use super::render::{self, Format, JobInfo, Reporter};
use super::slurm::{self, Scheduler, SlurmArgs};
use crate::lab::Mode;
use crate::plan::Plan;
use crate::sched::dispatch::Emit;
use crate::sched::{Options, Summary};
use crate::store::{Store, location};
use crate::wasm::Runtime;

/// Refuses SLURM flags on a local run, and a SLURM run of an ad hoc plugin.
pub fn check_scheduler(
    scheduler: Scheduler,
    args: &SlurmArgs,
    ad_hoc: bool,
) -> Result<(), CliError> {
    slurm::check_args(scheduler, args, ad_hoc)
}

/// A runtime kept from one run to the next by `repx run --watch`: its engine, and every
/// plugin it compiled or loaded, keyed by digest, serve the next run as long as it is made
/// the same way (the same plugin cache, as many jobs at once). A plugin whose bytes changed
/// has another digest, so it is loaded again; one the plan no longer uses is dropped.
#[derive(Default)]
pub struct Kept(Option<(Option<PathBuf>, usize, Arc<Runtime>)>);

/// The runtime for `parallel` jobs at once, with every plugin of the plan compiled, and
/// the flag Ctrl-C (or SIGTERM, how `scancel` stops an allocation) sets; the one `kept`
/// holds when it fits, and then kept there.
pub fn runtime(
    plan: &Plan,
    store: &Store,
    parallel: usize,
    kept: Option<&mut Kept>,
) -> Result<(Arc<Runtime>, Arc<AtomicBool>), CliError> {
    let cache = plugin_cache(plan, store);
    let runtime = match kept {
        Some(Kept(Some((was, at_once, runtime)))) if *was == cache && *at_once == parallel => {
            runtime.retain(plan.stages.values().map(|s| s.plugin.digest.as_str()));
            runtime.clone()
        }
        Some(kept) => {
            let runtime = Arc::new(Runtime::new(cache.clone(), parallel)?);
            kept.0 = Some((cache, parallel, runtime.clone()));
            runtime
        }
        None => Arc::new(Runtime::new(cache, parallel)?),
    };
    let interrupted = super::interrupt::arm(runtime.clone());
    crate::sched::prepare(plan, &runtime)?;
    for recompiled in runtime.take_recompiled() {
        errln!(
            "warning: {}",
            super::escape::terminal(&recompiled.to_string())
        );
    }
    Ok((runtime, interrupted))
}

/// The runtime of a `repx run`, made (as [`runtime`] makes it: every plugin of the plan
/// compiled or loaded, refused as a whole when one cannot run) only when a first job is to
/// run: a run that finds every job in the store loads no plugin. It serves every round of
/// the run; what stopped it from being made is kept for the command to report once the
/// dispatcher has stopped.
pub struct OnDemand<'a> {
    store: &'a Store,
    parallel: usize,
    made: OnceLock<Arc<Runtime>>,
    failed: Mutex<Option<CliError>>,
    /// The runtime being made beside the planning, by [`OnDemand::start_early`].
    early: Mutex<Option<JoinHandle<Kept>>>,
}

impl<'a> OnDemand<'a> {
    pub fn new(store: &'a Store, parallel: usize) -> OnDemand<'a> {
        OnDemand {
            store,
            parallel,
            made: OnceLock::new(),
            failed: Mutex::new(None),
            early: Mutex::new(None),
        }
    }

    /// Starts making the runtime, and loading every plugin of `plan`, on a thread of its
    /// own, when a job is sure to run: an impure stage whose scope changed (the edit
    /// loop). The dispatcher's checks and the first job's staging then overlap it, instead
    /// of waiting for it. Whatever goes wrong there is met again, and reported, when the
    /// first job asks for the runtime; a run that asks for none waits for it at the end.
    pub fn start_early(&self, plan: &Plan) {
        if !plan.sources.values().any(crate::sources::Sources::stale) {
            return;
        }
        // A cache the run will not use is warned about once, by the first job's request.
        let Ok(cache) = usable_cache(plan, self.store) else {
            return;
        };
        let plugins: Vec<_> = plan.stages.values().map(|s| s.plugin.clone()).collect();
        let parallel = self.parallel;
        let making = std::thread::Builder::new()
            .name("repx-runtime".into())
            .spawn(move || {
                let Ok(runtime) = Runtime::new(cache.clone(), parallel) else {
                    return Kept::default();
                };
                for plugin in &plugins {
                    let _ = runtime.prepare(plugin);
                }
                Kept(Some((cache, parallel, Arc::new(runtime))))
            });
        *self.early.lock().unwrap_or_else(|e| e.into_inner()) = making.ok();
    }

    /// The runtime for the jobs of `plan`, as it is in this round.
    pub fn of<'p>(&'p self, plan: &'p Plan) -> impl crate::sched::local::Runtimes + 'p {
        ForPlan { on: self, plan }
    }

    /// Why the runtime could not be made, if it could not.
    pub fn take_failure(&self) -> Option<CliError> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A runtime started early and never asked for is waited for: the thread may be writing
/// a compiled plugin into the cache, which the process's exit would cut short.
impl Drop for OnDemand<'_> {
    fn drop(&mut self) {
        if let Some(early) = self
            .early
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = early.join();
        }
    }
}

struct ForPlan<'p> {
    on: &'p OnDemand<'p>,
    plan: &'p Plan,
}

impl crate::sched::local::Runtimes for ForPlan<'_> {
    fn get(&self) -> Option<&Runtime> {
        if let Some(runtime) = self.on.made.get() {
            return Some(runtime);
        }
        let mut failed = self.on.failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.is_some() {
            return None;
        }
        // Every stage of the runs, those of fan-outs not grown yet too, is prepared: what
        // the early start loaded is taken as loaded.
        let early = self
            .on
            .early
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut kept = early.and_then(|e| e.join().ok()).unwrap_or_default();
        match runtime(self.plan, self.on.store, self.on.parallel, Some(&mut kept)) {
            Ok((runtime, _)) => Some(self.on.made.get_or_init(|| runtime)),
            Err(e) => {
                *failed = Some(e);
                None
            }
        }
    }

    fn made(&self) -> Option<&Runtime> {
        self.on.made.get().map(|r| &**r)
    }
}

/// The reporter of a run in `format`, and the callback that feeds it; `verbose` lists each
/// cached job.
pub fn reporter(
    plan: &Plan,
    store: &Store,
    format: Format,
    parallelism: usize,
    verbose: bool,
) -> (Arc<Reporter>, Emit) {
    let infos = job_infos(plan, 0).collect();
    let context = render::Context::new(infos, store.outputs(), parallelism, verbose);
    let reporter = Arc::new(Reporter::new(format, context));
    let emit: Emit = {
        let reporter = reporter.clone();
        Arc::new(move |event| reporter.event(&event))
    };
    (reporter, emit)
}

/// What a reporter knows of the plan's jobs from `first` on.
pub fn job_infos(plan: &Plan, first: usize) -> impl Iterator<Item = JobInfo> + '_ {
    plan.graph.jobs[first..].iter().map(|j| JobInfo {
        stage: j.stage.clone(),
        params: j.params.clone(),
        limits: plan.lab.stages[&j.stage].limits,
        escalate: plan.lab.stages[&j.stage].escalate,
    })
}

/// Where the jobs of a `repx run` go.
#[derive(Clone, Copy)]
pub struct Pick<'a> {
    pub scheduler: Scheduler,
    pub slurm: &'a SlurmArgs,
    /// The runs the plan was expanded from, and the mode override: a SLURM worker expands
    /// the same.
    pub runs: &'a [String],
    pub mode: Option<Mode>,
}

/// Runs the plan's jobs on the executor `pick` names.
pub fn run_jobs(
    plan: &Plan,
    store: &Store,
    runtime: &dyn crate::sched::local::Runtimes,
    options: &Options,
    emit: Emit,
    pick: Pick,
) -> Result<Summary, CliError> {
    match pick.scheduler {
        Scheduler::Local => Ok(crate::sched::local::run(
            plan, store, runtime, options, emit,
        )),
        Scheduler::Slurm => {
            let cluster = slurm::cluster(&plan.lab, pick.runs, pick.mode, pick.slurm)?;
            let (summary, submitted) =
                crate::sched::slurm::run(plan, store, options, &cluster, emit)
                    .map_err(|e| CliError::Failed(e.into()))?;
            slurm::closing_line(&submitted);
            Ok(summary)
        }
    }
}

/// The compiled-plugin cache, unless a job could write it. Loading an artifact runs its
/// machine code, so a cache inside the store (outputs, scratch) or inside the project
/// directory is not used, whatever this run's modes: an impure job of any run has the
/// project directory at `/work`, and a later pure run would load what it left. Plugins are
/// then compiled in memory. `repx run` and `repx worker` both take their cache from here,
/// so one rule holds for both.
pub fn plugin_cache(plan: &Plan, store: &Store) -> Option<PathBuf> {
    usable_cache(plan, store).unwrap_or_else(|(cache, what, dir)| {
        errln!(
            "warning: the plugin cache {} is not used: it lies in {what} ({}), which \
             plugins may write; set REPX_CACHE_DIR to a directory outside it",
            cache.display(),
            dir.display()
        );
        None
    })
}

/// The compiled-plugin cache (none when there is no place for one), or why it is not
/// used: the cache, and what a job may write that contains it, with its path.
fn usable_cache<'a>(
    plan: &'a Plan,
    store: &'a Store,
) -> Result<Option<PathBuf>, (PathBuf, &'static str, &'a Path)> {
    let Some(cache) = crate::wasm::cache_dir() else {
        return Ok(None);
    };
    match writable_by_jobs(&cache, store.root(), &plan.lab.dir) {
        Some((what, dir)) => Err((cache, what, dir)),
        None => Ok(Some(cache)),
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
