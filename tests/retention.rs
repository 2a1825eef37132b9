//! Log retention: segments go by age and under disk pressure, never while a
//! consumer group, a delayed message or a replica still needs them (unless
//! forced), sends are refused past the full ratio, and every step is safe
//! across a reopen (the floor is recorded first; derived files are rebuilt
//! from what is left).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use mqstore::commitlog::{CommitLogOptions, FlushMode};
use mqstore::index::IndexFileSize;
use mqstore::message::Message;
use mqstore::storage::{DiskUsage, LockGuard, OpenMode, StdStorage, Storage, StorageFile};
use mqstore::store::{Holder, PullStatus, RemovalReason, Retention, RetentionOptions, Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use mqstore::{Error, ManualClock};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOPIC: &str = "t";
const QUEUES: u32 = 2;
const HOUR_MS: u64 = 3600 * 1000;
const START_MS: u64 = 1_700_000_000_000;

/// The real file system, reporting whatever disk use the test sets.
#[derive(Debug, Default)]
struct PressureStorage {
    percent: AtomicU8,
}

impl PressureStorage {
    fn set(&self, pct: u8) {
        self.percent.store(pct, Ordering::SeqCst);
    }
}

impl Storage for PressureStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        StdStorage.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        StdStorage.list_dir(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        StdStorage.exists(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        StdStorage.open(path, mode)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdStorage.rename(from, to)
    }
    fn rename_no_replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdStorage.rename_no_replace(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdStorage.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        StdStorage.sync_dir(path)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        StdStorage.try_lock(path)
    }
    fn disk_usage(&self, _path: &Path) -> io::Result<DiskUsage> {
        let pct = u64::from(self.percent.load(Ordering::SeqCst));
        Ok(DiskUsage { total: 1000, used: pct * 10, available: 1000 - pct * 10 })
    }
}

struct Fixture {
    clock: Arc<ManualClock>,
    disk: Arc<PressureStorage>,
}

impl Fixture {
    fn new() -> Self {
        Self { clock: Arc::new(ManualClock::new(START_MS)), disk: Arc::new(PressureStorage::default()) }
    }

    fn opts(&self) -> StoreOptions {
        let log = CommitLogOptions::default()
            .segment_size(16 << 10)
            .max_record_size(8 << 10)
            .flush_mode(FlushMode::Async)
            .clock(self.clock.clone())
            .storage(self.disk.clone());
        StoreOptions::default()
            .commit_log_options(log)
            .max_body_size(4 << 10)
            .max_properties_size(1 << 10)
            .consume_queue_units_per_file(16)
            .index_file_size(IndexFileSize { slots: 64, max_entries: 32 })
            // Rounds run when the test says so.
            .retention(RetentionOptions::default().interval(Duration::from_secs(3600)).max_segments_per_round(1000))
            .offset_persist_interval(Duration::from_secs(3600))
    }

    fn open(&self, dir: &Path) -> Store {
        Store::open(dir, self.opts()).unwrap()
    }
}

fn body(i: u64) -> Vec<u8> {
    common::numbered::body(i, 700)
}

/// Sends `n` messages numbered from `from` (round robin over the queues)
/// and waits until they are all dispatched and flushed.
fn send(store: &Store, from: u64, n: u64) {
    for i in from..from + n {
        let m = Message::new(TOPIC, body(i)).with_keys([format!("k{i}")]);
        store.send(m).unwrap();
    }
    store.commit_log().flush().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.commit_log().max_offset() > dispatched_end(store) {
        assert!(std::time::Instant::now() < deadline, "not dispatched");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One past the last record dispatched (via the queues' last units).
fn dispatched_end(store: &Store) -> mqstore::PhysicalOffset {
    let mut end = mqstore::PhysicalOffset(0);
    for q in 0..QUEUES {
        let max = store.max_offset(TOPIC, q).unwrap();
        if max == 0 {
            continue;
        }
        let r = store.pull(TOPIC, q, max - 1, 1, &TagFilter::All).unwrap();
        if let Some(m) = r.messages.first() {
            end = end.max(mqstore::PhysicalOffset(m.physical_offset().get() + u64::from(m.store_size())));
        }
    }
    end
}

/// Every message still readable, by number, each body checked.
fn readable(store: &Store) -> Vec<u64> {
    common::numbered::served_numbers(store, TOPIC, QUEUES)
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map_or(0, |d| d.filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp")).count())
}

fn cq_files(root: &Path) -> usize {
    (0..QUEUES).map(|q| files_in(&root.join("consumequeue").join(TOPIC).join(q.to_string()))).sum()
}

#[test]
fn expired_segments_go_and_the_rest_stays_readable_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let store = fx.open(dir.path());
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    send(&store, 0, 200);
    let segments = store.commit_log().segment_count();
    assert!(segments > 5, "only {segments} segments");

    // Younger than 72 h: nothing goes.
    fx.clock.advance_ms(71 * HOUR_MS);
    let r = store.run_retention(Retention::Normal).unwrap();
    assert!(r.removed.is_empty(), "{r:?}");
    // Counted once the index keys waiting behind dispatch are in files
    // (a lookup writes them first).
    assert_eq!(store.query_by_key(TOPIC, "k199", 0, u64::MAX, 10).unwrap().len(), 1);
    let (cq_before, index_before) = (cq_files(dir.path()), files_in(&dir.path().join("index")));
    assert_eq!(readable(&store), (0..200).collect::<Vec<_>>());

    // Later messages, then the old ones expire.
    send(&store, 200, 30);
    fx.clock.advance_ms(2 * HOUR_MS);
    let r = store.run_retention(Retention::Normal).unwrap();
    assert!(!r.removed.is_empty());
    assert!(r.removed.iter().all(|s| s.reason == RemovalReason::Expired));
    assert!(r.queue_files_removed > 0 && r.index_files_removed > 0, "{r:?}");
    assert_eq!(r.log_min_offset, store.commit_log().min_offset().get());
    // Only segments wholly before the new messages went.
    let left = readable(&store);
    let first_kept = left[0];
    assert!(first_kept > 0 && first_kept < 200, "first kept {first_kept}");
    assert_eq!(left, (first_kept..230).collect::<Vec<_>>());
    for seg in &r.removed {
        assert!(!seg.path.exists(), "{} still exists", seg.path.display());
    }
    assert!(cq_files(dir.path()) < cq_before + 2);
    assert!(
        files_in(&dir.path().join("index")) < index_before + 1,
        "{} index files, {index_before} before",
        files_in(&dir.path().join("index"))
    );
    // A queue read from 0 is told where its messages start.
    let p = store.pull(TOPIC, 0, 0, 8, &TagFilter::All).unwrap();
    assert_eq!(p.status, PullStatus::OffsetIllegal);
    assert_eq!(p.next_offset, store.min_offset(TOPIC, 0).unwrap());
    // Keys of removed messages are gone; kept ones are found.
    assert!(store.query_by_key(TOPIC, "k0", 0, u64::MAX, 10).unwrap().is_empty());
    assert_eq!(store.query_by_key(TOPIC, &format!("k{}", 229), 0, u64::MAX, 10).unwrap().len(), 1);
    // Offset by time never points below the live start.
    assert_eq!(store.offset_for_timestamp(TOPIC, 0, 0).unwrap(), store.min_offset(TOPIC, 0).unwrap());
    let mins: Vec<u64> = (0..QUEUES).map(|q| store.min_offset(TOPIC, q).unwrap()).collect();
    let maxs: Vec<u64> = (0..QUEUES).map(|q| store.max_offset(TOPIC, q).unwrap()).collect();
    store.close().unwrap();

    // Reopened: the same messages, the same queue ranges, and numbering
    // continues.
    let store = fx.open(dir.path());
    assert_eq!(readable(&store), (first_kept..230).collect::<Vec<_>>());
    assert_eq!((0..QUEUES).map(|q| store.min_offset(TOPIC, q).unwrap()).collect::<Vec<_>>(), mins);
    assert_eq!((0..QUEUES).map(|q| store.max_offset(TOPIC, q).unwrap()).collect::<Vec<_>>(), maxs);
    let sent = store.send(Message::new(TOPIC, body(230))).unwrap();
    assert_eq!(sent.queue_offset, maxs[sent.queue_id as usize]);
    store.close().unwrap();
}

#[test]
fn a_lagging_group_keeps_its_segments_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let store = fx.open(dir.path());
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    send(&store, 0, 200);
    // The group consumed queue 0 up to 40 and queue 1 up to 60.
    store.commit_offset("g", TOPIC, 0, 40).unwrap();
    store.commit_offset("g", TOPIC, 1, 60).unwrap();
    send(&store, 200, 10);
    fx.clock.advance_ms(100 * HOUR_MS);
    let r = store.run_retention(Retention::Normal).unwrap();
    let held = store.pull(TOPIC, 0, 40, 1, &TagFilter::All).unwrap();
    assert_eq!(held.status, PullStatus::Found, "the group's next message was removed: {r:?}");
    let at = held.messages[0].physical_offset().get();
    assert!(r.removed.iter().all(|s| s.end <= at), "{r:?}");
    assert!(
        r.kept_for.iter().any(|h| matches!(h, Holder::Group { group, queue_id: 0, offset: 40, .. } if group == "g")),
        "{:?}",
        r.kept_for
    );
    // Once the group moves on, the segments go (up to its new position).
    store.commit_offset("g", TOPIC, 0, 70).unwrap();
    store.commit_offset("g", TOPIC, 1, 70).unwrap();
    let r2 = store.run_retention(Retention::Normal).unwrap();
    assert!(!r2.removed.is_empty(), "{r2:?}");
    // From here on only group h lags: g is done with everything.
    for q in 0..QUEUES {
        store.commit_offset("g", TOPIC, q, store.max_offset(TOPIC, q).unwrap()).unwrap();
    }
    // A group far behind again: only a forced round removes its messages,
    // and says so.
    store.reset_offset("h", TOPIC, 0, store.min_offset(TOPIC, 0).unwrap()).unwrap();
    let r3 = store.run_retention(Retention::Normal).unwrap();
    assert!(r3.removed.is_empty(), "{r3:?}");
    assert!(!r3.kept_for.is_empty());
    // A group that is gone for good is deleted: it holds nothing any more
    // (while one of its consumers runs, deleting it is refused).
    let running = store
        .push_consumer("h")
        .subscribe(TOPIC, "*")
        .unwrap()
        .listener(|_: &[mqstore::message::MessageExt], _: &mqstore::consumer::ConsumeContext| {
            mqstore::consumer::ConsumeStatus::ReconsumeLater
        })
        .start()
        .unwrap();
    assert!(matches!(store.delete_consumer_group("h"), Err(Error::InvalidArgument(_))));
    running.shutdown().unwrap();
    store.reset_offset("h", TOPIC, 0, store.min_offset(TOPIC, 0).unwrap()).unwrap();
    let kept = store.run_retention(Retention::Normal).unwrap();
    assert!(kept.removed.is_empty() && !kept.kept_for.is_empty(), "{kept:?}");
    assert!(store.delete_consumer_group("h").unwrap() >= 1);
    assert_eq!(store.committed_offset("h", TOPIC, 0), None);
    let freed = store.run_retention(Retention::Normal).unwrap();
    assert!(!freed.removed.is_empty(), "{freed:?}");
    // Forced: a lagging group's messages go anyway, and the report says so.
    send(&store, 210, 30);
    fx.clock.advance_ms(100 * HOUR_MS);
    send(&store, 240, 5);
    for q in 0..QUEUES {
        store.commit_offset("g", TOPIC, q, store.max_offset(TOPIC, q).unwrap()).unwrap();
    }
    store.reset_offset("h", TOPIC, 0, store.min_offset(TOPIC, 0).unwrap()).unwrap();
    let r4 = store.run_retention(Retention::Forced).unwrap();
    assert!(!r4.removed.is_empty());
    assert!(r4.overridden.iter().any(|h| matches!(h, Holder::Group { group, .. } if group == "h")), "{r4:?}");
    // The group's next pull is sent to the live start.
    let committed = store.committed_offset("h", TOPIC, 0).unwrap();
    let p = store.pull(TOPIC, 0, committed, 8, &TagFilter::All).unwrap();
    assert_eq!(p.status, PullStatus::OffsetIllegal);
    assert_eq!(p.next_offset, store.min_offset(TOPIC, 0).unwrap());
    assert!(p.next_offset > committed);
    store.close().unwrap();
}

#[test]
fn disk_pressure_removes_old_segments_but_not_a_pending_delayed_message() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let store = fx.open(dir.path());
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    send(&store, 0, 60);
    // Level 18 waits two hours; the clock does not move, so it stays pending.
    let delayed = store.send(Message::new(TOPIC, body(1000)).with_delay_level(18)).unwrap();
    send(&store, 60, 140);
    fx.disk.set(87);
    let r = store.run_retention(Retention::Normal).unwrap();
    assert!(!r.removed.is_empty(), "{r:?}");
    assert!(r.removed.iter().all(|s| s.reason == RemovalReason::DiskPressure));
    assert!(r.kept_for.iter().any(|h| matches!(h, Holder::Delayed { level: 18, .. })), "{r:?}");
    assert!(!r.disk_full, "87 % is below the full ratio");
    let delayed_at = delayed.offset_msg_id;
    assert!(store.message_by_offset_id(&delayed_at).is_ok(), "the pending delayed message was removed");
    // It is still delivered when due.
    fx.disk.set(10);
    fx.clock.advance_ms(2 * HOUR_MS + 1000);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if readable(&store).contains(&1000) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the delayed message was never delivered");
        std::thread::sleep(Duration::from_millis(5));
    }
    store.close().unwrap();
}

#[test]
fn sends_are_refused_past_the_full_ratio_until_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let store = fx.open(dir.path());
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    send(&store, 0, 10);
    let end = store.commit_log().max_offset();
    fx.disk.set(95);
    let r = store.run_retention(Retention::Normal).unwrap();
    assert!(r.disk_full && store.is_disk_full());
    let e = store.send(Message::new(TOPIC, body(10))).unwrap_err();
    assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
    assert_eq!(store.commit_log().max_offset(), end, "a refused send wrote something");
    // Reads keep working.
    assert_eq!(readable(&store), (0..10).collect::<Vec<_>>());
    // Between the ratios the refusal stays (hysteresis, as RocketMQ).
    fx.disk.set(87);
    store.run_retention(Retention::Normal).unwrap();
    assert!(store.is_disk_full());
    fx.disk.set(84);
    let r = store.run_retention(Retention::Normal).unwrap();
    assert!(!r.disk_full && !store.is_disk_full());
    send(&store, 10, 1);
    assert_eq!(readable(&store), (0..11).collect::<Vec<_>>());
    store.close().unwrap();
}

