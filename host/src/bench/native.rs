//! Cases (d) and (e): a plugin against the same Rust source built natively.
//!
//! The plugin runs through [`Runtime::run`] under a pure job's policy (`/out` writable,
//! `/in/data` read-only, fixed clock), exactly as the scheduler runs it; the native build
//! runs as a process with `$BENCH_OUT` and `$BENCH_IN` standing for those directories.
//! Each side runs once to warm up, then [`ROUNDS`] times alternating; the fastest counts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fixture::Plugins;
use super::{BenchError, Case, Figure, Sizes, Target, Unit, io, ms};
use crate::lab::Mode;
use crate::lab::limits::Limits;
use crate::wasm::host::Observer;
use crate::wasm::policy::{Mount, Policy};
use crate::wasm::{Ending, JobRun, Plugin, Runtime};

const ROUNDS: usize = 3;

struct Quiet;

impl Observer for Quiet {
    fn progress(&self, _: u64, _: u64) {}
    fn warn(&self, _: &str) {}
}

/// One program, runnable both ways.
struct Subject<'a> {
    case: Case,
    wasm: &'a Path,
    native: &'a Path,
    params: String,
    out: PathBuf,
    input: Option<PathBuf>,
}

impl Subject<'_> {
    fn fail(&self, message: String) -> BenchError {
        BenchError::Case {
            case: self.case,
            message,
        }
    }

    fn fresh_out(&self) -> Result<(), BenchError> {
        super::fixture::remove(&self.out);
        std::fs::create_dir_all(&self.out).map_err(io(&self.out))
    }

    fn run_wasm(&self, runtime: &Runtime, plugin: &Plugin) -> Result<Duration, BenchError> {
        self.fresh_out()?;
        let mut mounts = vec![Mount {
            host: self.out.clone(),
            guest: "/out".into(),
            writable: true,
        }];
        if let Some(input) = &self.input {
            mounts.push(Mount {
                host: input.clone(),
                guest: "/in/data".into(),
                writable: false,
            });
        }
        let policy = Policy {
            mode: Mode::Pure,
            mounts,
            env: vec![
                ("REPX_PARAMS".into(), self.params.clone()),
                ("REPX_MODE".into(), "pure".into()),
            ],
            args: vec!["bench".into()],
            cwd: None,
            seed: Some([7; 32]),
        };
        let job = JobRun {
            stage: "bench".into(),
            policy: Arc::new(policy),
            grants: Arc::from([]),
            observer: Arc::new(Quiet),
            limits: Limits::default(),
        };
        let started = Instant::now();
        let finished = runtime
            .run(plugin, job)
            .map_err(|e| self.fail(e.to_string()))?;
        let elapsed = started.elapsed();
        match finished.ending {
            Ending::Exit(0) => Ok(elapsed),
            ending => Err(self.fail(format!(
                "{}: {ending:?}: {}",
                self.wasm.display(),
                String::from_utf8_lossy(&finished.stderr)
            ))),
        }
    }

    fn run_native(&self) -> Result<Duration, BenchError> {
        self.fresh_out()?;
        let mut command = Command::new(self.native);
        command
            .env_clear()
            .env("REPX_PARAMS", &self.params)
            .env("BENCH_OUT", &self.out);
        if let Some(input) = &self.input {
            command.env("BENCH_IN", input);
        }
        let started = Instant::now();
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.fail(format!("{}: {e}", self.native.display())))?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            return Err(self.fail(format!(
                "{}: {}: {}",
                self.native.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(elapsed)
    }

    /// The fastest wasm and native times, after one warm-up each.
    fn race(&self, runtime: &Runtime) -> Result<(Duration, Duration), BenchError> {
        let bytes = std::fs::read(self.wasm).map_err(io(self.wasm))?;
        let plugin = Plugin::new(self.wasm.display().to_string(), bytes);
        runtime
            .prepare(&plugin)
            .map_err(|e| self.fail(e.to_string()))?;
        self.run_wasm(runtime, &plugin)?;
        self.run_native()?;
        let (mut wasm, mut native) = (Duration::MAX, Duration::MAX);
        for _ in 0..ROUNDS {
            wasm = wasm.min(self.run_wasm(runtime, &plugin)?);
            native = native.min(self.run_native()?);
        }
        Ok((wasm, native))
    }
}

fn runtime(work: &Path, case: Case) -> Result<Runtime, BenchError> {
    Runtime::new(Some(work.join("cache")), 1).map_err(|e| BenchError::Case {
        case,
        message: e.to_string(),
    })
}

pub fn compute(work: &Path, plugins: &Plugins, sizes: &Sizes) -> Result<Vec<Figure>, BenchError> {
    let runtime = runtime(work, Case::D)?;
    let mut figures = Vec::new();
    let kernels = [
        (
            "sha256",
            format!("{{\"kernel\":\"sha256\",\"mib\":{}}}", sizes.kernel_mib),
            format!("SHA-256 of {} MiB", sizes.kernel_mib),
        ),
        (
            "nbody",
            format!("{{\"kernel\":\"nbody\",\"steps\":{}}}", sizes.nbody_steps),
            format!("n-body, {} steps", sizes.nbody_steps),
        ),
    ];
    for (kernel, params, what) in kernels {
        let subject = Subject {
            case: Case::D,
            wasm: &plugins.kernel,
            native: &plugins.kernel_native,
            params,
            out: work.join(format!("kernel-{kernel}")),
            input: None,
        };
        let (wasm, native) = subject.race(&runtime)?;
        super::fixture::remove(&subject.out);
        figures.push(Figure::new(
            Case::D,
            format!("{what}: wasm"),
            ms(wasm),
            Unit::Ms,
        ));
        figures.push(Figure::new(
            Case::D,
            format!("{what}: native"),
            ms(native),
            Unit::Ms,
        ));
        figures.push(
            Figure::new(
                Case::D,
                format!("{what}: wasm throughput / native"),
                native.as_secs_f64() / wasm.as_secs_f64(),
                Unit::Times,
            )
            .target(Target::AtLeast(0.7)),
        );
    }
    Ok(figures)
}

pub fn file_io(work: &Path, plugins: &Plugins, sizes: &Sizes) -> Result<Vec<Figure>, BenchError> {
    let runtime = runtime(work, Case::E)?;
    let input = work.join("io-in");
    std::fs::create_dir_all(&input).map_err(io(&input))?;
    let file = input.join("input.bin");
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    let mut data = Vec::with_capacity(sizes.io_mib << 20);
    for _ in 0..sizes.io_mib {
        data.extend_from_slice(&chunk);
    }
    std::fs::write(&file, data).map_err(io(&file))?;
    let subject = Subject {
        case: Case::E,
        wasm: &plugins.io,
        native: &plugins.io_native,
        params: format!("{{\"mib\":{}}}", sizes.io_mib),
        out: work.join("io-out"),
        input: Some(input.clone()),
    };
    let (wasm, native) = subject.race(&runtime)?;
    super::fixture::remove(&subject.out);
    super::fixture::remove(&input);
    let moved = (2 * sizes.io_mib) as f64;
    Ok(vec![
        Figure::new(
            Case::E,
            format!("write + read {} MiB: wasm", sizes.io_mib),
            moved / wasm.as_secs_f64(),
            Unit::MiBPerS,
        ),
        Figure::new(
            Case::E,
            format!("write + read {} MiB: native", sizes.io_mib),
            moved / native.as_secs_f64(),
            Unit::MiBPerS,
        ),
        Figure::new(
            Case::E,
            "wasm throughput / native",
            native.as_secs_f64() / wasm.as_secs_f64(),
            Unit::Times,
        )
        .target(Target::AtLeast(0.5)),
    ])
}
