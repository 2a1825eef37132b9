//! `stats` and `group progress` beside a live store with running consumers:
//! members, idle members and queue owners, read from `config/consumers`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mqstore::commitlog::CommitLogOptions;
use mqstore::consumer::{ConsumeContext, ConsumeFrom, ConsumeStatus, MessageModel, PushConsumer};
use mqstore::message::{Message, MessageExt};
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(verb: &[&str], dir: &Path, extra: &[&str]) -> Output {
    let mut args = verb.to_vec();
    args.extend_from_slice(&["--dir", dir.to_str().unwrap()]);
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_mqstore")).args(&args).output().unwrap()
}

/// Runs and insists on exit 0 and an empty stderr.
fn ok(verb: &[&str], dir: &Path, extra: &[&str]) -> String {
    let out = run(verb, dir, extra);
    let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
    assert_eq!(out.status.code(), Some(0), "{verb:?} {extra:?}: {stdout}{stderr}");
    assert!(stderr.is_empty(), "{verb:?} {extra:?}: {stderr}");
    stdout
}

fn ok_json(verb: &[&str], dir: &Path, extra: &[&str]) -> Value {
    let text = ok(verb, dir, &[extra, &["--json"]].concat());
    assert_eq!(text.lines().count(), 1, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

const STATS: &[&str] = &["stats"];
const PROGRESS: &[&str] = &["group", "progress"];

fn opts() -> StoreOptions {
    StoreOptions::default()
        .commit_log_options(CommitLogOptions::default().segment_size(1 << 20).max_record_size(64 << 10))
        .max_body_size(16 << 10)
        .max_properties_size(4 << 10)
}

fn consumer(store: &Store, group: &str, id: &str, model: MessageModel) -> PushConsumer {
    store
        .push_consumer(group)
        .subscribe("orders", "*")
        .unwrap()
        .instance_name(id)
        .message_model(model)
        .consume_from(ConsumeFrom::FirstOffset)
        .listener(|_: &[MessageExt], _: &ConsumeContext| ConsumeStatus::Success)
        .start()
        .unwrap()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Topic "orders" of a `group progress --json` (a clustering group also
/// lists its retry topic).
fn orders(p: &Value) -> &Value {
    p["topics"].as_array().unwrap().iter().find(|t| t["topic"] == "orders").unwrap()
}

/// `owner` of every queue of topic "orders" of a `group progress --json`.
fn owners(p: &Value) -> Vec<Value> {
    orders(p)["queues"].as_array().unwrap().iter().map(|q| q["owner"].clone()).collect()
}

/// Rewrites the pid in `config/consumers` (payload offset 0, file offset
/// 20) and fixes the envelope's CRC, as a file left by a dead process.
fn forge_pid(file: &Path, pid: u32) {
    let mut b = std::fs::read(file).unwrap();
    b[20..24].copy_from_slice(&pid.to_be_bytes());
    b[16..20].fill(0);
    let crc = crc32fast::hash(&b);
    b[16..20].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(file, b).unwrap();
}

#[test]
fn stats_and_progress_show_members_idle_members_and_owners_of_a_live_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir, opts()).unwrap();
    store.create_topic(TopicConfig::new("orders", 2)).unwrap();
    for i in 0..6 {
        store.send(Message::new("orders", format!("m{i}"))).unwrap();
    }
    // Three clustering members on two queues: c3 is idle.
    let c1 = consumer(&store, "billing", "c1", MessageModel::Clustering);
    let c2 = consumer(&store, "billing", "c2", MessageModel::Clustering);
    let c3 = consumer(&store, "billing", "c3", MessageModel::Clustering);
    let n1 = consumer(&store, "cache", "n1", MessageModel::Broadcasting);
    let n2 = consumer(&store, "cache", "n2", MessageModel::Broadcasting);
    wait_until("billing consumed everything", || {
        (0..2).all(|q| store.committed_offset("billing", "orders", q) == Some(3))
    });
    // A group with offsets but no running member.
    store.commit_offset("audit", "orders", 0, 1).unwrap();
    store.persist_offsets().unwrap();

    // stats --json
    let v = ok_json(STATS, dir, &[]);
    let c = &v["consumers"];
    assert_eq!(c["pid"], std::process::id());
    assert!(c["written_at_ms"].as_u64().unwrap() > 0);
    assert_eq!(
        c["groups"],
        json!([
            {"group": "billing", "model": "clustering", "members": [
                // The group's retry topic has one queue; the first member
                // holds it.
                {"id": "c1", "idle": false, "queues": [{"topic": "%RETRY%billing", "queue": 0}, {"topic": "orders", "queue": 0}]},
                {"id": "c2", "idle": false, "queues": [{"topic": "orders", "queue": 1}]},
                {"id": "c3", "idle": true, "queues": []}]},
            {"group": "cache", "model": "broadcasting", "members": [
                {"id": "n1", "idle": false, "queues": [{"topic": "orders", "queue": 0}, {"topic": "orders", "queue": 1}]},
                {"id": "n2", "idle": false, "queues": [{"topic": "orders", "queue": 0}, {"topic": "orders", "queue": 1}]}]}
        ])
    );
    // stats, text
    let text = ok(STATS, dir, &[]);
    assert!(text.contains(&format!("live consumers (store held by pid {}):", std::process::id())), "{text}");
    assert!(text.contains("consumer group billing (clustering): 3 members\n"), "{text}");
    assert!(text.contains("  member c1: %RETRY%billing:0 orders:0\n"), "{text}");
    assert!(text.contains("  member c3: idle: more members than read queues\n"), "{text}");
    assert!(text.contains("consumer group cache (broadcasting): 2 members\n"), "{text}");
    assert!(text.contains("  member n2: orders:0 orders:1\n"), "{text}");

    // group progress: owners per queue.
    let p = ok_json(PROGRESS, dir, &["--group", "billing"]);
    assert_eq!(p["lag"], 0);
    assert_eq!(owners(&p), [json!("c1"), json!("c2")]);
    assert_eq!(orders(&p)["queues"][0]["committed"], 3);
    let text = ok(PROGRESS, dir, &["--group", "billing"]);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    // The retry topic comes first (its one queue held by c1), then orders.
    assert_eq!(
        lines[1..],
        [
            vec!["topic", "%RETRY%billing:", "lag", "0"],
            vec!["queue", "0", "committed", "-", "min", "0", "max", "0", "lag", "0", "owner", "c1"],
            vec!["topic", "orders:", "lag", "0"],
            vec!["queue", "0", "committed", "3", "min", "0", "max", "3", "lag", "0", "owner", "c1"],
            vec!["queue", "1", "committed", "3", "min", "0", "max", "3", "lag", "0", "owner", "c2"],
        ],
        "{text}"
    );
    // Broadcasting: every member owns every queue (its offsets are kept per
    // member, so the group itself has none: shown from its live queues).
    let p = ok_json(PROGRESS, dir, &["--group", "cache"]);
    assert_eq!(owners(&p), [json!(["n1", "n2"]), json!(["n1", "n2"])]);
    assert_eq!(orders(&p)["queues"][0]["committed"], Value::Null);
    assert!(ok(PROGRESS, dir, &["--group", "cache"]).contains("owner n1,n2"));
    // A group with no running member: nobody owns its queues.
    let p = ok_json(PROGRESS, dir, &["--group", "audit"]);
    assert_eq!(owners(&p), [Value::Null, Value::Null]);
    assert!(ok(PROGRESS, dir, &["--group", "audit"]).contains("owner -"));

    // A busy member leaves: the idle one takes its queue.
    c1.shutdown().unwrap();
    assert_eq!(owners(&ok_json(PROGRESS, dir, &["--group", "billing"])), [json!("c2"), json!("c3")]);
    let text = ok(STATS, dir, &[]);
    assert!(!text.contains("idle"), "{text}");
    assert!(text.contains("consumer group billing (clustering): 2 members\n"), "{text}");

    // A file whose writer is gone is stale: reported, never used.
    let file = dir.join("config").join("consumers");
    let saved = std::fs::read(&file).unwrap();
    forge_pid(&file, u32::MAX);
    if cfg!(target_os = "linux") {
        assert_eq!(ok_json(STATS, dir, &[])["consumers"], Value::Null);
        let text = ok(STATS, dir, &[]);
        assert!(text.contains(&format!("config/consumers is stale (pid {} is not running)", u32::MAX)), "{text}");
        assert!(orders(&ok_json(PROGRESS, dir, &["--group", "billing"]))["queues"][0].get("owner").is_none());
    }
    std::fs::write(&file, saved).unwrap();

    // After close: no live store, no owners, no consumers.
    for c in [c2, c3, n1, n2] {
        c.shutdown().unwrap();
    }
    store.close().unwrap();
    assert!(!file.exists());
    assert_eq!(ok_json(STATS, dir, &[])["consumers"], Value::Null);
    assert!(!ok(STATS, dir, &[]).contains("consumer"));
    let p = ok_json(PROGRESS, dir, &["--group", "billing"]);
    assert!(orders(&p)["queues"][0].get("owner").is_none(), "{p}");
    assert!(!ok(PROGRESS, dir, &["--group", "billing"]).contains("owner"));
}
