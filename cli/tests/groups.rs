//! `group list`, `group progress` and `offset reset`, run through the built
//! binary against stores made with the library.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::listing;
use mqstore::commitlog::CommitLogOptions;
use mqstore::message::Message;
use mqstore::store::{Store, StoreOptions, StoreView};
use mqstore::topic::TopicConfig;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn mqstore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mqstore")).args(args).output().unwrap()
}

/// `mqstore <verb...> --dir <dir> <extra...>`.
fn run(verb: &[&str], dir: &Path, extra: &[&str]) -> Output {
    let mut args = verb.to_vec();
    args.extend_from_slice(&["--dir", dir.to_str().unwrap()]);
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

/// Runs and insists on exit 0 and an empty stderr.
fn ok(verb: &[&str], dir: &Path, extra: &[&str]) -> String {
    let out = run(verb, dir, extra);
    assert_eq!(code(&out), 0, "{verb:?} {extra:?}: {}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).is_empty(), "{verb:?} {extra:?}: {}", stderr(&out));
    stdout(&out)
}

fn ok_json(verb: &[&str], dir: &Path, extra: &[&str]) -> Value {
    let text = ok(verb, dir, &[extra, &["--json"]].concat());
    assert_eq!(text.lines().count(), 1, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

const LIST: &[&str] = &["group", "list"];
const PROGRESS: &[&str] = &["group", "progress"];
const RESET: &[&str] = &["offset", "reset"];

/// Small segments, to save disk. (Consume-queue files keep the default
/// size: `--execute` opens the store with default options, and a queue's
/// units per file are fixed once its files exist.)
fn opts() -> StoreOptions {
    StoreOptions::default()
        .commit_log_options(CommitLogOptions::default().segment_size(1 << 20).max_record_size(64 << 10))
        .max_body_size(16 << 10)
        .max_properties_size(4 << 10)
}

fn send(store: &Store, topic: &str, n: usize) {
    for i in 0..n {
        store.send(Message::new(topic, format!("{topic} body {i}"))).unwrap();
    }
}

fn wait_dispatched(store: &Store, topic: &str, queues: u32, total: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..queues).map(|q| store.max_offset(topic, q).unwrap()).sum::<u64>() < total {
        assert!(Instant::now() < deadline, "dispatch did not catch up");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn offsets_file(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("config").join("consumer_offsets")).unwrap()
}

/// (queue, offset) of the group's committed offsets on `topic`, as persisted.
fn committed(dir: &Path, group: &str, topic: &str) -> Vec<(u32, u64)> {
    StoreView::open(dir)
        .unwrap()
        .offsets()
        .unwrap()
        .into_iter()
        .filter(|e| e.group == group && e.topic == topic)
        .map(|e| (e.queue_id, e.offset))
        .collect()
}

/// Topic A (2 queues, 5 messages each), B (1 queue, 3), C (1 queue, 2);
/// g1 committed A/0 = 3 and B/0 = 1, g2 committed A/1 = 5. Closed.
fn groups_store(dir: &Path) {
    let store = Store::open(dir, opts()).unwrap();
    store.create_topic(TopicConfig::new("A", 2)).unwrap();
    store.create_topic(TopicConfig::new("B", 1)).unwrap();
    store.create_topic(TopicConfig::new("C", 1)).unwrap();
    send(&store, "A", 10);
    send(&store, "B", 3);
    send(&store, "C", 2);
    wait_dispatched(&store, "A", 2, 10);
    wait_dispatched(&store, "B", 1, 3);
    wait_dispatched(&store, "C", 1, 2);
    store.commit_offset("g1", "A", 0, 3).unwrap();
    store.commit_offset("g1", "B", 0, 1).unwrap();
    store.commit_offset("g2", "A", 1, 5).unwrap();
    store.close().unwrap();
}

// ----------------------------------------------------------------- group

#[test]
fn group_list_text_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    groups_store(dir);
    assert_eq!(ok(LIST, dir, &[]), "group g1: A, B\ngroup g2: A\n");
    assert_eq!(
        ok_json(LIST, dir, &[]),
        json!({"groups": [{"group": "g1", "topics": ["A", "B"]}, {"group": "g2", "topics": ["A"]}]})
    );

    // A store without commits.
    let empty = tmp.path().join("empty");
    let store = Store::open(&empty, opts()).unwrap();
    store.create_topic(TopicConfig::new("A", 1)).unwrap();
    store.close().unwrap();
    assert_eq!(ok(LIST, &empty, &[]), "no consumer group has committed offsets\n");
    assert_eq!(ok_json(LIST, &empty, &[]), json!({"groups": []}));
}

#[test]
fn group_progress_text_json_and_lag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    groups_store(dir);
    // Lag is max - committed, or max - min without a commit.
    assert_eq!(
        ok_json(PROGRESS, dir, &["--group", "g1"]),
        json!({"group": "g1", "lag": 9, "topics": [
            {"topic": "A", "lag": 7, "queues": [
                {"queue": 0, "committed": 3, "min": 0, "max": 5, "lag": 2},
                {"queue": 1, "committed": null, "min": 0, "max": 5, "lag": 5}]},
            {"topic": "B", "lag": 2, "queues": [
                {"queue": 0, "committed": 1, "min": 0, "max": 3, "lag": 2}]}]})
    );
    assert_eq!(
        ok_json(PROGRESS, dir, &["--group", "g2"]),
        json!({"group": "g2", "lag": 5, "topics": [
            {"topic": "A", "lag": 5, "queues": [
                {"queue": 0, "committed": null, "min": 0, "max": 5, "lag": 5},
                {"queue": 1, "committed": 5, "min": 0, "max": 5, "lag": 0}]}]})
    );
    let text = ok(PROGRESS, dir, &["--group", "g1"]);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines,
        [
            vec!["group", "g1:", "lag", "9"],
            vec!["topic", "A:", "lag", "7"],
            vec!["queue", "0", "committed", "3", "min", "0", "max", "5", "lag", "2"],
            vec!["queue", "1", "committed", "-", "min", "0", "max", "5", "lag", "5"],
            vec!["topic", "B:", "lag", "2"],
            vec!["queue", "0", "committed", "1", "min", "0", "max", "3", "lag", "2"],
        ],
        "{text}"
    );
    // No owner column (or placeholder) yet.
    assert!(!text.contains("owner"), "{text}");
    assert!(ok_json(PROGRESS, dir, &["--group", "g2"])["topics"][0]["queues"][0].get("owner").is_none());
}

// ----------------------------------------------------------- offset reset

/// Topic T with 2 queues, 12 messages in three batches some milliseconds
/// apart; g committed 2 on queue 0. Closed. Returns every message's
/// (queue, offset, store timestamp) in log order.
fn reset_store(dir: &Path) -> Vec<(u32, u64, u64)> {
    let store = Store::open(dir, opts()).unwrap();
    store.create_topic(TopicConfig::new("T", 2)).unwrap();
    for _ in 0..3 {
        send(&store, "T", 4);
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_dispatched(&store, "T", 2, 12);
    store.commit_offset("g", "T", 0, 2).unwrap();
    store.close().unwrap();
    let mut out = Vec::new();
    StoreView::open(dir)
        .unwrap()
        .messages("T", None, 0, 0, |m| {
            out.push((m.queue_id(), m.queue_offset().0, m.store_timestamp()));
            Ok(true)
        })
        .unwrap();
    assert_eq!(out.len(), 12);
    out
}

/// Epoch milliseconds as RFC 3339 in UTC, with a `+00:00` or `Z` suffix
/// (Howard Hinnant's `civil_from_days`).
fn rfc3339(ms: u64, zulu: bool) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s, f) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1_000 % 60, rem % 1_000);
    let zone = if zulu { "Z" } else { "+00:00" };
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{f:03}{zone}")
}

