//! Opening a commit log: lock, list, validate, scan from the checkpoint,
//! truncate a torn tail, map.
//!
//! Order matters: the directory lock is taken before anything is read or
//! written, because recovery writes (it zeroes torn tails and deletes
//! segments past the recovered end).

use super::checkpoint::{self, Checkpoint, RecordMark, ShutdownState};
use super::flush::FlushState;
use super::prealloc::Prealloc;
use super::record::MAX_RECORD_LEN_LIMIT;
use super::scan::{list_segments, open_segments, Scanner, SegmentFile, Step, COMMITLOG_DIR};
use super::segment::{Segment, SEGMENT_HEADER_LEN};
use super::{CommitLogOptions, Core, Fence, RecoveryMode, Writer, LOCK_FILE};
use crate::error::{CorruptionKind, Error, Result};
use crate::offset::PhysicalOffset;
use crate::storage::{read_exact_at, read_full_at, LockGuard, OpenMode, Storage};
use parking_lot::{Condvar, Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How recovery used the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointUse {
    /// A fresh log: there was nothing to recover.
    NewLog,
    /// The checkpoint was valid and consistent; the scan started there.
    Used,
    /// There was no checkpoint; the whole log was scanned.
    Missing,
    /// The checkpoint was damaged; the whole log was scanned.
    Damaged(String),
    /// The checkpoint did not match the log (for example an older copy of a
    /// segment was put back); the whole log was scanned.
    Inconsistent(String),
}

/// A torn or damaged tail that recovery removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The segment file where the damage was found.
    pub path: PathBuf,
    /// Physical offset the log was truncated to.
    pub offset: PhysicalOffset,
    /// What was wrong with the bytes there.
    pub kind: CorruptionKind,
}

/// What [`CommitLog::open_with_report`](super::CommitLog::open_with_report)
/// found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous shutdown was clean.
    pub clean_shutdown: bool,
    /// How the checkpoint was used.
    pub checkpoint: CheckpointUse,
    /// Where the scan started.
    pub scanned_from: PhysicalOffset,
    /// Records verified by the scan.
    pub records_scanned: u64,
    /// The recovered end of the log.
    pub end: PhysicalOffset,
    /// The torn tail that was cut off, if any.
    pub truncated: Option<Truncation>,
    /// Segment files past the recovered end that were deleted.
    pub segments_removed: usize,
    /// How many of those held records (possible after a power loss in
    /// async mode; never after a process crash).
    pub discarded_segments_with_data: usize,
    /// Leftover temporary files (interrupted segment creation) deleted.
    pub temporaries_removed: usize,
}

/// How long an open keeps trying a lock that is held before it reports
/// [`Error::Locked`]. A process forked while this one had the lock file
/// open shares its `flock` until the child execs (the descriptor is
/// close-on-exec) or exits, so a store closed and opened again while
/// another thread spawns a process can find its own released lock held
/// for that moment (seen in the test suite: a test running `df` beside
/// one that reopens a store).
pub(crate) const LOCK_WAIT: Duration = Duration::from_millis(200);

