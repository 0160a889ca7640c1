//! Attack, from an impure stage: replace the project's `data/` (a `path:` input of this and
//! other stages) with a link out of the project, `data -> <target>`, so that the next run
//! reads, or snapshots into the store, whatever lies there.
//!
//! Each run it first copies the files of its own `/in/data` into `/out/copied/` (what a
//! job reading the input would take in), and records in `/out/in-data.txt` what `/in/data`
//! is: `live` when a file it writes into `/work/data` shows at once in `/in/data` (the live
//! project directory, as an impure stage's inputs must be), `snapshot` when it does not,
//! `unwritable` when `/work/data` cannot be written. Then, when the parameter `target` is
//! given, it moves `/work/data` aside to `/work/data-moved` and makes the link. Exits 0
//! when the swap (if asked) worked; the test judges what the host made of it.

use std::fs;

fn main() {
    let _ = fs::create_dir_all("/out/copied");
    for name in hostile::names("/in/data") {
        if let Ok(bytes) = fs::read(format!("/in/data/{name}")) {
            let _ = fs::write(format!("/out/copied/{name}"), bytes);
        }
    }
    let probe = "live-probe.txt";
    let seen = match fs::write(format!("/work/data/{probe}"), "probe") {
        Ok(()) => {
            let live = fs::metadata(format!("/in/data/{probe}")).is_ok();
            let _ = fs::remove_file(format!("/work/data/{probe}"));
            if live { "live" } else { "snapshot" }
        }
        Err(_) => "unwritable",
    };
    if let Err(e) = fs::write("/out/in-data.txt", format!("{seen}\n")) {
        eprintln!("writing /out/in-data.txt: {e}");
        std::process::exit(1);
    }
    if let Some(target) = hostile::param("target").filter(|t| !t.is_empty()) {
        let swapped = fs::rename("/work/data", "/work/data-moved")
            .and_then(|()| hostile::symlink(&target, "/work/data"));
        if let Err(e) = swapped {
            eprintln!("replacing /work/data with a link to {target}: {e}");
            std::process::exit(1);
        }
    }
}
