#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The membership file `config/consumers`: written after every rebalance,
//! readable through `StoreView::consumers` beside the live store, removed
//! at close and at open.

use mqstore::commitlog::CommitLogOptions;
use mqstore::consumer::membership::{LiveConsumers, LiveGroup};
use mqstore::consumer::{ConsumeContext, ConsumeStatus, MessageModel, PushConsumer};
use mqstore::message::MessageExt;
use mqstore::storage::{FaultKind, FaultPlan, FaultyStorage, StdStorage, Storage};
use mqstore::store::{MessageQueue, Store, StoreOptions, StoreView};
use mqstore::topic::TopicConfig;
use mqstore::ManualClock;
use std::path::Path;
use std::sync::Arc;

fn opts(clock: Arc<ManualClock>) -> StoreOptions {
    opts_on(clock, Arc::new(StdStorage))
}

fn opts_on(clock: Arc<ManualClock>, storage: Arc<dyn Storage>) -> StoreOptions {
    let log = CommitLogOptions::default().segment_size(1 << 20).max_record_size(16 << 10);
    StoreOptions::default()
        .commit_log_options(log.clock(clock).storage(storage))
        .max_body_size(4 << 10)
        .max_properties_size(1 << 10)
        .consume_queue_units_per_file(256)
}

fn consumer(store: &Store, group: &str, id: &str, model: MessageModel) -> PushConsumer {
    store
        .push_consumer(group)
        .subscribe("orders", "*")
        .unwrap()
        .instance_name(id)
        .message_model(model)
        .listener(|_: &[MessageExt], _: &ConsumeContext| ConsumeStatus::Success)
        .start()
        .unwrap()
}

fn q(queue_id: u32) -> MessageQueue {
    MessageQueue { topic: "orders".into(), queue_id }
}

fn live(dir: &Path) -> Option<LiveConsumers> {
    StoreView::open(dir).unwrap().consumers().unwrap()
}

/// (id, queues of "orders") of every member of `g` (a clustering group's
/// retry topic is assigned too; these tests look at the user topic).
fn members(g: &LiveGroup) -> Vec<(&str, Vec<MessageQueue>)> {
    g.members.iter().map(|m| (m.id.as_str(), user(m.queues.clone()))).collect()
}

/// The queues of `v` that are not a retry topic's.
fn user(v: Vec<MessageQueue>) -> Vec<MessageQueue> {
    v.into_iter().filter(|q| !q.topic.starts_with("%RETRY%")).collect()
}

