//! [`TopicTable`]: the topic configurations, kept in memory and persisted
//! as one metadata file, `<root>/config/topics`.
//!
//! Payload (version 1, big-endian): `count u32`, then per topic in strictly
//! ascending name order: `name length u16`, `name` (UTF-8), `read queues
//! u32`, `write queues u32`, `permission u8` (RocketMQ bits), `since u64`
//! (the commit-log offset at which this incarnation of the topic began:
//! records of the topic below it belong to an earlier, deleted topic of the
//! same name and are not dispatched).

use super::write_queues::WriteQueues;
use super::{validate_topic_name, Permission, TopicConfig};
use crate::error::{CorruptionKind, Error, Result};
use crate::metafile::generations::{self, GenFile, MetadataFallback};
use crate::metafile::{self, PayloadReader};
use crate::storage::Storage;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// File name of the topic table inside `<root>/config`.
pub(crate) const TOPICS_FILE: &str = "topics";
/// Topic table magic: a high byte, "MQT", CR LF SUB LF.
pub(crate) const TOPICS_MAGIC: [u8; 8] = [0x8D, b'M', b'Q', b'T', b'\r', b'\n', 0x1A, b'\n'];
/// Topic table payload version written by this build.
pub(crate) const TOPICS_VERSION: u16 = 1;
/// Largest topic-table payload accepted (16 MiB, over 100,000 topics with
/// the longest names): bounds what a damaged length field can allocate.
pub(crate) const MAX_TOPICS_PAYLOAD: u32 = 16 << 20;
/// The topic table's file kind, kept in two generations.
const KIND: generations::Kind =
    generations::Kind { name: TOPICS_FILE, magic: TOPICS_MAGIC, max_payload: MAX_TOPICS_PAYLOAD };
/// Smallest encoded topic: 1-byte name.
const MIN_ENTRY_LEN: usize = 2 + 1 + 4 + 4 + 1 + 8;

/// One topic: its configuration and where its current incarnation began.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    cfg: TopicConfig,
    /// Commit-log physical offset at which this incarnation of the topic
    /// began; records of the topic below it belong to an earlier one (the
    /// topic was deleted and created again) and must not be dispatched.
    since: u64,
    /// `cfg`'s write queues as producers see them, with the topic's
    /// rotation; built once per change (see [`WriteQueues`]).
    write_queues: Arc<WriteQueues>,
}

impl Entry {
    fn new(cfg: TopicConfig, since: u64) -> Self {
        let write_queues = Arc::new(WriteQueues::new(&cfg.name, cfg.write_queues));
        Self { cfg, since, write_queues }
    }
}

type Map = BTreeMap<String, Entry>;

/// Every topic's configuration, in memory and on disk.
///
/// Reads take a shared lock and never touch the disk. Changes are
/// serialized by a writer mutex, and each one writes the whole new table
/// atomically *before* publishing it in memory, so a failed write changes
/// nothing and memory never shows a table that is not on disk.
#[derive(Debug)]
pub struct TopicTable {
    file: GenFile,
    topics: RwLock<Map>,
    writer: Mutex<()>,
    /// Topics removed so far, bumped once the table no longer holds the
    /// removed topic: dispatch remembers lookups only while this is
    /// unchanged.
    removals: AtomicU64,
}

