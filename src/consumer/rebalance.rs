//! Message-queue allocation: which queues of a topic each member of a
//! consumer group reads (RocketMQ's `AllocateMessageQueueStrategy` family).
//!
//! Every member of a group runs the same strategy over the same inputs (all
//! queues of the topic, all consumer ids of the group) and keeps only its own
//! share, so the group agrees on an assignment without talking. For that to
//! work the inputs must be ordered identically everywhere: as RocketMQ's
//! `RebalanceImpl` does, every strategy here sorts both lists first (queues
//! by topic then queue id, consumer ids lexicographically) and drops
//! duplicates, so callers may pass them in any order.
//!
//! | Strategy | [`name`](AllocateStrategy::name) | Rule |
//! |---|---|---|
//! | [`Averagely`] (default) | `AVG` | contiguous blocks; the first `Q % N` consumers get one extra |
//! | [`AveragelyByCircle`] | `AVG_BY_CIRCLE` | round robin: consumer `i` gets queues `i, i+N, i+2N, ...` |
//! | [`ByConfig`] | `CONFIG` | a fixed, configured list |
//! | [`ByMachineRoom`] | `MACHINE_ROOM` | only queues in the configured rooms, `P / N` each, extras from the tail |
//! | [`MachineRoomNearby`] | `MACHINE_ROOM_NEARBY` | each room's queues go to that room's consumers; rooms without consumers are shared |
//! | [`ConsistentHash`] | `CONSISTENT_HASH` | hash ring with virtual nodes; membership changes move few queues |
//!
//! Where RocketMQ throws (`IllegalArgumentException` on an empty consumer id,
//! queue list or consumer list) these strategies return an empty assignment;
//! a consumer that is not in the consumer list gets nothing, as in RocketMQ.
//! With more consumers than queues some consumers get nothing.
//!
//! # Machine rooms
//!
//! RocketMQ derives a queue's machine room from its broker name
//! (`<room>@<broker>`) and a consumer's from a user-supplied resolver. mqstore
//! is a single node, so its queues have no broker name: the [`RoomOf`] trait
//! supplies both rooms instead, and [`RoomTable`] is a simple resolver that
//! maps queues to rooms explicitly and parses consumer ids of the form
//! `room@name`. An empty room means "unknown".
//!
//! ```
//! use mqstore::consumer::rebalance::{AllocateStrategy, Averagely};
//! use mqstore::store::MessageQueue;
//!
//! let queues: Vec<MessageQueue> =
//!     (0..8).map(|queue_id| MessageQueue { topic: "orders".into(), queue_id }).collect();
//! let consumers = vec!["c0".to_string(), "c1".to_string(), "c2".to_string()];
//! let mine = Averagely.allocate("group", "c2", &queues, &consumers);
//! let ids: Vec<u32> = mine.iter().map(|q| q.queue_id).collect();
//! assert_eq!(ids, [6, 7]);
//! ```

use crate::store::MessageQueue;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::Arc;

/// Decides which queues of a topic one consumer of a group reads (RocketMQ's
/// `AllocateMessageQueueStrategy`).
pub trait AllocateStrategy: Send + Sync + Debug {
    /// Queues assigned to `current` among `all_consumers` (consumer ids),
    /// given every queue of the topic.
    ///
    /// Inputs may arrive in any order: implementations sort them (RocketMQ
    /// sorts both lists) so every member computes the same assignment. The
    /// result is in sorted queue order.
    fn allocate(
        &self,
        group: &str,
        current: &str,
        all_queues: &[MessageQueue],
        all_consumers: &[String],
    ) -> Vec<MessageQueue>;

    /// Name, as RocketMQ's `getName()` (`"AVG"`, `"AVG_BY_CIRCLE"`,
    /// `"CONFIG"`, `"MACHINE_ROOM"`, `"MACHINE_ROOM_NEARBY"`,
    /// `"CONSISTENT_HASH"`).
    fn name(&self) -> &str;
}

/// The inputs every strategy starts from, sorted and deduplicated, plus the
/// position of the current consumer among the consumers.
struct Members<'a> {
    queues: Vec<&'a MessageQueue>,
    consumers: Vec<&'a str>,
    index: usize,
}

impl<'a> Members<'a> {
    /// `None` where RocketMQ would throw or log "[BUG] ... not in cidAll":
    /// empty current id, no queues, no consumers, or `current` absent.
    fn new(current: &str, all_queues: &'a [MessageQueue], all_consumers: &'a [String]) -> Option<Self> {
        if current.is_empty() || all_queues.is_empty() || all_consumers.is_empty() {
            return None;
        }
        let mut consumers: Vec<&str> = all_consumers.iter().map(String::as_str).collect();
        consumers.sort_unstable();
        consumers.dedup();
        let index = consumers.binary_search(&current).ok()?;
        Some(Self { queues: sorted_queues(all_queues), consumers, index })
    }
}

