//! Feeding the consume queues from the commit log, at runtime and on
//! recovery, and the `mqstore:dispatch` thread.
//!
//! Invariant: every record below `Dispatch::dispatched` has its unit in its
//! consume queue. The dispatch checkpoint (`config/dispatch`) records that
//! offset together with every queue's end, written only after the queues
//! were flushed, so on reopen everything below it is known to be on disk
//! and a queue shorter than its checkpointed end has lost units.

mod found;
mod memo;
mod own;

pub(crate) use found::Found;
pub(crate) use found::{due_tag, scan_properties};
use memo::QueueMemo;
pub(crate) use own::OwnRecords;

use super::Inner;
use crate::commitlog::wake::Broadcast;
use crate::commitlog::{Parts, Record, RecordView};
use crate::consumequeue::{CqUnit, CreationSync};
use crate::error::{CorruptionKind, Error, Result};
use crate::offset::{PhysicalOffset, QueueOffset};
use crate::retry::SCHEDULE_TOPIC;
use crate::storage::Storage;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CHECKPOINT_NAME: &str = "dispatch";
const CHECKPOINT_MAGIC: [u8; 8] = [0x8D, b'M', b'Q', b'D', b'\r', b'\n', 0x1A, b'\n'];
const CHECKPOINT_VERSION: u16 = 1;
/// Bound on the checkpoint payload read from disk (about 1.5 M queues).
const CHECKPOINT_MAX_PAYLOAD: u32 = 64 << 20;
/// The dispatch thread wakes at least this often even without a nudge, so
/// a missed wake-up delays dispatch by at most this much.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Dispatch progress and the wake-ups around it.
#[derive(Debug, Default)]
pub(crate) struct Dispatch {
    /// Commit-log offset below which every record is dispatched.
    pub(crate) dispatched: AtomicU64,
    /// Serialises dispatch rounds (the thread, recovery and close), and
    /// holds the queues they wrote to recently.
    round: Mutex<QueueMemo>,
    state: Mutex<State>,
    cv: Condvar,
    /// Bumped after each round that added units; long-polling readers
    /// sleep on it.
    pub(crate) arrivals: Broadcast,
    /// Set when dispatch failed (the queues can no longer follow the log).
    pub(crate) failed: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct State {
    /// New records are readable: run a dispatch round.
    pending: bool,
    /// Deferred index keys are waiting: write them.
    index: bool,
    stop: bool,
}

impl Dispatch {
    /// Tells the dispatch thread that new records are readable.
    pub(crate) fn nudge(&self) {
        let mut st = self.state.lock();
        if !st.pending {
            st.pending = true;
            self.cv.notify_one();
        }
    }

