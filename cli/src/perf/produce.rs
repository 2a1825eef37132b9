//! `mqstore perf produce`: send generated messages from N threads, timing
//! every send.

use super::latency::{Latency, Summary};
use super::progress::{self, Counter};
use super::{duration, emit, join_workers, mb_per_s, spawn_workers, topic_names, validate_common};
use crate::produce::Flush;
use crate::report::{fail, store_error, Status};
use bytes::Bytes;
use mqstore::message::{Message, MessageLimits, TopicName, DEFAULT_MAX_BODY};
use mqstore::store::{SendResult, SendStatus, Store, StoreOptions};
use mqstore::topic::{TopicConfig, MAX_QUEUES};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Most messages per `--batch`.
const MAX_BATCH: usize = 4096;
/// Distinct bodies a thread cycles through, at most.
const POOL_BODIES: usize = 16;
/// Memory all threads' body pools may take together (a pool has at least
/// one body however large).
const POOL_BYTES: usize = 16 << 20;

#[derive(Debug, clap::Args)]
#[command(
    about = "Send generated messages from N threads and report throughput and per-send latency",
    long_about = "Send generated messages from --threads threads and report throughput and \
        latency (after Kafka's kafka-producer-perf-test and RocketMQ's benchmark Producer).\n\n\
        Opens the store in DIR (creating it if needed) with the given --flush mode and takes \
        its lock. Creates the topics that do not exist yet with --queues queues (existing \
        ones are left as they are): with --topics 1 the topic is --topic itself, with more \
        they are TOPIC-0 .. TOPIC-(N-1). Each thread sends round-robin over the topics (the \
        store rotates over each topic's queues); every message carries a random, \
        incompressible body of --size bytes taken from a small pool generated before the \
        run. The run ends after --count messages in total or after --duration.\n\n\
        Every send (with --batch N: every send_batch of N messages) is timed on its own and \
        recorded in an HDR histogram (nanosecond resolution, 3 significant digits, one per \
        thread, merged at the end); latency is reported in microseconds. At the end the \
        store is closed, which flushes everything written: that final flush is part of the \
        elapsed time, so msgs/s and MB/s cover the data reaching the disk, not only the \
        sends returning (`send_s` and `close_s` in --json split the two). MB/s counts \
        message bodies only, in 10^6 bytes.\n\n\
        Errors: a transient error (a flush timeout, disk full) is counted and the run goes \
        on, as Kafka's tool does; any other error (store fenced after a failed sync, \
        closed, an I/O error) ends the run and is printed.",
    after_help = "Exit status: 0 every message acknowledged, 1 error (bad arguments, store \
        locked by another writer, an error that ended the run, or any send counted as an \
        error or a flush timeout; the report is still printed), 2 corruption found while \
        opening the store.\n\n\
        --json prints one object: {\"verb\":\"perf produce\", \"params\":{dir, topic, \
        topics, queues, size, count, duration_s, threads, flush, batch, rate}, \"messages\", \
        \"bytes\", \"errors\", \"flush_timeouts\", \"elapsed_s\", \"send_s\", \"close_s\", \
        \"msgs_per_s\", \"mb_per_s\", \"latency_us\":{per, samples, p50, p99, p999, max, \
        mean}}; messages and bytes count acknowledged (SendOk) messages; count and \
        duration_s are null when not given."
)]
#[command(group(clap::ArgGroup::new("amount").required(true).args(["count", "duration"])))]
pub struct PerfProduceArgs {
    /// Store directory (created if missing)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Topic name, or the prefix of the names with --topics > 1
    #[arg(long, value_name = "T", default_value = "perf")]
    pub topic: String,
    /// Number of topics to spread the messages over (1-1024)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub topics: u32,
    /// Queues of each topic created by the run (1-1024)
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub queues: u32,
    /// Body size in bytes (1 to 4 MiB)
    #[arg(long, value_name = "BYTES", default_value_t = 128)]
    pub size: usize,
    /// Messages to send in total (split evenly over the threads)
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Send for this long instead of a count: 10s, 1.5s, 500ms, 2m
    #[arg(long, value_name = "TIME", value_parser = duration::parse)]
    pub duration: Option<Duration>,
    /// Producer threads (1-1024)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// Flush mode: sync (each send returns once durable, by group commit) or async
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Flush::Async)]
    pub flush: Flush,
    /// Send N messages per call with send_batch (1 = one send per message, 1-4096)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub batch: usize,
    /// Cap the total send rate at N messages/s (spread over the threads)
    #[arg(long, value_name = "N")]
    pub rate: Option<u64>,
    /// Print one JSON object with every figure and the parameters
    #[arg(long)]
    pub json: bool,
}

