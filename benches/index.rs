#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The message index: lookup latency on a large store, and what indexing
//! costs the append path.
//!
//! Every store lives in a fresh directory under `/work/bench-tmp`;
//! `FlushMode::Async`, default options (index files of 131,072 slots and
//! 262,144 entries), 128 B random bodies.
//!
//! ## Lookups (`index_lookup`)
//!
//! One store filled (untimed) with 10,000,000 messages
//! (`MQSTORE_BENCH_INDEX_MESSAGES` to change) by `send_batch` of 500 over
//! a 4-queue topic, message `i` with key `k<i>` (so every message has two
//! index entries: its key and its unique id, 20 M entries in about 77
//! files); the bench waits until everything is dispatched and indexed.
//! Then, timed one call at a time over 10,000 random messages each:
//!
//! * `query_by_key`: `Store::query_by_key(topic, "k<i>", 0, MAX, 1)`;
//! * `by unique id`: `Store::message_by_id(msg_id)` (tries the id as a
//!   store-level id, then looks it up in every topic);
//! * `by offset id`: `Store::message_by_id(offset_msg_id)` (no index: the
//!   id holds the offset).
//!
//! Each must return the right message. Reported: p50 / p99 / p99.9 / max
//! in microseconds, and the fill rate.
//!
//! ## Indexing cost (`index_append`)
//!
//! 200,000 (times `MQSTORE_BENCH_SCALE`) single `Store::send` calls from
//! one thread into a fresh store, messages without keys (only the unique
//! id is indexed) against messages with three keys (four entries each;
//! the keys also make each record about 30 bytes longer), built before
//! the timed region, interleaved rounds; the ratio keys / no keys per
//! round.
//!
//! `MQSTORE_BENCH_INTERLEAVED=5 cargo bench --bench index` runs both
//! (`MQSTORE_BENCH_ONLY=lookup` or `=append` for one); plain `cargo bench
//! --bench index` runs the append workload under criterion.

#[path = "common/mod.rs"]
mod common;

use common::*;
use criterion::{Criterion, SamplingMode, Throughput};
use mqstore::message::Message;
use mqstore::store::{SendResult, Store, StoreOptions};
use mqstore::topic::TopicConfig;
use std::time::{Duration, Instant};

const TOPIC: &str = "bench";
const QUEUES: u32 = 4;
const BODY: usize = 128;
const LOOKUP_MESSAGES: usize = 10_000_000;
const LOOKUPS: usize = 10_000;
const APPEND_MESSAGES: usize = 200_000;

fn open(label: &str) -> (Store, tempfile::TempDir) {
    let dir = bench_dir(label);
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).expect("topic");
    (store, dir)
}

fn visible(store: &Store) -> u64 {
    (0..QUEUES).map(|q| store.max_offset(TOPIC, q).unwrap()).sum()
}

fn run_lookups() {
    let n: usize =
        std::env::var("MQSTORE_BENCH_INDEX_MESSAGES").ok().and_then(|s| s.parse().ok()).unwrap_or(LOOKUP_MESSAGES);
    let bodies = Bodies::new(65_536, BODY, 0x1d3c_5eed);
    let (store, _dir) = open("index-lookup");
    let start = Instant::now();
    let mut sent: Vec<SendResult> = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let batch: Vec<Message> = (i..(i + 500).min(n))
            .map(|j| {
                Message::new(TOPIC, bytes::Bytes::copy_from_slice(bodies.get(j % bodies.count())))
                    .with_key(format!("k{j}"))
            })
            .collect();
        i += batch.len();
        sent.extend(store.send_batch(batch).expect("send_batch"));
    }
    while visible(&store) < n as u64 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let fill = start.elapsed();
    println!(
        "\n### index_lookup: {n} messages of {BODY} B, each with one key ({} index entries), filled in {:.1} s ({} msgs/s incl. dispatch and indexing)\n",
        2 * n,
        fill.as_secs_f64(),
        fmt_rate(rate(n, fill))
    );
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut pick = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut by_key = Vec::with_capacity(LOOKUPS);
    let mut by_uniq = Vec::with_capacity(LOOKUPS);
    let mut by_offset = Vec::with_capacity(LOOKUPS);
    for _ in 0..LOOKUPS {
        let j = pick();
        let t = Instant::now();
        let got = store.query_by_key(TOPIC, &format!("k{j}"), 0, u64::MAX, 1).expect("query");
        by_key.push(t.elapsed().as_nanos() as u64);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].physical_offset(), sent[j].physical_offset);

        let j = pick();
        let t = Instant::now();
        let got = store.message_by_id(&sent[j].msg_id).expect("by id").expect("found");
        by_uniq.push(t.elapsed().as_nanos() as u64);
        assert_eq!(got.physical_offset(), sent[j].physical_offset);

        let j = pick();
        let t = Instant::now();
        let got = store.message_by_id(&sent[j].offset_msg_id).expect("by offset id").expect("found");
        by_offset.push(t.elapsed().as_nanos() as u64);
        assert_eq!(got.physical_offset(), sent[j].physical_offset);
    }
    println!("| lookup | samples | p50 us | p99 us | p99.9 us | max us |\n|---|---|---|---|---|---|");
    println!("{}", latency_line("query_by_key", &by_key));
    println!("{}", latency_line("message_by_id (unique id)", &by_uniq));
    println!("{}", latency_line("message_by_id (offset id)", &by_offset));
    store.close().expect("close");
}

