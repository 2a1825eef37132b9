//! `mqstore verify` over whole stores, through the built binary: counts on
//! a healthy store, one line per problem naming file and offset, `--json`,
//! exit statuses (0 healthy or only stale, 2 corruption), and nothing
//! changed on disk.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::listing_with_bytes as listing;
use mqstore::commitlog::CommitLogOptions;
use mqstore::message::Message;
use mqstore::store::{Store, StoreOptions, StoreView};
use mqstore::topic::TopicConfig;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["verify", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_mqstore")).args(&args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn code(o: &Output) -> i32 {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "binary panicked: {err}");
    o.status.code().expect("exited by signal")
}

/// Runs verify in text and JSON form, checks that neither changed
/// anything, and returns (exit code, text, JSON).
fn verify(dir: &Path) -> (i32, String, Value) {
    let before = listing(dir);
    let text = run(dir, &[]);
    let json = run(dir, &["--json"]);
    assert!(listing(dir) == before, "verify changed the store");
    assert_eq!(code(&text), code(&json));
    let v: Value = serde_json::from_str(stdout(&json).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(&json)));
    (code(&text), stdout(&text), v)
}

/// A closed store: topic T over 3 queues, 60 keyed and tagged messages,
/// files of 8 units, one committed offset.
fn store() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let log = CommitLogOptions::default().segment_size(1 << 20).max_record_size(64 << 10);
    let opts = StoreOptions::default().commit_log_options(log).max_body_size(16 << 10).consume_queue_units_per_file(8);
    let store = Store::open(&dir, opts).unwrap();
    store.create_topic(TopicConfig::new("T", 3)).unwrap();
    for i in 0..60 {
        store.send(Message::new("T", format!("body {i}")).with_tags("A").with_key(format!("k{i}"))).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..3).map(|q| store.max_offset("T", q).unwrap()).sum::<u64>() < 60 {
        assert!(Instant::now() < deadline, "dispatch did not catch up");
        std::thread::sleep(Duration::from_millis(5));
    }
    store.commit_offset("g", "T", 1, 5).unwrap();
    store.close().unwrap();
    (tmp, dir)
}

fn cq_file(dir: &Path, q: u32, first: u64) -> PathBuf {
    dir.join("consumequeue").join("T").join(q.to_string()).join(format!("{first:020}"))
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

#[test]
fn healthy_store_exits_0_with_every_count() {
    let (_t, dir) = store();
    let (status, text, v) = verify(&dir);
    assert_eq!(status, 0, "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    let line = text.lines().next().unwrap();
    assert!(line.starts_with("OK: 1 segment, 60 records, end offset "), "{line}");
    for part in
        ["2 topics", "3 queues", "60 units", "1 index file", "120 index entries", "1 consumer offset", "0 problems"]
    {
        assert!(line.contains(part), "{part}: {line}");
    }
    // Queues with files (the schedule topic has none).
    assert_eq!(StoreView::open(&dir).unwrap().queue_ranges().unwrap().len(), 3);
    assert_eq!(v["healthy"], true);
    for (key, want) in [("records", 60), ("units", 60), ("index_entries", 120), ("index_files", 1), ("segments", 1)] {
        assert_eq!(v[key], want, "{key}: {v}");
    }
    assert_eq!(v["log_end"], v["end"]);
    assert_eq!(v["problems"], Value::Array(vec![]));
    assert_eq!(v["problem_counts"]["corruption"], 0);
    assert!(v["corruption"].is_null() && v["torn_tail"].is_null());
}

#[test]
fn a_damaged_unit_exits_2_naming_file_and_offset() {
    let (_t, dir) = store();
    let file = cq_file(&dir, 2, 8);
    // Unit 11 of queue 2: its tag hash.
    edit(&file, |b| b[3 * 20 + 15] ^= 4);
    let (status, text, v) = verify(&dir);
    assert_eq!(status, 2, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("CORRUPT: "), "{text}");
    assert!(lines[0].contains("1 problem (1 corruption, 0 torn tail, 0 stale)"), "{text}");
    let want = format!("corrupt at {}:60: tag hash ", file.display());
    assert!(lines[1].starts_with(&want), "{text}");
    assert!(lines[1].ends_with("(derived, rebuilt on open)"), "{text}");
    assert_eq!(lines.len(), 2, "{text}");

    assert_eq!(v["healthy"], false);
    let p = &v["problems"][0];
    assert_eq!(p["file"], file.to_str().unwrap());
    assert_eq!(p["offset"], 60);
    assert_eq!(p["severity"], "corruption");
    assert_eq!(p["kind"], "mismatch");
    assert_eq!(p["derived"], true);
    assert!(p["detail"].as_str().unwrap().starts_with("tag hash"), "{p}");
    assert_eq!(v["corruption"]["file"], p["file"]);
    assert_eq!(v["corruption"]["offset"], 60);
}

#[test]
fn stale_units_past_the_log_end_exit_0() {
    let (_t, dir) = store();
    // Queue 0 holds 20 units: offsets 16..24 live in file 16, unit 20 is free.
    let file = cq_file(&dir, 0, 16);
    edit(&file, |b| {
        b[80..88].copy_from_slice(&(1u64 << 40).to_be_bytes());
        b[88..92].copy_from_slice(&100u32.to_be_bytes());
    });
    let (status, text, v) = verify(&dir);
    assert_eq!(status, 0, "{text}");
    let want = format!("stale at {}:80: 1 pointing at or past the log's end", file.display());
    assert!(text.lines().nth(1).is_some_and(|l| l.starts_with(&want)), "{text}");
    assert!(text.contains("(derived, dropped on open)"), "{text}");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["problem_counts"]["stale"], 1);
    assert_eq!(v["problems"][0]["severity"], "stale");
    assert_eq!(v["problems"][0]["kind"], "past-log-end");
    assert_eq!(v["problems"][0]["offset"], 80);
}

#[test]
fn damaged_metadata_is_corruption_of_primary_or_derived_data() {
    for (rel, derived) in [("config/topics", false), ("config/dispatch", true), ("checkpoint", true)] {
        let (_t, dir) = store();
        let path = dir.join(rel);
        edit(&path, |b| b[12] ^= 0x10);
        let (status, text, v) = verify(&dir);
        assert_eq!(status, 2, "{rel}: {text}");
        let data = if derived { "(derived, rebuilt on open)" } else { "(primary data)" };
        assert!(text.contains(&format!("corrupt at {}:", path.display())) && text.contains(data), "{rel}: {text}");
        let p = v["problems"].as_array().unwrap().iter().find(|p| p["file"] == path.to_str().unwrap()).unwrap();
        assert_eq!((&p["kind"], &p["derived"]), (&Value::from("damaged"), &Value::from(derived)), "{rel}: {p}");
    }
}

#[test]
fn help_describes_every_check_and_the_exit_statuses() {
    let out = Command::new(env!("CARGO_BIN_EXE_mqstore")).args(["verify", "--help"]).output().unwrap();
    assert_eq!(code(&out), 0);
    let help = stdout(&out);
    for part in [
        "Commit log",
        "Consume queues",
        "Index files",
        "config/",
        "torn tail",
        "stale",
        "derived",
        "Read-only",
        "Exit status",
    ] {
        assert!(help.contains(part), "{part}: {help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mqstore")).arg("--help").output().unwrap();
    assert!(stdout(&out).contains("verify"));
}
