//! Files the CLI writes (a report, a lab file, man pages, a new lab or plugin crate) are
//! replaced whole: [`write`] writes a new file beside the target and renames it over.
//! [`write_dir`] does the same for a directory (`run --plugin --out`), filled beside an
//! empty or missing target.
//!
//! Invariants:
//! - A reader, or a kill at any moment, sees the old file or the new one, never a part:
//!   the new file is complete and on disk (fsync) before the rename, and the rename is
//!   made durable by syncing the directory.
//! - No link is followed at the target. The new file is created with `O_CREAT | O_EXCL |
//!   O_NOFOLLOW`, so a name planted in the directory (by an impure stage, which may write
//!   the project) is never opened, and `rename` replaces a link at the target itself
//!   instead of writing to where it leads. Links in the directories leading to the target
//!   are the user's own path and are followed.
//! - A failed write removes its new file; a killed one may leave `.NAME.PID.N.tmp`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many names a write tries for its new file before giving up: another file of the
/// same name means a leftover of a killed write, or someone guessing names.
const ATTEMPTS: usize = 16;

/// Replaces `path` with a file holding `bytes`, as described in the module docs. A file
/// already at `path` keeps its permission bits; a new one gets the umask's.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mode = std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.mode() & 0o7777);
    let (tmp, mut file) = create_beside(dir, &name.to_string_lossy())?;
    let written = (|| {
        file.write_all(bytes)?;
        if let Some(mode) = mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        // The rename itself must survive a crash too.
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Makes the directory `path` by filling a new directory beside it with `fill` and renaming
/// that over `path`, which must be missing or an empty directory (a link there, even to an
/// empty directory, is refused by the rename: nothing is written where it leads). Missing
/// parent directories are made.
pub fn write_dir(path: &Path, fill: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a directory", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut attempt = 0;
    let tmp = loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(
            ".{}.{}.{n}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        // `mkdir` makes a new directory or fails; it never follows a link at its name.
        match std::fs::create_dir(&tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < ATTEMPTS => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let filled = fill(&tmp).and_then(|()| std::fs::rename(&tmp, path));
    if filled.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    filled
}

/// Numbers the new files of this process.
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A new file in `dir` named after `name`, created without following any link.
fn create_beside(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o666)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free name for a temporary file")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("repx-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_link_at_the_target_is_replaced_not_written_through() {
        let dir = tempdir("link");
        std::fs::write(dir.join("victim"), "victim").unwrap();
        std::os::unix::fs::symlink(dir.join("victim"), dir.join("report.html")).unwrap();
        write(&dir.join("report.html"), b"report").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("victim")).unwrap(),
            "victim"
        );
        let meta = std::fs::symlink_metadata(dir.join("report.html")).unwrap();
        assert!(meta.is_file());
        assert_eq!(std::fs::read(dir.join("report.html")).unwrap(), b"report");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(left.len(), 2, "{left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_planted_temporary_name_is_skipped_and_left_alone() {
        let dir = tempdir("planted");
        std::fs::write(dir.join("victim"), "victim").unwrap();
        // The names this process picks next are links to the victim (other tests may take
        // a few of them first; all but the last are planted).
        let base = COUNTER.load(Ordering::Relaxed);
        for n in base..base + ATTEMPTS - 1 {
            let planted = dir.join(format!(".out.{}.{n}.tmp", std::process::id()));
            std::os::unix::fs::symlink(dir.join("victim"), planted).unwrap();
        }
        write(&dir.join("out"), b"new").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("victim")).unwrap(),
            "victim"
        );
        assert_eq!(std::fs::read(dir.join("out")).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_replaces_an_empty_one_and_never_follows_a_link() {
        let dir = tempdir("dir");
        let fill = |tmp: &Path| std::fs::write(tmp.join("result.txt"), "result");
        std::fs::create_dir(dir.join("out")).unwrap();
        write_dir(&dir.join("out"), fill).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("out/result.txt")).unwrap(),
            "result"
        );
        // A link to an empty directory elsewhere: refused, nothing written there.
        std::fs::create_dir(dir.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), dir.join("linked")).unwrap();
        assert!(write_dir(&dir.join("linked"), fill).is_err());
        assert_eq!(std::fs::read_dir(dir.join("elsewhere")).unwrap().count(), 0);
        // A directory that is not empty is not replaced.
        assert!(write_dir(&dir.join("out"), fill).is_err());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 3, "temporary directories left: {names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_existing_file_keeps_its_mode() {
        let dir = tempdir("mode");
        let path = dir.join("lab.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
