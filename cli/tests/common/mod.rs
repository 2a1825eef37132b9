//! Helpers shared by the CLI tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Every entry under `dir` with its length, modification time and bytes
/// (empty for directories): equal listings before and after a command mean
/// it changed nothing.
pub fn listing(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            let bytes = if meta.is_dir() {
                todo.push(e.path());
                Vec::new()
            } else {
                std::fs::read(e.path()).unwrap()
            };
            out.insert(e.path(), (meta.len(), meta.modified().unwrap(), bytes));
        }
    }
    out
}
