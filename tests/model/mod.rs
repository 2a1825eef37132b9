//! The in-memory model the stateful store test (`store_model.rs`) checks
//! the store against: per queue the exact messages it holds, per consumer
//! group the committed offsets, and what a pull, a time seek or a key
//! query must return. Everything here is plain data and pure functions; the
//! store is never touched.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mqstore::message::MessageExt;
use mqstore::store::PullStatus;
use std::collections::BTreeMap;

/// Most consume-queue units one pull examines (the store's `MAX_SCAN`).
pub const MAX_SCAN: usize = 4096;
/// Most results of a key query (`mqstore::store::MAX_QUERY_RESULTS`).
pub const MAX_QUERY: usize = mqstore::store::MAX_QUERY_RESULTS;

/// A queue: topic and queue id.
pub type QueueKey = (String, u32);
/// A committed offset's key: group, topic, queue id.
pub type OffsetKey = (String, String, u32);

/// One stored message as the store must return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub body: Vec<u8>,
    pub tag: Option<String>,
    pub keys: Vec<String>,
    /// The one user property the test sets, if any.
    pub prop: Option<String>,
    pub store_ts: u64,
    pub msg_id: String,
    pub offset_msg_id: String,
    pub physical: u64,
    /// For a message waiting in the schedule topic: where it goes when due.
    pub real: Option<QueueKey>,
}

impl Msg {
    /// Panics with `ctx` unless `m` is this message at queue offset `at`.
    pub fn check(&self, m: &MessageExt, at: u64, ctx: &str) {
        assert_eq!(m.queue_offset().get(), at, "{ctx}: queue offset");
        assert_eq!(m.body().as_ref(), self.body.as_slice(), "{ctx}: body at {at}");
        assert_eq!(m.physical_offset().get(), self.physical, "{ctx}: physical offset at {at}");
        assert_eq!(m.tags(), self.tag.as_deref(), "{ctx}: tag at {at}");
        assert_eq!(
            m.keys().collect::<Vec<_>>(),
            self.keys.iter().map(String::as_str).collect::<Vec<_>>(),
            "{ctx}: keys"
        );
        assert_eq!(m.property("p"), self.prop.as_deref(), "{ctx}: user property at {at}");
        assert_eq!(m.store_timestamp(), self.store_ts, "{ctx}: store time at {at}");
        assert_eq!(m.msg_id(), Some(self.msg_id.as_str()), "{ctx}: unique id at {at}");
        assert_eq!(m.offset_msg_id(), self.offset_msg_id, "{ctx}: offset id at {at}");
    }
}

/// What a pull must report.
#[derive(Debug, PartialEq, Eq)]
pub struct Pulled {
    pub status: PullStatus,
    /// Queue offsets of the messages returned, in order.
    pub offsets: Vec<u64>,
    pub next_offset: u64,
}

/// The whole expected state of a store.
#[derive(Debug, Default)]
pub struct Model {
    pub queues: BTreeMap<QueueKey, Vec<Msg>>,
    /// Per queue, how many messages are durable for certain (Async flush:
    /// covered by a completed flush or a clean close).
    pub flushed: BTreeMap<QueueKey, usize>,
    pub offsets: BTreeMap<OffsetKey, u64>,
    /// Per offset key, every value it held since it was last known to be
    /// on disk (an explicit persist or a clean close), that value first: a
    /// crash may bring back any of them (offsets are persisted in the
    /// background too), never anything else.
    pub history: BTreeMap<OffsetKey, Vec<Option<u64>>>,
}

impl Model {
    /// The queue `key`, empty if nothing was sent to it.
    pub fn queue(&self, key: &QueueKey) -> &[Msg] {
        self.queues.get(key).map_or(&[], Vec::as_slice)
    }

    pub fn end(&self, key: &QueueKey) -> u64 {
        self.queue(key).len() as u64
    }

    pub fn push(&mut self, key: QueueKey, m: Msg) {
        self.queues.entry(key).or_default().push(m);
    }

