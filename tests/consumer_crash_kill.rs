#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Crash test for consumer offsets: a process consuming with push
//! consumers is killed with SIGKILL at a random moment, and the offsets it
//! persisted must never pass a message it had not consumed (re-delivery is
//! allowed, a skip never is), and must never move backwards.
//!
//! The harness re-executes this test binary (as `tests/store_crash_kill.rs`
//! does): the parent spawns `current_exe() --exact
//! consumer_crash_child_process --nocapture --test-threads=1` with
//! [`ENV_CHILD_DIR`] set, which turns the otherwise empty
//! `consumer_crash_child_process` test into the consumer.
//!
//! 1. The parent fills a store with N messages (3,750 by default: 75 per
//!    round, at least 3,000) on topic `cck` with 4 queues: mostly
//!    round robin, some sent to queue 3 or to a random queue, so the queues
//!    differ in length. Bodies are self-describing (magic, sequence number,
//!    CRC, payload derived from the sequence number), and the parent keeps
//!    which sequence number sits at every (queue, queue offset). It closes
//!    the store; nothing is ever sent again.
//! 2. Crash rounds. The child opens the store with a short
//!    `offset_persist_interval` (1 to 50 ms, mostly 20 ms, so persisted
//!    offsets move during the round), prints `@@READY` with the queue ends
//!    and the committed offsets it recovered, and starts one or two push
//!    consumers of the clustering group `cck-group` (`ConsumeFrom::FirstOffset`,
//!    1 to 4 threads; a concurrent listener with batches of 1 to 4, or in
//!    about a quarter of the rounds an orderly listener; varied pull batch
//!    sizes and flow-control limits; a second consumer starts 0 to 60 ms
//!    after the first, which rebalances the queues while messages flow, and
//!    in some rounds the first then shuts down cleanly, handing its queues
//!    over; in about 15% of the rounds the child shuts its consumers down
//!    and closes the store 1 to 60 ms after `@@READY`, then waits for the
//!    kill). For every message it consumes, the listener writes one line
//!    `@@MSG <consumer> <queue> <queue offset> <seq> <attempt> <time>
//!    <check>` to stdout and flushes BEFORE returning success (`time` is
//!    `CLOCK_MONOTONIC`, taken just before the write; `check` is a CRC of the
//!    line). Listeners sleep a little per message, paced by the parent so
//!    that the messages last for about the requested number of rounds.
//! 3. The parent kills the child with SIGKILL 3 to 200 ms after `@@READY`
//!    (0 to 2 ms in about 7% of rounds, while the consumers start; 0 to 4 ms
//!    after `@@OPENING`, while the store recovers, in another 8%). During
//!    the round it polls the persisted offsets every 2 ms with the
//!    read-only [`StoreView`] (which works beside a live store), and once
//!    more after the kill.
//! 4. Checks, per queue: every persisted committed offset `C` observed at
//!    time `t` satisfies `C <=` the first queue offset that no child had
//!    reported consuming before `t` (in this or an earlier round), so the
//!    offset never passed a message that was not consumed; `C` never moves
//!    backwards (within a round or across rounds) and an entry never
//!    disappears; no entry of another group or topic appears. Each child
//!    recovered exactly the persisted offsets and queue ends, delivered
//!    nothing below them (it resumes from the committed offsets), every
//!    message with the right sequence number and an intact body, and nothing
//!    twice within one process (all listeners succeed and hand-overs are
//!    clean, so the only re-deliveries are those a crash causes). Orderly
//!    rounds also deliver every queue strictly in order from the committed
//!    offset, without gaps. In some rounds the parent also opens a copy of
//!    the crashed directory (or, in others, the real directory in place,
//!    closing it cleanly) with [`Store::open`] and checks
//!    `committed_offset`, the queue ends and the message at each committed
//!    offset. A child that closed its store before the kill must have
//!    persisted exactly one past the last message delivered in the round for
//!    every queue, having delivered everything from its starting offset.
//! 5. Rounds continue after the requested number until every message was
//!    reported consumed at least once. Then a clean run (the child waits until
//!    its in-memory offsets reach every queue's end, shuts its consumers down
//!    and closes the store) may re-deliver only messages at or above the
//!    persisted offsets, and must leave the persisted offsets at every
//!    queue's end; a second clean run must deliver nothing at all.
//!
//! Re-deliveries (messages reported more than once) are counted and
//! printed; they are allowed. Rounds default to 50;
//! `MQSTORE_CONSUMER_CRASH_ROUNDS=n` sets them,
//! `MQSTORE_CONSUMER_CRASH_MESSAGES=n` the message count, `MQSTORE_SEED`
//! fixes the random choices (the base seed is printed; a failure names the
//! seed and the round; timing still varies) and
//! `MQSTORE_CONSUMER_CRASH_VERBOSE=1` prints every round. On failure the
//! directory is kept, with every report in `reports.txt`.

mod common;

use common::{body_for, copy_dir, emit, env_u64, mix, Rng};
use mqstore::commitlog::CommitLogOptions;
use mqstore::consumer::{ConsumeContext, ConsumeFrom, ConsumeStatus, OrderlyStatus, PushConsumer};
use mqstore::message::{Message, MessageExt};
use mqstore::store::{PullStatus, SendStatus, Store, StoreOptions, StoreView, TagFilter};
use mqstore::topic::TopicConfig;
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// Name of the test that becomes the consumer in the child process.
const CHILD_TEST: &str = "consumer_crash_child_process";
/// Store directory for the child; unset in normal test runs.
const ENV_CHILD_DIR: &str = "MQSTORE_CONSUMER_CRASH_CHILD";
/// The child's configuration, see [`ChildConf::encode`].
const ENV_CHILD_CONF: &str = "MQSTORE_CONSUMER_CRASH_CHILD_CONF";
/// Exit code of a child that hit an error.
const CHILD_ERROR_EXIT: i32 = 87;
/// A crash-round child is never meant to live this long; it gives up (with
/// [`CHILD_ERROR_EXIT`]) rather than linger if the parent vanished.
const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(60);
/// How long the parent waits for the kill point of a crash round.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a clean run may take.
const CLEAN_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the parent reads the persisted offsets during a round.
const POLL_EVERY: Duration = Duration::from_millis(2);
/// Rounds allowed past the requested number to finish consumption.
const EXTRA_ROUNDS: u32 = 300;
/// Consumption time per round the pacing plans with (ms).
const WINDOW_MS: u64 = 80;
/// Longest per-message listener delay (µs).
const MAX_DELAY_US: u64 = 20_000;

