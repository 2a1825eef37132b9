//! Commit-log record codec.
//!
//! Layout (all integers big-endian; FORMAT.md section 3.2 is the normative
//! table and the test `layout_constants_are_pinned` keeps the two in step):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | total size of the record, this field included |
//! | 4 | 4 | magic [`RECORD_MAGIC`] |
//! | 8 | 4 | CRC-32 (IEEE) of the whole record with this field read as zero |
//! | 12 | 4 | queue id |
//! | 16 | 4 | flag (opaque to the store) |
//! | 20 | 8 | queue offset |
//! | 28 | 8 | physical offset of this record |
//! | 36 | 4 | sysflag |
//! | 40 | 8 | born timestamp (ms) |
//! | 48 | 8 | store timestamp (ms) |
//! | 56 | 4 | reconsume times |
//! | 60 | 2 | topic length `t` |
//! | 62 | 2 | properties length `p` |
//! | 64 | 4 | body length `b` |
//! | 68 | t | topic (UTF-8) |
//! | 68+t | p | properties |
//! | 68+t+p | b | body |
//!
//! The end-of-segment marker ("blank") is 8 bytes: the number of bytes left in
//! the segment from its own start, then [`BLANK_MAGIC`].

use crate::codec::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};
use crate::error::CorruptionKind;

/// Magic of a message record: ASCII "MQR" then format version 1.
pub const RECORD_MAGIC: u32 = 0x4D51_5201;
/// Magic of the end-of-segment marker: ASCII "MQRB".
pub const BLANK_MAGIC: u32 = 0x4D51_5242;
/// Bytes of the end-of-segment marker. Every segment keeps room for one.
pub const BLANK_LEN: u32 = 8;

const TOTAL_SIZE_OFFSET: usize = 0;
const MAGIC_OFFSET: usize = TOTAL_SIZE_OFFSET + 4;
const CRC_OFFSET: usize = MAGIC_OFFSET + 4;
const QUEUE_ID_OFFSET: usize = CRC_OFFSET + 4;
const FLAG_OFFSET: usize = QUEUE_ID_OFFSET + 4;
const QUEUE_OFFSET_OFFSET: usize = FLAG_OFFSET + 4;
const PHYSICAL_OFFSET_OFFSET: usize = QUEUE_OFFSET_OFFSET + 8;
const SYSFLAG_OFFSET: usize = PHYSICAL_OFFSET_OFFSET + 8;
const BORN_TS_OFFSET: usize = SYSFLAG_OFFSET + 4;
const STORE_TS_OFFSET: usize = BORN_TS_OFFSET + 8;
const RECONSUME_OFFSET: usize = STORE_TS_OFFSET + 8;
const TOPIC_LEN_OFFSET: usize = RECONSUME_OFFSET + 4;
const PROPS_LEN_OFFSET: usize = TOPIC_LEN_OFFSET + 2;
const BODY_LEN_OFFSET: usize = PROPS_LEN_OFFSET + 2;
/// Bytes of the fixed part of a record, before topic, properties and body.
pub const RECORD_HEADER_LEN: usize = BODY_LEN_OFFSET + 4;

/// Longest topic the record format carries, in bytes.
pub const MAX_TOPIC_LEN: usize = u16::MAX as usize;
/// Longest properties blob the record format carries, in bytes.
pub const MAX_PROPERTIES_LEN: usize = u16::MAX as usize;
/// Hard upper bound on a record's total size, whatever the options say.
/// Bounds every allocation sized from a length read from disk.
pub const MAX_RECORD_LEN_LIMIT: u32 = 256 << 20;

/// Everything a caller supplies for one record; the log fills in the
/// physical offset, the store timestamp and the CRC.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordDraft<'a> {
    /// Topic name (UTF-8, 1 to 65,535 bytes).
    pub topic: &'a str,
    /// Queue id within the topic.
    pub queue_id: u32,
    /// Position of the message in its consume queue.
    pub queue_offset: u64,
    /// Opaque user flag (RocketMQ's `flag`).
    pub flag: u32,
    /// System flags (RocketMQ's `sysflag`).
    pub sysflag: u32,
    /// When the producer created the message (ms since the epoch).
    pub born_timestamp: u64,
    /// How many times the message has been consumed and sent back.
    pub reconsume_times: u32,
    /// Encoded properties (RocketMQ's `key 0x01 value 0x02` pairs).
    pub properties: &'a [u8],
    /// Message body.
    pub body: &'a [u8],
}

