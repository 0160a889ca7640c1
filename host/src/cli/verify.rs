//! `repx verify`: re-hash every committed output; with `--repair`, remove the bad ones.
//!
//! A check of the store alone: with `--store` no lab is read, so a store whose lab is gone
//! or broken can still be checked.

use super::error::{CliError, invalid};
use super::render::short;
use super::run::store_path;
use super::{Cli, exit};
use crate::lab::Lab;
use crate::store::{Store, verify};

pub fn verify(cli: &Cli, repair: bool) -> Result<i32, CliError> {
    let root = match &cli.store {
        // Opening creates a store; a mistyped path must not become an empty, clean one.
        Some(root) if !root.join("records.jsonl").is_file() => {
            return Err(invalid(format!(
                "--store {}: not a store (it holds no records.jsonl); name a store (the \
                 `.repx` beside a lab)",
                root.display()
            )));
        }
        Some(root) => root.clone(),
        None => store_path(cli, &Lab::load(&cli.lab)?)?,
    };
    let store = Store::open(&root)?;
    let report = verify::verify(&store);
    for damage in &report.damaged {
        println!("DAMAGED {} {}", damage.stage, short(&damage.id));
        for problem in &damage.problems {
            println!("    {problem}");
        }
    }
    println!(
        "{} outputs checked, {} damaged",
        report.checked,
        report.damaged.len()
    );
    if report.damaged.is_empty() {
        return Ok(exit::SUCCESS);
    }
    if repair {
        verify::repair(&store, &report.damaged)?;
        println!(
            "removed {} damaged outputs; the next `repx run` recomputes them",
            report.damaged.len()
        );
    } else {
        println!("run `repx verify --repair` to remove them so the next run recomputes them");
    }
    Ok(exit::FAILED)
}
