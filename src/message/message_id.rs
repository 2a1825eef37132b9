//! [`MessageId`]: either message id held inline as its 32 hex characters.
//!
//! Both ids are made on every send (the unique id for the record's
//! properties, the offset id for the [`crate::store::SendResult`]). As
//! `String`s they cost two heap allocations per message, about a sixth of
//! a batched 128-byte send's instructions; inline they cost none, and the
//! type still reads as a `&str` wherever one is expected.

use super::id::{HEX_PAIRS, ID_LEN, UNIQUE_ID_HEX_LEN};
use crate::error::Error;
use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::str::FromStr;

/// A message id in RocketMQ's spelling: 16 bytes written as 32 uppercase
/// hex characters, stored inline (`Copy`, no allocation).
///
/// It dereferences to `&str`, compares equal to strings with the same
/// characters, and converts into a `String`; [`FromStr`] accepts either
/// case and keeps the canonical uppercase spelling.
///
/// ```
/// use mqstore::message::MessageId;
/// let id: MessageId = "0a000007002acafef00d0000007b0000".parse()?;
/// assert_eq!(id, "0A000007002ACAFEF00D0000007B0000");
/// assert_eq!(id.to_bytes()[..4], [10, 0, 0, 7]);
/// assert_eq!(id.len(), 32); // through `Deref<Target = str>`
/// assert!("not an id".parse::<MessageId>().is_err());
/// # Ok::<(), mqstore::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MessageId {
    /// Invariant: ASCII `0-9A-F` only, so it is always valid UTF-8.
    hex: [u8; UNIQUE_ID_HEX_LEN],
}

impl MessageId {
    /// The id of these 16 bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        let mut hex = [0u8; UNIQUE_ID_HEX_LEN];
        for (out, &b) in hex.chunks_exact_mut(2).zip(&bytes) {
            out.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
        }
        Self { hex }
    }

    /// The 16 bytes the id spells.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; ID_LEN] {
        let mut out = [0u8; ID_LEN];
        for (o, pair) in out.iter_mut().zip(self.hex.chunks_exact(2)) {
            *o = (nibble(pair[0]) << 4) | nibble(pair[1]);
        }
        out
    }

    /// The 32 hex characters.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // A send reads each id as a string three times (its property,
        // the index key, the result), and `from_utf8` cost about 50
        // instructions each. Debug builds still check the invariant.
        debug_assert!(self.hex.iter().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()));
        // SAFETY: `hex` holds only ASCII `0-9A-F` (the invariant every
        // constructor keeps: `from_bytes` writes table pairs, `from_str`
        // writes uppercase digits it parsed), which is valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.hex) }
    }
}

/// The value of one uppercase hex digit (the type's invariant).
fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'A' + 10,
    }
}

impl FromStr for MessageId {
    type Err = Error;

    /// Exactly 32 hex characters, either case.
    fn from_str(s: &str) -> Result<Self, Error> {
        let b = s.as_bytes();
        if b.len() != UNIQUE_ID_HEX_LEN || !b.iter().all(u8::is_ascii_hexdigit) {
            return Err(Error::InvalidArgument(format!("message id {s:?} is not {UNIQUE_ID_HEX_LEN} hex characters")));
        }
        let mut hex = [0u8; UNIQUE_ID_HEX_LEN];
        for (h, c) in hex.iter_mut().zip(b) {
            *h = c.to_ascii_uppercase();
        }
        Ok(Self { hex })
    }
}

impl Deref for MessageId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for MessageId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Sound because `Eq`, `Ord` and `Hash` all agree with `str`'s.
impl Borrow<str> for MessageId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for MessageId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the `str`, so that `Borrow<str>` lookups in hashed sets work.
        self.as_str().hash(state);
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<MessageId> for String {
    fn from(id: MessageId) -> String {
        id.as_str().to_owned()
    }
}

impl PartialEq<str> for MessageId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MessageId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for MessageId {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<MessageId> for str {
    fn eq(&self, other: &MessageId) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<MessageId> for &str {
    fn eq(&self, other: &MessageId) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<MessageId> for String {
    fn eq(&self, other: &MessageId) -> bool {
        self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn bytes_round_trip_through_the_hex_form() {
        let mut b = [0u8; ID_LEN];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(37).wrapping_add(0xA5);
        }
        let id = MessageId::from_bytes(b);
        assert_eq!(id.to_bytes(), b);
        assert_eq!(id.as_str(), b.iter().map(|x| format!("{x:02X}")).collect::<String>());
        assert_eq!(id.as_str().parse::<MessageId>().unwrap(), id);
    }

    #[test]
    fn parsing_accepts_either_case_and_nothing_else() {
        let upper = "0123456789ABCDEFFEDCBA9876543210";
        let id: MessageId = upper.to_lowercase().parse().unwrap();
        assert_eq!(id, upper);
        for bad in
            ["", "0123", &format!("{upper}0"), "0123456789ABCDEFFEDCBA987654321G", "é123456789ABCDEFFEDCBA98765432"]
        {
            assert!(bad.parse::<MessageId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn behaves_as_its_string() {
        let id = MessageId::from_bytes([0xAB; ID_LEN]);
        let s = "AB".repeat(ID_LEN);
        assert_eq!(id, s);
        assert_eq!(s, id);
        assert_eq!(id, s.as_str());
        assert_eq!(s.as_str(), id);
        assert_eq!(format!("{id}"), s);
        assert_eq!(format!("{id:?}"), format!("{s:?}"));
        assert_eq!(String::from(id), s);
        // Hashed and ordered as the string, so `Borrow<str>` lookups work.
        let set: HashSet<MessageId> = [id].into();
        assert!(set.contains(s.as_str()));
        let other = MessageId::from_bytes([0x01; ID_LEN]);
        assert_eq!(other.cmp(&id), other.as_str().cmp(id.as_str()));
    }
}
