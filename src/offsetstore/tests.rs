use super::codec::{self, Groups, MAX_OFFSETS_PAYLOAD, OFFSETS_FILE, OFFSETS_MAGIC, OFFSETS_VERSION};
use super::*;
use crate::error::{CorruptionKind, Error};
use crate::storage::{FaultKind, FaultPlan, FaultyStorage, StdStorage};

fn open(root: &Path) -> Result<OffsetTable> {
    OffsetTable::open(Arc::new(StdStorage), root)
}

fn e(group: &str, topic: &str, queue_id: u32, offset: u64) -> OffsetEntry {
    OffsetEntry { group: group.into(), topic: topic.into(), queue_id, offset }
}

#[test]
fn constants_are_pinned() {
    // FORMAT.md "Consumer offsets" lists these; change both together.
    assert_eq!(OFFSETS_MAGIC, *b"\x8DMQO\r\n\x1A\n");
    assert_eq!(OFFSETS_VERSION, 1);
    assert_eq!(OFFSETS_FILE, "consumer_offsets");
    assert_eq!(MAX_OFFSETS_PAYLOAD, 256 * 1024 * 1024);
}

#[test]
fn encoding_is_pinned() {
    let mut g = Groups::new();
    g.entry("g".into()).or_default().entry("t".into()).or_default().insert(3, 0x0102);
    assert_eq!(codec::encode(&g).unwrap(), [0, 0, 0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 1, 2]);
}

#[test]
fn commit_is_monotonic_and_reset_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let t = open(tmp.path()).unwrap();
    assert_eq!(t.get("g", "t", 0), None);
    assert!(!t.is_dirty());
    t.commit("g", "t", 0, 10);
    assert!(t.is_dirty());
    t.commit("g", "t", 0, 5);
    assert_eq!(t.get("g", "t", 0), Some(10));
    t.commit("g", "t", 0, 12);
    assert_eq!(t.get("g", "t", 0), Some(12));
    t.reset("g", "t", 0, 3);
    assert_eq!(t.get("g", "t", 0), Some(3));
    t.reset("g", "t", 1, 0);
    assert_eq!(t.get("g", "t", 1), Some(0));
    assert_eq!(t.get("g", "other", 0), None);
    assert_eq!(t.get("other", "t", 0), None);
}

#[test]
fn invalid_names_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let t = open(tmp.path()).unwrap();
    t.commit("", "t", 0, 1);
    t.commit("g", "a.b", 0, 1);
    t.reset(&"g".repeat(256), "t", 0, 1);
    t.commit("g", &"t".repeat(128), 0, 1);
    assert!(t.entries().is_empty());
    assert!(!t.is_dirty());
}

#[test]
fn unchanged_values_do_not_dirty() {
    let tmp = tempfile::tempdir().unwrap();
    let t = open(tmp.path()).unwrap();
    t.commit("g", "t", 0, 7);
    t.persist().unwrap();
    t.commit("g", "t", 0, 7);
    t.commit("g", "t", 0, 6);
    t.reset("g", "t", 0, 7);
    t.remove_topic("absent");
    assert!(!t.is_dirty());
}

#[test]
fn persist_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let t = open(tmp.path()).unwrap();
    t.persist().unwrap();
    assert!(!tmp.path().join("config/consumer_offsets").exists(), "clean table writes nothing");
    t.commit("g2", "t", 1, 100);
    t.commit("g1", "t", 0, u64::MAX);
    t.commit("g1", "%RETRY%g1", 0, 4);
    t.commit("g1", "t", 2, 0);
    t.persist().unwrap();
    assert!(!t.is_dirty());
    let expect = vec![e("g1", "%RETRY%g1", 0, 4), e("g1", "t", 0, u64::MAX), e("g1", "t", 2, 0), e("g2", "t", 1, 100)];
    assert_eq!(t.entries(), expect);
    // Unpersisted commits are lost by a reopen (at-least-once delivery).
    t.commit("g2", "t", 1, 200);
    drop(t);
    let t = open(tmp.path()).unwrap();
    assert_eq!(t.entries(), expect);
    assert!(!t.is_dirty());
}

