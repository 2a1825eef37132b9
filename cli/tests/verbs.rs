//! `produce`, `print`, `consume` and `stats`, run through the built binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::listing;
use mqstore::message::Message;
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn mqstore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mqstore")).args(args).output().unwrap()
}

/// `mqstore <cmd> --dir <dir> <extra...>`.
fn run(cmd: &str, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![cmd, "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    mqstore(&args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn code(o: &Output) -> i32 {
    assert!(!stderr(o).contains("panicked"), "binary panicked: {}", stderr(o));
    o.status.code().expect("exited by signal")
}

/// Runs and insists on exit 0.
fn ok(cmd: &str, dir: &Path, extra: &[&str]) -> String {
    let out = run(cmd, dir, extra);
    assert_eq!(code(&out), 0, "{cmd} {extra:?}: {}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

const MESSAGE_KEYS: [&str; 10] =
    ["id", "topic", "queue", "offset", "keys", "tags", "size", "crc32", "store_timestamp", "reconsume_times"];

fn wait_dispatched(store: &Store, topic: &str, queues: u32, total: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..queues).map(|q| store.max_offset(topic, q).unwrap()).sum::<u64>() < total {
        assert!(Instant::now() < deadline, "dispatch did not catch up");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// --------------------------------------------------------------- produce

#[test]
fn produce_then_print_round_trip_matches_the_acks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let acks = tmp.path().join("acks.jsonl");
    let acks_s = acks.to_str().unwrap();
    let args = ["--topic", "T", "--queues", "3", "--count", "25", "--size", "300", "--tag", "TagA"];
    let summary = ok("produce", &dir, &[&args[..], &["--key-prefix", "key-", "--acks", acks_s]].concat());
    assert_eq!(summary.lines().count(), 1, "{summary}");
    assert!(summary.starts_with("produced 25 messages to T"), "{summary}");

    let acked = json_lines(&std::fs::read_to_string(&acks).unwrap());
    assert_eq!(acked.len(), 25);
    for (i, a) in acked.iter().enumerate() {
        assert_eq!(a.as_object().unwrap().len(), 5, "{a}");
        assert_eq!(a["key"], format!("key-{i}"));
        assert_eq!(a["queue"], i as u64 % 3);
        assert_eq!(a["offset"], i as u64 / 3);
    }

    let printed = json_lines(&ok("print", &dir, &["--topic", "T", "--json"]));
    assert_eq!(printed.len(), 25);
    for (p, a) in printed.iter().zip(&acked) {
        for key in MESSAGE_KEYS {
            assert!(p.get(key).is_some(), "missing {key}: {p}");
        }
        assert_eq!(p.as_object().unwrap().len(), MESSAGE_KEYS.len());
        assert_eq!(p["id"], a["id"]);
        assert_eq!(p["queue"], a["queue"]);
        assert_eq!(p["offset"], a["offset"]);
        assert_eq!(p["crc32"], a["crc32"]);
        assert_eq!(p["keys"], Value::Array(vec![a["key"].clone()]));
        assert_eq!(p["tags"], "TagA");
        assert_eq!(p["topic"], "T");
        assert_eq!(p["size"], 300);
        assert_eq!(p["reconsume_times"], 0);
        assert!(p["store_timestamp"].as_u64().unwrap() > 0);
    }

    // A second run appends to the acks file and continues the queues.
    ok("produce", &dir, &["--topic", "T", "--count", "3", "--flush", "sync", "--acks", acks_s]);
    let acked = json_lines(&std::fs::read_to_string(&acks).unwrap());
    assert_eq!(acked.len(), 28);
    assert!(acked[25..].iter().all(|a| a["key"].is_null()));
    let printed = json_lines(&ok("print", &dir, &["--topic", "T", "--json"]));
    assert_eq!(printed.len(), 28);
    for (p, a) in printed.iter().zip(&acked).skip(25) {
        assert_eq!(
            (&p["id"], &p["queue"], &p["offset"], &p["crc32"]),
            (&a["id"], &a["queue"], &a["offset"], &a["crc32"])
        );
        assert_eq!(p["keys"], Value::Array(vec![]));
        assert!(p["tags"].is_null());
        assert_eq!(p["size"], 128);
    }
    // An existing topic keeps its queue count.
    let stats: Value = serde_json::from_str(&ok("stats", &dir, &["--json"])).unwrap();
    assert_eq!(stats["topics"][0]["read_queues"], 3);
}

#[test]
fn print_selects_queue_from_and_max() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok("produce", dir, &["--topic", "T", "--queues", "2", "--count", "20", "--key-prefix", "k"]);
    let all = json_lines(&ok("print", dir, &["--topic", "T", "--json", "--max", "0"]));
    assert_eq!(all.len(), 20);
    assert_eq!(json_lines(&ok("print", dir, &["--topic", "T", "--json"])), all);
    assert_eq!(json_lines(&ok("print", dir, &["--topic", "T", "--json", "--max", "3"])), all[..3]);

    let q1 = json_lines(&ok("print", dir, &["--topic", "T", "--json", "--queue", "1", "--from", "4"]));
    let offsets: Vec<u64> = q1.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (4..10).collect::<Vec<_>>());
    assert!(q1.iter().all(|m| m["queue"] == 1));
    // Without --queue, --from applies to every queue.
    let late = json_lines(&ok("print", dir, &["--topic", "T", "--json", "--from", "8"]));
    assert_eq!(late.len(), 4);
    assert!(late.iter().all(|m| m["offset"].as_u64().unwrap() >= 8));
    assert!(ok("print", dir, &["--topic", "T", "--from", "10"]).is_empty());

    // Text form: one line per message carrying the same facts.
    let text = ok("print", dir, &["--topic", "T"]);
    assert_eq!(text.lines().count(), 20);
    for (line, m) in text.lines().zip(&all) {
        assert!(line.contains(&format!("id={}", m["id"].as_str().unwrap())), "{line}");
        assert!(line.contains(&format!("queue={}", m["queue"])), "{line}");
        assert!(line.contains(&format!("crc32={:#010x}", m["crc32"].as_u64().unwrap())), "{line}");
        assert!(line.contains(&format!("keys={}", m["keys"][0].as_str().unwrap())), "{line}");
        assert!(line.contains("tags=-"), "{line}");
    }
}

// --------------------------------------------------------------- consume

#[test]
fn consume_commits_offsets_and_stats_shows_the_lag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok("produce", dir, &["--topic", "T", "--count", "30"]);

    let stats: Value = serde_json::from_str(&ok("stats", dir, &["--json"])).unwrap();
    assert_eq!(stats["groups"], Value::Array(vec![]));

    let first = json_lines(&ok("consume", dir, &["--topic", "T", "--group", "g", "--json", "--max", "10"]));
    assert_eq!(first.len(), 10);
    let stats: Value = serde_json::from_str(&ok("stats", dir, &["--json"])).unwrap();
    let g = &stats["groups"][0];
    assert_eq!((&g["group"], &g["topic"], &g["lag"]), (&Value::from("g"), &Value::from("T"), &Value::from(20)));

    let rest = json_lines(&ok("consume", dir, &["--topic", "T", "--group", "g", "--json"]));
    assert_eq!(rest.len(), 20);
    // Together, every message exactly once.
    let printed = json_lines(&ok("print", dir, &["--topic", "T", "--json"]));
    let mut ids: Vec<_> = first.iter().chain(&rest).map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    let mut want: Vec<_> = printed.iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    want.sort();
    assert_eq!(ids, want);
    // Same lines as print for the same messages.
    for m in first.iter().chain(&rest) {
        assert!(printed.contains(m), "{m}");
    }

    // Nothing new the second time.
    assert!(ok("consume", dir, &["--topic", "T", "--group", "g"]).is_empty());
    let stats: Value = serde_json::from_str(&ok("stats", dir, &["--json"])).unwrap();
    let g = &stats["groups"][0];
    assert_eq!(g["lag"], 0);
    for q in g["queues"].as_array().unwrap() {
        assert_eq!(q["lag"], 0);
        assert_eq!(q["committed"], q["max"]);
    }
    // Another group starts from the beginning.
    assert_eq!(ok("consume", dir, &["--topic", "T", "--group", "other"]).lines().count(), 30);

    // New messages are consumed once.
    ok("produce", dir, &["--topic", "T", "--count", "5"]);
    assert_eq!(ok("consume", dir, &["--topic", "T", "--group", "g"]).lines().count(), 5);
}

