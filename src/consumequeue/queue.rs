//! [`ConsumeQueue`]: the consume queue of one (topic, queue id), a run of
//! fixed-size, preallocated, memory-mapped files of [`CQ_UNIT_LEN`]-byte
//! units.
//!
//! Layout: `<root>/consumequeue/<topic>/<queue id>/<20 digits>`, each file
//! named by the **queue offset** (unit index) of its first unit, zero-padded
//! to 20 digits, and exactly `units_per_file * 20` bytes long. (RocketMQ
//! names these files by byte offset, `queue offset * 20`; we name them by
//! unit index so a name reads as a message position.)
//!
//! Invariants, relied on by readers and restored by recovery
//! ([`super::recover`]):
//! * the files are contiguous: file `i + 1` starts at `first_i +
//!   units_per_file`, and the first file starts at [`ConsumeQueue::min_offset`];
//! * units `[min, max)` are all present (size > 0), with strictly increasing
//!   physical offsets, and `physical_offset + size` does not overflow;
//! * every byte from unit `max` to the end of its file reads as zero, and no
//!   file starts past the one holding `max`, so a scan stops at `max`;
//! * `max` is published with `Release` after the unit bytes are written;
//!   readers load it with `Acquire` and read only below it, so an appended
//!   unit is never seen half-written;
//! * only truncation and destruction ever lower `max` or rewrite bytes below
//!   it, and they hold the file-list write lock, which every reader's read
//!   lock excludes.

use super::unit::{CqUnit, CQ_UNIT_LEN};
use crate::error::{CorruptionKind, Error, Result};
use crate::offset::{PhysicalOffset, QueueOffset};
use crate::storage::{MappedRegion, OpenMode, Storage, StorageFile};
use parking_lot::{Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Units per consume-queue file by default: 300,000 units of 20 bytes, i.e.
/// 6,000,000-byte files, as RocketMQ's `mappedFileSizeConsumeQueue`.
pub const DEFAULT_UNITS_PER_FILE: u64 = 300_000;

/// Largest accepted `units_per_file`: files of at most 1 GiB, so a file
/// length always fits a mapping and a `usize` position.
pub const MAX_UNITS_PER_FILE: u64 = (1 << 30) / UNIT;

/// Name of the directory under the store root that holds every queue.
pub(crate) const CONSUME_QUEUE_DIR: &str = "consumequeue";

/// Longest accepted topic name in bytes (RocketMQ's limit for any topic).
pub const MAX_TOPIC_LEN: usize = 255;

/// Width of a consume-queue file name.
const FILE_NAME_LEN: usize = 20;
/// Suffix of a file being created; such files are deleted on open.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
/// [`CQ_UNIT_LEN`] as a `u64`, for offset arithmetic.
pub(crate) const UNIT: u64 = CQ_UNIT_LEN as u64;

/// File name of the consume-queue file whose first unit is `first`.
pub(crate) fn file_name(first: u64) -> String {
    format!("{first:020}")
}

/// First queue offset encoded in a consume-queue file name, if it is one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    if name.len() == FILE_NAME_LEN && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

/// Checks a topic name: 1 to [`MAX_TOPIC_LEN`] bytes of `[%|a-zA-Z0-9_-]`
/// (RocketMQ's `TopicValidator` alphabet). This alphabet is also what makes a
/// topic safe to use as a directory name: no `/`, no `.` (so never `..`).
pub(crate) fn validate_topic(topic: &str) -> Result<()> {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-');
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN || !topic.bytes().all(ok_char) {
        return Err(Error::InvalidArgument(format!(
            "topic {topic:?} must be 1 to {MAX_TOPIC_LEN} characters of [%|a-zA-Z0-9_-]"
        )));
    }
    Ok(())
}

/// Checks `units_per_file` and returns the file length in bytes.
pub(crate) fn file_len_for(units_per_file: u64) -> Result<u64> {
    if units_per_file == 0 || units_per_file > MAX_UNITS_PER_FILE {
        return Err(Error::InvalidArgument(format!(
            "consume queue units_per_file {units_per_file} must be in 1..={MAX_UNITS_PER_FILE}"
        )));
    }
    Ok(units_per_file * UNIT)
}

/// Directory of the queue `(topic, queue_id)` under the store root.
pub(crate) fn queue_dir(root: &Path, topic: &str, queue_id: u32) -> PathBuf {
    root.join(CONSUME_QUEUE_DIR).join(topic).join(queue_id.to_string())
}

/// What opening a [`ConsumeQueue`] found and repaired. Consume queues are derived
/// data: the store re-dispatches the commit log from the queue's
/// [`ConsumeQueue::max_offset`], so anything reported here is rebuilt rather
/// than lost, as long as the commit log still holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CqRecovery {
    /// Units kept: `[min_offset, max_offset)`.
    pub units_kept: u64,
    /// Non-empty units at or after the recovered end inside the kept files
    /// (a torn or non-monotone tail); they were zeroed and synced.
    pub units_discarded: u64,
    /// Whole files deleted: files after the recovered end, and every file
    /// after a missing one.
    pub files_removed: u64,
    /// Set when a file was missing from the middle of the sequence: the
    /// first queue offset of the missing file. Everything from there on was
    /// treated as lost (and is counted in `files_removed`).
    pub missing_file_at: Option<QueueOffset>,
}

/// Units just below a queue's end whose pages stay mapped on a release
/// (80 KiB): consumers following the tail read them next.
pub(crate) const RELEASE_KEEP_UNITS: u64 = 4096;

