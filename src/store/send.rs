//! Sending: [`Store::send`], batches, ordered sends through a
//! [`MessageQueueSelector`], and the built-in selectors.

use super::dispatch::Found;
use super::Store;
use crate::commitlog::{Appended, Durability, RecordDraft};
use crate::error::{Error, Result};
use crate::message::properties::{push_pair, DELAY, DELAY_DUE_MS, REAL_QID, REAL_TOPIC};
use crate::message::{Message, MessageId};
use crate::offset::PhysicalOffset;
use crate::retry::{schedule, SCHEDULE_TOPIC};
use crate::topic::WriteQueues;
use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Outcome of a send that wrote the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Stored, and durable as the flush mode promises.
    SendOk,
    /// Stored, but under [`FlushMode::Sync`](crate::commitlog::FlushMode::Sync)
    /// the flush did not finish within `sync_flush_timeout` (RocketMQ's
    /// `FLUSH_DISK_TIMEOUT`): the message will become durable and visible
    /// unless the store is fenced first. Never plain success.
    FlushDiskTimeout,
    /// Stored on this master, but under
    /// [`ReplicationMode::Sync`](crate::replication::ReplicationMode::Sync)
    /// the replica did not acknowledge it within the timeout (RocketMQ's
    /// `FLUSH_SLAVE_TIMEOUT`). It stays queued for the replica.
    FlushSlaveTimeout,
    /// Stored on this master, but under
    /// [`ReplicationMode::Sync`](crate::replication::ReplicationMode::Sync)
    /// no replica is connected or it lags beyond the bound (RocketMQ's
    /// `SLAVE_NOT_AVAILABLE`): the message is not replicated yet.
    SlaveNotAvailable,
}

/// What [`Store::send`] reports for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// Whether the message is durable yet.
    pub status: SendStatus,
    /// The message's unique id (RocketMQ's `UNIQ_KEY` / client `msgId`).
    pub msg_id: MessageId,
    /// The store-level id: it encodes the record's commit-log offset
    /// (RocketMQ's `offsetMsgId`); [`Store::message_by_offset_id`]
    /// resolves it.
    pub offset_msg_id: MessageId,
    /// The queue the message went to.
    pub queue_id: u32,
    /// Its position in that queue. For a delayed message (a delay level
    /// or a delivery time in the future): its position in the schedule
    /// queue it waits in; it gets its place in `queue_id` when delivered.
    pub queue_offset: u64,
    /// Where its record starts in the commit log.
    pub physical_offset: PhysicalOffset,
}

/// One queue of a topic, as selectors and consumers see it. Ordered by
/// topic, then queue id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageQueue {
    /// Topic name.
    pub topic: String,
    /// Queue id within the topic.
    pub queue_id: u32,
}

/// Chooses the queue a message goes to (RocketMQ's
/// `MessageQueueSelector`). Messages sent to one queue are consumed in the
/// order they were stored, so a selector that maps an order key to a queue
/// gives per-key ordering.
pub trait MessageQueueSelector: Send + Sync {
    /// Returns an index into `queues` (the topic's write queues, never
    /// empty). An index out of range fails the send with
    /// [`Error::InvalidArgument`].
    fn select(&self, queues: &[MessageQueue], msg: &Message) -> usize;
}

/// Rotates over the write queues it is given, with one counter per
/// selector: keep one per topic (as RocketMQ keeps one `sendWhichQueue` per
/// topic), or one shared selector cycling over topics spreads unevenly.
/// [`Store::send`] keeps its own rotation per topic.
#[derive(Debug, Default)]
pub struct RoundRobinSelector {
    next: AtomicU64,
}

impl MessageQueueSelector for RoundRobinSelector {
    fn select(&self, queues: &[MessageQueue], _msg: &Message) -> usize {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // queues is never empty; `max(1)` keeps the modulo defined anyway.
        (n % queues.len().max(1) as u64) as usize
    }
}

/// Sends every message with the same first key to the same queue
/// (RocketMQ's `SelectMessageQueueByHash`, keyed by the message's first
/// key). Messages without keys go to queue 0.
#[derive(Debug, Default, Clone, Copy)]
pub struct HashByKeySelector;

