//! The store's index: the index files under `index/`, named by the
//! physical offset of the first record they may index (20 digits), rolled
//! when full, fed in commit-log order.
//!
//! Invariants: files are in ascending order of their names and of the
//! offsets they hold; only the newest file is written; every older file is
//! full and sealed. Everything below the newest entry's record is indexed
//! (the index resumes at that record after a crash: its keys may be
//! indexed twice, which lookups fold).

use super::deferred::{Deferred, WAKE_AT};
use super::file::{IndexFile, IndexFileSize};
use crate::error::{Error, Result};
use crate::storage::Storage;
use parking_lot::{Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Directory of the index files under the store root.
pub(crate) const INDEX_DIR: &str = "index";

/// What index recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexRecovery {
    /// Index files kept.
    pub files: usize,
    /// Entries kept in them.
    pub entries: u64,
    /// Damaged files removed (with every newer file): their records are
    /// indexed again from the commit log.
    pub files_removed: usize,
}

/// A durable multimap from keys to commit-log offsets, in index files
/// under `<root>/index/` (RocketMQ's IndexFile shape, with checksummed
/// entries and crash recovery). The store feeds it from dispatch; it also
/// works on its own, like [`CommitLog`](crate::commitlog::CommitLog).
///
/// ```
/// use mqstore::index::{Index, IndexFileSize};
/// use std::sync::Arc;
/// # fn main() -> mqstore::Result<()> {
/// let dir = tempfile::tempdir().map_err(|e| mqstore::Error::InvalidArgument(e.to_string()))?;
/// let size = IndexFileSize { slots: 1024, max_entries: 4096 };
/// let storage = Arc::new(mqstore::storage::StdStorage);
/// let (index, _) = Index::open(storage.clone(), dir.path(), size, u64::MAX)?;
/// index.put(["orders#o-1", "orders#o-2"], 4_096, 1_700_000_000_000, 0)?;
/// index.put(["orders#o-1"], 8_192, 1_700_000_000_500, 0)?;
/// assert_eq!(index.lookup("orders#o-1", 0, u64::MAX, 10), [8_192, 4_096]);
/// index.flush()?;
/// drop(index);
/// // Reopened: everything is still there.
/// let (index, report) = Index::open(storage, dir.path(), size, u64::MAX)?;
/// assert_eq!((report.files, report.entries), (1, 3));
/// assert_eq!(index.lookup("orders#o-2", 0, u64::MAX, 10), [4_096]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Index {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    size: IndexFileSize,
    /// Ascending by first offset.
    files: RwLock<Vec<Arc<IndexFile>>>,
    /// Serialises writers (the drain, `put`, flush, removal) and holds
    /// the batch being written.
    writer: Mutex<Writer>,
    /// Keys dispatch deferred, waiting for [`Index::drain`] (see
    /// [`super::deferred`]). Locked briefly, never while writing files, so
    /// dispatch does not wait for a drain in progress.
    deferred: Mutex<Deferred>,
}

/// What the writer lock guards: the batch of deferred keys taken for
/// writing, and how many of them are written. A failed write (a full disk
/// when rolling to a new file) leaves the rest here, ahead of anything
/// deferred since, for the next drain.
#[derive(Debug, Default)]
struct Writer {
    batch: Deferred,
    written: usize,
}

fn file_name(first_phy: u64) -> String {
    format!("{first_phy:020}")
}

fn parse_name(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit())).then(|| name.parse().ok()).flatten()
}

/// Records below this offset are indexed already and must be skipped:
/// the newest file's last entry, or, when that file is empty, its first
/// offset. An empty newest file (a crash lost its unsynced entries right
/// after a roll) still starts where the sealed, complete file before it
/// ended, so a re-dispatched record below its start belongs to that file
/// and is skipped; putting it into the empty file would break the file's
/// offset order. `None` when there is no file (index from the start).
fn indexed_below(newest: Option<&IndexFile>) -> Option<u64> {
    newest.map(IndexFile::last_phy)
}

