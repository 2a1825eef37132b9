#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The resident set of an open store does not grow with the number of
//! messages it stores (issue 9: "memory bounded").
//!
//! Mapped file pages count in the resident set (`RssFile`): if every
//! segment, consume-queue file and index file a store ever wrote or read
//! stayed mapped and touched, the resident set would grow with the data.
//! The test writes `N` messages, reads all of them back, and measures; then
//! writes `3N` more (4N in all, many segments and queue files) and reads
//! all 4N back, and measures again. The store's mapped pages (from
//! `/proc/self/smaps`, split into commit log, consume queues and index)
//! must stay under a fixed bound after N and under that bound plus a fixed
//! allowance after 4N, far below the data added; the anonymous resident
//! set (`RssAnon` of `/proc/self/status`) may not grow by more than an
//! allowance either.
//!
//! Small files (1 MiB segments, 1,024-unit queue files, 16,384-entry index
//! files) make 4N (64,000 x 1 KiB) span about 70 segments, 64 queue files
//! and 8 index files. Pages are given back in the background (on
//! the flush thread's tick), so each measurement waits for the store's
//! mapped pages to drop under the bound, up to a deadline; without the
//! release they never do and the test fails with the sizes it saw.
//! `MQSTORE_MEMORY_VERBOSE=1` prints every measurement.

use mqstore::commitlog::CommitLogOptions;
use mqstore::index::IndexFileSize;
use mqstore::message::Message;
use mqstore::store::{PullStatus, Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use std::path::Path;
use std::time::{Duration, Instant};

const TOPIC: &str = "mem";
const QUEUES: u32 = 4;
const BODY: usize = 1024;
/// Messages of the first phase; the second adds 3N.
const N: u64 = 16_000;
/// Mapped store pages allowed after the first phase (whose bodies alone
/// are 15.6 MiB): the 8 MiB the commit log keeps below its flushed end, its
/// prefault window, the queues' newest units and the newest index file.
const FILE_ALLOWANCE: u64 = 12 << 20;
/// Mapped store pages the second phase (47 MiB more bodies) may add to
/// [`FILE_ALLOWANCE`]. The bound is absolute, not the first measurement
/// plus this: how much of the 8 MiB the commit log may keep happens to be
/// resident at the first measurement depends on timing (a sender that
/// dispatches its own records never faults them back in), and a store
/// that gave back more than it must then must not fail.
const GROWTH_ALLOWANCE: u64 = 4 << 20;
/// Anonymous memory allowed to grow (allocator caches, thread stacks).
const ANON_ALLOWANCE: u64 = 8 << 20;
/// How long a measurement waits for the background release.
const SETTLE: Duration = Duration::from_secs(10);

/// Resident bytes, from `/proc/self/smaps` and `/proc/self/status`.
#[derive(Debug, Clone, Copy, Default)]
struct Resident {
    commitlog: u64,
    consumequeue: u64,
    index: u64,
    anon: u64,
    file_total: u64,
}

impl Resident {
    fn store(&self) -> u64 {
        self.commitlog + self.consumequeue + self.index
    }
}

fn kib_field(line: &str) -> Option<u64> {
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|k| k * 1024)
}

fn measure(root: &Path) -> Resident {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read smaps");
    let root = root.to_string_lossy().to_string();
    let mut r = Resident::default();
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            current = line.split_whitespace().nth(5).map(str::to_string);
        } else if let Some(rest) = line.strip_prefix("Rss:") {
            let bytes = kib_field(&format!("Rss: {rest}")).unwrap_or(0);
            match current.as_deref() {
                Some(p) if p.starts_with(&root) && p.contains("/commitlog/") => r.commitlog += bytes,
                Some(p) if p.starts_with(&root) && p.contains("/consumequeue/") => r.consumequeue += bytes,
                Some(p) if p.starts_with(&root) && p.contains("/index/") => r.index += bytes,
                _ => {}
            }
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").expect("read status");
    for line in status.lines() {
        if line.starts_with("RssAnon:") {
            r.anon = kib_field(line).unwrap_or(0);
        } else if line.starts_with("RssFile:") {
            r.file_total = kib_field(line).unwrap_or(0);
        }
    }
    r
}

