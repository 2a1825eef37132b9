//! [`PushConsumer`]: pulls assigned queues on its own thread and hands the
//! messages to a listener on a bounded worker pool.
//!
//! Threads per consumer: `mqstore:pull-<group>-<instance>` (pulls, applies flow
//! control, schedules re-deliveries, triggers periodic rebalances) and
//! `consume_threads` workers `mqstore:consume-<group>-<instance>-<i>` fed through a
//! bounded crossbeam channel. All are joined by [`PushConsumer::shutdown`].
//!
//! Each pull round's messages go to the workers as jobs cut by
//! [`super::jobs`]: one per idle worker for slow listeners, fewer for
//! cheap ones. When the queues are caught up, the pull thread waits the
//! coalescing window before pulling again rather than being woken by every
//! arrival, so a steady stream reaches the listeners in small batches.

use super::jobs::{self, ListenerCost};
use super::process_queue::ProcessQueue;
use super::rebalance::{AllocateStrategy, Averagely};
use super::{
    ConcurrentListener, ConsumeContext, ConsumeFrom, ConsumeStatus, MessageModel, OrderlyListener, OrderlyStatus,
    RebalanceListener,
};
use crate::error::{Error, Result};
use crate::message::MessageExt;
use crate::store::{MessageQueue, PullStatus, Store, TagFilter};
use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Distinguishes consumers of one process that share a default instance
/// name.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

enum Listener {
    Concurrent(Box<dyn ConcurrentListener>),
    Orderly(Box<dyn OrderlyListener>),
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Concurrent(_) => "Concurrent",
            Self::Orderly(_) => "Orderly",
        })
    }
}

/// Settings of a push consumer, with RocketMQ's defaults where it has them.
#[derive(Debug, Clone)]
struct Settings {
    batch_max_size: usize,
    pull_batch_size: usize,
    consume_threads: usize,
    max_cached_messages: usize,
    max_cached_bytes: u64,
    max_span: u64,
    reconsume_delay: Duration,
    /// As given: -1 means RocketMQ's default, 16.
    max_reconsume_times: i32,
    suspend_interval: Duration,
    rebalance_interval: Duration,
    consume_from: ConsumeFrom,
    coalesce_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch_max_size: 1,
            pull_batch_size: 32,
            consume_threads: 4,
            max_cached_messages: 1000,
            max_cached_bytes: 100 << 20,
            max_span: 2000,
            reconsume_delay: Duration::from_secs(1),
            max_reconsume_times: -1,
            suspend_interval: Duration::from_secs(1),
            rebalance_interval: Duration::from_secs(20),
            consume_from: ConsumeFrom::LastOffset,
            coalesce_window: Duration::from_micros(100),
        }
    }
}

/// Builds a [`PushConsumer`]: `store.push_consumer(group)`, then
/// `subscribe`, a listener, options, and [`PushConsumerBuilder::start`].
///
/// ```
/// use mqstore::consumer::{ConsumeContext, ConsumeStatus};
/// use mqstore::message::{Message, MessageExt};
/// use mqstore::store::{Store, StoreOptions};
/// use mqstore::topic::TopicConfig;
/// # fn main() -> mqstore::Result<()> {
/// # let dir = tempfile::tempdir().map_err(|e| mqstore::Error::InvalidArgument(e.to_string()))?;
/// let store = Store::open(dir.path(), StoreOptions::default())?;
/// store.create_topic(TopicConfig::new("orders", 4))?;
/// let (tx, rx) = std::sync::mpsc::channel();
/// let tx = std::sync::Mutex::new(tx);
/// let consumer = store
///     .push_consumer("billing")
///     .subscribe("orders", "*")?
///     .listener(move |msgs: &[MessageExt], _ctx: &ConsumeContext| {
///         for m in msgs {
///             let _ = tx.lock().map(|tx| tx.send(m.body().clone()));
///         }
///         ConsumeStatus::Success
///     })
///     .start()?;
/// store.send(Message::new("orders", "hello"))?;
/// let body = rx.recv_timeout(std::time::Duration::from_secs(10)).map_err(|e| mqstore::Error::InvalidArgument(e.to_string()))?;
/// assert_eq!(&body[..], b"hello");
/// consumer.shutdown()?;
/// store.close()?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a consumer does nothing until started"]
pub struct PushConsumerBuilder {
    store: Store,
    group: String,
    instance: Option<String>,
    model: MessageModel,
    subscriptions: Vec<(String, TagFilter)>,
    listener: Option<Listener>,
    strategy: Box<dyn AllocateStrategy>,
    rebalance_listener: Option<Box<dyn RebalanceListener>>,
    settings: Settings,
}

impl std::fmt::Debug for PushConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConsumerBuilder")
            .field("group", &self.group)
            .field("model", &self.model)
            .field("subscriptions", &self.subscriptions)
            .finish_non_exhaustive()
    }
}

