//! Helpers shared by the CLI tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs::{DirEntry, Metadata};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Every entry under `dir` with its length and modification time: equal
/// listings before and after a command mean it changed nothing (cheap:
/// preallocated segments are not read).
pub fn listing(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    walk(dir, |_, meta| (meta.len(), meta.modified().unwrap()))
}

/// [`listing`] plus each file's bytes (empty for directories), for stores
/// small enough to read whole.
pub fn listing_with_bytes(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime, Vec<u8>)> {
    walk(dir, |e, meta| {
        let bytes = if meta.is_dir() { Vec::new() } else { std::fs::read(e.path()).unwrap() };
        (meta.len(), meta.modified().unwrap(), bytes)
    })
}

fn walk<T>(dir: &Path, each: impl Fn(&DirEntry, &Metadata) -> T) -> BTreeMap<PathBuf, T> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            }
            out.insert(e.path(), each(&e, &meta));
        }
    }
    out
}