const TOPIC: &str = "cck";
const QUEUES: u32 = 4;
const GROUP: &str = "cck-group";

fn store_opts(persist: Duration) -> StoreOptions {
    StoreOptions::default()
        .commit_log_options(CommitLogOptions::default().segment_size(256 << 10).max_record_size(16 << 10))
        .max_body_size(4 << 10)
        .max_properties_size(1 << 10)
        .consume_queue_units_per_file(128)
        .offset_persist_interval(persist)
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for parent and child.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

// ---------------------------------------------------------------------------
// Message contents.

const MAGIC: [u8; 4] = *b"CCK1";
/// Magic, seq, CRC.
const BODY_HEADER: usize = 16;

fn payload_len(seq: u64) -> usize {
    (mix(seq ^ 0xC0C0_5EED) % 300) as usize
}

fn body(seq: u64) -> Vec<u8> {
    let payload = body_for(seq, payload_len(seq));
    let mut b = Vec::with_capacity(BODY_HEADER + payload.len());
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&seq.to_be_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&b);
    h.update(&payload);
    b.extend_from_slice(&h.finalize().to_be_bytes());
    b.extend_from_slice(&payload);
    b
}

/// The seq of a well-formed body.
fn decode(body: &[u8]) -> Result<u64, String> {
    if body.len() < BODY_HEADER || body[..4] != MAGIC {
        return Err(format!("body of {} bytes has no header", body.len()));
    }
    let seq = u64::from_be_bytes(body[4..12].try_into().unwrap());
    let crc = u32::from_be_bytes(body[12..16].try_into().unwrap());
    let mut h = crc32fast::Hasher::new();
    h.update(&body[..12]);
    h.update(&body[BODY_HEADER..]);
    if h.finalize() != crc {
        return Err(format!("body of {} bytes (seq {seq}) fails its CRC", body.len()));
    }
    let plen = body.len() - BODY_HEADER;
    if plen != payload_len(seq) || body[BODY_HEADER..] != body_for(seq, plen)[..] {
        return Err(format!("body of {} bytes does not hold the payload of seq {seq}", body.len()));
    }
    Ok(seq)
}

fn message(seq: u64) -> Message {
    Message::new(TOPIC, body(seq)).with_tags(format!("t{}", seq % 4))
}

// ---------------------------------------------------------------------------
// The child.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Consume until killed.
    Crash,
    /// Consume until the in-memory offsets reach the ends, then shut down
    /// and close cleanly.
    Clean,
}

/// Per-round configuration handed to the child.
#[derive(Debug, Clone, Copy)]
struct ChildConf {
    mode: Mode,
    /// 1 or 2 consumers of the group in the process.
    consumers: u64,
    threads: u64,
    orderly: bool,
    /// `consume_message_batch_max_size` (concurrent only).
    batch: u64,
    pull_batch: u64,
    max_cached: u64,
    /// Listener delay per message (µs).
    delay_us: u64,
    persist_ms: u64,
    /// Delay before the second consumer starts (ms).
    stagger_ms: u64,
    /// With two consumers: the first shuts down this long after READY
    /// (ms); 0 = never.
    leave_ms: u64,
    /// Crash rounds: the child shuts its consumers down and closes the
    /// store this long after READY (ms), then waits for the kill; 0 =
    /// never.
    close_ms: u64,
    seed: u64,
}

impl ChildConf {
    fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {} {} {} {} {} {}",
            u8::from(self.mode == Mode::Clean),
            self.consumers,
            self.threads,
            u8::from(self.orderly),
            self.batch,
            self.pull_batch,
            self.max_cached,
            self.delay_us,
            self.persist_ms,
            self.stagger_ms,
            self.leave_ms,
            self.close_ms,
            self.seed
        )
    }

    fn decode(s: &str) -> Result<Self, String> {
        let v: Vec<u64> = s
            .split_whitespace()
            .map(|x| x.parse().map_err(|e| format!("bad child conf {s:?}: {e}")))
            .collect::<Result<_, _>>()?;
        if v.len() != 13 {
            return Err(format!("bad child conf {s:?}"));
        }
        Ok(Self {
            mode: if v[0] == 1 { Mode::Clean } else { Mode::Crash },
            consumers: v[1],
            threads: v[2],
            orderly: v[3] == 1,
            batch: v[4],
            pull_batch: v[5],
            max_cached: v[6],
            delay_us: v[7],
            persist_ms: v[8],
            stagger_ms: v[9],
            leave_ms: v[10],
            close_ms: v[11],
            seed: v[12],
        })
    }

    /// Listener threads that can work at once.
    fn parallelism(&self) -> u64 {
        let threads = self.consumers * self.threads;
        if self.orderly {
            threads.min(u64::from(QUEUES))
        } else {
            threads
        }
    }
}

/// In a listener: report or die (the parent is gone if stdout fails).
fn emit_or_exit(s: &str) {
    if let Err(e) = emit(s) {
        eprintln!("consumer crash child: {e}");
        std::process::exit(CHILD_ERROR_EXIT);
    }
}

fn msg_fields(consumer: u64, queue: u32, offset: u64, seq: u64, attempt: u32, ts: u64) -> String {
    format!("{consumer} {queue} {offset} {seq} {attempt} {ts}")
}

fn msg_line(consumer: u64, queue: u32, offset: u64, seq: u64, attempt: u32, ts: u64) -> String {
    let fields = msg_fields(consumer, queue, offset, seq, attempt, ts);
    let check = crc32fast::hash(fields.as_bytes());
    format!("@@MSG {fields} {check:08x}\n")
}

fn sleep_us(us: u64) {
    if us > 0 {
        std::thread::sleep(Duration::from_micros(us));
    }
}

/// The listener body: checks the messages, sleeps part of the delay,
/// reports them (flushed), sleeps the rest; the caller then returns
/// success. So a kill may come before the report (no ack: re-delivered),
/// or between report and ack (reported, re-delivered too).
fn consume(consumer: u64, msgs: &[MessageExt], attempt: u32, delay_us: u64, seed: u64) {
    let mut found = Vec::with_capacity(msgs.len());
    for m in msgs {
        match decode(m.body()) {
            Ok(seq) => found.push((m.queue_id(), m.queue_offset().0, seq)),
            Err(e) => emit_or_exit(&format!(
                "@@BAD consumer {consumer} got a damaged message at {}/{}@{}: {e}\n",
                m.topic(),
                m.queue_id(),
                m.queue_offset().0
            )),
        }
    }
    let total = delay_us * msgs.len() as u64;
    let key = mix(seed ^ msgs.first().map_or(0, |m| (u64::from(m.queue_id()) << 48) ^ m.queue_offset().0));
    let before = match key % 3 {
        0 => 0,
        1 => total / 2,
        _ => total,
    };
    sleep_us(before);
    let ts = mono_ns();
    let mut out = String::new();
    for (q, off, seq) in found {
        out.push_str(&msg_line(consumer, q, off, seq, attempt, ts));
    }
    emit_or_exit(&out);
    sleep_us(total - before);
}

