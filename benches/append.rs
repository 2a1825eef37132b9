#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Append throughput of the mqstore commit log against two raw baselines.
//!
//! Every workload is measured for three variants, each on a fresh directory
//! under `/work/bench-tmp` (created if missing, removed afterwards):
//!
//! * `raw-file`: a `BufWriter` (1 MiB) over a `File`; records are
//!   `[u32 len][u32 crc32][body]` (CRC32 of the body, `crc32fast`); a sync
//!   point is `BufWriter::flush` + `File::sync_data` (fdatasync).
//! * `raw-mmap`: a sparse 1 GiB file (`set_len`) mapped with `memmap2`,
//!   records memcpy'd as `[len][crc][body]`; a sync point is `flush_range`
//!   (msync) over the dirty range from a page-aligned start; rolls to a new
//!   file when full.
//! * `mqstore`: `CommitLog::open(dir, CommitLogOptions::default())` (1 GiB
//!   segments, `FlushMode::Async`), one `append` per message with topic
//!   `"bench"`, `log.flush()` at each sync point.
//!
//! Opening the log / creating the files happens outside the timed region;
//! the timed region is "append N messages + every sync point + the final
//! flush". The mqstore background threads (flusher, segment preallocation
//! and the 16 MiB prefault window) start at open and get no special
//! treatment: the clock starts as soon as `open` returns.
//!
//! Workloads:
//!
//! 1. `append_128B_async`: 200,000 x 128 B random bodies, one final flush.
//!    Also prints each variant's append-only time per message (excluding
//!    the final flush; every workload prints it, sync points included) and
//!    the final flush time; the mqstore append-only target is <= 250 ns.
//! 2. `append_1KiB_async`: 50,000 x 1 KiB, one final flush.
//! 3. `append_128B_durable`: 100,000 x 128 B, a sync point every 1,000
//!    messages plus the final one.
//! 4. `sync_flush_16_threads`: `FlushMode::Sync`, 16 threads x 2,000
//!    appends of 128 B; acknowledged messages per second (target >= 50,000).
//!    Followed by a single-thread latency report: p50/p99 of one Sync append
//!    (2,000 appends) versus one 4 KiB `pwrite` + `fdatasync` into a
//!    preallocated file (both a zero-filled, synced file and a `fallocate`d
//!    one, whose unwritten extents cost a journal commit on first write).
//!
//! Criterion mode (default): `cargo bench --bench append` (add `-- --test`
//! for a one-iteration smoke run). Criterion runs the functions of a group
//! one after the other, so slow drift of the noisy VM lands on one variant.
//!
//! Interleaved ratio mode: `MQSTORE_BENCH_INTERLEAVED=5 cargo bench --bench
//! append` skips criterion, runs one untimed warm-up round and then the
//! given number of rounds per workload, each round running every variant
//! once with the starting variant rotated (A B C, B C A, C A B, ...), and
//! prints a markdown table per workload: median msgs/s, min-max, and the
//! ratio mqstore / baseline computed per round and then medianed.
//! `MQSTORE_BENCH_ONLY=128B_async,sync_flush` restricts it to the workloads
//! whose names contain one of the given substrings (`append_128B_async`,
//! `append_1KiB_async`, `append_128B_durable`, `sync_flush_16_threads`,
//! `sync_latency`).

#[path = "common/mod.rs"]
mod common;

use common::*;
use criterion::{Criterion, Throughput};
use mqstore::commitlog::{CommitLog, CommitLogOptions, FlushMode, RecordDraft};
use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
const TOPIC: &str = "bench";

// ---------------------------------------------------------------------------
// Workloads and inputs
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Workload {
    name: &'static str,
    messages: usize,
    body_size: usize,
    /// A sync point after every this many messages (besides the final one).
    sync_every: Option<usize>,
}

const W_128B_ASYNC: Workload =
    Workload { name: "append_128B_async", messages: 200_000, body_size: 128, sync_every: None };
const W_1KIB_ASYNC: Workload =
    Workload { name: "append_1KiB_async", messages: 50_000, body_size: 1024, sync_every: None };
const W_128B_DURABLE: Workload =
    Workload { name: "append_128B_durable", messages: 100_000, body_size: 128, sync_every: Some(1_000) };

