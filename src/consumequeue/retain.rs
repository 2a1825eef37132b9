//! A consume queue's side of log retention: finding its first live unit,
//! dropping head files whose records are all gone, and starting a queue
//! that is rebuilt after retention at its first surviving position.
//!
//! A queue's stored range `[min_offset, max_offset)` may begin with units
//! whose records retention removed from the commit log (files go only when
//! every unit in them is dead, and never the last file). Its *live head*
//! is the first unit whose record is still stored. Units have strictly
//! increasing physical offsets, but carry no checksum, so it is found by
//! walking forward, never by a search that would trust a unit it skips.

use super::queue::ConsumeQueue;
use super::CqUnit;
use crate::commitlog::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::error::Result;
use crate::offset::QueueOffset;
use std::sync::atomic::Ordering;

impl ConsumeQueue {
    /// The first queue offset whose unit could not lead to a record below
    /// `log_min` (the commit log's retention floor): one pointing at or
    /// past it, or one no removed record could have (starting inside the
    /// log's first segment header, shorter than a record header, or
    /// crossing the floor), which is damaged; `max_offset` when there is
    /// none.
    /// `log_min` must not fall from one call to the next (retention only
    /// raises the floor): units found dead are not read again.
    ///
    /// Walks forward from where the last call stopped and stops at the
    /// first unit that looks live. Units carry no checksum, and a unit
    /// damaged to look dead may sit anywhere in the live range: a binary
    /// search could land on it and step over every live unit before it,
    /// whereas stopping at the first live-looking unit never passes the
    /// true head (a unit wrongly looking live only stops the walk early,
    /// and reading its record reports the damage). Each dead unit is read
    /// about once per process; after retention the dead run is at most
    /// about one file, since files wholly dead are removed.
    #[must_use]
    pub fn live_head(&self, log_min: u64) -> QueueOffset {
        let files = self.files.read();
        let max = self.max.load(Ordering::Acquire);
        let mut at = self.min.load(Ordering::Acquire).max(self.dead_below.load(Ordering::Acquire));
        // `None`: truncated concurrently (recovery only): stop at what we know.
        while at < max && self.unit_locked(&files, at, max).is_some_and(|u| could_be_removed(&u, log_min)) {
            at += 1;
        }
        self.dead_below.fetch_max(at, Ordering::AcqRel);
        QueueOffset(at)
    }
}

/// Whether `u` can be the unit of a record that retention removed below
/// `floor`, a segment base: the record lies wholly below it (records never
/// cross segments), starts past the first segment's header (no record
/// starts below it) and is at least a record header long. A unit failing
/// this is damaged (a zeroed unit, say): a walk stops at it, and reading
/// it reports the damage, so the queue is rebuilt instead of the unit
/// being taken for a removed record.
pub(crate) fn could_be_removed(u: &CqUnit, floor: u64) -> bool {
    let (p, size) = (u.physical_offset.get(), u64::from(u.size));
    p >= SEGMENT_HEADER_LEN as u64
        && size >= RECORD_HEADER_LEN as u64
        && p.checked_add(size).is_some_and(|end| end <= floor)
}

impl ConsumeQueue {
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
    use crate::offset::QueueOffset;
    use std::path::Path;

    /// Writes physical offset `physical` over unit `at` of a queue with
    /// four units per file, behind the queue's back (a damaged unit).
    fn damage(root: &Path, at: u64, physical: u64) {
        let path = queue_dir(root, "TopicTest", 3).join(format!("{:020}", at / 4 * 4));
        let mut b = std::fs::read(&path).unwrap();
        let i = usize::try_from(at % 4 * 20).unwrap();
        b[i..i + 8].copy_from_slice(&physical.to_be_bytes());
        std::fs::write(&path, &b).unwrap();
    }

    /// Units are `1000 + 100 i`. A unit in the live range damaged to look
    /// dead does not move the live head past the live units before it (a
    /// binary search probes it first and answers 7), and a later call
    /// resumes where the last one stopped.
    #[test]
    fn a_damaged_unit_in_the_live_range_hides_nothing_before_it() {
        let tmp = tempfile::tempdir().unwrap();
        let q = open(tmp.path(), 4);
        fill(&q, 12);
        damage(tmp.path(), 6, 1000);
        assert_eq!(q.get(QueueOffset(6)).map(|u| u.physical_offset.0), Some(1000));
        assert_eq!(q.live_head(1300), QueueOffset(3), "units 3, 4 and 5 lead to stored records");
        assert_eq!(q.live_head(1500), QueueOffset(5));
        assert_eq!(q.dead_below.load(std::sync::atomic::Ordering::Acquire), 5);
        // Truncation takes the remembered position down with the units.
        q.truncate_from(QueueOffset(4)).unwrap();
        assert_eq!(q.live_head(1500), QueueOffset(4));
        fill(&q, 12);
        assert_eq!(q.live_head(1300), QueueOffset(4));
        assert_eq!(q.live_head(0), QueueOffset(4), "every unit below 4 was seen dead");
    }

    /// A dead-looking unit that no removed record could have (zeroed, or
    /// crossing the floor, a segment base) stops the walk: reading it
    /// reports the damage instead of the walk stepping over it.
    #[test]
    fn the_walk_stops_at_a_unit_no_removed_record_could_have() {
        let tmp = tempfile::tempdir().unwrap();
        let q = open(tmp.path(), 4);
        fill(&q, 12);
        damage(tmp.path(), 1, 0);
        assert_eq!(q.live_head(1300), QueueOffset(1), "offset 0 is inside the first segment's header");
        let tmp = tempfile::tempdir().unwrap();
        let q = open(tmp.path(), 4);
        fill(&q, 12);
        assert_eq!(q.live_head(1250), QueueOffset(2), "unit 2 (1200 + 100) would cross the floor");
    }

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
        damage(tmp.path(), 7, 1000);
        assert_eq!(q.get(QueueOffset(7)).map(|u| u.physical_offset.0), Some(1000));
        assert_eq!(q.head_after_removal(1550), 4, "unit 6 (1600) still leads to a stored record");
        assert_eq!(q.head_after_removal(1800), 8);
    }
}
