//! [`ConsumeQueueSet`]: every consume queue of a store, keyed by topic and
//! queue id, discovered from `<root>/consumequeue/<topic>/<queue id>/` on
//! open.

use super::queue::{file_len_for, validate_topic, ConsumeQueue, CreationSync, CONSUME_QUEUE_DIR};
use crate::error::{Error, Result};
use crate::offset::PhysicalOffset;
use crate::storage::Storage;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

type Queues = BTreeMap<String, BTreeMap<u32, Arc<ConsumeQueue>>>;

/// Every consume queue of a store.
///
/// Lookups take a shared lock and hand out `Arc`s, so a reader keeps using
/// a queue without holding the set's lock.
#[derive(Debug)]
pub struct ConsumeQueueSet {
    storage: Arc<dyn Storage>,
    root: PathBuf,
    units_per_file: u64,
    queues: RwLock<Queues>,
    /// Shared with every queue: whether creations are
    /// [`CreationSync::AtFlush`] (see [`ConsumeQueueSet::set_creation_sync`]).
    defer_creation_syncs: Arc<AtomicBool>,
    /// Queues removed so far (by `remove_queue` or `remove_topic`), bumped
    /// once the set no longer holds them: dispatch remembers queue objects
    /// only while this is unchanged.
    removals: AtomicU64,
}

/// Lists `dir`; if it is a plain file (damage where one of our
/// directories belongs), removes it and returns `None`.
fn list_dir_or_remove_file(storage: &dyn Storage, dir: &Path) -> Result<Option<Vec<String>>> {
    match storage.list_dir(dir) {
        Ok(names) => Ok(Some(names)),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            storage.remove_file(dir).map_err(|e| Error::io("remove stray file", dir, e))?;
            Ok(None)
        }
        Err(e) => Err(Error::io("list directory", dir, e)),
    }
}

/// The queue id a queue directory name stands for: canonical decimal only,
/// so two directories can never claim the same queue.
fn parse_queue_id(name: &str) -> Option<u32> {
    name.parse::<u32>().ok().filter(|id| id.to_string() == name)
}

impl ConsumeQueueSet {
    /// Opens every queue found under `<root>/consumequeue/`, recovering each
    /// (see [`ConsumeQueue::recovered`]). Queue directories without files
    /// (left by [`ConsumeQueueSet::remove_topic`], which cannot remove
    /// directories) are skipped.
    ///
    /// A queue that fails to open as `Corruption` (files of the wrong
    /// length, overlapping or foreign names) has its files deleted and opens
    /// empty: consume queues are derived data, and the store rebuilds it
    /// from the commit log. Entries that are not a valid topic or canonical
    /// queue-id directory name are not ours and are skipped.
    ///
    /// Errors: `InvalidArgument` for a bad `units_per_file`; `Io`.
    pub(crate) fn open(storage: Arc<dyn Storage>, root: &Path, units_per_file: u64) -> Result<Self> {
        file_len_for(units_per_file)?;
        let cq_dir = root.join(CONSUME_QUEUE_DIR);
        let mut queues = Queues::new();
        let defer = Arc::new(AtomicBool::new(false));
        if storage.exists(&cq_dir).map_err(|e| Error::io("stat directory", &cq_dir, e))? {
            let list = |dir: &Path| storage.list_dir(dir).map_err(|e| Error::io("list directory", dir, e));
            for topic in list(&cq_dir)? {
                let topic_dir = cq_dir.join(&topic);
                // Not a name this store writes: not ours, left alone.
                if validate_topic(&topic).is_err() {
                    continue;
                }
                let Some(names) = list_dir_or_remove_file(storage.as_ref(), &topic_dir)? else {
                    continue;
                };
                for name in names {
                    let Some(id) = parse_queue_id(&name) else {
                        continue;
                    };
                    // A plain file where a queue's directory belongs is
                    // damage in our own namespace: removed, the queue is
                    // rebuilt from the log.
                    if list_dir_or_remove_file(storage.as_ref(), &topic_dir.join(&name))?.is_none() {
                        continue;
                    }
                    let q = match ConsumeQueue::open(storage.clone(), root, &topic, id, units_per_file)
                        .map(|q| q.sharing_creation_sync(&defer))
                    {
                        Ok(q) => q,
                        // Derived data: a queue whose files are damaged
                        // beyond the tail repair `open` does (a wrong length,
                        // overlapping or foreign names) is emptied here, and
                        // the store rebuilds it from the commit log.
                        Err(Error::Corruption { .. }) => {
                            let qdir = topic_dir.join(&name);
                            for f in list(&qdir)? {
                                let path = qdir.join(f);
                                storage
                                    .remove_file(&path)
                                    .map_err(|e| Error::io("remove damaged queue file", &path, e))?;
                            }
                            storage.sync_dir(&qdir).map_err(|e| Error::io("fsync directory", &qdir, e))?;
                            ConsumeQueue::open(storage.clone(), root, &topic, id, units_per_file)?
                        }
                        Err(e) => return Err(e),
                    };
                    if !q.has_no_files() {
                        queues.entry(topic.clone()).or_default().insert(id, Arc::new(q));
                    }
                }
            }
        }
        Ok(Self {
            storage,
            root: root.to_path_buf(),
            units_per_file,
            queues: RwLock::new(queues),
            defer_creation_syncs: defer,
            removals: AtomicU64::new(0),
        })
    }

