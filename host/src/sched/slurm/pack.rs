//! Packing jobs into batches: which jobs share one allocation.
//!
//! Each round the coordinator hands over the jobs it may submit now, upstream first: each
//! with its resource shape, its time hint, the allocations already in flight it must wait
//! for (`after`, chained with `afterok`), and its upstream jobs that are candidates too.
//! A job whose upstream candidates can all share its batch rides along (the worker runs
//! them in order); otherwise it waits for a later round, when its upstream is in flight
//! and it can be chained. Jobs of one shape and one `after` set are then cut into batches
//! of even size, at most `batch_size` jobs and `batch_time` of summed time hints each.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

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
    /// In-flight allocations holding its upstream jobs.
    pub after: BTreeSet<Alloc>,
    /// Upstream jobs that are candidates of this round.
    pub upstream: Vec<JobIndex>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub batch_size: usize,
    pub batch_time: Duration,
    /// The most allocations one batch may wait for.
    pub max_after: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// Upstream before downstream.
    pub jobs: Vec<JobIndex>,
    pub shape: Shape,
    /// The sum of the jobs' time hints, when every job has one.
    pub time: Option<Duration>,
    pub after: BTreeSet<Alloc>,
}

/// Jobs that must share a batch: a root job and what rides along with it.
#[derive(Debug)]
struct Chunk {
    jobs: Vec<JobIndex>,
    shape: Shape,
    time: Option<Duration>,
    after: BTreeSet<Alloc>,
}

/// Packs `candidates` (upstream first) into batches; jobs left out wait for a later round.
pub fn pack(candidates: &[Candidate], limits: Limits) -> Vec<Packed> {
    let mut chunks: Vec<Option<Chunk>> = Vec::new();
    let mut chunk_of: HashMap<JobIndex, usize> = HashMap::new();
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
        let time = c
            .time
            .and_then(|t| parts.iter().try_fold(t, |sum, p| Some(sum + p.time?)));
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
        chunks.push(Some(Chunk {
            jobs,
            shape: c.shape,
            time,
            after,
        }));
    }

    // Chunks of one shape and one `after` set, in the order of their first job.
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
    let mut group_of: HashMap<(Shape, BTreeSet<Alloc>), usize> = HashMap::new();
    for chunk in live {
        let next = group_of.len();
        let group = *group_of
            .entry((chunk.shape, chunk.after.clone()))
            .or_insert(next);
        groups.entry(group).or_default().push(chunk);
    }

    let mut batches = Vec::new();
    for chunks in groups.into_values() {
        // As few batches as the size allows, the jobs shared out evenly among them.
        let mut left: usize = chunks.iter().map(|c| c.jobs.len()).sum();
        let mut count = left.div_ceil(limits.batch_size.max(1)).max(1);
        let mut current: Option<Packed> = None;
        for chunk in chunks {
            if let Some(batch) = &current {
                let target = left.div_ceil(count);
                let time = batch.time.zip(chunk.time).map(|(a, b)| a + b);
                let full = batch.jobs.len() + chunk.jobs.len() > target
                    || time.is_some_and(|t| t > limits.batch_time);
                if full {
                    left -= batch.jobs.len();
                    count = (count - 1).max(1);
                    batches.extend(current.take());
                }
            }
            match &mut current {
                Some(batch) => {
                    batch.jobs.extend(chunk.jobs);
                    batch.time = batch.time.zip(chunk.time).map(|(a, b)| a + b);
                }
                None => {
                    current = Some(Packed {
                        jobs: chunk.jobs,
                        shape: chunk.shape,
                        time: chunk.time,
                        after: chunk.after,
                    })
                }
            }
        }
        batches.extend(current);
    }
    batches.sort_by_key(|b| order[&b.jobs[0]]);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Shape = Shape { cpus: 1, mem: None };

    fn limits(batch_size: usize) -> Limits {
        Limits {
            batch_size,
            batch_time: Duration::from_secs(3600),
            max_after: 8,
        }
    }

    fn root(index: JobIndex) -> Candidate {
        Candidate {
            index,
            shape: ONE,
            time: None,
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
        assert_eq!(sizes(&pack(&jobs, limits(256))), [250, 250, 250, 250]);
        assert_eq!(sizes(&pack(&jobs, limits(1000))), [1000]);
        assert_eq!(pack(&jobs, limits(1)).len(), 1000);
        let seven: Vec<Candidate> = (0..7).map(root).collect();
        assert_eq!(sizes(&pack(&seven, limits(3))), [3, 2, 2]);
    }

    #[test]
    fn a_gather_rides_along_when_its_upstream_fits_one_batch() {
        let mut jobs: Vec<Candidate> = (0..6).map(root).collect();
        jobs.push(Candidate {
            upstream: (0..6).collect(),
            ..root(6)
        });
        let batches = pack(&jobs, limits(256));
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].jobs, [0, 1, 2, 3, 4, 5, 6]);

        // Too many to share a batch: the points go now, the gather waits for a later round.
        let batches = pack(&jobs, limits(2));
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
        let batches = pack(&jobs, limits(10));
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
            Limits {
                batch_time: Duration::from_secs(1800),
                ..limits(100)
            },
        );
        assert_eq!(sizes(&batches), [3, 1, 1], "{batches:?}");
        assert_eq!(batches[0].time, Some(Duration::from_secs(1800)));
        assert_eq!(batches[2].shape, big);
        assert_eq!(batches[2].time, None);
    }
}
