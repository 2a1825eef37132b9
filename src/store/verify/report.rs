//! What [`verify`](super::verify) found: [`VerifyReport`] with its
//! counts and [`Problem`]s.

use crate::error::CorruptionKind;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Problems kept per file; more are counted in
/// [`VerifyReport::problems_omitted`], so a badly damaged file cannot
/// flood the report or memory.
pub const MAX_PROBLEMS_PER_FILE: usize = 16;

/// How serious a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Severity {
    /// Bytes that are wrong and no crash explains: damaged media, a stray
    /// write, a file replaced or lost. `mqstore verify` exits 2.
    Corruption,
    /// Damage at the commit log's tail, past the flushed offset of a store
    /// that did not shut down cleanly (or is running), with no valid record
    /// after it: what a crash leaves. The next open truncates it.
    TornTail,
    /// What a crash or an interrupted retention round leaves and the next
    /// open fixes: derived data ahead of the commit log (consume-queue
    /// units past its end), a missing derived file, a metadata file whose
    /// current generation is missing (its previous one is used), segments
    /// left below the retention floor. Not corruption.
    Stale,
}

impl Severity {
    /// Lower-case name used in reports (`corruption`, `torn-tail`, `stale`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Corruption => "corruption",
            Self::TornTail => "torn-tail",
            Self::Stale => "stale",
        }
    }
}

/// What is wrong at a [`Problem`]'s position.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A structure failed its own checks (magic, CRC, length, a field out
    /// of range, a file where none should be, or missing).
    Damaged(CorruptionKind),
    /// A file every opened store has is missing.
    Missing,
    /// A metadata file's current generation is not newer than its previous
    /// one: an older copy was put back (open uses the previous one).
    OlderGeneration {
        /// The current file's generation.
        generation: u64,
        /// The previous file's.
        previous: u64,
    },
    /// A consume-queue unit or index entry points where no record starts
    /// in a readable part of the commit log.
    NoRecord {
        /// The physical offset it points at.
        physical: u64,
    },
    /// Consume-queue units or index entries that point into a part of the
    /// commit log that is damaged or missing, so they cannot be checked (a
    /// consequence of that damage). Reported once per file.
    DamagedRecord {
        /// How many.
        count: u64,
        /// The physical offset the first of them points at.
        physical: u64,
    },
    /// A consume-queue unit, index entry or checkpoint disagrees with the
    /// record it points at.
    Mismatch {
        /// The field that differs (`topic`, `queue id`, `queue offset`,
        /// `size`, `tag hash`, `incarnation`, `key`, `store timestamp`,
        /// `crc`).
        field: &'static str,
        /// What the pointer says.
        stored: String,
        /// What the record says.
        record: String,
    },
    /// Records below the newest index entry's record that lack an entry
    /// for one of their keys: an index file was lost. Lookups miss them,
    /// and open does not notice (index files are named by their first
    /// offset, so a missing one looks like records without keys), so this
    /// is not rebuilt on open; removing the `index/` directory makes the
    /// next open index the whole log again. Reported once per segment
    /// file, at the first such record.
    Unindexed {
        /// How many records.
        count: u64,
        /// The first missing key of the first of them.
        key: String,
    },
    /// Consume-queue units or index entries that point at or past the end
    /// of the commit log (dropped on open). Reported once per file.
    PastLogEnd {
        /// How many.
        count: u64,
        /// The physical offset the first of them points at.
        physical: u64,
        /// The end of the log.
        log_end: u64,
    },
    /// Segments below the retention floor: left by an interrupted
    /// retention round, removed on open.
    BelowFloor {
        /// The floor (`config/retention`).
        floor: u64,
    },
    /// A consume queue has non-empty units after an empty one: its queue
    /// offsets are not contiguous.
    Hole {
        /// Queue offset of the empty unit (the queue's end for readers).
        queue_offset: u64,
        /// Non-empty units after it.
        following: u64,
    },
    /// Consume-queue units whose physical offsets do not increase.
    NotIncreasing {
        /// Queue offset of the unit.
        queue_offset: u64,
    },
    /// A consume-queue file is missing between two others.
    MissingFile {
        /// The queue offset the missing file would start at.
        first: u64,
    },
    /// A stored position lies beyond the end of its queue.
    BeyondQueue {
        /// `consumer offset` or `delay progress`.
        what: &'static str,
        /// Whose, on which queue.
        queue: String,
        /// The stored value.
        value: u64,
        /// The queue's end.
        max: u64,
    },
    /// A consume queue covers less than the dispatch checkpoint says it
    /// did: units were lost.
    QueueShrank {
        /// Start and end now.
        now: (u64, u64),
        /// Start and end in the checkpoint.
        checkpointed: (u64, u64),
    },
    /// The commit log ends before the checkpoint's flushed offset: records
    /// once durable are gone.
    LogBehindCheckpoint {
        /// The checkpoint's flushed offset.
        flushed: u64,
        /// Where the log's valid prefix ends.
        log_end: u64,
    },
}

