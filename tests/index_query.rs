#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The message index through the store: every key finds exactly its
//! messages (with tiny index files, so buckets are shared and files roll),
//! time windows, both message ids, and an index rebuilt with nothing lost
//! after its files are deleted or damaged.

mod common;

use common::Rng;
use mqstore::commitlog::CommitLogOptions;
use mqstore::index::IndexFileSize;
use mqstore::message::Message;
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use mqstore::{Error, ManualClock};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

const T0: u64 = 1_700_000_000_000;

fn opts(clock: &Arc<ManualClock>) -> StoreOptions {
    StoreOptions::default()
        .commit_log_options(
            CommitLogOptions::default().segment_size(256 << 10).max_record_size(16 << 10).clock(clock.clone()),
        )
        .max_body_size(4 << 10)
        .max_properties_size(1 << 10)
        .consume_queue_units_per_file(256)
        // 7 slots, 100 entries: chains share buckets, files roll every
        // 100 entries.
        .index_file_size(IndexFileSize { slots: 7, max_entries: 100 })
}

/// Per (topic, key): the store-level ids of its messages.
type ByKey = BTreeMap<(String, String), BTreeSet<String>>;

/// Sends `n` messages over topics "a" and "b", each with 0 to 3 keys
/// from a pool of 60, one store-millisecond apart; returns, per (topic,
/// key), the offset ids of its messages, and every (msg id, offset id).
fn fill(store: &Store, clock: &ManualClock, n: u64, seed: u64) -> (ByKey, Vec<(String, String)>) {
    let mut rng = Rng(seed | 1);
    let mut by_key = ByKey::new();
    let mut ids = Vec::new();
    for i in 0..n {
        clock.set_ms(T0 + i);
        let topic = if rng.below(2) == 0 { "a" } else { "b" };
        let keys: BTreeSet<String> = (0..rng.below(4)).map(|_| format!("key-{}", rng.below(60))).collect();
        let r = store.send(Message::new(topic, format!("m{i}")).with_keys(keys.iter().cloned())).unwrap();
        for k in keys {
            by_key.entry((topic.to_string(), k)).or_default().insert(r.offset_msg_id.into());
        }
        ids.push((r.msg_id.into(), r.offset_msg_id.into()));
    }
    wait_dispatched(store, n);
    (by_key, ids)
}

/// Waits until `n` messages are in the consume queues (dispatch, which
/// also feeds the index, runs in the background).
fn wait_dispatched(store: &Store, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let total = || -> u64 {
        ["a", "b"].iter().flat_map(|t| (0..2).map(move |q| (*t, q))).map(|(t, q)| store.max_offset(t, q).unwrap()).sum()
    };
    while total() < n {
        assert!(std::time::Instant::now() < deadline, "dispatched {} of {n}", total());
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn check_every_key(store: &Store, by_key: &ByKey) {
    for ((topic, key), want) in by_key {
        let got = store.query_by_key(topic, key, 0, u64::MAX, 64).unwrap();
        let got_ids: BTreeSet<String> = got.iter().map(|m| m.offset_msg_id().into()).collect();
        assert_eq!(got.len(), got_ids.len(), "{topic}#{key}: a message twice");
        let want: BTreeSet<String> = want.iter().rev().take(64).cloned().collect();
        if want.len() < 64 {
            assert_eq!(&got_ids, &want, "{topic}#{key}");
        } else {
            assert!(got_ids.is_subset(&want) && got.len() == 64, "{topic}#{key}");
        }
        // Newest first, and only this key's messages.
        assert!(got.windows(2).all(|w| w[0].physical_offset() > w[1].physical_offset()));
        assert!(got.iter().all(|m| m.stored_topic() == topic && m.keys().any(|k| k == key)));
    }
    // A key of one topic finds nothing in the other.
    assert!(store.query_by_key("a", "no-such-key", 0, u64::MAX, 64).unwrap().is_empty());
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Store {
    let store = Store::open(dir, opts(clock)).unwrap();
    for t in ["a", "b"] {
        if store.topic(t).is_none() {
            store.create_topic(TopicConfig::new(t, 2)).unwrap();
        }
    }
    store
}

#[test]
fn every_key_finds_exactly_its_messages_and_both_ids_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir.path(), &clock);
    let (by_key, ids) = fill(&store, &clock, 3_000, common::seed());
    check_every_key(&store, &by_key);
    for (uniq, offset_id) in ids.iter().step_by(7) {
        let by_uniq = store.message_by_id(uniq).unwrap().unwrap();
        let by_offset = store.message_by_id(offset_id).unwrap().unwrap();
        assert_eq!(by_uniq, by_offset);
        assert_eq!(by_uniq.msg_id(), Some(uniq.as_str()));
    }
    assert_eq!(store.message_by_id("00000000000000000000000000000000").unwrap(), None);
    assert!(matches!(store.query_by_key("a", "", 0, u64::MAX, 1), Err(Error::InvalidArgument(_))));
    // The unique id is a key too.
    let (uniq, offset_id) = &ids[10];
    let topic = store.message_by_id(offset_id).unwrap().unwrap().stored_topic().to_string();
    let hit = store.query_by_key(&topic, uniq, 0, u64::MAX, 5).unwrap();
    assert_eq!(hit.len(), 1);
    store.close().unwrap();
}

#[test]
fn time_windows_select_by_store_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir.path(), &clock);
    for i in 0..50u64 {
        clock.set_ms(T0 + i * 1_000);
        store.send(Message::new("a", format!("m{i}")).with_key("k")).unwrap();
    }
    wait_dispatched(&store, 50);
    let bodies = |begin: u64, end: u64, max: usize| -> Vec<String> {
        store
            .query_by_key("a", "k", begin, end, max)
            .unwrap()
            .iter()
            .map(|m| String::from_utf8(m.body().to_vec()).unwrap())
            .collect()
    };
    assert_eq!(bodies(T0 + 10_000, T0 + 12_000, 64), ["m12", "m11", "m10"]);
    assert_eq!(bodies(T0 + 10_001, T0 + 10_999, 64), Vec::<String>::new());
    assert_eq!(bodies(0, u64::MAX, 2), ["m49", "m48"]);
    assert_eq!(bodies(0, T0, 64), ["m0"]);
    store.close().unwrap();
}

