//! Attack: follow links that someone planted in an input (the test puts them in a `path:`
//! input): one absolute to a host file outside the lab, one relative climbing out of the
//! input, one to a directory outside. Reads, writes and lists through each.

use hostile::{Attempts, names};
use std::fs;

fn main() {
    let mut a = Attempts::new();
    let planted = names("/in/data");
    a.note(format!("/in/data holds {planted:?}"));
    for name in ["planted-absolute", "planted-relative", "planted-dir"] {
        let link = format!("/in/data/{name}");
        match fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => a.note(format!(
                "{link} is a link to {:?}",
                fs::read_link(&link).map(|t| t.display().to_string())
            )),
            other => a.escaped(
                &format!("find {link} as a link"),
                format!("not a link: {other:?} (was it copied?)"),
            ),
        }
        a.expect_refused(&format!("read through {link}"), fs::read_to_string(&link));
        a.expect_refused(
            &format!("list through {link}"),
            fs::read_dir(&link).map(|d| d.count()),
        );
        a.expect_refused(
            &format!("write through {link}"),
            fs::OpenOptions::new().append(true).open(&link),
        );
    }
    a.expect_refused(
        "read /in/data/planted-dir/secret.txt",
        fs::read_to_string("/in/data/planted-dir/secret.txt"),
    );
    a.finish()
}