// ----------------------------------------------------------------- stats

#[test]
fn stats_json_has_every_key_and_the_text_form_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok("produce", dir, &["--topic", "A", "--queues", "2", "--count", "5"]);
    ok("produce", dir, &["--topic", "B", "--queues", "1", "--count", "3"]);
    ok("consume", dir, &["--topic", "A", "--group", "g", "--max", "2"]);

    let out = ok("stats", dir, &["--json"]);
    assert_eq!(out.lines().count(), 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&v), ["commit_log_bytes", "consumers", "delayed", "groups", "segment_count", "topics"]);
    assert_eq!(v["delayed"]["waiting"], 0);
    // No store holds the directory: no live consumers.
    assert_eq!(v["consumers"], Value::Null);
    assert_eq!(v["segment_count"], 1);
    let seg = std::fs::metadata(dir.join("commitlog").join(format!("{:020}", 0))).unwrap().len();
    assert_eq!(v["commit_log_bytes"], seg);

    let topics = v["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 2);
    assert_eq!(keys(&topics[0]), ["permission", "queues", "read_queues", "topic", "write_queues"]);
    assert_eq!((&topics[0]["topic"], &topics[0]["permission"]), (&Value::from("A"), &Value::from("read-write")));
    assert_eq!((&topics[0]["read_queues"], &topics[0]["write_queues"]), (&Value::from(2), &Value::from(2)));
    let qa = topics[0]["queues"].as_array().unwrap();
    assert_eq!(keys(&qa[0]), ["max", "min", "queue"]);
    let maxes: Vec<_> = qa.iter().map(|q| q["max"].as_u64().unwrap()).collect();
    assert_eq!(maxes, [3, 2]);
    assert!(qa.iter().all(|q| q["min"] == 0));
    assert_eq!(topics[1]["queues"][0]["max"], 3);

    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(keys(&groups[0]), ["group", "lag", "queues", "topic"]);
    assert_eq!(groups[0]["lag"], 3);
    let gq = groups[0]["queues"].as_array().unwrap();
    assert_eq!(keys(&gq[0]), ["committed", "lag", "max", "queue"]);
    // --max 2 took both from queue 0.
    assert_eq!((&gq[0]["committed"], &gq[0]["lag"]), (&Value::from(2), &Value::from(1)));
    assert_eq!((&gq[1]["committed"], &gq[1]["lag"]), (&Value::Null, &Value::from(2)));

    let text = ok("stats", dir, &[]);
    assert!(text.starts_with(&format!("commit log: 1 segment, {seg} bytes")), "{text}");
    assert!(text.contains("topic A: 2 read / 2 write queues, read-write"), "{text}");
    assert!(text.contains("group g on topic A: lag 3"), "{text}");
}