/// One mapped consume-queue file.
#[derive(Debug)]
pub(crate) struct CqFile {
    /// Queue offset of the file's first unit.
    pub(crate) first: u64,
    pub(crate) path: PathBuf,
    /// Kept so the mapping's file stays open for the life of the queue.
    _file: Arc<dyn StorageFile>,
    region: Arc<dyn MappedRegion>,
}

impl CqFile {
    /// Wraps an opened file and its mapping; the mapping must be exactly the
    /// queue's file length (checked by the caller, which created both).
    pub(crate) fn new(first: u64, path: PathBuf, file: Arc<dyn StorageFile>, region: Arc<dyn MappedRegion>) -> Self {
        Self { first, path, _file: file, region }
    }

    /// Byte position of unit `idx` in the mapping.
    fn pos(&self, idx: u64) -> usize {
        // The mapping is at most 1 GiB (MAX_UNITS_PER_FILE) and idx is
        // below units_per_file, so this fits; the debug_assert guards callers.
        let pos = idx as usize * CQ_UNIT_LEN;
        debug_assert!(pos + CQ_UNIT_LEN <= self.region.len());
        pos
    }

    /// Copies unit `idx` out of the mapping.
    ///
    /// # Safety
    /// `idx` must be below `units_per_file`, and no one may write the unit
    /// concurrently: it is below the published `max` (appends only write at
    /// `max`) and the caller holds the file-list read or write lock (which
    /// excludes truncation), or the caller is the writer itself.
    unsafe fn read_unit(&self, idx: u64) -> [u8; CQ_UNIT_LEN] {
        let mut b = [0u8; CQ_UNIT_LEN];
        let pos = self.pos(idx);
        // SAFETY: the region is valid for its length (MappedRegion contract),
        // the range is inside it, and the caller guarantees no concurrent
        // writer; `b` is a distinct local buffer.
        unsafe { std::ptr::copy_nonoverlapping(self.region.as_ptr().add(pos), b.as_mut_ptr(), CQ_UNIT_LEN) };
        b
    }

    /// Borrows units `[idx, idx + n)` of the mapping, `n * CQ_UNIT_LEN`
    /// bytes: a batch read decodes them in place, with one file lookup for
    /// the whole run instead of one per unit.
    ///
    /// # Safety
    /// As for [`CqFile::read_unit`], for every unit of the range: `idx + n`
    /// is at most `units_per_file`, every unit is below the published `max`,
    /// and the caller holds the file-list lock for as long as it uses the
    /// slice (its lifetime is tied to `&self`, which the lock guard lends).
    unsafe fn units(&self, idx: u64, n: u64) -> &[u8] {
        if n == 0 {
            return &[];
        }
        let (pos, end) = (self.pos(idx), self.pos(idx + n - 1) + CQ_UNIT_LEN);
        // SAFETY: the region is valid for its length (MappedRegion contract),
        // `[pos, end)` is inside it, and no writer touches units below `max`
        // while the caller's file-list lock excludes truncation.
        unsafe { std::slice::from_raw_parts(self.region.as_ptr().add(pos), end - pos) }
    }

    /// Writes unit `idx` into the mapping.
    ///
    /// # Safety
    /// The caller holds the queue's writer lock, and either `idx` is the
    /// unpublished position `max` (no reader looks at it) or the caller holds
    /// the file-list write lock.
    unsafe fn write_unit(&self, idx: u64, bytes: &[u8; CQ_UNIT_LEN]) {
        let pos = self.pos(idx);
        // SAFETY: in bounds of a live mapping; exclusivity per the contract.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.region.as_ptr().add(pos), CQ_UNIT_LEN) };
    }

    /// Zeroes units `[from, to)` in the mapping.
    ///
    /// # Safety
    /// The caller holds the writer lock and the file-list write lock.
    unsafe fn zero_units(&self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        let (start, end) = (self.pos(from), self.pos(to - 1) + CQ_UNIT_LEN);
        // SAFETY: in bounds of a live mapping; no reader or writer can touch
        // it while the caller holds both locks.
        unsafe { std::ptr::write_bytes(self.region.as_ptr().add(start), 0, end - start) };
    }

    /// Drops this process's mapped pages holding units below `idx` (whole
    /// pages only) from its resident set; contents are unchanged (see
    /// [`MappedRegion::release`]).
    fn release_below(&self, idx: u64) {
        let end = (idx as usize).saturating_mul(CQ_UNIT_LEN).min(self.region.len()) & !4095;
        if end > 0 {
            self.region.release(0, end);
        }
    }

    /// Synchronously writes units `[from, to)` to stable storage.
    fn flush_units(&self, from: u64, to: u64) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        // msync wants a page-aligned start.
        let start = self.pos(from) & !4095;
        let end = self.pos(to - 1) + CQ_UNIT_LEN;
        self.region.flush_range(start, end - start).map_err(|e| Error::io("msync consume queue", &self.path, e))
    }
}

/// Serialised writer-side state (held by `put`, truncation, flush, destroy).
#[derive(Debug)]
pub(crate) struct WriterState {
    /// Units below this queue offset are durable (flushed).
    pub(crate) flushed: u64,
    /// The queue directory exists (its creation is durable, or listed in
    /// `pending`).
    pub(crate) dir_ready: bool,
    /// Creations made under [`CreationSync::AtFlush`] whose syncs the next
    /// [`ConsumeQueue::flush`] owes.
    pub(crate) pending: PendingSyncs,
}

