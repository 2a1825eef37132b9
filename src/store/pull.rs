//! Pull consumption: reading a queue by offset with a tag filter, long
//! polling, queue bounds, seeking by store time, and consumer offsets.

use super::{ReadChecksums, Store};
use crate::commitlog::Checksums;
use crate::consumequeue::tag_hash;
use crate::error::{CorruptionKind, Error, Result};
use crate::message::{MessageExt, MessageRef};
use crate::offset::QueueOffset;
use std::time::{Duration, Instant};

/// Most consume-queue units one pull examines, so a filter that matches
/// nothing in a long queue still returns promptly (with the offset to
/// continue from).
const MAX_SCAN: usize = 4096;

/// Which messages a pull returns, by tag (RocketMQ's subscription
/// expression).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    /// Every message (`*`).
    All,
    /// Messages whose tag is one of these (`TagA || TagB`).
    Tags(Vec<String>),
}

impl TagFilter {
    /// Parses RocketMQ's tag expression: `*` (or empty) for everything,
    /// otherwise tags separated by `||`, surrounding spaces ignored.
    ///
    /// ```
    /// use mqstore::store::TagFilter;
    /// assert_eq!(TagFilter::parse("*").unwrap(), TagFilter::All);
    /// assert_eq!(TagFilter::parse("A || B").unwrap(), TagFilter::Tags(vec!["A".into(), "B".into()]));
    /// assert!(TagFilter::parse("A || ").is_err());
    /// ```
    pub fn parse(expr: &str) -> Result<Self> {
        let expr = expr.trim();
        if expr.is_empty() || expr == "*" {
            return Ok(Self::All);
        }
        let mut tags = Vec::new();
        for t in expr.split("||") {
            let t = t.trim();
            if t.is_empty() {
                return Err(Error::InvalidArgument(format!("empty tag in expression {expr:?}")));
            }
            if !tags.iter().any(|x: &String| x == t) {
                tags.push(t.to_string());
            }
        }
        Ok(Self::Tags(tags))
    }

    fn hashes(&self) -> Option<Vec<u64>> {
        match self {
            Self::All => None,
            Self::Tags(t) => Some(t.iter().map(|t| tag_hash(t)).collect()),
        }
    }

    fn matches_tag(&self, tag: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Tags(t) => tag.is_some_and(|tag| t.iter().any(|x| x == tag)),
        }
    }
}

/// What a pull found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullStatus {
    /// At least one message matched.
    Found,
    /// The queue has nothing at or after the offset (yet).
    NoNewMessage,
    /// Messages were examined but none matched the filter; continue from
    /// `next_offset`.
    NoMatchedMessage,
    /// The offset is outside `[min_offset, max_offset]`; `next_offset` is
    /// the nearest valid one.
    OffsetIllegal,
}

/// What [`Store::pull_with`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullSummary {
    /// What was found.
    pub status: PullStatus,
    /// Messages handed to the callback.
    pub count: usize,
    /// Where the next pull should start.
    pub next_offset: u64,
    /// The queue's first offset.
    pub min_offset: u64,
    /// The queue's end (one past its last message).
    pub max_offset: u64,
}

/// The result of [`Store::pull`].
#[derive(Debug, Clone)]
pub struct PullResult {
    /// What was found.
    pub status: PullStatus,
    /// Matching messages, in queue order.
    pub messages: Vec<MessageExt>,
    /// Where the next pull should start.
    pub next_offset: u64,
    /// The queue's first offset.
    pub min_offset: u64,
    /// The queue's end (one past its last message).
    pub max_offset: u64,
}

