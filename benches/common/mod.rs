//! Helpers shared by the benches (`#[path = "common/mod.rs"] mod common;`
//! in each): scratch directories, settling the disk between runs, the
//! statistics and formatting of the interleaved tables, workload
//! selection, and the raw baselines' inputs.

// Each bench uses a different subset.
#![allow(dead_code)]

mod plain;
pub use plain::*;

use criterion::SamplingMode;
use std::time::{Duration, Instant};

/// Root of every benchmark directory (same file system as the repository).
pub const BENCH_ROOT: &str = "/work/bench-tmp";

/// Multiplies every workload's message count (`MQSTORE_BENCH_SCALE`,
/// default 1). Scale 10 gives the sizes of the peer harness in
/// `performance.md` (2 M x 128 B, 500 k x 1 KiB, 1 M durable), where the
/// final flush is disk-bound rather than absorbed by caches.
pub fn scale() -> usize {
    std::env::var("MQSTORE_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).filter(|&n| n > 0).unwrap_or(1)
}

/// The round count of the interleaved mode (`MQSTORE_BENCH_INTERLEAVED`),
/// or `None` for criterion mode.
pub fn interleaved_rounds() -> Option<usize> {
    let v = std::env::var("MQSTORE_BENCH_INTERLEAVED").ok()?;
    let rounds: usize = v.trim().parse().expect("MQSTORE_BENCH_INTERLEAVED must be a round count");
    assert!(rounds > 0, "MQSTORE_BENCH_INTERLEAVED must be at least 1");
    Some(rounds)
}

/// A fresh directory under [`BENCH_ROOT`], removed on drop.
pub fn bench_dir(label: &str) -> tempfile::TempDir {
    std::fs::create_dir_all(BENCH_ROOT).expect("create bench root");
    tempfile::Builder::new().prefix(&format!("{label}-")).tempdir_in(BENCH_ROOT).expect("create bench dir")
}

/// Flushes the whole file system before a run (untimed), so one run's
/// writeback and the discards of its deleted files (the work disk is
/// mounted with `discard`) do not land in the next run's timing.
pub fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

pub fn rate(messages: usize, d: Duration) -> f64 {
    messages as f64 / d.as_secs_f64()
}

/// Whether the interleaved mode runs the workload `name`:
/// `MQSTORE_BENCH_ONLY` holds a comma-separated list of substrings (all
/// workloads when unset).
pub fn selected(name: &str) -> bool {
    match std::env::var("MQSTORE_BENCH_ONLY") {
        Ok(list) => list.split(',').map(str::trim).any(|pat| !pat.is_empty() && name.contains(pat)),
        Err(_) => true,
    }
}

pub fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
}

/// Nearest-rank percentile of unsorted nanosecond samples, in microseconds.
pub fn percentile_us(samples: &[u64], q: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1] as f64 / 1000.0
}

pub fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// A rate with thousands separators, for the tables.
pub fn fmt_rate(r: f64) -> String {
    // Thousands separators for readability.
    let n = r.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One latency table row: samples, p50, p99, p99.9 and max in microseconds.
pub fn latency_line(name: &str, lat: &[u64]) -> String {
    format!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        lat.len(),
        percentile_us(lat, 0.50),
        percentile_us(lat, 0.99),
        percentile_us(lat, 0.999),
        *lat.iter().max().unwrap_or(&0) as f64 / 1000.0,
    )
}

/// Sends every body to `topic` (created with `queues` queues) in batches of
/// `batch`, then waits until dispatch has put all of them in the consume
/// queues (untimed fill for the read benches).
pub fn fill_topic(store: &mqstore::store::Store, topic: &str, queues: u32, bodies: &Bodies, batch: usize) {
    use mqstore::message::Message;
    store.create_topic(mqstore::topic::TopicConfig::new(topic, queues)).expect("create topic");
    let n = bodies.count();
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        let msgs: Vec<Message> = (i..end).map(|k| Message::new(topic, bodies.get(k).to_vec())).collect();
        store.send_batch(msgs).expect("send_batch");
        i = end;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let dispatched: u64 = (0..queues).map(|q| store.max_offset(topic, q).expect("max_offset")).sum();
        if dispatched == n as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "{topic}: only {dispatched} of {n} messages dispatched");
        std::thread::sleep(Duration::from_millis(1));
    }
}
