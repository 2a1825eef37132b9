#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `store::verify` over a real store: a healthy store gives exact counts and
//! no problem; one damage per file kind, each in a fresh copy, is reported
//! at the right file and offset with the right severity and derived flag;
//! and verify never changes a byte, checked twice: every file's bytes are
//! compared before and after, and every run goes through a storage that
//! refuses any call but reading.

mod common;

use mqstore::commitlog::{CommitLog, CommitLogOptions, COMMITLOG_DIR};
use mqstore::index::IndexFileSize;
use mqstore::message::Message;
use mqstore::retry::DelayLevels;
use mqstore::storage::{LockGuard, MappedRegion, OpenMode, StdStorage, Storage, StorageFile};
use mqstore::store::verify::{verify_with, Problem, Severity, VerifyReport};
use mqstore::store::{Store, StoreOptions, StoreView, TagFilter};
use mqstore::topic::TopicConfig;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const SEGMENT: u64 = 64 << 10;
const UNITS_PER_FILE: u64 = 8;
const INDEX: IndexFileSize = IndexFileSize { slots: 16, max_entries: 64 };

fn opts() -> StoreOptions {
    StoreOptions::default()
        .commit_log_options(CommitLogOptions::default().segment_size(SEGMENT).max_record_size(16 << 10))
        .max_body_size(4 << 10)
        .max_properties_size(1 << 10)
        .consume_queue_units_per_file(UNITS_PER_FILE)
        .index_file_size(INDEX)
        .delay_levels(DelayLevels::parse("1s 1h").unwrap())
}

// ------------------------------------------------------------ read-only guard

/// A storage that can only read: any call that could change the file
/// system fails, so a verify that tried would fail. With `in_flight`, one
/// record reads as being written (see [`InFlight`]).
#[derive(Debug, Default)]
struct ReadOnly {
    in_flight: Option<InFlight>,
}

/// One record's CRC field reads as zeros for the first `hidden` reads of
/// it: a record a live writer is still copying in (`pread` sees its
/// length before its checksum), finished meanwhile.
#[derive(Debug, Clone)]
struct InFlight {
    file: PathBuf,
    crc_at: u64,
    hidden: Arc<AtomicU32>,
}

impl InFlight {
    /// Hides the CRC field in `buf`, just read from `offset`, if it is
    /// there and still hidden.
    fn hide(&self, buf: &mut [u8], offset: u64) {
        let (lo, hi, end) = (self.crc_at, self.crc_at + 4, offset + buf.len() as u64);
        let covers = offset < hi && lo < end;
        if covers && self.hidden.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| h.checked_sub(1)).is_ok() {
            for at in lo.max(offset)..hi.min(end) {
                buf[(at - offset) as usize] = 0;
            }
        }
    }
}

fn refused<T>(what: &str) -> io::Result<T> {
    Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("verify tried to {what}")))
}

impl Storage for ReadOnly {
    fn create_dir_all(&self, _: &Path) -> io::Result<()> {
        refused("create a directory")
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        StdStorage.list_dir(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        StdStorage.exists(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        if mode != OpenMode::Read {
            return refused("open a file for writing");
        }
        let in_flight = self.in_flight.clone().filter(|f| f.file == path);
        Ok(Arc::new(ReadOnlyFile { inner: StdStorage.open(path, mode)?, in_flight }))
    }
    fn rename(&self, _: &Path, _: &Path) -> io::Result<()> {
        refused("rename")
    }
    fn rename_no_replace(&self, _: &Path, _: &Path) -> io::Result<()> {
        refused("rename")
    }
    fn remove_file(&self, _: &Path) -> io::Result<()> {
        refused("remove a file")
    }
    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        refused("sync a directory")
    }
    fn try_lock(&self, _: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        refused("take the lock")
    }
}

#[derive(Debug)]
struct ReadOnlyFile {
    inner: Arc<dyn StorageFile>,
    in_flight: Option<InFlight>,
}

impl StorageFile for ReadOnlyFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = self.inner.read_at(buf, offset)?;
        if let Some(f) = &self.in_flight {
            f.hide(&mut buf[..n], offset);
        }
        Ok(n)
    }
    fn write_at(&self, _: &[u8], _: u64) -> io::Result<usize> {
        refused("write")
    }
    fn allocate(&self, _: u64) -> io::Result<()> {
        refused("allocate")
    }
    fn zero_range(&self, _: u64, _: u64) -> io::Result<()> {
        refused("zero a range")
    }
    fn set_len(&self, _: u64) -> io::Result<()> {
        refused("truncate")
    }
    fn sync_data(&self) -> io::Result<()> {
        refused("sync")
    }
    fn map(&self, _: usize) -> io::Result<Arc<dyn MappedRegion>> {
        refused("map")
    }
}

// ------------------------------------------------------------------ fixture