impl PushConsumerBuilder {
    pub(crate) fn new(store: Store, group: &str) -> Self {
        Self {
            store,
            group: group.to_string(),
            instance: None,
            model: MessageModel::Clustering,
            subscriptions: Vec::new(),
            listener: None,
            strategy: Box::new(Averagely),
            rebalance_listener: None,
            settings: Settings::default(),
        }
    }

    /// Subscribes to `topic` with a tag expression: `*` for everything or
    /// `TagA || TagB`.
    pub fn subscribe(mut self, topic: &str, expression: &str) -> Result<Self> {
        crate::topic::validate_topic_name(topic)?;
        let filter = TagFilter::parse(expression)?;
        self.subscriptions.retain(|(t, _)| t != topic);
        self.subscriptions.push((topic.to_string(), filter));
        Ok(self)
    }

    /// A concurrent listener (RocketMQ's `registerMessageListener` with a
    /// `MessageListenerConcurrently`).
    pub fn listener(mut self, listener: impl ConcurrentListener) -> Self {
        self.listener = Some(Listener::Concurrent(Box::new(listener)));
        self
    }

    /// An orderly listener: one message at a time per queue, in store order.
    pub fn orderly_listener(mut self, listener: impl OrderlyListener) -> Self {
        self.listener = Some(Listener::Orderly(Box::new(listener)));
        self
    }

    /// Clustering (default) or broadcasting.
    pub fn message_model(mut self, model: MessageModel) -> Self {
        self.model = model;
        self
    }

    /// This member's name within the group (default: unique per consumer
    /// in this process). Broadcasting offsets are kept per instance name,
    /// so give a broadcasting consumer a stable one. Same alphabet as group
    /// names.
    pub fn instance_name(mut self, name: &str) -> Self {
        self.instance = Some(name.to_string());
        self
    }

    /// How queues are shared among the group's members (default
    /// [`Averagely`]).
    pub fn allocate_strategy(mut self, strategy: impl AllocateStrategy + 'static) -> Self {
        self.strategy = Box::new(strategy);
        self
    }

    /// Told before queues are taken away and after queues are assigned.
    pub fn rebalance_listener(mut self, listener: impl RebalanceListener) -> Self {
        self.rebalance_listener = Some(Box::new(listener));
        self
    }

    /// Where to start in a queue the group has no offset for (default
    /// [`ConsumeFrom::LastOffset`]).
    pub fn consume_from(mut self, from: ConsumeFrom) -> Self {
        self.settings.consume_from = from;
        self
    }

    /// Most messages per listener call (RocketMQ's
    /// `consumeMessageBatchMaxSize`). Default 1; 1 to 1,024.
    pub fn consume_message_batch_max_size(mut self, n: usize) -> Self {
        self.settings.batch_max_size = n;
        self
    }

    /// Messages per pull (RocketMQ's `pullBatchSize`). Default 32; 1 to
    /// 1,024.
    pub fn pull_batch_size(mut self, n: usize) -> Self {
        self.settings.pull_batch_size = n;
        self
    }

    /// Listener threads. Default 4; 1 to 256.
    pub fn consume_threads(mut self, n: usize) -> Self {
        self.settings.consume_threads = n;
        self
    }

    /// Flow control per queue: pulling pauses while this many messages are
    /// in flight (RocketMQ's `pullThresholdForQueue`). Default 1,000.
    pub fn max_cached_messages_per_queue(mut self, n: usize) -> Self {
        self.settings.max_cached_messages = n;
        self
    }

    /// Flow control per queue: pulling pauses while this many body bytes
    /// are in flight (RocketMQ's `pullThresholdSizeForQueue`). Default
    /// 100 MiB.
    pub fn max_cached_bytes_per_queue(mut self, bytes: u64) -> Self {
        self.settings.max_cached_bytes = bytes;
        self
    }

    /// Flow control per queue, concurrent listeners: pulling pauses while
    /// the oldest unacknowledged message is this many offsets behind the
    /// newest pulled one (RocketMQ's `consumeConcurrentlyMaxSpan`), so one
    /// slow message cannot let the in-flight window grow without bound.
    /// Default 2,000; at least 1.
    pub fn max_span_per_queue(mut self, offsets: u64) -> Self {
        self.settings.max_span = offsets;
        self
    }

    /// Broadcasting only: delay before a batch that returned
    /// `ReconsumeLater` is delivered again by this consumer (broadcast
    /// messages have no retry topic). Default 1 s. Clustering consumers
    /// send failed messages back through the group's retry topic instead,
    /// and use this delay only if that send-back fails.
    pub fn reconsume_delay(mut self, d: Duration) -> Self {
        self.settings.reconsume_delay = d;
        self
    }

