//! A read-only walk over every segment of a commit log that keeps going
//! past damage, for [`crate::store::verify`].
//!
//! Unlike recovery (which stops at the first invalid record) and
//! [`CommitLog::verify`](super::CommitLog::verify) (which stops there too),
//! the walk reports each damaged spot and resumes at the next segment's
//! first record, so what lies beyond the damage is still checked. Segments
//! whose header does not check out are reported and left out; gaps and
//! overlaps between the rest are reported and each contiguous run is
//! scanned on its own.
//!
//! Files are opened [`OpenMode::Read`] and read with `pread`; nothing is
//! written, mapped or locked.

use super::checkpoint::ShutdownState;
use super::record::{Parts, RecordView};
use super::scan::{list_segments, Scanner, SegmentFile, Step, COMMITLOG_DIR};
use super::segment::{SegmentHeader, BASE_OFFSET_OFFSET, SEGMENT_HEADER_LEN};
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{read_full_at, OpenMode, Storage};
use std::path::{Path, PathBuf};

/// How far past the end of the written log the walk checks that bytes are
/// zero (one `pread`). Enough to see records resume after a zeroed page or
/// a torn write; a segment's whole unwritten tail (up to 1 GiB of
/// preallocated zeros) would cost as much as the rest of the scan.
const ZERO_CHECK: usize = 1 << 20;
/// How often the walk re-reads a tail that grew while it was being
/// checked (a live writer appending) before it gives up chasing it.
const MAX_CHASES: u32 = 16;
/// How long the walk waits for a record past the flushed offset that
/// failed its checks to be finished by a live writer, in steps of
/// [`CHASE_PAUSE`], before it reports it.
const DAMAGE_CHASE_TRIES: u32 = 4;
/// See [`DAMAGE_CHASE_TRIES`].
const CHASE_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// Damage in the commit log found by [`walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogDamage {
    /// The file holding the damage (for a missing segment: its name).
    pub(crate) path: PathBuf,
    /// Position in that file.
    pub(crate) pos: u64,
    /// What was wrong.
    pub(crate) kind: CorruptionKind,
    /// A torn tail: at or past the flushed offset of a store that did not
    /// shut down cleanly, with no valid record after it.
    pub(crate) torn: bool,
}

/// What [`walk`] passes to its callback, in ascending offset order.
#[derive(Debug)]
pub(crate) enum Walked<'b> {
    /// A record whose framing and CRC checked out.
    Record {
        /// Physical offset.
        offset: u64,
        /// The whole record.
        view: RecordView<'b>,
        /// Where its variable parts are.
        parts: Parts,
        /// The segment file holding it.
        path: &'b Path,
        /// Its position in that file.
        pos: u64,
    },
    /// `[from, to)` could not be read as records: damage, or a segment
    /// that is missing or left out.
    Skipped { from: u64, to: u64 },
}

/// Summary of a [`walk`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogWalk {
    /// Segment files whose header checked out.
    pub(crate) segments: usize,
    /// First record position of the first segment (0 without segments).
    pub(crate) start: u64,
    /// End of the valid prefix from `start`: where recovery, scanning the
    /// whole log, would stop.
    pub(crate) prefix_end: u64,
    /// Records in that prefix.
    pub(crate) prefix_records: u64,
    /// Valid records found after the prefix (beyond damage).
    pub(crate) records_after: u64,
    /// Where the last segment's scan ended: the end of the log.
    pub(crate) end: u64,
    /// Each damaged spot, in log order.
    pub(crate) damage: Vec<LogDamage>,
}

