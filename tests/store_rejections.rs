#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Every store API rejection returns its typed error and leaves the store
//! unchanged: same topics, same commit-log end, same queue ends, same
//! committed offsets, and nothing new after a reopen.

use mqstore::commitlog::CommitLogOptions;
use mqstore::message::{Message, TopicName};
use mqstore::store::{MessageQueue, MessageQueueSelector, Store, StoreOptions, TagFilter};
use mqstore::topic::{Permission, TopicConfig};
use mqstore::Error;
use std::time::{Duration, Instant};

fn opts() -> StoreOptions {
    StoreOptions::default()
        .commit_log_options(CommitLogOptions::default().segment_size(64 << 10).max_record_size(16 << 10))
        .max_body_size(1 << 10)
        .max_properties_size(512)
        .consume_queue_units_per_file(8)
}

/// Everything a rejected call must not change.
#[derive(Debug, PartialEq, Eq)]
struct State {
    topics: Vec<TopicConfig>,
    log_end: u64,
    queue_ends: Vec<(String, u32, u64)>,
    offsets: Vec<Option<u64>>,
}

fn state(store: &Store) -> State {
    // Let dispatch settle first, so lag is not mistaken for a change.
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.max_offset("t", 0).unwrap() + store.max_offset("t", 1).unwrap() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let topics = store.topics();
    let mut queue_ends = Vec::new();
    for t in &topics {
        for q in 0..t.read_queues {
            queue_ends.push((t.name.clone(), q, store.max_offset(&t.name, q).unwrap()));
        }
    }
    State {
        log_end: store.commit_log().max_offset().get(),
        // Queue 2 of "t" and topic "missing" do not exist: rejected
        // commits must not create offsets for them.
        offsets: (0..3)
            .map(|q| store.committed_offset("g", "t", q))
            .chain([store.committed_offset("g", "missing", 0)])
            .collect(),
        topics,
        queue_ends,
    }
}

/// A callback for refused async sends (never called).
struct Ignore;

impl mqstore::store::SendCallback for Ignore {
    fn on_success(self: Box<Self>, r: mqstore::store::SendResult) {
        panic!("a refused async send succeeded: {r:?}");
    }
    fn on_exception(self: Box<Self>, _: Error) {}
}

struct OutOfRange;

impl MessageQueueSelector for OutOfRange {
    fn select(&self, queues: &[MessageQueue], _msg: &Message) -> usize {
        queues.len()
    }
}

