#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Whole-store send throughput and latency (`Store::send`, one message per
//! call) with 1 and 16 producer threads, `FlushMode::Async` and
//! `FlushMode::Sync`, 128 B and 1 KiB bodies, against raw logs driven the
//! same way.
//!
//! `benches/append.rs` measures the commit log alone; this bench measures
//! what an application sees: a `Message` built per send, queue selection,
//! the record with its properties, and (in Sync mode) the group commit.
//! Dispatch to the consume queues and the index runs on the store's own
//! thread during the run and is not waited for (its lag is measured by the
//! dispatch-lag bench).
//!
//! Variants, each on a fresh directory under `/work/bench-tmp` after a
//! `sync()`:
//!
//! * `mqstore`: `Store::open` with default options and the workload's flush
//!   mode, one topic with 16 queues; every thread calls `Store::send` with
//!   a new `Message` per body. Async workloads end with one
//!   `commit_log().flush()`, inside the timed region.
//! * `raw-file`: one `[u32 len][u32 crc32][body]` log in a `BufWriter`
//!   (1 MiB) behind a `Mutex` shared by the threads. Async: one final
//!   `flush` + `fdatasync`. Sync: every message is written and
//!   `fdatasync`ed under the lock (a plain durable log with no group
//!   commit, the floor a durable store must beat with 16 producers).
//! * `raw-mmap` (Async workloads only): the same records memcpy'd into a
//!   sparse 1 GiB mapping behind a `Mutex`, one final `msync`.
//!
//! Workloads (counts times `MQSTORE_BENCH_SCALE`): `send_{128B,1KiB}_async_{1,16}t`
//! with 200,000 (128 B) or 50,000 (1 KiB) messages in all, and
//! `send_{128B,1KiB}_sync_{1,16}t` with 2,000 messages per thread for one
//! thread and 500 per thread for 16. Each send is timed; the tables give
//! msgs/s and per-send p50 / p99 / p99.9.
//!
//! Criterion mode (default): `cargo bench --bench send` (`-- --test` for a
//! smoke run). Interleaved mode: `MQSTORE_BENCH_INTERLEAVED=5 cargo bench
//! --bench send` runs one warm-up round and then the rounds, rotating the
//! starting variant, and prints per workload the median rate, min-max,
//! pooled latency percentiles and the per-round ratios mqstore / baseline.
//! `MQSTORE_BENCH_ONLY=async_16t,sync` selects workloads by substring.

#[path = "common/mod.rs"]
mod common;

use common::*;
use criterion::{Criterion, Throughput};
use mqstore::commitlog::FlushMode;
use mqstore::message::Message;
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::Barrier;
use std::time::{Duration, Instant};

const TOPIC: &str = "bench";
const QUEUES: u32 = 16;
/// Size of the raw mmap baseline's only file (the workloads fit in it).
const RAW_MMAP_FILE: usize = 1 << 30;
const PAGE: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Workload {
    name: &'static str,
    body_size: usize,
    threads: usize,
    /// Messages per thread (before scaling).
    per_thread: usize,
    mode: FlushMode,
}

const WORKLOADS: [Workload; 8] = [
    Workload { name: "send_128B_async_1t", body_size: 128, threads: 1, per_thread: 200_000, mode: FlushMode::Async },
    Workload { name: "send_128B_async_16t", body_size: 128, threads: 16, per_thread: 12_500, mode: FlushMode::Async },
    Workload { name: "send_1KiB_async_1t", body_size: 1024, threads: 1, per_thread: 50_000, mode: FlushMode::Async },
    Workload { name: "send_1KiB_async_16t", body_size: 1024, threads: 16, per_thread: 3_125, mode: FlushMode::Async },
    Workload { name: "send_128B_sync_1t", body_size: 128, threads: 1, per_thread: 2_000, mode: FlushMode::Sync },
    Workload { name: "send_128B_sync_16t", body_size: 128, threads: 16, per_thread: 500, mode: FlushMode::Sync },
    Workload { name: "send_1KiB_sync_1t", body_size: 1024, threads: 1, per_thread: 2_000, mode: FlushMode::Sync },
    Workload { name: "send_1KiB_sync_16t", body_size: 1024, threads: 16, per_thread: 500, mode: FlushMode::Sync },
];