/// The pristine store and what it must count.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// A copy taken while the store was open, three quarters through (the
    /// "older copy put back" of the damage matrix).
    older: PathBuf,
    records: u64,
    units: u64,
    queues: usize,
    index_entries: u64,
    index_files: usize,
    segments: usize,
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A closed store over several segments: two topics, tags and keys, a
/// topic deleted and created again, delayed messages (some delivered,
/// some waiting), committed offsets, several index files.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = Store::open(&dir, opts()).unwrap();
        store.create_topic(TopicConfig::new("orders", 3)).unwrap();
        store.create_topic(TopicConfig::new("events", 2)).unwrap();
        store.create_topic(TopicConfig::new("recycled", 1)).unwrap();
        for i in 0..5 {
            store.send(Message::new("recycled", format!("old {i}")).with_key(format!("r{i}"))).unwrap();
        }
        store.delete_topic("recycled").unwrap();
        store.create_topic(TopicConfig::new("recycled", 1)).unwrap();
        let older = tmp.path().join("older");
        for i in 0..600u64 {
            if i == 450 {
                copy_live(&dir, &older);
            }
            let topic = if i % 3 == 0 { "events" } else { "orders" };
            let mut m = Message::new(topic, common::body_for(i, 100 + (i as usize * 37) % 300));
            if i % 2 == 0 {
                m = m.with_tags(if i % 4 == 0 { "TagA" } else { "TagB" });
            }
            if i % 5 != 0 {
                m = m.with_keys([format!("k{i}"), format!("c{}", i % 7)]);
            }
            store.send(m).unwrap();
        }
        store.send(Message::new("recycled", "new").with_key("r0")).unwrap();
        for i in 0..4 {
            store
                .send(Message::new("events", format!("soon {i}")).with_delay_level(1).with_key(format!("d{i}")))
                .unwrap();
        }
        for i in 0..3 {
            store.send(Message::new("events", format!("later {i}")).with_delay_level(2)).unwrap();
        }
        // The level-1 messages are delivered to events (200 + 4 in all).
        wait_for("delayed delivery", || (0..2).map(|q| store.max_offset("events", q).unwrap()).sum::<u64>() >= 204);
        for (t, n) in [("orders", 3), ("events", 2)] {
            for q in 0..n {
                let max = store.max_offset(t, q).unwrap();
                store.pull_wait(t, q, 0, 1, &TagFilter::All, Duration::from_secs(5)).unwrap();
                store.commit_offset("g1", t, q, max / 2).unwrap();
            }
        }
        store.close().unwrap();

        let view = StoreView::open(&dir).unwrap();
        let ranges = view.queue_ranges().unwrap();
        let units = ranges.iter().map(|r| r.3 - r.2).sum();
        // Index entries: the unique id and every key of each record outside
        // the schedule topic (records of the deleted incarnation were
        // indexed while they were live).
        let mut index_entries = 0;
        for t in ["orders", "events", "recycled"] {
            view.messages(t, None, 0, 0, |m| {
                index_entries += u64::from(m.msg_id().is_some()) + m.keys().count() as u64;
                Ok(true)
            })
            .unwrap();
        }
        let old = CommitLog::verify(&dir, &StdStorage).unwrap();
        let index_files = std::fs::read_dir(dir.join("index")).unwrap().count();
        assert!(old.segments >= 3, "the fixture spans {} segments", old.segments);
        assert!(index_files >= 3, "the fixture has {index_files} index files");
        Fixture {
            _tmp: tmp,
            dir,
            older,
            records: old.records,
            units,
            queues: ranges.len(),
            index_entries,
            index_files,
            segments: old.segments,
        }
    })
}

/// Copies a store directory while it is open (a crash image), without its
/// LOCK, skipping files that vanish while the store replaces them.
fn copy_live(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            copy_live(&e.path(), &to.join(e.file_name()));
        } else if e.file_name() != "LOCK" {
            match std::fs::copy(e.path(), to.join(e.file_name())) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => panic!("copy {}: {err}", e.path().display()),
            }
        }
    }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Verifies `dir` through the read-only storage and checks that no byte
/// and no file changed.
fn verify(dir: &Path) -> VerifyReport {
    let before = snapshot(dir);
    let report = verify_with(dir, Arc::new(ReadOnly::default())).unwrap_or_else(|e| panic!("verify failed: {e}"));
    assert!(snapshot(dir) == before, "verify changed the store");
    report
}

/// A fresh copy of the fixture.
fn copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    common::copy_dir(&fixture().dir, &dir);
    (tmp, dir)
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// The one problem at `rel`:`offset` with kind `code`, which must have
/// the given severity and derived flag.
fn expect<'r>(
    r: &'r VerifyReport,
    dir: &Path,
    rel: &str,
    offset: u64,
    code: &str,
    sev: Severity,
    derived: bool,
) -> &'r Problem {
    let path = dir.join(rel);
    let found = r.problems.iter().find(|p| p.path == path && p.offset == offset && p.kind.code() == code);
    let p = found.unwrap_or_else(|| panic!("no {code} problem at {rel}:{offset}; got:\n{}", listing(r)));
    assert_eq!((p.severity, p.derived), (sev, derived), "{p}");
    p
}

fn listing(r: &VerifyReport) -> String {
    r.problems.iter().map(|p| format!("  {p} [{}]\n", p.kind.code())).collect()
}

fn segment(dir: &Path, base: u64) -> PathBuf {
    dir.join(COMMITLOG_DIR).join(format!("{base:020}"))
}

/// Physical offset and size of the `n`th record of `topic` (log order).
fn record(dir: &Path, topic: &str, n: usize) -> (u64, u64) {
    let mut out = None;
    let mut i = 0;
    StoreView::open(dir)
        .unwrap()
        .messages(topic, None, 0, 0, |m| {
            if i == n {
                out = Some((m.physical_offset().0, u64::from(m.store_size())));
                return Ok(false);
            }
            i += 1;
            Ok(true)
        })
        .unwrap();
    out.unwrap()
}

