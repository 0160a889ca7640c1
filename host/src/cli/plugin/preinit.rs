//! `repx plugin preinit`: the pre-initialiser `repx plugin build` gives componentize-js in
//! place of Wizer (its `--wizer-bin`), so that a JavaScript plugin builds to the same bytes
//! from the same sources.
//!
//! componentize-js runs its engine's `componentize.wizer` export once at build time and
//! keeps the memory and globals it leaves in the component. Under Wizer that run sees the
//! build machine's clocks and random source, and a temporary directory of a random name:
//! the engine's heap then holds timestamps, hash-table scramblers and that path, and two
//! builds differ. Here the same run gets what a pure job gets
//! ([`crate::wasm::policy::Policy`]): the fixed clock, a stepping monotonic clock and a
//! random source seeded from what is being initialised (the module and its arguments, so
//! other sources draw other numbers); each `--dir` appears under a fixed name, and the
//! host paths in the arguments are rewritten to the names the run sees them by; a file's times and inode read the
//! same in every build ([`fixed_file_stats`]).
//!
//! The instrumentation and the snapshot are Wizer's own (the `wasmtime-wizer` crate, as a
//! library); only the run between them is ours. The module is instantiated with WASI
//! preview 1 (other imports trap when called), and `_initialize` then the init function
//! run once, as Wizer runs them.
//! A value the engine draws at build time is per build of these sources, not per job:
//! this was so under Wizer too, only its value changed from build to build.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1;
use wasmtime_wizer::{SnapshotVal, ValType};

use crate::cli::exit;
use crate::wasm::policy::{Mount, Policy};

/// The arguments componentize-js 0.23 gives Wizer; anything else is refused by name, so
/// that another version of componentize-js fails loudly rather than builds differently.
struct Args {
    init_func: String,
    dirs: Vec<PathBuf>,
    map_dirs: Vec<(String, PathBuf)>,
    inherit_env: bool,
    output: PathBuf,
    input: PathBuf,
    /// `--repx-cache-dir`, ours: the compiled-plugin cache of the repx that builds (the
    /// environment componentize-js gives its pre-initialiser has no `HOME` to find it by).
    cache: Option<PathBuf>,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut init_func = None;
    let mut dirs = Vec::new();
    let mut map_dirs = Vec::new();
    let mut inherit_env = false;
    let mut output = None;
    let mut input = None;
    let mut allow_wasi = false;
    let mut cache = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with('-') => (name, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| rest.next().cloned())
                .ok_or_else(|| anyhow!("`{name}` needs a value"))
        };
        let boolean = |v: String| match v.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(anyhow!("`{name}` is true or false, not `{v}`")),
        };
        match name {
            "--allow-wasi" => allow_wasi = true,
            "-f" | "--init-func" => init_func = Some(value()?),
            "--dir" => dirs.push(PathBuf::from(value()?)),
            "--mapdir" => {
                let spec = value()?;
                let (guest, host) = spec
                    .split_once("::")
                    .ok_or_else(|| anyhow!("`--mapdir {spec}`: expected GUEST::HOST"))?;
                map_dirs.push((guest.to_string(), PathBuf::from(host)));
            }
            "--inherit-env" => inherit_env = boolean(value()?)?,
            // Bulk memory is on in wasmtime; `false` would ask for less than the engine needs.
            "--wasm-bulk-memory" => {
                if !boolean(value()?)? {
                    bail!("`--wasm-bulk-memory=false` is not supported");
                }
            }
            "-o" | "--output" => output = Some(PathBuf::from(value()?)),
            "--repx-cache-dir" => cache = Some(PathBuf::from(value()?)),
            _ if !name.starts_with('-') && input.is_none() => input = Some(PathBuf::from(arg)),
            _ => bail!(
                "unsupported argument `{arg}` (this pre-initialiser takes what componentize-js 0.23 passes to Wizer)"
            ),
        }
    }
    if !allow_wasi {
        bail!("`--allow-wasi` missing: componentize-js initialises its engine with WASI");
    }
    Ok(Args {
        init_func: init_func.unwrap_or_else(|| "wizer.initialize".to_string()),
        dirs,
        map_dirs,
        inherit_env,
        output: output.ok_or_else(|| anyhow!("no output (`-o PATH`)"))?,
        input: input.ok_or_else(|| anyhow!("no input module"))?,
        cache,
    })
}

