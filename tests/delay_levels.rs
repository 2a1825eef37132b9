#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Delayed delivery with a manual clock: every level delivers at its time
//! and never before, delivery times of any length (hopping through the
//! levels), clock jumps, progress across reopen, and the schedule topic's
//! rejections.

use mqstore::commitlog::{CommitLogOptions, FlushMode};
use mqstore::message::Message;
use mqstore::retry::{DelayLevels, SCHEDULE_TOPIC};
use mqstore::store::{Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use mqstore::{Clock, Error, ManualClock};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000_000;
/// How long a test waits to be confident the delivery thread (polling
/// every 2 ms) would have acted.
const SETTLE: Duration = Duration::from_millis(40);

fn opts(clock: &Arc<ManualClock>, mode: FlushMode) -> StoreOptions {
    StoreOptions::default()
        .commit_log_options(
            CommitLogOptions::default().segment_size(256 << 10).max_record_size(16 << 10).clock(clock.clone()),
        )
        .max_body_size(4 << 10)
        .max_properties_size(1 << 10)
        .consume_queue_units_per_file(64)
        .delay_poll_interval(Duration::from_millis(2))
        .flush_mode(mode)
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Store {
    Store::open(dir, opts(clock, FlushMode::Async)).unwrap()
}

/// Messages currently in `topic`'s queue 0.
fn visible(store: &Store, topic: &str) -> u64 {
    store.max_offset(topic, 0).unwrap()
}

fn wait_visible(store: &Store, topic: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while visible(store, topic) < n {
        assert!(Instant::now() < deadline, "{topic}: {} of {n} visible", visible(store, topic));
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn bodies(store: &Store, topic: &str) -> Vec<String> {
    let r = store.pull(topic, 0, 0, 1000, &TagFilter::All).unwrap();
    r.messages.iter().map(|m| String::from_utf8(m.body().to_vec()).unwrap()).collect()
}

#[test]
fn every_default_level_delivers_at_its_time_and_never_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir.path(), &clock);
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    let levels = DelayLevels::default();
    // Sent in reverse so delivery order differs from send order.
    for l in (1..=18u8).rev() {
        let r = store.send(Message::new("t", format!("level-{l}")).with_delay_level(l)).unwrap();
        assert_eq!(r.queue_id, 0);
    }
    assert_eq!(visible(&store, "t"), 0);
    for l in 1..=18usize {
        let due = T0 + levels.delay(l).unwrap().as_millis() as u64;
        clock.set_ms(due - 1);
        std::thread::sleep(SETTLE);
        assert_eq!(visible(&store, "t"), l as u64 - 1, "level {l} delivered early");
        clock.set_ms(due);
        wait_visible(&store, "t", l as u64);
    }
    let got = bodies(&store, "t");
    let want: Vec<String> = (1..=18).map(|l| format!("level-{l}")).collect();
    assert_eq!(got, want);
    // Delivered copies carry the message's id, tags and user properties,
    // and none of the schedule's bookkeeping.
    let m = &store.pull("t", 0, 0, 1, &TagFilter::All).unwrap().messages[0];
    assert!(m.property("REAL_TOPIC").is_none() && m.property("DELAY").is_none());
    assert_eq!(m.property("DELAY_SOURCE"), Some("1:0"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.schedule_stats().delivered < 18 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = store.schedule_stats();
    assert_eq!((stats.delivered, stats.dropped), (18, 0));
    assert!(stats.pending.iter().all(|&p| p == 0));
    store.close().unwrap();
}

#[test]
fn delivered_message_keeps_id_tags_keys_and_properties() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir.path(), &clock);
    store.create_topic(TopicConfig::new("t", 4)).unwrap();
    let sent = store
        .send_to_queue(
            Message::new("t", "payload").with_tags("TagA").with_key("k1").with_property("p", "v").with_delay_level(2),
            3,
        )
        .unwrap();
    assert_eq!(sent.queue_id, 3);
    clock.advance_ms(5_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.max_offset("t", 3).unwrap() < 1 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let m = &store.pull("t", 3, 0, 1, &TagFilter::parse("TagA").unwrap()).unwrap().messages[0];
    assert_eq!(m.body().as_ref(), b"payload");
    assert_eq!(m.msg_id(), Some(sent.msg_id.as_str()));
    assert_eq!(m.tags(), Some("TagA"));
    assert_eq!(m.keys().collect::<Vec<_>>(), ["k1"]);
    assert_eq!(m.property("p"), Some("v"));
    assert_eq!(m.topic(), "t");
    store.close().unwrap();
}

/// Messages due at the same time are delivered in one write, numbered
/// queue by queue: interleaved queues and topics each get consecutive
/// offsets from their own counters, in the order the messages were sent.
#[test]
fn messages_due_together_are_numbered_per_queue() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir.path(), &clock);
    store.create_topic(TopicConfig::new("t", 2)).unwrap();
    store.create_topic(TopicConfig::new("u", 2)).unwrap();
    // A message already in queue t/1 and u/0, so the counters differ.
    store.send_to_queue(Message::new("t", "t1-early"), 1).unwrap();
    store.send_to_queue(Message::new("u", "u0-early"), 0).unwrap();
    let order = [("t", 0), ("t", 0), ("t", 1), ("u", 0), ("t", 0), ("u", 0), ("t", 1), ("u", 1)];
    for (i, (topic, q)) in order.iter().enumerate() {
        store.send_to_queue(Message::new(*topic, format!("{topic}{q}-{i}")).with_delay_level(1), *q).unwrap();
    }
    clock.advance_ms(1_000);
    let expect = |topic: &str, q: u32| -> Vec<String> {
        let early = (topic, q) == ("t", 1) || (topic, q) == ("u", 0);
        let mut v: Vec<String> = early.then(|| format!("{topic}{q}-early")).into_iter().collect();
        v.extend(order.iter().enumerate().filter(|(_, o)| **o == (topic, q)).map(|(i, _)| format!("{topic}{q}-{i}")));
        v
    };
    for (topic, q) in [("t", 0), ("t", 1), ("u", 0), ("u", 1)] {
        let want = expect(topic, q);
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.max_offset(topic, q).unwrap() < want.len() as u64 {
            assert!(Instant::now() < deadline, "{topic}/{q}");
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = store.pull(topic, q, 0, 100, &TagFilter::All).unwrap();
        let got: Vec<(u64, String)> =
            r.messages.iter().map(|m| (m.queue_offset().0, String::from_utf8(m.body().to_vec()).unwrap())).collect();
        let want: Vec<(u64, String)> = want.into_iter().enumerate().map(|(i, b)| (i as u64, b)).collect();
        assert_eq!(got, want, "{topic}/{q}");
    }
    // Nothing fenced the store: it still takes sends.
    store.send_to_queue(Message::new("t", "after"), 0).unwrap();
    store.close().unwrap();
}

#[test]
fn deliver_at_far_ahead_hops_through_the_levels_and_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir.path(), &clock);
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    // Ten days and a bit: far beyond the longest level (2 h) and RocketMQ
    // 5's three-day cap.
    let target = T0 + 10 * 86_400_000 + 1_234;
    store.send(Message::new("t", "later").with_deliver_at(target)).unwrap();
    // A time already reached delivers at once.
    store.send(Message::new("t", "now").with_deliver_at(T0 - 5)).unwrap();
    wait_visible(&store, "t", 1);
    // Walk the clock to the target in steps of at most an hour, letting
    // each hop happen.
    let mut now = T0;
    while now < target - 1 {
        now = (now + 3_600_000).min(target - 1);
        clock.set_ms(now);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(visible(&store, "t"), 1, "delivered before its time (clock {now})");
        // Log retention cannot take it: the copy still waiting is never
        // older than the longest level (2 h), however far off its time.
        wait_until_copy_is_recent(&store, now);
    }
    std::thread::sleep(SETTLE);
    assert_eq!(visible(&store, "t"), 1);
    clock.set_ms(target);
    wait_visible(&store, "t", 2);
    assert_eq!(bodies(&store, "t"), ["now", "later"]);
    let stats = store.schedule_stats();
    assert!(stats.delivered > 100, "hops: {}", stats.delivered);
    store.close().unwrap();
}

