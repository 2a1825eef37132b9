//! Numbered message bodies for store tests: `message <n, 8 digits> `
//! followed by a fill derived from `n`, so any body read back names its
//! message and can be checked byte for byte, whatever its length.

use mqstore::store::{PullStatus, Store, TagFilter};
use std::collections::BTreeMap;

/// The body of message `n`, `len` bytes long (at least 17).
pub fn body(n: u64, len: usize) -> Vec<u8> {
    let mut b = format!("message {n:08} ").into_bytes();
    b.resize(len.max(b.len()), b'a' + (n % 26) as u8);
    b
}

/// The number a body was made for; panics on anything else (garbage).
pub fn number(b: &[u8]) -> u64 {
    let n: u64 = std::str::from_utf8(b.get(8..16).unwrap_or_default())
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("garbage body {:02x?}", &b[..b.len().min(32)]));
    assert_eq!(b, body(n, b.len()).as_slice(), "garbage in the body of message {n}");
    n
}

/// Per queue of `topic` (queues `0..queues`): (queue offset, number) of
/// every message served from the queue's live start to its end, each body
/// checked.
pub fn served(store: &Store, topic: &str, queues: u32) -> BTreeMap<u32, Vec<(u64, u64)>> {
    let mut out = BTreeMap::new();
    for q in 0..queues {
        let mut got = Vec::new();
        let mut from = store.min_offset(topic, q).unwrap();
        loop {
            let r = store.pull(topic, q, from, 32, &TagFilter::All).unwrap();
            if r.status != PullStatus::Found {
                assert_eq!(r.status, PullStatus::NoNewMessage, "queue {q} at {from}");
                break;
            }
            got.extend(r.messages.iter().map(|m| (m.queue_offset().0, number(m.body()))));
            from = r.next_offset;
        }
        out.insert(q, got);
    }
    out
}

/// The numbers of every message served, sorted.
pub fn served_numbers(store: &Store, topic: &str, queues: u32) -> Vec<u64> {
    let mut all: Vec<u64> = served(store, topic, queues).into_values().flatten().map(|(_, n)| n).collect();
    all.sort_unstable();
    all
}