impl Store {
    /// Reads up to `max` messages of queue `queue_id` of `topic` from
    /// queue offset `offset` that pass `filter`. Bodies are slices of the
    /// mapped commit log (no copy). Each record's CRC is checked first,
    /// unless the store was opened with [`ReadChecksums::Skip`]; a damaged
    /// record is an [`Error::Corruption`].
    pub fn pull(&self, topic: &str, queue_id: u32, offset: u64, max: usize, filter: &TagFilter) -> Result<PullResult> {
        let mut messages = Vec::with_capacity(max.min(MAX_SCAN));
        let s = self.pull_with(topic, queue_id, offset, max, filter, |m| {
            messages.push(m.to_owned_message()?);
            Ok(())
        })?;
        Ok(PullResult {
            status: s.status,
            messages,
            next_offset: s.next_offset,
            min_offset: s.min_offset,
            max_offset: s.max_offset,
        })
    }

    /// Like [`Store::pull`], but hands each matching message to `each` as
    /// a [`MessageRef`] borrowed from the mapped log, allocating nothing per
    /// message: the throughput path for consumers that process messages in
    /// place. An error from `each` stops the pull and is returned;
    /// `next_offset` then does not cover the message that failed.
    ///
    /// ```
    /// # use mqstore::{message::Message, store::{Store, StoreOptions, TagFilter}, topic::TopicConfig};
    /// # fn main() -> mqstore::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| mqstore::Error::InvalidArgument(e.to_string()))?;
    /// # let store = Store::open(dir.path(), StoreOptions::default())?;
    /// # store.create_topic(TopicConfig::new("t", 1))?;
    /// # store.send(Message::new("t", "abc"))?;
    /// # store.pull_wait("t", 0, 0, 1, &TagFilter::All, std::time::Duration::from_secs(5))?;
    /// let mut bytes = 0;
    /// let s = store.pull_with("t", 0, 0, 32, &TagFilter::All, |m| {
    ///     bytes += m.body().len();
    ///     Ok(())
    /// })?;
    /// assert_eq!((s.count, bytes), (1, 3));
    /// # store.close()
    /// # }
    /// ```
    pub fn pull_with(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max: usize,
        filter: &TagFilter,
        mut each: impl FnMut(MessageRef<'_>) -> Result<()>,
    ) -> Result<PullSummary> {
        // Counted before the call, so a message whose callback fails counts
        // as delivered (its error is the callback's, not a bad unit's).
        let delivered = std::cell::Cell::new(0usize);
        let mut counted = |m: MessageRef<'_>| {
            delivered.set(delivered.get() + 1);
            each(m)
        };
        // Once a message was handed out, the error is reported instead: the
        // next pull starts at the bad unit and repairs it there.
        self.repairing(
            topic,
            queue_id,
            || delivered.get() == 0,
            || self.pull_once(topic, queue_id, offset, max, filter, &mut counted),
        )
    }

    /// Runs `attempt`. If it finds a unit that does not lead to its record
    /// (`Corruption`) and `may_retry` allows, rebuilds the queue from the
    /// commit log and runs it once more. If the record itself is damaged
    /// (primary data), the second attempt fails the same way and reports it.
    fn repairing<T>(
        &self,
        topic: &str,
        queue_id: u32,
        may_retry: impl FnOnce() -> bool,
        mut attempt: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        match attempt() {
            Err(Error::Corruption { .. }) if may_retry() => {
                super::dispatch::rebuild_queue(&self.inner, topic, queue_id)?;
                attempt()
            }
            other => other,
        }
    }

