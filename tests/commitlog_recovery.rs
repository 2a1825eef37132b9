//! Crash recovery of the commit log: torn tails at every byte, bit flips in
//! every header field, damaged or stale checkpoints, stale records that
//! must never reappear.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{body_for, copy_dir, deterministic_opts, draft, segment_files};
use mqstore::commitlog::{CheckpointUse, CommitLog, CommitLogOptions, RecoveryMode, COMMITLOG_DIR};
use mqstore::{Error, PhysicalOffset};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Options that never write a checkpoint on their own, so a snapshot taken
/// while the log is open looks like a crash right after open.
fn crash_opts() -> CommitLogOptions {
    deterministic_opts().checkpoint_interval(Duration::from_secs(600))
}

struct Fixture {
    _tmp: tempfile::TempDir,
    snapshot: PathBuf,
    /// (offset, size, body) of every record appended.
    records: Vec<(u64, u32, Vec<u8>)>,
}

/// Appends `n` records and snapshots the directory as a crash would leave
/// it (page cache intact, checkpoint from open time).
fn fixture(n: u64) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let log = CommitLog::open(&live, crash_opts()).unwrap();
    let mut records = Vec::new();
    for i in 0..n {
        let body = body_for(i, 40 + (i as usize * 37) % 200);
        let a = log.append(&draft("TopicR", i, &body)).unwrap();
        records.push((a.offset.get(), a.size, body));
    }
    let snapshot = tmp.path().join("snapshot");
    copy_dir(&live, &snapshot);
    drop(log);
    Fixture { _tmp: tmp, snapshot, records }
}

/// Locates the segment file and file position of physical offset `off`.
fn locate(dir: &Path, off: u64) -> (PathBuf, u64) {
    let segs = segment_files(dir);
    let seg = segs
        .iter()
        .filter(|p| p.extension().is_none())
        .rfind(|p| p.file_name().unwrap().to_str().unwrap().parse::<u64>().unwrap() <= off)
        .unwrap()
        .clone();
    let base: u64 = seg.file_name().unwrap().to_str().unwrap().parse().unwrap();
    (seg, off - base)
}

fn mutate(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).unwrap();
    f(&mut bytes);
    fs::write(path, bytes).unwrap();
}

/// Opens `dir` and checks that exactly the first `keep` records survive,
/// intact, then that a new append lands at the end and no stale record
/// reappears after another reopen.
fn check_prefix(dir: &Path, fx: &Fixture, keep: usize, ctx: &str) {
    let (log, report) =
        CommitLog::open_with_report(dir, crash_opts()).unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
    let got: Vec<_> = log.iter(PhysicalOffset(0)).collect::<Result<_, _>>().unwrap_or_else(|e| panic!("{ctx}: {e}"));
    assert_eq!(got.len(), keep, "{ctx}: records after recovery ({report:?})");
    for (r, (off, size, body)) in got.iter().zip(&fx.records) {
        assert_eq!((r.offset().get(), r.size()), (*off, *size), "{ctx}");
        assert_eq!(&r.body()[..], &body[..], "{ctx}");
    }
    let end = fx.records.get(keep).map_or_else(|| log.max_offset().get(), |r| r.0);
    assert_eq!(log.max_offset().get(), end, "{ctx}: recovered end");
    assert_eq!(report.end.get(), end, "{ctx}");
    assert!(log.read(PhysicalOffset(end)).is_err(), "{ctx}: read past the end");
    // A short record lands where the torn one was; whatever stale bytes lay
    // beyond must not be read as records, now or after another reopen.
    let a = log.append(&draft("TopicR", 9999, b"new")).unwrap();
    assert_eq!(a.offset.get(), end, "{ctx}");
    log.close().unwrap();
    let log = CommitLog::open(dir, crash_opts()).unwrap();
    let after: Vec<_> = log.iter(PhysicalOffset(0)).collect::<Result<_, _>>().unwrap();
    assert_eq!(after.len(), keep + 1, "{ctx}: stale record resurrected");
    assert_eq!(&after[keep].body()[..], b"new", "{ctx}");
    log.close().unwrap();
}

