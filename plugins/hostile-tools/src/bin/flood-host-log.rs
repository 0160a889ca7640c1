//! Attack: write far more than the log limit through the host's `log` function, 1 MiB per
//! call: `calls` lines at level info, then `warnings` lines at level warn, which the CLI
//! also shows. The job's host log, repx's memory and what repx prints must all stay
//! bounded; the job itself succeeds.
//!
//! Parameters: `calls` (default 512), `warnings` (default 64).

use repx_guest::Level;

fn main() {
    repx_guest::run(|_| {
        let number = |name: &str, default: usize| {
            hostile::param(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let line = "l".repeat(1 << 20);
        for _ in 0..number("calls", 512) {
            repx_guest::log(Level::Info, &line);
        }
        for _ in 0..number("warnings", 64) {
            repx_guest::log(Level::Warn, &line);
        }
        Ok(())
    })
}
