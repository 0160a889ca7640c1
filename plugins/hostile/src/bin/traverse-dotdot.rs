//! Attack: leave a directory through `..`. From each of `/out`, `/tmp`, `/in` and every
//! input, walks up one to eight levels and tries to read the lab's `sentinel.txt` and
//! `/etc/passwd`, to create `PWNED-traverse-dotdot`, and to list what is there; also mixes
//! `..` into the middle of paths (`/out/x/../../..`) and uses relative paths from the cwd.

use hostile::{Attempts, inputs};
use std::fs;

fn main() {
    let mut a = Attempts::new();
    let _ = fs::create_dir("/out/x");
    let mut bases = vec!["/out".to_string(), "/tmp".to_string(), "/in".to_string()];
    bases.extend(inputs());
    bases.push("/out/x".into());
    for base in &bases {
        // `/out/x/..` is `/out` itself; from there one more level leaves it.
        let first = if base == "/out/x" { 2 } else { 1 };
        for depth in first..=8 {
            let up = "/..".repeat(depth);
            let dir = format!("{base}{up}");
            a.expect_refused(
                &format!("read {dir}/sentinel.txt"),
                fs::read_to_string(format!("{dir}/sentinel.txt")),
            );
            a.expect_refused(
                &format!("read {dir}/etc/passwd"),
                fs::read_to_string(format!("{dir}/etc/passwd")),
            );
            a.expect_refused(
                &format!("write {dir}/PWNED-traverse-dotdot"),
                fs::write(format!("{dir}/PWNED-traverse-dotdot"), "escaped"),
            );
            a.expect_refused(
                &format!("mkdir {dir}/PWNED-traverse-dotdot-dir"),
                fs::create_dir(format!("{dir}/PWNED-traverse-dotdot-dir")),
            );
            a.expect_refused(
                &format!("list {dir}"),
                fs::read_dir(&dir).map(|d| d.count()),
            );
        }
    }
    // `..` in the middle: leaves the preopen before coming back under another name.
    for path in [
        "/out/x/../../../sentinel.txt",
        "/out/../in/../../etc/passwd",
        "/tmp/./../out/../../sentinel.txt",
        "/out/x/..//../../../../etc/passwd",
    ] {
        a.expect_refused(&format!("read {path}"), fs::read_to_string(path));
    }
    // Relative paths start from the cwd, which in pure mode is no directory at all.
    for depth in 0..=6 {
        let path = format!("{}PWNED-traverse-dotdot", "../".repeat(depth));
        a.expect_refused(&format!("write {path}"), fs::write(&path, "escaped"));
        let path = format!("{}etc/passwd", "../".repeat(depth));
        a.expect_refused(&format!("read {path}"), fs::read_to_string(&path));
    }
    a.finish()
}
