//! Attack: hard links between directories of different rights: from `/out` into an input
//! (creating an entry in a read-only directory), between two inputs, from scratch into an
//! input, and to a path outside every directory. Only `/out` <-> `/tmp`, both writable and
//! the job's own, may succeed; that one is only noted.

use hostile::{Attempts, files_under, inputs};
use std::fs;

fn main() {
    let mut a = Attempts::new();
    fs::write("/out/mine.txt", "mine\n").unwrap();
    fs::write("/tmp/scratch.txt", "scratch\n").unwrap();
    let ins = inputs();
    for input in &ins {
        for source in ["/out/mine.txt", "/tmp/scratch.txt"] {
            let dest = format!("{input}/PWNED-link-across-preopens");
            a.expect_refused(
                &format!("hard-link {source} -> {dest}"),
                fs::hard_link(source, &dest),
            );
        }
    }
    let files = files_under("/in");
    for (i, source) in files.iter().take(4).enumerate() {
        for input in &ins {
            if source.starts_with(input.as_str()) {
                continue;
            }
            let dest = format!("{input}/PWNED-link-{i}");
            a.expect_refused(
                &format!("hard-link {source} -> {dest}"),
                fs::hard_link(source, &dest),
            );
        }
    }
    for dest in [
        "/PWNED-link-across-preopens",
        "/out/../PWNED-link-across-preopens",
        "/in/PWNED-link-across-preopens",
    ] {
        a.expect_refused(
            &format!("hard-link /out/mine.txt -> {dest}"),
            fs::hard_link("/out/mine.txt", dest),
        );
    }
    match fs::hard_link("/tmp/scratch.txt", "/out/from-scratch.txt") {
        Ok(()) => {
            a.note("hard-linked /tmp/scratch.txt -> /out/from-scratch.txt (both the job's own)")
        }
        Err(e) => a.note(format!("hard-link /tmp -> /out: {e}")),
    }
    a.finish()
}
