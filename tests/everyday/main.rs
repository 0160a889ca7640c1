//! Day to day use, as a new user meets it: the real `repx` binary on small labs.
//!
//! - `strict`: a lab file says what it means or is refused: unknown keys, no runs.
//! - `docs`: the README's commands, the lab reference against the parser's keys, the help.
//! - `errors`: errors said once and rightly.
//! - `stages`: stages as targets, and `--stage`, `--status`, `--param` filters.
//! - `verbs`: `gc pin|unpin`, `cache list|stats|clear`, `log -f`.
//! - `debug`: `repx debug JOB`, its trace and what it leaves alone.
//! - `tui`: `repx tui` under tmux: the tree, the filter, running, the log, cancelling.
//! - `fanout`: a stage run once per item of a list a job writes (`examples/scatter`).
//! - `progress`: quiet no-ops (a count per stage, `-v` for each job), labels that keep the
//!   swept parameters, plain lines on a terminal of unknown width, `--progress`, "running"
//!   within `-j`, timestamps on JSON events.
//! - `adhoc`: `repx run --plugin`: its output, `log` and `show` without a lab, `--force-out`.
//!
//! - `flake`: the impure example built into a lab directory by Nix, and run from there.
//!
//! Needs the plugins (`scripts/build-plugins`); `flake` needs Nix and git (`scripts/nix-setup`), `tui` tmux
//! (`scripts/setup-tests`).

#[path = "../common/mod.rs"]
mod common;

mod adhoc;
mod debug;
mod docs;
mod errors;
mod fanout;
mod flake;
mod progress;
mod stages;
mod strict;
mod tui;
mod verbs;

/// `repx`'s exit code for an invalid lab or command line.
const INVALID: i32 = 2;
