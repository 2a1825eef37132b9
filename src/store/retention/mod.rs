//! Log retention: removing the oldest commit-log segments by age and under
//! disk pressure, never one that is still needed unless forced, and
//! refusing sends when the disk is nearly full.
//!
//! A round ([`Store::run_retention`], also run by the `mqstore:dispatch`
//! thread every [`RetentionOptions::interval`]):
//! 1. measures disk use and sets or clears the disk-full flag;
//! 2. picks the oldest removable segments (sealed, flushed, dispatched):
//!    expired ones, or any under disk pressure, up to
//!    [`RetentionOptions::max_segments_per_round`], stopping at the first
//!    that a holder still needs (unless [`Retention::Forced`]);
//! 3. writes the new floor (`config/retention`) durably, then the dispatch
//!    checkpoint with every queue's new start, then removes the segments,
//!    the consume-queue files whose units all point below the floor, and
//!    the index files wholly below it.
//!
//! Crash safety: the floor is durable before any file goes, so an open
//! after a crash removes leftover segments below it and reports missing
//! ones above it as corruption. Consume-queue and index files are derived
//! data: a crash between the steps leaves dead files that the next round
//! removes, or (for a queue whose start moved without a checkpoint) a
//! rebuild from the log.

pub(crate) mod floor;
mod options;

pub use options::RetentionOptions;

use super::{Inner, Store};
use crate::error::{Error, Result};
use crate::storage::DiskUsage;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What kind of round [`Store::run_retention`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Removes expired segments (and any under disk pressure) that nothing
    /// still needs.
    Normal,
    /// Like `Normal`, but removes segments consumer groups, delayed
    /// messages or a replica still need. The report lists who lost data
    /// ([`RetentionReport::overridden`]); their next pull moves past it.
    Forced,
}

/// Why a segment was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// The first record after it is older than the reserved time.
    Expired,
    /// Disk use reached [`RetentionOptions::clean_percent`].
    DiskPressure,
}

/// One removed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedSegment {
    /// Physical offset of its first byte.
    pub base: u64,
    /// One past its last byte.
    pub end: u64,
    /// The file that was removed.
    pub path: PathBuf,
    /// Why.
    pub reason: RemovalReason,
}

/// Something that still needs the records from a physical offset on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A consumer group has not consumed a queue past `offset`.
    Group {
        /// The group.
        group: String,
        /// The topic (a retry topic for send-backs).
        topic: String,
        /// The queue.
        queue_id: u32,
        /// The group's committed queue offset.
        offset: u64,
        /// Physical offset of the message at `offset`.
        physical: u64,
    },
    /// A delayed message waits in delay level `level` at `offset`.
    Delayed {
        /// The delay level (1-based).
        level: u32,
        /// Queue offset of the first undelivered message of that level.
        offset: u64,
        /// Its physical offset.
        physical: u64,
    },
    /// The connected replica has acknowledged only up to `physical`.
    Replica {
        /// End of what the replica acknowledged.
        physical: u64,
    },
}

impl Holder {
    /// The first physical offset the holder still needs.
    #[must_use]
    pub fn physical(&self) -> u64 {
        match self {
            Self::Group { physical, .. } | Self::Delayed { physical, .. } | Self::Replica { physical } => *physical,
        }
    }
}

/// What a retention round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments removed, oldest first.
    pub removed: Vec<RemovedSegment>,
    /// Holders that kept the next eligible segment (`Normal` rounds): the
    /// round stopped there.
    pub kept_for: Vec<Holder>,
    /// Holders whose records a `Forced` round removed anyway.
    pub overridden: Vec<Holder>,
    /// Consume-queue files removed.
    pub queue_files_removed: usize,
    /// Index files removed.
    pub index_files_removed: usize,
    /// Disk use measured at the end of the round (`None` when the storage
    /// cannot tell).
    pub disk: Option<DiskUsage>,
    /// Whether sends are refused with [`Error::DiskFull`].
    pub disk_full: bool,
    /// The commit log's first offset after the round.
    pub log_min_offset: u64,
}

impl RetentionReport {
    /// Bytes of segment files removed.
    #[must_use]
    pub fn bytes_removed(&self) -> u64 {
        self.removed.iter().map(|s| s.end - s.base).sum()
    }
}

