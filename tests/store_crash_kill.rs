#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Crash test for the whole store: a child process sends messages, is
//! killed with SIGKILL at a random moment, and the parent reopens the store
//! and checks what recovery kept, through the consume queues.
//!
//! The harness re-executes this test binary (as `tests/crash_kill.rs`
//! does): each parent test spawns `current_exe() --exact
//! store_crash_child_process --nocapture --test-threads=1` with
//! [`ENV_CHILD_DIR`] set, which turns the otherwise empty
//! `store_crash_child_process` test into the producer. One round:
//!
//! 1. The child opens a [`Store`] on the round's directory (the same
//!    directory every round, so crashes chain and every open recovers a
//!    store that an earlier process had already recovered and written to),
//!    prints `@@OPENING` before and `@@READY <log end> <queue ends...>`
//!    after opening, creates the topics `crash-a` (4 queues) and `crash-b`
//!    (3 queues) if they are absent, then sends as fast as it can from 1 to
//!    3 threads: plain [`Store::send`] (round robin), `send_with_selector`
//!    with [`HashByKeySelector`], [`Store::send_to_queue`] and
//!    [`Store::send_batch`] of 2 to 5 messages. Commit-log segments are
//!    256 KiB and consume-queue files hold 64 units, so both roll
//!    constantly. Message `seq` (numbers come from the parent: one past the
//!    largest recovered) has a self-describing body: a 24-byte header (magic,
//!    `seq`, send kind, batch index and length, payload length, CRC32 over
//!    header and payload) and a payload of 0 to 8000 bytes derived from
//!    `seq` alone; its tag, keys, flag and user property are derived from
//!    `seq` too. So any message found after recovery, acknowledged or not,
//!    can be checked for garbage. After every send that returns
//!    [`SendStatus::SendOk`] the child prints one `@@ACK <seq> <topic>
//!    <queue> <queue offset> <physical offset> <msg id> <body crc> <check>`
//!    line per message and flushes; `check` is a CRC of the line, so a report
//!    torn by the kill is recognised and ignored.
//! 2. The parent reads the child's stdout on a thread and sends SIGKILL
//!    2 to 150 ms after `@@READY` (exactly 0 ms in about 10% of rounds, and
//!    0 to 12 ms after `@@OPENING`, while recovery and re-dispatch run, in
//!    another 10%), then reaps it. Any other exit is a failure, reported
//!    with the child's stderr.
//! 3. The parent copies the directory (so the next child recovers the raw
//!    crashed state, not one the parent repaired), opens the copy with
//!    [`Store::open`] (which re-dispatches synchronously) and checks:
//!    every queue of every topic, pulled from its min offset (which must be
//!    0: nothing is ever cleaned up) to its max offset, yields messages at
//!    exactly consecutive queue offsets, in the right topic and queue, with
//!    increasing physical offsets, every one well-formed (body header and
//!    CRC, payload, tag, keys, flag and property all those of its `seq`),
//!    no `seq` and no msg id twice; selector and explicit-queue sends are in
//!    the queue they must be in; the members of a batch that survived are a
//!    prefix of it, contiguous in one queue (a kill may leave a prefix of an
//!    unacknowledged batch); a pull at the max offset gives
//!    [`PullStatus::NoNewMessage`] and one past it gives no message; every
//!    commit-log record is reachable through its queue (and nothing else
//!    is), and nothing is readable at or past the log's recovered end; a
//!    message whose body matches one fully checked in an earlier round (same
//!    seq, physical offset and body CRC) is compared by CRC only, which keeps
//!    verification cheap as the directory grows; and every message acknowledged in this round or an earlier one
//!    of the directory is there with its queue, queue offset, physical
//!    offset, msg id and body unchanged (this round's are also pulled one by
//!    one at their queue offset, found by `message_by_id` of their unique
//!    id, and found by `query_by_key` of each of their keys, which returns
//!    only messages carrying that key: the index survives kills during
//!    indexing). Unacknowledged messages may or may not
//!    have survived. The next child must recover to the same log end and
//!    queue ends as the parent's copy did. About 15% of rounds also reopen
//!    the real directory in place and close it cleanly, so clean shutdowns
//!    are mixed into the chain.
//!
//! Both [`FlushMode::Sync`] and [`FlushMode::Async`] run the same checks: a
//! SIGKILL leaves the page cache intact, so async mode must not lose an
//! acknowledged message either. Rounds default to 50 per mode;
//! `MQSTORE_STORE_CRASH_ROUNDS=n` sets them, `MQSTORE_SEED` fixes the random
//! choices (the base seed is printed; a failure names the seed and the
//! round) and `MQSTORE_STORE_CRASH_VERBOSE=1` prints every round. On
//! failure the directory is kept and its path printed. The store is started
//! afresh in a new directory once its commit log passes 4 MiB, which bounds
//! the per-round verification cost.

mod common;

