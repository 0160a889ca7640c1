//! The SLURM commands the coordinator runs: `sinfo` to size allocations, `sbatch` to
//! submit, `squeue` (and `sacct` where accounting is on) to watch, `scancel` to cancel.
//! Building their arguments and reading
//! their output are plain functions, tested without a cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::SlurmError;

/// One `sbatch` call: a single allocation, or a job array of `array` tasks.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub script: PathBuf,
    /// Arguments of the script.
    pub args: Vec<String>,
    pub name: String,
    /// The log file pattern (`%j`, `%A_%a`).
    pub output: PathBuf,
    pub cpus: u32,
    pub mem: Option<u64>,
    pub time: Option<Duration>,
    pub array: Option<usize>,
    /// SLURM ids the allocation waits for (`afterok`).
    pub after: Vec<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub flags: Vec<String>,
}

impl Submission {
    /// The arguments of `sbatch`, script last.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", self.name),
            format!("--output={}", self.output.display()),
            "--nodes=1".into(),
            "--ntasks=1".into(),
            format!("--cpus-per-task={}", self.cpus.max(1)),
            // A worker run twice would only redo work: the coordinator resubmits instead.
            "--no-requeue".into(),
        ];
        if let Some(mem) = self.mem {
            args.push(format!("--mem={}M", mem.div_ceil(1 << 20)));
        }
        if let Some(time) = self.time {
            args.push(format!("--time={}", slurm_time(time)));
        }
        for (flag, value) in [
            ("partition", &self.partition),
            ("account", &self.account),
            ("qos", &self.qos),
        ] {
            if let Some(value) = value {
                args.push(format!("--{flag}={value}"));
            }
        }
        if let Some(tasks) = self.array {
            args.push(format!("--array=0-{}", tasks.saturating_sub(1)));
        }
        if !self.after.is_empty() {
            args.push(format!("--dependency=afterok:{}", self.after.join(":")));
            // An allocation whose upstream failed never starts; it is cancelled, and the
            // coordinator puts its jobs back.
            args.push("--kill-on-invalid-dep=yes".into());
        }
        args.extend(self.flags.iter().cloned());
        args.push(self.script.display().to_string());
        args.extend(self.args.iter().cloned());
        args
    }
}

/// `D-HH:MM:SS`, rounded up to a whole minute.
pub fn slurm_time(time: Duration) -> String {
    let minutes = time.as_secs().div_ceil(60).max(1);
    format!(
        "{}-{:02}:{:02}:00",
        minutes / (24 * 60),
        minutes / 60 % 24,
        minutes % 60
    )
}

/// What one node of a partition has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub cpus: u32,
    /// Memory in bytes.
    pub mem: u64,
}

/// The nodes of `partition` (a comma-separated list, as `sbatch` takes), or of the
/// default partition.
pub fn nodes(partition: Option<&str>) -> Result<Vec<Node>, SlurmError> {
    let mut args = vec![
        "--noheader".to_string(),
        "--Node".into(),
        "--format=%P|%c|%m".into(),
    ];
    if let Some(partition) = partition {
        args.push(format!("--partition={partition}"));
    }
    let out = run("sinfo", &args)?;
    Ok(parse_nodes(&out, partition.is_none()))
}

/// `PARTITION|CPUS|MEGABYTES` lines; sinfo marks the default partition with `*`.
pub fn parse_nodes(out: &str, default_only: bool) -> Vec<Node> {
    out.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split('|');
            let partition = fields.next()?;
            let cpus = fields.next()?.trim().parse().ok()?;
            let mb: u64 = fields.next()?.trim().parse().ok()?;
            (!default_only || partition.ends_with('*')).then_some(Node {
                cpus,
                mem: mb << 20,
            })
        })
        .collect()
}

/// Submits; returns the SLURM job id (of the array, for an array).
pub fn sbatch(submission: &Submission) -> Result<String, SlurmError> {
    let out = run("sbatch", &submission.args())?;
    parse_sbatch(&out).ok_or_else(|| SlurmError::Command {
        command: "sbatch".into(),
        message: format!("unexpected output {out:?}"),
    })
}

/// `--parsable` prints `ID` or `ID;CLUSTER`.
pub fn parse_sbatch(out: &str) -> Option<String> {
    let id = out.trim().split(';').next()?.trim();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_string())
}

/// What SLURM says of one job (or array task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub state: String,
    pub reason: String,
}

impl JobState {
    /// The job will not run (again): it completed, failed or was cancelled.
    pub fn is_over(&self) -> bool {
        const OVER: [&str; 10] = [
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "OUT_OF_MEMORY",
            "NODE_FAIL",
            "PREEMPTED",
            "BOOT_FAIL",
            "DEADLINE",
            "REVOKED",
        ];
        OVER.iter().any(|s| self.state.starts_with(s))
    }

    /// Pending on an `afterok` that can no longer be met.
    pub fn never_runs(&self) -> bool {
        self.state == "PENDING" && self.reason.contains("DependencyNeverSatisfied")
    }
}

