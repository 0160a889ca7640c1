//! The process a tool runs under on the host, which outlives every process the tool starts
//! and ends them all when the tool returns.
//!
//! A tool run on the host (an impure job's) may leave processes behind: a `setsid` child, a double fork, a daemon. They would go on
//! writing the project or the job's output after the job was committed. repx runs each such
//! tool under a reaper of its own, a process that is the tool's parent and the *child
//! subreaper* of everything below it (`PR_SET_CHILD_SUBREAPER`): an orphan of the tool's
//! tree is re-parented to it, not to init, whatever session or process group it made for
//! itself. Once the tool has exited, the reaper kills what is left of the tree, reaps it
//! and exits with the tool's status.
//!
//! One reaper per tool keeps the tree of each job apart from those of the others, which
//! run beside it in the one repx process; repx itself stays the parent of nothing but its
//! reapers and bubblewrap (whose pid namespace does the same for sandboxed tools).
//!
//! The reaper is the child `Command` forks to run the tool, not a program of its own: in
//! that child, once it has the tool's standard streams, directory and process group,
//! [`split`] forks the tool's process, which goes on to exec the tool, and stays behind as
//! its reaper until it exits. No second exec of the 37 MB repx binary per tool. The
//! reaper is a fork of a process with threads, so it does only what such a child may: system calls, and
//! the allocator of the C library, whose `fork` (glibc's and musl's) leaves it usable in
//! the child. It holds none of repx's descriptors but the tool's three streams: a pipe of
//! another job's tool kept open here would keep that job waiting for its end.
//!
//! Stopping: SIGTERM, SIGINT or SIGHUP (repx stops the tool's process group at the job's
//! deadline; the kernel sends SIGTERM when repx dies) makes the reaper pass SIGTERM to its
//! process group, wait up to the given grace for the tool, then kill the whole tree as
//! above. The reaper never dies of those signals, so a stopped tool's orphans still come
//! to it.

use std::time::{Duration, Instant};

/// Run by `Command` in the child it forked for a tool, just before it execs the tool:
/// makes this process the tool's reaper (see the module doc) and forks the process that
/// returns, to exec the tool. This one never returns: it reaps the tool's tree and exits
/// with the tool's exit code, 128 + the signal that ended it, or 1 when the exec failed
/// (which `Command::spawn` then reports). `parent` is repx's pid: if repx is gone
/// already, the tool is not started.
///
/// # Safety
/// Only in a `Command::pre_exec` closure: it forks, and exits the process it runs in.
pub unsafe fn split(parent: u32, grace: Duration) -> std::io::Result<()> {
    let signals = stop_signals();
    // SAFETY: plain system calls on this process; `signals` is a valid set.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
        libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut());
    }
    // Set after the death signal, so that repx dying in between is seen either way.
    // SAFETY: plain system calls; this process exits without returning to `Command`.
    if unsafe { libc::getppid() } as u32 != parent {
        unsafe { libc::_exit(128 + libc::SIGTERM) };
    }
    // SAFETY: the new process only unblocks signals and returns to `Command`, which execs.
    let tool = unsafe { libc::fork() };
    if tool < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if tool == 0 {
        // The tool starts with no signal blocked and default dispositions, as `Command`
        // leaves them (the exec resets repx's handlers).
        // SAFETY: an empty set, made by `sigemptyset`.
        unsafe {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        }
        return Ok(());
    }
    close_from(3);
    let code = reap_tree(tool, &signals, grace);
    // SAFETY: leaves without running repx's exit handlers or destructors, which belong to
    // the process this one was forked from.
    unsafe { libc::_exit(code) }
}

/// Waits for `tool` to exit or for a signal to stop, then kills and reaps what is left of
/// the tree; returns the exit code to leave with.
fn reap_tree(tool: libc::pid_t, signals: &libc::sigset_t, grace: Duration) -> i32 {
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
        if let Some(signal) = next_signal(signals, wait)
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

/// Closes every descriptor from `first` on.
fn close_from(first: libc::c_uint) {
    // SAFETY: close_range(2) takes two descriptor numbers and flags; it closes only.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) };
    if closed != 0 {
        // A kernel before 5.9: one by one, up to the limit on descriptors.
        // SAFETY: `limit` is valid for writes; closing a descriptor not open does nothing.
        unsafe {
            let mut limit: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            let last = libc::c_int::try_from(limit.rlim_cur).unwrap_or(1 << 20);
            for fd in first as libc::c_int..last {
                libc::close(fd);
            }
        }
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
