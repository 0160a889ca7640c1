//! Compiled plugins on disk, keyed by plugin digest and engine compatibility.
//!
//! Loading a compiled artifact runs its machine code. So:
//! - The cache lives in the user's cache directory. A cache that any job could write (in
//!   the store, or in a project directory, which impure jobs of any run have at `/work`)
//!   is not used; the rule is `cli::engine::plugin_cache`'s.
//! - Each artifact ends with the BLAKE3 digest of the bytes before it (and a tag), written
//!   with it in one file, and is loaded only once its bytes are found to match. A damaged
//!   artifact (a bad disk, a copy cut short, bytes overwritten) is recompiled and replaced,
//!   with a [`Recompiled`] note, never run: wasmtime trusts what it deserializes, and
//!   damaged code crashes the process. The digest guards against damage; against an
//!   attacker the place does (the digest lies beside the artifact, equally out of reach).
//! - A checked artifact is loaded by mapping its file, as wasmtime's `deserialize_file`
//!   does, not copied: the check reads a mapping of the same file, so the bytes are read
//!   from disk once and never copied. Artifacts are only ever replaced by a rename, never
//!   written in place, so the file wasmtime maps is the one checked or another whole one.
//! - An artifact is written to a temporary file `.<host>.<pid>.<name>`, flushed, renamed
//!   into place, and the directory flushed. Temporary files that a killed compile left
//!   (this host's, whose process is gone) are removed when the cache is opened.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use super::Plugin;

/// Ends every artifact, after its digest.
const TAG: &[u8; 8] = b"repxsum1";
/// The digest and the tag.
const TRAILER: usize = 32 + TAG.len();

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

/// A compiled artifact found damaged, and compiled again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recompiled {
    pub plugin: String,
    pub artifact: PathBuf,
    pub why: String,
}

impl std::fmt::Display for Recompiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the compiled plugin {} in the cache is damaged ({}): not loaded; {} was compiled again",
            self.artifact.display(),
            self.why,
            self.plugin
        )
    }
}

/// The cache directory, and what loading from it found.
pub struct Cache {
    dir: PathBuf,
    recompiled: Mutex<Vec<Recompiled>>,
}

impl Cache {
    /// The cache in `dir`; removes the temporary files of compiles killed on this host.
    pub fn open(dir: PathBuf) -> Cache {
        remove_stale_temporaries(&dir.join("wasm"));
        Cache {
            dir,
            recompiled: Mutex::default(),
        }
    }

    /// The damaged artifacts recompiled since the last call, each once.
    pub fn take_recompiled(&self) -> Vec<Recompiled> {
        std::mem::take(&mut *self.recompiled.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn artifact(&self, engine: &Engine, plugin: &Plugin) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir
            .join("wasm")
            .join(format!("{}-{:016x}.cwasm", plugin.digest, h.finish()))
    }
}

pub fn component(
    engine: &Engine,
    cache: Option<&Cache>,
    plugin: &Plugin,
) -> wasmtime::Result<Component> {
    load(
        engine,
        cache,
        plugin,
        // SAFETY: the file is an artifact this cache wrote, checked against its digest, and
        // replaced only by a rename.
        |path| unsafe { Component::deserialize_file(engine, path) },
        || {
            let component = Component::new(engine, plugin.bytes.as_slice())?;
            Ok((component.serialize()?, component))
        },
    )
}

pub fn module(engine: &Engine, cache: Option<&Cache>, plugin: &Plugin) -> wasmtime::Result<Module> {
    load(
        engine,
        cache,
        plugin,
        // SAFETY: as for components.
        |path| unsafe { Module::deserialize_file(engine, path) },
        || {
            let module = Module::new(engine, plugin.bytes.as_slice())?;
            Ok((module.serialize()?, module))
        },
    )
}

fn load<T>(
    engine: &Engine,
    cache: Option<&Cache>,
    plugin: &Plugin,
    deserialize: impl FnOnce(&Path) -> wasmtime::Result<T>,
    compile: impl FnOnce() -> wasmtime::Result<(Vec<u8>, T)>,
) -> wasmtime::Result<T> {
    let Some(cache) = cache else {
        return compile().map(|(_, t)| t);
    };
    let path = cache.artifact(engine, plugin);
    let damage = match File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(e.to_string()),
        Ok(file) => match check_file(&file) {
            Err(why) => Some(why),
            Ok(()) => match deserialize(&path) {
                Ok(loaded) => {
                    mark_used(&file);
                    return Ok(loaded);
                }
                Err(e) => Some(format!("{e:#}")),
            },
        },
    };
    if let Some(why) = damage {
        cache
            .recompiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Recompiled {
                plugin: plugin.name.clone(),
                artifact: path.clone(),
                why,
            });
    }
    let (bytes, compiled) = compile()?;
    // The cache is an optimisation: failing to write it costs time, not correctness.
    let _ = write_atomically(&path, &bytes);
    Ok(compiled)
}

