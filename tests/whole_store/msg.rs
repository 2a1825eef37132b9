//! What the whole-store crash test stores: its topics and options, and
//! self-describing messages whose every attribute derives from a sequence
//! number, so any record found after a crash, in any topic, can be checked
//! for garbage.

use crate::common::{body_for, mix};
use mqstore::commitlog::{CommitLogOptions, FlushMode};
use mqstore::index::IndexFileSize;
use mqstore::message::{Message, MessageExt};
use mqstore::retry::DelayLevels;
use mqstore::store::StoreOptions;
use std::time::Duration;

/// User topics and their queue counts.
pub const TOPICS: [(&str, u32); 2] = [("ws-a", 4), ("ws-b", 3)];
/// The clustering consumer group.
pub const GROUP: &str = "ws-g";
/// Real, short levels: delayed messages come due within a round or two,
/// and send-backs (level `3 + reconsume times`) wait 300 ms to 1 s.
pub const DELAY_LEVELS: &str = "100ms 200ms 300ms 500ms 800ms 1s";
/// Failures before a message is dead-lettered.
pub const MAX_RECONSUME: i32 = 3;
/// Commit-log segments roll every few hundred kilobytes written.
pub const SEGMENT_SIZE: u64 = 64 << 10;
/// Largest body.
pub const MAX_BODY: usize = 2 << 10;
/// Consume-queue files of this many units.
pub const CQ_UNITS_PER_FILE: u64 = 32;
/// Index files this small roll every few hundred messages.
pub const INDEX_SIZE: IndexFileSize = IndexFileSize { slots: 256, max_entries: 512 };
/// Largest batch.
pub const MAX_BATCH: u64 = 4;
/// Latest delivery time a `DeliverAt` send asks for (ms ahead): past the
/// longest level, so some hop.
pub const MAX_DELIVER_AHEAD_MS: u64 = 1_600;

/// Options of every child and of the parent's drains.
pub fn store_opts(mode: FlushMode) -> StoreOptions {
    with_log(mode, CommitLogOptions::default())
}

/// Options of the parent's checks of a crashed copy: the store's clock
/// stands still at 1 ms past the epoch, before every due time, so the
/// delay thread delivers nothing while the copy is read (a level's head is
/// due at its due time or its delay after being first seen, whichever
/// comes first, both by this clock).
pub fn frozen_opts(mode: FlushMode) -> StoreOptions {
    with_log(mode, CommitLogOptions::default().clock(std::sync::Arc::new(mqstore::ManualClock::new(1))))
}

fn with_log(mode: FlushMode, log: CommitLogOptions) -> StoreOptions {
    StoreOptions::default()
        .commit_log_options(log.segment_size(SEGMENT_SIZE).max_record_size(8 << 10))
        .flush_mode(mode)
        .max_body_size(MAX_BODY)
        .max_properties_size(1 << 10)
        .consume_queue_units_per_file(CQ_UNITS_PER_FILE)
        .index_file_size(INDEX_SIZE)
        .offset_persist_interval(Duration::from_millis(10))
        .delay_poll_interval(Duration::from_millis(5))
        .delay_levels(DelayLevels::parse(DELAY_LEVELS).unwrap())
}

/// How a message was sent; stored in its body header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Store::send` (round robin).
    Send = 0,
    /// `send_with_selector(HashByKeySelector)`.
    Selector = 1,
    /// A member of a `send_batch`.
    Batch = 2,
    /// `Store::send` with a delay level.
    DelayLevel = 3,
    /// `Store::send` with a delivery time.
    DeliverAt = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        [Self::Send, Self::Selector, Self::Batch, Self::DelayLevel, Self::DeliverAt].into_iter().find(|k| *k as u8 == b)
    }

    /// Sent to wait in the schedule topic.
    pub fn delayed(self) -> bool {
        matches!(self, Self::DelayLevel | Self::DeliverAt)
    }
}

const MAGIC: [u8; 4] = *b"WSK1";
const BODY_HEADER: usize = 24;

fn payload_len(seq: u64) -> usize {
    let r = mix(seq ^ 0x5107_E000);
    let x = (r >> 8) as usize;
    match r % 10 {
        0..=6 => x % 96,
        _ => 96 + x % (MAX_BODY - BODY_HEADER - 96),
    }
}

/// What a message's body header says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// Its sequence number.
    pub seq: u64,
    /// How it was sent.
    pub kind: Kind,
    /// Index within its batch (0 outside batches).
    pub idx: u8,
    /// Batch length (1 outside batches).
    pub n: u8,
}

impl Desc {
    /// Seq of the first message of its send call; decides the topic.
    pub fn first(&self) -> u64 {
        self.seq - u64::from(self.idx)
    }

    /// Index of its topic in [`TOPICS`].
    pub fn topic_index(&self) -> usize {
        (mix(self.first() ^ 0x7091) % TOPICS.len() as u64) as usize
    }