impl RecordDraft<'_> {
    /// Encoded size in bytes, or the reason the draft cannot be encoded.
    pub(crate) fn encoded_len(&self) -> Result<u32, DraftError> {
        if self.topic.is_empty() || self.topic.len() > MAX_TOPIC_LEN {
            return Err(DraftError::Topic(self.topic.len()));
        }
        if self.properties.len() > MAX_PROPERTIES_LEN {
            return Err(DraftError::Properties(self.properties.len()));
        }
        let total = (RECORD_HEADER_LEN as u64)
            + self.topic.len() as u64
            + self.properties.len() as u64
            + self.body.len() as u64;
        match u32::try_from(total) {
            Ok(t) if t <= MAX_RECORD_LEN_LIMIT => Ok(t),
            _ => Err(DraftError::TooLarge(total)),
        }
    }
}

/// Why a draft cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DraftError {
    Topic(usize),
    Properties(usize),
    TooLarge(u64),
}

/// CRC over a whole encoded record (at least [`QUEUE_ID_OFFSET`] bytes)
/// with its CRC field read as zero.
pub(crate) fn record_crc(rec: &[u8]) -> u32 {
    // Defined as the CRC of the record with its CRC field zeroed, so the
    // writer, whose field is still zero, needs a single pass. A reader
    // takes the CRC of the first 12 bytes (size, magic, zeroed field) from
    // tables, then hashes the rest in one update (crc32fast's
    // carry-less-multiply path).
    if get_u32(rec, MAGIC_OFFSET) == RECORD_MAGIC {
        let head = HeadCrc::get().of(get_u32(rec, TOTAL_SIZE_OFFSET));
        let mut h = crc32fast::Hasher::new_with_initial(head);
        h.update(&rec[QUEUE_ID_OFFSET..]);
        return h.finalize();
    }
    let mut head = [0u8; QUEUE_ID_OFFSET];
    head[..CRC_OFFSET].copy_from_slice(&rec[..CRC_OFFSET]);
    let mut h = crate::codec::crc32_hasher();
    h.update(&head);
    h.update(&rec[QUEUE_ID_OFFSET..]);
    h.finalize()
}

/// The CRC-32 of a record's first 12 bytes, `[size][RECORD_MAGIC][0; 4]`,
/// for any size, by table: CRC-32 is affine in the message bits, so it is
/// the CRC of `[0; 4][RECORD_MAGIC][0; 4]` XOR one table entry per size
/// byte (that byte's contribution with every other byte zero). Four
/// independent loads instead of twelve dependent table steps and a second
/// `update` call: about a quarter of the read path's CRC time at 128-byte
/// bodies.
struct HeadCrc {
    base: u32,
    by_byte: [[u32; 256]; 4],
}

impl HeadCrc {
    fn get() -> &'static Self {
        static TABLES: std::sync::OnceLock<HeadCrc> = std::sync::OnceLock::new();
        TABLES.get_or_init(|| {
            let mut m = [0u8; QUEUE_ID_OFFSET];
            put_u32(&mut m, MAGIC_OFFSET, RECORD_MAGIC);
            let base = crc32fast::hash(&m);
            let zero = crc32fast::hash(&[0u8; QUEUE_ID_OFFSET]);
            let mut by_byte = [[0u32; 256]; 4];
            for (i, table) in by_byte.iter_mut().enumerate() {
                for (b, entry) in table.iter_mut().enumerate() {
                    let mut z = [0u8; QUEUE_ID_OFFSET];
                    z[TOTAL_SIZE_OFFSET + i] = b as u8;
                    *entry = crc32fast::hash(&z) ^ zero;
                }
            }
            HeadCrc { base, by_byte }
        })
    }

    /// CRC-32 of `[size (big-endian)][RECORD_MAGIC][0; 4]`.
    fn of(&self, size: u32) -> u32 {
        let b = size.to_be_bytes();
        let t = &self.by_byte;
        self.base
            ^ t[0][usize::from(b[0])]
            ^ t[1][usize::from(b[1])]
            ^ t[2][usize::from(b[2])]
            ^ t[3][usize::from(b[3])]
    }
}

