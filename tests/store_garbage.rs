#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Random damage to whole store directories (commit-log segments, consume
//! queues, config files, checkpoint): opening must never panic and never
//! serve garbage or a message at the wrong position; it either fails with a
//! typed error or opens. Damage confined to derived data (consume queues,
//! `config/dispatch`, `config/consumers`) must lose nothing, because all of
//! it can be rebuilt from the commit log. `StoreView` must not panic on the
//! damaged copies either, and what it shows must be records that were sent.
//!
//! `MQSTORE_STORE_GARBAGE_ROUNDS` sets the rounds, `MQSTORE_SEED` replays a
//! run (the seed is printed), `MQSTORE_STORE_GARBAGE_ROUND=n` replays round
//! `n` alone. Every failing round is printed with its seed,
//! round and damage; the test fails at the end if any round failed.

mod common;

use common::{seed, Rng};
use mqstore::commitlog::CommitLogOptions;
use mqstore::message::{Message, MessageExt, MessageRef};
use mqstore::store::{HashByKeySelector, MetadataFallback, PullStatus, Store, StoreOptions, StoreView, TagFilter};
use mqstore::topic::TopicConfig;
use mqstore::Error;
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

const TOPICS: [(&str, u32); 4] = [("orders", 3), ("events", 2), ("audit", 1), ("recycled", 2)];
const GROUPS: [&str; 2] = ["g1", "g2"];
const TAGS: [Option<&str>; 4] = [None, Some("TagA"), Some("TagB"), Some("TagC")];
/// Rounds between fresh fixtures.
const ROUNDS_PER_FIXTURE: u64 = 20;
/// A round (or a fixture build) taking longer than this is a hang.
const HANG: Duration = Duration::from_secs(120);

fn opts() -> StoreOptions {
    StoreOptions::default()
        .commit_log_options(CommitLogOptions::default().segment_size(64 << 10).max_record_size(16 << 10))
        .max_body_size(4 << 10)
        .max_properties_size(1 << 10)
        .consume_queue_units_per_file(8)
}

/// What was sent, as a reader must see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    topic: String,
    queue_id: u32,
    queue_offset: u64,
    body: Vec<u8>,
    msg_id: String,
    tags: Option<String>,
    keys: Vec<String>,
}

impl Sent {
    fn of_ext(m: &MessageExt) -> Self {
        Self {
            topic: m.topic().to_string(),
            queue_id: m.queue_id(),
            queue_offset: m.queue_offset().0,
            body: m.body().to_vec(),
            msg_id: m.msg_id().unwrap_or("").to_string(),
            tags: m.tags().map(str::to_string),
            keys: m.keys().map(str::to_string).collect(),
        }
    }

    fn of_ref(m: &MessageRef<'_>) -> Self {
        Self {
            topic: m.topic().to_string(),
            queue_id: m.queue_id(),
            queue_offset: m.queue_offset().0,
            body: m.body().to_vec(),
            msg_id: m.msg_id().unwrap_or("").to_string(),
            tags: m.tags().map(str::to_string),
            keys: m.keys().map(str::to_string).collect(),
        }
    }
}

/// A store directory image to damage, and what it must serve.
struct Fixture {
    _tmp: tempfile::TempDir,
    image: PathBuf,
    /// A copy of the store taken, open, three quarters of the way through
    /// (the "older copy put back" of the damage matrix).
    older: PathBuf,
    crashed: bool,
    /// Live messages by (topic, queue, queue offset).
    sent: BTreeMap<(String, u32, u64), Sent>,
    /// Every record ever written (including a deleted topic incarnation's),
    /// by message id: what `StoreView::messages` may show.
    records: HashMap<String, Sent>,
    /// Committed offsets an undamaged copy reports after open.
    offsets: Vec<((String, String, u32), Option<u64>)>,
    /// The same, as held by the previous generation of the offsets file
    /// (decoded here from FORMAT.md 11.3, independently of the store).
    prev_offsets: Vec<((String, String, u32), Option<u64>)>,
}

impl Fixture {
    fn queue_len(&self, topic: &str, q: u32) -> u64 {
        self.sent.range((topic.to_string(), q, 0)..=(topic.to_string(), q, u64::MAX)).count() as u64
    }
}

fn wait_dispatched(store: &Store, topic: &str, q: u32, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let end = store.max_offset(topic, q).unwrap();
        if end >= n {
            return;
        }
        assert!(Instant::now() < deadline, "queue {topic}/{q} stuck at {end} of {n}");
        store.pull_wait(topic, q, end, 1, &TagFilter::All, Duration::from_secs(1)).unwrap();
    }
}

/// Copies a directory tree without its LOCK, tolerating files that vanish
/// while a live store replaces them (a crash image).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else if e.file_name() != "LOCK" {
            match std::fs::copy(e.path(), to.join(e.file_name())) {
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => panic!("copy {}: {err}", e.path().display()),
            }
        }
    }
}

/// A scratch directory: in memory (`/dev/shm`) where there is one, since
/// the test is about damage, not durability, and `fsync` on a disk would
/// dominate its run time; the usual temporary directory otherwise.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(t) = tempfile::Builder::new().prefix("mqstore-garbage-").tempdir_in(shm) {
            return t;
        }
    }
    tempfile::tempdir().unwrap()
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next() as u8).collect()
}

