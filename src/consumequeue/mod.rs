//! Consume queues: per (topic, queue id) files of fixed 20-byte units that
//! point into the commit log. They are derived data, rebuilt from the commit
//! log on recovery.
//!
//! * [`CqUnit`] is the unit codec, [`tag_hash`] the tag hash used to
//!   prefilter by tag without reading the log.
//! * [`ConsumeQueue`] is one queue: fixed-size, preallocated, mapped files
//!   under `<root>/consumequeue/<topic>/<queue id>/`, named by the queue
//!   offset of their first unit. One writer (the store's dispatcher) appends
//!   in queue-offset order while readers run concurrently.
//! * [`ConsumeQueueSet`] holds every queue of a store, discovered on open.
//!
//! On recovery each queue keeps its valid prefix ([`CqRecovery`] says what
//! was cut); the store then truncates the queues to the commit log's end and
//! re-dispatches from there.

pub(crate) mod check;
mod queue;
mod recover;
mod retain;
mod set;
mod unit;

pub(crate) use queue::CreationSync;
pub use queue::{ConsumeQueue, CqRecovery, DEFAULT_UNITS_PER_FILE, MAX_TOPIC_LEN, MAX_UNITS_PER_FILE};
#[cfg(feature = "fuzzing")]
pub(crate) use retain::could_be_removed;
pub use set::ConsumeQueueSet;
pub use unit::{tag_hash, CqUnit, CQ_UNIT_LEN};
