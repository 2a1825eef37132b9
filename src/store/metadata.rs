//! Opening the primary metadata files (`config/topics`,
//! `config/consumer_offsets`, `config/store`) together, so that none of
//! them is silently replaced by an empty table (FORMAT.md 11.6).
//!
//! Each is read with its previous generation as fallback. `config/store`
//! then checks that every primary file it recorded as written was found.
//! Before the store accepts writes, [`Pending::finish`] rewrites every file
//! that does not hold two intact generations (it fell back, its previous
//! file is missing or damaged, or it does not exist yet: a new store, or
//! one written by a version without the record), and only then records
//! them all in `config/store`: a crash in between leaves files that exist
//! without being required, never a requirement without its file.

use super::layout::{self, Layout};
use crate::error::Result;
use crate::metafile::generations::MetadataFallback;
use crate::offsetstore::OffsetTable;
use crate::storage::Storage;
use crate::topic::TopicTable;
use std::path::Path;
use std::sync::Arc;

/// What is left to do once the tables are in place; see the module docs.
#[derive(Debug)]
pub(crate) struct Pending {
    layout: Layout,
    fallbacks: Vec<MetadataFallback>,
}

/// Reads the topic table, the consumer offsets and `config/store`.
///
/// # Errors
///
/// [`crate::Error::Corruption`] when a file has no intact generation, or a
/// primary file recorded in `config/store` is gone; [`crate::Error::Io`].
pub(crate) fn open(
    storage: &Arc<dyn Storage>,
    root: &Path,
    configured_units: u64,
) -> Result<(TopicTable, OffsetTable, Pending)> {
    let (topics, topics_fallback) = TopicTable::open_with_fallback(storage.clone(), root)?;
    let (offsets, offsets_fallback) = OffsetTable::open_with_fallback(storage.clone(), root)?;
    let present = (if topics.file_exists() { layout::TOPICS } else { 0 })
        | (if offsets.file_exists() { layout::OFFSETS } else { 0 });
    let layout = layout::open(storage.clone(), root, configured_units, present)?;
    let fallbacks = [topics_fallback, offsets_fallback, layout.fallback().cloned()].into_iter().flatten().collect();
    Ok((topics, offsets, Pending { layout, fallbacks }))
}

impl Pending {
    /// Consume-queue units per file recorded for this store.
    pub(crate) fn units(&self) -> u64 {
        self.layout.units()
    }

    /// Every fallback to a previous generation that happened.
    pub(crate) fn fallbacks(&self) -> &[MetadataFallback] {
        &self.fallbacks
    }

    /// Rewrites what does not hold two intact generations, then records
    /// every primary file in `config/store`.
    ///
    /// # Errors
    ///
    /// An I/O error from a write.
    pub(crate) fn finish(mut self, topics: &TopicTable, offsets: &OffsetTable) -> Result<()> {
        // Two writes at most: the first makes the current file the one in
        // use, the second moves it to an intact previous generation.
        for _ in 0..2 {
            if !topics.has_two_generations() {
                topics.rewrite()?;
            }
            if !offsets.has_two_generations() {
                offsets.rewrite()?;
            }
        }
        self.layout.record_primaries()
    }
}