fn build_fixture(rng: &mut Rng) -> Fixture {
    let tmp = scratch();
    let live = tmp.path().join("live");
    let store = Store::open(&live, opts()).unwrap();
    for (t, n) in TOPICS {
        store.create_topic(TopicConfig::new(t, n)).unwrap();
    }
    let mut sent = BTreeMap::new();
    let mut records = HashMap::new();
    let total = 150 + rng.below(350);
    let older = tmp.path().join("older");
    for i in 0..total {
        if i == total * 3 / 4 {
            copy_tree(&live, &older);
        }
        if i == total / 2 {
            // A topic deleted and created again: its old records stay in
            // the log and must never be served as the new incarnation's.
            store.delete_topic("recycled").unwrap();
            store.create_topic(TopicConfig::new("recycled", 2)).unwrap();
            sent.retain(|(t, _, _): &(String, u32, u64), _| t != "recycled");
        }
        let (topic, queues) = TOPICS[rng.below(TOPICS.len() as u64) as usize];
        let cap = if rng.below(10) == 0 { 3000 } else { 400 };
        let len = 1 + rng.below(cap) as usize;
        let mut body = format!("{i}:").into_bytes();
        body.extend(random_bytes(rng, len));
        let mut msg = Message::new(topic, body.clone());
        let tags = TAGS[rng.below(TAGS.len() as u64) as usize];
        if let Some(t) = tags {
            msg = msg.with_tags(t);
        }
        let nkeys = rng.below(3);
        let keys: Vec<String> = (0..nkeys).map(|k| format!("k{}-{k}", rng.below(20))).collect();
        if !keys.is_empty() {
            msg = msg.with_keys(keys.clone());
        }
        let r = match rng.below(4) {
            0 => store.send_to_queue(msg, rng.below(u64::from(queues)) as u32),
            1 if !keys.is_empty() => store.send_with_selector(msg, &HashByKeySelector),
            _ => store.send(msg),
        }
        .unwrap();
        let s = Sent {
            topic: topic.to_string(),
            queue_id: r.queue_id,
            queue_offset: r.queue_offset,
            body,
            msg_id: r.msg_id.to_string(),
            tags: tags.map(str::to_string),
            keys,
        };
        records.insert(r.msg_id.to_string(), s.clone());
        sent.insert((topic.to_string(), r.queue_id, r.queue_offset), s);
    }
    let mut fx = Fixture {
        _tmp: tmp,
        image: live.clone(),
        older,
        crashed: false,
        sent,
        records,
        offsets: Vec::new(),
        prev_offsets: Vec::new(),
    };
    for (t, n) in TOPICS {
        for q in 0..n {
            wait_dispatched(&store, t, q, fx.queue_len(t, q));
        }
    }
    // A first persisted generation of the offsets (group g1 halfway through
    // every queue), so the previous generation differs from the last one.
    for (t, n) in TOPICS {
        for q in 0..n {
            store.commit_offset(GROUPS[0], t, q, fx.queue_len(t, q) / 2).unwrap();
        }
    }
    store.persist_offsets().unwrap();
    for g in GROUPS {
        for (t, n) in TOPICS {
            for q in 0..n {
                if rng.below(2) == 0 {
                    let max = fx.queue_len(t, q);
                    store.commit_offset(g, t, q, rng.below(max + 1)).unwrap();
                }
            }
        }
    }
    if rng.below(2) == 0 {
        store.close().unwrap();
    } else {
        // As a crash leaves it: copied while the store is open.
        let image = fx._tmp.path().join("crashed");
        copy_tree(&live, &image);
        drop(store);
        fx.image = image;
        fx.crashed = true;
    }
    // An undamaged copy opens with everything; remember its offsets.
    let tmp = scratch();
    let dir = tmp.path().join("store");
    copy_tree(&fx.image, &dir);
    let store = Store::open(&dir, opts()).unwrap_or_else(|e| panic!("undamaged fixture does not open: {e}"));
    let mut issues = Vec::new();
    check_store(&store, &fx, true, rng, &mut issues);
    assert!(issues.is_empty(), "undamaged fixture (crashed: {}): {issues:?}", fx.crashed);
    for g in GROUPS {
        for (t, n) in TOPICS {
            for q in 0..n {
                fx.offsets.push(((g.to_string(), t.to_string(), q), store.committed_offset(g, t, q)));
            }
        }
    }
    store.close().unwrap();
    let prev = decode_offsets(&fx.image.join("config/consumer_offsets.prev"));
    fx.prev_offsets = fx.offsets.iter().map(|(k, _)| (k.clone(), prev.get(k).copied())).collect();
    fx
}

/// The entries of a consumer-offsets file (FORMAT.md 11.1 and 11.3); none
/// if it does not exist (a crash image copied in the middle of a write).
fn decode_offsets(path: &Path) -> HashMap<(String, String, u32), u64> {
    let Ok(b) = std::fs::read(path) else { return HashMap::new() };
    let u16_at = |i: usize| usize::from(u16::from_be_bytes([b[i], b[i + 1]]));
    let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    let string = |i: usize| String::from_utf8(b[i + 2..i + 2 + u16_at(i)].to_vec()).unwrap();
    let mut out = HashMap::new();
    let mut at = 24;
    for _ in 0..u32_at(20) {
        let group = string(at);
        at += 2 + group.len();
        let topic = string(at);
        at += 2 + topic.len();
        let queue = u32_at(at);
        let offset = u64::from_be_bytes(b[at + 4..at + 12].try_into().unwrap());
        at += 12;
        out.insert((group, topic, queue), offset);
    }
    out
}