impl ProblemKind {
    /// A short, stable token for machine output (`damaged`, `missing`,
    /// `older-generation`, `no-record`,
    /// `damaged-record`, `mismatch`, `past-log-end`,
    /// `unindexed`, `below-floor`, `hole`, `not-increasing`, `missing-file`, `beyond-queue`,
    /// `queue-shrank`, `log-behind-checkpoint`).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Damaged(_) => "damaged",
            Self::Missing => "missing",
            Self::OlderGeneration { .. } => "older-generation",
            Self::NoRecord { .. } => "no-record",
            Self::DamagedRecord { .. } => "damaged-record",
            Self::Mismatch { .. } => "mismatch",
            Self::PastLogEnd { .. } => "past-log-end",
            Self::Unindexed { .. } => "unindexed",
            Self::BelowFloor { .. } => "below-floor",
            Self::Hole { .. } => "hole",
            Self::NotIncreasing { .. } => "not-increasing",
            Self::MissingFile { .. } => "missing-file",
            Self::BeyondQueue { .. } => "beyond-queue",
            Self::QueueShrank { .. } => "queue-shrank",
            Self::LogBehindCheckpoint { .. } => "log-behind-checkpoint",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Damaged(kind) => write!(f, "{kind}"),
            Self::Missing => f.write_str("missing"),
            Self::OlderGeneration { generation, previous } => {
                write!(f, "generation {generation} is not newer than the previous file's {previous}")
            }
            Self::NoRecord { physical } => write!(f, "points at {physical}, where no record starts"),
            Self::DamagedRecord { count, physical } => {
                write!(f, "{count} pointing into damaged or missing log data (first: {physical})")
            }
            Self::Mismatch { field, stored, record } => {
                write!(f, "{field} {stored} differs from the record's {record}")
            }
            Self::Unindexed { count, key } => {
                write!(f, "{count} records from here lack index entries (first missing key: {key:?})")
            }
            Self::PastLogEnd { count, physical, log_end } => {
                write!(f, "{count} pointing at or past the log's end {log_end} (first: {physical})")
            }
            Self::BelowFloor { floor } => write!(f, "segment below the retention floor {floor}, removed on open"),
            Self::Hole { queue_offset, following } => {
                write!(f, "empty unit at queue offset {queue_offset} followed by {following} non-empty ones")
            }
            Self::NotIncreasing { queue_offset } => {
                write!(f, "unit at queue offset {queue_offset} does not increase the physical offset")
            }
            Self::MissingFile { first } => write!(f, "file for queue offset {first} is missing"),
            Self::BeyondQueue { what, queue, value, max } => {
                write!(f, "{what} {value} of {queue} beyond the queue's end {max}")
            }
            Self::QueueShrank { now, checkpointed } => write!(
                f,
                "queue spans [{}, {}) but the dispatch checkpoint recorded [{}, {})",
                now.0, now.1, checkpointed.0, checkpointed.1
            ),
            Self::LogBehindCheckpoint { flushed, log_end } => {
                write!(f, "log ends at {log_end}, before the checkpoint's flushed offset {flushed}")
            }
        }
    }
}

/// One problem: where, what, how serious, and whether the next open can
/// rebuild it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or directory) where it is.
    pub path: PathBuf,
    /// Byte offset in that file.
    pub offset: u64,
    /// What is wrong.
    pub kind: ProblemKind,
    /// How serious it is.
    pub severity: Severity,
    /// Whether it lies in derived data (consume queues, index, checkpoint,
    /// dispatch checkpoint, delay progress, consumer membership) that the
    /// next open rebuilds from the commit log without loss. `false` for
    /// the commit log, the topic table, consumer offsets, store layout and
    /// retention floor, which nothing can rebuild, and for
    /// [`ProblemKind::Unindexed`], which open does not repair.
    pub derived: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data = if self.derived { "derived, rebuilt on open" } else { "primary data" };
        write!(f, "{} at {}:{}: {} ({data})", self.severity.name(), self.path.display(), self.offset, self.kind)
    }
}

