//! How a pull round's messages are cut into jobs for the worker pool.
//!
//! Handing a job to a worker costs a channel send and, when the worker
//! sleeps, a futex wake and two context switches: measured on the 2-vCPU
//! machines here, 10-20 us of CPU in all. Cutting every round into one job
//! per worker (as a thread pool with one task per listener batch does)
//! pays that for every few messages, and with cheap listeners it spends
//! more CPU on hand-offs than on listening: one hand-off per message took
//! 3x the CPU of the pull itself. So a round is cut into as many jobs as
//! there are idle workers *and* as its estimated listener time pays for:
//! slow listeners still get one job per idle worker (parallel as
//! RocketMQ's pool), cheap ones get one job per round.
//!
//! Invariants of [`split`]: every message is in exactly one job; the
//! messages of one queue keep their order within and across jobs; a
//! listener batch is never cut in two (only a part's last batch may be
//! short).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What one hand-off to a sleeping worker costs (CPU, both sides).
pub(crate) const HANDOFF_NS: u64 = 20_000;

/// Running estimate of listener time per message, in nanoseconds (an
/// exponentially weighted average over jobs, weight 1/8).
#[derive(Debug)]
pub(crate) struct ListenerCost(AtomicU64);

impl ListenerCost {
    /// Starts at one hand-off per message: until the listener was timed,
    /// rounds are spread over the idle workers.
    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(HANDOFF_NS))
    }

    /// Folds in a job of `msgs` messages whose listener calls took
    /// `elapsed`. Concurrent updates may lose one another's sample; the
    /// estimate only steers job sizes.
    pub(crate) fn record(&self, msgs: usize, elapsed: Duration) {
        let Some(per) = u64::try_from(elapsed.as_nanos()).ok().and_then(|ns| ns.checked_div(msgs as u64)) else {
            return;
        };
        let old = self.0.load(Ordering::Relaxed);
        self.0.store(old - old / 8 + per / 8, Ordering::Relaxed);
    }

    /// The current estimate (ns per message).
    pub(crate) fn per_message(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Jobs for a round of `messages` messages in `batches` listener batches,
/// with `idle` workers waiting and listeners costing `ns_per_message`:
/// no more than the idle workers, the batches, or the hand-offs the
/// listener time pays for; at least one.
pub(crate) fn job_count(messages: usize, batches: usize, idle: usize, ns_per_message: u64) -> usize {
    let worth = (messages as u64).saturating_mul(ns_per_message) / HANDOFF_NS;
    let n = (idle as u64).min(worth).min(batches as u64).max(1);
    usize::try_from(n).unwrap_or(1)
}

/// Listener batches of `len` messages in batches of `batch`.
pub(crate) fn batches_of(len: usize, batch: usize) -> usize {
    len.div_ceil(batch.max(1))
}

/// Cuts `parts` (a queue and its pulled messages, in queue order) into at
/// most `jobs` jobs of whole listener batches of `batch`, as even as the
/// batches allow. A part may be spread over consecutive jobs; each job
/// holds pieces `(queue, messages)`.
pub(crate) fn split<Q: Clone, M>(parts: Vec<(Q, Vec<M>)>, batch: usize, jobs: usize) -> Vec<Vec<(Q, Vec<M>)>> {
    let batch = batch.max(1);
    let total: usize = parts.iter().map(|(_, m)| batches_of(m.len(), batch)).sum();
    let per_job = total.div_ceil(jobs.max(1)).max(1);
    let mut out: Vec<Vec<(Q, Vec<M>)>> = Vec::new();
    let mut current: Vec<(Q, Vec<M>)> = Vec::new();
    let mut room = per_job;
    for (queue, mut msgs) in parts {
        while !msgs.is_empty() {
            // The common case (a part that fits) moves the part's vector
            // as it is; only a part spread over jobs is copied.
            let take = room.saturating_mul(batch);
            let piece = if msgs.len() <= take {
                std::mem::take(&mut msgs)
            } else {
                let rest = msgs.split_off(take);
                std::mem::replace(&mut msgs, rest)
            };
            room -= batches_of(piece.len(), batch).min(room);
            current.push((queue.clone(), piece));
            if room == 0 {
                out.push(std::mem::take(&mut current));
                room = per_job;
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(lens: &[usize]) -> Vec<(usize, Vec<(usize, usize)>)> {
        lens.iter().enumerate().map(|(q, &n)| (q, (0..n).map(|i| (q, i)).collect())).collect()
    }

    /// Every message once, per-queue order kept, no batch cut, at most
    /// `jobs` jobs, job sizes within one batch per part of each other.
    fn check(lens: &[usize], batch: usize, jobs: usize) {
        let out = split(parts(lens), batch, jobs);
        assert!(out.len() <= jobs.max(1), "{lens:?} b{batch} j{jobs}: {} jobs", out.len());
        let mut next = vec![0usize; lens.len()];
        for job in &out {
            assert!(!job.is_empty());
            for (q, piece) in job {
                for &(mq, i) in piece {
                    assert_eq!((mq, i), (*q, next[*q]), "order broken");
                    next[*q] += 1;
                }
                // Only the part's last piece may end in a short batch.
                if next[*q] != lens[*q] {
                    assert_eq!(piece.len() % batch, 0, "batch cut: {lens:?} b{batch} j{jobs}");
                }
            }
        }
        assert_eq!(next, lens, "messages lost or repeated");
        let sizes: Vec<usize> = out.iter().map(|j| j.iter().map(|(_, p)| batches_of(p.len(), batch)).sum()).collect();
        let per_job = sizes.iter().sum::<usize>().div_ceil(jobs.max(1)).max(1);
        assert!(sizes.iter().all(|&s| s <= per_job), "{sizes:?} > {per_job}");
    }

    #[test]
    fn split_keeps_every_message_in_order_and_batches_whole() {
        for lens in [&[32usize][..], &[32; 8], &[1, 0, 5, 32, 7], &[0, 0], &[3], &[100, 1, 1, 1]] {
            for batch in [1, 2, 3, 32, 64] {
                for jobs in [0, 1, 2, 4, 7, 300] {
                    check(lens, batch, jobs);
                }
            }
        }
    }

    #[test]
    fn split_spreads_evenly() {
        let out = split(parts(&[32; 8]), 1, 4);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|j| j.iter().map(|(_, p)| p.len()).sum::<usize>() == 64));
        assert_eq!(split(parts(&[32; 8]), 1, 1).len(), 1);
    }

    #[test]
    fn job_count_follows_idle_workers_and_listener_cost() {
        // Cheap listeners: one job whatever the idle workers.
        assert_eq!(job_count(256, 256, 4, 100), 1);
        // Slow listeners: one job per idle worker, never more than batches.
        assert_eq!(job_count(256, 256, 4, 1_000_000), 4);
        assert_eq!(job_count(2, 2, 4, 1_000_000), 2);
        // Nobody idle: still one job (it waits in the channel).
        assert_eq!(job_count(256, 256, 0, 1_000_000), 1);
        // In between: as many hand-offs as the work pays for.
        assert_eq!(job_count(100, 100, 8, 500), 2);
    }

    #[test]
    fn listener_cost_moves_towards_the_samples() {
        let c = ListenerCost::new();
        assert_eq!(c.per_message(), HANDOFF_NS);
        for _ in 0..100 {
            c.record(10, Duration::from_micros(1));
        }
        assert!(c.per_message() < 200, "{}", c.per_message());
        c.record(0, Duration::from_secs(1));
        assert!(c.per_message() < 200, "an empty job changes nothing");
    }
}
