//! The membership file `config/consumers`: who is in which consumer group
//! of a live store, and which queues each member holds (FORMAT.md 11.8).
//!
//! Membership is in-process, so another process (the CLI, a monitoring
//! tool) can only learn it from this file. The store rewrites it
//! atomically after every rebalance of any group and whenever a member
//! leaves, removes it at close, and removes a leftover at open (a file left
//! by a crash describes consumers that are gone). It is derived and
//! advisory: nothing in the store ever reads it, a failed write is ignored
//! (the file is then removed, best effort, rather than left describing an
//! older assignment), and a reader must expect it to be missing, replaced
//! or stale at any time. Read it with
//! [`StoreView::consumers`](crate::store::StoreView::consumers).
//!
//! Payload (version 1, big-endian): `pid u32`, `written at u64` (the store
//! clock, ms), `group count u32`, then per group in ascending name order:
//! `name str16`, `model u8` (1 clustering, 2 broadcasting), `member count
//! u32`, then per member in ascending id order: `id str16`, `queue count
//! u32`, then per queue in ascending (topic, id) order: `topic str16`,
//! `queue id u32`.

use super::push::Member;
use super::MessageModel;
use crate::clock::Clock;
use crate::error::{CorruptionKind, Error, Result};
use crate::metafile::{self, PayloadReader};
use crate::storage::Storage;
use crate::store::MessageQueue;
use crate::topic::{validate_group_name, validate_topic_name};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name under `config/`.
const FILE: &str = "consumers";
const MAGIC: [u8; 8] = *b"\x8DMQC\r\n\x1A\n";
const VERSION: u16 = 1;
/// Largest payload written or read.
const MAX_PAYLOAD: u32 = 16 << 20;
/// Smallest encoded group: a 1-byte name, the model, the member count.
const MIN_GROUP_LEN: u64 = 2 + 1 + 1 + 4;
/// Smallest encoded member: a 1-byte id and the queue count.
const MIN_MEMBER_LEN: u64 = 2 + 1 + 4;
/// Smallest encoded queue: a 1-byte topic and the queue id.
const MIN_QUEUE_LEN: u64 = 2 + 1 + 4;

const MODEL_CLUSTERING: u8 = 1;
const MODEL_BROADCASTING: u8 = 2;

/// The consumer groups of a live store as its membership file
/// (`config/consumers`) last described them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveConsumers {
    /// Process id of the process that wrote the file (the one holding the
    /// store open).
    pub pid: u32,
    /// When it was written, by the store's clock (ms since the epoch).
    pub written_at_ms: u64,
    /// Whether the writer looks alive. On Linux: `/proc/<pid>` exists (a
    /// reused pid makes a dead writer look alive; a store in another pid
    /// namespace looks dead). Without a readable `/proc`, and on other
    /// systems, the answer is always `true`: the check cannot tell. `false`
    /// means the file is stale (its writer crashed), so its groups describe
    /// nobody.
    pub writer_alive: bool,
    /// Every group with at least one running member, by name.
    pub groups: Vec<LiveGroup>,
}

impl LiveConsumers {
    /// The group named `name`, if it has running members.
    #[must_use]
    pub fn group(&self, name: &str) -> Option<&LiveGroup> {
        self.groups.iter().find(|g| g.group == name)
    }
}

/// One consumer group of a live store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveGroup {
    /// Group name.
    pub group: String,
    /// Clustering or broadcasting.
    pub model: MessageModel,
    /// Running members, by id (instance name); members shutting down are
    /// not listed.
    pub members: Vec<LiveMember>,
}

impl LiveGroup {
    /// Ids of the members holding queue `queue_id` of `topic`: at most one
    /// for a clustering group, every member for a broadcasting one.
    #[must_use]
    pub fn owners(&self, topic: &str, queue_id: u32) -> Vec<&str> {
        self.members
            .iter()
            .filter(|m| m.queues.iter().any(|q| q.topic == topic && q.queue_id == queue_id))
            .map(|m| m.id.as_str())
            .collect()
    }
}

