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
    wit_bindgen::generate!({ world: "stage", path: "wit", generate_all });
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
            exit(1)
        }
    }
}

/// Ends the job with exit status `code`, which `repx run` reports as is. (`std::process::exit`
/// reports any failure as 1: WASI 0.2's `exit` carries only success or failure.)
pub fn exit(code: u8) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    bindings::wasi::cli::exit::exit_with_code(code);
    unreachable!("exit-with-code returned")
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
