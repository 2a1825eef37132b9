//! Delayed delivery: the schedule topic, the `mqstore:delay` thread that
//! moves due messages to their real topic, and its persisted progress.
//!
//! A delayed message (a delay level, a delivery time, or a retry sent back
//! by a consumer) is stored at once, durably, in [`SCHEDULE_TOPIC`], queue
//! `level - 1`, with its real topic and queue in properties and its due
//! time both in a property and in its consume-queue unit's tag hash (as
//! RocketMQ does). Each queue holds one delay, so its entries come due in
//! queue order and the thread only ever looks at each queue's head.
//!
//! Delivery times beyond the levels hop: the message waits in the longest
//! level not past its time, and is then written again (to the level that
//! fits what is left) until the time is reached. No copy waits longer than
//! the longest level, so a far-off delivery never depends on the segment
//! it was first written to (log retention can never take it).
//!
//! Exactly-once hand-over across crashes: every record the thread writes
//! carries [`DELAY_SOURCE`] (`<level>:<queue offset>` of the entry it came
//! from). Progress per level is persisted only after the log was flushed
//! past every copy written so far, and recovery re-dispatches every record
//! after the dispatch checkpoint (written after the progress), raising the
//! progress past each source it sees. So after any crash an entry counts
//! as delivered exactly when its copy survived.
//!
//! Timing: a level's head is due at its due time, but never later than its
//! level's delay after the thread first saw it: a wall clock stepped back
//! does not hold messages back by the size of the step. A clock stepped
//! forward delivers what is then due. Nothing is delivered before its due
//! time as the clock reads it, except after such a step back.

use super::delay::MAX_DELAY_LEVELS;
use super::{progress, DelayLevels, TimerWheel};
use crate::commitlog::{Durability, RecordDraft};
use crate::error::{Error, Result};
use crate::message::properties::{
    for_each_text_pair, rewrite, DELAY, DELAY_DUE_MS, DELAY_SOURCE, REAL_QID, REAL_TOPIC, TIMER_DELIVER_MS,
};
use crate::offset::QueueOffset;
use crate::store::dispatch::due_tag;
use crate::store::Inner;
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The internal topic delayed messages wait in, one queue per level
/// (RocketMQ's name). Refused as a user topic.
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";

/// Entries moved per level per round (one commit-log write).
const BATCH: usize = 64;
/// Resolution of the in-memory wheel.
const WHEEL_TICK_MS: u64 = 10;

/// Counters of the delivery thread, for statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleStats {
    /// Messages written to their real topic (or to their next hop).
    pub delivered: u64,
    /// Entries given up: their real topic no longer exists or is not
    /// writable, their record was removed or is damaged.
    pub dropped: u64,
    /// Per level (index 0 = level 1): entries waiting.
    pub pending: Vec<u64>,
    /// The last error a delivery round hit (retried on the next round).
    pub last_error: Option<String>,
}

