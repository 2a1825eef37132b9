#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Store-level behaviour: topics, sending, pulling, offsets, recovery of
//! the consume queues.

use mqstore::commitlog::{CommitLogOptions, FlushMode};
use mqstore::message::{Message, TopicName};
use mqstore::store::{HashByKeySelector, PullStatus, Store, StoreOptions, TagFilter};
use mqstore::topic::{Permission, TopicConfig};
use mqstore::Error;
use std::time::Duration;

fn opts() -> StoreOptions {
    StoreOptions::default()
        .commit_log_options(CommitLogOptions::default().segment_size(64 << 10).max_record_size(16 << 10))
        .max_body_size(4 << 10)
        .max_properties_size(1 << 10)
        .consume_queue_units_per_file(8)
}

/// Dispatch is asynchronous: waits (long polling) until queue `q` holds
/// `n` messages.
fn wait_dispatched(store: &Store, topic: &str, q: u32, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let end = store.max_offset(topic, q).unwrap();
        if end >= n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "queue {topic}/{q} stuck at {end} of {n}");
        store.pull_wait(topic, q, end, 1, &TagFilter::All, Duration::from_secs(1)).unwrap();
    }
}

fn body(i: usize) -> Vec<u8> {
    format!("message-{i}-{}", "x".repeat(i % 50)).into_bytes()
}

#[test]
fn send_then_pull_in_queue_order_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("orders", 3)).unwrap();
    let mut sent = Vec::new();
    for i in 0..300 {
        sent.push((i, store.send(Message::new("orders", body(i))).unwrap()));
    }
    let check = |store: &Store| {
        for q in 0..3u32 {
            let mine: Vec<_> = sent.iter().filter(|(_, r)| r.queue_id == q).collect();
            let mut offset = 0;
            let mut got = Vec::new();
            loop {
                let r = store.pull("orders", q, offset, 7, &TagFilter::All).unwrap();
                if r.status == PullStatus::NoNewMessage {
                    break;
                }
                got.extend(r.messages);
                offset = r.next_offset;
            }
            assert_eq!(got.len(), mine.len());
            for (m, (i, r)) in got.iter().zip(&mine) {
                assert_eq!(m.body().as_ref(), body(*i).as_slice());
                assert_eq!(m.queue_offset().0, r.queue_offset);
                assert_eq!(m.msg_id(), Some(r.msg_id.as_str()));
            }
        }
    };
    for q in 0..3 {
        wait_dispatched(&store, "orders", q, sent.iter().filter(|(_, r)| r.queue_id == q).count() as u64);
    }
    check(&store);
    store.close().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    check(&store);
    // Numbering continues after reopen.
    let r = store.send_to_queue(Message::new("orders", "more"), 1).unwrap();
    assert_eq!(r.queue_offset, sent.iter().filter(|(_, r)| r.queue_id == 1).count() as u64);
    store.close().unwrap();
}

/// A batch may name its topic by a shared `TopicName` (compared by
/// pointer), by a separate `TopicName` of the same text, or by text: all
/// three are one topic, and the batch lands in one queue in order.
#[test]
fn a_batch_mixes_shared_and_copied_topic_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("B", 2)).unwrap();
    let shared = TopicName::new("B");
    let batch = vec![
        Message::new(&shared, body(0)),
        Message::new("B", body(1)),
        Message::new(TopicName::from(String::from("B")), body(2)),
        Message::new(shared.clone(), body(3)),
    ];
    let sent = store.send_batch(batch).unwrap();
    assert!(sent.iter().all(|r| r.queue_id == sent[0].queue_id));
    let q = sent[0].queue_id;
    wait_dispatched(&store, "B", q, 4);
    let got = store.pull("B", q, 0, 8, &TagFilter::All).unwrap();
    let bodies: Vec<Vec<u8>> = got.messages.iter().map(|m| m.body().to_vec()).collect();
    assert_eq!(bodies, (0..4).map(body).collect::<Vec<_>>());
    assert!(got.messages.iter().all(|m| m.topic() == "B"));
    store.close().unwrap();
}