impl MessageQueueSelector for HashByKeySelector {
    fn select(&self, queues: &[MessageQueue], msg: &Message) -> usize {
        let Some(key) = msg.keys().first() else {
            return 0;
        };
        let h = crate::codec::java_string_hash(key).unsigned_abs();
        (u64::from(h) % queues.len().max(1) as u64) as usize
    }
}

/// Picks a queue at random (RocketMQ's `SelectMessageQueueByRandom`).
#[derive(Debug, Default)]
pub struct RandomSelector {
    state: AtomicU64,
}

impl MessageQueueSelector for RandomSelector {
    fn select(&self, queues: &[MessageQueue], _msg: &Message) -> usize {
        // splitmix64 over a shared counter: cheap, thread-safe, and good
        // enough to spread load.
        let mut z = self.state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % queues.len().max(1) as u64) as usize
    }
}

/// Told the outcome of [`Store::send_async`] (RocketMQ's `SendCallback`).
pub trait SendCallback: Send + 'static {
    /// The message was stored.
    fn on_success(self: Box<Self>, result: SendResult);
    /// The send failed; nothing was acknowledged.
    fn on_exception(self: Box<Self>, error: Error);
}

impl Store {
    /// Sends `msg` to one of its topic's write queues, rotating over them,
    /// and returns once it is stored (and, under
    /// [`FlushMode::Sync`](crate::commitlog::FlushMode::Sync), durable).
    ///
    /// The rotation is the topic's own (RocketMQ's per-topic
    /// `sendWhichQueue`), so sends to other topics in between do not skew
    /// it.
    pub fn send(&self, msg: Message) -> Result<SendResult> {
        let queue_id = self.write_queues(msg.topic())?.rotate_id();
        self.send_one(&msg, queue_id, Durability::Wait)
    }

    /// Sends `msg` to the queue `selector` picks (ordered sending).
    pub fn send_with_selector(&self, msg: Message, selector: &dyn MessageQueueSelector) -> Result<SendResult> {
        let queues = self.write_queues(msg.topic())?;
        let queues = queues.queues();
        let i = selector.select(queues, &msg);
        let queue = queues.get(i).ok_or_else(|| {
            Error::InvalidArgument(format!("selector chose queue index {i} of {} write queues", queues.len()))
        })?;
        let queue_id = queue.queue_id;
        self.send_one(&msg, queue_id, Durability::Wait)
    }

    /// Sends `msg` to queue `queue_id` of its topic.
    pub fn send_to_queue(&self, msg: Message, queue_id: u32) -> Result<SendResult> {
        let queues = self.write_queues(msg.topic())?;
        if !queues.queues().iter().any(|q| q.queue_id == queue_id) {
            return Err(Error::InvalidArgument(format!(
                "topic {} has no write queue {queue_id} ({} write queues)",
                msg.topic(),
                queues.queues().len()
            )));
        }
        self.send_one(&msg, queue_id, Durability::Wait)
    }

    /// Sends several messages of one topic to one queue (chosen by
    /// rotation) as one contiguous, all-or-nothing write with one
    /// durability wait (RocketMQ's batch send: same topic, no delay level).
    pub fn send_batch(&self, msgs: Vec<Message>) -> Result<Vec<SendResult>> {
        let Some(first) = msgs.first() else {
            return Err(Error::InvalidArgument("empty batch".into()));
        };
        let topic = first.topic_name();
        // Messages built from one shared name compare by pointer.
        if let Some(m) = msgs.iter().find(|m| !m.topic_name().same_allocation(topic) && m.topic() != first.topic()) {
            return Err(Error::InvalidArgument(format!(
                "a batch goes to one topic: found {} and {}",
                topic,
                m.topic()
            )));
        }
        if msgs.iter().any(|m| m.delay_level().is_some() || m.deliver_at().is_some()) {
            return Err(Error::InvalidArgument("batch messages cannot carry a delay level or delivery time".into()));
        }
        let queue_id = self.write_queues(topic)?.rotate_id();
        self.send_to_queues(&msgs, &vec![queue_id; msgs.len()], Durability::Wait)
    }

