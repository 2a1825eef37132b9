//! Runs the built `mqstore` binary against temporary store directories.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mqstore::commitlog::{Appended, CommitLog, CommitLogOptions, RecordDraft, COMMITLOG_DIR};
use mqstore::storage::StdStorage;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SEGMENT: u64 = 64 << 10;
const RECORDS: u64 = 600;

fn opts() -> CommitLogOptions {
    CommitLogOptions::default().segment_size(SEGMENT).max_record_size(8 << 10)
}

fn body(i: u64) -> Vec<u8> {
    (0..200u64).map(|j| (i * 31 + j) as u8).collect()
}

fn append_all(log: &CommitLog, n: u64) -> Vec<Appended> {
    (0..n)
        .map(|i| {
            let b = body(i);
            log.append(&RecordDraft { topic: "T", queue_id: 1, queue_offset: i, body: &b, ..Default::default() })
                .unwrap()
        })
        .collect()
}

/// A closed store of `RECORDS` records over three segments.
fn store() -> (tempfile::TempDir, Vec<Appended>) {
    let dir = tempfile::tempdir().unwrap();
    let log = CommitLog::open(dir.path(), opts()).unwrap();
    let appended = append_all(&log, RECORDS);
    log.close().unwrap();
    assert!(appended.last().unwrap().offset.get() >= 2 * SEGMENT);
    (dir, appended)
}

fn mqstore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mqstore")).args(args).output().unwrap()
}

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

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(COMMITLOG_DIR).join(format!("{base:020}"))
}

/// XORs one byte of a file.
fn flip(path: &Path, pos: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[pos as usize] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

/// Flips a body byte of `rec`; returns the segment file and the record's
/// position in it.
fn corrupt(dir: &Path, rec: &Appended) -> (PathBuf, u64) {
    let base = rec.offset.get() / SEGMENT * SEGMENT;
    let path = segment_path(dir, base);
    let pos = rec.offset.get() - base;
    flip(&path, pos + u64::from(rec.size) - 10);
    (path, pos)
}

fn ok_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.ends_with("status=ok")).collect()
}

fn markers(out: &str) -> usize {
    out.lines().filter(|l| l.ends_with("status=end-of-segment")).count()
}

/// `key=value` field of a human dump line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

fn segments_used(appended: &[Appended]) -> usize {
    (appended.last().unwrap().offset.get() / SEGMENT) as usize + 1
}

// ---------------------------------------------------------------- verify

#[test]
fn verify_healthy_store_exits_0_with_a_summary() {
    let (dir, _) = store();
    let report = CommitLog::verify(dir.path(), &StdStorage).unwrap();
    let out = run("verify", dir.path(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("OK:"), "{text}");
    assert!(text.contains(&format!("{} segments", report.segments)), "{text}");
    assert!(text.contains(&format!("{RECORDS} records")), "{text}");
    assert!(text.contains(&format!("end offset {}", report.end)), "{text}");
    assert!(stderr(&out).is_empty());
}

#[test]
fn verify_json_has_every_key() {
    let (dir, appended) = store();
    let report = CommitLog::verify(dir.path(), &StdStorage).unwrap();
    let out = run("verify", dir.path(), &["--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let obj = v.as_object().unwrap();
    for key in ["segments", "records", "end", "healthy", "corruption", "torn_tail"] {
        assert!(obj.contains_key(key), "missing {key}: {v}");
    }
    assert_eq!(v["segments"], report.segments as u64);
    assert_eq!(v["records"], RECORDS);
    assert_eq!(v["end"], appended.last().unwrap().end().get());
    assert_eq!(v["healthy"], true);
    assert!(v["corruption"].is_null());
    assert!(v["torn_tail"].is_null());
}

#[test]
fn verify_flipped_byte_in_sealed_segment_exits_2_naming_the_file() {
    let (dir, appended) = store();
    let in_first: Vec<_> = appended.iter().filter(|a| a.offset.get() < SEGMENT).collect();
    let victim = in_first[in_first.len() / 2];
    let (path, pos) = corrupt(dir.path(), victim);
    let name = path.file_name().unwrap().to_str().unwrap();

    let out = run("verify", dir.path(), &[]);
    assert_eq!(code(&out), 2, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("CORRUPT:"), "{text}");
    assert!(text.contains(&format!("{}:{pos}", path.display())), "{text}");
    assert!(text.contains(name), "{text}");
    assert!(text.contains("crc mismatch"), "{text}");

    let out = run("verify", dir.path(), &["--json"]);
    assert_eq!(code(&out), 2);
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["healthy"], false);
    assert_eq!(v["records"], (in_first.len() / 2) as u64);
    assert_eq!(v["end"], victim.offset.get());
    assert!(v["corruption"]["file"].as_str().unwrap().ends_with(name));
    assert_eq!(v["corruption"]["offset"], pos);
    assert!(v["corruption"]["kind"].as_str().unwrap().contains("crc mismatch"));
    assert!(v["torn_tail"].is_null());
}

#[test]
fn verify_missing_dir_exits_1_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    for target in [dir.path().join("nope"), dir.path().to_path_buf()] {
        let out = run("verify", &target, &[]);
        assert_eq!(code(&out), 1);
        assert!(stdout(&out).is_empty());
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains("holds no commit log"), "{err}");
    }
}

