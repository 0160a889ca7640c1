//! The plugin contract as directories and environment: where a job's inputs, output and
//! scratch appear, and what it is told.
//!
//! Jobs run here and jobs run by Nix inside its sandbox get their policy from this one
//! place, so that the same job sees exactly the same thing wherever it runs, and a
//! hermetic output can be byte-identical to the pure one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::lab::Mode;
use crate::wasm::policy::{Mount, Policy};

/// What an input of a job is on the host.
pub enum Source {
    /// A directory, mounted read-only.
    Dir(PathBuf),
    /// A gather input: the output directory of each upstream job.
    Gather(Vec<Gathered>),
}

pub struct Gathered {
    pub id: String,
    pub dir: PathBuf,
    pub params: BTreeMap<String, Value>,
}

/// One job's place on the host.
pub struct Job<'a> {
    pub mode: Mode,
    pub id: &'a str,
    pub stage: &'a str,
    pub params: &'a BTreeMap<String, Value>,
    pub inputs: Vec<(&'a str, Source)>,
    /// A directory holding one empty subdirectory per input (see [`make_listing`]).
    pub listing: Option<PathBuf>,
    /// A directory of the job's own, where gather inputs are laid out.
    pub private: &'a Path,
    pub out: PathBuf,
    pub scratch: PathBuf,
    /// The project directory, for impure jobs.
    pub work: Option<PathBuf>,
}

/// The job's policy: inputs read-only at `/in/<name>`, `/out`, `/tmp`, `/work` when
/// impure, the contract's environment, and a seed from the job id when deterministic.
pub fn policy(job: Job) -> Result<Policy, String> {
    let read_only = |host, guest: String| Mount {
        host,
        guest,
        writable: false,
    };
    let mut mounts = Vec::new();
    if let Some(listing) = job.listing {
        mounts.push(read_only(listing, "/in".into()));
    }
    for (name, source) in job.inputs {
        let guest = format!("/in/{name}");
        match source {
            Source::Dir(dir) => mounts.push(read_only(dir, guest)),
            Source::Gather(jobs) => {
                // One directory per upstream job, each its own read-only mount, under a
                // directory that holds only their names and `index.json`.
                let dir = job.private.join(format!("gather-{name}"));
                // There even when it gathers no job: an empty fan-out.
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let mut index = Vec::new();
                for up in jobs {
                    std::fs::create_dir_all(dir.join(&up.id)).map_err(|e| e.to_string())?;
                    index.push(serde_json::json!({
                        "id": up.id,
                        "dir": up.id,
                        "params": up.params,
                    }));
                    mounts.push(read_only(up.dir, format!("{guest}/{}", up.id)));
                }
                let index = serde_json::to_vec_pretty(&serde_json::json!({ "jobs": index }))
                    .map_err(|e| e.to_string())?;
                std::fs::write(dir.join("index.json"), index).map_err(|e| e.to_string())?;
                mounts.push(read_only(dir, guest));
            }
        }
    }
    mounts.push(Mount {
        host: job.out,
        guest: "/out".into(),
        writable: true,
    });
    mounts.push(Mount {
        host: job.scratch,
        guest: "/tmp".into(),
        writable: true,
    });
    let impure = job.mode == Mode::Impure;
    if let Some(work) = job.work.filter(|_| impure) {
        mounts.push(Mount {
            host: work,
            guest: "/work".into(),
            writable: true,
        });
    }
    let params = serde_json::to_string(job.params).map_err(|e| e.to_string())?;
    Ok(Policy {
        mode: job.mode,
        mounts,
        env: vec![
            ("REPX_PARAMS".into(), params),
            ("REPX_JOB_ID".into(), job.id.to_string()),
            ("REPX_STAGE".into(), job.stage.to_string()),
            ("REPX_MODE".into(), job.mode.as_str().into()),
        ],
        args: vec![job.stage.to_string()],
        cwd: impure.then(|| "/work".to_string()),
        seed: (!impure).then(|| *blake3::hash(job.id.as_bytes()).as_bytes()),
    })
}

/// Fills `dir` with one empty directory per input name: mounted at `/in`, it lets a
/// plugin list its inputs, each of which is its own mount below it.
pub fn make_listing<'a>(
    dir: &Path,
    inputs: impl Iterator<Item = &'a String>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for input in inputs {
        std::fs::create_dir_all(dir.join(input))?;
    }
    Ok(())
}
