//! The message bodies and the raw baselines' record header.
//!
//! Copied from `benches/common/mod.rs` (`Bodies`, `raw_header`) so the
//! inputs and the raw record layout are byte for byte the ones of the
//! criterion benches; that module cannot be `#[path]`-included here because
//! it also uses criterion.

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

/// The raw baselines' record header: `[u32 len][u32 crc32(body)]`, big endian.
pub fn raw_header(body: &[u8]) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&(body.len() as u32).to_be_bytes());
    h[4..].copy_from_slice(&crc32fast::hash(body).to_be_bytes());
    h
}
