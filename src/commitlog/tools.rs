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
    open_segments(storage, &list_segments(storage, &logdir)?)
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
