//! [`TimerWheel`]: a hierarchical timing wheel that holds items until their
//! due time. Pure and in memory: the store persists entries itself and
//! re-inserts them on recovery.
//!
//! Time is cut into ticks of `tick_ms`; a tick is only a bucket, every item
//! keeps its exact due time in milliseconds. Eleven levels of 64 slots cover
//! every `u64` tick (level `l` slots are `64^l` ticks wide; `6 * 11 >= 64`),
//! so no delay is capped and no overflow list is needed. An item sits at the
//! level of the highest bit in which its tick differs from the current tick
//! (the Linux and Tokio wheels' rule), so each level only holds items inside
//! the current block of the level above, and every occupied slot starts
//! after the current tick. Advancing jumps from one occupied slot's start to
//! the next, dropping the slot's items to lower levels (cascade); the cost is
//! the items moved plus a scan of 11 occupancy masks per occupied slot,
//! never a step per elapsed tick.
//!
//! Items whose tick has been reached but whose millisecond has not, and
//! items inserted with a due time already reached, wait in a heap ordered
//! by (due time, insertion order).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;

/// Bits of tick per level: 64 slots.
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
/// Enough levels for the top one to span every `u64` tick.
const LEVELS: usize = 64_usize.div_ceil(SLOT_BITS as usize);

/// A scheduled item; ordered by (due time, insertion sequence) only.
struct Entry<T> {
    due_ms: u64,
    seq: u64,
    item: T,
}

