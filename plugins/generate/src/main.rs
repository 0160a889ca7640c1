//! Example stage: generates a smooth series as `/out/data.csv` (`i,value` with
//! value = sin(i/10) + 2).
//!
//! Parameters:
//! - `n` (int, default 100): the number of rows.

use std::fmt::Write as _;

use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    #[serde(default = "default_n")]
    n: u32,
}

fn default_n() -> u32 {
    100
}

fn main() {
    repx_guest::run(|ctx| {
        let p: Params = ctx.params()?;
        let mut csv = String::from("i,value\n");
        for i in 0..p.n {
            let value = (f64::from(i) / 10.0).sin() + 2.0;
            // `{}` prints the shortest representation that parses back to the same f64.
            writeln!(csv, "{i},{value}")?;
        }
        std::fs::write(ctx.out().join("data.csv"), csv)?;
        Ok(())
    })
}
