//! mqstore against the raw baselines and raft-engine in one interleaved
//! run (the `peers` binary), and the throughput plot of its size sweep
//! (the `plot` binary). A separate package with its own workspace: the
//! main workspace and its CI never build raft-engine.

pub mod csv;
pub mod env;
pub mod inputs;
pub mod mq;
#[path = "../../../benches/common/plain.rs"]
pub mod plain;
pub mod raft;
pub mod raw;
pub mod report;
pub mod run;
pub mod stats;
pub mod workload;