fn start_consumer(store: &Store, conf: &ChildConf, c: u64) -> Result<PushConsumer, String> {
    let b = store
        .push_consumer(GROUP)
        .subscribe(TOPIC, "*")
        .map_err(|e| format!("subscribe: {e}"))?
        .instance_name(&format!("c{c}"))
        .consume_from(ConsumeFrom::FirstOffset)
        .consume_threads(conf.threads as usize)
        .pull_batch_size(conf.pull_batch as usize)
        .max_cached_messages_per_queue(conf.max_cached as usize);
    let (delay, seed) = (conf.delay_us, mix(conf.seed ^ c));
    let b = if conf.orderly {
        b.orderly_listener(move |msgs: &[MessageExt], ctx: &ConsumeContext| {
            consume(c, msgs, ctx.delivery_attempt, delay, seed);
            OrderlyStatus::Success
        })
    } else {
        b.consume_message_batch_max_size(conf.batch as usize).listener(
            move |msgs: &[MessageExt], ctx: &ConsumeContext| {
                consume(c, msgs, ctx.delivery_attempt, delay, seed);
                ConsumeStatus::Success
            },
        )
    };
    b.start().map_err(|e| format!("starting consumer c{c}: {e} ({e:?})"))
}

fn fmt_offsets(v: &[Option<u64>]) -> String {
    v.iter().map(|o| o.map_or_else(|| "-".to_string(), |o| o.to_string())).collect::<Vec<_>>().join(" ")
}

fn committed_in(store: &Store) -> Vec<Option<u64>> {
    (0..QUEUES).map(|q| store.committed_offset(GROUP, TOPIC, q)).collect()
}

/// The consumer. Returns immediately in a normal test run; in a crash
/// round it never returns (it is killed, or exits with
/// [`CHILD_ERROR_EXIT`]); in a clean run it returns after closing the store.
#[test]
fn consumer_crash_child_process() {
    let Some(dir) = std::env::var_os(ENV_CHILD_DIR) else {
        return;
    };
    if let Err(e) = run_child(Path::new(&dir)) {
        eprintln!("consumer crash child: {e}");
        let _ = std::io::stderr().flush();
        std::process::exit(CHILD_ERROR_EXIT);
    }
}

fn run_child(dir: &Path) -> Result<(), String> {
    let conf = std::env::var(ENV_CHILD_CONF)
        .map_err(|e| format!("{ENV_CHILD_CONF}: {e}"))
        .and_then(|s| ChildConf::decode(&s))?;
    emit("@@OPENING\n")?;
    let store = Store::open(dir, store_opts(Duration::from_millis(conf.persist_ms)))
        .map_err(|e| format!("open failed: {e} ({e:?})"))?;
    let mut ends = Vec::new();
    for q in 0..QUEUES {
        ends.push(store.max_offset(TOPIC, q).map_err(|e| format!("max_offset({q}): {e}"))?);
    }
    let ends_s: Vec<String> = ends.iter().map(u64::to_string).collect();
    emit(&format!("@@READY {} {}\n", ends_s.join(" "), fmt_offsets(&committed_in(&store))))?;
    let ready = Instant::now();
    let mut consumers = Vec::new();
    for c in 0..conf.consumers {
        if c > 0 {
            std::thread::sleep(Duration::from_millis(conf.stagger_ms));
        }
        consumers.push(Some(start_consumer(&store, &conf, c)?));
    }
    emit("@@STARTED\n")?;
    if conf.mode == Mode::Crash {
        if conf.leave_ms > 0 && consumers.len() > 1 && (conf.close_ms == 0 || conf.leave_ms < conf.close_ms) {
            let at = ready + Duration::from_millis(conf.leave_ms);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if let Some(c) = consumers[0].take() {
                c.shutdown().map_err(|e| format!("shutting down consumer c0: {e} ({e:?})"))?;
            }
            emit("@@LEFT\n")?;
        }
        if conf.close_ms > 0 {
            let at = ready + Duration::from_millis(conf.close_ms);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            for c in consumers.iter_mut().filter_map(Option::take) {
                c.shutdown().map_err(|e| format!("shutting down a consumer: {e} ({e:?})"))?;
            }
            let committed = committed_in(&store);
            store.close().map_err(|e| format!("closing the store: {e} ({e:?})"))?;
            emit(&format!("@@CLOSED {}\n", fmt_offsets(&committed)))?;
        }
        std::thread::sleep(CHILD_MAX_LIFETIME);
        return Err("no kill came".into());
    }
    let deadline = Instant::now() + CLEAN_TIMEOUT / 2;
    loop {
        let committed = committed_in(&store);
        if committed.iter().zip(&ends).all(|(c, e)| *c == Some(*e)) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "clean run: the committed offsets {committed:?} did not reach the queue ends {ends:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Room for anything (wrongly) delivered late.
    std::thread::sleep(Duration::from_millis(50));
    for c in consumers.into_iter().flatten() {
        c.shutdown().map_err(|e| format!("shutting down a consumer: {e} ({e:?})"))?;
    }
    let committed = committed_in(&store);
    store.close().map_err(|e| format!("closing the store: {e} ({e:?})"))?;
    emit(&format!("@@DONE {}\n", fmt_offsets(&committed)))
}

// ---------------------------------------------------------------------------
// Reports on the child's stdout.

/// One consumed message as reported by the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Report {
    consumer: u64,
    queue: u32,
    offset: u64,
    seq: u64,
    attempt: u32,
    /// `CLOCK_MONOTONIC` just before the report was written.
    ts: u64,
}

#[derive(Debug)]
enum Event {
    Opening(Instant),
    /// Queue ends and committed offsets the child recovered.
    Ready(Vec<u64>, Vec<Option<u64>>, Instant),
    Started,
    Left,
    /// The child closed the store (crash rounds); its committed offsets
    /// just before.
    Closed(Vec<Option<u64>>),
    Msg(Report),
    /// Committed offsets at the end of a clean run.
    Done(Vec<Option<u64>>),
    /// A newline-terminated `@@` line that does not parse or check, or a
    /// damaged message.
    Bad(String),
    /// The final bytes, cut off by the kill (no newline).
    Torn(String),
    ReadError(String),
}

