//! The store against damage: `repx verify` names a flipped byte, a deleted file and an
//! added file in committed outputs, `--repair` makes the next run recompute exactly the
//! damaged jobs; and two `repx run` on one store at once: the second is turned away with
//! a clear message, and the store stays sound.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::{
    copy_example, job_with_output, make_writable, repx, repx_command, repx_within,
};
use crate::{LIMITS, attack_lab};

fn short(job: &Path) -> String {
    job.file_name().unwrap().to_str().unwrap()[..12].to_string()
}

/// Lets the test change a sealed output, as a disk fault or a careless user would.
fn unseal(job: &Path) -> PathBuf {
    let out = job.join("out");
    make_writable(&out);
    out
}

#[test]
fn verify_names_a_flipped_byte_a_deleted_and_an_added_file() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    let clean = repx(lab.path(), &["verify"]);
    clean.expect_code(0);
    assert!(
        clean.stdout.contains("3 outputs checked, 0 damaged"),
        "{}",
        clean.stdout
    );

    let generate = job_with_output(lab.path(), "data.csv");
    let sum = job_with_output(lab.path(), "sum.txt");
    let plot = job_with_output(lab.path(), "plot.svg");

    // One flipped bit in data.csv, same size and time as before.
    let file = unseal(&generate).join("data.csv");
    let mtime = fs::metadata(&file).unwrap().modified().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&file, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    // sum.txt deleted; a file added beside plot.svg.
    fs::remove_file(unseal(&sum).join("sum.txt")).unwrap();
    fs::write(unseal(&plot).join("extra.txt"), "not from the plugin\n").unwrap();

    let out = repx(lab.path(), &["verify"]);
    out.expect_code(1);
    for expected in [
        format!(
            "DAMAGED generate {}\n    changed: data.csv",
            short(&generate)
        ),
        format!("DAMAGED sum {}\n    missing: sum.txt", short(&sum)),
        format!("DAMAGED plot {}\n    added:   extra.txt", short(&plot)),
        "3 outputs checked, 3 damaged".to_string(),
        "repx verify --repair".to_string(),
    ] {
        assert!(
            out.stdout.contains(&expected),
            "{expected:?} not in:\n{}",
            out.stdout
        );
    }

    // Repair removes the three; the next run recomputes exactly them, and all is clean.
    let repair = repx(lab.path(), &["verify", "--repair"]);
    repair.expect_code(0);
    assert!(
        repair.stdout.contains("removed 3 damaged outputs"),
        "{}",
        repair.stdout
    );
    let rerun = repx(lab.path(), &["run"]);
    rerun.expect_code(0);
    assert_eq!(rerun.ran(), ["generate", "plot", "sum"]);
    let after = repx(lab.path(), &["verify"]);
    after.expect_code(0);
    assert!(
        after.stdout.contains("3 outputs checked, 0 damaged"),
        "{}",
        after.stdout
    );
    let data = fs::read_to_string(generate.join("out/data.csv")).unwrap();
    assert_eq!(
        data.as_bytes()[middle],
        bytes[middle] ^ 0x01,
        "data.csv was not restored"
    );
}

#[test]
fn repair_recomputes_only_the_damaged_job() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    let generate = job_with_output(lab.path(), "data.csv");
    let data = unseal(&generate).join("data.csv");
    let mut bytes = fs::read(&data).unwrap();
    bytes[0] ^= 0x20;
    fs::write(&data, &bytes).unwrap();
    // The change is also undone in permissions: a sealed file again, only its content differs.
    fs::set_permissions(&data, fs::Permissions::from_mode(0o444)).unwrap();

    let out = repx(lab.path(), &["verify", "--repair"]);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains(&format!("DAMAGED generate {}", short(&generate)))
    );
    assert!(out.stdout.contains("1 damaged"), "{}", out.stdout);

    // Its dependents keep their outputs: generate is deterministic, so they are cached.
    let rerun = repx(lab.path(), &["run"]);
    rerun.expect_code(0);
    assert_eq!(rerun.ran(), ["generate"], "{}", rerun.stderr);
    assert_eq!(rerun.cached(), ["plot", "sum"]);
    repx(lab.path(), &["verify"]).expect_code(0);
}

