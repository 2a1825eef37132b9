//! [`ProcessQueue`]: the messages of one queue that a consumer pulled and
//! has not yet acknowledged (RocketMQ's `ProcessQueue`).
//!
//! Invariant: the offset committed for a queue is the lowest offset still
//! in flight, or one past the last pulled message when nothing is: a crash
//! re-delivers what was not acknowledged and never skips a message.
//!
//! In-flight messages sit in a deque in offset order (pulls only move
//! forward, so a pull appends at the back); an acknowledgement marks its
//! slot, and acknowledged slots leave from the front. Concurrent
//! consumption puts and acknowledges every message on the hot path, and
//! this costs a push and a binary search instead of a tree insert and
//! removal. Acknowledged slots behind an unacknowledged one stay until it
//! is acknowledged; flow control caps that span ([`ProcessQueue::span`],
//! RocketMQ's `consumeConcurrentlyMaxSpan`).

use crate::message::MessageExt;
use std::collections::{BTreeMap, VecDeque};

/// One pulled message.
#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: u64,
    /// Body bytes (flow control).
    len: u64,
    acked: bool,
}

/// In-flight state of one assigned queue.
#[derive(Debug)]
pub(crate) struct ProcessQueue {
    /// Pulled messages by ascending offset; the front is unacknowledged
    /// (acknowledged slots are popped from the front at once).
    slots: VecDeque<Slot>,
    /// Unacknowledged slots.
    unacked: usize,
    /// Body bytes of the unacknowledged slots.
    bytes: u64,
    /// Orderly consumption only: the in-flight messages themselves, handed
    /// out from here one at a time (concurrent consumption hands them to
    /// tasks at once and keeps only the bookkeeping).
    kept: BTreeMap<u64, MessageExt>,
    /// Where the next pull starts.
    pub(crate) next_pull: u64,
    /// The queue was taken away: pulled messages are no longer handed out
    /// and acknowledgements no longer move the offset.
    pub(crate) dropped: bool,
    /// Orderly consumption: a message of this queue is with a listener.
    pub(crate) consuming: bool,
    /// Orderly consumption: do not hand out anything before this time
    /// (ms, the store's clock) after a `SuspendCurrentQueueAMoment`.
    pub(crate) suspended_until: u64,
    /// Tasks submitted and not finished (concurrent consumption).
    pub(crate) tasks: usize,
    /// Orderly consumption: delivery attempt of the first message.
    pub(crate) attempt: u32,
}

impl ProcessQueue {
    pub(crate) fn new(start: u64) -> Self {
        Self {
            slots: VecDeque::new(),
            unacked: 0,
            bytes: 0,
            kept: BTreeMap::new(),
            next_pull: start,
            dropped: false,
            consuming: false,
            suspended_until: 0,
            tasks: 0,
            attempt: 1,
        }
    }

    /// Adds pulled messages (keeping them only if `keep`); `next` is where
    /// the next pull starts.
    pub(crate) fn put(&mut self, msgs: &[MessageExt], next: u64, keep: bool) {
        for m in msgs {
            let slot = Slot { offset: m.queue_offset().0, len: m.body().len() as u64, acked: false };
            match self.slots.back() {
                Some(last) if last.offset >= slot.offset => {
                    // Not past the newest: never happens with forward
                    // pulls, but a message already in flight must not be
                    // counted twice, and order must hold for the search.
                    match self.slots.binary_search_by_key(&slot.offset, |s| s.offset) {
                        Ok(_) => continue,
                        Err(at) => self.slots.insert(at, slot),
                    }
                }
                _ => self.slots.push_back(slot),
            }
            self.unacked += 1;
            self.bytes += slot.len;
            if keep {
                self.kept.insert(slot.offset, m.clone());
            }
        }
        self.next_pull = self.next_pull.max(next);
    }