fn verbose() -> bool {
    std::env::var_os("MQSTORE_MEMORY_VERBOSE").is_some()
}

fn send(store: &Store, from: u64, count: u64) {
    let mut i = from;
    while i < from + count {
        let n = 32.min(from + count - i);
        let msgs: Vec<Message> = (i..i + n)
            .map(|k| {
                let mut body = vec![(k % 251) as u8; BODY];
                body[..8].copy_from_slice(&k.to_be_bytes());
                Message::new(TOPIC, body).with_key(format!("k{k}"))
            })
            .collect();
        store.send_batch(msgs).unwrap();
        i += n;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while queued(store) < from + count {
        assert!(Instant::now() < deadline, "dispatch did not catch up");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn queued(store: &Store) -> u64 {
    (0..QUEUES).map(|q| store.max_offset(TOPIC, q).unwrap()).sum()
}

/// Pulls every queue from 0 to its end, checking every body; returns the count.
fn read_all(store: &Store) -> u64 {
    let mut n = 0;
    for q in 0..QUEUES {
        let mut offset = 0;
        loop {
            let r = store.pull(TOPIC, q, offset, 64, &TagFilter::All).unwrap();
            if r.status != PullStatus::Found {
                break;
            }
            for m in &r.messages {
                let k = u64::from_be_bytes(m.body()[..8].try_into().unwrap());
                assert!(m.body()[8..].iter().all(|&b| b == (k % 251) as u8), "body of message {k}");
            }
            n += r.messages.len() as u64;
            offset = r.next_offset;
        }
    }
    n
}

/// Waits until the store's mapped resident pages are at most `bound`;
/// returns the last measurement either way.
fn settle_below(root: &Path, bound: u64, what: &str) -> Resident {
    let deadline = Instant::now() + SETTLE;
    loop {
        let r = measure(root);
        if r.store() <= bound || Instant::now() >= deadline {
            if verbose() {
                eprintln!("{what}: {r:?} (store {} KiB, bound {} KiB)", r.store() >> 10, bound >> 10);
            }
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn resident_set_does_not_grow_with_messages_stored() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions::default()
        .commit_log_options(
            CommitLogOptions::default().segment_size(1 << 20).max_record_size(64 << 10).prefault_window(256 << 10),
        )
        .max_body_size(16 << 10)
        .offset_persist_interval(Duration::from_millis(200))
        .consume_queue_units_per_file(1_024)
        .index_file_size(IndexFileSize { slots: 4_096, max_entries: 16_384 });
    let store = Store::open(dir.path(), opts).unwrap();
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    let before = measure(dir.path());

    send(&store, 0, N);
    assert_eq!(read_all(&store), N);
    // The first phase's own data is far above the allowance, so a store
    // that keeps everything resident already fails here.
    let first = settle_below(dir.path(), FILE_ALLOWANCE, "after N");

    send(&store, N, 3 * N);
    assert_eq!(read_all(&store), 4 * N);
    let second = settle_below(dir.path(), FILE_ALLOWANCE + GROWTH_ALLOWANCE, "after 4N");

    let added = 3 * N * BODY as u64;
    if verbose() {
        eprintln!("before {before:?}; data added in the second phase: {} KiB", added >> 10);
    }
    assert!(
        first.store() <= FILE_ALLOWANCE && second.store() <= FILE_ALLOWANCE + GROWTH_ALLOWANCE,
        "mapped store pages grew with the data: {} KiB after N, {} KiB after 4N ({second:?}); {} KiB of \
         bodies were added",
        first.store() >> 10,
        second.store() >> 10,
        added >> 10
    );
    assert!(
        second.anon <= first.anon + ANON_ALLOWANCE,
        "anonymous memory grew with the data: {} KiB after N, {} KiB after 4N",
        first.anon >> 10,
        second.anon >> 10
    );
    store.close().unwrap();
}
