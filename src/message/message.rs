//! [`Message`], what a producer sends, and the [`MessageLimits`] it is
//! checked against.

use super::id::UNIQUE_ID_HEX_LEN;
use super::properties::{
    is_reserved, pair_len, push_hex_pair, push_pair, validate_pair, DELAY, KEYS, KEY_SEPARATOR, TAGS, TIMER_DELIVER_MS,
    UNIQ_KEY,
};
use super::{MessageId, TopicName};
use crate::commitlog::{MAX_PROPERTIES_LEN, MAX_TOPIC_LEN};
use crate::error::{Error, Result};
use bytes::Bytes;
use std::collections::BTreeMap;

/// RocketMQ's default `maxMessageSize`, which limits the body: 4 MiB.
pub const DEFAULT_MAX_BODY: usize = 4 << 20;
/// RocketMQ's properties limit: the length field is a Java `short`, so 32,767.
pub const DEFAULT_MAX_PROPERTIES: usize = i16::MAX as usize;
/// Levels in RocketMQ's default delay table (`1s 5s ... 2h`).
pub const DEFAULT_MAX_DELAY_LEVEL: u8 = 18;

/// Size limits a [`Message`] is checked against before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Largest body in bytes. Default [`DEFAULT_MAX_BODY`] (4 MiB).
    pub max_body: usize,
    /// Largest encoded properties blob in bytes, counting the properties the
    /// store adds (tags, keys, delay, unique id). Default
    /// [`DEFAULT_MAX_PROPERTIES`] (32,767); values above the record format's
    /// 65,535 are treated as 65,535.
    pub max_properties: usize,
    /// Highest delay level accepted; the store sets it to the length of its
    /// delay table. Default [`DEFAULT_MAX_DELAY_LEVEL`] (18).
    pub max_delay_level: u8,
}

impl Default for MessageLimits {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
            max_properties: DEFAULT_MAX_PROPERTIES,
            max_delay_level: DEFAULT_MAX_DELAY_LEVEL,
        }
    }
}

/// A message to send: topic, body, optional tag, keys, delay level, flag and
/// user properties.
///
/// The `with_*` methods only record values; [`Message::check`] validates
/// them all at once, so a bad value is reported by the send that uses it.
///
/// ```
/// use mqstore::message::{Message, MessageLimits};
/// let msg = Message::new("TopicTest", "hello")
///     .with_tags("TagA")
///     .with_keys(["order-1", "user-7"])
///     .with_property("region", "eu")
///     .with_delay_level(3);
/// msg.check(&MessageLimits::default())?;
/// assert_eq!(msg.tags(), Some("TagA"));
/// assert_eq!(msg.keys(), ["order-1", "user-7"]);
/// # Ok::<(), mqstore::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    topic: TopicName,
    body: Bytes,
    tags: Option<String>,
    keys: Vec<String>,
    /// `None` until the first property: dropping even an empty `BTreeMap`
    /// walks an iterator (about 46 instructions per message, callgrind).
    properties: Option<BTreeMap<String, String>>,
    delay_level: Option<u8>,
    deliver_at: Option<u64>,
    flag: u32,
}