impl WriterState {
    pub(crate) fn new(flushed: u64, dir_ready: bool) -> Self {
        Self { flushed, dir_ready, pending: PendingSyncs::default() }
    }
}

/// When a new queue file, and a new queue directory, are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CreationSync {
    /// At creation (normal operation): a file with a final name always has
    /// its full length on disk, and its entry is durable.
    Immediate,
    /// At the queue's next [`ConsumeQueue::flush`] (store recovery, which
    /// may create thousands of queues and flushes them all before its
    /// dispatch checkpoint). Until then a power loss may leave a file
    /// missing or short: a short file opens as damage and the queue is
    /// rebuilt from the commit log, a missing one is found shorter than the
    /// dispatch checkpoint says (rebuilt) or past it (dispatched again).
    AtFlush,
}

/// File and directory syncs a [`CreationSync::AtFlush`] creation put off.
#[derive(Debug, Default)]
pub(crate) struct PendingSyncs {
    /// New files: their allocation (length) and contents.
    files: Vec<(PathBuf, Arc<dyn StorageFile>)>,
    /// Directories that gained an entry, each once.
    dirs: Vec<PathBuf>,
}

impl PendingSyncs {
    /// Owes a sync of `dir` (once, however many entries it gained).
    fn add_dir(&mut self, dir: &Path) {
        if !self.dirs.iter().any(|d| d == dir) {
            self.dirs.push(dir.to_path_buf());
        }
    }

    /// Whether the file at `path` is owed its `fdatasync`.
    fn has_file(&self, path: &Path) -> bool {
        self.files.iter().any(|(p, _)| p == path)
    }
}

/// The consume queue of one (topic, queue id). See the module docs for the
/// file layout and invariants.
///
/// Reads ([`get`](Self::get), [`read`](Self::read), [`last`](Self::last))
/// take only a shared lock on the file list and run concurrently with the
/// single writer's appends.
#[derive(Debug)]
pub struct ConsumeQueue {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) root: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) topic: String,
    pub(crate) queue_id: u32,
    pub(crate) units_per_file: u64,
    pub(crate) file_len: u64,
    /// Contiguous files, ascending by `first`.
    pub(crate) files: RwLock<Vec<CqFile>>,
    /// First queue offset held; the first file's `first` (0 when no files).
    pub(crate) min: AtomicU64,
    /// Next queue offset to be written; published with `Release`.
    pub(crate) max: AtomicU64,
    /// Every unit below this offset was seen leading below the commit
    /// log's retention floor, where [`ConsumeQueue::live_head`] resumes its
    /// scan. Retention removes the log from its head, so this only grows;
    /// truncation lowers it with the units it discards.
    pub(crate) dead_below: AtomicU64,
    pub(crate) writer: Mutex<WriterState>,
    pub(crate) recovered: CqRecovery,
    /// Set by the owning [`ConsumeQueueSet`](super::ConsumeQueueSet) for all
    /// its queues: `true` while creations are [`CreationSync::AtFlush`].
    pub(crate) defer_creation_syncs: Arc<AtomicBool>,
}

/// The file holding queue offset `offset` and the unit's index in it.
fn locate(files: &[CqFile], units_per_file: u64, offset: u64) -> Option<(&CqFile, u64)> {
    let base = files.first()?.first;
    let rel = offset.checked_sub(base)?;
    let f = files.get(usize::try_from(rel / units_per_file).ok()?)?;
    debug_assert_eq!(f.first, base + rel / units_per_file * units_per_file, "files are contiguous");
    Some((f, rel % units_per_file))
}

impl ConsumeQueue {
    /// Topic of this queue.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queue id of this queue.
    #[must_use]
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// Units per file, fixed for the queue's directory.
    #[must_use]
    pub fn units_per_file(&self) -> u64 {
        self.units_per_file
    }

    /// What recovery found and repaired when the queue was opened.
    #[must_use]
    pub fn recovered(&self) -> &CqRecovery {
        &self.recovered
    }

    /// First queue offset still stored (the first file's first unit).
    #[must_use]
    pub fn min_offset(&self) -> QueueOffset {
        QueueOffset(self.min.load(Ordering::Acquire))
    }

    /// The next queue offset to be written: one past the last unit.
    #[must_use]
    pub fn max_offset(&self) -> QueueOffset {
        QueueOffset(self.max.load(Ordering::Acquire))
    }

    /// Gives back the mapped pages of every unit below `max_offset -`
    /// [`RELEASE_KEEP_UNITS`], so the resident set does not grow with the
    /// units stored (readers fault them in again from the page cache).
    pub(crate) fn release_resident(&self) {
        let files = self.files.read();
        let upto = self.max.load(Ordering::Acquire).saturating_sub(RELEASE_KEEP_UNITS);
        for f in files.iter().take_while(|f| f.first < upto) {
            f.release_below((upto - f.first).min(self.units_per_file));
        }
    }

    /// The last unit and its offset, `None` when the queue is empty.
    #[must_use]
    pub fn last(&self) -> Option<(QueueOffset, CqUnit)> {
        let files = self.files.read();
        let max = self.max.load(Ordering::Acquire);
        let at = max.checked_sub(1)?;
        self.unit_locked(&files, at, max).map(|u| (QueueOffset(at), u))
    }

