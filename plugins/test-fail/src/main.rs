//! Test plugin: writes 30 numbered lines ("line N") to stderr, then exits with a chosen
//! status, so tests can check failure reporting and the stderr tail.
//!
//! Parameters:
//! - `code` (int, default 3): the exit status.

use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    #[serde(default = "default_code")]
    code: i32,
}

fn default_code() -> i32 {
    3
}

fn main() {
    repx_guest::run(|ctx| {
        let p: Params = ctx.params()?;
        for n in 1..=30 {
            eprintln!("line {n}");
        }
        std::process::exit(p.code)
    })
}
