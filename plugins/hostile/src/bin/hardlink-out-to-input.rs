//! Attack: hard-link an input file into `/out`. Were it allowed, the output would share
//! the input's inode: sealing the output would change the input's permissions, and a
//! later write to the output would change the input (a `path:` snapshot, or another job's
//! committed output). Like wasmtime's `file_hardlink_across_perms`.

use hostile::{Attempts, files_under};
use std::fs;

fn main() {
    let mut a = Attempts::new();
    let mut sources = files_under("/in");
    sources.truncate(8);
    a.note(format!("input files: {sources:?}"));
    for (i, source) in sources.iter().enumerate() {
        let alias = format!("/out/alias-{i}");
        a.expect_refused(
            &format!("hard-link {source} -> {alias}"),
            fs::hard_link(source, &alias),
        );
        if fs::symlink_metadata(&alias).is_ok() {
            a.expect_refused(
                &format!("write through the alias {alias}"),
                fs::OpenOptions::new().append(true).open(&alias),
            );
        }
        let scratch = format!("/tmp/alias-{i}");
        a.expect_refused(
            &format!("hard-link {source} -> {scratch}"),
            fs::hard_link(source, &scratch),
        );
    }
    if sources.is_empty() {
        a.escaped("find an input file", "none to try: the test is not set up");
    }
    a.finish()
}
