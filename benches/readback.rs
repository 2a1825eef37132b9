#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Read-back throughput through the consume queues, and end-to-end latency
//! from `send` to a long-polling reader, against raw baselines.
//!
//! Every store and log lives in a fresh directory under `/work/bench-tmp`
//! (created if missing, removed afterwards); `sync()` runs before every
//! timed run so writeback of earlier work does not land in it.
//!
//! ## Sequential read-back (`readback_128B`, `readback_1KiB`)
//!
//! 200,000 x 128 B and 50,000 x 1 KiB random bodies (times
//! `MQSTORE_BENCH_SCALE`; scale 10 gives the 2 M / 500 k of the peer
//! harness in `performance.md`). The data is written once per workload,
//! untimed, then read back in every round; all files were just written, so
//! every read is served from the page cache (caches are never dropped).
//!
//! * `raw-mmap`: records `[u32 len][u32 crc32][body]` memcpy'd into a sparse
//!   1 GiB file mapped with `memmap2` (the writer of `benches/append.rs`,
//!   rolling to a new file when full), then `msync`ed. A read walks the
//!   mapping sequentially, decodes each header and verifies the body's
//!   CRC32 (`crc32fast`), as the peer harness's raw-mmap read path does.
//! * `mqstore`: `Store::open` with default options (`FlushMode::Async`),
//!   one topic with 1 queue, filled with `send_batch` of 256 messages; the
//!   bench waits until every message is dispatched, closes the store and
//!   opens it again (untimed). A read pulls the queue from offset 0 with
//!   `Store::pull(.., 32, &TagFilter::All)` (32 = RocketMQ's default
//!   `pullBatchSize`) until `NoNewMessage`, touching every body: by default
//!   (`MQSTORE_BENCH_TOUCH=sum`) a wrapping sum of its u64 words, since the
//!   store already verifies each record's CRC inside `pull` (so both sides
//!   check integrity once per message); `MQSTORE_BENCH_TOUCH=crc` computes
//!   the body's CRC32 instead (the baseline's per-body work, on top of the
//!   store's own check). The count and the sum over all bodies are checked
//!   against the values computed at fill time.
//! * `mqstore-4q`: the same with a 4-queue topic (`send_batch` rotates the
//!   batches over the queues); the four queues are read one after another.
//! * `mqstore-pull_with`: the 1-queue store read with `Store::pull_with`,
//!   each body borrowed from the mapping.
//! * `mqstore-pull_with-skip-crc`: the same on a store opened with
//!   `ReadChecksums::Skip`: framing and position are checked, the CRC is
//!   not (RocketMQ's read path). The raw baseline still checks its CRC, so
//!   this side does less integrity work than the baseline.
//!
//! The store and the raw mapping stay open across rounds, so the warm-up
//! round takes the first-touch page faults of both and the timed rounds
//! read through mappings that are already populated. The timed region is
//! the whole read of all messages. Reported: msgs/s, body MB/s and the
//! per-round ratio mqstore / raw-mmap (target >= 0.7x).
//!
//! ## End-to-end latency (`e2e_latency`)
//!
//! A reader thread long-polls with `Store::pull_wait` at the queue's end
//! (1 queue, 32 per pull, 10 s timeout); the sending thread sends one
//! 128 B message at a time with `Store::send`. The sender stores the time
//! just before `send` in a shared atomic (a side channel; the body carries
//! the sequence number, which the reader checks); the reader takes the
//! time as soon as `pull_wait` returns the message. Sends are paced: after
//! each message the reader acknowledges over a channel, and the sender
//! sleeps 20 us (about 70-100 us in practice) before the next send, so
//! the reader is parked in `pull_wait` again and exactly one message is in
//! flight (the reader also signals once before its first wait, so thread
//! start-up is not timed). Each run uses a fresh store and first sends 50
//! messages that are not recorded (the new store's first page faults and
//! wake-ups). Variants, each over 5,000 recorded messages per round:
//!
//! * `condvar`: the floor, a `Mutex` + `Condvar` hand-off of the send time
//!   between the same two threads (no store at all).
//! * `mqstore-async`: `FlushMode::Async` (visible once the dispatch thread
//!   has written the consume-queue unit and woken the waiters).
//! * `mqstore-sync`: `FlushMode::Sync` (visible only once durable: includes
//!   the group commit's `fdatasync`).
//!
//! Reported: p50 / p99 / p99.9 / max in microseconds.
//!
//! ## Modes
//!
//! Criterion mode (default): `cargo bench --bench readback` (add `-- --test`
//! for a one-iteration smoke run). Criterion runs the functions of a group
//! one after the other, so slow drift of the noisy VM lands on one variant.
//!
//! Interleaved ratio mode: `MQSTORE_BENCH_INTERLEAVED=5 cargo bench --bench
//! readback` skips criterion, runs one untimed warm-up round and then the
//! given number of rounds per workload, each round running every variant
//! once with the starting variant rotated, and prints a markdown table per
//! workload: median msgs/s, min-max, and the ratio mqstore / raw-mmap
//! computed per round and then medianed; latency percentiles are pooled
//! over the rounds, with the per-round p50 / p99 ranges.
//! `MQSTORE_BENCH_ONLY=128B,e2e` restricts it to the workloads whose names
//! contain one of the given substrings (`readback_128B`, `readback_1KiB`,
//! `e2e_latency`).
//!
//! ## Profiling
//!
//! The read functions are not inlined, so callgrind can count the
//! instructions of the reads alone (the fill is not counted):
//!
//! ```sh
//! MQSTORE_BENCH_INTERLEAVED=1 MQSTORE_BENCH_ONLY=readback_128B valgrind --tool=callgrind \
//!   --toggle-collect='readback::read_store_visit' --toggle-collect='readback::read_store' \
//!   --toggle-collect='readback::RawMmapLog::read_all' target/release/deps/readback-<hash>
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | grep 'readback::'
//! ```
//!
//! Each function runs twice per variant (warm-up and one round):
//! `read_store` covers `mqstore` and `mqstore-4q` (4 x N messages),
//! `read_store_visit` and `read_all` 2 x N each.