impl Message {
    /// A message with a topic and a body and nothing else.
    ///
    /// `topic` is a `&str` or `String` (copied), or a [`TopicName`] or
    /// `&TopicName` (shared, no allocation: the way to build many messages
    /// for one topic).
    #[must_use]
    pub fn new(topic: impl Into<TopicName>, body: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            body: body.into(),
            tags: None,
            keys: Vec::new(),
            properties: None,
            delay_level: None,
            deliver_at: None,
            flag: 0,
        }
    }

    /// Sets the tag (one per message; consumers filter on it).
    #[must_use]
    pub fn with_tags(mut self, tags: impl Into<String>) -> Self {
        self.tags = Some(tags.into());
        self
    }

    /// Replaces the keys (each is indexed for lookup).
    #[must_use]
    pub fn with_keys<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Adds one key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    /// Sets a user property, replacing an earlier value of the same name.
    #[must_use]
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.get_or_insert_with(BTreeMap::new).insert(name.into(), value.into());
        self
    }

    /// Requests delivery after delay level `level` (1-based).
    #[must_use]
    pub fn with_delay_level(mut self, level: u8) -> Self {
        self.delay_level = Some(level);
        self
    }

    /// Requests delivery at `timestamp_ms` (milliseconds since the Unix
    /// epoch, as the store's clock reads), any time ahead: RocketMQ 5's
    /// `setDeliverTimeMs`, without its 3-day cap. A time already reached
    /// delivers at once. Not together with a delay level.
    #[must_use]
    pub fn with_deliver_at(mut self, timestamp_ms: u64) -> Self {
        self.deliver_at = Some(timestamp_ms);
        self
    }

    /// Sets the opaque user flag.
    #[must_use]
    pub fn with_flag(mut self, flag: u32) -> Self {
        self.flag = flag;
        self
    }

    /// Topic name.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }
    /// Topic name as a shared [`TopicName`] (clone it to build more
    /// messages for the same topic without copying the name).
    #[must_use]
    pub fn topic_name(&self) -> &TopicName {
        &self.topic
    }
    /// Message body.
    #[must_use]
    pub fn body(&self) -> &Bytes {
        &self.body
    }
    /// Tag, if set.
    #[must_use]
    pub fn tags(&self) -> Option<&str> {
        self.tags.as_deref()
    }
    /// Keys, in the order given.
    #[must_use]
    pub fn keys(&self) -> &[String] {
        &self.keys
    }
    /// User properties (without the ones the store adds).
    #[must_use]
    pub fn properties(&self) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.properties.as_ref().unwrap_or(&NONE)
    }
    /// One user property.
    #[must_use]
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties().get(name).map(String::as_str)
    }
    /// Requested delay level, if any.
    #[must_use]
    pub fn delay_level(&self) -> Option<u8> {
        self.delay_level
    }
    /// Requested delivery time, if any (see [`Message::with_deliver_at`]).
    #[must_use]
    pub fn deliver_at(&self) -> Option<u64> {
        self.deliver_at
    }
    /// Opaque user flag.
    #[must_use]
    pub fn flag(&self) -> u32 {
        self.flag
    }

    /// Validates the message against `limits`; nothing is stored.
    ///
    /// Errors: [`Error::InvalidArgument`] for an empty or over-long topic, an
    /// empty body, an empty tag or one containing `||` (the subscription
    /// separator), an empty key or one containing a space (the key
    /// separator), a delay level outside `1..=max_delay_level`, a user
    /// property with an empty or reserved name, or any text containing the
    /// separator bytes 0x01/0x02. [`Error::MessageTooLarge`] for a body over
    /// `max_body` or encoded properties (including the tag, keys, delay and
    /// the 32-character unique id the store adds) over `max_properties`.
    pub fn check(&self, limits: &MessageLimits) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidArgument(why));
        if self.topic.is_empty() || self.topic.len() > MAX_TOPIC_LEN {
            return bad(format!("topic must be 1 to {MAX_TOPIC_LEN} bytes, got {}", self.topic.len()));
        }
        if self.body.is_empty() {
            return bad("message body is empty".to_string());
        }
        if self.body.len() > limits.max_body {
            return Err(too_large(self.body.len(), limits.max_body));
        }
        self.check_tags_and_keys()?;
        if let Some(level) = self.delay_level {
            if level == 0 || level > limits.max_delay_level {
                return bad(format!("delay level {level} is outside 1..={}", limits.max_delay_level));
            }
            if self.deliver_at.is_some() {
                return bad("a message takes a delay level or a delivery time, not both".to_string());
            }
        }
        for name in self.properties().keys() {
            if is_reserved(name) {
                return bad(format!("property name {name:?} is reserved for the store"));
            }
        }
        // The unique id the store adds counts towards the limit; its name
        // and hex digits hold no separator, so only its length is added.
        let mut len = pair_len(UNIQ_KEY, "") + UNIQUE_ID_HEX_LEN;
        // Validating here too catches separators in tags and keys.
        self.for_each_pair(|k, v| {
            validate_pair(k, v)?;
            len += pair_len(k, v);
            Ok(())
        })?;
        let max = limits.max_properties.min(MAX_PROPERTIES_LEN);
        if len > max {
            return Err(too_large(len, max));
        }
        Ok(())
    }

    fn check_tags_and_keys(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidArgument(why));
        if let Some(tags) = &self.tags {
            if tags.is_empty() || tags.contains("||") {
                return bad(format!("tag {tags:?} is empty or contains the separator \"||\""));
            }
        }
        for key in &self.keys {
            if key.is_empty() || key.contains(KEY_SEPARATOR) {
                return bad(format!("key {key:?} is empty or contains the key separator {KEY_SEPARATOR:?}"));
            }
        }
        Ok(())
    }

    /// Calls `f` on every property the store writes for this message
    /// except its unique id: user properties, then TAGS, KEYS, DELAY and
    /// TIMER_DELIVER_MS (when set).
    fn for_each_pair(&self, mut f: impl FnMut(&str, &str) -> Result<()>) -> Result<()> {
        for (name, value) in self.properties() {
            f(name, value)?;
        }
        if let Some(tags) = &self.tags {
            f(TAGS, tags)?;
        }
        if !self.keys.is_empty() {
            f(KEYS, &self.keys.join(KEY_SEPARATOR))?;
        }
        if let Some(level) = self.delay_level {
            f(DELAY, &level.to_string())?;
        }
        if let Some(at) = self.deliver_at {
            f(TIMER_DELIVER_MS, &at.to_string())?;
        }
        Ok(())
    }

    /// The properties blob stored in the message's record: user properties
    /// plus TAGS, KEYS, DELAY and, last, UNIQ_KEY (omitted when `uniq_key`
    /// is `None`). Call [`Message::check`] first; this only re-checks what
    /// encoding needs (separators, reserved names, the format's 65,535-byte
    /// bound).
    #[cfg(test)]
    pub(crate) fn encode_properties_for_store(&self, uniq_key: Option<&MessageId>) -> Result<Vec<u8>> {
        // Room for the unique id and a few short pairs without regrowing.
        let mut out = Vec::with_capacity(128);
        self.encode_properties_for_store_onto(uniq_key, &mut out)?;
        Ok(out)
    }

    /// [`Message::encode_properties_for_store`], appended to `out` (a batch
    /// send encodes every message's blob into one buffer). On an error
    /// `out` may hold part of the blob.
    pub(crate) fn encode_properties_for_store_onto(
        &self,
        uniq_key: Option<&MessageId>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(name) = self.properties().keys().find(|n| is_reserved(n)) {
            return Err(Error::InvalidArgument(format!("property name {name:?} is reserved for the store")));
        }
        let start = out.len();
        self.for_each_pair(|k, v| push_pair(out, k, v))?;
        if let Some(id) = uniq_key {
            // Hex digits only (`MessageId`'s invariant): no separator to
            // look for, on a pair every send writes.
            push_hex_pair(out, UNIQ_KEY, id);
        }
        let len = out.len() - start;
        if len > MAX_PROPERTIES_LEN {
            return Err(too_large(len, MAX_PROPERTIES_LEN));
        }
        Ok(())
    }
}

