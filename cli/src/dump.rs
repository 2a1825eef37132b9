//! `mqstore dump`: one line per commit-log entry.

use crate::report::{chain, damage_line, fail, json_str, output_failed, Status};
use mqstore::commitlog::{CommitLog, DumpEntry, RecordStatus, COMMITLOG_DIR, SEGMENT_HEADER_LEN};
use mqstore::storage::StdStorage;
use mqstore::Error;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
#[command(
    about = "List commit-log records: offset, size, topic, queue, queue offset, CRC status",
    long_about = "List commit-log records, one line each: physical offset, size, topic, \
        queue id, queue offset, stored CRC and status (`ok`, or `end-of-segment` for \
        the marker that closes a segment).\n\n\
        Every record's CRC is verified. At the first damaged record the entries before it \
        are printed, then `corrupt at <file>:<pos>: <kind>` on stderr, and the exit status is 2.\n\n\
        Read-only: takes no lock and may run while the store is open in another process.",
    after_help = "Exit status: 0 success, 1 error (no commit log in DIR, I/O error, \
        bad arguments, --from not a record boundary or past the end of the log), \
        2 a damaged record was reached."
)]
pub struct DumpArgs {
    /// Store directory (the one holding `commitlog/`)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Physical offset to start at: a record boundary (an offset printed by
    /// an earlier dump) or the end of the log. An offset inside a segment
    /// header, such as the default 0, starts at that segment's first record.
    /// Any other offset is an error (exit 1)
    #[arg(long, value_name = "OFFSET", default_value_t = 0)]
    pub from: u64,
    /// Print at most N entries (end-of-segment markers included); 0 = all
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max: u64,
    /// Print one JSON object per line with keys offset, size, topic, queue,
    /// queue_offset, store_timestamp, crc (a number) and status
    #[arg(long)]
    pub json: bool,
}

/// Returned by a dump callback to stop the scan early; never shown.
fn stop() -> Error {
    Error::InvalidArgument("scan stopped by the caller".to_owned())
}

pub fn run(args: &DumpArgs) -> Status {
    let mut out = BufWriter::new(io::stdout().lock());
    let mut emitted = 0u64;
    let mut write_err: Option<io::Error> = None;
    let result = CommitLog::dump(&args.dir, &StdStorage, args.from, args.max, |e| {
        let line = if args.json { json_line(e) } else { text_line(e) };
        if let Err(err) = writeln!(out, "{line}") {
            write_err = Some(err);
            return Err(stop());
        }
        emitted += 1;
        Ok(())
    });
    if write_err.is_none() {
        write_err = out.flush().err();
    }
    drop(out);
    if let Some(e) = write_err {
        return output_failed(&e, Status::Ok);
    }
    match result {
        Ok(_) if emitted > 0 => Status::Ok,
        // Nothing printed: an empty log, `--from` at the end of the log, or
        // a `--from` that is not a record boundary; find out which.
        Ok(_) => match check_from(&args.dir, args.from) {
            Ok(FromCheck::Fine) => Status::Ok,
            Ok(FromCheck::Bad(msg)) => fail(msg),
            Ok(FromCheck::Damaged(e)) => damaged(&e),
            Err(e) => fail(chain(&e)),
        },
        Err(e @ Error::Corruption { .. }) => {
            if emitted == 0 {
                // Damage right at `--from` may just mean it is mid-record.
                if let Ok(FromCheck::Bad(msg)) = check_from(&args.dir, args.from) {
                    return fail(msg);
                }
            }
            damaged(&e)
        }
        Err(e) => fail(chain(&e)),
    }
}

fn damaged(e: &Error) -> Status {
    match e {
        Error::Corruption { path, offset, kind } => {
            let _ = writeln!(io::stderr().lock(), "{}", damage_line(path, *offset, kind));
            Status::Corrupt
        }
        other => fail(chain(other)),
    }
}

fn status_str(s: RecordStatus) -> &'static str {
    match s {
        RecordStatus::Ok => "ok",
        RecordStatus::EndOfSegment => "end-of-segment",
    }
}

fn text_line(e: &DumpEntry) -> String {
    let offset = e.offset.get();
    let status = status_str(e.status);
    if e.status == RecordStatus::EndOfSegment {
        let dash = "-";
        return format!(
            "offset={offset:<12} size={dash:<6} topic={dash:<16} queue={dash:<4} \
             queue_offset={dash:<10} crc={dash:<10} status={status}"
        );
    }
    let topic = quote_topic(&e.topic);
    format!(
        "offset={offset:<12} size={:<6} topic={topic:<16} queue={:<4} \
         queue_offset={:<10} crc={:#010x} status={status}",
        e.size, e.queue_id, e.queue_offset, e.crc
    )
}