#[path = "common/mod.rs"]
mod common;

use common::*;
use criterion::{Criterion, SamplingMode, Throughput};
use mqstore::commitlog::FlushMode;
use mqstore::message::Message;
use mqstore::store::{PullStatus, ReadChecksums, Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
const TOPIC: &str = "bench";
/// Messages per `pull` (RocketMQ's default `pullBatchSize`).
const PULL_BATCH: usize = 32;
/// Messages per `send_batch` while filling a store (untimed).
const FILL_BATCH: usize = 256;

const LAT_MESSAGES: usize = 5_000;
const LAT_BODY: usize = 128;
/// Pause between one message's receipt and the next send.
const LAT_GAP: Duration = Duration::from_micros(20);
/// Messages sent first and not recorded in every latency run (a fresh
/// store's first sends take its first page faults and wake-ups).
const LAT_DISCARD: usize = 50;
/// How long a latency reader waits for one message before giving up.
const LAT_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Workloads and inputs
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Workload {
    name: &'static str,
    messages: usize,
    body_size: usize,
}

const W_128B: Workload = Workload { name: "readback_128B", messages: 200_000, body_size: 128 };
const W_1KIB: Workload = Workload { name: "readback_1KiB", messages: 50_000, body_size: 1024 };

fn scaled(w: Workload) -> Workload {
    Workload { messages: w.messages * scale(), ..w }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    RawMmap,
    Mqstore,
    Mqstore4q,
    /// The 1-queue store read with `Store::pull_with` (borrowed
    /// `MessageRef`s, nothing allocated per message).
    MqstoreVisit,
    /// `MqstoreVisit` on a store opened with `ReadChecksums::Skip` (framing
    /// checked, CRC not: RocketMQ's read path).
    MqstoreVisitSkip,
}

const VARIANTS: [Variant; 5] =
    [Variant::RawMmap, Variant::Mqstore, Variant::Mqstore4q, Variant::MqstoreVisit, Variant::MqstoreVisitSkip];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::RawMmap => "raw-mmap",
            Variant::Mqstore => "mqstore",
            Variant::Mqstore4q => "mqstore-4q",
            Variant::MqstoreVisit => "mqstore-pull_with",
            Variant::MqstoreVisitSkip => "mqstore-pull_with-skip-crc",
        }
    }
}

