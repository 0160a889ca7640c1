//! Attack, impure mode: reach the store through the project's `.repx` link, which leads
//! out of `/work` to the store in the user's cache directory. Reads the link (WASI refuses
//! even that for an absolute link; the store's path, which anyone who knows the project's
//! can work out, comes in parameter `store`), then tries to read the store's records, list its jobs,
//! rewrite the committed output of the job named by parameter `victim` (file `data.csv`)
//! and create `PWNED-reach-store-link` in it: through the link, through `..` around it,
//! by the link's own absolute target, and through links of its own to that target. Last,
//! with parameter `forge = "yes"`, it replaces the link with a directory of its own that
//! looks like a store, holding a forged record.
//!
//! Parameters: `victim` (a job id), `store` (the store's path on the host), `forge` (`yes`
//! to plant the forged `.repx`).

use hostile::{Attempts, param};
use std::fs;

fn main() {
    let mut a = Attempts::new();
    let victim = param("victim").unwrap_or_default();
    let target = match fs::read_link("/work/.repx") {
        Ok(target) => {
            a.note(format!("/work/.repx -> {}", target.display()));
            target.to_string_lossy().into_owned()
        }
        Err(e) => {
            a.refused("read the link /work/.repx", e);
            param("store").unwrap_or_default()
        }
    };
    let _ = hostile::symlink(&target, "/work/own-link");
    let up = format!("{}{}", "../".repeat(12), target.trim_start_matches('/'));
    let _ = hostile::symlink(&up, "/work/own-relative-link");
    let stores = [
        "/work/.repx".to_string(),
        "/work/.repx/.".to_string(),
        "/work/./.repx/../.repx".to_string(),
        format!("/work/../{}", target.trim_start_matches('/')),
        format!("/work/{}", "../".repeat(8)) + target.trim_start_matches('/'),
        target.clone(),
        "/work/own-link".to_string(),
        "/work/own-relative-link".to_string(),
        ".repx".to_string(),
    ];
    for store in &stores {
        a.expect_refused(
            &format!("read {store}/records.jsonl"),
            fs::read_to_string(format!("{store}/records.jsonl")),
        );
        a.expect_refused(
            &format!("list {store}/jobs"),
            fs::read_dir(format!("{store}/jobs")).map(|d| d.count()),
        );
        a.expect_refused(
            &format!("write {store}/PWNED-reach-store-link"),
            fs::write(format!("{store}/PWNED-reach-store-link"), "escaped"),
        );
        let output = format!("{store}/jobs/{victim}/out/data.csv");
        a.expect_refused(
            &format!("rewrite {output}"),
            fs::write(&output, "x,y\n666,666\n"),
        );
        a.expect_refused(
            &format!("remove {output}"),
            fs::remove_file(&output),
        );
    }
    if param("forge").as_deref() == Some("yes") {
        // Deleting a link of the project is the project's business; what matters is that
        // repx reads nothing from what takes its place.
        match fs::remove_file("/work/.repx") {
            Ok(()) => a.note("removed /work/.repx"),
            Err(e) => a.note(format!("could not remove /work/.repx: {e}")),
        }
        let forged = format!("/work/.repx/jobs/{victim}/out");
        let made = fs::create_dir_all(&forged)
            .and_then(|()| fs::write(format!("{forged}/data.csv"), "x,y\n666,666\n"))
            .and_then(|()| {
                let record = format!("{{\"id\":\"{victim}\",\"stage\":\"victim\"}}\n");
                fs::write("/work/.repx/records.jsonl", record)
            });
        match made {
            Ok(()) => a.note("planted a forged store at /work/.repx"),
            Err(e) => a.note(format!("could not plant a forged store: {e}")),
        }
    }
    a.finish()
}
