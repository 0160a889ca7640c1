//! The exit codes of `repx`, in one place.

/// Every job succeeded (or was cached).
pub const SUCCESS: i32 = 0;
/// Some job failed, or something went wrong while running.
pub const FAILED: i32 = 1;
/// The lab file or the command line is invalid; nothing ran.
pub const INVALID: i32 = 2;
/// The run was interrupted (Ctrl-C); nothing half-written was committed.
pub const INTERRUPTED: i32 = 130;
