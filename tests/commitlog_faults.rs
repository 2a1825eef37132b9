//! I/O faults through the storage seam: every failure is a typed error, a
//! failed sync fences the log, a full disk changes nothing, and recovery
//! interrupted at any I/O call recovers to the same state next time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{body_for, copy_dir, deterministic_opts, draft, segment_files};
use mqstore::commitlog::{CommitLog, CommitLogOptions, FlushMode};
use mqstore::storage::{FaultKind, FaultPlan, FaultyStorage, StdStorage};
use mqstore::{Error, PhysicalOffset};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn faulty(plan: &Arc<FaultPlan>) -> Arc<FaultyStorage> {
    Arc::new(FaultyStorage::new(Arc::new(StdStorage), plan.clone()))
}

fn opts_with(plan: &Arc<FaultPlan>) -> CommitLogOptions {
    deterministic_opts().storage(faulty(plan)).checkpoint_interval(Duration::from_secs(600))
}

/// Every record in `acked` is readable with the right body.
fn assert_all_present(dir: &Path, acked: &[(PhysicalOffset, Vec<u8>)]) {
    let log = CommitLog::open(dir, deterministic_opts()).unwrap();
    for (off, body) in acked {
        let r = log.read(*off).unwrap_or_else(|e| panic!("acked record at {off} lost: {e}"));
        assert_eq!(&r.body()[..], &body[..]);
    }
    log.close().unwrap();
}

#[test]
fn failed_sync_flush_fences_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let log = CommitLog::open(dir.path(), opts_with(&plan).flush_mode(FlushMode::Sync)).unwrap();
    let ok = body_for(1, 50);
    let a = log.append(&draft("F", 1, &ok)).unwrap();
    plan.fail_syncs(true);
    let e = log.append(&draft("F", 2, b"never acknowledged")).unwrap_err();
    // The flush thread hit the error; the waiting appender is told the log
    // is fenced, with the failed call as the reason.
    assert!(matches!(e, Error::Fenced { ref reason } if reason.contains("fdatasync")), "{e}");
    assert!(log.is_fenced());
    // Healing the device does not unfence: the dropped pages may be gone.
    plan.heal();
    assert!(matches!(log.append(&draft("F", 3, b"x")), Err(Error::Fenced { .. })));
    assert!(matches!(log.flush(), Err(Error::Fenced { .. })));
    assert!(matches!(log.close(), Err(Error::Fenced { .. })));
    assert_all_present(dir.path(), &[(a.offset, ok)]);
}

#[test]
fn waiting_appenders_all_fail_when_the_flush_fails() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let log = CommitLog::open(dir.path(), opts_with(&plan).flush_mode(FlushMode::Sync)).unwrap();
    plan.fail_syncs(true);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || log.append(&draft("F", t, b"payload")))
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert!(matches!(r, Err(Error::Io { .. } | Error::Fenced { .. })), "{r:?}");
    }
    assert!(log.is_fenced());
}

#[test]
fn failed_background_flush_fences_async_mode() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let opts = opts_with(&plan).flush_interval(Duration::from_millis(5)).flush_min_bytes(1);
    let log = CommitLog::open(dir.path(), opts).unwrap();
    plan.fail_syncs(true);
    log.append(&draft("F", 1, b"dirty")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !log.is_fenced() {
        assert!(std::time::Instant::now() < deadline, "background flush failure did not fence");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(matches!(log.append(&draft("F", 2, b"x")), Err(Error::Fenced { .. })));
}

#[test]
fn disk_full_on_roll_changes_nothing_and_writes_resume() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let log = CommitLog::open(dir.path(), opts_with(&plan)).unwrap();
    let body = vec![1u8; 1000];
    let mut acked = Vec::new();
    // Fill the first segment until the next record needs a roll (record
    // = 68-byte header + 1-byte topic + body; 8 bytes stay for the marker).
    while log.max_offset().get() + (68 + 1 + 1000) + 8 <= 16 << 10 {
        acked.push((log.append(&draft("F", acked.len() as u64, &body)).unwrap().offset, body.clone()));
    }
    let before = log.max_offset();
    plan.fail_call(1, FaultKind::NoSpace, true);
    let e = log.append(&draft("F", 99, &body)).unwrap_err();
    assert!(matches!(e, Error::DiskFull { .. }), "{e}");
    assert!(e.is_transient());
    assert_eq!(log.max_offset(), before, "nothing partial is visible");
    assert!(!log.is_fenced());
    plan.heal();
    let a = log.append(&draft("F", 100, &body)).unwrap();
    assert!(a.offset > before);
    acked.push((a.offset, body.clone()));
    log.close().unwrap();
    assert_all_present(dir.path(), &acked);
}

