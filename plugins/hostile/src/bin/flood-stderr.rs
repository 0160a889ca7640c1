//! Attack: print far more than the log limit to stderr, as many short lines and then one
//! huge line without a newline, and fail: stderr is what the failure message quotes, so
//! the message, the log file and the run's own output must all stay bounded.

use std::io::Write;

fn main() {
    let mut err = std::io::stderr().lock();
    for i in 0..50_000 {
        writeln!(err, "line {i} of the flood").unwrap();
    }
    let chunk = vec![b'e'; 64 * 1024];
    for _ in 0..512 {
        err.write_all(&chunk).unwrap();
    }
    std::process::exit(7);
}
