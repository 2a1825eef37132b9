//! Consumer groups: push consumers with concurrent or orderly listeners,
//! clustering and broadcasting, and the rebalancing that shares a topic's
//! queues among the members of a group.
//!
//! Membership is in-process: a consumer joins its group at
//! [`PushConsumerBuilder::start`] and leaves at [`PushConsumer::shutdown`],
//! and each change rebalances the group at once (RocketMQ polls every
//! 20 s). Hand-over is strict: a queue is taken from its old owner, whose
//! in-flight work on it finishes and whose offset is committed, before the
//! new owner starts, so two members of a clustering group never process one
//! queue at the same time.

mod jobs;
pub mod membership;
mod process_queue;
mod push;
pub mod rebalance;
mod registry;

pub use push::{PushConsumer, PushConsumerBuilder};
pub(crate) use registry::Registry;

use crate::message::MessageExt;
use crate::store::MessageQueue;

/// What a concurrent listener did with a batch (RocketMQ's
/// `ConsumeConcurrentlyStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeStatus {
    /// Consumed; the messages are acknowledged.
    Success,
    /// Not consumed; deliver the batch again later
    /// ([`PushConsumerBuilder::reconsume_delay`]). A panicking listener
    /// counts as this.
    ReconsumeLater,
}

/// What an orderly listener did with a message (RocketMQ's
/// `ConsumeOrderlyStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderlyStatus {
    /// Consumed; the next message of the queue may follow.
    Success,
    /// Not consumed; deliver the same message again after
    /// [`PushConsumerBuilder::suspend_interval`], before anything later in
    /// its queue. A panicking listener counts as this.
    SuspendCurrentQueueAMoment,
}

/// Who gets each message of a group's topics (RocketMQ's `MessageModel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageModel {
    /// Each message goes to one member of the group; the group's offsets
    /// are shared.
    #[default]
    Clustering,
    /// Every member gets every message and keeps its own offsets (under the
    /// offset group `<group>%<instance name>`).
    Broadcasting,
}

/// Where a group starts in a queue it has no committed offset for
/// (RocketMQ's `ConsumeFromWhere`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumeFrom {
    /// The queue's end: only messages stored from now on.
    #[default]
    LastOffset,
    /// The queue's first message.
    FirstOffset,
    /// The first message stored at or after this time (ms since the epoch).
    Timestamp(u64),
}

/// Handed to listeners with each batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeContext {
    /// The queue the messages come from.
    pub queue: MessageQueue,
    /// 1 on first delivery by this consumer, then 2, 3, ... on each local
    /// re-delivery (the stored `reconsume_times` counts deliveries through
    /// the retry topic instead).
    pub delivery_attempt: u32,
}

/// A listener that consumes batches of messages in any order, on several
/// threads at once (RocketMQ's `MessageListenerConcurrently`).
pub trait ConcurrentListener: Send + Sync + 'static {
    /// Consumes `msgs` (at most `consume_message_batch_max_size` of them,
    /// all from one queue, in queue order).
    fn consume(&self, msgs: &[MessageExt], ctx: &ConsumeContext) -> ConsumeStatus;
}

impl<F> ConcurrentListener for F
where
    F: Fn(&[MessageExt], &ConsumeContext) -> ConsumeStatus + Send + Sync + 'static,
{
    fn consume(&self, msgs: &[MessageExt], ctx: &ConsumeContext) -> ConsumeStatus {
        self(msgs, ctx)
    }
}

/// A listener that consumes each queue one message at a time, in store
/// order (RocketMQ's `MessageListenerOrderly`).
pub trait OrderlyListener: Send + Sync + 'static {
    /// Consumes `msgs` (exactly one message).
    fn consume(&self, msgs: &[MessageExt], ctx: &ConsumeContext) -> OrderlyStatus;
}

impl<F> OrderlyListener for F
where
    F: Fn(&[MessageExt], &ConsumeContext) -> OrderlyStatus + Send + Sync + 'static,
{
    fn consume(&self, msgs: &[MessageExt], ctx: &ConsumeContext) -> OrderlyStatus {
        self(msgs, ctx)
    }
}

/// Told when a rebalance changes a consumer's queues.
pub trait RebalanceListener: Send + Sync + 'static {
    /// `queues` are about to be taken away: in-flight work on them has
    /// finished and their offsets are committed right after this returns.
    fn on_revoke(&self, _queues: &[MessageQueue]) {}
    /// `queues` were just assigned to this consumer.
    fn on_assign(&self, _queues: &[MessageQueue]) {}
}
