//! Master/slave replication through a transport the host provides.
//!
//! mqstore is a single-node library: it defines the roles, what moves
//! between them and what each acknowledgement means, and the host moves
//! the bytes (TCP, a message bus, shared memory). A **master** hands its
//! committed commit-log records, in runs with their physical offsets, to
//! the host's [`Replicator`]; the host delivers each run to the **slave**
//! store, which writes it at the same offsets ([`Store::apply_replicated`]),
//! dispatches it to its own consume queues and index, and returns its
//! progress; the host carries that progress back to the master
//! ([`Store::replica_ack`]).
//!
//! ```text
//!  master store                     host transport                 slave store
//!  mqstore:replicate --ship(run)--> ... bytes ... --apply_replicated(run)--> log, queues, index
//!  replica_ack(progress) <---------- ... bytes ... <------ ReplicaProgress ---'
//! ```
//!
//! Guarantees:
//! * The two logs are byte-identical below the slave's end. A run that
//!   does not continue the slave's log is refused with
//!   [`Error::ReplicationGap`] (nothing written; reconnect from the slave's
//!   end), a run whose records differ from ones the slave has with
//!   [`Error::ReplicaDiverged`].
//! * [`ReplicationMode::Sync`]: a master's send reports
//!   [`SendStatus::SendOk`] only after the replica acknowledged an offset
//!   past the message, at the level [`ReplicaAck`] names: `Applied` (in
//!   the replica's commit log, i.e. its page cache: survives the loss of
//!   the master's machine while the replica's keeps running) or `Durable`
//!   (also fsynced by the replica: survives power loss of the replica).
//!   Otherwise the send reports [`SendStatus::FlushSlaveTimeout`] (the
//!   acknowledgement did not come within the timeout) or
//!   [`SendStatus::SlaveNotAvailable`] (no replica connected, or it lags
//!   by more than the bound). The message is stored on the master either
//!   way. Sync mode never degrades to async by itself.
//! * [`ReplicationMode::Async`]: sends return once stored locally; the
//!   lag is reported by [`Store::replication_status`].
//! * A slave refuses producer writes ([`Error::ReadOnlyReplica`]) and does
//!   not deliver delayed messages itself: the master's deliveries arrive
//!   as records. It serves consumers from its own queues and keeps its own
//!   consumer offsets.
//! * An acknowledgement or a reconnect beyond the master's end is rejected
//!   with [`Error::ReplicaAhead`].
//!
//! [`Store::apply_replicated`]: crate::store::Store::apply_replicated
//! [`Store::replica_ack`]: crate::store::Store::replica_ack
//! [`Store::replication_status`]: crate::store::Store::replication_status
//! [`SendStatus::SendOk`]: crate::store::SendStatus::SendOk
//! [`SendStatus::FlushSlaveTimeout`]: crate::store::SendStatus::FlushSlaveTimeout
//! [`SendStatus::SlaveNotAvailable`]: crate::store::SendStatus::SlaveNotAvailable
//! [`Error::ReplicationGap`]: crate::Error::ReplicationGap
//! [`Error::ReplicaDiverged`]: crate::Error::ReplicaDiverged
//! [`Error::ReadOnlyReplica`]: crate::Error::ReadOnlyReplica
//! [`Error::ReplicaAhead`]: crate::Error::ReplicaAhead

pub(crate) mod master;
pub mod memory;
mod slave;

pub use slave::truncate_slave;

use crate::offset::PhysicalOffset;
use std::time::Duration;

/// Which side of a master/slave pair a store is (RocketMQ's broker id 0
/// is the master).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Takes producer writes; ships them to a replica if one is attached.
    #[default]
    Master,
    /// Takes records only from its master; serves consumers.
    Slave,
}

/// How a master's sends wait for its replica (RocketMQ's `SYNC_MASTER` and
/// `ASYNC_MASTER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicationMode {
    /// Sends return once stored locally; the replica follows.
    #[default]
    Async,
    /// Sends wait for the replica's acknowledgement (see [`ReplicaAck`]).
    Sync,
}

/// What a replica's acknowledgement must cover before a
/// [`ReplicationMode::Sync`] send succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaAck {
    /// Written to the replica's commit log (its page cache), as RocketMQ's
    /// HA acknowledgement: survives losing the master's machine, not a
    /// power loss of both.
    #[default]
    Applied,
    /// Written and fsynced by the replica: survives power loss of the
    /// replica too. A slave with this setting flushes each run before
    /// returning from [`Store::apply_replicated`].
    ///
    /// [`Store::apply_replicated`]: crate::store::Store::apply_replicated
    Durable,
}

/// Replication settings of a store. Default: a master in async mode with
/// no replica, which is a standalone store.
///
/// ```
/// use mqstore::replication::{ReplicaAck, ReplicationMode, ReplicationOptions, Role};
/// let master = ReplicationOptions::master(ReplicationMode::Sync).ack(ReplicaAck::Durable);
/// assert_eq!(master.role(), Role::Master);
/// let slave = ReplicationOptions::slave();
/// assert_eq!(slave.role(), Role::Slave);
/// ```
#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    pub(crate) role: Role,
    pub(crate) mode: ReplicationMode,
    pub(crate) ack: ReplicaAck,
    pub(crate) timeout: Duration,
    pub(crate) max_lag: u64,
    pub(crate) batch_bytes: usize,
}

