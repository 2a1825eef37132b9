//! Medians, ranges, round rotation and number formatting of the tables
//! (median, range and rotation are the criterion benches' own, from
//! `benches/common/plain.rs`).

pub use crate::plain::{median, min_max, rotated};

/// A rate in the style of the peer table: `3.64M`, `228k`, `950`.
pub fn short(r: f64) -> String {
    if !r.is_finite() {
        "-".to_string()
    } else if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.0}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// A count in the style of the peer table: `2.00M`, `500k`.
pub fn count(n: usize) -> String {
    short(n as f64)
}
