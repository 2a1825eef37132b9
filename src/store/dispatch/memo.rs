//! The last queue a dispatch round wrote to, so a run of records for one
//! queue (a batch send, or a busy queue) looks up its topic's incarnation
//! and its consume queue once instead of per record: two locked map
//! lookups and an `Arc` clone, about 300 instructions per 128-byte
//! message.
//!
//! Invariants that make a remembered entry as good as a fresh lookup:
//!
//! * Only positive lookups are remembered. A topic's `since` changes only
//!   when the topic is deleted (and perhaps created again), and every
//!   deletion bumps [`crate::topic::TopicTable::removals`] after the table
//!   no longer holds the topic; an entry is used only while that count is
//!   what it was when the entry was made. A record that checks the count
//!   before the bump is in the same race with the deletion as a record
//!   that looked the topic up just before it.
//! * A queue object is replaced only by a deletion (above) or by
//!   `rebuild_queue` and recovery's repairs; `rebuild_queue` holds the
//!   round lock, and recovery's repairs run between calls that each start
//!   with an empty memo, so neither happens while a memo is alive.

use crate::consumequeue::ConsumeQueue;
use crate::error::Result;
use std::sync::Arc;

/// See the module documentation. One per dispatch round (or recovery
/// pass); never shared between threads.
#[derive(Default)]
pub(super) struct QueueMemo {
    last: Option<Remembered>,
}

struct Remembered {
    /// The topic's `since` (start of its incarnation in the log).
    since: u64,
    /// The topic table's removal count when looked up.
    removals: u64,
    queue: Arc<ConsumeQueue>,
}

impl QueueMemo {
    /// The `since` of `topic` and its queue `queue_id`: remembered if the
    /// topic table's removal count is still `removals`, else from `lookup`
    /// (remembered when it finds them; `None` is passed on).
    pub(super) fn get_or_lookup(
        &mut self,
        topic: &str,
        queue_id: u32,
        removals: u64,
        lookup: impl FnOnce() -> Result<Option<(u64, Arc<ConsumeQueue>)>>,
    ) -> Result<Option<(u64, &ConsumeQueue)>> {
        let hit = self
            .last
            .as_ref()
            .is_some_and(|r| r.removals == removals && r.queue.queue_id() == queue_id && r.queue.topic() == topic);
        if !hit {
            let Some((since, queue)) = lookup()? else {
                return Ok(None);
            };
            self.last = Some(Remembered { since, removals, queue });
        }
        Ok(self.last.as_ref().map(|r| (r.since, &*r.queue)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;
    use std::cell::Cell;

    #[test]
    fn remembers_one_queue_until_a_topic_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let open =
            |topic: &str, id| Arc::new(ConsumeQueue::open(Arc::new(StdStorage), tmp.path(), topic, id, 8).unwrap());
        let (a0, a1, b0) = (open("A", 0), open("A", 1), open("B", 0));
        let calls = Cell::new(0);
        let mut memo = QueueMemo::default();
        let mut get = |topic: &str, id: u32, removals: u64, found: Option<(u64, &Arc<ConsumeQueue>)>| {
            let r = memo.get_or_lookup(topic, id, removals, || {
                calls.set(calls.get() + 1);
                Ok(found.map(|(since, q)| (since, q.clone())))
            });
            r.unwrap().map(|(since, q)| (since, q.topic().to_string(), q.queue_id()))
        };
        let a = |since| Some((since, "A".to_string(), 0));
        assert_eq!(get("A", 0, 0, Some((10, &a0))), a(10));
        // Remembered: the lookup is not asked again.
        assert_eq!(get("A", 0, 0, Some((99, &a0))), a(10));
        assert_eq!(calls.get(), 1);
        // Another queue of the topic, or another topic, is looked up.
        assert_eq!(get("A", 1, 0, Some((10, &a1))), Some((10, "A".to_string(), 1)));
        assert_eq!(get("B", 0, 0, Some((20, &b0))), Some((20, "B".to_string(), 0)));
        assert_eq!(calls.get(), 3);
        // A removal since the lookup: asked again, and the new answer holds
        // (a topic deleted and created again has a new `since`).
        assert_eq!(get("B", 0, 1, Some((30, &b0))), Some((30, "B".to_string(), 0)));
        assert_eq!(calls.get(), 4);
        // A topic that is gone is passed on as such, and every later record
        // asks again.
        assert_eq!(get("A", 0, 2, None), None);
        assert_eq!(get("A", 0, 2, None), None);
        assert_eq!(calls.get(), 6);
    }
}
