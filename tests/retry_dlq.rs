#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Retry and dead-letter paths with a manual clock: escalation through
//! delay level 3 + n, exactly `max_reconsume_times` retries then one dead
//! letter, orderly listeners dead-lettering instead of blocking, and the
//! DLQ API (count, list, resend, purge).

use mqstore::commitlog::CommitLogOptions;
use mqstore::consumer::{ConsumeContext, ConsumeStatus, OrderlyStatus};
use mqstore::dlq::{DlqSelect, ResendTarget};
use mqstore::message::{Message, MessageExt};
use mqstore::retry::{DelayLevels, SCHEDULE_TOPIC};
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use mqstore::{Clock, Error, ManualClock};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000_000;
const SETTLE: Duration = Duration::from_millis(40);

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Store {
    let cl = CommitLogOptions::default().segment_size(1 << 20).max_record_size(16 << 10).clock(clock.clone());
    let opts = StoreOptions::default()
        .commit_log_options(cl)
        .max_body_size(4 << 10)
        .max_properties_size(2 << 10)
        .consume_queue_units_per_file(256)
        .delay_poll_interval(Duration::from_millis(2));
    Store::open(dir, opts).unwrap()
}

/// (clock at delivery, topic shown, reconsume times, body) of every call.
type Log = Arc<Mutex<Vec<(u64, String, u32, String)>>>;

/// A store on a manual clock at `T0` with topic "t" of `queues` queues,
/// and an empty delivery log.
fn setup(queues: u32) -> (tempfile::TempDir, Arc<ManualClock>, Store, Log) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir.path(), &clock);
    store.create_topic(TopicConfig::new("t", queues)).unwrap();
    (dir, clock, store, Log::default())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn entry(clock: &ManualClock, m: &MessageExt) -> (u64, String, u32, String) {
    (clock.now_ms(), m.topic().to_string(), m.reconsume_times(), String::from_utf8(m.body().to_vec()).unwrap())
}

#[test]
fn failures_escalate_through_level_3_plus_n_then_dead_letter_once() {
    let (_dir, clock, store, log) = setup(1);
    let (l, c) = (log.clone(), clock.clone());
    let consumer = store
        .push_consumer("g")
        .subscribe("t", "*")
        .unwrap()
        .listener(move |msgs: &[MessageExt], _: &ConsumeContext| {
            for m in msgs {
                l.lock().unwrap().push(entry(&c, m));
            }
            ConsumeStatus::ReconsumeLater
        })
        .start()
        .unwrap();
    let sent = store.send(Message::new("t", "poison").with_tags("A").with_key("k")).unwrap();
    wait_for("first delivery", || log.lock().unwrap().len() == 1);
    let levels = DelayLevels::default();
    // Delivery k + 1 comes back after level 3 + k (capped at 18), and not a
    // millisecond before.
    for k in 0..16u32 {
        // The listener logs a delivery before it returns ReconsumeLater and
        // the send-back reads the clock after that: moving the clock first
        // would shift the retry's due time.
        wait_for("send-back", || sent_back(&store) == u64::from(k) + 1);
        let failed_at = log.lock().unwrap()[k as usize].0;
        let level = (3 + k as usize).min(18);
        let due = failed_at + levels.delay(level).unwrap().as_millis() as u64;
        clock.set_ms(due - 1);
        std::thread::sleep(SETTLE);
        assert_eq!(log.lock().unwrap().len(), k as usize + 1, "retry {} early", k + 1);
        clock.set_ms(due);
        wait_for("retry", || log.lock().unwrap().len() == k as usize + 2);
    }
    // 1 delivery + 16 retries; the 17th failure dead-letters it.
    wait_for("dead letter", || store.dlq_count("g").unwrap() == 1);
    clock.advance_ms(30 * 86_400_000);
    std::thread::sleep(SETTLE);
    let got = log.lock().unwrap().clone();
    assert_eq!(got.len(), 17);
    for (k, (_, topic, times, body)) in got.iter().enumerate() {
        assert_eq!((topic.as_str(), *times, body.as_str()), ("t", k as u32, "poison"));
    }
    assert_eq!(store.dlq_count("g").unwrap(), 1);
    let d = &store.dlq_list("g", 0, 10).unwrap()[0];
    assert_eq!((d.msg_id.as_str(), d.original_topic.as_str(), d.reconsume_times), (sent.msg_id.as_str(), "t", 16));
    assert_eq!(d.original_offset_msg_id, sent.offset_msg_id);
    assert_eq!((d.message.tags(), d.message.body().as_ref()), (Some("A"), &b"poison"[..]));
    assert_eq!(d.failed_at_ms, clock.now_ms() - 30 * 86_400_000);
    consumer.shutdown().unwrap();
    // Every queue of the group is committed to its end: nothing pending.
    assert_eq!(store.committed_offset("g", "t", 0), Some(1));
    assert_eq!(store.committed_offset("g", "%RETRY%g", 0), Some(16));
    store.close().unwrap();
}

