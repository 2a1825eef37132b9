//! Send-back: what a message a consumer group failed becomes (RocketMQ's
//! `consumerSendMessageBack`). Below the group's maximum it is stored again
//! as a delayed message for the group's retry topic, at delay level
//! `3 + reconsume times` (10 s, 30 s, 1 min, ...); past it, it goes to the
//! group's dead-letter topic, once.
//!
//! The copy keeps the message's id, body, tags, keys and user properties;
//! it carries the original topic ([`RETRY_TOPIC`]), the first store-level id
//! of the chain ([`ORIGIN_MESSAGE_ID`]) and the reconsume count (the
//! record header and [`RECONSUME_TIME`]).

use crate::commitlog::{Durability, RecordDraft};
use crate::dlq::{dlq_topic, retry_topic};
use crate::error::{Error, Result};
use crate::message::properties::{
    rewrite, CONSUME_START_TIME, DELAY, DELAY_DUE_MS, DELAY_SOURCE, DLQ_ORIGIN_MESSAGE_ID, DLQ_ORIGIN_TOPIC,
    DLQ_RESENDS, DLQ_SOURCE, MAX_RECONSUME_TIMES, ORIGIN_MESSAGE_ID, REAL_QID, REAL_TOPIC, RECONSUME_TIME, RETRY_TOPIC,
    TIMER_DELIVER_MS,
};
use crate::message::MessageExt;
use crate::store::{SendStatus, Store};
use crate::topic::TopicConfig;

use super::SCHEDULE_TOPIC;

/// RocketMQ's `maxReconsumeTimes` default (used for `-1`).
pub const DEFAULT_MAX_RECONSUME_TIMES: u32 = 16;

/// Where a failed message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SentBack {
    /// Stored for redelivery through the retry topic at this delay level.
    Retry { level: usize },
    /// Stored in the dead-letter topic.
    DeadLettered,
    /// Its dead letter was already stored (a redelivery after a crash
    /// between dead-lettering and the offset commit): nothing written.
    AlreadyDeadLettered,
}

/// The original topic of `msg` (a retry's [`RETRY_TOPIC`]).
pub(crate) fn original_topic(msg: &MessageExt) -> &str {
    msg.property(RETRY_TOPIC).unwrap_or_else(|| msg.stored_topic())
}

/// The `<topic>:<queue>:<offset>` naming the record a dead letter came
/// from.
pub(crate) fn dlq_source(msg: &MessageExt) -> String {
    format!("{}:{}:{}", msg.stored_topic(), msg.queue_id(), msg.queue_offset().0)
}

/// What makes a dead letter unique within its group: the message's unique
/// id and how often it was resent from the queue. Copies of one message
/// made by at-least-once redelivery (a crash between a send-back and its
/// offset commit duplicates the retry chain) share it, so only the first
/// to fail past the maximum is dead-lettered.
pub(crate) fn dlq_key(msg: &MessageExt) -> String {
    let id = msg.msg_id().map_or_else(|| dlq_source(msg), str::to_string);
    format!("{id}#{}", msg.property(DLQ_RESENDS).unwrap_or("0"))
}

/// Properties a message leaves behind when the store re-addresses it.
pub(crate) const SCHEDULE_BOOKKEEPING: [&str; 8] =
    [DELAY, DELAY_DUE_MS, DELAY_SOURCE, REAL_TOPIC, REAL_QID, TIMER_DELIVER_MS, DLQ_SOURCE, CONSUME_START_TIME];

