//! `mqstore stats`: topics, queues, consumer groups and the commit log.

use crate::report::{json_str, output_failed, store_error, Status};
use mqstore::consumer::membership::{LiveConsumers, LiveGroup, LiveMember};
use mqstore::consumer::MessageModel;
use mqstore::offsetstore::OffsetEntry;
use mqstore::store::StoreView;
use mqstore::topic::{Permission, TopicConfig};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    about = "Show topics, queue offsets, consumer groups with lag, and commit-log size (read-only, no lock)",
    long_about = "Show the store's topics (read/write queues, permission) with each read \
        queue's min and max offset, every consumer group's committed offset and lag \
        (max - committed) per queue of the topics it consumed, and the commit log's \
        segment count and size (the total length of its segment files, preallocated \
        room included).\n\n\
        While a store holds the directory open, also its running consumer groups (from \
        config/consumers, which the store rewrites after every rebalance): each member \
        with the queues it holds, and idle members, which hold none (for example \
        clustering members beyond the number of read queues). A file left by a process \
        that is no longer running is reported as stale and otherwise ignored.\n\n\
        Read-only: takes no lock, changes nothing and may run while the store is open in \
        another process. Queue offsets come from the consume-queue files, so they show \
        what consumers can pull now; committed offsets are what the store last persisted.",
    after_help = "Exit status: 0 success, 1 error (no store in DIR, I/O error, bad \
        arguments), 2 a damaged metadata file."
)]
pub struct StatsArgs {
    /// Store directory
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Print one JSON object: {"commit_log_bytes", "segment_count", "topics":
    /// [{"topic", "read_queues", "write_queues", "permission", "queues":
    /// [{"queue", "min", "max"}]}], "groups": [{"group", "topic", "lag",
    /// "queues": [{"queue", "committed", "max", "lag"}]}], "delayed":
    /// {"waiting", "levels": [{"level", "waiting"}]}, "consumers": null
    /// (no live store) or {"pid", "written_at_ms", "groups": [{"group",
    /// "model" ("clustering"|"broadcasting"), "members": [{"id", "idle",
    /// "queues": [{"topic", "queue"}]}]}]}}
    #[arg(long)]
    pub json: bool,
}

/// Everything `stats` shows, read once.
struct Snapshot {
    segments: usize,
    bytes: u64,
    /// User, retry and dead-letter topics (the schedule topic is shown as
    /// `delayed`).
    topics: Vec<TopicConfig>,
    /// (delay level, messages waiting).
    delayed: Vec<(usize, u64)>,
    /// (topic, queue) to (min, max).
    ranges: BTreeMap<(String, u32), (u64, u64)>,
    /// (group, topic) to queue to committed offset.
    groups: BTreeMap<(String, String), BTreeMap<u32, u64>>,
    /// The membership file, if any (live or stale).
    consumers: Option<LiveConsumers>,
}

/// One queue of a group: committed offset (if any), max and lag.
struct GroupQueue {
    queue: u32,
    committed: Option<u64>,
    max: u64,
    lag: u64,
}

fn read(view: &StoreView) -> mqstore::Result<Snapshot> {
    let ranges = view.queue_ranges()?.into_iter().map(|(t, q, min, max)| ((t, q), (min, max))).collect();
    let mut groups: BTreeMap<(String, String), BTreeMap<u32, u64>> = BTreeMap::new();
    for OffsetEntry { group, topic, queue_id, offset } in view.offsets()? {
        groups.entry((group, topic)).or_default().insert(queue_id, offset);
    }
    Ok(Snapshot {
        segments: view.segment_count()?,
        bytes: view.commit_log_bytes()?,
        topics: view.topics()?.into_iter().filter(|t| t.name != mqstore::retry::SCHEDULE_TOPIC).collect(),
        delayed: view.delayed()?,
        ranges,
        groups,
        consumers: view.consumers()?,
    })
}

impl Snapshot {
    /// The live store's consumers: `None` without a membership file or
    /// when its writer is gone.
    fn live(&self) -> Option<&LiveConsumers> {
        self.consumers.as_ref().filter(|c| c.writer_alive)
    }

