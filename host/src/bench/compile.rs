//! Case (c): loading a cached compiled plugin, against compiling it.
//!
//! The plugin is a real one made larger: `builtin:exec` (a Rust wasip2 plugin on the SDK,
//! importing the WASI interfaces such a plugin imports plus `repx:stage/host`) with a core
//! module of many small functions with loops and arithmetic added and instantiated, so
//! that its size is exact, Cranelift has real code to compile, and pre-linking has the
//! usual ~17 interfaces of imports to resolve.
//!
//! Both sides are timed from reading the plugin file to the plugin ready to instantiate,
//! as a `repx run` process does it: [`Plan::new`] reads the file and computes its digests
//! (SHA-256 for the pin check, BLAKE3 for the cache key and job ids), then
//! [`Runtime::prepare`] compiles it and writes the cache (the first time) or maps the
//! cached artifact (each later time, in a fresh runtime) and pre-links its imports.
//! Creating the runtime (engine and linker, once per process whatever its plugins) is
//! timed apart.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{BenchError, Case, Figure, Role, Target, Unit, io, median, ms};
use crate::graph::JobGraph;
use crate::lab::Lab;
use crate::plan::Plan;
use crate::store::{self, Store};
use crate::wasm::{Runtime, builtin};

/// How many cached loads are timed.
const LOADS: usize = 7;

/// The real plugin the generated one wraps.
const BASE: &str = "exec";

/// What one preparation of the plugin took.
pub(super) struct Timing {
    /// Creating the runtime, before the clock for the plugin starts.
    pub runtime: Duration,
    /// Reading the file and its digests.
    pub read: Duration,
    /// From reading the file to the plugin ready to instantiate.
    pub total: Duration,
}

/// Prepares the plugins of run `run` of the lab in `lab_dir` as a `repx run` process
/// does, in a fresh runtime of `concurrency` slots with the compiled plugins in `cache`.
pub(super) fn prepare(
    lab_dir: &Path,
    cache: &Path,
    run: &str,
    concurrency: usize,
    case: Case,
) -> Result<Timing, BenchError> {
    let failed = |message: String| BenchError::Case { case, message };
    let lab = Lab::load(lab_dir).map_err(|e| failed(e.to_string()))?;
    let graph = JobGraph::expand(&lab, &[run], None);
    let store =
        Store::open(&lab_dir.join(store::DEFAULT_DIR)).map_err(|e| failed(e.to_string()))?;
    let started = Instant::now();
    let runtime =
        Runtime::new(Some(cache.to_path_buf()), concurrency).map_err(|e| failed(e.to_string()))?;
    let runtime_made = started.elapsed();

    let started = Instant::now();
    let plan = Plan::new(lab, graph, &store).map_err(|e| failed(e.to_string()))?;
    let read = started.elapsed();
    for stage in plan.stages.values() {
        runtime
            .prepare(&stage.plugin)
            .map_err(|e| failed(e.to_string()))?;
    }
    Ok(Timing {
        runtime: runtime_made,
        read,
        total: started.elapsed(),
    })
}

