//! `mqstore verify`: a full CRC scan of the commit log.

use crate::report::{chain, damage_json, damage_line, fail, print_line, Status};
use mqstore::commitlog::{CommitLog, VerifyReport};
use mqstore::storage::StdStorage;
use mqstore::{CorruptionKind, Error};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
#[command(
    about = "Verify the CRC and framing of every commit-log record",
    long_about = "Verify the CRC and framing of every commit-log record.\n\n\
        Read-only: takes no lock and may run while the store is open \
        in another process. Damage past the last flushed offset of a store \
        that did not shut down cleanly is reported as a torn tail (exit 0); \
        the next open truncates it. Any other damage is corruption (exit 2).",
    after_help = "Exit status: 0 healthy (possibly with a torn tail), \
        1 error (no commit log in DIR, I/O error, bad arguments), 2 corruption found."
)]
pub struct VerifyArgs {
    /// Store directory (the one holding `commitlog/`)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Print one JSON object with keys segments, records, end, healthy,
    /// corruption and torn_tail (each null or {file, offset, kind})
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &VerifyArgs) -> Status {
    match CommitLog::verify(&args.dir, &StdStorage) {
        Ok(report) => {
            let status = if report.is_healthy() { Status::Ok } else { Status::Corrupt };
            let line = if args.json { report_json(&report) } else { report_text(&report) };
            print_line(&line, status)
        }
        // Damage found before the scan could start (a bad segment header,
        // a gap between segments).
        Err(Error::Corruption { path, offset, kind }) => {
            let line = if args.json {
                format!(
                    r#"{{"segments":null,"records":null,"end":null,"healthy":false,"corruption":{},"torn_tail":null}}"#,
                    damage_json(Some((&path, offset, &kind)))
                )
            } else {
                format!("CORRUPT: {}", damage_line(&path, offset, &kind))
            };
            print_line(&line, Status::Corrupt)
        }
        Err(e) => fail(chain(&e)),
    }
}

fn report_text(r: &VerifyReport) -> String {
    let counts =
        format!("{} segment{}, {} record{}", r.segments, plural(r.segments as u64), r.records, plural(r.records));
    if let Some((path, pos, kind)) = &r.corruption {
        return format!(
            "CORRUPT: {counts} verified before the damage at offset {}; {}",
            r.end,
            damage_line(path, *pos, kind)
        );
    }
    let mut line = format!("OK: {counts}, end offset {}", r.end);
    if let Some((path, pos, kind)) = &r.torn_tail {
        line.push_str(&format!("; torn tail at {}:{pos} ({kind}), will be truncated on next open", path.display()));
    }
    line
}

fn report_json(r: &VerifyReport) -> String {
    format!(
        r#"{{"segments":{},"records":{},"end":{},"healthy":{},"corruption":{},"torn_tail":{}}}"#,
        r.segments,
        r.records,
        r.end,
        r.is_healthy(),
        damage_json(borrowed(&r.corruption)),
        damage_json(borrowed(&r.torn_tail))
    )
}

type Damage = (PathBuf, u64, CorruptionKind);

fn borrowed(d: &Option<Damage>) -> Option<(&Path, u64, &CorruptionKind)> {
    d.as_ref().map(|(p, o, k)| (p.as_path(), *o, k))
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
