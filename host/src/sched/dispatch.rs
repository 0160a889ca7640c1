//! The dispatcher: the one place that decides what happens to each job of a run, whatever
//! runs it.
//!
//! It owns every job's state, id and key, and applies the rules every executor shares:
//! - a job's id follows from its upstream keys ([`Jobs::id`]); a pure or hermetic job's key
//!   is its id, an impure job's the hash of its output once committed, so an identical
//!   rebuild does not re-run what follows (the early cutoff);
//! - a job whose upstream is done and whose output the store holds is cached
//!   ([`Jobs::cached`]), unless forced; cache hits cascade without the executor;
//! - a job whose upstream failed or was skipped is skipped, whatever its executor says of
//!   it, and keeps the id it would have had (none only below a failed impure job, whose
//!   output the id depends on);
//! - after a failure no job is handed over, unless `--continue-on-failure`; a failure whose
//!   kind halts the run (grants changed, the executor refused the job) stops it in any case;
//! - Ctrl-C stops handing over jobs and tells the executor to interrupt what it runs;
//! - at most [`Admission::slots`] jobs are on the executor at once, and impure jobs, which
//!   all work in the one project directory, one at a time where the executor asks for it;
//! - with a [`Budget`], the jobs on the executor reserve no more CPUs and memory than it
//!   has, a job that does not fit now lets those behind it that do go first, and a job
//!   that could never fit fails before it starts (see [`super::admit`]);
//! - aging: once [`PASSED_OVER`] jobs have gone ahead of a job that did not fit, nothing
//!   behind it is handed over until it is, so a stream of small jobs cannot starve a big
//!   one: what runs drains, and its reservation fits.
//!
//! It emits every [`Event`] of the run and counts the [`Summary`]. An [`Executor`] only runs
//! what it is handed and reports back ([`Report`]); it decides nothing.
//!
//! Invariant: a job is handed over at most once per run, only once its id is known, and
//! (unless its executor chains jobs, see [`Admission::chain`]) only once its upstream is
//! done. A report about a job the executor does not hold is ignored.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::admit::{Budget, Ledger, Request};
use super::{Event, Failure, FailureKind, Options, Reason, ReasonKind, Summary};
use crate::graph::JobIndex;
use crate::store::Record;

/// Where events go; shared with the executors' threads.
pub type Emit = Arc<dyn Fn(Event) + Send + Sync>;

/// What the dispatcher asks of the plan and the store about jobs.
pub trait Jobs {
    fn count(&self) -> usize;
    fn stage(&self, job: JobIndex) -> &str;
    /// Upstream jobs, each once.
    fn deps(&self, job: JobIndex) -> Vec<JobIndex>;
    /// Downstream jobs of each job.
    fn dependents(&self) -> Vec<Vec<JobIndex>>;
    fn impure(&self, job: JobIndex) -> bool;
    /// The job's id, once the keys of its upstream jobs are known.
    fn id(&self, job: JobIndex, keys: &[Option<String>]) -> Option<String>;
    /// Whether the store may stand in for running the job (then the key of its output),
    /// else why it runs; asked once its upstream is done, never for a forced job.
    fn decide(&self, job: JobIndex, id: &str, ids: &[Option<String>]) -> Decision;
    /// Why the job runs, when it is handed over before its upstream is done.
    fn why(&self, job: JobIndex, id: &str) -> Reason;
    /// How many times the job runs again after a failure, as its stage says (`--retries`
    /// stands in for it when given).
    fn retries(&self, job: JobIndex) -> u32;
    /// What the job reserves of a [`Budget`] at `attempt` (from 1).
    fn request(&self, job: JobIndex, attempt: u32) -> Request;
    /// Whether the store holds the job's output at all: a chaining executor waits for the
    /// upstream of such a job rather than run it again (see [`Admission::chain`]).
    fn in_store(&self, id: &str) -> bool;
    /// The ids of the upstream jobs the job reads, by index (for a hermetic job, also
    /// those of its hermetic upstream's upstream).
    fn upstream_ids(&self, job: JobIndex, ids: &[Option<String>]) -> BTreeMap<JobIndex, String>;
    /// Decides ahead, on up to `threads` threads at once, what it can of `jobs` (selected,
    /// not forced, in order) without any other job's key; [`Jobs::id`] and [`Jobs::decide`]
    /// then answer for those from what it found, as they would have decided themselves.
    fn ahead(&self, _jobs: &[JobIndex], _threads: usize) {}
}

/// What [`Jobs::decide`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The store stands in for it, with this key.
    Cached(String),
    Run(Reason),
}

/// A job handed to an executor.
#[derive(Debug, Clone, PartialEq)]
pub struct Handoff {
    pub job: JobIndex,
    pub id: String,
    /// From 1; a retry is the next attempt.
    pub attempt: u32,
    pub upstream_ids: BTreeMap<JobIndex, String>,
}

/// What an executor tells the dispatcher about a job it holds.
#[derive(Debug)]
pub enum Report {
    Started(JobIndex),
    /// The job ran and its output waits to be committed: it no longer holds a slot.
    Sealed(JobIndex),
    /// Boxed, as a record is large beside the other reports.
    Committed(JobIndex, Box<Record>),
    Failed(JobIndex, Failure),
    /// Given back without running: the run is stopping, or the executor could not start it
    /// yet. The dispatcher decides on it again.
    NotStarted(JobIndex),
    Progress {
        job: JobIndex,
        done: u64,
        total: u64,
    },
    Warning {
        job: JobIndex,
        message: String,
    },
}

/// How many jobs an executor takes, and when.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// The most jobs it holds at once, not counting sealed ones; `None`: no bound here
    /// (the executor returns from [`Executor::start`] what it cannot take).
    pub slots: Option<usize>,
    /// Impure jobs one at a time.
    pub impure_alone: bool,
    /// Jobs may be handed over before their upstream is done, once their id is known: the
    /// executor runs them after it (SLURM's `afterok`).
    pub chain: bool,
    /// The executor retries failed jobs itself (a SLURM worker runs a dispatcher of its
    /// own): a failure it reports is the job's last.
    pub retries_itself: bool,
    /// What the jobs it holds may reserve together; `None`: no bound but the slots.
    pub budget: Option<Budget>,
}

/// Runs jobs; reports on them.
pub trait Executor {
    fn admission(&self) -> Admission;
    /// Starts what it can of `offered` (upstream before downstream); returns the rest.
    fn start(&mut self, offered: Vec<Handoff>) -> Vec<Handoff>;
    /// Waits up to `timeout` for reports; none when nothing happened.
    fn wait(&mut self, timeout: Duration) -> Vec<Report>;
    /// No job starts from now on; running ones finish.
    fn stop(&mut self);
    /// Ctrl-C: running jobs are interrupted, and every job held is reported on soon.
    fn interrupt(&mut self);
}

/// How long the dispatcher waits for reports before it looks at Ctrl-C again.
const WAIT: Duration = Duration::from_millis(100);