// ------------------------------------------------------ beside a writer

#[test]
fn a_second_writer_fails_fast_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok("produce", dir, &["--topic", "T", "--count", "3"]);
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let before = listing(dir);
    for (cmd, extra) in [("produce", &["--topic", "T"][..]), ("consume", &["--topic", "T", "--group", "g"][..])] {
        let started = Instant::now();
        let out = run(cmd, dir, extra);
        assert!(started.elapsed() < Duration::from_secs(5), "{cmd} waited for the lock");
        assert_eq!(code(&out), 1, "{cmd}");
        assert!(stdout(&out).is_empty(), "{cmd}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{cmd}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains("open in another writer"), "{err}");
        assert!(err.contains("LOCK"), "{err}");
    }
    // The holder is unaffected.
    store.send(Message::new("T", "still mine")).unwrap();
    store.close().unwrap();
    assert_eq!(listing(dir).keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    assert_eq!(ok("print", dir, &["--topic", "T"]).lines().count(), 4);
}

#[test]
fn read_commands_work_while_a_store_is_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    store.create_topic(TopicConfig::new("T", 2)).unwrap();
    let sent: Vec<_> = (0..50)
        .map(|i| store.send(Message::new("T", format!("body {i}")).with_tags("X").with_key(format!("k{i}"))).unwrap())
        .collect();
    wait_dispatched(&store, "T", 2, 50);
    store.commit_offset("g", "T", 0, 25).unwrap();
    store.persist_offsets().unwrap();

    let printed = json_lines(&ok("print", dir, &["--topic", "T", "--json"]));
    assert_eq!(printed.len(), 50);
    for (p, s) in printed.iter().zip(&sent) {
        assert_eq!(p["id"], s.msg_id.as_str());
        assert_eq!((&p["queue"], &p["offset"]), (&Value::from(s.queue_id), &Value::from(s.queue_offset)));
    }
    assert_eq!(printed[7]["crc32"], crc32fast::hash(b"body 7"));

    let v: Value = serde_json::from_str(&ok("stats", dir, &["--json"])).unwrap();
    let maxes: Vec<_> = v["topics"][0]["queues"].as_array().unwrap().iter().map(|q| q["max"].clone()).collect();
    assert_eq!(maxes, [25, 25]);
    assert_eq!(v["groups"][0]["queues"][0]["lag"], 0);
    assert_eq!(v["groups"][0]["queues"][1]["lag"], 25);

    let out = run("verify", dir, &[]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).starts_with("OK:"));
    assert_eq!(ok("dump", dir, &[]).lines().count(), 50);

    // The store still owns the directory and keeps working.
    assert!(matches!(Store::open(dir, StoreOptions::default()), Err(mqstore::Error::Locked { .. })));
    store.send(Message::new("T", "after")).unwrap();
    assert_eq!(ok("print", dir, &["--topic", "T"]).lines().count(), 51);
    store.close().unwrap();
}

