//! The `repx:stage/host` interface: what a plugin asks of the host beyond files.
//!
//! Requests that the stage's grants refuse come back to the plugin as errors naming the
//! missing grant; they never trap, so the plugin can report them in its own words.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::graph::id::ToolIdentity;
use crate::lab::Mode;
use crate::wasm::deadline::Deadline;
use crate::wasm::log::LogPipe;
use crate::wasm::policy::Policy;
use crate::wasm::tools::{self, Invocation, ToolError};

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "stage",
    // The world's one WASI import (`exit-with-code`) is wasmtime-wasi's, linked with the rest.
    with: { "wasi:cli/exit": wasmtime_wasi::p2::bindings::cli::exit },
});

// `self::` because the crate is also called `repx`, which doc tests see as an extern crate.
pub use self::repx::stage::host::{Level, ToolRequest};

/// Receives a plugin's progress reports and warnings as they happen.
pub trait Observer: Send + Sync {
    fn progress(&self, done: u64, total: u64);
    fn warn(&self, message: &str);
}

/// The per-job state behind the host interface.
pub struct HostState {
    pub stage: String,
    pub policy: Arc<Policy>,
    pub grants: Arc<[ToolIdentity]>,
    pub bubblewrap: Option<Arc<Path>>,
    pub observer: Arc<dyn Observer>,
    /// The job's host log: log lines, and each tool run with its output; it keeps up to
    /// the job's log limit.
    pub(crate) log: LogPipe,
    /// Which progress reports and warnings go on to the observer.
    pub gate: Gate,
    /// When the job's wall time is up, or the run interrupted: a tool still running then
    /// is killed.
    pub deadline: Deadline,
    /// Why the job fails whatever the plugin does next (a tool killed its reaper), if it
    /// must.
    pub failed: Option<String>,
    /// Where each tool run is told, in a traced runtime (`repx debug`).
    pub tracer: Option<Arc<dyn super::Tracer>>,
    /// Whether a tool call was refused: a plugin that fails after one failed for it.
    pub refused: bool,
    /// What its tools used.
    pub tool_usage: super::tools::ToolUsage,
}

impl self::repx::stage::host::Host for HostState {
    fn run_tool(&mut self, request: ToolRequest) -> Result<i32, String> {
        let line = format!(
            "$ {} {} (in {})\n",
            request.tool,
            request.args.join(" "),
            request.cwd
        );
        self.log.push(line.as_bytes());
        let outcome = self
            .invocation(&request)
            .map_err(ToolError::Refused)
            .and_then(|invocation| {
                if let Some(program) = &invocation.guest_program
                    && self.policy.mode != Mode::Hermetic
                {
                    let line =
                        format!("[`{program}` is no granted tool: it runs in the sandbox]\n");
                    self.log.push(line.as_bytes());
                }
                tools::run(
                    invocation,
                    &self.policy,
                    &self.grants,
                    self.bubblewrap.as_deref(),
                    &self.deadline,
                    &self.log,
                    &mut self.tool_usage,
                )
            });
        if let Some(tracer) = &self.tracer {
            tracer.call(super::Call {
                what: "run-tool",
                subject: std::iter::once(&request.tool)
                    .chain(&request.args)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                outcome: match &outcome {
                    Ok(status) => format!("exit status {status}"),
                    Err(ToolError::Refused(why)) => format!("refused: {why}"),
                    Err(ToolError::ReaperKilled(why)) => format!("failed: {why}"),
                },
            });
        }
        match outcome {
            Ok(status) => {
                self.log
                    .push(format!("[exit status {status}]\n").as_bytes());
                Ok(status)
            }
            Err(ToolError::Refused(refusal)) => {
                self.refused = true;
                self.log.push(format!("[refused: {refusal}]\n").as_bytes());
                Err(refusal)
            }
            Err(ToolError::ReaperKilled(why)) => {
                self.log.push(format!("[failed: {why}]\n").as_bytes());
                self.failed.get_or_insert_with(|| why.clone());
                Err(why)
            }
        }
    }

