#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The store's primary metadata files (`config/topics`,
//! `config/consumer_offsets`, `config/store`) under deletion and damage:
//! open falls back to the previous generation (and reports it) or fails
//! with a typed error naming the file; it never opens with the offsets or
//! topics silently reset. FORMAT.md 11.6 and 11.10.

use mqstore::store::{FallbackReason, Store, StoreOptions};
use mqstore::topic::TopicConfig;
use mqstore::{CorruptionKind, Error};
use std::path::{Path, PathBuf};

const GROUP: &str = "g";
const TOPIC: &str = "orders";

fn opts() -> StoreOptions {
    StoreOptions::default()
}

/// A closed store whose offsets file holds offset 5 in its current
/// generation and 3 in its previous one, and whose topic table holds
/// `orders` and `extra` (current) and `orders` only (previous).
fn fixture() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), opts()).unwrap();
    store.create_topic(TopicConfig::new(TOPIC, 1)).unwrap();
    for i in 0..8 {
        store.send_to_queue(mqstore::message::Message::new(TOPIC, format!("m{i}")), 0).unwrap();
    }
    let wait = std::time::Duration::from_secs(10);
    store.pull_wait(TOPIC, 0, 7, 1, &mqstore::store::TagFilter::All, wait).unwrap();
    store.commit_offset(GROUP, TOPIC, 0, 3).unwrap();
    store.close().unwrap();
    let store = Store::open(tmp.path(), opts()).unwrap();
    assert!(store.metadata_fallbacks().is_empty());
    store.create_topic(TopicConfig::new("extra", 1)).unwrap();
    store.commit_offset(GROUP, TOPIC, 0, 5).unwrap();
    store.close().unwrap();
    tmp
}

fn config(dir: &Path, name: &str) -> PathBuf {
    dir.join("config").join(name)
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let at = at % b.len();
    b[at] ^= 0x10;
    std::fs::write(path, b).unwrap();
}

/// Opens, returns (committed offset, topics, fallback reasons by file name),
/// and checks that the repair holds: a second open reports no fallback and
/// serves the same.
fn open_ok(dir: &Path) -> (Option<u64>, Vec<String>, Vec<(String, FallbackReason)>) {
    let store = Store::open(dir, opts()).unwrap();
    let seen = |s: &Store| {
        let topics: Vec<String> =
            s.topics().into_iter().map(|t| t.name).filter(|n| !n.starts_with("SCHEDULE")).collect();
        (s.committed_offset(GROUP, TOPIC, 0), topics)
    };
    let (offset, topics) = seen(&store);
    let fallbacks = store
        .metadata_fallbacks()
        .iter()
        .map(|f| (f.file.file_name().unwrap().to_string_lossy().into_owned(), f.reason.clone()))
        .collect();
    store.close().unwrap();
    let again = Store::open(dir, opts()).unwrap();
    assert!(again.metadata_fallbacks().is_empty(), "{:?}", again.metadata_fallbacks());
    assert_eq!(seen(&again), (offset, topics.clone()));
    again.close().unwrap();
    (offset, topics, fallbacks)
}

fn refused(dir: &Path) -> (PathBuf, CorruptionKind) {
    match Store::open(dir, opts()) {
        Err(Error::Corruption { path, kind, .. }) => (path, kind),
        Err(e) => panic!("expected corruption, got {e:?}"),
        Ok(s) => panic!(
            "opened with offset {:?}, topics {:?}, fallbacks {:?}",
            s.committed_offset(GROUP, TOPIC, 0),
            s.topics(),
            s.metadata_fallbacks()
        ),
    }
}

fn names(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| (*s).to_string()).collect();
    v.sort();
    v
}

#[test]
fn an_undamaged_store_reports_no_fallback() {
    let tmp = fixture();
    let (offset, topics, fallbacks) = open_ok(tmp.path());
    assert_eq!((offset, topics, fallbacks), (Some(5), names(&["extra", TOPIC]), vec![]));
}

#[test]
fn a_deleted_or_damaged_offsets_file_falls_back_to_the_previous_generation() {
    let tmp = fixture();
    let path = config(tmp.path(), "consumer_offsets");
    std::fs::remove_file(&path).unwrap();
    let (offset, _, fallbacks) = open_ok(tmp.path());
    assert_eq!((offset, fallbacks), (Some(3), vec![("consumer_offsets".into(), FallbackReason::Missing)]));

    let tmp = fixture();
    flip(&path_in(&tmp, "consumer_offsets"), 30);
    let (offset, _, fallbacks) = open_ok(tmp.path());
    assert_eq!(offset, Some(3));
    assert!(matches!(fallbacks[..], [(ref f, FallbackReason::Damaged { .. })] if f == "consumer_offsets"));
}

fn path_in(tmp: &tempfile::TempDir, name: &str) -> PathBuf {
    config(tmp.path(), name)
}

