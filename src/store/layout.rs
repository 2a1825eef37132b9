//! The store's fixed layout settings, recorded at creation in
//! `config/store` so every later opener (an application with other
//! options, the CLI with defaults) uses the values the files were made
//! with.
//!
//! Payload (version 1, big-endian): `consume-queue units per file u64`.

use crate::error::{CorruptionKind, Error, Result};
use crate::metafile;
use crate::storage::Storage;
use std::path::Path;

const FILE: &str = "store";
const MAGIC: [u8; 8] = [0x8D, b'M', b'Q', b'S', b'\r', b'\n', 0x1A, b'\n'];
const VERSION: u16 = 1;
const PAYLOAD_LEN: u32 = 8;

/// Returns the consume-queue units per file this store uses: the recorded
/// value, or `configured` (then recorded) for a store that has none yet.
pub(crate) fn units_per_file(storage: &dyn Storage, root: &Path, configured: u64) -> Result<u64> {
    let dir = root.join(metafile::CONFIG_DIR);
    let path = dir.join(FILE);
    match metafile::read(storage, &dir, FILE, MAGIC, PAYLOAD_LEN)? {
        Some((VERSION, payload)) => {
            let bytes: [u8; 8] = payload.as_slice().try_into().map_err(|_| Error::Corruption {
                path: path.clone(),
                offset: metafile::HEADER_LEN as u64,
                kind: CorruptionKind::BadLength { length: payload.len() as u64 },
            })?;
            let units = u64::from_be_bytes(bytes);
            if units == 0 || units > 1 << 24 {
                return Err(Error::Corruption {
                    path,
                    offset: metafile::HEADER_LEN as u64,
                    kind: CorruptionKind::InvalidField { field: "consume-queue units per file" },
                });
            }
            Ok(units)
        }
        Some((version, _)) => Err(Error::Corruption {
            path,
            offset: metafile::VERSION_OFFSET as u64,
            kind: CorruptionKind::UnsupportedVersion { found: u32::from(version) },
        }),
        None => {
            metafile::write_atomic(storage, &dir, FILE, MAGIC, VERSION, &configured.to_be_bytes())?;
            Ok(configured)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;

    #[test]
    fn constants_are_pinned() {
        // FORMAT.md section 11 lists these; change both together.
        assert_eq!(MAGIC, *b"\x8DMQS\r\n\x1A\n");
        assert_eq!((VERSION, PAYLOAD_LEN, FILE), (1, 8, "store"));
    }

    #[test]
    fn the_first_value_is_kept_and_damage_is_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(units_per_file(&StdStorage, tmp.path(), 16).unwrap(), 16);
        assert_eq!(units_per_file(&StdStorage, tmp.path(), 300_000).unwrap(), 16);
        let path = tmp.path().join("config").join(FILE);
        let mut b = std::fs::read(&path).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(matches!(units_per_file(&StdStorage, tmp.path(), 16), Err(Error::Corruption { .. })));
    }
}