    /// Sends without blocking the caller on the flush: the send runs on
    /// the store's `mqstore:send-async` workers (started on first use,
    /// [`StoreOptions::async_send_threads`](super::StoreOptions::async_send_threads)
    /// of them, so Sync-mode sends still share flushes) and `callback` is
    /// told the outcome there. At most
    /// [`StoreOptions::async_send_backlog`](super::StoreOptions::async_send_backlog)
    /// sends wait for a worker; beyond that this call blocks until one is
    /// taken (RocketMQ bounds in-flight async sends the same way). Sends
    /// still queued when the store closes are reported to their callbacks
    /// as [`Error::Closed`].
    pub fn send_async(&self, msg: Message, callback: Box<dyn SendCallback>) -> Result<()> {
        self.ensure_open()?;
        crate::topic::validate_user_topic(msg.topic())?;
        msg.check(&self.inner.opts.limits)?;
        let tx = self.inner.async_sends.sender(self)?;
        if let Err(crossbeam_channel::SendError((_, cb))) = tx.send((msg, callback)) {
            cb.on_exception(Error::Closed);
        }
        Ok(())
    }

    /// Sends and returns without waiting for durability or a result
    /// (RocketMQ's `sendOneway`). Bad input is still reported; a failure to
    /// store is not. Under Sync flush the message is committed by the flush
    /// thread shortly after and is visible to consumers only then.
    pub fn send_oneway(&self, msg: Message) -> Result<()> {
        let queue_id = self.write_queues(msg.topic())?.rotate_id();
        match self.send_one(&msg, queue_id, Durability::NoWait) {
            Ok(_) => Ok(()),
            Err(e @ (Error::InvalidArgument(_) | Error::MessageTooLarge { .. } | Error::Closed)) => Err(e),
            Err(_) => Ok(()),
        }
    }

    /// The writable queues of `topic` (for store-internal resends, which
    /// may address the store's own topics).
    pub(crate) fn write_queues_of(&self, topic: &str) -> Result<Arc<WriteQueues>> {
        self.ensure_open()?;
        self.writable_queues(topic)
    }

    /// The writable queues of `topic`, for a producer: the store's own
    /// topics (schedule, retry, dead-letter) take no producer writes. A
    /// message sent straight to the schedule topic lacked the due time and
    /// destination the delivery thread needs, was acknowledged, and then
    /// dropped.
    fn write_queues(&self, topic: &str) -> Result<Arc<WriteQueues>> {
        self.ensure_open()?;
        crate::topic::validate_user_topic(topic)?;
        self.writable_queues(topic)
    }

    /// The topic table's shared list: no allocation per send.
    fn writable_queues(&self, topic: &str) -> Result<Arc<WriteQueues>> {
        let (permission, queues) = self.inner.topics.write_queues(topic).ok_or_else(|| {
            Error::InvalidArgument(format!("topic {topic} does not exist (create it with Store::create_topic)"))
        })?;
        if !permission.writable() {
            return Err(Error::InvalidArgument(format!("topic {topic} is not writable")));
        }
        if queues.queues().is_empty() {
            return Err(Error::InvalidArgument(format!("topic {topic} has no write queues")));
        }
        Ok(queues)
    }

