//! `mqstore group list` and `mqstore group progress`: consumer groups and
//! how far they got, read-only.

use crate::report::{fail, json_str, output_failed, store_error, Status};
use mqstore::consumer::membership::LiveGroup;
use mqstore::consumer::MessageModel;
use mqstore::offsetstore::OffsetEntry;
use mqstore::store::StoreView;
use mqstore::topic::{validate_group_name, TopicConfig};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    about = "List consumer groups and show their progress (read-only, no lock)",
    after_help = "Exit status: 0 success, 1 error (no store in DIR, unknown group, bad \
        arguments), 2 a damaged metadata file."
)]
pub struct GroupArgs {
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    List(ListArgs),
    Progress(ProgressArgs),
}

#[derive(Debug, clap::Args)]
#[command(
    about = "List every consumer group that has committed offsets, with the topics it consumes (read-only, no lock)",
    long_about = "List every consumer group that has committed offsets, with the topics \
        it committed offsets on, from the offsets the store last persisted (a live store \
        writes them on its persist interval and at close).\n\n\
        Read-only: takes no lock, changes nothing and may run while the store is open in \
        another process.",
    after_help = "Exit status: 0 success (also with no groups), 1 error (no store in DIR, \
        bad arguments), 2 a damaged offsets file."
)]
pub struct ListArgs {
    /// Store directory
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Print one JSON object: {"groups": [{"group", "topics": [topic, ...]}]}
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
#[command(
    about = "Show a consumer group's committed offset, min, max and lag per queue (read-only, no lock)",
    long_about = "Show a consumer group's progress on every topic it committed offsets \
        on: per queue (every read queue of the topic, plus any other queue it committed) \
        the committed offset, the queue's min and max offset, and the lag: max - \
        committed, or max - min for a queue without a committed offset.\n\n\
        Read-only: takes no lock, changes nothing and may run while the store is open in \
        another process. Committed offsets are what the store last persisted; queue \
        offsets come from the consume-queue files.\n\n\
        While a store holds the directory open (its config/consumers file exists and the \
        process that wrote it is running), each queue also shows its owner: the running \
        member holding it in a clustering group (- if none), or, in a broadcasting \
        group, every member holding it (comma-separated). A running group with no \
        persisted offsets yet is shown too, over the topics its members hold queues of. \
        Broadcasting members keep their offsets under G%<instance>.",
    after_help = "Exit status: 0 success, 1 error (no store in DIR, bad or unknown group, \
        bad arguments), 2 a damaged metadata file."
)]
pub struct ProgressArgs {
    /// Store directory
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Consumer group (1-255 characters of [%|a-zA-Z0-9_-])
    #[arg(long, value_name = "G")]
    pub group: String,
    /// Print one JSON object: {"group", "lag", "topics": [{"topic", "lag",
    /// "queues": [{"queue", "committed", "min", "max", "lag", "owner"}]}]};
    /// committed is null for a queue without a committed offset. "owner"
    /// is present only while a store holds DIR open: the member id or null
    /// (clustering), or an array of member ids (broadcasting)
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &GroupArgs) -> Status {
    match &args.command {
        GroupCommand::List(a) => list(a),
        GroupCommand::Progress(a) => progress(a),
    }
}

/// Group to topic to queue to committed offset.
type Committed = BTreeMap<String, BTreeMap<String, BTreeMap<u32, u64>>>;

fn committed(view: &StoreView) -> mqstore::Result<Committed> {
    let mut out = Committed::new();
    for OffsetEntry { group, topic, queue_id, offset } in view.offsets()? {
        out.entry(group).or_default().entry(topic).or_default().insert(queue_id, offset);
    }
    Ok(out)
}

fn write_out(body: &str) -> Status {
    let mut out = io::stdout().lock();
    match out.write_all(body.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Status::Ok,
        Err(e) => output_failed(&e, Status::Ok),
    }
}

