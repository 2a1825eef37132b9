//! One index file: a chained hash table from key hashes to commit-log
//! offsets (RocketMQ's IndexFile shape), preallocated and mapped shared.
//!
//! Layout (big-endian; FORMAT.md "Index files"):
//!
//! | position | size | content |
//! |---:|---:|---|
//! | 0 | 64 | header, written once at creation, CRC-protected |
//! | 64 | 4 x slots | hash slots: entry number + 1 of the newest entry of the bucket (0: empty) |
//! | 64 + 4 x slots | 32 x max entries | entries, appended in commit-log order |
//! | end - 64 | 64 | seal, written once the file is full and flushed |
//!
//! An entry is `key hash u32 | key crc u32 | physical offset u64 | store
//! timestamp u64 | prev u32 | crc u32` (the CRC covers the first 28 bytes),
//! where `prev` is the entry number + 1 of the bucket's previous head.
//!
//! Invariants: entries `[0, count)` are valid and in non-decreasing
//! physical-offset order, each entry's `prev` is below its own number + 1,
//! and every slot holds the newest entry of its bucket among them. A slot is
//! stored (with `Release`) only after its entry's bytes, and the count is
//! published after the slot, so a reader that finds an entry through a slot
//! or below the count sees it whole.
//!
//! Recovery: a sealed file is trusted (its seal says it was full and
//! flushed; every entry read is still CRC-checked). An unsealed (active)
//! file is scanned: the valid prefix of entries is kept, the rest is
//! zeroed, and the slot table is rebuilt from the kept entries, so a crash
//! that left slots pointing at lost entries, or entries whose slot update
//! was lost, leaves no trace.

use crate::codec::{get_u32, get_u64, put_u32, put_u64};
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{read_exact_at, write_all_at, MappedRegion, OpenMode, Storage, StorageFile};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Index file magic.
pub const INDEX_MAGIC: [u8; 8] = [0x8D, b'M', b'Q', b'I', b'\r', b'\n', 0x1A, b'\n'];
/// Seal magic (the file's last 64 bytes once full).
pub const INDEX_SEAL_MAGIC: [u8; 8] = [0x8D, b'M', b'Q', b'S', b'E', b'A', b'L', b'\n'];
/// Index format version written by this build.
pub const INDEX_VERSION: u16 = 1;
/// Header bytes.
pub const INDEX_HEADER_LEN: usize = 64;
/// Seal bytes.
pub const INDEX_SEAL_LEN: usize = 64;
/// Bytes per hash slot.
pub const INDEX_SLOT_LEN: usize = 4;
/// Bytes per entry.
pub const INDEX_ENTRY_LEN: usize = 32;
/// Most hash slots a file may have (bounds the mapping sized from disk).
pub const MAX_INDEX_SLOTS: u32 = 1 << 26;
/// Most entries a file may have (bounds the mapping sized from disk).
pub const MAX_INDEX_ENTRIES: u32 = 1 << 27;

// Header fields.
const H_VERSION: usize = 8;
const H_SLOTS: usize = 12;
const H_MAX_ENTRIES: usize = 16;
const H_FIRST_PHY: usize = 24;
const H_CREATED: usize = 32;
const H_CRC: usize = 60;
// Entry fields.
const E_HASH: usize = 0;
const E_KEY_CRC: usize = 4;
const E_PHY: usize = 8;
const E_TS: usize = 16;
const E_PREV: usize = 24;
const E_CRC: usize = 28;
// Seal fields.
const S_COUNT: usize = 8;
const S_LAST_PHY: usize = 12;
const S_MIN_TS: usize = 20;
const S_MAX_TS: usize = 28;
const S_CRC: usize = 60;

/// Sizes of a new index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexFileSize {
    /// Hash slots (RocketMQ: 5,000,000).
    pub slots: u32,
    /// Entries before the file is full and the next one starts (RocketMQ:
    /// 20,000,000).
    pub max_entries: u32,
}

impl Default for IndexFileSize {
    /// 131,072 slots and 262,144 entries: files of about 8.5 MiB, so a
    /// small store stays small (RocketMQ's files are 420 MB: 5,000,000
    /// slots, 20,000,000 entries).
    fn default() -> Self {
        Self { slots: 131_072, max_entries: 262_144 }
    }
}

