//! `repx bench`: what RepX costs, measured next to a baseline in the same run.
//!
//! Each case builds its labs in a temporary directory, runs the real lab loader, graph,
//! scheduler, store and wasm runtime, measures its baseline on the same machine in the same
//! run, and reports [`Figure`]s, some with a [`Target`]:
//!
//! | case | what | baseline |
//! |---|---|---|
//! | a | per-job wall time of 10,000 trivial jobs at `-j 2`, median of 3 sweeps | one fork+exec of `/bin/true` around each |
//! | b | a no-op re-run of (a), as a fresh `repx run` process | the 100 ms target |
//! | c | loading a cached compiled ~2 MB plugin, from reading its file | compiling it |
//! | d | SHA-256 as a plugin (and n-body, an extra without a target) | the same source built natively |
//! | e | writing and reading 256 MiB through `/out` and `/in` | the same source built natively |
//! | f | 1,000, 10,000 and 100,000 jobs: per job, load + expansion, peak RSS | 1,000 jobs |
//! | h | the seed's edit cycle: `repx run`, `--watch` and a no-op run, 9 edits each | `make && ./mybinary` |
//! | i | a trivial plugin in Rust, C, Python and JavaScript: per job at `-j 2`, first and cached, and its cached load | one `/usr/bin/python3 -c pass` |
//! | j | per-job wall time of a 10,000-item fan-out at `-j 2` (its list and the rounds included) | a 10,000-point sweep, (a)'s |
//!
//! Case (i) builds plugins with the toolchains of `scripts/setup-plugins`, so it runs only
//! when asked for (`--cases i`).
//!
//! Sweeps (a, f) run in a child process (`repx bench --worker-sweep`), so that each has its
//! own peak RSS and a cold process; the no-op (b) is the real `repx run` binary, process
//! start included. Nothing here prints: the CLI renders the [`Report`]. Timings are never
//! asserted by tests; targets are reported as met or not.
//!
//! Nothing a case made is removed before the whole bench ends: on ext4 without a journal,
//! inodes freed in the last minutes make creating new ones slower (the allocator skips
//! them one by one), so deleting one sweep's 40,000 files would slow the next sweep down.

mod compile;
mod cycle;
mod fixture;
pub mod languages;
mod native;
mod sweep;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use fixture::Machine;
pub use sweep::{SweepMeasure, worker as sweep_worker};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{}: {what} not found; build the plugins first with `scripts/build-plugins`{hint}", path.display())]
    Missing {
        path: PathBuf,
        what: String,
        hint: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("case {case}: {message}")]
    Case { case: Case, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One benchmark case, by the letter of the issue that asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Case {
    #[serde(rename = "a")]
    A,
    #[serde(rename = "b")]
    B,
    #[serde(rename = "c")]
    C,
    #[serde(rename = "d")]
    D,
    #[serde(rename = "e")]
    E,
    #[serde(rename = "f")]
    F,
    /// The letter of the issue that asked for it; (g) is `benches/peers.sh`.
    #[serde(rename = "h")]
    H = 7,
    #[serde(rename = "i")]
    I = 8,
    #[serde(rename = "j")]
    J = 9,
}

impl Case {
    pub const ALL: [Case; 9] = [
        Case::A,
        Case::B,
        Case::C,
        Case::D,
        Case::E,
        Case::F,
        Case::H,
        Case::I,
        Case::J,
    ];

    /// What `repx bench` runs when no case is named: all but (i), which needs the plugin
    /// toolchains of every language and minutes of building.
    pub const DEFAULT: [Case; 8] = [
        Case::A,
        Case::B,
        Case::C,
        Case::D,
        Case::E,
        Case::F,
        Case::H,
        Case::J,
    ];

    pub fn letter(self) -> char {
        (b'a' + self as u8) as char
    }

    pub fn from_letter(letter: &str) -> Option<Case> {
        Case::ALL
            .into_iter()
            .find(|c| letter.len() == 1 && letter.starts_with(c.letter()))
    }

    pub fn title(self) -> &'static str {
        match self {
            Case::A => "trivial jobs",
            Case::B => "no-op re-run",
            Case::C => "cached compiled plugin",
            Case::D => "compute",
            Case::E => "file I/O",
            Case::F => "scaling",
            Case::H => "edit cycle",
            Case::I => "plugin languages",
            Case::J => "fan-out",
        }
    }
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({})", self.letter())
    }
}

/// What to run and where to find the plugins.
#[derive(Debug, Clone)]
pub struct Options {
    pub cases: Vec<Case>,
    /// Smaller counts and sizes: a smoke run of a few seconds, not the figures to quote.
    pub quick: bool,
    /// Worker threads of the sweeps (`-j`).
    pub jobs: usize,
    /// Where the wasm32-wasip2 plugins are (`bench-trivial.wasm`, …).
    pub plugins: PathBuf,
    /// Where the same benchmark sources built natively are (`bench-kernel`, `bench-io`).
    pub native: PathBuf,
    /// The `repx` binary that the no-op case and the sweep workers run.
    pub exe: PathBuf,
    /// Where the labs, stores and compiled plugins go, in a new subdirectory removed at
    /// the end (default: the system's temporary directory).
    pub work: Option<PathBuf>,
    /// The languages case (i) measures, as [`languages::FLAGS`] names them (empty: all).
    pub languages: Vec<String>,
}

