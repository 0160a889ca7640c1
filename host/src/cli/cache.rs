//! `repx cache list|stats|clear [--older-than AGE]`: the compiled-plugin cache
//! (`$REPX_CACHE_DIR`, else `~/.cache/repx`), which nothing else prunes.
//!
//! An artifact's modification time says when a run last loaded it (to a day, see
//! `wasm::cache`). Removing one costs the next run that needs it a compile, nothing else:
//! artifacts are checked against their digest when loaded and written whole by rename, so
//! a run that loads while `clear` removes either reads an artifact whole or compiles.

use std::time::{Duration, SystemTime};

use super::error::{CliError, invalid};
use super::{CacheCommand, exit};
use crate::wasm::{Artifact, artifacts, cache_dir};

pub fn cache(command: &CacheCommand) -> Result<i32, CliError> {
    let Some(dir) = cache_dir() else {
        return Err(invalid(
            "no cache directory: set REPX_CACHE_DIR, XDG_CACHE_HOME or HOME",
        ));
    };
    let found = artifacts(&dir)
        .map_err(|e| CliError::Failed(anyhow::anyhow!("reading {}: {e}", dir.display())))?;
    let now = SystemTime::now();
    let age = |a: &Artifact| now.duration_since(a.used).unwrap_or_default();
    match command {
        CacheCommand::List => {
            for artifact in &found {
                outln!(
                    "{}  {}  used {} ago",
                    artifact.path.display(),
                    super::gc::human_bytes(artifact.bytes),
                    human_age(age(artifact))
                );
            }
        }
        CacheCommand::Stats => {
            let bytes: u64 = found.iter().map(|a| a.bytes).sum();
            outln!("cache:     {}", dir.display());
            outln!("plugins:   {} compiled", found.len());
            outln!("size:      {}", super::gc::human_bytes(bytes));
            if let (Some(oldest), Some(newest)) = (found.first(), found.last()) {
                outln!(
                    "last used: {} ago (newest), {} ago (oldest)",
                    human_age(age(newest)),
                    human_age(age(oldest))
                );
            }
        }
        CacheCommand::Clear { older_than } => {
            let min_age = older_than.as_deref().map(parse_age).transpose()?;
            let (mut count, mut bytes) = (0, 0);
            for artifact in found
                .iter()
                .filter(|a| min_age.is_none_or(|min| age(a) > min))
            {
                match std::fs::remove_file(&artifact.path) {
                    Ok(()) => {
                        count += 1;
                        bytes += artifact.bytes;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(CliError::Failed(anyhow::anyhow!(
                            "removing {}: {e}",
                            artifact.path.display()
                        )));
                    }
                }
            }
            outln!(
                "removed {count} compiled plugins ({}); {} left",
                super::gc::human_bytes(bytes),
                found.len() - count
            );
        }
    }
    Ok(exit::SUCCESS)
}

/// `30d`, `12h`, `90m`, `45s`.
fn parse_age(text: &str) -> Result<Duration, CliError> {
    let days = text
        .strip_suffix('d')
        .and_then(|n| n.parse::<u64>().ok())
        .map(|n| Duration::from_secs(n * 86_400));
    days.or_else(|| crate::lab::limits::parse_duration(text))
        .ok_or_else(|| {
            invalid(format!(
                "--older-than {text}: expected an age like `30d`, `12h` or `90m`"
            ))
        })
}

fn human_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}