#[test]
fn every_rejection_is_typed_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 2)).unwrap();
    for i in 0..4 {
        store.send(Message::new("t", format!("m{i}"))).unwrap();
    }
    let before = state(&store);
    store.commit_offset("g", "t", 0, 1).unwrap();
    let before = State { offsets: vec![Some(1), None, None, None], ..before };

    let invalid = |r: mqstore::Result<()>, what: &str| {
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{what}: {r:?}");
    };
    let too_large = |r: mqstore::Result<()>, what: &str| {
        assert!(matches!(r, Err(Error::MessageTooLarge { .. })), "{what}: {r:?}");
    };
    let send = |m: Message| store.send(m).map(|_| ());

    // Topic management.
    for bad in ["", "a b", "a/b", "%RETRY%g", "%DLQ%g", &"x".repeat(128)] {
        invalid(store.create_topic(TopicConfig::new(bad, 1)), &format!("topic name {bad:?}"));
    }
    invalid(store.create_topic(TopicConfig::new("u", 0)), "zero queues");
    invalid(store.create_topic(TopicConfig::new("u", 1025)), "too many queues");
    let mut more_writes = TopicConfig::new("u", 2);
    more_writes.write_queues = 3;
    invalid(store.create_topic(more_writes), "write > read queues");
    let mut shrink = TopicConfig::new("t", 1);
    shrink.write_queues = 1;
    invalid(store.create_topic(shrink), "read queues below a used queue");
    invalid(store.delete_topic("missing"), "delete a missing topic");

    // Messages.
    invalid(send(Message::new("missing", "x")), "missing topic");
    // The store's own topics take no producer writes (the schedule topic
    // always exists; a retry topic once a group sends a message back).
    invalid(send(Message::new(mqstore::retry::SCHEDULE_TOPIC, "x")), "send to the schedule topic");
    invalid(
        store.send_to_queue(Message::new(mqstore::retry::SCHEDULE_TOPIC, "x"), 0).map(|_| ()),
        "send_to_queue to the schedule topic",
    );
    invalid(
        store.send_batch(vec![Message::new(mqstore::retry::SCHEDULE_TOPIC, "x")]).map(|_| ()),
        "batch to the schedule topic",
    );
    invalid(store.send_oneway(Message::new(mqstore::retry::SCHEDULE_TOPIC, "x")), "oneway to the schedule topic");
    invalid(
        store.send_async(Message::new(mqstore::retry::SCHEDULE_TOPIC, "x"), Box::new(Ignore)),
        "async to the schedule topic",
    );
    invalid(send(Message::new("%RETRY%g", "x")), "send to a retry topic");
    invalid(send(Message::new("%DLQ%g", "x")), "send to a dead-letter topic");
    invalid(send(Message::new("x".repeat(128), "x")), "topic over 127 bytes");
    invalid(send(Message::new("t\n", "x")), "topic with a control character");
    invalid(send(Message::new("../t", "x")), "topic with path characters");
    invalid(send(Message::new("t", "x").with_delay_level(u8::MAX)), "delay level 255");
    invalid(send(Message::new("t", "")), "empty body");
    too_large(send(Message::new("t", vec![7u8; 1025])), "body over max_body_size");
    too_large(send(Message::new("t", "x").with_property("p", "v".repeat(600))), "properties over the limit");
    invalid(send(Message::new("t", "x").with_tags("a||b")), "tag with separator");
    invalid(send(Message::new("t", "x").with_key("a b")), "key with a space");
    invalid(send(Message::new("t", "x").with_key("")), "empty key");
    invalid(send(Message::new("t", "x").with_delay_level(0)), "delay level 0");
    invalid(send(Message::new("t", "x").with_delay_level(19)), "delay level 19");
    invalid(send(Message::new("t", "x").with_property("TAGS", "a")), "reserved property");
    invalid(store.send_to_queue(Message::new("t", "x"), 2).map(|_| ()), "queue out of range");
    invalid(store.send_with_selector(Message::new("t", "x"), &OutOfRange).map(|_| ()), "selector out of range");
    invalid(store.send_batch(Vec::new()).map(|_| ()), "empty batch");
    invalid(
        store.send_batch(vec![Message::new("t", "a"), Message::new("u", "b")]).map(|_| ()),
        "batch over two topics",
    );
    let (t, u) = (TopicName::new("t"), TopicName::new("u"));
    invalid(
        store.send_batch(vec![Message::new(&t, "a"), Message::new(&t, "b"), Message::new(&u, "c")]).map(|_| ()),
        "batch over two shared topic names",
    );
    invalid(
        store.send_batch(vec![Message::new("t", "a"), Message::new("t", "")]).map(|_| ()),
        "batch with a bad message",
    );
    invalid(store.send_batch(vec![Message::new("t", "a").with_delay_level(3)]).map(|_| ()), "batch with delay");
    invalid(store.send_oneway(Message::new("t", "")), "oneway empty body");

    // Consumption.
    invalid(store.pull("missing", 0, 0, 1, &TagFilter::All).map(|_| ()), "pull a missing topic");
    invalid(store.pull("t", 2, 0, 1, &TagFilter::All).map(|_| ()), "pull a missing queue");
    assert!(TagFilter::parse("a || || b").is_err());
    invalid(store.commit_offset("g", "t", 0, 99), "commit past the end");
    invalid(store.commit_offset("bad group", "t", 0, 1), "invalid group name");
    invalid(store.commit_offset("", "t", 0, 1), "empty group name");
    invalid(store.commit_offset("g", "t", 0, u64::MAX), "commit at u64::MAX");
    invalid(store.commit_offset("g", "missing", 0, 0), "commit on a missing topic");
    invalid(store.commit_offset("g", "t", 2, 0), "commit on a missing queue");
    invalid(store.commit_offset("g", "t", u32::MAX, 0), "commit on queue u32::MAX");
    invalid(store.reset_offset("g", "missing", 0, 0), "reset on a missing topic");
    invalid(store.reset_offset("g", "t", 2, 0), "reset on a missing queue");
    invalid(store.reset_offset("bad group", "t", 0, 0), "reset with an invalid group name");

    // Read-only and write-only topics.
    let mut ro = TopicConfig::new("t", 2);
    ro.permission = Permission::ReadOnly;
    store.create_topic(ro).unwrap();
    invalid(send(Message::new("t", "x")), "send to a read-only topic");
    let mut rw = TopicConfig::new("t", 2);
    rw.permission = Permission::ReadWrite;
    store.create_topic(rw).unwrap();

    assert_eq!(state(&store), before);
    store.close().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(state(&store), before, "after reopen");
    store.close().unwrap();
    assert!(matches!(store.send(Message::new("t", "x")), Err(Error::Closed)));
    assert!(matches!(store.pull("t", 0, 0, 1, &TagFilter::All), Err(Error::Closed)));
    assert!(matches!(store.create_topic(TopicConfig::new("v", 1)), Err(Error::Closed)));
}

#[test]
fn bad_options_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for (o, field) in [
        (opts().max_body_size(0), "max_body_size"),
        (opts().max_properties_size(70_000), "max_properties_size"),
        (opts().consume_queue_units_per_file(0), "consume_queue_units_per_file"),
        (opts().offset_persist_interval(Duration::ZERO), "offset_persist_interval"),
        (opts().default_queues(0), "default_queues"),
        (opts().async_send_threads(0), "async_send_threads"),
        (opts().async_send_backlog(0), "async_send_backlog"),
    ] {
        match Store::open(dir.path(), o) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(field), "{field}: {m}"),
            other => panic!("{field}: {other:?}"),
        }
    }
    // Nothing was created by the refused opens.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
