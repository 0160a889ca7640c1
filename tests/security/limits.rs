//! Attacks on the runner's resources: memory, time, stack, logs, open files, output size.
//! Each fails its job with a message naming the limit, while an independent job of the
//! same run carries on. Then plugins refused before anything runs: malformed wasm,
//! components and modules importing what the host does not provide, and a plugin changed
//! after it was pinned.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{Output, TempDir, job_dirs, plugin_wasm_p1, repx, repx_within};
use crate::{HostState, LIMITS, assert_untouched, attack_lab, failure, handmade, hostile};

/// A lab with the attack stage `attack` (plugin file `plugins/<file>`) and an independent
/// stage `bystander`, both in one run.
fn limit_lab(file: &str) -> TempDir {
    let toml = format!(
        r#"
[stages.attack]
plugin = "plugins/{file}"
{LIMITS}

[stages.bystander]
plugin = "plugins/generate.wasm"
params = {{ n = 4 }}

[pipelines.attack]
stages = ["attack"]

[pipelines.bystander]
stages = ["bystander"]

[runs.main]
pipelines = ["attack", "bystander"]
"#
    );
    attack_lab(&toml, &["generate"])
}

/// Runs a component attack against the limits: the job fails, the bystander runs, and the
/// failure names the limit. Returns the run's output.
#[track_caller]
fn hits_limit(plugin: &str, needle: &str) -> (TempDir, Output) {
    let lab = attack_lab_of(plugin);
    let out = fails_naming(&lab, needle);
    (lab, out)
}

/// [`limit_lab`] with the hostile plugin `plugin` in place.
fn attack_lab_of(plugin: &str) -> TempDir {
    let lab = limit_lab(&format!("{plugin}.wasm"));
    fs::copy(
        hostile(plugin),
        lab.path().join(format!("plugins/{plugin}.wasm")),
    )
    .unwrap();
    lab
}