    /// Tells the dispatch thread that deferred index keys are waiting
    /// (see [`crate::index::deferred`]).
    pub(crate) fn nudge_index(&self) {
        let mut st = self.state.lock();
        if !st.index {
            st.index = true;
            self.cv.notify_one();
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        match self.failed.lock().as_ref() {
            Some(reason) => Err(Error::Fenced { reason: reason.clone() }),
            None => Ok(()),
        }
    }
}

/// Async flush: the sender dispatches right away on its own thread when
/// no round is running (a reader waiting in `pull_wait` is then woken one
/// thread hop sooner); otherwise, or on failure, the dispatch thread is
/// nudged and does it. A round that is running may have looked at the log
/// before this record was published, hence the nudge rather than nothing.
/// `own` are the records the caller just appended, if any: the round takes
/// them from their drafts instead of reading them back (see [`own`]).
pub(crate) fn dispatch_inline(inner: &Inner, own: Option<&OwnRecords<'_>>) {
    if inner.dispatch.failed.lock().is_some() {
        return;
    }
    match inner.dispatch.round.try_lock() {
        Some(round) => {
            if let Err(e) = dispatch_round(inner, round, own) {
                dispatch_failed(inner, &e);
            }
        }
        None => inner.dispatch.nudge(),
    }
}

/// A dispatch round failed. A full disk (no room for a new consume-queue
/// or index file) is retried by the dispatch thread, which wakes at least
/// every [`IDLE_WAIT`]: the records are safe in the log, and a retry is
/// idempotent (units are compared, index keys of a record put twice are
/// folded by lookups). Anything else stops dispatch for good: the queues
/// can no longer be trusted to follow the log.
fn dispatch_failed(inner: &Inner, e: &Error) {
    if matches!(e, Error::DiskFull { .. }) {
        return;
    }
    *inner.dispatch.failed.lock() = Some(format!("dispatch failed: {e}"));
    inner.dispatch.arrivals.wake_all();
}

/// Dispatches every readable record not dispatched yet; returns how many.
pub(crate) fn dispatch_available(inner: &Inner) -> Result<u64> {
    dispatch_round(inner, inner.dispatch.round.lock(), None)
}

fn dispatch_round(
    inner: &Inner,
    mut memo: parking_lot::MutexGuard<'_, QueueMemo>,
    own: Option<&OwnRecords<'_>>,
) -> Result<u64> {
    let memo = &mut *memo;
    let mut n = match own {
        Some(own) => own::dispatch_own(inner, memo, own)?,
        None => 0,
    };
    let from = inner.dispatch.dispatched.load(Ordering::Acquire);
    // A sender that dispatched up to the log's end has nothing to read
    // (under Async flush, which `own` implies, the end is readable). Saves
    // setting up a read per single send.
    if own.is_some() && from >= inner.log.max_offset().get() {
        if n > 0 {
            inner.dispatch.arrivals.wake_all();
        }
        return Ok(n);
    }
    let mut cache = crate::commitlog::ReadCache::default();
    let pos = inner.log.visit_appended(&mut cache, PhysicalOffset(from), |offset, view, parts| {
        apply_next(inner, memo, &Entry::of_view(offset, view, parts))?;
        n += 1;
        Ok(ControlFlow::Continue(()))
    })?;
    // Blank ends of segments are skipped by the walk: move past them.
    if pos > inner.dispatch.dispatched.load(Ordering::Acquire) {
        inner.dispatch.dispatched.store(pos, Ordering::Release);
    }
    if n > 0 {
        inner.dispatch.arrivals.wake_all();
    }
    Ok(n)
}

/// Applies `e`, the record at the dispatched offset, and moves the
/// dispatched offset past it. A gap in its queue fails the round.
fn apply_next(inner: &Inner, memo: &mut QueueMemo, e: &Entry<'_>) -> Result<()> {
    match apply(inner, memo, e)? {
        Applied::Ok | Applied::Skipped => {}
        Applied::Gap { topic, queue_id } => {
            return Err(Error::InvalidArgument(format!(
                "dispatch found a gap in consume queue {topic}/{queue_id} at record {}",
                e.offset
            )));
        }
    }
    inner.dispatch.dispatched.store(e.end(), Ordering::Release);
    Ok(())
}

/// What dispatch needs of one record: read back from the log
/// ([`Entry::of`]), or, for records the dispatching thread just appended,
/// taken from what it wrote ([`OwnRecords`]). Both give the same values for
/// the same record.
pub(crate) struct Entry<'a> {
    /// Physical offset of the record.
    pub(crate) offset: u64,
    /// Its encoded size.
    pub(crate) size: u32,
    pub(crate) topic: &'a str,
    pub(crate) queue_id: u32,
    pub(crate) queue_offset: u64,
    pub(crate) store_timestamp: u64,
    /// The encoded properties blob, as stored.
    pub(crate) properties: &'a [u8],
    /// What [`scan_properties`] finds in `properties`, when the caller
    /// already knows it (a sender's own message); `None`: scan.
    pub(crate) found: Option<Found<'a>>,
}

impl<'a> Entry<'a> {
    /// The fields of a record read back from the log.
    pub(crate) fn of(rec: &'a Record) -> Self {
        Self::of_view(rec.offset().get(), rec.view(), rec.parts())
    }