/// Queues in RocketMQ's `MessageQueue.compareTo` order (topic, then queue
/// id; mqstore queues have no broker name), without duplicates.
fn sorted_queues(queues: &[MessageQueue]) -> Vec<&MessageQueue> {
    let mut sorted: Vec<&MessageQueue> = queues.iter().collect();
    sorted.sort_unstable_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
    sorted.dedup();
    sorted
}

fn owned(queues: &[&MessageQueue]) -> Vec<MessageQueue> {
    queues.iter().map(|q| (*q).clone()).collect()
}

/// RocketMQ's default `AllocateMessageQueueAveragely` (`AVG`): consumer `i`
/// of `N` gets one contiguous block of the `Q` sorted queues, of `Q / N`
/// queues, plus one more for the first `Q % N` consumers.
///
/// With 8 queues and 3 consumers: `c0` gets q0..q2, `c1` q3..q5, `c2` q6, q7.
#[derive(Debug, Clone, Copy, Default)]
pub struct Averagely;

impl AllocateStrategy for Averagely {
    fn allocate(
        &self,
        _group: &str,
        current: &str,
        all_queues: &[MessageQueue],
        all_consumers: &[String],
    ) -> Vec<MessageQueue> {
        let Some(m) = Members::new(current, all_queues, all_consumers) else { return Vec::new() };
        let (q, n, i) = (m.queues.len(), m.consumers.len(), m.index);
        let extra = q % n;
        let size = if q <= n {
            1
        } else if i < extra {
            q / n + 1
        } else {
            q / n
        };
        let start = if i < extra { i * size } else { i * size + extra };
        let len = size.min(q.saturating_sub(start));
        owned(&m.queues[start.min(q)..start.min(q) + len])
    }

    fn name(&self) -> &str {
        "AVG"
    }
}

/// RocketMQ's `AllocateMessageQueueAveragelyByCircle` (`AVG_BY_CIRCLE`):
/// consumer `i` of `N` gets the sorted queues `i, i + N, i + 2N, ...`.
///
/// With 8 queues and 3 consumers: `c0` gets q0, q3, q6; `c1` q1, q4, q7;
/// `c2` q2, q5.
#[derive(Debug, Clone, Copy, Default)]
pub struct AveragelyByCircle;

impl AllocateStrategy for AveragelyByCircle {
    fn allocate(
        &self,
        _group: &str,
        current: &str,
        all_queues: &[MessageQueue],
        all_consumers: &[String],
    ) -> Vec<MessageQueue> {
        let Some(m) = Members::new(current, all_queues, all_consumers) else { return Vec::new() };
        m.queues.iter().skip(m.index).step_by(m.consumers.len()).map(|q| (*q).clone()).collect()
    }

    fn name(&self) -> &str {
        "AVG_BY_CIRCLE"
    }
}

/// RocketMQ's `AllocateMessageQueueByConfig` (`CONFIG`): returns the
/// configured queues, whatever the inputs.
///
/// As in RocketMQ it ignores the group, the consumer id and both lists, so
/// it is the one strategy that gives queues to a consumer missing from the
/// consumer list; keeping the configured lists of a group disjoint and
/// complete is up to the caller. The list is returned as configured
/// (neither sorted nor deduplicated).
#[derive(Debug, Clone, Default)]
pub struct ByConfig {
    /// The queues this consumer reads.
    pub queues: Vec<MessageQueue>,
}

impl AllocateStrategy for ByConfig {
    fn allocate(
        &self,
        _group: &str,
        _current: &str,
        _all_queues: &[MessageQueue],
        _all_consumers: &[String],
    ) -> Vec<MessageQueue> {
        self.queues.clone()
    }

    fn name(&self) -> &str {
        "CONFIG"
    }
}

/// Tells the machine-room strategies where queues and consumers run.
///
/// In RocketMQ a queue's room comes from its broker name and a consumer's
/// from the client id; mqstore queues have no broker, so this resolver
/// supplies both. Return an empty string for "unknown".
pub trait RoomOf: Send + Sync + Debug {
    /// Machine room of `q`'s messages (RocketMQ: the `<room>` in the broker
    /// name `<room>@<broker>`).
    fn room_of_queue(&self, q: &MessageQueue) -> String;
    /// Machine room of the consumer with id `consumer_id`.
    fn room_of_consumer(&self, consumer_id: &str) -> String;
}