/// Runs a store to a state where retention removed segments, returning what
/// stays readable.
fn retained_store(dir: &Path, fx: &Fixture) -> Vec<u64> {
    let store = fx.open(dir);
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    send(&store, 0, 200);
    send(&store, 200, 20);
    fx.clock.advance_ms(0);
    let r = store.run_retention(Retention::Forced).unwrap();
    assert!(r.removed.is_empty(), "nothing is expired yet");
    fx.clock.advance_ms(73 * HOUR_MS);
    send(&store, 220, 20);
    let r = store.run_retention(Retention::Normal).unwrap();
    assert!(!r.removed.is_empty());
    let left = readable(&store);
    store.close().unwrap();
    left
}

#[test]
fn derived_files_are_rebuilt_after_retention() {
    for damage in ["consume queues", "consume queues and checkpoint", "index"] {
        let dir = tempfile::tempdir().unwrap();
        let fx = Fixture::new();
        let left = retained_store(dir.path(), &fx);
        let store = fx.open(dir.path());
        let maxs: Vec<u64> = (0..QUEUES).map(|q| store.max_offset(TOPIC, q).unwrap()).collect();
        let mins: Vec<u64> = (0..QUEUES).map(|q| store.min_offset(TOPIC, q).unwrap()).collect();
        store.close().unwrap();
        match damage {
            "consume queues" => std::fs::remove_dir_all(dir.path().join("consumequeue").join(TOPIC)).unwrap(),
            "consume queues and checkpoint" => {
                std::fs::remove_dir_all(dir.path().join("consumequeue").join(TOPIC)).unwrap();
                std::fs::remove_file(dir.path().join("config").join("dispatch")).unwrap();
            }
            _ => std::fs::remove_dir_all(dir.path().join("index")).unwrap(),
        }
        let store = fx.open(dir.path());
        assert_eq!(readable(&store), left, "{damage}");
        assert_eq!((0..QUEUES).map(|q| store.max_offset(TOPIC, q).unwrap()).collect::<Vec<_>>(), maxs, "{damage}");
        assert_eq!((0..QUEUES).map(|q| store.min_offset(TOPIC, q).unwrap()).collect::<Vec<_>>(), mins, "{damage}");
        assert_eq!(store.query_by_key(TOPIC, &format!("k{}", left[0]), 0, u64::MAX, 10).unwrap().len(), 1, "{damage}");
        // Numbering continues where it was.
        let sent = store.send(Message::new(TOPIC, body(240))).unwrap();
        assert_eq!(sent.queue_offset, maxs[sent.queue_id as usize], "{damage}");
        store.close().unwrap();
    }
}