/// How stale an artifact's time may be before a load sets it again: its modification time
/// says when it was last used (`repx cache clear --older-than`), and a day is fine enough
/// for that without a write on every load.
const USED_GRANULARITY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Sets the artifact's modification time to now when it is older than a day.
fn mark_used(file: &File) {
    let now = std::time::SystemTime::now();
    let stale = file.metadata().and_then(|m| m.modified()).is_ok_and(|t| {
        now.duration_since(t)
            .is_ok_and(|age| age > USED_GRANULARITY)
    });
    if stale {
        // An optimisation's bookkeeping: failing costs a recompile after a `clear`, no more.
        let _ = file.set_modified(now);
    }
}

/// A compiled plugin in the cache.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub path: PathBuf,
    pub bytes: u64,
    /// When it was last loaded or written, to a day.
    pub used: std::time::SystemTime,
}

/// The compiled plugins in the cache at `dir`, oldest use first. A missing cache holds none.
pub fn artifacts(dir: &Path) -> std::io::Result<Vec<Artifact>> {
    let wasm = dir.join("wasm");
    let entries = match std::fs::read_dir(&wasm) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "cwasm") {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        found.push(Artifact {
            path,
            bytes: meta.len(),
            used: meta.modified()?,
        });
    }
    found.sort_by_key(|a| a.used);
    Ok(found)
}

/// Whether the artifact open as `file` holds the digest of its code in its trailer, read
/// through a mapping of the file.
fn check_file(file: &File) -> Result<(), String> {
    use rustix::mm::{MapFlags, ProtFlags};
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let len = usize::try_from(len).map_err(|e| e.to_string())?;
    if len == 0 {
        return Err("too short to be an artifact".into());
    }
    // SAFETY: a fresh read-only private mapping of the whole file, read below only as
    // bytes and unmapped before returning; no reference to it outlives this function.
    let map = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ,
            // Populated at once: every page is read below, and one call costs less than
            // a fault per few pages.
            MapFlags::PRIVATE | MapFlags::POPULATE,
            file,
            0,
        )
    }
    .map_err(|e| e.to_string())?;
    // SAFETY: `map` is `len` readable bytes, alive until the munmap below.
    let bytes = unsafe { std::slice::from_raw_parts(map.cast::<u8>(), len) };
    let result = checked(bytes).map(drop).map_err(str::to_string);
    // SAFETY: the mapping made above, no longer borrowed.
    let _ = unsafe { rustix::mm::munmap(map, len) };
    result
}

/// The artifact's code, if its trailer holds the digest of it.
fn checked(bytes: &[u8]) -> Result<&[u8], &'static str> {
    let Some(split) = bytes.len().checked_sub(TRAILER) else {
        return Err("too short to be an artifact");
    };
    let (code, trailer) = bytes.split_at(split);
    let (digest, tag) = trailer.split_at(32);
    if tag != TAG {
        return Err("no digest at its end");
    }
    // Artifacts run to tens of MiB (an interpreter compiled to wasm); hashing is the cost
    // of a cached load, so it takes every core.
    if super::digest(code).as_bytes() != digest {
        return Err("its content does not match its digest");
    }
    Ok(code)
}

fn write_atomically(path: &Path, code: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.{}",
        host(),
        std::process::id(),
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(code)?;
        file.write_all(super::digest(code).as_bytes())?;
        file.write_all(TAG)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// This host's name, as temporary files carry it: a cache in a shared home directory is
/// written from several hosts, whose pids say nothing here.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(|c: char| !c.is_ascii_alphanumeric(), "-"))
        .unwrap_or_default()
}

/// Removes the temporary artifacts in `dir` of this host's processes that are gone.
fn remove_stale_temporaries(dir: &Path) {
    let prefix = format!(".{}.", host());
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_loads_only_when_its_digest_matches() {
        let code = vec![7u8; 1000];
        let mut artifact = code.clone();
        artifact.extend_from_slice(blake3::hash(&code).as_bytes());
        artifact.extend_from_slice(TAG);
        assert_eq!(checked(&artifact), Ok(&code[..]));
        let mut zeroed = artifact.clone();
        zeroed[100..200].fill(0);
        assert!(checked(&zeroed).is_err());
        assert!(checked(&artifact[..500]).is_err());
        assert!(checked(&artifact[..10]).is_err());
    }

    #[test]
    fn temporaries_of_gone_processes_are_removed() {
        let dir = std::env::temp_dir().join(format!("repx-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Far above any pid the kernel hands out (pid_max is at most 2^22).
        let gone = dir.join(format!(".{}.{}.x.cwasm", host(), u32::MAX));
        let live = dir.join(format!(".{}.{}.x.cwasm", host(), std::process::id()));
        let other_host = dir.join(format!(".elsewhere-{}.{}.x.cwasm", host(), u32::MAX));
        for path in [&gone, &live, &other_host] {
            std::fs::write(path, "partial").unwrap();
        }
        remove_stale_temporaries(&dir);
        assert!(!gone.exists());
        assert!(live.exists() && other_host.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
