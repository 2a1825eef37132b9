//! Stateful property test: random sequences of store operations, each
//! checked against an in-memory model (`model/mod.rs`), as redb's fuzz
//! target checks every operation against a `BTreeMap`.
//!
//! Operations: sends (round robin, to a chosen queue, batches, delayed by a
//! level; with tags, keys and a user property), pulls at any offset (inside,
//! at and past the end, `u64::MAX`) with and without a tag filter, commits
//! and resets of consumer offsets (past the end too), seeks by store time
//! (before the first message, at and after each, `u64::MAX`), lookups by
//! key and by both message ids, clock steps, flushes, offset persists, a
//! clean close and reopen, and a simulated power loss on `SimStorage`.
//!
//! After every operation the queue ranges and the committed offsets of
//! every queue must equal the model's; pulls, seeks and lookups must return
//! exactly what the model says, byte for byte. After a reopen or a crash
//! every queue is read back in full. A crash under Sync flush must keep
//! every acknowledged send; under Async flush each queue must keep a prefix
//! of what was sent to it, covering at least what a completed `flush()` (or
//! a clean close) covered, and the model drops the rest. A committed offset
//! after a crash must be a value it held since it was last known durable
//! (clamped into the recovered queue). At the end the clock jumps past every
//! delay and each waiting message must reach its queue exactly once.
//!
//! Runs: `PROPTEST_CASES` sequences per flush mode (default 256), each of
//! 1 to 200 operations. The reference's PR bar (1,000 sequences) is
//! `PROPTEST_CASES=1000`, its nightly bar `PROPTEST_CASES=20000`.
//! Failures shrink to a minimal sequence and are saved in
//! `tests/store_model.proptest-regressions` (commit it; saved cases replay
//! first).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod model;

use model::{Model, Msg, OffsetKey, QueueKey};
use mqstore::commitlog::FlushMode;
use mqstore::index::IndexFileSize;
use mqstore::message::Message;
use mqstore::retry::{DelayLevels, SCHEDULE_TOPIC};
use mqstore::storage::SimStorage;
use mqstore::store::{PullStatus, SendResult, SendStatus, Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use mqstore::{Clock, Error, ManualClock};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DIR: &str = "/model";
/// User topics and their queue counts; index 2 is the schedule topic.
const TOPICS: [(&str, u32); 2] = [("A", 2), ("B", 3)];
/// Delays far longer than the clock moves during a sequence, so delayed
/// messages wait in the schedule topic until the final drain.
const LEVELS: &str = "1h 2h 3h";
const GROUPS: [&str; 2] = ["g1", "g2"];
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
const TAGS: [&str; 3] = ["ta", "tb", "tc"];
const MAX_BODY: usize = 1024;
const MAX_OPS: usize = 200;
const START_MS: u64 = 1_700_000_000_000;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
}

/// A body: `len` bytes derived from `seed` (short to print when shrunk).
#[derive(Debug, Clone)]
struct Body {
    seed: u64,
    len: usize,
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        common::noise(self.seed, self.len)
    }
}

/// Tag, keys and user property of a sent message.
#[derive(Debug, Clone)]
struct Meta {
    tag: Option<usize>,
    keys: Vec<usize>,
    prop: Option<String>,
}

/// A queue offset relative to the queue's end when the operation runs.
#[derive(Debug, Clone, Copy)]
enum Pos {
    /// `n % (end + 1)`: inside the queue or at its end.
    In(u64),
    End,
    Past(u64),
    Max,
}

impl Pos {
    fn resolve(self, end: u64) -> u64 {
        match self {
            Self::In(n) => n % (end + 1),
            Self::End => end,
            Self::Past(d) => end + d,
            Self::Max => u64::MAX,
        }
    }
}

/// A store time relative to the queue's messages.
#[derive(Debug, Clone, Copy)]
enum When {
    Zero,
    At(usize),
    After(usize),
    Max,
}

