//! Attacks through `run-tool`, the host function that runs external commands: tools that
//! were not granted, working directories and stdout files outside the given directories
//! (by path or through links the plugin made), shell metacharacters in arguments, a
//! spoofed `PATH`, programs linked into an input, tools that outlive their call or their
//! time, and special files left in `/out`.
//!
//! Most use `test-tool` (one request from its parameters: `tool refused: …` on stderr and
//! exit 1 when the host refuses; `/out/status.txt` when it ran the tool).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use crate::common::{TempDir, read_output, repx};
use crate::{
    HostState, LIMITS, SENTINEL, assert_untouched, attack_lab, failure, output_of, run_attack,
};

/// A lab whose stage `t` runs `test-tool` with `params`, granted `tools`, in `mode`.
fn tool_lab(params: &str, tools: &[&str], mode: &str) -> TempDir {
    let tools: Vec<String> = tools.iter().map(|t| format!("{t:?}")).collect();
    let toml = format!(
        r#"
[stages.t]
plugin = "plugins/test-tool.wasm"
mode = "{mode}"
inputs = {{ data = "path:data" }}
tools = [{}]
params = {{ {params} }}
{LIMITS}

[pipelines.main]
stages = ["t"]

[runs.main]
pipelines = ["main"]
"#,
        tools.join(", ")
    );
    attack_lab(&toml, &["test-tool"])
}

/// Runs `test-tool` with `params` and expects the host to refuse with `needles`.
#[track_caller]
fn refused(params: &str, tools: &[&str], mode: &str, needles: &[&str]) {
    let lab = tool_lab(params, tools, mode);
    let out = run_attack(&lab, &[]);
    out.expect_code(1);
    let message = failure(&out, "t");
    assert!(message.contains("tool refused: "), "{message}");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in:\n{message}");
    }
}

#[test]
fn tool_ungranted() {
    for mode in ["pure", "impure"] {
        refused(
            r#"tool = "touch", args = ["PWNED-tool-ungranted"], cwd = "/out""#,
            &[],
            mode,
            &[
                "no grant for tool `touch`",
                "add it to `tools` in [stages.t]",
            ],
        );
    }
    // Another tool's grant does not cover it.
    refused(
        r#"tool = "sh", args = ["-c", "touch PWNED-tool-ungranted"], cwd = "/out""#,
        &["touch"],
        "pure",
        &["no grant for tool `sh`"],
    );
}