    fn log(&mut self, level: Level, message: String) {
        let tag = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        let parts: [&[u8]; 5] = [b"[", tag.as_bytes(), b"] ", message.as_bytes(), b"\n"];
        for part in parts {
            self.log.push(part);
        }
        if matches!(level, Level::Warn | Level::Error) {
            match self.gate.warning(&message) {
                Some(Warning::Shown(shown)) => self.observer.warn(&shown),
                Some(Warning::Last) => self.observer.warn(&format!(
                    "more than {WARNINGS_SHOWN} warnings: the rest are only in the job's log"
                )),
                None => {}
            }
        }
    }

    fn progress(&mut self, done: u64, total: u64) {
        if self.gate.progress(done, total, Instant::now()) {
            self.observer.progress(done, total);
        }
    }
}

/// The least time between two progress reports of a job that go on to the observer.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// How many warnings of a job go on to the observer (and so to the terminal), and how many
/// characters of each; the log keeps them whole, up to its limit.
pub const WARNINGS_SHOWN: usize = 20;
const WARNING_CHARS: usize = 400;

/// What a plugin can put before the user besides its logs, bounded whatever it calls: a
/// progress report at most every [`PROGRESS_EVERY`], and the first time the job reports
/// itself complete (a change of state); the first [`WARNINGS_SHOWN`] warnings, each cut to
/// [`WARNING_CHARS`] characters. Everything else is in the job's log only.
#[derive(Default)]
pub struct Gate {
    /// When the last progress report went on, and whether it said complete.
    progress: Option<(Instant, bool)>,
    warnings: usize,
}

/// A warning that goes on to the observer.
enum Warning {
    Shown(String),
    /// The one that says the others are not shown.
    Last,
}

impl Gate {
    /// Whether a progress report `done` of `total`, made at `now`, goes on.
    fn progress(&mut self, done: u64, total: u64, now: Instant) -> bool {
        let complete = done >= total;
        let due = match self.progress {
            None => true,
            Some((last, was_complete)) => {
                now.duration_since(last) >= PROGRESS_EVERY || (complete && !was_complete)
            }
        };
        if due {
            self.progress = Some((now, complete));
        }
        due
    }

    fn warning(&mut self, message: &str) -> Option<Warning> {
        self.warnings = self.warnings.saturating_add(1);
        match self.warnings {
            n if n <= WARNINGS_SHOWN => Some(Warning::Shown(
                match message.char_indices().nth(WARNING_CHARS) {
                    Some((cut, _)) => format!("{}… (cut; whole in the job's log)", &message[..cut]),
                    None => message.to_string(),
                },
            )),
            n if n == WARNINGS_SHOWN + 1 => Some(Warning::Last),
            _ => None,
        }
    }
}

