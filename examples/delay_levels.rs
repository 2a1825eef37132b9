//! Delayed messages: a custom delay table (`1s 2s 3s`, so this finishes in
//! seconds), messages sent with each delay level and one with a delivery
//! time, consumed by a push consumer that prints how long each one waited.
//! Nothing is delivered before its time; the store keeps each waiting
//! message durably in its schedule topic until then.
//!
//! Run with `cargo run --release --example delay_levels`.

use mqstore::consumer::{ConsumeContext, ConsumeFrom, ConsumeStatus};
use mqstore::message::{Message, MessageExt};
use mqstore::retry::DelayLevels;
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use mqstore::{Clock, SystemClock};
use std::sync::mpsc;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // RocketMQ's messageDelayLevel syntax; the default is the 18 levels
    // "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h".
    let levels = DelayLevels::parse("1s 2s 3s")?;
    let store = Store::open(dir.path(), StoreOptions::default().delay_levels(levels))?;
    store.create_topic(TopicConfig::new("reminders", 2))?;

    let start = SystemClock.now_ms();
    let (tx, rx) = mpsc::channel();
    let consumer = store
        .push_consumer("reminder-service")
        .subscribe("reminders", "*")?
        .consume_from(ConsumeFrom::FirstOffset)
        .listener(move |msgs: &[MessageExt], _: &ConsumeContext| {
            for m in msgs {
                let waited = SystemClock.now_ms().saturating_sub(start);
                let _ = tx.send((String::from_utf8_lossy(m.body()).into_owned(), waited));
            }
            ConsumeStatus::Success
        })
        .start()?;

    for level in [3u8, 1, 2] {
        let r = store.send(Message::new("reminders", format!("delay level {level}")).with_delay_level(level))?;
        println!("sent level {level} (waits in schedule queue {} at {})", level - 1, r.queue_offset);
    }
    // Any delivery time, not only the table's delays.
    store.send(Message::new("reminders", "deliver at +1500 ms").with_deliver_at(start + 1_500))?;
    println!("sent one for {} (1.5 s after the start)", start + 1_500);
    println!("waiting: {:?}", store.schedule_stats().pending);

    for _ in 0..4 {
        let (body, waited) = rx.recv_timeout(Duration::from_secs(10))?;
        println!("received {body:?} {waited} ms after the start");
    }
    // The +1500 ms message took two steps (the 1 s level, then the 0.5 s
    // left), so 5 records left the schedule topic for 4 messages.
    let stats = store.schedule_stats();
    println!("schedule: {} records moved, {} still waiting", stats.delivered, stats.pending.iter().sum::<u64>());
    consumer.shutdown()?;
    store.close()?;
    Ok(())
}
