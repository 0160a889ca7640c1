//! Who uses a store: one process that changes it at a time, and readers beside it.
//!
//! The lock is a `flock` on the store directory itself, through a descriptor of the
//! directory: no file in the store holds it, so deleting or replacing one cannot set a
//! second run loose on the store, and a store that cannot be written can still be locked
//! (shared, by commands that must not see a run change what they read). Once it holds
//! the lock exclusively, the holder writes who it is into `lock` (pid, start time in the
//! kernel's ticks, when it took the store, command line), so that a process turned away
//! can name it. That file locks nothing: a holder it names that is gone (no such pid, or
//! one started at another time) is not named.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{StoreError, io};

/// The file naming the lock's holder.
const HOLDER: &str = "lock";

/// How a store is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// One process, which may change the store (`repx run`, `repx gc`).
    Exclusive,
    /// Any number of processes that only read, while no process holds it exclusively.
    Shared,
}

/// The process holding a store, as it wrote itself into `lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// The command line, arguments joined by spaces.
    pub command: String,
    /// When it took the store, in milliseconds since the epoch.
    pub since_ms: u64,
}

/// Locks the store directory `root`; the directory, open, holds the lock until dropped.
pub(super) fn lock(root: &Path, access: Access) -> Result<File, StoreError> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(root)
        .map_err(io(root))?;
    let taken = match access {
        Access::Exclusive => dir.try_lock(),
        Access::Shared => dir.try_lock_shared(),
    };
    match taken {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StoreError::Locked {
                path: root.to_path_buf(),
                holder: holder(root),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(root)(e)),
    }
    if access == Access::Exclusive {
        // Only informs whoever is turned away: not being able to say so changes nothing.
        let _ = write_holder(&root.join(HOLDER));
    }
    Ok(dir)
}

fn write_holder(path: &Path) -> std::io::Result<()> {
    let me = std::process::id();
    let ticks = start_ticks(me).unwrap_or_default();
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut file = File::create(path)?;
    file.write_all(format!("{me}\n{ticks}\n{since}\n{command}\n").as_bytes())
}

/// The live process `lock` names, if it names one.
fn holder(root: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(root.join(HOLDER)).ok()?;
    let mut lines = text.splitn(4, '\n');
    let pid: u32 = lines.next()?.parse().ok()?;
    let ticks: u64 = lines.next()?.parse().ok()?;
    let since_ms: u64 = lines.next()?.parse().ok()?;
    let command = lines.next()?.trim_end_matches('\n').to_string();
    (start_ticks(pid)? == ticks).then_some(Holder {
        pid,
        command,
        since_ms,
    })
}

/// When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat`, field 22):
/// with the pid, it names one process, never a later one given the same pid.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, field 2, is in parentheses and may hold anything: count after it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_locked_whatever_happens_to_the_holder_file() {
        let root = std::env::temp_dir().join(format!("repx-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let held = lock(&root, Access::Exclusive).unwrap();
        std::fs::remove_file(root.join(HOLDER)).unwrap();
        assert!(matches!(
            lock(&root, Access::Exclusive),
            Err(StoreError::Locked { holder: None, .. })
        ));
        drop(held);
        let held = lock(&root, Access::Exclusive).unwrap();
        match lock(&root, Access::Shared) {
            Err(StoreError::Locked {
                holder: Some(holder),
                ..
            }) => {
                assert_eq!(holder.pid, std::process::id());
                assert!(holder.command.contains("repx"), "{holder:?}");
            }
            other => panic!("not turned away with its holder: {other:?}"),
        }
        drop(held);
        let readers = [
            lock(&root, Access::Shared).unwrap(),
            lock(&root, Access::Shared).unwrap(),
        ];
        assert!(lock(&root, Access::Exclusive).is_err());
        drop(readers);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
