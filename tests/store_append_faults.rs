//! I/O faults while the whole store appends across rolls: the k-th I/O
//! call fails, for every k, once and persistently, while messages are sent
//! so that commit-log segments, consume-queue files and index files all
//! roll. Every failure is a typed error; after a failed sync no send
//! succeeds; after reopening, every acknowledged message is served at its
//! queue offset, found by key, and each queue is gap-free.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use mqstore::commitlog::{CommitLogOptions, FlushMode};
use mqstore::index::IndexFileSize;
use mqstore::message::Message;
use mqstore::storage::{FaultKind, FaultPlan, FaultyStorage, StdStorage, Storage};
use mqstore::store::{RetentionOptions, Store, StoreOptions};
use mqstore::topic::TopicConfig;
use mqstore::Error;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const TOPIC: &str = "t";
const QUEUES: u32 = 2;
/// Messages sent before the fault is armed, and while it is.
const BEFORE: u64 = 8;
const DURING: u64 = 16;

fn opts(mode: FlushMode, storage: Arc<dyn Storage>) -> StoreOptions {
    let log = CommitLogOptions::default()
        .segment_size(8 << 10)
        .max_record_size(4 << 10)
        .flush_mode(mode)
        .flush_interval(Duration::from_secs(10))
        .checkpoint_interval(Duration::from_secs(600))
        // A send whose flush failed is fenced at once; one whose flush is
        // merely lost waits this long.
        .sync_flush_timeout(Duration::from_millis(200))
        .storage(storage);
    StoreOptions::default()
        .commit_log_options(log)
        .max_body_size(2 << 10)
        .max_properties_size(512)
        .consume_queue_units_per_file(4)
        .index_file_size(IndexFileSize { slots: 16, max_entries: 6 })
        .retention(RetentionOptions::default().interval(Duration::from_secs(3600)))
        .offset_persist_interval(Duration::from_secs(3600))
}

fn body(i: u64) -> Vec<u8> {
    common::numbered::body(i, 1500)
}

fn typed(e: &Error) -> bool {
    matches!(
        e,
        Error::Io { .. } | Error::DiskFull { .. } | Error::Fenced { .. } | Error::Closed | Error::Timeout { .. }
    )
}

/// Queue -> (queue offset, message number), every unit checked.
fn served(store: &Store) -> BTreeMap<u32, Vec<(u64, u64)>> {
    common::numbered::served(store, TOPIC, QUEUES)
}

/// One run; `k = None` counts the I/O calls of the faulted phase.
fn run(dir: &Path, mode: FlushMode, k: Option<u64>, persistent: bool) -> u64 {
    let plan = FaultPlan::new();
    let storage = Arc::new(FaultyStorage::new(Arc::new(StdStorage), plan.clone()));
    let store = Store::open(dir, opts(mode, storage)).unwrap();
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    // (number, queue, queue offset) of every acknowledged message.
    let mut acked = Vec::new();
    let send = |i: u64| store.send(Message::new(TOPIC, body(i)).with_keys([format!("k{i}")]));
    for i in 0..BEFORE {
        let r = send(i).unwrap();
        acked.push((i, r.queue_id, r.queue_offset));
    }
    let before = plan.calls();
    if let Some(k) = k {
        plan.fail_call(k, FaultKind::Io, persistent);
    }
    let ctx = format!("{mode:?} k={k:?} persistent={persistent}");
    let mut failed_sync = false;
    for i in BEFORE..BEFORE + DURING {
        match send(i) {
            Ok(r) => {
                assert!(!failed_sync, "{ctx}: message {i} acknowledged after a failed sync");
                if r.status == mqstore::store::SendStatus::SendOk {
                    acked.push((i, r.queue_id, r.queue_offset));
                }
            }
            Err(e) => {
                assert!(typed(&e), "{ctx}: message {i}: untyped {e:?}");
                failed_sync |= matches!(&e, Error::Io { op, .. } if op.starts_with("fsync") || op.starts_with("fdatasync"))
                    || matches!(e, Error::Fenced { .. });
            }
        }
    }
    // Async mode acknowledges before any sync: the flush at close decides.
    if let Err(e) = store.close() {
        assert!(typed(&e) || matches!(e, Error::Corruption { .. }), "{ctx}: close: untyped {e:?}");
    }
    let used = if k.is_none() { plan.calls() - before } else { 0 };
    drop(store);
    plan.heal();
    let store = Store::open(dir, opts(mode, Arc::new(StdStorage))).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    let got = served(&store);
    for (q, units) in &got {
        for (n, (at, _)) in units.iter().enumerate() {
            assert_eq!(*at, n as u64, "{ctx}: queue {q} has a gap");
        }
    }
    for (i, q, at) in &acked {
        let units = &got[q];
        assert_eq!(units.get(*at as usize).map(|u| u.1), Some(*i), "{ctx}: acknowledged message {i} lost");
        let found = store.query_by_key(TOPIC, &format!("k{i}"), 0, u64::MAX, 4).unwrap();
        assert_eq!(found.len(), 1, "{ctx}: key of message {i}");
    }
    store.close().unwrap();
    used
}

#[test]
fn fail_every_io_call_while_the_store_appends_across_rolls() {
    let mut runs = 0;
    for mode in [FlushMode::Sync, FlushMode::Async] {
        let calls = run(common::fast_tempdir().path(), mode, None, false);
        assert!(calls > 20, "{mode:?}: only {calls} I/O calls");
        for persistent in [false, true] {
            for k in 1..=calls + 1 {
                run(common::fast_tempdir().path(), mode, Some(k), persistent);
                runs += 1;
            }
        }
        eprintln!("{mode:?}: {calls} I/O calls while appending {DURING} messages across rolls");
    }
    eprintln!("{runs} faulted runs");
}
