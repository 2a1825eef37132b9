//! [`StoreView`]: read-only access to a store directory that takes no lock
//! and changes nothing, so it works beside a live writer.
//!
//! Every read goes through [`StdStorage`] with `pread`; nothing is mapped,
//! so a writer truncating or replacing a file cannot fault the reader.
//! Metadata files are replaced atomically by rename, so a reader always
//! sees one complete version. The commit log is read with the offline
//! scanner of [`CommitLog::verify`]: a record being written when the scan
//! reaches it is a torn tail, which ends the scan quietly.

use crate::commitlog::{CommitLog, COMMITLOG_DIR};
use crate::consumequeue::{CqUnit, CQ_UNIT_LEN};
use crate::consumer::membership::{self, LiveConsumers};
use crate::error::{Error, Result};
use crate::message::MessageExt;
use crate::offset::PhysicalOffset;
use crate::offsetstore::{OffsetEntry, OffsetTable};
use crate::storage::{read_full_at, OpenMode, StdStorage, Storage};
use crate::topic::{TopicConfig, TopicTable};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Directory of the consume queues under the store root (FORMAT.md 10.1).
const CONSUME_QUEUE_DIR: &str = "consumequeue";
/// Width of a consume-queue file name (the queue offset of its first unit).
const CQ_FILE_NAME_LEN: usize = 20;
/// Units read per `pread` when looking for a queue's end.
const CQ_CHUNK_UNITS: usize = 16 << 10;

/// Read-only view of a store directory.
///
/// It takes no lock, never creates, writes or maps a file, and may be used
/// while a [`Store`](super::Store) (in this or another process) has the
/// directory open. Each call reads the files afresh, so it sees what the
/// writer has made visible by then.
///
/// ```
/// use mqstore::message::Message;
/// use mqstore::store::{Store, StoreOptions, StoreView};
/// use mqstore::topic::TopicConfig;
/// # fn main() -> mqstore::Result<()> {
/// let dir = tempfile::tempdir().map_err(|e| mqstore::Error::InvalidArgument(e.to_string()))?;
/// let store = Store::open(dir.path(), StoreOptions::default())?;
/// store.create_topic(TopicConfig::new("orders", 2))?;
/// store.send(Message::new("orders", "hello"))?;
/// // Works while the store is open.
/// let view = StoreView::open(dir.path())?;
/// // Sorted by name; the store's own schedule topic is listed too.
/// let names: Vec<String> = view.topics()?.into_iter().map(|t| t.name).collect();
/// assert_eq!(names, ["SCHEDULE_TOPIC_XXXX", "orders"]);
/// let mut bodies = Vec::new();
/// view.messages("orders", None, 0, 0, |m| {
///     bodies.push(m.body().clone());
///     Ok(true)
/// })?;
/// assert_eq!(bodies, ["hello"]);
/// store.close()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct StoreView {
    root: PathBuf,
    storage: Arc<dyn Storage>,
}