    fn range(&self, topic: &str, queue: u32) -> (u64, u64) {
        self.ranges.get(&(topic.to_owned(), queue)).copied().unwrap_or((0, 0))
    }

    /// The group's queues: every read queue of the topic, plus any other
    /// queue it committed. Without a commit, lag counts from the queue's min.
    fn group_queues(&self, topic: &str, committed: &BTreeMap<u32, u64>) -> Vec<GroupQueue> {
        let read = self.topics.iter().find(|t| t.name == topic).map_or(0, |t| t.read_queues);
        let mut ids: Vec<u32> = (0..read).chain(committed.keys().copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|queue| {
                let (min, max) = self.range(topic, queue);
                let c = committed.get(&queue).copied();
                GroupQueue { queue, committed: c, max, lag: max.saturating_sub(c.unwrap_or(min)) }
            })
            .collect()
    }
}

fn permission(p: Permission) -> &'static str {
    match p {
        Permission::ReadWrite => "read-write",
        Permission::ReadOnly => "read-only",
        Permission::WriteOnly => "write-only",
        Permission::Deny => "deny",
    }
}

fn model(m: MessageModel) -> &'static str {
    match m {
        MessageModel::Clustering => "clustering",
        MessageModel::Broadcasting => "broadcasting",
    }
}

/// Why `m` of `g` holds no queue, or `None` if it holds some.
fn idle_reason(g: &LiveGroup, m: &LiveMember) -> Option<&'static str> {
    if !m.is_idle() {
        return None;
    }
    // Queues are shared out topic by topic (the group's retry topic is one
    // of them): a member gets none when every topic has fewer queues than
    // the group has members.
    let mut per_topic: BTreeMap<&str, std::collections::BTreeSet<u32>> = BTreeMap::new();
    for q in g.members.iter().flat_map(|m| m.queues.iter()) {
        per_topic.entry(q.topic.as_str()).or_default().insert(q.queue_id);
    }
    let widest = per_topic.values().map(std::collections::BTreeSet::len).max().unwrap_or(0);
    Some(if g.model == MessageModel::Clustering && g.members.len() > widest {
        "idle: more members than read queues"
    } else {
        "idle: no queue assigned"
    })
}

