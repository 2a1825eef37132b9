//! The benches' inputs and table statistics that need nothing but std and
//! crc32fast, so `perf/peers` (a separate package without criterion)
//! includes this same file with `#[path]`: both measure the same bodies
//! with the same raw record header and summarise rounds the same way.

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

/// The raw baselines' record header: `[u32 len][u32 crc32(body)]`, big endian.
pub fn raw_header(body: &[u8]) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&(body.len() as u32).to_be_bytes());
    h[4..].copy_from_slice(&crc32fast::hash(body).to_be_bytes());
    h
}

/// `count` random bodies of `size` bytes, stored back to back
/// (xorshift64*, incompressible).
pub struct Bodies {
    data: Vec<u8>,
    size: usize,
}

impl Bodies {
    /// Generates the bodies from `seed`.
    pub fn new(count: usize, size: usize, seed: u64) -> Self {
        let mut data = vec![0u8; count * size];
        let mut x = seed | 1;
        for chunk in data.chunks_mut(8) {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_be_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Self { data, size }
    }

    /// Body number `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        &self.data[i * self.size..(i + 1) * self.size]
    }

    /// How many bodies there are.
    pub fn count(&self) -> usize {
        self.data.len() / self.size
    }

    /// Bytes per body.
    pub fn size(&self) -> usize {
        self.size
    }
}
