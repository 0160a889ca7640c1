//! Where the SLURM scheduler's settings come from, lowest first: the embedded
//! `defaults.toml`, the `[slurm]` table of the user's `config.toml`
//! (`$REPX_CONFIG`, else `$XDG_CONFIG_HOME/repx/config.toml`, else
//! `~/.config/repx/config.toml`), the lab's `[slurm]` table, the command line.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::SlurmError;
use crate::lab::SlurmSettings;
use crate::lab::limits::parse_duration;

const DEFAULTS: &str = include_str!("defaults.toml");

/// Settings with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub sbatch_flags: Vec<String>,
    pub batch_size: usize,
    pub batch_cpus: u32,
    pub max_submissions: usize,
    pub arrays: bool,
    pub batch_time: Duration,
}

#[derive(Deserialize, Default)]
struct UserFile {
    slurm: Option<SlurmSettings>,
}

/// The user's config file, if there is one.
pub fn user_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("REPX_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("repx").join("config.toml"))
}

/// The `[slurm]` table of the user's config file (empty when there is no file), and
/// warnings about keys it does not know.
pub fn user_settings() -> Result<(SlurmSettings, Vec<String>), SlurmError> {
    let Some(path) = user_file() else {
        return Ok(Default::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => {
            return Err(SlurmError::Config {
                path,
                message: e.to_string(),
            });
        }
    };
    let mut unknown = Vec::new();
    let parsed: Result<UserFile, _> = toml::Deserializer::parse(&text)
        .map_err(|e| e.to_string())
        .and_then(|d| {
            serde_ignored::deserialize(d, |key| unknown.push(key.to_string()))
                .map_err(|e: toml::de::Error| e.to_string())
        });
    let file = parsed.map_err(|message| SlurmError::Config {
        path: path.clone(),
        message,
    })?;
    let settings = file.slurm.unwrap_or_default();
    if let Some(problem) = settings.problems().into_iter().next() {
        return Err(SlurmError::Config {
            path,
            message: format!("[slurm]: {problem}"),
        });
    }
    let warnings = unknown
        .into_iter()
        .map(|key| format!("{}: unknown key `{key}` is ignored", path.display()))
        .collect();
    Ok((settings, warnings))
}

/// Layers the settings (highest first) over the defaults.
pub fn resolve(layers: &[&SlurmSettings]) -> Config {
    let defaults: SlurmSettings = toml::from_str(DEFAULTS).expect("defaults.toml is valid");
    let merged = layers
        .iter()
        .rev()
        .fold(defaults, |lower, higher| higher.over(&lower));
    Config {
        partition: merged.partition,
        account: merged.account,
        qos: merged.qos,
        sbatch_flags: merged.sbatch_flags,
        batch_size: merged.batch_size.expect("a default").max(1),
        batch_cpus: merged.batch_cpus.expect("a default").max(1),
        max_submissions: merged.max_submissions.expect("a default").max(1),
        arrays: merged.arrays.expect("a default"),
        batch_time: merged
            .batch_time
            .as_deref()
            .and_then(parse_duration)
            .expect("a default"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_layers_override_them() {
        let config = resolve(&[]);
        assert_eq!(config.batch_size, 256);
        assert_eq!(config.batch_cpus, 4);
        assert!(config.arrays);
        assert_eq!(config.batch_time, Duration::from_secs(12 * 3600));
        let cli = SlurmSettings {
            batch_size: Some(10),
            ..Default::default()
        };
        let lab = SlurmSettings {
            batch_size: Some(20),
            partition: Some("lab".into()),
            ..Default::default()
        };
        let user = SlurmSettings {
            partition: Some("user".into()),
            account: Some("me".into()),
            arrays: Some(false),
            batch_cpus: Some(1),
            ..Default::default()
        };
        let config = resolve(&[&cli, &lab, &user]);
        assert_eq!(config.batch_size, 10);
        assert_eq!(config.partition.as_deref(), Some("lab"));
        assert_eq!(config.account.as_deref(), Some("me"));
        assert!(!config.arrays);
        assert_eq!(config.batch_cpus, 1);
    }
}