/// Waits until the one message waiting in the schedule topic is a record
/// stored within the longest level (2 h) before `now`.
fn wait_until_copy_is_recent(store: &Store, now: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut waiting = Vec::new();
        for q in 0..18 {
            // Two reads, not one snapshot: a delivery between them can make
            // the pending count exceed the end read first. Retry instead.
            let pending = store.schedule_stats().pending[q as usize];
            let progress = store.max_offset(SCHEDULE_TOPIC, q).unwrap().saturating_sub(pending);
            let r = store.pull(SCHEDULE_TOPIC, q, progress, 10, &TagFilter::All).unwrap();
            waiting.extend(r.messages.into_iter().map(|m| m.store_timestamp()));
        }
        if waiting.len() == 1 && waiting[0] + 7_200_000 >= now {
            return;
        }
        assert!(Instant::now() < deadline, "waiting copies stored at {waiting:?}, clock {now}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn clock_jumps_forward_deliver_and_backward_steps_do_not_hold_messages() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir.path(), &clock);
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    store.send(Message::new("t", "a").with_delay_level(3)).unwrap(); // 10 s
                                                                     // Forward by a day: due at once.
    clock.set_ms(T0 + 86_400_000);
    wait_visible(&store, "t", 1);
    // Back by a day, then a 10 s message: it waits 10 s of the new clock,
    // not a day.
    clock.set_ms(T0 + 86_400_000);
    store.send(Message::new("t", "b").with_delay_level(3)).unwrap();
    std::thread::sleep(SETTLE);
    clock.set_ms(T0);
    std::thread::sleep(SETTLE);
    assert_eq!(visible(&store, "t"), 1, "never early");
    clock.set_ms(T0 + 10_000);
    wait_visible(&store, "t", 2);
    store.close().unwrap();
}

#[test]
fn progress_survives_reopen_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    {
        let store = open(dir.path(), &clock);
        store.create_topic(TopicConfig::new("t", 1)).unwrap();
        for i in 0..10 {
            store.send(Message::new("t", format!("m{i}")).with_delay_level(1 + (i % 2) as u8)).unwrap();
        }
        clock.set_ms(T0 + 1_000);
        wait_visible(&store, "t", 5);
        store.close().unwrap();
    }
    let store = open(dir.path(), &clock);
    std::thread::sleep(SETTLE);
    assert_eq!(visible(&store, "t"), 5, "reopen delivered again");
    clock.set_ms(T0 + 5_000);
    wait_visible(&store, "t", 10);
    std::thread::sleep(SETTLE);
    assert_eq!(visible(&store, "t"), 10);
    store.close().unwrap();

    // Without the progress file, recovery rebuilds it from the delivered
    // copies in the log: still nothing delivered twice.
    std::fs::remove_file(dir.path().join("config").join("delay")).unwrap();
    let store = open(dir.path(), &clock);
    clock.set_ms(T0 + 100_000);
    std::thread::sleep(SETTLE);
    assert_eq!(visible(&store, "t"), 10);
    store.close().unwrap();
    // A damaged one (a flipped bit: the CRC fails) likewise.
    let path = dir.path().join("config").join("delay");
    let mut b = std::fs::read(&path).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0x10;
    std::fs::write(&path, &b).unwrap();
    let store = open(dir.path(), &clock);
    std::thread::sleep(SETTLE);
    assert_eq!(visible(&store, "t"), 10);
    assert_eq!(store.schedule_stats().pending.iter().sum::<u64>(), 0);
    store.close().unwrap();
}