#[derive(Debug, Clone)]
enum Op {
    Send { topic: usize, queue: Option<u32>, body: Body, meta: Meta },
    Batch { topic: usize, bodies: Vec<Body>, meta: Meta },
    Delayed { topic: usize, level: u8, body: Body, meta: Meta },
    Pull { topic: usize, queue: u32, at: Pos, max: usize, tag: Option<usize> },
    Commit { group: usize, topic: usize, queue: u32, at: Pos },
    Reset { group: usize, topic: usize, queue: u32, at: Pos },
    Seek { topic: usize, queue: u32, when: When },
    QueryKey { topic: usize, key: usize },
    QueryId { pick: usize, store_level: bool },
    Advance { ms: u64 },
    Flush,
    PersistOffsets,
    Reopen,
    Crash { seed: u64 },
}

fn body() -> impl Strategy<Value = Body> {
    let len = prop_oneof![8 => 1..64usize, 1 => 64..MAX_BODY, 1 => Just(MAX_BODY)];
    (any::<u64>(), len).prop_map(|(seed, len)| Body { seed, len })
}

fn meta() -> impl Strategy<Value = Meta> {
    // Property values with spaces, tabs, DEL and non-ASCII: all legal.
    let prop = proptest::option::of("[a-z \t\u{7f}é]{0,8}");
    (proptest::option::of(0..TAGS.len()), proptest::collection::vec(0..KEYS.len(), 0..3), prop)
        .prop_map(|(tag, keys, prop)| Meta { tag, keys, prop })
}

fn pos() -> impl Strategy<Value = Pos> {
    prop_oneof![6 => any::<u64>().prop_map(Pos::In), 2 => Just(Pos::End), 1 => (1..4u64).prop_map(Pos::Past), 1 => Just(Pos::Max)]
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        Just(When::Zero),
        any::<usize>().prop_map(When::At),
        any::<usize>().prop_map(When::After),
        Just(When::Max)
    ]
}

/// A queue id of topic `t` (0..3 covers every queue of every topic; one
/// past the last queue of A is tried too and must be refused).
fn op() -> impl Strategy<Value = Op> {
    let topic = 0..TOPICS.len();
    let any_topic = 0..=TOPICS.len();
    prop_oneof![
        12 => (topic.clone(), proptest::option::of(0..3u32), body(), meta())
            .prop_map(|(topic, queue, body, meta)| Op::Send { topic, queue, body, meta }),
        3 => (topic.clone(), proptest::collection::vec(body(), 1..5), meta())
            .prop_map(|(topic, bodies, meta)| Op::Batch { topic, bodies, meta }),
        2 => (topic.clone(), 1..=3u8, body(), meta()).prop_map(|(topic, level, body, meta)| Op::Delayed { topic, level, body, meta }),
        8 => (any_topic.clone(), 0..3u32, pos(), prop_oneof![Just(0usize), 1..40usize], proptest::option::of(0..TAGS.len()))
            .prop_map(|(topic, queue, at, max, tag)| Op::Pull { topic, queue, at, max, tag }),
        4 => (0..GROUPS.len(), topic.clone(), 0..3u32, pos()).prop_map(|(group, topic, queue, at)| Op::Commit { group, topic, queue, at }),
        2 => (0..GROUPS.len(), topic.clone(), 0..3u32, pos()).prop_map(|(group, topic, queue, at)| Op::Reset { group, topic, queue, at }),
        2 => (topic.clone(), 0..3u32, when()).prop_map(|(topic, queue, when)| Op::Seek { topic, queue, when }),
        2 => (topic, 0..KEYS.len()).prop_map(|(topic, key)| Op::QueryKey { topic, key }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, store_level)| Op::QueryId { pick, store_level }),
        2 => (0..2_000u64).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Flush),
        1 => Just(Op::PersistOffsets),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

fn topic_name(t: usize) -> &'static str {
    TOPICS.get(t).map_or(SCHEDULE_TOPIC, |(n, _)| n)
}

fn queue_count(t: usize) -> u32 {
    TOPICS.get(t).map_or(3, |(_, q)| *q)
}

/// Every queue of every topic, the schedule topic's too.
fn all_queues() -> Vec<QueueKey> {
    (0..=TOPICS.len()).flat_map(|t| (0..queue_count(t)).map(move |q| (topic_name(t).to_string(), q))).collect()
}

fn offset_keys() -> Vec<OffsetKey> {
    GROUPS
        .iter()
        .flat_map(|g| TOPICS.iter().flat_map(move |(t, n)| (0..*n).map(move |q| (g.to_string(), t.to_string(), q))))
        .collect()
}