/// Takes the directory lock, retrying for up to [`LOCK_WAIT`].
fn take_lock(st: &dyn Storage, path: &Path) -> Result<Box<dyn LockGuard>> {
    let started = Instant::now();
    loop {
        if let Some(lock) = st.try_lock(path).map_err(|e| Error::io("lock", path, e))? {
            return Ok(lock);
        }
        if started.elapsed() >= LOCK_WAIT {
            return Err(Error::Locked { path: path.to_path_buf() });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) fn open(root: &Path, opts: CommitLogOptions) -> Result<(Core, RecoveryReport)> {
    let storage = opts.storage.clone();
    let st = storage.as_ref();
    st.create_dir_all(root).map_err(|e| Error::io("create directory", root, e))?;
    let lock = take_lock(st, &root.join(LOCK_FILE))?;

    let dir = root.join(COMMITLOG_DIR);
    st.create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
    let listing = list_segments(st, &dir)?;
    for tmp in &listing.temporaries {
        st.remove_file(tmp).map_err(|e| Error::io("remove temporary", tmp, e))?;
    }
    let cp = match checkpoint::read(st, root) {
        Ok(cp) => Ok(cp),
        Err(Error::Corruption { kind, .. }) => Err(kind.to_string()),
        Err(e) => return Err(e),
    };
    let mut segs = open_segments(st, &listing, OpenMode::ReadWrite)?;

    let mut report = RecoveryReport {
        clean_shutdown: false,
        checkpoint: CheckpointUse::NewLog,
        scanned_from: PhysicalOffset(0),
        records_scanned: 0,
        end: PhysicalOffset(0),
        truncated: None,
        segments_removed: 0,
        discarded_segments_with_data: 0,
        temporaries_removed: listing.temporaries.len(),
    };

    if segs.is_empty() {
        if let Ok(Some(cp)) = &cp {
            if cp.last_record.is_some() {
                // The checkpoint promises durable records, yet no segment
                // exists: refuse rather than silently start an empty log.
                return Err(Error::corruption(&dir, cp.flushed, CorruptionKind::Truncated));
            }
        }
        let seg = Segment::create(st, &dir, 0, opts.segment_size, opts.clock.as_ref())?;
        let end = SEGMENT_HEADER_LEN as u64;
        report.scanned_from = PhysicalOffset(end);
        report.end = PhysicalOffset(end);
        report.clean_shutdown = true;
        let seg = Arc::new(seg);
        let core = build(root, dir, opts, seg.clone(), vec![seg], end, None, lock, 0);
        core.write_checkpoint(ShutdownState::Running)?;
        return Ok((core, report));
    } else if !listing.temporaries.is_empty() {
        st.sync_dir(&dir).map_err(|e| Error::io("fsync directory", &dir, e))?;
    }

    let first_record = segs[0].header.base + SEGMENT_HEADER_LEN as u64;
    let last_end = segs.last().map_or(first_record, SegmentFile::end);
    let (start, mark, generation) = match &cp {
        Ok(Some(c)) => match check_checkpoint(c, &segs, MAX_RECORD_LEN_LIMIT) {
            Ok(start) => {
                report.clean_shutdown = c.state == ShutdownState::Clean;
                report.checkpoint = CheckpointUse::Used;
                (start.clamp(first_record, last_end), c.last_record, c.generation)
            }
            Err(why) => {
                if opts.recovery_mode == RecoveryMode::AbsoluteConsistency {
                    return Err(Error::corruption(
                        root.join(checkpoint::CHECKPOINT_FILE),
                        0,
                        CorruptionKind::InvalidField { field: "checkpoint does not match the log" },
                    ));
                }
                report.checkpoint = CheckpointUse::Inconsistent(why);
                (first_record, None, c.generation)
            }
        },
        Ok(None) => {
            report.checkpoint = CheckpointUse::Missing;
            (first_record, None, 0)
        }
        Err(why) => {
            report.checkpoint = CheckpointUse::Damaged(why.clone());
            (first_record, None, 0)
        }
    };
    // A requested cut below the checkpoint: scan from the start of the
    // segment holding it, so the scan reaches it and finds the last record
    // before it.
    let (start, mut mark) = match opts.truncate_to {
        Some(t) if t < start => {
            let seg = segs.iter().find(|s| t >= s.header.base && t < s.end()).map_or(first_record, |s| s.header.base);
            ((seg + SEGMENT_HEADER_LEN as u64).clamp(first_record, last_end), None)
        }
        _ => (start, mark),
    };
    report.scanned_from = PhysicalOffset(start);
    let mut cut = false;

    // Scan forward, verifying every record.
    // Validate against the format's hard limit, not the configured append
    // limit: reopening with a smaller `max_record_size` must not turn
    // records written under a larger one into a "torn tail".
    let mut scanner = Scanner::new(&segs, start, MAX_RECORD_LEN_LIMIT);
    let (end, end_idx) = loop {
        let idx = scanner.segment_index();
        let step = scanner.step()?;
        if let Some(t) = opts.truncate_to {
            let at = match &step {
                Step::Record { offset, .. } | Step::Blank { offset, .. } | Step::End { offset } => *offset,
                Step::Damage { offset, .. } => *offset,
            };
            if at == t && !matches!(step, Step::End { .. }) {
                cut = true;
                break (t, idx);
            }
            if at > t {
                // The scan stepped over the cut: it is inside a record.
                return Err(Error::ReplicaDiverged { offset: t });
            }
        }
        match step {
            Step::Record { offset, bytes, .. } => {
                report.records_scanned += 1;
                mark = Some(RecordMark { offset, crc: super::record::RecordView { bytes }.crc() });
            }
            Step::Blank { next_missing: true, .. } => {
                // The next segment is created before the marker is written,
                // so it can only be missing if it was removed by hand.
                // Recreate it empty below.
                break (segs[idx].end() + SEGMENT_HEADER_LEN as u64, idx + 1);
            }
            Step::Blank { .. } => {}
            Step::End { offset } => break (offset, scanner.segment_index().min(segs.len() - 1)),
            Step::Damage { offset, path, pos, kind } => {
                if opts.recovery_mode == RecoveryMode::AbsoluteConsistency {
                    return Err(Error::corruption(path, pos, kind));
                }
                report.truncated = Some(Truncation { path, offset: PhysicalOffset(offset), kind });
                break (offset, idx);
            }
        }
    };
    report.end = PhysicalOffset(end);
    drop(scanner);
    if end_idx == segs.len() {
        let base = end - SEGMENT_HEADER_LEN as u64;
        let seg = Segment::create(st, &dir, base, opts.segment_size, opts.clock.as_ref())?;
        let (file, header, len) = Segment::open_file(st, &seg.path, base, OpenMode::ReadWrite)?;
        segs.push(SegmentFile { header, path: seg.path.clone(), file, len });
    }

    // Segments past the end that hold records: legitimate after a power
    // loss in async mode (unflushed pages of an earlier segment lost while
    // later ones reached the disk), but worth reporting, and refused by
    // AbsoluteConsistency before anything is changed.
    for s in &segs[end_idx + 1..] {
        let mut head = [0u8; 8];
        let n = read_full_at(s.file.as_ref(), &mut head, SEGMENT_HEADER_LEN as u64)
            .map_err(|e| Error::io("read segment", &s.path, e))?;
        if n == head.len() && head != [0u8; 8] {
            if opts.recovery_mode == RecoveryMode::AbsoluteConsistency {
                return Err(Error::corruption(&s.path, SEGMENT_HEADER_LEN as u64, CorruptionKind::MidLog));
            }
            report.discarded_segments_with_data += 1;
        }
    }

    // Make the recovered prefix durable and the tail unreadable, then drop
    // segments past the end, before anything is mapped or published.
    let tail = &segs[end_idx];
    if tail.len < tail.header.size {
        // A segment cut short: give it back its full allocation before
        // zeroing and mapping (touching a mapping past EOF is a SIGBUS).
        tail.file.allocate(tail.header.size).map_err(|e| Error::io("allocate segment", &tail.path, e))?;
    }
    let dirty = tail.len < tail.header.size
        || cut
        || !report.clean_shutdown
        || report.truncated.is_some()
        || report.records_scanned > 0;
    if dirty {
        let tail = &segs[end_idx];
        let pos = end - tail.header.base;
        tail.file.zero_range(pos, tail.header.size - pos).map_err(|e| Error::io("zero torn tail", &tail.path, e))?;
        let first_scanned = segs.iter().position(|s| start < s.end()).unwrap_or(end_idx);
        for s in &segs[first_scanned.min(end_idx)..=end_idx] {
            s.file.sync_data().map_err(|e| Error::io("fdatasync segment", &s.path, e))?;
        }
    }
    let removed: Vec<SegmentFile> = segs.drain(end_idx + 1..).collect();
    for s in removed.iter().rev() {
        st.remove_file(&s.path).map_err(|e| Error::io("remove segment", &s.path, e))?;
    }
    report.segments_removed = removed.len();
    if !removed.is_empty() {
        st.sync_dir(&dir).map_err(|e| Error::io("fsync directory", &dir, e))?;
    }

    let mut mapped = Vec::with_capacity(segs.len());
    for s in segs {
        mapped.push(Arc::new(Segment::map(s.file, s.path, s.header)?));
    }
    // Every segment but the tail is only read from now on.
    for seg in mapped.iter().rev().skip(1) {
        seg.seal();
    }
    // The tail segment (the last one kept) holds the end.
    let active = mapped.last().cloned().ok_or_else(|| Error::corruption(&dir, end, CorruptionKind::Truncated))?;
    let core = build(root, dir, opts, active, mapped, end, mark, lock, generation);
    // Store timestamps never go backwards in log order, also across a
    // restart on a clock that stepped back: continue from the last record.
    if let Some(m) = mark {
        if let Ok(rec) = core.read(m.offset) {
            core.writer.lock().last_store_ts = rec.store_timestamp();
        }
    }
    core.write_checkpoint(ShutdownState::Running)?;
    Ok((core, report))
}

/// Checks that the checkpoint's offsets fit the segments and that the
/// record it names is really there; returns where the scan may start.
fn check_checkpoint(cp: &Checkpoint, segs: &[SegmentFile], max_record: u32) -> std::result::Result<u64, String> {
    let Some(m) = cp.last_record else {
        return Ok(cp.flushed);
    };
    let first = segs.first().map_or(0, |s| s.header.base);
    if m.offset < first {
        // Older segments were removed by retention; the mark is gone too.
        return Ok(cp.flushed);
    }
    if m.offset >= cp.flushed {
        return Err(format!("record mark {} is not below flushed offset {}", m.offset, cp.flushed));
    }
    let Some(seg) = segs.iter().find(|s| m.offset >= s.header.base && m.offset < s.end()) else {
        return Err(format!("record mark {} is past the last segment", m.offset));
    };
    if !segs.iter().any(|s| cp.flushed >= s.header.base + SEGMENT_HEADER_LEN as u64 && cp.flushed <= s.end()) {
        return Err(format!("flushed offset {} is past the last segment", cp.flushed));
    }
    let pos = m.offset - seg.header.base;
    let mut head = [0u8; 8];
    read_exact_at(seg.file.as_ref(), &mut head, pos).map_err(|e| format!("cannot read record mark: {e}"))?;
    let room = seg.header.size - pos;
    let len = match super::record::parse_prefix(&head, room, max_record) {
        Ok(super::record::Prefix::Record { len }) => len,
        other => return Err(format!("no record at mark {}: {other:?}", m.offset)),
    };
    let mut buf = vec![0u8; len as usize];
    read_exact_at(seg.file.as_ref(), &mut buf, pos).map_err(|e| format!("cannot read record mark: {e}"))?;
    match super::record::RecordView::validate(&buf, m.offset) {
        Ok((view, _)) if view.crc() == m.crc => Ok(cp.flushed),
        Ok(_) => Err(format!("record at mark {} has a different crc", m.offset)),
        Err(kind) => Err(format!("record at mark {} is damaged: {kind}", m.offset)),
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    root: &Path,
    dir: PathBuf,
    opts: CommitLogOptions,
    active: Arc<Segment>,
    segments: Vec<Arc<Segment>>,
    end: u64,
    mark: Option<RecordMark>,
    lock: Box<dyn crate::storage::LockGuard>,
    generation: u64,
) -> Core {
    let pos = end - active.base;
    let writer = Writer {
        active,
        pos,
        last: mark,
        last_store_ts: 0,
        prefault_requested: end,
        next_requested: false,
        staged: Default::default(),
    };
    Core {
        root: root.to_path_buf(),
        dir,
        opts,
        segments: RwLock::new(segments),
        writer: Mutex::new(writer),
        written: AtomicU64::new(end),
        flushed: AtomicU64::new(end),
        write_behind: AtomicU64::new(end),
        staged_end: AtomicU64::new(end),
        opened_at: end,
        fence: Fence::default(),
        flush_state: Mutex::new(FlushState::new(mark)),
        flush_cv: Condvar::new(),
        work_cv: Condvar::new(),
        commit_lock: Mutex::new(()),
        sync_appenders: std::sync::atomic::AtomicUsize::new(0),
        sync_waiters: std::sync::atomic::AtomicUsize::new(0),
        committed: super::wake::Broadcast::default(),
        returning: std::sync::atomic::AtomicUsize::new(0),
        commit_bytes_avg: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        prealloc: Prealloc::new(),
        checkpoint_generation: AtomicU64::new(generation),
        checkpointed: AtomicU64::new(u64::MAX),
        lock: Mutex::new(Some(lock)),
        on_publish: RwLock::new(None),
    }
}