#[test]
fn tool_by_host_path() {
    // A host path is no grant, however it is spelled; only executables inside inputs are.
    for tool in [
        "/usr/bin/touch",
        "/bin/sh",
        "/out/../usr/bin/touch",
        "/in/data/../../usr/bin/touch",
        "../usr/bin/touch",
        "/work/../usr/bin/touch",
    ] {
        refused(
            &format!(r#"tool = "{tool}", args = ["PWNED-tool-by-path"], cwd = "/out""#),
            &["echo"],
            "pure",
            &["no grant for tool"],
        );
    }
}

#[test]
fn tool_cwd_outside() {
    for cwd in [
        "/",
        "/etc",
        "/in/../..",
        "/out/../..",
        "relative",
        "/work",
        "/proc/self",
    ] {
        refused(
            &format!(r#"tool = "touch", args = ["PWNED-tool-cwd"], cwd = "{cwd}""#),
            &["touch"],
            "pure",
            &[&format!("tool cwd `{cwd}` is outside the directories")],
        );
    }
}

#[test]
fn tool_stdout_outside() {
    for file in [
        "/in/data/file.txt",
        "/etc/passwd",
        "/out/../sentinel.txt",
        "/in",
        "/out",
        "relative.txt",
    ] {
        refused(
            &format!(r#"tool = "echo", args = ["PWNED"], cwd = "/out", stdout_file = "{file}""#),
            &["echo"],
            "pure",
            &[&format!("stdout file `{file}`")],
        );
    }
}

#[test]
fn tool_path_spoofing() {
    // The plugin cannot point the tool's program search or its loader elsewhere.
    for (key, value) in [
        ("PATH", "/in/data:/tmp"),
        ("LD_PRELOAD", "/in/data/evil.so"),
        ("LD_LIBRARY_PATH", "/in/data"),
    ] {
        refused(
            &format!(r#"tool = "echo", args = ["hi"], env = {{ {key} = "{value}" }}"#),
            &["echo"],
            "pure",
            &[&format!("a tool's `{key}` is set by the host")],
        );
    }
}

#[test]
fn tool_shell_metacharacters() {
    // Arguments are a vector: no shell sees them, in a sandbox or on the host. `touch`
    // creates files with exactly these names, and nothing else.
    let args = [
        "$(touch PWNED-subst)",
        "`touch PWNED-backtick`",
        "; touch PWNED-semicolon",
        "| touch PWNED-pipe",
        "&& touch PWNED-and",
        "> PWNED-redirect",
        "*",
        "a\nb",
    ];
    let list: Vec<String> = args
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    for mode in ["pure", "impure"] {
        let lab = tool_lab(
            &format!(
                r#"tool = "touch", args = [{}], cwd = "/out""#,
                list.join(", ")
            ),
            &["touch"],
            mode,
        );
        let out = run_attack(&lab, &[]);
        out.expect_code(0);
        let status = read_output(lab.path(), "status.txt");
        assert_eq!(status.trim(), "0", "{mode}");
        let out_dir = output_of(lab.path(), "t");
        let mut names: Vec<String> = fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut expected: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        expected.push("status.txt".into());
        expected.sort();
        assert_eq!(names, expected, "{mode}");
    }
}

#[test]
fn tool_through_own_links() {
    // The plugin makes links in /out that lead out of it, then asks for tools to work
    // through them. The host must judge where a path leads, not how it is spelled.
    for mode in ["pure", "impure"] {
        let toml = format!(
            r#"
[stages.t]
plugin = "plugins/tool-through-own-links.wasm"
mode = "{mode}"
tools = ["touch", "echo"]
params = {{ host_dir = "{{lab}}" }}
{LIMITS}

[pipelines.main]
stages = ["t"]

[runs.main]
pipelines = ["main"]
"#
        );
        let lab = attack_lab(&toml, &["tool-through-own-links"]);
        let out = run_attack(&lab, &[]);
        out.expect_code(0);
        let result = fs::read_to_string(output_of(lab.path(), "t").join("result.txt")).unwrap();
        // What ran, ran where it could do no harm (checked by run_attack); writing the
        // sentinel through a link is refused outright.
        for request in [
            "touch with cwd /out/esc-root",
            "touch with cwd /out/esc-lab",
            "touch with cwd /out/esc-up",
            "echo with stdout to /out/esc-sentinel",
            "echo with stdout to /out/esc-lab/PWNED-tool-stdout",
        ] {
            assert!(
                result.contains(&format!("refused {request}")),
                "{mode}: {request} not refused:\n{result}"
            );
        }
    }
}

#[test]
fn tool_planted_link() {
    // An upstream job leaves `sh -> /bin/sh` in its output. "An executable inside one of
    // the stage's inputs" needs no grant; a link to a host program is not one.
    for mode in ["pure", "impure"] {
        for tool in ["/in/up/sh", "/in/up/bin/sh", "/in/up/touch"] {
            let toml = format!(
                r#"
[stages.up]
plugin = "plugins/plant-tool-link.wasm"

[stages.t]
plugin = "plugins/test-tool.wasm"
mode = "{mode}"
inputs = {{ up = "up" }}
params = {{ tool = "{tool}", args = ["-c", "touch /out/PWNED-planted-link"], cwd = "/out" }}
{LIMITS}

[pipelines.main]
stages = ["up", "t"]

[runs.main]
pipelines = ["main"]
"#
            );
            let lab = attack_lab(&toml, &["plant-tool-link", "test-tool"]);
            let out = run_attack(&lab, &[]);
            out.expect_code(1);
            let message = failure(&out, "t");
            assert!(
                message.contains("tool refused: ") && message.contains("outside"),
                "{mode} {tool}: {message}"
            );
        }
    }
}

#[test]
fn tool_background_process() {
    // A tool that leaves a process behind to write into /out after the job's output is
    // committed. In a pure job the sandbox dies with the tool.
    let lab = tool_lab(
        r#"tool = "sh", args = ["-c", "(sleep 1; echo late > /out/late.txt) & echo started"], cwd = "/out""#,
        &["sh"],
        "pure",
    );
    let before = HostState::of(lab.path());
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    std::thread::sleep(Duration::from_millis(1500));
    assert_untouched(lab.path(), &before);
    let out_dir = output_of(lab.path(), "t");
    assert!(
        !out_dir.join("late.txt").exists(),
        "the background process wrote"
    );
}

#[test]
fn tool_past_the_time_limit() {
    // The wall-time limit covers the tools a plugin runs.
    let lab = tool_lab(
        r#"tool = "sleep", args = ["600"], cwd = "/out""#,
        &["sleep"],
        "pure",
    );
    let started = Instant::now();
    let out = run_attack(&lab, &[]);
    out.expect_code(1);
    assert!(started.elapsed() < Duration::from_secs(30));
    let message = failure(&out, "t");
    assert!(message.contains("wall-time limit"), "{message}");
}

#[test]
fn tool_special_file_in_out() {
    // WASI cannot make a FIFO, but a tool can; the store keeps regular files, directories
    // and links only.
    let lab = tool_lab(
        r#"tool = "mkfifo", args = ["/out/fifo"], cwd = "/out""#,
        &["mkfifo"],
        "pure",
    );
    let out = run_attack(&lab, &[]);
    out.expect_code(1);
    let message = failure(&out, "t");
    assert!(message.contains("special files"), "{message}");
    assert!(crate::common::job_dirs(lab.path()).is_empty());
}

#[test]
fn tool_hard_link_into_out() {
    // An impure job's tools run on the host, where one may hard-link a project file into
    // /out. Sealing the output makes its files read-only; through a shared inode that would
    // chmod the project file. The store keeps a copy of its own instead.
    let lab = tool_lab(
        r#"tool = "ln", args = ["{lab}/sentinel.txt", "linked.txt"], cwd = "/out""#,
        &["ln"],
        "impure",
    );
    let sentinel = lab.path().join("sentinel.txt");
    let mode = fs::metadata(&sentinel).unwrap().permissions().mode();
    let out = run_attack(&lab, &[]);
    out.expect_code(0);
    let after = fs::metadata(&sentinel).unwrap();
    assert_eq!(
        after.permissions().mode(),
        mode,
        "the project file's mode changed"
    );
    assert_eq!(after.nlink(), 1, "the store still shares the project file");
    let linked = output_of(lab.path(), "t").join("linked.txt");
    assert_eq!(fs::read_to_string(&linked).unwrap(), SENTINEL);
    assert!(fs::metadata(&linked).unwrap().permissions().readonly());
}

#[test]
fn tool_ungranted_program_from_an_input() {
    // In impure mode `path:` inputs are the live project, which the plugin may write through
    // /work: a program there was granted by no one. Whatever the mode, it runs in the
    // sandbox, where the lab's host path (and anything else of the host's) is out of reach.
    for mode in ["pure", "impure"] {
        let lab = tool_lab(r#"tool = "/in/data/x", cwd = "/out""#, &[], mode);
        let program = lab.path().join("data/x");
        let host_file = lab.path().join("PWNED-ran-on-host");
        fs::write(
            &program,
            format!(
                "#!/bin/sh\n/usr/bin/touch {}\n/usr/bin/id -u > /out/uid.txt\n",
                host_file.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
        let out = run_attack(&lab, &[]);
        out.expect_code(0);
        assert!(!host_file.exists(), "{mode}: the program ran on the host");
        // It did run, in the sandbox: it wrote /out, and the job's log says where it ran.
        let out_dir = output_of(lab.path(), "t");
        let uid = fs::read_to_string(out_dir.join("uid.txt")).unwrap();
        assert!(uid.trim().parse::<u32>().is_ok(), "{mode}: {uid:?}");
        let log = fs::read_to_string(out_dir.with_file_name("host.log")).unwrap();
        assert!(
            log.contains("`/in/data/x` is no granted tool: it runs in the sandbox")
                && log.contains("No such file or directory"),
            "{mode}:\n{log}"
        );
    }
}
