//! Where a project's store is when `--store` is not given, and the `.repx` link to it.
//!
//! The default store lies outside the project, in the user's cache directory
//! (`$XDG_CACHE_HOME/repx/stores/`, else `~/.cache/repx/stores/`), under a name made of the
//! project directory's name and a digest of its canonical path, as Bazel keeps its output
//! base. An impure job sees the project read-write at `/work`; the store, with the
//! sources' fingerprints in it, is out of that reach.
//!
//! Invariants:
//! - The store's place is computed from the project's path, never read from the `.repx`
//!   link: a job that replaces the link with a forged store or another link changes
//!   nothing of where repx reads and writes.
//! - `.repx` in the project is either absent or the link repx made to that place. A link
//!   repx made for another path (the project was moved or copied) is pointed again; a
//!   directory, a file or a link elsewhere is refused, so that nobody reads a forged
//!   `.repx/jobs` as the store.

use std::path::{Path, PathBuf};

use super::DEFAULT_DIR;

/// Hex digits of the project path's digest in the store's name: 64 bits.
const DIGEST_CHARS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error(
        "no cache directory for the store: neither XDG_CACHE_HOME nor HOME is set to an \
         absolute path; set one, or pass --store DIR"
    )]
    NoCacheDir,
    #[error("project directory {}: {source}", path.display())]
    Project {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is {found}, not the link repx keeps to this project's store ({}): the store is \
         no longer kept inside the project, where impure jobs can write. Remove it \
         (`rm -r {}`; what it held is not used), or name it as the store with `--store {}`",
        link.display(),
        store.display(),
        link.display(),
        link.display()
    )]
    Foreign {
        link: PathBuf,
        store: PathBuf,
        found: String,
    },
    #[error("{}: {source}", path.display())]
    Link {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the stores of projects live: `$XDG_CACHE_HOME/repx/stores`, else
/// `$HOME/.cache/repx/stores`. Relative values are ignored, as the XDG rules say.
pub fn stores_dir() -> Result<PathBuf, LocationError> {
    let absolute = |name| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let cache = absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".cache")))
        .ok_or(LocationError::NoCacheDir)?;
    Ok(cache.join("repx").join("stores"))
}

/// The default store of the project directory `project`:
/// `<stores>/<name>-<digest of the canonical path>`.
pub fn default_store(project: &Path) -> Result<PathBuf, LocationError> {
    let canonical = project
        .canonicalize()
        .map_err(|source| LocationError::Project {
            path: project.to_path_buf(),
            source,
        })?;
    Ok(stores_dir()?.join(store_name(&canonical)))
}

/// Bytes of the project's name kept in the store's name: a name of 255 bytes, the most a
/// directory's may have, must leave room for the digest, which alone keeps stores apart.
const NAME_BYTES: usize = 64;

fn store_name(canonical: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let digest = blake3::hash(canonical.as_os_str().as_bytes()).to_hex();
    let name = canonical
        .file_name()
        .map_or("root".into(), |n| n.to_string_lossy());
    let mut cut = name.len().min(NAME_BYTES);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{}", &name[..cut], &digest[..DIGEST_CHARS])
}

/// What [`link`] did to `.repx`.
#[derive(Debug, PartialEq, Eq)]
pub enum Linked {
    /// It was the link to `store` already, or is now, where there was nothing.
    Kept,
    /// It was repx's link to another project's store (this project was moved or copied),
    /// and now leads to `store`.
    Moved { from: PathBuf },
    /// There was none and none could be made (a read-only project): only a convenience.
    Absent,
}

