#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Recovery time: how long [`Store::open`] takes on a store holding 1 GiB of
//! commit log, after a clean close, after a crash, and with nothing derived
//! left to start from; and on a store with 10,000 queues. The raw baseline
//! in the same group is what no recovery can beat: reading and
//! CRC-checking the same bytes sequentially through a fresh `mmap`.
//!
//! Every store lives in a fresh directory under `/work/bench-tmp` (removed
//! afterwards); `sync()` runs before every timed open, so writeback of the
//! preparation does not land in it. Nothing drops the page cache: every
//! open reads files that were just written (hot cache), as after a process
//! crash or a restart of a running service. Each workload's store is filled
//! once (untimed: `send_batch` of 64, then wait until every message is
//! dispatched, then `close`); every variant then works on that same store
//! directory, one after the other, and leaves it closed cleanly.
//!
//! ## Workloads
//!
//! * `recovery_1GiB`: one topic with 4 queues, 1 KiB random bodies
//!   (`MQSTORE_BENCH_RECOVERY_BODY` changes the size), sent until the commit
//!   log holds 1 GiB (`MQSTORE_BENCH_RECOVERY_GIB` scales it). Default
//!   options (`FlushMode::Async`, 1 GiB segments, 300,000-unit queue files).
//! * `recovery_10k_queues`: 1,000 topics x 10 queues, 128 B bodies spread
//!   over them (`send_batch` of 16 to each topic in turn, queues chosen by
//!   the store's round robin) until the log holds 256 MiB (about 1.3 M
//!   messages, 130 per queue). Consume-queue files hold 4,096 units
//!   (80 KiB) instead of 300,000 (6 MB): 10,000 preallocated default files
//!   would take 60 GB of the shared disk.
//!
//! ## Variants (the timed region is `Store::open` alone)
//!
//! * `raw-mmap-crc` (1 GiB only): maps each segment file of the store
//!   read-only with `memmap2` (a new mapping each round), walks the records
//!   by their length field, and checks each record's CRC-32 (`crc32fast`,
//!   over the record with its CRC field as zeros, as the format defines it)
//!   until the zero fill. It builds nothing: no queues, no index.
//! * `clean`: open after `close()`.
//! * `crash`: the bench binary re-runs itself as a child process (as the
//!   crash tests in `tests/*crash_kill.rs` do), which opens the store (its
//!   open writes fresh commit-log and dispatch checkpoints), sends a tail of
//!   16 MiB (`MQSTORE_BENCH_RECOVERY_TAIL_MIB`) at full speed, reports
//!   `@@READY <messages>` and is killed with SIGKILL. Everything it wrote is
//!   in the page cache, unflushed, exactly as after `kill -9`; recovery
//!   scans and re-dispatches the tail past the checkpoints. The store grows
//!   by the tail each round (noted in the table).
//! * `rescan` (1 GiB only): the commit-log checkpoint and the dispatch
//!   checkpoint (`checkpoint`, `config/dispatch`) are deleted first, so the
//!   open CRC-checks the whole log and re-dispatches every record against
//!   the consume queues and index that are still there.
//! * `rebuild`: also deletes `consumequeue/` and `index/`, so the open
//!   rebuilds every queue and the whole index from the commit log: the full
//!   rescan of the target (<= 10 s per GiB).
//!
//! After every timed open the bench checks that the queues hold every
//! message sent (including the crashed child's), then closes the store.
//! Reported: seconds (median, min-max), seconds per GiB of commit log
//! (the log's size at that round) and the ratio to `raw-mmap-crc`. Targets
//! (issue 9): <= 1 s per GiB with a fresh checkpoint, <= 10 s for a full
//! rescan of 1 GiB.
//!
//! ## Modes
//!
//! Criterion mode (default): `cargo bench --bench recovery` (add `--
//! --test` for a one-iteration smoke run; a full criterion run takes about
//! 10 iterations per variant, several minutes for `rebuild`).
//!
//! Interleaved ratio mode: `MQSTORE_BENCH_INTERLEAVED=5 cargo bench --bench
//! recovery` skips criterion, runs one untimed warm-up round and then the
//! given number of rounds per workload, each round running every variant
//! once with the starting variant rotated, and prints a markdown table per
//! workload: median seconds, min-max, s/GiB and the ratio to the raw
//! baseline computed per round and then medianed.
//! `MQSTORE_BENCH_RECOVERY_KEEP=1` keeps each workload's store directory
//! (printing its path) for profiling `Store::open` on it.
//! `MQSTORE_BENCH_ONLY=1GiB` restricts it to the workloads whose names
//! contain one of the given substrings (`recovery_1GiB`,
//! `recovery_10k_queues`).

