//! What the cases run on: the benchmark plugins, a temporary work directory, generated
//! labs, and a description of the machine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{BenchError, Case, io};
use crate::store::remove_tree;
use crate::wasm::{Plugin, Runtime};

/// The benchmark plugins a run needs, checked to exist before anything runs.
pub struct Plugins {
    /// wasm32-wasip2 `bench-trivial.wasm`.
    pub trivial: PathBuf,
    /// wasm32-wasip2 `scatter-split.wasm`: the list of the fan-out case.
    pub split: PathBuf,
    pub kernel: PathBuf,
    pub io: PathBuf,
    /// The same kernel and I/O sources built natively.
    pub kernel_native: PathBuf,
    pub io_native: PathBuf,
}

impl Plugins {
    pub fn find(wasm: &Path, native: &Path, cases: &[Case]) -> Result<Plugins, BenchError> {
        let plugins = Plugins {
            trivial: wasm.join("bench-trivial.wasm"),
            split: wasm.join("scatter-split.wasm"),
            kernel: wasm.join("bench-kernel.wasm"),
            io: wasm.join("bench-io.wasm"),
            kernel_native: native.join("bench-kernel"),
            io_native: native.join("bench-io"),
        };
        let mut needed: Vec<(&Path, &str)> = Vec::new();
        if cases
            .iter()
            .any(|c| matches!(c, Case::A | Case::B | Case::F | Case::J))
        {
            needed.push((&plugins.trivial, "the wasm plugin bench-trivial"));
        }
        if cases.contains(&Case::J) {
            needed.push((&plugins.split, "the wasm plugin scatter-split"));
        }
        if cases.contains(&Case::D) {
            needed.push((&plugins.kernel, "the wasm plugin bench-kernel"));
            needed.push((&plugins.kernel_native, "the native build of bench-kernel"));
        }
        if cases.contains(&Case::E) {
            needed.push((&plugins.io, "the wasm plugin bench-io"));
            needed.push((&plugins.io_native, "the native build of bench-io"));
        }
        for (path, what) in needed {
            if !path.is_file() {
                let hint = if path.starts_with(native) {
                    ", or point --native at the directory holding the native builds"
                } else {
                    ", or point --plugins at the directory holding the wasm32-wasip2 builds"
                };
                return Err(BenchError::Missing {
                    path: path.to_path_buf(),
                    what: what.into(),
                    hint: hint.into(),
                });
            }
        }
        Ok(plugins)
    }
}

/// A new directory under `parent` (default: the system's temporary directory), removed
/// (sealed outputs and all) when dropped.
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn new(parent: Option<&Path>) -> Result<WorkDir, BenchError> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let dir = std::path::absolute(&parent)
            .map_err(io(&parent))?
            .join(format!("repx-bench-{}", std::process::id()));
        remove_tree(&dir).map_err(io(&dir))?;
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(WorkDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

/// Removes a tree the bench made; failing to is not worth failing the bench for.
pub fn remove(dir: &Path) {
    let _ = remove_tree(dir);
}

/// Compiles `plugin` into the cache at `cache`, so that runs using it load it.
pub fn warm_cache(cache: &Path, plugin: &Path) -> Result<(), BenchError> {
    let bytes = std::fs::read(plugin).map_err(io(plugin))?;
    let failed = |e: crate::wasm::RuntimeError| BenchError::Case {
        case: Case::A,
        message: e.to_string(),
    };
    let runtime = Runtime::new(Some(cache.to_path_buf()), 1).map_err(failed)?;
    runtime
        .prepare(&Plugin::new(plugin.display().to_string(), bytes))
        .map_err(failed)
}

/// A lab at `dir` with one stage, `trivial`, swept over `count` values of `i`.
pub fn sweep_lab(dir: &Path, plugin: &Path, count: usize) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let wasm = dir.join("bench-trivial.wasm");
    std::fs::copy(plugin, &wasm).map_err(io(&wasm))?;
    let mut values = String::with_capacity(count * 7);
    for i in 0..count {
        if i > 0 {
            values.push_str(", ");
        }
        write!(values, "{i}").expect("writing to a string");
    }
    let lab = format!(
        "[lab]\nname = \"bench-sweep\"\n\n\
         [stages.trivial]\nplugin = \"bench-trivial.wasm\"\nparams = {{ i = 0 }}\noutputs = [\"result.json\"]\n\n\
         [pipelines.main]\nstages = [\"trivial\"]\n\n\
         [runs.sweep]\npipelines = [\"main\"]\nparams = {{ i = [{values}] }}\n"
    );
    let file = dir.join(crate::lab::LAB_FILE);
    std::fs::write(&file, lab).map_err(io(&file))
}

/// A lab at `dir` whose stage `split` lists `count` samples of `data/samples.txt`, and
/// whose stage `trivial` runs once per item: a fan-out of `count` jobs.
pub fn fanout_lab(
    dir: &Path,
    trivial: &Path,
    split: &Path,
    count: usize,
) -> Result<(), BenchError> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(io(&data))?;
    for (plugin, name) in [
        (trivial, "bench-trivial.wasm"),
        (split, "scatter-split.wasm"),
    ] {
        let wasm = dir.join(name);
        std::fs::copy(plugin, &wasm).map_err(io(&wasm))?;
    }
    let mut samples = String::with_capacity(count * 12);
    for i in 0..count {
        writeln!(samples, "s{i} {i}").expect("writing to a string");
    }
    let file = data.join("samples.txt");
    std::fs::write(&file, samples).map_err(io(&file))?;
    let lab = "[lab]\nname = \"bench-fanout\"\n\n\
         [stages.split]\nplugin = \"scatter-split.wasm\"\ninputs = { data = \"path:data\" }\n\
         outputs = [\"items.json\"]\n\n\
         [stages.trivial]\nplugin = \"bench-trivial.wasm\"\nforeach = \"split:items.json\"\n\
         outputs = [\"result.json\"]\n\n\
         [pipelines.main]\nstages = [\"split\", \"trivial\"]\n\n\
         [runs.fanout]\npipelines = [\"main\"]\n";
    let file = dir.join(crate::lab::LAB_FILE);
    std::fs::write(&file, lab).map_err(io(&file))
}

/// The machine the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_gib: f64,
    pub kernel: String,
    /// The filesystem type of the directory the stores live in.
    pub filesystem: String,
}

impl Machine {
    /// This machine, with the filesystem that holds `work`.
    pub fn this(work: &Path) -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            memory_gib: (memory_kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            filesystem: filesystem_of(work),
        }
    }
}

/// The type of the filesystem mounted deepest above `path`, from `/proc/mounts`.
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point)
                .then(|| (point.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, kind)| kind)
}

/// Today's date, UTC, as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The process's peak resident set so far, in bytes (Linux: `VmHWM`), if known.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