impl Bodies {
    /// Sum of [`touch`] over every body (what a full read must reproduce).
    fn touch_sum(&self, mode: Touch) -> u64 {
        (0..self.count()).map(|i| touch(mode, self.get(i))).fold(0, u64::wrapping_add)
    }
}

/// What the mqstore reader does with each body (`MQSTORE_BENCH_TOUCH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Touch {
    /// Wrapping sum of the body's little-endian u64 words (default): reads
    /// every byte at memory speed (such words load without a byte swap and
    /// vectorise; a big-endian sum swapped every word and cost more
    /// instructions per 128 B body than the baseline's whole read). The
    /// store has already verified the record's CRC inside `pull` (unless
    /// the variant skips it), so integrity is checked once per message on
    /// both sides.
    Sum,
    /// CRC32 of the body, the same per-body work as the raw baseline, on
    /// top of the store's own record CRC check.
    Crc,
}

fn touch_mode() -> Touch {
    match std::env::var("MQSTORE_BENCH_TOUCH").as_deref() {
        Ok("crc") => Touch::Crc,
        Ok("sum") | Err(_) => Touch::Sum,
        Ok(other) => panic!("MQSTORE_BENCH_TOUCH must be sum or crc, not {other:?}"),
    }
}

// A sum of bytes in memory, never stored: the on-disk byte-order lint
// does not apply.
#[allow(clippy::little_endian_bytes)]
fn touch(mode: Touch, body: &[u8]) -> u64 {
    match mode {
        Touch::Crc => u64::from(crc32fast::hash(body)),
        Touch::Sum => {
            let words = body.chunks_exact(8);
            let tail = words.remainder().iter().fold(0u64, |a, &b| a.wrapping_add(u64::from(b)));
            words.map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default())).fold(tail, u64::wrapping_add)
        }
    }
}

// ---------------------------------------------------------------------------
// Raw mmap baseline
// ---------------------------------------------------------------------------

/// The plain mmap + memcpy log of `benches/append.rs` (its files made by
/// the shared `RawMmapLog::map_file`), keeping every segment mapped for
/// reading.
struct RawMmapLog {
    dir: PathBuf,
    /// Full segments and how many bytes of each hold records.
    full: Vec<(memmap2::MmapMut, usize)>,
    map: memmap2::MmapMut,
    pos: usize,
}

impl RawMmapLog {
    fn create(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf(), full: Vec::new(), map: common::RawMmapLog::map_file(dir, 0), pos: 0 }
    }

    fn append(&mut self, body: &[u8]) {
        let len = 8 + body.len();
        if self.pos + len > RAW_MMAP_SEGMENT {
            self.sync();
            let next = common::RawMmapLog::map_file(&self.dir, self.full.len() + 1);
            let done = std::mem::replace(&mut self.map, next);
            self.full.push((done, self.pos));
            self.pos = 0;
        }
        let at = self.pos;
        self.map[at..at + 8].copy_from_slice(&raw_header(body));
        self.map[at + 8..at + len].copy_from_slice(body);
        self.pos += len;
    }

    fn sync(&self) {
        if self.pos > 0 {
            self.map.flush_range(0, self.pos.div_ceil(PAGE) * PAGE).expect("msync");
        }
    }

    /// Reads every record in order, verifying each CRC; returns the count.
    /// Not inlined, so a profiler can select it by name (module doc,
    /// "Profiling").
    #[inline(never)]
    fn read_all(&self) -> usize {
        let mut n = 0;
        for (map, used) in self.full.iter().map(|(m, u)| (m, *u)).chain(std::iter::once((&self.map, self.pos))) {
            let data: &[u8] = &map[..used];
            let mut at = 0;
            while at < used {
                let len = u32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
                let crc = u32::from_be_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
                let body = &data[at + 8..at + 8 + len];
                if crc32fast::hash(body) != crc {
                    panic!("raw-mmap: CRC mismatch at {at}");
                }
                n += 1;
                at += 8 + len;
            }
        }
        n
    }
}

