//! `mqstore perf consume`: read the topics' queues back with N threads,
//! timing every pull.

use super::latency::Latency;
use super::progress::{self, Counter};
use super::{duration, emit, join_workers, mb_per_s, spawn_workers, topic_names, validate_common};
use crate::print::find_topic;
use crate::report::{fail, store_error, Status};
use mqstore::store::{PullStatus, ReadChecksums, Store, StoreOptions, StoreView, TagFilter};
use mqstore::topic::validate_group_name;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Most messages per pull (the store examines at most 4096 units per pull).
const MAX_BATCH: usize = 4096;

#[derive(Debug, clap::Args)]
#[command(
    about = "Read topics back with N threads and report throughput and per-pull latency",
    long_about = "Read the messages of the topics back with --threads threads and report \
        throughput and latency (after Kafka's kafka-consumer-perf-test and RocketMQ's \
        benchmark Consumer).\n\n\
        Opens the store in DIR as an application would and takes its lock; the directory \
        and the topics must exist (named as `perf produce` names them: --topic itself with \
        --topics 1, else TOPIC-0 .. TOPIC-(N-1)). The read queues of all topics are dealt \
        out to the threads (at most one thread per queue); each thread pulls its queues one \
        after another, --batch messages per pull, through the zero-copy pull path (bodies \
        are borrowed from the mapped log and their CRC is checked unless --checksums skip, \
        nothing is copied). \
        Without --group every queue is read from its first offset; with --group G from G's \
        committed offsets, committing after every pull and writing the offsets to disk at \
        the end, so a second run continues where this one stopped. The run ends at the end \
        of every queue, after --count messages or after --duration, whichever comes first.\n\n\
        Every pull that returned messages is timed and recorded in an HDR histogram \
        (nanoseconds, 3 significant digits, one per thread, merged at the end); latency is \
        reported in microseconds per pull. The elapsed time runs from the first pull to the \
        last (opening and closing the store are not part of it). MB/s counts message \
        bodies only, in 10^6 bytes. Any error from the store ends the run.",
    after_help = "Exit status: 0 success, 1 error (bad arguments, no store in DIR, unknown \
        topic, store locked by another writer, an error that ended the run), 2 corruption \
        found.\n\n\
        --json prints one object: {\"verb\":\"perf consume\", \"params\":{dir, topic, \
        topics, threads, batch, checksums, group, count, duration_s}, \"queues\", \"threads_used\", \
        \"messages\", \"bytes\", \"pulls\", \"elapsed_s\", \"msgs_per_s\", \"mb_per_s\", \
        \"latency_us\":{per, samples, p50, p99, p999, max, mean}}; group, count and \
        duration_s are null when not given."
)]
pub struct PerfConsumeArgs {
    /// Store directory
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Topic name, or the prefix of the names with --topics > 1
    #[arg(long, value_name = "T", default_value = "perf")]
    pub topic: String,
    /// Number of topics (as given to perf produce, 1-1024)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub topics: u32,
    /// Consumer threads (1-1024; at most one per queue is used)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// Messages per pull (1-4096; RocketMQ's default pull batch is 32)
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub batch: usize,
    /// Whether each record's CRC is checked before it is handed out (skip:
    /// framing and position only, as RocketMQ's broker reads)
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Checksums::Verify)]
    pub checksums: Checksums,
    /// Consume as this group: start at its committed offsets and commit
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// Stop after N messages in total
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this long: 10s, 1.5s, 500ms, 2m
    #[arg(long, value_name = "TIME", value_parser = duration::parse)]
    pub duration: Option<Duration>,
    /// Print one JSON object with every figure and the parameters
    #[arg(long)]
    pub json: bool,
}

/// `--checksums`: [`ReadChecksums`] on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Checksums {
    /// Check every record's CRC (the store's default).
    Verify,
    /// Check framing and position only.
    Skip,
}

impl Checksums {
    fn name(self) -> &'static str {
        match self {
            Checksums::Verify => "verify",
            Checksums::Skip => "skip",
        }
    }
}

impl From<Checksums> for ReadChecksums {
    fn from(c: Checksums) -> Self {
        match c {
            Checksums::Verify => ReadChecksums::Verify,
            Checksums::Skip => ReadChecksums::Skip,
        }
    }
}