/// Every file under `root`, relative paths, sorted.
fn files(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn is_cq(rel: &Path) -> bool {
    rel.starts_with("consumequeue")
}

/// Derived data: rebuilt from the commit log, so damaging it loses nothing.
fn is_derived(rel: &Path) -> bool {
    is_cq(rel)
        || rel.starts_with("index")
        || rel == Path::new("config/dispatch")
        || rel == Path::new("config/consumers")
        || rel == Path::new("config/delay")
}

fn pick<'a, T>(rng: &mut Rng, v: &'a [T]) -> &'a T {
    &v[rng.below(v.len() as u64) as usize]
}

/// Applies one random damage to the store copy in `dir`. Returns what it did
/// and whether only derived data was touched.
fn damage(dir: &Path, rng: &mut Rng) -> (String, bool) {
    let all = files(dir);
    let segs: Vec<_> = all.iter().filter(|p| p.starts_with("commitlog")).cloned().collect();
    let cqs: Vec<_> = all.iter().filter(|p| is_cq(p)).cloned().collect();
    let meta: Vec<_> =
        all.iter().filter(|p| p.starts_with("config") || *p == Path::new("checkpoint")).cloned().collect();
    let op = rng.below(10);
    // The victim for the single-file operations: each kind equally likely.
    let victim = {
        let kinds: Vec<&Vec<PathBuf>> = [&segs, &cqs, &meta, &all].into_iter().filter(|v| !v.is_empty()).collect();
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        pick(rng, kind).clone()
    };
    let path = dir.join(&victim);
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    let len = bytes.len();
    let name = victim.display().to_string();
    let derived = is_derived(&victim);
    match op {
        0 if len > 0 => {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let at = rng.below(len as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            std::fs::write(&path, &bytes).unwrap();
            (format!("{n} bit flips in {name}"), derived)
        }
        1 | 2 if len > 0 => {
            let at = rng.below(len as u64) as usize;
            let cap = if rng.below(2) == 0 { 64 } else { 8192 };
            let n = (1 + rng.below(cap) as usize).min(len - at);
            let fill = if op == 1 { random_bytes(rng, n) } else { vec![0; n] };
            bytes[at..at + n].copy_from_slice(&fill);
            std::fs::write(&path, &bytes).unwrap();
            let what = if op == 1 { "garbage" } else { "zeros" };
            (format!("{what} over {at}+{n} of {name} ({len} bytes)"), derived)
        }
        3 => {
            let to = rng.below(len as u64 + 1);
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(to).unwrap();
            (format!("{name} cut from {len} to {to}"), derived)
        }
        4 => {
            let n = 1 + rng.below(4096) as usize;
            bytes.extend(random_bytes(rng, n));
            std::fs::write(&path, &bytes).unwrap();
            (format!("{n} garbage bytes appended to {name}"), derived)
        }
        5 => {
            std::fs::remove_file(&path).unwrap();
            (format!("{name} deleted"), derived)
        }
        6 => stray(dir, rng, &all),
        7 if cqs.len() >= 2 => {
            let a = pick(rng, &cqs).clone();
            let b = pick(rng, &cqs).clone();
            let (ba, bb) = (std::fs::read(dir.join(&a)).unwrap(), std::fs::read(dir.join(&b)).unwrap());
            std::fs::write(dir.join(&a), bb).unwrap();
            std::fs::write(dir.join(&b), ba).unwrap();
            (format!("consume-queue files {} and {} swapped", a.display(), b.display()), true)
        }
        8 if segs.len() >= 2 => {
            let a = pick(rng, &segs).clone();
            let b = pick(rng, &segs).clone();
            let (ba, bb) = (std::fs::read(dir.join(&a)).unwrap(), std::fs::read(dir.join(&b)).unwrap());
            std::fs::write(dir.join(&a), bb).unwrap();
            std::fs::write(dir.join(&b), ba).unwrap();
            (format!("segments {} and {} swapped", a.display(), b.display()), false)
        }
        _ => {
            // A metadata file replaced by another one's bytes.
            let names = [
                "config/topics",
                "config/consumer_offsets",
                "config/dispatch",
                "config/store",
                "config/consumers",
                "checkpoint",
            ];
            let target = Path::new(pick(rng, &names));
            let source =
                if meta.is_empty() || rng.below(5) == 0 { pick(rng, &all).clone() } else { pick(rng, &meta).clone() };
            let b = std::fs::read(dir.join(&source)).unwrap();
            std::fs::write(dir.join(target), b).unwrap();
            (format!("{} replaced by the bytes of {}", target.display(), source.display()), is_derived(target))
        }
    }
}

/// Adds a stray file somewhere in the store directory.
fn stray(dir: &Path, rng: &mut Rng, all: &[PathBuf]) -> (String, bool) {
    let mut places: Vec<PathBuf> =
        vec![PathBuf::new(), PathBuf::from("commitlog"), PathBuf::from("config"), PathBuf::from("consumequeue")];
    for (t, n) in TOPICS {
        places.push(Path::new("consumequeue").join(t));
        for q in 0..n {
            places.push(Path::new("consumequeue").join(t).join(q.to_string()));
        }
    }
    let place = pick(rng, &places).clone();
    let name = match rng.below(8) {
        0 => format!("{:020}", rng.below(1 << 40)),
        1 => format!("{:020}", 8 * rng.below(12)),
        2 => format!("{:020}", (64 << 10) * rng.below(8)),
        3 => format!("{:020}.tmp", rng.below(100)),
        4 => rng.below(8).to_string(),
        5 => "junk".to_string(),
        6 => "zz-Topic".to_string(),
        _ => format!("x{}.tmp", rng.below(10)),
    };
    let rel = place.join(&name);
    if dir.join(&rel).exists() {
        return (format!("nothing ({} exists)", rel.display()), true);
    }
    let content = if rng.below(3) == 0 {
        std::fs::read(dir.join(pick(rng, all))).unwrap_or_default()
    } else {
        let n = rng.below(9000) as usize;
        random_bytes(rng, n)
    };
    let len = content.len();
    std::fs::create_dir_all(dir.join(&place)).unwrap();
    std::fs::write(dir.join(&rel), content).unwrap();
    // A stray file is only harmless to the commit log outside its directory
    // and outside the names of the non-derived files.
    let primary = ["checkpoint", "config/topics", "config/consumer_offsets", "config/store"];
    let derived = !rel.starts_with("commitlog") && !primary.iter().any(|p| rel == Path::new(p));
    (format!("stray file {} ({len} bytes)", rel.display()), derived)
}

/// Pulls every queue of every topic and checks each message served against
/// what was sent. With `full`, everything sent must be there too, and the
/// committed offsets must be those of an undamaged copy.
fn check_store(store: &Store, fx: &Fixture, full: bool, rng: &mut Rng, issues: &mut Vec<String>) {
    for (topic, _) in TOPICS {
        let Some(cfg) = store.topic(topic) else {
            if full {
                issues.push(format!("topic {topic} missing"));
            }
            continue;
        };
        for q in 0..cfg.read_queues {
            check_queue(store, fx, topic, q, full, rng, issues);
        }
    }
    if full {
        for ((g, t, q), want) in &fx.offsets {
            let got = store.committed_offset(g, t, *q);
            if got != *want {
                issues.push(format!("committed offset {g}/{t}/{q}: {got:?}, undamaged copy has {want:?}"));
            }
        }
    }
}

fn check_queue(store: &Store, fx: &Fixture, topic: &str, q: u32, full: bool, rng: &mut Rng, issues: &mut Vec<String>) {
    let filter = match rng.below(4) {
        0 => TagFilter::parse(["TagA", "TagB || TagC", "TagC"][rng.below(3) as usize]).unwrap(),
        _ => TagFilter::All,
    };
    let want_tag = |s: &Sent| match &filter {
        TagFilter::All => true,
        TagFilter::Tags(t) => s.tags.as_ref().is_some_and(|x| t.contains(x)),
    };
    let with_ref = rng.below(2) == 0;
    let mut batch = 1 + rng.below(40) as usize;
    let end = store.max_offset(topic, q).unwrap_or(0);
    let mut served: Vec<u64> = Vec::new();
    let mut offset = 0u64;
    let ctx = format!("{topic}/{q} ({} pulls, filter {filter:?})", if with_ref { "pull_with" } else { "pull" });
    for _ in 0..100_000 {
        let mut got: Vec<Sent> = Vec::new();
        let r = if with_ref {
            store
                .pull_with(topic, q, offset, batch, &filter, |m| {
                    got.push(Sent::of_ref(&m));
                    Ok(())
                })
                .map(|s| (s.status, s.next_offset))
        } else {
            store.pull(topic, q, offset, batch, &filter).map(|r| {
                got.extend(r.messages.iter().map(Sent::of_ext));
                (r.status, r.next_offset)
            })
        };
        match r {
            Ok((status, next)) => {
                let mut expect_at = offset;
                for m in &got {
                    let at = m.queue_offset;
                    match fx.sent.get(&(topic.to_string(), q, at)) {
                        Some(s) if s == m => {}
                        Some(s) => issues.push(format!("{ctx}: WRONG MESSAGE at {at}: served {m:?}, sent {s:?}")),
                        None => issues.push(format!("{ctx}: GARBAGE served at {at}: {m:?}")),
                    }
                    if at < expect_at || at >= next.max(offset + 1) {
                        issues.push(format!("{ctx}: message at {at} served from a pull at {offset} (next {next})"));
                    }
                    // With primary data damaged (a segment deleted), units
                    // whose records are gone are stepped over: gaps are then
                    // lost messages, not wrong ones.
                    if full && matches!(filter, TagFilter::All) && at != expect_at {
                        issues.push(format!("{ctx}: message {at} served at position {expect_at}"));
                    }
                    if !fx.sent.get(&(topic.to_string(), q, at)).is_some_and(want_tag) {
                        issues.push(format!("{ctx}: message {at} does not match the filter"));
                    }
                    served.push(at);
                    expect_at = at + 1;
                }
                match status {
                    PullStatus::NoNewMessage => break,
                    PullStatus::OffsetIllegal if next > offset => {
                        if full {
                            issues.push(format!("{ctx}: offset {offset} illegal, queue starts at {next}"));
                        }
                        offset = next;
                    }
                    PullStatus::OffsetIllegal => {
                        issues.push(format!("{ctx}: offset {offset} illegal, next {next}"));
                        break;
                    }
                    PullStatus::Found | PullStatus::NoMatchedMessage => {
                        if next <= offset {
                            issues.push(format!("{ctx}: pull at {offset} made no progress ({status:?})"));
                            break;
                        }
                        offset = next;
                    }
                }
            }
            // Acceptable after damage to the commit log: a typed error for
            // the damaged record, or for a unit pointing below the log's
            // first segment (a deleted head). Step over it one at a time.
            Err(e) if !full && (matches!(e, Error::Corruption { .. }) || e.to_string().contains("is not stored")) => {
                if batch > 1 {
                    batch = 1;
                } else {
                    offset += 1;
                    if offset > end.max(fx.queue_len(topic, q)) {
                        break;
                    }
                }
            }
            Err(e) => {
                issues.push(format!("{ctx}: pull at {offset} failed: {e}"));
                break;
            }
        }
    }
    // Known limitation: consume-queue units carry no checksum, and a tag
    // filter skips units by their tag hash without reading the record. A
    // damaged tag hash can therefore hide a message from a tag-filtered
    // pull (never show a wrong one: the record's own tag is checked for
    // every unit read). A damaged position or size is found on read and the
    // queue rebuilt; so completeness is demanded of unfiltered pulls only.
    if full && matches!(filter, TagFilter::All) {
        let want: Vec<u64> = (0..fx.queue_len(topic, q))
            .filter(|o| fx.sent.get(&(topic.to_string(), q, *o)).is_some_and(want_tag))
            .collect();
        if served != want {
            let lost: Vec<_> = want.iter().filter(|o| !served.contains(o)).collect();
            issues.push(format!(
                "{ctx}: LOST messages: served {} of {} (queue end {end}, sent {}), missing {:?}",
                served.len(),
                want.len(),
                fx.queue_len(topic, q),
                &lost[..lost.len().min(10)]
            ));
        }
    }
}

/// Runs every read of `StoreView` on the (damaged) directory; what it shows
/// must be records that were written.
fn check_view(dir: &Path, fx: &Fixture, rng: &mut Rng, issues: &mut Vec<String>) {
    let Ok(view) = StoreView::open(dir) else { return };
    let _ = view.topics();
    let _ = view.offsets();
    let _ = view.queue_ranges();
    let _ = view.consumers();
    let _ = view.segment_count();
    let _ = view.commit_log_bytes();
    for (topic, queues) in TOPICS {
        let queue = if rng.below(2) == 0 { None } else { Some(rng.below(u64::from(queues)) as u32) };
        let from = rng.below(3) * rng.below(20);
        let _ = view.offset_for_timestamp(topic, queue.unwrap_or(0), rng.next() >> rng.below(64));
        let _ = view.messages(topic, queue, from, 0, |m| {
            let s = Sent::of_ext(&m);
            match fx.records.get(&s.msg_id) {
                Some(r) if *r == s => {}
                _ => issues.push(format!("StoreView GARBAGE: {s:?}")),
            }
            if s.topic != topic || queue.is_some_and(|q| q != s.queue_id) || s.queue_offset < from {
                issues.push(format!("StoreView served a message outside {topic}/{queue:?} from {from}: {s:?}"));
            }
            Ok(true)
        });
    }
}

static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

/// Records every panic, on any thread (background threads of the store
/// included), then lets the default hook print it.
fn install_panic_hook() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("?").to_string();
            PANICS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(format!("[{thread}] {info}"));
            default(info);
        }));
    });
}

