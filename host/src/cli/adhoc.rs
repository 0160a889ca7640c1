//! `repx run --plugin FILE.wasm`: one plugin run ad hoc, as a one-stage lab made from the
//! command line (`--input NAME=DIR`, `--param KEY=VALUE`), and where its output goes.
//!
//! The job is an ordinary job of the store of the current directory (or `--store`), so
//! `repx log` and `repx show` find it there without a lab. Its output is printed by path;
//! `--out DIR` copies it, and replaces what is in DIR only with `--force-out`. The copy is
//! filled beside DIR and renamed into place, so a link planted at DIR during the run is
//! not followed, and with `--force-out` the old DIR is removed only once the new one is
//! complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::RunArgs;
use super::error::{CliError, invalid};
use super::render::short;
use crate::lab::{Input, Lab, Mode, Pipeline, PluginRef, Run, Stage};
use crate::plan::Plan;
use crate::store::{self, Store};

/// A one-stage lab around a plugin file, in the current directory.
pub(super) fn lab(plugin: &Path, args: &RunArgs, mode: Option<Mode>) -> Result<Lab, CliError> {
    let dir = std::env::current_dir()?;
    let plugin = std::path::absolute(plugin)?;
    if !plugin.is_file() {
        return Err(invalid(format!(
            "--plugin {}: no such file",
            plugin.display()
        )));
    }
    let name = plugin
        .file_stem()
        .map(|s| {
            s.to_string_lossy().replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                "-",
            )
        })
        .unwrap_or_else(|| "plugin".into());
    let mut inputs = BTreeMap::new();
    for spec in &args.inputs {
        let (input, path) = spec
            .split_once('=')
            .ok_or_else(|| invalid(format!("--input {spec}: write it as NAME=PATH")))?;
        // The name becomes `/in/NAME` and a directory of the job: checked as a lab's are.
        if !crate::lab::valid_name(input) {
            return Err(invalid(format!(
                "--input {spec}: `{input}` is not a valid input name: {}",
                crate::lab::VALID_NAME_HINT
            )));
        }
        let path = std::path::absolute(path)?;
        if !path.is_dir() {
            return Err(invalid(format!(
                "--input {spec}: {} is not a directory",
                path.display()
            )));
        }
        inputs.insert(input.to_string(), Input::Path(path));
    }
    let mut params = BTreeMap::new();
    for spec in &args.params {
        let (key, value) = spec
            .split_once('=')
            .ok_or_else(|| invalid(format!("--param {spec}: write it as KEY=VALUE")))?;
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.into()));
        params.insert(key.to_string(), value);
    }
    if let Some(out) = &args.out {
        check_out(out, args.force_out)?;
    }
    let stage = Stage {
        name: name.clone(),
        plugin: PluginRef::File(plugin.clone()),
        // Naming the file on the command line trusts it as it is now.
        sha256: Some(crate::wasm::sha256_hex(&std::fs::read(&plugin)?)),
        mode: mode.unwrap_or(Mode::Pure),
        inputs,
        params,
        outputs: Vec::new(),
        tools: Vec::new(),
        sources: Vec::new(),
        limits: Default::default(),
        retries: 0,
        escalate: Default::default(),
        resources: Default::default(),
        foreach: None,
    };
    Ok(Lab {
        name: name.clone(),
        file: plugin,
        dir,
        stages: [(name.clone(), stage)].into(),
        pipelines: [(
            name.clone(),
            Pipeline {
                name: name.clone(),
                stages: vec![name.clone()],
            },
        )]
        .into(),
        runs: [(
            name.clone(),
            Run {
                name: name.clone(),
                pipelines: vec![name],
                params: BTreeMap::new(),
                zip: vec![],
            },
        )]
        .into(),
        slurm: Default::default(),
        warnings: Vec::new(),
        evaluated: None,
    })
}

/// Refuses, before anything runs, an `--out` that holds something, unless `force` says to
/// replace it; what is not a directory is never replaced.
fn check_out(out: &Path, force: bool) -> Result<(), CliError> {
    let Ok(meta) = std::fs::symlink_metadata(out) else {
        return Ok(());
    };
    if !meta.is_dir() {
        return Err(invalid(format!(
            "--out {}: it exists and is not a directory; name a directory",
            out.display()
        )));
    }
    let empty = out.read_dir().is_ok_and(|mut d| d.next().is_none());
    if !empty && !force {
        return Err(invalid(format!(
            "--out {}: the directory is not empty; add --force-out to replace it, or name \
             another",
            out.display()
        )));
    }
    Ok(())
}

/// Says where the job's output is, and copies it to `out` when given. Nothing when the
/// job did not succeed.
pub(super) fn deliver(
    plan: &Plan,
    store: &Store,
    out: Option<&Path>,
    force: bool,
) -> Result<(), CliError> {
    let ids = plan.static_ids(store);
    let Some(Some(id)) = ids.first() else {
        return Ok(());
    };
    if store.done(id).is_none() {
        return Ok(());
    }
    let output = store.output_dir(id);
    let Some(out) = out else {
        errln!("output: {}", output.display());
        return Ok(());
    };
    let copy = |to: &Path| {
        super::atomic::write_dir(to, |tmp| {
            store::copy_tree(&output, tmp)
                .map(drop)
                .map_err(std::io::Error::other)
        })
        .with_context(|| {
            format!(
                "copying the output of job {} to {}",
                short(id),
                to.display()
            )
        })
    };
    let non_empty = out.read_dir().is_ok_and(|mut d| d.next().is_some());
    if force && non_empty {
        // The old directory steps aside, the new one takes its name, and only then is the
        // old one removed: a failed copy leaves DIR as it was.
        let aside = beside(out, "old");
        std::fs::rename(out, &aside)
            .with_context(|| format!("moving {} aside to replace it", out.display()))
            .map_err(CliError::Failed)?;
        if let Err(e) = copy(out) {
            let _ = std::fs::rename(&aside, out);
            return Err(CliError::Failed(e));
        }
        store::remove_tree(&aside)
            .with_context(|| format!("removing the replaced {}", aside.display()))
            .map_err(CliError::Failed)?;
    } else {
        copy(out).map_err(CliError::Failed)?;
    }
    errln!("output copied to {}", out.display());
    Ok(())
}

/// A name beside `path` that nothing else uses: `.NAME.WHAT.PID`.
fn beside(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{what}.{}", std::process::id()))
}