fn list(args: &ListArgs) -> Status {
    let groups = match StoreView::open(&args.dir).and_then(|v| committed(&v)) {
        Ok(g) => g,
        Err(e) => return store_error(&e),
    };
    let body = if args.json {
        let items: Vec<String> = groups
            .iter()
            .map(|(group, topics)| {
                let names: Vec<String> = topics.keys().map(|t| json_str(t)).collect();
                format!(r#"{{"group":{},"topics":[{}]}}"#, json_str(group), names.join(","))
            })
            .collect();
        format!("{{\"groups\":[{}]}}\n", items.join(","))
    } else if groups.is_empty() {
        "no consumer group has committed offsets\n".to_owned()
    } else {
        let mut out = String::new();
        for (group, topics) in &groups {
            let names: Vec<&str> = topics.keys().map(String::as_str).collect();
            let _ = writeln!(out, "group {group}: {}", names.join(", "));
        }
        out
    };
    write_out(&body)
}

/// One queue of a group's progress.
struct QueueProgress {
    queue: u32,
    committed: Option<u64>,
    min: u64,
    max: u64,
    lag: u64,
    /// Who holds the queue, while a store holds the directory open.
    owner: Option<Owner>,
}

/// The running members holding a queue.
enum Owner {
    /// Clustering: at most one.
    One(Option<String>),
    /// Broadcasting: every member holding it.
    Every(Vec<String>),
}

impl Owner {
    /// The owner of `queue_id` of `topic` in `group` (`None`: no running
    /// member, so nobody).
    fn of(group: Option<&LiveGroup>, topic: &str, queue_id: u32) -> Self {
        let ids: Vec<String> =
            group.map(|g| g.owners(topic, queue_id).into_iter().map(str::to_owned).collect()).unwrap_or_default();
        match group.map(|g| g.model) {
            Some(MessageModel::Broadcasting) => Self::Every(ids),
            _ => Self::One(ids.into_iter().next()),
        }
    }

    fn json(&self) -> String {
        match self {
            Self::One(id) => id.as_deref().map_or_else(|| "null".to_owned(), json_str),
            Self::Every(ids) => format!("[{}]", ids.iter().map(|i| json_str(i)).collect::<Vec<_>>().join(",")),
        }
    }

    fn text(&self) -> String {
        let ids = match self {
            Self::One(id) => id.iter().cloned().collect(),
            Self::Every(ids) => ids.clone(),
        };
        if ids.is_empty() {
            "-".to_owned()
        } else {
            ids.join(",")
        }
    }
}

/// The group's progress on one topic.
struct TopicProgress {
    topic: String,
    queues: Vec<QueueProgress>,
}

impl TopicProgress {
    fn lag(&self) -> u64 {
        self.queues.iter().map(|q| q.lag).sum()
    }
}

/// Every read queue of each topic plus any other committed queue, with
/// its range and lag, and its owner when `live` (the group's running
/// members, `Some(None)` when it has none).
fn progress_of(
    topics: &[TopicConfig],
    ranges: &BTreeMap<(String, u32), (u64, u64)>,
    committed: &BTreeMap<String, BTreeMap<u32, u64>>,
    live: Option<Option<&LiveGroup>>,
) -> Vec<TopicProgress> {
    committed
        .iter()
        .map(|(topic, offsets)| {
            let read = topics.iter().find(|t| &t.name == topic).map_or(0, |t| t.read_queues);
            let mut ids: Vec<u32> = (0..read).chain(offsets.keys().copied()).collect();
            ids.sort_unstable();
            ids.dedup();
            let queues = ids
                .into_iter()
                .map(|queue| {
                    let (min, max) = ranges.get(&(topic.clone(), queue)).copied().unwrap_or((0, 0));
                    let c = offsets.get(&queue).copied();
                    let owner = live.map(|g| Owner::of(g, topic, queue));
                    QueueProgress { queue, committed: c, min, max, lag: max.saturating_sub(c.unwrap_or(min)), owner }
                })
                .collect();
            TopicProgress { topic: topic.clone(), queues }
        })
        .collect()
}

fn progress(args: &ProgressArgs) -> Status {
    if let Err(e) = validate_group_name(&args.group) {
        return fail(e);
    }
    let view = match StoreView::open(&args.dir) {
        Ok(v) => v,
        Err(e) => return store_error(&e),
    };
    let read = || -> mqstore::Result<_> {
        let ranges: BTreeMap<(String, u32), (u64, u64)> =
            view.queue_ranges()?.into_iter().map(|(t, q, min, max)| ((t, q), (min, max))).collect();
        Ok((view.topics()?, ranges, committed(&view)?, view.consumers()?))
    };
    let (topics, ranges, mut groups, consumers) = match read() {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    // Membership only from a live store: a file whose writer is gone is stale.
    let consumers = consumers.filter(|c| c.writer_alive);
    let live = consumers.as_ref().map(|c| c.group(&args.group));
    let mut offsets = groups.remove(&args.group).unwrap_or_default();
    // Topics the running members hold queues of, committed or not yet.
    for q in live.flatten().iter().flat_map(|g| g.members.iter()).flat_map(|m| m.queues.iter()) {
        offsets.entry(q.topic.clone()).or_default();
    }
    if offsets.is_empty() {
        return fail(format_args!("group {} has no committed offsets in {}", args.group, args.dir.display()));
    }
    let progress = progress_of(&topics, &ranges, &offsets, live);
    let total: u64 = progress.iter().map(TopicProgress::lag).sum();
    let body = if args.json {
        let items: Vec<String> = progress
            .iter()
            .map(|t| {
                let queues: Vec<String> = t
                    .queues
                    .iter()
                    .map(|q| {
                        let c = q.committed.map_or_else(|| "null".to_owned(), |c| c.to_string());
                        let owner = q.owner.as_ref().map_or_else(String::new, |o| format!(r#","owner":{}"#, o.json()));
                        format!(
                            r#"{{"queue":{},"committed":{c},"min":{},"max":{},"lag":{}{owner}}}"#,
                            q.queue, q.min, q.max, q.lag
                        )
                    })
                    .collect();
                format!(r#"{{"topic":{},"lag":{},"queues":[{}]}}"#, json_str(&t.topic), t.lag(), queues.join(","))
            })
            .collect();
        format!("{{\"group\":{},\"lag\":{total},\"topics\":[{}]}}\n", json_str(&args.group), items.join(","))
    } else {
        let mut out = String::new();
        let _ = writeln!(out, "group {}: lag {total}", args.group);
        for t in &progress {
            let _ = writeln!(out, "topic {}: lag {}", t.topic, t.lag());
            for q in &t.queues {
                let c = q.committed.map_or_else(|| "-".to_owned(), |c| c.to_string());
                let start = format!("  queue {:<4} committed {c:<10} min {:<10} max {:<10}", q.queue, q.min, q.max);
                let _ = match &q.owner {
                    Some(o) => writeln!(out, "{start} lag {:<10} owner {}", q.lag, o.text()),
                    None => writeln!(out, "{start} lag {}", q.lag),
                };
            }
        }
        out
    };
    write_out(&body)
}
