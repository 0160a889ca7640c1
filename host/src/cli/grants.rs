//! What a stage is granted, shown before it runs: `repx show stage` and `run --dry-run`.
//!
//! Everything that widens a plugin's reach (a writable project directory, tools running
//! on the host) is marked so that it stands out.

use std::fmt::Write;

use crate::lab::{Input, Lab, Mode, PluginRef, Stage};

/// A person-readable list of everything a stage's jobs may see and do.
pub fn describe(lab: &Lab, stage: &Stage, mode: Option<Mode>) -> Result<String, String> {
    let mode = mode.unwrap_or(stage.mode);
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
    let mut out = String::new();
    let _ = writeln!(out, "stage    {}", stage.name);
    let _ = writeln!(out, "plugin   {} ({} bytes)", stage.plugin, bytes.len());
    let _ = writeln!(out, "sha256   {sha256} ({pin})");
    let _ = match mode {
        Mode::Impure => writeln!(
            out,
            "mode     impure  !! the project directory is writable; results are not reproducible"
        ),
        other => writeln!(out, "mode     {other}"),
    };
    let _ = writeln!(out, "directories");
    for (name, input) in &stage.inputs {
        let what = match input {
            Input::Path(path) if mode == Mode::Impure => format!("{} (live)", path.display()),
            Input::Path(path) => format!("snapshot of {}", path.display()),
            Input::Stage(up) => format!("output of stage `{up}`"),
            Input::Gather(up) => format!("outputs of every job of stage `{up}`, with index.json"),
        };
        let _ = writeln!(out, "  /in/{name:<12} read-only    {what}");
    }
    let _ = writeln!(
        out,
        "  {:<16} read-write   a fresh output directory",
        "/out"
    );
    let _ = writeln!(
        out,
        "  {:<16} read-write   scratch, discarded after the job",
        "/tmp"
    );
    if mode == Mode::Impure {
        let _ = writeln!(
            out,
            "  {:<16} READ-WRITE   {} (the project directory) !!",
            "/work",
            lab.dir.display()
        );
    }
    if stage.tools.is_empty() {
        let _ = writeln!(out, "tools    none");
    } else {
        let place = match mode {
            Mode::Impure => "run on the host, unsandboxed, in place !!",
            _ => {
                "run in a bubblewrap sandbox: read-only system directories, the mounts above, no network"
            }
        };
        let _ = writeln!(out, "tools    {place}");
        let path_var = std::env::var_os("PATH");
        for tool in &stage.tools {
            match crate::wasm::tools::resolve(tool, path_var.as_ref()) {
                Ok(t) => writeln!(out, "  {:<16} {}", t.name, t.path.display()),
                Err(e) => writeln!(out, "  {tool:<16} NOT FOUND: {e}"),
            }
            .ok();
        }
        let _ = writeln!(out, "  (and executables inside the stage's inputs)");
    }
    let _ = writeln!(
        out,
        "env      REPX_PARAMS REPX_JOB_ID REPX_STAGE REPX_MODE (nothing from the host)"
    );
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