    /// A commit: refused past the end (`false`), otherwise never moves the
    /// offset backwards.
    pub fn commit(&mut self, key: OffsetKey, offset: u64, end: u64) -> bool {
        if offset > end {
            return false;
        }
        let cur = self.offsets.get(&key).copied();
        let new = cur.map_or(offset, |c| c.max(offset));
        self.set_offset(key, new);
        true
    }

    /// A reset: clamped into the queue's range, backwards too.
    pub fn reset(&mut self, key: OffsetKey, offset: u64, min: u64, end: u64) {
        self.set_offset(key, offset.clamp(min, end));
    }

    fn set_offset(&mut self, key: OffsetKey, v: u64) {
        let before = self.offsets.insert(key.clone(), v);
        let h = self.history.entry(key).or_insert_with(|| vec![before]);
        h.push(Some(v));
    }

    /// Everything is on disk now (a persist or a clean close).
    pub fn offsets_durable(&mut self) {
        self.history.clear();
    }

    /// The values `key` may have after a crash (before clamping).
    pub fn possible_offsets(&self, key: &OffsetKey) -> Vec<Option<u64>> {
        match self.history.get(key) {
            Some(h) => h.clone(),
            None => vec![self.offsets.get(key).copied()],
        }
    }

    /// Every message is durable (a clean close).
    pub fn all_flushed(&mut self) {
        self.flushed = self.queues.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    }

    /// What `pull(topic, queue, offset, max, filter)` must return;
    /// `tag` is the filter's one tag (`None`: every message).
    pub fn pull(&self, key: &QueueKey, offset: u64, max: usize, tag: Option<&str>) -> Pulled {
        let msgs = self.queue(key);
        let end = msgs.len() as u64;
        let empty = |status, next_offset| Pulled { status, offsets: Vec::new(), next_offset };
        if offset > end {
            return empty(PullStatus::OffsetIllegal, end);
        }
        if offset == end || max == 0 {
            return empty(PullStatus::NoNewMessage, offset);
        }
        let scan = match tag {
            None => max.clamp(1, MAX_SCAN),
            Some(_) => max.clamp(1, MAX_SCAN).saturating_mul(4).min(MAX_SCAN),
        };
        let mut out = Vec::new();
        let mut next = offset;
        for at in offset..end.min(offset + scan as u64) {
            if out.len() >= max {
                break;
            }
            if tag.is_none() || msgs[at as usize].tag.as_deref() == tag {
                out.push(at);
            }
            next = at + 1;
        }
        let status = if out.is_empty() { PullStatus::NoMatchedMessage } else { PullStatus::Found };
        Pulled { status, offsets: out, next_offset: next }
    }

    /// The first queue offset stored at or after `ts` (the end if none).
    pub fn offset_for_timestamp(&self, key: &QueueKey, ts: u64) -> u64 {
        let msgs = self.queue(key);
        msgs.iter().position(|m| m.store_ts >= ts).unwrap_or(msgs.len()) as u64
    }

    /// Physical offsets of the messages of `topic` carrying `key`, newest
    /// first, at most [`MAX_QUERY`]; messages waiting in the schedule topic
    /// are not indexed yet.
    pub fn query_by_key(&self, topic: &str, key: &str) -> Vec<u64> {
        let mut hits: Vec<u64> = self
            .queues
            .iter()
            .filter(|((t, _), _)| t == topic)
            .flat_map(|(_, v)| v.iter())
            .filter(|m| m.real.is_none() && m.keys.iter().any(|k| k == key))
            .map(|m| m.physical)
            .collect();
        hits.sort_unstable_by(|a, b| b.cmp(a));
        hits.truncate(MAX_QUERY);
        hits
    }

    /// Every message the model holds, with its queue and queue offset.
    pub fn all(&self) -> impl Iterator<Item = (&QueueKey, u64, &Msg)> {
        self.queues.iter().flat_map(|(k, v)| v.iter().enumerate().map(move |(i, m)| (k, i as u64, m)))
    }
}
