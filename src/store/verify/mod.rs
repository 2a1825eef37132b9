//! [`verify`]: an offline, read-only check of a whole store directory.
//!
//! It checks every file kind and reports each problem with its file and
//! byte offset ([`Problem`]), how serious it is ([`Severity`]) and whether
//! the next open rebuilds it ([`Problem::derived`]):
//!
//! * **commit log**: every segment header, gaps and overlaps between
//!   segments, short segments, and the framing and CRC of every record;
//!   zeros before the end and non-zero bytes after it. Damage past the
//!   flushed offset of a store that did not shut down cleanly, with no
//!   valid record after it, is a torn tail ([`Severity::TornTail`]);
//!   anything else is corruption. Past damage, checking resumes at the
//!   next segment. A bad record past the flushed offset is read again for
//!   up to about 3 ms first: beside a live store it may be a record the
//!   writer is still copying in.
//! * **consume queues**: file names, lengths and contiguity; units
//!   contiguous (no empty unit before a non-empty one) with increasing
//!   physical offsets; every unit points at a record that exists, of its
//!   topic (current incarnation), queue id and queue offset, with its size
//!   and tag hash. Units past the log's end are [`Severity::Stale`].
//! * **index files**: header, seal, the entry prefix (CRC, order, chain
//!   links), the slots of sealed files, and every entry points at a record
//!   carrying its key (or unique id) with its store time.
//! * **small files**: the checkpoint, `config/store`, `config/topics`,
//!   `config/consumer_offsets`, `config/retention`, `config/delay`,
//!   `config/dispatch` and `config/consumers` each decode (for the files
//!   kept in two generations, a fallback to the previous one is reported);
//!   the primary files `config/store` records exist; committed offsets and
//!   delay progress lie within their queues; queues cover what the
//!   dispatch checkpoint recorded; the log reaches the checkpoint's flushed
//!   offset and holds its record mark, and starts at the retention floor
//!   (units and index entries below the floor point at records retention
//!   removed, which is no problem).
//!
//! Read-only: it takes no lock, opens every file for reading only, and
//! never writes, maps, creates, renames or deletes anything, so it can run
//! beside a live store (it reads the small files first, then the queues
//! and index, then the log, each of which only grows, so a live writer
//! does not look like damage) and on a read-only copy. It never repairs.
//!
//! Memory: every consume-queue unit and index entry is held while the log
//! is scanned (32 bytes each), so checking is one sequential pass over
//! every file.
//!
//! ```
//! use mqstore::message::Message;
//! use mqstore::store::{verify, Store, StoreOptions};
//! use mqstore::topic::TopicConfig;
//! # fn main() -> mqstore::Result<()> {
//! let dir = tempfile::tempdir().map_err(|e| mqstore::Error::InvalidArgument(e.to_string()))?;
//! let store = Store::open(dir.path(), StoreOptions::default())?;
//! store.create_topic(TopicConfig::new("orders", 2))?;
//! store.send(Message::new("orders", "hello").with_key("o-1"))?;
//! store.close()?;
//! let report = verify::verify(dir.path())?;
//! assert!(report.is_healthy() && report.problems.is_empty());
//! assert_eq!((report.records, report.units, report.index_entries), (1, 1, 2));
//! # Ok(())
//! # }
//! ```

mod join;
mod meta;
mod report;

pub(crate) use report::Problems;
pub use report::{Counts, Problem, ProblemKind, Severity, VerifyReport, MAX_PROBLEMS_PER_FILE};

use crate::commitlog::walk::{self, LogDamage};
use crate::commitlog::{COMMITLOG_DIR, SEGMENT_HEADER_LEN};
use crate::error::{Error, Result};
use crate::storage::{StdStorage, Storage};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Checks the store in `dir` (see the [module docs](self)). `Err` only
/// when the check cannot run: [`Error::InvalidArgument`] when `dir` holds
/// no commit log, [`Error::Io`] when a file cannot be read. Everything
/// wrong with the files is in the report.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport> {
    verify_with(dir, Arc::new(StdStorage))
}

