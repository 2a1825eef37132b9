//! An in-process replication link between two stores, with injectable
//! faults: the reference transport for tests and an example of what a host
//! implements.
//!
//! [`MemoryLink::replicator`] goes to the master
//! ([`Store::attach_replicator`]); [`MemoryLink::start`] then connects the
//! pair and runs a `mqstore:memlink` thread that plays the network: it
//! takes each shipped run from a queue, applies the faults, hands the run to
//! the slave and the slave's progress back to the master. A run the slave
//! refuses (a gap after a dropped run, say) makes the link reconnect from
//! the slave's end, as a real transport would.
//!
//! ```
//! use mqstore::message::Message;
//! use mqstore::replication::memory::MemoryLink;
//! use mqstore::replication::{ReplicationMode, ReplicationOptions};
//! use mqstore::store::{SendStatus, Store, StoreOptions};
//! use mqstore::topic::TopicConfig;
//! # fn main() -> mqstore::Result<()> {
//! # let d1 = tempfile::tempdir().map_err(|e| mqstore::Error::InvalidArgument(e.to_string()))?;
//! # let d2 = tempfile::tempdir().map_err(|e| mqstore::Error::InvalidArgument(e.to_string()))?;
//! let master = Store::open(d1.path(), StoreOptions::default()
//!     .replication(ReplicationOptions::master(ReplicationMode::Sync)))?;
//! let slave = Store::open(d2.path(), StoreOptions::default().replication(ReplicationOptions::slave()))?;
//! let link = MemoryLink::new();
//! master.attach_replicator(link.replicator())?;
//! link.start(&master, &slave)?;
//! master.create_topic(TopicConfig::new("orders", 1))?;
//! let sent = master.send(Message::new("orders", "hello"))?;
//! assert_eq!(sent.status, SendStatus::SendOk); // the slave has it
//! assert!(slave.replica_progress().applied > sent.physical_offset);
//! link.stop();
//! # master.close()?;
//! # slave.close()
//! # }
//! ```
//!
//! [`Store::attach_replicator`]: crate::store::Store::attach_replicator

use super::{ReplicationBatch, Replicator};
use crate::error::{Error, Result};
use crate::offset::PhysicalOffset;
use crate::store::Store;
use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Faults the link injects; change them at any time with
/// [`MemoryLink::set_faults`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Held before each run is delivered.
    pub delay: Duration,
    /// Every n-th run is lost (0: none).
    pub drop_every: u64,
    /// Every n-th run is delivered twice (0: none).
    pub duplicate_every: u64,
    /// The link is down: shipping fails and nothing is delivered.
    pub disconnected: bool,
}

/// Counters of what the link did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Runs taken from the master.
    pub shipped: u64,
    /// Runs the slave applied (duplicates included).
    pub delivered: u64,
    /// Runs lost on purpose.
    pub dropped: u64,
    /// Extra deliveries on purpose.
    pub duplicated: u64,
    /// Reconnects after the slave refused a run or the link came back.
    pub reconnects: u64,
}

#[derive(Default)]
struct Shared {
    faults: Mutex<Faults>,
    shipped: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reconnects: AtomicU64,
    stop: AtomicBool,
    /// The last error the slave returned, for tests to look at.
    last_error: Mutex<Option<String>>,
}

/// The master's end of the link: queues runs for the link thread.
struct Outbox {
    tx: Sender<Run>,
    shared: Arc<Shared>,
}

/// A shipped run in flight: (previous end, offset, records).
type Run = (u64, u64, Vec<u8>);

impl Replicator for Outbox {
    fn ship(&self, batch: ReplicationBatch<'_>) -> std::io::Result<()> {
        if self.shared.faults.lock().disconnected {
            return Err(std::io::Error::new(std::io::ErrorKind::NotConnected, "memory link is down"));
        }
        self.shared.shipped.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send((batch.prev_end.get(), batch.offset.get(), batch.records.to_vec()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "memory link stopped"))
    }
}

/// An in-process link from a master store to a slave store (see the module
/// docs).
pub struct MemoryLink {
    shared: Arc<Shared>,
    tx: Sender<Run>,
    rx: Receiver<Run>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for MemoryLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLink").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Default for MemoryLink {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLink {
    /// A link with no faults, not started.
    #[must_use]
    pub fn new() -> Self {
        let (tx, rx) = unbounded();
        Self { shared: Arc::new(Shared::default()), tx, rx, thread: Mutex::new(None) }
    }

