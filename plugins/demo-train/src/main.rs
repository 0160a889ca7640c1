//! Demonstration stage that takes a while and says how far it is: it "trains" for `steps`
//! steps of busy work, reporting progress after each, and writes `/out/metrics.json`
//! (`loss`, `accuracy`, made up from the parameters). `scripts/screenshots` uses it to
//! show `repx run`'s progress bars.
//!
//! Parameters:
//! - `seed` (int, default 1), `lr` (float, default 0.1): shape the made-up metrics.
//! - `steps` (int, default 40): progress reports.
//! - `work` (int, default 20000000): rounds of busy work per step.

use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    #[serde(default = "one")]
    seed: u64,
    #[serde(default = "default_lr")]
    lr: f64,
    #[serde(default = "default_steps")]
    steps: u64,
    #[serde(default = "default_work")]
    work: u64,
}

fn one() -> u64 {
    1
}
fn default_lr() -> f64 {
    0.1
}
fn default_steps() -> u64 {
    40
}
fn default_work() -> u64 {
    20_000_000
}

fn main() {
    repx_guest::run(|ctx| {
        let p: Params = ctx.params()?;
        let mut state = p.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for step in 0..p.steps {
            for _ in 0..p.work {
                // xorshift64: work the optimiser cannot skip.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
            }
            repx_guest::progress(step + 1, p.steps);
        }
        let noise = (state % 1000) as f64 / 1e5;
        let loss = (p.lr.ln() - 0.05f64.ln()).abs() / 4.0 + 0.1 + noise;
        let metrics = format!(
            "{{\"loss\": {loss:.4}, \"accuracy\": {:.4}}}\n",
            (1.0 - loss / 2.0).clamp(0.0, 1.0)
        );
        std::fs::write(ctx.out().join("metrics.json"), metrics)?;
        Ok(())
    })
}
