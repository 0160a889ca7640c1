//! The fault suite: what a bad day does to a store, one test per fault, each against the
//! real `repx` binary, as root (it mounts filesystems): a full disk at the record append
//! and in the middle of outputs, a read-only store, a deleted lock file, a damaged compiled
//! plugin, a terminal that hangs up.
//!
//! Each checks that no result a run reported committed is lost, and that a re-run
//! converges to the bytes of a clean run. Needs the plugins (`scripts/build-plugins`).

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{TempDir, built, copy_example, repx, repx_command, repx_with_env};

/// A filesystem mounted for one test, unmounted when dropped.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    /// A tmpfs of `size` (as `mount -o size=` takes it) at `dir`, made if missing.
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        fs::create_dir_all(dir).unwrap();
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir,
        );
        Mount {
            dir: dir.to_path_buf(),
        }
    }

    /// `dir` bound onto itself read-only.
    fn read_only(dir: &Path) -> Mount {
        mount(&["--bind"], dir);
        let bound = Mount {
            dir: dir.to_path_buf(),
        };
        mount(&["-o", "remount,bind,ro"], dir);
        bound
    }

    fn resize(&self, size: &str) {
        mount(&["-o", &format!("remount,size={size}")], &self.dir);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// `mount ARGS… DIR`; `mount --bind DIR DIR` for `--bind`.
#[track_caller]
fn mount(args: &[&str], dir: &Path) {
    let status = Command::new("mount")
        .args(args)
        .args(args.contains(&"--bind").then_some(dir.as_os_str()))
        .arg(dir)
        .status()
        .expect("running mount");
    assert!(
        status.success(),
        "mount {args:?} {}: the fault suite runs as root (as CI does)",
        dir.display()
    );
}

const SLOPE_SWEEP: &str = r#"
[stages.point]
plugin = "plugins/sweep-point.wasm"
params = { slope = 1.0, intercept = 0.0 }
outputs = ["points.csv", "plot.svg", "metrics.json"]

[pipelines.sweep]
stages = ["point"]

[runs.sweep]
pipelines = ["sweep"]
params = { slope = [SLOPES], intercept = [7] }
"#;

/// The param-sweep example's plugins with its point stage swept over slopes `0..slopes`.
fn sweep_lab(slopes: usize) -> TempDir {
    let lab = copy_example("param-sweep");
    write_sweep(lab.path(), slopes);
    lab
}

fn write_sweep(lab: &Path, slopes: usize) {
    let list: Vec<String> = (0..slopes).map(|s| s.to_string()).collect();
    fs::write(
        lab.join("repx.toml"),
        SLOPE_SWEEP.replace("SLOPES", &list.join(", ")),
    )
    .unwrap();
}

/// Every committed output of `store` by the job's stage and parameters: file name to bytes.
fn outputs_by_params(store: &Path) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let records = fs::read_to_string(store.join("records.jsonl")).unwrap_or_default();
    let mut outputs = BTreeMap::new();
    for line in records.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("records.jsonl holds a line that is no record ({e}): {line:?}")
        });
        let out = store
            .join("jobs")
            .join(record["id"].as_str().unwrap())
            .join("out");
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(&out).unwrap() {
            let entry = entry.unwrap();
            files.insert(
                entry.file_name().to_string_lossy().into_owned(),
                fs::read(entry.path()).unwrap(),
            );
        }
        let key = format!("{} {}", record["stage"].as_str().unwrap(), record["params"]);
        outputs.insert(key, files);
    }
    outputs
}

/// Fills the filesystem of `dir` with `filler` until it is full.
fn fill(filler: &Path) -> fs::File {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(filler)
        .unwrap();
    let page = vec![b'f'; 4096];
    while file.write_all(&page).is_ok() {}
    // What is left is less than a page.
    while file.write_all(b"f").is_ok() {}
    file
}

/// The ids of the jobs `--json` reported finished, and the errors of those that failed.
struct Events {
    finished: Vec<String>,
    failures: Vec<String>,
    code: i32,
}

