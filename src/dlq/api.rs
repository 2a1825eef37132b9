//! [`DeadLetter`] and the DLQ methods of [`Store`].

use super::{dlq_topic, retry_topic};
use crate::commitlog::{Durability, RecordDraft};
use crate::error::{Error, Result};
use crate::message::properties::{
    rewrite, DLQ_ORIGIN_MESSAGE_ID, DLQ_ORIGIN_TOPIC, DLQ_RESENDS, MAX_RECONSUME_TIMES, ORIGIN_MESSAGE_ID,
    RECONSUME_TIME, RETRY_TOPIC,
};
use crate::message::MessageExt;
use crate::store::{PullStatus, Store, TagFilter};
use crate::topic::TopicConfig;

/// Messages read per pull while walking a dead-letter queue.
const PAGE: usize = 256;

/// One message in a group's dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message's unique id (the id its producer got), or its
    /// store-level id if it has none.
    pub msg_id: String,
    /// Topic the message was sent to.
    pub original_topic: String,
    /// Store-level id of the first stored copy (the message as sent).
    pub original_offset_msg_id: String,
    /// How many deliveries failed before it was dead-lettered, not
    /// counting the first (RocketMQ's reconsume times).
    pub reconsume_times: u32,
    /// When it was dead-lettered (the dead letter's store time, ms since
    /// the epoch): the last failure.
    pub failed_at_ms: u64,
    /// Its position in the dead-letter queue.
    pub dlq_offset: u64,
    /// The stored dead letter itself (body, tags, keys, properties).
    pub message: MessageExt,
}

impl DeadLetter {
    /// Reads the dead-letter fields of a message of a `%DLQ%` topic.
    #[must_use]
    pub fn from_message(message: MessageExt) -> Self {
        let msg_id = message
            .property(DLQ_ORIGIN_MESSAGE_ID)
            .or_else(|| message.msg_id())
            .map_or_else(|| message.offset_msg_id().into(), str::to_string);
        let original_topic = message
            .property(DLQ_ORIGIN_TOPIC)
            .or_else(|| message.property(RETRY_TOPIC))
            .unwrap_or_else(|| message.stored_topic())
            .to_string();
        let original_offset_msg_id =
            message.property(ORIGIN_MESSAGE_ID).map_or_else(|| message.offset_msg_id().into(), str::to_string);
        Self {
            msg_id,
            original_topic,
            original_offset_msg_id,
            reconsume_times: message.reconsume_times(),
            failed_at_ms: message.store_timestamp(),
            dlq_offset: message.queue_offset().0,
            message,
        }
    }

    /// Whether `id` names this dead letter: its unique id, its first
    /// copy's store-level id, or the dead letter's own store-level id.
    #[must_use]
    pub fn matches_id(&self, id: &str) -> bool {
        self.msg_id == id || self.original_offset_msg_id == id || self.message.offset_msg_id() == id
    }
}

/// Which dead letters [`Store::dlq_resend`] sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlqSelect {
    /// Those [`DeadLetter::matches_id`] this id.
    Id(String),
    /// Every dead letter of the group.
    All,
}

/// Where [`Store::dlq_resend`] sends dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResendTarget {
    /// Back to the topic they were first sent to, as new messages (every
    /// group subscribed to it gets them again), with a fresh reconsume
    /// count.
    OriginalTopic,
    /// To the group's retry topic (only this group gets them again), with
    /// a fresh reconsume count.
    RetryTopic,
}

/// Whether any message of `topic`'s queue 0 satisfies `f` (false if the
/// topic does not exist). Walks the whole queue.
pub(crate) fn any_stored(store: &Store, topic: &str, mut f: impl FnMut(&MessageExt) -> bool) -> Result<bool> {
    let mut found = false;
    walk(store, topic, 0, usize::MAX, |m| found |= f(&m))?;
    Ok(found)
}

/// Calls `f` on up to `max` messages of `topic`'s queue 0 from `from`.
fn walk(store: &Store, topic: &str, from: u64, max: usize, mut f: impl FnMut(MessageExt)) -> Result<usize> {
    if store.topic(topic).is_none() {
        return Ok(0);
    }
    let mut at = from.max(store.min_offset(topic, 0)?);
    let mut n = 0;
    while n < max {
        let r = store.pull(topic, 0, at, PAGE.min(max - n), &TagFilter::All)?;
        if r.status != PullStatus::Found && r.next_offset == at {
            break;
        }
        for m in r.messages {
            n += 1;
            f(m);
        }
        at = r.next_offset;
    }
    Ok(n)
}

impl Store {
    /// Messages in `group`'s dead-letter queue (0 if it has none).
    pub fn dlq_count(&self, group: &str) -> Result<u64> {
        crate::topic::validate_group_name(group)?;
        let topic = dlq_topic(group);
        if self.topic(&topic).is_none() {
            return Ok(0);
        }
        Ok(self.max_offset(&topic, 0)?.saturating_sub(self.min_offset(&topic, 0)?))
    }

