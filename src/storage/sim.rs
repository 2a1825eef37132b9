//! [`SimStorage`]: an in-memory file system that simulates power loss.
//!
//! Every file has a *volatile* image (what reads and mappings see) and a
//! *durable* image (what survives a crash). `sync_data` and `flush_range`
//! copy volatile bytes to the durable image; creations, renames and
//! removals become durable only when their directory is synced. A crash
//! image keeps the durable state and, for every 4 KiB page whose volatile
//! bytes were never synced, keeps the new bytes, drops them or fills the
//! page with garbage, chosen by a seeded generator (as SQLite's crash VFS
//! does). A snapshot can be taken right after the k-th sync-family call,
//! the moments where crash bugs cluster (CrashMonkey).
//!
//! Mappings alias the file's buffer, so a store through a mapping is seen
//! by `read_at` as in a page cache. A file cannot grow while it is mapped
//! (the store never does that).

use super::{LockGuard, MappedRegion, OpenMode, Storage, StorageFile};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const PAGE: usize = 4096;

/// A simulated file system; see the module docs. Clones share one state.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    ns: Arc<Mutex<Namespace>>,
    crash: Arc<CrashPlan>,
}

#[derive(Debug, Default)]
struct Namespace {
    live: BTreeMap<PathBuf, Arc<SimFile>>,
    durable: BTreeMap<PathBuf, Arc<SimFile>>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
}

/// A value recorded in each snapshot.
type Probe = Arc<dyn Fn() -> u64 + Send + Sync>;

/// When to take the crash snapshot, and the snapshot once taken.
#[derive(Default)]
struct CrashPlan {
    syncs: AtomicU64,
    snapshot_at: AtomicU64,
    seed: AtomicU64,
    image: Mutex<Option<Snapshot>>,
    probe: Mutex<Option<Probe>>,
}

impl std::fmt::Debug for CrashPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashPlan").field("syncs", &self.syncs).field("snapshot_at", &self.snapshot_at).finish()
    }
}

/// A crash image: the files that survived, with their contents, plus the
/// value the probe returned at the moment of the crash.
#[derive(Debug, Clone)]
pub struct Snapshot {
    files: BTreeMap<PathBuf, Vec<u8>>,
    dirs: BTreeSet<PathBuf>,
    /// What the probe set with [`SimStorage::set_probe`] returned when the
    /// snapshot was taken (0 without a probe).
    pub probe: u64,
}

impl Snapshot {
    /// A fresh file system holding exactly this image.
    #[must_use]
    pub fn restore(&self) -> SimStorage {
        let sim = SimStorage::default();
        {
            let mut ns = sim.ns.lock();
            ns.dirs = self.dirs.clone();
            for (path, bytes) in &self.files {
                let f = Arc::new(SimFile::with_bytes(bytes));
                ns.live.insert(path.clone(), f.clone());
                ns.durable.insert(path.clone(), f);
            }
        }
        sim
    }
}

impl SimStorage {
    /// An empty file system.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a crash snapshot right after the `k`-th sync-family call from
    /// now on (1-based), with garbage chosen from `seed`.
    pub fn snapshot_after_sync(&self, k: u64, seed: u64) {
        self.crash.seed.store(seed, Ordering::SeqCst);
        self.crash.syncs.store(0, Ordering::SeqCst);
        self.crash.snapshot_at.store(k, Ordering::SeqCst);
    }

    /// Sets a function whose value is recorded in every snapshot (for
    /// example how many appends had been acknowledged at that moment).
    pub fn set_probe(&self, probe: Probe) {
        *self.crash.probe.lock() = Some(probe);
    }

    /// The snapshot taken by [`SimStorage::snapshot_after_sync`], if the
    /// k-th sync has happened.
    #[must_use]
    pub fn taken_snapshot(&self) -> Option<Snapshot> {
        self.crash.image.lock().clone()
    }

    /// Sync-family calls seen since the last [`SimStorage::snapshot_after_sync`].
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.crash.syncs.load(Ordering::SeqCst)
    }

    /// A crash image now. Callers must make sure nothing writes through a
    /// mapping meanwhile (the store's Sync mode never does).
    #[must_use]
    pub fn crash_now(&self, seed: u64) -> Snapshot {
        // The probe is read first: whatever it counted had happened before
        // any file image below was taken.
        let probe = self.crash.probe.lock().as_ref().map_or(0, |p| p());
        let ns = self.ns.lock();
        // Freeze every file before imaging any, so the image is one instant
        // (file operations take only their own file's lock, never the
        // namespace lock while holding it, so this order cannot deadlock).
        let frozen: Vec<_> = ns.durable.iter().map(|(p, f)| (p.clone(), f.state.lock())).collect();
        let mut rng = seed | 1;
        let files = frozen.iter().map(|(p, st)| (p.clone(), st.crash_image(&mut rng))).collect();
        Snapshot { files, dirs: ns.dirs.clone(), probe }
    }

    fn after_sync(&self) {
        let n = self.crash.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.crash.snapshot_at.load(Ordering::SeqCst) {
            let snap = self.crash_now(self.crash.seed.load(Ordering::SeqCst));
            *self.crash.image.lock() = Some(snap);
        }
    }
}

fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// A file position or length as an in-memory index.
fn to_usize(v: u64) -> io::Result<usize> {
    usize::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

/// File contents: a buffer at a fixed address while mapped.
struct SimFile {
    state: Mutex<FileState>,
}

struct FileState {
    /// Owned buffer from `Box::into_raw`; only ever accessed through raw
    /// pointers on sub-ranges, so a mapping writer and a locked reader of
    /// different bytes never hold overlapping references.
    ptr: *mut u8,
    cap: usize,
    len: usize,
    durable: Vec<u8>,
    mapped: usize,
}

// SAFETY: the buffer is owned by the state and every access is either under
// the mutex or through a mapping whose users keep to disjoint byte ranges.
unsafe impl Send for FileState {}

impl std::fmt::Debug for SimFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state.lock();
        f.debug_struct("SimFile").field("len", &st.len).field("durable", &st.durable.len()).finish()
    }
}

impl Drop for FileState {
    fn drop(&mut self) {
        // SAFETY: ptr/cap came from Box::into_raw of a boxed slice of cap bytes.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.cap)) });
    }
}

fn alloc(cap: usize) -> *mut u8 {
    Box::into_raw(vec![0u8; cap].into_boxed_slice()).cast::<u8>()
}

impl SimFile {
    fn with_bytes(bytes: &[u8]) -> Self {
        let cap = bytes.len().max(1);
        let ptr = alloc(cap);
        // SAFETY: fresh buffer of cap >= bytes.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
        Self { state: Mutex::new(FileState { ptr, cap, len: bytes.len(), durable: bytes.to_vec(), mapped: 0 }) }
    }
}

impl FileState {
    fn crash_image(&self, rng: &mut u64) -> Vec<u8> {
        let st = self;
        let mut out = st.durable.clone();
        let len = st.len.max(out.len());
        out.resize(len, 0);
        for page in (0..len).step_by(PAGE) {
            let end = (page + PAGE).min(len);
            let vol_end = end.min(st.len);
            // SAFETY: [page, vol_end) is inside the buffer; see FileState.
            let vol =
                unsafe { std::slice::from_raw_parts(st.ptr.add(page.min(vol_end)), vol_end.saturating_sub(page)) };
            let dur = &st.durable[page.min(st.durable.len())..end.min(st.durable.len())];
            if vol == dur && vol_end == end && dur.len() == end - page {
                continue;
            }
            // Keep the new bytes, keep the old ones, or garble the bytes that
            // were never synced. Durable bytes are never garbled: the media
            // is assumed to write a sector without corrupting the parts of
            // it that did not change ("powersafe overwrite").
            match next(rng) % 20 {
                0..=8 => {
                    out[page..page + vol.len()].copy_from_slice(vol);
                    out[page + vol.len()..end].fill(0);
                }
                9..=17 => {}
                _ => {
                    for (k, byte) in out[page..end].iter_mut().enumerate() {
                        let new = vol.get(k).copied().unwrap_or(0);
                        if dur.get(k) != Some(&new) {
                            *byte = next(rng) as u8;
                        }
                    }
                }
            }
        }
        // A file whose size grew without a sync may come back shorter.
        if st.durable.len() < st.len && next(rng).is_multiple_of(2) {
            out.truncate(st.durable.len());
        }
        out
    }
}