/// `send`, `send_batch` and `send_oneway` rotate over each topic's queues
/// on their own (RocketMQ keeps one `sendWhichQueue` per topic): a producer
/// cycling over topics still spreads every topic over all of its queues.
#[test]
fn default_rotation_is_per_topic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for t in ["A", "B", "C"] {
        store.create_topic(TopicConfig::new(t, 4)).unwrap();
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..8 {
        a.push(store.send(Message::new("A", body(i))).unwrap().queue_id);
        let batch = store.send_batch(vec![Message::new("B", body(i)), Message::new("B", body(i))]).unwrap();
        b.push(batch[0].queue_id);
        store.send_oneway(Message::new("C", body(i))).unwrap();
    }
    // One counter shared by the topics moved with every send to B and C
    // (A went 0, 3, 2, 1; with two topics, each used half its queues).
    assert_eq!(a, [0, 1, 2, 3, 0, 1, 2, 3]);
    assert_eq!(b, [0, 1, 2, 3, 0, 1, 2, 3]);
    for q in 0..4 {
        wait_dispatched(&store, "C", q, 2);
    }
    store.close().unwrap();
}

#[test]
fn selector_routes_by_key_and_tags_filter() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts().flush_mode(FlushMode::Sync)).unwrap();
    store.create_topic(TopicConfig::new("t", 4)).unwrap();
    let mut queue_of = std::collections::HashMap::new();
    for i in 0..40 {
        let key = format!("order-{}", i % 5);
        let tag = if i % 2 == 0 { "A" } else { "B" };
        let r = store
            .send_with_selector(Message::new("t", body(i)).with_key(&key).with_tags(tag), &HashByKeySelector)
            .unwrap();
        let q = *queue_of.entry(key).or_insert(r.queue_id);
        assert_eq!(q, r.queue_id, "one key, one queue");
    }
    for (q, n) in queue_of.values().fold(std::collections::HashMap::new(), |mut m, q| {
        *m.entry(*q).or_insert(0u64) += 8;
        m
    }) {
        wait_dispatched(&store, "t", q, n);
    }
    let filter = TagFilter::parse("A").unwrap();
    let mut n = 0;
    for q in 0..4 {
        let mut offset = 0;
        loop {
            let r = store.pull("t", q, offset, 100, &filter).unwrap();
            if matches!(r.status, PullStatus::NoNewMessage) {
                break;
            }
            for m in &r.messages {
                assert_eq!(m.tags(), Some("A"));
            }
            n += r.messages.len();
            offset = r.next_offset;
        }
    }
    assert_eq!(n, 20);
    store.close().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let mut n = 0;
    for q in 0..4 {
        let r = store.pull("t", q, 0, 100, &filter).unwrap();
        n += r.messages.len();
    }
    assert_eq!(n, 20);
    store.close().unwrap();
}

#[test]
fn offsets_survive_reopen_and_are_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    for i in 0..10 {
        store.send(Message::new("t", body(i))).unwrap();
    }
    wait_dispatched(&store, "t", 0, 10);
    store.commit_offset("g1", "t", 0, 7).unwrap();
    store.commit_offset("g1", "t", 0, 3).unwrap(); // never backwards
    assert_eq!(store.committed_offset("g1", "t", 0), Some(7));
    assert!(matches!(store.commit_offset("g1", "t", 0, 11), Err(Error::InvalidArgument(_))));
    assert!(matches!(store.commit_offset("bad group!", "t", 0, 1), Err(Error::InvalidArgument(_))));
    store.close().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(store.committed_offset("g1", "t", 0), Some(7));
    store.close().unwrap();
}

/// An offset committed on a queue that never held a message (the group is
/// at its start) survives a reopen.
#[test]
fn an_offset_on_an_empty_queue_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 2)).unwrap();
    store.send_to_queue(Message::new("t", body(0)), 0).unwrap();
    wait_dispatched(&store, "t", 0, 1);
    store.commit_offset("g1", "t", 1, 0).unwrap();
    store.reset_offset("g2", "t", 1, 5).unwrap();
    assert_eq!((store.committed_offset("g1", "t", 1), store.committed_offset("g2", "t", 1)), (Some(0), Some(0)));
    store.close().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!((store.committed_offset("g1", "t", 1), store.committed_offset("g2", "t", 1)), (Some(0), Some(0)));
    store.close().unwrap();
}

