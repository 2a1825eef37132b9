//! A topic's write queues as producers see them, with the store's default
//! rotation over them.

use crate::store::MessageQueue;
use std::sync::atomic::{AtomicU64, Ordering};

/// Built once per topic configuration and shared (`Arc`) by every send, so
/// a send allocates no list and no topic name per queue.
///
/// The rotation counter belongs to the topic, as RocketMQ's
/// `TopicPublishInfo.sendWhichQueue` does. One counter shared by every
/// topic skewed the spread whenever a producer cycled over topics: with
/// 1,000 topics of 10 queues sent to in turn, topic `t` always drew a
/// ticket `= t (mod 10)` and so used one queue of its ten.
#[derive(Debug)]
pub(crate) struct WriteQueues {
    queues: Box<[MessageQueue]>,
    next: AtomicU64,
}

impl WriteQueues {
    /// The write queues `0..count` of `topic`; the rotation starts at
    /// queue 0.
    pub(crate) fn new(topic: &str, count: u32) -> Self {
        let queues = (0..count).map(|queue_id| MessageQueue { topic: topic.to_string(), queue_id }).collect();
        Self { queues, next: AtomicU64::new(0) }
    }

    /// The queues, by queue id.
    pub(crate) fn queues(&self) -> &[MessageQueue] {
        &self.queues
    }

    /// The next queue of the topic's rotation (the default for sends that
    /// name no queue and no selector); `None` for a topic without write
    /// queues.
    pub(crate) fn rotate(&self) -> Option<&MessageQueue> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let len = u64::try_from(self.queues.len()).ok().filter(|&l| l > 0)?;
        self.queues.get(usize::try_from(n % len).ok()?)
    }

    /// The id of [`WriteQueues::rotate`]'s queue; 0 for a topic without
    /// write queues (sends refuse those before asking).
    pub(crate) fn rotate_id(&self) -> u32 {
        self.rotate().map_or(0, |q| q.queue_id)
    }
}

/// Equal when the queues are: the rotation's position is not part of a
/// topic's configuration.
impl PartialEq for WriteQueues {
    fn eq(&self, other: &Self) -> bool {
        self.queues == other.queues
    }
}

impl Eq for WriteQueues {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_over_the_queues_of_its_own_topic() {
        let a = WriteQueues::new("A", 3);
        let b = WriteQueues::new("B", 3);
        let mut seen = Vec::new();
        for _ in 0..2 {
            // Sends to B in between must not move A's rotation.
            seen.push(a.rotate().map(|q| q.queue_id));
            b.rotate();
            b.rotate();
        }
        seen.push(a.rotate().map(|q| q.queue_id));
        assert_eq!(seen, [Some(0), Some(1), Some(2)]);
        assert_eq!(a.rotate().map(|q| (q.topic.as_str(), q.queue_id)), Some(("A", 0)));
        assert_eq!(WriteQueues::new("C", 0).rotate(), None);
    }
}
