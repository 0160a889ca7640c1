//! Case (h), the seed's edit cycle: edit `file1.c` of the impure example, then get the new
//! `run.log`, through `repx run`, through `repx run --watch`, and with `make && ./mybinary`
//! on a copy of the same tree, alternating, in one run.
//!
//! Each `repx run` sample is a fresh process, start included, and is checked: its
//! `run.log` holds the edit. A `--watch` sample runs from the edit's write to the run's
//! line, which `repx` prints once `run.log` is committed. The no-op `repx run` of the
//! same lab is measured too.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{BenchError, Case, Figure, Role, Target, Unit, ms};
use crate::store::Store;

const EXAMPLE: [(&str, &str); 5] = [
    (
        "repx.toml",
        include_str!("../../../examples/impure-incremental/repx.toml"),
    ),
    (
        "src/Makefile",
        include_str!("../../../examples/impure-incremental/src/Makefile"),
    ),
    (
        "src/main.c",
        include_str!("../../../examples/impure-incremental/src/main.c"),
    ),
    (
        "src/file1.c",
        include_str!("../../../examples/impure-incremental/src/file1.c"),
    ),
    (
        "src/file2.c",
        include_str!("../../../examples/impure-incremental/src/file2.c"),
    ),
];

fn failed(message: String) -> BenchError {
    BenchError::Case {
        case: Case::H,
        message,
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |e| failed(format!("{}: {e}", path.display()))
}

/// Writes the example into `dir`.
fn example(dir: &Path) -> Result<(), BenchError> {
    for (name, text) in EXAMPLE {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("a file in a directory")).map_err(io(dir))?;
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(())
}

/// `file1.c` printing `F1 {n}`.
fn edit(dir: &Path, n: usize) -> Result<(), BenchError> {
    let path = dir.join("src/file1.c");
    let text = EXAMPLE[3].1.replace("\"F1\\n\"", &format!("\"F1 {n}\\n\""));
    std::fs::write(&path, text).map_err(io(&path))
}

struct Repx<'a> {
    exe: &'a Path,
    lab: PathBuf,
    store: PathBuf,
    cache: &'a Path,
}

impl Repx<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.exe);
        command
            .arg("--store")
            .arg(&self.store)
            .args(args)
            .current_dir(&self.lab)
            .env("REPX_CACHE_DIR", self.cache)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    /// One `repx run`, timed; its stderr must show that `ran` jobs ran.
    fn run(&self, ran: usize) -> Result<Duration, BenchError> {
        let started = Instant::now();
        let output = self
            .command(&["run"])
            .output()
            .map_err(|e| failed(format!("running {}: {e}", self.exe.display())))?;
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let summary = stderr.lines().last().unwrap_or_default();
        if !output.status.success() || !summary.contains(&format!(" {ran} ran,")) {
            return Err(failed(format!(
                "`repx run` in {}: expected {ran} jobs to run ({}): {summary}",
                self.lab.display(),
                output.status
            )));
        }
        Ok(took)
    }

    /// Whether a committed `run.log` says `F1 {n}`.
    fn shows(&self, n: usize) -> bool {
        let wanted = format!("Main\nF1 {n}\nF2\n");
        let Ok(store) = Store::open_reader(&self.store) else {
            return false;
        };
        store.records().iter().any(|record| {
            std::fs::read_to_string(store.output_dir(&record.id).join("run.log")).ok()
                == Some(wanted.clone())
        })
    }
}

/// `make -s && ./mybinary > run.log` in the copy's `src/`, timed.
fn make(dir: &Path) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let status = Command::new("sh")
        .args(["-c", "make -s mybinary && ./mybinary > run.log"])
        .current_dir(dir.join("src"))
        .stdin(Stdio::null())
        .status()
        .map_err(|e| failed(format!("running make: {e}")))?;
    let took = started.elapsed();
    if !status.success() {
        return Err(failed(format!("make in {}: {status}", dir.display())));
    }
    Ok(took)
}

/// `repx run --watch`, its lines read as they come.
struct Watching {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watching {
    fn start(repx: &Repx) -> Result<Watching, BenchError> {
        let mut child = repx
            .command(&["run", "--watch"])
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("running {}: {e}", repx.exe.display())))?;
        let stderr = BufReader::new(child.stderr.take().expect("piped"));
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if line.starts_with("watch: ") && send.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Watching { child, lines })
    }

    fn next(&self) -> Result<String, BenchError> {
        self.lines
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| failed("`repx run --watch` printed no run's line".into()))
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Case (h) in `work`, `samples` edits each way.
pub fn measure(
    work: &Path,
    exe: &Path,
    cache: &Path,
    samples: usize,
) -> Result<Vec<Figure>, BenchError> {
    let (lab, bare) = (work.join("h-lab"), work.join("h-make"));
    example(&lab)?;
    example(&bare)?;
    let repx = Repx {
        exe,
        lab,
        store: work.join("h-store"),
        cache,
    };
    // First builds, not measured.
    repx.run(2)?;
    make(&bare)?;

    let (mut with_repx, mut with_make, mut noop) = (Vec::new(), Vec::new(), Vec::new());
    for n in 1..=samples {
        edit(&repx.lab, n)?;
        with_repx.push(ms(repx.run(2)?));
        if !repx.shows(n) {
            return Err(failed(format!("no run.log shows edit {n}")));
        }
        noop.push(ms(repx.run(0)?));
        edit(&bare, n)?;
        with_make.push(ms(make(&bare)?));
    }

    let watching = Watching::start(&repx)?;
    watching.next()?;
    let mut with_watch = Vec::new();
    for n in samples + 1..=2 * samples {
        let started = Instant::now();
        edit(&repx.lab, n)?;
        let line = watching.next()?;
        with_watch.push(ms(started.elapsed()));
        if !line.contains("ran build, run") || !repx.shows(n) {
            return Err(failed(format!("the edit {n} was not built: {line}")));
        }
    }
    drop(watching);

    let median = |samples: &[f64]| {
        super::median_by(samples, |s| *s)
            .copied()
            .unwrap_or_default()
    };
    let (make_ms, repx_ms) = (median(&with_make), median(&with_repx));
    let n = samples;
    Ok(vec![
        Figure::median(
            Case::H,
            Role::Baseline,
            format!("make && ./mybinary after an edit, median of {n}"),
            &with_make,
            Unit::Ms,
        ),
        Figure::median(
            Case::H,
            Role::Measure,
            format!("repx run after an edit, until run.log shows it, median of {n}"),
            &with_repx,
            Unit::Ms,
        ),
        Figure::new(
            Case::H,
            Role::Ratio,
            "repx run against make",
            repx_ms / make_ms.max(f64::MIN_POSITIVE),
            Unit::Times,
        )
        .target(Target::AtMost(1.15)),
        Figure::median(
            Case::H,
            Role::Measure,
            format!("no-op repx run, median of {n}"),
            &noop,
            Unit::Ms,
        )
        .target(Target::AtMost(10.0)),
        Figure::median(
            Case::H,
            Role::Measure,
            format!("repx run --watch, from the edit to the run's line, median of {n}"),
            &with_watch,
            Unit::Ms,
        )
        .target(Target::AtMost(make_ms + 20.0)),
    ])
}
