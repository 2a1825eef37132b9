//! `query` and `get`, run through the built binary against a store made
//! with the library (closed, and beside the live store).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mqstore::message::Message;
use mqstore::store::{Store, StoreOptions};
use mqstore::topic::TopicConfig;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn run(verb: &str, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![verb, "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_mqstore")).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

fn ok(verb: &str, dir: &Path, extra: &[&str]) -> String {
    let o = run(verb, dir, extra);
    assert!(!text(&o.stderr).contains("panicked"));
    assert_eq!(o.status.code(), Some(0), "{verb} {extra:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

fn code(verb: &str, dir: &Path, extra: &[&str]) -> i32 {
    let o = run(verb, dir, extra);
    assert!(!text(&o.stderr).contains("panicked"));
    o.status.code().unwrap()
}

#[test]
fn query_and_get_closed_and_beside_a_live_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    store.create_topic(TopicConfig::new("orders", 2)).unwrap();
    let mut sent = Vec::new();
    for i in 0..20 {
        let m = Message::new("orders", format!("order {i}"))
            .with_keys([format!("o-{}", i % 5), "all".to_string()])
            .with_tags("new")
            .with_property("region", "eu");
        sent.push(store.send(m).unwrap());
    }
    // Not UTF-8: printed as hex.
    let bin = store.send(Message::new("orders", vec![0xffu8, 0x00, 0x10]).with_key("bin")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.max_offset("orders", 0).unwrap() + store.max_offset("orders", 1).unwrap() < 21 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }

    // Beside the live store. Its dispatch thread writes index keys into
    // the files within its idle wait (100 ms) of dispatch; until then
    // another process does not find them.
    let want = [&sent[18].msg_id, &sent[13].msg_id, &sent[8].msg_id, &sent[3].msg_id];
    let ids = loop {
        let lines = ok("query", dir, &["--topic", "orders", "--key", "o-3", "--json"]);
        let rows: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let ids: Vec<String> = rows.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
        if ids.len() == want.len() || Instant::now() > deadline {
            break ids;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ids.iter().map(String::as_str).collect::<Vec<_>>(), want);
    let got: Value = serde_json::from_str(&ok("get", dir, &["--id", &sent[7].msg_id, "--json"])).unwrap();
    assert_eq!((&got["body"], &got["body_encoding"], &got["tags"]), (&"order 7".into(), &"utf8".into(), &"new".into()));
    assert_eq!(got["properties"]["region"], "eu");
    assert_eq!(got["offset_id"], sent[7].offset_msg_id.as_str());
    store.close().unwrap();

    // Closed: the store-level id works too, and a binary body is hex.
    let got: Value = serde_json::from_str(&ok("get", dir, &["--id", &bin.offset_msg_id, "--json"])).unwrap();
    assert_eq!((&got["body"], &got["body_encoding"]), (&"ff0010".into(), &"hex".into()));
    let t = ok("get", dir, &["--id", &sent[0].msg_id]);
    assert!(t.contains("body (utf8, 7 bytes):\norder 0\n") && t.contains("property:        region=eu"), "{t}");
    assert_eq!(ok("query", dir, &["--topic", "orders", "--key", "all"]).lines().count(), 20);
    // A time window in ms or RFC 3339.
    let got: Value = serde_json::from_str(&ok("get", dir, &["--id", &sent[10].msg_id, "--json"])).unwrap();
    let t10 = got["store_timestamp"].as_u64().unwrap().to_string();
    let windowed = ok("query", dir, &["--topic", "orders", "--key", "all", "--begin", &t10, "--end", &t10, "--json"]);
    assert!(windowed.lines().all(|l| l.contains(&format!("\"store_timestamp\":{t10}"))));
    assert_eq!(ok("query", dir, &["--topic", "orders", "--key", "all", "--end", "1970-01-01T00:00:00Z"]), "");
    // Nothing found, bad input.
    assert_eq!(ok("query", dir, &["--topic", "orders", "--key", "nope"]), "");
    assert_eq!(code("get", dir, &["--id", "00000000000000000000000000000000"]), 1);
    assert_eq!(code("query", dir, &["--topic", "orders", "--key", "x", "--begin", "yesterday"]), 1);
    assert_eq!(code("query", dir, &["--topic", "bad topic", "--key", "x"]), 1);
    assert_eq!(code("query", dir, &["--topic", "orders", "--key", "x", "--begin", "5", "--end", "4"]), 1);
}
