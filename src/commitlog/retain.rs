//! Removing the oldest segments (log retention's part inside the commit
//! log; the store decides which and records the new first offset first,
//! see `store::retention`).
//!
//! Invariants:
//! * only whole sealed segments go, oldest first, so the log stays one
//!   contiguous run of segments;
//! * never the active segment, and never one holding a byte at or past the
//!   flushed offset (recovery must still find the log's end after a crash);
//! * a reader that already holds a segment (`Arc<Segment>`) keeps its
//!   mapping until it lets go: unlinking a mapped file is safe on Unix, and
//!   the file is not truncated, so no reader can fault (SIGBUS).

use super::{CommitLog, Core};
use crate::error::{Error, Result};
use crate::offset::PhysicalOffset;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// A sealed segment, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SealedSegment {
    /// Physical offset of its first byte (its header).
    pub(crate) base: u64,
    /// One past its last byte.
    pub(crate) end: u64,
    /// Its file.
    pub(crate) path: PathBuf,
}

impl CommitLog {
    /// Segments retention may remove, oldest first: sealed, below the
    /// active one, and wholly below the flushed offset.
    pub(crate) fn removable_segments(&self) -> Vec<SealedSegment> {
        let core = &self.handle.core;
        let active = core.writer.lock().active.base;
        let flushed = core.flushed.load(Ordering::Acquire);
        core.segments
            .read()
            .iter()
            .take_while(|s| s.base < active && s.end() <= flushed)
            .map(|s| SealedSegment { base: s.base, end: s.end(), path: s.path.clone() })
            .collect()
    }

    /// Base of the first segment, `None` when the log has none.
    pub(crate) fn first_segment_base(&self) -> Option<u64> {
        self.handle.core.segments.read().first().map(|s| s.base)
    }

    /// Retention removed every record below this offset (the first
    /// segment's base; 0 without segments). A reference from here up to
    /// [`CommitLog::min_offset`] points into a segment header, where no
    /// record ever starts: the reference is damaged, nothing was removed.
    pub(crate) fn removed_below(&self) -> PhysicalOffset {
        PhysicalOffset(self.first_segment_base().unwrap_or(0))
    }

    /// Store timestamp of the first record of the segment starting at
    /// `base` (or, if it has none yet, of the first one after it), if one
    /// is readable.
    pub(crate) fn first_timestamp_in(&self, base: u64) -> Result<Option<u64>> {
        let first = base.saturating_add(super::SEGMENT_HEADER_LEN as u64);
        Ok(self.handle.core.read_next(first, super::Checksums::Verify)?.map(|r| r.store_timestamp()))
    }

    /// Removes every segment that ends at or below `floor` (which must be
    /// a segment base), oldest first, then syncs the directory. Returns the
    /// removed segments. The caller has made `floor` durable beforehand, so
    /// a crash in between leaves files the next open removes.
    pub(crate) fn remove_segments_below(&self, floor: u64) -> Result<Vec<SealedSegment>> {
        let core = &self.handle.core;
        core.ensure_open()?;
        let removable = self.removable_segments();
        let doomed: Vec<SealedSegment> = removable.into_iter().take_while(|s| s.end <= floor).collect();
        if doomed.is_empty() {
            return Ok(doomed);
        }
        {
            // Readers look segments up under the read lock: after this no new
            // reader finds them, and ones holding an Arc keep their mapping.
            let mut segs = core.segments.write();
            segs.retain(|s| s.end() > floor);
        }
        remove_files(core, &doomed)?;
        Ok(doomed)
    }
}

fn remove_files(core: &Core, doomed: &[SealedSegment]) -> Result<()> {
    let storage = core.opts.storage.as_ref();
    for s in doomed {
        storage.remove_file(&s.path).map_err(|e| Error::io("remove segment", &s.path, e))?;
    }
    storage.sync_dir(&core.dir).map_err(|e| Error::io("fsync directory", &core.dir, e))
}
