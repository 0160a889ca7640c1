//! The command line: flags as clap data, then one function per command.
//!
//! Only this module prints. Errors become [`error::CliError`]s whose exit codes are in
//! [`exit`].

// First: its macros are for every module below.
#[macro_use]
mod print;

mod adhoc;
mod atomic;
mod bench;
mod cache;
mod completions;
mod debug;
mod engine;
mod error;
mod escape;
pub mod exit;
mod filter;
mod follow;
mod gc;
mod grants;
mod init;
mod inspect;
mod interrupt;
mod pin;
mod plugin;
mod render;
mod report;
mod results;
mod run;
mod show_job;
mod slurm;
mod store_path;
mod targets;
mod tui;
mod verify;
mod viz;
mod watch;
mod worker;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use error::CliError;

use crate::lab::Mode;

#[derive(Parser, Debug)]
#[command(
    name = "repx",
    version,
    about = "Run experiments and builds whose stages are WebAssembly plugins"
)]
pub struct Cli {
    /// The lab file (`repx.toml`, `lab.nix` or `lab.json`), or a directory holding one; with
    /// several, the first of those.
    #[arg(long, global = true, default_value = ".")]
    pub lab: PathBuf,
    /// The store directory (default: the project's own, in ~/.cache/repx/stores, linked as
    /// `.repx` in the project).
    #[arg(long, global = true)]
    pub store: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run runs or jobs (default: every run), or one plugin ad hoc with --plugin.
    Run(RunArgs),
    /// List runs, jobs or job dependencies.
    List {
        #[arg(value_enum)]
        what: ListWhat,
        /// Only this run's jobs.
        run: Option<String>,
        /// With `jobs`: each done job's output directory.
        #[arg(long)]
        output_paths: bool,
        #[command(flatten)]
        filter: filter::JobFilter,
    },
    /// Show a job or its output, or what a stage is granted.
    Show {
        #[arg(value_enum)]
        what: ShowWhat,
        /// A job id or a unique prefix of one; for `stage`, a stage name.
        job: String,
        /// With `stage`: the grants when run with --impure.
        #[arg(long, group = "mode")]
        impure: bool,
        /// With `stage`: the grants when run with --pure.
        #[arg(long, group = "mode")]
        pure: bool,
        /// With `stage`: the grants when run with --hermetic.
        #[arg(long, group = "mode")]
        hermetic: bool,
    },
    /// Print a job's logs: stdout, stderr and what the host did for it.
    ///
    /// Into a file or a pipe the logs go as the job wrote them (as UTF-8); on a
    /// terminal, control characters (escape sequences, carriage returns) are shown escaped
    /// (`\u{1b}`, `\r`), so that a plugin's output cannot drive the terminal.
    Log {
        /// A job id or a unique prefix of one.
        job: String,
        /// Follow the job: print its logs as it writes them, until it is committed or
        /// fails (waiting for it to start while a run holds the store).
        #[arg(short, long, conflicts_with = "attempt")]
        follow: bool,
        /// The logs of this attempt (from 1) of a retried job; `repx show job` lists them.
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
        attempt: Option<u32>,
    },
    /// Run one job again into a directory of its own, outside the store, and print every
    /// file access and tool run of its plugin (what was refused, and why).
    Debug {
        /// A job id or a unique prefix of one.
        job: String,
        /// Where its output, scratch and logs go (default: a new directory in $TMPDIR);
        /// missing or empty.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// The runs, stages and jobs as a tree with their states, a filter and a log view;
    /// run, force or cancel the selected jobs from there.
    Tui,
    /// Work with plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Make a lab that runs right away, in DIR (default: here).
    Init {
        /// Where to make it; created when missing.
        dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "simple")]
        template: Template,
    },
    /// Re-hash every committed output and report changed, added and missing files.
    Verify {
        /// Remove damaged outputs so that the next run recomputes them.
        #[arg(long)]
        repair: bool,
    },
    /// A run's jobs as a table: parameters and the numbers in each output's metrics.json.
    Results {
        /// The run (default: the lab's only run).
        run: Option<String>,
        /// Only this stage's jobs (default: the stages that wrote metrics.json).
        #[arg(long)]
        stage: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: TableFormat,
    },
    /// Draw the stage graph (or with --jobs the job graph) as DOT or SVG, on stdout.
    Viz {
        /// Only this run's stages (default: every run).
        run: Option<String>,
        /// One node per job, filled by its state, instead of one per stage.
        #[arg(long)]
        jobs: bool,
        #[arg(long, value_enum, default_value = "dot")]
        format: VizFormat,
    },
    /// Print shell completions for repx: `repx completions bash > ~/.local/share/bash-completion/completions/repx`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `repx man | man -l -`; with --dir, write one page per
    /// command there (repx.1, repx-run.1, …) for `man repx-run`.
    Man {
        /// Write every page into this directory (a `man1` directory on MANPATH).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Remove from the store what no registered lab still reaches, nor a pin keeps.
    Gc {
        /// Only list what would go, and how much space it would free.
        #[arg(long)]
        dry_run: bool,
        #[command(subcommand)]
        pin: Option<GcPin>,
    },
    /// The compiled-plugin cache: what it holds, and removing what is old.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Write one self-contained HTML page about a run: graph, results, plots, timings.
    Report {
        /// The run (default: the lab's only run).
        run: Option<String>,
        /// Only this stage's jobs in the results, plots and timings.
        #[arg(long)]
        stage: Option<String>,
        /// Where to write the page (default: RUN-report.html here).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Measure what RepX costs per job, per no-op, per plugin load, against baselines.
    Bench(bench::BenchArgs),
    /// Run one batch of jobs on this SLURM allocation, as `repx run --scheduler slurm`
    /// submits it (its `worker.sh` calls this).
    #[command(hide = true)]
    Worker {
        /// The batch file (`<store>/slurm/<run>/batch-N-T.json`).
        batch: PathBuf,
    },
    /// Run one hermetic job as the builder of its Nix derivation (inside the Nix sandbox).
    #[command(hide = true)]
    ExecJob,
    /// Compile a plugin as the builder of its Nix derivation, for hermetic jobs.
    #[command(hide = true)]
    CompilePlugin,
}

#[derive(Subcommand, Debug)]
pub enum GcPin {
    /// Keep a run's outputs as they are now, even when no lab reaches them any more.
    Pin {
        /// The run of the lab at --lab.
        run: String,
    },
    /// Stop keeping what `repx gc pin RUN` kept.
    Unpin {
        /// The run of the lab at --lab.
        run: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Each compiled plugin: its size and when it was last used.
    List,
    /// How many compiled plugins, how much space, how old.
    Stats,
    /// Remove compiled plugins (all, or those unused for a while); they are compiled again
    /// when needed.
    Clear {
        /// Only those not used for this long: `30d`, `12h`, `90m`.
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ListWhat {
    Runs,
    Jobs,
    Deps,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TableFormat {
    /// Aligned columns for reading.
    Table,
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON document with every job's parameters and metrics.
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum VizFormat {
    /// Graphviz's DOT language.
    Dot,
    /// An SVG drawing, laid out without Graphviz.
    Svg,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Write each stage's plugin digest (`sha256`) into the lab file.
    Pin {
        /// Only these stages (default: every stage with a plugin file).
        stages: Vec<String>,
    },
    /// Make a plugin in Rust, C, Python or JavaScript, with a lab to try it.
    New {
        /// The plugin's (and its stage's) name.
        name: String,
        /// Its language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: plugin::Lang,
        /// The directory to make it in (default: here).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Build the plugin in DIR (default: here) with its language's toolchain, into
    /// DIR/plugin.wasm, with the parameters DIR/plugin.toml declares. Never downloads;
    /// says what is missing and how to install it.
    Build {
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Show a .wasm file's digests, kind, declared parameters, imports and exports, and what
    /// a stage needs for it.
    Inspect {
        #[arg(value_name = "FILE.wasm")]
        file: PathBuf,
    },
    /// What `repx plugin build` gives componentize-js in place of Wizer: Wizer's
    /// arguments, a deterministic environment for the run it snapshots.
    #[command(hide = true)]
    Preinit {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Template {
    /// generate → sum, plot (RepX's example plugins).
    Simple,
    /// A parameter sweep gathered by one stage, with metrics for `repx results`.
    Sweep,
    /// C sources built in place by builtin:make, the program run by builtin:exec.
    Impure,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ShowWhat {
    Job,
    Output,
    /// What a stage's jobs are granted: directories, tools, env, limits.
    Stage,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Runs, stages (their jobs and what they need) or job-id prefixes (default: every
    /// run). A name that is both a run and a stage is the run; --stage names the stage.
    pub targets: Vec<String>,
    /// Run this stage's jobs and what they need (repeatable); for a stage whose name is
    /// also a run's.
    #[arg(long = "stage", value_name = "STAGE")]
    pub stages: Vec<String>,
    /// Jobs at once (default: the number of cores).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Keep running independent jobs after one fails.
    #[arg(long)]
    pub continue_on_failure: bool,
    /// Run every stage impure: the project directory read-write at /work.
    #[arg(long, group = "mode")]
    pub impure: bool,
    /// Run every stage pure: inputs read-only snapshots, tools sandboxed.
    #[arg(long, group = "mode")]
    pub pure: bool,
    /// Run every stage hermetic, through Nix.
    #[arg(long, group = "mode")]
    pub hermetic: bool,
    /// A Nix setting for building hermetic jobs (`nix-build --option NAME VALUE`), e.g.
    /// `builders=ssh://host x86_64-linux` or `substituters=https://cache.example`.
    #[arg(long = "nix-option", value_name = "NAME=VALUE")]
    pub nix_options: Vec<String>,
    /// Add inputs of hermetic jobs that other local users cannot read (a 0600 file, a
    /// 0700 project) to the Nix store anyway, where every local user can read them.
    #[arg(long)]
    pub publish_private_inputs: bool,
    /// Re-run jobs even when their output is in the store; with a name, only that stage's
    /// jobs, or, if no stage has that name, that run's.
    #[arg(long, value_name = "STAGE|RUN", num_args = 0..=1, default_missing_value = "")]
    pub force: Option<String>,
    /// Run this plugin ad hoc, as one job, instead of a lab.
    #[arg(long, value_name = "FILE.wasm")]
    pub plugin: Option<PathBuf>,
    /// With --plugin: an input directory, mounted at /in/NAME.
    #[arg(long = "input", value_name = "NAME=PATH", requires = "plugin")]
    pub inputs: Vec<String>,
    /// With --plugin: a parameter; the value is JSON, or else a string.
    #[arg(long = "param", value_name = "KEY=VALUE", requires = "plugin")]
    pub params: Vec<String>,
    /// With --plugin: copy the output here (a missing or empty directory).
    #[arg(long, value_name = "DIR", requires = "plugin")]
    pub out: Option<PathBuf>,
    /// With --out: replace what DIR holds.
    #[arg(long, requires = "out")]
    pub force_out: bool,
    /// Run a failed job again up to N times, whatever its stage's `retries` says; each
    /// attempt has the stage's limits escalated (by default twice the memory of the one
    /// before). A refusal, an interrupt or a store failure is not retried.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// The memory the jobs running at once may reserve together, like `8G` (default: the
    /// machine's available memory, or less when repx's memory cgroup leaves less, as in a
    /// container). Each job reserves its stage's `resources.mem`, else its
    /// memory limit, and its `cpus` (1 by default) of the -j CPUs; a job that does not fit
    /// waits while smaller ones run, and one larger than SIZE fails before it starts.
    /// Without --mem, a memory limit over the available memory makes its job run alone.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub mem: Option<u64>,
    /// Run nothing: list each job that would run and why, then counts per stage; with
    /// --plugin, what the plugin would be granted.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object per event on stdout instead of progress for a person.
    #[arg(long)]
    pub json: bool,
    /// How progress is shown on stderr: bars on a terminal that says its width (auto),
    /// bars, plain lines, or none (failures, warnings and the closing counts only).
    #[arg(long, value_enum, default_value_t, conflicts_with = "json")]
    pub progress: render::Progress,
    /// List each cached job on a line of its own (default: a count per stage).
    #[arg(short, long)]
    pub verbose: bool,
    /// Run, then run again whenever what the selected jobs depend on changes (impure
    /// stages' sources, `path:` inputs, plugin files, the lab file); one line per run;
    /// Ctrl-C stops.
    #[arg(long, conflicts_with_all = ["plugin", "json", "dry_run"])]
    pub watch: bool,
    /// Where the jobs run: here, or on a SLURM cluster in few allocations.
    #[arg(long, value_enum, default_value = "local")]
    pub scheduler: slurm::Scheduler,
    #[command(flatten)]
    pub slurm: slurm::SlurmArgs,
}

/// Parses the command line, runs the command, and returns the exit code.
/// A size on the command line, as in a lab: `512M`, `8G`, a number of bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    crate::lab::limits::parse_bytes(text)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is not a size: write it like `512M` or `8G`"))
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::INVALID
            } else {
                exit::SUCCESS
            };
        }
    };
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            errln!("{}", e.render());
            e.exit_code()
        }
    };
    print::finish(code)
}

fn dispatch(cli: Cli) -> Result<i32, CliError> {
    match &cli.command {
        Command::Run(args) => run::run(&cli, args),
        Command::List {
            what,
            run,
            output_paths,
            filter,
        } => inspect::list(&cli, *what, run.as_deref(), *output_paths, filter),
        Command::Show {
            what,
            job,
            impure,
            pure,
            hermetic,
        } => {
            let modes = [
                (*impure, Mode::Impure),
                (*pure, Mode::Pure),
                (*hermetic, Mode::Hermetic),
            ];
            let mode = modes
                .into_iter()
                .find_map(|(given, mode)| given.then_some(mode));
            inspect::show(&cli, *what, job, mode)
        }
        Command::Log {
            job,
            follow,
            attempt,
        } => inspect::log(&cli, job, *follow, *attempt),
        Command::Debug { job, dir } => debug::debug(&cli, job, dir.as_deref()),
        Command::Tui => tui::tui(&cli),
        Command::Plugin(PluginCommand::Pin { stages }) => pin::pin(&cli, stages),
        Command::Plugin(PluginCommand::New { name, lang, dir }) => {
            plugin::new(name, dir.as_deref(), *lang)
        }
        Command::Plugin(PluginCommand::Build { dir }) => plugin::build::build(dir.as_deref()),
        Command::Plugin(PluginCommand::Inspect { file }) => plugin::inspect(file),
        Command::Plugin(PluginCommand::Preinit { args }) => Ok(plugin::preinit::main(args)),
        Command::Init { dir, template } => init::init(dir.as_deref(), *template),
        Command::Verify { repair } => verify::verify(&cli, *repair),
        Command::Results { run, stage, format } => {
            results::results(&cli, run.as_deref(), stage.as_deref(), *format)
        }
        Command::Viz { run, jobs, format } => viz::viz(&cli, run.as_deref(), *jobs, *format),
        Command::Report { run, stage, output } => {
            report::report(&cli, run.as_deref(), stage.as_deref(), output.as_deref())
        }
        Command::Gc { dry_run, pin: None } => gc::gc(&cli, *dry_run),
        Command::Gc { pin: Some(pin), .. } => gc::pin(&cli, pin),
        Command::Cache(command) => cache::cache(command),
        Command::Completions { shell } => completions::completions(*shell),
        Command::Man { dir } => completions::man(dir.as_deref()),
        Command::Bench(args) => bench::bench(args),
        Command::Worker { batch } => worker::worker(&cli, batch),
        Command::ExecJob => Ok(crate::nix::exec::exec_job()),
        Command::CompilePlugin => Ok(crate::nix::exec::compile_plugin()),
    }
}
