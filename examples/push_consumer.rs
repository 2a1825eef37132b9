//! Push consumer: a clustering consumer group with a concurrent listener.
//! Two members of the group `billing` share the four queues of `orders`
//! (each queue has one owner), subscribe with the tag expression
//! `TagA || TagB`, and get batches of up to 4 messages on a few listener
//! threads. 1,000 messages tagged `TagA`, `TagB` and `TagC` are sent; every
//! `TagA`/`TagB` message is delivered exactly once, no `TagC` message is
//! delivered, and the group's committed offsets end at the end of every
//! queue (filtered messages are stepped over, not left behind).
//!
//! Run with `cargo run --release --example push_consumer`.

use mqstore::consumer::{ConsumeContext, ConsumeStatus, PushConsumer};
use mqstore::message::{Message, MessageExt};
use mqstore::store::{MessageQueue, Store, StoreOptions};
use mqstore::topic::TopicConfig;
use std::collections::BTreeSet;
use std::error::Error;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const TOPIC: &str = "orders";
const GROUP: &str = "billing";
const QUEUES: u32 = 4;
const MESSAGES: usize = 1_000;
const TAGS: [&str; 3] = ["TagA", "TagB", "TagC"];

/// What the listeners saw, shared by both members.
#[derive(Default)]
struct Seen {
    /// Deliveries per message number.
    per_message: Vec<AtomicU32>,
    /// Deliveries per member.
    per_member: [AtomicUsize; 2],
    /// Listener calls and the largest batch.
    batches: AtomicUsize,
    largest_batch: AtomicUsize,
    /// Messages whose body or tag was not what we sent.
    strange: AtomicUsize,
    /// Names of the listener threads that ran batches.
    threads: Mutex<BTreeSet<String>>,
}

impl Seen {
    fn delivered(&self) -> usize {
        self.per_member.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }
}

fn start_member(store: &Store, member: usize, seen: &Arc<Seen>) -> mqstore::Result<PushConsumer> {
    let seen = seen.clone();
    store
        .push_consumer(GROUP)
        .subscribe(TOPIC, "TagA || TagB")?
        .instance_name(&format!("billing-{}", member + 1))
        .consume_message_batch_max_size(4)
        .consume_threads(3)
        .listener(move |msgs: &[MessageExt], _ctx: &ConsumeContext| {
            seen.batches.fetch_add(1, Ordering::Relaxed);
            seen.largest_batch.fetch_max(msgs.len(), Ordering::Relaxed);
            if let Some(name) = std::thread::current().name() {
                seen.threads.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string());
            }
            for m in msgs {
                let n =
                    std::str::from_utf8(m.body()).ok().and_then(|b| b.strip_prefix("order-")?.parse::<usize>().ok());
                match (n.and_then(|n| seen.per_message.get(n)), m.tags()) {
                    (Some(count), Some("TagA" | "TagB")) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        seen.strange.fetch_add(1, Ordering::Relaxed);
                    }
                }
                seen.per_member[member].fetch_add(1, Ordering::Relaxed);
            }
            ConsumeStatus::Success
        })
        .start()
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

fn queue_ids(queues: &[MessageQueue]) -> Vec<u32> {
    queues.iter().map(|q| q.queue_id).collect()
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    store.create_topic(TopicConfig::new(TOPIC, QUEUES))?;

    // Two members of one clustering group: the queues are split between
    // them (default strategy: contiguous blocks).
    let seen = Arc::new(Seen { per_message: (0..MESSAGES).map(|_| AtomicU32::new(0)).collect(), ..Seen::default() });
    let members = [start_member(&store, 0, &seen)?, start_member(&store, 1, &seen)?];
    for c in &members {
        println!("{} holds queues {:?}", c.instance_name(), queue_ids(&c.assigned_queues()));
    }

    // Send 1,000 messages, tags rotating TagA, TagB, TagC.
    let started = Instant::now();
    let mut wanted = 0;
    for i in 0..MESSAGES {
        let tag = TAGS[i % TAGS.len()];
        store.send(Message::new(TOPIC, format!("order-{i}")).with_tags(tag))?;
        if tag != "TagC" {
            wanted += 1;
        }
    }
    println!("sent {MESSAGES} messages ({wanted} tagged TagA or TagB)");

    // Wait until every wanted message arrived and the group's offsets
    // reached the end of every queue (trailing TagC messages are skipped
    // by the filter and their offsets committed too).
    let at_end = || {
        (0..QUEUES).all(|q| {
            let end = store.max_offset(TOPIC, q).unwrap_or(u64::MAX);
            store.committed_offset(GROUP, TOPIC, q) == Some(end)
        })
    };
    wait_for("every delivery", Duration::from_secs(20), || seen.delivered() >= wanted && at_end())?;
    println!("{} deliveries in {:?}", seen.delivered(), started.elapsed());
    // Give any (wrong) extra delivery a moment to show up before checking.
    std::thread::sleep(Duration::from_millis(100));

    for c in members {
        c.shutdown()?;
    }
    let batches = seen.batches.load(Ordering::Relaxed);
    let largest = seen.largest_batch.load(Ordering::Relaxed);
    println!("{batches} listener calls, largest batch {largest} (limit 4)");
    let threads = seen.threads.lock().unwrap_or_else(PoisonError::into_inner).clone();
    println!("listener threads used: {}", threads.into_iter().collect::<Vec<_>>().join(", "));
    for (i, n) in seen.per_member.iter().enumerate() {
        println!("billing-{} consumed {} messages", i + 1, n.load(Ordering::Relaxed));
    }

    // Every TagA/TagB message exactly once, no TagC message at all.
    assert_eq!(seen.strange.load(Ordering::Relaxed), 0, "a message we did not send, or a TagC message, arrived");
    for (i, count) in seen.per_message.iter().enumerate() {
        let expected = u32::from(TAGS[i % TAGS.len()] != "TagC");
        assert_eq!(count.load(Ordering::Relaxed), expected, "order-{i} delivered a wrong number of times");
    }
    assert_eq!(seen.delivered(), wanted);
    assert!((1..=4).contains(&largest), "a batch exceeded consume_message_batch_max_size");
    assert!(seen.per_member.iter().all(|n| n.load(Ordering::Relaxed) > 0), "both members consume");

    // The group's committed offsets: each queue consumed to its end.
    for q in 0..QUEUES {
        let end = store.max_offset(TOPIC, q)?;
        let committed = store.committed_offset(GROUP, TOPIC, q);
        println!("queue {q}: {end} messages, group {GROUP} committed {committed:?}");
        assert_eq!(committed, Some(end));
    }
    println!("every TagA/TagB message delivered exactly once, no TagC message delivered");
    store.close()?;
    Ok(())
}
