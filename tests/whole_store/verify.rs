//! Checks of one recovered copy: every queue of every topic (the user
//! topics, the schedule topic, the group's retry and dead-letter topics)
//! read end to end, the commit log walked record by record, every
//! acknowledged message found where it was acknowledged, the index, and
//! the recovered committed offsets.

use super::model::Epoch;
use super::msg::{Desc, Kind, GROUP, TOPICS};
use super::report::Ack;
use crate::common::describe;
use crate::common::queue_read::{pull_below_max, queue_bounds};
use mqstore::dlq::retry_topic;
use mqstore::retry::SCHEDULE_TOPIC;
use mqstore::store::{PullStatus, Store, TagFilter, MAX_QUERY_RESULTS};
use mqstore::PhysicalOffset;
use std::collections::HashMap;

/// A record reached through its queue.
#[derive(Debug, Clone)]
pub struct Loc {
    /// Index into [`Verified::topics`].
    pub topic: usize,
    /// Its queue.
    pub queue: u32,
    /// Its queue offset.
    pub queue_offset: u64,
    /// What its body says.
    pub desc: Desc,
    /// CRC32 of its body.
    pub body_crc: u32,
}

/// What a recovered copy holds.
pub struct Verified {
    /// Topic names, in the store's order.
    pub topics: Vec<String>,
    /// Every record, by physical offset.
    pub by_phys: HashMap<u64, Loc>,
    /// The commit log's recovered end.
    pub log_end: u64,
    /// Largest seq found anywhere.
    pub max_seq: Option<u64>,
}

impl Verified {
    /// Where seq `seq` sits in a user topic (at most one place).
    pub fn in_user_topic(&self) -> HashMap<u64, (u64, &Loc)> {
        self.by_phys
            .iter()
            .filter(|(_, l)| TOPICS.iter().any(|(t, _)| *t == self.topics[l.topic]))
            .map(|(p, l)| (l.desc.seq, (*p, l)))
            .collect()
    }
}

/// Reads every queue of every topic from its first to its last offset and
/// checks each unit's record: its own topic, queue and queue offset,
/// contiguous offsets, log order, a well-formed body with the attributes
/// of its seq.
fn read_queues(store: &Store, ep: &mut Epoch) -> Result<Verified, String> {
    let all = TagFilter::All;
    let cfgs = store.topics();
    let topics: Vec<String> = cfgs.iter().map(|c| c.name.clone()).collect();
    let mut by_phys: HashMap<u64, Loc> = HashMap::new();
    let mut user_seqs: HashMap<u64, u64> = HashMap::new();
    let mut max_seq = None;
    for (ti, cfg) in cfgs.iter().enumerate() {
        let topic = cfg.name.as_str();
        let user = TOPICS.iter().any(|(t, _)| *t == topic);
        for q in 0..cfg.read_queues.max(cfg.write_queues) {
            let (min, max) = queue_bounds(store, topic, q)?;
            let mut pos = min;
            let mut prev_phys = None;
            while pos < max {
                let r = pull_below_max(store, topic, q, pos, 64, (min, max))?;
                for m in &r.messages {
                    if m.queue_offset().0 != pos || m.queue_id() != q || m.stored_topic() != topic {
                        return Err(format!(
                            "the unit at {topic}/{q} offset {pos} leads to {}: not a record of that queue and offset",
                            describe(m)
                        ));
                    }
                    let phys = m.physical_offset().0;
                    if prev_phys.is_some_and(|p| p >= phys) {
                        return Err(format!("{} follows physical offset {prev_phys:?} in its queue", describe(m)));
                    }
                    prev_phys = Some(phys);
                    let body_crc = crc32fast::hash(m.body());
                    let desc = match ep.known.get(&phys) {
                        Some((crc, d)) if *crc == body_crc => *d,
                        _ => {
                            let d = Desc::decode(m.body()).map_err(|e| format!("{}: {e}", describe(m)))?;
                            ep.known.insert(phys, (body_crc, d));
                            d
                        }
                    };
                    desc.check_attrs(m)?;
                    if user {
                        // A user topic holds each message once: a delayed
                        // message is delivered exactly once, retries go to
                        // the retry topic.
                        if desc.topic() != topic {
                            return Err(format!("{} of {desc:?} is in the wrong topic", describe(m)));
                        }
                        if let Some(other) = user_seqs.insert(desc.seq, phys) {
                            return Err(format!(
                                "seq {} is in its topic twice: at physical offsets {other} and {phys}",
                                desc.seq
                            ));
                        }
                    }
                    max_seq = max_seq.max(Some(desc.seq));
                    by_phys.insert(phys, Loc { topic: ti, queue: q, queue_offset: pos, desc, body_crc });
                    pos += 1;
                }
            }
            let r = store.pull(topic, q, max, 8, &all).map_err(|e| format!("pull({topic}, {q}, {max}): {e}"))?;
            if r.status != PullStatus::NoNewMessage || !r.messages.is_empty() {
                return Err(format!("pull of {topic}/{q} at its max offset {max} returned {:?}", r.status));
            }
        }
    }
    let log_end = store.commit_log().max_offset().0;
    Ok(Verified { topics, by_phys, log_end, max_seq })
}

