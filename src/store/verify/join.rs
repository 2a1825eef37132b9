//! Checking consume-queue units and index entries against the records
//! they point at, in one pass over the commit log.
//!
//! Units and entries are sorted by physical offset and merged with the
//! walk, which meets records in ascending offset order, so each record is
//! read once and nothing of the log is kept in memory. Units and entries
//! that meet no record are classified at the end, when the log's start,
//! end and damaged ranges are all known.

use super::report::{ProblemKind, Problems, Severity};
use crate::commitlog::walk::Walked;
use crate::commitlog::{RecordMark, CHECKPOINT_FILE};
use crate::consumequeue::check::{QueueFiles, UnitAt};
use crate::index::check::{EntryAt, IndexFileAt};
use crate::store::dispatch::scan_properties;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Counts of pointers that meet no record, per file, reported once each.
#[derive(Default)]
struct Tally {
    /// Whether the log's start is the retention floor, so pointers below
    /// it lead to removed records.
    below_start_expected: bool,
    /// Below the log's start, removed by retention.
    expired: u64,
    past_end: BTreeMap<PathBuf, (u64, u64, u64)>,
    damaged: BTreeMap<PathBuf, (u64, u64, u64)>,
}

pub(super) struct Join<'a> {
    pub(super) root: &'a Path,
    pub(super) queues: &'a [QueueFiles],
    pub(super) units: Vec<UnitAt>,
    pub(super) index_files: &'a [IndexFileAt],
    pub(super) entries: Vec<EntryAt>,
    /// `since` of every topic: records below it belong to an earlier
    /// incarnation.
    pub(super) since: HashMap<String, u64>,
    /// The checkpoint's record mark, checked when its record comes by.
    pub(super) mark: Option<RecordMark>,
    pub(super) mark_seen: bool,
    ui: usize,
    ei: usize,
    skipped: Vec<(u64, u64)>,
    /// Units (by index) and entries that met no record.
    lost_units: Vec<usize>,
    lost_entries: Vec<usize>,
    /// Physical offset of the newest index entry.
    index_last: Option<u64>,
    /// The retention floor: records below it may have lost their index.
    pub(super) floor: u64,
    /// Per segment file: records lacking an index entry (count, position
    /// of the first, its first missing key).
    pub(super) unindexed: BTreeMap<PathBuf, (u64, u64, String)>,
    /// Records whose properties do not decode: segment file and position.
    pub(super) bad_records: Vec<(PathBuf, u64)>,
}

impl<'a> Join<'a> {
    pub(super) fn new(
        root: &'a Path,
        queues: &'a [QueueFiles],
        mut units: Vec<UnitAt>,
        index_files: &'a [IndexFileAt],
        mut entries: Vec<EntryAt>,
        since: HashMap<String, u64>,
        mark: Option<RecordMark>,
    ) -> Self {
        units.sort_by_key(|u| u.unit.physical_offset.0);
        entries.sort_by_key(|e| e.phy);
        let index_last = entries.last().map(|e| e.phy);
        Self {
            index_last,
            floor: 0,
            unindexed: BTreeMap::new(),
            root,
            queues,
            units,
            index_files,
            entries,
            since,
            mark,
            mark_seen: false,
            ui: 0,
            ei: 0,
            skipped: Vec::new(),
            lost_units: Vec::new(),
            lost_entries: Vec::new(),
            bad_records: Vec::new(),
        }
    }

    /// Takes one step of the walk.
    pub(super) fn feed(&mut self, w: Walked<'_>, problems: &mut Problems) {
        match w {
            Walked::Skipped { from, to } => self.skipped.push((from, to)),
            Walked::Record { offset, view, parts, path, pos } => {
                let bytes = view.bytes;
                // The walk validated the record: its topic is UTF-8.
                let topic = std::str::from_utf8(&bytes[parts.topic.0..parts.topic.1]).unwrap_or_default();
                let Some(found) = scan_properties(&bytes[parts.properties.0..parts.properties.1]) else {
                    self.bad_records.push((path.to_path_buf(), pos));
                    return;
                };
                if let Some(m) = self.mark.filter(|m| m.offset == offset) {
                    self.mark_seen = true;
                    if m.crc != view.crc() {
                        let kind = ProblemKind::Mismatch {
                            field: "crc",
                            stored: format!("{:#010x}", m.crc),
                            record: format!("{:#010x}", view.crc()),
                        };
                        problems.push(&self.root.join(CHECKPOINT_FILE), 40, kind, Severity::Corruption, true);
                    }
                }
                let rec = Rec {
                    offset,
                    size: bytes.len() as u64,
                    topic,
                    queue_id: view.queue_id(),
                    queue_offset: view.queue_offset(),
                    tag: found.unit_tag(topic),
                    store_ts: view.store_timestamp(),
                };
                self.units_at(&rec, problems);
                let names: Vec<&str> = found.index_keys(topic).collect();
                let keys: Vec<(u32, u32)> =
                    names.iter().map(|k| crate::index::file::key_hashes(&crate::index::index_key(topic, k))).collect();
                let matched = self.entries_at(&rec, &keys, problems);
                // Everything below the newest entry's record is indexed
                // (FORMAT.md 15.5), if dispatch indexed it at all: records
                // of live topics, current incarnation.
                let live = self.since.get(topic).is_some_and(|&s| offset >= s);
                // Retention removes the index files of records below its floor.
                let kept = offset >= self.floor;
                if live && kept && self.index_last.is_some_and(|last| offset < last) {
                    if let Some(k) = (0..keys.len()).find(|&k| !matched.contains(&k)) {
                        let t = self.unindexed.entry(path.to_path_buf()).or_insert((0, pos, names[k].to_string()));
                        t.0 += 1;
                    }
                }
            }
        }
    }

