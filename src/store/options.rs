//! [`StoreOptions`]: every knob of a [`Store`](super::Store) with its
//! default, validated when the store opens (the error names the field).

use crate::commitlog::{CommitLogOptions, FlushMode};
use crate::consumequeue::DEFAULT_UNITS_PER_FILE;
use crate::error::{Error, Result};
use crate::index::IndexFileSize;
use crate::message::MessageLimits;
use crate::retry::DelayLevels;
use std::time::Duration;

/// Options for [`Store::open`](super::Store::open).
///
/// ```
/// use mqstore::commitlog::FlushMode;
/// use mqstore::store::StoreOptions;
/// let opts = StoreOptions::default().flush_mode(FlushMode::Sync).max_body_size(1 << 20);
/// assert_eq!(opts.commit_log().get_flush_mode(), FlushMode::Sync);
/// ```
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub(crate) commit_log: CommitLogOptions,
    pub(crate) limits: MessageLimits,
    pub(crate) cq_units_per_file: u64,
    pub(crate) offset_persist_interval: Duration,
    pub(crate) default_queues: u32,
    pub(crate) async_send_threads: usize,
    pub(crate) async_send_backlog: usize,
    pub(crate) delay_levels: DelayLevels,
    pub(crate) delay_poll_interval: Duration,
    pub(crate) index_file_size: IndexFileSize,
    pub(crate) replication: crate::replication::ReplicationOptions,
    pub(crate) retention: super::RetentionOptions,
    pub(crate) read_checksums: ReadChecksums,
}

/// Whether pulls check each record's CRC before handing it out
/// ([`StoreOptions::read_checksums`]).
///
/// Recovery, queue rebuilds, [`verify`](super::verify::verify),
/// lookups by key or id and replication check CRCs whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReadChecksums {
    /// Every record a pull delivers has its CRC checked first (default); a
    /// mismatch is an [`Error::Corruption`] naming the segment and offset.
    #[default]
    Verify,
    /// Pulls check a record's framing (lengths, physical offset, topic)
    /// and that it is the queue's record at that position, but not its
    /// CRC: a flipped bit in a body or property is delivered as stored.
    /// RocketMQ's broker reads this way (it checks CRCs only during
    /// recovery). It saves about 270 of the 680 instructions a 128 B
    /// message costs `pull_with`, but much less on the clock, where reads
    /// wait on memory (README, "Reading back"); worth it only when
    /// something else (the file system, the disk, the application) guards
    /// the bytes.
    Skip,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            commit_log: CommitLogOptions::default(),
            limits: MessageLimits::default(),
            cq_units_per_file: DEFAULT_UNITS_PER_FILE,
            offset_persist_interval: Duration::from_secs(5),
            default_queues: crate::topic::DEFAULT_QUEUES,
            async_send_threads: 4,
            async_send_backlog: 10_000,
            delay_levels: DelayLevels::default(),
            delay_poll_interval: Duration::from_millis(100),
            index_file_size: IndexFileSize::default(),
            replication: crate::replication::ReplicationOptions::default(),
            retention: super::RetentionOptions::default(),
            read_checksums: ReadChecksums::Verify,
        }
    }
}

impl StoreOptions {
    /// Role and replication settings (see [`crate::replication`]). Default:
    /// a master with no replica, i.e. a standalone store.
    #[must_use]
    pub fn replication(mut self, opts: crate::replication::ReplicationOptions) -> Self {
        self.replication = opts;
        self
    }

    /// Log retention and disk-full settings. Default:
    /// [`RetentionOptions::default`](super::RetentionOptions::default) (72 h,
    /// clean from 85 % disk use, refuse sends from 90 %).
    #[must_use]
    pub fn retention(mut self, opts: super::RetentionOptions) -> Self {
        self.retention = opts;
        self
    }

    /// Options of the underlying commit log (segment size, flush timing,
    /// storage, clock). Default: [`CommitLogOptions::default`].
    #[must_use]
    pub fn commit_log_options(mut self, opts: CommitLogOptions) -> Self {
        self.commit_log = opts;
        self
    }

    /// Shorthand for the commit log's flush mode. Default
    /// [`FlushMode::Async`].
    #[must_use]
    pub fn flush_mode(mut self, mode: FlushMode) -> Self {
        self.commit_log = self.commit_log.flush_mode(mode);
        self
    }

