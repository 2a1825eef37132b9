//! Giving mapped commit-log pages back to the kernel, so the resident set
//! of a process with an open log does not grow with the data it stores.
//!
//! Every page the writer, the dispatcher or a reader touches through a
//! segment's mapping stays in the process's resident set for as long as the
//! segment is mapped (the whole life of the log, until retention removes
//! the segment). The flush thread therefore drops, on every
//! [`RELEASE_INTERVAL`], the page-table entries of every page below the
//! flushed offset except the last [`KEEP_BEHIND_BYTES`] (see
//! [`MappedRegion::release`](crate::storage::MappedRegion::release)): the
//! pages stay in the page cache, and a later read faults them in again
//! (fault-around maps 16 at a time) for 180-320 ns per 4 KiB page on the
//! development VM; `MADV_POPULATE_READ` ahead of a reader costs about the
//! same per page, so readers do not prefault. A reader more than the kept
//! window behind the writer pays this once per page it reads. So the
//! store's commit-log resident set is bounded by the kept window, the
//! prefault window ahead of the writer, the bytes written between two
//! flushes, and what readers touched since the last release.

use super::Core;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Flushed bytes just below the flushed offset that stay mapped: the
/// dispatcher and readers following the tail read the newest records right
/// after they are written.
pub(crate) const KEEP_BEHIND_BYTES: u64 = 8 << 20;

/// How often the flush thread releases pages.
pub(crate) const RELEASE_INTERVAL: Duration = Duration::from_millis(500);

impl Core {
    /// Releases every page of every segment below `flushed -`
    /// [`KEEP_BEHIND_BYTES`]. Never touches an unflushed byte (not needed
    /// for correctness, since a released page reads back the same, but the
    /// writer is about to store to those pages).
    pub(crate) fn release_resident(&self) {
        let upto = self.flushed.load(Ordering::Acquire).saturating_sub(KEEP_BEHIND_BYTES);
        // Clone the list (a few `Arc`s) so no lock is held across syscalls.
        let segments = self.segments.read().clone();
        for seg in segments.iter().take_while(|s| s.base < upto) {
            // Whole pages only; contents are unchanged (see
            // `MappedRegion::release`).
            seg.release(0, (upto - seg.base) & !4095);
        }
    }
}