const SYNC_THREADS: usize = 16;
const SYNC_PER_THREAD: usize = 2_000;
const SYNC_BODY: usize = 128;
const LATENCY_APPENDS: usize = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    RawFile,
    RawMmap,
    Mqstore,
    /// `FlushMode::Sync`, one `append_batch` per sync point (durable
    /// workloads only): the staging buffer committed with pwrite+fdatasync.
    MqstoreSyncBatch,
}

/// The variants measured for a workload.
fn variants(w: &Workload) -> Vec<Variant> {
    let mut v = vec![Variant::RawFile, Variant::RawMmap, Variant::Mqstore];
    if w.sync_every.is_some() {
        v.push(Variant::MqstoreSyncBatch);
    }
    v
}

fn scaled(w: Workload) -> Workload {
    Workload { messages: w.messages * scale(), ..w }
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::RawFile => "raw-file",
            Variant::RawMmap => "raw-mmap",
            Variant::Mqstore => "mqstore",
            Variant::MqstoreSyncBatch => "mqstore-sync-batch",
        }
    }
}

/// Timings of one run of a workload.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Appends, intermediate sync points and the final flush.
    total: Duration,
    /// Everything before the final flush.
    append_only: Duration,
    /// Bytes one message occupies in the log.
    record_bytes: u64,
}

fn is_sync_point(w: &Workload, done: usize) -> bool {
    matches!(w.sync_every, Some(k) if done.is_multiple_of(k) && done < w.messages)
}

// ---------------------------------------------------------------------------
// Variant implementations
// ---------------------------------------------------------------------------

fn run_raw_file(w: &Workload, bodies: &Bodies) -> Sample {
    let dir = bench_dir("raw-file");
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.path().join("log"))
        .expect("create raw-file log");
    let mut out = BufWriter::with_capacity(1 << 20, file);

    let start = Instant::now();
    for i in 0..w.messages {
        let body = bodies.get(i);
        out.write_all(&raw_header(body)).expect("write header");
        out.write_all(body).expect("write body");
        if is_sync_point(w, i + 1) {
            out.flush().expect("flush");
            out.get_ref().sync_data().expect("fdatasync");
        }
    }
    let append_only = start.elapsed();
    out.flush().expect("flush");
    out.get_ref().sync_data().expect("fdatasync");
    let total = start.elapsed();

    drop(out);
    drop(dir);
    Sample { total, append_only, record_bytes: 8 + w.body_size as u64 }
}

fn run_raw_mmap(w: &Workload, bodies: &Bodies) -> Sample {
    let dir = bench_dir("raw-mmap");
    let mut log = RawMmapLog::create(dir.path());

    let start = Instant::now();
    for i in 0..w.messages {
        log.append(bodies.get(i));
        if is_sync_point(w, i + 1) {
            log.sync();
        }
    }
    let append_only = start.elapsed();
    log.sync();
    let total = start.elapsed();

    drop(log);
    drop(dir);
    Sample { total, append_only, record_bytes: 8 + w.body_size as u64 }
}

fn run_mqstore(w: &Workload, bodies: &Bodies) -> Sample {
    let dir = bench_dir("mqstore");
    let log = CommitLog::open(dir.path(), CommitLogOptions::default()).expect("open commit log");

    let mut record_bytes = 0u32;
    let start = Instant::now();
    for i in 0..w.messages {
        let a = log
            .append(&RecordDraft {
                topic: TOPIC,
                queue_id: 0,
                queue_offset: i as u64,
                body: bodies.get(i),
                ..Default::default()
            })
            .expect("append");
        record_bytes = a.size;
        if is_sync_point(w, i + 1) {
            log.flush().expect("flush");
        }
    }
    let append_only = start.elapsed();
    log.flush().expect("flush");
    let total = start.elapsed();

    log.close().expect("close");
    drop(log);
    drop(dir);
    Sample { total, append_only, record_bytes: u64::from(record_bytes) }
}