/// [`record_crc`] of a record whose CRC field is still zero: one pass.
fn fresh_record_crc(rec: &[u8]) -> u32 {
    debug_assert_eq!(get_u32(rec, CRC_OFFSET), 0);
    let mut h = crate::codec::crc32_hasher();
    h.update(rec);
    h.finalize()
}

/// Writes the fixed part of a record, with a zero CRC field, into the
/// first [`RECORD_HEADER_LEN`] bytes of `h`.
fn write_header(h: &mut [u8], d: &RecordDraft<'_>, total: usize, physical: u64, store_ts: u64) {
    // Lengths were bounded by `encoded_len`, so these casts are lossless.
    put_u32(h, TOTAL_SIZE_OFFSET, total as u32);
    put_u32(h, MAGIC_OFFSET, RECORD_MAGIC);
    put_u32(h, CRC_OFFSET, 0);
    put_u32(h, QUEUE_ID_OFFSET, d.queue_id);
    put_u32(h, FLAG_OFFSET, d.flag);
    put_u64(h, QUEUE_OFFSET_OFFSET, d.queue_offset);
    put_u64(h, PHYSICAL_OFFSET_OFFSET, physical);
    put_u32(h, SYSFLAG_OFFSET, d.sysflag);
    put_u64(h, BORN_TS_OFFSET, d.born_timestamp);
    put_u64(h, STORE_TS_OFFSET, store_ts);
    put_u32(h, RECONSUME_OFFSET, d.reconsume_times);
    put_u16(h, TOPIC_LEN_OFFSET, d.topic.len() as u16);
    put_u16(h, PROPS_LEN_OFFSET, d.properties.len() as u16);
    put_u32(h, BODY_LEN_OFFSET, d.body.len() as u32);
}

/// Encodes `draft` into `dst`, which must be exactly `draft.encoded_len()`
/// bytes long. Returns the CRC written.
pub(crate) fn encode_into(dst: &mut [u8], d: &RecordDraft<'_>, physical: u64, store_ts: u64) -> u32 {
    let t = d.topic.len();
    let p = d.properties.len();
    debug_assert_eq!(dst.len(), RECORD_HEADER_LEN + t + p + d.body.len());
    let h = RECORD_HEADER_LEN;
    let total = dst.len();
    write_header(&mut dst[..h], d, total, physical, store_ts);
    dst[h..h + t].copy_from_slice(d.topic.as_bytes());
    dst[h + t..h + t + p].copy_from_slice(d.properties);
    dst[h + t + p..].copy_from_slice(d.body);
    let crc = fresh_record_crc(dst);
    put_u32(dst, CRC_OFFSET, crc);
    crc
}

/// Appends the encoding of `draft` to `out` (one copy of each part, no
/// zero-fill first). Returns the CRC written.
pub(crate) fn encode_onto(out: &mut Vec<u8>, d: &RecordDraft<'_>, physical: u64, store_ts: u64) -> u32 {
    let start = out.len();
    let total = RECORD_HEADER_LEN + d.topic.len() + d.properties.len() + d.body.len();
    out.reserve(total);
    let mut fixed = [0u8; RECORD_HEADER_LEN];
    write_header(&mut fixed, d, total, physical, store_ts);
    out.extend_from_slice(&fixed);
    out.extend_from_slice(d.topic.as_bytes());
    out.extend_from_slice(d.properties);
    out.extend_from_slice(d.body);
    let rec = &mut out[start..];
    let crc = fresh_record_crc(rec);
    put_u32(rec, CRC_OFFSET, crc);
    crc
}

