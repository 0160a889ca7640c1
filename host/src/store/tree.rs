//! Directory trees as the store sees them: hashed, sealed, copied and removed without ever
//! following a symbolic link.
//!
//! Every walk goes by file descriptor. Its root is opened with `O_NOFOLLOW` ([`Tree::open`]:
//! a root that is a link is refused, [`TreeError::Link`]), or one directory at a time from a
//! trusted directory with no link on the way ([`Tree::open_beneath`]); each entry is then
//! opened relative to its directory's descriptor, again with `O_NOFOLLOW`. So no name is
//! resolved through a link however the tree changes while it is walked (an entry swapped for
//! a link after it was listed is refused, not followed), and a FIFO swapped in cannot block
//! the walk (files are opened non-blocking, then checked to be regular).
//!
//! A tree's hash covers, in path order, each entry's kind, relative path, executable bit
//! and content (file bytes, or a link's target text), so it changes with any flipped byte,
//! added, removed or renamed file. A copy ([`Tree::snapshot`], [`copy_tree`]) is hashed from
//! the bytes it copies, in the same pass: its hash is the hash of what it holds, whatever
//! the source did meanwhile.
//!
//! Sealing makes every entry read-only, so it must change nothing outside the tree: a file
//! that has other links (a project file that a tool hard-linked into `/out`) is first
//! replaced by a copy of its own, and the file behind the other links keeps its mode.
//!
//! Sealing also records each entry's `stat` ([`Stamp`]), so that the store notices an entry
//! changed in place with one `fstatat` instead of a hash (see [`super::Store::done`]). A
//! write gets a modification time no earlier than the filesystem clock's current tick, so
//! an entry sealed within the tick it was last written could be written again without its
//! time changing. Such an entry's modification time is set back to just before the seal
//! ([`TreeSummary::sealed_ns`]): every later write then changes it.

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::lab::limits;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;

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
    #[error("{}: is a symbolic link where a directory or file must be; it is not followed", path.display())]
    Link { path: PathBuf },
}

/// What hashing a tree found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSummary {
    pub hash: String,
    pub files: u64,
    pub bytes: u64,
    /// Every entry, in path order: what `repx verify` compares against.
    pub entries: Vec<Entry>,
    /// When sealed: every entry's `stat` once sealed, in path order (the root not included).
    pub stamps: Vec<Stamp>,
    /// When sealed: the filesystem clock's time at the seal, in nanoseconds; every stamp's
    /// modification time is older.
    pub sealed_ns: i64,
}

/// One entry of a tree: `kind` is `D`irectory, `F`ile, e`X`ecutable or `L`ink; `content`
/// is a file's BLAKE3 (hex) or a link's target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub kind: String,
    pub path: String,
    pub content: String,
}

/// An entry's `stat` as sealed: relative path, size, modification and change times (ns)
/// and inode. A write in place, a rename over it, a `chmod` or a `touch` changes one of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp(pub String, pub u64, pub i64, pub i64, pub u64);

impl Stamp {
    pub fn path(&self) -> &str {
        &self.0
    }

    /// Whether `stat` (of the same entry, now) is as sealed.
    pub fn matches(&self, stat: &libc::stat) -> bool {
        self.1 == stat.st_size as u64
            && self.2 == nanoseconds(stat.st_mtime, stat.st_mtime_nsec)
            && self.3 == nanoseconds(stat.st_ctime, stat.st_ctime_nsec)
            && self.4 == stat.st_ino
    }

    /// Whether the entry was modified no earlier than `sealed_ns`: its times cannot tell a
    /// later write from the one before the seal.
    pub fn racy(&self, sealed_ns: i64) -> bool {
        self.2 >= sealed_ns
    }
}

fn nanoseconds(seconds: i64, nanoseconds: i64) -> i64 {
    seconds * 1_000_000_000 + nanoseconds
}

