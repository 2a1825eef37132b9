//! `perf produce` and `perf consume`, run through the built binary: the
//! figures they report must match what was stored and read back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mqstore::store::{Store, StoreOptions};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A run that has not ended after this long is a hang (the runs here
/// take well under a second, or 1.2 s for the --duration one).
const HANG: Duration = Duration::from_secs(60);

/// `mqstore perf <verb> --dir <dir> <extra...>` with stdout and stderr as
/// pipes (so stderr is not a terminal), killed if it hangs.
fn perf(verb: &str, dir: &Path, extra: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mqstore"))
        .args(["perf", verb, "--dir", dir.to_str().unwrap()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > HANG {
            child.kill().unwrap();
            panic!("perf {verb} {extra:?} did not end within {HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Runs, insists on exit 0 and a silent stderr, and parses the one JSON
/// line of stdout.
fn perf_json(verb: &str, dir: &Path, extra: &[&str]) -> Value {
    let out = perf(verb, dir, &[extra, &["--json"]].concat());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "perf {verb} {extra:?}: {stdout}{stderr}");
    // Not a terminal: no progress line (nor anything else) on stderr.
    assert_eq!(stderr, "", "perf {verb} {extra:?} wrote to stderr");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    serde_json::from_str(&stdout).unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

/// The latency object: documented keys, sensible and ordered values.
fn check_latency(lat: &Value, per: &str, samples: u64) {
    assert_eq!(keys(lat), ["max", "mean", "p50", "p99", "p999", "per", "samples"]);
    assert_eq!(lat["per"], per);
    assert_eq!(lat["samples"], samples, "{lat}");
    let p = |k: &str| lat[k].as_f64().unwrap();
    assert!(p("p50") > 0.0, "{lat}");
    assert!(p("p50") <= p("p99") && p("p99") <= p("p999") && p("p999") <= p("max"), "{lat}");
    assert!(p("mean") <= p("max"), "{lat}");
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[test]
fn produced_messages_are_read_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    // 301 over 3 threads: the remainder must not be lost.
    let args = ["--count", "301", "--size", "100", "--threads", "3", "--topics", "2", "--queues", "3"];
    let p = perf_json("produce", &dir, &args);
    assert_eq!(
        keys(&p),
        [
            "bytes",
            "close_s",
            "elapsed_s",
            "errors",
            "flush_timeouts",
            "latency_us",
            "mb_per_s",
            "messages",
            "msgs_per_s",
            "params",
            "send_s",
            "verb"
        ]
    );
    assert_eq!(p["verb"], "perf produce");
    assert_eq!((p["messages"].as_u64(), p["bytes"].as_u64()), (Some(301), Some(30_100)));
    assert_eq!((p["errors"].as_u64(), p["flush_timeouts"].as_u64()), (Some(0), Some(0)));
    check_latency(&p["latency_us"], "send", 301);
    let params = &p["params"];
    assert_eq!(
        (&params["threads"], &params["flush"], &params["count"], &params["duration_s"], &params["batch"]),
        (&Value::from(3), &Value::from("async"), &Value::from(301), &Value::Null, &Value::from(1))
    );
    assert!(f(&p, "send_s") > 0.0 && f(&p, "close_s") >= 0.0);
    assert!((f(&p, "send_s") + f(&p, "close_s") - f(&p, "elapsed_s")).abs() < 1e-6, "{p}");
    assert!((f(&p, "msgs_per_s") * f(&p, "elapsed_s") - 301.0).abs() < 1e-3, "{p}");
    assert!((f(&p, "mb_per_s") * f(&p, "elapsed_s") - 0.0301).abs() < 1e-6, "{p}");

    let c = perf_json("consume", &dir, &["--topics", "2", "--threads", "4", "--batch", "16"]);
    assert_eq!(
        keys(&c),
        [
            "bytes",
            "elapsed_s",
            "latency_us",
            "mb_per_s",
            "messages",
            "msgs_per_s",
            "params",
            "pulls",
            "queues",
            "threads_used",
            "verb"
        ]
    );
    assert_eq!((c["messages"].as_u64(), c["bytes"].as_u64()), (Some(301), Some(30_100)));
    assert_eq!((c["queues"].as_u64(), c["threads_used"].as_u64()), (Some(6), Some(4)));
    check_latency(&c["latency_us"], "pull", c["pulls"].as_u64().unwrap());
    // At most 16 per pull, and one short pull per queue at most (how the
    // store's rotation spread the messages over the queues depends on
    // how the threads interleaved).
    let pulls = c["pulls"].as_u64().unwrap();
    assert!((301u64.div_ceil(16)..=301u64.div_ceil(16) + 6).contains(&pulls), "{c}");
    assert_eq!(c["params"]["checksums"], "verify");
    let skip = perf_json("consume", &dir, &["--topics", "2", "--checksums", "skip"]);
    assert_eq!((skip["messages"].as_u64(), skip["params"]["checksums"].as_str()), (Some(301), Some("skip")));
}

#[test]
fn sync_batches_are_timed_per_batch_and_a_group_continues_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let p = perf_json("produce", &dir, &["--count", "50", "--batch", "7", "--flush", "sync", "--queues", "2"]);
    assert_eq!((p["messages"].as_u64(), p["errors"].as_u64()), (Some(50), Some(0)));
    // 7 batches of 7 and one of 1.
    check_latency(&p["latency_us"], "batch", 8);
    assert_eq!(p["params"]["flush"], "sync");

    // The batches alternate between the two queues, so neither holds 30:
    // the budget claimed by the pulls that ran past the first queue's end
    // must go back for the second.
    let first = perf_json("consume", &dir, &["--group", "g", "--count", "30", "--batch", "8"]);
    assert_eq!((first["messages"].as_u64(), first["bytes"].as_u64()), (Some(30), Some(30 * 128)));
    let rest = perf_json("consume", &dir, &["--group", "g"]);
    assert_eq!(rest["messages"], 20, "{rest}");
}

#[test]
fn duration_ends_the_run_and_rate_caps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    // Longer than the 1 s progress tick, so a progress line would show.
    let p = perf_json("produce", &dir, &["--duration", "1200ms", "--rate", "2000", "--threads", "2"]);
    let (elapsed, messages) = (f(&p, "elapsed_s"), p["messages"].as_u64().unwrap());
    assert!((1.2..30.0).contains(&elapsed), "{p}");
    assert!(messages > 0, "{p}");
    // The throttle keeps each thread on 1,000 msgs/s from its start (one
    // send may land just before the deadline).
    assert!(messages as f64 <= 2000.0 * f(&p, "send_s") + 2.0, "{p}");
    assert_eq!(p["params"]["duration_s"], 1.2);
    assert_eq!(p["params"]["count"], Value::Null);

    // Without a group every run reads everything; the text report.
    let out = perf("consume", &dir, &["--duration", "10s"]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    let head = format!("perf consume: {messages} msgs, {} bytes in ", messages * 128);
    assert!(report.starts_with(&head), "{head}\n{report}");
    assert!(report.contains(" msgs/s, ") && report.contains(" p99.9 "), "{report}");
    let out = perf("consume", &dir, &["--topics", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), format!("error: topic perf-0 does not exist in {}\n", dir.display()));
}

#[test]
fn bad_arguments_are_refused_before_anything_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let cases: &[(&str, &[&str], &str)] = &[
        ("produce", &[], "--count"),
        ("produce", &["--count", "5", "--duration", "1s"], "cannot be used with"),
        ("produce", &["--duration", "10"], "no unit"),
        ("produce", &["--duration", "0s"], "more than zero"),
        ("produce", &["--count", "0"], "--count must be at least 1"),
        ("produce", &["--count", "5", "--size", "0"], "--size 0"),
        ("produce", &["--count", "5", "--size", "4194305"], "--size 4194305"),
        ("produce", &["--count", "5", "--threads", "0"], "--threads 0"),
        ("produce", &["--count", "5", "--batch", "0"], "--batch 0"),
        ("produce", &["--count", "5", "--queues", "0"], "--queues 0"),
        ("produce", &["--count", "5", "--topics", "0"], "--topics 0"),
        ("produce", &["--count", "5", "--topic", "no spaces"], "--topic"),
        ("produce", &["--count", "5", "--rate", "0"], "--rate"),
        ("produce", &["--count", "5", "--flush", "sometimes"], "sometimes"),
        ("consume", &["--batch", "0"], "--batch 0"),
        ("consume", &["--group", "no spaces"], "--group"),
        ("consume", &["--count", "0"], "--count must be at least 1"),
        ("consume", &[], "holds no commit log"),
    ];
    for (verb, extra, needle) in cases {
        let out = perf(verb, &dir, extra);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{verb} {extra:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{verb} {extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(text(&out.stdout), "");
        assert!(!dir.exists(), "{verb} {extra:?} created the store");
    }
}

#[test]
fn a_store_error_ends_the_run_with_its_message() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let held = Store::open(&dir, StoreOptions::default()).unwrap();
    // Consume checks its topic (without the lock) first: give it one.
    held.create_topic(mqstore::topic::TopicConfig::new("perf", 1)).unwrap();
    for verb in ["produce", "consume"] {
        let out = perf(verb, &dir, &["--count", "5"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: store ") && err.contains("open in another writer"), "{verb}: {err}");
        assert_eq!(text(&out.stdout), "");
    }
    held.close().unwrap();
}
