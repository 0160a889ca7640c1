//! `repx exec-job`: the builder of a hermetic job's derivation, inside the Nix sandbox.
//!
//! It reads the job's spec (`$jobPath`, from `passAsFile`), gives the plugin its inputs
//! from the store read-only, `$out` as `/out` and a scratch `/tmp` from the build
//! directory, exactly as in pure mode, and leaves the plugin's stdout, stderr and host log
//! in `$log`. A failed job fails the build, with lines starting [`FAILURE_PREFIX`] that
//! the repx that asked for the build reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::spec::{Input, Spec};
use crate::contract::{self, Gathered, Source};
use crate::lab::Mode;
use crate::store;
use crate::wasm::host::Observer;
use crate::wasm::{JobRun, Plugin, Runtime, builtin};

/// How the executor's own explanation of a failure starts, line by line.
pub const FAILURE_PREFIX: &str = "repx job failed: ";

/// Runs the job in `$jobPath`; the builder's exit code.
pub fn exec_job() -> i32 {
    match run() {
        Ok(None) => 0,
        Ok(Some(failure)) | Err(failure) => {
            for line in failure.lines() {
                eprintln!("{FAILURE_PREFIX}{line}");
            }
            1
        }
    }
}

/// The job's failure, if it failed; an error if it could not run.
fn run() -> Result<Option<String>, String> {
    super::sandboxed()?;
    let var = |name: &str| {
        std::env::var_os(name).map(PathBuf::from).ok_or_else(|| {
            format!("${name} is not set: `repx exec-job` is the builder of a hermetic job's Nix derivation and runs only inside one")
        })
    };
    let spec_path = var("jobPath")?;
    let (out, log, build) = (var("out")?, var("log")?, var("TMPDIR")?);
    let spec: Spec = serde_json::from_slice(&read(&spec_path)?)
        .map_err(|e| format!("{}: {e}", spec_path.display()))?;
    let plugin = plugin(&spec)?;
    for dir in [&out, &log] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let scratch = build.join("scratch");
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let listing = if spec.inputs.is_empty() {
        None
    } else {
        let dir = build.join("in");
        contract::make_listing(&dir, spec.inputs.keys())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Some(dir)
    };
    let inputs = spec
        .inputs
        .iter()
        .map(|(name, input)| Ok((name.as_str(), source(input)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let policy = contract::policy(contract::Job {
        mode: Mode::Hermetic,
        id: &spec.id,
        stage: &spec.stage,
        params: &spec.params,
        inputs,
        listing,
        private: &build,
        out: out.clone(),
        scratch,
        work: None,
    })?;
    let limits = spec.limits;
    // The compiled plugin is a store path built by repx's own compile derivation, which
    // ran no plugin: as trustworthy as the builder itself.
    let runtime = Runtime::new(spec.compiled.clone(), 1).map_err(|e| e.to_string())?;
    let finished = runtime
        .run(
            &plugin,
            JobRun {
                stage: spec.stage.clone(),
                policy: Arc::new(policy),
                grants: spec.tools.clone().into(),
                observer: Arc::new(Quiet),
                limits,
                live: None,
            },
        )
        .map_err(|e| e.to_string())?;
    for (name, bytes) in [
        ("stdout", &finished.stdout),
        ("stderr", &finished.stderr),
        ("host.log", &finished.host_log),
    ] {
        write_log(&log.join(name), bytes)?;
    }
    if let Some(failure) = finished.failure() {
        // The build's log is all Nix keeps of a failed build.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), &finished.stderr);
        return Ok(Some(failure));
    }
    Ok(refused_output(&spec, &out, limits.output))
}

/// `repx compile-plugin`: the builder of a plugin's compile derivation. Compiles
/// `$plugin` (checked against `$digest`) into `$out`, laid out as the compiled-plugin
/// cache that `exec-job` is given.
pub fn compile_plugin() -> i32 {
    let compiled = (|| {
        super::sandboxed()?;
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                format!("${name} is not set: `repx compile-plugin` runs only inside a Nix build")
            })
        };
        let plugin = load_plugin(&var("plugin")?, &var("digest")?)?;
        let out = PathBuf::from(var("out")?);
        std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let runtime = Runtime::new(Some(out), 1).map_err(|e| e.to_string())?;
        runtime.prepare(&plugin).map_err(|e| e.to_string())
    })();
    match compiled {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{FAILURE_PREFIX}{e}");
            1
        }
    }
}

/// The plugin named by the spec, checked against its digest.
fn plugin(spec: &Spec) -> Result<Plugin, String> {
    load_plugin(&spec.plugin, &spec.plugin_digest)
}

/// A store path or `builtin:NAME`, checked against `digest`.
fn load_plugin(name: &str, digest: &str) -> Result<Plugin, String> {
    let bytes = match name.strip_prefix("builtin:") {
        Some(builtin) => builtin::bytes(builtin)
            .ok_or_else(|| format!("this repx has no built-in plugin `{builtin}`"))?
            .to_vec(),
        None => read(Path::new(name))?,
    };
    let plugin = Plugin::new(name.to_string(), bytes);
    if plugin.digest != digest {
        return Err(format!(
            "plugin {name} has digest {}, not the job's {digest}",
            plugin.digest
        ));
    }
    Ok(plugin)
}

fn source(input: &Input) -> Result<Source, String> {
    let path = |dir: &super::spec::Dir| {
        dir.path
            .as_ref()
            .map(PathBuf::from)
            .ok_or_else(|| "an input has no store path: job.nix did not resolve it".to_string())
    };
    Ok(match input {
        Input::Dir(dir) => Source::Dir(path(dir)?),
        Input::Gather(dirs) => Source::Gather(
            dirs.iter()
                .map(|dir| {
                    Ok(Gathered {
                        id: dir.id.clone().unwrap_or_default(),
                        dir: path(dir)?,
                        params: dir.params.clone().unwrap_or_else(BTreeMap::new),
                    })
                })
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// Why the output cannot be committed, by the store's own checks: a declared output is
/// missing, or it is over the stage's output limit.
fn refused_output(spec: &Spec, out: &Path, limit: u64) -> Option<String> {
    if let Err(e) = store::declared_outputs_present(&spec.id, out, &spec.outputs) {
        return Some(e.to_string());
    }
    match store::hash_tree(out) {
        Ok(summary) => store::within_output_limit(&spec.id, summary.bytes, limit)
            .err()
            .map(|e| e.to_string()),
        Err(e) => Some(format!("reading the output: {e}")),
    }
}

/// Writes a new log file at `path`, never through what stands there: the job's tools run
/// in this build and may have left a link in `$log` (to `/proc/self/cwd/…`, which is this
/// build's directory here but the host repx's own directory when it reads the log back).
fn write_log(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|e| {
            format!(
                "{}: {e}; something of the job (a tool it ran?) made it before the job's log \
                 was written, and it is not written through",
                path.display()
            )
        })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Progress and warnings have nowhere to go from inside a build but its log.
struct Quiet;

impl Observer for Quiet {
    fn progress(&self, _done: u64, _total: u64) {}
    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }
}
