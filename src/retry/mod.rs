//! Retry policy and delay levels. A message a listener cannot handle is sent
//! back with a growing delay (RocketMQ: delay level `3 + reconsume times`).
//!
//! This module currently provides [`DelayLevels`], RocketMQ's
//! `messageDelayLevel` table with its string syntax, and [`TimerWheel`],
//! the in-memory hierarchical wheel that will drive delayed delivery (the
//! schedule topic, its persisted progress and the retry path build on
//! them).

mod delay;
mod wheel;

pub use delay::{DelayLevels, DEFAULT_DELAY_LEVELS, MAX_DELAY_LEVELS};
pub use wheel::TimerWheel;