fn run_mqstore_sync_batch(w: &Workload, bodies: &Bodies) -> Sample {
    let dir = bench_dir("mqstore-sync");
    let log = CommitLog::open(dir.path(), CommitLogOptions::default().flush_mode(FlushMode::Sync)).expect("open");
    let per = w.sync_every.unwrap_or(w.messages);
    let mut record_bytes = 0u32;
    let start = Instant::now();
    let mut i = 0;
    while i < w.messages {
        let n = per.min(w.messages - i);
        let drafts: Vec<RecordDraft<'_>> = (i..i + n)
            .map(|k| RecordDraft {
                topic: TOPIC,
                queue_id: 0,
                queue_offset: k as u64,
                body: bodies.get(k),
                ..Default::default()
            })
            .collect();
        let out = log.append_batch(&drafts).expect("append_batch");
        record_bytes = out.last().map_or(0, |a| a.size);
        i += n;
    }
    let total = start.elapsed();
    log.close().expect("close");
    drop(dir);
    // Every batch returned durable: there is no separate final flush.
    Sample { total, append_only: total, record_bytes: u64::from(record_bytes) }
}

fn run_variant(v: Variant, w: &Workload, bodies: &Bodies) -> Sample {
    settle();
    match v {
        Variant::RawFile => run_raw_file(w, bodies),
        Variant::RawMmap => run_raw_mmap(w, bodies),
        Variant::Mqstore => run_mqstore(w, bodies),
        Variant::MqstoreSyncBatch => run_mqstore_sync_batch(w, bodies),
    }
}

/// One run of the Sync group-commit workload.
struct SyncRun {
    /// From releasing the threads to the last acknowledgement.
    elapsed: Duration,
    /// Per-append latency of every append, in nanoseconds.
    latencies_ns: Vec<u64>,
}

fn run_sync_threads(threads: usize, per_thread: usize, bodies: &Bodies) -> SyncRun {
    settle();
    let dir = bench_dir("mqstore-sync16");
    let log =
        CommitLog::open(dir.path(), CommitLogOptions::default().flush_mode(FlushMode::Sync)).expect("open commit log");
    let barrier = Barrier::new(threads + 1);

    let (elapsed, latencies_ns) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let log = log.clone();
                let barrier = &barrier;
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(per_thread);
                    barrier.wait();
                    for j in 0..per_thread {
                        let t0 = Instant::now();
                        log.append(&RecordDraft {
                            topic: TOPIC,
                            queue_id: t as u32,
                            queue_offset: j as u64,
                            body: bodies.get(t * per_thread + j),
                            ..Default::default()
                        })
                        .expect("sync append");
                        lat.push(t0.elapsed().as_nanos() as u64);
                    }
                    lat
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut all = Vec::with_capacity(threads * per_thread);
        for h in handles {
            all.extend(h.join().expect("appender thread"));
        }
        (start.elapsed(), all)
    });

    log.close().expect("close");
    drop(log);
    drop(dir);
    SyncRun { elapsed, latencies_ns }
}

// ---------------------------------------------------------------------------
// Single-thread durability latency
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LatVariant {
    MqstoreSync,
    PwriteZeroed,
    PwriteFallocated,
}

const LAT_VARIANTS: [LatVariant; 3] = [LatVariant::MqstoreSync, LatVariant::PwriteZeroed, LatVariant::PwriteFallocated];

impl LatVariant {
    fn name(self) -> &'static str {
        match self {
            LatVariant::MqstoreSync => "mqstore Sync append (128 B)",
            LatVariant::PwriteZeroed => "pwrite 4 KiB + fdatasync (zero-filled file)",
            LatVariant::PwriteFallocated => "pwrite 4 KiB + fdatasync (fallocated file)",
        }
    }
}

