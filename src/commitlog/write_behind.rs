//! Async flush: write-behind of completed chunks while the writer goes on.
//!
//! Without it, pages written through the mapping stay dirty until the next
//! periodic flush (500 ms) or `flush()`, which then writes all of them in
//! one go: a producer that appends and then flushes pays for the whole
//! writeback after its last append. Starting writeback of *mapped* pages
//! early is worse (measured here: 120 -> 840 ns per append), because
//! writeback write-protects every page that a writable mapping still maps,
//! one TLB-shootdown IPI per page, interrupting the appender.
//!
//! So the flush thread, once at least a chunk of completed records sits
//! behind the writer, first drops that range from the mapping
//! (`MADV_DONTNEED`: one TLB flush for the whole range; the dirty pages
//! stay in the page cache and reads fault them back in) and then starts
//! its writeback without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`).
//! The later msync of the range finds it written or in flight.
//!
//! Durability is unchanged: nothing here moves the flushed offset; only
//! msync/fdatasync does.
//!
//! Invariant: every byte below `write_behind` is part of a complete,
//! published record (or segment header or end marker) and is never written
//! through the mapping again.

use super::Core;
use crate::error::Error;
use std::sync::atomic::Ordering;

/// Records this close to the writer's end stay mapped: the dispatcher and
/// tailing consumers read them right after they are written.
const MARGIN: u64 = 256 << 10;
const PAGE: u64 = 4096;

impl Core {
    /// Async appends call this after publishing `[before, end)`: wakes the
    /// flush thread each time the end crosses a chunk boundary (a lock and
    /// a wake per chunk, nothing per append otherwise).
    pub(super) fn note_write_behind(&self, before: u64, end: u64) {
        let chunk = self.opts.write_behind_chunk;
        if chunk != 0 && end / chunk != before / chunk {
            // Under the flush-state lock, so the flush thread cannot miss
            // it between checking for work and waiting.
            let _st = self.flush_state.lock();
            self.work_cv.notify_one();
        }
    }

    /// Whether at least a chunk of completed records waits for
    /// write-behind.
    pub(super) fn write_behind_pending(&self) -> bool {
        let chunk = self.opts.write_behind_chunk;
        chunk != 0 && self.write_behind_limit() >= self.write_behind.load(Ordering::Acquire).saturating_add(chunk)
    }

    fn write_behind_limit(&self) -> u64 {
        (self.written.load(Ordering::Acquire) & !(PAGE - 1)).saturating_sub(MARGIN)
    }

    /// Flush thread: drops whole chunks behind the writer from the mapping
    /// and starts their writeback. A failure to start writeback is an I/O
    /// error on the log's data and fences it (the data may never reach the
    /// disk); a refused `madvise` only loses the optimisation.
    pub(super) fn write_behind(&self) -> crate::error::Result<()> {
        let chunk = self.opts.write_behind_chunk;
        if chunk == 0 {
            return Ok(());
        }
        let from = self.write_behind.load(Ordering::Acquire);
        let limit = self.write_behind_limit();
        if limit < from.saturating_add(chunk) {
            return Ok(());
        }
        let to = from + (limit - from) / chunk * chunk;
        let segs: Vec<_> = self.segments.read().iter().filter(|s| s.end() > from && s.base < to).cloned().collect();
        for seg in segs {
            // Whole pages only; `to` is at most the published end minus
            // the margin, so every page below it is complete.
            let lo = (from.max(seg.base) - seg.base) & !(PAGE - 1);
            let hi = (to.min(seg.end()) - seg.base) & !(PAGE - 1);
            if hi <= lo {
                continue;
            }
            seg.release(lo, hi);
            seg.start_writeback(lo, hi).map_err(|e| self.fence_with(Error::io("sync_file_range", &seg.path, e)))?;
        }
        self.write_behind.fetch_max(to, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::MARGIN;
    use crate::commitlog::{CommitLog, CommitLogOptions, RecordDraft};
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    fn body(i: u64) -> Vec<u8> {
        (0..300u64).map(|k| (i.wrapping_mul(31).wrapping_add(k)) as u8).collect()
    }

    /// The flush thread releases and writes back whole chunks, never closer
    /// to the writer than the margin, and every record still reads back
    /// (through pages faulted in again) before and after a reopen.
    #[test]
    fn releases_whole_chunks_behind_the_writer_and_every_record_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = 64 << 10;
        let opts = || CommitLogOptions::default().segment_size(1 << 20).max_record_size(4096).write_behind_chunk(chunk);
        let log = CommitLog::open(dir.path(), opts()).unwrap();
        let mut at = Vec::new();
        for i in 0..20_000u64 {
            let b = body(i);
            at.push(
                log.append(&RecordDraft { topic: "t", queue_offset: i, body: &b, ..Default::default() })
                    .unwrap()
                    .offset,
            );
        }
        let core = &log.handle.core;
        let written = core.written.load(Ordering::Acquire);
        let deadline = Instant::now() + Duration::from_secs(20);
        while core.write_behind.load(Ordering::Acquire) + chunk + MARGIN + 4096 <= written {
            assert!(Instant::now() < deadline, "write-behind stalled at {:?}", core.write_behind);
            std::thread::sleep(Duration::from_millis(2));
        }
        let behind = core.write_behind.load(Ordering::Acquire);
        // Chunks count from where the log ended at open: its first record.
        let start = at[0].get();
        assert!(behind <= written - MARGIN, "{behind} within the margin of {written}");
        assert_eq!((behind - start) % chunk, 0, "whole chunks only");
        let check = |log: &CommitLog| {
            for (i, &off) in at.iter().enumerate() {
                assert_eq!(log.read(off).unwrap().body(), &body(i as u64)[..], "record {i}");
            }
        };
        check(&log);
        log.close().unwrap();
        let log = CommitLog::open(dir.path(), opts()).unwrap();
        check(&log);
        log.close().unwrap();
    }

    #[test]
    fn chunk_sizes_are_validated() {
        for bad in [4096, (64 << 10) + 1, 2 << 30] {
            assert!(CommitLogOptions::default().write_behind_chunk(bad).validate().is_err(), "{bad}");
        }
        for good in [0, 64 << 10, 1 << 20, 1 << 30] {
            assert!(CommitLogOptions::default().write_behind_chunk(good).validate().is_ok(), "{good}");
        }
    }
}