/// Entries ever written to the schedule topic (every send-back of the
/// escalation test lands there).
fn sent_back(store: &Store) -> u64 {
    (0..18).map(|q| store.max_offset(SCHEDULE_TOPIC, q).unwrap_or(0)).sum()
}

/// A listener failing every message whose body starts with `bad`.
fn picky(
    clock: &Arc<ManualClock>,
    log: &Log,
) -> impl Fn(&[MessageExt], &ConsumeContext) -> ConsumeStatus + Send + Sync {
    let (l, c) = (log.clone(), clock.clone());
    move |msgs: &[MessageExt], _: &ConsumeContext| {
        let mut status = ConsumeStatus::Success;
        for m in msgs {
            l.lock().unwrap().push(entry(&c, m));
            if m.body().starts_with(b"bad") {
                status = ConsumeStatus::ReconsumeLater;
            }
        }
        status
    }
}

/// Advances the clock an hour per millisecond until `f` holds.
fn run_until(clock: &ManualClock, what: &str, mut f: impl FnMut() -> bool) {
    wait_for(what, || {
        clock.advance_ms(3_600_000);
        f()
    });
}

#[test]
fn exactly_max_retries_then_one_dead_letter_and_never_both() {
    let (_dir, clock, store, log) = setup(2);
    let consumer = store
        .push_consumer("g")
        .subscribe("t", "*")
        .unwrap()
        .max_reconsume_times(2)
        .consume_message_batch_max_size(1)
        .listener(picky(&clock, &log))
        .start()
        .unwrap();
    for i in 0..50 {
        let body = if i % 10 == 3 { format!("bad-{i}") } else { format!("ok-{i}") };
        store.send(Message::new("t", body)).unwrap();
    }
    run_until(&clock, "five dead letters", || store.dlq_count("g").unwrap() == 5);
    // Keep the clock moving a while: nothing more happens.
    for _ in 0..20 {
        clock.advance_ms(86_400_000);
        std::thread::sleep(Duration::from_millis(2));
    }
    consumer.shutdown().unwrap();
    let got = log.lock().unwrap().clone();
    for i in 0..50 {
        let body = if i % 10 == 3 { format!("bad-{i}") } else { format!("ok-{i}") };
        let n = got.iter().filter(|e| e.3 == body).count();
        // Bad ones: first delivery + exactly 2 retries. Good ones: once.
        assert_eq!(n, if i % 10 == 3 { 3 } else { 1 }, "{body}");
    }
    let dead: Vec<String> = store
        .dlq_list("g", 0, 100)
        .unwrap()
        .iter()
        .map(|d| String::from_utf8(d.message.body().to_vec()).unwrap())
        .collect();
    let mut dead_sorted = dead.clone();
    dead_sorted.sort();
    assert_eq!(dead_sorted, ["bad-13", "bad-23", "bad-3", "bad-33", "bad-43"]);
    // A restarted member gets nothing again, and dead-letters nothing again.
    let consumer = store
        .push_consumer("g")
        .subscribe("t", "*")
        .unwrap()
        .max_reconsume_times(2)
        .listener(picky(&clock, &log))
        .start()
        .unwrap();
    clock.advance_ms(86_400_000);
    std::thread::sleep(SETTLE);
    consumer.shutdown().unwrap();
    assert_eq!(log.lock().unwrap().len(), got.len());
    assert_eq!(store.dlq_count("g").unwrap(), 5);
    store.close().unwrap();
}

