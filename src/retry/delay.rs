//! [`DelayLevels`]: the fixed delay table (`1s 5s 10s 30s 1m ... 2h`).

use crate::error::{Error, Result};
use std::time::Duration;

/// RocketMQ's default `messageDelayLevel` (18 levels).
pub const DEFAULT_DELAY_LEVELS: &str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";
/// Most levels a table may have (one schedule queue per level).
pub const MAX_DELAY_LEVELS: usize = 64;
/// Longest delay a level may have: 30 days.
const MAX_LEVEL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A validated table of delay levels; level `n` (1-based) waits `delay(n)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayLevels {
    levels: Vec<Duration>,
}

impl Default for DelayLevels {
    fn default() -> Self {
        // The default string is a constant known to parse; fall back to an
        // equivalent literal table rather than panicking.
        Self::parse(DEFAULT_DELAY_LEVELS).unwrap_or_else(|_| Self { levels: vec![Duration::from_secs(1)] })
    }
}

impl DelayLevels {
    /// Parses RocketMQ's syntax: space-separated numbers with a unit suffix
    /// `s`, `m`, `h` or `d`, strictly increasing, 1 to 64 levels, each at
    /// most 30 days. Also accepts `ms` (an extension: RocketMQ has none),
    /// so tests and low-latency retries can use sub-second levels.
    ///
    /// ```
    /// use mqstore::retry::DelayLevels;
    /// use std::time::Duration;
    /// let levels = DelayLevels::parse("1s 5s 2m")?;
    /// assert_eq!(levels.len(), 3);
    /// assert_eq!(levels.delay(3), Some(Duration::from_secs(120)));
    /// let fast = DelayLevels::parse("100ms 1s")?;
    /// assert_eq!(fast.delay(1), Some(Duration::from_millis(100)));
    /// assert!(DelayLevels::parse("5s 1s").is_err());
    /// # Ok::<(), mqstore::Error>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: String| Err(Error::InvalidArgument(format!("delay levels {s:?}: {why}")));
        let mut levels = Vec::new();
        for token in s.split_whitespace() {
            // `ms` before `s` and `m`, which it ends with / starts with.
            let (num, ms_per) = if let Some(num) = token.strip_suffix("ms") {
                (num, 1)
            } else {
                let (num, unit) = token.split_at(token.len().saturating_sub(1));
                let ms_per = match unit {
                    "s" => 1_000,
                    "m" => 60_000,
                    "h" => 3_600_000,
                    "d" => 86_400_000,
                    _ => return bad(format!("{token:?} lacks a unit ms, s, m, h or d")),
                };
                (num, ms_per)
            };
            let Ok(n) = num.parse::<u64>() else { return bad(format!("{token:?} is not a number")) };
            let d = Duration::from_millis(n.saturating_mul(ms_per));
            if n == 0 || d > MAX_LEVEL {
                return bad(format!("{token:?} is outside 1ms..=30d"));
            }
            if levels.last().is_some_and(|&prev| d <= prev) {
                return bad(format!("{token:?} does not increase"));
            }
            levels.push(d);
        }
        if levels.is_empty() || levels.len() > MAX_DELAY_LEVELS {
            return bad(format!("{} levels, expected 1..={MAX_DELAY_LEVELS}", levels.len()));
        }
        Ok(Self { levels })
    }

    /// Number of levels.
    #[must_use]
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Always false: a table has at least one level.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Delay of 1-based `level`, or `None` outside `1..=len()`.
    #[must_use]
    pub fn delay(&self, level: usize) -> Option<Duration> {
        level.checked_sub(1).and_then(|i| self.levels.get(i)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_is_rocketmqs() {
        let d = DelayLevels::default();
        assert_eq!(d.len(), 18);
        assert_eq!(d.delay(1), Some(Duration::from_secs(1)));
        assert_eq!(d.delay(3), Some(Duration::from_secs(10)));
        assert_eq!(d.delay(18), Some(Duration::from_secs(7200)));
        assert_eq!(d.delay(0), None);
        assert_eq!(d.delay(19), None);
    }

    #[test]
    fn bad_tables_are_rejected() {
        for s in ["", "1x", "s", "0s", "1s 1s", "2m 1m", "31d", "-1s", "1.5s"] {
            assert!(DelayLevels::parse(s).is_err(), "{s:?}");
        }
        let many: Vec<String> = (1..=65).map(|i| format!("{i}s")).collect();
        assert!(DelayLevels::parse(&many.join(" ")).is_err());
        assert!(DelayLevels::parse("  1s\t2d ").is_ok());
        for s in ["0ms", "ms", "1.5ms", "999ms 1s 1000ms", "-5ms"] {
            assert!(DelayLevels::parse(s).is_err(), "{s:?}");
        }
        let ms = DelayLevels::parse("1ms 100ms 999ms 1s").unwrap();
        assert_eq!(ms.delay(1), Some(Duration::from_millis(1)));
        assert_eq!(ms.delay(3), Some(Duration::from_millis(999)));
        assert_eq!(ms.delay(4), Some(Duration::from_secs(1)));
    }
}