/// Every record of the log is reached through exactly its queue entry, and
/// nothing is readable at or past the recovered end.
fn walk_log(store: &Store, v: &Verified) -> Result<(), String> {
    let log = store.commit_log();
    if let Ok(rec) = log.read(PhysicalOffset(v.log_end)) {
        return Err(format!("a read at the recovered log end {} returned {rec:?}", v.log_end));
    }
    let mut records = 0usize;
    for item in log.iter(PhysicalOffset(0)) {
        let rec = item.map_err(|e| format!("iterating the commit log failed after {records} records: {e} ({e:?})"))?;
        let at = rec.offset().0;
        let Some(l) = v.by_phys.get(&at) else {
            return Err(format!(
                "commit-log record at {at} ({}/{} queue offset {}) is not reachable through its queue",
                rec.topic(),
                rec.queue_id(),
                rec.queue_offset()
            ));
        };
        if rec.topic() != v.topics[l.topic] || rec.queue_id() != l.queue || rec.queue_offset() != l.queue_offset {
            return Err(format!("commit-log record at {at} disagrees with its queue entry {l:?}"));
        }
        records += 1;
    }
    if records != v.by_phys.len() {
        return Err(format!("the queues hold {} messages but the commit log {records} records", v.by_phys.len()));
    }
    Ok(())
}

/// Checks a copy recovered after a kill against everything acknowledged
/// and reported in the epoch. `new_acks` (this round's) are also looked up
/// one by one, by id and by key.
pub fn verify(store: &Store, ep: &mut Epoch, new_acks: &[Ack]) -> Result<Verified, String> {
    let v = read_queues(store, ep)?;
    walk_log(store, &v)?;
    check_acks(store, ep, &v, new_acks)?;
    check_committed(store, ep)?;
    Ok(v)
}

