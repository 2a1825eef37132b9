//! Offline tools over a store directory: [`CommitLog::verify`] and
//! [`CommitLog::dump`]. They only read (with `pread`), take no lock and
//! change nothing, so they can run beside a live writer.

use super::checkpoint::{self, ShutdownState};
use super::record::RecordView;
use super::scan::{list_segments, open_segments, Scanner, Step, COMMITLOG_DIR};
use super::segment::SEGMENT_HEADER_LEN;
use super::CommitLog;
use crate::error::{CorruptionKind, Error, Result};
use crate::offset::PhysicalOffset;
use crate::storage::Storage;
use std::path::{Path, PathBuf};

/// Result of [`CommitLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Records whose CRC and framing were verified.
    pub records: u64,
    /// Offset where the scan stopped.
    pub end: PhysicalOffset,
    /// Damage that recovery would not simply truncate: below the
    /// checkpoint's flushed offset, or anywhere when the checkpoint is
    /// missing or says the store shut down cleanly.
    pub corruption: Option<(PathBuf, u64, CorruptionKind)>,
    /// A torn tail past the last flushed offset of a store that did not
    /// shut down cleanly (or is running): expected after a crash, and
    /// truncated by the next open.
    pub torn_tail: Option<(PathBuf, u64, CorruptionKind)>,
}

impl VerifyReport {
    /// True when no corruption was found.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.corruption.is_none()
    }
}

/// How a dumped record checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordStatus {
    /// CRC and framing verified.
    Ok,
    /// The entry is an end-of-segment marker.
    EndOfSegment,
}

/// One line of [`CommitLog::dump`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpEntry {
    /// Physical offset.
    pub offset: PhysicalOffset,
    /// Size in bytes (for an end marker: the bytes it covers).
    pub size: u32,
    /// Topic (empty for end markers).
    pub topic: String,
    /// Queue id.
    pub queue_id: u32,
    /// Queue offset.
    pub queue_offset: u64,
    /// Store timestamp (ms).
    pub store_timestamp: u64,
    /// Stored CRC.
    pub crc: u32,
    /// Check result.
    pub status: RecordStatus,
}

/// Opens the segments of the store at `root` for reading, without a lock.
fn open_offline(root: &Path, storage: &dyn Storage) -> Result<Vec<super::scan::SegmentFile>> {
    let logdir = root.join(COMMITLOG_DIR);
    if !storage.exists(&logdir).map_err(|e| Error::io("stat", &logdir, e))? {
        return Err(Error::InvalidArgument(format!("{} holds no commit log", root.display())));
    }
    open_segments(storage, &list_segments(storage, &logdir)?, crate::storage::OpenMode::Read)
}

