//! The next queue offset of every queue, handed out under one lock as
//! records are appended (the numbering lock of [`super::Inner`]).

use std::collections::HashMap;

/// Per topic, per queue id: the offset the next message of that queue
/// gets. Keyed by topic first so the send path looks a queue up with the
/// draft's `&str` and allocates only for a queue's first message.
#[derive(Debug, Default)]
pub(crate) struct QueueNumbering {
    next: HashMap<String, HashMap<u32, u64>>,
}

impl QueueNumbering {
    /// Hands out the next offset of `topic`/`queue_id` (from 0 for a queue
    /// never numbered) and moves past it.
    pub(crate) fn take(&mut self, topic: &str, queue_id: u32) -> u64 {
        let queues = match self.next.get_mut(topic) {
            Some(q) => q,
            None => self.next.entry(topic.to_owned()).or_default(),
        };
        let slot = queues.entry(queue_id).or_insert(0);
        let at = *slot;
        *slot += 1;
        at
    }

    /// Numbering of `topic`/`queue_id` resumes at `next`.
    pub(crate) fn set(&mut self, topic: &str, queue_id: u32, next: u64) {
        match self.next.get_mut(topic) {
            Some(q) => {
                q.insert(queue_id, next);
            }
            None => {
                self.next.entry(topic.to_owned()).or_default().insert(queue_id, next);
            }
        }
    }

    /// Forgets every queue of `topic` (deleted, or created again): its
    /// queues number from 0.
    pub(crate) fn forget_topic(&mut self, topic: &str) {
        self.next.remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_each_queue_on_its_own_and_forgets_whole_topics() {
        let mut n = QueueNumbering::default();
        assert_eq!((n.take("a", 0), n.take("a", 0), n.take("a", 1), n.take("b", 0)), (0, 1, 0, 0));
        n.set("a", 1, 7);
        n.set("c", 2, 3);
        assert_eq!((n.take("a", 1), n.take("c", 2), n.take("a", 0)), (7, 3, 2));
        n.forget_topic("a");
        assert_eq!((n.take("a", 0), n.take("a", 1), n.take("b", 0)), (0, 0, 1));
    }
}
