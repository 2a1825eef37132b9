//! Read-only checks of the index files, for [`crate::store::verify`]:
//! header, seal, the entry prefix (CRC, offset order, backward chain
//! links that agree with the entries before them) and, for sealed files
//! (whose slots recovery trusts), every hash slot. Entries are returned
//! for checking against the commit log, which is the caller's part.
//!
//! Files are opened [`OpenMode::Read`] and read with `pread`; nothing is
//! written or mapped.

use super::file::{
    Entry, IndexFileSize, INDEX_ENTRY_LEN, INDEX_HEADER_LEN, INDEX_MAGIC, INDEX_SEAL_LEN, INDEX_SEAL_MAGIC,
    INDEX_SLOT_LEN, INDEX_VERSION,
};
use super::set::INDEX_DIR;
use crate::codec::{get_u32, get_u64};
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{read_full_at, OpenMode, Storage, StorageFile};
use crate::store::verify::{ProblemKind, Problems, Severity};
use std::path::{Path, PathBuf};

/// Entries read per `pread` (128 KiB).
const CHUNK_ENTRIES: usize = 4096;

/// A checked index file.
#[derive(Debug, Clone)]
pub(crate) struct IndexFileAt {
    pub(crate) path: PathBuf,
    /// File position of entry 0.
    pub(crate) entries_at: u64,
}

/// A valid entry `no` of file `file` (an index into the list returned
/// with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryAt {
    pub(crate) key_hash: u32,
    pub(crate) key_crc: u32,
    pub(crate) phy: u64,
    pub(crate) ts: u64,
    pub(crate) file: u32,
    pub(crate) no: u32,
}

impl EntryAt {
    /// File position of the entry.
    pub(crate) fn pos(&self, files: &[IndexFileAt]) -> (PathBuf, u64) {
        let f = &files[self.file as usize];
        (f.path.clone(), f.entries_at + u64::from(self.no) * INDEX_ENTRY_LEN as u64)
    }
}

fn parse_name(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit())).then(|| name.parse().ok()).flatten()
}

/// Reads every index file of the store at `root`.
pub(crate) fn load(
    storage: &dyn Storage,
    root: &Path,
    problems: &mut Problems,
) -> Result<(Vec<IndexFileAt>, Vec<EntryAt>)> {
    let dir = root.join(INDEX_DIR);
    let mut files = Vec::new();
    let mut entries = Vec::new();
    let names = match storage.list_dir(&dir) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((files, entries)),
        Err(e) => return Err(Error::io("list directory", &dir, e)),
    };
    let mut named: Vec<(u64, String)> = names.into_iter().filter_map(|n| parse_name(&n).map(|f| (f, n))).collect();
    named.sort();
    let mut prev_last: Option<u64> = None;
    for (i, (first, name)) in named.iter().enumerate() {
        let path = dir.join(name);
        let file = match storage.open(&path, OpenMode::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("open index file", &path, e)),
        };
        let newest = i + 1 == named.len();
        let Some(size) = header(file.as_ref(), &path, *first, problems)? else { continue };
        if prev_last.is_some_and(|l| *first < l) {
            let kind = CorruptionKind::Misplaced { claimed: *first, actual: prev_last.unwrap_or(0) };
            problems.damaged(&path, 24, kind, true);
        }
        let at = u32::try_from(files.len()).unwrap_or(u32::MAX);
        let entries_at = (INDEX_HEADER_LEN + size.slots as usize * INDEX_SLOT_LEN) as u64;
        files.push(IndexFileAt { path: path.clone(), entries_at });
        let f = One { file: file.as_ref(), path: &path, size, first: *first, entries_at, index: at, newest };
        prev_last = Some(f.check(&mut entries, problems)?);
    }
    Ok((files, entries))
}