    /// Failed deliveries after the first before a message goes to the
    /// group's dead-letter queue (`%DLQ%<group>`): RocketMQ's
    /// `maxReconsumeTimes`. Default -1, meaning 16 (as RocketMQ for
    /// concurrent listeners); 0 to 65,535 otherwise. A concurrent listener's
    /// failure number `n` (from 0) is retried through `%RETRY%<group>` at
    /// delay level `3 + n` (10 s, 30 s, 1 min, ..., capped at the last
    /// level); failure number `max` dead-letters it. An orderly listener's
    /// message is retried in place after the suspend interval and
    /// dead-lettered the same way, so a poison message never blocks its
    /// queue forever (set a large value to retry longer).
    pub fn max_reconsume_times(mut self, n: i32) -> Self {
        self.settings.max_reconsume_times = n;
        self
    }

    /// Orderly: delay before a suspended queue's message is delivered again
    /// (RocketMQ's `suspendCurrentQueueTimeMillis`). Default 1 s.
    pub fn suspend_interval(mut self, d: Duration) -> Self {
        self.settings.suspend_interval = d;
        self
    }

    /// How often the group is rebalanced besides membership changes (to
    /// pick up changed queue counts). Default 20 s, as RocketMQ.
    pub fn rebalance_interval(mut self, d: Duration) -> Self {
        self.settings.rebalance_interval = d;
        self
    }

    /// Concurrent listeners: after a pull round that found every queue
    /// caught up, the pull thread waits this long before pulling again
    /// instead of being woken by each arriving message, so a steady
    /// stream is handed to the workers a few messages at a time rather
    /// than one wake-up per message (which, at 100 k msgs/s on 2 cores,
    /// costs more CPU than the messages). Adds at most the window (plus
    /// the timer's slack) to delivery latency while caught up; a backlog
    /// is pulled without pause. Default 100 us; zero pulls again on every
    /// arrival. At most 1 s. Orderly listeners never wait.
    pub fn coalesce_window(mut self, d: Duration) -> Self {
        self.settings.coalesce_window = d;
        self
    }

    /// Validates, joins the group (rebalancing it) and starts the threads.
    pub fn start(self) -> Result<PushConsumer> {
        self.store.ensure_open()?;
        crate::topic::validate_group_name(&self.group)?;
        let bad = |why: String| Err(Error::InvalidArgument(why));
        let s = &self.settings;
        if self.subscriptions.is_empty() {
            return bad(format!("consumer group {}: subscribe to at least one topic", self.group));
        }
        let Some(listener) = self.listener else {
            return bad(format!("consumer group {}: no listener registered", self.group));
        };
        if !(1..=1024).contains(&s.batch_max_size) {
            return bad(format!("consume_message_batch_max_size {} is outside 1..=1024", s.batch_max_size));
        }
        if !(1..=1024).contains(&s.pull_batch_size) {
            return bad(format!("pull_batch_size {} is outside 1..=1024", s.pull_batch_size));
        }
        if !(1..=256).contains(&s.consume_threads) {
            return bad(format!("consume_threads {} is outside 1..=256", s.consume_threads));
        }
        if s.max_cached_messages == 0 || s.max_cached_bytes == 0 || s.max_span == 0 {
            return bad("flow control limits must be positive".into());
        }
        if s.coalesce_window > Duration::from_secs(1) {
            return bad(format!("coalesce_window {:?} is longer than 1 s", s.coalesce_window));
        }
        if !(-1..=65_535).contains(&s.max_reconsume_times) {
            return bad(format!("max_reconsume_times {} is outside -1..=65535", s.max_reconsume_times));
        }
        for (topic, _) in &self.subscriptions {
            if self.store.topic(topic).is_none() {
                return bad(format!("consumer group {}: topic {topic} does not exist", self.group));
            }
        }
        let mut subscriptions = self.subscriptions;
        if self.model == MessageModel::Clustering {
            // Every clustering member consumes the group's retry topic too
            // (RocketMQ subscribes it automatically).
            let retry = crate::dlq::retry_topic(&self.group);
            crate::topic::validate_topic_name(&retry)?;
            if self.store.topic(&retry).is_none() {
                self.store.put_topic(crate::topic::TopicConfig::new(&retry, 1))?;
            }
            subscriptions.retain(|(t, _)| *t != retry);
            subscriptions.push((retry, TagFilter::All));
        }
        let instance =
            self.instance.unwrap_or_else(|| format!("consumer-{}", NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)));
        crate::topic::validate_group_name(&instance)?;
        let offset_group = match self.model {
            MessageModel::Clustering => self.group.clone(),
            MessageModel::Broadcasting => format!("{}%{instance}", self.group),
        };
        crate::topic::validate_group_name(&offset_group)?;
        let id = instance.clone();
        if self.store.inner.consumers.member_ids(&self.group).contains(&id) {
            return bad(format!("consumer group {} already has a member named {id}", self.group));
        }
        let (tx, rx) = bounded::<Job>(s.consume_threads * 64);
        let member = Arc::new(Member {
            id,
            group: self.group.clone(),
            offset_group,
            model: self.model,
            subscriptions,
            strategy: self.strategy,
            listener,
            rebalance_listener: self.rebalance_listener,
            settings: self.settings,
            store: self.store.clone(),
            state: Mutex::new(State::default()),
            drained: Condvar::new(),
            tasks: Mutex::new(Some(tx)),
            stop: AtomicBool::new(false),
            idle: AtomicUsize::new(0),
            cost: ListenerCost::new(),
        });
        let mut threads = Vec::new();
        for i in 0..member.settings.consume_threads {
            let (m, rx) = (member.clone(), rx.clone());
            threads.push(spawn(&format!("mqstore:consume-{}-{}-{i}", member.group, member.id), move || m.work(&rx))?);
        }
        drop(rx);
        let registry = &self.store.inner.consumers;
        registry.join(member.clone());
        registry.rebalance(&member.group);
        let m = member.clone();
        let puller = spawn(&format!("mqstore:pull-{}-{}", member.group, member.id), move || m.pull_loop());
        let puller = match puller {
            Ok(p) => p,
            Err(e) => {
                let c = PushConsumer { member, puller: None, workers: threads };
                let _ = c.shutdown();
                return Err(e);
            }
        };
        Ok(PushConsumer { member, puller: Some(puller), workers: threads })
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.chars().take(60).collect())
        .spawn(f)
        .map_err(|e| Error::InvalidArgument(format!("cannot start thread {name}: {e}")))
}