/// A [`RoomOf`] with an explicit queue-to-room map, which reads consumer
/// rooms from RocketMQ-style ids `room@name`.
///
/// Queues not in the map have no room (`""`). A consumer id has a room only
/// if it contains exactly one `@` with text on both sides (the rule
/// RocketMQ's `ByMachineRoom` applies to broker names); otherwise its room
/// is `""`.
///
/// ```
/// use mqstore::consumer::rebalance::{RoomOf, RoomTable};
/// use mqstore::store::MessageQueue;
///
/// let q0 = MessageQueue { topic: "orders".into(), queue_id: 0 };
/// let rooms = RoomTable::new().queue(q0.clone(), "hz");
/// assert_eq!(rooms.room_of_queue(&q0), "hz");
/// assert_eq!(rooms.room_of_consumer("sh@consumer-1"), "sh");
/// assert_eq!(rooms.room_of_consumer("consumer-2"), "");
/// ```
#[derive(Debug, Clone, Default)]
pub struct RoomTable {
    queues: HashMap<MessageQueue, String>,
}

impl RoomTable {
    /// An empty table: every queue has no room.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `q` in `room`, replacing an earlier room.
    #[must_use]
    pub fn queue(mut self, q: MessageQueue, room: impl Into<String>) -> Self {
        self.insert(q, room);
        self
    }

    /// Places `q` in `room` and returns its previous room, if any.
    pub fn insert(&mut self, q: MessageQueue, room: impl Into<String>) -> Option<String> {
        self.queues.insert(q, room.into())
    }
}

impl RoomOf for RoomTable {
    fn room_of_queue(&self, q: &MessageQueue) -> String {
        self.queues.get(q).cloned().unwrap_or_default()
    }

    fn room_of_consumer(&self, consumer_id: &str) -> String {
        match consumer_id.split_once('@') {
            Some((room, name)) if !room.is_empty() && !name.is_empty() && !name.contains('@') => room.to_string(),
            _ => String::new(),
        }
    }
}

/// RocketMQ's `AllocateMessageQueueByMachineRoom` (`MACHINE_ROOM`): only the
/// queues whose room is one of `consumer_rooms` are shared out, `P / N` per
/// consumer in contiguous blocks, and the `P % N` left over at the tail go
/// one each to the first consumers.
///
/// Queue rooms come from `resolver` ([`RoomOf::room_of_queue`]); a queue
/// with an empty room is never taken. Consumer rooms are not consulted:
/// as in RocketMQ, every member of the group is expected to be configured
/// with the same `consumer_rooms`.
#[derive(Debug, Clone)]
pub struct ByMachineRoom {
    /// The rooms whose queues this group consumes (RocketMQ's
    /// `consumeridcs`).
    pub consumer_rooms: Vec<String>,
    /// Where queues live.
    pub resolver: Arc<dyn RoomOf>,
}

impl AllocateStrategy for ByMachineRoom {
    fn allocate(
        &self,
        _group: &str,
        current: &str,
        all_queues: &[MessageQueue],
        all_consumers: &[String],
    ) -> Vec<MessageQueue> {
        let Some(m) = Members::new(current, all_queues, all_consumers) else { return Vec::new() };
        let eligible: Vec<&MessageQueue> = m
            .queues
            .into_iter()
            .filter(|q| {
                let room = self.resolver.room_of_queue(q);
                !room.is_empty() && self.consumer_rooms.contains(&room)
            })
            .collect();
        let n = m.consumers.len();
        let (per, rest) = (eligible.len() / n, eligible.len() % n);
        let start = per * m.index;
        let mut mine = owned(&eligible[start..start + per]);
        if m.index < rest {
            mine.push(eligible[per * n + m.index].clone());
        }
        mine
    }

    fn name(&self) -> &str {
        "MACHINE_ROOM"
    }
}

/// RocketMQ's `AllocateMachineRoomNearby` (`MACHINE_ROOM_NEARBY`): prefers
/// queues in the consumer's own machine room.
///
/// Queues are grouped by room. The queues of a room that has at least one
/// consumer are allocated by `inner` among that room's consumers only; the
/// queues of a room without any consumer are allocated by `inner` among all
/// consumers. The result lists the own room's share first, then shares of
/// consumer-less rooms in room-name order.
///
/// RocketMQ rejects an empty room; here an empty room means "unknown":
/// queues with no room are shared among all consumers, and a consumer with
/// no room receives only shared queues. [`name`](AllocateStrategy::name)
/// is `"MACHINE_ROOM_NEARBY"`; RocketMQ's `getName()` appends the inner
/// strategy's name, which [`MachineRoomNearby::full_name`] gives.
#[derive(Debug)]
pub struct MachineRoomNearby {
    /// The strategy applied within each room.
    pub inner: Box<dyn AllocateStrategy>,
    /// Where queues and consumers live.
    pub resolver: Arc<dyn RoomOf>,
}