#[test]
fn missing_segments_are_corruption_and_leftovers_are_finished() {
    // A store whose oldest segment vanished without retention.
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let store = fx.open(dir.path());
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    send(&store, 0, 100);
    store.close().unwrap();
    let mut segs: Vec<_> = std::fs::read_dir(log_dir(dir.path())).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    std::fs::remove_file(&segs[0]).unwrap();
    let e = Store::open(dir.path(), fx.opts()).unwrap_err();
    assert!(matches!(&e, Error::Corruption { path, offset: 0, .. } if path.ends_with("commitlog")), "{e:?}");

    // After retention: deleting the floor record, or the first kept
    // segment, is corruption too.
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    retained_store(dir.path(), &fx);
    let floor_file = dir.path().join("config").join("retention");
    let saved = std::fs::read(&floor_file).unwrap();
    std::fs::remove_file(&floor_file).unwrap();
    let e = Store::open(dir.path(), fx.opts()).unwrap_err();
    assert!(matches!(e, Error::Corruption { .. }), "{e:?}");
    std::fs::write(&floor_file, &saved).unwrap();
    let mut segs: Vec<_> = std::fs::read_dir(log_dir(dir.path())).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    let first = std::fs::read(&segs[0]).unwrap();
    std::fs::remove_file(&segs[0]).unwrap();
    let e = Store::open(dir.path(), fx.opts()).unwrap_err();
    assert!(matches!(e, Error::Corruption { .. }), "{e:?}");
    std::fs::write(&segs[0], &first).unwrap();
    fx.open(dir.path()).close().unwrap();

    // Segments below the floor (the round was cut off after recording it;
    // removal goes oldest first, so what is left is the newest of them) are
    // removed at open, and nothing else changes.
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let copy = tempfile::tempdir().unwrap();
    let store = fx.open(dir.path());
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    send(&store, 0, 200);
    send(&store, 200, 20);
    store.close().unwrap();
    let mut segs: Vec<_> = std::fs::read_dir(log_dir(dir.path())).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    for s in &segs {
        std::fs::copy(s, copy.path().join(s.file_name().unwrap())).unwrap();
    }
    fx.clock.advance_ms(73 * HOUR_MS);
    let store = fx.open(dir.path());
    send(&store, 220, 20);
    let r = store.run_retention(Retention::Normal).unwrap();
    assert!(r.removed.len() >= 3, "{r:?}");
    let left = readable(&store);
    store.close().unwrap();
    let leftovers: Vec<_> = r.removed[r.removed.len() - 3..].iter().map(|s| s.path.clone()).collect();
    for s in &leftovers {
        std::fs::copy(copy.path().join(s.file_name().unwrap()), s).unwrap();
    }
    let store = fx.open(dir.path());
    for s in &leftovers {
        assert!(!s.exists(), "leftover {} was not removed", s.display());
    }
    assert_eq!(readable(&store), left);
    store.close().unwrap();
}

