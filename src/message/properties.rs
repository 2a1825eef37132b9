//! RocketMQ's properties encoding and the reserved property names.
//!
//! A properties blob is a sequence of `name 0x01 value 0x02` pairs, the
//! format RocketMQ's `MessageDecoder.messageProperties2String` writes into
//! every commit-log record. Names and values are UTF-8 and may not contain
//! either separator byte; names may not be empty. The encoder writes pairs in
//! name order (a `BTreeMap`), so equal maps give equal bytes.
//!
//! ```
//! use mqstore::message::properties::{decode_properties, encode_properties, TAGS};
//! use std::collections::BTreeMap;
//! let mut map = BTreeMap::new();
//! map.insert(TAGS.to_string(), "TagA".to_string());
//! let blob = encode_properties(&map)?;
//! assert_eq!(blob, b"TAGS\x01TagA\x02");
//! assert_eq!(decode_properties(&blob).ok(), Some(map));
//! # Ok::<(), mqstore::Error>(())
//! ```

use crate::error::{CorruptionKind, Error, Result};
use std::collections::BTreeMap;

/// Byte between a property's name and its value (RocketMQ
/// `MessageDecoder.NAME_VALUE_SEPARATOR`, char 1).
pub const NAME_VALUE_SEPARATOR: u8 = 0x01;
/// Byte after each property's value (RocketMQ
/// `MessageDecoder.PROPERTY_SEPARATOR`, char 2).
pub const PROPERTY_SEPARATOR: u8 = 0x02;
/// Separator between the keys inside the [`KEYS`] property (RocketMQ
/// `MessageConst.KEY_SEPARATOR`).
pub const KEY_SEPARATOR: &str = " ";

/// The keys of a [`KEYS`] value: split on [`KEY_SEPARATOR`], empty ones
/// (separators side by side or at either end) skipped, as RocketMQ reads
/// them. Two slices of state, so it moves in registers: dispatch builds
/// one per message.
#[derive(Debug, Default, Clone)]
pub(crate) struct SplitKeys<'a>(&'a str);

impl<'a> SplitKeys<'a> {
    /// The keys of `joined` (a `KEYS` value; `""` has none).
    pub(crate) fn new(joined: &'a str) -> Self {
        Self(joined)
    }
}

impl<'a> Iterator for SplitKeys<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        while !self.0.is_empty() {
            let (key, rest) = self.0.split_once(KEY_SEPARATOR).unwrap_or((self.0, ""));
            self.0 = rest;
            if !key.is_empty() {
                return Some(key);
            }
        }
        None
    }
}

/// The message's tag, used for consume-queue tag hashes and filtering.
pub const TAGS: &str = "TAGS";
/// The message's business keys, joined by [`KEY_SEPARATOR`]; each is indexed.
pub const KEYS: &str = "KEYS";
/// Delay level (decimal, 1-based) requested by the producer.
pub const DELAY: &str = "DELAY";
/// Whether the producer waits for the store to confirm (RocketMQ
/// `PROPERTY_WAIT_STORE_MSG_OK`).
pub const WAIT: &str = "WAIT";
/// The producer-side unique message id (RocketMQ
/// `PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX`); what a send returns as `msgId`.
pub const UNIQ_KEY: &str = "UNIQ_KEY";
/// Original topic of a message sent back for retry (set on the first hop only).
pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
/// Topic a delayed message is delivered to once due.
pub const REAL_TOPIC: &str = "REAL_TOPIC";
/// Queue id a delayed message is delivered to once due.
pub const REAL_QID: &str = "REAL_QID";
/// Id of the first message of a retry chain, kept across hops.
pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
/// Reconsume count carried by a message sent back for retry.
pub const RECONSUME_TIME: &str = "RECONSUME_TIME";
/// Most reconsume attempts before the message goes to the dead-letter queue.
pub const MAX_RECONSUME_TIMES: &str = "MAX_RECONSUME_TIMES";
/// When a consumer started processing the message (ms since the epoch).
pub const CONSUME_START_TIME: &str = "CONSUME_START_TIME";
/// Absolute delivery time (ms since the epoch) the producer asked for with
/// [`Message::with_deliver_at`](super::Message::with_deliver_at) (RocketMQ
/// 5's `TIMER_DELIVER_MS`).
pub const TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
/// When a record of the schedule topic is due (ms since the epoch); also
/// its consume-queue unit's tag hash, so the delivery thread reads due
/// times without reading records.
pub const DELAY_DUE_MS: &str = "DELAY_DUE_MS";
/// On a record the delivery thread wrote: the schedule entry it came from,
/// `<level>:<queue offset>`. Recovery reads it to know which entries were
/// delivered, so a crash neither loses nor repeats a delivery.
pub const DELAY_SOURCE: &str = "DELAY_SOURCE";
/// On a dead-lettered record: the record whose failures sent it there,
/// `<topic>:<queue id>:<queue offset>` (for people; deduplication uses the
/// unique id and [`DLQ_RESENDS`]).
pub const DLQ_SOURCE: &str = "DLQ_SOURCE";
/// How many times the message was resent from a dead-letter queue (absent:
/// never). A message is dead-lettered at most once per value, so a
/// duplicate delivery after a crash never dead-letters it twice, while a
/// resent message that fails again is dead-lettered again.
pub const DLQ_RESENDS: &str = "DLQ_RESENDS";
/// Original topic of a dead-lettered message.
pub const DLQ_ORIGIN_TOPIC: &str = "DLQ_ORIGIN_TOPIC";
/// Original message id of a dead-lettered message.
pub const DLQ_ORIGIN_MESSAGE_ID: &str = "DLQ_ORIGIN_MESSAGE_ID";

