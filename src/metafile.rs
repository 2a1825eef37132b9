//! Small metadata files replaced atomically and protected by a CRC.
//!
//! Every metadata file (the topic table, the consumer offsets) is one
//! envelope: a 20-byte header followed by a payload whose meaning belongs to
//! the caller, and optionally an 8-byte generation number. The file is
//! replaced atomically (write `<name>.tmp`, fdatasync, rename over
//! `<name>`, fsync the directory), so a crash leaves either the old or the
//! new complete file, never a mix. A leftover `<name>.tmp` is never read: it
//! is overwritten by the next write.
//!
//! Files the store cannot rebuild keep two numbered generations instead
//! (see [`generations`]).
//!
//! Header layout (big-endian, FORMAT.md "Metadata file envelope"):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic (chosen per file kind) |
//! | 8 | 2 | version (interpreted by the caller) |
//! | 10 | 2 | flags: bit 0 = a generation trailer follows the payload |
//! | 12 | 4 | payload length |
//! | 16 | 4 | CRC-32 of the header with this field zeroed, the payload and the trailer |

pub(crate) mod generations;

use crate::codec::{get_u16, get_u32, get_u64, put_u16, put_u32};
use crate::error::{CorruptionKind, Error, Result};
use crate::storage::{read_full_at, write_all_at, OpenMode, Storage};
use std::path::{Path, PathBuf};

/// Directory under the store root holding the metadata files.
pub(crate) const CONFIG_DIR: &str = "config";

const MAGIC_OFFSET: usize = 0;
/// Offset of the version field, for callers reporting an unknown version.
pub(crate) const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
/// Offset of the flags field (reserved and zero before generations).
const FLAGS_OFFSET: usize = VERSION_OFFSET + 2;
const LENGTH_OFFSET: usize = FLAGS_OFFSET + 2;
const CRC_OFFSET: usize = LENGTH_OFFSET + 4;
/// Size of the envelope header; the payload starts here.
pub(crate) const HEADER_LEN: usize = CRC_OFFSET + 4;
/// Suffix of the temporary file a replacement is written to.
const TMP_SUFFIX: &str = ".tmp";
/// Flag bit: the payload is followed by a big-endian `u64` generation.
const FLAG_GENERATION: u16 = 1;
/// Size of the generation trailer.
const GENERATION_LEN: u64 = 8;

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    /// Payload version (interpreted by the caller).
    pub(crate) version: u16,
    /// The payload.
    pub(crate) payload: Vec<u8>,
    /// The generation trailer, if the file has one.
    pub(crate) generation: Option<u64>,
}

/// Atomically replaces `dir/name` with an envelope holding `payload`.
///
/// Creates `dir` (and fsyncs its parent) if it is missing. On any error the
/// previous file is still in place unless the error is the final directory
/// fsync, in which case either version may survive a crash: that error
/// reports `is_failed_sync()`, and the caller must fence rather than retry.
pub(crate) fn write_atomic(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    magic: [u8; 8],
    version: u16,
    payload: &[u8],
) -> Result<()> {
    let bytes = encode(magic, version, payload, None)?;
    let tmp = write_tmp(storage, dir, name, &bytes)?;
    let path = dir.join(name);
    storage.rename(&tmp, &path).map_err(|e| Error::io("rename metadata file", &tmp, e))?;
    storage.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))
}

/// Writes `bytes` to `dir/<name>.tmp` (creating `dir` if needed) and
/// fdatasyncs it; returns its path. Nothing else is touched.
fn write_tmp(storage: &dyn Storage, dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    ensure_dir(storage, dir)?;
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let file = storage.open(&tmp, OpenMode::CreateTruncate).map_err(|e| Error::io("create metadata file", &tmp, e))?;
    write_all_at(file.as_ref(), bytes, 0).map_err(|e| Error::io("write metadata file", &tmp, e))?;
    file.sync_data().map_err(|e| Error::io("fdatasync metadata file", &tmp, e))?;
    Ok(tmp)
}