impl Workload {
    fn messages(&self) -> usize {
        self.threads * self.per_thread
    }

    fn scaled(self) -> Self {
        Self { per_thread: self.per_thread * scale(), ..self }
    }

    fn variants(&self) -> &'static [Variant] {
        match self.mode {
            FlushMode::Sync => &[Variant::Mqstore, Variant::RawFile],
            _ => &[Variant::Mqstore, Variant::RawFile, Variant::RawMmap],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Mqstore,
    RawFile,
    RawMmap,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Mqstore => "mqstore",
            Variant::RawFile => "raw-file",
            Variant::RawMmap => "raw-mmap",
        }
    }
}

/// One run: wall time from releasing the threads to the last durable
/// acknowledgement (Async: including the final flush), and every send's
/// latency in nanoseconds.
struct Run {
    elapsed: Duration,
    latencies_ns: Vec<u64>,
}

/// What the producer threads append to.
trait Sink: Sync {
    fn send(&self, thread: usize, body: &[u8]);
    /// The final flush (Async workloads), inside the timed region.
    fn finish(&self);
    /// Releases the sink after the timed region.
    fn close(&self) {}
}

struct StoreSink(Store);

impl Sink for StoreSink {
    fn send(&self, _thread: usize, body: &[u8]) {
        self.0.send(Message::new(TOPIC, body.to_vec())).expect("send");
    }

    fn finish(&self) {
        self.0.commit_log().flush().expect("flush");
    }

    fn close(&self) {
        self.0.close().expect("close");
    }
}

struct RawFileSink {
    out: Mutex<BufWriter<File>>,
    mode: FlushMode,
}

impl Sink for RawFileSink {
    fn send(&self, _thread: usize, body: &[u8]) {
        let mut out = self.out.lock();
        out.write_all(&raw_header(body)).expect("write header");
        out.write_all(body).expect("write body");
        if self.mode == FlushMode::Sync {
            out.flush().expect("flush");
            out.get_ref().sync_data().expect("fdatasync");
        }
    }

    fn finish(&self) {
        let mut out = self.out.lock();
        out.flush().expect("flush");
        out.get_ref().sync_data().expect("fdatasync");
    }
}

struct RawMmapSink {
    map: Mutex<(memmap2::MmapMut, usize)>,
}

impl Sink for RawMmapSink {
    fn send(&self, _thread: usize, body: &[u8]) {
        let mut g = self.map.lock();
        let (map, pos) = &mut *g;
        let at = *pos;
        assert!(at + 8 + body.len() <= RAW_MMAP_FILE, "raw-mmap baseline file is full");
        map[at..at + 8].copy_from_slice(&raw_header(body));
        map[at + 8..at + 8 + body.len()].copy_from_slice(body);
        *pos = at + 8 + body.len();
    }

    fn finish(&self) {
        let g = self.map.lock();
        if g.1 > 0 {
            g.0.flush_range(0, g.1.div_ceil(PAGE) * PAGE).expect("msync");
        }
    }
}

fn open_sink(v: Variant, w: &Workload, dir: &std::path::Path) -> Box<dyn Sink> {
    match v {
        Variant::Mqstore => {
            let store = Store::open(dir, StoreOptions::default().flush_mode(w.mode)).expect("open store");
            store.create_topic(TopicConfig::new(TOPIC, QUEUES)).expect("create topic");
            Box::new(StoreSink(store))
        }
        Variant::RawFile => {
            let file =
                OpenOptions::new().create(true).write(true).truncate(true).open(dir.join("log")).expect("create");
            Box::new(RawFileSink { out: Mutex::new(BufWriter::with_capacity(1 << 20, file)), mode: w.mode })
        }
        Variant::RawMmap => {
            let file = OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(true)
                .open(dir.join("log"))
                .expect("create");
            file.set_len(RAW_MMAP_FILE as u64).expect("set_len");
            // SAFETY: the file is private to this run and never truncated
            // while mapped.
            let map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("mmap");
            Box::new(RawMmapSink { map: Mutex::new((map, 0)) })
        }
    }
}

