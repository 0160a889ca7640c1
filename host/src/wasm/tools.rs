//! External tools: resolving grants on the host and running them for a plugin.
//!
//! A stage may run only the tools its lab entry grants, plus executables inside its own
//! inputs. In impure mode a granted tool runs on the host, in place; in pure mode it runs
//! inside a bubblewrap sandbox that sees the system's read-only tool directories, the job's
//! mounts at their guest paths, and nothing else, with no network. In hermetic mode a tool
//! must be a Nix store path, and runs as it is inside the Nix sandbox the job is built in.
//!
//! The sandbox holds whoever runs repx, root included: the tool is `nobody` (65534) in a
//! user namespace of its own, with no capability (`--cap-drop ALL`: bubblewrap keeps them
//! all for root otherwise), `no_new_privs`, no further user namespace, a session, pid,
//! mount, network, IPC, UTS and cgroup namespace of its own, and `/proc/sys` read-only (a
//! tool of root's is still uid 0 to the kernel's checks made by uid, not capability).
//!
//! No process a tool starts outlives it, in any mode. In the sandbox the tool is the init
//! (pid 1) of a pid namespace of its own: when the tool exits, or bubblewrap is killed (at
//! the deadline, or with repx) and `--die-with-parent` kills the tool, the kernel kills
//! everything left in the namespace. As an init, the tool ignores the signals it has no
//! handler for when they come from inside its namespace (its own `kill $$`, a SIGPIPE:
//! the write fails with EPIPE instead); SIGKILL from outside always ends it. In hermetic mode the Nix build's own pid
//! namespace does the same when the build ends. On the host (impure mode) a
//! tool runs under a reaper of its own, a fork of repx, which is the child subreaper of
//! the tool's tree and kills and reaps what is left of it when the tool returns or is
//! stopped (see [`reaper`]). One reaper per tool, not one for repx: jobs run side by side
//! in one repx process, and each tool's orphans must be told apart from the others'.
//! A cgroup would do too, but is not given to every user.
//!
//! What a tool prints goes into the job's host log as it comes, up to the log limit; the
//! rest is read and dropped, never held.
//!
//! An executable from an input was granted by no one: whatever wrote it (an upstream job,
//! or in impure mode the plugin itself, through `/work`) may have put anything there. It
//! runs in the bubblewrap sandbox in impure mode too, where it can do no more than the
//! plugin could, and never on the host.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::graph::id::ToolIdentity;
use crate::lab::Mode;
use crate::wasm::deadline::Deadline;
use crate::wasm::log::LogPipe;
use crate::wasm::policy::Policy;

mod reaper;

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

/// The uid and gid of a sandboxed tool inside its user namespace: `nobody`'s.
const SANDBOX_ID: &str = "65534";

/// Finds `name` on `path_var` (or, when it contains a `/`, as a path relative to `base`,
/// the lab file's directory) and hashes it with `digest` (see [`digest`], and the store's
/// digests kept by stat).
pub fn resolve(
    name: &str,
    base: &Path,
    path_var: Option<&OsString>,
    digest: impl FnOnce(&Path) -> std::io::Result<String>,
) -> Result<ToolIdentity, String> {
    let path = find(name, base, path_var)?;
    let unreadable = |e: std::io::Error| format!("tool `{name}` ({}): {e}", path.display());
    // Before the hashing: a write during it changes the times, so the run refuses it.
    let stat = crate::file_stat::FileStat::of(&std::fs::metadata(&path).map_err(unreadable)?);
    let digest = digest(&path).map_err(unreadable)?;
    Ok(ToolIdentity {
        name: name.to_string(),
        path,
        digest,
        stat: Some(stat),
    })
}

/// Refuses a granted tool whose file is no longer the one its digest, part of the job's
/// id, was taken of: replaced (an upgrade, an edit) since the run began. Else the job's
/// output would be kept under the id of a tool that did not make it. (What happens between
/// this check and the start is not covered.)
pub fn unchanged(tool: &ToolIdentity) -> Result<(), String> {
    let Some(hashed) = &tool.stat else {
        return Ok(());
    };
    // Another stat with the same bytes (a touch, a chmod, a new link to it) is the same
    // tool: hashed again to tell.
    match std::fs::metadata(&tool.path) {
        Ok(meta) if crate::file_stat::FileStat::of(&meta) == *hashed => Ok(()),
        Ok(_) if digest(&tool.path).is_ok_and(|d| d == tool.digest) => Ok(()),
        _ => Err(format!(
            "tool `{}` ({}) changed since this run took its digest for the job's id: run \
             again",
            tool.name,
            tool.path.display()
        )),
    }
}

