//! Entry point "open a random directory image": a small real store,
//! changed by a fuzz-chosen list of file mutations, then read offline,
//! opened and read in full.
//!
//! Each base image is built once per process, in memory, with a manual
//! clock: two generations of the same store (closed after 24 messages,
//! then reopened, given 24 more and closed), so "an older copy put back"
//! is one of the mutations. [`BaseImage::Retained`] reopens that store
//! once more with the clock 2 s on, runs a forced retention round that
//! removes the older segments (the consume queues then begin with units
//! whose records are gone, and a group's committed offset lies below
//! them), sends 12 more messages and closes; its older copies are the
//! files from before retention. The layout is fixed by the code below
//! (the same files at the same offsets every run; only the random part of
//! the message ids differs), so a corpus input means the same damage on
//! every replay.

use super::{put_file, root};
use crate::commitlog::{CommitLogOptions, COMMITLOG_DIR};
use crate::error::{Error, Result};
use crate::index::IndexFileSize;
use crate::message::Message;
use crate::offset::QueueOffset;
use crate::storage::{read_full_at, OpenMode, SimStorage, Storage};
use crate::store::{Retention, RetentionOptions, Store, StoreOptions, StoreView, TagFilter};
use crate::topic::TopicConfig;
use crate::ManualClock;
use arbitrary::{Arbitrary, Unstructured};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Most mutations applied from one input.
const MAX_MUTATIONS: usize = 16;
/// Most bytes one mutation writes or appends.
const MAX_WRITE: usize = 4096;
/// Topics of the base store: (name, queues).
const TOPICS: [(&str, u32); 2] = [("orders", 2), ("events", 1)];
/// Messages per generation.
const PER_GENERATION: usize = 24;
/// Consumer group with committed offsets in the base store.
const GROUP: &str = "fuzz-group";
/// Messages sent after retention in [`BaseImage::Retained`].
const AFTER_RETENTION: usize = 12;
/// The manual clock of the two generations.
const T0: u64 = 1_700_000_000_000;
/// The clock of the retained image: past the retention's reserved time
/// (1 s), short of every delayed message's due time (level 3, 10 s), so
/// nothing is delivered during a run.
const T_RETAINED: u64 = T0 + 2_000;

/// Which base image a plan damages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseImage {
    /// Two generations of a store; the older copies are the first's.
    TwoGenerations,
    /// The two generations after a forced retention round and 12 more
    /// messages; the older copies are the files from before retention.
    Retained,
}

/// One change to the base image. File numbers index the sorted list of
/// the image's files, modulo its length; positions are taken modulo the
/// file's length (plus one where the end itself is meaningful).
#[derive(Debug, Clone, Arbitrary)]
pub enum Mutation {
    /// Flip one bit.
    FlipBit {
        /// File number.
        file: u16,
        /// Bit position.
        bit: u32,
    },
    /// Overwrite bytes (at most 4 KiB) at a position, growing the file if
    /// they run past its end.
    Overwrite {
        /// File number.
        file: u16,
        /// Byte position.
        at: u32,
        /// New bytes.
        bytes: Vec<u8>,
    },
    /// Set a run of bytes to one value (zero: a zeroed page).
    Fill {
        /// File number.
        file: u16,
        /// Byte position.
        at: u32,
        /// Run length.
        len: u16,
        /// Byte value.
        byte: u8,
    },
    /// Cut the file to a length.
    Truncate {
        /// File number.
        file: u16,
        /// New length.
        len: u32,
    },
    /// Append bytes (at most 4 KiB).
    Append {
        /// File number.
        file: u16,
        /// Appended bytes.
        bytes: Vec<u8>,
    },
    /// Delete the file.
    Delete {
        /// File number.
        file: u16,
    },
    /// Put the first generation's copy back (delete it if it had none).
    Older {
        /// File number.
        file: u16,
    },
    /// Replace a file's contents with another file's.
    CopyFrom {
        /// Source file number.
        from: u16,
        /// Target file number.
        to: u16,
    },
    /// Add a file beside an existing one.
    Stray {
        /// File number whose directory receives the new file.
        beside: u16,
        /// Name (ignored unless a plain file name).
        name: String,
        /// Contents (at most 4 KiB).
        bytes: Vec<u8>,
    },
}

