//! `repx gc [--dry-run]`: removes from a store what no registered lab still reaches.
//!
//! The live set is every job id (and source snapshot) of every run of every live root lab,
//! in its declared modes and in each mode override it was run with; the lab at `--lab`
//! counts as a root when it uses this store. A root lab that cannot be loaded or planned
//! stops the collection: what it reaches is unknown, so nothing is removed. A pinned run's
//! jobs (`repx gc pin RUN`) are live too, whatever reaches them.

use super::error::{CliError, invalid};
use super::render::short;
use super::store_path::store_path;
use super::{Cli, GcPin, exit};
use crate::graph::JobGraph;
use crate::lab::{Lab, Mode};
use crate::plan::Plan;
use crate::store::gc::{Item, Live, Root};
use crate::store::{Pin, Store};

pub fn gc(cli: &Cli, dry_run: bool) -> Result<i32, CliError> {
    let current = Lab::load(&cli.lab);
    let store_dir = match (&current, &cli.store) {
        (_, Some(store)) => store.clone(),
        (Ok(lab), None) => store_path(cli, lab)?,
        (Err(_), None) => return Err(current.err().map(CliError::from).expect("an error")),
    };
    // A dry run only reads: it works on a store it cannot write.
    let store = if dry_run {
        Store::open_shared(&store_dir)?
    } else {
        Store::open(&store_dir)?
    };
    super::verify::warn(&store);
    let mut roots = store.roots()?;
    if let Ok(lab) = &current
        && store_path(cli, lab).is_ok_and(|s| s == store_dir)
        && !roots.iter().any(|r| same_file(&r.lab, &lab.file))
    {
        roots.push(Root {
            file: Default::default(),
            lab: lab.file.clone(),
            overrides: Vec::new(),
        });
    }

    let mut live = Live::default();
    for root in roots.iter().filter(|r| r.is_live()) {
        reach(&store, root, &mut live)?;
    }
    let pins = store.pins()?;
    for pin in &pins {
        live.jobs.extend(pin.jobs.iter().cloned());
    }
    let garbage = store.garbage(&live, &roots)?;

    let verb = if dry_run { "would remove" } else { "removed" };
    let (mut jobs, mut failures, mut snapshots, mut dead) = (0, 0, 0, 0);
    for (item, _, bytes) in &garbage.items {
        let line = match item {
            Item::Job { id, stage } => {
                jobs += 1;
                format!(
                    "job {} {}",
                    short(id),
                    stage.as_deref().unwrap_or("(unrecorded)")
                )
            }
            Item::Failure { id } => {
                failures += 1;
                format!("failure log {}", short(id))
            }
            Item::Snapshot { hash } => {
                snapshots += 1;
                format!("snapshot {}", short(hash))
            }
            Item::Record { id } => format!("record {} (output already gone)", short(id)),
            Item::DeadRoot { lab } => {
                dead += 1;
                format!("root {} (the lab file is gone)", lab.display())
            }
        };
        outln!(
            "{verb} {line}{}",
            if *bytes > 0 {
                format!(" ({})", human_bytes(*bytes))
            } else {
                String::new()
            }
        );
    }
    if !dry_run {
        store.collect(&garbage)?;
    }
    let live_roots: Vec<String> = roots
        .iter()
        .filter(|r| r.is_live())
        .map(|r| r.lab.display().to_string())
        .collect();
    errln!(
        "{} {} ({jobs} jobs, {failures} failure logs, {snapshots} snapshots, {dead} dead roots); kept {} jobs of {} live lab{}: {}",
        if dry_run { "would free" } else { "freed" },
        human_bytes(garbage.bytes()),
        live.jobs
            .iter()
            .filter(|id| store.job_dir(id).is_dir())
            .count(),
        live_roots.len(),
        if live_roots.len() == 1 { "" } else { "s" },
        if live_roots.is_empty() {
            "none".to_string()
        } else {
            live_roots.join(", ")
        },
    );
    for pin in &pins {
        errln!(
            "kept pinned run {} of {} ({} jobs, pinned {})",
            pin.run,
            pin.lab.display(),
            pin.jobs.len(),
            super::show_job::when(pin.since_ms)
        );
    }
    Ok(exit::SUCCESS)
}

/// `repx gc pin RUN` and `repx gc unpin RUN`, for a run of the lab at `--lab`.
pub fn pin(cli: &Cli, action: &GcPin) -> Result<i32, CliError> {
    let lab = Lab::load(&cli.lab)?;
    let run = match action {
        GcPin::Pin { run } | GcPin::Unpin { run } => run,
    };
    let store = Store::open(&store_path(cli, &lab)?)?;
    super::verify::warn(&store);
    let file = std::fs::canonicalize(&lab.file).unwrap_or_else(|_| lab.file.clone());
    if let GcPin::Unpin { .. } = action {
        if !store.unpin(&file, run)? {
            return Err(invalid(format!(
                "run `{run}` of {} is not pinned",
                lab.file.display()
            )));
        }
        errln!("unpinned run {run}: `repx gc` keeps its jobs only while a lab reaches them");
        return Ok(exit::SUCCESS);
    }
    if !lab.runs.contains_key(run) {
        let hint = crate::lab::did_you_mean(run, lab.runs.keys().map(String::as_str));
        return Err(invalid(format!(
            "no run `{run}` in {}{hint}",
            lab.file.display()
        )));
    }
    let graph = JobGraph::expand(&lab, &[run.as_str()], None);
    let plan = Plan::new(lab.clone(), graph, &store)?;
    let jobs: Vec<String> = plan
        .static_ids(&store)
        .into_iter()
        .flatten()
        .filter(|id| store.done(id).is_some())
        .collect();
    let total = plan.graph.jobs.len();
    store.pin(&Pin {
        lab: file,
        run: run.clone(),
        since_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        jobs: jobs.clone(),
    })?;
    errln!(
        "pinned run {run}: {} of its {total} jobs are done and `repx gc` keeps them until          `repx gc unpin {run}`",
        jobs.len()
    );
    Ok(exit::SUCCESS)
}

/// Adds what `root`'s runs reach to `live`.
fn reach(store: &Store, root: &Root, live: &mut Live) -> Result<(), CliError> {
    let unknown = |e: &dyn std::fmt::Display| {
        let forget = if root.file.as_os_str().is_empty() {
            String::new()
        } else {
            format!(
                ", or delete {} to stop keeping its jobs",
                root.file.display()
            )
        };
        invalid(format!(
            "cannot tell what lab {} uses, so nothing was removed: {e}\n  fix the lab{forget}",
            root.lab.display()
        ))
    };
    let lab = Lab::load(&root.lab).map_err(|e| unknown(&e))?;
    let runs: Vec<&str> = lab.runs.keys().map(String::as_str).collect();
    let modes: Vec<Option<Mode>> = std::iter::once(None)
        .chain(root.overrides.iter().copied().map(Some))
        .collect();
    for mode in modes {
        let graph = JobGraph::expand(&lab, &runs, mode);
        let plan = Plan::new(lab.clone(), graph, store).map_err(|e| unknown(&e))?;
        live.jobs
            .extend(plan.static_ids(store).into_iter().flatten());
        live.snapshots.extend(plan.snapshots.values().cloned());
    }
    Ok(())
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    a == b
        || std::fs::canonicalize(a)
            .ok()
            .is_some_and(|a| std::fs::canonicalize(b).is_ok_and(|b| a == b))
}

pub(super) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