/// What a walk does besides hashing.
#[derive(Clone, Copy)]
struct Walk<'a> {
    /// Make every entry read-only and stamp it.
    seal: bool,
    /// Flush each sealed file (or sealed copy) to disk.
    sync: bool,
    /// Stop with [`TreeError::OverLimit`] once the tree costs more than this: every
    /// entry's cost ([`limits::entry_cost`]) and files' bytes.
    most: u64,
    /// A directory inside the tree to leave out, relative to its root (`a/b`).
    except: Option<&'a [u8]>,
    /// Copy every entry into a directory, and leave the copies so.
    copy: Option<Copies>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Copies {
    /// Read-only, flushed as `sync` says, the copy's root left writable (so that it can
    /// still be renamed into place by a user who is not root) for the caller to seal.
    Sealed,
    /// The user's to change: files `0644` (or `0755`), directories `0755`, over what a
    /// directory already holds.
    Writable,
}

const HASH: Walk = Walk {
    seal: false,
    sync: false,
    most: u64::MAX,
    except: None,
    copy: None,
};

/// A directory open for walking; its root is not a link.
pub struct Tree {
    fd: OwnedFd,
    path: PathBuf,
}

const DIRECTORY: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Tree {
    /// Opens the directory at `path`, refusing a link there ([`TreeError::Link`]).
    pub fn open(path: &Path) -> Result<Tree, TreeError> {
        let fd = rustix::fs::open(path, DIRECTORY, Mode::empty())
            .map_err(|e| opening(rustix::fs::CWD, path, path, e))?;
        Ok(Tree {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens `base` (trusted, as the caller resolved it), then each directory of `relative`
    /// in turn, refusing a link at any of them ([`TreeError::Link`], naming the first).
    pub fn open_beneath(base: &Path, relative: &Path) -> Result<Tree, TreeError> {
        let mut fd = rustix::fs::open(base, DIRECTORY.difference(OFlags::NOFOLLOW), Mode::empty())
            .map_err(|e| io_at(base, e))?;
        let mut path = base.to_path_buf();
        for component in relative.components() {
            let Component::Normal(name) = component else {
                return Err(TreeError::Io {
                    path: base.join(relative),
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "not a plain relative path",
                    ),
                });
            };
            path.push(name);
            fd = rustix::fs::openat(&fd, name, DIRECTORY, Mode::empty())
                .map_err(|e| opening(&fd, name.as_ref(), &path, e))?;
        }
        Ok(Tree { fd, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hashes the tree without changing it, leaving out the directory `except` (relative
    /// to the root) and everything in it.
    pub fn hash(&self, except: Option<&Path>) -> Result<TreeSummary, TreeError> {
        let except = except.map(relative_bytes);
        self.walk(
            Walk {
                except: except.as_deref(),
                ..HASH
            },
            None,
        )
    }

    /// Copies the tree into a new directory `to` (its parent must exist), leaving out
    /// `except` as [`Tree::hash`] does, and hashes what it copies in the same pass. The
    /// copy is read-only and flushed, but for its root, which the caller seals once it is
    /// in place.
    pub fn snapshot(&self, to: &Path, except: Option<&Path>) -> Result<TreeSummary, TreeError> {
        rustix::fs::mkdir(to, Mode::from_raw_mode(0o700)).map_err(|e| io_at(to, e))?;
        let target = Tree::open(to)?;
        let except = except.map(relative_bytes);
        self.walk(
            Walk {
                except: except.as_deref(),
                copy: Some(Copies::Sealed),
                sync: true,
                ..HASH
            },
            Some(target.fd),
        )
    }

    fn walk(&self, walk: Walk, copy: Option<OwnedFd>) -> Result<TreeSummary, TreeError> {
        let fd = self.fd.try_clone().map_err(|e| TreeError::Io {
            path: self.path.clone(),
            source: e,
        })?;
        run(&self.path, fd, walk, copy)
    }
}

/// Opens the file `name` of `dir` to read it, not following a link: `None` when there is
/// none; an error when it is a link or anything but a regular file (a FIFO does not block).
pub fn open_regular(dir: &Tree, name: &str) -> io::Result<Option<File>> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rustix::fs::openat(&dir.fd, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => {
            return Err(io::Error::other("a symbolic link, which is not followed"));
        }
        Err(e) => return Err(e.into()),
    };
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(Some(File::from(fd)))
}

/// Hashes `root` without changing it.
pub fn hash_tree(root: &Path) -> Result<TreeSummary, TreeError> {
    Tree::open(root)?.hash(None)
}

/// Hashes `root`, makes every entry read-only and flushes file contents to disk.
pub fn seal_tree(root: &Path) -> Result<TreeSummary, TreeError> {
    Tree::open(root)?.walk(
        Walk {
            seal: true,
            sync: true,
            ..HASH
        },
        None,
    )
}

/// Hashes `root` and makes every entry read-only, flushing nothing: for a caller that
/// makes a whole batch durable at once (see [`super::Store::commit_sealed`]). Refuses a
/// tree whose files hold more than `most` bytes before reading past that.
pub fn seal_tree_unsynced(root: &Path, most: u64) -> Result<TreeSummary, TreeError> {
    Tree::open(root)?.walk(
        Walk {
            seal: true,
            most,
            ..HASH
        },
        None,
    )
}

/// Copies `from` into the directory `to` (made if missing): files with their executable
/// bit, links as links; a link at `from`, at `to` or in the way of a copied entry is
/// refused, never followed.
pub fn copy_tree(from: &Path, to: &Path) -> Result<TreeSummary, TreeError> {
    let tree = Tree::open(from)?;
    fs::create_dir_all(to).map_err(|source| TreeError::Io {
        path: to.to_path_buf(),
        source,
    })?;
    let target = Tree::open(to)?;
    tree.walk(
        Walk {
            copy: Some(Copies::Writable),
            ..HASH
        },
        Some(target.fd),
    )
}

/// `a/b` for a relative path, as a walk spells the entries it visits.
fn relative_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for part in path.components() {
        if !bytes.is_empty() {
            bytes.push(b'/');
        }
        bytes.extend_from_slice(part.as_os_str().as_bytes());
    }
    bytes
}

fn io_at(path: &Path, e: Errno) -> TreeError {
    TreeError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// The error of opening `name` in `dir` (at `path`) with `O_NOFOLLOW`: [`TreeError::Link`]
/// when it is a link.
fn opening(dir: impl AsFd, name: &Path, path: &Path, e: Errno) -> TreeError {
    let link = e == Errno::LOOP
        || (e == Errno::NOTDIR
            && rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink));
    if link {
        TreeError::Link {
            path: path.to_path_buf(),
        }
    } else {
        io_at(path, e)
    }
}

/// A directory being walked.
struct Frame {
    dir: OwnedFd,
    /// Its copy, when the walk copies.
    copy: Option<OwnedFd>,
    /// Its entries not visited yet, in name order.
    names: std::vec::IntoIter<(CString, FileType)>,
    /// Its path relative to the root (empty for the root).
    prefix: Vec<u8>,
    /// Where its stamp goes in the summary; `None` for the root.
    stamp: Option<usize>,
}

impl Frame {
    fn new(
        root: &Path,
        dir: OwnedFd,
        copy: Option<OwnedFd>,
        prefix: Vec<u8>,
        stamp: Option<usize>,
    ) -> Result<Frame, TreeError> {
        let path = || root.join(OsStr::from_bytes(&prefix));
        let mut names = Vec::new();
        let entries = rustix::fs::Dir::read_from(&dir).map_err(|e| io_at(&path(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_at(&path(), e))?;
            let name = entry.file_name();
            if name != c"." && name != c".." {
                names.push((name.to_owned(), entry.file_type()));
            }
        }
        // In byte order, as a path-sorted listing is.
        names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(Frame {
            dir,
            copy,
            names: names.into_iter(),
            prefix,
            stamp,
        })
    }
}

fn run(
    root: &Path,
    fd: OwnedFd,
    walk: Walk,
    copy: Option<OwnedFd>,
) -> Result<TreeSummary, TreeError> {
    let mut listing = blake3::Hasher::new();
    let mut summary = TreeSummary {
        hash: String::new(),
        files: 0,
        bytes: 0,
        entries: Vec::new(),
        stamps: Vec::new(),
        sealed_ns: if walk.seal { coarse_now() } else { 0 },
    };
    // What the tree counts against `walk.most`: every entry's cost, and files' bytes.
    let mut counted: u64 = 0;
    let mut stack = vec![Frame::new(root, fd, copy, Vec::new(), None)?];
    while let Some(top) = stack.last_mut() {
        let Some((name, kind)) = top.names.next() else {
            let frame = stack.pop().expect("the top frame");
            let root_copy = stack.is_empty();
            finish_dir(root, &frame, walk, root_copy, &mut summary)?;
            continue;
        };
        let top = stack.last().expect("the top frame");
        let mut relative = top.prefix.clone();
        if !relative.is_empty() {
            relative.push(b'/');
        }
        relative.extend_from_slice(name.as_bytes());
        if walk.except == Some(relative.as_slice()) {
            continue;
        }
        let path = root.join(OsStr::from_bytes(&relative));
        let err = |e: Errno| io_at(&path, e);
        let kind = match kind {
            FileType::Unknown => FileType::from_raw_mode(
                rustix::fs::statat(&top.dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(err)?
                    .st_mode,
            ),
            kind => kind,
        };
        let shown = String::from_utf8_lossy(&relative).into_owned();
        let target = match kind {
            FileType::Symlink => {
                Some(rustix::fs::readlinkat(&top.dir, &name, Vec::new()).map_err(err)?)
            }
            _ => None,
        };
        let target_len = target.as_ref().map_or(0, |t| t.as_bytes().len() as u64);
        counted = counted.saturating_add(limits::entry_cost(relative.len() as u64, target_len));
        if counted > walk.most {
            return Err(TreeError::OverLimit { bytes: counted });
        }
        match kind {
            FileType::Symlink => {
                let target = target.expect("read above");
                if let Some(copy) = &top.copy {
                    rustix::fs::symlinkat(&target, copy, &name).map_err(err)?;
                }
                if walk.seal {
                    let stat = settle_link(&top.dir, &name, summary.sealed_ns).map_err(err)?;
                    summary.stamps.push(stamp(shown.clone(), &stat));
                }
                let target = target.to_string_lossy().into_owned();
                field(&mut listing, "L", &shown, target.as_bytes());
                summary.entries.push(Entry {
                    kind: "L".into(),
                    path: shown,
                    content: target,
                });
            }
            FileType::Directory => {
                let dir =
                    rustix::fs::openat(&top.dir, &name, DIRECTORY, Mode::empty()).map_err(|e| {
                        opening(
                            &top.dir,
                            Path::new(OsStr::from_bytes(name.as_bytes())),
                            &path,
                            e,
                        )
                    })?;
                let copy = match &top.copy {
                    Some(copy) => Some(copy_dir(copy, &name, walk).map_err(err)?),
                    None => None,
                };
                field(&mut listing, "D", &shown, b"");
                summary.entries.push(Entry {
                    kind: "D".into(),
                    path: shown.clone(),
                    content: String::new(),
                });
                let slot = walk.seal.then(|| {
                    summary.stamps.push(Stamp(shown, 0, 0, 0, 0));
                    summary.stamps.len() - 1
                });
                stack.push(Frame::new(root, dir, copy, relative, slot)?);
            }
            FileType::RegularFile => {
                let entry = file(top, &name, &path, shown, walk, &mut counted, &mut summary)?;
                field(&mut listing, &entry.kind, &entry.path, &entry.digest);
                summary.entries.push(Entry {
                    kind: entry.kind,
                    path: entry.path,
                    content: entry.content,
                });
            }
            _ => return Err(TreeError::Special { path }),
        }
    }
    summary.hash = listing.finalize().to_hex().to_string();
    Ok(summary)
}

/// A file's entry, before it joins the listing.
struct FileEntry {
    kind: String,
    path: String,
    content: String,
    digest: [u8; 32],
}

/// Reads (copies, seals) the regular file `name` of the directory `top`.
fn file(
    top: &Frame,
    name: &CString,
    path: &Path,
    shown: String,
    walk: Walk,
    counted: &mut u64,
    summary: &mut TreeSummary,
) -> Result<FileEntry, TreeError> {
    let err = |e: io::Error| TreeError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = rustix::fs::openat(&top.dir, name, flags, Mode::empty()).map_err(|e| {
        opening(
            &top.dir,
            Path::new(OsStr::from_bytes(name.as_bytes())),
            path,
            e,
        )
    })?;
    let mut file = File::from(fd);
    let stat = rustix::fs::fstat(&file).map_err(|e| err(e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        // Swapped for a special file since it was listed.
        return Err(TreeError::Special {
            path: path.to_path_buf(),
        });
    }
    let len = stat.st_size as u64;
    if counted.saturating_add(len) > walk.most {
        return Err(TreeError::OverLimit {
            bytes: counted.saturating_add(len),
        });
    }
    if walk.seal && stat.st_nlink > 1 {
        file = unshare(&top.dir, name, &mut file).map_err(err)?;
    }
    let mut copy = match &top.copy {
        Some(dir) => {
            let mut flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            flags |= match walk.copy {
                Some(Copies::Writable) => OFlags::TRUNC,
                _ => OFlags::EXCL,
            };
            let fd =
                rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600)).map_err(|e| {
                    opening(dir, Path::new(OsStr::from_bytes(name.as_bytes())), path, e)
                })?;
            Some(File::from(fd))
        }
        None => None,
    };
    let mut content = blake3::Hasher::new();
    let (bytes, magic) = copy_into(&mut file, &mut content, copy.as_mut()).map_err(err)?;
    summary.bytes += bytes;
    *counted = counted.saturating_add(bytes);
    summary.files += 1;
    // WASI cannot set permission bits, so a program a plugin copied into /out is
    // recognised by its first bytes (ELF or `#!`) instead.
    let executable =
        stat.st_mode & 0o111 != 0 || magic.starts_with(b"\x7fELF") || magic.starts_with(b"#!");
    let sealed = Mode::from_raw_mode(if executable { 0o555 } else { 0o444 });
    if walk.seal {
        rustix::fs::fchmod(&file, sealed).map_err(|e| err(e.into()))?;
        let stat = settle(&file, summary.sealed_ns).map_err(|e| err(e.into()))?;
        summary.stamps.push(stamp(shown.clone(), &stat));
        if walk.sync {
            file.sync_all().map_err(err)?;
        }
    }
    if let Some(copy) = &copy {
        let mode = match walk.copy {
            Some(Copies::Writable) => Mode::from_raw_mode((stat.st_mode & 0o111) | 0o644),
            _ => sealed,
        };
        rustix::fs::fchmod(copy, mode).map_err(|e| err(e.into()))?;
        if walk.sync {
            copy.sync_all().map_err(err)?;
        }
    }
    let kind = if executable { "X" } else { "F" };
    let digest = content.finalize();
    Ok(FileEntry {
        kind: kind.into(),
        path: shown,
        content: digest.to_hex().to_string(),
        digest: *digest.as_bytes(),
    })
}

/// Makes the copy of the directory `name` inside `copy`, and opens it.
fn copy_dir(copy: &OwnedFd, name: &CString, walk: Walk) -> Result<OwnedFd, Errno> {
    match rustix::fs::mkdirat(copy, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => {}
        Err(Errno::EXIST) if walk.copy == Some(Copies::Writable) => {}
        Err(e) => return Err(e),
    }
    rustix::fs::openat(copy, name, DIRECTORY, Mode::empty())
}

/// Once every entry of a directory is done: seals and stamps it, and leaves its copy.
fn finish_dir(
    root: &Path,
    frame: &Frame,
    walk: Walk,
    is_root: bool,
    summary: &mut TreeSummary,
) -> Result<(), TreeError> {
    let err = |e: Errno| io_at(&root.join(OsStr::from_bytes(&frame.prefix)), e);
    if walk.seal {
        rustix::fs::fchmod(&frame.dir, Mode::from_raw_mode(0o555)).map_err(err)?;
        let stat = settle(&frame.dir, summary.sealed_ns).map_err(err)?;
        if let Some(slot) = frame.stamp {
            let path = std::mem::take(&mut summary.stamps[slot].0);
            summary.stamps[slot] = stamp(path, &stat);
        }
    }
    if let Some(copy) = &frame.copy {
        let mode = match walk.copy {
            Some(Copies::Writable) => Some(0o755),
            Some(Copies::Sealed) if !is_root => Some(0o555),
            _ => None,
        };
        if let Some(mode) = mode {
            rustix::fs::fchmod(copy, Mode::from_raw_mode(mode)).map_err(err)?;
        }
    }
    Ok(())
}

/// The filesystem clock's time now (its current tick), in nanoseconds.
fn coarse_now() -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) };
    nanoseconds(now.tv_sec, now.tv_nsec)
}

/// The times to set back an entry modified no earlier than `sealed_ns`: just before it.
fn set_back(sealed_ns: i64) -> Timestamps {
    let before = sealed_ns - 1;
    Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: before.div_euclid(1_000_000_000),
            tv_nsec: before.rem_euclid(1_000_000_000) as _,
        },
    }
}