#[path = "common/mod.rs"]
mod common;

use common::*;
use criterion::{Criterion, Throughput};
use mqstore::commitlog::{BLANK_MAGIC, COMMITLOG_DIR, RECORD_MAGIC, SEGMENT_HEADER_LEN};
use mqstore::message::Message;
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in a child process: the store directory it crashes on.
const ENV_CHILD_DIR: &str = "MQSTORE_BENCH_RECOVERY_CHILD_DIR";
/// Set in a child process: the workload name.
const ENV_CHILD_WORKLOAD: &str = "MQSTORE_BENCH_RECOVERY_CHILD_WORKLOAD";
const GIB: f64 = (1u64 << 30) as f64;
/// Messages per `send_batch` (fill and crash tail of the 1 GiB workload).
const BATCH: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Workload {
    name: &'static str,
    topics: u32,
    queues: u32,
    body: usize,
    /// Commit-log bytes to fill.
    bytes: u64,
    /// Messages per `send_batch`.
    batch: usize,
    units_per_file: Option<u64>,
    variants: &'static [Variant],
}

const ALL: [Variant; 5] = [Variant::RawMmapCrc, Variant::Clean, Variant::Crash, Variant::Rescan, Variant::Rebuild];

fn w_1gib() -> Workload {
    let gib = env_f64("MQSTORE_BENCH_RECOVERY_GIB").unwrap_or(1.0);
    Workload {
        name: "recovery_1GiB",
        topics: 1,
        queues: 4,
        body: env_f64("MQSTORE_BENCH_RECOVERY_BODY").map_or(1024, |b| b as usize),
        bytes: (gib * GIB) as u64,
        batch: BATCH,
        units_per_file: None,
        variants: &ALL,
    }
}

fn w_10k() -> Workload {
    Workload {
        name: "recovery_10k_queues",
        topics: 1_000,
        queues: 10,
        body: 128,
        bytes: 256 << 20,
        batch: 16,
        units_per_file: Some(4_096),
        variants: &[Variant::Clean, Variant::Crash, Variant::Rebuild],
    }
}

fn workload(name: &str) -> Workload {
    [w_1gib(), w_10k()].into_iter().find(|w| w.name == name).expect("known workload")
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|v: &f64| *v > 0.0)
}

fn tail_bytes() -> u64 {
    (env_f64("MQSTORE_BENCH_RECOVERY_TAIL_MIB").unwrap_or(16.0) * (1u64 << 20) as f64) as u64
}

impl Workload {
    fn opts(&self) -> StoreOptions {
        let o = StoreOptions::default();
        match self.units_per_file {
            Some(u) => o.consume_queue_units_per_file(u),
            None => o,
        }
    }

    fn topic(&self, t: u32) -> String {
        if self.topics == 1 {
            "bench".to_string()
        } else {
            format!("bench-{t:04}")
        }
    }

    /// Messages in every queue of every topic.
    fn queued(&self, store: &Store) -> u64 {
        let mut n = 0;
        for t in 0..self.topics {
            let topic = self.topic(t);
            for q in 0..self.queues {
                n += store.max_offset(&topic, q).expect("max_offset");
            }
        }
        n
    }

