//! Attack: remove what the inputs hold: each file, each directory (empty or not, with
//! `remove_dir_all`), renames inside an input, and the inputs themselves from `/in`.

use hostile::{Attempts, files_under, inputs, names};
use std::fs;

fn main() {
    let mut a = Attempts::new();
    for file in files_under("/in") {
        a.expect_refused(&format!("remove {file}"), fs::remove_file(&file));
        a.expect_refused(
            &format!("rename {file} within its input"),
            fs::rename(&file, format!("{file}.moved")),
        );
    }
    for input in inputs() {
        for name in names(&input) {
            let path = format!("{input}/{name}");
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                a.expect_refused(&format!("remove_dir {path}"), fs::remove_dir(&path));
                a.expect_refused(&format!("remove_dir_all {path}"), fs::remove_dir_all(&path));
            }
        }
        a.expect_refused(
            &format!("remove_dir_all {input}"),
            fs::remove_dir_all(&input),
        );
        a.expect_refused(&format!("remove_dir {input}"), fs::remove_dir(&input));
    }
    a.expect_refused("remove_dir_all /in", fs::remove_dir_all("/in"));
    a.finish()
}