fn take_panics() -> Vec<String> {
    std::mem::take(&mut *PANICS.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Aborts the process (after printing the round) if a round hangs.
struct Watchdog {
    state: Arc<Mutex<(Instant, String)>>,
    stop: Arc<AtomicBool>,
}

impl Watchdog {
    fn start() -> Self {
        let state = Arc::new(Mutex::new((Instant::now(), String::from("starting"))));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(200));
                let (since, what) = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                if since.elapsed() > HANG {
                    eprintln!("HANG: {what} has run for {:?}", since.elapsed());
                    std::process::abort();
                }
            }
        });
        Self { state, stop }
    }

    fn set(&self, what: String) {
        *self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (Instant::now(), what);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// A generator for one fixture or round, so a single round can be replayed.
/// How opening a damaged copy went.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Opened,
    /// Opened from the previous generation of a metadata file (what
    /// `Store::metadata_fallbacks` reported).
    FellBack(String),
    /// With the error open returned.
    Refused(String),
    Panicked,
}

/// Opens the damaged copy in `dir` (and `StoreView` on it) and checks what
/// it serves against the fixture; with `derived`, also that nothing was
/// lost and that the repair is durable. With `metadata` (only metadata
/// files were damaged), a store that opened without reporting a fallback to
/// a previous generation must have every topic and exactly the committed
/// offsets of the undamaged copy (no silent reset), and one that fell back
/// no offset ahead of them. Returns the problems found.
fn evaluate(fx: &Fixture, dir: &Path, derived: bool, metadata: bool, rng: &mut Rng) -> (Vec<String>, Outcome) {
    let mut outcome = Outcome::Panicked;
    let mut issues = Vec::new();
    let view = catch_unwind(AssertUnwindSafe(|| check_view(dir, fx, rng, &mut issues)));
    if view.is_err() {
        issues.push("PANIC in StoreView".to_string());
    }
    match catch_unwind(AssertUnwindSafe(|| Store::open(dir, opts()))) {
        Err(_) => issues.push("PANIC in Store::open".to_string()),
        Ok(Err(e)) => {
            outcome = Outcome::Refused(format!("{e:?}"));
            if derived {
                issues.push(format!("LOST: open failed although only derived data was damaged: {e}"));
            } else if !matches!(e, Error::Corruption { .. } | Error::Io { .. } | Error::InvalidArgument(_)) {
                issues.push(format!("open failed with an unexpected error kind: {e:?}"));
            }
        }
        Ok(Ok(store)) => {
            let fallbacks = store.metadata_fallbacks().to_vec();
            outcome = if fallbacks.is_empty() { Outcome::Opened } else { Outcome::FellBack(format!("{fallbacks:?}")) };
            if metadata {
                check_metadata(&store, fx, &fallbacks, &mut issues);
            }
            let r = catch_unwind(AssertUnwindSafe(|| check_store(&store, fx, derived, rng, &mut issues)));
            if r.is_err() {
                issues.push("PANIC while pulling".to_string());
            }
            match catch_unwind(AssertUnwindSafe(|| store.close())) {
                Err(_) => issues.push("PANIC in close".to_string()),
                Ok(Err(e)) if derived => issues.push(format!("close failed: {e}")),
                Ok(_) => {}
            }
            drop(store);
            if derived && issues.is_empty() {
                // Repair is durable: a second open serves everything too.
                match catch_unwind(AssertUnwindSafe(|| Store::open(dir, opts()))) {
                    Err(_) => issues.push("PANIC in the second Store::open".to_string()),
                    Ok(Err(e)) => issues.push(format!("LOST: second open failed: {e}")),
                    Ok(Ok(store)) => {
                        let r = catch_unwind(AssertUnwindSafe(|| {
                            check_store(&store, fx, true, rng, &mut issues);
                            store.close()
                        }));
                        match r {
                            Err(_) => issues.push("PANIC after the second open".to_string()),
                            Ok(Err(e)) => issues.push(format!("second close failed: {e}")),
                            Ok(Ok(())) => {}
                        }
                    }
                }
            }
        }
    }
    for p in take_panics() {
        issues.push(format!("PANIC: {p}"));
    }
    (issues, outcome)
}