fn validate(a: &PerfConsumeArgs) -> Result<(), String> {
    validate_common(&a.topic, a.topics, a.threads)?;
    if !(1..=MAX_BATCH).contains(&a.batch) {
        return Err(format!("--batch {} is outside 1..={MAX_BATCH}", a.batch));
    }
    if a.count == Some(0) {
        return Err("--count must be at least 1".into());
    }
    if let Some(g) = &a.group {
        validate_group_name(g).map_err(|e| format!("--group: {e}"))?;
    }
    Ok(())
}

/// What every worker shares.
struct Plan<'a> {
    store: &'a Store,
    args: &'a PerfConsumeArgs,
    /// (topic, queue) of every read queue, dealt out round-robin.
    queues: Vec<(String, u32)>,
    threads: usize,
    /// Messages still to read under --count (claimed per pull).
    budget: Option<AtomicU64>,
    abort: AtomicBool,
    deadline: Option<Instant>,
    counters: Vec<Counter>,
}

/// One worker's result.
struct Outcome {
    latency: Latency,
    messages: u64,
    bytes: u64,
    pulls: u64,
    fatal: Option<mqstore::Error>,
}

pub fn run(args: &PerfConsumeArgs) -> Status {
    if let Err(msg) = validate(args) {
        return fail(msg);
    }
    let names = topic_names(&args.topic, args.topics);
    // Check without the lock first, so a wrong directory or topic creates nothing.
    let view = match StoreView::open(&args.dir) {
        Ok(v) => v,
        Err(e) => return store_error(&e),
    };
    for name in &names {
        if let Err(status) = find_topic(&view, name, None) {
            return status;
        }
    }
    let store = match Store::open(&args.dir, StoreOptions::default().read_checksums(args.checksums.into())) {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    let mut queues = Vec::new();
    for name in names {
        let read = store.topic(&name).map_or(0, |c| c.read_queues);
        queues.extend((0..read).map(|q| (name.clone(), q)));
    }
    let threads = args.threads.min(queues.len()).max(1);
    let started = Instant::now();
    let plan = Plan {
        store: &store,
        args,
        queues,
        threads,
        budget: args.count.map(AtomicU64::new),
        abort: AtomicBool::new(false),
        deadline: args.duration.map(|d| started + d),
        counters: (0..threads).map(|_| Counter::default()).collect(),
    };
    let outcomes = run_workers(&plan, started);
    let elapsed_s = started.elapsed().as_secs_f64();
    let persisted = if args.group.is_some() { store.persist_offsets() } else { Ok(()) };
    let closed = store.close();
    let outcomes = match outcomes {
        Ok(o) => o,
        Err(msg) => return fail(msg),
    };
    if let Some(e) = outcomes.iter().find_map(|o| o.fatal.as_ref()) {
        return store_error(e);
    }
    if let Err(e) = persisted.and(closed) {
        return store_error(&e);
    }
    report(&plan, &outcomes, elapsed_s)
}

fn run_workers(plan: &Plan<'_>, started: Instant) -> Result<Vec<Outcome>, String> {
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let work = |t| worker(plan, t);
    std::thread::scope(|s| {
        let handles = spawn_workers(s, "consume", plan.threads, done, &work);
        let handles = handles.inspect_err(|_| plan.abort.store(true, Ordering::Relaxed))?;
        progress::watch("consume", &plan.counters, &watch, started);
        join_workers(handles)?.into_iter().collect()
    })
}

/// Takes up to `want` messages from the budget; 0 once it is spent.
fn claim(budget: &AtomicU64, want: u64) -> u64 {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| (b > 0).then(|| b - b.min(want)))
        .map_or(0, |b| b.min(want))
}

fn worker(plan: &Plan<'_>, t: usize) -> Result<Outcome, String> {
    let mut out = Outcome { latency: Latency::new()?, messages: 0, bytes: 0, pulls: 0, fatal: None };
    for (topic, queue) in plan.queues.iter().skip(t).step_by(plan.threads) {
        if let Err(e) = read_queue(plan, t, topic, *queue, &mut out) {
            plan.abort.store(true, Ordering::Relaxed);
            out.fatal = Some(e);
            break;
        }
        if plan.abort.load(Ordering::Relaxed) {
            break;
        }
    }
    Ok(out)
}