/// `(queue, new)` of a reset's JSON, checking the shape on the way.
fn news(v: &Value, executed: bool) -> Vec<(u64, u64)> {
    assert_eq!((&v["group"], &v["topic"], &v["executed"]), (&json!("g"), &json!("T"), &json!(executed)), "{v}");
    v["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let keys: Vec<&str> = q.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys.len(), 5, "{q}");
            for k in ["queue", "committed", "new", "min", "max"] {
                assert!(keys.contains(&k), "{q}");
            }
            (q["queue"].as_u64().unwrap(), q["new"].as_u64().unwrap())
        })
        .collect()
}

/// Per queue, the first offset stored at or after `ts` (6 = the end).
fn expected_at(msgs: &[(u32, u64, u64)], ts: u64) -> Vec<(u64, u64)> {
    (0..2u32)
        .map(|q| {
            let first = msgs.iter().filter(|m| m.0 == q && m.2 >= ts).map(|m| m.1).min().unwrap_or(6);
            (u64::from(q), first)
        })
        .collect()
}

#[test]
fn reset_dry_run_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let msgs = reset_store(dir);
    let bytes = offsets_file(dir);
    let before = listing(dir);
    let ts = msgs[4].2; // first of the second batch
    let cases: Vec<(String, Vec<(u64, u64)>)> = vec![
        ("earliest".into(), vec![(0, 0), (1, 0)]),
        ("latest".into(), vec![(0, 6), (1, 6)]),
        ("4".into(), vec![(0, 4), (1, 4)]),
        (rfc3339(ts, true), expected_at(&msgs, ts)),
        (rfc3339(msgs[0].2 - 1000, false), vec![(0, 0), (1, 0)]),
        (rfc3339(msgs[11].2 + 1, true), vec![(0, 6), (1, 6)]),
    ];
    for (to, want) in &cases {
        let v = ok_json(RESET, dir, &["--group", "g", "--topic", "T", "--to", to]);
        assert_eq!(news(&v, false), *want, "--to {to}: {v}");
        assert_eq!(v["to"], json!(to));
        assert_eq!(v["queues"][0]["committed"], 2);
        assert_eq!(v["queues"][1]["committed"], Value::Null);
        assert_eq!((&v["queues"][1]["min"], &v["queues"][1]["max"]), (&json!(0), &json!(6)));
        let text = ok(RESET, dir, &["--group", "g", "--topic", "T", "--to", to]);
        assert!(text.starts_with("dry run: would reset group g on topic T to "), "{text}");
        assert!(text.contains("nothing changed"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
        let q0: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        let new0 = want[0].1.to_string();
        assert_eq!(q0, ["queue", "0", "committed", "2", "new", new0.as_str(), "min", "0", "max", "6"], "{text}");
    }
    // Offsets file byte for byte, and the whole tree, unchanged.
    assert_eq!(offsets_file(dir), bytes);
    assert_eq!(listing(dir), before);
    assert_eq!(committed(dir, "g", "T"), [(0, 2)]);
}

#[test]
fn reset_execute_earliest_latest_number_and_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let msgs = reset_store(dir);
    let exec = |to: &str| ok_json(RESET, dir, &["--group", "g", "--topic", "T", "--to", to, "--execute"]);

    let v = exec("latest");
    assert_eq!(news(&v, true), [(0, 6), (1, 6)]);
    assert_eq!((&v["queues"][0]["committed"], &v["queues"][1]["committed"]), (&json!(2), &Value::Null));
    assert_eq!(committed(dir, "g", "T"), [(0, 6), (1, 6)]);

    // Backwards too.
    let v = exec("earliest");
    assert_eq!(news(&v, true), [(0, 0), (1, 0)]);
    assert_eq!((&v["queues"][0]["committed"], &v["queues"][1]["committed"]), (&json!(6), &json!(6)));
    assert_eq!(committed(dir, "g", "T"), [(0, 0), (1, 0)]);

    assert_eq!(news(&exec("3"), true), [(0, 3), (1, 3)]);
    assert_eq!(committed(dir, "g", "T"), [(0, 3), (1, 3)]);

    // A time: the dry run and the store agree.
    let ts = msgs[8].2; // first of the third batch
    let to = rfc3339(ts, false);
    let dry = ok_json(RESET, dir, &["--group", "g", "--topic", "T", "--to", &to]);
    let want = expected_at(&msgs, ts);
    assert_eq!(news(&dry, false), want);
    assert_ne!(want, [(0, 0), (1, 0)]);
    assert_eq!(news(&exec(&to), true), want);
    assert_eq!(committed(dir, "g", "T"), want.iter().map(|&(q, o)| (q as u32, o)).collect::<Vec<_>>());

    // Before the first message: min; after the last: max.
    assert_eq!(news(&exec(&rfc3339(msgs[0].2 - 60_000, true)), true), [(0, 0), (1, 0)]);
    assert_eq!(committed(dir, "g", "T"), [(0, 0), (1, 0)]);
    assert_eq!(news(&exec("2100-01-01T00:00:00+05:30"), true), [(0, 6), (1, 6)]);
    assert_eq!(committed(dir, "g", "T"), [(0, 6), (1, 6)]);
    assert_eq!(news(&exec("1970-01-01T00:00:00Z"), true), [(0, 0), (1, 0)]);

    // The text form says what it set.
    let text = ok(RESET, dir, &["--group", "g", "--topic", "T", "--to", "latest", "--execute"]);
    assert!(text.starts_with("reset group g on topic T to latest\n"), "{text}");
    let q1: Vec<&str> = text.lines().nth(2).unwrap().split_whitespace().collect();
    assert_eq!(q1, ["queue", "1", "committed", "0", "new", "6", "min", "0", "max", "6"], "{text}");

    // The group's progress shows the new offsets; the messages are intact.
    let p = ok_json(PROGRESS, dir, &["--group", "g"]);
    assert_eq!(p["lag"], 0);
    assert_eq!(StoreView::open(dir).unwrap().messages("T", None, 0, 0, |_| Ok(true)).unwrap(), 12);
    // Opening the store to apply a reset added no commit-log segment.
    let segments: Vec<u64> =
        std::fs::read_dir(dir.join("commitlog")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).collect();
    assert_eq!(segments, [1 << 20]);
}

