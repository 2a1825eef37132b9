//! Finding messages without scanning: send orders keyed by order id and
//! customer, then look them up by key (with a time window) and by either
//! message id, through the store's index.
//!
//! Run with `cargo run --release --example query_by_key`.

use mqstore::message::Message;
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), StoreOptions::default())?;
    store.create_topic(TopicConfig::new("orders", 4))?;

    let mut sent = Vec::new();
    for i in 0..1_000u32 {
        let customer = format!("customer-{}", i % 37);
        let msg = Message::new("orders", format!("order {i}")).with_keys([format!("order-{i}"), customer]);
        sent.push(store.send(msg)?);
    }
    // Dispatch (which feeds the consume queues and the index) runs in the
    // background: wait until it has caught up.
    while (0..4).map(|q| store.max_offset("orders", q)).sum::<mqstore::Result<u64>>()? < 1_000 {
        std::thread::sleep(Duration::from_millis(1));
    }

    let hits = store.query_by_key("orders", "order-421", 0, u64::MAX, 10)?;
    println!(
        "order-421: {:?}",
        hits.iter().map(|m| String::from_utf8_lossy(m.body()).into_owned()).collect::<Vec<_>>()
    );

    let customer = store.query_by_key("orders", "customer-5", 0, u64::MAX, 64)?;
    println!("customer-5 has {} orders; newest: {}", customer.len(), String::from_utf8_lossy(customer[0].body()));

    // A time window (store time, ms since the epoch, inclusive).
    let t = customer[3].store_timestamp();
    let window = store.query_by_key("orders", "customer-5", t, t, 64)?;
    println!("customer-5 orders stored at {t}: {}", window.len());

    // Both ids of a send lead to the message.
    let r = &sent[777];
    let by_uniq = store.message_by_id(&r.msg_id)?.ok_or("unique id not found")?;
    let by_offset = store.message_by_id(&r.offset_msg_id)?.ok_or("offset id not found")?;
    println!("{} and {} are both {:?}", r.msg_id, r.offset_msg_id, String::from_utf8_lossy(by_uniq.body()));
    assert_eq!(by_uniq, by_offset);
    store.close()?;
    Ok(())
}