#[test]
fn remove_topic_drops_every_group() {
    let tmp = tempfile::tempdir().unwrap();
    let t = open(tmp.path()).unwrap();
    t.commit("g1", "t", 0, 1);
    t.commit("g1", "u", 0, 1);
    t.commit("g2", "t", 3, 1);
    t.persist().unwrap();
    t.remove_topic("t");
    assert!(t.is_dirty());
    assert_eq!(t.entries(), vec![e("g1", "u", 0, 1)]);
    t.persist().unwrap();
    assert_eq!(open(tmp.path()).unwrap().entries(), vec![e("g1", "u", 0, 1)]);
}

#[test]
fn clamp_moves_into_bounds_and_drops_missing_queues() {
    let tmp = tempfile::tempdir().unwrap();
    let t = open(tmp.path()).unwrap();
    t.commit("g1", "t", 0, 5); // below min
    t.commit("g1", "t", 1, 50); // above max
    t.commit("g1", "t", 2, 15); // inside
    t.commit("g2", "t", 0, 30); // inside, shares queue (t, 0)
    t.commit("g2", "gone", 0, 1); // topic vanished
    t.commit("g2", "odd", 0, 9); // nonsense bounds
    t.persist().unwrap();
    let asked = Mutex::new(Vec::new());
    t.clamp(|topic, q| {
        asked.lock().push((topic.to_owned(), q));
        match topic {
            "t" if q < 2 => Some((10, 40)),
            "t" => Some((0, 100)),
            "odd" => Some((5, 1)),
            _ => None,
        }
    });
    assert_eq!(asked.lock().len(), 5, "once per distinct queue: {:?}", asked.lock());
    assert_eq!(
        t.entries(),
        vec![e("g1", "t", 0, 10), e("g1", "t", 1, 40), e("g1", "t", 2, 15), e("g2", "odd", 0, 9), e("g2", "t", 0, 30)]
    );
    assert!(t.is_dirty());
    t.persist().unwrap();
    t.clamp(|_, _| Some((0, u64::MAX)));
    assert!(!t.is_dirty(), "nothing moved");
}

#[test]
fn clamp_callback_may_use_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let t = open(tmp.path()).unwrap();
    t.commit("g", "t", 0, 5);
    // The lock is not held while bounds run, so this does not deadlock.
    t.clamp(|topic, q| t.get("g", topic, q).map(|o| (o + 1, o + 10)));
    assert_eq!(t.get("g", "t", 0), Some(6));
}

#[test]
fn failed_persist_stays_dirty_and_keeps_the_old_file() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let t = OffsetTable::open(Arc::new(FaultyStorage::new(Arc::new(StdStorage), plan.clone())), tmp.path()).unwrap();
    t.commit("g", "t", 0, 1);
    t.persist().unwrap();
    t.commit("g", "t", 0, 2);
    for op in ["open", "write_at", "sync_data", "rename"] {
        plan.fail_op(op, FaultKind::Io);
        assert!(t.persist().is_err(), "{op}");
        plan.heal();
        assert!(t.is_dirty(), "{op}");
        assert_eq!(t.get("g", "t", 0), Some(2));
        assert_eq!(open(tmp.path()).unwrap().get("g", "t", 0), Some(1), "{op}");
    }
    plan.fail_syncs(true);
    assert!(t.persist().unwrap_err().is_failed_sync());
    plan.heal();
    assert!(t.is_dirty());
    t.persist().unwrap();
    assert!(!t.is_dirty());
    assert_eq!(open(tmp.path()).unwrap().get("g", "t", 0), Some(2));
}