#[test]
fn read_commands_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok("produce", dir, &["--topic", "T", "--count", "10"]);
    ok("consume", dir, &["--topic", "T", "--group", "g", "--max", "4"]);
    let before = listing(dir);
    ok("print", dir, &["--topic", "T", "--json"]);
    ok("print", dir, &["--topic", "T", "--queue", "1"]);
    ok("stats", dir, &[]);
    ok("stats", dir, &["--json"]);
    ok("verify", dir, &[]);
    ok("dump", dir, &[]);
    assert_eq!(listing(dir), before);
}

// ------------------------------------------------------------- bad input

#[test]
fn bad_input_exits_1_with_one_line_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok("produce", &store, &["--topic", "T", "--count", "2"]);
    let s = store.to_str().unwrap();
    let missing = tmp.path().join("missing");
    let m = missing.to_str().unwrap();
    let no_dir_acks = tmp.path().join("nope").join("acks");
    let big = (4usize << 20) + 1;
    let big = big.to_string();
    let long_prefix = "p".repeat(40_000);
    let cases: Vec<Vec<&str>> = vec![
        // produce: checked before anything is opened or created
        vec!["produce", "--dir", m, "--topic", ""],
        vec!["produce", "--dir", m, "--topic", "a.b"],
        vec!["produce", "--dir", m, "--topic", "has space"],
        vec!["produce", "--dir", m, "--topic", "%RETRY%g"],
        vec!["produce", "--dir", m, "--topic", "T", "--flush", "maybe"],
        vec!["produce", "--dir", m, "--topic", "T", "--size", &big],
        vec!["produce", "--dir", m, "--topic", "T", "--size", "0"],
        vec!["produce", "--dir", m, "--topic", "T", "--queues", "0"],
        vec!["produce", "--dir", m, "--topic", "T", "--queues", "1025"],
        vec!["produce", "--dir", m, "--topic", "T", "--count", "-1"],
        vec!["produce", "--dir", m, "--topic", "T", "--tag", "a||b"],
        vec!["produce", "--dir", m, "--topic", "T", "--tag", ""],
        vec!["produce", "--dir", m, "--topic", "T", "--key-prefix", "a b"],
        vec!["produce", "--dir", m, "--topic", "T", "--key-prefix", &long_prefix],
        vec!["produce", "--dir", m, "--topic", "T", "--acks", no_dir_acks.to_str().unwrap()],
        vec!["produce", "--dir", m, "--topic", "T", "--bogus"],
        vec!["produce", "--dir", m],
        vec!["produce", "--dir", s, "--topic", "", "--count", "1"],
        vec!["produce", "--dir", s, "--topic", "T", "--flush", "maybe"],
        vec!["produce", "--dir", s, "--topic", "T", "--size", &big],
        vec!["produce", "--dir", s, "--topic", "T", "--acks", s],
        // print
        vec!["print", "--dir", m, "--topic", "T"],
        vec!["print", "--dir", s, "--topic", ""],
        vec!["print", "--dir", s, "--topic", "Nope"],
        vec!["print", "--dir", s, "--topic", "T", "--queue", "4"],
        vec!["print", "--dir", s, "--topic", "T", "--from", "-1"],
        vec!["print", "--dir", s, "--topic", "T", "--max", "x"],
        // consume: nothing is created for a missing store or topic
        vec!["consume", "--dir", m, "--topic", "T", "--group", "g"],
        vec!["consume", "--dir", s, "--topic", "Nope", "--group", "g"],
        vec!["consume", "--dir", s, "--topic", "T", "--group", "bad group"],
        vec!["consume", "--dir", s, "--topic", "T", "--group", ""],
        vec!["consume", "--dir", s, "--topic", "T"],
        // stats
        vec!["stats", "--dir", m],
        vec!["stats", "--dir", s, "--jsn"],
    ];
    for args in &cases {
        let before = listing(tmp.path());
        let out = mqstore(args);
        let shown: Vec<String> = args.iter().map(|a| a.chars().take(40).collect()).collect();
        assert_eq!(code(&out), 1, "{shown:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{shown:?}: {}", stdout(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{shown:?}: {err}");
        assert!(err.starts_with("error: "), "{shown:?}: {err}");
        assert_eq!(listing(tmp.path()), before, "{shown:?} changed the directory");
        assert!(!missing.exists(), "{shown:?} created the directory");
    }
    // The store is still whole.
    assert_eq!(ok("print", &store, &["--topic", "T"]).lines().count(), 2);
}