fn cq(dir: &Path, topic: &str, q: u32, first: u64) -> PathBuf {
    dir.join("consumequeue").join(topic).join(q.to_string()).join(format!("{first:020}"))
}

/// The sorted index files.
fn index_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("index")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

const ENTRIES_AT: usize = 64 + 4 * INDEX.slots as usize;

/// A metadata envelope (FORMAT.md 11.1) around `payload`.
fn envelope(magic: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut b = magic.to_vec();
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(payload);
    let crc = crc32fast::hash(&b);
    b[16..20].copy_from_slice(&crc.to_be_bytes());
    b
}

// -------------------------------------------------------------------- tests

#[test]
fn a_healthy_store_has_exact_counts_and_no_problem() {
    let f = fixture();
    let r = verify(&f.dir);
    assert!(r.problems.is_empty(), "{}", listing(&r));
    assert!(r.is_healthy());
    assert_eq!(r.problems_total(), 0);
    assert_eq!(r.segments, f.segments);
    assert_eq!(r.records, f.records);
    assert_eq!(r.records_after_damage, 0);
    assert_eq!(r.expired, 0);
    assert_eq!(r.end, r.log_end);
    assert_eq!(r.units, f.units);
    assert_eq!(r.queues, f.queues);
    assert_eq!(r.index_entries, f.index_entries);
    assert_eq!(r.index_files, f.index_files);
    // orders, events, recycled and the schedule topic.
    assert_eq!(r.topics, 4);
    assert_eq!(r.consumer_offsets, 5);
    // The same through StoreView.
    assert_eq!(StoreView::open(&f.dir).unwrap().verify().unwrap(), r);
}

#[test]
fn commit_log_damage_mid_log_is_corruption_and_checking_goes_on() {
    let (_t, dir) = copy();
    let (at, size) = record(&dir, "orders", 10);
    assert!(at + size < SEGMENT);
    edit(&segment(&dir, 0), |b| b[(at + size - 3) as usize] ^= 0x20);
    let r = verify(&dir);
    let p = expect(&r, &dir, "commitlog/00000000000000000000", at, "damaged", Severity::Corruption, false);
    assert!(p.kind.to_string().contains("crc mismatch"), "{p}");
    assert!(!r.is_healthy());
    assert_eq!(r.end, at);
    // Later segments were still checked, and pointers into the damaged
    // rest of the first segment are reported as such, once per file.
    assert!(r.records_after_damage > 0);
    assert!(r.problems.iter().any(|p| p.kind.code() == "damaged-record"), "{}", listing(&r));
    assert!(!r.problems.iter().any(|p| p.kind.code() == "past-log-end"), "{}", listing(&r));
}

#[test]
fn segment_header_damage_and_a_missing_segment_are_named() {
    let (_t, dir) = copy();
    edit(&segment(&dir, SEGMENT), |b| b[30] ^= 1);
    let r = verify(&dir);
    expect(&r, &dir, &format!("commitlog/{SEGMENT:020}"), 60, "damaged", Severity::Corruption, false);
    // The gap it leaves is explained by it: not reported again.
    assert!(!r.problems.iter().any(|p| p.path == segment(&dir, 2 * SEGMENT)), "{}", listing(&r));

    // The first segment's header: the log still starts there, so what
    // pointed into it points into damage, not below the log.
    let (_t, dir) = copy();
    edit(&segment(&dir, 0), |b| b[0] ^= 1);
    let r = verify(&dir);
    expect(&r, &dir, "commitlog/00000000000000000000", 0, "damaged", Severity::Corruption, false);
    assert_eq!((r.log_start, r.end, r.records), (64, 64, 0));
    assert!(r.problems.iter().any(|p| p.kind.code() == "damaged-record"), "{}", listing(&r));
    assert_eq!(r.expired, 0);

    let (_t, dir) = copy();
    std::fs::remove_file(segment(&dir, SEGMENT)).unwrap();
    let r = verify(&dir);
    let p = expect(&r, &dir, &format!("commitlog/{:020}", 2 * SEGMENT), 0, "damaged", Severity::Corruption, false);
    assert!(p.kind.to_string().contains("misplaced"), "{p}");
    assert!(r.problems.iter().any(|p| p.kind.code() == "damaged-record"), "{}", listing(&r));
}

#[test]
fn a_torn_tail_is_not_corruption() {
    let (_t, dir) = copy();
    let last = {
        let mut last = (0, 0);
        StoreView::open(&dir)
            .unwrap()
            .messages("events", None, 0, 0, |m| {
                last = (m.physical_offset().0, u64::from(m.store_size()));
                Ok(true)
            })
            .unwrap();
        last
    };
    let all = CommitLog::verify(&dir, &StdStorage).unwrap();
    assert_eq!(last.0 + last.1, all.end.get(), "the delivered copies are the log's last records");
    // A crashed store that had flushed up to the last record.
    edit(&dir.join("checkpoint"), |b| {
        b[10..12].copy_from_slice(&1u16.to_be_bytes());
        b[24..32].copy_from_slice(&last.0.to_be_bytes());
        b[32..40].copy_from_slice(&u64::MAX.to_be_bytes());
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_be_bytes());
    });
    let base = last.0 / SEGMENT * SEGMENT;
    edit(&segment(&dir, base), |b| b[(last.0 - base + last.1 - 3) as usize] ^= 1);
    let r = verify(&dir);
    expect(&r, &dir, &format!("commitlog/{base:020}"), last.0 - base, "damaged", Severity::TornTail, false);
    // Its unit and index entries point past the new end: stale.
    let stale = r.problems.iter().any(|p| p.kind.code() == "past-log-end" && p.severity == Severity::Stale);
    assert!(stale, "{}", listing(&r));
    assert!(r.is_healthy(), "{}", listing(&r));
}

