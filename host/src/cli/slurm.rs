//! `repx run --scheduler slurm`: the SLURM flags, the cluster they describe, and the
//! coordinator's closing line.

use clap::Args;

use super::error::{CliError, invalid};
use crate::lab::{Lab, Mode, SlurmSettings};
use crate::sched::slurm::{Cluster, Submitted, config};

/// Where `repx run` runs its jobs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheduler {
    /// In this process, on `-j N` threads.
    #[default]
    Local,
    /// On a SLURM cluster, batched into few allocations that run `repx worker`.
    Slurm,
}

#[derive(Args, Debug, Default)]
#[command(next_help_heading = "With --scheduler slurm")]
pub struct SlurmArgs {
    /// The partition to submit to (`sbatch --partition`).
    #[arg(long, value_name = "NAME")]
    pub partition: Option<String>,
    /// The account to charge (`sbatch --account`).
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// The quality of service (`sbatch --qos`).
    #[arg(long, value_name = "NAME")]
    pub qos: Option<String>,
    /// One more `sbatch` option, as one argument (`--sbatch-flag=--constraint=avx2`).
    #[arg(long = "sbatch-flag", value_name = "FLAG", allow_hyphen_values = true)]
    pub sbatch_flags: Vec<String>,
    /// The most jobs one allocation runs [default: 256].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: Option<u32>,
    /// The most CPUs one allocation asks for; it runs as many jobs at once as fit
    /// [default: 4, or the partition's largest node when smaller].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_cpus: Option<u32>,
    /// The most allocations of this run queued or running at once [default: 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_submissions: Option<u32>,
    /// Submit each batch with its own `sbatch` instead of a wave's batches as one job array.
    #[arg(long)]
    pub no_job_arrays: bool,
}

impl SlurmArgs {
    fn settings(&self) -> SlurmSettings {
        SlurmSettings {
            partition: self.partition.clone(),
            account: self.account.clone(),
            qos: self.qos.clone(),
            sbatch_flags: self.sbatch_flags.clone(),
            batch_size: self.batch_size.map(|n| n as usize),
            batch_cpus: self.batch_cpus,
            max_submissions: self.max_submissions.map(|n| n as usize),
            arrays: self.no_job_arrays.then_some(false),
            batch_time: None,
        }
    }

    /// The flags given, by name, so that a local run can refuse them.
    fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        for (name, set) in [
            ("--partition", self.partition.is_some()),
            ("--account", self.account.is_some()),
            ("--qos", self.qos.is_some()),
            ("--sbatch-flag", !self.sbatch_flags.is_empty()),
            ("--batch-size", self.batch_size.is_some()),
            ("--batch-cpus", self.batch_cpus.is_some()),
            ("--max-submissions", self.max_submissions.is_some()),
            ("--no-job-arrays", self.no_job_arrays),
        ] {
            if set {
                given.push(name);
            }
        }
        given
    }
}

/// Refuses SLURM flags on a local run, and a SLURM run of an ad hoc plugin.
pub fn check_args(scheduler: Scheduler, args: &SlurmArgs, ad_hoc: bool) -> Result<(), CliError> {
    match scheduler {
        Scheduler::Local => match args.given().first() {
            Some(flag) => Err(invalid(format!(
                "{flag} is for `--scheduler slurm`; add it, or leave {flag} out"
            ))),
            None => Ok(()),
        },
        Scheduler::Slurm if ad_hoc => Err(invalid(
            "--plugin runs one plugin here; it cannot go to SLURM: leave out --scheduler slurm",
        )),
        Scheduler::Slurm => Ok(()),
    }
}

/// The cluster a SLURM run submits to: the flags, then the lab's `[slurm]`, then the
/// user's settings.
pub fn cluster(
    lab: &Lab,
    runs: &[String],
    mode: Option<Mode>,
    args: &SlurmArgs,
) -> Result<Cluster, CliError> {
    let (user, warnings) = config::user_settings().map_err(|e| CliError::Invalid(e.into()))?;
    for warning in warnings {
        errln!("warning: {}", super::escape::terminal(&warning.to_string()));
    }
    Ok(Cluster {
        config: config::resolve(&[&args.settings(), &lab.slurm, &user]),
        exe: std::env::current_exe()?,
        lab_file: lab.file.clone(),
        runs: runs.to_vec(),
        mode,
    })
}

/// Where a SLURM run's batches and logs are, once it submitted any.
pub fn closing_line(submitted: &Submitted) {
    if submitted.submissions > 0 {
        errln!(
            "slurm: {} allocation(s) from {} submission(s); batches and logs in {}",
            submitted.allocations,
            submitted.submissions,
            submitted.dir.display()
        );
    }
}