    /// Sends batches (rotating over the topics) until the commit log has
    /// grown by `bytes`; returns how many messages were sent.
    fn send_until(&self, store: &Store, bytes: u64, seed: u64) -> u64 {
        let bodies = Bodies::new(4_096, self.body, seed);
        let start = store.commit_log().max_offset().0;
        let mut sent = 0u64;
        let mut t = 0u32;
        while store.commit_log().max_offset().0 - start < bytes {
            let topic = self.topic(t);
            let msgs: Vec<Message> = (0..self.batch)
                .map(|i| Message::new(topic.as_str(), bodies.get((sent as usize + i) % bodies.count()).to_vec()))
                .collect();
            store.send_batch(msgs).expect("send_batch");
            sent += self.batch as u64;
            t = (t + 1) % self.topics;
        }
        sent
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    RawMmapCrc,
    Clean,
    Crash,
    Rescan,
    Rebuild,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::RawMmapCrc => "raw-mmap-crc",
            Variant::Clean => "clean",
            Variant::Crash => "crash",
            Variant::Rescan => "rescan",
            Variant::Rebuild => "rebuild",
        }
    }
}

// ---------------------------------------------------------------------------
// The store under test
// ---------------------------------------------------------------------------

struct Filled {
    w: Workload,
    dir: tempfile::TempDir,
    /// Messages the store holds (grows with every crash round's tail).
    messages: u64,
}

fn fill(w: Workload) -> Filled {
    let dir = bench_dir(&format!("recovery-{}", w.name));
    let store = Store::open(dir.path(), w.opts()).expect("open store");
    for t in 0..w.topics {
        store.create_topic(TopicConfig::new(w.topic(t), w.queues)).expect("create topic");
    }
    let sent = w.send_until(&store, w.bytes, 0x5eed_0002);
    let deadline = Instant::now() + Duration::from_secs(600);
    while w.queued(&store) < sent {
        assert!(Instant::now() < deadline, "{}: dispatch did not catch up", w.name);
        std::thread::sleep(Duration::from_millis(5));
    }
    store.close().expect("close store");
    Filled { w, dir, messages: sent }
}

impl Filled {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Commit-log bytes on disk (sum of the records, from the segment files).
    fn log_bytes(&self) -> u64 {
        raw_walk(self.path()).1
    }

    /// Prepares (untimed), then times one `Store::open` (or the raw walk);
    /// returns the time and the commit-log bytes it covered.
    fn round(&mut self, v: Variant) -> (Duration, u64) {
        match v {
            Variant::RawMmapCrc => {
                settle();
                let start = Instant::now();
                let (records, bytes) = raw_walk(self.path());
                let elapsed = start.elapsed();
                assert_eq!(records, self.messages, "raw walk record count");
                return (elapsed, bytes);
            }
            Variant::Clean => {}
            Variant::Crash => self.messages = crash_child(self.path(), &self.w, self.messages),
            Variant::Rescan | Variant::Rebuild => {
                let root = self.path();
                for f in [root.join(mqstore::commitlog::CHECKPOINT_FILE), root.join("config").join("dispatch")] {
                    std::fs::remove_file(&f).unwrap_or_else(|e| panic!("remove {}: {e}", f.display()));
                }
                if v == Variant::Rebuild {
                    for d in ["consumequeue", "index"] {
                        std::fs::remove_dir_all(root.join(d)).unwrap_or_else(|e| panic!("remove {d}: {e}"));
                    }
                }
            }
        }
        settle();
        let start = Instant::now();
        let store = Store::open(self.path(), self.w.opts()).expect("open store");
        let elapsed = start.elapsed();
        let log = store.commit_log();
        let bytes = log.max_offset().0 - log.min_offset().0;
        assert_eq!(self.w.queued(&store), self.messages, "{}: messages in the queues after open", v.name());
        store.close().expect("close store");
        (elapsed, bytes)
    }
}