/// A damage plan: the mutations, applied in order.
#[derive(Debug, Clone, Arbitrary)]
pub struct Plan {
    /// Start from the first generation instead of the second.
    pub first_generation: bool,
    /// Mutations (the first 16 are used).
    pub mutations: Vec<Mutation>,
}

/// What [`store_image`] found after a successful open.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImageReport {
    /// Messages read through the consume queues.
    pub pulled: u64,
    /// Records read by iterating the commit log.
    pub records: u64,
    /// Reads that failed with a typed error (damage recovery could not
    /// see, such as a flipped bit below the checkpoint).
    pub read_errors: u64,
    /// Messages of the base image missing although only derived files were
    /// damaged (counted only then): they must be rebuilt with zero loss.
    pub lost: u64,
    /// Base messages not read although only derived files were damaged,
    /// whose own unit reads as removed by retention with every unit before
    /// it in its queue: a damaged unit at the head of a trimmed queue
    /// looks exactly like retention (units carry no checksum), so this is
    /// the format's limit, not a loss. Anywhere else such a unit is
    /// detected (units' physical offsets increase) and repaired.
    pub hidden: u64,
    /// Served data that contradicts the request or the base image (a
    /// message at the wrong queue position, a body that was never sent).
    /// Must be empty.
    pub violations: Vec<String>,
}

/// One generation of the base store: every file, by path.
type Files = BTreeMap<PathBuf, Vec<u8>>;

#[derive(Debug)]
struct Base {
    /// The older copies ([`Plan::first_generation`] starts from them).
    first: Files,
    second: Files,
    /// Per (topic, queue id, queue offset): the body sent there and still
    /// stored. Also the oracle for the older copies: the clock never
    /// moves, so no delayed message is due and nothing else may take these
    /// positions (a damaged schedule unit that delivered early would).
    sent: BTreeMap<(String, u32, u64), Vec<u8>>,
    /// Keys sent (one per message) and the unique ids of a few messages.
    keys: Vec<(String, String)>,
    ids: Vec<String>,
}

/// Paths and lengths of the files of the two-generation base image (the
/// file numbers of [`Mutation`] index this list).
pub fn base_files() -> Result<Vec<(PathBuf, usize)>> {
    base_files_of(BaseImage::TwoGenerations)
}

/// Paths and lengths of the files of a base image.
pub fn base_files_of(kind: BaseImage) -> Result<Vec<(PathBuf, usize)>> {
    Ok(base(kind)?.second.iter().map(|(p, b)| (p.clone(), b.len())).collect())
}

/// Decodes a [`Plan`] from `data` and runs [`run_plan`].
pub fn store_image(data: &[u8]) -> Result<ImageReport> {
    store_image_of(BaseImage::TwoGenerations, data)
}

/// Decodes a [`Plan`] from `data` and runs it on base image `kind`.
pub fn store_image_of(kind: BaseImage, data: &[u8]) -> Result<ImageReport> {
    let plan = Plan::arbitrary_take_rest(Unstructured::new(data))
        .map_err(|e| Error::InvalidArgument(format!("not a plan: {e}")))?;
    run_plan_on(kind, &plan)
}

/// [`run_plan_on`] the two-generation base image.
pub fn run_plan(plan: &Plan) -> Result<ImageReport> {
    run_plan_on(BaseImage::TwoGenerations, plan)
}

/// Builds the damaged image `plan` describes, reads it with [`StoreView`]
/// and offline verification (both may fail, never panic), then opens it
/// with [`Store::open`]: `Err` is the open's typed refusal; after a
/// successful open every queue is pulled from its minimum to its maximum,
/// the commit log is iterated, keys and ids are queried and a message is
/// sent, and the report says what was found.
pub fn run_plan_on(kind: BaseImage, plan: &Plan) -> Result<ImageReport> {
    let base = base(kind)?;
    let (files, primary_touched) = apply(base, plan);
    let sim = Arc::new(SimStorage::new());
    for (path, bytes) in &files {
        put_file(sim.as_ref(), path, bytes)?;
    }
    read_offline(&sim, base);
    let store = Store::open(root(), options(sim, kind))?;
    let mut report = ImageReport::default();
    read_all(&store, base, &mut report);
    if !primary_touched {
        (report.lost, report.hidden) = count_lost(&store, base);
    }
    let _ = store.send(Message::new("orders", "after").with_keys(["after"]));
    let _ = store.close();
    Ok(report)
}

