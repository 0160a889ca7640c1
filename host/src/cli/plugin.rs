//! `repx plugin new` and `repx plugin inspect`: starting a plugin, and looking inside one.
//!
//! `new` makes a Rust crate on `repx-guest` that builds for wasm32-wasip2, with a lab to
//! try it. `inspect` reads a `.wasm` without running it (with `wasmparser`): its digests,
//! whether it is a component or a core module, what it imports and exports, whether it is
//! a valid plugin, and what a stage using it would need to be granted. Import and export
//! names are the file's own text, printed through [`terminal`].

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::Digest;
use wasmparser::{Parser, Payload};

use super::error::{CliError, invalid};
use super::escape::terminal;
use super::exit;

/// The SDK beside this binary's sources, when they are still where it was built from.
fn local_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    sdk.join("Cargo.toml")
        .is_file()
        .then(|| std::fs::canonicalize(&sdk).unwrap_or(sdk))
}

pub fn new(name: &str, parent: Option<&Path>) -> Result<i32, CliError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(invalid(format!(
            "plugin name `{name}`: use lowercase letters, digits, `-` and `_`, starting with a letter"
        )));
    }
    let dir = parent.unwrap_or(Path::new(".")).join(name);
    if dir.exists() {
        return Err(invalid(format!("{} already exists", dir.display())));
    }
    let sdk = match local_sdk() {
        Some(path) => {
            let path = path
                .display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            format!("repx-guest = {{ path = \"{path}\" }}")
        }
        None => format!("repx-guest = \"{}\"", env!("CARGO_PKG_VERSION")),
    };
    let files: [(&str, &str); 5] = [
        (
            "Cargo.toml",
            include_str!("../../templates/plugin/Cargo.toml"),
        ),
        (
            ".cargo/config.toml",
            include_str!("../../templates/plugin/cargo-config.toml"),
        ),
        (
            "src/main.rs",
            include_str!("../../templates/plugin/main.rs"),
        ),
        (
            "repx.toml",
            include_str!("../../templates/plugin/repx.toml"),
        ),
        (
            ".gitignore",
            include_str!("../../templates/plugin/gitignore"),
        ),
    ];
    for (path, text) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let text = text.replace("{name}", name).replace("{sdk}", &sdk);
        super::atomic::write(&target, text.as_bytes())?;
    }
    outln!("made plugin crate {}:", dir.display());
    for (path, _) in files {
        outln!("  {path}");
    }
    outln!(
        "next: cd {} && cargo build --release && repx run   (needs: rustup target add wasm32-wasip2)",
        dir.display()
    );
    Ok(exit::SUCCESS)
}