/// Every check that needs no store, so bad input changes nothing.
fn validate(a: &PerfProduceArgs) -> Result<(), String> {
    validate_common(&a.topic, a.topics, a.threads)?;
    if !(1..=MAX_QUEUES).contains(&a.queues) {
        return Err(format!("--queues {} is outside 1..={MAX_QUEUES}", a.queues));
    }
    if a.size == 0 || a.size > DEFAULT_MAX_BODY {
        return Err(format!("--size {} is outside 1..={DEFAULT_MAX_BODY} bytes", a.size));
    }
    if !(1..=MAX_BATCH).contains(&a.batch) {
        return Err(format!("--batch {} is outside 1..={MAX_BATCH}", a.batch));
    }
    if a.count == Some(0) {
        return Err("--count must be at least 1".into());
    }
    if a.rate == Some(0) {
        return Err("--rate must be at least 1 message/s".into());
    }
    let sample = Message::new(a.topic.clone(), vec![0u8; a.size]);
    sample.check(&MessageLimits::default()).map_err(|e| e.to_string())
}

/// What every worker shares.
struct Plan<'a> {
    store: &'a Store,
    args: &'a PerfProduceArgs,
    /// Shared names: building a message copies no topic.
    topics: Vec<TopicName>,
    /// Set by the first worker hitting a fatal error: the others stop.
    abort: AtomicBool,
    deadline: Option<Instant>,
    counters: Vec<Counter>,
}

/// One worker's result.
struct Outcome {
    latency: Latency,
    messages: u64,
    errors: u64,
    flush_timeouts: u64,
    fatal: Option<mqstore::Error>,
}

