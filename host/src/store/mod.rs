//! The store: committed job outputs, their records, logs, and source snapshots.
//!
//! Layout under the store root (by default outside the project, linked as its `.repx`;
//! see [`location`]):
//! ```text
//! records.jsonl        append-only, one Record per committed job (last one per id wins)
//! records.index        what a check of a large records.jsonl found, a hint; see [`index`]
//! jobs/<id>/out/       a committed output, read-only
//! jobs/<id>/manifest.json  every entry of out/ with its digest, for `repx verify`
//! jobs/<id>/stdout     the job's logs, when it wrote any (also stderr, host.log)
//! jobs/<id>/attempts/<k>/  a retried job's failed attempts: logs and failure.json
//! failed/<id>/         logs and failure.json of the last failed attempt; its attempts/<k>/
//!                      the attempts that failed before it in the same run
//! snapshots/<hash>/    read-only copies of `path:` inputs, by content
//! fingerprints/        what impure stages' scopes were when their jobs ran; see `sources`
//! roots/<hash>         one per lab using the store, holding its path; see [`gc`]
//! tools.json           granted tools' digests, kept by their files' stat; see [`tools`]
//! pins/<hash>          one per pinned run: the job ids `gc` keeps whatever reaches them
//! tmp/                 jobs being run; never trusted, cleared under the lock
//! tmp/live/<id>/       a running job's logs as they come, for `repx log -f`; see [`live`]
//! tmp/inputs-<stage>/ the input listing a stage's jobs share during a run
//! nix/<id>             GC roots of hermetic jobs' Nix outputs
//! lock                 who holds the store's lock (the lock is on the directory, see [`lock`])
//! records.lock         taken around each append to records.jsonl, see [`records`]
//! workers.lock         held shared by each `repx worker` (SLURM) writing into the store
//! slurm/<run>/         batches, worker events and SLURM logs of `--scheduler slurm` runs
//! ```
//! Only this module spells these names: the rest of the engine asks for a path by what it
//! is for ([`Store::job_dir`], [`Store::tmp_dir`], [`Store::nix_root`], …).
//!
//! Invariant: a job is done only when its record exists *and* `jobs/<id>/out` holds what
//! was sealed: each entry's `stat` is as the record stamped it, or else the output hashes
//! to the record's hash (see [`Store::done`]; the scheduler also checks the declared
//! outputs and, for a job with upstream jobs, that their outputs are those it read). An output
//! is staged in `tmp/`, hashed, made read-only, fsynced, then renamed into `jobs/`, and only
//! then recorded; a crash at any point leaves either no output or an unrecorded one, which
//! the next run replaces. Outputs are committed in batches that share the flushes and the
//! append (see [`Store::commit_sealed`]); each job of a batch keeps this order. A failed
//! append leaves the record log as it was (see [`records`]).
//!
//! Opening: [`Store::open`] takes the lock and may change the store; [`Store::open_shared`]
//! (`repx verify`, `repx gc --dry-run`) and [`Store::open_reader`] (`list`, `show`, `log`,
//! `results`, `report`, `viz`) create nothing and so work on a store they cannot write.
//! Trees are removed by descriptor ([`remove_tree`]), so no output a plugin makes, however
//! deep, can stop the store from clearing `tmp/`; what cannot be cleared is reported as a
//! [`Warning`] and the store goes on.
//!
//! Workers: while `repx run --scheduler slurm` holds the lock, the `repx worker`s it starts
//! on cluster nodes open the store with [`Store::open_worker`]. They stage under names of
//! their own (host and pid), commit the same way and append one record line each (under
//! `records.lock`, for shared filesystems); they never clear `tmp/`, and the lock holder
//! clears it only when no worker holds `workers.lock`. [`Store::refresh`] reads the records
//! others appended.

mod commit;
pub mod gc;
mod index;
mod live;
pub mod location;
pub mod lock;
mod pins;
mod records;
mod remove;
mod table;
mod tools;
mod tree;
pub mod verify;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};

pub use commit::{Sealed, declared_outputs_present, within_output_limit};
pub use lock::{Access, Holder};
pub use pins::Pin;
use records::RecordLog;
pub use remove::remove_tree;
pub use tree::{
    Entry, Stamp, Tree, TreeError, TreeSummary, copy_tree, hash_tree, open_regular, seal_tree,
};

/// The file beside a job's `out/` listing every entry and its digest.
pub const MANIFEST: &str = "manifest.json";

/// The name of the link to a project's store in the project (see [`location`]).
pub const DEFAULT_DIR: &str = ".repx";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store {} is in use by {}; wait for it to finish, or use another --store", path.display(), holder.as_ref().map_or("another repx process".to_string(), |h| format!("repx process {} (`{}`)", h.pid, h.command)))]
    Locked {
        path: PathBuf,
        holder: Option<Holder>,
    },
    #[error("job {id}: {source}")]
    Output {
        id: String,
        #[source]
        source: TreeError,
    },
    #[error("job {id}: declared output `{}` is missing from /out", output.display())]
    MissingOutput { id: String, output: PathBuf },
    #[error("job {id}: output limit of {} exceeded ({} in /out)", crate::lab::limits::bytes(*limit), crate::lab::limits::bytes(*size))]
    OutputLimit { id: String, limit: u64, size: u64 },
}

/// `<id>/out` and the paths under it, NUL-terminated for `fstatat` from `jobs/`, in one
/// buffer: a no-op run asks for a few of each of its jobs.
struct OutPath {
    bytes: Vec<u8>,
    /// The length of `<id>/out`.
    out: usize,
}