#[test]
fn an_older_offsets_file_put_back_is_detected() {
    let tmp = fixture();
    // The previous generation copied over the current one.
    std::fs::copy(path_in(&tmp, "consumer_offsets.prev"), path_in(&tmp, "consumer_offsets")).unwrap();
    let (offset, _, fallbacks) = open_ok(tmp.path());
    assert_eq!(offset, Some(3));
    assert!(matches!(fallbacks[..], [(_, FallbackReason::NotNewer { .. })]), "{fallbacks:?}");
}

#[test]
fn offsets_lost_in_both_generations_are_a_typed_error_never_a_reset() {
    let tmp = fixture();
    std::fs::remove_file(path_in(&tmp, "consumer_offsets")).unwrap();
    std::fs::remove_file(path_in(&tmp, "consumer_offsets.prev")).unwrap();
    assert_eq!(refused(tmp.path()), (path_in(&tmp, "consumer_offsets"), CorruptionKind::Missing));

    let tmp = fixture();
    flip(&path_in(&tmp, "consumer_offsets"), 21);
    flip(&path_in(&tmp, "consumer_offsets.prev"), 21);
    let (path, kind) = refused(tmp.path());
    assert_eq!(path, path_in(&tmp, "consumer_offsets"));
    assert!(matches!(kind, CorruptionKind::ChecksumMismatch { .. }), "{kind:?}");

    // Deleted current, damaged previous: the damage is named.
    let tmp = fixture();
    std::fs::remove_file(path_in(&tmp, "consumer_offsets")).unwrap();
    flip(&path_in(&tmp, "consumer_offsets.prev"), 25);
    assert_eq!(refused(tmp.path()).0, path_in(&tmp, "consumer_offsets.prev"));
}

#[test]
fn the_topic_table_falls_back_or_fails_the_same_way() {
    let tmp = fixture();
    std::fs::remove_file(path_in(&tmp, "topics")).unwrap();
    let (offset, topics, fallbacks) = open_ok(tmp.path());
    assert_eq!((offset, topics), (Some(5), names(&[TOPIC])));
    assert_eq!(fallbacks, vec![("topics".into(), FallbackReason::Missing)]);

    let tmp = fixture();
    std::fs::remove_file(path_in(&tmp, "topics")).unwrap();
    std::fs::remove_file(path_in(&tmp, "topics.prev")).unwrap();
    assert_eq!(refused(tmp.path()), (path_in(&tmp, "topics"), CorruptionKind::Missing));
}

#[test]
fn config_store_falls_back_or_fails_the_same_way() {
    let tmp = fixture();
    std::fs::remove_file(path_in(&tmp, "store")).unwrap();
    let (offset, _, fallbacks) = open_ok(tmp.path());
    assert_eq!((offset, fallbacks), (Some(5), vec![("store".into(), FallbackReason::Missing)]));

    // Both generations lost while the other primary files exist: its
    // record of them is gone with it, so open refuses.
    let tmp = fixture();
    std::fs::remove_file(path_in(&tmp, "store")).unwrap();
    std::fs::remove_file(path_in(&tmp, "store.prev")).unwrap();
    assert_eq!(refused(tmp.path()), (path_in(&tmp, "store"), CorruptionKind::Missing));
}

#[test]
fn a_new_store_has_every_primary_file_and_no_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    Store::open(tmp.path(), opts()).unwrap().close().unwrap();
    for name in ["topics", "consumer_offsets", "store"] {
        assert!(config(tmp.path(), name).exists(), "{name}");
    }
    let (offset, topics, fallbacks) = open_ok(tmp.path());
    assert_eq!((offset, topics, fallbacks), (None, vec![], vec![]));
    // Two generations from the first open on.
    for name in ["topics", "consumer_offsets", "store"] {
        std::fs::remove_file(config(tmp.path(), name)).unwrap();
        let (_, _, fallbacks) = open_ok(tmp.path());
        assert_eq!(fallbacks, vec![(name.to_string(), FallbackReason::Missing)]);
    }
    // Even a store that never committed an offset refuses to open without
    // its offsets file: the file exists from the first open on.
    std::fs::remove_file(config(tmp.path(), "consumer_offsets")).unwrap();
    std::fs::remove_file(config(tmp.path(), "consumer_offsets.prev")).unwrap();
    assert_eq!(refused(tmp.path()).1, CorruptionKind::Missing);
}

#[test]
fn a_damaged_previous_generation_is_rewritten_at_open() {
    let tmp = fixture();
    flip(&path_in(&tmp, "consumer_offsets.prev"), 30);
    std::fs::remove_file(path_in(&tmp, "topics.prev")).unwrap();
    // Nothing to report: the current files are intact.
    assert_eq!(open_ok(tmp.path()), (Some(5), names(&["extra", TOPIC]), vec![]));
    // But open wrote them again, so losing a current file now falls back
    // to the same values.
    std::fs::remove_file(path_in(&tmp, "consumer_offsets")).unwrap();
    std::fs::remove_file(path_in(&tmp, "topics")).unwrap();
    let (offset, topics, fallbacks) = open_ok(tmp.path());
    assert_eq!((offset, topics, fallbacks.len()), (Some(5), names(&["extra", TOPIC]), 2));
}
