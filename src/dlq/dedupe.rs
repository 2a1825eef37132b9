//! Whether a message was already dead-lettered by a group, in memory that
//! does not grow with the dead-letter queue.
//!
//! A dead letter keeps its message's unique id, and dispatch indexes it
//! under `%DLQ%<group>#<id>`, so the dead-letter queue itself answers: one
//! index lookup finds every copy of that message in the group's queue
//! (only the current incarnation of the topic, and only records retention
//! kept). The one window the index cannot see is a dead letter written by
//! this process that dispatch has not indexed yet; [`PendingDeadLetters`]
//! holds those, and forgets each once dispatch has passed it, so it is
//! bounded by the dispatch lag, not by the number of dead letters.
//!
//! A message without a unique id (none the store writes itself lacks one)
//! is looked for by walking the group's dead-letter queue instead.

use crate::error::Result;
use crate::message::MessageExt;
use crate::retry::sendback::dlq_key;
use crate::store::{Store, MAX_QUERY_RESULTS};
use std::sync::atomic::Ordering;

/// Dead letters this process wrote that dispatch may not have indexed yet.
#[derive(Debug, Default)]
pub(crate) struct PendingDeadLetters {
    /// (group, deduplication key, physical offset of the dead letter).
    entries: Vec<(String, String, u64)>,
}

impl PendingDeadLetters {
    /// Notes a dead letter of `group` with deduplication key `key`, stored
    /// at `offset`.
    pub(crate) fn add(&mut self, group: &str, key: String, offset: u64) {
        self.entries.push((group.to_string(), key, offset));
    }

    /// Forgets every pending dead letter of `group` (its queue was purged).
    pub(crate) fn forget_group(&mut self, group: &str) {
        self.entries.retain(|(g, _, _)| g != group);
    }

    /// Forgets the dead letters below `dispatched`: dispatch queued each
    /// record's index keys before moving its position past it, and a
    /// lookup writes queued keys into the index first, so the lookup below
    /// finds them.
    fn prune(&mut self, dispatched: u64) {
        self.entries.retain(|&(_, _, offset)| offset >= dispatched);
    }

    fn contains(&self, group: &str, key: &str) -> bool {
        self.entries.iter().any(|(g, k, _)| g == group && k == key)
    }
}

