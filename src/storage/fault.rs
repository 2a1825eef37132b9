//! [`FaultyStorage`]: wraps another [`Storage`] and fails chosen calls, so
//! tests can prove every I/O failure becomes a typed error and that a failed
//! sync fences the store.

use super::{LockGuard, MappedRegion, OpenMode, Storage, StorageFile};
use parking_lot::Mutex;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Which error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `EIO`.
    Io,
    /// `ENOSPC`.
    NoSpace,
}

impl FaultKind {
    fn error(self) -> io::Error {
        match self {
            Self::Io => io::Error::from_raw_os_error(libc::EIO),
            Self::NoSpace => io::Error::from_raw_os_error(libc::ENOSPC),
        }
    }
}

/// Most operation names [`FaultPlan::log`] keeps.
const LOG_LIMIT: usize = 100_000;

/// What to break. Shared between a test and the [`FaultyStorage`] it built.
#[derive(Debug, Default)]
pub struct FaultPlan {
    calls: AtomicU64,
    /// 1-based index of the first call to fail; 0 = none.
    fail_at: AtomicU64,
    /// Keep failing every call after `fail_at`.
    persistent: AtomicBool,
    /// Fail every sync-family call (`sync_data`, `flush_range`, `sync_dir`).
    fail_syncs: AtomicBool,
    /// Sleep this many milliseconds in every sync-family call.
    sync_delay_ms: AtomicU64,
    /// Panic in every sync-family call (a bug in a storage backend).
    panic_syncs: AtomicBool,
    kind: Mutex<Option<FaultKind>>,
    /// Fail every call of this operation (by name, as in [`FaultPlan::log`]).
    fail_op: Mutex<Option<(&'static str, FaultKind)>>,
    log: Mutex<Vec<&'static str>>,
}

impl FaultPlan {
    /// A plan that breaks nothing yet.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Fails call number `k` (1-based, counted from now on across every
    /// operation) with `kind`; with `persistent`, every later call too.
    pub fn fail_call(&self, k: u64, kind: FaultKind, persistent: bool) {
        *self.kind.lock() = Some(kind);
        self.persistent.store(persistent, Ordering::SeqCst);
        self.calls.store(0, Ordering::SeqCst);
        self.fail_at.store(k, Ordering::SeqCst);
    }

    /// Fails every call of operation `op` (a name from [`FaultPlan::log`],
    /// such as `"write_at"` or `"rename"`) with `kind`, until healed.
    pub fn fail_op(&self, op: &'static str, kind: FaultKind) {
        *self.fail_op.lock() = Some((op, kind));
    }

    /// Makes every sync-family call fail with `EIO` (or succeed again).
    pub fn fail_syncs(&self, on: bool) {
        self.fail_syncs.store(on, Ordering::SeqCst);
    }

    /// Makes every sync-family call take at least `ms` milliseconds (a slow
    /// or stalled device); 0 restores full speed.
    pub fn delay_syncs(&self, ms: u64) {
        self.sync_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Makes every sync-family call panic, as a buggy backend would, so
    /// tests can check that a dying background thread fences the store.
    pub fn panic_syncs(&self, on: bool) {
        self.panic_syncs.store(on, Ordering::SeqCst);
    }

    /// Stops injecting faults.
    pub fn heal(&self) {
        self.fail_at.store(0, Ordering::SeqCst);
        self.fail_syncs.store(false, Ordering::SeqCst);
        self.sync_delay_ms.store(0, Ordering::SeqCst);
        self.panic_syncs.store(false, Ordering::SeqCst);
        *self.fail_op.lock() = None;
    }

    /// Number of calls seen since the last [`FaultPlan::fail_call`].
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Names of the first 100,000 operations seen (for diagnosing a test).
    pub fn log(&self) -> Vec<&'static str> {
        self.log.lock().clone()
    }