/// The counts and sizes of one bench run.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    pub sweep: usize,
    /// How many times (a) runs its sweep.
    pub sweeps: usize,
    pub scaling: Vec<usize>,
    pub noop_repeats: usize,
    /// `/bin/true` spawns in each baseline measurement of (a).
    pub spawn_samples: usize,
    pub kernel_mib: usize,
    pub nbody_steps: usize,
    pub io_mib: usize,
    pub component_bytes: usize,
    /// Trivial jobs per sweep of (i), per language.
    pub languages_sweep: usize,
}

impl Sizes {
    pub fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                sweep: 1_000,
                sweeps: 3,
                scaling: vec![100, 1_000, 10_000],
                noop_repeats: 3,
                spawn_samples: 50,
                kernel_mib: 16,
                nbody_steps: 1_000_000,
                io_mib: 32,
                component_bytes: 2 << 20,
                languages_sweep: 50,
            }
        } else {
            Sizes {
                sweep: 10_000,
                sweeps: 3,
                scaling: vec![1_000, 10_000, 100_000],
                noop_repeats: 5,
                spawn_samples: 250,
                kernel_mib: 64,
                nbody_steps: 5_000_000,
                io_mib: 256,
                component_bytes: 2 << 20,
                languages_sweep: 300,
            }
        }
    }
}

/// A bound a figure should stay within.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    pub fn met(self, value: f64) -> bool {
        match self {
            Target::AtMost(bound) => value <= bound,
            Target::AtLeast(bound) => value >= bound,
        }
    }
}

/// What a figure counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Ms,
    Us,
    /// A ratio, printed as `0.42×`.
    Times,
    MiB,
    MiBPerS,
    Jobs,
}

/// What a figure is to its case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// What RepX costs or achieves.
    Measure,
    /// The same work done the other way (a process, native code, compiling, the smallest
    /// sweep), measured in the same run.
    Baseline,
    /// A measure against its baseline.
    Ratio,
    /// Context: totals, the fastest of several runs, the parts of a measure.
    Detail,
}

/// The range of the samples a median was taken from.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub min: f64,
    pub max: f64,
    pub samples: usize,
}

impl Spread {
    fn of(samples: &[f64]) -> Spread {
        Spread {
            min: samples.iter().copied().fold(f64::INFINITY, f64::min),
            max: samples.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            samples: samples.len(),
        }
    }
}

/// One measured number.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub case: Case,
    pub role: Role,
    pub name: String,
    pub value: f64,
    pub unit: Unit,
    /// When `value` is a median: the smallest and largest of its samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
    /// Shown beside the figures, with no target of its own (n-body next to the
    /// SHA-256 kernel that (d)'s target applies to).
    pub extra: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

impl Figure {
    fn new(case: Case, role: Role, name: impl Into<String>, value: f64, unit: Unit) -> Figure {
        Figure {
            case,
            role,
            name: name.into(),
            value,
            unit,
            spread: None,
            extra: false,
            target: None,
            met: None,
        }
    }

    /// The median of `samples`, with their spread.
    fn median(
        case: Case,
        role: Role,
        name: impl Into<String>,
        samples: &[f64],
        unit: Unit,
    ) -> Figure {
        let value = median_by(samples, |s| *s).copied().unwrap_or_default();
        Figure {
            spread: Some(Spread::of(samples)),
            ..Figure::new(case, role, name, value, unit)
        }
    }

    fn target(mut self, target: Target) -> Figure {
        self.met = Some(target.met(self.value));
        self.target = Some(target);
        self
    }

    fn extra(mut self) -> Figure {
        self.extra = true;
        self
    }
}

/// Everything one `repx bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: Machine,
    pub quick: bool,
    pub jobs: usize,
    pub sizes: Sizes,
    pub figures: Vec<Figure>,
}

