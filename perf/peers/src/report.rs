//! The markdown tables printed to stdout.

use crate::run::{Spread, Summary};
use crate::stats::{count, short};
use crate::workload::Workload;

/// The table header (one table for all workloads, as the peer harness).
pub fn header() -> String {
    [
        "| peer | workload | msgs | write msgs/s | min-max | spread | MB/s | append-only msgs/s | read msgs/s | disk MB | x raw-mmap (min-max) | x raft-engine (min-max) | ok |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    .join("\n")
}

fn ratio(r: Option<Spread>) -> String {
    match r {
        Some(s) => format!("{:.2} ({:.2}-{:.2})", s.median, s.min, s.max),
        None => "-".to_string(),
    }
}

/// One table row.
pub fn row(w: &Workload, s: &Summary) -> String {
    format!(
        "| {} | {} | {} | {} | {}-{} | {:.0}% | {:.0} | {} | {} | {:.0} | {} | {} | {} |",
        s.variant.name(),
        w.name,
        count(w.messages),
        short(s.rate.median),
        short(s.rate.min),
        short(s.rate.max),
        s.rate.relative() * 100.0,
        s.mb_s.median,
        short(s.append_only.median),
        short(s.read.median),
        s.disk_mb,
        ratio(s.x_raw_mmap),
        ratio(s.x_raft_engine),
        if s.ok { "yes" } else { "NO" },
    )
}

/// The notes under the table.
pub fn notes() -> &'static str {
    "Columns: *write* = appends + sync points + the final flush (median of the rounds, \
min-max and spread = (max-min)/median); *MB/s* = payload bytes at the write rate; \
*append-only* = the same run timed before the final flush (equal to *write* when the \
last write is itself durable); *read* = reading every message back right after the \
write (same handle, hot page cache); *disk* = allocated bytes after the flush; \
*x raw-mmap* / *x raft-engine* = this row's write rate divided by that peer's in the \
same round, medianed over the rounds (>1 = this row faster); *ok* = every round read \
back and verified every message."
}
