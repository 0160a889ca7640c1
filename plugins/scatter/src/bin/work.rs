//! Example stage of a fan-out: one job per item of `scatter-split`'s list. Writes
//! `/out/result.json`: `{"name", "value"}` with the item's value raised to `power`, and
//! `/out/parts.json`, a list for a further fan-out: `{"name": "NAME.I", "value": VALUE}`
//! for I from 0 while under the item's value, at most 3.
//!
//! Parameters:
//! - `item.name` (string), `item.value` (float): the item's fields.
//! - `power` (integer, default 2).

use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    #[serde(rename = "item.name")]
    name: String,
    #[serde(rename = "item.value")]
    value: f64,
    #[serde(default = "two")]
    power: i32,
}

fn two() -> i32 {
    2
}

fn main() {
    repx_guest::run(|ctx| {
        let p: Params = ctx.params()?;
        let result = serde_json::json!({ "name": p.name, "value": p.value.powi(p.power) });
        std::fs::write(ctx.out().join("result.json"), result.to_string())?;
        let parts: Vec<serde_json::Value> = (0..(p.value.max(0.0) as usize).min(3))
            .map(|i| serde_json::json!({ "name": format!("{}.{i}", p.name), "value": p.value }))
            .collect();
        std::fs::write(ctx.out().join("parts.json"), serde_json::to_string(&parts)?)?;
        Ok(())
    })
}
