//! What a stage is granted, shown before it runs: `repx show stage` and `run --dry-run`.
//!
//! Everything that widens a plugin's reach (a writable project directory, programs of the
//! host that it may run) is marked `!!` so that it stands out. The lists come from where
//! the runner gets them (the contract's mounts, the tool sandbox's read-only directories,
//! the hermetic tool check), so what is shown is what a job gets.

use std::fmt::Write;

use serde_json::Value;

use crate::graph::id::ToolIdentity;
use crate::lab::{Input, Lab, Mode, PluginRef, Stage};
use crate::wasm::tools;

/// A person-readable list of everything a stage's jobs may see and do, in `mode` when
/// given (a command-line override), else in the stage's own.
pub fn describe(lab: &Lab, stage: &Stage, mode: Option<Mode>) -> Result<String, String> {
    let mode = mode.unwrap_or(stage.mode);
    let mut out = String::new();
    plugin(&mut out, stage)?;
    let _ = match mode {
        Mode::Pure => writeln!(out, "mode     pure"),
        Mode::Impure => writeln!(
            out,
            "mode     impure  !! the project directory is writable; results are not reproducible"
        ),
        Mode::Hermetic => writeln!(
            out,
            "mode     hermetic  each job is a Nix derivation, built by Nix in its sandbox"
        ),
    };
    directories(&mut out, lab, stage, mode);
    tool_grants(&mut out, lab, stage, mode);
    env(&mut out, stage, mode);
    let _ = writeln!(out, "network  none");
    let clock = if mode == Mode::Impure {
        "the host's clock and random source"
    } else {
        "fixed clock, random seeded by the job id"
    };
    let _ = writeln!(out, "time     {clock}");
    let _ = writeln!(out, "limits   {}", stage.limits);
    Ok(out)
}

/// The stage, its plugin and whether the plugin matches its pin.
fn plugin(out: &mut String, stage: &Stage) -> Result<(), String> {
    let bytes = match &stage.plugin {
        PluginRef::Builtin(name) => crate::wasm::builtin::bytes(name)
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
        PluginRef::File(path) => {
            std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    let sha256 = crate::wasm::sha256_hex(&bytes);
    let pin = match &stage.sha256 {
        Some(pinned) if *pinned == sha256 => "pinned",
        Some(_) => "PIN MISMATCH: the run will be refused",
        None => "not pinned",
    };
    let _ = writeln!(out, "stage    {}", stage.name);
    let _ = writeln!(out, "plugin   {} ({} bytes)", stage.plugin, bytes.len());
    let _ = writeln!(out, "sha256   {sha256} ({pin})");
    Ok(())
}

/// The plugin's directories, as the contract mounts them.
fn directories(out: &mut String, lab: &Lab, stage: &Stage, mode: Mode) {
    let _ = match mode {
        Mode::Hermetic => writeln!(out, "directories (inside the Nix sandbox)"),
        _ => writeln!(out, "directories"),
    };
    if !stage.inputs.is_empty() {
        let _ = writeln!(out, "  {:<16} read-only    the names of the inputs", "/in");
    }
    for (name, input) in &stage.inputs {
        let what = match input {
            Input::Path(path) if mode == Mode::Impure => format!("{} (live)", path.display()),
            Input::Path(path) if mode == Mode::Hermetic => {
                format!("snapshot of {}, copied into the Nix store", path.display())
            }
            Input::Path(path) => format!("snapshot of {}", path.display()),
            Input::Stage(up) => format!("output of stage `{up}`"),
            Input::Gather(up) => format!("outputs of every job of stage `{up}`, with index.json"),
        };
        let _ = writeln!(out, "  /in/{name:<12} read-only    {what}");
    }
    let fresh = match mode {
        Mode::Hermetic => "the derivation's output ($out), empty at start",
        _ => "a fresh output directory",
    };
    let _ = writeln!(out, "  {:<16} read-write   {fresh}", "/out");
    let _ = writeln!(
        out,
        "  {:<16} read-write   scratch, discarded after the job; counts against the output limit",
        "/tmp"
    );
    if mode == Mode::Impure {
        let _ = writeln!(
            out,
            "  {:<16} READ-WRITE   {} (the project directory; the plugin's cwd) !!",
            "/work",
            lab.dir.display()
        );
    }
}

/// The tools the stage may run, each resolved as the run would, and where they run.
fn tool_grants(out: &mut String, lab: &Lab, stage: &Stage, mode: Mode) {
    if stage.tools.is_empty() {
        let _ = writeln!(
            out,
            "tools    none but executables inside the stage's inputs"
        );
        return;
    }
    let place = match mode {
        Mode::Impure => "run on the host, unsandboxed, in place",
        Mode::Pure => {
            "run in a bubblewrap sandbox: the directories above, the read-only ones below, no network"
        }
        Mode::Hermetic => "run as they are in the Nix sandbox; each must be a Nix store path",
    };
    let _ = writeln!(out, "tools    {place} !!");
    let path_var = std::env::var_os("PATH");
    let mut resolved = Vec::new();
    for tool in &stage.tools {
        let _ = match tools::resolve(tool, lab.file_dir(), path_var.as_ref(), tools::digest) {
            Ok(t) if mode == Mode::Hermetic && !crate::plan::in_nix_store(&t.path) => writeln!(
                out,
                "  {:<16} {}  REFUSED: not a Nix store path; the run will be refused",
                t.name,
                t.path.display()
            ),
            Ok(t) => {
                let line = writeln!(out, "  {:<16} {}", t.name, t.path.display());
                resolved.push(t);
                line
            }
            Err(e) => writeln!(out, "  {tool:<16} NOT FOUND: {e}"),
        };
    }
    let _ = writeln!(out, "  (and executables inside the stage's inputs)");
    if mode == Mode::Pure {
        sandbox(out, &resolved);
    }
    let _ = writeln!(
        out,
        "  {:<16} only what the plugin passes, and PATH: the granted tools' directories",
        "tool env"
    );
}

/// What a pure-mode tool's sandbox holds read-only, and whether it can run at all.
fn sandbox(out: &mut String, grants: &[ToolIdentity]) {
    let read_only: Vec<String> = tools::sandbox_read_only(grants)
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let _ = writeln!(out, "  {:<16} {}", "read-only", read_only.join(" "));
    if tools::bubblewrap().is_none() {
        let _ = writeln!(
            out,
            "  {:<16} NOT FOUND: bubblewrap is not installed, so these tools cannot run; \
             install it (Debian: `apt-get install bubblewrap`)",
            "sandbox"
        );
    }
}

/// The plugin's whole environment.
fn env(out: &mut String, stage: &Stage, mode: Mode) {
    let params = Value::Object(stage.params.clone().into_iter().collect());
    let _ = writeln!(out, "env      nothing from the host; only");
    let _ = writeln!(
        out,
        "  {:<16} {params} (the stage's defaults; a run's params override them)",
        "REPX_PARAMS"
    );
    let _ = writeln!(out, "  {:<16} the job's id", "REPX_JOB_ID");
    let _ = writeln!(out, "  {:<16} {}", "REPX_STAGE", stage.name);
    let _ = writeln!(out, "  {:<16} {mode}", "REPX_MODE");
}