#[test]
fn orderly_listener_dead_letters_a_poison_message_instead_of_blocking() {
    let (_dir, clock, store, log) = setup(1);
    let (l, c) = (log.clone(), clock.clone());
    let consumer = store
        .push_consumer("g")
        .subscribe("t", "*")
        .unwrap()
        .max_reconsume_times(3)
        .suspend_interval(Duration::from_millis(1_000))
        .orderly_listener(move |msgs: &[MessageExt], _: &ConsumeContext| {
            l.lock().unwrap().push(entry(&c, &msgs[0]));
            if msgs[0].body().starts_with(b"bad") {
                OrderlyStatus::SuspendCurrentQueueAMoment
            } else {
                OrderlyStatus::Success
            }
        })
        .start()
        .unwrap();
    for b in ["a", "bad", "b", "c"] {
        store.send(Message::new("t", b)).unwrap();
    }
    run_until(&clock, "all consumed", || log.lock().unwrap().iter().filter(|e| e.3 == "c").count() == 1);
    consumer.shutdown().unwrap();
    let order: Vec<String> = log.lock().unwrap().iter().map(|e| e.3.clone()).collect();
    // In order; the poison message 1 + 3 times, then dead-lettered.
    assert_eq!(order, ["a", "bad", "bad", "bad", "bad", "b", "c"]);
    assert_eq!(store.dlq_count("g").unwrap(), 1);
    assert_eq!(store.dlq_list("g", 0, 1).unwrap()[0].reconsume_times, 3);
    assert_eq!(store.committed_offset("g", "t", 0), Some(4));
    store.close().unwrap();
}

#[test]
fn dead_letters_are_listed_resent_and_purged() {
    let (dir, clock, store, log) = setup(1);
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (l, c, f) = (log.clone(), clock.clone(), fail.clone());
    let listener = move |msgs: &[MessageExt], _: &ConsumeContext| {
        for m in msgs {
            l.lock().unwrap().push(entry(&c, m));
        }
        if f.load(std::sync::atomic::Ordering::SeqCst) {
            ConsumeStatus::ReconsumeLater
        } else {
            ConsumeStatus::Success
        }
    };
    let consumer = store
        .push_consumer("g")
        .subscribe("t", "*")
        .unwrap()
        .max_reconsume_times(0)
        .listener(listener)
        .start()
        .unwrap();
    let a = store.send(Message::new("t", "a").with_property("p", "1")).unwrap();
    store.send(Message::new("t", "b")).unwrap();
    wait_for("two dead letters", || store.dlq_count("g").unwrap() == 2);
    assert_eq!(log.lock().unwrap().len(), 2, "max 0: no retry at all");

    // Unknown ids change nothing.
    assert!(matches!(
        store.dlq_resend("g", &DlqSelect::Id("nope".into()), ResendTarget::OriginalTopic),
        Err(Error::InvalidArgument(_))
    ));
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    // One back to its topic: delivered again with its id and properties.
    assert_eq!(store.dlq_resend("g", &DlqSelect::Id(a.msg_id.into()), ResendTarget::OriginalTopic).unwrap(), 1);
    wait_for("resent a", || log.lock().unwrap().len() == 3);
    assert_eq!(store.max_offset("t", 0).unwrap(), 3);
    let again = store.pull("t", 0, 2, 1, &mqstore::store::TagFilter::All).unwrap().messages.remove(0);
    assert_eq!((again.msg_id(), again.property("p"), again.reconsume_times()), (Some(a.msg_id.as_str()), Some("1"), 0));
    // All through the retry topic: only this group sees them, under "t".
    assert_eq!(store.dlq_resend("g", &DlqSelect::All, ResendTarget::RetryTopic).unwrap(), 2);
    wait_for("resent both", || log.lock().unwrap().len() == 5);
    let tail: Vec<(String, String)> = log.lock().unwrap()[3..].iter().map(|e| (e.1.clone(), e.3.clone())).collect();
    assert!(tail.contains(&("t".into(), "a".into())) && tail.contains(&("t".into(), "b".into())), "{tail:?}");
    assert_eq!(store.dlq_count("g").unwrap(), 2, "resending keeps the dead letters");
    // Resent messages that fail again are dead-lettered again (once each).
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(store.dlq_resend("g", &DlqSelect::All, ResendTarget::OriginalTopic).unwrap(), 2);
    wait_for("dead again", || store.dlq_count("g").unwrap() == 4);
    std::thread::sleep(SETTLE);
    assert_eq!(store.dlq_count("g").unwrap(), 4);
    let resends: Vec<Option<String>> = store
        .dlq_list("g", 0, 10)
        .unwrap()
        .iter()
        .map(|d| d.message.property("DLQ_RESENDS").map(String::from))
        .collect();
    assert_eq!(resends, [None, None, Some("1".into()), Some("1".into())]);
    assert_eq!(store.dlq_purge("g").unwrap(), 4);
    assert_eq!(store.dlq_count("g").unwrap(), 0);
    assert!(store.dlq_list("g", 0, 10).unwrap().is_empty());
    consumer.shutdown().unwrap();
    store.close().unwrap();
    // Purged stays purged across reopen.
    let store = open(dir.path(), &clock);
    assert_eq!(store.dlq_count("g").unwrap(), 0);
    assert!(matches!(store.dlq_count("bad group"), Err(Error::InvalidArgument(_))));
    store.close().unwrap();
}
