//! Dispatching the records a sender just appended without reading them
//! back.
//!
//! Under Async flush a sender dispatches on its own thread right after its
//! append (`dispatch_inline`). Its records are published, contiguous, and
//! it already holds every field dispatch needs: the drafts as written
//! (topic, queue id, properties), the queue offsets numbered under the
//! append lock, and each record's offset, size and store time from the
//! append. Reading them back and checking their CRC again gives the same
//! values, at several hundred instructions per message.
//!
//! Nothing else about dispatch changes: records are applied in log order
//! from the dispatched offset, under the round lock, each through the same
//! `apply`, and the dispatched offset moves past a record only once its
//! unit and index entries are in. Records before the sender's (other
//! senders', a segment's blank end) and after them are read back as
//! always. Recovery, re-dispatch, the dispatch thread and Sync flush (where
//! records become readable only once committed) never take this path.

use super::{apply_next, Entry, Found, Inner, QueueMemo};
use crate::commitlog::{Appended, RecordDraft};
use crate::error::Result;
use crate::offset::PhysicalOffset;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

/// Records the calling thread just appended, in log order: `drafts[i]` was
/// written as `appended[i]` with queue offset `queue_offsets[i]`; `found[i]`,
/// when there, is what scanning its properties would find (see
/// [`Found::of_sent`]). `found` may be shorter than `drafts`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OwnRecords<'a> {
    pub(crate) drafts: &'a [RecordDraft<'a>],
    pub(crate) appended: &'a [Appended],
    pub(crate) queue_offsets: &'a [u64],
    pub(crate) found: &'a [Option<Found<'a>>],
}

impl<'a> OwnRecords<'a> {
    /// What dispatch needs of record `i`: the same values [`Entry::of`]
    /// reads back from the log, as `append_batch` wrote them.
    fn entry(&self, i: usize) -> Option<Entry<'a>> {
        let (d, a, &queue_offset) = (self.drafts.get(i)?, self.appended.get(i)?, self.queue_offsets.get(i)?);
        Some(Entry {
            offset: a.offset.get(),
            size: a.size,
            topic: d.topic,
            queue_id: d.queue_id,
            queue_offset,
            store_timestamp: a.store_timestamp,
            properties: d.properties,
            found: self.found.get(i).copied().flatten(),
        })
    }
}

/// Dispatches up to the end of `own`: what precedes it from the log, then
/// `own` from its drafts, each record only when the dispatched offset is at
/// its start. Returns how many records it applied. Stops early (leaving the
/// rest to the log-reading loop after it) when the log does not lead to
/// `own`'s records, e.g. when another round dispatched part of them.
pub(super) fn dispatch_own(inner: &Inner, memo: &mut QueueMemo, own: &OwnRecords<'_>) -> Result<u64> {
    let Some(first) = own.appended.first() else {
        return Ok(0);
    };
    let target = first.offset.get();
    let mut n = 0;
    let from = inner.dispatch.dispatched.load(Ordering::Acquire);
    if from < target {
        // Read back: other senders' records, and past a segment's blank end
        // (which can make the first of ours the one read here).
        let mut cache = crate::commitlog::ReadCache::default();
        inner.log.visit_appended(&mut cache, PhysicalOffset(from), |offset, view, parts| {
            let e = Entry::of_view(offset, view, parts);
            apply_next(inner, memo, &e)?;
            n += 1;
            Ok(if e.end() >= target { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        })?;
    }
    let at = inner.dispatch.dispatched.load(Ordering::Acquire);
    let Some(k) = own.appended.iter().position(|a| a.offset.get() == at) else {
        return Ok(n);
    };
    for i in k..own.appended.len() {
        let Some(e) = own.entry(i) else { break };
        apply_next(inner, memo, &e)?;
        n += 1;
    }
    Ok(n)
}