/// Result of [`verify`](super::verify).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Commit-log segment files whose header checked out.
    pub segments: usize,
    /// Records whose framing and CRC checked out, from the log's start up
    /// to [`VerifyReport::end`].
    pub records: u64,
    /// End of the log's valid prefix: the first damage, or the end of the
    /// written log.
    pub end: u64,
    /// The log's first record position.
    pub log_start: u64,
    /// The end of the log: where the scan of the last segment ended (past
    /// damage, scanning resumes at the next segment), or the checkpoint's
    /// flushed offset if that lies beyond (everything below it was once
    /// written, so damage there is not the end). Consume-queue units and
    /// index entries at or past it are stale.
    pub log_end: u64,
    /// Valid records found after damage, in later segments.
    pub records_after_damage: u64,
    /// Consume-queue units and index entries pointing below the log's
    /// first record, removed by retention (no problem).
    pub expired: u64,
    /// Topics in `config/topics`.
    pub topics: usize,
    /// Consume queues with files.
    pub queues: usize,
    /// Non-empty consume-queue units checked.
    pub units: u64,
    /// Index files.
    pub index_files: usize,
    /// Index entries checked.
    pub index_entries: u64,
    /// Committed consumer offsets checked.
    pub consumer_offsets: usize,
    /// The problems found, in the order checked (at most
    /// [`MAX_PROBLEMS_PER_FILE`] per file).
    pub problems: Vec<Problem>,
    /// Problems found but not kept, past the per-file limit.
    pub problems_omitted: u64,
    /// Problems per severity, including omitted ones.
    pub counts: Counts,
}

/// Problems per [`Severity`], including ones omitted from the list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// [`Severity::Corruption`].
    pub corruption: u64,
    /// [`Severity::TornTail`].
    pub torn_tail: u64,
    /// [`Severity::Stale`].
    pub stale: u64,
}

impl VerifyReport {
    /// True when nothing is corrupt (a torn tail and stale derived data are
    /// expected after a crash and fixed by the next open).
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.counts.corruption == 0
    }

    /// Every problem found, including omitted ones.
    #[must_use]
    pub fn problems_total(&self) -> u64 {
        self.counts.corruption + self.counts.torn_tail + self.counts.stale
    }

    /// The first problem of `severity`, if any was kept.
    #[must_use]
    pub fn first(&self, severity: Severity) -> Option<&Problem> {
        self.problems.iter().find(|p| p.severity == severity)
    }
}

/// Collects problems, capping how many are kept per file.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    pub(crate) report: VerifyReport,
    per_file: HashMap<PathBuf, usize>,
}

impl Problems {
    pub(crate) fn push(&mut self, path: &Path, offset: u64, kind: ProblemKind, severity: Severity, derived: bool) {
        let r = &mut self.report;
        match severity {
            Severity::Corruption => r.counts.corruption += 1,
            Severity::TornTail => r.counts.torn_tail += 1,
            Severity::Stale => r.counts.stale += 1,
        }
        let n = self.per_file.entry(path.to_path_buf()).or_default();
        if *n >= MAX_PROBLEMS_PER_FILE {
            r.problems_omitted += 1;
            return;
        }
        *n += 1;
        r.problems.push(Problem { path: path.to_path_buf(), offset, kind, severity, derived });
    }

    /// A structural defect: corruption.
    pub(crate) fn damaged(&mut self, path: &Path, offset: u64, kind: CorruptionKind, derived: bool) {
        self.push(path, offset, ProblemKind::Damaged(kind), Severity::Corruption, derived);
    }

    /// The report, problems ordered by file kind (commit log, checkpoint,
    /// config, consume queues, index), in check order within each.
    pub(crate) fn into_report(self, root: &Path) -> VerifyReport {
        let mut r = self.report;
        let rank = |p: &Problem| {
            let rel = p.path.strip_prefix(root).unwrap_or(&p.path);
            ["commitlog", "checkpoint", "config", "consumequeue", "index"]
                .iter()
                .position(|k| rel.starts_with(k))
                .unwrap_or(5)
        };
        r.problems.sort_by_key(rank);
        r
    }

    /// A typed corruption error from a reader, as a problem; other errors
    /// are passed back.
    pub(crate) fn corrupt_or_fail(&mut self, e: crate::Error, derived: bool) -> crate::Result<()> {
        match e {
            crate::Error::Corruption { path, offset, kind } => {
                self.damaged(&path, offset, kind, derived);
                Ok(())
            }
            other => Err(other),
        }
    }
}
