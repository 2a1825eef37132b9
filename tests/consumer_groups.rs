#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Push consumers: delivery, clustering and broadcasting, rebalance while
//! messages flow, orderly listeners, re-delivery after ReconsumeLater and
//! panics, flow control and starting positions.

use mqstore::commitlog::CommitLogOptions;
use mqstore::consumer::{ConsumeContext, ConsumeFrom, ConsumeStatus, MessageModel, OrderlyStatus};
use mqstore::message::{Message, MessageExt};
use mqstore::store::{HashByKeySelector, MessageQueue, Store, StoreOptions};
use mqstore::topic::TopicConfig;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn opts() -> StoreOptions {
    StoreOptions::default()
        .commit_log_options(CommitLogOptions::default().segment_size(1 << 20).max_record_size(16 << 10))
        .max_body_size(4 << 10)
        .max_properties_size(1 << 10)
        .consume_queue_units_per_file(256)
}

/// The queues of `v` that are not a retry topic's (clustering members are
/// assigned their group's retry queue too).
fn user(v: Vec<MessageQueue>) -> Vec<MessageQueue> {
    v.into_iter().filter(|q| !q.topic.starts_with("%RETRY%")).collect()
}

/// Every delivery, by consumer name: (body, queue, queue offset, attempt).
type Log = Arc<Mutex<Vec<(String, String, u32, u64, u32)>>>;

fn recorder(name: &str, log: &Log) -> impl Fn(&[MessageExt], &ConsumeContext) -> ConsumeStatus + Send + Sync + 'static {
    let (name, log) = (name.to_string(), log.clone());
    move |msgs: &[MessageExt], ctx: &ConsumeContext| {
        let mut l = log.lock().unwrap();
        for m in msgs {
            let body = String::from_utf8(m.body().to_vec()).unwrap();
            l.push((name.clone(), body, m.queue_id(), m.queue_offset().0, ctx.delivery_attempt));
        }
        ConsumeStatus::Success
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn bodies(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|e| e.1.clone()).collect()
}

#[test]
fn a_clustering_group_gets_every_message_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 8)).unwrap();
    let log: Log = Arc::default();
    let consumers: Vec<_> = (0..3)
        .map(|i| {
            store
                .push_consumer("g")
                .subscribe("t", "*")
                .unwrap()
                .instance_name(&format!("c{i}"))
                .listener(recorder(&format!("c{i}"), &log))
                .consume_threads(2)
                .start()
                .unwrap()
        })
        .collect();
    // 8 queues over 3 members, averagely: 3 + 3 + 2, none shared.
    let mut all: Vec<_> = consumers.iter().flat_map(|c| user(c.assigned_queues())).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 8);
    assert_eq!(consumers.iter().map(|c| user(c.assigned_queues()).len()).sum::<usize>(), 8);
    for i in 0..2000 {
        store.send(Message::new("t", format!("m{i}"))).unwrap();
    }
    wait_until("2000 deliveries", || log.lock().unwrap().len() >= 2000);
    std::thread::sleep(Duration::from_millis(100));
    let mut got = bodies(&log);
    got.sort();
    let mut want: Vec<_> = (0..2000).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(got, want, "each message exactly once");
    // Each queue went to one member only.
    let mut owner: HashMap<u32, String> = HashMap::new();
    for (name, _, q, _, _) in log.lock().unwrap().iter() {
        assert_eq!(owner.entry(*q).or_insert_with(|| name.clone()), name);
    }
    for c in consumers {
        c.shutdown().unwrap();
    }
    for q in 0..8 {
        assert_eq!(store.committed_offset("g", "t", q), Some(store.max_offset("t", q).unwrap()));
    }
    store.close().unwrap();
}