    /// When queues make new files and directories durable from now on.
    /// Store recovery switches to [`CreationSync::AtFlush`] while it
    /// re-dispatches (a rebuild of 10,000 queues otherwise paid several
    /// fsyncs per queue) and back to [`CreationSync::Immediate`] once
    /// [`ConsumeQueueSet::flush_all`] made everything durable.
    pub(crate) fn set_creation_sync(&self, sync: CreationSync) {
        self.defer_creation_syncs.store(sync == CreationSync::AtFlush, Ordering::Release);
    }

    /// The queue `(topic, queue_id)`, if it exists.
    #[must_use]
    pub fn queue(&self, topic: &str, queue_id: u32) -> Option<Arc<ConsumeQueue>> {
        self.queues.read().get(topic)?.get(&queue_id).cloned()
    }

    /// The queue `(topic, queue_id)`, opened (empty, no file yet) if it does
    /// not exist. `InvalidArgument` for a topic outside `[%|a-zA-Z0-9_-]`.
    pub(crate) fn get_or_create(&self, topic: &str, queue_id: u32) -> Result<Arc<ConsumeQueue>> {
        if let Some(q) = self.queue(topic, queue_id) {
            return Ok(q);
        }
        validate_topic(topic)?;
        let mut queues = self.queues.write();
        if let Some(q) = queues.get(topic).and_then(|m| m.get(&queue_id)) {
            return Ok(q.clone());
        }
        // Opening a queue with no directory does no writes; a directory left
        // empty by `remove_topic` opens as an empty queue. The topic is
        // listed only once a queue opened.
        let q = Arc::new(
            ConsumeQueue::open(self.storage.clone(), &self.root, topic, queue_id, self.units_per_file)?
                .sharing_creation_sync(&self.defer_creation_syncs),
        );
        queues.entry(topic.to_string()).or_default().insert(queue_id, q.clone());
        Ok(q)
    }

    /// Names of every topic with at least one queue, sorted.
    #[must_use]
    pub fn topics(&self) -> Vec<String> {
        self.queues.read().keys().cloned().collect()
    }

    /// Every queue of `topic`, by ascending queue id.
    #[must_use]
    pub fn queues_of(&self, topic: &str) -> Vec<(u32, Arc<ConsumeQueue>)> {
        self.queues.read().get(topic).map_or_else(Vec::new, |m| m.iter().map(|(id, q)| (*id, q.clone())).collect())
    }

    /// Every queue, for whole-store passes.
    fn all(&self) -> Vec<Arc<ConsumeQueue>> {
        self.queues.read().values().flat_map(|m| m.values().cloned()).collect()
    }