/// The topic as is, or quoted and escaped when it would break the
/// whitespace-separated `key=value` format.
fn quote_topic(t: &str) -> String {
    let plain = !t.is_empty() && t.chars().all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '\\');
    if plain {
        t.to_owned()
    } else {
        format!("{t:?}")
    }
}

fn json_line(e: &DumpEntry) -> String {
    format!(
        r#"{{"offset":{},"size":{},"topic":{},"queue":{},"queue_offset":{},"store_timestamp":{},"crc":{},"status":"{}"}}"#,
        e.offset.get(),
        e.size,
        json_str(&e.topic),
        e.queue_id,
        e.queue_offset,
        e.store_timestamp,
        e.crc,
        status_str(e.status)
    )
}

/// What a scan from the start of the segment holding `--from` says about it.
enum FromCheck {
    /// A record boundary, inside a segment header, or exactly the end of the log.
    Fine,
    /// Not a usable start offset; the message says why.
    Bad(String),
    /// The log is damaged before `--from` is reached.
    Damaged(Error),
}

/// Base offsets of the segment files, ascending.
fn segment_bases(dir: &Path) -> mqstore::Result<Vec<u64>> {
    let logdir = dir.join(COMMITLOG_DIR);
    let io_err = |source| Error::Io { op: "list directory", path: logdir.clone(), source };
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(&logdir).map_err(io_err)? {
        let name = entry.map_err(io_err)?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(base) = name.parse::<u64>() {
                bases.push(base);
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Outcome of scanning forward from a segment base towards `target`.
struct Scan {
    /// Offset of the first entry at or after `target`.
    reached: Option<u64>,
    /// The last entry before `target`.
    prev: Option<DumpEntry>,
    result: mqstore::Result<u64>,
}

fn scan_to(dir: &Path, base: u64, target: u64) -> Scan {
    let mut prev = None;
    let mut reached = None;
    let result = CommitLog::dump(dir, &StdStorage, base, 0, |e| {
        if e.offset.get() >= target {
            reached = Some(e.offset.get());
            return Err(stop());
        }
        prev = Some(e.clone());
        Ok(())
    });
    Scan { reached, prev, result }
}

/// Scans from the start of the segment holding `from` to tell a record
/// boundary from an offset inside an entry or past the end of the log.
/// Costs up to one segment of reads; only used when a dump printed nothing.
fn check_from(dir: &Path, from: u64) -> mqstore::Result<FromCheck> {
    let bases = segment_bases(dir)?;
    let Some(idx) = bases.iter().rposition(|&b| b <= from) else {
        // Before the first segment: dump starts at the first record.
        return Ok(FromCheck::Fine);
    };
    let base = bases[idx];
    let first = base + SEGMENT_HEADER_LEN as u64;
    // Inside a segment header, dump starts at the segment's first record.
    let target = from.max(first);
    let scan = scan_to(dir, base, target);
    let not_boundary = |entry: u64, next: Option<u64>| {
        let next = next.map_or_else(String::new, |n| format!(", next entry at {n}"));
        FromCheck::Bad(format!("--from {from} is not a record boundary: it falls inside the entry at {entry}{next}"))
    };
    let past_end = |end: u64| FromCheck::Bad(format!("--from {from} is past the end of the log at {end}"));
    if let Some(at) = scan.reached {
        return Ok(if at == target {
            FromCheck::Fine
        } else {
            not_boundary(scan.prev.map_or(first, |p| p.offset.get()), Some(at))
        });
    }
    match scan.result {
        Ok(_) => {}
        Err(e @ Error::Corruption { .. }) => return Ok(FromCheck::Damaged(e)),
        Err(e) => return Err(e),
    }
    // The log ends at or before `target`.
    let end = match scan.prev {
        Some(p) if p.status == RecordStatus::EndOfSegment => {
            return Ok(not_boundary(p.offset.get(), None));
        }
        Some(p) => p.offset.get() + u64::from(p.size),
        // The segment holds nothing: the log reaches it only if the one
        // before closes with an end-of-segment marker.
        None => match idx.checked_sub(1).map(|i| bases[i]) {
            None => first,
            Some(prev_base) => {
                let before = scan_to(dir, prev_base, base);
                match before.result {
                    Ok(_) => {}
                    Err(e @ Error::Corruption { .. }) => return Ok(FromCheck::Damaged(e)),
                    Err(e) => return Err(e),
                }
                match before.prev {
                    Some(p) if p.status == RecordStatus::EndOfSegment => first,
                    Some(p) => p.offset.get() + u64::from(p.size),
                    None => prev_base + SEGMENT_HEADER_LEN as u64,
                }
            }
        },
    };
    Ok(if target == end { FromCheck::Fine } else { past_end(end) })
}