// ---------------------------------------------------------------------------
// Filled logs
// ---------------------------------------------------------------------------

/// Everything one workload reads back, written once.
struct Filled {
    messages: usize,
    touch: Touch,
    touch_sum: u64,
    raw: RawMmapLog,
    _raw_dir: tempfile::TempDir,
    /// (variant, queues, store, bytes of commit log per message, dir)
    stores: Vec<(Variant, u32, Store, f64, tempfile::TempDir)>,
}

impl Drop for Filled {
    fn drop(&mut self) {
        for (_, _, store, _, _) in &self.stores {
            let _ = store.close();
        }
    }
}

/// A store holding `bodies` in a topic of `queues` queues, closed and
/// opened again with `reopen`.
fn fill_store(label: &str, queues: u32, bodies: &Bodies, reopen: StoreOptions) -> (Store, f64, tempfile::TempDir) {
    let dir = bench_dir(label);
    let n = bodies.count();
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open store");
    fill_topic(&store, TOPIC, queues, bodies, FILL_BATCH);
    let bytes_per_msg = store.commit_log().max_offset().0 as f64 / n as f64;
    store.close().expect("close store");
    drop(store);
    let store = Store::open(dir.path(), reopen).expect("reopen store");
    let total: u64 = (0..queues).map(|q| store.max_offset(TOPIC, q).expect("max_offset")).sum();
    assert_eq!(total, n as u64, "{label}: messages lost across reopen");
    (store, bytes_per_msg, dir)
}

fn fill(w: &Workload) -> Filled {
    let bodies = Bodies::new(w.messages, w.body_size, 0x5eed_0001 ^ w.body_size as u64);
    let raw_dir = bench_dir("readback-raw-mmap");
    let mut raw = RawMmapLog::create(raw_dir.path());
    for i in 0..w.messages {
        raw.append(bodies.get(i));
    }
    raw.sync();
    let mut stores = Vec::new();
    let skip = StoreOptions::default().read_checksums(ReadChecksums::Skip);
    for (v, queues, reopen) in [
        (Variant::Mqstore, 1, StoreOptions::default()),
        (Variant::Mqstore4q, 4, StoreOptions::default()),
        (Variant::MqstoreVisitSkip, 1, skip),
    ] {
        let (store, bpm, dir) = fill_store(&format!("readback-{}", v.name()), queues, &bodies, reopen);
        stores.push((v, queues, store, bpm, dir));
    }
    settle();
    let touch = touch_mode();
    Filled { messages: w.messages, touch, touch_sum: bodies.touch_sum(touch), raw, _raw_dir: raw_dir, stores }
}

impl Filled {
    fn bytes_per_msg(&self, v: Variant) -> f64 {
        match v {
            Variant::RawMmap => self.raw.pos as f64 / self.messages as f64,
            Variant::MqstoreVisit => self.bytes_per_msg(Variant::Mqstore),
            _ => self.stores.iter().find(|s| s.0 == v).map_or(f64::NAN, |s| s.3),
        }
    }

