//! Which file a lab is, and how its text becomes the model [`super::parse`] validates.
//!
//! A lab is written in TOML (`repx.toml`), in Nix (`lab.nix`, evaluated with
//! `nix-instantiate --eval --strict --json`), or as that JSON already evaluated
//! (`lab.json`). In a directory the first of [`LAB_FILES`] that exists is the lab. A Nix
//! or JSON lab is turned into a TOML document (see [`super::json`]), so one parser checks
//! every lab, and its problems are named by key under the `.nix` or `.json` file.
//!
//! Evaluating a `lab.nix` runs code its author wrote, and `repx show stage` does so before
//! a user has decided to trust the lab; so it is bounded and pure ([`evaluate`]): Nix's
//! restricted evaluation reads only the lab's directory and the project's `nix/` library,
//! fetches nothing and builds nothing, and a timeout and a memory cap stop it. A SLURM
//! worker never evaluates it again: it reads what the submitting run evaluated
//! ([`Lab::from_evaluated`]).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::limits::{parse_bytes, parse_duration};
use super::{Lab, LabError, Problem, json, parse};

/// The names a lab is looked for under in a directory, in order of precedence.
pub const LAB_FILES: [&str; 3] = ["repx.toml", "lab.nix", "lab.json"];

/// The Nix library, passed to a `lab.nix` that is a function `{ repx, ... }:`: the lab
/// and the parser that reads it come from the same version of repx.
const NIX_LIBRARY: &str = include_str!("../../../nix/lib.nix");

/// What a lab file is written in, by its extension; anything else is TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Nix,
    Json,
}

impl Format {
    pub fn of(file: &Path) -> Format {
        match file.extension().and_then(|e| e.to_str()) {
            Some("nix") => Format::Nix,
            Some("json") => Format::Json,
            _ => Format::Toml,
        }
    }
}

/// The lab file `path` names: itself, or the first of [`LAB_FILES`] in the directory
/// `path`, with the others that are there too.
pub(super) fn find(path: &Path) -> Result<(PathBuf, Vec<PathBuf>), LabError> {
    if std::fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Err(LabError::Missing {
            path: path.to_path_buf(),
        });
    }
    if !path.is_dir() {
        return Ok((path.to_path_buf(), Vec::new()));
    }
    let mut present = LAB_FILES
        .iter()
        .map(|name| path.join(name))
        .filter(|file| file.is_file());
    match present.next() {
        Some(file) => Ok((file, present.collect())),
        None => Err(LabError::NotFound {
            dir: path.to_path_buf(),
        }),
    }
}

/// Reads and validates the lab in `file` (absolute).
pub(super) fn load(file: &Path) -> Result<Lab, LabError> {
    let read = || {
        std::fs::read_to_string(file).map_err(|source| LabError::Read {
            path: file.to_path_buf(),
            source,
        })
    };
    match Format::of(file) {
        Format::Toml => parse::parse(file, &read()?, |problem| problem),
        Format::Json => from_json(file, &read()?),
        Format::Nix => {
            // Read first, so a missing file is reported as such and not by Nix.
            read()?;
            let evaluated = evaluate(file)?;
            let mut lab = from_json(file, &evaluated)?;
            lab.evaluated = Some(evaluated);
            Ok(lab)
        }
    }
}

impl Lab {
    /// The lab that `file` (a `lab.nix`) evaluated to, as `evaluated` holds it: what a
    /// SLURM worker reads instead of evaluating the file again.
    pub fn from_evaluated(file: &Path, evaluated: &str) -> Result<Lab, LabError> {
        let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let mut lab = from_json(&file, evaluated)?;
        lab.evaluated = Some(evaluated.to_string());
        Ok(lab)
    }
}

/// How long evaluating a lab.nix may take (a duration: `30s`, `2m`).
pub const EVAL_TIMEOUT_VAR: &str = "REPX_NIX_EVAL_TIMEOUT";
/// How much address space it may use (`2G`, `512M`).
pub const EVAL_MEMORY_VAR: &str = "REPX_NIX_EVAL_MEMORY";
/// A lab evaluates in well under a second; these bound one that never ends.
const EVAL_TIMEOUT: Duration = Duration::from_secs(60);
const EVAL_MEMORY: u64 = 2 << 30;

/// The timeout and memory cap of an evaluation: the defaults, or what the environment sets.
fn bounds() -> Result<(Duration, u64), LabError> {
    let var = |name: &'static str| match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(value)) => Err(LabError::EvalBound {
            var: name,
            value: value.to_string_lossy().into_owned(),
        }),
    };
    let bad = |name: &'static str, value: &str| LabError::EvalBound {
        var: name,
        value: value.to_string(),
    };
    let timeout = match var(EVAL_TIMEOUT_VAR)? {
        None => EVAL_TIMEOUT,
        Some(value) => parse_duration(&value)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| bad(EVAL_TIMEOUT_VAR, &value))?,
    };
    let memory = match var(EVAL_MEMORY_VAR)? {
        None => EVAL_MEMORY,
        Some(value) => parse_bytes(&value)
            .filter(|b| *b > 0)
            .ok_or_else(|| bad(EVAL_MEMORY_VAR, &value))?,
    };
    Ok((timeout, memory))
}