/// Per-operation latencies in nanoseconds.
fn run_latency(v: LatVariant, n: usize, bodies: &Bodies) -> Vec<u64> {
    settle();
    let mut lat = Vec::with_capacity(n);
    match v {
        LatVariant::MqstoreSync => {
            let dir = bench_dir("mqstore-lat");
            let log = CommitLog::open(dir.path(), CommitLogOptions::default().flush_mode(FlushMode::Sync))
                .expect("open commit log");
            for i in 0..n {
                let t0 = Instant::now();
                log.append(&RecordDraft {
                    topic: TOPIC,
                    queue_id: 0,
                    queue_offset: i as u64,
                    body: bodies.get(i % bodies.count()),
                    ..Default::default()
                })
                .expect("sync append");
                lat.push(t0.elapsed().as_nanos() as u64);
            }
            log.close().expect("close");
        }
        LatVariant::PwriteZeroed | LatVariant::PwriteFallocated => {
            let dir = bench_dir("pwrite-lat");
            let file = OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(true)
                .open(dir.path().join("data"))
                .expect("create pwrite file");
            let len = (n * PAGE) as u64;
            if v == LatVariant::PwriteZeroed {
                // Real blocks, already written and synced: a later
                // fdatasync has data only, no metadata to commit.
                let zeros = vec![0u8; 1 << 20];
                let mut off = 0u64;
                while off < len {
                    let chunk = ((len - off) as usize).min(zeros.len());
                    file.write_all_at(&zeros[..chunk], off).expect("zero fill");
                    off += chunk as u64;
                }
            } else {
                // SAFETY: plain syscall on an fd we own.
                let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
                assert_eq!(r, 0, "fallocate: {}", std::io::Error::last_os_error());
            }
            file.sync_all().expect("fsync");
            let mut page = vec![0u8; PAGE];
            for (i, b) in page.iter_mut().enumerate() {
                *b = i as u8;
            }
            for i in 0..n {
                page[0] = i as u8;
                let t0 = Instant::now();
                file.write_all_at(&page, (i * PAGE) as u64).expect("pwrite");
                file.sync_data().expect("fdatasync");
                lat.push(t0.elapsed().as_nanos() as u64);
            }
        }
    }
    lat
}

// ---------------------------------------------------------------------------
// Statistics helpers
// ---------------------------------------------------------------------------

fn ns_per_msg(messages: usize, d: Duration) -> f64 {
    d.as_nanos() as f64 / messages as f64
}

fn print_latency_report(results: &[(LatVariant, Vec<u64>)], note: &str) {
    println!();
    println!("### single-thread durable-append latency ({note})");
    println!();
    println!("| operation | samples | p50 us | p99 us | p99.9 us | max us |");
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
    let bodies = Bodies::new(w.messages, w.body_size, 0x5eed_0001 ^ w.body_size as u64);
    println!();
    println!(
        "### {} (N = {}, body {} B, {}; {} rounds after 1 warm-up round)",
        w.name,
        w.messages,
        w.body_size,
        match w.sync_every {
            Some(k) => format!("sync point every {k} messages + final"),
            None => "one final flush".to_string(),
        },
        rounds
    );
    println!();
    // Warm-up round, not recorded.
    let vars = variants(w);
    for &v in &vars {
        let _ = run_variant(v, w, &bodies);
    }
    let mut samples: Vec<Vec<Option<Sample>>> = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let order = rotated(&vars, r);
        let mut row = vec![None; vars.len()];
        let mut line = format!("round {}:", r + 1);
        for v in order {
            let s = run_variant(v, w, &bodies);
            line.push_str(&format!(" {}={} msgs/s", v.name(), fmt_rate(rate(w.messages, s.total))));
            row[vars.iter().position(|x| *x == v).unwrap_or(0)] = Some(s);
        }
        println!("{line}");
        samples.push(row);
    }
    let get = |r: usize, vi: usize| samples[r][vi].expect("every variant ran");
    let mq = vars.iter().position(|v| *v == Variant::Mqstore).unwrap_or(2);
    println!();
    println!(
        "| variant | median msgs/s | min-max msgs/s | mqstore / variant (median of per-round ratios, min-max) | before-final-flush ns/msg (median) | final flush ms (median) | log bytes/msg |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (vi, v) in vars.iter().enumerate() {
        let rates: Vec<f64> = (0..rounds).map(|r| rate(w.messages, get(r, vi).total)).collect();
        let (lo, hi) = min_max(&rates);
        let ratios: Vec<f64> =
            (0..rounds).map(|r| get(r, vi).total.as_secs_f64() / get(r, mq).total.as_secs_f64()).collect();
        let (rlo, rhi) = min_max(&ratios);
        let ratio = if vi == mq { "-".to_string() } else { format!("{:.2}x ({:.2}-{:.2})", median(&ratios), rlo, rhi) };
        let append_only: Vec<f64> = (0..rounds).map(|r| ns_per_msg(w.messages, get(r, vi).append_only)).collect();
        let final_flush: Vec<f64> =
            (0..rounds).map(|r| (get(r, vi).total - get(r, vi).append_only).as_secs_f64() * 1e3).collect();
        println!(
            "| {} | {} | {}-{} | {} | {:.0} | {:.1} | {} |",
            v.name(),
            fmt_rate(median(&rates)),
            fmt_rate(lo),
            fmt_rate(hi),
            ratio,
            median(&append_only),
            median(&final_flush),
            get(0, vi).record_bytes,
        );
    }
    // The durable target compares the Sync-mode batch path with raw-mmap.
    if let (Some(sb), Some(rm)) =
        (vars.iter().position(|v| *v == Variant::MqstoreSyncBatch), vars.iter().position(|v| *v == Variant::RawMmap))
    {
        let ratios: Vec<f64> =
            (0..rounds).map(|r| get(r, rm).total.as_secs_f64() / get(r, sb).total.as_secs_f64()).collect();
        let (lo, hi) = min_max(&ratios);
        println!();
        println!("mqstore-sync-batch / raw-mmap: {:.2}x (per-round {lo:.2}-{hi:.2}; target >= 1.6x)", median(&ratios));
    }
    println!();
}