    /// One timed read of every message through variant `v`.
    fn read(&self, v: Variant) -> Duration {
        settle();
        match v {
            Variant::RawMmap => {
                let start = Instant::now();
                let n = self.raw.read_all();
                let elapsed = start.elapsed();
                assert_eq!(n, self.messages, "raw-mmap read count");
                elapsed
            }
            Variant::MqstoreVisit | Variant::MqstoreVisitSkip => {
                let filled = if v == Variant::MqstoreVisit { Variant::Mqstore } else { v };
                let (_, queues, store, _, _) = self.stores.iter().find(|s| s.0 == filled).expect("variant filled");
                let start = Instant::now();
                let (n, sum) = read_store_visit(store, *queues, self.touch);
                let elapsed = start.elapsed();
                assert_eq!(n, self.messages, "{} read count", v.name());
                assert_eq!(sum, self.touch_sum, "{} body checksum", v.name());
                elapsed
            }
            _ => {
                let (_, queues, store, _, _) = self.stores.iter().find(|s| s.0 == v).expect("variant filled");
                let start = Instant::now();
                let (n, sum) = read_store(store, *queues, self.touch);
                let elapsed = start.elapsed();
                assert_eq!(n, self.messages, "{} read count", v.name());
                assert_eq!(sum, self.touch_sum, "{} body checksum", v.name());
                elapsed
            }
        }
    }
}

/// Pulls every queue of the bench topic from its first offset to its end,
/// one after another; returns the count and the sum of [`touch`] over the
/// bodies. Not inlined, so a profiler can select it by name.
#[inline(never)]
fn read_store(store: &Store, queues: u32, mode: Touch) -> (usize, u64) {
    let filter = TagFilter::All;
    let mut n = 0;
    let mut sum = 0u64;
    for q in 0..queues {
        let mut offset = store.min_offset(TOPIC, q).expect("min_offset");
        loop {
            let r = store.pull(TOPIC, q, offset, PULL_BATCH, &filter).expect("pull");
            match r.status {
                PullStatus::Found => {}
                PullStatus::NoNewMessage => break,
                other => panic!("pull of queue {q} at {offset}: {other:?}"),
            }
            for m in &r.messages {
                sum = sum.wrapping_add(touch(mode, m.body()));
            }
            n += r.messages.len();
            offset = r.next_offset;
        }
    }
    (n, sum)
}

/// Like [`read_store`], through `Store::pull_with`: each body is touched in
/// place, borrowed from the mapping. Not inlined, so a profiler can select
/// it by name.
#[inline(never)]
fn read_store_visit(store: &Store, queues: u32, mode: Touch) -> (usize, u64) {
    let filter = TagFilter::All;
    let mut n = 0;
    let mut sum = 0u64;
    for q in 0..queues {
        let mut offset = store.min_offset(TOPIC, q).expect("min_offset");
        loop {
            let r = store
                .pull_with(TOPIC, q, offset, PULL_BATCH, &filter, |m| {
                    sum = sum.wrapping_add(touch(mode, m.body()));
                    Ok(())
                })
                .expect("pull_with");
            match r.status {
                PullStatus::Found => {}
                PullStatus::NoNewMessage => break,
                other => panic!("pull_with of queue {q} at {offset}: {other:?}"),
            }
            n += r.count;
            offset = r.next_offset;
        }
    }
    (n, sum)
}

// ---------------------------------------------------------------------------
// End-to-end latency
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LatVariant {
    Condvar,
    MqstoreAsync,
    MqstoreSync,
}

const LAT_VARIANTS: [LatVariant; 3] = [LatVariant::Condvar, LatVariant::MqstoreAsync, LatVariant::MqstoreSync];

impl LatVariant {
    fn name(self) -> &'static str {
        match self {
            LatVariant::Condvar => "condvar hand-off (floor)",
            LatVariant::MqstoreAsync => "mqstore-async",
            LatVariant::MqstoreSync => "mqstore-sync",
        }
    }
}

/// Send -> visible latency of `n` paced messages, in nanoseconds, after
/// [`LAT_DISCARD`] untimed ones on the same store and threads.
fn run_latency(v: LatVariant, n: usize) -> Vec<u64> {
    settle();
    let total = n + LAT_DISCARD;
    let mut lat = match v {
        LatVariant::Condvar => run_condvar(total),
        LatVariant::MqstoreAsync => run_e2e(FlushMode::Async, total),
        LatVariant::MqstoreSync => run_e2e(FlushMode::Sync, total),
    };
    lat.split_off(LAT_DISCARD.min(lat.len()))
}

