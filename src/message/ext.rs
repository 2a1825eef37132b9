//! [`MessageExt`]: a stored message decoded from its commit-log record.

use super::id::encode_offset_msg_id;
use super::properties::{decode_properties, is_reserved, lookup, SplitKeys, DELAY, KEYS, TAGS, UNIQ_KEY};
use super::MessageId;
use crate::commitlog::{Record, COMMITLOG_DIR};
use crate::error::{CorruptionKind, Error, Result};
use crate::offset::{PhysicalOffset, QueueOffset};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

/// Store host used in offset ids until [`MessageExt::with_store_host`] sets
/// another: an embedded store has no network address of its own.
pub const DEFAULT_STORE_HOST: [u8; 4] = [127, 0, 0, 1];
/// Store port used in offset ids by default (no listener, so 0).
pub const DEFAULT_STORE_PORT: u32 = 0;

/// A stored message: the record's header fields, its body (sharing the
/// log's mapping, no copy) and its properties (RocketMQ `MessageExt`).
///
/// Building one allocates nothing: topic and properties stay slices of the
/// record and are read in place (`tags`, `keys`, `msg_id` scan the
/// properties without decoding them); the map behind
/// [`MessageExt::properties`] is built on first use. The properties were
/// checked when the message was built, so that never fails.
#[derive(Debug, Clone)]
pub struct MessageExt {
    /// The whole encoded record.
    record: Bytes,
    /// UTF-8 (validated by the record codec).
    topic: Range<usize>,
    /// Checked by [`pairs`] at construction.
    props: Range<usize>,
    body: Bytes,
    decoded: OnceLock<BTreeMap<String, String>>,
    queue_id: u32,
    queue_offset: QueueOffset,
    physical_offset: PhysicalOffset,
    born_timestamp: u64,
    store_timestamp: u64,
    reconsume_times: u32,
    flag: u32,
    sysflag: u32,
    crc: u32,
    store_host: [u8; 4],
    store_port: u32,
    /// The topic a consumer is shown instead of the stored one: a retry
    /// message is delivered under its original topic (RocketMQ's
    /// `resetRetryAndNamespace`).
    shown_topic: Option<std::sync::Arc<str>>,
}

/// Equal when the stored bytes and the store host are (whether the
/// properties map was built yet does not matter).
impl PartialEq for MessageExt {
    fn eq(&self, other: &Self) -> bool {
        self.physical_offset == other.physical_offset
            && self.record == other.record
            && self.store_host == other.store_host
            && self.store_port == other.store_port
    }
}

impl Eq for MessageExt {}

/// Header fields shared by both constructors.
struct Header {
    queue_id: u32,
    queue_offset: u64,
    born_timestamp: u64,
    store_timestamp: u64,
    reconsume_times: u32,
    flag: u32,
    sysflag: u32,
    crc: u32,
}

impl MessageExt {
    /// Decodes a record read from the commit log.
    ///
    /// Properties that do not decode give [`Error::Corruption`] whose path is
    /// the commit-log directory name ([`COMMITLOG_DIR`]) and whose offset is
    /// the record's physical offset: a `Record` does not know its segment
    /// file, and the physical offset locates it uniquely.
    pub fn from_record(record: &Record) -> Result<Self> {
        let (topic, props, body) = record.part_ranges();
        let h = Header {
            queue_id: record.queue_id(),
            queue_offset: record.queue_offset(),
            born_timestamp: record.born_timestamp(),
            store_timestamp: record.store_timestamp(),
            reconsume_times: record.reconsume_times(),
            flag: record.flag(),
            sysflag: record.sysflag(),
            crc: record.crc(),
        };
        Self::build(record.offset(), record.encoded().clone(), topic, props, body, &h)
    }

