//! `dlq list` and `dlq resend`, run through the built binary against a
//! store whose consumer group dead-lettered messages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mqstore::consumer::{ConsumeContext, ConsumeStatus};
use mqstore::message::{Message, MessageExt};
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(verb: &[&str], dir: &Path, extra: &[&str]) -> Output {
    let mut args = verb.to_vec();
    args.extend_from_slice(&["--dir", dir.to_str().unwrap()]);
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_mqstore")).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

fn code(o: &Output) -> i32 {
    assert!(!text(&o.stderr).contains("panicked"), "binary panicked: {}", text(&o.stderr));
    o.status.code().expect("exited by signal")
}

const LIST: &[&str] = &["dlq", "list"];
const RESEND: &[&str] = &["dlq", "resend"];

/// A store where group "g" dead-lettered "a" and "b" of topic "t" (a
/// listener that always fails, max_reconsume_times 0, so no retry wait).
fn store_with_dead_letters(dir: &Path) -> Vec<String> {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    store.create_topic(TopicConfig::new("t", 1)).unwrap();
    let c = store
        .push_consumer("g")
        .subscribe("t", "*")
        .unwrap()
        .max_reconsume_times(0)
        .listener(|_: &[MessageExt], _: &ConsumeContext| ConsumeStatus::ReconsumeLater)
        .start()
        .unwrap();
    // One at a time, so the dead letters are in send order: sent together,
    // the two can be consumed by two workers and dead-lettered either way.
    let mut ids = Vec::new();
    for (n, body) in (1..).zip(["a", "b"]) {
        ids.push(store.send(Message::new("t", body).with_tags("T")).unwrap().msg_id.into());
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.dlq_count("g").unwrap() < n {
            assert!(Instant::now() < deadline, "dead letters");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    c.shutdown().unwrap();
    store.close().unwrap();
    ids
}

#[test]
fn list_dry_run_and_execute() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ids = store_with_dead_letters(dir);

    let out = run(LIST, dir, &["--group", "g", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let rows: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    for (row, id) in rows.iter().zip(&ids) {
        assert_eq!(
            (&row["id"], &row["original_topic"], &row["tags"]),
            (&Value::from(id.as_str()), &"t".into(), &"T".into())
        );
        assert_eq!((&row["reconsume_times"], &row["size"]), (&Value::from(0), &Value::from(1)));
    }
    let out = run(LIST, dir, &["--group", "g"]);
    assert_eq!(code(&out), 0);
    assert_eq!(text(&out.stdout).lines().count(), 2);
    assert!(text(&out.stdout).contains(&format!("id={}", ids[0])));
    // A group without dead letters: nothing, successfully.
    let out = run(LIST, dir, &["--group", "other"]);
    assert_eq!((code(&out), text(&out.stdout)), (0, String::new()));

    // Dry run: says what it would do, changes nothing.
    let before = Store::open(dir, StoreOptions::default()).unwrap();
    let t_end = before.max_offset("t", 0).unwrap();
    before.close().unwrap();
    let out = run(RESEND, dir, &["--group", "g", "--id", &ids[1]]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!("would resend dlq_offset=1        id={}", ids[1])),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stderr).contains("dry run"));
    let out = run(RESEND, dir, &["--group", "g", "--id", "nope"]);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("no dead letter"), "{}", text(&out.stderr));
    let out = run(RESEND, dir, &["--group", "g"]);
    assert_eq!(code(&out), 1, "--id or --all is required");
    let out = run(RESEND, dir, &["--group", "g", "--all", "--id", "x"]);
    assert_eq!(code(&out), 1, "--id and --all conflict");
    let s = Store::open(dir, StoreOptions::default()).unwrap();
    assert_eq!(s.max_offset("t", 0).unwrap(), t_end);
    s.close().unwrap();

    // Execute: one back to its topic, then all to the retry topic.
    let out = run(RESEND, dir, &["--group", "g", "--id", &ids[1], "--execute"]);
    assert_eq!((code(&out), text(&out.stdout)), (0, "resent 1 dead letter(s)\n".into()), "{}", text(&out.stderr));
    let out = run(RESEND, dir, &["--group", "g", "--all", "--to", "retry", "--execute"]);
    assert_eq!(code(&out), 0);
    let s = Store::open(dir, StoreOptions::default()).unwrap();
    assert_eq!(s.max_offset("t", 0).unwrap(), t_end + 1);
    let m = &s.pull("t", 0, t_end, 1, &mqstore::store::TagFilter::All).unwrap().messages[0];
    assert_eq!((m.msg_id(), m.body().as_ref()), (Some(ids[1].as_str()), &b"b"[..]));
    assert_eq!(s.max_offset("%RETRY%g", 0).unwrap(), 2);
    // Beside a live store, --execute fails on the lock and changes nothing.
    let out = run(RESEND, dir, &["--group", "g", "--all", "--execute"]);
    assert_eq!(code(&out), 1);
    assert_eq!(s.max_offset("t", 0).unwrap(), t_end + 1);
    s.close().unwrap();
}