#[test]
fn custom_levels_and_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let levels = DelayLevels::parse("1s 2s 3s").unwrap();
    let store = Store::open(dir.path(), opts(&clock, FlushMode::Sync).delay_levels(levels)).unwrap();
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    assert!(matches!(store.send(Message::new("t", "x").with_delay_level(4)), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        store.send(Message::new("t", "x").with_delay_level(1).with_deliver_at(T0 + 10)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.send_batch(vec![Message::new("t", "x").with_deliver_at(T0 + 10)]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(store.create_topic(TopicConfig::new(SCHEDULE_TOPIC, 3)), Err(Error::InvalidArgument(_))));
    assert!(matches!(store.delete_topic(SCHEDULE_TOPIC), Err(Error::InvalidArgument(_))));
    store.send(Message::new("t", "x").with_delay_level(3)).unwrap();
    clock.set_ms(T0 + 2_999);
    std::thread::sleep(SETTLE);
    assert_eq!(visible(&store, "t"), 0);
    clock.set_ms(T0 + 3_000);
    wait_visible(&store, "t", 1);
    store.close().unwrap();
}

#[test]
fn message_for_a_deleted_topic_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir.path(), &clock);
    store.create_topic(TopicConfig::new("gone", 1)).unwrap();
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    store.send(Message::new("gone", "x").with_delay_level(1)).unwrap();
    store.send(Message::new("t", "y").with_delay_level(1)).unwrap();
    store.delete_topic("gone").unwrap();
    clock.set_ms(T0 + 1_000);
    wait_visible(&store, "t", 1);
    // The counters move just after the write that made "y" visible.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.schedule_stats().dropped == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = store.schedule_stats();
    assert_eq!((stats.delivered, stats.dropped), (1, 1));
    store.close().unwrap();
}