#[test]
fn verify_reports_a_deleted_output_directory_without_the_lab() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    let sum = job_with_output(lab.path(), "sum.txt");
    crate::common::remove_tree(&sum);
    // The store is checked on its own: the lab beside it no longer loads.
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    fs::write(lab.path().join("repx.toml"), "[stages.broken\n").unwrap();
    let verify = |args: &[&str]| {
        let mut all = vec!["verify", "--store", ".repx"];
        all.extend_from_slice(args);
        repx(lab.path(), &all)
    };

    let out = verify(&[]);
    out.expect_code(1);
    let expected = format!(
        "DAMAGED sum {}\n    missing: the whole output directory",
        short(&sum)
    );
    assert!(out.stdout.contains(&expected), "{}", out.stdout);
    assert!(
        out.stdout.contains("3 outputs checked, 1 damaged"),
        "{}",
        out.stdout
    );

    // Repair drops its record: the store verifies clean, and the next run recomputes it.
    let repair = verify(&["--repair"]);
    repair.expect_code(0);
    assert!(
        repair.stdout.contains("removed 1 damaged outputs"),
        "{}",
        repair.stdout
    );
    let after = verify(&[]);
    after.expect_code(0);
    assert!(
        after.stdout.contains("2 outputs checked, 0 damaged"),
        "{}",
        after.stdout
    );
    fs::write(lab.path().join("repx.toml"), toml).unwrap();
    let rerun = repx(lab.path(), &["run"]);
    rerun.expect_code(0);
    assert_eq!(rerun.ran(), ["sum"], "{}", rerun.stderr);
    assert!(sum.join("out/sum.txt").is_file());
    repx(lab.path(), &["verify"]).expect_code(0);

    // A store that is not there is a mistake in the command line, not an empty store.
    let missing = repx(lab.path(), &["verify", "--store", "no-such-store"]);
    missing.expect_code(2).expect_stderr(&["no-such-store"]);
    assert!(!lab.path().join("no-such-store").exists());
    // Nor is a directory that holds no store, which opening would turn into one.
    let plugins = lab.path().join("plugins");
    let before = fs::read_dir(&plugins).unwrap().count();
    let not_a_store = repx(lab.path(), &["verify", "--store", "plugins"]);
    not_a_store.expect_code(2).expect_stderr(&["not a store"]);
    assert_eq!(fs::read_dir(&plugins).unwrap().count(), before);
}

#[test]
fn a_second_run_on_a_store_in_use_is_turned_away() {
    // The first run holds the store while its job sleeps up to its 2s limit.
    let toml = format!(
        r#"
[stages.slow]
plugin = "plugins/sleep-forever.wasm"
{LIMITS}

[stages.quick]
plugin = "plugins/generate.wasm"

[pipelines.main]
stages = ["slow", "quick"]

[runs.main]
pipelines = ["main"]
"#
    );
    let lab = attack_lab(&toml, &["sleep-forever", "generate"]);
    let mut first = repx_command(
        lab.path(),
        &["run", "--json", "-j", "2", "--continue-on-failure"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut events = BufReader::new(first.stdout.take().unwrap()).lines();
    // Wait until the first run has a job under way: it holds the lock.
    for line in events.by_ref() {
        if line.unwrap().contains("\"job_started\"") {
            break;
        }
    }
    for args in [&["run"][..], &["verify"], &["run", "--force"]] {
        let second = repx(lab.path(), args);
        assert_eq!(second.code, 1, "repx {args:?}: {}", second.stderr);
        assert!(
            second.stderr.contains("is in use by repx process"),
            "repx {args:?}: {}",
            second.stderr
        );
    }
    let rest: Vec<String> = events.map(|l| l.unwrap()).collect();
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("wall-time limit")),
        "{rest:?}"
    );

    // Neither run damaged the store, and it is free again.
    let verify = repx_within(lab.path(), &["verify"], std::time::Duration::from_secs(30));
    verify.expect_code(0);
    assert!(
        verify.stdout.contains("1 outputs checked, 0 damaged"),
        "{}",
        verify.stdout
    );
    repx(lab.path(), &["list", "jobs"]).expect_code(0);
}

