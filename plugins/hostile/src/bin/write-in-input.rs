//! Attack: change existing files of every input (a `path:` snapshot, another job's
//! committed output, the `/in` listing): open for writing, append, truncate, and overwrite
//! with `fs::write`.

use hostile::{Attempts, files_under};
use std::fs::{self, OpenOptions};

fn main() {
    let mut a = Attempts::new();
    let files = files_under("/in");
    a.note(format!("input files: {files:?}"));
    if files.is_empty() {
        a.escaped("find an input file", "none to try: the test is not set up");
    }
    for file in &files {
        a.expect_refused(
            &format!("open {file} for writing"),
            OpenOptions::new().write(true).open(file),
        );
        a.expect_refused(
            &format!("open {file} for appending"),
            OpenOptions::new().append(true).open(file),
        );
        a.expect_refused(
            &format!("truncate {file} on open"),
            OpenOptions::new().write(true).truncate(true).open(file),
        );
        a.expect_refused(&format!("overwrite {file}"), fs::write(file, "PWNED"));
        // A file opened for reading must not be writable either.
        if let Ok(f) = fs::File::open(file) {
            a.expect_refused(&format!("set_len on read-only {file}"), f.set_len(0));
        }
    }
    a.finish()
}
