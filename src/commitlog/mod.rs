//! The commit log: one append-only log shared by all topics, stored as
//! segment files that are preallocated, mapped, and written sequentially.
//!
//! * Records never span segments: when a record does not fit, an
//!   end-of-segment marker fills the rest and the log rolls to the next
//!   segment (prepared ahead of time by the `mqstore:prealloc` thread).
//! * [`FlushMode::Sync`] is group commit: an append returns after a flush
//!   that covers it, and one flush serves every appender waiting at the
//!   time. [`FlushMode::Async`] flushes from the `mqstore:flush` thread.
//! * A failed flush fences the log: every waiting and later append fails
//!   with [`Error::Fenced`] until the log is reopened.
//! * Opening takes the directory lock first, then recovers: it scans from
//!   the checkpoint, verifies every record's CRC, zeroes and syncs a torn
//!   tail, and never serves a byte past the recovered end.
//!
//! ```
//! use mqstore::commitlog::{CommitLog, CommitLogOptions, RecordDraft};
//! # fn main() -> mqstore::Result<()> {
//! let dir = tempfile::tempdir().map_err(|e| mqstore::Error::InvalidArgument(e.to_string()))?;
//! let log = CommitLog::open(dir.path(), CommitLogOptions::default().segment_size(1 << 20).max_record_size(64 << 10))?;
//! let at = log.append(&RecordDraft { topic: "orders", body: b"hello", ..Default::default() })?;
//! let rec = log.read(at.offset)?;
//! assert_eq!(&rec.body()[..], b"hello");
//! log.close()?;
//! # Ok(())
//! # }
//! ```

mod checkpoint;
mod flush;
mod options;
mod prealloc;
mod read;
mod record;
mod recovery;
mod replica;
mod resident;
mod retain;
mod scan;
mod segment;
mod tools;
pub(crate) mod wake;
pub(crate) mod walk;
mod write_behind;
mod writer;

pub(crate) use checkpoint::read as read_checkpoint;
pub use checkpoint::{
    Checkpoint, RecordMark, ShutdownState, CHECKPOINT_FILE, CHECKPOINT_LEN, CHECKPOINT_MAGIC, CHECKPOINT_VERSION,
};
pub use options::{CommitLogOptions, FlushMode, Preallocation, RecoveryMode, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
pub use read::Record;
#[cfg(feature = "fuzzing")]
pub(crate) use record::{parse_prefix, Prefix};
pub(crate) use record::{Parts, RecordView};
pub use record::{
    RecordDraft, BLANK_LEN, BLANK_MAGIC, MAX_PROPERTIES_LEN, MAX_RECORD_LEN_LIMIT, MAX_TOPIC_LEN, RECORD_HEADER_LEN,
    RECORD_MAGIC,
};
pub use recovery::{CheckpointUse, RecoveryReport, Truncation};
pub(crate) use replica::run_topics;
pub use scan::COMMITLOG_DIR;
pub use segment::{SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SEGMENT_VERSION};
pub use tools::{DumpEntry, RecordStatus, VerifyReport};
pub(crate) use writer::ReadCache;

use crate::error::{Error, Result};
use crate::offset::PhysicalOffset;
use crate::storage::LockGuard;
use parking_lot::{Condvar, Mutex, RwLock};
use segment::Segment;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Name of the directory lock file inside the store directory.
pub const LOCK_FILE: &str = "LOCK";

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Physical offset of the record.
    pub offset: PhysicalOffset,
    /// Encoded size in bytes.
    pub size: u32,
    /// Store timestamp written into the record (ms).
    pub store_timestamp: u64,
    /// The record's CRC.
    pub crc: u32,
}

impl Appended {
    /// Offset one past the record.
    #[must_use]
    pub fn end(&self) -> PhysicalOffset {
        PhysicalOffset(self.offset.0 + u64::from(self.size))
    }
}

