//! External tools: resolving grants on the host and running them for a plugin.
//!
//! A stage may run only the tools its lab entry grants, plus executables inside its own
//! inputs. In impure mode a granted tool runs on the host, in place; in pure mode it runs
//! inside a bubblewrap sandbox that sees the system's read-only tool directories, the job's
//! mounts at their guest paths, and nothing else, with no network. In hermetic mode a tool
//! must be a Nix store path, and runs as it is inside the Nix sandbox the job is built in.
//!
//! An executable from an input was granted by no one: whatever wrote it (an upstream job,
//! or in impure mode the plugin itself, through `/work`) may have put anything there. It
//! runs in the bubblewrap sandbox in impure mode too, where it can do no more than the
//! plugin could, and never on the host.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::graph::id::ToolIdentity;
use crate::lab::Mode;
use crate::wasm::policy::Policy;

/// Read-only system directories a sandboxed tool sees, where they exist.
const SYSTEM_DIRS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
];

/// Finds `name` on `path_var` (or takes it as given when it contains a `/`) and hashes it.
pub fn resolve(name: &str, path_var: Option<&OsString>) -> Result<ToolIdentity, String> {
    let path = if name.contains('/') {
        Some(PathBuf::from(name)).filter(|p| is_executable(p))
    } else {
        path_var.and_then(|paths| {
            std::env::split_paths(paths)
                .map(|dir| dir.join(name))
                .find(|p| is_executable(p))
        })
    };
    let path = path.ok_or_else(|| {
        format!("tool `{name}` is not an executable on PATH: install it, or remove it from `tools`")
    })?;
    let bytes =
        std::fs::read(&path).map_err(|e| format!("tool `{name}` ({}): {e}", path.display()))?;
    Ok(ToolIdentity {
        name: name.to_string(),
        path,
        digest: blake3::hash(&bytes).to_hex().to_string(),
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where bubblewrap is, if installed.
pub fn bubblewrap() -> Option<PathBuf> {
    resolve("bwrap", std::env::var_os("PATH").as_ref())
        .ok()
        .map(|t| t.path)
}

/// A plugin's request, after it passed the grant checks.
pub struct Invocation<'a> {
    /// Host path of the executable.
    pub program: PathBuf,
    /// For an executable from an input, not a granted tool: its guest path. It runs in the
    /// sandbox, where mounts keep their guest paths.
    pub guest_program: Option<String>,
    pub args: &'a [String],
    /// Normalised guest working directory.
    pub cwd: String,
    pub env: &'a [(String, String)],
    pub stdout: Option<File>,
}

/// What a finished tool left.
pub struct ToolRun {
    pub status: i32,
    /// Everything it printed that did not go to a file.
    pub output: Vec<u8>,
}

/// Runs an invocation the way the job's mode requires; kills it at `deadline`.
pub fn run(
    invocation: Invocation,
    policy: &Policy,
    grants: &[ToolIdentity],
    bubblewrap: Option<&Path>,
    deadline: Instant,
) -> Result<ToolRun, String> {
    let path = search_path(grants);
    let mut command = match (policy.mode, &invocation.guest_program) {
        // A hermetic job is inside the Nix sandbox already, which holds only its inputs
        // and the store paths it was given: its tools run there as they are.
        (Mode::Hermetic, _) | (Mode::Impure, None) => on_host(&invocation, policy, &path)?,
        (Mode::Pure, None) => {
            let bwrap = bubblewrap.ok_or(
                "pure-mode tools run inside bubblewrap, which is not installed: install it \
                 (Debian: `apt-get install bubblewrap`), or run the stage with --impure",
            )?;
            sandboxed(bwrap, &invocation, policy, grants, &path)
        }
        (Mode::Pure | Mode::Impure, Some(program)) => {
            let bwrap = bubblewrap.ok_or_else(|| {
                format!(
                    "`{program}` is no granted tool, so it runs only inside bubblewrap, which \
                     is not installed: install it (Debian: `apt-get install bubblewrap`), or \
                     grant the program by its host path in `tools`"
                )
            })?;
            sandboxed(bwrap, &invocation, policy, grants, &path)
        }
    };
    command.stdin(Stdio::null());
    command.stdout(match invocation.stdout {
        Some(file) => Stdio::from(file),
        None => Stdio::piped(),
    });
    command.stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", invocation.program.display()))?;
    // Both pipes are drained on their own threads, so a chatty tool never stalls on a full
    // pipe, and a pipe held open by something the tool left behind cannot stall the job.
    let (printed_tx, printed_rx) = mpsc::channel();
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as _),
        child.stderr.take().map(|p| Box::new(p) as _),
    ];
    for pipe in pipes.into_iter().flatten() {
        let tx = printed_tx.clone();
        std::thread::spawn(move || {
            let mut pipe = pipe;
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = tx.send(bytes);
        });
    }
    drop(printed_tx);
    let time_up = || {
        format!(
            "`{}` was killed: the stage's wall-time limit is up",
            invocation.program.display()
        )
    };
    let status = wait_until(&mut child, deadline).ok_or_else(time_up)?;
    let mut printed = Vec::new();
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match printed_rx.recv_timeout(left) {
            Ok(bytes) => printed.extend_from_slice(&bytes),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(time_up()),
        }
    }
    let status = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(ToolRun {
        status,
        output: printed,
    })
}

