//! `repx run --watch [TARGETS]`: run, then run again whenever what the selected jobs
//! depend on changes.
//!
//! What is watched, through inotify (the `notify` crate; nothing polls): the lab file, and
//! for each stage of the jobs the run selected (its targets and everything upstream of
//! them; every job of the lab's runs without targets) its plugin file, its `path:` inputs
//! and, for an impure stage, its scope (its `sources` globs, else its `path:` inputs, else
//! the project). It is worked out again after each run, since the lab may have changed; a
//! run that could not select its jobs (an invalid target after an edit) watches every
//! stage of the lab.
//!
//! Invariants:
//! - A run's own writes start no run: the store, `.repx` and `.git` are never watched, and
//!   the files an impure stage's jobs created (make's objects, see `sources::written`) are
//!   left out. An edit saved while a job runs does start the next run: the job recorded no
//!   fingerprint for it (see `sources`), so that run builds the edit.
//! - A burst of writes (an editor's save) is one change: a run starts once nothing changed
//!   for [`QUIET`], or for [`QUIET_CLOSED`] when the files changed were closed after their
//!   last write (the save is whole).
//! - The runtime, and the plugins it compiled, are kept from one run to the next (see
//!   [`Kept`]); the lab, the store and the plan are read again each run.
//! - Each run prints one line: why it ran, what ran or failed (with `repx log ID`), and how
//!   long it took.
//! - A failed job or an invalid lab (after the first run) leaves it waiting. Ctrl-C stops
//!   it with exit 130, the run going on interrupted as any run is: nothing half-committed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use super::engine::Kept;
use super::error::CliError;
use super::escape::terminal;
use super::run::{Cycle, mode, once};
use super::store_path::store_path;
use super::{Cli, RunArgs, exit, interrupt};
use crate::lab::{Input, Lab, Mode, PluginRef};
use crate::sched::Event;

/// How long the files must stay unchanged before a run starts.
const QUIET: Duration = Duration::from_millis(20);

/// How long, when the last change was a file closed after it was written (a save is
/// whole), since one save may write a few files back to back.
const QUIET_CLOSED: Duration = Duration::from_millis(2);

/// The longest a run waits for a burst of writes to end.
const QUIET_AT_MOST: Duration = Duration::from_secs(1);

enum Wake {
    Changed(Vec<PathBuf>),
    /// Times or permissions changed, not the content.
    Attributes(Vec<PathBuf>),
    /// Files closed after a write: what was saved there is whole.
    Closed(Vec<PathBuf>),
    Interrupted,
    Failed(String),
}

pub fn watch(cli: &Cli, args: &RunArgs) -> Result<i32, CliError> {
    let (send, receive) = mpsc::channel();
    let on_interrupt = send.clone();
    interrupt::on_interrupt(move || {
        let _ = on_interrupt.send(Wake::Interrupted);
    });
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let wake = match event {
            Ok(event) if is_attributes(&event.kind) => Wake::Attributes(event.paths),
            Ok(event) if is_change(&event.kind) => Wake::Changed(event.paths),
            Ok(event) if is_closed_after_write(&event.kind) => Wake::Closed(event.paths),
            Ok(_) => return,
            Err(e) => Wake::Failed(e.to_string()),
        };
        let _ = send.send(wake);
    })
    .map_err(|e| CliError::Failed(anyhow::anyhow!("watching files (inotify): {e}")))?;

    let mut watched = Watched::default();
    // In place before the first run too: what is saved while it runs starts the next.
    if let Ok(lab) = Lab::load(&cli.lab) {
        watched.update(&mut watcher, cli, &lab, mode(args), None)?;
    }
    let mut runtime = Kept::default();
    let mut why = "start".to_string();
    let mut first = true;
    loop {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let emit = {
            let tally = tally.clone();
            Arc::new(move |event: Event| lock(&tally).add(&event))
        };
        let started = Instant::now();
        let mut cycle = Cycle {
            emit,
            first,
            stages: None,
            runtime: std::mem::take(&mut runtime),
        };
        let ran = once(cli, args, Some(&mut cycle));
        runtime = std::mem::take(&mut cycle.runtime);
        if interrupt::interrupted() {
            errln!("watch: interrupted");
            return Ok(exit::INTERRUPTED);
        }
        let took = started.elapsed();
        let line = match ran {
            Ok(_) => lock(&tally).line(&why, took),
            Err(e) if first => return Err(e),
            Err(e) => format!(
                "watch: {}: {}; waiting for changes",
                terminal(&why),
                e.render()
            ),
        };
        first = false;
        // The lab as it is now; an invalid one keeps the last set, the lab file in it. The
        // line comes once the watch is in place: what is saved after it is seen.
        if let Ok(lab) = Lab::load(&cli.lab) {
            watched.update(&mut watcher, cli, &lab, mode(args), cycle.stages.as_ref())?;
        }
        errln!("{line}");
        let changed = match wait(&receive, &watched)? {
            Some(changed) => changed,
            None => {
                errln!("watch: interrupted");
                return Ok(exit::INTERRUPTED);
            }
        };
        why = describe(&changed, &watched.project);
    }
}