/// Checks the header of `path` (named `first`) and returns its sizes;
/// `None` (reported) when it does not check out.
fn header(file: &dyn StorageFile, path: &Path, first: u64, problems: &mut Problems) -> Result<Option<IndexFileSize>> {
    let mut h = [0u8; INDEX_HEADER_LEN];
    let n = read_full_at(file, &mut h, 0).map_err(|e| Error::io("read index header", path, e))?;
    let len = file.len().map_err(|e| Error::io("stat index file", path, e))?;
    let mut bad = |pos, kind| {
        problems.damaged(path, pos, kind, true);
        Ok(None)
    };
    if n < INDEX_HEADER_LEN {
        return bad(n as u64, CorruptionKind::Truncated);
    }
    if h[..8] != INDEX_MAGIC {
        return bad(0, CorruptionKind::BadMagic { found: get_u64(&h, 0) });
    }
    let (stored, computed) = (get_u32(&h, 60), crc32fast::hash(&h[..60]));
    if stored != computed {
        return bad(60, CorruptionKind::ChecksumMismatch { stored, computed });
    }
    let version = u16::from_be_bytes([h[8], h[9]]);
    if version != INDEX_VERSION {
        return bad(8, CorruptionKind::UnsupportedVersion { found: u32::from(version) });
    }
    let size = IndexFileSize { slots: get_u32(&h, 12), max_entries: get_u32(&h, 16) };
    if size.check().is_err() {
        return bad(12, CorruptionKind::InvalidField { field: "index sizes" });
    }
    if len != size.file_len() {
        return bad(len, CorruptionKind::BadLength { length: len });
    }
    let named = get_u64(&h, 24);
    if named != first {
        return bad(24, CorruptionKind::Misplaced { claimed: named, actual: first });
    }
    Ok(Some(size))
}

/// One index file whose header checked out.
struct One<'a> {
    file: &'a dyn StorageFile,
    path: &'a Path,
    size: IndexFileSize,
    first: u64,
    entries_at: u64,
    index: u32,
    newest: bool,
}