/// Where `name` is: on `path_var`, or at `base` joined with it when it contains a `/`.
/// The path is made absolute here, once: a tool starts in the directory its plugin names,
/// where a relative one (`./build.sh`, or one found through a `.` in `PATH`) would lead
/// elsewhere. A path given in the lab is taken from the lab file's directory, resolved
/// ([`crate::lab::resolved`]), without `..`: `tools/x` and `../lab/tools/x` are one tool,
/// with one job id.
fn find(name: &str, base: &Path, path_var: Option<&OsString>) -> Result<PathBuf, String> {
    if let Some(path) = given_path(name, base) {
        return match is_executable(&path) {
            true => Ok(path),
            false => Err(format!(
                "tool `{name}` is not an executable file at {} (a relative path in `tools` \
                 is taken from the lab file's directory)",
                path.display()
            )),
        };
    }
    path_var
        .and_then(|paths| {
            std::env::split_paths(paths)
                .map(|dir| dir.join(name))
                .find(|p| is_executable(p))
        })
        .map(|path| std::path::absolute(&path).unwrap_or(path))
        .ok_or_else(|| {
            format!(
                "tool `{name}` is not an executable on PATH: install it, or remove it from `tools`"
            )
        })
}

/// Where a tool given by a path (`name` holds a `/`) is: relative to `base`, the lab file's
/// directory (already resolved), without `.` or `..` and without following links, so that
/// `/bin/sh` or a Nix profile's path stays as written. `None` for a name to find on `PATH`.
pub fn given_path(name: &str, base: &Path) -> Option<PathBuf> {
    let joined = base.join(name);
    name.contains('/')
        .then(|| lexically_normal(&std::path::absolute(&joined).unwrap_or(joined)))
}

