//! Helpers shared by the end-to-end tests: where the repository and its built plugins are,
//! throwaway lab directories, running the real `repx` binary, and reading its output and
//! store the way a user would.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// A file that `scripts/build-plugins` produces, relative to the repository root.
pub fn built(relative: &str) -> PathBuf {
    let path = repo_root().join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins first",
        path.display()
    );
    path
}

/// A first-party plugin built as a component: `plugins/target/wasm32-wasip2/release/<name>.wasm`.
pub fn plugin_wasm(name: &str) -> PathBuf {
    built(&format!("plugins/target/wasm32-wasip2/release/{name}.wasm"))
}

/// A first-party plugin built as a core module: `plugins/target/wasm32-wasip1/release/<name>.wasm`.
pub fn plugin_wasm_p1(name: &str) -> PathBuf {
    built(&format!("plugins/target/wasm32-wasip1/release/{name}.wasm"))
}

/// A directory removed (read-only parts included) when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "repx-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        remove_tree(&path);
        remove_tree(&cache_home_of(&path));
        fs::create_dir_all(&path).expect("creating a temporary directory");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TempDir {
    fn default() -> TempDir {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_tree(&self.path);
        remove_tree(&cache_home_of(&self.path));
    }
}

/// The `XDG_CACHE_HOME` of every `repx` a test runs in `dir`: beside the test's temporary
/// directory (`<tmp>/repx-test-…` gets `<tmp>/repx-test-….cache`), so the default stores
/// (`$XDG_CACHE_HOME/repx/stores/…`) lie outside the lab, as they do for users, are removed
/// with it, and nothing lands in the real `~/.cache`.
pub fn cache_home(dir: &Path) -> PathBuf {
    let tmp = std::env::temp_dir();
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    match dir.ancestors().find(|a| a.parent() == Some(tmp.as_path())) {
        Some(test)
            if test
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("repx-test-")) =>
        {
            cache_home_of(test)
        }
        _ => tmp.join(format!("repx-test-cache-{}", std::process::id())),
    }
}

fn cache_home_of(test_dir: &Path) -> PathBuf {
    let mut name = test_dir.as_os_str().to_owned();
    name.push(".cache");
    PathBuf::from(name)
}

/// The default store of the project `lab`, where `repx` run in it puts it.
pub fn default_store(lab: &Path) -> PathBuf {
    fs::canonicalize(lab.join(".repx")).expect("the .repx link to the store")
}

/// Makes everything under `path` writable by its owner (committed outputs are read-only).
pub fn make_writable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.file_type().is_symlink() {
        return;
    }
    let mut perms = meta.permissions();
    perms.set_mode(perms.mode() | 0o200);
    let _ = fs::set_permissions(path, perms);
    if meta.is_dir() {
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            make_writable(&entry.path());
        }
    }
}

/// `chmod -R u+w` then `rm -rf`; no error when `path` does not exist.
pub fn remove_tree(path: &Path) {
    if fs::symlink_metadata(path).is_err() {
        return;
    }
    make_writable(path);
    if path.is_dir() {
        fs::remove_dir_all(path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
    } else {
        fs::remove_file(path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == ".repx" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A fresh copy of `examples/<name>` (with its built `plugins/*.wasm`, without any `.repx`).
pub fn copy_example(name: &str) -> TempDir {
    let example = repo_root().join("examples").join(name);
    assert!(example.is_dir(), "no example {}", example.display());
    let lab = fs::read_to_string(example.join("repx.toml")).unwrap_or_default();
    let has_wasm = !lab.contains("plugins/")
        || fs::read_dir(example.join("plugins"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "wasm"));
    assert!(
        has_wasm,
        "{}/plugins has no .wasm: run scripts/build-plugins first",
        example.display()
    );
    let dir = TempDir::new();
    copy_dir(&example, dir.path());
    dir
}

/// A temporary lab: `repx.toml` with `toml`, and `plugins/` holding the simple example's
/// plugins plus the named first-party ones (`test-fail` → `plugins/test-fail.wasm`).
pub fn lab_dir(toml: &str, extra_plugins: &[&str]) -> TempDir {
    let dir = TempDir::new();
    let plugins = dir.path().join("plugins");
    fs::create_dir_all(&plugins).unwrap();
    for name in ["generate", "sum", "plot"] {
        fs::copy(
            built(&format!("examples/simple/plugins/{name}.wasm")),
            plugins.join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    for name in extra_plugins {
        fs::copy(plugin_wasm(name), plugins.join(format!("{name}.wasm"))).unwrap();
    }
    fs::write(dir.path().join("repx.toml"), toml).unwrap();
    dir
}

/// What one `repx` command did.
#[derive(Debug)]
pub struct Output {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts the exit code, showing the whole output when it differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Output {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts that stderr contains each of `needles`.
    #[track_caller]
    pub fn expect_stderr(&self, needles: &[&str]) -> &Output {
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr lacks {needle:?}\n--- stderr:\n{}",
                self.stderr
            );
        }
        self
    }

    /// The stage names of the `   ran STAGE …` lines, in order.
    pub fn ran(&self) -> Vec<String> {
        stage_lines(&self.stderr, "ran")
    }

    /// The stage names of the cached jobs, sorted, once per job: from the closing
    /// `cached  STAGE  N jobs` lines, or the `cached STAGE …` line of each job (`-v`).
    pub fn cached(&self) -> Vec<String> {
        let mut stages = Vec::new();
        for line in self.stderr.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                ["cached", stage, count, "job" | "jobs"] if count.parse::<usize>().is_ok() => {
                    stages.extend(std::iter::repeat_n(
                        stage.to_string(),
                        count.parse().unwrap(),
                    ))
                }
                ["cached", stage, ..] => stages.push(stage.to_string()),
                _ => {}
            }
        }
        stages.sort();
        stages
    }

    /// The final `N jobs: …` line.
    pub fn summary(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|l| l.contains(" jobs: "))
            .unwrap_or_else(|| panic!("no summary line\n--- stderr:\n{}", self.stderr))
    }
}

/// Stage names of the event lines starting with `word`, sorted.
fn stage_lines(stderr: &str, word: &str) -> Vec<String> {
    let mut stages: Vec<String> = stderr
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(word))
                .then(|| words.next().map(str::to_string))
                .flatten()
        })
        .collect();
    stages.sort();
    stages
}