use common::crash_body::{self, header_seq, BodyKind, BODY_HEADER};
use common::queue_read::{pull_below_max, queue_bounds};
use common::{describe, emit, env_u64, mix, panic_text, replace_with_copy, Rng};
use mqstore::commitlog::{CommitLogOptions, FlushMode};
use mqstore::message::{Message, MessageExt};
use mqstore::store::{HashByKeySelector, PullStatus, SendResult, SendStatus, Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use mqstore::PhysicalOffset;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ChildStdout;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Name of the test that becomes the producer in the child process.
const CHILD_TEST: &str = "store_crash_child_process";
/// Store directory for the child; unset in normal test runs.
const ENV_CHILD_DIR: &str = "MQSTORE_STORE_CRASH_CHILD";
/// The child's configuration, see [`ChildConf::encode`].
const ENV_CHILD_CONF: &str = "MQSTORE_STORE_CRASH_CHILD_CONF";
/// Exit code of a child that hit an error.
const CHILD_ERROR_EXIT: i32 = 87;
/// A child is never meant to live this long; it gives up (with
/// [`CHILD_ERROR_EXIT`]) rather than linger if the parent vanished.
const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(60);
/// How long the parent waits for `@@OPENING` / `@@READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Topics and their queue counts.
const TOPICS: [(&str, u32); 2] = [("crash-a", 4), ("crash-b", 3)];
const SEGMENT_SIZE: u64 = 256 << 10;
const MAX_BODY: usize = 8 << 10;
const CQ_UNITS_PER_FILE: u64 = 64;
const MAX_BATCH: u64 = 5;
/// Start a fresh directory once the commit log is this large.
const EPOCH_LIMIT: u64 = 4 << 20;

fn store_opts(mode: FlushMode) -> StoreOptions {
    StoreOptions::default()
        .commit_log_options(CommitLogOptions::default().segment_size(SEGMENT_SIZE).max_record_size(16 << 10))
        .flush_mode(mode)
        .max_body_size(MAX_BODY)
        .max_properties_size(1 << 10)
        .consume_queue_units_per_file(CQ_UNITS_PER_FILE)
}

// ---------------------------------------------------------------------------
// Deterministic message contents.

/// How a message was sent; stored in its body header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `Store::send` (round robin).
    Send = 0,
    /// `send_with_selector(HashByKeySelector)`.
    Selector = 1,
    /// `send_to_queue(seq % queues)`.
    ToQueue = 2,
    /// A member of a `send_batch`.
    Batch = 3,
}

/// This test's body parameters (the format is in `common::crash_body`).
impl BodyKind for Kind {
    const MAGIC: [u8; 4] = *b"MQsk";
    const MAX_BATCH: u64 = MAX_BATCH;

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Send),
            1 => Some(Self::Selector),
            2 => Some(Self::ToQueue),
            3 => Some(Self::Batch),
            _ => None,
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn is_batch(self) -> bool {
        self == Self::Batch
    }

    /// Mostly small, some medium, a few large.
    fn payload_len(seq: u64) -> usize {
        let r = mix(seq ^ 0xB0D7_B0D7);
        let x = (r >> 8) as usize;
        match r % 100 {
            0..=59 => x % 128,
            60..=89 => 128 + x % 1900,
            _ => 2000 + x % (MAX_BODY - BODY_HEADER - 2000),
        }
    }
}

/// What a message's body header says about it.
type Desc = crash_body::Desc<Kind>;

impl Desc {
    /// Decided by the first message of its send call.
    fn topic_index(&self) -> usize {
        (mix(self.first() ^ 0x7091) % TOPICS.len() as u64) as usize
    }

    fn topic(&self) -> &'static str {
        TOPICS[self.topic_index()].0
    }

    fn tags(&self) -> Option<String> {
        (!(mix(self.seq ^ 0x7A65).is_multiple_of(4))).then(|| format!("t{}", self.seq % 5))
    }

    fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if self.kind == Kind::Selector {
            keys.push(format!("k{}", mix(self.seq ^ 0x4E75) % 64));
        }
        if self.seq.is_multiple_of(3) {
            keys.push(format!("s{}", self.seq));
        }
        keys
    }

    fn flag(&self) -> u32 {
        (mix(self.seq) >> 32) as u32
    }

    fn seq_property(&self) -> Option<String> {
        self.seq.is_multiple_of(2).then(|| self.seq.to_string())
    }

    /// The queue the message must be in, when its send picks it.
    fn expected_queue(&self) -> Option<u32> {
        let queues = TOPICS[self.topic_index()].1;
        match self.kind {
            Kind::Selector => {
                let keys = self.keys();
                let h = keys[0].encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
                Some(h.unsigned_abs() % queues)
            }
            Kind::ToQueue => Some((self.seq % u64::from(queues)) as u32),
            Kind::Send | Kind::Batch => None,
        }
    }

    fn message(&self) -> Message {
        let mut m = Message::new(self.topic(), self.body()).with_keys(self.keys()).with_flag(self.flag());
        if let Some(t) = self.tags() {
            m = m.with_tags(t);
        }
        if let Some(p) = self.seq_property() {
            m = m.with_property("seq", p);
        }
        m
    }

    /// Checks everything but the body against what `seq` implies.
    fn check_message(&self, m: &MessageExt) -> Result<(), String> {
        let keys: Vec<&str> = m.keys().collect();
        let want_keys = self.keys();
        let ok = m.topic() == self.topic()
            && m.tags() == self.tags().as_deref()
            && keys == want_keys.iter().map(String::as_str).collect::<Vec<_>>()
            && m.flag() == self.flag()
            && m.property("seq") == self.seq_property().as_deref()
            && m.msg_id().is_some_and(|id| !id.is_empty())
            && self.expected_queue().is_none_or(|q| q == m.queue_id());
        if ok {
            Ok(())
        } else {
            Err(format!(
                "message {} of {self:?} does not carry the attributes of its seq: topic {:?} (want {:?}), \
                 tags {:?} (want {:?}), keys {keys:?} (want {want_keys:?}), flag {:#x} (want {:#x}), seq \
                 property {:?} (want {:?}), msg id {:?}, queue {} (want {:?})",
                describe(m),
                m.topic(),
                self.topic(),
                m.tags(),
                self.tags(),
                m.flag(),
                self.flag(),
                m.property("seq"),
                self.seq_property(),
                m.msg_id(),
                m.queue_id(),
                self.expected_queue()
            ))
        }
    }
}

