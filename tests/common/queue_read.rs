//! Reading a consume queue from end to end in the crash tests, which never
//! clean anything up: every queue starts at offset 0, and every pull below
//! its max offset must find messages.

use mqstore::store::{PullResult, PullStatus, Store, TagFilter};

/// The min and max offsets of `topic`/`q`; the min must be 0.
pub fn queue_bounds(store: &Store, topic: &str, q: u32) -> Result<(u64, u64), String> {
    let min = store.min_offset(topic, q).map_err(|e| format!("min_offset({topic}, {q}): {e}"))?;
    let max = store.max_offset(topic, q).map_err(|e| format!("max_offset({topic}, {q}): {e}"))?;
    if min != 0 {
        return Err(format!("queue {topic}/{q} starts at {min}, not 0 (nothing is ever cleaned up)"));
    }
    Ok((min, max))
}

/// Pulls up to `batch` messages of `topic`/`q` from `pos`, which is below
/// the max of `bounds` (from [`queue_bounds`]): the pull must find messages
/// and report the same bounds.
pub fn pull_below_max(
    store: &Store,
    topic: &str,
    q: u32,
    pos: u64,
    batch: usize,
    bounds: (u64, u64),
) -> Result<PullResult, String> {
    let max = bounds.1;
    let r = store
        .pull(topic, q, pos, batch, &TagFilter::All)
        .map_err(|e| format!("pull({topic}, {q}, {pos}) below the max offset {max} failed: {e} ({e:?})"))?;
    if r.status != PullStatus::Found || r.messages.is_empty() || (r.min_offset, r.max_offset) != bounds {
        return Err(format!(
            "pull({topic}, {q}, {pos}) below the max offset {max} returned {:?} with {} messages, next {}, bounds \
             {}..{}",
            r.status,
            r.messages.len(),
            r.next_offset,
            r.min_offset,
            r.max_offset
        ));
    }
    Ok(r)
}