/// Every name the store sets itself; user properties may not use them
/// (RocketMQ `MessageConst.STRING_HASH_SET`, restricted to what this store uses).
pub const RESERVED_PROPERTIES: &[&str] = &[
    TAGS,
    KEYS,
    DELAY,
    WAIT,
    UNIQ_KEY,
    RETRY_TOPIC,
    REAL_TOPIC,
    REAL_QID,
    ORIGIN_MESSAGE_ID,
    RECONSUME_TIME,
    MAX_RECONSUME_TIMES,
    CONSUME_START_TIME,
    DLQ_ORIGIN_TOPIC,
    DLQ_ORIGIN_MESSAGE_ID,
    TIMER_DELIVER_MS,
    DELAY_DUE_MS,
    DELAY_SOURCE,
    DLQ_SOURCE,
    DLQ_RESENDS,
];

/// True when `name` is one of [`RESERVED_PROPERTIES`].
#[must_use]
pub fn is_reserved(name: &str) -> bool {
    RESERVED_PROPERTIES.contains(&name)
}

/// Encodes `map` as `name 0x01 value 0x02` pairs, in name order.
///
/// Fails with [`Error::InvalidArgument`] for an empty name or a name or value
/// containing a separator byte: such a pair could not be decoded back.
/// Reserved names are accepted here (the store encodes its own properties
/// with this function); [`Message::check`](super::Message::check) is where
/// user properties are kept off them.
pub fn encode_properties(map: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let len = map.iter().map(|(k, v)| pair_len(k, v)).sum();
    let mut out = Vec::with_capacity(len);
    for (k, v) in map {
        push_pair(&mut out, k, v)?;
    }
    Ok(out)
}

/// Decodes a properties blob.
///
/// Like RocketMQ, a missing separator after the last pair is tolerated and a
/// repeated name keeps its last value. Anything else that the encoder could
/// not have produced is an error rather than silently skipped (RocketMQ
/// drops such pairs): a piece without a name/value separator, an empty name,
/// a value containing `0x01`, or non-UTF-8 text. Never panics.
pub fn decode_properties(bytes: &[u8]) -> Result<BTreeMap<String, String>, CorruptionKind> {
    let mut map = BTreeMap::new();
    for pair in pairs(bytes) {
        let (name, value) = pair?;
        map.insert(name.to_owned(), value.to_owned());
    }
    Ok(map)
}

/// The pairs of an encoded properties blob in stored order, without
/// allocating; each is checked as [`decode_properties`] checks it. A name
/// may repeat (the last one wins when decoding into a map).
pub(crate) fn pairs(bytes: &[u8]) -> impl Iterator<Item = Result<(&str, &str), CorruptionKind>> {
    let body = bytes.strip_suffix(&[PROPERTY_SEPARATOR]).unwrap_or(bytes);
    // An empty blob has no pairs (splitting it would yield one empty piece).
    let pieces = if bytes.is_empty() { None } else { Some(body.split(|&b| b == PROPERTY_SEPARATOR)) };
    pieces.into_iter().flatten().map(|piece| {
        let bad = CorruptionKind::InvalidField { field: "properties" };
        let sep = piece.iter().position(|&b| b == NAME_VALUE_SEPARATOR).ok_or(bad.clone())?;
        let (name, value) = (&piece[..sep], &piece[sep + 1..]);
        if name.is_empty() || value.contains(&NAME_VALUE_SEPARATOR) {
            return Err(bad);
        }
        let name = std::str::from_utf8(name).map_err(|_| CorruptionKind::InvalidField { field: "property name" })?;
        let value = std::str::from_utf8(value).map_err(|_| CorruptionKind::InvalidField { field: "property value" })?;
        Ok((name, value))
    })
}