/// One running member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMember {
    /// The member's instance name.
    pub id: String,
    /// The queues it holds, by topic and queue id. Empty for an idle member
    /// (for example a clustering group with more members than read queues).
    pub queues: Vec<MessageQueue>,
}

impl LiveMember {
    /// Holds no queue.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.queues.is_empty()
    }
}

/// Where a store publishes its membership: set at open, cleared at close.
#[derive(Default)]
pub(crate) struct Publisher {
    target: Mutex<Option<Target>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("attached", &self.target.lock().is_some()).finish()
    }
}

#[derive(Clone)]
struct Target {
    storage: Arc<dyn Storage>,
    /// The store's `config/` directory.
    dir: PathBuf,
    clock: Arc<dyn Clock>,
}

impl Target {
    fn remove(&self) {
        // Best effort: the file is advisory, and a reader checks the
        // writer's pid anyway.
        let _ = self.storage.remove_file(&self.dir.join(FILE));
    }
}

impl Publisher {
    /// The store in `root` was opened: removes a file left by a previous
    /// run (it is stale: its writer no longer holds the store) and
    /// publishes there from now on.
    pub(crate) fn attach(&self, storage: Arc<dyn Storage>, root: &Path, clock: Arc<dyn Clock>) {
        let target = Target { storage, dir: root.join(metafile::CONFIG_DIR), clock };
        target.remove();
        *self.target.lock() = Some(target);
    }

    /// The store is closing: removes the file and publishes nothing more
    /// (members still shutting down after the close do not recreate it).
    /// The caller serializes this with [`Publisher::publish`].
    pub(crate) fn detach(&self) {
        if let Some(t) = self.target.lock().take() {
            t.remove();
        }
    }

    /// Rewrites the file from `members` (every registered member of every
    /// group). The caller serializes calls, so the last write describes the
    /// last state. Takes each member's state lock briefly (`assigned`),
    /// never while holding a lock of its own. Errors are ignored: the file
    /// is removed instead, so it never describes an older assignment.
    pub(crate) fn publish(&self, members: &[Arc<Member>]) {
        let Some(target) = self.target.lock().clone() else {
            return;
        };
        let groups = snapshot(members);
        let written = encode(std::process::id(), target.clock.now_ms(), &groups).and_then(|payload| {
            metafile::write_atomic(target.storage.as_ref(), &target.dir, FILE, MAGIC, VERSION, &payload)
        });
        if written.is_err() {
            target.remove();
        }
    }
}

/// The groups of `members`, sorted, leaving members left out; duplicate ids
/// (which `start` normally refuses) are merged, so the file always decodes.
fn snapshot(members: &[Arc<Member>]) -> Vec<LiveGroup> {
    type Members = BTreeMap<String, BTreeSet<MessageQueue>>;
    let mut groups: BTreeMap<String, (MessageModel, Members)> = BTreeMap::new();
    for m in members.iter().filter(|m| !m.is_leaving()) {
        let queues = m.assigned();
        let (_, ms) = groups.entry(m.group.clone()).or_insert_with(|| (m.model, Members::new()));
        ms.entry(m.id.clone()).or_default().extend(queues);
    }
    groups
        .into_iter()
        .map(|(group, (model, ms))| LiveGroup {
            group,
            model,
            members: ms.into_iter().map(|(id, qs)| LiveMember { id, queues: qs.into_iter().collect() }).collect(),
        })
        .collect()
}

fn count(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::InvalidArgument(format!("{n} {what} exceed the membership file's limit")))
}

