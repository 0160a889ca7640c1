//! A trace of what a plugin asks of the host, for `repx debug`: every file it opens, stats,
//! reads or writes through a stream, every directory it lists, makes or removes, and every
//! tool it runs with its arguments and status, each with its outcome (a refusal included).
//!
//! It costs nothing when not asked for: the traced functions shadow wasmtime-wasi's only in
//! a runtime made with [`super::Runtime::traced`], which `repx debug` alone makes; the
//! runtime of `repx run` links the functions as they are. Paths are guest paths: each
//! descriptor is named by the preopened directory it came from and the path opened from
//! there. Components only: a core module's preview 1 calls are not traced.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::FsResult;
use wasmtime_wasi::p2::bindings::sync::filesystem::preopens;
use wasmtime_wasi::p2::bindings::sync::filesystem::types::{
    self, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntryStream, ErrorCode,
    Filesize, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::bindings::sync::io::streams::{InputStream, OutputStream};

use super::streams::FILESYSTEM_TYPES;

/// The `wasi:filesystem/preopens` instance of the same version as [`FILESYSTEM_TYPES`].
const PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";

/// One thing a plugin asked of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// What it asked: `open`, `stat`, `read`, `write`, `list`, `mkdir`, `unlink`, `rmdir`,
    /// `readlink`, `run-tool`.
    pub what: &'static str,
    /// The guest path, or for `run-tool` the tool and its arguments.
    pub subject: String,
    /// `ok`, with what came of it (`ok, a file of 42 bytes`), or the error the plugin got
    /// (`error not-permitted, for writing`).
    pub outcome: String,
}

/// Receives each call as it completes.
pub trait Tracer: Send + Sync {
    fn call(&self, call: Call);
}

/// A job's trace: where calls go, and the guest path of each descriptor.
pub struct Trace {
    pub tracer: Arc<dyn Tracer>,
    paths: HashMap<u32, String>,
}

impl Trace {
    pub fn new(tracer: Arc<dyn Tracer>) -> Trace {
        Trace {
            tracer,
            paths: HashMap::new(),
        }
    }

    /// The guest path of `path` opened from descriptor `fd`.
    fn path(&self, fd: &Resource<Descriptor>, path: &str) -> String {
        let base = self
            .paths
            .get(&fd.rep())
            .map_or("?", String::as_str)
            .trim_end_matches('/');
        match path {
            "" | "." => base.to_string(),
            path => format!("{base}/{path}"),
        }
    }
}

/// A job's state, as the traced functions see it.
pub trait TraceView: Send + 'static {
    fn traced(&mut self) -> (WasiFilesystemCtxView<'_>, &mut Trace);
}