impl StoreView {
    /// A view of the store in `dir`, which must hold a commit log
    /// ([`Error::InvalidArgument`] otherwise). Creates nothing.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, Arc::new(StdStorage))
    }

    /// [`StoreView::open`] over another storage backend (the fuzz targets
    /// read an in-memory directory image).
    pub(crate) fn open_with(dir: impl AsRef<Path>, storage: Arc<dyn Storage>) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        let logdir = root.join(COMMITLOG_DIR);
        if !storage.exists(&logdir).map_err(|e| Error::io("stat", &logdir, e))? {
            return Err(Error::InvalidArgument(format!("{} holds no commit log", root.display())));
        }
        Ok(Self { root, storage })
    }

    /// The store directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Checks every file of the store: [`super::verify::verify`].
    pub fn verify(&self) -> Result<super::verify::VerifyReport> {
        super::verify::verify_with(&self.root, self.storage.clone())
    }

    /// Every topic, sorted by name, as last persisted (`config/topics`).
    pub fn topics(&self) -> Result<Vec<TopicConfig>> {
        Ok(TopicTable::open(self.storage.clone(), &self.root)?.list())
    }

    /// Every committed consumer offset, ordered by group, topic and queue,
    /// as last persisted (`config/consumer_offsets`; a live store writes it
    /// on its persist interval and at close).
    pub fn offsets(&self) -> Result<Vec<OffsetEntry>> {
        Ok(OffsetTable::open(self.storage.clone(), &self.root)?.entries())
    }

    /// The consumer groups of the live store, as it last published them
    /// (`config/consumers`, FORMAT.md 11.8): `None` when the file is absent,
    /// which means no store holds the directory open (or none of its
    /// writes of the file succeeded).
    ///
    /// The store rewrites the file after every rebalance and removes it at
    /// close and at open, so a file that is present was written by the
    /// process holding the store, unless that process died:
    /// [`LiveConsumers::writer_alive`] tells (on Linux, whether
    /// `/proc/<pid>` exists); when it is `false` the file is stale and its
    /// groups describe nobody. Like every call here this takes no lock.
    pub fn consumers(&self) -> Result<Option<LiveConsumers>> {
        membership::read(self.storage.as_ref(), &self.root)
    }

    /// Calls `each` for the messages of `topic` (only queue `queue` if
    /// given) whose queue offset is at least `from`, in log order (which is
    /// queue order within each queue), until `each` returns `Ok(false)` or
    /// `max` messages were passed (`0` = no limit). Returns how many were
    /// passed.
    ///
    /// Scans the commit log from its start (the consume queues are not
    /// used), so it costs a read of the whole log, and it shows every
    /// record of the topic the log still holds, including records written
    /// before the topic was deleted and created again. It stops quietly at
    /// the end of the log or at a torn tail (damage past the flushed offset
    /// of a running or crashed store); other damage is
    /// [`Error::Corruption`], returned after the messages before it.
    pub fn messages(
        &self,
        topic: &str,
        queue: Option<u32>,
        from: u64,
        max: usize,
        mut each: impl FnMut(MessageExt) -> Result<bool>,
    ) -> Result<usize> {
        let mut passed = 0usize;
        CommitLog::scan_offline(&self.root, self.storage.as_ref(), |rec| {
            if rec.topic != topic || queue.is_some_and(|q| q != rec.queue_id) || rec.queue_offset < from {
                return Ok(true);
            }
            let msg = MessageExt::from_encoded(PhysicalOffset(rec.offset), Bytes::copy_from_slice(rec.bytes))?;
            passed += 1;
            let more = each(msg)?;
            Ok(more && (max == 0 || passed < max))
        })?;
        Ok(passed)
    }

    /// `(topic, queue id, min, max)` of every consume queue that has files,
    /// sorted by topic and queue: `min` is the first offset, `max` one past
    /// the last dispatched message.
    ///
    /// Read from the consume-queue files (not the commit log), which is
    /// cheap: `min` is the name of a queue's first file, and `max` is the
    /// last file's name plus its units before the first empty one (earlier
    /// files are full by the format's invariants, FORMAT.md 10.4). Beside a
    /// live writer this is what consumers can pull now; messages still
    /// being dispatched are not counted yet.
    pub fn queue_ranges(&self) -> Result<Vec<(String, u32, u64, u64)>> {
        let cq = self.root.join(CONSUME_QUEUE_DIR);
        if !self.exists(&cq)? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut topics = self.list(&cq)?;
        topics.sort();
        for topic in topics {
            let tdir = cq.join(&topic);
            let mut ids: Vec<u32> = self.list(&tdir)?.iter().filter_map(|n| parse_queue_id(n)).collect();
            ids.sort_unstable();
            for id in ids {
                if let Some((min, max)) = self.queue_range(&tdir.join(id.to_string()))? {
                    out.push((topic.clone(), id, min, max));
                }
            }
        }
        Ok(out)
    }

    /// The read-only twin of [`Store::query_by_key`](super::Store::query_by_key):
    /// messages of `topic` with key (or unique id) `key` stored in
    /// `[begin_ms, end_ms]`, newest first, at most `max` (capped at
    /// [`MAX_QUERY_RESULTS`](super::MAX_QUERY_RESULTS)). Reads the index
    /// files and the records with `pread`; beside a live store, messages
    /// not yet indexed are not found.
    pub fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        begin_ms: u64,
        end_ms: u64,
        max: usize,
    ) -> Result<Vec<MessageExt>> {
        super::query::check_query(topic, key)?;
        let Some(since) = TopicTable::open(self.storage.clone(), &self.root)?.since(topic) else {
            return Ok(Vec::new());
        };
        let max = max.min(super::MAX_QUERY_RESULTS);
        let dir = self.root.join(crate::index::set::INDEX_DIR);
        if !self.exists(&dir)? {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> =
            self.list(&dir)?.into_iter().filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit())).collect();
        names.sort();
        let segments = CommitLog::offline_segment_files(&self.root, self.storage.as_ref())?;
        let ikey = crate::index::index_key(topic, key);
        let mut out: Vec<MessageExt> = Vec::new();
        let mut failure = None;
        for name in names.iter().rev() {
            if out.len() >= max {
                break;
            }
            crate::index::file::lookup_offline(
                self.storage.as_ref(),
                &dir.join(name),
                &ikey,
                begin_ms,
                end_ms,
                |phy, _| {
                    if phy < since || out.iter().any(|m| m.physical_offset().0 == phy) {
                        return true;
                    }
                    match self.message_at(&segments, phy) {
                        Ok(Some(m)) if super::query::is_hit(&m, topic, key, begin_ms, end_ms) => out.push(m),
                        Ok(_) => {}
                        Err(e) => {
                            failure.get_or_insert(e);
                        }
                    }
                    out.len() < max
                },
            )?;
        }
        match failure {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    /// The read-only twin of [`Store::message_by_id`](super::Store::message_by_id).
    pub fn message_by_id(&self, id: &str) -> Result<Option<MessageExt>> {
        let segments = CommitLog::offline_segment_files(&self.root, self.storage.as_ref())?;
        if let Ok((_, _, offset)) = crate::message::decode_offset_msg_id(id) {
            if let Ok(Some(m)) = self.message_at(&segments, offset.0) {
                if m.offset_msg_id().eq_ignore_ascii_case(id) {
                    return Ok(Some(m));
                }
            }
        }
        let topics = self.topics()?;
        super::query::newest_with_unique_id(topics, id, |topic| self.query_by_key(topic, id, 0, u64::MAX, 1))
    }

    /// The record at physical offset `at`, read with `pread` and checked;
    /// `None` outside the segments or where no whole record is.
    fn message_at(&self, segments: &[(u64, u64)], at: u64) -> Result<Option<MessageExt>> {
        let Some(&(base, len)) = segments.get(segments.partition_point(|&(b, _)| b <= at).wrapping_sub(1)) else {
            return Ok(None);
        };
        let path = self.root.join(COMMITLOG_DIR).join(format!("{base:020}"));
        let file = self.storage.open(&path, OpenMode::Read).map_err(|e| Error::io("open segment", &path, e))?;
        let pos = at - base;
        let mut head = [0u8; 4];
        if read_full_at(file.as_ref(), &mut head, pos).map_err(|e| Error::io("read segment", &path, e))? < 4 {
            return Ok(None);
        }
        // Bounded by the file and the format's limit before allocating.
        let size = u64::from(u32::from_be_bytes(head));
        if size < crate::commitlog::RECORD_HEADER_LEN as u64
            || size > u64::from(crate::commitlog::MAX_RECORD_LEN_LIMIT)
            || size > len.saturating_sub(pos)
        {
            return Ok(None);
        }
        let mut buf = vec![0u8; size as usize];
        let n = read_full_at(file.as_ref(), &mut buf, pos).map_err(|e| Error::io("read segment", &path, e))?;
        if n < buf.len() {
            return Ok(None);
        }
        MessageExt::from_encoded(PhysicalOffset(at), Bytes::from(buf)).map(Some)
    }

    /// The dead letters of consumer group `group`, oldest first: the
    /// read-only twin of [`Store::dlq_list`](super::Store::dlq_list) (empty
    /// when the group has none). Found by scanning the commit log, like
    /// [`StoreView::messages`]; records of a dead-letter queue that was
    /// purged are not listed.
    pub fn dead_letters(&self, group: &str) -> Result<Vec<crate::dlq::DeadLetter>> {
        crate::topic::validate_group_name(group)?;
        let topic = crate::dlq::dlq_topic(group);
        let Some(since) = TopicTable::open(self.storage.clone(), &self.root)?.since(&topic) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        self.messages(&topic, Some(0), 0, 0, |m| {
            if m.physical_offset().0 >= since {
                out.push(crate::dlq::DeadLetter::from_message(m));
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Delayed messages waiting, per delay level: `(level, waiting)` for
    /// every level whose schedule queue has entries, counted from the
    /// persisted delivery progress (`config/delay`). Beside a live writer
    /// the progress lags by up to the offset persist interval, so this may
    /// count a few messages already delivered.
    pub fn delayed(&self) -> Result<Vec<(usize, u64)>> {
        let done = crate::retry::progress::read(self.storage.as_ref(), &self.root)?.unwrap_or_default();
        Ok(self
            .queue_ranges()?
            .into_iter()
            .filter(|(t, ..)| t == crate::retry::SCHEDULE_TOPIC)
            .map(|(_, q, min, max)| {
                let from = done.get(q as usize).copied().unwrap_or(0).max(min);
                (q as usize + 1, max.saturating_sub(from))
            })
            .collect())
    }

    /// The first queue offset of queue `queue_id` of `topic` whose message
    /// was stored at or after `timestamp_ms`; the queue's end (its `max` in
    /// [`StoreView::queue_ranges`]) if none was, and `0` for a queue without
    /// files. The read-only twin of
    /// [`Store::offset_for_timestamp`](super::Store::offset_for_timestamp),
    /// with the same answer on a quiescent store.
    ///
    /// A binary search over `[min, max)` (store timestamps never decrease
    /// along the log): each probe reads one 20-byte consume-queue unit and
    /// the record it points to, both with `pread`, and checks the record's
    /// CRC, so it costs `O(log n)` small reads, not a scan of the log. A
    /// unit pointing below the first commit-log segment (a head the store
    /// has already deleted) counts as older than any timestamp. A record
    /// that fails its check is [`Error::Corruption`].
    pub fn offset_for_timestamp(&self, topic: &str, queue_id: u32, timestamp_ms: u64) -> Result<u64> {
        let dir = self.root.join(CONSUME_QUEUE_DIR).join(topic).join(queue_id.to_string());
        if !self.exists(&dir)? {
            return Ok(0);
        }
        let mut firsts: Vec<u64> = self.list(&dir)?.iter().filter_map(|n| parse_cq_file_name(n)).collect();
        firsts.sort_unstable();
        let (Some(&min), Some(&last)) = (firsts.first(), firsts.last()) else {
            return Ok(0);
        };
        let max = last.saturating_add(self.count_units(&dir.join(format!("{last:020}")))?);
        let segments = CommitLog::offline_segment_files(&self.root, self.storage.as_ref())?;
        let (mut lo, mut hi) = (min, max);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(unit) = self.unit_at(&dir, &firsts, mid)? else {
                // Past the queue's end as the files are now: nothing later.
                hi = mid;
                continue;
            };
            if self.store_timestamp_at(&segments, unit)? < timestamp_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Total length of the commit-log segment files in bytes: disk space
    /// taken, including preallocated room not yet written.
    pub fn commit_log_bytes(&self) -> Result<u64> {
        let files = CommitLog::offline_segment_files(&self.root, self.storage.as_ref())?;
        Ok(files.iter().map(|&(_, len)| len).sum())
    }

    /// Number of commit-log segment files.
    pub fn segment_count(&self) -> Result<usize> {
        Ok(CommitLog::offline_segment_files(&self.root, self.storage.as_ref())?.len())
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        self.storage.exists(path).map_err(|e| Error::io("stat", path, e))
    }

    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        self.storage.list_dir(dir).map_err(|e| Error::io("list directory", dir, e))
    }

    /// The consume-queue unit at queue offset `offset` of the queue in
    /// `dir` whose files start at `firsts` (sorted), `None` when it is
    /// empty or missing.
    fn unit_at(&self, dir: &Path, firsts: &[u64], offset: u64) -> Result<Option<CqUnit>> {
        let Some(&first) = firsts.get(firsts.partition_point(|&f| f <= offset).wrapping_sub(1)) else {
            return Ok(None);
        };
        let path = dir.join(format!("{first:020}"));
        let file = self.storage.open(&path, OpenMode::Read).map_err(|e| Error::io("open consume queue", &path, e))?;
        let mut buf = [0u8; CQ_UNIT_LEN];
        let pos = (offset - first).saturating_mul(CQ_UNIT_LEN as u64);
        let n = read_full_at(file.as_ref(), &mut buf, pos).map_err(|e| Error::io("read consume queue", &path, e))?;
        Ok(if n == CQ_UNIT_LEN { CqUnit::decode(&buf) } else { None })
    }

    /// The store timestamp of the record `unit` points to, read with
    /// `pread` from the segment holding it (`segments`: base and length of
    /// each, sorted) and checked; `0` below the first segment.
    fn store_timestamp_at(&self, segments: &[(u64, u64)], unit: CqUnit) -> Result<u64> {
        let at = unit.physical_offset.0;
        let Some(&(base, len)) = segments.get(segments.partition_point(|&(b, _)| b <= at).wrapping_sub(1)) else {
            return Ok(0);
        };
        let path = self.root.join(COMMITLOG_DIR).join(format!("{base:020}"));
        let file = self.storage.open(&path, OpenMode::Read).map_err(|e| Error::io("open segment", &path, e))?;
        // A damaged unit's size cannot make us allocate past the file.
        let take = u64::from(unit.size).min(len.saturating_sub(at - base));
        let mut buf = vec![0u8; usize::try_from(take).unwrap_or(0)];
        let n = read_full_at(file.as_ref(), &mut buf, at - base).map_err(|e| Error::io("read segment", &path, e))?;
        Ok(CommitLog::decode_encoded(&buf[..n], at)?.store_timestamp)
    }

    /// `(min, max)` of the queue in `dir`, `None` when it has no files.
    fn queue_range(&self, dir: &Path) -> Result<Option<(u64, u64)>> {
        let mut firsts: Vec<u64> = self.list(dir)?.iter().filter_map(|n| parse_cq_file_name(n)).collect();
        firsts.sort_unstable();
        let (Some(&min), Some(&last)) = (firsts.first(), firsts.last()) else {
            return Ok(None);
        };
        let units = self.count_units(&dir.join(format!("{last:020}")))?;
        Ok(Some((min, last.saturating_add(units))))
    }

    /// Units of a consume-queue file before the first empty one (or the
    /// first whose physical offset does not increase, where recovery would
    /// end the queue too).
    fn count_units(&self, path: &Path) -> Result<u64> {
        let file = self.storage.open(path, OpenMode::Read).map_err(|e| Error::io("open consume queue", path, e))?;
        let mut buf = vec![0u8; CQ_CHUNK_UNITS * CQ_UNIT_LEN];
        let mut count = 0u64;
        let mut pos = 0u64;
        let mut last: Option<u64> = None;
        loop {
            let n = read_full_at(file.as_ref(), &mut buf, pos).map_err(|e| Error::io("read consume queue", path, e))?;
            for unit in buf[..n].chunks_exact(CQ_UNIT_LEN) {
                let Some(u) = CqUnit::decode(unit) else {
                    return Ok(count);
                };
                if last.is_some_and(|prev| u.physical_offset.0 <= prev) {
                    return Ok(count);
                }
                last = Some(u.physical_offset.0);
                count += 1;
            }
            if n < buf.len() {
                return Ok(count);
            }
            pos += n as u64;
        }
    }
}

/// A queue directory name: a queue id in canonical decimal.
fn parse_queue_id(name: &str) -> Option<u32> {
    let id: u32 = name.parse().ok()?;
    (id.to_string() == name).then_some(id)
}

/// The first queue offset a consume-queue file name encodes (20 digits);
/// `None` for anything else, such as a `.tmp` file being created.
fn parse_cq_file_name(name: &str) -> Option<u64> {
    if name.len() == CQ_FILE_NAME_LEN && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commitlog::{Checkpoint, CommitLogOptions, ShutdownState, CHECKPOINT_FILE};
    use crate::message::Message;
    use crate::store::{Store, StoreOptions};
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    const SEGMENT: u64 = 1 << 20;

    fn opts() -> StoreOptions {
        StoreOptions::default()
            .commit_log_options(CommitLogOptions::default().segment_size(SEGMENT).max_record_size(64 << 10))
            .max_body_size(16 << 10)
            .max_properties_size(4 << 10)
            .consume_queue_units_per_file(8)
    }

    fn body(i: usize) -> Vec<u8> {
        (0..300).map(|j| (i * 7 + j) as u8).collect()
    }

    /// Every file under `dir` with its length.
    fn listing(dir: &Path) -> BTreeSet<(PathBuf, u64)> {
        let mut out = BTreeSet::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let meta = e.metadata().unwrap();
                if meta.is_dir() {
                    todo.push(e.path());
                }
                out.insert((e.path(), meta.len()));
            }
        }
        out
    }

    /// Sends `n` messages round-robin over the topic's queues.
    fn send(store: &Store, topic: &str, n: usize) -> Vec<crate::store::SendResult> {
        (0..n)
            .map(|i| {
                let m = Message::new(topic, body(i)).with_tags(format!("tag{}", i % 2)).with_key(format!("k{i}"));
                store.send(m).unwrap()
            })
            .collect()
    }

    fn wait_dispatched(store: &Store, topic: &str, queues: u32, total: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sum: u64 = (0..queues).map(|q| store.max_offset(topic, q).unwrap()).sum();
            if sum >= total {
                return;
            }
            assert!(Instant::now() < deadline, "dispatch did not catch up");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn all(view: &StoreView, topic: &str, queue: Option<u32>, from: u64, max: usize) -> Vec<MessageExt> {
        let mut out = Vec::new();
        view.messages(topic, queue, from, max, |m| {
            out.push(m);
            Ok(true)
        })
        .unwrap();
        out
    }

    #[test]
    fn views_a_closed_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        store.create_topic(TopicConfig::new("A", 3)).unwrap();
        store.create_topic(TopicConfig::new("B", 1)).unwrap();
        let sent = send(&store, "A", 40);
        send(&store, "B", 5);
        wait_dispatched(&store, "A", 3, 40);
        store.commit_offset("g1", "A", 1, 4).unwrap();
        store.close().unwrap();
        let before = listing(dir.path());

        let view = StoreView::open(dir.path()).unwrap();
        let topics = view.topics().unwrap();
        // The store's own schedule topic is listed too (as RocketMQ lists it).
        let schedule = TopicConfig::new(crate::retry::SCHEDULE_TOPIC, 18);
        assert_eq!(topics, [TopicConfig::new("A", 3), TopicConfig::new("B", 1), schedule]);
        let offsets = view.offsets().unwrap();
        assert_eq!(offsets.len(), 1);
        assert_eq!((offsets[0].group.as_str(), offsets[0].queue_id, offsets[0].offset), ("g1", 1, 4));

        // Every message of A in log order, with every field.
        let got = all(&view, "A", None, 0, 0);
        assert_eq!(got.len(), sent.len());
        for (i, (m, s)) in got.iter().zip(&sent).enumerate() {
            assert_eq!((m.topic(), m.queue_id(), m.queue_offset().0), ("A", s.queue_id, s.queue_offset));
            assert_eq!(m.physical_offset(), s.physical_offset);
            assert_eq!(m.msg_id(), Some(s.msg_id.as_str()));
            assert_eq!(m.offset_msg_id(), s.offset_msg_id);
            assert_eq!(&m.body()[..], &body(i)[..]);
            assert_eq!(m.tags(), Some(if i % 2 == 0 { "tag0" } else { "tag1" }));
            assert_eq!(m.keys().collect::<Vec<_>>(), [format!("k{i}")]);
        }
        // One queue, from an offset, bounded.
        let q1 = all(&view, "A", Some(1), 3, 0);
        assert!(q1.iter().all(|m| m.queue_id() == 1));
        assert_eq!(q1.iter().map(|m| m.queue_offset().0).collect::<Vec<_>>(), (3..13).collect::<Vec<_>>());
        assert_eq!(all(&view, "A", Some(1), 3, 4).len(), 4);
        // `from` applies to every queue without one.
        assert_eq!(all(&view, "A", None, 10, 0).len(), 40 - 30);
        // Stopping early.
        let mut seen = 0;
        let n = view
            .messages("A", None, 0, 0, |_| {
                seen += 1;
                Ok(seen < 2)
            })
            .unwrap();
        assert_eq!((n, seen), (2, 2));
        assert!(all(&view, "nope", None, 0, 0).is_empty());
        assert_eq!(all(&view, "B", None, 0, 0).len(), 5);

        // Queue ranges match what the store serves; A's queues span files of 8 units.
        let ranges = view.queue_ranges().unwrap();
        let want: Vec<(String, u32, u64, u64)> =
            vec![("A".into(), 0, 0, 14), ("A".into(), 1, 0, 13), ("A".into(), 2, 0, 13), ("B".into(), 0, 0, 5)];
        assert_eq!(ranges, want);

        let files: Vec<_> = std::fs::read_dir(dir.path().join(COMMITLOG_DIR))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().len() == 20)
            .collect();
        assert_eq!(view.segment_count().unwrap(), files.len());
        let bytes: u64 = files.iter().map(|e| e.metadata().unwrap().len()).sum();
        assert_eq!(view.commit_log_bytes().unwrap(), bytes);

        // Nothing changed on disk.
        assert_eq!(listing(dir.path()), before);
    }

    #[test]
    fn views_a_store_that_is_open_and_takes_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        store.create_topic(TopicConfig::new("T", 2)).unwrap();
        let sent = send(&store, "T", 10);
        let view = StoreView::open(dir.path()).unwrap();
        // Written messages are visible at once through the page cache.
        assert_eq!(all(&view, "T", None, 0, 0).len(), 10);
        wait_dispatched(&store, "T", 2, 10);
        assert_eq!(view.queue_ranges().unwrap(), [("T".into(), 0, 0, 5), ("T".into(), 1, 0, 5)]);
        let schedule = TopicConfig::new(crate::retry::SCHEDULE_TOPIC, 18);
        assert_eq!(view.topics().unwrap(), [schedule, TopicConfig::new("T", 2)]);

        // The store keeps working beside the view, over several segments.
        let more = send(&store, "T", 5000);
        wait_dispatched(&store, "T", 2, 5010);
        let got = all(&view, "T", Some(0), 0, 0);
        assert_eq!(got.len(), 2505);
        assert_eq!(got.last().unwrap().physical_offset(), more[more.len() - 2].physical_offset);
        assert_eq!(got[0].msg_id(), Some(sent[0].msg_id.as_str()));
        assert!(view.segment_count().unwrap() >= 2);
        assert_eq!(view.queue_ranges().unwrap(), [("T".into(), 0, 0, 2505), ("T".into(), 1, 0, 2505)]);
        // Decoding from scanned bytes gives what the live log's reader gives.
        for m in got.iter().step_by(500) {
            assert_eq!(&store.message_by_offset_id(&m.offset_msg_id()).unwrap(), m);
        }
        // The lock is still the store's alone.
        assert!(matches!(Store::open(dir.path(), opts()), Err(Error::Locked { .. })));
        store.close().unwrap();
    }

    #[test]
    fn scans_beside_a_writer_that_keeps_appending() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        store.create_topic(TopicConfig::new("T", 2)).unwrap();
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || send(&store, "T", 6000).len())
        };
        let view = StoreView::open(dir.path()).unwrap();
        let (mut last_seen, mut last_max) = (0, 0);
        while !writer.is_finished() {
            let seen = view.messages("T", None, 0, 0, |_| Ok(true)).unwrap();
            assert!(seen >= last_seen, "{seen} < {last_seen}");
            last_seen = seen;
            let max: u64 = view.queue_ranges().unwrap().iter().map(|r| r.3).sum();
            assert!(max >= last_max);
            last_max = max;
        }
        assert_eq!(writer.join().unwrap(), 6000);
        assert_eq!(view.messages("T", None, 0, 0, |_| Ok(true)).unwrap(), 6000);
        store.close().unwrap();
    }

    #[test]
    fn offset_for_timestamp_matches_the_store() {
        let dir = tempfile::tempdir().unwrap();
        // Small segments, so the probes read records from several of them.
        let opts = || {
            opts()
                .commit_log_options(CommitLogOptions::default().segment_size(16 << 10).max_record_size(4 << 10))
                .max_body_size(1 << 10)
                .max_properties_size(1 << 10)
        };
        let store = Store::open(dir.path(), opts()).unwrap();
        store.create_topic(TopicConfig::new("T", 2)).unwrap();
        // Batches a few milliseconds apart, so timestamps repeat and step.
        let mut sent = Vec::new();
        for _ in 0..4 {
            sent.extend(send(&store, "T", 30));
            std::thread::sleep(Duration::from_millis(3));
        }
        wait_dispatched(&store, "T", 2, 120);
        let view = StoreView::open(dir.path()).unwrap();
        assert!(view.segment_count().unwrap() >= 3);
        let stamps: Vec<u64> = all(&view, "T", None, 0, 0).iter().map(MessageExt::store_timestamp).collect();
        let mut probes = vec![0, 1, u64::MAX];
        for &t in &stamps {
            probes.extend([t - 1, t, t + 1]);
        }
        let check = |view: &StoreView, store: &Store| {
            for &t in &probes {
                for q in 0..2 {
                    assert_eq!(
                        view.offset_for_timestamp("T", q, t).unwrap(),
                        store.offset_for_timestamp("T", q, t).unwrap(),
                        "queue {q} at {t}"
                    );
                }
            }
        };
        // Beside the live writer, then after close (reopened to compare).
        check(&view, &store);
        assert_eq!(view.offset_for_timestamp("T", 0, 0).unwrap(), 0);
        assert_eq!(view.offset_for_timestamp("T", 0, u64::MAX).unwrap(), 60);
        assert_eq!(view.offset_for_timestamp("T", 0, stamps[stamps.len() - 1] + 1).unwrap(), 60);
        assert_eq!(view.offset_for_timestamp("T", 7, 0).unwrap(), 0);
        assert_eq!(view.offset_for_timestamp("nope", 0, 0).unwrap(), 0);
        store.close().unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        check(&view, &store);
        store.close().unwrap();
    }

    #[test]
    fn open_refuses_a_directory_without_a_store_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(StoreView::open(&missing), Err(Error::InvalidArgument(_))));
        assert!(!missing.exists());
        assert!(matches!(StoreView::open(dir.path()), Err(Error::InvalidArgument(_))));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Flips a body byte of the record at `at` (in the first segment).
    fn damage(dir: &Path, at: PhysicalOffset, size: u64) {
        let path = dir.join(COMMITLOG_DIR).join(format!("{:020}", 0));
        let mut b = std::fs::read(&path).unwrap();
        b[(at.0 + size - 3) as usize] ^= 0x55;
        std::fs::write(&path, b).unwrap();
    }

    #[test]
    fn torn_tail_ends_the_scan_quietly_and_other_damage_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        store.create_topic(TopicConfig::new("T", 1)).unwrap();
        let sent = send(&store, "T", 6);
        store.close().unwrap();
        let view = StoreView::open(dir.path()).unwrap();
        let size = all(&view, "T", None, 0, 0)[5].store_size();
        damage(dir.path(), sent[5].physical_offset, u64::from(size));

        // Clean shutdown: damage anywhere is corruption, after the good prefix.
        let mut seen = 0;
        let err = view
            .messages("T", None, 0, 0, |_| {
                seen += 1;
                Ok(true)
            })
            .unwrap_err();
        assert!(matches!(err, Error::Corruption { .. }), "{err:?}");
        assert_eq!(seen, 5);

        // A running (or crashed) store flushed up to the damaged record: a torn tail.
        let cp = Checkpoint {
            state: ShutdownState::Running,
            generation: 99,
            flushed: sent[5].physical_offset.0,
            last_record: None,
        };
        std::fs::write(dir.path().join(CHECKPOINT_FILE), cp.encode()).unwrap();
        assert_eq!(all(&view, "T", None, 0, 0).len(), 5);

        // Flushed past it: corruption again.
        let cp = Checkpoint { flushed: sent[5].physical_offset.0 + u64::from(size), ..cp };
        std::fs::write(dir.path().join(CHECKPOINT_FILE), cp.encode()).unwrap();
        assert!(matches!(view.messages("T", None, 0, 0, |_| Ok(true)), Err(Error::Corruption { .. })));
    }
}
