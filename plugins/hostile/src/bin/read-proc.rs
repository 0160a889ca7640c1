//! Attack: read the host process through `/proc`: its environment, command line, memory,
//! open descriptors, root and cwd links, mounts, and another process's files; also through
//! `..` from every directory the plugin has.

use hostile::Attempts;
use std::fs;

fn main() {
    let mut a = Attempts::new();
    for path in [
        "/proc/self/environ",
        "/proc/self/cmdline",
        "/proc/self/maps",
        "/proc/self/mem",
        "/proc/self/status",
        "/proc/self/mountinfo",
        "/proc/self/root/etc/passwd",
        "/proc/self/cwd/repx.toml",
        "/proc/self/fd/0",
        "/proc/1/environ",
        "/proc/1/root/etc/passwd",
        "/proc/version",
        "/proc/cpuinfo",
        "/out/../proc/self/environ",
        "/tmp/../../proc/self/environ",
        "/in/../proc/self/environ",
    ] {
        a.expect_refused(&format!("read {path}"), fs::read(path).map(|b| b.len()));
    }
    for dir in ["/proc", "/proc/self/fd", "/proc/self"] {
        a.expect_refused(&format!("list {dir}"), fs::read_dir(dir).map(|d| d.count()));
    }
    a.finish()
}