    /// Stores `msgs[i]` in queue `queue_ids[i]`, all in one commit-log write.
    fn send_to_queues(&self, msgs: &[Message], queue_ids: &[u32], wait: Durability) -> Result<Vec<SendResult>> {
        let inner = &self.inner;
        inner.dispatch.check()?;
        let now = inner.opts.commit_log.clock.now_ms();
        // Every message's properties in one buffer, one allocation per call
        // (a blob without user properties is the unique id's 43 bytes).
        let mut blobs = Vec::with_capacity(msgs.len() * 48);
        let mut prepared = Vec::with_capacity(msgs.len());
        // Built here to hold the ids; completed once the records are
        // appended.
        let mut results = Vec::with_capacity(msgs.len());
        // The ids in one atomic update of the generator, not one per message.
        let ids = inner.ids.next_n(now, msgs.len());
        for ((m, &queue_id), id) in msgs.iter().zip(queue_ids).zip(ids) {
            let p = self.prepare(m, id, queue_id, now, &mut blobs)?;
            prepared.push(p);
            results.push(SendResult {
                status: SendStatus::SendOk,
                msg_id: id,
                offset_msg_id: id, // replaced once appended
                queue_id,
                queue_offset: 0,
                physical_offset: PhysicalOffset(0),
            });
        }
        let drafts: Vec<RecordDraft<'_>> = msgs.iter().zip(&prepared).map(|(m, p)| p.draft(m, &blobs, now)).collect();
        // Only a sender dispatching its own records (Async flush) uses them.
        let found: Vec<Option<Found<'_>>> = match inner.opts.commit_log.flush_mode {
            crate::commitlog::FlushMode::Async => {
                msgs.iter().zip(&prepared).zip(&results).map(|((m, p), r)| p.found(m, &r.msg_id)).collect()
            }
            crate::commitlog::FlushMode::Sync => Vec::new(),
        };
        let (appended, positions, status) = append_numbered(inner, &drafts, &found, wait)?;
        for ((r, a), queue_offset) in results.iter_mut().zip(&appended).zip(positions) {
            r.status = status;
            r.offset_msg_id = offset_msg_id(a);
            r.queue_offset = queue_offset;
            r.physical_offset = a.offset;
        }
        Ok(results)
    }

    /// [`Store::send_to_queues`] of one message, with this thread's
    /// reused buffers instead of new vectors.
    fn send_one(&self, msg: &Message, queue_id: u32, wait: Durability) -> Result<SendResult> {
        let mut scratch = Scratch::take();
        let result = self.send_one_with(msg, queue_id, wait, &mut scratch);
        scratch.give_back();
        result
    }

    fn send_one_with(&self, msg: &Message, queue_id: u32, wait: Durability, s: &mut Scratch) -> Result<SendResult> {
        let inner = &self.inner;
        inner.dispatch.check()?;
        let now = inner.opts.commit_log.clock.now_ms();
        let msg_id = inner.ids.next(now);
        let p = self.prepare(msg, msg_id, queue_id, now, &mut s.blob)?;
        let draft = p.draft(msg, &s.blob, now);
        let found = [p.found(msg, &msg_id)];
        let drafts = std::slice::from_ref(&draft);
        let status = append_numbered_into(inner, drafts, &found, wait, &mut s.appended, &mut s.positions)?;
        match (s.appended.first(), s.positions.first()) {
            (Some(a), Some(&queue_offset)) => Ok(SendResult {
                status,
                msg_id,
                offset_msg_id: offset_msg_id(a),
                queue_id,
                queue_offset,
                physical_offset: a.offset,
            }),
            _ => Err(Error::Closed),
        }
    }

    /// Checks `m` and appends its properties blob, with unique id `id`, to
    /// `blobs`; a delayed message is addressed to the schedule topic.
    #[inline(always)]
    fn prepare<'m>(
        &self,
        m: &'m Message,
        id: MessageId,
        queue_id: u32,
        now: u64,
        blobs: &mut Vec<u8>,
    ) -> Result<Prepared<'m>> {
        let inner = &self.inner;
        m.check(&inner.opts.limits)?;
        let start = blobs.len();
        m.encode_properties_for_store_onto(Some(&id), blobs)?;
        // A delayed message waits in the schedule topic, carrying where it
        // goes and when (see `crate::retry::schedule`).
        let (topic, target_queue) =
            match schedule::route(&inner.opts.delay_levels, now, m.delay_level(), m.deliver_at()) {
                Some((level, due)) => {
                    // Appended as they are: the store's own names are never among
                    // the message's properties (`check` refuses them), and a
                    // delay level is already there as DELAY.
                    if m.delay_level().is_none() {
                        push_pair(blobs, DELAY, &level.to_string())?;
                    }
                    push_pair(blobs, REAL_TOPIC, m.topic())?;
                    push_pair(blobs, REAL_QID, &queue_id.to_string())?;
                    push_pair(blobs, DELAY_DUE_MS, &due.to_string())?;
                    let len = blobs.len() - start;
                    if len > crate::commitlog::MAX_PROPERTIES_LEN {
                        return Err(Error::MessageTooLarge {
                            size: len as u64,
                            max: crate::commitlog::MAX_PROPERTIES_LEN as u64,
                        });
                    }
                    (SCHEDULE_TOPIC, (level - 1) as u32)
                }
                None => (m.topic(), queue_id),
            };
        Ok(Prepared { props: start..blobs.len(), topic, queue_id: target_queue })
    }
}

/// A message ready to append: where its properties blob lies in the
/// send's buffer, and the topic and queue its record goes to (the schedule
/// topic for a delayed message).
struct Prepared<'m> {
    props: std::ops::Range<usize>,
    topic: &'m str,
    queue_id: u32,
}

