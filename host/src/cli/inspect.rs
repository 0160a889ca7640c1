//! `repx list`, `repx show` and `repx log`: reading the lab and the store, running nothing.
//! `log` and `show job|output` need only the store, and work without a lab.
//!
//! Names of files a plugin wrote, and what the store recorded, are printed through
//! [`escape::terminal`]. `repx log` prints a job's logs as they are when its output is not a
//! terminal (`repx log ID > file` keeps its text as it is), escaped when it is.

use std::io::IsTerminal;
use std::path::Path;

use super::error::{CliError, invalid};
use super::escape::{self, terminal};
use super::filter::{JobFilter, Status};
use super::render::{label, short};
use super::store_path::store_path;
use super::{Cli, ListWhat, ShowWhat, exit};
use crate::graph::JobGraph;
use crate::lab::{Lab, LabError, Mode, did_you_mean};
use crate::plan::Plan;
use crate::sched::explain::states;
use crate::store::{Store, location};

/// The lab and its store, opened for reading: these commands work while a run is going.
pub(super) fn open(cli: &Cli) -> Result<(Lab, Store), CliError> {
    let lab = Lab::load(&cli.lab)?;
    for warning in &lab.warnings {
        errln!("warning: {}", super::escape::terminal(&warning.to_string()));
    }
    let store = Store::open_reader(&store_path(cli, &lab)?)?;
    super::verify::warn(&store);
    Ok((lab, store))
}

/// The store of a job, and the lab when there is one: `log` and `show job|output` need only
/// the store. With no lab at `--lab` (an ad hoc `repx run --plugin` has none), the store is
/// `--store`, else the one that directory's runs use, when it exists.
fn open_for_job(cli: &Cli) -> Result<(Option<Lab>, Store), CliError> {
    let dir = match Lab::load(&cli.lab) {
        Ok(lab) => {
            for warning in &lab.warnings {
                errln!("warning: {}", super::escape::terminal(&warning.to_string()));
            }
            let store = Store::open_reader(&store_path(cli, &lab)?)?;
            super::verify::warn(&store);
            return Ok((Some(lab), store));
        }
        Err(LabError::NotFound { dir }) => dir,
        Err(e) => return Err(e.into()),
    };
    let root = match &cli.store {
        Some(root) => root.clone(),
        None => {
            let dir = std::path::absolute(&dir)?;
            let store = location::default_store(&dir).map_err(invalid)?;
            if !store.is_dir() {
                return Err(LabError::NotFound { dir }.into());
            }
            store
        }
    };
    let store = Store::open_reader(&root)?;
    super::verify::warn(&store);
    Ok((None, store))
}

pub fn list(
    cli: &Cli,
    what: ListWhat,
    run: Option<&str>,
    output_paths: bool,
    filter: &JobFilter,
) -> Result<i32, CliError> {
    let (lab, store) = open(cli)?;
    filter.check(&lab)?;
    if let ListWhat::Runs = what {
        for (name, run) in &lab.runs {
            outln!("{name}");
            errln!("  pipelines: {}", run.pipelines.join(", "));
        }
        return Ok(exit::SUCCESS);
    }
    let runs: Vec<&str> = match run {
        Some(run) if lab.runs.contains_key(run) => vec![run],
        Some(run) => {
            let hint = did_you_mean(run, lab.runs.keys().map(String::as_str));
            return Err(invalid(format!(
                "no run `{run}` in {}{hint}",
                lab.file.display()
            )));
        }
        None => lab.runs.keys().map(String::as_str).collect(),
    };
    let graph = JobGraph::expand(&lab, &runs, None);
    let plan = Plan::new(lab, graph, &store)?;
    let ids = plan.static_ids(&store);
    let states = match what {
        ListWhat::Jobs => states(&plan, &store),
        _ => Vec::new(),
    };
    let name = |i: usize| {
        ids[i]
            .as_deref()
            .map_or("(pending)".to_string(), |id| short(id).to_string())
    };
    for (index, job) in plan.graph.jobs.iter().enumerate() {
        match what {
            ListWhat::Jobs => {
                let status = Status::from(states[index]);
                if !filter.keep(job, status) {
                    continue;
                }
                let state = status.as_str();
                let output = match &ids[index] {
                    // A hermetic job's output also names the Nix path it was built at.
                    Some(id) if output_paths && state == "done" => {
                        let dir = store.output_dir(id);
                        let dir = dir.to_string_lossy();
                        match store.record(id).and_then(|r| r.nix) {
                            Some(nix) => format!("  {}  {}", terminal(&dir), terminal(&nix)),
                            None => format!("  {}", terminal(&dir)),
                        }
                    }
                    _ if output_paths => "  -".to_string(),
                    _ => String::new(),
                };
                outln!(
                    "{}  {state:<6} {}{output}",
                    name(index),
                    label(&job.stage, &job.params)
                );
            }
            ListWhat::Deps => {
                if filter.stage.as_ref().is_some_and(|s| *s != job.stage) {
                    continue;
                }
                for dep in job.deps() {
                    outln!(
                        "{} {} -> {} {}",
                        name(index),
                        job.stage,
                        name(dep),
                        plan.graph.jobs[dep].stage
                    );
                }
            }
            ListWhat::Runs => unreachable!("handled above"),
        }
    }
    Ok(exit::SUCCESS)
}

/// The one full id in the store that starts with `prefix`.
fn find(store: &Store, prefix: &str) -> Result<String, CliError> {
    let ids = store.ids_with_prefix(prefix);
    match ids.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(invalid(format!(
            "no job in {} has an id starting with `{prefix}`; see `repx list jobs`",
            store.root().display()
        ))),
        many => Err(invalid(format!(
            "`{prefix}` matches {} jobs: give more digits",
            many.len()
        ))),
    }
}