    /// The unit at `offset`, `None` outside `[min_offset, max_offset)`.
    #[must_use]
    pub fn get(&self, offset: QueueOffset) -> Option<CqUnit> {
        let files = self.files.read();
        let max = self.max.load(Ordering::Acquire);
        self.unit_locked(&files, offset.0, max)
    }

    /// Appends to `out` up to `max` units starting at `from` (clamped to
    /// `[min_offset, max_offset)`), each with its queue offset, in order.
    pub fn read(&self, from: QueueOffset, max: usize, out: &mut Vec<(QueueOffset, CqUnit)>) {
        let files = self.files.read();
        let end = self.max.load(Ordering::Acquire);
        let start = from.0.max(self.min.load(Ordering::Acquire));
        let count = end.saturating_sub(start).min(u64::try_from(max).unwrap_or(u64::MAX));
        // `count` is bounded by the caller's `max`, not by anything on disk.
        out.reserve(usize::try_from(count).unwrap_or(0));
        let stop = start + count;
        let mut at = start;
        // One file lookup (a division) per run of units in one file, not
        // one per unit; the units are decoded straight from the mapping.
        while at < stop {
            let Some((f, idx)) = locate(&files, self.units_per_file, at) else {
                return;
            };
            let n = (self.units_per_file - idx).min(stop - at);
            // SAFETY: `idx + n <= units_per_file`; every unit of the run is
            // below `end`, the published max loaded after taking the
            // file-list lock, which `files` holds while the slice is used.
            let run = unsafe { f.units(idx, n) };
            for bytes in run.chunks_exact(CQ_UNIT_LEN) {
                match CqUnit::decode(bytes) {
                    Some(u) => out.push((QueueOffset(at), u)),
                    None => return,
                }
                at += 1;
            }
        }
    }

    /// Reads unit `at` if it is below `max`. The caller holds the file-list
    /// lock (read or write) and loaded `max` after taking it.
    pub(super) fn unit_locked(&self, files: &[CqFile], at: u64, max: u64) -> Option<CqUnit> {
        if at >= max || at < self.min.load(Ordering::Acquire) {
            return None;
        }
        let (f, idx) = locate(files, self.units_per_file, at)?;
        // SAFETY: `at` is below the published max, so no append writes it,
        // and the caller's file-list lock excludes truncation.
        CqUnit::decode(&unsafe { f.read_unit(idx) })
    }

    /// Stores `unit` at `offset`.
    ///
    /// * `offset == max_offset`: appends, creating the next file when the
    ///   current one is full.
    /// * `offset < max_offset`: an idempotent re-dispatch; succeeds only if
    ///   the stored unit is identical, else `InvalidArgument`. Offsets below
    ///   `min_offset` were removed with their files and are accepted without
    ///   a check.
    /// * `offset > max_offset`: a gap, `InvalidArgument`; the caller must
    ///   truncate and re-dispatch instead.
    ///
    /// An appended unit must have `size > 0`, `physical_offset + size` must
    /// not overflow, and its physical offset must exceed the previous unit's
    /// (`InvalidArgument` otherwise), so recovery never discards what was
    /// accepted. On an I/O error nothing becomes visible.
    pub(crate) fn put(&self, offset: QueueOffset, unit: CqUnit) -> Result<()> {
        let mut w = self.writer.lock();
        let max = self.max.load(Ordering::Acquire);
        if offset.0 < max {
            if offset.0 < self.min.load(Ordering::Acquire) {
                return Ok(());
            }
            return match self.get(offset) {
                Some(stored) if stored == unit => Ok(()),
                stored => Err(Error::InvalidArgument(format!(
                    "consume queue {}/{} offset {offset} holds {stored:?}, not {unit:?}",
                    self.topic, self.queue_id
                ))),
            };
        }
        if offset.0 > max {
            return Err(Error::InvalidArgument(format!(
                "consume queue {}/{}: put at {offset} leaves a gap after max offset {max}",
                self.topic, self.queue_id
            )));
        }
        // One read lock of the file list for the check and the write: each
        // lock and unlock is an atomic read-modify-write, and those were
        // most of a put's time on the dispatch path.
        let mut files = self.files.read();
        self.check_next(&files, max, &unit)?;
        if files.last().is_none_or(|f| max >= f.first + self.units_per_file) {
            drop(files);
            let f = self.create_file(&mut w, max)?;
            self.files.write().push(f);
            files = self.files.read();
        }
        let (f, idx) = locate(&files, self.units_per_file, max).ok_or_else(|| {
            Error::corruption(&self.dir, 0, CorruptionKind::InvalidField { field: "consume queue file sequence" })
        })?;
        // SAFETY: we hold the writer lock and `max` is not yet published, so
        // no reader looks at this unit.
        unsafe { f.write_unit(idx, &unit.encode()) };
        self.max.store(max + 1, Ordering::Release);
        Ok(())
    }

