//! Case (i): a trivial plugin in Rust, C, Python and JavaScript, per job and per load.
//!
//! Each plugin does what `bench-trivial` does (writes `/out/result.json` with its
//! parameters and job id). Rust's is `bench-trivial` itself; the others are written here
//! and built by `repx plugin build` (the toolchains of `scripts/setup-plugins`; one
//! missing is named, as the build names it). `--languages` measures only some of them.
//! For each language:
//! - *first*: a sweep of trivial jobs at `-j N` into a fresh store with an empty
//!   compiled-plugin cache, so compiling the component is in it;
//! - *cached*: the same sweep into another fresh store, the compiled plugin cached;
//! - *load*: from reading the plugin file to the plugin ready to instantiate, with its
//!   compiled artifact cached, in a fresh runtime, as each `repx run` process does it
//!   (the median of a few).
//!
//! Against the baseline the plugin-languages issue names: one `/usr/bin/python3 -c pass`,
//! measured in the same run. The sweeps run in a child process, like case (a)'s.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{BenchError, Case, Figure, Role, Target, Unit, fixture, io, median, ms, sweep};

/// How many cached loads are timed per language.
const LOADS: usize = 5;
/// How many `python3 -c pass` are timed.
const PYTHON_RUNS: usize = 20;

struct Language {
    name: &'static str,
    /// How `--languages` names it (`repx plugin new --lang`'s names).
    flag: &'static str,
    /// `repx plugin new --lang`'s name; `None` for Rust, whose plugin is `bench-trivial`.
    source: Option<(&'static str, &'static str)>,
}

const LANGUAGES: [Language; 4] = [
    Language {
        name: "Rust",
        flag: "rust",
        source: None,
    },
    Language {
        name: "C",
        flag: "c",
        source: Some((
            "main.c",
            "#include <stdio.h>\n#include \"repx.h\"\n\
             int main(void) {\n\
             FILE *f = fopen(\"/out/result.json\", \"w\");\n\
             if (!f) return 1;\n\
             fprintf(f, \"{\\\"params\\\":%s}\\n\", repx_params_json());\n\
             return fclose(f) != 0;\n}\n",
        )),
    },
    Language {
        name: "Python",
        flag: "python",
        source: Some((
            "app.py",
            "import json\nimport repx\n\n\
             def main(ctx):\n    \
             (ctx.out / \"result.json\").write_text(json.dumps({\"params\": ctx.params}) + \"\\n\")\n\n\
             Run = repx.command(main)\n",
        )),
    },
    Language {
        name: "JavaScript",
        flag: "js",
        source: Some((
            "plugin.js",
            "import { command } from \"./repx.js\";\n\
             export const run = command((ctx) => {\n    \
             ctx.writeText(`${ctx.out}/result.json`, JSON.stringify({ params: ctx.params }) + \"\\n\");\n});\n",
        )),
    },
];

/// The languages `--languages` takes, as it names them.
pub const FLAGS: [&str; 4] = ["rust", "c", "python", "js"];

/// What was measured of one language.
struct Measured {
    name: &'static str,
    bytes: u64,
    build: Option<Duration>,
    first_ms: f64,
    cached_ms: f64,
    load: Duration,
}