impl Default for ReplicationOptions {
    fn default() -> Self {
        Self {
            role: Role::Master,
            mode: ReplicationMode::Async,
            ack: ReplicaAck::Applied,
            timeout: Duration::from_secs(5),
            max_lag: 256 << 20,
            batch_bytes: 256 << 10,
        }
    }
}

impl ReplicationOptions {
    /// A master replicating in `mode`.
    #[must_use]
    pub fn master(mode: ReplicationMode) -> Self {
        Self { role: Role::Master, mode, ..Self::default() }
    }

    /// A slave.
    #[must_use]
    pub fn slave() -> Self {
        Self { role: Role::Slave, ..Self::default() }
    }

    /// The acknowledgement level (see [`ReplicaAck`]). On a master it is
    /// what sync sends wait for; on a slave, `Durable` makes
    /// `apply_replicated` flush before returning. Default `Applied`.
    #[must_use]
    pub fn ack(mut self, ack: ReplicaAck) -> Self {
        self.ack = ack;
        self
    }

    /// Sync mode: how long a send waits for the acknowledgement before
    /// reporting `FlushSlaveTimeout` (RocketMQ's `syncFlushTimeout`).
    /// Default 5 s; 1 ms to 10 min.
    #[must_use]
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Sync mode: a replica more than this many bytes behind counts as not
    /// available (RocketMQ's `haMaxGapNotInSync`). Default 256 MiB; at
    /// least 1.
    #[must_use]
    pub fn max_lag_bytes(mut self, bytes: u64) -> Self {
        self.max_lag = bytes;
        self
    }

    /// Most bytes of records per shipped run (a single larger record is
    /// shipped alone). Default 256 KiB; 1 KiB to 64 MiB.
    #[must_use]
    pub fn batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes;
        self
    }

    /// The role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The mode (meaningful on a master).
    #[must_use]
    pub fn mode(&self) -> ReplicationMode {
        self.mode
    }

    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |why: String| Err(crate::Error::InvalidArgument(format!("replication: {why}")));
        if self.timeout < Duration::from_millis(1) || self.timeout > Duration::from_secs(600) {
            return bad(format!("timeout {:?} is outside 1ms..=600s", self.timeout));
        }
        if self.max_lag == 0 {
            return bad("max_lag_bytes must be positive".into());
        }
        if !(1024..=64 << 20).contains(&self.batch_bytes) {
            return bad(format!("batch_bytes {} is outside 1 KiB..=64 MiB", self.batch_bytes));
        }
        Ok(())
    }
}

/// A run of whole commit-log records as the master stores them: `records`
/// holds consecutive records of one segment, the first at `offset`.
#[derive(Debug, Clone, Copy)]
pub struct ReplicationBatch<'a> {
    /// Where the master's log ended before these records: `offset` itself,
    /// or, when the master rolled to a new segment in between, the position
    /// of its end-of-segment marker (the slave must end exactly there and
    /// rolls too).
    pub prev_end: PhysicalOffset,
    /// Physical offset of the first record.
    pub offset: PhysicalOffset,
    /// The records' bytes, exactly as in the master's log.
    pub records: &'a [u8],
}

impl ReplicationBatch<'_> {
    /// Offset one past the last record.
    #[must_use]
    pub fn end(&self) -> PhysicalOffset {
        PhysicalOffset(self.offset.get() + self.records.len() as u64)
    }
}

/// Where a replica is: everything below `applied` is in its commit log,
/// everything below `durable` is also synced. `durable <= applied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaProgress {
    /// End of the replica's log.
    pub applied: PhysicalOffset,
    /// End of what the replica has made durable.
    pub durable: PhysicalOffset,
}

/// The host's transport on the master side.
///
/// The store calls [`Replicator::ship`] from its `mqstore:replicate`
/// thread only, one call at a time, with runs in offset order: each run
/// starts where the previous ended or, after a roll, at the first record of
/// the next segment; after [`Store::replica_connected`] the next run
/// starts at the offset the replica reported.
///
/// [`Store::replica_connected`]: crate::store::Store::replica_connected
pub trait Replicator: Send + Sync + 'static {
    /// Hands one run to the transport. `Ok` means the transport took it
    /// (it may still be in flight): only the replica's acknowledgement,
    /// passed to [`Store::replica_ack`], counts as delivery. `Err` means
    /// the link is broken: the store stops shipping until the host calls
    /// [`Store::replica_connected`] again. May block (back-pressure); it
    /// must not reorder runs, and must not call back into the store on
    /// this thread.
    ///
    /// [`Store::replica_ack`]: crate::store::Store::replica_ack
    /// [`Store::replica_connected`]: crate::store::Store::replica_connected
    fn ship(&self, batch: ReplicationBatch<'_>) -> std::io::Result<()>;
}

/// A master's view of its replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// The store's role.
    pub role: Role,
    /// The store's mode.
    pub mode: ReplicationMode,
    /// A replica is connected (master) .
    pub connected: bool,
    /// End of the local log.
    pub local_end: PhysicalOffset,
    /// End of what was handed to the transport (master).
    pub shipped: PhysicalOffset,
    /// What the replica last acknowledged (master), or this store's own
    /// progress (slave).
    pub replica: ReplicaProgress,
    /// Bytes the replica's acknowledged level is behind the local end
    /// (master; 0 on a slave).
    pub lag_bytes: u64,
    /// The last shipping failure since the last connect, if any.
    pub last_error: Option<String>,
}