fn parse_offsets(f: &[&str]) -> Option<Vec<Option<u64>>> {
    f.iter().map(|x| if *x == "-" { Some(None) } else { x.parse().ok().map(Some) }).collect()
}

fn parse_line(line: &str) -> Option<Event> {
    let at = line.find("@@")?;
    let f: Vec<&str> = line[at..].split_whitespace().collect();
    let bad = || Some(Event::Bad(line.to_string()));
    let nq = QUEUES as usize;
    match f[0] {
        "@@OPENING" => Some(Event::Opening(Instant::now())),
        "@@STARTED" => Some(Event::Started),
        "@@LEFT" => Some(Event::Left),
        "@@READY" => {
            if f.len() != 1 + 2 * nq {
                return bad();
            }
            let ends: Option<Vec<u64>> = f[1..=nq].iter().map(|x| x.parse().ok()).collect();
            match (ends, parse_offsets(&f[1 + nq..])) {
                (Some(e), Some(c)) => Some(Event::Ready(e, c, Instant::now())),
                _ => bad(),
            }
        }
        "@@DONE" | "@@CLOSED" => match parse_offsets(&f[1..]).filter(|c| c.len() == nq) {
            Some(c) if f[0] == "@@DONE" => Some(Event::Done(c)),
            Some(c) => Some(Event::Closed(c)),
            None => bad(),
        },
        "@@MSG" => {
            if f.len() != 8 {
                return bad();
            }
            let dec = |s: &str| s.parse::<u64>().ok();
            let (Some(consumer), Some(queue), Some(offset), Some(seq), Some(attempt), Some(ts), Ok(check)) = (
                dec(f[1]),
                dec(f[2]).and_then(|q| u32::try_from(q).ok()),
                dec(f[3]),
                dec(f[4]),
                dec(f[5]).and_then(|a| u32::try_from(a).ok()),
                dec(f[6]),
                u32::from_str_radix(f[7], 16),
            ) else {
                return bad();
            };
            if crc32fast::hash(f[1..7].join(" ").as_bytes()) != check {
                return bad();
            }
            Some(Event::Msg(Report { consumer, queue, offset, seq, attempt, ts }))
        }
        _ => bad(),
    }
}

fn read_reports(stdout: ChildStdout, tx: &Sender<Event>) {
    common::read_report_lines(stdout, |line| match line {
        common::ReportLine::Complete(l) => match parse_line(&l) {
            Some(ev) => tx.send(ev).is_ok(),
            None => true,
        },
        common::ReportLine::Torn(l) => {
            let _ = tx.send(Event::Torn(l));
            false
        }
        common::ReportLine::ReadError(e) => {
            let _ = tx.send(Event::ReadError(e));
            false
        }
    });
}

// ---------------------------------------------------------------------------
// The parent.

/// When the parent kills a crash-round child.
#[derive(Debug, Clone, Copy)]
enum KillPlan {
    /// This many microseconds after `@@OPENING` (while the store recovers).
    DuringOpen(u64),
    /// This many milliseconds after `@@READY`.
    AfterReady(u64),
}

/// The persisted offsets, read at `at` (`CLOCK_MONOTONIC`, taken after the
/// read finished).
#[derive(Debug, Clone)]
struct Poll {
    at: u64,
    offsets: Vec<Option<u64>>,
}

/// What one child run showed.
struct Observed {
    ready: Option<(Vec<u64>, Vec<Option<u64>>)>,
    started: bool,
    left: bool,
    /// In-memory offsets when a crash-round child closed its store.
    closed: Option<Vec<Option<u64>>>,
    done: Option<Vec<Option<u64>>>,
    /// In pipe order.
    reports: Vec<Report>,
    /// During the run, in time order.
    polls: Vec<Poll>,
    /// Read after the child was reaped.
    end: Vec<Option<u64>>,
    /// The report line the kill cut off, if any.
    torn: Option<String>,
    stderr: String,
}

/// Reads the persisted offsets; any entry but the group's on the topic (or
/// on its retry topic, which the child's listeners never fail into, so it
/// must stay at 0) is an error.
fn read_committed(view: &StoreView) -> Result<Vec<Option<u64>>, String> {
    let entries = view.offsets().map_err(|e| format!("StoreView::offsets failed: {e} ({e:?})"))?;
    let mut out = vec![None; QUEUES as usize];
    for e in entries {
        if e.group == GROUP && e.topic == mqstore::dlq::retry_topic(GROUP) && e.queue_id == 0 && e.offset == 0 {
            continue;
        }
        if e.group != GROUP || e.topic != TOPIC || e.queue_id >= QUEUES {
            return Err(format!("unexpected committed offset entry {e:?}"));
        }
        out[e.queue_id as usize] = Some(e.offset);
    }
    Ok(out)
}

#[derive(Debug, Default)]
struct Totals {
    crash_rounds: u64,
    reports: u64,
    redeliveries: u64,
    max_round_redeliveries: u64,
    killed_in_open: u64,
    killed_before_ready: u64,
    killed_before_started: u64,
    orderly_rounds: u64,
    two_consumer_rounds: u64,
    leave_rounds: u64,
    /// Rounds whose child closed the store before the kill.
    closed_rounds: u64,
    polls: u64,
    /// Rounds in which the persisted offsets changed while the child ran.
    moved_mid_round: u64,
    /// Rounds that persisted progress.
    progress_rounds: u64,
    torn_reports: u64,
    copy_checks: u64,
    in_place_checks: u64,
    clean_redeliveries: u64,
}

struct Harness {
    base: PathBuf,
    rng: Rng,
    min_rounds: u32,
    /// Seq at every (queue, queue offset).
    layout: Vec<Vec<u64>>,
    ends: Vec<u64>,
    /// Times each (queue, queue offset) was reported consumed.
    counts: Vec<Vec<u32>>,
    /// Per queue: the first offset not reported consumed by any child.
    prefix: Vec<u64>,
    /// The persisted offsets last observed.
    committed: Vec<Option<u64>>,
    /// Every report, with its round, for a failure report.
    history: Vec<(u32, Report)>,
    totals: Totals,
    verbose: bool,
}

fn rounds() -> u32 {
    env_u64("MQSTORE_CONSUMER_CRASH_ROUNDS").map_or(50, |n| n.clamp(1, 1_000_000) as u32)
}

