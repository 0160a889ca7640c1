//! One plain line per finished job on stderr: for logs, pipes and CI.

use std::io::Write;
use std::sync::Mutex;

use super::{Context, event_line, summary_line};
use crate::sched::{Event, Summary};

pub struct Lines {
    pub(super) context: Context,
    out: Mutex<std::io::Stderr>,
}

impl Lines {
    pub fn new(context: Context) -> Lines {
        Lines {
            context,
            out: Mutex::new(std::io::stderr()),
        }
    }

    pub fn event(&self, event: &Event) {
        if let Some(line) = event_line(&self.context.jobs(), event) {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(out, "{line}");
        }
    }

    pub fn summary(&self, summary: &Summary) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{}", summary_line(summary));
    }
}
