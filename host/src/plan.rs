//! A run plan: the lab, its job graph, and what each stage resolves to on this host
//! (plugin bytes, granted tools, the content hashes of `path:` inputs, what impure stages
//! depend on).
//!
//! Resolving reads the filesystem but writes nothing and runs nothing; ids of jobs whose
//! upstream keys are known follow from it (see [`Plan::id`]). The store's copy of a `path:`
//! input (its snapshot) is taken only when a job is about to read it ([`Plan::snapshot`]).
//!
//! `path:` inputs and links follow one rule: repx follows no link in a `path:` input. The
//! input's own directory, and every directory between the project directory and it, must be
//! a directory and not a link (one is refused before anything runs, naming it); a link
//! inside the input is an entry like a file, copied as a link with its target text and
//! never followed, by the snapshot of a pure or hermetic job and by the sandbox of an
//! impure one. An input named outside the project (`repx run --input`) is checked from its
//! own directory down. So what a job reads of an input is always inside that input, however
//! an earlier job left the project: an impure job that swaps `data/` for a link to a
//! directory outside makes the next run stop with an error, not read the outside.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::graph::id::{Identity, InputKey, ToolIdentity};
use crate::graph::{Job, JobGraph, JobIndex, JobInput};
use crate::lab::{Format, Lab, Mode, PluginRef};
use crate::sources::Sources;
use crate::store::{self, Store};
use crate::wasm::{Plugin, builtin};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("stage `{stage}`: {message}")]
    Stage { stage: String, message: String },
    #[error("stage `{stage}`: {message}")]
    Pin { stage: String, message: String },
    #[error("input {}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    /// A key of the lab that this host cannot satisfy (a tool not installed).
    #[error(transparent)]
    Lab(#[from] crate::lab::LabError),
    /// A plan grown elsewhere that this one cannot grow the same way (see [`Plan::replay`]).
    #[error("{0}")]
    Replay(String),
}

/// What a stage resolves to on this host.
pub struct StageResources {
    pub plugin: Plugin,
    pub tools: Arc<[ToolIdentity]>,
}

/// Where the tools of hermetic jobs must be.
const NIX_STORE: &str = "/nix/store/";

pub struct Plan {
    pub lab: Lab,
    pub graph: JobGraph,
    pub stages: BTreeMap<String, StageResources>,
    /// Content hash of each `path:` input of a pure or hermetic job, as it lies in the
    /// project: the name of its snapshot in the store (see [`Plan::snapshot`]).
    pub snapshots: HashMap<PathBuf, String>,
    /// What each impure stage depends on, and which of its jobs are up to date.
    pub sources: HashMap<String, Sources>,
    /// The snapshots this process has found or put in the store.
    taken: Mutex<HashSet<String>>,
    /// Jobs done in an earlier round of this run, with their keys: the dispatcher takes
    /// them as done (see [`crate::sched::fanout`]).
    pub earlier: HashMap<JobIndex, String>,
    /// Jobs done in the store whose list a fan-out of this lab does not take (written
    /// before the list was checked, or before `max_items` was lowered), with what is wrong:
    /// such a job runs again (see [`crate::sched::decide`]), so that it fails with the
    /// message, or writes a list that is taken, and the lab is never locked out by it.
    pub bad_lists: BTreeMap<JobIndex, String>,
    /// The lists the graph grew by, one step at a time, each list as the id of the job
    /// that wrote it and its file: a SLURM worker grows its plan by the same steps
    /// ([`Plan::replay`]), so job indices agree.
    pub grown: Vec<Vec<(String, PathBuf)>>,
}

impl Plan {
    /// Resolves `graph` on this host, then grows it by the lists of fan-outs whose job
    /// is done in `store` (see [`Plan::grow`]).
    pub fn new(lab: Lab, graph: JobGraph, store: &Store) -> Result<Plan, PlanError> {
        let mut plan = Plan::resolve(lab, graph, store)?;
        plan.grow(store)?;
        Ok(plan)
    }

