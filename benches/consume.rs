#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Push-consumer throughput against the pull read-back of the same
//! messages, and produce -> listener latency at a steady send rate.
//!
//! Every store lives in a fresh directory under `/work/bench-tmp` (created
//! if missing, removed afterwards); `sync()` runs before every timed run so
//! writeback of earlier work does not land in it.
//!
//! ## Consume throughput (`consume_128B`)
//!
//! One store (`StoreOptions::default()`, `FlushMode::Async`), one topic with
//! 8 queues, filled untimed with 200,000 random 128 B bodies (times
//! `MQSTORE_BENCH_SCALE`) by `send_batch` of 256 (which rotates the batches
//! over the queues); the bench waits until every message is dispatched.
//! The store stays open across rounds, so the warm-up round takes the
//! first-touch page faults and the timed rounds read a hot page cache.
//!
//! * `pull`: the baseline, as `benches/readback.rs` reads: one thread pulls
//!   every queue from its first offset with `Store::pull(.., 32,
//!   &TagFilter::All)` until `NoNewMessage`, queue after queue, touching
//!   every body (a wrapping sum of its u64 words, checked against the sum
//!   computed at fill time).
//! * `push-1c`, `push-4c`: 1 or 4 push consumers in one clustering group
//!   (a fresh group name per run, so each starts with no committed offset),
//!   `ConsumeFrom::FirstOffset`, otherwise default settings (4 consume
//!   threads, pull batch 32, `consume_message_batch_max_size` 1, 1,000
//!   cached messages per queue). The concurrent listener does nothing but
//!   add the batch length to an `AtomicU64` and return `Success`; the call
//!   that reaches N stores the finish time and wakes the bench thread,
//!   which waits on a condvar. Timed: from just before the first `start()`
//!   (the 4-consumer variant starts its members one after another, so the
//!   time includes the three rebalances that hand queues over while the
//!   first members already consume) until the N-th message was consumed.
//!   `shutdown()` is untimed.
//! * `push-1c-b32`, `push-4c-b32`: the same with
//!   `consume_message_batch_max_size(32)`.
//!
//! Reported: msgs/s, and the ratio push / pull computed per round (goal
//! >= 0.5x), plus messages per listener call and duplicate deliveries.
//!
//! ## Produce -> listener latency (`listener_latency`)
//!
//! A fresh store per run (`FlushMode::Async`), one topic with 8 queues, one
//! push consumer (default settings, concurrent listener). One producer
//! thread sends 128 B messages with `Store::send` on a fixed schedule:
//! message `i` is due at `t0 + i / rate`; the producer sleeps until the
//! next due time (never spins: on 2 vCPUs that would take a core from the
//! threads being measured) and sends every message that is due, so a sleep
//! that overshoots sends a short burst. The body carries the sequence number and
//! the scheduled time; a side table records the instant `send` was called.
//! The listener takes the time on entry for each message of its batch.
//!
//! **Coordinated omission**: latency is measured from the *scheduled* send
//! time, so a producer stalled behind a slow `send` (or descheduled) is
//! charged for every message it should have sent meanwhile; the table also
//! shows latency from the actual `send` call and the producer's lag
//! (actual - scheduled) for comparison. The first 100 ms of each run's
//! sends are discarded (a new store's first page faults, thread start-up).
//! Rates: 100,000 msg/s and 10,000 msg/s, about 2 s each (200 k / 20 k
//! recorded messages per run). Reported: p50 / p99 / p99.9 / max in
//! microseconds (goal at 100 k msg/s: p99 < 1 ms).
//!
//! ## Modes
//!
//! Criterion mode (default): `cargo bench --bench consume` (add `-- --test`
//! for a one-iteration smoke run). A throughput iteration is one full
//! consume of the N messages; a latency iteration is one message (the
//! returned time is the sum of scheduled-send -> listener latencies).
//!
//! Interleaved ratio mode: `MQSTORE_BENCH_INTERLEAVED=5 cargo bench --bench
//! consume` skips criterion, runs one untimed warm-up round and then the
//! given number of rounds per workload, each round running every variant
//! once with the starting variant rotated, and prints a markdown table per
//! workload: median msgs/s, min-max and the per-round ratio push / pull
//! medianed; latency percentiles are pooled over the rounds, with the
//! per-round p50 / p99 ranges. `MQSTORE_BENCH_ONLY=consume,latency`
//! restricts it to the workloads whose names contain one of the given
//! substrings (`consume_128B`, `listener_latency`);
//! `MQSTORE_BENCH_VARIANTS=push-1c,push-4c-b32` restricts the throughput
//! workload to the pull baseline plus the named variants (exact names), for
//! profiling one of them.
//!
//! `MQSTORE_BENCH_LAT_FLUSH_MS=<ms>` sets the async flush interval of the
//! latency workload's stores (default 500 ms, as RocketMQ): 9000 keeps
//! the flush out of a 2 s run, to see what its `msync` costs the tail.
//!
//! The machine these were written for has 2 vCPUs: a 4-consumer group runs
//! 20 threads (4 pull threads, 16 workers) and the latency producer spins
//! on one of the two cores, so the figures are CPU-bound and noisy.

