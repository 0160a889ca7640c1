//! The `repx:stage/host` interface: what a plugin asks of the host beyond files.
//!
//! Requests that the stage's grants refuse come back to the plugin as errors naming the
//! missing grant; they never trap, so the plugin can report them in its own words.

use std::path::Path;
use std::sync::Arc;

use crate::graph::id::ToolIdentity;
use crate::lab::Mode;
use crate::wasm::deadline::Deadline;
use crate::wasm::policy::Policy;
use crate::wasm::tools::{self, Invocation};

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "stage",
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
    /// The job's host log: log lines, and each tool run with its output.
    pub log: Vec<u8>,
    /// When the job's wall time is up, or the run interrupted: a tool still running then
    /// is killed.
    pub deadline: Deadline,
}

impl self::repx::stage::host::Host for HostState {
    fn run_tool(&mut self, request: ToolRequest) -> Result<i32, String> {
        let line = format!(
            "$ {} {} (in {})\n",
            request.tool,
            request.args.join(" "),
            request.cwd
        );
        self.log.extend_from_slice(line.as_bytes());
        let outcome = self.invocation(&request).and_then(|invocation| {
            if let Some(program) = &invocation.guest_program
                && self.policy.mode != Mode::Hermetic
            {
                let line = format!("[`{program}` is no granted tool: it runs in the sandbox]\n");
                self.log.extend_from_slice(line.as_bytes());
            }
            tools::run(
                invocation,
                &self.policy,
                &self.grants,
                self.bubblewrap.as_deref(),
                &self.deadline,
            )
        });
        match outcome {
            Ok(run) => {
                self.log.extend_from_slice(&run.output);
                self.log
                    .extend_from_slice(format!("[exit status {}]\n", run.status).as_bytes());
                Ok(run.status)
            }
            Err(refusal) => {
                self.log
                    .extend_from_slice(format!("[refused: {refusal}]\n").as_bytes());
                Err(refusal)
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
        self.log
            .extend_from_slice(format!("[{tag}] {message}\n").as_bytes());
        if matches!(level, Level::Warn | Level::Error) {
            self.observer.warn(&message);
        }
    }

    fn progress(&mut self, done: u64, total: u64) {
        self.observer.progress(done, total);
    }
}

impl HostState {
    /// Checks a request against the grants and mounts, and maps it to the host.
    fn invocation<'r>(&self, request: &'r ToolRequest) -> Result<Invocation<'r>, String> {
        let stage = &self.stage;
        let (program, guest_program) = match self.grants.iter().find(|t| t.name == request.tool) {
            Some(tool) => (tool.path.clone(), None),
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