    /// Resolves `graph` and grows it by exactly the lists of `steps`, in their order, as
    /// another process grew its plan ([`Plan::grown`]): the jobs have the same indices
    /// there and here. A list missing from the store is an error.
    pub fn replay(
        lab: Lab,
        graph: JobGraph,
        store: &Store,
        steps: &[Vec<(String, PathBuf)>],
    ) -> Result<Plan, PlanError> {
        let mut plan = Plan::resolve(lab, graph, store)?;
        for step in steps {
            let ids = plan.static_ids(store);
            let mut lists = Vec::new();
            for (id, file) in step {
                let waiting =
                    plan.graph.waiting.iter().find(|w| {
                        w.file == *file && ids[w.splitter].as_deref() == Some(id.as_str())
                    });
                let Some(waiting) = waiting.cloned() else {
                    return Err(PlanError::Replay(format!(
                        "no job with id {id} writes a list {} in this plan: the lab or the store changed since the run began; run again",
                        file.display()
                    )));
                };
                let items =
                    crate::graph::items::read(&store.output_dir(id), file, waiting.max_items)
                        .map_err(|message| {
                            PlanError::Replay(format!(
                                "the list {} of job {} for stage `{}` {message}",
                                file.display(),
                                &id[..12.min(id.len())],
                                waiting.stage
                            ))
                        })?;
                lists.push((waiting.splitter, file.clone(), items));
            }
            let known = plan.graph.jobs.len();
            plan.graph.grow(&plan.lab, lists);
            plan.grown.push(step.clone());
            plan.resolve_jobs(known, store)?;
        }
        Ok(plan)
    }