fn opts(sim: &SimStorage, clock: &Arc<ManualClock>, mode: FlushMode) -> StoreOptions {
    let log = common::sim_log_opts(sim, mode).clock(clock.clone());
    StoreOptions::default()
        .commit_log_options(log)
        .max_body_size(MAX_BODY)
        .max_properties_size(512)
        .consume_queue_units_per_file(8)
        .index_file_size(IndexFileSize { slots: 16, max_entries: 64 })
        .offset_persist_interval(Duration::from_millis(3))
        .delay_levels(DelayLevels::parse(LEVELS).unwrap())
        .delay_poll_interval(Duration::from_millis(10))
}

fn message(topic: &str, body: &Body, meta: &Meta) -> Message {
    let mut m = Message::new(topic, body.bytes()).with_keys(meta.keys.iter().map(|&k| KEYS[k]));
    if let Some(t) = meta.tag {
        m = m.with_tags(TAGS[t]);
    }
    if let Some(p) = &meta.prop {
        m = m.with_property("p", p.clone());
    }
    m
}

/// One sequence's store, file system, clock and model.
struct Run {
    mode: FlushMode,
    sim: SimStorage,
    clock: Arc<ManualClock>,
    store: Store,
    model: Model,
    /// Operation number and op, for messages.
    ctx: String,
}

impl Run {
    fn new(mode: FlushMode) -> Self {
        let sim = SimStorage::new();
        let clock = Arc::new(ManualClock::new(START_MS));
        let store = Store::open(DIR, opts(&sim, &clock, mode)).unwrap();
        for (name, queues) in TOPICS {
            store.create_topic(TopicConfig::new(name, queues)).unwrap();
        }
        Self { mode, sim, clock, store, model: Model::default(), ctx: String::new() }
    }

    fn msg_from(&self, r: &SendResult, body: &Body, meta: &Meta, real: Option<QueueKey>) -> Msg {
        assert_eq!(r.status, SendStatus::SendOk, "{}: send status", self.ctx);
        Msg {
            body: body.bytes(),
            tag: meta.tag.map(|t| TAGS[t].to_string()),
            keys: meta.keys.iter().map(|&k| KEYS[k].to_string()).collect(),
            prop: meta.prop.clone(),
            store_ts: self.clock.now_ms(),
            msg_id: r.msg_id.into(),
            offset_msg_id: r.offset_msg_id.into(),
            physical: r.physical_offset.get(),
            real,
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Send { topic, queue, body, meta } => self.send(*topic, *queue, body, meta),
            Op::Batch { topic, bodies, meta } => self.batch(*topic, bodies, meta),
            Op::Delayed { topic, level, body, meta } => {
                let name = topic_name(*topic);
                let r = self.store.send(message(name, body, meta).with_delay_level(*level)).unwrap();
                let key = (SCHEDULE_TOPIC.to_string(), u32::from(*level) - 1);
                assert_eq!(r.queue_offset, self.model.end(&key), "{}: schedule queue offset", self.ctx);
                let m = self.msg_from(&r, body, meta, Some((name.to_string(), r.queue_id)));
                self.model.push(key, m);
            }
            Op::Pull { topic, queue, at, max, tag } => self.pull(*topic, *queue, *at, *max, *tag),
            Op::Commit { group, topic, queue, at } => {
                let (key, end) = self.offset_key(*group, *topic, *queue);
                let offset = at.resolve(end);
                let r = self.store.commit_offset(&key.0, &key.1, key.2, offset);
                let accepted = self.model.commit(key, offset, end);
                match r {
                    Ok(()) => assert!(accepted, "{}: commit past the end accepted", self.ctx),
                    Err(Error::InvalidArgument(_)) => assert!(!accepted, "{}: commit refused: {r:?}", self.ctx),
                    Err(e) => panic!("{}: commit failed: {e}", self.ctx),
                }
            }
            Op::Reset { group, topic, queue, at } => {
                let (key, end) = self.offset_key(*group, *topic, *queue);
                let offset = at.resolve(end);
                self.store.reset_offset(&key.0, &key.1, key.2, offset).unwrap();
                self.model.reset(key, offset, 0, end);
            }
            Op::Seek { topic, queue, when } => self.seek(*topic, *queue, *when),
            Op::QueryKey { topic, key } => {
                let name = topic_name(*topic);
                let got = self.store.query_by_key(name, KEYS[*key], 0, u64::MAX, 1000).unwrap();
                let got: Vec<u64> = got.iter().map(|m| m.physical_offset().get()).collect();
                assert_eq!(got, self.model.query_by_key(name, KEYS[*key]), "{}: query by key", self.ctx);
            }
            Op::QueryId { pick, store_level } => self.query_id(*pick, *store_level),
            Op::Advance { ms } => self.clock.advance_ms(*ms),
            Op::Flush => {
                self.store.commit_log().flush().unwrap();
                self.model.all_flushed();
            }
            Op::PersistOffsets => {
                self.store.persist_offsets().unwrap();
                self.model.offsets_durable();
            }
            Op::Reopen => {
                self.store.close().unwrap();
                self.store = Store::open(DIR, opts(&self.sim, &self.clock, self.mode)).unwrap();
                self.model.all_flushed();
                self.model.offsets_durable();
                self.check_contents();
            }
            Op::Crash { seed } => self.crash(*seed),
        }
    }

