//! `mqstore offset reset`: move a consumer group's offsets on a topic,
//! as a dry run by default.

use crate::print::find_topic;
use crate::report::{fail, json_str, output_failed, store_error, Status};
use crate::rfc3339;
use mqstore::store::{Store, StoreOptions, StoreView};
use mqstore::topic::{validate_group_name, validate_topic_name};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(about = "Change consumer offsets")]
pub struct OffsetArgs {
    #[command(subcommand)]
    pub command: OffsetCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum OffsetCommand {
    Reset(ResetArgs),
}

#[derive(Debug, clap::Args)]
#[command(
    about = "Reset a consumer group's offsets on a topic (dry run unless --execute)",
    long_about = "Reset a consumer group's committed offset on every read queue of a \
        topic: to the queue's first offset (earliest), its end (latest), the first \
        message stored at or after an RFC 3339 time, or a queue offset (clamped to the \
        queue's [min, max], with a warning on stderr).\n\n\
        By default a dry run: prints per queue the committed offset and the one it would \
        set, takes no lock and changes nothing, so it may run beside a live store (whose \
        committed offsets are shown as it last persisted them). For a time it reads the \
        consume queues and the records they point to (binary search with pread).\n\n\
        With --execute it opens the store as an application would and takes its lock (it \
        fails at once if another writer has the directory open), sets the offsets, \
        writes them to disk, closes the store and prints what it set.",
    after_help = "Exit status: 0 success, 1 error (no store in DIR, unknown topic, bad group, \
        topic or --to, store locked by another writer), 2 corruption found."
)]
pub struct ResetArgs {
    /// Store directory
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Consumer group (1-255 characters of [%|a-zA-Z0-9_-])
    #[arg(long, value_name = "G")]
    pub group: String,
    /// Topic whose read queues are reset
    #[arg(long, value_name = "T")]
    pub topic: String,
    /// earliest, latest, an RFC 3339 time (YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM))
    /// or a queue offset
    #[arg(long, value_name = "WHERE", allow_hyphen_values = true)]
    pub to: String,
    /// Apply the reset (takes the store's lock); without it nothing changes
    #[arg(long)]
    pub execute: bool,
    /// Print one JSON object: {"group", "topic", "to", "executed", "queues":
    /// [{"queue", "committed", "new", "min", "max"}]}; committed is the
    /// offset before the reset, null if none was committed
    #[arg(long)]
    pub json: bool,
}

/// Where `--to` points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Earliest,
    Latest,
    /// Epoch milliseconds (times before 1970 are 0).
    Time(u64),
    Offset(u64),
}

fn parse_target(s: &str) -> Result<Target, String> {
    match s {
        "earliest" => return Ok(Target::Earliest),
        "latest" => return Ok(Target::Latest),
        _ => {}
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Target::Offset).map_err(|_| format!("--to offset {s} is too large"));
    }
    // Something shaped like a date gets the parser's precise reason.
    let b = s.as_bytes();
    if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' {
        return rfc3339::parse_millis(s).map(|ms| Target::Time(u64::try_from(ms).unwrap_or(0)));
    }
    Err(format!(
        "invalid --to {s:?}: expected earliest, latest, a queue offset or an RFC 3339 time such as \
         2024-06-01T12:00:00Z"
    ))
}

/// One queue's reset.
struct Planned {
    queue: u32,
    committed: Option<u64>,
    new: u64,
    min: u64,
    max: u64,
}

/// The offset `target` means for a queue spanning `[min, max]`, warning on
/// stderr when a number had to be clamped.
fn resolve(
    target: Target,
    queue: u32,
    (min, max): (u64, u64),
    at_time: impl FnOnce(u64) -> mqstore::Result<u64>,
) -> mqstore::Result<u64> {
    Ok(match target {
        Target::Earliest => min,
        Target::Latest => max,
        Target::Time(ms) => clamp(at_time(ms)?, min, max),
        Target::Offset(n) => {
            let set = clamp(n, min, max);
            if set != n {
                let _ = writeln!(
                    io::stderr().lock(),
                    "warning: offset {n} is outside queue {queue}'s range [{min}, {max}]; using {set}"
                );
            }
            set
        }
    })
}

/// `n` within `[min, max]`; never panics, even for a range a racing
/// writer made look inverted (then `max` wins).
fn clamp(n: u64, min: u64, max: u64) -> u64 {
    n.max(min).min(max)
}

pub fn run(args: &OffsetArgs) -> Status {
    match &args.command {
        OffsetCommand::Reset(a) => reset(a),
    }
}

fn reset(args: &ResetArgs) -> Status {
    if let Err(e) = validate_group_name(&args.group).and_then(|()| validate_topic_name(&args.topic)) {
        return fail(e);
    }
    let target = match parse_target(&args.to) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    // Checked without the lock first, so a wrong directory or topic opens
    // (and creates) nothing.
    let view = match StoreView::open(&args.dir) {
        Ok(v) => v,
        Err(e) => return store_error(&e),
    };
    let cfg = match find_topic(&view, &args.topic, None) {
        Ok(c) => c,
        Err(status) => return status,
    };
    let planned = if args.execute {
        execute(args, target)
    } else {
        dry_run(&view, args, target, cfg.read_queues).map_err(|e| store_error(&e))
    };
    match planned {
        Ok(p) => write_out(&render(args, &p)),
        Err(status) => status,
    }
}