#[path = "common/mod.rs"]
mod common;

use common::*;
use criterion::{Criterion, SamplingMode, Throughput};
use mqstore::commitlog::CommitLogOptions;
use mqstore::consumer::{ConsumeContext, ConsumeFrom, ConsumeStatus, PushConsumer};
use mqstore::message::{Message, MessageExt};
use mqstore::store::{PullStatus, Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "bench";
/// Queues of the bench topic (both workloads).
const QUEUES: u32 = 8;
/// Messages per `pull` of the baseline (RocketMQ's default `pullBatchSize`).
const PULL_BATCH: usize = 32;
/// Messages per `send_batch` while filling a store (untimed).
const FILL_BATCH: usize = 256;
const BODY: usize = 128;
/// Messages of the throughput workload (times `MQSTORE_BENCH_SCALE`).
const MESSAGES: usize = 200_000;
/// How long a run may take before the bench gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Paced send rates of the latency workload (msgs/s).
const LAT_RATES: [u64; 2] = [100_000, 10_000];
/// Length of one latency run's recorded part.
const LAT_DURATION: Duration = Duration::from_secs(2);
/// Sends at the start of a latency run that are not recorded.
const LAT_WARMUP: Duration = Duration::from_millis(100);
/// How long the latency bench waits for the last deliveries.
const LAT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Wrapping sum of the body's little-endian u64 words (reads every byte;
/// such words load without a byte swap and vectorise, see
/// `benches/readback.rs`).
// A sum of bytes in memory, never stored: the on-disk byte-order lint
// does not apply.
#[allow(clippy::little_endian_bytes)]
fn touch(body: &[u8]) -> u64 {
    let words = body.chunks_exact(8);
    let tail = words.remainder().iter().fold(0u64, |a, &b| a.wrapping_add(u64::from(b)));
    words.map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default())).fold(tail, u64::wrapping_add)
}

fn read_u64(body: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"))
}

/// Unique consumer group names within this process.
static NEXT_GROUP: AtomicU64 = AtomicU64::new(1);

