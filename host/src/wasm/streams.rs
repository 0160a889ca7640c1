//! `wasi:io/streams` for plugins, with file reads and writes done on the plugin's thread,
//! and every write counted against the job's output limit.
//!
//! wasmtime-wasi hands every non-blocking `read` and `write` of a file stream to tokio's
//! blocking pool, and the guest then waits for that thread: two context switches and a
//! thread hand-off per call. Plugins built with wasi-libc use exactly those calls for every
//! `read()` and `write()` of a file, so a trivial job paid a hand-off per file written,
//! and bulk I/O one per 64 KiB. Here `write` and `read` complete at once, as their
//! blocking forms do (which wasmtime-wasi already runs on the calling thread when the
//! context allows blocking, as every job's does); everything else is wasmtime-wasi's own.
//! A stream may always complete a write or a read early, so plugins see no difference but
//! speed.
//!
//! Each function that writes (the stream writes, and `descriptor.write`, which wasi-libc's
//! `pwrite` uses) tells the job's [`OutputLimit`] how many bytes it wrote. Streams to
//! stdout and stderr are counted too: a stream does not say where it leads, and a count
//! too high only brings the next measurement forward.

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::sync::filesystem::types::{self, ErrorCode, HostDescriptor};
use wasmtime_wasi::p2::bindings::sync::io::poll::Pollable;
use wasmtime_wasi::p2::bindings::sync::io::streams::{
    self, Host, HostInputStream, HostOutputStream, InputStream, OutputStream,
};
use wasmtime_wasi::p2::{StreamError, StreamResult};
use wasmtime_wasi::runtime::in_tokio;

use super::output::OutputLimit;

/// The `wasi:filesystem/types` instance wasmtime-wasi defines, whose `descriptor.write`
/// is replaced here. Plugins importing older 0.2 versions are linked to it.
pub(super) const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// What the stream and file write functions reach of a job.
pub struct Streams<'a> {
    pub files: WasiFilesystemCtxView<'a>,
    pub output: &'a mut OutputLimit,
}

/// A job's state, seen by the stream and file write functions.
pub trait StreamsView: Send + 'static {
    fn streams(&mut self) -> Streams<'_>;
}

/// Replaces the `wasi:io/streams` functions and `descriptor.write` that
/// `add_to_linker_sync` defined.
pub fn shadow<T: StreamsView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    streams::add_to_linker::<T, Direct>(linker, T::streams)?;
    linker.instance(FILESYSTEM_TYPES)?.func_wrap(
        "[method]descriptor.write",
        |mut store, (fd, buffer, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            let state: &mut T = store.data_mut();
            Ok((state.streams().write_at(fd, buffer, offset)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

struct Direct;

impl HasData for Direct {
    type Data<'a> = Streams<'a>;
}

impl Streams<'_> {
    fn table(&mut self) -> &mut ResourceTable {
        self.files.table
    }

    /// `descriptor.write`: wasmtime-wasi's, counted.
    fn write_at(
        &mut self,
        fd: Resource<Descriptor>,
        buffer: Vec<u8>,
        offset: u64,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        match HostDescriptor::write(&mut self.files, fd, buffer, offset) {
            Ok(written) => {
                self.output.wrote(written)?;
                Ok(Ok(written))
            }
            Err(e) => Ok(Err(types::Host::convert_error_code(&mut self.files, e)?)),
        }
    }

    /// Counts what a stream function wrote; the limit's trap becomes the stream's.
    fn count<R>(&mut self, written: StreamResult<R>, bytes: impl Fn(&R) -> u64) -> StreamResult<R> {
        let written = written?;
        self.output
            .wrote(bytes(&written))
            .map_err(StreamError::Trap)?;
        Ok(written)
    }
}

impl Host for Streams<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        Host::convert_stream_error(self.table(), err)
    }
}

impl HostOutputStream for Streams<'_> {
    fn write(&mut self, stream: Resource<OutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        let len = bytes.len() as u64;
        let stream = self.table().get_mut(&stream)?;
        let written = in_tokio(stream.blocking_write_and_flush(bytes.into()));
        self.count(written, |()| len)
    }

    fn drop(&mut self, stream: Resource<OutputStream>) -> wasmtime::Result<()> {
        HostOutputStream::drop(self.table(), stream)
    }

    fn check_write(&mut self, stream: Resource<OutputStream>) -> StreamResult<u64> {
        HostOutputStream::check_write(self.table(), stream)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        let len = bytes.len() as u64;
        let written = HostOutputStream::blocking_write_and_flush(self.table(), stream, bytes);
        self.count(written, |()| len)
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        let written = HostOutputStream::blocking_write_zeroes_and_flush(self.table(), stream, len);
        self.count(written, |()| len)
    }

    fn subscribe(
        &mut self,
        stream: Resource<OutputStream>,
    ) -> wasmtime::Result<Resource<Pollable>> {
        HostOutputStream::subscribe(self.table(), stream)
    }

    fn write_zeroes(&mut self, stream: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        let written = HostOutputStream::write_zeroes(self.table(), stream, len);
        self.count(written, |()| len)
    }

    fn flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        HostOutputStream::flush(self.table(), stream)
    }

    fn blocking_flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        HostOutputStream::blocking_flush(self.table(), stream)
    }

    fn splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        let written = HostOutputStream::splice(self.table(), dst, src, len);
        self.count(written, |n| *n)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        let written = HostOutputStream::blocking_splice(self.table(), dst, src, len);
        self.count(written, |n| *n)
    }
}

impl HostInputStream for Streams<'_> {
    fn read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let stream = self.table().get_mut(&stream)?;
        Ok(in_tokio(stream.blocking_read(len))?.into())
    }

    fn drop(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<()> {
        HostInputStream::drop(self.table(), stream)
    }

    fn blocking_read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        HostInputStream::blocking_read(self.table(), stream, len)
    }

    fn skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        HostInputStream::skip(self.table(), stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        HostInputStream::blocking_skip(self.table(), stream, len)
    }

    fn subscribe(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<Resource<Pollable>> {
        HostInputStream::subscribe(self.table(), stream)
    }
}
