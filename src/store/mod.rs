//! The store: topics, consume queues, sending and pulling, consumer offsets,
//! over one commit log.
//!
//! [`Store::open`] takes the directory lock (through the commit log),
//! recovers the commit log, then brings the consume queues in line with it
//! before any write is accepted: units pointing past the recovered end are
//! dropped, and every record after the dispatch checkpoint is dispatched
//! again (re-dispatch is idempotent). A queue found missing units (a lost or
//! damaged file) is rebuilt from the commit log.
//!
//! Writes number each message's queue position under the commit log's
//! append lock (so queue order is log order), and a `mqstore:dispatch`
//! thread follows the readable end of the log, appending consume-queue
//! units and waking long-polling readers. Under [`FlushMode::Sync`] the
//! readable end is the flushed end, so no reader ever sees a message that is
//! not yet durable.
//!
//! [`FlushMode::Sync`]: crate::commitlog::FlushMode::Sync

pub(crate) mod dispatch;
pub(crate) mod layout;
mod metadata;
mod numbering;
mod options;
mod pull;
mod query;
mod readonly;
pub(crate) mod retention;
pub(crate) mod send;
pub mod verify;

pub use crate::metafile::generations::{FallbackReason, MetadataFallback};
pub use options::{ReadChecksums, StoreOptions};
pub use pull::{PullResult, PullStatus, PullSummary, TagFilter};
pub use query::MAX_QUERY_RESULTS;
pub use readonly::StoreView;
pub use retention::{Holder, RemovalReason, RemovedSegment, Retention, RetentionOptions, RetentionReport};
pub use send::{
    HashByKeySelector, MessageQueue, MessageQueueSelector, RandomSelector, RoundRobinSelector, SendCallback,
    SendResult, SendStatus,
};

use crate::commitlog::CommitLog;
use crate::consumequeue::ConsumeQueueSet;
use crate::error::{Error, Result};
use crate::message::MessageIdGenerator;
use crate::offsetstore::OffsetTable;
use crate::topic::{TopicConfig, TopicTable};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A handle to an open store. Cheap to clone; every clone refers to the
/// same store, and all of them may be used from any thread.
///
/// ```
/// use mqstore::message::Message;
/// use mqstore::store::{Store, StoreOptions};
/// use mqstore::topic::TopicConfig;
/// # fn main() -> mqstore::Result<()> {
/// let dir = tempfile::tempdir().map_err(|e| mqstore::Error::InvalidArgument(e.to_string()))?;
/// let store = Store::open(dir.path(), StoreOptions::default())?;
/// store.create_topic(TopicConfig::new("orders", 2))?;
/// let sent = store.send(Message::new("orders", "hello"))?;
/// // Consume queues are filled in the background: wait for the message.
/// let all = mqstore::store::TagFilter::All;
/// let wait = std::time::Duration::from_secs(5);
/// let got = store.pull_wait("orders", sent.queue_id, sent.queue_offset, 10, &all, wait)?;
/// assert_eq!(got.messages[0].body().as_ref(), b"hello");
/// store.close()?;
/// # Ok(())
/// # }
/// ```
///
/// Dropping the last handle closes the store (best effort, errors
/// ignored); call [`Store::close`] to see them.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    /// Shared by every user handle; its drop closes the store. Background
    /// threads hold `inner` (or a weak guard), never a strong guard, so they
    /// do not keep a forgotten store open.
    guard: Arc<CloseGuard>,
}