impl<'m> Prepared<'m> {
    /// The record of `m`, whose blob is in `blobs`.
    fn draft<'a>(&self, m: &'a Message, blobs: &'a [u8], now: u64) -> RecordDraft<'a>
    where
        'm: 'a,
    {
        RecordDraft {
            topic: self.topic,
            queue_id: self.queue_id,
            flag: m.flag(),
            born_timestamp: now,
            properties: &blobs[self.props.clone()],
            body: m.body(),
            ..RecordDraft::default()
        }
    }

    /// What dispatch would find in the properties of `m`'s record, whose
    /// unique id is `id`; `None` (dispatch scans them) for a delayed
    /// message, whose record goes to the schedule topic with more
    /// properties.
    fn found<'a>(&self, m: &'a Message, id: &'a MessageId) -> Option<Found<'a>> {
        (self.topic != SCHEDULE_TOPIC).then(|| Found::of_sent(m.tags(), m.keys(), id.as_str()))
    }
}

/// A single send's buffers (properties blob, where the record went, its
/// queue offset), kept per thread between sends: three allocations and
/// frees were about an eighth of a single 128-byte send.
#[derive(Default)]
struct Scratch {
    blob: Vec<u8>,
    appended: Vec<Appended>,
    positions: Vec<u64>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

impl Scratch {
    /// A blob larger than this is not kept (properties can reach 64 KiB).
    const KEEP_BLOB: usize = 4 << 10;

    /// This thread's buffers, empty. A send made while another is using
    /// them (from a callback on the same thread) gets new ones.
    fn take() -> Self {
        SCRATCH.try_with(std::cell::Cell::take).unwrap_or_default()
    }

