//! Retry policy and delay levels. A message a listener cannot handle is sent
//! back with a growing delay (RocketMQ: delay level `3 + reconsume times`).
//!
//! * [`DelayLevels`]: RocketMQ's `messageDelayLevel` table with its string
//!   syntax;
//! * [`TimerWheel`]: the in-memory hierarchical wheel the delivery thread
//!   plans its wake-ups with;
//! * the schedule topic ([`SCHEDULE_TOPIC`]) and the `mqstore:delay`
//!   thread that delivers due messages, with its persisted progress
//!   (`config/delay`);
//! * send-back: what a consumer's failed message becomes (a delayed retry
//!   or a dead letter).

mod delay;
pub(crate) mod progress;
pub(crate) mod schedule;
pub(crate) mod sendback;
mod wheel;

pub use delay::{DelayLevels, DEFAULT_DELAY_LEVELS, MAX_DELAY_LEVELS};
pub use schedule::{ScheduleStats, SCHEDULE_TOPIC};
pub use sendback::DEFAULT_MAX_RECONSUME_TIMES;
pub use wheel::TimerWheel;
