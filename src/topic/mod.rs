//! Topics: names, per-topic configuration and the persisted topic table.
//!
//! Names follow RocketMQ's rule: 1 to 127 characters from
//! `[%|a-zA-Z0-9_-]` for a topic, 1 to 255 for a consumer group. Names
//! starting with `%RETRY%` or `%DLQ%` are reserved for the store's own retry
//! and dead-letter topics ([`crate::dlq`]); users cannot create them.

mod table;
mod write_queues;

pub use table::TopicTable;
pub(crate) use write_queues::WriteQueues;

use crate::error::{Error, Result};

/// Longest topic name, in characters (RocketMQ's limit).
pub const MAX_TOPIC_NAME_LEN: usize = 127;
/// Longest consumer-group name, in characters (RocketMQ's limit).
pub const MAX_GROUP_NAME_LEN: usize = 255;
/// Most read or write queues a topic may have.
pub const MAX_QUEUES: u32 = 1024;
/// Queues a topic gets when none are asked for (RocketMQ's default).
pub const DEFAULT_QUEUES: u32 = 4;

/// RocketMQ permission bit: consumers may read.
pub const PERM_READ: u8 = 4;
/// RocketMQ permission bit: producers may write.
pub const PERM_WRITE: u8 = 2;
/// RocketMQ permission bit: the topic is a template for auto-created ones.
/// Accepted on decode and ignored: this store does not auto-create topics.
pub const PERM_INHERIT: u8 = 1;

/// Whether `c` may appear in a topic or group name.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-')
}

/// Checks `name` against the charset and `1..=max` characters; `what` names
/// the kind ("topic", "consumer group") in the error. The name itself is not
/// echoed: it may be huge or contain control characters.
fn validate_name(what: &str, name: &str, max: usize) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} name is empty")));
    }
    if let Some((i, c)) = name.chars().enumerate().find(|&(_, c)| !is_name_char(c)) {
        return Err(Error::InvalidArgument(format!(
            "{what} name contains {c:?} at character {i}; only ASCII letters, digits, '%', '|', '_' and '-' are allowed"
        )));
    }
    // Every character is ASCII now, so bytes and characters agree.
    if name.len() > max {
        return Err(Error::InvalidArgument(format!(
            "{what} name is {} characters long; the limit is {max}",
            name.len()
        )));
    }
    Ok(())
}

/// Checks a topic name: 1 to [`MAX_TOPIC_NAME_LEN`] characters from
/// `[%|a-zA-Z0-9_-]`. Reserved names (`%RETRY%…`, `%DLQ%…`) pass; use
/// [`validate_user_topic`] for names a user asks to create.
///
/// ```
/// use mqstore::topic::validate_topic_name;
/// assert!(validate_topic_name("TopicTest").is_ok());
/// assert!(validate_topic_name("%DLQ%group").is_ok());
/// assert!(validate_topic_name("a.b").is_err());
/// assert!(validate_topic_name("").is_err());
/// ```
///
/// # Errors
///
/// [`Error::InvalidArgument`] saying what is wrong (empty, too long, or
/// which character is not allowed).
pub fn validate_topic_name(name: &str) -> Result<()> {
    validate_name("topic", name, MAX_TOPIC_NAME_LEN)
}

/// Checks a topic name a user wants to create or write to: a valid name
/// ([`validate_topic_name`]) that does not use a reserved prefix.
///
/// ```
/// use mqstore::topic::validate_user_topic;
/// assert!(validate_user_topic("orders").is_ok());
/// assert!(validate_user_topic("%RETRY%g1").is_err());
/// ```
///
/// # Errors
///
/// [`Error::InvalidArgument`] for an invalid or reserved name.
pub fn validate_user_topic(name: &str) -> Result<()> {
    validate_topic_name(name)?;
    if name == crate::retry::SCHEDULE_TOPIC {
        return Err(Error::InvalidArgument(format!("topic name {name:?} is the store's schedule topic")));
    }
    if crate::dlq::is_reserved_topic(name) {
        return Err(Error::InvalidArgument(format!(
            "topic name {name:?} uses a reserved prefix ({} or {}); those topics belong to the store",
            crate::dlq::RETRY_TOPIC_PREFIX,
            crate::dlq::DLQ_TOPIC_PREFIX
        )));
    }
    Ok(())
}

/// Checks a consumer-group name: 1 to [`MAX_GROUP_NAME_LEN`] characters
/// from `[%|a-zA-Z0-9_-]`.
///
/// ```
/// use mqstore::topic::validate_group_name;
/// assert!(validate_group_name("order-consumers").is_ok());
/// assert!(validate_group_name("has space").is_err());
/// ```
///
/// # Errors
///
/// [`Error::InvalidArgument`] saying what is wrong.
pub fn validate_group_name(name: &str) -> Result<()> {
    validate_name("consumer group", name, MAX_GROUP_NAME_LEN)
}

