//! I/O faults in the store's metadata path: the k-th I/O call fails, for
//! every k, once and persistently, while the consumer offsets are persisted
//! and the store closes (consume-queue flush, dispatch checkpoint, delay
//! progress, offsets, commit-log checkpoint). Every failure is a typed
//! error; a failed sync fences the store (sends are refused until it is
//! reopened); after reopening, every acknowledged message is there and the
//! committed offsets are either the ones persisted before or the new ones,
//! never a mix, never garbage, never lost, and the new ones whenever
//! `persist_offsets` reported success.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mqstore::commitlog::{CommitLogOptions, FlushMode};
use mqstore::message::Message;
use mqstore::storage::{FaultKind, FaultPlan, FaultyStorage, StdStorage};
use mqstore::store::{PullStatus, SendStatus, Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use mqstore::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const TOPIC: &str = "t";
const QUEUES: u32 = 2;
const GROUP: &str = "g";

fn opts(storage: Option<Arc<FaultyStorage>>) -> StoreOptions {
    let mut log = CommitLogOptions::default()
        .segment_size(64 << 10)
        .max_record_size(16 << 10)
        .flush_mode(FlushMode::Sync)
        .checkpoint_interval(Duration::from_secs(600));
    if let Some(s) = storage {
        log = log.storage(s);
    }
    StoreOptions::default()
        .commit_log_options(log)
        .max_body_size(4 << 10)
        .max_properties_size(1 << 10)
        .offset_persist_interval(Duration::from_secs(600))
}

fn bodies(store: &Store) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for q in 0..QUEUES {
        let mut from = 0;
        loop {
            let r = store.pull(TOPIC, q, from, 64, &TagFilter::All).unwrap();
            if r.status != PullStatus::Found {
                break;
            }
            out.extend(r.messages.iter().map(|m| m.body().to_vec()));
            from = r.next_offset;
        }
    }
    out.sort();
    out
}

fn typed(e: &Error) -> bool {
    matches!(e, Error::Io { .. } | Error::DiskFull { .. } | Error::Fenced { .. } | Error::Closed)
}

/// One run: k = None measures how many I/O calls the faulted part makes.
fn run(dir: &Path, k: Option<u64>, persistent: bool) -> u64 {
    let plan = FaultPlan::new();
    let storage = Arc::new(FaultyStorage::new(Arc::new(StdStorage), plan.clone()));
    let store = Store::open(dir, opts(Some(storage))).unwrap();
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    let mut acked = Vec::new();
    for i in 0..20u32 {
        let body = format!("message {i}").into_bytes();
        let r = store.send(Message::new(TOPIC, body.clone())).unwrap();
        assert_eq!(r.status, SendStatus::SendOk);
        acked.push(body);
    }
    acked.sort();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while bodies(&store).len() < acked.len() {
        assert!(std::time::Instant::now() < deadline, "not dispatched");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Generation A, persisted; generation B, committed, then persisted
    // under the fault.
    for q in 0..QUEUES {
        store.commit_offset(GROUP, TOPIC, q, 1).unwrap();
    }
    store.persist_offsets().unwrap();
    for q in 0..QUEUES {
        store.commit_offset(GROUP, TOPIC, q, 5 + u64::from(q)).unwrap();
    }
    let before = plan.calls();
    if let Some(k) = k {
        // Counts from now on.
        plan.fail_call(k, FaultKind::Io, persistent);
    }
    let ctx = format!("k={k:?} persistent={persistent}");
    let persisted = store.persist_offsets();
    if let Err(e) = &persisted {
        assert!(typed(e), "{ctx}: persist_offsets: untyped {e:?}");
        // A failed sync fences: nothing is acknowledged afterwards.
        if matches!(e, Error::Io { op, .. } if op.starts_with("fsync") || op.starts_with("fdatasync")) {
            let r = store.send(Message::new(TOPIC, "after a failed sync"));
            assert!(matches!(r, Err(Error::Fenced { .. })), "{ctx}: send after a failed sync: {r:?}");
        }
    }
    if let Err(e) = store.close() {
        assert!(typed(&e) || matches!(e, Error::Corruption { .. }), "{ctx}: close: untyped {e:?}");
    }
    drop(store);
    let used = if k.is_none() { plan.calls() - before } else { 0 };
    plan.heal();
    let store = Store::open(dir, opts(None)).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    assert_eq!(bodies(&store), acked, "{ctx}: acknowledged messages changed");
    let got: Vec<Option<u64>> = (0..QUEUES).map(|q| store.committed_offset(GROUP, TOPIC, q)).collect();
    let (old, new) = (vec![Some(1), Some(1)], vec![Some(5), Some(6)]);
    assert!(got == old || got == new, "{ctx}: offsets {got:?} are neither generation");
    if persisted.is_ok() {
        assert_eq!(got, new, "{ctx}: persist_offsets succeeded but the offsets did not stay");
    }
    store.close().unwrap();
    used
}

#[test]
fn fail_every_io_call_while_persisting_offsets_and_closing() {
    let calls = run(tempfile::tempdir().unwrap().path(), None, false);
    assert!(calls > 5, "the persist and close made only {calls} I/O calls");
    for persistent in [false, true] {
        for k in 1..=calls + 2 {
            run(tempfile::tempdir().unwrap().path(), Some(k), persistent);
        }
    }
    eprintln!("{calls} I/O calls in persist + close, each failed once and persistently");
}
