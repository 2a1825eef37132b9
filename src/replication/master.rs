//! The master side: the `mqstore:replicate` thread that ships runs to the
//! host's [`Replicator`], the replica's acknowledged progress, and the wait
//! a [`ReplicationMode::Sync`] send makes for it.
//!
//! Invariants: `applied` and `durable` only grow between connects and never
//! exceed the local end (checked on every acknowledgement); a connect sets
//! them to what the replica reports (a replica that restarted may be
//! behind what it acknowledged before, and a sync send must not count on
//! the lost part); the shipping position is owned by the thread and reset
//! only through a connect.

use super::{ReplicaAck, ReplicaProgress, ReplicationBatch, ReplicationMode, ReplicationStatus, Replicator, Role};
use crate::commitlog::wake::Broadcast;
use crate::error::{Error, Result};
use crate::offset::PhysicalOffset;
use crate::store::{SendStatus, Store};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the replicate thread sleeps without a nudge (a missed wake-up
/// delays shipping by at most this).
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Replication state of a store (used on a master; a slave keeps it idle).
#[derive(Default)]
pub(crate) struct MasterState {
    connected: AtomicBool,
    applied: AtomicU64,
    durable: AtomicU64,
    shipped: AtomicU64,
    /// Set by a connect: where shipping restarts.
    restart: Mutex<Option<u64>>,
    /// Bumped by acknowledgements and disconnects; sync sends sleep on it.
    acks: Broadcast,
    /// Bumped by appends, connects and stop; the replicate thread sleeps on
    /// it.
    work: Broadcast,
    stop: AtomicBool,
    replicator: Mutex<Option<Arc<dyn Replicator>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for MasterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterState")
            .field("connected", &self.connected.load(Ordering::Relaxed))
            .field("applied", &self.applied.load(Ordering::Relaxed))
            .field("durable", &self.durable.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl MasterState {
    /// New records are readable: wake the replicate thread (cheap when it
    /// is busy: no syscall).
    /// The connected replica's applied end, `None` when none is connected.
    pub(crate) fn connected_replica_end(&self) -> Option<u64> {
        self.connected.load(Ordering::Acquire).then(|| self.applied.load(Ordering::Acquire))
    }

    pub(crate) fn nudge(&self) {
        self.work.wake_all();
    }

    fn level(&self, ack: ReplicaAck) -> u64 {
        match ack {
            ReplicaAck::Applied => self.applied.load(Ordering::Acquire),
            ReplicaAck::Durable => self.durable.load(Ordering::Acquire),
        }
    }

    /// Stops and joins the replicate thread (close).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.work.wake_all();
        self.acks.wake_all();
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            // A panic there is already recorded as the last error.
            let _ = h.join();
        }
    }
}

/// Sync mode: how a stored message's send is reported, given the end of
/// its record.
pub(crate) fn wait_for_replica(store_inner: &crate::store::Inner, end: u64) -> SendStatus {
    let opts = &store_inner.opts.replication;
    if opts.role != Role::Master || opts.mode != ReplicationMode::Sync {
        return SendStatus::SendOk;
    }
    let m = &store_inner.replication;
    let local_end = store_inner.log.max_offset().get();
    if !m.connected.load(Ordering::Acquire) || local_end.saturating_sub(m.level(opts.ack)) > opts.max_lag {
        return SendStatus::SlaveNotAvailable;
    }
    let deadline = Instant::now() + opts.timeout;
    loop {
        let seen = m.acks.generation();
        if m.level(opts.ack) >= end {
            return SendStatus::SendOk;
        }
        if !m.connected.load(Ordering::Acquire) || m.stop.load(Ordering::Acquire) {
            return SendStatus::SlaveNotAvailable;
        }
        if Instant::now() >= deadline {
            return SendStatus::FlushSlaveTimeout;
        }
        m.acks.wait(seen, Some(deadline));
    }
}

impl Store {
    /// Master: attaches the host's transport and starts the
    /// `mqstore:replicate` thread. Shipping begins once the host reports a
    /// replica with [`Store::replica_connected`]. One replicator per store;
    /// it is detached when the store closes.
    pub fn attach_replicator(&self, replicator: Arc<dyn Replicator>) -> Result<()> {
        self.ensure_open()?;
        self.ensure_master()?;
        let m = &self.inner.replication;
        let mut thread = m.thread.lock();
        if thread.is_some() {
            return Err(Error::InvalidArgument("a replicator is already attached".into()));
        }
        *m.replicator.lock() = Some(replicator);
        let inner = self.inner.clone();
        let handle = std::thread::Builder::new()
            .name("mqstore:replicate".into())
            .spawn(move || run(&inner))
            .map_err(|e| Error::io("spawn thread", &self.inner.root, e))?;
        *thread = Some(handle);
        Ok(())
    }

    /// Master: a replica (re)connected and reports where it is. Shipping
    /// restarts at `progress.applied`, which must be a record boundary of
    /// this log at or below its end ([`Error::ReplicaAhead`] beyond it:
    /// the replica has records this master lost and must be truncated).
    /// A replica whose end lies below the master's first stored record
    /// (log retention removed what it lacks while it was away) is refused
    /// with [`Error::ReplicationGap`]: it must be seeded again, from a copy
    /// of the master's directory.
    pub fn replica_connected(&self, progress: ReplicaProgress) -> Result<()> {
        self.ensure_open()?;
        self.ensure_master()?;
        let end = self.check_progress(progress)?;
        let at = progress.applied.get();
        let first = self.inner.log.min_offset().get();
        let floor = self.inner.log.first_segment_base().unwrap_or(0);
        // Only once retention removed segments (floor > 0): a fresh replica
        // (0) of a log that still has its start is shipped from the start.
        // A replica that stopped at the end-of-segment marker of a removed
        // segment is refused too: nothing here can tell that position from
        // one in the middle of what was removed.
        if floor > 0 && at < first && at != end {
            return Err(Error::ReplicationGap { expected: at, got: first });
        }
        if at != end && at > self.inner.log.min_offset().get() {
            // Must be where a record starts, or where a segment's end marker
            // is (the iterator then moves on to the next segment): reading
            // from inside a record fails its checks.
            if let Some(Err(_)) = self.inner.log.iter(progress.applied).next() {
                return Err(Error::InvalidArgument(format!(
                    "replica end {at} is not a record boundary of the master's log"
                )));
            }
        }
        let m = &self.inner.replication;
        *m.restart.lock() = Some(at);
        m.applied.store(at, Ordering::Release);
        m.durable.store(progress.durable.get(), Ordering::Release);
        m.last_error.lock().take();
        m.connected.store(true, Ordering::Release);
        m.work.wake_all();
        m.acks.wake_all();
        Ok(())
    }

    /// Master: the replica acknowledged `progress` (the value
    /// [`Store::apply_replicated`] returned on the slave). Rejected with
    /// [`Error::ReplicaAhead`] beyond this log's end; never moves the
    /// acknowledged levels backwards.
    pub fn replica_ack(&self, progress: ReplicaProgress) -> Result<()> {
        self.ensure_open()?;
        self.ensure_master()?;
        self.check_progress(progress)?;
        let m = &self.inner.replication;
        m.applied.fetch_max(progress.applied.get(), Ordering::AcqRel);
        m.durable.fetch_max(progress.durable.get(), Ordering::AcqRel);
        m.acks.wake_all();
        Ok(())
    }

    /// Master: the link to the replica broke. Sync sends waiting for it
    /// report [`SendStatus::SlaveNotAvailable`]; shipping stops until
    /// [`Store::replica_connected`].
    pub fn replica_disconnected(&self) {
        let m = &self.inner.replication;
        m.connected.store(false, Ordering::Release);
        m.acks.wake_all();
    }

    /// Where replication stands (master: the replica's acknowledged
    /// progress and lag; slave: its own progress).
    #[must_use]
    pub fn replication_status(&self) -> ReplicationStatus {
        let opts = &self.inner.opts.replication;
        let m = &self.inner.replication;
        let local_end = self.inner.log.max_offset();
        match opts.role {
            Role::Master => {
                let replica = ReplicaProgress {
                    applied: PhysicalOffset(m.applied.load(Ordering::Acquire)),
                    durable: PhysicalOffset(m.durable.load(Ordering::Acquire)),
                };
                ReplicationStatus {
                    role: opts.role,
                    mode: opts.mode,
                    connected: m.connected.load(Ordering::Acquire),
                    local_end,
                    shipped: PhysicalOffset(m.shipped.load(Ordering::Acquire)),
                    replica,
                    lag_bytes: local_end.get().saturating_sub(m.level(opts.ack)),
                    last_error: m.last_error.lock().clone(),
                }
            }
            Role::Slave => ReplicationStatus {
                role: opts.role,
                mode: opts.mode,
                connected: false,
                local_end,
                shipped: PhysicalOffset(0),
                replica: self.replica_progress(),
                lag_bytes: 0,
                last_error: None,
            },
        }
    }

    fn ensure_master(&self) -> Result<()> {
        match self.inner.opts.replication.role {
            Role::Master => Ok(()),
            Role::Slave => Err(Error::InvalidArgument("this store is a slave; it has no replica".into())),
        }
    }

    /// Checks a replica's report against this log; returns the log's end.
    fn check_progress(&self, p: ReplicaProgress) -> Result<u64> {
        let end = self.inner.log.max_offset().get();
        if p.applied.get() > end {
            return Err(Error::ReplicaAhead { replica: p.applied.get(), master: end });
        }
        if p.durable > p.applied {
            return Err(Error::InvalidArgument(format!(
                "replica progress: durable {} is beyond applied {}",
                p.durable.get(),
                p.applied.get()
            )));
        }
        Ok(end)
    }
}

/// The `mqstore:replicate` thread.
fn run(inner: &crate::store::Inner) {
    let m = &inner.replication;
    let batch = inner.opts.replication.batch_bytes;
    let mut from: Option<u64> = None;
    loop {
        let seen = m.work.generation();
        if m.stop.load(Ordering::Acquire) {
            return;
        }
        if let Some(at) = m.restart.lock().take() {
            from = Some(at);
        }
        let connected = m.connected.load(Ordering::Acquire);
        let Some(at) = from.filter(|_| connected) else {
            m.work.wait(seen, Some(Instant::now() + IDLE_WAIT));
            continue;
        };
        let run = match inner.log.replication_run(at, batch) {
            Ok(r) => r,
            Err(e) => {
                *m.last_error.lock() = Some(format!("reading the log at {at}: {e}"));
                m.connected.store(false, Ordering::Release);
                m.acks.wake_all();
                continue;
            }
        };
        let Some((offset, records)) = run else {
            m.work.wait(seen, Some(Instant::now() + IDLE_WAIT));
            continue;
        };
        let Some(replicator) = m.replicator.lock().clone() else {
            return;
        };
        let b = ReplicationBatch { prev_end: PhysicalOffset(at), offset: PhysicalOffset(offset), records: &records };
        match replicator.ship(b) {
            Ok(()) => {
                let end = b.end().get();
                from = Some(end);
                m.shipped.store(end, Ordering::Release);
            }
            Err(e) => {
                *m.last_error.lock() = Some(format!("shipping the run at {offset}: {e}"));
                m.connected.store(false, Ordering::Release);
                m.acks.wake_all();
            }
        }
    }
}
