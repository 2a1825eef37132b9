//! Segment preparation off the hot path.
//!
//! The `mqstore:prealloc` thread creates the next segment (allocated,
//! stamped, synced, renamed into place) before the writer needs it, and
//! works ahead of the writer:
//!
//! * [`FlushMode::Async`] writes through the mapping: the thread prefaults
//!   pages so appends do not pay first-touch page faults (about 1.25 us per
//!   4 KiB page on the reference machine).
//! * [`FlushMode::Sync`] writes with `pwrite`: the thread writes zeros ahead
//!   of the committed end and syncs them, turning the `fallocate`d
//!   (unwritten) blocks into written ones, so a commit's `fdatasync` need
//!   not also commit the extent conversion to the journal (measured here:
//!   about 170 us instead of 250 us per small sync, and 16 appending threads
//!   went from about 33k to about 50k acknowledged messages per second).
//!   This is RocketMQ's `warmMappedFile` idea, done incrementally.
//!
//! Under [`Preallocation::OnRoll`] there is no thread: the writer creates
//! segments itself when it rolls.

use super::segment::{Segment, SEGMENT_HEADER_LEN};
use super::{Core, FlushMode, Preallocation};
use crate::error::{Error, Result};
use crate::storage::write_all_at;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Bytes prefaulted per `madvise` call (16 pages, about 50 us of work
/// here). The thread yields between calls: on 2 vCPUs the scheduler let a
/// run of 256 KiB chunks (2.5 ms for a 2 MiB request) keep a core while a
/// woken producer waited for it, and those waits were the producer's
/// worst send latencies.
const PREFAULT_CHUNK: u64 = 64 << 10;
/// How far ahead of the writer prefaulting starts when it has fallen
/// behind.
const PREFAULT_LEAD: u64 = 1 << 20;
/// Bytes of zeros written per step in Sync mode. Each step holds the
/// commit lock for one `pwrite` into the page cache (about 0.1 ms).
const ZERO_CHUNK: u64 = 512 << 10;
/// Sync mode: above this average commit size zero-filling is skipped.
/// Measured, interleaved: 200 KiB commits (1,000 x 128 B batches) ran
/// 10-25 % faster without it (the zeros doubled the bytes written), while
/// 3 KiB commits (16 threads of single appends) ran ~35 % faster with it.
const ZERO_FILL_MAX_COMMIT: u64 = 64 << 10;

#[derive(Debug)]
enum Job {
    /// Make sure the segment starting at this base exists.
    Segment(u64),
    /// Prefault everything up to this offset.
    Prefault(u64),
}

/// Hand-off between the writer and the preparation thread.
#[derive(Debug)]
pub(crate) struct Prealloc {
    /// The prepared next segment. The thread holds this lock while creating
    /// one, so a writer that needs it waits for the creation in progress
    /// instead of racing it on the same file name.
    next: Mutex<Option<Arc<Segment>>>,
    jobs: Mutex<Option<Sender<Job>>>,
}

impl Prealloc {
    pub(crate) fn new() -> Self {
        Self { next: Mutex::new(None), jobs: Mutex::new(None) }
    }

    /// Starts the thread (unless preallocation is `OnRoll`) and asks it for
    /// the segment after the active one and the first prefault window.
    pub(crate) fn start(&self, core: &Arc<Core>) -> Result<Option<JoinHandle<()>>> {
        if core.opts.preallocation == Preallocation::OnRoll {
            return Ok(None);
        }
        // Jobs are hints: when the queue is full the writer just skips one.
        let (tx, rx) = bounded(64);
        *self.jobs.lock() = Some(tx);
        let c = core.clone();
        let handle = std::thread::Builder::new()
            .name("mqstore:prealloc".into())
            .spawn(move || run(&c, &rx))
            .map_err(|e| Error::io("spawn thread", &core.root, e))?;
        let mut w = core.writer.lock();
        if w.pos >= super::writer::prepare_point(w.active.size) {
            w.next_requested = true;
            self.request_segment(w.active.end());
        }
        let upto = core.written.load(Ordering::Acquire) + core.opts.prefault_window;
        if core.opts.prefault_window > 0 {
            w.prefault_requested = upto;
            self.request_prefault(upto);
        }
        Ok(Some(handle))
    }

    /// Disconnects the thread's queue; it exits after its current job.
    pub(crate) fn stop(&self) {
        self.jobs.lock().take();
    }

    fn send(&self, job: Job) {
        if let Some(tx) = self.jobs.lock().as_ref() {
            match tx.try_send(job) {
                Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    pub(crate) fn request_segment(&self, base: u64) {
        self.send(Job::Segment(base));
    }

    pub(crate) fn request_prefault(&self, upto: u64) {
        self.send(Job::Prefault(upto));
    }

    /// The segment at `base`, registered in the log's segment list: the
    /// prepared one if it matches, else created now on the caller's thread.
    ///
    /// Registration happens while the `next` lock is held, so the
    /// preparation thread, which checks the list under the same lock, can
    /// never decide to create a segment the writer already owns.
    pub(crate) fn take_or_create(&self, core: &Core, base: u64) -> Result<Arc<Segment>> {
        let mut slot = self.next.lock();
        let seg = match slot.take() {
            Some(seg) if seg.base == base && seg.size == core.opts.segment_size => seg,
            other => {
                // A segment prepared for a later base stays prepared.
                *slot = other.filter(|s| s.base > base);
                let seg = Segment::create(
                    core.opts.storage.as_ref(),
                    &core.dir,
                    base,
                    core.opts.segment_size,
                    core.opts.clock.as_ref(),
                )
                .inspect_err(|e| core.fence_if_sync_failed(e, "segment creation"))?;
                Arc::new(seg)
            }
        };
        core.segments.write().push(seg.clone());
        Ok(seg)
    }

    fn prepare(&self, core: &Core, base: u64) {
        let mut slot = self.next.lock();
        if slot.as_ref().is_some_and(|s| s.base == base) || core.segment_for(base).is_some() {
            return;
        }
        // A failure here is not reported: the writer retries on its own
        // thread when it rolls and surfaces the error (for example DiskFull).
        match Segment::create(
            core.opts.storage.as_ref(),
            &core.dir,
            base,
            core.opts.segment_size,
            core.opts.clock.as_ref(),
        ) {
            Ok(seg) => *slot = Some(Arc::new(seg)),
            // A failed sync fences (the directory entry may be in an
            // unknown state); anything else the writer meets again, and
            // reports, when it rolls.
            Err(e) => core.fence_if_sync_failed(&e, "segment creation"),
        }
    }

    /// Async mode: prefaults `[from, upto)` and returns how far that range
    /// was covered by existing segments (the rest is retried once the next
    /// segment exists).
    fn prefault(&self, core: &Core, from: u64, upto: u64) -> u64 {
        let mut segs: Vec<Arc<Segment>> =
            core.segments.read().iter().filter(|s| s.end() > from && s.base < upto).cloned().collect();
        if let Some(next) = self.next.lock().as_ref() {
            if next.end() > from && next.base < upto && !segs.iter().any(|s| s.base == next.base) {
                segs.push(next.clone());
            }
        }
        // Segments are contiguous, so the furthest end is the covered end.
        let covered = segs.iter().map(|s| s.end()).max().unwrap_or(from).clamp(from, upto);
        for seg in segs {
            let mut lo = from.max(seg.base) - seg.base;
            let hi = upto.min(seg.end()) - seg.base;
            // In chunks, so a writer that overtakes us is noticed and the
            // pages it already touched are skipped.
            while lo < hi {
                // Stay a lead ahead of the writer: faulting the very pages it
                // is writing makes both threads wait on the same page locks
                // (seen in perf as folio_wait_bit_common on the writer).
                let written = core.written.load(std::sync::atomic::Ordering::Acquire);
                lo = lo.max((written + PREFAULT_LEAD).saturating_sub(seg.base));
                let chunk_end = (lo + PREFAULT_CHUNK).min(hi);
                if lo >= chunk_end || core.closed.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                // Advisory: a failure only means the writer takes the faults.
                let _ = seg.prefault(lo, chunk_end);
                lo = chunk_end;
                std::thread::yield_now();
            }
        }
        covered
    }
}

fn run(core: &Core, rx: &Receiver<Job>) {
    let mut ahead: u64 = 0;
    let zeros = match core.opts.flush_mode {
        FlushMode::Sync => vec![0u8; ZERO_CHUNK as usize],
        FlushMode::Async => Vec::new(),
    };
    while let Ok(job) = rx.recv() {
        match job {
            Job::Segment(base) => core.prealloc.prepare(core, base),
            Job::Prefault(upto) => {
                let from = ahead.max(core.written.load(Ordering::Acquire));
                if upto > from {
                    ahead = match core.opts.flush_mode {
                        FlushMode::Async => core.prealloc.prefault(core, from, upto),
                        FlushMode::Sync => core.prealloc.zero_fill(core, from, upto, &zeros),
                    };
                }
            }
        }
    }
}

impl Prealloc {
    /// Sync mode: writes zeros over `[from, upto)` of the log (past the
    /// committed end only) and syncs them.
    ///
    /// Safety of the data: committed bytes lie below the flushed offset and
    /// are never touched; staged records above it reach the file only
    /// through a commit, and commits and zero writes exclude each other
    /// through the commit lock, so zeros can land only before the data that
    /// belongs there, never after it. A failed sync fences the log: the
    /// commits share this file descriptor, and the kernel reports a
    /// writeback error to only one of the callers.
    /// Returns how far it got (the rest is retried with the next request).
    fn zero_fill(&self, core: &Core, from: u64, upto: u64, zeros: &[u8]) -> u64 {
        // Large commits amortise the extent conversion themselves, and
        // zeroing would double the bytes written: only small commits (many
        // appenders, single messages) gain from it.
        if core.commit_bytes_avg.load(Ordering::Relaxed) > ZERO_FILL_MAX_COMMIT {
            return upto;
        }
        let mut z = from;
        while z < upto && !core.closed.load(Ordering::Acquire) && !core.fence.is_set() {
            let Some(seg) =
                core.segment_for(z).or_else(|| self.next.lock().clone().filter(|s| s.base <= z && z < s.end()))
            else {
                return z;
            };
            let end = upto.min(seg.end()).min(z.max(seg.base + SEGMENT_HEADER_LEN as u64) + ZERO_CHUNK);
            {
                let _commit = core.commit_lock.lock();
                let start = z.max(core.flushed.load(Ordering::Acquire)).max(seg.base + SEGMENT_HEADER_LEN as u64);
                if start < end {
                    let n = (end - start) as usize;
                    if write_all_at(seg.file.as_ref(), &zeros[..n], start - seg.base).is_err() {
                        // Nothing depends on these zeros; commits will just
                        // pay the extent conversion themselves.
                        return upto;
                    }
                }
            }
            if let Err(e) = seg.file.sync_data() {
                core.fence.set(crate::error::Error::io("fdatasync (zero fill)", &seg.path, e).to_string());
                drop(core.flush_state.lock());
                core.flush_cv.notify_all();
                core.wake_sync_waiters();
                return upto;
            }
            z = end;
        }
        z
    }
}
