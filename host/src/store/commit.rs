//! Committing staged outputs in batches, so that many jobs share one flush to disk.
//!
//! A job's output is committed in two steps:
//! 1. [`Store::seal`], on the worker that ran the job: checks the declared outputs, hashes
//!    `out/` and makes it read-only, writes the manifest and the logs. Nothing is flushed.
//! 2. [`Store::commit_sealed`], on one thread, for every output sealed since its last
//!    round: makes them all durable at once (one `syncfs` of the store's filesystem, or an
//!    fsync of each file and directory when the batch is small, all issued at once, so
//!    that the disk's cache flushes they wait for are shared rather than taken one after
//!    the other), renames each into `jobs/`, fsyncs `jobs/` once, then appends all their
//!    records in one write and one fdatasync.
//!
//! Every job of a batch keeps the store's invariant: its record is appended only after its
//! output is durably in place. A crash before the append leaves unrecorded outputs, which
//! the next run replaces; a crash during it leaves a torn last line, which is not a record.
//!
//! Done means the bytes match. The record stamps every entry of the output as sealed (its
//! size, times and inode, see [`tree::Stamp`]), as git's index does the files of a work
//! tree: whether a job is still done is one `fstatat` per entry ([`Store::stamped`]). A
//! stamp that differs (a file rewritten in place, by a user or by a stage that could reach
//! the store; a store copied elsewhere) or is racy (modified no earlier than the seal, so
//! its times could not show a later write) is settled by hashing the output and comparing
//! it with the record's hash: the output then counts as done exactly when its bytes match.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Logs, MANIFEST, Record, Staging, Store, StoreError, io, tree};

/// Up to this many files and directories in a batch, fsyncing each is cheaper than a
/// flush of the whole filesystem (about 0.1 ms each against a few ms on a quiet disk,
/// and a `syncfs` also waits for whatever else dirty the filesystem holds).
const FSYNC_EACH_UP_TO: usize = 32;

/// How many fsyncs of a small batch are in flight at once (see [`sync_paths`]).
const FSYNCS_AT_ONCE: usize = 8;

/// A staged output, checked, hashed and read-only, waiting for [`Store::commit_sealed`].
pub struct Sealed {
    staging: Staging,
    record: Record,
    /// What a batch too small for a whole-filesystem flush fsyncs: every file and directory.
    unsynced: Vec<PathBuf>,
}

impl Sealed {
    pub fn id(&self) -> &str {
        &self.staging.id
    }
}

impl Store {
    /// Checks, hashes and seals a staged output and writes its manifest and logs, without
    /// flushing any of it; `record` gets the output's hash. A refused output is discarded
    /// like any failure: logs kept, output gone.
    pub fn seal(
        &self,
        mut staging: Staging,
        outputs: &[PathBuf],
        output_limit: u64,
        logs: &Logs,
        mut record: Record,
    ) -> Result<Sealed, StoreError> {
        // The plugin is done with its scratch; the next job may have it.
        self.release_scratch(std::mem::take(&mut staging.scratch));
        match self.seal_staged(&staging, outputs, output_limit, logs, &mut record) {
            Ok(unsynced) => Ok(Sealed {
                staging,
                record,
                unsynced,
            }),
            Err(e) => {
                let _ = self.discard(staging, logs);
                Err(self.failed_write(e))
            }
        }
    }