/// A running member of a consumer group. [`PushConsumer::shutdown`] leaves
/// the group (its queues go to the remaining members), drains in-flight
/// work, commits and persists offsets and joins the threads; dropping it
/// does the same, ignoring errors.
#[derive(Debug)]
pub struct PushConsumer {
    member: Arc<Member>,
    puller: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl PushConsumer {
    /// This member's instance name.
    #[must_use]
    pub fn instance_name(&self) -> &str {
        &self.member.id
    }

    /// The queues this member holds right now.
    #[must_use]
    pub fn assigned_queues(&self) -> Vec<MessageQueue> {
        let mut q = self.member.assigned();
        q.sort();
        q
    }

    /// Leaves the group and stops; see the type's docs.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        // Also reached after the store's close marked the member leaving:
        // the threads still need joining then.
        self.member.stop.store(true, Ordering::Release);
        if self.puller.is_none() && self.workers.is_empty() {
            return Ok(());
        }
        let registry = &self.member.store.inner.consumers;
        // Hands every queue over (or just drains it, if nobody is left);
        // the member leaves the registry only afterwards.
        registry.rebalance(&self.member.group);
        registry.leave(&self.member);
        self.member.store.inner.dispatch.arrivals.wake_all();
        let mut panicked = false;
        if let Some(p) = self.puller.take() {
            panicked |= p.join().is_err();
        }
        // Workers finish what is queued (tasks of revoked queues are
        // skipped), then exit.
        self.member.close_tasks();
        for w in self.workers.drain(..) {
            panicked |= w.join().is_err();
        }
        let persisted = self.member.store.persist_offsets();
        if panicked {
            return Err(Error::Fenced { reason: format!("a thread of consumer group {} panicked", self.member.group) });
        }
        match persisted {
            Ok(()) | Err(Error::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for PushConsumer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// One delivery of messages of one queue.
#[derive(Debug)]
struct Task {
    queue: MessageQueue,
    msgs: Vec<MessageExt>,
    attempt: u32,
}

/// What a worker takes from the channel: tasks run one after another.
type Job = Vec<Task>;

/// What a pull round did.
#[derive(Debug, Default, Clone, Copy)]
struct Round {
    /// Something arrived or an offset moved.
    moved: bool,
    /// Some queue returned a full pull batch: more is probably waiting.
    backlog: bool,
}

#[derive(Debug, Default)]
struct State {
    queues: HashMap<MessageQueue, ProcessQueue>,
    /// Batches to deliver again, with when (store clock, ms).
    retries: Vec<(u64, Task)>,
    last_rebalance: Option<Instant>,
}

/// A consumer's shared state: the pull thread, the workers and rebalances
/// all work on it.
pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) group: String,
    /// Offsets are stored under this group name (the group itself when
    /// clustering; `<group>%<instance>` when broadcasting).
    offset_group: String,
    pub(crate) model: MessageModel,
    subscriptions: Vec<(String, TagFilter)>,
    pub(crate) strategy: Box<dyn AllocateStrategy>,
    listener: Listener,
    rebalance_listener: Option<Box<dyn RebalanceListener>>,
    settings: Settings,
    store: Store,
    state: Mutex<State>,
    /// Signalled when a task finishes (revoke waits on it).
    drained: Condvar,
    /// `None` once shutting down.
    tasks: Mutex<Option<Sender<Job>>>,
    stop: AtomicBool,
    /// Workers waiting for a job.
    idle: AtomicUsize,
    /// Listener time per message, which sizes the jobs.
    cost: ListenerCost,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("id", &self.id).field("group", &self.group).finish_non_exhaustive()
    }
}

impl Member {
    /// Marks the member as leaving (its pull thread stops; rebalances give
    /// it nothing). Idempotent.
    pub(crate) fn begin_leaving(&self) {
        self.stop.store(true, Ordering::Release);
        self.store.inner.dispatch.arrivals.wake_all();
    }

