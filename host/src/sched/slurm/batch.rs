//! What the coordinator and its workers tell each other through the store: a batch file
//! (`<store>/slurm/<run>/batch-<submission>-<task>.json`: which jobs to run, with their ids)
//! and, beside it, the worker's events file (`….events`: one JSON line per job outcome,
//! then one for the worker's exit).
//!
//! The events are a courtesy (progress, failure messages); what a job produced is known
//! from the store alone: its record and `jobs/<id>`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::graph::JobIndex;
use crate::lab::Mode;
use crate::sched::FailureKind;

/// The batch file format's version; a worker refuses others.
pub const VERSION: u32 = 2;

/// One allocation's work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub version: u32,
    /// The runs the coordinator expanded, and its mode override: the worker expands the
    /// same graph, so job indices and ids agree.
    pub runs: Vec<String>,
    pub mode: Option<Mode>,
    /// The batch's jobs, upstream before downstream.
    pub jobs: Vec<BatchJob>,
    /// Ids of the jobs outside the batch that its jobs read; all done before it starts.
    pub upstream: Vec<BatchJob>,
    /// Jobs to run at once on the allocation.
    pub parallel: usize,
    pub continue_on_failure: bool,
    /// `--retries`, when given: the worker retries a failed job as a local run does (else
    /// as its stage says).
    #[serde(default)]
    pub retries: Option<u32>,
    /// For a `lab.nix`: the lab as the coordinator evaluated it. The worker reads it
    /// instead of evaluating the file again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lab: Option<Evaluated>,
    /// The run's Nix settings, for its hermetic jobs.
    #[serde(default)]
    pub nix: crate::nix::settings::Settings,
    /// The lists of fan-outs the coordinator's plan grew by, step by step (see
    /// [`crate::plan::Plan::grown`]): the worker grows its own by the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grown: Vec<Vec<(String, std::path::PathBuf)>>,
}

/// An evaluated lab written beside the batches, and the BLAKE3 digest of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluated {
    pub path: PathBuf,
    pub blake3: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchJob {
    pub index: JobIndex,
    pub stage: String,
    pub id: String,
}

impl Batch {
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("batches serialise");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }

    pub fn read(path: &Path) -> Result<Batch, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let batch: Batch = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a batch file: {e}", path.display()))?;
        if batch.version != VERSION {
            return Err(format!(
                "{}: batch format {} (this repx reads {VERSION}): run the same repx as `repx run`",
                path.display(),
                batch.version
            ));
        }
        Ok(batch)
    }

    /// Where the worker of the batch at `path` writes its events.
    pub fn events_path(path: &Path) -> PathBuf {
        path.with_extension("events")
    }
}

/// One line of a worker's events file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerEvent {
    Started {
        job: JobIndex,
    },
    Finished {
        job: JobIndex,
        id: String,
    },
    Failed {
        job: JobIndex,
        id: String,
        failure: String,
        #[serde(default)]
        kind: FailureKind,
    },
    Skipped {
        job: JobIndex,
    },
    /// The worker could not run the batch at all.
    Error {
        message: String,
    },
    /// The worker is done; nothing of the batch runs after this line.
    Exit {
        code: i32,
    },
}

/// The worker's side: appends one line per event, each in one write.
pub struct EventWriter {
    file: Mutex<File>,
}

impl EventWriter {
    pub fn create(path: &Path) -> std::io::Result<EventWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventWriter {
            file: Mutex::new(file),
        })
    }

    pub fn write(&self, event: &WorkerEvent) {
        let mut line = serde_json::to_vec(event).expect("events serialise");
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // Events are advisory: a failed write costs a message, never a result.
        let _ = file.write_all(&line);
    }
}

/// The coordinator's side: reads the whole lines written since the last call.
#[derive(Debug, Default)]
pub struct EventReader {
    read: u64,
}

impl EventReader {
    pub fn read_new(&mut self, path: &Path) -> Vec<WorkerEvent> {
        let Ok(file) = File::open(path) else {
            return Vec::new();
        };
        let mut reader = BufReader::new(file);
        if reader.seek(SeekFrom::Start(self.read)).is_err() {
            return Vec::new();
        }
        let mut events = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(n) if n > 0 && line.last() == Some(&b'\n') => {
                    self.read += n as u64;
                    if let Ok(event) = serde_json::from_slice(&line) {
                        events.push(event);
                    }
                }
                _ => break,
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_once_and_only_whole() {
        let dir = std::env::temp_dir().join(format!("repx-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.events");
        let _ = std::fs::remove_file(&path);
        let writer = EventWriter::create(&path).unwrap();
        let mut reader = EventReader::default();
        assert!(reader.read_new(&path).is_empty());
        writer.write(&WorkerEvent::Started { job: 3 });
        writer.write(&WorkerEvent::Failed {
            job: 3,
            id: "ab".into(),
            failure: "exit status 1\nline".into(),
            kind: FailureKind::ExitStatus,
        });
        let first = reader.read_new(&path);
        assert_eq!(first.len(), 2);
        assert!(matches!(first[1], WorkerEvent::Failed { job: 3, .. }));
        // Half a line is left for later.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"event\":\"exit\",")
            .unwrap();
        assert!(reader.read_new(&path).is_empty());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"\"code\":1}\n")
            .unwrap();
        assert_eq!(reader.read_new(&path), [WorkerEvent::Exit { code: 1 }]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn batches_round_trip_and_versions_are_checked() {
        let dir = std::env::temp_dir().join(format!("repx-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("batch-0-0.json");
        let batch = Batch {
            version: VERSION,
            runs: vec!["sweep".into()],
            mode: Some(Mode::Pure),
            jobs: vec![BatchJob {
                index: 1,
                stage: "point".into(),
                id: "abc".into(),
            }],
            upstream: vec![],
            parallel: 1,
            continue_on_failure: false,
            retries: Some(1),
            lab: Some(Evaluated {
                path: dir.join("lab.evaluated.json"),
                blake3: "00".into(),
            }),
            nix: crate::nix::settings::Settings {
                options: vec![("max-jobs".into(), "2".into())],
                publish_private: true,
            },
            grown: vec![vec![("def".into(), "items.json".into())]],
        };
        batch.write(&path).unwrap();
        assert_eq!(Batch::read(&path).unwrap(), batch);
        assert_eq!(Batch::events_path(&path), dir.join("batch-0-0.events"));
        let old = Batch {
            version: 0,
            ..batch
        };
        old.write(&path).unwrap();
        assert!(Batch::read(&path).unwrap_err().contains("batch format 0"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
