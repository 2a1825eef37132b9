#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Crash test for delayed delivery and the retry path: a child process
//! sends delayed messages (delay levels, delivery times, and plain ones)
//! while a clustering consumer in the same process fails some of them
//! (sending them back through the retry topic, and the poison ones on to
//! the dead-letter queue), and is killed with SIGKILL at a random moment:
//! during delayed delivery, during send-back, or while recovering.
//!
//! One directory per flush mode; rounds chain on it. The child runs on a
//! [`ManualClock`] that a thread moves 100 ms per real millisecond, from a
//! start the parent raises by about three hours each round, so whatever was
//! waiting when the previous child died is due as soon as the next one has
//! recovered. Delay levels are `1s 2s 5s 10s` and delivery times reach up
//! to 60 s ahead (several hops through the levels).
//!
//! The child prints `@@READY` once open, `@@ACK <seq>` after each send
//! that returned `SendOk`, and `@@CONSUMED <seq>` when its listener is
//! about to return success for message `seq`. Bodies are
//! `seq:<n>:<crc32 of "seq:<n>">`, so garbage is recognised. Message `seq`
//! is poison (always fails) when `seq % 7 == 0`, and fails its first two
//! deliveries when `seq % 3 == 0`; `max_reconsume_times` is 2.
//!
//! After the last round the parent opens the directory itself, with the
//! clock far ahead, runs the same group to the end, and checks that no
//! acknowledged message was lost: every acknowledged non-poison message
//! was consumed (by some child or by the parent), and every acknowledged
//! poison message is in the dead-letter queue, exactly once, and was never
//! consumed.
//! Every consumed body must be well formed. Messages may be delivered more
//! than once (at-least-once across crashes), never zero times.
//!
//! Rounds: 25 per flush mode by default, `MQSTORE_DELAY_CRASH_ROUNDS=n` to
//! change; `MQSTORE_SEED` fixes the random choices.

mod common;

use common::Rng;
use mqstore::commitlog::{CommitLogOptions, FlushMode};
use mqstore::consumer::{ConsumeContext, ConsumeFrom, ConsumeStatus};
use mqstore::message::{Message, MessageExt};
use mqstore::retry::DelayLevels;
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use mqstore::{Clock, ManualClock};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHILD_TEST: &str = "delay_crash_child_process";
const ENV_DIR: &str = "MQSTORE_DELAY_CRASH_CHILD";
const ENV_CONF: &str = "MQSTORE_DELAY_CRASH_CONF";
const TOPIC: &str = "t";
const GROUP: &str = "g";
/// Clock start of round `r`: `BASE + r * ROUND_SPAN`.
const BASE: u64 = 1_700_000_000_000;
const ROUND_SPAN: u64 = 10_000_000;

fn opts(mode: FlushMode, clock: Arc<ManualClock>) -> StoreOptions {
    let cl = CommitLogOptions::default().segment_size(256 << 10).max_record_size(16 << 10).clock(clock);
    StoreOptions::default()
        .commit_log_options(cl)
        .flush_mode(mode)
        .max_body_size(1 << 10)
        .max_properties_size(2 << 10)
        .consume_queue_units_per_file(64)
        .offset_persist_interval(Duration::from_millis(5))
        .delay_poll_interval(Duration::from_millis(1))
        .delay_levels(DelayLevels::parse("1s 2s 5s 10s").unwrap())
}

fn body(seq: u64) -> String {
    let head = format!("seq:{seq}");
    format!("{head}:{}", crc32fast::hash(head.as_bytes()))
}

/// The seq of a well-formed body.
fn parse(body: &[u8]) -> Result<u64, String> {
    let s = std::str::from_utf8(body).map_err(|_| format!("non-UTF-8 body {body:?}"))?;
    let seq: u64 = s
        .strip_prefix("seq:")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .ok_or(format!("garbage body {s:?}"))?;
    if body != self::body(seq).as_bytes() {
        return Err(format!("garbage body {s:?}"));
    }
    Ok(seq)
}

fn poison(seq: u64) -> bool {
    seq.is_multiple_of(7)
}

