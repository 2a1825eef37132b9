//! The storage seam: every file-system call the store makes goes through
//! [`Storage`], [`StorageFile`] and [`MappedRegion`].
//!
//! Production code uses [`StdStorage`]. Tests wrap it in [`FaultyStorage`] to
//! fail the k-th call, fail syncs or report a full disk, which proves that no
//! code path bypasses the seam and that every failure surfaces as a typed
//! error. A simulated power-loss backend plugs in at the same place.

mod fault;
mod sim;
mod std_fs;

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use fault::{FaultKind, FaultPlan, FaultyStorage};
pub use sim::{SimStorage, Snapshot};
pub use std_fs::StdStorage;

/// How [`Storage::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Existing file, read only.
    Read,
    /// Existing file, read and write.
    ReadWrite,
    /// Create a new file for reading and writing; fails if it exists.
    CreateNew,
    /// Create or truncate a file for reading and writing.
    CreateTruncate,
}

/// A directory tree of files. Implementations must be usable from several
/// threads at once.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Creates `path` and all missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of directory `path`, in any order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Atomically renames `from` to `to`, replacing `to`. Durable only after
    /// [`Storage::sync_dir`] of the parent.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, failing with `AlreadyExists` if `to` exists.
    /// Durable only after [`Storage::sync_dir`] of the parent.
    fn rename_no_replace(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. Durable only after [`Storage::sync_dir`] of the parent.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals inside directory `path` durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Tries to take an exclusive advisory lock on `path` (created if
    /// missing). `Ok(None)` means another handle holds it. The lock lasts as
    /// long as the returned guard.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>>;
    /// Size and free space of the file system holding `path`, for log
    /// retention's disk ratios. The default reports `Unsupported`, which
    /// turns the ratio checks off (age-based retention still runs).
    fn disk_usage(&self, path: &Path) -> io::Result<DiskUsage> {
        let _ = path;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// What [`Storage::disk_usage`] reports, in bytes, as `df` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Size of the file system.
    pub total: u64,
    /// Bytes in use (size minus free blocks).
    pub used: u64,
    /// Bytes available to unprivileged writers (free blocks minus the
    /// blocks reserved for root).
    pub available: u64,
}

impl DiskUsage {
    /// Used share in percent, as `df` computes it: used / (used +
    /// available), rounded up, so blocks reserved for root do not count as
    /// used; 100 for a file system of size 0.
    #[must_use]
    pub fn used_percent(&self) -> u8 {
        let used = self.used;
        let denom = u128::from(used) + u128::from(self.available);
        if denom == 0 {
            return 100;
        }
        let pct = (u128::from(used) * 100).div_ceil(denom);
        u8::try_from(pct.min(100)).unwrap_or(100)
    }
}

/// Keeps a lock taken by [`Storage::try_lock`] alive until dropped.
pub trait LockGuard: Send + Sync + Debug {}

/// One open file.
// NOTE: `len` is a file length; an `is_empty` twin would be noise.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + Debug {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 at end of file). May return fewer bytes than asked.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes up to `buf.len()` bytes at `offset`; returns how many were
    /// written. May write fewer bytes than asked.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// Reserves disk blocks for `[0, len)` so later writes, including writes
    /// through a mapping, cannot fail for lack of space. Grows the file.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Makes `[offset, offset + len)` read as zeros without changing the
    /// file length. Durable after [`StorageFile::sync_data`].
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes written data (including data stored through mappings) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Starts writing `[offset, offset + len)` back to the device without
    /// waiting and without any durability promise (only
    /// [`StorageFile::sync_data`] and msync make data durable). The default
    /// does nothing.
    fn start_writeback(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// Maps `[0, len)` of the file shared and writable.
    fn map(&self, len: usize) -> io::Result<Arc<dyn MappedRegion>>;
}

/// A shared, writable memory mapping of a file.
///
/// # Safety
///
/// Implementations must guarantee that [`MappedRegion::as_ptr`] points to
/// `len()` bytes that stay valid, readable and writable (and are not moved)
/// for as long as the region is alive, and that stores through it reach the
/// file once [`MappedRegion::flush_range`] returns `Ok`.
// NOTE: `len` is a mapping length; an `is_empty` twin would be noise.
#[allow(clippy::len_without_is_empty)]
pub unsafe trait MappedRegion: Send + Sync + Debug {
    /// Start of the mapping.
    fn as_ptr(&self) -> *mut u8;
    /// Length of the mapping in bytes.
    fn len(&self) -> usize;
    /// Synchronously writes `[offset, offset + len)` to stable storage.
    fn flush_range(&self, offset: usize, len: usize) -> io::Result<()>;
    /// Faults pages of `[offset, offset + len)` in writable so later stores do
    /// not pay first-touch page faults. Never changes the contents. Advisory:
    /// an implementation may do nothing.
    fn prefault(&self, offset: usize, len: usize) -> io::Result<()>;
    /// The mapping will only be read from now on (its segment is sealed):
    /// an implementation may re-enable readahead. Advisory; the default
    /// does nothing.
    fn sealed(&self) {}
    /// The pages of `[offset, offset + len)` (`offset` page-aligned) are
    /// not needed in this process's memory now: an implementation may drop
    /// them from the resident set. It must never change what the mapping
    /// reads as: a later access sees the file's bytes (including writes not
    /// yet flushed), faulted in again. Advisory; the default does nothing.
    fn release(&self, offset: usize, len: usize) {
        let _ = (offset, len);
    }
}

/// Reads exactly `buf.len()` bytes at `offset`, looping over short reads.
/// Reaching end of file early is an `UnexpectedEof` error.
pub fn read_exact_at(file: &dyn StorageFile, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes at `offset`, looping over short reads until
/// the buffer is full or end of file; returns the number of bytes read.
pub fn read_full_at(file: &dyn StorageFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes all of `buf` at `offset`, looping over short writes.
pub fn write_all_at(file: &dyn StorageFile, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