#[test]
fn committed_offsets_never_skip_after_sigkill() {
    let min_rounds = rounds();
    let messages = env_u64("MQSTORE_CONSUMER_CRASH_MESSAGES")
        .map_or_else(|| 3_000.max(75 * u64::from(min_rounds)), |n| n.clamp(1, 10_000_000));
    let base_seed = common::seed();
    println!("consumer crash test: MQSTORE_SEED={base_seed}, {min_rounds} rounds, {messages} messages");
    let dir = tempfile::Builder::new().prefix("mqstore-consumer-crash-").tempdir().unwrap();
    let mut h = Harness {
        base: dir.path().to_path_buf(),
        rng: Rng(mix(base_seed ^ 0xC0_5E_C0) | 1),
        min_rounds,
        layout: Vec::new(),
        ends: Vec::new(),
        counts: Vec::new(),
        prefix: vec![0; QUEUES as usize],
        committed: vec![None; QUEUES as usize],
        history: Vec::new(),
        totals: Totals::default(),
        verbose: env_u64("MQSTORE_CONSUMER_CRASH_VERBOSE").is_some_and(|v| v != 0),
    };
    let started = Instant::now();
    h.fill(messages);
    let filled = started.elapsed();
    let mut round = 0u32;
    let outcome = loop {
        let step = if round < min_rounds || !h.all_consumed() {
            if round >= min_rounds + EXTRA_ROUNDS {
                break Err(format!(
                    "not every message was consumed after {round} rounds: consumed prefixes {:?} of {:?}",
                    h.prefix, h.ends
                ));
            }
            std::panic::catch_unwind(AssertUnwindSafe(|| h.crash_round(round)))
        } else {
            std::panic::catch_unwind(AssertUnwindSafe(|| h.clean_runs(round)))
        };
        let res = match step {
            Ok(r) => r,
            Err(payload) => Err(format!(
                "panic during the round: {}",
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_else(|| "non-string panic".into())
            )),
        };
        match res {
            Err(e) => break Err(e),
            Ok(true) => break Ok(()),
            Ok(false) => round += 1,
        }
    };
    if let Err(failure) = outcome {
        let mut text = String::from("# round consumer queue offset seq attempt ts\n");
        for (r, p) in &h.history {
            text.push_str(&format!("{r} {} {} {} {} {} {}\n", p.consumer, p.queue, p.offset, p.seq, p.attempt, p.ts));
        }
        let _ = std::fs::write(h.base.join("reports.txt"), text);
        let kept = dir.keep();
        panic!(
            "consumer crash test FAILED in round {round} (of at least {min_rounds}), MQSTORE_SEED={base_seed}; \
             store kept at {} (store in {}, reports in reports.txt)\n\
             queue ends {:?}, consumed prefixes {:?}, last persisted offsets {:?}\n{failure}",
            kept.display(),
            h.store_dir().display(),
            h.ends,
            h.prefix,
            h.committed,
        );
    }
    let t = &h.totals;
    let distinct: usize = h.counts.iter().map(|c| c.iter().filter(|&&n| n > 0).count()).sum();
    println!(
        "consumer crash test: {} crash rounds + 2 clean runs in {:.1?} (fill {filled:.1?}), MQSTORE_SEED={base_seed}: \
         {messages} messages, {} reports ({distinct} distinct), {} re-deliveries (max {} in one round, {} in the \
         final clean run), {} kills aimed at open ({} before ready), {} before consumers started, {} orderly \
         rounds, {} with 2 consumers ({} with a clean leave), {} closed the store before the kill, {} offset polls, persisted offsets moved \
         mid-round in {} rounds and progressed in {}, {} torn report lines, {} copy and {} in-place Store checks",
        t.crash_rounds,
        started.elapsed(),
        t.reports,
        t.redeliveries,
        t.max_round_redeliveries,
        t.clean_redeliveries,
        t.killed_in_open,
        t.killed_before_ready,
        t.killed_before_started,
        t.orderly_rounds,
        t.two_consumer_rounds,
        t.leave_rounds,
        t.closed_rounds,
        t.polls,
        t.moved_mid_round,
        t.progress_rounds,
        t.torn_reports,
        t.copy_checks,
        t.in_place_checks,
    );
    assert_eq!(distinct as u64, messages, "every message was consumed");
}

impl Harness {
    fn store_dir(&self) -> PathBuf {
        self.base.join("store")
    }

    fn verify_dir(&self) -> PathBuf {
        self.base.join("verify")
    }

    fn all_consumed(&self) -> bool {
        self.prefix == self.ends
    }

    /// Creates the store and sends `n` messages; records where each went.
    fn fill(&mut self, n: u64) {
        let store = Store::open(self.store_dir(), store_opts(Duration::from_millis(20))).unwrap();
        store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
        let mut layout = vec![Vec::new(); QUEUES as usize];
        for seq in 0..n {
            let m = message(seq);
            let r = match self.rng.below(100) {
                0..=69 => store.send(m),
                70..=84 => store.send_to_queue(m, QUEUES - 1),
                _ => store.send_to_queue(m, self.rng.below(u64::from(QUEUES)) as u32),
            }
            .unwrap();
            assert_eq!(r.status, SendStatus::SendOk);
            let q = &mut layout[r.queue_id as usize];
            assert_eq!(r.queue_offset, q.len() as u64, "queue offsets are dense");
            q.push(seq);
        }
        store.close().unwrap();
        self.ends = layout.iter().map(|q| q.len() as u64).collect();
        self.counts = layout.iter().map(|q| vec![0; q.len()]).collect();
        self.layout = layout;
        assert!(self.ends.iter().all(|&e| e > 0), "every queue holds messages: {:?}", self.ends);
    }

    /// Messages the next child has to deliver (from the persisted offsets).
    fn remaining(&self) -> u64 {
        self.ends.iter().zip(&self.committed).map(|(e, c)| e - c.unwrap_or(0)).sum()
    }

