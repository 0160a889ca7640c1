//! Attack: make a directory link in `/out` that points out of it (`..`, `../../../..`, which
//! is the lab directory on the host, `/`, the host's lab directory by its absolute path from
//! parameter `host_dir`), then create `PWNED-symlink-out-escape-write` through it and list
//! what it points to. Also links a file name to a place outside and tries to create it by
//! writing to the link (a dangling link followed by `O_CREAT`). WASI refuses to make links
//! with absolute targets at all; attempts through a link that could not be made are skipped.
//!
//! Parameters: `host_dir` (string): the lab directory as the host knows it.

use hostile::{Attempts, param};
use std::fs;

fn main() {
    let mut a = Attempts::new();
    let host = param("host_dir").unwrap_or_default();
    let up = "../".repeat(4);
    let targets = [
        ("parent", ".."),
        ("lab", up.as_str()),
        ("root", "/"),
        ("host", host.as_str()),
        ("scratch", "/tmp"),
    ];
    for (name, target) in targets {
        let link = format!("/out/{name}");
        match hostile::symlink(target, &link) {
            Ok(()) => a.note(format!("linked {link} -> {target}")),
            Err(e) => {
                a.refused(&format!("link {link} -> {target}"), e);
                continue;
            }
        }
        a.expect_refused(
            &format!("write {link}/PWNED-symlink-out-escape-write"),
            fs::write(format!("{link}/PWNED-symlink-out-escape-write"), "escaped"),
        );
        a.expect_refused(
            &format!("list {link}"),
            fs::read_dir(&link).map(|d| d.count()),
        );
    }
    // A dangling link whose target lies outside: opening it for writing would create it.
    let dangling = format!("{host}/PWNED-symlink-out-escape-write-dangling");
    for (name, target) in [
        (
            "dangling-relative",
            "../../../../PWNED-symlink-out-escape-write-dangling",
        ),
        ("dangling-host", dangling.as_str()),
    ] {
        let link = format!("/out/{name}");
        match hostile::symlink(target, &link) {
            Ok(()) => a.note(format!("linked {link} -> {target}")),
            Err(e) => {
                // Writing to the plain name would only make a file in /out.
                a.refused(&format!("link {link} -> {target}"), e);
                continue;
            }
        }
        a.expect_refused(
            &format!("create through {link}"),
            fs::write(&link, "escaped"),
        );
    }
    a.finish()
}
