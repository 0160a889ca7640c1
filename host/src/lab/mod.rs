//! The lab: stages, pipelines and runs, as read from `repx.toml`, `lab.nix` or `lab.json`.
//!
//! [`Lab::load`] parses and validates the whole file before anything runs. Every problem
//! is collected (not only the first) into a [`LabError`] naming the file, the line and the
//! key, so a user fixes a lab in one pass. A lab in Nix or JSON is validated by the same
//! parser as TOML (see [`source`]); its problems name the key without a line. Paths in a
//! loaded lab are absolute.

pub mod cluster;
pub mod guard;
mod json;
pub mod limits;
mod locate;
mod parse;
mod source;
mod suggest;
pub mod sweep;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use cluster::{Resources, SlurmSettings};
pub use limits::{Escalation, Limits};
pub use parse::{VALID_NAME_HINT, keys, valid_name};
pub use source::{Format, LAB_FILES};
pub use suggest::did_you_mean;

/// The file name a new lab gets, and the first a directory is searched for.
pub const LAB_FILE: &str = LAB_FILES[0];

/// A validated lab.
#[derive(Debug, Clone)]
pub struct Lab {
    pub name: String,
    /// The lab file itself.
    pub file: PathBuf,
    /// The project directory: the lab file's directory.
    pub dir: PathBuf,
    pub stages: BTreeMap<String, Stage>,
    pub pipelines: BTreeMap<String, Pipeline>,
    pub runs: BTreeMap<String, Run>,
    /// The `[slurm]` table: how `repx run --scheduler slurm` submits this lab's jobs.
    pub slurm: SlurmSettings,
    /// Unknown keys and other things worth telling but not fatal.
    pub warnings: Vec<String>,
    /// For a `lab.nix`: the JSON Nix evaluated it to, which SLURM workers read instead
    /// of evaluating the file again.
    pub evaluated: Option<String>,
}

