//! What one run does (a workload), what it measured (a sample), and the
//! variants that run it.

use std::time::Duration;

/// One workload: `messages` bodies of `body_size` bytes, one producer, one
/// topic/queue; a sync point every `sync_every` messages (durable mode)
/// and one final flush that makes everything durable, inside the timing.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Name in the tables, e.g. `128B x2M`.
    pub name: String,
    /// Messages appended.
    pub messages: usize,
    /// Bytes per body.
    pub body_size: usize,
    /// A sync point after every this many messages (besides the final one).
    pub sync_every: Option<usize>,
}

impl Workload {
    /// Whether a sync point follows message number `done` (1-based); the
    /// final one is separate. Same rule as `benches/append.rs`.
    pub fn is_sync_point(&self, done: usize) -> bool {
        matches!(self.sync_every, Some(k) if done.is_multiple_of(k) && done < self.messages)
    }

    /// Messages from `done` up to the next sync point or the end.
    pub fn until_sync_point(&self, done: usize) -> usize {
        let end = match self.sync_every {
            Some(k) => ((done / k) + 1) * k,
            None => self.messages,
        };
        end.min(self.messages) - done
    }

    /// Payload bytes of the whole workload.
    pub fn payload_bytes(&self) -> f64 {
        (self.messages * self.body_size) as f64
    }
}

/// What one run of a variant measured.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Appends + intermediate sync points + the final flush.
    pub total: Duration,
    /// Everything before the final flush (equal to `total` when the last
    /// write was itself durable).
    pub append_only: Duration,
    /// Reading every message back (after the write, same handle, untimed
    /// wait for dispatch for mqstore).
    pub read: Duration,
    /// Messages the read-back found and verified.
    pub read_count: usize,
    /// Allocated bytes of the run's directory after the final flush.
    pub disk_bytes: u64,
}

impl Sample {
    /// Whether the read-back found every message.
    pub fn ok(&self, w: &Workload) -> bool {
        self.read_count == w.messages
    }
}

/// The peers of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `BufWriter` over a `File` (benches/append.rs).
    RawFile,
    /// Sparse 1 GiB file mapped with memmap2 (benches/append.rs).
    RawMmap,
    /// `Store`, Async flush, `send_batch` of 256 (cut at sync points),
    /// `commit_log().flush()` at sync points and at the end.
    Mqstore,
    /// `Store`, Async flush, one `send` per message, flushes as above.
    MqstoreSend,
    /// `Store`, Sync flush, one `send_batch` per sync interval: every batch
    /// returns durable (durable workloads only).
    MqstoreSyncBatch,
    /// The commit log alone (`CommitLog::append` per message, Async flush,
    /// `flush()` at sync points and at the end), as `benches/append.rs`
    /// drives it: no consume queue, no index, no message ids.
    MqstoreLog,
    /// The commit log alone in `FlushMode::Sync`: one `append_batch` per
    /// sync interval, which returns durable (staged, then one `pwrite` +
    /// `fdatasync`); durable workloads only.
    MqstoreLogSyncBatch,
    /// raft-engine 0.4.2, one region, `LogBatch` of 1,000 entries (cut at
    /// sync points), as the peer harness of `performance.md` section 2a.
    RaftEngine,
}

impl Variant {
    /// Name in the tables and the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Variant::RawFile => "raw-file",
            Variant::RawMmap => "raw-mmap",
            Variant::Mqstore => "mqstore",
            Variant::MqstoreSend => "mqstore-send",
            Variant::MqstoreSyncBatch => "mqstore-sync-batch",
            Variant::MqstoreLog => "mqstore-log",
            Variant::MqstoreLogSyncBatch => "mqstore-log-sync-batch",
            Variant::RaftEngine => "raft-engine",
        }
    }

    /// Whether this is one of the store's own variants.
    pub fn is_mqstore(self) -> bool {
        matches!(
            self,
            Variant::Mqstore
                | Variant::MqstoreSend
                | Variant::MqstoreSyncBatch
                | Variant::MqstoreLog
                | Variant::MqstoreLogSyncBatch
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Workload;

    #[test]
    fn sync_points_cut_batches() {
        let w = Workload { name: "t".into(), messages: 2_500, body_size: 8, sync_every: Some(1_000) };
        assert_eq!(w.until_sync_point(0), 1_000);
        assert_eq!(w.until_sync_point(768), 232);
        assert_eq!(w.until_sync_point(2_000), 500);
        assert!(w.is_sync_point(1_000) && w.is_sync_point(2_000));
        assert!(!w.is_sync_point(2_500) && !w.is_sync_point(999));
        // The last message is followed by the final flush, not a sync point.
        let even = Workload { messages: 2_000, ..w.clone() };
        assert!(!even.is_sync_point(2_000) && even.is_sync_point(1_000));
        let f = Workload { sync_every: None, ..w.clone() };
        assert_eq!(f.until_sync_point(100), 2_400);
        assert!(!f.is_sync_point(1_000));
    }
}