/// Every acknowledged message is where its send said, unchanged: a plain
/// one in its topic and queue, a delayed one in the schedule topic.
fn check_acks(store: &Store, ep: &mut Epoch, v: &Verified, new_acks: &[Ack]) -> Result<(), String> {
    let mut missing = Vec::new();
    for a in ep.acked.values() {
        let Some(l) = v.by_phys.get(&a.phys) else {
            missing.push(a);
            continue;
        };
        let topic = v.topics[l.topic].as_str();
        // A delayed message waits in the schedule queue of its level (a
        // delivery time already past when stored goes straight to its
        // topic).
        let scheduled = topic == SCHEDULE_TOPIC;
        let place_ok = if scheduled {
            l.desc.kind.delayed()
                && (l.desc.kind != Kind::DelayLevel || l.queue + 1 == u32::from(l.desc.level()))
                && TOPICS[l.desc.topic_index()].1 > a.queue
        } else {
            l.desc.kind != Kind::DelayLevel && topic == l.desc.topic() && l.queue == a.queue
        };
        if !place_ok || l.queue_offset != a.queue_offset || l.desc.seq != a.seq || l.body_crc != a.body_crc {
            return Err(format!("acknowledged {a:?} was found as {topic} {l:?}"));
        }
        ep.descs.insert(a.seq, l.desc);
        if scheduled {
            ep.scheduled.insert(a.seq);
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "{} acknowledged messages are missing after recovery (log end {}, {} records): first {:?}",
            missing.len(),
            v.log_end,
            v.by_phys.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    let delivered = v.in_user_topic();
    for a in new_acks {
        let l = &v.by_phys[&a.phys];
        let topic = &v.topics[l.topic];
        let r = store
            .pull(topic, l.queue, a.queue_offset, 1, &TagFilter::All)
            .map_err(|e| format!("pull of acknowledged {a:?}: {e}"))?;
        let m = r.messages.first().filter(|m| m.physical_offset().0 == a.phys && m.msg_id() == Some(&a.msg_id));
        if m.is_none() {
            return Err(format!(
                "pull of acknowledged {a:?} at its queue offset returned {:?}",
                r.messages.first().map(describe)
            ));
        }
        // The index: the unique id leads to a copy of the message (the
        // newest: a retry or a delivered copy), the unique key to the
        // record in its topic (a delayed one once delivered; the schedule
        // topic is not indexed).
        let by_id = store.message_by_id(&a.msg_id).map_err(|e| format!("message_by_id of {a:?}: {e}"))?;
        let in_topic = delivered.get(&a.seq).map(|(p, _)| *p);
        if let Some(m) = &by_id {
            if Desc::decode(m.body()).map(|d| d.seq) != Ok(a.seq) || m.msg_id() != Some(&a.msg_id) {
                return Err(format!("message_by_id of acknowledged {a:?} found {}", describe(m)));
            }
        } else if in_topic.is_some() {
            return Err(format!("message_by_id of acknowledged {a:?} found nothing"));
        }
        if let Some(phys) = in_topic {
            check_key(store, l.desc, phys)?;
        }
    }
    Ok(())
}

/// The index finds the message of `desc` at `phys` by its unique key.
pub fn check_key(store: &Store, desc: Desc, phys: u64) -> Result<(), String> {
    let (topic, key) = (desc.topic(), desc.unique_key());
    let hits = store
        .query_by_key(topic, &key, 0, u64::MAX, MAX_QUERY_RESULTS)
        .map_err(|e| format!("query_by_key({topic}, {key}): {e}"))?;
    if hits.iter().any(|m| !m.keys().any(|k| k == key)) {
        return Err(format!("query_by_key({topic}, {key}) returned a message without that key"));
    }
    if !hits.iter().any(|m| m.physical_offset().0 == phys) {
        return Err(format!(
            "query_by_key({topic}, {key}) misses the message at {phys}; found {:?}",
            hits.iter().map(describe).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// The recovered committed offsets never pass what the listeners handled,
/// never pass the queue's end and never move back.
fn check_committed(store: &Store, ep: &mut Epoch) -> Result<(), String> {
    let mut queues: Vec<(String, u32)> =
        TOPICS.iter().flat_map(|(t, n)| (0..*n).map(move |q| (t.to_string(), q))).collect();
    queues.push((retry_topic(GROUP), 0));
    for (t, q) in queues {
        let Some(c) = store.committed_offset(GROUP, &t, q) else {
            if let Some(p) = ep.committed.get(&(t.clone(), q)) {
                return Err(format!("the committed offset {p} of {t}/{q} disappeared"));
            }
            continue;
        };
        ep.check_commit(&t, q, c, "after recovery")?;
        let max = store.max_offset(&t, q).map_err(|e| format!("max_offset({t}, {q}): {e}"))?;
        if c > max {
            return Err(format!("the recovered committed offset of {t}/{q} is {c}, past the queue's end {max}"));
        }
        let prev = ep.committed.insert((t.clone(), q), c);
        if prev.is_some_and(|p| p > c) {
            return Err(format!("the committed offset of {t}/{q} moved back from {prev:?} to {c}"));
        }
    }
    Ok(())
}
