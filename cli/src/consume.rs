//! `mqstore consume`: read a topic as a consumer group and commit.

use crate::message_line;
use crate::print::find_topic;
use crate::report::{fail, output_failed, store_error, Status};
use mqstore::store::{PullStatus, Store, StoreOptions, StoreView, TagFilter};
use mqstore::topic::{validate_group_name, validate_topic_name};
use std::io::{self, Write};
use std::path::PathBuf;

/// Messages asked for per pull.
const BATCH: usize = 64;

#[derive(Debug, clap::Args)]
#[command(
    about = "Consume a topic as a consumer group, printing messages and committing offsets",
    long_about = "Consume a topic as a consumer group: for each read queue, pull from the \
        group's committed offset (the queue's start if it has none), print the messages \
        as `print` does, then commit the offset past them. Offsets are written to disk \
        before the store is closed, so the next run continues where this one stopped.\n\n\
        Opens the store as an application would and takes its lock: it fails at once if \
        another writer has the directory open. The directory and topic must exist; \
        nothing is created.",
    after_help = "Exit status: 0 success, 1 error (no store in DIR, unknown topic, bad \
        arguments, store locked by another writer), 2 corruption found while opening."
)]
pub struct ConsumeArgs {
    /// Store directory
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Topic to consume
    #[arg(long, value_name = "T")]
    pub topic: String,
    /// Consumer group (1-255 characters of [%|a-zA-Z0-9_-])
    #[arg(long, value_name = "G")]
    pub group: String,
    /// Print (and commit) at most N messages in total; 0 = all
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max: usize,
    /// One JSON object per line, as `print --json`
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &ConsumeArgs) -> Status {
    if let Err(e) = validate_topic_name(&args.topic).and_then(|()| validate_group_name(&args.group)) {
        return fail(e);
    }
    // Check without the lock first, so a wrong directory or topic creates nothing.
    let view = match StoreView::open(&args.dir) {
        Ok(v) => v,
        Err(e) => return store_error(&e),
    };
    if let Err(status) = find_topic(&view, &args.topic, None) {
        return status;
    }
    let store = match Store::open(&args.dir, StoreOptions::default()) {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    let consumed = consume(&store, args);
    let persisted = store.persist_offsets();
    let closed = store.close();
    match (consumed, persisted.and(closed)) {
        (Err(status), _) => status,
        (Ok(()), Err(e)) => store_error(&e),
        (Ok(()), Ok(())) => Status::Ok,
    }
}

fn consume(store: &Store, args: &ConsumeArgs) -> Result<(), Status> {
    let Some(cfg) = store.topic(&args.topic) else {
        return Err(fail(format_args!("topic {} does not exist in {}", args.topic, args.dir.display())));
    };
    let mut printed = 0usize;
    let mut out = io::stdout().lock();
    for queue in 0..cfg.read_queues {
        let mut offset = store.committed_offset(&args.group, &args.topic, queue).unwrap_or(0);
        loop {
            let room = if args.max == 0 { BATCH } else { BATCH.min(args.max - printed) };
            if room == 0 {
                return Ok(());
            }
            let r = store.pull(&args.topic, queue, offset, room, &TagFilter::All).map_err(|e| store_error(&e))?;
            match r.status {
                PullStatus::Found => {}
                PullStatus::NoMatchedMessage | PullStatus::OffsetIllegal if r.next_offset != offset => {
                    offset = r.next_offset;
                    continue;
                }
                _ => break,
            }
            let mut text = String::new();
            for m in &r.messages {
                text.push_str(&if args.json { message_line::json(m) } else { message_line::text(m) });
                text.push('\n');
            }
            // Commit only what reached stdout.
            if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                return Err(output_failed(&e, Status::Ok));
            }
            printed += r.messages.len();
            offset = r.messages.last().map_or(r.next_offset, |m| m.queue_offset().0 + 1);
            store.commit_offset(&args.group, &args.topic, queue, offset).map_err(|e| store_error(&e))?;
        }
    }
    Ok(())
}
