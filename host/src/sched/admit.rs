//! Admission by resources: what a job reserves while an executor holds it, and the budget
//! those reservations share (`repx run -j N --mem SIZE`).
//!
//! A job reserves its stage's `resources`: `cpus` (1 when not given) and `mem` (its memory
//! limit at that attempt when not given, see [`crate::lab::Escalation`]). The dispatcher
//! takes a job's reservation when it hands the job over and gives it back when the job is
//! sealed, fails or is given back ([`Ledger`]).
//!
//! The budget's memory is `--mem`, else what the machine (or repx's memory cgroup) has
//! available when the run starts. A memory limit is a ceiling, not a need: so when neither
//! the user's `--mem` nor the stage's `resources.mem` names a size, a job whose limit is
//! over the available memory reserves all of it and runs alone, rather than fail for a
//! request nobody made ([`Ledger::clamp`]).
//!
//! Invariants:
//! - the reservations of the jobs an executor holds never add up to more than the budget,
//!   in CPUs or in memory;
//! - a job asking for more CPUs than the budget has reserves all of them: it runs alone;
//! - a job whose memory request was written (`resources.mem`), or whose budget was
//!   (`--mem`), and is more than the whole budget never fits: it fails before it starts,
//!   naming its stage, its request and the budget ([`Ledger::never_fits`]); one whose
//!   request and budget are both defaults reserves the whole budget and runs alone;
//! - jobs are offered in order, but one that does not fit now does not hold back those
//!   behind it that do: small jobs fill in around a big one (for how long, see the
//!   dispatcher's aging rule, [`super::dispatch`]).

use crate::lab::Stage;
use crate::lab::limits::bytes;

/// What one job reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub cpus: u32,
    /// Bytes.
    pub mem: u64,
    /// Whether `mem` was written in the lab (`resources.mem`), not taken from the memory
    /// limit.
    pub mem_given: bool,
}

impl Request {
    /// What a job of `stage` reserves at `attempt` (from 1).
    pub fn of(stage: &Stage, attempt: u32) -> Request {
        let cpus = stage.resources.cpus.unwrap_or(1);
        match stage.resources.mem {
            Some(mem) => Request {
                cpus,
                mem,
                mem_given: true,
            },
            None => Request {
                cpus,
                mem: stage.escalate.at(stage.limits, attempt).memory,
                mem_given: false,
            },
        }
    }

    /// `cpus` CPUs and `mem` bytes, as written in the lab.
    pub fn given(cpus: u32, mem: u64) -> Request {
        Request {
            cpus,
            mem,
            mem_given: true,
        }
    }
}

/// What the jobs an executor holds may reserve together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub cpus: u32,
    /// Bytes.
    pub mem: u64,
    /// Whether `mem` is the user's (`--mem`), not the memory available.
    pub mem_given: bool,
}

/// The reservations against a budget.
#[derive(Debug)]
pub struct Ledger {
    budget: Budget,
    cpus: u32,
    mem: u64,
}

impl Ledger {
    pub fn new(budget: Budget) -> Ledger {
        Ledger {
            budget,
            cpus: 0,
            mem: 0,
        }
    }

    /// `request` as reserved: at most the budget's CPUs; and at most its memory when
    /// neither the request's memory nor the budget's was written by the user (a memory
    /// limit over what is available now: the job runs alone).
    pub fn clamp(&self, request: Request) -> Request {
        let defaults = !request.mem_given && !self.budget.mem_given;
        Request {
            cpus: request.cpus.min(self.budget.cpus),
            mem: match defaults {
                true => request.mem.min(self.budget.mem),
                false => request.mem,
            },
            ..request
        }
    }

    /// Why a job of `stage` asking for `request` (clamped) can never run within the
    /// budget, if so.
    pub fn never_fits(&self, stage: &str, request: Request) -> Option<String> {
        let asked = match request.mem_given {
            true => "`resources.mem`",
            false => "its memory limit",
        };
        let budget = match self.budget.mem_given {
            true => "`--mem`",
            false => "the memory available when it started",
        };
        (request.mem > self.budget.mem).then(|| {
            format!(
                "stage `{stage}` asks for {} of memory per job ({asked}), more than the \
                 run's budget of {} ({budget}): give the run more with `repx run --mem \
                 SIZE`, or lower the stage's `resources.mem` (else its `limits.memory`)",
                bytes(request.mem),
                bytes(self.budget.mem)
            )
        })
    }

    /// Whether `request` (clamped) fits beside what is reserved.
    pub fn fits(&self, request: Request) -> bool {
        self.cpus + request.cpus <= self.budget.cpus
            && self.mem.saturating_add(request.mem) <= self.budget.mem
    }