/// The listener of both the children and the parent's final run: poison
/// always fails, every third message fails its first two deliveries.
fn listener(
    report: impl Fn(u64) + Send + Sync + 'static,
    errors: Arc<Mutex<Vec<String>>>,
) -> impl Fn(&[MessageExt], &ConsumeContext) -> ConsumeStatus + Send + Sync + 'static {
    move |msgs: &[MessageExt], _: &ConsumeContext| {
        let mut status = ConsumeStatus::Success;
        for m in msgs {
            match parse(m.body()) {
                Ok(seq) if poison(seq) || (seq.is_multiple_of(3) && m.reconsume_times() < 2) => {
                    status = ConsumeStatus::ReconsumeLater;
                }
                Ok(_) => {}
                Err(e) => errors.lock().unwrap().push(e),
            }
        }
        if status == ConsumeStatus::Success {
            for m in msgs {
                if let Ok(seq) = parse(m.body()) {
                    report(seq);
                }
            }
        }
        status
    }
}

fn emit(s: &str) {
    let _ = common::emit(s);
}

/// The child. Returns at once in a normal test run; in the child it never
/// returns: it is killed, or exits with status 3 on an error.
#[test]
fn delay_crash_child_process() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let err = run_child(Path::new(&dir));
    eprintln!("delay crash child: {err}");
    std::process::exit(3);
}

