//! [`CommitLogOptions`]: every knob with its default and bounds, validated by
//! [`CommitLogOptions::validate`] when the log opens.

use super::record::{BLANK_LEN, MAX_RECORD_LEN_LIMIT, RECORD_HEADER_LEN};
use super::segment::SEGMENT_HEADER_LEN;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::storage::{StdStorage, Storage};
use std::sync::Arc;
use std::time::Duration;

/// Largest accepted segment size (64 GiB).
pub const MAX_SEGMENT_SIZE: u64 = 64 << 30;
/// Smallest accepted segment size (4 KiB; useful only in tests).
pub const MIN_SEGMENT_SIZE: u64 = 4 << 10;

/// When appended records reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushMode {
    /// Appends return once the record is in the page cache; a background
    /// thread flushes on an interval (RocketMQ's `ASYNC_FLUSH`). A process
    /// crash loses nothing; a power loss may lose the last interval.
    #[default]
    Async,
    /// Group commit: an append returns only after a flush covering it
    /// (RocketMQ's `SYNC_FLUSH`). One flush serves every waiting appender.
    Sync,
}

/// What recovery does with damage it finds after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Truncate the log at the first invalid record after the last
    /// checkpoint (a torn tail is the expected result of a crash).
    #[default]
    TolerateTailCorruption,
    /// Refuse to open with [`Error::Corruption`] on any invalid record,
    /// including a torn tail; an operator decides.
    AbsoluteConsistency,
}

/// How new segments are prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preallocation {
    /// A background thread creates the next segment ahead of time and
    /// prefaults pages ahead of the writer, so appends never pay for file
    /// creation or first-touch page faults.
    #[default]
    Background,
    /// Segments are created by the appending thread when it rolls, and no
    /// pages are prefaulted. Deterministic I/O, for fault-injection tests.
    OnRoll,
}

/// Options for [`CommitLog::open`](super::CommitLog::open).
///
/// ```
/// use mqstore::commitlog::{CommitLogOptions, FlushMode};
/// let opts = CommitLogOptions::default()
///     .segment_size(64 << 20)
///     .flush_mode(FlushMode::Sync);
/// assert_eq!(opts.get_segment_size(), 64 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct CommitLogOptions {
    pub(crate) segment_size: u64,
    pub(crate) max_record_size: u32,
    pub(crate) flush_mode: FlushMode,
    pub(crate) recovery_mode: RecoveryMode,
    pub(crate) flush_interval: Duration,
    pub(crate) flush_min_bytes: u64,
    pub(crate) flush_thorough_interval: Duration,
    pub(crate) sync_flush_timeout: Duration,
    pub(crate) group_commit_wait: Duration,
    pub(crate) write_behind_chunk: u64,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) preallocation: Preallocation,
    pub(crate) prefault_window: u64,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Recovery cuts the log at this offset (a record boundary) if it
    /// extends past it: a slave dropping a tail its master does not have
    /// (see `crate::replication::truncate_slave`). Not a public option.
    pub(crate) truncate_to: Option<u64>,
}

impl Default for CommitLogOptions {
    fn default() -> Self {
        Self {
            segment_size: 1 << 30,
            max_record_size: (4 << 20) + (64 << 10) + RECORD_HEADER_LEN as u32 + 256,
            flush_mode: FlushMode::Async,
            recovery_mode: RecoveryMode::TolerateTailCorruption,
            flush_interval: Duration::from_millis(500),
            flush_min_bytes: 16 << 10,
            flush_thorough_interval: Duration::from_secs(10),
            sync_flush_timeout: Duration::from_secs(5),
            group_commit_wait: Duration::from_micros(200),
            write_behind_chunk: 1 << 20,
            checkpoint_interval: Duration::from_secs(1),
            preallocation: Preallocation::Background,
            prefault_window: 4 << 20,
            storage: Arc::new(StdStorage),
            clock: Arc::new(SystemClock),
            truncate_to: None,
        }
    }
}

