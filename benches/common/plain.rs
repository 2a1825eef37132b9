//! The benches' inputs, table statistics and the raw mmap baseline's
//! writer, which need nothing but std, crc32fast and memmap2, so `perf/peers` (a separate package without criterion)
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

/// Segment size of the raw mmap baseline (mqstore's default).
pub const RAW_MMAP_SEGMENT: usize = 1 << 30;
const PAGE: usize = 4096;

/// The plain mmap + memcpy log: records `[len][crc][body]` memcpy'd into a
/// sparse 1 GiB file (`set_len`) mapped with memmap2; a sync point msyncs
/// the dirty range from a page-aligned start; rolls to a new file when
/// full.
pub struct RawMmapLog {
    dir: std::path::PathBuf,
    /// The current file's mapping.
    pub map: memmap2::MmapMut,
    /// The current file's number (files are named by it, 20 digits).
    pub index: usize,
    /// Bytes written into the current file.
    pub pos: usize,
    /// Everything below this position in the current file is synced.
    synced: usize,
}

impl RawMmapLog {
    /// Creates segment file number `index` in `dir` (sparse,
    /// [`RAW_MMAP_SEGMENT`] bytes) and maps it writable.
    pub fn map_file(dir: &std::path::Path, index: usize) -> memmap2::MmapMut {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(dir.join(format!("{index:020}")))
            .expect("create raw-mmap segment");
        file.set_len(RAW_MMAP_SEGMENT as u64).expect("set_len");
        // SAFETY: the file is private to this benchmark and never truncated
        // while mapped.
        unsafe { memmap2::MmapMut::map_mut(&file) }.expect("mmap")
    }

    /// A new log in `dir`, its first file created and mapped.
    pub fn create(dir: &std::path::Path) -> Self {
        Self { dir: dir.to_path_buf(), map: Self::map_file(dir, 0), index: 0, pos: 0, synced: 0 }
    }

    /// Appends one record.
    pub fn append(&mut self, body: &[u8]) {
        let len = 8 + body.len();
        if self.pos + len > RAW_MMAP_SEGMENT {
            // Make the full file durable before moving on, then roll.
            self.sync();
            self.index += 1;
            self.map = Self::map_file(&self.dir, self.index);
            self.pos = 0;
            self.synced = 0;
        }
        let at = self.pos;
        self.map[at..at + 8].copy_from_slice(&raw_header(body));
        self.map[at + 8..at + len].copy_from_slice(body);
        self.pos += len;
    }

    /// A sync point: msyncs what was written since the last one.
    pub fn sync(&mut self) {
        let start = self.synced & !(PAGE - 1);
        if self.pos > start {
            self.map.flush_range(start, self.pos - start).expect("msync");
        }
        self.synced = self.pos;
    }
}