    /// Deletes every file of `topic`'s queues and forgets them. Handles
    /// still held elsewhere see empty queues. On an error the topic stays
    /// listed, its queues possibly emptied.
    pub(crate) fn remove_topic(&self, topic: &str) -> Result<()> {
        for (_, q) in self.queues_of(topic) {
            q.destroy()?;
        }
        self.queues.write().remove(topic);
        self.removals.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Deletes one queue's files (the store rebuilds a queue that no longer
    /// matches the commit log this way). Handles still held see it empty.
    pub(crate) fn remove_queue(&self, topic: &str, queue_id: u32) -> Result<()> {
        if let Some(q) = self.queue(topic, queue_id) {
            q.destroy()?;
        }
        if let Some(per_topic) = self.queues.write().get_mut(topic) {
            per_topic.remove(&queue_id);
        }
        self.removals.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// How many times queues were removed since the set was opened.
    pub(crate) fn removals(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    /// Gives back the mapped pages of every queue's older units (see
    /// [`ConsumeQueue::release_resident`]).
    pub(crate) fn release_resident(&self) {
        self.all().iter().for_each(|q| q.release_resident());
    }

    /// Flushes every queue; stops at the first failure (after which the
    /// store fences, so the rest need not be attempted).
    pub(crate) fn flush_all(&self) -> Result<()> {
        self.all().iter().try_for_each(|q| q.flush())
    }

    /// Discards, in every queue, the units whose record does not end at or
    /// before `end` (the commit log's recovered end).
    pub(crate) fn truncate_physical_all(&self, end: PhysicalOffset) -> Result<()> {
        self.all().iter().try_for_each(|q| q.truncate_physical(end))
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue::tests::unit;
    use super::*;
    use crate::offset::QueueOffset;
    use crate::storage::StdStorage;

    fn open(root: &Path) -> ConsumeQueueSet {
        ConsumeQueueSet::open(Arc::new(StdStorage), root, 4).unwrap()
    }

    #[test]
    fn discovers_queues_on_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let set = open(tmp.path());
        assert!(set.topics().is_empty());
        for (topic, id, n) in [("A", 0, 5), ("A", 7, 1), ("%RETRY%g", 1, 9)] {
            let q = set.get_or_create(topic, id).unwrap();
            for i in 0..n {
                q.put(QueueOffset(i), unit(i)).unwrap();
            }
        }
        // Created but never written: no file, so not found on reopen.
        set.get_or_create("Empty", 2).unwrap();
        assert!(Arc::ptr_eq(&set.get_or_create("A", 0).unwrap(), &set.queue("A", 0).unwrap()));
        assert_eq!(set.topics(), vec!["%RETRY%g", "A", "Empty"]);
        set.flush_all().unwrap();
        drop(set);

        let set = open(tmp.path());
        assert_eq!(set.topics(), vec!["%RETRY%g", "A"]);
        let ids: Vec<(u32, u64)> = set.queues_of("A").iter().map(|(id, q)| (*id, q.max_offset().0)).collect();
        assert_eq!(ids, vec![(0, 5), (7, 1)]);
        assert_eq!(set.queue("%RETRY%g", 1).unwrap().last(), Some((QueueOffset(8), unit(8))));
        assert!(set.queue("A", 1).is_none());
        assert!(set.queues_of("nope").is_empty());

        set.truncate_physical_all(PhysicalOffset(1250)).unwrap();
        assert_eq!(set.queue("A", 0).unwrap().max_offset(), QueueOffset(2));
        assert_eq!(set.queue("%RETRY%g", 1).unwrap().max_offset(), QueueOffset(2));

        let held = set.queue("A", 0).unwrap();
        set.remove_topic("A").unwrap();
        assert_eq!(held.max_offset(), QueueOffset(0));
        assert_eq!(set.topics(), vec!["%RETRY%g"]);
        drop((set, held));
        assert_eq!(open(tmp.path()).topics(), vec!["%RETRY%g"]);
    }

    /// Under `CreationSync::AtFlush` a new queue's files and the
    /// directories it created (queue, topic, `consumequeue`) become durable
    /// only at its flush. `SimStorage` keeps a creation only once its
    /// directory is synced: before the flush a crash may lose the queue
    /// (whatever survives opens as a gap-free prefix), after it every unit
    /// survives.
    #[test]
    fn deferred_creations_are_durable_after_the_flush() {
        use crate::storage::SimStorage;
        let sim = SimStorage::new();
        let root = Path::new("/store");
        sim.create_dir_all(root).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        let set = ConsumeQueueSet::open(Arc::new(sim.clone()), root, 4).unwrap();
        set.set_creation_sync(CreationSync::AtFlush);
        let q = set.get_or_create("T", 3).unwrap();
        // Two files of 4 units.
        for i in 0..6 {
            q.put(QueueOffset(i), unit(i)).unwrap();
        }
        let before = ConsumeQueueSet::open(Arc::new(sim.crash_now(7).restore()), root, 4).unwrap();
        if let Some(q) = before.queue("T", 3) {
            let n = q.max_offset().0;
            assert!(n <= 6 && q.last().is_none_or(|(at, u)| at.0 + 1 == n && u == unit(at.0)), "{n}");
        }
        set.flush_all().unwrap();
        let after = ConsumeQueueSet::open(Arc::new(sim.crash_now(8).restore()), root, 4).unwrap();
        let q = after.queue("T", 3).expect("the queue is durable once flushed");
        assert_eq!((q.min_offset(), q.max_offset()), (QueueOffset(0), QueueOffset(6)));
        assert_eq!(q.last(), Some((QueueOffset(5), unit(5))));
    }

    #[test]
    fn bad_names_are_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let set = open(tmp.path());
        for bad in ["", "a/b", "..", "a b"] {
            assert!(matches!(set.get_or_create(bad, 0), Err(Error::InvalidArgument(_))), "{bad:?}");
        }
        assert!(matches!(ConsumeQueueSet::open(Arc::new(StdStorage), tmp.path(), 0), Err(Error::InvalidArgument(_))));
        // Names this store never writes are not ours: skipped, untouched.
        let cq = tmp.path().join(CONSUME_QUEUE_DIR);
        std::fs::create_dir_all(cq.join("T").join("01")).unwrap();
        std::fs::create_dir_all(cq.join("bad.topic")).unwrap();
        let set = ConsumeQueueSet::open(Arc::new(StdStorage), tmp.path(), 4).unwrap();
        assert!(set.topics().is_empty());
        assert!(cq.join("T").join("01").exists() && cq.join("bad.topic").exists());
    }
}
