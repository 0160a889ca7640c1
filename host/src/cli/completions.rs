//! `repx completions SHELL` and `repx man`: shell completions and man pages, both made
//! from the clap definitions of the command line, so they never drift from it.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// The main page on stdout; with `dir`, a page per visible command written there, each
/// named as `man` looks it up (`repx-run.1` for `man repx-run`), their paths on stdout.
pub fn man(dir: Option<&Path>) -> Result<i32, CliError> {
    // `help` has no page of its own, so the main page does not list one.
    let mut command = Cli::command().disable_help_subcommand(true);
    // Built, subcommands know their full names (`repx-run`), which name their pages.
    command.build();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        man_page(command).render(&mut page)?;
        let _ = std::io::stdout().lock().write_all(&page);
        return Ok(exit::SUCCESS);
    };
    let mut written = Vec::new();
    std::fs::create_dir_all(dir)
        .and_then(|()| write_pages(command, dir, &mut written))
        .map_err(|e| {
            CliError::Failed(anyhow::anyhow!(
                "writing man pages to {}: {e}",
                dir.display()
            ))
        })?;
    let mut stdout = std::io::stdout().lock();
    for path in written {
        let _ = writeln!(stdout, "{}", path.display());
    }
    Ok(exit::SUCCESS)
}

/// Writes the page of `command` and of each of its visible subcommands, depth first.
fn write_pages(
    command: clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let subcommands: Vec<clap::Command> = command
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let page = man_page(command);
    let mut roff = Vec::new();
    page.render(&mut roff)?;
    let path = dir.join(page.get_filename());
    super::atomic::write(&path, &roff)?;
    written.push(path);
    for subcommand in subcommands {
        write_pages(subcommand, dir, written)?;
    }
    Ok(())
}

/// The page of `command`, its footer naming repx and its version as the main page's does
/// (a subcommand has no version of its own).
fn man_page(command: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(command).source(concat!("repx ", env!("CARGO_PKG_VERSION")))
}