/// Calls `f` with each pair of `text`, a whole blob already known to be
/// UTF-8, in stored order, and returns `Some` exactly when [`pairs`] would
/// accept every pair (it stops at the first one [`pairs`] rejects). The
/// separators are ASCII, so a blob is UTF-8 exactly when every name and
/// value in it is: one `from_utf8` of the whole blob replaces one per name
/// and per value. The separators are found eight bytes at a time and only
/// they are visited, as [`check`] does (dispatch scans the blob of every
/// record it reads back, and the delivery thread every delayed one's).
pub(crate) fn for_each_text_pair<'a>(text: &'a str, mut f: impl FnMut(&'a str, &'a str)) -> Option<()> {
    let b = text.as_bytes();
    // An empty blob has no pairs; otherwise the last piece ends with the
    // blob, with or without its separator.
    if b.is_empty() {
        return Some(());
    }
    let body = b.strip_suffix(&[PROPERTY_SEPARATOR]).unwrap_or(b);
    let mut framing = Framing::default();
    let mut piece = |pos: usize, c: u8| -> Option<()> {
        if let Some((start, sep)) = framing.at(pos, c).ok()? {
            f(text.get(start..sep)?, text.get(sep + 1..pos)?);
        }
        Some(())
    };
    let (framed, _) = for_each_separator(body, |pos, c| piece(pos, c).ok_or(()));
    // The last piece ends at the body's end, as if a separator stood there.
    framed.ok().and_then(|()| piece(body.len(), PROPERTY_SEPARATOR))
}

/// `Ok` exactly when every item of [`pairs`] is, else the first item's
/// error; cheaper, for the read path, which checks every message it hands
/// out. The separators are ASCII, so a blob that is UTF-8 as a whole splits
/// into UTF-8 names and values, and one pass over the bytes checks the
/// framing; only a blob that is not UTF-8 takes [`pairs`] to name its first
/// bad field.
pub(crate) fn check(bytes: &[u8]) -> Result<(), CorruptionKind> {
    if bytes.is_empty() {
        return Ok(());
    }
    let (framed, high) = frame(bytes);
    // Blobs are ASCII in practice: the framing pass has seen every byte's
    // top bit, unless it stopped early at an error.
    let ascii = if framed.is_ok() { high & (SPLAT << 7) == 0 } else { bytes.is_ascii() };
    if ascii || std::str::from_utf8(bytes).is_ok() {
        framed
    } else {
        pairs(bytes).try_for_each(|p| p.map(|_| ()))
    }
}

/// The framing verdict of [`check`] on a non-empty blob, and the OR of the
/// words it read (their top bits tell whether the blob is ASCII, when the
/// verdict is `Ok`).
fn frame(bytes: &[u8]) -> (Result<(), CorruptionKind>, u64) {
    let body = bytes.strip_suffix(&[PROPERTY_SEPARATOR]).unwrap_or(bytes);
    let mut framing = Framing::default();
    let (framed, high) = for_each_separator(body, |pos, b| framing.at(pos, b).map(drop));
    // The last piece ends with the blob (and a stripped separator's top
    // bit is clear).
    (framed.and_then(|()| framing.at(body.len(), PROPERTY_SEPARATOR).map(drop)), high)
}