    /// Largest accepted message body in bytes. Default 4 MiB (RocketMQ's
    /// `maxMessageSize`); 1 byte to 64 MiB.
    #[must_use]
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.limits.max_body = bytes;
        self
    }

    /// Largest accepted encoded properties (tags, keys and user
    /// properties) in bytes. Default 32 KiB; at most 65,535 (the record
    /// format's limit).
    #[must_use]
    pub fn max_properties_size(mut self, bytes: usize) -> Self {
        self.limits.max_properties = bytes;
        self
    }

    /// Units per consume-queue file. Default 300,000 (6,000,000 bytes, as
    /// RocketMQ); 1 to 16,777,216. Tests use tiny values so files roll.
    /// Fixed when the store is created (recorded in `config/store`): later
    /// opens use the recorded value and ignore this one.
    #[must_use]
    pub fn consume_queue_units_per_file(mut self, units: u64) -> Self {
        self.cq_units_per_file = units;
        self
    }

    /// How often committed consumer offsets are written to disk (they are
    /// also written on close). Default 5 s (RocketMQ's
    /// `flushConsumerOffsetInterval`); 1 ms to 1 hour.
    #[must_use]
    pub fn offset_persist_interval(mut self, d: Duration) -> Self {
        self.offset_persist_interval = d;
        self
    }

    /// Queues of a topic created implicitly (by the CLI's `produce`).
    /// Default 4; 1 to 1,024.
    #[must_use]
    pub fn default_queues(mut self, queues: u32) -> Self {
        self.default_queues = queues;
        self
    }

    /// Worker threads behind [`Store::send_async`](super::Store::send_async),
    /// started on first use. Several let Sync-mode sends share one flush.
    /// Default 4; 1 to 64.
    #[must_use]
    pub fn async_send_threads(mut self, n: usize) -> Self {
        self.async_send_threads = n;
        self
    }

    /// Async sends that may wait for a worker before
    /// [`Store::send_async`](super::Store::send_async) blocks its caller.
    /// Default 10,000; 1 to 1,000,000.
    #[must_use]
    pub fn async_send_backlog(mut self, n: usize) -> Self {
        self.async_send_backlog = n;
        self
    }

    /// The delay levels (RocketMQ's `messageDelayLevel`). Default
    /// [`DEFAULT_DELAY_LEVELS`](crate::retry::DEFAULT_DELAY_LEVELS), the 18
    /// levels `1s 5s 10s 30s 1m 2m ... 1h 2h`; messages may use levels
    /// `1..=levels.len()`. Changing the table of an existing store applies
    /// to messages sent from then on (waiting ones keep their due times).
    #[must_use]
    pub fn delay_levels(mut self, levels: DelayLevels) -> Self {
        self.limits.max_delay_level = u8::try_from(levels.len()).unwrap_or(u8::MAX);
        self.delay_levels = levels;
        self
    }

    /// How often the delivery thread looks at the clock when it has
    /// nothing due sooner (it also wakes for new delayed messages and at
    /// each due time). Default 100 ms (RocketMQ's schedule service checks
    /// every 100 ms); 1 ms to 10 s. Matters with a clock moved by hand.
    #[must_use]
    pub fn delay_poll_interval(mut self, d: Duration) -> Self {
        self.delay_poll_interval = d;
        self
    }

    /// Sizes of new index files (existing files keep theirs). Default
    /// [`IndexFileSize::default`]: 131,072 hash slots and 262,144 entries
    /// (about 8.5 MiB a file; a message takes one entry per key plus one
    /// for its unique id). Slots 1 to 2^26, entries 1 to 2^27.
    #[must_use]
    pub fn index_file_size(mut self, size: IndexFileSize) -> Self {
        self.index_file_size = size;
        self
    }

    /// Whether pulls (and the push consumers built on them) check each
    /// record's CRC. Default [`ReadChecksums::Verify`].
    ///
    /// ```
    /// use mqstore::store::{ReadChecksums, StoreOptions};
    /// let opts = StoreOptions::default().read_checksums(ReadChecksums::Skip);
    /// assert_eq!(opts.get_read_checksums(), ReadChecksums::Skip);
    /// ```
    #[must_use]
    pub fn read_checksums(mut self, checks: ReadChecksums) -> Self {
        self.read_checksums = checks;
        self
    }

    /// The [`ReadChecksums`] in effect.
    #[must_use]
    pub fn get_read_checksums(&self) -> ReadChecksums {
        self.read_checksums
    }

    /// The commit-log options in effect.
    #[must_use]
    pub fn commit_log(&self) -> &CommitLogOptions {
        &self.commit_log
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        self.commit_log.validate()?;
        self.replication.validate()?;
        self.retention.validate()?;
        let bad = |field: &str, why: String| Err(Error::InvalidArgument(format!("StoreOptions::{field}: {why}")));
        if self.limits.max_body == 0 || self.limits.max_body > 64 << 20 {
            return bad("max_body_size", format!("{} is outside 1..=64 MiB", self.limits.max_body));
        }
        if self.limits.max_properties > u16::MAX as usize {
            return bad("max_properties_size", format!("{} exceeds 65,535", self.limits.max_properties));
        }
        if self.cq_units_per_file == 0 || self.cq_units_per_file > 1 << 24 {
            return bad(
                "consume_queue_units_per_file",
                format!("{} is outside 1..=16,777,216", self.cq_units_per_file),
            );
        }
        if self.offset_persist_interval < Duration::from_millis(1)
            || self.offset_persist_interval > Duration::from_secs(3600)
        {
            return bad("offset_persist_interval", format!("{:?} is outside 1 ms..=1 h", self.offset_persist_interval));
        }
        if self.default_queues == 0 || self.default_queues > crate::topic::MAX_QUEUES {
            return bad(
                "default_queues",
                format!("{} is outside 1..={}", self.default_queues, crate::topic::MAX_QUEUES),
            );
        }
        if self.delay_poll_interval < Duration::from_millis(1) || self.delay_poll_interval > Duration::from_secs(10) {
            return bad("delay_poll_interval", format!("{:?} is outside 1 ms..=10 s", self.delay_poll_interval));
        }
        if let Err(why) = self.index_file_size.check() {
            return bad("index_file_size", why);
        }
        if self.async_send_threads == 0 || self.async_send_threads > 64 {
            return bad("async_send_threads", format!("{} is outside 1..=64", self.async_send_threads));
        }
        if self.async_send_backlog == 0 || self.async_send_backlog > 1_000_000 {
            return bad("async_send_backlog", format!("{} is outside 1..=1,000,000", self.async_send_backlog));
        }
        // A record holds topic + properties + body: the largest message
        // must fit the commit log's record limit.
        let largest = self.limits.max_body as u64 + self.limits.max_properties as u64 + 127 + 68;
        let max_record = u64::from(self.commit_log.max_record_size);
        if largest > max_record {
            return bad(
                "max_body_size",
                format!("a message of {largest} bytes would exceed the commit log's max_record_size {max_record}"),
            );
        }
        Ok(())
    }
}