#[test]
fn reset_to_a_number_outside_the_queue_is_clamped_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    reset_store(dir);
    for execute in [false, true] {
        let mut extra = vec!["--group", "g", "--topic", "T", "--to", "100", "--json"];
        if execute {
            extra.push("--execute");
        }
        let out = run(RESET, dir, &extra);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(news(&v, execute), [(0, 6), (1, 6)]);
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert_eq!(lines[0], "warning: offset 100 is outside queue 0's range [0, 6]; using 6");
        assert_eq!(lines[1], "warning: offset 100 is outside queue 1's range [0, 6]; using 6");
        let want: &[(u32, u64)] = if execute { &[(0, 6), (1, 6)] } else { &[(0, 2)] };
        assert_eq!(committed(dir, "g", "T"), want);
    }
    // In range: no warning.
    ok(RESET, dir, &["--group", "g", "--topic", "T", "--to", "6"]);
}

// ------------------------------------------------------ beside a writer

#[test]
fn reset_beside_a_live_store_dry_run_works_and_execute_fails_with_the_lock_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir, opts()).unwrap();
    store.create_topic(TopicConfig::new("T", 2)).unwrap();
    send(&store, "T", 8);
    wait_dispatched(&store, "T", 2, 8);
    store.commit_offset("g", "T", 1, 3).unwrap();
    store.persist_offsets().unwrap();
    let bytes = offsets_file(dir);

    // Read-only verbs work while the store holds the lock.
    let v = ok_json(RESET, dir, &["--group", "g", "--topic", "T", "--to", "earliest"]);
    assert_eq!(news(&v, false), [(0, 0), (1, 0)]);
    assert_eq!(v["queues"][1]["committed"], 3);
    let far = rfc3339(4_000_000_000_000, true);
    assert_eq!(news(&ok_json(RESET, dir, &["--group", "g", "--topic", "T", "--to", &far]), false), [(0, 4), (1, 4)]);
    assert_eq!(ok_json(LIST, dir, &[]), json!({"groups": [{"group": "g", "topics": ["T"]}]}));
    assert_eq!(ok_json(PROGRESS, dir, &["--group", "g"])["lag"], 5);

    let started = Instant::now();
    let out = run(RESET, dir, &["--group", "g", "--topic", "T", "--to", "earliest", "--execute"]);
    assert!(started.elapsed() < Duration::from_secs(5), "waited for the lock");
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: ") && err.contains("open in another writer"), "{err}");
    assert!(err.contains("LOCK"), "{err}");

    // Nothing changed; the holder is unaffected.
    assert_eq!(offsets_file(dir), bytes);
    assert_eq!(store.committed_offset("g", "T", 1), Some(3));
    store.send(Message::new("T", "still mine")).unwrap();
    store.close().unwrap();
    assert_eq!(committed(dir, "g", "T"), [(1, 3)]);
}

