//! Two numbered generations of a metadata file the store cannot rebuild
//! (`config/topics`, `config/consumer_offsets`, `config/store`):
//! `<name>` (current) and `<name>.prev` (previous), each an envelope with a
//! generation trailer (FORMAT.md 11.1 and 11.10).
//!
//! Write order (one writer per file, serialized by [`GenFile`]):
//!
//! 1. write `<name>.tmp` with generation `g`, `fdatasync` it;
//! 2. if the current file holds the generation in use, rename `<name>` over
//!    `<name>.prev`;
//! 3. rename `<name>.tmp` over `<name>`;
//! 4. `fsync` the directory.
//!
//! Invariant: at every point at least one of `<name>` and `<name>.prev` is a
//! complete, synced envelope holding either the last acknowledged value or
//! the one being written. Before step 2 nothing visible changed; between
//! steps 2 and 3 (a process crash, or a file system that kept only the
//! first rename) `<name>` is missing and `<name>.prev` holds the last
//! acknowledged generation; after step 3 `<name>` holds the new one. A power
//! loss before step 4 keeps any subset of the two renames, each of which
//! leaves one of those states. Step 2 is skipped when the current file is
//! missing, damaged or not the newer one, so a bad file never replaces a
//! good previous generation.
//!
//! Read rule ([`load`]): the current file is used if it is intact and its
//! generation is greater than the previous file's (or the previous file is
//! missing or damaged). Otherwise the previous generation is used and the
//! fallback is reported ([`MetadataFallback`]): the current file is
//! missing, damaged, or not newer than the previous one (an older copy put
//! back: a correctly written pair always has current > previous). If
//! neither holds an intact generation, the error of the current file (or of
//! the previous one, when the current file is missing) is returned; a
//! newer format (`UnsupportedVersion`) is never a reason to fall back.

use super::{encode, read_envelope, write_tmp};
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::Storage;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Suffix of the previous generation's file.
pub(crate) const PREV_SUFFIX: &str = ".prev";

/// Why the previous generation of a metadata file was used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FallbackReason {
    /// The current file does not exist.
    Missing,
    /// The current file is damaged.
    Damaged {
        /// Byte offset of the damage in the current file.
        offset: u64,
        /// What was wrong.
        kind: CorruptionKind,
    },
    /// The current file is intact but its generation is not greater than
    /// the previous file's: an older copy was put back in its place.
    NotNewer {
        /// The current file's generation.
        generation: u64,
    },
}

/// A metadata file read from its previous generation (`<name>.prev`)
/// because the current one could not be used. Recovery rewrites the current
/// file from that generation before the store accepts writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataFallback {
    /// The current file (`config/<name>`) that was not used.
    pub file: PathBuf,
    /// Why it was not used.
    pub reason: FallbackReason,
    /// The generation read from `<name>.prev`.
    pub generation: u64,
}

/// A file kind kept in two generations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kind {
    /// File name inside the config directory.
    pub(crate) name: &'static str,
    /// Envelope magic.
    pub(crate) magic: [u8; 8],
    /// Largest payload accepted.
    pub(crate) max_payload: u32,
}

/// What [`load`] found.
#[derive(Debug)]
pub(crate) struct Loaded<T> {
    /// The decoded value of the generation in use; `None` if neither file
    /// exists.
    pub(crate) value: Option<T>,
    /// Set when the previous generation was used.
    pub(crate) fallback: Option<MetadataFallback>,
    /// The writer for the next generations.
    pub(crate) file: GenFile,
}

/// One file as [`read_one`] found it.
enum Found<T> {
    Absent,
    Damaged(Error),
    Intact(u64, T),
}