/// A handle to an open commit log. Cheap to clone; all clones share one log.
#[derive(Clone, Debug)]
pub struct CommitLog {
    handle: Arc<Handle>,
}

/// Owns the background threads; dropping the last handle closes the log on
/// a best-effort basis.
#[derive(Debug)]
struct Handle {
    core: Arc<Core>,
    services: Mutex<Option<flush::Services>>,
}

/// Records the reason the log refuses writes.
#[derive(Debug, Default)]
pub(crate) struct Fence {
    on: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Fence {
    #[inline]
    pub(crate) fn check(&self) -> Result<()> {
        if self.on.load(Ordering::Acquire) {
            return Err(self.error());
        }
        Ok(())
    }

    #[cold]
    fn error(&self) -> Error {
        Error::Fenced { reason: self.reason.lock().clone().unwrap_or_default() }
    }

    pub(crate) fn set(&self, reason: String) {
        let mut r = self.reason.lock();
        if r.is_none() {
            *r = Some(reason);
        }
        self.on.store(true, Ordering::Release);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }
}

/// Writer-side state, guarded by the append lock.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) active: Arc<Segment>,
    /// Next write position inside `active`.
    pub(crate) pos: u64,
    /// The last record written.
    pub(crate) last: Option<checkpoint::RecordMark>,
    /// Store timestamps never go backwards in log order.
    pub(crate) last_store_ts: u64,
    /// Offset up to which prefaulting has been requested.
    pub(crate) prefault_requested: u64,
    /// The segment after `active` has been asked for.
    pub(crate) next_requested: bool,
    /// Records waiting to be committed ([`FlushMode::Sync`] only).
    pub(crate) staged: Staged,
}

/// Encoded bytes not yet written to their files, as runs of contiguous
/// physical offsets (a segment roll starts a new run).
#[derive(Debug, Default)]
pub(crate) struct Staged {
    pub(crate) buf: Vec<u8>,
    /// (physical offset, start index in `buf`) of each run.
    pub(crate) runs: Vec<(u64, usize)>,
}

impl Staged {
    /// The buffer to append the bytes for physical `offset` to (starting a
    /// new run unless `offset` continues the last one).
    pub(crate) fn at(&mut self, offset: u64) -> &mut Vec<u8> {
        let start = self.buf.len();
        let contiguous = self.runs.last().is_some_and(|&(o, s)| o + (start - s) as u64 == offset);
        if !contiguous {
            self.runs.push((offset, start));
        }
        &mut self.buf
    }

    /// Each run as (physical offset, bytes).
    pub(crate) fn runs(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.runs.iter().enumerate().map(|(i, &(off, start))| {
            let stop = self.runs.get(i + 1).map_or(self.buf.len(), |r| r.1);
            (off, &self.buf[start..stop])
        })
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.runs.clear();
    }
}

