//! Flushing: group commit for [`FlushMode::Sync`], the periodic flusher for
//! [`FlushMode::Async`], checkpoints, and the background service thread.
//!
//! Group commit is leader based: the first appender that finds no flush in
//! progress becomes the leader, flushes everything published so far (which
//! covers every appender waiting at that moment) and wakes the others; no
//! hand-off to another thread is needed on the latency path.

use super::checkpoint::{self, Checkpoint, RecordMark, ShutdownState};
use super::{Core, FlushMode};
use crate::error::{Error, Result};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// Guarded by `Core::flush_state`.
#[derive(Debug, Default)]
pub(crate) struct FlushState {
    /// A leader is flushing right now.
    leader: bool,
    /// The last record below the flushed offset (for the checkpoint).
    pub(crate) mark: Option<RecordMark>,
}

impl FlushState {
    pub(crate) fn new(mark: Option<RecordMark>) -> Self {
        Self { leader: false, mark }
    }
}

impl Core {
    /// Returns once everything below `target` is durable, flushing as the
    /// leader if nobody else is. With a deadline, gives up with
    /// [`Error::Timeout`] (the data stays written).
    pub(crate) fn flush_through(&self, target: u64, deadline: Option<Instant>) -> Result<u64> {
        loop {
            self.fence.check()?;
            let flushed = self.flushed.load(Ordering::Acquire);
            if flushed >= target {
                return Ok(flushed);
            }
            let mut st = self.flush_state.lock();
            if st.leader {
                let timed_out = match deadline {
                    Some(d) => self.flush_cv.wait_until(&mut st, d).timed_out(),
                    None => {
                        self.flush_cv.wait(&mut st);
                        false
                    }
                };
                drop(st);
                if timed_out && self.flushed.load(Ordering::Acquire) < target {
                    self.fence.check()?;
                    return Err(Error::Timeout { what: "sync flush", offset: target });
                }
                continue;
            }
            st.leader = true;
            drop(st);
            let result = self.flush_now();
            let mut st = self.flush_state.lock();
            st.leader = false;
            if let Ok((_, mark)) = result {
                if mark.is_some() {
                    st.mark = mark;
                }
            }
            self.flush_cv.notify_all();
            drop(st);
            result?;
        }
    }

    /// Flushes every published byte not yet durable. Only the leader calls
    /// this. Fences the log on failure: after a failed msync/fsync the kernel
    /// may have dropped the dirty pages, so no later flush can be trusted to
    /// cover them.
    fn flush_now(&self) -> Result<(u64, Option<RecordMark>)> {
        let (end, mark) = {
            let w = self.writer.lock();
            (self.written.load(Ordering::Acquire), w.last)
        };
        let from = self.flushed.load(Ordering::Acquire);
        if end <= from {
            return Ok((from, None));
        }
        let segs: Vec<_> = self.segments.read().iter().filter(|s| s.end() > from && s.base < end).cloned().collect();
        for seg in segs {
            let lo = from.max(seg.base) - seg.base;
            let hi = end.min(seg.end()) - seg.base;
            if let Err(e) = seg.flush(lo, hi) {
                let err = Error::io("msync", &seg.path, e);
                self.fence.set(err.to_string());
                return Err(err);
            }
        }
        self.flushed.fetch_max(end, Ordering::AcqRel);
        Ok((end, mark))
    }

    /// Writes a checkpoint for the current flushed offset.
    pub(crate) fn write_checkpoint(&self, state: ShutdownState) -> Result<()> {
        let mark = self.flush_state.lock().mark;
        let flushed = self.flushed.load(Ordering::Acquire);
        let generation = self.checkpoint_generation.fetch_add(1, Ordering::AcqRel) + 1;
        let cp = Checkpoint { state, generation, flushed, last_record: mark };
        checkpoint::write(self.opts.storage.as_ref(), &self.root, &cp)
            .inspect_err(|e| self.fence.set(format!("checkpoint: {e}")))
    }

    /// Final flush and clean-shutdown checkpoint. Waits for in-flight
    /// appends by taking the append lock once.
    pub(crate) fn shutdown(&self) -> Result<()> {
        drop(self.writer.lock());
        self.fence.check()?;
        let target = self.written.load(Ordering::Acquire);
        self.flush_through(target, None)?;
        self.write_checkpoint(ShutdownState::Clean)
    }
}

/// The background threads: `mqstore:flush` (async flushing and
/// checkpoints) and `mqstore:prealloc` (segment preparation).
#[derive(Debug)]
pub(crate) struct Services {
    stop: Sender<()>,
    flusher: JoinHandle<()>,
    prealloc: Option<JoinHandle<()>>,
}

/// Fences the log if the thread holding it unwinds: a background thread
/// that died silently would otherwise leave appends "succeeding" without
/// flushes.
struct PanicFence<'a>(&'a Core, &'static str);

impl Drop for PanicFence<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fence.set(format!("background thread {} panicked", self.1));
        }
    }
}

impl Services {
    pub(crate) fn start(core: &Arc<Core>) -> Result<Self> {
        let (stop, stop_rx) = bounded::<()>(1);
        let c = core.clone();
        let flusher = std::thread::Builder::new()
            .name("mqstore:flush".into())
            .spawn(move || {
                let _guard = PanicFence(&c, "mqstore:flush");
                flush_loop(&c, &stop_rx);
            })
            .map_err(|e| Error::io("spawn thread", &core.root, e))?;
        let prealloc = core.prealloc.start(core)?;
        Ok(Self { stop, flusher, prealloc })
    }

    /// Stops and joins the threads. A thread that panicked fences the log
    /// and is reported as an error.
    pub(crate) fn stop(self, core: &Core) -> Result<()> {
        drop(self.stop);
        core.prealloc.stop();
        let mut result = Ok(());
        for (name, h) in [("mqstore:flush", Some(self.flusher)), ("mqstore:prealloc", self.prealloc)] {
            if let Some(h) = h {
                if h.join().is_err() {
                    core.fence.set(format!("background thread {name} panicked"));
                    result = core.fence.check();
                }
            }
        }
        result
    }
}

fn flush_loop(core: &Core, stop: &Receiver<()>) {
    let opts = &core.opts;
    let tick = match opts.flush_mode {
        FlushMode::Async => opts.flush_interval.min(opts.checkpoint_interval),
        FlushMode::Sync => opts.checkpoint_interval,
    };
    let mut last_flush = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut checkpointed = core.flushed.load(Ordering::Acquire);
    loop {
        match stop.recv_timeout(tick) {
            Err(RecvTimeoutError::Timeout) => {}
            // Stop requested (sender dropped) or a stray message.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        if core.fence.is_set() {
            continue;
        }
        if opts.flush_mode == FlushMode::Async {
            let written = core.written.load(Ordering::Acquire);
            let dirty = written.saturating_sub(core.flushed.load(Ordering::Acquire));
            let thorough = last_flush.elapsed() >= opts.flush_thorough_interval;
            if dirty > 0 && (dirty >= opts.flush_min_bytes || thorough) {
                // Errors fence the log inside flush_now; appenders see them.
                let _ = core.flush_through(written, None);
                last_flush = Instant::now();
            }
        }
        let flushed = core.flushed.load(Ordering::Acquire);
        if flushed != checkpointed && last_checkpoint.elapsed() >= opts.checkpoint_interval {
            if core.write_checkpoint(ShutdownState::Running).is_ok() {
                checkpointed = flushed;
            }
            last_checkpoint = Instant::now();
        }
    }
}
