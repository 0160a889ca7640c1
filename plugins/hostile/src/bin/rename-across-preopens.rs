//! Attack: move files between directories of different rights: an input file into `/out`
//! (it would vanish from the input, and then be writable), an output file into an input,
//! an input directory away, and `/out` itself. Like wasmtime's `file_rename_across_perms`.

use hostile::{Attempts, files_under, inputs};
use std::fs;

fn main() {
    let mut a = Attempts::new();
    fs::write("/out/mine.txt", "mine\n").unwrap();
    for (i, source) in files_under("/in").iter().take(6).enumerate() {
        for dest in [format!("/out/moved-{i}"), format!("/tmp/moved-{i}")] {
            a.expect_refused(
                &format!("rename {source} -> {dest}"),
                fs::rename(source, &dest),
            );
        }
    }
    for input in inputs() {
        let dest = format!("{input}/PWNED-rename-across-preopens");
        a.expect_refused(
            &format!("rename /out/mine.txt -> {dest}"),
            fs::rename("/out/mine.txt", &dest),
        );
        a.expect_refused(
            &format!("rename {input} -> /out/stolen-input"),
            fs::rename(&input, "/out/stolen-input"),
        );
    }
    for (source, dest) in [
        ("/out", "/tmp/out"),
        ("/out", "/out/inner"),
        ("/tmp", "/out/tmp"),
        ("/in", "/out/in"),
        ("/out/mine.txt", "/PWNED-rename-across-preopens"),
        ("/out/mine.txt", "/out/../PWNED-rename-across-preopens"),
    ] {
        a.expect_refused(
            &format!("rename {source} -> {dest}"),
            fs::rename(source, dest),
        );
    }
    a.finish()
}
