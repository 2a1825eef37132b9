//! Property tests of malformed input at the public API (reliability T5),
//! next to the hand-picked cases of `store_rejections.rs`: random strings
//! (control characters, the property separators 0x01/0x02, `||`, spaces,
//! path characters, non-ASCII, lengths around every limit) as topics,
//! groups, tags, keys, property names and values, ids and tag expressions,
//! and random numbers (queue ids, offsets, batch sizes, delay levels, body
//! lengths at and around the maximum, store times) at sends, pulls,
//! commits, resets and seeks.
//!
//! Every call either succeeds and does what it says (a sent message reads
//! back with exactly its tag, keys and property) or returns a typed error
//! that an independent oracle expects, and a refused call changes nothing
//! (commit-log end, queue ends, committed offsets, topics). Never a panic.
//!
//! Cases per property: `PROPTEST_CASES` (default 10,000, the reference's PR
//! bar). The store is shared by the cases of a property (opening one per
//! case would cost more than the case), so each case leaves the store as
//! the next one expects. Failures are saved in
//! `tests/store_input_props.proptest-regressions` (commit it; saved cases
//! replay first).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mqstore::commitlog::{CommitLogOptions, FlushMode};
use mqstore::message::Message;
use mqstore::storage::SimStorage;
use mqstore::store::{PullStatus, Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use mqstore::{Error, ManualClock};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_BODY: usize = 1024;
const MAX_PROPS: usize = 512;
/// Messages per queue of topic "t" before the number properties run.
const FILL: u64 = 20;

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    TestRunner::new(Config {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    })
}

fn open() -> Store {
    let log = CommitLogOptions::default()
        .segment_size(1 << 20)
        .max_record_size(4 << 10)
        .flush_mode(FlushMode::Async)
        .storage(Arc::new(SimStorage::new()))
        // Time stands still: accepted delayed messages never come due, so
        // nothing writes behind a case's back.
        .clock(Arc::new(ManualClock::new(1_700_000_000_000)));
    let opts = StoreOptions::default()
        .commit_log_options(log)
        .max_body_size(MAX_BODY)
        .max_properties_size(MAX_PROPS)
        .consume_queue_units_per_file(64);
    let store = Store::open("/props", opts).unwrap();
    store.create_topic(TopicConfig::new("t", 2)).unwrap();
    store
}

/// Strings that hit every rule: separators, control and path characters,
/// spaces, `||`, non-ASCII, and lengths around the limits.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9%|_ \\-./\\\\:\u{0}\u{1}\u{2}\t\n\u{7f}é✓]{0,12}",
        2 => "\\PC{0,16}",
        1 => (0..700usize, "[a-z\u{1} |]").prop_map(|(n, c)| c.repeat(n)),
        1 => (120..135usize).prop_map(|n| "x".repeat(n)),
        1 => (250..260usize).prop_map(|n| "g".repeat(n)),
    ]
}

/// What must not change when a call is refused.
#[derive(Debug, PartialEq, Eq)]
struct State {
    log_end: u64,
    ends: Vec<u64>,
    offsets: Vec<Option<u64>>,
    topics: usize,
}

fn state(store: &Store) -> State {
    State {
        log_end: store.commit_log().max_offset().get(),
        ends: (0..2).map(|q| store.max_offset("t", q).unwrap()).collect(),
        offsets: (0..2).map(|q| store.committed_offset("g", "t", q)).collect(),
        topics: store.topics().len(),
    }
}

fn wait_end(store: &Store, q: u32, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.max_offset("t", q).unwrap() < n {
        assert!(Instant::now() < deadline, "dispatch stuck");
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn has_sep(s: &str) -> bool {
    s.contains(['\u{1}', '\u{2}'])
}

/// Tag, keys and one user property: refused with `InvalidArgument`
/// exactly when the oracle says the text is malformed; refused with
/// `MessageTooLarge` only when it is long; otherwise stored and read back
/// exactly.
#[test]
fn message_text_is_refused_or_round_trips() {
    let store = open();
    let strategy = (
        proptest::option::of(nasty()),
        proptest::collection::vec(nasty(), 0..3),
        proptest::option::of((nasty(), nasty())),
    );
    runner()
        .run(&strategy, |(tag, keys, prop)| {
            let mut m = Message::new("t", "body").with_keys(keys.clone());
            if let Some(t) = &tag {
                m = m.with_tags(t.clone());
            }
            if let Some((n, v)) = &prop {
                m = m.with_property(n.clone(), v.clone());
            }
            let malformed = tag.as_ref().is_some_and(|t| t.is_empty() || t.contains("||") || has_sep(t))
                || keys.iter().any(|k| k.is_empty() || k.contains(' ') || has_sep(k))
                || prop.as_ref().is_some_and(|(n, v)| {
                    n.is_empty() || has_sep(n) || has_sep(v) || mqstore::message::properties::is_reserved(n)
                });
            let text = tag.as_ref().map_or(0, String::len)
                + keys.iter().map(|k| k.len() + 1).sum::<usize>()
                + prop.as_ref().map_or(0, |(n, v)| n.len() + v.len());
            let before = state(&store);
            match store.send_to_queue(m, 0) {
                Err(Error::InvalidArgument(_)) if malformed => prop_assert_eq!(state(&store), before),
                Err(Error::MessageTooLarge { .. }) if !malformed && text + 100 > MAX_PROPS => {
                    prop_assert_eq!(state(&store), before)
                }
                Ok(r) if !malformed => {
                    wait_end(&store, 0, r.queue_offset + 1);
                    let got = store.pull("t", 0, r.queue_offset, 1, &TagFilter::All).unwrap();
                    let got = &got.messages[0];
                    prop_assert_eq!(got.tags(), tag.as_deref());
                    prop_assert_eq!(
                        got.keys().collect::<Vec<_>>(),
                        keys.iter().map(String::as_str).collect::<Vec<_>>()
                    );
                    if let Some((n, v)) = &prop {
                        prop_assert_eq!(got.property(n), Some(v.as_str()));
                    }
                }
                other => prop_assert!(false, "malformed {malformed}, {text} bytes of text: {other:?}"),
            }
            Ok(())
        })
        .unwrap();
    store.close().unwrap();
}

fn valid_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "%|_-".contains(c))
}

