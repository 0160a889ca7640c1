//! Filesystem attacks: leaving the given directories by `..`, absolute paths and links;
//! changing inputs; reading `/proc`, `/dev` and the host's environment; the network; a
//! forged gather index. Each plugin tries every variant and reports; the tests assert the
//! refusals and that the host is untouched (see `main.rs`).
//!
//! The cases of wasmtime-wasi's own filesystem tests that apply to a plugin are here too:
//! `interesting_paths` (`..` and absolute paths), `nofollow_errors` and `dangling_symlink`
//! (links out, dangling links followed by create), `symlink_loop`,
//! `file_hardlink_across_perms` and `file_rename_across_perms` (across preopens),
//! `file_truncation_readonly` and `path_filestat` (set_len, set_times on read-only files).

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;

use crate::common::{job_dirs, job_with_output, read_output, repx, repx_with_env, repx_within};
use crate::{
    HostState, LIMITS, assert_refused, assert_untouched, attack_lab, one_attack, refusals,
    run_attack,
};

/// Runs a one-stage attack with the common inputs and returns its refusals.
fn attack(plugin: &str, params: &str) -> (crate::common::TempDir, Vec<String>) {
    let lab = one_attack(plugin, params);
    let out = run_attack(&lab, &[]);
    out.expect_code(0);
    let refused = refusals(lab.path(), &out, "attack");
    (lab, refused)
}

#[test]
fn traverse_dotdot() {
    let (_lab, refused) = attack("traverse-dotdot", "");
    assert!(refused.len() > 250, "{} refusals", refused.len());
    assert_refused(&refused, "write /out/../PWNED-traverse-dotdot");
    assert_refused(&refused, "read /in/data/../../sentinel.txt");
    assert_refused(&refused, "read /out/x/../../../sentinel.txt");
    assert_refused(&refused, "write ../../PWNED-traverse-dotdot");
}