/// Beside a live store, a record past the flushed offset whose checksum is
/// not in yet while verify reads it, and which a valid record in a later
/// segment follows, is read again: the writer finishing it is no damage.
/// One that stays bad is reported, as mid-log damage.
#[test]
fn a_record_being_written_beside_verify_is_read_again_not_reported() {
    let (_t, dir) = copy();
    // The first record of the second segment; later segments hold more.
    let (first, _) = record(&dir, "orders", 0);
    let mut target = None;
    StoreView::open(&dir)
        .unwrap()
        .messages("orders", None, 0, 0, |m| {
            if target.is_none() && m.physical_offset().0 >= SEGMENT {
                target = Some(m.physical_offset().0);
            }
            Ok(true)
        })
        .unwrap();
    let at = target.unwrap();
    assert!(at > first);
    // A running store that had flushed up to just before it.
    edit(&dir.join("checkpoint"), |b| {
        b[10..12].copy_from_slice(&1u16.to_be_bytes());
        b[24..32].copy_from_slice(&at.to_be_bytes());
        b[32..40].copy_from_slice(&u64::MAX.to_be_bytes());
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_be_bytes());
    });
    let base = at / SEGMENT * SEGMENT;
    let storage = |hidden: u32| ReadOnly {
        in_flight: Some(InFlight {
            file: segment(&dir, base),
            crc_at: at - base + 8,
            hidden: Arc::new(AtomicU32::new(hidden)),
        }),
    };
    let r = verify_with(&dir, Arc::new(storage(1))).unwrap();
    assert!(r.problems.is_empty(), "{}", listing(&r));
    // Still bad after the walk's retries: damage, not a torn tail, since
    // records follow in later segments.
    let r = verify_with(&dir, Arc::new(storage(u32::MAX))).unwrap();
    expect(&r, &dir, &format!("commitlog/{base:020}"), at - base, "damaged", Severity::Corruption, false);
}

#[test]
fn consume_queue_units_are_checked_against_their_records() {
    // A tag hash that differs from the record's tag.
    let (_t, dir) = copy();
    let file = cq(&dir, "orders", 0, 0);
    edit(&file, |b| b[2 * 20 + 19] ^= 1);
    let r = verify(&dir);
    let p = expect(&r, &dir, "consumequeue/orders/0/00000000000000000000", 40, "mismatch", Severity::Corruption, true);
    assert!(p.kind.to_string().starts_with("tag hash"), "{p}");
    assert_eq!(r.counts.corruption, 1, "{}", listing(&r));

    // A unit leading to a record of another queue.
    let (_t, dir) = copy();
    let other = std::fs::read(cq(&dir, "orders", 1, 0)).unwrap();
    edit(&cq(&dir, "orders", 0, 0), |b| b[20..32].copy_from_slice(&other[20..32]));
    let r = verify(&dir);
    let p = expect(&r, &dir, "consumequeue/orders/0/00000000000000000000", 20, "mismatch", Severity::Corruption, true);
    assert!(p.kind.to_string().starts_with("queue id 0"), "{p}");

    // A unit pointing into the middle of a record.
    let (_t, dir) = copy();
    edit(&cq(&dir, "events", 1, 8), |b| {
        let phys = be64(b, 3 * 20) + 5;
        b[60..68].copy_from_slice(&phys.to_be_bytes());
    });
    let r = verify(&dir);
    expect(&r, &dir, "consumequeue/events/1/00000000000000000008", 60, "no-record", Severity::Corruption, true);
}

#[test]
fn consume_queue_structure_is_checked() {
    // A zeroed unit: queue offsets no longer contiguous.
    let (_t, dir) = copy();
    edit(&cq(&dir, "orders", 1, 16), |b| b[60..80].fill(0));
    let r = verify(&dir);
    let p = expect(&r, &dir, "consumequeue/orders/1/00000000000000000016", 60, "hole", Severity::Corruption, true);
    assert!(p.kind.to_string().contains("queue offset 19"), "{p}");

    // A missing file between two others.
    let (_t, dir) = copy();
    std::fs::remove_file(cq(&dir, "orders", 1, 24)).unwrap();
    let r = verify(&dir);
    expect(&r, &dir, "consumequeue/orders/1/00000000000000000024", 0, "missing-file", Severity::Corruption, true);

    // A file of the wrong length.
    let (_t, dir) = copy();
    edit(&cq(&dir, "events", 0, 0), |b| b.extend_from_slice(&[7; 5]));
    let r = verify(&dir);
    expect(&r, &dir, "consumequeue/events/0/00000000000000000000", 165, "damaged", Severity::Corruption, true);

    // Units dropped from a queue's tail: it covers less than the dispatch
    // checkpoint recorded.
    let (_t, dir) = copy();
    let view = StoreView::open(&dir).unwrap();
    let (_, _, _, max) = view.queue_ranges().unwrap().into_iter().find(|r| r.0 == "orders" && r.1 == 0).unwrap();
    let first = (max - 1) / UNITS_PER_FILE * UNITS_PER_FILE;
    edit(&cq(&dir, "orders", 0, first), |b| {
        let at = ((max - 1 - first) * 20) as usize;
        b[at..at + 20].fill(0);
    });
    let r = verify(&dir);
    let p = expect(&r, &dir, "consumequeue/orders/0", 0, "queue-shrank", Severity::Corruption, true);
    assert!(p.kind.to_string().contains(&format!("[0, {})", max - 1)), "{p}");
}

