//! The job as the plugin sees it: parameters, inputs, output directory, mode.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::Result;
use crate::inputs;
use crate::suggest::{closest, fields};

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

    /// The job's parameters, deserialised into `T`. A parameter that the struct `T` has
    /// no field for is an error, not ignored: it is a misspelling in the lab, and the
    /// stage would otherwise run quietly with the default of the one meant.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T> {
        if let (Some(given), Some(known)) = (self.params.as_object(), fields::<T>()) {
            let unknown: Vec<&str> = given
                .keys()
                .map(String::as_str)
                .filter(|name| !known.contains(name))
                .collect();
            if !unknown.is_empty() {
                return Err(unknown_params(&self.stage, &unknown, known).into());
            }
        }
        serde_json::from_value(self.params.clone())
            .map_err(|e| format!("parameters of stage `{}`: {e}", self.stage).into())
    }

    /// The job's parameters as JSON.
    pub fn raw_params(&self) -> &serde_json::Value {
        &self.params
    }

    /// The directory of input `name` (`/in/<name>`), read-only; an error naming the
    /// inputs the stage was given when `name` is not one of them.
    pub fn input(&self, name: &str) -> Result<PathBuf> {
        let dir = Path::new("/in").join(name);
        if dir.is_dir() {
            return Ok(dir);
        }
        Err(missing_input(&self.stage, name, &inputs::names()).into())
    }

    /// The upstream jobs of gather input `name`, in the order of its `index.json`.
    pub fn gather(&self, name: &str) -> Result<Vec<GatherEntry>> {
        let dir = self.input(name)?;
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

/// Why stage `stage` has no input `name`, given inputs `given`, and what to do.
fn missing_input(stage: &str, name: &str, given: &[String]) -> String {
    let given_list = match given {
        [] => "none".to_string(),
        _ => quoted(given.iter().map(String::as_str)),
    };
    // The lab names the inputs; one close to `name` there is the one meant.
    let hint = match given.iter().find(|g| closest(g, [name]).is_some()) {
        Some(_) if given.len() == 1 => format!(": did you mean `{name}`?"),
        Some(close) => format!(": did you mean `{name}` for `{close}`?"),
        None => String::new(),
    };
    format!(
        "stage `{stage}` has no input `{name}` (it was given {given_list}{hint}); \
         name it in `stages.{stage}.inputs` of the lab, or with `repx run --plugin`, \
         pass `--input {name}=DIR`"
    )
}

/// Why stage `stage` refuses parameters `unknown`, when it takes `known`, and what to do.
fn unknown_params(stage: &str, unknown: &[&str], known: &[&str]) -> String {
    let named: Vec<String> = unknown
        .iter()
        .map(|name| match closest(name, known.iter().copied()) {
            Some(meant) => format!("`{name}` (did you mean `{meant}`?)"),
            None => format!("`{name}`"),
        })
        .collect();
    let takes = match known {
        [] => "no parameters".to_string(),
        _ => quoted(known.iter().copied()),
    };
    format!(
        "stage `{stage}` has no parameter{} {}: it takes {takes}; \
         fix `stages.{stage}.params` (or the run's `params`) in the lab, or the \
         `--param KEY=VALUE` of `repx run --plugin`",
        if unknown.len() == 1 { "" } else { "s" },
        named.join(", ")
    )
}

/// `a`, `b`, `c`
fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_input_names_what_was_given() {
        assert_eq!(
            missing_input("sum", "data", &["dta".into()]),
            "stage `sum` has no input `data` (it was given `dta`: did you mean `data`?); \
             name it in `stages.sum.inputs` of the lab, or with `repx run --plugin`, \
             pass `--input data=DIR`"
        );
        assert!(
            missing_input("sum", "data", &["src".into(), "dat".into()])
                .contains("(it was given `src`, `dat`: did you mean `data` for `dat`?)")
        );
        assert!(missing_input("sum", "data", &[]).contains("(it was given none)"));
    }

    #[test]
    fn unknown_params_are_named_with_suggestions() {
        assert_eq!(
            unknown_params("generate", &["nn"], &["n"]),
            "stage `generate` has no parameter `nn` (did you mean `n`?): it takes `n`; \
             fix `stages.generate.params` (or the run's `params`) in the lab, or the \
             `--param KEY=VALUE` of `repx run --plugin`"
        );
        assert!(
            unknown_params("sum", &["a", "b"], &[])
                .starts_with("stage `sum` has no parameters `a`, `b`: it takes no parameters;")
        );
    }
}