/// Fails the k-th I/O call while appending across many segment rolls, for
/// every k, once and persistently. Acknowledged records must survive, and
/// every failure must be a typed error.
#[test]
fn fail_every_io_call_during_append_with_rolls() {
    for persistent in [false, true] {
        for mode in [FlushMode::Async, FlushMode::Sync] {
            for k in 1..=40u64 {
                let dir = tempfile::tempdir().unwrap();
                let plan = FaultPlan::new();
                let log = CommitLog::open(dir.path(), opts_with(&plan).flush_mode(mode)).unwrap();
                plan.fail_call(k, FaultKind::Io, persistent);
                let mut acked = Vec::new();
                for i in 0..120u64 {
                    let body = body_for(i, 300);
                    match log.append(&draft("K", i, &body)) {
                        Ok(a) => acked.push((a.offset, body)),
                        Err(Error::Io { .. } | Error::Fenced { .. } | Error::Timeout { .. }) => {}
                        Err(other) => panic!("k={k} persistent={persistent} {mode:?}: unexpected {other}"),
                    }
                }
                let _ = log.flush();
                let _ = log.close();
                plan.heal();
                assert_all_present(dir.path(), &acked);
            }
        }
    }
}

/// Recovery interrupted by an I/O failure at any call, then run again,
/// gives the same result as an uninterrupted recovery.
#[test]
fn recovery_interrupted_at_every_io_call_is_idempotent() {
    let src = tempfile::tempdir().unwrap();
    let live = src.path().join("live");
    let log = CommitLog::open(&live, deterministic_opts().checkpoint_interval(Duration::from_secs(600))).unwrap();
    for i in 0..150u64 {
        log.append(&draft("R", i, &body_for(i, 150))).unwrap();
    }
    // Snapshot as a crash would leave it, with a torn last record.
    let snap = src.path().join("snap");
    copy_dir(&live, &snap);
    drop(log);
    let segs = segment_files(&snap);
    let tail = segs.iter().rev().find(|p| std::fs::read(p).unwrap()[64..72] != [0; 8]).unwrap().clone();
    let mut bytes = std::fs::read(&tail).unwrap();
    let end = find_zero_run(&bytes);
    bytes[end - 10] ^= 0xff;
    std::fs::write(&tail, bytes).unwrap();

    let reference = src.path().join("ref");
    copy_dir(&snap, &reference);
    let log = CommitLog::open(&reference, deterministic_opts()).unwrap();
    let expected: Vec<_> = log.iter(PhysicalOffset(0)).map(|r| r.unwrap().encoded().to_vec()).collect();
    log.close().unwrap();
    assert_eq!(expected.len(), 149);

    let mut k = 1;
    loop {
        let work = src.path().join(format!("w{k}"));
        copy_dir(&snap, &work);
        let plan = FaultPlan::new();
        plan.fail_call(k, FaultKind::Io, false);
        let first = CommitLog::open(&work, deterministic_opts().storage(faulty(&plan)));
        // Done once open makes fewer calls than k: the fault never hit it.
        let done = first.is_ok() && plan.calls() < k;
        if let Ok(log) = first {
            // The fault may hit close instead; that is not under test here.
            let _ = log.close();
        }
        let log = CommitLog::open(&work, deterministic_opts()).unwrap();
        let got: Vec<_> = log.iter(PhysicalOffset(0)).map(|r| r.unwrap().encoded().to_vec()).collect();
        assert_eq!(got, expected, "interrupted at call {k}");
        log.close().unwrap();
        std::fs::remove_dir_all(&work).unwrap();
        if done {
            break;
        }
        k += 1;
        assert!(k < 500, "recovery makes too many calls");
    }
}

/// Start of the trailing run of zeros (the end of the written data).
fn find_zero_run(b: &[u8]) -> usize {
    b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1)
}

