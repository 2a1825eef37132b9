//! The small files: checkpoint, `config/*`. Each must decode; the ones
//! that describe queues are then checked against the queues' ranges.

use super::report::{ProblemKind, Problems, Severity};
use crate::commitlog::{Checkpoint, CHECKPOINT_FILE};
use crate::consumequeue::check::QueueFiles;
use crate::error::{Error, Result};
use crate::metafile::generations::{FallbackReason, MetadataFallback};
use crate::metafile::CONFIG_DIR;
use crate::offsetstore::{OffsetEntry, OffsetTable};
use crate::retry::SCHEDULE_TOPIC;
use crate::storage::Storage;
use crate::store::dispatch::QueueEnds;
use crate::store::layout;
use crate::topic::{TopicConfig, TopicTable};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Everything read from the small files (what did not decode is `None`
/// or empty, and reported).
#[derive(Debug, Default)]
pub(super) struct Meta {
    pub(super) checkpoint: Option<Checkpoint>,
    pub(super) offsets: Vec<OffsetEntry>,
    pub(super) delay: Option<Vec<u64>>,
    pub(super) dispatch: Option<(u64, QueueEnds)>,
    pub(super) topics: Vec<(TopicConfig, u64)>,
    pub(super) units_per_file: Option<u64>,
    /// The retention floor (`config/retention`): segments below it were
    /// removed on purpose. 0 without the file.
    pub(super) floor: u64,
}

/// `Ok(None)` for a file a live store removed between looking and
/// reading (only `config/consumers` is ever removed).
fn vanished<T>(r: Result<Option<T>>) -> Result<Option<T>> {
    match r {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        other => other,
    }
}

/// Reports the use of a file's previous generation: a missing current
/// file is what a crash between the two renames of a replacement leaves
/// (stale: open rewrites it); a damaged one, or an older copy put back, is
/// corruption (open still recovers the previous generation).
fn fallback(p: &mut Problems, fb: Option<MetadataFallback>) {
    let Some(fb) = fb else { return };
    match fb.reason {
        FallbackReason::Missing => p.push(&fb.file, 0, ProblemKind::Missing, Severity::Stale, false),
        FallbackReason::Damaged { offset, kind } => p.damaged(&fb.file, offset, kind, false),
        FallbackReason::NotNewer { generation } => {
            let kind = ProblemKind::OlderGeneration { generation, previous: fb.generation };
            p.push(&fb.file, 0, kind, Severity::Corruption, false);
        }
    }
}

/// Reads a two-generation file, once more if its current generation was
/// missing: a live writer replacing it renames the current file to the
/// previous one and then the new one into place, so for a moment there is
/// none (FORMAT.md 11.10); a crash leaves that state for good.
fn settled<T>(read: impl Fn() -> Result<(T, Option<MetadataFallback>)>) -> Result<(T, Option<MetadataFallback>)> {
    let first = read()?;
    if !first.1.as_ref().is_some_and(|f| f.reason == FallbackReason::Missing) {
        return Ok(first);
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    read()
}

/// Reads every small file. Order matters beside a live store: the files
/// that describe positions are read before the queues and the log they
/// point into, and those only grow, so a later read never finds a
/// position "beyond" data written in between.
pub(super) fn read(storage: &Arc<dyn Storage>, root: &Path, p: &mut Problems) -> Result<Meta> {
    let st = storage.as_ref();
    let mut m = Meta::default();
    // The checkpoint is derived: recovery scans the whole log without it.
    match crate::commitlog::read_checkpoint(st, root) {
        Ok(cp) => m.checkpoint = cp,
        Err(e) => p.corrupt_or_fail(e, true)?,
    }
    // Nothing can rebuild committed offsets, topics, the layout or the
    // retention floor; the first three keep a previous generation.
    let mut present = 0u32;
    match settled(|| OffsetTable::open_with_fallback(storage.clone(), root)) {
        Ok((t, fb)) => {
            m.offsets = t.entries();
            present |= if t.file_exists() { layout::OFFSETS } else { 0 };
            fallback(p, fb);
        }
        Err(e) => p.corrupt_or_fail(e, false)?,
    }
    // Delay progress and the dispatch checkpoint are rebuilt by
    // re-dispatching the log; membership is advisory.
    match vanished(crate::retry::progress::read(st, root)) {
        Ok(d) => m.delay = d,
        Err(e) => p.corrupt_or_fail(e, true)?,
    }
    match vanished(crate::store::dispatch::parse_checkpoint(st, root)) {
        Ok(d) => m.dispatch = d,
        Err(e) => p.corrupt_or_fail(e, true)?,
    }
    if let Err(e) = vanished(crate::consumer::membership::read(st, root)) {
        p.corrupt_or_fail(e, true)?;
    }
    match settled(|| TopicTable::open_with_fallback(storage.clone(), root)) {
        Ok((t, fb)) => {
            let list = t.list();
            present |= if t.file_exists() { layout::TOPICS } else { 0 };
            m.topics = list.into_iter().map(|c| (c.clone(), t.since(&c.name).unwrap_or(0))).collect();
            fallback(p, fb);
        }
        Err(e) => p.corrupt_or_fail(e, false)?,
    }
    match crate::store::retention::floor::read(st, root) {
        Ok(f) => m.floor = f.unwrap_or(0),
        Err(e) => p.corrupt_or_fail(e, false)?,
    }
    let config = root.join(CONFIG_DIR);
    match settled(|| layout::read_only(storage.clone(), root)) {
        Ok((Some((units, primaries)), fb)) => {
            m.units_per_file = Some(units);
            fallback(p, fb);
            // The store records which primary files exist: a recorded one
            // that is gone would open as an empty table.
            for (bit, name) in layout::primary_files() {
                if primaries & bit != 0 && present & bit == 0 {
                    p.push(&config.join(name), 0, ProblemKind::Missing, Severity::Corruption, false);
                }
            }
        }
        // A store opened as a `Store` always has its layout and topics.
        Ok((None, _)) if exists(st, &config)? => {
            p.push(&config.join("store"), 0, ProblemKind::Missing, Severity::Corruption, false);
        }
        Ok((None, _)) => {}
        Err(e) => p.corrupt_or_fail(e, false)?,
    }
    missing_derived(st, root, p)?;
    Ok(m)
}

fn exists(st: &dyn Storage, path: &Path) -> Result<bool> {
    st.exists(path).map_err(|e| Error::io("stat", path, e))
}

/// Reports derived files missing from a store that was opened as a
/// [`Store`](crate::store::Store) (it has `config/`): the checkpoint,
/// dispatch checkpoint and delay progress, which every open writes and
/// recovery does without (by scanning or re-dispatching the whole log),
/// as stale.
fn missing_derived(st: &dyn Storage, root: &Path, p: &mut Problems) -> Result<()> {
    let config = root.join(CONFIG_DIR);
    if !exists(st, &config)? {
        return Ok(());
    }
    for path in [root.join(CHECKPOINT_FILE), config.join("dispatch"), config.join("delay")] {
        if !exists(st, &path)? {
            p.push(&path, 0, ProblemKind::Missing, Severity::Stale, true);
        }
    }
    Ok(())
}

/// `[min, max)` of every queue with files.
fn ranges(queues: &[QueueFiles]) -> HashMap<(&str, u32), (u64, u64)> {
    queues.iter().map(|q| ((q.topic.as_str(), q.queue_id), (q.min, q.max))).collect()
}

/// Checks the positions the small files hold against the queues and the
/// log: committed offsets and delay progress within their queue's range,
/// queues covering what the dispatch checkpoint recorded, the log
/// reaching the checkpoint's flushed offset.
///
/// `scanned_end` is where the log's scan ended; `log_end` that or the
/// checkpoint's flushed offset, whichever is greater; `log_damaged` says
/// whether the scan met damage (which is then the problem reported, not
/// the checkpoint the log falls short of).
pub(super) fn cross_check(
    m: &Meta,
    root: &Path,
    queues: &[QueueFiles],
    (scanned_end, log_end, log_damaged): (u64, u64, bool),
    p: &mut Problems,
) {
    let ranges = ranges(queues);
    let config = root.join(CONFIG_DIR);
    let max_of = |t: &str, q: u32| ranges.get(&(t, q)).map_or(0, |r| r.1);
    let exists = |t: &str| m.topics.iter().any(|(c, _)| c.name == t);
    // Entries are stored in the order `entries()` lists them (FORMAT.md
    // 11.3): envelope header, count, then per entry 2 + group + 2 + topic
    // + 4 + 8 bytes; the offset field is the entry's last 8.
    let mut pos = crate::metafile::HEADER_LEN as u64 + 4;
    for e in &m.offsets {
        pos += (2 + e.group.len() + 2 + e.topic.len() + 4) as u64;
        let max = max_of(&e.topic, e.queue_id);
        // Offsets of deleted topics are dropped on open.
        if e.offset > max && exists(&e.topic) {
            let queue = format!("group {} on {}/{}", e.group, e.topic, e.queue_id);
            let kind = ProblemKind::BeyondQueue { what: "consumer offset", queue, value: e.offset, max };
            p.push(&config.join("consumer_offsets"), pos, kind, Severity::Corruption, false);
        }
        pos += 8;
    }
    if let Some(delay) = &m.delay {
        for (level, &next) in delay.iter().enumerate() {
            let max = max_of(SCHEDULE_TOPIC, level as u32);
            if next > max {
                let queue = format!("level {} ({SCHEDULE_TOPIC}/{level})", level + 1);
                let kind = ProblemKind::BeyondQueue { what: "delay progress", queue, value: next, max };
                // Payload: count (4 bytes), then one u64 per level.
                let pos = (crate::metafile::HEADER_LEN + 4 + 8 * level) as u64;
                p.push(&config.join("delay"), pos, kind, Severity::Corruption, true);
            }
        }
    }
    if let Some((dispatched, ends)) = &m.dispatch {
        let path = config.join("dispatch");
        if *dispatched > log_end {
            let kind = ProblemKind::PastLogEnd { count: 1, physical: *dispatched, log_end };
            p.push(&path, crate::metafile::HEADER_LEN as u64, kind, Severity::Stale, true);
        }
        let mut ends: Vec<_> = ends.iter().collect();
        ends.sort();
        for ((topic, q), &(start, end)) in ends {
            let now = ranges.get(&(topic.as_str(), *q)).copied().unwrap_or((0, 0));
            if (now.1 < end || now.0 > start) && exists(topic) {
                let kind = ProblemKind::QueueShrank { now, checkpointed: (start, end) };
                let dir = root.join("consumequeue").join(topic).join(q.to_string());
                p.push(&dir, 0, kind, Severity::Corruption, true);
            }
        }
    }
    if let Some(cp) = &m.checkpoint {
        if cp.flushed > scanned_end && !log_damaged {
            let kind = ProblemKind::LogBehindCheckpoint { flushed: cp.flushed, log_end: scanned_end };
            // Offset 24: the flushed-offset field. The loss is in the log.
            p.push(&root.join(CHECKPOINT_FILE), 24, kind, Severity::Corruption, false);
        }
    }
}