fn options(sim: Arc<SimStorage>, kind: BaseImage) -> StoreOptions {
    let now = match kind {
        BaseImage::TwoGenerations => T0,
        BaseImage::Retained => T_RETAINED,
    };
    let log = CommitLogOptions::default()
        .segment_size(8 << 10)
        .max_record_size(2 << 10)
        .storage(sim)
        .clock(Arc::new(ManualClock::new(now)));
    let opts = StoreOptions::default()
        .commit_log_options(log)
        .max_body_size(1 << 10)
        .max_properties_size(512)
        .consume_queue_units_per_file(4)
        .index_file_size(IndexFileSize { slots: 16, max_entries: 16 });
    match kind {
        BaseImage::TwoGenerations => opts,
        // Retention runs only when the build asks for it: a periodic round
        // during a run would remove more and make the oracle racy.
        BaseImage::Retained => opts.retention(
            RetentionOptions::default().reserved_time(Duration::from_secs(1)).interval(Duration::from_secs(3600)),
        ),
    }
}

/// A base image, built on first use.
fn base(kind: BaseImage) -> Result<&'static Base> {
    type Built = OnceLock<std::result::Result<Base, String>>;
    static TWO: Built = OnceLock::new();
    static RETAINED: Built = OnceLock::new();
    let cell = match kind {
        BaseImage::TwoGenerations => &TWO,
        BaseImage::Retained => &RETAINED,
    };
    cell.get_or_init(|| build_base(kind).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::InvalidArgument(format!("building the base image failed: {e}")))
}

/// What the build sent: the base's oracle, with where each record went.
#[derive(Default)]
struct Sent {
    sent: BTreeMap<(String, u32, u64), Vec<u8>>,
    /// The commit-log offset of each entry of `sent`.
    physical: BTreeMap<(String, u32, u64), u64>,
    keys: Vec<(String, String)>,
    ids: Vec<String>,
}

impl Sent {
    /// Sends messages `from..to` (message `n` has key `key-n` and a body
    /// of its own; one in 11 is delayed and not expected in its topic).
    fn send(&mut self, store: &Store, from: usize, to: usize) -> Result<()> {
        for n in from..to {
            let (topic, queues) = TOPICS[n % TOPICS.len()];
            let key = format!("key-{n}");
            let body = format!("body {n} {}", "x".repeat(n * 7 % 300));
            let msg = Message::new(topic, body.clone().into_bytes()).with_tags(["TagA", "TagB"][n % 2]);
            let msg = msg.with_keys([key.clone()]);
            let delayed = n % 11 == 5;
            let msg = if delayed { msg.with_delay_level(3) } else { msg };
            let r = store.send(msg)?;
            if !delayed {
                debug_assert!(r.queue_id < queues);
                let at = (topic.to_string(), r.queue_id, r.queue_offset);
                self.physical.insert(at.clone(), r.physical_offset.get());
                self.sent.insert(at, body.into_bytes());
                self.keys.push((topic.to_string(), key));
            }
            if n.is_multiple_of(8) {
                self.ids.push(r.msg_id.into());
                self.ids.push(r.offset_msg_id.into());
            }
        }
        Ok(())
    }
}