// ---------------------------------------------------------------------------
// Reports on the child's stdout.

/// One acknowledged message as reported by the child.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ack {
    seq: u64,
    topic: usize,
    queue: u32,
    queue_offset: u64,
    phys: u64,
    msg_id: String,
    body_crc: u32,
    round: u32,
}

fn ack_fields(seq: u64, topic: usize, r: &SendResult, body_crc: u32) -> String {
    format!("{seq} {topic} {} {} {} {} {body_crc:08x}", r.queue_id, r.queue_offset, r.physical_offset.0, r.msg_id)
}

fn ack_line(seq: u64, topic: usize, r: &SendResult, body_crc: u32) -> String {
    let fields = ack_fields(seq, topic, r, body_crc);
    let check = crc32fast::hash(fields.as_bytes());
    format!("@@ACK {fields} {check:08x}\n")
}

/// Where the recovered store ends: the commit log and every queue.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ends {
    log: u64,
    queues: Vec<u64>,
}

impl Ends {
    fn of(store: &Store) -> Result<Self, String> {
        let mut queues = Vec::new();
        for (t, n) in TOPICS {
            for q in 0..n {
                queues.push(store.max_offset(t, q).map_err(|e| format!("max_offset({t}, {q}): {e}"))?);
            }
        }
        Ok(Self { log: store.commit_log().max_offset().0, queues })
    }
}

#[derive(Debug)]
enum Event {
    Opening(Instant),
    Ready(Ends, Instant),
    Ack(Ack),
    /// A send that ended in `FlushDiskTimeout` (not acknowledged).
    Maybe,
    /// A newline-terminated `@@` line that does not parse or check.
    Bad(String),
    /// The final bytes, cut off by the kill (no newline).
    Torn(String),
    ReadError(String),
}

fn parse_line(line: &str, round: u32) -> Option<Event> {
    let at = line.find("@@")?;
    let mut f = line[at..].split_whitespace();
    let bad = || Some(Event::Bad(line.to_string()));
    match f.next()? {
        "@@OPENING" => Some(Event::Opening(Instant::now())),
        "@@MAYBE" => Some(Event::Maybe),
        "@@READY" => {
            let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
            let nq: usize = TOPICS.iter().map(|t| t.1 as usize).sum();
            if v.len() != 1 + nq {
                return bad();
            }
            Some(Event::Ready(Ends { log: v[0], queues: v[1..].to_vec() }, Instant::now()))
        }
        "@@ACK" => {
            let p: Vec<&str> = f.collect();
            if p.len() != 8 {
                return bad();
            }
            let dec = |s: &str| s.parse::<u64>().ok();
            let (Some(seq), Some(topic), Some(queue), Some(queue_offset), Some(phys), Some(body_crc), Some(check)) = (
                dec(p[0]),
                dec(p[1]).map(|t| t as usize).filter(|&t| t < TOPICS.len()),
                dec(p[2]).and_then(|q| u32::try_from(q).ok()),
                dec(p[3]),
                dec(p[4]),
                u32::from_str_radix(p[6], 16).ok(),
                u32::from_str_radix(p[7], 16).ok(),
            ) else {
                return bad();
            };
            let msg_id = p[5].to_string();
            let fields = p[..7].join(" ");
            if crc32fast::hash(fields.as_bytes()) != check {
                return bad();
            }
            Some(Event::Ack(Ack { seq, topic, queue, queue_offset, phys, msg_id, body_crc, round }))
        }
        _ => bad(),
    }
}