fn run_e2e(mode: FlushMode, n: usize) -> Vec<u64> {
    let dir = bench_dir("readback-e2e");
    let store = Store::open(dir.path(), StoreOptions::default().flush_mode(mode)).expect("open store");
    store.create_topic(TopicConfig::new(TOPIC, 1)).expect("create topic");
    let base = Instant::now();
    let sent_at = AtomicU64::new(0);
    let (ack_tx, ack_rx) = mpsc::sync_channel::<()>(1);
    let lat = std::thread::scope(|s| {
        let (store_ref, sent_ref) = (&store, &sent_at);
        let reader = s.spawn(move || {
            let filter = TagFilter::All;
            let mut lat = Vec::with_capacity(n);
            let mut offset = 0u64;
            // Ready: the first send waits for this, then the gap.
            ack_tx.send(()).expect("ready");
            while lat.len() < n {
                let r = store_ref.pull_wait(TOPIC, 0, offset, PULL_BATCH, &filter, LAT_TIMEOUT).expect("pull_wait");
                let got = now_ns(base);
                assert_eq!(r.status, PullStatus::Found, "no message within {LAT_TIMEOUT:?} at offset {offset}");
                assert_eq!(r.messages.len(), 1, "paced sends: one message in flight");
                let seq = u64::from_be_bytes(r.messages[0].body()[..8].try_into().expect("8 bytes"));
                assert_eq!(seq, lat.len() as u64, "message order");
                lat.push(got.saturating_sub(sent_ref.load(Ordering::Acquire)));
                offset = r.next_offset;
                if ack_tx.send(()).is_err() {
                    break;
                }
            }
            lat
        });
        let mut template = vec![0u8; LAT_BODY];
        for (i, b) in template.iter_mut().enumerate() {
            *b = i as u8;
        }
        ack_rx.recv().expect("reader ready");
        for i in 0..n {
            let mut body = template.clone();
            body[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let msg = Message::new(TOPIC, body);
            std::thread::sleep(LAT_GAP);
            sent_at.store(now_ns(base), Ordering::Release);
            store.send(msg).expect("send");
            ack_rx.recv().expect("reader acknowledgement");
        }
        reader.join().expect("reader thread")
    });
    store.close().expect("close store");
    drop(dir);
    lat
}

fn run_condvar(n: usize) -> Vec<u64> {
    let base = Instant::now();
    // (messages published, send time of the last one)
    let slot = (Mutex::new((0u64, 0u64)), Condvar::new());
    let (ack_tx, ack_rx) = mpsc::sync_channel::<()>(1);
    std::thread::scope(|s| {
        let slot_ref = &slot;
        let reader = s.spawn(move || {
            let mut lat = Vec::with_capacity(n);
            let mut seen = 0u64;
            ack_tx.send(()).expect("ready");
            while lat.len() < n {
                let mut g = slot_ref.0.lock().expect("lock");
                while g.0 == seen {
                    g = slot_ref.1.wait(g).expect("wait");
                }
                let got = now_ns(base);
                seen = g.0;
                let t0 = g.1;
                drop(g);
                lat.push(got.saturating_sub(t0));
                if ack_tx.send(()).is_err() {
                    break;
                }
            }
            lat
        });
        ack_rx.recv().expect("reader ready");
        for _ in 0..n {
            std::thread::sleep(LAT_GAP);
            let t0 = now_ns(base);
            {
                let mut g = slot.0.lock().expect("lock");
                g.0 += 1;
                g.1 = t0;
            }
            slot.1.notify_one();
            ack_rx.recv().expect("reader acknowledgement");
        }
        reader.join().expect("reader thread")
    })
}

// ---------------------------------------------------------------------------
// Statistics helpers
// ---------------------------------------------------------------------------

fn print_latency_report(results: &[(LatVariant, Vec<u64>)], note: &str) {
    println!();
    println!("### e2e_latency: send -> visible to a pull_wait reader, {LAT_BODY} B ({note})");
    println!();
    println!("| variant | samples | p50 us | p99 us | p99.9 us | max us |");
    println!("|---|---|---|---|---|---|");
    for (v, lat) in results {
        println!("{}", latency_line(v.name(), lat));
    }
    println!();
}

// ---------------------------------------------------------------------------
// Interleaved ratio mode
// ---------------------------------------------------------------------------

fn interleaved_workload(w: &Workload, rounds: usize) {
    println!();
    println!(
        "### {} (N = {}, body {} B, pull batch {PULL_BATCH}, mqstore body touch {:?}; {} rounds after 1 warm-up round)",
        w.name,
        fmt_rate(w.messages as f64),
        w.body_size,
        touch_mode(),
        rounds
    );
    println!();
    let filled = fill(w);
    // Warm-up round (first-touch faults of every mapping), not recorded.
    for v in VARIANTS {
        let _ = filled.read(v);
    }
    let mut samples: Vec<[Duration; VARIANTS.len()]> = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let mut row = [Duration::ZERO; VARIANTS.len()];
        let mut line = format!("round {}:", r + 1);
        for v in rotated(&VARIANTS, r) {
            let d = filled.read(v);
            line.push_str(&format!(" {}={} msgs/s", v.name(), fmt_rate(rate(w.messages, d))));
            row[VARIANTS.iter().position(|x| *x == v).unwrap_or(0)] = d;
        }
        println!("{line}");
        samples.push(row);
    }
    let raw = VARIANTS.iter().position(|v| *v == Variant::RawMmap).unwrap_or(0);
    println!();
    println!(
        "| variant | median msgs/s | min-max msgs/s | ns/msg (median) | body MB/s (median) | variant / raw-mmap (median of per-round ratios, min-max) | log bytes/msg |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (vi, v) in VARIANTS.iter().enumerate() {
        let rates: Vec<f64> = samples.iter().map(|row| rate(w.messages, row[vi])).collect();
        let (lo, hi) = min_max(&rates);
        let ratios: Vec<f64> = samples.iter().map(|row| row[raw].as_secs_f64() / row[vi].as_secs_f64()).collect();
        let (rlo, rhi) = min_max(&ratios);
        let ratio = if vi == raw {
            "-".to_string()
        } else {
            format!("**{:.2}x** ({:.2}-{:.2}; target >= 0.7x)", median(&ratios), rlo, rhi)
        };
        println!(
            "| {} | {} | {}-{} | {:.0} | {:.0} | {} | {:.1} |",
            v.name(),
            fmt_rate(median(&rates)),
            fmt_rate(lo),
            fmt_rate(hi),
            1e9 / median(&rates),
            median(&rates) * w.body_size as f64 / 1e6,
            ratio,
            filled.bytes_per_msg(*v),
        );
    }
    println!();
}

