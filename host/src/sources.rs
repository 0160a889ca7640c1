//! What an impure stage depends on, and whether its jobs are still up to date.
//!
//! An impure job reads and writes the live project directory, so its id cannot say what it
//! read. Instead each impure stage has a *scope*, whose fingerprint (paths and contents) is
//! taken before and after each of its jobs runs:
//! - the files matching its `sources` globs, relative to the project directory;
//! - with no `sources`, the trees of its `path:` inputs;
//! - with neither, the whole project directory.
//!
//! The store (and any `.repx` or `.git` directory) is never part of a scope.
//!
//! Up to date means: nothing but this stage's own jobs changed the scope since the job
//! ran. The store keeps, per stage, the fingerprints the scope went through while only its
//! jobs changed it, oldest first (its *settled* list). A job starts a new list unless the
//! scope is as the last job left it; when it is done its fingerprint is appended (unless
//! the job left the scope as it found it) and also recorded with its output. A job is up
//! to date when the scope is as the list's last fingerprint and its own is in the list.
//! So the jobs of a swept stage, each of which writes the tree (make's objects), stay
//! cached together, while an edit between two of them re-runs the earlier one too. The
//! list keeps as many fingerprints as twice the stage's impure jobs in the run (at least
//! 256), so a whole sweep stays cached however wide; a job whose fingerprint was dropped,
//! after many re-runs of others, re-runs once.
//!
//! What counts is what the job read, not the tree it leaves: an edit saved while a job runs
//! (after `make` read the file, say) must not be counted as built. So the scan before a job
//! keeps each file's digest, and the scan after it compares: a file that changed while the
//! job ran is the job's own write only if it is one of the files the stage's jobs *create*
//! (make's objects, first created by a job, then rewritten by later ones; the store keeps
//! their names). Any other change (an edited source, a file removed) may have come after
//! the job read it: the job then records no fingerprint, so it is never up to date, and its
//! scope is not appended to the settled list, so the next run runs the stage again. A file
//! a job rewrites but never created (objects built by hand before the first run) counts as
//! such an edit, at the cost of one more run of the job, until a job creates it.
//!
//! Hashing a whole project every run would be slow; a file whose size, mtime, ctime and
//! inode are as when it was last hashed is not read again. Files changed within the last
//! two seconds are always read, as a later change could keep the same times.
//!
//! The state lives in `<store>/fingerprints/<stage>.<lab>.json`, changed under an
//! exclusive lock on a file beside it, and replaced whole by a rename.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use walkdir::WalkDir;

use crate::file_stat::RACY_SECS;
use crate::lab::{Input, Lab, Stage};

/// The files [`Sources::before_job`] gave the current time since [`take_touched`] was
/// last called: `repx run --watch` takes no such change for an edit.
static TOUCHED: std::sync::Mutex<BTreeSet<PathBuf>> = std::sync::Mutex::new(BTreeSet::new());