/// Creates `dir` if needed and makes its directory entry durable, so a
/// metadata file renamed into it cannot vanish with the directory.
fn ensure_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    if storage.exists(dir).map_err(|e| Error::io("stat directory", dir, e))? {
        return Ok(());
    }
    storage.create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    storage.sync_dir(parent).map_err(|e| Error::io("fsync directory", parent, e))
}

/// Header, payload and (with `generation`) the trailer, CRC filled in.
fn encode(magic: [u8; 8], version: u16, payload: &[u8], generation: Option<u64>) -> Result<Vec<u8>> {
    let length = u32::try_from(payload.len())
        .map_err(|_| Error::InvalidArgument(format!("metadata payload of {} bytes exceeds 4 GiB", payload.len())))?;
    let mut b = vec![0u8; HEADER_LEN];
    b[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&magic);
    put_u16(&mut b, VERSION_OFFSET, version);
    put_u16(&mut b, FLAGS_OFFSET, if generation.is_some() { FLAG_GENERATION } else { 0 });
    put_u32(&mut b, LENGTH_OFFSET, length);
    b.extend_from_slice(payload);
    if let Some(g) = generation {
        b.extend_from_slice(&g.to_be_bytes());
    }
    // The CRC field is still zero here, which is exactly what it covers.
    let crc = crc32fast::hash(&b);
    put_u32(&mut b, CRC_OFFSET, crc);
    Ok(b)
}

/// Reads `dir/name`: `Ok(None)` if it does not exist, else its version and
/// payload. The version is not checked: the caller decides what it accepts.
/// A generation trailer, if any, is validated and ignored.
///
/// Every defect is a typed [`Error::Corruption`], as [`read_envelope`].
pub(crate) fn read(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    magic: [u8; 8],
    max_payload: u32,
) -> Result<Option<(u16, Vec<u8>)>> {
    Ok(read_envelope(storage, &dir.join(name), magic, max_payload)?.map(|e| (e.version, e.payload)))
}

