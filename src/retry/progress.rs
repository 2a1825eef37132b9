//! `config/delay`: how far the delivery thread got in each schedule queue,
//! one metadata envelope (see [`crate::metafile`]) replaced atomically.
//!
//! Payload (big-endian, FORMAT.md "Delay progress"): `count: u32`, then
//! `count` times `next: u64`, the queue offset of the first entry of
//! level `i + 1` not yet delivered.
//!
//! Invariant kept by the writer ([`super::schedule`]): a value is written
//! only after the records its deliveries produced were flushed, so after
//! any crash every entry below it has its delivered copy in the log.

use crate::error::{CorruptionKind, Error, Result};
use crate::metafile::{self, PayloadReader, CONFIG_DIR};
use crate::storage::Storage;
use std::path::Path;

use super::delay::MAX_DELAY_LEVELS;

/// File name under `config/`.
pub(crate) const PROGRESS_FILE: &str = "delay";
/// Magic of the delay-progress file.
pub(crate) const PROGRESS_MAGIC: [u8; 8] = [0x8D, b'M', b'Q', b'Y', b'\r', b'\n', 0x1A, b'\n'];
/// Version written by this build.
pub(crate) const PROGRESS_VERSION: u16 = 1;
/// Largest payload accepted from disk: a count and one offset per level.
const MAX_PAYLOAD: u32 = 4 + 8 * MAX_DELAY_LEVELS as u32;

/// Writes `next` (one entry per level) atomically.
pub(crate) fn write(storage: &dyn Storage, root: &Path, next: &[u64]) -> Result<()> {
    let count = u32::try_from(next.len()).map_err(|_| Error::InvalidArgument("too many delay levels".into()))?;
    let mut payload = Vec::with_capacity(4 + 8 * next.len());
    payload.extend_from_slice(&count.to_be_bytes());
    for n in next {
        payload.extend_from_slice(&n.to_be_bytes());
    }
    metafile::write_atomic(storage, &root.join(CONFIG_DIR), PROGRESS_FILE, PROGRESS_MAGIC, PROGRESS_VERSION, &payload)
}

/// Reads the progress: `None` when the file does not exist. A damaged file
/// is an error (never a silent reset to 0, which would deliver every
/// entry again).
pub(crate) fn read(storage: &dyn Storage, root: &Path) -> Result<Option<Vec<u64>>> {
    let dir = root.join(CONFIG_DIR);
    let Some((version, payload)) = metafile::read(storage, &dir, PROGRESS_FILE, PROGRESS_MAGIC, MAX_PAYLOAD)? else {
        return Ok(None);
    };
    let path = dir.join(PROGRESS_FILE);
    if version != PROGRESS_VERSION {
        return Err(Error::corruption(
            path,
            metafile::VERSION_OFFSET as u64,
            CorruptionKind::UnsupportedVersion { found: u32::from(version) },
        ));
    }
    let mut r = PayloadReader::new(&path, &payload);
    let count = r.u32()?;
    if count as usize > MAX_DELAY_LEVELS {
        return Err(r.corruption(metafile::HEADER_LEN as u64, CorruptionKind::BadLength { length: u64::from(count) }));
    }
    let mut next = Vec::with_capacity(count as usize);
    for _ in 0..count {
        next.push(r.u64()?);
    }
    r.finish()?;
    Ok(Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;

    /// FORMAT.md section 11.9: these values are the format.
    #[test]
    fn format_constants_are_pinned() {
        assert_eq!(PROGRESS_MAGIC, *b"\x8DMQY\r\n\x1A\n");
        assert_eq!(PROGRESS_VERSION, 1);
        assert_eq!(MAX_PAYLOAD, 516);
        assert_eq!(PROGRESS_FILE, "delay");
    }

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let st = StdStorage;
        assert_eq!(read(&st, dir.path()).unwrap(), None);
        write(&st, dir.path(), &[3, 0, 7]).unwrap();
        assert_eq!(read(&st, dir.path()).unwrap(), Some(vec![3, 0, 7]));
    }

    #[test]
    fn damage_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let st = StdStorage;
        write(&st, dir.path(), &[5; 18]).unwrap();
        let path = dir.path().join(CONFIG_DIR).join(PROGRESS_FILE);
        let mut b = std::fs::read(&path).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(matches!(read(&st, dir.path()), Err(Error::Corruption { .. })));
    }
}