    /// Builds from a record already validated as `view`/`parts` (whose bytes
    /// are exactly `record`).
    pub(crate) fn from_validated(
        offset: PhysicalOffset,
        record: Bytes,
        parts: &crate::commitlog::Parts,
        view: &crate::commitlog::RecordView<'_>,
    ) -> Result<Self> {
        let h = Header {
            queue_id: view.queue_id(),
            queue_offset: view.queue_offset(),
            born_timestamp: view.born_timestamp(),
            store_timestamp: view.store_timestamp(),
            reconsume_times: view.reconsume_times(),
            flag: view.flag(),
            sysflag: view.sysflag(),
            crc: view.crc(),
        };
        let r = |p: (usize, usize)| p.0..p.1;
        Self::build(offset, record, r(parts.topic), r(parts.properties), r(parts.body), &h)
    }

    /// Decodes a whole encoded record at physical offset `offset`, read
    /// without the live log (by the offline scanner): validates it (CRC,
    /// framing, position) and keeps slices of `bytes`. Damage is
    /// [`Error::Corruption`] located as in [`MessageExt::from_record`].
    pub(crate) fn from_encoded(offset: PhysicalOffset, bytes: Bytes) -> Result<Self> {
        let d = crate::commitlog::CommitLog::decode_encoded(&bytes, offset.0)?;
        let h = Header {
            queue_id: d.queue_id,
            queue_offset: d.queue_offset,
            born_timestamp: d.born_timestamp,
            store_timestamp: d.store_timestamp,
            reconsume_times: d.reconsume_times,
            flag: d.flag,
            sysflag: d.sysflag,
            crc: d.crc,
        };
        Self::build(offset, bytes, d.topic, d.properties, d.body, &h)
    }

    fn build(
        offset: PhysicalOffset,
        record: Bytes,
        topic: Range<usize>,
        props: Range<usize>,
        body: Range<usize>,
        h: &Header,
    ) -> Result<Self> {
        let corrupt = |kind| Error::corruption(COMMITLOG_DIR, offset.0, kind);
        let raw = record.get(props.clone()).ok_or_else(|| corrupt(CorruptionKind::Truncated))?;
        super::properties::check(raw).map_err(corrupt)?;
        // Every caller passes a record the record codec validated (UTF-8
        // topic included); only the bounds are re-checked here.
        if record.get(topic.clone()).is_none() {
            return Err(corrupt(CorruptionKind::InvalidField { field: "topic" }));
        }
        if body.end > record.len() || body.start > body.end {
            return Err(corrupt(CorruptionKind::Truncated));
        }
        Ok(Self {
            body: record.slice(body),
            record,
            topic,
            props,
            decoded: OnceLock::new(),
            queue_id: h.queue_id,
            queue_offset: QueueOffset(h.queue_offset),
            physical_offset: offset,
            born_timestamp: h.born_timestamp,
            store_timestamp: h.store_timestamp,
            reconsume_times: h.reconsume_times,
            flag: h.flag,
            sysflag: h.sysflag,
            crc: h.crc,
            store_host: DEFAULT_STORE_HOST,
            store_port: DEFAULT_STORE_PORT,
            shown_topic: None,
        })
    }

    /// The stored properties blob (checked at construction).
    pub(crate) fn raw_properties(&self) -> &[u8] {
        self.record.get(self.props.clone()).unwrap_or_default()
    }

    /// Sets the host and port [`MessageExt::offset_msg_id`] encodes.
    #[must_use]
    pub fn with_store_host(mut self, host: [u8; 4], port: u32) -> Self {
        self.store_host = host;
        self.store_port = port;
        self
    }

    /// Topic of the message: the one it is stored under, except for a
    /// retry delivered by a push consumer, which shows its original topic
    /// (as RocketMQ does; [`MessageExt::stored_topic`] has the retry
    /// topic).
    #[must_use]
    pub fn topic(&self) -> &str {
        match &self.shown_topic {
            Some(t) => t,
            None => self.stored_topic(),
        }
    }