/// The `stat` of an open entry once its modification time is older than `sealed_ns`.
fn settle(fd: impl AsFd, sealed_ns: i64) -> Result<rustix::fs::Stat, Errno> {
    let stat = rustix::fs::fstat(&fd)?;
    if nanoseconds(stat.st_mtime, stat.st_mtime_nsec as i64) < sealed_ns {
        return Ok(stat);
    }
    rustix::fs::futimens(&fd, &set_back(sealed_ns))?;
    rustix::fs::fstat(&fd)
}

/// [`settle`] for the link `name` in `dir`.
fn settle_link(dir: &OwnedFd, name: &CString, sealed_ns: i64) -> Result<rustix::fs::Stat, Errno> {
    let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if nanoseconds(stat.st_mtime, stat.st_mtime_nsec as i64) < sealed_ns {
        return Ok(stat);
    }
    rustix::fs::utimensat(dir, name, &set_back(sealed_ns), AtFlags::SYMLINK_NOFOLLOW)?;
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

fn stamp(path: String, stat: &rustix::fs::Stat) -> Stamp {
    Stamp(
        path,
        stat.st_size as u64,
        nanoseconds(stat.st_mtime, stat.st_mtime_nsec as i64),
        nanoseconds(stat.st_ctime, stat.st_ctime_nsec as i64),
        stat.st_ino,
    )
}

/// Replaces the file `name` of `dir`, one of several links to its inode, with a copy of its
/// own under the same name; the inode behind the other links loses this link and nothing
/// else. Returns the copy, open at its start.
fn unshare(dir: &OwnedFd, name: &CString, shared: &mut File) -> io::Result<File> {
    let mut aside = name.as_bytes().to_vec();
    aside.extend_from_slice(b".repx-unshared");
    let aside = CString::new(aside).expect("no NUL in a file name");
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut copy = File::from(rustix::fs::openat(
        dir,
        &aside,
        flags,
        Mode::from_raw_mode(0o600),
    )?);
    let copied =
        io::copy(shared, &mut copy).and_then(|_| Ok(rustix::fs::renameat(dir, &aside, dir, name)?));
    if let Err(e) = copied {
        let _ = rustix::fs::unlinkat(dir, &aside, AtFlags::empty());
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

/// Feeds the file to `hasher`, and to `copy` if given; returns its length and its first
/// four bytes.
fn copy_into(
    file: &mut File,
    hasher: &mut blake3::Hasher,
    mut copy: Option<&mut File>,
) -> io::Result<(u64, Vec<u8>)> {
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
        if let Some(copy) = copy.as_mut() {
            copy.write_all(&buf[..n])?;
        }
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::remove_tree;
    use std::os::unix::fs::PermissionsExt;

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

    #[test]
    fn links_are_never_followed_at_the_root_or_on_the_way() {
        let dir = tempdir("links");
        fs::create_dir_all(dir.join("real/sub")).unwrap();
        fs::write(dir.join("real/sub/a"), "a").unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        assert!(matches!(
            hash_tree(&dir.join("link")),
            Err(TreeError::Link { .. })
        ));
        let beneath = Tree::open_beneath(&dir, Path::new("link/sub"));
        assert!(matches!(beneath, Err(TreeError::Link { path }) if path == dir.join("link")));
        let tree = Tree::open_beneath(&dir, Path::new("real")).unwrap();
        let copied = tree.snapshot(&dir.join("copy"), None).unwrap();
        assert_eq!(copied.hash, hash_tree(&dir.join("real")).unwrap().hash);
        assert_eq!(copied.hash, hash_tree(&dir.join("copy")).unwrap().hash);
        remove_tree(&dir).unwrap();
    }

    #[test]
    fn a_sealed_entry_is_stamped_older_than_the_seal() {
        let dir = tempdir("stamps");
        fs::write(dir.join("fresh"), "just written").unwrap();
        let sealed = seal_tree(&dir).unwrap();
        assert_eq!(sealed.stamps.len(), 1);
        assert!(!sealed.stamps[0].racy(sealed.sealed_ns));
        let meta = fs::symlink_metadata(dir.join("fresh")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            sealed.stamps[0].2,
            meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
        );
        remove_tree(&dir).unwrap();
    }
}