/// Runs the selected cases; `note` hears what is about to run (for a progress line).
pub fn run(options: &Options, note: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    let sizes = Sizes::new(options.quick);
    let plugins = fixture::Plugins::find(&options.plugins, &options.native, &options.cases)?;
    let work = fixture::WorkDir::new(options.work.as_deref())?;
    let cache = work.path().join("cache");
    let mut figures = Vec::new();
    let wants = |case| options.cases.contains(&case);

    // The sweeps share the compiled trivial plugin; compiling it is not what they measure.
    if wants(Case::A) || wants(Case::B) || wants(Case::F) || wants(Case::J) {
        fixture::warm_cache(&cache, &plugins.trivial)?;
    }
    // (a) sweeps `sizes.sweeps` times, each into a fresh store, and reports the median: one
    // sweep's per-job cost moves with the filesystem's recent history (BENCHMARKS.md).
    let mut sweeps_at_a = Vec::new();
    if wants(Case::A) || wants(Case::B) {
        let repeats = if wants(Case::A) { sizes.sweeps } else { 1 };
        // The baseline before the first sweep and after each: each sweep's is the faster of
        // the two batches around it.
        let spawn_true =
            || sweep::spawn_true(sizes.spawn_samples).map_err(io(Path::new("/bin/true")));
        let mut before = if wants(Case::A) {
            note("(a) baseline: fork+exec of /bin/true");
            Some(spawn_true()?)
        } else {
            None
        };
        let mut spawns = Vec::new();
        let mut dir = PathBuf::new();
        for i in 1..=repeats {
            note(&format!(
                "(a) {} trivial jobs at -j {}, sweep {i} of {repeats}",
                sizes.sweep, options.jobs
            ));
            dir = work.path().join(format!("sweep-{i}"));
            fixture::sweep_lab(&dir, &plugins.trivial, sizes.sweep)?;
            sweeps_at_a.push(sweep::spawn_worker(
                &options.exe,
                &dir,
                &cache,
                options.jobs,
                Case::A,
            )?);
            if let Some(previous) = before {
                let after = spawn_true()?;
                spawns.push(previous.min(after));
                before = Some(after);
            }
        }
        if wants(Case::A) {
            figures.extend(sweep::figures_a(&sweeps_at_a, &spawns, options.jobs));
        }
        if wants(Case::B) {
            note(&format!(
                "(b) no-op re-run of {} jobs, {} times",
                sizes.sweep, sizes.noop_repeats
            ));
            let noop = sweep::noop(&options.exe, &dir, &cache, options.jobs, sizes.noop_repeats)?;
            figures.extend(sweep::figures_b(sizes.sweep, &noop));
        }
    }
    if wants(Case::C) {
        note(&format!(
            "(c) compiling and loading a {} MiB plugin",
            sizes.component_bytes >> 20
        ));
        figures.extend(compile::measure(
            &work.path().join("compile"),
            sizes.component_bytes,
        )?);
    }
    if wants(Case::D) {
        note("(d) compute kernels, wasm and native");
        figures.extend(native::compute(work.path(), &plugins, &sizes)?);
    }
    if wants(Case::E) {
        note(&format!(
            "(e) writing and reading {} MiB, wasm and native",
            sizes.io_mib
        ));
        figures.extend(native::file_io(work.path(), &plugins, &sizes)?);
    }
    if wants(Case::F) {
        let mut measures = Vec::new();
        for &count in &sizes.scaling {
            let measure = match median_by(&sweeps_at_a, SweepMeasure::per_job_ms)
                .filter(|m| m.jobs == count)
            {
                Some(m) => m.clone(),
                None => {
                    note(&format!("(f) {count} trivial jobs"));
                    let dir = work.path().join(format!("scale-{count}"));
                    fixture::sweep_lab(&dir, &plugins.trivial, count)?;
                    sweep::spawn_worker(&options.exe, &dir, &cache, options.jobs, Case::F)?
                }
            };
            measures.push(measure);
        }
        figures.extend(sweep::figures_f(&measures));
    }
    if wants(Case::J) {
        fixture::warm_cache(&cache, &plugins.split)?;
        let sweep = match median_by(&sweeps_at_a, SweepMeasure::per_job_ms) {
            Some(m) => m.clone(),
            None => {
                note(&format!("(j) baseline: {} trivial jobs swept", sizes.sweep));
                let dir = work.path().join("fanout-sweep");
                fixture::sweep_lab(&dir, &plugins.trivial, sizes.sweep)?;
                sweep::spawn_worker(&options.exe, &dir, &cache, options.jobs, Case::J)?
            }
        };
        note(&format!(
            "(j) a fan-out of {} trivial jobs at -j {}",
            sizes.sweep, options.jobs
        ));
        let dir = work.path().join("fanout");
        fixture::fanout_lab(&dir, &plugins.trivial, &plugins.split, sizes.sweep)?;
        let fanout = sweep::spawn_worker(&options.exe, &dir, &cache, options.jobs, Case::J)?;
        figures.extend(sweep::figures_j(&fanout, &sweep));
    }
    if wants(Case::H) {
        let samples = if options.quick { 3 } else { 9 };
        note(&format!(
            "(h) the edit cycle: {samples} edits through repx run, make and --watch"
        ));
        figures.extend(cycle::measure(work.path(), &options.exe, &cache, samples)?);
    }
    if wants(Case::I) {
        figures.extend(languages::measure(
            work.path(),
            &options.exe,
            &plugins.trivial,
            &options.languages,
            options.jobs,
            sizes.languages_sweep,
            note,
        )?);
    }
    Ok(Report {
        date: fixture::today(),
        machine: Machine::this(work.path()),
        quick: options.quick,
        jobs: options.jobs,
        sizes,
        figures,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(samples: &[Duration]) -> Duration {
    median_by(samples, |d| *d).copied().unwrap_or_default()
}

/// The middle one of `items` ordered by `key` (the upper of the two middle ones of an even
/// count); `None` for none.
fn median_by<T, K: PartialOrd>(items: &[T], key: impl Fn(&T) -> K) -> Option<&T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by(|a, b| {
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    sorted.get(sorted.len() / 2).copied()
}
