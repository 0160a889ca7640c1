//! Compiled plugins on disk, keyed by plugin digest and engine compatibility.
//!
//! Loading a compiled artifact runs its machine code, so the cache lives in the user's
//! cache directory, never in the store or anywhere a plugin is given.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use super::Plugin;

/// The default cache directory: `$REPX_CACHE_DIR`, else `$XDG_CACHE_HOME/repx`, else `~/.cache/repx`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("REPX_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("repx"))
}

fn artifact(engine: &Engine, dir: &Path, plugin: &Plugin) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join("wasm")
        .join(format!("{}-{:016x}.cwasm", plugin.digest, h.finish()))
}

pub fn component(
    engine: &Engine,
    dir: Option<&Path>,
    plugin: &Plugin,
) -> wasmtime::Result<Component> {
    load(
        engine,
        dir,
        plugin,
        |path| unsafe { Component::deserialize_file(engine, path) },
        || {
            let component = Component::new(engine, &plugin.bytes)?;
            Ok((component.serialize()?, component))
        },
    )
}

pub fn module(engine: &Engine, dir: Option<&Path>, plugin: &Plugin) -> wasmtime::Result<Module> {
    load(
        engine,
        dir,
        plugin,
        |path| unsafe { Module::deserialize_file(engine, path) },
        || {
            let module = Module::new(engine, &plugin.bytes)?;
            Ok((module.serialize()?, module))
        },
    )
}

fn load<T>(
    engine: &Engine,
    dir: Option<&Path>,
    plugin: &Plugin,
    deserialize: impl FnOnce(&Path) -> wasmtime::Result<T>,
    compile: impl FnOnce() -> wasmtime::Result<(Vec<u8>, T)>,
) -> wasmtime::Result<T> {
    let Some(dir) = dir else {
        return compile().map(|(_, t)| t);
    };
    let path = artifact(engine, dir, plugin);
    if path.is_file() {
        // A damaged artifact is recompiled rather than trusted or fatal.
        if let Ok(loaded) = deserialize(&path) {
            return Ok(loaded);
        }
    }
    let (bytes, compiled) = compile()?;
    // The cache is an optimisation: failing to write it costs time, not correctness.
    let _ = write_atomically(&path, &bytes);
    Ok(compiled)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}",
        std::process::id(),
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
