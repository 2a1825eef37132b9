//! Message ids, both as RocketMQ spells them: 16 bytes written as 32
//! uppercase hex characters.
//!
//! * The **unique id** (`msgId`, stored as the `UNIQ_KEY` property; RocketMQ
//!   `MessageClientIDSetter`): who made the message and when.
//!
//!   | offset | size | field |
//!   |---|---|---|
//!   | 0 | 4 | IPv4 address of the producing host |
//!   | 4 | 2 | process id, low 16 bits |
//!   | 6 | 4 | per-generator random value (RocketMQ: class-loader hash) |
//!   | 10 | 4 | milliseconds since the start of the current month (UTC) |
//!   | 14 | 2 | counter |
//!
//! * The **offset id** (`offsetMsgId`; RocketMQ `MessageDecoder.createMessageId`):
//!   where the message is stored. It is computed, never stored.
//!
//!   | offset | size | field |
//!   |---|---|---|
//!   | 0 | 4 | store host IPv4 address |
//!   | 4 | 4 | store port |
//!   | 8 | 8 | commit-log physical offset of the record |

use super::MessageId;
use crate::codec::{get_u16, get_u32, get_u64, java_string_hash, put_u16, put_u32, put_u64};
use crate::error::{Error, Result};
use crate::offset::PhysicalOffset;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes in either id.
pub const ID_LEN: usize = 16;
/// Characters in either id's hex form.
pub const UNIQUE_ID_HEX_LEN: usize = 2 * ID_LEN;

const PREFIX_LEN: usize = 10;
const IP_OFFSET: usize = 0;
const PID_OFFSET: usize = IP_OFFSET + 4;
const RANDOM_OFFSET: usize = PID_OFFSET + 2;
const TIME_OFFSET: usize = RANDOM_OFFSET + 4;
const COUNTER_OFFSET: usize = TIME_OFFSET + 4;

const HOST_OFFSET: usize = 0;
const PORT_OFFSET: usize = HOST_OFFSET + 4;
const PHYSICAL_OFFSET_OFFSET: usize = PORT_OFFSET + 4;

const MS_PER_DAY: u64 = 86_400_000;
/// Largest timestamp that still fits the generator state's 48 time bits.
const MAX_STATE_MS: u64 = u64::MAX >> 16;
const HEX: &[u8; 16] = b"0123456789ABCDEF";
/// The two hex characters of every byte value: one table load per byte
/// instead of two nibble lookups with their bounds checks.
pub(super) const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// Makes unique message ids (RocketMQ `MessageClientIDSetter.createUniqID`).
///
/// Thread-safe. Within one generator ids are strictly increasing in
/// (time, counter) order: the counter restarts each millisecond and, after
/// 65,536 ids in one millisecond or when the clock steps back, the time
/// field runs ahead of the clock instead of repeating a value. Ids can
/// repeat only across months (the time field counts from the start of the
/// month, as in RocketMQ) or between generators with the same 10-byte
/// prefix, which the per-generator random value makes unlikely.
///
/// ```
/// use mqstore::message::{parse_unique_id, MessageIdGenerator};
/// let ids = MessageIdGenerator::with_prefix([10, 0, 0, 7], 42, 0xCAFE_F00D);
/// let id = ids.next(1_709_251_200_123); // 2024-03-01T00:00:00.123Z
/// assert_eq!(id, "0A000007002ACAFEF00D0000007B0000");
/// let parts = parse_unique_id(&id).unwrap();
/// assert_eq!((parts.ip, parts.pid, parts.ms_in_month, parts.counter), ([10, 0, 0, 7], 42, 123, 0));
/// ```
#[derive(Debug)]
pub struct MessageIdGenerator {
    /// Ip, pid and random value: the part every id shares.
    prefix: [u8; PREFIX_LEN],
    /// `(ms since the epoch << 16) | counter` of the last id handed out.
    state: AtomicU64,
}

impl Default for MessageIdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageIdGenerator {
    /// A generator for this host and process: the local IPv4 address (or,
    /// when none can be found, four bytes of the host name's hash), the low
    /// 16 bits of the process id and a fresh random value.
    #[must_use]
    pub fn new() -> Self {
        let pid = std::process::id();
        Self::with_prefix(host_ipv4(), (pid & 0xffff) as u16, random_u32(pid))
    }