#[test]
fn a_full_disk_at_the_record_append_or_in_outputs_loses_nothing() {
    // Each round adds NEW jobs and leaves 0, 1, …, 8 pages free, and again: the disk fills
    // at a different moment of the round's first job each time, from its first output file
    // to its record (how many pages a job takes varies with its plot). Rounds go on until
    // both moments were met, at most MAX_ROUNDS.
    const MAX_ROUNDS: usize = 36;
    const NEW: usize = 5;
    const FIRST: usize = 4;
    const MOST: usize = FIRST + MAX_ROUNDS * NEW;
    let clean = sweep_lab(MOST);
    repx(clean.path(), &["run"]).expect_code(0);
    let expected = outputs_by_params(&clean.path().join(".repx"));
    assert_eq!(expected.len(), MOST);

    let lab = sweep_lab(FIRST);
    // Room for every round's jobs; each round fills what is left.
    let disk = Mount::tmpfs(&lab.path().join("disk"), "16m");
    let store = disk.dir.join("store");
    let store_arg = store.to_str().unwrap().to_string();
    repx(lab.path(), &["run", "--store", &store_arg]).expect_code(0);
    let filler = disk.dir.join("filler");
    let records = store.join("records.jsonl");

    let mut reported: Vec<String> = Vec::new();
    let (mut at_append, mut in_outputs) = (false, false);
    let mut slopes = FIRST;
    for round in 0..MAX_ROUNDS {
        if at_append && in_outputs && round >= 9 {
            break;
        }
        slopes += NEW;
        write_sweep(lab.path(), slopes);
        // The record log padded (with a valid record, spaced out) so that its next line
        // starts 100 bytes before the end of a page: an append that finds no free page
        // writes those 100 bytes and then fails.
        let mut log = fs::read(&records).unwrap();
        let start = log[..log.len() - 1]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let line = log[start..].to_vec();
        let spaces = (2 * 4096 - 100 - (log.len() + line.len()) % 4096) % 4096;
        log.push(b'{');
        log.extend(std::iter::repeat_n(b' ', spaces));
        log.extend_from_slice(&line[1..]);
        fs::write(&records, &log).unwrap();

        let filling = fill(&filler);
        let len = filling.metadata().unwrap().len();
        filling
            .set_len(len.saturating_sub(round as u64 * 4096))
            .unwrap();
        let events = run_until_failure_then_free(lab.path(), &store_arg, &filling);
        reported.extend(events.finished);
        for failure in &events.failures {
            if failure.contains("records.jsonl") {
                at_append = true;
            } else if failure.contains("No space left") {
                in_outputs = true;
            }
            assert!(
                !failure.contains("(os error 28): No space left"),
                "said twice: {failure}"
            );
        }
        // Jobs failed for want of space: 3 when the store could not take them, 1 when a
        // plugin's own write failed; never a crash.
        assert!(
            [0, 1, 3].contains(&events.code),
            "exit {}: {:?}",
            events.code,
            events.failures
        );
        drop(filling);
        fs::remove_file(&filler).unwrap();

        // No record line is torn or glued; every job reported done is recorded, intact.
        let text = fs::read_to_string(&records).unwrap();
        assert!(text.ends_with('\n'), "the record log ends mid-line");
        let done = outputs_by_params(&store);
        for id in &reported {
            assert!(
                text.contains(&format!("\"id\":\"{id}\"")),
                "job {id} was reported finished but is not recorded"
            );
        }
        for (params, files) in &done {
            assert_eq!(files, &expected[params], "output of {params}");
        }
        repx(lab.path(), &["verify", "--store", &store_arg]).expect_code(0);
    }
    assert!(
        at_append && in_outputs,
        "the disk never filled at the record append ({at_append}) or in outputs ({in_outputs})"
    );

    // With room again, a re-run completes what is missing and reaches the clean bytes.
    disk.resize("64m");
    let rerun = repx(lab.path(), &["run", "--store", &store_arg]);
    rerun.expect_code(0);
    assert!(rerun.cached().len() >= reported.len(), "{}", rerun.stderr);
    let again = repx(lab.path(), &["run", "--store", &store_arg]);
    assert_eq!(
        again.summary(),
        format!("{slopes} jobs: 0 ran, {slopes} cached, 0 failed, 0 skipped")
    );
    let done = outputs_by_params(&store);
    assert_eq!(done.len(), slopes);
    for (params, files) in &done {
        assert_eq!(files, &expected[params], "output of {params}");
    }
}