/// The files this process touched (see [`TOUCHED`]), forgotten here.
pub fn take_touched() -> BTreeSet<PathBuf> {
    std::mem::take(&mut *TOUCHED.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The fewest fingerprints a settled list keeps, however few jobs the stage has now: other
/// runs of the lab may sweep the stage wider.
const SETTLED_MIN: usize = 256;

/// What an impure stage's fingerprint covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// Files under the project directory matching the stage's `sources`.
    Globs(Vec<String>),
    /// The trees of the stage's `path:` inputs.
    Inputs(Vec<PathBuf>),
    /// The whole project directory.
    Project,
}

impl Scope {
    fn of(stage: &Stage) -> Scope {
        if !stage.sources.is_empty() {
            return Scope::Globs(stage.sources.clone());
        }
        let inputs: Vec<PathBuf> = stage
            .inputs
            .values()
            .filter_map(|input| match input {
                Input::Path(path) => Some(path.clone()),
                _ => None,
            })
            .collect();
        if inputs.is_empty() {
            Scope::Project
        } else {
            Scope::Inputs(inputs)
        }
    }
}

/// One impure stage's scope and its state in the store.
#[derive(Debug)]
pub struct Sources {
    stage: String,
    scope: Scope,
    project: PathBuf,
    /// The store, left out of every scope.
    store: PathBuf,
    state: PathBuf,
    /// The fingerprints with which a job of this stage was up to date when loaded.
    settled: Vec<String>,
    /// How many fingerprints the settled list keeps.
    keep: usize,
    /// Files of the scope that changed since it was last read (relative to the project,
    /// sorted), for a reason to name.
    changed: Vec<String>,
}

/// What the store keeps for one stage.
#[derive(Default, Serialize, Deserialize)]
struct State {
    /// See the module documentation.
    settled: Vec<String>,
    /// Each file (absolute path) as it was when last hashed.
    files: BTreeMap<String, Seen>,
    /// The files (names in the scope) that a job of the stage created: changes to them
    /// while a job runs are the job's own.
    #[serde(default)]
    written: BTreeSet<String>,
    /// What the stage's last successful job read of each file (names in the scope): the
    /// file's digest after it, or, for a file something else changed while it ran, the
    /// digest the job found. With `ended`, see [`Sources::before_job`].
    #[serde(default)]
    read: BTreeMap<String, String>,
    /// When that job ended: seconds and nanoseconds since the epoch.
    #[serde(default)]
    ended: Option<(i64, i64)>,
}

/// The scope as a job found it: each file's name in the scope and its digest.
#[derive(Debug)]
pub struct Before {
    digests: BTreeMap<String, String>,
}

/// One reading of the scope.
struct Scan {
    fingerprint: String,
    /// The files whose times are settled, to skip hashing them next time.
    files: BTreeMap<String, Seen>,
    /// Every file's name in the scope and its digest.
    digests: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    len: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    hash: String,
}

impl Seen {
    fn of(meta: &fs::Metadata, hash: String) -> Seen {
        Seen {
            len: meta.len(),
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            hash,
        }
    }

    fn settled_before(&self, secs: i64) -> bool {
        self.mtime.0 < secs - RACY_SECS && self.ctime.0 < secs - RACY_SECS
    }
}

impl Sources {
    /// The stage's scope, and which of its `jobs` impure jobs are up to date now. Reading
    /// the scope refreshes the stored file times, so the next reading is cheaper.
    pub fn load(lab: &Lab, stage: &Stage, store: &Path, jobs: usize) -> io::Result<Sources> {
        Sources::open(&stage.name, Scope::of(stage), &lab.dir, store, jobs)
    }

    fn open(
        stage: &str,
        scope: Scope,
        project: &Path,
        store: &Path,
        jobs: usize,
    ) -> io::Result<Sources> {
        let mut sources = Sources {
            stage: stage.to_string(),
            scope,
            project: project.to_path_buf(),
            store: store.to_path_buf(),
            state: state_path(stage, project, store),
            settled: Vec::new(),
            keep: jobs.saturating_mul(2).max(SETTLED_MIN),
            changed: Vec::new(),
        };
        let before = sources.read()?.files;
        let current = sources.fingerprint(|_, _| {})?.fingerprint;
        let state = sources.read()?;
        let project = project
            .canonicalize()
            .unwrap_or_else(|_| project.to_path_buf());
        let relative = |path: &String| {
            Path::new(path)
                .strip_prefix(&project)
                .map_or(path.clone(), |p| p.to_string_lossy().into_owned())
        };
        // Files read last time as well, with other contents, or gone. (A file changed just
        // before the last reading was not kept then, so a new file cannot be told from it.)
        let mut changed: Vec<String> = before
            .iter()
            .filter(|(name, seen)| {
                state
                    .files
                    .get(*name)
                    .is_none_or(|now| now.hash != seen.hash)
            })
            .map(|(name, _)| relative(name))
            .collect();
        changed.sort();
        sources.changed = changed;
        if state.settled.last() == Some(&current) {
            sources.settled = state.settled;
        }
        Ok(sources)
    }

    /// Files of the scope that changed since it was last read, relative to the project.
    pub fn changed(&self) -> &[String] {
        &self.changed
    }

    /// Whether no job of this stage was up to date at loading: the scope is not as the
    /// stage's last job left it, so each of its jobs is to run.
    pub fn stale(&self) -> bool {
        self.settled.is_empty()
    }

    /// Whether a job of this stage that recorded `fingerprint` was up to date at loading.
    pub fn up_to_date(&self, fingerprint: &str) -> bool {
        self.settled.iter().any(|f| f == fingerprint)
    }

    /// Before one of the stage's jobs runs: unless the scope is as the last job left it,
    /// something else changed it, and the earlier jobs are out of date. What it returns is
    /// what the job will read, for [`Sources::after_job`].
    ///
    /// A tool that goes by modification times (make) rebuilds what is older than its
    /// sources, so it misses a change whose time is not after its last build: an edit
    /// saved while that build ran, after the tool read the file, or a file put back with
    /// its old time (`cp -p`, `tar x`, `rsync -t`). Each file whose content the stage's last
    /// job did not read, and whose time is not after that job's end, gets the current time
    /// first (its content is left as it is), so that the tool sees it changed.
    pub fn before_job(&self) -> io::Result<Before> {
        let mut unseen = Vec::new();
        let mut ended = None;
        let scan = self.fingerprint(|state, scan| {
            if state.settled.last() != Some(&scan.fingerprint) {
                state.settled = vec![scan.fingerprint.clone()];
            }
            ended = state.ended;
            if ended.is_some() {
                unseen = scan
                    .digests
                    .iter()
                    .filter(|(name, digest)| state.read.get(*name) != Some(*digest))
                    .map(|(name, _)| name.clone())
                    .collect();
            }
        })?;
        if let (Some(ended), Ok(project)) = (ended, self.project.canonicalize()) {
            for name in &unseen {
                touch_if_older(&project, &project.join(name), ended);
            }
        }
        Ok(Before {
            digests: scan.digests,
        })
    }

    /// After one of the stage's jobs succeeded: the fingerprint to record with it, or none
    /// when something other than the job changed the scope while it ran (see the module
    /// documentation), which leaves the job, and the stage, out of date.
    pub fn after_job(&self, before: &Before) -> io::Result<Option<String>> {
        let mut edited = false;
        let scan = self.fingerprint(|state, scan| {
            let current = &scan.fingerprint;
            // Files made during the job are its own; of the others, only those it made
            // once before.
            let made: Vec<&String> = scan
                .digests
                .keys()
                .filter(|name| !before.digests.contains_key(*name))
                .collect();
            edited = before.digests.iter().any(|(name, digest)| {
                scan.digests.get(name) != Some(digest) && !state.written.contains(name)
            });
            note_read(state, before, scan);
            state.written.extend(made.into_iter().cloned());
            if edited {
                return;
            }
            if state.settled.last() != Some(current) {
                state.settled.push(current.clone());
            }
            let over = state.settled.len().saturating_sub(self.keep);
            state.settled.drain(..over);
        })?;
        Ok((!edited).then_some(scan.fingerprint))
    }

    /// After one of the stage's jobs failed or was cut off: what it read, for the next
    /// job's [`Sources::before_job`] (an edit saved while it ran is as unseen as after a
    /// success). The settled list is left as it is: the job recorded nothing.
    pub fn after_failure(&self, before: &Before) -> io::Result<()> {
        self.fingerprint(|state, scan| note_read(state, before, scan))
            .map(|_| ())
    }

    /// Reads the scope; stores the file times seen and what `then` changes, at once.
    fn fingerprint(&self, then: impl FnOnce(&mut State, &Scan)) -> io::Result<Scan> {
        let seen = self.read()?.files;
        let mut scan = self.scan(&seen)?;
        self.update(|state| {
            state.files = std::mem::take(&mut scan.files);
            then(state, &scan);
        })?;
        Ok(scan)
    }

    /// The fingerprint of the scope, and the files it read with their times and digests.
    fn scan(&self, seen: &BTreeMap<String, Seen>) -> io::Result<Scan> {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let project = self.project.canonicalize().map_err(at(&self.project))?;
        let store = self.store.canonicalize().ok();
        let (roots, globs) = match &self.scope {
            Scope::Globs(globs) => (vec![project.clone()], Some(glob_set(globs)?)),
            Scope::Inputs(inputs) => (
                inputs
                    .iter()
                    .map(|i| i.canonicalize().map_err(at(i)))
                    .collect::<io::Result<_>>()?,
                None,
            ),
            Scope::Project => (vec![project.clone()], None),
        };
        let mut hasher = blake3::Hasher::new();
        let mut files = BTreeMap::new();
        let mut digests = BTreeMap::new();
        for root in roots {
            let walk = WalkDir::new(&root)
                .follow_links(false)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(|e| {
                    let name = e.file_name();
                    name != crate::store::DEFAULT_DIR
                        && name != ".git"
                        && Some(e.path()) != store.as_deref()
                });
            for entry in walk {
                let entry = entry.map_err(io::Error::from)?;
                let path = entry.path();
                let kind = entry.file_type();
                if !(kind.is_file() || kind.is_symlink()) {
                    continue;
                }
                // Names are relative to the project, so a moved project keeps its fingerprint.
                let name = path.strip_prefix(&project).unwrap_or(path);
                if globs.as_ref().is_some_and(|g| !g.is_match(name)) {
                    continue;
                }
                let digest = if kind.is_symlink() {
                    // The link, and what a tool reads through it: the file it leads to.
                    let target = fs::read_link(path).map_err(at(path))?;
                    let mut link = blake3::Hasher::new();
                    link.update(b"link:");
                    link.update(target.as_os_str().as_encoded_bytes());
                    if let Some(content) = linked_file(path, &project) {
                        link.update(b"\0");
                        link.update(content.as_bytes());
                    }
                    link.finalize().to_hex().to_string()
                } else {
                    let meta = entry.metadata().map_err(io::Error::from)?;
                    let key = path.to_string_lossy().into_owned();
                    let digest = match seen.get(&key) {
                        Some(old) if *old == Seen::of(&meta, old.hash.clone()) => old.hash.clone(),
                        _ => blake3::hash(&fs::read(path).map_err(at(path))?)
                            .to_hex()
                            .to_string(),
                    };
                    let now = Seen::of(&meta, digest.clone());
                    if now.settled_before(started) {
                        files.insert(key, now);
                    }
                    digest
                };
                let bytes = name.as_os_str().as_encoded_bytes();
                hasher.update(&(bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
                hasher.update(digest.as_bytes());
                digests.insert(name.to_string_lossy().into_owned(), digest);
            }
        }
        Ok(Scan {
            fingerprint: hasher.finalize().to_hex().to_string(),
            files,
            digests,
        })
    }

    fn read(&self) -> io::Result<State> {
        self.parse(&self.read_bytes()?)
    }

    fn read_bytes(&self) -> io::Result<Vec<u8>> {
        match fs::read(&self.state) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(at(&self.state)(e)),
        }
    }

    fn parse(&self, bytes: &[u8]) -> io::Result<State> {
        if bytes.is_empty() {
            return Ok(State::default());
        }
        serde_json::from_slice(bytes).map_err(|e| {
            io::Error::other(format!(
                "{}: {e}; delete it, and the stage's jobs re-run once",
                self.state.display()
            ))
        })
    }

    /// Changes the stored state under its lock: other `repx` processes (a `repx list`
    /// beside a run, SLURM workers) may read the scope at the same time. A state left as
    /// it was is not written, so a run that changes nothing writes nothing.
    fn update(&self, change: impl FnOnce(&mut State)) -> io::Result<()> {
        let dir = self
            .state
            .parent()
            .expect("the state file is in a directory");
        fs::create_dir_all(dir).map_err(at(dir))?;
        let lock_path = self.state.with_extension("lock");
        // Opened as it is, not truncated: a truncation of the empty file would still change
        // its times, a journalled write of the inode on each of a cycle's three updates.
        let lock = File::options()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(at(&lock_path))?;
        lock.lock().map_err(at(&lock_path))?;
        let before = self.read_bytes()?;
        let mut state = self.parse(&before)?;
        change(&mut state);
        let after = serde_json::to_vec(&state).map_err(io::Error::other)?;
        if after == before {
            return Ok(());
        }
        let tmp = self
            .state
            .with_extension(format!("json.{}", std::process::id()));
        fs::write(&tmp, after).map_err(at(&tmp))?;
        fs::rename(&tmp, &self.state).map_err(at(&self.state))
    }
}

impl std::fmt::Display for Sources {
    /// What the stage's fingerprint covers, for messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.scope {
            Scope::Globs(globs) => write!(f, "stage `{}`'s sources {globs:?}", self.stage),
            Scope::Inputs(inputs) => {
                let list: Vec<_> = inputs.iter().map(|i| i.display().to_string()).collect();
                write!(f, "stage `{}`'s path inputs {list:?}", self.stage)
            }
            Scope::Project => write!(
                f,
                "stage `{}`'s project directory {}",
                self.stage,
                self.project.display()
            ),
        }
    }
}

