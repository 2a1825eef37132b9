//! The raft-engine peer (TiKV's embedded log, crate 0.4.2), set up as the
//! peer harness of `performance.md` section 2a did:
//!
//! * `Config` defaults (128 MB files, log recycling, format V2) except
//!   `batch_compression_threshold = 0`, which turns LZ4 off (the bodies are
//!   incompressible anyway);
//! * one region; each message is a protobuf `BytesValue` whose value is the
//!   body with its first 8 bytes replaced by the entry index (big endian),
//!   so the payload is exactly the body size and the read-back can check
//!   the order;
//! * entries go into a `LogBatch` of 1,000 (cut at sync points) written
//!   with `write(sync = false)`; a batch that ends at a sync point is
//!   written with `write(sync = true)` (one fdatasync);
//! * the final flush: `Engine::sync()` is a no-op in 0.4.2 (it writes an
//!   empty batch and `write` returns early for empty batches), so a synced
//!   write is forced with a 0-byte key-value put and `write(sync = true)`.
//!
//! Read-back (timed separately): `fetch_entries_to` in chunks of 1,024 from
//! the first to the last index, checking each entry's index and length.

use crate::env::{allocated_bytes, scratch_dir};
use crate::inputs::Bodies;
use crate::workload::{Sample, Workload};
use protobuf::well_known_types::BytesValue;
use raft_engine::{Config, Engine, LogBatch, MessageExt, ReadableSize};
use std::time::Instant;

const REGION: u64 = 1;
/// Entries per `LogBatch` (the harness's batch).
pub const LOG_BATCH: usize = 1_000;
const READ_CHUNK: u64 = 1_024;

/// Entries are `BytesValue`s whose first 8 bytes are the index.
struct Entries;

impl MessageExt for Entries {
    type Entry = BytesValue;

    fn index(e: &BytesValue) -> u64 {
        index_of(e.get_value())
    }
}

fn index_of(value: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = value.len().min(8);
    b[..n].copy_from_slice(&value[..n]);
    u64::from_be_bytes(b)
}

fn entry(index: u64, body: &[u8]) -> BytesValue {
    let mut v = body.to_vec();
    let n = v.len().min(8);
    v[..n].copy_from_slice(&index.to_be_bytes()[..n]);
    let mut e = BytesValue::new();
    e.set_value(v);
    e
}

/// Writes `pending` as one batch; `sync` makes the write fdatasync.
fn write(engine: &Engine, pending: &mut Vec<BytesValue>, sync: bool) {
    let mut batch = LogBatch::with_capacity(pending.len());
    batch.add_entries::<Entries>(REGION, pending).expect("add_entries");
    engine.write(&mut batch, sync).expect("write");
    pending.clear();
}

/// The forced synced write that `Engine::sync()` does not do in 0.4.2.
fn force_sync(engine: &Engine) {
    let mut batch = LogBatch::default();
    batch.put(REGION, b"sync".to_vec(), Vec::new()).expect("put");
    engine.write(&mut batch, true).expect("synced write");
}

/// Append, sync points, final synced write; then read back.
pub fn run(w: &Workload, bodies: &Bodies) -> Sample {
    assert!(w.body_size >= 8, "raft-engine entries carry the index in their first 8 bytes");
    let dir = scratch_dir("raft-engine");
    let cfg = Config {
        dir: dir.path().to_str().expect("utf-8 scratch path").to_string(),
        batch_compression_threshold: ReadableSize(0),
        ..Config::default()
    };
    let engine = Engine::open(cfg).expect("open raft-engine");

    let start = Instant::now();
    let mut pending: Vec<BytesValue> = Vec::with_capacity(LOG_BATCH);
    for i in 0..w.messages {
        pending.push(entry(i as u64 + 1, bodies.get(i)));
        let sync_point = w.is_sync_point(i + 1);
        if sync_point || pending.len() == LOG_BATCH {
            write(&engine, &mut pending, sync_point);
        }
    }
    if !pending.is_empty() {
        write(&engine, &mut pending, false);
    }
    let append_only = start.elapsed();
    force_sync(&engine);
    let total = start.elapsed();

    let disk_bytes = allocated_bytes(dir.path());
    let start = Instant::now();
    let read_count = read_back(&engine, w.body_size);
    let read = start.elapsed();
    drop(engine);
    Sample { total, append_only, read, read_count, disk_bytes }
}

/// Fetches every entry in index order; returns how many had the expected
/// index and length (stops at the first that does not).
fn read_back(engine: &Engine, body_size: usize) -> usize {
    let (Some(first), Some(last)) = (engine.first_index(REGION), engine.last_index(REGION)) else { return 0 };
    let mut n = 0;
    let mut buf: Vec<BytesValue> = Vec::with_capacity(READ_CHUNK as usize);
    let mut at = first;
    while at <= last {
        let end = (at + READ_CHUNK).min(last + 1);
        buf.clear();
        engine.fetch_entries_to::<Entries>(REGION, at, end, None, &mut buf).expect("fetch_entries_to");
        for (k, e) in buf.iter().enumerate() {
            if index_of(e.get_value()) != at + k as u64 || e.get_value().len() != body_size {
                return n;
            }
            n += 1;
        }
        at = end;
    }
    n
}
