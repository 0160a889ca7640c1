//! Attack: hold open as many files as the host will give, so that the runner itself (or
//! other jobs in the same process) has no descriptors left. Opens one file over and over
//! and creates new ones, keeping every handle, until refused; then reports how many it got.
//! The stage's `files` limit must refuse it long before the process runs out.

use std::fs::{self, File};

fn main() {
    fs::write("/tmp/one.txt", "x").unwrap();
    let mut held = Vec::new();
    let mut refusal = None;
    for i in 0..100_000 {
        let opened = if i % 2 == 0 {
            File::open("/tmp/one.txt")
        } else {
            File::create(format!("/tmp/f{i}"))
        };
        match opened {
            Ok(f) => held.push(f),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let line = match &refusal {
        Some(e) => format!("refused after {} open files: {e}\n", held.len()),
        None => format!("ESCAPED: held {} open files\n", held.len()),
    };
    drop(held);
    fs::write("/out/result.txt", &line).unwrap();
    if refusal.is_none() {
        eprint!("{line}");
        std::process::exit(1);
    }
}
