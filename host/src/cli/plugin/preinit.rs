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
//! Invariants, as Wizer's: the module is instantiated with WASI preview1 (other imports
//! trap when called), `_initialize` then the init function run once, and the output is
//! the input with the defined memories' non-zero bytes as active data segments, the
//! defined globals' values as their initialisers, the memories' minimum sizes grown to
//! what the run left, and neither the start function nor the init export. What Wizer
//! refuses (passive data segments, a mutable reference global) is refused here.
//! A value the engine draws at build time is per build of these sources, not per job:
//! this was so under Wizer too, only its value changed from build to build.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use wasm_encoder::{ConstExpr, SectionId};
use wasmparser::{ExternalKind, Parser, Payload, TypeRef, ValType};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1;

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

/// What the rewrite needs to know of the input module.
#[derive(Default)]
struct Shape {
    imported_globals: u32,
    imported_memories: u32,
    globals: Vec<(wasmparser::GlobalType, Vec<u8>)>,
    memories: Vec<wasmparser::MemoryType>,
    exports: Vec<(String, ExternalKind, u32)>,
}

fn shape(wasm: &[u8]) -> anyhow::Result<Shape> {
    let mut shape = Shape::default();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    match import?.ty {
                        TypeRef::Global(_) => shape.imported_globals += 1,
                        TypeRef::Memory(_) => shape.imported_memories += 1,
                        _ => {}
                    }
                }
            }
            Payload::GlobalSection(globals) => {
                for global in globals {
                    let global = global?;
                    let expr = global.init_expr.get_binary_reader();
                    let start = expr.original_position() as usize;
                    let init = wasm[start..start + expr.bytes_remaining()].to_vec();
                    shape.globals.push((global.ty, init));
                }
            }
            Payload::MemorySection(memories) => {
                for memory in memories {
                    shape.memories.push(memory?);
                }
            }
            Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export?;
                    shape
                        .exports
                        .push((export.name.to_string(), export.kind, export.index));
                }
            }
            Payload::DataSection(data) => {
                for segment in data {
                    if matches!(segment?.kind, wasmparser::DataKind::Passive) {
                        bail!("the module has passive data segments, which a snapshot cannot keep");
                    }
                }
            }
            _ => {}
        }
    }
    Ok(shape)
}

const GLOBAL: &str = "__repx_preinit_global_";
const MEMORY: &str = "__repx_preinit_memory_";

/// The input, with every defined global and memory exported under a name of ours, so the
/// snapshot can read them.
fn instrument(wasm: &[u8], shape: &Shape) -> anyhow::Result<Vec<u8>> {
    let mut exports = wasm_encoder::ExportSection::new();
    for (name, kind, index) in &shape.exports {
        exports.export(name, export_kind(*kind)?, *index);
    }
    for i in 0..shape.globals.len() as u32 {
        exports.export(
            &format!("{GLOBAL}{i}"),
            wasm_encoder::ExportKind::Global,
            shape.imported_globals + i,
        );
    }
    for i in 0..shape.memories.len() as u32 {
        exports.export(
            &format!("{MEMORY}{i}"),
            wasm_encoder::ExportKind::Memory,
            shape.imported_memories + i,
        );
    }
    let mut module = wasm_encoder::Module::new();
    let mut exported = false;
    for (id, data) in raw_sections(wasm)? {
        if id == SectionId::Export as u8 {
            module.section(&exports);
            exported = true;
        } else {
            // Exports come before start, element, data count, code and data.
            if !exported && id != 0 && id > SectionId::Export as u8 {
                module.section(&exports);
                exported = true;
            }
            module.section(&wasm_encoder::RawSection { id, data });
        }
    }
    if !exported {
        module.section(&exports);
    }
    Ok(module.finish())
}

fn export_kind(kind: ExternalKind) -> anyhow::Result<wasm_encoder::ExportKind> {
    Ok(match kind {
        ExternalKind::Func | ExternalKind::FuncExact => wasm_encoder::ExportKind::Func,
        ExternalKind::Table => wasm_encoder::ExportKind::Table,
        ExternalKind::Memory => wasm_encoder::ExportKind::Memory,
        ExternalKind::Global => wasm_encoder::ExportKind::Global,
        ExternalKind::Tag => wasm_encoder::ExportKind::Tag,
    })
}

/// Each top-level section of a core module: its id and contents.
fn raw_sections(wasm: &[u8]) -> anyhow::Result<Vec<(u8, &[u8])>> {
    let mut sections = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        if let Some((id, range)) = payload?.as_section() {
            sections.push((id, &wasm[range.start as usize..range.end as usize]));
        }
    }
    Ok(sections)
}