fn read_reports(stdout: ChildStdout, round: u32, tx: &Sender<Event>) {
    common::read_report_lines(stdout, |line| match line {
        common::ReportLine::Complete(l) => match parse_line(&l, round) {
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
// The child.

/// Per-round configuration handed to the child.
#[derive(Debug, Clone, Copy)]
struct ChildConf {
    mode: FlushMode,
    threads: u64,
    next_seq: u64,
    seed: u64,
}

impl ChildConf {
    fn encode(&self) -> String {
        format!("{} {} {} {}", u8::from(self.mode == FlushMode::Sync), self.threads, self.next_seq, self.seed)
    }

    fn decode(s: &str) -> Result<Self, String> {
        let v: Vec<u64> = s
            .split_whitespace()
            .map(|x| x.parse().map_err(|e| format!("bad child conf {s:?}: {e}")))
            .collect::<Result<_, _>>()?;
        if v.len() != 4 {
            return Err(format!("bad child conf {s:?}"));
        }
        Ok(Self {
            mode: if v[0] == 1 { FlushMode::Sync } else { FlushMode::Async },
            threads: v[1],
            next_seq: v[2],
            seed: v[3],
        })
    }
}

/// The producer. Returns immediately in a normal test run; in the child it
/// never returns: it is killed, or exits with [`CHILD_ERROR_EXIT`].
#[test]
fn store_crash_child_process() {
    let Some(dir) = std::env::var_os(ENV_CHILD_DIR) else {
        return;
    };
    let err = run_child(Path::new(&dir));
    eprintln!("store crash child: {err}");
    let _ = std::io::stderr().flush();
    std::process::exit(CHILD_ERROR_EXIT);
}

/// Runs until killed; returns the error that stopped it otherwise.
fn run_child(dir: &Path) -> String {
    let conf = match std::env::var(ENV_CHILD_CONF)
        .map_err(|e| format!("{ENV_CHILD_CONF}: {e}"))
        .and_then(|s| ChildConf::decode(&s))
    {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Err(e) = emit("@@OPENING\n") {
        return e;
    }
    let store = match Store::open(dir, store_opts(conf.mode)) {
        Ok(s) => s,
        Err(e) => return format!("open failed: {e} ({e:?})"),
    };
    let ends = match Ends::of(&store) {
        Ok(e) => e,
        Err(e) => return e,
    };
    for (name, queues) in TOPICS {
        if store.topic(name).is_none() {
            if let Err(e) = store.create_topic(TopicConfig::new(name, queues)) {
                return format!("create_topic({name}): {e} ({e:?})");
            }
        }
    }
    let queue_ends: Vec<String> = ends.queues.iter().map(u64::to_string).collect();
    if let Err(e) = emit(&format!("@@READY {} {}\n", ends.log, queue_ends.join(" "))) {
        return e;
    }
    let next = Arc::new(AtomicU64::new(conf.next_seq));
    let (tx, rx) = mpsc::channel::<String>();
    for t in 0..conf.threads {
        let store = store.clone();
        let next = next.clone();
        let tx = tx.clone();
        let rng = Rng(mix(conf.seed ^ t) | 1);
        let spawned = std::thread::Builder::new().name(format!("producer-{t}")).spawn(move || {
            let e = produce(&store, &next, rng);
            let _ = tx.send(e);
        });
        if let Err(e) = spawned {
            return format!("spawning a producer: {e}");
        }
    }
    drop(tx);
    match rx.recv_timeout(CHILD_MAX_LIFETIME) {
        Ok(e) => e,
        Err(e) => format!("no producer failed and no kill came ({e})"),
    }
}

/// One producer thread: sends forever, reporting every acknowledgement.
fn produce(store: &Store, next: &AtomicU64, mut rng: Rng) -> String {
    loop {
        let (kind, n) = match rng.below(100) {
            0..=39 => (Kind::Send, 1),
            40..=59 => (Kind::Selector, 1),
            60..=74 => (Kind::ToQueue, 1),
            _ => (Kind::Batch, 2 + rng.below(MAX_BATCH - 1)),
        };
        let first = next.fetch_add(n, Ordering::Relaxed);
        let descs: Vec<Desc> = (0..n).map(|i| Desc { seq: first + i, kind, idx: i as u8, n: n as u8 }).collect();
        let msgs: Vec<Message> = descs.iter().map(Desc::message).collect();
        let crcs: Vec<u32> = msgs.iter().map(|m| crc32fast::hash(m.body())).collect();
        let d0 = descs[0];
        let sent = match kind {
            Kind::Send => store.send(msgs[0].clone()).map(|r| vec![r]),
            Kind::Selector => store.send_with_selector(msgs[0].clone(), &HashByKeySelector).map(|r| vec![r]),
            Kind::ToQueue => store.send_to_queue(msgs[0].clone(), d0.expected_queue().unwrap_or(0)).map(|r| vec![r]),
            Kind::Batch => store.send_batch(msgs),
        };
        let results = match sent {
            Ok(r) => r,
            Err(e) => return format!("send of {d0:?} failed: {e} ({e:?})"),
        };
        if results.len() != descs.len() {
            return format!("send of {d0:?} returned {} results for {} messages", results.len(), descs.len());
        }
        let mut out = String::new();
        for ((d, r), crc) in descs.iter().zip(&results).zip(&crcs) {
            match r.status {
                SendStatus::SendOk => out.push_str(&ack_line(d.seq, d.topic_index(), r, *crc)),
                // Not acknowledged as durable: the checker counts it as maybe
                // stored. (The replica statuses cannot occur without one.)
                SendStatus::FlushDiskTimeout | SendStatus::FlushSlaveTimeout | SendStatus::SlaveNotAvailable => {
                    out.push_str("@@MAYBE\n")
                }
            }
        }
        if let Err(e) = emit(&out) {
            return e;
        }
    }
}

// ---------------------------------------------------------------------------
// The parent.

/// When the parent kills the child.
#[derive(Debug, Clone, Copy)]
enum KillPlan {
    /// This many microseconds after `@@OPENING` (while the store recovers).
    DuringOpen(u64),
    /// This many milliseconds after `@@READY`.
    AfterReady(u64),
}

/// Where each message found in the recovered store is.
#[derive(Debug, Clone)]
struct Found {
    desc: Desc,
    topic: usize,
    queue: u32,
    queue_offset: u64,
    phys: u64,
    msg_id: String,
    body_crc: u32,
}

#[derive(Debug, Default)]
struct Totals {
    acks: u64,
    maybe: u64,
    torn_reports: u64,
    killed_in_open: u64,
    killed_before_ready: u64,
    messages_verified: u64,
    unacked_survivors: u64,
    partial_batches: u64,
    in_place: u64,
    epochs: u64,
    max_log: u64,
    verify_time: Duration,
}

struct Harness {
    name: &'static str,
    mode: FlushMode,
    base: PathBuf,
    rng: Rng,
    epoch: u32,
    /// Every message acknowledged in this epoch, by seq.
    acked: BTreeMap<u64, Ack>,
    next_seq: u64,
    /// What the next child's recovery must report.
    expected: Option<Ends>,
    /// Every message of this epoch fully checked in an earlier round, by
    /// seq (its body is only compared by CRC afterwards).
    known: HashMap<u64, Found>,
    totals: Totals,
    verbose: bool,
}

fn rounds() -> u32 {
    env_u64("MQSTORE_STORE_CRASH_ROUNDS").map_or(50, |n| n.clamp(1, 1_000_000) as u32)
}

fn run_variant(name: &'static str, mode: FlushMode, seed_salt: u64) {
    let rounds = rounds();
    let base_seed = common::seed();
    let seed = base_seed ^ seed_salt;
    println!("store crash test `{name}`: MQSTORE_SEED={base_seed}, {rounds} rounds");
    let dir = tempfile::Builder::new().prefix(&format!("mqstore-store-crash-{name}-")).tempdir().unwrap();
    let mut h = Harness {
        name,
        mode,
        base: dir.path().to_path_buf(),
        rng: Rng(mix(seed) | 1),
        epoch: 0,
        acked: BTreeMap::new(),
        next_seq: 0,
        expected: None,
        known: HashMap::new(),
        totals: Totals::default(),
        verbose: env_u64("MQSTORE_STORE_CRASH_VERBOSE").is_some_and(|v| v != 0),
    };
    std::fs::create_dir_all(h.epoch_dir()).unwrap();
    let started = Instant::now();
    for round in 0..rounds {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| h.round(round)));
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(msg)) => msg,
            Err(payload) => format!("panic during the round: {}", panic_text(&*payload)),
        };
        let acks: String = h
            .acked
            .values()
            .map(|a| {
                format!(
                    "{} {} {} {} {} {} {:08x} {}\n",
                    a.seq, TOPICS[a.topic].0, a.queue, a.queue_offset, a.phys, a.msg_id, a.body_crc, a.round
                )
            })
            .collect();
        let _ = std::fs::write(
            h.base.join("acked.txt"),
            format!("# seq topic queue queue_offset phys msg_id body_crc round (epoch {})\n{acks}", h.epoch),
        );
        let kept = dir.keep();
        panic!(
            "store crash test `{name}` FAILED in round {round} of {rounds} (epoch {}), \
             MQSTORE_SEED={base_seed}; store kept at {} (live store in {}, the parent's \
             recovered copy in {}, acknowledgements in acked.txt)\n{failure}",
            h.epoch,
            kept.display(),
            h.epoch_dir().display(),
            h.verify_dir().display(),
        );
    }
    let t = &h.totals;
    println!(
        "store crash test `{name}`: {rounds} rounds in {:.1?} (verification {:.1?}), \
         MQSTORE_SEED={base_seed}: {} acknowledged messages checked, {} flush timeouts, \
         {} messages verified, {} unacknowledged survivors, {} partial unacknowledged batches, \
         {} torn report lines ignored, {} kills aimed at open ({} before ready), {} in-place \
         clean reopens, {} epochs, largest log {} KiB",
        started.elapsed(),
        t.verify_time,
        t.acks,
        t.maybe,
        t.messages_verified,
        t.unacked_survivors,
        t.partial_batches,
        t.torn_reports,
        t.killed_in_open,
        t.killed_before_ready,
        t.in_place,
        t.epochs + 1,
        t.max_log >> 10,
    );
    assert!(t.acks > 0, "no send was ever acknowledged");
}

/// What verification of one recovered copy found.
struct Verified {
    ends: Ends,
    messages: u64,
    max_seq: Option<u64>,
    unacked: u64,
    partial_batches: u64,
    /// Every message found, by seq.
    found: HashMap<u64, Found>,
}

impl Harness {
    fn epoch_dir(&self) -> PathBuf {
        self.base.join(format!("epoch-{}", self.epoch))
    }

    fn verify_dir(&self) -> PathBuf {
        self.base.join("verify")
    }

    fn round(&mut self, round: u32) -> Result<(), String> {
        let conf = ChildConf {
            mode: self.mode,
            threads: 1 + self.rng.below(3),
            next_seq: self.next_seq,
            seed: self.rng.next(),
        };
        let plan = match self.rng.below(100) {
            0..=9 => KillPlan::DuringOpen(self.rng.below(12_000)),
            10..=19 => KillPlan::AfterReady(0),
            _ => KillPlan::AfterReady(2 + self.rng.below(149)),
        };
        let in_place = self.rng.below(100) < 15;

        let common::TestChild { mut guard, stdout, stderr: err_reader } = common::spawn_test_child(
            CHILD_TEST,
            &[(ENV_CHILD_DIR, self.epoch_dir().into_os_string()), (ENV_CHILD_CONF, conf.encode().into())],
        )?;
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || read_reports(stdout, round, &tx));

        let mut events = Vec::new();
        let waited = wait_and_kill(&rx, plan, &mut events);
        let mut child = guard.0.take().ok_or("child vanished")?;
        let _ = child.kill();
        let status = child.wait().map_err(|e| format!("reaping the child: {e}"))?;
        drop(guard);
        reader.join().map_err(|_| "stdout reader panicked".to_string())?;
        events.extend(rx.try_iter());
        let child_stderr = err_reader.join().unwrap_or_default();
        let with_stderr = |msg: String| {
            format!(
                "{msg}\nchild exit status: {status:?}\nchild conf: {conf:?}, kill plan {plan:?}\nchild stderr:\n{child_stderr}"
            )
        };
        waited.map_err(with_stderr)?;
        if status.signal() != Some(libc::SIGKILL) {
            return Err(with_stderr("the child exited on its own instead of being killed".into()));
        }

        // Gather what the child reported.
        let mut ready = None;
        let mut torn = None;
        let mut new_acks = Vec::new();
        for ev in events {
            match ev {
                Event::Opening(_) => {}
                Event::Ready(r, _) => ready = Some(r),
                Event::Ack(a) => new_acks.push(a),
                Event::Maybe => self.totals.maybe += 1,
                Event::Torn(line) => {
                    self.totals.torn_reports += 1;
                    torn = Some(line);
                }
                Event::Bad(line) => {
                    return Err(with_stderr(format!("a complete report line failed to parse or check: {line:?}")))
                }
                Event::ReadError(e) => return Err(with_stderr(format!("reading the child's stdout: {e}"))),
            }
        }
        if matches!(plan, KillPlan::DuringOpen(_)) {
            self.totals.killed_in_open += 1;
            if ready.is_none() {
                self.totals.killed_before_ready += 1;
            }
        }
        if let (Some(r), Some(expected)) = (&ready, &self.expected) {
            if r != expected {
                return Err(with_stderr(format!(
                    "the child recovered to {r:?} but the parent's recovery of the same bytes gave {expected:?}"
                )));
            }
        }
        for a in &new_acks {
            if let Some(prev) = self.acked.insert(a.seq, a.clone()) {
                return Err(format!("seq {} was acknowledged twice: {prev:?} and {a:?}", a.seq));
            }
        }
        self.totals.acks += new_acks.len() as u64;

        // Verify a copy, leaving the crashed state for the next child.
        let verify = self.verify_dir();
        replace_with_copy(&self.epoch_dir(), &verify)?;
        let t0 = Instant::now();
        let v = self.verify(&verify, &new_acks).map_err(|e| {
            format!(
                "{e}\nchild ready report: {ready:?}\nchild conf: {conf:?}, kill plan {plan:?}\n\
                 acknowledged this round: {} (seq {:?}..={:?})\nchild stderr:\n{child_stderr}",
                new_acks.len(),
                new_acks.iter().map(|a| a.seq).min(),
                new_acks.iter().map(|a| a.seq).max(),
            )
        })?;
        self.totals.verify_time += t0.elapsed();
        self.totals.messages_verified += v.messages;
        self.totals.unacked_survivors += v.unacked;
        self.totals.partial_batches += v.partial_batches;
        self.totals.max_log = self.totals.max_log.max(v.ends.log);
        if self.verbose {
            println!(
                "[{}] round {round}: conf {conf:?}, kill {plan:?}, ready {ready:?}, {} acks, \
                 recovered {:?}, {} messages ({} unacknowledged), in place {in_place}, torn report {torn:?}",
                self.name,
                new_acks.len(),
                v.ends,
                v.messages,
                v.unacked,
            );
        }
        self.next_seq = self.next_seq.max(v.max_seq.map_or(0, |m| m + 1));
        if in_place {
            // Recover the real directory too and close it cleanly.
            self.totals.in_place += 1;
            let store = Store::open(self.epoch_dir(), store_opts(self.mode))
                .map_err(|e| format!("in-place reopen failed: {e} ({e:?})"))?;
            let ends = Ends::of(&store)?;
            if ends != v.ends {
                return Err(format!("in-place recovery gave {ends:?} but the copy's gave {:?}", v.ends));
            }
            store.close().map_err(|e| format!("closing the in-place store: {e}"))?;
        }
        self.expected = Some(v.ends.clone());
        self.known = v.found;

        if v.ends.log > EPOCH_LIMIT {
            std::fs::remove_dir_all(self.epoch_dir()).map_err(|e| format!("removing the old epoch: {e}"))?;
            self.epoch += 1;
            self.totals.epochs += 1;
            self.acked.clear();
            self.known.clear();
            self.expected = None;
            std::fs::create_dir_all(self.epoch_dir()).map_err(|e| format!("creating the new epoch: {e}"))?;
        }
        Ok(())
    }

    /// Recovers the copy at `dir` and checks it against everything
    /// acknowledged so far in this epoch.
    fn verify(&self, dir: &Path, new_acks: &[Ack]) -> Result<Verified, String> {
        let store = Store::open(dir, store_opts(self.mode))
            .map_err(|e| format!("reopening after the kill failed: {e} ({e:?})"))?;
        let result = verify_store(&store, &self.acked, new_acks, &self.known);
        let closed = store.close().map_err(|e| format!("closing the verified copy: {e}"));
        let v = result?;
        closed?;
        Ok(v)
    }
}