    fn send(&mut self, topic: usize, queue: Option<u32>, body: &Body, meta: &Meta) {
        let name = topic_name(topic);
        let m = message(name, body, meta);
        let r = match queue {
            None => self.store.send(m),
            Some(q) => self.store.send_to_queue(m, q),
        };
        let r = match (r, queue) {
            (Err(Error::InvalidArgument(_)), Some(q)) if q >= queue_count(topic) => return,
            (r, _) => r.unwrap_or_else(|e| panic!("{}: send failed: {e}", self.ctx)),
        };
        assert!(queue.is_none_or(|q| q == r.queue_id), "{}: sent to the wrong queue", self.ctx);
        assert!(queue.is_some_and(|q| q < queue_count(topic)) || queue.is_none(), "{}: bad queue accepted", self.ctx);
        let key = (name.to_string(), r.queue_id);
        assert_eq!(r.queue_offset, self.model.end(&key), "{}: queue offset of a send", self.ctx);
        let msg = self.msg_from(&r, body, meta, None);
        self.model.push(key, msg);
    }

    fn batch(&mut self, topic: usize, bodies: &[Body], meta: &Meta) {
        let name = topic_name(topic);
        let msgs = bodies.iter().map(|b| message(name, b, meta)).collect();
        let rs = self.store.send_batch(msgs).unwrap_or_else(|e| panic!("{}: batch failed: {e}", self.ctx));
        assert_eq!(rs.len(), bodies.len(), "{}: batch results", self.ctx);
        for (r, b) in rs.iter().zip(bodies) {
            let key = (name.to_string(), r.queue_id);
            assert_eq!(r.queue_id, rs[0].queue_id, "{}: a batch goes to one queue", self.ctx);
            assert_eq!(r.queue_offset, self.model.end(&key), "{}: queue offset in a batch", self.ctx);
            let msg = self.msg_from(r, b, meta, None);
            self.model.push(key, msg);
        }
    }

    fn offset_key(&self, group: usize, topic: usize, queue: u32) -> (OffsetKey, u64) {
        let q = queue % queue_count(topic);
        let key = (GROUPS[group].to_string(), topic_name(topic).to_string(), q);
        let end = self.model.end(&(key.1.clone(), q));
        (key, end)
    }