// ---------------------------------------------------------------------------
// Raw baseline: read + CRC every record through a fresh read-only mapping
// ---------------------------------------------------------------------------

/// Walks every record of every segment of the store at `root`, checking
/// its CRC; returns (records, record bytes including end-of-segment
/// markers' segment headers excluded).
fn raw_walk(root: &Path) -> (u64, u64) {
    let dir = root.join(COMMITLOG_DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("list commitlog")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.len() == 20))
        .collect();
    files.sort();
    let (mut records, mut bytes) = (0u64, 0u64);
    for path in files {
        let file = std::fs::File::open(&path).expect("open segment");
        // SAFETY: the store is closed; nothing writes the file while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap segment");
        let mut at = SEGMENT_HEADER_LEN;
        while at + 8 <= map.len() {
            let len = u32::from_be_bytes(map[at..at + 4].try_into().expect("4 bytes")) as usize;
            let magic = u32::from_be_bytes(map[at + 4..at + 8].try_into().expect("4 bytes"));
            if len == 0 || magic == BLANK_MAGIC {
                break;
            }
            assert_eq!(magic, RECORD_MAGIC, "{}: bad record at {at}", path.display());
            let rec = &map[at..at + len];
            let mut h = crc32fast::Hasher::new();
            h.update(&rec[..8]);
            h.update(&[0u8; 4]);
            h.update(&rec[12..]);
            let stored = u32::from_be_bytes(rec[8..12].try_into().expect("4 bytes"));
            assert_eq!(h.finalize(), stored, "{}: CRC mismatch at {at}", path.display());
            records += 1;
            bytes += len as u64;
            at += len;
        }
    }
    (records, bytes)
}

// ---------------------------------------------------------------------------
// Crash: a child process writes a tail and is killed with SIGKILL
// ---------------------------------------------------------------------------

/// Runs one crash child on `dir`; returns the messages the store holds
/// after the kill (`before` plus the child's tail).
fn crash_child(dir: &Path, w: &Workload, before: u64) -> u64 {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .env(ENV_CHILD_DIR, dir)
        .env(ENV_CHILD_WORKLOAD, w.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crash child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut total = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child stdout");
        if let Some(rest) = line.strip_prefix("@@READY ") {
            total = Some(rest.trim().parse::<u64>().expect("message count"));
            break;
        }
    }
    // std's kill is SIGKILL: no destructor, no close, no flush runs.
    let _ = child.kill();
    let status = child.wait().expect("reap crash child");
    let total = total.unwrap_or_else(|| panic!("crash child exited before @@READY: {status}"));
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "crash child was not killed: {status}");
    }
    assert!(total > before, "crash child sent nothing");
    total
}

/// The child: open, send the tail at full speed, report, wait for SIGKILL.
fn run_child(dir: &str, workload_name: &str) {
    let w = workload(workload_name);
    let store = Store::open(dir, w.opts()).expect("child: open store");
    let before = w.queued(&store);
    let sent = w.send_until(&store, tail_bytes(), 0x5eed_0003 ^ before);
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@READY {}", before + sent).expect("report");
    out.flush().expect("flush report");
    drop(out);
    // Keep the store open (never closed, never dropped) until the kill.
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let _ = &store;
    }
}

// ---------------------------------------------------------------------------
// Interleaved ratio mode
// ---------------------------------------------------------------------------

