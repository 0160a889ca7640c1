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
//! [`split`] starts the tool with `posix_spawn` (a `vfork`, no copy of the process) and
//! stays behind as its reaper until it exits. No second exec of the 37 MB repx binary per
//! tool. The reaper is a fork of a process with threads, so it does only what such a
//! child may: system calls, with everything the tool's start needs (its path, arguments
//! and environment, the message should it not start) made before the fork; only when the
//! tool left processes behind does it allocate, to list them from `/proc`, which the C
//! library's `fork` (glibc's, musl's) allows: it takes the allocator's locks around the
//! fork and leaves them free in the child. No lock of repx's is taken. It holds
//! none of repx's descriptors but the tool's three streams, and the tool none at all
//! beyond them (all are made close-on-exec before its start): a pipe of another job's tool
//! kept open here would keep that job waiting for its end.
//!
//! Stopping: SIGTERM, SIGINT or SIGHUP (repx stops the tool's process group at the job's
//! deadline; the kernel sends SIGTERM when repx dies) makes the reaper pass SIGTERM to its
//! process group, wait up to the given grace for the tool, then kill the whole tree as
//! above. The reaper never dies of those signals, so a stopped tool's orphans still come
//! to it.

use std::ffi::{CString, OsStr, c_char};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

/// A tool's start, made before the fork: [`split`] only reads it.
pub struct Start {
    /// Kept for the pointers below, which point into them.
    _strings: Vec<CString>,
    program: *const c_char,
    /// `argv` and `envp`, each ending with a null pointer.
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// Written to the tool's stderr should it not start, then what the error number means.
    cannot_start: Vec<u8>,
    /// repx's pid: if repx is gone already, the tool is not started.
    parent: u32,
    grace: Duration,
}

// SAFETY: the pointers point into `_strings`, owned alongside and never changed; the
// value is only read, by the process `Command` forks.
unsafe impl Send for Start {}
// SAFETY: as above.
unsafe impl Sync for Start {}

impl Start {
    /// `program` with `args` and exactly the environment `env`; `None` if any holds a NUL.
    pub fn new<'a>(
        program: &OsStr,
        args: impl Iterator<Item = &'a OsStr>,
        env: impl Iterator<Item = (&'a OsStr, &'a OsStr)>,
        parent: u32,
        grace: Duration,
    ) -> Option<Start> {
        let program = CString::new(program.as_bytes()).ok()?;
        let argv: Vec<CString> = std::iter::once(Ok(program.clone()))
            .chain(args.map(|a| CString::new(a.as_bytes())))
            .collect::<Result<_, _>>()
            .ok()?;
        let envp: Vec<CString> = env
            .map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<Result<_, _>>()
            .ok()?;
        let pointers = |strings: &[CString]| {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let cannot_start =
            format!("repx: cannot start `{}`: ", program.to_string_lossy()).into_bytes();
        let (argv_p, envp_p) = (pointers(&argv), pointers(&envp));
        let mut strings = vec![program];
        strings.extend(argv);
        strings.extend(envp);
        Some(Start {
            program: strings[0].as_ptr(),
            _strings: strings,
            argv: argv_p,
            envp: envp_p,
            cannot_start,
            parent,
            grace,
        })
    }
}

/// Run by `Command` in the child it forked for a tool, in place of the tool's exec:
/// makes this process the tool's reaper (see the module doc), starts the tool, and exits
/// with its exit code, 128 + the signal that ended it, or 127 when it could not start
/// (saying why on the tool's stderr). Never returns.
///
/// # Safety
/// Only in a `Command::pre_exec` closure: it exits the process it runs in.
pub unsafe fn split(start: &Start) -> ! {
    let signals = stop_signals();
    // SAFETY: plain system calls on this process; `signals` is a valid set.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
        libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut());
    }
    // Set after the death signal, so that repx dying in between is seen either way.
    // SAFETY: plain system calls; this process exits without returning to `Command`.
    if unsafe { libc::getppid() } as u32 != start.parent {
        unsafe { libc::_exit(128 + libc::SIGTERM) };
    }
    // Nothing of repx's but the three streams reaches the tool: not even a descriptor
    // without close-on-exec, as one inherited by repx, or one a library's fork handler
    // reopened in this process (wasmtime's `dup2` of its pagemap clears the flag).
    close_on_exec_from(3);
    let code = match spawn(start) {
        Ok(tool) => {
            close_from(3);
            reap_tree(tool, &signals, start.grace)
        }
        Err(errno) => {
            write_all(2, &start.cannot_start);
            write_all(2, describe(errno));
            write_all(2, b" (os error ");
            write_all(2, decimal(errno, &mut [0; 10]));
            write_all(2, b")\n");
            127
        }
    };
    // SAFETY: leaves without running repx's exit handlers or destructors, which belong to
    // the process this one was forked from.
    unsafe { libc::_exit(code) }
}