    /// The master's side, for [`Store::attach_replicator`].
    #[must_use]
    pub fn replicator(&self) -> Arc<dyn Replicator> {
        Arc::new(Outbox { tx: self.tx.clone(), shared: self.shared.clone() })
    }

    /// Connects `master` to `slave` (from the slave's end) and starts the
    /// link thread, which holds both handles until [`MemoryLink::stop`]. A
    /// stopped link can be started again (with a restarted slave, say).
    pub fn start(&self, master: &Store, slave: &Store) -> Result<()> {
        let mut thread = self.thread.lock();
        if thread.is_some() {
            return Err(Error::InvalidArgument("the memory link is already started".into()));
        }
        self.shared.stop.store(false, Ordering::Release);
        // Runs queued for an earlier slave are not this one's.
        while self.rx.try_recv().is_ok() {}
        master.replica_connected(slave.replica_progress())?;
        let (master, slave, rx, shared) = (master.clone(), slave.clone(), self.rx.clone(), self.shared.clone());
        let handle = std::thread::Builder::new()
            .name("mqstore:memlink".into())
            .spawn(move || pump(&master, &slave, &rx, &shared))
            .map_err(|e| Error::InvalidArgument(format!("cannot start the memory link thread: {e}")))?;
        *thread = Some(handle);
        Ok(())
    }

    /// Replaces the faults. Taking the link down tells the master at once
    /// (as a transport noticing a dead peer would); bringing it back up
    /// reconnects from the slave's end.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock() = faults;
    }

    /// What the link did so far.
    #[must_use]
    pub fn stats(&self) -> LinkStats {
        let s = &self.shared;
        LinkStats {
            shipped: s.shipped.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            duplicated: s.duplicated.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
        }
    }

    /// The last error the slave or master returned to the link, if any.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().clone()
    }

    /// Stops and joins the link thread, releasing its store handles. Runs
    /// still queued are discarded. Idempotent.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for MemoryLink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The link thread: delivers runs, carries acknowledgements back, and
/// reconnects after a refused run or an outage.
fn pump(master: &Store, slave: &Store, rx: &Receiver<Run>, shared: &Shared) {
    let mut down = false;
    let mut n: u64 = 0;
    while !shared.stop.load(Ordering::Acquire) {
        if shared.faults.lock().disconnected {
            if !down {
                down = true;
                master.replica_disconnected();
            }
            // Whatever was in flight is lost with the connection.
            while rx.try_recv().is_ok() {}
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if down {
            down = false;
            reconnect(master, slave, rx, shared);
            continue;
        }
        let Ok((prev_end, offset, records)) = rx.recv_timeout(Duration::from_millis(5)) else {
            continue;
        };
        // The faults in force when the run arrives.
        let faults = *shared.faults.lock();
        if faults.disconnected {
            continue;
        }
        n += 1;
        if !faults.delay.is_zero() {
            std::thread::sleep(faults.delay);
        }
        if faults.drop_every > 0 && n.is_multiple_of(faults.drop_every) {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let copies = if faults.duplicate_every > 0 && n.is_multiple_of(faults.duplicate_every) {
            shared.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        for _ in 0..copies {
            let batch = ReplicationBatch {
                prev_end: PhysicalOffset(prev_end),
                offset: PhysicalOffset(offset),
                records: &records,
            };
            match slave.apply_replicated(batch) {
                Ok(progress) => {
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = master.replica_ack(progress) {
                        *shared.last_error.lock() = Some(format!("master refused an ack: {e}"));
                    }
                }
                Err(e) => {
                    *shared.last_error.lock() = Some(format!("slave refused the run at {offset}: {e}"));
                    reconnect(master, slave, rx, shared);
                    break;
                }
            }
        }
    }
}

/// Starts over from the slave's end: runs still queued belong to the old
/// connection and are discarded.
fn reconnect(master: &Store, slave: &Store, rx: &Receiver<Run>, shared: &Shared) {
    while rx.try_recv().is_ok() {}
    shared.reconnects.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = master.replica_connected(slave.replica_progress()) {
        *shared.last_error.lock() = Some(format!("master refused the reconnect: {e}"));
    }
}
