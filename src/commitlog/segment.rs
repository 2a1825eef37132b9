//! One commit-log segment: a preallocated file named by its 20-digit base
//! offset, starting with a [`SEGMENT_HEADER_LEN`]-byte header, mapped shared.
//!
//! Invariants:
//! * a file with a final (non-`.tmp`) name always has a complete, synced
//!   header: segments are created as `<name>.tmp`, allocated, given their
//!   header, synced, then renamed and the directory synced;
//! * bytes past the log's write position read as zeros (fresh allocation, or
//!   zeroed and synced by recovery), so a scan stops there;
//! * the mapping is written only past the published end, and readers only
//!   form slices below it, so no `&mut [u8]` ever aliases a live `&[u8]`.

use crate::clock::Clock;
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{read_exact_at, write_all_at, MappedRegion, OpenMode, Storage, StorageFile};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};

/// Segment file magic: PNG-style, a high byte then "MQS" then CR LF SUB LF,
/// so text-mode mangling and truncated copies are caught.
pub const SEGMENT_MAGIC: [u8; 8] = [0x8D, b'M', b'Q', b'S', b'\r', b'\n', 0x1A, b'\n'];
/// Segment format version written by this build.
pub const SEGMENT_VERSION: u16 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const HEADER_LEN_OFFSET: usize = VERSION_OFFSET + 2;
const FLAGS_OFFSET: usize = HEADER_LEN_OFFSET + 2;
pub(crate) const BASE_OFFSET_OFFSET: usize = FLAGS_OFFSET + 4;
const SIZE_OFFSET: usize = BASE_OFFSET_OFFSET + 8;
const CREATED_OFFSET: usize = SIZE_OFFSET + 8;
const _RESERVED_OFFSET: usize = CREATED_OFFSET + 8;
const HEADER_CRC_OFFSET: usize = 60;
/// Bytes of the segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN: usize = HEADER_CRC_OFFSET + 4;

/// Width of a segment file name: the base offset zero-padded to 20 digits.
pub const SEGMENT_NAME_LEN: usize = 20;

/// File name of the segment starting at `base`.
pub(crate) fn segment_name(base: u64) -> String {
    format!("{base:020}")
}

/// Base offset encoded in a segment file name, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    if name.len() == SEGMENT_NAME_LEN && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) base: u64,
    pub(crate) size: u64,
    pub(crate) created_ms: u64,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&SEGMENT_MAGIC);
        put_u16(&mut b, VERSION_OFFSET, SEGMENT_VERSION);
        put_u16(&mut b, HEADER_LEN_OFFSET, SEGMENT_HEADER_LEN as u16);
        put_u64(&mut b, BASE_OFFSET_OFFSET, self.base);
        put_u64(&mut b, SIZE_OFFSET, self.size);
        put_u64(&mut b, CREATED_OFFSET, self.created_ms);
        let crc = crc32fast::hash(&b[..HEADER_CRC_OFFSET]);
        put_u32(&mut b, HEADER_CRC_OFFSET, crc);
        b
    }

    /// Decodes and checks a header; errors carry the offset of the bad field.
    pub(crate) fn decode(b: &[u8]) -> std::result::Result<Self, (u64, CorruptionKind)> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err((0, CorruptionKind::Truncated));
        }
        if b[..8] != SEGMENT_MAGIC {
            return Err((0, CorruptionKind::BadMagic { found: get_u64(b, 0) }));
        }
        let stored = get_u32(b, HEADER_CRC_OFFSET);
        let computed = crc32fast::hash(&b[..HEADER_CRC_OFFSET]);
        if stored != computed {
            return Err((HEADER_CRC_OFFSET as u64, CorruptionKind::ChecksumMismatch { stored, computed }));
        }
        let version = get_u16(b, VERSION_OFFSET);
        if version != SEGMENT_VERSION {
            return Err((VERSION_OFFSET as u64, CorruptionKind::UnsupportedVersion { found: u32::from(version) }));
        }
        let hlen = get_u16(b, HEADER_LEN_OFFSET);
        if usize::from(hlen) != SEGMENT_HEADER_LEN {
            return Err((HEADER_LEN_OFFSET as u64, CorruptionKind::BadLength { length: u64::from(hlen) }));
        }
        let size = get_u64(b, SIZE_OFFSET);
        if size < (SEGMENT_HEADER_LEN as u64) * 2 || size > super::options::MAX_SEGMENT_SIZE {
            return Err((SIZE_OFFSET as u64, CorruptionKind::BadLength { length: size }));
        }
        Ok(Self { base: get_u64(b, BASE_OFFSET_OFFSET), size, created_ms: get_u64(b, CREATED_OFFSET) })
    }
}