pub fn measure(
    work: &Path,
    exe: &Path,
    trivial: &Path,
    only: &[String],
    jobs: usize,
    count: usize,
    note: &mut dyn FnMut(&str),
) -> Result<Vec<Figure>, BenchError> {
    let failed = |message: String| BenchError::Case {
        case: Case::I,
        message,
    };
    let root = work.join("languages");
    let mut measured = Vec::new();
    let wanted = LANGUAGES
        .iter()
        .filter(|l| only.is_empty() || only.iter().any(|flag| flag == l.flag));
    for language in wanted {
        let dir = root.join(language.name.to_lowercase());
        let (plugin, build) = match language.source {
            None => (trivial.to_path_buf(), None),
            Some((file, text)) => {
                note(&format!(
                    "(i) building the trivial {} plugin",
                    language.name
                ));
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                let path = dir.join(file);
                std::fs::write(&path, text).map_err(io(&path))?;
                let started = Instant::now();
                let output = Command::new(exe)
                    .args(["plugin", "build"])
                    .arg(&dir)
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| failed(format!("running {}: {e}", exe.display())))?;
                if !output.status.success() {
                    return Err(failed(format!(
                        "repx plugin build of the {} plugin failed: {}",
                        language.name,
                        String::from_utf8_lossy(&output.stderr).trim()
                    )));
                }
                (dir.join("plugin.wasm"), Some(started.elapsed()))
            }
        };
        let bytes = std::fs::metadata(&plugin).map_err(io(&plugin))?.len();
        let cache = dir.join("cache");
        note(&format!(
            "(i) {count} trivial {} jobs at -j {jobs}, compiling, then cached",
            language.name
        ));
        let sweep = |name: &str| -> Result<sweep::SweepMeasure, BenchError> {
            let lab = dir.join(name);
            fixture::sweep_lab(&lab, &plugin, count)?;
            sweep::spawn_worker(exe, &lab, &cache, jobs, Case::I)
        };
        let first = sweep("first")?;
        let cached = sweep("cached")?;
        let loads = (0..LOADS)
            .map(|_| {
                super::compile::prepare(&dir.join("cached"), &cache, "sweep", jobs, Case::I)
                    .map(|t| t.total)
            })
            .collect::<Result<Vec<_>, _>>()?;
        measured.push(Measured {
            name: language.name,
            bytes,
            build,
            first_ms: first.per_job_ms(),
            cached_ms: cached.per_job_ms(),
            load: median(&loads),
        });
    }
    note("(i) baseline: /usr/bin/python3 -c pass");
    let python = python_pass().map_err(io(Path::new("/usr/bin/python3")))?;
    fixture::remove(&root);
    Ok(figures(&measured, python, jobs))
}

/// The median wall time of [`PYTHON_RUNS`] runs of `/usr/bin/python3 -c pass`.
fn python_pass() -> std::io::Result<Duration> {
    let python = PathBuf::from("/usr/bin/python3");
    let mut times = Vec::new();
    for _ in 0..PYTHON_RUNS {
        let started = Instant::now();
        let status = Command::new(&python)
            .args(["-c", "pass"])
            .stdin(Stdio::null())
            .status()?;
        times.push(started.elapsed());
        if !status.success() {
            return Err(std::io::Error::other(format!("{status}")));
        }
    }
    Ok(median(&times))
}

fn figures(measured: &[Measured], python: Duration, jobs: usize) -> Vec<Figure> {
    let mut figures = vec![Figure::new(
        Case::I,
        Role::Baseline,
        "one /usr/bin/python3 -c pass",
        ms(python),
        Unit::Ms,
    )];
    for m in measured {
        let mib = m.bytes as f64 / f64::from(1 << 20);
        figures.push(Figure::new(
            Case::I,
            Role::Measure,
            format!(
                "{}: per job at -j {jobs}, compiled plugin cached ({mib:.1} MiB)",
                m.name
            ),
            m.cached_ms,
            Unit::Ms,
        ));
        figures.push(Figure::new(
            Case::I,
            Role::Detail,
            format!("{}: per job, first run (compiling included)", m.name),
            m.first_ms,
            Unit::Ms,
        ));
        let load = Figure::new(
            Case::I,
            Role::Measure,
            format!("{}: cached load, file to ready, median of {LOADS}", m.name),
            ms(m.load),
            Unit::Ms,
        );
        figures.push(if m.name == "Python" {
            load.target(Target::AtMost(50.0))
        } else {
            load
        });
        if let Some(build) = m.build {
            figures.push(Figure::new(
                Case::I,
                Role::Detail,
                format!("{}: repx plugin build", m.name),
                ms(build),
                Unit::Ms,
            ));
        }
    }
    // A ratio is reported when both of its sides were measured (`--languages`).
    let per_job = |name: &str| {
        measured
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.cached_ms)
    };
    if let Some(job) = per_job("Python") {
        figures.push(
            Figure::new(
                Case::I,
                Role::Ratio,
                "Python job / python3 -c pass",
                job / ms(python),
                Unit::Times,
            )
            .target(Target::AtMost(0.1)),
        );
    }
    if let (Some(c), Some(rust)) = (per_job("C"), per_job("Rust")) {
        figures.push(
            Figure::new(
                Case::I,
                Role::Ratio,
                "C job / Rust job",
                c / rust,
                Unit::Times,
            )
            .target(Target::AtMost(1.2)),
        );
    }
    figures
}