impl IndexFileSize {
    /// Total file length.
    #[must_use]
    pub fn file_len(&self) -> u64 {
        (INDEX_HEADER_LEN + INDEX_SEAL_LEN) as u64
            + u64::from(self.slots) * INDEX_SLOT_LEN as u64
            + u64::from(self.max_entries) * INDEX_ENTRY_LEN as u64
    }

    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        if self.slots == 0 || self.slots > MAX_INDEX_SLOTS {
            return Err(format!("{} hash slots is outside 1..={MAX_INDEX_SLOTS}", self.slots));
        }
        if self.max_entries == 0 || self.max_entries > MAX_INDEX_ENTRIES {
            return Err(format!("{} entries is outside 1..={MAX_INDEX_ENTRIES}", self.max_entries));
        }
        Ok(())
    }
}

/// One index entry as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key_hash: u32,
    pub(crate) key_crc: u32,
    pub(crate) phy: u64,
    pub(crate) ts: u64,
    pub(crate) prev: u32,
}

impl Entry {
    fn encode(&self) -> [u8; INDEX_ENTRY_LEN] {
        let mut b = [0u8; INDEX_ENTRY_LEN];
        put_u32(&mut b, E_HASH, self.key_hash);
        put_u32(&mut b, E_KEY_CRC, self.key_crc);
        put_u64(&mut b, E_PHY, self.phy);
        put_u64(&mut b, E_TS, self.ts);
        put_u32(&mut b, E_PREV, self.prev);
        let crc = crate::codec::crc32(&b[..E_CRC]);
        put_u32(&mut b, E_CRC, crc);
        b
    }

    /// `None` unless the CRC matches (an all-zero entry never does).
    pub(crate) fn decode(b: &[u8; INDEX_ENTRY_LEN]) -> Option<Self> {
        if crate::codec::crc32(&b[..E_CRC]) != get_u32(b, E_CRC) {
            return None;
        }
        Some(Self {
            key_hash: get_u32(b, E_HASH),
            key_crc: get_u32(b, E_KEY_CRC),
            phy: get_u64(b, E_PHY),
            ts: get_u64(b, E_TS),
            prev: get_u32(b, E_PREV),
        })
    }
}

/// The two hashes an entry stores for a key: RocketMQ's slot hash and a
/// CRC-32 of the key, so a lookup rarely reads a record of another key.
pub(crate) fn key_hashes(key: &str) -> (u32, u32) {
    (super::key_hash(key), crate::codec::crc32(key.as_bytes()))
}

/// What recovery found in an index file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexFileRecovery {
    /// Entries kept.
    pub entries: u32,
    /// Whether the file was sealed (full and flushed).
    pub sealed: bool,
    /// Non-empty entries past the valid prefix, zeroed (a torn tail).
    pub discarded: u32,
}

/// One mapped index file. One writer at a time (the caller serialises
/// `put`, `seal` and `flush`); lookups run concurrently with it.
#[derive(Debug)]
pub(crate) struct IndexFile {
    pub(crate) path: PathBuf,
    _file: Arc<dyn StorageFile>,
    region: Arc<dyn MappedRegion>,
    size: IndexFileSize,
    /// Lower bound of the physical offsets in this file (from its name and
    /// header).
    pub(crate) first_phy: u64,
    /// Entries published.
    count: AtomicU32,
    /// Entries flushed.
    flushed: AtomicU32,
    /// Physical offset of the last entry (`first_phy` when empty).
    last_phy: AtomicU64,
    /// Store-time range of the entries (`u64::MAX`/0 when empty).
    min_ts: AtomicU64,
    max_ts: AtomicU64,
    sealed: std::sync::atomic::AtomicBool,
}

fn corrupt(path: &Path, at: u64, kind: CorruptionKind) -> Error {
    Error::corruption(path.to_path_buf(), at, kind)
}

fn encode_header(size: IndexFileSize, first_phy: u64, created_ms: u64) -> [u8; INDEX_HEADER_LEN] {
    let mut h = [0u8; INDEX_HEADER_LEN];
    h[..8].copy_from_slice(&INDEX_MAGIC);
    h[H_VERSION..H_VERSION + 2].copy_from_slice(&INDEX_VERSION.to_be_bytes());
    put_u32(&mut h, H_SLOTS, size.slots);
    put_u32(&mut h, H_MAX_ENTRIES, size.max_entries);
    put_u64(&mut h, H_FIRST_PHY, first_phy);
    put_u64(&mut h, H_CREATED, created_ms);
    let crc = crc32fast::hash(&h[..H_CRC]);
    put_u32(&mut h, H_CRC, crc);
    h
}