/// Topic and group names: accepted exactly when valid (and, for a topic a
/// user creates, not reserved); refused names change nothing. Every other
/// call that takes a name or an id refuses or answers, never panics.
#[test]
fn names_and_ids_are_refused_or_accepted_as_documented() {
    let store = open();
    runner()
        .run(&(nasty(), nasty()), |(name, id)| {
            // "t" holds the other properties' messages: leave it alone.
            if name == "t" {
                return Ok(());
            }
            let reserved =
                name.starts_with("%RETRY%") || name.starts_with("%DLQ%") || name == mqstore::retry::SCHEDULE_TOPIC;
            let before = state(&store);
            match store.create_topic(TopicConfig::new(name.as_str(), 1)) {
                Ok(()) => {
                    prop_assert!(valid_name(&name, 127) && !reserved, "{name:?} accepted");
                    store.delete_topic(&name).unwrap();
                }
                Err(Error::InvalidArgument(_)) => {
                    prop_assert!(!valid_name(&name, 127) || reserved, "{name:?} refused");
                    prop_assert_eq!(&state(&store), &before);
                }
                Err(e) => prop_assert!(false, "{name:?}: {e}"),
            }
            match store.commit_offset(&name, "t", 1, 0) {
                Ok(()) => prop_assert!(valid_name(&name, 255), "group {name:?} accepted"),
                Err(Error::InvalidArgument(_)) => prop_assert!(!valid_name(&name, 255), "group {name:?} refused"),
                Err(e) => prop_assert!(false, "group {name:?}: {e}"),
            }
            match store.query_by_key(&name, &id, 0, u64::MAX, 8) {
                Ok(found) => prop_assert!(found.is_empty() || name == "t"),
                Err(Error::InvalidArgument(_)) => prop_assert!(!valid_name(&name, 127) || id.is_empty()),
                Err(e) => prop_assert!(false, "query {name:?} {id:?}: {e}"),
            }
            for lookup in [store.message_by_id(&id), store.message_by_offset_id(&id).map(Some)] {
                match lookup {
                    Ok(Some(m)) => prop_assert!(
                        m.offset_msg_id().eq_ignore_ascii_case(&id)
                            || m.msg_id().is_some_and(|u| u.eq_ignore_ascii_case(&id))
                    ),
                    Ok(None) | Err(Error::InvalidArgument(_)) => {}
                    Err(e) => prop_assert!(false, "lookup {id:?}: {e}"),
                }
            }
            match TagFilter::parse(&id) {
                Ok(_) | Err(Error::InvalidArgument(_)) => {}
                Err(e) => prop_assert!(false, "filter {id:?}: {e}"),
            }
            prop_assert_eq!(state(&store).log_end, before.log_end);
            Ok(())
        })
        .unwrap();
    store.close().unwrap();
}

/// Offsets, queue ids and counts from every region: inside, at and past
/// the end, `u64::MAX`; queue ids past the last and `u32::MAX`.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![0..=FILL + 2, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()]
}

fn queue() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0..2u32, 1 => 2..5u32, 1 => Just(u32::MAX)]
}

