//! `{name}`: a RepX stage.
//!
//! It sees its inputs read-only at `/in/<name>`, writes its output to `/out`, may use
//! `/tmp`, and gets its parameters from the lab (`params = { … }`) as JSON.
//!
//! Parameters:
//! - `n` (int, default 10): how many squares to write.

use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    #[serde(default = "default_n")]
    n: u64,
}

fn default_n() -> u64 {
    10
}

fn main() {
    repx_guest::run(|ctx| {
        let p: Params = ctx.params()?;
        let mut csv = String::from("i,square\n");
        let mut sum = 0;
        for i in 0..p.n {
            csv.push_str(&format!("{i},{}\n", i * i));
            sum += i * i;
            // Shown in `repx run`'s progress bars.
            repx_guest::progress(i + 1, p.n);
        }
        std::fs::write(ctx.out().join("squares.csv"), csv)?;
        // The numbers in metrics.json become columns of `repx results`.
        std::fs::write(ctx.out().join("metrics.json"), format!("{{\"sum\": {sum}}}\n"))?;
        Ok(())
    })
}
