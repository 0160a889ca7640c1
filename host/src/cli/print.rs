//! Writing to stdout and stderr without panicking.
//!
//! `println!` panics when its stream is gone: a pipe whose reader left (`repx list jobs |
//! head -1`), or a terminal that hung up (after SIGHUP a write fails with EIO), and the
//! panic would end an interrupted run with 101 instead of 130. So the CLI writes with
//! `outln!`, `out!` and `errln!` instead:
//! - a failed write to stderr is dropped: there is nowhere left to say anything;
//! - the first failed write to stdout is kept and every later one skipped, and [`finish`]
//!   turns it into the exit code: a closed pipe ends quietly, with the command's own code;
//!   any other error is said on stderr, and a command that had succeeded fails.

use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;

/// The first write to stdout that failed.
static STDOUT_FAILED: OnceLock<io::Error> = OnceLock::new();

/// Writes to stdout, unless a write to it failed before.
pub fn out(args: fmt::Arguments) {
    if STDOUT_FAILED.get().is_some() {
        return;
    }
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        let _ = STDOUT_FAILED.set(e);
    }
}

/// Writes to stderr, dropping a failure.
pub fn err(args: fmt::Arguments) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// The exit code of a command that returned `code`, given how its writes to stdout went.
pub fn finish(code: i32) -> i32 {
    if STDOUT_FAILED.get().is_none() {
        // What is still buffered may fail too.
        if let Err(e) = io::stdout().lock().flush() {
            let _ = STDOUT_FAILED.set(e);
        }
    }
    match STDOUT_FAILED.get() {
        None => code,
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
        Some(e) => {
            err(format_args!("error: writing to stdout: {e}\n"));
            if code == super::exit::SUCCESS {
                super::exit::FAILED
            } else {
                code
            }
        }
    }
}

/// `println!` to stdout without the panic; see the module's docs.
macro_rules! outln {
    () => {
        $crate::cli::print::out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::print::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` to stdout without the panic.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::print::out(format_args!($($arg)*))
    };
}

/// `eprintln!` without the panic.
macro_rules! errln {
    () => {
        $crate::cli::print::err(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::print::err(format_args!("{}\n", format_args!($($arg)*)))
    };
}