/// Calls `f` with the position and value of each separator byte of
/// `body`, in order, until it fails; returns how that ended and the OR of
/// the bytes read (as big-endian words: their top bits tell whether the
/// bytes read were ASCII). Eight bytes at a time, visiting only the
/// separators: the grammar is about where they are, every other byte just
/// belongs to a name or a value.
#[inline]
fn for_each_separator<E>(body: &[u8], mut f: impl FnMut(usize, u8) -> Result<(), E>) -> (Result<(), E>, u64) {
    let mut high = 0;
    let mut words = body.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let x = word(w);
        high |= x;
        let mut m = separator_bytes(x);
        while m != 0 {
            // Loaded big-endian: the leftmost set byte comes first.
            let i = (m.leading_zeros() / 8) as usize;
            if let Err(e) = f(at + i, w[i]) {
                return (Err(e), high);
            }
            m &= !(0x80 << (56 - 8 * i));
        }
        at += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        high |= u64::from(b);
        if b == NAME_VALUE_SEPARATOR || b == PROPERTY_SEPARATOR {
            if let Err(e) = f(at + i, b) {
                return (Err(e), high);
            }
        }
    }
    (Ok(()), high)
}

/// `0x01` in every byte of a word.
const SPLAT: u64 = u64::from_be_bytes([1; 8]);

/// Whether the 8 bytes `w` hold either separator, in a few word operations.
#[inline]
fn word_has_separator(w: &[u8]) -> bool {
    separator_bytes(word(w)) != 0
}

/// The 8 bytes `w` loaded big-endian, so `w[0]` is the highest byte.
#[inline]
fn word(w: &[u8]) -> u64 {
    // Callers pass exactly 8 bytes (`chunks_exact`): one load.
    u64::from_be_bytes(w.try_into().unwrap_or_default())
}

/// `0x80` in exactly the bytes of word `x` that are a separator.
#[inline]
fn separator_bytes(x: u64) -> u64 {
    zero_bytes(x ^ (SPLAT * u64::from(NAME_VALUE_SEPARATOR))) | zero_bytes(x ^ (SPLAT * u64::from(PROPERTY_SEPARATOR)))
}

/// `0x80` in exactly the bytes of `x` that are zero: adding `0x7f` to the
/// low seven bits of a byte carries into its top bit unless they are all
/// zero, and no carry crosses into the next byte.
#[inline]
fn zero_bytes(x: u64) -> u64 {
    const LOW7: u64 = u64::from_be_bytes([0x7f; 8]);
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

/// Where [`check`] and [`for_each_text_pair`] are in the `name 0x01 value
/// 0x02` grammar: each piece between property separators has exactly one
/// name/value separator, after a non-empty name.
#[derive(Default)]
struct Framing {
    /// Where the current piece starts.
    start: usize,
    /// The current piece's name/value separator, once seen.
    sep: Option<usize>,
}

impl Framing {
    /// Separator `b` at position `pos`; the bytes since the previous one
    /// are neither. A property separator ends a piece: returns its start
    /// and its name/value separator (name `start..sep`, value
    /// `sep + 1..pos`).
    #[inline]
    fn at(&mut self, pos: usize, b: u8) -> Result<Option<(usize, usize)>, CorruptionKind> {
        let bad = CorruptionKind::InvalidField { field: "properties" };
        if b == NAME_VALUE_SEPARATOR {
            // A second one, or an empty name.
            if self.sep.is_some() || pos == self.start {
                return Err(bad);
            }
            self.sep = Some(pos);
            Ok(None)
        } else if b == PROPERTY_SEPARATOR {
            let sep = self.sep.ok_or(bad)?;
            let piece = (self.start, sep);
            *self = Self { start: pos + 1, sep: None };
            Ok(Some(piece))
        } else {
            // Not a separator: callers pass none, and it would be part of
            // a name or value anyway.
            Ok(None)
        }
    }
}

/// The value of property `name` in a blob that [`pairs`] accepts in full
/// (the last occurrence, as when decoding into a map).
pub(crate) fn lookup<'a>(bytes: &'a [u8], name: &str) -> Option<&'a str> {
    // Stored blobs are valid (checked when sent and when read): one pass
    // that visits only the separators finds the last pair of that name.
    // It accepts a blob exactly when every pair decodes, and then sees
    // the same pairs; any other blob takes the pair-by-pair walk, which
    // skips the pairs that do not decode.
    if let Ok(text) = std::str::from_utf8(bytes) {
        let mut found = None;
        let all = for_each_text_pair(text, |n, v| {
            if n == name {
                found = Some(v);
            }
        });
        if all.is_some() {
            return found;
        }
    }
    pairs(bytes).filter_map(Result::ok).filter(|(n, _)| *n == name).last().map(|(_, v)| v)
}

/// Encoded size of one pair, separators included.
pub(crate) fn pair_len(name: &str, value: &str) -> usize {
    name.len() + value.len() + 2
}