fn build_base(kind: BaseImage) -> Result<Base> {
    let sim = Arc::new(SimStorage::new());
    let mut sent = Sent::default();
    let mut first = Files::new();
    for generation in 0..2 {
        let store = Store::open(root(), options(sim.clone(), BaseImage::TwoGenerations))?;
        for (name, queues) in TOPICS {
            store.create_topic(TopicConfig::new(name, queues))?;
        }
        sent.send(&store, generation * PER_GENERATION, (generation + 1) * PER_GENERATION)?;
        store.commit_offset(GROUP, "orders", 0, 2 + generation as u64)?;
        store.persist_offsets()?;
        store.close()?;
        if generation == 0 || kind == BaseImage::Retained {
            first = snapshot(sim.as_ref())?;
        }
    }
    if kind == BaseImage::Retained {
        let store = Store::open(root(), options(sim.clone(), kind))?;
        // Forced: the group's offset and the delayed messages hold the
        // older segments.
        let report = store.run_retention(Retention::Forced)?;
        let Some(floor) = report.removed.iter().map(|s| s.end).max() else {
            return Err(Error::InvalidArgument("retention removed nothing from the base image".into()));
        };
        // What retention removed is no longer expected anywhere.
        let gone: Vec<_> = sent.physical.iter().filter(|(_, &p)| p < floor).map(|(at, _)| at.clone()).collect();
        for at in gone {
            sent.sent.remove(&at);
        }
        let from = 2 * PER_GENERATION;
        sent.send(&store, from, from + AFTER_RETENTION)?;
        store.close()?;
    }
    let Sent { sent, keys, ids, .. } = sent;
    Ok(Base { first, second: snapshot(sim.as_ref())?, sent, keys, ids })
}

/// Every file under the root, by path.
fn snapshot(storage: &dyn Storage) -> Result<Files> {
    let mut files = Files::new();
    let mut dirs = vec![root()];
    while let Some(dir) = dirs.pop() {
        let names = storage.list_dir(&dir).map_err(|e| Error::io("list directory", &dir, e))?;
        for name in names {
            let path = dir.join(name);
            if storage.list_dir(&path).is_ok() {
                dirs.push(path);
                continue;
            }
            let file = storage.open(&path, OpenMode::Read).map_err(|e| Error::io("open", &path, e))?;
            let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
            let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
            read_full_at(file.as_ref(), &mut bytes, 0).map_err(|e| Error::io("read", &path, e))?;
            files.insert(path, bytes);
        }
    }
    Ok(files)
}

/// The mutated file set, and whether any primary file changed.
fn apply(base: &Base, plan: &Plan) -> (Files, bool) {
    let start = if plan.first_generation { &base.first } else { &base.second };
    let mut files = start.clone();
    let paths: Vec<PathBuf> = start.keys().cloned().collect();
    let pick = |n: u16| paths.get(usize::from(n) % paths.len().max(1)).cloned();
    let mut touched = Vec::new();
    for m in plan.mutations.iter().take(MAX_MUTATIONS) {
        if let Some(path) = mutate(&mut files, base, m, &pick) {
            touched.push(path);
        }
    }
    // The older copies lack the newer messages: count no losses.
    let primary_touched = plan.first_generation || touched.iter().any(|p| is_primary(p));
    (files, primary_touched)
}

/// Whether `path` holds primary data, whose damage may lose messages (the
/// commit log) or refuse them (topics, offsets, layout, and the checkpoint,
/// as `tests/store_garbage.rs` classifies them). Everything else (consume
/// queues, index, dispatch checkpoint, delay progress, live consumers) is
/// derived from the log and must be rebuilt with nothing lost.
fn is_primary(path: &Path) -> bool {
    let root = root();
    path.starts_with(root.join(COMMITLOG_DIR))
        || ["checkpoint", "config/topics", "config/consumer_offsets", "config/store"]
            .iter()
            .any(|p| path == root.join(p))
}

