//! Retry and the dead-letter queue: a listener fails one message every
//! time; the store sends it back through the group's retry topic with
//! growing delays until `max_reconsume_times`, then parks it in the
//! group's dead-letter queue (`%DLQ%<group>`). The example lists the dead
//! letter, fixes the "bug", resends it, and sees it consumed.
//!
//! Short delay levels (`1s 2s`) keep it to a few seconds; with RocketMQ's
//! defaults retries wait 10 s, 30 s, 1 min, 2 min, ...
//!
//! Run with `cargo run --release --example retry_and_dlq`.

use mqstore::consumer::{ConsumeContext, ConsumeStatus};
use mqstore::dlq::{DlqSelect, ResendTarget};
use mqstore::message::{Message, MessageExt};
use mqstore::retry::DelayLevels;
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions::default().delay_levels(DelayLevels::parse("1s 2s")?))?;
    store.create_topic(TopicConfig::new("payments", 1))?;

    let fixed = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let f = fixed.clone();
    let consumer = store
        .push_consumer("ledger")
        .subscribe("payments", "*")?
        .max_reconsume_times(2)
        .listener(move |msgs: &[MessageExt], _: &ConsumeContext| {
            for m in msgs {
                let body = String::from_utf8_lossy(m.body()).into_owned();
                let poison = body.contains("malformed") && !f.load(Ordering::SeqCst);
                println!(
                    "  delivery of {body:?} (topic {}, reconsume times {}): {}",
                    m.topic(),
                    m.reconsume_times(),
                    if poison { "fails" } else { "ok" }
                );
                if poison {
                    return ConsumeStatus::ReconsumeLater;
                }
                let _ = tx.send(body);
            }
            ConsumeStatus::Success
        })
        .start()?;

    store.send(Message::new("payments", "pay 10 EUR to alice"))?;
    let bad = store.send(Message::new("payments", "malformed payment"))?;
    println!("sent two payments; the second will fail ({})", bad.msg_id);
    println!("consumed: {:?}", rx.recv_timeout(Duration::from_secs(10))?);

    // 1 delivery + 2 retries (each waits 2 s: level 3 + n, capped at the
    // last level), then the dead-letter queue.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.dlq_count("ledger")? == 0 {
        if Instant::now() > deadline {
            return Err("no dead letter after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for d in store.dlq_list("ledger", 0, 10)? {
        println!(
            "dead letter: id {} from topic {} after {} retries, at {} ms",
            d.msg_id, d.original_topic, d.reconsume_times, d.failed_at_ms
        );
    }

    println!("fixing the listener and resending the dead letter to its topic");
    fixed.store(true, Ordering::SeqCst);
    let n = store.dlq_resend("ledger", &DlqSelect::Id(bad.msg_id.into()), ResendTarget::OriginalTopic)?;
    println!("resent {n}");
    println!("consumed: {:?}", rx.recv_timeout(Duration::from_secs(10))?);
    println!("purged {} dead letter(s)", store.dlq_purge("ledger")?);
    consumer.shutdown()?;
    store.close()?;
    Ok(())
}