/// Keeps what a job that found `before` read of each file of `scan` (the scope after it),
/// and when it ended: for a file something else changed while it ran, the content it
/// found.
fn note_read(state: &mut State, before: &Before, scan: &Scan) {
    state.read = scan
        .digests
        .iter()
        .map(|(name, digest)| match before.digests.get(name) {
            Some(read) if read != digest && !state.written.contains(name) => {
                (name.clone(), read.clone())
            }
            _ => (name.clone(), digest.clone()),
        })
        .collect();
    state.ended = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| (d.as_secs() as i64, i64::from(d.subsec_nanos())));
}

/// Gives the file at `path` the current time when its own is not after `ended`: only a
/// regular file of `project` (resolved), reached without a link, by a user allowed to write
/// it. One it cannot touch is left as it is (a best effort: its build may then be stale, as
/// it was before this rule).
fn touch_if_older(project: &Path, path: &Path, ended: (i64, i64)) {
    use std::os::unix::fs::OpenOptionsExt;
    if !path.starts_with(project)
        || path.parent().and_then(|d| d.canonicalize().ok()).as_deref() != path.parent()
    {
        return;
    }
    // Opened to read, without following a link or waiting on a FIFO: a watch sees no
    // write, and the content cannot change.
    let Ok(file) = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return;
    };
    let Ok(meta) = file.metadata() else {
        return;
    };
    if !meta.is_file() || (meta.mtime(), meta.mtime_nsec()) > ended {
        return;
    }
    // UTIME_NOW: what `touch` does, allowed to whoever may write the file.
    let now = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_NOW,
    };
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        now,
    ];
    // SAFETY: futimens on a descriptor this function owns, with two valid timespecs.
    let done = unsafe { libc::futimens(std::os::fd::AsRawFd::as_raw_fd(&file), times.as_ptr()) };
    if done == 0 {
        TOUCHED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf());
    }
}

