//! Dead-letter queues: messages that failed more than the maximum number of
//! reconsume attempts are parked in `%DLQ%<group>` (one queue) for a person
//! to inspect, resend or purge.
//!
//! * the reserved topic names shared by the retry and dead-letter paths,
//!   with RocketMQ's prefixes;
//! * [`DeadLetter`] and the store's DLQ API
//!   ([`Store::dlq_count`](crate::store::Store::dlq_count),
//!   [`Store::dlq_list`](crate::store::Store::dlq_list),
//!   [`Store::dlq_resend`](crate::store::Store::dlq_resend),
//!   [`Store::dlq_purge`](crate::store::Store::dlq_purge)).

mod api;
mod dedupe;

pub use api::{DeadLetter, DlqSelect, ResendTarget};
pub(crate) use dedupe::{already_dead_lettered, PendingDeadLetters};

/// Prefix of a consumer group's retry topic.
pub const RETRY_TOPIC_PREFIX: &str = "%RETRY%";
/// Prefix of a consumer group's dead-letter topic.
pub const DLQ_TOPIC_PREFIX: &str = "%DLQ%";

/// The retry topic of `group`.
///
/// ```
/// assert_eq!(mqstore::dlq::retry_topic("g1"), "%RETRY%g1");
/// ```
#[must_use]
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_TOPIC_PREFIX}{group}")
}

/// The dead-letter topic of `group`.
///
/// ```
/// assert_eq!(mqstore::dlq::dlq_topic("g1"), "%DLQ%g1");
/// ```
#[must_use]
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_TOPIC_PREFIX}{group}")
}

/// Whether `topic` is reserved for retry or dead-letter use, and so refused
/// as a user topic.
///
/// ```
/// assert!(mqstore::dlq::is_reserved_topic("%DLQ%g"));
/// assert!(!mqstore::dlq::is_reserved_topic("orders"));
/// ```
#[must_use]
pub fn is_reserved_topic(topic: &str) -> bool {
    topic.starts_with(RETRY_TOPIC_PREFIX) || topic.starts_with(DLQ_TOPIC_PREFIX)
}