/// Runs the pre-initialiser; stderr carries the failure, for componentize-js to show.
pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            eprintln!("repx plugin preinit: {e:#}");
            exit::FAILED
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let wasm =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let mut stdin = String::new();
    std::io::stdin()
        .read_to_string(&mut stdin)
        .context("reading the engine's arguments from stdin")?;
    let mut mounts = Vec::new();
    for (i, dir) in args.dirs.iter().enumerate() {
        let guest = format!("/preinit-dir-{i}");
        // The host path (a temporary directory of a random name) reaches the engine only
        // through its arguments: there it becomes the fixed name.
        let host = dir.to_string_lossy();
        let host = host.trim_end_matches('/');
        if dir.is_absolute() && !host.is_empty() {
            stdin = stdin.replace(&format!("{host}/"), &format!("{guest}/"));
        }
        mounts.push(Mount {
            host: dir.clone(),
            guest,
            writable: true,
        });
    }
    for (guest, host) in &args.map_dirs {
        // componentize-js maps the directory it runs in (the plugin's) and passes its
        // absolute path as `--strip-path-prefix`, which only shortens file names in stack
        // traces: named as the run sees it, the plugin builds to the same bytes wherever
        // it lies.
        let host_path = host.to_string_lossy();
        let host_path = host_path.trim_end_matches('/');
        if host.is_absolute() && !host_path.is_empty() {
            let guest_path = format!("{}/", guest.trim_end_matches('/'));
            stdin = stdin.replace(&format!("{host_path}/"), &guest_path);
        }
        mounts.push(Mount {
            host: host.clone(),
            guest: guest.clone(),
            writable: true,
        });
    }
    let mut seed = blake3::Hasher::new();
    seed.update(b"repx plugin preinit\0");
    seed.update(&wasm);
    seed.update(stdin.as_bytes());
    let policy = Policy {
        mode: crate::lab::Mode::Pure,
        mounts,
        // The environment componentize-js gave, less the `PWD` that the script starting
        // this adds (sh exports it): it names the plugin's directory.
        env: if args.inherit_env {
            std::env::vars().filter(|(name, _)| name != "PWD").collect()
        } else {
            Vec::new()
        },
        args: Vec::new(),
        cwd: None,
        seed: Some(*seed.finalize().as_bytes()),
    };
    let mut builder = WasiCtxBuilder::new();
    policy.apply(&mut builder)?;
    builder
        .stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(stdin))
        .inherit_stdout()
        .inherit_stderr();
    // The compiled-plugin cache, unless the run could write into it: the plugin's own
    // top-level code runs in it, with these directories writable.
    let cache = args.cache.or_else(crate::wasm::cache_dir).filter(|cache| {
        let cache = crate::store::location::real_path(cache);
        !policy
            .mounts
            .iter()
            .any(|m| cache.starts_with(crate::store::location::real_path(&m.host)))
    });
    let output = preinitialize(&wasm, &args.init_func, builder.build_p1(), cache)?;
    crate::cli::atomic::write(&args.output, &output)
        .with_context(|| format!("writing {}", args.output.display()))
}

