//! Packing jobs into batches: which jobs share one allocation.
//!
//! Each round the coordinator hands over the jobs it may submit now, upstream first: each
//! with its resource shape, its time hint, the allocations already in flight it must wait
//! for (`after`, chained with `afterok`), and its upstream jobs that are candidates too.
//! A job whose upstream candidates can all share its batch rides along (the worker runs
//! them in order); otherwise it waits for a later round, when its upstream is in flight
//! and it can be chained. Jobs of one shape and one `after` set are then cut into batches
//! of even size, at most `batch_size` jobs and `batch_time` of estimated time each.
//!
//! A batch runs as many jobs at once as its shape fits in `batch_cpus` and on the
//! partition's largest node ([`at_once`]), or one at a time when it holds an impure job:
//! the worker runs impure jobs one after another, as they share the project directory, so
//! more threads would be CPUs it cannot use and a time estimate too short. Its time is estimated from the jobs' hints
//! by the bound on greedy scheduling: the worker starts a job whenever a thread is free
//! and the job's upstream is done, so, with every job within its hint, the batch never
//! takes longer than its longest chain plus the rest of its work shared among the threads
//! ([`estimate`]). The summed
//! time divided by the threads alone would be too short: three 10-minute jobs on two
//! threads take 20 minutes, not 15, and an allocation that asks for too little is killed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::command::Node;
use crate::graph::JobIndex;

/// What an allocation is asked for, besides time: batches of one shape share allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shape {
    pub cpus: u32,
    /// Memory in bytes; `None`: the partition's default.
    pub mem: Option<u64>,
}

/// A coordinator's number for an allocation (a job, or one task of an array).
pub type Alloc = usize;

#[derive(Debug, Clone)]
pub struct Candidate {
    pub index: JobIndex,
    pub shape: Shape,
    pub time: Option<Duration>,
    /// Whether the job runs impure: then its batch runs one job at a time.
    pub impure: bool,
    /// In-flight allocations holding its upstream jobs.
    pub after: BTreeSet<Alloc>,
    /// Upstream jobs that are candidates of this round.
    pub upstream: Vec<JobIndex>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    pub batch_size: usize,
    pub batch_time: Duration,
    /// The most CPUs one allocation asks for, unless one job needs more.
    pub batch_cpus: u32,
    /// The partition's nodes; none when unknown.
    pub nodes: &'a [Node],
    /// The most allocations one batch may wait for.
    pub max_after: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// Upstream before downstream.
    pub jobs: Vec<JobIndex>,
    pub shape: Shape,
    /// Jobs the worker runs at once; the allocation asks for that many times the shape.
    pub parallel: usize,
    /// How long the batch can take on `parallel` threads, when every job has a time hint.
    pub time: Option<Duration>,
    pub after: BTreeSet<Alloc>,
}

/// The time hints of a set of jobs, when every job has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hints {
    /// Their sum.
    work: Duration,
    /// The longest chain of jobs each reading the one before.
    path: Duration,
}

impl Hints {
    /// Both sets in one batch, neither waiting for the other.
    fn beside(self, other: Hints) -> Hints {
        Hints {
            work: self.work + other.work,
            path: self.path.max(other.path),
        }
    }
}

/// Jobs that must share a batch: a root job and what rides along with it.
#[derive(Debug)]
struct Chunk {
    jobs: Vec<JobIndex>,
    shape: Shape,
    hints: Option<Hints>,
    /// Whether one of its jobs is impure.
    impure: bool,
    after: BTreeSet<Alloc>,
}

impl Chunk {
    /// The most of its jobs that run at once.
    fn threads(&self, limits: &Limits) -> usize {
        if self.impure {
            1
        } else {
            at_once(self.shape, limits)
        }
    }
}

/// The most jobs of `shape` one allocation runs at once: as many as fit in `batch_cpus`
/// and, in CPUs and memory, on the largest node; at least one.
pub fn at_once(shape: Shape, limits: &Limits) -> usize {
    let cpus = shape.cpus.max(1);
    let wanted = limits.batch_cpus / cpus;
    let on_node = |node: &Node| {
        let by_mem = shape
            .mem
            .filter(|m| *m > 0)
            .map_or(u64::MAX, |m| node.mem / m);
        u64::from(node.cpus / cpus).min(by_mem)
    };
    let fits = limits.nodes.iter().map(on_node).max().unwrap_or(u64::MAX);
    u64::from(wanted).min(fits).max(1) as usize
}

/// How long `jobs` jobs with `hints` take on `at_once` threads, at most.
fn estimate(hints: Option<Hints>, jobs: usize, at_once: usize) -> Option<Duration> {
    let Hints { work, path } = hints?;
    let threads = at_once.min(jobs).max(1) as u32;
    if threads as usize >= jobs {
        // A thread for every job: each starts as soon as its upstream is done.
        return Some(path);
    }
    Some(work.saturating_sub(path) / threads + path)
}