impl TopicTable {
    /// Loads `<root>/config/topics`, falling back to its previous
    /// generation (`topics.prev`) if it is missing or damaged; no file at
    /// all is an empty table (whether that is allowed is the store's
    /// decision, see [`TopicTable::file_exists`]).
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] when no generation is intact or one has an
    /// unknown version, [`Error::Io`] if a file cannot be read.
    pub(crate) fn open(storage: Arc<dyn Storage>, root: &Path) -> Result<Self> {
        Ok(Self::open_with_fallback(storage, root)?.0)
    }

    /// [`TopicTable::open`], also reporting a fallback to the previous
    /// generation.
    pub(crate) fn open_with_fallback(
        storage: Arc<dyn Storage>,
        root: &Path,
    ) -> Result<(Self, Option<MetadataFallback>)> {
        let dir = root.join(metafile::CONFIG_DIR);
        let loaded = generations::load(storage, &dir, KIND, decode)?;
        let table = Self {
            file: loaded.file,
            topics: RwLock::new(loaded.value.unwrap_or_default()),
            writer: Mutex::new(()),
            removals: AtomicU64::new(0),
        };
        Ok((table, loaded.fallback))
    }

    /// Whether an intact generation of the file was found or written.
    pub(crate) fn file_exists(&self) -> bool {
        self.file.exists()
    }

    /// Whether the file holds two intact generations, the current one in
    /// use (see [`GenFile::has_two_generations`]).
    pub(crate) fn has_two_generations(&self) -> bool {
        self.file.has_two_generations()
    }

    /// Writes the current table as a new generation (to create the file, or
    /// after a fallback or a damaged previous file), so two good
    /// generations are on disk again.
    ///
    /// # Errors
    ///
    /// As [`TopicTable::upsert`].
    pub(crate) fn rewrite(&self) -> Result<()> {
        let _writer = self.writer.lock();
        let payload = encode(&self.topics.read())?;
        self.file.write(TOPICS_VERSION, &payload)
    }

    /// The configuration of topic `name`, if it exists.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<TopicConfig> {
        self.topics.read().get(name).map(|e| e.cfg.clone())
    }

    /// The permission and number of read queues of topic `name`, if it
    /// exists, without copying its configuration (the pull path's lookup).
    pub(crate) fn read_access(&self, name: &str) -> Option<(Permission, u32)> {
        self.topics.read().get(name).map(|e| (e.cfg.permission, e.cfg.read_queues))
    }

    /// The permission and write queues of topic `name`, if it exists,
    /// without copying either (the send path's lookup).
    pub(crate) fn write_queues(&self, name: &str) -> Option<(Permission, Arc<WriteQueues>)> {
        self.topics.read().get(name).map(|e| (e.cfg.permission, e.write_queues.clone()))
    }

    /// The commit-log offset at which the current incarnation of topic
    /// `name` began (records of the topic below it are from an earlier,
    /// deleted incarnation), if the topic exists.
    #[must_use]
    pub(crate) fn since(&self, name: &str) -> Option<u64> {
        self.topics.read().get(name).map(|e| e.since)
    }

    /// Every topic, sorted by name.
    #[must_use]
    pub fn list(&self) -> Vec<TopicConfig> {
        self.topics.read().values().map(|e| e.cfg.clone()).collect()
    }

    /// Creates or replaces a topic; returns the previous configuration.
    /// Nothing is written if `cfg` equals the current one.
    ///
    /// A new topic starts a new incarnation at `since_if_new` (normally the
    /// commit log's current end); an existing topic keeps its `since`, as
    /// an update is the same incarnation.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `cfg` is invalid or the table would
    /// outgrow its file limit; an I/O error if the write failed, in which
    /// case the table is unchanged in memory (see [`GenFile::write`] for
    /// what a failed directory fsync means on disk).
    pub(crate) fn upsert(&self, cfg: TopicConfig, since_if_new: u64) -> Result<Option<TopicConfig>> {
        cfg.validate()?;
        let _writer = self.writer.lock();
        let mut next = self.topics.read().clone();
        let since = next.get(&cfg.name).map_or(since_if_new, |e| e.since);
        let previous = next.insert(cfg.name.clone(), Entry::new(cfg.clone(), since)).map(|e| e.cfg);
        if previous.as_ref() == Some(&cfg) {
            return Ok(previous);
        }
        self.publish(next)?;
        Ok(previous)
    }

    /// Deletes a topic; returns its configuration, or `None` (and writes
    /// nothing) if there was none.
    ///
    /// # Errors
    ///
    /// An I/O error if the write failed; the topic is then still present.
    pub(crate) fn remove(&self, name: &str) -> Result<Option<TopicConfig>> {
        let _writer = self.writer.lock();
        let mut next = self.topics.read().clone();
        let Some(previous) = next.remove(name) else {
            return Ok(None);
        };
        self.publish(next)?;
        // After the table stopped holding the topic (see `removals`).
        self.removals.fetch_add(1, Ordering::Release);
        Ok(Some(previous.cfg))
    }

    /// How many topics were removed since the table was opened.
    pub(crate) fn removals(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    /// Persists `next`, then makes it the in-memory table. The caller holds
    /// the writer mutex, so nobody changed the table since `next` was built.
    fn publish(&self, next: Map) -> Result<()> {
        let payload = encode(&next)?;
        self.file.write(TOPICS_VERSION, &payload)?;
        *self.topics.write() = next;
        Ok(())
    }
}