/// Topics and committed offsets after damage to metadata files only: the
/// committed offsets are exactly those of the undamaged copy, or of the
/// previous generation when open reported falling back to it, and every
/// topic is there unless the topic table fell back. Anything else is a
/// silent change (a reset to nothing among them).
fn check_metadata(store: &Store, fx: &Fixture, fallbacks: &[MetadataFallback], issues: &mut Vec<String>) {
    let fell_back = |name: &str| fallbacks.iter().any(|f| f.file.file_name().is_some_and(|n| n == name));
    let (want, which) = if fell_back("consumer_offsets") {
        (&fx.prev_offsets, "previous generation")
    } else {
        (&fx.offsets, "undamaged copy")
    };
    for ((g, t, q), want) in want {
        let got = store.committed_offset(g, t, *q);
        if got != *want {
            issues.push(format!("SILENT offset change {g}/{t}/{q}: {got:?}, {which} has {want:?}"));
        }
    }
    if !fell_back("topics") {
        for (topic, _) in TOPICS {
            if store.topic(topic).is_none() {
                issues.push(format!("SILENT loss of topic {topic} (no fallback reported)"));
            }
        }
    }
}

fn rng_for(base: u64, what: u64, index: u64) -> Rng {
    let mut r = Rng((base ^ what.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)) | 1);
    for _ in 0..4 {
        r.next();
    }
    r
}