impl IndexFile {
    /// Creates `path` (through `<path>.tmp`, allocated, header written and
    /// synced, renamed, directory synced) and maps it.
    pub(crate) fn create(
        storage: &dyn Storage,
        path: &Path,
        size: IndexFileSize,
        first_phy: u64,
        created_ms: u64,
    ) -> Result<Self> {
        size.check().map_err(Error::InvalidArgument)?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let tmp = path.with_extension("tmp");
        let len = size.file_len();
        let file = storage.open(&tmp, OpenMode::CreateTruncate).map_err(|e| Error::io("create index file", &tmp, e))?;
        file.allocate(len).map_err(|e| Error::io("allocate index file", &tmp, e))?;
        write_all_at(file.as_ref(), &encode_header(size, first_phy, created_ms), 0)
            .map_err(|e| Error::io("write index header", &tmp, e))?;
        file.sync_data().map_err(|e| Error::io("sync index file", &tmp, e))?;
        storage.rename(&tmp, path).map_err(|e| Error::io("rename index file", path, e))?;
        storage.sync_dir(dir).map_err(|e| Error::io("sync index directory", dir, e))?;
        drop(file);
        let file = storage.open(path, OpenMode::ReadWrite).map_err(|e| Error::io("open index file", path, e))?;
        let region = file.map(len as usize).map_err(|e| Error::io("map index file", path, e))?;
        Ok(Self::build(path, file, region, size, first_phy))
    }