#[test]
fn a_record_line_torn_by_a_crash_does_not_swallow_the_next() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    // A crash (or power loss) in the middle of an append leaves half a line.
    let records = lab.path().join(".repx/records.jsonl");
    let mut torn = fs::read(&records).unwrap();
    torn.extend_from_slice(br#"{"id":"0123456789ab","stage":"gen"#);
    fs::write(&records, &torn).unwrap();

    fs::remove_dir_all(job_with_output(lab.path(), "sum.txt")).unwrap();
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    assert_eq!(out.ran(), ["sum"], "{}", out.stderr);
    // Its record is a line of its own, so the job stays done.
    let again = repx(lab.path(), &["run"]);
    again.expect_code(0);
    assert_eq!(
        again.summary(),
        "3 jobs: 0 ran, 3 cached, 0 failed, 0 skipped",
        "{}",
        again.stderr
    );
    let text = fs::read_to_string(&records).unwrap();
    assert!(!text.contains(r#""stage":"gen{"#), "{text}");
    repx(lab.path(), &["verify"]).expect_code(0);
}

#[test]
fn an_output_deeper_than_path_max_does_not_brick_the_store() {
    let toml = r#"
[stages.up]
plugin = "plugins/generate.wasm"
params = { n = 5 }

[stages.deep]
plugin = "plugins/nest-past-path-max.wasm"

[pipelines.main]
stages = ["up", "deep"]

[runs.main]
pipelines = ["main"]
"#;
    let lab = attack_lab(toml, &["generate", "nest-past-path-max"]);
    // Trees are walked by descriptor, one name at a time, so a tree past PATH_MAX is
    // sealed, checked, committed and removed like any other.
    let first = repx(lab.path(), &["run"]);
    first.expect_code(0);
    assert_eq!(first.ran(), ["deep", "up"], "{}", first.stderr);
    for _ in 0..2 {
        let again = repx(lab.path(), &["run"]);
        again.expect_code(0);
        assert_eq!(again.cached(), ["deep", "up"], "{}", again.stderr);
    }
    repx(lab.path(), &["verify"]).expect_code(0);
    // Once no run reaches it, gc removes it whole.
    let toml_path = lab.path().join("repx.toml");
    let text = fs::read_to_string(&toml_path).unwrap();
    fs::write(
        &toml_path,
        text.replace(r#"stages = ["up", "deep"]"#, r#"stages = ["up"]"#),
    )
    .unwrap();
    repx(lab.path(), &["gc"]).expect_code(0);
    repx(lab.path(), &["verify"]).expect_code(0);
    let long_names = walkdir::WalkDir::new(lab.path().join(".repx/"))
        .into_iter()
        .filter_entry(|e| e.file_name().len() < 200)
        .flatten()
        .count();
    let all = walkdir::WalkDir::new(lab.path().join(".repx/"))
        .into_iter()
        .count();
    assert_eq!(long_names, all, "a deep tree stays in the store");
}

#[test]
fn record_lines_that_are_no_record_are_reported_and_repaired() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    let records = lab.path().join(".repx/records.jsonl");
    let text = fs::read_to_string(&records).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // A record glued to half of one, as an append after a failed one used to leave.
    let glued = format!("{}{}", &lines[1][..40], lines[1]);
    fs::write(&records, format!("{}\n{glued}\n{}\n", lines[0], lines[2])).unwrap();

    let listed = repx(lab.path(), &["list", "jobs"]);
    listed
        .expect_code(0)
        .expect_stderr(&["records.jsonl: line 2 is no record"]);
    let verify = repx(lab.path(), &["verify"]);
    verify.expect_code(1);
    assert!(
        verify
            .stdout
            .contains("UNREADABLE records.jsonl line 2: not a record"),
        "{}",
        verify.stdout
    );
    repx(lab.path(), &["verify", "--repair"]).expect_code(0);
    let after = fs::read_to_string(&records).unwrap();
    assert_eq!(after.lines().count(), 2, "{after}");
    repx(lab.path(), &["verify"]).expect_code(0);
    let rerun = repx(lab.path(), &["run"]);
    rerun.expect_code(0);
    assert_eq!(rerun.ran().len(), 1, "{}", rerun.stderr);
    assert!(!rerun.stderr.contains("no record"), "{}", rerun.stderr);
}

#[test]
fn verify_after_an_interrupted_gc_says_to_run_gc_again() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    // What a `gc` killed after rewriting the records leaves: an output without a record.
    let records = lab.path().join(".repx/records.jsonl");
    let text = fs::read_to_string(&records).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    let id = serde_json::from_str::<serde_json::Value>(first).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    fs::write(&records, rest).unwrap();
    let verify = repx(lab.path(), &["verify"]);
    verify.expect_code(0);
    assert!(!verify.stdout.contains("DAMAGED"), "{}", verify.stdout);
    assert!(
        verify.stdout.contains("run `repx gc` again"),
        "{}",
        verify.stdout
    );
    // gc removes it, though the lab still reaches the job; the run then recomputes it.
    repx(lab.path(), &["gc"]).expect_code(0);
    assert!(!lab.path().join(".repx/jobs").join(&id).exists());
    let verify = repx(lab.path(), &["verify"]);
    assert!(!verify.stdout.contains("gc"), "{}", verify.stdout);
    repx(lab.path(), &["run"]).expect_code(0);
}
