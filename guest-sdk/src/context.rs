//! The job as the plugin sees it: parameters, inputs, output directory, mode.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::Result;

/// How the job runs; see the plugin contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Inputs read-only, fresh `/out`, no `/work`.
    Pure,
    /// The project directory is mounted read-write at `/work`.
    Impure,
    /// As pure, inside the Nix sandbox.
    Hermetic,
}

/// One upstream job of a gather input (`stage[*]`), from its `index.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct GatherEntry {
    /// The upstream job's id.
    pub id: String,
    /// Its output directory, as a guest path.
    #[serde(skip)]
    pub path: PathBuf,
    /// The directory's name inside the gather input.
    pub dir: String,
    /// The upstream job's parameters.
    pub params: serde_json::Value,
}

#[derive(Deserialize)]
struct GatherIndex {
    jobs: Vec<GatherEntry>,
}

/// Everything a stage gets from the host.
#[derive(Debug)]
pub struct Context {
    params: serde_json::Value,
    job_id: String,
    stage: String,
    mode: Mode,
}

impl Context {
    pub(crate) fn from_env() -> Result<Context> {
        let params = match std::env::var("REPX_PARAMS") {
            Ok(json) => serde_json::from_str(&json)
                .map_err(|e| format!("REPX_PARAMS is not a JSON object: {e}"))?,
            Err(_) => serde_json::Value::Object(Default::default()),
        };
        let mode = match std::env::var("REPX_MODE").as_deref() {
            Ok("impure") => Mode::Impure,
            Ok("hermetic") => Mode::Hermetic,
            _ => Mode::Pure,
        };
        Ok(Context {
            params,
            job_id: std::env::var("REPX_JOB_ID").unwrap_or_default(),
            stage: std::env::var("REPX_STAGE").unwrap_or_default(),
            mode,
        })
    }

    /// The job's parameters, deserialised into `T`.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.params.clone())
            .map_err(|e| format!("parameters of stage `{}`: {e}", self.stage).into())
    }

    /// The job's parameters as JSON.
    pub fn raw_params(&self) -> &serde_json::Value {
        &self.params
    }

    /// The directory of input `name` (`/in/<name>`), read-only.
    pub fn input(&self, name: &str) -> PathBuf {
        Path::new("/in").join(name)
    }

    /// The upstream jobs of gather input `name`, in the order of its `index.json`.
    pub fn gather(&self, name: &str) -> Result<Vec<GatherEntry>> {
        let dir = self.input(name);
        let index = std::fs::read_to_string(dir.join("index.json"))
            .map_err(|e| format!("input `{name}` is not a gather input: {e}"))?;
        let index: GatherIndex = serde_json::from_str(&index)
            .map_err(|e| format!("{}/index.json: {e}", dir.display()))?;
        Ok(index
            .jobs
            .into_iter()
            .map(|mut entry| {
                entry.path = dir.join(&entry.dir);
                entry
            })
            .collect())
    }

    /// The output directory, `/out`.
    pub fn out(&self) -> &Path {
        Path::new("/out")
    }

    /// The project directory in impure mode (`/work`), `None` otherwise.
    pub fn work(&self) -> Option<&Path> {
        (self.mode == Mode::Impure).then(|| Path::new("/work"))
    }

    /// Scratch space, discarded after the job.
    pub fn scratch(&self) -> &Path {
        Path::new("/tmp")
    }

    /// The job's id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The stage's name in the lab.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// How the job runs.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}
