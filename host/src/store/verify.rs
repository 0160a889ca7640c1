//! Checking committed outputs against their records, and removing the damaged ones.
//!
//! The record's tree hash is the authority; the manifest beside each output only explains
//! a mismatch file by file. A record is written only once its output is in place, so a
//! recorded job whose output directory is gone was damaged too, not merely never committed.
//! Lines of the record log that are no record are reported by line number and dropped by
//! a repair. An output without a record (left by a crash, or by a `repx gc` killed after
//! it rewrote the records) is no damage: no run trusts it, and `repx gc` removes it.
//!
//! Snapshots of `path:` inputs are checked too: each is named by the hash of its content,
//! and one that no longer hashes to its name would give later jobs other bytes under the
//! same job id.

use std::collections::BTreeMap;

use super::gc::{Garbage, Item};
use super::{Entry, MANIFEST, Store, StoreError, hash_tree};

/// What is wrong with one file of an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Present before and now, with other content.
    Changed(String),
    Added(String),
    Missing(String),
    /// The hash differs and no manifest says where.
    Unexplained,
    /// The output could not be read.
    Unreadable(String),
    /// The whole output directory is gone (or something else stands in its place).
    NoOutput,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Changed(path) => write!(f, "changed: {path}"),
            Problem::Added(path) => write!(f, "added:   {path}"),
            Problem::Missing(path) => write!(f, "missing: {path}"),
            Problem::Unexplained => write!(f, "content differs from the recorded hash"),
            Problem::Unreadable(why) => write!(f, "unreadable: {why}"),
            Problem::NoOutput => write!(f, "missing: the whole output directory"),
        }
    }
}

/// One committed output that does not match its record.
#[derive(Debug, Clone)]
pub struct Damage {
    /// The job's id, or the snapshot's hash.
    pub id: String,
    /// The job's stage, or `snapshot`.
    pub stage: String,
    pub problems: Vec<Problem>,
    /// Whether this is a snapshot (`snapshots/<id>`), not a job's output.
    pub snapshot: bool,
}

/// What a verification looked at.
#[derive(Debug, Default)]
pub struct Report {
    pub checked: usize,
    pub damaged: Vec<Damage>,
    /// Lines of `records.jsonl` (from 1) that are no record.
    pub unparsable: Vec<u64>,
    /// Job directories in `jobs/` without a record.
    pub unrecorded: Vec<String>,
}

impl Report {
    /// Whether anything needs a repair.
    pub fn needs_repair(&self) -> bool {
        !self.damaged.is_empty() || !self.unparsable.is_empty()
    }
}

/// Re-hashes every recorded output in the store; one whose directory is gone is damaged.
pub fn verify(store: &Store) -> Report {
    let mut report = Report {
        unparsable: store.unparsable_records(),
        ..Report::default()
    };
    let mut records = store.records();
    records.sort_by(|a, b| a.id.cmp(&b.id));
    let recorded: std::collections::HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let jobs = std::fs::read_dir(store.root().join("jobs"))
        .into_iter()
        .flatten();
    report.unrecorded = jobs
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| !recorded.contains(id.as_str()))
        .collect();
    report.unrecorded.sort();
    for record in records {
        let out = store.output_dir(&record.id);
        report.checked += 1;
        // Not following a link: a link in place of the output is no output.
        let problems = if !std::fs::symlink_metadata(&out).is_ok_and(|m| m.is_dir()) {
            vec![Problem::NoOutput]
        } else {
            match hash_tree(&out) {
                Ok(summary) if summary.hash == record.hash => continue,
                Ok(summary) => explain(store, &record.id, &summary.entries),
                Err(e) => vec![Problem::Unreadable(e.to_string())],
            }
        };
        report.damaged.push(Damage {
            id: record.id.clone(),
            stage: record.stage.clone(),
            problems,
            snapshot: false,
        });
    }
    let mut snapshots: Vec<_> = std::fs::read_dir(store.snapshots())
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    snapshots.sort_by_key(|entry| entry.file_name());
    for entry in snapshots {
        let hash = entry.file_name().to_string_lossy().into_owned();
        let problems = match hash_tree(&entry.path()) {
            Ok(summary) if summary.hash == hash => continue,
            Ok(_) => vec![Problem::Unexplained],
            Err(e) => vec![Problem::Unreadable(e.to_string())],
        };
        report.damaged.push(Damage {
            id: hash,
            stage: "snapshot".into(),
            problems,
            snapshot: true,
        });
    }
    report
}

fn explain(store: &Store, id: &str, now: &[Entry]) -> Vec<Problem> {
    let manifest = std::fs::read(store.job_dir(id).join(MANIFEST))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<Entry>>(&bytes).ok());
    let Some(before) = manifest else {
        return vec![Problem::Unexplained];
    };
    let before: BTreeMap<&str, &Entry> = before.iter().map(|e| (e.path.as_str(), e)).collect();
    let now: BTreeMap<&str, &Entry> = now.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut problems = Vec::new();
    for (path, entry) in &now {
        match before.get(path) {
            None => problems.push(Problem::Added(path.to_string())),
            Some(old) if old != entry => problems.push(Problem::Changed(path.to_string())),
            Some(_) => {}
        }
    }
    problems.extend(
        before
            .keys()
            .filter(|p| !now.contains_key(*p))
            .map(|p| Problem::Missing(p.to_string())),
    );
    if problems.is_empty() {
        // The manifest matches, so the difference is in what it does not cover.
        problems.push(Problem::Unexplained);
    }
    problems
}

/// Removes damaged outputs and drops their records, and the lines that are no record, so
/// that the next run recomputes them and the next verification does not report them again.
pub fn repair(store: &Store, report: &Report) -> Result<(), StoreError> {
    if !report.unparsable.is_empty() {
        store.rewrite_records(&Default::default())?;
    }
    let items = report
        .damaged
        .iter()
        .map(|damage| {
            if damage.snapshot {
                let snapshot = Item::Snapshot {
                    hash: damage.id.clone(),
                };
                return (snapshot, store.snapshots().join(&damage.id), 0);
            }
            let job = Item::Job {
                id: damage.id.clone(),
                stage: Some(damage.stage.clone()),
            };
            (job, store.job_dir(&damage.id), 0)
        })
        .collect();
    store.collect(&Garbage { items })
}
