//! Builds the first-party plugins that the binary embeds as `builtin:make`,
//! `builtin:exec` and `builtin:cargo`, and the example plugins that `repx init` writes into new labs. They are
//! ordinary plugins from `plugins/`, compiled for wasm32-wasip2; nothing in the host
//! special-cases them beyond their names.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const BUILTINS: [&str; 3] = ["make", "exec", "cargo"];
/// The plugins of `repx init`'s templates.
const TEMPLATE_PLUGINS: [&str; 5] = ["generate", "sum", "plot", "sweep-point", "sweep-gather"];

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    let plugins = root.join("plugins");
    let target_dir = plugins.join("target");
    for path in [
        "guest-sdk/src",
        "guest-sdk/wit",
        "guest-sdk/Cargo.toml",
        "plugins/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    let mut cargo = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // The host build's flags are for the host, not for wasm.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    for name in BUILTINS.into_iter().chain(TEMPLATE_PLUGINS) {
        println!("cargo:rerun-if-changed={}", plugins.join(name).display());
        cargo.args(["-p", &format!("repx-plugin-{name}")]);
    }
    let status = cargo.status().expect("cargo runs");
    if !status.success() {
        panic!(
            "building the built-in plugins failed; is the wasm32-wasip2 target installed? \
             (rustup target add wasm32-wasip2)"
        );
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", plugins.join("xy").display());
    for name in BUILTINS.into_iter().chain(TEMPLATE_PLUGINS) {
        let wasm = target_dir.join(format!("wasm32-wasip2/release/{name}.wasm"));
        std::fs::copy(&wasm, out.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    }
}