impl One<'_> {
    fn seal_at(&self) -> u64 {
        self.entries_at + u64::from(self.size.max_entries) * INDEX_ENTRY_LEN as u64
    }

    /// `(count, last offset)` from the seal; `None` when unsealed (zeros);
    /// a damaged seal is reported and read as none.
    fn seal(&self, problems: &mut Problems) -> Result<Option<(u32, u64)>> {
        let mut b = [0u8; INDEX_SEAL_LEN];
        let n =
            read_full_at(self.file, &mut b, self.seal_at()).map_err(|e| Error::io("read index seal", self.path, e))?;
        if b[..n].iter().all(|&x| x == 0) {
            return Ok(None);
        }
        if b[..8] != INDEX_SEAL_MAGIC || crc32fast::hash(&b[..60]) != get_u32(&b, 60) {
            problems.damaged(self.path, self.seal_at(), CorruptionKind::InvalidField { field: "index seal" }, true);
            return Ok(None);
        }
        Ok(Some((get_u32(&b, 8), get_u64(&b, 12))))
    }

    /// Checks the entries (and the slots of a sealed file); returns the
    /// last entry's offset.
    fn check(&self, out: &mut Vec<EntryAt>, problems: &mut Problems) -> Result<u64> {
        let seal = self.seal(problems)?;
        if seal.is_none() && !self.newest {
            // Every file but the newest was sealed before the next began.
            let field = "older index file not sealed";
            problems.damaged(self.path, self.seal_at(), CorruptionKind::InvalidField { field }, true);
        }
        // Newest entry number + 1 per bucket, as the slots must hold.
        let mut heads = vec![0u32; self.size.slots as usize];
        let (mut count, mut last) = (0u32, self.first);
        // The first entry that ends the valid prefix, if it is not zero.
        let mut bad_at: Option<u32> = None;
        let mut ended = false;
        // Non-zero entries after the prefix's end: how many have a valid
        // CRC, and the first.
        let (mut trailing_valid, mut first_trailing) = (0u64, None);
        let mut buf = vec![0u8; CHUNK_ENTRIES * INDEX_ENTRY_LEN];
        let max = self.size.max_entries;
        let mut i = 0u32;
        'read: while i < max {
            let n = (max - i).min(CHUNK_ENTRIES as u32) as usize;
            let pos = self.entries_at + u64::from(i) * INDEX_ENTRY_LEN as u64;
            let got = read_full_at(self.file, &mut buf[..n * INDEX_ENTRY_LEN], pos)
                .map_err(|e| Error::io("read index entries", self.path, e))?;
            for raw in buf[..got].chunks_exact(INDEX_ENTRY_LEN) {
                let raw: &[u8; INDEX_ENTRY_LEN] = raw.try_into().unwrap_or(&[0; INDEX_ENTRY_LEN]);
                let zero = raw.iter().all(|&b| b == 0);
                if ended || zero {
                    ended = true;
                    if !zero {
                        trailing_valid += u64::from(Entry::decode(raw).is_some());
                        first_trailing.get_or_insert(i);
                    }
                    i += 1;
                    continue;
                }
                match Entry::decode(raw).filter(|e| e.phy >= last && e.prev <= i) {
                    Some(e) => {
                        let bucket = (e.key_hash % self.size.slots) as usize;
                        if heads[bucket] != e.prev {
                            // Recovery refuses a chain link that contradicts
                            // the entries before it.
                            let at = self.entries_at + u64::from(i) * INDEX_ENTRY_LEN as u64 + 24;
                            problems.damaged(
                                self.path,
                                at,
                                CorruptionKind::InvalidField { field: "index chain" },
                                true,
                            );
                        }
                        heads[bucket] = i + 1;
                        out.push(EntryAt {
                            key_hash: e.key_hash,
                            key_crc: e.key_crc,
                            phy: e.phy,
                            ts: e.ts,
                            file: self.index,
                            no: i,
                        });
                        last = e.phy;
                        count += 1;
                    }
                    None => {
                        bad_at = Some(i);
                        ended = true;
                    }
                }
                i += 1;
            }
            if got < n * INDEX_ENTRY_LEN {
                break 'read;
            }
        }
        if let Some(at) = bad_at.or(first_trailing) {
            self.after_prefix(at, trailing_valid, seal.is_some(), problems);
        }
        if let Some((sealed_count, sealed_last)) = seal {
            // Only full files are sealed (FORMAT.md 15.5).
            if sealed_count != count || sealed_last != last || sealed_count != self.size.max_entries {
                let field = "index seal disagrees with its entries";
                problems.damaged(self.path, self.seal_at(), CorruptionKind::InvalidField { field }, true);
            }
            self.slots(&heads, problems)?;
        }
        Ok(last)
    }

    /// Reports the entry `bad` that ends the valid prefix (or, after an
    /// empty entry, the first non-empty one). In the newest unsealed file,
    /// with no valid entry after it, that is a torn write that open zeroes
    /// (stale); anything else is corruption.
    fn after_prefix(&self, bad: u32, trailing_valid: u64, sealed: bool, problems: &mut Problems) {
        let at = self.entries_at + u64::from(bad) * INDEX_ENTRY_LEN as u64;
        let kind = ProblemKind::Damaged(CorruptionKind::InvalidField { field: "index entry" });
        let torn = self.newest && !sealed && trailing_valid == 0;
        let severity = if torn { Severity::Stale } else { Severity::Corruption };
        problems.push(self.path, at, kind, severity, true);
    }

    /// Every slot of a sealed file must hold its bucket's newest entry.
    fn slots(&self, heads: &[u32], problems: &mut Problems) -> Result<()> {
        let mut buf = vec![0u8; CHUNK_ENTRIES * INDEX_SLOT_LEN];
        for (c, chunk) in heads.chunks(CHUNK_ENTRIES).enumerate() {
            let pos = (INDEX_HEADER_LEN + c * CHUNK_ENTRIES * INDEX_SLOT_LEN) as u64;
            let want = chunk.len() * INDEX_SLOT_LEN;
            let got = read_full_at(self.file, &mut buf[..want], pos)
                .map_err(|e| Error::io("read index slots", self.path, e))?;
            for (k, (raw, &head)) in buf[..got].chunks_exact(INDEX_SLOT_LEN).zip(chunk).enumerate() {
                if get_u32(raw, 0) != head {
                    let at = pos + (k * INDEX_SLOT_LEN) as u64;
                    problems.damaged(self.path, at, CorruptionKind::InvalidField { field: "index slot" }, true);
                }
            }
        }
        Ok(())
    }
}
