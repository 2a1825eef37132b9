//! # mqstore
//!
//! An embeddable, single-node message store modelled on Apache RocketMQ's
//! broker store: an in-process engine writes messages sequentially to
//! segmented, memory-mapped commit-log files, from which per-topic consume
//! queues and a key index are derived.
//!
//! This release provides the durable foundation, the [`commitlog`]: segment
//! files with headers and versioned records whose CRC covers the whole
//! record, [`FlushMode::Sync`](commitlog::FlushMode::Sync) group commit and
//! [`FlushMode::Async`](commitlog::FlushMode::Async) background flushing,
//! fencing after a failed flush, and crash recovery that takes the directory
//! lock first, scans from an exact-offset checkpoint and physically
//! truncates a torn tail. The on-disk format is specified in `FORMAT.md`.
//!
//! ```
//! use mqstore::commitlog::{CommitLog, CommitLogOptions, FlushMode, RecordDraft};
//! # fn main() -> mqstore::Result<()> {
//! # let tmp = tempfile::tempdir().map_err(|e| mqstore::Error::InvalidArgument(e.to_string()))?;
//! let log = CommitLog::open(tmp.path(), CommitLogOptions::default().flush_mode(FlushMode::Sync))?;
//! let receipt = log.append(&RecordDraft { topic: "TopicTest", queue_id: 0, body: b"hi", ..Default::default() })?;
//! assert_eq!(&log.read(receipt.offset)?.body()[..], b"hi");
//! log.close()?;
//! # Ok(())
//! # }
//! ```

#![doc(test(attr(deny(warnings))))]

pub mod clock;
mod codec;
pub mod commitlog;
pub mod consumequeue;
pub mod consumer;
pub mod dlq;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod index;
pub mod message;
mod metafile;
mod offset;
pub mod offsetstore;
pub mod replication;
pub mod retry;
pub mod storage;
pub mod store;
pub mod topic;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{CorruptionKind, Error, Result};
pub use offset::{PhysicalOffset, QueueOffset};

/// Compiles and runs the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