    /// Rejects a unit that would break the on-disk invariants, as the unit
    /// at `max` (the queue's end) with `files` the locked file list.
    fn check_next(&self, files: &[CqFile], max: u64, unit: &CqUnit) -> Result<()> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!("consume queue {}/{}: unit {unit:?} {why}", self.topic, self.queue_id))
        };
        if unit.size == 0 {
            return Err(bad("has size 0, which marks the end of a queue"));
        }
        if unit.physical_offset.checked_add(u64::from(unit.size)).is_none() {
            return Err(bad("ends past u64::MAX"));
        }
        let last = max.checked_sub(1).and_then(|at| self.unit_locked(files, at, max));
        match last {
            Some(prev) if unit.physical_offset <= prev.physical_offset => {
                Err(bad("does not follow the previous unit's physical offset"))
            }
            _ => Ok(()),
        }
    }

    /// Creates, allocates and syncs the file starting at `first`, then
    /// renames it into place and syncs the directory, so a file with a final
    /// name always has its full length.
    ///
    /// Under [`CreationSync::AtFlush`] the file's and the directory's syncs
    /// are left to the next [`flush`](Self::flush).
    fn create_file(&self, w: &mut WriterState, first: u64) -> Result<CqFile> {
        let sync = self.creation_sync();
        if !w.dir_ready {
            self.create_dir(w, sync)?;
            w.dir_ready = true;
        }
        let path = self.dir.join(file_name(first));
        let tmp = self.dir.join(format!("{}{TMP_SUFFIX}", file_name(first)));
        let len = usize::try_from(self.file_len)
            .map_err(|_| Error::InvalidArgument(format!("consume queue file length {}", self.file_len)))?;
        let made = (|| {
            let file = self
                .storage
                .open(&tmp, OpenMode::CreateTruncate)
                .map_err(|e| Error::io("create consume queue", &tmp, e))?;
            file.allocate(self.file_len).map_err(|e| Error::io("allocate consume queue", &tmp, e))?;
            if sync == CreationSync::Immediate {
                file.sync_data().map_err(|e| Error::io("fdatasync consume queue", &tmp, e))?;
            }
            // Mapped before the rename so a failure leaves no final name.
            let region = file.map(len).map_err(|e| Error::io("mmap consume queue", &tmp, e))?;
            self.storage.rename_no_replace(&tmp, &path).map_err(|e| Error::io("rename consume queue", &tmp, e))?;
            match sync {
                CreationSync::Immediate => {
                    self.storage.sync_dir(&self.dir).map_err(|e| Error::io("fsync directory", &self.dir, e))?;
                }
                CreationSync::AtFlush => {
                    w.pending.files.push((path.clone(), file.clone()));
                    w.pending.add_dir(&self.dir);
                }
            }
            Ok(CqFile::new(first, path.clone(), file, region))
        })();
        if made.is_err() {
            // Best effort: the file holds no data yet; leftovers are removed
            // (`.tmp`) or read as an empty tail file by the next open.
            let _ = self.storage.remove_file(&tmp);
            let _ = self.storage.remove_file(&path);
        }
        made
    }

    /// Creates the queue directory and makes the entry of each directory it
    /// creates durable in that directory's parent (topic directory,
    /// `consumequeue`, store root).
    ///
    /// Only parents that gained an entry are synced: syncing all three for
    /// every new queue cost two needless directory fsyncs per queue (20,000
    /// for a store of 1,000 topics x 10 queues). A directory found already
    /// there counts as durable: it was created by this process (which
    /// synced it, or a concurrent creator is about to) or found at open.
    /// If a crash still loses one, its queues are derived data: recovery
    /// sees them shorter than the dispatch checkpoint says and rebuilds
    /// them from the commit log.
    fn create_dir(&self, w: &mut WriterState, sync: CreationSync) -> Result<()> {
        let cq_dir = self.root.join(CONSUME_QUEUE_DIR);
        let topic_dir = cq_dir.join(&self.topic);
        let exists = |d: &Path| self.storage.exists(d).map_err(|e| Error::io("stat directory", d, e));
        // Parents first: a missing parent means every directory below it
        // is new too.
        let new_cq = !exists(&cq_dir)?;
        let new_topic = new_cq || !exists(&topic_dir)?;
        let new_queue = new_topic || !exists(&self.dir)?;
        self.storage.create_dir_all(&self.dir).map_err(|e| Error::io("create directory", &self.dir, e))?;
        for (created, parent) in [(new_queue, &topic_dir), (new_topic, &cq_dir), (new_cq, &self.root)] {
            match (created, sync) {
                (false, _) => {}
                (true, CreationSync::Immediate) => {
                    self.storage.sync_dir(parent).map_err(|e| Error::io("fsync directory", parent, e))?;
                }
                (true, CreationSync::AtFlush) => w.pending.add_dir(parent),
            }
        }
        Ok(())
    }

    /// Makes this queue follow `flag` (its set's [`CreationSync`] mode).
    pub(crate) fn sharing_creation_sync(mut self, flag: &Arc<AtomicBool>) -> Self {
        self.defer_creation_syncs = flag.clone();
        self
    }

    fn creation_sync(&self) -> CreationSync {
        if self.defer_creation_syncs.load(Ordering::Acquire) {
            CreationSync::AtFlush
        } else {
            CreationSync::Immediate
        }
    }

    /// Runs the syncs creations put off: every new file, then every
    /// directory that gained an entry. On a failure the rest stay owed.
    fn sync_pending(&self, w: &mut WriterState) -> Result<()> {
        while let Some((path, file)) = w.pending.files.last() {
            file.sync_data().map_err(|e| Error::io("fdatasync consume queue", path, e))?;
            w.pending.files.pop();
        }
        while let Some(dir) = w.pending.dirs.first() {
            self.storage.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))?;
            w.pending.dirs.remove(0);
        }
        Ok(())
    }

    /// Discards every unit at or after `offset` (clamped to `min_offset`):
    /// zeroes them in place, syncs, and deletes the files wholly after the
    /// one holding `offset`. The first file is always kept so the queue's
    /// minimum survives a reopen.
    ///
    /// Crash safety: the zeroes are durable before any file is deleted, so
    /// an interrupted truncation is completed by recovery.
    // NOTE: only tests call this so far.
    #[allow(dead_code)]
    pub(crate) fn truncate_from(&self, offset: QueueOffset) -> Result<()> {
        let mut w = self.writer.lock();
        self.truncate_locked(&mut w, offset.0)
    }

    /// Discards every unit whose record does not end at or before `end`
    /// (`physical_offset + size > end`), for a commit log truncated to `end`.
    ///
    /// Physical offsets strictly increase, so units starting at or after
    /// `end` form a suffix (found by binary search); records do not overlap
    /// in the commit log, so only the units just before it can still cross
    /// `end`, and those are found walking back.
    pub(crate) fn truncate_physical(&self, end: PhysicalOffset) -> Result<()> {
        let mut w = self.writer.lock();
        let point = {
            let files = self.files.read();
            let max = self.max.load(Ordering::Acquire);
            let unit = |at: u64| self.unit_locked(&files, at, max);
            let (mut lo, mut hi) = (self.min.load(Ordering::Acquire), max);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match unit(mid) {
                    Some(u) if u.physical_offset < end => lo = mid + 1,
                    _ => hi = mid,
                }
            }
            let crosses = |u: CqUnit| u.physical_offset.get().saturating_add(u64::from(u.size)) > end.get();
            while lo > self.min.load(Ordering::Acquire) && unit(lo - 1).is_none_or(crosses) {
                lo -= 1;
            }
            lo
        };
        self.truncate_locked(&mut w, point)
    }

    fn truncate_locked(&self, w: &mut WriterState, offset: u64) -> Result<()> {
        let max = self.max.load(Ordering::Acquire);
        if offset >= max {
            return Ok(());
        }
        let point = offset.max(self.min.load(Ordering::Acquire));
        let mut files = self.files.write();
        self.max.store(point, Ordering::Release);
        self.dead_below.fetch_min(point, Ordering::AcqRel);
        w.flushed = w.flushed.min(point);
        // `point < max`, so file `k` (the one holding `point`) exists; it is
        // kept even when `point` is its first unit.
        let k = usize::try_from((point - self.min.load(Ordering::Acquire)) / self.units_per_file).unwrap_or(usize::MAX);
        let keep = k.saturating_add(1).min(files.len());
        let doomed: Vec<CqFile> = files.drain(keep..).collect();
        if let Some(f) = files.last() {
            let from = point.saturating_sub(f.first).min(self.units_per_file);
            let to = (max - f.first).min(self.units_per_file);
            // SAFETY: we hold the writer lock and the file-list write lock.
            unsafe { f.zero_units(from, to) };
            f.flush_units(from, to)?;
        }
        drop(files);
        self.remove_files(doomed.iter().rev().map(|f| f.path.as_path()))
    }

    /// Deletes files (in the order given) and syncs the directory once.
    pub(crate) fn remove_files<'a>(&self, paths: impl Iterator<Item = &'a Path>) -> Result<()> {
        let mut any = false;
        for p in paths {
            self.storage.remove_file(p).map_err(|e| Error::io("remove consume queue", p, e))?;
            any = true;
        }
        if any {
            self.storage.sync_dir(&self.dir).map_err(|e| Error::io("fsync directory", &self.dir, e))?;
        }
        Ok(())
    }

    /// Makes every unit written so far durable (`msync` of the dirty range,
    /// which may span the previous file after a roll).
    ///
    /// Also runs the file and directory syncs that creations under
    /// [`CreationSync::AtFlush`] put off, so whatever a flush covered is
    /// reachable after a power loss.
    pub(crate) fn flush(&self) -> Result<()> {
        let mut w = self.writer.lock();
        let max = self.max.load(Ordering::Acquire);
        if w.flushed < max {
            let files = self.files.read();
            for f in files.iter() {
                let end = f.first + self.units_per_file;
                let (lo, hi) = (w.flushed.max(f.first), max.min(end));
                // A new file's pending `fdatasync` below covers its units
                // too (stores through the mapping included).
                if lo < hi && !w.pending.has_file(&f.path) {
                    f.flush_units(lo - f.first, hi - f.first)?;
                }
            }
        }
        self.sync_pending(&mut w)?;
        w.flushed = w.flushed.max(max);
        Ok(())
    }

    /// Records that the units below `upto` are durable already, so the next
    /// [`flush`](Self::flush) does not sync them again. Store recovery
    /// calls it with the queue's end in the dispatch checkpoint, which is
    /// written only after the queues were flushed. Without it, the first
    /// flush after an open synced every queue's recovered units: one
    /// `msync`, and so one device cache flush, per queue even after a clean
    /// close (10,000 queues: about 1.5 s of a 3 s open).
    pub(crate) fn note_durable(&self, upto: u64) {
        let mut w = self.writer.lock();
        let max = self.max.load(Ordering::Acquire);
        w.flushed = w.flushed.max(upto.min(max));
    }

    /// Deletes every file of the queue, leaving it empty (`min = max = 0`).
    /// Files are deleted last first, so an interrupted destroy leaves a
    /// valid shorter queue. The directory itself stays: the storage seam
    /// has no directory removal, and an empty directory is ignored on open.
    pub(crate) fn destroy(&self) -> Result<()> {
        let mut w = self.writer.lock();
        let doomed: Vec<CqFile> = {
            let mut files = self.files.write();
            self.max.store(0, Ordering::Release);
            self.min.store(0, Ordering::Release);
            files.drain(..).collect()
        };
        w.flushed = 0;
        self.remove_files(doomed.iter().rev().map(|f| f.path.as_path()))?;
        // The files are gone, but directories they needed stay owed: a
        // queue opened here later finds them and takes them as durable.
        w.pending.files.clear();
        self.sync_pending(&mut w)
    }

    /// Whether the queue has no files at all (never written, or destroyed).
    pub(crate) fn has_no_files(&self) -> bool {
        self.files.read().is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::{FaultKind, FaultPlan, FaultyStorage, StdStorage};

    pub(crate) fn unit(i: u64) -> CqUnit {
        CqUnit { physical_offset: PhysicalOffset(1000 + i * 100), size: 100, tag_hash: i * 7 }
    }

    pub(crate) fn open(root: &Path, ups: u64) -> ConsumeQueue {
        ConsumeQueue::open(Arc::new(StdStorage), root, "TopicTest", 3, ups).unwrap()
    }

    pub(crate) fn fill(q: &ConsumeQueue, n: u64) {
        for i in q.max_offset().0..n {
            q.put(QueueOffset(i), unit(i)).unwrap();
        }
    }

    pub(crate) fn files_of(root: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(queue_dir(root, "TopicTest", 3))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn all(q: &ConsumeQueue) -> Vec<(QueueOffset, CqUnit)> {
        let mut out = Vec::new();
        q.read(QueueOffset(0), usize::MAX, &mut out);
        out
    }

    #[test]
    fn names_and_topics() {
        assert_eq!(file_name(300_000), "00000000000000300000");
        assert_eq!(parse_file_name("00000000000000300000"), Some(300_000));
        assert_eq!(parse_file_name("0000000000000030000"), None);
        assert_eq!(parse_file_name("0000000000000030000x"), None);
        assert_eq!(DEFAULT_UNITS_PER_FILE * UNIT, 6_000_000);
        for ok in ["TopicTest", "%RETRY%g|x", "a-b_C9", &"t".repeat(MAX_TOPIC_LEN)] {
            validate_topic(ok).unwrap();
        }
        for bad in ["", "..", "a/b", "a.b", "é", &"t".repeat(MAX_TOPIC_LEN + 1)] {
            assert!(matches!(validate_topic(bad), Err(Error::InvalidArgument(_))), "{bad}");
        }
        assert!(matches!(file_len_for(0), Err(Error::InvalidArgument(_))));
        assert!(matches!(file_len_for(MAX_UNITS_PER_FILE + 1), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn append_across_rolls_read_back_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let q = open(tmp.path(), 4);
        assert_eq!((q.min_offset(), q.max_offset(), q.last()), (QueueOffset(0), QueueOffset(0), None));
        assert_eq!(q.get(QueueOffset(0)), None);
        fill(&q, 37);
        assert_eq!(q.max_offset(), QueueOffset(37));
        assert_eq!(q.last(), Some((QueueOffset(36), unit(36))));
        for i in 0..37 {
            assert_eq!(q.get(QueueOffset(i)), Some(unit(i)));
        }
        assert_eq!(q.get(QueueOffset(37)), None);
        let mut out = Vec::new();
        q.read(QueueOffset(5), 3, &mut out);
        assert_eq!(out, (5..8).map(|i| (QueueOffset(i), unit(i))).collect::<Vec<_>>());
        out.clear();
        q.read(QueueOffset(35), 100, &mut out);
        assert_eq!(out.len(), 2);
        out.clear();
        q.read(QueueOffset(99), 100, &mut out);
        assert!(out.is_empty());
        q.flush().unwrap();
        assert_eq!(files_of(tmp.path()).len(), 10);
        assert_eq!(files_of(tmp.path())[9], "00000000000000000036");
        drop(q);

        let q = open(tmp.path(), 4);
        assert_eq!(*q.recovered(), CqRecovery { units_kept: 37, ..CqRecovery::default() });
        assert_eq!(all(&q), (0..37).map(|i| (QueueOffset(i), unit(i))).collect::<Vec<_>>());
        fill(&q, 45);
        assert_eq!(q.last(), Some((QueueOffset(44), unit(44))));
    }

    #[test]
    fn full_last_file_reopens_and_rolls() {
        let tmp = tempfile::tempdir().unwrap();
        fill(&open(tmp.path(), 4), 8);
        let q = open(tmp.path(), 4);
        assert_eq!(q.max_offset(), QueueOffset(8));
        assert_eq!(files_of(tmp.path()).len(), 2);
        fill(&q, 9);
        assert_eq!(files_of(tmp.path()).len(), 3);
    }

    #[test]
    fn idempotent_reput_gap_and_conflicts() {
        let tmp = tempfile::tempdir().unwrap();
        let q = open(tmp.path(), 4);
        fill(&q, 6);
        for i in 0..6 {
            q.put(QueueOffset(i), unit(i)).unwrap();
        }
        assert_eq!(q.max_offset(), QueueOffset(6));
        let inval = |r: Result<()>| assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
        inval(q.put(QueueOffset(2), unit(3)));
        inval(q.put(QueueOffset(7), unit(7)));
        inval(q.put(QueueOffset(6), CqUnit { size: 0, ..unit(6) }));
        inval(q.put(QueueOffset(6), unit(5)));
        inval(q.put(QueueOffset(6), CqUnit { physical_offset: PhysicalOffset(u64::MAX - 1), ..unit(6) }));
        assert_eq!(q.max_offset(), QueueOffset(6));
        q.put(QueueOffset(6), unit(6)).unwrap();
        assert_eq!(all(&q).len(), 7);
    }

    #[test]
    fn truncate_from_every_position_then_reopen() {
        const N: u64 = 13;
        for cut in 0..=N + 1 {
            let tmp = tempfile::tempdir().unwrap();
            let q = open(tmp.path(), 4);
            fill(&q, N);
            q.truncate_from(QueueOffset(cut)).unwrap();
            let kept = cut.min(N);
            assert_eq!(q.max_offset(), QueueOffset(kept), "cut {cut}");
            assert_eq!(q.get(QueueOffset(kept)), None);
            assert_eq!(all(&q).len() as u64, kept);
            let expect_files = if cut >= N { 4 } else { (kept / 4 + 1) as usize };
            assert_eq!(files_of(tmp.path()).len(), expect_files, "cut {cut}");
            drop(q);
            let q = open(tmp.path(), 4);
            assert_eq!(q.max_offset(), QueueOffset(kept), "cut {cut}");
            assert_eq!(q.recovered().units_discarded, 0);
            assert_eq!(all(&q), (0..kept).map(|i| (QueueOffset(i), unit(i))).collect::<Vec<_>>());
            fill(&q, N + 2);
            assert_eq!(q.last(), Some((QueueOffset(N + 1), unit(N + 1))));
        }
    }

    #[test]
    fn truncate_physical_cuts_records_crossing_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let q = open(tmp.path(), 4);
        fill(&q, 10);
        // unit(i) covers [1000 + 100 i, 1100 + 100 i).
        q.truncate_physical(PhysicalOffset(2000)).unwrap();
        assert_eq!(q.max_offset(), QueueOffset(10));
        q.truncate_physical(PhysicalOffset(1950)).unwrap();
        assert_eq!(q.max_offset(), QueueOffset(9));
        q.truncate_physical(PhysicalOffset(1800)).unwrap();
        assert_eq!(q.max_offset(), QueueOffset(8));
        q.truncate_physical(PhysicalOffset(1401)).unwrap();
        assert_eq!(q.max_offset(), QueueOffset(4));
        drop(q);
        let q = open(tmp.path(), 4);
        assert_eq!(q.max_offset(), QueueOffset(4));
        q.truncate_physical(PhysicalOffset(0)).unwrap();
        assert_eq!((q.min_offset(), q.max_offset()), (QueueOffset(0), QueueOffset(0)));
        fill(&q, 2);
    }

    #[test]
    fn destroy_removes_every_file() {
        let tmp = tempfile::tempdir().unwrap();
        let q = open(tmp.path(), 4);
        fill(&q, 9);
        q.destroy().unwrap();
        assert_eq!((q.max_offset(), q.get(QueueOffset(0))), (QueueOffset(0), None));
        assert!(files_of(tmp.path()).is_empty());
        assert!(q.has_no_files());
        fill(&q, 2);
        assert_eq!(open(tmp.path(), 4).max_offset(), QueueOffset(2));
    }

    #[test]
    fn concurrent_reader_never_sees_unpublished_units() {
        const N: u64 = 5_000;
        let tmp = tempfile::tempdir().unwrap();
        let q = Arc::new(open(tmp.path(), 16));
        let reader = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let mut seen = 0;
                while seen < N {
                    out.clear();
                    q.read(QueueOffset(seen), 64, &mut out);
                    let max = q.max_offset().0;
                    for (off, u) in &out {
                        assert!(off.0 < max, "{off} beyond max {max}");
                        assert_eq!(*u, unit(off.0));
                    }
                    seen += out.len() as u64;
                    if let Some((off, u)) = q.last() {
                        assert_eq!(u, unit(off.0));
                    }
                }
            })
        };
        fill(&q, N);
        reader.join().unwrap();
    }

    #[test]
    fn io_failures_are_typed_and_leave_nothing_visible() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = FaultPlan::new();
        let storage = Arc::new(FaultyStorage::new(Arc::new(StdStorage), plan.clone()));
        let q = ConsumeQueue::open(storage, tmp.path(), "TopicTest", 3, 4).unwrap();
        fill(&q, 4);
        // Every call of the roll fails in turn; the queue stays at 4 units.
        for k in 1..=20 {
            plan.fail_call(k, FaultKind::Io, false);
            match q.put(QueueOffset(4), unit(4)) {
                Err(Error::Io { .. }) => assert_eq!(q.max_offset(), QueueOffset(4)),
                Ok(()) => break,
                Err(e) => panic!("{e}"),
            }
        }
        plan.heal();
        assert_eq!(q.max_offset(), QueueOffset(5));
        fill(&q, 6);
        plan.fail_syncs(true);
        let e = q.flush().unwrap_err();
        assert!(e.is_failed_sync(), "{e}");
        plan.heal();
        q.flush().unwrap();
        plan.fail_call(1, FaultKind::NoSpace, true);
        assert!(matches!(q.put(QueueOffset(8), unit(8)), Err(Error::InvalidArgument(_))));
        fill(&q, 8);
        assert!(matches!(q.put(QueueOffset(8), unit(8)), Err(Error::DiskFull { .. })));
        plan.heal();
        fill(&q, 10);
        drop(q);
        let q = open(tmp.path(), 4);
        assert_eq!(all(&q), (0..10).map(|i| (QueueOffset(i), unit(i))).collect::<Vec<_>>());
    }
}
