//! What a plugin may open: regular files and directories, nothing else.
//!
//! Opening a FIFO blocks in the kernel until someone opens its other end, and a device
//! does whatever its driver does; a plugin's thread blocked there runs no wasm that its
//! time limit or an interrupt could stop. A FIFO can be in the project directory of an
//! impure job, or made in `/tmp` by a tool a pure job runs. So a component's
//! `descriptor.open-at` first looks, without opening, at what the path names (resolved
//! as the open resolves it, inside the same directory), and traps, naming the path and
//! its kind, if that is a FIFO, a socket or a device. The look and the open are two
//! steps: a file swapped in between by something outside the job is left to the
//! watchdog (see [`super::deadline`]), which wakes the blocked open at the deadline.
//!
//! Components only: a core module opens through wasmtime-wasi's preview 1, whose
//! descriptors cannot be looked into from outside; there the watchdog alone holds the
//! time limit and interrupts.

use cap_std::fs::FileTypeExt;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::sync::filesystem::types::{
    self, DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};

use super::streams::FILESYSTEM_TYPES;

/// A job's state, as `descriptor.open-at` sees it.
pub trait OpenView: Send + 'static {
    fn files(&mut self) -> WasiFilesystemCtxView<'_>;
}

/// Replaces `descriptor.open-at`, which `add_to_linker_sync` defined.
pub fn shadow<T: OpenView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = linker
        .instance(FILESYSTEM_TYPES)?
        .func_wrap(
            "[method]descriptor.open-at",
            |mut store,
             (fd, path_flags, path, open_flags, flags): (
                Resource<Descriptor>,
                PathFlags,
                String,
                OpenFlags,
                DescriptorFlags,
            )| {
                let state: &mut T = store.data_mut();
                Ok((open_at(
                    state.files(),
                    fd,
                    path_flags,
                    path,
                    open_flags,
                    flags,
                )?,))
            },
        )
        .map(drop);
    linker.allow_shadowing(false);
    added
}

/// wasmtime-wasi's `open-at`, once the path is known to name no special file.
pub(super) fn open_at(
    mut files: WasiFilesystemCtxView<'_>,
    fd: Resource<Descriptor>,
    path_flags: PathFlags,
    path: String,
    open_flags: OpenFlags,
    flags: DescriptorFlags,
) -> wasmtime::Result<Result<Resource<Descriptor>, ErrorCode>> {
    if let Ok(Descriptor::Dir(dir)) = files.table.get(&fd) {
        let follow = path_flags.contains(PathFlags::SYMLINK_FOLLOW);
        if let Some(kind) = special(&dir.dir, &path, follow) {
            return Err(wasmtime::format_err!(
                "refused to open `{path}`: it is {kind}; a plugin may open only regular \
                 files and directories (opening anything else can block the host)"
            ));
        }
    }
    match HostDescriptor::open_at(&mut files, fd, path_flags, path, open_flags, flags) {
        Ok(opened) => Ok(Ok(opened)),
        Err(e) => Ok(Err(types::Host::convert_error_code(&mut files, e)?)),
    }
}

/// What `path` under `dir` is, when that is a special file. Resolved by `cap-std`, as
/// wasmtime-wasi's open resolves it: never outside `dir`. A path that does not resolve
/// is no special file; the open reports why.
fn special(dir: &std::fs::File, path: &str, follow: bool) -> Option<&'static str> {
    let dir = cap_std::fs::Dir::from_std_file(dir.try_clone().ok()?);
    let meta = if follow {
        dir.metadata(path)
    } else {
        dir.symlink_metadata(path)
    }
    .ok()?;
    let kind = meta.file_type();
    if kind.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else {
        None
    }
}