/// Whether group `group`'s dead-letter topic `topic` already holds a dead
/// letter of `msg` (one with its [`dlq_key`] `key`). The caller holds the
/// lock on `pending` across this check and the write that follows it.
pub(crate) fn already_dead_lettered(
    store: &Store,
    pending: &mut PendingDeadLetters,
    group: &str,
    topic: &str,
    msg: &MessageExt,
    key: &str,
) -> Result<bool> {
    pending.prune(store.inner.dispatch.dispatched.load(Ordering::Acquire));
    if pending.contains(group, key) {
        return Ok(true);
    }
    let Some(id) = msg.msg_id() else {
        return super::api::any_stored(store, topic, |m| dlq_key(m) == key);
    };
    // The queue holds at most one copy of a message per resend count, and
    // the one asked about is among the newest 64 unless the message was
    // resent and dead-lettered 64 times since.
    let copies = store.query_by_key(topic, id, 0, u64::MAX, MAX_QUERY_RESULTS)?;
    Ok(copies.iter().any(|m| dlq_key(m) == key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::{DlqSelect, ResendTarget};
    use crate::message::Message;
    use crate::retry::sendback::{send_back, SentBack};
    use crate::store::{StoreOptions, TagFilter};
    use crate::topic::TopicConfig;
    use std::path::Path;

    fn open(dir: &Path) -> Store {
        Store::open(dir, StoreOptions::default().consume_queue_units_per_file(64)).unwrap()
    }

    /// The message at `offset` of topic `t`'s queue 0.
    fn nth(store: &Store, offset: u64) -> MessageExt {
        store.pull("t", 0, offset, 1, &TagFilter::All).unwrap().messages.remove(0)
    }

    /// Dead-letters `m` for `group` (past the maximum of 16 failures).
    fn dead_letter(store: &Store, group: &str, m: &MessageExt) -> SentBack {
        send_back(store, group, m, 16, 16, false).unwrap()
    }

    /// Dispatches everything written (under Async flush all of it is
    /// readable).
    fn dispatched(store: &Store) {
        crate::store::dispatch::dispatch_available(&store.inner).unwrap();
        assert_eq!(store.inner.dispatch.dispatched.load(Ordering::Acquire), store.inner.log.max_offset().get());
    }

    #[test]
    fn a_message_is_dead_lettered_once_per_group_and_resend() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.create_topic(TopicConfig::new("t", 1)).unwrap();
        store.send(Message::new("t", "a")).unwrap();
        store.send(Message::new("t", "b")).unwrap();
        let (a, b) = (nth(&store, 0), nth(&store, 1));
        assert_eq!(dead_letter(&store, "g", &a), SentBack::DeadLettered);
        assert_eq!(dead_letter(&store, "g", &a), SentBack::AlreadyDeadLettered);
        assert_eq!(dead_letter(&store, "g2", &a), SentBack::DeadLettered, "another group");
        assert_eq!(dead_letter(&store, "g", &b), SentBack::DeadLettered, "another message");

        // Once dispatch has indexed them, nothing is pending: the index
        // answers alone.
        dispatched(&store);
        assert_eq!(dead_letter(&store, "g", &a), SentBack::AlreadyDeadLettered);
        assert_eq!(dead_letter(&store, "g", &b), SentBack::AlreadyDeadLettered);
        assert!(store.inner.dead_letters.lock().entries.is_empty());
        assert_eq!(store.dlq_count("g").unwrap(), 2);

        // A resent dead letter that fails again is dead-lettered again, once.
        assert_eq!(
            store.dlq_resend("g", &DlqSelect::Id(a.msg_id().unwrap().into()), ResendTarget::OriginalTopic).unwrap(),
            1
        );
        let resent = nth(&store, 2);
        assert_eq!(resent.msg_id(), a.msg_id());
        assert_eq!(dead_letter(&store, "g", &resent), SentBack::DeadLettered);
        assert_eq!(dead_letter(&store, "g", &resent), SentBack::AlreadyDeadLettered);
        store.close().unwrap();

        // After a reopen (nothing pending), and until the queue is purged.
        let store = open(dir.path());
        let a = nth(&store, 0);
        assert_eq!(dead_letter(&store, "g", &a), SentBack::AlreadyDeadLettered);
        assert_eq!(dead_letter(&store, "g", &nth(&store, 2)), SentBack::AlreadyDeadLettered);
        assert_eq!(store.dlq_purge("g").unwrap(), 3);
        assert_eq!(dead_letter(&store, "g", &a), SentBack::DeadLettered, "purged");
        assert_eq!(dead_letter(&store, "g", &a), SentBack::AlreadyDeadLettered);
        assert_eq!(dead_letter(&store, "g2", &a), SentBack::AlreadyDeadLettered);
        store.close().unwrap();
    }

    /// What the store remembers does not grow with the dead letters stored.
    #[test]
    fn pending_dead_letters_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.create_topic(TopicConfig::new("t", 1)).unwrap();
        let n = 500;
        for i in 0..n {
            store.send(Message::new("t", format!("m{i}"))).unwrap();
        }
        let mut most = 0;
        for i in 0..n {
            assert_eq!(dead_letter(&store, "g", &nth(&store, i)), SentBack::DeadLettered);
            most = most.max(store.inner.dead_letters.lock().entries.len());
        }
        dispatched(&store);
        assert_eq!(dead_letter(&store, "g", &nth(&store, 0)), SentBack::AlreadyDeadLettered);
        assert!(store.inner.dead_letters.lock().entries.is_empty());
        assert!(most < 100, "{most} dead letters pending at once");
        assert_eq!(store.dlq_count("g").unwrap(), n);
        store.close().unwrap();
    }

    #[test]
    fn pending_entries_are_kept_until_dispatch_passes_them() {
        let mut p = PendingDeadLetters::default();
        p.add("g", "k1".into(), 100);
        p.add("g", "k2".into(), 200);
        p.add("h", "k1".into(), 300);
        assert!(p.contains("g", "k1") && p.contains("h", "k1") && !p.contains("h", "k2"));
        p.prune(100);
        assert!(p.contains("g", "k1"), "dispatch is at the record, not past it");
        p.prune(201);
        assert!(!p.contains("g", "k1") && !p.contains("g", "k2") && p.contains("h", "k1"));
        p.forget_group("h");
        assert!(p.entries.is_empty());
    }
}
