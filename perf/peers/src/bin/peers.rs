//! mqstore against `raw-file`, `raw-mmap` and raft-engine 0.4.2 in one
//! interleaved run.
//!
//! Workloads (one producer thread, one topic/queue, incompressible bodies):
//!
//! * fast: 128 B x 2 M and 1 KiB x 500 k, one final flush inside the time;
//! * durable: 128 B x 500 k with a sync point every 1,000 messages;
//! * sweep: 64 B to 16 KiB at a fixed payload volume (256 MB), fast mode;
//!   written to a CSV for the `plot` binary.
//!
//! Each workload: one warm-up round (discarded), then N rounds, each
//! running every variant once with the starting variant rotated; `sync()`
//! before every run, a fresh directory under /work/bench-tmp per run
//! (removed afterwards); every run reads all messages back and verifies
//! the count. Medians, min-max, and ratios computed per round then
//! medianed. See the README of this directory for the variants.
//!
//! Knobs (environment): `MQSTORE_PEERS_ROUNDS` (5), `MQSTORE_PEERS_SCALE`
//! (1.0; multiplies the fast and durable message counts),
//! `MQSTORE_PEERS_SWEEP_MB` (256), `MQSTORE_PEERS_ONLY` (substrings of
//! workload names: `128B x`, `1KiB`, `durable`, `sweep`),
//! `MQSTORE_PEERS_SWEEP_SEND` (1 adds per-message `send` to the sweep),
//! `MQSTORE_PEERS_CSV` (throughput.csv), `MQSTORE_PEERS_VARIANTS` (variant
//! names to run, e.g. `mqstore` alone for a profile).

use mqstore_peers::csv::{Point, Sweep};
use mqstore_peers::env::{self, Knobs};
use mqstore_peers::report;
use mqstore_peers::run::{interleaved, Runs};
use mqstore_peers::workload::{Variant, Workload};
use std::time::Instant;

const SWEEP_SIZES: [usize; 7] = [64, 128, 256, 512, 1024, 4096, 16384];

fn size_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

fn count_label(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn workload(messages: usize, body_size: usize, sync_every: Option<usize>, suffix: &str) -> Workload {
    Workload {
        name: format!("{} x{}{suffix}", size_label(body_size), count_label(messages)),
        messages,
        body_size,
        sync_every,
    }
}

fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale).round() as usize).max(1_000)
}

fn print_table(runs: &[Runs]) {
    println!("{}", report::header());
    for r in runs {
        for s in r.summaries() {
            println!("{}", report::row(&r.workload, &s));
        }
    }
    println!();
}

fn main() {
    let knobs = Knobs::from_env();
    let started = Instant::now();
    let machine = env::machine();
    let date = env::today();
    let load_start = env::load_average();
    println!("# mqstore vs raw baselines vs raft-engine 0.4.2 ({date})");
    println!();
    println!("Machine: {machine}. Load average (1 min) at start: {load_start}.");
    println!(
        "Rounds: {} timed after 1 warm-up, interleaved, starting variant rotated. Scale {}, sweep {} MB per run.",
        knobs.rounds,
        knobs.scale,
        knobs.sweep_bytes / 1_000_000
    );
    println!();

    let fast_vars = [
        Variant::RawFile,
        Variant::RawMmap,
        Variant::Mqstore,
        Variant::MqstoreSend,
        Variant::MqstoreLog,
        Variant::RaftEngine,
    ];
    let durable_vars = [
        Variant::RawFile,
        Variant::RawMmap,
        Variant::Mqstore,
        Variant::MqstoreSend,
        Variant::MqstoreSyncBatch,
        Variant::MqstoreLog,
        Variant::MqstoreLogSyncBatch,
        Variant::RaftEngine,
    ];
    let main_workloads = [
        (workload(scaled(2_000_000, knobs.scale), 128, None, ""), &fast_vars[..]),
        (workload(scaled(500_000, knobs.scale), 1024, None, ""), &fast_vars[..]),
        (workload(scaled(500_000, knobs.scale), 128, Some(1_000), " durable"), &durable_vars[..]),
    ];
    let pick =
        |vars: &[Variant]| -> Vec<Variant> { vars.iter().copied().filter(|v| knobs.runs_variant(v.name())).collect() };
    let mut runs = Vec::new();
    for (w, vars) in main_workloads {
        let vars = pick(vars);
        if knobs.selected(&w.name) && !vars.is_empty() {
            runs.push(interleaved(w, &vars, knobs.rounds));
        }
    }
    if !runs.is_empty() {
        println!("## Fast and durable workloads");
        println!();
        print_table(&runs);
        println!("{}", report::notes());
        println!();
    }

    let mut sweep_vars =
        vec![Variant::RawFile, Variant::RawMmap, Variant::Mqstore, Variant::MqstoreLog, Variant::RaftEngine];
    if knobs.sweep_send {
        sweep_vars.insert(3, Variant::MqstoreSend);
    }
    let sweep_vars = pick(&sweep_vars);
    let mut sweep_runs = Vec::new();
    for size in SWEEP_SIZES {
        let w = workload(knobs.sweep_bytes / size, size, None, " sweep");
        if knobs.selected(&w.name) && !sweep_vars.is_empty() {
            sweep_runs.push(interleaved(w, &sweep_vars, knobs.rounds));
        }
    }
    let load_end = env::load_average();
    if !sweep_runs.is_empty() {
        println!("## Size sweep ({} MB of payload per run, fast mode)", knobs.sweep_bytes / 1_000_000);
        println!();
        print_table(&sweep_runs);
        let mut sweep = Sweep::default();
        sweep.meta.insert("machine".into(), machine.clone());
        sweep.meta.insert("date".into(), date.clone());
        sweep.meta.insert("rounds".into(), knobs.rounds.to_string());
        sweep.meta.insert("volume_mb".into(), (knobs.sweep_bytes / 1_000_000).to_string());
        sweep.meta.insert("load".into(), format!("{load_start} at start, {load_end} at end"));
        for r in &sweep_runs {
            for s in r.summaries() {
                sweep.points.push(Point {
                    body_bytes: r.workload.body_size,
                    variant: s.variant.name().to_string(),
                    messages: r.workload.messages,
                    rounds: knobs.rounds,
                    msgs_s: [s.rate.median, s.rate.min, s.rate.max],
                    mb_s: [s.mb_s.median, s.mb_s.min, s.mb_s.max],
                    x_raw_mmap: s.x_raw_mmap.map_or(f64::NAN, |x| x.median),
                    x_raft_engine: s.x_raft_engine.map_or(f64::NAN, |x| x.median),
                    read_msgs_s: s.read.median,
                    ok: s.ok,
                });
            }
        }
        std::fs::write(&knobs.csv, sweep.to_csv()).expect("write the sweep CSV");
        println!("Sweep CSV: {}", knobs.csv);
        println!();
    }
    println!("Load average (1 min) at end: {load_end}. Whole run: {:.0} s.", started.elapsed().as_secs_f64());
}