/// Who may use a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Producers may write and consumers may read.
    ReadWrite,
    /// Consumers may read; writes are refused (for draining a topic).
    ReadOnly,
    /// Producers may write; nothing is delivered.
    WriteOnly,
    /// Neither.
    Deny,
}

impl Permission {
    /// Whether consumers may read.
    ///
    /// ```
    /// use mqstore::topic::Permission;
    /// assert!(Permission::ReadOnly.readable());
    /// assert!(!Permission::WriteOnly.readable());
    /// ```
    #[must_use]
    pub fn readable(self) -> bool {
        matches!(self, Self::ReadWrite | Self::ReadOnly)
    }

    /// Whether producers may write.
    ///
    /// ```
    /// use mqstore::topic::Permission;
    /// assert!(Permission::WriteOnly.writable());
    /// assert!(!Permission::Deny.writable());
    /// ```
    #[must_use]
    pub fn writable(self) -> bool {
        matches!(self, Self::ReadWrite | Self::WriteOnly)
    }

    /// RocketMQ's permission bits: [`PERM_READ`] | [`PERM_WRITE`].
    ///
    /// ```
    /// use mqstore::topic::Permission;
    /// assert_eq!(Permission::ReadWrite.to_bits(), 6);
    /// ```
    #[must_use]
    pub fn to_bits(self) -> u8 {
        match self {
            Self::ReadWrite => PERM_READ | PERM_WRITE,
            Self::ReadOnly => PERM_READ,
            Self::WriteOnly => PERM_WRITE,
            Self::Deny => 0,
        }
    }

    /// Decodes RocketMQ's permission bits, ignoring [`PERM_INHERIT`].
    /// `None` if a bit outside the three known ones is set.
    ///
    /// ```
    /// use mqstore::topic::Permission;
    /// assert_eq!(Permission::from_bits(7), Some(Permission::ReadWrite));
    /// assert_eq!(Permission::from_bits(8), None);
    /// ```
    #[must_use]
    pub fn from_bits(bits: u8) -> Option<Self> {
        if bits & !(PERM_READ | PERM_WRITE | PERM_INHERIT) != 0 {
            return None;
        }
        Some(match (bits & PERM_READ != 0, bits & PERM_WRITE != 0) {
            (true, true) => Self::ReadWrite,
            (true, false) => Self::ReadOnly,
            (false, true) => Self::WriteOnly,
            (false, false) => Self::Deny,
        })
    }
}

/// Configuration of one topic.
///
/// As in RocketMQ, producers spread messages over `write_queues` queues and
/// consumers read `read_queues` queues. Shrinking a topic lowers
/// `write_queues` first and `read_queues` once the dropped queues are
/// drained, so `write_queues <= read_queues` always holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// Topic name.
    pub name: String,
    /// Queues consumers read: `1..=MAX_QUEUES`.
    pub read_queues: u32,
    /// Queues producers write: `1..=read_queues`.
    pub write_queues: u32,
    /// Who may read and write.
    pub permission: Permission,
}

impl TopicConfig {
    /// A read-write topic with `queues` read and write queues. Not
    /// validated until [`TopicConfig::validate`] (or an upsert) runs.
    ///
    /// ```
    /// use mqstore::topic::{TopicConfig, DEFAULT_QUEUES};
    /// let cfg = TopicConfig::new("orders", DEFAULT_QUEUES);
    /// assert_eq!((cfg.read_queues, cfg.write_queues), (4, 4));
    /// assert!(cfg.validate().is_ok());
    /// ```
    #[must_use]
    pub fn new(name: impl Into<String>, queues: u32) -> Self {
        Self { name: name.into(), read_queues: queues, write_queues: queues, permission: Permission::ReadWrite }
    }