    fn crash_conf(&mut self, round: u32) -> ChildConf {
        let rng = &mut self.rng;
        let consumers = if rng.below(100) < 30 { 2 } else { 1 };
        let orderly = rng.below(100) < 25;
        let threads = 1 + rng.below(4);
        let batch = if orderly || rng.below(100) < 60 { 1 } else { 2 + rng.below(3) };
        let pull_batch = [32, 32, 8, 4, 1][rng.below(5) as usize];
        // Two consumers mostly get tight flow control: a hand-over waits for
        // every task already queued for the queues it moves.
        let max_cached = match (consumers, rng.below(100)) {
            (2, 0..=69) => 2 + rng.below(15),
            (_, 0..=69) => 1000,
            _ => 4 + rng.below(29),
        };
        let persist_ms = [1, 2, 5, 20, 20, 20, 20, 50][rng.below(8) as usize];
        let stagger_ms = if consumers == 2 { rng.below(60) } else { 0 };
        let leave_ms = if consumers == 2 && rng.below(100) < 35 { stagger_ms + 5 + rng.below(100) } else { 0 };
        let close_ms = if rng.below(100) < 15 { 1 + rng.below(60) } else { 0 };
        // A shutdown drains what is queued, too: keep it short.
        let max_cached = if close_ms > 0 { max_cached.min(2 + rng.below(15)) } else { max_cached };
        let factor = 50 + rng.below(101);
        let seed = rng.next();
        let mut conf = ChildConf {
            mode: Mode::Crash,
            consumers,
            threads,
            orderly,
            batch,
            pull_batch,
            max_cached,
            delay_us: 0,
            persist_ms,
            stagger_ms,
            leave_ms,
            close_ms,
            seed,
        };
        // Pacing: spread what is left over the rounds still requested.
        if round < self.min_rounds {
            let rounds_left = u64::from(self.min_rounds - round);
            let target = (self.remaining() / rounds_left).max(1);
            let d = conf.parallelism() * WINDOW_MS * 1000 / target * factor / 100;
            conf.delay_us = if d < 20 { 0 } else { d.min(MAX_DELAY_US) };
        }
        conf
    }

    fn kill_plan(&mut self) -> KillPlan {
        match self.rng.below(100) {
            0..=7 => KillPlan::DuringOpen(self.rng.below(4000)),
            8..=14 => KillPlan::AfterReady(self.rng.below(3)),
            _ => KillPlan::AfterReady(3 + self.rng.below(198)),
        }
    }

    /// Runs one child to its kill (a plan) or its exit (none), polling
    /// the persisted offsets meanwhile.
    fn observe(&self, conf: &ChildConf, plan: Option<KillPlan>) -> Result<Observed, String> {
        let view = StoreView::open(self.store_dir()).map_err(|e| format!("StoreView::open: {e}"))?;
        let common::TestChild { mut guard, stdout, stderr: err_reader } = common::spawn_test_child(
            CHILD_TEST,
            &[(ENV_CHILD_DIR, self.store_dir().into_os_string()), (ENV_CHILD_CONF, conf.encode().into())],
        )?;
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || read_reports(stdout, &tx));

