//! Master/slave replication through the in-memory link: sync sends are
//! acknowledged only once the replica has the message, async lag is
//! reported and closes, the replica catches up after outages, drops and
//! duplicates, its log stays record-for-record equal to the master's, and
//! consumers reading from it see what consumers of the master see.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{body_for, seed, Rng};
use mqstore::commitlog::CommitLogOptions;
use mqstore::consumer::{ConsumeContext, ConsumeFrom, ConsumeStatus};
use mqstore::message::Message;
use mqstore::message::MessageExt;
use mqstore::replication::memory::{Faults, MemoryLink};
use mqstore::replication::{ReplicaAck, ReplicaProgress, ReplicationBatch, ReplicationMode, ReplicationOptions, Role};
use mqstore::store::{PullStatus, SendStatus, Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use mqstore::{Error, PhysicalOffset};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// Small segments (64 KiB), so runs cross segment rolls all the time.
fn small() -> StoreOptions {
    let log = CommitLogOptions::default().segment_size(64 << 10).max_record_size(16 << 10).prefault_window(64 << 10);
    StoreOptions::default().commit_log_options(log).max_body_size(8 << 10).max_properties_size(4 << 10)
}

fn master_opts(mode: ReplicationMode) -> StoreOptions {
    small().replication(ReplicationOptions::master(mode))
}

fn slave_opts() -> StoreOptions {
    small().replication(ReplicationOptions::slave())
}

struct Pair {
    master: Store,
    slave: Store,
    link: MemoryLink,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Pair {
    fn new(master: StoreOptions, slave: StoreOptions) -> Self {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let master = Store::open(d1.path(), master).unwrap();
        let slave = Store::open(d2.path(), slave).unwrap();
        let link = MemoryLink::new();
        master.attach_replicator(link.replicator()).unwrap();
        link.start(&master, &slave).unwrap();
        Self { master, slave, link, _dirs: (d1, d2) }
    }

    /// Waits until the slave's log ends where the master's does.
    fn caught_up(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (m, s) = (self.master.commit_log().max_offset(), self.slave.commit_log().max_offset());
            // Applied there, and the acknowledgement back here.
            if m == s && self.master.replication_status().replica.applied == m {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "slave at {s:?}, master at {m:?}; link {:?}, last error {:?}",
                self.link.stats(),
                self.link.last_error()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn close(self) {
        self.link.stop();
        self.master.close().unwrap();
        self.slave.close().unwrap();
    }
}

/// Every record of both logs: same offsets, same CRCs, same bytes.
fn assert_logs_equal(master: &Store, slave: &Store) {
    let a: Vec<_> = master.commit_log().iter(PhysicalOffset(0)).map(|r| r.unwrap()).collect();
    let b: Vec<_> = slave.commit_log().iter(PhysicalOffset(0)).map(|r| r.unwrap()).collect();
    assert_eq!(a.len(), b.len(), "record counts differ");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.offset(), x.crc()), (y.offset(), y.crc()));
        assert_eq!(x.encoded(), y.encoded());
    }
}

/// Every queue of `topic`: (queue id, queue offset) -> body, read by pull.
fn queue_contents(store: &Store, topic: &str) -> BTreeMap<(u32, u64), Vec<u8>> {
    let cfg = store.topic(topic).expect("topic exists");
    let mut out = BTreeMap::new();
    for q in 0..cfg.read_queues {
        let mut from = 0;
        loop {
            let r = store.pull(topic, q, from, 64, &TagFilter::All).unwrap();
            if r.status != PullStatus::Found {
                break;
            }
            for m in &r.messages {
                out.insert((q, m.queue_offset().get()), m.body().to_vec());
            }
            from = r.next_offset;
        }
    }
    out
}

/// Waits until the slave's consume queues hold everything its log does.
fn dispatched(store: &Store, topic: &str, expect: usize) {
    let deadline = Instant::now() + WAIT;
    while queue_contents(store, topic).len() < expect {
        assert!(Instant::now() < deadline, "slave dispatched fewer than {expect} messages of {topic}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sync_send_returns_ok_only_once_the_replica_has_the_message() {
    let pair = Pair::new(master_opts(ReplicationMode::Sync), slave_opts());
    pair.master.create_topic(TopicConfig::new("t", 4)).unwrap();
    // A slow link: a send that did not wait would return long before.
    pair.link.set_faults(Faults { delay: Duration::from_millis(5), ..Faults::default() });
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (m, s) = (pair.master.clone(), pair.slave.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    let started = Instant::now();
                    let r = m.send(Message::new("t", body_for(t * 1000 + i, 64))).unwrap();
                    assert_eq!(r.status, SendStatus::SendOk);
                    assert!(started.elapsed() >= Duration::from_millis(5), "acknowledged without the link");
                    let have = s.replica_progress().applied;
                    assert!(have > r.physical_offset, "SendOk at {:?}, slave only at {have:?}", r.physical_offset);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    pair.caught_up();
    assert_logs_equal(&pair.master, &pair.slave);
    pair.close();
}

#[test]
fn durable_acks_wait_for_the_replica_fsync() {
    let slave = slave_opts().replication(ReplicationOptions::slave().ack(ReplicaAck::Durable));
    let master = master_opts(ReplicationMode::Sync)
        .replication(ReplicationOptions::master(ReplicationMode::Sync).ack(ReplicaAck::Durable));
    let pair = Pair::new(master, slave);
    pair.master.create_topic(TopicConfig::new("t", 2)).unwrap();
    for i in 0..100 {
        let r = pair.master.send(Message::new("t", body_for(i, 100))).unwrap();
        assert_eq!(r.status, SendStatus::SendOk);
        let durable = pair.slave.commit_log().flushed_offset();
        assert!(durable > r.physical_offset, "SendOk before the replica synced {:?}", r.physical_offset);
    }
    pair.close();
}

#[test]
fn sync_mode_reports_missing_and_slow_replicas_and_never_degrades() {
    // No replica at all: stored, but never reported as replicated.
    let dir = tempfile::tempdir().unwrap();
    let lone = Store::open(dir.path(), master_opts(ReplicationMode::Sync)).unwrap();
    lone.create_topic(TopicConfig::new("t", 1)).unwrap();
    let r = lone.send(Message::new("t", "x")).unwrap();
    assert_eq!(r.status, SendStatus::SlaveNotAvailable);
    assert_eq!(lone.pull("t", 0, 0, 8, &TagFilter::All).unwrap().messages.len(), 1, "stored on the master");
    lone.close().unwrap();

    // A replica slower than the timeout. The timeout is long enough that
    // a send on a loaded machine never takes it without waiting for it.
    let timeout = Duration::from_millis(300);
    let master = master_opts(ReplicationMode::Sync)
        .replication(ReplicationOptions::master(ReplicationMode::Sync).timeout(timeout));
    let pair = Pair::new(master, slave_opts());
    pair.master.create_topic(TopicConfig::new("t", 1)).unwrap();
    pair.link.set_faults(Faults { delay: timeout * 3, ..Faults::default() });
    let r = pair.master.send(Message::new("t", "slow")).unwrap();
    assert_eq!(r.status, SendStatus::FlushSlaveTimeout);
    // The link goes down: sends say so at once instead of waiting.
    pair.link.set_faults(Faults { disconnected: true, ..Faults::default() });
    let deadline = Instant::now() + WAIT;
    while pair.master.replication_status().connected {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    let started = Instant::now();
    let r = pair.master.send(Message::new("t", "down")).unwrap();
    assert_eq!(r.status, SendStatus::SlaveNotAvailable);
    assert!(started.elapsed() < timeout, "waited {:?} for a replica known to be down", started.elapsed());
    // Back up: the replica catches up and sends succeed again.
    pair.link.set_faults(Faults::default());
    pair.caught_up();
    let r = pair.master.send(Message::new("t", "up")).unwrap();
    assert_eq!(r.status, SendStatus::SendOk);
    assert_eq!(queue_contents(&pair.master, "t").len(), 3);
    dispatched(&pair.slave, "t", 3);
    pair.close();
}

#[test]
fn lagging_replica_counts_as_unavailable() {
    let master = master_opts(ReplicationMode::Sync)
        .replication(ReplicationOptions::master(ReplicationMode::Sync).max_lag_bytes(4096));
    let pair = Pair::new(master, slave_opts());
    pair.master.create_topic(TopicConfig::new("t", 1)).unwrap();
    pair.link.set_faults(Faults { disconnected: true, ..Faults::default() });
    while pair.master.replication_status().connected {
        std::thread::sleep(Duration::from_millis(2));
    }
    for i in 0..20 {
        let _ = pair.master.send(Message::new("t", body_for(i, 512))).unwrap();
    }
    // Reconnected, but more than 4 KiB behind until it catches up: a send
    // either finds it caught up (SendOk) or says it is not available, and
    // never reports success before the replica has the message.
    pair.link.set_faults(Faults { delay: Duration::from_millis(20), ..Faults::default() });
    let deadline = Instant::now() + WAIT;
    while !pair.master.replication_status().connected {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    let r = pair.master.send(Message::new("t", "during catch-up")).unwrap();
    assert_eq!(r.status, SendStatus::SlaveNotAvailable, "{:?}", pair.master.replication_status());
    pair.link.set_faults(Faults::default());
    pair.caught_up();
    assert_eq!(pair.master.send(Message::new("t", "after")).unwrap().status, SendStatus::SendOk);
    pair.close();
}

#[test]
fn async_lag_is_reported_and_closes() {
    let pair = Pair::new(master_opts(ReplicationMode::Async), slave_opts());
    pair.master.create_topic(TopicConfig::new("t", 4)).unwrap();
    pair.link.set_faults(Faults { delay: Duration::from_millis(2), ..Faults::default() });
    let mut max_lag = 0;
    for i in 0..3000 {
        let r = pair.master.send(Message::new("t", body_for(i, 200))).unwrap();
        assert_eq!(r.status, SendStatus::SendOk, "async sends never wait for the replica");
        max_lag = max_lag.max(pair.master.replication_status().lag_bytes);
    }
    assert!(max_lag > 0, "the slow link never showed a lag");
    pair.link.set_faults(Faults::default());
    pair.caught_up();
    let deadline = Instant::now() + WAIT;
    while pair.master.replication_status().lag_bytes > 0 {
        assert!(Instant::now() < deadline, "{:?}", pair.master.replication_status());
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_logs_equal(&pair.master, &pair.slave);
    pair.close();
}

#[test]
fn replica_catches_up_after_outages_drops_and_duplicates() {
    let s = seed();
    println!("seed {s}");
    let mut rng = Rng(s);
    let pair = Pair::new(master_opts(ReplicationMode::Async), slave_opts());
    pair.master.create_topic(TopicConfig::new("a", 3)).unwrap();
    pair.master.create_topic(TopicConfig::new("b", 2)).unwrap();
    pair.link.set_faults(Faults { drop_every: 5, duplicate_every: 3, ..Faults::default() });
    let mut sent = 0usize;
    for round in 0..6 {
        if round % 2 == 1 {
            pair.link.set_faults(Faults { disconnected: true, ..Faults::default() });
        } else {
            pair.link.set_faults(Faults { drop_every: 5, duplicate_every: 3, ..Faults::default() });
        }
        for _ in 0..500 {
            let topic = if rng.below(2) == 0 { "a" } else { "b" };
            let len = 1 + rng.below(900) as usize;
            pair.master.send(Message::new(topic, body_for(sent as u64, len))).unwrap();
            sent += 1;
        }
    }
    pair.link.set_faults(Faults::default());
    pair.caught_up();
    let stats = pair.link.stats();
    assert!(stats.dropped > 0 && stats.duplicated > 0 && stats.reconnects > 0, "{stats:?}");
    assert_logs_equal(&pair.master, &pair.slave);
    let (a, b) = (queue_contents(&pair.master, "a"), queue_contents(&pair.master, "b"));
    assert_eq!(a.len() + b.len(), sent);
    dispatched(&pair.slave, "a", a.len());
    dispatched(&pair.slave, "b", b.len());
    assert_eq!(queue_contents(&pair.slave, "a"), a);
    assert_eq!(queue_contents(&pair.slave, "b"), b);
    assert!(pair.master.commit_log().segment_count() > 3, "the test should cross segment rolls");
    pair.close();
}

#[test]
fn slave_refuses_writes_and_serves_the_same_messages() {
    let pair = Pair::new(master_opts(ReplicationMode::Sync), slave_opts());
    pair.master.create_topic(TopicConfig::new("orders", 4)).unwrap();
    for i in 0..400 {
        let m = Message::new("orders", body_for(i, 50)).with_tags(if i % 2 == 0 { "even" } else { "odd" });
        assert_eq!(pair.master.send(m).unwrap().status, SendStatus::SendOk);
    }
    // Delayed messages are delivered by the master; the slave receives the
    // delivered copies as records.
    for i in 0..5 {
        pair.master.send(Message::new("orders", body_for(1000 + i, 50)).with_delay_level(1)).unwrap();
    }
    assert!(matches!(pair.slave.send(Message::new("orders", "no")), Err(Error::ReadOnlyReplica)));
    assert_eq!(pair.slave.replication_status().role, Role::Slave);
    let deadline = Instant::now() + WAIT;
    while queue_contents(&pair.master, "orders").len() < 405 {
        assert!(Instant::now() < deadline, "delayed messages not delivered on the master");
        std::thread::sleep(Duration::from_millis(20));
    }
    pair.caught_up();
    dispatched(&pair.slave, "orders", 405);
    assert_eq!(queue_contents(&pair.slave, "orders"), queue_contents(&pair.master, "orders"));
    // A consumer group on each side consumes the same messages.
    let consume_all = |store: &Store| {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let c = store
            .push_consumer("readers")
            .subscribe("orders", "*")
            .unwrap()
            .consume_from(ConsumeFrom::FirstOffset)
            .listener(move |msgs: &[MessageExt], _: &ConsumeContext| {
                g.lock().unwrap().extend(msgs.iter().map(|m| m.body().to_vec()));
                ConsumeStatus::Success
            })
            .start()
            .unwrap();
        let deadline = Instant::now() + WAIT;
        while got.lock().unwrap().len() < 405 {
            assert!(Instant::now() < deadline, "consumed {} of 405", got.lock().unwrap().len());
            std::thread::sleep(Duration::from_millis(5));
        }
        c.shutdown().unwrap();
        let mut v = got.lock().unwrap().clone();
        v.sort();
        v
    };
    assert_eq!(consume_all(&pair.slave), consume_all(&pair.master));
    // Tag filters work on the slave's own queues.
    let even = pair.slave.pull("orders", 0, 0, 1000, &TagFilter::parse("even").unwrap()).unwrap();
    assert!(even.messages.iter().all(|m| m.tags() == Some("even")));
    // Lookups by key and id work on the slave's own index.
    let any = pair.slave.pull("orders", 1, 0, 1, &TagFilter::All).unwrap().messages.remove(0);
    let found = pair.slave.message_by_id(any.msg_id().unwrap()).unwrap().expect("indexed on the slave");
    assert_eq!(found.body(), any.body());
    pair.close();
}

#[test]
fn bad_reports_and_bad_runs_are_refused_and_change_nothing() {
    let pair = Pair::new(master_opts(ReplicationMode::Async), slave_opts());
    pair.master.create_topic(TopicConfig::new("t", 1)).unwrap();
    for i in 0..50 {
        pair.master.send(Message::new("t", body_for(i, 100))).unwrap();
    }
    pair.caught_up();
    let end = pair.master.commit_log().max_offset();
    let beyond = PhysicalOffset(end.get() + 1000);
    let ahead = ReplicaProgress { applied: beyond, durable: beyond };
    assert!(matches!(pair.master.replica_ack(ahead), Err(Error::ReplicaAhead { .. })));
    assert!(matches!(pair.master.replica_connected(ahead), Err(Error::ReplicaAhead { .. })));
    let inverted = ReplicaProgress { applied: PhysicalOffset(100), durable: end };
    assert!(matches!(pair.master.replica_ack(inverted), Err(Error::InvalidArgument(_))));
    let mid_record = ReplicaProgress { applied: PhysicalOffset(end.get() - 3), durable: PhysicalOffset(0) };
    assert!(matches!(pair.master.replica_connected(mid_record), Err(Error::InvalidArgument(_))));
    assert!(
        pair.master.apply_replicated(ReplicationBatch { prev_end: end, offset: end, records: &[] }).is_err(),
        "master"
    );
    pair.link.stop();

    // The slave: a run past its end, garbage, and a changed record.
    let slave_end = pair.slave.commit_log().max_offset();
    pair.master.send(Message::new("t", "one")).unwrap();
    pair.master.send(Message::new("t", "two")).unwrap();
    let newer: Vec<_> = pair.master.commit_log().iter(slave_end).map(|r| r.unwrap()).collect();
    let second = &newer[1];
    let gap = ReplicationBatch { prev_end: second.offset(), offset: second.offset(), records: second.encoded() };
    assert!(matches!(pair.slave.apply_replicated(gap), Err(Error::ReplicationGap { .. })));
    let rec = pair.master.commit_log().iter(PhysicalOffset(0)).next().unwrap().unwrap();
    let garbage = vec![0xA5u8; 300];
    let junk = ReplicationBatch { prev_end: slave_end, offset: slave_end, records: &garbage };
    assert!(matches!(pair.slave.apply_replicated(junk), Err(Error::InvalidArgument(_))));
    let mut changed = rec.encoded().to_vec();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    let bad_crc = ReplicationBatch { prev_end: rec.offset(), offset: rec.offset(), records: &changed };
    assert!(pair.slave.apply_replicated(bad_crc).is_err(), "a damaged record is refused");
    assert_eq!(pair.slave.commit_log().max_offset(), slave_end, "nothing was written");
    // A duplicate of records it has is accepted and changes nothing.
    let dup = ReplicationBatch { prev_end: rec.offset(), offset: rec.offset(), records: rec.encoded() };
    assert_eq!(pair.slave.apply_replicated(dup).unwrap().applied, slave_end);
    // The two it missed, in order, bring it level again.
    for r in &newer {
        let b = ReplicationBatch { prev_end: r.offset(), offset: r.offset(), records: r.encoded() };
        pair.slave.apply_replicated(b).unwrap();
    }
    assert_logs_equal(&pair.master, &pair.slave);
    pair.master.close().unwrap();
    pair.slave.close().unwrap();
}

#[test]
fn slave_restarts_from_its_recovered_end() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Store::open(d1.path(), master_opts(ReplicationMode::Async)).unwrap();
    master.create_topic(TopicConfig::new("t", 2)).unwrap();
    let link = MemoryLink::new();
    master.attach_replicator(link.replicator()).unwrap();
    let mut sent = 0u64;
    for round in 0..3 {
        let slave = Store::open(d2.path(), slave_opts()).unwrap();
        link.start(&master, &slave).unwrap();
        for _ in 0..300 {
            master.send(Message::new("t", body_for(sent, 300))).unwrap();
            sent += 1;
        }
        let pair_end = master.commit_log().max_offset();
        let deadline = Instant::now() + WAIT;
        while slave.commit_log().max_offset() < pair_end {
            assert!(Instant::now() < deadline, "round {round}: {:?}", link.last_error());
            std::thread::sleep(Duration::from_millis(2));
        }
        // The slave goes away (a clean stop here; the crash tests kill
        // it) and comes back from what it recovered.
        link.stop();
        slave.close().unwrap();
    }
    let slave = Store::open(d2.path(), slave_opts()).unwrap();
    assert_eq!(slave.commit_log().max_offset(), master.commit_log().max_offset());
    assert_logs_equal(&master, &slave);
    assert_eq!(queue_contents(&slave, "t"), queue_contents(&master, "t"));
    slave.close().unwrap();
    master.close().unwrap();
}

/// The master comes back with less than the slave has (its tail lost, as
/// after a power loss in async flush mode): the reconnect is refused, the
/// slave is cut back to the master's end, and replication resumes with the
/// two logs equal.
#[test]
fn slave_ahead_of_a_restarted_master_is_cut_back() {
    let (d1, d2, image) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Store::open(d1.path(), master_opts(ReplicationMode::Async)).unwrap();
    let slave = Store::open(d2.path(), slave_opts()).unwrap();
    master.create_topic(TopicConfig::new("t", 3)).unwrap();
    let link = MemoryLink::new();
    master.attach_replicator(link.replicator()).unwrap();
    link.start(&master, &slave).unwrap();
    let send = |m: &Store, from: u64, n: u64| {
        for i in from..from + n {
            m.send(Message::new("t", body_for(i, 400)).with_keys([format!("k{i}")])).unwrap();
        }
    };
    send(&master, 0, 500);
    // The image the master will come back from.
    common::copy_dir(d1.path(), image.path());
    send(&master, 500, 500);
    let end = master.commit_log().max_offset();
    let deadline = Instant::now() + WAIT;
    while slave.commit_log().max_offset() < end {
        assert!(Instant::now() < deadline, "{:?}", link.last_error());
        std::thread::sleep(Duration::from_millis(2));
    }
    link.stop();
    master.close().unwrap();
    drop(master);

    let master = Store::open(image.path(), master_opts(ReplicationMode::Async)).unwrap();
    let behind = master.commit_log().max_offset();
    assert!(behind < slave.commit_log().max_offset());
    let link = MemoryLink::new();
    master.attach_replicator(link.replicator()).unwrap();
    match link.start(&master, &slave) {
        Err(Error::ReplicaAhead { master: m, .. }) => assert_eq!(m, behind.get()),
        other => panic!("expected ReplicaAhead, got {other:?}"),
    }
    slave.close().unwrap();
    drop(slave);
    // Refused while open, done while closed.
    let slave_dir = d2.path();
    let held = Store::open(slave_dir, slave_opts()).unwrap();
    assert!(matches!(
        mqstore::replication::truncate_slave(slave_dir, &slave_opts(), behind),
        Err(Error::Locked { .. })
    ));
    held.close().unwrap();
    drop(held);
    let cut = mqstore::replication::truncate_slave(slave_dir, &slave_opts(), behind).unwrap();
    assert_eq!(cut, behind);
    let slave = Store::open(slave_dir, slave_opts()).unwrap();
    assert_eq!(slave.commit_log().max_offset(), behind);
    link.start(&master, &slave).unwrap();
    // New messages (and the lost ones sent again) flow to the cut slave.
    send(&master, 500, 600);
    let pair = Pair { master, slave, link, _dirs: (image, d1) };
    pair.caught_up();
    assert_logs_equal(&pair.master, &pair.slave);
    dispatched(&pair.slave, "t", queue_contents(&pair.master, "t").len());
    assert_eq!(queue_contents(&pair.slave, "t"), queue_contents(&pair.master, "t"));
    // The slave's index: the cut copies of k500..k999 are gone, the
    // copies sent again are found, once each.
    for key in ["k10", "k700", "k1099"] {
        let found = pair.slave.query_by_key("t", key, 0, u64::MAX, 10).unwrap();
        assert_eq!(found.len(), 1, "{key}");
        assert_eq!(found.len(), pair.master.query_by_key("t", key, 0, u64::MAX, 10).unwrap().len());
    }
    pair.close();
    drop(d2);
}

#[test]
fn a_cut_inside_a_record_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let slave = Store::open(dir.path(), slave_opts()).unwrap();
    // Fill the slave from a master through the link, then close both.
    let mdir = tempfile::tempdir().unwrap();
    let master = Store::open(mdir.path(), master_opts(ReplicationMode::Sync)).unwrap();
    master.create_topic(TopicConfig::new("t", 1)).unwrap();
    let link = MemoryLink::new();
    master.attach_replicator(link.replicator()).unwrap();
    link.start(&master, &slave).unwrap();
    let mut offsets = Vec::new();
    for i in 0..50 {
        let r = master.send(Message::new("t", body_for(i, 300))).unwrap();
        assert_eq!(r.status, SendStatus::SendOk);
        offsets.push(r.physical_offset);
    }
    link.stop();
    let end = slave.commit_log().max_offset();
    slave.close().unwrap();
    drop(slave);
    let inside = PhysicalOffset(offsets[20].get() + 7);
    assert!(matches!(
        mqstore::replication::truncate_slave(dir.path(), &slave_opts(), inside),
        Err(Error::ReplicaDiverged { .. })
    ));
    assert!(mqstore::replication::truncate_slave(dir.path(), &master_opts(ReplicationMode::Sync), offsets[20]).is_err());
    let slave = Store::open(dir.path(), slave_opts()).unwrap();
    assert_eq!(slave.commit_log().max_offset(), end, "nothing was cut");
    slave.close().unwrap();
    // A cut at a record boundary keeps exactly the records before it.
    assert_eq!(mqstore::replication::truncate_slave(dir.path(), &slave_opts(), offsets[20]).unwrap(), offsets[20]);
    let slave = Store::open(dir.path(), slave_opts()).unwrap();
    dispatched(&slave, "t", 20);
    assert_eq!(queue_contents(&slave, "t").len(), 20);
    slave.close().unwrap();
    master.close().unwrap();
}

/// Ships nothing anywhere: the replica's progress comes only from the
/// test's own reports.
struct Nowhere;

impl mqstore::replication::Replicator for Nowhere {
    fn ship(&self, _batch: ReplicationBatch<'_>) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn retention_keeps_what_a_connected_replica_lacks_and_a_replica_left_behind_is_refused() {
    use mqstore::store::{Holder, Retention, RetentionOptions};
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(mqstore::ManualClock::new(1_700_000_000_000));
    let log = CommitLogOptions::default().segment_size(16 << 10).max_record_size(8 << 10).clock(clock.clone());
    let opts = StoreOptions::default()
        .commit_log_options(log)
        .max_body_size(4 << 10)
        .max_properties_size(1 << 10)
        .retention(RetentionOptions::default().interval(Duration::from_secs(3600)).max_segments_per_round(1000))
        .replication(ReplicationOptions::master(ReplicationMode::Async));
    let master = Store::open(dir.path(), opts).unwrap();
    master.attach_replicator(Arc::new(Nowhere)).unwrap();
    master.create_topic(TopicConfig::new("t", 2)).unwrap();
    let start = master.commit_log().min_offset();
    let at_start = ReplicaProgress { applied: start, durable: start };
    master.replica_connected(at_start).unwrap();
    for i in 0..100u64 {
        master.send(Message::new("t", body_for(i, 900))).unwrap();
    }
    master.commit_log().flush().unwrap();
    clock.advance_ms(73 * 3600 * 1000);
    master.send(Message::new("t", "fresh")).unwrap();
    master.commit_log().flush().unwrap();
    // The connected replica has nothing yet: every segment stays for it.
    let r = master.run_retention(Retention::Normal).unwrap();
    assert!(r.removed.is_empty(), "{r:?}");
    assert!(r.kept_for.iter().any(|h| matches!(h, Holder::Replica { .. })), "{r:?}");
    // It goes away; the expired segments go.
    master.replica_disconnected();
    let r = master.run_retention(Retention::Normal).unwrap();
    assert!(!r.removed.is_empty(), "{r:?}");
    // Coming back from where it stopped, it is told it must be seeded again.
    let e = master.replica_connected(at_start).unwrap_err();
    let first = master.commit_log().min_offset().get();
    assert!(matches!(e, Error::ReplicationGap { expected, got } if expected == start.get() && got == first), "{e:?}");
    assert!(!master.replication_status().connected);
    // A replica that has everything up to the end is welcome.
    let end = master.commit_log().max_offset();
    master.replica_connected(ReplicaProgress { applied: end, durable: end }).unwrap();
    master.close().unwrap();
}
