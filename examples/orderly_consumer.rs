//! Orderly consumer: messages are sent in order per key (every step of one
//! order goes to the same queue, chosen by `HashByKeySelector` over the key
//! `order-<n>`), and an orderly listener consumes each queue one message at
//! a time, in store order. Once, for `order-3`'s `paid` step, the listener
//! answers `SuspendCurrentQueueAMoment`: the queue pauses for the
//! `suspend_interval` and the *same* message comes back before anything
//! later in its queue, so no order ever sees its steps out of order.
//!
//! Run with `cargo run --release --example orderly_consumer`.

use mqstore::consumer::{ConsumeContext, ConsumeFrom, OrderlyStatus};
use mqstore::message::{Message, MessageExt};
use mqstore::store::{HashByKeySelector, Store, StoreOptions};
use mqstore::topic::TopicConfig;
use std::collections::{BTreeMap, HashSet};
use std::error::Error;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const TOPIC: &str = "order-events";
const QUEUES: u32 = 4;
const ORDERS: usize = 8;
const STEPS: [&str; 4] = ["created", "paid", "shipped", "done"];
/// The message the listener refuses once.
const REFUSE: (&str, &str) = ("order-3", "paid");

/// One listener call.
#[derive(Debug, Clone)]
struct Delivery {
    queue: u32,
    offset: u64,
    key: String,
    step: String,
    attempt: u32,
    suspended: bool,
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

    // Steps of all orders interleaved, as they would happen; the selector
    // keeps each order on one queue.
    for step in STEPS {
        for n in 0..ORDERS {
            let key = format!("order-{n}");
            let r = store.send_with_selector(
                Message::new(TOPIC, format!("{key}:{step}")).with_key(key.clone()),
                &HashByKeySelector,
            )?;
            if step == STEPS[0] {
                println!("{key} goes to queue {}", r.queue_id);
            }
        }
    }
    let sent = ORDERS * STEPS.len();
    println!("sent {sent} messages");

    // The consumer starts after the messages were sent: from the first
    // offset of each queue.
    let log: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let busy: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let overlaps = Arc::new(Mutex::new(0usize));
    let refused = Arc::new(Mutex::new(false));
    let consumer = {
        let (log, busy, overlaps, refused) = (log.clone(), busy.clone(), overlaps.clone(), refused.clone());
        store
            .push_consumer("fulfilment")
            .subscribe(TOPIC, "*")?
            .consume_from(ConsumeFrom::FirstOffset)
            .consume_threads(4)
            .suspend_interval(Duration::from_millis(200))
            .orderly_listener(move |msgs: &[MessageExt], ctx: &ConsumeContext| {
                let queue = ctx.queue.queue_id;
                // Orderly: never two calls for one queue at the same time.
                if !busy.lock().unwrap_or_else(PoisonError::into_inner).insert(queue) {
                    *overlaps.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                }
                let mut status = OrderlyStatus::Success;
                for m in msgs {
                    let body = String::from_utf8_lossy(m.body()).into_owned();
                    let (key, step) = body.split_once(':').unwrap_or((body.as_str(), ""));
                    let mut refused = refused.lock().unwrap_or_else(PoisonError::into_inner);
                    if (key, step) == REFUSE && !*refused {
                        *refused = true;
                        status = OrderlyStatus::SuspendCurrentQueueAMoment;
                    }
                    let d = Delivery {
                        queue,
                        offset: m.queue_offset().0,
                        key: key.to_string(),
                        step: step.to_string(),
                        attempt: ctx.delivery_attempt,
                        suspended: status == OrderlyStatus::SuspendCurrentQueueAMoment,
                    };
                    println!(
                        "queue {} offset {:>2}: {:<7} {:<7} attempt {}{}",
                        d.queue,
                        d.offset,
                        d.key,
                        d.step,
                        d.attempt,
                        if d.suspended { "  -> SuspendCurrentQueueAMoment" } else { "" }
                    );
                    log.lock().unwrap_or_else(PoisonError::into_inner).push(d);
                }
                busy.lock().unwrap_or_else(PoisonError::into_inner).remove(&queue);
                status
            })
            .start()?
    };
    let consumed = || log.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|d| !d.suspended).count();
    wait_for("every step of every order", Duration::from_secs(20), || consumed() >= sent)?;
    std::thread::sleep(Duration::from_millis(100));
    consumer.shutdown()?;

    let log = log.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert_eq!(*overlaps.lock().unwrap_or_else(PoisonError::into_inner), 0, "a queue was consumed on two threads");

    // Per order: the steps, consumed (not suspended) exactly once each, in
    // the order they were sent.
    let mut per_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for d in log.iter().filter(|d| !d.suspended) {
        per_key.entry(&d.key).or_default().push(&d.step);
    }
    assert_eq!(per_key.len(), ORDERS);
    for (key, steps) in &per_key {
        assert_eq!(steps.as_slice(), STEPS.as_slice(), "{key} consumed out of order");
    }

    // The refused message came back, on its queue, before anything later.
    let suspended: Vec<&Delivery> = log.iter().filter(|d| d.suspended).collect();
    assert_eq!(suspended.len(), 1, "exactly one message was suspended");
    let s = suspended[0];
    let next_on_queue = log
        .iter()
        .skip_while(|d| !(d.suspended && d.queue == s.queue))
        .skip(1)
        .find(|d| d.queue == s.queue)
        .ok_or("the suspended message never came back")?;
    assert_eq!(next_on_queue.offset, s.offset, "something later in the queue was delivered first");
    assert_eq!(next_on_queue.attempt, s.attempt + 1);
    let meanwhile = log
        .iter()
        .skip_while(|d| !(d.suspended && d.queue == s.queue))
        .take_while(|d| !(d.queue == s.queue && d.attempt > s.attempt))
        .filter(|d| d.queue != s.queue)
        .count();
    println!("while queue {} was suspended, {meanwhile} messages of other queues were consumed", s.queue);
    println!(
        "{} {} was suspended on attempt {} and consumed on attempt {}, before anything later in queue {}",
        s.key, s.step, s.attempt, next_on_queue.attempt, s.queue
    );
    println!("all {} orders consumed in order ({} listener calls for {sent} messages)", per_key.len(), log.len());
    store.close()?;
    Ok(())
}
