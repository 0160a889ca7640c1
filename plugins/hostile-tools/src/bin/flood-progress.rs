//! Attack: report progress as complete (`progress(total, total)`) and log a line in a tight
//! loop, `calls` times. Each call is cheap for the plugin; what repx makes of it (JSON
//! events on stdout, lines on the terminal, events files under SLURM) must stay bounded by
//! a rate, not by the number of calls. The job itself succeeds.
//!
//! Parameters: `calls` (default 1,000,000).

use repx_guest::Level;

fn main() {
    repx_guest::run(|_| {
        let calls: u64 = hostile::param("calls")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        for i in 0..calls {
            repx_guest::progress(calls, calls);
            repx_guest::log(Level::Info, "x");
            if i % 1000 == 0 {
                repx_guest::log(Level::Warn, "flood");
            }
        }
        Ok(())
    })
}