/// One timed run: `n` sends, with three keys each or none.
fn append_run(n: usize, keys: bool, bodies: &Bodies) -> Duration {
    let (store, _dir) = open(if keys { "index-append-keys" } else { "index-append-nokeys" });
    // Built before the clock starts: only the sends are timed.
    let msgs: Vec<Message> = (0..n)
        .map(|i| {
            let m = Message::new(TOPIC, bytes::Bytes::copy_from_slice(bodies.get(i % bodies.count())));
            if keys {
                m.with_keys([format!("order-{i}"), format!("user-{}", i % 1000), "all".into()])
            } else {
                m
            }
        })
        .collect();
    settle();
    let start = Instant::now();
    for m in msgs {
        store.send(m).expect("send");
    }
    let took = start.elapsed();
    store.close().expect("close");
    took
}

fn run_append(rounds: usize) {
    let n = APPEND_MESSAGES * scale();
    let bodies = Bodies::new(65_536, BODY, 0xa99e_7d00);
    println!(
        "\n### index_append: {n} x send of {BODY} B, one thread, Async flush ({rounds} rounds after 1 warm-up round)\n"
    );
    append_run(n / 10, false, &bodies);
    append_run(n / 10, true, &bodies);
    let mut samples = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let order = if r % 2 == 0 { [false, true] } else { [true, false] };
        let mut row = [0.0; 2];
        for keys in order {
            row[usize::from(keys)] = rate(n, append_run(n, keys, &bodies));
        }
        println!("round {}: no keys={} msgs/s, 3 keys={} msgs/s", r + 1, fmt_rate(row[0]), fmt_rate(row[1]));
        samples.push(row);
    }
    println!("\n| messages | median msgs/s | min-max msgs/s |\n|---|---|---|");
    for (i, label) in ["no keys (unique id indexed)", "3 keys each"].iter().enumerate() {
        let xs: Vec<f64> = samples.iter().map(|r| r[i]).collect();
        let (lo, hi) = min_max(&xs);
        println!("| {label} | {} | {}-{} |", fmt_rate(median(&xs)), fmt_rate(lo), fmt_rate(hi));
    }
    let ratios: Vec<f64> = samples.iter().map(|r| r[1] / r[0]).collect();
    let (lo, hi) = min_max(&ratios);
    println!("\n3 keys / no keys: median {:.2}x (min-max {lo:.2}-{hi:.2}x, per-round ratios)", median(&ratios));
}

fn main() {
    if let Some(rounds) = interleaved_rounds() {
        if selected("index_append") {
            run_append(rounds);
        }
        if selected("index_lookup") {
            run_lookups();
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let n = APPEND_MESSAGES * scale();
    let bodies = Bodies::new(65_536, BODY, 0xa99e_7d00);
    let mut g = c.benchmark_group("index_append");
    configure(&mut g);
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(n as u64));
    for (name, keys) in [("no-keys", false), ("3-keys", true)] {
        g.bench_function(name, |b| b.iter_custom(|iters| (0..iters).map(|_| append_run(n, keys, &bodies)).sum()));
    }
    g.finish();
    c.final_summary();
}
