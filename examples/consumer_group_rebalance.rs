//! Consumer group rebalance: while a producer thread keeps sending, members
//! join and leave the clustering group `analytics`, and the eight queues of
//! `clicks` are re-shared among them each time (`AveragelyByCircle`:
//! member `i` of `N` reads queues `i, i+N, ...`). A `RebalanceListener`
//! prints each member's revocations and assignments, and every member's
//! `assigned_queues()` is printed after each change. Hand-overs are clean:
//! a queue's old owner finishes its in-flight work and commits before the
//! new owner starts at that offset, so at the end every message was
//! consumed (nothing skipped) and none twice.
//!
//! Run with `cargo run --release --example consumer_group_rebalance`.

use mqstore::consumer::rebalance::AveragelyByCircle;
use mqstore::consumer::{ConsumeContext, ConsumeFrom, ConsumeStatus, PushConsumer, RebalanceListener};
use mqstore::message::{Message, MessageExt};
use mqstore::store::{MessageQueue, Store, StoreOptions};
use mqstore::topic::TopicConfig;
use std::collections::BTreeMap;
use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "clicks";
const GROUP: &str = "analytics";
const QUEUES: u32 = 8;
const MESSAGES: usize = 3_000;

/// `q0 q3 q6`, sorted (revocations arrive in no particular order).
fn queue_ids(queues: &[MessageQueue]) -> String {
    let mut ids: Vec<u32> = queues.iter().map(|q| q.queue_id).collect();
    ids.sort_unstable();
    let ids: Vec<String> = ids.iter().map(|q| format!("q{q}")).collect();
    if ids.is_empty() {
        "-".to_string()
    } else {
        ids.join(" ")
    }
}

/// Prints what a rebalance does to one member.
struct Announce {
    name: String,
    epoch: Instant,
}

impl RebalanceListener for Announce {
    fn on_revoke(&self, queues: &[MessageQueue]) {
        println!("  [{:>4} ms] {}: revoked  {}", self.epoch.elapsed().as_millis(), self.name, queue_ids(queues));
    }
    fn on_assign(&self, queues: &[MessageQueue]) {
        println!("  [{:>4} ms] {}: assigned {}", self.epoch.elapsed().as_millis(), self.name, queue_ids(queues));
    }
}

/// Deliveries per message number, and per member.
struct Tally {
    per_message: Vec<AtomicU32>,
    per_member: BTreeMap<&'static str, AtomicUsize>,
    strange: AtomicUsize,
}

const MEMBERS: [&str; 4] = ["c1", "c2", "c3", "c4"];