        let mut events = Vec::new();
        let mut polls = Vec::new();
        let waited = {
            let child = guard.0.as_mut().ok_or("child vanished")?;
            watch(child, &rx, &view, plan, &mut events, &mut polls)
        };
        let mut child = guard.0.take().ok_or("child vanished")?;
        if plan.is_some() {
            let _ = child.kill();
        }
        let status = child.wait().map_err(|e| format!("reaping the child: {e}"))?;
        drop(guard);
        reader.join().map_err(|_| "stdout reader panicked".to_string())?;
        events.extend(rx.try_iter());
        let stderr = err_reader.join().unwrap_or_default();
        let with_stderr = |msg: String| {
            format!("{msg}\nchild exit status: {status:?}\nchild conf: {conf:?}, kill plan {plan:?}\nchild stderr:\n{stderr}")
        };
        waited.map_err(with_stderr)?;
        match plan {
            Some(_) if status.signal() != Some(libc::SIGKILL) => {
                return Err(with_stderr("the child exited on its own instead of being killed".into()))
            }
            None if !status.success() => return Err(with_stderr("the clean run failed".into())),
            _ => {}
        }
        let end = read_committed(&view).map_err(with_stderr)?;
        let mut obs = Observed {
            ready: None,
            started: false,
            left: false,
            closed: None,
            done: None,
            reports: Vec::new(),
            polls,
            end,
            torn: None,
            stderr: stderr.clone(),
        };
        for ev in events {
            match ev {
                Event::Opening(_) => {}
                Event::Ready(e, c, _) => obs.ready = Some((e, c)),
                Event::Started => obs.started = true,
                Event::Left => obs.left = true,
                Event::Closed(c) => obs.closed = Some(c),
                Event::Msg(r) => obs.reports.push(r),
                Event::Done(c) => obs.done = Some(c),
                Event::Torn(line) => obs.torn = Some(line),
                Event::Bad(line) => {
                    return Err(with_stderr(format!("a complete report line is bad or reports damage: {line:?}")))
                }
                Event::ReadError(e) => return Err(with_stderr(format!("reading the child's stdout: {e}"))),
            }
        }
        Ok(obs)
    }

    /// One crash round; never the last step.
    fn crash_round(&mut self, round: u32) -> Result<bool, String> {
        let conf = self.crash_conf(round);
        let plan = self.kill_plan();
        let check_copy = self.rng.below(100) < 15;
        let check_in_place = !check_copy && self.rng.below(100) < 10;
        let obs = self.observe(&conf, Some(plan))?;
        let ctx = |e: String| {
            format!(
                "{e}\nchild conf: {conf:?}, kill plan {plan:?}, ready {:?}, started {}, left {}, {} reports, \
                 {} polls\nchild stderr:\n{}",
                obs.ready,
                obs.started,
                obs.left,
                obs.reports.len(),
                obs.polls.len(),
                obs.stderr
            )
        };
        let c_start = self.committed.clone();
        let redelivered = self.check_run(round, &conf, &obs).map_err(ctx)?;

        let t = &mut self.totals;
        t.crash_rounds += 1;
        t.max_round_redeliveries = t.max_round_redeliveries.max(redelivered);
        t.torn_reports += u64::from(obs.torn.is_some());
        if matches!(plan, KillPlan::DuringOpen(_)) {
            t.killed_in_open += 1;
        }
        t.killed_before_ready += u64::from(obs.ready.is_none());
        t.killed_before_started += u64::from(!obs.started);
        t.orderly_rounds += u64::from(conf.orderly);
        t.two_consumer_rounds += u64::from(conf.consumers == 2);
        t.leave_rounds += u64::from(obs.left);
        t.closed_rounds += u64::from(obs.closed.is_some());
        if obs.polls.iter().any(|p| p.offsets != obs.polls[0].offsets) {
            t.moved_mid_round += 1;
        }
        if obs.end != c_start {
            t.progress_rounds += 1;
        }
        if self.verbose {
            println!(
                "round {round}: conf {conf:?}, kill {plan:?}, ready {}, started {}, left {}, closed {:?}, {} reports \
                 ({redelivered} re-deliveries), {} polls, offsets {c_start:?} -> {:?}, prefixes {:?} of {:?}, torn report {:?}",
                obs.ready.is_some(),
                obs.started,
                obs.left,
                obs.closed,
                obs.reports.len(),
                obs.polls.len(),
                obs.end,
                self.prefix,
                self.ends,
                obs.torn
            );
        }

        if check_copy {
            self.totals.copy_checks += 1;
            let verify = self.verify_dir();
            if verify.exists() {
                std::fs::remove_dir_all(&verify).map_err(|e| format!("removing {verify:?}: {e}"))?;
            }
            copy_dir(&self.store_dir(), &verify);
            self.check_with_store(&verify).map_err(|e| format!("checking a copy of the crashed store: {e}"))?;
            std::fs::remove_dir_all(&verify).map_err(|e| format!("removing {verify:?}: {e}"))?;
        } else if check_in_place {
            self.totals.in_place_checks += 1;
            self.check_with_store(&self.store_dir())
                .map_err(|e| format!("checking the crashed store in place: {e}"))?;
            let view = StoreView::open(self.store_dir()).map_err(|e| format!("StoreView::open: {e}"))?;
            let after = read_committed(&view)?;
            if after != self.committed {
                return Err(format!(
                    "opening and closing the store in place changed the persisted offsets from {:?} to {after:?}",
                    self.committed
                ));
            }
        }
        Ok(false)
    }

    /// The clean run that finishes consumption, then one that must deliver
    /// nothing. Always the last step.
    fn clean_runs(&mut self, round: u32) -> Result<bool, String> {
        for pass in 0..2 {
            let rng = &mut self.rng;
            let consumers = 1 + rng.below(2);
            let orderly = rng.below(100) < 25;
            let conf = ChildConf {
                mode: Mode::Clean,
                consumers,
                threads: 1 + rng.below(4),
                orderly,
                batch: if orderly { 1 } else { 1 + rng.below(4) },
                pull_batch: 32,
                max_cached: 1000,
                delay_us: 0,
                persist_ms: 20,
                stagger_ms: if consumers == 2 { rng.below(20) } else { 0 },
                leave_ms: 0,
                close_ms: 0,
                seed: rng.next(),
            };
            let obs = self.observe(&conf, None)?;
            let c_start = self.committed.clone();
            let ctx = |e: String| {
                format!(
                    "clean run {pass}: {e}\nchild conf: {conf:?}, persisted offsets at its start {c_start:?}, \
                     {} reports\nchild stderr:\n{}",
                    obs.reports.len(),
                    obs.stderr
                )
            };
            // Nothing new: every message was consumed before.
            for r in &obs.reports {
                let before = self.counts.get(r.queue as usize).and_then(|c| c.get(r.offset as usize)).copied();
                if before == Some(0) {
                    return Err(ctx(format!("the clean run delivered {r:?}, which no crashed round had consumed")));
                }
            }
            let redelivered = self.check_run(round, &conf, &obs).map_err(ctx)?;
            if pass == 0 {
                self.totals.clean_redeliveries += redelivered;
            } else if !obs.reports.is_empty() {
                return Err(ctx(format!(
                    "the second clean run delivered {} messages after a clean shutdown left the offsets at the \
                     queue ends (first {:?})",
                    obs.reports.len(),
                    obs.reports[0]
                )));
            }
            let ends: Vec<Option<u64>> = self.ends.iter().map(|&e| Some(e)).collect();
            if obs.done.as_ref() != Some(&ends) {
                return Err(ctx(format!("the child ended with committed offsets {:?}, not the ends", obs.done)));
            }
            if obs.end != ends {
                return Err(ctx(format!(
                    "after the clean run the persisted offsets are {:?}, not the queue ends {ends:?}",
                    obs.end
                )));
            }
            if self.verbose {
                println!(
                    "clean run {pass}: conf {conf:?}, {} reports ({redelivered} re-deliveries), offsets {c_start:?} \
                     -> {:?}",
                    obs.reports.len(),
                    obs.end
                );
            }
        }
        self.check_with_store(&self.store_dir())
            .map_err(|e| format!("checking the store after the clean runs: {e}"))?;
        Ok(true)
    }

    /// Checks a run against the reports of earlier rounds and records it;
    /// returns its re-deliveries.
    fn check_run(&mut self, round: u32, conf: &ChildConf, obs: &Observed) -> Result<u64, String> {
        let c_start = self.committed.clone();
        if let Some((ends, committed)) = &obs.ready {
            if *ends != self.ends {
                return Err(format!("the child recovered queue ends {ends:?}, but the store holds {:?}", self.ends));
            }
            if *committed != c_start {
                return Err(format!(
                    "the child recovered committed offsets {committed:?}, but the persisted ones were {c_start:?}"
                ));
            }
        }
        let nq = QUEUES as usize;
        let start: Vec<u64> = c_start.iter().map(|c| c.unwrap_or(0)).collect();
        let mut in_run = HashSet::new();
        let mut next_orderly = start.clone();
        for r in &obs.reports {
            let q = r.queue as usize;
            let Some(&seq) = self.layout.get(q).and_then(|l| l.get(r.offset as usize)) else {
                return Err(format!("{r:?} names a message that does not exist (queue ends {:?})", self.ends));
            };
            if seq != r.seq {
                return Err(format!("{r:?}: the message at that queue offset is seq {seq}"));
            }
            if r.offset < start[q] {
                return Err(format!(
                    "{r:?} is below the committed offset {} the child started from: it did not resume from the \
                     committed offsets",
                    start[q]
                ));
            }
            if !in_run.insert((r.queue, r.offset)) {
                return Err(format!("{r:?} was delivered twice within one process (every listener call succeeded)"));
            }
            if conf.orderly {
                if r.offset != next_orderly[q] {
                    return Err(format!(
                        "orderly delivery out of order: {r:?} where queue {q} should deliver offset {} next",
                        next_orderly[q]
                    ));
                }
                next_orderly[q] += 1;
            }
        }

        // Every persisted offset, seen during the run and after it, against
        // what had been reported consumed by then.
        let end = Poll { at: u64::MAX, offsets: obs.end.clone() };
        for (q, &committed_at_start) in c_start.iter().enumerate() {
            let mut seen: Vec<bool> = self.counts[q].iter().map(|&n| n > 0).collect();
            let mut prefix = self.prefix[q];
            let mut rs: Vec<(u64, u64)> =
                obs.reports.iter().filter(|r| r.queue as usize == q).map(|r| (r.ts, r.offset)).collect();
            rs.sort_unstable();
            let mut i = 0;
            let mut prev = committed_at_start;
            for p in obs.polls.iter().chain(std::iter::once(&end)) {
                while i < rs.len() && rs[i].0 < p.at {
                    seen[rs[i].1 as usize] = true;
                    i += 1;
                }
                while prefix < self.ends[q] && seen[prefix as usize] {
                    prefix += 1;
                }
                let when = if p.at == u64::MAX { "after the kill".to_string() } else { format!("at t={}", p.at) };
                let c = p.offsets[q];
                match (prev, c) {
                    (Some(a), None) => {
                        return Err(format!("the persisted offset of queue {q} ({a}) disappeared ({when})"))
                    }
                    (Some(a), Some(b)) if b < a => {
                        return Err(format!(
                            "the persisted offset of queue {q} moved backwards from {a} to {b} ({when})"
                        ))
                    }
                    _ => {}
                }
                if let Some(c) = c {
                    if c > self.ends[q] {
                        return Err(format!(
                            "the persisted offset {c} of queue {q} is past its end {} ({when})",
                            self.ends[q]
                        ));
                    }
                    if c > prefix {
                        let seq = self.layout[q][prefix as usize];
                        return Err(format!(
                            "SKIP: the persisted offset {c} of queue {q} ({when}) passes queue offset {prefix} \
                             (seq {seq}), which no child had reported consuming by then; all persisted offsets: \
                             {:?}",
                            p.offsets
                        ));
                    }
                }
                prev = c.or(prev);
            }
        }

        // A child that shut its consumers down and closed the store has
        // persisted exactly what they committed: every queue one past the
        // last message delivered in this run, all from the start delivered.
        if let Some(closed) = &obs.closed {
            if obs.end != *closed {
                return Err(format!(
                    "after a clean close the persisted offsets are {:?}, but the consumers had committed {closed:?}",
                    obs.end
                ));
            }
            for (q, (&c, &from)) in closed.iter().zip(&start).enumerate() {
                let delivered: Vec<u64> =
                    obs.reports.iter().filter(|r| r.queue as usize == q).map(|r| r.offset).collect();
                let want = delivered.iter().max().map_or(from, |m| m + 1);
                if c.unwrap_or(from) != want || delivered.len() as u64 != want - from {
                    return Err(format!(
                        "after a clean close queue {q} committed {c:?}, but the run started at {from} and delivered \
                         {} messages up to {want} (exclusive)",
                        delivered.len()
                    ));
                }
            }
        }

        // Record the run.
        let mut redelivered = 0;
        for r in &obs.reports {
            let n = &mut self.counts[r.queue as usize][r.offset as usize];
            if *n > 0 {
                redelivered += 1;
            }
            *n += 1;
            self.history.push((round, *r));
        }
        for q in 0..nq {
            while self.prefix[q] < self.ends[q] && self.counts[q][self.prefix[q] as usize] > 0 {
                self.prefix[q] += 1;
            }
        }
        self.committed = obs.end.clone();
        self.totals.reports += obs.reports.len() as u64;
        self.totals.redeliveries += redelivered;
        self.totals.polls += obs.polls.len() as u64;
        Ok(redelivered)
    }

    /// Opens the store at `dir` and checks the queue ends, the committed
    /// offsets against the last ones observed, and the message at each.
    fn check_with_store(&self, dir: &Path) -> Result<(), String> {
        let store = Store::open(dir, store_opts(Duration::from_millis(20)))
            .map_err(|e| format!("reopen failed: {e} ({e:?})"))?;
        let result = (|| {
            for q in 0..QUEUES {
                let qi = q as usize;
                let max = store.max_offset(TOPIC, q).map_err(|e| format!("max_offset({q}): {e}"))?;
                if max != self.ends[qi] {
                    return Err(format!("queue {q} ends at {max}, not {}", self.ends[qi]));
                }
                let c = store.committed_offset(GROUP, TOPIC, q);
                if c != self.committed[qi] {
                    return Err(format!(
                        "committed_offset of queue {q} is {c:?}, but the persisted file says {:?}",
                        self.committed[qi]
                    ));
                }
                let at = c.unwrap_or(0);
                if at < max {
                    let r =
                        store.pull(TOPIC, q, at, 1, &TagFilter::All).map_err(|e| format!("pull({q}, {at}): {e}"))?;
                    let seq = r.messages.first().map(|m| decode(m.body()));
                    if r.status != PullStatus::Found || seq != Some(Ok(self.layout[qi][at as usize])) {
                        return Err(format!(
                            "pull of queue {q} at its committed offset {at} returned {:?} with {seq:?}",
                            r.status
                        ));
                    }
                }
            }
            Ok(())
        })();
        let closed = store.close().map_err(|e| format!("close failed: {e} ({e:?})"));
        result?;
        closed
    }
}