    /// The fields of a record read back in place (see
    /// [`crate::commitlog::CommitLog::visit_appended`]).
    pub(crate) fn of_view(offset: u64, view: RecordView<'a>, parts: &Parts) -> Self {
        let bytes = view.bytes;
        Self {
            offset,
            // A record's length is bounded by the format (u32 total size).
            size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            // Validated as UTF-8 when the record was read.
            topic: std::str::from_utf8(&bytes[parts.topic.0..parts.topic.1]).unwrap_or_default(),
            queue_id: view.queue_id(),
            queue_offset: view.queue_offset(),
            store_timestamp: view.store_timestamp(),
            properties: &bytes[parts.properties.0..parts.properties.1],
            found: None,
        }
    }

    /// Offset one past the record.
    pub(crate) fn end(&self) -> u64 {
        self.offset + u64::from(self.size)
    }
}

enum Applied {
    Ok,
    /// The record's topic no longer exists.
    Skipped,
    /// The queue lacks units before this record's position.
    Gap {
        topic: String,
        queue_id: u32,
    },
}

fn apply(inner: &Inner, memo: &mut QueueMemo, rec: &Entry<'_>) -> Result<Applied> {
    let topic = rec.topic;
    // Records of deleted topics, and of earlier incarnations of a topic that
    // was deleted and created again, belong to no live queue (and create
    // none).
    let generation = (inner.topics.removals(), inner.queues.removals());
    let live = memo.get_or_lookup(topic, rec.queue_id, generation, || match inner.topics.since(topic) {
        Some(since) if rec.offset >= since => Ok(Some((since, inner.queues.get_or_create(topic, rec.queue_id)?))),
        _ => Ok(None),
    })?;
    let q = match live {
        Some((since, q)) if rec.offset >= since => q,
        _ => return Ok(Applied::Skipped),
    };
    // One pass, without allocating: dispatch runs once per message. A
    // sender's own message comes with what the pass would find.
    let found = match rec.found {
        Some(found) => found,
        None => scan_properties(rec.properties).ok_or_else(|| corrupt_record(inner, rec.offset, "properties"))?,
    };
    let tag = found.unit_tag(topic);
    // A record the delivery thread wrote: its source entry is delivered.
    if let Some(source) = found.delay_source {
        inner.schedule.note_dispatched(source);
    }
    index_record(inner, rec, topic, &found)?;
    let unit = CqUnit { physical_offset: PhysicalOffset(rec.offset), size: rec.size, tag_hash: tag };
    let at = QueueOffset(rec.queue_offset);
    if at.0 > q.max_offset().0 {
        return Ok(Applied::Gap { topic: topic.to_string(), queue_id: rec.queue_id });
    }
    if at.0 < q.min_offset().0 {
        // Nothing removes a queue's head yet (there is no log retention),
        // and older incarnations of the topic were skipped above: a record
        // below the queue's start means its first file was lost. Rebuild.
        return Ok(Applied::Gap { topic: topic.to_string(), queue_id: rec.queue_id });
    }
    match q.put(at, unit) {
        Ok(()) => {
            // A new head of its level may be due before the delivery
            // thread's next planned wake-up; entries behind a head never
            // are (each level is one delay), so they need no wake-up.
            if topic == SCHEDULE_TOPIC {
                inner.schedule.dispatched_entry(rec.queue_id, at.0);
            }
            Ok(Applied::Ok)
        }
        // A different unit at this position: the queue does not match the
        // log, so it must be rebuilt.
        Err(Error::InvalidArgument(_)) => Ok(Applied::Gap { topic: topic.to_string(), queue_id: rec.queue_id }),
        Err(e) => Err(e),
    }
}

/// Indexes a record's keys and unique id as `<topic>#<key>` (records
/// waiting in the schedule topic are indexed once delivered).
fn index_record(inner: &Inner, rec: &Entry<'_>, topic: &str, found: &Found<'_>) -> Result<()> {
    if topic == SCHEDULE_TOPIC || !found.has_index_keys() {
        return Ok(());
    }
    // The keys wait for the dispatch thread, which writes them on the
    // other core (see `index::deferred`); it is woken once per batch.
    if inner.index.defer_in_topic(topic, found.index_keys(topic), rec.offset, rec.store_timestamp)? {
        inner.dispatch.nudge_index();
    }
    Ok(())
}

fn corrupt_record(inner: &Inner, offset: u64, field: &'static str) -> Error {
    Error::Corruption {
        path: inner.root.join(crate::commitlog::COMMITLOG_DIR),
        offset,
        kind: CorruptionKind::InvalidField { field },
    }
}

/// Brings the consume queues in line with the recovered commit log and
/// dispatches everything readable. Runs at open, before any write.
pub(crate) fn recover(inner: &Inner) -> Result<()> {
    // Queue files and directories re-dispatching creates are made durable
    // by the `flush_all` that precedes the dispatch checkpoint, not one by
    // one (rebuilding 10,000 queues paid several fsyncs per queue).
    inner.queues.set_creation_sync(CreationSync::AtFlush);
    let result = recover_queues(inner);
    inner.queues.set_creation_sync(CreationSync::Immediate);
    result
}

fn recover_queues(inner: &Inner) -> Result<()> {
    let end = inner.log.max_offset();
    inner.queues.truncate_physical_all(end)?;
    let checkpoint = read_checkpoint(inner)?;
    // Without its progress file, delayed delivery learns what was delivered
    // from every copy in the log: dispatch all of it again.
    let rescan = inner.schedule.load(inner)?;
    let mut from = inner.log.min_offset().get();
    if let Some((dispatched, ends)) = &checkpoint {
        if !rescan {
            from = (*dispatched).clamp(from, end.get());
        }
        // The index resumes at its newest record (everything after it is
        // indexed again; without index files, the whole log is).
        from = from.min(inner.index.resume_at().unwrap_or(0).max(inner.log.min_offset().get()));
        // A queue shorter than its checkpointed end, or starting later than
        // it did (a lost first file: nothing removes a queue's head yet),
        // lost units: rebuild it.
        for ((topic, queue_id), (qstart, qend)) in ends {
            let (start, have) =
                inner.queues.queue(topic, *queue_id).map_or((0, 0), |q| (q.min_offset().0, q.max_offset().0));
            if (have < *qend || start > *qstart) && inner.topics.get(topic).is_some() {
                inner.queues.remove_queue(topic, *queue_id)?;
                from = inner.log.min_offset().get();
            } else if let Some(q) = inner.queues.queue(topic, *queue_id) {
                // The checkpoint was written after the queues were flushed:
                // its units are durable and need no sync at the end of
                // recovery. (A queue removed and rebuilt below is a new
                // object, which starts unflushed.)
                q.note_durable(*qend);
            }
        }
    }
    // The last unit of every queue must point at its record (or below the
    // first stored segment: retention removed it). Not below the first
    // record: a unit a crash left garbled can point into the first
    // segment's header, and was then kept as if retention had removed its
    // record, leaving an empty queue numbered past its lost message.
    let removed_below = inner.log.removed_below().get();
    for topic in inner.queues.topics() {
        for (queue_id, q) in inner.queues.queues_of(&topic) {
            if let Some((at, unit)) = q.last() {
                let ok = unit.physical_offset.get() < removed_below
                    || inner
                        .log
                        .read(unit.physical_offset)
                        .is_ok_and(|r| r.is_at(&topic, queue_id, at.0) && r.size() == unit.size);
                if !ok {
                    inner.queues.remove_queue(&topic, queue_id)?;
                    from = inner.log.min_offset().get();
                }
            }
        }
    }
    // Re-dispatch; each gap found rebuilds that queue from the start of the
    // log. Each queue is rebuilt at most once, so this ends.
    let mut rebuilt: Vec<(String, u32)> = Vec::new();
    loop {
        inner.dispatch.dispatched.store(from, Ordering::Release);
        match dispatch_recovering(inner)? {
            None => break,
            Some(key) => {
                if rebuilt.contains(&key) {
                    return Err(Error::Corruption {
                        path: inner.root.join("consumequeue").join(&key.0).join(key.1.to_string()),
                        offset: 0,
                        kind: CorruptionKind::MidLog,
                    });
                }
                inner.queues.remove_queue(&key.0, key.1)?;
                rebuilt.push(key);
                from = inner.log.min_offset().get();
            }
        }
    }
    // A rebuilt queue none of whose records survived retention keeps its
    // numbering: it resumes at its checkpointed end, never back at 0.
    if let Some((_, ends)) = &checkpoint {
        for ((topic, queue_id), (_, qend)) in ends {
            if *qend > 0 && began_before_log_start(inner, topic) {
                let q = inner.queues.get_or_create(topic, *queue_id)?;
                if q.has_no_files() {
                    q.start_at(*qend);
                }
            }
        }
    }
    // Numbering resumes after each queue's last unit.
    let mut next = inner.next_queue_offset.lock();
    for topic in inner.queues.topics() {
        for (queue_id, q) in inner.queues.queues_of(&topic) {
            next.set(&topic, queue_id, q.max_offset().0);
        }
    }
    drop(next);
    inner.schedule.clamp(inner);
    inner.queues.flush_all()?;
    write_checkpoint(inner)
}

/// A queue being rebuilt (no files, nothing put yet) whose topic began
/// before the log's first stored record starts at `rec`'s position: this is
/// the first record of it that retention left (recovery re-dispatches from
/// the log's start, in log order, which is queue order), and the records
/// before it are gone with their segments. Returns whether it did.
fn start_after_retention(inner: &Inner, rec: &Entry<'_>) -> bool {
    began_before_log_start(inner, rec.topic)
        && inner.queues.queue(rec.topic, rec.queue_id).is_some_and(|q| q.has_no_files() && q.start_at(rec.queue_offset))
}

/// Whether `topic`'s incarnation began below the log's first stored
/// segment: only then may retention have removed records of its queues,
/// so only then may a rebuilt queue start past 0.
fn began_before_log_start(inner: &Inner, topic: &str) -> bool {
    // A topic created on a new log has `since` inside the first segment's
    // header, below its first record, though nothing of it was removed.
    let removed_below = inner.log.removed_below().get();
    inner.topics.since(topic).is_some_and(|since| since < removed_below)
}

/// Like [`dispatch_available`], but reports the first gap instead of
/// failing on it.
fn dispatch_recovering(inner: &Inner) -> Result<Option<(String, u32)>> {
    let from = inner.dispatch.dispatched.load(Ordering::Acquire);
    let mut it = inner.log.iter(PhysicalOffset(from));
    let mut memo = QueueMemo::default();
    for rec in &mut it {
        let rec = rec?;
        let e = Entry::of(&rec);
        if let Applied::Gap { topic, queue_id } = apply(inner, &mut memo, &e)? {
            if !start_after_retention(inner, &e) || !matches!(apply(inner, &mut memo, &e)?, Applied::Ok) {
                return Ok(Some((topic, queue_id)));
            }
        }
        inner.dispatch.dispatched.store(rec.end().get(), Ordering::Release);
    }
    inner.dispatch.dispatched.fetch_max(it.position().get(), Ordering::AcqRel);
    Ok(None)
}

/// The error for the unit at `at` of queue `topic`/`queue_id` that does not
/// lead to its record (`kind` says how): readers that get it rebuild the
/// queue with [`rebuild_queue`].
pub(crate) fn damaged_unit(inner: &Inner, topic: &str, queue_id: u32, at: u64, kind: CorruptionKind) -> Error {
    Error::Corruption { path: inner.root.join("consumequeue").join(topic).join(queue_id.to_string()), offset: at, kind }
}

/// [`damaged_unit`] for a unit that leads where no record can be (into a
/// segment header, at a segment's blank end, below the retention floor
/// past the queue's live head).
pub(crate) fn unit_leads_nowhere(inner: &Inner, topic: &str, queue_id: u32, at: u64) -> Error {
    damaged_unit(inner, topic, queue_id, at, CorruptionKind::InvalidField { field: "unit's physical offset" })
}

/// Rebuilds one queue from the commit log: its files are deleted and every
/// record of it below the dispatched offset is put again, in log order.
/// Runs under the dispatch round lock, so the dispatcher (which continues
/// from the dispatched offset) never interleaves with it. Used when a read
/// finds a unit that does not lead to its record (consume-queue units
/// carry no checksum, so damage inside a queue file is only found then).
pub(crate) fn rebuild_queue(inner: &Inner, topic: &str, queue_id: u32) -> Result<()> {
    let _round = inner.dispatch.round.lock();
    let Some(since) = inner.topics.since(topic) else {
        return Ok(());
    };
    // Collect first: if the log itself is damaged on the way (primary data),
    // the queue is left as it was and the damage is reported.
    let upto = inner.dispatch.dispatched.load(Ordering::Acquire);
    let mut units = Vec::new();
    for rec in inner.log.iter(PhysicalOffset(since)) {
        let rec = rec?;
        if rec.offset().get() >= upto {
            break;
        }
        if rec.topic() != topic || rec.queue_id() != queue_id {
            continue;
        }
        let Some(found) = scan_properties(rec.properties_slice()) else {
            return Err(corrupt_record(inner, rec.offset().get(), "properties"));
        };
        let tag = found.unit_tag(topic);
        units.push((rec.queue_offset(), CqUnit { physical_offset: rec.offset(), size: rec.size(), tag_hash: tag }));
    }
    inner.queues.remove_queue(topic, queue_id)?;
    let q = inner.queues.get_or_create(topic, queue_id)?;
    // After retention the first surviving unit may not be at 0.
    if let Some((first, _)) = units.first() {
        if *first > 0 && began_before_log_start(inner, topic) {
            q.start_at(*first);
        }
    }
    for (at, unit) in units {
        q.put(QueueOffset(at), unit)?;
    }
    q.flush()?;
    Ok(())
}

/// Writes the delay progress, then the dispatch checkpoint. Callers flush
/// the queues first.
///
/// Order matters: the dispatched offset is read first, so the progress
/// written next already counts every delivered copy below it; recovery
/// re-dispatches from that offset and so sees every copy the progress does
/// not count.
pub(crate) fn write_checkpoint(inner: &Inner) -> Result<()> {
    write_checkpoint_with(inner, &HashMap::new())
}

/// [`write_checkpoint`], recording `starts` as the first offsets of those
/// queues: retention writes the starts its file removal will leave before
/// removing anything, so a crash in between never looks like a lost head
/// file (which would rebuild the queue).
pub(crate) fn write_checkpoint_with(inner: &Inner, starts: &HashMap<(String, u32), u64>) -> Result<()> {
    let dispatched = inner.dispatch.dispatched.load(Ordering::Acquire);
    inner.index.flush()?;
    inner.schedule.persist(inner)?;
    let mut payload = Vec::new();
    payload.extend_from_slice(&dispatched.to_be_bytes());
    let mut entries = Vec::new();
    for topic in inner.queues.topics() {
        for (queue_id, q) in inner.queues.queues_of(&topic) {
            let start = starts.get(&(topic.clone(), queue_id)).copied().unwrap_or(q.min_offset().0);
            entries.push((topic.clone(), queue_id, start, q.max_offset().0));
        }
    }
    let count = u32::try_from(entries.len()).map_err(|_| Error::InvalidArgument("too many queues".into()))?;
    payload.extend_from_slice(&count.to_be_bytes());
    for (topic, queue_id, start, end) in entries {
        let len = u16::try_from(topic.len()).map_err(|_| Error::InvalidArgument("topic name too long".into()))?;
        payload.extend_from_slice(&len.to_be_bytes());
        payload.extend_from_slice(topic.as_bytes());
        payload.extend_from_slice(&queue_id.to_be_bytes());
        payload.extend_from_slice(&start.to_be_bytes());
        payload.extend_from_slice(&end.to_be_bytes());
    }
    let storage = inner.opts.commit_log.storage.as_ref();
    crate::metafile::write_atomic(
        storage,
        &inner.root.join("config"),
        CHECKPOINT_NAME,
        CHECKPOINT_MAGIC,
        CHECKPOINT_VERSION,
        &payload,
    )
}

/// Per queue: its first offset and its end when the checkpoint was written.
pub(crate) type QueueEnds = HashMap<(String, u32), (u64, u64)>;

/// The dispatch checkpoint, or `None` when it is missing or damaged: it is
/// derived data, and without it recovery re-dispatches the whole log.
fn read_checkpoint(inner: &Inner) -> Result<Option<(u64, QueueEnds)>> {
    match parse_checkpoint(inner.opts.commit_log.storage.as_ref(), &inner.root) {
        Err(Error::Corruption { .. }) => Ok(None),
        other => other,
    }
}

/// Reads and decodes `<root>/config/dispatch` (read-only): `None` when it
/// is missing, [`Error::Corruption`] at the damaged byte's file offset
/// when it is damaged.
pub(crate) fn parse_checkpoint(storage: &dyn Storage, root: &Path) -> Result<Option<(u64, QueueEnds)>> {
    let dir = root.join("config");
    let Some((version, payload)) =
        crate::metafile::read(storage, &dir, CHECKPOINT_NAME, CHECKPOINT_MAGIC, CHECKPOINT_MAX_PAYLOAD)?
    else {
        return Ok(None);
    };
    let path = dir.join(CHECKPOINT_NAME);
    if version != CHECKPOINT_VERSION {
        return Err(Error::Corruption {
            path,
            offset: crate::metafile::VERSION_OFFSET as u64,
            kind: CorruptionKind::UnsupportedVersion { found: u32::from(version) },
        });
    }
    // Offsets in errors are file offsets: payload position + header.
    let at = |r: &Reader<'_>| (crate::metafile::HEADER_LEN + r.at) as u64;
    let bad = |r: &Reader<'_>| Error::Corruption { path: path.clone(), offset: at(r), kind: CorruptionKind::Truncated };
    let mut r = Reader { b: &payload, at: 0 };
    let dispatched = r.u64().ok_or_else(|| bad(&r))?;
    let count = r.u32().ok_or_else(|| bad(&r))?;
    let mut ends = HashMap::new();
    for _ in 0..count {
        let len = r.u16().ok_or_else(|| bad(&r))?;
        let name = r.take(usize::from(len)).ok_or_else(|| bad(&r))?;
        let topic = std::str::from_utf8(name).map_err(|_| Error::Corruption {
            path: path.clone(),
            offset: at(&r),
            kind: CorruptionKind::InvalidField { field: "topic" },
        })?;
        let queue_id = r.u32().ok_or_else(|| bad(&r))?;
        let start = r.u64().ok_or_else(|| bad(&r))?;
        let end = r.u64().ok_or_else(|| bad(&r))?;
        ends.insert((topic.to_string(), queue_id), (start, end));
    }
    Ok(Some((dispatched, ends)))
}

/// Bounds-checked big-endian reader over a payload.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).and_then(|s| s.try_into().ok()).map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|s| s.try_into().ok()).map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes)
    }
}