    /// Shutting down: gets no queues in a rebalance.
    pub(crate) fn is_leaving(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn topics(&self) -> Vec<String> {
        self.subscriptions.iter().map(|(t, _)| t.clone()).collect()
    }

    /// Every read queue of `topic` (none if the topic is gone or not
    /// readable).
    pub(crate) fn queues_of_topic(&self, topic: &str) -> Vec<MessageQueue> {
        match self.store.topic(topic) {
            Some(cfg) if cfg.permission.readable() => {
                (0..cfg.read_queues).map(|queue_id| MessageQueue { topic: topic.to_string(), queue_id }).collect()
            }
            _ => Vec::new(),
        }
    }

    pub(crate) fn assigned(&self) -> Vec<MessageQueue> {
        self.state.lock().queues.keys().cloned().collect()
    }

    /// The maximum reconsume count in effect (-1 is RocketMQ's 16).
    fn max_reconsume(&self) -> u32 {
        u32::try_from(self.settings.max_reconsume_times).unwrap_or(crate::retry::DEFAULT_MAX_RECONSUME_TIMES)
    }

    fn filter(&self, topic: &str) -> TagFilter {
        self.subscriptions.iter().find(|(t, _)| t == topic).map_or(TagFilter::All, |(_, f)| f.clone())
    }

    fn now_ms(&self) -> u64 {
        self.store.inner.opts.commit_log.clock.now_ms()
    }

    /// Gives up `queues`: stops pulling them (and, orderly, handing out
    /// their next message), waits until every batch already handed to the
    /// workers was consumed, commits their offsets, forgets them. A clean
    /// hand-over therefore re-delivers nothing; only batches waiting for a
    /// re-delivery (`ReconsumeLater`, a panic) stay below the committed
    /// offset, and the next owner delivers them, with whatever was
    /// acknowledged after them, again.
    pub(crate) fn revoke(&self, queues: &[MessageQueue]) {
        if let Some(l) = &self.rebalance_listener {
            let _ = catch_unwind(AssertUnwindSafe(|| l.on_revoke(queues)));
        }
        let mut st = self.state.lock();
        for q in queues {
            if let Some(pq) = st.queues.get_mut(q) {
                pq.dropped = true;
            }
        }
        // Re-deliveries of these queues are left to the next owner (the
        // messages stay below the committed offset).
        st.retries.retain(|(_, t)| !queues.contains(&t.queue));
        loop {
            let busy = queues.iter().any(|q| st.queues.get(q).is_some_and(|pq| pq.tasks > 0 || pq.consuming));
            if !busy {
                break;
            }
            self.drained.wait(&mut st);
        }
        for q in queues {
            if let Some(pq) = st.queues.remove(q) {
                self.commit(q, pq.commit_offset());
            }
        }
    }

    /// Takes `queues`, starting each at the group's committed offset or,
    /// without one, where [`ConsumeFrom`] says.
    pub(crate) fn assign(&self, queues: &[MessageQueue]) {
        let store = &self.store;
        let mut starts = Vec::with_capacity(queues.len());
        for q in queues {
            let committed = store.committed_offset(&self.offset_group, &q.topic, q.queue_id);
            let retry = q.topic.starts_with(crate::dlq::RETRY_TOPIC_PREFIX);
            let start = match committed {
                Some(o) => o,
                // A retry topic holds only this group's failed messages:
                // always from its start (as RocketMQ).
                None if retry => store.min_offset(&q.topic, q.queue_id).unwrap_or(0),
                None => match self.settings.consume_from {
                    ConsumeFrom::LastOffset => store.max_offset(&q.topic, q.queue_id).unwrap_or(0),
                    ConsumeFrom::FirstOffset => store.min_offset(&q.topic, q.queue_id).unwrap_or(0),
                    ConsumeFrom::Timestamp(ts) => store.offset_for_timestamp(&q.topic, q.queue_id, ts).unwrap_or(0),
                },
            };
            starts.push((q.clone(), start));
        }
        {
            let mut st = self.state.lock();
            for (q, start) in starts {
                st.queues.entry(q).or_insert_with(|| ProcessQueue::new(start));
            }
        }
        if let Some(l) = &self.rebalance_listener {
            let _ = catch_unwind(AssertUnwindSafe(|| l.on_assign(queues)));
        }
        store.inner.dispatch.arrivals.wake_all();
    }

    /// Flow control: the queue holds as many messages or bytes in flight
    /// as allowed, so pulling it pauses.
    fn is_full(&self, pq: &ProcessQueue) -> bool {
        pq.count() >= self.settings.max_cached_messages
            || pq.bytes() >= self.settings.max_cached_bytes
            || (matches!(self.listener, Listener::Concurrent(_)) && pq.span() >= self.settings.max_span)
    }

    fn commit(&self, q: &MessageQueue, offset: u64) {
        // The names were validated at start, and the offset comes from a
        // pull of this queue: straight to the offset table. (A commit never
        // moves an offset backwards.)
        self.store.inner.offsets.commit(&self.offset_group, &q.topic, q.queue_id, offset);
    }

    /// Closes the task channel: the workers finish what is queued, then
    /// exit.
    fn close_tasks(&self) {
        self.tasks.lock().take();
    }

    fn submit(&self, job: Job) -> bool {
        let tx = self.tasks.lock().clone();
        match tx {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        }
    }

    /// The pull thread: re-deliveries that are due, then a pull from every
    /// assigned queue with room (flow control), then, orderly, the next
    /// message of each idle queue; sleeps on the store's arrivals when
    /// nothing moved.
    pub(crate) fn pull_loop(&self) {
        let arrivals = &self.store.inner.dispatch.arrivals;
        while !self.stop.load(Ordering::Acquire) {
            let seen = arrivals.generation();
            let mut moved = false;
            if self.rebalance_due() {
                self.store.inner.consumers.rebalance(&self.group);
            }
            let now = self.now_ms();
            let due: Vec<Task> = {
                let mut st = self.state.lock();
                let (ready, later): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut st.retries).into_iter().partition(|(t, _)| *t <= now);
                st.retries = later;
                ready.into_iter().map(|(_, t)| t).collect()
            };
            for t in due {
                moved |= self.resubmit(t);
            }
            let mut backlog = false;
            match self.pull_all() {
                Ok(r) => {
                    moved |= r.moved;
                    backlog = r.backlog;
                }
                Err(Error::Closed) => return,
                // Transient trouble (a fenced store, a topic being deleted):
                // wait for the next arrival or tick and try again.
                Err(_) => {}
            }
            let orderly = matches!(self.listener, Listener::Orderly(_));
            if orderly {
                moved |= self.hand_out_orderly(now);
            }
            if !moved {
                let wait = self.next_wake(now);
                arrivals.wait(seen, Some(Instant::now() + wait));
            } else if !backlog && !orderly && !self.settings.coalesce_window.is_zero() {
                // Caught up: let the next messages gather (see
                // `coalesce_window`). A plain sleep, not a wait on the
                // arrivals, so senders do not pay for waking this thread.
                std::thread::sleep(self.settings.coalesce_window);
            }
        }
    }