/// Wizer's own instrumentation and snapshot (`wasmtime-wizer`, without its runner): the
/// run between them is ours, so that the engine starts under a pure job's policy.
fn preinitialize(
    wasm: &[u8],
    init_func: &str,
    wasi: WasiP1Ctx,
    cache: Option<PathBuf>,
) -> anyhow::Result<Vec<u8>> {
    let mut wizer = wasmtime_wizer::Wizer::new();
    wizer.init_func(init_func);
    let (context, instrumented) = wizer.instrument(wasm).map_err(engine_error)?;
    let engine = wasmtime::Engine::new(&wasmtime::Config::new()).map_err(engine_error)?;
    let plugin = crate::wasm::Plugin {
        name: "the engine componentize-js initialises".to_string(),
        digest: blake3::hash(&instrumented).to_hex().to_string(),
        bytes: instrumented.into(),
    };
    let module = crate::wasm::cached_module(&engine, cache, &plugin)
        .map_err(|e| anyhow!("compiling the module: {e:#}"))?;
    let mut linker = wasmtime::Linker::<State>::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut State| &mut state.wasi)
        .map_err(engine_error)?;
    fixed_file_stats(&mut linker).map_err(engine_error)?;
    linker
        .define_unknown_imports_as_traps(&module)
        .map_err(engine_error)?;
    let state = State {
        wasi,
        files: Vec::new(),
    };
    let mut store = wasmtime::Store::new(&engine, state);
    let instance = linker
        .instantiate(&mut store, &module)
        .map_err(|e| anyhow!("instantiating the module: {e:#}"))?;
    // As Wizer runs them: a reactor's `_initialize`, then the init function (once).
    let reactor = instance
        .get_typed_func::<(), ()>(&mut store, "_initialize")
        .ok();
    if let Some(initialize) = &reactor {
        initialize
            .call(&mut store, ())
            .map_err(|e| anyhow!("the `_initialize` function trapped: {e:#}"))?;
    }
    if reactor.is_none() || init_func != "_initialize" {
        instance
            .get_typed_func::<(), ()>(&mut store, init_func)
            .map_err(|e| anyhow!("the module exports no function `{init_func}: [] -> []`: {e:#}"))?
            .call(&mut store, ())
            .map_err(|e| anyhow!("the `{init_func}` function trapped: {e:#}"))?;
    }
    // The snapshot is async for hosts that are; every await of ours is ready at once.
    let mut state = Snapshot {
        store: &mut store,
        instance,
    };
    wasmtime_wasi::runtime::in_tokio(wizer.snapshot(&context, &mut state)).map_err(engine_error)
}

/// What Wizer's snapshot reads of the initialised instance: the globals and memories that
/// its instrumentation exported.
struct Snapshot<'a> {
    store: &'a mut wasmtime::Store<State>,
    instance: wasmtime::Instance,
}

impl wasmtime_wizer::InstanceState for Snapshot<'_> {
    async fn global_get(&mut self, name: &str, _: ValType) -> SnapshotVal {
        // Wizer asks only for the globals it exported, and refuses reference globals.
        let global = self
            .instance
            .get_global(&mut *self.store, name)
            .expect("exported by Wizer's instrumentation");
        match global.get(&mut *self.store) {
            wasmtime::Val::I32(x) => SnapshotVal::I32(x),
            wasmtime::Val::I64(x) => SnapshotVal::I64(x),
            wasmtime::Val::F32(x) => SnapshotVal::F32(x),
            wasmtime::Val::F64(x) => SnapshotVal::F64(x),
            wasmtime::Val::V128(x) => SnapshotVal::V128(x.as_u128()),
            other => unreachable!(
                "Wizer refuses a global of type {:?}",
                other.ty(&*self.store)
            ),
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        let memory = self
            .instance
            .get_memory(&mut *self.store, name)
            .expect("exported by Wizer's instrumentation");
        contents(memory.data(&*self.store))
    }
}

/// The store of the run: WASI, and what [`fixed_file_stats`] keeps.
struct State {
    wasi: WasiP1Ctx,
    /// The host's inode hashes, in the order the run first saw them.
    files: Vec<u64>,
}

const PREVIEW1: &str = "wasi_snapshot_preview1";