/// Units carry no checksum: a schedule unit whose tag hash (its due time)
/// was damaged to say "due now" must not deliver its message early, whether
/// it heads its level or follows a head that came due. The delivery thread
/// checks each unit against its record's due time and rebuilds the queue.
#[test]
fn a_damaged_schedule_unit_never_delivers_early() {
    for damaged in [&[0][..], &[1], &[0, 1]] {
        damaged_units_deliver_on_time(damaged);
    }
}

/// Sends "m0" and, `gap_ms` later, "m1" to topic "t" at delay level 3,
/// then an indexed message to "other", and closes the store. Returns the
/// file of level 3's schedule queue (queue 2; 20-byte units: physical
/// offset at 0..8, size, tag hash (the due time) at 12..20).
fn two_level_3_messages(dir: &Path, clock: &Arc<ManualClock>, gap_ms: u64) -> std::path::PathBuf {
    let store = open(dir, clock);
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    store.send(Message::new("t", "m0").with_delay_level(3)).unwrap();
    clock.set_ms(clock.now_ms() + gap_ms);
    store.send(Message::new("t", "m1").with_delay_level(3)).unwrap();
    // Recovery re-dispatches from the newest indexed record (schedule
    // entries are not indexed), which would rewrite the units: end the log
    // with an indexed message so damage done to them survives the open.
    store.create_topic(TopicConfig::new("other", 1)).unwrap();
    store.send(Message::new("other", "indexed")).unwrap();
    store.close().unwrap();
    dir.join("consumequeue").join(SCHEDULE_TOPIC).join("2").join(format!("{:020}", 0))
}

/// Two level-3 messages due at `T0 + 10 s` and `T0 + 13 s`, the units
/// `damaged` of their schedule queue set to "due at `T0`".
fn damaged_units_deliver_on_time(damaged: &[usize]) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let path = two_level_3_messages(dir.path(), &clock, 3_000);
    let mut b = std::fs::read(&path).unwrap();
    for &unit in damaged {
        let at = unit * 20 + 12;
        assert_eq!(b[at..at + 8], (T0 + 10_000 + 3_000 * unit as u64).to_be_bytes(), "unit {unit}'s due time");
        b[at..at + 8].copy_from_slice(&T0.to_be_bytes());
    }
    std::fs::write(&path, &b).unwrap();

    clock.set_ms(T0 + 5_000);
    let store = open(dir.path(), &clock);
    std::thread::sleep(SETTLE);
    assert_eq!(visible(&store, "t"), 0, "{damaged:?}: delivered before the first was due");
    clock.set_ms(T0 + 10_000);
    wait_visible(&store, "t", 1);
    std::thread::sleep(SETTLE);
    assert_eq!(visible(&store, "t"), 1, "{damaged:?}: delivered the second with the first");
    clock.set_ms(T0 + 13_000);
    wait_visible(&store, "t", 2);
    assert_eq!(bodies(&store, "t"), ["m0", "m1"]);
    store.close().unwrap();
}

/// A schedule unit damaged to point into a segment header (where no record
/// starts, and not below the log's start: nothing was removed) is rebuilt,
/// and its message delivered, not dropped as if retention had taken it.
#[test]
fn a_schedule_unit_pointing_into_a_header_is_rebuilt_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    // Two entries: recovery checks a queue's last unit at open.
    let path = two_level_3_messages(dir.path(), &clock, 0);
    let mut b = std::fs::read(&path).unwrap();
    b[..8].copy_from_slice(&1u64.to_be_bytes());
    std::fs::write(&path, &b).unwrap();

    let store = open(dir.path(), &clock);
    clock.set_ms(T0 + 10_000);
    wait_visible(&store, "t", 2);
    assert_eq!(bodies(&store, "t"), ["m0", "m1"]);
    assert_eq!(store.schedule_stats().dropped, 0);
    store.close().unwrap();
}
