//! The child process: opens the store, then runs producers, a clustering
//! push consumer (whose listener fails some deliveries at random, so they
//! are sent back through the schedule and retry topics) and a thread that
//! reports the group's committed offsets, until the parent kills it.

use super::msg::{store_opts, Desc, Kind, GROUP, MAX_BATCH, MAX_RECONSUME, TOPICS};
use super::report::{ack_line, bad_line, committed_line, consumed_line};
use crate::common::{emit, mix, Rng};
use mqstore::commitlog::FlushMode;
use mqstore::consumer::{ConsumeContext, ConsumeFrom, ConsumeStatus};
use mqstore::dlq::retry_topic;
use mqstore::message::{Message, MessageExt};
use mqstore::store::{HashByKeySelector, SendStatus, Store};
use mqstore::topic::TopicConfig;
use mqstore::Clock;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Exit code of a child that hit an error.
pub const CHILD_ERROR_EXIT: i32 = 87;
/// A child is never meant to live this long; it gives up rather than
/// linger if the parent vanished.
const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(60);
/// One delivery in this many (per listener call) fails.
const FAIL_ONE_IN: u64 = 6;

/// Per-round configuration handed to the child.
#[derive(Debug, Clone, Copy)]
pub struct ChildConf {
    /// Flush mode.
    pub mode: FlushMode,
    /// Producer threads.
    pub producers: u64,
    /// First seq to use.
    pub next_seq: u64,
    /// Listener batch size.
    pub batch: u64,
    /// Seed of the random choices.
    pub seed: u64,
}

impl ChildConf {
    /// The form handed over in the environment.
    pub fn encode(&self) -> String {
        let mode = u8::from(self.mode == FlushMode::Sync);
        format!("{mode} {} {} {} {}", self.producers, self.next_seq, self.batch, self.seed)
    }

    fn decode(s: &str) -> Result<Self, String> {
        let v: Vec<u64> = s
            .split_whitespace()
            .map(|x| x.parse().map_err(|e| format!("bad conf {s:?}: {e}")))
            .collect::<Result<_, _>>()?;
        let [mode, producers, next_seq, batch, seed] = v[..] else { return Err(format!("bad conf {s:?}")) };
        let mode = if mode == 1 { FlushMode::Sync } else { FlushMode::Async };
        Ok(Self { mode, producers, next_seq, batch, seed })
    }
}

/// In a listener or a reporter thread: report or die (the parent is gone
/// if stdout fails).
fn emit_or_exit(s: &str) {
    if let Err(e) = emit(s) {
        eprintln!("whole-store crash child: {e}");
        std::process::exit(CHILD_ERROR_EXIT);
    }
}

/// Runs until killed; returns the error that stopped it otherwise.
pub fn run(dir: &Path, conf: &str) -> String {
    match run_inner(dir, conf) {
        Ok(()) => "no thread failed and no kill came".into(),
        Err(e) => e,
    }
}

fn run_inner(dir: &Path, conf: &str) -> Result<(), String> {
    let conf = ChildConf::decode(conf)?;
    emit("@@OPENING\n")?;
    let store = Store::open(dir, store_opts(conf.mode)).map_err(|e| format!("open failed: {e} ({e:?})"))?;
    emit("@@READY\n")?;
    for (name, queues) in TOPICS {
        if store.topic(name).is_none() {
            store.create_topic(TopicConfig::new(name, queues)).map_err(|e| format!("create_topic({name}): {e}"))?;
        }
    }
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let _consumer = start_consumer(&store, &conf)?;
    spawn_offset_reporter(&store)?;
    let next = Arc::new(AtomicU64::new(conf.next_seq));
    for t in 0..conf.producers {
        let (store, next, tx) = (store.clone(), next.clone(), tx.clone());
        let rng = Rng(mix(conf.seed ^ (t + 1)) | 1);
        std::thread::Builder::new()
            .name(format!("producer-{t}"))
            .spawn(move || {
                let _ = tx.send(produce(&store, &next, rng));
            })
            .map_err(|e| format!("spawning a producer: {e}"))?;
    }
    drop(tx);
    Err(rx.recv_timeout(CHILD_MAX_LIFETIME).unwrap_or_else(|e| format!("no thread failed and no kill came ({e})")))
}

