//! Broadcast consumer: three members of the group `cache-refresh`, in
//! `MessageModel::Broadcasting`, each receive *every* message (in
//! clustering they would share them). Each member keeps its own offsets,
//! under the offset group `cache-refresh%<instance name>`, so the instance
//! names are stable: `node-b` is stopped, misses a few messages while it is
//! down, and on restart under the same name resumes where it stopped,
//! getting exactly the messages it missed.
//!
//! Run with `cargo run --release --example broadcast_consumer`.

use mqstore::consumer::{ConsumeContext, ConsumeFrom, ConsumeStatus, MessageModel, PushConsumer};
use mqstore::message::{Message, MessageExt};
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use std::collections::BTreeMap;
use std::error::Error;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const TOPIC: &str = "config-updates";
const GROUP: &str = "cache-refresh";
const QUEUES: u32 = 2;
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Deliveries per node: body -> times received.
type Received = Arc<Mutex<BTreeMap<String, BTreeMap<String, u32>>>>;

fn start_node(store: &Store, node: &str, received: &Received) -> mqstore::Result<PushConsumer> {
    let (name, received) = (node.to_string(), received.clone());
    store
        .push_consumer(GROUP)
        .subscribe(TOPIC, "*")?
        .message_model(MessageModel::Broadcasting)
        .instance_name(node)
        .consume_from(ConsumeFrom::FirstOffset)
        .consume_threads(2)
        .listener(move |msgs: &[MessageExt], _ctx: &ConsumeContext| {
            let mut r = received.lock().unwrap_or_else(PoisonError::into_inner);
            let mine = r.entry(name.clone()).or_default();
            for m in msgs {
                *mine.entry(String::from_utf8_lossy(m.body()).into_owned()).or_default() += 1;
            }
            ConsumeStatus::Success
        })
        .start()
}

/// How many distinct messages `node` received.
fn count(received: &Received, node: &str) -> usize {
    received.lock().unwrap_or_else(PoisonError::into_inner).get(node).map_or(0, BTreeMap::len)
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

/// Prints `node`'s own committed offsets and checks they are at the end of
/// every queue.
fn show_offsets(store: &Store, node: &str) -> Result<(), Box<dyn Error>> {
    let offset_group = format!("{GROUP}%{node}");
    let mut parts = Vec::new();
    for q in 0..QUEUES {
        let (committed, end) = (store.committed_offset(&offset_group, TOPIC, q), store.max_offset(TOPIC, q)?);
        let shown = committed.map_or_else(|| "none".to_string(), |o| o.to_string());
        parts.push(format!("queue {q} at {shown} of {end}"));
        assert_eq!(committed, Some(end), "{node} did not consume queue {q} to its end");
    }
    println!("  {offset_group}: {}", parts.join(", "));
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    store.create_topic(TopicConfig::new(TOPIC, QUEUES))?;

    // 20 updates are waiting before any member starts: with FirstOffset
    // every member reads them from the start of each queue.
    for i in 0..20 {
        store.send(Message::new(TOPIC, format!("update-{i}")))?;
    }
    let received: Received = Arc::default();
    let mut nodes = BTreeMap::new();
    for node in NODES {
        let c = start_node(&store, node, &received)?;
        let queues: Vec<u32> = c.assigned_queues().iter().map(|q| q.queue_id).collect();
        println!("{node} started, reads queues {queues:?}");
        nodes.insert(node, c);
    }
    let total = 20;
    wait_for("every node to get 20 updates", Duration::from_secs(20), || {
        NODES.iter().all(|n| count(&received, n) >= total)
    })?;
    for node in NODES {
        println!("{node} received {} updates", count(&received, node));
    }

    // node-b goes down; 10 more updates are sent while it is away.
    if let Some(b) = nodes.remove("node-b") {
        b.shutdown()?;
    }
    println!("node-b stopped; its own offsets:");
    show_offsets(&store, "node-b")?;
    for i in 20..30 {
        store.send(Message::new(TOPIC, format!("update-{i}")))?;
    }
    let total = 30;
    wait_for("node-a and node-c to get 30 updates", Duration::from_secs(20), || {
        ["node-a", "node-c"].iter().all(|n| count(&received, n) >= total)
    })?;
    println!("sent 10 more; node-a has {}, node-c has {}", count(&received, "node-a"), count(&received, "node-c"));

    // Back under the same instance name: node-b resumes at its own offsets
    // and gets just the 10 it missed.
    let before = count(&received, "node-b");
    nodes.insert("node-b", start_node(&store, "node-b", &received)?);
    wait_for("node-b to catch up", Duration::from_secs(20), || count(&received, "node-b") >= total)?;
    println!("node-b restarted and caught up: {} -> {} updates", before, count(&received, "node-b"));
    std::thread::sleep(Duration::from_millis(100));

    for (_, c) in nodes {
        c.shutdown()?;
    }
    // Every node received every update exactly once.
    let r = received.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for node in NODES {
        let mine = r.get(node).ok_or("a node received nothing")?;
        assert_eq!(mine.len(), total, "{node} missed updates");
        assert!(mine.values().all(|&n| n == 1), "{node} received an update twice");
        assert!((0..total).all(|i| mine.contains_key(&format!("update-{i}"))));
    }
    println!("each member's own offsets (offset group {GROUP}%<instance>):");
    for node in NODES {
        show_offsets(&store, node)?;
    }
    // Broadcasting members commit nothing under the plain group name.
    assert!((0..QUEUES).all(|q| store.committed_offset(GROUP, TOPIC, q).is_none()));
    println!("  {GROUP} (shared, clustering only): none");
    println!("all {} members received all {total} updates exactly once", NODES.len());
    store.close()?;
    Ok(())
}
