//! Payload codec of `<root>/config/consumer_offsets`.
//!
//! Payload (version 1, big-endian): `count u32`, then per entry in strictly
//! ascending (group, topic, queue id) order: `group length u16`, `group`
//! (UTF-8), `topic length u16`, `topic` (UTF-8), `queue id u32`, `offset
//! u64`.

use crate::error::{CorruptionKind, Error, Result};
use crate::metafile::{self, PayloadReader};
use crate::topic::{validate_group_name, validate_topic_name};
use std::collections::BTreeMap;
use std::path::Path;

/// Offsets of one (group, topic): queue id to next offset.
pub(super) type Queues = BTreeMap<u32, u64>;
/// Group to topic to queues. Nested so lookups by `&str` allocate nothing
/// and iteration order is the file's entry order.
pub(super) type Groups = BTreeMap<String, BTreeMap<String, Queues>>;

/// File name of the offsets table inside `<root>/config`.
pub(super) const OFFSETS_FILE: &str = "consumer_offsets";
/// Offsets magic: a high byte, "MQO", CR LF SUB LF.
pub(super) const OFFSETS_MAGIC: [u8; 8] = [0x8D, b'M', b'Q', b'O', b'\r', b'\n', 0x1A, b'\n'];
/// Offsets payload version written by this build.
pub(super) const OFFSETS_VERSION: u16 = 1;
/// Largest offsets payload accepted (256 MiB, over 600,000 entries with the
/// longest names): bounds what a damaged length field can allocate.
pub(super) const MAX_OFFSETS_PAYLOAD: u32 = 256 << 20;
/// Smallest encoded entry: 1-byte group and topic names.
const MIN_ENTRY_LEN: usize = 2 + 1 + 2 + 1 + 4 + 8;

/// Encodes the payload; refuses a table larger than [`MAX_OFFSETS_PAYLOAD`]
/// so nothing is written that the next open would refuse.
pub(super) fn encode(groups: &Groups) -> Result<Vec<u8>> {
    let count: usize = groups.values().flat_map(BTreeMap::values).map(BTreeMap::len).sum();
    let count = u32::try_from(count)
        .map_err(|_| Error::InvalidArgument(format!("{count} consumer offsets exceed the file's limit")))?;
    let mut out = Vec::new();
    out.extend_from_slice(&count.to_be_bytes());
    for (group, topics) in groups {
        for (topic, queues) in topics {
            for (queue_id, offset) in queues {
                metafile::put_str16(&mut out, group)?;
                metafile::put_str16(&mut out, topic)?;
                out.extend_from_slice(&queue_id.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
            }
        }
    }
    if out.len() > MAX_OFFSETS_PAYLOAD as usize {
        return Err(Error::InvalidArgument(format!(
            "the consumer offsets would take {} bytes, over their limit of {MAX_OFFSETS_PAYLOAD}",
            out.len()
        )));
    }
    Ok(out)
}

/// Decodes a payload read from `path`. Names must be valid and entries
/// strictly ascending (so duplicates are refused).
pub(super) fn decode(path: &Path, version: u16, payload: &[u8]) -> Result<Groups> {
    let mut r = PayloadReader::new(path, payload);
    if version != OFFSETS_VERSION {
        let kind = CorruptionKind::UnsupportedVersion { found: u32::from(version) };
        return Err(r.corruption(metafile::VERSION_OFFSET as u64, kind));
    }
    let count_at = r.file_offset();
    let count = r.u32()?;
    let need = u64::from(count).checked_mul(MIN_ENTRY_LEN as u64);
    if need.is_none_or(|n| n > r.remaining() as u64) {
        return Err(r.corruption(count_at, CorruptionKind::BadLength { length: u64::from(count) }));
    }
    let mut groups = Groups::new();
    let mut last: Option<(&str, &str, u32)> = None;
    for _ in 0..count {
        let at = r.file_offset();
        let group = r.str16("group name")?;
        if validate_group_name(group).is_err() {
            return Err(r.corruption(at, CorruptionKind::InvalidField { field: "group name" }));
        }
        let topic_at = r.file_offset();
        let topic = r.str16("topic name")?;
        if validate_topic_name(topic).is_err() {
            return Err(r.corruption(topic_at, CorruptionKind::InvalidField { field: "topic name" }));
        }
        let queue_id = r.u32()?;
        let offset = r.u64()?;
        let key = (group, topic, queue_id);
        if last.is_some_and(|prev| prev >= key) {
            return Err(r.corruption(at, CorruptionKind::InvalidField { field: "entry order" }));
        }
        last = Some(key);
        groups.entry(group.to_owned()).or_default().entry(topic.to_owned()).or_default().insert(queue_id, offset);
    }
    r.finish()?;
    Ok(groups)
}