/// How many jobs may be handed over ahead of a job waiting for room in the budget before
/// the dispatcher holds back everything behind it. Enough for small jobs to fill in around
/// a big one several rounds over; few enough that the big one waits for a handful of
/// jobs, not for every small job the run has.
pub const PASSED_OVER: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    /// To run, not yet handed over.
    Ready,
    /// On the executor.
    Handed,
    /// Ran; its output waits to be committed.
    Sealed,
    Done,
    Failed,
    Skipped,
}

struct Dispatcher<'a> {
    jobs: &'a dyn Jobs,
    options: &'a Options,
    emit: Emit,
    selected: Vec<bool>,
    dependents: Vec<Vec<JobIndex>>,
    state: Vec<State>,
    ids: Vec<Option<String>>,
    /// What downstream jobs see of each job, as soon as it is known. A failed or skipped
    /// job that is not impure keeps its id as key, so that the jobs skipped after it have
    /// ids too.
    keys: Vec<Option<String>>,
    pending: VecDeque<JobIndex>,
    ready: VecDeque<JobIndex>,
    handed: usize,
    sealed: usize,
    impure_handed: usize,
    stopping: bool,
    stop_sent: bool,
    /// Jobs the interrupt cut off: interrupted while they ran, or below one that was.
    cut: Vec<bool>,
    /// Why each job to run runs.
    reasons: Vec<Option<Reason>>,
    /// Each job's attempt, from 1.
    attempts: Vec<u32>,
    /// See [`Admission::retries_itself`].
    retries_itself: bool,
    /// The reservations against the admission's budget, and each held job's.
    ledger: Option<Ledger>,
    reserved: Vec<Option<Request>>,
    /// How many jobs went ahead of each job while it waited for room in the budget, at
    /// this attempt.
    passed_over: Vec<u32>,
    summary: Summary,
}

/// Runs the selected jobs of `jobs` on `executor`; returns the counts.
pub fn run(jobs: &dyn Jobs, executor: &mut dyn Executor, options: &Options, emit: Emit) -> Summary {
    let n = jobs.count();
    let admission = executor.admission();
    let mut selected = vec![false; n];
    for job in selection(jobs, options.targets.as_deref()) {
        selected[job] = true;
    }
    let ahead: Vec<JobIndex> = (0..n)
        .filter(|&j| selected[j] && !options.force.covers(j, jobs.stage(j)))
        .collect();
    jobs.ahead(&ahead, options.jobs);
    let mut d = Dispatcher {
        jobs,
        options,
        emit,
        dependents: jobs.dependents(),
        state: vec![State::Waiting; n],
        ids: vec![None; n],
        keys: vec![None; n],
        pending: (0..n).filter(|j| selected[*j]).collect(),
        selected,
        ready: VecDeque::new(),
        handed: 0,
        sealed: 0,
        impure_handed: 0,
        stopping: false,
        stop_sent: false,
        cut: vec![false; n],
        reasons: vec![None; n],
        attempts: vec![1; n],
        retries_itself: admission.retries_itself,
        ledger: admission.budget.map(Ledger::new),
        reserved: vec![None; n],
        passed_over: vec![0; n],
        summary: Summary::default(),
    };
    let total = d.pending.len();
    (d.emit)(Event::Started { jobs: total });
    loop {
        d.resolve(admission);
        d.check_interrupt(executor);
        if d.stopping && !d.stop_sent {
            d.stop_sent = true;
            executor.stop();
        }
        if !d.stopping {
            d.hand_over(executor, admission);
        }
        if d.handed + d.sealed == 0 {
            break;
        }
        for report in executor.wait(WAIT) {
            d.report(report);
        }
    }
    let s = &mut d.summary;
    s.not_run = total - s.ran - s.cached - s.failed - s.skipped;
    d.summary
}