    fn give_back(mut self) {
        self.blob.clear();
        self.appended.clear();
        self.positions.clear();
        if self.blob.capacity() > Self::KEEP_BLOB {
            self.blob = Vec::new();
        }
        // During thread exit the slot may be gone: the buffers are dropped.
        let _ = SCRATCH.try_with(|slot| slot.set(self));
    }
}

/// The offset id (`offsetMsgId`) of the record appended as `a`.
fn offset_msg_id(a: &crate::commitlog::Appended) -> MessageId {
    crate::message::encode_offset_msg_id(
        crate::message::DEFAULT_STORE_HOST,
        crate::message::DEFAULT_STORE_PORT,
        a.offset,
    )
}

/// Appends `drafts`, numbering each one's queue position under the commit
/// log's append lock (so queue order is log order), and gets the records
/// dispatched. Returns where each went, its queue offset, and whether the
/// flush confirmed them in time. Every store-internal write (delayed
/// delivery, send-back, dead-lettering) goes through here too.
pub(crate) fn append_numbered(
    inner: &super::Inner,
    drafts: &[RecordDraft<'_>],
    found: &[Option<Found<'_>>],
    wait: Durability,
) -> Result<(Vec<Appended>, Vec<u64>, SendStatus)> {
    let (mut appended, mut positions) = (Vec::new(), Vec::new());
    let status = append_numbered_into(inner, drafts, found, wait, &mut appended, &mut positions)?;
    Ok((appended, positions, status))
}

/// [`append_numbered`], appending where each record went to `appended` and
/// its queue offset to `positions` (both empty on entry).
fn append_numbered_into(
    inner: &super::Inner,
    drafts: &[RecordDraft<'_>],
    found: &[Option<Found<'_>>],
    wait: Durability,
    appended: &mut Vec<Appended>,
    positions: &mut Vec<u64>,
) -> Result<SendStatus> {
    if inner.opts.replication.role == crate::replication::Role::Slave {
        return Err(Error::ReadOnlyReplica);
    }
    super::retention::check_writable(inner)?;
    positions.reserve(drafts.len());
    // The numbering lock is taken once for the whole batch (under the
    // append lock, as always) and released after its last record, before
    // the durability wait. A run of records for one queue (all of a
    // `send_batch`) is numbered with one lookup: `assign` is called for
    // every record in order once the write can no longer fail, so the
    // whole run is written.
    let mut numbering = None;
    // The current run: records [start, end) numbered from `first`.
    let mut run = (0usize, 0usize, 0u64);
    let assign = |i: usize, d: &RecordDraft<'_>| {
        let (start, end, first) = run;
        let at = if (start..end).contains(&i) {
            first + (i - start) as u64
        } else {
            let next = numbering.get_or_insert_with(|| inner.next_queue_offset.lock());
            let same = drafts[i..].iter().take_while(|o| o.queue_id == d.queue_id && o.topic == d.topic).count();
            let first = next.take_n(d.topic, d.queue_id, same as u64);
            run = (i, i + same, first);
            first
        };
        if i + 1 == drafts.len() {
            numbering = None;
        }
        positions.push(at);
        at
    };
    let durable = inner.log.append_batch_assigned(drafts, wait, assign, appended)?;
    let status = match durable {
        Ok(()) => SendStatus::SendOk,
        Err(Error::Timeout { .. }) => SendStatus::FlushDiskTimeout,
        Err(e) => return Err(e),
    };
    match inner.opts.commit_log.flush_mode {
        // Readable now: dispatch on this thread if nobody else is.
        crate::commitlog::FlushMode::Async => {
            let own = super::dispatch::OwnRecords { drafts, appended, queue_offsets: positions, found };
            super::dispatch::dispatch_inline(inner, Some(&own));
        }
        // Readable once committed: the flush thread's publish hook nudges
        // the dispatcher after every commit, this one's included (the hook
        // is installed before the store takes sends). A nudge per send too
        // woke the dispatcher once per returning sender, and those context
        // switches on 2 cores halved the messages per group commit.
        crate::commitlog::FlushMode::Sync => {}
    }
    inner.replication.nudge();
    let status = match (status, wait, appended.last()) {
        (SendStatus::SendOk, Durability::Wait, Some(last)) => {
            crate::replication::master::wait_for_replica(inner, last.end().get())
        }
        (s, _, _) => s,
    };
    Ok(status)
}

type AsyncJob = (Message, Box<dyn SendCallback>);
/// The job queue and the threads reading it.
type Workers = (Sender<AsyncJob>, Vec<JoinHandle<()>>);

/// The `mqstore:send-async` workers behind [`Store::send_async`], started
/// on first use and joined by [`Store::close`].
#[derive(Default)]
pub(crate) struct AsyncSends {
    state: Mutex<Option<Workers>>,
}

impl std::fmt::Debug for AsyncSends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSends").field("started", &self.state.lock().is_some()).finish()
    }
}

impl AsyncSends {
    /// The job queue, starting the workers if needed.
    fn sender(&self, store: &Store) -> Result<Sender<AsyncJob>> {
        let mut st = self.state.lock();
        if let Some((tx, _)) = st.as_ref() {
            return Ok(tx.clone());
        }
        // Checked under the lock `stop` takes, so no worker starts after
        // the store began closing.
        store.ensure_open()?;
        let opts = &store.inner.opts;
        let (tx, rx) = bounded::<AsyncJob>(opts.async_send_backlog);
        let mut workers = Vec::with_capacity(opts.async_send_threads);
        for i in 0..opts.async_send_threads {
            let rx: Receiver<AsyncJob> = rx.clone();
            // The workers hold only a weak reference, so a store dropped
            // without close still goes away.
            let weak = std::sync::Arc::downgrade(store.guard());
            let spawned = std::thread::Builder::new().name(format!("mqstore:send-async-{i}")).spawn(move || {
                for (msg, cb) in rx {
                    match weak.upgrade() {
                        Some(guard) => match Store::from_guard(guard).send(msg) {
                            Ok(r) => cb.on_success(r),
                            Err(e) => cb.on_exception(e),
                        },
                        None => cb.on_exception(Error::Closed),
                    }
                }
            });
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    drop(tx);
                    for h in workers {
                        let _ = h.join();
                    }
                    return Err(Error::io("spawn thread", &store.inner.root, e));
                }
            }
        }
        *st = Some((tx.clone(), workers));
        Ok(tx)
    }

    /// Lets the workers finish every queued send, then joins them. Called
    /// by close before the commit log closes.
    pub(crate) fn stop(&self) -> Result<()> {
        let Some((tx, workers)) = self.state.lock().take() else {
            return Ok(());
        };
        drop(tx);
        let mut result = Ok(());
        for h in workers {
            // A callback that closes the store runs on a worker: it cannot
            // join itself (it exits once its callback returns).
            if h.thread().id() == std::thread::current().id() {
                continue;
            }
            if h.join().is_err() {
                result = Err(Error::Fenced { reason: "an async send callback panicked".into() });
            }
        }
        result
    }
}