/// Retention state shared by the store.
#[derive(Debug, Default)]
pub(crate) struct RetentionState {
    /// Serialises rounds with each other and with the dispatch checkpoint
    /// writes (see `write_checkpoint_locked`).
    pub(crate) lock: parking_lot::Mutex<()>,
    /// Sends are refused while set.
    pub(crate) disk_full: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Runs one retention round now (the dispatch thread also runs one
    /// every [`RetentionOptions::interval`]).
    ///
    /// Errors: [`Error::Closed`], [`Error::Fenced`], or the I/O error that
    /// stopped the round (whatever it removed before that stays removed; a
    /// failed sync fences the store).
    pub fn run_retention(&self, mode: Retention) -> Result<RetentionReport> {
        self.ensure_open()?;
        run(&self.inner, mode)
    }

    /// Whether sends are currently refused because the disk is nearly full.
    #[must_use]
    pub fn is_disk_full(&self) -> bool {
        self.inner.retention.disk_full.load(Ordering::Acquire)
    }
}

/// Refuses a write while the disk-full flag is set.
pub(crate) fn check_writable(inner: &Inner) -> Result<()> {
    if inner.retention.disk_full.load(Ordering::Acquire) {
        return Err(Error::DiskFull { op: "append (disk use above the full ratio)", path: inner.root.clone() });
    }
    Ok(())
}

/// At open, before the consume queues are read: checks the recovered log
/// against the recorded floor and finishes an interrupted removal.
pub(crate) fn recover(log: &crate::commitlog::CommitLog, storage: &dyn crate::storage::Storage) -> Result<u64> {
    let root = log.store_dir().to_path_buf();
    let recorded = floor::read(storage, &root)?;
    let first = log.first_segment_base();
    let floor = floor::check(&root, recorded, first)?;
    if first.is_some_and(|b| b < floor) {
        log.remove_segments_below(floor)?;
    }
    Ok(floor)
}

fn disk_usage(inner: &Inner) -> Option<DiskUsage> {
    inner.opts.commit_log.storage.disk_usage(&inner.root).ok()
}

/// Sets or clears the disk-full flag from `usage` (with hysteresis: set
/// at `full_percent`, cleared below `clean_percent`).
fn update_disk_full(inner: &Inner, usage: Option<DiskUsage>) -> bool {
    let opts = &inner.opts.retention;
    let flag = &inner.retention.disk_full;
    match usage.map(|u| u.used_percent()) {
        Some(p) if p >= opts.full_percent => flag.store(true, Ordering::Release),
        Some(p) if p < opts.clean_percent => flag.store(false, Ordering::Release),
        Some(_) => {}
        // Unknown: never refuse writes on a guess.
        None => flag.store(false, Ordering::Release),
    }
    flag.load(Ordering::Acquire)
}

pub(crate) fn run(inner: &Inner, mode: Retention) -> Result<RetentionReport> {
    let _round = inner.retention.lock.lock();
    let opts = inner.opts.retention;
    let mut report = RetentionReport::default();
    let usage = disk_usage(inner);
    update_disk_full(inner, usage);
    let pressure = usage.is_some_and(|u| u.used_percent() >= opts.clean_percent);
    let now = inner.opts.commit_log.clock.now_ms();
    let reserved = u64::try_from(opts.reserved_time.as_millis()).unwrap_or(u64::MAX);
    let dispatched = inner.dispatch.dispatched.load(Ordering::Acquire);
    let mut chosen = Vec::new();
    for seg in inner.log.removable_segments() {
        if chosen.len() >= opts.max_segments_per_round || seg.end > dispatched {
            break;
        }
        let expired = inner.log.first_timestamp_in(seg.end)?.is_some_and(|ts| ts.saturating_add(reserved) <= now);
        let reason = if expired {
            RemovalReason::Expired
        } else if pressure {
            RemovalReason::DiskPressure
        } else {
            break;
        };
        chosen.push((seg, reason));
    }
    if !chosen.is_empty() {
        let holders = holders(inner)?;
        let needed = holders.iter().map(Holder::physical).min().unwrap_or(u64::MAX);
        if mode == Retention::Normal {
            let keep = chosen.iter().position(|(s, _)| s.end > needed).unwrap_or(chosen.len());
            if keep < chosen.len() {
                let blocked = &chosen[keep].0;
                report.kept_for = holders.iter().filter(|h| h.physical() < blocked.end).cloned().collect();
            }
            chosen.truncate(keep);
        }
        if let Some((last, _)) = chosen.last() {
            let new_floor = last.end;
            if mode == Retention::Forced {
                report.overridden = holders.into_iter().filter(|h| h.physical() < new_floor).collect();
            }
            remove(inner, new_floor, &mut report)?;
            report.removed = chosen
                .into_iter()
                .map(|(s, reason)| RemovedSegment { base: s.base, end: s.end, path: s.path, reason })
                .collect();
        }
    }
    report.disk = disk_usage(inner);
    report.disk_full = update_disk_full(inner, report.disk);
    report.log_min_offset = inner.log.min_offset().get();
    Ok(report)
}

/// Everything that still needs records: committed offsets short of their
/// queue's end, undelivered delay levels, a connected replica.
fn holders(inner: &Inner) -> Result<Vec<Holder>> {
    let mut out = Vec::new();
    // The same floor as reads: a unit pointing into a segment header is
    // damaged, not removed, and must not be remembered as dead.
    let log_min = inner.log.removed_below().get();
    let at = |topic: &str, queue_id: u32, offset: u64| {
        let q = inner.queues.queue(topic, queue_id)?;
        if offset >= q.max_offset().0 {
            return None;
        }
        let from = offset.max(q.live_head(log_min).0);
        q.get(crate::offset::QueueOffset(from)).map(|u| u.physical_offset.0)
    };
    for e in inner.offsets.entries() {
        if let Some(physical) = at(&e.topic, e.queue_id, e.offset) {
            out.push(Holder::Group {
                group: e.group,
                topic: e.topic,
                queue_id: e.queue_id,
                offset: e.offset,
                physical,
            });
        }
    }
    for (queue_id, offset) in inner.schedule.progress(inner) {
        if let Some(physical) = at(crate::retry::SCHEDULE_TOPIC, queue_id, offset) {
            out.push(Holder::Delayed { level: queue_id + 1, offset, physical });
        }
    }
    if let Some(physical) = inner.replication.connected_replica_end() {
        out.push(Holder::Replica { physical });
    }
    Ok(out)
}

/// Steps 3 of a round: floor, checkpoint, segments, queue and index files.
fn remove(inner: &Inner, new_floor: u64, report: &mut RetentionReport) -> Result<()> {
    let storage = inner.opts.commit_log.storage.clone();
    let fence = |e: Error, what: &str| {
        inner.log.fence_if_sync_failed(&e, what);
        e
    };
    // Each queue's start once its dead head files are gone.
    let mut starts = HashMap::new();
    for topic in inner.queues.topics() {
        for (queue_id, q) in inner.queues.queues_of(&topic) {
            let head = q.head_after_removal(new_floor);
            if head > q.min_offset().0 {
                starts.insert((topic.clone(), queue_id), head);
            }
        }
    }
    floor::write(storage.as_ref(), &inner.root, new_floor).map_err(|e| fence(e, "retention floor"))?;
    if !starts.is_empty() {
        inner.queues.flush_all().map_err(|e| fence(e, "consume queues"))?;
        super::dispatch::write_checkpoint_with(inner, &starts).map_err(|e| fence(e, "dispatch checkpoint"))?;
    }
    // A failed directory sync after an unlink fences too: the kernel's
    // view of the directory is no longer known to match the disk's.
    inner.log.remove_segments_below(new_floor).map_err(|e| fence(e, "commit-log directory"))?;
    for ((topic, queue_id), head) in &starts {
        if let Some(q) = inner.queues.queue(topic, *queue_id) {
            report.queue_files_removed +=
                q.remove_head_files(*head).map_err(|e| fence(e, "consume-queue directory"))?;
        }
    }
    report.index_files_removed = inner.index.remove_files_below(new_floor).map_err(|e| fence(e, "index directory"))?;
    Ok(())
}

/// How long the dispatch thread waits between rounds.
pub(crate) fn interval(inner: &Inner) -> Duration {
    inner.opts.retention.interval
}
