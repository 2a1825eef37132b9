#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Dispatch lag: how far the consume queue trails the commit log while one
//! producer appends as fast as it can (`FlushMode::Async`).
//!
//! Each run opens a fresh store (default options) under `/work/bench-tmp`
//! (removed afterwards, `sync()` before) and creates one topic with one
//! queue. One thread sends N messages with `Store::send`, one at a time,
//! with no pause, noting the time just before each send (`t_append`: the
//! append happens inside the call). After every send it reads the
//! consume queue's end (`Store::max_offset`, the position a consumer can
//! read up to) and the commit log's written end (`CommitLog::max_offset`):
//! every queue offset seen for the first time gets that time as
//! `t_visible`, and written-but-not-visible bytes are the backlog (every
//! record of a run has the same size, measured from the first two sends
//! and checked at the end). After the last send it keeps looking until
//! every message is visible.
//!
//! Reported per message: lag = `t_visible - t_append` (p50, p99, p99.9,
//! max), the send call's own duration for comparison, and the largest
//! backlog seen, in bytes and messages. The producer is its own observer,
//! so the resolution is one send (about 2 us), and no third thread competes
//! for the 2 cores (a spinning observer thread, tried first, mostly
//! measured its own scheduling delays: p50 5 ms on the loaded machine).
//! Under Async flush a send that finds no dispatch round running
//! dispatches its own record before it returns (lag = one send); the tail
//! comes from rounds of the `mqstore:dispatch` thread, which the producer
//! outruns while it holds the round.
//!
//! Workloads (times `MQSTORE_BENCH_SCALE`): `dispatch_lag_128B` (400,000 x
//! 128 B) and `dispatch_lag_1KiB` (100,000 x 1 KiB).
//!
//! Criterion mode (default): `cargo bench --bench dispatch` (add `--
//! --test` for a smoke run); the measured time is the whole run (sends of
//! N messages until the last one is visible), and the pooled lag
//! percentiles are printed after the group.
//!
//! Interleaved mode: `MQSTORE_BENCH_INTERLEAVED=5 cargo bench --bench
//! dispatch` runs one warm-up round and then the given number of rounds, the
//! two sizes alternating with the starting one rotated, and prints the
//! percentiles pooled over the rounds with the per-round p50 / p99 / max /
//! backlog ranges. `MQSTORE_BENCH_ONLY=128B` selects workloads by name.

#[path = "common/mod.rs"]
mod common;

use common::*;
use criterion::{Criterion, Throughput};
use mqstore::message::Message;
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use std::cell::RefCell;
use std::time::{Duration, Instant};

const TOPIC: &str = "lag";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Workload {
    name: &'static str,
    messages: usize,
    body: usize,
}

const W_128B: Workload = Workload { name: "dispatch_lag_128B", messages: 400_000, body: 128 };
const W_1KIB: Workload = Workload { name: "dispatch_lag_1KiB", messages: 100_000, body: 1024 };

fn workloads() -> Vec<Workload> {
    [W_128B, W_1KIB]
        .into_iter()
        .map(|w| Workload { messages: w.messages * scale(), ..w })
        .filter(|w| selected(w.name))
        .collect()
}

/// What one run measured.
struct Run {
    /// Per message: visible - append, ns.
    lag: Vec<u64>,
    /// Per message: the send call's duration, ns.
    send: Vec<u64>,
    max_backlog_bytes: u64,
    record_size: u64,
    wall: Duration,
}

impl Run {
    fn max_backlog_messages(&self) -> u64 {
        self.max_backlog_bytes / self.record_size.max(1)
    }
}

fn run(w: Workload) -> Run {
    settle();
    let dir = bench_dir("dispatch-lag");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open store");
    store.create_topic(TopicConfig::new(TOPIC, 1)).expect("create topic");
    let bodies = Bodies::new(1024, w.body, 0x5eed_0004 ^ w.body as u64);
    let n = w.messages;
    let log_start = store.commit_log().max_offset().0;
    let mut obs = Observer { visible: vec![0; n], seen: 0, max_backlog: 0, record_size: 0, log_start };
    let mut t_append = Vec::with_capacity(n);
    let mut t_send = Vec::with_capacity(n);
    let base = Instant::now();
    let mut first_phys = 0;
    for i in 0..n {
        let msg = Message::new(TOPIC, bodies.get(i % bodies.count()).to_vec());
        let t0 = now_ns(base);
        let r = store.send(msg).expect("send");
        t_append.push(t0);
        t_send.push(now_ns(base) - t0);
        match i {
            0 => first_phys = r.physical_offset.0,
            1 => obs.record_size = r.physical_offset.0 - first_phys,
            _ => {}
        }
        obs.look(&store, base);
    }
    while obs.seen < n {
        std::hint::spin_loop();
        obs.look(&store, base);
    }
    let wall = base.elapsed();
    let log_bytes = store.commit_log().max_offset().0 - log_start;
    assert_eq!(log_bytes, obs.record_size * n as u64, "records of a run must all have the same size");
    store.close().expect("close store");
    drop(dir);
    let lag = obs.visible.iter().zip(&t_append).map(|(v, a)| v.saturating_sub(*a)).collect();
    Run { lag, send: t_send, max_backlog_bytes: obs.max_backlog, record_size: obs.record_size, wall }
}

/// The producer's view of the consume queue, refreshed after every send.
struct Observer {
    /// Per queue offset: when it was first seen visible (ns since base).
    visible: Vec<u64>,
    seen: usize,
    max_backlog: u64,
    /// Bytes per record (0 until the second send).
    record_size: u64,
    log_start: u64,
}