    fn build(
        path: &Path,
        file: Arc<dyn StorageFile>,
        region: Arc<dyn MappedRegion>,
        size: IndexFileSize,
        first_phy: u64,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            _file: file,
            region,
            size,
            first_phy,
            count: AtomicU32::new(0),
            flushed: AtomicU32::new(0),
            last_phy: AtomicU64::new(first_phy),
            min_ts: AtomicU64::new(u64::MAX),
            max_ts: AtomicU64::new(0),
            sealed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Opens and recovers `path` (see the module docs), keeping only
    /// entries for records below `log_end` (the commit log's recovered end).
    /// A header or seal that does not check out, or a sealed file whose
    /// entries contradict its seal, is [`Error::Corruption`]: the caller
    /// rebuilds the file from the commit log.
    pub(crate) fn open(storage: &dyn Storage, path: &Path, log_end: u64) -> Result<(Self, IndexFileRecovery)> {
        let file = storage.open(path, OpenMode::ReadWrite).map_err(|e| Error::io("open index file", path, e))?;
        let mut h = [0u8; INDEX_HEADER_LEN];
        read_exact_at(file.as_ref(), &mut h, 0).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => corrupt(path, 0, CorruptionKind::Truncated),
            _ => Error::io("read index header", path, e),
        })?;
        if h[..8] != INDEX_MAGIC {
            return Err(corrupt(path, 0, CorruptionKind::BadMagic { found: get_u64(&h, 0) }));
        }
        if crc32fast::hash(&h[..H_CRC]) != get_u32(&h, H_CRC) {
            let (stored, computed) = (get_u32(&h, H_CRC), crc32fast::hash(&h[..H_CRC]));
            return Err(corrupt(path, H_CRC as u64, CorruptionKind::ChecksumMismatch { stored, computed }));
        }
        let version = u16::from_be_bytes([h[H_VERSION], h[H_VERSION + 1]]);
        if version != INDEX_VERSION {
            return Err(corrupt(
                path,
                H_VERSION as u64,
                CorruptionKind::UnsupportedVersion { found: u32::from(version) },
            ));
        }
        let size = IndexFileSize { slots: get_u32(&h, H_SLOTS), max_entries: get_u32(&h, H_MAX_ENTRIES) };
        if size.check().is_err() {
            return Err(corrupt(path, H_SLOTS as u64, CorruptionKind::InvalidField { field: "index sizes" }));
        }
        let len = file.len().map_err(|e| Error::io("stat index file", path, e))?;
        if len != size.file_len() {
            return Err(corrupt(path, len, CorruptionKind::BadLength { length: len }));
        }
        let first_phy = get_u64(&h, H_FIRST_PHY);
        let region = file.map(len as usize).map_err(|e| Error::io("map index file", path, e))?;
        let f = Self::build(path, file, region, size, first_phy);
        let report = f.recover(log_end)?;
        Ok((f, report))
    }

    fn entries_at(&self) -> usize {
        INDEX_HEADER_LEN + self.size.slots as usize * INDEX_SLOT_LEN
    }

    fn seal_at(&self) -> usize {
        self.entries_at() + self.size.max_entries as usize * INDEX_ENTRY_LEN
    }

    /// The bytes of entry `i`.
    fn raw_entry(&self, i: u32) -> [u8; INDEX_ENTRY_LEN] {
        debug_assert!(i < self.size.max_entries);
        let mut b = [0u8; INDEX_ENTRY_LEN];
        let at = self.entries_at() + i as usize * INDEX_ENTRY_LEN;
        // SAFETY: `at + 32` is inside the mapping (i < max_entries, checked
        // by callers and the file length by open/create); entries are
        // written only at positions not yet published, and readers only
        // read published ones (or the writer reads its own), so no write
        // races this copy.
        unsafe { std::ptr::copy_nonoverlapping(self.region.as_ptr().add(at), b.as_mut_ptr(), INDEX_ENTRY_LEN) };
        b
    }

    fn write_entry(&self, i: u32, b: &[u8; INDEX_ENTRY_LEN]) {
        let at = self.entries_at() + i as usize * INDEX_ENTRY_LEN;
        // SAFETY: in bounds as above; entry `i` is unpublished (i == count)
        // or the file is being recovered, so no reader looks at it.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), self.region.as_ptr().add(at), INDEX_ENTRY_LEN) };
    }

    /// Slot `s`, holding its value big-endian as the format says (read it
    /// with `u32::from_be`, store `v.to_be()`).
    fn slot(&self, s: u32) -> &AtomicU32 {
        debug_assert!(s < self.size.slots);
        let at = INDEX_HEADER_LEN + s as usize * INDEX_SLOT_LEN;
        // SAFETY: in bounds; the mapping is page-aligned and `at` a multiple
        // of 4, so the pointer is aligned for AtomicU32; the region outlives
        // `self`, and every access to slot bytes goes through atomics.
        unsafe { &*(self.region.as_ptr().add(at).cast::<AtomicU32>()) }
    }

    fn recover(&self, log_end: u64) -> Result<IndexFileRecovery> {
        let mut seal = self.read_seal();
        if seal.is_some_and(|(_, last)| last >= log_end) {
            // The log lost records this sealed file indexes (a crash cut
            // its tail): unseal it and keep only what the log still has.
            self.clear_seal()?;
            seal = None;
        }
        let mut report = IndexFileRecovery::default();
        // Scan: the valid prefix, in non-decreasing offset order, with
        // every `prev` pointing backwards.
        let mut count = 0u32;
        let mut last = self.first_phy;
        let (mut min_ts, mut max_ts) = (u64::MAX, 0u64);
        while count < self.size.max_entries {
            let Some(e) = Entry::decode(&self.raw_entry(count)) else { break };
            if e.phy < last || e.prev > count || e.phy >= log_end {
                break;
            }
            last = e.phy;
            min_ts = min_ts.min(e.ts);
            max_ts = max_ts.max(e.ts);
            count += 1;
        }
        if let Some((sealed_count, sealed_last)) = seal {
            // Only a full file is ever sealed: a seal on a file with room
            // left would let the writer append behind it (found by the
            // `index_file` fuzz target).
            if sealed_count != count || sealed_last != last || count != self.size.max_entries {
                return Err(corrupt(
                    &self.path,
                    self.seal_at() as u64,
                    CorruptionKind::InvalidField { field: "index seal disagrees with its entries" },
                ));
            }
            report.sealed = true;
            self.sealed.store(true, Ordering::Release);
        } else {
            // Torn tail: zero whatever follows the valid prefix, to the end
            // and not only up to the first empty entry: a crash can keep a
            // later page but not an earlier one, and a stale entry left
            // behind such a gap would count as valid again once new entries
            // fill the gap (found by the `index_file` fuzz target).
            for i in count..self.size.max_entries {
                if self.raw_entry(i).iter().any(|&b| b != 0) {
                    report.discarded += 1;
                    self.write_entry(i, &[0u8; INDEX_ENTRY_LEN]);
                }
            }
            // Slots follow the kept entries, whatever the file said.
            for s in 0..self.size.slots {
                self.slot(s).store(0, Ordering::Relaxed);
            }
            for i in 0..count {
                let e = Entry::decode(&self.raw_entry(i)).ok_or_else(|| {
                    corrupt(&self.path, self.entries_at() as u64, CorruptionKind::InvalidField { field: "index entry" })
                })?;
                let slot = self.slot(e.key_hash % self.size.slots);
                if u32::from_be(slot.load(Ordering::Relaxed)) != e.prev {
                    // A valid entry whose chain link disagrees with the
                    // entries before it: not something a crash produces.
                    return Err(corrupt(
                        &self.path,
                        (self.entries_at() + i as usize * INDEX_ENTRY_LEN + E_PREV) as u64,
                        CorruptionKind::InvalidField { field: "index chain" },
                    ));
                }
                slot.store((i + 1).to_be(), Ordering::Relaxed);
            }
            self.flush_all()?;
        }
        report.entries = count;
        self.count.store(count, Ordering::Release);
        self.flushed.store(count, Ordering::Release);
        self.last_phy.store(last, Ordering::Release);
        self.min_ts.store(min_ts, Ordering::Release);
        self.max_ts.store(max_ts, Ordering::Release);
        Ok(report)
    }

    /// `(count, last physical offset)` from a valid seal.
    fn read_seal(&self) -> Option<(u32, u64)> {
        let at = self.seal_at();
        let mut b = [0u8; INDEX_SEAL_LEN];
        // SAFETY: the seal is the mapping's last 64 bytes; only `seal`
        // writes it, under the writer's serialisation, never concurrently
        // with recovery.
        unsafe { std::ptr::copy_nonoverlapping(self.region.as_ptr().add(at), b.as_mut_ptr(), INDEX_SEAL_LEN) };
        if b[..8] != INDEX_SEAL_MAGIC || crc32fast::hash(&b[..S_CRC]) != get_u32(&b, S_CRC) {
            return None;
        }
        Some((get_u32(&b, S_COUNT), get_u64(&b, S_LAST_PHY)))
    }

    fn clear_seal(&self) -> Result<()> {
        let at = self.seal_at();
        // SAFETY: the mapping's last 64 bytes; recovery runs before the file
        // is shared with any reader.
        unsafe { std::ptr::write_bytes(self.region.as_ptr().add(at), 0, INDEX_SEAL_LEN) };
        self.region
            .flush_range(at & !4095, self.region.len() - (at & !4095))
            .map_err(|e| Error::io("msync index seal", &self.path, e))
    }

    /// Drops this process's mapped pages of the file from its resident
    /// set; contents are unchanged (see [`MappedRegion::release`]).
    pub(crate) fn release(&self) {
        self.region.release(0, self.region.len());
    }

    /// Entries in the file.
    pub(crate) fn count(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    /// Whether no more entries fit.
    pub(crate) fn is_full(&self) -> bool {
        self.count() >= self.size.max_entries
    }

    /// Physical offset of the newest entry (`first_phy` when empty).
    pub(crate) fn last_phy(&self) -> u64 {
        self.last_phy.load(Ordering::Acquire)
    }

    /// Store-time range of the entries, if any.
    pub(crate) fn time_range(&self) -> Option<(u64, u64)> {
        let (lo, hi) = (self.min_ts.load(Ordering::Acquire), self.max_ts.load(Ordering::Acquire));
        (self.count() > 0).then_some((lo, hi))
    }

    /// Whether the file is sealed (full and flushed).
    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Appends an entry for `key` -> `phy` stored at `ts`. `Ok(false)` when
    /// the file is full (nothing written). Offsets must not decrease.
    pub(crate) fn put(&self, key: &str, phy: u64, ts: u64) -> Result<bool> {
        let i = self.count();
        if i >= self.size.max_entries {
            return Ok(false);
        }
        if phy < self.last_phy() {
            return Err(Error::InvalidArgument(format!(
                "index entries go in commit-log order: {phy} after {}",
                self.last_phy()
            )));
        }
        let (key_hash, key_crc) = key_hashes(key);
        let slot = self.slot(key_hash % self.size.slots);
        let prev = u32::from_be(slot.load(Ordering::Acquire));
        self.write_entry(i, &Entry { key_hash, key_crc, phy, ts, prev }.encode());
        // The entry's bytes before the slot that leads to it, and both
        // before the count.
        slot.store((i + 1).to_be(), Ordering::Release);
        self.last_phy.store(phy, Ordering::Release);
        // Loads and stores, not `fetch_min`/`fetch_max`: the caller
        // serialises writers, so nobody else changes them meanwhile, and
        // read-modify-writes cost several times more.
        if ts < self.min_ts.load(Ordering::Acquire) {
            self.min_ts.store(ts, Ordering::Release);
        }
        if ts > self.max_ts.load(Ordering::Acquire) {
            self.max_ts.store(ts, Ordering::Release);
        }
        self.count.store(i + 1, Ordering::Release);
        Ok(true)
    }

    /// Physical offsets (with store times) of up to `max` entries whose
    /// hashes match `key` and whose store time is in `[begin, end]`, newest
    /// first. Candidates only: different keys can share both hashes, so the
    /// caller compares the records' keys.
    pub(crate) fn lookup(&self, key: &str, begin: u64, end: u64, max: usize, out: &mut Vec<(u64, u64)>) {
        let (key_hash, key_crc) = key_hashes(key);
        let count = self.count();
        let mut cur = u32::from_be(self.slot(key_hash % self.size.slots).load(Ordering::Acquire));
        // Each step goes to a smaller entry number, so at most `count` steps.
        let mut steps = 0;
        while cur != 0 && cur <= count && steps < count && out.len() < max {
            steps += 1;
            let Some(e) = Entry::decode(&self.raw_entry(cur - 1)) else { return };
            if e.key_hash == key_hash && e.key_crc == key_crc && (begin..=end).contains(&e.ts) {
                out.push((e.phy, e.ts));
            }
            if e.prev >= cur {
                return;
            }
            cur = e.prev;
        }
    }

    /// Writes entries and slots put since the last flush to disk.
    pub(crate) fn flush(&self) -> Result<()> {
        let (from, to) = (self.flushed.load(Ordering::Acquire), self.count());
        if from >= to {
            return Ok(());
        }
        // Slots are scattered: flush the table whole, then the new entries.
        let slots_len = self.size.slots as usize * INDEX_SLOT_LEN;
        self.region
            .flush_range(0, INDEX_HEADER_LEN + slots_len)
            .map_err(|e| Error::io("msync index", &self.path, e))?;
        let start = (self.entries_at() + from as usize * INDEX_ENTRY_LEN) & !4095;
        let end = self.entries_at() + to as usize * INDEX_ENTRY_LEN;
        self.region.flush_range(start, end - start).map_err(|e| Error::io("msync index", &self.path, e))?;
        self.flushed.store(to, Ordering::Release);
        Ok(())
    }

    fn flush_all(&self) -> Result<()> {
        self.region.flush_range(0, self.region.len()).map_err(|e| Error::io("msync index", &self.path, e))
    }

    /// Flushes a full file and writes its seal, so reopening trusts it
    /// without a scan.
    pub(crate) fn seal(&self) -> Result<()> {
        if self.is_sealed() {
            return Ok(());
        }
        self.flush()?;
        let mut b = [0u8; INDEX_SEAL_LEN];
        b[..8].copy_from_slice(&INDEX_SEAL_MAGIC);
        put_u32(&mut b, S_COUNT, self.count());
        put_u64(&mut b, S_LAST_PHY, self.last_phy());
        put_u64(&mut b, S_MIN_TS, self.min_ts.load(Ordering::Acquire));
        put_u64(&mut b, S_MAX_TS, self.max_ts.load(Ordering::Acquire));
        let crc = crc32fast::hash(&b[..S_CRC]);
        put_u32(&mut b, S_CRC, crc);
        let at = self.seal_at();
        // SAFETY: the seal is the mapping's last 64 bytes, written only here
        // by the single writer; readers never read it.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), self.region.as_ptr().add(at), INDEX_SEAL_LEN) };
        self.region
            .flush_range(at & !4095, self.region.len() - (at & !4095))
            .map_err(|e| Error::io("msync index seal", &self.path, e))?;
        self.sealed.store(true, Ordering::Release);
        Ok(())
    }
}

