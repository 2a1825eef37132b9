//! The checkpoint: where recovery may start, and whether the last shutdown
//! was clean.
//!
//! It holds exact offsets, never timestamps. It is replaced atomically
//! (write `checkpoint.tmp`, fdatasync, rename over `checkpoint`, fsync the
//! directory) and carries a CRC, so a torn write leaves the previous copy.
//! It is derived data: if it is missing or damaged, recovery scans the whole
//! log instead, which is slower but loses nothing.

use crate::codec::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{read_full_at, write_all_at, OpenMode, Storage};
use std::path::Path;

/// Checkpoint magic: a high byte, "MQK", CR LF SUB LF.
pub const CHECKPOINT_MAGIC: [u8; 8] = [0x8D, b'M', b'Q', b'K', b'\r', b'\n', 0x1A, b'\n'];
/// Checkpoint format version written by this build.
pub const CHECKPOINT_VERSION: u16 = 1;
/// File name of the checkpoint inside the store directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";

const VERSION_OFFSET: usize = 8;
const STATE_OFFSET: usize = VERSION_OFFSET + 2;
const _RESERVED1_OFFSET: usize = STATE_OFFSET + 2;
const GENERATION_OFFSET: usize = _RESERVED1_OFFSET + 4;
const FLUSHED_OFFSET: usize = GENERATION_OFFSET + 8;
const LAST_RECORD_OFFSET: usize = FLUSHED_OFFSET + 8;
const LAST_CRC_OFFSET: usize = LAST_RECORD_OFFSET + 8;
const _RESERVED2_OFFSET: usize = LAST_CRC_OFFSET + 4;
const CRC_OFFSET: usize = 60;
/// Size of the checkpoint file in bytes.
pub const CHECKPOINT_LEN: usize = CRC_OFFSET + 4;

/// Whether the store that wrote the checkpoint shut down cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownState {
    /// The store was open (or crashed) when this was written.
    Running,
    /// Written by a clean close after everything was flushed.
    Clean,
}

/// The start of the last record below `flushed`, with its CRC, so recovery
/// can tell a real log from one replaced by an older or shorter copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMark {
    /// Physical offset of the record.
    pub offset: u64,
    /// Its CRC.
    pub crc: u32,
}

/// Decoded checkpoint contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Clean shutdown or not.
    pub state: ShutdownState,
    /// Incremented on every write.
    pub generation: u64,
    /// Every commit-log byte below this offset was durable when the
    /// checkpoint was written; it is a record boundary.
    pub flushed: u64,
    /// The last record below `flushed`, if any.
    pub last_record: Option<RecordMark>,
}

impl Checkpoint {
    pub(crate) fn encode(&self) -> [u8; CHECKPOINT_LEN] {
        let mut b = [0u8; CHECKPOINT_LEN];
        b[..8].copy_from_slice(&CHECKPOINT_MAGIC);
        put_u16(&mut b, VERSION_OFFSET, CHECKPOINT_VERSION);
        let state: u16 = match self.state {
            ShutdownState::Running => 1,
            ShutdownState::Clean => 2,
        };
        put_u16(&mut b, STATE_OFFSET, state);
        put_u64(&mut b, GENERATION_OFFSET, self.generation);
        put_u64(&mut b, FLUSHED_OFFSET, self.flushed);
        let (off, crc) = self.last_record.map_or((u64::MAX, 0), |m| (m.offset, m.crc));
        put_u64(&mut b, LAST_RECORD_OFFSET, off);
        put_u32(&mut b, LAST_CRC_OFFSET, crc);
        let sum = crc32fast::hash(&b[..CRC_OFFSET]);
        put_u32(&mut b, CRC_OFFSET, sum);
        b
    }

