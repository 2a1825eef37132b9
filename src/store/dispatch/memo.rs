//! The queues dispatch wrote to recently, so a record looks up its topic's
//! incarnation and its consume queue in a small direct-mapped table (a
//! hash and a compare) instead of two locked map lookups and an `Arc`
//! clone (about 300 instructions per 128-byte message).
//!
//! The memo lives under the dispatch round lock and persists across
//! rounds; recovery passes use their own. Invariants that make a
//! remembered entry as good as a fresh lookup:
//!
//! * Only positive lookups are remembered. A topic's `since` changes only
//!   when the topic is deleted (and perhaps created again), and a queue
//!   object is replaced only when it is removed (topic deletion,
//!   `rebuild_queue`, recovery's repairs). [`Generation`] counts both kinds
//!   of removal, each bumped once the removed thing is gone from its map;
//!   entries are used only while it is what it was when they were made,
//!   and the whole memo is dropped when it moves. A record that reads the
//!   generation before a bump is in the same race with that removal as a
//!   record that looked the topic up just before it.
//! * At most [`SLOTS`] entries: a queue whose slot another holds replaces
//!   it.

use crate::consumequeue::ConsumeQueue;
use crate::error::Result;
use crate::store::numbering::FxHasher;
use std::hash::Hasher;
use std::sync::Arc;

/// Queues remembered at most (a power of two).
const SLOTS: usize = 256;

/// The topic table's and the consume-queue set's removal counts.
pub(super) type Generation = (u64, u64);

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct QueueMemo {
    generation: Generation,
    /// [`SLOTS`] entries once used, at the slot of their [`slot`]; an entry
    /// is checked against topic and queue id, so another queue with the
    /// same slot is a miss (and replaces it).
    slots: Vec<Option<Remembered>>,
}

#[derive(Debug)]
struct Remembered {
    /// The topic's `since` (start of its incarnation in the log).
    since: u64,
    queue: Arc<ConsumeQueue>,
}

fn slot(topic: &str, queue_id: u32) -> usize {
    let mut h = FxHasher::default();
    h.write(topic.as_bytes());
    h.write_u32(queue_id);
    // The high bits: FxHash's last step is a multiply, which mixes upwards.
    (h.finish() >> 56) as usize % SLOTS
}

impl QueueMemo {
    /// The `since` of `topic` and its queue `queue_id`: remembered if the
    /// removal counts are still `generation`, else from `lookup`
    /// (remembered when it finds them; `None` is passed on).
    pub(super) fn get_or_lookup(
        &mut self,
        topic: &str,
        queue_id: u32,
        generation: Generation,
        lookup: impl FnOnce() -> Result<Option<(u64, Arc<ConsumeQueue>)>>,
    ) -> Result<Option<(u64, &ConsumeQueue)>> {
        if generation != self.generation || self.slots.is_empty() {
            self.slots.clear();
            self.slots.resize_with(SLOTS, || None);
            self.generation = generation;
        }
        let i = slot(topic, queue_id);
        let hit = self.slots[i].as_ref().is_some_and(|r| r.queue.queue_id() == queue_id && r.queue.topic() == topic);
        if !hit {
            let Some((since, queue)) = lookup()? else {
                return Ok(None);
            };
            self.slots[i] = Some(Remembered { since, queue });
        }
        Ok(self.slots[i].as_ref().map(|r| (r.since, &*r.queue)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;
    use std::cell::Cell;

    #[test]
    fn remembers_queues_until_something_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let open =
            |topic: &str, id| Arc::new(ConsumeQueue::open(Arc::new(StdStorage), tmp.path(), topic, id, 8).unwrap());
        let (a0, a1, b0) = (open("A", 0), open("A", 1), open("B", 0));
        let calls = Cell::new(0);
        let mut memo = QueueMemo::default();
        let mut get = |topic: &str, id: u32, g: Generation, found: Option<(u64, &Arc<ConsumeQueue>)>| {
            let r = memo.get_or_lookup(topic, id, g, || {
                calls.set(calls.get() + 1);
                Ok(found.map(|(since, q)| (since, q.clone())))
            });
            r.unwrap().map(|(since, q)| (since, q.topic().to_string(), q.queue_id()))
        };
        let at = |since, topic: &str, id| Some((since, topic.to_string(), id));
        assert_eq!(get("A", 0, (0, 0), Some((10, &a0))), at(10, "A", 0));
        assert_eq!(get("A", 1, (0, 0), Some((10, &a1))), at(10, "A", 1));
        assert_eq!(get("B", 0, (0, 0), Some((20, &b0))), at(20, "B", 0));
        assert_eq!(calls.get(), 3);
        // All three are remembered: the lookup is not asked again.
        assert_eq!(get("A", 0, (0, 0), Some((99, &a0))), at(10, "A", 0));
        assert_eq!(get("B", 0, (0, 0), Some((99, &b0))), at(20, "B", 0));
        assert_eq!(get("A", 1, (0, 0), Some((99, &a1))), at(10, "A", 1));
        assert_eq!(calls.get(), 3);
        // A topic removed (a topic deleted and created again has a new
        // `since`), or a queue removed: asked again, and the new answer
        // holds.
        assert_eq!(get("A", 0, (1, 0), Some((30, &a0))), at(30, "A", 0));
        assert_eq!(get("A", 0, (1, 0), None), at(30, "A", 0));
        assert_eq!(get("B", 0, (1, 1), Some((40, &b0))), at(40, "B", 0));
        assert_eq!(calls.get(), 5);
        // A topic that is gone is passed on as such, and asked again each time.
        assert_eq!(get("A", 1, (2, 1), None), None);
        assert_eq!(get("A", 1, (2, 1), None), None);
        assert_eq!(calls.get(), 7);
    }

    #[test]
    fn stays_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let q = Arc::new(ConsumeQueue::open(Arc::new(StdStorage), tmp.path(), "T", 0, 8).unwrap());
        let mut memo = QueueMemo::default();
        for id in 0..(SLOTS as u32 * 4) {
            // Not the queue's id: every call misses, as with many queues.
            let _ = memo.get_or_lookup("T", id + 1, (0, 0), || Ok(Some((0, q.clone())))).unwrap();
            assert_eq!(memo.slots.len(), SLOTS);
        }
        // Slots spread: many queues of one topic do not share a few.
        let used: std::collections::BTreeSet<usize> = (0..64).map(|id| slot("T", id)).collect();
        assert!(used.len() > 40, "{} slots for 64 queues", used.len());
    }
}