/// Walks the commit log of the store at `root`.
///
/// Damage at or past `tail_from` (the flushed offset of a checkpoint that
/// says the store is running or crashed) is a torn tail unless a valid
/// record follows it in a later segment, which makes it mid-log damage.
/// `Err` only for I/O errors and a missing `commitlog/` directory.
pub(crate) fn walk(
    root: &Path,
    storage: &dyn Storage,
    tail_from: Option<u64>,
    mut each: impl FnMut(Walked<'_>) -> Result<()>,
) -> Result<LogWalk> {
    let dir = root.join(COMMITLOG_DIR);
    if !storage.exists(&dir).map_err(|e| Error::io("stat", &dir, e))? {
        return Err(Error::InvalidArgument(format!("{} holds no commit log", root.display())));
    }
    let mut out = LogWalk::default();
    let (segs, left_out) = open_all(storage, &dir, &mut out.damage)?;
    out.segments = segs.len();
    let Some(first) = segs.first() else {
        return Ok(out);
    };
    // Segments left out before the first good one still belong to the log:
    // it starts at the lowest segment name, and what they held is damaged.
    let lowest = left_out.iter().copied().filter(|&b| b < first.header.base).min();
    out.start = lowest.unwrap_or(first.header.base) + SEGMENT_HEADER_LEN as u64;
    out.prefix_end = out.start;
    out.end = out.start;
    if lowest.is_some() {
        each(Walked::Skipped { from: out.start, to: first.header.base })?;
    }
    let mut w = Walker {
        out,
        storage,
        tail_from,
        in_prefix: lowest.is_none(),
        pending_torn: None,
        pending_end: None,
        chases: 0,
        end_fixed: false,
    };
    let mut run_start = 0;
    for i in 1..=segs.len() {
        let next = segs.get(i);
        let prev_end = segs[i - 1].end();
        if next.is_some_and(|n| n.header.base == prev_end) {
            continue;
        }
        w.run(&segs[run_start..i], next.is_none(), &mut each)?;
        if let Some(next) = next {
            // A gap or an overlap. A segment left out for a bad header
            // explains a gap by itself: it was reported already.
            let explained = left_out.iter().any(|&b| b >= prev_end && b < next.header.base);
            if !explained {
                let kind = CorruptionKind::Misplaced { claimed: next.header.base, actual: prev_end };
                w.out.damage.push(LogDamage { path: next.path.clone(), pos: 0, kind, torn: false });
            }
            w.end_prefix(prev_end);
            if next.header.base > prev_end {
                each(Walked::Skipped { from: prev_end, to: next.header.base })?;
            }
        }
        run_start = i;
    }
    let end = w.out.end;
    w.end_prefix(end);
    Ok(w.out)
}

/// Opens every segment file read-only and checks its header; reports and
/// leaves out the ones that fail (returning their names' offsets too),
/// and reports every short one but the last.
fn open_all(storage: &dyn Storage, dir: &Path, damage: &mut Vec<LogDamage>) -> Result<(Vec<SegmentFile>, Vec<u64>)> {
    let listing = list_segments(storage, dir)?;
    let mut segs = Vec::with_capacity(listing.segments.len());
    let mut left_out = Vec::new();
    for (base, path) in &listing.segments {
        let file = storage.open(path, OpenMode::Read).map_err(|e| Error::io("open segment", path, e))?;
        let len = file.len().map_err(|e| Error::io("stat segment", path, e))?;
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        let n = read_full_at(file.as_ref(), &mut buf, 0).map_err(|e| Error::io("read segment header", path, e))?;
        let checked = if n < SEGMENT_HEADER_LEN {
            Err((n as u64, CorruptionKind::Truncated))
        } else {
            SegmentHeader::decode(&buf).and_then(|h| {
                if h.base == *base {
                    Ok(h)
                } else {
                    Err((BASE_OFFSET_OFFSET as u64, CorruptionKind::Misplaced { claimed: h.base, actual: *base }))
                }
            })
        };
        match checked {
            Ok(header) => segs.push(SegmentFile { header, path: path.clone(), file, len }),
            Err((pos, kind)) => {
                damage.push(LogDamage { path: path.clone(), pos, kind, torn: false });
                left_out.push(*base);
            }
        }
    }
    // Only the last segment may be short (its tail was cut, a torn tail);
    // a short one anywhere else lost data in the middle of the log.
    let n = segs.len();
    for s in segs.iter().take(n.saturating_sub(1)) {
        if s.len < s.header.size {
            damage.push(LogDamage { path: s.path.clone(), pos: s.len, kind: CorruptionKind::Truncated, torn: false });
        }
    }
    Ok((segs, left_out))
}

struct Walker<'s> {
    out: LogWalk,
    storage: &'s dyn Storage,
    tail_from: Option<u64>,
    /// Still in the valid prefix from the log's start.
    in_prefix: bool,
    /// Index in `out.damage` of the first torn tail not yet contradicted
    /// by a later valid record.
    pending_torn: Option<usize>,
    /// Zeros ending a segment's data `(path, pos, offset, segment end,
    /// index of the segment in its run)`: the end of the log, unless a
    /// record follows in a later segment.
    pending_end: Option<(PathBuf, u64, u64, u64, usize)>,
    chases: u32,
    /// `out.end` is the first stop after the last record seen so far.
    end_fixed: bool,
}