/// Replaces the traced functions that the linker already has (after `streams` and `open`
/// shadowed theirs, whose checks the traced `open-at` keeps).
pub fn shadow<T: TraceView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker
        .instance(PREOPENS)?
        .func_wrap("get-directories", |mut store, (): ()| {
            let (mut files, trace) = store.data_mut().traced();
            let dirs = preopens::Host::get_directories(&mut files)?;
            for (fd, guest) in &dirs {
                trace.paths.insert(fd.rep(), guest.clone());
            }
            Ok((dirs,))
        })?;
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap(
        "[method]descriptor.open-at",
        |mut store,
         (fd, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            let (files, trace) = store.data_mut().traced();
            let guest = trace.path(&fd, &path);
            let writing = flags.contains(DescriptorFlags::WRITE);
            let opened = super::open::open_at(files, fd, path_flags, path, open_flags, flags);
            let purpose = if writing { ", for writing" } else { "" };
            let outcome = match &opened {
                Ok(Ok(new)) => {
                    trace.paths.insert(new.rep(), guest.clone());
                    format!("ok{purpose}")
                }
                Ok(Err(code)) => format!("error {}{purpose}", code.name()),
                Err(trap) => format!("trap: {trap}"),
            };
            trace.tracer.call(Call {
                what: "open",
                subject: guest,
                outcome,
            });
            Ok((opened?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.stat",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            let (mut files, trace) = store.data_mut().traced();
            let subject = trace.path(&fd, "");
            let stat = HostDescriptor::stat(&mut files, fd);
            Ok((finish(
                &mut files,
                trace,
                "stat",
                subject,
                stat,
                describe_stat,
            )?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.stat-at",
        |mut store, (fd, path_flags, path): (Resource<Descriptor>, PathFlags, String)| {
            let (mut files, trace) = store.data_mut().traced();
            let subject = trace.path(&fd, &path);
            let stat = HostDescriptor::stat_at(&mut files, fd, path_flags, path);
            Ok((finish(
                &mut files,
                trace,
                "stat",
                subject,
                stat,
                describe_stat,
            )?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.read-via-stream",
        |mut store, (fd, offset): (Resource<Descriptor>, Filesize)| {
            let (mut files, trace) = store.data_mut().traced();
            let subject = trace.path(&fd, "");
            let stream: FsResult<Resource<InputStream>> =
                HostDescriptor::read_via_stream(&mut files, fd, offset);
            Ok((finish(&mut files, trace, "read", subject, stream, |_| {
                "ok".into()
            })?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store, (fd, offset): (Resource<Descriptor>, Filesize)| {
            let (mut files, trace) = store.data_mut().traced();
            let subject = trace.path(&fd, "");
            let stream: FsResult<Resource<OutputStream>> =
                HostDescriptor::write_via_stream(&mut files, fd, offset);
            Ok((finish(&mut files, trace, "write", subject, stream, |_| {
                "ok".into()
            })?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            let (mut files, trace) = store.data_mut().traced();
            let subject = trace.path(&fd, "");
            let stream: FsResult<Resource<OutputStream>> =
                HostDescriptor::append_via_stream(&mut files, fd);
            Ok((finish(&mut files, trace, "write", subject, stream, |_| {
                "ok, appending".into()
            })?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.read-directory",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            let (mut files, trace) = store.data_mut().traced();
            let subject = trace.path(&fd, "");
            let entries: FsResult<Resource<DirectoryEntryStream>> =
                HostDescriptor::read_directory(&mut files, fd);
            Ok((finish(&mut files, trace, "list", subject, entries, |_| {
                "ok".into()
            })?,))
        },
    )?;
    // The calls that take a path and return nothing.
    type PathCall =
        fn(&mut WasiFilesystemCtxView<'_>, Resource<Descriptor>, String) -> FsResult<()>;
    let path_calls: [(&str, &'static str, PathCall); 3] = [
        (
            "[method]descriptor.create-directory-at",
            "mkdir",
            |f, fd, p| HostDescriptor::create_directory_at(f, fd, p),
        ),
        ("[method]descriptor.unlink-file-at", "unlink", |f, fd, p| {
            HostDescriptor::unlink_file_at(f, fd, p)
        }),
        (
            "[method]descriptor.remove-directory-at",
            "rmdir",
            |f, fd, p| HostDescriptor::remove_directory_at(f, fd, p),
        ),
    ];
    for (name, what, call) in path_calls {
        types.func_wrap(
            name,
            move |mut store, (fd, path): (Resource<Descriptor>, String)| {
                let (mut files, trace) = store.data_mut().traced();
                let subject = trace.path(&fd, &path);
                let done = call(&mut files, fd, path);
                Ok((finish(&mut files, trace, what, subject, done, |()| {
                    "ok".into()
                })?,))
            },
        )?;
    }
    types.func_wrap(
        "[method]descriptor.readlink-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| {
            let (mut files, trace) = store.data_mut().traced();
            let subject = trace.path(&fd, &path);
            let target = HostDescriptor::readlink_at(&mut files, fd, path);
            Ok((finish(
                &mut files,
                trace,
                "readlink",
                subject,
                target,
                |t| format!("ok, {t}"),
            )?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Traces a call's result and turns it into what the guest gets.
fn finish<R>(
    files: &mut WasiFilesystemCtxView<'_>,
    trace: &mut Trace,
    what: &'static str,
    subject: String,
    result: FsResult<R>,
    describe: impl Fn(&R) -> String,
) -> wasmtime::Result<Result<R, ErrorCode>> {
    let result = match result {
        Ok(value) => Ok(value),
        Err(e) => Err(types::Host::convert_error_code(files, e)?),
    };
    let outcome = match &result {
        Ok(value) => describe(value),
        Err(code) => format!("error {}", code.name()),
    };
    trace.tracer.call(Call {
        what,
        subject,
        outcome,
    });
    Ok(result)
}

fn describe_stat(stat: &DescriptorStat) -> String {
    match stat.type_ {
        DescriptorType::RegularFile => format!("ok, a file of {} bytes", stat.size),
        DescriptorType::Directory => "ok, a directory".into(),
        DescriptorType::SymbolicLink => "ok, a link".into(),
        other => format!("ok, {other:?}"),
    }
}