/// IEEE CRC-32, to re-seal a hand-edited checkpoint.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn verify_reports_a_torn_tail_and_exits_0() {
    let (dir, appended) = store();
    let last = appended.last().unwrap();
    // Pretend the store crashed with everything up to the last record
    // flushed: state Running, flushed = start of the last record.
    let cp = dir.path().join("checkpoint");
    let mut b = std::fs::read(&cp).unwrap();
    assert_eq!(b.len(), 64);
    b[10..12].copy_from_slice(&1u16.to_be_bytes());
    b[24..32].copy_from_slice(&last.offset.get().to_be_bytes());
    let sum = crc32(&b[..60]);
    b[60..].copy_from_slice(&sum.to_be_bytes());
    std::fs::write(&cp, b).unwrap();
    let (path, pos) = corrupt(dir.path(), last);

    let out = run("verify", dir.path(), &[]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("OK:"), "{text}");
    assert!(text.contains(&format!("torn tail at {}:{pos} (crc mismatch", path.display())), "{text}");
    assert!(text.contains("will be truncated on next open"), "{text}");

    let out = run("verify", dir.path(), &["--json"]);
    assert_eq!(code(&out), 0);
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["healthy"], true);
    assert!(v["corruption"].is_null());
    assert_eq!(v["torn_tail"]["offset"], pos);
    assert_eq!(v["records"], RECORDS - 1);
}

// ------------------------------------------------------------------ dump

