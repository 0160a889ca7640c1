//! Attack: plant links to `/etc/passwd` in `/out` (absolute, and relative with enough `..`
//! to reach it from the store), read through them, and leave them in the output so that
//! whoever reads the output later (the host, a downstream job) might follow them. Its
//! `metrics.json` is a link to `/dev/zero` (relative: WASI refuses to make links with
//! absolute targets), for the host's `repx results` to read forever.

use hostile::Attempts;
use std::fs;

fn main() {
    let mut a = Attempts::new();
    let relative = format!("{}etc/passwd", "../".repeat(16));
    let zero = format!("{}dev/zero", "../".repeat(16));
    for (name, target) in [
        ("passwd", "/etc/passwd"),
        ("passwd-relative", relative.as_str()),
        ("metrics.json", zero.as_str()),
    ] {
        let link = format!("/out/{name}");
        match hostile::symlink(target, &link) {
            Ok(()) => a.note(format!("linked {link} -> {target}")),
            Err(e) => a.refused(&format!("link {link} -> {target}"), e),
        }
        a.expect_refused(&format!("read through {link}"), fs::read_to_string(&link));
        a.expect_refused(
            &format!("write through {link}"),
            fs::OpenOptions::new().append(true).open(&link),
        );
    }
    a.finish()
}