/// Follows the chain of `key` in the index file at `path` with `pread`,
/// without mapping it or taking any lock (for read-only tools beside a live
/// store), offering each matching `(physical offset, store time)` in
/// `[begin, end]` to `each` until it returns false. A file that does not
/// check out (or is being created) offers nothing; an entry that does not
/// check out ends the chain.
pub(crate) fn lookup_offline(
    storage: &dyn Storage,
    path: &Path,
    key: &str,
    begin: u64,
    end: u64,
    mut each: impl FnMut(u64, u64) -> bool,
) -> Result<()> {
    let file = storage.open(path, OpenMode::Read).map_err(|e| Error::io("open index file", path, e))?;
    let mut h = [0u8; INDEX_HEADER_LEN];
    if crate::storage::read_full_at(file.as_ref(), &mut h, 0).map_err(|e| Error::io("read index file", path, e))?
        < INDEX_HEADER_LEN
        || h[..8] != INDEX_MAGIC
        || crc32fast::hash(&h[..H_CRC]) != get_u32(&h, H_CRC)
    {
        return Ok(());
    }
    let size = IndexFileSize { slots: get_u32(&h, H_SLOTS), max_entries: get_u32(&h, H_MAX_ENTRIES) };
    if size.check().is_err() {
        return Ok(());
    }
    let (key_hash, key_crc) = key_hashes(key);
    let mut slot = [0u8; INDEX_SLOT_LEN];
    let slot_at = (INDEX_HEADER_LEN + (key_hash % size.slots) as usize * INDEX_SLOT_LEN) as u64;
    if crate::storage::read_full_at(file.as_ref(), &mut slot, slot_at)
        .map_err(|e| Error::io("read index file", path, e))?
        < INDEX_SLOT_LEN
    {
        return Ok(());
    }
    let mut cur = get_u32(&slot, 0);
    let entries_at = (INDEX_HEADER_LEN + size.slots as usize * INDEX_SLOT_LEN) as u64;
    while cur != 0 && cur <= size.max_entries {
        let mut b = [0u8; INDEX_ENTRY_LEN];
        let at = entries_at + u64::from(cur - 1) * INDEX_ENTRY_LEN as u64;
        if crate::storage::read_full_at(file.as_ref(), &mut b, at).map_err(|e| Error::io("read index file", path, e))?
            < INDEX_ENTRY_LEN
        {
            return Ok(());
        }
        let Some(e) = Entry::decode(&b) else { return Ok(()) };
        if e.key_hash == key_hash && e.key_crc == key_crc && (begin..=end).contains(&e.ts) && !each(e.phy, e.ts) {
            return Ok(());
        }
        if e.prev >= cur {
            return Ok(());
        }
        cur = e.prev;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;

    const SMALL: IndexFileSize = IndexFileSize { slots: 7, max_entries: 50 };

    fn fresh(dir: &Path) -> IndexFile {
        IndexFile::create(&StdStorage, &dir.join("00000000000000000000"), SMALL, 0, 1).unwrap()
    }

    fn find(f: &IndexFile, key: &str) -> Vec<u64> {
        let mut out = Vec::new();
        f.lookup(key, 0, u64::MAX, 100, &mut out);
        out.into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn offline_lookup_reads_what_the_mapping_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let f = fresh(dir.path());
        for i in 0..20u64 {
            f.put(&format!("t#k{}", i % 4), i * 10, 500 + i).unwrap();
        }
        // Not flushed: the page cache is shared with pread.
        let mut got = Vec::new();
        lookup_offline(&StdStorage, &f.path, "t#k1", 0, u64::MAX, |p, _| {
            got.push(p);
            true
        })
        .unwrap();
        assert_eq!(got, [170, 130, 90, 50, 10]);
        got.clear();
        lookup_offline(&StdStorage, &f.path, "t#k1", 505, 515, |p, _| {
            got.push(p);
            got.is_empty()
        })
        .unwrap();
        assert_eq!(got, [130]);
    }

    /// FORMAT.md "Index files": these values are the format.
    #[test]
    fn format_constants_are_pinned() {
        assert_eq!(INDEX_MAGIC, *b"\x8DMQI\r\n\x1A\n");
        assert_eq!(INDEX_SEAL_MAGIC, *b"\x8DMQSEAL\n");
        assert_eq!((INDEX_HEADER_LEN, INDEX_SEAL_LEN, INDEX_SLOT_LEN, INDEX_ENTRY_LEN), (64, 64, 4, 32));
        assert_eq!((H_SLOTS, H_MAX_ENTRIES, H_FIRST_PHY, H_CREATED, H_CRC), (12, 16, 24, 32, 60));
        assert_eq!((E_HASH, E_KEY_CRC, E_PHY, E_TS, E_PREV, E_CRC), (0, 4, 8, 16, 24, 28));
        assert_eq!(SMALL.file_len(), 64 + 28 + 1600 + 64);
    }

    #[test]
    fn chains_keep_every_entry_of_a_key_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let f = fresh(dir.path());
        // 7 slots, 30 keys: buckets are shared.
        for i in 0..40u64 {
            assert!(f.put(&format!("t#k{}", i % 30), i * 100, 1_000 + i).unwrap());
        }
        assert_eq!(find(&f, "t#k3"), [3300, 300]);
        assert_eq!(find(&f, "t#k29"), [2900]);
        assert!(find(&f, "t#nope").is_empty());
        let mut windowed = Vec::new();
        f.lookup("t#k3", 1_000, 1_010, 10, &mut windowed);
        assert_eq!(windowed, [(300, 1_003)]);
        assert!(f.put("t#x", 50, 0).is_err(), "offsets never go back");
    }

    #[test]
    fn reopen_rebuilds_slots_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000");
        {
            let f = fresh(dir.path());
            for i in 0..20u64 {
                f.put(&format!("k{}", i % 5), i, i).unwrap();
            }
            f.flush().unwrap();
        }
        // Tear entry 17 and scramble the slot table.
        let mut b = std::fs::read(&path).unwrap();
        let e17 = 64 + 28 + 17 * 32;
        b[e17 + 3] ^= 0xff;
        for s in 0..7 {
            b[64 + s * 4..64 + s * 4 + 4].copy_from_slice(&19u32.to_be_bytes());
        }
        std::fs::write(&path, &b).unwrap();
        let (f, r) = IndexFile::open(&StdStorage, &path, u64::MAX).unwrap();
        assert_eq!(r, IndexFileRecovery { entries: 17, sealed: false, discarded: 3 });
        assert_eq!(find(&f, "k2"), [12, 7, 2]);
        assert_eq!(find(&f, "k1"), [16, 11, 6, 1]);
        // Appending continues after the kept prefix.
        f.put("k2", 30, 30).unwrap();
        assert_eq!(find(&f, "k2"), [30, 12, 7, 2]);
    }

    #[test]
    fn a_sealed_file_is_trusted_and_a_lying_seal_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000");
        {
            let f = fresh(dir.path());
            let mut i = 0;
            while f.put(&format!("k{}", i % 9), i, i).unwrap() {
                i += 1;
            }
            assert!(f.is_full());
            f.seal().unwrap();
        }
        let (f, r) = IndexFile::open(&StdStorage, &path, u64::MAX).unwrap();
        assert_eq!(r, IndexFileRecovery { entries: 50, sealed: true, discarded: 0 });
        assert_eq!(find(&f, "k0").len(), 6);
        drop(f);
        // The seal says 50 entries; lose one: the file no longer matches.
        let mut b = std::fs::read(&path).unwrap();
        let e49 = 64 + 28 + 49 * 32;
        b[e49 + 9] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(matches!(IndexFile::open(&StdStorage, &path, u64::MAX), Err(Error::Corruption { .. })));
    }

    #[test]
    fn entries_behind_an_empty_one_are_zeroed_too() {
        // A crash kept entries 2..5 but not entry 1: recovery keeps entry
        // 0 and must zero 2..5 as well, or they count as valid again once
        // a new entry 1 fills the gap (a fuzz finding).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000");
        {
            let f = fresh(dir.path());
            for i in 0..5 {
                assert!(f.put(&format!("k{i}"), 10 + i, i).unwrap());
            }
            f.flush().unwrap();
        }
        let mut b = std::fs::read(&path).unwrap();
        let e1 = 64 + 7 * 4 + 32;
        b[e1..e1 + 32].fill(0);
        std::fs::write(&path, &b).unwrap();
        let (f, r) = IndexFile::open(&StdStorage, &path, u64::MAX).unwrap();
        assert_eq!(r, IndexFileRecovery { entries: 1, sealed: false, discarded: 3 });
        assert!(f.put("new", 20, 9).unwrap());
        f.flush().unwrap();
        drop(f);
        let (f, r) = IndexFile::open(&StdStorage, &path, u64::MAX).unwrap();
        assert_eq!((r.entries, f.count()), (2, 2));
        assert_eq!(find(&f, "k3"), Vec::<u64>::new());
    }

    #[test]
    fn a_seal_on_a_file_with_room_left_is_corruption() {
        // Only full files are sealed; trusting a seal on one with room
        // left made the writer append behind it, so the file no longer
        // matched its seal at the next open (a fuzz finding).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000");
        {
            let f = fresh(dir.path());
            for i in 0..3 {
                assert!(f.put("k", i, i).unwrap());
            }
            f.seal().unwrap();
        }
        let e = IndexFile::open(&StdStorage, &path, u64::MAX).unwrap_err();
        assert!(matches!(e, Error::Corruption { kind: CorruptionKind::InvalidField { .. }, .. }), "{e:?}");
    }

    #[test]
    fn damaged_headers_and_lengths_are_corruption_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000");
        drop(fresh(dir.path()));
        let good = std::fs::read(&path).unwrap();
        for at in 0..INDEX_HEADER_LEN {
            let mut b = good.clone();
            b[at] ^= 0x20;
            std::fs::write(&path, &b).unwrap();
            assert!(
                matches!(IndexFile::open(&StdStorage, &path, u64::MAX), Err(Error::Corruption { .. })),
                "byte {at}"
            );
        }
        for len in [0, 10, 64, good.len() - 1] {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(
                matches!(IndexFile::open(&StdStorage, &path, u64::MAX), Err(Error::Corruption { .. })),
                "len {len}"
            );
        }
    }
}