    /// Its (real) topic.
    pub fn topic(&self) -> &'static str {
        TOPICS[self.topic_index()].0
    }

    /// The delay level of a `DelayLevel` send.
    pub fn level(&self) -> u8 {
        1 + (mix(self.seq ^ 0xDE1A) % 6) as u8
    }

    /// How far ahead a `DeliverAt` send asks to be delivered (ms).
    pub fn deliver_ahead_ms(&self) -> u64 {
        mix(self.seq ^ 0xA7) % MAX_DELIVER_AHEAD_MS
    }

    fn tags(&self) -> Option<String> {
        (!mix(self.seq ^ 0x7A65).is_multiple_of(4)).then(|| format!("t{}", self.seq % 5))
    }

    /// The key unique to this message.
    pub fn unique_key(&self) -> String {
        format!("k{}", self.seq)
    }

    fn keys(&self) -> Vec<String> {
        let mut keys = vec![self.unique_key()];
        if self.kind == Kind::Selector {
            keys.push(format!("o{}", mix(self.seq ^ 0x4E75) % 32));
        }
        keys
    }

    /// The body: header (magic, seq, kind, batch index and length, payload
    /// length, CRC32 over header and payload) and a payload derived from
    /// `seq`.
    pub fn body(&self) -> Vec<u8> {
        let payload = body_for(self.seq, payload_len(self.seq));
        let mut b = Vec::with_capacity(BODY_HEADER + payload.len());
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&[self.kind as u8, self.idx, self.n, 0]);
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&b);
        h.update(&payload);
        b.extend_from_slice(&h.finalize().to_be_bytes());
        b.extend_from_slice(&payload);
        b
    }

    /// The message to send, `now_ms` being the store's clock.
    pub fn message(&self, now_ms: u64) -> Message {
        let mut m = Message::new(self.topic(), self.body()).with_keys(self.keys());
        if let Some(t) = self.tags() {
            m = m.with_tags(t);
        }
        match self.kind {
            Kind::DelayLevel => m.with_delay_level(self.level()),
            Kind::DeliverAt => m.with_deliver_at(now_ms + self.deliver_ahead_ms()),
            _ => m,
        }
    }

    /// Decodes and fully checks a body: header, CRC and the payload `seq`
    /// implies.
    pub fn decode(body: &[u8]) -> Result<Self, String> {
        let short = |what: &str| {
            format!("body of {} bytes is garbage: {what}; first bytes {:02x?}", body.len(), &body[..body.len().min(32)])
        };
        if body.len() < BODY_HEADER || body[..4] != MAGIC {
            return Err(short("no header"));
        }
        let seq = u64::from_be_bytes(body[4..12].try_into().unwrap());
        let kind = Kind::from_u8(body[12]).ok_or_else(|| short("bad kind"))?;
        let (idx, n) = (body[13], body[14]);
        let plen = u32::from_be_bytes(body[16..20].try_into().unwrap()) as usize;
        let crc = u32::from_be_bytes(body[20..24].try_into().unwrap());
        if plen != body.len() - BODY_HEADER {
            return Err(short("payload length mismatch"));
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&body[..20]);
        h.update(&body[BODY_HEADER..]);
        if h.finalize() != crc {
            return Err(short("header CRC mismatch"));
        }
        let batch_ok = match kind {
            Kind::Batch => n >= 2 && u64::from(n) <= MAX_BATCH && idx < n && u64::from(idx) <= seq,
            _ => n == 1 && idx == 0,
        };
        if body[15] != 0 || !batch_ok {
            return Err(short("bad batch fields"));
        }
        if plen != payload_len(seq) || body[BODY_HEADER..] != body_for(seq, plen)[..] {
            return Err(short(&format!("payload is not the one of seq {seq}")));
        }
        Ok(Self { seq, kind, idx, n })
    }

    /// Checks the tag and keys, which every copy keeps (a retry, a
    /// delivered delayed message, a dead letter).
    pub fn check_attrs(&self, m: &MessageExt) -> Result<(), String> {
        let keys: Vec<&str> = m.keys().collect();
        let want = self.keys();
        if m.tags() == self.tags().as_deref() && keys == want.iter().map(String::as_str).collect::<Vec<_>>() {
            return Ok(());
        }
        Err(format!(
            "{} of {self:?} does not carry the attributes of its seq: tags {:?} (want {:?}), keys {keys:?} (want \
             {want:?})",
            describe(m),
            m.tags(),
            self.tags()
        ))
    }
}

/// A message's place, for error messages.
pub fn describe(m: &MessageExt) -> String {
    format!(
        "[{}/{} @{} phys {} size {} body {} B msg id {:?}]",
        m.stored_topic(),
        m.queue_id(),
        m.queue_offset().0,
        m.physical_offset().0,
        m.store_size(),
        m.body().len(),
        m.msg_id()
    )
}