fn preinitialize(
    wasm: &[u8],
    init_func: &str,
    wasi: WasiP1Ctx,
    cache: Option<PathBuf>,
) -> anyhow::Result<Vec<u8>> {
    let shape = shape(wasm)?;
    let instrumented = instrument(wasm, &shape)?;
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

    let mut globals = Vec::new();
    for (i, (ty, init)) in shape.globals.iter().enumerate() {
        let value = instance
            .get_global(&mut store, &format!("{GLOBAL}{i}"))
            .ok_or_else(|| anyhow!("global {i} not exported"))?
            .get(&mut store);
        let expr = match value {
            wasmtime::Val::I32(x) => ConstExpr::i32_const(x),
            wasmtime::Val::I64(x) => ConstExpr::i64_const(x),
            wasmtime::Val::F32(x) => ConstExpr::f32_const(wasm_encoder::Ieee32::new(x)),
            wasmtime::Val::F64(x) => ConstExpr::f64_const(wasm_encoder::Ieee64::new(x)),
            wasmtime::Val::V128(x) => ConstExpr::v128_const(x.as_u128() as i128),
            _ if !ty.mutable => ConstExpr::raw(init.iter().copied()),
            _ => bail!("global {i} is a mutable reference, which a snapshot cannot keep"),
        };
        globals.push((global_type(ty)?, expr));
    }
    let mut sizes = Vec::new();
    let mut segments = Vec::new();
    for i in 0..shape.memories.len() {
        let memory = instance
            .get_memory(&mut store, &format!("{MEMORY}{i}"))
            .ok_or_else(|| anyhow!("memory {i} not exported"))?;
        sizes.push(memory.size(&store));
        segments.extend(
            non_zero(memory.data(&store))
                .into_iter()
                .map(|(start, end)| (i as u32 + shape.imported_memories, start, end)),
        );
    }
    let segments = merge(segments);

    let mut data = wasm_encoder::DataSection::new();
    for (memory, start, end) in &segments {
        let bytes = instance
            .get_memory(
                &mut store,
                &format!("{MEMORY}{}", memory - shape.imported_memories),
            )
            .expect("exported above")
            .data(&store)[*start..*end]
            .to_vec();
        data.active(*memory, &ConstExpr::i32_const(*start as i32), bytes);
    }
    let mut data = Some(data);
    let mut module = wasm_encoder::Module::new();
    for (id, raw) in raw_sections(wasm)? {
        match id {
            id if id == SectionId::Memory as u8 => {
                let mut memories = wasm_encoder::MemorySection::new();
                for (ty, size) in shape.memories.iter().zip(&sizes) {
                    memories.memory(wasm_encoder::MemoryType {
                        minimum: *size,
                        maximum: ty.maximum,
                        memory64: ty.memory64,
                        shared: ty.shared,
                        page_size_log2: ty.page_size_log2,
                    });
                }
                module.section(&memories);
            }
            id if id == SectionId::Global as u8 => {
                let mut section = wasm_encoder::GlobalSection::new();
                for (ty, expr) in &globals {
                    section.global(*ty, expr);
                }
                module.section(&section);
            }
            id if id == SectionId::Export as u8 => {
                let mut exports = wasm_encoder::ExportSection::new();
                for (name, kind, index) in &shape.exports {
                    let initialised =
                        name == init_func || (reactor.is_some() && name == "_initialize");
                    if !initialised {
                        exports.export(name, export_kind(*kind)?, *index);
                    }
                }
                module.section(&exports);
            }
            id if id == SectionId::Start as u8 => {}
            id if id == SectionId::DataCount as u8 => {
                module.section(&wasm_encoder::DataCountSection {
                    count: segments.len() as u32,
                });
            }
            id if id == SectionId::Data as u8 => {
                if let Some(data) = data.take() {
                    module.section(&data);
                }
            }
            // Some tools want the name section last: the data goes before it.
            0 if is_name_section(raw) => {
                if let Some(data) = data.take() {
                    module.section(&data);
                }
                module.section(&wasm_encoder::RawSection { id, data: raw });
            }
            _ => {
                module.section(&wasm_encoder::RawSection { id, data: raw });
            }
        }
    }
    if let Some(data) = data.take() {
        module.section(&data);
    }
    let output = module.finish();
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&output)
        .context("the pre-initialised module does not validate")?;
    Ok(output)
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
    // WASI's memory is `memory`, or else the module's first, exported by [`instrument`].
    let memory = ["memory", &format!("{MEMORY}0")]
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