/// Pulls one queue to its end (or until the run must stop; then sets
/// `abort` so the caller stops too).
fn read_queue(plan: &Plan<'_>, t: usize, topic: &str, queue: u32, out: &mut Outcome) -> mqstore::Result<()> {
    let store = plan.store;
    let group = plan.args.group.as_deref();
    let mut offset = match group.and_then(|g| store.committed_offset(g, topic, queue)) {
        Some(o) => o,
        None => store.min_offset(topic, queue)?,
    };
    while !plan.abort.load(Ordering::Relaxed) {
        let want = match &plan.budget {
            Some(b) => claim(b, plan.args.batch as u64),
            None => plan.args.batch as u64,
        };
        if want == 0 {
            plan.abort.store(true, Ordering::Relaxed);
            break;
        }
        let mut bytes = 0u64;
        let t0 = Instant::now();
        let s = store.pull_with(topic, queue, offset, want as usize, &TagFilter::All, |m| {
            bytes += m.body().len() as u64;
            Ok(())
        })?;
        let t1 = Instant::now();
        if let Some(b) = &plan.budget {
            b.fetch_add(want - s.count as u64, Ordering::Relaxed);
        }
        match s.status {
            PullStatus::Found => {
                out.latency.record(t1 - t0);
                out.messages += s.count as u64;
                out.bytes += bytes;
                out.pulls += 1;
                offset = s.next_offset;
                if let Some(g) = group {
                    store.commit_offset(g, topic, queue, offset)?;
                }
            }
            PullStatus::NoMatchedMessage | PullStatus::OffsetIllegal if s.next_offset != offset => {
                offset = s.next_offset;
            }
            _ => break,
        }
        plan.counters[t].publish(out.messages, out.bytes, 0);
        if plan.deadline.is_some_and(|d| t1 >= d) {
            plan.abort.store(true, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn report(plan: &Plan<'_>, outcomes: &[Outcome], elapsed_s: f64) -> Status {
    let args = plan.args;
    let mut latency = match Latency::new() {
        Ok(l) => l,
        Err(msg) => return fail(msg),
    };
    for o in outcomes {
        if let Err(msg) = latency.merge(&o.latency) {
            return fail(msg);
        }
    }
    let lat = latency.summary();
    let messages: u64 = outcomes.iter().map(|o| o.messages).sum();
    let bytes: u64 = outcomes.iter().map(|o| o.bytes).sum();
    let pulls: u64 = outcomes.iter().map(|o| o.pulls).sum();
    let rate = messages as f64 / elapsed_s.max(1e-9);
    let mb = mb_per_s(bytes, elapsed_s);
    let mut lat_json = lat.json();
    lat_json["per"] = "pull".into();
    let json = serde_json::json!({
        "verb": "perf consume",
        "params": {
            "dir": args.dir.display().to_string(),
            "topic": args.topic,
            "topics": args.topics,
            "threads": args.threads,
            "batch": args.batch,
            "checksums": args.checksums.name(),
            "group": args.group,
            "count": args.count,
            "duration_s": args.duration.map(|d| d.as_secs_f64()),
        },
        "queues": plan.queues.len(),
        "threads_used": plan.threads,
        "messages": messages,
        "bytes": bytes,
        "pulls": pulls,
        "elapsed_s": elapsed_s,
        "msgs_per_s": rate,
        "mb_per_s": mb,
        "latency_us": lat_json,
    });
    let text = format!(
        "perf consume: {messages} msgs, {bytes} bytes in {elapsed_s:.3} s: {rate:.0} msgs/s, {mb:.1} MB/s \
         ({} thread{} over {} queues, batch {}{}{})\n  \
         latency per pull (us, {pulls} pulls): {}",
        plan.threads,
        if plan.threads == 1 { "" } else { "s" },
        plan.queues.len(),
        args.batch,
        args.group.as_ref().map_or_else(String::new, |g| format!(", group {g}")),
        if args.checksums == Checksums::Skip { ", CRC not checked" } else { "" },
        lat.text()
    );
    emit(args.json, &json, &text, Status::Ok)
}