/// How a stage's plugin sees the world; see the plugin contract in docs/design.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    Pure,
    Impure,
    Hermetic,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Pure => "pure",
            Mode::Impure => "impure",
            Mode::Hermetic => "hermetic",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a stage's plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginRef {
    /// A first-party plugin embedded in the binary (`builtin:make`).
    Builtin(String),
    /// A `.wasm` file, absolute.
    File(PathBuf),
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginRef::Builtin(name) => write!(f, "builtin:{name}"),
            PluginRef::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One declared input of a stage, mounted at `/in/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A project directory (`path:src`), absolute.
    Path(PathBuf),
    /// The output of the upstream stage's job at the same parameter point.
    Stage(String),
    /// The outputs of every job of a swept upstream stage (`stage[*]`).
    Gather(String),
}

impl Input {
    /// The upstream stage this input depends on, if any.
    pub fn upstream(&self) -> Option<&str> {
        match self {
            Input::Path(_) => None,
            Input::Stage(stage) | Input::Gather(stage) => Some(stage),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub plugin: PluginRef,
    /// A pinned digest of the plugin's bytes (hex sha256).
    pub sha256: Option<String>,
    pub mode: Mode,
    pub inputs: BTreeMap<String, Input>,
    /// Parameters with their defaults; runs may override them.
    pub params: BTreeMap<String, Value>,
    /// Files the plugin must leave in `/out`, relative.
    pub outputs: Vec<PathBuf>,
    /// External commands the plugin may run, by name.
    pub tools: Vec<String>,
    /// Globs, relative to the project directory, that an impure stage depends on.
    pub sources: Vec<String>,
    pub limits: Limits,
    /// How many times a failed job of the stage runs again (`repx run --retries` stands in
    /// for it when given).
    pub retries: u32,
    /// How its limits grow with each retry.
    pub escalate: Escalation,
    /// What one job needs on a cluster node (`repx run --scheduler slurm`).
    pub resources: Resources,
    /// One job per item of a list an upstream job writes (`foreach = "STAGE:FILE"`).
    pub foreach: Option<Foreach>,
}

/// A dynamic stage's list: the file `file`, a declared output of stage `stage`, holds a
/// JSON array of objects; the stage runs once per object (see [`crate::graph`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreach {
    pub stage: String,
    pub file: PathBuf,
    /// The most items the list may have (`max_items`).
    pub max_items: usize,
}

/// The most items a list may have unless its stage says otherwise.
pub const MAX_ITEMS: usize = 100_000;

/// Where an item's fields are among a job's parameters: `item.NAME`. A stage's own
/// parameters may not start with it, so the two never clash.
pub const ITEM_PREFIX: &str = "item.";

impl Stage {
    /// The stages this stage's jobs wait for: those it reads, and the one whose list it
    /// runs over.
    pub fn upstream(&self) -> impl Iterator<Item = &str> {
        self.inputs
            .values()
            .filter_map(Input::upstream)
            .chain(self.foreach.as_ref().map(|f| f.stage.as_str()))
    }
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    /// Stage names; the graph order comes from their inputs, not from this list.
    pub stages: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Run {
    pub name: String,
    pub pipelines: Vec<String>,
    /// Parameter overrides; a list is a sweep axis.
    pub params: BTreeMap<String, Value>,
    /// Groups of axes that advance together instead of multiplying.
    pub zip: Vec<Vec<String>>,
}

/// One problem in a lab file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    /// The dotted key the problem is at, e.g. `stages.sum.inputs.data`.
    pub key: String,
    pub message: String,
}

/// Everything wrong with a lab file.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("cannot read lab file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no lab at {}: there is no such file or directory\n  pass --lab a lab file or a \
         directory holding one of {}, or make one with `repx init`",
        path.display(),
        LAB_FILES.join(", ")
    )]
    Missing { path: PathBuf },
    #[error(
        "no lab in {}: it has none of {}\n  make one with `repx init`, or pass --lab FILE",
        dir.display(),
        LAB_FILES.join(", ")
    )]
    NotFound { dir: PathBuf },
    #[error(
        "{}: this lab is written in Nix, but `nix-instantiate` is not on PATH\n  \
         install Nix (on Debian `apt-get install nix-bin`, or run scripts/nix-setup), \
         or describe the lab in repx.toml instead",
        path.display()
    )]
    NixMissing { path: PathBuf },
    #[error("{}: Nix could not evaluate it:\n{message}", path.display())]
    Eval { path: PathBuf, message: String },
    #[error(
        "{}: evaluating it took longer than {} and was stopped\n  a lab.nix evaluates in \
         well under a second: look for a loop that never ends, or allow more with \
         {}=5m",
        path.display(),
        limits::duration(*limit),
        source::EVAL_TIMEOUT_VAR
    )]
    EvalTimeout {
        path: PathBuf,
        limit: std::time::Duration,
    },
    #[error(
        "{}: evaluating it needed more than {} of memory and was stopped\n  look for a list \
         or string that grows without end, or allow more with {}=4G",
        path.display(),
        limits::bytes(*limit),
        source::EVAL_MEMORY_VAR
    )]
    EvalMemory { path: PathBuf, limit: u64 },
    #[error(
        "{var}={value}: expected {}",
        if *var == source::EVAL_TIMEOUT_VAR { "a duration above zero, such as 30s or 5m" } else { "a size above zero, such as 512M or 4G" }
    )]
    EvalBound { var: &'static str, value: String },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match p.line {
            Some(line) => out.push_str(&format!("{}:{line}: ", path.display())),
            None => out.push_str(&format!("{}: ", path.display())),
        }
        if !p.key.is_empty() {
            out.push_str(&format!("`{}`: ", p.key));
        }
        out.push_str(&p.message);
    }
    out
}

/// `file` by an absolute path whose directory is as the system resolves it, without `.`,
/// `..` or links (the file's own name is kept): the directory `repx run` inside the lab
/// starts in, so that `--lab ../lab` from beside it names every path of the lab the same,
/// and its jobs keep their ids.
pub fn resolved(file: PathBuf) -> PathBuf {
    let absolute = std::path::absolute(&file).unwrap_or(file);
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map_or_else(|_| absolute.clone(), |dir| dir.join(name)),
        _ => absolute,
    }
}

impl Lab {
    /// The lab file's directory: what its plugin files and tools given by a path are
    /// relative to.
    pub fn file_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    /// Reads and validates the lab at `path`: a lab file (`.nix` and `.json` by their
    /// extension, anything else TOML), or a directory holding one of [`LAB_FILES`], the
    /// first in that order when it holds several.
    pub fn load(path: &Path) -> Result<Lab, LabError> {
        let (file, ignored) = source::find(path)?;
        let file = resolved(file);
        let mut lab = source::load(&file)?;
        if let Some(other) = ignored.first() {
            // A directory holding two labs is read by precedence; say so, or a user who
            // edits the other one wonders why nothing changes.
            let names: Vec<String> = ignored
                .iter()
                .filter_map(|f| f.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            lab.warnings.push(format!(
                "{} is the lab here; {} beside it {} not read (--lab {} reads it)",
                file.display(),
                names.join(" and "),
                if names.len() == 1 { "is" } else { "are" },
                other.display()
            ));
        }
        Ok(lab)
    }

    /// A problem found after loading (a granted tool missing on this host), named like
    /// the parser's: the file, the line of `key` in a TOML lab, and `key`.
    pub fn problem(&self, key: &[&str], message: String) -> LabError {
        let key = key.iter().map(|k| k.to_string()).collect();
        self.problems(vec![(key, message)])
    }

    /// Several problems found after loading, each at its key, as one error.
    pub fn problems(&self, found: Vec<(Vec<String>, String)>) -> LabError {
        let text = match Format::of(&self.file) {
            Format::Toml => std::fs::read_to_string(&self.file).ok(),
            Format::Nix | Format::Json => None,
        };
        let root = text
            .as_deref()
            .map(|text| (toml::de::DeTable::parse_recoverable(text).0, text));
        LabError::Invalid {
            path: self.file.clone(),
            problems: found
                .into_iter()
                .map(|(path, message)| Problem {
                    line: root
                        .as_ref()
                        .and_then(|(root, text)| locate::line_of(root.get_ref(), text, &path)),
                    key: path.join("."),
                    message,
                })
                .collect(),
        }
    }

    /// The stages of a run, deduplicated, in lab order.
    /// Whether the jobs of stage `name` follow the items of a fan-out one to one: it has
    /// a `foreach`, or reads such a stage one to one (the lab has no cycle).
    pub fn follows_items(&self, name: &str) -> bool {
        let Some(stage) = self.stages.get(name) else {
            return false;
        };
        stage.foreach.is_some()
            || stage.inputs.values().any(|input| match input {
                Input::Stage(up) => self.follows_items(up),
                _ => false,
            })
    }

    pub fn run_stages(&self, run: &Run) -> Vec<&Stage> {
        let mut names: Vec<&str> = run
            .pipelines
            .iter()
            .flat_map(|p| self.pipelines[p].stages.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names.iter().map(|n| &self.stages[*n]).collect()
    }
}

#[cfg(test)]
mod tests {
    /// `docs/lab-reference.md` has one table row per key [`super::keys`] lists, and none
    /// for a key the parser does not take: the reference cannot drift from the parser.
    #[test]
    fn the_reference_documents_every_key() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/lab-reference.md");
        let text = std::fs::read_to_string(path).expect("docs/lab-reference.md");
        let mut documented: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|rest| rest.split_once('`'))
            .map(|(key, _)| key)
            .collect();
        documented.sort_unstable();
        let mut keys = super::keys();
        keys.sort();
        assert_eq!(
            documented, keys,
            "docs/lab-reference.md against the parser's keys"
        );
    }
}