/// An open, mapped segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) size: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn StorageFile>,
    region: Arc<dyn MappedRegion>,
}

impl Segment {
    /// Creates, allocates, stamps and syncs a new segment at `base`, then
    /// renames it into place and syncs the directory.
    pub(crate) fn create(storage: &dyn Storage, dir: &Path, base: u64, size: u64, clock: &dyn Clock) -> Result<Self> {
        let path = dir.join(segment_name(base));
        let tmp = dir.join(format!("{}.tmp", segment_name(base)));
        let file = storage.open(&tmp, OpenMode::CreateTruncate).map_err(|e| Error::io("create segment", &tmp, e))?;
        let header = SegmentHeader { base, size, created_ms: clock.now_ms() };
        let done = (|| {
            file.allocate(size).map_err(|e| Error::io("allocate segment", &tmp, e))?;
            write_all_at(file.as_ref(), &header.encode(), 0).map_err(|e| Error::io("write segment header", &tmp, e))?;
            file.sync_data().map_err(|e| Error::io("fdatasync segment", &tmp, e))?;
            // Never replace a live segment, whatever a caller got wrong.
            storage.rename_no_replace(&tmp, &path).map_err(|e| Error::io("rename segment", &tmp, e))?;
            storage.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))
        })();
        if let Err(e) = done {
            // Best effort: a leftover .tmp is also removed by the next open.
            let _ = storage.remove_file(&tmp);
            return Err(e);
        }
        Self::map(file, path, header)
    }

    /// Opens an existing segment and checks its header against its name;
    /// also returns the file length, which the caller checks against the
    /// header's size (only the last segment may be short: a torn tail).
    /// Reads with `pread` only; call [`Segment::map`] after validation.
    /// Offline tools pass [`OpenMode::Read`], so they work on files they
    /// may not write; recovery, which repairs, passes `ReadWrite`.
    pub(crate) fn open_file(
        storage: &dyn Storage,
        path: &Path,
        base: u64,
        mode: OpenMode,
    ) -> Result<(Arc<dyn StorageFile>, SegmentHeader, u64)> {
        let file = storage.open(path, mode).map_err(|e| Error::io("open segment", path, e))?;
        let len = file.len().map_err(|e| Error::io("stat segment", path, e))?;
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        if len < SEGMENT_HEADER_LEN as u64 {
            return Err(Error::corruption(path, len, CorruptionKind::Truncated));
        }
        read_exact_at(file.as_ref(), &mut buf, 0).map_err(|e| Error::io("read segment header", path, e))?;
        let header = SegmentHeader::decode(&buf).map_err(|(off, kind)| Error::corruption(path, off, kind))?;
        if header.base != base {
            return Err(Error::corruption(
                path,
                BASE_OFFSET_OFFSET as u64,
                CorruptionKind::Misplaced { claimed: header.base, actual: base },
            ));
        }
        Ok((file, header, len))
    }

    /// Maps a validated segment file.
    pub(crate) fn map(file: Arc<dyn StorageFile>, path: PathBuf, header: SegmentHeader) -> Result<Self> {
        let len = usize::try_from(header.size).map_err(|_| {
            Error::corruption(&path, SIZE_OFFSET as u64, CorruptionKind::BadLength { length: header.size })
        })?;
        let region = file.map(len).map_err(|e| Error::io("mmap segment", &path, e))?;
        Ok(Self { base: header.base, size: header.size, path, file, region })
    }

    /// Offset one past the last byte of this segment.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.size
    }

    /// Borrows `[pos, pos + len)` of the mapping.
    ///
    /// # Safety
    /// The range must lie below the log's published end (so no writer touches
    /// it) and inside the segment.
    pub(crate) unsafe fn bytes(&self, pos: usize, len: usize) -> &[u8] {
        debug_assert!(pos + len <= self.region.len());
        // SAFETY: the region is valid for its length (MappedRegion contract);
        // the caller guarantees the range is in bounds and not being written.
        unsafe { std::slice::from_raw_parts(self.region.as_ptr().add(pos), len) }
    }

    /// Mutably borrows `[pos, pos + len)` of the mapping.
    ///
    /// # Safety
    /// The range must lie at or past the log's published end, inside the
    /// segment, and the caller must hold the writer lock so nobody else
    /// borrows it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn bytes_mut(&self, pos: usize, len: usize) -> &mut [u8] {
        debug_assert!(pos + len <= self.region.len());
        // SAFETY: as for `bytes`; exclusivity comes from the writer lock and
        // from readers never reaching past the published end.
        unsafe { std::slice::from_raw_parts_mut(self.region.as_ptr().add(pos), len) }
    }

    /// Synchronously flushes file positions `[from, to)` of the mapping.
    pub(crate) fn flush(&self, from: u64, to: u64) -> std::io::Result<()> {
        self.page_range(from, to).map_or(Ok(()), |(start, len)| self.region.flush_range(start, len))
    }

    /// Drops whole pages `[from, to)` (page-aligned, complete records only)
    /// from the mapping; they stay in the file. Advisory.
    pub(crate) fn release(&self, from: u64, to: u64) {
        if let Some((start, len)) = self.page_range(from, to) {
            self.region.release(start, len);
        }
    }

    /// Starts writeback of file positions `[from, to)` without waiting.
    pub(crate) fn start_writeback(&self, from: u64, to: u64) -> std::io::Result<()> {
        self.page_range(from, to).map_or(Ok(()), |(start, len)| self.file.start_writeback(start as u64, len as u64))
    }

    /// Tells the mapping that this segment will only be read from now on.
    pub(crate) fn seal(&self) {
        self.region.sealed();
    }

    /// Hints the kernel to fault in `[from, to)` writable.
    pub(crate) fn prefault(&self, from: u64, to: u64) -> std::io::Result<()> {
        self.page_range(from, to).map_or(Ok(()), |(start, len)| self.region.prefault(start, len))
    }

    /// `[from, to)` widened to a page-aligned start (as msync and madvise
    /// want) and clipped to the segment; `None` when empty.
    fn page_range(&self, from: u64, to: u64) -> Option<(usize, usize)> {
        let start = (from & !4095) as usize;
        let end = to.min(self.size) as usize;
        (end > start).then(|| (start, end - start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_constants_are_pinned() {
        // FORMAT.md section 3.1 lists these offsets; change both together.
        assert_eq!(VERSION_OFFSET, 8);
        assert_eq!(HEADER_LEN_OFFSET, 10);
        assert_eq!(BASE_OFFSET_OFFSET, 16);
        assert_eq!(SIZE_OFFSET, 24);
        assert_eq!(CREATED_OFFSET, 32);
        assert_eq!(_RESERVED_OFFSET, 40);
        assert_eq!(SEGMENT_HEADER_LEN, 64);
        assert_eq!(segment_name(1 << 30), "00000000001073741824");
        assert_eq!(parse_segment_name("00000000001073741824"), Some(1 << 30));
        assert_eq!(parse_segment_name("0000000000107374182"), None);
        assert_eq!(parse_segment_name("0000000000107374182x"), None);
    }

    #[test]
    fn header_round_trip_and_every_bit_flip() {
        let h = SegmentHeader { base: 1 << 20, size: 1 << 20, created_ms: 12345 };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for bit in 0..(SEGMENT_HEADER_LEN * 8) {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&c).is_err(), "bit {bit}");
        }
        assert_eq!(SegmentHeader::decode(&b[..10]), Err((0, CorruptionKind::Truncated)));
    }
}