pub fn measure(dir: &Path, bytes: usize) -> Result<Vec<Figure>, BenchError> {
    let failed = |message: String| BenchError::Case {
        case: Case::C,
        message,
    };
    let lab_dir = dir.join("lab");
    let cache = dir.join("cache");
    let base = builtin::bytes(BASE).ok_or_else(|| failed(format!("no builtin:{BASE}")))?;
    let plugin = component(base, bytes);
    std::fs::create_dir_all(&lab_dir).map_err(io(&lab_dir))?;
    let file = lab_dir.join("plugin.wasm");
    std::fs::write(&file, &plugin).map_err(io(&file))?;
    let lab_file = lab_dir.join(crate::lab::LAB_FILE);
    let lab = "[lab]\nname = \"bench-load\"\n\n\
               [stages.load]\nplugin = \"plugin.wasm\"\n\n\
               [pipelines.main]\nstages = [\"load\"]\n\n\
               [runs.load]\npipelines = [\"main\"]\n";
    std::fs::write(&lab_file, lab).map_err(io(&lab_file))?;

    let prepare = || prepare(&lab_dir, &cache, "load", 1, Case::C);
    let compile = prepare()?;
    let loads = (0..LOADS)
        .map(|_| prepare())
        .collect::<Result<Vec<_>, _>>()?;
    let median_of =
        |part: fn(&Timing) -> Duration| median(&loads.iter().map(part).collect::<Vec<_>>());
    let (load, read, runtime) = (
        median_of(|t| t.total),
        median_of(|t| t.read),
        median_of(|t| t.runtime),
    );
    super::fixture::remove(dir);
    let size = plugin.len() as f64 / f64::from(1 << 20);
    Ok(vec![
        Figure::new(
            Case::C,
            Role::Baseline,
            format!("compile a {size:.1} MiB plugin from its file (and cache it)"),
            ms(compile.total),
            Unit::Ms,
        ),
        Figure::new(
            Case::C,
            Role::Measure,
            format!("load it from its file and the cache, median of {LOADS}"),
            ms(load),
            Unit::Ms,
        )
        .target(Target::AtMost(5.0)),
        Figure::new(
            Case::C,
            Role::Detail,
            "of which reading the file and its digests",
            ms(read),
            Unit::Ms,
        ),
        Figure::new(
            Case::C,
            Role::Detail,
            "creating the runtime, once per process (not in the above)",
            ms(runtime),
            Unit::Ms,
        ),
        Figure::new(
            Case::C,
            Role::Ratio,
            "compile / load",
            compile.total.as_secs_f64() / load.as_secs_f64(),
            Unit::Times,
        ),
    ])
}

/// The component `base` with a core module of generated functions added and instantiated,
/// about `size` bytes in all. Its imports and exports are `base`'s.
pub fn component(base: &[u8], size: usize) -> Vec<u8> {
    // The new module's index follows the base's own core modules (top-level sections of
    // id 1); appended after everything else, it shifts no index the base uses.
    let module_index = top_level_sections(base).filter(|&(id, _)| id == 1).count();
    let module = core_module(size.saturating_sub(base.len() + 16));
    let mut out = base.to_vec();
    section(&mut out, 1, &module);
    // 2: one core instance of it, with no imports.
    let mut instance = vec![1, 0x00];
    leb(&mut instance, module_index as u64);
    instance.push(0);
    section(&mut out, 2, &instance);
    out
}

/// The (id, content) of each top-level section of a component or module.
fn top_level_sections(wasm: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut at = 8;
    std::iter::from_fn(move || {
        let id = *wasm.get(at)?;
        let (length, after) = read_leb(wasm, at + 1)?;
        let content = wasm.get(after..after + length as usize)?;
        at = after + content.len();
        Some((id, content))
    })
}

fn read_leb(bytes: &[u8], mut at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(at)?;
        at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
    }
    None
}

/// A core module of about `size` bytes of functions `(i32, i32) -> i32`, the first
/// exported (nothing calls them; Cranelift compiles every function all the same).
fn core_module(size: usize) -> Vec<u8> {
    let mut bodies = Vec::new();
    let mut count = 0u32;
    while bodies.len() < size || count == 0 {
        let body = function_body(count);
        leb(&mut bodies, body.len() as u64);
        bodies.extend(body);
        count += 1;
    }
    let mut out = b"\0asm\x01\x00\x00\x00".to_vec();
    section(&mut out, 1, &[1, 0x60, 2, 0x7f, 0x7f, 1, 0x7f]);
    let mut functions = Vec::new();
    leb(&mut functions, u64::from(count));
    functions.extend(std::iter::repeat_n(0u8, count as usize));
    section(&mut out, 3, &functions);
    let mut exports = vec![1];
    name(&mut exports, "mix");
    exports.extend([0x00, 0]);
    section(&mut out, 7, &exports);
    let mut code = Vec::new();
    leb(&mut code, u64::from(count));
    code.extend(bodies);
    section(&mut out, 10, &code);
    out
}

