//! First-party plugins embedded in the binary, named `builtin:<name>` in labs.

/// Names of the built-in plugins.
pub const NAMES: &[&str] = &["cargo", "exec", "make"];

/// The wasm bytes of built-in plugin `name`.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    match name {
        "cargo" => Some(include_bytes!(concat!(env!("OUT_DIR"), "/cargo.wasm"))),
        "exec" => Some(include_bytes!(concat!(env!("OUT_DIR"), "/exec.wasm"))),
        "make" => Some(include_bytes!(concat!(env!("OUT_DIR"), "/make.wasm"))),
        _ => None,
    }
}
