//! The 20-byte consume-queue unit (RocketMQ's layout, big-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | commit-log physical offset of the message |
//! | 8 | 4 | encoded record size |
//! | 12 | 8 | tag hash (for filtering without reading the log) |

use crate::codec::{get_u32, get_u64, java_string_hash, put_u32, put_u64};
use crate::offset::PhysicalOffset;

const PHYSICAL_OFFSET_OFFSET: usize = 0;
const SIZE_OFFSET: usize = PHYSICAL_OFFSET_OFFSET + 8;
const TAG_HASH_OFFSET: usize = SIZE_OFFSET + 4;
/// Bytes per consume-queue unit.
pub const CQ_UNIT_LEN: usize = TAG_HASH_OFFSET + 8;

/// One consume-queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqUnit {
    /// Where the message's record starts in the commit log.
    pub physical_offset: PhysicalOffset,
    /// Size of the record in bytes.
    pub size: u32,
    /// [`tag_hash`] of the message's tag (0 without a tag).
    pub tag_hash: u64,
}

impl CqUnit {
    /// Encodes the unit.
    ///
    /// ```
    /// use mqstore::consumequeue::{CqUnit, CQ_UNIT_LEN};
    /// use mqstore::PhysicalOffset;
    /// let u = CqUnit { physical_offset: PhysicalOffset(64), size: 100, tag_hash: 7 };
    /// let b = u.encode();
    /// assert_eq!(b.len(), CQ_UNIT_LEN);
    /// assert_eq!(CqUnit::decode(&b), Some(u));
    /// ```
    #[must_use]
    pub fn encode(&self) -> [u8; CQ_UNIT_LEN] {
        let mut b = [0u8; CQ_UNIT_LEN];
        put_u64(&mut b, PHYSICAL_OFFSET_OFFSET, self.physical_offset.0);
        put_u32(&mut b, SIZE_OFFSET, self.size);
        put_u64(&mut b, TAG_HASH_OFFSET, self.tag_hash);
        b
    }

    /// Decodes a unit; `None` for a slice of the wrong length or an empty
    /// (all-zero size) unit, which marks the end of a queue file.
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != CQ_UNIT_LEN {
            return None;
        }
        let size = get_u32(b, SIZE_OFFSET);
        (size != 0).then(|| Self {
            physical_offset: PhysicalOffset(get_u64(b, PHYSICAL_OFFSET_OFFSET)),
            size,
            tag_hash: get_u64(b, TAG_HASH_OFFSET),
        })
    }
}

/// Hash of a tag as RocketMQ computes it (Java `String.hashCode` over UTF-16
/// code units, sign-extended to 64 bits), so tag codes match RocketMQ's.
///
/// ```
/// assert_eq!(mqstore::consumequeue::tag_hash("TagA"), 2_598_919);
/// ```
#[must_use]
pub fn tag_hash(tag: &str) -> u64 {
    i64::from(java_string_hash(tag)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_layout_is_pinned() {
        // FORMAT.md section 4 lists these offsets; change both together.
        assert_eq!(SIZE_OFFSET, 8);
        assert_eq!(TAG_HASH_OFFSET, 12);
        assert_eq!(CQ_UNIT_LEN, 20);
    }

    #[test]
    fn round_trip_and_empty_unit() {
        let u = CqUnit { physical_offset: PhysicalOffset(u64::MAX - 1), size: u32::MAX, tag_hash: u64::MAX };
        assert_eq!(CqUnit::decode(&u.encode()), Some(u));
        assert_eq!(CqUnit::decode(&[0u8; CQ_UNIT_LEN]), None);
        assert_eq!(CqUnit::decode(&[1u8; 19]), None);
    }

    #[test]
    fn tag_hash_matches_java_string_hashcode() {
        // Values computed with java.lang.String#hashCode.
        assert_eq!(tag_hash(""), 0);
        assert_eq!(tag_hash("TagA"), 2_598_919);
        assert_eq!(tag_hash("hello"), 99_162_322);
        // Negative Java hashes are sign-extended, as RocketMQ stores them.
        assert_eq!(tag_hash("polygenelubricants") as i64, i64::from(i32::MIN));
        assert_eq!(tag_hash("é"), 233);
    }
}