    fn pull(&self, topic: usize, queue: u32, at: Pos, max: usize, tag: Option<usize>) {
        let name = topic_name(topic);
        // Tag filters only on user topics (schedule units hash due times).
        let tag = tag.filter(|_| topic < TOPICS.len()).map(|t| TAGS[t]);
        let filter = tag.map_or(TagFilter::All, |t| TagFilter::Tags(vec![t.to_string()]));
        if queue >= queue_count(topic) {
            let r = self.store.pull(name, queue, 0, 1, &filter);
            assert!(matches!(r, Err(Error::InvalidArgument(_))), "{}: pull of a missing queue: {r:?}", self.ctx);
            return;
        }
        let key = (name.to_string(), queue);
        let offset = at.resolve(self.model.end(&key));
        let r = self.store.pull(name, queue, offset, max, &filter).unwrap();
        let want = self.model.pull(&key, offset, max, tag);
        let got: Vec<u64> = r.messages.iter().map(|m| m.queue_offset().get()).collect();
        let ctx = format!("{}: pull {name}/{queue} at {offset} max {max} tag {tag:?}", self.ctx);
        assert_eq!((r.status, got, r.next_offset), (want.status, want.offsets.clone(), want.next_offset), "{ctx}");
        assert_eq!((r.min_offset, r.max_offset), (0, self.model.end(&key)), "{ctx}: range");
        for m in &r.messages {
            let at = m.queue_offset().get();
            self.model.queue(&key)[at as usize].check(m, at, &ctx);
        }
    }

    fn seek(&self, topic: usize, queue: u32, when: When) {
        let key = (topic_name(topic).to_string(), queue % queue_count(topic));
        let msgs = self.model.queue(&key);
        let ts_of = |i: usize| msgs.get(i % msgs.len().max(1)).map_or(START_MS, |m| m.store_ts);
        let ts = match when {
            When::Zero => 0,
            When::At(i) => ts_of(i),
            When::After(i) => ts_of(i) + 1,
            When::Max => u64::MAX,
        };
        let got = self.store.offset_for_timestamp(&key.0, key.1, ts).unwrap();
        assert_eq!(got, self.model.offset_for_timestamp(&key, ts), "{}: seek {key:?} to {ts}", self.ctx);
    }

    fn query_id(&self, pick: usize, store_level: bool) {
        let all: Vec<_> = self.model.all().collect();
        let Some(&(key, at, m)) = all.get(pick % all.len().max(1)) else { return };
        let ctx = format!("{}: lookup of {key:?} at {at}", self.ctx);
        if store_level {
            let got = self.store.message_by_id(&m.offset_msg_id).unwrap();
            let got = got.unwrap_or_else(|| panic!("{ctx}: offset id not found"));
            assert_eq!(got.physical_offset().get(), m.physical, "{ctx}");
            m.check(&got, at, &ctx);
        } else {
            let got = self.store.message_by_id(&m.msg_id).unwrap();
            // Messages waiting in the schedule topic are indexed once delivered.
            if m.real.is_some() {
                assert!(got.is_none(), "{ctx}: a waiting message found by its unique id");
            } else {
                let got = got.unwrap_or_else(|| panic!("{ctx}: unique id not found"));
                m.check(&got, at, &ctx);
            }
        }
    }

    /// Power loss: recover from a crash image and adopt what survived.
    fn crash(&mut self, seed: u64) {
        let snap = self.sim.crash_now(seed);
        self.sim = snap.restore();
        let old =
            std::mem::replace(&mut self.store, Store::open(DIR, opts(&self.sim, &self.clock, self.mode)).unwrap());
        drop(old);
        for key in all_queues() {
            let end = self.store.max_offset(&key.0, key.1).unwrap();
            let sent = self.model.end(&key);
            let flushed = self.model.flushed.get(&key).copied().unwrap_or(0) as u64;
            match self.mode {
                FlushMode::Sync => assert_eq!(end, sent, "{}: {key:?} lost acknowledged sends", self.ctx),
                _ => assert!(
                    (flushed..=sent).contains(&end),
                    "{}: {key:?} recovered {end}, flushed {flushed}, sent {sent}",
                    self.ctx
                ),
            }
            if let Some(q) = self.model.queues.get_mut(&key) {
                q.truncate(end as usize);
            }
        }
        self.model.all_flushed();
        for key in offset_keys() {
            let got = self.store.committed_offset(&key.0, &key.1, key.2);
            let end = self.model.end(&(key.1.clone(), key.2));
            let possible: Vec<Option<u64>> =
                self.model.possible_offsets(&key).into_iter().map(|v| v.map(|v| v.min(end))).collect();
            assert!(
                possible.contains(&got),
                "{}: offset {key:?} is {got:?} after a crash, not one of {possible:?}",
                self.ctx
            );
            match got {
                Some(v) => self.model.offsets.insert(key, v),
                None => self.model.offsets.remove(&key),
            };
        }
        self.model.offsets_durable();
        self.check_contents();
    }