    /// Acknowledges the messages at `offsets`; returns the offset to
    /// commit (see the module invariant).
    pub(crate) fn ack(&mut self, offsets: &[u64]) -> u64 {
        for &o in offsets {
            if let Ok(i) = self.slots.binary_search_by_key(&o, |s| s.offset) {
                let s = &mut self.slots[i];
                if !s.acked {
                    s.acked = true;
                    self.unacked -= 1;
                    self.bytes = self.bytes.saturating_sub(s.len);
                }
            }
            if !self.kept.is_empty() {
                self.kept.remove(&o);
            }
        }
        while self.slots.front().is_some_and(|s| s.acked) {
            self.slots.pop_front();
        }
        self.commit_offset()
    }

    /// The lowest unacknowledged offset, or the next pull position.
    pub(crate) fn commit_offset(&self) -> u64 {
        self.slots.front().map_or(self.next_pull, |s| s.offset)
    }

    /// Messages in flight (unacknowledged).
    pub(crate) fn count(&self) -> usize {
        self.unacked
    }

    /// Body bytes in flight.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Offsets from the oldest unacknowledged message to the newest pulled
    /// one (0 when nothing is in flight).
    pub(crate) fn span(&self) -> u64 {
        match (self.slots.front(), self.slots.back()) {
            (Some(a), Some(b)) => b.offset - a.offset + 1,
            _ => 0,
        }
    }

    /// Orderly consumption: the first message in flight.
    pub(crate) fn first(&self) -> Option<MessageExt> {
        // Orderly queues keep every message they pull, so the first kept
        // message is the first in flight.
        self.kept.values().next().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::store::{Store, StoreOptions, TagFilter};
    use crate::topic::TopicConfig;

    #[test]
    fn commit_offset_is_the_lowest_unacknowledged() {
        let mut pq = ProcessQueue::new(10);
        assert_eq!(pq.commit_offset(), 10);
        // No MessageExt needed to test the arithmetic on an empty queue.
        pq.next_pull = 15;
        assert_eq!(pq.commit_offset(), 15);
        assert_eq!(pq.ack(&[3]), 15);
        assert_eq!((pq.count(), pq.bytes(), pq.span()), (0, 0, 0));
    }

    /// Out-of-order acknowledgements against a model: the committed offset
    /// is always the lowest unacknowledged one, counts and bytes match, and
    /// the deque never keeps acknowledged slots at its front.
    #[test]
    fn out_of_order_acks_match_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store.create_topic(TopicConfig::new("t", 1)).unwrap();
        for i in 0..64usize {
            store.send(Message::new("t", vec![7u8; i + 1])).unwrap();
        }
        let mut msgs = Vec::new();
        let mut from = 0;
        while msgs.len() < 64 {
            let r = store.pull("t", 0, from, 32, &TagFilter::All).unwrap();
            from = r.next_offset;
            msgs.extend(r.messages);
        }
        let mut pq = ProcessQueue::new(0);
        pq.put(&msgs[..40], 40, false);
        pq.put(&msgs[40..], 64, false);
        // Putting a message again changes nothing.
        pq.put(&msgs[5..6], 64, false);
        assert_eq!((pq.count(), pq.span()), (64, 64));
        let mut open: std::collections::BTreeSet<u64> = (0..64).collect();
        // A fixed shuffle (multiplication by a unit mod 64).
        for k in 0..64u64 {
            let o = (k * 37 + 11) % 64;
            let got = pq.ack(&[o, o]);
            open.remove(&o);
            let want = open.iter().next().copied().unwrap_or(64);
            assert_eq!(got, want, "after acking {o}");
            assert_eq!(pq.count(), open.len());
            let bytes: u64 = open.iter().map(|&x| x + 1).sum();
            assert_eq!(pq.bytes(), bytes);
            assert!(pq.slots.front().is_none_or(|s| !s.acked));
            assert_eq!(pq.span(), open.iter().next().map_or(0, |&f| 64 - f));
        }
        store.close().unwrap();
    }
}
