//! The commit log's side of replication: reading runs of whole records to
//! ship (master), and writing received records at the offsets the master
//! gave them (slave).
//!
//! A shipped run is the exact bytes of consecutive records of one segment.
//! Each record carries its own physical offset, so the slave places every
//! record where the master had it, and the two logs stay byte-identical
//! below the slave's end: a run that starts in the next segment makes the
//! slave roll (writing its end-of-segment marker at the same position as
//! the master's), one that starts past the slave's end is a gap, and one
//! that starts before it is a duplicate whose records must match the
//! slave's own.

use super::checkpoint::RecordMark;
use super::record::{peek_len_and_offset, peek_topic_and_queue, RecordView, BLANK_LEN, RECORD_HEADER_LEN};
use super::segment::{Segment, SEGMENT_HEADER_LEN};
use super::{CommitLog, Core, FlushMode, Writer};
use crate::error::{Error, Result};

/// The (topic, queue id) of each record of a run, in order, up to the
/// first record that does not parse (the write validates them all again).
pub(crate) fn run_topics(bytes: &[u8]) -> Vec<(&str, u32)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some((len, _)) = bytes.get(at..).and_then(peek_len_and_offset) {
        let Some(image) = at.checked_add(len as usize).and_then(|end| bytes.get(at..end)) else {
            break;
        };
        if (len as usize) < RECORD_HEADER_LEN {
            break;
        }
        match peek_topic_and_queue(image) {
            Some(tq) => out.push(tq),
            None => break,
        }
        at += len as usize;
    }
    out
}

/// One validated record of a received run.
struct Item {
    offset: u64,
    len: u32,
    crc: u32,
    store_ts: u64,
}

impl CommitLog {
    /// Consecutive whole records from `from` (a record start, an end-of-
    /// segment marker, or the end of the readable log), at most
    /// `max_bytes` of them unless the first alone is larger, all in one
    /// segment, copied out: `(offset of the first, bytes)`; the first is
    /// past `from` only when `from` is a marker (the next segment's first
    /// record). `None` when nothing readable lies at or after `from`.
    pub(crate) fn replication_run(&self, from: u64, max_bytes: usize) -> Result<Option<(u64, Vec<u8>)>> {
        let mut out: Vec<u8> = Vec::new();
        let mut start = None;
        let mut next = from;
        for rec in self.iter(crate::offset::PhysicalOffset(from)) {
            let rec = rec?;
            let at = rec.offset().get();
            match start {
                None => start = Some(at),
                // A jump (the next segment) or a full run ends it.
                Some(_) if at != next || out.len() + rec.encoded().len() > max_bytes => break,
                Some(_) => {}
            }
            out.extend_from_slice(rec.encoded());
            next = rec.end().get();
        }
        Ok(start.map(|s| (s, out)))
    }

    /// Slave: writes a received run (see [`CommitLog::replication_run`])
    /// at the offsets its records carry and publishes it; returns the new
    /// end. `prev_end` is where the master's log ended before the run
    /// (see [`crate::replication::ReplicationBatch::prev_end`]). Records
    /// below the current end must be the ones already there (a duplicate
    /// delivery) and are skipped. Waits for durability as the flush mode
    /// says, like an append.
    pub(crate) fn append_replicated(&self, prev_end: u64, offset: u64, bytes: &[u8]) -> Result<u64> {
        let core = &self.handle.core;
        let _in_flight = core.enter_append();
        let end = core.append_replicated(prev_end, offset, bytes)?;
        core.after_append(end)?;
        Ok(end)
    }
}

impl Core {
    fn append_replicated(&self, prev_end: u64, offset: u64, bytes: &[u8]) -> Result<u64> {
        let items = self.split_run(offset, bytes)?;
        let mut w = self.writer.lock();
        self.ensure_open()?;
        let mut end = w.active.base + w.pos;
        if prev_end > end {
            // Records between our end and the run's start never arrived.
            return Err(Error::ReplicationGap { expected: end, got: prev_end });
        }
        // Records the slave has already: they must be the same records.
        let mut skip = 0;
        let mut skipped_bytes = 0usize;
        for it in &items {
            if it.offset >= end {
                break;
            }
            if it.offset + u64::from(it.len) > end {
                return Err(Error::ReplicaDiverged { offset: it.offset });
            }
            match self.read(it.offset) {
                Ok(mine) if mine.crc() == it.crc && mine.size() == it.len => {}
                _ => return Err(Error::ReplicaDiverged { offset: it.offset }),
            }
            skip += 1;
            skipped_bytes += it.len as usize;
        }
        let items = &items[skip..];
        let Some(first) = items.first() else {
            return Ok(end);
        };
        if first.offset != end {
            // The master rolled to the next segment right where our log
            // ends: so does the slave, writing its marker at the same place.
            if prev_end == end && first.offset == w.active.end() + SEGMENT_HEADER_LEN as u64 {
                self.roll(&mut w)?;
                end = w.active.base + w.pos;
            }
            if first.offset != end {
                return Err(Error::ReplicationGap { expected: end, got: first.offset });
            }
        }
        let rest = &bytes[skipped_bytes..];
        let total = rest.len() as u64;
        if total + u64::from(BLANK_LEN) > w.active.size - w.pos {
            // The master fitted these records (and its end marker) in this
            // segment; a slave that cannot has a different segment size.
            return Err(Error::ReplicaDiverged { offset: first.offset });
        }
        let staging = self.opts.flush_mode == FlushMode::Sync;
        let Writer { active, pos, last, staged, last_store_ts, .. } = &mut *w;
        let seg: &Segment = active;
        if staging {
            staged.at(seg.base + *pos).extend_from_slice(rest);
        } else {
            // SAFETY: [pos, pos + total) is past the published end (we hold
            // the append lock and publish only below) and inside the segment
            // (checked against the room above).
            let dst = unsafe { seg.bytes_mut(*pos as usize, rest.len()) };
            dst.copy_from_slice(rest);
        }
        *pos += total;
        if let Some(l) = items.last() {
            *last = Some(RecordMark { offset: l.offset, crc: l.crc });
        }
        *last_store_ts = items.iter().map(|i| i.store_ts).fold(*last_store_ts, u64::max);
        let end = seg.base + *pos;
        self.publish_written(&mut w, end);
        Ok(end)
    }

    /// Validates a received run: whole records, each at the offset it
    /// claims, contiguous from `offset`. Nothing is written on failure.
    fn split_run(&self, offset: u64, bytes: &[u8]) -> Result<Vec<Item>> {
        let bad = |why: String| Err(Error::InvalidArgument(format!("replicated run at {offset}: {why}")));
        let mut items = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let physical = offset + at as u64;
            let Some((len, claimed)) = peek_len_and_offset(&bytes[at..]) else {
                return bad(format!("truncated record at {physical}"));
            };
            if (len as usize) < RECORD_HEADER_LEN || len > self.opts.max_record_size {
                return bad(format!("record at {physical} has length {len}"));
            }
            let Some(image) = bytes.get(at..at + len as usize) else {
                return bad(format!("truncated record at {physical}"));
            };
            if claimed != physical {
                return bad(format!("record at {physical} claims offset {claimed}"));
            }
            let (view, _) = RecordView::validate(image, physical)
                .map_err(|kind| Error::InvalidArgument(format!("replicated record at {physical}: {kind}")))?;
            items.push(Item { offset: physical, len, crc: view.crc(), store_ts: view.store_timestamp() });
            at += len as usize;
        }
        Ok(items)
    }
}