    /// A generator with an explicit prefix, for tests and for callers that
    /// know their address.
    #[must_use]
    pub fn with_prefix(ip: [u8; 4], pid: u16, random: u32) -> Self {
        let mut prefix = [0u8; PREFIX_LEN];
        prefix[IP_OFFSET..PID_OFFSET].copy_from_slice(&ip);
        put_u16(&mut prefix, PID_OFFSET, pid);
        put_u32(&mut prefix, RANDOM_OFFSET, random);
        Self { prefix, state: AtomicU64::new(0) }
    }

    /// The next id, for a message created at `now_ms` (ms since the epoch;
    /// the store passes its `Clock::now_ms()`).
    pub fn next(&self, now_ms: u64) -> MessageId {
        self.id_of(self.reserve(now_ms, 1))
    }

    /// The next `n` ids, the same as `n` calls of [`MessageIdGenerator::next`]
    /// in a row would make, from a single atomic update (a batch send takes
    /// one per batch instead of one per message).
    pub fn next_n(&self, now_ms: u64, n: usize) -> impl Iterator<Item = MessageId> + '_ {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let start = if n == 0 { 0 } else { self.reserve(now_ms, n) };
        // A batch's ids share their millisecond (but for a counter wrap),
        // so the start of its month is worked out once per millisecond.
        let mut month = (u64::MAX, 0);
        (0..n).map(move |i| {
            let state = start.saturating_add(i);
            let ms = state >> 16;
            if ms != month.0 {
                month = (ms, month_start_ms(ms));
            }
            self.id_in_month(state, month.1)
        })
    }

    /// Takes `n >= 1` consecutive generator states; returns the first.
    fn reserve(&self, now_ms: u64, n: u64) -> u64 {
        let floor = now_ms.min(MAX_STATE_MS) << 16;
        // The first state after `prev`. `n` calls of `next` take it and the
        // `n - 1` states after it: each is one past the previous, which is
        // already at or above the floor.
        let first = |prev: u64| floor.max(prev.saturating_add(1));
        let last = |prev: u64| first(prev).saturating_add(n - 1);
        // The closure always returns Some, so both arms carry the previous state.
        let prev = match self.state.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(last(p))) {
            Ok(p) | Err(p) => p,
        };
        first(prev)
    }

    /// The id of generator state `state` (`ms << 16 | counter`).
    fn id_of(&self, state: u64) -> MessageId {
        self.id_in_month(state, month_start_ms(state >> 16))
    }

    /// [`MessageIdGenerator::id_of`], given the start of the month of the
    /// state's millisecond.
    fn id_in_month(&self, state: u64, month_start: u64) -> MessageId {
        let ms = state >> 16;
        let mut id = [0u8; ID_LEN];
        id[..PREFIX_LEN].copy_from_slice(&self.prefix);
        // Below one month of milliseconds (< 2^32), so the cast is lossless.
        put_u32(&mut id, TIME_OFFSET, (ms - month_start) as u32);
        put_u16(&mut id, COUNTER_OFFSET, (state & 0xffff) as u16);
        MessageId::from_bytes(id)
    }
}

/// The fields of a unique id, from [`parse_unique_id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniqueIdParts {
    /// IPv4 address of the producing host.
    pub ip: [u8; 4],
    /// Low 16 bits of the producer's process id.
    pub pid: u16,
    /// The generator's random value (RocketMQ: class-loader hash).
    pub random: u32,
    /// Milliseconds since the start of the month (UTC) the id was made in.
    pub ms_in_month: u32,
    /// Counter within the millisecond.
    pub counter: u16,
}

impl UniqueIdParts {
    /// When the id was made, assuming it was made in the month of `now_ms`
    /// or, if that would be after `now_ms`, in the month before (RocketMQ
    /// `MessageClientIDSetter.getNearlyTimeFromID`).
    #[must_use]
    pub fn timestamp_ms(&self, now_ms: u64) -> u64 {
        let this_month = month_start_ms(now_ms);
        let t = this_month + u64::from(self.ms_in_month);
        if t <= now_ms || this_month == 0 {
            t
        } else {
            month_start_ms(this_month - 1) + u64::from(self.ms_in_month)
        }
    }
}

/// Splits a unique id into its fields; `None` unless it is exactly 32 hex
/// characters (either case).
#[must_use]
pub fn parse_unique_id(id: &str) -> Option<UniqueIdParts> {
    let b: [u8; ID_LEN] = from_hex(id)?;
    Some(UniqueIdParts {
        ip: [b[0], b[1], b[2], b[3]],
        pid: get_u16(&b, PID_OFFSET),
        random: get_u32(&b, RANDOM_OFFSET),
        ms_in_month: get_u32(&b, TIME_OFFSET),
        counter: get_u16(&b, COUNTER_OFFSET),
    })
}

