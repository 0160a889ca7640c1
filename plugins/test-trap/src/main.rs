//! Test plugin: traps at once (a wasm `unreachable`), so tests can check that a trap fails
//! the job. No parameters.

fn main() {
    core::arch::wasm32::unreachable()
}