    pub fn take(&mut self, request: Request) {
        self.cpus += request.cpus;
        self.mem = self.mem.saturating_add(request.mem);
    }

    pub fn give(&mut self, request: Request) {
        self.cpus -= request.cpus;
        self.mem -= request.mem;
    }
}

/// The budget of a local run of `stages` on `workers` threads with `mem` bytes (`--mem`,
/// else the machine's available memory), when it can bind: `None` when any `slots` jobs
/// of those stages fit in it at once whatever they are (each asks for one CPU, and
/// `slots` of the largest memory request fit), so that the executor may keep jobs queued
/// ahead of its workers. `retries` is each stage's, for the largest attempt's memory.
pub fn local_budget<'a>(
    stages: impl Iterator<Item = (&'a Stage, u32)>,
    workers: usize,
    slots: usize,
    mem: Option<u64>,
) -> Option<Budget> {
    let mem_given = mem.is_some();
    let mem = mem.or_else(available_memory)?;
    let mut largest = 0u64;
    let mut many_cpus = false;
    for (stage, retries) in stages {
        let request = Request::of(stage, retries.saturating_add(1));
        largest = largest.max(request.mem);
        many_cpus |= request.cpus > 1;
    }
    let binds = many_cpus || largest.saturating_mul(slots as u64) > mem;
    binds.then_some(Budget {
        cpus: u32::try_from(workers).unwrap_or(u32::MAX),
        mem,
        mem_given,
    })
}

/// What can be had without swapping: `MemAvailable` of `/proc/meminfo`, or less when a
/// memory control group of this process leaves less. A container, a SLURM job step or a
/// systemd slice is bounded by its group, not by the machine, and a budget over the group's
/// room would admit jobs that the kernel then kills.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let machine = kib.checked_mul(1024)?;
    let groups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let room = group_room(std::path::Path::new("/sys/fs/cgroup"), &groups);
    Some(room.map_or(machine, |room| room.min(machine)))
}

/// The least room (limit less usage) that the memory control groups named in `groups` (as
/// in `/proc/self/cgroup`), or any group above them, leave under the hierarchy at `root`:
/// cgroup v2 (`memory.max`, at `root` or `root/unified`) and v1 (`root/memory`,
/// `memory.limit_in_bytes`). `None` when no group has a limit.
fn group_room(root: &std::path::Path, groups: &str) -> Option<u64> {
    let mut least: Option<u64> = None;
    for line in groups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        let hierarchies: &[(std::path::PathBuf, &str, &str)] = if controllers.is_empty() {
            &[
                (root.to_path_buf(), "memory.max", "memory.current"),
                (root.join("unified"), "memory.max", "memory.current"),
            ]
        } else if controllers.split(',').any(|c| c == "memory") {
            &[(
                root.join("memory"),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )]
        } else {
            continue;
        };
        for (base, limit, usage) in hierarchies {
            let mut dir = base.join(path);
            loop {
                let read = |file: &str| -> Option<u64> {
                    std::fs::read_to_string(dir.join(file))
                        .ok()?
                        .trim()
                        .parse()
                        .ok()
                };
                // "max" (v2) does not parse: no limit there.
                if let Some(limit) = read(limit) {
                    let room = limit.saturating_sub(read(usage).unwrap_or(0));
                    least = Some(least.map_or(room, |least| least.min(room)));
                }
                if dir == *base || !dir.pop() {
                    break;
                }
            }
        }
    }
    least
}

