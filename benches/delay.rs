#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Delayed messages: what the delay path costs the producer, and how fast
//! the `mqstore:delay` thread moves due messages to their topic.
//!
//! Every store lives in a fresh directory under `/work/bench-tmp`;
//! `FlushMode::Async`, 128 B random bodies, one topic with 4 queues, one
//! sending thread, `sync()` before every timed run.
//!
//! * `send-plain`: 100,000 `Store::send` (times `MQSTORE_BENCH_SCALE`), no
//!   delay: the baseline.
//! * `send-delayed`: the same sends with delay level 3 (stored in the
//!   schedule topic with its real topic, queue and due time added to the
//!   properties).
//! * `deliver`: 100,000 messages sent with delay level 1 on a
//!   [`ManualClock`] (untimed), then the clock jumps past their due time and
//!   the timed region runs until all of them are readable in their real
//!   queues: the delivery thread reads the schedule queue, writes the
//!   copies in batches of 64, and dispatch makes them visible.
//!
//! Criterion mode (default): `cargo bench --bench delay` (`-- --test` for a
//! smoke run). Interleaved mode: `MQSTORE_BENCH_INTERLEAVED=5 cargo bench
//! --bench delay` runs the three variants once per round, rotating the
//! order, after one warm-up round, and prints median msgs/s, min-max, and
//! `send-delayed / send-plain` per round.

#[path = "common/mod.rs"]
mod common;

use common::*;
use criterion::{Criterion, SamplingMode, Throughput};
use mqstore::commitlog::CommitLogOptions;
use mqstore::message::Message;
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use mqstore::ManualClock;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MESSAGES: usize = 100_000;
const BODY: usize = 128;
const TOPIC: &str = "bench";
const QUEUES: u32 = 4;
const T0: u64 = 1_700_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    SendPlain,
    SendDelayed,
    Deliver,
}

const VARIANTS: [Variant; 3] = [Variant::SendPlain, Variant::SendDelayed, Variant::Deliver];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::SendPlain => "send-plain",
            Variant::SendDelayed => "send-delayed",
            Variant::Deliver => "deliver",
        }
    }
}

fn open(dir: &std::path::Path, clock: Arc<ManualClock>) -> Store {
    let opts = StoreOptions::default()
        .commit_log_options(CommitLogOptions::default().clock(clock))
        .delay_poll_interval(Duration::from_millis(1));
    let store = Store::open(dir, opts).unwrap();
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    store
}

fn visible(store: &Store) -> u64 {
    (0..QUEUES).map(|q| store.max_offset(TOPIC, q).unwrap()).sum()
}

/// One timed run of `v` over `n` messages.
fn run(v: Variant, n: usize, bodies: &Bodies) -> Duration {
    let dir = bench_dir(v.name());
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir.path(), clock.clone());
    let msg = |i: usize| Message::new(TOPIC, bytes::Bytes::copy_from_slice(bodies.get(i % bodies.count())));
    let took = match v {
        Variant::SendPlain | Variant::SendDelayed => {
            settle();
            let start = Instant::now();
            for i in 0..n {
                let m = if v == Variant::SendDelayed { msg(i).with_delay_level(3) } else { msg(i) };
                store.send(m).unwrap();
            }
            start.elapsed()
        }
        Variant::Deliver => {
            for i in 0..n {
                store.send(msg(i).with_delay_level(1)).unwrap();
            }
            // Everything is in the schedule queue before the clock moves.
            let deadline = Instant::now() + Duration::from_secs(60);
            while store.schedule_stats().pending.first().copied().unwrap_or(0) < n as u64 {
                assert!(Instant::now() < deadline, "schedule queue never filled");
                std::thread::sleep(Duration::from_millis(1));
            }
            settle();
            let start = Instant::now();
            clock.set_ms(T0 + 1_000);
            while visible(&store) < n as u64 {
                assert!(start.elapsed() < Duration::from_secs(120), "delivery stalled at {}", visible(&store));
                std::hint::spin_loop();
            }
            start.elapsed()
        }
    };
    store.close().unwrap();
    took
}

fn run_interleaved(rounds: usize) {
    let n = MESSAGES * scale();
    let bodies = Bodies::new(n.min(65_536), BODY, 0xde1a_7ed0);
    println!("\n### delayed messages (N = {n}, body {BODY} B, Async flush; {rounds} rounds after 1 warm-up round)\n");
    for v in VARIANTS {
        run(v, n.min(10_000), &bodies);
    }
    let mut samples: Vec<[f64; 3]> = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let mut row = [0.0; 3];
        let mut line = format!("round {}:", r + 1);
        for v in rotated(&VARIANTS, r) {
            let d = run(v, n, &bodies);
            let i = VARIANTS.iter().position(|x| *x == v).unwrap_or(0);
            row[i] = rate(n, d);
            line.push_str(&format!(" {}={} msgs/s", v.name(), fmt_rate(row[i])));
        }
        println!("{line}");
        samples.push(row);
    }
    println!("\n| variant | median msgs/s | min-max msgs/s |\n|---|---|---|");
    for (i, v) in VARIANTS.iter().enumerate() {
        let xs: Vec<f64> = samples.iter().map(|r| r[i]).collect();
        let (lo, hi) = min_max(&xs);
        println!("| {} | {} | {}-{} |", v.name(), fmt_rate(median(&xs)), fmt_rate(lo), fmt_rate(hi));
    }
    let ratios: Vec<f64> = samples.iter().map(|r| r[1] / r[0]).collect();
    let (lo, hi) = min_max(&ratios);
    println!(
        "\nsend-delayed / send-plain: median {:.2}x (min-max {:.2}-{:.2}x, per-round ratios)",
        median(&ratios),
        lo,
        hi
    );
}

fn main() {
    if let Some(rounds) = interleaved_rounds() {
        run_interleaved(rounds);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let n = MESSAGES * scale();
    let bodies = Bodies::new(n.min(65_536), BODY, 0xde1a_7ed0);
    let mut g = c.benchmark_group("delay_128B");
    configure(&mut g);
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(n as u64));
    for v in VARIANTS {
        g.bench_function(v.name(), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run(v, n, &bodies)).sum());
        });
    }
    g.finish();
    c.final_summary();
}