/// The states of every job named `name` (this run's allocations), by id (`123`, `123_4`).
pub fn squeue(name: &str) -> Result<BTreeMap<String, JobState>, SlurmError> {
    let out = run(
        "squeue",
        &[
            "--noheader".into(),
            "--array".into(),
            "--states=all".into(),
            format!("--name={name}"),
            "--format=%i|%T|%r".into(),
        ],
    )?;
    Ok(parse_squeue(&out))
}

pub fn parse_squeue(out: &str) -> BTreeMap<String, JobState> {
    out.lines()
        .filter_map(|line| {
            let mut fields = line.trim().splitn(3, '|');
            let id = fields.next()?.trim();
            let state = fields.next()?.trim();
            let reason = fields.next().unwrap_or_default().trim();
            (!id.is_empty() && !state.is_empty()).then(|| {
                (
                    id.to_string(),
                    JobState {
                        state: state.to_string(),
                        reason: reason.to_string(),
                    },
                )
            })
        })
        .collect()
}

/// What accounting remembers of jobs squeue has forgotten; `None` without accounting.
pub fn sacct(ids: &[String]) -> Option<BTreeMap<String, JobState>> {
    let out = run(
        "sacct",
        &[
            "--noheader".into(),
            "--parsable2".into(),
            "--allocations".into(),
            format!("--jobs={}", ids.join(",")),
            "--format=JobID,State,ExitCode".into(),
        ],
    )
    .ok()?;
    Some(
        out.lines()
            .filter_map(|line| {
                let mut fields = line.split('|');
                let id = fields.next()?.to_string();
                // `CANCELLED by 0` → `CANCELLED`.
                let state = fields.next()?.split_whitespace().next()?.to_string();
                let code = fields.next().unwrap_or_default();
                Some((
                    id,
                    JobState {
                        state,
                        reason: format!("exit code {code}"),
                    },
                ))
            })
            .collect(),
    )
}

/// Cancels jobs (whole arrays or single tasks); with `pending_only`, only those not started.
pub fn scancel(ids: &[String], pending_only: bool) -> Result<(), SlurmError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut args = Vec::new();
    if pending_only {
        args.push("--state=PENDING".to_string());
    }
    args.extend(ids.iter().cloned());
    run("scancel", &args).map(|_| ())
}

/// Checks that the commands exist and the controller answers, with a message saying what
/// to do otherwise.
pub fn check() -> Result<(), SlurmError> {
    run("squeue", &["--noheader".into(), "--name=repx-check".into()]).map(|_| ())
}

fn run(program: &str, args: &[String]) -> Result<String, SlurmError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SlurmError::Missing {
                command: program.into(),
            },
            _ => SlurmError::Command {
                command: program.into(),
                message: e.to_string(),
            },
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(SlurmError::Command {
            command: format!("{program} {}", shown(args)),
            message: format!("{}: {}", output.status, stderr.trim()),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Arguments as a person would type them, for messages.
fn shown(args: &[String]) -> String {
    let mut text = args.iter().take(12).cloned().collect::<Vec<_>>().join(" ");
    if args.len() > 12 {
        text.push_str(" …");
    }
    text
}

/// `'…'` for a POSIX shell.
pub fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions_become_sbatch_options() {
        let sub = Submission {
            script: "/s/worker.sh".into(),
            args: vec!["3".into()],
            name: "repx-r1".into(),
            output: "/s/slurm-%A_%a.log".into(),
            cpus: 2,
            mem: Some(2 << 30),
            time: Some(Duration::from_secs(601)),
            array: Some(4),
            after: vec!["12_0".into(), "13".into()],
            partition: Some("short".into()),
            account: None,
            qos: Some("low".into()),
            flags: vec!["--constraint=avx2".into()],
        };
        assert_eq!(
            sub.args().join(" "),
            "--parsable --job-name=repx-r1 --output=/s/slurm-%A_%a.log --nodes=1 --ntasks=1 \
             --cpus-per-task=2 --no-requeue --mem=2048M --time=0-00:11:00 --partition=short \
             --qos=low --array=0-3 --dependency=afterok:12_0:13 --kill-on-invalid-dep=yes \
             --constraint=avx2 /s/worker.sh 3"
        );
        assert_eq!(slurm_time(Duration::from_secs(26 * 3600)), "1-02:00:00");
    }

    #[test]
    fn slurm_output_is_read() {
        assert_eq!(parse_sbatch("1234\n").as_deref(), Some("1234"));
        assert_eq!(parse_sbatch("1234;cluster\n").as_deref(), Some("1234"));
        assert_eq!(parse_sbatch("Submitted batch job 1"), None);
        let states = parse_squeue(
            "12_0|RUNNING|None\n12_1|PENDING|Resources\n13|CANCELLED|DependencyNeverSatisfied\n",
        );
        assert_eq!(states.len(), 3);
        assert!(!states["12_0"].is_over());
        assert!(states["13"].is_over());
        let stuck = JobState {
            state: "PENDING".into(),
            reason: "DependencyNeverSatisfied".into(),
        };
        assert!(stuck.never_runs());
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
        let sinfo = "debug*|2|21694\nbig|64|257000\nbig|n/a|1\n";
        assert_eq!(
            parse_nodes(sinfo, true),
            [Node {
                cpus: 2,
                mem: 21694 << 20
            }]
        );
        assert_eq!(parse_nodes(sinfo, false).len(), 2);
    }
}