/// The offset id of the record at `offset` in a store reachable at
/// `host:port`.
///
/// ```
/// use mqstore::message::{decode_offset_msg_id, encode_offset_msg_id};
/// use mqstore::PhysicalOffset;
/// let id = encode_offset_msg_id([192, 168, 0, 1], 10911, PhysicalOffset(4096));
/// assert_eq!(id, "C0A8000100002A9F0000000000001000");
/// assert_eq!(decode_offset_msg_id(&id)?, ([192, 168, 0, 1], 10911, PhysicalOffset(4096)));
/// # Ok::<(), mqstore::Error>(())
/// ```
#[must_use]
// Inlined into the send loop, which calls it once per message (left to
// itself the compiler inlines it or not as unrelated code changes).
#[inline]
pub fn encode_offset_msg_id(host: [u8; 4], port: u32, offset: PhysicalOffset) -> MessageId {
    let mut b = [0u8; ID_LEN];
    b[HOST_OFFSET..PORT_OFFSET].copy_from_slice(&host);
    put_u32(&mut b, PORT_OFFSET, port);
    put_u64(&mut b, PHYSICAL_OFFSET_OFFSET, offset.0);
    MessageId::from_bytes(b)
}

/// Splits an offset id into store host, port and physical offset.
///
/// Fails with [`Error::InvalidArgument`] unless `id` is exactly 32 hex
/// characters (either case); RocketMQ's 56-character IPv6 form is not
/// supported.
pub fn decode_offset_msg_id(id: &str) -> Result<([u8; 4], u32, PhysicalOffset)> {
    let Some(b) = from_hex::<ID_LEN>(id) else {
        return Err(Error::InvalidArgument(format!(
            "offset message id {id:?} is not {UNIQUE_ID_HEX_LEN} hex characters"
        )));
    };
    let host = [b[0], b[1], b[2], b[3]];
    Ok((host, get_u32(&b, PORT_OFFSET), PhysicalOffset(get_u64(&b, PHYSICAL_OFFSET_OFFSET))))
}

/// Start (ms since the epoch) of the UTC month containing `ms`. RocketMQ
/// uses the JVM's local time zone; UTC keeps ids independent of the host's
/// settings.
pub(crate) fn month_start_ms(ms: u64) -> u64 {
    let days = ms / MS_PER_DAY;
    (days - (day_of_month(days) - 1)) * MS_PER_DAY
}

/// Day of the month (1-based) of the day `days` after 1970-01-01, by
/// Howard Hinnant's `civil_from_days`.
fn day_of_month(days: u64) -> u64 {
    let z = days + 719_468;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    doy - (153 * mp + 2) / 5 + 1
}

/// This host's IPv4 address as seen by its default route, else four bytes
/// of the host name's hash, else 127.0.0.1.
fn host_ipv4() -> [u8; 4] {
    route_ipv4().or_else(hostname_hash).unwrap_or([127, 0, 0, 1])
}

/// The source address the kernel picks for a public destination. A UDP
/// `connect` only selects a route; no packet is sent.
fn route_ipv4() -> Option<[u8; 4]> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    // 192.0.2.1 is TEST-NET-1 (RFC 5737): routable in form, never answered.
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip.octets()),
        _ => None,
    }
}

fn hostname_hash() -> Option<[u8; 4]> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let name = name.trim();
    (!name.is_empty()).then(|| java_string_hash(name).to_be_bytes())
}

/// A per-generator random value. `RandomState` is seeded from the OS once
/// per process and advanced on every call, so no random-number crate is
/// needed.
fn random_u32(pid: u32) -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(pid);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    (h.finish() >> 32) as u32
}

