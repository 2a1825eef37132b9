//! Segment preparation off the hot path.
//!
//! The `mqstore:prealloc` thread creates the next segment (allocated,
//! stamped, synced, renamed into place) before the writer needs it, and
//! prefaults pages ahead of the writer so appends do not pay first-touch
//! page faults (about 1.25 us per 4 KiB page on the reference machine).
//! Under [`Preallocation::OnRoll`] there is no thread: the writer creates
//! segments itself when it rolls.

use super::segment::Segment;
use super::{Core, Preallocation};
use crate::error::{Error, Result};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Bytes prefaulted per `madvise` call (under 1 ms of work here).
const PREFAULT_CHUNK: u64 = 1 << 20;

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
        self.request_segment(w.active.end());
        let upto = core.written.load(std::sync::atomic::Ordering::Acquire) + core.opts.prefault_window;
        // Sync mode writes with pwrite, not through the mapping: nothing to
        // prefault.
        if core.opts.prefault_window > 0 && core.opts.flush_mode == super::FlushMode::Async {
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
                )?;
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
        if let Ok(seg) = Segment::create(
            core.opts.storage.as_ref(),
            &core.dir,
            base,
            core.opts.segment_size,
            core.opts.clock.as_ref(),
        ) {
            *slot = Some(Arc::new(seg));
        }
    }

    fn prefault(&self, core: &Core, from: u64, upto: u64) {
        let mut segs: Vec<Arc<Segment>> =
            core.segments.read().iter().filter(|s| s.end() > from && s.base < upto).cloned().collect();
        if let Some(next) = self.next.lock().as_ref() {
            if next.end() > from && next.base < upto && !segs.iter().any(|s| s.base == next.base) {
                segs.push(next.clone());
            }
        }
        for seg in segs {
            let mut lo = from.max(seg.base) - seg.base;
            let hi = upto.min(seg.end()) - seg.base;
            // In chunks, so a writer that overtakes us is noticed and the
            // pages it already touched are skipped.
            while lo < hi {
                let written = core.written.load(std::sync::atomic::Ordering::Acquire);
                lo = lo.max(written.saturating_sub(seg.base));
                let chunk_end = (lo + PREFAULT_CHUNK).min(hi);
                if lo >= chunk_end || core.closed.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                // Advisory: a failure only means the writer takes the faults.
                let _ = seg.prefault(lo, chunk_end);
                lo = chunk_end;
            }
        }
    }
}

fn run(core: &Core, rx: &Receiver<Job>) {
    let mut prefaulted: u64 = 0;
    while let Ok(job) = rx.recv() {
        match job {
            Job::Segment(base) => core.prealloc.prepare(core, base),
            Job::Prefault(upto) => {
                let from = prefaulted.max(core.written.load(std::sync::atomic::Ordering::Acquire));
                if upto > from {
                    core.prealloc.prefault(core, from, upto);
                    prefaulted = upto;
                }
            }
        }
    }
}
