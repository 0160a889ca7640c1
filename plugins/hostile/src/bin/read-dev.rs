//! Attack: reach host devices: read `/dev/zero`, `/dev/urandom`, `/dev/mem`, disks and
//! terminals, write `/dev/null` and `/dev/tty`, and list `/dev`. A plugin gets randomness
//! and its own stdio from WASI; no device file is its business.

use hostile::Attempts;
use std::fs::{self, OpenOptions};
use std::io::Read;

fn main() {
    let mut a = Attempts::new();
    for path in [
        "/dev/zero",
        "/dev/urandom",
        "/dev/random",
        "/dev/mem",
        "/dev/kmsg",
        "/dev/sda",
        "/dev/vda",
        "/dev/nvme0n1",
        "/dev/tty",
        "/dev/stdin",
        "/dev/fd/0",
        "/dev/shm",
        "/out/../dev/zero",
    ] {
        a.expect_refused(
            &format!("read {path}"),
            fs::File::open(path).and_then(|mut f| {
                let mut buf = [0u8; 16];
                f.read(&mut buf)
            }),
        );
    }
    for path in ["/dev/null", "/dev/tty", "/dev/shm/PWNED-read-dev"] {
        a.expect_refused(
            &format!("write {path}"),
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path),
        );
    }
    a.expect_refused("list /dev", fs::read_dir("/dev").map(|d| d.count()));
    a.finish()
}