#[test]
fn deleted_or_damaged_index_files_are_rebuilt_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir.path(), &clock);
    let (by_key, _) = fill(&store, &clock, 1_500, 7);
    store.close().unwrap();
    let index_dir = dir.path().join("index");
    let mut files: Vec<_> = std::fs::read_dir(&index_dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() > 10, "{} index files", files.len());

    // A damaged header in the middle: that file and the newer ones go,
    // and are rebuilt from the commit log.
    let mid = &files[files.len() / 2];
    let mut b = std::fs::read(mid).unwrap();
    b[13] ^= 0x40;
    std::fs::write(mid, &b).unwrap();
    let store = open(dir.path(), &clock);
    check_every_key(&store, &by_key);
    store.close().unwrap();

    // A torn entry in the newest file.
    let newest = std::fs::read_dir(&index_dir).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let mut b = std::fs::read(&newest).unwrap();
    let entry = 64 + 7 * 4 + 32 * 3;
    b[entry] ^= 0xff;
    std::fs::write(&newest, &b).unwrap();
    let store = open(dir.path(), &clock);
    check_every_key(&store, &by_key);
    store.close().unwrap();

    // No index at all.
    std::fs::remove_dir_all(&index_dir).unwrap();
    let store = open(dir.path(), &clock);
    check_every_key(&store, &by_key);
    store.close().unwrap();
}

/// A million messages (`MQSTORE_INDEX_MESSAGES` to change), 10 per key:
/// every key finds exactly its 10 messages, after a reopen too.
#[test]
fn every_key_of_a_million_message_store_finds_exactly_its_messages() {
    let n: u64 = std::env::var("MQSTORE_INDEX_MESSAGES").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let keys = (n / 10).max(1);
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions::default()
        .commit_log_options(CommitLogOptions::default().segment_size(64 << 20).max_record_size(16 << 10))
        .max_body_size(4 << 10)
        .max_properties_size(1 << 10);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    store.create_topic(TopicConfig::new("m", 4)).unwrap();
    let mut i = 0u64;
    while i < n {
        let batch: Vec<Message> = (i..(i + 500).min(n))
            .map(|j| Message::new("m", j.to_be_bytes().to_vec()).with_key(format!("k{}", j % keys)))
            .collect();
        i += batch.len() as u64;
        store.send_batch(batch).unwrap();
    }
    let visible = |s: &Store| (0..4).map(|q| s.max_offset("m", q).unwrap()).sum::<u64>();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while visible(&store) < n {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let check = |s: &Store| {
        for k in 0..keys {
            let got = s.query_by_key("m", &format!("k{k}"), 0, u64::MAX, 64).unwrap();
            let mut seqs: Vec<u64> =
                got.iter().map(|m| u64::from_be_bytes(m.body()[..8].try_into().unwrap())).collect();
            seqs.sort_unstable();
            let want: Vec<u64> = (k..n).step_by(keys as usize).collect();
            assert_eq!(seqs, want, "key k{k}");
        }
    };
    check(&store);
    store.close().unwrap();
    let store = Store::open(dir.path(), opts).unwrap();
    check(&store);
    store.close().unwrap();
}

/// Keys whose RocketMQ hashes are equal ("Aa" and "BB" have the same Java
/// `hashCode`, and so do all strings built from them) share a bucket and
/// the stored hash: each still finds only its own messages.
#[test]
fn keys_with_equal_java_hashes_find_only_their_own_messages() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = open(dir.path(), &clock);
    let keys = ["AaAa", "AaBB", "BBAa", "BBBB"];
    for i in 0..40 {
        store.send(Message::new("a", format!("m{i}")).with_key(keys[i % 4])).unwrap();
    }
    wait_dispatched(&store, 40);
    for (k, key) in keys.iter().enumerate() {
        let got: Vec<String> = store
            .query_by_key("a", key, 0, u64::MAX, 64)
            .unwrap()
            .iter()
            .map(|m| String::from_utf8(m.body().to_vec()).unwrap())
            .collect();
        let want: Vec<String> = (0..40).rev().filter(|i| i % 4 == k).map(|i| format!("m{i}")).collect();
        assert_eq!(got, want, "{key}");
    }
    store.close().unwrap();
}