#[test]
fn dump_prints_every_record_and_the_end_markers() {
    let (dir, appended) = store();
    let out = run("dump", dir.path(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let oks = ok_lines(&text);
    assert_eq!(oks.len(), appended.len());
    assert_eq!(markers(&text), segments_used(&appended) - 1);
    assert_eq!(text.lines().count(), oks.len() + markers(&text));
    for (line, a) in oks.iter().zip(&appended) {
        assert_eq!(field(line, "offset"), a.offset.get().to_string());
        assert_eq!(field(line, "size"), a.size.to_string());
        assert_eq!(field(line, "topic"), "T");
        assert_eq!(field(line, "queue"), "1");
        assert_eq!(field(line, "crc"), format!("{:#010x}", a.crc));
    }
    for (i, line) in oks.iter().enumerate() {
        assert_eq!(field(line, "queue_offset"), i.to_string());
    }
    assert_eq!(field(oks[0], "offset"), "64");
    // Columns line up.
    let starts: Vec<_> = text.lines().map(|l| l.find(" size=").unwrap()).collect();
    assert!(starts.iter().all(|&s| s == starts[0]), "{text}");
}

#[test]
fn dump_from_and_max_select_a_window() {
    let (dir, appended) = store();
    let from = appended[10].offset.get().to_string();
    let out = run("dump", dir.path(), &["--from", &from, "--max", "5"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let offsets: Vec<_> = text.lines().map(|l| field(l, "offset").to_owned()).collect();
    let want: Vec<_> = appended[10..15].iter().map(|a| a.offset.get().to_string()).collect();
    assert_eq!(offsets, want);

    // From the first record of the second segment to the end.
    let second = appended.iter().position(|a| a.offset.get() >= SEGMENT).unwrap();
    assert_eq!(appended[second].offset.get(), SEGMENT + 64);
    let out = run("dump", dir.path(), &["--from", &(SEGMENT + 64).to_string()]);
    assert_eq!(code(&out), 0);
    assert_eq!(ok_lines(&stdout(&out)).len(), appended.len() - second);

    // --max counts the end marker too.
    let before = appended[second - 1].offset.get().to_string();
    let out = run("dump", dir.path(), &["--from", &before, "--max", "3"]);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().nth(1).unwrap().ends_with("status=end-of-segment"));
    assert_eq!(field(text.lines().nth(2).unwrap(), "offset"), (SEGMENT + 64).to_string());

    // A segment base (inside its header) starts at its first record.
    let out = run("dump", dir.path(), &["--from", &SEGMENT.to_string(), "--max", "1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(field(&stdout(&out), "offset"), (SEGMENT + 64).to_string());

    // The end of the log is a valid, empty start.
    let end = appended.last().unwrap().end().get().to_string();
    let out = run("dump", dir.path(), &["--from", &end]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

#[test]
fn dump_from_not_a_record_boundary_exits_1() {
    let (dir, appended) = store();
    for delta in [1u64, 3, 100] {
        let from = (appended[10].offset.get() + delta).to_string();
        let out = run("dump", dir.path(), &["--from", &from]);
        assert_eq!(code(&out), 1, "{}", stdout(&out));
        assert!(stdout(&out).is_empty());
        let err = stderr(&out);
        assert!(err.contains("not a record boundary"), "{err}");
        assert!(err.contains(&appended[10].offset.get().to_string()), "{err}");
    }
    // Inside the end-of-segment marker.
    let out = run("dump", dir.path(), &["--from", &(SEGMENT - 2).to_string()]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("not a record boundary"));
    // Past the end.
    let past = (appended.last().unwrap().end().get() + 8).to_string();
    let out = run("dump", dir.path(), &["--from", &past]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("past the end of the log"), "{}", stderr(&out));
    let out = run("dump", dir.path(), &["--from", &u64::MAX.to_string()]);
    assert_eq!(code(&out), 1);
    // The base of an empty segment after the last used one (created ahead
    // of time by preallocation) is past the end too.
    let next_base = segments_used(&appended) as u64 * SEGMENT;
    let empty = segment_path(dir.path(), next_base);
    if !empty.exists() {
        // Segment header: base at bytes 16..24, CRC of 0..60 at 60..64.
        let mut b = std::fs::read(segment_path(dir.path(), 0)).unwrap();
        b[16..24].copy_from_slice(&next_base.to_be_bytes());
        let sum = crc32(&b[..60]);
        b[60..64].copy_from_slice(&sum.to_be_bytes());
        b[64..].fill(0);
        std::fs::write(&empty, b).unwrap();
    }
    let out = run("dump", dir.path(), &["--from", &next_base.to_string()]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("past the end of the log at {}", appended.last().unwrap().end())), "{err}");
}

#[test]
fn dump_json_lines_parse_and_carry_every_key() {
    let (dir, appended) = store();
    let out = run("dump", dir.path(), &["--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rows: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for row in &rows {
        for key in ["offset", "size", "topic", "queue", "queue_offset", "store_timestamp", "crc", "status"] {
            assert!(row.get(key).is_some(), "missing {key}: {row}");
        }
    }
    let oks: Vec<_> = rows.iter().filter(|r| r["status"] == "ok").collect();
    assert_eq!(oks.len(), appended.len());
    let ends = rows.iter().filter(|r| r["status"] == "end-of-segment").count();
    assert_eq!(ends, segments_used(&appended) - 1);
    for (i, (r, a)) in oks.iter().zip(&appended).enumerate() {
        assert_eq!(r["offset"], a.offset.get());
        assert_eq!(r["size"], a.size);
        assert_eq!(r["topic"], "T");
        assert_eq!(r["queue"], 1);
        assert_eq!(r["queue_offset"], i as u64);
        assert_eq!(r["store_timestamp"], a.store_timestamp);
        assert_eq!(r["crc"], a.crc);
    }
}

#[test]
fn dump_damaged_store_prints_the_good_prefix_then_exits_2() {
    let (dir, appended) = store();
    let victim = 300;
    let (path, pos) = corrupt(dir.path(), &appended[victim]);
    let out = run("dump", dir.path(), &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(ok_lines(&text).len(), victim);
    let err = stderr(&out);
    assert!(err.starts_with(&format!("corrupt at {}:{pos}: crc mismatch", path.display())), "{err}");
    // Starting right at the damaged record is corruption too, not a bad --from.
    let from = appended[victim].offset.get().to_string();
    let out = run("dump", dir.path(), &["--from", &from, "--json"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).starts_with("corrupt at "));
}

#[test]
fn dump_missing_dir_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = run("dump", &dir.path().join("nope"), &[]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).starts_with("error: "));
}

#[test]
fn dump_quotes_topics_with_spaces() {
    let dir = tempfile::tempdir().unwrap();
    let log = CommitLog::open(dir.path(), opts()).unwrap();
    log.append(&RecordDraft { topic: "a b", body: b"x", ..Default::default() }).unwrap();
    log.close().unwrap();
    let out = run("dump", dir.path(), &[]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("topic=\"a b\""), "{}", stdout(&out));
    let out = run("dump", dir.path(), &["--json"]);
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["topic"], "a b");
}

// ------------------------------------------------------------ both verbs

#[test]
fn verify_and_dump_run_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = CommitLog::open(dir.path(), opts()).unwrap();
    let appended = append_all(&log, RECORDS);
    // The directory lock is held by `log`.
    assert!(matches!(CommitLog::open(dir.path(), opts()), Err(mqstore::Error::Locked { .. })));

    let out = run("verify", dir.path(), &["--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["healthy"], true);
    assert_eq!(v["records"], RECORDS);

    let out = run("dump", dir.path(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(ok_lines(&stdout(&out)).len(), appended.len());

    // The log is unaffected.
    append_all(&log, 1);
    log.close().unwrap();
}

#[test]
fn bad_arguments_exit_non_zero_without_panicking() {
    let (dir, _) = store();
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["verify", "--dir", d, "--bogus"],
        vec!["dump", "--dir", d, "--frm", "1"],
        vec!["verify"],
        vec!["dump"],
        vec!["dump", "--dir", d, "--from", "abc"],
        vec!["dump", "--dir", d, "--from", "-1"],
        vec!["dump", "--dir", d, "--max", "1.5"],
        vec!["frobnicate"],
        vec![],
    ] {
        let out = mqstore(&args);
        assert_eq!(code(&out), 1, "{args:?}");
        assert!(stdout(&out).is_empty(), "{args:?}");
        let err = stderr(&out);
        assert!(!err.is_empty(), "{args:?}");
        if !args.is_empty() {
            assert!(err.starts_with("error: "), "{args:?}: {err}");
        }
    }
    let out = mqstore(&["dump", "--help"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("--from"));
}