impl OutPath {
    fn new(id: &str) -> OutPath {
        let mut bytes = Vec::with_capacity(id.len() + 64);
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(b"/out");
        OutPath {
            out: bytes.len(),
            bytes,
        }
    }

    /// `<id>/out` itself.
    fn dir(&mut self) -> &[u8] {
        self.bytes.truncate(self.out);
        self.bytes.push(0);
        &self.bytes
    }

    /// `<id>/out/<entry>`; a NUL inside `entry` makes it no path, which `stat` refuses.
    fn entry(&mut self, entry: &std::ffi::OsStr) -> &[u8] {
        use std::os::unix::ffi::OsStrExt;
        self.bytes.truncate(self.out);
        self.bytes.push(b'/');
        self.bytes.extend_from_slice(entry.as_bytes());
        self.bytes.push(0);
        &self.bytes
    }
}

/// A modification time in nanoseconds since the epoch, as [`Record::out_mtime_ns`] holds
/// it, from its seconds and nanoseconds.
fn mtime_ns(seconds: i64, nanoseconds: i64) -> i64 {
    seconds * 1_000_000_000 + nanoseconds
}

/// Something wrong with a store that did not stop it from opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// Lines of `records.jsonl` (numbered from 1) that are no record: whose jobs do not
    /// count as done.
    Unparsable { log: PathBuf, lines: Vec<u64> },
    /// Something in `tmp/` that could not be removed.
    NotCleared { path: PathBuf, error: String },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::Unparsable { log, lines } => {
                let shown: Vec<String> = lines.iter().take(5).map(u64::to_string).collect();
                let more = match lines.len() {
                    0..=5 => String::new(),
                    n => format!(" and {} more", n - 5),
                };
                write!(
                    f,
                    "{}: line{} {}{more} {} no record; their jobs do not count as done \
                     (`repx verify` lists them, `repx verify --repair` removes them)",
                    log.display(),
                    if lines.len() == 1 { "" } else { "s" },
                    shown.join(", "),
                    if lines.len() == 1 { "is" } else { "are" },
                )
            }
            Warning::NotCleared { path, error } => write!(
                f,
                "could not clear {}: {error}; it stays until a later run clears it",
                path.display()
            ),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the store remembers of a committed job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub id: String,
    pub stage: String,
    pub mode: crate::lab::Mode,
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Content hash of `out/`, see [`hash_tree`].
    pub hash: String,
    /// For impure jobs: the fingerprint of the stage's scope (its `sources`, else its
    /// `path:` inputs, else the project) after it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Unix time in milliseconds when the job finished.
    pub finished_ms: u64,
    pub duration_ms: u64,
    /// For hermetic jobs: the Nix store path the output was copied from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nix: Option<String>,
    /// The modification time of `out/` once sealed, in nanoseconds: adding or removing a
    /// file there changes it, so a run notices with the one `stat` it makes anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_mtime_ns: Option<i64>,
    /// Each entry of `out/` as sealed (see [`Stamp`]): a run notices an entry changed in
    /// place with one `fstatat` per entry, and hashes the output only when a stamp differs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stamps: Vec<Stamp>,
    /// The filesystem clock's time when the output was sealed, in nanoseconds (see
    /// [`TreeSummary::sealed_ns`]); absent from records older than stamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_ns: Option<i64>,
    /// For a job with upstream jobs: a digest of their ids and output hashes as it read
    /// them, see [`inputs_digest`]. When an upstream output is recomputed into other bytes,
    /// the job no longer matches its record and runs again; into the same bytes, it stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// BLAKE3 of the plugin it ran, and the digests of its granted tools by name: what
    /// `repx run` compares to say why a later job of the stage runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<BTreeMap<String, String>>,
    /// The attempt that made it, from 1, when it was a retry (see `repx run --retries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// When it was a retry: every attempt, the failed ones and the last, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
    /// What the attempt that made it used, besides its wall time (`duration_ms`); none for
    /// a hermetic job, which Nix ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// What a job used while it ran.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    /// CPU time of the plugin, its host calls included, in microseconds.
    pub cpu_us: u64,
    /// The most its linear memories and tables held at once, in bytes.
    pub mem: u64,
    /// CPU time of its tools, in microseconds, and the largest peak RSS of any of them, in
    /// bytes; absent when it ran none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tools_cpu_us: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tools_rss: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One attempt of a job: the limits it ran with and, when it failed, how.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttemptRecord {
    /// From 1.
    pub attempt: u32,
    /// Its memory limit in bytes, and its time limit in milliseconds.
    pub memory: u64,
    pub time_ms: u64,
    /// The failure's kind as `--json` names it (`limit`, `exit_status`, …); none for the
    /// attempt that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Which limit, for a failure of kind `limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
impl Record {
    /// A record of a pure job of stage `s` with nothing else set, for the store's unit tests.
    pub(crate) fn for_test(id: &str) -> Record {
        Record {
            id: id.into(),
            stage: "s".into(),
            mode: crate::lab::Mode::Pure,
            params: Default::default(),
            hash: String::new(),
            fingerprint: None,
            finished_ms: 0,
            duration_ms: 0,
            nix: None,
            out_mtime_ns: None,
            stamps: Vec::new(),
            sealed_ns: None,
            inputs: None,
            plugin: None,
            tools: None,
            attempt: None,
            attempts: Vec::new(),
            usage: None,
        }
    }
}

