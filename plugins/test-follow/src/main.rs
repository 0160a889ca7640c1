//! Test plugin for `repx log -f`: an impure stage that writes `first line` to stdout, then
//! waits until the test makes `/work/go`, then writes `second line` to stdout and
//! `to stderr` to stderr and exits 0. The test follows the job between the two lines.
//! With `/work/fail` present as well, it exits 1 after the second line.

use std::path::Path;
use std::time::Duration;

fn main() {
    println!("first line");
    while !Path::new("/work/go").exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("second line");
    eprintln!("to stderr");
    if Path::new("/work/fail").exists() {
        std::process::exit(1);
    }
}