/// Preview 1's two `filestat` calls as wasmtime-wasi answers them, with the times fixed
/// (to the clock's) and the inode numbered by first sight: what a file's metadata tells
/// the engine is then the same in every build, and two names of one file still have one
/// number. (The engine keeps the stat of a module it loads, its SDK's `repx.js`, and
/// the files are new in each build.)
fn fixed_file_stats(linker: &mut wasmtime::Linker<State>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p1::types::{Fd, Lookupflags};
    linker.allow_shadowing(true);
    linker.func_wrap(
        PREVIEW1,
        "fd_filestat_get",
        |mut caller: wasmtime::Caller<'_, State>, fd: i32, buf: i32| {
            filestat(&mut caller, buf, |wasi, memory| {
                wasmtime_wasi::runtime::in_tokio(WasiSnapshotPreview1::fd_filestat_get(
                    wasi,
                    memory,
                    Fd::from(fd as u32),
                ))
            })
        },
    )?;
    linker.func_wrap(
        PREVIEW1,
        "path_filestat_get",
        |mut caller: wasmtime::Caller<'_, State>,
         dir: i32,
         flags: i32,
         path: i32,
         len: i32,
         buf: i32| {
            let flags = Lookupflags::from_bits_truncate(flags as u32);
            let path = wiggle::GuestPtr::new((path as u32, len as u32));
            filestat(&mut caller, buf, |wasi, memory| {
                wasmtime_wasi::runtime::in_tokio(WasiSnapshotPreview1::path_filestat_get(
                    wasi,
                    memory,
                    Fd::from(dir as u32),
                    flags,
                    path,
                ))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Runs `stat` on the guest's memory and writes its answer at `buf`, fixed as
/// [`fixed_file_stats`] says; the errno, as preview 1 returns it.
fn filestat(
    caller: &mut wasmtime::Caller<'_, State>,
    buf: i32,
    stat: impl FnOnce(
        &mut WasiP1Ctx,
        &mut wiggle::GuestMemory<'_>,
    )
        -> Result<wasmtime_wasi::p1::types::Filestat, wasmtime_wasi::p1::types::Error>,
) -> wasmtime::Result<i32> {
    // WASI's memory is `memory`, or else the module's first, exported by Wizer's
    // instrumentation.
    let memory = ["memory", "__wizer_memory_0"]
        .into_iter()
        .find_map(|name| caller.get_export(name).and_then(|e| e.into_memory()))
        .ok_or_else(|| wasmtime::format_err!("the module has no memory"))?;
    let (data, state) = memory.data_and_store_mut(&mut *caller);
    let answer = stat(
        &mut state.wasi,
        &mut wiggle::GuestMemory::Unshared(&mut *data),
    );
    let stat = match answer {
        Ok(stat) => stat,
        Err(error) => return Ok(error.downcast()? as i32),
    };
    let number = match state.files.iter().position(|seen| *seen == stat.ino) {
        Some(i) => i,
        None => {
            state.files.push(stat.ino);
            state.files.len() - 1
        }
    };
    let time = crate::wasm::policy::FIXED_EPOCH_SECS * 1_000_000_000;
    // Preview 1's `filestat`: dev, ino, filetype (u8), nlink, size, atim, mtim, ctim.
    let mut bytes = [0u8; 64];
    bytes[0..8].copy_from_slice(&stat.dev.to_le_bytes());
    bytes[8..16].copy_from_slice(&(number as u64 + 1).to_le_bytes());
    bytes[16] = u8::from(stat.filetype);
    bytes[24..32].copy_from_slice(&stat.nlink.to_le_bytes());
    bytes[32..40].copy_from_slice(&stat.size.to_le_bytes());
    for field in [40, 48, 56] {
        bytes[field..field + 8].copy_from_slice(&time.to_le_bytes());
    }
    let at = buf as u32 as usize;
    match data.get_mut(at..at + bytes.len()) {
        Some(out) => {
            out.copy_from_slice(&bytes);
            Ok(0)
        }
        None => Ok(wasmtime_wasi::p1::types::Errno::Fault as i32),
    }
}

fn engine_error(e: wasmtime::Error) -> anyhow::Error {
    anyhow!("{e:#}")
}