/// The digest of the regular file the link at `path` leads to, when that file lies in the
/// project: a link anywhere else (`/proc/self/mem`, a device, a FIFO, another user's
/// file), which a job may plant, counts by its text alone.
fn linked_file(path: &Path, project: &Path) -> Option<blake3::Hash> {
    use std::os::unix::fs::OpenOptionsExt;
    let real = path.canonicalize().ok()?;
    if !real.starts_with(project) {
        return None;
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&real)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    Some(blake3::Hasher::new().update_reader(file).ok()?.finalize())
}

/// Where the store keeps a stage's state. Labs may share a store; each has its own state
/// for a stage of the same name.
fn state_path(stage: &str, project: &Path, store: &Path) -> PathBuf {
    let lab = blake3::hash(project.as_os_str().as_encoded_bytes()).to_hex();
    store
        .join("fingerprints")
        .join(format!("{stage}.{}.json", &lab[..16]))
}

/// The files under the project that the impure stage's jobs created (make's objects):
/// their changes are the jobs' own, which `repx run --watch` does not react to. Empty
/// when the state cannot be read.
pub fn written(lab: &Lab, stage: &Stage, store: &Path) -> BTreeSet<PathBuf> {
    let state = fs::read(state_path(&stage.name, &lab.dir, store)).unwrap_or_default();
    let state: State = serde_json::from_slice(&state).unwrap_or_default();
    let project = lab.dir.canonicalize().unwrap_or_else(|_| lab.dir.clone());
    let mut written = BTreeSet::new();
    for name in state.written {
        written.insert(lab.dir.join(&name));
        written.insert(project.join(&name));
    }
    written
}