#[test]
fn members_joining_and_leaving_skip_nothing_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 6)).unwrap();
    let log: Log = Arc::default();
    let start = |i: usize| {
        store
            .push_consumer("g")
            .subscribe("t", "*")
            .unwrap()
            .instance_name(&format!("c{i}"))
            .consume_from(ConsumeFrom::FirstOffset)
            .listener(recorder(&format!("c{i}"), &log))
            .start()
            .unwrap()
    };
    let producer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..3000 {
                store.send(Message::new("t", format!("m{i}"))).unwrap();
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })
    };
    let mut live = vec![start(0)];
    for round in 1..8 {
        std::thread::sleep(Duration::from_millis(15));
        if round % 3 == 0 && live.len() > 1 {
            live.remove(0).shutdown().unwrap();
        } else {
            live.push(start(round));
        }
    }
    producer.join().unwrap();
    wait_until("3000 deliveries", || log.lock().unwrap().len() >= 3000);
    std::thread::sleep(Duration::from_millis(100));
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for b in bodies(&log) {
        *count.entry(b).or_default() += 1;
    }
    assert_eq!(count.len(), 3000, "nothing skipped");
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    if let Some((b, _)) = dups.first() {
        // Show who delivered what in that queue, to explain the duplicate.
        let l = log.lock().unwrap();
        let q = l.iter().find(|e| &e.1 == *b).unwrap().2;
        let seq: Vec<String> = l.iter().filter(|e| e.2 == q).map(|e| format!("{}:{}", e.0, e.3)).collect();
        eprintln!("duplicate {b} in queue {q}: {}", seq.join(" "));
    }
    assert!(dups.is_empty(), "hand-over commits before the next owner starts, so no duplicates: {dups:?}");
    for c in live {
        c.shutdown().unwrap();
    }
    store.close().unwrap();
}

#[test]
fn broadcasting_delivers_everything_to_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 3)).unwrap();
    let log: Log = Arc::default();
    let consumers: Vec<_> = (0..3)
        .map(|i| {
            store
                .push_consumer("b")
                .subscribe("t", "*")
                .unwrap()
                .message_model(MessageModel::Broadcasting)
                .instance_name(&format!("b{i}"))
                .listener(recorder(&format!("b{i}"), &log))
                .start()
                .unwrap()
        })
        .collect();
    for c in &consumers {
        assert_eq!(user(c.assigned_queues()).len(), 3);
    }
    for i in 0..300 {
        store.send(Message::new("t", format!("m{i}"))).unwrap();
    }
    wait_until("900 deliveries", || log.lock().unwrap().len() >= 900);
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..3 {
        let mut mine: Vec<_> =
            log.lock().unwrap().iter().filter(|e| e.0 == format!("b{i}")).map(|e| e.1.clone()).collect();
        mine.sort();
        let mut want: Vec<_> = (0..300).map(|i| format!("m{i}")).collect();
        want.sort();
        assert_eq!(mine, want, "member b{i}");
    }
    for c in consumers {
        c.shutdown().unwrap();
    }
    // Each member keeps its own offsets.
    assert_eq!(store.committed_offset("b%b1", "t", 0), Some(store.max_offset("t", 0).unwrap()));
    store.close().unwrap();
}

/// Moves `clock` forward by 10 s every millisecond until the returned
/// guard drops, so retries sent back through the delay levels come due.
fn run_clock(clock: Arc<mqstore::ManualClock>) -> impl Drop {
    struct Stop(Arc<std::sync::atomic::AtomicBool>, Option<std::thread::JoinHandle<()>>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
            if let Some(h) = self.1.take() {
                h.join().unwrap();
            }
        }
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            clock.advance_ms(10_000);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    Stop(stop, Some(h))
}