impl Dispatcher<'_> {
    fn check_interrupt(&mut self, executor: &mut dyn Executor) {
        if !self.summary.interrupted && self.options.interrupted.load(Ordering::Relaxed) {
            self.summary.interrupted = true;
            self.stopping = true;
            self.stop_sent = true;
            executor.interrupt();
        }
    }

    fn stage(&self, job: JobIndex) -> String {
        self.jobs.stage(job).to_string()
    }

    fn settled(&mut self, job: JobIndex, state: State) {
        self.state[job] = state;
        self.pending.extend(&self.dependents[job]);
    }

    /// Settles whatever became settleable: skips, cache hits (cascading), jobs to run.
    fn resolve(&mut self, admission: Admission) {
        while let Some(job) = self.pending.pop_front() {
            // A ready job is looked at again: its upstream may have failed meanwhile.
            if !matches!(self.state[job], State::Waiting | State::Ready) || !self.selected[job] {
                continue;
            }
            let deps = self.jobs.deps(job);
            if let Some(&failed) = deps
                .iter()
                .find(|d| matches!(self.state[**d], State::Failed | State::Skipped))
            {
                self.skip(job, failed);
                continue;
            }
            if self.state[job] == State::Ready || !deps.iter().all(|d| self.keys[*d].is_some()) {
                continue;
            }
            let id = self
                .jobs
                .id(job, &self.keys)
                .expect("upstream keys are known");
            let forced = self.options.force.covers(job, self.jobs.stage(job));
            // Set before deciding: the store is asked about the job by its id.
            self.ids[job] = Some(id.clone());
            let reason = if deps.iter().all(|d| self.state[*d] == State::Done) {
                if forced {
                    Reason::new(ReasonKind::Forced, "--force")
                } else {
                    match self.jobs.decide(job, &id, &self.ids) {
                        Decision::Cached(key) => {
                            self.keys[job] = Some(key);
                            self.summary.cached += 1;
                            (self.emit)(Event::JobCached {
                                job,
                                id,
                                stage: self.stage(job),
                            });
                            self.settled(job, State::Done);
                            continue;
                        }
                        Decision::Run(reason) => reason,
                    }
                }
            } else if !admission.chain || (!forced && self.jobs.in_store(&id)) {
                // Once its upstream is done: to run, or (in the store) likely a cache hit.
                continue;
            } else if forced {
                Reason::new(ReasonKind::Forced, "--force")
            } else {
                self.jobs.why(job, &id)
            };
            self.reasons[job] = Some(reason);
            if !self.jobs.impure(job) {
                self.keys[job] = Some(id.clone());
            }
            self.state[job] = State::Ready;
            self.ready.push_back(job);
            if admission.chain {
                self.pending.extend(&self.dependents[job]);
            }
        }
    }

    fn skip(&mut self, job: JobIndex, failed: JobIndex) {
        // Below a job the interrupt cut off, it was not started: not run, not skipped.
        let interrupted = self.cut[failed];
        self.cut[job] = interrupted;
        if !interrupted {
            self.summary.skipped += 1;
        }
        let id = self.jobs.id(job, &self.keys);
        if !self.jobs.impure(job) {
            self.keys[job] = id.clone();
        }
        self.ids[job] = id.clone();
        if self.holds(job) {
            self.leave(job);
        }
        (self.emit)(Event::JobSkipped {
            job,
            id,
            stage: self.stage(job),
            failed_upstream: self.stage(failed),
            interrupted,
        });
        self.settled(job, State::Skipped);
    }

    /// Offers the ready jobs, in order, within the admission's bounds.
    fn hand_over(&mut self, executor: &mut dyn Executor, admission: Admission) {
        if self.ready.is_empty() {
            return;
        }
        let mut room = admission
            .slots
            .map_or(usize::MAX, |s| s.saturating_sub(self.handed));
        let mut impure_room = !(admission.impure_alone && self.impure_handed > 0);
        let mut offered = Vec::new();
        let mut kept = VecDeque::new();
        let mut too_big = Vec::new();
        // The jobs that did not fit in this round: each job handed over after them passes
        // them over.
        let mut waiting: Vec<JobIndex> = Vec::new();
        // One of them was passed over enough: nothing more goes ahead of it.
        let mut aged = false;
        while let Some(job) = self.ready.pop_front() {
            if self.state[job] != State::Ready {
                continue;
            }
            let impure = self.jobs.impure(job);
            if room == 0 || (impure && admission.impure_alone && !impure_room) {
                kept.push_back(job);
                if room == 0 {
                    break;
                }
                continue;
            }
            if let Some(ledger) = &mut self.ledger {
                let request = ledger.clamp(self.jobs.request(job, self.attempts[job]));
                if let Some(why) = ledger.never_fits(self.jobs.stage(job), request) {
                    too_big.push((job, why));
                    continue;
                }
                if !ledger.fits(request) {
                    // Those behind it may fit: it keeps its place, they go first, unless
                    // it was passed over enough: then it goes next, once what runs drains.
                    kept.push_back(job);
                    waiting.push(job);
                    if self.passed_over[job] >= PASSED_OVER || !ledger.fits(Request::given(1, 0)) {
                        break;
                    }
                    continue;
                }
                ledger.take(request);
                self.reserved[job] = Some(request);
                self.passed_over[job] = 0;
                for &behind in &waiting {
                    self.passed_over[behind] += 1;
                    aged |= self.passed_over[behind] >= PASSED_OVER;
                }
            }
            room -= 1;
            impure_room &= !impure;
            offered.push(Handoff {
                job,
                attempt: self.attempts[job],
                id: self.ids[job].clone().expect("ready jobs have ids"),
                upstream_ids: self.jobs.upstream_ids(job, &self.ids),
            });
            if aged {
                break;
            }
        }
        kept.append(&mut self.ready);
        self.ready = kept;
        for (job, why) in too_big {
            self.fail(job, Failure::new(FailureKind::OverBudget, why));
        }
        if self.stopping {
            for handoff in offered.into_iter().rev() {
                self.unreserve(handoff.job);
                self.ready.push_front(handoff.job);
            }
            return;
        }
        if offered.is_empty() {
            return;
        }
        let taken: BTreeSet<JobIndex> = offered.iter().map(|h| h.job).collect();
        let returned = executor.start(offered);
        let back: BTreeSet<JobIndex> = returned.iter().map(|h| h.job).collect();
        for job in taken.difference(&back) {
            self.state[*job] = State::Handed;
            self.handed += 1;
            self.impure_handed += usize::from(self.jobs.impure(*job));
        }
        // Returned jobs go first next time, in their order.
        for handoff in returned.into_iter().rev() {
            self.unreserve(handoff.job);
            self.ready.push_front(handoff.job);
        }
    }

    /// The job leaves its executor slot.
    fn release(&mut self, job: JobIndex) {
        self.handed -= 1;
        self.impure_handed -= usize::from(self.jobs.impure(job));
        self.unreserve(job);
    }

    /// Gives back what the job reserved of the budget, if anything.
    fn unreserve(&mut self, job: JobIndex) {
        if let (Some(ledger), Some(request)) = (&mut self.ledger, self.reserved[job].take()) {
            ledger.give(request);
        }
    }

    fn report(&mut self, report: Report) {
        match report {
            Report::Started(job) if self.state[job] == State::Handed => {
                (self.emit)(Event::JobStarted {
                    job,
                    id: self.ids[job].clone().unwrap_or_default(),
                    stage: self.stage(job),
                    reason: self.reasons[job].clone(),
                });
            }
            Report::Sealed(job) if self.state[job] == State::Handed => {
                self.release(job);
                self.sealed += 1;
                self.state[job] = State::Sealed;
                (self.emit)(Event::JobSealed { job });
            }
            Report::NotStarted(job) if self.state[job] == State::Handed => {
                self.release(job);
                self.state[job] = State::Waiting;
                self.pending.push_back(job);
            }
            Report::Committed(job, record) if self.holds(job) => {
                self.leave(job);
                let key = if self.jobs.impure(job) {
                    record.hash.clone()
                } else {
                    self.ids[job].clone().unwrap_or_default()
                };
                self.keys[job] = Some(key);
                self.summary.ran += 1;
                (self.emit)(Event::JobFinished {
                    job,
                    id: self.ids[job].clone().unwrap_or_default(),
                    stage: self.stage(job),
                    duration: Duration::from_millis(record.duration_ms),
                    reason: self.reasons[job].clone(),
                    // A SLURM worker retries on its own: its record says which attempt.
                    attempt: record.attempt.unwrap_or(self.attempts[job]),
                });
                self.settled(job, State::Done);
            }
            Report::Failed(job, failure) if self.holds(job) => {
                let deps = self.jobs.deps(job);
                let upstream_failed = deps
                    .iter()
                    .find(|d| matches!(self.state[**d], State::Failed | State::Skipped));
                if let Some(&failed) = upstream_failed {
                    self.skip(job, failed);
                    return;
                }
                self.leave(job);
                let attempt = self.attempts[job];
                let retries = self
                    .options
                    .retries
                    .unwrap_or_else(|| self.jobs.retries(job));
                let again = !failure.kind.is_final(attempt, retries);
                if again && !self.retries_itself && !self.stopping {
                    // Again, first in line: its slot is free.
                    self.attempts[job] += 1;
                    (self.emit)(Event::JobRetried {
                        job,
                        id: self.ids[job].clone().unwrap_or_default(),
                        stage: self.stage(job),
                        attempt,
                        failure,
                    });
                    self.state[job] = State::Ready;
                    self.ready.push_front(job);
                    return;
                }
                self.fail(job, failure);
            }
            Report::Progress { job, done, total } => {
                (self.emit)(Event::Progress { job, done, total })
            }
            Report::Warning { job, message } => (self.emit)(Event::Warning {
                job,
                stage: self.stage(job),
                message,
            }),
            // About a job the executor does not hold (any more).
            _ => {}
        }
    }

    fn holds(&self, job: JobIndex) -> bool {
        matches!(self.state[job], State::Handed | State::Sealed)
    }

    /// The job is off the executor, done or failed.
    fn leave(&mut self, job: JobIndex) {
        match self.state[job] {
            State::Sealed => self.sealed -= 1,
            _ => self.release(job),
        }
    }

    fn fail(&mut self, job: JobIndex, failure: Failure) {
        // An interrupted job did not fail: it was cut off, and counts as not run.
        if failure.kind == FailureKind::Interrupted {
            self.cut[job] = true;
        } else {
            self.summary.failed += 1;
        }
        if !self.jobs.impure(job) {
            self.keys[job] = self.ids[job].clone();
        }
        self.stopping |= !self.options.continue_on_failure || failure.kind.halts_run();
        (self.emit)(Event::JobFailed {
            job,
            id: self.ids[job].clone().unwrap_or_default(),
            stage: self.stage(job),
            failure,
        });
        self.settled(job, State::Failed);
    }
}

