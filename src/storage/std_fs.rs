//! [`StdStorage`]: the real file system (std, plus `fallocate` and `memmap2`).

use super::{LockGuard, MappedRegion, OpenMode, Storage, StorageFile};
use memmap2::{Advice, MmapOptions, MmapRaw, UncheckedAdvice};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdStorage;

#[derive(Debug)]
struct StdFile {
    file: File,
}

#[derive(Debug)]
struct StdLock {
    _file: File,
}
impl LockGuard for StdLock {}

#[derive(Debug)]
struct StdRegion {
    map: MmapRaw,
    /// Cleared when the kernel lacks `MADV_POPULATE_WRITE` (before 5.14), so
    /// the prefault hint is not retried on every call.
    populate_supported: AtomicBool,
}

impl Storage for StdStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut opts = OpenOptions::new();
        match mode {
            OpenMode::Read => opts.read(true),
            OpenMode::ReadWrite => opts.read(true).write(true),
            OpenMode::CreateNew => opts.read(true).write(true).create_new(true),
            OpenMode::CreateTruncate => opts.read(true).write(true).create(true).truncate(true),
        };
        let file = opts.open(path)?;
        Ok(Arc::new(StdFile { file }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn rename_no_replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        };
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: both arguments are valid NUL-terminated paths.
        let r =
            unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE) };
        match check(r) {
            // File systems without RENAME_NOREPLACE: a hard link also fails
            // when the target exists, and is atomic.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
                fs::hard_link(from, to)?;
                fs::remove_file(from)
            }
            other => other,
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(StdLock { _file: file }))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    fn disk_usage(&self, path: &Path) -> io::Result<super::DiskUsage> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: an all-zero statvfs is a valid value of the plain C struct.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a NUL-terminated path and `st` a valid out pointer.
        check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
        // Saturating: the kernel's numbers, but a FUSE file system may
        // report anything.
        let total = st.f_blocks.saturating_mul(st.f_frsize);
        let free = st.f_bfree.saturating_mul(st.f_frsize).min(total);
        let available = st.f_bavail.saturating_mul(st.f_frsize).min(free);
        Ok(super::DiskUsage { total, used: total - free, available })
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn to_off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS))
}

impl StorageFile for StdFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.file.write_at(buf, offset)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        // SAFETY: plain syscall on an fd we own.
        let r = check(unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, to_off(len)?) });
        match r {
            Err(e) if unsupported(&e) => self.file.set_len(len),
            other => other,
        }
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: plain syscall on an fd we own.
        let r = check(unsafe { libc::fallocate(self.file.as_raw_fd(), mode, to_off(offset)?, to_off(len)?) });
        match r {
            Err(e) if unsupported(&e) => write_zeros(&self.file, offset, len),
            other => other,
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: plain syscall on a descriptor this handle owns.
        let r = unsafe { libc::sync_file_range(self.file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn map(&self, len: usize) -> io::Result<Arc<dyn MappedRegion>> {
        // The store holds the directory lock, so no other well-behaved handle
        // changes the file under the mapping.
        let map = MmapOptions::new().len(len).map_raw(&self.file)?;
        // MADV_RANDOM before any page is faulted in: without readahead the
        // kernel caches the file in 4 KiB folios instead of ramping up to
        // 2 MiB ones. A store through the mapping dirties its whole folio,
        // so with large folios every msync of a few hundred bytes wrote
        // back 2 MiB (measured here: 2,050 KiB written and 4.4x the latency
        // per 136-byte sync at 64 MiB into a segment). Advisory: a kernel
        // that refuses it only loses that optimisation.
        let _ = map.advise(Advice::Random);
        Ok(Arc::new(StdRegion { map, populate_supported: AtomicBool::new(true) }))
    }
}

/// Fallback for file systems without `FALLOC_FL_ZERO_RANGE`.
fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

// SAFETY: `MmapRaw` keeps the mapping alive and fixed for its own lifetime,
// which is the region's lifetime; msync(MS_SYNC) makes stores durable.
unsafe impl MappedRegion for StdRegion {
    fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn flush_range(&self, offset: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.map.flush_range(offset, len)
    }

    fn sealed(&self) {
        // Writes are over, so the reason for MADV_RANDOM (small folios for
        // cheap msync) is gone; readahead makes cold sequential reads of old
        // segments (a consumer catching up) fast again.
        let _ = self.map.advise(Advice::Normal);
    }

    fn release(&self, offset: usize, len: usize) {
        let len = len.min(self.map.len().saturating_sub(offset));
        if len == 0 {
            return;
        }
        // SAFETY: MADV_DONTNEED on a shared file mapping only drops this
        // process's page-table entries: the pages (dirty ones included)
        // stay in the page cache and the next access faults the file's
        // bytes back in, so no reader or writer ever sees other contents
        // (unlike a private or anonymous mapping, where it would zero them).
        // The range lies inside the mapping (clipped above). Advisory: a
        // failure only leaves the pages resident.
        let _ = unsafe { self.map.unchecked_advise_range(UncheckedAdvice::DontNeed, offset, len) };
    }

    fn prefault(&self, offset: usize, len: usize) -> io::Result<()> {
        if len == 0 || !self.populate_supported.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.map.advise_range(Advice::PopulateWrite, offset, len) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.populate_supported.store(false, Ordering::Relaxed);
                Ok(())
            }
            other => other,
        }
    }
}