/// Sends `msg`, which group `group` failed to consume after `failures`
/// deliveries failed (its reconsume count: 0 for the first failure), back
/// for a retry, or to the dead-letter topic once `failures` reached `max`
/// (or when `dead_letter` is set, as orderly consumers do).
///
/// Returns only once the copy is stored as the flush mode promises; an
/// error means nothing the caller may rely on was stored, and the caller
/// keeps the message (it retries locally).
pub(crate) fn send_back(
    store: &Store,
    group: &str,
    msg: &MessageExt,
    failures: u32,
    max: u32,
    dead_letter: bool,
) -> Result<SentBack> {
    if dead_letter || failures >= max {
        return send_to_dlq(store, group, msg, failures);
    }
    let inner = &store.inner;
    let levels = &inner.opts.delay_levels;
    let level = (3 + failures as usize).min(levels.len()).max(1);
    let delay = levels.delay(level).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let now = inner.opts.commit_log.clock.now_ms();
    let origin = msg.property(ORIGIN_MESSAGE_ID).map_or_else(|| msg.offset_msg_id().into(), str::to_string);
    let (next, level_s, due, max_s) =
        ((failures + 1).to_string(), level.to_string(), now.saturating_add(delay).to_string(), max.to_string());
    let retry = retry_topic(group);
    let add = [
        (RETRY_TOPIC, original_topic(msg)),
        (ORIGIN_MESSAGE_ID, origin.as_str()),
        (RECONSUME_TIME, next.as_str()),
        (MAX_RECONSUME_TIMES, max_s.as_str()),
        (DELAY, level_s.as_str()),
        (REAL_TOPIC, retry.as_str()),
        (REAL_QID, "0"),
        (DELAY_DUE_MS, due.as_str()),
    ];
    let props = rewrite(msg.raw_properties(), &SCHEDULE_BOOKKEEPING, &add)?;
    store_copy(store, SCHEDULE_TOPIC, (level - 1) as u32, msg, failures + 1, &props)?;
    Ok(SentBack::Retry { level })
}

fn send_to_dlq(store: &Store, group: &str, msg: &MessageExt, failures: u32) -> Result<SentBack> {
    let inner = &store.inner;
    let topic = dlq_topic(group);
    let source = dlq_source(msg);
    let key = dlq_key(msg);
    // One dead-lettering at a time (one lock for all groups), so the check
    // and the write cannot interleave with a second one for the same
    // message.
    let mut pending = inner.dead_letters.lock();
    if crate::dlq::already_dead_lettered(store, &mut pending, group, &topic, msg, &key)? {
        return Ok(SentBack::AlreadyDeadLettered);
    }
    if store.topic(&topic).is_none() {
        store.put_topic(TopicConfig::new(&topic, 1))?;
    }
    let origin = msg.property(ORIGIN_MESSAGE_ID).map_or_else(|| msg.offset_msg_id().into(), str::to_string);
    let id = msg.msg_id().map_or_else(|| msg.offset_msg_id().into(), str::to_string);
    let times = failures.to_string();
    let add = [
        (RETRY_TOPIC, original_topic(msg)),
        (ORIGIN_MESSAGE_ID, origin.as_str()),
        (DLQ_ORIGIN_TOPIC, original_topic(msg)),
        (DLQ_ORIGIN_MESSAGE_ID, id.as_str()),
        (RECONSUME_TIME, times.as_str()),
        (DLQ_SOURCE, source.as_str()),
    ];
    let props = rewrite(msg.raw_properties(), &SCHEDULE_BOOKKEEPING, &add)?;
    let at = store_copy(store, &topic, 0, msg, failures, &props)?;
    pending.add(group, key, at);
    Ok(SentBack::DeadLettered)
}

/// Writes one copy of `msg`, waits for it to be stored as the flush mode
/// promises, and returns its physical offset.
fn store_copy(
    store: &Store,
    topic: &str,
    queue_id: u32,
    msg: &MessageExt,
    reconsume: u32,
    props: &[u8],
) -> Result<u64> {
    store.ensure_open()?;
    store.inner.dispatch.check()?;
    if props.len() > crate::commitlog::MAX_PROPERTIES_LEN {
        return Err(Error::MessageTooLarge {
            size: props.len() as u64,
            max: crate::commitlog::MAX_PROPERTIES_LEN as u64,
        });
    }
    let draft = RecordDraft {
        topic,
        queue_id,
        flag: msg.flag(),
        sysflag: msg.sysflag(),
        born_timestamp: msg.born_timestamp(),
        reconsume_times: reconsume,
        properties: props,
        body: msg.body(),
        ..RecordDraft::default()
    };
    let (appended, _, status) = crate::store::send::append_numbered(&store.inner, &[draft], &[], Durability::Wait)?;
    let offset = appended.first().map_or(0, |a| a.offset.get());
    match status {
        // Stored (and durable as the flush mode promises) on this master;
        // replication is still owed but does not decide whether the
        // original may be acknowledged (resending would only duplicate it).
        SendStatus::SendOk | SendStatus::FlushSlaveTimeout | SendStatus::SlaveNotAvailable => Ok(offset),
        // Not confirmed durable: the caller must not acknowledge on it.
        SendStatus::FlushDiskTimeout => Err(Error::Timeout { what: "the flush of a sent-back message", offset }),
    }
}
