//! Attack: name host files by absolute path. Tries `/etc/passwd`, `/etc/shadow`, `/root`,
//! `/home`, the host's own path of the lab (parameter `host_dir`) and of its store, and
//! writing `PWNED-traverse-absolute` at `/`, in `/etc` and in the lab directory; lists `/`.
//!
//! Parameters: `host_dir` (string): the lab directory as the host knows it.

use hostile::{Attempts, param};
use std::fs;

fn main() {
    let mut a = Attempts::new();
    let host = param("host_dir").unwrap_or_else(|| "/nonexistent-host-dir".into());
    for path in [
        "/etc/passwd".to_string(),
        "/etc/shadow".into(),
        "/etc/hostname".into(),
        "/root/.bashrc".into(),
        "/sentinel.txt".into(),
        format!("{host}/sentinel.txt"),
        format!("{host}/repx.toml"),
        format!("{host}/.repx/records.jsonl"),
        format!("{host}/.repx/lock"),
    ] {
        a.expect_refused(&format!("read {path}"), fs::read_to_string(&path));
    }
    for dir in ["/", "/etc", "/home", "/root", "/usr"] {
        a.expect_refused(&format!("list {dir}"), fs::read_dir(dir).map(|d| d.count()));
    }
    a.expect_refused(
        &format!("list {host}"),
        fs::read_dir(&host).map(|d| d.count()),
    );
    for path in [
        "/PWNED-traverse-absolute".to_string(),
        "/etc/PWNED-traverse-absolute".into(),
        format!("{host}/PWNED-traverse-absolute"),
        format!("{host}/.repx/PWNED-traverse-absolute"),
        format!("{host}/sentinel.txt"),
        format!("{host}/.repx/records.jsonl"),
    ] {
        a.expect_refused(&format!("write {path}"), fs::write(&path, "escaped"));
    }
    a.finish()
}
