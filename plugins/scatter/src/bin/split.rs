//! Example stage of a fan-out: reads `samples.txt` of input `data` (one sample a line,
//! `NAME VALUE`; blank lines and lines starting with `#` are skipped) and writes the list
//! `/out/items.json`, one object `{"name", "value"}` per sample, in the file's order.
//!
//! Parameters:
//! - `take` (integer, default 0): list only the first `take` samples; 0 lists them all.
//! - `raw` (bool, default false): instead, copy `list.json` of input `data` to
//!   `/out/items.json` as it is (a list written by hand); nothing when there is none.

use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    #[serde(default)]
    raw: bool,
    #[serde(default)]
    take: usize,
}

fn main() {
    repx_guest::run(|ctx| {
        let p: Params = ctx.params()?;
        let data = ctx.input("data")?;
        if p.raw {
            if let Ok(list) = std::fs::read(data.join("list.json")) {
                std::fs::write(ctx.out().join("items.json"), list)?;
            }
            return Ok(());
        }
        let text = std::fs::read_to_string(data.join("samples.txt"))?;
        let mut items = Vec::new();
        for (at, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("samples.txt:{}: expected `NAME VALUE`", at + 1))?;
            let value: f64 = value
                .trim()
                .parse()
                .map_err(|e| format!("samples.txt:{}: `{value}`: {e}", at + 1))?;
            items.push(serde_json::json!({ "name": name, "value": value }));
        }
        if p.take > 0 {
            items.truncate(p.take);
        }
        std::fs::write(
            ctx.out().join("items.json"),
            serde_json::to_string_pretty(&items)?,
        )?;
        Ok(())
    })
}