fn fresh_group(label: &str) -> String {
    format!("bench_{label}_{}", NEXT_GROUP.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------
// Consume throughput
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Pull,
    Push { consumers: usize, batch: usize },
}

const VARIANTS: [Variant; 5] = [
    Variant::Pull,
    Variant::Push { consumers: 1, batch: 1 },
    Variant::Push { consumers: 4, batch: 1 },
    Variant::Push { consumers: 1, batch: 32 },
    Variant::Push { consumers: 4, batch: 32 },
];

impl Variant {
    fn name(self) -> String {
        match self {
            Variant::Pull => "pull".to_string(),
            Variant::Push { consumers, batch: 1 } => format!("push-{consumers}c"),
            Variant::Push { consumers, batch } => format!("push-{consumers}c-b{batch}"),
        }
    }
}

/// The store every throughput run reads, filled once.
struct Filled {
    messages: usize,
    touch_sum: u64,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Drop for Filled {
    fn drop(&mut self) {
        let _ = self.store.close();
    }
}

fn fill(messages: usize) -> Filled {
    let bodies = Bodies::new(messages, BODY, 0x5eed_c0de);
    let dir = bench_dir("consume-tput");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open store");
    fill_topic(&store, TOPIC, QUEUES, &bodies, FILL_BATCH);
    let touch_sum = (0..messages).map(|k| touch(bodies.get(k))).fold(0, u64::wrapping_add);
    settle();
    Filled { messages, touch_sum, store, _dir: dir }
}

/// What one timed run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    elapsed: Duration,
    /// Listener calls (push variants; 0 for pull).
    calls: u64,
    /// Messages delivered more than once (push variants).
    duplicates: u64,
}

/// Shared with the listeners of one push run.
struct Progress {
    target: u64,
    base: Instant,
    consumed: AtomicU64,
    calls: AtomicU64,
    /// Nanoseconds after `base` when the target was reached (0 before).
    finished_ns: AtomicU64,
    lock: Mutex<()>,
    done: Condvar,
}

impl Progress {
    fn consumed(&self, n: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let before = self.consumed.fetch_add(n, Ordering::AcqRel);
        if before < self.target && before + n >= self.target {
            self.finished_ns.store(now_ns(self.base).max(1), Ordering::Release);
            let _g = self.lock.lock().expect("progress lock");
            self.done.notify_all();
        }
    }

    /// Waits until the target was reached; returns the time it was.
    fn wait(&self) -> Duration {
        let deadline = Instant::now() + RUN_TIMEOUT;
        let mut g = self.lock.lock().expect("progress lock");
        loop {
            let t = self.finished_ns.load(Ordering::Acquire);
            if t != 0 {
                return Duration::from_nanos(t);
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "only {} of {} messages consumed within {RUN_TIMEOUT:?}",
                self.consumed.load(Ordering::Acquire),
                self.target
            );
            g = self.done.wait_timeout(g, Duration::from_millis(200)).expect("progress wait").0;
        }
    }
}

impl Filled {
    /// One timed run of variant `v`.
    fn run(&self, v: Variant) -> Run {
        settle();
        match v {
            Variant::Pull => {
                let start = Instant::now();
                let (n, sum) = self.read_pull();
                let elapsed = start.elapsed();
                assert_eq!(n, self.messages, "pull read count");
                assert_eq!(sum, self.touch_sum, "pull body checksum");
                Run { elapsed, calls: 0, duplicates: 0 }
            }
            Variant::Push { consumers, batch } => self.run_push(consumers, batch),
        }
    }

    fn read_pull(&self) -> (usize, u64) {
        let filter = TagFilter::All;
        let store = &self.store;
        let mut n = 0;
        let mut sum = 0u64;
        for q in 0..QUEUES {
            let mut offset = store.min_offset(TOPIC, q).expect("min_offset");
            loop {
                let r = store.pull(TOPIC, q, offset, PULL_BATCH, &filter).expect("pull");
                match r.status {
                    PullStatus::Found => {}
                    PullStatus::NoNewMessage => break,
                    other => panic!("pull of queue {q} at {offset}: {other:?}"),
                }
                for m in &r.messages {
                    sum = sum.wrapping_add(touch(m.body()));
                }
                n += r.messages.len();
                offset = r.next_offset;
            }
        }
        (n, sum)
    }

    fn run_push(&self, consumers: usize, batch: usize) -> Run {
        let group = fresh_group(&format!("c{consumers}b{batch}"));
        let base = Instant::now();
        let progress = Arc::new(Progress {
            target: self.messages as u64,
            base,
            consumed: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            finished_ns: AtomicU64::new(0),
            lock: Mutex::new(()),
            done: Condvar::new(),
        });
        let mut members: Vec<PushConsumer> = Vec::with_capacity(consumers);
        let start = base.elapsed();
        for _ in 0..consumers {
            let p = progress.clone();
            let c = self
                .store
                .push_consumer(&group)
                .subscribe(TOPIC, "*")
                .expect("subscribe")
                .consume_from(ConsumeFrom::FirstOffset)
                .consume_message_batch_max_size(batch)
                .listener(move |msgs: &[MessageExt], _ctx: &ConsumeContext| {
                    p.consumed(msgs.len() as u64);
                    ConsumeStatus::Success
                })
                .start()
                .expect("start consumer");
            members.push(c);
        }
        let end = progress.wait();
        for c in members {
            c.shutdown().expect("shutdown consumer");
        }
        let consumed = progress.consumed.load(Ordering::Acquire);
        assert!(consumed >= self.messages as u64, "consumed {consumed} of {}", self.messages);
        Run {
            elapsed: end.saturating_sub(start),
            calls: progress.calls.load(Ordering::Acquire),
            duplicates: consumed - self.messages as u64,
        }
    }
}

// ---------------------------------------------------------------------------
// Produce -> listener latency
// ---------------------------------------------------------------------------

/// Per-message latencies of one paced run, in nanoseconds.
#[derive(Debug, Default, Clone)]
struct LatRun {
    /// Scheduled send time -> listener (coordinated-omission corrected).
    from_scheduled: Vec<u64>,
    /// `send` called -> listener.
    from_send: Vec<u64>,
    /// `send` called - scheduled time (the producer's own lag).
    producer_lag: Vec<u64>,
    duplicates: u64,
}

impl LatRun {
    fn extend(&mut self, other: LatRun) {
        self.from_scheduled.extend(other.from_scheduled);
        self.from_send.extend(other.from_send);
        self.producer_lag.extend(other.producer_lag);
        self.duplicates += other.duplicates;
    }
}

/// Sleeps until `due` nanoseconds after `base`. No spinning: on 2 vCPUs a
/// spinning producer takes a core from the threads it measures. A sleep
/// overshoots by the timer slack (about 50-100 us here); the messages that
/// fell due meanwhile then go out back to back, and the overshoot is
/// charged to them (latency counts from the scheduled time).
fn wait_until(base: Instant, due: u64) {
    let now = now_ns(base);
    if now < due {
        std::thread::sleep(Duration::from_nanos(due - now));
    }
}

/// The latency workload's commit log: the defaults, except the async flush
/// interval when `MQSTORE_BENCH_LAT_FLUSH_MS` is set (to measure what the
/// flush's `msync` costs the tail: 9000 keeps it out of a run).
fn lat_commit_log_options() -> CommitLogOptions {
    let opts = CommitLogOptions::default();
    match std::env::var("MQSTORE_BENCH_LAT_FLUSH_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        Some(ms) => opts
            .flush_interval(Duration::from_millis(ms))
            .flush_thorough_interval(Duration::from_millis(ms.max(10_000))),
        None => opts,
    }
}

/// Sends `warmup + recorded` messages at `rate` msgs/s to a fresh store
/// with one push consumer; returns the recorded messages' latencies.
fn run_paced(rate: u64, warmup: usize, recorded: usize) -> LatRun {
    settle();
    let total = warmup + recorded;
    let dir = bench_dir("consume-lat");
    let store = Store::open(dir.path(), StoreOptions::default().commit_log_options(lat_commit_log_options()))
        .expect("open store");
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).expect("create topic");
    let base = Instant::now();
    // Delivery time per message, nanoseconds after `base` (0 = not yet).
    let delivered: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let sent: Vec<AtomicU64> = (0..total).map(|_| AtomicU64::new(0)).collect();
    let count = Arc::new(AtomicU64::new(0));
    let dups = Arc::new(AtomicU64::new(0));
    let consumer = {
        let (delivered, count, dups) = (delivered.clone(), count.clone(), dups.clone());
        store
            .push_consumer(&fresh_group("lat"))
            .subscribe(TOPIC, "*")
            .expect("subscribe")
            .consume_from(ConsumeFrom::FirstOffset)
            .listener(move |msgs: &[MessageExt], _ctx: &ConsumeContext| {
                let t = now_ns(base).max(1);
                for m in msgs {
                    let seq = read_u64(m.body(), 0) as usize;
                    if delivered[seq].compare_exchange(0, t, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        count.fetch_add(1, Ordering::AcqRel);
                    } else {
                        dups.fetch_add(1, Ordering::Relaxed);
                    }
                }
                ConsumeStatus::Success
            })
            .start()
            .expect("start consumer")
    };
    let period_ns = 1e9 / rate as f64;
    // First send 1 ms from now (the consumer's threads are up by then).
    let t0 = now_ns(base) + 1_000_000;
    let scheduled = |i: usize| t0 + (i as f64 * period_ns) as u64;
    let mut template = vec![0u8; BODY];
    for (i, b) in template.iter_mut().enumerate() {
        *b = i as u8;
    }
    for (i, slot) in sent.iter().enumerate() {
        let due = scheduled(i);
        let mut body = template.clone();
        body[..8].copy_from_slice(&(i as u64).to_be_bytes());
        body[8..16].copy_from_slice(&due.to_be_bytes());
        let msg = Message::new(TOPIC, body);
        wait_until(base, due);
        slot.store(now_ns(base), Ordering::Relaxed);
        store.send(msg).expect("send");
    }
    let deadline = Instant::now() + LAT_DRAIN_TIMEOUT;
    while count.load(Ordering::Acquire) < total as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} messages delivered within {LAT_DRAIN_TIMEOUT:?} of the last send",
            count.load(Ordering::Acquire)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    consumer.shutdown().expect("shutdown consumer");
    store.close().expect("close store");
    drop(dir);
    let mut out = LatRun { duplicates: dups.load(Ordering::Acquire), ..LatRun::default() };
    for i in warmup..total {
        let (due, s, d) = (scheduled(i), sent[i].load(Ordering::Relaxed), delivered[i].load(Ordering::Acquire));
        out.from_scheduled.push(d.saturating_sub(due));
        out.from_send.push(d.saturating_sub(s));
        out.producer_lag.push(s.saturating_sub(due));
    }
    out
}