/// A stage with these limits and resources, for tests.
#[cfg(test)]
pub(crate) fn stage_for_test(memory: u64, cpus: Option<u32>, mem: Option<u64>) -> Stage {
    Stage {
        name: "s".into(),
        plugin: crate::lab::PluginRef::Builtin("exec".into()),
        sha256: None,
        mode: crate::lab::Mode::Pure,
        inputs: Default::default(),
        params: Default::default(),
        outputs: Vec::new(),
        tools: Vec::new(),
        sources: Vec::new(),
        limits: crate::lab::Limits {
            memory,
            ..Default::default()
        },
        retries: 0,
        escalate: Default::default(),
        resources: crate::lab::Resources {
            cpus,
            mem,
            time: None,
        },
        foreach: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    #[test]
    fn a_request_is_the_stage_resources_else_its_memory_limit_at_the_attempt() {
        let stage = stage_for_test(100 * M, None, None);
        assert_eq!(
            Request::of(&stage, 1),
            Request {
                cpus: 1,
                mem: 100 * M,
                mem_given: false,
            }
        );
        assert_eq!(Request::of(&stage, 2).mem, 200 * M);
        let stage = stage_for_test(100 * M, Some(4), Some(30 * M));
        assert_eq!(Request::of(&stage, 3), Request::given(4, 30 * M));
    }

    #[test]
    fn the_ledger_keeps_within_the_budget() {
        let mut ledger = Ledger::new(Budget {
            cpus: 2,
            mem: 100 * M,
            mem_given: true,
        });
        let big = Request::given(1, 70 * M);
        let small = Request::given(1, 20 * M);
        assert!(ledger.fits(big));
        ledger.take(big);
        assert!(!ledger.fits(big));
        assert!(ledger.fits(small));
        ledger.take(small);
        assert!(!ledger.fits(small), "no CPU left");
        ledger.give(big);
        assert!(ledger.fits(big));
        // More CPUs than the budget: all of them, alone.
        let wide = ledger.clamp(Request::given(8, M));
        assert_eq!(wide.cpus, 2);
        assert!(ledger.never_fits("s", wide).is_none());
        let message = ledger
            .never_fits("huge", Request::given(1, 200 * M))
            .unwrap();
        assert!(
            message.contains("`huge`") && message.contains("200M") && message.contains("100M"),
            "{message}"
        );
    }

    #[test]
    fn a_memory_limit_over_the_available_memory_reserves_it_all_unless_a_size_was_written() {
        let available = Budget {
            cpus: 2,
            mem: 100 * M,
            mem_given: false,
        };
        let from_limit = Request::of(&stage_for_test(300 * M, None, None), 1);
        let written = Request::of(&stage_for_test(300 * M, None, Some(200 * M)), 1);
        // Neither size written: the job reserves the whole budget, so runs alone.
        let ledger = Ledger::new(available);
        let clamped = ledger.clamp(from_limit);
        assert_eq!(clamped.mem, 100 * M);
        assert!(ledger.never_fits("s", clamped).is_none());
        assert!(ledger.fits(clamped));
        let mut busy = Ledger::new(available);
        busy.take(ledger.clamp(Request::given(1, M)));
        assert!(
            !busy.fits(clamped),
            "it waits until nothing else holds memory"
        );
        // `resources.mem` over the available memory: it fails before it starts.
        let message = ledger.never_fits("s", ledger.clamp(written)).unwrap();
        assert!(
            message.contains("200M") && message.contains("`resources.mem`"),
            "{message}"
        );
        assert!(message.contains("memory available"), "{message}");
        // `--mem` under the memory limit: the user's bound holds, the job fails.
        let ledger = Ledger::new(Budget {
            mem_given: true,
            ..available
        });
        let message = ledger.never_fits("s", ledger.clamp(from_limit)).unwrap();
        assert!(
            message.contains("300M") && message.contains("its memory limit"),
            "{message}"
        );
        assert!(message.contains("`--mem`"), "{message}");
    }

    #[test]
    fn a_budget_that_cannot_bind_is_none() {
        let small = stage_for_test(10 * M, None, None);
        let wide = stage_for_test(10 * M, Some(2), None);
        // Four jobs of 10M fit in 100M: nothing to admit.
        assert_eq!(
            local_budget([(&small, 0)].into_iter(), 2, 4, Some(100 * M)),
            None
        );
        // A retry's 20M times four does not fit in 60M.
        assert!(local_budget([(&small, 1)].into_iter(), 2, 4, Some(60 * M)).is_some());
        // Two CPUs a job binds whatever the memory.
        let budget = local_budget([(&wide, 0)].into_iter(), 2, 4, Some(1 << 40));
        assert_eq!(
            budget,
            Some(Budget {
                cpus: 2,
                mem: 1 << 40,
                mem_given: true,
            })
        );
    }

    #[test]
    fn a_control_group_with_less_room_than_the_machine_bounds_the_budget() {
        let root = std::env::temp_dir().join(format!("repx-cgroup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        // v2: the job's group has no limit, its parent has 3G with 1G used.
        write("slice/job/memory.max", "max\n");
        write("slice/job/memory.current", "5\n");
        write("slice/memory.max", "3221225472\n");
        write("slice/memory.current", "1073741824\n");
        assert_eq!(group_room(&root, "0::/slice/job\n"), Some(2 << 30));
        // v1 (a hybrid host): the memory hierarchy's own file names.
        write("memory/box/memory.limit_in_bytes", "1073741824\n");
        write("memory/box/memory.usage_in_bytes", "1048576\n");
        let hybrid = "4:memory:/box\n3:cpu,cpuacct:/\n0::/\n";
        assert_eq!(group_room(&root, hybrid), Some((1 << 30) - (1 << 20)));
        // No limit anywhere: the machine's memory is the bound.
        assert_eq!(group_room(&root, "0::/elsewhere\n"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_machine_has_some_memory_available() {
        assert!(available_memory().is_some_and(|m| m > 0));
    }
}
