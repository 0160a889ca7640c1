//! One of a job's logs, kept in memory up to the job's log limit: the plugin's stdout, its
//! stderr, and the host log (its `log` calls, and the tools it runs with what they print).
//!
//! Past the limit, output is dropped, not refused: a chatty plugin or tool keeps running
//! and its log ends with a marker saying how much was cut. Everything a job writes to a
//! log goes through [`LogPipe::push`] as it comes, so a log never holds more than the
//! limit in memory, and its file never more than the limit and the marker.
//!
//! A log may also be written as it comes to a live file (`repx log -f` reads it while the
//! job runs): only what is kept, so the file too stays within the limit. The file is made
//! at the first byte, so a job that writes nothing makes no file, and a live file that
//! cannot be written is given up on in silence: it is a view, the log is the buffer.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Clone)]
pub struct LogPipe {
    buffer: Arc<Mutex<Buffer>>,
}

struct Buffer {
    kept: Vec<u8>,
    limit: usize,
    dropped: u64,
    live: Live,
}

/// Where the kept bytes also go as they come.
enum Live {
    None,
    /// Not made yet: made at the first byte.
    At(PathBuf),
    Open(File),
}

impl LogPipe {
    pub fn new(limit: u64) -> LogPipe {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        LogPipe {
            buffer: Arc::new(Mutex::new(Buffer {
                kept: Vec::new(),
                limit,
                dropped: 0,
                live: Live::None,
            })),
        }
    }

    /// The same pipe, writing what it keeps to `path` too (its directory made as needed).
    pub fn live(self, path: Option<PathBuf>) -> LogPipe {
        if let Some(path) = path {
            self.buffer.lock().unwrap_or_else(|e| e.into_inner()).live = Live::At(path);
        }
        self
    }

    /// Keeps what is left of `data` under the limit, and counts the rest.
    pub fn push(&self, data: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let room = buffer.limit.saturating_sub(buffer.kept.len());
        let keep = data.len().min(room);
        buffer.kept.extend_from_slice(&data[..keep]);
        buffer.dropped += (data.len() - keep) as u64;
        if keep > 0 {
            buffer.live.write(&data[..keep]);
        }
    }

    /// What was kept, with a marker at the end when anything was cut.
    pub fn contents(&self) -> Vec<u8> {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = buffer.kept.clone();
        if buffer.dropped > 0 {
            let marker = format!(
                "\n[repx: log limit of {} reached; {} more bytes were dropped]\n",
                crate::lab::limits::bytes(buffer.limit as u64),
                buffer.dropped
            );
            out.extend_from_slice(marker.as_bytes());
        }
        out
    }
}

impl Live {
    fn write(&mut self, data: &[u8]) {
        if let Live::At(path) = self {
            let make = || {
                path.parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| File::create_new(&*path))
            };
            // Another job's run, ending, removes the shared parent when it is empty: once
            // more when it went between making it and the file.
            let made = make().or_else(|_| make());
            *self = match made {
                Ok(file) => Live::Open(file),
                Err(_) => Live::None,
            };
        }
        if let Live::Open(file) = self
            && file.write_all(data).is_err()
        {
            *self = Live::None;
        }
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(data);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_file_gets_what_is_kept_and_is_made_at_the_first_byte() {
        let dir = std::env::temp_dir().join(format!("repx-live-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("job/stdout");
        let pipe = LogPipe::new(4).live(Some(path.clone()));
        assert!(!dir.exists(), "made before anything was written");
        pipe.push(b"abc");
        pipe.push(b"defgh");
        assert_eq!(std::fs::read(&path).unwrap(), b"abcd");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cuts_at_the_limit_with_a_marker() {
        let pipe = LogPipe::new(4);
        pipe.push(b"abc");
        pipe.push(b"defgh");
        let text = String::from_utf8(pipe.contents()).unwrap();
        assert!(
            text.starts_with("abcd\n[repx: log limit of 4B reached; 4 more bytes"),
            "{text}"
        );
    }
}