#[test]
fn torn_tail_at_every_byte_of_the_last_two_records() {
    let fx = fixture(60);
    let n = fx.records.len();
    let first = fx.records[n - 2].0;
    let last_end = fx.records[n - 1].0 + u64::from(fx.records[n - 1].1);
    let work = fx._tmp.path().join("work");
    // Both records must lie in one segment for the cut to tear them.
    let (seg_a, _) = locate(&fx.snapshot, first);
    let (seg_b, _) = locate(&fx.snapshot, last_end - 1);
    assert_eq!(seg_a, seg_b, "pick records in one segment");
    for cut in first..last_end {
        for garbage in [false, true] {
            let _ = fs::remove_dir_all(&work);
            copy_dir(&fx.snapshot, &work);
            let (seg, pos) = locate(&work, cut);
            let tail_len = (last_end - cut) as usize;
            mutate(&seg, |b| {
                let p = pos as usize;
                for (k, byte) in b[p..p + tail_len].iter_mut().enumerate() {
                    *byte = if garbage { (k as u8).wrapping_mul(31) ^ 0x5a } else { 0 };
                }
            });
            let keep = fx.records.iter().filter(|r| r.0 + u64::from(r.1) <= cut).count();
            check_prefix(&work, &fx, keep, &format!("cut at {cut} garbage={garbage}"));
        }
    }
}

#[test]
fn segment_file_cut_short_at_every_byte_of_the_last_two_records() {
    let fx = fixture(40);
    let n = fx.records.len();
    let first = fx.records[n - 2].0;
    let last_end = fx.records[n - 1].0 + u64::from(fx.records[n - 1].1);
    let work = fx._tmp.path().join("work");
    for cut in first..=last_end {
        let _ = fs::remove_dir_all(&work);
        copy_dir(&fx.snapshot, &work);
        let (seg, pos) = locate(&work, cut.min(last_end - 1));
        let pos = if cut == last_end { pos + 1 } else { pos };
        // Remove later segments (prepared, empty) so the cut one is last.
        for later in segment_files(&work).into_iter().filter(|p| p > &seg) {
            fs::remove_file(later).unwrap();
        }
        fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(pos).unwrap();
        let keep = fx.records.iter().filter(|r| r.0 + u64::from(r.1) <= cut).count();
        check_prefix(&work, &fx, keep, &format!("file cut at {cut}"));
    }
}