#[test]
fn deleted_consume_queue_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 2)).unwrap();
    for i in 0..100 {
        store.send(Message::new("t", body(i))).unwrap();
    }
    store.close().unwrap();
    std::fs::remove_dir_all(dir.path().join("consumequeue").join("t").join("1")).unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for q in 0..2 {
        let r = store.pull("t", q, 0, 1000, &TagFilter::All).unwrap();
        assert_eq!(r.messages.len(), 50, "queue {q}");
        for (k, m) in r.messages.iter().enumerate() {
            assert_eq!(m.queue_offset().0, k as u64);
        }
    }
    store.close().unwrap();
}

#[test]
fn rejections_are_typed_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for bad in ["", "has space", "%RETRY%g", "%DLQ%g", &"x".repeat(128)] {
        assert!(matches!(store.create_topic(TopicConfig::new(bad, 1)), Err(Error::InvalidArgument(_))), "{bad:?}");
    }
    let mut cfg = TopicConfig::new("t", 2);
    cfg.write_queues = 3;
    assert!(matches!(store.create_topic(cfg), Err(Error::InvalidArgument(_))));
    // Only the store's own schedule topic exists.
    assert!(store.topics().iter().all(|t| t.name == mqstore::retry::SCHEDULE_TOPIC));
    assert!(matches!(store.send(Message::new("nope", "x")), Err(Error::InvalidArgument(_))));
    store.create_topic(TopicConfig::new("t", 2)).unwrap();
    assert!(matches!(store.send(Message::new("t", "")), Err(Error::InvalidArgument(_))));
    assert!(matches!(store.send(Message::new("t", vec![0u8; 5000])), Err(Error::MessageTooLarge { .. })));
    let mut ro = TopicConfig::new("t", 2);
    ro.permission = Permission::ReadOnly;
    store.create_topic(ro).unwrap();
    assert!(matches!(store.send(Message::new("t", "x")), Err(Error::InvalidArgument(_))));
    assert_eq!(store.commit_log().max_offset(), store.commit_log().min_offset().max(store.commit_log().max_offset()));
    assert!(matches!(Store::open(dir.path(), opts()), Err(Error::Locked { .. })));
    assert!(matches!(
        Store::open(dir.path(), opts().max_body_size(0)),
        Err(Error::InvalidArgument(m)) if m.contains("max_body_size")
    ));
    store.close().unwrap();
    assert!(matches!(store.send(Message::new("t", "x")), Err(Error::Closed)));
}

#[test]
fn dropping_the_last_handle_closes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    let clone = store.clone();
    clone.send(Message::new("t", "kept")).unwrap();
    drop(store);
    // One handle left: still open and locked.
    assert!(matches!(Store::open(dir.path(), opts()), Err(Error::Locked { .. })));
    drop(clone);
    let store = Store::open(dir.path(), opts()).unwrap();
    let r = store.pull("t", 0, 0, 10, &TagFilter::All).unwrap();
    assert_eq!(r.messages.len(), 1);
    store.close().unwrap();
}

#[test]
fn a_deleted_and_recreated_topic_starts_empty_even_after_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    for i in 0..5 {
        store.send(Message::new("t", format!("old-{i}"))).unwrap();
    }
    wait_dispatched(&store, "t", 0, 5);
    store.commit_offset("g", "t", 0, 5).unwrap();
    store.delete_topic("t").unwrap();
    assert_eq!(store.committed_offset("g", "t", 0), None);
    assert!(matches!(store.send(Message::new("t", "x")), Err(Error::InvalidArgument(_))));
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    for i in 0..3 {
        let r = store.send(Message::new("t", format!("new-{i}"))).unwrap();
        assert_eq!(r.queue_offset, i);
    }
    wait_dispatched(&store, "t", 0, 3);
    store.close().unwrap();
    // Force a rebuild of every queue from the start of the commit log.
    std::fs::remove_dir_all(dir.path().join("consumequeue")).unwrap();
    std::fs::remove_file(dir.path().join("config").join("dispatch")).unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let r = store.pull("t", 0, 0, 100, &TagFilter::All).unwrap();
    let bodies: Vec<_> = r.messages.iter().map(|m| String::from_utf8(m.body().to_vec()).unwrap()).collect();
    assert_eq!(bodies, ["new-0", "new-1", "new-2"]);
    store.close().unwrap();
}

