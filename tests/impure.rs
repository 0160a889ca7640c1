//! The seed example: impure incremental builds, with external tools as granted capabilities.
//!
//! These run the real `repx` binary on `examples/impure-incremental` with the real `make`,
//! `cc` and bubblewrap.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::{TempDir, copy_example, lab_dir, repx, repx_with_env};

const OBJECTS: [&str; 3] = ["main.o", "file1.o", "file2.o"];

/// A fresh copy of the example, without anything an earlier build left in `src/`.
fn example() -> TempDir {
    let dir = copy_example("impure-incremental");
    for built in OBJECTS.iter().chain(&["mybinary"]) {
        let _ = fs::remove_file(dir.path().join("src").join(built));
    }
    dir
}

fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir` with its content and mtime.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, SystemTime)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
                mtime(&e.path()),
            )
        })
        .collect();
    files.sort();
    files
}

/// The id prefix on a `ran|cached STAGE … ID` line.
fn job_id(stderr: &str, stage: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(stage))
        .unwrap_or_else(|| panic!("no line for {stage}\n{stderr}"));
    line.split_whitespace()
        .find(|w| w.len() == 12 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap()
        .to_string()
}

#[test]
fn the_edit_run_loop_rebuilds_only_what_changed() {
    let lab = example();
    let src = lab.path().join("src");

    // First run: everything is built in place and the binary's output is recorded.
    let first = repx(lab.path(), &["run"]);
    first
        .expect_code(0)
        .expect_stderr(&["impure job", "not reproducible"]);
    assert_eq!(first.ran(), ["build", "run"]);
    assert_eq!(common::read_output(lab.path(), "run.log"), "Main\nF1\nF2\n");
    for object in OBJECTS {
        assert!(src.join(object).is_file(), "{object} was not built in src/");
    }
    let build = job_id(&first.stderr, "build");
    let shown = repx(lab.path(), &["show", "job", &build]);
    assert!(
        shown
            .stdout
            .contains("mode:     impure  (not reproducible)"),
        "{}",
        shown.stdout
    );

    // Edit one file: make rebuilds only its object, and the new output shows the edit.
    let main_o = mtime(&src.join("main.o"));
    let file2_o = mtime(&src.join("file2.o"));
    let file1_o = mtime(&src.join("file1.o"));
    let file1 = fs::read_to_string(src.join("file1.c")).unwrap();
    fs::write(
        src.join("file1.c"),
        file1.replace("\"F1\\n\"", "\"F1 edited\\n\""),
    )
    .unwrap();
    let second = repx(lab.path(), &["run"]);
    second.expect_code(0);
    assert_eq!(second.ran(), ["build", "run"]);
    let log = repx(lab.path(), &["log", &job_id(&second.stderr, "build")]).stdout;
    assert!(
        log.contains("file1.c") && !log.contains("main.c") && !log.contains("file2.c"),
        "make rebuilt more than file1.o:\n{log}"
    );
    assert_eq!(mtime(&src.join("main.o")), main_o, "main.o was rebuilt");
    assert_eq!(mtime(&src.join("file2.o")), file2_o, "file2.o was rebuilt");
    assert_ne!(
        mtime(&src.join("file1.o")),
        file1_o,
        "file1.o was not rebuilt"
    );
    let run_log = fs::read_to_string(
        common::job_dirs(lab.path())
            .into_iter()
            .map(|d| d.join("out/run.log"))
            .find(|p| fs::read_to_string(p).is_ok_and(|t| t.contains("edited")))
            .expect("a run.log with the edit"),
    )
    .unwrap();
    assert_eq!(run_log, "Main\nF1 edited\nF2\n");

    // No change: nothing runs, so make is not even invoked.
    let binary = mtime(&src.join("mybinary"));
    let third = repx(lab.path(), &["run"]);
    third.expect_code(0);
    assert_eq!(third.ran(), Vec::<String>::new());
    assert_eq!(third.cached(), ["build", "run"]);
    assert_eq!(mtime(&src.join("mybinary")), binary);

    // --force re-runs the stage; make finds nothing to do.
    let forced = repx(lab.path(), &["run", "--force", "build"]);
    forced.expect_code(0);
    assert_eq!(
        forced.ran(),
        ["build"],
        "the identical binary must not re-run `run`"
    );
    assert_eq!(mtime(&src.join("main.o")), main_o);
}

/// Makes the example's link step say it started (`../linking`, outside the stage's sources)
/// and wait until `../go` exists, so that a test can edit a source while `make` runs, after
/// it compiled that source.
/// Grants the example's build what the Makefiles the tests write run besides make and cc.
fn grant_the_shell(lab: &Path) {
    let toml = fs::read_to_string(lab.join("repx.toml")).unwrap();
    fs::write(
        lab.join("repx.toml"),
        toml.replace(
            "tools = [\"make\", \"cc\"]",
            "tools = [\"make\", \"cc\", \"sh\", \"touch\", \"sleep\"]",
        ),
    )
    .unwrap();
}

fn hold_the_link(lab: &Path) {
    let makefile = lab.join("src/Makefile");
    let text = fs::read_to_string(&makefile).unwrap().replace(
        "\t$(CC) -o $@ $(OBJS)\n",
        "\t$(CC) -o $@ $(OBJS)\n\ttouch ../linking; i=0; \\\n\t\
         while [ ! -e ../go ] && [ $$i -lt 6000 ]; do sleep 0.01; i=$$((i+1)); done\n",
    );
    fs::write(&makefile, text).unwrap();
}

/// Every committed `run.log`.
fn run_logs(lab: &Path) -> Vec<String> {
    common::job_dirs(lab)
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("out/run.log")).ok())
        .collect()
}

/// Waits for `path` to exist, failing after a long while instead of hanging.
#[track_caller]
fn wait_for(path: &Path) {
    let started = std::time::Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn an_edit_saved_while_make_runs_is_built_by_the_next_run() {
    let lab = example();
    let src = lab.path().join("src");
    hold_the_link(lab.path());
    grant_the_shell(lab.path());
    // A first build, so that the edit below makes make rebuild one object only.
    fs::write(lab.path().join("go"), "").unwrap();
    repx(lab.path(), &["run"]).expect_code(0);
    fs::remove_file(lab.path().join("go")).unwrap();
    fs::remove_file(lab.path().join("linking")).unwrap();

    let file1 = fs::read_to_string(src.join("file1.c")).unwrap();
    let edit = |to: &str| {
        fs::write(
            src.join("file1.c"),
            file1.replace("\"F1\\n\"", &format!("\"{to}\\n\"")),
        )
        .unwrap()
    };
    edit("F1 first");
    let running = common::repx_command(lab.path(), &["run"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // make compiled file1.c and waits in the link step: the edit comes after make read it.
    wait_for(&lab.path().join("linking"));
    edit("F1 second");
    fs::write(lab.path().join("go"), "").unwrap();
    let during = running.wait_with_output().unwrap();
    assert_eq!(during.status.code(), Some(0));
    // That run's binary was built from what make read.
    let logs = run_logs(lab.path());
    assert!(logs.iter().any(|l| l == "Main\nF1 first\nF2\n"), "{logs:?}");
    assert!(!logs.iter().any(|l| l.contains("second")), "{logs:?}");

    // The next run builds the edit; the one after is cached.
    let next = repx(lab.path(), &["run"]);
    next.expect_code(0);
    assert_eq!(
        next.ran(),
        ["build", "run"],
        "the edit was counted as built"
    );
    next.expect_stderr(&["[its sources changed while it ran"]);
    let logs = run_logs(lab.path());
    assert!(
        logs.iter().any(|l| l == "Main\nF1 second\nF2\n"),
        "{logs:?}"
    );
    let again = repx(lab.path(), &["run"]);
    again.expect_code(0);
    assert_eq!(again.cached(), ["build", "run"]);
}

/// Runs `repx run -v` in `lab`, expecting success; returns it with the `run.log` its `run`
/// job holds (ran or cached: another build's binary may be one run before).
fn run_and_log(lab: &Path) -> (common::Output, String) {
    let run = repx(lab, &["run", "-v"]);
    run.expect_code(0);
    let id = job_id(&run.stderr, "run");
    let log = output_of(lab, &id, "run.log");
    (run, log)
}

#[test]
fn an_edit_saved_after_make_read_the_file_but_before_its_object_is_built_by_the_next_run() {
    // make reads file1.c, waits, then writes file1.o: an edit in the wait is older than
    // the object, so make alone would call the next build up to date.
    let lab = example();
    let src = lab.path().join("src");
    let makefile = src.join("Makefile");
    let text = fs::read_to_string(&makefile).unwrap().replace(
        "\t$(CC) -c -o $@ $<\n",
        "\t$(CC) -E -o $*.i $<\n\ttouch ../read-$*; i=0; \\\n\t\
         while [ ! -e ../go ] && [ $$i -lt 6000 ]; do sleep 0.01; i=$$((i+1)); done\n\
         \t$(CC) -c -o $@ -x cpp-output $*.i\n",
    );
    fs::write(&makefile, text).unwrap();
    grant_the_shell(lab.path());
    fs::write(lab.path().join("go"), "").unwrap();
    repx(lab.path(), &["run"]).expect_code(0);
    fs::remove_file(lab.path().join("go")).unwrap();

    let file1 = fs::read_to_string(src.join("file1.c")).unwrap();
    let edit = |to: &str| {
        let text = file1.replace("\"F1\\n\"", &format!("\"{to}\\n\""));
        fs::write(src.join("file1.c"), text).unwrap()
    };
    edit("F1 first");
    let _ = fs::remove_file(lab.path().join("read-file1"));
    let running = common::repx_command(lab.path(), &["run"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&lab.path().join("read-file1"));
    edit("F1 second");
    fs::write(lab.path().join("go"), "").unwrap();
    let during = running.wait_with_output().unwrap();
    assert_eq!(during.status.code(), Some(0));
    assert!(run_logs(lab.path()).contains(&"Main\nF1 first\nF2\n".to_string()));
    assert!(
        fs::metadata(src.join("file1.o"))
            .unwrap()
            .modified()
            .unwrap()
            > fs::metadata(src.join("file1.c"))
                .unwrap()
                .modified()
                .unwrap(),
        "the object is not newer than the edit: this test shows nothing"
    );

    let (next, log) = run_and_log(lab.path());
    assert_eq!(next.ran(), ["build", "run"], "{}", next.stderr);
    assert_eq!(log, "Main\nF1 second\nF2\n");
    let again = repx(lab.path(), &["run"]);
    assert_eq!(again.cached(), ["build", "run"], "{}", again.stderr);
}

#[test]
fn a_source_put_back_with_its_old_time_is_built() {
    let lab = example();
    let file1 = lab.path().join("src/file1.c");
    let original = fs::read_to_string(&file1).unwrap();
    repx(lab.path(), &["run"]).expect_code(0);
    fs::write(&file1, original.replace("\"F1\\n\"", "\"F1 edited\\n\"")).unwrap();
    assert_eq!(run_and_log(lab.path()).1, "Main\nF1 edited\nF2\n");

    // As `cp -p`, `tar x` or `rsync -t` put it back: the old content, with an old time,
    // older than the object built from the edit.
    fs::write(&file1, &original).unwrap();
    let long_ago = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
    fs::File::options()
        .write(true)
        .open(&file1)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    let (back, log) = run_and_log(lab.path());
    assert_eq!(
        back.ran().first().map(String::as_str),
        Some("build"),
        "{}",
        back.stderr
    );
    assert_eq!(log, "Main\nF1\nF2\n");
    assert_eq!(fs::read_to_string(&file1).unwrap(), original);
    assert_eq!(
        repx(lab.path(), &["run"]).cached(),
        ["build", "run"],
        "a second run after it built again"
    );
}

#[test]
fn an_edit_of_a_file_a_source_links_to_is_built() {
    let lab = example();
    let shared = lab.path().join("shared");
    fs::create_dir_all(&shared).unwrap();
    fs::rename(lab.path().join("src/file1.c"), shared.join("file1.c")).unwrap();
    std::os::unix::fs::symlink("../shared/file1.c", lab.path().join("src/file1.c")).unwrap();
    assert_eq!(run_and_log(lab.path()).1, "Main\nF1\nF2\n");

    let text = fs::read_to_string(shared.join("file1.c")).unwrap();
    fs::write(
        shared.join("file1.c"),
        text.replace("\"F1\\n\"", "\"F1 shared\\n\""),
    )
    .unwrap();
    let (edited, log) = run_and_log(lab.path());
    assert_eq!(edited.ran(), ["build", "run"], "{}", edited.stderr);
    assert_eq!(log, "Main\nF1 shared\nF2\n");
}

#[test]
fn a_source_linking_out_of_the_project_counts_by_its_text_and_is_never_read() {
    // A job may plant such a link: reading through it would fail, or hang, every run.
    let lab = example();
    std::os::unix::fs::symlink("/proc/self/mem", lab.path().join("src/mem")).unwrap();
    let first = repx(lab.path(), &["run"]);
    first.expect_code(0);
    assert_eq!(first.ran(), ["build", "run"], "{}", first.stderr);
    assert_eq!(repx(lab.path(), &["run"]).cached(), ["build", "run"]);
}

#[test]
fn an_identical_rebuild_does_not_rerun_downstream() {
    let lab = example();
    repx(lab.path(), &["run"]).expect_code(0);
    // A comment changes the sources but not the binary.
    let path = lab.path().join("src/file2.c");
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str("/* a comment */\n");
    fs::write(&path, text).unwrap();
    let again = repx(lab.path(), &["run"]);
    again.expect_code(0);
    assert_eq!(again.ran(), ["build"]);
    assert_eq!(again.cached(), ["run"]);
}

#[test]
fn a_pure_run_builds_from_a_snapshot_and_never_writes_the_sources() {
    let lab = example();
    let src = lab.path().join("src");
    let before = snapshot(&src);
    let pure = repx(lab.path(), &["run", "--pure"]);
    pure.expect_code(0);
    assert!(!pure.stderr.contains("impure job"), "{}", pure.stderr);
    assert_eq!(pure.ran(), ["build", "run"]);
    assert_eq!(common::read_output(lab.path(), "run.log"), "Main\nF1\nF2\n");
    assert_eq!(snapshot(&src), before, "the pure build changed src/");
}

/// A lab with one pure stage running `test-tool` with `params`, granted `tools`.
fn tool_lab(tools: &str, params: &str) -> TempDir {
    let toml = format!(
        "[stages.probe]\nplugin = \"plugins/test-tool.wasm\"\ntools = {tools}\ninputs = {{ src = \"path:src\" }}\n\
         params = {params}\n[pipelines.main]\nstages = [\"probe\"]\n[runs.r]\npipelines = [\"main\"]\n"
    );
    let lab = lab_dir(&toml, &["test-tool"]);
    fs::create_dir_all(lab.path().join("src")).unwrap();
    fs::write(lab.path().join("src/keep.txt"), "original").unwrap();
    lab
}

#[test]
fn an_ungranted_tool_is_refused_naming_the_grant() {
    let lab = tool_lab("[\"sh\"]", "{ tool = \"make\", args = [\"--version\"] }");
    let run = repx(lab.path(), &["run"]);
    run.expect_code(1).expect_stderr(&[
        "stage `probe` has no grant for tool `make`",
        "add it to `tools`",
    ]);
}

#[test]
fn a_tool_cwd_outside_the_given_directories_is_refused() {
    let lab = tool_lab(
        "[\"sh\"]",
        "{ tool = \"sh\", args = [\"-c\", \"true\"], cwd = \"/etc\" }",
    );
    repx(lab.path(), &["run"])
        .expect_code(1)
        .expect_stderr(&["tool cwd `/etc` is outside the directories given"]);
    let lab = tool_lab(
        "[\"sh\"]",
        "{ tool = \"sh\", args = [\"-c\", \"true\"], cwd = \"/tmp/../etc\" }",
    );
    repx(lab.path(), &["run"])
        .expect_code(1)
        .expect_stderr(&["is outside the directories given"]);
}

#[test]
fn a_pure_tool_cannot_write_the_sources() {
    let script =
        "echo pwned > /in/src/keep.txt; echo pwned > /in/src/new.txt; echo done > /out/after.txt";
    let lab = tool_lab(
        "[\"sh\"]",
        &format!("{{ tool = \"sh\", args = [\"-c\", \"{script}\"] }}"),
    );
    repx(lab.path(), &["run"]).expect_code(0);
    // The tool ran (it wrote /out) but the source tree is as it was.
    assert_eq!(common::read_output(lab.path(), "after.txt"), "done\n");
    let job = common::job_with_output(lab.path(), "after.txt");
    let log = fs::read_to_string(job.join("host.log")).unwrap();
    assert!(log.contains("Read-only file system"), "{log}");
    assert_eq!(
        fs::read_to_string(lab.path().join("src/keep.txt")).unwrap(),
        "original"
    );
    assert!(!lab.path().join("src/new.txt").exists());
}

/// A lab directory under /var/tmp, removed when dropped. A pure tool's sandbox has a /tmp
/// of its own, which would hide a lab under /tmp for that reason alone.
struct VarTmpLab(PathBuf);

impl VarTmpLab {
    /// `tool_lab`'s lab, moved under /var/tmp.
    fn new(tools: &str, params: &str) -> VarTmpLab {
        let dir = Path::new("/var/tmp").join(format!("repx-test-{}", std::process::id()));
        common::remove_tree(&dir);
        let lab = tool_lab(tools, params);
        fs::create_dir_all(dir.join("plugins")).unwrap();
        fs::create_dir_all(dir.join("src")).unwrap();
        for file in ["repx.toml", "plugins/test-tool.wasm", "src/keep.txt"] {
            fs::copy(lab.path().join(file), dir.join(file)).unwrap();
        }
        let toml = fs::read_to_string(dir.join("repx.toml")).unwrap();
        fs::write(
            dir.join("repx.toml"),
            toml.replace("{lab}", dir.to_str().unwrap()),
        )
        .unwrap();
        VarTmpLab(dir)
    }
}

impl Drop for VarTmpLab {
    fn drop(&mut self) {
        common::remove_tree(&self.0);
    }
}

#[test]
fn a_pure_tool_cannot_write_the_sources_by_their_host_path() {
    let script = "echo pwned > {lab}/src/keep.txt || exit 3; echo pwned > {lab}/src/new.txt";
    let lab = VarTmpLab::new(
        "[\"sh\"]",
        &format!("{{ tool = \"sh\", args = [\"-c\", \"{script}\"], cwd = \"/out\" }}"),
    );
    let lab = lab.0.as_path();
    repx(lab, &["run"]).expect_code(0);
    // The tool ran and failed at its first write; the source tree is as it was.
    assert_eq!(common::read_output(lab, "status.txt"), "3\n");
    let log = fs::read_to_string(common::job_with_output(lab, "status.txt").join("host.log"));
    let log = log.unwrap();
    assert!(
        log.contains(&format!("cannot create {}/src/keep.txt", lab.display())),
        "{log}"
    );
    assert_eq!(
        fs::read_to_string(lab.join("src/keep.txt")).unwrap(),
        "original"
    );
    assert!(!lab.join("src/new.txt").exists());
}

#[test]
fn a_pure_tool_has_no_network() {
    // In its own network namespace a sandboxed tool sees only loopback.
    let lab = tool_lab(
        "[\"cat\"]",
        "{ tool = \"cat\", args = [\"/proc/net/dev\"], cwd = \"/tmp\", stdout_file = \"/out/net.txt\" }",
    );
    repx(lab.path(), &["run"]).expect_code(0);
    let interfaces: Vec<String> = common::read_output(lab.path(), "net.txt")
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|i| i.trim().to_string()))
        .collect();
    assert_eq!(interfaces, ["lo"]);
}

#[test]
fn shell_metacharacters_reach_a_tool_as_plain_arguments() {
    let lab = tool_lab(
        "[\"echo\"]",
        "{ tool = \"echo\", args = [\"$(touch /out/pwned)\", \";\", \"rm -rf /out\"], stdout_file = \"/out/echo.txt\" }",
    );
    repx(lab.path(), &["run"]).expect_code(0);
    assert_eq!(
        common::read_output(lab.path(), "echo.txt"),
        "$(touch /out/pwned) ; rm -rf /out\n"
    );
    assert!(
        common::job_dirs(lab.path())
            .iter()
            .all(|d| !d.join("out/pwned").exists())
    );
}

/// A one-stage lab running `plugin` impure with `stage` keys, swept over `run_params`.
fn impure_lab(plugin: &str, stage: &str, run_params: &str) -> TempDir {
    let toml = format!(
        "[stages.s]\nplugin = \"plugins/{plugin}.wasm\"\nmode = \"impure\"\n{stage}\n\
         [pipelines.main]\nstages = [\"s\"]\n[runs.r]\npipelines = [\"main\"]\nparams = {run_params}\n"
    );
    let extra: &[&str] = if plugin == "sum" { &[] } else { &[plugin] };
    lab_dir(&toml, extra)
}

#[test]
fn an_impure_stage_without_sources_reruns_when_its_path_input_changes() {
    let lab = impure_lab(
        "sum",
        "inputs = { data = \"path:d\" }\noutputs = [\"sum.txt\"]",
        "{}",
    );
    let data = lab.path().join("d/data.csv");
    fs::create_dir_all(data.parent().unwrap()).unwrap();
    fs::write(&data, "x,value\n1,2\n2,3\n").unwrap();
    let first = repx(lab.path(), &["run"]);
    first.expect_code(0);
    assert_eq!(first.ran(), ["s"]);
    assert_eq!(common::read_output(lab.path(), "sum.txt"), "5\n");
    assert_eq!(repx(lab.path(), &["run"]).cached(), ["s"]);

    fs::write(&data, "x,value\n1,2\n2,10\n").unwrap();
    let edited = repx(lab.path(), &["run"]);
    edited.expect_code(0);
    assert_eq!(edited.ran(), ["s"], "the edit of d/data.csv was not seen");
    assert_eq!(common::read_output(lab.path(), "sum.txt"), "12\n");
    // A file beside the input is no part of it.
    fs::write(lab.path().join("notes.txt"), "unrelated").unwrap();
    assert_eq!(repx(lab.path(), &["run"]).cached(), ["s"]);
}

#[test]
fn a_tool_given_by_a_relative_path_is_found_from_the_lab_file_wherever_repx_and_the_tool_start() {
    // Granted as `./scripts/say.sh`, started in `/work/src`, by a repx started in `elsewhere`.
    let lab = impure_lab(
        "test-tool",
        "tools = [\"./scripts/say.sh\"]\nparams = { tool = \"./scripts/say.sh\", \
         cwd = \"/work/src\", stdout_file = \"/out/said.txt\" }",
        "{}",
    );
    let script = lab.path().join("scripts/say.sh");
    fs::create_dir_all(script.parent().unwrap()).unwrap();
    fs::write(&script, "#!/bin/sh\nd=$(pwd)\necho \"said in ${d##*/}\"\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for dir in ["src", "elsewhere"] {
        fs::create_dir_all(lab.path().join(dir)).unwrap();
    }
    let elsewhere = lab.path().join("elsewhere");
    let run = |dir: &Path, lab: &str| repx(dir, &["--lab", lab, "run"]);

    let first = run(&elsewhere, "../repx.toml");
    first.expect_code(0);
    assert_eq!(first.ran(), ["s"], "{}", first.stderr);
    assert_eq!(common::read_output(lab.path(), "said.txt"), "said in src\n");
    // Found the same from the lab's own directory, and through `..` from the lab's: the
    // same tool, so the same job.
    assert_eq!(run(lab.path(), "repx.toml").cached(), ["s"]);
    assert_eq!(
        run(&elsewhere.join("../src"), "../elsewhere/../repx.toml").cached(),
        ["s"]
    );

    // A path that leads nowhere is a lab error naming where it looked, before any job.
    fs::remove_file(&script).unwrap();
    run(&elsewhere, "../repx.toml")
        .expect_code(2)
        .expect_stderr(&[
            "tool `./scripts/say.sh` is not an executable file at",
            "scripts/say.sh (a relative path in `tools` is taken from the lab file's directory)",
        ]);
}

#[test]
fn a_tool_replaced_while_the_run_goes_on_is_refused_not_run_under_the_old_id() {
    // A sweep of two pure jobs, one at a time; while the first runs, its tool is replaced
    // (as an upgrade replaces `cc`). The second job's id holds the old tool's digest, so
    // the new one must not run for it.
    let lab = lab_dir(
        "[stages.s]\nplugin = \"plugins/test-tool.wasm\"\ntools = [\"./v.sh\", \"sleep\"]\n\
         params = { tool = \"./v.sh\", cwd = \"/out\", stdout_file = \"/out/v.txt\", args = [] }\n\
         [pipelines.main]\nstages = [\"s\"]\n[runs.r]\npipelines = [\"main\"]\n\
         params = { args = [[\"1\"], [\"2\"]] }\n",
        &["test-tool"],
    );
    let script = lab.path().join("v.sh");
    let write_script = |text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let new = lab.path().join("v.sh.new");
        fs::write(&new, text).unwrap();
        fs::set_permissions(&new, fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(&new, &script).unwrap();
    };
    write_script("#!/bin/sh\necho v1\n: > /out/started\nsleep 2\n");
    let running = common::repx_command(lab.path(), &["run", "-j", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Replaced once the first job's tool has started.
    let started = std::time::Instant::now();
    while !marker_under(&lab.path().join(".repx/tmp"), "started") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no tool started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    write_script("#!/bin/sh\necho v2\n");
    let first = running.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tool `./v.sh`")
            && stderr.contains("changed since this run took its digest for the job's id"),
        "{stderr}"
    );

    // Run again: both jobs under the new tool's digest, each with its output; the first
    // job of the old tool stays under its own id.
    let again = repx(lab.path(), &["run", "-j", "1"]);
    again.expect_code(0);
    assert_eq!(again.ran().len(), 2, "{}", again.stderr);
    let mut outputs: Vec<String> = common::job_dirs(lab.path())
        .iter()
        .filter_map(|dir| fs::read_to_string(dir.join("out/v.txt")).ok())
        .collect();
    outputs.sort();
    assert_eq!(outputs, ["v1\n", "v2\n", "v2\n"]);
}

/// Whether a file named `name` lies anywhere under `dir` (which a run changes meanwhile).
fn marker_under(dir: &Path, name: &str) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        path.file_name().is_some_and(|n| n == name) || (path.is_dir() && marker_under(&path, name))
    })
}

#[test]
fn an_impure_stage_without_sources_or_path_inputs_follows_the_whole_project() {
    let lab = impure_lab(
        "test-tool",
        "tools = [\"cat\"]\nparams = { tool = \"cat\", args = [\"notes.txt\"], cwd = \"/work\", \
         stdout_file = \"/out/notes.txt\" }",
        "{}",
    );
    fs::write(lab.path().join("notes.txt"), "first").unwrap();
    repx(lab.path(), &["run"]).expect_code(0);
    assert_eq!(common::read_output(lab.path(), "notes.txt"), "first");
    assert_eq!(repx(lab.path(), &["run"]).cached(), ["s"]);
    fs::write(lab.path().join("notes.txt"), "second").unwrap();
    assert_eq!(repx(lab.path(), &["run"]).ran(), ["s"]);
    assert_eq!(common::read_output(lab.path(), "notes.txt"), "second");
}

#[test]
fn the_impure_jobs_of_a_sweep_take_turns_in_the_project_and_stay_cached_together() {
    let lab = impure_lab(
        "test-tool",
        "tools = [\"sh\"]\nparams = { tool = \"sh\", args = [\"-c\", \
         \"echo start $N >> turns.log; sleep 0.2; echo end $N >> turns.log\"], \
         cwd = \"/work\", env = { N = \"0\" } }",
        "{ env = [{ N = \"1\" }, { N = \"2\" }, { N = \"3\" }, { N = \"4\" }] }",
    );
    let first = repx(lab.path(), &["run", "-j", "4"]);
    first.expect_code(0);
    assert_eq!(first.ran(), ["s", "s", "s", "s"]);
    let log = fs::read_to_string(lab.path().join("turns.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 8, "{log}");
    for turn in lines.chunks(2) {
        let n = turn[0]
            .strip_prefix("start ")
            .unwrap_or_else(|| panic!("{log}"));
        assert_eq!(turn[1], format!("end {n}"), "two jobs overlapped:\n{log}");
    }
    // Each job wrote the project, yet none of them is out of date for what the others did.
    let again = repx(lab.path(), &["run", "-j", "4"]);
    again.expect_code(0);
    assert_eq!(again.cached(), ["s", "s", "s", "s"], "{}", again.stderr);
    assert_eq!(
        fs::read_to_string(lab.path().join("turns.log")).unwrap(),
        log
    );
}

#[test]
fn a_pure_run_after_impure_ones_builds_every_object_from_the_sources() {
    let lab = example();
    repx(lab.path(), &["run"]).expect_code(0);
    assert!(lab.path().join("src/main.o").is_file());
    // The snapshot of src/ now holds the impure build's objects and binary.
    let pure = repx(lab.path(), &["run", "--pure"]);
    pure.expect_code(0);
    assert_eq!(pure.ran(), ["build", "run"]);
    let log = repx(lab.path(), &["log", &job_id(&pure.stderr, "build")]).stdout;
    for source in ["main.c", "file1.c", "file2.c"] {
        assert!(
            log.contains(&format!("-o {} {source}", source.replace(".c", ".o"))),
            "{source} was not compiled:\n{log}"
        );
    }
    let run = job_id(&pure.stderr, "run");
    let run_log = common::job_dirs(lab.path())
        .into_iter()
        .find(|d| d.file_name().unwrap().to_string_lossy().starts_with(&run))
        .unwrap()
        .join("out/run.log");
    assert_eq!(fs::read_to_string(run_log).unwrap(), "Main\nF1\nF2\n");
}

#[test]
fn force_takes_a_stage_or_else_a_run() {
    let toml = "[stages.gen]\nplugin = \"plugins/generate.wasm\"\nparams = { n = 3 }\n\
                [stages.sum]\nplugin = \"plugins/sum.wasm\"\ninputs = { data = \"gen\" }\n\
                [pipelines.main]\nstages = [\"gen\", \"sum\"]\n[pipelines.one]\nstages = [\"gen\"]\n\
                [runs.all]\npipelines = [\"main\"]\n[runs.first]\npipelines = [\"one\"]\n";
    let lab = lab_dir(toml, &[]);
    repx(lab.path(), &["run"]).expect_code(0);
    let stage = repx(lab.path(), &["run", "--force", "sum"]);
    assert_eq!(
        (stage.ran(), stage.cached()),
        (vec!["sum".into()], vec!["gen".into()])
    );
    // No stage is called `first`: its run's jobs re-run, and only those.
    let run = repx(lab.path(), &["run", "--force", "first"]);
    run.expect_code(0);
    assert_eq!(
        (run.ran(), run.cached()),
        (vec!["gen".into()], vec!["sum".into()])
    );
    repx(lab.path(), &["run", "all", "--force", "first"])
        .expect_code(2)
        .expect_stderr(&[
            "run `first` is not among the runs",
            "repx run first --force first",
        ]);
    repx(lab.path(), &["run", "--force", "frist"])
        .expect_code(2)
        .expect_stderr(&["no stage or run `frist`", "did you mean `first`?"]);

    // A bad --force is refused before the store is written: on a fresh lab, an unknown
    // name makes no store, and a run not among those run leaves no gc root.
    let fresh = lab_dir(toml, &[]);
    repx(fresh.path(), &["run", "--force", "frist"]).expect_code(2);
    assert!(!fresh.path().join(".repx").exists(), "a store was made");
    repx(fresh.path(), &["run", "all", "--force", "first"]).expect_code(2);
    let roots = fs::read_dir(fresh.path().join(".repx/roots"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(roots, 0, "a gc root was written");
}

// ---------------------------------------------------------------------------------------
// What a granted tool adds to the job id, without bubblewrap, and how impure jobs are marked

/// Writes `dir/probe`, a script that prints `said`.
fn write_probe(dir: &Path, said: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).unwrap();
    let probe = dir.join("probe");
    fs::write(&probe, format!("#!/bin/sh\necho {said}\n")).unwrap();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A pure stage `probe` granted the tool `probe`, which it runs with its stdout to `said.txt`.
fn probe_lab() -> TempDir {
    lab_dir(
        "[stages.probe]\nplugin = \"plugins/test-tool.wasm\"\ntools = [\"probe\"]\n\
         params = { tool = \"probe\", stdout_file = \"/out/said.txt\" }\n\
         [pipelines.main]\nstages = [\"probe\"]\n[runs.r]\npipelines = [\"main\"]\n",
        &["test-tool"],
    )
}

/// The short ids `repx list jobs` gives with `PATH` set to `path`.
fn listed_ids(lab: &Path, path: &str) -> Vec<String> {
    let jobs = repx_with_env(lab, &["list", "jobs"], &[("PATH", path)]);
    jobs.expect_code(0);
    jobs.stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// `file` in the output of the committed job whose id starts with `short`.
fn output_of(lab: &Path, short: &str, file: &str) -> String {
    let job = common::job_dirs(lab)
        .into_iter()
        .find(|d| d.file_name().unwrap().to_string_lossy().starts_with(short))
        .unwrap_or_else(|| panic!("no committed job {short}"));
    fs::read_to_string(job.join("out").join(file)).unwrap()
}

#[test]
fn a_granted_tool_s_content_and_path_are_part_of_the_job_id() {
    // Under /tmp, which a pure tool's sandbox replaces by the job's scratch: a granted
    // tool's directory is mounted over it.
    let tools = TempDir::new();
    let (bin, other) = (tools.path().join("bin"), tools.path().join("other"));
    let system = std::env::var("PATH").unwrap();
    let on_path = |dir: &Path| format!("{}:{system}", dir.display());
    let lab = probe_lab();
    let run = |path: &str| repx_with_env(lab.path(), &["run"], &[("PATH", path)]);

    write_probe(&bin, "first");
    let first = run(&on_path(&bin));
    first.expect_code(0);
    assert_eq!(first.ran(), ["probe"]);
    let first_id = job_id(&first.stderr, "probe");
    assert_eq!(
        listed_ids(lab.path(), &on_path(&bin)),
        std::slice::from_ref(&first_id)
    );
    assert_eq!(output_of(lab.path(), &first_id, "said.txt"), "first\n");
    assert_eq!(run(&on_path(&bin)).cached(), ["probe"]);

    // New bytes at the same path: another job, which runs the new script.
    write_probe(&bin, "second");
    let edited_id = listed_ids(lab.path(), &on_path(&bin)).remove(0);
    assert_ne!(edited_id, first_id, "the tool's content is not in the id");
    let edited = run(&on_path(&bin));
    edited.expect_code(0);
    assert_eq!(edited.ran(), ["probe"], "{}", edited.stderr);
    assert_eq!(job_id(&edited.stderr, "probe"), edited_id);
    assert_eq!(output_of(lab.path(), &edited_id, "said.txt"), "second\n");

    // The same bytes found at another path: another job again.
    write_probe(&other, "second");
    let moved_id = listed_ids(lab.path(), &on_path(&other)).remove(0);
    assert_ne!(moved_id, edited_id, "the tool's path is not in the id");
    assert_ne!(moved_id, first_id);
    let moved = run(&on_path(&other));
    moved.expect_code(0);
    assert_eq!(moved.ran(), ["probe"], "{}", moved.stderr);
    assert_eq!(job_id(&moved.stderr, "probe"), moved_id);
}

#[test]
fn without_bubblewrap_a_pure_tool_fails_saying_what_to_install_and_never_runs_unsandboxed() {
    let lab = lab_dir(
        "[stages.probe]\nplugin = \"plugins/test-tool.wasm\"\ntools = [\"probe\"]\n\
         params = { tool = \"probe\", cwd = \"/out\" }\n\
         [pipelines.main]\nstages = [\"probe\"]\n[runs.r]\npipelines = [\"main\"]\n",
        &["test-tool"],
    );
    // On the host the tool leaves a file beside the lab; sandboxed it could not.
    let marker = lab.path().join("ran-on-the-host");
    let bin = lab.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let probe = bin.join("probe");
    fs::write(
        &probe,
        format!("#!/bin/sh\necho ran > {}\n", marker.display()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&probe, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A PATH with the tool but without bwrap.
    let path = bin.to_str().unwrap();
    assert!(!bin.join("bwrap").exists());

    let pure = repx_with_env(lab.path(), &["run"], &[("PATH", path)]);
    pure.expect_code(1).expect_stderr(&[
        "FAILED probe",
        "bubblewrap, which is not installed: install it (Debian: `apt-get install bubblewrap`)",
    ]);
    assert!(!marker.exists(), "the pure tool ran outside a sandbox");
    assert!(common::job_dirs(lab.path()).is_empty());

    // The same tool run impure is on the host by design, and leaves the file.
    let impure = repx_with_env(lab.path(), &["run", "--impure"], &[("PATH", path)]);
    impure.expect_code(0);
    assert_eq!(fs::read_to_string(&marker).unwrap(), "ran\n");
}

#[test]
fn a_host_tool_that_cannot_start_fails_its_job_with_127_saying_why() {
    // Executable, but no program: the reaper's start of it fails, and says so in the log.
    let lab = lab_dir("", &[]);
    let tool = lab.path().join("bin/not-a-program");
    fs::create_dir_all(tool.parent().unwrap()).unwrap();
    fs::write(&tool, b"\x7fELF, but nothing more").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(
        lab.path().join("repx.toml"),
        format!(
            "[stages.start]\nplugin = \"builtin:exec\"\nmode = \"impure\"\n\
             tools = [\"{0}\"]\nparams = {{ program = \"{0}\", stdout = \"out.txt\" }}\n\
             outputs = [\"out.txt\"]\n\
             [pipelines.main]\nstages = [\"start\"]\n[runs.r]\npipelines = [\"main\"]\n",
            tool.display()
        ),
    )
    .unwrap();
    let run = repx(lab.path(), &["run"]);
    run.expect_code(1)
        .expect_stderr(&["FAILED start", "exited with status 127"]);
    let id = run
        .stderr
        .split_whitespace()
        .map(|w| w.trim_end_matches(':'))
        .find(|w| w.len() == 12 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no job id: {}", run.stderr));
    let log = repx(lab.path(), &["log", id]);
    log.expect_code(0);
    assert!(
        log.stdout.contains(&format!(
            "repx: cannot start `{}`: Exec format error",
            tool.display()
        )),
        "{}",
        log.stdout
    );
    assert!(common::job_dirs(lab.path()).is_empty());
}

#[test]
fn the_impure_warning_is_given_once_per_run() {
    let lab = impure_lab("contract-check", "params = { k = 0 }", "{ k = [1, 2, 3] }");
    let run = repx(lab.path(), &["run"]);
    run.expect_code(0);
    assert_eq!(run.ran(), ["s", "s", "s"]);
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("not reproducible"))
        .collect();
    assert_eq!(
        warnings,
        [
            "warning: 3 impure job(s): their results depend on the project directory as it is \
             now and are not reproducible"
        ],
        "{}",
        run.stderr
    );
}

#[test]
fn records_and_show_job_mark_each_job_pure_or_impure() {
    let lab = lab_dir(
        "[stages.gen]\nplugin = \"plugins/generate.wasm\"\nparams = { n = 3 }\n\
         [stages.total]\nplugin = \"plugins/sum.wasm\"\nmode = \"impure\"\ninputs = { data = \"gen\" }\n\
         [pipelines.main]\nstages = [\"gen\", \"total\"]\n[runs.r]\npipelines = [\"main\"]\n",
        &[],
    );
    let run = repx(lab.path(), &["run"]);
    run.expect_code(0);
    assert_eq!(run.ran(), ["gen", "total"]);

    let records = fs::read_to_string(lab.path().join(".repx/records.jsonl")).unwrap();
    let mut modes: Vec<(String, String)> = records
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                record["stage"].as_str().unwrap().to_string(),
                record["mode"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    modes.sort();
    assert_eq!(
        modes,
        [
            ("gen".to_string(), "pure".to_string()),
            ("total".to_string(), "impure".to_string())
        ]
    );

    let shown = repx(lab.path(), &["show", "job", &job_id(&run.stderr, "gen")]);
    shown.expect_code(0);
    let mode = shown.stdout.lines().find(|l| l.starts_with("mode:"));
    assert_eq!(mode, Some("mode:     pure"), "{}", shown.stdout);
}

#[test]
fn a_plugin_cache_a_job_could_write_is_not_used() {
    // Loading a compiled artifact runs its machine code: a cache in the project directory,
    // which an impure job of any run has at /work, or in the store must not be read or
    // written, whatever the modes of the run at hand.
    let lab = impure_lab("generate", "params = { n = 3 }", "{}");
    let compiled = |dir: &Path| {
        common::tree_state(dir)
            .into_iter()
            .filter(|(p, _, _)| p.extension().is_some_and(|e| e == "cwasm"))
            .count()
    };
    for cache in [
        lab.path().join(".cache/repx"),
        lab.path().join(".repx/cache"),
    ] {
        let run = repx_with_env(
            lab.path(),
            &["run", "--force"],
            &[("REPX_CACHE_DIR", cache.to_str().unwrap())],
        );
        run.expect_code(0).expect_stderr(&[
            &format!("warning: the plugin cache {} is not used", cache.display()),
            "set REPX_CACHE_DIR to a directory outside it",
        ]);
        assert_eq!(run.ran(), ["s"]);
        assert_eq!(compiled(lab.path()), 0, "{}", cache.display());
    }

    // Nor by a pure run: an impure job of any run may have written the project directory.
    let cache = lab.path().join(".cache/repx");
    let pure = repx_with_env(
        lab.path(),
        &["run", "--pure"],
        &[("REPX_CACHE_DIR", cache.to_str().unwrap())],
    );
    pure.expect_code(0).expect_stderr(&[&format!(
        "warning: the plugin cache {} is not used",
        cache.display()
    )]);
    assert_eq!(compiled(lab.path()), 0);
}

/// `repx run --watch` in `lab` (with `targets`), its stderr lines read as they come.
struct Watching {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watching {
    fn start(lab: &Path) -> Watching {
        Watching::with_targets(lab, &[])
    }

    fn with_targets(lab: &Path, targets: &[&str]) -> Watching {
        use std::io::BufRead;
        let args: Vec<&str> = ["run", "--watch"].iter().chain(targets).copied().collect();
        let mut child = common::repx_command(lab, &args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        Watching {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next run's line (`watch: WHY: WHAT in N ms`), failing after a long while.
    #[track_caller]
    fn next_cycle(&mut self) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(std::time::Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("no run's line; so far:\n{}", self.seen.join("\n")));
            self.seen.push(line.clone());
            if line.starts_with("watch: ") {
                return line;
            }
        }
    }

    /// Ctrl-C: the exit code, and every line after the last run's.
    fn interrupt(&mut self) -> (Option<i32>, Vec<String>) {
        // SAFETY: a plain kill(2) of our own child, which has not been waited for.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        let rest: Vec<String> = self.lines.iter().collect();
        (status.code(), rest)
    }
}

/// A failed test leaves no watcher behind.
impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_mode_runs_once_per_edit_and_ctrl_c_exits_130() {
    let lab = example();
    let src = lab.path().join("src");
    let file1 = fs::read_to_string(src.join("file1.c")).unwrap();
    let edit = |to: &str| {
        let text = file1.replace("\"F1\\n\"", &format!("\"{to}\\n\""));
        fs::write(src.join("file1.c"), text).unwrap()
    };
    let mut watching = Watching::start(lab.path());
    let start = watching.next_cycle();
    assert!(
        start.starts_with("watch: start: ran build, run in "),
        "{start}"
    );

    edit("F1 first");
    let first = watching.next_cycle();
    assert!(
        first.starts_with("watch: src/file1.c changed: ran build, run in "),
        "{first}"
    );
    assert!(run_logs(lab.path()).contains(&"Main\nF1 first\nF2\n".to_string()));

    edit("F1 second");
    let second = watching.next_cycle();
    assert!(
        second.starts_with("watch: src/file1.c changed: ran build, run in "),
        "{second}"
    );
    assert!(run_logs(lab.path()).contains(&"Main\nF1 second\nF2\n".to_string()));

    // make's objects, the binary and the store, written by those runs, started none.
    let (code, rest) = watching.interrupt();
    assert_eq!(code, Some(130), "{rest:?}");
    assert_eq!(rest, ["watch: interrupted"], "a run its own writes started");
    // Nothing half-committed: every job directory is whole, and nothing runs again.
    let again = repx(lab.path(), &["run"]);
    again.expect_code(0);
    assert_eq!(again.cached(), ["build", "run"]);
}

#[test]
fn a_build_broken_by_an_edit_shows_the_compiler_s_errors_and_is_listed_failed() {
    let lab = example();
    let file2 = lab.path().join("src/file2.c");
    let good = fs::read_to_string(&file2).unwrap();
    repx(lab.path(), &["run"]).expect_code(0);

    // The plugin's own message only says that make failed: the compiler's says why.
    fs::write(&file2, good.replace("\"F2\\n\");", "\"F2\\n\")")).unwrap();
    let broken = repx(lab.path(), &["run"]);
    broken.expect_code(1).expect_stderr(&[
        "FAILED build",
        "| error: `make` exited with status 2",
        "| $ make mybinary (in /work/src)",
        "| file2.c:3:",
        "error: expected ';'",
    ]);
    let id = broken
        .stderr
        .split_whitespace()
        .map(|w| w.trim_end_matches(':'))
        .find(|w| w.len() == 12 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap()
        .to_string();
    // The build keeps its id (it is impure) and its last good output: what the user asks
    // about is the run that failed.
    let listed = repx(lab.path(), &["list", "jobs", "--status", "failed"]);
    assert!(
        listed.stdout.contains(&format!("{id}  failed build")),
        "{}",
        listed.stdout
    );
    let shown = repx(lab.path(), &["show", "job", &id]);
    assert!(
        shown.stdout.contains("state:    failed"),
        "{}",
        shown.stdout
    );
    let log = repx(lab.path(), &["log", &id]);
    assert!(log.stdout.contains("error: expected ';'"), "{}", log.stdout);

    // In watch mode the errors come under the cycle's line, and the fix builds.
    let mut watching = Watching::start(lab.path());
    let start = watching.next_cycle();
    assert!(
        start.starts_with("watch: start: FAILED build (repx log "),
        "{start}"
    );
    assert!(start.ends_with("; waiting for changes"), "{start}");
    fs::write(&file2, &good).unwrap();
    let fixed = watching.next_cycle();
    assert!(
        fixed.starts_with("watch: src/file2.c changed: ran build"),
        "{fixed}"
    );
    assert!(
        watching
            .seen
            .iter()
            .any(|l| l.starts_with("    | ") && l.contains("error: expected ';'")),
        "{:?}",
        watching.seen
    );
    let (code, _) = watching.interrupt();
    assert_eq!(code, Some(130));
    let listed = repx(lab.path(), &["list", "jobs", "--status", "failed"]);
    listed.expect_code(0);
    assert!(!listed.stdout.contains(&id), "{}", listed.stdout);
    let shown = repx(lab.path(), &["show", "job", &id]);
    assert!(shown.stdout.contains("state:    done"), "{}", shown.stdout);
}

#[test]
fn in_watch_mode_an_edit_saved_during_the_first_run_starts_the_next() {
    let lab = example();
    hold_the_link(lab.path());
    grant_the_shell(lab.path());
    let file1 = lab.path().join("src/file1.c");
    let text = fs::read_to_string(&file1).unwrap();
    let mut watching = Watching::start(lab.path());
    // The first run's make has read file1.c and waits to link: an edit now.
    wait_for(&lab.path().join("linking"));
    fs::write(&file1, text.replace("\"F1\\n\"", "\"F1 during\\n\"")).unwrap();
    fs::write(lab.path().join("go"), "").unwrap();
    let start = watching.next_cycle();
    assert!(start.starts_with("watch: start: ran build, run"), "{start}");
    let next = watching.next_cycle();
    assert!(
        next.starts_with("watch: src/file1.c changed: ran build, run"),
        "{next}"
    );
    assert!(run_logs(lab.path()).contains(&"Main\nF1 during\nF2\n".to_string()));
    let (code, _) = watching.interrupt();
    assert_eq!(code, Some(130));
}

#[test]
fn in_watch_mode_an_edit_of_a_tool_given_by_a_path_runs_its_stage_again() {
    let lab = impure_lab(
        "test-tool",
        "tools = [\"./say.sh\"]\nparams = { tool = \"./say.sh\", cwd = \"/work\", \
         stdout_file = \"/out/said.txt\" }\nsources = [\"notes/**\"]",
        "{}",
    );
    let script = lab.path().join("say.sh");
    let write_script = |said: &str| {
        use std::os::unix::fs::PermissionsExt;
        fs::write(&script, format!("#!/bin/sh\necho {said}\n")).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_script("first");
    let mut watching = Watching::start(lab.path());
    let start = watching.next_cycle();
    assert!(start.starts_with("watch: start: ran s"), "{start}");
    write_script("second");
    let next = watching.next_cycle();
    assert!(next.starts_with("watch: say.sh changed: ran s"), "{next}");
    let (code, _) = watching.interrupt();
    assert_eq!(code, Some(130));
    let said: Vec<String> = common::job_dirs(lab.path())
        .iter()
        .filter_map(|dir| fs::read_to_string(dir.join("out/said.txt")).ok())
        .collect();
    // The tool is part of the job's id: a new job, with the new tool's output.
    assert!(said.contains(&"second\n".to_string()), "{said:?}");
}

#[test]
fn watch_mode_with_targets_watches_only_what_they_depend_on() {
    // A second run copies notes/a.txt; `--watch build` selects the example's run only.
    let lab = example();
    let toml = fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    fs::write(
        lab.path().join("repx.toml"),
        format!(
            "{toml}\n[stages.notes]\nplugin = \"plugins/test-tool.wasm\"\n\
             inputs = {{ notes = \"path:notes\" }}\ntools = [\"cp\"]\n\
             params = {{ tool = \"cp\", args = [\"/in/notes/a.txt\", \"/out/a.txt\"] }}\n\
             outputs = [\"a.txt\"]\n[pipelines.docs]\nstages = [\"notes\"]\n\
             [runs.docs]\npipelines = [\"docs\"]\n"
        ),
    )
    .unwrap();
    fs::create_dir(lab.path().join("plugins")).unwrap();
    fs::copy(
        common::plugin_wasm("test-tool"),
        lab.path().join("plugins/test-tool.wasm"),
    )
    .unwrap();
    fs::create_dir(lab.path().join("notes")).unwrap();
    fs::write(lab.path().join("notes/a.txt"), "one\n").unwrap();

    let mut watching = Watching::with_targets(lab.path(), &["build"]);
    let start = watching.next_cycle();
    assert!(
        start.starts_with("watch: start: ran build, run in "),
        "{start}"
    );
    // The other run's input changes first: had it been watched, the next line would name
    // it (alone, or with file1.c in one burst).
    fs::write(lab.path().join("notes/a.txt"), "two\n").unwrap();
    let src = lab.path().join("src");
    let file1 = fs::read_to_string(src.join("file1.c")).unwrap();
    fs::write(
        src.join("file1.c"),
        file1.replace("\"F1\\n\"", "\"F1 edited\\n\""),
    )
    .unwrap();
    let next = watching.next_cycle();
    assert!(
        next.starts_with("watch: src/file1.c changed: ran build, run in "),
        "{next}"
    );
    assert!(run_logs(lab.path()).contains(&"Main\nF1 edited\nF2\n".to_string()));
    let (code, rest) = watching.interrupt();
    assert_eq!(code, Some(130), "{rest:?}");
    assert_eq!(
        rest,
        ["watch: interrupted"],
        "a run the other run's input started"
    );

    // Without targets, the other run's input is watched too.
    let mut watching = Watching::start(lab.path());
    let start = watching.next_cycle();
    assert!(start.starts_with("watch: start: ran notes"), "{start}");
    fs::write(lab.path().join("notes/a.txt"), "three\n").unwrap();
    let next = watching.next_cycle();
    assert!(
        next.starts_with("watch: notes/a.txt changed: ran notes, 2 cached in "),
        "{next}"
    );
    watching.interrupt();
}

#[test]
fn in_watch_mode_a_changed_plugin_file_runs_the_new_plugin() {
    // The runtime, and the plugins it loaded, are kept from one run to the next: a plugin
    // whose bytes changed must be the one that runs.
    let lab = lab_dir(
        "[stages.s]\nplugin = \"plugins/p.wasm\"\nparams = { n = 3 }\n\
         [pipelines.main]\nstages = [\"s\"]\n[runs.r]\npipelines = [\"main\"]\n",
        &["test-fail"],
    );
    let plugin = lab.path().join("plugins/p.wasm");
    fs::copy(lab.path().join("plugins/generate.wasm"), &plugin).unwrap();
    let mut watching = Watching::start(lab.path());
    let start = watching.next_cycle();
    assert!(start.starts_with("watch: start: ran s in "), "{start}");

    fs::copy(lab.path().join("plugins/test-fail.wasm"), &plugin).unwrap();
    let failed = watching.next_cycle();
    assert!(
        failed.starts_with("watch: plugins/p.wasm changed: FAILED s (repx log "),
        "{failed}"
    );
    assert!(failed.ends_with("; waiting for changes"), "{failed}");

    // Back to the first plugin: its job is in the store.
    fs::copy(lab.path().join("plugins/generate.wasm"), &plugin).unwrap();
    let back = watching.next_cycle();
    assert!(
        back.starts_with("watch: plugins/p.wasm changed: 1 cached in "),
        "{back}"
    );
    let (code, _) = watching.interrupt();
    assert_eq!(code, Some(130));
}

#[test]
fn in_watch_mode_an_edit_saved_while_make_runs_starts_the_next_run() {
    let lab = example();
    let src = lab.path().join("src");
    hold_the_link(lab.path());
    grant_the_shell(lab.path());
    let file1 = fs::read_to_string(src.join("file1.c")).unwrap();
    let edit = |to: &str| {
        let text = file1.replace("\"F1\\n\"", &format!("\"{to}\\n\""));
        fs::write(src.join("file1.c"), text).unwrap()
    };
    fs::write(lab.path().join("go"), "").unwrap();
    let mut watching = Watching::start(lab.path());
    let start = watching.next_cycle();
    assert!(start.starts_with("watch: start: ran build, run"), "{start}");
    fs::remove_file(lab.path().join("go")).unwrap();
    fs::remove_file(lab.path().join("linking")).unwrap();

    // The edit starts a run; make compiles file1.c and waits in the link step, where the
    // second edit lands.
    edit("F1 first");
    wait_for(&lab.path().join("linking"));
    edit("F1 second");
    fs::write(lab.path().join("go"), "").unwrap();
    let first = watching.next_cycle();
    assert!(first.contains("ran build, run"), "{first}");
    // The next run starts by itself and builds the second edit.
    let second = watching.next_cycle();
    assert!(
        second.starts_with("watch: src/file1.c changed: ran build, run"),
        "{second}"
    );
    assert!(run_logs(lab.path()).contains(&"Main\nF1 second\nF2\n".to_string()));
    let (code, rest) = watching.interrupt();
    assert_eq!(code, Some(130));
    assert_eq!(rest, ["watch: interrupted"]);
}

/// The one file cargo's dev profile built whose name starts with `prefix` and ends with
/// `suffix` in `dir`, with its mtime.
fn built(dir: &Path, prefix: &str, suffix: &str) -> (PathBuf, SystemTime) {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    assert_eq!(found.len(), 1, "{prefix}*{suffix} in {}", dir.display());
    let time = mtime(&found[0]);
    (found[0].clone(), time)
}

#[test]
fn the_cargo_example_builds_in_place_and_rebuilds_only_the_edited_crate() {
    let lab = copy_example("impure-cargo");
    let crate_dir = lab.path().join("hello");
    let _ = fs::remove_dir_all(crate_dir.join("target"));
    let deps = crate_dir.join("target/debug/deps");

    let first = repx(lab.path(), &["run"]);
    first.expect_code(0);
    assert_eq!(first.ran(), ["build", "run"]);
    assert_eq!(
        common::read_output(lab.path(), "run.log"),
        "Hello, repx\nBUILT IN PLACE!\n"
    );
    let (greet, greet_built) = built(&deps, "libgreet-", ".rlib");
    let binary = crate_dir.join("target/debug/hello");
    let binary_built = mtime(&binary);

    // Nothing changed: the stage is cached and cargo is not run (target/ is as it was).
    let again = repx(lab.path(), &["run"]);
    again.expect_code(0);
    assert_eq!(again.cached(), ["build", "run"]);
    assert_eq!(mtime(&binary), binary_built);

    // An edit of one module of `hello`: cargo rebuilds `hello` from the target/ it left,
    // and not its dependency `greet`.
    let shout = crate_dir.join("src/shout.rs");
    let text = fs::read_to_string(&shout).unwrap();
    fs::write(&shout, text.replace("to_uppercase()", "to_lowercase()")).unwrap();
    let edited = repx(lab.path(), &["run"]);
    edited.expect_code(0);
    assert_eq!(edited.ran(), ["build", "run"]);
    assert!(run_logs(lab.path()).contains(&"Hello, repx\nbuilt in place!\n".to_string()));
    assert_eq!(built(&deps, "libgreet-", ".rlib"), (greet, greet_built));
    assert_ne!(mtime(&binary), binary_built);
}