#[test]
fn absolute_consistency_refuses_a_torn_tail() {
    let fx = fixture(10);
    let last = fx.records.last().unwrap();
    let (seg, pos) = locate(&fx.snapshot, last.0 + 20);
    mutate(&seg, |b| b[pos as usize] ^= 0xff);
    let e = CommitLog::open(&fx.snapshot, crash_opts().recovery_mode(RecoveryMode::AbsoluteConsistency)).unwrap_err();
    match e {
        Error::Corruption { path, offset, .. } => {
            assert_eq!(path, seg);
            assert_eq!(offset, pos - 20);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // The tolerant default truncates it instead.
    check_prefix(&fx.snapshot, &fx, 9, "tolerant after strict refusal");
}

#[test]
fn bit_flip_in_every_field_of_the_last_record_header() {
    let fx = fixture(12);
    let last = *fx.records.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>().last().unwrap();
    let work = fx._tmp.path().join("work");
    for byte in 0..68u64 {
        for bit in [0u8, 3, 7] {
            let _ = fs::remove_dir_all(&work);
            copy_dir(&fx.snapshot, &work);
            let (seg, pos) = locate(&work, last.0 + byte);
            mutate(&seg, |b| b[pos as usize] ^= 1 << bit);
            check_prefix(&work, &fx, fx.records.len() - 1, &format!("flip byte {byte} bit {bit}"));
        }
    }
}

#[test]
fn bit_flip_in_a_segment_header_is_a_typed_error() {
    let fx = fixture(200);
    let work = fx._tmp.path().join("work");
    let segs = segment_files(&fx.snapshot);
    assert!(segs.len() >= 2);
    for which in [0, segs.len() - 1] {
        for byte in 0..64usize {
            let _ = fs::remove_dir_all(&work);
            copy_dir(&fx.snapshot, &work);
            let seg = segment_files(&work)[which].clone();
            mutate(&seg, |b| b[byte] ^= 0x10);
            match CommitLog::open(&work, crash_opts()) {
                Err(Error::Corruption { path, .. }) => assert_eq!(path, seg, "byte {byte}"),
                Err(other) => panic!("byte {byte} of segment {which}: unexpected error {other}"),
                Ok(_) => panic!("byte {byte} of segment {which}: damaged header accepted"),
            }
        }
    }
}

#[test]
fn damaged_or_missing_checkpoint_falls_back_to_a_full_scan() {
    let fx = fixture(25);
    let work = fx._tmp.path().join("work");
    for byte in 0..64usize {
        let _ = fs::remove_dir_all(&work);
        copy_dir(&fx.snapshot, &work);
        mutate(&work.join("checkpoint"), |b| b[byte] ^= 0x01);
        let (log, report) = CommitLog::open_with_report(&work, crash_opts()).unwrap();
        assert!(matches!(report.checkpoint, CheckpointUse::Damaged(_)), "byte {byte}: {report:?}");
        assert_eq!(log.iter(PhysicalOffset(0)).count(), 25);
        log.close().unwrap();
    }
    let _ = fs::remove_dir_all(&work);
    copy_dir(&fx.snapshot, &work);
    fs::remove_file(work.join("checkpoint")).unwrap();
    let (log, report) = CommitLog::open_with_report(&work, crash_opts()).unwrap();
    assert_eq!(report.checkpoint, CheckpointUse::Missing);
    assert_eq!(report.records_scanned, 25);
    assert_eq!(log.iter(PhysicalOffset(0)).count(), 25);
    log.close().unwrap();
    // Truncated and over-long checkpoint files are damage too.
    for len in [0usize, 10, 63, 65] {
        mutate(&work.join("checkpoint"), |b| b.resize(len, 0));
        let (log, report) = CommitLog::open_with_report(&work, crash_opts()).unwrap();
        assert!(matches!(report.checkpoint, CheckpointUse::Damaged(_)), "len {len}: {report:?}");
        assert_eq!(log.iter(PhysicalOffset(0)).count(), 25);
        log.close().unwrap();
    }
}

#[test]
fn checkpoint_that_does_not_match_the_log_triggers_a_full_scan() {
    // A clean checkpoint from a longer log, put beside a shorter (older)
    // copy of the segments, must not be trusted.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let log = CommitLog::open(&dir, crash_opts()).unwrap();
    for i in 0..5 {
        log.append(&draft("T", i, &body_for(i, 100))).unwrap();
    }
    log.close().unwrap();
    let old = tmp.path().join("old");
    copy_dir(&dir, &old);
    let log = CommitLog::open(&dir, crash_opts()).unwrap();
    for i in 5..40 {
        log.append(&draft("T", i, &body_for(i, 100))).unwrap();
    }
    log.close().unwrap();
    fs::copy(dir.join("checkpoint"), old.join("checkpoint")).unwrap();
    let (log, report) = CommitLog::open_with_report(&old, crash_opts()).unwrap();
    assert!(matches!(report.checkpoint, CheckpointUse::Inconsistent(_)), "{report:?}");
    assert_eq!(log.iter(PhysicalOffset(0)).count(), 5);
    log.close().unwrap();
    let e = CommitLog::open(dir.join("missing"), crash_opts());
    assert!(e.is_ok(), "a new directory is created");
}

#[test]
fn leftover_temporary_segment_is_removed() {
    let fx = fixture(5);
    let tmpfile = fx.snapshot.join(COMMITLOG_DIR).join("00000000000099999744.tmp");
    fs::write(&tmpfile, b"half-created").unwrap();
    let (log, report) = CommitLog::open_with_report(&fx.snapshot, crash_opts()).unwrap();
    assert_eq!(report.temporaries_removed, 1);
    assert!(!tmpfile.exists());
    assert_eq!(log.iter(PhysicalOffset(0)).count(), 5);
    log.close().unwrap();
}

/// Regression: recovery once validated record lengths against the
/// configured `max_record_size`, so reopening after a crash with a smaller
/// limit truncated valid, acknowledged records as a "torn tail".
#[test]
fn reopening_with_smaller_limits_or_other_segment_size_keeps_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let big = crash_opts().max_record_size(4 << 10);
    let log = CommitLog::open(&live, big.clone()).unwrap();
    let mut bodies = Vec::new();
    for i in 0..40u64 {
        let b = body_for(i, 3000);
        log.append(&draft("T", i, &b)).unwrap();
        bodies.push(b);
    }
    let snap = tmp.path().join("snap");
    copy_dir(&live, &snap);
    drop(log);
    // Crash image reopened with a smaller record limit and a larger
    // segment size for new segments.
    let small = crash_opts().max_record_size(1 << 10).segment_size(32 << 10);
    let (log, report) = CommitLog::open_with_report(&snap, small.clone()).unwrap();
    assert!(report.truncated.is_none(), "{report:?}");
    assert_eq!(log.iter(PhysicalOffset(0)).count(), 40);
    // Old-size segments are kept; new ones get the new size; all contiguous.
    for i in 40..80u64 {
        let b = body_for(i, 900);
        log.append(&draft("T", i, &b)).unwrap();
        bodies.push(b);
    }
    log.close().unwrap();
    let log = CommitLog::open(&snap, small).unwrap();
    let got: Vec<_> = log.iter(PhysicalOffset(0)).map(|r| r.unwrap().body().to_vec()).collect();
    assert_eq!(got, bodies);
    log.close().unwrap();
}