/// The group: both topics, from their first offsets (a group whose first
/// member died before committing must not skip what was sent), failing
/// one listener call in [`FAIL_ONE_IN`].
fn start_consumer(store: &Store, conf: &ChildConf) -> Result<mqstore::consumer::PushConsumer, String> {
    let calls = AtomicU64::new(0);
    let seed = conf.seed;
    let listener = move |msgs: &[MessageExt], _: &ConsumeContext| {
        let call = calls.fetch_add(1, Ordering::Relaxed);
        let success = !mix(seed ^ call.wrapping_mul(0x2545_F491)).is_multiple_of(FAIL_ONE_IN);
        let mut out = String::new();
        for m in msgs {
            match Desc::decode(m.body()) {
                Ok(d) => {
                    out.push_str(&consumed_line(success, m.stored_topic(), m.queue_id(), m.queue_offset().0, d.seq))
                }
                Err(e) => out.push_str(&bad_line(&format!("{}: {e}", crate::common::describe(m)))),
            }
        }
        // Written before returning: the commit that follows can never be
        // ahead of what the parent read.
        emit_or_exit(&out);
        if success {
            ConsumeStatus::Success
        } else {
            ConsumeStatus::ReconsumeLater
        }
    };
    let mut b = store.push_consumer(GROUP);
    for (t, _) in TOPICS {
        b = b.subscribe(t, "*").map_err(|e| format!("subscribe {t}: {e}"))?;
    }
    b.consume_from(ConsumeFrom::FirstOffset)
        .max_reconsume_times(MAX_RECONSUME)
        .consume_threads(2)
        .consume_message_batch_max_size(conf.batch as usize)
        .pull_batch_size(8)
        .reconsume_delay(Duration::from_millis(50))
        .listener(listener)
        .start()
        .map_err(|e| format!("starting the consumer: {e} ({e:?})"))
}

/// Every 2 ms, reports each committed offset of the group that moved.
fn spawn_offset_reporter(store: &Store) -> Result<(), String> {
    let store = store.clone();
    let mut queues: Vec<(String, u32)> =
        TOPICS.iter().flat_map(|(t, n)| (0..*n).map(move |q| (t.to_string(), q))).collect();
    queues.push((retry_topic(GROUP), 0));
    let mut last: Vec<Option<u64>> = vec![None; queues.len()];
    std::thread::Builder::new()
        .name("offset-reporter".into())
        .spawn(move || loop {
            let mut out = String::new();
            for ((t, q), last) in queues.iter().zip(&mut last) {
                let c = store.committed_offset(GROUP, t, *q);
                if c != *last {
                    *last = c;
                    if let Some(c) = c {
                        out.push_str(&committed_line(t, *q, c));
                    }
                }
            }
            if !out.is_empty() {
                emit_or_exit(&out);
            }
            std::thread::sleep(Duration::from_millis(2));
        })
        .map(|_| ())
        .map_err(|e| format!("spawning the offset reporter: {e}"))
}

/// One producer thread: sends forever, reporting every acknowledgement.
fn produce(store: &Store, next: &AtomicU64, mut rng: Rng) -> String {
    let clock = mqstore::SystemClock;
    loop {
        let (kind, n) = match rng.below(100) {
            0..=34 => (Kind::Send, 1),
            35..=54 => (Kind::Selector, 1),
            55..=74 => (Kind::Batch, 2 + rng.below(MAX_BATCH - 1)),
            75..=89 => (Kind::DelayLevel, 1),
            _ => (Kind::DeliverAt, 1),
        };
        let first = next.fetch_add(n, Ordering::Relaxed);
        let descs: Vec<Desc> = (0..n).map(|i| Desc { seq: first + i, kind, idx: i as u8, n: n as u8 }).collect();
        let now = clock.now_ms();
        let msgs: Vec<Message> = descs.iter().map(|d| d.message(now)).collect();
        let crcs: Vec<u32> = msgs.iter().map(|m| crc32fast::hash(m.body())).collect();
        let sent = match kind {
            Kind::Selector => store.send_with_selector(msgs[0].clone(), &HashByKeySelector).map(|r| vec![r]),
            Kind::Batch => store.send_batch(msgs),
            Kind::Send | Kind::DelayLevel | Kind::DeliverAt => store.send(msgs[0].clone()).map(|r| vec![r]),
        };
        let results = match sent {
            Ok(r) if r.len() == descs.len() => r,
            Ok(r) => return format!("send of {:?} returned {} results", descs[0], r.len()),
            Err(e) => return format!("send of {:?} failed: {e} ({e:?})", descs[0]),
        };
        let mut out = String::new();
        for ((d, r), crc) in descs.iter().zip(&results).zip(&crcs) {
            // A flush timeout is "maybe stored": not acknowledged.
            if r.status == SendStatus::SendOk {
                out.push_str(&ack_line(d.seq, r, *crc));
            }
        }
        if let Err(e) = emit(&out) {
            return e;
        }
        std::thread::sleep(Duration::from_micros(rng.below(400)));
    }
}
