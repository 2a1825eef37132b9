//! What dispatch needs of a record's properties: its tag (for the unit's
//! tag hash), its keys and unique id (for the index), and the schedule
//! topic's due time and delivery source.
//!
//! A record read back is scanned ([`scan_properties`]): one pass over the
//! blob with a UTF-8 check, about 380 instructions for a bare message. A
//! sender dispatching its own message already holds these values as it
//! encoded them ([`Found::of_sent`]); the two give the same units and
//! index keys (`tests/store_dispatch_own.rs` compares a store filled that
//! way with one rebuilt from the log, byte for byte).

use crate::consumequeue::tag_hash;
use crate::message::properties::{for_each_text_pair, SplitKeys, DELAY_DUE_MS, DELAY_SOURCE, KEYS, TAGS, UNIQ_KEY};
use crate::retry::SCHEDULE_TOPIC;

/// The properties dispatch needs (the last value of a repeated name wins,
/// as when decoding).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Found<'a> {
    tags: Option<&'a str>,
    keys: Keys<'a>,
    uniq: Option<&'a str>,
    due: Option<&'a str>,
    pub(crate) delay_source: Option<&'a str>,
}

/// A record's keys: as stored (one value, keys separated by
/// [`KEY_SEPARATOR`](crate::message::properties::KEY_SEPARATOR)) or as
/// the sender gave them.
#[derive(Debug, Default, Clone, Copy)]
enum Keys<'a> {
    #[default]
    None,
    Joined(&'a str),
    Each(&'a [String]),
}

/// Checks every pair of `props` and picks out what dispatch needs; `None`
/// if a pair does not decode (as `properties::pairs` decodes it). One UTF-8 check
/// for the whole blob, not one per name and value.
pub(crate) fn scan_properties(props: &[u8]) -> Option<Found<'_>> {
    let mut f = Found::default();
    for_each_text_pair(std::str::from_utf8(props).ok()?, |name, v| match name {
        TAGS => f.tags = Some(v),
        KEYS => f.keys = Keys::Joined(v),
        UNIQ_KEY => f.uniq = Some(v),
        DELAY_DUE_MS => f.due = Some(v),
        DELAY_SOURCE => f.delay_source = Some(v),
        _ => {}
    })?;
    Some(f)
}

impl<'a> Found<'a> {
    /// What [`scan_properties`] finds in the blob
    /// `Message::encode_properties_for_store` makes of a message with these
    /// tags and keys and unique id `uniq`, sent to a user topic (not
    /// delayed): the blob's TAGS value is the tag, its KEYS value the keys
    /// joined by `KEY_SEPARATOR` (absent without keys), and user
    /// properties cannot use the reserved names.
    pub(crate) fn of_sent(tags: Option<&'a str>, keys: &'a [String], uniq: &'a str) -> Self {
        let keys = if keys.is_empty() { Keys::None } else { Keys::Each(keys) };
        Self { tags, keys, uniq: Some(uniq), due: None, delay_source: None }
    }

    /// Whether the record has anything to index (a unique id or keys).
    pub(crate) fn has_index_keys(&self) -> bool {
        self.uniq.is_some() || !matches!(self.keys, Keys::None)
    }

    /// The keys the index holds for the record (each as `<topic>#<key>`):
    /// its unique id, then each of its non-empty keys; none in the schedule
    /// topic, whose records are indexed once delivered.
    pub(crate) fn index_keys(&self, topic: &str) -> IndexKeys<'a> {
        if topic == SCHEDULE_TOPIC {
            return IndexKeys::default();
        }
        let (joined, each) = match self.keys {
            Keys::None => ("", &[][..]),
            Keys::Joined(k) => (k, &[][..]),
            Keys::Each(k) => ("", k),
        };
        IndexKeys { uniq: self.uniq, joined: SplitKeys::new(joined), each }
    }

    /// The tag hash of the record's unit: the hash of its tag, except in
    /// the schedule topic, where it is the due time (as RocketMQ), so the
    /// delivery thread plans from units alone.
    pub(crate) fn unit_tag(&self, topic: &str) -> u64 {
        if topic == SCHEDULE_TOPIC {
            due_tag(self.due)
        } else {
            self.tags.map_or(0, tag_hash)
        }
    }
}

