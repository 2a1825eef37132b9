//! The next queue offset of every queue, handed out under one lock as
//! records are appended (the numbering lock of [`super::Inner`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Per topic, per queue id: the offset the next message of that queue
/// gets. Keyed by topic first so the send path looks a queue up with the
/// draft's `&str` and allocates only for a queue's first message.
#[derive(Debug, Default)]
pub(crate) struct QueueNumbering {
    next: HashMap<String, HashMap<u32, u64, Fx>, Fx>,
}

/// Builds [`FxHasher`]s.
type Fx = BuildHasherDefault<FxHasher>;

/// rustc's FxHash: a rotate, xor and multiply per word. Numbering hashes
/// a topic and a queue id for every message, under the append lock, and
/// SipHash made that about 400 instructions per message. Its resistance
/// to chosen keys buys nothing here: the keys are topics the application
/// created and their queue ids.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
        }
        for &b in words.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl QueueNumbering {
    /// Hands out the next offset of `topic`/`queue_id` (from 0 for a queue
    /// never numbered) and moves past it.
    #[cfg(test)]
    pub(crate) fn take(&mut self, topic: &str, queue_id: u32) -> u64 {
        self.take_n(topic, queue_id, 1)
    }

    /// Hands out the next `n` offsets of `topic`/`queue_id` (consecutive,
    /// for a run of records of one queue) and returns the first.
    pub(crate) fn take_n(&mut self, topic: &str, queue_id: u32, n: u64) -> u64 {
        let queues = match self.next.get_mut(topic) {
            Some(q) => q,
            None => self.next.entry(topic.to_owned()).or_default(),
        };
        let slot = queues.entry(queue_id).or_insert(0);
        let at = *slot;
        *slot += n;
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

    /// A run takes as many consecutive offsets as it has records, and the
    /// next take of the queue continues after them.
    #[test]
    fn a_run_takes_consecutive_offsets() {
        let mut n = QueueNumbering::default();
        assert_eq!((n.take_n("a", 0, 3), n.take("a", 0), n.take_n("a", 1, 2), n.take_n("a", 0, 1)), (0, 3, 0, 4));
        assert_eq!((n.take("a", 1), n.take("a", 0)), (2, 5));
    }

    /// Many topics and queues (topic names that differ only past their
    /// first eight bytes, queue ids far apart) keep separate counters.
    #[test]
    fn many_queues_number_independently() {
        let mut n = QueueNumbering::default();
        let topics: Vec<String> = (0..40).map(|t| format!("topic-name-{t}")).collect();
        for round in 0..3 {
            for t in &topics {
                for q in [0, 1, 7, 1 << 20, u32::MAX] {
                    assert_eq!(n.take(t, q), round, "{t}/{q}");
                }
            }
        }
    }
}
