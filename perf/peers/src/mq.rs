//! The mqstore variants, through the public `Store` API.
//!
//! `Store::open(dir, StoreOptions::default())` (Async flush unless the
//! variant says Sync), one topic `bench` with 1 queue created before the
//! clock starts. The clock starts once `open` and `create_topic` returned;
//! the store's background threads (flusher, dispatcher, segment
//! preallocation and prefault) run as they always do. Building each
//! `Message` (topic string and body copy) is inside the timing: it is what
//! a producer pays to use the API.

use crate::env::{allocated_bytes, scratch_dir};
use crate::inputs::Bodies;
use crate::workload::{Sample, Variant, Workload};
use mqstore::commitlog::FlushMode;
use mqstore::message::{Message, TopicName};
use mqstore::store::{PullStatus, Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use std::time::{Duration, Instant};

const TOPIC: &str = "bench";
/// `send_batch` size of the fast path.
pub const SEND_BATCH: usize = 256;
/// Messages per pull in the read-back (RocketMQ's default `pullBatchSize`).
const PULL_BATCH: usize = 32;

/// Messages share one [`TopicName`], as a producer sending to one topic
/// would; each body is its own `Vec`, as raft-engine's entries are.
fn messages(topic: &TopicName, bodies: &Bodies, from: usize, n: usize) -> Vec<Message> {
    (from..from + n).map(|k| Message::new(topic, bodies.get(k).to_vec())).collect()
}

/// Runs one of the mqstore variants.
pub fn run(v: Variant, w: &Workload, bodies: &Bodies) -> Sample {
    let dir = scratch_dir(v.name());
    let mode = if v == Variant::MqstoreSyncBatch { FlushMode::Sync } else { FlushMode::Async };
    let store = Store::open(dir.path(), StoreOptions::default().flush_mode(mode)).expect("open store");
    store.create_topic(TopicConfig::new(TOPIC, 1)).expect("create topic");

    let topic = TopicName::new(TOPIC);
    let start = Instant::now();
    let mut done = 0;
    while done < w.messages {
        match v {
            Variant::MqstoreSend => {
                store.send(Message::new(&topic, bodies.get(done).to_vec())).expect("send");
                done += 1;
            }
            Variant::MqstoreSyncBatch => {
                // One batch per sync interval: it returns durable.
                let n = w.until_sync_point(done);
                store.send_batch(messages(&topic, bodies, done, n)).expect("send_batch");
                done += n;
                continue;
            }
            _ => {
                let n = w.until_sync_point(done).min(SEND_BATCH);
                store.send_batch(messages(&topic, bodies, done, n)).expect("send_batch");
                done += n;
            }
        }
        if w.is_sync_point(done) {
            store.commit_log().flush().expect("flush");
        }
    }
    let append_only = start.elapsed();
    if mode == FlushMode::Async {
        store.commit_log().flush().expect("flush");
    }
    let total = start.elapsed();

    let disk_bytes = allocated_bytes(dir.path());
    wait_dispatched(&store, w.messages as u64);
    let start = Instant::now();
    let read_count = read_back(&store);
    let read = start.elapsed();
    store.close().expect("close");
    Sample { total, append_only, read, read_count, disk_bytes }
}

/// Waits (untimed) until the consume queue holds every message, so the
/// read-back measures reading, not dispatch lag.
fn wait_dispatched(store: &Store, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while store.max_offset(TOPIC, 0).expect("max_offset") < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Pulls the queue from its first offset to its end, borrowing each body
/// from the mapping (`pull_with`; the store verifies each record's CRC);
/// returns how many messages came back.
fn read_back(store: &Store) -> usize {
    let mut offset = store.min_offset(TOPIC, 0).expect("min_offset");
    let mut n = 0;
    let mut sum = 0u64;
    loop {
        let r = store
            .pull_with(TOPIC, 0, offset, PULL_BATCH, &TagFilter::All, |m| {
                sum = sum.wrapping_add(m.body().len() as u64);
                Ok(())
            })
            .expect("pull_with");
        match r.status {
            PullStatus::Found => {}
            PullStatus::NoNewMessage => break,
            other => panic!("pull at {offset}: {other:?}"),
        }
        n += r.count;
        offset = r.next_offset;
    }
    std::hint::black_box(sum);
    n
}

/// The commit log alone. Async (`sync_batch` false): one
/// `CommitLog::append` per message (topic, queue 0, the message number as
/// queue offset), `flush()` at sync points and at the end. Sync
/// (`sync_batch` true): `FlushMode::Sync`, one `append_batch` per sync
/// interval, each returning durable. Read back with the log's iterator,
/// each record CRC-checked.
pub fn run_log(w: &Workload, bodies: &Bodies, sync_batch: bool) -> Sample {
    use mqstore::commitlog::{CommitLog, CommitLogOptions, RecordDraft};
    use mqstore::PhysicalOffset;
    let v = if sync_batch { Variant::MqstoreLogSyncBatch } else { Variant::MqstoreLog };
    let dir = scratch_dir(v.name());
    let mode = if sync_batch { FlushMode::Sync } else { FlushMode::Async };
    let log = CommitLog::open(dir.path(), CommitLogOptions::default().flush_mode(mode)).expect("open commit log");
    let draft =
        |i: usize| RecordDraft { topic: TOPIC, queue_offset: i as u64, body: bodies.get(i), ..Default::default() };
    let start = Instant::now();
    let mut done = 0;
    while done < w.messages {
        if sync_batch {
            let n = w.until_sync_point(done);
            let drafts: Vec<RecordDraft<'_>> = (done..done + n).map(draft).collect();
            log.append_batch(&drafts).expect("append_batch");
            done += n;
            continue;
        }
        log.append(&draft(done)).expect("append");
        done += 1;
        if w.is_sync_point(done) {
            log.flush().expect("flush");
        }
    }
    let append_only = start.elapsed();
    log.flush().expect("flush");
    let total = start.elapsed();
    let disk_bytes = allocated_bytes(dir.path());
    let start = Instant::now();
    let mut read_count = 0;
    let mut sum = 0u64;
    for rec in log.iter(PhysicalOffset(0)) {
        let rec = rec.expect("read record");
        sum = sum.wrapping_add(rec.body().len() as u64);
        read_count += 1;
        if read_count == w.messages {
            break;
        }
    }
    std::hint::black_box(sum);
    let read = start.elapsed();
    log.close().expect("close");
    Sample { total, append_only, read, read_count, disk_bytes }
}
