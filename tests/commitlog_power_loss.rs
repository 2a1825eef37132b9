//! Simulated power loss: the commit log runs on `SimStorage`, which keeps
//! only what was synced (unsynced pages are kept, dropped or garbled at the
//! crash; file creations and renames survive only once their directory was
//! synced). A crash image is taken right after the k-th sync-family call
//! (Sync mode) or between appends (Async mode), recovered, and checked:
//!
//! * Sync mode: every append acknowledged before the crash is present and
//!   byte-identical.
//! * Async mode: what survives is a gap-free prefix of what was appended,
//!   covering at least everything a completed `flush()` covered.
//! * Both: recovery never fails or panics, returns no garbage, and running
//!   it twice (crashing again right after the first) gives the same log.
//!
//! `MQSTORE_POWER_LOSS_STATES=N` raises the number of crash states (default
//! 5,000 per mode; with the store test, 20,000 per CI run); `MQSTORE_SEED`
//! replays a run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{body_for, seed, Rng};
use mqstore::commitlog::{CommitLog, CommitLogOptions, FlushMode, RecordDraft};
use mqstore::storage::{SimStorage, Snapshot};
use mqstore::PhysicalOffset;
use parking_lot::Mutex;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const DIR: &str = "/store";

fn states() -> u64 {
    std::env::var("MQSTORE_POWER_LOSS_STATES").ok().and_then(|s| s.parse().ok()).unwrap_or(5_000)
}

fn opts(sim: &SimStorage, mode: FlushMode) -> CommitLogOptions {
    common::sim_log_opts(sim, mode)
}

/// Body of message `id`: derived from the id so garbage is recognisable.
fn body(id: u64) -> Vec<u8> {
    body_for(id, 1 + (id.wrapping_mul(2_654_435_761) % 1500) as usize)
}

fn draft(id: u64, b: &[u8]) -> RecordDraft<'_> {
    RecordDraft { topic: "P", queue_offset: id, body: b, ..Default::default() }
}

/// Recovers `snap` and returns (offset, id) of every record, checking that
/// each body matches its id. Recovers a second time from a crash right
/// after the first recovery and checks the log is the same.
fn recover(snap: &Snapshot, mode: FlushMode, ctx: &str) -> Vec<(u64, u64)> {
    let sim = snap.restore();
    let log = CommitLog::open(DIR, opts(&sim, mode)).unwrap_or_else(|e| panic!("{ctx}: recovery failed: {e}"));
    let mut got = Vec::new();
    for r in log.iter(PhysicalOffset(0)) {
        let r = r.unwrap_or_else(|e| panic!("{ctx}: read after recovery: {e}"));
        let id = r.queue_offset();
        assert_eq!(&r.body()[..], &body(id)[..], "{ctx}: garbage at offset {}", r.offset());
        got.push((r.offset().get(), id));
    }
    drop(log);
    // Crash again right away (the handle was dropped, so a clean close may
    // or may not have happened before the image: take the durable state).
    let again = sim.crash_now(0x5eed).restore();
    let log = CommitLog::open(DIR, opts(&again, mode)).unwrap_or_else(|e| panic!("{ctx}: second recovery: {e}"));
    let second: Vec<(u64, u64)> =
        log.iter(PhysicalOffset(0)).map(|r| r.map(|r| (r.offset().get(), r.queue_offset())).unwrap()).collect();
    assert_eq!(second, got, "{ctx}: recovery is not idempotent");
    got
}

#[test]
fn sync_mode_never_loses_an_acknowledged_append() {
    // Crash points are drawn over the number of syncs a run really makes.
    let syncs_per_run = common::sync_crash_states(seed(), states(), 20, |run| {
        let (sim, ctx) = (&run.sim, &run.ctx);
        let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
        let count = run.acked.clone();
        let log = CommitLog::open(DIR, opts(sim, FlushMode::Sync)).unwrap();
        let threads: Vec<_> = (0..2u64)
            .map(|t| {
                let (log, acked, count) = (log.clone(), acked.clone(), count.clone());
                std::thread::spawn(move || {
                    for i in 0..25u64 {
                        let id = t * 1000 + i;
                        let b = body(id);
                        if let Ok(a) = log.append(&draft(id, &b)) {
                            acked.lock().push((a.offset.get(), id));
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let _ = log.close();
        let Some(snap) = sim.taken_snapshot() else { return false };
        let got = recover(&snap, FlushMode::Sync, ctx);
        let acked = acked.lock();
        for (off, id) in acked.iter().take(snap.probe as usize) {
            assert!(got.contains(&(*off, *id)), "{ctx}: acknowledged id {id} at {off} lost; recovered {got:?}");
        }
        true
    });
    eprintln!("sync mode: {} crash states checked (up to {syncs_per_run} syncs per run)", states());
}

#[test]
fn async_mode_recovers_a_gap_free_prefix() {
    let base = seed();
    let mut rng = Rng(base ^ 0xa5a5);
    for state in 0..states() {
        let s = rng.next();
        let ctx = format!("seed {base} state {state} (sub-seed {s})");
        let sim = SimStorage::new();
        let log = CommitLog::open(DIR, opts(&sim, FlushMode::Async)).unwrap();
        let mut appended: Vec<(u64, u64)> = Vec::new();
        let mut durable = 0usize;
        let n = 1 + rng.below(60);
        for id in 0..n {
            let b = body(id);
            let a = log.append(&draft(id, &b)).unwrap();
            appended.push((a.offset.get(), id));
            if rng.below(8) == 0 {
                log.flush().unwrap();
                durable = appended.len();
            }
        }
        // Crash between appends, with the background threads still running.
        let snap = sim.crash_now(s);
        drop(log);
        let got = recover(&snap, FlushMode::Async, &ctx);
        assert!(got.len() >= durable, "{ctx}: {} records survived, {durable} were flushed", got.len());
        assert_eq!(&got[..], &appended[..got.len()], "{ctx}: not a prefix of what was appended");
    }
}

#[test]
fn sim_storage_is_a_real_backend_for_the_whole_api() {
    // A clean close on SimStorage, then a crash image of it, loses nothing.
    let sim = SimStorage::new();
    let log = CommitLog::open(Path::new(DIR), opts(&sim, FlushMode::Async)).unwrap();
    for id in 0..200 {
        log.append(&draft(id, &body(id))).unwrap();
    }
    log.close().unwrap();
    let got = recover(&sim.crash_now(3), FlushMode::Async, "clean close");
    assert_eq!(got.len(), 200);
}
