//! `mqstore perf produce` and `mqstore perf consume`: load generators with
//! latency histograms, after Kafka's `kafka-producer-perf-test` /
//! `kafka-consumer-perf-test` and RocketMQ's benchmark `Producer` /
//! `Consumer`.

mod consume;
mod duration;
mod latency;
mod produce;
mod progress;

use crate::report::{print_line, Status};
use mqstore::topic::validate_user_topic;
use std::sync::mpsc::Sender;
use std::thread::{Scope, ScopedJoinHandle};

#[derive(Debug, clap::Args)]
#[command(
    about = "Measure produce and consume throughput and latency (load generator)",
    long_about = "Measure the store's throughput and latency, as Kafka's producer and \
        consumer perf tests and RocketMQ's benchmark tools do: `perf produce` sends \
        generated messages from several threads and `perf consume` reads them back. Both \
        print messages/s, MB/s (10^6 bytes of message bodies) and latency percentiles \
        from an HDR histogram, or one JSON object with --json. While running, a progress \
        line is rewritten once a second on stderr, only when stderr is a terminal.",
    after_help = "Exit status: 0 success, 1 error (bad arguments, store locked by another \
        writer, an error that ended the run, or any message not acknowledged), 2 \
        corruption found."
)]
pub struct PerfArgs {
    #[command(subcommand)]
    pub command: PerfCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PerfCommand {
    Produce(produce::PerfProduceArgs),
    Consume(consume::PerfConsumeArgs),
}

pub fn run(args: &PerfArgs) -> Status {
    match &args.command {
        PerfCommand::Produce(a) => produce::run(a),
        PerfCommand::Consume(a) => consume::run(a),
    }
}

/// Most topics a run spreads over.
const MAX_TOPICS: u32 = 1024;
/// Most worker threads.
const MAX_THREADS: usize = 1024;

/// The topics a run uses: `prefix` itself for one topic, else
/// `prefix-0` .. `prefix-(n-1)`.
fn topic_names(prefix: &str, n: u32) -> Vec<String> {
    if n == 1 {
        vec![prefix.to_owned()]
    } else {
        (0..n).map(|i| format!("{prefix}-{i}")).collect()
    }
}

/// Checks `--topic`, `--topics` and `--threads` before anything is opened.
fn validate_common(prefix: &str, topics: u32, threads: usize) -> Result<(), String> {
    if !(1..=MAX_TOPICS).contains(&topics) {
        return Err(format!("--topics {topics} is outside 1..={MAX_TOPICS}"));
    }
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(format!("--threads {threads} is outside 1..={MAX_THREADS}"));
    }
    // The last name is the longest.
    let last = topic_names(prefix, topics).pop().unwrap_or_default();
    validate_user_topic(&last).map_err(|e| format!("--topic: {e}"))
}

/// Starts `n` named worker threads in `scope`, each running `work(t)`
/// and holding a clone of `done` until it ends (so the receiver sees a
/// disconnect once all have ended). A thread that cannot be created is an
/// error, not a panic.
fn spawn_workers<'scope, 'env, T: Send + 'scope, W: Fn(usize) -> T + Sync + 'scope>(
    scope: &'scope Scope<'scope, 'env>,
    role: &str,
    n: usize,
    done: Sender<()>,
    work: &'scope W,
) -> Result<Vec<ScopedJoinHandle<'scope, T>>, String> {
    (0..n)
        .map(|t| {
            let alive = done.clone();
            std::thread::Builder::new()
                .name(format!("mqstore:perf-{role}-{t}"))
                .spawn_scoped(scope, move || {
                    let _alive = alive;
                    work(t)
                })
                .map_err(|e| format!("starting worker thread {t}: {e}"))
        })
        .collect()
}

/// Joins the workers, turning a panic into an error message.
fn join_workers<T>(handles: Vec<ScopedJoinHandle<'_, T>>) -> Result<Vec<T>, String> {
    handles.into_iter().enumerate().map(|(t, h)| h.join().map_err(|_| format!("worker thread {t} panicked"))).collect()
}

/// MB/s of `bytes` over `seconds` (10^6 bytes, as the peers' tables).
fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds.max(1e-9)
}

/// Prints the report (JSON or text) on stdout, then returns `status`.
fn emit(json: bool, value: &serde_json::Value, text: &str, status: Status) -> Status {
    if json {
        print_line(&value.to_string(), status)
    } else {
        print_line(text, status)
    }
}