fn log_dir(root: &Path) -> std::path::PathBuf {
    root.join("commitlog")
}

#[test]
fn the_real_file_system_reports_usage_as_df_does() {
    let dir = tempfile::tempdir().unwrap();
    let u = StdStorage.disk_usage(dir.path()).unwrap();
    assert!(u.total > 0 && u.used <= u.total && u.available <= u.total - u.used, "{u:?}");
    // df's Use%: used / (used + available), rounded up.
    let out = std::process::Command::new("df").arg("--output=pcent").arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let df: u8 = text.lines().nth(1).unwrap().trim().trim_end_matches('%').parse().unwrap();
    assert!(u.used_percent().abs_diff(df) <= 1, "ours {} %, df {df} %", u.used_percent());
}

/// Points unit `i` of consume-queue file `file` at commit-log offset
/// `physical`, behind the open store's back (the mapping sees it).
fn point_unit(file: &Path, i: u64, physical: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(&physical.to_be_bytes(), i * 20).unwrap();
}

/// After retention, a live unit damaged (while the store is open) to point
/// below the floor is not taken for a removed record: units' physical
/// offsets increase, so the pull reports it, the queue is rebuilt from the
/// log and its message is still served, at its position and to a consumer
/// reading the queue through.
#[test]
fn a_live_unit_damaged_to_look_removed_is_repaired_not_stepped_over() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let left = retained_store(dir.path(), &fx);
    let store = fx.open(dir.path());
    let (min, max) = (store.min_offset(TOPIC, 0).unwrap(), store.max_offset(TOPIC, 0).unwrap());
    assert!(max - min >= 4, "{min}..{max}");
    let at = min + (max - min) / 2;
    let expected = store.pull(TOPIC, 0, at, 1, &TagFilter::All).unwrap().messages[0].body().to_vec();
    // Units per file 16: the file named by the first offset of its group.
    let file = dir.path().join("consumequeue").join(TOPIC).join("0").join(format!("{:020}", at / 16 * 16));
    point_unit(&file, at % 16, 0);
    let r = store.pull(TOPIC, 0, at, 1, &TagFilter::All).unwrap();
    assert_eq!(r.status, PullStatus::Found);
    assert!(r.messages.first().is_some_and(|m| m.queue_offset().0 == at && m.body() == &expected[..]));
    assert_eq!(readable(&store), left);
    store.close().unwrap();
}

