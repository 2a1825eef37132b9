//! `config/retention`: the commit log's first offset after retention (the
//! *floor*), written before any segment below it is removed.
//!
//! Payload (version 1, big-endian): `floor u64`, the base of the first
//! segment that is kept. Rules at open (FORMAT.md, retention):
//! * no file: nothing was ever removed, so the log must start at 0;
//! * segments below the floor: a round was interrupted after the floor was
//!   written; they are removed now;
//! * the first segment above the floor (or at a non-zero base without a
//!   file): segments are missing, which retention never does. That is
//!   [`Error::Corruption`], not a silent loss.

use crate::error::{CorruptionKind, Error, Result};
use crate::metafile;
use crate::storage::Storage;
use std::path::Path;

/// File name under `config/`.
pub(crate) const FILE: &str = "retention";
const MAGIC: [u8; 8] = [0x8D, b'M', b'Q', b'R', b'\r', b'\n', 0x1A, b'\n'];
const VERSION: u16 = 1;
const PAYLOAD_LEN: u32 = 8;

/// The recorded floor, `None` when retention never removed anything.
pub(crate) fn read(storage: &dyn Storage, root: &Path) -> Result<Option<u64>> {
    let dir = root.join(metafile::CONFIG_DIR);
    let path = dir.join(FILE);
    match metafile::read(storage, &dir, FILE, MAGIC, PAYLOAD_LEN)? {
        None => Ok(None),
        Some((VERSION, payload)) => {
            let bytes: [u8; 8] = payload.as_slice().try_into().map_err(|_| Error::Corruption {
                path,
                offset: metafile::HEADER_LEN as u64,
                kind: CorruptionKind::BadLength { length: payload.len() as u64 },
            })?;
            Ok(Some(u64::from_be_bytes(bytes)))
        }
        Some((version, _)) => Err(Error::Corruption {
            path,
            offset: metafile::VERSION_OFFSET as u64,
            kind: CorruptionKind::UnsupportedVersion { found: u32::from(version) },
        }),
    }
}

/// Durably records `floor` (atomic replace; see [`metafile::write_atomic`]).
pub(crate) fn write(storage: &dyn Storage, root: &Path, floor: u64) -> Result<()> {
    let dir = root.join(metafile::CONFIG_DIR);
    metafile::write_atomic(storage, &dir, FILE, MAGIC, VERSION, &floor.to_be_bytes())
}

/// Checks the recovered log against the recorded floor. `first_base` is
/// the base of the log's first segment (`None`: no segment). Returns the
/// floor below which leftover segments must be removed.
pub(crate) fn check(root: &Path, recorded: Option<u64>, first_base: Option<u64>) -> Result<u64> {
    let floor = recorded.unwrap_or(0);
    match first_base {
        Some(base) if base > floor => Err(Error::Corruption {
            path: root.join(crate::commitlog::COMMITLOG_DIR),
            offset: floor,
            kind: CorruptionKind::InvalidField { field: "first segment (segments below it are missing)" },
        }),
        _ => Ok(floor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;

    #[test]
    fn constants_are_pinned() {
        // FORMAT.md section 17 lists these; change both together.
        assert_eq!(FILE, "retention");
        assert_eq!(&MAGIC[1..4], b"MQR");
        assert_eq!((VERSION, PAYLOAD_LEN), (1, 8));
    }

    #[test]
    fn round_trip_and_rules() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(&StdStorage, dir.path()).unwrap(), None);
        write(&StdStorage, dir.path(), 1 << 20).unwrap();
        assert_eq!(read(&StdStorage, dir.path()).unwrap(), Some(1 << 20));
        // A log starting at the floor, or with leftovers below it, is fine.
        assert_eq!(check(dir.path(), Some(1 << 20), Some(1 << 20)).unwrap(), 1 << 20);
        assert_eq!(check(dir.path(), Some(1 << 20), Some(0)).unwrap(), 1 << 20);
        // Missing segments are corruption, with or without a file.
        assert!(
            matches!(check(dir.path(), Some(1 << 20), Some(2 << 20)), Err(Error::Corruption { offset, .. }) if offset == 1 << 20)
        );
        assert!(matches!(check(dir.path(), None, Some(1 << 20)), Err(Error::Corruption { offset: 0, .. })));
        assert_eq!(check(dir.path(), None, Some(0)).unwrap(), 0);
        assert_eq!(check(dir.path(), None, None).unwrap(), 0);
    }
}