/// Writes an end-of-segment marker into `dst` (at least [`BLANK_LEN`] bytes)
/// saying `remaining` bytes of the segment are unused from here.
pub(crate) fn encode_blank(dst: &mut [u8], remaining: u32) {
    put_u32(dst, TOTAL_SIZE_OFFSET, remaining);
    put_u32(dst, MAGIC_OFFSET, BLANK_MAGIC);
}

/// What the first 8 bytes at a position say is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefix {
    /// Eight zero bytes: nothing was ever written here.
    Empty,
    /// An end-of-segment marker covering `remaining` bytes.
    Blank { remaining: u32 },
    /// A record of `len` bytes (not yet validated beyond magic and bounds).
    Record { len: u32 },
}

/// Classifies the 8 bytes at a position `room` bytes before the segment end.
#[inline]
pub(crate) fn parse_prefix(head: &[u8], room: u64, max_len: u32) -> Result<Prefix, CorruptionKind> {
    if head.len() < BLANK_LEN as usize {
        return Err(CorruptionKind::Truncated);
    }
    let len = get_u32(head, TOTAL_SIZE_OFFSET);
    let magic = get_u32(head, MAGIC_OFFSET);
    match magic {
        0 if len == 0 => Ok(Prefix::Empty),
        BLANK_MAGIC if u64::from(len) == room => Ok(Prefix::Blank { remaining: len }),
        BLANK_MAGIC => Err(CorruptionKind::BadLength { length: u64::from(len) }),
        RECORD_MAGIC => {
            let fits = u64::from(len) + u64::from(BLANK_LEN) <= room;
            if (len as usize) < RECORD_HEADER_LEN || len > max_len || !fits {
                Err(CorruptionKind::BadLength { length: u64::from(len) })
            } else {
                Ok(Prefix::Record { len })
            }
        }
        other => Err(CorruptionKind::BadMagic { found: u64::from(other) }),
    }
}

/// The length and claimed physical offset in the fixed part of a record
/// image, unvalidated (`None` if the image is shorter than the fixed part).
/// Replication uses it to place a received record before validating it.
pub(crate) fn peek_len_and_offset(bytes: &[u8]) -> Option<(u32, u64)> {
    if bytes.len() < RECORD_HEADER_LEN {
        return None;
    }
    Some((get_u32(bytes, TOTAL_SIZE_OFFSET), get_u64(bytes, PHYSICAL_OFFSET_OFFSET)))
}

/// The topic and queue id of a record image, unvalidated beyond bounds
/// and UTF-8 (`None` if they do not fit in `image`).
pub(crate) fn peek_topic_and_queue(image: &[u8]) -> Option<(&str, u32)> {
    if image.len() < RECORD_HEADER_LEN {
        return None;
    }
    let t = usize::from(get_u16(image, TOPIC_LEN_OFFSET));
    let topic = image.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + t)?;
    Some((std::str::from_utf8(topic).ok()?, get_u32(image, QUEUE_ID_OFFSET)))
}

/// Whether `b` is UTF-8. Topics are short and ASCII in practice: the
/// ASCII test costs a few instructions where `from_utf8`'s set-up costs
/// tens, on a check made for every record read.
fn is_utf8(b: &[u8]) -> bool {
    crate::codec::short_is_ascii(b) || std::str::from_utf8(b).is_ok()
}

/// A validated record borrowed from a buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordView<'a> {
    pub(crate) bytes: &'a [u8],
}

/// Byte ranges of the variable parts of a validated record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parts {
    pub(crate) topic: (usize, usize),
    pub(crate) properties: (usize, usize),
    pub(crate) body: (usize, usize),
}

impl<'a> RecordView<'a> {
    /// Validates a whole record in `bytes` (exactly its length) that should
    /// sit at physical offset `at`.
    #[inline]
    pub(crate) fn validate(bytes: &'a [u8], at: u64) -> Result<(Self, Parts), CorruptionKind> {
        if bytes.len() < RECORD_HEADER_LEN {
            return Err(CorruptionKind::Truncated);
        }
        let stored = get_u32(bytes, CRC_OFFSET);
        let computed = record_crc(bytes);
        if stored != computed {
            return Err(CorruptionKind::ChecksumMismatch { stored, computed });
        }
        Self::validate_framing(bytes, at)
    }