impl FileState {
    fn ensure(&mut self, len: usize) -> io::Result<()> {
        if len > self.cap {
            if self.mapped > 0 {
                return Err(io::Error::other("SimStorage: a mapped file cannot grow"));
            }
            let cap = len.max(self.cap * 2);
            let ptr = alloc(cap);
            // SAFETY: both buffers hold at least self.len bytes.
            unsafe { std::ptr::copy_nonoverlapping(self.ptr, ptr, self.len) };
            // SAFETY: as in Drop.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.cap)) });
            self.ptr = ptr;
            self.cap = cap;
        }
        if len > self.len {
            // SAFETY: [self.len, len) is inside the buffer; zero the tail.
            unsafe { std::ptr::write_bytes(self.ptr.add(self.len), 0, len - self.len) };
            self.len = len;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SimHandle {
    file: Arc<SimFile>,
    writable: bool,
    sim: SimStorage,
}

#[derive(Debug)]
struct SimLock {
    path: PathBuf,
    sim: SimStorage,
}
impl LockGuard for SimLock {}
impl Drop for SimLock {
    fn drop(&mut self) {
        self.sim.ns.lock().locks.remove(&self.path);
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut ns = self.ns.lock();
        for p in path.ancestors() {
            ns.dirs.insert(p.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let ns = self.ns.lock();
        if !ns.dirs.contains(path) {
            return Err(not_found());
        }
        let mut names: Vec<String> = ns
            .live
            .keys()
            .chain(ns.dirs.iter())
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.dedup();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let ns = self.ns.lock();
        Ok(ns.live.contains_key(path) || ns.dirs.contains(path))
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut ns = self.ns.lock();
        if !path.parent().is_some_and(|d| ns.dirs.contains(d)) {
            return Err(not_found());
        }
        let file = match (mode, ns.live.get(path)) {
            (OpenMode::Read | OpenMode::ReadWrite, Some(f)) => f.clone(),
            (OpenMode::Read | OpenMode::ReadWrite, None) => return Err(not_found()),
            (OpenMode::CreateNew, Some(_)) => return Err(io::Error::from(io::ErrorKind::AlreadyExists)),
            (OpenMode::CreateNew | OpenMode::CreateTruncate, _) => {
                // Truncating replaces the contents: model it as a new file
                // under the same name (the old inode stays durable until
                // the directory is synced).
                let f = Arc::new(SimFile::with_bytes(&[]));
                ns.live.insert(path.to_path_buf(), f.clone());
                f
            }
        };
        Ok(Arc::new(SimHandle { file, writable: mode != OpenMode::Read, sim: self.clone() }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut ns = self.ns.lock();
        let f = ns.live.remove(from).ok_or_else(not_found)?;
        ns.live.insert(to.to_path_buf(), f);
        Ok(())
    }

    fn rename_no_replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.ns.lock().live.contains_key(to) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        self.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.ns.lock().live.remove(path).map(|_| ()).ok_or_else(not_found)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        {
            let mut ns = self.ns.lock();
            let ns = &mut *ns;
            ns.durable.retain(|p, _| p.parent() != Some(path));
            for (p, f) in &ns.live {
                if p.parent() == Some(path) {
                    ns.durable.insert(p.clone(), f.clone());
                }
            }
        }
        self.after_sync();
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let mut ns = self.ns.lock();
        if !ns.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock { path: path.to_path_buf(), sim: self.clone() })))
    }
}

impl StorageFile for SimHandle {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.state.lock().len as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let st = self.file.state.lock();
        let off = to_usize(offset)?;
        if off >= st.len {
            return Ok(0);
        }
        let n = buf.len().min(st.len - off);
        // SAFETY: [off, off + n) is inside the buffer.
        unsafe { std::ptr::copy_nonoverlapping(st.ptr.add(off), buf.as_mut_ptr(), n) };
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        let mut st = self.file.state.lock();
        let off = to_usize(offset)?;
        st.ensure(off + buf.len())?;
        // SAFETY: ensure() made [off, off + len) part of the buffer.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), st.ptr.add(off), buf.len()) };
        Ok(buf.len())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let len = to_usize(len)?;
        self.file.state.lock().ensure(len)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let st = self.file.state.lock();
        let off = to_usize(offset)?;
        let end = (off + to_usize(len)?).min(st.len);
        if off < end {
            // SAFETY: [off, end) is inside the buffer.
            unsafe { std::ptr::write_bytes(st.ptr.add(off), 0, end - off) };
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = to_usize(len)?;
        let mut st = self.file.state.lock();
        if len < st.len {
            if st.mapped > 0 {
                return Err(io::Error::other("SimStorage: a mapped file cannot shrink"));
            }
            st.len = len;
            Ok(())
        } else {
            st.ensure(len)
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        {
            let mut st = self.file.state.lock();
            let len = st.len;
            let mut durable = std::mem::take(&mut st.durable);
            durable.resize(len, 0);
            // SAFETY: [0, len) is the buffer's used part.
            unsafe { std::ptr::copy_nonoverlapping(st.ptr, durable.as_mut_ptr(), len) };
            st.durable = durable;
        }
        self.sim.after_sync();
        Ok(())
    }

    fn map(&self, len: usize) -> io::Result<Arc<dyn MappedRegion>> {
        let mut st = self.file.state.lock();
        st.ensure(len)?;
        st.mapped += 1;
        Ok(Arc::new(SimRegion { file: self.file.clone(), ptr: st.ptr, len, sim: self.sim.clone() }))
    }
}

#[derive(Debug)]
struct SimRegion {
    file: Arc<SimFile>,
    ptr: *mut u8,
    len: usize,
    sim: SimStorage,
}

// SAFETY: the pointer stays valid while `file` is alive and mapped (a mapped
// file never reallocates); see FileState for the access discipline.
unsafe impl Send for SimRegion {}
// SAFETY: as above.
unsafe impl Sync for SimRegion {}

impl Drop for SimRegion {
    fn drop(&mut self) {
        self.file.state.lock().mapped -= 1;
    }
}

// SAFETY: `ptr` points to `len` bytes of the file's buffer, which cannot be
// reallocated while this region exists; flush_range copies to the durable
// image.
unsafe impl MappedRegion for SimRegion {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    fn len(&self) -> usize {
        self.len
    }

    fn flush_range(&self, offset: usize, len: usize) -> io::Result<()> {
        {
            let mut st = self.file.state.lock();
            let end = (offset + len).min(st.len);
            if st.durable.len() < end {
                st.durable.resize(end, 0);
            }
            if offset < end {
                let dst = st.durable[offset..end].as_mut_ptr();
                // SAFETY: [offset, end) is inside the buffer, and writers
                // only touch bytes past the range being flushed.
                unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), dst, end - offset) };
            }
        }
        self.sim.after_sync();
        Ok(())
    }

    fn prefault(&self, _offset: usize, _len: usize) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_data_and_names_do_not_survive_unless_synced() {
        let sim = SimStorage::new();
        let d = Path::new("/d");
        sim.create_dir_all(d).unwrap();
        let f = sim.open(&d.join("a"), OpenMode::CreateNew).unwrap();
        f.write_at(b"hello", 0).unwrap();
        // Neither the name nor the data were synced.
        assert!(sim.crash_now(1).files.is_empty());
        f.sync_data().unwrap();
        sim.sync_dir(d).unwrap();
        let img = sim.crash_now(1);
        assert_eq!(img.files.get(&d.join("a")).map(Vec::as_slice), Some(&b"hello"[..]));
        // A synced rename survives; an unsynced one does not.
        sim.rename(&d.join("a"), &d.join("b")).unwrap();
        assert!(sim.crash_now(1).files.contains_key(&d.join("a")));
        sim.sync_dir(d).unwrap();
        let restored = sim.crash_now(1).restore();
        let g = restored.open(&d.join("b"), OpenMode::Read).unwrap();
        let mut buf = [0u8; 5];
        assert_eq!(g.read_at(&mut buf, 0).unwrap(), 5);
        assert_eq!(&buf, b"hello");
    }

    #[test]
    fn mapping_aliases_the_file_and_flush_range_makes_it_durable() {
        let sim = SimStorage::new();
        let d = Path::new("/m");
        sim.create_dir_all(d).unwrap();
        let f = sim.open(&d.join("s"), OpenMode::CreateNew).unwrap();
        f.allocate(8192).unwrap();
        f.sync_data().unwrap();
        sim.sync_dir(d).unwrap();
        let m = f.map(8192).unwrap();
        // SAFETY: in bounds; nothing else touches these bytes.
        unsafe { std::ptr::copy_nonoverlapping(b"abc".as_ptr(), m.as_ptr().add(100), 3) };
        let mut buf = [0u8; 3];
        f.read_at(&mut buf, 100).unwrap();
        assert_eq!(&buf, b"abc");
        assert!(f.allocate(1 << 20).is_err(), "a mapped file cannot grow");
        m.flush_range(0, 4096).unwrap();
        let img = sim.crash_now(7);
        assert_eq!(&img.files[&d.join("s")][100..103], b"abc");
    }

    #[test]
    fn snapshot_after_the_kth_sync() {
        let sim = SimStorage::new();
        let d = Path::new("/k");
        sim.create_dir_all(d).unwrap();
        sim.set_probe(Arc::new(|| 42));
        sim.snapshot_after_sync(2, 9);
        let f = sim.open(&d.join("x"), OpenMode::CreateNew).unwrap();
        sim.sync_dir(d).unwrap();
        assert!(sim.taken_snapshot().is_none());
        f.write_at(b"z", 0).unwrap();
        f.sync_data().unwrap();
        let snap = sim.taken_snapshot().unwrap();
        assert_eq!(snap.probe, 42);
        assert_eq!(snap.files[&d.join("x")], b"z");
    }
}