#[test]
fn units_past_the_log_end_are_stale_not_corruption() {
    let (_t, dir) = copy();
    let view = StoreView::open(&dir).unwrap();
    let (_, _, _, max) = view.queue_ranges().unwrap().into_iter().find(|r| r.0 == "events" && r.1 == 1).unwrap();
    // Room in the last file: append two units pointing past the end.
    assert_ne!(max % UNITS_PER_FILE, UNITS_PER_FILE - 1);
    let first = max / UNITS_PER_FILE * UNITS_PER_FILE;
    let end = CommitLog::verify(&dir, &StdStorage).unwrap().end.get();
    edit(&cq(&dir, "events", 1, first), |b| {
        for k in 0..2u64 {
            let at = ((max + k - first) * 20) as usize;
            b[at..at + 8].copy_from_slice(&(end + 1000 * k).to_be_bytes());
            b[at + 8..at + 12].copy_from_slice(&200u32.to_be_bytes());
        }
    });
    let r = verify(&dir);
    let rel = format!("consumequeue/events/1/{first:020}");
    let p = expect(&r, &dir, &rel, (max - first) * 20, "past-log-end", Severity::Stale, true);
    assert!(p.kind.to_string().starts_with("2 pointing"), "{p}");
    assert!(r.is_healthy(), "{}", listing(&r));
    assert_eq!(r.counts.stale, 1);
}

#[test]
fn index_files_are_checked() {
    // An entry whose store time differs from its record's (CRC redone).
    let (_t, dir) = copy();
    let files = index_files(&dir);
    let at = ENTRIES_AT + 3 * 32;
    edit(&files[1], |b| {
        let ts = be64(b, at + 16) + 1;
        b[at + 16..at + 24].copy_from_slice(&ts.to_be_bytes());
        let crc = crc32fast::hash(&b[at..at + 28]);
        b[at + 28..at + 32].copy_from_slice(&crc.to_be_bytes());
    });
    let rel = format!("index/{}", files[1].file_name().unwrap().to_str().unwrap());
    let r = verify(&dir);
    let p = expect(&r, &dir, &rel, at as u64, "mismatch", Severity::Corruption, true);
    assert!(p.kind.to_string().starts_with("store timestamp"), "{p}");
    assert_eq!(r.counts.corruption, 1, "{}", listing(&r));

    // An entry leading to the record of the entry before it (an earlier
    // record, with its time, so the order holds and only the key differs).
    let (_t, dir) = copy();
    let files = index_files(&dir);
    let mut at = 0;
    edit(&files[0], |b| {
        let phy = |b: &[u8], i: usize| be64(b, ENTRIES_AT + i * 32 + 8);
        let i = (1..64).find(|&i| phy(b, i - 1) < phy(b, i)).unwrap();
        at = ENTRIES_AT + i * 32;
        let prev = b[at - 32 + 8..at - 32 + 24].to_vec();
        b[at + 8..at + 24].copy_from_slice(&prev);
        let crc = crc32fast::hash(&b[at..at + 28]);
        b[at + 28..at + 32].copy_from_slice(&crc.to_be_bytes());
    });
    let rel = format!("index/{}", files[0].file_name().unwrap().to_str().unwrap());
    let r = verify(&dir);
    let p = expect(&r, &dir, &rel, at as u64, "mismatch", Severity::Corruption, true);
    assert!(p.kind.to_string().starts_with("key"), "{p}");

    // A damaged header, a damaged slot of a sealed file, a bit flip in an
    // entry of a sealed file.
    let (_t, dir) = copy();
    let files = index_files(&dir);
    edit(&files[0], |b| b[20] ^= 1);
    edit(&files[1], |b| b[64 + 4 * 5 + 3] ^= 1);
    edit(&files[2], |b| b[ENTRIES_AT + 7 * 32 + 9] ^= 1);
    let r = verify(&dir);
    let name = |i: usize| format!("index/{}", files[i].file_name().unwrap().to_str().unwrap());
    expect(&r, &dir, &name(0), 60, "damaged", Severity::Corruption, true);
    let p = expect(&r, &dir, &name(1), 64 + 4 * 5, "damaged", Severity::Corruption, true);
    assert!(p.kind.to_string().contains("index slot"), "{p}");
    let p = expect(&r, &dir, &name(2), (ENTRIES_AT + 7 * 32) as u64, "damaged", Severity::Corruption, true);
    assert!(p.kind.to_string().contains("index entry"), "{p}");
}