/// The digest a job's [`Record::inputs`] holds: each upstream job's id and output hash, in
/// the job's order of upstream jobs; `None` when one of them has no record.
pub fn inputs_digest<'a>(
    store: &Store,
    upstream: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let records = store.table().read().unwrap_or_else(|e| e.into_inner());
    let mut digest = blake3::Hasher::new();
    for id in upstream {
        let hash = records.hash(id)?;
        digest.update(id.as_bytes());
        digest.update(b" ");
        digest.update(hash.as_bytes());
        digest.update(b"\n");
    }
    Some(digest.finalize().to_hex().to_string())
}

impl Serialize for crate::lab::Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for crate::lab::Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Matched as it is read, with no copy: every record has a mode.
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = crate::lab::Mode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mode: pure, impure or hermetic")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
                use crate::lab::Mode;
                match name {
                    "pure" => Ok(Mode::Pure),
                    "impure" => Ok(Mode::Impure),
                    "hermetic" => Ok(Mode::Hermetic),
                    other => Err(E::custom(format!("unknown mode `{other}`"))),
                }
            }
        }
        d.deserialize_str(Name)
    }
}

/// A job's working directory while it runs: `out/` inside it and, from a pool of
/// directories reused from job to job, an empty `scratch` for the plugin's `/tmp`.
pub struct Staging {
    pub id: String,
    /// The attempt it is for, from 1.
    pub attempt: u32,
    pub dir: PathBuf,
    pub out: PathBuf,
    pub scratch: PathBuf,
}

/// The logs a finished attempt leaves.
#[derive(Default)]
pub struct Logs {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub host: Vec<u8>,
}

/// Where committed jobs' outputs are, apart from the [`Store`]: [`Outputs::of`] is
/// [`Store::output_dir`].
#[derive(Debug, Clone)]
pub struct Outputs {
    jobs: PathBuf,
}

impl Outputs {
    /// The output directory of the committed job `id`.
    pub fn of(&self, id: &str) -> PathBuf {
        self.jobs.join(id).join("out")
    }
}

/// Whether `root` holds a store: its record log. Opening a store creates one, so a
/// command given a path to read must ask first.
pub fn is_store(root: &Path) -> bool {
    root.join(records::FILE).is_file()
}

pub struct Store {
    root: PathBuf,
    /// The records; read through [`Store::table`], which waits for the check of the log
    /// read at open when it is still going on (see [`Store::new`]).
    records: RwLock<table::Records>,
    checking: Mutex<Option<Checking>>,
    checked: std::sync::OnceLock<()>,
    log: RecordLog,
    /// Tells this process's staging directories apart from other processes'.
    tag: String,
    /// Empty scratch directories in `tmp/`, handed from one job to the next: creating and
    /// removing one per job is what dominated a trivial job's cost on ext4.
    scratch: Mutex<Vec<PathBuf>>,
    scratch_made: AtomicU64,
    /// Whether `tmp/staging.<tag>/`, where job attempts are staged, exists yet.
    staging_made: AtomicBool,
    /// `jobs/`, open: whether an output exists is one `fstatat` from here, not a walk of
    /// the whole path (a no-op run asks it of every job). `None` when there is none yet.
    jobs: Option<File>,
    /// What holds the store: its directory, locked (see [`lock`]), or a worker's
    /// `workers.lock`; nothing for a reader.
    _lock: Option<File>,
    warnings: Mutex<Vec<Warning>>,
    /// Whether writing into the store failed, as a full disk makes it.
    io_failed: AtomicBool,
    /// Whether this process appended records: the lock holder then indexes the log again
    /// when it is done (see [`index`]).
    appended: AtomicBool,
    /// Replaced job directories being removed beside the run (see
    /// [`commit`](Store::commit_sealed)), waited for when the store is dropped.
    trash: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Whether this process holds the store's lock ([`Store::open`]): only it writes what
    /// every run shares, such as the tools' digests.
    holder: bool,
    /// The tools' digests kept by stat, read on first use (see [`tools`]).
    tools: Mutex<Option<tools::Digests>>,
}

/// The log's text read at open, being checked (see [`Store::table`]).
enum Checking {
    /// A large log, on a thread of its own, by way of its index where it has a good one.
    Apart(std::thread::JoinHandle<Checked>),
    /// Not yet: a small log is checked when first needed.
    Here(Vec<u8>),
}

/// A large log's text, what its index says of a prefix of it, and each line after that.
struct Checked {
    text: Vec<u8>,
    kept: Option<index::Index>,
    rest: Vec<Option<table::Found>>,
}

impl Checked {
    /// Checks `text`, the log read from its start, by way of the index in `root`.
    fn new(root: &Path, text: Vec<u8>) -> Checked {
        let kept = index::read(root, &text);
        let covered = kept.as_ref().map_or(0, |index| index.covered);
        let mut rest = records::check(&text[covered..]);
        for found in rest.iter_mut().flatten() {
            found.start += covered;
            found.end += covered;
        }
        Checked { text, kept, rest }
    }

