//! The files that decide a run's grants, watched while its impure jobs run.
//!
//! An impure job writes the project directory, and the lab lies in it: a plugin granted
//! nothing could add `tools = ["sh"]` to its own stage, drop a `sha256` pin or replace a
//! plugin, and the next run would grant what the user never did. [`Guard::record`] takes,
//! before any job runs, the identity (device, inode, size, modification and change time)
//! and BLAKE3 digest of each such file: the lab file; for a `lab.nix`, every `.nix` file
//! in the project and every directory that could come to hold one (what the evaluation
//! may read); the plugin file of every stage; every granted tool's executable.
//! [`Guard::check`], after each impure job and before its commit, stats them again and
//! hashes only a file whose stat moved, so an unchanged project costs a stat per file.
//!
//! Invariants:
//! - A file counts as changed when its bytes differ, it is gone, or (for a `lab.nix`) a
//!   `.nix` file appeared; a touch that keeps the bytes is no change.
//! - Once a check has found a change, the guard stays tripped: the scheduler starts no
//!   further job, whatever `--continue-on-failure` says.
//! - Edits between runs are no concern of the guard: each run records afresh.

use std::collections::BTreeSet;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Format, Lab, PluginRef};
use crate::file_stat::FileStat;
use crate::store::DEFAULT_DIR;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GuardError {
    #[error(
        "{} changed while this impure job ran ({what}); an impure job may not change what \
         decides grants (the lab file, the `.nix` files it reads, plugins and tools). \
         Nothing of the job was committed and no further job was started: look at the \
         change (`git diff`) before the next run",
        path.display()
    )]
    Changed { path: PathBuf, what: &'static str },
    #[error("reading {} to guard it during the run: {message}", path.display())]
    Read { path: PathBuf, message: String },
}

struct File {
    path: PathBuf,
    stat: Mutex<FileStat>,
    digest: blake3::Hash,
}

/// A directory of a `lab.nix` project, with the `.nix` files and subdirectories it held.
struct Dir {
    path: PathBuf,
    stat: Mutex<FileStat>,
    entries: BTreeSet<PathBuf>,
}

/// The files recorded before a run; see the module's documentation.
pub struct Guard {
    files: Vec<File>,
    dirs: Vec<Dir>,
    tripped: Mutex<Option<GuardError>>,
}

impl Guard {
    /// Records the files that decide `lab`'s grants, and `tools`, the granted tools'
    /// executables with the digests the plan took of them: a tool is not read again, only
    /// its stat taken (a change after the plan hashed it and before this, when no job has
    /// run yet, is none of a job's doing; one after, by a job, moves the stat).
    pub fn record<'a>(
        lab: &Lab,
        tools: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> Result<Guard, GuardError> {
        let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
        paths.insert(lab.file.clone());
        for stage in lab.stages.values() {
            if let PluginRef::File(path) = &stage.plugin {
                paths.insert(path.clone());
            }
        }
        let mut hashed = Vec::new();
        for (path, digest) in tools {
            match blake3::Hash::from_hex(digest) {
                Ok(digest) if !paths.contains(path) => hashed.push((path.to_path_buf(), digest)),
                _ => {
                    paths.insert(path.to_path_buf());
                }
            }
        }
        hashed.sort_by(|a, b| a.0.cmp(&b.0));
        hashed.dedup_by(|a, b| a.0 == b.0);
        let mut dirs = Vec::new();
        if Format::of(&lab.file) == Format::Nix {
            let mut stack = vec![lab.dir.clone()];
            while let Some(dir) = stack.pop() {
                let (meta, entries) = list(&dir)?;
                for entry in &entries {
                    if entry.extension().is_some_and(|e| e == "nix") {
                        paths.insert(entry.clone());
                    } else {
                        stack.push(entry.clone());
                    }
                }
                dirs.push(Dir {
                    path: dir,
                    stat: Mutex::new(FileStat::of(&meta)),
                    entries,
                });
            }
        }
        let mut files = paths
            .into_iter()
            .map(|path| {
                let (meta, digest) = read(&path)?;
                Ok(File {
                    path,
                    stat: Mutex::new(FileStat::of(&meta)),
                    digest,
                })
            })
            .collect::<Result<Vec<_>, GuardError>>()?;
        for (path, digest) in hashed {
            let meta = std::fs::metadata(&path).map_err(|e| GuardError::Read {
                path: path.clone(),
                message: e.to_string(),
            })?;
            files.push(File {
                path,
                stat: Mutex::new(FileStat::of(&meta)),
                digest,
            });
        }
        Ok(Guard {
            files,
            dirs,
            tripped: Mutex::new(None),
        })
    }

    /// Whether a check found a change: no further job may start.
    pub fn tripped(&self) -> bool {
        self.tripped.lock().is_ok_and(|t| t.is_some())
    }

    /// Compares the files with what was recorded; the first change found trips the guard.
    pub fn check(&self) -> Result<(), GuardError> {
        let found = self.find_change();
        if let Err(change) = &found
            && let Ok(mut tripped) = self.tripped.lock()
        {
            tripped.get_or_insert_with(|| change.clone());
        }
        found
    }