pub fn run(args: &PerfProduceArgs) -> Status {
    if let Err(msg) = validate(args) {
        return fail(msg);
    }
    let store = match Store::open(&args.dir, StoreOptions::default().flush_mode(args.flush.into())) {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    let topics = topic_names(&args.topic, args.topics);
    for t in &topics {
        if store.topic(t).is_none() {
            if let Err(e) = store.create_topic(TopicConfig::new(t.clone(), args.queues)) {
                let _ = store.close();
                return store_error(&e);
            }
        }
    }
    let started = Instant::now();
    let plan = Plan {
        store: &store,
        args,
        topics: topics.iter().map(TopicName::from).collect(),
        abort: AtomicBool::new(false),
        deadline: args.duration.map(|d| started + d),
        counters: (0..args.threads).map(|_| Counter::default()).collect(),
    };
    let outcomes = run_workers(&plan, started);
    let send_s = started.elapsed().as_secs_f64();
    // The final flush is part of the measurement (see --help).
    let closed = store.close();
    let elapsed_s = started.elapsed().as_secs_f64();
    let outcomes = match outcomes {
        Ok(o) => o,
        Err(msg) => return fail(msg),
    };
    if let Some(e) = outcomes.iter().find_map(|o| o.fatal.as_ref()) {
        return store_error(e);
    }
    if let Err(e) = closed {
        return store_error(&e);
    }
    report(args, &outcomes, send_s, elapsed_s)
}

fn run_workers(plan: &Plan<'_>, started: Instant) -> Result<Vec<Outcome>, String> {
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let work = |t| worker(plan, t);
    std::thread::scope(|s| {
        let handles = spawn_workers(s, "produce", plan.args.threads, done, &work);
        let handles = handles.inspect_err(|_| plan.abort.store(true, Ordering::Relaxed))?;
        progress::watch("produce", &plan.counters, &watch, started);
        join_workers(handles)?.into_iter().collect()
    })
}

/// The bodies thread `t` cycles through: random (splitmix64, seeded per
/// thread and body), so they do not compress; generated before the clock
/// starts and shared by reference count, so a send copies no body.
fn body_pool(t: usize, size: usize, threads: usize) -> Vec<Bytes> {
    let n = (POOL_BYTES / size.saturating_mul(threads).max(1)).clamp(1, POOL_BODIES);
    (0..n).map(|j| Bytes::from(crate::produce::body((t * POOL_BODIES + j) as u64, size))).collect()
}

/// Messages thread `t` sends under `--count` (the remainder goes to the
/// first threads).
fn quota(count: u64, threads: usize, t: usize) -> u64 {
    let n = threads as u64;
    count / n + u64::from((t as u64) < count % n)
}

/// Acknowledged and flush-timed-out messages among `results`.
fn tally(results: &[SendResult]) -> (u64, u64) {
    let ok = results.iter().filter(|r| r.status == SendStatus::SendOk).count() as u64;
    (ok, results.len() as u64 - ok)
}

fn worker(plan: &Plan<'_>, t: usize) -> Result<Outcome, String> {
    let args = plan.args;
    let pool = body_pool(t, args.size, args.threads);
    let limit = args.count.map(|c| quota(c, args.threads, t));
    let per_thread_rate = args.rate.map(|r| r as f64 / args.threads as f64);
    let mut out = Outcome { latency: Latency::new()?, messages: 0, errors: 0, flush_timeouts: 0, fatal: None };
    let (mut sent, mut k) = (0u64, 0usize);
    let thread_start = Instant::now();
    while !plan.abort.load(Ordering::Relaxed) {
        let n = limit.map_or(args.batch as u64, |l| (l - sent).min(args.batch as u64)) as usize;
        if n == 0 {
            break;
        }
        // Thread t starts at topic t, so threads spread over the topics.
        let topic = &plan.topics[(t + k) % plan.topics.len()];
        let result = if args.batch == 1 {
            let msg = Message::new(topic, pool[k % pool.len()].clone());
            let t0 = Instant::now();
            let r = plan.store.send(msg);
            let t1 = Instant::now();
            r.map(|r| (t1, t1 - t0, tally(std::slice::from_ref(&r))))
        } else {
            // send_batch takes the Vec by value: one allocation per batch.
            let msgs: Vec<Message> = (0..n).map(|j| Message::new(topic, pool[(k + j) % pool.len()].clone())).collect();
            let t0 = Instant::now();
            let r = plan.store.send_batch(msgs);
            let t1 = Instant::now();
            r.map(|r| (t1, t1 - t0, tally(&r)))
        };
        let now = match result {
            Ok((t1, took, (ok, timeouts))) => {
                out.latency.record(took);
                out.messages += ok;
                out.flush_timeouts += timeouts;
                t1
            }
            Err(e) if e.is_transient() => {
                out.errors += n as u64;
                Instant::now()
            }
            Err(e) => {
                plan.abort.store(true, Ordering::Relaxed);
                out.fatal = Some(e);
                break;
            }
        };
        sent += n as u64;
        k += 1;
        plan.counters[t].publish(out.messages, out.messages * args.size as u64, out.errors);
        if plan.deadline.is_some_and(|d| now >= d) {
            break;
        }
        if let Some(rate) = per_thread_rate {
            throttle(sent, rate, thread_start, now, plan.deadline);
        }
    }
    Ok(out)
}

/// Sleeps while this thread is ahead of `rate` messages/s (Kafka's
/// ThroughputThrottler idea), never past the deadline. Latency is the
/// send's own time: the sleep is outside it.
fn throttle(sent: u64, rate: f64, start: Instant, now: Instant, deadline: Option<Instant>) {
    let due = start + Duration::from_secs_f64(sent as f64 / rate);
    let until = deadline.map_or(due, |d| due.min(d));
    if until > now {
        std::thread::sleep(until - now);
    }
}

fn report(args: &PerfProduceArgs, outcomes: &[Outcome], send_s: f64, elapsed_s: f64) -> Status {
    let mut latency = match Latency::new() {
        Ok(l) => l,
        Err(msg) => return fail(msg),
    };
    for o in outcomes {
        if let Err(msg) = latency.merge(&o.latency) {
            return fail(msg);
        }
    }
    let lat: Summary = latency.summary();
    let messages: u64 = outcomes.iter().map(|o| o.messages).sum();
    let errors: u64 = outcomes.iter().map(|o| o.errors).sum();
    let flush_timeouts: u64 = outcomes.iter().map(|o| o.flush_timeouts).sum();
    let bytes = messages * args.size as u64;
    let rate = messages as f64 / elapsed_s.max(1e-9);
    let mb = mb_per_s(bytes, elapsed_s);
    let per = if args.batch == 1 { "send" } else { "batch" };
    let flush = match args.flush {
        Flush::Sync => "sync",
        Flush::Async => "async",
    };
    let mut lat_json = lat.json();
    lat_json["per"] = per.into();
    let json = serde_json::json!({
        "verb": "perf produce",
        "params": {
            "dir": args.dir.display().to_string(),
            "topic": args.topic,
            "topics": args.topics,
            "queues": args.queues,
            "size": args.size,
            "count": args.count,
            "duration_s": args.duration.map(|d| d.as_secs_f64()),
            "threads": args.threads,
            "flush": flush,
            "batch": args.batch,
            "rate": args.rate,
        },
        "messages": messages,
        "bytes": bytes,
        "errors": errors,
        "flush_timeouts": flush_timeouts,
        "elapsed_s": elapsed_s,
        "send_s": send_s,
        "close_s": elapsed_s - send_s,
        "msgs_per_s": rate,
        "mb_per_s": mb,
        "latency_us": lat_json,
    });
    let text = format!(
        "perf produce: {messages} msgs of {} B in {elapsed_s:.3} s: {rate:.0} msgs/s, {mb:.1} MB/s \
         ({} thread{}, {flush} flush, {} topic{} x {} queues, batch {})\n  \
         sends {send_s:.3} s + final flush and close {:.3} s; {errors} errors, {flush_timeouts} flush timeouts\n  \
         latency per {per} (us): {}",
        args.size,
        args.threads,
        if args.threads == 1 { "" } else { "s" },
        args.topics,
        if args.topics == 1 { "" } else { "s" },
        args.queues,
        args.batch,
        elapsed_s - send_s,
        lat.text()
    );
    let status = if errors == 0 && flush_timeouts == 0 { Status::Ok } else { Status::Error };
    emit(args.json, &json, &text, status)
}
