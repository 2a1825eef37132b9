#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and every
//! crash input ever found (`fuzz/regressions/<target>/`) through the same
//! entry points the fuzz targets call (`mqstore::fuzzing`), on stable Rust:
//! no input may panic, and a damaged directory image that opens must serve
//! nothing that contradicts what was sent and, when only derived files were
//! damaged, lose nothing. `fuzz/README.md` says how to run the targets.

use mqstore::fuzzing::{self, Mutation, Plan};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Every file of `fuzz/<kind>/<target>/`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs `check` on every corpus and regression input of `target`; fails
/// naming every input that panicked. Returns how many inputs ran.
fn replay(target: &str, check: impl Fn(&[u8])) -> usize {
    let corpus = inputs("corpus", target);
    assert!(!corpus.is_empty(), "fuzz/corpus/{target} is empty: nothing would be replayed");
    let all: Vec<PathBuf> = corpus.into_iter().chain(inputs("regressions", target)).collect();
    let mut failed = Vec::new();
    for path in &all {
        let data = std::fs::read(path).unwrap();
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: {} of {} inputs panicked: {failed:#?}", failed.len(), all.len());
    all.len()
}

#[test]
fn record_inputs_never_panic() {
    replay("record", |d| drop(fuzzing::record(d)));
}

#[test]
fn consume_queue_inputs_never_panic() {
    replay("consume_queue", |d| drop(fuzzing::consume_queue(d)));
}

#[test]
fn index_file_inputs_never_panic() {
    replay("index_file", |d| drop(fuzzing::index_file(d)));
}

#[test]
fn checkpoint_inputs_never_panic() {
    replay("checkpoint", |d| drop(fuzzing::checkpoint(d)));
}

#[test]
fn metadata_inputs_never_panic() {
    replay("metadata", |d| drop(fuzzing::metadata(d)));
}

#[test]
fn store_images_open_or_refuse_and_never_serve_garbage() {
    let opened = std::sync::atomic::AtomicUsize::new(0);
    let n = replay("store_image", |d| {
        if let Ok(report) = fuzzing::store_image(d) {
            opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert!(report.violations.is_empty(), "{:?}", report.violations);
            assert_eq!(report.lost, 0, "derived-data damage lost messages: {report:?}");
        }
    });
    // A corpus where nothing opens would test only refusals.
    let opened = opened.into_inner();
    assert!(opened > 0 && opened < n, "{opened} of {n} images opened");
}

/// The oracle of the image target sees every message of an undamaged
/// image, and a lost one when a derived file's loss is not repaired.
#[test]
fn undamaged_image_reads_every_message() {
    let report = fuzzing::run_plan(&Plan { first_generation: false, mutations: Vec::new() }).unwrap();
    // 48 messages, 4 of them delayed (held in the schedule topic's queues).
    assert_eq!((report.pulled, report.records, report.read_errors, report.lost), (48, 48, 0, 0), "{report:?}");
    assert!(report.violations.is_empty());
}

/// Deleting every consume-queue file (derived data) loses nothing: the
/// store rebuilds them from the commit log.
#[test]
fn deleted_consume_queues_are_rebuilt() {
    let files = fuzzing::base_files().unwrap();
    let queues = files.iter().filter(|(p, _)| p.starts_with("/fuzz/consumequeue"));
    let first = files.iter().position(|(p, _)| p.starts_with("/fuzz/consumequeue")).unwrap();
    let mutations = (0..queues.count()).map(|i| Mutation::Delete { file: (first + i) as u16 }).collect();
    let report = fuzzing::run_plan(&Plan { first_generation: false, mutations }).unwrap();
    assert_eq!((report.lost, report.pulled), (0, 48), "{report:?}");
}
