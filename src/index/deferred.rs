//! Index keys waiting to be written into the index files.
//!
//! Dispatch runs on the sending thread (Async flush), and writing an index
//! entry is the dearest part of it: Java's string hash and a CRC of the
//! key, an entry CRC, and a store into a random hash slot of a mapped file
//! whose pages are faulted in as they are first written (about 5 us per
//! page here). Dispatch therefore only copies each `<topic>#<key>` here,
//! and the `mqstore:dispatch` thread writes them into the files on the
//! other core (RocketMQ's `IndexService` is likewise fed off the sending
//! path, by `ReputMessageService`).
//!
//! Invariants: keys wait in commit-log order (dispatch rounds are
//! serialised and run in log order), and they are written in that order
//! (see [`super::Index::drain`]). Everything that reads or persists the
//! index writes the waiting keys first (lookups, `flush`, `put`, `stats`),
//! so a lookup sees every dispatched record, as before, and the dispatch
//! checkpoint, written after `flush`, never covers a key that is not in
//! the files.

/// Keys waiting beyond this many, or beyond [`MAX_WAITING_BYTES`] of key
/// text, are written by the thread that defers the next one, so the
/// backlog stays bounded when the dispatch thread falls behind (about
/// 5 MiB with 40-byte keys, and as much again for the batch being
/// written).
pub(crate) const MAX_WAITING: usize = 1 << 16;
/// See [`MAX_WAITING`]: the bound on the text of the waiting keys, for
/// records with long keys.
pub(crate) const MAX_WAITING_BYTES: usize = 8 << 20;
/// Buffers kept after a drain, at most: a backlog that grew past them
/// (the dispatch thread fell behind) does not stay allocated.
const KEEP_BYTES: usize = 1 << 20;
/// See [`KEEP_BYTES`].
const KEEP_KEYS: usize = 1 << 14;
/// A dispatcher that brings the backlog to this many keys asks the
/// dispatch thread to write them (one wake-up per this many keys).
pub(crate) const WAKE_AT: usize = 2048;

/// One waiting key: it ends at `end` in [`Deferred::text`] (and starts
/// where the previous one ends), for the record at `phy` stored at `ts`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitingKey {
    end: usize,
    pub(crate) phy: u64,
    pub(crate) ts: u64,
}

/// Keys waiting to be indexed, in commit-log order.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    /// Every waiting `<topic>#<key>`, back to back.
    text: String,
    keys: Vec<WaitingKey>,
}

impl Deferred {
    /// Keys waiting.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the backlog reached [`MAX_WAITING`] keys or
    /// [`MAX_WAITING_BYTES`] of text.
    pub(crate) fn is_full(&self) -> bool {
        self.keys.len() >= MAX_WAITING || self.text.len() >= MAX_WAITING_BYTES
    }

    /// Whether none waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Appends `<topic>#<key>` for the record at `phy` stored at `ts`.
    pub(crate) fn push(&mut self, topic: &str, key: &str, phy: u64, ts: u64) {
        self.text.push_str(topic);
        self.text.push('#');
        self.text.push_str(key);
        self.keys.push(WaitingKey { end: self.text.len(), phy, ts });
    }

    /// Key `i` and its record, in the order pushed.
    pub(crate) fn get(&self, i: usize) -> Option<(&str, WaitingKey)> {
        let k = *self.keys.get(i)?;
        let start = match i.checked_sub(1) {
            Some(p) => self.keys.get(p)?.end,
            None => 0,
        };
        Some((self.text.get(start..k.end)?, k))
    }

    /// Empties it, keeping its buffers up to [`KEEP_BYTES`] and
    /// [`KEEP_KEYS`] (so the usual backlog reuses them).
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.keys.clear();
        self.text.shrink_to(KEEP_BYTES);
        self.keys.shrink_to(KEEP_KEYS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_back_in_order_with_their_records() {
        let mut d = Deferred::default();
        assert!(d.is_empty());
        d.push("orders", "7F00", 64, 1_000);
        d.push("orders", "", 64, 1_000);
        d.push("t", "é", 300, 2_000);
        assert_eq!(d.len(), 3);
        let got: Vec<_> = (0..d.len()).filter_map(|i| d.get(i)).map(|(k, w)| (k.to_string(), w.phy, w.ts)).collect();
        assert_eq!(
            got,
            [
                ("orders#7F00".to_string(), 64, 1_000),
                ("orders#".to_string(), 64, 1_000),
                ("t#é".to_string(), 300, 2_000)
            ]
        );
        assert!(d.get(3).is_none());
        d.clear();
        assert!(d.is_empty() && d.get(0).is_none());
        // A large backlog does not keep its memory once cleared.
        let long = "k".repeat(1000);
        for i in 0..(2 * KEEP_KEYS as u64) {
            d.push("t", &long, i, i);
        }
        assert!(d.text.capacity() > KEEP_BYTES && d.keys.capacity() > KEEP_KEYS);
        d.clear();
        assert!(d.text.capacity() <= KEEP_BYTES && d.keys.capacity() <= KEEP_KEYS);
    }
}
