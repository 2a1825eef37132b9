//! Pieces of `tests/whole_store_crash_kill.rs` (see its documentation).

pub mod child;
pub mod drain;
pub mod model;
pub mod msg;
pub mod report;
pub mod verify;