/// The latency floor of this machine, run the same way as [`run_paced`]:
/// the same paced producer hands each scheduled time through a crossbeam
/// channel to a relay thread and a second channel to a "listener" thread
/// (the store's path has the same two hand-offs: send -> pull thread ->
/// worker), with no store at all.
fn run_raw_handoff(rate: u64, warmup: usize, recorded: usize) -> LatRun {
    settle();
    let total = warmup + recorded;
    let base = Instant::now();
    let (tx, relay_rx) = crossbeam_channel::unbounded::<(usize, u64)>();
    let (relay_tx, rx) = crossbeam_channel::unbounded::<(usize, u64)>();
    let relay = std::thread::spawn(move || {
        for m in relay_rx {
            if relay_tx.send(m).is_err() {
                return;
            }
        }
    });
    let listener = std::thread::spawn(move || {
        let mut delivered = vec![0u64; total];
        for (i, _) in rx {
            delivered[i] = now_ns(base).max(1);
        }
        delivered
    });
    let period_ns = 1e9 / rate as f64;
    let t0 = now_ns(base) + 1_000_000;
    let scheduled = |i: usize| t0 + (i as f64 * period_ns) as u64;
    let mut sent = vec![0u64; total];
    for (i, slot) in sent.iter_mut().enumerate() {
        let due = scheduled(i);
        wait_until(base, due);
        *slot = now_ns(base);
        tx.send((i, due)).expect("relay alive");
    }
    drop(tx);
    relay.join().expect("relay thread");
    let delivered = listener.join().expect("listener thread");
    let mut out = LatRun::default();
    for i in warmup..total {
        let (due, s, d) = (scheduled(i), sent[i], delivered[i]);
        out.from_scheduled.push(d.saturating_sub(due));
        out.from_send.push(d.saturating_sub(s));
        out.producer_lag.push(s.saturating_sub(due));
    }
    out
}