impl Observer {
    fn look(&mut self, store: &Store, base: Instant) {
        let end = (store.max_offset(TOPIC, 0).expect("max_offset") as usize).min(self.visible.len());
        let written = store.commit_log().max_offset().0;
        if end > self.seen {
            let now = now_ns(base);
            self.visible[self.seen..end].fill(now);
            self.seen = end;
        }
        if self.record_size > 0 {
            let visible_end = self.log_start + self.seen as u64 * self.record_size;
            self.max_backlog = self.max_backlog.max(written.saturating_sub(visible_end));
        }
    }
}

fn report_header(title: &str) {
    println!();
    println!("### {title}");
    println!();
    println!("| workload | samples | lag p50 us | lag p99 us | lag p99.9 us | lag max us | send p50 us | max backlog bytes | max backlog msgs | record bytes |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
}

fn report_line(name: &str, lag: &[u64], send: &[u64], backlog_bytes: u64, backlog_msgs: u64, record: u64) {
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {} | {} | {record} |",
        lag.len(),
        percentile_us(lag, 0.50),
        percentile_us(lag, 0.99),
        percentile_us(lag, 0.999),
        *lag.iter().max().unwrap_or(&0) as f64 / 1000.0,
        percentile_us(send, 0.50),
        fmt_rate(backlog_bytes as f64),
        fmt_rate(backlog_msgs as f64),
    );
}

fn run_interleaved(rounds: usize) {
    let ws = workloads();
    println!("# mqstore dispatch lag, interleaved mode ({rounds} rounds after 1 warm-up round)");
    for &w in &ws {
        let _ = run(w);
    }
    let mut runs: Vec<Vec<Run>> = ws.iter().map(|_| Vec::new()).collect();
    for r in 0..rounds {
        let mut line = format!("round {}:", r + 1);
        for w in rotated(&ws, r) {
            let x = run(w);
            line.push_str(&format!(
                " {}: p50 {:.1} us, p99 {:.1} us, max {:.1} us, backlog {} B;",
                w.name,
                percentile_us(&x.lag, 0.5),
                percentile_us(&x.lag, 0.99),
                *x.lag.iter().max().unwrap_or(&0) as f64 / 1000.0,
                fmt_rate(x.max_backlog_bytes as f64)
            ));
            runs[ws.iter().position(|y| *y == w).unwrap_or(0)].push(x);
        }
        println!("{line}");
    }
    report_header("append -> consume-queue unit visible, pooled over the rounds (max backlog: largest of any round)");
    for (w, rs) in ws.iter().zip(&runs) {
        let lag: Vec<u64> = rs.iter().flat_map(|x| x.lag.iter().copied()).collect();
        let send: Vec<u64> = rs.iter().flat_map(|x| x.send.iter().copied()).collect();
        let bb = rs.iter().map(|x| x.max_backlog_bytes).max().unwrap_or(0);
        let bm = rs.iter().map(Run::max_backlog_messages).max().unwrap_or(0);
        report_line(w.name, &lag, &send, bb, bm, rs.first().map_or(0, |x| x.record_size));
    }
    println!();
    println!("| workload | per-round lag p50 us (median, min-max) | per-round lag p99 us | per-round lag max us | per-round max backlog bytes | msgs/s (median) |");
    println!("|---|---|---|---|---|---|");
    for (w, rs) in ws.iter().zip(&runs) {
        let col = |f: &dyn Fn(&Run) -> f64| {
            let v: Vec<f64> = rs.iter().map(f).collect();
            let (lo, hi) = min_max(&v);
            format!("{:.1} ({lo:.1}-{hi:.1})", median(&v))
        };
        let rates: Vec<f64> = rs.iter().map(|x| rate(w.messages, x.wall)).collect();
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            w.name,
            col(&|x| percentile_us(&x.lag, 0.5)),
            col(&|x| percentile_us(&x.lag, 0.99)),
            col(&|x| *x.lag.iter().max().unwrap_or(&0) as f64 / 1000.0),
            col(&|x| x.max_backlog_bytes as f64),
            fmt_rate(median(&rates)),
        );
    }
    println!();
}

fn main() {
    if let Some(rounds) = interleaved_rounds() {
        run_interleaved(rounds);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    for w in workloads() {
        let collected: RefCell<Vec<Run>> = RefCell::new(Vec::new());
        let mut group = c.benchmark_group(w.name);
        configure(&mut group);
        group.throughput(Throughput::Elements(w.messages as u64));
        group.bench_function("mqstore-async", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let x = run(w);
                        let d = x.wall;
                        collected.borrow_mut().push(x);
                        d
                    })
                    .sum()
            });
        });
        group.finish();
        let rs = collected.borrow();
        if !rs.is_empty() {
            report_header(&format!("{}: every criterion iteration pooled, warm-up included", w.name));
            let lag: Vec<u64> = rs.iter().flat_map(|x| x.lag.iter().copied()).collect();
            let send: Vec<u64> = rs.iter().flat_map(|x| x.send.iter().copied()).collect();
            let bb = rs.iter().map(|x| x.max_backlog_bytes).max().unwrap_or(0);
            let bm = rs.iter().map(Run::max_backlog_messages).max().unwrap_or(0);
            report_line(w.name, &lag, &send, bb, bm, rs[0].record_size);
            println!();
        }
    }
    c.final_summary();
}