/// Only full index files are sealed: a valid seal on the newest file, which
/// has room left, is corruption (recovery refuses it).
#[test]
fn a_seal_on_an_index_file_with_room_left_is_corruption() {
    let (_t, dir) = copy();
    let newest = index_files(&dir).pop().unwrap();
    edit(&newest, |b| {
        let count = (0..INDEX.max_entries as usize).take_while(|i| be64(b, ENTRIES_AT + i * 32 + 8) != 0).count();
        assert!(count > 0 && count < INDEX.max_entries as usize);
        let last = be64(b, ENTRIES_AT + (count - 1) * 32 + 8);
        let seal_at = b.len() - 64;
        let seal = &mut b[seal_at..];
        seal[..8].copy_from_slice(b"\x8DMQSEAL\n");
        seal[8..12].copy_from_slice(&(count as u32).to_be_bytes());
        seal[12..20].copy_from_slice(&last.to_be_bytes());
        let crc = crc32fast::hash(&seal[..60]);
        seal[60..64].copy_from_slice(&crc.to_be_bytes());
    });
    let r = verify(&dir);
    let rel = format!("index/{}", newest.file_name().unwrap().to_str().unwrap());
    let seal_at = std::fs::metadata(&newest).unwrap().len() - 64;
    let p = expect(&r, &dir, &rel, seal_at, "damaged", Severity::Corruption, true);
    assert!(p.kind.to_string().contains("seal disagrees"), "{p}");
}

#[test]
fn every_small_file_must_decode() {
    // (file, damaged derived data?) — the CRC of an envelope is at 16, of
    // the checkpoint at 60.
    let cases = [
        ("checkpoint", 60, true),
        ("config/store", 16, false),
        ("config/topics", 16, false),
        ("config/consumer_offsets", 16, false),
        ("config/delay", 16, true),
        ("config/dispatch", 16, true),
    ];
    for (rel, at, derived) in cases {
        let (_t, dir) = copy();
        edit(&dir.join(rel), |b| {
            let last = b.len() - 1;
            b[last] ^= 0x40;
        });
        let r = verify(&dir);
        let p = expect(&r, &dir, rel, at, "damaged", Severity::Corruption, derived);
        assert!(p.kind.to_string().contains("crc mismatch"), "{rel}: {p}");
        assert_eq!(r.counts.corruption, 1, "{rel}:\n{}", listing(&r));
    }
}

#[test]
fn stored_positions_must_lie_within_their_queues() {
    // A committed offset beyond its queue's end (FORMAT.md 11.3 layout).
    let (_t, dir) = copy();
    let mut payload = 1u32.to_be_bytes().to_vec();
    for (s, len) in [("g", 1u16), ("orders", 6)] {
        payload.extend_from_slice(&len.to_be_bytes());
        payload.extend_from_slice(s.as_bytes());
    }
    payload.extend_from_slice(&2u32.to_be_bytes());
    payload.extend_from_slice(&1_000_000u64.to_be_bytes());
    // Without a generation trailer (FORMAT.md 11.10) and no previous
    // generation beside it, so this one is used.
    std::fs::remove_file(dir.join("config/consumer_offsets.prev")).unwrap_or(());
    std::fs::write(dir.join("config/consumer_offsets"), envelope(b"\x8DMQO\r\n\x1A\n", &payload)).unwrap();
    let r = verify(&dir);
    // Header 20, count 4, then 2 + 1 + 2 + 6 + 4 bytes before the offset.
    let p = expect(&r, &dir, "config/consumer_offsets", 39, "beyond-queue", Severity::Corruption, false);
    assert!(p.kind.to_string().contains("group g on orders/2"), "{p}");

    // Delay progress beyond its schedule queue (FORMAT.md 11.9 layout).
    let (_t, dir) = copy();
    let mut payload = 2u32.to_be_bytes().to_vec();
    payload.extend_from_slice(&4u64.to_be_bytes());
    payload.extend_from_slice(&50u64.to_be_bytes());
    std::fs::write(dir.join("config/delay"), envelope(b"\x8DMQY\r\n\x1A\n", &payload)).unwrap();
    let r = verify(&dir);
    let p = expect(&r, &dir, "config/delay", 32, "beyond-queue", Severity::Corruption, true);
    assert!(p.kind.to_string().contains("delay progress 50 of level 2"), "{p}");
    assert_eq!(r.counts.corruption, 1, "{}", listing(&r));
}

#[test]
fn the_log_must_reach_the_checkpoint() {
    // An older, shorter copy of the last segment put back.
    let (_t, dir) = copy();
    let end = CommitLog::verify(&dir, &StdStorage).unwrap().end.get();
    let base = end / SEGMENT * SEGMENT;
    let (last_at, _) = {
        let mut last = (0, 0);
        StoreView::open(&dir)
            .unwrap()
            .messages("events", None, 0, 0, |m| {
                if m.physical_offset().0 >= base {
                    last = (m.physical_offset().0, 0);
                }
                Ok(true)
            })
            .unwrap();
        last
    };
    edit(&segment(&dir, base), |b| b[(last_at - base) as usize..].fill(0));
    let r = verify(&dir);
    let p = expect(&r, &dir, "checkpoint", 24, "log-behind-checkpoint", Severity::Corruption, false);
    assert!(p.kind.to_string().contains(&format!("log ends at {last_at}")), "{p}");
}

