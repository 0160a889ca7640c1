//! Attack: add entries to the read-only directories: a file and a directory in every input,
//! in each of its subdirectories, and in `/in` itself (the listing of inputs, where a new
//! name would look like one more input to a later job).

use hostile::{Attempts, inputs};
use std::fs::{self, OpenOptions};

fn main() {
    let mut a = Attempts::new();
    let mut dirs = vec!["/in".to_string()];
    for input in inputs() {
        dirs.push(input.clone());
        for name in hostile::names(&input) {
            let path = format!("{input}/{name}");
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                dirs.push(path);
            }
        }
    }
    for dir in &dirs {
        a.expect_refused(
            &format!("create {dir}/PWNED-create-in-input"),
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(format!("{dir}/PWNED-create-in-input")),
        );
        a.expect_refused(
            &format!("mkdir {dir}/PWNED-create-in-input-dir"),
            fs::create_dir(format!("{dir}/PWNED-create-in-input-dir")),
        );
        a.expect_refused(
            &format!("symlink {dir}/PWNED-create-in-input-link"),
            hostile::symlink("/out", &format!("{dir}/PWNED-create-in-input-link")),
        );
    }
    a.finish()
}
