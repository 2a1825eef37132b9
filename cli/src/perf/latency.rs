//! Latency recording: one HDR histogram per worker thread (no sharing in
//! the hot loop), merged once at the end.

use hdrhistogram::Histogram;
use std::time::Duration;

/// Largest value a histogram tracks exactly: one hour in nanoseconds.
/// Anything longer is recorded as one hour (`saturating_record`), so a
/// stalled call still shows up as the maximum instead of vanishing.
const HIGHEST_NS: u64 = 3_600_000_000_000;

/// Significant decimal digits kept: values are exact to 0.1 %.
const SIGFIG: u8 = 3;

/// One worker's latencies, in nanoseconds.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Latency {
    /// An empty recorder. Allocates all its buckets now (fixed bounds),
    /// so recording never allocates.
    pub fn new() -> Result<Self, String> {
        Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG).map(Self).map_err(|e| format!("histogram: {e}"))
    }

    /// Records one timed call.
    #[inline]
    pub fn record(&mut self, elapsed: Duration) {
        // u64 nanoseconds cover 584 years; saturate rather than wrap.
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.saturating_record(ns.max(1));
    }

    /// Adds another worker's samples (same bounds, so it cannot fail in
    /// practice; an error is still reported, not ignored).
    pub fn merge(&mut self, other: &Self) -> Result<(), String> {
        self.0.add(&other.0).map_err(|e| format!("merging histograms: {e:?}"))
    }

    /// The figures reported, in microseconds.
    pub fn summary(&self) -> Summary {
        let us = |ns: u64| ns as f64 / 1000.0;
        let h = &self.0;
        Summary {
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// Percentiles of one run, in microseconds (0 with no samples). Each is
/// the highest value equivalent to the bucket it falls in, so
/// `p50 <= p99 <= p999 <= max` always holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Timed calls.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

impl Summary {
    /// `{"samples", "p50", "p99", "p999", "max", "mean"}`, microseconds.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "samples": self.samples,
            "p50": self.p50_us,
            "p99": self.p99_us,
            "p999": self.p999_us,
            "max": self.max_us,
            "mean": self.mean_us,
        })
    }

    /// `p50 2.1  p99 8.3  p99.9 40.1  max 1203.0  mean 3.0`.
    pub fn text(&self) -> String {
        format!(
            "p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            self.p50_us, self.p99_us, self.p999_us, self.max_us, self.mean_us
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn merged_percentiles_cover_both_workers() {
        let mut a = Latency::new().unwrap();
        let mut b = Latency::new().unwrap();
        for _ in 0..990 {
            a.record(Duration::from_micros(5));
        }
        for _ in 0..10 {
            b.record(Duration::from_millis(5));
        }
        a.merge(&b).unwrap();
        let s = a.summary();
        assert_eq!(s.samples, 1000);
        // 3 significant digits: within 0.1 %.
        assert!((s.p50_us - 5.0).abs() < 0.01 && (s.p99_us - 5.0).abs() < 0.01, "{s:?}");
        assert!((s.p999_us - 5000.0).abs() < 5.0 && (s.max_us - 5000.0).abs() < 5.0, "{s:?}");
        assert!((s.mean_us - (990.0 * 5.0 + 10.0 * 5000.0) / 1000.0).abs() < 0.1, "{s:?}");
        assert!(s.p50_us <= s.p99_us && s.p99_us <= s.p999_us && s.p999_us <= s.max_us);
    }

    #[test]
    fn an_hour_long_stall_saturates_instead_of_vanishing() {
        let mut a = Latency::new().unwrap();
        a.record(Duration::from_secs(7200));
        assert!(a.summary().max_us >= 3.59e9, "{:?}", a.summary());
    }
}