fn run_child(dir: &Path) -> String {
    let conf = std::env::var(ENV_CONF).unwrap_or_default();
    let parts: Vec<u64> = conf.split(',').filter_map(|p| p.parse().ok()).collect();
    let [mode, start, next_seq, seed] = parts[..] else { return format!("bad conf {conf:?}") };
    let mode = if mode == 1 { FlushMode::Sync } else { FlushMode::Async };
    let clock = Arc::new(ManualClock::new(start));
    let c = clock.clone();
    std::thread::spawn(move || loop {
        c.advance_ms(100);
        std::thread::sleep(Duration::from_millis(1));
    });
    let store = match Store::open(dir, opts(mode, clock.clone())) {
        Ok(s) => s,
        Err(e) => return format!("open: {e} ({e:?})"),
    };
    if store.topic(TOPIC).is_none() {
        if let Err(e) = store.create_topic(TopicConfig::new(TOPIC, 2)) {
            return format!("create_topic: {e}");
        }
    }
    let errors = Arc::new(Mutex::new(Vec::new()));
    let consumer = store.push_consumer(GROUP).subscribe(TOPIC, "*").and_then(|b| {
        // From the first offset: a group whose first member died before
        // committing anything must not skip what was sent.
        b.max_reconsume_times(2)
            .consume_from(ConsumeFrom::FirstOffset)
            .listener(listener(|seq| emit(&format!("@@CONSUMED {seq}\n")), errors.clone()))
            .start()
    });
    let _consumer = match consumer {
        Ok(c) => c,
        Err(e) => return format!("consumer: {e}"),
    };
    emit("@@READY\n");
    let mut rng = Rng(seed | 1);
    for seq in next_seq.. {
        if let Some(e) = errors.lock().unwrap().first() {
            return e.clone();
        }
        let now = clock.now_ms();
        let m = Message::new(TOPIC, body(seq));
        let m = match rng.below(4) {
            0 => m,
            1 => m.with_deliver_at(now + rng.below(60_000)),
            _ => m.with_delay_level(1 + rng.below(4) as u8),
        };
        match store.send(m) {
            Ok(r) if r.status == mqstore::store::SendStatus::SendOk => emit(&format!("@@ACK {seq}\n")),
            Ok(_) => {}
            Err(e) => return format!("send {seq}: {e}"),
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    "ran out of sequence numbers".into()
}

#[derive(Default)]
struct Seen {
    acked: BTreeSet<u64>,
    consumed: BTreeSet<u64>,
    next_seq: u64,
}

enum Event {
    Ack(u64),
    Consumed(u64),
}

fn parse_report(l: &str) -> Option<common::Report<Event>> {
    let mut it = l.split_whitespace();
    match (it.next(), it.next().and_then(|n| n.parse().ok())) {
        (Some("@@READY"), _) => Some(common::Report::Ready),
        (Some("@@ACK"), Some(n)) => Some(common::Report::Event(Event::Ack(n))),
        (Some("@@CONSUMED"), Some(n)) => Some(common::Report::Event(Event::Consumed(n))),
        _ => None,
    }
}

fn round(dir: &Path, mode: FlushMode, r: u64, rng: &mut Rng, seen: &mut Seen) -> Result<(), String> {
    let conf =
        format!("{},{},{},{}", u64::from(mode == FlushMode::Sync), BASE + r * ROUND_SPAN, seen.next_seq, rng.next());
    let child = common::spawn_test_child(
        CHILD_TEST,
        &[(ENV_DIR, dir.as_os_str().to_owned()), (ENV_CONF, conf.clone().into())],
    )?;
    let events = common::sigkill_round(child, rng, &format!("round {r} (conf {conf})"), parse_report)?;
    for e in events {
        match e {
            Event::Ack(n) => {
                seen.acked.insert(n);
                seen.next_seq = seen.next_seq.max(n + 1);
            }
            Event::Consumed(n) => {
                seen.consumed.insert(n);
            }
        }
    }
    // Unacknowledged sends may have been stored: skip past them too.
    seen.next_seq += 1_000;
    Ok(())
}

/// Opens the directory with the clock far ahead, runs the group until
/// every acknowledged message is accounted for, and checks.
fn drain_and_check(dir: &Path, mode: FlushMode, rounds: u64, seen: &mut Seen) -> Result<(), String> {
    let clock = Arc::new(ManualClock::new(BASE + (rounds + 1) * ROUND_SPAN));
    let store = Store::open(dir, opts(mode, clock.clone())).map_err(|e| format!("final open: {e}"))?;
    let consumed = Arc::new(Mutex::new(BTreeSet::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let c2 = consumed.clone();
    let consumer = store
        .push_consumer(GROUP)
        .subscribe(TOPIC, "*")
        .and_then(|b| {
            b.max_reconsume_times(2)
                .consume_from(ConsumeFrom::FirstOffset)
                .listener(listener(
                    move |seq| {
                        c2.lock().unwrap().insert(seq);
                    },
                    errors.clone(),
                ))
                .start()
        })
        .map_err(|e| format!("final consumer: {e}"))?;
    // Dead letters by seq; a seq dead-lettered twice is an error (copies
    // of a retry chain duplicated by a crash share the message id).
    let dead = || -> Result<BTreeSet<u64>, String> {
        let letters = store.dlq_list(GROUP, 0, usize::MAX).map_err(|e| e.to_string())?;
        let mut out = BTreeSet::new();
        for d in &letters {
            let seq = parse(d.message.body())?;
            if !out.insert(seq) {
                return Err(format!("seq {seq} dead-lettered twice"));
            }
        }
        Ok(out)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        clock.advance_ms(1_000);
        let got = consumed.lock().unwrap().clone();
        let dlq = dead()?;
        let missing: Vec<u64> = seen
            .acked
            .iter()
            .copied()
            .filter(|s| if poison(*s) { !dlq.contains(s) } else { !got.contains(s) && !seen.consumed.contains(s) })
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    consumer.shutdown().map_err(|e| e.to_string())?;
    let errs = errors.lock().unwrap().clone();
    let all_consumed: BTreeSet<u64> = consumed.lock().unwrap().union(&seen.consumed).copied().collect();
    let poison_consumed: Vec<u64> = all_consumed.iter().copied().filter(|s| poison(*s)).collect();
    let dlq = dead()?;
    let stats = store.schedule_stats();
    store.close().map_err(|e| e.to_string())?;
    if !errs.is_empty() {
        return Err(format!("garbage delivered: {:?}", &errs[..errs.len().min(5)]));
    }
    if !missing.is_empty() {
        return Err(format!(
            "{} acknowledged messages lost (first {:?}); schedule {stats:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    if !poison_consumed.is_empty() {
        return Err(format!("poison messages reported consumed: {poison_consumed:?}"));
    }
    let acked_poison = seen.acked.iter().filter(|s| poison(**s)).count();
    eprintln!(
        "{mode:?}: {rounds} rounds, {} acknowledged ({acked_poison} poison), all consumed or dead-lettered; {} dead letters",
        seen.acked.len(),
        dlq.len()
    );
    Ok(())
}

fn run_mode(mode: FlushMode) {
    let rounds: u64 = std::env::var("MQSTORE_DELAY_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(25);
    let seed = common::seed();
    let mut rng = Rng(seed | 1);
    let tmp = tempfile::Builder::new().prefix("mqstore-delay-crash-").tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut seen = Seen::default();
    let result = (0..rounds)
        .try_for_each(|r| round(&dir, mode, r, &mut rng, &mut seen))
        .and_then(|()| drain_and_check(&dir, mode, rounds, &mut seen));
    if let Err(e) = result {
        let kept = tmp.keep();
        panic!("delay crash test ({mode:?}) FAILED, MQSTORE_SEED={seed}; store kept at {}\n{e}", kept.display());
    }
}

#[test]
fn delayed_and_sent_back_messages_survive_sigkill_async() {
    run_mode(FlushMode::Async);
}

#[test]
fn delayed_and_sent_back_messages_survive_sigkill_sync() {
    run_mode(FlushMode::Sync);
}