fn run_variant(v: Variant, w: &Workload, bodies: &Bodies) -> Run {
    settle();
    let dir = bench_dir(v.name());
    let sink = open_sink(v, w, dir.path());
    let barrier = Barrier::new(w.threads + 1);
    let run = std::thread::scope(|s| {
        let handles: Vec<_> = (0..w.threads)
            .map(|t| {
                let (sink, barrier) = (&sink, &barrier);
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(w.per_thread);
                    barrier.wait();
                    for j in 0..w.per_thread {
                        let body = bodies.get(t * w.per_thread + j);
                        let t0 = Instant::now();
                        sink.send(t, body);
                        lat.push(t0.elapsed().as_nanos() as u64);
                    }
                    lat
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut all = Vec::with_capacity(w.messages());
        for h in handles {
            all.extend(h.join().expect("producer thread"));
        }
        sink.finish();
        Run { elapsed: start.elapsed(), latencies_ns: all }
    });
    sink.close();
    drop(dir);
    run
}

fn bodies_for(w: &Workload) -> Bodies {
    Bodies::new(w.messages(), w.body_size, 0x5e9d_0001 ^ w.body_size as u64)
}

// ---------------------------------------------------------------------------
// Interleaved ratio mode
// ---------------------------------------------------------------------------

fn interleaved_workload(w: &Workload, rounds: usize) {
    let bodies = bodies_for(w);
    let vars = w.variants();
    println!();
    println!(
        "### {} ({} threads x {} messages, body {} B, {:?} flush; {rounds} rounds after 1 warm-up round)",
        w.name, w.threads, w.per_thread, w.body_size, w.mode
    );
    println!();
    for &v in vars {
        let _ = run_variant(v, w, &bodies);
    }
    // rates[variant][round], latencies pooled per variant.
    let mut rates = vec![Vec::with_capacity(rounds); vars.len()];
    let mut pooled: Vec<Vec<u64>> = vec![Vec::new(); vars.len()];
    for r in 0..rounds {
        let mut line = format!("round {}:", r + 1);
        for v in rotated(vars, r) {
            let k = vars.iter().position(|&x| x == v).expect("variant");
            let run = run_variant(v, w, &bodies);
            let msgs_s = rate(w.messages(), run.elapsed);
            line.push_str(&format!(" {}={} msgs/s", v.name(), fmt_rate(msgs_s)));
            rates[k].push(msgs_s);
            pooled[k].extend(run.latencies_ns);
        }
        eprintln!("{line}");
    }
    println!("| variant | msgs/s (median) | min-max | MB/s | p50 us | p99 us | p99.9 us | mqstore / this (per-round median, range) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (k, v) in vars.iter().enumerate() {
        let (lo, hi) = min_max(&rates[k]);
        let med = median(&rates[k]);
        let ratios: Vec<f64> = rates[0].iter().zip(&rates[k]).map(|(m, b)| m / b).collect();
        let (rlo, rhi) = min_max(&ratios);
        let ratio = if k == 0 { "-".to_string() } else { format!("{:.2}x ({rlo:.2}-{rhi:.2})", median(&ratios)) };
        println!(
            "| {} | {} | {}-{} | {:.0} | {:.1} | {:.1} | {:.1} | {ratio} |",
            v.name(),
            fmt_rate(med),
            fmt_rate(lo),
            fmt_rate(hi),
            med * w.body_size as f64 / 1e6,
            percentile_us(&pooled[k], 0.50),
            percentile_us(&pooled[k], 0.99),
            percentile_us(&pooled[k], 0.999),
        );
    }
}

// ---------------------------------------------------------------------------
// Criterion mode
// ---------------------------------------------------------------------------

fn criterion_workload(c: &mut Criterion, w: &Workload) {
    let bodies = bodies_for(w);
    let mut group = c.benchmark_group(w.name);
    configure(&mut group);
    group.throughput(Throughput::Elements(w.messages() as u64));
    for &v in w.variants() {
        group.bench_function(v.name(), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run_variant(v, w, &bodies).elapsed).sum());
        });
    }
    group.finish();
}

fn main() {
    let workloads: Vec<Workload> = WORKLOADS.iter().map(|w| w.scaled()).filter(|w| selected(w.name)).collect();
    if let Some(rounds) = interleaved_rounds() {
        for w in &workloads {
            interleaved_workload(w, rounds);
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    for w in &workloads {
        criterion_workload(&mut c, w);
    }
    c.final_summary();
}
