//! Live counters of a run and the once-a-second progress line.
//!
//! Each worker owns one [`Counter`] on its own cache line and only stores
//! into it (no shared read-modify-write in the hot loop); the reporter
//! sums them. The line goes to stderr, rewritten in place with `\r`, and
//! only when stderr is a terminal, so pipes and log files get the final
//! report alone.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How often the line is rewritten.
const TICK: Duration = Duration::from_secs(1);

/// One worker's running totals. Aligned to 128 bytes so two workers'
/// counters never share a cache line (or an adjacent-line prefetch pair).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counter {
    messages: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

impl Counter {
    /// Publishes the worker's totals so far (plain stores: one writer).
    #[inline]
    pub fn publish(&self, messages: u64, bytes: u64, errors: u64) {
        self.messages.store(messages, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        self.errors.store(errors, Ordering::Relaxed);
    }
}

/// Sum over every counter: (messages, bytes, errors).
fn totals(counters: &[Counter]) -> (u64, u64, u64) {
    counters.iter().fold((0, 0, 0), |(m, b, e), c| {
        (
            m + c.messages.load(Ordering::Relaxed),
            b + c.bytes.load(Ordering::Relaxed),
            e + c.errors.load(Ordering::Relaxed),
        )
    })
}

/// Waits until every sender of `done` is dropped (each worker holds one),
/// printing a progress line every second meanwhile if stderr is a
/// terminal. `verb` starts the line (`produce`, `consume`).
pub fn watch(verb: &str, counters: &[Counter], done: &Receiver<()>, started: Instant) {
    let show = std::io::stderr().is_terminal();
    let mut last = (Instant::now(), 0u64, 0u64);
    let mut shown = false;
    loop {
        match done.recv_timeout(TICK) {
            Err(RecvTimeoutError::Timeout) => {}
            // Workers never send; a message would only mean "not done yet".
            Ok(()) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if !show {
            continue;
        }
        let now = Instant::now();
        let (messages, bytes, errors) = totals(counters);
        let window = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let rate = (messages - last.1.min(messages)) as f64 / window;
        let mb = (bytes - last.2.min(bytes)) as f64 / window / 1e6;
        last = (now, messages, bytes);
        // \x1b[K clears what a longer previous line left behind.
        let line = format!(
            "\r{verb}: {:>5.0} s  {messages} msgs  {rate:.0} msgs/s  {mb:.1} MB/s  {errors} errors\x1b[K",
            started.elapsed().as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes()).and_then(|()| err.flush());
        shown = true;
    }
    if shown {
        // Leave the terminal clean for the report on stdout.
        let _ = std::io::stderr().lock().write_all(b"\r\x1b[K");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_do_not_share_cache_lines() {
        assert!(std::mem::align_of::<Counter>() >= 128);
        let cs = [Counter::default(), Counter::default()];
        cs[0].publish(3, 30, 1);
        cs[1].publish(4, 40, 0);
        assert_eq!(totals(&cs), (7, 70, 1));
    }
}