/// The `mqstore:dispatch` thread: follows the log, and on the offset
/// persist interval flushes the queues, writes the dispatch checkpoint and
/// the consumer offsets.
#[derive(Debug)]
pub(crate) struct Threads {
    dispatcher: JoinHandle<()>,
    delay: Option<JoinHandle<()>>,
}

/// Marks dispatch failed if the thread unwinds, and wakes readers.
struct PanicGuard<'a>(&'a Inner);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let name = std::thread::current().name().unwrap_or("a background thread").to_string();
            *self.0.dispatch.failed.lock() = Some(format!("{name} panicked"));
            self.0.dispatch.arrivals.wake_all();
        }
    }
}

impl Threads {
    pub(crate) fn start(inner: &Arc<Inner>) -> Result<Self> {
        let i = inner.clone();
        let dispatcher = std::thread::Builder::new()
            .name("mqstore:dispatch".into())
            .spawn(move || {
                let _guard = PanicGuard(&i);
                run(&i);
            })
            .map_err(|e| Error::io("spawn thread", &inner.root, e))?;
        // A slave delivers nothing itself: the master's deliveries arrive
        // as records.
        if inner.opts.replication.role == crate::replication::Role::Slave {
            return Ok(Self { dispatcher, delay: None });
        }
        let i = inner.clone();
        let delay = std::thread::Builder::new()
            .name("mqstore:delay".into())
            .spawn(move || {
                let _guard = PanicGuard(&i);
                crate::retry::schedule::run(&i);
            })
            .map_err(|e| Error::io("spawn thread", &inner.root, e));
        let delay = match delay {
            Ok(h) => Some(h),
            Err(e) => {
                let _ = Self { dispatcher, delay: None }.stop(inner);
                return Err(e);
            }
        };
        Ok(Self { dispatcher, delay })
    }