#[test]
fn damaged_store_directories_never_panic_or_serve_wrong_messages() {
    install_panic_hook();
    let base = seed();
    let rounds: u64 = std::env::var("MQSTORE_STORE_GARBAGE_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    println!("store_garbage: seed {base}, {rounds} rounds (MQSTORE_SEED={base} to replay, plus MQSTORE_STORE_GARBAGE_ROUND=n for one round)");
    let watchdog = Watchdog::start();
    let started = Instant::now();
    // MQSTORE_STORE_GARBAGE_ROUND=n replays round n alone (with its fixture).
    let only: Option<u64> = std::env::var("MQSTORE_STORE_GARBAGE_ROUND").ok().and_then(|s| s.parse().ok());
    let mut fixture: Option<(u64, Fixture)> = None;
    let mut failures: Vec<String> = Vec::new();
    let (mut opened, mut refused, mut derived_rounds) = (0u64, 0u64, 0u64);
    for round in only.map_or(0..rounds, |r| r..r + 1) {
        let fixture_index = round / ROUNDS_PER_FIXTURE;
        if fixture.as_ref().is_none_or(|(i, _)| *i != fixture_index) {
            watchdog.set(format!("seed {base} round {round}: building fixture {fixture_index}"));
            drop(fixture.take());
            fixture = Some((fixture_index, build_fixture(&mut rng_for(base, 1, fixture_index))));
            take_panics();
        }
        let fx = &fixture.as_ref().unwrap().1;
        let mut rng = rng_for(base, 2, round);
        let tmp = scratch();
        let dir = tmp.path().join("store");
        copy_tree(&fx.image, &dir);
        let mut what = Vec::new();
        let mut derived = true;
        for _ in 0..(1 + rng.below(4) / 3 + rng.below(6) / 5) {
            let (w, d) = damage(&dir, &mut rng);
            what.push(w);
            derived &= d;
        }
        let ctx = format!(
            "seed {base} round {round} ({}, {}): {}",
            if fx.crashed { "crash image" } else { "clean close" },
            if derived { "derived data only" } else { "primary data" },
            what.join("; ")
        );
        watchdog.set(ctx.clone());
        // `evaluate` reports the panics it caught.
        let (mut issues, outcome) = evaluate(fx, &dir, derived, false, &mut rng);
        match outcome {
            Outcome::Opened | Outcome::FellBack(_) => {
                opened += 1;
                derived_rounds += u64::from(derived);
            }
            Outcome::Refused(_) => refused += 1,
            Outcome::Panicked => {}
        }
        if !issues.is_empty() {
            issues.truncate(8);
            let msg = format!("{ctx}\n    {}", issues.join("\n    "));
            eprintln!("FAILED {msg}");
            failures.push(msg);
        }
    }
    drop(watchdog);
    println!(
        "store_garbage: seed {base}: {} rounds in {:?}: {opened} opened ({derived_rounds} with derived-only \
         damage, checked complete), {refused} refused with a typed error, {} failed",
        only.map_or(rounds, |_| 1),
        started.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "seed {base}: {} of {rounds} rounds failed (MQSTORE_SEED={base} replays); first:\n{}",
        failures.len(),
        failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// One deterministic damage of the matrix.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Cut the file to this many bytes.
    Truncate(usize),
    /// Flip one bit: byte index, bit.
    Flip(usize, u8),
    /// Zero the 4 KiB page at this index.
    ZeroPage(usize),
    /// Fill the 4 KiB page at this index with noise.
    NoisePage(usize),
    Delete,
    Empty,
    /// Put back the file as it was three quarters of the way through.
    Older,
}

/// The damages for one file: truncation at every byte (every third unless
/// `full`) of its last written 120 bytes, a flip in each of its first 64
/// bytes (every bit when `full`) and 8 random flips over what was written,
/// zeroed and noisy pages at its start and at its written end, deletion,
/// emptying, and an older copy.
fn matrix_for(bytes: &[u8], full: bool, rng: &mut Rng) -> Vec<Damage> {
    // Preallocated files are zeros past what was written.
    let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let mut out = Vec::new();
    let step = if full { 1 } else { 3 };
    for at in (written.saturating_sub(120)..written).step_by(step) {
        out.push(Damage::Truncate(at));
    }
    for i in 0..written.min(64) {
        if full {
            out.extend((0..8).map(|b| Damage::Flip(i, b)));
        } else {
            out.push(Damage::Flip(i, (i % 8) as u8));
        }
    }
    for _ in 0..8 {
        if written > 0 {
            out.push(Damage::Flip(rng.below(written as u64) as usize, rng.below(8) as u8));
        }
    }
    let last_page = written.saturating_sub(1) / 4096;
    out.extend([Damage::ZeroPage(0), Damage::NoisePage(0), Damage::ZeroPage(last_page), Damage::NoisePage(last_page)]);
    out.extend([Damage::Delete, Damage::Empty, Damage::Older]);
    out
}

/// Applies `d` to `dir/rel`; `false` when it does not apply (no older copy).
fn apply(fx: &Fixture, dir: &Path, rel: &Path, d: Damage, rng: &mut Rng) -> bool {
    let path = dir.join(rel);
    let mut bytes = std::fs::read(&path).unwrap();
    match d {
        Damage::Truncate(n) => bytes.truncate(n),
        Damage::Flip(i, b) => bytes[i] ^= 1 << b,
        Damage::ZeroPage(p) | Damage::NoisePage(p) => {
            let (lo, hi) = (p * 4096, ((p + 1) * 4096).min(bytes.len()));
            if lo >= hi {
                return false;
            }
            let fill = if matches!(d, Damage::ZeroPage(_)) { vec![0u8; hi - lo] } else { random_bytes(rng, hi - lo) };
            bytes[lo..hi].copy_from_slice(&fill);
        }
        Damage::Delete => {
            std::fs::remove_file(&path).unwrap();
            return true;
        }
        Damage::Empty => bytes.clear(),
        Damage::Older => match std::fs::read(fx.older.join(rel)) {
            Ok(old) if old != bytes => bytes = old,
            _ => return false,
        },
    }
    std::fs::write(&path, &bytes).unwrap();
    true
}

/// Every file kind of a store under a fixed matrix of damages (see
/// [`matrix_for`]): the newest commit-log segment, the checkpoint, the
/// fullest consume-queue file, an index file, and each config file (with
/// both generations of the primary metadata files).
/// Damage to derived data (consume queues, index, dispatch checkpoint,
/// delay progress) must lose nothing; damage elsewhere must end in a typed
/// error or a store that serves only what was sent, and never panic.
/// Damage to a metadata file must either leave topics and offsets exactly
/// as they were or be reported as a fallback to the previous generation
/// (counted in its own column): never a silent reset.
/// `MQSTORE_DAMAGE_MATRIX_FULL=1` runs every byte and every bit;
/// `MQSTORE_DAMAGE_MATRIX_VERBOSE=1` prints the error of every refusal.
#[test]
fn every_file_kind_under_the_damage_matrix() {
    install_panic_hook();
    let base = seed();
    let full = std::env::var_os("MQSTORE_DAMAGE_MATRIX_FULL").is_some();
    let watchdog = Watchdog::start();
    let started = Instant::now();
    watchdog.set(format!("seed {base}: building the matrix fixture"));
    // A fixture that was closed cleanly, so every config file exists (a
    // crash image may predate the first persist of the consumer offsets).
    let mut fx = build_fixture(&mut rng_for(base, 3, 0));
    for i in 1..16 {
        if !fx.crashed {
            break;
        }
        fx = build_fixture(&mut rng_for(base, 3, i));
    }
    take_panics();
    let all = files(&fx.image);
    let largest = |prefix: &str| {
        all.iter()
            .filter(|p| p.starts_with(prefix))
            .max_by_key(|p| std::fs::read(fx.image.join(p)).map_or(0, |b| b.iter().filter(|&&x| x != 0).count()))
            .cloned()
    };
    let mut targets: Vec<(&str, PathBuf)> = Vec::new();
    if let Some(p) = all.iter().filter(|p| p.starts_with("commitlog")).max() {
        targets.push(("newest segment", p.clone()));
    }
    for (kind, prefix) in [("consume queue", "consumequeue"), ("index", "index")] {
        if let Some(p) = largest(prefix) {
            targets.push((kind, p));
        }
    }
    for name in [
        "checkpoint",
        "config/dispatch",
        "config/delay",
        "config/consumer_offsets",
        "config/consumer_offsets.prev",
        "config/topics",
        "config/topics.prev",
        "config/store",
        "config/store.prev",
    ] {
        if all.iter().any(|p| p == Path::new(name)) {
            targets.push((name, PathBuf::from(name)));
        }
    }
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    let mut rng = rng_for(base, 4, 0);
    for (kind, rel) in &targets {
        let bytes = std::fs::read(fx.image.join(rel)).unwrap();
        let derived = is_derived(rel);
        let metadata = rel.starts_with("config");
        let (mut cases, mut opened, mut fell_back, mut refused) = (0u64, 0u64, 0u64, 0u64);
        // A previous generation only matters once its current file is lost
        // (rows above), so by default it gets every fourth damage plus the
        // whole-file ones, to keep CI short.
        let is_prev = rel.extension().is_some_and(|e| e == "prev");
        let damages = matrix_for(&bytes, full, &mut rng).into_iter().enumerate().filter(|(i, d)| {
            full || !is_prev || i % 4 == 0 || matches!(d, Damage::Delete | Damage::Empty | Damage::Older)
        });
        for (_, d) in damages {
            let tmp = scratch();
            let dir = tmp.path().join("store");
            copy_tree(&fx.image, &dir);
            if !apply(&fx, &dir, rel, d, &mut rng) {
                continue;
            }
            cases += 1;
            let ctx = format!("seed {base}: {kind} {} under {d:?}", rel.display());
            watchdog.set(ctx.clone());
            let (issues, outcome) = evaluate(&fx, &dir, derived, metadata, &mut rng);
            match outcome {
                Outcome::Opened => opened += 1,
                Outcome::FellBack(f) => {
                    fell_back += 1;
                    if std::env::var_os("MQSTORE_DAMAGE_MATRIX_VERBOSE").is_some() {
                        eprintln!("fell back: {ctx}: {f}");
                    }
                }
                Outcome::Refused(e) => {
                    refused += 1;
                    if std::env::var_os("MQSTORE_DAMAGE_MATRIX_VERBOSE").is_some() {
                        eprintln!("refused: {ctx}: {e}");
                    }
                }
                Outcome::Panicked => {}
            }
            if !issues.is_empty() {
                let msg = format!(
                    "{ctx} ({})\n    {}",
                    if fx.crashed { "crash image" } else { "clean close" },
                    issues.join("\n    ")
                );
                eprintln!("FAILED {msg}");
                failures.push(msg);
            }
        }
        rows.push(format!(
            "| {kind} | {} | {cases} | {opened} | {fell_back} | {refused} |",
            if derived { "derived" } else { "primary" }
        ));
    }
    drop(watchdog);
    println!("damage matrix: seed {base}, {} ({:?}):", if full { "full" } else { "default" }, started.elapsed());
    println!(
        "| file | kind | damages | opened | opened from the previous generation | refused (typed error) |\n\
         |---|---|---|---|---|---|"
    );
    for r in rows {
        println!("{r}");
    }
    assert!(
        failures.is_empty(),
        "{} damages failed; first:\n{}",
        failures.len(),
        failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}