fn interleaved_sync(rounds: usize) {
    let total = SYNC_THREADS * SYNC_PER_THREAD;
    let bodies = Bodies::new(total, SYNC_BODY, 0x5eed_0016);
    println!();
    println!(
        "### sync_flush_16_threads (FlushMode::Sync, {SYNC_THREADS} threads x {SYNC_PER_THREAD} appends of {SYNC_BODY} B; {rounds} rounds after 1 warm-up round)"
    );
    println!();
    let _ = run_sync_threads(SYNC_THREADS, SYNC_PER_THREAD, &bodies);
    let mut rates = Vec::with_capacity(rounds);
    let mut all_lat = Vec::new();
    let mut line = String::from("rounds:");
    for _ in 0..rounds {
        let run = run_sync_threads(SYNC_THREADS, SYNC_PER_THREAD, &bodies);
        let r = rate(total, run.elapsed);
        line.push_str(&format!(" {}", fmt_rate(r)));
        rates.push(r);
        all_lat.extend(run.latencies_ns);
    }
    println!("{line} msgs/s");
    let (lo, hi) = min_max(&rates);
    println!();
    println!("| variant | median acknowledged msgs/s | min-max msgs/s | per-append p50 us | p99 us |");
    println!("|---|---|---|---|---|");
    println!(
        "| mqstore Sync x{SYNC_THREADS} threads | {} | {}-{} | {:.0} | {:.0} |",
        fmt_rate(median(&rates)),
        fmt_rate(lo),
        fmt_rate(hi),
        percentile_us(&all_lat, 0.5),
        percentile_us(&all_lat, 0.99),
    );
    println!();
}

fn interleaved_latency(rounds: usize) {
    let bodies = Bodies::new(LATENCY_APPENDS, SYNC_BODY, 0x5eed_1a7e);
    // Warm-up.
    for v in LAT_VARIANTS {
        let _ = run_latency(v, LATENCY_APPENDS, &bodies);
    }
    let mut pooled: Vec<(LatVariant, Vec<u64>)> = LAT_VARIANTS.iter().map(|v| (*v, Vec::new())).collect();
    let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); LAT_VARIANTS.len()];
    let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); LAT_VARIANTS.len()];
    for r in 0..rounds {
        for v in rotated(&LAT_VARIANTS, r) {
            let lat = run_latency(v, LATENCY_APPENDS, &bodies);
            let vi = LAT_VARIANTS.iter().position(|x| *x == v).unwrap_or(0);
            p50s[vi].push(percentile_us(&lat, 0.5));
            p99s[vi].push(percentile_us(&lat, 0.99));
            pooled[vi].1.extend(lat);
        }
    }
    print_latency_report(&pooled, &format!("{LATENCY_APPENDS} ops per round, {rounds} interleaved rounds pooled"));
    println!("| operation | per-round p50 us (min-max) | per-round p99 us (min-max) |");
    println!("|---|---|---|");
    for (vi, v) in LAT_VARIANTS.iter().enumerate() {
        let (a, b) = min_max(&p50s[vi]);
        let (c, d) = min_max(&p99s[vi]);
        println!("| {} | {a:.1}-{b:.1} | {c:.1}-{d:.1} |", v.name());
    }
    println!();
}