    /// One attempt of [`Store::pull_with`]. Generic over the callback (one
    /// instance per caller, both attempts share it), so the per-message call
    /// is direct and can be inlined into the loop.
    fn pull_once<F: FnMut(MessageRef<'_>) -> Result<()>>(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max: usize,
        filter: &TagFilter,
        each: &mut F,
    ) -> Result<PullSummary> {
        self.ensure_open()?;
        self.inner.dispatch.check()?;
        if !self.read_queue_permission(topic, queue_id)?.readable() {
            return Err(Error::InvalidArgument(format!("topic {topic} is not readable")));
        }
        let Some(q) = self.inner.queues.queue(topic, queue_id) else {
            let status = if offset == 0 { PullStatus::NoNewMessage } else { PullStatus::OffsetIllegal };
            return Ok(PullSummary { status, count: 0, next_offset: 0, min_offset: 0, max_offset: 0 });
        };
        let (mut min, end) = (q.min_offset().0, q.max_offset().0);
        // Below this, retention removed the records (a unit between it and
        // the log's first record points into a segment header: damaged).
        let removed_below = self.inner.log.removed_below();
        let hashes = filter.hashes();
        // Without a tag filter every unit is a match: read exactly `max`.
        // With one, read ahead so a sparse match still fills the batch.
        let scan = match &hashes {
            None => max.clamp(1, MAX_SCAN),
            Some(_) => max.clamp(1, MAX_SCAN).saturating_mul(4).min(MAX_SCAN),
        };
        let mut units = Vec::with_capacity(scan);
        if offset < end {
            // From the queue's first unit when `offset` lies before it.
            q.read(QueueOffset(offset.max(min)), scan, &mut units);
        }
        // Retention removed the record of the first unit asked for: the
        // queue's live start is further on (looked up only then).
        if units.first().is_some_and(|(_, u)| u.physical_offset < removed_below) {
            min = q.live_head(removed_below.get()).0;
        }
        let empty =
            |status, next_offset| PullSummary { status, count: 0, next_offset, min_offset: min, max_offset: end };
        if offset < min {
            return Ok(empty(PullStatus::OffsetIllegal, min));
        }
        if offset > end {
            return Ok(empty(PullStatus::OffsetIllegal, end));
        }
        if offset == end || max == 0 {
            return Ok(empty(PullStatus::NoNewMessage, offset));
        }
        // Here min <= offset < end: `units` start at `offset`.
        let mut cache = crate::commitlog::ReadCache::default();
        let checksums = match self.inner.opts.read_checksums {
            ReadChecksums::Verify => Checksums::Verify,
            ReadChecksums::Skip => Checksums::Skip,
        };
        let bad_pointer = |at: QueueOffset| super::dispatch::unit_leads_nowhere(&self.inner, topic, queue_id, at.0);
        let mut next = offset;
        let mut count = 0;
        for (at, unit) in units {
            if count >= max {
                break;
            }
            // A unit whose record retention removed would have answered
            // `OffsetIllegal` above, had it come first; physical offsets
            // increase along a queue, so one after a stored record's unit
            // is damaged, not removed (stepping over it would hide its
            // message).
            if unit.physical_offset < removed_below {
                if count > 0 {
                    break;
                }
                return Err(bad_pointer(at));
            }
            if let Some(h) = &hashes {
                if !h.contains(&unit.tag_hash) {
                    next = at.0 + 1;
                    continue;
                }
            }
            let offset_in_log = unit.physical_offset;
            let mut misplaced = false;
            let visited = self.inner.log.visit_cached(&mut cache, offset_in_log, checksums, |src, pos, view, parts| {
                let m = MessageRef::new(src, pos, view, parts, offset_in_log);
                // The unit must point at this queue's record for this
                // position: a damaged unit that happens to point at another
                // valid record must not hand out the wrong message.
                if m.queue_id() != queue_id
                    || m.queue_offset() != at
                    || !crate::codec::short_eq(m.topic_bytes(), topic.as_bytes())
                {
                    misplaced = true;
                    let kind = CorruptionKind::Misplaced { claimed: m.queue_offset().0, actual: at.0 };
                    return Err(super::dispatch::damaged_unit(&self.inner, topic, queue_id, at.0, kind));
                }
                // The tag is looked up only when a filter needs it.
                if matches!(filter, TagFilter::All) || filter.matches_tag(m.tags()) {
                    count += 1;
                    each(m)
                } else {
                    Ok(())
                }
            });
            match visited {
                Ok(Ok(())) => {}
                // The callback's own error stops the pull as it is.
                Ok(Err(e)) if !misplaced => return Err(e),
                // The unit does not lead to its record. Messages before it
                // were delivered: report them, so the next pull starts at
                // the bad unit (where it is repaired, see `pull_with`).
                Ok(Err(e)) | Err(e) => {
                    if count > 0 {
                        break;
                    }
                    // A unit that leads to no record at all (into a
                    // segment header, or at a segment's blank end) is as
                    // damaged as one that leads to another record.
                    if let Error::InvalidArgument(_) = e {
                        return Err(bad_pointer(at));
                    }
                    return Err(e);
                }
            }
            next = at.0 + 1;
        }
        let status = if count == 0 { PullStatus::NoMatchedMessage } else { PullStatus::Found };
        Ok(PullSummary { status, count, next_offset: next, min_offset: min, max_offset: end })
    }