    /// [`RecordView::validate`] without the CRC: the length, the physical
    /// offset, the lengths of the parts and the topic are still checked, so
    /// the parts are in bounds and the topic is text whatever the bytes.
    #[inline]
    pub(crate) fn validate_framing(bytes: &'a [u8], at: u64) -> Result<(Self, Parts), CorruptionKind> {
        if bytes.len() < RECORD_HEADER_LEN {
            return Err(CorruptionKind::Truncated);
        }
        let claimed = get_u64(bytes, PHYSICAL_OFFSET_OFFSET);
        if claimed != at {
            return Err(CorruptionKind::Misplaced { claimed, actual: at });
        }
        let t = usize::from(get_u16(bytes, TOPIC_LEN_OFFSET));
        let p = usize::from(get_u16(bytes, PROPS_LEN_OFFSET));
        let b = get_u32(bytes, BODY_LEN_OFFSET) as usize;
        let sum = RECORD_HEADER_LEN as u64 + t as u64 + p as u64 + b as u64;
        if sum != bytes.len() as u64 {
            return Err(CorruptionKind::BadLength { length: sum });
        }
        let topic = (RECORD_HEADER_LEN, RECORD_HEADER_LEN + t);
        if t == 0 || !is_utf8(&bytes[topic.0..topic.1]) {
            return Err(CorruptionKind::InvalidField { field: "topic" });
        }
        let properties = (topic.1, topic.1 + p);
        let body = (properties.1, bytes.len());
        Ok((Self { bytes }, Parts { topic, properties, body }))
    }

    #[inline]
    pub(crate) fn crc(&self) -> u32 {
        get_u32(self.bytes, CRC_OFFSET)
    }
    #[inline]
    pub(crate) fn queue_id(&self) -> u32 {
        get_u32(self.bytes, QUEUE_ID_OFFSET)
    }
    #[inline]
    pub(crate) fn flag(&self) -> u32 {
        get_u32(self.bytes, FLAG_OFFSET)
    }
    #[inline]
    pub(crate) fn queue_offset(&self) -> u64 {
        get_u64(self.bytes, QUEUE_OFFSET_OFFSET)
    }
    #[inline]
    pub(crate) fn sysflag(&self) -> u32 {
        get_u32(self.bytes, SYSFLAG_OFFSET)
    }
    #[inline]
    pub(crate) fn born_timestamp(&self) -> u64 {
        get_u64(self.bytes, BORN_TS_OFFSET)
    }
    #[inline]
    pub(crate) fn store_timestamp(&self) -> u64 {
        get_u64(self.bytes, STORE_TS_OFFSET)
    }
    #[inline]
    pub(crate) fn reconsume_times(&self) -> u32 {
        get_u32(self.bytes, RECONSUME_OFFSET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft<'a>(topic: &'a str, props: &'a [u8], body: &'a [u8]) -> RecordDraft<'a> {
        RecordDraft {
            topic,
            queue_id: 3,
            queue_offset: 77,
            flag: 9,
            sysflag: 1,
            born_timestamp: 1_700_000_000_000,
            reconsume_times: 2,
            properties: props,
            body,
        }
    }

    fn encode(d: &RecordDraft<'_>, at: u64) -> Vec<u8> {
        let len = d.encoded_len().map_or(0, |l| l as usize);
        let mut v = vec![0u8; len];
        encode_into(&mut v, d, at, 1_700_000_000_123);
        v
    }

