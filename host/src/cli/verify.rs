//! `repx verify`: re-hash every committed output and read every record; with `--repair`,
//! remove the bad ones.
//!
//! Exit 1 when something is damaged and stays so; `--repair` that removed it exits 0, since
//! the store then holds only what verifies.
//!
//! A check of the store alone: with `--store` no lab is read, so a store whose lab is gone
//! or broken can still be checked. Without `--repair` it only reads (under a shared lock),
//! so it works on a store it cannot write.

use super::error::{CliError, invalid};
use super::escape::terminal;
use super::render::short;
use super::store_path::store_path;
use super::{Cli, exit};
use crate::lab::Lab;
use crate::store::{Store, verify};

pub fn verify(cli: &Cli, repair: bool) -> Result<i32, CliError> {
    let root = match &cli.store {
        // Opening creates a store; a mistyped path must not become an empty, clean one.
        Some(root) if !crate::store::is_store(root) => {
            return Err(invalid(format!(
                "--store {}: not a store (it holds no records.jsonl); name a store (the \
                 `.repx` beside a lab)",
                root.display()
            )));
        }
        Some(root) => root.clone(),
        None => store_path(cli, &Lab::load(&cli.lab)?)?,
    };
    let store = if repair {
        Store::open(&root)?
    } else {
        Store::open_shared(&root)?
    };
    // The report below says all the store's warnings would, line by line.
    let _ = store.take_warnings();
    let report = verify::verify(&store);
    for line in &report.unparsable {
        outln!("UNREADABLE records.jsonl line {line}: not a record");
    }
    for damage in &report.damaged {
        outln!("DAMAGED {} {}", damage.stage, short(&damage.id));
        for problem in &damage.problems {
            outln!("    {}", terminal(&problem.to_string()));
        }
    }
    let unreadable = match report.unparsable.len() {
        0 => String::new(),
        n => format!(", {n} record lines unreadable"),
    };
    outln!(
        "{} outputs checked, {} damaged{unreadable}",
        report.checked,
        report.damaged.len()
    );
    if !report.unrecorded.is_empty() {
        // Not damage: no run trusts an output without a record.
        outln!(
            "{} outputs in jobs/ have no record (left by an interrupted `repx gc` or run); \
             run `repx gc` again to remove them",
            report.unrecorded.len()
        );
    }
    if !report.needs_repair() {
        return Ok(exit::SUCCESS);
    }
    if repair {
        verify::repair(&store, &report)?;
        outln!(
            "removed {} damaged outputs{}; the next `repx run` recomputes them",
            report.damaged.len(),
            match report.unparsable.len() {
                0 => String::new(),
                n => format!(" and {n} unreadable record lines"),
            }
        );
        // What was wrong is gone: the store holds only what verifies, so this succeeded.
        return Ok(exit::SUCCESS);
    }
    outln!("run `repx verify --repair` to remove them so the next run recomputes them");
    Ok(exit::FAILED)
}

/// Says what is wrong with a store that did not stop it from opening, once.
pub(super) fn warn(store: &Store) {
    for warning in store.take_warnings() {
        errln!("warning: {}", terminal(&warning.to_string()));
    }
}