/// Reads and decodes one generation. `decode(path, version, payload)`
/// checks the payload; its corruption counts as damage too.
fn read_one<T>(
    storage: &dyn Storage,
    path: &Path,
    kind: Kind,
    decode: &impl Fn(&Path, u16, &[u8]) -> Result<T>,
) -> Result<Found<T>> {
    let read = read_envelope(storage, path, kind.magic, kind.max_payload)
        .and_then(|e| e.map(|e| Ok((e.generation.unwrap_or(0), decode(path, e.version, &e.payload)?))).transpose());
    match read {
        Ok(None) => Ok(Found::Absent),
        Ok(Some((generation, value))) => Ok(Found::Intact(generation, value)),
        // A newer writer's file is not damage: falling back would silently
        // downgrade it.
        Err(e @ Error::Corruption { kind: CorruptionKind::UnsupportedVersion { .. }, .. }) => Err(e),
        Err(e @ Error::Corruption { .. }) => Ok(Found::Damaged(e)),
        Err(e) => Err(e),
    }
}

/// Reads `dir/<kind.name>` and its previous generation under the rule of
/// the module docs.
///
/// # Errors
///
/// [`Error::Corruption`] when no generation is intact but one exists (or a
/// generation has a version this build does not know); [`Error::Io`] when
/// a file cannot be read.
pub(crate) fn load<T>(
    storage: Arc<dyn Storage>,
    dir: &Path,
    kind: Kind,
    decode: impl Fn(&Path, u16, &[u8]) -> Result<T>,
) -> Result<Loaded<T>> {
    let path = dir.join(kind.name);
    let prev_path = dir.join(format!("{}{PREV_SUFFIX}", kind.name));
    let current = read_one(storage.as_ref(), &path, kind, &decode)?;
    let prev = read_one(storage.as_ref(), &prev_path, kind, &decode)?;
    let prev_intact = matches!(prev, Found::Intact(..));
    let fallback = |reason, generation| Some(MetadataFallback { file: path.clone(), reason, generation });
    // (value, fallback, current holds the generation in use, highest generation seen)
    let (value, fallback, current_in_use, highest) = match (current, prev) {
        (Found::Intact(g, v), Found::Intact(p, _)) if g > p => (Some(v), None, true, g),
        (Found::Intact(g, _), Found::Intact(p, v)) => {
            (Some(v), fallback(FallbackReason::NotNewer { generation: g }, p), false, p)
        }
        (Found::Intact(g, v), _) => (Some(v), None, true, g),
        (Found::Absent, Found::Intact(p, v)) => (Some(v), fallback(FallbackReason::Missing, p), false, p),
        (Found::Damaged(e), Found::Intact(p, v)) => {
            let reason = match e {
                Error::Corruption { offset, kind, .. } => FallbackReason::Damaged { offset, kind },
                // read_one only reports corruption as damage.
                other => return Err(other),
            };
            (Some(v), fallback(reason, p), false, p)
        }
        (Found::Absent, Found::Absent) => (None, None, false, 0),
        (Found::Damaged(e), _) | (Found::Absent, Found::Damaged(e)) => return Err(e),
    };
    let file = GenFile {
        storage,
        dir: dir.to_path_buf(),
        kind,
        state: Mutex::new(WriterState {
            next: highest.saturating_add(1),
            rotate: current_in_use,
            exists: value.is_some(),
            prev_intact,
        }),
    };
    Ok(Loaded { value, fallback, file })
}

/// The writer of one two-generation file.
#[derive(Debug)]
pub(crate) struct GenFile {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    kind: Kind,
    state: Mutex<WriterState>,
}

#[derive(Debug)]
struct WriterState {
    /// Generation of the next write: above every generation seen.
    next: u64,
    /// Whether `<name>` holds the generation in use, so step 2 moves it to
    /// `<name>.prev` (never a missing, damaged or older current file).
    rotate: bool,
    /// Whether some generation is on disk.
    exists: bool,
    /// Whether `<name>.prev` holds an intact generation.
    prev_intact: bool,
}

impl GenFile {
    /// Whether an intact generation was found at load or written since.
    pub(crate) fn exists(&self) -> bool {
        self.state.lock().exists
    }