    /// Resolves `graph` on this host, as it is.
    fn resolve(lab: Lab, graph: JobGraph, store: &Store) -> Result<Plan, PlanError> {
        let path_var = std::env::var_os("PATH");
        let mut stages = BTreeMap::new();
        // Every stage of the runs, those of fan-outs not known yet too.
        let mut used: std::collections::BTreeSet<&str> =
            graph.jobs.iter().map(|j| j.stage.as_str()).collect();
        for run in graph.runs.keys() {
            used.extend(
                lab.run_stages(&lab.runs[run])
                    .iter()
                    .map(|s| s.name.as_str()),
            );
        }
        for name in used {
            let stage = &lab.stages[name];
            let stage_err = |message: String| PlanError::Stage {
                stage: name.to_string(),
                message,
            };
            let bytes = match &stage.plugin {
                PluginRef::Builtin(b) => builtin::bytes(b)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| stage_err(format!("no built-in plugin `{b}`")))?,
                PluginRef::File(path) => std::fs::read(path)
                    .map_err(|e| stage_err(format!("plugin {}: {e}", path.display())))?,
            };
            check_pin(&lab, stage, &bytes)?;
            check_params(&lab, &graph, stage, &bytes)?;
            let plugin = Plugin::new(stage.plugin.to_string(), bytes);
            let tools = stage
                .tools
                .iter()
                .map(|t| {
                    crate::wasm::tools::resolve(t, lab.file_dir(), path_var.as_ref(), |path| store.tool_digest(path)).map_err(|reason| {
                        lab.problem(
                            &["stages", name, "tools"],
                            format!("{reason}; if it is installed elsewhere, fix the name or give its absolute path"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let hermetic = graph
                .jobs
                .iter()
                .any(|j| j.stage == name && j.mode == Mode::Hermetic);
            if let Some(tool) = tools.iter().find(|t| hermetic && !in_nix_store(&t.path)) {
                return Err(stage_err(format!(
                    "tool `{}` is {}, not a Nix store path: hermetic jobs run in the Nix sandbox, \
                     which holds nothing else; grant a store path (e.g. `tools = [\"{NIX_STORE}…-busybox/bin/sh\"]`), \
                     or run the stage pure",
                    tool.name,
                    tool.path.display()
                )));
            }
            stages.insert(
                name.to_string(),
                StageResources {
                    plugin,
                    tools: tools.into(),
                },
            );
        }
        let mut plan = Plan {
            lab,
            graph,
            stages,
            snapshots: HashMap::new(),
            sources: HashMap::new(),
            taken: Mutex::new(HashSet::new()),
            earlier: HashMap::new(),
            bad_lists: BTreeMap::new(),
            grown: Vec::new(),
        };
        plan.resolve_jobs(0, store)?;
        Ok(plan)
    }

    /// Adds the items of every fan-out whose list is now in `store`, again until none is
    /// new (a chain of fan-outs), and resolves the jobs that follow; returns the index of
    /// the first new job (the count of jobs when none is).
    pub fn grow(&mut self, store: &Store) -> Result<JobIndex, PlanError> {
        let first = self.graph.jobs.len();
        // Only a fan-out whose list is not known yet can grow the plan: without one, no
        // job's id is needed here (a large sweep's ids cost a hash of each job).
        while !self.graph.waiting.is_empty() {
            let known = self.graph.jobs.len();
            let ids = self.static_ids(store);
            let mut lists = Vec::new();
            for waiting in self.graph.waiting.clone() {
                let listed = |(s, f, _): &(JobIndex, PathBuf, _)| {
                    *s == waiting.splitter && *f == waiting.file
                };
                if self.graph.items(waiting.splitter, &waiting.file).is_some()
                    || lists.iter().any(listed)
                {
                    continue;
                }
                let Some(id) = &ids[waiting.splitter] else {
                    continue;
                };
                if !store.is_done(id) {
                    continue;
                }
                let items = match crate::graph::items::read(
                    &store.output_dir(id),
                    &waiting.file,
                    waiting.max_items,
                ) {
                    Ok(items) => items,
                    Err(message) => {
                        let what = format!(
                            "the list {} it wrote for stage `{}` {message}",
                            waiting.file.display(),
                            waiting.stage
                        );
                        self.bad_lists.entry(waiting.splitter).or_insert(what);
                        continue;
                    }
                };
                lists.push((waiting.splitter, waiting.file.clone(), items));
            }
            if lists.is_empty() {
                break;
            }
            let step = lists
                .iter()
                .map(|(splitter, file, _)| {
                    (ids[*splitter].clone().unwrap_or_default(), file.clone())
                })
                .collect();
            self.grown.push(step);
            self.graph.grow(&self.lab, lists);
            if self.graph.jobs.len() == known {
                break;
            }
            self.resolve_jobs(known, store)?;
        }
        Ok(first)
    }

    /// Resolves what the jobs from `first` on read on this host: the content hashes of
    /// their `path:` inputs, what their impure stages depend on.
    fn resolve_jobs(&mut self, first: JobIndex, store: &Store) -> Result<(), PlanError> {
        let (lab, graph) = (&self.lab, &self.graph);
        // Inputs first: a link on an input's way stops the plan before anything reads it.
        let mut live = HashSet::new();
        for job in &graph.jobs[first..] {
            for input in job.inputs.values() {
                let JobInput::Path(path) = input else {
                    continue;
                };
                if job.mode == Mode::Impure {
                    if live.insert(path) {
                        open_input(lab, path)?;
                    }
                } else if !self.snapshots.contains_key(path) {
                    self.snapshots
                        .insert(path.clone(), content_hash(lab, path, store)?);
                }
            }
        }
        for job in &graph.jobs[first..] {
            let stage = &lab.stages[&job.stage];
            if job.mode == Mode::Impure && !self.sources.contains_key(&job.stage) {
                let jobs = graph
                    .jobs
                    .iter()
                    .filter(|j| j.stage == job.stage && j.mode == Mode::Impure)
                    .count();
                let loaded = Sources::load(lab, stage, store.root(), jobs).map_err(|e| {
                    PlanError::Stage {
                        stage: job.stage.clone(),
                        message: format!("reading what it depends on: {e}"),
                    }
                })?;
                self.sources.insert(job.stage.clone(), loaded);
            }
        }
        Ok(())
    }

    /// The hash of `path`, a `path:` input of `job`, that the job reads a snapshot of;
    /// `None` for an impure job, which reads the live directory.
    pub fn snapshot_hash(&self, job: &Job, path: &Path) -> Option<&str> {
        match job.mode {
            Mode::Impure => None,
            _ => self.snapshots.get(path).map(String::as_str),
        }
    }

    /// The directory a job of `mode` reads for its `path:` input `path`: for an impure job
    /// the live directory, checked again to have no link on its way (an earlier job of the
    /// run may have made one); otherwise its snapshot in the store, taken now if it is not
    /// there yet (see [`Plan::snapshot`]).
    pub fn input_dir(&self, mode: Mode, path: &Path, store: &Store) -> Result<PathBuf, PlanError> {
        match mode {
            Mode::Impure => open_input(&self.lab, path).map(|_| path.to_path_buf()),
            _ => self.snapshot(path, store),
        }
    }

    /// The snapshot of the `path:` input `path` in the store, `snapshots/<hash>`: found
    /// there, or copied now. The copy is hashed from the bytes it copies, in one pass, and
    /// kept only if that hash is the one the job ids were made with: an input changed since
    /// it was hashed is an error (run again), never bytes under another content's name.
    pub fn snapshot(&self, path: &Path, store: &Store) -> Result<PathBuf, PlanError> {
        let err = |message: String| PlanError::Input {
            path: path.to_path_buf(),
            message,
        };
        let hash = self
            .snapshots
            .get(path)
            .ok_or_else(|| err("no job of the plan snapshots it".into()))?;
        let target = store.snapshots().join(hash);
        // One job at a time takes a snapshot; the others wait for it.
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let present = std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir());
        if taken.contains(hash) || present {
            taken.insert(hash.clone());
            return Ok(target);
        }
        let tree = open_input(&self.lab, path)?;
        let inner = left_out(path, store);
        // Staged under a name of this process's own: SLURM workers may snapshot at once.
        let tmp = store.tmp_path(&format!("snapshot-{hash}"));
        store::remove_tree(&tmp).map_err(|e| err(e.to_string()))?;
        let copied = match tree.snapshot(&tmp, inner.as_deref()) {
            Ok(copied) => copied,
            Err(e) => {
                // A failed snapshot leaves nothing in the store.
                let _ = store::remove_tree(&tmp);
                return Err(err(e.to_string()));
            }
        };
        if copied.hash != *hash {
            let _ = store::remove_tree(&tmp);
            return Err(err(format!(
                "it changed while this run used it (hashed {}, then copied as {}); \
                 no job read the changed copy: run again",
                &hash[..12],
                &copied.hash[..12]
            )));
        }
        // Renamed before its root is sealed: moving a directory needs write permission on
        // it, which only root has without.
        match std::fs::rename(&tmp, &target) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o555))
                    .map_err(|e| err(e.to_string()))?;
            }
            Err(e) => {
                // Another process put the same content there first.
                let _ = store::remove_tree(&tmp);
                if !target.is_dir() {
                    return Err(err(e.to_string()));
                }
            }
        }
        taken.insert(hash.clone());
        Ok(target)
    }

