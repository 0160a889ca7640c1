//! `repx bench`: runs [`crate::bench`] and renders its report as a table or as JSON.

use std::path::{Path, PathBuf};

use clap::Args;

use super::error::{CliError, invalid};
use super::exit;
use crate::bench::{self, Case, Figure, Report, Role, Target, Unit};

/// Where `scripts/build-plugins` leaves the wasm plugins, from the repository root.
const WASM_DIR: &str = "plugins/target/wasm32-wasip2/release";
/// Where it leaves the native builds of the benchmark sources.
const NATIVE_DIR: &str = "plugins/target/release";

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Smaller counts and sizes: a smoke run, not figures to quote.
    #[arg(long)]
    pub quick: bool,
    /// Only these cases, e.g. `a,b` (default: a,b,c,d,e,f,h,j; `i`, the plugin languages,
    /// needs scripts/setup-plugins and runs only when named).
    #[arg(long, value_delimiter = ',', value_name = "CASES")]
    pub cases: Vec<String>,
    /// Worker threads of the job sweeps.
    #[arg(short = 'j', long, default_value_t = 2)]
    pub jobs: usize,
    /// Only these languages in case (i), e.g. `rust,c` (default: rust,c,python,js).
    #[arg(long, value_delimiter = ',', value_name = "LANGS",
          value_parser = clap::builder::PossibleValuesParser::new(bench::languages::FLAGS))]
    pub languages: Vec<String>,
    /// The wasm32-wasip2 benchmark plugins (default: plugins/target/wasm32-wasip2/release
    /// of this repository).
    #[arg(long, value_name = "DIR")]
    pub plugins: Option<PathBuf>,
    /// The native builds of bench-kernel and bench-io (default: plugins/target/release).
    #[arg(long, value_name = "DIR")]
    pub native: Option<PathBuf>,
    /// Where the labs and stores go, in a subdirectory removed at the end (default: the
    /// system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// The global `--lab` and `--store`, which the bench has no use for: it makes its own
    /// labs and stores under --work. Declared here, hidden, so that its help does not offer
    /// them; clap still hands this command their values, and [`bench`] refuses any given.
    #[arg(long, hide = true)]
    pub lab: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub store: Option<PathBuf>,
    /// Internal: run one sweep's jobs in this process and print what it measured.
    #[arg(long, value_name = "DIR", hide = true)]
    pub worker_sweep: Option<PathBuf>,
}

pub fn bench(args: &BenchArgs) -> Result<i32, CliError> {
    // `--lab .` is the global flag's default: what `repx bench` gets when neither was given.
    if args.store.is_some() || args.lab.as_deref().is_some_and(|lab| lab != Path::new(".")) {
        return Err(invalid(
            "--lab and --store do not apply to `repx bench`: it makes its own labs and stores \
             in a temporary directory; --work DIR says where",
        ));
    }
    if let Some(dir) = &args.worker_sweep {
        let measure =
            bench::sweep_worker(dir, args.jobs.max(1)).map_err(|e| CliError::Failed(e.into()))?;
        outln!(
            "{}",
            serde_json::to_string(&measure).expect("measures serialise")
        );
        return Ok(exit::SUCCESS);
    }
    let cases = if args.cases.is_empty() {
        Case::DEFAULT.to_vec()
    } else {
        let mut cases = Vec::new();
        for name in &args.cases {
            let case = Case::from_letter(name.trim()).ok_or_else(|| {
                invalid(format!(
                    "--cases {name}: no such case; the cases are a, b, c, d, e, f, h, i, j"
                ))
            })?;
            cases.push(case);
        }
        cases.sort();
        cases.dedup();
        cases
    };
    let exe = std::env::current_exe()?;
    let options = bench::Options {
        cases,
        quick: args.quick,
        jobs: args.jobs.max(1),
        plugins: args
            .plugins
            .clone()
            .unwrap_or_else(|| default_dir(&exe, WASM_DIR)),
        native: args
            .native
            .clone()
            .unwrap_or_else(|| default_dir(&exe, NATIVE_DIR)),
        exe,
        work: args.work.clone(),
        languages: args.languages.clone(),
    };
    let report =
        bench::run(&options, &mut |note| errln!("bench: {note}")).map_err(|e| match e {
            bench::BenchError::Missing { .. } => CliError::Invalid(e.into()),
            e => CliError::Failed(e.into()),
        })?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("reports serialise")
        );
    } else {
        out!("{}", table(&report));
    }
    Ok(exit::SUCCESS)
}

/// `relative` under the current directory if it is there, else under the repository the
/// binary was built in (it lives in `target/<profile>/`), else as given.
fn default_dir(exe: &Path, relative: &str) -> PathBuf {
    if Path::new(relative).is_dir() {
        return PathBuf::from(relative);
    }
    exe.ancestors()
        .find(|dir| dir.join("plugins/Cargo.toml").is_file())
        .map_or_else(|| PathBuf::from(relative), |repo| repo.join(relative))
}

fn table(report: &Report) -> String {
    let m = &report.machine;
    let mut out = format!(
        "repx bench, {}{}: {} cores ({}), {} GiB, Linux {}, stores on {}\n\n",
        report.date,
        if report.quick { " (--quick)" } else { "" },
        m.cores,
        m.cpu,
        m.memory_gib,
        m.kernel,
        m.filesystem
    );
    let rows: Vec<[String; 5]> = report.figures.iter().map(row).collect();
    let headers = ["case", "figure", "value", "target", "met"].map(String::from);
    let mut widths = headers.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 5]| {
        let mut text = format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:<w3$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    out.push_str(&line(&headers));
    let mut previous = None;
    for (figure, row) in report.figures.iter().zip(&rows) {
        if previous.is_some_and(|case| case != figure.case) {
            out.push('\n');
        }
        previous = Some(figure.case);
        out.push_str(&line(row));
    }
    out
}

fn row(figure: &Figure) -> [String; 5] {
    let target = match figure.target {
        Some(Target::AtMost(bound)) => format!("≤ {}", value(bound, figure.unit)),
        Some(Target::AtLeast(bound)) => format!("≥ {}", value(bound, figure.unit)),
        None if figure.extra && figure.role == Role::Ratio => "none (extra)".into(),
        None => String::new(),
    };
    let met = match figure.met {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "",
    };
    let mut shown = value(figure.value, figure.unit);
    if let Some(spread) = figure.spread {
        let (min, max) = (
            number(spread.min, figure.unit),
            number(spread.max, figure.unit),
        );
        shown = format!("{shown} ({min}–{max})");
    }
    [
        format!("{} {}", figure.case, figure.case.title()),
        figure.name.clone(),
        shown,
        target,
        met.into(),
    ]
}

fn value(value: f64, unit: Unit) -> String {
    let number = number(value, unit);
    match unit {
        Unit::Ms => format!("{number} ms"),
        Unit::Us => format!("{number} µs"),
        Unit::Times => format!("{number}×"),
        Unit::MiB => format!("{number} MiB"),
        Unit::MiBPerS => format!("{number} MiB/s"),
        Unit::Jobs => number,
    }
}

/// `value` without its unit, to three significant digits below 100.
fn number(value: f64, unit: Unit) -> String {
    let digits = if matches!(unit, Unit::MiB | Unit::MiBPerS | Unit::Jobs) || value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else if value >= 1.0 {
        2
    } else {
        3
    };
    format!("{value:.digits$}")
}