/// Gives the lab's attack a time limit no loaded machine reaches, for attacks that are
/// about another limit and write much (a 2 s limit failed them on a busy machine).
fn unhurried(lab: &TempDir) {
    let path = lab.path().join("repx.toml");
    let toml = fs::read_to_string(&path).unwrap();
    fs::write(
        &path,
        toml.replacen(r#"time = "2s""#, r#"time = "120s""#, 1),
    )
    .unwrap();
}

#[track_caller]
fn fails_naming(lab: &TempDir, needle: &str) -> Output {
    let before = HostState::of(lab.path());
    let started = Instant::now();
    let out = repx_within(
        lab.path(),
        &["run", "--continue-on-failure", "-j", "2"],
        Duration::from_secs(60),
    );
    assert_untouched(lab.path(), &before);
    out.expect_code(1);
    let message = failure(&out, "attack");
    assert!(message.contains(needle), "{needle:?} not in:\n{message}");
    assert_eq!(out.ran(), ["bystander"], "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    out
}

#[test]
fn memory_bomb() {
    hits_limit("memory-bomb", "memory limit of 64M exceeded");
}

#[test]
fn memory_bomb_grow() {
    hits_limit("memory-bomb-grow", "memory limit of 64M exceeded");
}

#[test]
fn memory_bomb_core_module() {
    let lab = limit_lab("memory-bomb-p1.wasm");
    fs::copy(
        plugin_wasm_p1("memory-bomb"),
        lab.path().join("plugins/memory-bomb-p1.wasm"),
    )
    .unwrap();
    fails_naming(&lab, "memory limit of 64M exceeded");
}

/// A lab whose attack stage runs a plugin encoded by [`handmade`], `bytes`.
fn handmade_lab(bytes: &[u8]) -> TempDir {
    let lab = limit_lab("handmade.wasm");
    fs::write(lab.path().join("plugins/handmade.wasm"), bytes).unwrap();
    lab
}

#[test]
fn a_core_module_polling_its_stdin_gets_an_answer() {
    // A poll on a file goes to wasmtime-wasi past the deadline's own poll on clocks: it
    // trapped there ("missing required memory export") before it was called directly.
    let lab = handmade_lab(&handmade::poll_stdin());
    let out = repx(lab.path(), &["run", "attack"]);
    out.expect_code(0);
}

#[test]
fn many_memories_each_under_the_limit() {
    // 24 memories of 60 MiB: each under the 64M limit, 1.4G together. The job's memories
    // share its limit.
    let lab = handmade_lab(&handmade::many_memories(24, 60 << 20, false));
    fails_naming(&lab, "memory limit of 64M exceeded");
}

#[test]
fn a_few_memories_over_the_limit_together() {
    // 3 memories of 30 MiB, within the count a plugin may have: 90M together.
    let lab = handmade_lab(&handmade::many_memories(3, 30 << 20, false));
    fails_naming(&lab, "memory limit of 64M exceeded");
}

#[test]
fn memories_held_by_one_job_leave_the_pool_to_others() {
    // The attack holds 32 memories of a page each, spinning until its time limit: every
    // pooled memory of a run at -j 2, had one job been allowed that many. The bystander
    // starts while it holds them: it is impure, and scans its project's files first.
    let toml = format!(
        r#"
[stages.attack]
plugin = "plugins/handmade.wasm"
{LIMITS}

[stages.bystander]
plugin = "plugins/generate.wasm"
mode = "impure"
params = {{ n = 4 }}

[pipelines.attack]
stages = ["attack"]

[pipelines.bystander]
stages = ["bystander"]

[runs.main]
pipelines = ["attack", "bystander"]
"#
    );
    let lab = attack_lab(&toml, &["generate"]);
    let bytes = handmade::many_memories(32, handmade::PAGE, true);
    fs::write(lab.path().join("plugins/handmade.wasm"), bytes).unwrap();
    let filler = lab.path().join("filler");
    fs::create_dir(&filler).unwrap();
    for i in 0..5000 {
        fs::write(filler.join(i.to_string()), "").unwrap();
    }
    let out = repx_within(
        lab.path(),
        &["run", "--continue-on-failure", "-j", "2"],
        Duration::from_secs(60),
    );
    out.expect_code(1);
    assert_eq!(out.ran(), ["bystander"], "{}", out.stderr);
    let data = crate::common::read_output(lab.path(), "data.csv");
    assert_eq!(data.lines().count(), 5, "{data}");
    assert_eq!(data.lines().nth(1), Some("0,2"), "{data}");
    let message = failure(&out, "attack");
    assert!(
        message.contains("memory limit: a plugin may have at most 4 linear memories"),
        "{message}"
    );
}

#[test]
fn infinite_loop() {
    hits_limit("infinite-loop", "wall-time limit of 2s exceeded");
}

#[test]
fn infinite_loop_core_module() {
    let lab = limit_lab("infinite-loop-p1.wasm");
    fs::copy(
        plugin_wasm_p1("infinite-loop"),
        lab.path().join("plugins/infinite-loop-p1.wasm"),
    )
    .unwrap();
    fails_naming(&lab, "wall-time limit of 2s exceeded");
}

#[test]
fn sleep_forever() {
    // Blocked in the host, not running wasm: the sleep itself is cut at the deadline.
    hits_limit("sleep-forever", "wall-time limit of 2s exceeded");
}

/// `limit_lab` with the plugin file `plugin` as the attack, and `extra` lines in its
/// `[stages.attack]`.
fn attack_with(plugin: &Path, extra: &str) -> TempDir {
    let lab = limit_lab("attack.wasm");
    fs::copy(plugin, lab.path().join("plugins/attack.wasm")).unwrap();
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    let toml = toml.replacen(
        "[stages.attack]\n",
        &format!("[stages.attack]\n{extra}\n"),
        1,
    );
    fs::write(lab.path().join("repx.toml"), toml).unwrap();
    lab
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &Path) {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a plain system call on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
}

#[test]
fn sleep_forever_core_module() {
    // A wasip1 module's sleep is a `poll_oneoff` on a clock, in the host.
    let lab = attack_with(&plugin_wasm_p1("sleep-forever"), "");
    fails_naming(&lab, "wall-time limit of 2s exceeded");
}

#[test]
fn fifo_made_by_a_pure_tool() {
    // Opening a FIFO no one writes blocks in the kernel: refused before it is opened.
    let lab = attack_with(&hostile("mkfifo-then-open"), r#"tools = ["mkfifo"]"#);
    fails_naming(&lab, "refused to open `fifo`: it is a FIFO");
}

#[test]
fn fifo_in_the_project() {
    let lab = attack_with(&hostile("open-fifo"), r#"mode = "impure""#);
    mkfifo(&lab.path().join("pipe"));
    fails_naming(&lab, "refused to open `pipe`: it is a FIFO");
}

#[test]
fn fifo_in_the_project_core_module() {
    // A core module's open is not looked at first: the watchdog wakes it at the deadline.
    let lab = attack_with(&plugin_wasm_p1("open-fifo"), r#"mode = "impure""#);
    mkfifo(&lab.path().join("pipe"));
    fails_naming(&lab, "wall-time limit of 2s exceeded");
}

/// How long an interrupted run may take to exit: far below the day its plugin would
/// block, far above what stopping takes on a slow machine.
const STOP_BOUND: Duration = Duration::from_secs(20);

#[test]
fn ctrl_c_stops_plugins_blocked_in_the_host() {
    let cases = [
        ("sleep-forever", "pure", "asleep"),
        ("open-fifo", "impure", "opening"),
    ];
    for (plugin, mode, mark) in cases {
        let toml = format!(
            r#"
[stages.slow]
plugin = "plugins/slow.wasm"
mode = "{mode}"

[pipelines.main]
stages = ["slow"]

[runs.main]
pipelines = ["main"]
"#
        );
        let lab = attack_lab(&toml, &[]);
        fs::copy(plugin_wasm_p1(plugin), lab.path().join("plugins/slow.wasm")).unwrap();
        mkfifo(&lab.path().join("pipe"));
        let mut run = crate::common::repx_command(lab.path(), &["run"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Blocked once it left its mark in its staged /out (plugins compile first).
        let marked = Instant::now();
        while !staged(&lab.path().join(".repx/tmp"), mark) {
            if marked.elapsed() > Duration::from_secs(300) || run.try_wait().unwrap().is_some() {
                let _ = run.kill();
                panic!("{plugin}: no /out/{mark} while it ran");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = libc::pid_t::try_from(run.id()).unwrap();
        // SAFETY: a plain system call; the child is not reaped yet, so `pid` is still it.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        let signalled = Instant::now();
        let status = loop {
            if let Some(status) = run.try_wait().unwrap() {
                break status;
            }
            if signalled.elapsed() > STOP_BOUND {
                let _ = run.kill();
                let _ = run.wait();
                panic!("{plugin} ({mode}): still running {STOP_BOUND:?} after Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(130), "{plugin} ({mode})");
        assert!(job_dirs(lab.path()).is_empty(), "{plugin} ({mode})");
    }
}

/// Whether a file named `name` lies in an `out` directory under `dir`.
fn staged(dir: &Path, name: &str) -> bool {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            let path = entry.path();
            (path.ends_with(format!("out/{name}")) && !path.is_dir())
                || (entry.file_type().is_ok_and(|t| t.is_dir()) && staged(&path, name))
        })
}

#[test]
fn deep_recursion() {
    // Frames in linear memory: Rust's shadow stack runs off the bottom of memory.
    hits_limit("deep-recursion", "out of bounds memory access");
}

#[test]
fn deep_recursion_small_frames() {
    // Frames on the wasm stack only: the engine's stack guard stops it.
    let lab = limit_lab("deep-recursion.wasm");
    fs::copy(
        hostile("deep-recursion"),
        lab.path().join("plugins/deep-recursion.wasm"),
    )
    .unwrap();
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    let toml = toml.replacen(
        "[stages.attack]\n",
        "[stages.attack]\nparams = { frame = \"small\" }\n",
        1,
    );
    fs::write(lab.path().join("repx.toml"), toml).unwrap();
    fails_naming(&lab, "call stack exhausted");
}

#[test]
fn exhaust_fds() {
    let (lab, _) = hits_limit("exhaust-fds", "open-files limit of 64 exceeded");
    // The runner itself still had descriptors: the bystander committed its output.
    assert_eq!(job_dirs(lab.path()).len(), 1);
}

#[test]
fn exhaust_fds_core_module() {
    let lab = limit_lab("exhaust-fds-p1.wasm");
    fs::copy(
        plugin_wasm_p1("exhaust-fds"),
        lab.path().join("plugins/exhaust-fds-p1.wasm"),
    )
    .unwrap();
    fails_naming(&lab, "open-files limit of 64 exceeded");
}

/// A lab whose attack stage runs `fill-out` (the component, or the core module when
/// `core`) with `params`, against the 1M output limit.
fn fill_lab(params: &str, core: bool) -> TempDir {
    let lab = limit_lab("fill-out.wasm");
    let plugin = if core {
        plugin_wasm_p1("fill-out")
    } else {
        hostile("fill-out")
    };
    fs::copy(plugin, lab.path().join("plugins/fill-out.wasm")).unwrap();
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    let toml = toml.replacen(
        "[stages.attack]\n",
        &format!("[stages.attack]\nparams = {{ {params} }}\n"),
        1,
    );
    fs::write(lab.path().join("repx.toml"), toml).unwrap();
    lab
}

/// Runs `fill-out` with `params`, 1000 times the limit: the job fails naming the limit and
/// leaves nothing behind. Returns how many MiB the plugin says it wrote before it was
/// stopped (its `wrote <n>M` lines, kept in the failed job's stderr).
#[track_caller]
fn fills_past_the_limit(params: &str, core: bool) -> u64 {
    let lab = fill_lab(&format!(r#"megabytes = "1000", {params}"#), core);
    let out = fails_naming(&lab, "output limit of 1M exceeded");
    assert!(out.stderr.contains("in /out"), "{}", out.stderr);
    // Nothing of it was committed, and nothing is left over in the store's scratch space.
    let leftovers: Vec<_> = fs::read_dir(lab.path().join(".repx/tmp"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with("inputs-"))
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let failed = lab.path().join(".repx/failed");
    assert!(walk_size(&failed) < 64 * 1024, "failed/ holds too much");
    let logs: Vec<_> = fs::read_dir(&failed).unwrap().flatten().collect();
    assert_eq!(logs.len(), 1);
    let stderr = fs::read_to_string(logs[0].path().join("stderr")).unwrap_or_default();
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("wrote ")?.strip_suffix('M')?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn fill_out() {
    // Stopped as it crosses the limit: it never finishes its second MiB.
    assert!(fills_past_the_limit(r#"how = "stream""#, false) < 2);
}

#[test]
fn fill_out_with_pwrite() {
    assert!(fills_past_the_limit(r#"how = "pwrite""#, false) < 2);
}

#[test]
fn fill_scratch() {
    // /tmp is the host's disk too: it shares the output limit.
    assert!(fills_past_the_limit(r#"dir = "/tmp""#, false) < 2);
}

#[test]
fn fill_out_core_module() {
    // A core module's writes are not counted one by one; a measurement at the next epoch
    // tick stops it: within a few ticks of writing, of the 1000 MiB it tries.
    assert!(fills_past_the_limit(r#"how = "stream""#, true) < 64);
}

#[test]
fn overwriting_within_the_limit_is_no_attack() {
    // 50 times the limit written, but into one file of 1 MiB rewritten from the start:
    // what the job holds (that file, and its entry) stays under the limit of 2M, and the
    // job succeeds.
    let lab = fill_lab(r#"megabytes = "100", overwrite = "yes""#, false);
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    fs::write(
        lab.path().join("repx.toml"),
        toml.replacen(r#"output = "1M""#, r#"output = "2M""#, 1),
    )
    .unwrap();
    unhurried(&lab);
    let out = repx_within(lab.path(), &["run"], Duration::from_secs(60));
    out.expect_code(0);
    let job = crate::common::job_with_output(lab.path(), "fill-0.bin");
    assert_eq!(walk_size(&job.join("out")), 1 << 20);
}

#[test]
fn flood_entries() {
    // 1000 each of directories, links with 4000-byte targets and empty files: not a byte in
    // a file, but disk, and lines of the manifest. Each entry counts.
    let (lab, _) = hits_limit("flood-entries", "output limit of 1M exceeded");
    // Nothing of it was committed: the bystander's output alone.
    assert_eq!(job_dirs(lab.path()).len(), 1);
    let failed = lab.path().join(".repx/failed");
    assert!(walk_size(&failed) < 64 * 1024, "failed/ holds too much");
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            walk_size(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[test]
fn flood_stdout() {
    // Output past the log limit is dropped, not refused: the job succeeds with a bounded
    // log that says what was cut.
    let lab = attack_lab_of("flood-stdout");
    unhurried(&lab);
    let before = HostState::of(lab.path());
    let out = repx_within(lab.path(), &["run"], Duration::from_secs(60));
    assert_untouched(lab.path(), &before);
    out.expect_code(0);
    assert!(
        out.stderr.len() < 4096,
        "{} bytes of stderr",
        out.stderr.len()
    );
    let job = crate::common::job_with_output(lab.path(), "done.txt");
    let log = fs::read_to_string(job.join("stdout")).unwrap();
    assert!(
        log.len() <= 64 * 1024 + 200,
        "stdout log of {} bytes",
        log.len()
    );
    assert!(
        log.contains("[repx: log limit of 64K reached;"),
        "{}",
        &log[log.len() - 200..]
    );
    assert!(!log.contains("THE-END-OF-THE-FLOOD"));
}

#[test]
fn flood_stderr() {
    // (A component's exit status is 0 or 1: WASI's `exit` takes a result.)
    let lab = attack_lab_of("flood-stderr");
    unhurried(&lab);
    let out = fails_naming(&lab, "exit status 1");
    // The failure quotes a few lines, the log keeps at most the limit.
    assert!(
        out.stderr.len() < 4096,
        "{} bytes of stderr",
        out.stderr.len()
    );
    assert!(
        failure(&out, "attack").contains("log limit of 64K reached"),
        "{}",
        out.stderr
    );
    let failed: Vec<_> = fs::read_dir(lab.path().join(".repx/failed"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(failed.len(), 1);
    let log = fs::read(failed[0].path().join("stderr")).unwrap();
    assert!(
        log.len() <= 64 * 1024 + 200,
        "stderr log of {} bytes",
        log.len()
    );
}

// ---------------------------------------------------------------------------------------
// Plugins refused before anything runs

/// Runs the lab whose `attack` plugin file holds `bytes`: refused as an invalid lab (exit
/// 2) before any job (the bystander included) ran, with a message naming the stage, the
/// plugin and each of `needles`, and no bytes of the file.
#[track_caller]
fn refused_before_running(bytes: &[u8], needles: &[&str]) {
    let lab = limit_lab("attack.wasm");
    fs::write(lab.path().join("plugins/attack.wasm"), bytes).unwrap();
    let before = HostState::of(lab.path());
    let out = repx(lab.path(), &["run", "--continue-on-failure"]);
    assert_untouched(lab.path(), &before);
    out.expect_code(2).expect_stderr(&[
        "stage `attack`: plugin ",
        "attack.wasm is not a valid WASI plugin: ",
        "fix `stages.attack.plugin` in ",
    ]);
    out.expect_stderr(needles);
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "the refusal is one line, without a dump of the file:\n{}",
        out.stderr
    );
    assert!(out.ran().is_empty(), "{}", out.stderr);
    assert!(job_dirs(lab.path()).is_empty(), "a job ran");
    let failed = fs::read_dir(lab.path().join(".repx/failed"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(failed, 0, "a job was attempted");
}

/// A core module: `(module (import "evil" "steal" (func)) (func (export "_start") call 0))`.
const CORE_IMPORTING_EVIL: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: one type, () -> ()
    0x02, 0x0e, 0x01, // import section: one import
    0x04, b'e', b'v', b'i', b'l', // module "evil"
    0x05, b's', b't', b'e', b'a', b'l', // name "steal"
    0x00, 0x00, // a function of type 0
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x07, 0x0a, 0x01, // export section: one export
    0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x01, // "_start", function 1
    0x0a, 0x06, 0x01, 0x04, 0x00, 0x10, 0x00, 0x0b, // code: call 0, end
];

#[test]
fn malformed_wasm() {
    refused_before_running(b"", &["the file is empty"]);
    refused_before_running(
        b"#!/bin/sh\ntouch PWNED-malformed\n",
        &["it is not WebAssembly"],
    );
    refused_before_running(
        &[0x00, 0x61, 0x73, 0x6d, 0xff, 0xff, 0x00, 0x00],
        &["unknown binary version"],
    );
    let mut random = vec![0u8; 4096];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for byte in random.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    refused_before_running(&random, &["it is not WebAssembly"]);
    // A real component, cut in half.
    let whole = fs::read(hostile("infinite-loop")).unwrap();
    refused_before_running(&whole[..whole.len() / 2], &["out of bounds"]);
    // A valid module that is not a command.
    refused_before_running(
        &[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
        &["no `_start` export"],
    );
}

#[test]
fn malformed_wasm_ad_hoc() {
    // `repx run --plugin` refuses it the same way; the plugin file is its whole lab.
    let dir = TempDir::new();
    fs::write(dir.path().join("attack.wasm"), b"\x7fELF\x02\x01\x01").unwrap();
    let out = repx(dir.path(), &["run", "--plugin", "attack.wasm"]);
    out.expect_code(2).expect_stderr(&[
        "stage `attack`: plugin ",
        "attack.wasm is not a valid WASI plugin: it is not WebAssembly",
        "; rebuild it",
    ]);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(job_dirs(dir.path()).is_empty(), "a job ran");
}

#[test]
fn import_unknown_interface() {
    let bytes = fs::read(hostile("import-unknown-interface")).unwrap();
    refused_before_running(&bytes, &["it imports `evil:host/escape@0.1.0#steal`"]);
}

#[test]
fn import_unknown_function() {
    let bytes = fs::read(hostile("import-unknown-function")).unwrap();
    refused_before_running(
        &bytes,
        &[
            "it imports `repx:stage/host@",
            "#escalate`, which repx does not provide",
        ],
    );
}

#[test]
fn import_unknown_module() {
    refused_before_running(CORE_IMPORTING_EVIL, &["it imports `evil::steal`"]);
}

#[test]
fn plugin_changed_after_pinning() {
    let plugin = hostile("infinite-loop");
    let pinned = repx::wasm::sha256_hex(&fs::read(&plugin).unwrap());
    let toml = format!(
        r#"
[stages.attack]
plugin = "plugins/attack.wasm"
sha256 = "{pinned}"
{LIMITS}

[stages.bystander]
plugin = "plugins/generate.wasm"

[pipelines.main]
stages = ["attack", "bystander"]

[runs.main]
pipelines = ["main"]
"#
    );
    let lab = attack_lab(&toml, &["generate"]);
    // The pinned plugin is swapped for another one, as an attacker with write access to
    // the plugin file (not to the lab) would.
    let swapped = fs::read(hostile("memory-bomb")).unwrap();
    let actual = repx::wasm::sha256_hex(&swapped);
    fs::write(lab.path().join("plugins/attack.wasm"), &swapped).unwrap();
    let before = HostState::of(lab.path());
    let out = repx(lab.path(), &["run"]);
    assert_untouched(lab.path(), &before);
    out.expect_code(2).expect_stderr(&[
        "does not match its pin",
        &pinned,
        &actual,
        "no job was run",
    ]);
    assert!(job_dirs(lab.path()).is_empty());
    assert!(
        !lab.path().join(".repx/records.jsonl").exists() || {
            fs::read_to_string(lab.path().join(".repx/records.jsonl"))
                .unwrap()
                .is_empty()
        }
    );
}

#[test]
fn unpinned_plugin_outside_the_lab() {
    // A plugin file outside the lab directory is trusted only by its digest.
    let elsewhere = TempDir::new();
    let outside = elsewhere.path().join("outside.wasm");
    fs::copy(hostile("infinite-loop"), &outside).unwrap();
    let toml = format!(
        r#"
[stages.attack]
plugin = "{}"
{LIMITS}

[pipelines.main]
stages = ["attack"]

[runs.main]
pipelines = ["main"]
"#,
        outside.display()
    );
    let lab = attack_lab(&toml, &[]);
    let digest = repx::wasm::sha256_hex(&fs::read(&outside).unwrap());
    let out = repx(lab.path(), &["run"]);
    out.expect_code(2)
        .expect_stderr(&["outside the project directory", "must be pinned", &digest]);
    assert!(job_dirs(lab.path()).is_empty());
}
