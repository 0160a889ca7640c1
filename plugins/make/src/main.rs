//! `builtin:make`: runs `make` on a source input and copies the artifacts it built into `/out`.
//!
//! Parameters:
//! - `target` (string, optional): the goal to build; make's default goal when absent.
//! - `input` (string, default `"src"`): the input holding the Makefile.
//! - `dir` (string, default the value of `input`): in impure mode, the directory relative to
//!   `/work` to build in.
//! - `artifacts` (map of output path -> path relative to the build directory, optional):
//!   what to copy into `/out`; defaults to `{"bin/<target>": "<target>"}` when `target` is set.
//! - `jobs` (int, optional): passed to make as `-j N`.
//!
//! In impure mode make runs in place in `/work/<dir>`, so it reuses the objects of earlier
//! builds. Otherwise the input is read-only, so `/in/<input>` is copied to `/tmp/<input>` and
//! built there from scratch (`make -B`): a snapshot taken after impure builds holds their
//! objects, with times the copy does not keep, and none of them may end up in a pure
//! output.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use repx_guest::{Mode, Tool};
use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    target: Option<String>,
    #[serde(default = "default_input")]
    input: String,
    dir: Option<String>,
    artifacts: Option<BTreeMap<String, String>>,
    jobs: Option<u32>,
}

fn default_input() -> String {
    "src".into()
}

fn main() {
    repx_guest::run(|ctx| {
        let p: Params = ctx.params()?;
        let build_dir = if ctx.mode() == Mode::Impure {
            Path::new("/work").join(p.dir.as_deref().unwrap_or(&p.input))
        } else {
            let copy = ctx.scratch().join(&p.input);
            copy_tree(&ctx.input(&p.input)?, &copy)?;
            copy
        };

        let mut args = Vec::new();
        if ctx.mode() != Mode::Impure {
            args.push("--always-make".to_string());
        }
        if let Some(jobs) = p.jobs {
            args.extend(["-j".to_string(), jobs.to_string()]);
        }
        args.extend(p.target.clone());
        Tool::new("make")
            .args(args)
            .cwd(build_dir.to_string_lossy())
            .run()?;

        let artifacts = match (p.artifacts, &p.target) {
            (Some(artifacts), _) => artifacts,
            (None, Some(target)) => BTreeMap::from([(format!("bin/{target}"), target.clone())]),
            (None, None) => BTreeMap::new(),
        };
        for (output, built) in &artifacts {
            let from = build_dir.join(built);
            if !from.is_file() {
                return Err(format!(
                    "artifact `{output}`: `{built}` was not built (looked for {})",
                    from.display()
                )
                .into());
            }
            let to = ctx.out().join(output);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::copy(&from, &to).map_err(|e| {
                format!(
                    "artifact `{output}`: copying {} to {}: {e}",
                    from.display(),
                    to.display()
                )
            })?;
        }
        Ok(())
    })
}

/// Copies a directory tree, following symbolic links so the copy is self-contained.
fn copy_tree(from: &Path, to: &Path) -> repx_guest::Result<()> {
    fs::create_dir_all(to).map_err(|e| format!("creating {}: {e}", to.display()))?;
    let entries = fs::read_dir(from).map_err(|e| format!("reading {}: {e}", from.display()))?;
    for entry in entries {
        let name = entry?.file_name();
        let (source, target): (PathBuf, PathBuf) = (from.join(&name), to.join(&name));
        if fs::metadata(&source)?.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            fs::copy(&source, &target).map_err(|e| {
                format!("copying {} to {}: {e}", source.display(), target.display())
            })?;
        }
    }
    Ok(())
}
