#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Replication: what a replica costs the producer, with the in-memory link
//! (`mqstore::replication::memory`), so the figures are the store's own
//! cost, not a network's.
//!
//! Every store lives in a fresh directory under `/work/bench-tmp`; both
//! sides `FlushMode::Async`, 128 B random bodies, one topic with 4 queues,
//! `sync()` before every timed run. Variants:
//!
//! * `none`: a standalone master (the baseline).
//! * `async`: master in `ReplicationMode::Async` with a slave on the link.
//! * `sync`: `ReplicationMode::Sync`, `ReplicaAck::Applied`: each send
//!   waits until the slave has written the message.
//! * `sync-durable`: `ReplicaAck::Durable`: each send waits until the
//!   slave has also fsynced it.
//!
//! Each with 1 and 8 sending threads; messages per run: 50,000 for `none`
//! and `async`, 20,000 for `sync`, 2,000 for `sync-durable` (times
//! `MQSTORE_BENCH_SCALE`). Reported: msgs/s (all sends, until the last
//! returns) and per-send latency p50 / p99 / p99.9 in microseconds.
//!
//! Criterion mode (default): `cargo bench --bench replication` (`-- --test`
//! for a smoke run). Interleaved mode: `MQSTORE_BENCH_INTERLEAVED=5 cargo
//! bench --bench replication` runs every variant once per round, rotating
//! the order, after one warm-up round, and prints medians, per-round
//! ranges and the ratio to `none` per round.

#[path = "common/mod.rs"]
mod common;

use common::*;
use criterion::{Criterion, SamplingMode, Throughput};
use mqstore::message::Message;
use mqstore::replication::memory::MemoryLink;
use mqstore::replication::{ReplicaAck, ReplicationMode, ReplicationOptions};
use mqstore::store::{SendStatus, Store, StoreOptions};
use mqstore::topic::TopicConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BODY: usize = 128;
const TOPIC: &str = "bench";
const QUEUES: u32 = 4;
const THREADS: [usize; 2] = [1, 8];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    None,
    Async,
    Sync,
    SyncDurable,
}

const VARIANTS: [Variant; 4] = [Variant::None, Variant::Async, Variant::Sync, Variant::SyncDurable];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::Async => "async",
            Variant::Sync => "sync",
            Variant::SyncDurable => "sync-durable",
        }
    }

    fn messages(self) -> usize {
        scale()
            * match self {
                Variant::None | Variant::Async => 50_000,
                Variant::Sync => 20_000,
                Variant::SyncDurable => 2_000,
            }
    }
}

/// One timed run: throughput and per-send latencies.
struct Run {
    elapsed: Duration,
    latencies: Vec<u64>,
}

fn run(v: Variant, threads: usize) -> Run {
    settle();
    let (d1, d2) = (bench_dir("repl-master"), bench_dir("repl-slave"));
    let master_repl = match v {
        Variant::None | Variant::Async => ReplicationOptions::master(ReplicationMode::Async),
        Variant::Sync => ReplicationOptions::master(ReplicationMode::Sync),
        Variant::SyncDurable => ReplicationOptions::master(ReplicationMode::Sync).ack(ReplicaAck::Durable),
    };
    let slave_repl = match v {
        Variant::SyncDurable => ReplicationOptions::slave().ack(ReplicaAck::Durable),
        _ => ReplicationOptions::slave(),
    };
    let master = Store::open(d1.path(), StoreOptions::default().replication(master_repl)).unwrap();
    master.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    let link = MemoryLink::new();
    let slave = if v == Variant::None {
        None
    } else {
        let slave = Store::open(d2.path(), StoreOptions::default().replication(slave_repl)).unwrap();
        master.attach_replicator(link.replicator()).unwrap();
        link.start(&master, &slave).unwrap();
        Some(slave)
    };
    let n = v.messages();
    let bodies = Arc::new(Bodies::new(n, BODY, 7));
    let base = Instant::now();
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (m, bodies) = (master.clone(), bodies.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(n / threads + 1);
                for i in (t..n).step_by(threads) {
                    let msg = Message::new(TOPIC, bodies.get(i).to_vec());
                    let t0 = now_ns(base);
                    let r = m.send(msg).unwrap();
                    lat.push(now_ns(base) - t0);
                    assert_eq!(r.status, SendStatus::SendOk, "{v:?}");
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for h in handles {
        latencies.extend(h.join().unwrap());
    }
    let elapsed = start.elapsed();
    link.stop();
    master.close().unwrap();
    if let Some(s) = slave {
        s.close().unwrap();
    }
    Run { elapsed, latencies }
}

fn interleaved(rounds: usize) {
    println!("# mqstore replication benchmark, interleaved ({rounds} rounds after 1 warm-up)");
    println!();
    let cases: Vec<(Variant, usize)> = THREADS.iter().flat_map(|&t| VARIANTS.map(|v| (v, t))).collect();
    for &(v, t) in &cases {
        let _ = run(v, t);
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut lats: Vec<Vec<u64>> = vec![Vec::new(); cases.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for r in 0..rounds {
        let mut line = format!("round {}:", r + 1);
        let mut this: Vec<f64> = vec![0.0; cases.len()];
        for (v, t) in rotated(&cases, r) {
            let i = cases.iter().position(|c| *c == (v, t)).unwrap();
            let out = run(v, t);
            let msgs = rate(v.messages(), out.elapsed);
            line.push_str(&format!(" {}x{t}={}", v.name(), fmt_rate(msgs)));
            this[i] = msgs;
            rates[i].push(msgs);
            lats[i].extend(out.latencies);
        }
        for (i, &(_, t)) in cases.iter().enumerate() {
            let base = cases.iter().position(|c| *c == (Variant::None, t)).unwrap();
            ratios[i].push(this[i] / this[base]);
        }
        println!("{line}");
    }
    println!();
    println!(
        "| variant | threads | msgs/s (median) | min-max | / none (median, min-max) | p50 us | p99 us | p99.9 us |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, &(v, t)) in cases.iter().enumerate() {
        let (lo, hi) = min_max(&rates[i]);
        let (rlo, rhi) = min_max(&ratios[i]);
        println!(
            "| {} | {t} | {} | {}-{} | {:.2}x ({rlo:.2}-{rhi:.2}) | {:.1} | {:.1} | {:.1} |",
            v.name(),
            fmt_rate(median(&rates[i])),
            fmt_rate(lo),
            fmt_rate(hi),
            median(&ratios[i]),
            percentile_us(&lats[i], 0.5),
            percentile_us(&lats[i], 0.99),
            percentile_us(&lats[i], 0.999),
        );
    }
    println!();
}

fn criterion_mode() {
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("replication_send_128B");
    configure(&mut group);
    group.sampling_mode(SamplingMode::Flat);
    for t in THREADS {
        for v in VARIANTS {
            group.throughput(Throughput::Elements(v.messages() as u64));
            group.bench_function(format!("{}x{t}", v.name()), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| run(v, t).elapsed).sum());
            });
        }
    }
    group.finish();
    c.final_summary();
}

fn main() {
    match interleaved_rounds() {
        Some(rounds) => interleaved(rounds),
        None => criterion_mode(),
    }
}
