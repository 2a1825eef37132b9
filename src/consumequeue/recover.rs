//! Opening a consume queue: list its directory, check file names and
//! lengths, keep the contiguous run of files starting at the lowest one,
//! scan the units, repair the tail, map.
//!
//! Recovery rules (FORMAT.md, consume queues):
//! * a leftover `<name>.tmp` (a file whose creation was interrupted) is
//!   deleted;
//! * any other name that is not 20 digits, a file of the wrong length, or
//!   two files overlapping is a [`Error::Corruption`]: none of these is a
//!   crash artifact, because files get their final name only when complete;
//! * a missing file in the middle (a gap) loses everything after it: those
//!   files are deleted and the gap reported in [`CqRecovery`];
//! * units are read with `pread` (a media error is an error, not a SIGBUS)
//!   until the first unit that is empty, ends past `u64::MAX`, or does not
//!   have a larger physical offset than the unit before; the queue ends
//!   there. Every non-zero byte from that unit to the end of its file is
//!   zeroed and synced, then every later file is deleted and the directory
//!   synced, so a scan after a crash reaches the same end.
//!
//! Recovery is idempotent: interrupted at any I/O call, it can run again
//! and reaches the same state.

use super::queue::{
    file_len_for, file_name, parse_file_name, queue_dir, validate_topic, ConsumeQueue, CqFile, CqRecovery, WriterState,
    TMP_SUFFIX, UNIT,
};
use super::unit::{CqUnit, CQ_UNIT_LEN};
use crate::error::{CorruptionKind, Error, Result};
use crate::offset::QueueOffset;
use crate::storage::{read_exact_at, OpenMode, Storage, StorageFile};
use parking_lot::{Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Units read per `pread` during the scan (80 KiB): bounded whatever the
/// files say.
const SCAN_CHUNK_UNITS: u64 = 4096;

/// State carried across the files of one queue during the scan.
#[derive(Debug, Default)]
struct Scan {
    /// Last valid unit, for the monotonicity check across files.
    prev: Option<CqUnit>,
    /// Queue offset of the first invalid unit, once found.
    end: Option<u64>,
    kept: u64,
    discarded: u64,
}

impl Scan {
    fn follows(&self, u: &CqUnit) -> bool {
        u.physical_offset.checked_add(u64::from(u.size)).is_some()
            && self.prev.is_none_or(|p| u.physical_offset > p.physical_offset)
    }

    /// Scans one file starting at queue offset `first`; zeroes and syncs the
    /// file's tail when it holds non-zero bytes past the end of the queue.
    fn file(
        &mut self,
        file: &dyn StorageFile,
        path: &Path,
        first: u64,
        units_per_file: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let mut end_in_file = None;
        let mut dirty = false;
        let mut idx = 0;
        while idx < units_per_file {
            let n = (units_per_file - idx).min(SCAN_CHUNK_UNITS);
            // n <= SCAN_CHUNK_UNITS, the length `buf` was allocated with.
            let bytes = &mut buf[..n as usize * CQ_UNIT_LEN];
            read_exact_at(file, bytes, idx * UNIT).map_err(|e| Error::io("read consume queue", path, e))?;
            for (j, raw) in (idx..).zip(bytes.chunks_exact(CQ_UNIT_LEN)) {
                if self.end.is_some() {
                    // Past the end the units are (nearly always) zeros:
                    // checked below a chunk at a time.
                    break;
                }
                match CqUnit::decode(raw).filter(|u| self.follows(u)) {
                    Some(u) => {
                        self.prev = Some(u);
                        self.kept += 1;
                    }
                    None => {
                        self.end = Some(first + j);
                        end_in_file = Some(j);
                    }
                }
            }
            if let Some(end) = self.end {
                // Units of this chunk at or past the end (all of it once
                // the end lies in an earlier chunk or file).
                let from = end.saturating_sub(first).max(idx) - idx;
                let rest = &bytes[from as usize * CQ_UNIT_LEN..];
                // An OR over the bytes (vectorised, no early exit) rather
                // than a test per unit: a queue file is mostly zeros past
                // its end, and every open reads all of it.
                if rest.iter().fold(0u8, |a, &b| a | b) != 0 {
                    let nonzero = rest.chunks_exact(CQ_UNIT_LEN).filter(|u| u.iter().any(|&b| b != 0)).count();
                    self.discarded += nonzero as u64;
                    dirty = true;
                }
            }
            idx += n;
        }
        if let (true, Some(e)) = (dirty, end_in_file) {
            let (from, len) = (e * UNIT, (units_per_file - e) * UNIT);
            file.zero_range(from, len).map_err(|err| Error::io("zero consume queue", path, err))?;
            file.sync_data().map_err(|err| Error::io("fdatasync consume queue", path, err))?;
        }
        Ok(())
    }
}

/// Sorted first offsets of the queue files in `dir`, and the leftover
/// temporary files to delete.
fn list(storage: &dyn Storage, dir: &Path) -> Result<(Vec<u64>, Vec<PathBuf>)> {
    let mut firsts = Vec::new();
    let mut tmps = Vec::new();
    for name in storage.list_dir(dir).map_err(|e| Error::io("list consume queue", dir, e))? {
        if let Some(first) = parse_file_name(&name) {
            firsts.push(first);
        } else if name.strip_suffix(TMP_SUFFIX).and_then(parse_file_name).is_some() {
            tmps.push(dir.join(name));
        } else {
            let field = "consume queue file name";
            return Err(Error::corruption(dir.join(name), 0, CorruptionKind::InvalidField { field }));
        }
    }
    firsts.sort_unstable();
    Ok((firsts, tmps))
}

/// How many files, from the lowest, are contiguous. Overlapping names are
/// corruption; a gap ends the run and is reported.
fn contiguous(dir: &Path, firsts: &[u64], units_per_file: u64, report: &mut CqRecovery) -> Result<usize> {
    for (i, pair) in firsts.windows(2).enumerate() {
        let expected = pair[0].checked_add(units_per_file).ok_or_else(|| {
            let field = "consume queue file name";
            Error::corruption(dir.join(file_name(pair[0])), 0, CorruptionKind::InvalidField { field })
        })?;
        if pair[1] < expected {
            let kind = CorruptionKind::Misplaced { claimed: pair[1], actual: expected };
            return Err(Error::corruption(dir.join(file_name(pair[1])), 0, kind));
        }
        if pair[1] > expected {
            report.missing_file_at = Some(QueueOffset(expected));
            return Ok(i + 1);
        }
    }
    Ok(firsts.len())
}

impl ConsumeQueue {
    /// Opens (or, when its directory does not exist, starts) the consume
    /// queue of `(topic, queue_id)` under the store root `root`, recovering
    /// as the module docs describe; [`ConsumeQueue::recovered`] tells what was
    /// repaired. `units_per_file` must be what the directory was written with
    /// (files of another length are reported as corruption).
    ///
    /// Errors: `InvalidArgument` for a bad topic or `units_per_file`
    /// (1..=[`MAX_UNITS_PER_FILE`](super::MAX_UNITS_PER_FILE)), `Corruption`
    /// naming the file, or `Io`.
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        root: &Path,
        topic: &str,
        queue_id: u32,
        units_per_file: u64,
    ) -> Result<Self> {
        validate_topic(topic)?;
        let file_len = file_len_for(units_per_file)?;
        let map_len = usize::try_from(file_len)
            .map_err(|_| Error::InvalidArgument(format!("consume queue file length {file_len}")))?;
        let dir = queue_dir(root, topic, queue_id);
        let dir_ready = storage.exists(&dir).map_err(|e| Error::io("stat directory", &dir, e))?;
        let (firsts, tmps) = if dir_ready { list(storage.as_ref(), &dir)? } else { Default::default() };
        let mut report = CqRecovery::default();
        let run = contiguous(&dir, &firsts, units_per_file, &mut report)?;

        let mut scan = Scan::default();
        let mut buf = vec![0u8; SCAN_CHUNK_UNITS as usize * CQ_UNIT_LEN];
        let mut files: Vec<CqFile> = Vec::new();
        for &first in &firsts[..run] {
            if scan.end.is_some() {
                break;
            }
            let path = dir.join(file_name(first));
            if first.checked_add(units_per_file).is_none() {
                let field = "consume queue file name";
                return Err(Error::corruption(&path, 0, CorruptionKind::InvalidField { field }));
            }
            let file =
                storage.open(&path, OpenMode::ReadWrite).map_err(|e| Error::io("open consume queue", &path, e))?;
            let len = file.len().map_err(|e| Error::io("stat consume queue", &path, e))?;
            if len != file_len {
                return Err(Error::corruption(&path, len.min(file_len), CorruptionKind::BadLength { length: len }));
            }
            scan.file(file.as_ref(), &path, first, units_per_file, &mut buf)?;
            let region = file.map(map_len).map_err(|e| Error::io("mmap consume queue", &path, e))?;
            files.push(CqFile::new(first, path, file, region));
        }

        let doomed: Vec<PathBuf> = firsts[files.len()..].iter().map(|&f| dir.join(file_name(f))).collect();
        report.files_removed = doomed.len() as u64;
        report.units_kept = scan.kept;
        report.units_discarded = scan.discarded;
        let min = files.first().map_or(0, |f| f.first);
        // A full last file (no end found) ends at its first + units_per_file,
        // checked above not to overflow.
        let max = scan.end.or_else(|| files.last().map(|f| f.first + units_per_file)).unwrap_or(0);
        debug_assert_eq!(max - min, scan.kept);
        let q = ConsumeQueue {
            storage,
            root: root.to_path_buf(),
            dir,
            topic: topic.to_string(),
            queue_id,
            units_per_file,
            file_len,
            files: RwLock::new(files),
            min: AtomicU64::new(min),
            max: AtomicU64::new(max),
            dead_below: AtomicU64::new(min),
            // What was found may sit only in the page cache (the previous process
            // crashed before flushing), so the first flush covers all of it.
            writer: Mutex::new(WriterState::new(min, dir_ready)),
            recovered: report,
            defer_creation_syncs: Arc::default(),
        };
        // Last first, so an interrupted removal still leaves a contiguous run.
        q.remove_files(doomed.iter().rev().chain(tmps.iter()).map(PathBuf::as_path))?;
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::super::queue::tests::{files_of, fill, open, unit};
    use super::*;
    use crate::offset::PhysicalOffset;
    use crate::storage::{FaultKind, FaultPlan, FaultyStorage, StdStorage};
    use std::os::unix::fs::FileExt;

    fn path_of(root: &Path, first: u64) -> PathBuf {
        queue_dir(root, "TopicTest", 3).join(file_name(first))
    }

    /// Overwrites queue offset `at` (with 4 units per file) with raw bytes.
    fn poke(root: &Path, at: u64, bytes: &[u8]) {
        let f = std::fs::OpenOptions::new().write(true).open(path_of(root, at / 4 * 4)).unwrap();
        f.write_all_at(bytes, at % 4 * UNIT).unwrap();
    }

    fn peek(root: &Path, at: u64) -> [u8; CQ_UNIT_LEN] {
        let f = std::fs::File::open(path_of(root, at / 4 * 4)).unwrap();
        let mut b = [0u8; CQ_UNIT_LEN];
        f.read_exact_at(&mut b, at % 4 * UNIT).unwrap();
        b
    }

    fn units(q: &ConsumeQueue) -> Vec<CqUnit> {
        let mut out = Vec::new();
        q.read(QueueOffset(0), usize::MAX, &mut out);
        out.into_iter().map(|(_, u)| u).collect()
    }

    #[test]
    fn non_monotone_unit_ends_the_queue() {
        let tmp = tempfile::tempdir().unwrap();
        fill(&open(tmp.path(), 4), 10);
        poke(tmp.path(), 6, &unit(2).encode());
        let q = open(tmp.path(), 4);
        let want = CqRecovery { units_kept: 6, units_discarded: 2, files_removed: 1, missing_file_at: None };
        assert_eq!(*q.recovered(), want);
        assert_eq!(units(&q), (0..6).map(unit).collect::<Vec<_>>());
        assert_eq!(peek(tmp.path(), 6), [0; CQ_UNIT_LEN]);
        assert_eq!(files_of(tmp.path()).len(), 2);
        fill(&q, 12);
        drop(q);
        assert_eq!(open(tmp.path(), 4).recovered().units_kept, 12);
    }

    #[test]
    fn torn_unit_and_garbage_after_the_end_are_zeroed() {
        let tmp = tempfile::tempdir().unwrap();
        fill(&open(tmp.path(), 4), 5);
        // A half-written unit (size still zero) and a stray unit after it.
        poke(tmp.path(), 5, &[0, 0, 0, 0, 0, 0, 9, 9]);
        poke(tmp.path(), 7, &unit(7).encode());
        let q = open(tmp.path(), 4);
        assert_eq!((q.max_offset(), q.recovered().units_discarded), (QueueOffset(5), 2));
        assert_eq!(peek(tmp.path(), 5), [0; CQ_UNIT_LEN]);
        assert_eq!(peek(tmp.path(), 7), [0; CQ_UNIT_LEN]);
        drop(q);
        assert_eq!(*open(tmp.path(), 4).recovered(), CqRecovery { units_kept: 5, ..CqRecovery::default() });
    }

    #[test]
    fn random_tail_bytes_recover_to_a_valid_prefix() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..50 {
            let tmp = tempfile::tempdir().unwrap();
            fill(&open(tmp.path(), 4), 12);
            let at = 4 + next() % 8;
            let garbage: Vec<u8> = (0..(12 - at) * UNIT).map(|_| next() as u8).collect();
            for (i, chunk) in garbage.chunks(CQ_UNIT_LEN).enumerate() {
                poke(tmp.path(), at + i as u64, chunk);
            }
            let q = open(tmp.path(), 4);
            let got = units(&q);
            assert!(got.len() as u64 >= at, "round {round}");
            assert_eq!(&got[..at as usize], &(0..at).map(unit).collect::<Vec<_>>()[..]);
            assert!(got.windows(2).all(|w| w[0].physical_offset < w[1].physical_offset));
            let report = *q.recovered();
            drop(q);
            // A second open finds nothing left to repair.
            let again = open(tmp.path(), 4);
            assert_eq!(units(&again), got);
            assert_eq!(again.recovered().units_discarded, 0, "round {round} first {report:?}");
            assert_eq!(again.recovered().files_removed, 0);
        }
    }

    #[test]
    fn missing_middle_file_keeps_the_prefix_and_reports_it() {
        let tmp = tempfile::tempdir().unwrap();
        fill(&open(tmp.path(), 4), 13);
        std::fs::remove_file(path_of(tmp.path(), 4)).unwrap();
        let q = open(tmp.path(), 4);
        let want =
            CqRecovery { units_kept: 4, units_discarded: 0, files_removed: 2, missing_file_at: Some(QueueOffset(4)) };
        assert_eq!(*q.recovered(), want);
        assert_eq!((q.min_offset(), q.max_offset()), (QueueOffset(0), QueueOffset(4)));
        assert_eq!(files_of(tmp.path()), vec![file_name(0)]);
        fill(&q, 6);
    }

    #[test]
    fn missing_first_file_moves_the_minimum() {
        let tmp = tempfile::tempdir().unwrap();
        fill(&open(tmp.path(), 4), 13);
        std::fs::remove_file(path_of(tmp.path(), 0)).unwrap();
        let q = open(tmp.path(), 4);
        assert_eq!((q.min_offset(), q.max_offset()), (QueueOffset(4), QueueOffset(13)));
        assert_eq!(q.get(QueueOffset(3)), None);
        assert_eq!(q.get(QueueOffset(4)), Some(unit(4)));
        // Below the minimum a re-put cannot be checked and is accepted.
        q.put(QueueOffset(1), unit(1)).unwrap();
        q.truncate_from(QueueOffset(2)).unwrap();
        assert_eq!((q.min_offset(), q.max_offset()), (QueueOffset(4), QueueOffset(4)));
        drop(q);
        let q = open(tmp.path(), 4);
        assert_eq!((q.min_offset(), q.max_offset()), (QueueOffset(4), QueueOffset(4)));
        q.put(QueueOffset(4), unit(4)).unwrap();
    }

    #[test]
    fn bad_files_are_typed_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        fill(&open(tmp.path(), 4), 9);
        let f = std::fs::OpenOptions::new().write(true).open(path_of(tmp.path(), 4)).unwrap();
        f.set_len(50).unwrap();
        match ConsumeQueue::open(Arc::new(StdStorage), tmp.path(), "TopicTest", 3, 4) {
            Err(Error::Corruption { path, offset: 50, kind: CorruptionKind::BadLength { length: 50 } }) => {
                assert_eq!(path, path_of(tmp.path(), 4));
            }
            other => panic!("{other:?}"),
        }
        // The same directory opened with another units_per_file.
        f.set_len(80).unwrap();
        assert!(matches!(open_err(tmp.path(), 5), Error::Corruption { .. }));
        std::fs::write(path_of(tmp.path(), 2), [0u8; 80]).unwrap();
        let e = open_err(tmp.path(), 4);
        assert!(
            matches!(e, Error::Corruption { kind: CorruptionKind::Misplaced { claimed: 2, actual: 4 }, .. }),
            "{e}"
        );
        std::fs::remove_file(path_of(tmp.path(), 2)).unwrap();
        let junk = queue_dir(tmp.path(), "TopicTest", 3).join("junk");
        std::fs::write(&junk, b"x").unwrap();
        match open_err(tmp.path(), 4) {
            Error::Corruption { path, kind: CorruptionKind::InvalidField { .. }, .. } => assert_eq!(path, junk),
            other => panic!("{other:?}"),
        }
        // A lone file whose end would pass u64::MAX.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(queue_dir(tmp.path(), "TopicTest", 3)).unwrap();
        std::fs::write(path_of(tmp.path(), u64::MAX - 1), [0u8; 80]).unwrap();
        assert!(matches!(open_err(tmp.path(), 4), Error::Corruption { .. }));
    }

    fn open_err(root: &Path, ups: u64) -> Error {
        match ConsumeQueue::open(Arc::new(StdStorage), root, "TopicTest", 3, ups) {
            Err(e) => e,
            Ok(q) => panic!("opened with max {}", q.max_offset()),
        }
    }

    #[test]
    fn leftover_tmp_file_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        fill(&open(tmp.path(), 4), 4);
        let t = queue_dir(tmp.path(), "TopicTest", 3).join(format!("{}{TMP_SUFFIX}", file_name(4)));
        std::fs::write(&t, b"partial").unwrap();
        let q = open(tmp.path(), 4);
        assert!(!t.exists());
        assert_eq!(q.recovered().files_removed, 0);
        fill(&q, 6);
    }

    /// Simulated power loss at many points: every unit below the last
    /// successful flush survives, recovery never panics, and a second open
    /// has nothing left to repair.
    #[test]
    fn power_loss_keeps_the_flushed_prefix() {
        use crate::storage::SimStorage;
        let root = Path::new("/store");
        for seed in 0..40u64 {
            let sim = SimStorage::new();
            let q = ConsumeQueue::open(Arc::new(sim.clone()), root, "TopicTest", 3, 4).unwrap();
            let (n, flushed) = (5 + seed % 11, seed % 7);
            fill(&q, flushed);
            q.flush().unwrap();
            fill(&q, n);
            let image = sim.crash_now(seed);
            let restored = Arc::new(image.restore());
            let q = ConsumeQueue::open(restored.clone(), root, "TopicTest", 3, 4).unwrap();
            let got = units(&q);
            assert!(got.len() as u64 >= flushed, "seed {seed}");
            assert_eq!(&got[..flushed as usize], &(0..flushed).map(unit).collect::<Vec<_>>()[..]);
            drop(q);
            let again = ConsumeQueue::open(restored, root, "TopicTest", 3, 4).unwrap();
            assert_eq!(units(&again), got, "seed {seed}");
            assert_eq!(again.recovered().units_discarded, 0, "seed {seed}");
        }
    }

    /// Fails every I/O call of recovery in turn on a freshly damaged queue:
    /// each failure is a typed error, and recovery then completes to the same
    /// state as an undisturbed one.
    #[test]
    fn recovery_survives_a_failure_at_every_call() {
        let damaged = |root: &Path| {
            fill(&open(root, 4), 14);
            poke(root, 6, &CqUnit { physical_offset: PhysicalOffset(1), ..unit(6) }.encode());
            std::fs::remove_file(path_of(root, 8)).unwrap();
        };
        let reference = tempfile::tempdir().unwrap();
        damaged(reference.path());
        let want = units(&open(reference.path(), 4));
        assert_eq!(want.len(), 6);
        for k in 1.. {
            let tmp = tempfile::tempdir().unwrap();
            damaged(tmp.path());
            let plan = FaultPlan::new();
            let storage = Arc::new(FaultyStorage::new(Arc::new(StdStorage), plan.clone()));
            plan.fail_call(k, FaultKind::Io, false);
            let failed = match ConsumeQueue::open(storage, tmp.path(), "TopicTest", 3, 4) {
                Err(Error::Io { .. }) => true,
                Ok(_) => false,
                Err(e) => panic!("call {k}: {e}"),
            };
            let q = open(tmp.path(), 4);
            assert_eq!(units(&q), want, "call {k}");
            assert_eq!(files_of(tmp.path()).len(), 2, "call {k}");
            if !failed {
                assert!(k > 5, "no call failed");
                break;
            }
        }
    }
}