#[test]
fn verify_runs_beside_a_live_writer_without_false_alarms() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("live");
    let store = Store::open(&dir, opts().offset_persist_interval(Duration::from_millis(20))).unwrap();
    store.create_topic(TopicConfig::new("T", 2)).unwrap();
    // Sends 8,000 messages (rolling segments, queue files and index
    // files: bounded, as the store keeps every tiny file open) and commits.
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..8000u64 {
                let m = Message::new("T", common::body_for(i, 200)).with_tags("A").with_key(format!("k{i}"));
                store.send(m).unwrap();
                if i % 50 == 0 {
                    let q = (i % 2) as u32;
                    let upto = store.max_offset("T", q).unwrap();
                    store.commit_offset("g", "T", q, upto / 2).unwrap();
                }
            }
        })
    };
    let mut runs = 0;
    let failure = loop {
        let r = verify_with(&dir, Arc::new(ReadOnly::default())).unwrap();
        runs += 1;
        if !(r.is_healthy() && r.counts.stale == 0) {
            break Some(format!("run {runs}:\n{}", listing(&r)));
        }
        if writer.is_finished() && runs >= 3 {
            break None;
        }
    };
    writer.join().unwrap();
    eprintln!("{runs} verify runs beside the writer");
    assert!(failure.is_none(), "{}", failure.unwrap_or_default());
    // The store still holds its lock and works.
    assert!(matches!(Store::open(&dir, opts()), Err(mqstore::Error::Locked { .. })));
    store.close().unwrap();
    let r = verify(&dir);
    assert!(r.problems.is_empty(), "{}", listing(&r));
    assert_eq!(r.units, 8000);
}

/// Segments removed by retention leave units and index entries below the
/// log's first record: no problem while the first segment is at the
/// recorded floor; a missing segment above it is corruption; a segment
/// left below it (an interrupted round) is stale.
#[test]
fn retention_is_told_from_lost_segments() {
    let (_t, dir) = copy();
    let before = snapshot(&dir);
    let retain = mqstore::store::RetentionOptions::default().reserved_time(Duration::from_secs(1));
    let store = Store::open(&dir, opts().retention(retain)).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let report = store.run_retention(mqstore::store::Retention::Forced).unwrap();
    store.close().unwrap();
    assert!(!report.removed.is_empty(), "{report:?}");
    let r = verify(&dir);
    assert!(r.problems.is_empty(), "{}", listing(&r));
    assert!(r.expired > 0 && r.log_start > SEGMENT, "{r:?}");
    let floor = r.log_start - 64;

    // The first remaining segment lost too.
    let t2 = tempfile::tempdir().unwrap();
    let copy2 = t2.path().join("store");
    common::copy_dir(&dir, &copy2);
    std::fs::remove_file(segment(&copy2, floor)).unwrap();
    let r = verify(&copy2);
    expect(&r, &copy2, "commitlog", floor, "damaged", Severity::Corruption, false);
    assert!(r.problems.iter().any(|p| p.kind.code() == "damaged-record"), "{}", listing(&r));

    // The newest removed segment still there: a round interrupted while
    // unlinking, oldest first.
    let left = segment(&dir, floor - SEGMENT);
    std::fs::write(&left, &before[&left]).unwrap();
    let r = verify(&dir);
    let rel = format!("commitlog/{:020}", floor - SEGMENT);
    let p = expect(&r, &dir, &rel, 0, "below-floor", Severity::Stale, false);
    assert!(p.kind.to_string().contains(&floor.to_string()), "{p}");
    assert!(r.is_healthy(), "{}", listing(&r));
}

#[test]
fn a_directory_without_a_commit_log_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    assert!(matches!(verify_with(&missing, Arc::new(ReadOnly::default())), Err(mqstore::Error::InvalidArgument(_))));
    assert!(!missing.exists());
}

/// A lost index file in the middle is not something open notices (files
/// are named by their first offset, so a gap looks like records without
/// keys): its keys stay unfindable. Verify reports them as primary damage
/// (open does not rebuild them); removing the index directory makes open
/// index the whole log again.
#[test]
fn a_lost_index_file_leaves_records_unindexed_until_the_index_is_rebuilt() {
    let (_t, dir) = copy();
    let files = index_files(&dir);
    let b = std::fs::read(&files[1]).unwrap();
    let phy = be64(&b, ENTRIES_AT + 8);
    std::fs::remove_file(&files[1]).unwrap();
    let r = verify(&dir);
    let base = phy / SEGMENT * SEGMENT;
    let rel = format!("commitlog/{base:020}");
    let p = expect(&r, &dir, &rel, phy - base, "unindexed", Severity::Corruption, false).clone();
    assert_eq!(r.counts.corruption, 1, "{}", listing(&r));
    let mqstore::store::verify::ProblemKind::Unindexed { key, .. } = &p.kind else { panic!("{p}") };

    // The record holding the missing key, and what the store answers.
    let mut topic = None;
    for t in ["orders", "events"] {
        StoreView::open(&dir)
            .unwrap()
            .messages(t, None, 0, 0, |m| {
                if m.physical_offset().0 == phy {
                    topic = Some(t);
                }
                Ok(topic.is_none())
            })
            .unwrap();
    }
    let topic = topic.unwrap();
    let store = Store::open(&dir, opts()).unwrap();
    assert!(store.query_by_key(topic, key, 0, u64::MAX, 10).unwrap().is_empty(), "open re-indexed {key}");
    store.close().unwrap();
    expect(&verify(&dir), &dir, &rel, phy - base, "unindexed", Severity::Corruption, false);

    std::fs::remove_dir_all(dir.join("index")).unwrap();
    let store = Store::open(&dir, opts()).unwrap();
    assert_eq!(store.query_by_key(topic, key, 0, u64::MAX, 10).unwrap().len(), 1);
    store.close().unwrap();
    let r = verify(&dir);
    assert!(r.problems.is_empty(), "{}", listing(&r));
}