    /// The periodic rebalance (queue counts may have changed). The first
    /// tick only starts the period: `start` rebalanced already.
    fn rebalance_due(&self) -> bool {
        let mut st = self.state.lock();
        match st.last_rebalance {
            Some(t) if t.elapsed() < self.settings.rebalance_interval => false,
            Some(_) => {
                st.last_rebalance = Some(Instant::now());
                true
            }
            None => {
                st.last_rebalance = Some(Instant::now());
                false
            }
        }
    }

    /// How long the pull thread may sleep: until the next re-delivery or
    /// suspension ends, at most 100 ms (a clock that is moved by hand, as
    /// in tests, is noticed on that tick).
    fn next_wake(&self, now: u64) -> Duration {
        let st = self.state.lock();
        let mut wait = Duration::from_millis(100);
        let soonest = st
            .retries
            .iter()
            .map(|(t, _)| *t)
            .chain(st.queues.values().filter(|pq| pq.suspended_until > now).map(|pq| pq.suspended_until))
            .min();
        if let Some(t) = soonest {
            wait = wait.min(Duration::from_millis(t.saturating_sub(now).max(1)));
        }
        wait
    }

    fn resubmit(&self, task: Task) -> bool {
        {
            let mut st = self.state.lock();
            match st.queues.get_mut(&task.queue) {
                Some(pq) if !pq.dropped => pq.tasks += 1,
                _ => return false,
            }
        }
        if self.submit(vec![task]) {
            true
        } else {
            self.forget_in_flight_counts();
            false
        }
    }

    fn forget_in_flight_counts(&self) {
        // The channel closed under us (shutdown): forget the counts so a
        // revoke does not wait for tasks nobody will run.
        let mut st = self.state.lock();
        for pq in st.queues.values_mut() {
            pq.tasks = 0;
            pq.consuming = false;
        }
        self.drained.notify_all();
    }

