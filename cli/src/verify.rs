//! `mqstore verify`: checks every file of a store directory
//! ([`mqstore::store::verify`]) and prints what it found.

use crate::report::{chain, fail, json_str, output_failed, Status};
use mqstore::store::verify::{self, Problem, Severity, VerifyReport};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    about = "Check every file of a store: commit log, consume queues, index, checkpoint and config",
    long_about = "Check every file of a store directory and report each problem with its file and \
        byte offset.\n\n\
        Commit log: segment headers, gaps between segments, framing and CRC of every record \
        (after damage, checking resumes at the next segment). Consume queues: file names, \
        lengths and contiguity; every unit points at an existing record of its topic, queue \
        id and queue offset, with its size and tag hash. Index files: header, seal, entry \
        chains and slots; every entry points at a record carrying its key or unique id. \
        checkpoint and config/{store,topics,consumer_offsets,delay,dispatch,consumers} \
        decode; committed offsets and delay progress lie within their queues.\n\n\
        Each problem is corruption, a torn tail (damage past the last flushed offset of a \
        store that did not shut down cleanly: the next open truncates it) or stale (derived \
        data ahead of the log, such as consume-queue units past its end: the next open drops \
        it), and is marked derived (rebuilt from the commit log on open) or primary.\n\n\
        Read-only: takes no lock, opens every file for reading only and never repairs, so it \
        may run while the store is open in another process.",
    after_help = "Exit status: 0 no corruption (possibly a torn tail or stale derived data), \
        1 error (no commit log in DIR, I/O error, bad arguments), 2 corruption found."
)]
pub struct VerifyArgs {
    /// Store directory (the one holding `commitlog/`)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Print one JSON object: the counts (segments, records, end, log_start,
    /// log_end, records_after_damage, topics, queues, units, index_files,
    /// index_entries, consumer_offsets), healthy, problem_counts,
    /// problems_omitted, corruption and torn_tail (the first of each, or
    /// null), and problems (each {file, offset, severity, kind, detail,
    /// derived})
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &VerifyArgs) -> Status {
    match verify::verify(&args.dir) {
        Ok(report) => {
            let status = if report.is_healthy() { Status::Ok } else { Status::Corrupt };
            let text = if args.json { report_json(&report) } else { report_text(&report) };
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => status,
                Err(e) => output_failed(&e, status),
            }
        }
        Err(e) => fail(chain(&e)),
    }
}

/// `n word` with the word's plural form unless `n` is 1 (`entry` →
/// `entries`, anything else gets an `s`).
fn plural(n: u64, word: &str) -> String {
    match (n, word.strip_suffix("entry")) {
        (1, _) => format!("{n} {word}"),
        (_, Some(stem)) => format!("{n} {stem}entries"),
        _ => format!("{n} {word}s"),
    }
}

/// A summary line, then one line per problem.
fn report_text(r: &VerifyReport) -> String {
    let mut line = format!(
        "{}: {}, {}, end offset {}",
        if r.is_healthy() { "OK" } else { "CORRUPT" },
        plural(r.segments as u64, "segment"),
        plural(r.records, "record"),
        r.end
    );
    if r.records_after_damage > 0 {
        line.push_str(&format!(" ({} more after damage, log end {})", r.records_after_damage, r.log_end));
    }
    line.push_str(&format!(
        "; {}, {}, {}; {}, {}; {}",
        plural(r.topics as u64, "topic"),
        plural(r.queues as u64, "queue"),
        plural(r.units, "unit"),
        plural(r.index_files as u64, "index file"),
        plural(r.index_entries, "index entry"),
        plural(r.consumer_offsets as u64, "consumer offset"),
    ));
    let c = r.counts;
    line.push_str(&format!(
        "; {} ({} corruption, {} torn tail, {} stale)\n",
        plural(r.problems_total(), "problem"),
        c.corruption,
        c.torn_tail,
        c.stale
    ));
    for p in &r.problems {
        line.push_str(&problem_line(p));
        line.push('\n');
    }
    if r.problems_omitted > 0 {
        line.push_str(&format!("... and {} more problems not listed\n", r.problems_omitted));
    }
    line
}

fn problem_line(p: &Problem) -> String {
    let at = format!("{}:{}", p.path.display(), p.offset);
    let data = if p.derived { "derived, rebuilt on open" } else { "primary data" };
    match p.severity {
        Severity::TornTail => format!("torn tail at {at} ({}), will be truncated on next open", p.kind),
        Severity::Stale if p.derived => format!("stale at {at}: {} (derived, dropped on open)", p.kind),
        Severity::Stale => format!("stale at {at}: {} (fixed on open)", p.kind),
        _ => format!("corrupt at {at}: {} ({data})", p.kind),
    }
}

fn problem_json(p: &Problem) -> String {
    format!(
        r#"{{"file":{},"offset":{},"severity":{},"kind":{},"detail":{},"derived":{}}}"#,
        json_str(&p.path.display().to_string()),
        p.offset,
        json_str(p.severity.name()),
        json_str(p.kind.code()),
        json_str(&p.kind.to_string()),
        p.derived
    )
}

/// `{file, offset, kind}` of the first problem of `severity`, or `null`.
fn first_json(r: &VerifyReport, severity: Severity) -> String {
    r.first(severity).map_or_else(
        || "null".to_owned(),
        |p| {
            format!(
                r#"{{"file":{},"offset":{},"kind":{}}}"#,
                json_str(&p.path.display().to_string()),
                p.offset,
                json_str(&p.kind.to_string())
            )
        },
    )
}

fn report_json(r: &VerifyReport) -> String {
    let problems: Vec<String> = r.problems.iter().map(problem_json).collect();
    let c = r.counts;
    format!(
        concat!(
            r#"{{"segments":{},"records":{},"end":{},"log_start":{},"log_end":{},"records_after_damage":{},"#,
            r#""topics":{},"queues":{},"units":{},"index_files":{},"index_entries":{},"consumer_offsets":{},"#,
            r#""healthy":{},"problem_counts":{{"corruption":{},"torn_tail":{},"stale":{}}},"problems_omitted":{},"#,
            r#""corruption":{},"torn_tail":{},"problems":[{}]}}"#,
            "\n"
        ),
        r.segments,
        r.records,
        r.end,
        r.log_start,
        r.log_end,
        r.records_after_damage,
        r.topics,
        r.queues,
        r.units,
        r.index_files,
        r.index_entries,
        r.consumer_offsets,
        r.is_healthy(),
        c.corruption,
        c.torn_tail,
        c.stale,
        r.problems_omitted,
        first_json(r, Severity::Corruption),
        first_json(r, Severity::TornTail),
        problems.join(",")
    )
}
