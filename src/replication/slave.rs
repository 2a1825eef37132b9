//! The slave side: writing received runs into the commit log at the
//! master's offsets, then dispatching them like local writes.
//!
//! Topics are metadata outside the log, so a slave learns them from the
//! records: a record of a topic it does not know creates the topic (with
//! enough queues for the record's queue id), and a queue id beyond a known
//! topic's queues widens it, before the record is written, so dispatch
//! never skips it.

use super::{ReplicaAck, ReplicaProgress, ReplicationBatch, Role};
use crate::commitlog::CommitLog;
use crate::commitlog::FlushMode;
use crate::error::{Error, Result};
use crate::offset::PhysicalOffset;
use crate::store::Store;
use crate::store::StoreOptions;
use crate::topic::TopicConfig;
use std::path::Path;

impl Store {
    /// Slave: writes a run the master shipped (see
    /// [`Replicator`](super::Replicator)) at the offsets its records
    /// carry, dispatches it to the consume queues and the index, and
    /// returns the progress to acknowledge to the master. With
    /// [`ReplicaAck::Durable`] in this store's options the run is flushed
    /// first.
    ///
    /// Records the slave has already (a duplicate delivery) are skipped.
    /// Fails without writing anything to the log (topics the run names may
    /// already have been learned) with [`Error::ReplicationGap`] when
    /// the run starts past this log's end (reconnect from
    /// [`Store::replica_progress`]), [`Error::ReplicaDiverged`] when its
    /// records differ from ones stored here, and
    /// [`Error::InvalidArgument`] when the bytes are not valid records.
    pub fn apply_replicated(&self, batch: ReplicationBatch<'_>) -> Result<ReplicaProgress> {
        self.ensure_open()?;
        let inner = &self.inner;
        if inner.opts.replication.role != Role::Slave {
            return Err(Error::InvalidArgument("apply_replicated: this store is not a slave".into()));
        }
        inner.dispatch.check()?;
        self.learn_topics(batch)?;
        inner.log.append_replicated(batch.prev_end.get(), batch.offset.get(), batch.records)?;
        match inner.opts.commit_log.flush_mode {
            FlushMode::Async => crate::store::dispatch::dispatch_inline(inner, None),
            FlushMode::Sync => inner.dispatch.nudge(),
        }
        if inner.opts.replication.ack == ReplicaAck::Durable {
            inner.log.flush()?;
        }
        Ok(self.replica_progress())
    }

    /// This store's replication progress: the end of its log and of what
    /// is durable. A slave reports it to its master when it connects.
    #[must_use]
    pub fn replica_progress(&self) -> ReplicaProgress {
        let log = &self.inner.log;
        ReplicaProgress { applied: log.max_offset(), durable: log.flushed_offset().min(log.max_offset()) }
    }

    /// Creates or widens the topics of `batch`'s records (see the module
    /// docs). Records are validated again when written.
    fn learn_topics(&self, batch: ReplicationBatch<'_>) -> Result<()> {
        let mut seen: Vec<(String, u32)> = Vec::new();
        for (topic, queue_id) in crate::commitlog::run_topics(batch.records) {
            match seen.iter_mut().find(|(t, _)| t == topic) {
                Some((_, q)) => *q = (*q).max(queue_id),
                None => seen.push((topic.to_string(), queue_id)),
            }
        }
        for (topic, max_queue) in seen {
            let need = max_queue.saturating_add(1);
            match self.topic(&topic) {
                Some(cfg) if cfg.read_queues >= need && cfg.write_queues >= need => {}
                Some(mut cfg) => {
                    cfg.read_queues = cfg.read_queues.max(need);
                    cfg.write_queues = cfg.write_queues.max(need);
                    self.put_topic(cfg)?;
                }
                None => {
                    // The name came from a record the master wrote; it is
                    // checked like any topic name.
                    crate::topic::validate_topic_name(&topic)?;
                    self.put_topic(TopicConfig::new(&topic, need))?;
                }
            }
        }
        Ok(())
    }
}

/// Cuts a closed slave's commit log back to `to`, the end its master
/// reports when it refused the slave's reconnect with
/// [`Error::ReplicaAhead`] (the master lost a tail it never got
/// acknowledged, say after a power loss in async flush mode). Takes the
/// directory lock ([`Error::Locked`] while the store is open). Returns the
/// log's end afterwards: `to`, or less if the log never reached it.
/// Opening the store next drops the consume-queue units and index entries
/// of the cut records.
///
/// `to` must be a record boundary of the slave's log, which it is when the
/// two logs agree up to it; otherwise nothing is changed and
/// [`Error::ReplicaDiverged`] is returned.
pub fn truncate_slave(dir: impl AsRef<Path>, opts: &StoreOptions, to: PhysicalOffset) -> Result<PhysicalOffset> {
    if opts.replication.role != Role::Slave {
        return Err(Error::InvalidArgument("truncate_slave: the options are not a slave's".into()));
    }
    let mut log_opts = opts.commit_log.clone();
    log_opts.truncate_to = Some(to.get());
    let log = CommitLog::open(dir, log_opts)?;
    let end = log.max_offset();
    log.close()?;
    Ok(end)
}
