//! Offset newtypes: a commit-log byte position is never confused with a
//! queue position or a length.

use std::fmt;

/// A byte position in the commit log's global offset space.
///
/// Segment `n` covers `[base, base + segment_size)`; a record's physical
/// offset is the offset of its first byte. Offsets are stable for the life of
/// the log: retention removes old segments but never renumbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysicalOffset(pub u64);

impl PhysicalOffset {
    /// The raw value.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// `self + bytes`, or `None` on overflow.
    #[must_use]
    pub fn checked_add(self, bytes: u64) -> Option<Self> {
        self.0.checked_add(bytes).map(Self)
    }
}

impl fmt::Display for PhysicalOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<PhysicalOffset> for u64 {
    fn from(o: PhysicalOffset) -> u64 {
        o.0
    }
}

/// A position inside one consume queue (the n-th message of a queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct QueueOffset(pub u64);

impl QueueOffset {
    /// The raw value.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for QueueOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_add_reports_overflow() {
        assert_eq!(PhysicalOffset(1).checked_add(2), Some(PhysicalOffset(3)));
        assert_eq!(PhysicalOffset(u64::MAX).checked_add(1), None);
        assert_eq!(PhysicalOffset(7).to_string(), "7");
        assert_eq!(QueueOffset(9).get(), 9);
    }
}
