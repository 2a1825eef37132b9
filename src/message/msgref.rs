//! [`MessageRef`]: a stored message borrowed straight from the mapped
//! commit log, for consumers that want throughput (no allocation, no
//! reference counting per message).

use super::ext::MessageExt;
use super::properties::{lookup, SplitKeys, KEYS, TAGS, UNIQ_KEY};
use crate::commitlog::{Parts, RecordView};
use crate::error::Result;
use crate::offset::{PhysicalOffset, QueueOffset};
use bytes::Bytes;

/// A message borrowed from the commit log for the duration of a
/// [`Store::pull_with`](crate::store::Store::pull_with) callback. Its record
/// passed the same checks as a [`MessageExt`]'s (CRC unless the store was
/// opened with [`ReadChecksums::Skip`](crate::store::ReadChecksums::Skip),
/// framing, position, UTF-8 topic); properties are read in place, and a
/// malformed one reads as absent (use [`MessageRef::to_owned_message`] for a
/// checked, owned copy).
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    /// The buffer holding the record (a segment prefix or one record).
    src: &'a Bytes,
    /// The record's bytes within `src`.
    at: usize,
    view: RecordView<'a>,
    parts: &'a Parts,
    offset: PhysicalOffset,
}

impl<'a> MessageRef<'a> {
    /// `src[at..at + view.len()]` is the record `view` describes, validated
    /// at `offset`.
    #[inline]
    pub(crate) fn new(
        src: &'a Bytes,
        at: usize,
        view: RecordView<'a>,
        parts: &'a Parts,
        offset: PhysicalOffset,
    ) -> Self {
        Self { src, at, view, parts, offset }
    }

    #[inline]
    fn part(&self, r: (usize, usize)) -> &'a [u8] {
        self.view.bytes.get(r.0..r.1).unwrap_or_default()
    }

    /// Topic the message is stored under.
    #[must_use]
    #[inline]
    pub fn topic(&self) -> &'a str {
        // Validated as UTF-8 with the record.
        std::str::from_utf8(self.part(self.parts.topic)).unwrap_or_default()
    }

    /// The topic's bytes: for comparisons on the read path, which need no
    /// second UTF-8 check.
    #[inline]
    pub(crate) fn topic_bytes(&self) -> &'a [u8] {
        self.part(self.parts.topic)
    }
    /// Message body, borrowed from the mapping.
    #[must_use]
    #[inline]
    pub fn body(&self) -> &'a [u8] {
        self.part(self.parts.body)
    }
    /// The body as `Bytes` sharing the mapping (a reference count, no copy).
    #[must_use]
    #[inline]
    pub fn body_bytes(&self) -> Bytes {
        self.src.slice(self.at + self.parts.body.0..self.at + self.parts.body.1)
    }
    /// The encoded properties.
    #[must_use]
    #[inline]
    pub fn raw_properties(&self) -> &'a [u8] {
        self.part(self.parts.properties)
    }
    /// One property by name (`None` if absent or malformed).
    #[must_use]
    pub fn property(&self, name: &str) -> Option<&'a str> {
        lookup(self.raw_properties(), name)
    }
    /// Tag, if the message has one.
    #[must_use]
    pub fn tags(&self) -> Option<&'a str> {
        self.property(TAGS)
    }
    /// Keys (the `KEYS` property split on spaces).
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + 'a {
        SplitKeys::new(self.property(KEYS).unwrap_or(""))
    }
    /// The unique message id (`UNIQ_KEY`).
    #[must_use]
    pub fn msg_id(&self) -> Option<&'a str> {
        self.property(UNIQ_KEY)
    }
    /// Queue id within the topic.
    #[must_use]
    #[inline]
    pub fn queue_id(&self) -> u32 {
        self.view.queue_id()
    }
    /// Position in its consume queue.
    #[must_use]
    #[inline]
    pub fn queue_offset(&self) -> QueueOffset {
        QueueOffset(self.view.queue_offset())
    }
    /// Physical offset of the record in the commit log.
    #[must_use]
    #[inline]
    pub fn physical_offset(&self) -> PhysicalOffset {
        self.offset
    }
    /// Encoded record size in bytes.
    #[must_use]
    #[inline]
    pub fn store_size(&self) -> u32 {
        u32::try_from(self.view.bytes.len()).unwrap_or(u32::MAX)
    }
    /// When the producer created the message (ms since the epoch).
    #[must_use]
    #[inline]
    pub fn born_timestamp(&self) -> u64 {
        self.view.born_timestamp()
    }
    /// When the store wrote the message (ms since the epoch).
    #[must_use]
    #[inline]
    pub fn store_timestamp(&self) -> u64 {
        self.view.store_timestamp()
    }
    /// How many times the message was consumed and sent back.
    #[must_use]
    #[inline]
    pub fn reconsume_times(&self) -> u32 {
        self.view.reconsume_times()
    }
    /// Opaque user flag.
    #[must_use]
    #[inline]
    pub fn flag(&self) -> u32 {
        self.view.flag()
    }
    /// System flags.
    #[must_use]
    #[inline]
    pub fn sysflag(&self) -> u32 {
        self.view.sysflag()
    }
    /// The record's stored (and verified) CRC.
    #[must_use]
    #[inline]
    pub fn crc(&self) -> u32 {
        self.view.crc()
    }
    /// An owned [`MessageExt`] sharing the mapping (no copy of the body);
    /// fails with [`Error::Corruption`](crate::Error::Corruption) if the
    /// properties are malformed.
    pub fn to_owned_message(&self) -> Result<MessageExt> {
        MessageExt::from_validated(
            self.offset,
            self.src.slice(self.at..self.at + self.view.bytes.len()),
            self.parts,
            &self.view,
        )
    }
}
