//! Entry points for the fuzz targets in `fuzz/` and for
//! `tests/fuzz_corpus.rs`, which replays their corpora on stable Rust.
//!
//! Not a public API (hidden, behind the `fuzzing` feature): it exposes the
//! crate's on-disk decoders, which are otherwise internal. Each entry point
//! takes arbitrary bytes, runs the same code the store runs on a file of
//! that kind, and returns `Ok` or a typed [`Error`](crate::Error). A panic,
//! a hang or an allocation sized from the input rather than bounded by the
//! format is a bug in the library, never in the input.
//!
//! Most entry points read their first byte as a *mode* and the rest as the
//! file image. Bit 0 of the mode means "repair the checksums" (and the
//! framing fields that only say how long the image is) before decoding, so
//! the fuzzer gets past the CRC to the parsing behind it; without it the
//! bytes are decoded exactly as given. Other mode bits are documented per
//! entry point. Files are placed in an in-memory [`SimStorage`] so no run
//! touches the disk.
//!
//! Every decoder here reports damage as [`Error::Corruption`]; callers
//! should treat any `Err` as an acceptable outcome. Cross-checks that must
//! hold whatever the input (a decoded value re-encodes to itself, two
//! decoders of the same record agree) are `debug_assert!`s, which the fuzz
//! builds and the replay test enable.
//!
//! [`Error::Corruption`]: crate::Error::Corruption

mod codecs;
mod image;
mod metadata;

pub use codecs::{checkpoint, consume_queue, index_file, record};
pub use image::{
    base_files, base_files_of, run_plan, run_plan_on, store_image, store_image_of, BaseImage, ImageReport, Mutation,
    Plan,
};
pub use metadata::{metadata, METADATA_KINDS};

use crate::error::{Error, Result};
use crate::storage::{write_all_at, OpenMode, SimStorage, Storage};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Mode bit: repair checksums and length fields before decoding.
const REPAIR: u8 = 1;

/// The store root every in-memory image is placed under.
fn root() -> PathBuf {
    PathBuf::from("/fuzz")
}

/// `(mode, image)`: the first byte and the rest (mode 0 for empty input).
fn split_mode(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((mode, rest)) => (*mode, rest),
        None => (0, data),
    }
}

/// Writes `bytes` as the file `path` of `storage`, creating its directory.
fn put_file(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        storage.create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    }
    let file = storage.open(path, OpenMode::CreateTruncate).map_err(|e| Error::io("create file", path, e))?;
    write_all_at(file.as_ref(), bytes, 0).map_err(|e| Error::io("write file", path, e))
}

/// A fresh in-memory file system holding `bytes` at `path`.
fn sim_with(path: &Path, bytes: &[u8]) -> Result<Arc<SimStorage>> {
    let sim = Arc::new(SimStorage::new());
    put_file(sim.as_ref(), path, bytes)?;
    Ok(sim)
}

/// Overwrites the big-endian `u32` at `at`, if it fits.
fn set_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(dst) = b.get_mut(at..at + 4) {
        dst.copy_from_slice(&v.to_be_bytes());
    }
}

/// Overwrites the big-endian `u64` at `at`, if it fits.
fn set_u64(b: &mut [u8], at: usize, v: u64) {
    if let Some(dst) = b.get_mut(at..at + 8) {
        dst.copy_from_slice(&v.to_be_bytes());
    }
}

/// The big-endian `u32` at `at`, or 0 past the end.
fn get_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map_or(0, u32::from_be_bytes)
}
