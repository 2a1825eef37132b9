//! The crate's single public error type.
//!
//! Variants are chosen by what a caller can do about them: retry later
//! ([`Error::Timeout`]), fix the input ([`Error::InvalidArgument`],
//! [`Error::MessageTooLarge`]), free space ([`Error::DiskFull`]), reopen the
//! store ([`Error::Fenced`]) or call an operator ([`Error::Corruption`]).

use std::io;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What exactly was wrong with a damaged byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// A magic number did not match; `found` is what was on disk.
    BadMagic {
        /// The value read from disk.
        found: u64,
    },
    /// A format version this build does not understand.
    UnsupportedVersion {
        /// The version read from disk.
        found: u32,
    },
    /// A stored CRC did not match the bytes it covers.
    ChecksumMismatch {
        /// CRC stored on disk.
        stored: u32,
        /// CRC computed over the bytes read.
        computed: u32,
    },
    /// A length field points outside the file, the segment or the limits.
    BadLength {
        /// The length read from disk.
        length: u64,
    },
    /// A field disagrees with where the data was found (a record's own
    /// physical offset, a segment's base offset versus its file name).
    Misplaced {
        /// What the field says.
        claimed: u64,
        /// Where the data actually is.
        actual: u64,
    },
    /// The data ended before a complete structure could be read.
    Truncated,
    /// A field holds a value outside its domain (for example non-UTF-8 topic).
    InvalidField {
        /// Which field.
        field: &'static str,
    },
    /// Damage found before the recovered end where only the tail may be torn.
    MidLog,
    /// A file the store recorded as written does not exist (nor its
    /// previous generation); the offset is 0.
    Missing,
}

impl std::fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadMagic { found } => write!(f, "bad magic {found:#x}"),
            Self::UnsupportedVersion { found } => write!(f, "unsupported format version {found}"),
            Self::ChecksumMismatch { stored, computed } => {
                write!(f, "crc mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            Self::BadLength { length } => write!(f, "bad length {length}"),
            Self::Misplaced { claimed, actual } => {
                write!(f, "misplaced data (claims {claimed}, found at {actual})")
            }
            Self::Truncated => f.write_str("truncated"),
            Self::InvalidField { field } => write!(f, "invalid field {field}"),
            Self::MidLog => f.write_str("damage before the end of the log"),
            Self::Missing => f.write_str("missing, although the store recorded it as written"),
        }
    }
}

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("i/o error during {op} on {}", path.display())]
    Io {
        /// The operation that failed (`"open"`, `"fdatasync"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Stored data failed validation.
    #[error("corruption in {} at offset {offset}: {kind}", path.display())]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset within that file where the damage starts.
        offset: u64,
        /// What was wrong.
        kind: CorruptionKind,
    },
    /// A caller-supplied value was rejected; nothing was changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A message or record exceeds a configured limit; nothing was written.
    #[error("message too large: {size} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Size of the rejected item in bytes.
        size: u64,
        /// The limit in bytes.
        max: u64,
    },
    /// Another handle (in this or another process) holds the directory lock.
    #[error("store directory {} is locked by another handle", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An earlier flush or background failure fenced the store: writes are
    /// refused until it is reopened, because durability can no longer be
    /// promised (a failed fsync may have dropped dirty pages).
    #[error("store is fenced after an earlier failure ({reason}); reopen it")]
    Fenced {
        /// The failure that fenced the store.
        reason: String,
    },
    /// A wait ran out. For a synchronous flush the record **was written** and
    /// may or may not be durable: it is not a plain success.
    #[error("timed out waiting for {what} (offset {offset})")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
        /// The offset the wait needed to cover.
        offset: u64,
    },
    /// The store (or commit log) was closed.
    #[error("store is closed")]
    Closed,
    /// This store is a replica ([`Role::Slave`](crate::replication::Role)):
    /// it takes records only from its master and refuses producer writes.
    #[error("store is a slave replica: writes go to the master")]
    ReadOnlyReplica,
    /// A replicated run does not continue the replica's log: records
    /// between `expected` and `got` never arrived. Nothing was written;
    /// the master must resend from `expected`.
    #[error("replication gap: the replica ends at {expected} but the run starts at {got}")]
    ReplicationGap {
        /// Where the replica's log ends.
        expected: u64,
        /// Where the run started.
        got: u64,
    },
    /// The replica holds a different record at `offset` than the master
    /// sent (histories diverged, or the two use different segment sizes).
    /// Nothing was written.
    #[error("replica diverges from its master at offset {offset}")]
    ReplicaDiverged {
        /// The first offset where the logs differ.
        offset: u64,
    },
    /// A replica reported an offset beyond the master's end (a replica
    /// that has records its master lost, or a bogus acknowledgement); it
    /// was rejected.
    #[error("replica reports offset {replica}, beyond the master's end {master}")]
    ReplicaAhead {
        /// The offset the replica reported.
        replica: u64,
        /// The master's end.
        master: u64,
    },
    /// The file system is out of space; nothing partial is visible.
    #[error("disk full while {op} on {}", path.display())]
    DiskFull {
        /// The operation that hit ENOSPC.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
    },
}

impl Error {
    /// Builds an [`Error::Io`], mapping `ENOSPC`/`EDQUOT` to [`Error::DiskFull`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Self::DiskFull { op, path },
            _ if source.kind() == io::ErrorKind::StorageFull => Self::DiskFull { op, path },
            _ => Self::Io { op, path, source },
        }
    }

    /// Builds an [`Error::Corruption`].
    pub(crate) fn corruption(path: impl Into<PathBuf>, offset: u64, kind: CorruptionKind) -> Self {
        Self::Corruption { path: path.into(), offset, kind }
    }

    /// True for a failed `fsync`/`fdatasync`/`msync` (including ENOSPC from
    /// one): after it the kernel may have dropped dirty pages, so the store
    /// must fence rather than retry. Sync operations are the ones whose
    /// `op` starts with "fsync", "fdatasync" or "msync".
    pub(crate) fn is_failed_sync(&self) -> bool {
        match self {
            Self::Io { op, .. } | Self::DiskFull { op, .. } => {
                op.starts_with("fsync") || op.starts_with("fdatasync") || op.starts_with("msync")
            }
            _ => false,
        }
    }

    /// True when retrying the same call later may succeed without reopening
    /// (timeouts and a full disk); false for everything else.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::DiskFull { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn io_error_keeps_its_source() {
        let e = Error::io("open", "/x", io::Error::other("boom"));
        assert!(matches!(e, Error::Io { .. }));
        assert_eq!(e.source().map(|s| s.to_string()), Some("boom".to_string()));
        assert_eq!(e.to_string(), "i/o error during open on /x");
    }

    #[test]
    fn enospc_becomes_disk_full() {
        let e = Error::io("append", "/x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(e, Error::DiskFull { op: "append", .. }));
        assert!(e.is_transient());
    }

    #[test]
    fn sync_failures_are_recognised() {
        assert!(Error::io("fdatasync segment", "/x", io::Error::other("x")).is_failed_sync());
        assert!(Error::io("fsync directory", "/x", io::Error::from_raw_os_error(libc::ENOSPC)).is_failed_sync());
        assert!(!Error::io("write checkpoint", "/x", io::Error::from_raw_os_error(libc::ENOSPC)).is_failed_sync());
        assert!(!Error::Closed.is_failed_sync());
    }

    #[test]
    fn corruption_display_names_path_and_offset() {
        let e = Error::corruption("/d/f", 42, CorruptionKind::Truncated);
        assert_eq!(e.to_string(), "corruption in /d/f at offset 42: truncated");
        assert!(!e.is_transient());
    }
}