/// Closes the store when the last [`Store`] handle goes away.
#[derive(Debug)]
pub(crate) struct CloseGuard(Arc<Inner>);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        let _ = close(&self.0);
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) opts: StoreOptions,
    pub(crate) log: CommitLog,
    pub(crate) topics: TopicTable,
    pub(crate) queues: ConsumeQueueSet,
    /// Keys and unique ids to commit-log offsets, fed by dispatch.
    pub(crate) index: crate::index::Index,
    pub(crate) offsets: OffsetTable,
    /// Next queue offset per (topic, queue id). Only changed inside the
    /// commit log's append lock (see `send`), so positions follow log order.
    pub(crate) next_queue_offset: Mutex<numbering::QueueNumbering>,
    pub(crate) ids: MessageIdGenerator,
    pub(crate) dispatch: Arc<dispatch::Dispatch>,
    /// Delayed delivery progress (see [`crate::retry::schedule`]).
    pub(crate) schedule: crate::retry::schedule::Scheduler,
    pub(crate) async_sends: send::AsyncSends,
    /// Dead letters not yet indexed; its lock serialises dead-lettering,
    /// so a message is dead-lettered once per group (see
    /// [`crate::dlq::already_dead_lettered`]).
    pub(crate) dead_letters: Mutex<crate::dlq::PendingDeadLetters>,
    /// Running push consumers, by group.
    pub(crate) consumers: crate::consumer::Registry,
    pub(crate) closed: AtomicBool,
    threads: Mutex<Option<dispatch::Threads>>,
    /// A master's replica progress and `mqstore:replicate` thread.
    pub(crate) replication: crate::replication::master::MasterState,
    /// Log retention's lock and disk-full flag.
    pub(crate) retention: retention::RetentionState,
    /// Metadata files read from their previous generation at open.
    pub(crate) metadata_fallbacks: Vec<MetadataFallback>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, taking its lock
    /// first ([`Error::Locked`] if another handle has it, after retrying
    /// for 200 ms, see [`CommitLog::open`](crate::commitlog::CommitLog::open))
    /// and recovering after a crash.
    pub fn open(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<Self> {
        opts.validate()?;
        let root = dir.as_ref().to_path_buf();
        let log = CommitLog::open(&root, opts.commit_log.clone())?;
        let storage = opts.commit_log.storage.clone();
        // Before anything reads the queues: the log must start at the
        // recorded retention floor (an interrupted removal is finished).
        retention::recover(&log, storage.as_ref())?;
        // Each from its previous generation if need be; none silently empty.
        let (topics, offsets, metadata) = metadata::open(&storage, &root, opts.cq_units_per_file)?;
        // Fixed at creation: later opens use the recorded value whatever
        // their options say (the files were sized with it).
        let units = metadata.units();
        let queues = ConsumeQueueSet::open(storage.clone(), &root, units)?;
        let (index, _) = crate::index::Index::open(storage, &root, opts.index_file_size, log.max_offset().get())?;
        let inner = Arc::new(Inner {
            root,
            opts,
            log,
            topics,
            queues,
            index,
            offsets,
            next_queue_offset: Mutex::new(numbering::QueueNumbering::default()),
            ids: MessageIdGenerator::new(),
            dispatch: Arc::default(),
            schedule: crate::retry::schedule::Scheduler::default(),
            async_sends: send::AsyncSends::default(),
            dead_letters: Mutex::default(),
            consumers: crate::consumer::Registry::default(),
            closed: AtomicBool::new(false),
            threads: Mutex::new(None),
            replication: crate::replication::master::MasterState::default(),
            retention: retention::RetentionState::default(),
            metadata_fallbacks: metadata.fallbacks().to_vec(),
        });
        // A membership file left by an earlier run is stale: remove it.
        let storage = inner.opts.commit_log.storage.clone();
        inner.consumers.open_membership_file(storage, &inner.root, inner.opts.commit_log.clock.clone());
        ensure_schedule_topic(&inner)?;
        // Two good generations again, and every primary file recorded.
        metadata.finish(&inner.topics, &inner.offsets)?;
        dispatch::recover(&inner)?;
        // Offsets committed past what survived (or for queues that are
        // gone) are pulled back into the recovered range. A read queue of a
        // live topic that never held a message has no consume-queue files
        // but still exists: its range is [0, 0], so an offset committed on
        // it stays (dropping it made a group's position vanish on reopen).
        inner.offsets.clamp(|t, q| match inner.queues.queue(t, q) {
            Some(cq) => Some((cq.min_offset().0, cq.max_offset().0)),
            None => inner.topics.get(t).filter(|cfg| q < cfg.read_queues).map(|_| (0, 0)),
        });
        // A clamped offset is written at once: left only in memory, a later
        // crash would bring back the old value from the file, and once new
        // messages refill the lost positions it would skip them unread.
        inner.offsets.persist()?;
        // Sync-mode records become readable on the flush thread (one-way
        // sends do not wait for that): have it wake the dispatcher. The hook
        // holds only the dispatch state, never the store, so the flush
        // thread can never end up dropping (and joining) itself.
        let dispatch = inner.dispatch.clone();
        inner.log.set_publish_hook(Box::new(move || dispatch.nudge()));
        let threads = dispatch::Threads::start(&inner)?;
        *inner.threads.lock() = Some(threads);
        let guard = Arc::new(CloseGuard(inner.clone()));
        Ok(Self { inner, guard })
    }

    /// Creates a topic, or updates it if it exists. The name must be a
    /// valid user topic (1-127 characters of `[%|a-zA-Z0-9_-]`, not starting
    /// with `%RETRY%` or `%DLQ%`), and a configuration with more write
    /// queues than read queues is rejected: messages written to the extra
    /// queues would never be read. Shrinking the read queues of a topic
    /// below a queue that holds messages is rejected for the same reason.
    pub fn create_topic(&self, cfg: TopicConfig) -> Result<()> {
        self.ensure_open()?;
        crate::topic::validate_user_topic(&cfg.name)?;
        self.put_topic(cfg)
    }

    /// Creates or updates an internal topic (retry and dead-letter topics
    /// use reserved names that [`Store::create_topic`] refuses).
    pub(crate) fn put_topic(&self, cfg: TopicConfig) -> Result<()> {
        cfg.validate()?;
        for (queue_id, q) in self.inner.queues.queues_of(&cfg.name) {
            if queue_id >= cfg.read_queues && q.max_offset().0 > q.min_offset().0 {
                return Err(Error::InvalidArgument(format!(
                    "topic {}: queue {queue_id} holds messages, so read_queues must stay above it",
                    cfg.name
                )));
            }
        }
        // A new topic (or a deleted one created again) starts a new
        // incarnation: its queues number from 0, and records written before
        // now, even ones still staged, belong to no queue of it.
        // Lock order: the commit log's append lock is never taken while
        // holding the numbering lock (sends take them the other way round).
        let since = self.inner.log.append_end().get();
        let mut next = self.inner.next_queue_offset.lock();
        let created = self.inner.topics.get(&cfg.name).is_none();
        let name = cfg.name.clone();
        self.inner.topics.upsert(cfg, since).inspect_err(|e| self.inner.log.fence_if_sync_failed(e, "topics"))?;
        if created {
            next.forget_topic(&name);
        }
        drop(next);
        // Consumers of the topic see its new queue counts at once.
        self.inner.consumers.rebalance_topic(&name);
        Ok(())
    }

    /// Deletes a topic, its consume queues and its consumer offsets. Its
    /// records stay in the commit log until log cleanup removes them.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.ensure_open()?;
        if name == crate::retry::SCHEDULE_TOPIC {
            return Err(Error::InvalidArgument(format!("topic {name} belongs to the store and cannot be deleted")));
        }
        if self.inner.topics.get(name).is_none() {
            return Err(Error::InvalidArgument(format!("topic {name} does not exist")));
        }
        self.inner.topics.remove(name).inspect_err(|e| self.inner.log.fence_if_sync_failed(e, "topics"))?;
        // Consumers give up the topic's queues (finishing what they hold)
        // before the queues go away.
        self.inner.consumers.rebalance_topic(name);
        // Hold the numbering lock so no send to this topic is numbered
        // while its queues go away.
        let mut next = self.inner.next_queue_offset.lock();
        next.forget_topic(name);
        self.inner.queues.remove_topic(name)?;
        drop(next);
        self.inner.offsets.remove_topic(name);
        self.inner.offsets.persist().inspect_err(|e| self.inner.log.fence_if_sync_failed(e, "consumer offsets"))
    }

    /// The configuration of `name`, if the topic exists.
    #[must_use]
    pub fn topic(&self, name: &str) -> Option<TopicConfig> {
        self.inner.topics.get(name)
    }

    /// Every topic, sorted by name.
    #[must_use]
    pub fn topics(&self) -> Vec<TopicConfig> {
        self.inner.topics.list()
    }

    /// A push consumer of `group` (RocketMQ's `DefaultMQPushConsumer`):
    /// subscribe, set a listener, then start it.
    pub fn push_consumer(&self, group: &str) -> crate::consumer::PushConsumerBuilder {
        crate::consumer::PushConsumerBuilder::new(self.clone(), group)
    }

    /// The message whose store-level id ([`SendResult::offset_msg_id`]) is
    /// `id`.
    pub fn message_by_offset_id(&self, id: &str) -> Result<crate::message::MessageExt> {
        self.ensure_open()?;
        let (_, _, offset) = crate::message::decode_offset_msg_id(id)?;
        let rec = self.inner.log.read(offset)?;
        crate::message::MessageExt::from_record(&rec)
    }

    /// Delayed delivery: messages delivered and dropped since open, and
    /// per level how many wait.
    #[must_use]
    pub fn schedule_stats(&self) -> crate::retry::ScheduleStats {
        self.inner.schedule.stats(&self.inner)
    }

    /// The store directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// Metadata files (`config/topics`, `config/consumer_offsets`,
    /// `config/store`) that open read from their previous generation
    /// because the current file was missing, damaged or older (FORMAT.md
    /// 11.10). Empty after a normal open. Open rewrote each of them from
    /// the generation it used, so the next open reports nothing.
    #[must_use]
    pub fn metadata_fallbacks(&self) -> &[MetadataFallback] {
        &self.inner.metadata_fallbacks
    }

    /// The commit log underneath (for statistics and tools).
    #[must_use]
    pub fn commit_log(&self) -> &CommitLog {
        &self.inner.log
    }

    /// Flushes everything, writes consumer offsets, stops the background
    /// threads and closes the commit log. Later calls on any clone fail
    /// with [`Error::Closed`]; closing twice is a no-op.
    ///
    /// Running push consumers first hand back their queues: this waits for
    /// the listener calls already under way (and the batches already handed
    /// to their workers) to return, so their offsets are committed. A
    /// listener that never returns keeps `close` waiting.
    pub fn close(&self) -> Result<()> {
        close(&self.inner)
    }

    /// A handle from the guard a background worker holds weakly.
    pub(crate) fn from_guard(guard: Arc<CloseGuard>) -> Self {
        Self { inner: guard.0.clone(), guard }
    }

    pub(crate) fn guard(&self) -> &Arc<CloseGuard> {
        &self.guard
    }

    pub(crate) fn ensure_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

