//! What the parent knows about one epoch (one directory whose crashes
//! chain): every acknowledged message, every delivery the listeners
//! reported, and the committed offsets recovered so far.

use super::msg::Desc;
use super::report::{Ack, Consumed};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Offsets of one queue whose delivery a listener reported handling
/// (`Success` or `ReconsumeLater`): everything below `low`, and `above`.
#[derive(Debug, Default)]
pub struct Handled {
    low: u64,
    above: BTreeSet<u64>,
}

impl Handled {
    fn insert(&mut self, offset: u64) {
        if offset < self.low {
            return;
        }
        self.above.insert(offset);
        while self.above.remove(&self.low) {
            self.low += 1;
        }
    }

    /// One past the longest run of handled offsets from 0: the most a
    /// committed offset may be.
    pub fn prefix(&self) -> u64 {
        self.low
    }
}

/// The parent's record of one epoch.
#[derive(Debug, Default)]
pub struct Epoch {
    /// Every acknowledged message, by seq.
    pub acked: BTreeMap<u64, Ack>,
    /// What each acknowledged message's record decoded to.
    pub descs: HashMap<u64, Desc>,
    /// Per `(topic, queue)`: the deliveries reported handled.
    pub handled: HashMap<(String, u32), Handled>,
    /// Acknowledged seqs that were stored to wait in the schedule topic.
    pub scheduled: HashSet<u64>,
    /// Seqs a listener reported consumed with `Success`.
    pub succeeded: HashSet<u64>,
    /// Seqs a listener returned `ReconsumeLater` for.
    pub sent_back: HashSet<u64>,
    /// Committed offsets the last recovered copy had, per queue: they may
    /// never move back.
    pub committed: HashMap<(String, u32), u64>,
    /// Bodies already fully checked: physical offset to (body CRC, what
    /// it decoded to). A record found again at the same place with the
    /// same CRC is not decoded again.
    pub known: HashMap<u64, (u32, Desc)>,
}

impl Epoch {
    /// Takes a reported delivery into account.
    pub fn consumed(&mut self, c: &Consumed) {
        self.handled.entry((c.topic.clone(), c.queue)).or_default().insert(c.queue_offset);
        if c.success {
            self.succeeded.insert(c.seq);
        } else {
            self.sent_back.insert(c.seq);
        }
    }

    /// The most a committed offset of `(topic, queue)` may be now.
    pub fn commit_bound(&self, topic: &str, queue: u32) -> u64 {
        self.handled.get(&(topic.to_string(), queue)).map_or(0, Handled::prefix)
    }

    /// Checks a committed offset against what the listeners reported.
    pub fn check_commit(&self, topic: &str, queue: u32, offset: u64, what: &str) -> Result<(), String> {
        let bound = self.commit_bound(topic, queue);
        if offset > bound {
            return Err(format!(
                "{what}: the committed offset of {topic}/{queue} is {offset}, but the listeners had handled only \
                 the offsets below {bound} (and {:?} above): the offset ran ahead of the listener",
                self.handled.get(&(topic.to_string(), queue)).map(|h| h.above.iter().take(10).collect::<Vec<_>>())
            ));
        }
        Ok(())
    }
}