impl<T> Entry<T> {
    fn key(&self) -> (u64, u64) {
        (self.due_ms, self.seq)
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// One slot: its entries and their earliest due time (valid while
/// `entries` is not empty; slots are only ever emptied whole).
struct Slot<T> {
    entries: Vec<Entry<T>>,
    min_due_ms: u64,
}

struct Level<T> {
    /// Bit `s` set iff `slots[s]` is not empty.
    occupied: u64,
    slots: [Slot<T>; SLOTS],
}

/// A hierarchical timing wheel of items due at absolute times in
/// milliseconds, with no cap on how far ahead an item may be.
///
/// [`advance`](Self::advance) never returns an item before its due time and
/// returns it at the first advance whose time has reached it, in due order
/// (ties in insertion order). A clock that jumps forward costs work per
/// occupied slot, not per elapsed tick; a clock that steps back moves
/// nothing (items keep their absolute due times).
///
/// ```
/// use mqstore::retry::TimerWheel;
/// let mut wheel = TimerWheel::new(10, 1_000);
/// wheel.insert(1_000 + 7_200_000, "2h");
/// wheel.insert(1_005, "5ms");
/// assert_eq!(wheel.next_due(), Some(1_005));
/// assert!(wheel.advance(1_004).is_empty());
/// assert_eq!(wheel.advance(1_005), vec![(1_005, "5ms")]);
/// // A jump of hours is one call, cascading level by level.
/// assert_eq!(wheel.advance(10_000_000), vec![(7_201_000, "2h")]);
/// assert!(wheel.is_empty());
/// ```
pub struct TimerWheel<T> {
    tick_ms: u64,
    /// Latest time advanced to (a high-water mark: steps back are ignored).
    now_ms: u64,
    /// `now_ms / tick_ms`; every wheel slot holds only later ticks.
    elapsed: u64,
    levels: Box<[Level<T>; LEVELS]>,
    /// Entries whose tick is at or before `elapsed`, not yet returned.
    near: BinaryHeap<Reverse<Entry<T>>>,
    len: usize,
    next_seq: u64,
    #[cfg(test)]
    work: Work,
}

/// Internal steps, counted so tests can bound them.
#[cfg(test)]
#[derive(Debug, Default, Clone, Copy)]
struct Work {
    /// Slots emptied by `advance`.
    slots: u64,
    /// Entries moved to a lower level by a cascade.
    moves: u64,
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("tick_ms", &self.tick_ms)
            .field("now_ms", &self.now_ms)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Level for an entry at `tick` when the wheel is at `elapsed < tick`: the
/// level of the highest differing bit.
fn level_for(elapsed: u64, tick: u64) -> usize {
    let masked = (elapsed ^ tick) | SLOT_MASK;
    let significant = 63 - masked.leading_zeros();
    (significant / SLOT_BITS) as usize
}

/// Slot of `tick` at `level`.
fn slot_for(tick: u64, level: usize) -> usize {
    ((tick >> (SLOT_BITS * level as u32)) & SLOT_MASK) as usize
}

/// First tick of `slot` at `level` within the block (of the level above)
/// that holds `elapsed`. No overflow: the result only replaces low bits.
fn slot_start(elapsed: u64, level: usize, slot: usize) -> u64 {
    let shift = SLOT_BITS * level as u32;
    let block_mask = 1_u64.checked_shl(shift + SLOT_BITS).map_or(u64::MAX, |r| r - 1);
    (elapsed & !block_mask) | ((slot as u64) << shift)
}

impl<T> TimerWheel<T> {
    /// An empty wheel at time `now_ms` with a resolution of `tick_ms`
    /// (e.g. 10 ms; 0 is taken as 1). The resolution only sizes buckets:
    /// items are still returned at their exact due millisecond.
    #[must_use]
    pub fn new(tick_ms: u64, now_ms: u64) -> Self {
        let tick_ms = tick_ms.max(1);
        let level =
            || Level { occupied: 0, slots: std::array::from_fn(|_| Slot { entries: Vec::new(), min_due_ms: 0 }) };
        Self {
            tick_ms,
            now_ms,
            elapsed: now_ms / tick_ms,
            levels: Box::new(std::array::from_fn(|_| level())),
            near: BinaryHeap::new(),
            len: 0,
            next_seq: 0,
            #[cfg(test)]
            work: Work::default(),
        }
    }

    /// Schedules `item` due at `due_ms`, any time at all: an item whose due
    /// time the wheel has already reached is returned by the next
    /// [`advance`](Self::advance) to a time at or after `due_ms`. O(1)
    /// unless already due (then O(log n) in the items waiting to be returned).
    pub fn insert(&mut self, due_ms: u64, item: T) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        self.len = self.len.saturating_add(1);
        self.place(Entry { due_ms, seq, item });
    }

    /// Advances the wheel to `now_ms` and returns every item due at or
    /// before `now_ms`, in due order (ties in insertion order). Never
    /// returns an item early. A forward jump of any size costs work per
    /// occupied slot and item moved; a `now_ms` earlier than a previous one
    /// moves nothing and returns only items due by `now_ms`.
    pub fn advance(&mut self, now_ms: u64) -> Vec<(u64, T)> {
        let mut reached = Vec::new();
        if now_ms > self.now_ms {
            self.now_ms = now_ms;
            self.cascade_to(now_ms / self.tick_ms, &mut reached);
        }
        // `reached` holds level-0 entries with ticks up to the current one;
        // those of the current tick may be due later within it.
        let mut due = Vec::with_capacity(reached.len());
        for e in reached {
            if e.due_ms <= now_ms {
                due.push(e);
            } else {
                self.near.push(Reverse(e));
            }
        }
        while self.near.peek().is_some_and(|Reverse(e)| e.due_ms <= now_ms) {
            if let Some(Reverse(e)) = self.near.pop() {
                due.push(e);
            }
        }
        due.sort_unstable_by_key(Entry::key);
        self.len = self.len.saturating_sub(due.len());
        due.into_iter().map(|e| (e.due_ms, e.item)).collect()
    }

    /// Due time of the earliest pending item, exactly, or `None` when empty
    /// (for the delivery thread's sleep). O(levels).
    #[must_use]
    pub fn next_due(&self) -> Option<u64> {
        let near = self.near.peek().map(|Reverse(e)| e.due_ms);
        // The lowest occupied level's first occupied slot holds the earliest
        // ticks in the wheel (see the module docs).
        let wheel = self.levels.iter().find(|l| l.occupied != 0).and_then(|l| {
            let slot = l.slots.get(l.occupied.trailing_zeros() as usize)?;
            Some(slot.min_due_ms)
        });
        near.into_iter().chain(wheel).min()
    }

    /// Number of items not yet returned.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no item is pending.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Puts `entry` in the slot for its tick, or in `near` when its tick has
    /// been reached.
    fn place(&mut self, entry: Entry<T>) {
        let tick = entry.due_ms / self.tick_ms;
        if tick <= self.elapsed {
            self.near.push(Reverse(entry));
            return;
        }
        let level = level_for(self.elapsed, tick);
        let slot_index = slot_for(tick, level);
        let lvl = &mut self.levels[level];
        let slot = &mut lvl.slots[slot_index];
        if slot.entries.is_empty() || entry.due_ms < slot.min_due_ms {
            slot.min_due_ms = entry.due_ms;
        }
        slot.entries.push(entry);
        lvl.occupied |= 1 << slot_index;
    }

    /// First occupied slot in time order: (level, slot, first tick).
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        self.levels.iter().enumerate().find(|(_, l)| l.occupied != 0).map(|(level, l)| {
            let slot = l.occupied.trailing_zeros() as usize;
            debug_assert!(slot > slot_for(self.elapsed, level), "slot not after the current tick");
            (level, slot, slot_start(self.elapsed, level, slot))
        })
    }

    /// Moves the wheel to tick `target`, visiting only occupied slots that
    /// start by then: higher-level slots cascade into lower levels, level-0
    /// slots' entries go to `reached`.
    fn cascade_to(&mut self, target: u64, reached: &mut Vec<Entry<T>>) {
        while let Some((level, slot, start)) = self.next_expiration() {
            if start > target {
                break;
            }
            self.elapsed = start;
            let lvl = &mut self.levels[level];
            lvl.occupied &= !(1 << slot);
            let entries = std::mem::take(&mut lvl.slots[slot].entries);
            #[cfg(test)]
            {
                self.work.slots += 1;
                if level > 0 {
                    self.work.moves += entries.len() as u64;
                }
            }
            if level == 0 {
                reached.extend(entries);
            } else {
                for e in entries {
                    self.place(e);
                }
            }
        }
        self.elapsed = self.elapsed.max(target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const SEC: u64 = 1_000;
    const MIN: u64 = 60 * SEC;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;

    /// xorshift64*: deterministic, seedable, no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    /// A delay drawn from ms to 30 days, with the exact values that matter.
    fn random_due(rng: &mut XorShift, now: u64, dues: &[u64]) -> u64 {
        match rng.below(10) {
            0 => now + rng.below(1_000),
            1 => now + rng.below(MIN),
            2 => now + rng.below(2 * HOUR),
            3 => now + 2 * HOUR,
            4 => now + 30 * DAY,
            5 => now + rng.below(30 * DAY),
            6 => now.saturating_sub(rng.below(HOUR)),
            7 => now,
            8 if !dues.is_empty() => dues[rng.below(dues.len() as u64) as usize],
            _ => now + rng.below(10 * SEC),
        }
    }

    /// A clock step: mostly small, some minutes, hour and day jumps, and
    /// backward steps.
    fn random_step(rng: &mut XorShift, clock: u64) -> u64 {
        match rng.below(20) {
            0..=11 => clock + rng.below(50),
            12..=15 => clock + rng.below(10 * MIN),
            16 => clock + HOUR + rng.below(47 * HOUR),
            17 => clock + DAY + rng.below(40 * DAY),
            _ => clock.saturating_sub(rng.below(2 * HOUR)),
        }
    }

    /// Runs `total` inserts interleaved with random advances and checks
    /// every advance against a sorted model: exactly the items due by then,
    /// in (due, insertion) order, so none early, late, lost or repeated.
    fn check_random_schedule(seed: u64, total: u64, tick_ms: u64) {
        let mut rng = XorShift(seed);
        let start = 1_700_000_000_000 + rng.below(DAY);
        let mut clock = start;
        let mut wheel = TimerWheel::new(tick_ms, clock);
        let mut model: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        let mut dues = Vec::new();
        let mut inserted = 0;
        let mut delivered = 0;
        let mut advances = 0;
        while inserted < total || !model.is_empty() {
            let batch = if inserted < total { rng.below(50).min(total - inserted) } else { 0 };
            for _ in 0..batch {
                let due = random_due(&mut rng, clock, &dues);
                dues.push(due);
                wheel.insert(due, inserted);
                model.insert((due, inserted), inserted);
                inserted += 1;
            }
            assert_eq!(wheel.len(), model.len(), "seed {seed}");
            assert_eq!(wheel.next_due(), model.keys().next().map(|k| k.0), "seed {seed} at {clock}");
            clock = if inserted < total { random_step(&mut rng, clock) } else { clock + rng.below(10 * DAY) };
            let got = wheel.advance(clock);
            let later = model.split_off(&(clock.saturating_add(1), 0));
            let want: Vec<(u64, u64)> =
                std::mem::replace(&mut model, later).into_iter().map(|((d, _), i)| (d, i)).collect();
            assert_eq!(got, want, "seed {seed} advance {advances} to {clock}");
            delivered += got.len() as u64;
            advances += 1;
        }
        assert_eq!(delivered, total);
        assert!(wheel.is_empty() && wheel.next_due().is_none());
    }

    #[test]
    fn random_schedule_delivers_each_item_once_on_time_in_order() {
        check_random_schedule(0x9E37_79B9_7F4A_7C15, 100_000, 10);
        for seed in 1..=4 {
            check_random_schedule(seed, 10_000, [1, 7, 10, 1_000][seed as usize - 1]);
        }
    }

    #[test]
    fn equal_due_items_keep_insertion_order_across_cascades() {
        let mut wheel = TimerWheel::new(10, 0);
        let due = 2 * HOUR + 5;
        wheel.insert(due, 'a'); // high level, cascades down
        wheel.insert(due, 'b');
        assert!(wheel.advance(HOUR).is_empty());
        wheel.insert(due, 'c'); // placed lower after the cascade
        assert!(wheel.advance(due - 1).is_empty());
        wheel.insert(due, 'd'); // in the current tick: waits in `near`
        wheel.insert(due - 3, 'z'); // already due
        assert_eq!(wheel.advance(due), vec![(due - 3, 'z'), (due, 'a'), (due, 'b'), (due, 'c'), (due, 'd')]);
    }

    #[test]
    fn items_within_a_tick_are_returned_at_their_millisecond() {
        let mut wheel = TimerWheel::new(1_000, 0);
        wheel.insert(1_500, 2);
        wheel.insert(1_200, 1);
        assert_eq!(wheel.next_due(), Some(1_200));
        assert!(wheel.advance(1_100).is_empty());
        assert_eq!(wheel.next_due(), Some(1_200));
        assert_eq!(wheel.advance(1_200), vec![(1_200, 1)]);
        assert_eq!(wheel.next_due(), Some(1_500));
        assert!(wheel.advance(1_499).is_empty());
        assert_eq!(wheel.advance(1_500), vec![(1_500, 2)]);
    }

    #[test]
    fn a_two_hour_item_takes_a_few_steps_in_one_jump() {
        let start = 1_700_000_000_000;
        let mut wheel = TimerWheel::new(10, start);
        wheel.insert(start + 2 * HOUR, ());
        assert!(wheel.advance(start + 2 * HOUR - 1).is_empty());
        assert_eq!(wheel.advance(start + 2 * HOUR), vec![(start + 2 * HOUR, ())]);
        // 720,000 ticks elapsed; one slot per level visited, at most.
        assert!(wheel.work.slots <= LEVELS as u64, "{:?}", wheel.work);
        assert!(wheel.work.moves < LEVELS as u64, "{:?}", wheel.work);

        let mut wheel = TimerWheel::new(10, start);
        wheel.insert(start + 30 * DAY, ());
        assert_eq!(wheel.advance(start + 365 * DAY).len(), 1);
        assert!(wheel.work.slots <= LEVELS as u64, "{:?}", wheel.work);
    }

    #[test]
    fn jumps_cost_work_per_item_not_per_tick() {
        let start = 1_700_000_000_000;
        let mut wheel = TimerWheel::new(10, start);
        assert!(wheel.advance(start + 400 * DAY).is_empty());
        assert_eq!(wheel.work.slots, 0);

        let mut rng = XorShift(7);
        let n = 10_000;
        for i in 0..n {
            wheel.insert(start + 400 * DAY + rng.below(30 * DAY), i);
        }
        let got = wheel.advance(start + 431 * DAY);
        assert_eq!(got.len(), n as usize);
        assert!(got.windows(2).all(|w| w[0].0 <= w[1].0));
        // Each entry moves down at most once per level; each slot emptied
        // held at least one entry.
        assert!(wheel.work.moves <= n * LEVELS as u64, "{:?}", wheel.work);
        assert!(wheel.work.slots <= n * LEVELS as u64, "{:?}", wheel.work);
    }

    #[test]
    fn a_clock_stepping_back_moves_nothing_and_returns_nothing_early() {
        let t = 1_700_000_000_000;
        let mut wheel = TimerWheel::new(10, t);
        wheel.insert(t + 100, "a");
        assert!(wheel.advance(t + 50).is_empty());
        assert!(wheel.advance(t - HOUR).is_empty());
        assert_eq!(wheel.next_due(), Some(t + 100));
        // Inserted while the clock reads an hour back: due before the
        // wheel's high-water mark, but not before its own time.
        wheel.insert(t - HOUR + 10 * SEC, "b");
        wheel.insert(t - HOUR - 1, "past");
        assert_eq!(wheel.next_due(), Some(t - HOUR - 1));
        assert_eq!(wheel.advance(t - HOUR), vec![(t - HOUR - 1, "past")]);
        assert!(wheel.advance(t - HOUR + 10 * SEC - 1).is_empty());
        assert_eq!(wheel.advance(t - HOUR + 10 * SEC), vec![(t - HOUR + 10 * SEC, "b")]);
        assert!(wheel.advance(t + 99).is_empty());
        assert_eq!(wheel.advance(t + 100), vec![(t + 100, "a")]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn due_times_near_u64_max_do_not_overflow() {
        for tick in [0, 1, 10, 1_000, u64::MAX / 3, u64::MAX] {
            let mut wheel = TimerWheel::new(tick, 0);
            wheel.insert(u64::MAX, 3);
            wheel.insert(u64::MAX - 1, 2);
            wheel.insert(u64::MAX / 2, 1);
            wheel.insert(0, 0);
            assert_eq!(wheel.next_due(), Some(0));
            assert_eq!(wheel.advance(1), vec![(0, 0)], "tick {tick}");
            assert_eq!(wheel.next_due(), Some(u64::MAX / 2));
            assert_eq!(wheel.advance(u64::MAX / 2), vec![(u64::MAX / 2, 1)], "tick {tick}");
            assert!(wheel.advance(u64::MAX - 2).is_empty(), "tick {tick}");
            assert_eq!(wheel.advance(u64::MAX), vec![(u64::MAX - 1, 2), (u64::MAX, 3)], "tick {tick}");
            assert!(wheel.advance(u64::MAX).is_empty());
            wheel.insert(u64::MAX, 4);
            assert_eq!(wheel.advance(u64::MAX), vec![(u64::MAX, 4)]);
            assert!(wheel.is_empty());
        }
        let mut wheel = TimerWheel::new(10, u64::MAX - 5);
        wheel.insert(u64::MAX, 'b');
        wheel.insert(u64::MAX - 3, 'a');
        assert_eq!(wheel.advance(u64::MAX), vec![(u64::MAX - 3, 'a'), (u64::MAX, 'b')]);
    }

    #[test]
    fn empty_wheel_reports_nothing() {
        let mut wheel: TimerWheel<u8> = TimerWheel::new(10, 5);
        assert!(wheel.is_empty());
        assert_eq!(wheel.len(), 0);
        assert_eq!(wheel.next_due(), None);
        assert!(wheel.advance(u64::MAX).is_empty());
        assert!(format!("{wheel:?}").starts_with("TimerWheel"));
    }

    /// Throughput: `cargo test --release --lib retry::wheel -- --ignored --nocapture`.
    #[test]
    #[ignore = "micro-benchmark; run in release"]
    fn throughput_one_million() {
        use std::time::Instant;
        let n = 1_000_000_u64;
        let start = 1_700_000_000_000;
        let levels = [1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200];
        let mut rng = XorShift(42);
        let dues: Vec<u64> = (0..n).map(|i| start + i / 500 + levels[rng.below(18) as usize] * SEC).collect();
        for (label, step_ms) in [("10 ms steps", 10), ("one jump", 3 * HOUR)] {
            let mut wheel = TimerWheel::new(10, start);
            let t0 = Instant::now();
            for (i, &d) in dues.iter().enumerate() {
                wheel.insert(d, i);
            }
            let inserted = t0.elapsed();
            let t1 = Instant::now();
            let (mut now, mut got) = (start, 0);
            while !wheel.is_empty() {
                now += step_ms;
                got += wheel.advance(now).len();
            }
            let advanced = t1.elapsed();
            assert_eq!(got, n as usize);
            println!(
                "{label}: insert {:.1} M/s ({inserted:?}), advance {:.1} M/s ({advanced:?}), {:?}",
                n as f64 / inserted.as_secs_f64() / 1e6,
                n as f64 / advanced.as_secs_f64() / 1e6,
                wheel.work
            );
        }
    }
}