/// The one job starting with `prefix` that has logs, is running, or is a job of the lab's
/// runs (which may not have started yet).
fn find_to_follow(lab: Option<&Lab>, store: &Store, prefix: &str) -> Result<String, CliError> {
    let mut ids = store.ids_with_prefix(prefix);
    ids.extend(store.live_ids(prefix));
    if let Some(lab) = lab {
        let runs: Vec<&str> = lab.runs.keys().map(String::as_str).collect();
        let graph = JobGraph::expand(lab, &runs, None);
        let plan = Plan::new(lab.clone(), graph, store)?;
        ids.extend(
            plan.static_ids(store)
                .into_iter()
                .flatten()
                .filter(|id| id.starts_with(prefix)),
        );
    }
    ids.sort();
    ids.dedup();
    match ids.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(invalid(format!(
            "no job in {} or its lab has an id starting with `{prefix}`; see `repx list jobs`",
            store.root().display()
        ))),
        many => Err(invalid(format!(
            "`{prefix}` matches {} jobs: give more digits",
            many.len()
        ))),
    }
}

/// `mode`: a mode override (`--pure`, `--impure`, `--hermetic`), which only `stage` takes.
pub fn show(cli: &Cli, what: ShowWhat, name: &str, mode: Option<Mode>) -> Result<i32, CliError> {
    if let ShowWhat::Stage = what {
        return show_stage(cli, name, mode);
    }
    if let Some(mode) = mode {
        return Err(invalid(format!(
            "--{mode} goes with `repx show stage` only: a job's mode is part of it"
        )));
    }
    let (lab, store) = open_for_job(cli)?;
    let id = find(&store, name)?;
    match what {
        ShowWhat::Stage => unreachable!("shown above"),
        ShowWhat::Job => super::show_job::show(lab.as_ref(), &store, &id),
        ShowWhat::Output => {
            let out = store.output_dir(&id);
            if !out.is_dir() {
                return Err(CliError::Failed(anyhow::anyhow!(
                    "job {} has no output in the store",
                    short(&id)
                )));
            }
            outln!("{}", terminal(&out.to_string_lossy()));
            for entry in walkdir::WalkDir::new(&out).sort_by_file_name().min_depth(1) {
                let entry = entry.map_err(|e| CliError::Failed(e.into()))?;
                let size = entry.metadata().map(|m| m.len()).unwrap_or_default();
                let relative = entry.path().strip_prefix(&out).unwrap_or(entry.path());
                // The plugin named these files: a newline in a name would forge a line.
                let relative = terminal(&relative.to_string_lossy()).into_owned();
                if entry.file_type().is_dir() {
                    outln!("  {relative}/");
                } else {
                    outln!("  {relative}  {size} bytes");
                }
            }
        }
    }
    Ok(exit::SUCCESS)
}

fn show_stage(cli: &Cli, name: &str, mode: Option<Mode>) -> Result<i32, CliError> {
    let lab = Lab::load(&cli.lab)?;
    let Some(stage) = lab.stages.get(name) else {
        let hint = did_you_mean(name, lab.stages.keys().map(String::as_str));
        return Err(invalid(format!(
            "no stage `{name}` in {}{hint}",
            lab.file.display()
        )));
    };
    out!(
        "{}",
        super::grants::describe(&lab, stage, mode).map_err(invalid)?
    );
    Ok(exit::SUCCESS)
}

pub fn log(cli: &Cli, prefix: &str, follow: bool, attempt: Option<u32>) -> Result<i32, CliError> {
    let (lab, store) = open_for_job(cli)?;
    if follow {
        let id = find_to_follow(lab.as_ref(), &store, prefix)?;
        return super::follow::follow(&store, &id);
    }
    let id = find(&store, prefix)?;
    let dir = match attempt {
        Some(k) => {
            let attempts = store.attempts(&id);
            let kept: Vec<String> = attempts
                .iter()
                .map(|(a, _)| a.attempt.to_string())
                .collect();
            match attempts.into_iter().find(|(a, _)| a.attempt == k) {
                Some((_, dir)) => dir,
                None if k == 1 && kept.is_empty() => log_dir(&store, &id),
                None => {
                    return Err(invalid(format!(
                        "job {} has no attempt {k}: {}",
                        short(&id),
                        if kept.is_empty() {
                            "it ran once, as attempt 1".to_string()
                        } else {
                            format!("its attempts are {}", kept.join(", "))
                        }
                    )));
                }
            }
        }
        None => log_dir(&store, &id),
    };
    let mut printed = false;
    // As written is what a file or a pipe asks for; a terminal gets the text escaped.
    let raw = !std::io::stdout().is_terminal();
    for name in ["stdout", "stderr", "host.log"] {
        if let Some(text) = read(&dir.join(name)) {
            outln!("==> {name} <==");
            if raw {
                out!("{text}");
            } else {
                out!("{}", escape::terminal_lines(&text));
            }
            if !text.ends_with('\n') {
                outln!();
            }
            printed = true;
        }
    }
    if !printed {
        errln!("job {} wrote no logs", short(&id));
    }
    Ok(exit::SUCCESS)
}

/// Where the logs of job `id`'s last attempt are.
/// The logs of the job's last run: a failed one's when it has them, since a success
/// clears them (an impure job keeps its id, so its last good output is still there when
/// an edit's build fails).
fn log_dir(store: &Store, id: &str) -> std::path::PathBuf {
    if store.failed_dir(id).is_dir() {
        store.failed_dir(id)
    } else {
        store.job_dir(id)
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}