/// Makes `<project>/.repx` the link to `store`, or refuses what stands there instead
/// (see the module's invariants). The link is only for the user's eyes: repx never
/// follows it.
pub fn link(project: &Path, store: &Path) -> Result<Linked, LocationError> {
    // A lab Nix built into its store is not written, even by root, who could.
    if in_nix_store(project) {
        return Ok(Linked::Absent);
    }
    let path = project.join(DEFAULT_DIR);
    let err = |source| LocationError::Link {
        path: path.clone(),
        source,
    };
    let foreign = |found: String| LocationError::Foreign {
        link: path.clone(),
        store: store.to_path_buf(),
        found,
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(match std::os::unix::fs::symlink(store, &path) {
                Ok(()) => Linked::Kept,
                Err(_) => Linked::Absent,
            });
        }
        Err(e) => return Err(err(e)),
        Ok(meta) => meta,
    };
    if meta.is_dir() {
        return Err(foreign("a directory".into()));
    }
    if !meta.is_symlink() {
        return Err(foreign("a file".into()));
    }
    let target = std::fs::read_link(&path).map_err(err)?;
    if target == store {
        return Ok(Linked::Kept);
    }
    // Only a link of the kind repx makes is pointed again: anything else is someone's.
    let ours = stores_dir().is_ok_and(|stores| target.parent() == Some(stores.as_path()));
    if !ours {
        return Err(foreign(format!("a link to {}", target.display())));
    }
    // A new link renamed over the old one: `.repx` is never missing meanwhile.
    let fresh = project.join(format!("{DEFAULT_DIR}.{}.new", std::process::id()));
    let _ = std::fs::remove_file(&fresh);
    std::os::unix::fs::symlink(store, &fresh).map_err(err)?;
    std::fs::rename(&fresh, &path).map_err(err)?;
    Ok(Linked::Moved { from: target })
}

/// Whether `path` lies in the Nix store (`$NIX_STORE_DIR`, else `/nix/store`), whose
/// paths stand for one content each and are never written.
pub fn in_nix_store(path: &Path) -> bool {
    let store = std::env::var_os("NIX_STORE_DIR")
        .map_or_else(|| PathBuf::from("/nix/store"), PathBuf::from);
    real_path(path).starts_with(store)
}

/// Whether `dir` lies inside `project`, both taken with their links resolved as far as
/// they exist (so `--store .repx` is where the link leads).
pub fn inside(dir: &Path, project: &Path) -> bool {
    real_path(dir).starts_with(real_path(project))
}

/// `path` absolute, with symbolic links resolved as far as it exists.
pub fn real_path(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_the_directory_and_a_digest_of_its_path() {
        let a = store_name(Path::new("/home/u/lab"));
        let b = store_name(Path::new("/home/v/lab"));
        assert!(a.starts_with("lab-") && b.starts_with("lab-"), "{a} {b}");
        assert_eq!(a.len(), "lab-".len() + DIGEST_CHARS);
        assert_ne!(a, b, "two projects of one name share no store");
        assert_eq!(a, store_name(Path::new("/home/u/lab")));
        assert!(store_name(Path::new("/")).starts_with("root-"));
        let long = store_name(Path::new(&format!("/home/u/{}", "é".repeat(200))));
        assert_eq!(long, format!("{}-{}", "é".repeat(32), &long[65..]));
        assert_eq!(long.len(), NAME_BYTES + 1 + DIGEST_CHARS);
    }

    #[test]
    fn the_link_is_made_kept_moved_or_refused() {
        let dir = std::env::temp_dir().join(format!("repx-location-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let project = dir.join("project");
        std::fs::create_dir_all(&project).unwrap();
        let stores = stores_dir().unwrap();
        let store = stores.join("project-0000000000000000");
        let link_path = project.join(DEFAULT_DIR);

        assert_eq!(link(&project, &store).unwrap(), Linked::Kept);
        assert_eq!(std::fs::read_link(&link_path).unwrap(), store);
        assert_eq!(link(&project, &store).unwrap(), Linked::Kept);

        let old = stores.join("project-1111111111111111");
        std::fs::remove_file(&link_path).unwrap();
        std::os::unix::fs::symlink(&old, &link_path).unwrap();
        assert_eq!(link(&project, &store).unwrap(), Linked::Moved { from: old });
        assert_eq!(std::fs::read_link(&link_path).unwrap(), store);

        std::fs::remove_file(&link_path).unwrap();
        std::os::unix::fs::symlink(dir.join("forged"), &link_path).unwrap();
        let refused = link(&project, &store).unwrap_err().to_string();
        assert!(refused.contains("a link to"), "{refused}");
        assert!(refused.contains("--store"), "{refused}");

        std::fs::remove_file(&link_path).unwrap();
        std::fs::create_dir(&link_path).unwrap();
        let refused = link(&project, &store).unwrap_err().to_string();
        assert!(refused.contains("is a directory"), "{refused}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn inside_resolves_links() {
        let dir = std::env::temp_dir().join(format!("repx-inside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let project = dir.join("project");
        std::fs::create_dir_all(project.join("sub")).unwrap();
        std::os::unix::fs::symlink(&project, dir.join("linked")).unwrap();
        assert!(inside(&project.join("sub/store"), &project));
        assert!(inside(&dir.join("linked/store"), &project));
        assert!(!inside(&dir.join("project-other/store"), &project));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