    /// Up to `max` dead letters of `group` from position `from` of its
    /// dead-letter queue, oldest first.
    pub fn dlq_list(&self, group: &str, from: u64, max: usize) -> Result<Vec<DeadLetter>> {
        crate::topic::validate_group_name(group)?;
        let mut out = Vec::new();
        walk(self, &dlq_topic(group), from, max, |m| out.push(DeadLetter::from_message(m)))?;
        Ok(out)
    }

    /// Sends the selected dead letters of `group` to `target` as new
    /// messages (same id, body, tags, keys and user properties; reconsume
    /// count 0) and returns how many were sent. The dead letters stay in
    /// the queue (see [`Store::dlq_purge`]); if one fails again past the
    /// maximum it is dead-lettered again, as a new entry.
    ///
    /// Errors: [`Error::InvalidArgument`] for a bad group name, an id that
    /// matches nothing, or an original topic that no longer exists (nothing
    /// is sent then).
    pub fn dlq_resend(&self, group: &str, select: &DlqSelect, target: ResendTarget) -> Result<usize> {
        crate::topic::validate_group_name(group)?;
        let letters: Vec<DeadLetter> = self
            .dlq_list(group, 0, usize::MAX)?
            .into_iter()
            .filter(|d| match select {
                DlqSelect::All => true,
                DlqSelect::Id(id) => d.matches_id(id),
            })
            .collect();
        if let DlqSelect::Id(id) = select {
            if letters.is_empty() {
                return Err(Error::InvalidArgument(format!("no dead letter of group {group} has id {id}")));
            }
        }
        let retry = retry_topic(group);
        // Check every destination before sending anything.
        let mut plans = Vec::with_capacity(letters.len());
        for d in &letters {
            // One more resend: if it fails past the maximum again it is
            // dead-lettered again (a new generation of the same id).
            let resends = d.message.property(DLQ_RESENDS).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let resends = resends.saturating_add(1).to_string();
            let (topic, queue_id, props) = match target {
                ResendTarget::OriginalTopic => {
                    let q = self.write_queues_of(&d.original_topic)?.rotate_id();
                    let mut remove = bookkeeping();
                    remove.extend([RETRY_TOPIC, ORIGIN_MESSAGE_ID]);
                    let add = [(DLQ_RESENDS, resends.as_str())];
                    (d.original_topic.clone(), q, rewrite(d.message.raw_properties(), &remove, &add)?)
                }
                ResendTarget::RetryTopic => {
                    let props = d.message.raw_properties();
                    let add = [(RETRY_TOPIC, d.original_topic.as_str()), (DLQ_RESENDS, resends.as_str())];
                    (retry.clone(), 0, rewrite(props, &bookkeeping(), &add)?)
                }
            };
            plans.push((topic, queue_id, props));
        }
        if target == ResendTarget::RetryTopic && !letters.is_empty() && self.topic(&retry).is_none() {
            self.put_topic(TopicConfig::new(&retry, 1))?;
        }
        let drafts: Vec<RecordDraft<'_>> = plans
            .iter()
            .zip(&letters)
            .map(|((topic, queue_id, props), d)| RecordDraft {
                topic,
                queue_id: *queue_id,
                flag: d.message.flag(),
                born_timestamp: d.message.born_timestamp(),
                properties: props,
                body: d.message.body(),
                ..RecordDraft::default()
            })
            .collect();
        if drafts.is_empty() {
            return Ok(0);
        }
        self.ensure_open()?;
        self.inner.dispatch.check()?;
        crate::store::send::append_numbered(&self.inner, &drafts, &[], Durability::Wait)?;
        Ok(drafts.len())
    }

    /// Removes every dead letter of `group` and returns how many there
    /// were. Their records stay in the commit log until log cleanup.
    pub fn dlq_purge(&self, group: &str) -> Result<u64> {
        crate::topic::validate_group_name(group)?;
        let topic = dlq_topic(group);
        let n = self.dlq_count(group)?;
        let mut pending = self.inner.dead_letters.lock();
        if self.topic(&topic).is_some() {
            self.delete_topic(&topic)?;
        }
        pending.forget_group(group);
        Ok(n)
    }
}

/// What a resent message leaves behind: what any re-addressed copy drops,
/// and the dead-letter and retry bookkeeping.
fn bookkeeping() -> Vec<&'static str> {
    let mut v = crate::retry::sendback::SCHEDULE_BOOKKEEPING.to_vec();
    v.extend([DLQ_ORIGIN_TOPIC, DLQ_ORIGIN_MESSAGE_ID, RECONSUME_TIME, MAX_RECONSUME_TIMES]);
    v
}
