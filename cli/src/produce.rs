//! `mqstore produce`: send generated messages to a topic.

use crate::report::{fail, json_str, print_line, store_error, Status};
use mqstore::commitlog::FlushMode;
use mqstore::message::{Message, MessageLimits, DEFAULT_MAX_BODY};
use mqstore::store::{SendStatus, Store, StoreOptions};
use mqstore::topic::{validate_user_topic, TopicConfig, MAX_QUEUES};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `--flush`: when a send counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flush {
    /// Each send returns after an fsync covering it (group commit).
    Sync,
    /// Sends return once the record is in the page cache.
    Async,
}

impl From<Flush> for FlushMode {
    fn from(f: Flush) -> Self {
        match f {
            Flush::Sync => FlushMode::Sync,
            Flush::Async => FlushMode::Async,
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(
    about = "Send generated messages to a topic (creating store and topic if absent)",
    long_about = "Send generated messages to a topic.\n\n\
        Opens the store (creating DIR if needed) and takes its lock: a second writer on \
        the same directory fails at once. Creates the topic with --queues queues if it \
        does not exist (an existing topic is left as it is), then sends --count messages \
        round-robin over its write queues. Message i (from 0) has a deterministic \
        pseudo-random body of --size bytes seeded by i, the tag --tag and, with \
        --key-prefix P, the key P<i>. Arguments are checked before anything is opened \
        or created. Prints one summary line.",
    after_help = "Exit status: 0 every message stored, 1 error (bad arguments, store locked \
        by another writer, a failed send), 2 corruption found while opening the store."
)]
pub struct ProduceArgs {
    /// Store directory (created if missing)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Topic to send to (1-127 characters of [%|a-zA-Z0-9_-], no reserved prefix)
    #[arg(long, value_name = "T")]
    pub topic: String,
    /// Read and write queues of the topic when it is created (1-1024)
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub queues: u32,
    /// Messages to send
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub count: u64,
    /// Body size in bytes (1 to 4 MiB)
    #[arg(long, value_name = "BYTES", default_value_t = 128)]
    pub size: usize,
    /// Flush mode: sync (durable before each send returns) or async
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Flush::Async)]
    pub flush: Flush,
    /// Tag of every message
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Give message i the key P<i>
    #[arg(long, value_name = "P")]
    pub key_prefix: Option<String>,
    /// Append one JSON line per acknowledged (SendOk) message to FILE,
    /// written out before the next send: {"id","queue","offset","key","crc32"}
    /// (id = unique message id, offset = queue offset, key null without
    /// --key-prefix, crc32 = CRC-32 of the body)
    #[arg(long, value_name = "FILE")]
    pub acks: Option<PathBuf>,
}

/// Message `i`'s body: `size` bytes of splitmix64 output seeded by `i`.
pub fn body(i: u64, size: usize) -> Vec<u8> {
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x6D71_7374_6F72_6521;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_be_bytes());
    }
    out.truncate(size);
    out
}

fn message(args: &ProduceArgs, i: u64) -> Message {
    let mut m = Message::new(args.topic.clone(), body(i, args.size));
    if let Some(tag) = &args.tag {
        m = m.with_tags(tag.clone());
    }
    if let Some(p) = &args.key_prefix {
        m = m.with_key(format!("{p}{i}"));
    }
    m
}

/// Every check that needs no store, so bad input changes nothing.
fn validate(args: &ProduceArgs) -> Result<(), String> {
    validate_user_topic(&args.topic).map_err(|e| e.to_string())?;
    if !(1..=MAX_QUEUES).contains(&args.queues) {
        return Err(format!("--queues {} is outside 1..={MAX_QUEUES}", args.queues));
    }
    if args.size == 0 || args.size > DEFAULT_MAX_BODY {
        return Err(format!("--size {} is outside 1..={DEFAULT_MAX_BODY} bytes", args.size));
    }
    // The longest key is the last one; the tag is the same for all.
    let sample = message(args, args.count.saturating_sub(1));
    sample.check(&MessageLimits::default()).map_err(|e| e.to_string())?;
    if let Some(acks) = &args.acks {
        if acks.is_dir() {
            return Err(format!("--acks {} is a directory", acks.display()));
        }
        let parent = acks.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(format!("--acks {}: directory {} does not exist", acks.display(), parent.display()));
        }
    }
    Ok(())
}

/// Counts of one run.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    timeouts: u64,
}

pub fn run(args: &ProduceArgs) -> Status {
    if let Err(msg) = validate(args) {
        return fail(msg);
    }
    let store = match Store::open(&args.dir, StoreOptions::default().flush_mode(args.flush.into())) {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    let started = Instant::now();
    let mut tally = Tally::default();
    let sent = send_all(&store, args, &mut tally);
    // Close even after a failure, so what was stored is flushed.
    let closed = store.close();
    if let Err(status) = sent {
        return status;
    }
    if let Err(e) = closed {
        return store_error(&e);
    }
    let ms = started.elapsed().as_millis();
    let mut line = format!("produced {} message{} to {} in {ms} ms", tally.ok, plural(tally.ok), args.topic);
    if tally.timeouts > 0 {
        line.push_str(&format!("; {} more stored but not confirmed durable (flush timeout)", tally.timeouts));
    }
    print_line(&line, Status::Ok)
}

fn send_all(store: &Store, args: &ProduceArgs, tally: &mut Tally) -> Result<(), Status> {
    if store.topic(&args.topic).is_none() {
        store.create_topic(TopicConfig::new(args.topic.clone(), args.queues)).map_err(|e| store_error(&e))?;
    }
    let mut acks = match &args.acks {
        None => None,
        Some(path) => Some(open_acks(path)?),
    };
    for i in 0..args.count {
        let msg = message(args, i);
        let crc = crc32fast::hash(msg.body());
        let result = store.send(msg).map_err(|e| store_error(&e))?;
        if result.status != SendStatus::SendOk {
            tally.timeouts += 1;
            continue;
        }
        tally.ok += 1;
        if let Some((path, file)) = &mut acks {
            let key = args.key_prefix.as_ref().map_or_else(|| "null".to_owned(), |p| json_str(&format!("{p}{i}")));
            let line = format!(
                "{{\"id\":{},\"queue\":{},\"offset\":{},\"key\":{key},\"crc32\":{crc}}}\n",
                json_str(&result.msg_id),
                result.queue_id,
                result.queue_offset
            );
            // Unbuffered: the line reaches the OS before the next send.
            file.write_all(line.as_bytes())
                .and_then(|()| file.flush())
                .map_err(|e| fail(format_args!("writing {}: {e}", path.display())))?;
        }
    }
    Ok(())
}

fn open_acks(path: &Path) -> Result<(PathBuf, File), Status> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(|f| (path.to_path_buf(), f))
        .map_err(|e| fail(format_args!("opening {}: {e}", path.display())))
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