impl Index {
    /// Opens (or starts) the index files of `root` with files of `size`
    /// for new files (existing files keep theirs), keeping only entries of
    /// records below `log_end` (the commit log's end: entries of records a
    /// crash cut off go). A damaged file is removed with every newer one;
    /// [`Index::resume_at`] then says where indexing must resume.
    pub fn open(
        storage: Arc<dyn Storage>,
        root: &Path,
        size: IndexFileSize,
        log_end: u64,
    ) -> Result<(Self, IndexRecovery)> {
        let dir = root.join(INDEX_DIR);
        let mut report = IndexRecovery::default();
        let mut files: Vec<Arc<IndexFile>> = Vec::new();
        if storage.exists(&dir).map_err(|e| Error::io("stat directory", &dir, e))? {
            let mut names: Vec<(u64, String)> = storage
                .list_dir(&dir)
                .map_err(|e| Error::io("list directory", &dir, e))?
                .into_iter()
                .filter_map(|n| parse_name(&n).map(|p| (p, n)))
                .collect();
            names.sort();
            let mut damaged_from = None;
            for (i, (first, name)) in names.iter().enumerate() {
                let path = dir.join(name);
                // Files for records the log no longer has go entirely.
                if *first >= log_end && *first > 0 {
                    damaged_from = Some(i);
                    break;
                }
                match IndexFile::open(storage.as_ref(), &path, log_end) {
                    Ok((f, r)) if f.first_phy == *first => {
                        report.entries += u64::from(r.entries);
                        // Only the newest file may be unsealed.
                        if let Some(prev) = files.last() {
                            if !prev.is_sealed() {
                                damaged_from = Some(i - 1);
                                break;
                            }
                        }
                        files.push(Arc::new(f));
                    }
                    Ok(_) | Err(Error::Corruption { .. }) => {
                        damaged_from = Some(i);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(from) = damaged_from {
                files.truncate(from);
                for (_, name) in &names[from..] {
                    let path = dir.join(name);
                    storage.remove_file(&path).map_err(|e| Error::io("remove index file", &path, e))?;
                    report.files_removed += 1;
                }
                storage.sync_dir(&dir).map_err(|e| Error::io("sync index directory", &dir, e))?;
                report.entries = files.iter().map(|f| u64::from(f.count())).sum();
            }
        }
        report.files = files.len();
        let index = Self {
            storage,
            dir,
            size,
            files: RwLock::new(files),
            writer: Mutex::default(),
            deferred: Mutex::default(),
        };
        Ok((index, report))
    }

    /// Where indexing resumes: the record of the newest entry (indexed
    /// again, in case the crash came between its keys), or `None` when the
    /// index is empty (index from the start of the log).
    pub fn resume_at(&self) -> Option<u64> {
        let files = self.files.read();
        let newest = files.iter().rev().find(|f| f.count() > 0)?;
        Some(newest.last_phy())
    }

    /// Indexes `keys` of the record at `phy` stored at `ts` (a new file,
    /// when one is needed, records `created_ms`). Records must come in
    /// commit-log order; records below the newest entry's are already
    /// indexed and skipped.
    pub fn put<'a>(&self, keys: impl IntoIterator<Item = &'a str>, phy: u64, ts: u64, created_ms: u64) -> Result<()> {
        let mut w = self.writer.lock();
        // Deferred keys are of earlier records: they go first.
        self.drain_locked(&mut w)?;
        let mut active = self.files.read().last().cloned();
        if indexed_below(active.as_deref()).is_some_and(|last| phy < last) {
            return Ok(());
        }
        for key in keys {
            active = Some(self.put_one(active, key, phy, ts, created_ms)?);
        }
        Ok(())
    }

    /// Defers indexing `<topic>#<key>` for each of `keys` of the record at
    /// `phy` stored at `ts`: the keys wait, in the order deferred, until
    /// [`Index::drain`] writes them (see [`super::deferred`]). Records must
    /// come in commit-log order. When the backlog is at its bound (see
    /// `MAX_WAITING`), this writes it first. Returns whether the backlog
    /// just reached the size at which the caller should have it drained
    /// elsewhere.
    pub(crate) fn defer_in_topic<'a>(
        &self,
        topic: &str,
        keys: impl IntoIterator<Item = &'a str>,
        phy: u64,
        ts: u64,
    ) -> Result<bool> {
        let mut d = self.deferred.lock();
        if d.is_full() {
            drop(d);
            self.drain()?;
            d = self.deferred.lock();
        }
        let before = d.len();
        for key in keys {
            d.push(topic, key, phy, ts);
        }
        Ok(before < WAKE_AT && d.len() >= WAKE_AT)
    }

    /// Writes every deferred key into the index files, in the order
    /// deferred. On failure (a full disk when rolling to a new file) the
    /// keys not yet written keep waiting, ahead of any deferred later.
    pub(crate) fn drain(&self) -> Result<()> {
        let mut w = self.writer.lock();
        self.drain_locked(&mut w)
    }

    /// [`Index::drain`] under the writer lock. Holding it while taking the
    /// waiting keys keeps batches in order: a later drain cannot take and
    /// write newer keys before this one wrote the older.
    fn drain_locked(&self, w: &mut Writer) -> Result<()> {
        // What a failed drain left first, then everything waiting now.
        self.write_batch(w)?;
        {
            let mut d = self.deferred.lock();
            if d.is_empty() {
                return Ok(());
            }
            std::mem::swap(&mut *d, &mut w.batch);
        }
        self.write_batch(w)
    }

    /// Writes the keys of `w.batch` not written yet, then empties it.
    fn write_batch(&self, w: &mut Writer) -> Result<()> {
        if w.batch.is_empty() {
            return Ok(());
        }
        let mut active = self.files.read().last().cloned();
        while let Some((key, k)) = w.batch.get(w.written) {
            // Records below the newest entry's are indexed already
            // (re-dispatched after a crash): skipped.
            if indexed_below(active.as_deref()).is_none_or(|last| k.phy >= last) {
                // A new file records the record's store time as its
                // creation time (only informational), which saves a clock
                // read per message.
                active = Some(self.put_one(active, key, k.phy, k.ts, k.ts)?);
            }
            w.written += 1;
        }
        w.batch.clear();
        w.written = 0;
        Ok(())
    }

    /// Puts one key into `active` (the newest file), rolling to a new file
    /// when it is full; returns the file written.
    fn put_one(
        &self,
        active: Option<Arc<IndexFile>>,
        key: &str,
        phy: u64,
        ts: u64,
        created_ms: u64,
    ) -> Result<Arc<IndexFile>> {
        let file = match active {
            Some(f) if !f.is_full() => f,
            full => {
                if let Some(f) = full {
                    f.seal()?;
                }
                self.roll(phy, created_ms)?
            }
        };
        if !file.put(key, phy, ts)? {
            return Err(Error::InvalidArgument("a new index file is full".into()));
        }
        Ok(file)
    }

    fn roll(&self, first_phy: u64, created_ms: u64) -> Result<Arc<IndexFile>> {
        self.storage.create_dir_all(&self.dir).map_err(|e| Error::io("create directory", &self.dir, e))?;
        let path = self.dir.join(file_name(first_phy));
        let f = Arc::new(IndexFile::create(self.storage.as_ref(), &path, self.size, first_phy, created_ms)?);
        self.files.write().push(f.clone());
        Ok(f)
    }

    /// Writes the newest file's new entries to disk.
    pub fn flush(&self) -> Result<()> {
        let mut w = self.writer.lock();
        self.drain_locked(&mut w)?;
        let active = self.files.read().last().cloned();
        match active {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }

    /// Gives back the mapped pages of every sealed (full) file, so the
    /// resident set does not grow with the files written; lookups fault
    /// them in again from the page cache. The newest file, written at
    /// random slots, stays: its size is bounded by [`IndexFileSize`].
    pub(crate) fn release_resident(&self) {
        let files = self.files.read().clone();
        for f in files.iter().rev().skip(1) {
            f.release();
        }
    }

    /// Physical offsets of up to `max` records whose index entries match
    /// `key` and whose store time is in `[begin, end]`, newest first,
    /// without repeats. Candidates: another key may share both hashes, so
    /// a caller that must be exact checks the records (see
    /// [`Index::lookup_with`]).
    pub fn lookup(&self, key: &str, begin: u64, end: u64, max: usize) -> Vec<u64> {
        let mut found = Vec::new();
        self.lookup_with(key, begin, end, max, |phy| {
            found.push(phy);
            true
        });
        found
    }

    /// Like [`Index::lookup`], offering each candidate offset (newest
    /// first, without repeats) to `accept`, until `max` were accepted.
    pub fn lookup_with(&self, key: &str, begin: u64, end: u64, max: usize, accept: impl FnMut(u64) -> bool) {
        self.lookup_from(key, 0, begin, end, max, accept);
    }

    /// [`Index::lookup_with`] for records at or above `min_phy` only: the
    /// walk stops at the first file (newest first) that holds nothing
    /// there, so a lookup in a recently created topic, or one that finds
    /// nothing, does not touch every older file.
    pub(crate) fn lookup_from(
        &self,
        key: &str,
        min_phy: u64,
        begin: u64,
        end: u64,
        max: usize,
        mut accept: impl FnMut(u64) -> bool,
    ) {
        // Every dispatched record is found. A failed drain leaves its keys
        // waiting; the dispatch thread reports that failure.
        let _ = self.drain();
        let files: Vec<Arc<IndexFile>> = self.files.read().clone();
        let mut seen: Vec<u64> = Vec::new();
        let mut accepted = 0;
        for (i, f) in files.iter().enumerate().rev() {
            // A file holds only records below its successor's first offset.
            if files.get(i + 1).is_some_and(|next| next.first_phy <= min_phy) {
                return;
            }
            match f.time_range() {
                Some((lo, hi)) if lo <= end && begin <= hi => {}
                _ => continue,
            }
            let mut part = Vec::new();
            f.lookup(key, begin, end, usize::MAX, &mut part);
            for (phy, _) in part.into_iter().filter(|&(phy, _)| phy >= min_phy) {
                if accepted >= max {
                    return;
                }
                // Repeats (a record indexed again after a crash) sit next to
                // each other in offset order.
                if seen.contains(&phy) {
                    continue;
                }
                seen.push(phy);
                if accept(phy) {
                    accepted += 1;
                }
            }
        }
    }

    /// Removes the index files whose every entry points below `floor` (the
    /// commit log's new first offset): each file except the newest, whose
    /// successor starts at or below `floor` (a file holds only records below
    /// its successor's name). Oldest first, then the directory is synced.
    /// Returns how many went.
    pub(crate) fn remove_files_below(&self, floor: u64) -> Result<usize> {
        let _w = self.writer.lock();
        let doomed: Vec<Arc<IndexFile>> = {
            let mut files = self.files.write();
            let n = files.windows(2).take_while(|w| w[1].first_phy <= floor).count();
            files.drain(..n).collect()
        };
        for f in &doomed {
            let path = self.dir.join(file_name(f.first_phy));
            self.storage.remove_file(&path).map_err(|e| Error::io("remove index file", &path, e))?;
        }
        if !doomed.is_empty() {
            self.storage.sync_dir(&self.dir).map_err(|e| Error::io("sync index directory", &self.dir, e))?;
        }
        Ok(doomed.len())
    }

    /// Index files and their entries.
    pub fn stats(&self) -> (usize, u64) {
        // As lookups: counts every dispatched record's keys.
        let _ = self.drain();
        let files = self.files.read();
        (files.len(), files.iter().map(|f| u64::from(f.count())).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::deferred::{MAX_WAITING, MAX_WAITING_BYTES};
    use crate::index::file::INDEX_HEADER_LEN;
    use crate::storage::StdStorage;

    const SIZE: IndexFileSize = IndexFileSize { slots: 5, max_entries: 8 };

    fn open(root: &Path, end: u64) -> (Index, IndexRecovery) {
        Index::open(Arc::new(StdStorage), root, SIZE, end).unwrap()
    }

    #[test]
    fn rolls_when_full_and_finds_keys_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let (ix, r) = open(dir.path(), u64::MAX);
        assert_eq!(r, IndexRecovery::default());
        for i in 0..30u64 {
            ix.put([format!("t#k{}", i % 4).as_str(), "t#all"], i * 10, 100 + i, 1).unwrap();
        }
        assert_eq!(ix.stats(), (8, 60));
        assert_eq!(ix.lookup("t#k1", 0, u64::MAX, 100), [290, 250, 210, 170, 130, 90, 50, 10]);
        assert_eq!(ix.lookup("t#all", 0, u64::MAX, 3), [290, 280, 270]);
        assert_eq!(ix.lookup("t#all", 105, 107, 100), [70, 60, 50]);
        drop(ix);
        // Reopen: all sealed files trusted, the last one scanned.
        let (ix, r) = open(dir.path(), u64::MAX);
        assert_eq!((r.files, r.entries, r.files_removed), (8, 60, 0));
        assert_eq!(ix.resume_at(), Some(290));
        // Records at or after the newest one are indexed; earlier ones
        // (a re-dispatch) are skipped.
        ix.put(["t#k1"], 200, 1, 1).unwrap();
        ix.put(["t#k1"], 300, 1, 1).unwrap();
        assert_eq!(ix.lookup("t#k1", 0, u64::MAX, 3), [300, 290, 250]);
    }

    /// Stopping at the first file that holds nothing at or above the floor
    /// never loses an entry there: every floor gives what a full walk
    /// gives above it.
    #[test]
    fn lookups_from_a_floor_find_everything_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let (ix, _) = open(dir.path(), u64::MAX);
        for i in 0..30u64 {
            ix.put([format!("t#k{}", i % 4).as_str(), "t#all"], i * 10, 100 + i, 1).unwrap();
        }
        assert_eq!(ix.stats().0, 8);
        for key in ["t#k0", "t#k1", "t#all"] {
            let all = ix.lookup(key, 0, u64::MAX, 100);
            for floor in 0..=300 {
                let mut got = Vec::new();
                ix.lookup_from(key, floor, 0, u64::MAX, 100, |phy| {
                    got.push(phy);
                    true
                });
                let want: Vec<u64> = all.iter().copied().filter(|&p| p >= floor).collect();
                assert_eq!(got, want, "{key} from {floor}");
            }
        }
    }

    /// A crash right after a roll can leave the new file empty (its
    /// entries were never synced) while the sealed file before it is
    /// complete. Recovery re-dispatches from the sealed file's newest
    /// record, which is below the empty file's start: it must be skipped,
    /// not refused (that refusal made the store fail to open).
    #[test]
    fn a_record_redispatched_below_an_empty_newest_file_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (ix, _) = open(dir.path(), u64::MAX);
            for i in 0..9u64 {
                ix.put(["k"], i * 10, i, 1).unwrap();
            }
            assert_eq!(ix.stats(), (2, 9));
        }
        // The second file (from 80) lost its unsynced slots and entries.
        let second = dir.path().join(INDEX_DIR).join(file_name(80));
        let mut b = std::fs::read(&second).unwrap();
        b[INDEX_HEADER_LEN..].fill(0);
        std::fs::write(&second, &b).unwrap();
        let (ix, r) = open(dir.path(), u64::MAX);
        assert_eq!((r.files, r.entries), (2, 8));
        assert_eq!(ix.resume_at(), Some(70));
        // Re-dispatch from the resume point: 70 is skipped, 80 indexed.
        ix.put(["k"], 70, 7, 1).unwrap();
        ix.defer_in_topic("t", ["k"], 70, 7).unwrap();
        ix.put(["k"], 80, 8, 1).unwrap();
        assert_eq!(ix.lookup("k", 0, u64::MAX, 3), [80, 70, 60]);
        assert_eq!(ix.stats(), (2, 9));
    }