/// Waits for the moment the plan names, then returns (the caller kills).
/// Events seen on the way are appended to `events`.
fn wait_and_kill(rx: &Receiver<Event>, plan: KillPlan, events: &mut Vec<Event>) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = match rx.recv_timeout(left) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("the child did not reach the kill point of {plan:?} within {READY_TIMEOUT:?}"))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(format!("the child closed stdout before the kill point of {plan:?}"))
            }
        };
        let at = match (&ev, plan) {
            (Event::Opening(t), KillPlan::DuringOpen(us)) => Some(*t + Duration::from_micros(us)),
            (Event::Ready(_, t), KillPlan::AfterReady(ms)) => Some(*t + Duration::from_millis(ms)),
            _ => None,
        };
        events.push(ev);
        if let Some(at) = at {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            return Ok(());
        }
    }
}

/// Pulls every queue of the recovered store end to end and checks it, the
/// commit log and the acknowledgements.
fn verify_store(
    store: &Store,
    acked: &BTreeMap<u64, Ack>,
    new_acks: &[Ack],
    known: &HashMap<u64, Found>,
) -> Result<Verified, String> {
    let ends = Ends::of(store)?;
    let all = TagFilter::All;
    let mut by_seq: HashMap<u64, Found> = HashMap::new();
    let mut by_phys: HashMap<u64, u64> = HashMap::new();
    let mut by_msg_id: HashMap<String, u64> = HashMap::new();
    let mut max_seq = None;
    for (ti, (topic, queues)) in TOPICS.iter().enumerate() {
        if store.topic(topic).is_none() {
            // A kill before (or during) create_topic: nothing may be stored
            // for the topic then; the log scan below checks that.
            for q in 0..*queues {
                let end = store.max_offset(topic, q).map_err(|e| e.to_string())?;
                if end != 0 {
                    return Err(format!("topic {topic} does not exist but queue {q} ends at {end}"));
                }
            }
            continue;
        }
        for q in 0..*queues {
            let (min, max) = queue_bounds(store, topic, q)?;
            let mut pos = min;
            let mut prev_phys = None;
            while pos < max {
                let r = pull_below_max(store, topic, q, pos, 32, (min, max))?;
                for m in &r.messages {
                    if m.queue_offset().0 != pos || m.queue_id() != q || m.topic() != *topic {
                        return Err(format!(
                            "pull of {topic}/{q} at position {pos} returned {}: queue offsets are not contiguous",
                            describe(m)
                        ));
                    }
                    let phys = m.physical_offset().0;
                    if prev_phys.is_some_and(|p| p >= phys) {
                        return Err(format!(
                            "{} follows a message at physical offset {prev_phys:?} in its queue: queue order \
                             is not log order",
                            describe(m)
                        ));
                    }
                    prev_phys = Some(phys);
                    let body_crc = crc32fast::hash(m.body());
                    let seq_in_header = header_seq(m.body());
                    // A body identical to one fully checked in an earlier
                    // round (same seq, place and CRC) need not be rebuilt.
                    let desc = match seq_in_header.and_then(|s| known.get(&s)) {
                        Some(k) if (k.phys, k.body_crc) == (phys, body_crc) => k.desc,
                        _ => Desc::decode(m.body()).map_err(|e| format!("{}: {e}", describe(m)))?,
                    };
                    desc.check_message(m)?;
                    let msg_id = m.msg_id().unwrap_or_default().to_string();
                    let found =
                        Found { desc, topic: ti, queue: q, queue_offset: pos, phys, msg_id: msg_id.clone(), body_crc };
                    if let Some(prev) = by_seq.insert(desc.seq, found) {
                        return Err(format!("seq {} is stored twice: {prev:?} and {}", desc.seq, describe(m)));
                    }
                    if let Some(prev) = by_msg_id.insert(msg_id.clone(), desc.seq) {
                        return Err(format!("msg id {msg_id} is used by seq {prev} and by seq {}", desc.seq));
                    }
                    by_phys.insert(phys, desc.seq);
                    max_seq = max_seq.max(Some(desc.seq));
                    pos += 1;
                }
                if r.next_offset != pos {
                    return Err(format!("pull of {topic}/{q} ended at {pos} but said next offset {}", r.next_offset));
                }
            }
            let r = store.pull(topic, q, max, 32, &all).map_err(|e| format!("pull({topic}, {q}, {max}): {e}"))?;
            if r.status != PullStatus::NoNewMessage || !r.messages.is_empty() {
                return Err(format!(
                    "pull of {topic}/{q} at its max offset {max} returned {:?} with {} messages (first {:?})",
                    r.status,
                    r.messages.len(),
                    r.messages.first().map(describe)
                ));
            }
            let r =
                store.pull(topic, q, max + 1, 32, &all).map_err(|e| format!("pull({topic}, {q}, {}): {e}", max + 1))?;
            if !r.messages.is_empty() || r.status == PullStatus::Found {
                return Err(format!("pull of {topic}/{q} past its max offset {max} returned {:?}", r.status));
            }
        }
    }

    // Nothing at or past the recovered end of the log.
    let log = store.commit_log();
    if let Ok(rec) = log.read(PhysicalOffset(ends.log)) {
        return Err(format!("a read at the recovered log end {} returned {rec:?}", ends.log));
    }
    if let Some(item) = log.iter(PhysicalOffset(ends.log)).next() {
        return Err(format!("iterating from the recovered log end {} yielded {item:?}", ends.log));
    }

    // Every commit-log record is reachable through its queue.
    let mut records = 0u64;
    for item in log.iter(PhysicalOffset(0)) {
        let rec = item.map_err(|e| format!("iterating the commit log failed after {records} records: {e} ({e:?})"))?;
        let Some(seq) = by_phys.get(&rec.offset().0) else {
            return Err(format!(
                "commit-log record at {} ({}/{} queue offset {}, {} bytes) is not reachable through its queue",
                rec.offset().0,
                rec.topic(),
                rec.queue_id(),
                rec.queue_offset(),
                rec.size()
            ));
        };
        let f = &by_seq[seq];
        if rec.topic() != TOPICS[f.topic].0 || rec.queue_id() != f.queue || rec.queue_offset() != f.queue_offset {
            return Err(format!("commit-log record at {} disagrees with its queue entry {f:?}", rec.offset().0));
        }
        records += 1;
    }
    if records != by_seq.len() as u64 {
        return Err(format!("the queues hold {} messages but the commit log {records} records", by_seq.len()));
    }

    // Batches: the surviving members are a prefix, contiguous in one queue.
    let mut partial_batches = 0;
    for f in by_seq.values() {
        let d = f.desc;
        if d.kind != Kind::Batch {
            continue;
        }
        if d.idx > 0 {
            let prev = by_seq.get(&(d.seq - 1)).filter(|p| p.desc.first() == d.first());
            match prev {
                Some(p) if p.topic == f.topic && p.queue == f.queue && p.queue_offset + 1 == f.queue_offset => {}
                other => {
                    return Err(format!("batch member {f:?} does not directly follow member {} ({other:?})", d.idx - 1))
                }
            }
        }
        if u64::from(d.idx) + 1 < u64::from(d.n) && !by_seq.contains_key(&(d.seq + 1)) {
            // The batch's survivors end here, before its last member.
            if acked.contains_key(&d.seq) {
                return Err(format!("acknowledged batch member {f:?} is the last survivor of its batch of {}", d.n));
            }
            partial_batches += 1;
        }
    }

    // Every acknowledged message is there, unchanged.
    let mut missing = Vec::new();
    for a in acked.values() {
        match by_seq.get(&a.seq) {
            None => missing.push(a),
            Some(f) => {
                if (f.topic, f.queue, f.queue_offset, f.phys, &f.msg_id, f.body_crc)
                    != (a.topic, a.queue, a.queue_offset, a.phys, &a.msg_id, a.body_crc)
                {
                    return Err(format!("acknowledged {a:?} was found as {f:?}"));
                }
            }
        }
    }
    if !missing.is_empty() {
        let mut msg = format!(
            "{} acknowledged messages are missing after recovery (recovered {ends:?}, {} messages):",
            missing.len(),
            by_seq.len()
        );
        for a in missing.iter().take(20) {
            let (topic, _) = TOPICS[a.topic];
            let found = store
                .pull(topic, a.queue, a.queue_offset, 1, &TagFilter::All)
                .map(|r| format!("{:?} {:?}", r.status, r.messages.first().map(describe)))
                .unwrap_or_else(|e| format!("error: {e}"));
            let at = log.read(PhysicalOffset(a.phys)).map_or_else(|e| format!("error: {e}"), |r| format!("{r:?}"));
            msg.push_str(&format!("\n  {a:?}; pull at its queue offset: {found}; commit log at its offset: {at}"));
        }
        return Err(msg);
    }
    for a in new_acks {
        let (topic, _) = TOPICS[a.topic];
        let r = store
            .pull(topic, a.queue, a.queue_offset, 1, &TagFilter::All)
            .map_err(|e| format!("pull of acknowledged {a:?} failed: {e} ({e:?})"))?;
        let ok = r.status == PullStatus::Found
            && r.messages.len() == 1
            && r.messages[0].queue_offset().0 == a.queue_offset
            && r.messages[0].msg_id() == Some(a.msg_id.as_str())
            && crc32fast::hash(r.messages[0].body()) == a.body_crc
            && Desc::decode(r.messages[0].body()).is_ok_and(|d| d.seq == a.seq);
        if !ok {
            return Err(format!(
                "pull of acknowledged {a:?} at its queue offset returned {:?} {:?}",
                r.status,
                r.messages.iter().map(describe).collect::<Vec<_>>()
            ));
        }
        // The index survived the kill too: the unique id and every key lead
        // to the message (and a key's lookup only to messages with it).
        let by_id = store.message_by_id(&a.msg_id).map_err(|e| format!("message_by_id of {a:?}: {e}"))?;
        if by_id.as_ref().map(|m| m.physical_offset().0) != Some(a.phys) {
            return Err(format!("message_by_id of acknowledged {a:?} found {:?}", by_id.as_ref().map(describe)));
        }
        for key in r.messages[0].keys() {
            let hits = store
                .query_by_key(topic, key, 0, u64::MAX, mqstore::store::MAX_QUERY_RESULTS)
                .map_err(|e| format!("query_by_key({topic}, {key}) for {a:?}: {e}"))?;
            if hits.iter().any(|m| !m.keys().any(|k| k == key)) {
                return Err(format!("query_by_key({topic}, {key}) returned a message without that key"));
            }
            if hits.len() < mqstore::store::MAX_QUERY_RESULTS && !hits.iter().any(|m| m.physical_offset().0 == a.phys) {
                return Err(format!("query_by_key({topic}, {key}) misses acknowledged {a:?}"));
            }
        }
    }
    let unacked = by_seq.keys().filter(|s| !acked.contains_key(s)).count() as u64;
    Ok(Verified { ends, messages: by_seq.len() as u64, max_seq, unacked, partial_batches, found: by_seq })
}

#[test]
fn sync_sends_survive_sigkill() {
    run_variant("sync", FlushMode::Sync, 0);
}

#[test]
fn async_sends_survive_sigkill() {
    run_variant("async", FlushMode::Async, 0x5A5A_A5A5_F0F0_0F0F);
}