/// Delivery progress shared by the thread, the dispatcher and recovery.
#[derive(Debug)]
pub(crate) struct Scheduler {
    /// Per level: every entry below has been delivered (its copy written)
    /// or dropped. Raised by the thread after each write and by dispatch
    /// for every record carrying [`DELAY_SOURCE`]; never lowered at run
    /// time.
    confirmed: Vec<AtomicU64>,
    /// What `config/delay` holds (`None` until written by this process).
    persisted: Mutex<Option<Vec<u64>>>,
    wake: Mutex<Wake>,
    cv: Condvar,
    delivered: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct Wake {
    pending: bool,
    stop: bool,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self {
            confirmed: (0..MAX_DELAY_LEVELS).map(|_| AtomicU64::new(0)).collect(),
            persisted: Mutex::new(None),
            wake: Mutex::new(Wake::default()),
            cv: Condvar::new(),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Where a message waits: its level and due time, or `None` to deliver it
/// now. A delay level waits that level; a delivery time waits in the
/// longest level not past it (level 1, due exactly then, when less than a
/// level is left).
pub(crate) fn route(
    levels: &DelayLevels,
    now: u64,
    level: Option<u8>,
    deliver_at: Option<u64>,
) -> Option<(usize, u64)> {
    if let Some(l) = level {
        let d = levels.delay(usize::from(l))?;
        return Some((usize::from(l), now.saturating_add(ms(d))));
    }
    let target = deliver_at?;
    if target <= now {
        return None;
    }
    Some(hop(levels, now, target))
}

fn hop(levels: &DelayLevels, now: u64, target: u64) -> (usize, u64) {
    let left = target - now;
    let best = (1..=levels.len()).rev().find(|&l| levels.delay(l).is_some_and(|d| ms(d) <= left));
    match best {
        Some(l) => (l, now.saturating_add(levels.delay(l).map_or(0, ms))),
        None => (1, target),
    }
}

/// The `<level>:<offset>` in a [`DELAY_SOURCE`] value.
fn parse_source(v: &str) -> Option<(usize, u64)> {
    let (l, o) = v.split_once(':')?;
    let l: usize = l.parse().ok()?;
    (1..=MAX_DELAY_LEVELS).contains(&l).then_some(())?;
    Some((l, o.parse().ok()?))
}

impl Scheduler {
    /// Dispatch saw a record whose [`DELAY_SOURCE`] is `source`: the
    /// delivery thread wrote it, so its source entry is delivered.
    pub(crate) fn note_dispatched(&self, source: &str) {
        if let Some((l, at)) = parse_source(source) {
            self.confirmed[l - 1].fetch_max(at.saturating_add(1), Ordering::AcqRel);
        }
    }

    /// Dispatch put entry `at` into schedule queue `queue_id`: wakes the
    /// thread if it is that level's next entry (a new head).
    pub(crate) fn dispatched_entry(&self, queue_id: u32, at: u64) {
        let head = self.confirmed.get(queue_id as usize).map(|c| c.load(Ordering::Acquire));
        if head.is_some_and(|h| at <= h) {
            self.nudge();
        }
    }

    /// New entries may be due sooner than the thread planned.
    pub(crate) fn nudge(&self) {
        let mut w = self.wake.lock();
        if !w.pending {
            w.pending = true;
            self.cv.notify_one();
        }
    }

    pub(crate) fn stop(&self) {
        self.wake.lock().stop = true;
        self.cv.notify_all();
    }

    /// Loads `config/delay` before recovery dispatches. Returns true when
    /// it is missing or damaged: recovery must then see every record (the
    /// whole log is re-dispatched), so the progress is rebuilt from the
    /// [`DELAY_SOURCE`] of every copy.
    pub(crate) fn load(&self, inner: &Inner) -> Result<bool> {
        let storage = inner.opts.commit_log.storage.as_ref();
        match progress::read(storage, &inner.root) {
            Ok(Some(next)) => {
                for (c, n) in self.confirmed.iter().zip(next) {
                    c.store(n, Ordering::Release);
                }
                Ok(false)
            }
            Ok(None) | Err(Error::Corruption { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// After recovery: keeps each level's progress inside its queue.
    pub(crate) fn clamp(&self, inner: &Inner) {
        for (qid, q) in inner.queues.queues_of(SCHEDULE_TOPIC) {
            if let Some(c) = self.confirmed.get(qid as usize) {
                let v = c.load(Ordering::Acquire).clamp(q.min_offset().0, q.max_offset().0);
                c.store(v, Ordering::Release);
            }
        }
    }

    fn levels_in_use(inner: &Inner) -> usize {
        let queues = inner.queues.queues_of(SCHEDULE_TOPIC).iter().map(|(q, _)| *q as usize + 1).max().unwrap_or(0);
        inner.opts.delay_levels.len().max(queues).min(MAX_DELAY_LEVELS)
    }

    /// Writes the progress if it moved, after flushing the log so every
    /// copy it counts is durable. Runs before the dispatch checkpoint.
    pub(crate) fn persist(&self, inner: &Inner) -> Result<()> {
        let n = Self::levels_in_use(inner);
        let snapshot: Vec<u64> = self.confirmed[..n].iter().map(|c| c.load(Ordering::Acquire)).collect();
        if self.persisted.lock().as_ref() == Some(&snapshot) {
            return Ok(());
        }
        inner.log.flush()?;
        progress::write(inner.opts.commit_log.storage.as_ref(), &inner.root, &snapshot)?;
        *self.persisted.lock() = Some(snapshot);
        Ok(())
    }

    /// Per level in use: (schedule queue id, first undelivered offset).
    pub(crate) fn progress(&self, inner: &Inner) -> Vec<(u32, u64)> {
        let n = Self::levels_in_use(inner);
        (0..n).map(|l| (l as u32, self.confirmed[l].load(Ordering::Acquire))).collect()
    }

    /// Counters and per-level backlog.
    pub(crate) fn stats(&self, inner: &Inner) -> ScheduleStats {
        let n = Self::levels_in_use(inner);
        let pending = (0..n)
            .map(|l| {
                let end = inner.queues.queue(SCHEDULE_TOPIC, l as u32).map_or(0, |q| q.max_offset().0);
                end.saturating_sub(self.confirmed[l].load(Ordering::Acquire))
            })
            .collect();
        ScheduleStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            pending,
            last_error: self.last_error.lock().clone(),
        }
    }
}

/// One record the thread will write.
struct Copy {
    topic: String,
    queue_id: u32,
    props: Vec<u8>,
    body: Bytes,
    born: u64,
    reconsume: u32,
    flag: u32,
    sysflag: u32,
}

/// The state only the thread touches.
struct Run {
    /// Per level: the next entry to look at.
    next: Vec<u64>,
    /// Per level: the head's deadline while it sits in the wheel.
    head: Vec<Option<u64>>,
    wheel: TimerWheel<usize>,
    /// The (level, entry) whose unreadable record last made the thread
    /// rebuild its queue: if it is still unreadable after that, the record
    /// itself is damaged and the entry is dropped (never a rebuild loop).
    rebuilt_for: Option<(usize, u64)>,
}

/// Body of the `mqstore:delay` thread; returns when stopped.
pub(crate) fn run(inner: &Inner) {
    let sched = &inner.schedule;
    let clock = inner.opts.commit_log.clock.clone();
    let poll = inner.opts.delay_poll_interval;
    let mut r = Run {
        next: sched.confirmed.iter().map(|c| c.load(Ordering::Acquire)).collect(),
        head: vec![None; MAX_DELAY_LEVELS],
        wheel: TimerWheel::new(WHEEL_TICK_MS, clock.now_ms()),
        rebuilt_for: None,
    };
    loop {
        {
            let mut w = sched.wake.lock();
            if w.stop {
                return;
            }
            w.pending = false;
        }
        let now = clock.now_ms();
        load_heads(inner, &mut r, now);
        let mut worked = false;
        for (due, l) in r.wheel.advance(now) {
            // A head re-planned earlier (clock stepped back) leaves its old
            // deadline in the wheel: skip those.
            if r.head[l - 1] != Some(due) {
                continue;
            }
            r.head[l - 1] = None;
            match deliver_level(inner, &mut r, l, now) {
                Ok(moved) => worked |= moved > 0,
                Err(e) => *sched.last_error.lock() = Some(format!("level {l}: {e}")),
            }
        }
        if worked {
            continue;
        }
        let wait = match r.wheel.next_due() {
            Some(d) => poll.min(Duration::from_millis(d.saturating_sub(now).max(1))),
            None => poll,
        };
        let mut w = sched.wake.lock();
        if !w.pending && !w.stop {
            sched.cv.wait_for(&mut w, wait);
        }
    }
}

/// Puts each level's head into the wheel (if not there yet), and pulls a
/// head's deadline in to `now + delay` when the clock stepped back.
fn load_heads(inner: &Inner, r: &mut Run, now: u64) {
    for (qid, q) in inner.queues.queues_of(SCHEDULE_TOPIC) {
        let l = qid as usize + 1;
        if l > MAX_DELAY_LEVELS {
            continue;
        }
        // A level no longer configured keeps draining, bounded by the
        // longest configured delay.
        let levels = &inner.opts.delay_levels;
        let delay = levels.delay(l).or_else(|| levels.delay(levels.len())).map_or(0, ms);
        let latest = now.saturating_add(delay);
        let next = r.next[l - 1].max(q.min_offset().0);
        r.next[l - 1] = next;
        match r.head[l - 1] {
            None => {
                if let Some(unit) = q.get(QueueOffset(next)) {
                    let d = unit.tag_hash.min(latest);
                    r.head[l - 1] = Some(d);
                    r.wheel.insert(d, l);
                }
            }
            Some(d) if d > latest => {
                r.head[l - 1] = Some(latest);
                r.wheel.insert(latest, l);
            }
            Some(_) => {}
        }
    }
}

/// Moves level `l`'s due entries (the head, whose deadline passed, and the
/// ones after it already due) to their real topic or next hop, in one
/// write. Returns how many entries it took.
fn deliver_level(inner: &Inner, r: &mut Run, l: usize, now: u64) -> Result<usize> {
    let sched = &inner.schedule;
    let Some(q) = inner.queues.queue(SCHEDULE_TOPIC, (l - 1) as u32) else {
        return Ok(0);
    };
    let from = r.next[l - 1];
    let mut units = Vec::with_capacity(BATCH);
    q.read(QueueOffset(from), BATCH, &mut units);
    let removed_below = inner.log.removed_below();
    let mut copies = Vec::with_capacity(units.len());
    let mut taken = 0u64;
    let mut dropped = 0u64;
    for (i, (at, unit)) in units.iter().enumerate() {
        if at.0 != from + i as u64 || (i > 0 && unit.tag_hash > now) {
            break;
        }
        // Below the level's live head, retention removed the record. Past
        // it (physical offsets increase along a queue) a unit pointing
        // there is damaged, and is handled as one leading to no record.
        let read = if unit.physical_offset >= removed_below {
            inner.log.read(unit.physical_offset)
        } else if at.0 < q.live_head(removed_below.get()).0 {
            taken += 1;
            dropped += 1;
            continue;
        } else {
            Err(crate::store::dispatch::unit_leads_nowhere(inner, SCHEDULE_TOPIC, (l - 1) as u32, at.0))
        };
        let rec = match read {
            Ok(rec) => rec,
            // Either the unit is damaged (derived data: it leads to no
            // record, and rebuilding the queue from the log recomputes it)
            // or the record is (primary data: nothing trustworthy to
            // deliver, so it is dropped; the rebuild then fails on it too,
            // or it was already tried).
            Err(Error::Corruption { .. } | Error::InvalidArgument(_)) if taken == 0 => {
                if r.rebuilt_for != Some((l, at.0)) {
                    r.rebuilt_for = Some((l, at.0));
                    match crate::store::dispatch::rebuild_queue(inner, SCHEDULE_TOPIC, (l - 1) as u32) {
                        Ok(()) => return Ok(0),
                        Err(Error::Corruption { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                taken += 1;
                dropped += 1;
                continue;
            }
            // Behind the head: it is looked at again as the next head.
            Err(Error::Corruption { .. } | Error::InvalidArgument(_)) => break,
            Err(e) => return Err(e),
        };
        let w = Waiting::scan(rec.properties_slice());
        // The unit does not lead to its entry, or misstates its due time
        // (the tag hash the head was planned from; units carry no checksum,
        // and a damaged one would deliver early or late): rebuild the queue
        // from the log, which recomputes every unit from its record, and
        // look again next round.
        let misplaced = !rec.is_at(SCHEDULE_TOPIC, (l - 1) as u32, at.0);
        if misplaced || w.as_ref().is_some_and(|w| due_tag(w.due) != unit.tag_hash) {
            if taken == 0 {
                crate::store::dispatch::rebuild_queue(inner, SCHEDULE_TOPIC, (l - 1) as u32)?;
                return Ok(0);
            }
            break;
        }
        // Properties that do not decode cannot be rewritten for delivery.
        let Some(w) = w else {
            taken += 1;
            dropped += 1;
            continue;
        };
        taken += 1;
        match copy_of(inner, &rec, &w, l, at.0, now) {
            Some(c) => copies.push(c),
            None => dropped += 1,
        }
    }
    if taken == 0 {
        return Ok(0);
    }
    let drafts: Vec<RecordDraft<'_>> = copies
        .iter()
        .map(|c| RecordDraft {
            topic: &c.topic,
            queue_id: c.queue_id,
            flag: c.flag,
            sysflag: c.sysflag,
            born_timestamp: c.born,
            reconsume_times: c.reconsume,
            properties: &c.props,
            body: &c.body,
            ..RecordDraft::default()
        })
        .collect();
    if !drafts.is_empty() {
        crate::store::send::append_numbered(inner, &drafts, &[], Durability::NoWait)?;
    }
    r.next[l - 1] = from + taken;
    sched.confirmed[l - 1].fetch_max(from + taken, Ordering::AcqRel);
    sched.delivered.fetch_add(copies.len() as u64, Ordering::Relaxed);
    sched.dropped.fetch_add(dropped, Ordering::Relaxed);
    Ok(taken as usize)
}

/// What delivery reads of a schedule record's properties, in one pass
/// (the last value of a repeated name wins, as everywhere).
#[derive(Debug, Default)]
struct Waiting<'a> {
    due: Option<&'a str>,
    deliver_at: Option<&'a str>,
    real_topic: Option<&'a str>,
    real_qid: Option<&'a str>,
}

impl<'a> Waiting<'a> {
    /// `None` if a pair does not decode.
    fn scan(props: &'a [u8]) -> Option<Self> {
        let mut w = Self::default();
        for_each_text_pair(std::str::from_utf8(props).ok()?, |name, v| match name {
            DELAY_DUE_MS => w.due = Some(v),
            TIMER_DELIVER_MS => w.deliver_at = Some(v),
            REAL_TOPIC => w.real_topic = Some(v),
            REAL_QID => w.real_qid = Some(v),
            _ => {}
        })?;
        Some(w)
    }
}

/// What entry `at` of level `l` (record `rec`, whose properties `w` read)
/// becomes: its next hop if its delivery time is still ahead, else the
/// message on its real topic. `None` when it cannot be delivered (its
/// topic is gone or not writable, or its properties no longer fit).
fn copy_of(
    inner: &Inner,
    rec: &crate::commitlog::Record,
    w: &Waiting<'_>,
    l: usize,
    at: u64,
    now: u64,
) -> Option<Copy> {
    let props = rec.properties_slice();
    let source = format!("{l}:{at}");
    let target = w.deliver_at.and_then(|v| v.parse::<u64>().ok());
    let (topic, queue_id, props) = match target {
        Some(t) if t > now => {
            let (next, due) = hop(&inner.opts.delay_levels, now, t);
            let (next_s, due_s) = (next.to_string(), due.to_string());
            let add = [(DELAY, next_s.as_str()), (DELAY_DUE_MS, due_s.as_str()), (DELAY_SOURCE, source.as_str())];
            (SCHEDULE_TOPIC.to_string(), (next - 1) as u32, rewrite(props, &[], &add).ok()?)
        }
        _ => {
            let real = w.real_topic?;
            let cfg = inner.topics.get(real)?;
            if !cfg.permission.writable() || cfg.write_queues == 0 {
                return None;
            }
            let qid: u32 = w.real_qid.and_then(|v| v.parse().ok()).unwrap_or(0);
            let qid = if qid < cfg.write_queues { qid } else { qid % cfg.write_queues };
            let remove = [DELAY, DELAY_DUE_MS, REAL_TOPIC, REAL_QID, TIMER_DELIVER_MS];
            let props = rewrite(props, &remove, &[(DELAY_SOURCE, source.as_str())]).ok()?;
            (real.to_string(), qid, props)
        }
    };
    if props.len() > crate::commitlog::MAX_PROPERTIES_LEN {
        return None;
    }
    Some(Copy {
        topic,
        queue_id,
        props,
        body: rec.body(),
        born: rec.born_timestamp(),
        reconsume: rec.reconsume_times(),
        flag: rec.flag(),
        sysflag: rec.sysflag(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_levels_and_delivery_times() {
        let levels = DelayLevels::default();
        assert_eq!(route(&levels, 1_000, Some(3), None), Some((3, 11_000)));
        assert_eq!(route(&levels, 1_000, None, None), None);
        assert_eq!(route(&levels, 1_000, None, Some(900)), None);
        assert_eq!(route(&levels, 1_000, None, Some(1_000)), None);
        // Less than the shortest level left: level 1, due exactly then.
        assert_eq!(route(&levels, 1_000, None, Some(1_400)), Some((1, 1_400)));
        // 7 s: the 5 s level first.
        assert_eq!(route(&levels, 1_000, None, Some(8_000)), Some((2, 6_000)));
        // Three days: the 2 h level, again and again.
        assert_eq!(route(&levels, 0, None, Some(3 * 86_400_000)), Some((18, 7_200_000)));
    }

    #[test]
    fn hops_never_pass_the_target() {
        let levels = DelayLevels::parse("1s 5s 10s 30s 1m 2m").unwrap();
        for target in [1_001u64, 4_999, 5_000, 61_234, 3_600_000, 86_400_017] {
            let mut now = 0;
            let mut hops = 0;
            while now < target {
                let (_, due) = hop(&levels, now, target);
                assert!(due <= target && due > now, "{target}: {now} -> {due}");
                now = due;
                hops += 1;
            }
            assert_eq!(now, target);
            assert!(hops <= target / 120_000 + 8, "{target}: {hops} hops");
        }
    }

    #[test]
    fn delay_sources_parse_strictly() {
        assert_eq!(parse_source("3:17"), Some((3, 17)));
        assert_eq!(parse_source("0:1"), None);
        assert_eq!(parse_source("65:1"), None);
        assert_eq!(parse_source("3"), None);
        assert_eq!(parse_source("x:1"), None);
    }
}
