//! `repx log -f JOB`: a job's logs as it writes them, until it is committed or failed.
//!
//! While the job runs, its logs are in the store's live directory (see `store::live`); once
//! its run is over, that directory goes and the logs of record appear in `jobs/<id>` or
//! `failed/<id>`, the same bytes and, past the log limit, a marker. So this prints the live
//! files line by line as they grow, and at the end what the logs of record hold beyond what
//! was printed. A job not started yet is waited for while a process holds the store to
//! change it; with none, nothing more will come, and it says so.
//!
//! Text goes out as in `repx log`: as written into a pipe or file, escaped on a terminal.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::CliError;
use super::escape;
use super::exit;
use super::render::short;
use crate::store::Store;

/// The logs of a job, in the order `repx log` prints them.
const FILES: [&str; 3] = ["stdout", "stderr", "host.log"];

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(100);

/// A directory's identity: a committed or failed job's directory is renamed into place
/// whole, so a new one has a new inode.
fn stamp(dir: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(dir)
        .ok()
        .map(|m| (m.ino(), m.dev()))
}

struct Printer {
    printed: [u64; 3],
    /// The file whose header was printed last.
    current: Option<usize>,
    raw: bool,
}

impl Printer {
    /// Prints what `dir`'s logs hold beyond what was printed; with `whole_lines`, only up
    /// to the last line end (the rest is still being written).
    fn catch_up(&mut self, dir: &Path, whole_lines: bool) {
        for (index, name) in FILES.iter().enumerate() {
            let Some(bytes) = read_from(&dir.join(name), self.printed[index]) else {
                continue;
            };
            let end = if whole_lines {
                bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
            } else {
                bytes.len()
            };
            if end == 0 {
                continue;
            }
            if self.current != Some(index) {
                if self.current.is_some() {
                    outln!();
                }
                outln!("==> {name} <==");
                self.current = Some(index);
            }
            let text = String::from_utf8_lossy(&bytes[..end]);
            if self.raw {
                out!("{text}");
            } else {
                out!("{}", escape::terminal_lines(&text));
            }
            if !text.ends_with('\n') {
                outln!();
            }
            self.printed[index] += end as u64;
        }
        let _ = std::io::stdout().flush();
    }
}

/// The bytes of `path` from `offset` on, if it has any there.
fn read_from(path: &Path, offset: u64) -> Option<Vec<u8>> {
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    (!bytes.is_empty()).then_some(bytes)
}

pub(super) fn follow(store: &Store, id: &str) -> Result<i32, CliError> {
    let live = store.live_logs(id);
    let committed = store.job_dir(id);
    let failed = store.failed_dir(id);
    let before = (stamp(&committed), stamp(&failed));
    let mut printer = Printer {
        printed: [0; 3],
        current: None,
        raw: !std::io::stdout().is_terminal(),
    };
    let mut running = false;
    loop {
        if live.is_dir() {
            running = true;
            printer.catch_up(&live, true);
            std::thread::sleep(POLL);
            continue;
        }
        let now = (stamp(&committed), stamp(&failed));
        // Logs of record: new ones once the run we followed is over; before one began, a
        // committed job's (it will not run again) or the last failure's once nothing runs.
        let done: Option<PathBuf> = if now.0.is_some() && (now.0 != before.0 || !running) {
            Some(committed.clone())
        } else if now.1.is_some() && now.1 != before.1 {
            Some(failed.clone())
        } else if !store.has_writer() {
            if now.1.is_some() && !running {
                Some(failed.clone())
            } else {
                errln!(
                    "job {} is not running{}: nothing holds the store to run it",
                    short(id),
                    if running {
                        " any more, and was not committed (interrupted?)"
                    } else {
                        ""
                    }
                );
                return Ok(exit::FAILED);
            }
        } else {
            None
        };
        match done {
            Some(dir) => {
                printer.catch_up(&dir, false);
                if printer.current.is_none() {
                    errln!("job {} wrote no logs", short(id));
                }
                return Ok(exit::SUCCESS);
            }
            None => std::thread::sleep(POLL),
        }
    }
}