    /// Checks the name ([`validate_topic_name`]; reserved names pass, user
    /// checks are the caller's), that both queue counts are in
    /// `1..=MAX_QUEUES`, and that `write_queues <= read_queues`.
    ///
    /// ```
    /// use mqstore::topic::TopicConfig;
    /// let mut cfg = TopicConfig::new("orders", 4);
    /// cfg.write_queues = 8;
    /// assert!(cfg.validate().is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the first problem found.
    pub fn validate(&self) -> Result<()> {
        validate_topic_name(&self.name)?;
        for (field, n) in [("read_queues", self.read_queues), ("write_queues", self.write_queues)] {
            if !(1..=MAX_QUEUES).contains(&n) {
                return Err(Error::InvalidArgument(format!(
                    "topic {:?}: {field} is {n}; it must be between 1 and {MAX_QUEUES}",
                    self.name
                )));
            }
        }
        if self.write_queues > self.read_queues {
            return Err(Error::InvalidArgument(format!(
                "topic {:?}: write_queues ({}) exceeds read_queues ({}); that would strand messages in queues no reader sees",
                self.name, self.write_queues, self.read_queues
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<()>) -> String {
        match r {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn constants_are_pinned() {
        assert_eq!(MAX_TOPIC_NAME_LEN, 127);
        assert_eq!(MAX_GROUP_NAME_LEN, 255);
        assert_eq!(MAX_QUEUES, 1024);
        assert_eq!(DEFAULT_QUEUES, 4);
        assert_eq!((PERM_READ, PERM_WRITE, PERM_INHERIT), (4, 2, 1));
    }

    #[test]
    fn topic_name_length_limits() {
        assert!(message(validate_topic_name("")).contains("empty"));
        assert!(validate_topic_name("a").is_ok());
        assert!(validate_topic_name(&"a".repeat(127)).is_ok());
        let m = message(validate_topic_name(&"a".repeat(128)));
        assert!(m.contains("128") && m.contains("127"), "{m}");
        assert!(validate_group_name(&"g".repeat(255)).is_ok());
        let m = message(validate_group_name(&"g".repeat(256)));
        assert!(m.contains("consumer group") && m.contains("255"), "{m}");
        assert!(message(validate_group_name("")).contains("empty"));
    }

    #[test]
    fn every_character_class() {
        let allowed = "abcxyzABCXYZ0123456789%|_-";
        assert!(validate_topic_name(allowed).is_ok());
        assert!(validate_group_name(allowed).is_ok());
        for c in (0u8..=127).map(char::from) {
            let name = format!("a{c}b");
            assert_eq!(validate_topic_name(&name).is_ok(), allowed.contains(c) || c.is_ascii_alphanumeric(), "{c:?}");
            assert_eq!(validate_group_name(&name).is_ok(), validate_topic_name(&name).is_ok(), "{c:?}");
        }
        for bad in ["é", "日本", "a b", "a/b", "a.b", "a\0", "tab\t", "\u{200b}"] {
            let m = message(validate_topic_name(bad));
            assert!(m.contains("only ASCII letters"), "{bad:?}: {m}");
        }
        // The position and the character are named, the name is not echoed.
        let m = message(validate_topic_name("ab.c"));
        assert!(m.contains("'.'") && m.contains("character 2"), "{m}");
        // Non-ASCII counts as a bad character before any length check.
        assert!(message(validate_topic_name(&"é".repeat(100))).contains("'é'"));
    }

    #[test]
    fn reserved_prefixes_are_valid_names_but_not_user_topics() {
        for name in ["%RETRY%g", "%DLQ%g", "%RETRY%", "%DLQ%"] {
            assert!(validate_topic_name(name).is_ok(), "{name}");
            let m = message(validate_user_topic(name));
            assert!(m.contains("reserved"), "{m}");
        }
        for name in ["RETRY", "%retry%g", "x%DLQ%", "%DLQ", "orders"] {
            assert!(validate_user_topic(name).is_ok(), "{name}");
        }
        assert!(message(validate_user_topic("")).contains("empty"));
    }

    #[test]
    fn permission_bits_map_like_rocketmq() {
        let all = [Permission::ReadWrite, Permission::ReadOnly, Permission::WriteOnly, Permission::Deny];
        let bits = [6, 4, 2, 0];
        for (p, b) in all.into_iter().zip(bits) {
            assert_eq!(p.to_bits(), b);
            assert_eq!(Permission::from_bits(b), Some(p));
            assert_eq!(Permission::from_bits(b | PERM_INHERIT), Some(p));
            assert_eq!(p.readable(), b & PERM_READ != 0);
            assert_eq!(p.writable(), b & PERM_WRITE != 0);
        }
        for b in 8..=255u8 {
            assert_eq!(Permission::from_bits(b), None, "{b}");
        }
    }

    #[test]
    fn topic_config_validation() {
        let cfg = TopicConfig::new("t", DEFAULT_QUEUES);
        assert_eq!(cfg.permission, Permission::ReadWrite);
        assert!(cfg.validate().is_ok());
        assert!(TopicConfig::new("%DLQ%g", 1).validate().is_ok());
        assert!(TopicConfig::new("t", MAX_QUEUES).validate().is_ok());
        assert!(message(TopicConfig::new("t", 0).validate()).contains("read_queues is 0"));
        assert!(message(TopicConfig::new("t", MAX_QUEUES + 1).validate()).contains("1025"));
        assert!(message(TopicConfig::new("", 1).validate()).contains("empty"));
        let mut c = TopicConfig::new("t", 4);
        c.write_queues = 0;
        assert!(message(c.validate()).contains("write_queues is 0"));
        c.write_queues = 5;
        assert!(message(c.validate()).contains("strand"));
        c.write_queues = 2;
        assert!(c.validate().is_ok(), "read > write is how a topic shrinks");
    }
}