    /// Waits until dispatch has caught up with the model (never past it).
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut behind = None;
            for key in all_queues() {
                let (have, want) = (self.store.max_offset(&key.0, key.1).unwrap(), self.model.end(&key));
                assert!(have <= want, "{}: {key:?} holds {have} messages, the model {want}", self.ctx);
                if have < want {
                    behind = Some((key, have, want));
                }
            }
            let Some(behind) = behind else { return };
            assert!(Instant::now() < deadline, "{}: dispatch stuck at {behind:?}", self.ctx);
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Queue ranges and committed offsets equal the model's.
    fn check_state(&self) {
        self.settle();
        for key in all_queues() {
            let range = (self.store.min_offset(&key.0, key.1).unwrap(), self.store.max_offset(&key.0, key.1).unwrap());
            assert_eq!(range, (0, self.model.end(&key)), "{}: range of {key:?}", self.ctx);
        }
        for key in offset_keys() {
            let got = self.store.committed_offset(&key.0, &key.1, key.2);
            assert_eq!(got, self.model.offsets.get(&key).copied(), "{}: committed offset {key:?}", self.ctx);
        }
    }

    /// Every queue read in full equals the model.
    fn check_contents(&self) {
        self.settle();
        for key in all_queues() {
            let want = self.model.queue(&key);
            let mut got = Vec::new();
            loop {
                let r = self.store.pull(&key.0, key.1, got.len() as u64, 64, &TagFilter::All).unwrap();
                if r.status != PullStatus::Found {
                    break;
                }
                got.extend(r.messages);
            }
            assert_eq!(got.len(), want.len(), "{}: {key:?} read back", self.ctx);
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                w.check(g, i as u64, &format!("{}: {key:?} read back", self.ctx));
            }
        }
    }

    /// The clock passes every delay: each waiting message reaches its
    /// queue exactly once, after everything the model holds there.
    fn drain(&mut self) {
        let waiting: Vec<Msg> =
            self.model.all().filter(|(_, _, m)| m.real.is_some()).map(|(_, _, m)| m.clone()).collect();
        if waiting.is_empty() {
            return;
        }
        self.clock.advance_ms(4 * 3600 * 1000);
        let deadline = Instant::now() + Duration::from_secs(20);
        for key in all_queues().into_iter().filter(|(t, _)| t != SCHEDULE_TOPIC) {
            let mut want: Vec<&Msg> = waiting.iter().filter(|m| m.real.as_ref() == Some(&key)).collect();
            let from = self.model.end(&key);
            while self.store.max_offset(&key.0, key.1).unwrap() < from + want.len() as u64 {
                assert!(Instant::now() < deadline, "{}: delayed messages not delivered to {key:?}", self.ctx);
                std::thread::sleep(Duration::from_millis(1));
            }
            let r = self.store.pull(&key.0, key.1, from, 1000, &TagFilter::All).unwrap();
            assert_eq!(r.messages.len(), want.len(), "{}: deliveries to {key:?}", self.ctx);
            for g in &r.messages {
                let i = want.iter().position(|w| w.body == g.body().as_ref() && w.msg_id == g.msg_id().unwrap_or(""));
                let i = i.unwrap_or_else(|| panic!("{}: {key:?} got a message never sent there", self.ctx));
                assert_eq!(g.tags(), want[i].tag.as_deref(), "{}: delivered tag", self.ctx);
                want.remove(i);
            }
        }
    }
}

fn run(mode: FlushMode, ops: &[Op]) {
    let mut run = Run::new(mode);
    for (i, op) in ops.iter().enumerate() {
        run.ctx = format!("{mode:?} op {i} {op:?}");
        run.apply(op);
        run.check_state();
    }
    run.ctx = format!("{mode:?} final check");
    run.check_contents();
    run.drain();
    run.store.close().unwrap();
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sync_flush_matches_the_model(ops in proptest::collection::vec(op(), 1..=MAX_OPS)) {
        run(FlushMode::Sync, &ops);
    }

    #[test]
    fn async_flush_matches_the_model(ops in proptest::collection::vec(op(), 1..=MAX_OPS)) {
        run(FlushMode::Async, &ops);
    }
}
