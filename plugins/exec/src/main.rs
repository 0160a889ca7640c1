//! `builtin:exec`: runs an executable, typically one an upstream stage built, and keeps its
//! stdout as an output.
//!
//! Parameters:
//! - `program` (string): an absolute guest path, or a path relative to `/in` or to one of
//!   the input directories (`bin/mybinary` finds `/in/bin/mybinary`).
//! - `args` (list of strings, default `[]`): its arguments.
//! - `stdout` (string, default `"stdout.txt"`): the file in `/out` that receives its stdout.
//!
//! The program runs with `/tmp` as its working directory.

use std::fs;
use std::path::{Path, PathBuf};

use repx_guest::Tool;
use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    program: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default = "default_stdout")]
    stdout: String,
}

fn default_stdout() -> String {
    "stdout.txt".into()
}

fn main() {
    repx_guest::run(|ctx| {
        let p: Params = ctx.params()?;
        let program = resolve(&p.program)?;
        let stdout = ctx.out().join(&p.stdout);
        if let Some(parent) = stdout.parent() {
            fs::create_dir_all(parent)?;
        }
        Tool::new(program.to_string_lossy())
            .args(p.args)
            .cwd("/tmp")
            .stdout_file(stdout.to_string_lossy())
            .run()
    })
}

/// The guest path of `program`: itself if absolute, else the first that exists of
/// `/in/<program>` and `/in/<input>/<program>` for each input in name order.
fn resolve(program: &str) -> repx_guest::Result<PathBuf> {
    if Path::new(program).is_absolute() {
        return Ok(program.into());
    }
    let inputs = Path::new("/in");
    let mut names: Vec<_> = fs::read_dir(inputs)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.file_name())
        .collect();
    names.sort();
    let candidates: Vec<PathBuf> = std::iter::once(inputs.join(program))
        .chain(names.iter().map(|name| inputs.join(name).join(program)))
        .collect();
    match candidates.iter().find(|path| path.is_file()) {
        Some(found) => Ok(found.clone()),
        None => {
            let looked: Vec<_> = candidates
                .iter()
                .map(|path| path.display().to_string())
                .collect();
            Err(format!(
                "program `{program}` not found; looked at: {}",
                looked.join(", ")
            )
            .into())
        }
    }
}