/// Checks that a pair can be encoded (see [`encode_properties`]).
pub(crate) fn validate_pair(name: &str, value: &str) -> Result<()> {
    let has_sep = |s: &str| has_separator(s.as_bytes());
    if name.is_empty() {
        return Err(Error::InvalidArgument("property name is empty".to_string()));
    }
    if has_sep(name) {
        return Err(Error::InvalidArgument(format!("property name {name:?} contains a separator byte 0x01/0x02")));
    }
    if has_sep(value) {
        return Err(Error::InvalidArgument(format!("value of property {name:?} contains a separator byte 0x01/0x02")));
    }
    Ok(())
}

/// Whether `b` holds either separator byte; eight bytes at a time (every
/// send checks its unique id and properties).
fn has_separator(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(8);
    let hit = words.any(word_has_separator);
    hit || words.remainder().iter().any(|&b| b == NAME_VALUE_SEPARATOR || b == PROPERTY_SEPARATOR)
}

/// Validates and appends one pair to `out`.
pub(crate) fn push_pair(out: &mut Vec<u8>, name: &str, value: &str) -> Result<()> {
    validate_pair(name, value)?;
    out.reserve(pair_len(name, value));
    out.extend_from_slice(name.as_bytes());
    out.push(NAME_VALUE_SEPARATOR);
    out.extend_from_slice(value.as_bytes());
    out.push(PROPERTY_SEPARATOR);
    Ok(())
}

/// [`push_pair`] of a name known to be valid and a message id, whose hex
/// digits hold no separator.
pub(crate) fn push_hex_pair(out: &mut Vec<u8>, name: &str, id: &super::MessageId) {
    debug_assert!(validate_pair(name, id).is_ok());
    out.reserve(pair_len(name, id));
    out.extend_from_slice(name.as_bytes());
    out.push(NAME_VALUE_SEPARATOR);
    out.extend_from_slice(id.as_bytes());
    out.push(PROPERTY_SEPARATOR);
}