    /// Whether both files hold intact generations, the current one in use.
    /// If not (nothing written yet, only one generation, a fallback, a
    /// damaged previous file), writing the value in use again makes it so.
    pub(crate) fn has_two_generations(&self) -> bool {
        let st = self.state.lock();
        st.rotate && st.prev_intact
    }

    /// Writes `payload` as the next generation (module docs, steps 1-4).
    ///
    /// # Errors
    ///
    /// An I/O error; the generation in use is then still on disk unless the
    /// error is the final directory fsync (`is_failed_sync()`), after which
    /// either generation may survive a crash and the caller must fence.
    /// [`Error::InvalidArgument`] for a payload above 4 GiB.
    pub(crate) fn write(&self, version: u16, payload: &[u8]) -> Result<()> {
        let mut st = self.state.lock();
        let storage = self.storage.as_ref();
        let generation = st.next;
        let bytes = encode(self.kind.magic, version, payload, Some(generation))?;
        let tmp = write_tmp(storage, &self.dir, self.kind.name, &bytes)?;
        let path = self.dir.join(self.kind.name);
        if st.rotate {
            let prev = self.dir.join(format!("{}{PREV_SUFFIX}", self.kind.name));
            match storage.rename(&path, &prev) {
                Ok(()) => st.prev_intact = true,
                // Removed behind our back: keep the previous generation.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("rename metadata file", &path, e)),
            }
            // `<name>` is gone: until step 3 succeeds the generation in use
            // is the previous one, which must not be rotated away.
            st.rotate = false;
        }
        storage.rename(&tmp, &path).map_err(|e| Error::io("rename metadata file", &tmp, e))?;
        // The names now show the new generation; a failed fsync below fences
        // the store, so this state is what a retry (after reopen) starts from.
        st.rotate = true;
        st.exists = true;
        st.next = generation.saturating_add(1);
        storage.sync_dir(&self.dir).map_err(|e| Error::io("fsync directory", &self.dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metafile::FLAGS_OFFSET;
    use crate::storage::{FaultKind, FaultPlan, FaultyStorage, SimStorage, StdStorage};

    const MAGIC: [u8; 8] = [0x8D, b'M', b'Q', b'X', b'\r', b'\n', 0x1A, b'\n'];
    const KIND: Kind = Kind { name: "meta", magic: MAGIC, max_payload: 1 << 10 };

    /// Version 1 only; the payload `bad` is an invalid one under a good CRC.
    fn decode(path: &Path, version: u16, payload: &[u8]) -> Result<Vec<u8>> {
        if version != 1 {
            return Err(Error::corruption(path, 8, CorruptionKind::UnsupportedVersion { found: u32::from(version) }));
        }
        if payload == b"bad" {
            return Err(Error::corruption(path, 20, CorruptionKind::InvalidField { field: "test" }));
        }
        Ok(payload.to_vec())
    }

    fn load_with(storage: Arc<dyn Storage>, dir: &Path) -> Result<Loaded<Vec<u8>>> {
        load(storage, dir, KIND, decode)
    }

    fn load_std(dir: &Path) -> Result<Loaded<Vec<u8>>> {
        load_with(Arc::new(StdStorage), dir)
    }

    /// (value, fallback reason) of a load that must succeed.
    fn got(dir: &Path) -> (Option<Vec<u8>>, Option<FallbackReason>) {
        let l = load_std(dir).unwrap();
        (l.value, l.fallback.map(|f| f.reason))
    }

    fn write_std(dir: &Path, values: &[&str]) {
        let file = load_std(dir).unwrap().file;
        for v in values {
            file.write(1, v.as_bytes()).unwrap();
        }
    }

    fn generation_of(path: &Path) -> Option<u64> {
        read_envelope(&StdStorage, path, MAGIC, 1 << 10).unwrap().unwrap().generation
    }

    fn some(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn constants_are_pinned() {
        // FORMAT.md 11.10 names the previous generation's file.
        assert_eq!(PREV_SUFFIX, ".prev");
    }

    #[test]
    fn generations_count_up_and_the_previous_one_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("config");
        assert_eq!(got(&dir), (None, None));
        assert!(!load_std(&dir).unwrap().file.exists());
        write_std(&dir, &["a", "b", "c"]);
        assert_eq!((generation_of(&dir.join("meta")), generation_of(&dir.join("meta.prev"))), (Some(3), Some(2)));
        assert_eq!(got(&dir), (some("c"), None));
        // Numbering continues across loads.
        write_std(&dir, &["d"]);
        assert_eq!((generation_of(&dir.join("meta")), generation_of(&dir.join("meta.prev"))), (Some(4), Some(3)));
        assert!(load_std(&dir).unwrap().file.exists());
        assert!(!dir.join("meta.tmp").exists());
    }

    /// A reader that takes no lock (`StoreView`) beside a writer: every
    /// load succeeds and the values it sees never go backwards, although
    /// the current file is briefly missing during each write.
    #[test]
    fn a_concurrent_reader_never_fails_or_goes_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("config");
        write_std(&dir, &["0"]);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (dir, done) = (dir.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut last, mut loads) = (0u64, 0u64);
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let value = load_std(&dir).unwrap_or_else(|e| panic!("load {loads}: {e}")).value.unwrap();
                    let v: u64 = String::from_utf8(value).unwrap().parse().unwrap();
                    assert!(v >= last, "went back from {last} to {v}");
                    (last, loads) = (v, loads + 1);
                }
                loads
            })
        };
        let file = load_std(&dir).unwrap().file;
        for i in 1..=300u64 {
            file.write(1, i.to_string().as_bytes()).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        assert!(reader.join().unwrap() > 0);
    }

    /// How a test sets up one of the two files.
    #[derive(Debug, Clone, Copy)]
    enum F {
        Absent,
        /// Intact, with this generation and value.
        Gen(u64, &'static str),
        /// Intact, written without a generation (before generations).
        Legacy(&'static str),
        /// A CRC mismatch.
        Torn,
        /// Intact but of version 9.
        Newer,
        /// Intact but with an unknown flag bit.
        Flagged,
    }

    fn put(path: &Path, f: F) {
        let bytes = match f {
            F::Absent => return,
            F::Gen(g, v) => encode(MAGIC, 1, v.as_bytes(), Some(g)).unwrap(),
            F::Legacy(v) => encode(MAGIC, 1, v.as_bytes(), None).unwrap(),
            F::Torn => {
                let mut b = encode(MAGIC, 1, b"torn", Some(7)).unwrap();
                b[21] ^= 4;
                b
            }
            F::Newer => encode(MAGIC, 9, b"x", Some(9)).unwrap(),
            F::Flagged => {
                let mut b = encode(MAGIC, 1, b"x", Some(9)).unwrap();
                b[FLAGS_OFFSET + 1] |= 2;
                b[16..20].fill(0);
                let crc = crc32fast::hash(&b);
                b[16..20].copy_from_slice(&crc.to_be_bytes());
                b
            }
        };
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn the_read_rule_over_every_pair_of_states() {
        use FallbackReason::{Missing, NotNewer};
        let damaged = |r: &Option<FallbackReason>| matches!(r, Some(FallbackReason::Damaged { .. }));
        // (current, previous, value expected, fallback check, error file if any)
        type Check = fn(&Option<FallbackReason>) -> bool;
        let none: Check = Option::is_none;
        let cases: Vec<(F, F, Option<&str>, Check)> = vec![
            (F::Gen(2, "new"), F::Gen(1, "old"), Some("new"), none),
            (F::Gen(2, "new"), F::Absent, Some("new"), none),
            (F::Gen(2, "new"), F::Torn, Some("new"), none),
            (F::Legacy("legacy"), F::Absent, Some("legacy"), none),
            (F::Gen(1, "put back"), F::Gen(1, "old"), Some("old"), |r| *r == Some(NotNewer { generation: 1 })),
            (F::Gen(1, "put back"), F::Gen(5, "old"), Some("old"), |r| *r == Some(NotNewer { generation: 1 })),
            (F::Legacy("put back"), F::Gen(1, "old"), Some("old"), |r| *r == Some(NotNewer { generation: 0 })),
            (F::Absent, F::Gen(1, "old"), Some("old"), |r| *r == Some(Missing)),
            (F::Torn, F::Gen(1, "old"), Some("old"), damaged),
            (F::Gen(9, "bad"), F::Gen(1, "old"), Some("old"), damaged),
            (F::Absent, F::Absent, None, none),
        ];
        for (i, (cur, prev, want, check)) in cases.into_iter().enumerate() {
            let tmp = tempfile::tempdir().unwrap();
            let (path, prev_path) = (tmp.path().join("meta"), tmp.path().join("meta.prev"));
            put(&path, cur);
            put(&prev_path, prev);
            let loaded = load_std(tmp.path()).unwrap_or_else(|e| panic!("case {i}: {e}"));
            let reason = loaded.fallback.as_ref().map(|f| f.reason.clone());
            assert_eq!(loaded.value, want.map(|s| s.as_bytes().to_vec()), "case {i}");
            assert!(check(&reason), "case {i}: {reason:?}");
            if let Some(f) = &loaded.fallback {
                assert_eq!(f.file, path, "case {i}");
            }
            // The next write goes above every generation seen and keeps the
            // generation in use as the previous one: a fallen-back (bad or
            // older) current file never replaces a good previous one.
            loaded.file.write(1, b"next").unwrap();
            assert_eq!(got(tmp.path()), (some("next"), None), "case {i}");
            std::fs::remove_file(&path).unwrap();
            assert_eq!(got(tmp.path()).0, want.map(|s| s.as_bytes().to_vec()), "case {i}: previous generation");
        }
        // No intact generation: a typed error naming the damaged file; a
        // newer format is never a reason to fall back.
        let errors = [
            (F::Torn, F::Absent, "meta"),
            (F::Torn, F::Torn, "meta"),
            (F::Absent, F::Torn, "meta.prev"),
            (F::Gen(9, "bad"), F::Absent, "meta"),
            (F::Newer, F::Gen(1, "old"), "meta"),
            (F::Flagged, F::Gen(1, "old"), "meta"),
            (F::Gen(2, "new"), F::Newer, "meta.prev"),
        ];
        for (cur, prev, file) in errors {
            let tmp = tempfile::tempdir().unwrap();
            put(&tmp.path().join("meta"), cur);
            put(&tmp.path().join("meta.prev"), prev);
            match load_std(tmp.path()) {
                Err(Error::Corruption { path, .. }) => assert_eq!(path, tmp.path().join(file), "{cur:?} {prev:?}"),
                other => panic!("{cur:?} {prev:?}: {other:?}"),
            }
        }
    }

    /// Sets up `history` acknowledged writes, then makes every call of the
    /// next write from `k` on fail (a process crash right before call k):
    /// the files must hold the last acknowledged value or the new one, and
    /// writing on after a reopen must leave two good generations.
    #[test]
    fn a_crash_before_any_call_of_a_write_leaves_the_old_or_the_new_generation() {
        for history in 0..3 {
            let mut k = 1;
            loop {
                let tmp = tempfile::tempdir().unwrap();
                let dir = tmp.path().join("config");
                let values = ["v1", "v2"];
                write_std(&dir, &values[..history]);
                let old = values[..history].last().map(|s| s.as_bytes().to_vec());
                let plan = FaultPlan::new();
                let faulty = Arc::new(FaultyStorage::new(Arc::new(StdStorage), plan.clone()));
                let file = load_with(faulty, &dir).unwrap().file;
                plan.fail_call(k, FaultKind::Io, true);
                let r = file.write(1, b"new");
                plan.heal();
                let (now, _) = got(&dir);
                assert!(now == old || now == some("new"), "history {history}, crash at call {k}: {now:?}");
                if r.is_ok() {
                    assert_eq!(got(&dir), (some("new"), None));
                }
                // Recovery writes on: two good generations again.
                write_std(&dir, &["after"]);
                assert_eq!(got(&dir), (some("after"), None), "history {history}, call {k}");
                std::fs::remove_file(dir.join("meta")).unwrap();
                let (prev, reason) = got(&dir);
                assert!(prev == now, "history {history}, call {k}: previous generation {prev:?}, want {now:?}");
                assert_eq!(reason.is_some(), now.is_some(), "history {history}, call {k}");
                if r.is_ok() {
                    break;
                }
                k += 1;
            }
            assert!(k >= 6, "history {history}: every call of a write was failed ({k} calls)");
        }
    }

    /// A single failed call (an I/O error the writer survives), then more
    /// writes on the same handle, starting from a current file that is
    /// in use or one that fell back: after every step some generation is
    /// intact and holds an acknowledged (or the attempted) value.
    #[test]
    fn a_failed_call_then_more_writes_keep_a_good_generation() {
        for damaged_current in [false, true] {
            let mut k = 1;
            loop {
                let tmp = tempfile::tempdir().unwrap();
                let dir = tmp.path().join("config");
                write_std(&dir, &["v1", "v2"]);
                if damaged_current {
                    put(&dir.join("meta"), F::Torn);
                }
                let before = if damaged_current { "v1" } else { "v2" };
                let plan = FaultPlan::new();
                let faulty = Arc::new(FaultyStorage::new(Arc::new(StdStorage), plan.clone()));
                let file = load_with(faulty, &dir).unwrap().file;
                plan.fail_call(k, FaultKind::Io, false);
                let r = file.write(1, b"v3");
                plan.heal();
                let (now, _) = got(&dir);
                assert!(now == some(before) || now == some("v3"), "damaged {damaged_current}, call {k}: {now:?}");
                // The fault was one call: the handle writes on.
                file.write(1, b"v4").unwrap();
                assert_eq!(got(&dir), (some("v4"), None));
                std::fs::remove_file(dir.join("meta")).unwrap();
                let (prev, _) = got(&dir);
                let want = if r.is_ok() { some("v3") } else { now.clone() };
                assert_eq!(prev, want, "damaged {damaged_current}, call {k}: previous generation");
                if r.is_ok() {
                    break;
                }
                k += 1;
            }
            assert!(k >= 5, "every call was failed once ({k})");
        }
    }

    /// Power loss after every sync-family call of a write, on the simulated
    /// disk (unsynced pages kept, dropped or garbled; renames durable only
    /// with their directory): the old or the new generation, never neither.
    #[test]
    fn power_loss_at_every_sync_leaves_the_old_or_the_new_generation() {
        let dir = Path::new("/store/config");
        let mut states = 0;
        for seed in 1..=16u64 {
            for history in 0..3usize {
                let mut k = 1;
                loop {
                    let sim = SimStorage::new();
                    let file = load_with(Arc::new(sim.clone()), dir).unwrap().file;
                    let values = ["v1", "v2"];
                    for v in &values[..history] {
                        file.write(1, v.as_bytes()).unwrap();
                    }
                    let old = values[..history].last().map(|s| s.as_bytes().to_vec());
                    sim.snapshot_after_sync(k, seed);
                    file.write(1, b"new").unwrap();
                    let Some(snap) = sim.taken_snapshot() else { break };
                    states += 1;
                    let restored = Arc::new(snap.restore());
                    let loaded = load_with(restored.clone(), dir)
                        .unwrap_or_else(|e| panic!("seed {seed}, history {history}, sync {k}: {e}"));
                    assert!(loaded.value == old || loaded.value == some("new"), "seed {seed}, sync {k}");
                    // Recovery writes on; the result survives a power loss.
                    loaded.file.write(1, b"after").unwrap();
                    let again = Arc::new(restored.crash_now(seed).restore());
                    assert_eq!(load_with(again, dir).unwrap().value, some("after"));
                    k += 1;
                }
            }
        }
        assert!(states >= 16 * 5, "{states} crash states");
    }
}