/// Runs the sweep with `--json`, one job at a time; once a job fails, frees the disk (so
/// that later jobs of the same process commit, after the failure).
fn run_until_failure_then_free(lab: &Path, store: &str, filler: &fs::File) -> Events {
    let mut child = repx_command(
        lab,
        &[
            "run",
            "--json",
            "-j",
            "1",
            "--continue-on-failure",
            "--store",
            store,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut events = Events {
        finished: Vec::new(),
        failures: Vec::new(),
        code: -1,
    };
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        match event["event"].as_str() {
            Some("job_finished") => events
                .finished
                .push(event["id"].as_str().unwrap().to_string()),
            Some("job_failed") => {
                events
                    .failures
                    .push(event["error"].as_str().unwrap().to_string());
                filler.set_len(0).unwrap();
            }
            _ => {}
        }
    }
    events.code = child.wait().unwrap().code().unwrap_or(-1);
    events
}

#[test]
fn a_disk_full_in_the_middle_of_outputs_reports_the_job_and_keeps_the_rest() {
    let lab = common::lab_dir(
        r#"
[stages.fill]
plugin = "plugins/fill-out.wasm"
params = { megabytes = "8" }

[stages.gen]
plugin = "plugins/generate.wasm"
params = { n = 5 }

[pipelines.p]
stages = ["gen", "fill"]

[runs.r]
pipelines = ["p"]
"#,
        &[],
    );
    fs::copy(
        built("plugins/target/wasm32-wasip2/release/fill-out.wasm"),
        lab.path().join("plugins/fill-out.wasm"),
    )
    .unwrap();
    let disk = Mount::tmpfs(&lab.path().join("disk"), "2m");
    let store = disk.dir.join("store");
    let store_arg = store.to_str().unwrap();
    let out = repx(
        lab.path(),
        &["run", "--continue-on-failure", "--store", store_arg],
    );
    // The plugin filled the disk, and the store could not take its output: a store error,
    // exit 3, said once, on the job's line.
    assert_eq!(out.code, 3, "{}", out.stderr);
    let failed = out
        .stderr
        .lines()
        .find(|l| l.starts_with("FAILED fill "))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert_eq!(
        failed.matches("No space left on device").count(),
        1,
        "{failed}"
    );
    assert!(!out.stderr.contains("panicked at"), "{}", out.stderr);
    assert_eq!(out.ran(), ["gen"]);
    // Its partial output is gone, the other job's result stays.
    let staged = fs::read_dir(store.join("tmp"))
        .unwrap()
        .flatten()
        .flat_map(|e| fs::read_dir(e.path()).into_iter().flatten().flatten())
        .count();
    assert_eq!(staged, 0, "a failed output stays in tmp/");
    repx(lab.path(), &["verify", "--store", store_arg]).expect_code(0);
    // With room, a re-run keeps what was committed and completes the rest.
    disk.resize("64m");
    let again = repx(lab.path(), &["run", "--store", store_arg]);
    again.expect_code(0);
    assert_eq!(again.cached(), ["gen"], "{}", again.stderr);
    assert_eq!(again.ran(), ["fill"], "{}", again.stderr);
}

#[test]
fn a_read_only_store_is_read_by_every_command_that_only_reads() {
    let lab = copy_example("param-sweep");
    repx(lab.path(), &["run"]).expect_code(0);
    // The store itself, wherever `.repx` leads.
    let store = fs::canonicalize(lab.path().join(".repx")).unwrap();
    let before = common::tree_state(&store);
    let report = TempDir::new();
    let report_file = report.path().join("sweep.html");
    let id = {
        let jobs = common::job_dirs(lab.path());
        jobs[0].file_name().unwrap().to_string_lossy()[..12].to_string()
    };
    let _ro = Mount::read_only(&store);
    for args in [
        &["list", "jobs"][..],
        &["show", "job", &id],
        &["show", "output", &id],
        &["log", &id],
        &["results"],
        &["viz", "--jobs"],
        &["report", "-o", report_file.to_str().unwrap()],
        &["verify"],
        &["gc", "--dry-run"],
    ] {
        let out = repx(lab.path(), args);
        assert_eq!(
            out.code, 0,
            "repx {args:?} on a read-only store: {}",
            out.stderr
        );
    }
    assert!(report_file.is_file());
    // A run cannot write: a store error, exit 3, said once.
    let run = repx(lab.path(), &["run", "--force"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("Read-only file system").count(),
        1,
        "{}",
        run.stderr
    );
    drop(_ro);
    assert_eq!(common::tree_state(&store), before, "the store changed");
}

#[test]
fn a_deleted_lock_file_does_not_let_a_second_run_in() {
    let lab = common::lab_dir(
        r#"
[stages.slow]
plugin = "plugins/sleep-forever.wasm"
limits = { time = "60s" }

[stages.gen]
plugin = "plugins/generate.wasm"
params = { n = 5 }

[pipelines.p]
stages = ["gen", "slow"]

[runs.r]
pipelines = ["p"]
"#,
        &[],
    );
    fs::copy(
        built("plugins/target/wasm32-wasip2/release/sleep-forever.wasm"),
        lab.path().join("plugins/sleep-forever.wasm"),
    )
    .unwrap();
    let mut first = repx_command(lab.path(), &["run", "--json", "-j", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut events = BufReader::new(first.stdout.take().unwrap()).lines();
    let mut gen_id = None;
    let mut slow_started = false;
    for line in events.by_ref() {
        let line = line.unwrap();
        if line.contains("\"job_finished\"") {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            gen_id = event["id"].as_str().map(str::to_string);
        }
        let gen_done = gen_id.is_some();
        slow_started |= line.contains("\"job_started\"") && line.contains("\"slow\"");
        if gen_done && slow_started {
            break;
        }
    }
    let store = lab.path().join(".repx");
    let records = fs::read(store.join("records.jsonl")).unwrap();
    fs::remove_file(store.join("lock")).unwrap();

    for args in [&["run", "--force"][..], &["verify"], &["gc"]] {
        let second = repx(lab.path(), args);
        assert_eq!(second.code, 1, "repx {args:?}: {}", second.stderr);
        second.expect_stderr(&["is in use by"]);
    }
    // Taking it again does not help either, and the refusal names the holder.
    fs::write(store.join("lock"), "").unwrap();
    let refused = repx(lab.path(), &["run"]);
    refused.expect_code(1);
    assert!(
        !refused
            .stderr
            .contains(&format!("repx process {}", first.id())),
        "an empty lock file names nobody: {}",
        refused.stderr
    );
    assert_eq!(fs::read(store.join("records.jsonl")).unwrap(), records);

    // The first run is interrupted; what it committed stays.
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    assert_eq!(first.wait().unwrap().code(), Some(130));
    drop(events);
    repx(lab.path(), &["verify"]).expect_code(0);
    let again = repx(lab.path(), &["run", &gen_id.unwrap()[..12]]);
    assert_eq!(again.cached(), ["gen"], "{}", again.stderr);
}

#[test]
fn the_refusal_names_the_process_holding_the_store() {
    let lab = common::lab_dir(
        r#"
[stages.slow]
plugin = "plugins/sleep-forever.wasm"
limits = { time = "60s" }

[pipelines.p]
stages = ["slow"]

[runs.r]
pipelines = ["p"]
"#,
        &[],
    );
    fs::copy(
        built("plugins/target/wasm32-wasip2/release/sleep-forever.wasm"),
        lab.path().join("plugins/sleep-forever.wasm"),
    )
    .unwrap();
    let mut first = repx_command(lab.path(), &["run", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut events = BufReader::new(first.stdout.take().unwrap()).lines();
    for line in events.by_ref() {
        if line.unwrap().contains("\"job_started\"") {
            break;
        }
    }
    let second = repx(lab.path(), &["run"]);
    second.expect_code(1).expect_stderr(&[
        &format!("is in use by repx process {} (`", first.id()),
        "run --json`, holding it since ",
    ]);
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    assert_eq!(first.wait().unwrap().code(), Some(130));
}

#[test]
fn a_damaged_compiled_plugin_is_compiled_again_not_run() {
    let cache = TempDir::new();
    let cache_env = [("REPX_CACHE_DIR", cache.path().to_str().unwrap())];
    let clean = copy_example("simple");
    repx_with_env(clean.path(), &["run"], &cache_env).expect_code(0);
    let expected = outputs_by_params(&clean.path().join(".repx"));

    let artifacts: Vec<PathBuf> = fs::read_dir(cache.path().join("wasm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 3, "{artifacts:?}");
    for artifact in &artifacts {
        // 64 KiB of zeros inside the code, the size unchanged.
        let mut bytes = fs::read(artifact).unwrap();
        let len = bytes.len();
        assert!(len > 192 * 1024, "{} is small: {len}", artifact.display());
        bytes[len / 2 - 32 * 1024..len / 2 + 32 * 1024].fill(0);
        fs::write(artifact, &bytes).unwrap();
    }
    // A compile killed before its rename leaves a temporary artifact behind.
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host
        .trim()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let stale = cache
        .path()
        .join("wasm")
        .join(format!(".{host}.{}.x.cwasm", u32::MAX));
    fs::write(&stale, "half an artifact").unwrap();

    let lab = copy_example("simple");
    let run = repx_with_env(lab.path(), &["run"], &cache_env);
    run.expect_code(0);
    assert_eq!(
        run.stderr.matches("in the cache is damaged").count(),
        3,
        "{}",
        run.stderr
    );
    assert_eq!(outputs_by_params(&lab.path().join(".repx")), expected);
    assert!(!stale.exists(), "the stale temporary artifact stays");
    // Replaced: the next run loads them and says nothing.
    let again = repx_with_env(lab.path(), &["run", "--force"], &cache_env);
    again.expect_code(0);
    assert!(!again.stderr.contains("damaged"), "{}", again.stderr);
    assert_eq!(outputs_by_params(&lab.path().join(".repx")), expected);
}

#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    let lab = sweep_lab(300);
    repx(lab.path(), &["run"]).expect_code(0);
    for args in [&["list", "jobs"][..], &["results", "--format", "csv"]] {
        let mut child = repx_command(lab.path(), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Like `head -1`: one line, then the pipe is closed.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "repx {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "repx {args:?}: {stderr}");
    }
}

#[test]
fn a_terminal_that_hangs_up_interrupts_the_run_without_a_panic() {
    const SLOPES: usize = 60;
    let clean = sweep_lab(SLOPES);
    repx(clean.path(), &["run"]).expect_code(0);
    let expected = outputs_by_params(&clean.path().join(".repx"));

    // The sweep, and a job that sleeps until it is interrupted.
    let lab = sweep_lab(SLOPES);
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    fs::write(
        lab.path().join("repx.toml"),
        format!(
            "{toml}\n[stages.slow]\nplugin = \"plugins/sleep-forever.wasm\"\n\
             limits = {{ time = \"60s\" }}\n\n[pipelines.slow]\nstages = [\"slow\"]\n\n\
             [runs.slow]\npipelines = [\"slow\"]\n"
        ),
    )
    .unwrap();
    fs::copy(
        built("plugins/target/wasm32-wasip2/release/sleep-forever.wasm"),
        lab.path().join("plugins/sleep-forever.wasm"),
    )
    .unwrap();

    // repx on a terminal of its own, as its session's leader.
    let (master, slave) = pty();
    let mut command = repx_command(lab.path(), &["run", "-j", "2"]);
    command
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    drop(command);
    // Read what it shows until the sleeping job is asleep and some points are committed,
    // then close the terminal.
    let watched = lab.path().to_path_buf();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut poll = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: `poll` and `buf` live across the calls; `master` is open.
            let ready = unsafe { libc::poll(&mut poll, 1, 50) };
            if ready > 0 {
                let n =
                    unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    return;
                }
            }
            if asleep_with_points(&watched) {
                return; // dropping `master` hangs the terminal up
            }
        }
    });
    reader.join().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");

    // The store is consistent, what was committed stays, and a re-run converges.
    let store = lab.path().join(".repx");
    let committed = outputs_by_params(&store);
    assert!(!committed.is_empty());
    for (params, files) in &committed {
        assert_eq!(files, &expected[params], "output of {params}");
    }
    repx(lab.path(), &["verify"]).expect_code(0);
    let rerun = repx(lab.path(), &["run", "sweep"]);
    rerun.expect_code(0);
    assert_eq!(rerun.cached().len(), committed.len(), "{}", rerun.stderr);
    assert_eq!(outputs_by_params(&store), expected);
}

/// Whether the sleeping job of the lab is asleep and some sweep points are recorded.
fn asleep_with_points(lab: &Path) -> bool {
    let store = lab.join(".repx");
    let asleep = fs::read_dir(store.join("tmp"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|e| fs::read_dir(e.path()).into_iter().flatten().flatten())
        .any(|job| job.path().join("out/asleep").exists());
    let records = fs::read_to_string(store.join("records.jsonl")).unwrap_or_default();
    asleep && records.lines().count() >= 5
}

/// A new pseudo-terminal: its master and its slave.
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty fills both descriptors, which are then owned here.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // Only this process may hold the master: closing it is what hangs the terminal up.
    // SAFETY: `master` is the descriptor just opened.
    unsafe { libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC) };
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}
