//! Benchmark plugin: file I/O through the plugin's directories, built from this same
//! source for wasm32-wasip2 and natively. Writes `mib` MiB to `/out/written.bin` in 1 MiB
//! writes, then reads every file of `/in/data` in 1 MiB reads; `/out/result.json` holds
//! the byte counts and a checksum, so neither loop can be skipped. Std only.
//!
//! Parameters (`REPX_PARAMS`, JSON): `mib` (default 256).
//! Natively, `$BENCH_OUT` and `$BENCH_IN` stand for `/out` and `/in/data`.

use std::io::{Read, Write};

const CHUNK: usize = 1 << 20;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> std::io::Result<()> {
    let params = std::env::var("REPX_PARAMS").unwrap_or_else(|_| "{}".into());
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "/out".into());
    let input = std::env::var("BENCH_IN").unwrap_or_else(|_| "/in/data".into());
    let mib: usize = param(&params, "mib").and_then(|v| v.parse().ok()).unwrap_or(256);

    let mut chunk = vec![0u8; CHUNK];
    for (i, byte) in chunk.iter_mut().enumerate() {
        *byte = (i * 31 % 251) as u8;
    }
    let mut file = std::fs::File::create(format!("{out}/written.bin"))?;
    for i in 0..mib {
        chunk[0] = i as u8;
        file.write_all(&chunk)?;
    }
    drop(file);

    let (mut read, mut checksum) = (0u64, 0u64);
    let mut names: Vec<_> = std::fs::read_dir(&input)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let mut file = std::fs::File::open(&name)?;
        loop {
            let n = file.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            read += n as u64;
            // One byte per page: enough that the reads cannot be elided.
            checksum = chunk[..n].iter().step_by(4096).fold(checksum, |c, b| c.wrapping_mul(31).wrapping_add(u64::from(*b)));
        }
    }
    let result = format!("{{\"written\":{},\"read\":{read},\"checksum\":{checksum}}}\n", mib * CHUNK);
    std::fs::write(format!("{out}/result.json"), result)
}

/// The raw JSON text of `key` in a flat JSON object.
fn param<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}
