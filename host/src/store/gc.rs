//! Garbage collection: what a store may forget, and forgetting it.
//!
//! Several labs may share one store. Each lab that runs against a store registers itself
//! as a *root*: a file in `roots/` named after a hash of the lab file's path, holding that
//! path and, one per line, each mode override (`repx run --pure`) it was run with, since
//! those give other job ids. A root whose lab file no longer exists is dead. What the live roots' jobs
//! currently reach (job ids, source snapshots) is computed above the store, from the labs
//! (see `repx gc`); given that live set, [`Store::garbage`] lists every job output,
//! failure log and snapshot outside it, and [`Store::collect`] removes them and drops
//! their records. Both run under the store's lock, so no run can commit meanwhile.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{StoreError, io, remove_tree};
use crate::lab::Mode;

/// The directory of roots inside a store.
const ROOTS: &str = "roots";

/// A lab registered as using the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The registration file in `roots/`.
    pub file: PathBuf,
    /// The lab file it names.
    pub lab: PathBuf,
    /// The mode overrides it was run with (`--pure`, `--impure`).
    pub overrides: Vec<Mode>,
}

impl Root {
    /// A root is live while its lab file exists.
    pub fn is_live(&self) -> bool {
        self.lab.is_file()
    }
}

/// What the live roots still reach.
#[derive(Debug, Default)]
pub struct Live {
    /// Job ids.
    pub jobs: HashSet<String>,
    /// Snapshot hashes (`snapshots/<hash>`).
    pub snapshots: HashSet<String>,
}

/// One thing the store can forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A committed job: `jobs/<id>` and its record.
    Job { id: String, stage: Option<String> },
    /// The logs of a failed attempt: `failed/<id>`.
    Failure { id: String },
    /// A snapshot of a `path:` input: `snapshots/<hash>`.
    Snapshot { hash: String },
    /// A record whose output is already gone.
    Record { id: String },
    /// The registration of a lab that no longer exists.
    DeadRoot { lab: PathBuf },
}

/// Everything the store can forget, with the bytes each frees.
#[derive(Debug, Default)]
pub struct Garbage {
    pub items: Vec<(Item, PathBuf, u64)>,
}

impl Garbage {
    pub fn bytes(&self) -> u64 {
        self.items.iter().map(|(_, _, bytes)| bytes).sum()
    }
}

impl super::Store {
    fn roots_dir(&self) -> PathBuf {
        self.root.join(ROOTS)
    }