    /// Stops and joins the thread.
    pub(crate) fn stop(self, inner: &Inner) -> Result<()> {
        {
            let mut st = inner.dispatch.state.lock();
            st.stop = true;
            inner.dispatch.cv.notify_all();
        }
        inner.schedule.stop();
        let delay_panicked = self.delay.is_some_and(|h| h.join().is_err());
        if self.dispatcher.join().is_err() {
            return Err(Error::Fenced { reason: "the dispatch thread panicked".into() });
        }
        if delay_panicked {
            return Err(Error::Fenced { reason: "the delay thread panicked".into() });
        }
        Ok(())
    }
}

fn run(inner: &Inner) {
    let interval = inner.opts.offset_persist_interval;
    let retention_every = super::retention::interval(inner);
    let mut last_persist = Instant::now();
    let mut last_retention = Instant::now();
    loop {
        let only_index = {
            let mut st = inner.dispatch.state.lock();
            if !st.pending && !st.index && !st.stop {
                let wait = IDLE_WAIT
                    .min(interval.saturating_sub(last_persist.elapsed()))
                    .min(retention_every.saturating_sub(last_retention.elapsed()));
                inner.dispatch.cv.wait_for(&mut st, wait.max(Duration::from_millis(1)));
            }
            if st.stop {
                return;
            }
            // Woken only for index keys: a dispatch round now would contend
            // for the round lock with the sender that deferred them.
            let only_index = st.index && !st.pending;
            st.pending = false;
            st.index = false;
            only_index
        };
        if inner.dispatch.failed.lock().is_some() {
            continue;
        }
        if !only_index {
            if let Err(e) = dispatch_available(inner) {
                dispatch_failed(inner, &e);
                continue;
            }
        }
        if let Err(e) = inner.index.drain() {
            dispatch_failed(inner, &e);
            continue;
        }
        if last_persist.elapsed() >= interval {
            last_persist = Instant::now();
            // Failures are retried next interval (close reports them); a
            // failed sync fences the store.
            let _round = inner.retention.lock.lock();
            let _ = inner
                .queues
                .flush_all()
                .and_then(|()| write_checkpoint(inner))
                .inspect_err(|e| inner.log.fence_if_sync_failed(e, "consume queues and dispatch checkpoint"));
            drop(_round);
            let _ = inner.offsets.persist().inspect_err(|e| inner.log.fence_if_sync_failed(e, "consumer offsets"));
            // Mapped pages of older units and sealed index files leave the
            // resident set (the commit log does the same on its flush
            // thread), so memory does not grow with the data stored.
            inner.queues.release_resident();
            inner.index.release_resident();
        }
        if last_retention.elapsed() >= retention_every && !inner.log.is_fenced() {
            last_retention = Instant::now();
            // Errors are retried next round; a failed sync fenced the store
            // inside the round.
            let _ = super::retention::run(inner, super::Retention::Normal);
        }
    }
}
