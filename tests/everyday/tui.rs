//! `repx tui` in a real terminal: tmux runs it, `send-keys` types, `capture-pane` reads
//! the screen.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{cache_dir, cache_home, copy_example, job_dirs, lab_dir, repx};

/// A tmux server of its own, running `repx tui` in `lab` on a 110×30 screen; killed when
/// dropped.
struct Screen {
    socket: String,
}

impl Screen {
    fn start(lab: &Path) -> Screen {
        static N: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "repx-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let command = format!(
            "env REPX_CACHE_DIR={} XDG_CACHE_HOME={} {} tui",
            cache_dir().display(),
            cache_home(lab).display(),
            env!("CARGO_BIN_EXE_repx")
        );
        let status = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "110",
                "-y",
                "30",
                "-c",
            ])
            .arg(lab)
            .arg(command)
            .status()
            .expect("tmux (scripts/setup-tests installs it)");
        assert!(status.success());
        Screen { socket }
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            self.tmux(&["send-keys", "-t", "t", key]);
        }
    }

    /// Waits (a minute at most, so a hang fails) until the screen shows what `ok` wants.
    #[track_caller]
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let started = std::time::Instant::now();
        loop {
            let text = self.text();
            if ok(&text) {
                return text;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "no {what} on the screen after a minute:\n{text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn running(&self) -> bool {
        self.tmux(&["has-session", "-t", "t"]).status.success()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

#[test]
fn the_tree_filters_runs_a_job_with_what_it_needs_and_shows_its_log() {
    let lab = copy_example("simple");
    let screen = Screen::start(lab.path());
    let first = screen.wait("tree", |s| s.contains("stage sum (0/1 done)"));
    for line in [
        "run simple",
        "stage generate (0/1 done)",
        "stage plot (0/1 done)",
    ] {
        assert!(first.contains(line), "{line}:\n{first}");
    }
    assert!(first.contains("todo    generate [n=100]"), "{first}");

    screen.keys(&["/", "s", "u", "m", "Enter"]);
    let filtered = screen.wait("filter", |s| {
        s.contains("filter: sum") && !s.contains("stage plot")
    });
    assert!(
        filtered
            .lines()
            .any(|l| l.starts_with("│>") && l.contains("todo    sum")),
        "the cursor is on the one job left:\n{filtered}"
    );

    screen.keys(&["r"]);
    let ran = screen.wait("sum done", |s| s.contains("stage sum (1/1 done)"));
    assert!(ran.contains("ended: exit status: 0"), "{ran}");
    // sum and what it needs ran; plot did not.
    assert_eq!(job_dirs(lab.path()).len(), 2);

    screen.keys(&["Enter"]);
    screen.wait("log view", |s| s.contains("log of ") && s.contains(" sum "));
    screen.keys(&["q"]);
    let started = std::time::Instant::now();
    while screen.running() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "q did not quit"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_run_started_from_the_tui_can_be_cancelled() {
    let lab = lab_dir(
        r#"
[stages.slow]
plugin = "plugins/test-follow.wasm"
mode = "impure"

[pipelines.main]
stages = ["slow"]

[runs.main]
pipelines = ["main"]
"#,
        &["test-follow"],
    );
    let screen = Screen::start(lab.path());
    screen.wait("tree", |s| s.contains("stage slow (0/1 done)"));
    screen.keys(&["r"]);
    screen.wait("running job", |s| s.contains("running slow"));
    // Its log follows it while it waits.
    screen.keys(&["Enter"]);
    screen.wait("live log", |s| s.contains("first line"));
    screen.keys(&["c"]);
    let ended = screen.wait("cancelled run", |s| s.contains("ended: exit status: 130"));
    // Not done; how an interrupted job is named is the list's (`repx list jobs`).
    assert!(!ended.contains("done    slow"), "{ended}");
    assert!(
        job_dirs(lab.path()).is_empty(),
        "a cancelled job was committed"
    );
}

#[test]
fn the_tree_shows_the_state_repx_run_acts_on() {
    let lab = lab_dir(
        r#"
[stages.imp]
plugin = "plugins/generate.wasm"
mode = "impure"
sources = ["src/**"]
params = { n = 3 }

[stages.flaky]
plugin = "plugins/test-fail.wasm"

[pipelines.main]
stages = ["imp", "flaky"]

[runs.main]
pipelines = ["main"]
"#,
        &["test-fail"],
    );
    std::fs::create_dir_all(lab.path().join("src")).unwrap();
    std::fs::write(lab.path().join("src/a.txt"), "one\n").unwrap();
    repx(lab.path(), &["run", "--continue-on-failure"]).expect_code(1);
    // The impure job's output is still in the store, but a run would build it again.
    std::fs::write(lab.path().join("src/a.txt"), "two\n").unwrap();
    let screen = Screen::start(lab.path());
    let tree = screen.wait("tree", |s| s.contains("stage imp (") && s.contains("flaky"));
    assert!(tree.contains("stage imp (0/1 done)"), "{tree}");
    assert!(tree.contains("todo    imp"), "{tree}");
    assert!(tree.contains("failed  flaky"), "{tree}");
}