#[test]
fn reconsume_later_and_panics_redeliver_without_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(mqstore::ManualClock::new(1_000));
    let cl = CommitLogOptions::default().segment_size(1 << 20).max_record_size(16 << 10).clock(clock.clone());
    let opts = opts().commit_log_options(cl).delay_poll_interval(Duration::from_millis(1));
    let store = Store::open(dir.path(), opts).unwrap();
    let _clock = run_clock(clock);
    store.create_topic(TopicConfig::new("t", 2)).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let log: Log = Arc::default();
    let (c2, l2) = (calls.clone(), log.clone());
    let consumer = store
        .push_consumer("g")
        .subscribe("t", "*")
        .unwrap()
        .consume_from(ConsumeFrom::FirstOffset)
        .reconsume_delay(Duration::from_millis(5))
        .listener(move |msgs: &[MessageExt], ctx: &ConsumeContext| {
            let n = c2.fetch_add(1, Ordering::SeqCst);
            if n % 5 == 1 {
                panic!("listener failure {n}");
            }
            if n % 5 == 3 {
                return ConsumeStatus::ReconsumeLater;
            }
            for m in msgs {
                l2.lock().unwrap().push((
                    String::new(),
                    String::from_utf8(m.body().to_vec()).unwrap(),
                    m.queue_id(),
                    m.queue_offset().0,
                    // Failed messages come back through the retry topic
                    // with their reconsume count.
                    ctx.delivery_attempt + m.reconsume_times(),
                ));
            }
            ConsumeStatus::Success
        })
        .start()
        .unwrap();
    for i in 0..200 {
        store.send(Message::new("t", format!("m{i}"))).unwrap();
    }
    wait_until("200 successes", || log.lock().unwrap().len() >= 200);
    consumer.shutdown().unwrap();
    let mut got = bodies(&log);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 200);
    assert!(log.lock().unwrap().iter().any(|e| e.4 > 1), "some deliveries were re-deliveries");
    for q in 0..2 {
        assert_eq!(store.committed_offset("g", "t", q), Some(store.max_offset("t", q).unwrap()));
    }
    // Retries went through the group's retry topic, and nothing was
    // dead-lettered (each message failed at most a few times).
    assert!(store.max_offset("%RETRY%g", 0).unwrap() > 0);
    assert_eq!(store.dlq_count("g").unwrap(), 0);
    store.close().unwrap();
}

#[test]
fn orderly_listeners_keep_per_queue_order_through_suspends_and_rebalances() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 4)).unwrap();
    let log: Log = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let start = |i: usize| {
        let (log, calls) = (log.clone(), calls.clone());
        let name = format!("o{i}");
        store
            .push_consumer("og")
            .subscribe("t", "*")
            .unwrap()
            .instance_name(&name)
            .consume_from(ConsumeFrom::FirstOffset)
            .suspend_interval(Duration::from_millis(3))
            .orderly_listener(move |msgs: &[MessageExt], _ctx: &ConsumeContext| {
                if calls.fetch_add(1, Ordering::SeqCst) % 7 == 3 {
                    return OrderlyStatus::SuspendCurrentQueueAMoment;
                }
                let m = &msgs[0];
                log.lock().unwrap().push((
                    name.clone(),
                    String::from_utf8(m.body().to_vec()).unwrap(),
                    m.queue_id(),
                    m.queue_offset().0,
                    0,
                ));
                OrderlyStatus::Success
            })
            .start()
            .unwrap()
    };
    let mut live = vec![start(0), start(1)];
    for i in 0..400 {
        let key = format!("k{}", i % 10);
        store.send_with_selector(Message::new("t", format!("{key}:{i}")).with_key(&key), &HashByKeySelector).unwrap();
        if i == 150 {
            live.push(start(2));
        }
        if i == 300 {
            live.remove(0).shutdown().unwrap();
        }
    }
    wait_until("400 in-order deliveries", || log.lock().unwrap().len() >= 400);
    std::thread::sleep(Duration::from_millis(50));
    let entries = log.lock().unwrap().clone();
    assert_eq!(entries.len(), 400, "orderly hand-over neither skips nor repeats");
    // Per queue, offsets strictly increase in delivery order.
    let mut last: HashMap<u32, u64> = HashMap::new();
    for (_, _, q, off, _) in &entries {
        if let Some(prev) = last.insert(*q, *off) {
            assert_eq!(*off, prev + 1, "queue {q} out of order");
        }
    }
    // Per key, the sequence numbers increase.
    let mut by_key: HashMap<String, u64> = HashMap::new();
    for (_, body, ..) in &entries {
        let (k, n) = body.split_once(':').unwrap();
        let n: u64 = n.parse().unwrap();
        if let Some(prev) = by_key.insert(k.to_string(), n) {
            assert!(n > prev, "key {k}: {n} after {prev}");
        }
    }
    for c in live {
        c.shutdown().unwrap();
    }
    store.close().unwrap();
}

