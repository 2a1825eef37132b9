//! Reading records from the live, mapped log without copying.

use super::record::{Parts, RecordView};
use super::segment::Segment;
use crate::offset::PhysicalOffset;
use bytes::Bytes;
use std::sync::Arc;

/// A record read from the commit log. Topic, properties and body are
/// [`Bytes`] slices of the segment mapping: no copy is made, and the
/// mapping stays alive as long as any of them does.
#[derive(Clone)]
pub struct Record {
    offset: PhysicalOffset,
    bytes: Bytes,
    parts: Parts,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("offset", &self.offset)
            .field("size", &self.size())
            .field("topic", &self.topic())
            .field("queue_id", &self.queue_id())
            .field("queue_offset", &self.queue_offset())
            .finish_non_exhaustive()
    }
}

/// Owner handed to [`Bytes::from_owner`]: a range of a segment below the
/// published end, which is never written again while the segment lives.
struct MappedSlice {
    seg: Arc<Segment>,
    pos: usize,
    len: usize,
}

impl AsRef<[u8]> for MappedSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `Record::from_segment` only builds a MappedSlice for a
        // validated range below the published end, which writers never touch.
        unsafe { self.seg.bytes(self.pos, self.len) }
    }
}

impl Record {
    /// Wraps a record of `len` bytes at file position `pos` of `seg`, already
    /// validated by the caller.
    pub(crate) fn from_segment(seg: Arc<Segment>, pos: usize, len: usize, parts: Parts) -> Self {
        let offset = PhysicalOffset(seg.base + pos as u64);
        let bytes = Bytes::from_owner(MappedSlice { seg, pos, len });
        Self { offset, bytes, parts }
    }

    /// A `Bytes` over file positions `[0, len)` of `seg`, all below the
    /// published end (the caller guarantees it), so records inside it can
    /// be sliced out without an allocation each.
    pub(crate) fn prefix_of(seg: Arc<Segment>, len: usize) -> Bytes {
        Bytes::from_owner(MappedSlice { seg, pos: 0, len })
    }

    /// The validated record, borrowed.
    pub(crate) fn view(&self) -> RecordView<'_> {
        RecordView { bytes: &self.bytes }
    }

    /// Where its variable parts lie within [`Record::view`]'s bytes.
    pub(crate) fn parts(&self) -> &Parts {
        &self.parts
    }

    /// Physical offset of the record's first byte.
    #[must_use]
    pub fn offset(&self) -> PhysicalOffset {
        self.offset
    }
    /// Total encoded size in bytes.
    #[must_use]
    pub fn size(&self) -> u32 {
        self.bytes.len() as u32
    }
    /// Offset one past the record's last byte.
    #[must_use]
    pub fn end(&self) -> PhysicalOffset {
        PhysicalOffset(self.offset.0 + self.bytes.len() as u64)
    }
    /// The stored CRC (already verified).
    #[must_use]
    pub fn crc(&self) -> u32 {
        self.view().crc()
    }
    /// Queue id.
    #[must_use]
    pub fn queue_id(&self) -> u32 {
        self.view().queue_id()
    }
    /// Opaque user flag.
    #[must_use]
    pub fn flag(&self) -> u32 {
        self.view().flag()
    }
    /// Position in the consume queue.
    #[must_use]
    pub fn queue_offset(&self) -> u64 {
        self.view().queue_offset()
    }
    /// System flags.
    #[must_use]
    pub fn sysflag(&self) -> u32 {
        self.view().sysflag()
    }
    /// Producer timestamp (ms).
    #[must_use]
    pub fn born_timestamp(&self) -> u64 {
        self.view().born_timestamp()
    }
    /// Store timestamp (ms), non-decreasing in log order.
    #[must_use]
    pub fn store_timestamp(&self) -> u64 {
        self.view().store_timestamp()
    }
    /// Reconsume counter.
    #[must_use]
    pub fn reconsume_times(&self) -> u32 {
        self.view().reconsume_times()
    }
    /// Whether this is the record a consume-queue unit at `queue_offset`
    /// of `topic`/`queue_id` must lead to (units carry no checksum, so
    /// readers check every record against its unit).
    #[must_use]
    pub(crate) fn is_at(&self, topic: &str, queue_id: u32, queue_offset: u64) -> bool {
        self.queue_id() == queue_id && self.queue_offset() == queue_offset && self.topic() == topic
    }
    /// Topic name.
    #[must_use]
    pub fn topic(&self) -> &str {
        // Validated as UTF-8 when the record was read.
        std::str::from_utf8(&self.bytes[self.parts.topic.0..self.parts.topic.1]).unwrap_or_default()
    }
    /// Encoded properties.
    #[must_use]
    pub fn properties(&self) -> Bytes {
        self.bytes.slice(self.parts.properties.0..self.parts.properties.1)
    }
    /// Encoded properties, borrowed (no reference count taken).
    pub(crate) fn properties_slice(&self) -> &[u8] {
        &self.bytes[self.parts.properties.0..self.parts.properties.1]
    }
    /// Message body.
    #[must_use]
    pub fn body(&self) -> Bytes {
        self.bytes.slice(self.parts.body.0..self.parts.body.1)
    }
    /// Calls `f` with this record borrowed: its buffer, start 0, view and
    /// parts.
    pub(crate) fn with_view<R>(&self, f: impl FnOnce(&Bytes, usize, RecordView<'_>, &Parts) -> R) -> R {
        f(&self.bytes, 0, self.view(), &self.parts)
    }

    /// Byte ranges of topic, properties and body within [`Record::encoded`].
    pub(crate) fn part_ranges(&self) -> (std::ops::Range<usize>, std::ops::Range<usize>, std::ops::Range<usize>) {
        let p = &self.parts;
        (p.topic.0..p.topic.1, p.properties.0..p.properties.1, p.body.0..p.body.1)
    }

    /// The whole encoded record, as stored.
    #[must_use]
    pub fn encoded(&self) -> &Bytes {
        &self.bytes
    }
}
