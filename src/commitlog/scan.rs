//! Read-only, `pread`-based scanning of segment files: used by recovery
//! (before anything is mapped, so a media error is an `EIO`, not a SIGBUS),
//! by [`verify`](super::CommitLog::verify) and by
//! [`dump`](super::CommitLog::dump).

use super::record::{parse_prefix, Parts, Prefix, RecordView, BLANK_LEN};
use super::segment::{parse_segment_name, Segment, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{read_full_at, OpenMode, Storage, StorageFile};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the commit-log directory inside the store directory.
pub const COMMITLOG_DIR: &str = "commitlog";

/// Bytes read per `pread` while scanning.
const CHUNK: usize = 4 << 20;

/// A segment file opened for scanning.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    pub(crate) header: SegmentHeader,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn StorageFile>,
    /// File length when opened; below `header.size` only for a last
    /// segment cut short.
    pub(crate) len: u64,
}

impl SegmentFile {
    pub(crate) fn end(&self) -> u64 {
        self.header.base + self.header.size
    }
}

/// Segment files of `dir`: (base, path) sorted by base, plus leftover
/// `.tmp` names from interrupted segment creation and names that are
/// neither.
pub(crate) struct Listing {
    pub(crate) segments: Vec<(u64, PathBuf)>,
    pub(crate) temporaries: Vec<PathBuf>,
}

pub(crate) fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<Listing> {
    let names = storage.list_dir(dir).map_err(|e| Error::io("list directory", dir, e))?;
    let mut segments = Vec::new();
    let mut temporaries = Vec::new();
    for name in names {
        if let Some(base) = parse_segment_name(&name) {
            segments.push((base, dir.join(&name)));
        } else if name.strip_suffix(".tmp").and_then(parse_segment_name).is_some() {
            temporaries.push(dir.join(&name));
        }
    }
    segments.sort_by_key(|(b, _)| *b);
    Ok(Listing { segments, temporaries })
}

/// Opens (with `mode`) and validates every listed segment with `pread`,
/// checking that they are contiguous.
pub(crate) fn open_segments(storage: &dyn Storage, listing: &Listing, mode: OpenMode) -> Result<Vec<SegmentFile>> {
    let mut out: Vec<SegmentFile> = Vec::with_capacity(listing.segments.len());
    for (base, path) in &listing.segments {
        let (file, header, len) = Segment::open_file(storage, path, *base, mode)?;
        if let Some(prev) = out.last() {
            if prev.end() != header.base {
                return Err(Error::corruption(
                    path,
                    0,
                    CorruptionKind::Misplaced { claimed: header.base, actual: prev.end() },
                ));
            }
        }
        out.push(SegmentFile { header, path: path.clone(), file, len });
    }
    // Only the last segment may be short (its tail was cut); anywhere else
    // a short file means lost data in the middle of the log.
    let n = out.len();
    for s in out.iter().take(n.saturating_sub(1)) {
        if s.len < s.header.size {
            return Err(Error::corruption(&s.path, s.len, CorruptionKind::Truncated));
        }
    }
    Ok(out)
}

/// One step of a scan.
#[derive(Debug)]
pub(crate) enum Step<'b> {
    /// A valid record.
    Record { offset: u64, bytes: &'b [u8], parts: Parts },
    /// An end-of-segment marker at `offset` covering `remaining` bytes; the
    /// scan moved to the next segment (or there is none: `next_missing`).
    Blank { offset: u64, remaining: u32, next_missing: bool },
    /// Zeros at `offset`: the end of the written log.
    End { offset: u64 },
    /// Invalid bytes at `offset` (file position `pos` of `path`).
    Damage { offset: u64, path: PathBuf, pos: u64, kind: CorruptionKind },
}

/// Walks records forward with buffered `pread`s.
pub(crate) struct Scanner<'a> {
    segs: &'a [SegmentFile],
    idx: usize,
    pos: u64,
    max_record: u32,
    buf: Vec<u8>,
    buf_idx: usize,
    buf_start: u64,
    buf_len: usize,
    done: bool,
}