fn global_type(ty: &wasmparser::GlobalType) -> anyhow::Result<wasm_encoder::GlobalType> {
    let val_type = match ty.content_type {
        ValType::I32 => wasm_encoder::ValType::I32,
        ValType::I64 => wasm_encoder::ValType::I64,
        ValType::F32 => wasm_encoder::ValType::F32,
        ValType::F64 => wasm_encoder::ValType::F64,
        ValType::V128 => wasm_encoder::ValType::V128,
        ValType::Ref(r) if r.is_func_ref() && r.is_nullable() => wasm_encoder::ValType::FUNCREF,
        ValType::Ref(r) if r.is_extern_ref() && r.is_nullable() => wasm_encoder::ValType::EXTERNREF,
        other => bail!("a global of type {other} is not supported"),
    };
    Ok(wasm_encoder::GlobalType {
        val_type,
        mutable: ty.mutable,
        shared: ty.shared,
    })
}

fn is_name_section(raw: &[u8]) -> bool {
    wasmparser::BinaryReader::new(raw, 0).read_string().ok() == Some("name")
}

/// The runs of non-zero bytes of `memory`, page by page (as Wizer finds them).
fn non_zero(memory: &[u8]) -> Vec<(usize, usize)> {
    const PAGE: usize = 65_536;
    let mut runs = Vec::new();
    for page_start in (0..memory.len()).step_by(PAGE) {
        let page_end = (page_start + PAGE).min(memory.len());
        let mut at = page_start;
        while let Some(first) = memory[at..page_end].iter().position(|b| *b != 0) {
            let start = at + first;
            let end = memory[start..page_end]
                .iter()
                .position(|b| *b == 0)
                .map_or(page_end, |zero| start + zero);
            runs.push((start, end));
            at = end;
        }
    }
    runs
}

/// Runs of one memory closer than a segment's own cost (4 bytes) merged, then the closest
/// merged until there are fewer than 10,000 (engines limit a module's segments).
fn merge(runs: Vec<(u32, usize, usize)>) -> Vec<(u32, usize, usize)> {
    const OVERHEAD: usize = 4;
    const MAX_SEGMENTS: usize = 10_000;
    let mut merged: Vec<(u32, usize, usize)> = Vec::with_capacity(runs.len());
    for run in runs {
        match merged.last_mut() {
            Some(last) if last.0 == run.0 && run.1 - last.2 <= OVERHEAD => last.2 = run.2,
            _ => merged.push(run),
        }
    }
    if merged.len() < MAX_SEGMENTS {
        return merged;
    }
    let excess = merged.len() - MAX_SEGMENTS;
    // The smallest gaps, ties broken by position, so the choice is the same every time.
    let mut gaps: Vec<(usize, usize)> = merged
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0].0 == w[1].0)
        .map(|(i, w)| (w[1].1 - w[0].2, i))
        .collect();
    gaps.sort_unstable();
    gaps.truncate(excess);
    let mut join = vec![false; merged.len()];
    for (_, i) in gaps {
        join[i] = true;
    }
    let mut out: Vec<(u32, usize, usize)> = Vec::with_capacity(MAX_SEGMENTS);
    let mut joining = false;
    for (i, run) in merged.into_iter().enumerate() {
        match out.last_mut() {
            Some(last) if joining => last.2 = run.2,
            _ => out.push(run),
        }
        joining = join[i];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_zero_runs_stop_at_pages_and_merge_across_small_gaps() {
        let mut memory = vec![0u8; 2 * 65_536];
        memory[10..20].fill(1);
        memory[23..30].fill(1); // 3 bytes after: merged
        memory[100..110].fill(1); // far: its own
        memory[65_530..65_540].fill(1); // across the page boundary: two runs, then one
        let runs = non_zero(&memory);
        assert_eq!(
            runs,
            [
                (10, 20),
                (23, 30),
                (100, 110),
                (65_530, 65_536),
                (65_536, 65_540)
            ]
        );
        let merged = merge(runs.into_iter().map(|(s, e)| (0, s, e)).collect());
        assert_eq!(merged, [(0, 10, 30), (0, 100, 110), (0, 65_530, 65_540)]);
    }

    #[test]
    fn too_many_segments_are_merged_at_the_smallest_gaps() {
        // 10,002 runs 40 bytes apart, but runs 7 and 9 only 10 bytes from the next.
        let mut runs = Vec::new();
        let mut at = 0;
        for i in 0..10_002 {
            runs.push((0, at, at + 10));
            at += if i == 7 || i == 9 { 20 } else { 50 };
        }
        let merged = merge(runs.clone());
        assert_eq!(merged.len(), 10_000);
        assert_eq!(merged[7], (0, runs[7].1, runs[8].2));
        assert_eq!(merged[8], (0, runs[9].1, runs[10].2));
        assert_eq!(merged[9], runs[11]);
        assert_eq!(merged.last(), runs.last());
    }
}