/// Packs `candidates` (upstream first) into batches; jobs left out wait for a later round.
pub fn pack(candidates: &[Candidate], limits: &Limits) -> Vec<Packed> {
    let mut chunks: Vec<Option<Chunk>> = Vec::new();
    let mut chunk_of: HashMap<JobIndex, usize> = HashMap::new();
    // The longest chain ending at each job placed, when its chunk has hints.
    let mut path_to: HashMap<JobIndex, Duration> = HashMap::new();
    for c in candidates {
        let mut merged = BTreeSet::new();
        let mut placed = true;
        for up in &c.upstream {
            match chunk_of.get(up) {
                Some(chunk) => {
                    merged.insert(*chunk);
                }
                None => placed = false,
            }
        }
        if !placed {
            continue;
        }
        let parts: Vec<&Chunk> = merged
            .iter()
            .map(|i| chunks[*i].as_ref().expect("live chunk"))
            .collect();
        let size = parts.iter().map(|p| p.jobs.len()).sum::<usize>() + 1;
        let path = c.time.and_then(|t| {
            let longest_upstream = c.upstream.iter().try_fold(Duration::ZERO, |longest, up| {
                Some(longest.max(*path_to.get(up)?))
            })?;
            Some(t + longest_upstream)
        });
        let hints = path.and_then(|path| {
            let own = Hints {
                work: c.time?,
                path,
            };
            parts
                .iter()
                .try_fold(own, |sum, p| Some(sum.beside(p.hints?)))
        });
        let impure = c.impure || parts.iter().any(|p| p.impure);
        let threads = if impure { 1 } else { at_once(c.shape, limits) };
        let time = estimate(hints, size, threads);
        let after: BTreeSet<Alloc> = parts
            .iter()
            .flat_map(|p| p.after.iter().copied())
            .chain(c.after.iter().copied())
            .collect();
        let fits = parts.iter().all(|p| p.shape == c.shape)
            && size <= limits.batch_size
            && time.is_none_or(|t| t <= limits.batch_time || parts.is_empty())
            && after.len() <= limits.max_after;
        if !fits {
            continue;
        }
        let mut jobs: Vec<JobIndex> = merged
            .iter()
            .flat_map(|i| chunks[*i].take().expect("live chunk").jobs)
            .collect();
        jobs.push(c.index);
        let id = chunks.len();
        for job in &jobs {
            chunk_of.insert(*job, id);
        }
        if let Some(path) = path {
            path_to.insert(c.index, path);
        }
        chunks.push(Some(Chunk {
            jobs,
            shape: c.shape,
            hints,
            impure,
            after,
        }));
    }

    // Chunks of one shape, one `after` set and either all pure or all with an impure job,
    // in the order of their first job.
    let order: HashMap<JobIndex, usize> = candidates
        .iter()
        .enumerate()
        .map(|(n, c)| (c.index, n))
        .collect();
    let mut live: Vec<Chunk> = chunks.into_iter().flatten().collect();
    for chunk in &mut live {
        chunk.jobs.sort_by_key(|j| order[j]);
    }
    live.sort_by_key(|c| order[&c.jobs[0]]);
    let mut groups: BTreeMap<usize, Vec<Chunk>> = BTreeMap::new();
    let mut group_of: HashMap<(Shape, BTreeSet<Alloc>, bool), usize> = HashMap::new();
    for chunk in live {
        let next = group_of.len();
        let group = *group_of
            .entry((chunk.shape, chunk.after.clone(), chunk.impure))
            .or_insert(next);
        groups.entry(group).or_default().push(chunk);
    }

    let mut batches = Vec::new();
    for chunks in groups.into_values() {
        let most = chunks[0].threads(limits);
        // As few batches as the size allows, the jobs shared out evenly among them.
        let mut left: usize = chunks.iter().map(|c| c.jobs.len()).sum();
        let mut count = left.div_ceil(limits.batch_size.max(1)).max(1);
        let mut current: Option<Chunk> = None;
        for chunk in chunks {
            if let Some(batch) = &current {
                let target = left.div_ceil(count);
                let size = batch.jobs.len() + chunk.jobs.len();
                let hints = batch.hints.zip(chunk.hints).map(|(a, b)| a.beside(b));
                let full = size > target
                    || estimate(hints, size, most).is_some_and(|t| t > limits.batch_time);
                if full {
                    left -= batch.jobs.len();
                    count = (count - 1).max(1);
                    batches.extend(current.take().map(|b| packed(b, most)));
                }
            }
            match &mut current {
                Some(batch) => {
                    batch.jobs.extend(chunk.jobs);
                    batch.hints = batch.hints.zip(chunk.hints).map(|(a, b)| a.beside(b));
                }
                None => current = Some(chunk),
            }
        }
        batches.extend(current.map(|b| packed(b, most)));
    }
    batches.sort_by_key(|b| order[&b.jobs[0]]);
    batches
}

