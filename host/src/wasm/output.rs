//! The output limit, held while a job runs rather than only when its output is committed.
//!
//! Checked only at the commit, a plugin (or a tool it runs) could fill the host's disk
//! before the commit refused its output. So the bytes a component writes to files (its
//! streams and `descriptor.write`, see [`super::streams`]) are counted as they go, one
//! addition per write; once the count passes the limit, the real size of `/out` and `/tmp`
//! is measured. Over the limit, the job traps naming it. Under it, counting resumes from the
//! measured size, so a plugin that overwrites its files is not refused for bytes it no
//! longer holds; and at least an eighth of the limit passes between two such measurements,
//! so one close to the limit does not measure at every write. The disk a job fills thus
//! stays within the limit, plus an eighth of it and one write.
//!
//! Writes that are not counted (a core module's, which go through wasmtime-wasi's preview
//! 1, and those of tools) are caught by a measurement at each epoch tick instead, spaced so
//! that measuring never takes more than a hundredth of the job's time. A tool is measured
//! only once its `run-tool` call returns: while the plugin waits in the host, no tick
//! reaches it.
//!
//! `/out` and `/tmp` share the limit: scratch space is the host's disk as much as output
//! is. The commit checks `/out` alone against it again, exactly.
//!
//! What is measured is what costs: besides files' bytes, every entry counts
//! [`limits::entry_cost`] (a fixed cost, its path, a link's target), so empty files,
//! directories and links are no way around the limit, and the manifest the commit writes,
//! a line per entry, is bounded with it.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use walkdir::WalkDir;

use super::policy::Policy;
use crate::lab::limits;

/// The guest directories whose files count against the limit.
const COUNTED: [&str; 2] = ["/out", "/tmp"];

/// How many times longer than its last measurement the next tick's measurement waits.
const SPACING: u32 = 100;

/// One job's output limit and what it has written.
pub struct OutputLimit {
    limit: u64,
    policy: Arc<Policy>,
    /// What `/out` and `/tmp` may hold at most: the last measurement (or less, see the
    /// module docs) plus every byte written since.
    counted: u64,
    /// When an epoch tick measures next.
    next_tick: Instant,
}

impl OutputLimit {
    /// The limit of a job with `policy`'s directories, starting `now`.
    pub fn new(limit: u64, policy: Arc<Policy>, now: Instant) -> OutputLimit {
        OutputLimit {
            limit,
            policy,
            counted: 0,
            next_tick: now,
        }
    }

    /// Counts `bytes` just written to a file; measures once the count passes the limit.
    pub fn wrote(&mut self, bytes: u64) -> wasmtime::Result<()> {
        self.counted = self.counted.saturating_add(bytes);
        if self.counted > self.limit {
            self.measure()?;
        }
        Ok(())
    }

    /// At an epoch tick: measures, when the last measurement was long enough ago.
    pub fn tick(&mut self) -> wasmtime::Result<()> {
        let started = Instant::now();
        if started < self.next_tick {
            return Ok(());
        }
        let measured = self.measure();
        self.next_tick = started + started.elapsed() * SPACING;
        measured
    }

    fn measure(&mut self) -> wasmtime::Result<()> {
        let size: u64 = COUNTED
            .iter()
            .filter_map(|guest| self.policy.resolve(guest))
            .filter(|(mount, rest)| mount.writable && rest.is_empty())
            .map(|(mount, _)| counted_size(&mount.host))
            .sum();
        if size > self.limit {
            return Err(wasmtime::format_err!(
                "output limit of {} exceeded ({} in /out and /tmp)",
                limits::bytes(self.limit),
                limits::bytes(size)
            ));
        }
        self.counted = size.min(self.limit - self.limit / 8);
        Ok(())
    }
}

/// What is under `dir`, as the commit counts it: every entry's cost, and the bytes of
/// regular files (their length, holes included); links are not followed, and what cannot
/// be read counts nothing.
fn counted_size(dir: &Path) -> u64 {
    let skip = dir.as_os_str().len() as u64 + 1;
    WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            Some((
                entry.path().as_os_str().len() as u64,
                entry.metadata().ok()?,
            ))
        })
        .map(|(path, meta)| {
            let kind = meta.file_type();
            // An `lstat` of a link gives its target's length.
            let (content, target) = if kind.is_symlink() {
                (0, meta.len())
            } else if kind.is_file() {
                (meta.len(), 0)
            } else {
                (0, 0)
            };
            limits::entry_cost(path.saturating_sub(skip), target).saturating_add(content)
        })
        .sum()
}