/// The version 1 payload. `groups` must be sorted as [`snapshot`] sorts
/// them (by group, member id, then queue, without duplicates); a payload
/// above the limit is refused.
fn encode(pid: u32, written_at_ms: u64, groups: &[LiveGroup]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(&written_at_ms.to_be_bytes());
    out.extend_from_slice(&count(groups.len(), "groups")?.to_be_bytes());
    for g in groups {
        metafile::put_str16(&mut out, &g.group)?;
        out.push(match g.model {
            MessageModel::Clustering => MODEL_CLUSTERING,
            MessageModel::Broadcasting => MODEL_BROADCASTING,
        });
        out.extend_from_slice(&count(g.members.len(), "members")?.to_be_bytes());
        for m in &g.members {
            metafile::put_str16(&mut out, &m.id)?;
            out.extend_from_slice(&count(m.queues.len(), "queues")?.to_be_bytes());
            for q in &m.queues {
                metafile::put_str16(&mut out, &q.topic)?;
                out.extend_from_slice(&q.queue_id.to_be_bytes());
            }
        }
    }
    if out.len() > MAX_PAYLOAD as usize {
        return Err(Error::InvalidArgument(format!(
            "the membership file would take {} bytes, over its limit of {MAX_PAYLOAD}",
            out.len()
        )));
    }
    Ok(out)
}

/// Reads a count and checks that `count * min_len` bytes remain, before
/// anything is allocated or looped over (`BadLength` at the count).
fn read_count(r: &mut PayloadReader<'_>, min_len: u64) -> Result<u32> {
    let at = r.file_offset();
    let n = r.u32()?;
    if u64::from(n) * min_len > r.remaining() as u64 {
        return Err(r.corruption(at, CorruptionKind::BadLength { length: u64::from(n) }));
    }
    Ok(n)
}

/// Decodes a payload read from `path` (`writer_alive` is left `false`).
fn decode(path: &Path, version: u16, payload: &[u8]) -> Result<LiveConsumers> {
    let mut r = PayloadReader::new(path, payload);
    if version != VERSION {
        let kind = CorruptionKind::UnsupportedVersion { found: u32::from(version) };
        return Err(r.corruption(metafile::VERSION_OFFSET as u64, kind));
    }
    let field = |field| CorruptionKind::InvalidField { field };
    let pid = r.u32()?;
    let written_at_ms = r.u64()?;
    let n_groups = read_count(&mut r, MIN_GROUP_LEN)?;
    let mut groups: Vec<LiveGroup> = Vec::new();
    for _ in 0..n_groups {
        let at = r.file_offset();
        let group = r.str16("group name")?;
        if validate_group_name(group).is_err() {
            return Err(r.corruption(at, field("group name")));
        }
        if groups.last().is_some_and(|prev| prev.group.as_str() >= group) {
            return Err(r.corruption(at, field("group order")));
        }
        let model_at = r.file_offset();
        let model = match r.u8()? {
            MODEL_CLUSTERING => MessageModel::Clustering,
            MODEL_BROADCASTING => MessageModel::Broadcasting,
            _ => return Err(r.corruption(model_at, field("message model"))),
        };
        let n_members = read_count(&mut r, MIN_MEMBER_LEN)?;
        let mut members: Vec<LiveMember> = Vec::new();
        for _ in 0..n_members {
            let at = r.file_offset();
            let id = r.str16("member id")?;
            if validate_group_name(id).is_err() {
                return Err(r.corruption(at, field("member id")));
            }
            if members.last().is_some_and(|prev| prev.id.as_str() >= id) {
                return Err(r.corruption(at, field("member order")));
            }
            let n_queues = read_count(&mut r, MIN_QUEUE_LEN)?;
            let mut queues: Vec<MessageQueue> = Vec::new();
            for _ in 0..n_queues {
                let at = r.file_offset();
                let topic = r.str16("topic name")?;
                if validate_topic_name(topic).is_err() {
                    return Err(r.corruption(at, field("topic name")));
                }
                let queue_id = r.u32()?;
                let q = MessageQueue { topic: topic.to_owned(), queue_id };
                if queues.last().is_some_and(|prev| *prev >= q) {
                    return Err(r.corruption(at, field("queue order")));
                }
                queues.push(q);
            }
            members.push(LiveMember { id: id.to_owned(), queues });
        }
        groups.push(LiveGroup { group: group.to_owned(), model, members });
    }
    r.finish()?;
    Ok(LiveConsumers { pid, written_at_ms, writer_alive: false, groups })
}