    fn seal_staged(
        &self,
        staging: &Staging,
        outputs: &[PathBuf],
        output_limit: u64,
        logs: &Logs,
        record: &mut Record,
    ) -> Result<Vec<PathBuf>, StoreError> {
        let id = &staging.id;
        declared_outputs_present(id, &staging.out, outputs)?;
        // Over the limit, the rest is not read: a plugin may have left a file of terabytes
        // of holes.
        let summary = match tree::seal_tree_unsynced(&staging.out, output_limit) {
            Ok(summary) => summary,
            Err(tree::TreeError::OverLimit { bytes }) => {
                return Err(StoreError::OutputLimit {
                    id: id.clone(),
                    limit: output_limit,
                    size: bytes,
                });
            }
            Err(source) => {
                return Err(StoreError::Output {
                    id: id.clone(),
                    source,
                });
            }
        };
        record.hash = summary.hash;
        record.stamps = summary.stamps;
        record.sealed_ns = Some(summary.sealed_ns);
        let sealed = fs::symlink_metadata(&staging.out).map_err(io(&staging.out))?;
        record.out_mtime_ns = Some(super::mtime_ns(sealed.mtime(), sealed.mtime_nsec()));
        let manifest = serde_json::to_vec(&summary.entries).expect("entries serialise");
        let manifest_path = staging.dir.join(MANIFEST);
        fs::write(&manifest_path, manifest).map_err(io(&manifest_path))?;
        let mut unsynced = super::write_logs(&staging.dir, logs, false)?;
        unsynced.push(manifest_path);
        unsynced.extend(
            summary
                .entries
                .iter()
                .filter(|e| e.kind != "L")
                .map(|e| staging.out.join(&e.path)),
        );
        unsynced.push(staging.out.clone());
        unsynced.push(staging.dir.clone());
        Ok(unsynced)
    }