    pub(crate) fn decode(b: &[u8]) -> std::result::Result<Self, (u64, CorruptionKind)> {
        if b.len() != CHECKPOINT_LEN {
            return Err((0, CorruptionKind::BadLength { length: b.len() as u64 }));
        }
        if b[..8] != CHECKPOINT_MAGIC {
            return Err((0, CorruptionKind::BadMagic { found: get_u64(b, 0) }));
        }
        let stored = get_u32(b, CRC_OFFSET);
        let computed = crc32fast::hash(&b[..CRC_OFFSET]);
        if stored != computed {
            return Err((CRC_OFFSET as u64, CorruptionKind::ChecksumMismatch { stored, computed }));
        }
        let version = get_u16(b, VERSION_OFFSET);
        if version != CHECKPOINT_VERSION {
            return Err((VERSION_OFFSET as u64, CorruptionKind::UnsupportedVersion { found: u32::from(version) }));
        }
        let state = match get_u16(b, STATE_OFFSET) {
            1 => ShutdownState::Running,
            2 => ShutdownState::Clean,
            _ => return Err((STATE_OFFSET as u64, CorruptionKind::InvalidField { field: "state" })),
        };
        let off = get_u64(b, LAST_RECORD_OFFSET);
        let last_record = (off != u64::MAX).then(|| RecordMark { offset: off, crc: get_u32(b, LAST_CRC_OFFSET) });
        Ok(Self { state, generation: get_u64(b, GENERATION_OFFSET), flushed: get_u64(b, FLUSHED_OFFSET), last_record })
    }
}

/// Reads the checkpoint in `dir`: `Ok(None)` if there is none.
pub(crate) fn read(storage: &dyn Storage, dir: &Path) -> Result<Option<Checkpoint>> {
    let path = dir.join(CHECKPOINT_FILE);
    if !storage.exists(&path).map_err(|e| Error::io("stat checkpoint", &path, e))? {
        return Ok(None);
    }
    let file = storage.open(&path, OpenMode::Read).map_err(|e| Error::io("open checkpoint", &path, e))?;
    // One byte more than a checkpoint, so an over-long file is detected
    // without an allocation sized from disk.
    let mut buf = [0u8; CHECKPOINT_LEN + 1];
    let n = read_full_at(file.as_ref(), &mut buf, 0).map_err(|e| Error::io("read checkpoint", &path, e))?;
    Checkpoint::decode(&buf[..n]).map(Some).map_err(|(off, kind)| Error::corruption(&path, off, kind))
}

/// Atomically replaces the checkpoint in `dir`.
pub(crate) fn write(storage: &dyn Storage, dir: &Path, cp: &Checkpoint) -> Result<()> {
    let tmp = dir.join(CHECKPOINT_TMP);
    let path = dir.join(CHECKPOINT_FILE);
    let file = storage.open(&tmp, OpenMode::CreateTruncate).map_err(|e| Error::io("create checkpoint", &tmp, e))?;
    write_all_at(file.as_ref(), &cp.encode(), 0).map_err(|e| Error::io("write checkpoint", &tmp, e))?;
    file.sync_data().map_err(|e| Error::io("fdatasync checkpoint", &tmp, e))?;
    drop(file);
    storage.rename(&tmp, &path).map_err(|e| Error::io("rename checkpoint", &tmp, e))?;
    storage.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_pinned() {
        // FORMAT.md section 5 lists these offsets; change both together.
        assert_eq!(STATE_OFFSET, 10);
        assert_eq!(GENERATION_OFFSET, 16);
        assert_eq!(FLUSHED_OFFSET, 24);
        assert_eq!(LAST_RECORD_OFFSET, 32);
        assert_eq!(LAST_CRC_OFFSET, 40);
        assert_eq!(_RESERVED2_OFFSET, 44);
        assert_eq!(CHECKPOINT_LEN, 64);
    }

    #[test]
    fn round_trip_and_every_bit_flip() {
        for cp in [
            Checkpoint {
                state: ShutdownState::Clean,
                generation: 7,
                flushed: 4096,
                last_record: Some(RecordMark { offset: 64, crc: 0xabcd }),
            },
            Checkpoint { state: ShutdownState::Running, generation: 1, flushed: 64, last_record: None },
        ] {
            let b = cp.encode();
            assert_eq!(Checkpoint::decode(&b), Ok(cp));
            for bit in 0..CHECKPOINT_LEN * 8 {
                let mut c = b;
                c[bit / 8] ^= 1 << (bit % 8);
                assert!(Checkpoint::decode(&c).is_err(), "bit {bit}");
            }
            assert!(Checkpoint::decode(&b[..63]).is_err());
        }
    }
}
