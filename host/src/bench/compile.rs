//! Case (c): loading a cached compiled plugin, against compiling it.
//!
//! The plugin is generated here, so the case needs no build and its size is exact: a
//! component that exports `wasi:cli/run` (a valid plugin that exits 0) around a core
//! module of many small functions with loops and arithmetic, about 200 bytes each, so
//! that Cranelift has real code to compile. Both sides go through [`Runtime::prepare`]
//! with an on-disk cache: the first compiles and writes the cache, each later one (in a
//! fresh runtime, as a new `repx` process would) maps the artifact and links it.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{BenchError, Case, Figure, Target, Unit, median, ms};
use crate::wasm::{Plugin, Runtime};

/// How many cached loads are timed.
const LOADS: usize = 7;

pub fn measure(dir: &Path, bytes: usize) -> Result<Vec<Figure>, BenchError> {
    let failed = |e: crate::wasm::RuntimeError| BenchError::Case {
        case: Case::C,
        message: e.to_string(),
    };
    let plugin = Plugin::new("generated component".into(), component(bytes));
    let size = plugin.bytes.len();
    let prepare = || -> Result<Duration, BenchError> {
        let runtime = Runtime::new(Some(dir.to_path_buf()), 1).map_err(failed)?;
        let started = Instant::now();
        runtime.prepare(&plugin).map_err(failed)?;
        Ok(started.elapsed())
    };
    let compile = prepare()?;
    let loads = (0..LOADS)
        .map(|_| prepare())
        .collect::<Result<Vec<_>, _>>()?;
    let load = median(loads);
    super::fixture::remove(dir);
    Ok(vec![
        Figure::new(
            Case::C,
            format!(
                "compile a {:.1} MiB component (and cache it)",
                size as f64 / f64::from(1 << 20)
            ),
            ms(compile),
            Unit::Ms,
        ),
        Figure::new(
            Case::C,
            format!("load it from the cache, median of {LOADS}"),
            ms(load),
            Unit::Ms,
        )
        .target(Target::AtMost(5.0)),
        Figure::new(
            Case::C,
            "compile / load",
            compile.as_secs_f64() / load.as_secs_f64(),
            Unit::Times,
        ),
    ])
}

/// A `wasi:cli/run` component of about `size` bytes.
pub fn component(size: usize) -> Vec<u8> {
    let module = core_module(size.saturating_sub(64));
    let mut out = b"\0asm\x0d\x00\x01\x00".to_vec();
    // 1: the core module.
    section(&mut out, 1, &module);
    // 2: one core instance of it, no imports.
    section(&mut out, 2, &[1, 0x00, 0, 0]);
    // 6: alias its `run` export as core func 0.
    let mut alias = vec![1, 0x00, 0x00, 0x01, 0];
    name(&mut alias, "run");
    section(&mut out, 6, &alias);
    // 7: type 0 = result (no payloads); type 1 = func() -> result.
    section(&mut out, 7, &[2, 0x6a, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00]);
    // 8: lift core func 0 at type 1, no options: component func 0.
    section(&mut out, 8, &[1, 0x00, 0x00, 0, 0, 1]);
    // 5: an instance of the inline export `run` = func 0.
    let mut instance = vec![1, 0x01, 1, 0x00];
    name(&mut instance, "run");
    instance.extend([0x01, 0]);
    section(&mut out, 5, &instance);
    // 11: export that instance as `wasi:cli/run@0.2.0`.
    let mut export = vec![1, 0x00];
    name(&mut export, "wasi:cli/run@0.2.0");
    export.extend([0x05, 0, 0x00]);
    section(&mut out, 11, &export);
    out
}

/// A core module of functions `(i32, i32) -> i32` plus `run: () -> i32` returning 0.
fn core_module(size: usize) -> Vec<u8> {
    let mut bodies = Vec::new();
    let mut count = 0u32;
    while bodies.len() < size {
        let body = function_body(count);
        leb(&mut bodies, body.len() as u64);
        bodies.extend(body);
        count += 1;
    }
    // `run`: i32.const 0.
    bodies.extend([4, 0, 0x41, 0, 0x0b]);

    let mut out = b"\0asm\x01\x00\x00\x00".to_vec();
    section(
        &mut out,
        1,
        &[2, 0x60, 2, 0x7f, 0x7f, 1, 0x7f, 0x60, 0, 1, 0x7f],
    );
    let mut functions = Vec::new();
    leb(&mut functions, u64::from(count) + 1);
    functions.extend(std::iter::repeat_n(0u8, count as usize));
    functions.push(1);
    section(&mut out, 3, &functions);
    let mut exports = vec![1];
    name(&mut exports, "run");
    exports.push(0x00);
    leb(&mut exports, u64::from(count));
    section(&mut out, 7, &exports);
    let mut code = Vec::new();
    leb(&mut code, u64::from(count) + 1);
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

    #[test]
    fn the_generated_component_is_a_plugin_of_the_size_asked() {
        let bytes = component(64 << 10);
        assert!(
            (64 << 10..80 << 10).contains(&bytes.len()),
            "{} bytes",
            bytes.len()
        );
        let plugin = Plugin::new("generated".into(), bytes);
        assert!(plugin.is_component());
        let runtime = Runtime::new(None, 1).unwrap();
        runtime.prepare(&plugin).unwrap();
    }
}