fn interleaved_latency(rounds: usize) {
    // Warm-up.
    for v in LAT_VARIANTS {
        let _ = run_latency(v, LAT_MESSAGES / 5);
    }
    let mut pooled: Vec<(LatVariant, Vec<u64>)> = LAT_VARIANTS.iter().map(|v| (*v, Vec::new())).collect();
    let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); LAT_VARIANTS.len()];
    let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); LAT_VARIANTS.len()];
    for r in 0..rounds {
        let mut line = format!("round {}:", r + 1);
        for v in rotated(&LAT_VARIANTS, r) {
            let lat = run_latency(v, LAT_MESSAGES);
            let vi = LAT_VARIANTS.iter().position(|x| *x == v).unwrap_or(0);
            let (p50, p99) = (percentile_us(&lat, 0.5), percentile_us(&lat, 0.99));
            line.push_str(&format!(" {}: p50 {p50:.1} us, p99 {p99:.1} us;", v.name()));
            p50s[vi].push(p50);
            p99s[vi].push(p99);
            pooled[vi].1.extend(lat);
        }
        println!("{line}");
    }
    print_latency_report(
        &pooled,
        &format!("{LAT_MESSAGES} messages per variant per round, {rounds} interleaved rounds pooled"),
    );
    println!("| variant | per-round p50 us (median, min-max) | per-round p99 us (median, min-max) |");
    println!("|---|---|---|");
    for (vi, v) in LAT_VARIANTS.iter().enumerate() {
        let (a, b) = min_max(&p50s[vi]);
        let (c, d) = min_max(&p99s[vi]);
        println!(
            "| {} | {:.1} ({a:.1}-{b:.1}) | {:.1} ({c:.1}-{d:.1}) |",
            v.name(),
            median(&p50s[vi]),
            median(&p99s[vi])
        );
    }
    println!();
}

