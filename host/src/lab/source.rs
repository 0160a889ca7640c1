//! Which file a lab is, and how its text becomes the model [`super::parse`] validates.
//!
//! A lab is written in TOML (`repx.toml`), in Nix (`lab.nix`, evaluated with
//! `nix-instantiate --eval --strict --json`), or as that JSON already evaluated
//! (`lab.json`). In a directory the first of [`LAB_FILES`] that exists is the lab. A Nix
//! or JSON lab is turned into a TOML document (see [`super::json`]), so one parser checks
//! every lab, and its problems are named by key under the `.nix` or `.json` file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Lab, LabError, Problem, json, parse};

/// The names a lab is looked for under in a directory, in order of precedence.
pub const LAB_FILES: [&str; 3] = ["repx.toml", "lab.nix", "lab.json"];

/// The Nix library, passed to a `lab.nix` that is a function `{ repx, ... }:`: the lab
/// and the parser that reads it come from the same version of repx.
const NIX_LIBRARY: &str = include_str!("../../../nix/lib.nix");

/// What a lab file is written in, by its extension; anything else is TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Nix,
    Json,
}

impl Format {
    pub fn of(file: &Path) -> Format {
        match file.extension().and_then(|e| e.to_str()) {
            Some("nix") => Format::Nix,
            Some("json") => Format::Json,
            _ => Format::Toml,
        }
    }
}

/// The lab file `path` names: itself, or the first of [`LAB_FILES`] in the directory
/// `path`, with the others that are there too.
pub(super) fn find(path: &Path) -> Result<(PathBuf, Vec<PathBuf>), LabError> {
    if !path.is_dir() {
        return Ok((path.to_path_buf(), Vec::new()));
    }
    let mut present = LAB_FILES
        .iter()
        .map(|name| path.join(name))
        .filter(|file| file.is_file());
    match present.next() {
        Some(file) => Ok((file, present.collect())),
        None => Err(LabError::NotFound {
            dir: path.to_path_buf(),
        }),
    }
}

/// Reads and validates the lab in `file` (absolute).
pub(super) fn load(file: &Path) -> Result<Lab, LabError> {
    let read = || {
        std::fs::read_to_string(file).map_err(|source| LabError::Read {
            path: file.to_path_buf(),
            source,
        })
    };
    match Format::of(file) {
        Format::Toml => parse::parse(file, &read()?, |problem| problem),
        Format::Json => from_json(file, &read()?),
        Format::Nix => {
            // Read first, so a missing file is reported as such and not by Nix.
            read()?;
            from_json(file, &evaluate(file)?)
        }
    }
}

/// Evaluates `file` to JSON with `nix-instantiate`.
fn evaluate(file: &Path) -> Result<String, LabError> {
    let output = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--arg", "repx", NIX_LIBRARY])
        .arg(file)
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LabError::NixMissing {
                path: file.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(LabError::Eval {
                path: file.to_path_buf(),
                message: format!("  cannot run nix-instantiate: {e}"),
            });
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Nix's hint to pass --show-trace is for its own command line, not repx's.
        let message: Vec<String> = stderr
            .trim_end()
            .lines()
            .filter(|line| !line.contains("use '--show-trace'"))
            .map(|line| format!("  {line}").trim_end().to_string())
            .collect();
        return Err(LabError::Eval {
            path: file.to_path_buf(),
            message: message.join("\n"),
        });
    }
    String::from_utf8(output.stdout).map_err(|_| LabError::Eval {
        path: file.to_path_buf(),
        message: "  nix-instantiate printed something that is not UTF-8".into(),
    })
}

/// Validates the JSON lab `text`, read from or evaluated from `file`.
fn from_json(file: &Path, text: &str) -> Result<Lab, LabError> {
    let invalid = |problems| LabError::Invalid {
        path: file.to_path_buf(),
        problems,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        // The lines of a lab.json are the user's; those of Nix's output are not.
        let line = (Format::of(file) == Format::Json).then_some(e.line());
        invalid(vec![Problem {
            line,
            key: String::new(),
            message: format!("not valid JSON: {e}"),
        }])
    })?;
    let doc = json::to_toml(&value).map_err(invalid)?;
    parse::parse(file, &doc.text, |problem| doc.locate(problem))
}