/// Encodes the payload; refuses a table larger than [`MAX_TOPICS_PAYLOAD`]
/// so nothing is written that [`TopicTable::open`] would refuse.
fn encode(topics: &Map) -> Result<Vec<u8>> {
    let count = u32::try_from(topics.len())
        .map_err(|_| Error::InvalidArgument(format!("{} topics exceed the topic table's limit", topics.len())))?;
    let mut out = Vec::new();
    out.extend_from_slice(&count.to_be_bytes());
    for Entry { cfg, since, .. } in topics.values() {
        metafile::put_str16(&mut out, &cfg.name)?;
        out.extend_from_slice(&cfg.read_queues.to_be_bytes());
        out.extend_from_slice(&cfg.write_queues.to_be_bytes());
        out.push(cfg.permission.to_bits());
        out.extend_from_slice(&since.to_be_bytes());
    }
    if out.len() > MAX_TOPICS_PAYLOAD as usize {
        return Err(Error::InvalidArgument(format!(
            "the topic table would take {} bytes, over its limit of {MAX_TOPICS_PAYLOAD}; remove topics first",
            out.len()
        )));
    }
    Ok(out)
}

/// Decodes a payload read from `path`. Every field is range-checked and
/// names must be valid and strictly ascending (so duplicates are refused).
fn decode(path: &Path, version: u16, payload: &[u8]) -> Result<Map> {
    let mut r = PayloadReader::new(path, payload);
    if version != TOPICS_VERSION {
        let kind = CorruptionKind::UnsupportedVersion { found: u32::from(version) };
        return Err(r.corruption(metafile::VERSION_OFFSET as u64, kind));
    }
    let count_at = r.file_offset();
    let count = r.u32()?;
    // Checked before looping so a damaged count fails fast.
    let need = u64::from(count).checked_mul(MIN_ENTRY_LEN as u64);
    if need.is_none_or(|n| n > r.remaining() as u64) {
        return Err(r.corruption(count_at, CorruptionKind::BadLength { length: u64::from(count) }));
    }
    let mut topics = Map::new();
    let mut last: Option<&str> = None;
    for _ in 0..count {
        let at = r.file_offset();
        let name = r.str16("topic name")?;
        let invalid = |field| r.corruption(at, CorruptionKind::InvalidField { field });
        if validate_topic_name(name).is_err() {
            return Err(invalid("topic name"));
        }
        if last.is_some_and(|prev| prev >= name) {
            return Err(invalid("topic order"));
        }
        last = Some(name);
        let queues_at = r.file_offset();
        let read_queues = r.u32()?;
        let write_queues = r.u32()?;
        let perm_at = r.file_offset();
        let bits = r.u8()?;
        let permission = Permission::from_bits(bits)
            .ok_or_else(|| r.corruption(perm_at, CorruptionKind::InvalidField { field: "permission" }))?;
        let cfg = TopicConfig { name: name.to_owned(), read_queues, write_queues, permission };
        if cfg.validate().is_err() {
            return Err(r.corruption(queues_at, CorruptionKind::InvalidField { field: "queue counts" }));
        }
        // Any value is valid: 0 for a topic created on an empty log.
        let since = r.u64()?;
        topics.insert(cfg.name.clone(), Entry::new(cfg, since));
    }
    r.finish()?;
    Ok(topics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FaultKind, FaultPlan, FaultyStorage, StdStorage};
    use crate::topic::MAX_QUEUES;

    fn open(root: &Path) -> Result<TopicTable> {
        TopicTable::open(Arc::new(StdStorage), root)
    }

    fn sample() -> Vec<TopicConfig> {
        let mut ro = TopicConfig::new("b-ro", 8);
        ro.write_queues = 2;
        ro.permission = Permission::ReadOnly;
        let mut deny = TopicConfig::new("%DLQ%g", 1);
        deny.permission = Permission::Deny;
        vec![TopicConfig::new("a", 4), ro, deny]
    }

    #[test]
    fn constants_are_pinned() {
        // FORMAT.md "Topic table" lists these; change both together.
        assert_eq!(TOPICS_MAGIC, *b"\x8DMQT\r\n\x1A\n");
        assert_eq!(TOPICS_VERSION, 1);
        assert_eq!(MAX_TOPICS_PAYLOAD, 16 * 1024 * 1024);
        assert_eq!(MIN_ENTRY_LEN, 20);
        assert_eq!((metafile::CONFIG_DIR, TOPICS_FILE), ("config", "topics"));
    }

    #[test]
    fn encoding_is_pinned() {
        let mut m = Map::new();
        let mut cfg = TopicConfig::new("ab", 3);
        cfg.write_queues = 2;
        m.insert("ab".into(), Entry::new(cfg, 0x0102_0304_0506_0708));
        assert_eq!(
            encode(&m).unwrap(),
            [0, 0, 0, 1, 0, 2, b'a', b'b', 0, 0, 0, 3, 0, 0, 0, 2, 6, 1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn upsert_list_remove_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let t = open(tmp.path()).unwrap();
        assert!(t.list().is_empty());
        for cfg in sample() {
            assert_eq!(t.upsert(cfg, 0).unwrap(), None);
        }
        let names: Vec<_> = t.list().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["%DLQ%g", "a", "b-ro"]);
        assert_eq!(t.get("b-ro"), Some(sample()[1].clone()));
        assert_eq!(t.get("missing"), None);
        drop(t);

        let t = open(tmp.path()).unwrap();
        assert_eq!(t.list().len(), 3);
        assert_eq!(t.get("b-ro"), Some(sample()[1].clone()));
        let previous = t.upsert(TopicConfig::new("a", 16), 0).unwrap();
        assert_eq!(previous, Some(TopicConfig::new("a", 4)));
        assert_eq!(t.remove("%DLQ%g").unwrap(), Some(sample()[2].clone()));
        assert_eq!(t.remove("%DLQ%g").unwrap(), None);
        drop(t);

        let t = open(tmp.path()).unwrap();
        assert_eq!(t.list(), vec![TopicConfig::new("a", 16), sample()[1].clone()]);
    }

    #[test]
    fn since_is_kept_on_update_and_reset_on_recreate() {
        let tmp = tempfile::tempdir().unwrap();
        let t = open(tmp.path()).unwrap();
        assert_eq!(t.since("t"), None);
        assert_eq!(t.upsert(TopicConfig::new("t", 4), 100).unwrap(), None);
        assert_eq!(t.since("t"), Some(100));
        // An update is the same incarnation: `since` is kept.
        assert_eq!(t.upsert(TopicConfig::new("t", 8), 999).unwrap(), Some(TopicConfig::new("t", 4)));
        assert_eq!(t.since("t"), Some(100));
        // So is an unchanged upsert (which writes nothing).
        assert_eq!(t.upsert(TopicConfig::new("t", 8), 999).unwrap(), Some(TopicConfig::new("t", 8)));
        assert_eq!(t.since("t"), Some(100));
        drop(t);

        let t = open(tmp.path()).unwrap();
        assert_eq!(t.since("t"), Some(100));
        assert_eq!(t.get("t"), Some(TopicConfig::new("t", 8)));
        // Deleted and created again: a new incarnation. Dispatch's memo
        // sees the removal through the count.
        assert_eq!(t.removals(), 0);
        assert_eq!(t.remove("t").unwrap(), Some(TopicConfig::new("t", 8)));
        assert_eq!(t.since("t"), None);
        assert_eq!(t.removals(), 1);
        assert_eq!(t.remove("t").unwrap(), None);
        assert_eq!(t.removals(), 1);
        assert_eq!(t.upsert(TopicConfig::new("t", 8), 500).unwrap(), None);
        assert_eq!(t.since("t"), Some(500));
        drop(t);

        let t = open(tmp.path()).unwrap();
        assert_eq!(t.since("t"), Some(500));
        assert_eq!(t.list(), vec![TopicConfig::new("t", 8)]);
    }

    #[test]
    fn invalid_configs_are_refused_and_change_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let t = open(tmp.path()).unwrap();
        let mut c = TopicConfig::new("t", 2);
        c.write_queues = 3;
        assert!(matches!(t.upsert(c, 0), Err(Error::InvalidArgument(m)) if m.contains("strand")));
        assert!(matches!(t.upsert(TopicConfig::new("a b", 1), 0), Err(Error::InvalidArgument(_))));
        assert!(matches!(t.upsert(TopicConfig::new("t", MAX_QUEUES + 1), 0), Err(Error::InvalidArgument(_))));
        assert!(t.list().is_empty());
        assert!(!tmp.path().join("config/topics").exists());
    }

    #[test]
    fn failed_write_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = FaultPlan::new();
        let storage = Arc::new(FaultyStorage::new(Arc::new(StdStorage), plan.clone()));
        let t = TopicTable::open(storage, tmp.path()).unwrap();
        t.upsert(TopicConfig::new("keep", 4), 0).unwrap();

        for op in ["rename", "sync_data", "write_at", "open"] {
            plan.fail_op(op, FaultKind::Io);
            assert!(t.upsert(TopicConfig::new("keep", 8), 0).is_err(), "{op}");
            assert!(t.upsert(TopicConfig::new("new", 1), 0).is_err(), "{op}");
            assert!(t.remove("keep").is_err(), "{op}");
            plan.heal();
            assert_eq!(t.list(), vec![TopicConfig::new("keep", 4)], "{op}");
            assert_eq!(open(tmp.path()).unwrap().list(), vec![TopicConfig::new("keep", 4)], "{op}");
        }
        // A failed directory fsync is reported as a failed sync (the store
        // fences); memory still holds the old table.
        plan.fail_op("sync_dir", FaultKind::Io);
        let e = t.upsert(TopicConfig::new("keep", 8), 0).unwrap_err();
        assert!(e.is_failed_sync(), "{e:?}");
        assert_eq!(t.get("keep"), Some(TopicConfig::new("keep", 4)));
        plan.heal();
        // Unchanged upserts and removals of absent topics write nothing.
        plan.fail_op("open", FaultKind::Io);
        assert_eq!(t.upsert(TopicConfig::new("keep", 4), 0).unwrap(), Some(TopicConfig::new("keep", 4)));
        assert_eq!(t.remove("absent").unwrap(), None);
    }

    #[test]
    fn damage_falls_back_to_the_previous_generation_and_to_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let t = open(tmp.path()).unwrap();
        let cfgs = sample();
        for cfg in &cfgs {
            t.upsert(cfg.clone(), 0).unwrap();
        }
        // The previous generation: every topic but the last one upserted.
        let mut before: Vec<TopicConfig> = cfgs[..cfgs.len() - 1].to_vec();
        before.sort_by(|a, b| a.name.cmp(&b.name));
        let path = tmp.path().join("config/topics");
        let prev = tmp.path().join("config/topics.prev");
        let (full, full_prev) = (std::fs::read(&path).unwrap(), std::fs::read(&prev).unwrap());
        let mut damaged: Vec<Vec<u8>> = (0..full.len()).map(|len| full[..len].to_vec()).collect();
        for bit in 0..full.len() * 8 {
            let mut c = full.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            damaged.push(c);
        }
        for (i, bytes) in damaged.iter().enumerate() {
            std::fs::write(&path, bytes).unwrap();
            let (t, fallback) = TopicTable::open_with_fallback(Arc::new(StdStorage), tmp.path()).unwrap();
            assert_eq!(t.list(), before, "damage {i}");
            let fallback = fallback.unwrap();
            assert_eq!(fallback.file, path);
            assert!(matches!(fallback.reason, generations::FallbackReason::Damaged { .. }), "damage {i}");
            // Both generations damaged: a typed error naming the current file.
            std::fs::write(&prev, &full_prev[..i % full_prev.len()]).unwrap();
            match open(tmp.path()) {
                Err(Error::Corruption { path: p, .. }) => assert_eq!(p, path, "damage {i}"),
                other => panic!("damage {i}: {other:?}"),
            }
            std::fs::write(&prev, &full_prev).unwrap();
        }
        // Deleted: the previous generation too.
        std::fs::remove_file(&path).unwrap();
        let (t, fallback) = TopicTable::open_with_fallback(Arc::new(StdStorage), tmp.path()).unwrap();
        assert_eq!((t.list(), fallback.unwrap().reason), (before, generations::FallbackReason::Missing));
    }

    /// Decodes a hand-made payload and returns the corruption's offset
    /// within the file and its kind.
    fn decode_err(payload: &[u8]) -> (u64, CorruptionKind) {
        match decode(Path::new("/t"), TOPICS_VERSION, payload) {
            Err(Error::Corruption { offset, kind, .. }) => (offset, kind),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    fn entry(name: &str, read: u32, write: u32, perm: u8) -> Vec<u8> {
        let mut out = Vec::new();
        metafile::put_str16(&mut out, name).unwrap();
        out.extend_from_slice(&read.to_be_bytes());
        out.extend_from_slice(&write.to_be_bytes());
        out.push(perm);
        out.extend_from_slice(&7u64.to_be_bytes());
        out
    }

    fn payload(count: u32, entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = count.to_be_bytes().to_vec();
        for e in entries {
            out.extend_from_slice(e);
        }
        out
    }

    #[test]
    fn nonsense_payloads_are_refused() {
        let field = |field| CorruptionKind::InvalidField { field };
        // Payload offsets are reported as file offsets (header is 20 bytes).
        assert_eq!(
            decode_err(&payload(u32::MAX, &[])),
            (20, CorruptionKind::BadLength { length: u64::from(u32::MAX) })
        );
        assert_eq!(decode_err(&payload(2, &[entry("a", 1, 1, 6)])).1, CorruptionKind::BadLength { length: 2 });
        assert_eq!(decode_err(&payload(0, &[entry("a", 1, 1, 6)])).1, CorruptionKind::BadLength { length: 24 });
        assert_eq!(decode_err(&payload(1, &[entry("a.b", 1, 1, 6)])), (24, field("topic name")));
        // An empty name makes the entry shorter than the minimum the count
        // check assumes; pad it so the name check is what fires.
        assert_eq!(decode_err(&payload(1, &[entry("", 1, 1, 6)])).1, CorruptionKind::BadLength { length: 1 });
        assert_eq!(decode_err(&payload(1, &[entry("", 1, 1, 6), vec![0]])), (24, field("topic name")));
        assert_eq!(decode_err(&payload(1, &[entry("a", 2, 3, 6)])), (27, field("queue counts")));
        assert_eq!(decode_err(&payload(1, &[entry("a", 0, 0, 6)])), (27, field("queue counts")));
        assert_eq!(decode_err(&payload(1, &[entry("a", 9999, 1, 6)])), (27, field("queue counts")));
        assert_eq!(decode_err(&payload(1, &[entry("a", 1, 1, 8)])), (35, field("permission")));
        assert_eq!(decode_err(&payload(2, &[entry("b", 1, 1, 6), entry("a", 1, 1, 6)])), (44, field("topic order")));
        assert_eq!(decode_err(&payload(2, &[entry("a", 1, 1, 6), entry("a", 1, 1, 6)])), (44, field("topic order")));
        let mut bad_utf8 = payload(1, &[entry("ab", 1, 1, 6)]);
        bad_utf8[6] = 0xFF;
        assert_eq!(decode_err(&bad_utf8), (26, field("topic name")));
        assert_eq!(decode_err(&[0, 0]).1, CorruptionKind::Truncated);
        // The inherit bit is accepted and dropped.
        let m = decode(Path::new("/t"), TOPICS_VERSION, &payload(1, &[entry("a", 1, 1, 7)])).unwrap();
        assert_eq!(m["a"].cfg.permission, Permission::ReadWrite);
        assert_eq!(m["a"].since, 7);
        // A short `since` is truncation (a 2-byte name keeps the count check
        // satisfied), pointing at the `since` field.
        let mut short = payload(1, &[entry("ab", 1, 1, 6)]);
        short.pop();
        assert_eq!(decode_err(&short), (37, CorruptionKind::Truncated));
        // An unknown version is refused, pointing at the version field.
        let e = decode(Path::new("/t"), 2, &payload(0, &[])).unwrap_err();
        assert!(matches!(
            e,
            Error::Corruption { offset: 8, kind: CorruptionKind::UnsupportedVersion { found: 2 }, .. }
        ));
    }

    #[test]
    fn concurrent_upserts_all_land() {
        let tmp = tempfile::tempdir().unwrap();
        let t = Arc::new(open(tmp.path()).unwrap());
        let threads: Vec<_> = (0..4u64)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for j in 0..5 {
                        t.upsert(TopicConfig::new(format!("t{i}-{j}"), 1), i).unwrap();
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(t.list().len(), 20);
        let reopened = open(tmp.path()).unwrap();
        assert_eq!(reopened.list(), t.list());
        assert_eq!(reopened.since("t3-4"), Some(3));
    }
}
