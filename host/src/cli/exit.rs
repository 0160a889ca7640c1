//! The exit codes of `repx`, in one place (the README lists them too).

/// Every job succeeded (or was cached).
pub const SUCCESS: i32 = 0;
/// Some job failed, or something went wrong while running.
pub const FAILED: i32 = 1;
/// The lab file or the command line is invalid; nothing ran.
pub const INVALID: i32 = 2;
/// The store could not be read or written (a full disk, a read-only filesystem, a
/// permission): what was committed before stays, and nothing half-written counts.
pub const STORE: i32 = 3;
/// The run was interrupted (Ctrl-C, SIGTERM, a terminal that hung up); nothing
/// half-written was committed.
pub const INTERRUPTED: i32 = 130;
