//! Consumer offsets per (group, topic, queue), persisted atomically.
//!
//! Commits are in memory and cheap; [`OffsetTable::persist`] writes the
//! whole table as one metadata file, `<root>/config/consumer_offsets`, when
//! anything changed (the store calls it periodically and at close, as
//! RocketMQ's broker does). A crash therefore loses at most the commits
//! since the last persist, and consumers re-read those messages: delivery is
//! at least once.

mod codec;

use crate::error::Result;
use crate::metafile;
use crate::metafile::generations::{self, GenFile, MetadataFallback};
use crate::storage::Storage;
use crate::topic::{validate_group_name, validate_topic_name};
use codec::{Groups, Queues};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// One committed offset, as listed by [`OffsetTable::entries`].
///
/// Entries order by group, then topic, then queue.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OffsetEntry {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue within the topic.
    pub queue_id: u32,
    /// Next queue offset the group will consume.
    pub offset: u64,
}

/// In-memory table plus change tracking: `changes` counts mutations and
/// `persisted` is the value of `changes` the file on disk reflects, so the
/// table is dirty exactly when they differ.
#[derive(Debug, Default)]
struct State {
    groups: Groups,
    changes: u64,
    persisted: u64,
}

impl State {
    fn touch(&mut self) {
        self.changes = self.changes.wrapping_add(1);
    }

    /// The queue map of (group, topic), created if missing.
    fn queues_mut(&mut self, group: &str, topic: &str) -> Option<&mut Queues> {
        // Look up before inserting so the hot path (an existing entry)
        // allocates nothing.
        if !self.groups.contains_key(group) {
            self.groups.insert(group.to_owned(), BTreeMap::new());
        }
        let topics = self.groups.get_mut(group)?;
        if !topics.contains_key(topic) {
            topics.insert(topic.to_owned(), BTreeMap::new());
        }
        topics.get_mut(topic)
    }
}

/// Committed consumer offsets of every group.
///
/// All operations take one short mutex; [`OffsetTable::persist`] encodes
/// under it but writes the file outside it, so commits never wait for disk.
#[derive(Debug)]
pub struct OffsetTable {
    file: GenFile,
    state: Mutex<State>,
    /// Serializes persists, so an older snapshot never replaces a newer one.
    persist_lock: Mutex<()>,
}

impl OffsetTable {
    /// Loads `<root>/config/consumer_offsets`, falling back to its previous
    /// generation (`consumer_offsets.prev`) if it is missing or damaged; no
    /// file at all is an empty table (whether that is allowed is the
    /// store's decision, see [`OffsetTable::file_exists`]).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Corruption`] when no generation is intact or one has
    /// an unknown version, [`crate::Error::Io`] if a file cannot be read.
    pub(crate) fn open(storage: Arc<dyn Storage>, root: &Path) -> Result<Self> {
        Ok(Self::open_with_fallback(storage, root)?.0)
    }

    /// [`OffsetTable::open`], also reporting a fallback to the previous
    /// generation.
    pub(crate) fn open_with_fallback(
        storage: Arc<dyn Storage>,
        root: &Path,
    ) -> Result<(Self, Option<MetadataFallback>)> {
        let dir = root.join(metafile::CONFIG_DIR);
        let kind = generations::Kind {
            name: codec::OFFSETS_FILE,
            magic: codec::OFFSETS_MAGIC,
            max_payload: codec::MAX_OFFSETS_PAYLOAD,
        };
        let loaded = generations::load(storage, &dir, kind, codec::decode)?;
        let state = State { groups: loaded.value.unwrap_or_default(), ..State::default() };
        let table = Self { file: loaded.file, state: Mutex::new(state), persist_lock: Mutex::new(()) };
        Ok((table, loaded.fallback))
    }

    /// Whether an intact generation of the file was found or written.
    pub(crate) fn file_exists(&self) -> bool {
        self.file.exists()
    }

    /// Whether the file holds two intact generations, the current one in
    /// use (see [`GenFile::has_two_generations`]).
    pub(crate) fn has_two_generations(&self) -> bool {
        self.file.has_two_generations()
    }

    /// Writes the table as a new generation even if nothing changed (to
    /// create the file, or after a fallback or a damaged previous file).
    ///
    /// # Errors
    ///
    /// As [`OffsetTable::persist`].
    pub(crate) fn rewrite(&self) -> Result<()> {
        self.state.lock().touch();
        self.persist()
    }

    /// The committed offset of `group` on (`topic`, `queue_id`), if any.
    #[must_use]
    pub fn get(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.state.lock().groups.get(group)?.get(topic)?.get(&queue_id).copied()
    }

    /// Records that `group` consumed (`topic`, `queue_id`) up to `offset`
    /// (the next offset to read). A commit never moves an offset backwards:
    /// a smaller value (a late or duplicate ack) is ignored; use
    /// [`OffsetTable::reset`] to seek back.
    ///
    /// Names must be valid ([`validate_group_name`],
    /// [`validate_topic_name`]); the store checks them before calling. An
    /// invalid name is ignored, so it can never reach the file and make it
    /// unreadable at the next open.
    pub fn commit(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        self.set(group, topic, queue_id, offset, false);
    }

