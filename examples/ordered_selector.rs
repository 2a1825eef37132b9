//! Ordered sending: every message of one order goes to the same queue
//! (chosen by a `MessageQueueSelector` over the order id), so a consumer
//! reading that queue sees each order's steps in the order they were sent,
//! while different orders spread over the queues.
//!
//! Run with `cargo run --release --example ordered_selector`.

use mqstore::message::Message;
use mqstore::store::{MessageQueue, MessageQueueSelector, Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use std::collections::HashMap;
use std::time::Duration;

/// Routes by the numeric order id carried in the message's first key, as
/// RocketMQ's ordered-message example does with `orderId % queues`.
struct ByOrderId;

impl MessageQueueSelector for ByOrderId {
    fn select(&self, queues: &[MessageQueue], msg: &Message) -> usize {
        let id: usize = msg.keys().first().and_then(|k| k.parse().ok()).unwrap_or(0);
        id % queues.len()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    store.create_topic(TopicConfig::new("order-steps", 4))?;

    let steps = ["created", "paid", "shipped", "delivered"];
    let mut sent = 0u64;
    for step in steps {
        for order in 0..10 {
            let msg = Message::new("order-steps", format!("order {order}: {step}")).with_key(order.to_string());
            store.send_with_selector(msg, &ByOrderId)?;
            sent += 1;
        }
    }

    // Wait until the consume queues hold everything, then read each queue.
    let all = TagFilter::All;
    while (0..4).map(|q| store.max_offset("order-steps", q)).sum::<mqstore::Result<u64>>()? < sent {
        store.pull_wait("order-steps", 0, store.max_offset("order-steps", 0)?, 1, &all, Duration::from_millis(50))?;
    }
    let mut progress: HashMap<String, usize> = HashMap::new();
    for q in 0..4 {
        let r = store.pull("order-steps", q, 0, 1000, &all)?;
        for m in &r.messages {
            let order = m.keys().next().unwrap_or_default().to_string();
            let text = String::from_utf8_lossy(m.body()).into_owned();
            let step = progress.entry(order.clone()).or_insert(0);
            // Within a queue an order's steps arrive in the order sent.
            assert!(text.ends_with(steps[*step]), "order {order} out of order: {text}");
            *step += 1;
            println!("queue {q}: {text}");
        }
    }
    assert!(progress.values().all(|&n| n == steps.len()));
    println!("all {} orders read in order", progress.len());
    store.close()?;
    Ok(())
}
