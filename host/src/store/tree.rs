//! Directory trees as the store sees them: hashed, sealed, copied and removed without ever
//! following a symbolic link.
//!
//! A tree's hash covers, in path order, each entry's kind, relative path, executable bit
//! and content (file bytes, or a link's target text), so it changes with any flipped byte,
//! added, removed or renamed file.
//!
//! Sealing makes every entry read-only, so it must change nothing outside the tree: a file
//! that has other links (a project file that a tool hard-linked into `/out`) is first
//! replaced by a copy of its own, and the file behind the other links keeps its mode.

use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use crate::lab::limits;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: special files (sockets, devices, FIFOs) cannot be stored", path.display())]
    Special { path: PathBuf },
    #[error("the files hold more than the limit ({bytes} bytes and more)")]
    OverLimit { bytes: u64 },
}

/// What hashing a tree found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSummary {
    pub hash: String,
    pub files: u64,
    pub bytes: u64,
    /// Every entry, in path order: what `repx verify` compares against.
    pub entries: Vec<Entry>,
}

/// One entry of a tree: `kind` is `D`irectory, `F`ile, e`X`ecutable or `L`ink; `content`
/// is a file's BLAKE3 (hex) or a link's target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub kind: String,
    pub path: String,
    pub content: String,
}

/// What a walk does besides hashing.
#[derive(Clone, Copy)]
struct Walk<'a> {
    /// Make every entry read-only.
    seal: bool,
    /// Flush each sealed file to disk.
    sync: bool,
    /// Stop with [`TreeError::OverLimit`] before reading past this many bytes of files.
    most: u64,
    /// A directory inside the tree to leave out, relative to its root.
    except: Option<&'a Path>,
}

const HASH: Walk = Walk {
    seal: false,
    sync: false,
    most: u64::MAX,
    except: None,
};

/// Hashes `root` without changing it.
pub fn hash_tree(root: &Path) -> Result<TreeSummary, TreeError> {
    walk(root, HASH)
}

/// Hashes `root` without changing it, leaving out the directory `except` (relative to
/// `root`) and everything in it.
pub fn hash_tree_except(root: &Path, except: &Path) -> Result<TreeSummary, TreeError> {
    walk(
        root,
        Walk {
            except: Some(except),
            ..HASH
        },
    )
}

/// Hashes `root`, makes every entry read-only and flushes file contents to disk.
pub fn seal_tree(root: &Path) -> Result<TreeSummary, TreeError> {
    walk(
        root,
        Walk {
            seal: true,
            sync: true,
            ..HASH
        },
    )
}

/// Hashes `root` and makes every entry read-only, flushing nothing: for a caller that
/// makes a whole batch durable at once (see [`super::Store::commit_sealed`]). Refuses a
/// tree whose files hold more than `most` bytes before reading past that.
pub fn seal_tree_unsynced(root: &Path, most: u64) -> Result<TreeSummary, TreeError> {
    walk(
        root,
        Walk {
            seal: true,
            most,
            ..HASH
        },
    )
}

/// Whether `entry` is the directory a walk of `root` leaves out.
fn left_out(entry: &walkdir::DirEntry, root: &Path, except: Option<&Path>) -> bool {
    except.is_some_and(|except| {
        entry.depth() == except.components().count()
            && entry.path().strip_prefix(root).is_ok_and(|p| p == except)
    })
}

fn walk(root: &Path, walk: Walk) -> Result<TreeSummary, TreeError> {
    let mut listing = blake3::Hasher::new();
    let mut summary = TreeSummary {
        hash: String::new(),
        files: 0,
        bytes: 0,
        entries: Vec::new(),
    };
    let mut dirs = Vec::new();
    // What the tree counts against `walk.most`: every entry's cost, and files' bytes.
    let mut counted: u64 = 0;
    let entries = WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !left_out(e, root, walk.except));
    for entry in entries {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            TreeError::Io {
                path,
                source: e.into(),
            }
        })?;
        let path = entry.path();
        let err = |source| TreeError::Io {
            path: path.to_path_buf(),
            source,
        };
        let relative = path
            .strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let kind = entry.file_type();
        let target = if kind.is_symlink() {
            Some(fs::read_link(path).map_err(err)?)
        } else {
            None
        };
        let target_len = target.as_ref().map_or(0, |t| t.as_os_str().len() as u64);
        counted = counted.saturating_add(limits::entry_cost(relative.len() as u64, target_len));
        if counted > walk.most {
            return Err(TreeError::OverLimit { bytes: counted });
        }
        if let Some(target) = target {
            let target = target.to_string_lossy();
            field(&mut listing, "L", &relative, target.as_bytes());
            summary.entries.push(Entry {
                kind: "L".into(),
                path: relative,
                content: target.into_owned(),
            });
        } else if kind.is_dir() {
            field(&mut listing, "D", &relative, b"");
            dirs.push(path.to_path_buf());
            summary.entries.push(Entry {
                kind: "D".into(),
                path: relative,
                content: String::new(),
            });
        } else if kind.is_file() {
            let mut file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(err)?;
            let meta = file.metadata().map_err(err)?;
            if counted.saturating_add(meta.len()) > walk.most {
                return Err(TreeError::OverLimit {
                    bytes: counted.saturating_add(meta.len()),
                });
            }
            if walk.seal && meta.nlink() > 1 {
                file = unshare(path, &mut file).map_err(err)?;
            }
            let mode = meta.permissions().mode();
            let mut content = blake3::Hasher::new();
            let (bytes, magic) = copy_into(&mut file, &mut content).map_err(err)?;
            summary.bytes += bytes;
            counted = counted.saturating_add(bytes);
            // WASI cannot set permission bits, so a program a plugin copied into /out is
            // recognised by its first bytes (ELF or `#!`) instead.
            let executable =
                mode & 0o111 != 0 || magic.starts_with(b"\x7fELF") || magic.starts_with(b"#!");
            summary.files += 1;
            let kind = if executable { "X" } else { "F" };
            let digest = content.finalize();
            field(&mut listing, kind, &relative, digest.as_bytes());
            summary.entries.push(Entry {
                kind: kind.into(),
                path: relative,
                content: digest.to_hex().to_string(),
            });
            if walk.seal {
                let sealed = if executable { 0o555 } else { 0o444 };
                file.set_permissions(fs::Permissions::from_mode(sealed))
                    .map_err(err)?;
                if walk.sync {
                    file.sync_all().map_err(err)?;
                }
            }
        } else if kind.is_fifo()
            || kind.is_socket()
            || kind.is_block_device()
            || kind.is_char_device()
        {
            return Err(TreeError::Special {
                path: path.to_path_buf(),
            });
        }
    }
    if walk.seal {
        // Deepest first, so a directory is still writable while its children are sealed.
        for dir in dirs
            .iter()
            .rev()
            .chain(std::iter::once(&root.to_path_buf()))
        {
            let err = |source| TreeError::Io {
                path: dir.clone(),
                source,
            };
            fs::set_permissions(dir, fs::Permissions::from_mode(0o555)).map_err(err)?;
        }
    }
    summary.hash = listing.finalize().to_hex().to_string();
    Ok(summary)
}

