//! `mqstore query` (messages by key) and `mqstore get` (one message by id),
//! through the message index, read-only.

use crate::message_line;
use crate::report::{fail, json_str, output_failed, store_error, Status};
use mqstore::message::MessageExt;
use mqstore::store::{StoreView, MAX_QUERY_RESULTS};
use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    about = "Find a topic's messages by key through the index (read-only, no lock)",
    long_about = "Print the messages of topic T whose keys (or unique id) include K, newest \
        first, one line each (like `print`), at most 64.\n\n\
        Read-only: reads the index files and the records with pread, takes no lock and may \
        run beside a live store (messages it has not indexed yet are not found).",
    after_help = "Exit status: 0 success (also when nothing matches), 1 error (no store in \
        DIR, bad arguments), 2 a damaged record or metadata file was reached."
)]
pub struct QueryArgs {
    /// Store directory
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Topic
    #[arg(long, value_name = "T")]
    pub topic: String,
    /// Key (one of a message's keys, or its unique id)
    #[arg(long, value_name = "K")]
    pub key: String,
    /// Only messages stored at or after this time (RFC 3339, or ms since the epoch)
    #[arg(long, value_name = "T1")]
    pub begin: Option<String>,
    /// Only messages stored at or before this time (RFC 3339, or ms since the epoch)
    #[arg(long, value_name = "T2")]
    pub end: Option<String>,
    /// One JSON object per line, keys as in `print --json`
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
#[command(
    about = "Print one message by id (read-only, no lock)",
    long_about = "Print the message whose unique id (what a send returned as msg_id) or \
        store-level id (offset_msg_id) is ID: ids, topic, queue, offsets, times, tags, keys, \
        every property, and the body as UTF-8 text, or as hex when it is not UTF-8.\n\n\
        Read-only: takes no lock and may run beside a live store.",
    after_help = "Exit status: 0 found, 1 not found or error (no store in DIR, bad arguments), \
        2 a damaged record or metadata file was reached."
)]
pub struct GetArgs {
    /// Store directory
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Unique id or store-level id (32 hex characters)
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// One JSON object with keys id, offset_id, topic, queue, offset,
    /// store_timestamp, born_timestamp, reconsume_times, tags, keys,
    /// properties (an object), body, body_encoding ("utf8" or "hex")
    #[arg(long)]
    pub json: bool,
}

fn time_arg(s: &str) -> Result<u64, Status> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    match crate::rfc3339::parse_millis(s) {
        Ok(ms) => u64::try_from(ms).map_err(|_| fail(format_args!("time {s:?} is before 1970"))),
        Err(why) => Err(fail(format_args!("time {s:?}: {why}"))),
    }
}

pub fn run_query(a: &QueryArgs) -> Status {
    let begin = match a.begin.as_deref().map(time_arg).transpose() {
        Ok(t) => t.unwrap_or(0),
        Err(s) => return s,
    };
    let end = match a.end.as_deref().map(time_arg).transpose() {
        Ok(t) => t.unwrap_or(u64::MAX),
        Err(s) => return s,
    };
    if begin > end {
        return fail("--begin is after --end");
    }
    if a.key.is_empty() {
        return fail("--key is empty");
    }
    let view = match StoreView::open(&a.dir) {
        Ok(v) => v,
        Err(e) => return store_error(&e),
    };
    let found = match view.query_by_key(&a.topic, &a.key, begin, end, MAX_QUERY_RESULTS) {
        Ok(f) => f,
        Err(e) => return store_error(&e),
    };
    let mut out = BufWriter::new(io::stdout().lock());
    for m in &found {
        let line = if a.json { message_line::json(m) } else { message_line::text(m) };
        if let Err(e) = writeln!(out, "{line}") {
            return output_failed(&e, Status::Ok);
        }
    }
    match out.flush() {
        Ok(()) => Status::Ok,
        Err(e) => output_failed(&e, Status::Ok),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn body(m: &MessageExt) -> (String, &'static str) {
    match std::str::from_utf8(m.body()) {
        Ok(s) => (s.to_owned(), "utf8"),
        Err(_) => (hex(m.body()), "hex"),
    }
}

fn get_json(m: &MessageExt) -> String {
    let keys: Vec<String> = m.keys().map(json_str).collect();
    let props: Vec<String> = m.properties().iter().map(|(k, v)| format!("{}:{}", json_str(k), json_str(v))).collect();
    let (b, enc) = body(m);
    format!(
        r#"{{"id":{},"offset_id":{},"topic":{},"queue":{},"offset":{},"store_timestamp":{},"born_timestamp":{},"reconsume_times":{},"tags":{},"keys":[{}],"properties":{{{}}},"body":{},"body_encoding":"{enc}"}}"#,
        m.msg_id().map_or_else(|| "null".to_owned(), json_str),
        json_str(&m.offset_msg_id()),
        json_str(m.stored_topic()),
        m.queue_id(),
        m.queue_offset().0,
        m.store_timestamp(),
        m.born_timestamp(),
        m.reconsume_times(),
        m.tags().map_or_else(|| "null".to_owned(), json_str),
        keys.join(","),
        props.join(","),
        json_str(&b)
    )
}

fn get_text(m: &MessageExt) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "id:              {}", m.msg_id().unwrap_or("-"));
    let _ = writeln!(s, "offset id:       {}", m.offset_msg_id());
    let _ = writeln!(s, "topic:           {}", m.stored_topic());
    let _ = writeln!(s, "queue:           {} offset {}", m.queue_id(), m.queue_offset().0);
    let _ = writeln!(s, "store timestamp: {}", m.store_timestamp());
    let _ = writeln!(s, "born timestamp:  {}", m.born_timestamp());
    let _ = writeln!(s, "reconsume times: {}", m.reconsume_times());
    let _ = writeln!(s, "tags:            {}", m.tags().unwrap_or("-"));
    let keys: Vec<&str> = m.keys().collect();
    let _ = writeln!(s, "keys:            {}", if keys.is_empty() { "-".to_owned() } else { keys.join(" ") });
    for (k, v) in m.properties() {
        let _ = writeln!(s, "property:        {k}={v}");
    }
    let (b, enc) = body(m);
    let _ = writeln!(s, "body ({enc}, {} bytes):", m.body().len());
    let _ = writeln!(s, "{b}");
    s
}

pub fn run_get(a: &GetArgs) -> Status {
    let view = match StoreView::open(&a.dir) {
        Ok(v) => v,
        Err(e) => return store_error(&e),
    };
    match view.message_by_id(&a.id) {
        Ok(Some(m)) => {
            let text = if a.json { format!("{}\n", get_json(&m)) } else { get_text(&m) };
            match io::stdout().lock().write_all(text.as_bytes()) {
                Ok(()) => Status::Ok,
                Err(e) => output_failed(&e, Status::Ok),
            }
        }
        Ok(None) => fail(format_args!("no message has id {}", a.id)),
        Err(e) => store_error(&e),
    }
}