#[test]
fn three_consumers_on_two_queues_one_is_idle_until_a_busy_one_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let store = Store::open(dir.path(), opts(clock.clone())).unwrap();
    store.create_topic(TopicConfig::new("orders", 2)).unwrap();
    assert_eq!(live(dir.path()), None, "no consumer yet, no file");

    let c1 = consumer(&store, "billing", "c1", MessageModel::Clustering);
    let c2 = consumer(&store, "billing", "c2", MessageModel::Clustering);
    let c3 = consumer(&store, "billing", "c3", MessageModel::Clustering);
    clock.advance_ms(500);
    let n1 = consumer(&store, "cache", "n1", MessageModel::Broadcasting);

    let l = live(dir.path()).unwrap();
    assert_eq!((l.pid, l.written_at_ms, l.writer_alive), (std::process::id(), 1_500, true));
    assert_eq!(l.groups.iter().map(|g| g.group.as_str()).collect::<Vec<_>>(), ["billing", "cache"]);
    let billing = l.group("billing").unwrap();
    assert_eq!(billing.model, MessageModel::Clustering);
    assert_eq!(members(billing), [("c1", vec![q(0)]), ("c2", vec![q(1)]), ("c3", vec![])]);
    assert_eq!(billing.members.iter().filter(|m| m.is_idle()).count(), 1);
    assert_eq!(billing.owners("orders", 0), ["c1"]);
    // What the file says is what the consumers hold.
    assert_eq!(user(c1.assigned_queues()), [q(0)]);
    assert!(user(c3.assigned_queues()).is_empty());
    let cache = l.group("cache").unwrap();
    assert_eq!(cache.model, MessageModel::Broadcasting);
    assert_eq!(members(cache), [("n1", vec![q(0), q(1)])]);

    // A busy member leaves: the idle one takes over, and the file says so.
    clock.advance_ms(500);
    c1.shutdown().unwrap();
    let l = live(dir.path()).unwrap();
    assert_eq!(l.written_at_ms, 2_000);
    let billing = l.group("billing").unwrap();
    assert_eq!(members(billing), [("c2", vec![q(0)]), ("c3", vec![q(1)])]);
    assert_eq!(user(c3.assigned_queues()), [q(1)]);

    // A topic's queue count changes: the rebalance it causes is published.
    store.create_topic(TopicConfig::new("orders", 4)).unwrap();
    let l = live(dir.path()).unwrap();
    assert_eq!(members(l.group("billing").unwrap()), [("c2", vec![q(0), q(1)]), ("c3", vec![q(2), q(3)])]);
    assert_eq!(l.group("cache").unwrap().members[0].queues.len(), 4);

    // The last member of a group leaves: the group disappears.
    n1.shutdown().unwrap();
    assert!(live(dir.path()).unwrap().group("cache").is_none());

    // Close removes the file; members shutting down afterwards do not
    // write it again.
    store.close().unwrap();
    assert!(!dir.path().join("config/consumers").exists());
    assert_eq!(live(dir.path()), None);
    c2.shutdown().unwrap();
    c3.shutdown().unwrap();
    assert_eq!(live(dir.path()), None);
}

#[test]
fn a_file_left_behind_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(Arc::new(ManualClock::new(7)))).unwrap();
    store.create_topic(TopicConfig::new("orders", 2)).unwrap();
    let c = consumer(&store, "billing", "c1", MessageModel::Clustering);
    let path = dir.path().join("config/consumers");
    let saved = std::fs::read(&path).unwrap();
    c.shutdown().unwrap();
    store.close().unwrap();
    // As a crash would leave it (this process wrote it, so it looks alive).
    std::fs::write(&path, &saved).unwrap();
    assert_eq!(members(live(dir.path()).unwrap().group("billing").unwrap()), [("c1", vec![q(0), q(1)])]);
    let store = Store::open(dir.path(), opts(Arc::new(ManualClock::new(7)))).unwrap();
    assert!(!path.exists());
    assert_eq!(live(dir.path()), None);
    store.close().unwrap();
}

#[test]
fn a_failed_write_does_not_break_rebalancing() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let storage = Arc::new(FaultyStorage::new(Arc::new(StdStorage), plan.clone()));
    let store = Store::open(dir.path(), opts_on(Arc::new(ManualClock::new(7)), storage)).unwrap();
    store.create_topic(TopicConfig::new("orders", 2)).unwrap();
    let c1 = consumer(&store, "billing", "c1", MessageModel::Clustering);
    assert!(live(dir.path()).is_some());
    // Replacing the file fails: rebalancing goes on, and the old file is
    // removed rather than left describing the old assignment.
    plan.fail_op("rename", FaultKind::Io);
    let c2 = consumer(&store, "billing", "c2", MessageModel::Clustering);
    assert_eq!((user(c1.assigned_queues()), user(c2.assigned_queues())), (vec![q(0)], vec![q(1)]));
    assert_eq!(live(dir.path()), None);
    plan.heal();
    // The next rebalance writes it again.
    c2.shutdown().unwrap();
    assert_eq!(members(live(dir.path()).unwrap().group("billing").unwrap()), [("c1", vec![q(0), q(1)])]);
    c1.shutdown().unwrap();
    store.close().unwrap();
    assert_eq!(live(dir.path()), None);
}
