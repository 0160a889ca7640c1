//! Attack: write more into `/out` (or scratch) than the stage's output limit allows, in
//! 64 KiB writes across files of 16 MiB, and exit 0 as if all were well. The job must be
//! stopped near the limit, not after filling the host's disk, and its output must not be
//! committed; the failure must name the limit.
//!
//! After each whole MiB it prints `wrote <n>M` to stderr: how far it got before the host
//! stopped it.
//!
//! Parameters (strings): `megabytes` (default "8"), how much to write in all; `dir`
//! (default "/out"), where; `how` (default "stream"): `stream` writes as `write()` does,
//! `pwrite` at offsets as `pwrite()` does; `overwrite` ("yes"): no attack, each MiB
//! rewrites one file from its start, so the output never holds more than 1 MiB.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;

const CHUNK: usize = 64 * 1024;
const CHUNKS_PER_MB: usize = (1 << 20) / CHUNK;
const MB_PER_FILE: usize = 16;

unsafe extern "C" {
    /// wasi-libc's, which `std` does not expose on WASI.
    fn pwrite(fd: i32, buf: *const u8, len: usize, offset: i64) -> isize;
}

fn main() {
    let megabytes: usize = hostile::param("megabytes")
        .and_then(|m| m.parse().ok())
        .unwrap_or(8);
    let dir = hostile::param("dir").unwrap_or_else(|| "/out".into());
    let positioned = hostile::param("how").as_deref() == Some("pwrite");
    let overwrite = hostile::param("overwrite").as_deref() == Some("yes");
    let per_file = if overwrite { 1 } else { MB_PER_FILE };
    let chunk = vec![b'f'; CHUNK];
    let mut file = None;
    for mb in 0..megabytes {
        if mb % per_file == 0 {
            let name = if overwrite { 0 } else { mb / per_file };
            file = Some(File::create(format!("{dir}/fill-{name}.bin")).unwrap());
        }
        let f = file.as_mut().unwrap();
        for i in 0..CHUNKS_PER_MB {
            let written = if positioned {
                let offset = ((mb % per_file) * CHUNKS_PER_MB + i) * CHUNK;
                // SAFETY: `chunk` outlives the call, which only reads it.
                let n = unsafe { pwrite(f.as_raw_fd(), chunk.as_ptr(), CHUNK, offset as i64) };
                if n == CHUNK as isize {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            } else {
                f.write_all(&chunk)
            };
            if let Err(e) = written {
                eprintln!("write refused: {e}");
                std::process::exit(0);
            }
        }
        eprintln!("wrote {}M", mb + 1);
    }
}