/// Creates the schedule topic, or widens it to the configured delay levels
/// (it never shrinks: waiting messages of a dropped level still drain).
fn ensure_schedule_topic(inner: &Inner) -> Result<()> {
    let levels = u32::try_from(inner.opts.delay_levels.len()).unwrap_or(u32::MAX);
    let existing = inner.topics.get(crate::retry::SCHEDULE_TOPIC);
    if existing.as_ref().is_some_and(|c| c.read_queues >= levels && c.write_queues >= levels) {
        return Ok(());
    }
    let queues = existing.map_or(levels, |c| c.read_queues.max(levels));
    // An existing topic keeps its incarnation start; a new one starts here.
    let since = inner.log.append_end().get();
    inner.topics.upsert(TopicConfig::new(crate::retry::SCHEDULE_TOPIC, queues), since).map(|_| ())
}

/// [`Store::close`], shared with the drop of the last handle.
fn close(inner: &Inner) -> Result<()> {
    // Queued async sends finish first (their callbacks are told).
    let drained = inner.async_sends.stop();
    // Push consumers give up their queues, committing what they consumed,
    // before the offsets are written for the last time.
    if !inner.closed.load(Ordering::Acquire) {
        inner.consumers.stop_all();
    }
    if inner.closed.swap(true, Ordering::AcqRel) {
        return drained;
    }
    // The consumers' membership file describes a live store only.
    inner.consumers.close_membership_file();
    // Nothing is shipped after close began; waiting sync sends give up.
    inner.replication.stop();
    let threads = inner.threads.lock().take();
    let result = match threads {
        Some(t) => t.stop(inner),
        None => Ok(()),
    };
    // Dispatch whatever is readable so the consume queues and their
    // checkpoint are complete at a clean shutdown.
    let step = {
        let _round = inner.retention.lock.lock();
        dispatch::dispatch_available(inner)
            .and_then(|_| inner.queues.flush_all())
            .and_then(|()| dispatch::write_checkpoint(inner))
    };
    drained.and(result).and(step).and(inner.offsets.persist()).and(inner.log.close())
}
