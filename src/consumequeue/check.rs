//! Read-only checks of every consume queue's files, for
//! [`crate::store::verify`]: names, lengths, contiguous files, contiguous
//! and increasing units. Units are returned for checking against the
//! commit log, which is the caller's part.
//!
//! Files are opened [`OpenMode::Read`] and read with `pread`; nothing is
//! written, mapped, created or deleted. A file that vanishes between the
//! listing and the open (a live store truncating or removing a queue) is
//! skipped.

use super::queue::{
    file_name, parse_file_name, validate_topic, CONSUME_QUEUE_DIR, MAX_UNITS_PER_FILE, TMP_SUFFIX, UNIT,
};
use super::unit::{CqUnit, CQ_UNIT_LEN};
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{read_full_at, OpenMode, Storage, StorageFile};
use crate::store::verify::{ProblemKind, Problems, Severity};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Units read per `pread` (80 KiB).
const CHUNK_UNITS: usize = 4096;

/// One consume queue with files.
#[derive(Debug, Clone)]
pub(crate) struct QueueFiles {
    pub(crate) topic: String,
    pub(crate) queue_id: u32,
    pub(crate) dir: PathBuf,
    /// First offsets of the files whose units were read, ascending.
    pub(crate) firsts: Vec<u64>,
    pub(crate) units_per_file: u64,
    /// First queue offset.
    pub(crate) min: u64,
    /// One past the last unit before the first empty one: the end readers
    /// see.
    pub(crate) max: u64,
}

impl QueueFiles {
    /// The file and byte position of queue offset `q`.
    pub(crate) fn locate(&self, q: u64) -> (PathBuf, u64) {
        let i = self.firsts.partition_point(|&f| f <= q).saturating_sub(1);
        let first = self.firsts.get(i).copied().unwrap_or(self.min);
        (self.dir.join(file_name(first)), q.saturating_sub(first).saturating_mul(UNIT))
    }
}

/// A non-empty unit of queue `queue` (an index into the list returned
/// with it) at queue offset `queue_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnitAt {
    pub(crate) unit: CqUnit,
    pub(crate) queue: u32,
    pub(crate) queue_offset: u64,
}

/// Reads every queue under `<root>/consumequeue/`. `units_per_file` is the
/// store's recorded value; without one, each queue's is taken from its
/// first file's length. Structural defects go to `problems` (all derived
/// data).
pub(crate) fn load(
    storage: &dyn Storage,
    root: &Path,
    units_per_file: Option<u64>,
    problems: &mut Problems,
) -> Result<(Vec<QueueFiles>, Vec<UnitAt>)> {
    let cq = root.join(CONSUME_QUEUE_DIR);
    let mut queues = Vec::new();
    let mut units = Vec::new();
    let Some(mut topics) = list(storage, &cq, problems)? else {
        return Ok((queues, units));
    };
    topics.sort();
    for topic in topics {
        // Not a name the store writes: not ours, and the store skips it.
        if validate_topic(&topic).is_err() {
            continue;
        }
        let tdir = cq.join(&topic);
        let Some(names) = list(storage, &tdir, problems)? else { continue };
        let mut ids: Vec<u32> =
            names.iter().filter_map(|n| n.parse().ok().filter(|id: &u32| id.to_string() == *n)).collect();
        ids.sort_unstable();
        for id in ids {
            let dir = tdir.join(id.to_string());
            let Some(names) = list(storage, &dir, problems)? else { continue };
            let mut q = QueueFiles {
                topic: topic.clone(),
                queue_id: id,
                dir,
                firsts: Vec::new(),
                units_per_file: 0,
                min: 0,
                max: 0,
            };
            let index = u32::try_from(queues.len()).unwrap_or(u32::MAX);
            if load_queue(storage, &mut q, names, units_per_file, index, &mut units, problems)? {
                queues.push(q);
            }
        }
    }
    Ok((queues, units))
}

/// Lists `dir`: `None` when it does not exist, or is a plain file where a
/// directory belongs (reported; the store removes it on open).
fn list(storage: &dyn Storage, dir: &Path, problems: &mut Problems) -> Result<Option<Vec<String>>> {
    match storage.list_dir(dir) {
        Ok(names) => Ok(Some(names)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            problems.damaged(dir, 0, CorruptionKind::InvalidField { field: "a file where a directory belongs" }, true);
            Ok(None)
        }
        Err(e) => Err(Error::io("list directory", dir, e)),
    }
}