// ------------------------------------------------------------ damage matrix

/// The file kinds of the matrix: (name, files of that kind in the fixture).
fn file_kinds(dir: &Path) -> Vec<(&'static str, Vec<PathBuf>)> {
    let all: Vec<PathBuf> = snapshot(dir).into_keys().map(|p| p.strip_prefix(dir).unwrap().to_path_buf()).collect();
    let segs: Vec<PathBuf> = all.iter().filter(|p| p.starts_with(COMMITLOG_DIR)).cloned().collect();
    let idx: Vec<PathBuf> = all.iter().filter(|p| p.starts_with("index")).cloned().collect();
    let (last_seg, last_idx) = (segs.len() - 1, idx.len() - 1);
    let one = |name: &str| vec![PathBuf::from(name)];
    vec![
        ("segment (sealed)", segs[..last_seg].to_vec()),
        ("segment (last)", segs[last_seg..].to_vec()),
        ("consume queue", all.iter().filter(|p| p.starts_with("consumequeue")).cloned().collect()),
        ("index (sealed)", idx[..last_idx].to_vec()),
        ("index (newest)", idx[last_idx..].to_vec()),
        ("checkpoint", one("checkpoint")),
        ("config/store", one("config/store")),
        ("config/topics", one("config/topics")),
        ("config/consumer_offsets", one("config/consumer_offsets")),
        ("config/delay", one("config/delay")),
        ("config/dispatch", one("config/dispatch")),
    ]
}

const DAMAGES: [&str; 9] = [
    "bit flip",
    "header flip",
    "zero page",
    "random page",
    "truncate",
    "delete",
    "empty",
    "append garbage",
    "older copy",
];

/// Applies damage `d` to `path`; false when it left the bytes as they were.
fn damage(d: &str, path: &Path, older: &Path, rng: &mut common::Rng) -> bool {
    let before = std::fs::read(path).unwrap();
    let mut b = before.clone();
    let len = b.len().max(1) as u64;
    match d {
        "bit flip" => {
            let at = rng.below(len) as usize;
            b[at] ^= 1 << rng.below(8);
        }
        "header flip" => {
            let at = rng.below(len.min(64)) as usize;
            b[at] ^= 1 << rng.below(8);
        }
        "zero page" | "random page" => {
            let at = (rng.below(len) as usize) & !4095;
            let end = (at + 4096).min(b.len());
            for x in &mut b[at..end] {
                *x = if d == "zero page" { 0 } else { rng.next() as u8 };
            }
        }
        "truncate" => b.truncate(rng.below(len) as usize),
        "delete" => {
            std::fs::remove_file(path).unwrap();
            return true;
        }
        "empty" => b.clear(),
        "append garbage" => b.extend((0..1 + rng.below(1024)).map(|_| rng.next() as u8)),
        _ => match std::fs::read(older) {
            Ok(o) => b = o,
            Err(_) => return false,
        },
    }
    std::fs::write(path, &b).unwrap();
    b != before
}

/// Every damage kind on every file kind, `MQSTORE_VERIFY_MATRIX_ROUNDS`
/// random files each (default 1; the seed is printed, `MQSTORE_SEED`
/// replays). Verify must never fail or change a byte; damage to a file
/// protected whole by a CRC (checkpoint, config) must always be reported
/// at that file, unless it is an older, valid copy. Prints what was found
/// per cell (`--nocapture`).
#[test]
fn damage_matrix() {
    let rounds: u64 = std::env::var("MQSTORE_VERIFY_MATRIX_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let seed = common::seed();
    eprintln!("damage matrix: seed {seed}, {rounds} round(s) per cell");
    let mut rng = common::Rng(seed);
    let f = fixture();
    let mut table = Vec::new();
    for (kind, files) in file_kinds(&f.dir) {
        for d in DAMAGES {
            // (runs, changed, reported, at the file, corruption, torn, stale)
            let mut cell = [0u64; 7];
            for _ in 0..rounds {
                let (_t, dir) = copy();
                let rel = files[rng.below(files.len() as u64) as usize].clone();
                let changed = damage(d, &dir.join(&rel), &f.older.join(&rel), &mut rng);
                let r = verify(&dir);
                let at_file = r.problems.iter().any(|p| p.path == dir.join(&rel));
                cell[0] += 1;
                cell[1] += u64::from(changed);
                cell[2] += u64::from(r.problems_total() > 0);
                cell[3] += u64::from(at_file);
                cell[4] += u64::from(r.counts.corruption > 0);
                cell[5] += u64::from(r.counts.torn_tail > 0);
                cell[6] += u64::from(r.counts.stale > 0);
                // An older copy is a valid file (only less recent), and
                // a store may have no committed offsets at all.
                let legit = d == "older copy" || (d == "delete" && kind == "config/consumer_offsets");
                if changed && !legit && (kind == "checkpoint" || kind.starts_with("config/")) {
                    assert!(at_file, "{d} on {}: not reported there:\n{}", rel.display(), listing(&r));
                }
                if changed && r.problems_total() == 0 {
                    eprintln!("  unreported: {d} on {}", rel.display());
                }
            }
            table.push(format!(
                "{kind:24} {d:15} runs {} changed {} reported {} at-file {} corrupt {} torn {} stale {}",
                cell[0], cell[1], cell[2], cell[3], cell[4], cell[5], cell[6]
            ));
        }
    }
    eprintln!("{}", table.join("\n"));
}
