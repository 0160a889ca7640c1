//! `repx verify`: re-hash every committed output; with `--repair`, remove the bad ones.

use super::error::CliError;
use super::render::short;
use super::run::store_path;
use super::{Cli, exit};
use crate::lab::Lab;
use crate::store::{Store, verify};

pub fn verify(cli: &Cli, repair: bool) -> Result<i32, CliError> {
    let lab = Lab::load(&cli.lab)?;
    let store = Store::open(&store_path(cli, &lab))?;
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