/// Reads the envelope at `path`: `Ok(None)` if it does not exist.
///
/// Every defect is a typed [`Error::Corruption`] naming the file and the
/// byte offset: a wrong magic, a length above `max_payload`, a file shorter
/// or longer than its header says, a CRC mismatch, then unknown flag bits
/// (`UnsupportedVersion`: a newer writer's file, not damage). At most
/// `min(max_payload, file length)` bytes are allocated, whatever the length
/// field claims.
pub(crate) fn read_envelope(
    storage: &dyn Storage,
    path: &Path,
    magic: [u8; 8],
    max_payload: u32,
) -> Result<Option<Envelope>> {
    if !storage.exists(path).map_err(|e| Error::io("stat metadata file", path, e))? {
        return Ok(None);
    }
    let file = match storage.open(path, OpenMode::Read) {
        Ok(f) => f,
        // Renamed away since `exists` (a writer moving the current file to
        // its previous generation, beside a reader that takes no lock): the
        // file is gone as if it never existed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open metadata file", path, e)),
    };
    let file_len = file.len().map_err(|e| Error::io("stat metadata file", path, e))?;
    let bad = |offset: u64, kind: CorruptionKind| Error::corruption(path, offset, kind);

    let mut header = [0u8; HEADER_LEN];
    let n = read_full_at(file.as_ref(), &mut header, 0).map_err(|e| Error::io("read metadata file", path, e))?;
    if n < VERSION_OFFSET {
        return Err(bad(n as u64, CorruptionKind::Truncated));
    }
    if header[MAGIC_OFFSET..VERSION_OFFSET] != magic {
        return Err(bad(MAGIC_OFFSET as u64, CorruptionKind::BadMagic { found: get_u64(&header, MAGIC_OFFSET) }));
    }
    if n < HEADER_LEN {
        return Err(bad(n as u64, CorruptionKind::Truncated));
    }
    let length = get_u32(&header, LENGTH_OFFSET);
    if length > max_payload {
        return Err(bad(LENGTH_OFFSET as u64, CorruptionKind::BadLength { length: u64::from(length) }));
    }
    let flags = get_u16(&header, FLAGS_OFFSET);
    let trailer = if flags & FLAG_GENERATION != 0 { GENERATION_LEN } else { 0 };
    // Cannot overflow: HEADER_LEN + u32::MAX + 8 fits in u64.
    let end = HEADER_LEN as u64 + u64::from(length) + trailer;
    if file_len < end {
        return Err(bad(file_len, CorruptionKind::Truncated));
    }
    if file_len > end {
        return Err(bad(end, CorruptionKind::BadLength { length: u64::from(length) }));
    }
    let size = usize::try_from(length)
        .map_err(|_| bad(LENGTH_OFFSET as u64, CorruptionKind::BadLength { length: u64::from(length) }))?;
    // Bounded by max_payload and by the file length checked above; the
    // trailer (0 or 8 bytes) is read with the payload and split off below.
    let mut body = vec![0u8; size + trailer as usize];
    let got = read_full_at(file.as_ref(), &mut body, HEADER_LEN as u64)
        .map_err(|e| Error::io("read metadata file", path, e))?;
    if got < body.len() {
        // The file shrank between the length check and the read.
        return Err(bad((HEADER_LEN + got) as u64, CorruptionKind::Truncated));
    }
    let stored = get_u32(&header, CRC_OFFSET);
    header[CRC_OFFSET..HEADER_LEN].fill(0);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    hasher.update(&body);
    let computed = hasher.finalize();
    if stored != computed {
        return Err(bad(CRC_OFFSET as u64, CorruptionKind::ChecksumMismatch { stored, computed }));
    }
    if flags & !FLAG_GENERATION != 0 {
        return Err(bad(FLAGS_OFFSET as u64, CorruptionKind::UnsupportedVersion { found: u32::from(flags) }));
    }
    let generation = (trailer > 0).then(|| get_u64(&body, size));
    body.truncate(size);
    Ok(Some(Envelope { version: get_u16(&header, VERSION_OFFSET), payload: body, generation }))
}

/// Bounds-checked reader over a payload read by [`read`], reporting every
/// defect as a [`CorruptionKind`] at its offset within the file (payload
/// position plus [`HEADER_LEN`]).
#[derive(Debug)]
pub(crate) struct PayloadReader<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> PayloadReader<'a> {
    /// Reads `payload`, which came from the file at `path`.
    pub(crate) fn new(path: &'a Path, payload: &'a [u8]) -> Self {
        Self { path, buf: payload, pos: 0 }
    }

    /// File offset of the next unread byte.
    pub(crate) fn file_offset(&self) -> u64 {
        (HEADER_LEN + self.pos) as u64
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A corruption error at file offset `offset` of this file.
    pub(crate) fn corruption(&self, offset: u64, kind: CorruptionKind) -> Error {
        Error::corruption(PathBuf::from(self.path), offset, kind)
    }

    /// The next `n` bytes, or `Truncated` if fewer remain.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.corruption(self.file_offset(), CorruptionKind::Truncated));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next byte.
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    /// The next big-endian `u16`.
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(get_u16(self.bytes(2)?, 0))
    }

    /// The next big-endian `u32`.
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(get_u32(self.bytes(4)?, 0))
    }

    /// The next big-endian `u64`.
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(get_u64(self.bytes(8)?, 0))
    }

    /// A `u16` length followed by that many UTF-8 bytes; non-UTF-8 is
    /// `InvalidField { field }` at the start of the bytes.
    pub(crate) fn str16(&mut self, field: &'static str) -> Result<&'a str> {
        let len = usize::from(self.u16()?);
        let at = self.file_offset();
        let raw = self.bytes(len)?;
        std::str::from_utf8(raw).map_err(|_| self.corruption(at, CorruptionKind::InvalidField { field }))
    }

    /// Succeeds only if every byte was consumed: trailing bytes mean the
    /// count and the entries disagree.
    pub(crate) fn finish(self) -> Result<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.corruption(self.file_offset(), CorruptionKind::BadLength { length: self.buf.len() as u64 }))
        }
    }
}