    /// Commits sealed outputs together; returns each one's record (or why it failed), in
    /// order. A failed one is discarded, its logs kept in `failed/<id>`.
    pub fn commit_sealed(&self, batch: Vec<Sealed>) -> Vec<Result<Record, StoreError>> {
        if batch.is_empty() {
            return Vec::new();
        }
        let paths: usize = batch.iter().map(|s| s.unsynced.len()).sum();
        let flushed = if paths <= FSYNC_EACH_UP_TO {
            sync_paths(batch.iter().flat_map(|s| &s.unsynced).collect())
        } else {
            sync_filesystem(&self.root)
        };
        if let Err(e) = flushed {
            return batch
                .into_iter()
                .map(|s| Err(self.discard_sealed(s, &e)))
                .collect();
        }

        let mut results: Vec<Option<Result<Record, StoreError>>> = Vec::with_capacity(batch.len());
        let mut moved = Vec::new();
        for sealed in batch {
            match self.move_into_jobs(&sealed.staging) {
                Ok(()) => {
                    moved.push((results.len(), sealed.record));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(self.discard_sealed(sealed, &e)))),
            }
        }
        let jobs = self.root.join("jobs");
        let recorded =
            super::sync_dir(&jobs).and_then(|()| self.append(moved.iter().map(|(_, r)| r)));
        match recorded {
            Ok(()) => {
                let mut records = self.table().write().unwrap_or_else(|e| e.into_inner());
                for (slot, record) in moved {
                    records.insert(record.clone());
                    results[slot] = Some(Ok(record));
                }
            }
            Err(e) => {
                // The outputs are in place but unrecorded: not done, and replaced next time.
                for (slot, _) in moved {
                    results[slot] = Some(Err(self.failed_write(again(&e))));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every slot is filled"))
            .collect()
    }

    /// Renames a staged job directory to `jobs/<id>`, replacing an unrecorded leftover.
    ///
    /// What it replaces is moved into this process's staging directory and removed on a
    /// thread of its own, beside the jobs that follow (an impure job replaces its previous
    /// output on every edit, and removing a tree is many metadata writes on a busy disk).
    /// Whatever that removal leaves, the store's drop and the next writer's open clear
    /// from `tmp/`.
    fn move_into_jobs(&self, staging: &Staging) -> Result<(), StoreError> {
        let target = self.job_dir(&staging.id);
        if target.exists() {
            // An unrecorded leftover of a crash, or an impure job's previous output.
            // `<id>.<attempt>.old`, as unique as the staging directory beside it.
            let mut trash = staging.dir.clone().into_os_string();
            trash.push(".old");
            let trash = PathBuf::from(trash);
            fs::rename(&target, &trash).map_err(io(&target))?;
            let removal = std::thread::spawn(move || {
                let _ = super::remove_tree(&trash);
            });
            self.trash
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(removal);
        }
        fs::rename(&staging.dir, &target).map_err(io(&target))
    }

    /// Moves a sealed output's logs to `failed/<id>`, removes the rest; returns `error`
    /// for that job.
    fn discard_sealed(&self, sealed: Sealed, error: &StoreError) -> StoreError {
        let failed = self.failed_dir(&sealed.staging.id);
        let _ = super::remove_tree(&failed).and_then(|()| fs::create_dir_all(&failed));
        for name in super::LOG_FILES {
            let _ = fs::rename(sealed.staging.dir.join(name), failed.join(name));
        }
        let _ = super::remove_tree(&sealed.staging.dir);
        self.failed_write(again(error))
    }
}

/// Whether a committed output is as its record stamped it, by `stat` alone.
pub(super) enum Stamped {
    /// Every entry is as sealed.
    Yes,
    /// The output is gone, or an entry is.
    No,
    /// Some entry's `stat` differs or cannot tell: only its bytes can say.
    Unsure,
}

impl Store {
    /// Whether `jobs/<id>/out` holds the output `record` sealed: every entry as stamped,
    /// or else its bytes hash to the record's hash.
    pub(super) fn as_sealed(&self, record: &Record) -> bool {
        match self.stamped(&record.id, &super::table::Seal::of(record)) {
            Stamped::Yes => true,
            Stamped::No => false,
            Stamped::Unsure => self.hashes_to(&record.id, &record.hash),
        }
    }

    /// Compares `jobs/<id>/out`, not following a link there, and each entry the record
    /// stamped with their `stat` now. A record older than stamps has only the time of
    /// `out/` to go by.
    pub(super) fn stamped(&self, id: &str, record: &super::table::Seal) -> Stamped {
        let mut out = super::OutPath::new(id);
        let Ok(stat) = self.stat(out.dir()) else {
            return Stamped::No;
        };
        if stat.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Stamped::No;
        }
        let out_as_sealed = record
            .out_mtime_ns
            .is_none_or(|sealed| sealed == super::mtime_ns(stat.st_mtime, stat.st_mtime_nsec));
        let Some(sealed_ns) = record.sealed_ns else {
            return if out_as_sealed {
                Stamped::Yes
            } else {
                Stamped::No
            };
        };
        let mut answer = if out_as_sealed {
            Stamped::Yes
        } else {
            Stamped::Unsure
        };
        for stamp in record.stamps {
            match self.stat(out.entry(std::ffi::OsStr::new(stamp.path()))) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Stamped::No,
                // A path past PATH_MAX, say: the bytes still can tell, by descriptor.
                Err(_) => answer = Stamped::Unsure,
                Ok(stat) if !stamp.matches(&stat) || stamp.racy(sealed_ns) => {
                    answer = Stamped::Unsure;
                }
                Ok(_) => {}
            }
        }
        answer
    }

    /// Whether the job's output, read whole, hashes to `hash`.
    pub(super) fn hashes_to(&self, id: &str, hash: &str) -> bool {
        tree::hash_tree(&self.output_dir(id)).is_ok_and(|summary| summary.hash == hash)
    }
}

/// Refuses an output that lacks one of the stage's declared outputs.
pub fn declared_outputs_present(
    id: &str,
    out: &Path,
    outputs: &[PathBuf],
) -> Result<(), StoreError> {
    match outputs
        .iter()
        .find(|o| fs::symlink_metadata(out.join(o)).is_err())
    {
        Some(missing) => Err(StoreError::MissingOutput {
            id: id.to_string(),
            output: missing.clone(),
        }),
        None => Ok(()),
    }
}