/// Six mixing rounds, each a counted loop, over the two parameters and two locals.
fn function_body(seed: u32) -> Vec<u8> {
    let mut code = vec![1, 2, 0x7f]; // two i32 locals
    let mut constant = seed.wrapping_mul(0x9e37_79b9) | 1;
    let mut next = || {
        constant ^= constant << 13;
        constant ^= constant >> 17;
        constant ^= constant << 5;
        constant as i32
    };
    for round in 0..6u8 {
        code.extend([0x20, round % 2, 0x41]); // local.get p; i32.const
        sleb(&mut code, next());
        code.extend([0x6c, 0x20, 2, 0x73, 0x21, 2]); // i32.mul; local.get 2; i32.xor; local.set 2
        code.extend([0x41, 0, 0x21, 3]); // i32.const 0; local.set 3
        code.extend([0x02, 0x40, 0x03, 0x40]); // block; loop
        code.extend([0x20, 2, 0x41]);
        sleb(&mut code, next());
        code.extend([0x6a, 0x41, (round * 3 + 5) & 31, 0x77, 0x21, 2]); // add; rotl; set 2
        code.extend([0x20, 3, 0x41, 1, 0x6a, 0x22, 3, 0x41]); // local.get 3; +1; tee 3; i32.const
        sleb(&mut code, (next() & 15) + 1);
        code.extend([0x49, 0x0d, 0]); // i32.lt_u; br_if 0 (the loop)
        code.extend([0x0b, 0x0b]); // end loop; end block
    }
    code.extend([0x20, 2, 0x0b]);
    code
}

fn section(out: &mut Vec<u8>, id: u8, content: &[u8]) {
    out.push(id);
    leb(out, content.len() as u64);
    out.extend_from_slice(content);
}

fn name(out: &mut Vec<u8>, name: &str) {
    leb(out, name.len() as u64);
    out.extend_from_slice(name.as_bytes());
}

fn leb(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn sleb(out: &mut Vec<u8>, mut value: i32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        let done = (value == 0 && byte & 0x40 == 0) || (value == -1 && byte & 0x40 != 0);
        out.push(if done { byte } else { byte | 0x80 });
        if done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::Plugin;

    /// The names a component imports, at its top level.
    fn imports(wasm: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            if let wasmparser::Payload::ComponentImportSection(section) = payload.unwrap() {
                for import in section {
                    names.push(import.unwrap().name.name.to_string());
                }
            }
        }
        names
    }

    /// The size of the compiled artifact that preparing `bytes` writes to a fresh cache.
    fn compiled_size(bytes: Vec<u8>, cache: &Path) -> u64 {
        let runtime = Runtime::new(Some(cache.to_path_buf()), 1).unwrap();
        let plugin = Plugin::new("generated".into(), bytes);
        assert!(plugin.is_component());
        runtime.prepare(&plugin).unwrap();
        walkdir::WalkDir::new(cache)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn the_generated_plugin_has_the_size_asked_a_real_plugins_imports_and_compiled_code() {
        let base = builtin::bytes(BASE).unwrap();
        let size = base.len() + (256 << 10);
        let bytes = component(base, size);
        assert!(
            (size..size + (16 << 10)).contains(&bytes.len()),
            "{} bytes, asked {size}",
            bytes.len()
        );
        let names = imports(&bytes);
        assert_eq!(names, imports(base));
        for interface in [
            "wasi:filesystem/types",
            "wasi:cli/environment",
            "repx:stage/host",
        ] {
            assert!(
                names.iter().any(|n| n.starts_with(interface)),
                "{interface} not among {names:?}"
            );
        }
        // The added functions are compiled, not skipped: the artifact grows with them.
        let dir = std::env::temp_dir().join(format!("repx-bench-compile-{}", std::process::id()));
        let grown = compiled_size(bytes, &dir.join("grown"));
        let plain = compiled_size(base.to_vec(), &dir.join("plain"));
        crate::store::remove_tree(&dir).unwrap();
        assert!(
            grown > plain + (256 << 10),
            "artifact of {grown} bytes, {plain} without the added code"
        );
    }
}
