//! `mqstore print`: a topic's messages, read-only.

use crate::message_line;
use crate::report::{fail, output_failed, store_error, Status};
use mqstore::store::StoreView;
use mqstore::topic::{validate_topic_name, TopicConfig};
use mqstore::Error;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    about = "Print a topic's messages (read-only, no lock)",
    long_about = "Print a topic's messages, one line each, in commit-log order (which is \
        queue order within each queue).\n\n\
        Read-only: takes no lock, changes nothing and may run while the store is open in \
        another process. Messages are found by scanning the commit log from its start; \
        the scan ends quietly at a record still being written by a live store. Damage \
        elsewhere prints the messages before it, then `corrupt at <file>:<pos>: <kind>` \
        on stderr, and exits 2.",
    after_help = "Exit status: 0 success, 1 error (no store in DIR, unknown topic or queue, \
        bad arguments), 2 a damaged record or metadata file was reached."
)]
pub struct PrintArgs {
    /// Store directory
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Topic to print
    #[arg(long, value_name = "T")]
    pub topic: String,
    /// Only this queue (default: every queue)
    #[arg(long, value_name = "Q")]
    pub queue: Option<u32>,
    /// First queue offset to print: of --queue, or of every queue without it
    #[arg(long, value_name = "OFFSET", default_value_t = 0)]
    pub from: u64,
    /// Print at most N messages; 0 = all
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max: usize,
    /// One JSON object per line with keys id, topic, queue, offset, keys,
    /// tags, size, crc32, store_timestamp, reconsume_times (size and crc32
    /// are the body's length and CRC-32; id and tags may be null)
    #[arg(long)]
    pub json: bool,
}

/// Returned by a message callback to stop the scan early; never shown.
fn stop() -> Error {
    Error::InvalidArgument("scan stopped by the caller".to_owned())
}

/// The topic's configuration, or a one-line reason why it cannot be read.
pub fn find_topic(view: &StoreView, topic: &str, queue: Option<u32>) -> Result<TopicConfig, Status> {
    let topics = view.topics().map_err(|e| store_error(&e))?;
    let Some(cfg) = topics.into_iter().find(|t| t.name == topic) else {
        return Err(fail(format_args!("topic {topic} does not exist in {}", view.dir().display())));
    };
    if let Some(q) = queue {
        if q >= cfg.read_queues {
            return Err(fail(format_args!("topic {topic} has no queue {q} ({} read queues)", cfg.read_queues)));
        }
    }
    Ok(cfg)
}

pub fn run(args: &PrintArgs) -> Status {
    if let Err(e) = validate_topic_name(&args.topic) {
        return fail(e);
    }
    let view = match StoreView::open(&args.dir) {
        Ok(v) => v,
        Err(e) => return store_error(&e),
    };
    if let Err(status) = find_topic(&view, &args.topic, args.queue) {
        return status;
    }
    let mut out = BufWriter::new(io::stdout().lock());
    let mut write_err: Option<io::Error> = None;
    let result = view.messages(&args.topic, args.queue, args.from, args.max, |m| {
        let line = if args.json { message_line::json(&m) } else { message_line::text(&m) };
        if let Err(e) = writeln!(out, "{line}") {
            write_err = Some(e);
            return Err(stop());
        }
        Ok(true)
    });
    if write_err.is_none() {
        write_err = out.flush().err();
    }
    drop(out);
    if let Some(e) = write_err {
        return output_failed(&e, Status::Ok);
    }
    match result {
        Ok(_) => Status::Ok,
        Err(e) => store_error(&e),
    }
}