    /// Counts the lines on `log` (which read the text), and makes the index of the whole
    /// text: returns the text, the index, and whether the index read covered it all.
    fn count(self, log: &RecordLog) -> (Vec<u8>, index::Index, bool) {
        let Checked { text, kept, rest } = self;
        let mut index = kept.unwrap_or(index::Index {
            covered: 0,
            lines: 0,
            unparsable: Vec::new(),
            records: Vec::new(),
        });
        log.tally_known(index.lines, &index.unparsable);
        if rest.is_empty() {
            return (text, index, true);
        }
        index.lines += rest.len() as u64;
        let rest = log.tally(rest);
        // Read from the log's start: every line the log has counted so far.
        index.unparsable = log.unparsable();
        index.records.extend(rest);
        index.covered = text.len();
        (text, index, false)
    }
}

/// A process that wrote into the store leaves none of its own scratch or staging
/// directories in `tmp/` when it is done with the store: what a failed or interrupted
/// attempt staged is discarded, and nothing waits for the next writer to clear it.
impl Drop for Store {
    fn drop(&mut self) {
        if self._lock.is_none() {
            return;
        }
        if self.holder && self.appended.load(Ordering::Relaxed) {
            self.index_appended();
        }
        let trash = std::mem::take(self.trash.get_mut().unwrap_or_else(|e| e.into_inner()));
        for removal in trash {
            let _ = removal.join();
        }
        let suffix = format!(".{}", self.tag);
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(&suffix) {
                let _ = remove_tree(&entry.path());
            }
        }
    }
}