/// The targets and everything upstream of them; every job without targets.
pub fn selection(jobs: &dyn Jobs, targets: Option<&[JobIndex]>) -> BTreeSet<JobIndex> {
    let Some(targets) = targets else {
        return (0..jobs.count()).collect();
    };
    let mut selected = BTreeSet::new();
    let mut stack: Vec<JobIndex> = targets.to_vec();
    while let Some(index) = stack.pop() {
        if selected.insert(index) {
            stack.extend(jobs.deps(index));
        }
    }
    selected
}

#[cfg(test)]
mod tests {
    //! The dispatcher against a fake graph and a fake executor: no plugin, no store.

    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::sched::Force;

    /// A job of the fake graph: its stage, its upstream jobs, whether it is impure.
    struct Job {
        stage: &'static str,
        deps: Vec<JobIndex>,
        impure: bool,
    }

    /// Jobs whose id is their stage and upstream keys; the "store" maps ids to keys.
    struct Graph {
        jobs: Vec<Job>,
        store: HashMap<String, String>,
        /// Each stage's `retries`, 0 when absent.
        retries: HashMap<&'static str, u32>,
        /// What each stage's jobs reserve; one CPU and no memory when absent.
        requests: HashMap<&'static str, Request>,
    }

    fn job(stage: &'static str, deps: &[JobIndex]) -> Job {
        Job {
            stage,
            deps: deps.to_vec(),
            impure: false,
        }
    }

    fn impure(stage: &'static str, deps: &[JobIndex]) -> Job {
        Job {
            impure: true,
            ..job(stage, deps)
        }
    }

    impl Graph {
        fn new(jobs: Vec<Job>) -> Graph {
            Graph {
                jobs,
                store: HashMap::new(),
                retries: HashMap::new(),
                requests: HashMap::new(),
            }
        }

        fn asking(mut self, stage: &'static str, cpus: u32, mem: u64) -> Graph {
            self.requests.insert(stage, Request::given(cpus, mem));
            self
        }

        /// One CPU and `mem`, the stage's memory limit: no `resources.mem` written.
        fn limited(mut self, stage: &'static str, mem: u64) -> Graph {
            let request = Request {
                mem_given: false,
                ..Request::given(1, mem)
            };
            self.requests.insert(stage, request);
            self
        }

        fn retrying(mut self, stage: &'static str, retries: u32) -> Graph {
            self.retries.insert(stage, retries);
            self
        }

        /// Puts job `j` in the store as it would be with `keys` upstream, its key `key`.
        fn stored(mut self, j: JobIndex, keys: &[Option<String>], key: &str) -> Graph {
            let id = self.id(j, keys).unwrap();
            self.store.insert(id, key.into());
            self
        }
    }

    impl Jobs for Graph {
        fn count(&self) -> usize {
            self.jobs.len()
        }
        fn stage(&self, job: JobIndex) -> &str {
            self.jobs[job].stage
        }
        fn deps(&self, job: JobIndex) -> Vec<JobIndex> {
            self.jobs[job].deps.clone()
        }
        fn dependents(&self) -> Vec<Vec<JobIndex>> {
            let mut dependents = vec![Vec::new(); self.jobs.len()];
            for (j, job) in self.jobs.iter().enumerate() {
                for d in &job.deps {
                    dependents[*d].push(j);
                }
            }
            dependents
        }
        fn impure(&self, job: JobIndex) -> bool {
            self.jobs[job].impure
        }
        fn id(&self, job: JobIndex, keys: &[Option<String>]) -> Option<String> {
            let ups: Option<Vec<&str>> = self.jobs[job]
                .deps
                .iter()
                .map(|d| keys[*d].as_deref())
                .collect();
            Some(format!("{}({})", self.jobs[job].stage, ups?.join(",")))
        }
        fn decide(&self, _job: JobIndex, id: &str, _ids: &[Option<String>]) -> Decision {
            match self.store.get(id) {
                Some(key) => Decision::Cached(key.clone()),
                None => Decision::Run(self.why(0, id)),
            }
        }
        fn why(&self, _job: JobIndex, _id: &str) -> Reason {
            Reason::new(ReasonKind::NeverRun, "not in the fake store")
        }
        fn retries(&self, job: JobIndex) -> u32 {
            self.retries.get(self.jobs[job].stage).copied().unwrap_or(0)
        }
        fn request(&self, job: JobIndex, _attempt: u32) -> Request {
            let default = Request::given(1, 0);
            *self.requests.get(self.jobs[job].stage).unwrap_or(&default)
        }
        fn in_store(&self, id: &str) -> bool {
            self.store.contains_key(id)
        }
        fn upstream_ids(
            &self,
            job: JobIndex,
            ids: &[Option<String>],
        ) -> BTreeMap<JobIndex, String> {
            self.jobs[job]
                .deps
                .iter()
                .map(|d| (*d, ids[*d].clone().unwrap_or_default()))
                .collect()
        }
    }

    /// What the fake executor does with a job of a stage.
    #[derive(Clone)]
    enum Outcome {
        /// Commits, with this output hash.
        Commit(&'static str),
        Fail(FailureKind),
        /// Fails its first attempt, then commits.
        FailOnce(FailureKind),
    }

    /// Runs every job it holds in one step per `wait` (or as many more as its stage
    /// lasts): started, sealed, then committed or failed. Records what it was handed and
    /// how many it held at once.
    struct Fake {
        admission: Admission,
        outcomes: HashMap<&'static str, Outcome>,
        /// Waits a job of the stage runs for beyond the first; 0 when absent.
        lasting: HashMap<&'static str, usize>,
        /// Waits left of each started attempt.
        left: HashMap<(JobIndex, u32), usize>,
        stages: Vec<&'static str>,
        held: Vec<Handoff>,
        /// Sealed, committed at the next wait.
        sealed: Vec<Handoff>,
        handed: Vec<Handoff>,
        most_held: usize,
        most_impure: usize,
        /// The jobs it held after each start: those running at the same time.
        together: Vec<Vec<JobIndex>>,
        impure: Vec<bool>,
        deps: Vec<Vec<JobIndex>>,
        /// Committed and failed jobs: a chained job runs after its upstream committed and
        /// is given back when it failed (SLURM's `afterok`).
        committed: Vec<JobIndex>,
        failed: Vec<JobIndex>,
        /// Set during the wait that seals this job: Ctrl-C mid-commit.
        interrupt_at: Option<(JobIndex, Arc<AtomicBool>)>,
        stopped: bool,
        interrupted: bool,
        waits: usize,
    }

