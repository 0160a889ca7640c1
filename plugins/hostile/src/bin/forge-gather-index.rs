//! Attack on a gather input (`up[*]`, mounted at `/in/up`): rewrite its `index.json` so a
//! later reader sees other jobs, add a fake job directory, rename or remove a real one;
//! then follow whatever the upstream jobs planted in their outputs to look like an index
//! (`index.json` with `dir` entries climbing out, `escape -> ../..`), reading through it.
//!
//! What it saw in the real `/in/up/index.json` is copied to `/out/index-seen.json`, so the
//! test can check that the host's index, not a forged one, is what the plugin got.

use hostile::{Attempts, names};
use std::fs::{self, OpenOptions};

/// The values of every `"dir": "…"` in a JSON text, without a JSON library.
fn dirs(json: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = json;
    while let Some(at) = rest.find("\"dir\"") {
        rest = &rest[at + 5..];
        let Some(open) = rest.find('"') else { break };
        let after = &rest[open + 1..];
        let Some(close) = after.find('"') else { break };
        found.push(after[..close].to_string());
        rest = &after[close + 1..];
    }
    found
}

fn main() {
    let mut a = Attempts::new();
    let index = "/in/up/index.json";
    let real = fs::read_to_string(index).unwrap_or_default();
    fs::write("/out/index-seen.json", &real).unwrap();
    let forged = "{\"jobs\":[{\"id\":\"forged\",\"dir\":\"../../..\",\"params\":{}}]}";
    a.expect_refused("overwrite index.json", fs::write(index, forged));
    a.expect_refused(
        "append to index.json",
        OpenOptions::new().append(true).open(index),
    );
    a.expect_refused("remove index.json", fs::remove_file(index));
    a.expect_refused(
        "replace index.json by rename",
        fs::write("/tmp/index.json", forged).and_then(|()| fs::rename("/tmp/index.json", index)),
    );
    a.expect_refused(
        "add a fake job directory",
        fs::create_dir("/in/up/0000000000000000forged"),
    );
    a.expect_refused(
        "link a fake job directory to /out",
        hostile::symlink("/out", "/in/up/forged-link"),
    );
    let jobs: Vec<String> = names("/in/up")
        .into_iter()
        .filter(|n| n != "index.json")
        .collect();
    for job in &jobs {
        a.expect_refused(
            &format!("rename job directory {job}"),
            fs::rename(format!("/in/up/{job}"), format!("/in/up/{job}.gone")),
        );
        a.expect_refused(
            &format!("remove job directory {job}"),
            fs::remove_dir_all(format!("/in/up/{job}")),
        );
        // What the upstream job planted: an index of its own, and a link out.
        let planted = fs::read_to_string(format!("/in/up/{job}/index.json")).unwrap_or_default();
        for dir in dirs(&planted) {
            let path = format!("/in/up/{job}/{dir}/sentinel.txt");
            a.expect_refused(&format!("read {path}"), fs::read_to_string(&path));
            let path = format!("/in/up/{dir}/sentinel.txt");
            a.expect_refused(&format!("read {path}"), fs::read_to_string(&path));
        }
        for path in [
            format!("/in/up/{job}/escape/sentinel.txt"),
            format!("/in/up/{job}/escape/.repx/records.jsonl"),
            format!("/in/up/{job}/../../sentinel.txt"),
        ] {
            a.expect_refused(&format!("read {path}"), fs::read_to_string(&path));
        }
    }
    a.note(format!("jobs seen: {}", jobs.len()));
    a.finish()
}
