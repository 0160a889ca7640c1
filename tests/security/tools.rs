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
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Output, TempDir, read_output, repx};
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

/// What the pure-mode tool of [`pure_tool_lab`] tries: read its own credentials, make each
/// read-only directory it sees writable, then write an upstream job's committed output, the
/// `path:` snapshot, a file beside itself, `/usr` and a global kernel setting, make a disk
/// device, and take capabilities back in a user namespace of its own. Everything it
/// managed is an `ESCAPED` line in `/out/attack.txt`. It also leaves a set-user-id copy of
/// the shell in `/out`: on the host that file is the running user's (root's, in a root
/// run), so no other user may reach it while it lies in staging, and none once committed.
const PURE_TOOL_ATTACK: &str = r#"#!/bin/sh
exec > /out/attack.txt 2>&1
PATH=/usr/sbin:/usr/bin:/sbin:/bin
grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status
here=$(dirname "$0")
for dir in /in/up /in/data "$here" /usr /proc/sys /; do
    mount -o remount,rw,bind "$dir" && echo "ESCAPED remount $dir"
done
echo PWNED > /in/up/data.csv && echo "ESCAPED upstream output"
touch /in/data/PWNED-tool-snapshot && echo "ESCAPED snapshot"
touch "$here/PWNED-tool-beside" && echo "ESCAPED beside the tool"
touch /usr/PWNED-tool-usr && echo "ESCAPED /usr"
echo 1 > /proc/sys/vm/drop_caches && echo "ESCAPED /proc/sys"
mknod /tmp/disk b 8 0 && echo "ESCAPED mknod"
unshare --user --map-root-user true && echo "ESCAPED user namespace"
cp /bin/sh /out/suid && chmod 4755 /out/suid
exit 0
"#;

/// A lab whose pure stage `t` runs, through `test-tool`, the tool `tools/attack` kept in
/// the lab (a granted tool by its host path), with the input `up` (a committed upstream
/// output) and, with `snapshot`, `data` (a `path:` snapshot).
fn pure_tool_lab(snapshot: bool) -> TempDir {
    let inputs = if snapshot {
        r#"{ data = "path:data", up = "up" }"#
    } else {
        r#"{ up = "up" }"#
    };
    let toml = format!(
        r#"
[stages.up]
plugin = "plugins/generate.wasm"
params = {{ n = 5 }}

[stages.t]
plugin = "plugins/test-tool.wasm"
inputs = {inputs}
tools = ["{{lab}}/tools/attack"]
params = {{ tool = "{{lab}}/tools/attack", cwd = "/out" }}
{LIMITS}

[pipelines.main]
stages = ["up", "t"]

[runs.main]
pipelines = ["main"]
"#
    );
    let lab = attack_lab(&toml, &["generate", "test-tool"]);
    let tool = lab.path().join("tools/attack");
    fs::create_dir_all(tool.parent().unwrap()).unwrap();
    fs::write(&tool, PURE_TOOL_ATTACK).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    lab
}

/// Checks what [`PURE_TOOL_ATTACK`] reported: it ran as `nobody` in its namespace, without
/// any capability and with `no_new_privs`, and nothing escaped; and that `/usr` holds
/// nothing of it. `who` names the user repx ran as.
#[track_caller]
fn assert_pure_tool_held(lab: &TempDir, out: &Output, who: &str) {
    let usr = Path::new("/usr/PWNED-tool-usr");
    let wrote_usr = usr.exists();
    let _ = fs::remove_file(usr);
    out.expect_code(0);
    assert!(!wrote_usr, "{who}: the tool wrote /usr");
    let report = fs::read_to_string(output_of(lab.path(), "t").join("attack.txt")).unwrap();
    let field = |name: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("{who}: no {name} in:\n{report}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(field("Uid"), ["65534"; 4], "{who}:\n{report}");
    assert_eq!(field("Gid"), ["65534"; 4], "{who}:\n{report}");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(caps), ["0000000000000000"], "{who}:\n{report}");
    }
    assert_eq!(field("NoNewPrivs"), ["1"], "{who}:\n{report}");
    let escapes: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("ESCAPED"))
        .collect();
    assert!(escapes.is_empty(), "{who}: {escapes:?}\n{report}");
    let out_dir = output_of(lab.path(), "t");
    let suid = fs::symlink_metadata(out_dir.join("suid")).unwrap();
    assert_eq!(
        suid.permissions().mode() & 0o7000,
        0,
        "{who}: committed set-user-id"
    );
    let tmp = out_dir.ancestors().nth(3).unwrap().join("tmp");
    let mode = fs::metadata(&tmp).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o700,
        "{who}: the store's tmp/ is open to other users"
    );
}

