//! `repx completions SHELL` and `repx man`: shell completions and a man page, both made
//! from the clap definitions of the command line, so they never drift from it.

use std::io::Write;

use clap::CommandFactory;

use super::error::CliError;
use super::{Cli, exit};

pub fn completions(shell: clap_complete::Shell) -> Result<i32, CliError> {
    let mut command = Cli::command();
    // Into memory first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "repx", &mut script);
    let _ = std::io::stdout().lock().write_all(&script);
    Ok(exit::SUCCESS)
}

pub fn man() -> Result<i32, CliError> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    let _ = std::io::stdout().lock().write_all(&page);
    Ok(exit::SUCCESS)
}