/// Refuses an output of `bytes` over the stage's limit.
pub fn within_output_limit(id: &str, bytes: u64, limit: u64) -> Result<(), StoreError> {
    if bytes > limit {
        return Err(StoreError::OutputLimit {
            id: id.to_string(),
            limit,
            size: bytes,
        });
    }
    Ok(())
}

/// The same error again, for each job of a batch it failed.
fn again(error: &StoreError) -> StoreError {
    match error {
        StoreError::Io { path, source } => StoreError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => StoreError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

fn sync_path(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// Fsyncs every one of `paths`, up to [`FSYNCS_AT_ONCE`] at a time; returns once all are
/// durable, or the first error.
///
/// Each fsync ends with a flush of the disk's write cache, which is most of its time.
/// Taken one after the other, a job's six or eight fsyncs wait for as many flushes; in
/// flight together, the block layer serves the flushes that wait at the same time with
/// one, so a batch costs about two. Nothing is renamed or recorded before all have
/// returned, so what a crash can leave is as before.
///
/// The helpers are kept from one commit to the next (see [`Syncers`]): a run commits
/// many batches, and starting threads anew for each was a good part of a commit's CPU.
fn sync_paths(paths: Vec<&PathBuf>) -> Result<(), StoreError> {
    if paths.len() <= 1 {
        return paths.into_iter().try_for_each(|path| sync_path(path));
    }
    let (done_tx, done) = std::sync::mpsc::channel();
    // The committing thread fsyncs the first itself: one helper fewer.
    let (first, rest) = paths.split_first().expect("two paths or more");
    Syncers::get().send(rest.iter().map(|p| (*p).clone()), &done_tx);
    drop(done_tx);
    let mut failed = sync_path(first).err();
    // Every one is waited for, failed or not, so that none is still in flight after.
    for result in done {
        if let Err(e) = result
            && failed.is_none()
        {
            failed = Some(e);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Threads that fsync paths handed to them, up to [`FSYNCS_AT_ONCE`] - 1, started when
/// first needed and kept for the process's life (idle, they wait on a channel).
struct Syncers {
    work: std::sync::Mutex<std::sync::mpsc::Sender<SyncJob>>,
    queue: std::sync::Arc<std::sync::Mutex<std::sync::mpsc::Receiver<SyncJob>>>,
    started: std::sync::atomic::AtomicUsize,
}

type SyncJob = (PathBuf, std::sync::mpsc::Sender<Result<(), StoreError>>);

impl Syncers {
    fn get() -> &'static Syncers {
        static SYNCERS: std::sync::OnceLock<Syncers> = std::sync::OnceLock::new();
        SYNCERS.get_or_init(|| {
            let (work, queue) = std::sync::mpsc::channel();
            Syncers {
                work: std::sync::Mutex::new(work),
                queue: std::sync::Arc::new(std::sync::Mutex::new(queue)),
                started: std::sync::atomic::AtomicUsize::new(0),
            }
        })
    }

    /// Hands `paths` over, each result to go to `done`; starts helpers up to as many as
    /// paths (at most [`FSYNCS_AT_ONCE`] - 1). A path no helper could be started for is
    /// fsynced here.
    fn send(
        &self,
        paths: impl Iterator<Item = PathBuf>,
        done: &std::sync::mpsc::Sender<Result<(), StoreError>>,
    ) {
        use std::sync::atomic::Ordering;
        let paths: Vec<PathBuf> = paths.collect();
        let wanted = paths.len().min(FSYNCS_AT_ONCE - 1);
        // Held while helpers start too, so that two commits at once start no more than
        // the bound between them.
        let work = self.work.lock().unwrap_or_else(|e| e.into_inner());
        while self.started.load(Ordering::Relaxed) < wanted {
            let queue = self.queue.clone();
            let spawned = std::thread::Builder::new()
                .name("repx-fsync".into())
                .spawn(move || {
                    loop {
                        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((path, done)) = job else { return };
                        let _ = done.send(sync_path(&path));
                    }
                });
            if spawned.is_err() {
                break;
            }
            self.started.fetch_add(1, Ordering::Relaxed);
        }
        for path in paths {
            if self.started.load(Ordering::Relaxed) == 0 {
                let _ = done.send(sync_path(&path));
                continue;
            }
            if let Err(std::sync::mpsc::SendError((path, _))) = work.send((path, done.clone())) {
                let _ = done.send(sync_path(&path));
            }
        }
    }
}

/// Flushes every dirty file and directory of the filesystem holding `root` (`syncfs`).
fn sync_filesystem(root: &Path) -> Result<(), StoreError> {
    let dir = File::open(root).map_err(io(root))?;
    use std::os::fd::AsRawFd;
    // SAFETY: `dir` is an open descriptor for the duration of the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io(root)(std::io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record::for_test(id)
    }

    fn store(name: &str) -> (PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!("repx-commit-{name}-{}", std::process::id()));
        let _ = crate::store::remove_tree(&dir);
        let store = Store::open(&dir.join("store")).unwrap();
        (dir, store)
    }

    fn sealed(store: &Store, id: &str) -> Sealed {
        let staging = store.stage(id, 0).unwrap();
        fs::write(staging.out.join("x"), id).unwrap();
        fs::write(staging.scratch.join("junk"), "scratch").unwrap();
        let logs = Logs {
            stdout: b"said something".to_vec(),
            ..Logs::default()
        };
        let outputs = [PathBuf::from("x")];
        store
            .seal(staging, &outputs, u64::MAX, &logs, record(id))
            .unwrap()
    }

    #[test]
    fn a_batch_is_done_only_once_committed_and_survives_reopening() {
        let (dir, store) = store("batch");
        // Small enough to fsync each path, and large enough for one syncfs.
        for count in [2, FSYNC_EACH_UP_TO] {
            let ids: Vec<String> = (0..count).map(|i| format!("{count}-{i}")).collect();
            let batch: Vec<Sealed> = ids.iter().map(|id| sealed(&store, id)).collect();
            assert!(
                ids.iter().all(|id| store.done(id).is_none()),
                "sealed is not done"
            );
            let results = store.commit_sealed(batch);
            assert_eq!(results.len(), count);
            for (id, result) in ids.iter().zip(results) {
                let record = result.unwrap();
                assert_eq!(&record.id, id);
                assert_eq!(record.hash.len(), 64);
                assert_eq!(store.done(id), Some(record));
                let job = store.job_dir(id);
                assert_eq!(fs::read_to_string(job.join("out/x")).unwrap(), *id);
                assert!(job.join(MANIFEST).is_file() && job.join("stdout").is_file());
            }
        }
        drop(store);
        let store = Store::open(&dir.join("store")).unwrap();
        assert_eq!(store.records().len(), 2 + FSYNC_EACH_UP_TO);
        drop(store);
        crate::store::remove_tree(&dir).unwrap();
    }

    #[test]
    fn a_refused_output_is_discarded_and_scratch_is_emptied_for_the_next_job() {
        let (dir, store) = store("refused");
        let staging = store.stage("bad", 0).unwrap();
        let (scratch, staged) = (staging.scratch.clone(), staging.dir.clone());
        fs::write(scratch.join("junk"), "scratch").unwrap();
        let missing = store.seal(
            staging,
            &[PathBuf::from("x")],
            u64::MAX,
            &Logs::default(),
            record("bad"),
        );
        assert!(matches!(missing, Err(StoreError::MissingOutput { .. })));
        assert!(store.failed_dir("bad").is_dir());
        assert!(!staged.exists(), "the refused output is gone");
        let next = store.stage("next", 0).unwrap();
        assert_eq!(next.scratch, scratch, "the scratch directory is reused");
        assert_eq!(fs::read_dir(&next.scratch).unwrap().count(), 0, "and empty");
        drop(store);
        crate::store::remove_tree(&dir).unwrap();
    }
}