/// The directories a lab.nix may read: its own, and the `nix/` library of the nearest
/// directory above it that has one (`nix/lib.nix`), as a lab inside a project that
/// vendors repx's library imports it. The filesystem root's `/nix` is the Nix store, never
/// a library.
fn readable(file: &Path) -> Vec<PathBuf> {
    let Some(dir) = file.parent() else {
        return Vec::new();
    };
    let library = dir
        .ancestors()
        .skip(1)
        .filter(|a| a.parent().is_some())
        .map(|a| a.join("nix"))
        .find(|nix| nix.join("lib.nix").is_file());
    // Nix checks a path as written and again with links resolved: both must be allowed.
    let mut dirs = Vec::new();
    for dir in std::iter::once(dir.to_path_buf()).chain(library) {
        if let Ok(real) = dir.canonicalize()
            && real != dir
        {
            dirs.push(real);
        }
        dirs.push(dir);
    }
    dirs
}

/// Evaluates `file` to JSON with `nix-instantiate`, restricted, within [`bounds`].
fn evaluate(file: &Path) -> Result<String, LabError> {
    let (timeout, memory) = bounds()?;
    let mut command = Command::new("nix-instantiate");
    command
        .args(["--eval", "--strict", "--json"])
        // Reads only below the `-I` directories; no URI may be fetched; no search path
        // but those; nothing built to be imported; no `builtins.exec`.
        .args(["--option", "restrict-eval", "true"])
        .args(["--option", "allowed-uris", ""])
        .args(["--option", "nix-path", ""])
        .args(["--option", "allow-import-from-derivation", "false"])
        .args([
            "--option",
            "allow-unsafe-native-code-during-evaluation",
            "false",
        ]);
    for (i, dir) in readable(file).iter().enumerate() {
        command
            .arg("-I")
            .arg(format!("repx-read-{i}={}", dir.display()));
    }
    command
        .args(["--arg", "repx", NIX_LIBRARY])
        .arg(file)
        // The environment could widen what the options above narrow.
        .env_remove("NIX_PATH")
        .env_remove("NIX_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the timeout ends whatever it started.
        .process_group(0);
    let limit = libc::rlimit {
        rlim_cur: memory,
        rlim_max: memory,
    };
    // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LabError::NixMissing {
                path: file.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(LabError::Eval {
                path: file.to_path_buf(),
                message: format!("  cannot run nix-instantiate: {e}"),
            });
        }
    };
    let output = wait(child, timeout).map_err(|e| match e {
        Waited::TimedOut => LabError::EvalTimeout {
            path: file.to_path_buf(),
            limit: timeout,
        },
        Waited::Failed(e) => LabError::Eval {
            path: file.to_path_buf(),
            message: format!("  waiting for nix-instantiate: {e}"),
        },
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lower = stderr.to_lowercase();
        if lower.contains("out of memory") || lower.contains("bad_alloc") {
            return Err(LabError::EvalMemory {
                path: file.to_path_buf(),
                limit: memory,
            });
        }
        // Nix's hint to pass --show-trace is for its own command line, not repx's; the
        // collector's warnings are about the memory cap, not the lab.
        let message: Vec<String> = stderr
            .trim_end()
            .lines()
            .filter(|line| !line.contains("use '--show-trace'") && !line.starts_with("GC Warning"))
            .map(|line| format!("  {line}").trim_end().to_string())
            .collect();
        return Err(LabError::Eval {
            path: file.to_path_buf(),
            message: message.join("\n"),
        });
    }
    String::from_utf8(output.stdout).map_err(|_| LabError::Eval {
        path: file.to_path_buf(),
        message: "  nix-instantiate printed something that is not UTF-8".into(),
    })
}

enum Waited {
    TimedOut,
    Failed(std::io::Error),
}

/// `child`'s output, or [`Waited::TimedOut`] once `timeout` has passed, its process group
/// killed.
fn wait(child: std::process::Child, timeout: Duration) -> Result<std::process::Output, Waited> {
    let pid = child.id() as libc::pid_t;
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(timeout) {
        Ok(output) => output.map_err(Waited::Failed),
        Err(_) => {
            // SAFETY: kill(2) on the group the child leads. Had it exited this instant, the
            // group is gone (ESRCH): pids are handed out in turn, not reused at once.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = finished.recv();
            Err(Waited::TimedOut)
        }
    }
}

/// Validates the JSON lab `text`, read from or evaluated from `file`.
fn from_json(file: &Path, text: &str) -> Result<Lab, LabError> {
    let invalid = |problems| LabError::Invalid {
        path: file.to_path_buf(),
        problems,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        // The lines of a lab.json are the user's; those of Nix's output are not.
        let line = (Format::of(file) == Format::Json).then_some(e.line());
        invalid(vec![Problem {
            line,
            key: String::new(),
            message: format!("not valid JSON: {e}"),
        }])
    })?;
    let strict = json::strict(text);
    if !strict.is_empty() {
        let json = Format::of(file) == Format::Json;
        let strict = strict
            .into_iter()
            .map(|p| Problem {
                line: p.line.filter(|_| json),
                ..p
            })
            .collect();
        return Err(invalid(strict));
    }
    let doc = json::to_toml(&value).map_err(invalid)?;
    parse::parse(file, &doc.text, |problem| doc.locate(problem))
}