/// A change to a file's content, name or attributes; not an open or a read.
fn is_change(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    )
}

/// A change of a file's times or permissions alone (inotify's `IN_ATTRIB`).
fn is_attributes(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Modify(notify::event::ModifyKind::Metadata(_))
    )
}

/// A file closed after it was opened for writing (inotify's `IN_CLOSE_WRITE`).
fn is_closed_after_write(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// Waits for a change to what `watched` covers, then for the burst it is part of to end
/// (quiet for [`QUIET`], or [`QUIET_CLOSED`] once the changed files were closed); `None`
/// on Ctrl-C.
fn wait(
    receive: &Receiver<Wake>,
    watched: &Watched,
) -> Result<Option<BTreeSet<PathBuf>>, CliError> {
    let mut changed = BTreeSet::new();
    // A run gives files it found unseen the current time (see
    // `crate::sources::Sources::before_job`): that change is its own, not an edit.
    let touched = crate::sources::take_touched();
    let mut since: Option<Instant> = None;
    // Whether every changed file was closed since its last change.
    let mut closed = false;
    loop {
        let quiet = if closed { QUIET_CLOSED } else { QUIET };
        let wake = match since {
            None => receive.recv().ok(),
            Some(first) if first.elapsed() >= QUIET_AT_MOST => return Ok(Some(changed)),
            Some(_) => match receive.recv_timeout(quiet) {
                Ok(wake) => Some(wake),
                Err(RecvTimeoutError::Timeout) => return Ok(Some(changed)),
                Err(RecvTimeoutError::Disconnected) => None,
            },
        };
        match wake {
            None | Some(Wake::Interrupted) => return Ok(None),
            Some(Wake::Failed(e)) => {
                return Err(CliError::Failed(anyhow::anyhow!(
                    "watching files (inotify): {e}"
                )));
            }
            Some(Wake::Attributes(paths)) if paths.iter().all(|p| touched.contains(p)) => {}
            Some(Wake::Changed(paths)) | Some(Wake::Attributes(paths)) => {
                let relevant: Vec<PathBuf> =
                    paths.into_iter().filter(|p| watched.covers(p)).collect();
                if !relevant.is_empty() {
                    since.get_or_insert_with(Instant::now);
                    changed.extend(relevant);
                    closed = false;
                }
            }
            // Closing a file changes nothing by itself; it ends the write that did.
            Some(Wake::Closed(paths)) => {
                if since.is_some() && paths.iter().any(|p| changed.contains(p)) {
                    closed = true;
                }
            }
        }
        if interrupt::interrupted() {
            return Ok(None);
        }
    }
}

/// What the next run depends on, and the directories inotify watches for it.
#[derive(Default)]
struct Watched {
    project: PathBuf,
    /// The lab file and the plugin files.
    files: BTreeSet<PathBuf>,
    /// `path:` inputs, and impure stages' scopes that are inputs or the whole project.
    trees: BTreeSet<PathBuf>,
    /// Impure stages' `sources` globs.
    globs: Vec<Vec<String>>,
    /// Never a change: the store, and what impure jobs created.
    ignored: BTreeSet<PathBuf>,
    store: Option<PathBuf>,
    /// The directories watched now, and whether recursively.
    roots: BTreeSet<(PathBuf, bool)>,
}

impl Watched {
    fn update(
        &mut self,
        watcher: &mut impl Watcher,
        cli: &Cli,
        lab: &Lab,
        mode: Option<Mode>,
        stages: Option<&BTreeSet<String>>,
    ) -> Result<(), CliError> {
        let store = store_path(cli, lab).ok();
        let mut next = Watched {
            project: lab.dir.clone(),
            store: store.clone(),
            ..Watched::default()
        };
        next.files.insert(lab.file.clone());
        let needed = lab
            .stages
            .values()
            .filter(|stage| stages.is_none_or(|needed| needed.contains(&stage.name)));
        for stage in needed {
            if let PluginRef::File(plugin) = &stage.plugin {
                next.files.insert(plugin.clone());
            }
            // A tool given by a path is the lab's own, most often a script beside it; one
            // found on PATH changes with the system, which is not watched.
            // One whose directory is missing is for the run to report, not the watch.
            next.files.extend(
                stage
                    .tools
                    .iter()
                    .filter_map(|tool| crate::wasm::tools::given_path(tool, lab.file_dir()))
                    .filter(|tool| tool.parent().is_some_and(Path::is_dir)),
            );
            for input in stage.inputs.values() {
                if let Input::Path(path) = input {
                    next.trees.insert(path.clone());
                }
            }
            if mode.unwrap_or(stage.mode) != Mode::Impure {
                continue;
            }
            if !stage.sources.is_empty() {
                next.globs.push(stage.sources.clone());
            } else if !stage.inputs.values().any(|i| matches!(i, Input::Path(_))) {
                next.trees.insert(lab.dir.clone());
            }
            if let Some(store) = &store {
                next.ignored
                    .extend(crate::sources::written(lab, stage, store));
            }
        }
        // Files through their directories: an editor saves by renaming a new file over
        // the old one, which a watch of the file itself would lose.
        for file in &next.files {
            if let Some(dir) = file.parent() {
                next.roots.insert((dir.to_path_buf(), false));
            }
        }
        for tree in &next.trees {
            next.roots.insert((tree.clone(), tree.is_dir()));
        }
        if !next.globs.is_empty() {
            next.roots.insert((lab.dir.clone(), true));
        }
        for (root, _) in self.roots.difference(&next.roots) {
            let _ = watcher.unwatch(root);
        }
        for (root, recursive) in next.roots.difference(&self.roots) {
            let how = if *recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            watcher.watch(root, how).map_err(|e| {
                CliError::Failed(anyhow::anyhow!(
                    "watching {} (inotify): {e}; a system with many files may need a higher \
                     fs.inotify.max_user_watches",
                    root.display()
                ))
            })?;
        }
        *self = next;
        Ok(())
    }

    /// Whether a change to `path` may make a job out of date.
    fn covers(&self, path: &Path) -> bool {
        let own = path
            .components()
            .any(|c| c.as_os_str() == crate::store::DEFAULT_DIR || c.as_os_str() == ".git")
            || self.store.as_ref().is_some_and(|s| path.starts_with(s))
            || self.ignored.contains(path);
        if own {
            return false;
        }
        self.files.contains(path)
            || self.trees.iter().any(|t| path.starts_with(t))
            || self
                .globs
                .iter()
                .any(|globs| crate::sources::in_sources(globs, &self.project, path))
    }
}

/// What changed, for the run's line: the first few paths, relative to the project.
fn describe(changed: &BTreeSet<PathBuf>, project: &Path) -> String {
    let names: Vec<String> = changed
        .iter()
        .take(3)
        .map(|p| p.strip_prefix(project).unwrap_or(p).display().to_string())
        .collect();
    let more = changed.len().saturating_sub(names.len());
    let mut text = names.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    format!("{text} changed")
}

/// What one run did, from its events.
#[derive(Default)]
struct Tally {
    ran: Vec<String>,
    cached: usize,
    /// Stage, short id and failure message of each failed job.
    failed: Vec<(String, String, String)>,
    skipped: usize,
}

impl Tally {
    fn add(&mut self, event: &Event) {
        match event {
            Event::JobFinished { stage, .. } => self.ran.push(stage.clone()),
            Event::JobCached { .. } => self.cached += 1,
            Event::JobFailed {
                stage, id, failure, ..
            } => self.failed.push((
                stage.clone(),
                id.chars().take(12).collect(),
                failure.message.clone(),
            )),
            Event::JobSkipped { .. } => self.skipped += 1,
            _ => {}
        }
    }

    fn line(&self, why: &str, took: Duration) -> String {
        let mut parts = Vec::new();
        if !self.ran.is_empty() {
            parts.push(format!("ran {}", self.ran.join(", ")));
        }
        if self.cached > 0 {
            parts.push(format!("{} cached", self.cached));
        }
        for (stage, id, _) in &self.failed {
            parts.push(format!("FAILED {stage} (repx log {id})"));
        }
        if self.skipped > 0 {
            parts.push(format!("{} skipped", self.skipped));
        }
        if parts.is_empty() {
            parts.push("nothing to run".into());
        }
        let waiting = if self.failed.is_empty() {
            ""
        } else {
            "; waiting for changes"
        };
        let mut text = terminal(&format!(
            "watch: {why}: {} in {} ms{waiting}",
            parts.join(", "),
            took.as_millis()
        ))
        .into_owned();
        // Under the line, what each failure said past its first line (a compiler's errors):
        // what the edit loop needs to see without `repx log`.
        for (_, _, message) in &self.failed {
            for line in message.lines().skip(1) {
                text.push_str(&format!("\n    | {}", terminal(line)));
            }
        }
        text
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
