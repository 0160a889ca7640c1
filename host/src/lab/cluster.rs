//! What a lab asks of a cluster: each stage's `resources` (cpus, memory, wall time of one
//! job) and the lab's `[slurm]` table (partition, account, QOS, extra `sbatch` flags,
//! packing).
//!
//! Neither changes a job's id: they say where and how a job runs, not what it computes.
//! A local run admits jobs by their `cpus` and `mem` (see [`crate::sched::admit`]); the
//! SLURM scheduler turns them into `sbatch` options.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::did_you_mean;
use super::limits::{parse_bytes, parse_duration};

/// What one job of a stage needs on a cluster node; `None` leaves it to the cluster's
/// defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resources {
    pub cpus: Option<u32>,
    /// Memory in bytes.
    pub mem: Option<u64>,
    pub time: Option<Duration>,
}

/// The `[slurm]` table of a lab, and of `~/.config/repx/config.toml`. Every key is
/// optional; the command line overrides the lab, which overrides the user's file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SlurmSettings {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// More `sbatch` options, each as one argument: `["--constraint=avx2"]`.
    #[serde(default)]
    pub sbatch_flags: Vec<String>,
    /// The most jobs one allocation runs.
    pub batch_size: Option<usize>,
    /// The most CPUs one allocation asks for: it runs as many of its jobs at once as
    /// their `cpus` fit in this (at least one).
    pub batch_cpus: Option<u32>,
    /// The most allocations of one run queued or running at once.
    pub max_submissions: Option<usize>,
    /// Submit a wave's batches as one job array (default) or one `sbatch` each.
    pub arrays: Option<bool>,
    /// The longest allocation to ask for when jobs have `time` hints (`12h`): a batch's
    /// time is the sum of its jobs'.
    pub batch_time: Option<String>,
}

impl SlurmSettings {
    /// `self`, with what it leaves unset taken from `lower`; flags are `lower`'s then ours.
    pub fn over(&self, lower: &SlurmSettings) -> SlurmSettings {
        SlurmSettings {
            partition: self.partition.clone().or_else(|| lower.partition.clone()),
            account: self.account.clone().or_else(|| lower.account.clone()),
            qos: self.qos.clone().or_else(|| lower.qos.clone()),
            sbatch_flags: lower
                .sbatch_flags
                .iter()
                .chain(&self.sbatch_flags)
                .cloned()
                .collect(),
            batch_size: self.batch_size.or(lower.batch_size),
            batch_cpus: self.batch_cpus.or(lower.batch_cpus),
            max_submissions: self.max_submissions.or(lower.max_submissions),
            arrays: self.arrays.or(lower.arrays),
            batch_time: self.batch_time.clone().or_else(|| lower.batch_time.clone()),
        }
    }

    /// What is wrong with the values (not the types, which serde checks).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.batch_size == Some(0) {
            problems.push("`batch_size` must be at least 1".to_string());
        }
        if self.batch_cpus == Some(0) {
            problems.push("`batch_cpus` must be at least 1".to_string());
        }
        if self.max_submissions == Some(0) {
            problems.push("`max_submissions` must be at least 1".to_string());
        }
        if let Some(time) = &self.batch_time
            && parse_duration(time).is_none_or(|t| t.is_zero())
        {
            problems.push(format!(
                "`batch_time`: `{time}` is not a duration: write it like `30m` or `12h`"
            ));
        }
        for flag in &self.sbatch_flags {
            if !flag.starts_with('-') {
                problems.push(format!(
                    "`sbatch_flags`: `{flag}` is not an option; write each as one argument, like `--constraint=avx2`"
                ));
            }
        }
        problems
    }
}

/// The keys of a stage's `resources` table.
pub const RESOURCE_NAMES: [&str; 3] = ["cpus", "mem", "time"];

/// One problem with a `resources` table: where, which key, what.
pub type ResourceProblem = (Range<usize>, String, String);

/// Reads a stage's `resources = { cpus = 1, mem = "2G", time = "10m" }`.
pub fn resources(
    raw: &BTreeMap<String, Spanned<toml::Value>>,
    key: &str,
) -> (Resources, Vec<ResourceProblem>) {
    let mut resources = Resources::default();
    let mut problems = Vec::new();
    for (name, value) in raw {
        let text = match value.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) if *i >= 0 => i.to_string(),
            _ => String::new(),
        };
        let ok = match name.as_str() {
            "cpus" => text
                .parse::<u32>()
                .ok()
                .filter(|c| *c > 0)
                .map(|c| resources.cpus = Some(c)),
            "mem" => parse_bytes(&text)
                .filter(|m| *m > 0)
                .map(|m| resources.mem = Some(m)),
            "time" => parse_duration(&text)
                .filter(|t| !t.is_zero())
                .map(|t| resources.time = Some(t)),
            other => {
                let hint = did_you_mean(other, RESOURCE_NAMES);
                problems.push((
                    value.span(),
                    format!("{key}.{other}"),
                    format!("unknown resource{hint}; resources are cpus, mem and time"),
                ));
                continue;
            }
        };
        if ok.is_none() {
            let example = match name.as_str() {
                "cpus" => "a positive number",
                "mem" => "`512M` or `2G`",
                _ => "`30s`, `10m` or `2h`",
            };
            problems.push((
                value.span(),
                format!("{key}.{name}"),
                format!("`{text}` is not a valid {name}: write it like {example}"),
            ));
        }
    }
    (resources, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Resources, Vec<String>) {
        #[derive(Deserialize)]
        struct Table {
            resources: BTreeMap<String, Spanned<toml::Value>>,
        }
        let table: Table = toml::from_str(text).unwrap();
        let (resources, problems) = super::resources(&table.resources, "stages.s.resources");
        (resources, problems.into_iter().map(|p| p.2).collect())
    }

    #[test]
    fn resources_parse_with_units() {
        let (r, problems) = parse("resources = { cpus = 2, mem = \"2G\", time = \"10m\" }");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            r,
            Resources {
                cpus: Some(2),
                mem: Some(2 << 30),
                time: Some(Duration::from_secs(600)),
            }
        );
    }

    #[test]
    fn bad_resources_are_named() {
        let (_, problems) = parse("resources = { cpu = 2, mem = \"lots\", time = 0 }");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("did you mean `cpus`"), "{problems:?}");
        assert!(problems[1].contains("`lots` is not a valid mem"));
        assert!(problems[2].contains("not a valid time"));
    }

    #[test]
    fn settings_layer_and_flags_accumulate() {
        let user = SlurmSettings {
            account: Some("me".into()),
            partition: Some("short".into()),
            sbatch_flags: vec!["--a".into()],
            ..Default::default()
        };
        let lab = SlurmSettings {
            partition: Some("gpu".into()),
            sbatch_flags: vec!["--b".into()],
            batch_size: Some(10),
            batch_cpus: Some(8),
            ..Default::default()
        };
        let merged = lab.over(&user);
        assert_eq!(merged.partition.as_deref(), Some("gpu"));
        assert_eq!(merged.account.as_deref(), Some("me"));
        assert_eq!(merged.sbatch_flags, ["--a", "--b"]);
        assert_eq!(merged.batch_size, Some(10));
        assert_eq!(merged.batch_cpus, Some(8));
        let bad = SlurmSettings {
            batch_size: Some(0),
            batch_cpus: Some(0),
            sbatch_flags: vec!["constraint=x".into()],
            ..Default::default()
        };
        assert_eq!(bad.problems().len(), 3);
    }
}