    #[test]
    fn a_cut_log_cuts_the_index_and_damage_removes_files_from_there() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (ix, _) = open(dir.path(), u64::MAX);
            for i in 0..30u64 {
                ix.put([format!("k{}", i % 3).as_str()], i * 10, i, 1).unwrap();
            }
            ix.flush().unwrap();
        }
        // The log now ends at 125: entries of records 130.. go, and so do
        // files that start after the end.
        let (ix, r) = open(dir.path(), 125);
        assert_eq!(ix.resume_at(), Some(120));
        assert_eq!(r.entries, 13);
        assert_eq!(ix.lookup("k0", 0, u64::MAX, 100), [120, 90, 60, 30, 0]);
        drop(ix);
        // Damage the second file's header: it and every newer file go.
        let second = dir.path().join(INDEX_DIR).join(file_name(80));
        let mut b = std::fs::read(&second).unwrap();
        b[20] ^= 1;
        std::fs::write(&second, &b).unwrap();
        let (ix, r) = open(dir.path(), u64::MAX);
        assert_eq!((r.files, r.files_removed), (1, 1));
        assert_eq!(ix.resume_at(), Some(70));
    }

    /// Deferred keys are written in the order deferred, across rolls, and
    /// every read or persist sees them: lookups, `stats`, `put` of a later
    /// record, and `flush` (then a reopen).
    #[test]
    fn deferred_keys_are_seen_by_every_reader_and_kept_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (ix, _) = open(dir.path(), u64::MAX);
        for i in 0..20u64 {
            let nudge = ix.defer_in_topic("t", [format!("k{}", i % 4).as_str(), "all"], i * 10, 100 + i).unwrap();
            assert!(!nudge, "40 keys stay far below the wake-up mark");
        }
        // Nothing is in the files yet; a lookup writes the waiting keys first.
        assert_eq!(ix.files.read().len(), 0);
        assert_eq!(ix.lookup("t#k1", 0, u64::MAX, 100), [170, 130, 90, 50, 10]);
        assert_eq!(ix.stats(), (5, 40));
        for i in 20..24u64 {
            ix.defer_in_topic("t", ["all"], i * 10, 100 + i).unwrap();
        }
        assert_eq!(ix.stats(), (6, 44));
        // `put` of a later record writes the earlier deferred ones first
        // (files take records in commit-log order only).
        ix.defer_in_topic("t", ["k9"], 240, 124).unwrap();
        ix.put(["t#k9"], 250, 125, 1).unwrap();
        assert_eq!(ix.lookup("t#k9", 0, u64::MAX, 10), [250, 240]);
        ix.defer_in_topic("t", ["last"], 260, 126).unwrap();
        ix.flush().unwrap();
        drop(ix);
        let (ix, r) = open(dir.path(), u64::MAX);
        assert_eq!((r.entries, r.files_removed), (47, 0));
        assert_eq!(ix.lookup("t#last", 0, u64::MAX, 10), [260]);
        assert_eq!(ix.lookup("t#all", 0, u64::MAX, 3), [230, 220, 210]);
    }

    /// The dispatcher is told once when the backlog reaches the wake-up
    /// mark, and past the bound the deferring thread writes the backlog
    /// itself, so it never grows past [`MAX_WAITING`].
    #[test]
    fn the_backlog_wakes_the_drainer_once_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (ix, _) = Index::open(
            Arc::new(StdStorage),
            dir.path(),
            IndexFileSize { slots: 1024, max_entries: 1 << 20 },
            u64::MAX,
        )
        .unwrap();
        let mut nudges = Vec::new();
        for i in 0..(MAX_WAITING as u64 + 10) {
            if ix.defer_in_topic("t", ["k"], i, 1).unwrap() {
                nudges.push(i);
            }
            assert!(ix.deferred.lock().len() <= MAX_WAITING);
        }
        assert_eq!(
            nudges,
            [WAKE_AT as u64 - 1, MAX_WAITING as u64 + WAKE_AT as u64 - 1]
                .into_iter()
                .filter(|&n| n < MAX_WAITING as u64 + 10)
                .collect::<Vec<_>>()
        );
        // The bound wrote the first MAX_WAITING keys; 10 still wait.
        assert_eq!(ix.files.read().iter().map(|f| u64::from(f.count())).sum::<u64>(), MAX_WAITING as u64);
        assert_eq!(ix.deferred.lock().len(), 10);
        assert_eq!(ix.stats().1, MAX_WAITING as u64 + 10);
        // Long keys: the bound on their bytes applies first.
        let long = "x".repeat(64 << 10);
        for i in 0..200u64 {
            ix.defer_in_topic("t", [long.as_str()], (1 << 20) + i, 1).unwrap();
            let d = ix.deferred.lock();
            assert!(d.len() <= MAX_WAITING_BYTES / long.len() + 1, "{} keys wait", d.len());
        }
    }

    /// A drain that fails (no room for the next file) loses nothing and
    /// reorders nothing: the keys it did not write go first next time,
    /// ahead of keys deferred meanwhile.
    #[test]
    fn a_failed_drain_keeps_its_unwritten_keys_first() {
        use crate::storage::{FaultKind, FaultPlan, FaultyStorage};
        let dir = tempfile::tempdir().unwrap();
        let plan = FaultPlan::new();
        let storage = Arc::new(FaultyStorage::new(Arc::new(StdStorage), plan.clone()));
        let (ix, _) = Index::open(storage, dir.path(), SIZE, u64::MAX).unwrap();
        for i in 0..4u64 {
            ix.defer_in_topic("t", ["k"], i * 10, 100 + i).unwrap();
        }
        ix.drain().unwrap();
        for i in 4..12u64 {
            ix.defer_in_topic("t", ["k"], i * 10, 100 + i).unwrap();
        }
        // Keys 4-7 fill the first file; the roll for key 8 fails.
        plan.fail_op("allocate", FaultKind::NoSpace);
        let err = ix.drain().unwrap_err();
        assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
        assert_eq!(ix.files.read().iter().map(|f| f.count()).collect::<Vec<_>>(), [8]);
        ix.defer_in_topic("t", ["k"], 120, 112).unwrap();
        plan.heal();
        ix.drain().unwrap();
        let want: Vec<u64> = (0..13u64).rev().map(|i| i * 10).collect();
        assert_eq!(ix.lookup("t#k", 0, u64::MAX, 100), want);
        assert_eq!(ix.stats(), (2, 13));
    }
}
