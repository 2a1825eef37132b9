//! [`RetentionOptions`]: when the store removes old commit-log segments
//! and when it refuses writes for lack of disk space.

use crate::error::{Error, Result};
use std::time::Duration;

/// Log retention settings (RocketMQ's `fileReservedTime`,
/// `diskSpaceCleanForciblyRatio` and `diskSpaceWarningLevelRatio`).
///
/// * A sealed segment **expires** once the first record after it is older
///   than [`RetentionOptions::reserved_time`].
/// * When the disk holding the store is at least
///   [`RetentionOptions::clean_percent`] full, the oldest segments go
///   whatever their age.
/// * When it is at least [`RetentionOptions::full_percent`] full, sends are
///   refused with [`Error::DiskFull`] until a round finds it below
///   `clean_percent` again.
/// * Either way, a segment still needed by a consumer group (a committed
///   offset not yet past it), by a delayed message not yet delivered, or
///   by a connected replica stays, unless a forced round
///   ([`Retention::Forced`](super::Retention::Forced)) is asked for.
///
/// ```
/// use mqstore::store::{RetentionOptions, StoreOptions};
/// use std::time::Duration;
/// let r = RetentionOptions::default().reserved_time(Duration::from_secs(24 * 3600)).clean_percent(80);
/// let opts = StoreOptions::default().retention(r);
/// assert!(opts.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionOptions {
    pub(crate) reserved_time: Duration,
    pub(crate) clean_percent: u8,
    pub(crate) full_percent: u8,
    pub(crate) interval: Duration,
    pub(crate) max_segments_per_round: usize,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        Self {
            reserved_time: Duration::from_secs(72 * 3600),
            clean_percent: 85,
            full_percent: 90,
            interval: Duration::from_secs(10),
            max_segments_per_round: 10,
        }
    }
}

impl RetentionOptions {
    /// How long a segment is kept after the first record that follows it
    /// was stored. Default 72 h; 1 s to 10 years.
    #[must_use]
    pub fn reserved_time(mut self, d: Duration) -> Self {
        self.reserved_time = d;
        self
    }

    /// Disk use (percent) from which the oldest segments are removed
    /// regardless of age. Default 85; 1 to 99.
    #[must_use]
    pub fn clean_percent(mut self, pct: u8) -> Self {
        self.clean_percent = pct;
        self
    }

    /// Disk use (percent) from which sends are refused with
    /// [`Error::DiskFull`]. Default 90; above `clean_percent`, at most 100.
    #[must_use]
    pub fn full_percent(mut self, pct: u8) -> Self {
        self.full_percent = pct;
        self
    }

    /// How often the dispatch thread runs a retention round. Default 10 s
    /// (RocketMQ's `cleanResourceInterval`); 1 ms to 1 hour.
    #[must_use]
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// Most segments one round removes (RocketMQ's `deleteFileBatchMax`),
    /// so a round never stalls dispatch for long. Default 10; 1 to 10,000.
    #[must_use]
    pub fn max_segments_per_round(mut self, n: usize) -> Self {
        self.max_segments_per_round = n;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::InvalidArgument(format!("RetentionOptions::{field}: {why}")));
        if self.reserved_time < Duration::from_secs(1) || self.reserved_time > Duration::from_secs(10 * 365 * 86_400) {
            return bad("reserved_time", format!("{:?} is outside 1 s..=10 years", self.reserved_time));
        }
        if !(1..=99).contains(&self.clean_percent) {
            return bad("clean_percent", format!("{} is outside 1..=99", self.clean_percent));
        }
        if self.full_percent <= self.clean_percent || self.full_percent > 100 {
            return bad(
                "full_percent",
                format!("{} must be above clean_percent {} and at most 100", self.full_percent, self.clean_percent),
            );
        }
        if self.interval < Duration::from_millis(1) || self.interval > Duration::from_secs(3600) {
            return bad("interval", format!("{:?} is outside 1 ms..=1 h", self.interval));
        }
        if !(1..=10_000).contains(&self.max_segments_per_round) {
            return bad("max_segments_per_round", format!("{} is outside 1..=10,000", self.max_segments_per_round));
        }
        Ok(())
    }
}
