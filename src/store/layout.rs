//! `config/store`: the store's fixed layout settings, recorded at creation
//! so every later opener (an application with other options, the CLI with
//! defaults) uses the values the files were made with, and the record of
//! which primary metadata files exist, so a lost one is an error instead of
//! an empty table (FORMAT.md 11.7).
//!
//! Payload (big-endian): version 1 `consume-queue units per file u64`;
//! version 2 adds `primary files u32`, a bit set of [`TOPICS`] and
//! [`OFFSETS`]. Kept in two generations (`config/store.prev`).

use crate::error::{CorruptionKind, Error, Result};
use crate::metafile::generations::{self, GenFile, MetadataFallback};
use crate::metafile::{self, PayloadReader};
use crate::storage::Storage;
use std::path::Path;
use std::sync::Arc;

const FILE: &str = "store";
const MAGIC: [u8; 8] = [0x8D, b'M', b'Q', b'S', b'\r', b'\n', 0x1A, b'\n'];
/// Version written by this build.
const VERSION: u16 = 2;
/// The first version: units only, primary files unknown.
const VERSION_1: u16 = 1;
const PAYLOAD_LEN_V1: usize = 8;
const PAYLOAD_LEN: usize = 12;
const KIND: generations::Kind = generations::Kind { name: FILE, magic: MAGIC, max_payload: PAYLOAD_LEN as u32 };
/// Primary-file bit: `config/topics` exists (in some generation).
pub(crate) const TOPICS: u32 = 1;
/// Primary-file bit: `config/consumer_offsets` exists (in some generation).
pub(crate) const OFFSETS: u32 = 2;
const ALL: u32 = TOPICS | OFFSETS;
/// The primary files with their bits, for checks and error paths.
const PRIMARY_FILES: [(u32, &str); 2] = [(TOPICS, "topics"), (OFFSETS, "consumer_offsets")];

/// Decoded payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    units: u64,
    primaries: u32,
}

/// `config/store` as opened; see [`open`].
#[derive(Debug)]
pub(crate) struct Layout {
    file: GenFile,
    settings: Settings,
    fallback: Option<MetadataFallback>,
}

/// Reads `config/store` (falling back to its previous generation) and
/// checks that every primary file it records as written exists: `present`
/// holds the bits of the primary files found (in some generation). A store
/// without the file gets one with `configured` units and no primary file
/// recorded, unless a primary file exists: then the file was lost, and its
/// record of the others with it.
///
/// # Errors
///
/// [`Error::Corruption`] with [`CorruptionKind::Missing`] naming a recorded
/// primary file that is gone, or `config/store` itself when primary files
/// exist without it; any defect of the file's generations as
/// [`generations::load`].
pub(crate) fn open(storage: Arc<dyn Storage>, root: &Path, configured: u64, present: u32) -> Result<Layout> {
    let dir = root.join(metafile::CONFIG_DIR);
    let missing = |name: &str| Error::corruption(dir.join(name), 0, CorruptionKind::Missing);
    let loaded = generations::load(storage, &dir, KIND, decode)?;
    let Some(settings) = loaded.value else {
        if present != 0 {
            return Err(missing(FILE));
        }
        let settings = Settings { units: configured, primaries: 0 };
        loaded.file.write(VERSION, &encode(settings))?;
        return Ok(Layout { file: loaded.file, settings, fallback: None });
    };
    for (bit, name) in PRIMARY_FILES {
        if settings.primaries & bit != 0 && present & bit == 0 {
            return Err(missing(name));
        }
    }
    Ok(Layout { file: loaded.file, settings, fallback: loaded.fallback })
}

/// What [`read_only`] returns.
pub(crate) type ReadOnly = (Option<(u64, u32)>, Option<MetadataFallback>);