/// What a `.wasm` file is and asks for.
#[derive(Debug, Default)]
pub struct Inspection {
    pub component: bool,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Reads the top-level imports and exports of a component or core module.
pub fn read(bytes: &[u8]) -> Result<Inspection, wasmparser::BinaryReaderError> {
    let mut inspection = Inspection {
        component: Parser::is_component(bytes),
        ..Default::default()
    };
    // Nested modules and components (a component's insides) are not what the host links.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    inspection.imports.push(import?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    inspection.exports.push(export?.name.name.to_string());
                }
            }
            Payload::ImportSection(reader) if depth == 0 => {
                for import in reader.into_imports() {
                    let import = import?;
                    inspection
                        .imports
                        .push(format!("{}::{}", import.module, import.name));
                }
            }
            Payload::ExportSection(reader) if depth == 0 => {
                for export in reader {
                    inspection.exports.push(export?.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(inspection)
}

/// The interface an import names, without its version: `wasi:cli/run@0.2.6` → `wasi:cli/run`.
fn interface(import: &str) -> &str {
    import.split('@').next().unwrap_or(import)
}

impl Inspection {
    /// Whether the host can run it as a plugin, and if not, why.
    pub fn validity(&self) -> Result<(), String> {
        let provided: fn(&str) -> bool = if self.component {
            if !self.exports.iter().any(|e| interface(e) == "wasi:cli/run") {
                return Err(
                    "it does not export `wasi:cli/run`: build it as a WASI command (a `main`)"
                        .into(),
                );
            }
            |i| interface(i).starts_with("wasi:") || interface(i) == "repx:stage/host"
        } else {
            if !self.exports.iter().any(|e| e == "_start") {
                return Err(
                    "the core module has no `_start` export: build it as a WASI command".into(),
                );
            }
            |i| i.starts_with("wasi_snapshot_preview1::")
        };
        let foreign: Vec<&str> = self
            .imports
            .iter()
            .map(String::as_str)
            .filter(|i| !provided(i))
            .collect();
        if !foreign.is_empty() {
            return Err(format!(
                "it imports what the host does not provide: {}",
                foreign.join(", ")
            ));
        }
        Ok(())
    }

    /// What a stage using it would use or need granted, one line each.
    pub fn needs(&self) -> Vec<String> {
        let interfaces: BTreeSet<&str> = self
            .imports
            .iter()
            .map(|i| {
                let i = interface(i);
                i.split("::").next().unwrap_or(i)
            })
            .collect();
        let has = |prefix: &str| interfaces.iter().any(|i| i.starts_with(prefix));
        let mut needs = Vec::new();
        if has("repx:stage/host") {
            needs.push(
                "repx:stage/host: it may run external tools, each of which the stage must grant \
                 (`tools = [\"make\", …]`); also progress and log lines"
                    .to_string(),
            );
        }
        if has("wasi:filesystem") || has("wasi_snapshot_preview1") {
            needs.push(
                "files: its declared inputs at /in (read-only), /out, /tmp; the project at /work \
                 only in impure mode (`mode = \"impure\"`)"
                    .to_string(),
            );
        }
        if has("wasi:sockets") || has("wasi:http") {
            needs.push("network: imported, but never granted; its connections fail".to_string());
        }
        if has("wasi:clocks") || has("wasi:random") {
            needs
                .push("clocks and random: fixed clock and seeded random unless impure".to_string());
        }
        if has("wasi:cli/environment") || has("wasi_snapshot_preview1") {
            needs.push(
                "environment: REPX_PARAMS, REPX_JOB_ID, REPX_STAGE, REPX_MODE only".to_string(),
            );
        }
        if needs.is_empty() {
            needs.push("nothing beyond /out".to_string());
        }
        needs
    }
}

pub fn inspect(file: &Path) -> Result<i32, CliError> {
    let bytes = std::fs::read(file).map_err(|e| invalid(format!("{}: {e}", file.display())))?;
    if !Parser::is_component(&bytes) && !Parser::is_core_wasm(&bytes) {
        return Err(invalid(format!(
            "{}: not WebAssembly (no `\\0asm` header)",
            file.display()
        )));
    }
    let inspection = read(&bytes)
        .map_err(|e| invalid(format!("{}: malformed WebAssembly: {e}", file.display())))?;
    let mut out = String::new();
    let _ = writeln!(out, "file:     {}", file.display());
    let _ = writeln!(out, "size:     {} bytes", bytes.len());
    let _ = writeln!(
        out,
        "sha256:   {:x}   (pin it: sha256 = \"…\" in the stage)",
        sha2::Sha256::digest(&bytes)
    );
    let _ = writeln!(
        out,
        "blake3:   {}   (the digest in job ids)",
        blake3::hash(&bytes).to_hex()
    );
    let kind = if inspection.component {
        "component (wasm32-wasip2)"
    } else {
        "core module (wasm32-wasip1)"
    };
    let _ = writeln!(out, "kind:     {kind}");
    match inspection.validity() {
        Ok(()) => {
            let _ = writeln!(out, "plugin:   yes, a WASI command the host can run");
        }
        Err(why) => {
            let _ = writeln!(out, "plugin:   no: {}", terminal(&why));
        }
    }
    let _ = writeln!(out, "imports:  {}", inspection.imports.len());
    for import in &inspection.imports {
        let _ = writeln!(out, "  {}", terminal(import));
    }
    let _ = writeln!(out, "exports:  {}", inspection.exports.len());
    for export in &inspection.exports {
        let _ = writeln!(out, "  {}", terminal(export));
    }
    let _ = writeln!(out, "a stage using it:");
    for need in inspection.needs() {
        let _ = writeln!(out, "  - {need}");
    }
    out!("{out}");
    Ok(if inspection.validity().is_ok() {
        exit::SUCCESS
    } else {
        exit::FAILED
    })
}