/// State shared by the handle and the background threads.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) root: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) opts: CommitLogOptions,
    pub(crate) segments: RwLock<Vec<Arc<Segment>>>,
    pub(crate) writer: Mutex<Writer>,
    /// End of the last complete record (published with Release after the
    /// bytes are in the mapping).
    pub(crate) written: AtomicU64,
    /// Everything below this offset is durable.
    pub(crate) flushed: AtomicU64,
    /// [`FlushMode::Async`]: write-behind has released and started the
    /// writeback of everything below this offset (see `write_behind`).
    pub(crate) write_behind: AtomicU64,
    /// [`FlushMode::Sync`]: end of the staged (not yet committed) records.
    pub(crate) staged_end: AtomicU64,
    /// The log's end when it was opened: every record at or above it was
    /// encoded from memory by this process, or validated on receipt by a
    /// replica, before it became readable (see [`CommitLog::visit_appended`]).
    pub(crate) opened_at: u64,
    pub(crate) fence: Fence,
    pub(crate) flush_state: Mutex<flush::FlushState>,
    /// Signalled when the flushed offset moves or the log is fenced.
    pub(crate) flush_cv: Condvar,
    /// Wakes the `mqstore:flush` thread (work to do, or stop).
    pub(crate) work_cv: Condvar,
    /// Serialises [`FlushMode::Sync`] commits.
    pub(crate) commit_lock: Mutex<()>,
    /// [`FlushMode::Sync`]: threads inside an append call right now.
    pub(crate) sync_appenders: std::sync::atomic::AtomicUsize,
    /// [`FlushMode::Sync`]: threads waiting for their commit right now.
    pub(crate) sync_waiters: std::sync::atomic::AtomicUsize,
    /// [`FlushMode::Sync`]: where waiting appenders sleep; bumped by every
    /// commit and by fencing.
    pub(crate) committed: wake::Broadcast,
    /// [`FlushMode::Sync`]: appenders the last commit released that have
    /// not entered a new append yet (see `Core::gather`).
    pub(crate) returning: std::sync::atomic::AtomicUsize,
    /// [`FlushMode::Sync`]: running average of bytes per commit.
    pub(crate) commit_bytes_avg: AtomicU64,
    pub(crate) closed: AtomicBool,
    pub(crate) prealloc: prealloc::Prealloc,
    pub(crate) checkpoint_generation: AtomicU64,
    /// Flushed offset recorded by the last checkpoint written successfully
    /// (`u64::MAX` until the first one). The flush thread compares against
    /// this, not against a value it read when it started: a thread started
    /// late (a loaded machine) would otherwise take a flush that happened
    /// before it ran as already checkpointed and never write it.
    pub(crate) checkpointed: AtomicU64,
    pub(crate) lock: Mutex<Option<Box<dyn LockGuard>>>,
    /// Told after the flush thread publishes committed records (Sync mode),
    /// so a follower such as the store's dispatcher need not poll.
    pub(crate) on_publish: RwLock<Option<HookSlot>>,
}

impl CommitLog {
    /// Opens (creating if needed) the commit log of the store directory
    /// `dir`, taking its lock first and recovering after a crash.
    ///
    /// Fails with [`Error::Locked`] if another handle, in this or another
    /// process, has the directory open (after retrying for 200 ms: a child
    /// process forked while the lock file was open shares the lock until it
    /// execs, so a lock just released can look held for a moment).
    pub fn open(dir: impl AsRef<Path>, opts: CommitLogOptions) -> Result<Self> {
        Self::open_with_report(dir, opts).map(|(log, _)| log)
    }

    /// Like [`CommitLog::open`], also returning what recovery did.
    pub fn open_with_report(dir: impl AsRef<Path>, opts: CommitLogOptions) -> Result<(Self, RecoveryReport)> {
        opts.validate()?;
        let (core, report) = recovery::open(dir.as_ref(), opts)?;
        let core = Arc::new(core);
        let services = flush::Services::start(&core)?;
        let log = Self { handle: Arc::new(Handle { core, services: Mutex::new(Some(services)) }) };
        Ok((log, report))
    }

    /// Appends one record. Under [`FlushMode::Sync`] returns only once the
    /// record is durable; on a flush timeout returns [`Error::Timeout`] (the
    /// record was written but durability is unconfirmed).
    pub fn append(&self, draft: &RecordDraft<'_>) -> Result<Appended> {
        let core = &self.handle.core;
        let _in_flight = core.enter_append();
        let mut out = None;
        let end = core.append_batch(std::slice::from_ref(draft), |_, d| d.queue_offset, |a| out = Some(a))?;
        core.after_append(end)?;
        // A match, not `ok_or`: that builds (and drops) an Error on every
        // successful append.
        match out {
            Some(a) => Ok(a),
            None => Err(Error::Closed),
        }
    }