impl<'a> Scanner<'a> {
    /// A scanner starting at physical offset `start` (must lie in a segment,
    /// at or after its header).
    pub(crate) fn new(segs: &'a [SegmentFile], start: u64, max_record: u32) -> Self {
        let idx = segs.iter().position(|s| start < s.end()).unwrap_or(segs.len());
        let pos = segs.get(idx).map_or(0, |s| (start - s.header.base).max(SEGMENT_HEADER_LEN as u64));
        Self {
            segs,
            idx,
            pos,
            max_record,
            buf: Vec::new(),
            buf_idx: usize::MAX,
            buf_start: 0,
            buf_len: 0,
            done: segs.is_empty(),
        }
    }

    /// Index of the segment the scanner is in.
    pub(crate) fn segment_index(&self) -> usize {
        self.idx
    }

    /// Bytes `[pos, pos + len)` of the current segment, read through the
    /// buffer; shorter only at end of file.
    fn get(&mut self, pos: u64, len: usize) -> Result<&[u8]> {
        let seg = &self.segs[self.idx];
        let within = self.buf_idx == self.idx
            && pos >= self.buf_start
            && pos + len as u64 <= self.buf_start + self.buf_len as u64;
        if !within {
            // `len` is bounded by max_record (<= 256 MiB), never by raw disk data.
            let want = len.max(CHUNK).min((seg.header.size.saturating_sub(pos)) as usize).max(len);
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            let n = read_full_at(seg.file.as_ref(), &mut self.buf[..want], pos)
                .map_err(|e| Error::io("read segment", &seg.path, e))?;
            self.buf_idx = self.idx;
            self.buf_start = pos;
            self.buf_len = n;
        }
        let from = (pos - self.buf_start) as usize;
        let to = (from + len).min(self.buf_len);
        Ok(&self.buf[from.min(to)..to])
    }

    /// Advances by one item. After `End` or `Damage` the scan is over and
    /// further calls return the same kind of terminal step.
    pub(crate) fn step(&mut self) -> Result<Step<'_>> {
        let Some(seg) = self.segs.get(self.idx) else {
            let end = self.segs.last().map_or(SEGMENT_HEADER_LEN as u64, |s| s.end());
            return Ok(Step::End { offset: end });
        };
        let (base, size, path) = (seg.header.base, seg.header.size, seg.path.clone());
        let offset = base + self.pos;
        if self.done {
            return Ok(Step::End { offset });
        }
        let room = size - self.pos;
        let max = self.max_record;
        let damage = |pos: u64, kind| Step::Damage { offset: base + pos, path: path.clone(), pos, kind };
        if room < u64::from(BLANK_LEN) {
            self.done = true;
            return Ok(damage(self.pos, CorruptionKind::Truncated));
        }
        let pos = self.pos;
        let head = self.get(pos, BLANK_LEN as usize)?;
        match parse_prefix(head, room, max) {
            Ok(Prefix::Empty) => {
                self.done = true;
                Ok(Step::End { offset })
            }
            Ok(Prefix::Blank { remaining }) => {
                self.idx += 1;
                self.pos = SEGMENT_HEADER_LEN as u64;
                let next_missing = self.idx >= self.segs.len();
                if next_missing {
                    self.done = true;
                }
                Ok(Step::Blank { offset, remaining, next_missing })
            }
            Ok(Prefix::Record { len }) => {
                let bytes = self.get(pos, len as usize)?;
                if bytes.len() < len as usize {
                    self.done = true;
                    return Ok(damage(pos, CorruptionKind::Truncated));
                }
                let checked = RecordView::validate(bytes, offset).map(|(_, parts)| parts);
                match checked {
                    Ok(parts) => {
                        self.pos += u64::from(len);
                        // Re-borrow: the buffer is unchanged since `get`.
                        let from = (pos - self.buf_start) as usize;
                        Ok(Step::Record { offset, bytes: &self.buf[from..from + len as usize], parts })
                    }
                    Err(kind) => {
                        self.done = true;
                        Ok(damage(pos, kind))
                    }
                }
            }
            Err(kind) => {
                self.done = true;
                Ok(damage(pos, kind))
            }
        }
    }
}
