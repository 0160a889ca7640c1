//! What a file's `stat` says of its identity: device, inode, size, modification and change
//! time. Equal stats mean unchanged bytes, the rule make, ninja, cargo and git's index rely
//! on: any write sets both times, a replacement by rename is a new inode, and the change
//! time cannot be set from user space.
//!
//! A stat taken within [`RACY_SECS`] of a file's last change does not vouch for its bytes:
//! a later write in the same clock tick could leave the times as they were.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

/// How long after its last change a file's stat starts to vouch for its bytes.
pub const RACY_SECS: i64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl FileStat {
    pub fn of(meta: &Metadata) -> FileStat {
        FileStat {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether both times are older than [`RACY_SECS`] before `now_secs` (seconds since
    /// the epoch).
    pub fn settled_before(&self, now_secs: i64) -> bool {
        self.mtime.0 < now_secs - RACY_SECS && self.ctime.0 < now_secs - RACY_SECS
    }
}