/// `config/store` read without writing anything (for
/// [`verify`](super::verify)): `(units per file, primary-file bits)`,
/// `None` when neither generation exists, and the fallback to the
/// previous generation, if one happened.
///
/// # Errors
///
/// As [`generations::load`].
pub(crate) fn read_only(storage: Arc<dyn Storage>, root: &Path) -> Result<ReadOnly> {
    let loaded = generations::load(storage, &root.join(metafile::CONFIG_DIR), KIND, decode)?;
    Ok((loaded.value.map(|s| (s.units, s.primaries)), loaded.fallback))
}

/// The primary files [`read_only`]'s bits stand for, with their names.
pub(crate) fn primary_files() -> [(u32, &'static str); 2] {
    PRIMARY_FILES
}

impl Layout {
    /// Consume-queue units per file of this store.
    pub(crate) fn units(&self) -> u64 {
        self.settings.units
    }

    /// The fallback to the previous generation, if one happened.
    pub(crate) fn fallback(&self) -> Option<&MetadataFallback> {
        self.fallback.as_ref()
    }

    /// Records that every primary file exists. Call only once they are on
    /// disk (durably): from then on a missing one fails open. Also rewrites
    /// the file unless it holds two intact generations (after a fallback, a
    /// damaged previous file, or at creation).
    ///
    /// # Errors
    ///
    /// An I/O error from [`GenFile::write`].
    pub(crate) fn record_primaries(&mut self) -> Result<()> {
        if self.settings.primaries == ALL && self.file.has_two_generations() {
            return Ok(());
        }
        let settings = Settings { primaries: ALL, ..self.settings };
        // When the record changes, both generations must carry it (a
        // fallback to one without it would require nothing): two writes.
        // Otherwise one write at most makes two intact generations.
        let mut required: u8 = if self.settings == settings { 0 } else { 2 };
        for _ in 0..2 {
            if required > 0 || !self.file.has_two_generations() {
                self.file.write(VERSION, &encode(settings))?;
                self.settings = settings;
                required = required.saturating_sub(1);
            }
        }
        Ok(())
    }
}

fn encode(s: Settings) -> Vec<u8> {
    let mut out = s.units.to_be_bytes().to_vec();
    out.extend_from_slice(&s.primaries.to_be_bytes());
    out
}

fn decode(path: &Path, version: u16, payload: &[u8]) -> Result<Settings> {
    let mut r = PayloadReader::new(path, payload);
    let len = match version {
        VERSION_1 => PAYLOAD_LEN_V1,
        VERSION => PAYLOAD_LEN,
        other => {
            let kind = CorruptionKind::UnsupportedVersion { found: u32::from(other) };
            return Err(r.corruption(metafile::VERSION_OFFSET as u64, kind));
        }
    };
    if payload.len() != len {
        let kind = CorruptionKind::BadLength { length: payload.len() as u64 };
        return Err(r.corruption(metafile::HEADER_LEN as u64, kind));
    }
    let units = r.u64()?;
    if units == 0 || units > 1 << 24 {
        let kind = CorruptionKind::InvalidField { field: "consume-queue units per file" };
        return Err(r.corruption(metafile::HEADER_LEN as u64, kind));
    }
    let at = r.file_offset();
    // Version 1 knew nothing of primary files: none is required.
    let primaries = if version == VERSION { r.u32()? } else { 0 };
    if primaries & !ALL != 0 {
        return Err(r.corruption(at, CorruptionKind::InvalidField { field: "primary files" }));
    }
    r.finish()?;
    Ok(Settings { units, primaries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;

    fn open_std(root: &Path, configured: u64, present: u32) -> Result<Layout> {
        open(Arc::new(StdStorage), root, configured, present)
    }

    #[test]
    fn constants_are_pinned() {
        // FORMAT.md section 11.7 lists these; change both together.
        assert_eq!(MAGIC, *b"\x8DMQS\r\n\x1A\n");
        assert_eq!((VERSION, VERSION_1, PAYLOAD_LEN, PAYLOAD_LEN_V1, FILE), (2, 1, 12, 8, "store"));
        assert_eq!((TOPICS, OFFSETS), (1, 2));
        assert_eq!(encode(Settings { units: 16, primaries: 3 }), [0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 3]);
    }

    #[test]
    fn the_first_value_is_kept_and_damage_is_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(open_std(tmp.path(), 16, 0).unwrap().units(), 16);
        assert_eq!(open_std(tmp.path(), 300_000, 0).unwrap().units(), 16);
        let path = tmp.path().join("config/store");
        let mut b = std::fs::read(&path).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&path, &b).unwrap();
        // One generation only: nothing to fall back to.
        assert!(matches!(open_std(tmp.path(), 16, 0), Err(Error::Corruption { .. })));
    }

    #[test]
    fn recorded_primary_files_must_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let mut layout = open_std(tmp.path(), 16, 0).unwrap();
        // Before they are recorded, their absence is a new store's.
        assert!(open_std(tmp.path(), 16, 0).is_ok());
        layout.record_primaries().unwrap();
        let config = tmp.path().join("config");
        for (present, missing) in [(OFFSETS, "topics"), (TOPICS, "consumer_offsets"), (0, "topics")] {
            match open_std(tmp.path(), 16, present) {
                Err(Error::Corruption { path, offset: 0, kind: CorruptionKind::Missing }) => {
                    assert_eq!(path, config.join(missing));
                }
                other => panic!("present {present}: {other:?}"),
            }
        }
        assert_eq!(open_std(tmp.path(), 16, ALL).unwrap().units(), 16);
        // Lost config/store (both generations) while primary files exist.
        std::fs::remove_file(config.join("store")).unwrap();
        std::fs::remove_file(config.join("store.prev")).unwrap();
        match open_std(tmp.path(), 16, TOPICS) {
            Err(Error::Corruption { path, kind: CorruptionKind::Missing, .. }) => assert_eq!(path, config.join(FILE)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_version_1_file_is_read_and_upgraded() {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("config");
        metafile::write_atomic(&StdStorage, &config, FILE, MAGIC, VERSION_1, &16u64.to_be_bytes()).unwrap();
        // No primary file recorded: none is required.
        let mut layout = open_std(tmp.path(), 8, 0).unwrap();
        assert_eq!(layout.units(), 16);
        layout.record_primaries().unwrap();
        // Both generations record the primary files now.
        std::fs::remove_file(config.join("store")).unwrap();
        assert!(open_std(tmp.path(), 8, TOPICS).is_err());
        assert!(open_std(tmp.path(), 8, TOPICS).is_err());
        assert_eq!(open_std(tmp.path(), 8, ALL).unwrap().units(), 16);
    }

    #[test]
    fn payload_defects_are_corruption() {
        let p = Path::new("/s");
        let v2 = |units: u64, primaries: u32| encode(Settings { units, primaries });
        assert_eq!(decode(p, 2, &v2(16, 3)).unwrap(), Settings { units: 16, primaries: 3 });
        assert_eq!(decode(p, 1, &16u64.to_be_bytes()).unwrap(), Settings { units: 16, primaries: 0 });
        let kind = |r: Result<Settings>| match r {
            Err(Error::Corruption { offset, kind, .. }) => (offset, kind),
            other => panic!("{other:?}"),
        };
        assert_eq!(kind(decode(p, 3, &v2(16, 3))), (8, CorruptionKind::UnsupportedVersion { found: 3 }));
        assert_eq!(kind(decode(p, 1, &v2(16, 3))), (20, CorruptionKind::BadLength { length: 12 }));
        assert_eq!(kind(decode(p, 2, &16u64.to_be_bytes())), (20, CorruptionKind::BadLength { length: 8 }));
        assert_eq!(
            kind(decode(p, 2, &v2(0, 3))).1,
            CorruptionKind::InvalidField { field: "consume-queue units per file" }
        );
        assert_eq!(kind(decode(p, 2, &v2(16, 4))), (28, CorruptionKind::InvalidField { field: "primary files" }));
    }
}
