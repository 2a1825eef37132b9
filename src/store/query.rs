//! Lookups through the message index: by key, by either message id.

use super::Store;
use crate::error::{Error, Result};
use crate::message::MessageExt;

/// Most results [`Store::query_by_key`] returns (RocketMQ caps a query at
/// 64 too, `maxMsgsNumBatch`).
pub const MAX_QUERY_RESULTS: usize = 64;

/// Checks a key query's arguments (shared with [`StoreView`](super::StoreView)).
pub(crate) fn check_query(topic: &str, key: &str) -> Result<()> {
    crate::topic::validate_topic_name(topic)?;
    if key.is_empty() {
        return Err(Error::InvalidArgument("an index key is never empty".into()));
    }
    Ok(())
}

/// Whether `m`, found through the index entry of `topic#key`, really is a
/// message of `topic` with that key or unique id, stored in the window.
pub(crate) fn is_hit(m: &MessageExt, topic: &str, key: &str, begin_ms: u64, end_ms: u64) -> bool {
    m.stored_topic() == topic
        && (m.msg_id() == Some(key) || m.keys().any(|k| k == key))
        && (begin_ms..=end_ms).contains(&m.store_timestamp())
}

/// The newest message with unique id `id` among the indexed topics
/// (`query` looks a key up in one topic).
pub(crate) fn newest_with_unique_id(
    topics: Vec<crate::topic::TopicConfig>,
    id: &str,
    mut query: impl FnMut(&str) -> Result<Vec<MessageExt>>,
) -> Result<Option<MessageExt>> {
    let mut newest: Option<MessageExt> = None;
    // The schedule topic's records are not indexed (their delivered copies
    // are).
    for cfg in topics.into_iter().filter(|c| c.name != crate::retry::SCHEDULE_TOPIC) {
        for m in query(&cfg.name)? {
            if m.msg_id().is_some_and(|u| u.eq_ignore_ascii_case(id))
                && newest.as_ref().is_none_or(|n| m.physical_offset() > n.physical_offset())
            {
                newest = Some(m);
            }
        }
    }
    Ok(newest)
}

impl Store {
    /// Messages of `topic` carrying `key` (one of its keys, or its unique
    /// id) stored between `begin_ms` and `end_ms` (inclusive, store time),
    /// newest first, at most `max` (capped at [`MAX_QUERY_RESULTS`]).
    /// Exact: index entries of other keys that share the key's hashes are
    /// checked against the records and left out.
    pub fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        begin_ms: u64,
        end_ms: u64,
        max: usize,
    ) -> Result<Vec<MessageExt>> {
        self.ensure_open()?;
        check_query(topic, key)?;
        let Some(since) = self.inner.topics.since(topic) else {
            return Ok(Vec::new());
        };
        let max = max.min(MAX_QUERY_RESULTS);
        let mut out = Vec::new();
        let mut failure = None;
        let ikey = crate::index::index_key(topic, key);
        // Older files hold nothing of this incarnation of the topic, or
        // nothing the log still has.
        let floor = since.max(self.inner.log.min_offset().get());
        self.inner.index.lookup_from(&ikey, floor, begin_ms, end_ms, max, |phy| {
            // Retention may raise the log's start meanwhile.
            if phy < since || phy < self.inner.log.min_offset().get() {
                return false;
            }
            match self.read_indexed(phy) {
                Ok(m) => {
                    let hit = is_hit(&m, topic, key, begin_ms, end_ms);
                    if hit {
                        out.push(m);
                    }
                    hit
                }
                Err(e) => {
                    failure.get_or_insert(e);
                    false
                }
            }
        });
        match failure {
            // A damaged record is reported only if it cost a result.
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    /// The message with id `id`: its store-level id
    /// ([`SendResult::offset_msg_id`](super::SendResult::offset_msg_id)) or
    /// its unique id ([`SendResult::msg_id`](super::SendResult::msg_id),
    /// looked up through the index in every topic; the newest copy when a
    /// retry or a resend stored it again). `None` when no message has it.
    pub fn message_by_id(&self, id: &str) -> Result<Option<MessageExt>> {
        self.ensure_open()?;
        // Both ids are 32 hex characters: try the store-level reading
        // first, and accept it only if the record there has exactly this id.
        if let Ok((_, _, offset)) = crate::message::decode_offset_msg_id(id) {
            if offset >= self.inner.log.min_offset() && offset < self.inner.log.max_offset() {
                if let Ok(m) = self.read_indexed(offset.get()) {
                    if m.offset_msg_id().eq_ignore_ascii_case(id) {
                        return Ok(Some(m));
                    }
                }
            }
        }
        newest_with_unique_id(self.inner.topics.list(), id, |topic| self.query_by_key(topic, id, 0, u64::MAX, 1))
    }

    fn read_indexed(&self, phy: u64) -> Result<MessageExt> {
        let rec = self.inner.log.read(crate::offset::PhysicalOffset(phy))?;
        MessageExt::from_record(&rec)
    }
}