/// A copy of the blob `bytes` without the pairs named in `remove` or in
/// `add`, followed by the pairs of `add`: how the store re-addresses a
/// stored message (delayed delivery, send-back, dead-lettering). Fails with
/// [`Error::InvalidArgument`] if a pair does not decode or an added one is
/// invalid.
pub(crate) fn rewrite(bytes: &[u8], remove: &[&str], add: &[(&str, &str)]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() + add.iter().map(|(k, v)| pair_len(k, v)).sum::<usize>());
    for pair in pairs(bytes) {
        let (name, value) =
            pair.map_err(|k| Error::InvalidArgument(format!("stored properties do not decode: {k:?}")))?;
        if remove.contains(&name) || add.iter().any(|(k, _)| *k == name) {
            continue;
        }
        push_pair(&mut out, name, value)?;
    }
    for (k, v) in add {
        push_pair(&mut out, k, v)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SplitKeys` yields what splitting on the separator and dropping
    /// empty pieces yields, on every short mix of keys and separators.
    #[test]
    fn split_keys_skips_empty_keys_and_keeps_order() {
        assert_eq!(SplitKeys::new(" a  bc ").collect::<Vec<_>>(), ["a", "bc"]);
        assert_eq!(SplitKeys::new("").count() + SplitKeys::new("   ").count(), 0);
        for n in 0..=6u32 {
            for mask in 0..(1u32 << n) {
                let joined: String = (0..n).map(|i| if mask & (1 << i) != 0 { ' ' } else { 'k' }).collect();
                let want: Vec<&str> = joined.split(KEY_SEPARATOR).filter(|k| !k.is_empty()).collect();
                assert_eq!(SplitKeys::new(&joined).collect::<Vec<_>>(), want, "{joined:?}");
            }
        }
    }

    #[test]
    fn rewrite_replaces_and_removes() {
        let mut b = Vec::new();
        push_pair(&mut b, "A", "1").unwrap();
        push_pair(&mut b, "B", "2").unwrap();
        push_pair(&mut b, "C", "3").unwrap();
        let out = rewrite(&b, &["B"], &[("C", "9"), ("D", "4")]).unwrap();
        let got: Vec<(&str, &str)> = pairs(&out).map(|p| p.unwrap()).collect();
        assert_eq!(got, [("A", "1"), ("C", "9"), ("D", "4")]);
    }

    /// Fixed-seed xorshift; failures print the seed and iteration.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// A random string without separators: ASCII, some multi-byte chars.
    fn random_text(rng: &mut Rng, min: u64) -> String {
        const ALPHABET: &[char] = &['a', 'Z', '0', ' ', '%', '#', '|', '\u{3}', 'é', '中', '😀', '\u{7f}'];
        let len = min + rng.below(12);
        (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize]).collect()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    #[test]
    fn encodes_in_name_order_with_trailing_separator() {
        let m = map(&[("b", "2"), ("a", "1"), ("KEYS", "k1 k2")]);
        assert_eq!(encode_properties(&m).unwrap(), b"KEYS\x01k1 k2\x02a\x011\x02b\x012\x02");
        assert_eq!(encode_properties(&BTreeMap::new()).unwrap(), b"");
    }

    #[test]
    fn random_maps_round_trip() {
        let seed = 0x5EED_0001_u64;
        let mut rng = Rng(seed);
        for i in 0..2_000 {
            let m: BTreeMap<String, String> =
                (0..rng.below(8)).map(|_| (random_text(&mut rng, 1), random_text(&mut rng, 0))).collect();
            let blob = encode_properties(&m).unwrap();
            assert_eq!(blob.len(), m.iter().map(|(k, v)| pair_len(k, v)).sum::<usize>());
            assert_eq!(decode_properties(&blob), Ok(m.clone()), "seed {seed:#x} iteration {i}");
            // RocketMQ readers accept a blob whose last separator is missing.
            if let Some(short) = blob.strip_suffix(&[PROPERTY_SEPARATOR]) {
                assert_eq!(decode_properties(short), Ok(m), "seed {seed:#x} iteration {i}");
            }
        }
    }

    #[test]
    fn decode_never_panics_on_random_bytes() {
        let seed = 0x5EED_0002_u64;
        let mut rng = Rng(seed);
        // Bias towards the separator bytes so the structural paths are hit.
        const BYTES: &[u8] = &[0x01, 0x02, b'a', b'b', 0xff, 0xc3, 0xa9, 0x00];
        for _ in 0..20_000 {
            let len = rng.below(24) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| BYTES[rng.below(BYTES.len() as u64) as usize]).collect();
            if let Ok(m) = decode_properties(&bytes) {
                // Whatever decodes must re-encode to something that decodes the same.
                let again = encode_properties(&m).unwrap();
                assert_eq!(decode_properties(&again), Ok(m), "seed {seed:#x} input {bytes:?}");
            }
        }
    }

    #[test]
    fn decode_rejects_what_the_encoder_never_writes() {
        let structure = Err(CorruptionKind::InvalidField { field: "properties" });
        assert_eq!(decode_properties(b"novalue\x02"), structure);
        assert_eq!(decode_properties(b"\x01v\x02"), structure);
        assert_eq!(decode_properties(b"a\x011\x02\x02"), structure);
        assert_eq!(decode_properties(b"\x02"), structure);
        assert_eq!(decode_properties(b"a\x01x\x01y\x02"), structure);
        assert_eq!(decode_properties(b"\xff\x01v\x02"), Err(CorruptionKind::InvalidField { field: "property name" }));
        assert_eq!(decode_properties(b"k\x01\xc3\x02"), Err(CorruptionKind::InvalidField { field: "property value" }));
    }

    #[test]
    fn decode_edge_cases_match_rocketmq() {
        assert_eq!(decode_properties(b""), Ok(BTreeMap::new()));
        assert_eq!(decode_properties(b"a\x01"), Ok(map(&[("a", "")])));
        assert_eq!(decode_properties(b"a\x011\x02a\x012\x02"), Ok(map(&[("a", "2")])));
        assert_eq!(decode_properties(b"a\x011\x02b\x012"), Ok(map(&[("a", "1"), ("b", "2")])));
    }

    #[test]
    fn encode_rejects_unencodable_pairs() {
        for (k, v) in [("", "v"), ("a\x01", "v"), ("a\x02b", "v"), ("k", "x\x01"), ("k", "\x02")] {
            let err = encode_properties(&map(&[(k, v)])).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{k:?}={v:?}: {err}");
        }
    }

    #[test]
    fn reserved_names_use_rocketmq_spellings() {
        assert!(is_reserved("UNIQ_KEY") && is_reserved("REAL_QID") && is_reserved("CONSUME_START_TIME"));
        assert!(!is_reserved("tags") && !is_reserved("my-prop"));
        assert_eq!(RESERVED_PROPERTIES.len(), 19);
    }

    /// `check` gives the verdict of running `pairs` to its first error, on
    /// every blob of up to 6 bytes over an alphabet with both separators,
    /// an ASCII letter and bytes that break UTF-8.
    #[test]
    fn check_agrees_with_pairs_exhaustively() {
        let alphabet = [b'a', NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR, 0xff, 0xc3, 0xa9];
        let mut blob = Vec::new();
        for len in 0..=6u32 {
            for code in 0..alphabet.len().pow(len) {
                blob.clear();
                let mut c = code;
                for _ in 0..len {
                    blob.push(alphabet[c % alphabet.len()]);
                    c /= alphabet.len();
                }
                let slow = pairs(&blob).try_for_each(|p| p.map(|_| ()));
                assert_eq!(check(&blob), slow, "{blob:?}");
                assert_text_pairs_agree(&blob);
            }
        }
    }

    /// `has_separator` finds either separator at every position of blobs
    /// up to 24 bytes long (the word loop and the remainder), and nothing
    /// in blobs without one, including bytes next to the separators'.
    #[test]
    fn has_separator_finds_each_position() {
        for len in 0..=24 {
            for fill in [b'a', 0x00, 0x03, 0x81, 0xff] {
                let mut b = vec![fill; len];
                assert!(!has_separator(&b), "{b:?}");
                for at in 0..len {
                    for sep in [NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR] {
                        b[at] = sep;
                        assert!(has_separator(&b), "{b:?}");
                        b[at] = fill;
                    }
                }
            }
        }
    }

    /// `for_each_text_pair` on a blob that is UTF-8 accepts it exactly
    /// when `pairs` accepts every pair, and then sees the same pairs; a blob
    /// that is not UTF-8 has an error in `pairs`.
    fn assert_text_pairs_agree(blob: &[u8]) {
        let slow: Result<Vec<(&str, &str)>, _> = pairs(blob).collect();
        match std::str::from_utf8(blob) {
            Ok(text) => {
                let mut fast = Vec::new();
                let ok = for_each_text_pair(text, |k, v| fast.push((k, v)));
                assert_eq!(ok.map(|()| fast), slow.ok(), "{blob:?}");
            }
            Err(_) => assert!(slow.is_err(), "{blob:?}"),
        }
        // `lookup` answers as the pair-by-pair walk does, whatever the blob.
        let names: Vec<&str> = pairs(blob).filter_map(Result::ok).map(|(n, _)| n).chain(["a", "x"]).collect();
        for name in names {
            let walk = pairs(blob).filter_map(Result::ok).filter(|(n, _)| *n == name).last().map(|(_, v)| v);
            assert_eq!(lookup(blob, name), walk, "{name:?} in {blob:?}");
        }
    }

    /// The same on longer blobs (`check` reads eight bytes at a time):
    /// mostly letters, so many words hold no separator, with separators and
    /// non-UTF-8 bytes at random places, and valid encodings with one byte
    /// changed.
    #[test]
    fn check_agrees_with_pairs_on_long_blobs() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let rare = [NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR, 0xff, 0xc3, 0xa9];
        let mut seen_ok = 0;
        for i in 0..20_000u64 {
            let blob: Vec<u8> = if i % 2 == 0 {
                let len = rng.below(48);
                (0..len).map(|_| if rng.below(8) == 0 { rare[rng.below(5) as usize] } else { b'a' }).collect()
            } else {
                let pairs: Vec<(String, String)> =
                    (0..1 + rng.below(3)).map(|_| (random_text(&mut rng, 1), random_text(&mut rng, 0))).collect();
                let mut out = Vec::new();
                for (k, v) in &pairs {
                    push_pair(&mut out, k, v).unwrap();
                }
                if i % 4 == 1 && !out.is_empty() {
                    let at = rng.below(out.len() as u64) as usize;
                    out[at] = rare[rng.below(5) as usize];
                }
                out
            };
            let slow = pairs(&blob).try_for_each(|p| p.map(|_| ()));
            seen_ok += usize::from(slow.is_ok());
            assert_eq!(check(&blob), slow, "{blob:?}");
            assert_text_pairs_agree(&blob);
        }
        assert!(seen_ok > 5_000, "too few valid blobs: {seen_ok}");
    }
}
