//! A hermetic job as data: what repx writes for `nix/job.nix`, and what the job executor
//! reads back inside the sandbox once Nix has put store paths in place of upstream jobs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Nix;
use crate::graph::id::ToolIdentity;
use crate::graph::{JobIndex, JobInput};
use crate::lab::limits::Limits;
use crate::lab::{Mode, PluginRef};
use crate::plan::Plan;
use crate::store::Store;

#[derive(Debug, Serialize, Deserialize)]
pub struct Spec {
    pub id: String,
    /// The derivation's name.
    pub name: String,
    pub stage: String,
    /// The plugin's store path, or `builtin:NAME` (the executor carries those).
    pub plugin: String,
    /// BLAKE3 of the plugin's bytes, checked by the executor.
    pub plugin_digest: String,
    /// Inside the sandbox: the plugin compiled by its own derivation (see `nix/job.nix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled: Option<PathBuf>,
    pub params: BTreeMap<String, Value>,
    pub inputs: BTreeMap<String, Input>,
    pub outputs: Vec<PathBuf>,
    pub limits: Limits,
    pub tools: Vec<ToolIdentity>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Input {
    Dir(Dir),
    Gather(Vec<Dir>),
}

/// A directory input: an upstream hermetic job (`job`, its id), or a store path. Inside
/// the sandbox `path` is always set.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Dir {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For a gathered job: its id and parameters, for `index.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<BTreeMap<String, Value>>,
}

/// The specs of hermetic job `index` (whose id is `id`) and of every hermetic job upstream
/// of it through hermetic jobs; other inputs are added to the Nix store by content. `ids`
/// holds the id of each of those upstream jobs and of their direct upstream jobs.
pub fn closure(
    plan: &Plan,
    store: &Store,
    nix: &Nix,
    index: JobIndex,
    id: &str,
    ids: &BTreeMap<JobIndex, String>,
) -> Result<Vec<Spec>, String> {
    let id_of = |j: JobIndex| {
        ids.get(&j)
            .cloned()
            .ok_or_else(|| format!("the id of upstream job {j} is not known"))
    };
    let mut specs = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![index];
    while let Some(j) = stack.pop() {
        if !seen.insert(j) {
            continue;
        }
        let id = if j == index {
            id.to_string()
        } else {
            id_of(j)?
        };
        let job = &plan.graph.jobs[j];
        let dir = |up: JobIndex| -> Result<Dir, String> {
            let up_id = id_of(up)?;
            Ok(if plan.graph.jobs[up].mode == Mode::Hermetic {
                Dir {
                    job: Some(up_id),
                    ..Dir::default()
                }
            } else {
                let what = || format!("the output of upstream job {up_id}");
                Dir {
                    path: Some(nix.add_output(&store.output_dir(&up_id), what)?),
                    ..Dir::default()
                }
            })
        };
        let mut inputs = BTreeMap::new();
        for (name, input) in &job.inputs {
            let input = match input {
                JobInput::Path(path) => {
                    let host = plan
                        .input_dir(job.mode, path, store)
                        .map_err(|e| e.to_string())?;
                    Input::Dir(Dir {
                        path: Some(nix.add(&host)?),
                        ..Dir::default()
                    })
                }
                JobInput::Job(up) => Input::Dir(dir(*up)?),
                JobInput::Gather(ups) => Input::Gather(
                    ups.iter()
                        .map(|up| {
                            Ok(Dir {
                                id: Some(id_of(*up)?),
                                params: Some((*plan.graph.jobs[*up].params).clone()),
                                ..dir(*up)?
                            })
                        })
                        .collect::<Result<_, String>>()?,
                ),
            };
            inputs.insert(name.clone(), input);
        }
        for up in job.deps() {
            if plan.graph.jobs[up].mode == Mode::Hermetic {
                stack.push(up);
            }
        }
        specs.push(spec(plan, nix, j, id, inputs)?);
    }
    Ok(specs)
}

fn spec(
    plan: &Plan,
    nix: &Nix,
    index: JobIndex,
    id: String,
    inputs: BTreeMap<String, Input>,
) -> Result<Spec, String> {
    let job = &plan.graph.jobs[index];
    let stage = &plan.lab.stages[&job.stage];
    let resources = &plan.stages[&job.stage];
    let plugin = match &stage.plugin {
        PluginRef::Builtin(name) => format!("builtin:{name}"),
        PluginRef::File(path) => nix.add(path)?,
    };
    Ok(Spec {
        name: derivation_name(&job.stage, &id),
        id,
        stage: job.stage.clone(),
        plugin,
        plugin_digest: resources.plugin.digest.clone(),
        compiled: None,
        params: (*job.params).clone(),
        inputs,
        outputs: stage.outputs.clone(),
        limits: stage.limits,
        tools: resources.tools.to_vec(),
    })
}

/// `repx-STAGE-ID12`, with what a store path name may not hold replaced.
fn derivation_name(stage: &str, id: &str) -> String {
    let stage: String = stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+-._?=".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("repx-{stage}-{}", &id[..id.len().min(12)])
}