/// Whether `path` (under the project) is in the scope of an impure stage whose `sources`
/// are `globs`, the rule the fingerprint follows.
pub fn in_sources(globs: &[String], project: &Path, path: &Path) -> bool {
    let Ok(name) = path.strip_prefix(project) else {
        return false;
    };
    glob_set(globs).is_ok_and(|set| set.is_match(name))
}

/// Prefixes an error with the path it is about.
fn at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn glob_set(globs: &[String]) -> io::Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for glob in globs {
        set.add(Glob::new(glob).map_err(io::Error::other)?);
    }
    set.build().map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A project directory with `src/a.c`, `notes.txt` and a store `.repx`.
    fn project(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("repx-sources-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("src")).unwrap();
        fs::create_dir_all(dir.join(".repx")).unwrap();
        fs::write(dir.join("src/a.c"), "int a;").unwrap();
        fs::write(dir.join("notes.txt"), "x").unwrap();
        dir
    }

    fn open(dir: &Path, scope: Scope) -> Sources {
        Sources::open("s", scope, dir, &dir.join(".repx"), 1).unwrap()
    }

    fn current(dir: &Path, scope: Scope) -> String {
        open(dir, scope).fingerprint(|_, _| {}).unwrap().fingerprint
    }

    #[test]
    fn the_scope_is_the_sources_else_the_path_inputs_else_the_project() {
        let mut stage = Stage {
            name: "s".into(),
            plugin: crate::lab::PluginRef::Builtin("make".into()),
            sha256: None,
            mode: crate::lab::Mode::Impure,
            inputs: [("up".to_string(), Input::Stage("u".into()))].into(),
            params: Default::default(),
            outputs: vec![],
            tools: vec![],
            sources: vec![],
            limits: Default::default(),
            retries: 0,
            escalate: Default::default(),
            resources: Default::default(),
            foreach: None,
        };
        assert_eq!(Scope::of(&stage), Scope::Project);
        stage.inputs.insert("d".into(), Input::Path("/p/d".into()));
        assert_eq!(Scope::of(&stage), Scope::Inputs(vec!["/p/d".into()]));
        stage.sources = vec!["src/**".into()];
        assert_eq!(Scope::of(&stage), Scope::Globs(vec!["src/**".into()]));
    }

    #[test]
    fn globs_follow_matching_files_only() {
        let dir = project("globs");
        let globs = || Scope::Globs(vec!["src/**".to_string()]);
        let first = current(&dir, globs());
        fs::write(dir.join("notes.txt"), "y").unwrap();
        assert_eq!(first, current(&dir, globs()));
        fs::write(dir.join("src/a.c"), "int b;").unwrap();
        assert_ne!(first, current(&dir, globs()));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_project_scope_leaves_out_the_store() {
        let dir = project("store");
        let first = current(&dir, Scope::Project);
        fs::write(dir.join(".repx/any-file"), "{}").unwrap();
        assert_eq!(first, current(&dir, Scope::Project));
        fs::write(dir.join("notes.txt"), "y").unwrap();
        assert_ne!(first, current(&dir, Scope::Project));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_is_read_again_only_when_its_times_changed() {
        let dir = project("times");
        let sources = open(&dir, Scope::Project);
        let file = dir.join("src/a.c").canonicalize().unwrap();
        // Old times, as a file left alone has; the write below gives it new ones.
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        let handle = File::options().write(true).open(&file).unwrap();
        handle.set_modified(old).unwrap();
        let remembered = |hash: &str| {
            let meta = fs::metadata(&file).unwrap();
            let key = file.to_string_lossy().into_owned();
            BTreeMap::from([(key, Seen::of(&meta, hash.into()))])
        };
        let fresh = sources.scan(&BTreeMap::new()).unwrap().fingerprint;
        assert_eq!(
            fresh,
            sources
                .scan(&remembered(&hash_of("int a;")))
                .unwrap()
                .fingerprint
        );
        // The remembered digest stands in for the file while its times are the same...
        let stale = remembered(&hash_of("int z;"));
        assert_ne!(fresh, sources.scan(&stale).unwrap().fingerprint);
        // ...and an edit of the same size changes them.
        fs::write(&file, "int b;").unwrap();
        let edited = sources.scan(&BTreeMap::new()).unwrap().fingerprint;
        assert_ne!(edited, fresh);
        assert_eq!(edited, sources.scan(&stale).unwrap().fingerprint);
        fs::remove_dir_all(&dir).unwrap();
    }

    fn hash_of(text: &str) -> String {
        blake3::hash(text.as_bytes()).to_hex().to_string()
    }

    #[test]
    fn jobs_stay_up_to_date_until_something_else_changes_the_scope() {
        let dir = project("settled");
        // A job of the stage writes into the project.
        let job = |object: &str| {
            let sources = open(&dir, Scope::Project);
            let before = sources.before_job().unwrap();
            fs::write(dir.join(object), object).unwrap();
            sources.after_job(&before).unwrap().unwrap()
        };
        // Two jobs of a swept stage, each writing the tree: both are up to date after.
        let (first, second) = (job("1.o"), job("2.o"));
        let now = open(&dir, Scope::Project);
        assert!(now.up_to_date(&first) && now.up_to_date(&second));
        // An edit makes both stale; re-running only the second leaves the first stale.
        fs::write(dir.join("src/a.c"), "int b;").unwrap();
        let now = open(&dir, Scope::Project);
        assert!(!now.up_to_date(&first) && !now.up_to_date(&second));
        let again = job("2.o");
        let now = open(&dir, Scope::Project);
        assert!(now.up_to_date(&again) && !now.up_to_date(&first));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_edit_while_a_job_runs_leaves_it_out_of_date_but_its_own_writes_do_not() {
        let dir = project("edited");
        let job = |edit: bool| {
            let sources = open(&dir, Scope::Project);
            let before = sources.before_job().unwrap();
            // The job reads the source, then writes its object...
            let object = format!("{}.o", fs::read_to_string(dir.join("src/a.c")).unwrap());
            fs::write(dir.join("a.o"), object).unwrap();
            // ...and the source is saved again before it is over.
            if edit {
                fs::write(dir.join("src/a.c"), "int edited;").unwrap();
            }
            sources.after_job(&before).unwrap()
        };
        // The first job creates a.o; a later one rewrites it, and is up to date.
        let first = job(false).unwrap();
        assert!(open(&dir, Scope::Project).up_to_date(&first));
        fs::write(dir.join("src/a.c"), "int b;").unwrap();
        let again = job(false).unwrap();
        assert!(open(&dir, Scope::Project).up_to_date(&again));
        // An edit during the job: no fingerprint, and the stage is out of date.
        assert_eq!(job(true), None);
        let now = open(&dir, Scope::Project);
        assert!(!now.up_to_date(&first) && !now.up_to_date(&again));
        // The next job reads the edit and is up to date.
        let after = job(false).unwrap();
        assert!(open(&dir, Scope::Project).up_to_date(&after));
        assert_eq!(
            fs::read_to_string(dir.join("a.o")).unwrap(),
            "int edited;.o"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_sweep_wider_than_256_stays_cached_and_jobs_leaving_the_scope_alone_add_nothing() {
        let dir = project("wide");
        let jobs = 300;
        // A job writing `text` into `object`, or nothing when `object` is empty.
        let job = |object: &str, text: &str| {
            let sources =
                Sources::open("s", Scope::Project, &dir, &dir.join(".repx"), jobs).unwrap();
            let before = sources.before_job().unwrap();
            if !object.is_empty() {
                fs::write(dir.join(object), text).unwrap();
            }
            sources.after_job(&before).unwrap().unwrap()
        };
        // Each job of the sweep writes its own object: every one is up to date after.
        let recorded: Vec<String> = (0..jobs).map(|i| job(&format!("{i}.o"), "o")).collect();
        let now = Sources::open("s", Scope::Project, &dir, &dir.join(".repx"), jobs).unwrap();
        let stale = recorded.iter().filter(|f| !now.up_to_date(f)).count();
        assert_eq!(stale, 0, "of {jobs} jobs");

        // Jobs that write nothing leave the list as it was: the scope before the sweep,
        // then one fingerprint per job.
        let length = |s: &Sources| s.read().unwrap().settled.len();
        assert_eq!(length(&now), jobs + 1);
        for _ in 0..5 {
            job("", "");
        }
        assert_eq!(length(&now), jobs + 1);
        // No more than twice the jobs, however often they re-run and change the scope.
        for i in 0..2 * jobs {
            job("0.o", &i.to_string());
        }
        assert_eq!(length(&now), 2 * jobs);
        fs::remove_dir_all(&dir).unwrap();
    }
}