/// How a sub-scan of a run stopped: where to go on.
enum Next {
    /// Resume at the first record of the run's segment with this index.
    Segment(usize),
    /// Re-read from this offset in the run's segment with this index.
    At(usize, u64),
    /// The run is done.
    Done,
}

impl Walker<'_> {
    /// Records damage at physical `offset`: a torn tail if past the flushed
    /// offset of a store that did not shut down cleanly.
    fn damage(&mut self, path: PathBuf, pos: u64, kind: CorruptionKind, offset: u64) {
        let torn = self.tail_from.is_some_and(|f| offset >= f);
        if torn && self.pending_torn.is_none() {
            self.pending_torn = Some(self.out.damage.len());
        }
        self.out.damage.push(LogDamage { path, pos, kind, torn });
        self.terminal(offset);
    }

    /// A sub-scan stopped at `offset`. The log ends at the first stop
    /// after its last valid record (later stops, such as the zeros of a
    /// preallocated next segment after a torn tail, do not move it).
    fn terminal(&mut self, offset: u64) {
        self.end_prefix(offset);
        if !self.end_fixed {
            self.end_fixed = true;
            self.out.end = offset;
        }
    }

    fn end_prefix(&mut self, offset: u64) {
        if self.in_prefix {
            self.in_prefix = false;
            self.out.prefix_end = offset;
        }
    }

    /// A valid record: zeros or a torn tail before it were not the end of
    /// the log after all, but damage in its middle.
    fn record(&mut self, each: &mut dyn FnMut(Walked<'_>) -> Result<()>) -> Result<()> {
        self.end_fixed = false;
        if self.in_prefix {
            self.out.prefix_records += 1;
            return Ok(());
        }
        self.out.records_after += 1;
        if let Some((path, pos, offset, seg_end, _)) = self.pending_end.take() {
            self.out.damage.push(LogDamage { path, pos, kind: CorruptionKind::MidLog, torn: false });
            each(Walked::Skipped { from: offset, to: seg_end })?;
        }
        if let Some(i) = self.pending_torn.take() {
            for d in &mut self.out.damage[i..] {
                d.torn = false;
            }
        }
        Ok(())
    }

    /// Scans one contiguous run of segments, resuming at the next segment
    /// after each damaged spot. `last` says whether no segment follows.
    fn run(&mut self, run: &[SegmentFile], last: bool, each: &mut dyn FnMut(Walked<'_>) -> Result<()>) -> Result<()> {
        // Zeros at the end of an earlier run are followed by a gap, which
        // is reported as such.
        self.pending_end = None;
        let mut next = Next::Segment(0);
        loop {
            let (from, start) = match next {
                Next::Segment(i) if i < run.len() => (i, run[i].header.base + SEGMENT_HEADER_LEN as u64),
                Next::At(i, at) => (i, at),
                _ => return Ok(()),
            };
            next = self.sub_scan(run, from, start, last, each)?;
        }
    }

    fn sub_scan(
        &mut self,
        run: &[SegmentFile],
        from: usize,
        start: u64,
        last: bool,
        each: &mut dyn FnMut(Walked<'_>) -> Result<()>,
    ) -> Result<Next> {
        let sub = &run[from..];
        let mut scanner = Scanner::new(sub, start, u32::MAX);
        loop {
            let idx = scanner.segment_index();
            let Some(seg) = sub.get(idx) else {
                return Ok(Next::Done);
            };
            match scanner.step()? {
                Step::Record { offset, bytes, parts } => {
                    // Zeros seen earlier with a record after them: unless a
                    // live writer has filled them since (then scan them,
                    // in order), they are damage.
                    if let Some(&(_, _, at, _, i)) = self.pending_end.as_ref() {
                        if self.chases < MAX_CHASES {
                            self.chases += 1;
                            if reads_valid_now(&run[i..], at)? {
                                self.pending_end = None;
                                return Ok(Next::At(i, at));
                            }
                        }
                    }
                    self.record(each)?;
                    // The scanner validated the record.
                    let (path, pos) = (seg.path.as_path(), offset - seg.header.base);
                    each(Walked::Record { offset, view: RecordView { bytes }, parts, path, pos })?;
                }
                Step::Blank { next_missing: false, .. } => {}
                Step::Blank { next_missing: true, .. } => {
                    // A marker is written only after the next segment
                    // exists durably, so a missing one was lost. (With a
                    // later run, the gap was reported instead.)
                    // A live writer may have created it after the listing.
                    let end = seg.end();
                    self.terminal(end);
                    let path = seg.path.with_file_name(format!("{end:020}"));
                    if last && !self.storage.exists(&path).map_err(|e| Error::io("stat", &path, e))? {
                        self.out.damage.push(LogDamage { path, pos: 0, kind: CorruptionKind::Truncated, torn: false });
                    }
                    return Ok(Next::Done);
                }
                Step::End { offset } => {
                    let Some(nonzero) = nonzero_after(seg, offset)? else {
                        // The first zeros after the last record are the
                        // end; zeros of a later (preallocated) segment are
                        // not.
                        if self.pending_end.is_none() {
                            self.terminal(offset);
                            let pos = offset - seg.header.base;
                            self.pending_end = Some((seg.path.clone(), pos, offset, seg.end(), from + idx));
                        }
                        // Later segments of the run must be empty too.
                        return Ok(Next::Segment(from + idx + 1));
                    };
                    // A live writer may have appended since: read again.
                    if self.chases < MAX_CHASES {
                        self.chases += 1;
                        if reads_valid_now(&sub[idx..], offset)? {
                            return Ok(Next::At(from + idx, offset));
                        }
                    }
                    let kind = CorruptionKind::InvalidField { field: "data after the end of the log" };
                    self.damage(seg.path.clone(), nonzero - seg.header.base, kind, offset);
                    each(Walked::Skipped { from: offset, to: seg.end() })?;
                    return Ok(Next::Segment(from + idx + 1));
                }
                Step::Damage { offset, path, pos, kind } => {
                    // Past the flushed offset of a running store this may
                    // be a record a live writer is still copying in (the
                    // walk reads with `pread`, in address order, so it can
                    // see a record's length before its checksum): read it
                    // again, briefly, before calling it damage. Without
                    // this, a valid record the writer finished meanwhile in
                    // a later segment made it look like mid-log damage.
                    if self.tail_from.is_some_and(|f| offset >= f) && self.chases < MAX_CHASES {
                        self.chases += 1;
                        for attempt in 0..DAMAGE_CHASE_TRIES {
                            if attempt > 0 {
                                std::thread::sleep(CHASE_PAUSE);
                            }
                            if reads_valid_now(&sub[idx..], offset)? {
                                return Ok(Next::At(from + idx, offset));
                            }
                        }
                    }
                    self.damage(path, pos, kind, offset);
                    each(Walked::Skipped { from: offset, to: seg.end() })?;
                    return Ok(Next::Segment(from + idx + 1));
                }
            }
        }
    }
}

/// Whether reading `segs` again at physical `offset` now finds a valid
/// record or a segment's blank end there: a live writer finished what an
/// earlier read saw as zeros or damage.
fn reads_valid_now(segs: &[SegmentFile], offset: u64) -> Result<bool> {
    let mut again = Scanner::new(segs, offset, u32::MAX);
    Ok(matches!(again.step()?, Step::Record { .. } | Step::Blank { .. }))
}

/// The physical offset of the first non-zero byte of `seg` in the
/// [`ZERO_CHECK`] bytes from physical `offset`, if any: bytes past the end
/// of the log must read as zeros (FORMAT.md section 6, invariant 4).
fn nonzero_after(seg: &SegmentFile, offset: u64) -> Result<Option<u64>> {
    let len = seg.len.min(seg.header.size);
    let pos = offset.saturating_sub(seg.header.base);
    let want = len.saturating_sub(pos).min(ZERO_CHECK as u64) as usize;
    let mut buf = vec![0u8; want];
    let n = read_full_at(seg.file.as_ref(), &mut buf, pos).map_err(|e| Error::io("read segment", &seg.path, e))?;
    Ok(buf[..n].iter().position(|&b| b != 0).map(|i| seg.header.base + pos + i as u64))
}

/// The flushed offset from which damage counts as a torn tail: that of a
/// checkpoint whose state says the store is running or crashed.
pub(crate) fn torn_tail_from(cp: Option<&super::Checkpoint>) -> Option<u64> {
    cp.filter(|c| c.state == ShutdownState::Running).map(|c| c.flushed)
}
