//! Removing a directory tree by file descriptor, whatever its depth or the length of its
//! paths, and whatever its modes.
//!
//! A plugin decides what its output and scratch hold, and 40 nested directories of 200-byte
//! names are past `PATH_MAX`: removing by full path fails there with "File name too long",
//! and a store that cannot clear its `tmp/` could run nothing more. So a walk here never
//! names more than one entry at a time: it goes down with `openat(dir, name)`, up with
//! `openat(dir, "..")` (checked to be the directory it came from, by device and inode),
//! and removes with `unlinkat`. It holds two descriptors whatever the depth, and the names
//! of the directories on its way. Links are removed, never followed. Sealed (read-only)
//! directories are made writable first, which a non-root owner needs.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

/// Removes `root` and everything under it, sealed or not, links not followed; a missing
/// `root` is fine.
pub fn remove_tree(root: &Path) -> io::Result<()> {
    let (parent, name) = match (root.parent(), root.file_name()) {
        (Some(parent), Some(name)) => (parent, name),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a directory entry to remove", root.display()),
            ));
        }
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let parent = open_dir(rustix::fs::CWD, parent.as_os_str())?;
    remove_at(&parent, name)
}

/// Removes the entry `name` of the directory `parent`, and all under it.
fn remove_at(parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let name = c_name(name)?;
    match rustix::fs::statat(parent, &name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) != FileType::Directory => {
            return unlink(parent, &name, AtFlags::empty());
        }
        Ok(_) => {}
    }
    let top = open_dir(parent, name.as_c_str())?;
    let mut stack = vec![Level::enter(&top, name.clone())?];
    let mut here = top;
    while let Some(level) = stack.last_mut() {
        let Some(child) = level.names.pop() else {
            let done = stack.pop().expect("a level");
            let Some(up) = stack.last() else { break };
            here = climb(&here, up.id)?;
            unlink(&here, &done.name, AtFlags::REMOVEDIR)?;
            continue;
        };
        match rustix::fs::statat(&here, &child, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                let down = open_dir(&here, child.as_c_str())?;
                stack.push(Level::enter(&down, child)?);
                here = down;
            }
            Ok(_) => unlink(&here, &child, AtFlags::empty())?,
        }
    }
    unlink(parent, &name, AtFlags::REMOVEDIR)
}

/// A directory on the way down: its name in its parent, its identity, and the names of
/// the entries still to remove.
struct Level {
    name: CString,
    id: (u64, u64),
    names: Vec<CString>,
}

impl Level {
    /// Makes the open directory `dir` writable and lists it.
    fn enter(dir: &OwnedFd, name: CString) -> io::Result<Level> {
        let stat = rustix::fs::fstat(dir)?;
        let mode = stat.st_mode & 0o7777;
        if mode & 0o700 != 0o700 {
            rustix::fs::fchmod(dir, Mode::from_raw_mode(mode | 0o700))?;
        }
        let mut names = Vec::new();
        for entry in Dir::read_from(dir)? {
            let entry = entry?;
            let entry_name = entry.file_name();
            if entry_name != c"." && entry_name != c".." {
                names.push(entry_name.to_owned());
            }
        }
        Ok(Level {
            name,
            id: (stat.st_dev, stat.st_ino),
            names,
        })
    }
}

/// The parent of `dir`, which must be the directory `expected` (device, inode): a tree
/// moved while it is removed is not followed elsewhere.
fn climb(dir: &OwnedFd, expected: (u64, u64)) -> io::Result<OwnedFd> {
    let up = open_dir(dir, c"..")?;
    let stat = rustix::fs::fstat(&up)?;
    if (stat.st_dev, stat.st_ino) != expected {
        return Err(io::Error::other(
            "the directory being removed was moved meanwhile",
        ));
    }
    Ok(up)
}

fn open_dir<P: rustix::path::Arg>(at: impl AsFd, path: P) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(at, path, flags, Mode::empty())?)
}

fn unlink(dir: &OwnedFd, name: &CString, flags: AtFlags) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name.as_c_str(), flags) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn removes_a_tree_deeper_than_path_max_sealed_with_links() {
        let root = std::env::temp_dir().join(format!("repx-remove-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let outside = root.with_extension("outside");
        std::fs::write(&outside, "kept").unwrap();
        // 40 levels of 200-byte names: 8,000 bytes, past PATH_MAX (4,096).
        let name = "d".repeat(200);
        let mut dir = open_dir(rustix::fs::CWD, root.as_os_str()).unwrap();
        for level in 0..40 {
            rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            let file = rustix::fs::openat(
                &dir,
                format!("f{level}").as_str(),
                OFlags::CREATE | OFlags::WRONLY,
                Mode::from_raw_mode(0o444),
            )
            .unwrap();
            drop(file);
            rustix::fs::symlinkat(outside.as_os_str(), &dir, format!("l{level}").as_str()).unwrap();
            let down = open_dir(&dir, name.as_str()).unwrap();
            if level % 2 == 0 {
                rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o555)).unwrap();
            }
            dir = down;
        }
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "kept");
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        remove_tree(&outside).unwrap();
        remove_tree(&outside).unwrap();
        assert!(!outside.exists());
    }
}