    impl Fake {
        fn new(graph: &Graph, admission: Admission) -> Fake {
            Fake {
                admission,
                outcomes: HashMap::new(),
                lasting: HashMap::new(),
                left: HashMap::new(),
                stages: graph.jobs.iter().map(|j| j.stage).collect(),
                held: Vec::new(),
                sealed: Vec::new(),
                handed: Vec::new(),
                most_held: 0,
                most_impure: 0,
                together: Vec::new(),
                impure: graph.jobs.iter().map(|j| j.impure).collect(),
                deps: graph.jobs.iter().map(|j| j.deps.clone()).collect(),
                committed: Vec::new(),
                failed: Vec::new(),
                interrupt_at: None,
                stopped: false,
                interrupted: false,
                waits: 0,
            }
        }

        fn outcome(mut self, stage: &'static str, outcome: Outcome) -> Fake {
            self.outcomes.insert(stage, outcome);
            self
        }

        fn lasting(mut self, stage: &'static str, waits: usize) -> Fake {
            self.lasting.insert(stage, waits);
            self
        }
    }

    impl Executor for Fake {
        fn admission(&self) -> Admission {
            self.admission
        }
        fn start(&mut self, offered: Vec<Handoff>) -> Vec<Handoff> {
            self.handed.extend(offered.iter().cloned());
            self.held.extend(offered);
            self.most_held = self.most_held.max(self.held.len());
            // Sealed jobs ran: they hold nothing.
            self.together
                .push(self.held.iter().map(|h| h.job).collect());
            let impure = self.held.iter().filter(|h| self.impure[h.job]).count();
            self.most_impure = self.most_impure.max(impure);
            Vec::new()
        }
        fn wait(&mut self, _timeout: Duration) -> Vec<Report> {
            self.waits += 1;
            assert!(self.waits < 1000, "the run does not end");
            let mut reports = Vec::new();
            for h in std::mem::take(&mut self.sealed) {
                let hash = match self.outcomes.get(self.stages[h.job]) {
                    Some(Outcome::Commit(hash)) => hash,
                    _ => "",
                };
                let mut record = Record::for_test(&h.id);
                record.hash = hash.to_string();
                self.committed.push(h.job);
                reports.push(Report::Committed(h.job, Box::new(record)));
            }
            let held = std::mem::take(&mut self.held);
            let waiting: Vec<JobIndex> = held.iter().map(|h| h.job).collect();
            for h in held {
                let deps = &self.deps[h.job];
                // Its upstream failed or will never run: SLURM cancels it.
                let never = |d: &JobIndex| {
                    let ours = self.handed.iter().any(|h| h.job == *d);
                    self.failed.contains(d)
                        || (ours && !(self.committed.contains(d) || waiting.contains(d)))
                };
                if self.interrupted || self.stopped || deps.iter().any(never) {
                    reports.push(Report::NotStarted(h.job));
                    continue;
                }
                // Cache hits never come here: they are done.
                let done = |d: &JobIndex| {
                    self.committed.contains(d) || !self.handed.iter().any(|h| h.job == *d)
                };
                if !deps.iter().all(done) {
                    self.held.push(h);
                    continue;
                }
                let lasting = self.lasting.get(self.stages[h.job]).copied();
                let left = self.left.entry((h.job, h.attempt)).or_insert_with(|| {
                    reports.push(Report::Started(h.job));
                    lasting.unwrap_or(0)
                });
                if *left > 0 {
                    *left -= 1;
                    self.held.push(h);
                    continue;
                }
                match self.outcomes.get(self.stages[h.job]) {
                    Some(Outcome::FailOnce(kind)) if h.attempt == 1 => {
                        reports.push(Report::Failed(h.job, Failure::new(*kind, "once")))
                    }
                    Some(Outcome::Fail(kind)) => {
                        if let Some((job, flag)) = &self.interrupt_at
                            && *job == h.job
                        {
                            flag.store(true, Ordering::Relaxed);
                        }
                        self.failed.push(h.job);
                        reports.push(Report::Failed(h.job, Failure::new(*kind, "boom")))
                    }
                    _ => {
                        if let Some((job, flag)) = &self.interrupt_at
                            && *job == h.job
                        {
                            flag.store(true, Ordering::Relaxed);
                        }
                        reports.push(Report::Sealed(h.job));
                        self.sealed.push(h);
                    }
                }
            }
            reports
        }
        fn stop(&mut self) {
            self.stopped = true;
        }
        fn interrupt(&mut self) {
            self.interrupted = true;
        }
    }

    const LOCAL: Admission = Admission {
        slots: Some(2),
        impure_alone: true,
        chain: false,
        retries_itself: false,
        budget: None,
    };
    const CHAINED: Admission = Admission {
        slots: None,
        impure_alone: false,
        chain: true,
        retries_itself: false,
        budget: None,
    };

    fn options() -> Options {
        Options {
            jobs: 2,
            continue_on_failure: false,
            retries: None,
            mem: None,
            force: Force::None,
            targets: None,
            interrupted: Arc::new(AtomicBool::new(false)),
            nix: None,
            guard: None,
        }
    }

    /// Runs and returns the summary and the events, as `(kind, stage, id)`.
    fn run_fake(
        graph: &Graph,
        fake: &mut Fake,
        options: &Options,
    ) -> (Summary, Vec<(String, String, Option<String>)>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let emit: Emit = {
            let events = events.clone();
            Arc::new(move |event| {
                let line = match event {
                    Event::JobCached { stage, id, .. } => ("cached", stage, Some(id)),
                    Event::JobFinished { stage, id, .. } => ("ran", stage, Some(id)),
                    Event::JobFailed {
                        stage, id, failure, ..
                    } => match failure.kind {
                        FailureKind::Interrupted => ("interrupted", stage, Some(id)),
                        _ => ("failed", stage, Some(id)),
                    },
                    Event::JobSkipped {
                        stage,
                        id,
                        interrupted,
                        ..
                    } => match interrupted {
                        true => ("not started", stage, id),
                        false => ("skipped", stage, id),
                    },
                    Event::JobStarted { stage, id, .. } => ("started", stage, Some(id)),
                    Event::JobRetried { stage, id, .. } => ("retried", stage, Some(id)),
                    _ => return,
                };
                events
                    .lock()
                    .unwrap()
                    .push((line.0.to_string(), line.1, line.2));
            })
        };
        let summary = run(graph, fake, options, emit);
        let events = events.lock().unwrap().clone();
        (summary, events)
    }

