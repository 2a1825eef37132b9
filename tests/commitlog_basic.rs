//! Append, read, roll, reopen and rejection paths of the commit log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{body_for, draft, tiny_opts};
use mqstore::commitlog::{CheckpointUse, CommitLog, CommitLogOptions, FlushMode, RecordDraft};
use mqstore::{Error, PhysicalOffset};

#[test]
fn append_read_and_iterate_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let log = CommitLog::open(dir.path(), tiny_opts()).unwrap();
    let mut offsets = Vec::new();
    for i in 0..500u64 {
        let body = body_for(i, (i % 300) as usize + 1);
        let a = log.append(&draft("TopicA", i, &body)).unwrap();
        offsets.push((a.offset, body));
    }
    assert!(log.segment_count() > 5, "segments: {}", log.segment_count());
    for (i, (off, body)) in offsets.iter().enumerate() {
        let r = log.read(*off).unwrap();
        assert_eq!(&r.body()[..], &body[..]);
        assert_eq!(r.queue_offset(), i as u64);
        assert_eq!(r.topic(), "TopicA");
    }
    let all: Vec<_> = log.iter(PhysicalOffset(0)).collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 500);
    assert!(all.windows(2).all(|w| w[0].end() <= w[1].offset()));
    assert!(all.windows(2).all(|w| w[0].store_timestamp() <= w[1].store_timestamp()));
    log.close().unwrap();
}

#[test]
fn reopen_after_clean_close_keeps_everything_and_skips_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let log = CommitLog::open(dir.path(), tiny_opts()).unwrap();
    for i in 0..200u64 {
        log.append(&draft("T", i, &body_for(i, 100))).unwrap();
    }
    let end = log.max_offset();
    log.close().unwrap();
    assert!(matches!(log.append(&draft("T", 0, b"x")), Err(Error::Closed)));

    let (log, report) = CommitLog::open_with_report(dir.path(), tiny_opts()).unwrap();
    assert!(report.clean_shutdown);
    assert_eq!(report.checkpoint, CheckpointUse::Used);
    assert_eq!(report.records_scanned, 0);
    assert_eq!(report.end, end);
    assert!(report.truncated.is_none());
    assert_eq!(log.max_offset(), end);
    let n = log.iter(PhysicalOffset(0)).inspect(|r| assert!(r.is_ok())).count();
    assert_eq!(n, 200);
    // Appends continue after the recovered end.
    let a = log.append(&draft("T", 200, b"after")).unwrap();
    assert_eq!(a.offset, end);
    log.close().unwrap();
}

#[test]
fn second_opener_gets_locked_immediately() {
    let dir = tempfile::tempdir().unwrap();
    let log = CommitLog::open(dir.path(), tiny_opts()).unwrap();
    match CommitLog::open(dir.path(), tiny_opts()) {
        Err(Error::Locked { path }) => assert!(path.ends_with("LOCK")),
        other => panic!("expected Locked, got {other:?}"),
    }
    log.close().unwrap();
    // The lock is released by close.
    CommitLog::open(dir.path(), tiny_opts()).unwrap().close().unwrap();
}

#[test]
fn dropping_the_last_handle_closes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = CommitLog::open(dir.path(), tiny_opts()).unwrap();
        log.append(&draft("T", 1, b"one")).unwrap();
    }
    let (_log, report) = CommitLog::open_with_report(dir.path(), tiny_opts()).unwrap();
    assert!(report.clean_shutdown);
}

#[test]
fn rejected_appends_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = CommitLog::open(dir.path(), tiny_opts()).unwrap();
    log.append(&draft("T", 0, b"first")).unwrap();
    let before = log.max_offset();
    let big = vec![0u8; 5 << 10];
    assert!(matches!(log.append(&draft("T", 1, &big)), Err(Error::MessageTooLarge { .. })));
    assert!(matches!(
        log.append(&RecordDraft { topic: "", body: b"x", ..Default::default() }),
        Err(Error::InvalidArgument(_))
    ));
    let props = vec![0u8; 70_000];
    assert!(matches!(
        log.append(&RecordDraft { topic: "T", properties: &props, body: b"x", ..Default::default() }),
        Err(Error::MessageTooLarge { .. })
    ));
    // A batch with one bad record writes none of them.
    let ok = body_for(1, 10);
    let batch = [draft("T", 1, &ok), draft("T", 2, &big)];
    assert!(matches!(log.append_batch(&batch), Err(Error::MessageTooLarge { .. })));
    // A batch larger than a segment is refused as a whole.
    let chunk = vec![7u8; 3 << 10];
    let batch: Vec<_> = (0..6).map(|i| draft("T", i, &chunk)).collect();
    assert!(matches!(log.append_batch(&batch), Err(Error::MessageTooLarge { .. })));
    assert_eq!(log.max_offset(), before);
    assert_eq!(log.iter(PhysicalOffset(0)).count(), 1);
    assert!(matches!(log.read(PhysicalOffset(before.get() + 10)), Err(Error::InvalidArgument(_))));
    assert!(log.read(PhysicalOffset(1)).is_err());
    log.close().unwrap();
}