/// Warm-up and recorded message counts of a ~[`LAT_DURATION`] run.
fn lat_counts(rate: u64) -> (usize, usize) {
    let per = |d: Duration| (rate as f64 * d.as_secs_f64()).round() as usize;
    (per(LAT_WARMUP), per(LAT_DURATION))
}

fn rate_label(rate: u64) -> String {
    format!("{}k msg/s", rate / 1000)
}

// ---------------------------------------------------------------------------
// Statistics helpers
// ---------------------------------------------------------------------------

/// Nearest-rank percentiles of unsorted nanosecond samples, in
/// microseconds.
fn percentiles_us(samples: &[u64], qs: &[f64]) -> Vec<f64> {
    let mut v = samples.to_vec();
    v.sort_unstable();
    qs.iter()
        .map(|&q| {
            if v.is_empty() {
                return f64::NAN;
            }
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64 / 1000.0
        })
        .collect()
}

fn latency_rows(label: &str, r: &LatRun) -> Vec<String> {
    let qs = [0.5, 0.99, 0.999, 1.0];
    [
        ("scheduled send -> listener", &r.from_scheduled),
        ("send() call -> listener", &r.from_send),
        ("producer lag (send() call - scheduled)", &r.producer_lag),
    ]
    .iter()
    .map(|(what, xs)| {
        let p = percentiles_us(xs, &qs);
        format!("| {label} | {what} | {} | {:.1} | {:.1} | {:.1} | {:.1} |", xs.len(), p[0], p[1], p[2], p[3])
    })
    .collect()
}