    /// Registers `lab` (a lab file, made absolute) as a root, run with the mode override
    /// `mode`; nothing to do when it is registered so already.
    pub fn add_root(&self, lab: &Path, mode: Option<Mode>) -> Result<(), StoreError> {
        let lab = fs::canonicalize(lab)
            .or_else(|_| std::path::absolute(lab))
            .map_err(io(lab))?;
        let name = blake3::hash(lab.as_os_str().as_bytes()).to_hex();
        let file = self.roots_dir().join(&name[..32]);
        let mut overrides = match fs::read(&file) {
            Ok(bytes) => parse_root(file.clone(), &bytes).overrides,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&file)(e)),
        };
        if file.is_file() && mode.is_none_or(|m| overrides.contains(&m)) {
            return Ok(());
        }
        overrides.extend(mode);
        let dir = self.roots_dir();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let tmp = self.root.join("tmp").join(format!("root-{}", &name[..32]));
        let mut text = lab.as_os_str().as_bytes().to_vec();
        text.push(b'\n');
        for mode in overrides {
            text.extend_from_slice(mode.as_str().as_bytes());
            text.push(b'\n');
        }
        fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&text))
            .map_err(io(&tmp))?;
        fs::rename(&tmp, &file).map_err(io(&file))
    }

    /// Every registered root, live or dead, sorted by lab path.
    pub fn roots(&self) -> Result<Vec<Root>, StoreError> {
        let dir = self.roots_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut roots = Vec::new();
        for entry in entries {
            let file = entry.map_err(io(&dir))?.path();
            let bytes = fs::read(&file).map_err(io(&file))?;
            roots.push(parse_root(file, &bytes));
        }
        roots.sort_by(|a, b| a.lab.cmp(&b.lab));
        Ok(roots)
    }

    /// Everything outside `live`, and the dead roots.
    pub fn garbage(&self, live: &Live, roots: &[Root]) -> Result<Garbage, StoreError> {
        let mut garbage = Garbage::default();
        let records = self.table().read().unwrap_or_else(|e| e.into_inner());
        let jobs = self.root.join("jobs");
        for id in dir_names(&jobs)? {
            // An output without a record is no job's: a run replaces it, whether or not
            // the job is live (left by a crash, or a `gc` killed midway).
            if !live.jobs.contains(&id) || !records.contains(&id) {
                let path = jobs.join(&id);
                let stage = records.get(&id).map(|r| r.stage);
                garbage
                    .items
                    .push((Item::Job { id, stage }, path.clone(), size(&path)));
            }
        }
        for id in records.ids() {
            if !live.jobs.contains(id) && !jobs.join(id).exists() {
                garbage
                    .items
                    .push((Item::Record { id: id.to_string() }, PathBuf::new(), 0));
            }
        }
        let failed = self.root.join("failed");
        for id in dir_names(&failed)? {
            if !live.jobs.contains(&id) {
                let path = failed.join(&id);
                garbage
                    .items
                    .push((Item::Failure { id }, path.clone(), size(&path)));
            }
        }
        let snapshots = self.snapshots();
        for hash in dir_names(&snapshots)? {
            if !live.snapshots.contains(&hash) {
                let path = snapshots.join(&hash);
                garbage
                    .items
                    .push((Item::Snapshot { hash }, path.clone(), size(&path)));
            }
        }
        for root in roots.iter().filter(|r| !r.is_live()) {
            garbage.items.push((
                Item::DeadRoot {
                    lab: root.lab.clone(),
                },
                root.file.clone(),
                0,
            ));
        }
        garbage.items.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(garbage)
    }

    /// Removes `garbage` from the store, records first: the records file is rewritten
    /// without the forgotten jobs (atomically, by rename), then each directory is moved
    /// into `tmp/` (one rename: it is there whole or gone) and removed from there. A `gc`
    /// killed midway so leaves only unrecorded directories, which no run trusts, which
    /// `repx verify` does not call damaged, and which the next `gc` (or a run of the job)
    /// removes; never a half-removed output or snapshot under its own name.
    pub fn collect(&self, garbage: &Garbage) -> Result<(), StoreError> {
        let forgotten: HashSet<&str> = garbage
            .items
            .iter()
            .filter_map(|(item, _, _)| match item {
                Item::Job { id, .. } | Item::Record { id } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        if !forgotten.is_empty() {
            self.rewrite_records(&forgotten)?;
        }
        let trash = self.tmp_path("gc");
        fs::create_dir_all(&trash).map_err(io(&trash))?;
        for (n, (item, path, _)) in garbage.items.iter().enumerate() {
            match item {
                Item::DeadRoot { .. } => fs::remove_file(path).map_err(io(path))?,
                _ if path.as_os_str().is_empty() => {}
                _ => {
                    let aside = trash.join(n.to_string());
                    // Moving a directory to another parent rewrites its `..`: a sealed
                    // snapshot must be writable first.
                    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o755));
                    match fs::rename(path, &aside) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(io(path)(e));
                        }
                        _ => {}
                    }
                }
            }
            if let Item::Job { id, .. } | Item::Record { id } = item {
                // A hermetic job's Nix GC roots: Nix may collect its output now.
                for root in [id.clone(), format!("{id}-log")] {
                    let root = self.root.join("nix").join(root);
                    match fs::remove_file(&root) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(io(&root)(e));
                        }
                        _ => {}
                    }
                }
            }
        }
        remove_tree(&trash).map_err(io(&trash))
    }
}

/// A root file: the lab's path, then one mode override per line.
fn parse_root(file: PathBuf, bytes: &[u8]) -> Root {
    let mut lines = bytes.split(|b| *b == b'\n');
    let lab = PathBuf::from(std::ffi::OsStr::from_bytes(
        lines.next().unwrap_or_default(),
    ));
    let overrides = lines
        .filter_map(|line| match line {
            b"pure" => Some(Mode::Pure),
            b"impure" => Some(Mode::Impure),
            b"hermetic" => Some(Mode::Hermetic),
            _ => None,
        })
        .collect();
    Root {
        file,
        lab,
        overrides,
    }
}

fn dir_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Bytes of the files under `path` (apparent sizes; links not followed).
fn size(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::{super::Store, Live};
    use crate::lab::Mode;

    #[test]
    fn roots_register_once_and_die_with_their_lab() {
        let dir = std::env::temp_dir().join(format!("repx-gc-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lab = dir.join("repx.toml");
        std::fs::write(&lab, "").unwrap();
        let store = Store::open(&dir.join("store")).unwrap();
        store.add_root(&lab, None).unwrap();
        store.add_root(&lab, None).unwrap();
        store.add_root(&lab, Some(Mode::Pure)).unwrap();
        store.add_root(&lab, Some(Mode::Pure)).unwrap();
        let roots = store.roots().unwrap();
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].lab, lab);
        assert_eq!(roots[0].overrides, [Mode::Pure]);
        assert!(roots[0].is_live());

        std::fs::remove_file(&lab).unwrap();
        let roots = store.roots().unwrap();
        assert!(!roots[0].is_live());
        let garbage = store.garbage(&Live::default(), &roots).unwrap();
        assert_eq!(garbage.items.len(), 1);
        store.collect(&garbage).unwrap();
        assert!(store.roots().unwrap().is_empty());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