/// Applies one mutation; returns the path it changed.
fn mutate(files: &mut Files, base: &Base, m: &Mutation, pick: &dyn Fn(u16) -> Option<PathBuf>) -> Option<PathBuf> {
    let modulo = |v: u32, len: usize| (v as usize).checked_rem(len).unwrap_or(0);
    match m {
        Mutation::FlipBit { file, bit } => {
            let path = pick(*file)?;
            let b = files.get_mut(&path)?;
            let at = modulo(*bit, b.len() * 8);
            if let Some(byte) = b.get_mut(at / 8) {
                *byte ^= 1 << (at % 8);
            }
            Some(path)
        }
        Mutation::Overwrite { file, at, bytes } => {
            let path = pick(*file)?;
            let b = files.get_mut(&path)?;
            let at = modulo(*at, b.len() + 1);
            let bytes = &bytes[..bytes.len().min(MAX_WRITE)];
            if b.len() < at + bytes.len() {
                b.resize(at + bytes.len(), 0);
            }
            b[at..at + bytes.len()].copy_from_slice(bytes);
            Some(path)
        }
        Mutation::Fill { file, at, len, byte } => {
            let path = pick(*file)?;
            let b = files.get_mut(&path)?;
            let at = modulo(*at, b.len() + 1);
            let end = (at + usize::from(*len)).min(b.len());
            b[at..end].fill(*byte);
            Some(path)
        }
        Mutation::Truncate { file, len } => {
            let path = pick(*file)?;
            let b = files.get_mut(&path)?;
            b.truncate(modulo(*len, b.len() + 1));
            Some(path)
        }
        Mutation::Append { file, bytes } => {
            let path = pick(*file)?;
            files.get_mut(&path)?.extend_from_slice(&bytes[..bytes.len().min(MAX_WRITE)]);
            Some(path)
        }
        Mutation::Delete { file } => {
            let path = pick(*file)?;
            files.remove(&path);
            Some(path)
        }
        Mutation::Older { file } => {
            let path = pick(*file)?;
            match base.first.get(&path) {
                Some(old) => files.insert(path.clone(), old.clone()),
                None => files.remove(&path),
            };
            Some(path)
        }
        Mutation::CopyFrom { from, to } => {
            let (from, to) = (pick(*from)?, pick(*to)?);
            let bytes = files.get(&from)?.clone();
            files.insert(to.clone(), bytes);
            Some(to)
        }
        Mutation::Stray { beside, name, bytes } => {
            let dir = pick(*beside)?.parent()?.to_path_buf();
            let plain = !name.is_empty() && Path::new(name).file_name() == Some(std::ffi::OsStr::new(name));
            if !plain {
                return None;
            }
            let path = dir.join(name);
            files.insert(path.clone(), bytes[..bytes.len().min(MAX_WRITE)].to_vec());
            Some(path)
        }
    }
}

/// Everything a read-only tool reads, on the damaged image before any
/// repair. Errors are fine; panics are not.
fn read_offline(sim: &Arc<SimStorage>, base: &Base) {
    let _ = crate::commitlog::CommitLog::verify(root(), sim.as_ref());
    let Ok(view) = StoreView::open_with(root(), sim.clone()) else { return };
    let _ = (view.topics(), view.offsets(), view.consumers(), view.delayed(), view.queue_ranges());
    let _ = (view.commit_log_bytes(), view.segment_count(), view.dead_letters(GROUP));
    for (topic, queues) in TOPICS {
        let _ = view.messages(topic, None, 0, 0, |_| Ok(true));
        for q in 0..queues {
            let _ = view.offset_for_timestamp(topic, q, 1_700_000_000_000);
        }
    }
    for (topic, key) in base.keys.iter().step_by(5) {
        let _ = view.query_by_key(topic, key, 0, u64::MAX, 8);
    }
    for id in &base.ids {
        let _ = view.message_by_id(id);
    }
}

