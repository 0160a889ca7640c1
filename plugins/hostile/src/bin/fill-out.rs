//! Attack: write more into `/out` than the stage's output limit allows (parameter
//! `megabytes`, default 8), in 64 KiB writes across a few files, and exit 0 as if all were
//! well. The output must not be committed, and the failure must name the limit.
//!
//! Parameters: `megabytes` (string, default "8").

use std::fs::File;
use std::io::Write;

fn main() {
    let megabytes: usize = hostile::param("megabytes")
        .and_then(|m| m.parse().ok())
        .unwrap_or(8);
    let chunk = vec![b'f'; 64 * 1024];
    for file in 0..4 {
        let mut f = File::create(format!("/out/fill-{file}.bin")).unwrap();
        for _ in 0..megabytes * 4 {
            if let Err(e) = f.write_all(&chunk) {
                eprintln!("write refused: {e}");
                std::process::exit(0);
            }
        }
    }
}
