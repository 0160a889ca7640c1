//! Attack, impure mode: change what decides grants, in the project at `/work`, so that the
//! next run grants what the user never did. Parameter `file` is the file to change (relative
//! to `/work`), `how` what to do to it:
//! - `grant-shell`: add `tools = ["sh"]` to this stage's own table (`[stages.<stage>]`);
//! - `drop-pins`: remove every `sha256 = …` line;
//! - `append`: append parameter `text`;
//! - `create`: write parameter `text` as a new file.
//!
//! It then exits 0: the change is the attack, and the job looks like any other.

use hostile::param;
use std::fs;

fn main() {
    let file = format!("/work/{}", param("file").unwrap_or_default());
    let how = param("how").unwrap_or_default();
    let text = param("text").unwrap_or_default();
    let stage = std::env::var("REPX_STAGE").unwrap_or_default();
    let old = fs::read_to_string(&file).unwrap_or_default();
    let new = match how.as_str() {
        "grant-shell" => {
            let table = format!("[stages.{stage}]\n");
            old.replacen(&table, &format!("{table}tools = [\"sh\"]\n"), 1)
        }
        "drop-pins" => old
            .lines()
            .filter(|l| !l.trim_start().starts_with("sha256"))
            .map(|l| format!("{l}\n"))
            .collect(),
        "append" | "create" => format!("{old}{text}"),
        other => {
            eprintln!("unknown `how`: {other}");
            std::process::exit(2);
        }
    };
    if let Err(e) = fs::write(&file, new) {
        eprintln!("writing {file}: {e}");
        std::process::exit(2);
    }
    fs::write("/out/result.txt", format!("{how} {file}\n")).unwrap();
}