fn too_large(size: usize, max: usize) -> Error {
    Error::MessageTooLarge { size: size as u64, max: max as u64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::properties::decode_properties;

    const UNIQ: &str = "7F0000010001000000010000000A0001";

    fn uniq() -> MessageId {
        UNIQ.parse().unwrap()
    }

    fn limits() -> MessageLimits {
        MessageLimits::default()
    }

    fn invalid(msg: &Message) -> String {
        match msg.check(&limits()) {
            Err(Error::InvalidArgument(why)) => why,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn builder_sets_every_field() {
        let m = Message::new("T", &b"body"[..])
            .with_tags("TagA")
            .with_keys(vec!["k1".to_string()])
            .with_key("k2")
            .with_property("p", "v")
            .with_delay_level(2)
            .with_flag(7);
        assert_eq!((m.topic(), &m.body()[..], m.tags()), ("T", &b"body"[..], Some("TagA")));
        assert_eq!(m.keys(), ["k1", "k2"]);
        assert_eq!(m.property("p"), Some("v"));
        assert_eq!(m.properties().len(), 1);
        assert_eq!((m.delay_level(), m.flag()), (Some(2), 7));
        assert!(m.check(&limits()).is_ok());
        // No properties until the first; a later one of the same name
        // replaces the value.
        let bare = Message::new("T", "b");
        assert!(bare.properties().is_empty() && bare.property("p").is_none());
        let twice = bare.clone().with_property("p", "1").with_property("p", "2").with_property("q", "3");
        assert_eq!(
            twice.properties().iter().collect::<Vec<_>>(),
            [(&"p".to_string(), &"2".to_string()), (&"q".to_string(), &"3".to_string())]
        );
        assert_ne!(bare, twice);
    }

    #[test]
    fn defaults_follow_rocketmq() {
        let l = MessageLimits::default();
        assert_eq!((l.max_body, l.max_properties, l.max_delay_level), (4 << 20, 32_767, 18));
    }

    #[test]
    fn store_properties_carry_system_and_user_properties() {
        let m =
            Message::new("T", "b").with_tags("TagA").with_keys(["a", "b"]).with_delay_level(18).with_property("x", "1");
        let blob = m.encode_properties_for_store(Some(&uniq())).unwrap();
        let map = decode_properties(&blob).unwrap();
        let expected: BTreeMap<String, String> =
            [("x", "1"), ("TAGS", "TagA"), ("KEYS", "a b"), ("DELAY", "18"), ("UNIQ_KEY", UNIQ)]
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect();
        assert_eq!(map, expected);
        // A bare message stores only its id, or nothing without one.
        let bare = Message::new("T", "b");
        assert_eq!(
            bare.encode_properties_for_store(Some(&uniq())).unwrap(),
            format!("UNIQ_KEY\x01{UNIQ}\x02").into_bytes()
        );
        assert!(bare.encode_properties_for_store(None).unwrap().is_empty());
    }

    #[test]
    fn store_encoding_rechecks_reserved_names_and_separators() {
        let reserved = Message::new("T", "b").with_property("DELAY", "1");
        assert!(matches!(reserved.encode_properties_for_store(Some(&uniq())), Err(Error::InvalidArgument(_))));
        let sep = Message::new("T", "b").with_tags("a\x02");
        assert!(matches!(sep.encode_properties_for_store(Some(&uniq())), Err(Error::InvalidArgument(_))));
        let huge = Message::new("T", "b").with_property("p", "v".repeat(MAX_PROPERTIES_LEN));
        assert!(matches!(huge.encode_properties_for_store(Some(&uniq())), Err(Error::MessageTooLarge { .. })));
    }

    #[test]
    fn check_rejects_bad_topic_and_body() {
        assert!(invalid(&Message::new("", "b")).contains("topic"));
        assert!(invalid(&Message::new("t".repeat(MAX_TOPIC_LEN + 1), "b")).contains("topic"));
        assert!(invalid(&Message::new("T", "")).contains("empty"));
        let l = MessageLimits { max_body: 4, ..limits() };
        assert!(Message::new("T", "1234").check(&l).is_ok());
        assert!(matches!(Message::new("T", "12345").check(&l), Err(Error::MessageTooLarge { size: 5, max: 4 })));
        let big = Message::new("T", vec![0u8; DEFAULT_MAX_BODY + 1]);
        assert!(
            matches!(big.check(&limits()), Err(Error::MessageTooLarge { max, .. }) if max == DEFAULT_MAX_BODY as u64)
        );
    }

    #[test]
    fn check_rejects_bad_tags_and_keys() {
        assert!(invalid(&Message::new("T", "b").with_tags("")).contains("tag"));
        assert!(invalid(&Message::new("T", "b").with_tags("a||b")).contains("||"));
        assert!(Message::new("T", "b").with_tags("a|b").check(&limits()).is_ok());
        assert!(invalid(&Message::new("T", "b").with_tags("a\x01")).contains("separator"));
        assert!(invalid(&Message::new("T", "b").with_keys(["ok", ""])).contains("key"));
        assert!(invalid(&Message::new("T", "b").with_key("a b")).contains("key separator"));
        assert!(invalid(&Message::new("T", "b").with_key("a\x02")).contains("separator"));
    }

    #[test]
    fn check_rejects_delay_levels_outside_the_table() {
        assert!(invalid(&Message::new("T", "b").with_delay_level(0)).contains("delay level 0"));
        assert!(invalid(&Message::new("T", "b").with_delay_level(19)).contains("1..=18"));
        assert!(Message::new("T", "b").with_delay_level(1).check(&limits()).is_ok());
        assert!(Message::new("T", "b").with_delay_level(18).check(&limits()).is_ok());
        let l = MessageLimits { max_delay_level: 3, ..limits() };
        assert!(Message::new("T", "b").with_delay_level(4).check(&l).is_err());
    }

    #[test]
    fn check_rejects_bad_user_properties() {
        for name in ["TAGS", "UNIQ_KEY", "REAL_TOPIC", "DLQ_ORIGIN_TOPIC"] {
            assert!(invalid(&Message::new("T", "b").with_property(name, "v")).contains("reserved"), "{name}");
        }
        assert!(invalid(&Message::new("T", "b").with_property("", "v")).contains("empty"));
        assert!(invalid(&Message::new("T", "b").with_property("a\x01", "v")).contains("separator"));
        assert!(invalid(&Message::new("T", "b").with_property("a", "v\x02")).contains("separator"));
        assert!(Message::new("T", "b").with_property("a", "").check(&limits()).is_ok());
    }

    #[test]
    fn check_counts_store_properties_against_the_limit() {
        // Exactly at the limit passes; one byte more fails with the sizes.
        let base = Message::new("T", "b").with_tags("TagA").with_key("k");
        let fixed = base.encode_properties_for_store(Some(&uniq())).unwrap().len() + pair_len("p", "");
        let l = MessageLimits { max_properties: fixed + 10, ..limits() };
        assert!(base.clone().with_property("p", "v".repeat(10)).check(&l).is_ok());
        let err = base.with_property("p", "v".repeat(11)).check(&l);
        assert!(
            matches!(err, Err(Error::MessageTooLarge { size, max }) if size == max + 1 && max == (fixed + 10) as u64)
        );
        // A limit above the record format's bound is capped at that bound.
        let l = MessageLimits { max_properties: usize::MAX, ..limits() };
        let err = Message::new("T", "b").with_property("p", "v".repeat(MAX_PROPERTIES_LEN)).check(&l);
        assert!(matches!(err, Err(Error::MessageTooLarge { max, .. }) if max == MAX_PROPERTIES_LEN as u64));
    }
}