fn print_latency_report(results: &[(u64, LatRun)], note: &str) {
    println!();
    println!("### listener_latency: produce -> concurrent listener, {BODY} B, {QUEUES} queues, 1 consumer ({note})");
    println!();
    println!(
        "Latency is measured from each message's scheduled send time (coordinated omission corrected); the send() row and the producer lag are shown for comparison."
    );
    println!();
    println!("| rate | measured from | samples | p50 us | p99 us | p99.9 us | max us |");
    println!("|---|---|---|---|---|---|---|");
    for (r, lat) in results {
        for row in latency_rows(&rate_label(*r), lat) {
            println!("{row}");
        }
    }
    let dups: u64 = results.iter().map(|(_, l)| l.duplicates).sum();
    if dups > 0 {
        println!();
        println!("({dups} duplicate deliveries)");
    }
    println!();
}

// ---------------------------------------------------------------------------
// Interleaved ratio mode
// ---------------------------------------------------------------------------

fn interleaved_throughput(rounds: usize) {
    let n = MESSAGES * scale();
    println!();
    println!(
        "### consume_128B (N = {}, body {BODY} B, {QUEUES} queues, FirstOffset, push defaults: 4 consume threads, pull batch 32; {} rounds after 1 warm-up round)",
        fmt_rate(n as f64),
        rounds
    );
    println!();
    let variants = selected_variants();
    let filled = fill(n);
    for &v in &variants {
        let _ = filled.run(v);
    }
    let mut samples: Vec<Vec<Run>> = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let mut row: Vec<Option<Run>> = vec![None; variants.len()];
        let mut line = format!("round {}:", r + 1);
        for v in rotated(&variants, r) {
            let run = filled.run(v);
            line.push_str(&format!(" {}={} msgs/s", v.name(), fmt_rate(rate(n, run.elapsed))));
            row[variants.iter().position(|x| *x == v).unwrap_or(0)] = Some(run);
        }
        println!("{line}");
        samples.push(row.into_iter().map(|r| r.expect("every variant ran")).collect());
    }
    let pull = variants.iter().position(|v| *v == Variant::Pull).unwrap_or(0);
    println!();
    println!(
        "| variant | median msgs/s | min-max msgs/s | ns/msg (median) | variant / pull (median of per-round ratios, min-max) | msgs per listener call | duplicates |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (vi, v) in variants.iter().enumerate() {
        let rates: Vec<f64> = samples.iter().map(|row| rate(n, row[vi].elapsed)).collect();
        let (lo, hi) = min_max(&rates);
        let ratios: Vec<f64> =
            samples.iter().map(|row| row[pull].elapsed.as_secs_f64() / row[vi].elapsed.as_secs_f64()).collect();
        let (rlo, rhi) = min_max(&ratios);
        let (ratio, per_call, dups) = if vi == pull {
            ("-".to_string(), "-".to_string(), "-".to_string())
        } else {
            let calls: u64 = samples.iter().map(|row| row[vi].calls).sum();
            let dups: u64 = samples.iter().map(|row| row[vi].duplicates).sum();
            (
                format!("**{:.2}x** ({rlo:.2}-{rhi:.2}; goal >= 0.5x)", median(&ratios)),
                format!("{:.1}", (n * rounds) as f64 / calls.max(1) as f64),
                dups.to_string(),
            )
        };
        println!(
            "| {} | {} | {}-{} | {:.0} | {ratio} | {per_call} | {dups} |",
            v.name(),
            fmt_rate(median(&rates)),
            fmt_rate(lo),
            fmt_rate(hi),
            1e9 / median(&rates),
        );
    }
    println!();
}