    /// The job's id, once the keys of its upstream jobs are known.
    pub fn id(&self, index: JobIndex, keys: &[Option<String>]) -> Option<String> {
        let job = &self.graph.jobs[index];
        let stage = &self.lab.stages[&job.stage];
        let resources = &self.stages[&job.stage];
        let mut inputs = Vec::with_capacity(job.inputs.len());
        for (name, input) in &job.inputs {
            let key = match input {
                JobInput::Path(path) => match self.snapshot_hash(job, path) {
                    Some(hash) => InputKey::Path(hash),
                    // An impure job reads the live directory; see `crate::sources`.
                    None => InputKey::Path(path.to_str().unwrap_or_default()),
                },
                JobInput::Job(up) => InputKey::Job(keys[*up].as_deref()?),
                JobInput::Gather(ups) => InputKey::Gather(
                    ups.iter()
                        .map(|u| keys[*u].as_deref())
                        .collect::<Option<_>>()?,
                ),
            };
            inputs.push((name.as_str(), key));
        }
        let identity = Identity {
            stage: &job.stage,
            plugin_digest: &resources.plugin.digest,
            mode: job.mode,
            params: self.graph.params_json(index),
            inputs,
            outputs: &stage.outputs,
            tools: &resources.tools,
        };
        Some(identity.id())
    }

    /// Every job's id where it follows from the store's current state: a job downstream
    /// of an impure job that has not run yet has none.
    pub fn static_ids(&self, store: &Store) -> Vec<Option<String>> {
        let mut ids = vec![None; self.graph.jobs.len()];
        let mut keys: Vec<Option<String>> = vec![None; self.graph.jobs.len()];
        for index in 0..self.graph.jobs.len() {
            ids[index] = self.id(index, &keys);
            keys[index] = ids[index]
                .as_ref()
                .and_then(|id| self.key(index, id, store));
        }
        ids
    }