    /// Pulls every assigned queue that has room and hands what arrived to
    /// the workers.
    fn pull_all(&self) -> Result<Round> {
        let targets: Vec<(MessageQueue, u64)> = {
            let st = self.state.lock();
            st.queues
                .iter()
                .filter(|(_, pq)| !pq.dropped && !self.is_full(pq))
                .map(|(q, pq)| (q.clone(), pq.next_pull))
                .collect()
        };
        let mut round = Round::default();
        let concurrent = matches!(self.listener, Listener::Concurrent(_));
        // Concurrent: what each queue returned, handed out after the round.
        let mut pulled: Vec<(MessageQueue, Vec<MessageExt>)> = Vec::new();
        for (q, from) in targets {
            let filter = self.filter(&q.topic);
            let mut r = self.store.pull(&q.topic, q.queue_id, from, self.settings.pull_batch_size, &filter)?;
            if q.topic.starts_with(crate::dlq::RETRY_TOPIC_PREFIX) {
                // Listeners see a retry under its original topic.
                for m in &mut r.messages {
                    let original = crate::retry::sendback::original_topic(m).to_string();
                    m.show_topic(&original);
                }
            }
            let mut commit = None;
            {
                let mut st = self.state.lock();
                let Some(pq) = st.queues.get_mut(&q) else { continue };
                if pq.dropped || pq.next_pull != from {
                    continue;
                }
                match r.status {
                    PullStatus::Found => {
                        pq.put(&r.messages, r.next_offset, !concurrent);
                        round.backlog |= r.messages.len() >= self.settings.pull_batch_size;
                        if concurrent && !r.messages.is_empty() {
                            // Reserved now, so a revoke waits for these
                            // messages; adjusted to the pieces below.
                            pq.tasks += 1;
                            pulled.push((q.clone(), r.messages));
                        }
                        round.moved = true;
                    }
                    // Filtered out, or an offset outside the queue: move on
                    // (RocketMQ corrects the offset the same way).
                    PullStatus::NoMatchedMessage | PullStatus::OffsetIllegal => {
                        pq.next_pull = r.next_offset;
                        commit = Some(pq.commit_offset());
                        round.moved |= r.next_offset != from;
                    }
                    PullStatus::NoNewMessage => {}
                }
            }
            if let Some(o) = commit {
                self.commit(&q, o);
            }
        }
        self.hand_out_concurrent(pulled);
        Ok(round)
    }

    /// Cuts a round's messages into jobs (see [`super::jobs`]) and submits
    /// them. Each queue in `pulled` holds one task reservation.
    fn hand_out_concurrent(&self, pulled: Vec<(MessageQueue, Vec<MessageExt>)>) {
        if pulled.is_empty() {
            return;
        }
        let bms = self.settings.batch_max_size;
        let messages: usize = pulled.iter().map(|(_, m)| m.len()).sum();
        let batches: usize = pulled.iter().map(|(_, m)| jobs::batches_of(m.len(), bms)).sum();
        let idle = self.idle.load(Ordering::Relaxed);
        let n = jobs::job_count(messages, batches, idle, self.cost.per_message());
        let cut = jobs::split(pulled, bms, n);
        {
            // One reservation per queue became one task per piece.
            let mut st = self.state.lock();
            let mut pieces: HashMap<&MessageQueue, usize> = HashMap::new();
            for (q, _) in cut.iter().flatten() {
                *pieces.entry(q).or_default() += 1;
            }
            for (q, n) in pieces {
                if let Some(pq) = st.queues.get_mut(q) {
                    pq.tasks += n - 1;
                }
            }
        }
        for job in cut {
            let job: Job = job.into_iter().map(|(queue, msgs)| Task { queue, msgs, attempt: 1 }).collect();
            if !self.submit(job) {
                self.forget_in_flight_counts();
                break;
            }
        }
    }

    /// Orderly: hands each idle queue's first message to a worker.
    fn hand_out_orderly(&self, now: u64) -> bool {
        let tasks: Vec<Task> = {
            let mut st = self.state.lock();
            st.queues
                .iter_mut()
                .filter(|(_, pq)| !pq.dropped && !pq.consuming && now >= pq.suspended_until)
                .filter_map(|(q, pq)| {
                    let m = pq.first()?;
                    pq.consuming = true;
                    Some(Task { queue: q.clone(), msgs: vec![m], attempt: pq.attempt })
                })
                .collect()
        };
        let moved = !tasks.is_empty();
        for t in tasks {
            if !self.submit(vec![t]) {
                self.forget_in_flight_counts();
                break;
            }
        }
        moved
    }

    /// A worker: runs jobs until the channel closes.
    fn work(&self, rx: &Receiver<Job>) {
        loop {
            self.idle.fetch_add(1, Ordering::Relaxed);
            let job = rx.recv();
            self.idle.fetch_sub(1, Ordering::Relaxed);
            let Ok(job) = job else { return };
            for task in job {
                self.run(task);
            }
        }
    }

