//! Attack: print far more than the log limit to stdout (parameter-free: 64 MiB in 64 KiB
//! writes, and a last line), to fill the host's memory or disk with logs. The log must be
//! cut at the limit with a marker and the job must still succeed.

use std::io::Write;

fn main() {
    let chunk = vec![b'o'; 64 * 1024];
    let mut out = std::io::stdout().lock();
    for _ in 0..1024 {
        out.write_all(&chunk).unwrap();
    }
    out.write_all(b"\nTHE-END-OF-THE-FLOOD\n").unwrap();
    drop(out);
    std::fs::write("/out/done.txt", "flooded\n").unwrap();
}