/// Decodes exactly `2 * N` hex characters; `None` for anything else.
fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    /// 2024-03-01T00:00:00Z, from `date -u -d 2024-03-01 +%s`.
    const MARCH_2024: u64 = 1_709_251_200_000;
    /// 2024-02-01T00:00:00Z.
    const FEB_2024: u64 = 1_706_745_600_000;

    /// Hex of every byte value, as `format!` spells it.
    #[test]
    fn hex_matches_format() {
        for first in (0..=255u8).step_by(ID_LEN) {
            let bytes: [u8; ID_LEN] = std::array::from_fn(|i| first + i as u8);
            let expected: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
            assert_eq!(MessageId::from_bytes(bytes), expected);
        }
    }

    #[test]
    fn layout_constants_are_pinned() {
        assert_eq!((PID_OFFSET, RANDOM_OFFSET, TIME_OFFSET, COUNTER_OFFSET), (4, 6, 10, 14));
        assert_eq!(COUNTER_OFFSET + 2, ID_LEN);
        assert_eq!((PORT_OFFSET, PHYSICAL_OFFSET_OFFSET, PHYSICAL_OFFSET_OFFSET + 8), (4, 8, ID_LEN));
    }

    #[test]
    fn month_start_handles_leap_years_and_boundaries() {
        assert_eq!(month_start_ms(MARCH_2024), MARCH_2024);
        assert_eq!(month_start_ms(MARCH_2024 - 1), FEB_2024); // 2024-02-29T23:59:59.999Z
        assert_eq!(month_start_ms(MARCH_2024 + 14 * MS_PER_DAY + 5), MARCH_2024);
        assert_eq!(month_start_ms(0), 0);
        assert_eq!(month_start_ms(31 * MS_PER_DAY), 31 * MS_PER_DAY); // 1970-02-01
                                                                      // Every month start of 1970..2100 maps to itself, the day before to the previous one.
        let mut start = 0u64;
        for _ in 0..(130 * 12) {
            let next = month_start_ms(start + 32 * MS_PER_DAY);
            assert!((28..=31).contains(&((next - start) / MS_PER_DAY)), "month at {start}");
            assert_eq!(month_start_ms(next - 1), start);
            start = next;
        }
    }

    #[test]
    fn unique_id_has_rocketmq_layout() {
        let g = MessageIdGenerator::with_prefix([127, 0, 0, 1], 0xABCD, 0x0102_0304);
        let id = g.next(MARCH_2024 + 3_600_000);
        assert_eq!(id, "7F000001ABCD010203040036EE800000");
        assert_eq!(id.len(), UNIQUE_ID_HEX_LEN);
        let p = parse_unique_id(&id).unwrap();
        assert_eq!(
            p,
            UniqueIdParts { ip: [127, 0, 0, 1], pid: 0xABCD, random: 0x0102_0304, ms_in_month: 3_600_000, counter: 0 }
        );
        assert_eq!(parse_unique_id(&id.to_lowercase()), Some(p));
        assert_eq!(p.timestamp_ms(MARCH_2024 + 7_200_000), MARCH_2024 + 3_600_000);
        // Seen early in the next month's first hour, it dates from the month before.
        assert_eq!(p.timestamp_ms(MARCH_2024 + 1_000), FEB_2024 + 3_600_000);
    }

    #[test]
    fn counter_advances_within_a_millisecond_and_restarts_after() {
        let g = MessageIdGenerator::with_prefix([1, 2, 3, 4], 1, 1);
        let parts = |id: MessageId| parse_unique_id(&id).map(|p| (p.ms_in_month, p.counter));
        assert_eq!(parts(g.next(MARCH_2024 + 5)), Some((5, 0)));
        assert_eq!(parts(g.next(MARCH_2024 + 5)), Some((5, 1)));
        assert_eq!(parts(g.next(MARCH_2024 + 9)), Some((9, 0)));
        // A clock step back does not repeat an id.
        assert_eq!(parts(g.next(MARCH_2024 + 2)), Some((9, 1)));
        // 65,536 ids in one millisecond borrow the next one.
        for _ in 2..=u16::MAX {
            g.next(MARCH_2024 + 9);
        }
        assert_eq!(parts(g.next(MARCH_2024 + 9)), Some((10, 0)));
    }

    /// A batch of ids is what as many single calls would have made.
    #[test]
    fn next_n_equals_repeated_next() {
        let (one, many) =
            (MessageIdGenerator::with_prefix([1, 2, 3, 4], 1, 1), MessageIdGenerator::with_prefix([1, 2, 3, 4], 1, 1));
        // Within a millisecond, across the counter's wrap, and after a
        // clock step back.
        for (now, n) in [
            (MARCH_2024 + 5, 3),
            (MARCH_2024 + 5, 0),
            (MARCH_2024 + 6, 70_000),
            (MARCH_2024 + 2, 4),
            (MARCH_2024 + 9, 1),
        ] {
            let singles: Vec<MessageId> = (0..n).map(|_| one.next(now)).collect();
            assert_eq!(many.next_n(now, n).collect::<Vec<_>>(), singles, "{now} {n}");
        }
        assert_eq!(one.next(MARCH_2024 + 9), many.next(MARCH_2024 + 9));
    }

    /// The same when a batch's counter wraps into the next month (its ids
    /// count milliseconds from a different month start).
    #[test]
    fn next_n_equals_repeated_next_across_a_month() {
        let (one, many) =
            (MessageIdGenerator::with_prefix([1, 2, 3, 4], 1, 1), MessageIdGenerator::with_prefix([1, 2, 3, 4], 1, 1));
        let singles: Vec<MessageId> = (0..70_000).map(|_| one.next(MARCH_2024 - 1)).collect();
        let batch: Vec<MessageId> = many.next_n(MARCH_2024 - 1, 70_000).collect();
        assert_eq!(batch, singles);
        let parts = |id: &MessageId| parse_unique_id(id).map(|p| (p.ms_in_month, p.counter));
        assert_eq!(parts(&batch[65_536]), Some((0, 0)));
        assert_ne!(parts(&batch[65_535]).map(|p| p.0), Some(0));
    }

    #[test]
    fn ids_are_unique_across_threads() {
        let g = Arc::new(MessageIdGenerator::new());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let g = Arc::clone(&g);
                // Half the threads share one frozen millisecond, the rest a moving clock.
                std::thread::spawn(move || {
                    (0..12_500u64)
                        .map(|i| g.next(MARCH_2024 + if t % 2 == 0 { 0 } else { i / 100 }))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for t in threads {
            for id in t.join().unwrap() {
                assert_eq!(id.len(), UNIQUE_ID_HEX_LEN);
                assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)), "{id}");
                assert!(seen.insert(id), "duplicate id {id}");
            }
        }
        assert_eq!(seen.len(), 100_000);
    }

    #[test]
    fn generators_get_distinct_prefixes() {
        let (a, b) = (MessageIdGenerator::new().next(MARCH_2024), MessageIdGenerator::default().next(MARCH_2024));
        assert_eq!(a[..12], b[..12], "same host and pid");
        assert_ne!(a[12..20], b[12..20], "random values differ");
        let pid = parse_unique_id(&a).map(|p| p.pid);
        assert_eq!(pid, Some((std::process::id() & 0xffff) as u16));
    }

    #[test]
    fn parse_unique_id_rejects_malformed_input() {
        let good = "7F000001ABCD010203040036EE800000";
        let inputs = [
            String::new(),
            good[1..].to_string(),
            format!("{good}0"),
            format!("{}G", &good[..31]),
            format!("{}é", &good[..30]),
        ];
        for bad in &inputs {
            assert_eq!(parse_unique_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn offset_ids_round_trip() {
        for (host, port, off) in
            [([0, 0, 0, 0], 0, 0), ([255; 4], u32::MAX, u64::MAX), ([10, 1, 2, 3], 10_911, 1 << 40)]
        {
            let id = encode_offset_msg_id(host, port, PhysicalOffset(off));
            assert_eq!(id.len(), UNIQUE_ID_HEX_LEN);
            assert_eq!(decode_offset_msg_id(&id).unwrap(), (host, port, PhysicalOffset(off)));
            assert_eq!(decode_offset_msg_id(&id.to_lowercase()).unwrap(), (host, port, PhysicalOffset(off)));
        }
        assert_eq!(encode_offset_msg_id([255; 4], u32::MAX, PhysicalOffset(u64::MAX)), "F".repeat(32));
    }

    #[test]
    fn offset_id_decode_rejects_malformed_input() {
        let good = encode_offset_msg_id([1, 2, 3, 4], 5, PhysicalOffset(6));
        let ipv6 = "0".repeat(56);
        let inputs = [
            String::new(),
            good[..31].to_string(),
            format!("{good}0"),
            ipv6,
            format!("{}Z", &good[..31]),
            format!("{} ", &good[..31]),
            format!("+{}", &good[1..]),
            format!("{}é", &good[..30]),
            format!("{}\u{1F600}", &good[..28]),
        ];
        for bad in &inputs {
            assert!(matches!(decode_offset_msg_id(bad), Err(Error::InvalidArgument(_))), "{bad:?}");
        }
    }
}
