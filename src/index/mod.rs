//! The message index: a durable hash index from `topic#key` and
//! `topic#unique id` to commit-log offsets (RocketMQ's IndexFile shape).
//!
//! This module currently provides how index keys are formed and hashed and
//! the index file itself ([`file`]: a preallocated, mapped, chained hash
//! table with checksummed entries and crash recovery); the store's index
//! (rolling files, feeding from dispatch, queries) builds on these.

pub(crate) mod check;
pub(crate) mod deferred;
pub(crate) mod file;
pub(crate) mod set;

pub use file::{IndexFileRecovery, IndexFileSize};
pub use set::{Index, IndexRecovery};

/// The index key of `key` in `topic`, as RocketMQ builds it.
///
/// ```
/// assert_eq!(mqstore::index::index_key("orders", "o-42"), "orders#o-42");
/// ```
#[must_use]
pub fn index_key(topic: &str, key: &str) -> String {
    format!("{topic}#{key}")
}

/// Slot hash of an index key: RocketMQ's `abs(String.hashCode)`, so slot
/// placement matches RocketMQ's index files.
///
/// ```
/// assert_eq!(mqstore::index::key_hash("hello"), 99_162_322);
/// assert_eq!(mqstore::index::key_hash(""), 0);
/// ```
#[must_use]
pub fn key_hash(key: &str) -> u32 {
    let h = crate::codec::java_string_hash(key);
    // Java's Math.abs(Integer.MIN_VALUE) stays negative; RocketMQ then maps
    // it to 0. unsigned_abs of MIN is 2^31, so mirror that explicitly.
    if h == i32::MIN {
        0
    } else {
        h.unsigned_abs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_java_abs_hashcode() {
        assert_eq!(key_hash("hello"), 99_162_322);
        assert_eq!(key_hash("polygenelubricants"), 0);
        // "TopicTest#key" has a negative Java hash.
        let java = crate::codec::java_string_hash("TopicTest#key");
        assert_eq!(key_hash("TopicTest#key"), java.unsigned_abs());
    }
}
