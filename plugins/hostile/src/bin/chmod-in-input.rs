//! Attack: change the metadata of input files. WASI has no chmod: std's `set_permissions`
//! is all a plugin can ask for (WASI can only clear or set "read-only", and wasmtime does
//! not support even that), so it tries that, then what WASI does have: setting access and
//! modification times (`File::set_times`, by path and through a read-only handle) and
//! changing the length (`set_len`).

use hostile::{Attempts, files_under};
use std::fs::{self, FileTimes};
use std::time::{Duration, UNIX_EPOCH};

fn main() {
    let mut a = Attempts::new();
    let long_ago = UNIX_EPOCH + Duration::from_secs(86_400);
    let times = FileTimes::new()
        .set_accessed(long_ago)
        .set_modified(long_ago);
    for file in files_under("/in") {
        if let Ok(meta) = fs::metadata(&file) {
            let mut perms = meta.permissions();
            #[allow(clippy::permissions_set_readonly_false)] // the attack: make it writable
            perms.set_readonly(false);
            a.expect_refused(
                &format!("set_permissions(writable) {file}"),
                fs::set_permissions(&file, perms),
            );
        }
        match fs::File::open(&file) {
            Ok(f) => {
                a.expect_refused(&format!("set_times {file}"), f.set_times(times));
                a.expect_refused(&format!("set_modified {file}"), f.set_modified(long_ago));
                a.expect_refused(&format!("set_len {file}"), f.set_len(1));
            }
            Err(e) => a.note(format!("cannot open {file}: {e}")),
        }
        a.expect_refused(
            &format!("open {file} to set times"),
            fs::OpenOptions::new().write(true).open(&file),
        );
    }
    for dir in hostile::inputs() {
        if let Ok(d) = fs::File::open(&dir) {
            a.expect_refused(&format!("set_times on directory {dir}"), d.set_times(times));
        }
    }
    a.finish()
}