/// `path` without `.` and `..` components, taken as they read (`a/../b` is `b`).
fn lexically_normal(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

/// BLAKE3 of the executable at `path`, read now.
pub fn digest(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().to_hex().to_string())
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where bubblewrap is, if installed.
pub fn bubblewrap() -> Option<PathBuf> {
    find("bwrap", Path::new("/"), std::env::var_os("PATH").as_ref()).ok()
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

/// Runs an invocation the way the job's mode requires, and returns its exit status;
/// stops it at `deadline`: when the job's wall time is up, or at once when the run is
/// interrupted. What it prints that does not go to a file goes to `log` as it comes,
/// which keeps only up to the job's log limit.
pub(crate) fn run(
    invocation: Invocation,
    policy: &Policy,
    grants: &[ToolIdentity],
    bubblewrap: Option<&Path>,
    deadline: &Deadline,
    log: &LogPipe,
    usage: &mut ToolUsage,
) -> Result<i32, ToolError> {
    let path = search_path(grants);
    let reaped = policy.mode == Mode::Impure && invocation.guest_program.is_none();
    let mut command = match (policy.mode, &invocation.guest_program) {
        // A hermetic job is inside the Nix sandbox already, which holds only its inputs
        // and the store paths it was given: its tools run there as they are, and what
        // they leave dies with the build's pid namespace.
        (Mode::Hermetic, _) => on_host(&invocation, policy, &path, false)?,
        (Mode::Impure, None) => on_host(&invocation, policy, &path, true)?,
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
    // Its own process group, which is stopped as one: a tool's children too (`make`'s
    // compilers, a shell's commands). In bubblewrap (`--new-session`) the group is
    // bubblewrap's, whose sandbox dies with it.
    command.process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", invocation.program.display()))?;
    // Both pipes are drained on their own threads into the log, which drops what is past
    // its limit: a chatty tool never stalls on a full pipe, nor fills memory. A pipe held
    // open by something outside the tool's tree (given away over a socket) cannot stall
    // the job, which waits for the pipes only until its deadline.
    let (drained_tx, drained_rx) = mpsc::channel::<()>();
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as _),
        child.stderr.take().map(|p| Box::new(p) as _),
    ];
    for pipe in pipes.into_iter().flatten() {
        let (tx, log) = (drained_tx.clone(), log.clone());
        std::thread::spawn(move || {
            let mut pipe = pipe;
            let mut chunk = vec![0; PIPE_CHUNK];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => log.push(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
    }
    drop(drained_tx);
    let time_up = || {
        let why = if deadline.interrupted() {
            "the run was interrupted"
        } else {
            "the stage's wall-time limit is up"
        };
        format!("`{}` was killed: {why}", invocation.program.display())
    };
    let status = wait_until(&mut child, deadline, usage).ok_or_else(time_up)?;
    // The reaper never dies of a signal of its own accord (it blocks those that stop it):
    // killed, it no longer ends what the tool left, which may go on writing the job's output.
    if reaped && let Some(signal) = status.signal() {
        return Err(ToolError::ReaperKilled(format!(
            "the reaper of `{}` was killed by signal {signal}: a tool must not signal its \
             reaper, which ends what the tool leaves running; the job fails and keeps nothing",
            invocation.program.display()
        )));
    }
    for _ in 0..2 {
        match drained_rx.recv_timeout(deadline.remaining()) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(time_up().into()),
        }
    }
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// What the tools of one job used, over all their runs: from `wait4`, each tool's CPU
/// time and peak RSS with those of the descendants it waited for, through bubblewrap or
/// the reaper, whichever the tool ran under (theirs included).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ToolUsage {
    /// User and system CPU time, summed.
    pub cpu: Duration,
    /// The largest resident set of any one of them, in bytes. A host tool's reaper, a fork
    /// of repx, counts with repx's resident set at the fork (about 20 MiB): so that is the
    /// least an impure tool shows.
    pub peak_rss: u64,
}

impl ToolUsage {
    fn add(&mut self, usage: &libc::rusage) {
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        self.cpu += time(usage.ru_utime) + time(usage.ru_stime);
        // Linux gives it in KiB.
        self.peak_rss = self
            .peak_rss
            .max((usage.ru_maxrss.max(0) as u64).saturating_mul(1024));
    }
}

/// Why a tool's run gave no exit status.
#[derive(Debug)]
pub(crate) enum ToolError {
    /// Refused, not started, or stopped at the deadline: the plugin is told why.
    Refused(String),
    /// The tool's reaper was killed: what the tool started may have escaped it, so the job
    /// fails, whatever the plugin makes of it.
    ReaperKilled(String),
}

impl From<String> for ToolError {
    fn from(message: String) -> ToolError {
        ToolError::Refused(message)
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> ToolError {
        ToolError::Refused(message.to_string())
    }
}

/// How much of a tool's output is read at once.
const PIPE_CHUNK: usize = 64 * 1024;

/// A granted tool on the host, in the host directory of its guest cwd; `reaped`, under a
/// reaper of its own, which ends whatever the tool leaves running: the process `Command`
/// forks, which starts the tool in its place (see [`reaper`]).
fn on_host(
    invocation: &Invocation,
    policy: &Policy,
    path: &OsString,
    reaped: bool,
) -> Result<Command, String> {
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
    if reaped {
        // The tool's exact start, made here: the reaper, a fork of this process with its
        // threads, only reads it.
        let env = invocation
            .env
            .iter()
            .filter(|(key, _)| key != "PATH")
            .map(|(key, value)| (OsStr::new(key), OsStr::new(value)))
            .chain(std::iter::once((OsStr::new("PATH"), path.as_os_str())));
        let start = reaper::Start::new(
            invocation.program.as_os_str(),
            invocation.args.iter().map(OsStr::new),
            env,
            std::process::id(),
            STOP_GRACE,
        )
        .ok_or_else(|| {
            format!(
                "cannot start `{}`: a NUL byte in its arguments or environment",
                invocation.program.display()
            )
        })?;
        // SAFETY: `split` is made for a pre_exec closure: it starts the tool itself, and
        // the process exits without returning to `Command`.
        unsafe { command.pre_exec(move || reaper::split(&start)) };
    }
    Ok(command)
}

/// Waits for `child` to exit, adding what it used to `usage`, or stops it at `deadline`
/// (its wall time up, or the run interrupted) and returns `None`.
///
/// The wait sleeps in `poll(2)` on a pidfd of the child, which wakes the moment it exits:
/// no time is lost between the tool's end and the job's. It wakes at least every
/// [`WAIT_TICK`] to see an interrupt. A kernel without pidfds (before 5.3) gets a poll of
/// the child instead, at most a tick apart.
fn wait_until(child: &mut Child, deadline: &Deadline, usage: &mut ToolUsage) -> Option<ExitStatus> {
    let pidfd = Pidfd::open(child.id());
    let mut pause = Duration::from_micros(100);
    let pid = libc::pid_t::try_from(child.id()).ok();
    loop {
        match pid {
            Some(pid) if has_exited(pid) => return reap_with_usage(pid, usage),
            Some(_) => {}
            None => match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                Err(_) => return child.wait().ok(),
            },
        }
        let left = deadline.remaining();
        if left.is_zero() {
            stop(child);
            return None;
        }
        match &pidfd {
            Some(pidfd) => pidfd.wait(left.min(WAIT_TICK)),
            None => {
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(WAIT_TICK);
            }
        }
    }
}

/// How long a wait for a tool goes without looking at its deadline and the interrupt.
const WAIT_TICK: Duration = Duration::from_millis(10);

/// A pidfd of a child process: readable once the child has exited.
struct Pidfd(std::os::fd::OwnedFd);

impl Pidfd {
    fn open(pid: u32) -> Option<Pidfd> {
        use std::os::fd::FromRawFd;
        let pid = libc::pid_t::try_from(pid).ok()?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1. The
        // child is not reaped yet, so its pid is still its own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nothing else.
        Some(Pidfd(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    /// Returns once the child has exited, or after `at_most`.
    fn wait(&self, at_most: Duration) {
        use std::os::fd::AsRawFd;
        let mut fds = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = libc::c_int::try_from(at_most.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd; an error (EINTR) only ends this wait early.
        unsafe { libc::poll(&mut fds, 1, timeout) };
    }
}

/// How long a stopped tool's process group has, after SIGTERM, to exit on its own: `make`
/// and compilers delete the half-written targets they were making, which an impure
/// stage's next build would otherwise take as up to date.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long a stopped reaper has, beyond [`STOP_GRACE`], to kill and reap the tool's tree.
const REAP_GRACE: Duration = Duration::from_secs(3);

/// Stops `child`'s process group: SIGTERM, then SIGKILL to whatever is left after
/// [`STOP_GRACE`] and [`REAP_GRACE`]. On the host `child` is the tool's reaper, which kills
/// the tool's whole tree after the first; in pure mode it is bubblewrap, whose sandbox
/// dies with it.
fn stop(child: &mut Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    // SAFETY: plain system calls on the group `child` leads; `child` is not reaped until
    // the end, so its id, and with it the group's, cannot have been reused.
    unsafe { libc::kill(-pid, libc::SIGTERM) };
    let until = Instant::now() + STOP_GRACE + REAP_GRACE;
    while Instant::now() < until && !has_exited(pid) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.wait();
}

/// Reaps the exited child `pid` with `wait4`, for its resource usage, which `Child::wait`
/// does not give; the `Child` is not waited for afterwards.
fn reap_with_usage(pid: libc::pid_t, usage: &mut ToolUsage) -> Option<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: `used` is a plain C struct that `wait4` fills; zeroed is a valid value.
    let mut used: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for writes; `pid` is our exited, unreaped child.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut used) };
    if reaped != pid {
        return None;
    }
    usage.add(&used);
    Some(ExitStatus::from_raw(status))
}

/// Whether the child `pid` has exited, leaving it unreaped.
fn has_exited(pid: libc::pid_t) -> bool {
    // SAFETY: `info` is a plain C struct that `waitid` fills; zeroed is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is valid for writes; WNOWAIT leaves the child unreaped.
    let found = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
    // SAFETY: `waitid` filled `info` for a child that changed state (pid zero otherwise).
    found != 0 || unsafe { info.si_pid() } != 0
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
        // Every namespace: mounts, pids, network, IPC, hostname, cgroups.
        "--unshare-all",
        // A user namespace of its own, in which the tool is `nobody`. Without it, the
        // bubblewrap of a repx run as root leaves the tool root with nearly every
        // capability: `mount -o remount,rw` makes each read-only bind writable, `mknod`
        // reaches the host's disks.
        "--unshare-user",
        "--uid",
        SANDBOX_ID,
        "--gid",
        SANDBOX_ID,
        // No capability at all, not even inside its namespace (bubblewrap keeps them for
        // root), and no further user namespace, in which it would get them back.
        "--cap-drop",
        "ALL",
        "--disable-userns",
        // Its pid namespace dies with bubblewrap, and bubblewrap with repx: nothing the
        // tool starts outlives it.
        "--die-with-parent",
        // The tool is the namespace's pid 1 and bubblewrap's own child, which bubblewrap
        // waits for: so the `wait4` of bubblewrap gives the tool's CPU time and peak RSS.
        // With bubblewrap's init in between, bubblewrap returns the moment the init
        // reports the tool's exit, without waiting for the init, and what the tool used
        // is lost with it.
        "--as-pid-1",
        // No terminal to push input into (TIOCSTI), no signals from the job's session.
        "--new-session",
        "--clearenv",
    ]);
    // The host sees the tool as the user running repx: as root, uid 0 still passes the
    // kernel's checks made by uid rather than by capability, those of `/proc/sys` among
    // them (`kernel.core_pattern` runs a program as root). Read-only there, so that they
    // read only.
    c.args(["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys"]);
    c.args(["--dev", "/dev"]);
    // A granted tool's own directory that lies inside one of the job's mounts (a tool kept
    // under /tmp) goes on top of it, or the mount would hide the tool. Every other directory
    // goes below the job's mounts, which win: a tool in /tmp itself, or in /, must not
    // cover the job's scratch, inputs or output with the host's.
    let (under, over): (Vec<PathBuf>, Vec<PathBuf>) = sandbox_read_only(grants)
        .into_iter()
        .partition(|dir| is_system(dir) || !inside_a_mount(dir, policy));
    for dir in &under {
        match link_into(dir, &under) {
            Some(target) => c.arg("--symlink").arg(target).arg(dir),
            None => c.arg("--ro-bind").arg(dir).arg(dir),
        };
    }
    for mount in &policy.mounts {
        c.arg(if mount.writable {
            "--bind"
        } else {
            "--ro-bind"
        });
        c.arg(&mount.host).arg(&mount.guest);
    }
    for dir in &over {
        c.arg("--ro-bind").arg(dir).arg(dir);
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
        if !is_system(dir) && !dirs.iter().any(|d| d == dir) {
            dirs.push(dir.to_path_buf());
        }
    }
    dirs
}

/// For a directory that is a symbolic link into another of the sandbox's read-only
/// directories (`/bin` to `/usr/bin` on a merged-`/usr` system): where it leads, for the
/// sandbox to hold a link there instead of a bind. That link shows what the bind would,
/// read-only the same, and costs bubblewrap no mount, remount and reading of the mount
/// table (five of them on such a system).
fn link_into(dir: &Path, read_only: &[PathBuf]) -> Option<PathBuf> {
    if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return None;
    }
    let target = std::fs::canonicalize(dir).ok()?;
    // Into a directory bound as it is (no link on its way, not the link itself), whose
    // tree the sandbox shows whole: the link's target, free of links, resolves there as
    // it does here.
    read_only
        .iter()
        .any(|bound| {
            bound.as_path() != dir
                && target.starts_with(bound)
                && std::fs::canonicalize(bound).is_ok_and(|real| real == *bound)
        })
        .then_some(target)
}

/// Whether `dir` lies strictly inside the guest path of one of the job's mounts.
fn inside_a_mount(dir: &Path, policy: &Policy) -> bool {
    policy
        .mounts
        .iter()
        .any(|mount| dir != Path::new(&mount.guest) && dir.starts_with(&mount.guest))
}

/// Whether `dir` lies in one of the system directories every sandbox holds.
fn is_system(dir: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|s| dir.starts_with(s))
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
    fn a_system_directory_linked_into_a_bound_one_becomes_a_link() {
        let dir = std::env::temp_dir().join(format!("repx-link-into-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
        std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
        let dir = dir.canonicalize().unwrap();
        std::os::unix::fs::symlink("usr/bin", dir.join("bin")).unwrap();
        std::os::unix::fs::symlink("elsewhere", dir.join("away")).unwrap();
        let usr = dir.join("usr");
        assert_eq!(
            link_into(&dir.join("bin"), &[usr.clone(), dir.join("bin")]),
            Some(dir.join("usr/bin"))
        );
        // Not a link, a link out of every bound directory, a link to itself only: bound.
        assert_eq!(link_into(&usr, std::slice::from_ref(&usr)), None);
        assert_eq!(
            link_into(&dir.join("away"), std::slice::from_ref(&usr)),
            None
        );
        assert_eq!(link_into(&dir.join("bin"), &[dir.join("bin")]), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resolves_tools_on_the_given_path_only() {
        let path = OsString::from("/usr/bin:/bin");
        let sh = resolve("sh", Path::new("/"), Some(&path), digest).unwrap();
        assert!(sh.path.ends_with("sh"));
        assert_eq!(sh.digest.len(), 64);
        let err = resolve(
            "sh",
            Path::new("/"),
            Some(&OsString::from("/nonexistent")),
            digest,
        )
        .unwrap_err();
        assert!(err.contains("not an executable on PATH"), "{err}");
    }
}
