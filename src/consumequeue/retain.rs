//! A consume queue's side of log retention: finding its first live unit,
//! dropping head files whose records are all gone, and starting a queue
//! that is rebuilt after retention at its first surviving position.
//!
//! A queue's stored range `[min_offset, max_offset)` may begin with units
//! whose records retention removed from the commit log (files go only when
//! every unit in them is dead, and never the last file). Its *live head*
//! is the first unit whose record is still stored; units have strictly
//! increasing physical offsets, so it is found by binary search.

use super::queue::ConsumeQueue;
use crate::error::Result;
use crate::offset::QueueOffset;
use std::sync::atomic::Ordering;

impl ConsumeQueue {
    /// The first queue offset whose record starts at or after `log_min`
    /// (the commit log's first stored offset); `max_offset` when none does.
    #[must_use]
    pub fn live_head(&self, log_min: u64) -> QueueOffset {
        let (mut lo, mut hi) = (self.min_offset().0, self.max_offset().0);
        // Fast path: nothing of this queue was removed.
        if self.get(QueueOffset(lo)).is_none_or(|u| u.physical_offset.0 >= log_min) {
            return QueueOffset(lo);
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(QueueOffset(mid)) {
                Some(u) if u.physical_offset.0 < log_min => lo = mid + 1,
                Some(_) => hi = mid,
                // Concurrently truncated (recovery only): stop at what we know.
                None => break,
            }
        }
        QueueOffset(lo)
    }

    /// The first offset the queue would keep if its files wholly below
    /// `log_min` were removed: the first unit of the first file that holds
    /// a live unit, or of the last file (never removed).
    #[must_use]
    pub(crate) fn head_after_removal(&self, log_min: u64) -> u64 {
        let files = self.files.read();
        let max = self.max.load(Ordering::Acquire);
        let ups = self.units_per_file;
        let mut keep = files.last().map_or(self.min.load(Ordering::Acquire), |f| f.first);
        for f in files.iter().rev().skip(1) {
            // The file's last unit: every unit of a non-last file is stored.
            let last = (f.first + ups - 1).min(max.saturating_sub(1));
            let is_live = |at| self.unit_locked(&files, at, max).is_some_and(|u| u.physical_offset.0 >= log_min);
            // Units carry no checksum: a damaged last unit could make a file
            // that still leads to stored records look dead. Before a file
            // goes, every unit of it must be dead (this reads only the file
            // that would go first, once).
            let live = is_live(last) || (f.first..last).rev().any(is_live);
            if !live {
                break;
            }
            keep = f.first;
        }
        keep
    }

    /// Removes the head files that lie wholly below queue offset `head`
    /// (as [`ConsumeQueue::head_after_removal`] chose), lowest first, so an
    /// interrupted removal leaves a contiguous run. Returns how many went.
    pub(crate) fn remove_head_files(&self, head: u64) -> Result<usize> {
        let _w = self.writer.lock();
        let doomed: Vec<_> = {
            let mut files = self.files.write();
            let n = files.iter().take(files.len().saturating_sub(1)).take_while(|f| f.first < head).count();
            let doomed: Vec<_> = files.drain(..n).collect();
            if let Some(f) = files.first() {
                self.min.store(f.first, Ordering::Release);
            }
            doomed
        };
        let n = doomed.len();
        self.remove_files(doomed.iter().map(|f| f.path.as_path()))?;
        Ok(n)
    }

    /// Starts an empty queue (no files) at `offset` instead of 0: a queue
    /// rebuilt after retention removed the records before `offset`. Its
    /// first file will be named by `offset`.
    pub(crate) fn start_at(&self, offset: u64) -> bool {
        let mut w = self.writer.lock();
        let files = self.files.write();
        if !files.is_empty() || self.max.load(Ordering::Acquire) != 0 {
            return false;
        }
        w.flushed = offset;
        self.min.store(offset, Ordering::Release);
        self.max.store(offset, Ordering::Release);
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::consumequeue::queue::queue_dir;
    use crate::consumequeue::queue::tests::{fill, open};

    /// Units are `1000 + 100 i`, four per file. A file goes only when every
    /// unit of it leads below the floor, even if its last unit was damaged
    /// to say so.
    #[test]
    fn a_damaged_last_unit_does_not_condemn_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let q = open(tmp.path(), 4);
        fill(&q, 12);
        // Below 1550 the records of units 0..=5 are gone.
        assert_eq!(q.head_after_removal(1550), 4);
        assert_eq!(q.head_after_removal(1800), 8);
        // Unit 7 (the second file's last, 1700) now says 1000.
        let path = queue_dir(tmp.path(), "TopicTest", 3).join(format!("{:020}", 4));
        let mut b = std::fs::read(&path).unwrap();
        b[3 * 20..3 * 20 + 8].copy_from_slice(&1000u64.to_be_bytes());
        std::fs::write(&path, &b).unwrap();
        assert_eq!(q.get(crate::offset::QueueOffset(7)).map(|u| u.physical_offset.0), Some(1000));
        assert_eq!(q.head_after_removal(1550), 4, "unit 6 (1600) still leads to a stored record");
        assert_eq!(q.head_after_removal(1800), 8);
    }
}