    #[test]
    fn layout_constants_are_pinned() {
        // FORMAT.md section 3.2 lists these offsets; change both together.
        assert_eq!(MAGIC_OFFSET, 4);
        assert_eq!(CRC_OFFSET, 8);
        assert_eq!(QUEUE_ID_OFFSET, 12);
        assert_eq!(FLAG_OFFSET, 16);
        assert_eq!(QUEUE_OFFSET_OFFSET, 20);
        assert_eq!(SYSFLAG_OFFSET, 36);
        assert_eq!(BORN_TS_OFFSET, 40);
        assert_eq!(RECONSUME_OFFSET, 56);
        assert_eq!(PROPS_LEN_OFFSET, 62);
        assert_eq!(PHYSICAL_OFFSET_OFFSET, 28);
        assert_eq!(STORE_TS_OFFSET, 48);
        assert_eq!(TOPIC_LEN_OFFSET, 60);
        assert_eq!(BODY_LEN_OFFSET, 64);
        assert_eq!(RECORD_HEADER_LEN, 68);
        assert_eq!(BLANK_LEN, 8);
        assert_eq!(RECORD_MAGIC.to_be_bytes(), [b'M', b'Q', b'R', 1]);
        assert_eq!(BLANK_MAGIC.to_be_bytes(), *b"MQRB");
    }

    #[test]
    fn record_crc_is_the_crc_of_the_record_with_its_field_zeroed() {
        // The reader's table path (any size byte in each of the four size
        // positions) and its fallback for another magic, against the
        // definition: one plain CRC over a copy with the field zeroed.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut sizes = vec![68u32, 255, 256, 0x0102_0304, 0xff00_00ff, u32::MAX, 0x00ff_ff00];
        sizes.extend((0..200).map(|_| next() as u32));
        for (i, size) in sizes.into_iter().enumerate() {
            let mut rec: Vec<u8> = (0..68 + i % 300).map(|_| next() as u8).collect();
            put_u32(&mut rec, TOTAL_SIZE_OFFSET, size);
            let other = next() as u32;
            for magic in [RECORD_MAGIC, BLANK_MAGIC, other] {
                put_u32(&mut rec, MAGIC_OFFSET, magic);
                let mut zeroed = rec.clone();
                put_u32(&mut zeroed, CRC_OFFSET, 0);
                assert_eq!(record_crc(&rec), crc32fast::hash(&zeroed), "size {size:#x}, magic {magic:#x}");
            }
        }
    }

    #[test]
    fn round_trip_preserves_every_field() {
        let d = draft("TopicA", b"KEYS\x01k1\x02", b"hello");
        let v = encode(&d, 4096);
        assert_eq!(v.len(), RECORD_HEADER_LEN + 6 + 8 + 5);
        let (view, parts) = RecordView::validate(&v, 4096).unwrap();
        assert_eq!(view.queue_id(), 3);
        assert_eq!(view.queue_offset(), 77);
        assert_eq!(view.flag(), 9);
        assert_eq!(view.sysflag(), 1);
        assert_eq!(view.born_timestamp(), 1_700_000_000_000);
        assert_eq!(view.store_timestamp(), 1_700_000_000_123);
        assert_eq!(view.reconsume_times(), 2);
        assert_eq!(&v[parts.topic.0..parts.topic.1], b"TopicA");
        assert_eq!(&v[parts.properties.0..parts.properties.1], b"KEYS\x01k1\x02");
        assert_eq!(&v[parts.body.0..parts.body.1], b"hello");
        assert_eq!(view.crc(), record_crc(&v));
    }

    #[test]
    fn encode_onto_matches_encode_into() {
        let d = draft("TopicA", b"k\x01v\x02", b"some body");
        let mut v = b"prefix".to_vec();
        let crc = encode_onto(&mut v, &d, 4096, 1_700_000_000_123);
        assert_eq!(&v[..6], b"prefix");
        assert_eq!(&v[6..], &encode(&d, 4096)[..]);
        assert_eq!(crc, RecordView::validate(&v[6..], 4096).unwrap().0.crc());
    }

    #[test]
    fn empty_body_and_properties_round_trip() {
        let d = draft("t", b"", b"");
        let v = encode(&d, 64);
        assert!(RecordView::validate(&v, 64).is_ok());
        assert!(matches!(parse_prefix(&v, 1 << 20, 1 << 20), Ok(Prefix::Record { len: 69 })));
    }