/// Pulls every queue the open store has, iterates the log and runs the
/// queries, recording what it finds in `report`.
fn read_all(store: &Store, base: &Base, report: &mut ImageReport) {
    for topic in store.inner.queues.topics() {
        for (queue_id, q) in store.inner.queues.queues_of(&topic) {
            let (mut at, max) = (q.min_offset().0, q.max_offset().0);
            while at < max {
                let r = match store.pull(&topic, queue_id, at, 32, &TagFilter::All) {
                    Ok(r) => r,
                    Err(_) => {
                        report.read_errors += 1;
                        at += 1;
                        continue;
                    }
                };
                for m in &r.messages {
                    let off = m.queue_offset().0;
                    if m.queue_id() != queue_id || off < at || off >= r.next_offset {
                        report.violations.push(format!("{topic}/{queue_id}: asked from {at}, got {off}"));
                    }
                    let expected = base.sent.get(&(topic.clone(), queue_id, off));
                    if expected.is_some_and(|b| b[..] != m.body()[..]) {
                        report.violations.push(format!("{topic}/{queue_id}@{off}: another body"));
                    }
                    report.pulled += 1;
                }
                if r.next_offset <= at {
                    break;
                }
                at = r.next_offset;
            }
        }
    }
    let log = store.commit_log();
    for rec in log.iter(log.min_offset()) {
        match rec.and_then(|r| crate::message::MessageExt::from_record(&r)) {
            Ok(_) => report.records += 1,
            Err(_) => report.read_errors += 1,
        }
    }
    for (topic, key) in base.keys.iter().step_by(3) {
        if let Ok(found) = store.query_by_key(topic, key, 0, u64::MAX, 8) {
            if found.iter().any(|m| m.topic() != topic || !m.keys().any(|k| k == key)) {
                report.violations.push(format!("query {topic}#{key} returned another key"));
            }
        }
    }
    for id in &base.ids {
        if let Ok(Some(m)) = store.message_by_id(id) {
            if m.msg_id() != Some(id.as_str()) && !m.offset_msg_id().eq_ignore_ascii_case(id) {
                report.violations.push(format!("message_by_id {id} returned another message"));
            }
        }
    }
    let _ = store.committed_offset(GROUP, "orders", 0);
}

/// Base messages no longer readable at their position, or missed by a
/// consumer that starts at offset 0 and follows each pull's next offset
/// (moving past units whose records retention removed): `(lost, hidden)`,
/// see [`ImageReport::hidden`].
fn count_lost(store: &Store, base: &Base) -> (u64, u64) {
    let mut queues: BTreeMap<(&str, u32), BTreeMap<u64, Vec<u8>>> = BTreeMap::new();
    for (topic, queue_id) in base.sent.keys().map(|(t, q, _)| (t.as_str(), *q)) {
        queues.entry((topic, queue_id)).or_insert_with(|| consume_all(store, topic, queue_id));
    }
    let (mut lost, mut hidden) = (0, 0);
    for ((topic, queue_id, off), body) in &base.sent {
        let got = store.pull(topic, *queue_id, *off, 1, &TagFilter::All);
        let ok = got
            .is_ok_and(|r| r.messages.first().is_some_and(|m| m.queue_offset().0 == *off && m.body()[..] == body[..]));
        let consumed = queues.get(&(topic.as_str(), *queue_id)).and_then(|q| q.get(off));
        if ok && consumed == Some(body) {
            continue;
        }
        if in_removed_head(store, topic, *queue_id, *off) {
            hidden += 1;
        } else {
            lost += 1;
        }
    }
    (lost, hidden)
}

/// Whether the unit at `off`, and every unit before it in the queue, read
/// as leading to records retention removed, by the store's own rule
/// ([`could_be_removed`](crate::consumequeue::could_be_removed): a unit no
/// removed record could have is damage the store must repair).
fn in_removed_head(store: &Store, topic: &str, queue_id: u32, off: u64) -> bool {
    let floor = store.inner.log.removed_below().get();
    // A queue starting past `off` has lost it, whatever its units say.
    store.inner.queues.queue(topic, queue_id).is_some_and(|q| {
        q.min_offset().0 <= off
            && (q.min_offset().0..=off)
                .all(|i| q.get(QueueOffset(i)).is_some_and(|u| crate::consumequeue::could_be_removed(&u, floor)))
    })
}

/// Every message a consumer of one queue gets, by queue offset, starting
/// at 0 and following each pull's next offset to the queue's end.
fn consume_all(store: &Store, topic: &str, queue_id: u32) -> BTreeMap<u64, Vec<u8>> {
    let mut got = BTreeMap::new();
    let mut at = 0;
    // Each pull moves forward or ends the walk (at the end a pull answers
    // `NoNewMessage` at the same offset), so this is bounded by the
    // queue's length.
    while let Ok(r) = store.pull(topic, queue_id, at, 32, &TagFilter::All) {
        for m in &r.messages {
            got.insert(m.queue_offset().0, m.body().to_vec());
        }
        if r.next_offset <= at {
            break;
        }
        at = r.next_offset;
    }
    got
}
