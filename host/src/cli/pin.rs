//! `repx plugin pin`: writes each stage's plugin digest into the lab file.
//!
//! The file is edited in place, keeping its comments and layout; only `sha256` keys of the
//! chosen stages change. Built-in plugins are part of the binary and are not pinned.
//! A lab in Nix or JSON is not rewritten: the command says what to add where.

use super::error::{CliError, invalid};
use super::{Cli, exit};
use crate::lab::{Format, Lab, PluginRef, did_you_mean};

pub fn pin(cli: &Cli, stages: &[String]) -> Result<i32, CliError> {
    let lab = Lab::load(&cli.lab)?;
    for stage in stages {
        if !lab.stages.contains_key(stage) {
            let hint = did_you_mean(stage, lab.stages.keys().map(String::as_str));
            return Err(invalid(format!(
                "no stage `{stage}` in {}{hint}",
                lab.file.display()
            )));
        }
    }
    if Format::of(&lab.file) != Format::Toml {
        return Err(not_toml(&lab, stages));
    }
    let text = std::fs::read_to_string(&lab.file)?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| invalid(format!("{}: {e}", lab.file.display())))?;
    let mut pinned = 0;
    for stage in lab.stages.values() {
        if !stages.is_empty() && !stages.contains(&stage.name) {
            continue;
        }
        let PluginRef::File(path) = &stage.plugin else {
            continue;
        };
        let digest = crate::wasm::sha256_hex(&std::fs::read(path)?);
        let table = doc["stages"][stage.name.as_str()]
            .as_table_like_mut()
            .ok_or_else(|| {
                invalid(format!(
                    "{}: [stages.{}] is not a table",
                    lab.file.display(),
                    stage.name
                ))
            })?;
        let before = table
            .get("sha256")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        if before.as_deref() == Some(digest.as_str()) {
            outln!("{:<16} already pinned", stage.name);
            continue;
        }
        table.insert("sha256", toml_edit::value(digest.clone()));
        pinned += 1;
        match before {
            Some(old) => outln!("{:<16} re-pinned {digest} (was {old})", stage.name),
            None => outln!("{:<16} pinned {digest}", stage.name),
        }
    }
    if pinned > 0 {
        // Written aside and renamed, so the lab file is never half-written.
        super::atomic::write(&lab.file, doc.to_string().as_bytes())?;
    }
    Ok(exit::SUCCESS)
}

/// The digests to pin, for a lab file this command does not edit.
fn not_toml(lab: &Lab, stages: &[String]) -> CliError {
    let nix = Format::of(&lab.file) == Format::Nix;
    let mut lines = Vec::new();
    for stage in lab.stages.values() {
        if !stages.is_empty() && !stages.contains(&stage.name) {
            continue;
        }
        let PluginRef::File(path) = &stage.plugin else {
            continue;
        };
        let digest = match std::fs::read(path) {
            Ok(bytes) => crate::wasm::sha256_hex(&bytes),
            Err(e) => format!("(cannot read {}: {e})", path.display()),
        };
        lines.push(if nix {
            format!("  {}: sha256 = \"{digest}\";", stage.name)
        } else {
            format!("  stages.{}: \"sha256\": \"{digest}\"", stage.name)
        });
    }
    invalid(format!(
        "{} is not TOML, so `repx plugin pin` does not edit it; pin the plugins yourself, {}:\n{}",
        lab.file.display(),
        if nix {
            "in each stage's mkStage"
        } else {
            "in each stage"
        },
        lines.join("\n")
    ))
}
