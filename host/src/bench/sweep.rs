//! Cases (a), (b), (f) and (j): sweeps of trivial jobs, their no-op re-run, how both
//! scale, and a fan-out of as many jobs against a sweep.
//!
//! A sweep runs in a child process, `repx bench --worker-sweep DIR`, which loads the lab,
//! expands it, and runs every job in-process through the real scheduler, store and runtime,
//! then reports its timings and its own peak RSS as one JSON line.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{BenchError, Case, Figure, Role, Target, Unit, median, ms};
use crate::graph::JobGraph;
use crate::lab::Lab;
use crate::plan::Plan;
use crate::sched::{Force, Options, local};
use crate::store::{self, Store};
use crate::wasm::Runtime;

/// What one sweep worker measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepMeasure {
    pub jobs: usize,
    pub ran: usize,
    /// Reading and validating the lab, and expanding its job graph.
    pub load_expand_ms: f64,
    /// From the start to the first job: the above, the store, the plan, the runtime.
    pub setup_ms: f64,
    /// From the start to the last commit.
    pub total_ms: f64,
    pub peak_rss_bytes: u64,
}

impl SweepMeasure {
    /// Wall time per job, everything included but process start.
    pub fn per_job_ms(&self) -> f64 {
        self.total_ms / self.jobs.max(1) as f64
    }
}

/// The worker's side: runs every job of the lab at `dir` with `jobs` threads.
pub fn worker(dir: &Path, jobs: usize) -> Result<SweepMeasure, BenchError> {
    let failed = |message: String| BenchError::Case {
        case: Case::A,
        message,
    };
    let started = Instant::now();
    let lab = Lab::load(dir).map_err(|e| failed(e.to_string()))?;
    let runs: Vec<String> = lab.runs.keys().cloned().collect();
    let graph = JobGraph::expand(
        &lab,
        &runs.iter().map(String::as_str).collect::<Vec<_>>(),
        None,
    );
    let load_expand = started.elapsed();
    let store =
        Store::open(&lab.dir.join(store::DEFAULT_DIR)).map_err(|e| failed(e.to_string()))?;
    let mut plan = Plan::new(lab, graph, &store).map_err(|e| failed(e.to_string()))?;
    let runtime =
        Runtime::new(crate::wasm::cache_dir(), jobs).map_err(|e| failed(e.to_string()))?;
    for resources in plan.stages.values() {
        runtime
            .prepare(&resources.plugin)
            .map_err(|e| failed(e.to_string()))?;
    }
    let setup = started.elapsed();
    let mut options = Options {
        nix: None,
        guard: None,
        jobs,
        continue_on_failure: false,
        retries: None,
        mem: None,
        force: Force::None,
        targets: None,
        interrupted: Arc::new(AtomicBool::new(false)),
    };
    // A fan-out's items are jobs once its list is written: rounds, as `repx run` runs them.
    let rounds = crate::sched::fanout::Selection {
        targets: &|_| None,
        force: &|_| Force::None,
    };
    let summary = crate::sched::fanout::rounds(
        &mut plan,
        &store,
        &mut options,
        rounds,
        Arc::new(|_| {}),
        |_, _| {},
        |plan, options, emit| -> Result<_, crate::plan::PlanError> {
            Ok(local::run(plan, &store, &runtime, options, emit))
        },
    )
    .map_err(|e| failed(e.to_string()))?;
    let total = started.elapsed();
    let count = plan.graph.jobs.len();
    if summary.failed > 0 || summary.ran + summary.cached != count {
        return Err(failed(format!("{count} jobs: {summary:?}")));
    }
    Ok(SweepMeasure {
        jobs: count,
        ran: summary.ran,
        load_expand_ms: ms(load_expand),
        setup_ms: ms(setup),
        total_ms: ms(total),
        peak_rss_bytes: super::fixture::peak_rss().unwrap_or(0),
    })
}