/// Starts the tool with no signal blocked and every signal at its default action, as
/// `Command` would; returns its pid, or the error number.
fn spawn(start: &Start) -> Result<libc::pid_t, i32> {
    // SAFETY: the attributes are initialised before use and destroyed after; the sets are
    // made by `sigemptyset`/`sigfillset`; `program`, `argv` and `envp` point into strings
    // `start` owns, the arrays end with a null pointer.
    unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        if libc::posix_spawnattr_init(&mut attr) != 0 {
            return Err(libc::ENOMEM);
        }
        let (mut none, mut all): (libc::sigset_t, libc::sigset_t) =
            (std::mem::zeroed(), std::mem::zeroed());
        libc::sigemptyset(&mut none);
        libc::sigfillset(&mut all);
        libc::posix_spawnattr_setsigmask(&mut attr, &none);
        libc::posix_spawnattr_setsigdefault(&mut attr, &all);
        libc::posix_spawnattr_setflags(
            &mut attr,
            (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
        );
        let mut pid = 0;
        let failed = libc::posix_spawn(
            &mut pid,
            start.program,
            std::ptr::null(),
            &attr,
            start.argv.as_ptr() as *const *mut c_char,
            start.envp.as_ptr() as *const *mut c_char,
        );
        libc::posix_spawnattr_destroy(&mut attr);
        match failed {
            0 => Ok(pid),
            errno => Err(errno),
        }
    }
}

/// What an error number of `posix_spawn` means, in the words Rust's `io::Error` uses, from
/// a table: the C library's `strerror` may take a lock (its message catalogues), which a
/// fork of a process with threads must not.
fn describe(errno: i32) -> &'static [u8] {
    match errno {
        libc::ENOENT => b"No such file or directory",
        libc::EACCES => b"Permission denied",
        libc::ENOEXEC => b"Exec format error",
        libc::ENOTDIR => b"Not a directory",
        libc::EISDIR => b"Is a directory",
        libc::ELOOP => b"Too many levels of symbolic links",
        libc::ENAMETOOLONG => b"File name too long",
        libc::ETXTBSY => b"Text file busy",
        libc::E2BIG => b"Argument list too long",
        libc::ENOMEM => b"Cannot allocate memory",
        libc::EAGAIN => b"Resource temporarily unavailable",
        libc::EPERM => b"Operation not permitted",
        _ => b"error",
    }
}

/// `n` (not negative) in decimal, without allocating.
fn decimal(mut n: i32, digits: &mut [u8; 10]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || at == 0 {
            return &digits[at..];
        }
    }
}

fn write_all(fd: libc::c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length.
        let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if written <= 0 {
            return;
        }
        bytes = &bytes[written as usize..];
    }
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
    for_each_from(first, 0, |fd| {
        // SAFETY: closing a descriptor not open does nothing.
        unsafe { libc::close(fd) };
    });
}

/// Marks every descriptor from `first` on close-on-exec.
fn close_on_exec_from(first: libc::c_uint) {
    for_each_from(first, libc::CLOSE_RANGE_CLOEXEC, |fd| {
        // SAFETY: F_SETFD on a descriptor not open fails and does nothing.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    });
}

/// `close_range(2)` of every descriptor from `first` on with `flags`; on a kernel without
/// it (before 5.9, or 5.11 for `CLOSE_RANGE_CLOEXEC`), `one` on each descriptor up to the
/// limit on descriptors.
fn for_each_from(first: libc::c_uint, flags: libc::c_uint, one: impl Fn(libc::c_int)) {
    // SAFETY: close_range(2) takes two descriptor numbers and flags; it only closes or,
    // with CLOSE_RANGE_CLOEXEC, sets the flag.
    let done = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, flags) };
    if done == 0 {
        return;
    }
    // SAFETY: an all-zero `rlimit` is a valid value, and `limit` is valid for writes.
    let limit = unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit
    };
    let last = libc::c_int::try_from(limit.rlim_cur).unwrap_or(1 << 20);
    (first as libc::c_int..last).for_each(one);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_numbers_are_written_in_decimal() {
        assert_eq!(decimal(0, &mut [0; 10]), b"0");
        assert_eq!(decimal(13, &mut [0; 10]), b"13");
        assert_eq!(decimal(i32::MAX, &mut [0; 10]), b"2147483647");
    }

    #[test]
    fn a_start_is_refused_with_a_nul_byte() {
        let start = |arg: &str, value: &str| {
            Start::new(
                OsStr::new("/bin/true"),
                [OsStr::new(arg)].into_iter(),
                [(OsStr::new("A"), OsStr::new(value))].into_iter(),
                1,
                Duration::ZERO,
            )
        };
        let ok = start("x", "y").unwrap();
        assert_eq!((ok.argv.len(), ok.envp.len()), (3, 2));
        assert!(ok.argv[2].is_null() && ok.envp[1].is_null());
        assert!(start("x\0", "y").is_none());
        assert!(start("x", "y\0").is_none());
    }
}