/// [`verify`] through `storage` (for example a fault-injecting or
/// simulated backend).
pub fn verify_with(dir: impl AsRef<Path>, storage: Arc<dyn Storage>) -> Result<VerifyReport> {
    let root = dir.as_ref();
    let st = storage.as_ref();
    let logdir = root.join(COMMITLOG_DIR);
    if !st.exists(&logdir).map_err(|e| Error::io("stat", &logdir, e))? {
        return Err(Error::InvalidArgument(format!("{} holds no commit log", root.display())));
    }
    let mut p = Problems::default();
    let meta = meta::read(&storage, root, &mut p)?;
    let (queues, units) = crate::consumequeue::check::load(st, root, meta.units_per_file, &mut p)?;
    let (index_files, entries) = crate::index::check::load(st, root, &mut p)?;
    let (n_units, n_entries) = (units.len() as u64, entries.len() as u64);
    let since: HashMap<String, u64> = meta.topics.iter().map(|(c, s)| (c.name.clone(), *s)).collect();
    let mark = meta.checkpoint.and_then(|c| c.last_record);
    let mut join = join::Join::new(root, &queues, units, &index_files, entries, since, mark);
    join.floor = meta.floor;
    let tail_from = walk::torn_tail_from(meta.checkpoint.as_ref());
    let log = walk::walk(root, st, tail_from, |w| {
        join.feed(w, &mut p);
        Ok(())
    })?;
    for d in &log.damage {
        log_damage(&mut p, d);
    }
    for (path, (count, pos, key)) in &join.unindexed {
        let kind = ProblemKind::Unindexed { count: *count, key: key.clone() };
        // Not rebuilt on open (see `ProblemKind::Unindexed`).
        p.push(path, *pos, kind, Severity::Corruption, false);
    }
    for (path, pos) in &join.bad_records {
        p.damaged(path, *pos, crate::CorruptionKind::InvalidField { field: "properties" }, false);
    }
    if let Some(m) = mark.filter(|m| !join.mark_seen && m.offset >= log.start && m.offset < log.end) {
        let kind = ProblemKind::NoRecord { physical: m.offset };
        p.push(&root.join(crate::commitlog::CHECKPOINT_FILE), 32, kind, Severity::Corruption, true);
    }
    // Everything below the checkpoint's flushed offset was written, so
    // damage before it is not the log's end: pointers into it are damage,
    // not stale.
    let log_end = log.end.max(meta.checkpoint.map_or(0, |c| c.flushed));
    // The log's first segment must be at the retention floor (FORMAT.md
    // 17.3): above it, segments are missing; below it, a retention round
    // was interrupted (open finishes it).
    let first_base = (log.segments > 0).then(|| log.start - SEGMENT_HEADER_LEN as u64);
    let logdir = root.join(COMMITLOG_DIR);
    match first_base {
        Some(base) if base > meta.floor => {
            let field = "first segment (segments below it are missing)";
            p.damaged(&logdir, meta.floor, crate::CorruptionKind::InvalidField { field }, false);
        }
        Some(base) if base < meta.floor => {
            let path = logdir.join(format!("{base:020}"));
            p.push(&path, 0, ProblemKind::BelowFloor { floor: meta.floor }, Severity::Stale, false);
        }
        _ => {}
    }
    let below_start_expected = first_base.is_some_and(|b| b <= meta.floor);
    let expired = join.finish(log.start, log_end, below_start_expected, &mut p);
    meta::cross_check(&meta, root, &queues, (log.end, log_end, !log.damage.is_empty()), &mut p);

    let mut report = p.into_report(root);
    report.segments = log.segments;
    report.records = log.prefix_records;
    report.end = log.prefix_end;
    report.log_start = log.start;
    report.log_end = log_end;
    report.records_after_damage = log.records_after;
    report.expired = expired;
    report.topics = meta.topics.len();
    report.queues = queues.len();
    report.units = n_units;
    report.index_files = index_files.len();
    report.index_entries = n_entries;
    report.consumer_offsets = meta.offsets.len();
    Ok(report)
}

fn log_damage(p: &mut Problems, d: &LogDamage) {
    let severity = if d.torn { Severity::TornTail } else { Severity::Corruption };
    p.push(&d.path, d.pos, ProblemKind::Damaged(d.kind.clone()), severity, false);
}