/// A batch of chunks, run `most` jobs at a time at most.
fn packed(batch: Chunk, most: usize) -> Packed {
    let parallel = most.min(batch.jobs.len()).max(1);
    Packed {
        time: estimate(batch.hints, batch.jobs.len(), parallel),
        parallel,
        jobs: batch.jobs,
        shape: batch.shape,
        after: batch.after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Shape = Shape { cpus: 1, mem: None };

    fn limits(batch_size: usize) -> Limits<'static> {
        Limits {
            batch_size,
            batch_time: Duration::from_secs(3600),
            batch_cpus: 1,
            nodes: &[],
            max_after: 8,
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    fn root(index: JobIndex) -> Candidate {
        Candidate {
            index,
            shape: ONE,
            time: None,
            impure: false,
            after: BTreeSet::new(),
            upstream: vec![],
        }
    }

    fn sizes(batches: &[Packed]) -> Vec<usize> {
        batches.iter().map(|b| b.jobs.len()).collect()
    }

    #[test]
    fn independent_jobs_are_spread_evenly_under_the_batch_size() {
        let jobs: Vec<Candidate> = (0..1000).map(root).collect();
        assert_eq!(sizes(&pack(&jobs, &limits(256))), [250, 250, 250, 250]);
        assert_eq!(sizes(&pack(&jobs, &limits(1000))), [1000]);
        assert_eq!(pack(&jobs, &limits(1)).len(), 1000);
        let seven: Vec<Candidate> = (0..7).map(root).collect();
        assert_eq!(sizes(&pack(&seven, &limits(3))), [3, 2, 2]);
    }

    #[test]
    fn a_gather_rides_along_when_its_upstream_fits_one_batch() {
        let mut jobs: Vec<Candidate> = (0..6).map(root).collect();
        jobs.push(Candidate {
            upstream: (0..6).collect(),
            ..root(6)
        });
        let batches = pack(&jobs, &limits(256));
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].jobs, [0, 1, 2, 3, 4, 5, 6]);

        // Too many to share a batch: the points go now, the gather waits for a later round.
        let batches = pack(&jobs, &limits(2));
        assert_eq!(sizes(&batches), [2, 2, 2]);
        assert!(batches.iter().all(|b| !b.jobs.contains(&6)));
    }

    #[test]
    fn chains_stay_together_and_chained_jobs_wait_on_their_allocations() {
        // 0 -> 1 -> 2, and 3 waits on allocation 7, 4 on allocation 8.
        let jobs = vec![
            root(0),
            Candidate {
                upstream: vec![0],
                ..root(1)
            },
            Candidate {
                upstream: vec![1],
                ..root(2)
            },
            Candidate {
                after: [7].into(),
                ..root(3)
            },
            Candidate {
                after: [8].into(),
                ..root(4)
            },
        ];
        let batches = pack(&jobs, &limits(10));
        assert_eq!(batches.len(), 3, "{batches:?}");
        assert_eq!(batches[0].jobs, [0, 1, 2]);
        assert_eq!(batches[1].after, [7].into());
        assert_eq!(batches[2].after, [8].into());
    }

    #[test]
    fn shapes_and_time_hints_split_batches() {
        let big = Shape {
            cpus: 4,
            mem: Some(2 << 30),
        };
        let ten = Some(Duration::from_secs(600));
        let mut jobs: Vec<Candidate> = (0..4)
            .map(|i| Candidate {
                time: ten,
                ..root(i)
            })
            .collect();
        jobs.push(Candidate {
            shape: big,
            ..root(4)
        });
        let batches = pack(
            &jobs,
            &Limits {
                batch_time: Duration::from_secs(1800),
                ..limits(100)
            },
        );
        assert_eq!(sizes(&batches), [3, 1, 1], "{batches:?}");
        assert_eq!(batches[0].time, Some(Duration::from_secs(1800)));
        assert_eq!(batches[2].shape, big);
        assert_eq!(batches[2].time, None);
    }

    #[test]
    fn a_batch_runs_as_many_jobs_at_once_as_fit_its_cpus_and_the_largest_node() {
        let four = Limits {
            batch_cpus: 4,
            ..limits(256)
        };
        let two_cpus = Shape { cpus: 2, mem: None };
        assert_eq!(at_once(ONE, &four), 4);
        assert_eq!(at_once(two_cpus, &four), 2);
        assert_eq!(at_once(Shape { cpus: 8, mem: None }, &four), 1);
        let nodes = [
            Node {
                cpus: 2,
                mem: 64 << 30,
            },
            Node {
                cpus: 3,
                mem: 4 << 30,
            },
        ];
        let small = Limits {
            nodes: &nodes,
            ..four
        };
        assert_eq!(at_once(ONE, &small), 3);
        let three_gigabytes = Shape {
            cpus: 1,
            mem: Some(3 << 30),
        };
        // Only the first node holds two jobs of 3G.
        assert_eq!(at_once(three_gigabytes, &small), 2);

        // Never more at once than the batch holds.
        let pair: Vec<Candidate> = (0..2).map(root).collect();
        let batches = pack(&pair, &four);
        assert_eq!((batches.len(), batches[0].parallel), (1, 2));
        let ten: Vec<Candidate> = (0..10).map(root).collect();
        assert_eq!(pack(&ten, &four)[0].parallel, 4);
    }

    #[test]
    fn time_is_the_longest_chain_plus_the_rest_of_the_work_shared_among_the_threads() {
        let hinted = |index| Candidate {
            time: Some(10 * MINUTE),
            ..root(index)
        };
        let on = |batch_cpus| Limits {
            batch_cpus,
            batch_time: Duration::from_secs(24 * 3600),
            ..limits(256)
        };
        // Three 10-minute jobs on two threads: 20 minutes, not 15.
        let three: Vec<Candidate> = (0..3).map(hinted).collect();
        assert_eq!(pack(&three, &on(2))[0].time, Some(20 * MINUTE));
        assert_eq!(pack(&three, &on(1))[0].time, Some(30 * MINUTE));
        // A thread each: as long as one.
        assert_eq!(pack(&three, &on(4))[0].time, Some(10 * MINUTE));

        // Six points and their gather on four threads: the chain point -> gather is 20
        // minutes, the other 50 minutes of work are shared by four. (Greedy: 30 minutes.)
        let mut sweep: Vec<Candidate> = (0..6).map(hinted).collect();
        sweep.push(Candidate {
            upstream: (0..6).collect(),
            ..hinted(6)
        });
        let batches = pack(&sweep, &on(4));
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].time, Some(20 * MINUTE + 50 * MINUTE / 4));

        // Cut at `batch_time` by that estimate: five one-hour jobs take two hours on four
        // threads, six would take longer.
        let hours: Vec<Candidate> = (0..8)
            .map(|i| Candidate {
                time: Some(60 * MINUTE),
                ..root(i)
            })
            .collect();
        let limits = Limits {
            batch_time: 120 * MINUTE,
            ..on(4)
        };
        let batches = pack(&hours, &limits);
        assert_eq!(sizes(&batches), [5, 3], "{batches:?}");
        assert_eq!(batches[0].time, Some(120 * MINUTE));
        assert_eq!(batches[1].time, Some(60 * MINUTE));
    }

    #[test]
    fn impure_jobs_run_one_at_a_time_so_their_batches_ask_for_one_slot_and_serial_time() {
        let four = Limits {
            batch_cpus: 4,
            batch_time: 24 * 60 * MINUTE,
            ..limits(256)
        };
        let job = |index, impure| Candidate {
            time: Some(10 * MINUTE),
            impure,
            ..root(index)
        };
        // Four pure and four impure points: the pure ones share four CPUs, the impure ones
        // take 40 minutes on one, as the worker runs them.
        let jobs: Vec<Candidate> = (0..8).map(|i| job(i, i % 2 == 1)).collect();
        let batches = pack(&jobs, &four);
        let shapes: Vec<_> = batches
            .iter()
            .map(|b| (b.jobs.clone(), b.parallel, b.time))
            .collect();
        assert_eq!(
            shapes,
            [
                (vec![0, 2, 4, 6], 4, Some(10 * MINUTE)),
                (vec![1, 3, 5, 7], 1, Some(40 * MINUTE)),
            ]
        );

        // A pure job riding along with an impure one runs in its batch, one at a time.
        let mut chain: Vec<Candidate> = (0..3).map(|i| job(i, false)).collect();
        chain.push(Candidate {
            upstream: vec![0, 1, 2],
            ..job(3, true)
        });
        let batches = pack(&chain, &four);
        assert_eq!(batches.len(), 1);
        assert_eq!(
            (batches[0].parallel, batches[0].time),
            (1, Some(40 * MINUTE))
        );

        // Cut at `batch_time` by the serial estimate: two hours hold two one-hour jobs.
        let hours: Vec<Candidate> = (0..5)
            .map(|i| Candidate {
                time: Some(60 * MINUTE),
                ..job(i, true)
            })
            .collect();
        let two_hours = Limits {
            batch_time: 120 * MINUTE,
            ..four
        };
        assert_eq!(sizes(&pack(&hours, &two_hours)), [2, 2, 1]);
    }
}
