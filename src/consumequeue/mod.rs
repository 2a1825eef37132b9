//! Consume queues: per (topic, queue id) files of fixed 20-byte units that
//! point into the commit log. They are derived data, rebuilt from the commit
//! log on recovery.
//!
//! This module currently provides the unit codec ([`CqUnit`]) and the tag
//! hash used to prefilter by tag; the queue files and the dispatcher that
//! feeds them build on these.

mod unit;

pub use unit::{tag_hash, CqUnit, CQ_UNIT_LEN};