fn run_interleaved(rounds: usize) {
    println!("# mqstore append benchmark, interleaved ratio mode ({rounds} rounds)");
    println!();
    println!("Throughput = messages / (appends + sync points + final flush); setup and cleanup untimed.");
    println!(
        "Ratios are mqstore throughput / baseline throughput, computed per round then medianed (>1 = mqstore faster)."
    );
    for w in [scaled(W_128B_ASYNC), scaled(W_1KIB_ASYNC), scaled(W_128B_DURABLE)] {
        if selected(w.name) {
            interleaved_workload(&w, rounds);
        }
    }
    if selected("sync_flush_16_threads") {
        interleaved_sync(rounds);
    }
    if selected("sync_latency") {
        interleaved_latency(rounds);
    }
}

// ---------------------------------------------------------------------------
// Criterion mode
// ---------------------------------------------------------------------------

fn bench_workload(c: &mut Criterion, w: &Workload, report_target: bool) {
    let bodies = Bodies::new(w.messages, w.body_size, 0x5eed_0001 ^ w.body_size as u64);
    let mut group = c.benchmark_group(w.name);
    configure(&mut group);
    group.throughput(Throughput::Elements(w.messages as u64));
    let collected: RefCell<Vec<(Variant, Sample)>> = RefCell::new(Vec::new());
    for v in variants(w) {
        group.bench_function(v.name(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let s = run_variant(v, w, &bodies);
                    total += s.total;
                    collected.borrow_mut().push((v, s));
                }
                total
            });
        });
    }
    group.finish();
    let collected = collected.borrow();
    if !collected.is_empty() {
        println!();
        println!(
            "{}: time per message before the final flush (sync points included), over every criterion iteration:",
            w.name
        );
        for v in variants(w) {
            let ns: Vec<f64> =
                collected.iter().filter(|(x, _)| *x == v).map(|(_, s)| ns_per_msg(w.messages, s.append_only)).collect();
            if ns.is_empty() {
                continue;
            }
            let flush_ms: Vec<f64> = collected
                .iter()
                .filter(|(x, _)| *x == v)
                .map(|(_, s)| (s.total - s.append_only).as_secs_f64() * 1e3)
                .collect();
            let (lo, hi) = min_max(&ns);
            let target = if report_target && v == Variant::Mqstore { " (target <= 250 ns)" } else { "" };
            println!(
                "  {:<9} median {:.0} ns/msg, min-max {:.0}-{:.0} ns/msg{}; final flush median {:.1} ms; {} iterations",
                v.name(),
                median(&ns),
                lo,
                hi,
                target,
                median(&flush_ms),
                ns.len(),
            );
        }
        println!();
    }
}

fn bench_sync(c: &mut Criterion) {
    let total = SYNC_THREADS * SYNC_PER_THREAD;
    let bodies = Bodies::new(total, SYNC_BODY, 0x5eed_0016);
    let mut group = c.benchmark_group("sync_flush_16_threads");
    configure(&mut group);
    group.throughput(Throughput::Elements(total as u64));
    let rates: RefCell<Vec<f64>> = RefCell::new(Vec::new());
    group.bench_function("mqstore", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let run = run_sync_threads(SYNC_THREADS, SYNC_PER_THREAD, &bodies);
                elapsed += run.elapsed;
                rates.borrow_mut().push(rate(total, run.elapsed));
            }
            elapsed
        });
    });
    group.finish();
    let rates = rates.borrow();
    if rates.is_empty() {
        // Filtered out by the command line.
        return;
    }
    let (lo, hi) = min_max(&rates);
    println!();
    println!(
        "sync_flush_16_threads: acknowledged msgs/s median {} (min-max {}-{}) over {} iterations (target >= 50,000)",
        fmt_rate(median(&rates)),
        fmt_rate(lo),
        fmt_rate(hi),
        rates.len()
    );

    let lat_bodies = Bodies::new(LATENCY_APPENDS, SYNC_BODY, 0x5eed_1a7e);
    let results: Vec<(LatVariant, Vec<u64>)> =
        LAT_VARIANTS.iter().map(|v| (*v, run_latency(*v, LATENCY_APPENDS, &lat_bodies))).collect();
    print_latency_report(&results, &format!("{LATENCY_APPENDS} ops each, one run, run sequentially"));
}

fn main() {
    if let Some(rounds) = interleaved_rounds() {
        run_interleaved(rounds);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_workload(&mut c, &scaled(W_128B_ASYNC), true);
    bench_workload(&mut c, &scaled(W_1KIB_ASYNC), false);
    bench_workload(&mut c, &scaled(W_128B_DURABLE), false);
    bench_sync(&mut c);
    c.final_summary();
}