/// [`Found::index_keys`]: three slices, small enough to move in registers
/// (a `Chain`/`Split`/`Filter` iterator was moved with a `memcpy` call,
/// about 90 instructions per dispatched message).
#[derive(Debug, Default, Clone)]
pub(crate) struct IndexKeys<'a> {
    uniq: Option<&'a str>,
    /// Keys as stored, not yet returned.
    joined: SplitKeys<'a>,
    /// Keys as the sender gave them, not yet returned.
    each: &'a [String],
}

impl<'a> Iterator for IndexKeys<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if let Some(uniq) = self.uniq.take() {
            return Some(uniq);
        }
        if let Some(key) = self.joined.next() {
            return Some(key);
        }
        while let Some((key, rest)) = self.each.split_first() {
            self.each = rest;
            if !key.is_empty() {
                return Some(key);
            }
        }
        None
    }
}

/// A schedule-topic unit's tag hash: the record's `DELAY_DUE_MS` value
/// (0 if absent or not a number). The delivery thread checks units with
/// the same function, so a rebuilt unit always passes its check.
pub(crate) fn due_tag(due: Option<&str>) -> u64 {
    due.and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, MessageId};

    /// A sent message's fields give what scanning its stored blob gives.
    #[test]
    fn of_sent_matches_the_scan_of_the_encoded_blob() {
        let id: MessageId = "7F0000010001000000010000000A0001".parse().unwrap();
        let messages = [
            Message::new("t", "b"),
            Message::new("t", "b").with_tags("TagA"),
            Message::new("t", "b").with_keys(["k1"]),
            Message::new("t", "b").with_tags("T").with_keys(["k1", "k2", "k3"]).with_property("p", "v"),
            Message::new("t", "b").with_property("KEYSX", "x").with_property("a", "TAGS"),
        ];
        for m in &messages {
            let blob = m.encode_properties_for_store(Some(&id)).unwrap();
            let scanned = scan_properties(&blob).unwrap();
            let sent = Found::of_sent(m.tags(), m.keys(), &id);
            for topic in ["t", SCHEDULE_TOPIC] {
                assert_eq!(sent.index_keys(topic).collect::<Vec<_>>(), scanned.index_keys(topic).collect::<Vec<_>>());
            }
            assert_eq!(sent.unit_tag("t"), scanned.unit_tag("t"), "{m:?}");
            assert_eq!(sent.has_index_keys(), scanned.has_index_keys());
            assert_eq!((sent.due, sent.delay_source), (scanned.due, scanned.delay_source));
        }
        // Empty keys (separators side by side, at either end, or empty
        // strings from the sender) are not indexed; order is kept.
        fn keys<'a>(f: Found<'a>, topic: &str) -> Vec<&'a str> {
            f.index_keys(topic).collect()
        }
        let stored = scan_properties(b"UNIQ_KEY\x01u\x02KEYS\x01 a  b \x02").unwrap();
        assert_eq!(keys(stored, "t"), ["u", "a", "b"]);
        let given = ["".to_string(), "a".to_string(), "".to_string(), "b c".to_string()];
        assert_eq!(keys(Found::of_sent(None, &given, "u"), "t"), ["u", "a", "b c"]);
        assert_eq!(keys(Found::of_sent(None, &[], "u"), "t"), ["u"]);
        assert!(keys(stored, SCHEDULE_TOPIC).is_empty());
        // A stored blob without any of them.
        let none = scan_properties(b"").unwrap();
        assert!(!none.has_index_keys() && none.index_keys("t").next().is_none() && none.unit_tag("t") == 0);
    }
}