/// Pulls, commits, resets and time seeks at any queue id and offset.
#[test]
fn numbers_are_refused_or_clamped_as_documented() {
    let store = open();
    let mut stamps = Vec::new();
    for q in 0..2 {
        for i in 0..FILL {
            store.send_to_queue(Message::new("t", format!("m{q}-{i}")), q).unwrap();
        }
        wait_end(&store, q, FILL);
    }
    for i in 0..FILL {
        stamps.push(store.pull("t", 0, i, 1, &TagFilter::All).unwrap().messages[0].store_timestamp());
    }
    let strategy =
        (queue(), offset(), prop_oneof![Just(0usize), 1..50usize, Just(usize::MAX)], offset(), any::<bool>());
    runner()
        .run(&strategy, |(q, at, max, ts, exact)| {
            let exists = q < 2;
            let bad = |r: &mqstore::Result<()>| matches!(r, Err(Error::InvalidArgument(_)));
            // Pull: a missing queue is an error; an offset outside the
            // queue is OffsetIllegal with the nearest valid offset.
            match store.pull("t", q, at, max, &TagFilter::All) {
                Err(Error::InvalidArgument(_)) => prop_assert!(!exists),
                Ok(r) => {
                    prop_assert!(exists);
                    let want = if at > FILL {
                        (PullStatus::OffsetIllegal, FILL, 0)
                    } else if at == FILL || max == 0 {
                        (PullStatus::NoNewMessage, at, 0)
                    } else {
                        let n = (FILL - at).min(max.min(4096) as u64);
                        (PullStatus::Found, at + n, n as usize)
                    };
                    prop_assert_eq!((r.status, r.next_offset, r.messages.len()), want);
                }
                Err(e) => prop_assert!(false, "pull {q} {at}: {e}"),
            }
            // Commit: refused past the end or on a missing queue.
            let before = state(&store);
            let r = store.commit_offset("g", "t", q, at);
            if !exists || at > FILL {
                prop_assert!(bad(&r), "commit {q} {at}: {r:?}");
                prop_assert_eq!(state(&store), before);
            } else {
                prop_assert!(r.is_ok(), "commit {q} {at}: {r:?}");
                let prev = before.offsets[q as usize];
                prop_assert_eq!(store.committed_offset("g", "t", q), Some(prev.map_or(at, |p| p.max(at))));
            }
            // Reset: refused on a missing queue, clamped into the range.
            let before = state(&store);
            let r = store.reset_offset("g", "t", q, at);
            if exists {
                prop_assert!(r.is_ok(), "reset {q} {at}: {r:?}");
                prop_assert_eq!(store.committed_offset("g", "t", q), Some(at.min(FILL)));
            } else {
                prop_assert!(bad(&r), "reset {q} {at}: {r:?}");
                prop_assert_eq!(state(&store), before);
            }
            // Seek by time: the first message at or after it, clamped.
            let t = if exact { stamps[(ts % FILL) as usize] } else { ts };
            let got = store.offset_for_timestamp("t", q % 2, t).unwrap();
            let first_at =
                if q % 2 == 0 { stamps.iter().position(|&s| s >= t).unwrap_or(FILL as usize) as u64 } else { got };
            prop_assert!(got <= FILL);
            prop_assert_eq!(got, first_at);
            Ok(())
        })
        .unwrap();
    store.close().unwrap();
}

/// Body lengths at and around the maximum, delay levels 0..=255 and batch
/// sizes: accepted exactly within the limits; refusals change nothing.
#[test]
fn sizes_and_levels_are_refused_or_accepted_at_the_bounds() {
    let store = open();
    let len =
        prop_oneof![Just(0usize), Just(1), Just(MAX_BODY - 1), Just(MAX_BODY), Just(MAX_BODY + 1), 0..MAX_BODY * 2];
    let level = proptest::option::of(any::<u8>());
    let stored_in_t = std::cell::Cell::new(0u64);
    runner()
        .run(&(len, level, 0..4usize), |(len, level, batch)| {
            let msg = |n: usize| Message::new("t", vec![b'x'; n]);
            // Dispatch runs behind the sends: the queue ends are compared
            // only once everything accepted so far is in them.
            let want = stored_in_t.get();
            let deadline = Instant::now() + Duration::from_secs(10);
            while (0..2).map(|q| store.max_offset("t", q).unwrap()).sum::<u64>() < want {
                prop_assert!(Instant::now() < deadline, "dispatch stuck below {want}");
                std::thread::sleep(Duration::from_micros(100));
            }
            let before = state(&store);
            let r = match (level, batch) {
                (Some(l), _) => store.send_to_queue(msg(len).with_delay_level(l), 0).map(|_| ()),
                (None, 0) => store.send_to_queue(msg(len), 0).map(|_| ()),
                (None, n) => store.send_batch((0..n).map(|_| msg(len)).collect()).map(|_| ()),
            };
            let level_ok = level.is_none_or(|l| (1..=18).contains(&l));
            match r {
                Ok(()) => {
                    prop_assert!((1..=MAX_BODY).contains(&len) && level_ok, "{len} {level:?} accepted");
                    // A delayed message waits in the schedule topic.
                    if level.is_none() {
                        stored_in_t.set(want + batch.max(1) as u64);
                    }
                }
                Err(Error::InvalidArgument(_)) => {
                    prop_assert!(len == 0 || !level_ok, "{len} {level:?}: {r:?}");
                    prop_assert_eq!(state(&store), before);
                }
                Err(Error::MessageTooLarge { size, max }) => {
                    prop_assert!(len > MAX_BODY && size == len as u64 && max == MAX_BODY as u64, "{len}: {r:?}");
                    prop_assert_eq!(state(&store), before);
                }
                Err(e) => prop_assert!(false, "{len} {level:?}: {e}"),
            }
            Ok(())
        })
        .unwrap();
    store.close().unwrap();
}
