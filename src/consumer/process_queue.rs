//! [`ProcessQueue`]: the messages of one queue that a consumer pulled and
//! has not yet acknowledged (RocketMQ's `ProcessQueue`).
//!
//! Invariant: the offset committed for a queue is the lowest offset still
//! in flight, or one past the last pulled message when nothing is: a crash
//! re-delivers what was not acknowledged and never skips a message.

use crate::message::MessageExt;
use std::collections::BTreeMap;

/// In-flight state of one assigned queue.
#[derive(Debug)]
pub(crate) struct ProcessQueue {
    /// Pulled, not yet acknowledged, by queue offset: body size, and the
    /// message itself when the queue keeps them (orderly consumption hands
    /// them out from here; concurrent consumption hands them to tasks at
    /// once and keeps only the bookkeeping).
    in_flight: BTreeMap<u64, (u64, Option<MessageExt>)>,
    /// Bytes of the bodies in `in_flight`.
    bytes: u64,
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
            in_flight: BTreeMap::new(),
            bytes: 0,
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
            let len = m.body().len() as u64;
            self.bytes += len;
            self.in_flight.insert(m.queue_offset().0, (len, keep.then(|| m.clone())));
        }
        self.next_pull = self.next_pull.max(next);
    }

    /// Acknowledges the messages at `offsets`; returns the offset to
    /// commit (see the module invariant).
    pub(crate) fn ack(&mut self, offsets: &[u64]) -> u64 {
        for o in offsets {
            if let Some((len, _)) = self.in_flight.remove(o) {
                self.bytes = self.bytes.saturating_sub(len);
            }
        }
        self.commit_offset()
    }

    /// The lowest unacknowledged offset, or the next pull position.
    pub(crate) fn commit_offset(&self) -> u64 {
        self.in_flight.keys().next().copied().unwrap_or(self.next_pull)
    }

    /// Messages in flight.
    pub(crate) fn count(&self) -> usize {
        self.in_flight.len()
    }

    /// Body bytes in flight.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Orderly consumption: the first message in flight.
    pub(crate) fn first(&self) -> Option<MessageExt> {
        self.in_flight.values().next().and_then(|(_, m)| m.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_offset_is_the_lowest_unacknowledged() {
        let mut pq = ProcessQueue::new(10);
        assert_eq!(pq.commit_offset(), 10);
        // No MessageExt needed to test the arithmetic on an empty queue.
        pq.next_pull = 15;
        assert_eq!(pq.commit_offset(), 15);
        assert_eq!(pq.ack(&[3]), 15);
        assert_eq!((pq.count(), pq.bytes()), (0, 0));
    }
}