#[test]
fn batch_is_contiguous_and_in_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = CommitLog::open(dir.path(), tiny_opts()).unwrap();
    for round in 0..30u64 {
        let bodies: Vec<_> = (0..5).map(|i| body_for(round * 5 + i, 500)).collect();
        let drafts: Vec<_> = bodies.iter().enumerate().map(|(i, b)| draft("B", round * 5 + i as u64, b)).collect();
        let out = log.append_batch(&drafts).unwrap();
        assert_eq!(out.len(), 5);
        for w in out.windows(2) {
            assert_eq!(w[0].end(), w[1].offset);
        }
        let seg = 16u64 << 10;
        assert_eq!(out[0].offset.get() / seg, (out[4].end().get() - 1) / seg);
    }
    log.close().unwrap();
}

#[test]
fn sync_mode_acks_only_flushed_data() {
    let dir = tempfile::tempdir().unwrap();
    let log = CommitLog::open(dir.path(), tiny_opts().flush_mode(FlushMode::Sync)).unwrap();
    for i in 0..50u64 {
        let a = log.append(&draft("S", i, &body_for(i, 64))).unwrap();
        assert!(log.flushed_offset() >= a.end());
        assert!(log.confirmed_offset() >= a.end());
    }
    log.close().unwrap();
}

#[test]
fn concurrent_sync_appenders_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let log = CommitLog::open(
        dir.path(),
        CommitLogOptions::default().segment_size(1 << 20).max_record_size(64 << 10).flush_mode(FlushMode::Sync),
    )
    .unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..100u64 {
                    let body = body_for(t * 1000 + i, 32);
                    let a = log.append(&draft("C", t * 1000 + i, &body)).unwrap();
                    assert!(log.flushed_offset() >= a.end());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.iter(PhysicalOffset(0)).count(), 800);
    log.close().unwrap();
}

#[test]
fn options_are_validated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let e = CommitLog::open(dir.path(), CommitLogOptions::default().segment_size(12345)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(ref m) if m.contains("segment_size")), "{e}");
}

/// Regression: the preparation thread once re-created a segment the writer
/// had just created itself (it checked the segment list before the writer
/// registered the new segment) and renamed the empty copy over the live
/// file, so every record later written to that segment vanished on reopen.
/// Segments are now registered under the preparation lock and created with
/// a no-replace rename.
#[test]
fn background_preparation_never_replaces_a_live_segment() {
    for trial in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let log = CommitLog::open(dir.path(), tiny_opts()).unwrap();
        let mut acked = Vec::new();
        for i in 0..2000u64 {
            let body = body_for(i, (i % 700) as usize + 1);
            acked.push((log.append(&draft("P", i, &body)).unwrap().offset, body));
        }
        log.close().unwrap();
        let log = CommitLog::open(dir.path(), tiny_opts()).unwrap();
        for (off, body) in &acked {
            let r = log.read(*off).unwrap_or_else(|e| panic!("trial {trial}: record at {off} lost: {e}"));
            assert_eq!(&r.body()[..], &body[..]);
        }
        assert_eq!(log.iter(PhysicalOffset(0)).count(), acked.len());
        log.close().unwrap();
    }
}

#[test]
fn store_timestamps_never_go_backwards_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(mqstore::ManualClock::new(1_000_000));
    let opts = tiny_opts().clock(clock.clone());
    let log = CommitLog::open(dir.path(), opts.clone()).unwrap();
    let a = log.append(&draft("T", 0, b"a")).unwrap();
    assert_eq!(a.store_timestamp, 1_000_000);
    clock.set_ms(500_000); // the clock steps back
    let b = log.append(&draft("T", 1, b"b")).unwrap();
    assert_eq!(b.store_timestamp, 1_000_000);
    log.close().unwrap();
    let log = CommitLog::open(dir.path(), opts).unwrap();
    let c = log.append(&draft("T", 2, b"c")).unwrap();
    assert_eq!(c.store_timestamp, 1_000_000, "restart must not reset the floor");
    clock.set_ms(2_000_000);
    assert_eq!(log.append(&draft("T", 3, b"d")).unwrap().store_timestamp, 2_000_000);
    log.close().unwrap();
}

/// A damaged consume-queue unit can name any offset: reading at every
/// offset of the first segments (record starts, their insides, the blank
/// end marker, the last bytes before the next segment) returns the record
/// that starts there or a typed error, never a panic or an out-of-bounds
/// read.
#[test]
fn reading_at_any_offset_is_a_record_or_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = CommitLog::open(dir.path(), tiny_opts()).unwrap();
    let mut starts = std::collections::BTreeSet::new();
    for i in 0..400u64 {
        let body = body_for(i, (i % 300) as usize + 1);
        starts.insert(log.append(&draft("TopicA", i, &body)).unwrap().offset.get());
    }
    assert!(log.segment_count() > 3);
    let size = tiny_opts().get_segment_size();
    for offset in 0..3 * size {
        match log.read(PhysicalOffset(offset)) {
            Ok(r) => assert!(starts.contains(&offset) && r.offset().get() == offset, "a record at {offset}"),
            Err(Error::InvalidArgument(_) | Error::Corruption { .. }) => {
                assert!(!starts.contains(&offset), "the record at {offset} was not found")
            }
            Err(e) => panic!("offset {offset}: {e:?}"),
        }
    }
    log.close().unwrap();
}