#[test]
fn layout_settings_recorded_at_creation_win_over_later_options() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap(); // 8 units per file
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    for i in 0..50 {
        store.send(Message::new("t", body(i))).unwrap();
    }
    store.close().unwrap();
    // Opened with the defaults (300,000 units per file), as the CLI does.
    let defaults = StoreOptions::default()
        .commit_log_options(CommitLogOptions::default().segment_size(64 << 10).max_record_size(16 << 10))
        .max_body_size(4 << 10)
        .max_properties_size(1 << 10);
    let store = Store::open(dir.path(), defaults).unwrap();
    let r = store.pull("t", 0, 0, 100, &TagFilter::All).unwrap();
    assert_eq!(r.messages.len(), 50);
    store.send(Message::new("t", "more")).unwrap();
    wait_dispatched(&store, "t", 0, 51);
    store.close().unwrap();
}

#[test]
fn damaged_consume_queue_files_are_rebuilt_from_the_log() {
    for damage in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        store.create_topic(TopicConfig::new("t", 1)).unwrap();
        for i in 0..40 {
            store.send(Message::new("t", body(i))).unwrap();
        }
        store.close().unwrap();
        let qdir = dir.path().join("consumequeue").join("t").join("0");
        let mut files: Vec<_> = std::fs::read_dir(&qdir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let victim = &files[1];
        match damage {
            // Cut short.
            0 => std::fs::OpenOptions::new().write(true).open(victim).unwrap().set_len(30).unwrap(),
            // Garbage units.
            1 => std::fs::write(victim, vec![0xAB; 8 * 20]).unwrap(),
            // A stray file with a bad name.
            2 => std::fs::write(qdir.join("junk"), b"x").unwrap(),
            // Overlapping names.
            _ => std::fs::copy(victim, qdir.join(format!("{:020}", 3))).map(|_| ()).unwrap(),
        }
        let store = Store::open(dir.path(), opts()).unwrap_or_else(|e| panic!("damage {damage}: {e}"));
        let r = store.pull("t", 0, 0, 100, &TagFilter::All).unwrap();
        assert_eq!(r.messages.len(), 40, "damage {damage}");
        for (i, m) in r.messages.iter().enumerate() {
            assert_eq!(m.body().as_ref(), body(i).as_slice(), "damage {damage}");
        }
        store.close().unwrap();
    }
}

#[test]
fn a_unit_pointing_at_another_queues_record_is_an_error_not_a_wrong_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 2)).unwrap();
    let mut sent = Vec::new();
    for i in 0..6 {
        sent.push(store.send(Message::new("t", body(i))).unwrap());
    }
    store.close().unwrap();
    // Queue 0 holds messages 0, 2, 4 (round robin); point its unit 1 at
    // message 3 (queue 1), which lies between messages 2 and 4 in the log:
    // still monotone, so the unit passes the queue's own checks.
    let (m2, m3) = (&sent[2], &sent[3]);
    assert_eq!((m2.queue_id, m2.queue_offset, m3.queue_id), (0, 1, 1));
    let file = dir.path().join("consumequeue").join("t").join("0").join(format!("{:020}", 0));
    let mut bytes = std::fs::read(&file).unwrap();
    let unit = mqstore::consumequeue::CqUnit {
        physical_offset: m3.physical_offset,
        size: mqstore::consumequeue::CqUnit::decode(&bytes[20..40]).unwrap().size,
        tag_hash: 0,
    };
    bytes[20..40].copy_from_slice(&unit.encode());
    std::fs::write(&file, &bytes).unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    match store.pull("t", 0, 1, 1, &TagFilter::All) {
        Err(Error::Corruption { .. }) => {}
        // Recovery may also have noticed and rebuilt the queue.
        Ok(r) => assert_eq!(r.messages[0].body().as_ref(), body(2).as_slice()),
        Err(e) => panic!("{e:?}"),
    }
    store.close().unwrap();
}

