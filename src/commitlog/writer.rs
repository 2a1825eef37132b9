//! The append path: one writer at a time under the append lock.
//!
//! * [`FlushMode::Async`]: records are encoded straight into the mapped
//!   segment and published at once (a process crash loses nothing: the page
//!   cache survives it).
//! * [`FlushMode::Sync`]: records are encoded into a staging buffer; the
//!   `mqstore:flush` thread commits them with `pwrite` + `fdatasync` and only
//!   then publishes them (RocketMQ's write-buffer idea). Appenders are
//!   acknowledged only after that, so nothing acknowledged lives only in the
//!   buffer, and readers never see undurable data.

use super::checkpoint::RecordMark;
use super::read::Record;
use super::record::{
    encode_blank, encode_into, encode_onto, parse_prefix, DraftError, Parts, Prefix, RecordDraft, RecordView, BLANK_LEN,
};
use super::segment::{Segment, SEGMENT_HEADER_LEN};
use super::{Appended, Checksums, Core, FlushMode, Writer};
use crate::error::{CorruptionKind, Error, Result};
use crate::offset::PhysicalOffset;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

impl Core {
    /// Writes `drafts` as one atomic unit and publishes them; calls `each`
    /// for every record written. Returns the new end offset.
    ///
    /// `assign` gives each record its queue offset, called under the append
    /// lock in log order once the write can no longer fail, so a caller
    /// that numbers queue positions there numbers them in log order and
    /// never hands out a number for a record that was not written.
    pub(crate) fn append_batch(
        &self,
        drafts: &[RecordDraft<'_>],
        mut assign: impl FnMut(usize, &RecordDraft<'_>) -> u64,
        mut each: impl FnMut(Appended),
    ) -> Result<u64> {
        if drafts.is_empty() {
            return Ok(self.written.load(Ordering::Acquire));
        }
        // Validate everything before touching the log, so a rejected batch
        // changes nothing.
        let mut total: u64 = 0;
        for d in drafts {
            let len = self.record_len(d)?;
            total += u64::from(len);
        }
        let capacity = self.opts.segment_size - SEGMENT_HEADER_LEN as u64 - u64::from(BLANK_LEN);
        if total > capacity {
            return Err(Error::MessageTooLarge { size: total, max: capacity });
        }

        let mut w = self.writer.lock();
        self.ensure_open()?;
        if total + u64::from(BLANK_LEN) > w.active.size - w.pos {
            self.roll(&mut w)?;
            // A segment with a different size (opened from an older config)
            // may still be too small.
            if total + u64::from(BLANK_LEN) > w.active.size - w.pos {
                return Err(Error::MessageTooLarge { size: total, max: w.active.size - w.pos - u64::from(BLANK_LEN) });
            }
        }
        let now = self.opts.clock.now_ms().max(w.last_store_ts);
        w.last_store_ts = now;
        let staging = self.opts.flush_mode == FlushMode::Sync;
        // Split borrows of the writer state: the active segment is read
        // while the position and staging buffer change, without cloning
        // the segment's Arc per append.
        let Writer { active, pos, last, staged, .. } = &mut *w;
        let seg: &Segment = active;
        for (i, d) in drafts.iter().enumerate() {
            // Lengths were validated above; recomputing is cheap and keeps
            // the loop free of a side vector.
            let len = self.record_len(d)?;
            let d = &RecordDraft { queue_offset: assign(i, d), ..*d };
            let offset = seg.base + *pos;
            let crc = if staging {
                encode_onto(staged.at(offset), d, offset, now)
            } else {
                // SAFETY: [pos, pos + len) is past the published end (we hold
                // the append lock and publish only below) and inside the
                // segment (checked against the room above).
                let dst = unsafe { seg.bytes_mut(*pos as usize, len as usize) };
                encode_into(dst, d, offset, now)
            };
            *pos += u64::from(len);
            *last = Some(RecordMark { offset, crc });
            each(Appended { offset: PhysicalOffset(offset), size: len, store_timestamp: now, crc });
        }
        let end = seg.base + *pos;
        self.publish_written(&mut w, end);
        Ok(end)
    }

    /// After records were written up to `end` under the append lock:
    /// publishes them (Async: readable now; Sync: staged, readable once the
    /// flush thread committed and synced them) and keeps prefaulting ahead.
    pub(super) fn publish_written(&self, w: &mut Writer, end: u64) {
        if self.opts.flush_mode == FlushMode::Sync {
            self.staged_end.store(end, Ordering::Release);
        } else {
            let before = self.written.swap(end, Ordering::AcqRel);
            self.note_write_behind(before, end);
        }
        self.maybe_prefault(w, end);
    }

    /// Waits for durability as the flush mode requires.
    pub(crate) fn after_append(&self, end: u64) -> Result<()> {
        match self.opts.flush_mode {
            FlushMode::Async => Ok(()),
            FlushMode::Sync => {
                let deadline = Instant::now() + self.opts.sync_flush_timeout;
                self.wait_committed(end, Some(deadline)).map(|_| ())
            }
        }
    }

    fn record_len(&self, d: &RecordDraft<'_>) -> Result<u32> {
        let len = d.encoded_len().map_err(|e| match e {
            DraftError::Topic(n) => {
                Error::InvalidArgument(format!("topic length {n} is outside 1..={}", super::record::MAX_TOPIC_LEN))
            }
            DraftError::Properties(n) => {
                Error::MessageTooLarge { size: n as u64, max: super::record::MAX_PROPERTIES_LEN as u64 }
            }
            DraftError::TooLarge(n) => Error::MessageTooLarge { size: n, max: u64::from(self.opts.max_record_size) },
        })?;
        if len > self.opts.max_record_size {
            return Err(Error::MessageTooLarge { size: u64::from(len), max: u64::from(self.opts.max_record_size) });
        }
        Ok(len)
    }

    /// Moves the writer to the next segment: obtains it first (so a failure,
    /// such as a full disk, changes nothing), then writes the end marker and
    /// publishes the jump.
    pub(super) fn roll(&self, w: &mut Writer) -> Result<()> {
        let next_base = w.active.end();
        let next = self.prealloc.take_or_create(self, next_base)?;
        let room = w.active.size - w.pos;
        let offset = w.active.base + w.pos;
        // `room` fits u32: records are at most 256 MiB and segments are only
        // left with less than record + marker bytes; clamp defensively.
        let room = u32::try_from(room).unwrap_or(u32::MAX);
        if self.opts.flush_mode == FlushMode::Sync {
            let mut blank = [0u8; BLANK_LEN as usize];
            encode_blank(&mut blank, room);
            w.staged.at(offset).extend_from_slice(&blank);
        } else {
            // SAFETY: [pos, pos + 8) is past the published end and inside the
            // segment (every segment keeps room for the marker).
            encode_blank(unsafe { w.active.bytes_mut(w.pos as usize, BLANK_LEN as usize) }, room);
        }
        w.active.seal();
        w.active = next;
        w.pos = SEGMENT_HEADER_LEN as u64;
        let end = next_base + SEGMENT_HEADER_LEN as u64;
        if self.opts.flush_mode == FlushMode::Sync {
            self.staged_end.store(end, Ordering::Release);
        } else {
            self.written.store(end, Ordering::Release);
        }
        w.next_requested = false;
        Ok(())
    }

    /// Asks the preparation thread for the next segment once the active one
    /// is past [`prepare_point`], and for prefaulting ahead of the writer.
    fn maybe_prefault(&self, w: &mut Writer, end: u64) {
        if !w.next_requested && w.pos >= prepare_point(w.active.size) {
            w.next_requested = true;
            self.prealloc.request_segment(w.active.end());
        }
        let window = self.opts.prefault_window;
        if window == 0 || end + window / 2 < w.prefault_requested {
            return;
        }
        let upto = end + window;
        w.prefault_requested = upto;
        self.prealloc.request_prefault(upto);
    }

    /// Reads the record at `offset` (below the published end).
    pub(crate) fn read(&self, offset: u64) -> Result<Record> {
        self.read_checked(offset, Checksums::Verify)
    }

    /// [`Core::read`], checking the record's CRC as `checksums` says.
    pub(crate) fn read_checked(&self, offset: u64, checksums: Checksums) -> Result<Record> {
        match self.read_at(offset, checksums)? {
            Slot::Record(r) => Ok(r),
            Slot::Blank | Slot::End => Err(Error::InvalidArgument(format!("no record starts at offset {offset}"))),
        }
    }

    /// The first record at or after `offset`, skipping end markers; `None`
    /// at the end of the log.
    pub(crate) fn read_next(&self, mut offset: u64, checksums: Checksums) -> Result<Option<Record>> {
        loop {
            match self.read_at(offset, checksums)? {
                Slot::Record(r) => return Ok(Some(r)),
                Slot::End => return Ok(None),
                Slot::Blank => {
                    let Some(seg) = self.segment_for(offset) else {
                        return Ok(None);
                    };
                    offset = seg.end() + SEGMENT_HEADER_LEN as u64;
                }
            }
        }
    }

    fn read_at(&self, offset: u64, checksums: Checksums) -> Result<Slot> {
        self.ensure_not_closed()?;
        let end = self.written.load(Ordering::Acquire);
        if offset >= end {
            return Ok(Slot::End);
        }
        let seg = self.segment_for(offset).ok_or_else(|| {
            Error::InvalidArgument(format!("offset {offset} is not stored (min {})", self.min_offset()))
        })?;
        let pos = offset - seg.base;
        // `offset` may come from a damaged consume-queue unit and point
        // anywhere: the 8 bytes read next must lie inside this segment (the
        // log may go on in the next one) and below the published end.
        if pos < SEGMENT_HEADER_LEN as u64
            || offset + u64::from(BLANK_LEN) > end
            || pos + u64::from(BLANK_LEN) > seg.size
        {
            return Err(Error::InvalidArgument(format!("no record starts at offset {offset}")));
        }
        let room = seg.size - pos;
        // SAFETY: [pos, pos + 8) is inside the segment and below the
        // published end (checked above), so it is mapped and immutable.
        let head = unsafe { seg.bytes(pos as usize, BLANK_LEN as usize) };
        match parse_prefix(head, room, super::record::MAX_RECORD_LEN_LIMIT) {
            Ok(Prefix::Blank { .. }) => Ok(Slot::Blank),
            Ok(Prefix::Empty) => Err(self.corrupt(&seg, pos, crate::error::CorruptionKind::Truncated)),
            Ok(Prefix::Record { len }) => {
                if offset + u64::from(len) > end {
                    return Err(Error::InvalidArgument(format!("no record starts at offset {offset}")));
                }
                // SAFETY: the whole record lies below the published end.
                let bytes = unsafe { seg.bytes(pos as usize, len as usize) };
                let parts = self.validate(bytes, offset, checksums).map_err(|k| self.corrupt(&seg, pos, k))?;
                Ok(Slot::Record(Record::from_segment(seg, pos as usize, len as usize, parts)))
            }
            Err(kind) => Err(self.corrupt(&seg, pos, kind)),
        }
    }

    /// Calls `f` with the record at `offset` borrowed from `cache`: a batch
    /// of reads from one segment shares one `Bytes` over the segment's
    /// published prefix instead of allocating an owner per record, and looks
    /// the segment up once.
    #[inline]
    pub(crate) fn visit_cached<R>(
        &self,
        cache: &mut ReadCache,
        offset: u64,
        checksums: Checksums,
        f: impl FnOnce(&bytes::Bytes, usize, RecordView<'_>, &Parts) -> R,
    ) -> Result<R> {
        match self.locate_cached(cache, offset, checksums)? {
            Some((pos, len, parts)) => {
                let bytes = cache.prefix.get(pos..pos + len).unwrap_or_default();
                Ok(f(&cache.prefix, pos, RecordView { bytes }, &parts))
            }
            None => Ok(self.read_checked(offset, checksums)?.with_view(f)),
        }
    }

    /// Calls `f` with each record from `from` on (clamped to the first
    /// record), in log order, up to the published end, borrowed from
    /// `cache` as [`Core::visit_cached`] does (no owner or segment lookup
    /// per record; blank segment ends and segment changes go through the
    /// uncached read). `f` gets the record's offset; it stops the walk by
    /// returning `Break`, after which the record counts as visited.
    /// Returns the offset after the last record visited (`from` if none).
    pub(crate) fn visit_from(
        &self,
        cache: &mut ReadCache,
        from: u64,
        checksums: Checksums,
        mut f: impl FnMut(u64, RecordView<'_>, &Parts) -> Result<ControlFlow<()>>,
    ) -> Result<u64> {
        let mut offset = from.max(self.min_offset());
        loop {
            let (end, flow) = match self.locate_cached(cache, offset, checksums)? {
                Some((pos, len, parts)) => {
                    let bytes = cache.prefix.get(pos..pos + len).unwrap_or_default();
                    (offset + len as u64, f(offset, RecordView { bytes }, &parts)?)
                }
                None => match self.read_next(offset, checksums)? {
                    Some(rec) => {
                        let at = rec.offset().get();
                        (rec.end().get(), rec.with_view(|_, _, view, parts| f(at, view, parts))?)
                    }
                    None => return Ok(offset),
                },
            };
            offset = end;
            if flow.is_break() {
                return Ok(offset);
            }
        }
    }

    /// Finds and validates the record at `offset` inside the cached segment
    /// prefix (refreshing the cache if needed): its position, length and
    /// parts; `None` when the uncached path must decide (blank, damage,
    /// past the prefix).
    #[inline]
    fn locate_cached(
        &self,
        cache: &mut ReadCache,
        offset: u64,
        checksums: Checksums,
    ) -> Result<Option<(usize, usize, Parts)>> {
        self.ensure_not_closed()?;
        let hit = cache.seg.as_ref().is_some_and(|s| s.base <= offset && offset < s.base + cache.prefix.len() as u64);
        if !hit {
            let end = self.written.load(Ordering::Acquire);
            let Some(seg) = self.segment_for(offset) else {
                return Ok(None);
            };
            // Everything below the published end is immutable; a sealed
            // segment is published to its end (marker included).
            let len = end.min(seg.end()).saturating_sub(seg.base);
            cache.prefix = Record::prefix_of(seg.clone(), len as usize);
            cache.seg = Some(seg);
        }
        let (Some(seg), prefix) = (cache.seg.as_ref(), &cache.prefix) else {
            return Ok(None);
        };
        let pos = (offset - seg.base) as usize;
        if pos < SEGMENT_HEADER_LEN || pos + BLANK_LEN as usize > prefix.len() {
            return Ok(None);
        }
        let room = seg.size - pos as u64;
        match parse_prefix(&prefix[pos..pos + BLANK_LEN as usize], room, super::record::MAX_RECORD_LEN_LIMIT) {
            Ok(Prefix::Record { len }) if pos + len as usize <= prefix.len() => {
                let bytes = &prefix[pos..pos + len as usize];
                let parts = self.validate(bytes, offset, checksums).map_err(|k| self.corrupt(seg, pos as u64, k))?;
                Ok(Some((pos, len as usize, parts)))
            }
            _ => Ok(None),
        }
    }

    /// Validates the record `bytes` at `offset` as `checksums` asks: its
    /// CRC is skipped for records appended since the open (see
    /// [`super::CommitLog::visit_appended`]) or, for pulls, when the store
    /// was opened with `ReadChecksums::Skip`; its framing never is.
    #[inline]
    fn validate(&self, bytes: &[u8], offset: u64, checksums: Checksums) -> Result<Parts, CorruptionKind> {
        let checked = match checksums {
            Checksums::Skip => RecordView::validate_framing(bytes, offset),
            Checksums::SkipAppended if offset >= self.opened_at => RecordView::validate_framing(bytes, offset),
            Checksums::Verify | Checksums::SkipAppended => RecordView::validate(bytes, offset),
        };
        checked.map(|(_, parts)| parts)
    }

    fn corrupt(&self, seg: &Arc<Segment>, pos: u64, kind: crate::error::CorruptionKind) -> Error {
        Error::corruption(&seg.path, pos, kind)
    }

    #[inline]
    fn ensure_not_closed(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

/// File position in a segment of `size` bytes past which the next segment
/// is prepared: half way, but at most 64 MiB before the end. Preparing
/// earlier would allocate (and journal) a whole new segment for a log that
/// may never need it, right while the first appends are being synced;
/// 64 MiB still leaves tens of milliseconds at full write speed for a
/// creation that takes a few.
pub(crate) fn prepare_point(size: u64) -> u64 {
    size - (size / 2).min(64 << 20)
}

/// Reused by [`Core::visit_cached`] across the reads of one batch.
#[derive(Debug, Default)]
pub(crate) struct ReadCache {
    seg: Option<Arc<Segment>>,
    /// File positions `[0, len)` of `seg`, all published.
    prefix: bytes::Bytes,
}

enum Slot {
    Record(Record),
    Blank,
    End,
}

#[cfg(test)]
mod tests {
    use super::super::{CommitLog, CommitLogOptions, COMMITLOG_DIR};
    use crate::commitlog::RecordDraft;
    use crate::offset::PhysicalOffset;
    use std::os::unix::fs::FileExt;

    /// Flips a byte of the record at `offset` in the only segment file (the
    /// mapping shares the page cache, so an open log sees it).
    fn flip(dir: &std::path::Path, offset: u64, at_in_record: u64) {
        let seg = std::fs::read_dir(dir.join(COMMITLOG_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())));
        let f = std::fs::OpenOptions::new().read(true).write(true).open(seg.unwrap()).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, offset + at_in_record).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], offset + at_in_record).unwrap();
    }

    fn bodies(it: crate::commitlog::Iter) -> Result<Vec<Vec<u8>>, crate::Error> {
        it.map(|r| r.map(|r| r.body().to_vec())).collect()
    }

    /// The bodies `visit_appended` walks over from `from`.
    fn appended(log: &CommitLog, from: PhysicalOffset) -> Result<Vec<Vec<u8>>, crate::Error> {
        let mut out = Vec::new();
        let mut cache = super::ReadCache::default();
        log.visit_appended(&mut cache, from, |_, view, parts| {
            out.push(view.bytes[parts.body.0..parts.body.1].to_vec());
            Ok(std::ops::ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Dispatch's reader skips the CRC only for records appended since the
    /// log was opened; framing is checked for every record, and every
    /// other reader checks the CRC.
    #[test]
    fn visit_appended_skips_the_crc_of_records_appended_since_open_only() {
        let dir = tempfile::tempdir().unwrap();
        let opts = || CommitLogOptions::default().segment_size(1 << 20).max_record_size(4 << 10);
        let draft = |body: &'static [u8]| RecordDraft { topic: "t", body, ..Default::default() };
        let log = CommitLog::open(dir.path(), opts()).unwrap();
        let old = log.append(&draft(b"from before the open")).unwrap();
        log.close().unwrap();
        let log = CommitLog::open(dir.path(), opts()).unwrap();
        let new = log.append(&draft(b"appended since the open")).unwrap();
        let from = PhysicalOffset(0);
        // A body byte of the new record: only the CRC can tell.
        let body_at = u64::from(new.size) - 1;
        flip(dir.path(), new.offset.get(), body_at);
        assert!(matches!(bodies(log.iter(from)), Err(crate::Error::Corruption { .. })));
        let got = appended(&log, from).unwrap();
        assert_eq!(got.len(), 2);
        assert_ne!(got[1], b"appended since the open".to_vec());
        assert!(matches!(log.read(new.offset), Err(crate::Error::Corruption { .. })));
        // Its framing (the body length) is still checked.
        flip(dir.path(), new.offset.get(), 64);
        assert!(matches!(appended(&log, new.offset), Err(crate::Error::Corruption { .. })));
        flip(dir.path(), new.offset.get(), 64);
        // A record from before the open is CRC-checked by both.
        flip(dir.path(), old.offset.get(), u64::from(old.size) - 1);
        assert!(matches!(appended(&log, from), Err(crate::Error::Corruption { .. })));
        log.close().unwrap();
    }
}