#[test]
fn traverse_absolute() {
    let (_lab, refused) = attack("traverse-absolute", r#"host_dir = "{lab}""#);
    assert_refused(&refused, "read /etc/passwd");
    assert_refused(&refused, "list /");
    assert_refused(&refused, "write /PWNED-traverse-absolute");
    let host_write = refused
        .iter()
        .find(|r| r.contains("/PWNED-traverse-absolute") && r.contains("repx-test-"));
    assert!(host_write.is_some(), "the host path was not tried");
}

#[test]
fn symlink_out_to_passwd() {
    let toml = format!(
        r#"
[stages.attack]
plugin = "plugins/symlink-out-to-passwd.wasm"
{LIMITS}

[stages.reader]
plugin = "plugins/follow-input-links.wasm"
inputs = {{ up = "attack", all = "attack[*]" }}
{LIMITS}

[pipelines.main]
stages = ["attack", "reader"]

[runs.main]
pipelines = ["main"]
"#
    );
    let lab = attack_lab(&toml, &["symlink-out-to-passwd", "follow-input-links"]);
    let out = run_attack(&lab, &[]);
    out.expect_code(0);
    let refused = refusals(lab.path(), &out, "attack");
    // WASI makes no link with an absolute target; relative ones climbing out it makes,
    // but does not follow.
    assert_refused(&refused, "link /out/passwd -> /etc/passwd");
    assert_refused(&refused, "read through /out/passwd-relative");
    assert_refused(&refused, "read through /out/metrics.json");

    // The output holds links, committed as links: no copy of what they point to.
    let out_dir = crate::output_of(lab.path(), "attack");
    for name in ["passwd-relative", "metrics.json"] {
        let meta = fs::symlink_metadata(out_dir.join(name)).unwrap();
        assert!(meta.file_type().is_symlink(), "{name} is not a link");
    }
    let job = out_dir.parent().unwrap();
    let manifest = fs::read_to_string(job.join("manifest.json")).unwrap();
    assert!(
        manifest.contains(r#""kind":"L","path":"passwd-relative","content":"../"#),
        "{manifest}"
    );

    // The downstream job could not read through them either (its own result is checked
    // by `refusals` for the stage `reader`; the gathered copy is another mount).
    let reader = refusals(lab.path(), &out, "reader");
    assert_refused(&reader, "read through /in/up/passwd-relative -> ../");
    assert_refused(&reader, "read through /in/up/metrics.json -> ../");
    assert_refused(&reader, "read through /in/all/");

    // Reading the output on the host does not follow them: `show output` lists links, and
    // `results`, reading each metrics.json, must not read /dev/zero for ever.
    let id = job.file_name().unwrap().to_str().unwrap()[..12].to_string();
    let show = repx(lab.path(), &["show", "output", &id]);
    show.expect_code(0);
    assert!(!show.stdout.contains("root:"), "{}", show.stdout);
    let results = repx_within(
        lab.path(),
        &["results", "--stage", "attack", "--format", "csv"],
        std::time::Duration::from_secs(20),
    );
    assert!(
        !results.stdout.contains("root") && !results.stderr.contains("root:"),
        "repx results followed metrics.json to /etc/passwd:\n{}{}",
        results.stdout,
        results.stderr
    );
}

#[test]
fn symlink_out_to_other_job() {
    // First the victim: another job's committed output, at a known host path.
    let toml = |target: &str, relative: &str| {
        format!(
            r#"
[stages.victim]
plugin = "plugins/generate.wasm"
params = {{ n = 3 }}

[stages.attack]
plugin = "plugins/symlink-out-to-other-job.wasm"
inputs = {{ up = "victim" }}
params = {{ target = "{target}", relative = "{relative}" }}
{LIMITS}

[stages.reader]
plugin = "plugins/follow-input-links.wasm"
inputs = {{ up = "attack" }}
{LIMITS}

[pipelines.victim]
stages = ["victim"]

[pipelines.attack]
stages = ["victim", "attack", "reader"]

[runs.victim]
pipelines = ["victim"]

[runs.attack]
pipelines = ["attack"]
"#
        )
    };
    let lab = attack_lab(
        &toml("", ""),
        &["generate", "symlink-out-to-other-job", "follow-input-links"],
    );
    repx(lab.path(), &["run", "victim"]).expect_code(0);
    let victim = job_with_output(lab.path(), "data.csv");
    let id = victim.file_name().unwrap().to_str().unwrap();
    let target = victim.join("out/data.csv");
    let relative = format!("../../../jobs/{id}/out/data.csv");
    fs::write(
        lab.path().join("repx.toml"),
        toml(target.to_str().unwrap(), &relative),
    )
    .unwrap();
    let victim_before = fs::read(&target).unwrap();

    let out = run_attack(&lab, &["attack"]);
    out.expect_code(0);
    let refused = refusals(lab.path(), &out, "attack");
    assert_refused(&refused, "link /out/steal-absolute");
    assert_refused(&refused, "read through /out/steal-relative");
    assert_refused(&refused, "read through /out/steal-up");
    let reader = refusals(lab.path(), &out, "reader");
    assert_refused(&reader, "read through /in/up/steal-relative");
    assert_refused(&reader, "read through /in/up/steal-up");
    assert_eq!(fs::read(&target).unwrap(), victim_before);
}

#[test]
fn symlink_out_escape_write() {
    let (lab, refused) = attack("symlink-out-escape-write", r#"host_dir = "{lab}""#);
    assert_refused(&refused, "write /out/parent/PWNED-symlink-out-escape-write");
    assert_refused(&refused, "write /out/lab/PWNED-symlink-out-escape-write");
    assert_refused(&refused, "list /out/lab");
    assert_refused(&refused, "link /out/host");
    assert_refused(&refused, "create through /out/dangling-relative");
    // The dangling link is committed as a link, still dangling.
    let job = job_with_output(lab.path(), "result.txt");
    let dangling = job.join("out/dangling-relative");
    assert!(
        fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!dangling.exists());
}

#[test]
fn symlink_in_planted() {
    // Links planted in a `path:` input: read by a pure job (from the store's snapshot, where
    // they stay links) and by an impure job (from the live directory).
    let toml = format!(
        r#"
[stages.pure]
plugin = "plugins/symlink-in-planted.wasm"
inputs = {{ data = "path:data" }}
{LIMITS}

[stages.impure]
plugin = "plugins/symlink-in-planted.wasm"
mode = "impure"
inputs = {{ data = "path:data" }}
{LIMITS}

[pipelines.pure]
stages = ["pure"]

[pipelines.impure]
stages = ["impure"]

[runs.main]
pipelines = ["pure", "impure"]
"#
    );
    let lab = attack_lab(&toml, &["symlink-in-planted"]);
    let outside = lab.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret.txt"), "outside the input\n").unwrap();
    let data = lab.path().join("data");
    symlink(
        lab.path().join("sentinel.txt"),
        data.join("planted-absolute"),
    )
    .unwrap();
    symlink("../sentinel.txt", data.join("planted-relative")).unwrap();
    symlink(&outside, data.join("planted-dir")).unwrap();

    let out = run_attack(&lab, &[]);
    out.expect_code(0);
    for stage in ["pure", "impure"] {
        let refused = refusals(lab.path(), &out, stage);
        assert_refused(&refused, "read through /in/data/planted-absolute");
        assert_refused(&refused, "read through /in/data/planted-relative");
        assert_refused(&refused, "list through /in/data/planted-dir");
        assert_refused(&refused, "read /in/data/planted-dir/secret.txt");
    }
    // The snapshot holds the links as links.
    let snapshots: Vec<_> = fs::read_dir(lab.path().join(".repx/snapshots"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(snapshots.len(), 1);
    let planted = snapshots[0].path().join("planted-absolute");
    assert!(
        fs::symlink_metadata(planted)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn symlink_loop() {
    let (lab, refused) = attack("symlink-loop", "");
    assert_refused(&refused, "read through /out/a");
    assert_refused(&refused, "read through /out/self");
    let id = job_with_output(lab.path(), "result.txt");
    let short = &id.file_name().unwrap().to_str().unwrap()[..12];
    repx(lab.path(), &["show", "output", short]).expect_code(0);
}

#[test]
fn hardlink_out_to_input() {
    let (lab, refused) = attack("hardlink-out-to-input", "");
    assert_refused(&refused, "hard-link /in/data/file.txt -> /out/alias");
    assert_refused(&refused, "hard-link /in/up/data.csv -> /out/alias");
    // No file of an input gained a link.
    for dir in [lab.path().join("data"), lab.path().join(".repx")] {
        for entry in walk(&dir) {
            let meta = fs::symlink_metadata(&entry).unwrap();
            if meta.is_file() {
                assert_eq!(
                    meta.nlink(),
                    1,
                    "{} has {} links",
                    entry.display(),
                    meta.nlink()
                );
            }
        }
    }
}

/// Every path under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

#[test]
fn link_across_preopens() {
    let (_lab, refused) = attack("link-across-preopens", "");
    assert_refused(&refused, "hard-link /out/mine.txt -> /in/data/PWNED");
    assert_refused(&refused, "hard-link /tmp/scratch.txt -> /in/up/PWNED");
    assert_refused(&refused, "hard-link /out/mine.txt -> /in/PWNED");
    assert_refused(&refused, "hard-link /in/data/file.txt -> /in/up/PWNED");
}

#[test]
fn rename_across_preopens() {
    let (_lab, refused) = attack("rename-across-preopens", "");
    assert_refused(&refused, "rename /in/data/file.txt -> /out/moved");
    assert_refused(&refused, "rename /out/mine.txt -> /in/data/PWNED");
    assert_refused(&refused, "rename /in/up -> /out/stolen-input");
    assert_refused(&refused, "rename /out -> /tmp/out");
}

#[test]
fn write_in_input() {
    let (_lab, refused) = attack("write-in-input", "");
    for file in ["/in/data/file.txt", "/in/up/data.csv", "/in/all/index.json"] {
        assert_refused(&refused, &format!("overwrite {file}"));
        assert_refused(&refused, &format!("truncate {file}"));
        assert_refused(&refused, &format!("set_len on read-only {file}"));
    }
}

#[test]
fn create_in_input() {
    let (_lab, refused) = attack("create-in-input", "");
    for dir in ["/in", "/in/data", "/in/data/sub", "/in/up", "/in/all"] {
        assert_refused(&refused, &format!("create {dir}/PWNED"));
        assert_refused(&refused, &format!("mkdir {dir}/PWNED"));
        assert_refused(&refused, &format!("symlink {dir}/PWNED"));
    }
}

#[test]
fn delete_in_input() {
    let (_lab, refused) = attack("delete-in-input", "");
    assert_refused(&refused, "remove /in/data/file.txt");
    assert_refused(&refused, "remove /in/up/data.csv");
    assert_refused(&refused, "remove /in/all/index.json");
    assert_refused(&refused, "remove_dir_all /in/data/sub");
    assert_refused(&refused, "remove_dir_all /in/up");
    assert_refused(&refused, "remove_dir_all /in");
}

#[test]
fn chmod_in_input() {
    // WASI has no chmod; what it has (times, length, std's read-only flag) is refused.
    let (_lab, refused) = attack("chmod-in-input", "");
    for file in ["/in/data/file.txt", "/in/up/data.csv"] {
        assert_refused(&refused, &format!("set_permissions(writable) {file}"));
        assert_refused(&refused, &format!("set_times {file}"));
        assert_refused(&refused, &format!("set_modified {file}"));
        assert_refused(&refused, &format!("set_len {file}"));
    }
    assert_refused(&refused, "set_times on directory /in/data");
}

#[test]
fn read_proc() {
    let (_lab, refused) = attack("read-proc", "");
    assert_refused(&refused, "read /proc/self/environ");
    assert_refused(&refused, "read /proc/self/mem");
    assert_refused(&refused, "read /out/../proc/self/environ");
}

#[test]
fn read_dev() {
    let (_lab, refused) = attack("read-dev", "");
    assert_refused(&refused, "read /dev/zero");
    assert_refused(&refused, "read /dev/mem");
    assert_refused(&refused, "write /dev/tty");
    assert_refused(&refused, "list /dev");
}

#[test]
fn read_host_env() {
    const SECRET: &str = "host-secret-7f3a9c";
    let lab = one_attack("read-host-env", "");
    let before = HostState::of(lab.path());
    let out = repx_with_env(
        lab.path(),
        &["run"],
        &[("REPX_SECRET", SECRET), ("AWS_SECRET_ACCESS_KEY", SECRET)],
    );
    assert_untouched(lab.path(), &before);
    out.expect_code(0);
    let refused = refusals(lab.path(), &out, "attack");
    assert_refused(&refused, "getenv HOME");
    assert_refused(&refused, "getenv REPX_SECRET");
    assert_refused(&refused, "read host arguments");
    // Nothing the plugin could write down holds the secret.
    for path in walk(&lab.path().join(".repx")) {
        if path.is_file() {
            let bytes = fs::read(&path).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(SECRET),
                "{} holds the secret",
                path.display()
            );
        }
    }
}

#[test]
fn connect_network() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    tcp.set_nonblocking(true).unwrap();
    udp.set_nonblocking(true).unwrap();
    let (_lab, refused) = attack("connect-network", &format!(r#"port = "{port}""#));
    assert_refused(&refused, &format!("tcp connect 127.0.0.1:{port}"));
    assert_refused(&refused, "udp send to");
    assert_refused(&refused, "resolve localhost");
    assert_refused(&refused, "listen on");
    assert!(tcp.accept().is_err(), "the plugin connected");
    let mut buf = [0u8; 16];
    assert!(
        udp.recv_from(&mut buf).is_err(),
        "the plugin sent a datagram"
    );
}

#[test]
fn forge_gather_index() {
    // Three hostile upstream jobs plant decoys in their outputs; the gathering job tries to
    // forge the index the host wrote and to follow the decoys.
    let toml = format!(
        r#"
[stages.point]
plugin = "plugins/plant-gather-decoys.wasm"
params = {{ v = 0 }}

[stages.gather]
plugin = "plugins/forge-gather-index.wasm"
inputs = {{ up = "point[*]" }}
{LIMITS}

[pipelines.main]
stages = ["point", "gather"]

[runs.main]
pipelines = ["main"]
params = {{ v = [1, 2, 3] }}
"#
    );
    let lab = attack_lab(&toml, &["plant-gather-decoys", "forge-gather-index"]);
    let out = run_attack(&lab, &[]);
    out.expect_code(0);
    let refused = refusals(lab.path(), &out, "gather");
    assert_refused(&refused, "overwrite index.json");
    assert_refused(&refused, "replace index.json by rename");
    assert_refused(&refused, "add a fake job directory");
    assert!(
        refused
            .iter()
            .filter(|r| r.contains("escape/sentinel.txt"))
            .count()
            == 3,
        "{refused:#?}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r.contains("/../../../../sentinel.txt")),
        "the decoy index was not followed: {refused:#?}"
    );

    // What the plugin saw is the host's index: exactly the three upstream jobs.
    let seen: serde_json::Value =
        serde_json::from_str(&read_output(lab.path(), "index-seen.json")).unwrap();
    let mut listed: Vec<(String, i64)> = seen["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            assert_eq!(j["id"], j["dir"], "{j}");
            (
                j["id"].as_str().unwrap().to_string(),
                j["params"]["v"].as_i64().unwrap(),
            )
        })
        .collect();
    listed.sort();
    let mut points: Vec<(String, i64)> = job_dirs(lab.path())
        .into_iter()
        .filter(|d| d.join("out/value.txt").is_file())
        .map(|d| {
            let params: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(d.join("out/value.txt")).unwrap())
                    .unwrap();
            (
                d.file_name().unwrap().to_str().unwrap().to_string(),
                params["v"].as_i64().unwrap(),
            )
        })
        .collect();
    points.sort();
    assert_eq!(listed, points);
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|path| {
            fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
                && String::from_utf8_lossy(&fs::read(path).unwrap()).contains(needle)
        })
        .collect()
}

#[test]
fn input_swapped_for_a_link_out_of_the_project() {
    // An impure stage replaces the project's `data/` with `data -> ../<outside>`, a directory
    // beside the project holding a secret. The next run must not read it: not by the pure
    // stage's snapshot (into the store), not by the impure stage's live `/in/data`.
    const SECRET: &str = "outside-secret-5b1e";
    let outside = crate::common::TempDir::new();
    fs::write(outside.path().join("secret.txt"), SECRET).unwrap();
    let target = format!(
        "../{}",
        outside.path().file_name().unwrap().to_str().unwrap()
    );
    let toml = format!(
        r#"
[stages.swap]
plugin = "plugins/swap-input-for-link.wasm"
mode = "impure"
inputs = {{ data = "path:data" }}
params = {{ target = "{target}" }}

[stages.pure]
plugin = "plugins/generate.wasm"
inputs = {{ data = "path:data" }}
params = {{ n = 3 }}

[stages.impure]
plugin = "plugins/swap-input-for-link.wasm"
mode = "impure"
inputs = {{ data = "path:data" }}

[pipelines.swap]
stages = ["swap"]

[pipelines.read]
stages = ["pure", "impure"]

[runs.swap]
pipelines = ["swap"]

[runs.read]
pipelines = ["read"]
"#
    );
    let lab = attack_lab(&toml, &["generate", "swap-input-for-link"]);
    repx(lab.path(), &["run", "swap"]).expect_code(0);
    let data = lab.path().join("data");
    assert!(
        fs::symlink_metadata(&data)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the attack did not make its link"
    );
    assert_eq!(fs::read_to_string(data.join("secret.txt")).unwrap(), SECRET);

    let out = repx(lab.path(), &["run", "read"]);
    let leaked = files_holding(&lab.path().join(".repx"), SECRET);
    assert_eq!(
        leaked,
        Vec::<std::path::PathBuf>::new(),
        "the secret reached the store"
    );
    // Refused before anything ran, naming the input and the link.
    out.expect_code(2);
    out.expect_stderr(&["data", "is a link", "follows no link"]);
    assert!(out.ran().is_empty(), "{}", out.stderr);
    // The same for a link deeper on the way: `data/` real again, `data/sub` a link.
    fs::remove_file(&data).unwrap();
    fs::rename(lab.path().join("data-moved"), &data).unwrap();
    crate::common::remove_tree(&data.join("sub"));
    symlink(outside.path(), data.join("sub")).unwrap();
    let toml = toml.replace("path:data", "path:data/sub");
    fs::write(lab.path().join("repx.toml"), toml).unwrap();
    let out = repx(lab.path(), &["run", "read"]);
    out.expect_code(2);
    out.expect_stderr(&["data/sub", "is a link"]);
    let leaked = files_holding(&lab.path().join(".repx"), SECRET);
    assert_eq!(
        leaked,
        Vec::<std::path::PathBuf>::new(),
        "the secret reached the store"
    );
}

#[test]
fn an_impure_stage_reads_the_live_input_beside_a_pure_stage_of_the_same_run() {
    // `pure` snapshots `data/` for itself; `impure`, in the same run and after it, must
    // still see the live directory at /in/data, as impure mode promises.
    let toml = r#"
[stages.pure]
plugin = "plugins/generate.wasm"
inputs = { data = "path:data" }
params = { n = 3 }

[stages.impure]
plugin = "plugins/swap-input-for-link.wasm"
mode = "impure"
inputs = { data = "path:data", after = "pure" }

[pipelines.main]
stages = ["pure", "impure"]

[runs.main]
pipelines = ["main"]
"#;
    let lab = attack_lab(toml, &["generate", "swap-input-for-link"]);
    repx(lab.path(), &["run"]).expect_code(0);
    assert_eq!(
        crate::common::read_output(lab.path(), "in-data.txt"),
        "live\n"
    );
    // The pure job's input is still the snapshot, taken by content.
    let snapshots: Vec<_> = fs::read_dir(lab.path().join(".repx/snapshots"))
        .unwrap()
        .collect();
    assert_eq!(snapshots.len(), 1);
}

#[test]
fn a_snapshot_is_named_by_the_bytes_it_holds_though_its_input_changes_meanwhile() {
    // A writer rewrites a file of a `path:` input in place, over and over, while repx
    // hashes and snapshots it. Whatever the run does, no snapshot may hold other bytes
    // than its name says: later runs would reuse it for the name's content.
    use std::sync::atomic::{AtomicBool, Ordering};
    let toml = r#"
[stages.pure]
plugin = "plugins/generate.wasm"
inputs = { data = "path:data" }
params = { n = 3 }

[pipelines.main]
stages = ["pure"]

[runs.main]
pipelines = ["main"]
"#;
    let lab = attack_lab(toml, &["generate"]);
    let file = lab.path().join("data/big.bin");
    const SIZE: usize = 8 << 20;
    fs::write(&file, vec![b'A'; SIZE]).unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, file) = (stop.clone(), file.clone());
        std::thread::spawn(move || {
            use std::io::{Seek, Write};
            let mut f = fs::OpenOptions::new().write(true).open(&file).unwrap();
            let (a, b) = (vec![b'A'; SIZE], vec![b'B'; SIZE]);
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                f.rewind().unwrap();
                f.write_all(if rounds.is_multiple_of(2) { &b } else { &a })
                    .unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    let mut failures = 0;
    for _ in 0..3 {
        let out = repx(lab.path(), &["run"]);
        if out.code != 0 {
            failures += 1;
            out.expect_stderr(&["changed while this run used it"]);
        }
        for entry in fs::read_dir(lab.path().join(".repx/snapshots")).unwrap() {
            let entry = entry.unwrap();
            let hash = repx::store::hash_tree(&entry.path()).unwrap().hash;
            assert_eq!(
                hash,
                entry.file_name().to_string_lossy(),
                "snapshot {} holds other bytes than its name",
                entry.path().display()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
    assert!(
        failures > 0,
        "the input never changed under a run: the test proves nothing"
    );
    // Once the input holds still, the run takes its snapshot and succeeds.
    repx(lab.path(), &["run"]).expect_code(0);
}

#[test]
fn an_output_rewritten_in_place_is_not_cached() {
    // Another process rewrites a committed `data.csv` in place, same length, and sets its
    // time back: `out/`'s time, the file's size and its mtime are all as sealed. `repx run`
    // must notice (the change time and the bytes say) and run the job again; so must it
    // after a plain edit in place.
    let toml = r#"
[stages.victim]
plugin = "plugins/generate.wasm"
params = { n = 3 }
outputs = ["data.csv"]

[pipelines.victim]
stages = ["victim"]

[runs.victim]
pipelines = ["victim"]
"#;
    let lab = attack_lab(toml, &["generate"]);
    repx(lab.path(), &["run", "victim"]).expect_code(0);
    let job = job_with_output(lab.path(), "data.csv");
    let csv = job.join("out/data.csv");
    let sealed = fs::read(&csv).unwrap();
    let mtime = fs::metadata(&csv).unwrap().modified().unwrap();

    crate::common::make_writable(&job);
    let file = fs::OpenOptions::new().write(true).open(&csv).unwrap();
    std::os::unix::fs::FileExt::write_all_at(
        &file,
        &b"PWNED".repeat(sealed.len())[..sealed.len()],
        0,
    )
    .unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    assert_ne!(fs::read(&csv).unwrap(), sealed);
    let rerun = repx(lab.path(), &["run", "victim"]);
    rerun.expect_code(0);
    assert_eq!(rerun.ran(), ["victim"], "{}", rerun.stderr);
    assert_eq!(fs::read(&csv).unwrap(), sealed);

    // A user's edit in place, same length: a byte no CSV holds.
    use std::io::Write;
    crate::common::make_writable(&job);
    let mut file = fs::OpenOptions::new().write(true).open(&csv).unwrap();
    file.write_all(b"\x01").unwrap();
    drop(file);
    let rerun = repx(lab.path(), &["run", "victim"]);
    assert_eq!(rerun.ran(), ["victim"], "{}", rerun.stderr);
    assert_eq!(fs::read(&csv).unwrap(), sealed);
    // Touched, same bytes: the stamp differs, the bytes do not; still cached.
    crate::common::make_writable(&csv);
    let file = fs::File::options().write(true).open(&csv).unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
    drop(file);
    let again = repx(lab.path(), &["run", "victim"]);
    assert_eq!(again.cached(), ["victim"], "{}", again.stderr);
}

#[test]
fn a_user_who_is_not_root_runs_a_pure_job_with_a_path_input() {
    // A snapshot is renamed into `snapshots/` and only then sealed: moving a directory
    // needs write permission on it, which root alone does without, so a run as root
    // cannot show it. The binary and the lab go into a fresh 0755 directory, since the
    // checkout may lie under a 0700 home.
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    const USER: &str = "repx-test";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot run a case as another user; CI runs this as root");
        return;
    }
    if !Command::new("id")
        .arg(USER)
        .output()
        .unwrap()
        .status
        .success()
    {
        let made = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status()
            .unwrap();
        assert!(made.success(), "useradd {USER}");
    }
    let dir = crate::common::TempDir::new();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let repx_bin = dir.path().join("repx");
    fs::copy(env!("CARGO_BIN_EXE_repx"), &repx_bin).unwrap();
    let lab = dir.path().join("lab");
    fs::create_dir_all(lab.join("plugins")).unwrap();
    fs::create_dir_all(lab.join("data")).unwrap();
    fs::write(lab.join("data/file.txt"), "input file\n").unwrap();
    fs::copy(
        crate::common::built("examples/simple/plugins/generate.wasm"),
        lab.join("plugins/generate.wasm"),
    )
    .unwrap();
    fs::write(
        lab.join("repx.toml"),
        r#"
[stages.pure]
plugin = "plugins/generate.wasm"
inputs = { data = "path:data" }
params = { n = 3 }

[pipelines.main]
stages = ["pure"]

[runs.main]
pipelines = ["main"]
"#,
    )
    .unwrap();
    let chown = Command::new("chown")
        .args(["-R", USER])
        .arg(&lab)
        .status()
        .unwrap();
    assert!(chown.success());
    // runuser sets the user's own HOME (which this system user lacks): the environment
    // goes through `env`.
    let run = Command::new("runuser")
        .args(["-u", USER, "--", "env"])
        .arg(format!("HOME={}", lab.display()))
        .arg(format!(
            "XDG_CACHE_HOME={}",
            lab.join("cache-home").display()
        ))
        .arg(format!("REPX_CACHE_DIR={}", lab.join("cache").display()))
        .arg(&repx_bin)
        .args(["run", "--pure"])
        .current_dir(&lab)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "as {USER}: {}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let snapshots: Vec<_> = fs::read_dir(lab.join(".repx/snapshots"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(snapshots.len(), 1);
    let sealed = fs::metadata(snapshots[0].path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        sealed & 0o777,
        0o555,
        "the snapshot is sealed once in place"
    );
}