    fn units_at(&mut self, rec: &Rec<'_>, problems: &mut Problems) {
        while let Some(u) = self.units.get(self.ui) {
            let phys = u.unit.physical_offset.0;
            if phys > rec.offset {
                break;
            }
            if phys < rec.offset {
                self.lost_units.push(self.ui);
            } else if let Some((field, stored, record)) = self.unit_mismatch(u, rec) {
                let (path, pos) = self.queues[u.queue as usize].locate(u.queue_offset);
                let kind = ProblemKind::Mismatch { field, stored, record };
                problems.push(&path, pos, kind, Severity::Corruption, true);
            }
            self.ui += 1;
        }
    }

    /// The first field in which unit `u` disagrees with `rec`.
    fn unit_mismatch(&self, u: &UnitAt, rec: &Rec<'_>) -> Option<(&'static str, String, String)> {
        let q = &self.queues[u.queue as usize];
        let since = self.since.get(&q.topic).copied();
        let checks: [(&'static str, String, String); 6] = [
            ("topic", q.topic.clone(), rec.topic.to_string()),
            ("queue id", q.queue_id.to_string(), rec.queue_id.to_string()),
            ("queue offset", u.queue_offset.to_string(), rec.queue_offset.to_string()),
            ("size", u.unit.size.to_string(), rec.size.to_string()),
            ("tag hash", u.unit.tag_hash.to_string(), rec.tag.to_string()),
            // A unit of the current incarnation must not lead to a record
            // of an earlier one (below the topic's `since`).
            (
                "incarnation",
                format!("since {}", since.unwrap_or(0)),
                if since.is_some_and(|s| rec.offset < s) {
                    "earlier".into()
                } else {
                    format!("since {}", since.unwrap_or(0))
                },
            ),
        ];
        checks.into_iter().find(|(_, a, b)| a != b)
    }

    /// Checks the entries at `rec`; returns which of `keys` they cover.
    fn entries_at(&mut self, rec: &Rec<'_>, keys: &[(u32, u32)], problems: &mut Problems) -> Vec<usize> {
        let mut matched = Vec::new();
        while let Some(e) = self.entries.get(self.ei) {
            if e.phy > rec.offset {
                break;
            }
            if e.phy < rec.offset {
                self.lost_entries.push(self.ei);
            } else {
                let (path, pos) = e.pos(self.index_files);
                let key = keys.iter().position(|&k| k == (e.key_hash, e.key_crc));
                matched.extend(key);
                if key.is_none() {
                    let kind = ProblemKind::Mismatch {
                        field: "key",
                        stored: format!("hash {:#x}/{:#x}", e.key_hash, e.key_crc),
                        record: format!("{} keys", keys.len()),
                    };
                    problems.push(&path, pos, kind, Severity::Corruption, true);
                } else if e.ts != rec.store_ts {
                    let kind = ProblemKind::Mismatch {
                        field: "store timestamp",
                        stored: e.ts.to_string(),
                        record: rec.store_ts.to_string(),
                    };
                    problems.push(&path, pos, kind, Severity::Corruption, true);
                }
            }
            self.ei += 1;
        }
        matched
    }

    /// Classifies every unit and entry that met no record, once the walk
    /// is over: below the log's start (removed by retention when
    /// `below_start_expected`, which is no problem; else lost with missing
    /// segments), at or past its end (stale), inside damaged data, or where
    /// no record starts. Returns how many pointed below the start as
    /// expected.
    pub(super) fn finish(
        mut self,
        log_start: u64,
        log_end: u64,
        below_start_expected: bool,
        problems: &mut Problems,
    ) -> u64 {
        self.lost_units.extend(self.ui..self.units.len());
        self.lost_entries.extend(self.ei..self.entries.len());
        let mut tally = Tally { below_start_expected, ..Tally::default() };
        for &i in &self.lost_units {
            let u = self.units[i];
            let (path, pos) = self.queues[u.queue as usize].locate(u.queue_offset);
            self.lost(&path, pos, u.unit.physical_offset.0, log_start, log_end, &mut tally, problems);
        }
        for &i in &self.lost_entries {
            let e = self.entries[i];
            let (path, pos) = e.pos(self.index_files);
            self.lost(&path, pos, e.phy, log_start, log_end, &mut tally, problems);
        }
        for (path, (count, physical, pos)) in tally.past_end {
            let kind = ProblemKind::PastLogEnd { count, physical, log_end };
            problems.push(&path, pos, kind, Severity::Stale, true);
        }
        for (path, (count, physical, pos)) in tally.damaged {
            problems.push(&path, pos, ProblemKind::DamagedRecord { count, physical }, Severity::Corruption, true);
        }
        tally.expired
    }

    #[allow(clippy::too_many_arguments)]
    fn lost(
        &self,
        path: &Path,
        pos: u64,
        physical: u64,
        log_start: u64,
        log_end: u64,
        tally: &mut Tally,
        problems: &mut Problems,
    ) {
        if physical < log_start && tally.below_start_expected {
            tally.expired += 1;
        } else if physical >= log_end {
            tally.past_end.entry(path.to_path_buf()).or_insert((0, physical, pos)).0 += 1;
        } else if physical < log_start || self.skipped.iter().any(|&(a, b)| physical >= a && physical < b) {
            tally.damaged.entry(path.to_path_buf()).or_insert((0, physical, pos)).0 += 1;
        } else {
            problems.push(path, pos, ProblemKind::NoRecord { physical }, Severity::Corruption, true);
        }
    }
}

/// What a record says, for comparing with the pointers to it.
struct Rec<'r> {
    offset: u64,
    size: u64,
    topic: &'r str,
    queue_id: u32,
    queue_offset: u64,
    tag: u64,
    store_ts: u64,
}