    fn find_change(&self) -> Result<(), GuardError> {
        let changed = |path: &Path, what| GuardError::Changed {
            path: path.to_path_buf(),
            what,
        };
        for file in &self.files {
            let Ok(meta) = std::fs::symlink_metadata(&file.path).and_then(|m| {
                if m.is_symlink() {
                    std::fs::metadata(&file.path)
                } else {
                    Ok(m)
                }
            }) else {
                return Err(changed(&file.path, "it is gone"));
            };
            let stat = FileStat::of(&meta);
            let mut recorded = file.stat.lock().expect("guard lock");
            if *recorded == stat {
                continue;
            }
            match read(&file.path) {
                Ok((meta, digest)) if digest == file.digest => *recorded = FileStat::of(&meta),
                Ok(_) => return Err(changed(&file.path, "its content differs")),
                Err(_) => return Err(changed(&file.path, "it can no longer be read")),
            }
        }
        for dir in &self.dirs {
            let Ok(meta) = std::fs::metadata(&dir.path) else {
                return Err(changed(&dir.path, "the directory is gone"));
            };
            let stat = FileStat::of(&meta);
            let mut recorded = dir.stat.lock().expect("guard lock");
            if *recorded == stat {
                continue;
            }
            let Ok((meta, entries)) = list(&dir.path) else {
                return Err(changed(&dir.path, "the directory can no longer be read"));
            };
            // A new `.nix` file, or a new directory holding one, may be read by the next
            // evaluation; one gone is caught as a missing file above.
            for new in entries.difference(&dir.entries) {
                if new.extension().is_some_and(|e| e == "nix") {
                    return Err(changed(new, "a `.nix` file appeared"));
                }
                if let Some(nix) = first_nix_file(new) {
                    return Err(changed(&nix, "a `.nix` file appeared"));
                }
            }
            *recorded = FileStat::of(&meta);
        }
        Ok(())
    }
}

/// A directory's stat and its `.nix` files and subdirectories (links are not followed;
/// the store's link `.repx` is no part of the project).
fn list(dir: &Path) -> Result<(Metadata, BTreeSet<PathBuf>), GuardError> {
    let err = |e: std::io::Error| GuardError::Read {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let meta = std::fs::metadata(dir).map_err(err)?;
    let mut entries = BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        if entry.file_name() == DEFAULT_DIR {
            continue;
        }
        let path = entry.path();
        match entry.file_type().map_err(err)? {
            t if t.is_dir() => _ = entries.insert(path),
            t if t.is_file() && path.extension().is_some_and(|e| e == "nix") => {
                _ = entries.insert(path)
            }
            _ => {}
        }
    }
    Ok((meta, entries))
}

fn first_nix_file(dir: &Path) -> Option<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .find(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "nix"))
        .map(walkdir::DirEntry::into_path)
}

/// A file's stat and digest, the stat taken before reading so a write during the read
/// shows as a stat that moved at the next check.
fn read(path: &Path) -> Result<(Metadata, blake3::Hash), GuardError> {
    let err = |e: std::io::Error| GuardError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(std::fs::File::open(path).map_err(err)?)
        .map_err(err)?;
    Ok((meta, hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_in(dir: &Path, file: &str) -> Lab {
        Lab {
            name: "t".into(),
            file: dir.join(file),
            dir: dir.to_path_buf(),
            stages: Default::default(),
            pipelines: Default::default(),
            runs: Default::default(),
            slurm: Default::default(),
            warnings: Vec::new(),
            evaluated: None,
        }
    }

    fn project(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("repx-guard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        dir
    }

    #[test]
    fn a_changed_lab_file_trips_the_guard_a_touch_does_not() {
        let dir = project("toml");
        std::fs::write(dir.join("repx.toml"), "[stages.a]\n").unwrap();
        let tool = dir.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        let digest = blake3::hash(b"#!/bin/sh\n").to_hex();
        let guard =
            Guard::record(&lab_in(&dir, "repx.toml"), [(tool.as_path(), &*digest)]).unwrap();
        guard.check().unwrap();
        // Same bytes, new times: not a change.
        std::fs::write(dir.join("repx.toml"), "[stages.a]\n").unwrap();
        guard.check().unwrap();
        std::fs::write(dir.join("src/new.c"), "").unwrap();
        guard.check().unwrap();
        assert!(!guard.tripped());
        std::fs::write(&tool, "#!/bin/sh\nrm -rf ~\n").unwrap();
        let err = guard.check().unwrap_err().to_string();
        assert!(err.starts_with(&tool.display().to_string()), "{err}");
        assert!(guard.tripped());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_nix_lab_guards_every_nix_file_and_new_ones() {
        let dir = project("nix");
        std::fs::write(dir.join("lab.nix"), "import ./stages.nix").unwrap();
        std::fs::write(dir.join("stages.nix"), "{}").unwrap();
        let guard = Guard::record(&lab_in(&dir, "lab.nix"), []).unwrap();
        std::fs::write(dir.join("src/main.c"), "").unwrap();
        guard.check().unwrap();
        std::fs::write(dir.join("stages.nix"), "{ tools = [ \"sh\" ]; }").unwrap();
        let err = guard.check().unwrap_err().to_string();
        assert!(err.contains("stages.nix changed"), "{err}");

        let guard = Guard::record(&lab_in(&dir, "lab.nix"), []).unwrap();
        std::fs::create_dir_all(dir.join("src/deep")).unwrap();
        std::fs::write(dir.join("src/deep/extra.nix"), "{}").unwrap();
        let err = guard.check().unwrap_err().to_string();
        assert!(
            err.contains("extra.nix changed") && err.contains("appeared"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