/// Reads `config/consumers` of the store in `root`: `None` when there is
/// none (no live store, or it was removed while being opened).
pub(crate) fn read(storage: &dyn Storage, root: &Path) -> Result<Option<LiveConsumers>> {
    let dir = root.join(metafile::CONFIG_DIR);
    let read = match metafile::read(storage, &dir, FILE, MAGIC, MAX_PAYLOAD) {
        Ok(r) => r,
        // Removed by a closing store between the existence check and the
        // open: as good as absent.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some((version, payload)) = read else {
        return Ok(None);
    };
    let mut live = decode(&dir.join(FILE), version, &payload)?;
    live.writer_alive = pid_alive(live.pid);
    Ok(Some(live))
}

/// Whether process `pid` looks alive: `/proc/<pid>` exists. Always `true`
/// where that cannot be told (no `/proc`, not Linux).
#[cfg(target_os = "linux")]
fn pid_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    pid != 0 && proc.join(pid.to_string()).exists()
}

/// Whether process `pid` looks alive: not knowable here, so `true`.
#[cfg(not(target_os = "linux"))]
fn pid_alive(_pid: u32) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;

    fn q(topic: &str, queue_id: u32) -> MessageQueue {
        MessageQueue { topic: topic.into(), queue_id }
    }

    fn sample() -> Vec<LiveGroup> {
        vec![
            LiveGroup {
                group: "billing".into(),
                model: MessageModel::Clustering,
                members: vec![
                    LiveMember { id: "c1".into(), queues: vec![q("orders", 0)] },
                    LiveMember { id: "c2".into(), queues: vec![q("orders", 1), q("zeta", 0)] },
                    LiveMember { id: "c3".into(), queues: vec![] },
                ],
            },
            LiveGroup {
                group: "cache".into(),
                model: MessageModel::Broadcasting,
                members: vec![LiveMember { id: "n1".into(), queues: vec![q("orders", 0), q("orders", 1)] }],
            },
        ]
    }

    fn decode_err(payload: &[u8]) -> (u64, CorruptionKind) {
        match decode(Path::new("/c"), VERSION, payload) {
            Err(Error::Corruption { offset, kind, .. }) => (offset, kind),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn constants_are_pinned() {
        // FORMAT.md 11.8 lists these; change both together.
        assert_eq!(MAGIC, [0x8D, 0x4D, 0x51, 0x43, 0x0D, 0x0A, 0x1A, 0x0A]);
        assert_eq!((FILE, VERSION, MAX_PAYLOAD), ("consumers", 1, 16 << 20));
        assert_eq!((MIN_GROUP_LEN, MIN_MEMBER_LEN, MIN_QUEUE_LEN), (8, 7, 7));
        assert_eq!((MODEL_CLUSTERING, MODEL_BROADCASTING), (1, 2));
    }

    #[test]
    fn encoding_is_pinned() {
        let groups = vec![LiveGroup {
            group: "g".into(),
            model: MessageModel::Broadcasting,
            members: vec![
                LiveMember { id: "a".into(), queues: vec![q("t", 3)] },
                LiveMember { id: "b".into(), queues: vec![] },
            ],
        }];
        let b = encode(7, 258, &groups).unwrap();
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            0, 0, 0, 7,  0, 0, 0, 0, 0, 0, 1, 2,  0, 0, 0, 1,
            0, 1, b'g',  2,  0, 0, 0, 2,
            0, 1, b'a',  0, 0, 0, 1,  0, 1, b't',  0, 0, 0, 3,
            0, 1, b'b',  0, 0, 0, 0,
        ];
        assert_eq!(b, want);
    }

    #[test]
    fn round_trip() {
        for groups in [vec![], sample()] {
            let b = encode(42, 1_700_000_000_000, &groups).unwrap();
            let got = decode(Path::new("/c"), VERSION, &b).unwrap();
            assert_eq!(got, LiveConsumers { pid: 42, written_at_ms: 1_700_000_000_000, writer_alive: false, groups });
        }
        let s = sample();
        assert_eq!(s[0].owners("orders", 1), ["c2"]);
        assert!(s[0].owners("orders", 7).is_empty());
        assert!(s[0].members[2].is_idle());
        assert_eq!(s[1].owners("orders", 0), ["n1"]);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_corruption_never_a_panic() {
        let full = encode(42, 99, &sample()).unwrap();
        for len in 0..full.len() {
            assert!(
                matches!(decode(Path::new("/c"), VERSION, &full[..len]), Err(Error::Corruption { .. })),
                "length {len}"
            );
        }
        // Inside the payload a flip may leave a valid file (the pid, the
        // time, a queue id): the envelope's CRC catches those on disk. Here
        // the decoder must only never panic, nor accept garbage silently.
        for bit in 0..full.len() * 8 {
            let mut c = full.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            match decode(Path::new("/c"), VERSION, &c) {
                Err(Error::Corruption { offset, .. }) => assert!(offset <= 20 + full.len() as u64, "bit {bit}"),
                Err(e) => panic!("bit {bit}: {e:?}"),
                Ok(got) => assert_ne!(encode(got.pid, got.written_at_ms, &got.groups).unwrap(), full, "bit {bit}"),
            }
        }
        // On disk, through the envelope, every flip and truncation is
        // corruption.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("config");
        metafile::write_atomic(&StdStorage, &dir, FILE, MAGIC, VERSION, &full).unwrap();
        let file = std::fs::read(dir.join(FILE)).unwrap();
        let corrupt = |bytes: &[u8]| {
            std::fs::write(dir.join(FILE), bytes).unwrap();
            matches!(read(&StdStorage, tmp.path()), Err(Error::Corruption { .. }))
        };
        for len in 0..file.len() {
            assert!(corrupt(&file[..len]), "file length {len}");
        }
        for bit in 0..file.len() * 8 {
            let mut c = file.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(corrupt(&c), "file bit {bit}");
        }
        std::fs::write(dir.join(FILE), &file).unwrap();
        let live = read(&StdStorage, tmp.path()).unwrap().unwrap();
        assert_eq!((live.pid, live.groups), (42, sample()));
    }

    #[test]
    fn nonsense_payloads_are_refused() {
        let field = |field| CorruptionKind::InvalidField { field };
        let head = |groups: u32| {
            let mut b = encode(1, 2, &[]).unwrap();
            b.truncate(12);
            b.extend_from_slice(&groups.to_be_bytes());
            b
        };
        let with = |groups: u32, rest: &[u8]| {
            let mut b = head(groups);
            b.extend_from_slice(rest);
            b
        };
        // File offsets: the payload starts after the 20-byte header; the
        // group count is at 32, the first group at 36.
        assert_eq!(decode_err(&head(u32::MAX)), (32, CorruptionKind::BadLength { length: u64::from(u32::MAX) }));
        assert_eq!(decode_err(&with(1, &[0, 1, b'g', 1, 0, 0, 0, 9])), (40, CorruptionKind::BadLength { length: 9 }));
        assert_eq!(decode_err(&with(1, &[0, 3, b'g', b' ', b'g', 1, 0, 0, 0, 0])), (36, field("group name")));
        assert_eq!(decode_err(&with(1, &[0, 1, b'g', 3, 0, 0, 0, 0])), (39, field("message model")));
        let two = [0, 1, b'g', 1, 0, 0, 0, 0, 0, 1, b'g', 1, 0, 0, 0, 0];
        assert_eq!(decode_err(&with(2, &two)), (44, field("group order")));
        // Member count too large for what remains.
        assert_eq!(decode_err(&with(1, &[0, 1, b'g', 1, 0, 0, 0, 2, 0, 1, b'a', 0, 0, 0, 0])).1, field_len(2));
        let dup = [0, 1, b'g', 1, 0, 0, 0, 2, 0, 1, b'a', 0, 0, 0, 0, 0, 1, b'a', 0, 0, 0, 0];
        assert_eq!(decode_err(&with(1, &dup)), (51, field("member order")));
        let bad_id = [0, 1, b'g', 1, 0, 0, 0, 1, 0, 1, b'/', 0, 0, 0, 0];
        assert_eq!(decode_err(&with(1, &bad_id)), (44, field("member id")));
        let bad_topic = [0, 1, b'g', 1, 0, 0, 0, 1, 0, 1, b'a', 0, 0, 0, 1, 0, 1, b'/', 0, 0, 0, 0];
        assert_eq!(decode_err(&with(1, &bad_topic)), (51, field("topic name")));
        let mut back = vec![0, 1, b'g', 1, 0, 0, 0, 1, 0, 1, b'a', 0, 0, 0, 2];
        back.extend_from_slice(&[0, 1, b't', 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0]);
        assert_eq!(decode_err(&with(1, &back)), (58, field("queue order")));
        let non_utf8 = [0, 1, 0xFF, 1, 0, 0, 0, 0];
        assert_eq!(decode_err(&with(1, &non_utf8)), (38, field("group name")));
        // Trailing bytes.
        assert_eq!(decode_err(&with(0, &[0])), (36, CorruptionKind::BadLength { length: 17 }));
        let e = decode(Path::new("/c"), 2, &head(0)).unwrap_err();
        assert!(matches!(
            e,
            Error::Corruption { offset: 8, kind: CorruptionKind::UnsupportedVersion { found: 2 }, .. }
        ));
    }

    fn field_len(n: u64) -> CorruptionKind {
        CorruptionKind::BadLength { length: n }
    }

    #[test]
    fn oversized_payload_is_refused_when_writing() {
        let members: Vec<LiveMember> = (0..30_000)
            .map(|i| LiveMember {
                id: format!("{i:0>200}"),
                queues: (0..4).map(|q| MessageQueue { topic: "t".repeat(100), queue_id: q }).collect(),
            })
            .collect();
        let groups = vec![LiveGroup { group: "g".into(), model: MessageModel::Clustering, members }];
        assert!(matches!(encode(1, 1, &groups), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn absent_file_is_none_and_the_writer_check() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read(&StdStorage, tmp.path()).unwrap(), None);
        assert!(pid_alive(std::process::id()));
        if cfg!(target_os = "linux") {
            // Above the kernel's pid_max limit (4,194,304), so never a process.
            assert!(!pid_alive(u32::MAX));
            assert!(!pid_alive(0));
        }
    }

    #[test]
    fn publisher_writes_until_detached() {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join(FILE), b"stale garbage").unwrap();
        let p = Publisher::default();
        p.publish(&[]);
        assert!(config.join(FILE).exists(), "not attached: nothing touched");
        let clock = Arc::new(crate::clock::ManualClock::new(1234));
        p.attach(Arc::new(StdStorage), tmp.path(), clock);
        assert!(!config.join(FILE).exists(), "a leftover is removed at attach");
        p.publish(&[]);
        let live = read(&StdStorage, tmp.path()).unwrap().unwrap();
        assert_eq!((live.pid, live.written_at_ms, live.writer_alive), (std::process::id(), 1234, true));
        assert!(live.groups.is_empty());
        p.detach();
        assert!(!config.join(FILE).exists());
        p.publish(&[]);
        assert!(!config.join(FILE).exists(), "nothing is written after detach");
        assert!(format!("{p:?}").contains("attached: false"));
    }
}