    fn run(&self, task: Task) {
        let orderly = matches!(self.listener, Listener::Orderly(_));
        // A task already handed out is delivered even if its queue is being
        // taken away: the revoke waits for it, so the hand-over commits past
        // it and the next owner does not deliver it again.
        if !self.state.lock().queues.contains_key(&task.queue) {
            return;
        }
        let queue = task.queue.clone();
        let ctx = ConsumeContext { queue: queue.clone(), delivery_attempt: task.attempt };
        let mut commit = None;
        let mut wake_puller = false;
        match &self.listener {
            Listener::Concurrent(l) => {
                // The task holds one or more listener batches; each is
                // acknowledged or retried on its own, under one lock.
                let mut done: Vec<u64> = Vec::with_capacity(task.msgs.len());
                let mut failed: Vec<MessageExt> = Vec::new();
                let started = Instant::now();
                for batch in task.msgs.chunks(self.settings.batch_max_size) {
                    // A panic is a failed delivery, never a dead worker.
                    let status = catch_unwind(AssertUnwindSafe(|| l.consume(batch, &ctx)))
                        .unwrap_or(ConsumeStatus::ReconsumeLater);
                    match status {
                        ConsumeStatus::Success => done.extend(batch.iter().map(|m| m.queue_offset().0)),
                        ConsumeStatus::ReconsumeLater => failed.extend_from_slice(batch),
                    }
                }
                self.cost.record(task.msgs.len(), started.elapsed());
                if self.model == MessageModel::Clustering && !failed.is_empty() {
                    // Sent back (a delayed retry, or the dead-letter queue
                    // past the maximum): acknowledged here. Kept for a local
                    // re-delivery only if the send-back failed.
                    failed.retain(|m| {
                        let sent = crate::retry::sendback::send_back(
                            &self.store,
                            &self.group,
                            m,
                            m.reconsume_times(),
                            self.max_reconsume(),
                            false,
                        );
                        if sent.is_ok() {
                            done.push(m.queue_offset().0);
                        }
                        sent.is_err()
                    });
                }
                let now = self.now_ms();
                let mut st = self.state.lock();
                let delay = self.settings.reconsume_delay.as_millis() as u64;
                let mut retry = None;
                if let Some(pq) = st.queues.get_mut(&queue) {
                    pq.tasks = pq.tasks.saturating_sub(1);
                    if !done.is_empty() {
                        let full = self.is_full(pq);
                        let o = pq.ack(&done);
                        if !pq.dropped {
                            commit = Some(o);
                        }
                        // Flow control paused pulling this queue; resume it
                        // now rather than on the pull thread's tick.
                        wake_puller = full && !self.is_full(pq);
                    }
                    // Failed batches of a queue being taken away stay below
                    // the committed offset: the next owner delivers them.
                    if !failed.is_empty() && !pq.dropped {
                        retry = Some(Task { queue: queue.clone(), msgs: failed, attempt: task.attempt + 1 });
                    }
                }
                if let Some(t) = retry {
                    st.retries.push((now + delay, t));
                }
                self.drained.notify_all();
            }
            Listener::Orderly(l) => {
                let mut status = catch_unwind(AssertUnwindSafe(|| l.consume(&task.msgs, &ctx)))
                    .unwrap_or(OrderlyStatus::SuspendCurrentQueueAMoment);
                // The failure that reaches the maximum dead-letters the
                // message and moves on, so the queue is never blocked
                // forever (kept suspended if the dead-lettering failed).
                let failures = task.attempt.saturating_sub(1);
                if status == OrderlyStatus::SuspendCurrentQueueAMoment && failures >= self.max_reconsume() {
                    let dead = task.msgs.iter().all(|m| {
                        crate::retry::sendback::send_back(&self.store, &self.group, m, failures, 0, true).is_ok()
                    });
                    if dead {
                        status = OrderlyStatus::Success;
                    }
                }
                let now = self.now_ms();
                let mut st = self.state.lock();
                if let Some(pq) = st.queues.get_mut(&task.queue) {
                    pq.consuming = false;
                    match status {
                        OrderlyStatus::Success => {
                            let offsets: Vec<u64> = task.msgs.iter().map(|m| m.queue_offset().0).collect();
                            let o = pq.ack(&offsets);
                            pq.attempt = 1;
                            if !pq.dropped {
                                commit = Some(o);
                            }
                        }
                        OrderlyStatus::SuspendCurrentQueueAMoment => {
                            pq.attempt += 1;
                            pq.suspended_until = now + self.settings.suspend_interval.as_millis() as u64;
                        }
                    }
                }
                self.drained.notify_all();
            }
        }
        if let Some(o) = commit {
            self.commit(&queue, o);
        }
        if orderly || wake_puller {
            // The pull thread hands out the queue's next message, or pulls
            // again now that the queue has room.
            self.store.inner.dispatch.arrivals.wake_all();
        }
    }
}