#[test]
fn sync_flush_timeout_is_a_distinct_error_and_the_record_still_lands() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let opts = opts_with(&plan).flush_mode(FlushMode::Sync).sync_flush_timeout(Duration::from_millis(20));
    let log = CommitLog::open(dir.path(), opts).unwrap();
    plan.delay_syncs(300);
    let e = log.append(&draft("T", 1, b"slow disk")).unwrap_err();
    let Error::Timeout { offset, .. } = e else { panic!("expected Timeout, got {e}") };
    assert!(e.is_transient());
    assert!(!log.is_fenced(), "a slow sync is not a failed one");
    // The record was written: once the slow sync completes it is durable
    // and readable, and later appends continue after it.
    plan.delay_syncs(0);
    let end = log.flush().unwrap();
    assert!(end.get() >= offset);
    let all: Vec<_> = log.iter(PhysicalOffset(0)).collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(&all[0].body()[..], b"slow disk");
    log.append(&draft("T", 2, b"fast again")).unwrap();
    log.close().unwrap();
}

#[test]
fn a_panicking_background_thread_fences_the_log() {
    for mode in [FlushMode::Sync, FlushMode::Async] {
        let dir = tempfile::tempdir().unwrap();
        let plan = FaultPlan::new();
        let opts = opts_with(&plan).flush_mode(mode).flush_interval(Duration::from_millis(5)).flush_min_bytes(1);
        let log = CommitLog::open(dir.path(), opts).unwrap();
        log.append(&draft("T", 0, b"before")).unwrap();
        plan.panic_syncs(true);
        // Sync: the waiting appender is woken with Fenced. Async: the
        // background flush panics and later appends are refused.
        let first = log.append(&draft("T", 1, b"during"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !log.is_fenced() {
            assert!(std::time::Instant::now() < deadline, "{mode:?}: panic did not fence");
            std::thread::sleep(Duration::from_millis(5));
        }
        if mode == FlushMode::Sync {
            assert!(matches!(first, Err(Error::Fenced { .. })), "{mode:?}: {first:?}");
        }
        assert!(
            matches!(log.append(&draft("T", 2, b"after")), Err(Error::Fenced { ref reason }) if reason.contains("panicked"))
        );
        plan.heal();
        assert!(matches!(log.close(), Err(Error::Fenced { .. })));
        // Reopening recovers what was written before the panic.
        let log = CommitLog::open(dir.path(), deterministic_opts()).unwrap();
        assert!(log.iter(PhysicalOffset(0)).next().is_some());
        log.close().unwrap();
    }
}

#[test]
fn a_flush_that_panics_on_the_caller_thread_fences_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let log = CommitLog::open(dir.path(), opts_with(&plan)).unwrap();
    log.append(&draft("T", 0, b"x")).unwrap();
    plan.panic_syncs(true);
    let l = log.clone();
    assert!(std::thread::spawn(move || l.flush()).join().is_err(), "the flush panicked");
    plan.heal();
    // The next flush neither hangs waiting for the dead leader nor succeeds.
    assert!(matches!(log.flush(), Err(Error::Fenced { .. })));
    assert!(matches!(log.close(), Err(Error::Fenced { .. })));
}

/// A full disk while writing the checkpoint's temporary file touches no
/// data: the log must not fence, and appends go on. (A failed sync would
/// fence; see `failed_sync_flush_fences_the_log`.)
#[test]
fn disk_full_while_writing_a_checkpoint_does_not_fence() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    // No background msync in the test window: only the checkpoint does I/O.
    let opts = opts_with(&plan)
        .checkpoint_interval(Duration::from_millis(5))
        .flush_min_bytes(u64::MAX)
        .flush_thorough_interval(Duration::from_secs(60));
    let log = CommitLog::open(dir.path(), opts).unwrap();
    let a = log.append(&draft("C", 0, b"before")).unwrap();
    // In Async mode only checkpoints use write_at (segments are written
    // through the mapping): every checkpoint write now hits ENOSPC.
    plan.fail_op("write_at", FaultKind::NoSpace);
    log.flush().unwrap();
    let before = plan.log().iter().filter(|op| **op == "write_at").count();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The flushed offset moved, so the next tick tries a checkpoint.
    while plan.log().iter().filter(|op| **op == "write_at").count() == before {
        assert!(std::time::Instant::now() < deadline, "no checkpoint was attempted");
        std::thread::sleep(Duration::from_millis(2));
    }
    plan.heal();
    assert!(!log.is_fenced(), "a failed checkpoint write must not fence");
    let b = log.append(&draft("C", 2, b"after")).unwrap();
    log.close().unwrap();
    assert_all_present(dir.path(), &[(a.offset, b"before".to_vec()), (b.offset, b"after".to_vec())]);
}