impl MachineRoomNearby {
    /// RocketMQ's composite name, `MACHINE_ROOM_NEARBY-<inner name>`.
    pub fn full_name(&self) -> String {
        format!("MACHINE_ROOM_NEARBY-{}", self.inner.name())
    }
}

impl AllocateStrategy for MachineRoomNearby {
    fn allocate(
        &self,
        group: &str,
        current: &str,
        all_queues: &[MessageQueue],
        all_consumers: &[String],
    ) -> Vec<MessageQueue> {
        let Some(m) = Members::new(current, all_queues, all_consumers) else { return Vec::new() };
        let mut queues_by_room: BTreeMap<String, Vec<MessageQueue>> = BTreeMap::new();
        for q in m.queues {
            queues_by_room.entry(self.resolver.room_of_queue(q)).or_default().push(q.clone());
        }
        // Consumers without a room form no room of their own.
        let mut consumers_by_room: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in &m.consumers {
            let room = self.resolver.room_of_consumer(c);
            if !room.is_empty() {
                consumers_by_room.entry(room).or_default().push((*c).to_string());
            }
        }
        let mut mine = Vec::new();
        let my_room = self.resolver.room_of_consumer(current);
        if let Some(neighbours) = consumers_by_room.get(&my_room) {
            if let Some(queues) = queues_by_room.remove(&my_room) {
                mine.extend(self.inner.allocate(group, current, &queues, neighbours));
            }
        }
        let everyone: Vec<String> = m.consumers.iter().map(|c| (*c).to_string()).collect();
        for (room, queues) in &queues_by_room {
            if !consumers_by_room.contains_key(room) {
                mine.extend(self.inner.allocate(group, current, queues, &everyone));
            }
        }
        mine
    }

    fn name(&self) -> &str {
        "MACHINE_ROOM_NEARBY"
    }
}

/// Hash used to place consumers and queues on the [`ConsistentHash`] ring
/// (RocketMQ's `HashFunction`). It must give the same value for the same
/// key on every member of the group, on every platform and in every run.
pub trait RingHash: Send + Sync + Debug {
    /// Position of `key` on the ring.
    fn hash(&self, key: &str) -> u64;
}

/// RocketMQ's default ring hash: the first four bytes of the MD5 digest of
/// the key's UTF-8 bytes, read as a big-endian unsigned 32-bit number.
///
/// MD5 is used only for spreading, not for security; the crate carries its
/// own implementation (RFC 1321) so no dependency is needed and positions
/// match a RocketMQ Java client's bit for bit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Md5Hash;

impl RingHash for Md5Hash {
    fn hash(&self, key: &str) -> u64 {
        let d = md5(key.as_bytes());
        u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
    }
}

/// RocketMQ's `AllocateMessageQueueConsistentHash` (`CONSISTENT_HASH`).
///
/// Each consumer id `c` is placed on a ring at the hashes of `c-0`,
/// `c-1`, ..., `c-{virtual_nodes - 1}` (in sorted consumer order; a later
/// node replaces an earlier one at the same position, as in RocketMQ's
/// `TreeMap`). Each queue is hashed by RocketMQ's `MessageQueue.toString()`,
/// `MessageQueue [topic=<topic>, brokerName=<broker_name>, queueId=<id>]`,
/// and goes to the first node at or after that position, wrapping around.
/// Adding or removing a consumer moves only the queues next to its nodes.
///
/// The default hash is [`Md5Hash`], RocketMQ's own, so with the same
/// consumer ids and `broker_name` the assignment is exactly the one a
/// RocketMQ Java client computes. With `virtual_nodes == 0` the ring is
/// empty and nobody gets anything (RocketMQ allows 0 too).
#[derive(Debug)]
pub struct ConsistentHash {
    /// Ring positions per consumer (RocketMQ's `virtualNodeCnt`, default 10).
    pub virtual_nodes: usize,
    /// Broker name written into each queue's hash key. mqstore queues have
    /// no broker; any value works as long as the whole group uses the same
    /// one. Default: empty.
    pub broker_name: String,
    /// Ring hash. Default: [`Md5Hash`].
    pub hash: Box<dyn RingHash>,
}

impl ConsistentHash {
    /// RocketMQ's default virtual-node count.
    pub const DEFAULT_VIRTUAL_NODES: usize = 10;

    /// A ring with `virtual_nodes` positions per consumer and the default
    /// hash and broker name.
    pub fn new(virtual_nodes: usize) -> Self {
        Self { virtual_nodes, ..Self::default() }
    }

