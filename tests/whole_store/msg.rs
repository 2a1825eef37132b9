//! What the whole-store crash test stores: its topics and options, and
//! self-describing messages whose every attribute derives from a sequence
//! number, so any record found after a crash, in any topic, can be checked
//! for garbage.

use crate::common::crash_body::{self, BodyKind, BODY_HEADER};
use crate::common::{describe, mix};
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
    /// Sent to wait in the schedule topic.
    pub fn delayed(self) -> bool {
        matches!(self, Self::DelayLevel | Self::DeliverAt)
    }
}

/// This test's body parameters (the format is in `common::crash_body`).
impl BodyKind for Kind {
    const MAGIC: [u8; 4] = *b"WSK1";
    const MAX_BATCH: u64 = MAX_BATCH;

    fn from_code(code: u8) -> Option<Self> {
        [Self::Send, Self::Selector, Self::Batch, Self::DelayLevel, Self::DeliverAt]
            .into_iter()
            .find(|k| *k as u8 == code)
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn is_batch(self) -> bool {
        self == Self::Batch
    }

    fn payload_len(seq: u64) -> usize {
        let r = mix(seq ^ 0x5107_E000);
        let x = (r >> 8) as usize;
        match r % 10 {
            0..=6 => x % 96,
            _ => 96 + x % (MAX_BODY - BODY_HEADER - 96),
        }
    }
}

/// What a message's body header says about it.
pub type Desc = crash_body::Desc<Kind>;

impl Desc {
    /// Index of its topic in [`TOPICS`], decided by the first message of
    /// its send call.
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