/// What a reset would set, read through the view (no lock).
fn dry_run(view: &StoreView, args: &ResetArgs, target: Target, read_queues: u32) -> mqstore::Result<Vec<Planned>> {
    let ranges: BTreeMap<u32, (u64, u64)> = view
        .queue_ranges()?
        .into_iter()
        .filter(|(t, ..)| *t == args.topic)
        .map(|(_, q, min, max)| (q, (min, max)))
        .collect();
    let committed: BTreeMap<u32, u64> = view
        .offsets()?
        .into_iter()
        .filter(|e| e.group == args.group && e.topic == args.topic)
        .map(|e| (e.queue_id, e.offset))
        .collect();
    (0..read_queues)
        .map(|queue| {
            let (min, max) = ranges.get(&queue).copied().unwrap_or((0, 0));
            let new = resolve(target, queue, (min, max), |ms| view.offset_for_timestamp(&args.topic, queue, ms))?;
            Ok(Planned { queue, committed: committed.get(&queue).copied(), new, min, max })
        })
        .collect()
}

/// Opens the store (taking its lock), resets, persists and closes.
fn execute(args: &ResetArgs, target: Target) -> Result<Vec<Planned>, Status> {
    let store = Store::open(&args.dir, StoreOptions::default()).map_err(|e| store_error(&e))?;
    let applied = apply(&store, args, target);
    let persisted = store.persist_offsets();
    let closed = store.close();
    match (applied, persisted.and(closed)) {
        (Err(status), _) => Err(status),
        (Ok(_), Err(e)) => Err(store_error(&e)),
        (Ok(p), Ok(())) => Ok(p),
    }
}

fn apply(store: &Store, args: &ResetArgs, target: Target) -> Result<Vec<Planned>, Status> {
    let Some(cfg) = store.topic(&args.topic) else {
        return Err(fail(format_args!("topic {} does not exist in {}", args.topic, args.dir.display())));
    };
    let (group, topic) = (args.group.as_str(), args.topic.as_str());
    let mut out = Vec::with_capacity(cfg.read_queues as usize);
    for queue in 0..cfg.read_queues {
        let step = || -> mqstore::Result<Planned> {
            let (min, max) = (store.min_offset(topic, queue)?, store.max_offset(topic, queue)?);
            let committed = store.committed_offset(group, topic, queue);
            let new = resolve(target, queue, (min, max), |ms| store.offset_for_timestamp(topic, queue, ms))?;
            store.reset_offset(group, topic, queue, new)?;
            Ok(Planned { queue, committed, new, min, max })
        };
        out.push(step().map_err(|e| store_error(&e))?);
    }
    Ok(out)
}

fn render(args: &ResetArgs, planned: &[Planned]) -> String {
    if args.json {
        let queues: Vec<String> = planned
            .iter()
            .map(|p| {
                let c = p.committed.map_or_else(|| "null".to_owned(), |c| c.to_string());
                format!(r#"{{"queue":{},"committed":{c},"new":{},"min":{},"max":{}}}"#, p.queue, p.new, p.min, p.max)
            })
            .collect();
        return format!(
            "{{\"group\":{},\"topic\":{},\"to\":{},\"executed\":{},\"queues\":[{}]}}\n",
            json_str(&args.group),
            json_str(&args.topic),
            json_str(&args.to),
            args.execute,
            queues.join(",")
        );
    }
    let mut out = String::new();
    if args.execute {
        let _ = writeln!(out, "reset group {} on topic {} to {}", args.group, args.topic, args.to);
    } else {
        let _ = writeln!(
            out,
            "dry run: would reset group {} on topic {} to {}; nothing changed (add --execute to apply)",
            args.group, args.topic, args.to
        );
    }
    for p in planned {
        let c = p.committed.map_or_else(|| "-".to_owned(), |c| c.to_string());
        let _ =
            writeln!(out, "  queue {:<4} committed {c:<10} new {:<10} min {:<10} max {}", p.queue, p.new, p.min, p.max);
    }
    out
}

fn write_out(body: &str) -> Status {
    let mut out = io::stdout().lock();
    match out.write_all(body.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Status::Ok,
        Err(e) => output_failed(&e, Status::Ok),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_every_kind_of_target() {
        assert_eq!(parse_target("earliest"), Ok(Target::Earliest));
        assert_eq!(parse_target("latest"), Ok(Target::Latest));
        assert_eq!(parse_target("0"), Ok(Target::Offset(0)));
        assert_eq!(parse_target("42"), Ok(Target::Offset(42)));
        assert_eq!(parse_target("2023-11-14T22:13:20.5Z"), Ok(Target::Time(1_700_000_000_500)));
        assert_eq!(parse_target("1960-01-01T00:00:00Z"), Ok(Target::Time(0)));
        for bad in ["", "Earliest", "-1", "+3", "1e3", "now", "99999999999999999999", "2024-02-30T00:00:00Z"] {
            let err = parse_target(bad).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
