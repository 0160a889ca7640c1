//! Write RepX stages in Rust.
//!
//! A stage is a function from a [`Context`] to a result; [`run`] turns it into the
//! plugin's `main`. The context gives typed parameters, input and output paths, and the
//! host functions of the `repx:stage` world (granted tools, log lines, progress).
//!
//! ```no_run
//! #[derive(serde::Deserialize)]
//! struct Params { n: u32 }
//!
//! fn main() {
//!     repx_guest::run(|ctx| {
//!         let p: Params = ctx.params()?;
//!         std::fs::write(ctx.out().join("n.txt"), p.n.to_string())?;
//!         Ok(())
//!     })
//! }
//! ```

mod bindings {
    wit_bindgen::generate!({ world: "stage", path: "wit" });
}

mod context;
mod inputs;
mod suggest;
mod tool;

pub use context::{Context, GatherEntry, Mode};
pub use tool::Tool;

use bindings::repx::stage::host;

/// What a stage returns; any error becomes a failed job with its message in the log.
pub type Result<T, E = Error> = std::result::Result<T, E>;
/// Any error a stage may return.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs `stage` as the plugin's main: exit status 0 on success, 1 with the error on stderr.
pub fn run(stage: impl FnOnce(&Context) -> Result<()>) -> ! {
    let outcome = Context::from_env().and_then(|ctx| stage(&ctx));
    match outcome {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1)
        }
    }
}

/// Log levels of [`log`].
pub use host::Level;

/// Writes one line to the job log; `Warn` and `Error` are also shown by the CLI.
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// Reports progress: `done` of `total` units.
pub fn progress(done: u64, total: u64) {
    host::progress(done, total);
}