    /// The permission of `topic`, if it exists and has read queue
    /// `queue_id`; pulls and consumer offsets refer to read queues only.
    fn read_queue_permission(&self, topic: &str, queue_id: u32) -> Result<crate::topic::Permission> {
        let (permission, read_queues) = self
            .inner
            .topics
            .read_access(topic)
            .ok_or_else(|| Error::InvalidArgument(format!("topic {topic} does not exist")))?;
        if queue_id >= read_queues {
            return Err(Error::InvalidArgument(format!(
                "topic {topic} has no read queue {queue_id} ({read_queues} read queues)"
            )));
        }
        Ok(permission)
    }

    /// Like [`Store::pull`], but when nothing is there yet waits up to
    /// `timeout` for new messages (long polling: woken by dispatch, no busy
    /// polling).
    pub fn pull_wait(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max: usize,
        filter: &TagFilter,
        timeout: Duration,
    ) -> Result<PullResult> {
        let deadline = Instant::now() + timeout;
        loop {
            // Read the generation before looking, so an arrival in between
            // makes the wait return at once.
            let seen = self.inner.dispatch.arrivals.generation();
            let r = self.pull(topic, queue_id, offset, max, filter)?;
            let again = matches!(r.status, PullStatus::NoNewMessage)
                || (r.status == PullStatus::NoMatchedMessage && r.next_offset >= r.max_offset);
            if !again || Instant::now() >= deadline {
                return Ok(r);
            }
            let offset_now = r.next_offset;
            self.inner.dispatch.arrivals.wait(seen, Some(deadline));
            if offset_now != offset {
                return self.pull(topic, queue_id, offset_now, max, filter);
            }
        }
    }

    /// The first offset of a queue whose message is still stored (0 for a
    /// queue that never held a message, or that does not exist, as RocketMQ
    /// answers; past every unit whose record log retention removed).
    pub fn min_offset(&self, topic: &str, queue_id: u32) -> Result<u64> {
        self.ensure_open()?;
        let removed_below = self.inner.log.removed_below().get();
        Ok(self.inner.queues.queue(topic, queue_id).map_or(0, |q| q.live_head(removed_below).0))
    }

    /// One past the last dispatched message of a queue (0 for a queue that
    /// does not exist).
    pub fn max_offset(&self, topic: &str, queue_id: u32) -> Result<u64> {
        self.ensure_open()?;
        Ok(self.inner.queues.queue(topic, queue_id).map_or(0, |q| q.max_offset().0))
    }

    /// The first queue offset whose message was stored at or after
    /// `timestamp_ms` (the queue's end if none; its first offset for a time
    /// before every message), by binary search: store timestamps never
    /// decrease along the log. A queue that does not exist reads as empty
    /// (0).
    pub fn offset_for_timestamp(&self, topic: &str, queue_id: u32, timestamp_ms: u64) -> Result<u64> {
        self.ensure_open()?;
        self.repairing(topic, queue_id, || true, || self.offset_for_timestamp_once(topic, queue_id, timestamp_ms))
    }