impl CommitLog {
    /// Scans every segment of the store at `dir`, verifying every record's
    /// CRC and framing. Read-only; takes no lock.
    pub fn verify(dir: impl AsRef<Path>, storage: &dyn Storage) -> Result<VerifyReport> {
        let root = dir.as_ref();
        let segs = open_offline(root, storage)?;
        // Damage past the flushed offset of a store that did not shut down
        // cleanly is a torn tail, not corruption.
        let tail_from = match checkpoint::read(storage, root) {
            Ok(Some(cp)) if cp.state == ShutdownState::Running => Some(cp.flushed),
            _ => None,
        };
        let mut report = VerifyReport {
            segments: segs.len(),
            records: 0,
            end: PhysicalOffset(0),
            corruption: None,
            torn_tail: None,
        };
        let Some(first) = segs.first() else {
            return Ok(report);
        };
        let mut scanner = Scanner::new(&segs, first.header.base + SEGMENT_HEADER_LEN as u64, u32::MAX);
        loop {
            match scanner.step()? {
                Step::Record { .. } => report.records += 1,
                Step::Blank { .. } => {}
                Step::End { offset } => {
                    report.end = PhysicalOffset(offset);
                    break;
                }
                Step::Damage { offset, path, pos, kind } => {
                    report.end = PhysicalOffset(offset);
                    if tail_from.is_some_and(|f| offset >= f) {
                        report.torn_tail = Some((path, pos, kind));
                    } else {
                        report.corruption = Some((path, pos, kind));
                    }
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Lists records of the store at `dir` from `from` (0 = the first),
    /// at most `max` of them (0 = all), calling `each` per entry. Stops at
    /// the end of the log or at the first damaged record, which is returned
    /// as an error. Read-only; takes no lock.
    pub fn dump(
        dir: impl AsRef<Path>,
        storage: &dyn Storage,
        from: u64,
        max: u64,
        mut each: impl FnMut(&DumpEntry) -> Result<()>,
    ) -> Result<u64> {
        let root = dir.as_ref();
        let segs = open_offline(root, storage)?;
        let Some(first) = segs.first() else {
            return Ok(0);
        };
        let start = from.max(first.header.base + SEGMENT_HEADER_LEN as u64);
        let mut scanner = Scanner::new(&segs, start, u32::MAX);
        let mut n = 0u64;
        while max == 0 || n < max {
            let entry = match scanner.step()? {
                Step::Record { offset, bytes, parts } => {
                    let (view, _) =
                        RecordView::validate(bytes, offset).map_err(|k| Error::InvalidArgument(k.to_string()))?;
                    DumpEntry {
                        offset: PhysicalOffset(offset),
                        size: bytes.len() as u32,
                        topic: String::from_utf8_lossy(&bytes[parts.topic.0..parts.topic.1]).into_owned(),
                        queue_id: view.queue_id(),
                        queue_offset: view.queue_offset(),
                        store_timestamp: view.store_timestamp(),
                        crc: view.crc(),
                        status: RecordStatus::Ok,
                    }
                }
                Step::Blank { offset, remaining, .. } => DumpEntry {
                    offset: PhysicalOffset(offset),
                    size: remaining,
                    topic: String::new(),
                    queue_id: 0,
                    queue_offset: 0,
                    store_timestamp: 0,
                    crc: 0,
                    status: RecordStatus::EndOfSegment,
                },
                Step::End { .. } => break,
                Step::Damage { path, pos, kind, .. } => return Err(Error::corruption(path, pos, kind)),
            };
            each(&entry)?;
            n += 1;
        }
        Ok(n)
    }
}

/// A valid record met by [`CommitLog::scan_offline`], borrowed from the
/// scan buffer (copy what must outlive the callback).
#[derive(Debug)]
pub(crate) struct ScannedRecord<'b> {
    /// Physical offset of the record.
    pub(crate) offset: u64,
    /// The whole encoded record, CRC already verified.
    pub(crate) bytes: &'b [u8],
    /// Topic name.
    pub(crate) topic: &'b str,
    /// Queue id.
    pub(crate) queue_id: u32,
    /// Queue offset.
    pub(crate) queue_offset: u64,
}

/// Header fields and part ranges of a record decoded by
/// [`CommitLog::decode_encoded`].
#[derive(Debug, Clone)]
pub(crate) struct DecodedRecord {
    pub(crate) queue_id: u32,
    pub(crate) queue_offset: u64,
    pub(crate) flag: u32,
    pub(crate) sysflag: u32,
    pub(crate) born_timestamp: u64,
    pub(crate) store_timestamp: u64,
    pub(crate) reconsume_times: u32,
    pub(crate) crc: u32,
    pub(crate) topic: std::ops::Range<usize>,
    pub(crate) properties: std::ops::Range<usize>,
    pub(crate) body: std::ops::Range<usize>,
}

impl CommitLog {
    /// Calls `each` for every valid record of the store at `dir`, in log
    /// order, until it returns `Ok(false)`. Read-only (`pread` through
    /// `storage`); takes no lock, so it may run beside a live writer.
    ///
    /// The scan ends quietly at the end of the written log and at a torn
    /// tail: damage at or past the flushed offset of a checkpoint that says
    /// the store is running (or crashed), which is what a record being
    /// written by a live writer looks like. Any other damage is returned as
    /// [`Error::Corruption`] after the records before it were passed on.
    pub(crate) fn scan_offline(
        dir: &Path,
        storage: &dyn Storage,
        mut each: impl FnMut(ScannedRecord<'_>) -> Result<bool>,
    ) -> Result<()> {
        // Read before the scan: the flushed offset only grows, so a record
        // completed after this read can only make the tail look torn later.
        let tail_from = match checkpoint::read(storage, dir) {
            Ok(Some(cp)) if cp.state == ShutdownState::Running => Some(cp.flushed),
            _ => None,
        };
        let segs = open_offline(dir, storage)?;
        let Some(first) = segs.first() else {
            return Ok(());
        };
        let mut scanner = Scanner::new(&segs, first.header.base + SEGMENT_HEADER_LEN as u64, u32::MAX);
        loop {
            match scanner.step()? {
                Step::Record { offset, bytes, parts } => {
                    let (view, _) = RecordView::validate(bytes, offset)
                        .map_err(|kind| Error::corruption(COMMITLOG_DIR, offset, kind))?;
                    // Validated as UTF-8 by the scanner.
                    let topic = std::str::from_utf8(&bytes[parts.topic.0..parts.topic.1]).unwrap_or_default();
                    let rec = ScannedRecord {
                        offset,
                        bytes,
                        topic,
                        queue_id: view.queue_id(),
                        queue_offset: view.queue_offset(),
                    };
                    if !each(rec)? {
                        return Ok(());
                    }
                }
                Step::Blank { .. } => {}
                Step::End { .. } => return Ok(()),
                Step::Damage { offset, path, pos, kind } => {
                    if tail_from.is_some_and(|f| offset >= f) {
                        return Ok(());
                    }
                    return Err(Error::corruption(path, pos, kind));
                }
            }
        }
    }

    /// Validates one whole encoded record that sits at physical offset `at`
    /// and decodes its header. Damage is [`Error::Corruption`] whose path is
    /// [`COMMITLOG_DIR`] and whose offset is `at`.
    pub(crate) fn decode_encoded(bytes: &[u8], at: u64) -> Result<DecodedRecord> {
        let (view, parts) =
            RecordView::validate(bytes, at).map_err(|kind| Error::corruption(COMMITLOG_DIR, at, kind))?;
        Ok(DecodedRecord {
            queue_id: view.queue_id(),
            queue_offset: view.queue_offset(),
            flag: view.flag(),
            sysflag: view.sysflag(),
            born_timestamp: view.born_timestamp(),
            store_timestamp: view.store_timestamp(),
            reconsume_times: view.reconsume_times(),
            crc: view.crc(),
            topic: parts.topic.0..parts.topic.1,
            properties: parts.properties.0..parts.properties.1,
            body: parts.body.0..parts.body.1,
        })
    }

    /// Base offset and file length of every segment file of the store at
    /// `dir`, sorted by base. Read-only; takes no lock.
    pub(crate) fn offline_segment_files(dir: &Path, storage: &dyn Storage) -> Result<Vec<(u64, u64)>> {
        let logdir = dir.join(COMMITLOG_DIR);
        if !storage.exists(&logdir).map_err(|e| Error::io("stat", &logdir, e))? {
            return Err(Error::InvalidArgument(format!("{} holds no commit log", dir.display())));
        }
        let listing = list_segments(storage, &logdir)?;
        let mut out = Vec::with_capacity(listing.segments.len());
        for (base, path) in &listing.segments {
            let file =
                storage.open(path, crate::storage::OpenMode::Read).map_err(|e| Error::io("open segment", path, e))?;
            out.push((*base, file.len().map_err(|e| Error::io("stat segment", path, e))?));
        }
        Ok(out)
    }
}
