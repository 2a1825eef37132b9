//! Medians, ranges, round rotation and number formatting of the tables
//! (the helpers of `benches/common/mod.rs`, same definitions).

/// Median (mean of the two middle values for an even count; NaN if empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Smallest and largest value.
pub fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// `items` rotated left by `round` (A B C, B C A, C A B, ...), so every
/// variant starts a round in turn.
pub fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let k = round % items.len();
    items[k..].iter().chain(&items[..k]).copied().collect()
}

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