    /// One search of [`Store::offset_for_timestamp`]. Every record it reads
    /// is checked against its unit (units carry no checksum): one that is
    /// not this queue's record at that position, or none at all, is
    /// `Corruption`, never a time taken from another message.
    fn offset_for_timestamp_once(&self, topic: &str, queue_id: u32, timestamp_ms: u64) -> Result<u64> {
        let Some(q) = self.inner.queues.queue(topic, queue_id) else {
            return Ok(0);
        };
        let (mut lo, mut hi) = (q.live_head(self.inner.log.removed_below().get()).0, q.max_offset().0);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(unit) = q.get(QueueOffset(mid)) else {
                break;
            };
            let rec = self.inner.log.read(unit.physical_offset).map_err(|e| match e {
                Error::InvalidArgument(_) => super::dispatch::unit_leads_nowhere(&self.inner, topic, queue_id, mid),
                e => e,
            })?;
            if !rec.is_at(topic, queue_id, mid) {
                let kind = CorruptionKind::Misplaced { claimed: rec.queue_offset(), actual: mid };
                return Err(super::dispatch::damaged_unit(&self.inner, topic, queue_id, mid, kind));
            }
            if rec.store_timestamp() < timestamp_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Records that `group` consumed queue `queue_id` of `topic` up to
    /// (not including) `offset`. Kept in memory, written on the persist
    /// interval and on close; never moves backwards (see
    /// [`Store::reset_offset`]). [`Error::InvalidArgument`], changing
    /// nothing, for an invalid group name, a topic that does not exist, a
    /// queue it does not have or an offset past the queue's end.
    pub fn commit_offset(&self, group: &str, topic: &str, queue_id: u32, offset: u64) -> Result<()> {
        self.ensure_open()?;
        crate::topic::validate_group_name(group)?;
        self.read_queue_permission(topic, queue_id)?;
        let end = self.max_offset(topic, queue_id)?;
        if offset > end {
            return Err(Error::InvalidArgument(format!("offset {offset} is past the end {end} of {topic}/{queue_id}")));
        }
        self.inner.offsets.commit(group, topic, queue_id, offset);
        Ok(())
    }

    /// Sets `group`'s offset exactly, backwards too (a seek). An offset
    /// outside the queue's range `[min_offset, max_offset]` is clamped into
    /// it (the nearest position a consumer can read from), as recovery
    /// clamps offsets. [`Error::InvalidArgument`], changing nothing, for an
    /// invalid group name, a topic that does not exist or a queue it does
    /// not have.
    pub fn reset_offset(&self, group: &str, topic: &str, queue_id: u32, offset: u64) -> Result<()> {
        self.ensure_open()?;
        crate::topic::validate_group_name(group)?;
        self.read_queue_permission(topic, queue_id)?;
        let (min, end) = (self.min_offset(topic, queue_id)?, self.max_offset(topic, queue_id)?);
        self.inner.offsets.reset(group, topic, queue_id, offset.clamp(min, end));
        Ok(())
    }

    /// `group`'s committed offset for a queue, if it committed one.
    #[must_use]
    pub fn committed_offset(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.inner.offsets.get(group, topic, queue_id)
    }

    /// Forgets consumer group `group`: its committed offsets (on every
    /// topic, its retry topic included) are removed and persisted, so it no
    /// longer holds commit-log segments back from retention. Refused with
    /// `InvalidArgument` while a push consumer of the group runs in this
    /// store. Returns how many offsets were removed (0 for an unknown
    /// group).
    pub fn delete_consumer_group(&self, group: &str) -> Result<usize> {
        self.ensure_open()?;
        crate::topic::validate_group_name(group)?;
        if !self.inner.consumers.member_ids(group).is_empty() {
            return Err(Error::InvalidArgument(format!("consumer group {group} has running consumers")));
        }
        let removed = self.inner.offsets.remove_group(group);
        if removed > 0 {
            self.persist_offsets()?;
        }
        Ok(removed)
    }

    /// Writes the committed offsets to disk now. A failed sync fences the
    /// store (writes are refused until it is reopened).
    pub fn persist_offsets(&self) -> Result<()> {
        self.ensure_open()?;
        self.inner.offsets.persist().inspect_err(|e| self.inner.log.fence_if_sync_failed(e, "consumer offsets"))
    }
}
