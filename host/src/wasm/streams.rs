//! `wasi:io/streams` for plugins, with file reads and writes done on the plugin's thread.
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

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::p2::bindings::sync::io::poll::Pollable;
use wasmtime_wasi::p2::bindings::sync::io::streams::{
    self, Host, HostInputStream, HostOutputStream, InputStream, OutputStream,
};
use wasmtime_wasi::p2::{StreamError, StreamResult};
use wasmtime_wasi::runtime::in_tokio;

/// Replaces the `wasi:io/streams` functions that `add_to_linker_sync` defined.
pub fn shadow<T: WasiView + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    streams::add_to_linker::<T, Direct>(linker, |t| Streams(t.ctx().table))?;
    linker.allow_shadowing(false);
    Ok(())
}

struct Direct;

impl HasData for Direct {
    type Data<'a> = Streams<'a>;
}

/// The job's resource table, seen through these stream functions.
pub struct Streams<'a>(&'a mut ResourceTable);

impl Host for Streams<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        Host::convert_stream_error(self.0, err)
    }
}

impl HostOutputStream for Streams<'_> {
    fn write(&mut self, stream: Resource<OutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        let stream = self.0.get_mut(&stream)?;
        in_tokio(stream.blocking_write_and_flush(bytes.into()))
    }

    fn drop(&mut self, stream: Resource<OutputStream>) -> wasmtime::Result<()> {
        HostOutputStream::drop(self.0, stream)
    }

    fn check_write(&mut self, stream: Resource<OutputStream>) -> StreamResult<u64> {
        HostOutputStream::check_write(self.0, stream)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        HostOutputStream::blocking_write_and_flush(self.0, stream, bytes)
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        HostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len)
    }

    fn subscribe(
        &mut self,
        stream: Resource<OutputStream>,
    ) -> wasmtime::Result<Resource<Pollable>> {
        HostOutputStream::subscribe(self.0, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        HostOutputStream::write_zeroes(self.0, stream, len)
    }

    fn flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        HostOutputStream::flush(self.0, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        HostOutputStream::blocking_flush(self.0, stream)
    }

    fn splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        HostOutputStream::splice(self.0, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        HostOutputStream::blocking_splice(self.0, dst, src, len)
    }
}

impl HostInputStream for Streams<'_> {
    fn read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let stream = self.0.get_mut(&stream)?;
        Ok(in_tokio(stream.blocking_read(len))?.into())
    }

    fn drop(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<()> {
        HostInputStream::drop(self.0, stream)
    }

    fn blocking_read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        HostInputStream::blocking_read(self.0, stream, len)
    }

    fn skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        HostInputStream::skip(self.0, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        HostInputStream::blocking_skip(self.0, stream, len)
    }

    fn subscribe(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<Resource<Pollable>> {
        HostInputStream::subscribe(self.0, stream)
    }
}