fn interleaved_workload(w: Workload, rounds: usize) {
    println!();
    println!(
        "### {} ({} topics x {} queues, body {} B, filled to {:.0} MiB of commit log, crash tail {:.0} MiB; {} rounds after 1 warm-up round)",
        w.name,
        w.topics,
        w.queues,
        w.body,
        w.bytes as f64 / (1u64 << 20) as f64,
        tail_bytes() as f64 / (1u64 << 20) as f64,
        rounds
    );
    println!();
    let mut filled = fill(w);
    println!("filled: {} messages, {:.3} GiB of records", filled.messages, filled.log_bytes() as f64 / GIB);
    let vs = w.variants;
    for &v in vs {
        let _ = filled.round(v);
    }
    let mut samples: Vec<Vec<(Duration, u64)>> = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let mut row = vec![(Duration::ZERO, 0u64); vs.len()];
        let mut line = format!("round {}:", r + 1);
        for v in rotated(vs, r) {
            let (d, bytes) = filled.round(v);
            line.push_str(&format!(" {}={:.3}s", v.name(), d.as_secs_f64()));
            row[vs.iter().position(|x| *x == v).unwrap_or(0)] = (d, bytes);
        }
        println!("{line}");
        samples.push(row);
    }
    if std::env::var_os("MQSTORE_BENCH_RECOVERY_KEEP").is_some() {
        println!("kept the store (closed cleanly) at {}", filled.dir.keep().display());
    }
    let raw = vs.iter().position(|v| *v == Variant::RawMmapCrc);
    println!();
    println!("| variant | median s | min-max s | s per GiB (median) | GiB of log (last round) | variant / raw-mmap-crc time (median of per-round ratios, min-max) | target |");
    println!("|---|---|---|---|---|---|---|");
    for (vi, v) in vs.iter().enumerate() {
        let secs: Vec<f64> = samples.iter().map(|row| row[vi].0.as_secs_f64()).collect();
        let per_gib: Vec<f64> = samples.iter().map(|row| row[vi].0.as_secs_f64() / (row[vi].1 as f64 / GIB)).collect();
        let (lo, hi) = min_max(&secs);
        let ratio = match raw {
            Some(ri) if ri != vi => {
                let r: Vec<f64> = samples.iter().map(|row| row[vi].0.as_secs_f64() / row[ri].0.as_secs_f64()).collect();
                let (rlo, rhi) = min_max(&r);
                format!("{:.1}x ({rlo:.1}-{rhi:.1})", median(&r))
            }
            _ => "-".to_string(),
        };
        let target = match v {
            Variant::Crash => "<= 1 s per GiB",
            Variant::Rebuild => "<= 10 s per GiB",
            _ => "",
        };
        let gib = samples.last().map_or(0.0, |row| row[vi].1 as f64 / GIB);
        println!(
            "| {} | {:.3} | {lo:.3}-{hi:.3} | {:.3} | {gib:.3} | {ratio} | {target} |",
            v.name(),
            median(&secs),
            median(&per_gib)
        );
    }
    println!();
}

fn run_interleaved(rounds: usize) {
    println!("# mqstore recovery benchmark, interleaved mode ({rounds} rounds)");
    println!();
    println!("Time of Store::open (hot page cache); raw-mmap-crc = map + walk + CRC of every record, nothing built.");
    for w in [w_1gib(), w_10k()] {
        if selected(w.name) {
            interleaved_workload(w, rounds);
        }
    }
}

// ---------------------------------------------------------------------------
// Criterion mode
// ---------------------------------------------------------------------------

fn bench_workload(c: &mut Criterion, w: Workload) {
    let filled = RefCell::new(fill(w));
    let bytes = filled.borrow().log_bytes();
    let mut group = c.benchmark_group(w.name);
    configure(&mut group);
    group.throughput(Throughput::Bytes(bytes));
    for &v in w.variants {
        group.bench_function(v.name(), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| filled.borrow_mut().round(v).0).sum());
        });
    }
    group.finish();
}

fn main() {
    if let (Ok(dir), Ok(name)) = (std::env::var(ENV_CHILD_DIR), std::env::var(ENV_CHILD_WORKLOAD)) {
        run_child(&dir, &name);
        return;
    }
    if let Some(rounds) = interleaved_rounds() {
        run_interleaved(rounds);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    for w in [w_1gib(), w_10k()] {
        if selected(w.name) {
            bench_workload(&mut c, w);
        }
    }
    c.final_summary();
}