/// Replaces the file at `path`, one of several links to its inode, with a copy of its own
/// under the same name; the inode behind the other links loses this link and nothing else.
/// Returns the copy, open at its start.
fn unshare(path: &Path, shared: &mut File) -> io::Result<File> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".repx-unshared");
    let aside = path.with_file_name(name);
    let mut copy = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&aside)?;
    let copied = io::copy(shared, &mut copy).and_then(|_| fs::rename(&aside, path));
    if let Err(e) = copied {
        let _ = fs::remove_file(&aside);
        return Err(e);
    }
    copy.rewind()?;
    Ok(copy)
}

fn field(listing: &mut blake3::Hasher, kind: &str, path: &str, content: &[u8]) {
    for part in [kind.as_bytes(), path.as_bytes(), content] {
        listing.update(&(part.len() as u64).to_le_bytes());
        listing.update(part);
    }
}

/// Feeds the file to `hasher`; returns its length and its first four bytes.
fn copy_into(file: &mut File, hasher: &mut blake3::Hasher) -> io::Result<(u64, Vec<u8>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    let mut magic = Vec::new();
    loop {
        let n = file.read(&mut buf)?;
        if magic.len() < 4 {
            magic.extend_from_slice(&buf[..n.min(4 - magic.len())]);
        }
        if n == 0 {
            return Ok((total, magic));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// Copies `from` into a new directory `to`: files with their executable bit, links as links.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    copy_walk(from, to, None)
}

/// Copies `from` into a new directory `to` as [`copy_tree`] does, leaving out the directory
/// `except` (relative to `from`) and everything in it.
pub fn copy_tree_except(from: &Path, to: &Path, except: &Path) -> io::Result<()> {
    copy_walk(from, to, Some(except))
}

fn copy_walk(from: &Path, to: &Path, except: Option<&Path>) -> io::Result<()> {
    fs::create_dir_all(to)?;
    let entries = WalkDir::new(from)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !left_out(e, from, except));
    for entry in entries {
        let entry = entry?;
        let target = to.join(entry.path().strip_prefix(from).unwrap_or(entry.path()));
        let kind = entry.file_type();
        if kind.is_dir() {
            fs::create_dir_all(&target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
            let mode = entry.metadata()?.permissions().mode();
            // Copies are the user's to change, whatever the store's seal said.
            fs::set_permissions(&target, fs::Permissions::from_mode((mode & 0o111) | 0o644))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::remove_tree;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("repx-tree-{name}-{}", std::process::id()));
        let _ = remove_tree(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn hash_sees_every_change_and_seal_makes_read_only() {
        let dir = tempdir("hash");
        fs::create_dir(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/a"), "one").unwrap();
        let first = hash_tree(&dir).unwrap();
        fs::write(dir.join("sub/a"), "onf").unwrap();
        let flipped = hash_tree(&dir).unwrap();
        assert_ne!(first.hash, flipped.hash);
        fs::write(dir.join("b"), "").unwrap();
        let added = hash_tree(&dir).unwrap();
        assert_ne!(flipped.hash, added.hash);
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        let linked = seal_tree(&dir).unwrap();
        assert_ne!(added.hash, linked.hash);
        assert_eq!(linked.files, 2, "the link's target is not read");
        assert!(
            fs::metadata(dir.join("sub/a"))
                .unwrap()
                .permissions()
                .readonly()
        );
        assert_eq!(
            fs::metadata(dir.join("sub")).unwrap().permissions().mode() & 0o777,
            0o555
        );
        remove_tree(&dir).unwrap();
        assert!(!dir.exists());
    }
}