impl HostState {
    /// Checks a request against the grants and mounts, and maps it to the host.
    fn invocation<'r>(&self, request: &'r ToolRequest) -> Result<Invocation<'r>, String> {
        let stage = &self.stage;
        let (program, guest_program) = match self.grants.iter().find(|t| t.name == request.tool) {
            Some(tool) => {
                tools::unchanged(tool).map_err(|why| format!("stage `{stage}`: {why}"))?;
                (tool.path.clone(), None)
            }
            None => {
                let refused = || {
                    format!(
                        "stage `{stage}` has no grant for tool `{}`: add it to `tools` in [stages.{stage}] of the lab",
                        request.tool
                    )
                };
                // An executable inside one of the stage's inputs needs no grant: it runs
                // sandboxed in every mode (see `tools::run`).
                let guest = tools::normalise(&request.tool).ok_or_else(refused)?;
                let (mount, rest) = self.policy.resolve(&guest).ok_or_else(refused)?;
                if !mount.guest.starts_with("/in/") {
                    return Err(refused());
                }
                // A link in an input (`sh -> /bin/sh`) is no executable inside it.
                let program = mount.host.join(&rest);
                if !stays_inside(&program, &mount.host) {
                    return Err(format!(
                        "stage `{stage}`: tool `{}` leads outside the input it is in (a link?); \
                         only executables inside an input run without a grant",
                        request.tool
                    ));
                }
                (program, Some(guest))
            }
        };
        let outside = || {
            format!(
                "stage `{stage}`: tool cwd `{}` is outside the directories given to the plugin ({})",
                request.cwd,
                self.mount_list()
            )
        };
        let cwd = tools::normalise(&request.cwd).ok_or_else(outside)?;
        let (mount, rest) = self.policy.resolve(&cwd).ok_or_else(outside)?;
        // The path is judged by where it leads: a link the plugin made in /out must not
        // take a tool elsewhere.
        if !stays_inside(&mount.host.join(&rest), &mount.host) {
            return Err(outside());
        }
        if let Some((key, _)) = request
            .env
            .iter()
            .find(|(k, _)| k == "PATH" || k.starts_with("LD_"))
        {
            return Err(format!(
                "stage `{stage}`: a tool's `{key}` is set by the host from the granted tools and cannot be overridden"
            ));
        }
        let stdout = match &request.stdout_file {
            Some(path) => Some(self.open_output(path)?),
            None => None,
        };
        Ok(Invocation {
            program,
            guest_program,
            args: &request.args,
            cwd,
            env: &request.env,
            stdout,
        })
    }

    /// Opens a file for a tool's stdout inside a writable mount, never through a link.
    fn open_output(&self, guest: &str) -> Result<std::fs::File, String> {
        let refused = || {
            format!(
                "stage `{}`: stdout file `{guest}` is not inside a writable directory ({})",
                self.stage,
                self.mount_list()
            )
        };
        let path = tools::normalise(guest).ok_or_else(refused)?;
        let (mount, rest) = self
            .policy
            .resolve(&path)
            .filter(|(m, r)| m.writable && !r.is_empty())
            .ok_or_else(refused)?;
        let dir = cap_std::fs::Dir::open_ambient_dir(&mount.host, cap_std::ambient_authority())
            .map_err(|e| format!("{}: {e}", mount.host.display()))?;
        let file = dir
            .open_with(
                &rest,
                cap_std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true),
            )
            .map_err(|e| format!("stdout file `{guest}`: {e}"))?;
        Ok(file.into_std())
    }

    fn mount_list(&self) -> String {
        self.policy
            .mounts
            .iter()
            .map(|m| m.guest.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether `path`, with every link resolved, exists and lies inside `dir`.
fn stays_inside(path: &Path, dir: &Path) -> bool {
    match (path.canonicalize(), dir.canonicalize()) {
        (Ok(path), Ok(dir)) => path.starts_with(dir),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_goes_on_at_a_rate_and_at_the_first_completion() {
        let mut gate = Gate::default();
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        assert!(gate.progress(1, 10, ms(0)));
        assert!(!gate.progress(2, 10, ms(10)));
        // Completion is a change of state: it goes on at once, but only once.
        assert!(gate.progress(10, 10, ms(20)));
        for n in 21..120 {
            assert!(!gate.progress(10, 10, ms(n)));
        }
        assert!(gate.progress(10, 10, ms(120)));
        // Going back and forth is no new completion until one went on in between.
        assert!(!gate.progress(0, 10, ms(130)));
        assert!(!gate.progress(10, 10, ms(140)));
    }

    #[test]
    fn warnings_are_counted_and_cut() {
        let mut gate = Gate::default();
        let long = "w".repeat(10_000);
        for _ in 0..WARNINGS_SHOWN {
            match gate.warning(&long) {
                Some(Warning::Shown(shown)) => {
                    assert!(shown.starts_with(&"w".repeat(WARNING_CHARS)));
                    assert!(shown.chars().count() < WARNING_CHARS + 50, "{shown}");
                }
                _ => panic!("a warning within the first {WARNINGS_SHOWN} was not shown"),
            }
        }
        assert!(matches!(gate.warning("x"), Some(Warning::Last)));
        assert!(gate.warning("x").is_none());
    }
}