/// The statically linked repx that builds hermetic jobs in the Nix sandbox, as
/// `scripts/test` builds it beside this test's own binary.
pub fn static_repx() -> PathBuf {
    let target = Path::new(env!("CARGO_BIN_EXE_repx"))
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in <target>/<profile>/");
    let path = target.join("x86_64-unknown-linux-musl/release/repx");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --release --target x86_64-unknown-linux-musl -p repx` (scripts/test does)",
        path.display()
    );
    path
}

/// The compiled-plugin cache all tests share, so each plugin is compiled once.
pub fn cache_dir() -> PathBuf {
    repo_root().join("target").join("test-wasm-cache")
}

/// Runs the real `repx` binary in `dir` with `args`.
pub fn repx(dir: &Path, args: &[&str]) -> Output {
    repx_with_env(dir, args, &[])
}

/// The `repx` command for `dir` and `args`, not started yet.
pub fn repx_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_repx"));
    command
        .args(args)
        .current_dir(dir)
        .env("REPX_CACHE_DIR", cache_dir())
        .env("XDG_CACHE_HOME", cache_home(dir));
    command
}

/// Runs `repx` with extra environment variables.
pub fn repx_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = repx_command(dir, args)
        .envs(env.iter().copied())
        .output()
        .expect("running repx");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `repx`, killing it after `limit`: a hang fails the test instead of stalling it.
#[track_caller]
pub fn repx_within(dir: &Path, args: &[&str], limit: std::time::Duration) -> Output {
    use std::io::Read;
    let mut child = repx_command(dir, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running repx");
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as _),
        child.stderr.take().map(|p| Box::new(p) as _),
    ];
    let readers = pipes.map(|pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`repx {}` still ran after {limit:?}", args.join(" "));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let [stdout, stderr] = readers.map(|r| r.join().unwrap());
    Output {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// The directories of committed jobs: `<lab>/.repx/jobs/*`, sorted.
pub fn job_dirs(lab: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(lab.join(".repx/jobs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// The one committed job directory whose `out/` holds `file`.
#[track_caller]
pub fn job_with_output(lab: &Path, file: &str) -> PathBuf {
    let found: Vec<PathBuf> = job_dirs(lab)
        .into_iter()
        .filter(|d| d.join("out").join(file).is_file())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "jobs with out/{file} in {}: {found:?}",
        lab.display()
    );
    found.into_iter().next().unwrap()
}

/// The committed output file `file`, read from the one job that has it.
#[track_caller]
pub fn read_output(lab: &Path, file: &str) -> String {
    fs::read_to_string(job_with_output(lab, file).join("out").join(file)).unwrap()
}

/// The short id (12 hex digits) on the `FAILED STAGE … ID: …` line for `stage`.
#[track_caller]
pub fn failed_id(stderr: &str, stage: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("FAILED {stage} ")))
        .unwrap_or_else(|| panic!("no FAILED line for {stage}\n--- stderr:\n{stderr}"));
    let before_colon = line.split(':').next().unwrap();
    let id = before_colon.split_whitespace().last().unwrap().to_string();
    assert!(
        id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "no short id on {line:?}"
    );
    id
}

/// Every file and directory under `root` with its modification time and size.
pub fn tree_state(root: &Path) -> Vec<(PathBuf, std::time::SystemTime, u64)> {
    let mut state = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        state.push((path.clone(), meta.modified().unwrap(), meta.len()));
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    state.sort();
    state
}

/// `a-bad` fails (30 lines on stderr, then exit 3), `b-after` reads it, `c-indep` does not.
/// The names fix the order in which ready jobs are queued: `a-bad` first.
pub const FAILING: &str = r#"
[stages.a-bad]
plugin = "plugins/test-fail.wasm"
params = { code = 3 }

[stages.b-after]
plugin = "plugins/sum.wasm"
inputs = { data = "a-bad" }

[stages.c-indep]
plugin = "plugins/generate.wasm"
params = { n = 5 }

[pipelines.p]
stages = ["a-bad", "b-after", "c-indep"]

[runs.r]
pipelines = ["p"]
"#;
