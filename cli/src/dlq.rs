//! `mqstore dlq list` and `mqstore dlq resend`: a consumer group's
//! dead-letter queue.

use crate::report::{fail, json_str, output_failed, store_error, Status};
use mqstore::dlq::{DeadLetter, DlqSelect, ResendTarget};
use mqstore::store::{Store, StoreOptions, StoreView};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(about = "A consumer group's dead-letter queue: list, resend")]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    List(ListArgs),
    Resend(ResendArgs),
}

#[derive(Debug, clap::Args)]
#[command(
    about = "List a group's dead letters (read-only, no lock)",
    long_about = "List the messages in consumer group G's dead-letter queue (%DLQ%G), oldest \
        first: the id the producer got, the original topic, how many times delivery was \
        retried, and when it was dead-lettered.\n\n\
        Read-only: takes no lock and may run beside a live store (found by scanning the \
        commit log).",
    after_help = "Exit status: 0 success (also when there are none), 1 error (no store in \
        DIR, bad group name), 2 a damaged record or metadata file was reached."
)]
pub struct ListArgs {
    /// Store directory
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Consumer group
    #[arg(long, value_name = "G")]
    pub group: String,
    /// One JSON object per line with keys id, original_topic,
    /// original_offset_msg_id, reconsume_times, failed_at_ms, dlq_offset,
    /// keys, tags, size, crc32 (size and crc32 are the body's)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The topic the message was first sent to
    Original,
    /// The group's retry topic (only this group consumes it again)
    Retry,
}

#[derive(Debug, clap::Args)]
#[command(
    about = "Resend a group's dead letters (dry run unless --execute)",
    long_about = "Resend dead letters of consumer group G as new messages (same id, body, \
        tags, keys and properties, reconsume count 0) to their original topic or to the \
        group's retry topic. The dead letters stay in the queue.\n\n\
        Without --execute this is a dry run: it prints what would be resent, takes no \
        lock and changes nothing. With --execute it opens the store, taking its lock, \
        so the store must not be open elsewhere.",
    after_help = "Exit status: 0 success, 1 error (no store in DIR, no dead letter with that \
        id, original topic gone, store locked by another writer), 2 a damaged record or \
        metadata file was reached."
)]
pub struct ResendArgs {
    /// Store directory
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Consumer group
    #[arg(long, value_name = "G")]
    pub group: String,
    /// Resend the dead letter with this id (the producer's message id, or a
    /// store-level id)
    #[arg(long, value_name = "ID", conflicts_with = "all", required_unless_present = "all")]
    pub id: Option<String>,
    /// Resend every dead letter of the group
    #[arg(long)]
    pub all: bool,
    /// Where to send them
    #[arg(long, value_enum, default_value_t = Target::Original)]
    pub to: Target,
    /// Apply (without it: dry run)
    #[arg(long)]
    pub execute: bool,
}

fn json(d: &DeadLetter) -> String {
    let m = &d.message;
    let keys: Vec<String> = m.keys().map(json_str).collect();
    format!(
        r#"{{"id":{},"original_topic":{},"original_offset_msg_id":{},"reconsume_times":{},"failed_at_ms":{},"dlq_offset":{},"keys":[{}],"tags":{},"size":{},"crc32":{}}}"#,
        json_str(&d.msg_id),
        json_str(&d.original_topic),
        json_str(&d.original_offset_msg_id),
        d.reconsume_times,
        d.failed_at_ms,
        d.dlq_offset,
        keys.join(","),
        m.tags().map_or_else(|| "null".to_owned(), json_str),
        m.body().len(),
        crc32fast::hash(m.body())
    )
}

fn text(d: &DeadLetter) -> String {
    format!(
        "dlq_offset={:<8} id={} original_topic={} reconsume_times={} failed_at_ms={} size={}",
        d.dlq_offset,
        d.msg_id,
        d.original_topic,
        d.reconsume_times,
        d.failed_at_ms,
        d.message.body().len()
    )
}

fn print_all(letters: &[DeadLetter], as_json: bool, prefix: &str) -> Status {
    let mut out = BufWriter::new(io::stdout().lock());
    for d in letters {
        let line = if as_json { json(d) } else { text(d) };
        if let Err(e) = writeln!(out, "{prefix}{line}") {
            return output_failed(&e, Status::Ok);
        }
    }
    match out.flush() {
        Ok(()) => Status::Ok,
        Err(e) => output_failed(&e, Status::Ok),
    }
}

fn letters(dir: &std::path::Path, group: &str) -> Result<Vec<DeadLetter>, Status> {
    let view = StoreView::open(dir).map_err(|e| store_error(&e))?;
    view.dead_letters(group).map_err(|e| store_error(&e))
}

pub fn run(args: &DlqArgs) -> Status {
    match &args.command {
        DlqCommand::List(a) => match letters(&a.dir, &a.group) {
            Ok(l) => print_all(&l, a.json, ""),
            Err(s) => s,
        },
        DlqCommand::Resend(a) => resend(a),
    }
}

fn resend(a: &ResendArgs) -> Status {
    let select = match &a.id {
        Some(id) => DlqSelect::Id(id.clone()),
        None => DlqSelect::All,
    };
    let target = match a.to {
        Target::Original => ResendTarget::OriginalTopic,
        Target::Retry => ResendTarget::RetryTopic,
    };
    if !a.execute {
        let chosen: Vec<DeadLetter> = match letters(&a.dir, &a.group) {
            Ok(l) => l
                .into_iter()
                .filter(|d| match &select {
                    DlqSelect::Id(id) => d.matches_id(id),
                    _ => true,
                })
                .collect(),
            Err(s) => return s,
        };
        if let DlqSelect::Id(id) = &select {
            if chosen.is_empty() {
                return fail(format_args!("no dead letter of group {} has id {id}", a.group));
            }
        }
        let status = print_all(&chosen, false, "would resend ");
        let _ = writeln!(io::stderr().lock(), "dry run: {} dead letter(s); add --execute to resend", chosen.len());
        return status;
    }
    let store = match Store::open(&a.dir, StoreOptions::default()) {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    let result = store.dlq_resend(&a.group, &select, target);
    let closed = store.close();
    match (result, closed) {
        (Ok(n), Ok(())) => {
            let _ = writeln!(io::stdout().lock(), "resent {n} dead letter(s)");
            Status::Ok
        }
        (Err(e), _) | (Ok(_), Err(e)) => store_error(&e),
    }
}