    fn queue_key(&self, q: &MessageQueue) -> String {
        format!("MessageQueue [topic={}, brokerName={}, queueId={}]", q.topic, self.broker_name, q.queue_id)
    }
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self { virtual_nodes: Self::DEFAULT_VIRTUAL_NODES, broker_name: String::new(), hash: Box::new(Md5Hash) }
    }
}

impl AllocateStrategy for ConsistentHash {
    fn allocate(
        &self,
        _group: &str,
        current: &str,
        all_queues: &[MessageQueue],
        all_consumers: &[String],
    ) -> Vec<MessageQueue> {
        let Some(m) = Members::new(current, all_queues, all_consumers) else { return Vec::new() };
        let mut ring: BTreeMap<u64, &str> = BTreeMap::new();
        for c in &m.consumers {
            for i in 0..self.virtual_nodes {
                ring.insert(self.hash.hash(&format!("{c}-{i}")), c);
            }
        }
        let owner = |key: u64| ring.range(key..).next().or_else(|| ring.iter().next()).map(|(_, c)| *c);
        m.queues.into_iter().filter(|q| owner(self.hash.hash(&self.queue_key(q))) == Some(current)).cloned().collect()
    }

    fn name(&self) -> &str {
        "CONSISTENT_HASH"
    }
}

/// Per-round shift amounts of MD5 (RFC 1321, section 3.4).
const MD5_SHIFTS: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];

