//! I/O faults during a retention round: the k-th I/O call of the round
//! fails, for every k, once and persistently. The round returns a typed
//! error or succeeds; a failed sync fences the store; after reopening, the
//! store opens (never corruption), every message it still serves is intact
//! and forms a gap-free suffix of what was sent, and a clean round then
//! reaches exactly the state a fault-free round reaches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use mqstore::commitlog::{CommitLogOptions, FlushMode};
use mqstore::index::IndexFileSize;
use mqstore::message::Message;
use mqstore::storage::{FaultKind, FaultPlan, FaultyStorage, StdStorage, Storage};
use mqstore::store::{Retention, RetentionOptions, Store, StoreOptions};
use mqstore::topic::TopicConfig;
use mqstore::{Error, ManualClock};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const TOPIC: &str = "t";
const QUEUES: u32 = 2;
const SENT: u64 = 90;
const HOUR_MS: u64 = 3600 * 1000;

fn opts(clock: &Arc<ManualClock>, storage: Arc<dyn Storage>) -> StoreOptions {
    let log = CommitLogOptions::default()
        .segment_size(16 << 10)
        .max_record_size(8 << 10)
        .flush_mode(FlushMode::Sync)
        .checkpoint_interval(Duration::from_secs(600))
        .clock(clock.clone())
        .storage(storage);
    StoreOptions::default()
        .commit_log_options(log)
        .max_body_size(4 << 10)
        .max_properties_size(1 << 10)
        .consume_queue_units_per_file(8)
        .index_file_size(IndexFileSize { slots: 64, max_entries: 24 })
        .retention(RetentionOptions::default().interval(Duration::from_secs(3600)).max_segments_per_round(1000))
        .offset_persist_interval(Duration::from_secs(3600))
}

fn body(i: u64) -> Vec<u8> {
    common::numbered::body(i, 900)
}

/// Every message served, by number, each checked byte for byte.
fn served(store: &Store) -> Vec<u64> {
    common::numbered::served_numbers(store, TOPIC, QUEUES)
}

fn typed(e: &Error) -> bool {
    matches!(e, Error::Io { .. } | Error::DiskFull { .. } | Error::Fenced { .. } | Error::Closed)
}

/// Builds the store: 90 messages, then 73 hours pass and 10 more arrive,
/// so every segment but the last two is expired.
fn build(dir: &Path, clock: &Arc<ManualClock>) {
    let store = Store::open(dir, opts(clock, Arc::new(StdStorage))).unwrap();
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    for i in 0..SENT {
        store.send(Message::new(TOPIC, body(i)).with_keys([format!("k{i}")])).unwrap();
    }
    clock.advance_ms(73 * HOUR_MS);
    for i in SENT..SENT + 10 {
        store.send(Message::new(TOPIC, body(i))).unwrap();
    }
    store.close().unwrap();
}

/// One round under a fault at call `k` (None: no fault, counting the
/// round's calls). Returns (calls made, messages served after a clean
/// second round).
fn run(dir: &Path, clock: &Arc<ManualClock>, k: Option<u64>, persistent: bool) -> (u64, Vec<u64>) {
    let plan = FaultPlan::new();
    let storage = Arc::new(FaultyStorage::new(Arc::new(StdStorage), plan.clone()));
    let store = Store::open(dir, opts(clock, storage)).unwrap();
    // Dispatch is synchronous at open; every record is in its queue.
    let all = served(&store);
    assert_eq!(all, (0..SENT + 10).collect::<Vec<_>>());
    let before = plan.calls();
    if let Some(k) = k {
        plan.fail_call(k, FaultKind::Io, persistent);
    }
    let ctx = format!("k={k:?} persistent={persistent}");
    match store.run_retention(Retention::Normal) {
        Ok(r) => assert!(k.is_some() || !r.removed.is_empty(), "{ctx}: nothing removed"),
        Err(e) => {
            assert!(typed(&e), "{ctx}: untyped {e:?}");
            if matches!(&e, Error::Io { op, .. } if op.starts_with("fsync") || op.starts_with("fdatasync")) {
                let r = store.send(Message::new(TOPIC, "after a failed sync"));
                assert!(matches!(r, Err(Error::Fenced { .. })), "{ctx}: send after a failed sync: {r:?}");
            }
        }
    }
    let used = if k.is_none() { plan.calls() - before } else { 0 };
    if let Err(e) = store.close() {
        assert!(typed(&e), "{ctx}: close: untyped {e:?}");
    }
    drop(store);
    plan.heal();
    let store = Store::open(dir, opts(clock, Arc::new(StdStorage))).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    let after_fault = served(&store);
    let first = after_fault.first().copied().unwrap_or(SENT + 10);
    assert_eq!(after_fault, (first..SENT + 10).collect::<Vec<_>>(), "{ctx}: not a gap-free suffix");
    assert!(store.query_by_key(TOPIC, "k89", 0, u64::MAX, 4).unwrap().len() == 1, "{ctx}: key lost");
    store.run_retention(Retention::Normal).unwrap();
    let settled = served(&store);
    store.close().unwrap();
    (used, settled)
}

#[test]
fn fail_every_io_call_of_a_retention_round() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let template = common::fast_tempdir();
    build(template.path(), &clock);
    let fresh = || {
        let d = common::fast_tempdir();
        common::copy_dir(template.path(), d.path());
        d
    };
    let d = fresh();
    let (calls, expected) = run(d.path(), &clock, None, false);
    assert!(calls > 10, "the round made only {calls} I/O calls");
    assert!(expected.len() < (SENT + 10) as usize && !expected.is_empty(), "{expected:?}");
    let mut runs = 0;
    for persistent in [false, true] {
        for k in 1..=calls + 1 {
            let d = fresh();
            let (_, settled) = run(d.path(), &clock, Some(k), persistent);
            assert_eq!(settled, expected, "k={k} persistent={persistent}: a clean round after the fault differs");
            runs += 1;
        }
    }
    eprintln!("{calls} I/O calls in a retention round; {runs} faulted runs");
}
