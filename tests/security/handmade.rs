//! Hostile plugins of shapes no Rust compiler emits, encoded here at test time with
//! `wasm-encoder`: real components, checked by wasmtime like any plugin.

use wasm_encoder::{
    BlockType, CanonicalFunctionSection, CodeSection, Component, ComponentAliasSection,
    ComponentExportKind, ComponentExportSection, ComponentInstanceSection, ComponentTypeSection,
    ComponentValType, EntityType, ExportKind, ExportSection, Function, FunctionSection,
    ImportSection, InstanceSection, MemArg, MemorySection, MemoryType, Module, ModuleArg,
    ModuleSection, TypeSection, ValType,
};

/// A WebAssembly page: 64 KiB.
pub const PAGE: u64 = 64 << 10;

/// A WASI command component made of `instances` instances of one core module, each
/// with a linear memory of its own of `bytes` (rounded up to whole pages) that `run`
/// fills, one byte per page. Its `wasi:cli/run` is the first instance's `run`: it spins
/// forever when `spin`, else returns `ok`. It imports nothing.
pub fn many_memories(instances: u32, bytes: u64, spin: bool) -> Vec<u8> {
    let pages = bytes.div_ceil(PAGE);
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]);
    module.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: pages,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    module.section(&memories);
    let mut exports = ExportSection::new();
    exports.export("run", ExportKind::Func, 0);
    module.section(&exports);
    let mut code = CodeSection::new();
    // One local: the address of the page to touch, from the last page down to 0.
    let mut run = Function::new([(1, ValType::I32)]);
    let last = i32::try_from((pages.max(1) - 1) * PAGE).unwrap();
    run.instructions()
        .i32_const(last)
        .local_set(0)
        .loop_(BlockType::Empty)
        .local_get(0)
        .i32_const(1)
        .i32_store8(MemArg {
            offset: 0,
            align: 0,
            memory_index: 0,
        })
        .local_get(0)
        .i32_const(PAGE as i32)
        .i32_sub()
        .local_tee(0)
        .i32_const(0)
        .i32_ge_s()
        .br_if(0)
        .end();
    if spin {
        run.instructions().loop_(BlockType::Empty).br(0).end();
    }
    run.instructions().i32_const(0).end();
    code.function(&run);
    module.section(&code);

    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    let mut core_instances = InstanceSection::new();
    for _ in 0..instances {
        core_instances.instantiate(0, Vec::<(&str, ModuleArg)>::new());
    }
    component.section(&core_instances);
    let mut aliases = ComponentAliasSection::new();
    aliases.alias(wasm_encoder::Alias::CoreInstanceExport {
        instance: 0,
        kind: ExportKind::Func,
        name: "run",
    });
    component.section(&aliases);
    let mut types = ComponentTypeSection::new();
    // 0: `result`, with neither an ok nor an error payload; 1: `func() -> result`.
    types.defined_type().result(None, None);
    types
        .function()
        .params(Vec::<(&str, ComponentValType)>::new())
        .result(Some(ComponentValType::Type(0)));
    component.section(&types);
    let mut canonical = CanonicalFunctionSection::new();
    canonical.lift(0, 1, []);
    component.section(&canonical);
    let mut instance = ComponentInstanceSection::new();
    instance.export_items([("run", ComponentExportKind::Func, 0)]);
    component.section(&instance);
    let mut export = ComponentExportSection::new();
    export.export("wasi:cli/run@0.2.0", ComponentExportKind::Instance, 0, None);
    component.section(&export);
    component.finish()
}

/// A WASI preview 1 core module whose `_start` polls its stdin for reading
/// (`poll_oneoff` with one `fd_read` subscription, as `poll(2)` in wasi-libc does) and
/// exits with the errno the poll returned.
pub fn poll_stdin() -> Vec<u8> {
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32; 4], [ValType::I32]); // poll_oneoff
    types.ty().function([ValType::I32], []); // proc_exit
    types.ty().function([], []); // _start
    module.section(&types);
    let mut imports = ImportSection::new();
    imports.import(
        "wasi_snapshot_preview1",
        "poll_oneoff",
        EntityType::Function(0),
    );
    imports.import(
        "wasi_snapshot_preview1",
        "proc_exit",
        EntityType::Function(1),
    );
    module.section(&imports);
    let mut functions = FunctionSection::new();
    functions.function(2);
    module.section(&functions);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    module.section(&memories);
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("_start", ExportKind::Func, 2);
    module.section(&exports);
    let mut code = CodeSection::new();
    let mut start = Function::new([]);
    // The subscription at 0: userdata 0, tag 1 (fd_read) at 8, the fd (0) at 16.
    start
        .instructions()
        .i32_const(8)
        .i32_const(1)
        .i32_store8(MemArg {
            offset: 0,
            align: 0,
            memory_index: 0,
        });
    // One event at 256, the count written at 512.
    start
        .instructions()
        .i32_const(0)
        .i32_const(256)
        .i32_const(1)
        .i32_const(512)
        .call(0)
        .call(1)
        .end();
    code.function(&start);
    module.section(&code);
    module.finish()
}