/// Reads one queue's files; `false` when it has none.
fn load_queue(
    storage: &dyn Storage,
    q: &mut QueueFiles,
    names: Vec<String>,
    units_per_file: Option<u64>,
    index: u32,
    units: &mut Vec<UnitAt>,
    problems: &mut Problems,
) -> Result<bool> {
    let mut firsts = Vec::new();
    for name in names {
        if let Some(first) = parse_file_name(&name) {
            firsts.push(first);
        } else if name.strip_suffix(TMP_SUFFIX).and_then(parse_file_name).is_none() {
            // A leftover `.tmp` is deleted on open; anything else in a
            // queue directory makes the store rebuild the queue.
            let field = "consume queue file name";
            problems.damaged(&q.dir.join(name), 0, CorruptionKind::InvalidField { field }, true);
        }
    }
    firsts.sort_unstable();
    let Some(&min) = firsts.first() else { return Ok(false) };
    // One file open at a time: a queue may have thousands.
    let open = |first: u64| -> Result<Option<(Arc<dyn StorageFile>, u64)>> {
        let path = q.dir.join(file_name(first));
        let file = match storage.open(&path, OpenMode::Read) {
            Ok(f) => f,
            // Removed by a live store (truncation, a deleted topic).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open consume queue", &path, e)),
        };
        let len = file.len().map_err(|e| Error::io("stat consume queue", &path, e))?;
        Ok(Some((file, len)))
    };
    let Some((_, head_len)) = open(min)? else { return Ok(false) };
    let upf = units_per_file.unwrap_or(head_len / UNIT);
    if upf == 0 || upf > MAX_UNITS_PER_FILE {
        let kind = CorruptionKind::BadLength { length: head_len };
        problems.damaged(&q.dir.join(file_name(min)), 0, kind, true);
        return Ok(false);
    }
    q.units_per_file = upf;
    q.min = min;
    let mut scan = Scan { index, end: None, gap_end: false, following: 0, prev: None };
    let mut expected = min;
    for first in firsts {
        let path = q.dir.join(file_name(first));
        let Some((file, len)) = open(first)? else { continue };
        if first < expected {
            problems.damaged(&path, 0, CorruptionKind::Misplaced { claimed: first, actual: expected }, true);
            continue;
        }
        if len != upf * UNIT {
            problems.damaged(&path, len, CorruptionKind::BadLength { length: len }, true);
            continue;
        }
        if first > expected {
            let at = q.dir.join(file_name(expected));
            problems.push(&at, 0, ProblemKind::MissingFile { first: expected }, Severity::Corruption, true);
            if scan.end.is_none() {
                scan.end = Some(expected);
                scan.gap_end = true;
            }
        }
        q.firsts.push(first);
        scan.file(file.as_ref(), &path, first, upf, units, problems)?;
        expected = first.saturating_add(upf);
    }
    q.max = scan.end.unwrap_or(expected);
    if scan.following > 0 && !scan.gap_end {
        if let Some(end) = scan.end {
            let (path, pos) = q.locate(end);
            let kind = ProblemKind::Hole { queue_offset: end, following: scan.following };
            problems.push(&path, pos, kind, Severity::Corruption, true);
        }
    }
    Ok(true)
}

/// State carried across the files of one queue.
struct Scan {
    index: u32,
    /// Queue offset of the first empty unit.
    end: Option<u64>,
    /// The end comes from a missing file, reported as such.
    gap_end: bool,
    /// Non-empty units after `end`.
    following: u64,
    /// Physical offset of the previous unit.
    prev: Option<u64>,
}

impl Scan {
    fn file(
        &mut self,
        file: &dyn StorageFile,
        path: &Path,
        first: u64,
        upf: u64,
        units: &mut Vec<UnitAt>,
        problems: &mut Problems,
    ) -> Result<()> {
        let mut buf = vec![0u8; CHUNK_UNITS * CQ_UNIT_LEN];
        let mut idx = 0u64;
        while idx < upf {
            let n = (upf - idx).min(CHUNK_UNITS as u64) as usize;
            let got = read_full_at(file, &mut buf[..n * CQ_UNIT_LEN], idx * UNIT)
                .map_err(|e| Error::io("read consume queue", path, e))?;
            for (j, raw) in (idx..).zip(buf[..got].chunks_exact(CQ_UNIT_LEN)) {
                self.unit(raw, first + j, path, j * UNIT, units, problems);
            }
            if got < n * CQ_UNIT_LEN {
                break;
            }
            idx += n as u64;
        }
        Ok(())
    }

    fn unit(&mut self, raw: &[u8], at: u64, path: &Path, pos: u64, units: &mut Vec<UnitAt>, problems: &mut Problems) {
        let zero = raw.iter().all(|&b| b == 0);
        if self.end.is_some() {
            self.following += u64::from(!zero);
            return;
        }
        let Some(unit) = CqUnit::decode(raw) else {
            if zero {
                // An empty unit ends the queue.
                self.end = Some(at);
            } else {
                // Stray bytes besides a zero size: one damaged unit (the
                // store's recovery ends the queue here and rebuilds it).
                problems.damaged(path, pos, CorruptionKind::InvalidField { field: "consume-queue unit size" }, true);
            }
            return;
        };
        let overflows = unit.physical_offset.0.checked_add(u64::from(unit.size)).is_none();
        if overflows || self.prev.is_some_and(|p| unit.physical_offset.0 <= p) {
            let kind = ProblemKind::NotIncreasing { queue_offset: at };
            problems.push(path, pos, kind, Severity::Corruption, true);
        }
        self.prev = Some(unit.physical_offset.0);
        units.push(UnitAt { unit, queue: self.index, queue_offset: at });
    }
}