#[test]
fn commits_during_persist_stay_dirty() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Arc::new(open(tmp.path()).unwrap());
    let writer = {
        let t = t.clone();
        std::thread::spawn(move || {
            for i in 0..2000u64 {
                t.commit("g", "t", (i % 4) as u32, i);
            }
        })
    };
    while !writer.is_finished() {
        t.persist().unwrap();
    }
    writer.join().unwrap();
    t.persist().unwrap();
    assert!(!t.is_dirty());
    assert_eq!(open(tmp.path()).unwrap().entries(), t.entries());
}

#[test]
fn every_truncation_and_bit_flip_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let t = open(tmp.path()).unwrap();
    t.commit("g1", "t", 0, 1);
    t.commit("g2", "%DLQ%g2", 7, 1 << 40);
    t.persist().unwrap();
    let path = tmp.path().join("config/consumer_offsets");
    let full = std::fs::read(&path).unwrap();
    for len in 0..full.len() {
        std::fs::write(&path, &full[..len]).unwrap();
        assert!(matches!(open(tmp.path()), Err(Error::Corruption { .. })), "length {len}");
    }
    for bit in 0..full.len() * 8 {
        let mut c = full.clone();
        c[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &c).unwrap();
        assert!(matches!(open(tmp.path()), Err(Error::Corruption { .. })), "bit {bit}");
    }
}

fn entry(group: &str, topic: &str, queue_id: u32, offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    metafile::put_str16(&mut out, group).unwrap();
    metafile::put_str16(&mut out, topic).unwrap();
    out.extend_from_slice(&queue_id.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out
}

fn payload(count: u32, entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = count.to_be_bytes().to_vec();
    for e in entries {
        out.extend_from_slice(e);
    }
    out
}

fn decode_err(payload: &[u8]) -> (u64, CorruptionKind) {
    match codec::decode(Path::new("/o"), OFFSETS_VERSION, payload) {
        Err(Error::Corruption { offset, kind, .. }) => (offset, kind),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn nonsense_payloads_are_refused() {
    let field = |field| CorruptionKind::InvalidField { field };
    // File offsets: the payload starts after the 20-byte envelope header.
    assert_eq!(decode_err(&payload(u32::MAX, &[])), (20, CorruptionKind::BadLength { length: u64::from(u32::MAX) }));
    assert_eq!(decode_err(&payload(2, &[entry("g", "t", 0, 0)])).1, CorruptionKind::BadLength { length: 2 });
    assert_eq!(decode_err(&payload(0, &[entry("g", "t", 0, 0)])).1, CorruptionKind::BadLength { length: 22 });
    assert_eq!(decode_err(&payload(1, &[entry("", "t", 0, 0)])).1, CorruptionKind::BadLength { length: 1 });
    assert_eq!(decode_err(&payload(1, &[entry("", "t", 0, 0), vec![0]])), (24, field("group name")));
    assert_eq!(decode_err(&payload(1, &[entry("g g", "t", 0, 0)])), (24, field("group name")));
    assert_eq!(decode_err(&payload(1, &[entry("g", "t/", 0, 0)])), (27, field("topic name")));
    let dup = payload(2, &[entry("g", "t", 0, 0), entry("g", "t", 0, 1)]);
    assert_eq!(decode_err(&dup), (42, field("entry order")));
    let backwards = payload(2, &[entry("g", "t", 1, 0), entry("g", "t", 0, 1)]);
    assert_eq!(decode_err(&backwards), (42, field("entry order")));
    let e = codec::decode(Path::new("/o"), 9, &payload(0, &[])).unwrap_err();
    assert!(matches!(e, Error::Corruption { offset: 8, kind: CorruptionKind::UnsupportedVersion { found: 9 }, .. }));
    let ok = payload(2, &[entry("g", "t", 0, 5), entry("g", "t", 1, 6)]);
    assert_eq!(codec::decode(Path::new("/o"), OFFSETS_VERSION, &ok).unwrap()["g"]["t"].len(), 2);
}