/// The same for a delay level's queue: entries whose records retention
/// removed are dropped, but a live entry's unit damaged to point below
/// the floor is rebuilt from the log and the message still delivered.
#[test]
fn a_live_schedule_unit_damaged_to_look_removed_is_still_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let store = fx.open(dir.path());
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    // Level 18 waits two hours. Four entries before retention (their
    // records go: forced), four after it.
    let delayed = |from: u64| {
        for i in from..from + 4 {
            store.send(Message::new(TOPIC, body(i)).with_delay_level(18)).unwrap();
        }
    };
    delayed(1000);
    send(&store, 0, 140);
    fx.disk.set(87);
    let r = store.run_retention(Retention::Forced).unwrap();
    assert!(r.overridden.iter().any(|h| matches!(h, Holder::Delayed { level: 18, .. })), "{r:?}");
    fx.disk.set(10);
    delayed(2000);
    store.commit_log().flush().unwrap();
    // Entry 5 (the second after retention) now points at offset 0.
    let file = dir.path().join("consumequeue").join("SCHEDULE_TOPIC_XXXX").join("17").join(format!("{:020}", 0));
    point_unit(&file, 5, 0);
    fx.clock.advance_ms(2 * HOUR_MS + 1000);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let want: Vec<u64> = (2000..2004).collect();
    loop {
        let got: Vec<u64> = readable(&store).into_iter().filter(|n| *n >= 1000).collect();
        if got == want {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "delivered {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    store.close().unwrap();
}

/// `offset_for_timestamp` checks each record it reads against its unit: a
/// unit pointing into a segment header or at another message's record is
/// repaired (the queue rebuilt from the log), never an error for the
/// caller or a time taken from the wrong message.
#[test]
fn offset_for_timestamp_repairs_a_damaged_unit_and_never_reads_another_message() {
    for damage in ["into the header", "at the next record"] {
        let dir = tempfile::tempdir().unwrap();
        let fx = Fixture::new();
        let store = fx.open(dir.path());
        store.create_topic(TopicConfig::new("ts", 1)).unwrap();
        for i in 0..40 {
            fx.clock.advance_ms(1);
            store.send(Message::new("ts", body(i))).unwrap();
        }
        store.commit_log().flush().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.max_offset("ts", 0).unwrap() < 40 {
            assert!(std::time::Instant::now() < deadline, "not dispatched");
            std::thread::sleep(Duration::from_millis(1));
        }
        let all = store.pull("ts", 0, 0, 40, &TagFilter::All).unwrap().messages;
        let stamps: Vec<u64> = all.iter().map(|m| m.store_timestamp()).collect();
        // Unit 20 is every search's first probe (40 units).
        let pointer = match damage {
            "into the header" => 10,
            _ => all[21].physical_offset().get(),
        };
        let file = dir.path().join("consumequeue").join("ts").join("0").join(format!("{:020}", 16));
        point_unit(&file, 4, pointer);
        for (i, ts) in stamps.iter().enumerate() {
            assert_eq!(store.offset_for_timestamp("ts", 0, *ts).unwrap(), i as u64, "{damage}: message {i}");
        }
        store.close().unwrap();
    }
}