#[test]
fn tool_pure_unprivileged_as_root() {
    // Run as root (as CI runs), bubblewrap alone leaves a tool root with nearly every
    // capability: it could remount any read-only bind writable. A pure tool runs as
    // `nobody` in a user namespace, without capabilities.
    let lab = pure_tool_lab(true);
    let out = run_attack(&lab, &[]);
    assert_pure_tool_held(&lab, &out, "root");
}

#[test]
fn tool_pure_unprivileged_as_a_user() {
    // The same attack with repx run by an unprivileged user, from a copy of the binary that
    // user can read (the build may lie under root's 0700 home).
    let user = User::unprivileged();
    let bin = TempDir::new();
    fs::set_permissions(bin.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let repx_copy = bin.path().join("repx");
    fs::copy(env!("CARGO_BIN_EXE_repx"), &repx_copy).unwrap();
    fs::set_permissions(&repx_copy, fs::Permissions::from_mode(0o755)).unwrap();
    let cache = bin.path().join("cache");
    fs::create_dir(&cache).unwrap();
    user.give(&cache);
    // No `path:` input: a user's pure run cannot snapshot one yet (its sealed snapshot
    // cannot be renamed into place without write permission on it).
    let lab = pure_tool_lab(false);
    user.give(lab.path());
    let before = HostState::of(lab.path());
    // The default store goes where the tests put it, which the user makes.
    let stores = crate::common::cache_home(lab.path());
    let out = user.run(
        &repx_copy,
        lab.path(),
        &["run", "--continue-on-failure"],
        &[
            ("REPX_CACHE_DIR", cache.to_str().unwrap()),
            ("XDG_CACHE_HOME", stores.to_str().unwrap()),
        ],
    );
    assert_untouched(lab.path(), &before);
    assert_pure_tool_held(&lab, &out, &user.name);
}

/// A user without privileges to run repx as: when the tests run as root (as CI does), the
/// system user `repx-test`, made if missing; otherwise the user running them.
struct User {
    name: String,
    /// `None`: the tests' own user.
    ids: Option<(String, String)>,
}

impl User {
    fn unprivileged() -> User {
        // SAFETY: a plain system call without arguments.
        if unsafe { libc::geteuid() } != 0 {
            return User {
                name: "the tests' user".into(),
                ids: None,
            };
        }
        const NAME: &str = "repx-test";
        let id = |flag: &str| {
            Command::new("id")
                .args([flag, NAME])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        if id("-u").is_none() {
            // Exit status 9: made meanwhile by another test.
            let made = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    NAME,
                ])
                .status()
                .expect("running useradd");
            assert!(matches!(made.code(), Some(0 | 9)), "useradd {NAME}: {made}");
        }
        User {
            name: NAME.into(),
            ids: Some((id("-u").unwrap(), id("-g").unwrap())),
        }
    }

    /// Makes `path` and everything under it the user's.
    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = &self.ids {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(path)
                .status()
                .unwrap();
            assert!(status.success(), "chown {}", path.display());
        }
    }

    /// Runs `repx` (at `bin`) as the user in `dir`, with only `PATH` and `env` set.
    fn run(&self, bin: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = match &self.ids {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", uid, "--regid", gid, "--clear-groups", "--"]);
                c.arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let output = command
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(env.iter().copied())
            .output()
            .expect("running repx");
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A tool that leaves two processes behind, each in a session of its own and one also
/// orphaned by a double fork, which write `late-*` files into `/out` (its working
/// directory) and, where they can (impure mode), `PWNED-late-*` files into the project
/// after `delay` seconds; then runs `then`.
fn leaves_children(mode: &str, delay: u32, then: &str) -> TempDir {
    let write = |name: &str| {
        format!("sleep {delay}; (echo late > {{lab}}/PWNED-late-{name}); echo late > late-{name}")
    };
    let script = format!(
        "setsid sh -c '{}' & (setsid sh -c '{}' &) ; {then}",
        write("setsid"),
        write("double-fork"),
    );
    tool_lab(
        &format!(
            "tool = \"sh\", args = [\"-c\", {}], cwd = \"/out\"",
            serde_json::to_string(&script).unwrap()
        ),
        &["sh"],
        mode,
    )
}

/// Asserts that no `late-*` file appeared, in the job's output or the project, by the time
/// the children's writes were due (with a margin).
#[track_caller]
fn assert_no_late_writes(lab: &TempDir, delay: u32) {
    std::thread::sleep(Duration::from_secs(u64::from(delay) + 2));
    let mut late = crate::pwned_files(lab.path());
    for dir in crate::common::job_dirs(lab.path()) {
        for entry in fs::read_dir(dir.join("out"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with("late-") {
                late.push(entry.path());
            }
        }
    }
    assert_eq!(
        late,
        Vec::<std::path::PathBuf>::new(),
        "written after the job ended"
    );
}

#[test]
fn tool_children_end_with_it() {
    // A tool's children that left its process group and session, or lost their parent,
    // would go on writing after the job was committed: on the host the tool's reaper, in
    // the sandbox its pid namespace, ends them when the tool returns.
    for mode in ["pure", "impure"] {
        let lab = leaves_children(mode, 1, "echo started");
        let before = HostState::of(lab.path());
        let out = repx(lab.path(), &["run"]);
        out.expect_code(0);
        assert_no_late_writes(&lab, 1);
        assert_untouched(lab.path(), &before);
        assert_eq!(read_output(lab.path(), "status.txt").trim(), "0", "{mode}");
    }
}

#[test]
fn tool_children_end_at_the_time_limit() {
    // The same children of a tool killed at the job's wall-time limit (2 s).
    for mode in ["pure", "impure"] {
        let lab = leaves_children(mode, 3, "sleep 600");
        let out = repx(lab.path(), &["run"]);
        out.expect_code(1);
        let message = failure(&out, "t");
        assert!(message.contains("wall-time limit"), "{mode}: {message}");
        assert_no_late_writes(&lab, 3);
    }
}

#[test]
fn tool_kills_its_reaper() {
    // A host tool that kills its reaper leaves its `setsid` child to no one, which writes
    // into the job's output after it was committed. The job fails and nothing is kept.
    let lab = tool_lab(
        r#"tool = "sh", args = ["-c", "(setsid sh -c 'sleep 3; echo late > late-in-out' >/dev/null 2>&1 </dev/null &) ; kill -9 $PPID"], cwd = "/out""#,
        &["sh"],
        "impure",
    );
    let out = repx(lab.path(), &["run"]);
    out.expect_code(1);
    let message = failure(&out, "t");
    assert!(message.contains("must not signal its reaper"), "{message}");
    assert_eq!(
        crate::common::job_dirs(lab.path()),
        Vec::<std::path::PathBuf>::new(),
        "committed"
    );
    assert_no_late_writes(&lab, 3);
    assert_eq!(
        crate::common::job_dirs(lab.path()),
        Vec::<std::path::PathBuf>::new(),
        "committed"
    );
}

/// Limits for the floods: the log limit of [`LIMITS`], and time enough to flood.
const FLOOD_LIMITS: &str =
    r#"limits = { memory = "64M", time = "120s", output = "1M", log = "64K", files = 64 }"#;

/// A lab of one stage `t` running `plugin` with `params` (and `tools`), under [`FLOOD_LIMITS`].
fn flood_lab(plugin: &str, params: &str, tools: &[&str], mode: &str) -> TempDir {
    let tools: Vec<String> = tools.iter().map(|t| format!("{t:?}")).collect();
    let toml = format!(
        r#"
[stages.t]
plugin = "plugins/{plugin}.wasm"
mode = "{mode}"
tools = [{}]
params = {{ {params} }}
{FLOOD_LIMITS}

[pipelines.main]
stages = ["t"]

[runs.main]
pipelines = ["main"]
"#,
        tools.join(", ")
    );
    attack_lab(&toml, &[plugin])
}

/// Runs `repx` in `dir` with `args`; returns its output and its peak resident memory in
/// bytes, as the kernel counted it for the whole process.
fn repx_peak_memory(dir: &Path, args: &[&str]) -> (Output, u64) {
    use std::io::Read;
    // Reaped by `wait4` below, which also tells its peak memory.
    #[allow(clippy::zombie_processes)]
    let mut child = crate::common::repx_command(dir, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running repx");
    let readers = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_end(&mut bytes).unwrap();
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    });
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: `status` and `usage` are valid for writes; `child` is ours and not yet reaped
    // (its `Child` is dropped without waiting).
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    let [stdout, stderr] = readers.map(|r| r.join().unwrap());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    // ru_maxrss is in KiB.
    let peak = usage.ru_maxrss as u64 * 1024;
    (
        Output {
            code,
            stdout,
            stderr,
        },
        peak,
    )
}

/// What repx may hold at its peak while a job floods its logs: well below the flood.
const PEAK_MEMORY: u64 = 256 << 20;

/// Asserts that the committed job of stage `t` has a host log cut at 64K, with the marker.
#[track_caller]
fn assert_host_log_cut(lab: &TempDir, what: &str) {
    let log = fs::read(output_of(lab.path(), "t").with_file_name("host.log")).unwrap();
    assert!(
        log.len() <= 64 * 1024 + 200,
        "{what}: host.log of {} bytes",
        log.len()
    );
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("[repx: log limit of 64K reached;"),
        "{what}: no marker at the end of host.log: {:?}",
        &text[text.len().saturating_sub(300)..]
    );
}

#[test]
fn tool_output_past_the_log_limit() {
    // A granted tool prints 512 MiB under a 64K log limit: the host log keeps 64K and a
    // marker, and repx streams the rest away instead of holding it.
    for mode in ["pure", "impure"] {
        let lab = flood_lab(
            "test-tool",
            r#"tool = "sh", args = ["-c", "head -c 536870912 /dev/zero; echo THE-END-OF-THE-FLOOD"], cwd = "/out""#,
            &["sh"],
            mode,
        );
        let (out, peak) = repx_peak_memory(lab.path(), &["run"]);
        out.expect_code(0);
        assert_host_log_cut(&lab, mode);
        assert!(
            peak < PEAK_MEMORY,
            "{mode}: repx peaked at {} MiB",
            peak >> 20
        );
    }
}

#[test]
fn host_log_past_the_log_limit() {
    // 512 calls of `log` with 1 MiB each, then 64 warnings of 1 MiB: the host log keeps
    // 64K and a marker, repx's memory stays low, and the terminal gets a few cut warnings.
    let lab = flood_lab("flood-host-log", "", &[], "pure");
    let (out, peak) = repx_peak_memory(lab.path(), &["run"]);
    out.expect_code(0);
    assert_host_log_cut(&lab, "log");
    assert!(peak < PEAK_MEMORY, "repx peaked at {} MiB", peak >> 20);
    let warnings = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .count();
    assert!(
        out.stderr.len() < 32 * 1024 && warnings <= 21,
        "{warnings} warnings, {} bytes on stderr",
        out.stderr.len()
    );
}

#[test]
fn progress_and_log_flood() {
    // A plugin reporting itself complete and logging in a tight loop, 300,000 times: what
    // reaches repx's stdout is bounded by a rate (a progress event at most every 100 ms per
    // job, and the first completion), not by the calls. The loop takes seconds, so fewer
    // than 1000 lines is well above what the rate allows.
    let lab = flood_lab("flood-progress", r#"calls = "300000""#, &[], "pure");
    let out = repx(lab.path(), &["run", "--json"]);
    out.expect_code(0);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    assert!(
        events.len() < 1000,
        "{} JSON lines ({} progress, {} warnings)",
        events.len(),
        count("progress"),
        count("warning")
    );
    assert!(count("warning") <= 21, "{} warnings", count("warning"));
    assert_eq!(count("job_finished"), 1);
    assert!(
        out.stderr.len() < 32 * 1024,
        "{} bytes on stderr",
        out.stderr.len()
    );
    assert_host_log_cut(&lab, "progress");
}

#[test]
fn long_stderr_line_on_failure() {
    // The failure message quotes the tail of stderr on the terminal: one 60 KiB line, under
    // a 64K log limit, is kept whole in the log and cut in the message.
    let lab = flood_lab("fail-long-line", "", &[], "pure");
    let out = repx(lab.path(), &["run"]);
    out.expect_code(1);
    let message = failure(&out, "t");
    assert!(message.contains("eeee… (cut)"), "{message}");
    assert!(
        out.stderr.len() < 4096,
        "{} bytes on stderr",
        out.stderr.len()
    );
}

#[test]
fn host_tool_holds_only_its_streams() {
    // A host tool's reaper is a fork of repx: every descriptor repx holds (the store's
    // lock and directories, other jobs' pipes, and whatever a library reopened without
    // close-on-exec after the fork, such as wasmtime's pagemap) must stay out of the tool.
    let lab = tool_lab(
        r#"tool = "sh", args = ["-c", "ls /proc/$$/fd"], cwd = "/out", stdout_file = "/out/fds.txt""#,
        &["sh", "ls"],
        "impure",
    );
    repx(lab.path(), &["run"]).expect_code(0);
    assert_eq!(read_output(lab.path(), "fds.txt"), "0\n1\n2\n");
}