/// A latency run: the store, or the raw two-hand-off floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LatKind {
    Store,
    Raw,
}

fn lat_run(kind: LatKind, rate: u64, warmup: usize, recorded: usize) -> LatRun {
    match kind {
        LatKind::Store => run_paced(rate, warmup, recorded),
        LatKind::Raw => run_raw_handoff(rate, warmup, recorded),
    }
}

fn interleaved_latency(rounds: usize) {
    let runs: Vec<(u64, LatKind)> = LAT_RATES.iter().flat_map(|r| [(*r, LatKind::Store), (*r, LatKind::Raw)]).collect();
    // Warm-up, not recorded.
    for &(r, k) in &runs {
        let (w, n) = lat_counts(r);
        let _ = lat_run(k, r, w, n / 4);
    }
    let mut pooled: Vec<LatRun> = vec![LatRun::default(); runs.len()];
    let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    for round in 0..rounds {
        let mut line = format!("round {}:", round + 1);
        for (r, k) in rotated(&runs, round) {
            let (w, n) = lat_counts(r);
            let lat = lat_run(k, r, w, n);
            let ri = runs.iter().position(|x| *x == (r, k)).unwrap_or(0);
            let p = percentiles_us(&lat.from_scheduled, &[0.5, 0.99]);
            line.push_str(&format!(" {} {k:?}: p50 {:.1} us, p99 {:.1} us;", rate_label(r), p[0], p[1]));
            p50s[ri].push(p[0]);
            p99s[ri].push(p[1]);
            pooled[ri].extend(lat);
        }
        println!("{line}");
    }
    let store: Vec<(u64, LatRun)> = runs
        .iter()
        .zip(&pooled)
        .filter(|((_, k), _)| *k == LatKind::Store)
        .map(|((r, _), l)| (*r, l.clone()))
        .collect();
    print_latency_report(&store, &format!("~{LAT_DURATION:?} per rate per round, {rounds} interleaved rounds pooled"));
    println!(
        "The raw floor: the same paced producer and two hand-offs through crossbeam channels (producer -> relay thread -> listener thread), no store, interleaved with the store's runs:"
    );
    println!();
    println!("| rate | measured from | samples | p50 us | p99 us | p99.9 us | max us |");
    println!("|---|---|---|---|---|---|---|");
    for ((r, k), lat) in runs.iter().zip(&pooled) {
        if *k == LatKind::Raw {
            for row in latency_rows(&format!("{} raw", rate_label(*r)), lat) {
                println!("{row}");
            }
        }
    }
    println!();
    println!(
        "| rate | run | per-round p50 us from scheduled (median, min-max) | per-round p99 us from scheduled (median, min-max) | store p99 / raw p99 per round (median, min-max) |"
    );
    println!("|---|---|---|---|---|");
    for (ri, (r, k)) in runs.iter().enumerate() {
        let (a, b) = min_max(&p50s[ri]);
        let (c, d) = min_max(&p99s[ri]);
        let ratio = match k {
            LatKind::Raw => "-".to_string(),
            LatKind::Store => {
                let raw = runs.iter().position(|x| *x == (*r, LatKind::Raw)).unwrap_or(ri);
                let ratios: Vec<f64> = p99s[ri].iter().zip(&p99s[raw]).map(|(s, w)| s / w).collect();
                let (lo, hi) = min_max(&ratios);
                format!("{:.2}x ({lo:.2}-{hi:.2})", median(&ratios))
            }
        };
        println!(
            "| {} | {k:?} | {:.1} ({a:.1}-{b:.1}) | {:.1} ({c:.1}-{d:.1}) | {ratio} |",
            rate_label(*r),
            median(&p50s[ri]),
            median(&p99s[ri])
        );
    }
    println!();
}