    /// Topic the message is stored under.
    #[must_use]
    pub fn stored_topic(&self) -> &str {
        // Checked at construction.
        self.record.get(self.topic.clone()).and_then(|t| std::str::from_utf8(t).ok()).unwrap_or_default()
    }

    /// Shows `topic` as the message's topic (a retry's original topic).
    pub(crate) fn show_topic(&mut self, topic: &str) {
        self.shown_topic = Some(topic.into());
    }
    /// Queue id within the topic.
    #[must_use]
    #[inline]
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }
    /// Position in its consume queue.
    #[must_use]
    #[inline]
    pub fn queue_offset(&self) -> QueueOffset {
        self.queue_offset
    }
    /// Physical offset of the record in the commit log.
    #[must_use]
    #[inline]
    pub fn physical_offset(&self) -> PhysicalOffset {
        self.physical_offset
    }
    /// Encoded record size in bytes.
    #[must_use]
    #[inline]
    pub fn store_size(&self) -> u32 {
        u32::try_from(self.record.len()).unwrap_or(u32::MAX)
    }
    /// Message body (a slice of the log's mapping).
    #[must_use]
    #[inline]
    pub fn body(&self) -> &Bytes {
        &self.body
    }
    /// All properties, the store's included.
    #[must_use]
    pub fn properties(&self) -> &BTreeMap<String, String> {
        // Checked at construction, so decoding cannot fail here.
        self.decoded.get_or_init(|| decode_properties(self.raw_properties()).unwrap_or_default())
    }
    /// One property by name.
    #[must_use]
    pub fn property(&self, name: &str) -> Option<&str> {
        lookup(self.raw_properties(), name)
    }
    /// Properties whose names are not reserved for the store.
    pub fn user_properties(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.properties().iter().filter(|(k, _)| !is_reserved(k)).map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// Tag, if the message has one.
    #[must_use]
    pub fn tags(&self) -> Option<&str> {
        self.property(TAGS)
    }
    /// Keys (the `KEYS` property split on spaces).
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        SplitKeys::new(self.property(KEYS).unwrap_or(""))
    }
    /// Delay level requested by the producer; `None` when absent or not a number.
    #[must_use]
    pub fn delay_level(&self) -> Option<u8> {
        self.property(DELAY).and_then(|d| d.parse().ok())
    }
    /// The unique message id (`UNIQ_KEY`); `None` for a record appended
    /// without one.
    #[must_use]
    pub fn msg_id(&self) -> Option<&str> {
        self.property(UNIQ_KEY)
    }
    /// The offset id: store host, port and physical offset, in hex.
    #[must_use]
    pub fn offset_msg_id(&self) -> MessageId {
        encode_offset_msg_id(self.store_host, self.store_port, self.physical_offset)
    }
    /// When the producer created the message (ms since the epoch).
    #[must_use]
    #[inline]
    pub fn born_timestamp(&self) -> u64 {
        self.born_timestamp
    }
    /// When the store wrote the message (ms since the epoch).
    #[must_use]
    #[inline]
    pub fn store_timestamp(&self) -> u64 {
        self.store_timestamp
    }
    /// How many times the message was consumed and sent back.
    #[must_use]
    #[inline]
    pub fn reconsume_times(&self) -> u32 {
        self.reconsume_times
    }
    /// Opaque user flag.
    #[must_use]
    #[inline]
    pub fn flag(&self) -> u32 {
        self.flag
    }
    /// System flags.
    #[must_use]
    #[inline]
    pub fn sysflag(&self) -> u32 {
        self.sysflag
    }
    /// The record's stored (and verified) CRC.
    #[must_use]
    #[inline]
    pub fn crc(&self) -> u32 {
        self.crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commitlog::{CommitLog, CommitLogOptions, RecordDraft};
    use crate::error::CorruptionKind;
    use crate::message::id::decode_offset_msg_id;
    use crate::message::{Message, MessageIdGenerator};

    fn open() -> (tempfile::TempDir, CommitLog) {
        let dir = tempfile::tempdir().unwrap();
        let log =
            CommitLog::open(dir.path(), CommitLogOptions::default().segment_size(1 << 20).max_record_size(64 << 10))
                .unwrap();
        (dir, log)
    }

    #[test]
    fn decodes_every_field_of_a_stored_message() {
        let (_dir, log) = open();
        let msg = Message::new("TopicTest", "hello").with_tags("TagA").with_keys(["k1", "k2"]).with_property("p", "v");
        let id = MessageIdGenerator::new().next(1_700_000_000_000);
        let props = msg.encode_properties_for_store(Some(&id)).unwrap();
        // A first record so the message under test is not at offset 0.
        log.append(&RecordDraft { topic: "Other", body: b"x", ..Default::default() }).unwrap();
        let draft = RecordDraft {
            topic: msg.topic(),
            queue_id: 3,
            queue_offset: 41,
            flag: 9,
            sysflag: 2,
            born_timestamp: 1_700_000_000_000,
            reconsume_times: 1,
            properties: &props,
            body: msg.body(),
        };
        let at = log.append(&draft).unwrap();
        let ext = MessageExt::from_record(&log.read(at.offset).unwrap()).unwrap();
        assert_eq!((ext.topic(), ext.queue_id(), ext.queue_offset()), ("TopicTest", 3, QueueOffset(41)));
        assert_eq!((ext.physical_offset(), ext.store_size(), ext.crc()), (at.offset, at.size, at.crc));
        assert_eq!(&ext.body()[..], b"hello");
        assert_eq!((ext.born_timestamp(), ext.store_timestamp()), (1_700_000_000_000, at.store_timestamp));
        assert_eq!((ext.reconsume_times(), ext.flag(), ext.sysflag()), (1, 9, 2));
        assert_eq!(ext.tags(), Some("TagA"));
        assert_eq!(ext.keys().collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(ext.msg_id(), Some(id.as_str()));
        assert_eq!(ext.delay_level(), None);
        assert_eq!(ext.user_properties().collect::<Vec<_>>(), [("p", "v")]);
        assert_eq!(ext.properties().len(), 4);
        let (host, port, off) = decode_offset_msg_id(&ext.offset_msg_id()).unwrap();
        assert_eq!((host, port, off), (DEFAULT_STORE_HOST, DEFAULT_STORE_PORT, at.offset));
        let moved = ext.with_store_host([10, 0, 0, 1], 10_911);
        assert_eq!(decode_offset_msg_id(&moved.offset_msg_id()).unwrap(), ([10, 0, 0, 1], 10_911, at.offset));
        log.close().unwrap();
    }

    #[test]
    fn bare_record_has_no_tags_keys_or_id() {
        let (_dir, log) = open();
        let at = log.append(&RecordDraft { topic: "T", body: b"b", ..Default::default() }).unwrap();
        let ext = MessageExt::from_record(&log.read(at.offset).unwrap()).unwrap();
        assert_eq!((ext.tags(), ext.msg_id(), ext.keys().count()), (None, None, 0));
        assert!(ext.properties().is_empty());
        log.close().unwrap();
    }

    #[test]
    fn damaged_properties_are_a_typed_corruption() {
        let (_dir, log) = open();
        let at = log
            .append(&RecordDraft { topic: "T", properties: b"no separator here", body: b"b", ..Default::default() })
            .unwrap();
        let err = MessageExt::from_record(&log.read(at.offset).unwrap()).unwrap_err();
        match err {
            Error::Corruption { path, offset, kind } => {
                assert_eq!(path, std::path::PathBuf::from(COMMITLOG_DIR));
                assert_eq!(offset, at.offset.0);
                assert_eq!(kind, CorruptionKind::InvalidField { field: "properties" });
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        log.close().unwrap();
    }
}