/// MD5's sine table: `floor(abs(sin(i + 1)) * 2^32)`, written out so the
/// result never depends on a platform's `sin`.
const MD5_K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// MD5 digest of `data` (RFC 1321). MD5 is little-endian throughout; the
/// crate denies the `*_le_bytes` helpers, so words are assembled by hand.
fn md5(data: &[u8]) -> [u8; 16] {
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.extend((0..8).map(|i| (bits >> (8 * i)) as u8));

    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    for chunk in msg.chunks_exact(64) {
        let mut words = [0u32; 16];
        for (w, b) in words.iter_mut().zip(chunk.chunks_exact(4)) {
            *w = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16 | u32::from(b[3]) << 24;
        }
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(MD5_K[i]).wrapping_add(words[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(MD5_SHIFTS[(i / 16) * 4 + i % 4]));
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
    let mut digest = [0u8; 16];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        for (k, byte) in out.iter_mut().enumerate() {
            *byte = (word >> (8 * k)) as u8;
        }
    }
    digest
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn queues(topic: &str, n: u32) -> Vec<MessageQueue> {
        (0..n).map(|queue_id| MessageQueue { topic: topic.to_string(), queue_id }).collect()
    }

    fn ids(n: usize) -> Vec<String> {
        // Zero-padded so the lexicographic sort keeps numeric order.
        (0..n).map(|i| format!("c{i:02}")).collect()
    }

    fn queue_ids(assigned: &[MessageQueue]) -> Vec<u32> {
        assigned.iter().map(|q| q.queue_id).collect()
    }

    /// Seeded xorshift64*, so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn shuffle<T>(&mut self, v: &mut [T]) {
            for i in (1..v.len()).rev() {
                v.swap(i, self.below(i + 1));
            }
        }
    }

    /// Runs `strategy` for every consumer, each seeing its own shuffle of the
    /// inputs, and returns each consumer's share in consumer order.
    fn allocate_all(
        strategy: &dyn AllocateStrategy,
        all_queues: &[MessageQueue],
        consumers: &[String],
        rng: &mut Rng,
    ) -> Vec<Vec<MessageQueue>> {
        consumers
            .iter()
            .map(|c| {
                let (mut qs, mut cs) = (all_queues.to_vec(), consumers.to_vec());
                rng.shuffle(&mut qs);
                rng.shuffle(&mut cs);
                strategy.allocate("group", c, &qs, &cs)
            })
            .collect()
    }

    fn assert_partition(shares: &[Vec<MessageQueue>], all_queues: &[MessageQueue], what: &str) {
        let mut seen = HashSet::new();
        for q in shares.iter().flatten() {
            assert!(seen.insert(q.clone()), "{what}: {q:?} assigned twice");
        }
        assert_eq!(seen.len(), all_queues.len(), "{what}: some queue unassigned");
    }

    #[test]
    fn averagely_gives_contiguous_blocks_with_extras_first() {
        let (qs, cs) = (queues("T", 8), ids(3));
        let got: Vec<Vec<u32>> = cs.iter().map(|c| queue_ids(&Averagely.allocate("g", c, &qs, &cs))).collect();
        assert_eq!(got, [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
        // 10 queues / 4 consumers: mod 2, sizes 3, 3, 2, 2.
        let (qs, cs) = (queues("T", 10), ids(4));
        let got: Vec<Vec<u32>> = cs.iter().map(|c| queue_ids(&Averagely.allocate("g", c, &qs, &cs))).collect();
        assert_eq!(got, [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7], vec![8, 9]]);
    }

    #[test]
    fn averagely_leaves_surplus_consumers_idle() {
        let (qs, cs) = (queues("T", 2), ids(4));
        let got: Vec<Vec<u32>> = cs.iter().map(|c| queue_ids(&Averagely.allocate("g", c, &qs, &cs))).collect();
        assert_eq!(got, [vec![0], vec![1], vec![], vec![]]);
    }

    #[test]
    fn by_circle_deals_round_robin() {
        let (qs, cs) = (queues("T", 8), ids(3));
        let got: Vec<Vec<u32>> = cs.iter().map(|c| queue_ids(&AveragelyByCircle.allocate("g", c, &qs, &cs))).collect();
        assert_eq!(got, [vec![0, 3, 6], vec![1, 4, 7], vec![2, 5]]);
    }

    #[test]
    fn inputs_are_sorted_before_allocating() {
        let (mut qs, mut cs) = (queues("T", 8), ids(3));
        qs.reverse();
        cs.reverse();
        qs.push(qs[0].clone()); // duplicates are dropped too
        assert_eq!(queue_ids(&Averagely.allocate("g", "c00", &qs, &cs)), [0, 1, 2]);
        assert_eq!(queue_ids(&AveragelyByCircle.allocate("g", "c02", &qs, &cs)), [2, 5]);
        // Topic sorts before queue id.
        let mixed = [queues("B", 2), queues("A", 2)].concat();
        let all = Averagely.allocate("g", "c00", &mixed, &ids(1));
        let order: Vec<(&str, u32)> = all.iter().map(|q| (q.topic.as_str(), q.queue_id)).collect();
        assert_eq!(order, [("A", 0), ("A", 1), ("B", 0), ("B", 1)]);
    }

    #[test]
    fn unknown_consumer_and_empty_inputs_get_nothing() {
        let (qs, cs) = (queues("T", 4), ids(2));
        let rooms: Arc<dyn RoomOf> = Arc::new(RoomTable::new());
        let strategies: Vec<Box<dyn AllocateStrategy>> = vec![
            Box::new(Averagely),
            Box::new(AveragelyByCircle),
            Box::new(ByMachineRoom { consumer_rooms: vec!["hz".into()], resolver: rooms.clone() }),
            Box::new(MachineRoomNearby { inner: Box::new(Averagely), resolver: rooms }),
            Box::new(ConsistentHash::default()),
        ];
        for s in &strategies {
            assert!(s.allocate("g", "stranger", &qs, &cs).is_empty(), "{}", s.name());
            assert!(s.allocate("g", "c00", &[], &cs).is_empty(), "{}", s.name());
            assert!(s.allocate("g", "c00", &qs, &[]).is_empty(), "{}", s.name());
            assert!(s.allocate("g", "", &qs, &[String::new()]).is_empty(), "{}", s.name());
        }
    }

    #[test]
    fn by_config_returns_its_list_whatever_the_inputs() {
        let fixed =
            vec![MessageQueue { topic: "T".into(), queue_id: 5 }, MessageQueue { topic: "T".into(), queue_id: 1 }];
        let s = ByConfig { queues: fixed.clone() };
        assert_eq!(s.allocate("g", "anyone", &queues("T", 8), &ids(3)), fixed);
        assert_eq!(s.allocate("g", "anyone", &[], &[]), fixed);
    }

    #[test]
    fn names_match_rocketmq() {
        let rooms: Arc<dyn RoomOf> = Arc::new(RoomTable::new());
        let nearby = MachineRoomNearby { inner: Box::new(AveragelyByCircle), resolver: rooms.clone() };
        assert_eq!(Averagely.name(), "AVG");
        assert_eq!(AveragelyByCircle.name(), "AVG_BY_CIRCLE");
        assert_eq!(ByConfig::default().name(), "CONFIG");
        assert_eq!(ByMachineRoom { consumer_rooms: vec![], resolver: rooms }.name(), "MACHINE_ROOM");
        assert_eq!(nearby.name(), "MACHINE_ROOM_NEARBY");
        assert_eq!(nearby.full_name(), "MACHINE_ROOM_NEARBY-AVG_BY_CIRCLE");
        assert_eq!(ConsistentHash::default().name(), "CONSISTENT_HASH");
    }

    /// Queues 0..4 live in room `hz`, 4..8 in room `sh`.
    fn two_rooms(qs: &[MessageQueue]) -> Arc<dyn RoomOf> {
        let mut table = RoomTable::new();
        for q in qs {
            table.insert(q.clone(), if q.queue_id < 4 { "hz" } else { "sh" });
        }
        Arc::new(table)
    }

    #[test]
    fn room_table_parses_rocketmq_style_consumer_ids() {
        let t = RoomTable::new();
        assert_eq!(t.room_of_consumer("hz@c1"), "hz");
        for no_room in ["c1", "@c1", "hz@", "hz@c1@x", ""] {
            assert_eq!(t.room_of_consumer(no_room), "", "{no_room}");
        }
        assert_eq!(t.room_of_queue(&MessageQueue { topic: "T".into(), queue_id: 0 }), "");
    }

    #[test]
    fn by_machine_room_takes_only_configured_rooms_with_extras_from_the_tail() {
        let qs = queues("T", 8);
        let s = ByMachineRoom { consumer_rooms: vec!["hz".into()], resolver: two_rooms(&qs) };
        let cs = ids(3);
        // 4 eligible queues over 3 consumers: one each, the tail queue to c00.
        let got: Vec<Vec<u32>> = cs.iter().map(|c| queue_ids(&s.allocate("g", c, &qs, &cs))).collect();
        assert_eq!(got, [vec![0, 3], vec![1], vec![2]]);
        let both = ByMachineRoom { consumer_rooms: vec!["sh".into(), "hz".into()], resolver: two_rooms(&qs) };
        let got: Vec<Vec<u32>> = cs.iter().map(|c| queue_ids(&both.allocate("g", c, &qs, &cs))).collect();
        assert_eq!(got, [vec![0, 1, 6], vec![2, 3, 7], vec![4, 5]]);
    }

    #[test]
    fn nearby_keeps_queues_in_their_room_and_shares_orphaned_rooms() {
        let qs = queues("T", 8);
        let s = MachineRoomNearby { inner: Box::new(Averagely), resolver: two_rooms(&qs) };
        let cs: Vec<String> = ["hz@a", "hz@b", "sh@c"].map(String::from).to_vec();
        let got: Vec<Vec<u32>> = cs.iter().map(|c| queue_ids(&s.allocate("g", c, &qs, &cs))).collect();
        assert_eq!(got, [vec![0, 1], vec![2, 3], vec![4, 5, 6, 7]]);
        // Room sh loses its only consumer: its queues are shared by everyone.
        let cs: Vec<String> = ["hz@a", "hz@b"].map(String::from).to_vec();
        let got: Vec<Vec<u32>> = cs.iter().map(|c| queue_ids(&s.allocate("g", c, &qs, &cs))).collect();
        assert_eq!(got, [vec![0, 1, 4, 5], vec![2, 3, 6, 7]]);
        // A consumer with no room only shares the orphaned room's queues.
        let cs: Vec<String> = ["hz@a", "loner"].map(String::from).to_vec();
        let got: Vec<Vec<u32>> = cs.iter().map(|c| queue_ids(&s.allocate("g", c, &qs, &cs))).collect();
        assert_eq!(got, [vec![0, 1, 2, 3, 4, 5], vec![6, 7]]);
    }

    #[test]
    fn md5_matches_rfc_1321_and_python() {
        let hex = |d: [u8; 16]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let digits = "1234567890".repeat(8);
        let cases: [(&[u8], &str); 7] = [
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"a", "0cc175b9c0f1b6a831c399e269772661"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (b"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"),
            (digits.as_bytes(), "57edf4a22be3c955ac49da2e2107b67a"),
        ];
        for (input, want) in cases {
            assert_eq!(hex(md5(input)), want);
        }
        // Padding boundaries, from Python's hashlib.
        for (n, want) in [
            (55, "ef1772b6dff9a122358552954ad0df65"),
            (56, "3b0c8ac703f828b04c6c197006d17218"),
            (63, "b06521f39153d618550606be297466d5"),
            (64, "014842d480b571495a4a0363793f7367"),
            (65, "c743a45e0d2e6a95cb859adae0248435"),
            (128, "e510683b3f5ffe4093d021808bc6ff70"),
        ] {
            assert_eq!(hex(md5(&vec![b'a'; n])), want, "length {n}");
        }
        assert_eq!(hex(md5("é@房".as_bytes())), "2cdba5cec34587b848c297125dac7bd2");
    }

    #[test]
    fn ring_hash_matches_rocketmq_md5_hash() {
        // Values from RocketMQ's ConsistentHashRouter.MD5Hash run on a JDK.
        assert_eq!(Md5Hash.hash(""), 3_558_706_393);
        assert_eq!(Md5Hash.hash("abc"), 2_416_005_272);
        assert_eq!(Md5Hash.hash("c0-0"), 2_316_876_094);
        assert_eq!(Md5Hash.hash("MessageQueue [topic=T, brokerName=, queueId=0]"), 415_826_718);
    }

    #[test]
    fn consistent_hash_matches_rocketmq_assignment() {
        // Owners of T/0..16 among c0..c3 with 10 virtual nodes, computed on a
        // JDK with RocketMQ's router algorithm (MD5, TreeMap, tailMap).
        let cases: [(&str, [&str; 16]); 2] = [
            ("", ["c0", "c2", "c3", "c3", "c3", "c2", "c2", "c0", "c1", "c3", "c1", "c2", "c0", "c0", "c2", "c2"]),
            (
                "broker-a",
                ["c0", "c0", "c2", "c3", "c1", "c0", "c0", "c2", "c1", "c3", "c1", "c3", "c2", "c0", "c0", "c2"],
            ),
        ];
        let (qs, cs) = (queues("T", 16), ["c0", "c1", "c2", "c3"].map(String::from).to_vec());
        for (broker, owners) in cases {
            let s = ConsistentHash { broker_name: broker.into(), ..ConsistentHash::default() };
            for c in &cs {
                let want: Vec<u32> = (0u32..).zip(owners).filter(|(_, o)| o == c).map(|(q, _)| q).collect();
                assert_eq!(queue_ids(&s.allocate("g", c, &qs, &cs)), want, "broker {broker:?}, {c}");
            }
        }
    }

    #[test]
    fn consistent_hash_moves_few_queues_when_a_consumer_joins() {
        let qs = queues("T", 64);
        let s = ConsistentHash::default();
        let owner_map = |cs: &[String]| {
            let mut owners = HashMap::new();
            for c in cs {
                for q in s.allocate("g", c, &qs, cs) {
                    owners.insert(q.queue_id, c.clone());
                }
            }
            owners
        };
        let (before, after) = (owner_map(&ids(8)), owner_map(&ids(9)));
        let moved: Vec<u32> = (0..64).filter(|q| before.get(q) != after.get(q)).collect();
        assert!(moved.len() < 32, "{} of 64 queues moved", moved.len());
        // Every queue that moved went to the newcomer.
        assert!(moved.iter().all(|q| after.get(q).map(String::as_str) == Some("c08")), "{moved:?}");
    }

    #[test]
    fn consistent_hash_with_no_virtual_nodes_assigns_nothing() {
        let (qs, cs) = (queues("T", 4), ids(2));
        assert!(ConsistentHash::new(0).allocate("g", "c00", &qs, &cs).is_empty());
    }

    #[test]
    fn every_queue_is_assigned_exactly_once() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..100 {
            let q = 1 + rng.below(64) as u32;
            let n = 1 + rng.below(20);
            let (qs, cs) = (queues("T", q), ids(n));
            let mut table = RoomTable::new();
            let room_names = ["hz", "sh", "bj"];
            for mq in &qs {
                table.insert(mq.clone(), room_names[rng.below(3)]);
            }
            // Consumers spread over (at most) two of the three rooms, with
            // some roomless, so orphaned rooms and roomless ids both occur.
            let cs: Vec<String> = cs
                .iter()
                .map(|c| match rng.below(3) {
                    0 => format!("hz@{c}"),
                    1 => format!("sh@{c}"),
                    _ => c.clone(),
                })
                .collect();
            let rooms: Arc<dyn RoomOf> = Arc::new(table);
            let strategies: Vec<Box<dyn AllocateStrategy>> = vec![
                Box::new(Averagely),
                Box::new(AveragelyByCircle),
                Box::new(ByMachineRoom {
                    consumer_rooms: room_names.map(String::from).to_vec(),
                    resolver: rooms.clone(),
                }),
                Box::new(MachineRoomNearby { inner: Box::new(Averagely), resolver: rooms.clone() }),
                Box::new(MachineRoomNearby { inner: Box::new(ConsistentHash::default()), resolver: rooms }),
                Box::new(ConsistentHash::default()),
            ];
            for s in &strategies {
                let shares = allocate_all(s.as_ref(), &qs, &cs, &mut rng);
                assert_partition(&shares, &qs, &format!("round {round}, {}, {q} queues, {n} consumers", s.name()));
                if s.name() != "CONSISTENT_HASH" && s.name() != "MACHINE_ROOM_NEARBY" {
                    let sizes: Vec<usize> = shares.iter().map(Vec::len).collect();
                    let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
                    assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{}: unbalanced {sizes:?}", s.name());
                }
            }
        }
    }
}
