//! `repx plugin new`, `build` and `inspect`: starting a plugin, building it, and looking
//! inside one.
//!
//! `new` makes a plugin in Rust, C, Python or JavaScript with a lab to try it; `build`
//! ([`build`]) runs its language's toolchain. `inspect` reads a `.wasm` without running it
//! (with `wasmparser`): its digests, whether it is a component or a core module, what it
//! imports and exports, whether it is a valid plugin, the parameters it declares, and what
//! a stage using it would need to be granted. Import and export names and parameter docs
//! are the file's own text, printed through [`terminal`].

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use sha2::Digest;
use wasmparser::{Parser, Payload};

use super::error::{CliError, invalid};
use super::escape::terminal;
use super::exit;

pub mod build;
pub mod preinit;
pub mod sdk;

pub use build::Lang;

/// Text written into a new plugin: its path, and its text with `{name}` to fill in.
type Template = (&'static str, &'static str);

/// What every new plugin has: the lab that runs it, and its input.
const COMMON: &[Template] = &[
    (
        "plugin.toml",
        include_str!("../../../templates/plugin/plugin.toml"),
    ),
    (
        "repx.toml",
        include_str!("../../../templates/plugin/repx.toml"),
    ),
    (
        ".gitignore",
        include_str!("../../../templates/plugin/gitignore"),
    ),
    (
        "data/data.txt",
        include_str!("../../../templates/plugin/data.txt"),
    ),
];

/// The sources of a new plugin in `lang`.
fn sources(lang: Lang) -> &'static [Template] {
    match lang {
        Lang::Rust => &[
            (
                "Cargo.toml",
                include_str!("../../../templates/plugin/rust/Cargo.toml"),
            ),
            (
                ".cargo/config.toml",
                include_str!("../../../templates/plugin/rust/cargo-config.toml"),
            ),
            (
                "src/main.rs",
                include_str!("../../../templates/plugin/rust/main.rs"),
            ),
        ],
        Lang::C => &[("main.c", include_str!("../../../templates/plugin/c/main.c"))],
        Lang::Python => &[(
            "app.py",
            include_str!("../../../templates/plugin/python/app.py"),
        )],
        Lang::Js => &[(
            "plugin.js",
            include_str!("../../../templates/plugin/js/plugin.js"),
        )],
    }
}

pub fn new(name: &str, parent: Option<&Path>, lang: Lang) -> Result<i32, CliError> {
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
    let mut written = Vec::new();
    for (path, text) in COMMON.iter().chain(sources(lang)) {
        let text = text.replace("{name}", name);
        write_new(&dir, path, text.as_bytes())?;
        written.push(path.to_string());
    }
    if lang == Lang::Rust {
        // The SDK goes with the crate, so that it builds wherever it lies, offline: no path
        // into the sources repx was built from, no registry.
        let sdk_dir = Path::new("repx-guest");
        write_new(&dir, "repx-guest/Cargo.toml", sdk::RUST_MANIFEST.as_bytes())?;
        for (path, text) in sdk::RUST {
            write_new(&dir, &sdk_dir.join(path).to_string_lossy(), text.as_bytes())?;
        }
        for (path, text) in sdk::WIT {
            let path = sdk_dir.join("wit").join(path);
            write_new(&dir, &path.to_string_lossy(), text.as_bytes())?;
        }
        written.push("repx-guest/   (the Rust SDK)".to_string());
    }
    outln!("made a {} plugin in {}:", lang.name(), dir.display());
    for path in written {
        outln!("  {path}");
    }
    outln!(
        "next: cd {} && repx plugin build && repx run",
        dir.display()
    );
    Ok(exit::SUCCESS)
}

fn write_new(dir: &Path, path: &str, bytes: &[u8]) -> Result<(), CliError> {
    let target = dir.join(path);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    super::atomic::write(&target, bytes)?;
    Ok(())
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
    let schema = crate::wasm::schema::Schema::read(&bytes);
    match &schema {
        Ok(None) => {
            let _ = writeln!(
                out,
                "params:   none declared (a stage may pass any; declare them in plugin.toml)"
            );
        }
        Ok(Some(schema)) => {
            let _ = writeln!(out, "params:   {}", schema.params.len());
            for param in &schema.params {
                let default = param
                    .default
                    .as_ref()
                    .map_or_else(|| "no default".to_string(), |d| format!("default {d}"));
                let _ = writeln!(
                    out,
                    "  {:<12} {:<6} {:<14} {}",
                    param.name,
                    param.ty,
                    terminal(&default),
                    terminal(&param.doc)
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "params:   {}", terminal(&e.to_string()));
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
    Ok(if inspection.validity().is_ok() && schema.is_ok() {
        exit::SUCCESS
    } else {
        exit::FAILED
    })
}