    /// What downstream jobs see of a done job: its id, or for an impure job the hash of
    /// its current output, so identical rebuilds do not re-run what follows.
    pub fn key(&self, index: JobIndex, id: &str, store: &Store) -> Option<String> {
        if self.graph.jobs[index].mode == Mode::Impure {
            store.done(id).map(|record| record.hash)
        } else {
            Some(id.to_string())
        }
    }
}

/// A plugin that declares its parameters (see [`crate::wasm::schema`]) takes those only,
/// each of its declared type: the stage's defaults and every value the selected runs give
/// it are checked here, before any job runs, and every problem is named at once. A plugin
/// that declares nothing takes anything.
fn check_params(
    lab: &Lab,
    graph: &JobGraph,
    stage: &crate::lab::Stage,
    bytes: &[u8],
) -> Result<(), PlanError> {
    use crate::wasm::schema::{Schema, SchemaError, Type, a};
    let schema = match Schema::read(bytes) {
        Ok(Some(schema)) => schema,
        // Bytes that are not WebAssembly are refused when the plugin is compiled, with
        // the message every malformed plugin gets (not a valid WASI plugin, rebuild it).
        Ok(None) | Err(SchemaError::Wasm(_)) => return Ok(()),
        Err(e) => {
            return Err(PlanError::Stage {
                stage: stage.name.clone(),
                message: format!("plugin {}: {e}", stage.plugin),
            });
        }
    };
    let declared = match &stage.plugin {
        PluginRef::File(path) => format!(
            "its plugin declares {} (see `repx plugin inspect {}`)",
            schema.signatures(),
            path.display()
        ),
        PluginRef::Builtin(_) => format!("its plugin declares {}", schema.signatures()),
    };
    let mistyped = |key: &str, value: &serde_json::Value, ty: Type| {
        format!(
            "stage `{}`: `{key}` = {value} is {}, but its plugin takes {} for `{key}`; {declared}",
            stage.name,
            a(Type::of(value)),
            a(ty.as_str()),
        )
    };
    let mut problems = Vec::new();
    for (key, default) in &stage.params {
        let at = vec![
            "stages".to_string(),
            stage.name.clone(),
            "params".to_string(),
            key.clone(),
        ];
        match schema.get(key) {
            None => problems.push((
                at,
                format!(
                    "stage `{}` passes `{key}`, which its plugin does not take; {declared}",
                    stage.name
                ),
            )),
            Some(param) if !param.ty.accepts(default) => {
                problems.push((at, mistyped(key, default, param.ty)));
            }
            Some(_) => {}
        }
    }
    for run_name in graph.runs.keys() {
        let run = &lab.runs[run_name];
        if !lab.run_stages(run).iter().any(|s| s.name == stage.name) {
            continue;
        }
        for (key, value) in &run.params {
            // A run's value reaches the stages that have the key, see `graph`.
            let Some(param) = schema.get(key).filter(|_| stage.params.contains_key(key)) else {
                continue;
            };
            let values = match value {
                serde_json::Value::Array(axis) => axis.iter().collect(),
                one => vec![one],
            };
            if let Some(bad) = values.into_iter().find(|v| !param.ty.accepts(v)) {
                let at = vec![
                    "runs".to_string(),
                    run_name.clone(),
                    "params".to_string(),
                    key.clone(),
                ];
                problems.push((at, mistyped(key, bad, param.ty)));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(lab.problems(problems).into())
    }
}

/// A stage's plugin must match its pin, and a plugin from outside the project directory
/// must have one: a file anyone else can change is trusted only by its digest. A file in
/// the Nix store needs none: the store is read-only and a store path stands for one
/// content (hashed into its name, or built by one recipe), so the lab that names the path
/// has chosen the bytes, as `"${./plugin.wasm}"` or a package's output does in a lab.nix.
fn check_pin(lab: &Lab, stage: &crate::lab::Stage, bytes: &[u8]) -> Result<(), PlanError> {
    // Only when there is a pin to check or one to suggest: SHA-256 of an interpreter's
    // component (18 MB for Python) is a tenth of loading it from the compiled cache.
    let actual = || crate::wasm::sha256_hex(bytes);
    let pin_err = |message| PlanError::Pin {
        stage: stage.name.clone(),
        message,
    };
    match (&stage.sha256, &stage.plugin) {
        (Some(pinned), plugin) => {
            let actual = actual();
            if *pinned == actual {
                return Ok(());
            }
            Err(pin_err(format!(
                "plugin {plugin} does not match its pin\n  pinned sha256: {pinned}\n  actual sha256: {actual}\n\
                 if the plugin changed on purpose, pin it again: {}; no job was run",
                how_to_pin(lab, &stage.name, &actual)
            )))
        }
        (None, PluginRef::File(path)) if !inside(path, &lab.dir) && !in_nix_store(path) => {
            Err(pin_err(format!(
                "plugin {} is outside the project directory, so it must be pinned: {}",
                path.display(),
                how_to_pin(lab, &stage.name, &actual())
            )))
        }
        _ => Ok(()),
    }
}

/// How to pin `stage` to `digest`, in the language of the lab file.
fn how_to_pin(lab: &Lab, stage: &str, digest: &str) -> String {
    match Format::of(&lab.file) {
        Format::Toml => {
            format!("add `sha256 = \"{digest}\"` to [stages.{stage}] (or run `repx plugin pin`)")
        }
        Format::Nix => format!(
            "add `sha256 = \"{digest}\";` to the mkStage of `{stage}` in {}",
            lab.file.display()
        ),
        Format::Json => format!(
            "add `\"sha256\": \"{digest}\"` to stages.{stage} in {}",
            lab.file.display()
        ),
    }
}

/// Whether `path` names a file in the Nix store, and is one once symlinks are resolved.
pub(crate) fn in_nix_store(path: &Path) -> bool {
    path.starts_with(NIX_STORE) && inside(path, Path::new(NIX_STORE))
}

fn inside(path: &Path, dir: &Path) -> bool {
    match (path.canonicalize(), dir.canonicalize()) {
        (Ok(path), Ok(dir)) => path.starts_with(dir),
        _ => false,
    }
}

/// Opens the `path:` input `path` by the rule of this module: from the project directory
/// down (for an input outside it, from the input's own directory), no directory on the way
/// may be a link.
fn open_input(lab: &Lab, path: &Path) -> Result<store::Tree, PlanError> {
    let (base, relative) = match path.strip_prefix(&lab.dir) {
        Ok(relative) => (lab.dir.as_path(), relative),
        Err(_) => match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => (parent, Path::new(name)),
            _ => (path, Path::new("")),
        },
    };
    store::Tree::open_beneath(base, relative).map_err(|e| match e {
        store::TreeError::Link { path: link } => PlanError::Input {
            path: path.to_path_buf(),
            message: format!(
                "{} is a link (to {:?}), and repx follows no link in a `path:` input's way: \
                 name the directory it stands for instead, inside the project, or copy it there",
                link.display(),
                std::fs::read_link(&link).unwrap_or_default()
            ),
        },
        other => PlanError::Input {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    })
}

/// The content hash of a `path:` input as it lies, what its snapshot will be named. A store
/// inside the input (`--input data=.` beside `.repx`) is left out: it is no part of the
/// source, and copying it into itself would never end.
fn content_hash(lab: &Lab, path: &Path, store: &Store) -> Result<String, PlanError> {
    let err = |e: &dyn std::fmt::Display| PlanError::Input {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let inner = left_out(path, store);
    if inner
        .as_ref()
        .is_some_and(|inner| inner.as_os_str().is_empty())
    {
        return Err(err(&"it is the store itself; name a directory of sources"));
    }
    let tree = open_input(lab, path)?;
    Ok(tree.hash(inner.as_deref()).map_err(|e| err(&e))?.hash)
}

/// What of the input `path` is no part of it, relative to it: the store, when it lies
/// inside (empty when it is the input), else the project's `.repx` link to its store.
fn left_out(path: &Path, store: &Store) -> Option<PathBuf> {
    store_inside(path, store.root()).or_else(|| {
        let link = path.join(store::DEFAULT_DIR);
        let is_link = std::fs::symlink_metadata(&link).is_ok_and(|m| m.is_symlink());
        is_link.then(|| store::DEFAULT_DIR.into())
    })
}

/// Where the store lies inside `input`, relative to it (empty when it is the input);
/// `None` when it lies elsewhere.
fn store_inside(input: &Path, store: &Path) -> Option<PathBuf> {
    let input = input.canonicalize().ok()?;
    let store = store.canonicalize().ok()?;
    store.strip_prefix(&input).ok().map(Path::to_path_buf)
}
