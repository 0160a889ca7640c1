//! Plain lines on stderr, for logs, pipes, CI and terminals of unknown width: one per job
//! that ran or failed, the cached ones counted per stage at the end. Quiet, they are only
//! the failures and warnings.

use std::io::Write;
use std::sync::Mutex;

use super::{Cached, Context, event_line, summary_line};
use crate::sched::{Event, Summary};

pub struct Lines {
    pub(super) context: Context,
    /// Only failures and warnings (`--progress none`).
    quiet: bool,
    state: Mutex<(std::io::Stderr, Cached)>,
}

impl Lines {
    pub fn new(context: Context, quiet: bool) -> Lines {
        Lines {
            context,
            quiet,
            state: Mutex::new((std::io::stderr(), Cached::default())),
        }
    }

    pub fn event(&self, event: &Event) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let shown = match event {
            Event::JobCached { job, .. } => {
                state.1.add(&self.context, *job);
                self.context.verbose && !self.quiet
            }
            Event::JobFailed { .. } | Event::Warning { .. } | Event::JobRetried { .. } => true,
            _ => !self.quiet,
        };
        if !shown {
            return;
        }
        if let Some(line) = event_line(&self.context, event) {
            let _ = writeln!(state.0, "{line}");
        }
    }

    pub fn summary(&self, summary: &Summary) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (out, cached) = &mut *state;
        if !self.context.verbose && !self.quiet {
            for line in cached.lines() {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = writeln!(out, "{}", summary_line(summary));
    }
}