fn run_interleaved(rounds: usize) {
    println!("# mqstore consume benchmark, interleaved ratio mode ({rounds} rounds)");
    println!();
    println!(
        "Consume throughput = messages / time from the first consumer's start() to the last message consumed (hot page cache; fill untimed)."
    );
    println!("Ratios are push throughput / pull throughput, computed per round then medianed (>1 = push faster).");
    if selected("consume_128B") {
        interleaved_throughput(rounds);
    }
    if selected("listener_latency") {
        interleaved_latency(rounds);
    }
}

/// The throughput variants of the interleaved mode: the pull baseline and
/// those named in `MQSTORE_BENCH_VARIANTS` (comma-separated exact names;
/// every variant when unset).
fn selected_variants() -> Vec<Variant> {
    match std::env::var("MQSTORE_BENCH_VARIANTS") {
        Ok(list) => {
            let names: Vec<&str> = list.split(',').map(str::trim).collect();
            VARIANTS.into_iter().filter(|v| *v == Variant::Pull || names.contains(&v.name().as_str())).collect()
        }
        Err(_) => VARIANTS.to_vec(),
    }
}

// ---------------------------------------------------------------------------
// Criterion mode
// ---------------------------------------------------------------------------

fn bench_throughput(c: &mut Criterion) {
    let n = MESSAGES * scale();
    let filled = fill(n);
    let mut group = c.benchmark_group("consume_128B");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(n as u64));
    let collected: RefCell<Vec<(Variant, Duration)>> = RefCell::new(Vec::new());
    for v in VARIANTS {
        group.bench_function(v.name(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let r = filled.run(v);
                    total += r.elapsed;
                    collected.borrow_mut().push((v, r.elapsed));
                }
                total
            });
        });
    }
    group.finish();
    let collected = collected.borrow();
    if collected.is_empty() {
        return;
    }
    println!();
    println!("consume_128B: msgs/s over every criterion iteration (warm-up included):");
    for v in VARIANTS {
        let rates: Vec<f64> = collected.iter().filter(|(x, _)| *x == v).map(|(_, d)| rate(n, *d)).collect();
        if rates.is_empty() {
            continue;
        }
        let (lo, hi) = min_max(&rates);
        println!(
            "  {:<12} median {} msgs/s, min-max {}-{}; {} iterations",
            v.name(),
            fmt_rate(median(&rates)),
            fmt_rate(lo),
            fmt_rate(hi),
            rates.len()
        );
    }
    println!();
}

fn bench_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("listener_latency");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_millis(500));
    let collected: RefCell<Vec<(u64, LatRun)>> =
        RefCell::new(LAT_RATES.iter().map(|r| (*r, LatRun::default())).collect());
    for (ri, r) in LAT_RATES.iter().enumerate() {
        group.bench_function(format!("async-{}k", r / 1000), |b| {
            // One iteration = one message: the returned time is the sum of
            // scheduled-send -> listener latencies.
            b.iter_custom(|iters| {
                let (w, _) = lat_counts(*r);
                let lat = run_paced(*r, w, iters as usize);
                let total = Duration::from_nanos(lat.from_scheduled.iter().sum());
                collected.borrow_mut()[ri].1.extend(lat);
                total
            });
        });
    }
    group.finish();
    let collected = collected.borrow();
    if collected.iter().any(|(_, l)| !l.from_scheduled.is_empty()) {
        print_latency_report(&collected, "every criterion iteration pooled, warm-up included");
    }
}

fn main() {
    if let Some(rounds) = interleaved_rounds() {
        run_interleaved(rounds);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_throughput(&mut c);
    bench_latency(&mut c);
    c.final_summary();
}
