//! Digests of granted tools' executables, kept by their `stat`: a run does not read and
//! hash `make` and `cc` (1.5 MB) again while their files are as when last hashed.
//!
//! A tool's digest is part of its jobs' ids, so a changed tool must change it. It is
//! reused only while everything `stat` says of the file the path leads to (links followed)
//! is as when it was hashed: device, inode, size, modification and change time. Any write
//! sets both times; a package manager's upgrade renames a new file over the old one, which
//! is a new inode; retargeting a link leads to another file; and the change time cannot
//! be set from user space. This is the rule make, ninja, cargo and git's index rely on,
//! and the rule the sources scans apply to a project's files (see [`crate::sources`]).
//!
//! Invariants:
//! - A file whose times are within [`RACY_SECS`](crate::file_stat::RACY_SECS) of its hashing is not kept: a later write
//!   in the same clock tick could leave its times as they were. It is hashed on every run
//!   until it has settled.
//! - A sector gone bad changes bytes without changing a time, so a tool damaged on disk
//!   keeps its digest here. Unlike a compiled plugin (see [`crate::wasm`], whose cache
//!   checks every load), nothing of repx runs a tool's bytes on the strength of its digest:
//!   the digest only says whether jobs that ran the tool stand for a run with it now. Such
//!   a tool fails or misbehaves when it runs, as it would without repx.
//! - `tools.json` is written only by the process holding the store's lock, whole, by
//!   rename; one that does not parse is as none, and every tool is hashed again.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::file_stat::FileStat;

/// The file's name in the store.
pub(super) const FILE: &str = "tools.json";

/// A file's identity as `stat` gives it, and its BLAKE3 digest then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    #[serde(flatten)]
    stat: FileStat,
    digest: String,
}

/// The digests known, by path, as read from the store and added to since.
#[derive(Default)]
pub(super) struct Digests {
    seen: BTreeMap<PathBuf, Seen>,
    /// Whether `seen` holds digests the file lacks.
    added: bool,
}

impl Digests {
    /// What `tools.json` in `root` holds; nothing when it is missing or does not parse.
    pub(super) fn read(root: &Path) -> Digests {
        let seen = fs::read(root.join(FILE))
            .ok()
            .and_then(|text| serde_json::from_slice(&text).ok())
            .unwrap_or_default();
        Digests { seen, added: false }
    }

    /// The digest of the executable at `path`: the one kept while its `stat` is as when
    /// it was hashed, else hashed now (and kept once its times have settled).
    pub(super) fn digest(&mut self, path: &Path) -> io::Result<String> {
        let stat = FileStat::of(&fs::metadata(path)?);
        if let Some(seen) = self.seen.get(path).filter(|s| s.stat == stat) {
            return Ok(seen.digest.clone());
        }
        // Stat first, then read: a write during the read moves the times away from
        // those kept, so the next run hashes it again.
        let digest = blake3::hash(&fs::read(path)?).to_hex().to_string();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if stat.settled_before(now) {
            let seen = Seen {
                stat,
                digest: digest.clone(),
            };
            self.added |= self.seen.insert(path.to_path_buf(), seen.clone()) != Some(seen);
        } else if self.seen.remove(path).is_some() {
            self.added = true;
        }
        Ok(digest)
    }

    /// Writes what was added to `tools.json` in `root`, whole, by rename; `tmp` is a
    /// name of this process's own.
    pub(super) fn save(&mut self, root: &Path, tmp: &Path) -> io::Result<()> {
        if !self.added {
            return Ok(());
        }
        let text = serde_json::to_vec(&self.seen).expect("digests serialise");
        fs::write(tmp, text)?;
        fs::rename(tmp, root.join(FILE))?;
        self.added = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_kept_while_the_stat_is_as_hashed_and_never_for_a_fresh_file() {
        let dir = std::env::temp_dir().join(format!("repx-tool-digests-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let tool = dir.join("tool");
        fs::write(&tool, b"one").unwrap();

        // Just written: hashed, not kept.
        let mut digests = Digests::read(&dir);
        let one = digests.digest(&tool).unwrap();
        assert_eq!(one, blake3::hash(b"one").to_hex().to_string());
        assert!(
            digests.seen.is_empty(),
            "a file written just now is not kept"
        );

        // Settled (times set two minutes back): kept, and found by the next reader.
        let old = SystemTime::now() - std::time::Duration::from_secs(120);
        fs::File::options()
            .write(true)
            .open(&tool)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // The change time moved with the touch: only the modification time is old.
        let mut digests = Digests::read(&dir);
        assert_eq!(digests.digest(&tool).unwrap(), one);
        assert!(
            digests.seen.is_empty(),
            "a change time of now is not settled"
        );
        let seen = Seen {
            stat: FileStat {
                dev: 0,
                ino: 0,
                size: 0,
                mtime: (0, 0),
                ctime: (0, 0),
            },
            digest: "stale".into(),
        };
        digests.seen.insert(tool.clone(), seen);
        // A stat that does not match what was kept: hashed again.
        assert_eq!(digests.digest(&tool).unwrap(), one);

        // Kept by hand as a settled file would be: then the kept digest is what counts.
        let kept = Seen {
            stat: FileStat::of(&fs::metadata(&tool).unwrap()),
            digest: "kept".into(),
        };
        digests.seen.insert(tool.clone(), kept);
        digests.added = true;
        digests.save(&dir, &dir.join("tmp")).unwrap();
        let mut again = Digests::read(&dir);
        assert_eq!(again.digest(&tool).unwrap(), "kept");
        // Rewritten with other bytes of the same length: its times move, so it is hashed.
        fs::write(&tool, b"two").unwrap();
        assert_eq!(
            again.digest(&tool).unwrap(),
            blake3::hash(b"two").to_hex().to_string()
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