impl CommitLogOptions {
    /// Size of each segment file in bytes. Default 1 GiB; 4 KiB to 64 GiB,
    /// and large enough for one record of `max_record_size` plus the segment
    /// header and end marker. Applies to new segments; existing ones keep the
    /// size in their header.
    #[must_use]
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Largest encoded record accepted, in bytes. Default 4 MiB + 64 KiB +
    /// headers (a 4 MiB body with 64 KiB of topic and properties); at most
    /// 256 MiB. Larger appends fail with [`Error::MessageTooLarge`].
    #[must_use]
    pub fn max_record_size(mut self, bytes: u32) -> Self {
        self.max_record_size = bytes;
        self
    }

    /// When appends become durable. Default [`FlushMode::Async`].
    #[must_use]
    pub fn flush_mode(mut self, mode: FlushMode) -> Self {
        self.flush_mode = mode;
        self
    }

    /// What recovery does with damage. Default
    /// [`RecoveryMode::TolerateTailCorruption`].
    #[must_use]
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// Async mode: how often the flusher wakes. Default 500 ms; 1 ms to 60 s.
    #[must_use]
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = d;
        self
    }

    /// Async mode: flush only when at least this many bytes are dirty, unless
    /// `flush_thorough_interval` has passed. Default 16 KiB (RocketMQ's 4 pages).
    #[must_use]
    pub fn flush_min_bytes(mut self, bytes: u64) -> Self {
        self.flush_min_bytes = bytes;
        self
    }

    /// Async mode: flush whatever is dirty at least this often. Default 10 s;
    /// at least `flush_interval`.
    #[must_use]
    pub fn flush_thorough_interval(mut self, d: Duration) -> Self {
        self.flush_thorough_interval = d;
        self
    }

    /// Sync mode: how long an append waits for its flush before failing with
    /// [`Error::Timeout`] (the record is written, durability unconfirmed).
    /// Default 5 s; 1 ms to 10 min.
    #[must_use]
    pub fn sync_flush_timeout(mut self, d: Duration) -> Self {
        self.sync_flush_timeout = d;
        self
    }

    /// Sync mode: how long the flush thread may wait for appenders that are
    /// inside an append call but have not staged their record yet, or that
    /// the previous commit released and that have not called again yet, so
    /// one `fdatasync` covers them too. A lone appender never waits; a
    /// thread that stops appending costs the next commit this wait once.
    /// Default 200 us; at most 100 ms; zero disables it.
    #[must_use]
    pub fn group_commit_wait(mut self, d: Duration) -> Self {
        self.group_commit_wait = d;
        self
    }

    /// [`FlushMode::Async`]: once this many bytes of complete records sit
    /// behind the writer (past a 256 KiB margin), the flush thread drops
    /// them from the mapping and starts their writeback, so a later flush
    /// finds them written. Durability still comes only from the periodic
    /// flush and [`CommitLog::flush`](super::CommitLog::flush). Default
    /// 1 MiB; 0 disables it; otherwise 64 KiB to 1 GiB, a multiple of 4 KiB.
    #[must_use]
    pub fn write_behind_chunk(mut self, bytes: u64) -> Self {
        self.write_behind_chunk = bytes;
        self
    }

    /// How often the checkpoint (recovery start point) is rewritten.
    /// Default 1 s; 1 ms to 10 min. Recovery after a crash scans the log from
    /// the last checkpoint, so this bounds recovery work.
    #[must_use]
    pub fn checkpoint_interval(mut self, d: Duration) -> Self {
        self.checkpoint_interval = d;
        self
    }

    /// How segments are prepared. Default [`Preallocation::Background`].
    #[must_use]
    pub fn preallocation(mut self, p: Preallocation) -> Self {
        self.preallocation = p;
        self
    }

    /// How many bytes ahead of the writer the background thread keeps
    /// faulted in ([`FlushMode::Async`], which writes through the mapping).
    /// Default 4 MiB; 0 disables prefaulting. A small window is deliberate:
    /// prefaulting far ahead kept the thread busy during the writer's flush
    /// and made a 40 MB final flush 2-4x slower here.
    #[must_use]
    pub fn prefault_window(mut self, bytes: u64) -> Self {
        self.prefault_window = bytes;
        self
    }

    /// The file-system seam. Default [`StdStorage`].
    #[must_use]
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// The time source for store timestamps. Default [`SystemClock`].
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The configured segment size.
    #[must_use]
    pub fn get_segment_size(&self) -> u64 {
        self.segment_size
    }

    /// The configured flush mode.
    #[must_use]
    pub fn get_flush_mode(&self) -> FlushMode {
        self.flush_mode
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::InvalidArgument(format!("{field}: {why}")));
        let ms = Duration::from_millis(1);
        if self.max_record_size < RECORD_HEADER_LEN as u32 + 1 || self.max_record_size > MAX_RECORD_LEN_LIMIT {
            return bad(
                "max_record_size",
                format!("{} is outside {}..={MAX_RECORD_LEN_LIMIT}", self.max_record_size, RECORD_HEADER_LEN + 1),
            );
        }
        let need = SEGMENT_HEADER_LEN as u64 + u64::from(self.max_record_size) + u64::from(BLANK_LEN);
        if self.segment_size < MIN_SEGMENT_SIZE.max(need) || self.segment_size > MAX_SEGMENT_SIZE {
            return bad(
                "segment_size",
                format!(
                    "{} is outside {}..={MAX_SEGMENT_SIZE} (must hold one record of max_record_size)",
                    self.segment_size,
                    MIN_SEGMENT_SIZE.max(need)
                ),
            );
        }
        if !self.segment_size.is_multiple_of(4096) {
            return bad("segment_size", format!("{} is not a multiple of 4096", self.segment_size));
        }
        if self.flush_interval < ms || self.flush_interval > Duration::from_secs(60) {
            return bad("flush_interval", format!("{:?} is outside 1ms..=60s", self.flush_interval));
        }
        if self.flush_thorough_interval < self.flush_interval {
            return bad(
                "flush_thorough_interval",
                format!("{:?} is shorter than flush_interval", self.flush_thorough_interval),
            );
        }
        let wb = self.write_behind_chunk;
        if wb != 0 && (!(64 << 10..=1 << 30).contains(&wb) || !wb.is_multiple_of(4096)) {
            return bad("write_behind_chunk", format!("{wb} is not 0 or a multiple of 4 KiB from 64 KiB to 1 GiB"));
        }
        if self.group_commit_wait > Duration::from_millis(100) {
            return bad("group_commit_wait", format!("{:?} is over 100ms", self.group_commit_wait));
        }
        for (name, d) in
            [("sync_flush_timeout", self.sync_flush_timeout), ("checkpoint_interval", self.checkpoint_interval)]
        {
            if d < ms || d > Duration::from_secs(600) {
                return bad(name, format!("{d:?} is outside 1ms..=10min"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        assert!(CommitLogOptions::default().validate().is_ok());
        let e = CommitLogOptions::default().segment_size(1000).validate().unwrap_err();
        assert!(e.to_string().contains("segment_size"), "{e}");
        let e = CommitLogOptions::default().segment_size(64 << 10).validate().unwrap_err();
        assert!(e.to_string().contains("segment_size"), "{e}");
        let e = CommitLogOptions::default().max_record_size(10).validate().unwrap_err();
        assert!(e.to_string().contains("max_record_size"), "{e}");
        let e = CommitLogOptions::default().flush_interval(Duration::ZERO).validate().unwrap_err();
        assert!(e.to_string().contains("flush_interval"), "{e}");
        let e = CommitLogOptions::default().flush_thorough_interval(Duration::from_millis(2)).validate().unwrap_err();
        assert!(e.to_string().contains("flush_thorough_interval"), "{e}");
        let e = CommitLogOptions::default().group_commit_wait(Duration::from_secs(1)).validate().unwrap_err();
        assert!(e.to_string().contains("group_commit_wait"), "{e}");
        let e = CommitLogOptions::default().sync_flush_timeout(Duration::ZERO).validate().unwrap_err();
        assert!(e.to_string().contains("sync_flush_timeout"), "{e}");
        let ok = CommitLogOptions::default().max_record_size(1024).segment_size(8192);
        assert!(ok.validate().is_ok());
    }
}