/// A read that finds a damaged unit rebuilds the queue (a new queue
/// object); dispatch, which remembers the queues it wrote to, must then
/// write to the new one. Sends before and after the repair all arrive,
/// in order, on a store that stays open.
#[test]
fn a_queue_rebuilt_while_open_keeps_taking_messages() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    let sent: Vec<_> = (0..3).map(|i| store.send(Message::new("t", body(i))).unwrap()).collect();
    wait_dispatched(&store, "t", 0, 3);
    // Point unit 1 at message 2's record: the read notices (wrong queue
    // offset) and rebuilds the queue from the log.
    let file = dir.path().join("consumequeue").join("t").join("0").join(format!("{:020}", 0));
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&file).unwrap();
    let mut unit = [0u8; 20];
    f.read_exact_at(&mut unit, 40).unwrap();
    f.write_all_at(&unit, 20).unwrap();
    drop(f);
    assert_eq!(sent[2].queue_offset, 2);
    let r = store.pull("t", 0, 1, 1, &TagFilter::All).unwrap();
    assert_eq!(r.messages[0].body().as_ref(), body(1).as_slice());
    // Later sends go to the rebuilt queue.
    for i in 3..6 {
        store.send(Message::new("t", body(i))).unwrap();
    }
    wait_dispatched(&store, "t", 0, 6);
    let all = store.pull("t", 0, 0, 32, &TagFilter::All).unwrap();
    let bodies: Vec<Vec<u8>> = all.messages.iter().map(|m| m.body().to_vec()).collect();
    assert_eq!(bodies, (0..6).map(body).collect::<Vec<_>>());
    store.close().unwrap();
}

/// `ReadChecksums::Skip` trusts a record's bytes but not its framing: a
/// flipped body bit is delivered as stored, a damaged header field is
/// still an error. The default refuses both.
#[test]
fn skipping_read_checksums_still_checks_framing() {
    use mqstore::store::ReadChecksums;
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    let sent: Vec<_> = (0..3).map(|i| store.send(Message::new("t", body(i))).unwrap()).collect();
    store.close().unwrap();
    let seg = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join("commitlog").join(format!("{:020}", 0)))
        .unwrap();
    let flip = |at: u64| {
        let mut b = [0u8; 1];
        seg.read_exact_at(&mut b, at).unwrap();
        b[0] ^= 0x04;
        seg.write_all_at(&b, at).unwrap();
    };
    let pull = |checks: ReadChecksums| {
        let store = Store::open(dir.path(), opts().read_checksums(checks)).unwrap();
        let r = store.pull("t", 0, 1, 10, &TagFilter::All);
        store.close().unwrap();
        r
    };
    // The body's third byte from the end, in message 1 (the body ends the
    // record, and message 2 starts right after it).
    let body_byte = sent[2].physical_offset.get() - 3;
    flip(body_byte);
    assert!(matches!(pull(ReadChecksums::Verify), Err(Error::Corruption { .. })));
    let r = pull(ReadChecksums::Skip).unwrap();
    let bodies: Vec<Vec<u8>> = r.messages.iter().map(|m| m.body().to_vec()).collect();
    let mut damaged = body(1);
    let at = damaged.len() - 3;
    damaged[at] ^= 0x04;
    assert_eq!(bodies, vec![damaged, body(2)]);
    // The record's physical-offset field (bytes 28..36 of its header).
    flip(body_byte);
    flip(sent[1].physical_offset.get() + 35);
    for checks in [ReadChecksums::Verify, ReadChecksums::Skip] {
        match pull(checks) {
            Err(Error::Corruption { .. }) => {}
            other => panic!("{checks:?}: {other:?}"),
        }
    }
}
