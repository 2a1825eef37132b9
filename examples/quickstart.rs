//! Quickstart: open a store, create a topic, send messages synchronously,
//! asynchronously (with a callback) and one-way, read them back by queue,
//! commit a consumer offset, close, reopen and see everything again.
//!
//! Run with `cargo run --release --example quickstart`.

use mqstore::commitlog::FlushMode;
use mqstore::message::Message;
use mqstore::store::{PullStatus, SendCallback, SendResult, Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use std::sync::mpsc;
use std::time::Duration;

/// Prints the outcome of an async send and tells `main` it arrived.
struct Printer(mpsc::Sender<()>);

impl SendCallback for Printer {
    fn on_success(self: Box<Self>, r: SendResult) {
        println!("async send ok: queue {} offset {} id {}", r.queue_id, r.queue_offset, r.msg_id);
        let _ = self.0.send(());
    }
    fn on_exception(self: Box<Self>, e: mqstore::Error) {
        println!("async send failed: {e}");
        let _ = self.0.send(());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Sync flush: a send returns only once the message is on disk;
    // concurrent senders share one fdatasync (group commit).
    let opts = StoreOptions::default().flush_mode(FlushMode::Sync);
    let store = Store::open(dir.path(), opts.clone())?;
    store.create_topic(TopicConfig::new("orders", 2))?;

    // Synchronous sends rotate over the topic's write queues.
    for i in 0..4 {
        let msg = Message::new("orders", format!("order #{i}")).with_tags(if i % 2 == 0 { "new" } else { "paid" });
        let r = store.send(msg)?;
        println!("sent order #{i}: {:?}, queue {} offset {}", r.status, r.queue_id, r.queue_offset);
    }

    // An async send returns at once; the callback runs on a store worker.
    let (tx, rx) = mpsc::channel();
    store.send_async(Message::new("orders", "order #4").with_key("customer-7"), Box::new(Printer(tx)))?;
    rx.recv_timeout(Duration::from_secs(10))?;

    // One-way: no result at all (bad input is still refused).
    store.send_oneway(Message::new("orders", "order #5"))?;

    // Read every queue from the start; consume queues are filled in the
    // background, so wait (long polling) until all 6 messages are there.
    let all = TagFilter::All;
    while (0..2).map(|q| store.max_offset("orders", q)).sum::<mqstore::Result<u64>>()? < 6 {
        store.pull_wait("orders", 0, store.max_offset("orders", 0)?, 1, &all, Duration::from_millis(100))?;
    }
    for q in 0..2 {
        let r = store.pull("orders", q, 0, 32, &all)?;
        for m in &r.messages {
            println!(
                "  queue {q} offset {}: {:?} tags {:?} keys {:?}",
                m.queue_offset().0,
                String::from_utf8_lossy(m.body()),
                m.tags(),
                m.keys().collect::<Vec<_>>()
            );
        }
        // A consumer group records how far it got.
        store.commit_offset("billing", "orders", q, r.next_offset)?;
    }

    // Only the "paid" ones, by tag.
    let paid = TagFilter::parse("paid")?;
    let r = store.pull("orders", 1, 0, 32, &paid)?;
    println!("queue 1 has {} paid orders ({:?})", r.messages.len(), r.status);
    store.close()?;

    // Reopen: messages and committed offsets survive.
    let store = Store::open(dir.path(), opts)?;
    for q in 0..2 {
        let from = store.committed_offset("billing", "orders", q).unwrap_or(0);
        let r = store.pull("orders", q, from, 32, &all)?;
        assert_eq!(r.status, PullStatus::NoNewMessage);
        println!("after reopen, queue {q}: {} messages, billing resumes at {from}", store.max_offset("orders", q)?);
    }
    store.close()?;
    Ok(())
}