fn consumers_json(c: &LiveConsumers) -> String {
    let groups: Vec<String> = c
        .groups
        .iter()
        .map(|g| {
            let members: Vec<String> = g
                .members
                .iter()
                .map(|m| {
                    let queues: Vec<String> = m
                        .queues
                        .iter()
                        .map(|q| format!(r#"{{"topic":{},"queue":{}}}"#, json_str(&q.topic), q.queue_id))
                        .collect();
                    format!(r#"{{"id":{},"idle":{},"queues":[{}]}}"#, json_str(&m.id), m.is_idle(), queues.join(","))
                })
                .collect();
            format!(
                r#"{{"group":{},"model":"{}","members":[{}]}}"#,
                json_str(&g.group),
                model(g.model),
                members.join(",")
            )
        })
        .collect();
    format!(r#"{{"pid":{},"written_at_ms":{},"groups":[{}]}}"#, c.pid, c.written_at_ms, groups.join(","))
}

fn json(s: &Snapshot) -> String {
    let topics: Vec<String> = s
        .topics
        .iter()
        .map(|t| {
            let queues: Vec<String> = (0..t.read_queues)
                .map(|q| {
                    let (min, max) = s.range(&t.name, q);
                    format!(r#"{{"queue":{q},"min":{min},"max":{max}}}"#)
                })
                .collect();
            format!(
                r#"{{"topic":{},"read_queues":{},"write_queues":{},"permission":"{}","queues":[{}]}}"#,
                json_str(&t.name),
                t.read_queues,
                t.write_queues,
                permission(t.permission),
                queues.join(",")
            )
        })
        .collect();
    let groups: Vec<String> = s
        .groups
        .iter()
        .map(|((group, topic), committed)| {
            let qs = s.group_queues(topic, committed);
            let lag: u64 = qs.iter().map(|q| q.lag).sum();
            let queues: Vec<String> = qs
                .iter()
                .map(|q| {
                    let c = q.committed.map_or_else(|| "null".to_owned(), |c| c.to_string());
                    format!(r#"{{"queue":{},"committed":{c},"max":{},"lag":{}}}"#, q.queue, q.max, q.lag)
                })
                .collect();
            format!(
                r#"{{"group":{},"topic":{},"lag":{lag},"queues":[{}]}}"#,
                json_str(group),
                json_str(topic),
                queues.join(",")
            )
        })
        .collect();
    let consumers = s.live().map_or_else(|| "null".to_owned(), consumers_json);
    let levels: Vec<String> = s.delayed.iter().map(|(l, n)| format!(r#"{{"level":{l},"waiting":{n}}}"#)).collect();
    let waiting: u64 = s.delayed.iter().map(|(_, n)| n).sum();
    format!(
        r#"{{"commit_log_bytes":{},"segment_count":{},"topics":[{}],"groups":[{}],"delayed":{{"waiting":{waiting},"levels":[{}]}},"consumers":{consumers}}}"#,
        s.bytes,
        s.segments,
        topics.join(","),
        groups.join(","),
        levels.join(",")
    )
}

fn text(s: &Snapshot) -> String {
    let mut out = String::new();
    let seg = if s.segments == 1 { "segment" } else { "segments" };
    let _ = writeln!(out, "commit log: {} {seg}, {} bytes in segment files", s.segments, s.bytes);
    for t in &s.topics {
        let _ = writeln!(
            out,
            "topic {}: {} read / {} write queues, {}",
            t.name,
            t.read_queues,
            t.write_queues,
            permission(t.permission)
        );
        for q in 0..t.read_queues {
            let (min, max) = s.range(&t.name, q);
            let _ = writeln!(out, "  queue {q:<4} min {min:<10} max {max}");
        }
    }
    for ((group, topic), committed) in &s.groups {
        let qs = s.group_queues(topic, committed);
        let lag: u64 = qs.iter().map(|q| q.lag).sum();
        let _ = writeln!(out, "group {group} on topic {topic}: lag {lag}");
        for q in qs {
            let c = q.committed.map_or_else(|| "-".to_owned(), |c| c.to_string());
            let _ = writeln!(out, "  queue {:<4} committed {c:<10} max {:<10} lag {}", q.queue, q.max, q.lag);
        }
    }
    let waiting: u64 = s.delayed.iter().map(|(_, n)| n).sum();
    if waiting > 0 {
        let levels: Vec<String> =
            s.delayed.iter().filter(|(_, n)| *n > 0).map(|(l, n)| format!("level {l}: {n}")).collect();
        let _ = writeln!(out, "delayed messages waiting: {waiting} ({})", levels.join(", "));
    }
    match (&s.consumers, s.live()) {
        (_, Some(c)) => {
            let _ = writeln!(out, "live consumers (store held by pid {}):", c.pid);
            if c.groups.is_empty() {
                let _ = writeln!(out, "  none running");
            }
            for g in &c.groups {
                let n = g.members.len();
                let members = if n == 1 { "member" } else { "members" };
                let _ = writeln!(out, "consumer group {} ({}): {n} {members}", g.group, model(g.model));
                for m in &g.members {
                    let held = match idle_reason(g, m) {
                        Some(why) => why.to_owned(),
                        None => {
                            let qs: Vec<String> =
                                m.queues.iter().map(|q| format!("{}:{}", q.topic, q.queue_id)).collect();
                            qs.join(" ")
                        }
                    };
                    let _ = writeln!(out, "  member {}: {held}", m.id);
                }
            }
        }
        (Some(stale), None) => {
            let _ = writeln!(out, "consumers: config/consumers is stale (pid {} is not running); ignored", stale.pid);
        }
        (None, None) => {}
    }
    out
}

pub fn run(args: &StatsArgs) -> Status {
    let view = match StoreView::open(&args.dir) {
        Ok(v) => v,
        Err(e) => return store_error(&e),
    };
    let snapshot = match read(&view) {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    let body = if args.json { json(&snapshot) + "\n" } else { text(&snapshot) };
    let mut out = io::stdout().lock();
    match out.write_all(body.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Status::Ok,
        Err(e) => output_failed(&e, Status::Ok),
    }
}