    fn outcome_of<'a>(events: &'a [(String, String, Option<String>)], stage: &str) -> Vec<&'a str> {
        events
            .iter()
            .filter(|(kind, s, _)| s == stage && kind != "started")
            .map(|(kind, _, _)| kind.as_str())
            .collect()
    }

    fn id_of(events: &[(String, String, Option<String>)], stage: &str) -> Option<String> {
        events
            .iter()
            .find(|(kind, s, _)| s == stage && kind != "started")
            .and_then(|(_, _, id)| id.clone())
    }

    /// a → b → c, and d alone.
    fn chain_and_one() -> Graph {
        Graph::new(vec![
            job("a", &[]),
            job("b", &[0]),
            job("c", &[1]),
            job("d", &[]),
        ])
    }

    #[test]
    fn a_failure_skips_downstream_with_ids_and_stops_the_run_under_both_executors() {
        for admission in [LOCAL, CHAINED] {
            let graph = chain_and_one();
            let mut fake =
                Fake::new(&graph, admission).outcome("a", Outcome::Fail(FailureKind::ExitStatus));
            // d goes out with a; nothing starts after the failure.
            let mut options = options();
            options.jobs = 1;
            let (summary, events) = run_fake(&graph, &mut fake, &options);
            assert_eq!(outcome_of(&events, "a"), ["failed"]);
            assert_eq!(outcome_of(&events, "b"), ["skipped"]);
            assert_eq!(outcome_of(&events, "c"), ["skipped"]);
            // A skipped job has the id it would have had, whichever executor ran the run.
            assert_eq!(id_of(&events, "b").as_deref(), Some("b(a())"));
            assert_eq!(id_of(&events, "c").as_deref(), Some("c(b(a()))"));
            assert_eq!(summary.failed, 1);
            assert_eq!(summary.skipped, 2);
            assert_eq!(summary.ran + summary.not_run, 1, "{summary:?}");
        }
    }

    #[test]
    fn with_continue_on_failure_the_rest_runs_under_both_executors() {
        for admission in [LOCAL, CHAINED] {
            let graph = chain_and_one();
            let mut fake =
                Fake::new(&graph, admission).outcome("b", Outcome::Fail(FailureKind::ExitStatus));
            let mut options = options();
            options.continue_on_failure = true;
            let (summary, events) = run_fake(&graph, &mut fake, &options);
            assert_eq!(outcome_of(&events, "a"), ["ran"]);
            assert_eq!(outcome_of(&events, "b"), ["failed"]);
            assert_eq!(outcome_of(&events, "c"), ["skipped"]);
            assert_eq!(outcome_of(&events, "d"), ["ran"]);
            assert_eq!(
                (
                    summary.ran,
                    summary.failed,
                    summary.skipped,
                    summary.not_run
                ),
                (2, 1, 1, 0)
            );
        }
    }

    #[test]
    fn a_failure_that_halts_stops_even_with_continue_on_failure() {
        let graph = Graph::new(vec![job("a", &[]), job("b", &[])]);
        let mut fake =
            Fake::new(&graph, LOCAL).outcome("a", Outcome::Fail(FailureKind::GrantsChanged));
        let mut options = options();
        options.continue_on_failure = true;
        options.jobs = 1;
        // One slot: b waits for a, and a's failure stops the run.
        fake.admission.slots = Some(1);
        let (summary, events) = run_fake(&graph, &mut fake, &options);
        assert_eq!(outcome_of(&events, "b"), Vec::<&str>::new());
        assert_eq!((summary.failed, summary.not_run), (1, 1));
    }

    #[test]
    fn below_a_failed_impure_job_a_skipped_job_has_no_id_under_both_executors() {
        for admission in [LOCAL, CHAINED] {
            let graph = Graph::new(vec![impure("build", &[]), job("test", &[0])]);
            let mut fake = Fake::new(&graph, admission)
                .outcome("build", Outcome::Fail(FailureKind::ExitStatus));
            let (_, events) = run_fake(&graph, &mut fake, &options());
            assert_eq!(outcome_of(&events, "test"), ["skipped"]);
            assert_eq!(id_of(&events, "test"), None);
        }
    }

    #[test]
    fn cache_hits_cascade_and_the_first_miss_runs_what_follows() {
        for admission in [LOCAL, CHAINED] {
            let k = |s: &str| Some(s.to_string());
            // a and b are in the store; c is not, so c and d run.
            let graph = Graph::new(vec![
                job("a", &[]),
                job("b", &[0]),
                job("c", &[1]),
                job("d", &[2]),
            ])
            .stored(0, &[], "a()")
            .stored(1, &[k("a()")], "b(a())");
            let mut fake = Fake::new(&graph, admission);
            let (summary, events) = run_fake(&graph, &mut fake, &options());
            assert_eq!(outcome_of(&events, "a"), ["cached"]);
            assert_eq!(outcome_of(&events, "b"), ["cached"]);
            assert_eq!(outcome_of(&events, "c"), ["ran"]);
            assert_eq!(outcome_of(&events, "d"), ["ran"]);
            assert_eq!((summary.cached, summary.ran), (2, 2));
            // Cache hits never reach the executor.
            let handed: Vec<&str> = fake
                .handed
                .iter()
                .map(|h| graph.jobs[h.job].stage)
                .collect();
            assert_eq!(handed, ["c", "d"]);
        }
    }

    #[test]
    fn an_impure_rebuild_with_the_same_output_keeps_downstream_cached() {
        let stored = |hash: &'static str| {
            let graph = Graph::new(vec![impure("build", &[]), job("test", &[0])]).stored(
                1,
                &[Some("h1".into())],
                "test(h1)",
            );
            let mut fake = Fake::new(&graph, LOCAL).outcome("build", Outcome::Commit(hash));
            run_fake(&graph, &mut fake, &options()).1
        };
        // The build is not in the store: it runs; its output decides the test's id.
        let same = stored("h1");
        assert_eq!(outcome_of(&same, "build"), ["ran"]);
        assert_eq!(outcome_of(&same, "test"), ["cached"]);
        let changed = stored("h2");
        assert_eq!(outcome_of(&changed, "test"), ["ran"]);
        assert_eq!(id_of(&changed, "test").as_deref(), Some("test(h2)"));
    }

    #[test]
    fn forced_jobs_run_though_in_the_store() {
        let graph = Graph::new(vec![job("a", &[]), job("b", &[0])])
            .stored(0, &[], "a()")
            .stored(1, &[Some("a()".into())], "b(a())");
        let mut fake = Fake::new(&graph, LOCAL);
        let mut options = options();
        options.force = Force::Stage("b".into());
        let (_, events) = run_fake(&graph, &mut fake, &options);
        assert_eq!(outcome_of(&events, "a"), ["cached"]);
        assert_eq!(outcome_of(&events, "b"), ["ran"]);
    }

    #[test]
    fn admission_bounds_jobs_held_and_impure_jobs_run_alone() {
        let mut jobs: Vec<Job> = (0..6).map(|_| job("p", &[])).collect();
        jobs.extend((0..3).map(|_| impure("i", &[])));
        let graph = Graph::new(jobs);
        let mut fake = Fake::new(&graph, LOCAL);
        let (summary, _) = run_fake(&graph, &mut fake, &options());
        assert_eq!(summary.ran, 9);
        assert_eq!(fake.most_held, 2);
        assert_eq!(fake.most_impure, 1);
    }

    #[test]
    fn a_chaining_executor_gets_jobs_before_their_upstream_is_done() {
        let graph = Graph::new(vec![job("a", &[]), job("b", &[0]), job("c", &[1])]);
        let mut fake = Fake::new(&graph, CHAINED);
        let (summary, _) = run_fake(&graph, &mut fake, &options());
        assert_eq!(summary.ran, 3);
        // All three in the first hand-over.
        assert_eq!(fake.most_held, 3);
    }

    #[test]
    fn a_chaining_executor_waits_for_the_upstream_of_a_job_in_the_store() {
        // b is in the store for a's id: once a is done, b is a cache hit, not a run.
        let graph = Graph::new(vec![job("a", &[]), job("b", &[0])]).stored(
            1,
            &[Some("a()".into())],
            "b(a())",
        );
        let mut fake = Fake::new(&graph, CHAINED);
        let (_, events) = run_fake(&graph, &mut fake, &options());
        assert_eq!(outcome_of(&events, "a"), ["ran"]);
        assert_eq!(outcome_of(&events, "b"), ["cached"]);
    }

    #[test]
    fn an_interrupt_mid_commit_keeps_the_committed_job_and_starts_nothing_more() {
        for admission in [LOCAL, CHAINED] {
            // a is sealed when Ctrl-C comes; it still commits. b and c never start.
            let graph = Graph::new(vec![job("a", &[]), job("b", &[0]), job("c", &[1])]);
            let options = options();
            let mut fake = Fake::new(&graph, admission);
            fake.admission.slots = Some(1);
            fake.interrupt_at = Some((0, options.interrupted.clone()));
            let (summary, events) = run_fake(&graph, &mut fake, &options);
            assert!(fake.interrupted);
            assert!(summary.interrupted);
            assert_eq!(outcome_of(&events, "a"), ["ran"]);
            assert_eq!(outcome_of(&events, "b"), Vec::<&str>::new());
            assert_eq!((summary.ran, summary.not_run), (1, 2), "{summary:?}");
        }
    }

    #[test]
    fn a_job_the_interrupt_cuts_off_is_interrupted_and_its_dependents_not_started() {
        for admission in [LOCAL, CHAINED] {
            // a runs when Ctrl-C comes and is cut off: not a failure, and what follows it
            // is not started, not skipped.
            let graph = chain_and_one();
            let options = options();
            let mut fake =
                Fake::new(&graph, admission).outcome("a", Outcome::Fail(FailureKind::Interrupted));
            fake.interrupt_at = Some((0, options.interrupted.clone()));
            let (summary, events) = run_fake(&graph, &mut fake, &options);
            assert!(fake.interrupted && summary.interrupted);
            assert_eq!(outcome_of(&events, "a"), ["interrupted"]);
            assert_eq!(outcome_of(&events, "b"), ["not started"]);
            assert_eq!(outcome_of(&events, "c"), ["not started"]);
            // A skipped job still has the id it would have had.
            assert_eq!(id_of(&events, "c").as_deref(), Some("c(b(a()))"));
            assert_eq!((summary.failed, summary.skipped), (0, 0), "{summary:?}");
            assert_eq!(summary.ran + summary.not_run, 4, "{summary:?}");
        }
    }

    #[test]
    fn reports_about_jobs_not_held_are_ignored() {
        let graph = Graph::new(vec![job("a", &[])]);
        let mut fake = Fake::new(&graph, LOCAL);
        let options = options();
        let emit: Emit = Arc::new(|_| {});
        let mut d = Dispatcher {
            jobs: &graph,
            options: &options,
            emit,
            selected: vec![true],
            dependents: graph.dependents(),
            state: vec![State::Waiting],
            ids: vec![None],
            keys: vec![None],
            pending: VecDeque::new(),
            ready: VecDeque::new(),
            handed: 0,
            sealed: 0,
            impure_handed: 0,
            stopping: false,
            stop_sent: false,
            cut: vec![false],
            reasons: vec![None],
            attempts: vec![1],
            retries_itself: false,
            ledger: None,
            reserved: vec![None],
            passed_over: vec![0],
            summary: Summary::default(),
        };
        d.report(Report::Failed(0, Failure::other("late")));
        d.report(Report::Committed(0, Box::new(Record::for_test("x"))));
        assert_eq!(d.summary, Summary::default());
        let _ = fake.wait(WAIT);
    }

    #[test]
    fn a_failed_attempt_runs_again_within_retries_and_stops_nothing() {
        for admission in [LOCAL, CHAINED] {
            let graph = Graph::new(vec![job("a", &[]), job("b", &[0]), job("c", &[])]);
            let outcome = Outcome::FailOnce(FailureKind::Limit(crate::sched::Limit::Memory));
            let mut options = options();
            options.retries = Some(1);
            let mut fake = Fake::new(&graph, admission).outcome("a", outcome.clone());
            let (summary, events) = run_fake(&graph, &mut fake, &options);
            assert_eq!(outcome_of(&events, "a"), ["retried", "ran"]);
            assert_eq!(outcome_of(&events, "b"), ["ran"]);
            assert_eq!((summary.ran, summary.failed, summary.not_run), (3, 0, 0));
            let attempts: Vec<u32> = fake
                .handed
                .iter()
                .filter(|h| h.job == 0)
                .map(|h| h.attempt)
                .collect();
            assert_eq!(attempts, [1, 2]);

            // Without retries it fails, and stops the run.
            let mut fake = Fake::new(&graph, admission).outcome("a", outcome);
            let (summary, _) = run_fake(&graph, &mut fake, &self::options());
            assert_eq!(summary.failed, 1);
        }
        // A refusal or an interrupt is not retried.
        for kind in [
            FailureKind::ToolRefused,
            FailureKind::GrantsChanged,
            FailureKind::Store,
        ] {
            let graph = Graph::new(vec![job("a", &[])]);
            let mut options = options();
            options.retries = Some(3);
            let mut fake = Fake::new(&graph, LOCAL).outcome("a", Outcome::FailOnce(kind));
            let (summary, events) = run_fake(&graph, &mut fake, &options);
            assert_eq!(outcome_of(&events, "a"), ["failed"], "{kind:?}");
            assert_eq!(summary.failed, 1);
        }
    }

    #[test]
    fn a_stage_retries_as_it_says_unless_the_command_line_says_otherwise() {
        let graph = Graph::new(vec![job("a", &[]), job("b", &[])])
            .retrying("a", 2)
            .retrying("b", 2);
        let kind = FailureKind::ExitStatus;
        let mut fake = Fake::new(&graph, LOCAL)
            .outcome("a", Outcome::FailOnce(kind))
            .outcome("b", Outcome::Fail(kind));
        let mut options = options();
        options.continue_on_failure = true;
        let (summary, events) = run_fake(&graph, &mut fake, &options);
        assert_eq!(outcome_of(&events, "a"), ["retried", "ran"]);
        // Its two retries, then it fails.
        assert_eq!(outcome_of(&events, "b"), ["retried", "retried", "failed"]);
        assert_eq!((summary.ran, summary.failed), (1, 1));

        // `--retries 0` stands in for every stage's.
        options.retries = Some(0);
        let mut fake = Fake::new(&graph, LOCAL).outcome("a", Outcome::FailOnce(kind));
        let (_, events) = run_fake(&graph, &mut fake, &options);
        assert_eq!(outcome_of(&events, "a"), ["failed"]);
    }

    #[test]
    fn an_executor_that_retries_itself_reports_the_last_failure() {
        let graph = Graph::new(vec![job("a", &[])]).retrying("a", 3);
        let admission = Admission {
            retries_itself: true,
            ..CHAINED
        };
        let mut fake =
            Fake::new(&graph, admission).outcome("a", Outcome::FailOnce(FailureKind::Trap));
        let (summary, events) = run_fake(&graph, &mut fake, &options());
        assert_eq!(outcome_of(&events, "a"), ["failed"]);
        assert_eq!((fake.handed.len(), summary.failed), (1, 1));
    }

    #[test]
    fn within_a_budget_small_jobs_fill_in_around_a_big_one_and_a_too_big_one_fails() {
        const M: u64 = 1 << 20;
        // Two big jobs, three small ones, one that could never fit.
        let graph = Graph::new(vec![
            job("big", &[]),
            job("big", &[]),
            job("small", &[]),
            job("small", &[]),
            job("small", &[]),
            job("huge", &[]),
        ])
        .asking("big", 1, 70 * M)
        .asking("small", 1, 20 * M)
        .asking("huge", 1, 200 * M);
        let admission = Admission {
            slots: Some(8),
            budget: Some(Budget {
                cpus: 4,
                mem: 100 * M,
                mem_given: true,
            }),
            ..LOCAL
        };
        let mut fake = Fake::new(&graph, admission);
        let mut options = options();
        options.continue_on_failure = true;
        let (summary, events) = run_fake(&graph, &mut fake, &options);
        assert_eq!((summary.ran, summary.failed), (5, 1));
        assert_eq!(outcome_of(&events, "huge"), ["failed"]);
        assert!(fake.handed.iter().all(|h| h.job != 5), "it never started");
        let stage = |j: &JobIndex| graph.jobs[*j].stage;
        for together in &fake.together {
            let mem: u64 = together.iter().map(|j| graph.requests[stage(j)].mem).sum();
            assert!(mem <= 100 * M, "{together:?} over the budget");
        }
        // The second big job waited; a small one did not wait behind it.
        assert!(
            fake.together[0].contains(&0) && fake.together[0].contains(&2),
            "{:?}",
            fake.together
        );

        // Without --continue-on-failure, the too big job stops the run like any failure.
        let mut fake = Fake::new(&graph, admission);
        let (summary, _) = run_fake(&graph, &mut fake, &self::options());
        assert_eq!(summary.failed, 1);
    }

    #[test]
    fn a_big_job_passed_over_long_enough_goes_next_so_small_ones_cannot_starve_it() {
        const M: u64 = 1 << 20;
        // Behind two small jobs, a big one; then a stream of small ones that last one
        // wait or two, so that some always hold memory and the big one never fits beside
        // them.
        let mut jobs = vec![job("short", &[]), job("long", &[]), job("big", &[])];
        for _ in 0..30 {
            jobs.push(job("short", &[]));
            jobs.push(job("long", &[]));
        }
        let graph = Graph::new(jobs)
            .asking("big", 1, 90 * M)
            .asking("short", 1, 20 * M)
            .asking("long", 1, 20 * M);
        let admission = Admission {
            slots: Some(8),
            budget: Some(Budget {
                cpus: 4,
                mem: 100 * M,
                mem_given: true,
            }),
            ..LOCAL
        };
        let mut fake = Fake::new(&graph, admission).lasting("long", 1);
        let (summary, _) = run_fake(&graph, &mut fake, &options());
        assert_eq!(summary.ran, 63);
        let big = fake.handed.iter().position(|h| h.job == 2).unwrap();
        // Small jobs filled in around it, but only so many went ahead of it.
        assert!(big > 2, "none filled in: {big}");
        assert!(
            big <= 2 + PASSED_OVER as usize,
            "{big} jobs went ahead of the big one"
        );
        let stage = |j: &JobIndex| graph.jobs[*j].stage;
        for together in &fake.together {
            let mem: u64 = together.iter().map(|j| graph.requests[stage(j)].mem).sum();
            assert!(mem <= 100 * M, "{together:?} over the budget");
        }
    }

    #[test]
    fn a_memory_limit_over_the_available_memory_runs_alone_and_a_written_size_fails() {
        const M: u64 = 1 << 20;
        // Without --mem: 100M available. Two jobs whose limits are 300M, one that asks
        // for 200M in `resources.mem`, one small one.
        let graph = Graph::new(vec![
            job("limit", &[]),
            job("limit", &[]),
            job("written", &[]),
            job("small", &[]),
        ])
        .limited("limit", 300 * M)
        .asking("written", 1, 200 * M)
        .asking("small", 1, 10 * M);
        let admission = Admission {
            slots: Some(8),
            budget: Some(Budget {
                cpus: 4,
                mem: 100 * M,
                mem_given: false,
            }),
            ..LOCAL
        };
        let mut fake = Fake::new(&graph, admission);
        let mut options = options();
        options.continue_on_failure = true;
        let (summary, events) = run_fake(&graph, &mut fake, &options);
        assert_eq!((summary.ran, summary.failed), (3, 1));
        assert_eq!(outcome_of(&events, "limit"), ["ran", "ran"]);
        assert_eq!(outcome_of(&events, "written"), ["failed"]);
        for together in &fake.together {
            assert!(
                !(together.contains(&0) || together.contains(&1)) || together.len() == 1,
                "a job reserving all the memory ran beside another: {together:?}"
            );
        }

        // With --mem 100M, the user's bound holds: the limits over it fail too.
        let admission = Admission {
            budget: admission.budget.map(|b| Budget {
                mem_given: true,
                ..b
            }),
            ..admission
        };
        let mut fake = Fake::new(&graph, admission);
        let (summary, events) = run_fake(&graph, &mut fake, &options);
        assert_eq!((summary.ran, summary.failed), (1, 3));
        assert_eq!(outcome_of(&events, "limit"), ["failed", "failed"]);
    }

    #[test]
    fn a_job_asking_for_more_cpus_than_the_budget_runs_alone() {
        let graph =
            Graph::new(vec![job("wide", &[]), job("a", &[]), job("b", &[])]).asking("wide", 8, 0);
        let admission = Admission {
            budget: Some(Budget {
                cpus: 2,
                mem: 1,
                mem_given: true,
            }),
            ..LOCAL
        };
        let mut fake = Fake::new(&graph, admission);
        let (summary, _) = run_fake(&graph, &mut fake, &options());
        assert_eq!(summary.ran, 3);
        for together in &fake.together {
            assert!(
                !together.contains(&0) || together.len() == 1,
                "{together:?}"
            );
        }
        assert!(
            fake.together.iter().any(|t| t.len() == 2),
            "{:?}",
            fake.together
        );
    }

    #[test]
    fn targets_select_their_upstream_only() {
        let graph = chain_and_one();
        let mut fake = Fake::new(&graph, LOCAL);
        let mut options = options();
        options.targets = Some(vec![1]);
        let (summary, events) = run_fake(&graph, &mut fake, &options);
        assert_eq!(summary.ran, 2);
        assert_eq!(outcome_of(&events, "c"), Vec::<&str>::new());
    }
}