/// A granted tool on the host, in the host directory of its guest cwd.
fn on_host(invocation: &Invocation, policy: &Policy, path: &OsString) -> Result<Command, String> {
    let (mount, rest) = policy.resolve(&invocation.cwd).ok_or_else(|| {
        format!(
            "cwd `{}` is outside the directories given to the plugin",
            invocation.cwd
        )
    })?;
    let mut command = Command::new(&invocation.program);
    command
        .current_dir(mount.host.join(rest))
        .args(invocation.args)
        .env_clear()
        .envs(invocation.env.iter().cloned())
        .env("PATH", path);
    Ok(command)
}

/// Waits for `child` to exit, or kills it at `deadline` and returns `None`.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    // Short tools are noticed at once; long ones are polled less often.
    let mut pause = Duration::from_micros(100);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return child.wait().ok(),
        }
        let now = Instant::now();
        if now >= deadline {
            // In pure mode this is bubblewrap, whose sandbox dies with it.
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

fn sandboxed(
    bwrap: &Path,
    inv: &Invocation,
    policy: &Policy,
    grants: &[ToolIdentity],
    path: &OsString,
) -> Command {
    let mut c = Command::new(bwrap);
    c.args([
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ]);
    c.args(["--proc", "/proc", "--dev", "/dev"]);
    for dir in sandbox_read_only(grants) {
        c.arg("--ro-bind").arg(&dir).arg(&dir);
    }
    for mount in &policy.mounts {
        c.arg(if mount.writable {
            "--bind"
        } else {
            "--ro-bind"
        });
        c.arg(&mount.host).arg(&mount.guest);
    }
    for (key, value) in inv.env {
        c.args(["--setenv", key, value]);
    }
    c.arg("--setenv").arg("PATH").arg(path);
    c.args(["--chdir", &inv.cwd, "--"]);
    match &inv.guest_program {
        Some(guest) => c.arg(guest),
        None => c.arg(&inv.program),
    };
    c.args(inv.args);
    c
}

/// What a pure-mode tool's sandbox holds read-only besides the job's own mounts: the
/// system directories that exist here, then the directory of each granted tool outside
/// them (a tool brings its own directory). `repx show stage` lists the same.
pub fn sandbox_read_only(grants: &[ToolIdentity]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = SYSTEM_DIRS
        .iter()
        .map(PathBuf::from)
        .filter(|d| d.exists())
        .collect();
    for dir in grants.iter().filter_map(|t| t.path.parent()) {
        let system = SYSTEM_DIRS.iter().any(|s| dir.starts_with(s));
        if !system && !dirs.iter().any(|d| d == dir) {
            dirs.push(dir.to_path_buf());
        }
    }
    dirs
}

/// The directories of the granted tools, in grant order, each once.
fn search_path(grants: &[ToolIdentity]) -> OsString {
    let mut dirs: Vec<&Path> = Vec::new();
    for dir in grants.iter().filter_map(|t| t.path.parent()) {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// An absolute guest path without `.` or `..` components, or `None`.
pub fn normalise(guest: &str) -> Option<String> {
    let path = Path::new(guest);
    if !path.is_absolute() {
        return None;
    }
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_must_be_absolute_and_plain() {
        assert_eq!(normalise("/work/src/"), Some("/work/src".into()));
        assert_eq!(normalise("/work/./src"), Some("/work/src".into()));
        assert_eq!(normalise("/work/../etc"), None);
        assert_eq!(normalise("work"), None);
    }

    #[test]
    fn resolves_tools_on_the_given_path_only() {
        let path = OsString::from("/usr/bin:/bin");
        let sh = resolve("sh", Some(&path)).unwrap();
        assert!(sh.path.ends_with("sh"));
        assert_eq!(sh.digest.len(), 64);
        let err = resolve("sh", Some(&OsString::from("/nonexistent"))).unwrap_err();
        assert!(err.contains("not an executable on PATH"), "{err}");
    }
}