    /// Appends several records contiguously, in order and in one segment
    /// (they must fit in one together), under one lock acquisition and with
    /// one durability wait under [`FlushMode::Sync`]. An error (invalid
    /// record, too large, full disk) writes none of them. A crash during
    /// the call may leave a prefix of the batch; the call had not returned,
    /// so none of it was acknowledged.
    pub fn append_batch(&self, drafts: &[RecordDraft<'_>]) -> Result<Vec<Appended>> {
        let core = &self.handle.core;
        let _in_flight = core.enter_append();
        let mut out = Vec::with_capacity(drafts.len());
        let end = core.append_batch(drafts, |_, d| d.queue_offset, |a| out.push(a))?;
        core.after_append(end)?;
        Ok(out)
    }

    /// Registers `hook` to run (on the flush thread) each time a Sync-mode
    /// commit makes records readable. Under Async flush records are
    /// readable when their append returns, so the appender knows already.
    pub(crate) fn set_publish_hook(&self, hook: PublishHook) {
        *self.handle.core.on_publish.write() = Some(HookSlot(hook));
    }

    /// Calls `f` with the record at `offset` borrowed in place: the buffer
    /// holding it, its start in that buffer, its validated view and parts.
    /// Shares `cache` with the other reads of a batch; no allocation when
    /// the cache already covers the record.
    /// `checksums` says whether the record's CRC is checked; its framing
    /// always is.
    #[inline]
    pub(crate) fn visit_cached<R>(
        &self,
        cache: &mut ReadCache,
        offset: PhysicalOffset,
        checksums: Checksums,
        f: impl FnOnce(&bytes::Bytes, usize, RecordView<'_>, &Parts) -> R,
    ) -> Result<R> {
        self.handle.core.visit_cached(cache, offset.get(), checksums, f)
    }

    /// Where the next record will be written: past every record appended
    /// so far, including ones not yet published (staged under
    /// [`FlushMode::Sync`]).
    pub(crate) fn append_end(&self) -> PhysicalOffset {
        let w = self.handle.core.writer.lock();
        PhysicalOffset(w.active.base + w.pos)
    }

    /// Like [`CommitLog::append_batch`], with each record's queue offset
    /// chosen by `assign` under the append lock, in log order, only once
    /// the write can no longer fail (see `Core::append_batch`). The store
    /// numbers consume-queue positions this way.
    ///
    /// The outer error means nothing was written. Otherwise the records
    /// were written and the inner result is the durability wait's:
    /// [`Error::Timeout`] (written, not yet confirmed durable) or
    /// [`Error::Fenced`] (written, will never be confirmed).
    ///
    /// With [`Durability::NoWait`] the call returns as soon as the records
    /// are written (staged, under [`FlushMode::Sync`]; the flush thread
    /// commits them, and they become readable only then).
    ///
    /// Where each record went is appended to `out` (a caller sending one
    /// message at a time reuses its vector).
    pub(crate) fn append_batch_assigned(
        &self,
        drafts: &[RecordDraft<'_>],
        wait: Durability,
        assign: impl FnMut(usize, &RecordDraft<'_>) -> u64,
        out: &mut Vec<Appended>,
    ) -> Result<Result<()>> {
        let core = &self.handle.core;
        let _in_flight = core.enter_append();
        out.reserve(drafts.len());
        let end = core.append_batch(drafts, assign, |a| out.push(a))?;
        match wait {
            Durability::Wait => Ok(core.after_append(end)),
            Durability::NoWait => {
                if core.opts.flush_mode == FlushMode::Sync {
                    core.request_commit();
                }
                Ok(Ok(()))
            }
        }
    }

    /// Flushes everything appended so far and returns the durable end.
    pub fn flush(&self) -> Result<PhysicalOffset> {
        let core = &self.handle.core;
        core.ensure_open()?;
        match core.opts.flush_mode {
            FlushMode::Async => core.flush_through(core.written.load(Ordering::Acquire), None),
            FlushMode::Sync => core.wait_committed(core.staged_end.load(Ordering::Acquire), None),
        }
        .map(PhysicalOffset)
    }

    /// Reads the record starting at `offset`, which must have been returned
    /// by an append (or found by [`CommitLog::iter`]).
    pub fn read(&self, offset: PhysicalOffset) -> Result<Record> {
        self.handle.core.read(offset.0)
    }

    /// Iterates over records from `from` (clamped to the first record) to
    /// the end of the log as it grows.
    #[must_use]
    pub fn iter(&self, from: PhysicalOffset) -> read_iter::Iter {
        read_iter::Iter::new(self.handle.core.clone(), from.0)
    }

    /// Calls `f` with each record from `from` to the end of the log, in
    /// order, for dispatch, which reads back the records this process has
    /// just appended. Records are borrowed from `cache` (no owner or segment
    /// lookup per record), and records at or above the log's end at open
    /// are not CRC-checked again (their framing still is): this process
    /// encoded them from memory (or a replica checked them on receipt)
    /// before they became readable, so the check could only find memory
    /// damaged since; it cost about 190 instructions per 128-byte record
    /// and 800 per 1 KiB one. Records from before the open, which came from
    /// disk, and every read handed to a caller are checked as always.
    ///
    /// `f` gets each record's offset and stops the walk by returning
    /// `Break` (that record counts as visited). Returns the offset after
    /// the last record visited (`from`, clamped to the first record, if
    /// none); the first error stops the walk and is returned.
    pub(crate) fn visit_appended(
        &self,
        cache: &mut ReadCache,
        from: PhysicalOffset,
        f: impl FnMut(u64, RecordView<'_>, &Parts) -> Result<std::ops::ControlFlow<()>>,
    ) -> Result<u64> {
        self.handle.core.visit_from(cache, from.0, Checksums::SkipAppended, f)
    }

    /// Offset of the first record still stored.
    #[must_use]
    pub fn min_offset(&self) -> PhysicalOffset {
        PhysicalOffset(self.handle.core.min_offset())
    }

    /// Offset one past the last appended record.
    #[must_use]
    pub fn max_offset(&self) -> PhysicalOffset {
        PhysicalOffset(self.handle.core.written.load(Ordering::Acquire))
    }

    /// Every byte below this offset is durable.
    #[must_use]
    pub fn flushed_offset(&self) -> PhysicalOffset {
        PhysicalOffset(self.handle.core.flushed.load(Ordering::Acquire))
    }

    /// The end of what readers that must not see undurable data may read:
    /// the flushed offset under [`FlushMode::Sync`], the appended end under
    /// [`FlushMode::Async`].
    #[must_use]
    pub fn confirmed_offset(&self) -> PhysicalOffset {
        let core = &self.handle.core;
        match core.opts.flush_mode {
            FlushMode::Sync => PhysicalOffset(core.flushed.load(Ordering::Acquire)),
            FlushMode::Async => PhysicalOffset(core.written.load(Ordering::Acquire)),
        }
    }

    /// Number of segment files.
    #[must_use]
    pub fn segment_count(&self) -> usize {
        self.handle.core.segments.read().len()
    }

    /// Fences the log (and so the store) if `e` is a failed sync of any
    /// file the store keeps, not only the log's own: after a failed fsync
    /// the kernel may have dropped the dirty pages, so nothing written
    /// since can be promised any more.
    pub(crate) fn fence_if_sync_failed(&self, e: &Error, what: &str) {
        self.handle.core.fence_if_sync_failed(e, what);
    }

    /// Whether an earlier failure fenced the log.
    #[must_use]
    pub fn is_fenced(&self) -> bool {
        self.handle.core.fence.is_set()
    }

    /// The store directory.
    #[must_use]
    pub fn store_dir(&self) -> &Path {
        &self.handle.core.root
    }

    /// Stops the background threads, flushes, writes a clean-shutdown
    /// checkpoint and releases the directory lock. Later calls on any clone
    /// fail with [`Error::Closed`]. Returns the first error met (a fenced
    /// log closes without marking a clean shutdown).
    pub fn close(&self) -> Result<()> {
        self.handle.close()
    }
}

impl Handle {
    fn close(&self) -> Result<()> {
        let services = self.services.lock().take();
        let Some(services) = services else {
            return Ok(());
        };
        let core = &self.core;
        core.closed.store(true, Ordering::Release);
        let stopped = services.stop(core);
        let result = stopped.and_then(|()| core.shutdown());
        // Release the lock even when shutdown failed: the process is done
        // with the directory either way.
        core.lock.lock().take();
        result
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Best effort; an explicit close() reports errors.
        let _ = self.close();
    }
}

mod read_iter {
    //! [`Iter`], a forward iterator over the live log.
    use super::{Checksums, Core, Record};
    use crate::error::Result;
    use std::sync::Arc;

    /// Iterator returned by [`CommitLog::iter`](super::CommitLog::iter).
    #[derive(Debug)]
    pub struct Iter {
        core: Arc<Core>,
        next: u64,
        failed: bool,
    }

    impl Iter {
        pub(super) fn new(core: Arc<Core>, from: u64) -> Self {
            let next = from.max(core.min_offset());
            Self { core, next, failed: false }
        }

        /// Offset the next call will read from.
        #[must_use]
        pub fn position(&self) -> crate::offset::PhysicalOffset {
            crate::offset::PhysicalOffset(self.next)
        }
    }

    impl Iterator for Iter {
        type Item = Result<Record>;

        fn next(&mut self) -> Option<Self::Item> {
            if self.failed {
                return None;
            }
            match self.core.read_next(self.next, Checksums::Verify) {
                Ok(Some(rec)) => {
                    self.next = rec.end().get();
                    Some(Ok(rec))
                }
                Ok(None) => None,
                Err(e) => {
                    self.failed = true;
                    Some(Err(e))
                }
            }
        }
    }
}

pub use read_iter::Iter;

/// Whether a read checks each record's CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checksums {
    /// Every record (what every read handed to a caller does).
    Verify,
    /// Not for records at or above [`Core::opened_at`] (see
    /// [`CommitLog::visit_appended`]); framing is checked either way.
    SkipAppended,
    /// Framing only, for every record: the pulls of a store opened with
    /// [`ReadChecksums::Skip`](crate::store::ReadChecksums::Skip).
    Skip,
}

/// Called after newly committed records become readable.
pub(crate) type PublishHook = Box<dyn Fn() + Send + Sync>;

/// A [`PublishHook`] in a field of a `Debug` struct.
pub(crate) struct HookSlot(pub(crate) PublishHook);

impl std::fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookSlot")
    }
}

/// Whether an append waits for the durability its flush mode promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Return once durable (Sync) or written (Async).
    Wait,
    /// Return once written; under Sync the flush thread commits later.
    NoWait,
}

/// Counts a thread inside a [`FlushMode::Sync`] append for its lifetime.
pub(crate) struct InFlight<'a>(Option<&'a std::sync::atomic::AtomicUsize>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0 {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Core {
    pub(crate) fn enter_append(&self) -> InFlight<'_> {
        if self.opts.flush_mode == FlushMode::Sync {
            self.sync_appenders.fetch_add(1, Ordering::AcqRel);
            // One of the appenders the last commit released is back (or a
            // new one arrived: either way one fewer to wait for).
            let _ = self.returning.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            InFlight(Some(&self.sync_appenders))
        } else {
            InFlight(None)
        }
    }

    #[inline]
    pub(crate) fn ensure_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.fence.check()
    }

    pub(crate) fn min_offset(&self) -> u64 {
        self.segments
            .read()
            .first()
            .map_or(segment::SEGMENT_HEADER_LEN as u64, |s| s.base + segment::SEGMENT_HEADER_LEN as u64)
    }

    /// The segment containing `offset`, if still stored.
    pub(crate) fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read();
        let idx = segs.partition_point(|s| s.base <= offset);
        let seg = segs.get(idx.checked_sub(1)?)?;
        (offset < seg.end()).then(|| seg.clone())
    }
}