    #[test]
    fn draft_limits_are_enforced() {
        assert_eq!(draft("", b"", b"x").encoded_len(), Err(DraftError::Topic(0)));
        let long = "t".repeat(MAX_TOPIC_LEN + 1);
        assert!(matches!(draft(&long, b"", b"").encoded_len(), Err(DraftError::Topic(_))));
        let props = vec![0u8; MAX_PROPERTIES_LEN + 1];
        assert!(matches!(draft("t", &props, b"").encoded_len(), Err(DraftError::Properties(_))));
        let body = vec![0u8; MAX_RECORD_LEN_LIMIT as usize];
        assert!(matches!(draft("t", b"", &body).encoded_len(), Err(DraftError::TooLarge(_))));
    }

    #[test]
    fn every_bit_flip_in_the_header_is_detected() {
        let d = draft("TopicA", b"a\x01b\x02", b"body bytes");
        let v = encode(&d, 1000);
        for bit in 0..(v.len() * 8) {
            let mut c = v.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            let prefix = parse_prefix(&c, 1 << 20, 1 << 20);
            let ok = match prefix {
                Ok(Prefix::Record { len }) if len as usize == c.len() => RecordView::validate(&c, 1000).is_ok(),
                _ => false,
            };
            assert!(!ok, "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn prefix_decode_errors() {
        assert_eq!(parse_prefix(&[0; 4], 100, 100), Err(CorruptionKind::Truncated));
        assert_eq!(parse_prefix(&[0; 8], 100, 100), Ok(Prefix::Empty));
        let mut b = [0u8; 8];
        encode_blank(&mut b, 100);
        assert_eq!(parse_prefix(&b, 100, 100), Ok(Prefix::Blank { remaining: 100 }));
        assert!(matches!(parse_prefix(&b, 99, 100), Err(CorruptionKind::BadLength { length: 100 })));
        b[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        assert!(matches!(parse_prefix(&b, 100, 100), Err(CorruptionKind::BadMagic { found: 0xdead_beef })));
        // Zero length with a record magic, a record longer than the room
        // left before the marker, and one over the configured maximum.
        let mut r = [0u8; 8];
        r[4..8].copy_from_slice(&RECORD_MAGIC.to_be_bytes());
        assert!(matches!(parse_prefix(&r, 1000, 1000), Err(CorruptionKind::BadLength { length: 0 })));
        r[0..4].copy_from_slice(&100u32.to_be_bytes());
        assert!(matches!(parse_prefix(&r, 107, 1000), Err(CorruptionKind::BadLength { .. })));
        assert!(parse_prefix(&r, 108, 1000).is_ok());
        assert!(matches!(parse_prefix(&r, 1000, 99), Err(CorruptionKind::BadLength { .. })));
    }

    #[test]
    fn validate_errors() {
        let d = draft("TopicA", b"", b"payload");
        let v = encode(&d, 500);
        assert_eq!(RecordView::validate(&v[..10], 500).err(), Some(CorruptionKind::Truncated));
        assert!(matches!(RecordView::validate(&v, 501), Err(CorruptionKind::Misplaced { claimed: 500, actual: 501 })));
        let mut c = v.clone();
        let last = c.len() - 1;
        c[last] ^= 0x40;
        assert!(matches!(RecordView::validate(&c, 500), Err(CorruptionKind::ChecksumMismatch { .. })));
        // A consistent CRC over inconsistent lengths is still rejected.
        let mut c = v.clone();
        put_u32(&mut c, BODY_LEN_OFFSET, 3);
        let crc = record_crc(&c);
        put_u32(&mut c, CRC_OFFSET, crc);
        assert!(matches!(RecordView::validate(&c, 500), Err(CorruptionKind::BadLength { .. })));
        // Non-UTF-8 topic with a valid CRC.
        let mut c = v.clone();
        c[RECORD_HEADER_LEN] = 0xff;
        let crc = record_crc(&c);
        put_u32(&mut c, CRC_OFFSET, crc);
        assert!(matches!(RecordView::validate(&c, 500), Err(CorruptionKind::InvalidField { field: "topic" })));
    }
}