    fn check(&self, op: &'static str, is_sync: bool) -> io::Result<()> {
        {
            // Bounded: a long test must not grow memory without limit.
            let mut log = self.log.lock();
            if log.len() < LOG_LIMIT {
                log.push(op);
            }
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if is_sync {
            let delay = self.sync_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                std::thread::sleep(std::time::Duration::from_millis(delay));
            }
            // NOTE: deliberate, opt-in panic: this is the fault being injected.
            #[allow(clippy::panic)]
            if self.panic_syncs.load(Ordering::SeqCst) {
                panic!("injected panic in {op}");
            }
            if self.fail_syncs.load(Ordering::SeqCst) {
                return Err(FaultKind::Io.error());
            }
        }
        if let Some((name, kind)) = *self.fail_op.lock() {
            if name == op {
                return Err(kind.error());
            }
        }
        let at = self.fail_at.load(Ordering::SeqCst);
        let hit = at != 0 && (n == at || (n > at && self.persistent.load(Ordering::SeqCst)));
        match *self.kind.lock() {
            Some(kind) if hit => Err(kind.error()),
            _ => Ok(()),
        }
    }
}

/// A [`Storage`] that consults a [`FaultPlan`] before every call.
#[derive(Debug, Clone)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    plan: Arc<FaultPlan>,
}

impl FaultyStorage {
    /// Wraps `inner`, breaking calls as `plan` says.
    #[must_use]
    pub fn new(inner: Arc<dyn Storage>, plan: Arc<FaultPlan>) -> Self {
        Self { inner, plan }
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn StorageFile>,
    plan: Arc<FaultPlan>,
}

#[derive(Debug)]
struct FaultyRegion {
    inner: Arc<dyn MappedRegion>,
    plan: Arc<FaultPlan>,
}

impl Storage for FaultyStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.plan.check("create_dir_all", false)?;
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.plan.check("list_dir", false)?;
        self.inner.list_dir(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.plan.check("exists", false)?;
        self.inner.exists(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        self.plan.check("open", false)?;
        let inner = self.inner.open(path, mode)?;
        Ok(Arc::new(FaultyFile { inner, plan: self.plan.clone() }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.plan.check("rename", false)?;
        self.inner.rename(from, to)
    }
    fn rename_no_replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.plan.check("rename_no_replace", false)?;
        self.inner.rename_no_replace(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.plan.check("remove_file", false)?;
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.plan.check("sync_dir", true)?;
        self.inner.sync_dir(path)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.plan.check("try_lock", false)?;
        self.inner.try_lock(path)
    }

    fn disk_usage(&self, path: &Path) -> io::Result<super::DiskUsage> {
        self.plan.check("disk_usage", false)?;
        self.inner.disk_usage(path)
    }
}

impl StorageFile for FaultyFile {
    fn len(&self) -> io::Result<u64> {
        self.plan.check("len", false)?;
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.plan.check("read_at", false)?;
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.plan.check("write_at", false)?;
        self.inner.write_at(buf, offset)
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.plan.check("allocate", false)?;
        self.inner.allocate(len)
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.plan.check("zero_range", false)?;
        self.inner.zero_range(offset, len)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.plan.check("set_len", false)?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.plan.check("sync_data", true)?;
        self.inner.sync_data()
    }
    fn map(&self, len: usize) -> io::Result<Arc<dyn MappedRegion>> {
        self.plan.check("map", false)?;
        let inner = self.inner.map(len)?;
        Ok(Arc::new(FaultyRegion { inner, plan: self.plan.clone() }))
    }
}

// SAFETY: forwards to an inner region that upholds the contract.
unsafe impl MappedRegion for FaultyRegion {
    fn as_ptr(&self) -> *mut u8 {
        self.inner.as_ptr()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn flush_range(&self, offset: usize, len: usize) -> io::Result<()> {
        self.plan.check("flush_range", true)?;
        self.inner.flush_range(offset, len)
    }
    fn sealed(&self) {
        self.inner.sealed();
    }
    fn release(&self, offset: usize, len: usize) {
        // Advisory and timed by a background thread, like prefaulting: not
        // a counted call.
        self.inner.release(offset, len);
    }
    fn prefault(&self, offset: usize, len: usize) -> io::Result<()> {
        // Prefaulting is advisory and runs on a background thread at
        // unpredictable times; counting it would make "fail the k-th call"
        // nondeterministic.
        self.inner.prefault(offset, len)
    }
}