fn start(store: &Store, name: &'static str, tally: &Arc<Tally>, epoch: Instant) -> mqstore::Result<PushConsumer> {
    println!("[{:>4} ms] {name} joins", epoch.elapsed().as_millis());
    let tally = tally.clone();
    store
        .push_consumer(GROUP)
        .subscribe(TOPIC, "*")?
        .instance_name(name)
        .allocate_strategy(AveragelyByCircle)
        .rebalance_listener(Announce { name: name.to_string(), epoch })
        // The group has no offsets when c1 starts, and messages are already
        // there: start from the beginning of each queue.
        .consume_from(ConsumeFrom::FirstOffset)
        .consume_message_batch_max_size(8)
        .consume_threads(2)
        .listener(move |msgs: &[MessageExt], _ctx: &ConsumeContext| {
            for m in msgs {
                let n =
                    std::str::from_utf8(m.body()).ok().and_then(|b| b.strip_prefix("click-")?.parse::<usize>().ok());
                match n.and_then(|n| tally.per_message.get(n)) {
                    Some(count) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        tally.strange.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(c) = tally.per_member.get(name) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            // A little work per batch, so hand-overs meet batches in flight.
            std::thread::sleep(Duration::from_micros(200));
            ConsumeStatus::Success
        })
        .start()
}

fn show(members: &BTreeMap<&str, PushConsumer>) {
    for (name, c) in members {
        println!("           {name} holds {}", queue_ids(&c.assigned_queues()));
    }
}

/// Polls `done` until it holds or `timeout` passes.
fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    store.create_topic(TopicConfig::new(TOPIC, QUEUES))?;
    let tally = Arc::new(Tally {
        per_message: (0..MESSAGES).map(|_| AtomicU32::new(0)).collect(),
        per_member: MEMBERS.iter().map(|m| (*m, AtomicUsize::new(0))).collect(),
        strange: AtomicUsize::new(0),
    });
    let epoch = Instant::now();

    // The producer: 3,000 messages over about a second and a half.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (store, producing) = (store.clone(), producing.clone());
        std::thread::spawn(move || -> mqstore::Result<()> {
            for i in 0..MESSAGES {
                store.send(Message::new(TOPIC, format!("click-{i}")))?;
                if i % 2 == 1 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            producing.store(false, Ordering::Release);
            Ok(())
        })
    };

    // Membership changes every 200 ms while the producer runs.
    let pause = || std::thread::sleep(Duration::from_millis(200));
    let mut members: BTreeMap<&str, PushConsumer> = BTreeMap::new();
    std::thread::sleep(Duration::from_millis(100));
    for step in ["+c1", "+c2", "+c3", "-c1", "+c4", "-c2"] {
        let (join, name) = step.split_at(1);
        let name = MEMBERS.iter().copied().find(|m| *m == name).ok_or("unknown member")?;
        if join == "+" {
            members.insert(name, start(&store, name, &tally, epoch)?);
        } else if let Some(c) = members.remove(name) {
            println!("[{:>4} ms] {name} leaves", epoch.elapsed().as_millis());
            c.shutdown()?;
        }
        show(&members);
        pause();
    }
    if producing.load(Ordering::Acquire) {
        println!("[{:>4} ms] (the producer was sending throughout)", epoch.elapsed().as_millis());
    }
    producer.join().map_err(|_| "the producer thread panicked")??;
    println!("[{:>4} ms] producer finished: {MESSAGES} messages sent", epoch.elapsed().as_millis());

    // Let the remaining members drain, then stop them.
    let consumed = || tally.per_message.iter().filter(|c| c.load(Ordering::Relaxed) > 0).count();
    wait_for("every message", Duration::from_secs(20), || consumed() == MESSAGES)?;
    std::thread::sleep(Duration::from_millis(100));
    println!("[{:>4} ms] all {MESSAGES} messages consumed; stopping", epoch.elapsed().as_millis());
    for (name, c) in members {
        println!("[{:>4} ms] {name} leaves", epoch.elapsed().as_millis());
        c.shutdown()?;
    }

    for (name, n) in &tally.per_member {
        println!("{name} consumed {} messages", n.load(Ordering::Relaxed));
    }
    assert_eq!(tally.strange.load(Ordering::Relaxed), 0, "a message we did not send arrived");
    let missing: Vec<usize> = (0..MESSAGES).filter(|&i| tally.per_message[i].load(Ordering::Relaxed) == 0).collect();
    let duplicates: u32 = tally.per_message.iter().map(|c| c.load(Ordering::Relaxed).saturating_sub(1)).sum();
    println!("missing: {}, duplicate deliveries: {duplicates}", missing.len());
    assert!(missing.is_empty(), "skipped messages: {missing:?}");
    // Every hand-over here is clean (no batch was waiting for a
    // re-delivery), so nothing is delivered twice.
    assert_eq!(duplicates, 0, "a clean hand-over re-delivered messages");
    for q in 0..QUEUES {
        assert_eq!(store.committed_offset(GROUP, TOPIC, q), Some(store.max_offset(TOPIC, q)?));
    }
    println!("group {GROUP} committed every queue to its end");
    store.close()?;
    Ok(())
}