/// Appends `s` as a `u16` length and its bytes. Callers validate names first
/// (topic and group names are at most 255 bytes), so the length always fits;
/// a longer string is refused rather than cut.
pub(crate) fn put_str16(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let len = u16::try_from(s.len())
        .map_err(|_| Error::InvalidArgument(format!("name of {} bytes exceeds 65535 bytes", s.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FaultKind, FaultPlan, FaultyStorage, StdStorage};
    use std::sync::Arc;

    const MAGIC: [u8; 8] = [0x8D, b'M', b'Q', b'X', b'\r', b'\n', 0x1A, b'\n'];
    const NAME: &str = "meta";

    fn disk() -> StdStorage {
        StdStorage
    }

    fn read_std(dir: &Path, max: u32) -> Result<Option<(u16, Vec<u8>)>> {
        read(&disk(), dir, NAME, MAGIC, max)
    }

    fn corruption_kind(r: Result<Option<(u16, Vec<u8>)>>) -> (PathBuf, u64, CorruptionKind) {
        match r {
            Err(Error::Corruption { path, offset, kind }) => (path, offset, kind),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn constants_are_pinned() {
        // FORMAT.md "Metadata file envelope" lists these; change both together.
        assert_eq!(VERSION_OFFSET, 8);
        assert_eq!(FLAGS_OFFSET, 10);
        assert_eq!(LENGTH_OFFSET, 12);
        assert_eq!(CRC_OFFSET, 16);
        assert_eq!(HEADER_LEN, 20);
        assert_eq!(TMP_SUFFIX, ".tmp");
        assert_eq!((FLAG_GENERATION, GENERATION_LEN), (1, 8));
    }

    #[test]
    fn encoding_is_pinned() {
        let b = encode(MAGIC, 3, b"hi", None).unwrap();
        let mut expect = MAGIC.to_vec();
        expect.extend_from_slice(&[0, 3, 0, 0, 0, 0, 0, 2]);
        let mut zeroed = expect.clone();
        zeroed.extend_from_slice(&[0, 0, 0, 0, b'h', b'i']);
        expect.extend_from_slice(&crc32fast::hash(&zeroed).to_be_bytes());
        expect.extend_from_slice(b"hi");
        assert_eq!(b, expect);
    }

    #[test]
    fn absent_file_reads_as_none() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read_std(tmp.path(), 100).unwrap(), None);
        assert_eq!(read_std(&tmp.path().join("missing/dir"), 100).unwrap(), None);
    }

    #[test]
    fn round_trip_overwrite_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("config");
        write_atomic(&disk(), &dir, NAME, MAGIC, 1, b"first").unwrap();
        assert_eq!(read_std(&dir, 100).unwrap(), Some((1, b"first".to_vec())));
        write_atomic(&disk(), &dir, NAME, MAGIC, 7, b"").unwrap();
        assert_eq!(read_std(&dir, 100).unwrap(), Some((7, Vec::new())));
        write_atomic(&disk(), &dir, NAME, MAGIC, 2, &[0xAB; 100]).unwrap();
        assert_eq!(read_std(&dir, 100).unwrap(), Some((2, vec![0xAB; 100])));
        assert!(!dir.join("meta.tmp").exists());
        // A different file kind's magic is refused, not misread.
        let other = [0x8D, b'M', b'Q', b'Y', b'\r', b'\n', 0x1A, b'\n'];
        let (path, offset, kind) = corruption_kind(read(&disk(), &dir, NAME, other, 100));
        assert_eq!((path, offset), (dir.join(NAME), 0));
        assert!(matches!(kind, CorruptionKind::BadMagic { .. }));
    }

    #[test]
    fn every_truncation_is_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic(&disk(), tmp.path(), NAME, MAGIC, 1, b"payload!").unwrap();
        let full = std::fs::read(tmp.path().join(NAME)).unwrap();
        for len in 0..full.len() {
            std::fs::write(tmp.path().join(NAME), &full[..len]).unwrap();
            let (path, _, kind) = corruption_kind(read_std(tmp.path(), 100));
            assert_eq!(path, tmp.path().join(NAME));
            assert_eq!(kind, CorruptionKind::Truncated, "length {len}");
        }
    }

    #[test]
    fn every_bit_flip_is_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic(&disk(), tmp.path(), NAME, MAGIC, 1, b"small payload").unwrap();
        let full = std::fs::read(tmp.path().join(NAME)).unwrap();
        for bit in 0..full.len() * 8 {
            let mut c = full.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(tmp.path().join(NAME), &c).unwrap();
            // Also with an unlimited length bound: a flipped length must
            // still be caught by the file size, not by allocation failure.
            for max in [100, u32::MAX] {
                let (_, offset, _) = corruption_kind(read_std(tmp.path(), max));
                assert!(offset <= full.len() as u64, "bit {bit}");
            }
        }
    }

    #[test]
    fn oversized_and_overlong_lengths_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(NAME);
        let mut b = encode(MAGIC, 1, b"abcd", None).unwrap();
        put_u32(&mut b, LENGTH_OFFSET, u32::MAX);
        std::fs::write(&path, &b).unwrap();
        let (_, offset, kind) = corruption_kind(read_std(tmp.path(), 1 << 20));
        assert_eq!((offset, kind), (12, CorruptionKind::BadLength { length: u64::from(u32::MAX) }));
        // With no limit, the claim is checked against the file size before
        // anything is allocated.
        let (_, offset, kind) = corruption_kind(read_std(tmp.path(), u32::MAX));
        assert_eq!((offset, kind), (b.len() as u64, CorruptionKind::Truncated));
        // A payload above the caller's limit is refused even if intact.
        std::fs::write(&path, encode(MAGIC, 1, b"abcd", None).unwrap()).unwrap();
        let (_, offset, kind) = corruption_kind(read_std(tmp.path(), 3));
        assert_eq!((offset, kind), (12, CorruptionKind::BadLength { length: 4 }));
        // Trailing bytes after the payload.
        let mut long = encode(MAGIC, 1, b"abcd", None).unwrap();
        long.push(0);
        std::fs::write(&path, &long).unwrap();
        let (_, offset, kind) = corruption_kind(read_std(tmp.path(), 100));
        assert_eq!((offset, kind), (24, CorruptionKind::BadLength { length: 4 }));
    }

    #[test]
    fn crc_covers_version_and_reserved() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(NAME);
        let mut b = encode(MAGIC, 1, b"x", None).unwrap();
        b[FLAGS_OFFSET] = 1;
        std::fs::write(&path, &b).unwrap();
        let (_, offset, kind) = corruption_kind(read_std(tmp.path(), 100));
        assert_eq!(offset, 16);
        assert!(matches!(kind, CorruptionKind::ChecksumMismatch { .. }));
    }

    #[test]
    fn leftover_tmp_is_ignored_and_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("meta.tmp"), b"torn garbage").unwrap();
        assert_eq!(read_std(tmp.path(), 100).unwrap(), None);
        write_atomic(&disk(), tmp.path(), NAME, MAGIC, 1, b"old").unwrap();
        std::fs::write(tmp.path().join("meta.tmp"), b"torn garbage that is longer than the file").unwrap();
        assert_eq!(read_std(tmp.path(), 100).unwrap(), Some((1, b"old".to_vec())));
        write_atomic(&disk(), tmp.path(), NAME, MAGIC, 1, b"new").unwrap();
        assert_eq!(read_std(tmp.path(), 100).unwrap(), Some((1, b"new".to_vec())));
        assert!(!tmp.path().join("meta.tmp").exists());
    }

    #[test]
    fn failed_sync_or_rename_keeps_the_old_file() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic(&disk(), tmp.path(), NAME, MAGIC, 1, b"old").unwrap();
        let plan = FaultPlan::new();
        let faulty = FaultyStorage::new(Arc::new(StdStorage), plan.clone());

        plan.fail_op("rename", FaultKind::Io);
        let e = write_atomic(&faulty, tmp.path(), NAME, MAGIC, 1, b"new").unwrap_err();
        assert!(matches!(e, Error::Io { op: "rename metadata file", .. }), "{e:?}");
        assert_eq!(read_std(tmp.path(), 100).unwrap(), Some((1, b"old".to_vec())));
        plan.heal();

        plan.fail_syncs(true);
        let e = write_atomic(&faulty, tmp.path(), NAME, MAGIC, 1, b"new").unwrap_err();
        assert!(e.is_failed_sync(), "{e:?}");
        assert_eq!(read_std(tmp.path(), 100).unwrap(), Some((1, b"old".to_vec())));
        plan.heal();

        plan.fail_op("write_at", FaultKind::NoSpace);
        let e = write_atomic(&faulty, tmp.path(), NAME, MAGIC, 1, b"new").unwrap_err();
        assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
        assert_eq!(read_std(tmp.path(), 100).unwrap(), Some((1, b"old".to_vec())));
    }

    #[test]
    fn failing_any_call_leaves_old_or_new_never_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("config");
        let plan = FaultPlan::new();
        let faulty = FaultyStorage::new(Arc::new(StdStorage), plan.clone());
        let mut k = 1;
        loop {
            // Fresh directory each round (missing_directory_is_created covers creation).
            let _ = std::fs::remove_dir_all(&dir);
            write_atomic(&disk(), &dir, NAME, MAGIC, 1, b"old").unwrap();
            plan.fail_call(k, FaultKind::Io, true);
            let r = write_atomic(&faulty, &dir, NAME, MAGIC, 2, b"new");
            plan.heal();
            let now = read_std(&dir, 100).unwrap();
            assert!(now == Some((1, b"old".to_vec())) || now == Some((2, b"new".to_vec())), "call {k}: {now:?}");
            if r.is_ok() {
                assert_eq!(now, Some((2, b"new".to_vec())));
                break;
            }
            // Reading also fails cleanly when any of its calls fails.
            plan.fail_call(k, FaultKind::Io, true);
            assert!(matches!(read(&faulty, &dir, NAME, MAGIC, 100), Ok(Some(_)) | Err(Error::Io { .. })));
            plan.heal();
            k += 1;
        }
        assert!(k > 5, "every call of a write was failed once");
    }

    #[test]
    fn missing_directory_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        write_atomic(&disk(), &dir, NAME, MAGIC, 1, b"x").unwrap();
        assert_eq!(read_std(&dir, 100).unwrap(), Some((1, b"x".to_vec())));
    }

    #[test]
    fn payload_reader_checks_bounds() {
        let p = Path::new("/f");
        let mut r = PayloadReader::new(p, &[0, 2, b'o', b'k', 0, 5, b'x', 0xFF]);
        assert_eq!(r.str16("s").unwrap(), "ok");
        let e = r.str16("s").unwrap_err();
        assert!(matches!(e, Error::Corruption { offset: 26, kind: CorruptionKind::Truncated, .. }), "{e:?}");
        let mut r = PayloadReader::new(p, &[0, 1, 0xFF, 9]);
        let e = r.str16("name").unwrap_err();
        assert!(matches!(
            e,
            Error::Corruption { offset: 22, kind: CorruptionKind::InvalidField { field: "name" }, .. }
        ));
        assert!(matches!(r.u64(), Err(Error::Corruption { kind: CorruptionKind::Truncated, .. })));
        assert!(matches!(
            r.finish(),
            Err(Error::Corruption { offset: 23, kind: CorruptionKind::BadLength { length: 4 }, .. })
        ));
        let mut out = Vec::new();
        put_str16(&mut out, "ab").unwrap();
        assert_eq!(out, [0, 2, b'a', b'b']);
        assert!(put_str16(&mut out, &"x".repeat(70_000)).is_err());
    }
}
