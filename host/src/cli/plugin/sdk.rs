//! The guest SDKs as this binary carries them: the WIT contract, the C, Python and
//! JavaScript SDK files, and the Rust SDK's sources, so that `repx plugin new` and
//! `repx plugin build` work from an installed `repx`, offline and anywhere, and a plugin
//! always builds against the contract of the host that runs it.

use std::path::Path;

/// A file: its path relative to where it is written, and its text.
pub type File = (&'static str, &'static str);

/// `guest-sdk/wit`: the `repx:stage` package and the WASI packages it uses.
pub const WIT: &[File] = &[
    (
        "stage.wit",
        include_str!("../../../../guest-sdk/wit/stage.wit"),
    ),
    (
        "deps/cli.wit",
        include_str!("../../../../guest-sdk/wit/deps/cli.wit"),
    ),
    (
        "deps/clocks.wit",
        include_str!("../../../../guest-sdk/wit/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../../../guest-sdk/wit/deps/filesystem.wit"),
    ),
    (
        "deps/io.wit",
        include_str!("../../../../guest-sdk/wit/deps/io.wit"),
    ),
    (
        "deps/random.wit",
        include_str!("../../../../guest-sdk/wit/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../../../guest-sdk/wit/deps/sockets.wit"),
    ),
];

pub const C: &[File] = &[
    ("repx.h", include_str!("../../../../guest-sdk/c/repx.h")),
    ("repx.c", include_str!("../../../../guest-sdk/c/repx.c")),
];

pub const PYTHON: &[File] = &[(
    "repx.py",
    include_str!("../../../../guest-sdk/python/repx.py"),
)];

pub const JS: &[File] = &[("repx.js", include_str!("../../../../guest-sdk/js/repx.js"))];

/// The Rust SDK's sources; its manifest is written from [`RUST_MANIFEST`], since the
/// workspace's own inherits from the workspace.
pub const RUST: &[File] = &[
    (
        "src/lib.rs",
        include_str!("../../../../guest-sdk/src/lib.rs"),
    ),
    (
        "src/context.rs",
        include_str!("../../../../guest-sdk/src/context.rs"),
    ),
    (
        "src/inputs.rs",
        include_str!("../../../../guest-sdk/src/inputs.rs"),
    ),
    (
        "src/suggest.rs",
        include_str!("../../../../guest-sdk/src/suggest.rs"),
    ),
    (
        "src/tool.rs",
        include_str!("../../../../guest-sdk/src/tool.rs"),
    ),
];

pub const RUST_MANIFEST: &str = include_str!("../../../templates/plugin/rust/repx-guest.toml");

/// The WASI preview1 adapter of the host's wasmtime, which makes a wasm32-wasi core module
/// (C) a component.
pub const WASI_ADAPTER: &[u8] =
    wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER;

/// Writes `files` under `dir`, replacing what is there.
pub fn write(dir: &Path, files: &[File]) -> std::io::Result<()> {
    for (path, text) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        super::super::atomic::write(&target, text.as_bytes())?;
    }
    Ok(())
}