/// The parent's side: runs a worker on the lab at `dir` and reads what it measured.
pub fn spawn_worker(
    exe: &Path,
    dir: &Path,
    cache: &Path,
    jobs: usize,
    case: Case,
) -> Result<SweepMeasure, BenchError> {
    let failed = |message: String| BenchError::Case { case, message };
    let output = Command::new(exe)
        .args(["bench", "--worker-sweep"])
        .arg(dir)
        .args(["-j", &jobs.to_string()])
        .env("REPX_CACHE_DIR", cache)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(format!("running {}: {e}", exe.display())))?;
    if !output.status.success() {
        return Err(failed(format!(
            "the sweep worker failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let measure: SweepMeasure = serde_json::from_slice(&output.stdout).map_err(|e| {
        failed(format!(
            "the sweep worker's report: {e}: {}",
            String::from_utf8_lossy(&output.stdout)
        ))
    })?;
    if measure.ran != measure.jobs {
        return Err(failed(format!(
            "{} of {} jobs were cached: the store was not fresh",
            measure.jobs - measure.ran,
            measure.jobs
        )));
    }
    Ok(measure)
}

/// How many batches the `/bin/true` samples are split into; the fastest batch counts.
const SPAWN_BATCHES: usize = 5;

/// The wall time of one fork+exec+wait of `/bin/true` (as `std::process::Command` starts
/// a process: `posix_spawn`, the cheapest way there is), the mean of the fastest of
/// [`SPAWN_BATCHES`] batches of `samples` in all, after a warm-up. The fastest batch is
/// the baseline least disturbed by whatever else the machine was doing: a bar for repx
/// that is, if anything, too high.
pub fn spawn_true(samples: usize) -> std::io::Result<Duration> {
    let spawn = || {
        Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    for _ in 0..20 {
        spawn()?;
    }
    let per_batch = (samples / SPAWN_BATCHES).max(1);
    let mut fastest = Duration::MAX;
    for _ in 0..SPAWN_BATCHES {
        let started = Instant::now();
        for _ in 0..per_batch {
            spawn()?;
        }
        fastest = fastest.min(started.elapsed() / per_batch as u32);
    }
    Ok(fastest)
}

/// The wall times of `repeats` no-op `repx run`s of the lab at `dir`, process start included.
pub fn noop(
    exe: &Path,
    dir: &Path,
    cache: &Path,
    jobs: usize,
    repeats: usize,
) -> Result<Vec<Duration>, BenchError> {
    let failed = |message: String| BenchError::Case {
        case: Case::B,
        message,
    };
    let mut times = Vec::new();
    for _ in 0..repeats {
        let started = Instant::now();
        let output = Command::new(exe)
            .args(["run", "--lab"])
            .arg(dir)
            // The store the sweep filled, in the bench's own directory: not the default
            // store, which lies outside the project.
            .arg("--store")
            .arg(dir.join(store::DEFAULT_DIR))
            .args(["-j", &jobs.to_string()])
            .env("REPX_CACHE_DIR", cache)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .map_err(|e| failed(format!("running {}: {e}", exe.display())))?;
        times.push(started.elapsed());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let summary = stderr.lines().last().unwrap_or_default();
        if !output.status.success() || !summary.contains(" 0 ran,") {
            return Err(failed(format!(
                "the re-run was not a no-op ({}): {summary}",
                output.status
            )));
        }
    }
    Ok(times)
}

/// (a)'s figures from its sweeps and the `/bin/true` baseline around each (`spawns[i]` for
/// `measures[i]`): medians, with their spread.
pub fn figures_a(measures: &[SweepMeasure], spawns: &[Duration], jobs: usize) -> Vec<Figure> {
    let per_job: Vec<f64> = measures.iter().map(SweepMeasure::per_job_ms).collect();
    let spawn: Vec<f64> = spawns.iter().copied().map(ms).collect();
    let ratio: Vec<f64> = per_job.iter().zip(&spawn).map(|(p, s)| p / s).collect();
    let total: Vec<f64> = measures.iter().map(|m| m.total_ms).collect();
    let count = measures.first().map_or(0, |m| m.jobs);
    let sweeps = measures.len();
    vec![
        Figure::median(
            Case::A,
            Role::Measure,
            format!("per job, {count} jobs at -j {jobs}, median of {sweeps} sweeps (min–max)"),
            &per_job,
            Unit::Ms,
        ),
        Figure::median(
            Case::A,
            Role::Baseline,
            "one fork+exec of /bin/true, around each sweep",
            &spawn,
            Unit::Ms,
        ),
        Figure::median(
            Case::A,
            Role::Ratio,
            "per job / spawn, each sweep's",
            &ratio,
            Unit::Times,
        )
        .target(Target::AtMost(0.5)),
        Figure::median(Case::A, Role::Detail, "total wall time", &total, Unit::Ms),
    ]
}

pub fn figures_b(count: usize, times: &[Duration]) -> Vec<Figure> {
    let best = times.iter().min().copied().unwrap_or_default();
    vec![
        Figure::new(
            Case::B,
            Role::Measure,
            format!("no-op re-run of {count} jobs, median of {}", times.len()),
            ms(median(times)),
            Unit::Ms,
        )
        .target(Target::AtMost(100.0)),
        Figure::new(Case::B, Role::Detail, "fastest", ms(best), Unit::Ms),
    ]
}

pub fn figures_f(measures: &[SweepMeasure]) -> Vec<Figure> {
    let mut figures = Vec::new();
    let (Some(first), Some(last)) = (measures.first(), measures.last()) else {
        return figures;
    };
    for (i, m) in measures.iter().enumerate() {
        // The targets are on the largest sweep; the smallest is the per-job baseline.
        let largest = i + 1 == measures.len() && i > 0;
        let n = m.jobs;
        figures.push(Figure::new(
            Case::F,
            if i == 0 {
                Role::Baseline
            } else {
                Role::Measure
            },
            format!("{n} jobs: per job"),
            m.per_job_ms(),
            Unit::Ms,
        ));
        let load = Figure::new(
            Case::F,
            Role::Measure,
            format!("{n} jobs: lab load + graph expansion"),
            m.load_expand_ms,
            Unit::Ms,
        );
        figures.push(if largest {
            load.target(Target::AtMost(1_000.0))
        } else {
            load
        });
        figures.push(Figure::new(
            Case::F,
            Role::Detail,
            format!("{n} jobs: setup before the first job"),
            m.setup_ms,
            Unit::Ms,
        ));
        let rss = Figure::new(
            Case::F,
            Role::Measure,
            format!("{n} jobs: peak RSS"),
            m.peak_rss_bytes as f64 / f64::from(1 << 20),
            Unit::MiB,
        );
        figures.push(if largest {
            rss.target(Target::AtMost(1024.0))
        } else {
            rss
        });
    }
    if measures.len() > 1 {
        figures.push(
            Figure::new(
                Case::F,
                Role::Ratio,
                format!("per job at {} / at {}", last.jobs, first.jobs),
                last.per_job_ms() / first.per_job_ms(),
                Unit::Times,
            )
            .target(Target::AtMost(1.5)),
        );
    }
    figures
}

/// Case (j): the per-job wall time of a fan-out against a sweep of as many jobs.
pub fn figures_j(fanout: &SweepMeasure, sweep: &SweepMeasure) -> Vec<Figure> {
    let items = fanout.jobs.saturating_sub(1);
    vec![
        Figure::new(
            Case::J,
            Role::Measure,
            format!("{items}-item fan-out: per job, its list and the rounds included"),
            fanout.per_job_ms(),
            Unit::Ms,
        ),
        Figure::new(
            Case::J,
            Role::Baseline,
            format!("{}-point sweep: per job", sweep.jobs),
            sweep.per_job_ms(),
            Unit::Ms,
        ),
        Figure::new(
            Case::J,
            Role::Ratio,
            "fan-out per job / sweep per job",
            fanout.per_job_ms() / sweep.per_job_ms(),
            Unit::Times,
        )
        .target(Target::AtMost(1.25)),
        Figure::new(
            Case::J,
            Role::Detail,
            format!("{items}-item fan-out: total wall time"),
            fanout.total_ms,
            Unit::Ms,
        ),
        Figure::new(
            Case::J,
            Role::Detail,
            format!("{items}-item fan-out: peak RSS"),
            fanout.peak_rss_bytes as f64 / f64::from(1 << 20),
            Unit::MiB,
        ),
    ]
}
