//! The process a tool runs under on the host (`repx reap-tool`), which outlives every
//! process the tool starts and ends them all when the tool returns.
//!
//! A tool run on the host (an impure job's) may leave processes behind: a `setsid` child, a double fork, a daemon. They would go on
//! writing the project or the job's output after the job was committed. repx runs each such
//! tool under a reaper of its own, a second repx process that is the tool's parent and
//! the *child subreaper* of everything below it (`PR_SET_CHILD_SUBREAPER`): an orphan of
//! the tool's tree is re-parented to it, not to init, whatever session or process group it
//! made for itself. Once the tool has exited, the reaper kills what is left of the tree,
//! reaps it and exits with the tool's status.
//!
//! One reaper per tool keeps the tree of each job apart from those of the others, which
//! run beside it in the one repx process; repx itself stays the parent of nothing but its
//! reapers and bubblewrap (whose pid namespace does the same for sandboxed tools).
//!
//! Stopping: SIGTERM, SIGINT or SIGHUP (repx stops the tool's process group at the job's
//! deadline; the kernel sends SIGTERM when repx dies) makes the reaper pass SIGTERM to its
//! process group, wait up to the given grace for the tool, then kill the whole tree as
//! above. The reaper never dies of those signals, so a stopped tool's orphans still come
//! to it.

use std::ffi::OsString;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `program` with `args` under this process as reaper (see the module doc), and
/// returns the exit code to leave with: the tool's, 128 + the signal that ended it, or 127
/// when it could not start. `parent` is repx's pid: if repx is gone already, the tool is
/// not started.
pub fn main(parent: u32, program: &OsString, args: &[OsString], grace: Duration) -> i32 {
    let signals = stop_signals();
    // SAFETY: plain system calls on this process; `signals` is a valid set.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
        libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut());
    }
    // Set after the death signal, so that repx dying in between is seen either way.
    // SAFETY: a plain system call.
    if unsafe { libc::getppid() } as u32 != parent {
        return 128 + libc::SIGTERM;
    }
    // The child's signal mask is cleared by `Command`, its dispositions are the defaults.
    let tool = match Command::new(program).args(args).spawn() {
        Ok(child) => child.id() as libc::pid_t,
        Err(e) => {
            eprintln!("repx: cannot start `{}`: {e}", program.to_string_lossy());
            return 127;
        }
    };
    let mut status = None;
    let mut stop_by: Option<Instant> = None;
    while status.is_none() && stop_by.is_none_or(|at| Instant::now() < at) {
        reap(tool, &mut status);
        if status.is_some() {
            break;
        }
        let wait = stop_by.map_or(Duration::from_secs(1), |at| {
            at.saturating_duration_since(Instant::now())
        });
        if let Some(signal) = next_signal(&signals, wait)
            && signal != libc::SIGCHLD
            && stop_by.is_none()
        {
            stop_by = Some(Instant::now() + grace);
            // SAFETY: SIGTERM to this process's group: the tool and whatever stayed in it
            // (this process has it blocked).
            unsafe { libc::kill(0, libc::SIGTERM) };
        }
    }
    kill_tree(tool, &mut status);
    match status {
        Some(s) if libc::WIFEXITED(s) => libc::WEXITSTATUS(s),
        Some(s) if libc::WIFSIGNALED(s) => 128 + libc::WTERMSIG(s),
        _ => 128 + libc::SIGKILL,
    }
}

/// The signals that ask the reaper to stop, and SIGCHLD, which wakes it when a child exits.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: `sigemptyset` initialises the set; the others add valid signals to it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Waits up to `wait` for one of the blocked `signals`.
fn next_signal(signals: &libc::sigset_t, wait: Duration) -> Option<libc::c_int> {
    let timeout = libc::timespec {
        tv_sec: wait.as_secs() as _,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `signals` and `timeout` are valid; no siginfo is asked for.
    let signal = unsafe { libc::sigtimedwait(signals, std::ptr::null_mut(), &timeout) };
    (signal > 0).then_some(signal)
}

/// Reaps every child that has exited, noting the tool's status. Returns whether any child
/// is left.
fn reap(tool: libc::pid_t, status: &mut Option<libc::c_int>) -> bool {
    loop {
        let mut raw = 0;
        // SAFETY: `raw` is valid for writes.
        match unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) } {
            0 => return true,
            pid if pid < 0 => return false,
            pid => {
                if pid == tool {
                    *status = Some(raw);
                }
            }
        }
    }
}

/// Kills every process below this one and reaps them, until none is left.
fn kill_tree(tool: libc::pid_t, status: &mut Option<libc::c_int>) {
    // SAFETY: a plain system call.
    let me = unsafe { libc::getpid() };
    while reap(tool, status) {
        for pid in descendants(me) {
            // SAFETY: a signal to a process of this tree: a descendant is not reaped, and
            // its pid not reused, before this process or its parent reaps it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The processes below `root`, found by their parents in `/proc`. One that dies in the
/// meantime is simply missing; its children are then this process's own.
fn descendants(root: libc::pid_t) -> Vec<libc::pid_t> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // `pid (comm) state ppid …`, where comm may hold anything but ends at the last `)`.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<libc::pid_t>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        next += 1;
    }
    found.remove(0);
    found
}