// ------------------------------------------------------------- bad input

#[test]
fn bad_input_exits_1_with_one_line_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    reset_store(&store);
    let s = store.to_str().unwrap();
    let missing = tmp.path().join("missing");
    let m = missing.to_str().unwrap();
    let strings = |a: &[&str]| -> Vec<String> { a.iter().map(|&x| x.to_owned()).collect() };
    let mut cases: Vec<Vec<String>> = [
        &["group", "list", "--dir", m][..],
        &["group", "list", "--dir", s, "--jsn"],
        &["group", "list"],
        &["group", "progress", "--dir", m, "--group", "g"],
        &["group", "progress", "--dir", s, "--group", "nope"],
        &["group", "progress", "--dir", s, "--group", "bad group"],
        &["group", "progress", "--dir", s, "--group", ""],
        &["group", "progress", "--dir", s],
        &["group", "bogus", "--dir", s],
        &["offset", "bogus", "--dir", s],
    ]
    .iter()
    .map(|a| strings(a))
    .collect();
    let bad_to = [
        "",
        "first",
        "Earliest",
        "-1",
        "+5",
        "1.5",
        "99999999999999999999",
        "2024-06-01",
        "2024-06-01 12:00:00Z",
        "2024-06-01T12:00:00",
        "2024-02-30T12:00:00Z",
        "2023-02-29T12:00:00Z",
        "2024-06-01T25:00:00Z",
        "2024-06-01T12:00:00+0200",
        "2024-06-01T12:00:00.Z",
        "1717243200000ms",
    ];
    for x in [&[][..], &["--execute"]] {
        let reset = |rest: &[&str]| strings(&[&["offset", "reset"][..], rest, x].concat());
        cases.push(reset(&["--dir", m, "--group", "g", "--topic", "T", "--to", "earliest"]));
        cases.push(reset(&["--dir", s, "--group", "g", "--topic", "Nope", "--to", "earliest"]));
        cases.push(reset(&["--dir", s, "--group", "g", "--topic", "a.b", "--to", "earliest"]));
        cases.push(reset(&["--dir", s, "--group", "g", "--topic", "", "--to", "earliest"]));
        cases.push(reset(&["--dir", s, "--group", "bad group", "--topic", "T", "--to", "earliest"]));
        cases.push(reset(&["--dir", s, "--group", "", "--topic", "T", "--to", "earliest"]));
        cases.push(reset(&["--dir", s, "--group", "g", "--topic", "T"]));
        cases.push(reset(&["--dir", s, "--topic", "T", "--to", "latest"]));
        for to in bad_to {
            cases.push(reset(&["--dir", s, "--group", "g", "--topic", "T", "--to", to]));
            // Checked before the directory is even looked at.
            cases.push(reset(&["--dir", m, "--group", "g", "--topic", "T", "--to", to]));
        }
    }
    let bytes = offsets_file(&store);
    for args in &cases {
        let before = listing(tmp.path());
        let out = mqstore(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code(&out), 1, "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert_eq!(listing(tmp.path()), before, "{args:?} changed the directory");
        assert!(!missing.exists(), "{args:?} created the directory");
    }
    // A bad --to names the problem.
    let out = mqstore(&["offset", "reset", "--dir", s, "--group", "g", "--topic", "T", "--to", "2024-02-30T00:00:00Z"]);
    assert!(stderr(&out).contains("day out of range"), "{}", stderr(&out));
    let out = mqstore(&["offset", "reset", "--dir", s, "--group", "g", "--topic", "T", "--to", "soon"]);
    assert!(stderr(&out).contains("earliest, latest"), "{}", stderr(&out));
    let out = mqstore(&["offset", "reset", "--dir", s, "--group", "g", "--topic", "Nope", "--to", "latest"]);
    assert!(stderr(&out).contains("topic Nope does not exist"), "{}", stderr(&out));
    assert_eq!(offsets_file(&store), bytes);
    assert_eq!(committed(&store, "g", "T"), [(0, 2)]);
}
