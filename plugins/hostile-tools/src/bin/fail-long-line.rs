//! Attack: print one 60 KiB line without a newline on stderr and fail. The failure message,
//! which goes to the terminal, quotes the tail of stderr: it must stay short whatever the
//! lines are like.

use std::io::Write;

fn main() {
    let line = vec![b'e'; 60 * 1024];
    std::io::stderr().write_all(&line).unwrap();
    std::process::exit(1);
}
