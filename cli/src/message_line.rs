//! One output line per message, shared by `print` and `consume`.

use crate::report::json_str;
use mqstore::message::MessageExt;

/// `{"id":…,"topic":…,"queue":…,"offset":…,"keys":[…],"tags":…,"size":…,
/// "crc32":…,"store_timestamp":…,"reconsume_times":…}`: `id` is the unique
/// message id (null for a record stored without one), `offset` the queue
/// offset, `size` and `crc32` are the body's length and CRC-32, `tags` is
/// null without a tag.
pub fn json(m: &MessageExt) -> String {
    let keys: Vec<String> = m.keys().map(json_str).collect();
    format!(
        r#"{{"id":{},"topic":{},"queue":{},"offset":{},"keys":[{}],"tags":{},"size":{},"crc32":{},"store_timestamp":{},"reconsume_times":{}}}"#,
        m.msg_id().map_or_else(|| "null".to_owned(), json_str),
        json_str(m.topic()),
        m.queue_id(),
        m.queue_offset().0,
        keys.join(","),
        m.tags().map_or_else(|| "null".to_owned(), json_str),
        m.body().len(),
        crc32fast::hash(m.body()),
        m.store_timestamp(),
        m.reconsume_times()
    )
}

/// `queue=… offset=… id=… size=… crc32=0x… tags=… keys=a,b
/// store_timestamp=… reconsume_times=… topic=…`; `-` for a missing id, tag
/// or keys.
pub fn text(m: &MessageExt) -> String {
    let keys: Vec<&str> = m.keys().collect();
    let keys = if keys.is_empty() { "-".to_owned() } else { keys.join(",") };
    format!(
        "queue={:<4} offset={:<10} id={} size={:<7} crc32={:#010x} tags={} keys={} store_timestamp={} reconsume_times={} topic={}",
        m.queue_id(),
        m.queue_offset().0,
        m.msg_id().unwrap_or("-"),
        m.body().len(),
        crc32fast::hash(m.body()),
        quote(m.tags().unwrap_or("-")),
        quote(&keys),
        m.store_timestamp(),
        m.reconsume_times(),
        m.topic()
    )
}

/// The value as is, or quoted and escaped when it would break the
/// whitespace-separated `key=value` format.
fn quote(v: &str) -> String {
    if !v.is_empty() && v.chars().all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '\\') {
        v.to_owned()
    } else {
        format!("{v:?}")
    }
}