/// Makes the store's directories where missing. `tmp/` is its owner's alone: a job's
/// staging and scratch lie there unsealed, with whatever modes a tool gave them (a set-user-id
/// file made by a tool of a root run would be root's), so no other user may reach them.
fn lay_out(root: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    for sub in ["jobs", "failed", "snapshots", "tmp"] {
        fs::create_dir_all(root.join(sub)).map_err(io(root))?;
    }
    let tmp = root.join("tmp");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).map_err(io(&tmp))?;
    spread_subdirectories(&tmp);
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store at `root` and takes its lock exclusively.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let root = std::path::absolute(root).map_err(io(root))?;
        lay_out(&root)?;
        let lock = lock::lock(&root, Access::Exclusive)?;
        let log = RecordLog::open(&root, true).map_err(io(&root.join(records::FILE)))?;
        // Holding the lock, nothing in tmp/ belongs to a live job, unless workers of an
        // earlier run still write (a SLURM run whose coordinator was killed).
        let workers = workers_lock(&root)?;
        let mut warnings = Vec::new();
        if workers.try_lock().is_ok() {
            let tmp = root.join("tmp");
            for entry in fs::read_dir(&tmp).map_err(io(&tmp))?.flatten() {
                if let Err(e) = remove_tree(&entry.path()) {
                    warnings.push(Warning::NotCleared {
                        path: entry.path(),
                        error: e.to_string(),
                    });
                }
            }
            log.cut_torn_tail().map_err(io(log.path()))?;
            let _ = workers.unlock();
        }
        let mut store = Store::new(
            root,
            log,
            Some(lock),
            std::process::id().to_string(),
            warnings,
        )?;
        store.holder = true;
        Ok(store)
    }

    /// Opens the store to read it while nothing changes it: a shared lock, which a run
    /// holding the store refuses, and nothing created (`repx verify`, `repx gc --dry-run`).
    /// A store that does not exist is an empty one.
    pub fn open_shared(root: &Path) -> Result<Store, StoreError> {
        let root = std::path::absolute(root).map_err(io(root))?;
        let lock = match lock::lock(&root, Access::Shared) {
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                None
            }
            locked => Some(locked?),
        };
        let log = RecordLog::open(&root, false).map_err(io(&root))?;
        Store::new(root, log, lock, std::process::id().to_string(), Vec::new())
    }

    /// Opens the store to look at it, beside a `repx run` that may hold the lock: nothing
    /// is locked, created or cleared. For commands that only read (list, show, log,
    /// results, report, viz).
    pub fn open_reader(root: &Path) -> Result<Store, StoreError> {
        let root = std::path::absolute(root).map_err(io(root))?;
        let log = RecordLog::open(&root, false).map_err(io(&root))?;
        Store::new(root, log, None, std::process::id().to_string(), Vec::new())
    }

    /// Opens the store as a `repx worker` does, beside the process holding the lock: no
    /// exclusive lock, nothing cleared.
    pub fn open_worker(root: &Path) -> Result<Store, StoreError> {
        let root = std::path::absolute(root).map_err(io(root))?;
        lay_out(&root)?;
        let workers = workers_lock(&root)?;
        workers
            .lock_shared()
            .map_err(io(&root.join("workers.lock")))?;
        let log = RecordLog::open(&root, true).map_err(io(&root.join(records::FILE)))?;
        let host = fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().replace(|c: char| !c.is_ascii_alphanumeric(), "-"))
            .unwrap_or_default();
        // The time too: a pid comes back across a thousand allocations, and an earlier
        // worker's scratch and staging directories stay in tmp/ until the lock holder
        // clears it.
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tag = format!("{host}-{}-{started:x}", std::process::id());
        Store::new(root, log, Some(workers), tag, Vec::new())
    }

    fn new(
        root: PathBuf,
        log: RecordLog,
        lock: Option<File>,
        tag: String,
        warnings: Vec<Warning>,
    ) -> Result<Store, StoreError> {
        let text = log.read_new().map_err(io(log.path()))?;
        let jobs_path = root.join("jobs");
        let jobs = match File::open(&jobs_path) {
            Ok(jobs) => Some(jobs),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&jobs_path)(e)),
        };
        // Sized from the log's length (a record is a few hundred bytes), so that a large
        // store's map is not grown, and its records moved, a dozen times.
        let records = table::Records::with_capacity(text.len() / 512);
        // A large log is checked beside what the caller does next (a run expands its
        // graph) until its records are first asked for; a small one when first asked.
        let checking = match text.len() >= records::PARSE_APART_FROM {
            true => {
                let root = root.clone();
                Checking::Apart(std::thread::spawn(move || Checked::new(&root, text)))
            }
            false => Checking::Here(text),
        };
        Ok(Store {
            root,
            records: RwLock::new(records),
            checking: Mutex::new(Some(checking)),
            checked: std::sync::OnceLock::new(),
            log,
            tag,
            scratch: Mutex::new(Vec::new()),
            scratch_made: AtomicU64::new(0),
            staging_made: AtomicBool::new(false),
            jobs,
            _lock: lock,
            warnings: Mutex::new(warnings),
            io_failed: AtomicBool::new(false),
            appended: AtomicBool::new(false),
            trash: Mutex::new(Vec::new()),
            holder: false,
            tools: Mutex::new(None),
        })
    }

    /// The records, once the log read at open is checked: the first call waits for that
    /// check (or makes it), takes its records and notes the lines that are no record.
    fn table(&self) -> &RwLock<table::Records> {
        self.checked.get_or_init(|| {
            let checking = self
                .checking
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let (text, found) = match checking {
                None => return,
                Some(Checking::Here(text)) => {
                    let found = self.log.tally(records::check(&text));
                    (text, found)
                }
                Some(Checking::Apart(thread)) => {
                    let checked = thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    self.indexed(checked)
                }
            };
            self.records
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .absorb(text, found);
            let unparsable = self.log.unparsable();
            if !unparsable.is_empty() {
                self.warnings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Warning::Unparsable {
                        log: self.log.path().to_path_buf(),
                        lines: unparsable,
                    });
            }
        });
        &self.records
    }

    /// A large log's records, in order, from what its index kept and the lines after; the
    /// lock holder writes the index again when it did not cover the whole log.
    fn indexed(&self, checked: Checked) -> (Vec<u8>, Vec<table::Found>) {
        let (text, index, whole) = checked.count(&self.log);
        if self.holder && !whole {
            // A hint for the next run: one that cannot be written is checked again.
            let _ = index::write(&self.root, &self.tmp_path(index::FILE), &text, &index);
        }
        (text, index.records)
    }

    /// Indexes the log as it is now, after this process appended to it, so that the next
    /// run does not check those records again.
    fn index_appended(&self) {
        let log = match RecordLog::open(&self.root, false) {
            Ok(log) => log,
            Err(_) => return,
        };
        let Ok(text) = log.read_new() else {
            return;
        };
        if text.len() < records::PARSE_APART_FROM {
            return;
        }
        let (text, index, whole) = Checked::new(&self.root, text).count(&log);
        if !whole {
            let _ = index::write(&self.root, &self.tmp_path(index::FILE), &text, &index);
        }
    }

    /// The digest of the tool executable at `path`, kept from an earlier run while its
    /// file's `stat` is as when it was hashed (see [`tools`]); the lock holder keeps what
    /// it hashed for the next run.
    pub fn tool_digest(&self, path: &Path) -> io::Result<String> {
        let mut tools = self.tools.lock().unwrap_or_else(|e| e.into_inner());
        let digests = tools.get_or_insert_with(|| tools::Digests::read(&self.root));
        let digest = digests.digest(path)?;
        if self.holder {
            // Only a later run gains from it: one that cannot be kept is hashed again.
            let _ = digests.save(&self.root, &self.tmp_path(tools::FILE));
        }
        Ok(digest)
    }

    /// What is wrong with the store that did not stop it, each said once: the CLI prints
    /// them after opening it.
    pub fn take_warnings(&self) -> Vec<Warning> {
        self.table();
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The line numbers (from 1) of the lines of `records.jsonl` that are no record.
    pub fn unparsable_records(&self) -> Vec<u64> {
        self.table();
        self.log.unparsable()
    }

    /// Whether writing into the store failed since it was opened (a full disk, a
    /// read-only filesystem): jobs failed for the store's sake, not their own.
    pub fn io_failed(&self) -> bool {
        self.io_failed.load(Ordering::Relaxed)
    }

    /// Notes that a write into the store failed; returns the error.
    fn failed_write(&self, error: StoreError) -> StoreError {
        if matches!(error, StoreError::Io { .. }) {
            self.io_failed.store(true, Ordering::Relaxed);
        }
        error
    }

    /// Reads the records other processes (workers) appended since the store last looked;
    /// returns them.
    pub fn refresh(&self) -> Result<Vec<Record>, StoreError> {
        let table = self.table();
        let text = self.log.read_new().map_err(io(self.log.path()))?;
        let found = self.log.tally(records::check(&text));
        let mut records = table.write().unwrap_or_else(|e| e.into_inner());
        let ids = records.absorb(text, found);
        // Each id once, where it first came, with its last record.
        let mut seen = std::collections::HashSet::new();
        Ok(ids
            .iter()
            .filter(|id| seen.insert(*id))
            .filter_map(|id| records.get(id))
            .collect())
    }

    /// A path in `tmp/` that no other process uses: `tmp/<name>.<tag>`.
    pub fn tmp_path(&self, name: &str) -> PathBuf {
        self.tmp_dir().join(format!("{name}.{}", self.tag))
    }

    /// `tmp/`: what runs stage there is never trusted, and cleared under the lock.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `tmp/inputs-<stage>`: the input listing a stage's jobs share for the run.
    pub fn input_listing_dir(&self, stage: &str) -> PathBuf {
        self.tmp_dir().join(format!("inputs-{stage}"))
    }

    /// `nix/<id>`: the GC root of a hermetic job's Nix output.
    pub fn nix_root(&self, id: &str) -> PathBuf {
        self.root.join("nix").join(id)
    }

    /// `slurm/<run>`: a SLURM run's batches, worker events and logs.
    pub fn slurm_dir(&self, run: &str) -> PathBuf {
        self.root.join("slurm").join(run)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The job's record, if it is done: recorded and its output still on disk as sealed
    /// (see [`Store::as_sealed`]).
    pub fn done(&self, id: &str) -> Option<Record> {
        let record = self.record(id)?;
        self.as_sealed(&record).then_some(record)
    }

    /// Whether the job is done, as [`Store::done`], without copying its record.
    pub fn is_done(&self, id: &str) -> bool {
        self.is_done_with(id, &[])
    }

    /// As [`Store::is_done`], and each of `outputs` (a stage's declared outputs) is in the
    /// job's `out/`, as [`Store::has_declared`] finds: one `stat` per file, as an output the
    /// seal stamped is found by its stamp's.
    pub fn is_done_with(&self, id: &str, outputs: &[PathBuf]) -> bool {
        let hash = {
            let records = self.table().read().unwrap_or_else(|e| e.into_inner());
            let Some(seal) = records.seal(id) else {
                return false;
            };
            let mut path = OutPath::new(id);
            let declared = outputs.iter().all(|output| {
                seal.stamps
                    .iter()
                    .any(|s| Path::new(s.path()) == output.as_path())
                    || self.stat(path.entry(output.as_os_str())).is_ok()
            });
            if !declared {
                return false;
            }
            match self.stamped(id, &seal) {
                commit::Stamped::Yes => return true,
                commit::Stamped::No => return false,
                commit::Stamped::Unsure => match records.hash(id) {
                    Some(hash) => hash,
                    None => return false,
                },
            }
        };
        self.hashes_to(id, &hash)
    }

    /// Whether each of `outputs` (a stage's declared outputs) is in the job's `out/`; a
    /// file deleted deeper than `out/` itself does not change its time.
    pub fn has_declared(&self, id: &str, outputs: &[PathBuf]) -> bool {
        let mut path = OutPath::new(id);
        outputs
            .iter()
            .all(|output| self.stat(path.entry(output.as_os_str())).is_ok())
    }

    /// `fstatat` of a path under `jobs/`, not following a final link: one system call, where
    /// a path walk from the root would be one per component.
    fn stat(&self, path: &[u8]) -> io::Result<libc::stat> {
        use std::os::fd::AsRawFd;
        let path = std::ffi::CStr::from_bytes_with_nul(path)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `jobs` is an open directory, `path` a NUL-terminated string, and `stat`
        // is only read once the call has filled it.
        let found = unsafe {
            libc::fstatat(
                jobs.as_raw_fd(),
                path.as_ptr(),
                stat.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } == 0;
        if !found {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: filled by the successful call.
        Ok(unsafe { stat.assume_init() })
    }

    /// The record, whether or not its output still exists.
    pub fn record(&self, id: &str) -> Option<Record> {
        self.table()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
    }

    /// Every record, in no particular order.
    pub fn records(&self) -> Vec<Record> {
        self.table().read().unwrap_or_else(|e| e.into_inner()).all()
    }

    /// Where committed jobs are: `<jobs_dir>/<id>`.
    pub fn jobs_dir(&self) -> PathBuf {
        self.root.join("jobs")
    }

    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.jobs_dir().join(id)
    }

    pub fn output_dir(&self, id: &str) -> PathBuf {
        self.outputs().of(id)
    }

    /// Where committed jobs' outputs are, for what outlives this borrow of the store.
    pub fn outputs(&self) -> Outputs {
        Outputs {
            jobs: self.jobs_dir(),
        }
    }

    pub fn failed_dir(&self, id: &str) -> PathBuf {
        self.root.join("failed").join(id)
    }

    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Ids in the store (committed or failed) that start with `prefix`.
    pub fn ids_with_prefix(&self, prefix: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .table()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .ids()
            .filter(|id| id.starts_with(prefix))
            .map(str::to_string)
            .collect();
        let failed = fs::read_dir(self.root.join("failed"))
            .into_iter()
            .flatten()
            .flatten();
        ids.extend(
            failed
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|id| id.starts_with(prefix)),
        );
        ids.sort();
        ids.dedup();
        ids
    }

    /// Makes a fresh staging directory for a job attempt.
    pub fn stage(&self, id: &str, attempt: u64) -> Result<Staging, StoreError> {
        self.make_staging(id, attempt)
            .map_err(|e| self.failed_write(e))
    }

    fn make_staging(&self, id: &str, attempt: u64) -> Result<Staging, StoreError> {
        // One parent per process, placed by the allocator once (see `spread_subdirectories`);
        // each attempt's directories are then made beside each other, in its block group.
        let parent = self.tmp_path("staging");
        if !self.staging_made.load(Ordering::Relaxed) {
            fs::create_dir_all(&parent).map_err(io(&parent))?;
            self.staging_made.store(true, Ordering::Relaxed);
        }
        let dir = parent.join(format!("{id}.{attempt}"));
        let out = dir.join("out");
        fs::create_dir(&dir).map_err(io(&dir))?;
        fs::create_dir(&out).map_err(io(&out))?;
        let scratch = self.take_scratch()?;
        Ok(Staging {
            id: id.to_string(),
            attempt: attempt as u32,
            dir,
            out,
            scratch,
        })
    }

    /// Commits a staged output: checks declared outputs, hashes, seals and moves it into
    /// place, then appends `record` with the output's hash filled in. A batch of outputs
    /// commits faster with [`Store::seal`] and [`Store::commit_sealed`].
    pub fn commit(
        &self,
        staging: Staging,
        outputs: &[PathBuf],
        output_limit: u64,
        logs: &Logs,
        record: Record,
    ) -> Result<Record, StoreError> {
        let sealed = self.seal(staging, outputs, output_limit, logs, record)?;
        let mut results = self.commit_sealed(vec![sealed]);
        results.pop().expect("one result for one output")
    }

    /// An empty scratch directory: one a finished job gave back, or a new one.
    fn take_scratch(&self) -> Result<PathBuf, StoreError> {
        if let Some(dir) = self.scratch.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(dir);
        }
        let n = self.scratch_made.fetch_add(1, Ordering::Relaxed);
        let dir = self.tmp_path(&format!("scratch-{n}"));
        fs::create_dir(&dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Empties a job's scratch directory and keeps it for the next job; one that cannot
    /// be emptied is left for the next `Store::open` to clear.
    fn release_scratch(&self, dir: PathBuf) {
        if dir.as_os_str().is_empty() {
            return;
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        for entry in entries {
            let emptied = entry.and_then(|e| remove_tree(&e.path()));
            if emptied.is_err() {
                return;
            }
        }
        self.scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir);
    }

    /// Keeps a failed attempt's logs in `failed/<id>` and discards its output. The output
    /// goes even when the logs cannot be kept (a full disk); the error says why they were
    /// not.
    pub fn discard(&self, mut staging: Staging, logs: &Logs) -> Result<(), StoreError> {
        self.release_scratch(std::mem::take(&mut staging.scratch));
        let target = self.fresh_failed_dir(&staging.id, staging.attempt);
        let kept = target.and_then(|target| write_logs(&target, logs, true).map(drop));
        let removed = remove_tree(&staging.dir).map_err(io(&staging.dir));
        kept.and(removed).map_err(|e| self.failed_write(e))
    }

    /// `failed/<id>`, ready for the logs of attempt `attempt`: emptied at a first attempt
    /// (what is there is from an earlier run), else with the attempt before it moved to
    /// `attempts/<k>/`.
    fn fresh_failed_dir(&self, id: &str, attempt: u32) -> Result<PathBuf, StoreError> {
        let target = self.failed_dir(id);
        if attempt <= 1 {
            remove_tree(&target)
                .and_then(|()| fs::create_dir_all(&target))
                .map_err(io(&target))?;
        } else {
            self.shelve_last_failure(id)?;
            fs::create_dir_all(&target).map_err(io(&target))?;
        }
        Ok(target)
    }

    /// Moves the last failed attempt's logs and failure of `failed/<id>` into its
    /// `attempts/<k>/`, where `k` is the attempt its failure names.
    fn shelve_last_failure(&self, id: &str) -> Result<(), StoreError> {
        let failed = self.failed_dir(id);
        let Some(last) = read_failure(&failed) else {
            return Ok(());
        };
        let shelf = failed.join(ATTEMPTS).join(last.attempt.to_string());
        fs::create_dir_all(&shelf).map_err(io(&shelf))?;
        for name in LOG_FILES.into_iter().chain([FAILURE]) {
            match fs::rename(failed.join(name), shelf.join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(&shelf)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Notes how the job's last discarded attempt failed, beside its logs in `failed/<id>`,
    /// for `repx show job` and for the record of a later attempt that succeeds.
    pub fn note_failure(&self, id: &str, failure: &AttemptRecord) -> Result<(), StoreError> {
        let path = self.failed_dir(id).join(FAILURE);
        let bytes = serde_json::to_vec(failure).expect("attempts serialise");
        fs::write(&path, bytes)
            .map_err(io(&path))
            .map_err(|e| self.failed_write(e))
    }

    /// The failed attempts of a retried job about to be sealed from `staging`, in order:
    /// their logs move from `failed/<id>` into the staged job's `attempts/<k>/`, to be
    /// committed with it.
    pub fn take_attempts(&self, staging: &Staging) -> Result<Vec<AttemptRecord>, StoreError> {
        if staging.attempt <= 1 {
            return Ok(Vec::new());
        }
        self.shelve_last_failure(&staging.id)?;
        let shelves = self.failed_dir(&staging.id).join(ATTEMPTS);
        if !shelves.is_dir() {
            return Ok(Vec::new());
        }
        let target = staging.dir.join(ATTEMPTS);
        fs::rename(&shelves, &target).map_err(io(&target))?;
        Ok(attempts_in(&target))
    }

    /// What the store kept of a job's attempts: those of its record when it is done,
    /// else the failed attempts of its last run, each with the directory of its logs.
    pub fn attempts(&self, id: &str) -> Vec<(AttemptRecord, PathBuf)> {
        if let Some(record) = self.done(id) {
            let dir = self.job_dir(id);
            let last = record.attempt.unwrap_or(1);
            return record
                .attempts
                .into_iter()
                .map(|a| {
                    let logs = if a.attempt == last {
                        dir.clone()
                    } else {
                        dir.join(ATTEMPTS).join(a.attempt.to_string())
                    };
                    (a, logs)
                })
                .collect();
        }
        let failed = self.failed_dir(id);
        let shelves = failed.join(ATTEMPTS);
        let mut found: Vec<(AttemptRecord, PathBuf)> = attempts_in(&shelves)
            .into_iter()
            .map(|a| {
                let logs = shelves.join(a.attempt.to_string());
                (a, logs)
            })
            .collect();
        if let Some(last) = read_failure(&failed) {
            found.push((last, failed));
        }
        found
    }

    /// Whether the last attempt of `id` failed because the run was interrupted (Ctrl-C,
    /// SIGTERM), as its `failure.json` says, rather than on its own.
    pub fn was_interrupted(&self, id: &str) -> bool {
        read_failure(&self.failed_dir(id))
            .is_some_and(|f| f.failure.as_deref() == Some("interrupted"))
    }

    /// Forgets a failure once the job succeeds.
    pub fn clear_failure(&self, id: &str) {
        let _ = remove_tree(&self.failed_dir(id));
    }

    /// Rewrites `records.jsonl` with every record but those of `forget`, and without lines
    /// that are no record, atomically (by rename).
    pub(crate) fn rewrite_records(
        &self,
        forget: &std::collections::HashSet<&str>,
    ) -> Result<(), StoreError> {
        let mut records = self.table().write().unwrap_or_else(|e| e.into_inner());
        records.retain(|id| !forget.contains(id));
        let mut kept: Vec<Record> = records.all();
        kept.sort_by(|a, b| (a.finished_ms, &a.id).cmp(&(b.finished_ms, &b.id)));
        let tmp = self.tmp_path("records.jsonl");
        self.log
            .rewrite(kept.iter(), &tmp)
            .map_err(io(self.log.path()))?;
        sync_dir(&self.root)
    }

    /// Appends records in one write and one fdatasync, or none of them (see [`records`]).
    fn append<'r>(&self, records: impl Iterator<Item = &'r Record>) -> Result<(), StoreError> {
        let mut lines = Vec::new();
        for record in records {
            serde_json::to_writer(&mut lines, record).expect("records serialise");
            lines.push(b'\n');
        }
        if lines.is_empty() {
            return Ok(());
        }
        self.log
            .append(&lines)
            .map_err(io(self.log.path()))
            .map_err(|e| self.failed_write(e))?;
        self.appended.store(true, Ordering::Relaxed);
        Ok(())
    }
}

fn workers_lock(root: &Path) -> Result<File, StoreError> {
    let path = root.join("workers.lock");
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))
}

/// The names of a job's log files, beside `out/` or in `failed/<id>/`.
const LOG_FILES: [&str; 3] = ["stdout", "stderr", "host.log"];
/// How a failed attempt failed, beside its logs.
const FAILURE: &str = "failure.json";
/// Where the attempts before the last are kept, each in a directory named by its number.
const ATTEMPTS: &str = "attempts";

/// The failure noted in `dir`, if any.
fn read_failure(dir: &Path) -> Option<AttemptRecord> {
    serde_json::from_slice(&fs::read(dir.join(FAILURE)).ok()?).ok()
}

/// The failures noted in the attempt directories under `dir`, by attempt.
fn attempts_in(dir: &Path) -> Vec<AttemptRecord> {
    let mut found: Vec<AttemptRecord> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| read_failure(&entry.ok()?.path()))
        .collect();
    found.sort_by_key(|a| a.attempt);
    found
}

/// Writes the non-empty logs into `dir`, flushed when `sync`; returns the files written.
fn write_logs(dir: &Path, logs: &Logs, sync: bool) -> Result<Vec<PathBuf>, StoreError> {
    let mut written = Vec::new();
    for (name, bytes) in LOG_FILES
        .into_iter()
        .zip([&logs.stdout, &logs.stderr, &logs.host])
    {
        if !bytes.is_empty() {
            let path = dir.join(name);
            let mut file = File::create(&path).map_err(io(&path))?;
            file.write_all(bytes).map_err(io(&path))?;
            if sync {
                file.sync_data().map_err(io(&path))?;
            }
            written.push(path);
        }
    }
    Ok(written)
}

/// Marks `dir` as the top of independent directory trees (`chattr +T`) on ext2/3/4, so that
/// the Orlov allocator puts each new subdirectory (a process's staging directory, its
/// scratch directories) in a block group with room, not in the parent's. Without a journal,
/// ext4 skips every inode freed in the last minutes when it allocates one, one by one; in
/// a group where much was just deleted (as `/tmp`'s often is), that made each new job's
/// directories and files cost more than the job. Elsewhere the call fails and nothing
/// changes.
fn spread_subdirectories(dir: &Path) {
    use std::os::fd::AsRawFd;
    /// `FS_TOPDIR_FL` of `linux/fs.h`.
    const TOPDIR: libc::c_int = 0x0002_0000;
    let Ok(dir) = File::open(dir) else { return };
    let mut flags: libc::c_int = 0;
    // SAFETY: `dir` is open, and both ioctls take a pointer to an int that lives across
    // the call.
    unsafe {
        if libc::ioctl(dir.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) == 0
            && flags & TOPDIR == 0
        {
            flags |= TOPDIR;
            libc::ioctl(dir.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}
