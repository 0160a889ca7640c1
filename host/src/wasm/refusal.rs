//! Why a plugin cannot be loaded, in words a user can act on.
//!
//! Compiling and linking happen before any job starts (see [`super::Runtime::prepare`]),
//! so these reasons refuse a run rather than fail a job. The compiler's and linker's own
//! messages are kept where they are already plain, and replaced where they are not: a
//! file that is not WebAssembly at all (the parser would dump its first bytes), and an
//! import the host does not provide (the linker calls that a type mismatch).

/// A file that cannot be WebAssembly, told apart before the compiler sees it.
pub(super) fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if !bytes.starts_with(b"\0asm") {
        return Err("it is not WebAssembly (a .wasm file starts with the bytes `\\0asm`)".into());
    }
    Ok(())
}

/// Why compiling or linking failed: the import the host lacks, named in full, or else
/// the compiler's or linker's messages on one line.
pub(super) fn reason(error: &wasmtime::Error, component: bool) -> String {
    if let Some(unknown) = error.downcast_ref::<wasmtime::UnknownImportError>() {
        return not_provided(&format!("{}::{}", unknown.module(), unknown.name()), false);
    }
    let chain: Vec<String> = error.chain().map(|e| one_line(&e.to_string())).collect();
    // A component's missing import comes as "component imports instance `A`" over
    // "instance export `B` has the wrong type" over "function implementation is missing".
    if let [names @ .., last] = chain.as_slice()
        && last.ends_with("implementation is missing")
    {
        let path: Vec<&str> = names.iter().filter_map(|m| quoted(m)).collect();
        if !path.is_empty() {
            return not_provided(&path.join("#"), component);
        }
    }
    chain.join(": ")
}

fn not_provided(import: &str, component: bool) -> String {
    let provided = if component {
        "WASI 0.2 and the functions `repx:stage/host` declares"
    } else {
        "`wasi_snapshot_preview1`"
    };
    format!(
        "it imports `{import}`, which repx does not provide: a plugin may import only {provided}"
    )
}

/// The first `quoted` name in a message.
fn quoted(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once('`')?;
    rest.split_once('`').map(|(name, _)| name)
}

/// A message with its line breaks and runs of spaces as single spaces.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_wasm_are_named_so() {
        assert_eq!(check_header(b"").unwrap_err(), "the file is empty");
        let script = check_header(b"#!/bin/sh\n").unwrap_err();
        assert!(script.contains("not WebAssembly"), "{script}");
        assert!(check_header(b"\0asm\x01\0\0\0").is_ok());
    }

    #[test]
    fn a_missing_component_import_is_named_in_full() {
        let error = wasmtime::format_err!("function implementation is missing")
            .context("instance export `steal` has the wrong type")
            .context(
                "component imports instance `evil:host/escape@0.1.0`, but a matching \
                 implementation was not found in the linker",
            );
        let reason = reason(&error, true);
        assert!(
            reason.starts_with("it imports `evil:host/escape@0.1.0#steal`, which repx does not"),
            "{reason}"
        );
    }

    #[test]
    fn other_errors_keep_their_messages_on_one_line() {
        let error = wasmtime::format_err!("unexpected end-of-file\n  (at offset 0x10)")
            .context("failed to parse WebAssembly module");
        assert_eq!(
            reason(&error, false),
            "failed to parse WebAssembly module: unexpected end-of-file (at offset 0x10)"
        );
    }
}