#[test]
fn a_new_group_starts_where_consume_from_says() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    for i in 0..10 {
        store.send(Message::new("t", format!("old{i}"))).unwrap();
    }
    wait_until("dispatch", || store.max_offset("t", 0).unwrap() == 10);
    let last: Log = Arc::default();
    let first: Log = Arc::default();
    let c_last =
        store.push_consumer("last").subscribe("t", "*").unwrap().listener(recorder("l", &last)).start().unwrap();
    let c_first = store
        .push_consumer("first")
        .subscribe("t", "*")
        .unwrap()
        .consume_from(ConsumeFrom::FirstOffset)
        .listener(recorder("f", &first))
        .start()
        .unwrap();
    store.send(Message::new("t", "new")).unwrap();
    wait_until("deliveries", || !last.lock().unwrap().is_empty() && first.lock().unwrap().len() >= 11);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(bodies(&last), ["new"]);
    assert_eq!(first.lock().unwrap().len(), 11);
    c_last.shutdown().unwrap();
    c_first.shutdown().unwrap();
    store.close().unwrap();
}

#[test]
fn bad_consumer_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    let ok = |_: &[MessageExt], _: &ConsumeContext| ConsumeStatus::Success;
    assert!(store.push_consumer("g").subscribe("t", "a || ").is_err());
    assert!(store.push_consumer("bad group").subscribe("t", "*").unwrap().listener(ok).start().is_err());
    assert!(store.push_consumer("g").subscribe("nope", "*").unwrap().listener(ok).start().is_err());
    assert!(store.push_consumer("g").subscribe("t", "*").unwrap().start().is_err(), "no listener");
    assert!(store.push_consumer("g").listener(ok).start().is_err(), "no subscription");
    let c = store.push_consumer("g").subscribe("t", "*").unwrap().instance_name("x").listener(ok).start().unwrap();
    assert!(
        store.push_consumer("g").subscribe("t", "*").unwrap().instance_name("x").listener(ok).start().is_err(),
        "duplicate member name"
    );
    c.shutdown().unwrap();
    store.close().unwrap();
}

#[test]
fn consumers_follow_topic_changes_and_store_close_commits_their_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 2)).unwrap();
    let log: Log = Arc::default();
    let c = store
        .push_consumer("g")
        .subscribe("t", "*")
        .unwrap()
        .consume_from(ConsumeFrom::FirstOffset)
        .listener(recorder("c", &log))
        .start()
        .unwrap();
    assert_eq!(user(c.assigned_queues()).len(), 2);
    // More queues: the consumer gets them at once, not on the 20 s tick.
    store.create_topic(TopicConfig::new("t", 4)).unwrap();
    assert_eq!(user(c.assigned_queues()).len(), 4);
    for i in 0..100 {
        store.send(Message::new("t", format!("m{i}"))).unwrap();
    }
    wait_until("100 deliveries", || log.lock().unwrap().len() >= 100);
    // Closing the store while the consumer runs commits what it consumed.
    store.close().unwrap();
    c.shutdown().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for q in 0..4 {
        assert_eq!(store.committed_offset("g", "t", q), Some(store.max_offset("t", q).unwrap()), "queue {q}");
    }
    // Deleting the topic takes its queues away from consumers.
    let c = store.push_consumer("g").subscribe("t", "*").unwrap().listener(recorder("c", &log)).start().unwrap();
    assert_eq!(user(c.assigned_queues()).len(), 4);
    store.delete_topic("t").unwrap();
    assert!(user(c.assigned_queues()).is_empty());
    c.shutdown().unwrap();
    store.close().unwrap();
}