fn run_interleaved(rounds: usize) {
    println!("# mqstore read-back benchmark, interleaved ratio mode ({rounds} rounds)");
    println!();
    println!(
        "Read-back throughput = messages / time to read all of them (hot page cache, mappings already faulted); fill untimed."
    );
    println!(
        "Ratios are variant throughput / raw-mmap throughput, computed per round then medianed (>1 = variant faster)."
    );
    for w in [scaled(W_128B), scaled(W_1KIB)] {
        if selected(w.name) {
            interleaved_workload(&w, rounds);
        }
    }
    if selected("e2e_latency") {
        interleaved_latency(rounds);
    }
}

// ---------------------------------------------------------------------------
// Criterion mode
// ---------------------------------------------------------------------------

fn bench_workload(c: &mut Criterion, w: &Workload) {
    let filled = fill(w);
    let mut group = c.benchmark_group(w.name);
    configure(&mut group);
    group.throughput(Throughput::Elements(w.messages as u64));
    let collected: RefCell<Vec<(Variant, Duration)>> = RefCell::new(Vec::new());
    for v in VARIANTS {
        group.bench_function(v.name(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let d = filled.read(v);
                    total += d;
                    collected.borrow_mut().push((v, d));
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
    println!(
        "{}: read-back msgs/s over every criterion iteration (warm-up included; mqstore body touch {:?}):",
        w.name, filled.touch
    );
    for v in VARIANTS {
        let rates: Vec<f64> = collected.iter().filter(|(x, _)| *x == v).map(|(_, d)| rate(w.messages, *d)).collect();
        if rates.is_empty() {
            continue;
        }
        let (lo, hi) = min_max(&rates);
        println!(
            "  {:<10} median {} msgs/s, min-max {}-{}; {:.1} log bytes/msg; {} iterations",
            v.name(),
            fmt_rate(median(&rates)),
            fmt_rate(lo),
            fmt_rate(hi),
            filled.bytes_per_msg(v),
            rates.len(),
        );
    }
    println!();
}

fn bench_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("e2e_latency");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        // Short: the returned time excludes the pacing gaps (~70-100 us per
        // message), so wall time is up to ~40x the measured time for the
        // condvar floor.
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_millis(300));
    let collected: RefCell<Vec<(LatVariant, Vec<u64>)>> =
        RefCell::new(LAT_VARIANTS.iter().map(|v| (*v, Vec::new())).collect());
    for (vi, v) in LAT_VARIANTS.iter().enumerate() {
        let id = match v {
            LatVariant::Condvar => "condvar",
            other => other.name(),
        };
        group.bench_function(id, |b| {
            // One iteration = one message: the returned time is the sum of
            // send -> visible latencies (pacing gaps excluded).
            b.iter_custom(|iters| {
                let lat = run_latency(*v, iters as usize);
                let total = Duration::from_nanos(lat.iter().sum());
                collected.borrow_mut()[vi].1.extend(lat);
                total
            });
        });
    }
    group.finish();
    let collected = collected.borrow();
    if collected.iter().any(|(_, l)| !l.is_empty()) {
        print_latency_report(&collected, "every criterion iteration pooled, warm-up included");
    }
}

fn main() {
    if let Some(rounds) = interleaved_rounds() {
        run_interleaved(rounds);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_workload(&mut c, &scaled(W_128B));
    bench_workload(&mut c, &scaled(W_1KIB));
    bench_latency(&mut c);
    c.final_summary();
}