    /// Sets the offset of `group` on (`topic`, `queue_id`) to exactly
    /// `offset`, backwards or forwards (a seek). Invalid names are ignored,
    /// as for [`OffsetTable::commit`].
    pub fn reset(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        self.set(group, topic, queue_id, offset, true);
    }

    fn set(&self, group: &str, topic: &str, queue_id: u32, offset: u64, exact: bool) {
        if validate_group_name(group).is_err() || validate_topic_name(topic).is_err() {
            return;
        }
        let mut state = self.state.lock();
        let Some(queues) = state.queues_mut(group, topic) else {
            return;
        };
        let changed = match queues.get_mut(&queue_id) {
            None => {
                queues.insert(queue_id, offset);
                true
            }
            Some(current) if *current == offset || (!exact && *current > offset) => false,
            Some(current) => {
                *current = offset;
                true
            }
        };
        if changed {
            state.touch();
        }
    }

    /// Drops every offset of `group`; returns how many there were.
    pub fn remove_group(&self, group: &str) -> usize {
        let mut state = self.state.lock();
        let removed = state.groups.remove(group).map_or(0, |topics| topics.values().map(|q| q.len()).sum());
        if removed > 0 {
            state.touch();
        }
        removed
    }

    /// Drops every group's offsets on `topic` (the topic was deleted).
    pub fn remove_topic(&self, topic: &str) {
        let mut state = self.state.lock();
        let mut removed = false;
        state.groups.retain(|_, topics| {
            removed |= topics.remove(topic).is_some();
            !topics.is_empty()
        });
        if removed {
            state.touch();
        }
    }

    /// Brings every offset inside its queue's current bounds: `bounds(topic,
    /// queue_id)` returns the queue's `(min, max)` offsets, or `None` if the
    /// queue no longer exists, in which case its entries are dropped. Used
    /// after recovery or cleanup moved queue ends, so a consumer neither
    /// asks for deleted messages nor skips past the end.
    ///
    /// `bounds` runs without the table's lock held (it may take other
    /// locks), once per distinct queue; entries committed meanwhile for
    /// queues it was not asked about are left alone. A `min > max` answer is
    /// nonsense and leaves the entries of that queue unchanged.
    pub fn clamp(&self, bounds: impl Fn(&str, u32) -> Option<(u64, u64)>) {
        let queues: BTreeMap<String, Vec<u32>> = {
            let state = self.state.lock();
            let mut all: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            for (topic, ids) in state.groups.values().flatten() {
                all.entry(topic.clone()).or_default().extend(ids.keys().copied());
            }
            all
        };
        let mut answers: BTreeMap<String, BTreeMap<u32, Option<(u64, u64)>>> = BTreeMap::new();
        for (topic, mut ids) in queues {
            ids.sort_unstable();
            ids.dedup();
            let per_topic = ids.into_iter().map(|id| (id, bounds(&topic, id))).collect();
            answers.insert(topic, per_topic);
        }

        let mut state = self.state.lock();
        let mut changed = false;
        for topics in state.groups.values_mut() {
            for (topic, ids) in topics.iter_mut() {
                let Some(asked) = answers.get(topic) else { continue };
                ids.retain(|id, offset| match asked.get(id) {
                    None => true,
                    Some(None) => {
                        changed = true;
                        false
                    }
                    Some(Some((min, max))) => {
                        if min <= max {
                            let clamped = (*offset).clamp(*min, *max);
                            changed |= clamped != *offset;
                            *offset = clamped;
                        }
                        true
                    }
                });
            }
            topics.retain(|_, ids| !ids.is_empty());
        }
        state.groups.retain(|_, topics| !topics.is_empty());
        if changed {
            state.touch();
        }
    }

    /// Every committed offset, sorted by group, topic and queue.
    #[must_use]
    pub fn entries(&self) -> Vec<OffsetEntry> {
        let state = self.state.lock();
        let mut out = Vec::new();
        for (group, topics) in &state.groups {
            for (topic, ids) in topics {
                for (&queue_id, &offset) in ids {
                    out.push(OffsetEntry { group: group.clone(), topic: topic.clone(), queue_id, offset });
                }
            }
        }
        out
    }

    /// Whether there are changes [`OffsetTable::persist`] has not written.
    // NOTE: only tests call this so far.
    #[allow(dead_code)]
    pub(crate) fn is_dirty(&self) -> bool {
        let state = self.state.lock();
        state.changes != state.persisted
    }

    /// Writes the table atomically if it changed since the last successful
    /// persist; does nothing otherwise. Commits made while the file is
    /// being written stay dirty for the next call.
    ///
    /// # Errors
    ///
    /// An I/O error if the write failed; the table then stays dirty, and
    /// the generation in use is intact on disk unless the error is a failed directory
    /// fsync (`is_failed_sync()`), after which the store must fence.
    /// [`crate::Error::InvalidArgument`] if the table outgrew the file
    /// limit.
    pub fn persist(&self) -> Result<()> {
        let _persisting = self.persist_lock.lock();
        let (payload, snapshot) = {
            let state = self.state.lock();
            if state.changes == state.persisted {
                return Ok(());
            }
            (codec::encode(&state.groups)?, state.changes)
        };
        self.file.write(codec::OFFSETS_VERSION, &payload)?;
        self.state.lock().persisted = snapshot;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
