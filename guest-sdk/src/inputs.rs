//! Which inputs the host gave the stage, for naming them when the stage asks for another.
//!
//! Each input is a directory the host preopened at `/in/<name>`; there is no `/in` to
//! list. WASI names its preopens, so they are read from there: through preview 1's
//! `fd_prestat_*`, which a wasm32-wasip2 component gets from the adapter its linker
//! already adds for the standard library, and which a wasip1 module has natively.

/// The names of the stage's inputs, sorted; a gather input's per-job directories are
/// inside it, not inputs of their own.
pub(crate) fn names() -> Vec<String> {
    let mut names: Vec<String> = directories()
        .into_iter()
        .filter_map(|dir| dir.strip_prefix("/in/").map(str::to_string))
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The guest paths of the preopened directories.
#[cfg(target_os = "wasi")]
fn directories() -> Vec<String> {
    #[repr(C)]
    struct Prestat {
        tag: u8,
        name_len: usize,
    }
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        fn fd_prestat_get(fd: u32, prestat: *mut Prestat) -> u16;
        fn fd_prestat_dir_name(fd: u32, path: *mut u8, len: usize) -> u16;
    }
    const BADF: u16 = 8;

    let mut dirs = Vec::new();
    // Preopens take the descriptors after stdio, in a row; the first bad one ends them.
    for fd in 3.. {
        let mut prestat = Prestat {
            tag: 0,
            name_len: 0,
        };
        // SAFETY: `prestat` is a valid, writable `__wasi_prestat_t`.
        match unsafe { fd_prestat_get(fd, &mut prestat) } {
            0 => {}
            BADF => break,
            _ => continue,
        }
        let mut name = vec![0u8; prestat.name_len];
        // SAFETY: `name` has room for the `name_len` bytes the host writes.
        if unsafe { fd_prestat_dir_name(fd, name.as_mut_ptr(), name.len()) } == 0 {
            dirs.push(String::from_utf8_lossy(&name).into_owned());
        }
    }
    dirs
}

/// Outside WASI (a native build of a stage) the inputs are directories in `/in`.
#[cfg(not(target_os = "wasi"))]
fn directories() -> Vec<String> {
    std::fs::read_dir("/in")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| format!("/in/{}", entry.file_name().to_string_lossy()))
        .collect()
}