/// Collects the child's events and polls the persisted offsets until the
/// kill point of `plan` (then returns; the caller kills) or, without a
/// plan, until the child exits.
fn watch(
    child: &mut Child,
    rx: &Receiver<Event>,
    view: &StoreView,
    plan: Option<KillPlan>,
    events: &mut Vec<Event>,
    polls: &mut Vec<Poll>,
) -> Result<(), String> {
    let deadline = Instant::now() + if plan.is_some() { READY_TIMEOUT } else { CLEAN_TIMEOUT };
    let mut kill_at: Option<Instant> = None;
    let mut next_poll = Instant::now();
    let mut closed = false;
    loop {
        let now = Instant::now();
        if kill_at.is_some_and(|k| now >= k) {
            return Ok(());
        }
        if now >= next_poll {
            let offsets = read_committed(view)?;
            polls.push(Poll { at: mono_ns(), offsets });
            next_poll = now + POLL_EVERY;
        }
        if plan.is_none() {
            if let Some(_status) = child.try_wait().map_err(|e| format!("waiting for the child: {e}"))? {
                return Ok(());
            }
        }
        if now >= deadline {
            return Err(match plan {
                Some(p) => format!("the child did not reach the kill point of {p:?} within {READY_TIMEOUT:?}"),
                None => format!("the clean run did not end within {CLEAN_TIMEOUT:?}"),
            });
        }
        let wake = kill_at.map_or(next_poll, |k| k.min(next_poll));
        let wait = wake.saturating_duration_since(Instant::now());
        if closed {
            std::thread::sleep(wait);
            continue;
        }
        match rx.recv_timeout(wait) {
            Ok(ev) => {
                let at = match (&ev, plan) {
                    (Event::Opening(t), Some(KillPlan::DuringOpen(us))) => Some(*t + Duration::from_micros(us)),
                    (Event::Ready(_, _, t), Some(KillPlan::AfterReady(ms))) => Some(*t + Duration::from_millis(ms)),
                    _ => None,
                };
                if at.is_some() && kill_at.is_none() {
                    kill_at = at;
                }
                events.push(ev);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(p) = plan {
                    return Err(format!("the child closed stdout before the kill point of {p:?}"));
                }
                closed = true;
            }
        }
    }
}
