//! Attack: plant links in `/out` to another job's committed output: by its host path in
//! the store (parameter `target`), by a relative path climbing out of this job's staging
//! directory into `jobs/`, and by the guest path of the upstream input. Reads through each,
//! and leaves them in the output for a downstream job to follow.
//!
//! Parameters: `target` (string): host path of a file in another job's output;
//! `relative` (string): the same file relative to this job's `/out` on the host.

use hostile::{Attempts, param};
use std::fs;

fn main() {
    let mut a = Attempts::new();
    let target = param("target").unwrap_or_default();
    let relative = param("relative").unwrap_or_default();
    for (name, target) in [
        ("steal-absolute", target.as_str()),
        ("steal-relative", relative.as_str()),
        ("steal-guest", "/in/up/data.csv"),
        ("steal-up", "../../in/up/data.csv"),
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
