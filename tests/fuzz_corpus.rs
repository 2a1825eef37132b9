#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and every
//! crash input ever found (`fuzz/regressions/<target>/`) through the same
//! entry points the fuzz targets call (`mqstore::fuzzing`), on stable Rust:
//! no input may panic, and a damaged directory image that opens must serve
//! nothing that contradicts what was sent and, when only derived files were
//! damaged, lose nothing. `fuzz/README.md` says how to run the targets.

use mqstore::fuzzing::{self, BaseImage, Mutation, Plan};
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

/// Replays the image corpus of `target` on base image `kind`: an image
/// that opens serves nothing that contradicts what was sent and, when only
/// derived files were damaged, loses nothing.
fn replay_images(target: &str, kind: BaseImage) {
    let opened = std::sync::atomic::AtomicUsize::new(0);
    let n = replay(target, |d| {
        if let Ok(report) = fuzzing::store_image_of(kind, d) {
            opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert!(report.violations.is_empty(), "{:?}", report.violations);
            assert_eq!(report.lost, 0, "derived-data damage lost messages: {report:?}");
        }
    });
    // A corpus where nothing opens would test only refusals.
    let opened = opened.into_inner();
    assert!(opened > 0 && opened < n, "{opened} of {n} images opened");
}

#[test]
fn store_images_open_or_refuse_and_never_serve_garbage() {
    replay_images("store_image", BaseImage::TwoGenerations);
}

#[test]
fn retained_store_images_open_or_refuse_and_never_serve_garbage() {
    replay_images("store_image_retained", BaseImage::Retained);
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

/// The retained image: what retention kept is all read, from a queue start
/// whose first units lead to removed records.
#[test]
fn undamaged_retained_image_reads_every_kept_message() {
    let plan = Plan { first_generation: false, mutations: Vec::new() };
    let report = fuzzing::run_plan_on(BaseImage::Retained, &plan).unwrap();
    assert!(report.violations.is_empty());
    assert_eq!((report.read_errors, report.lost), (0, 0), "{report:?}");
    // Every stored record is reached through a queue; retention removed
    // some of the 60 sent, and kept more than the 12 sent after it.
    assert_eq!(report.pulled, report.records, "{report:?}");
    assert!((13..60).contains(&report.records), "{report:?}");
}

/// A unit anywhere in a trimmed queue that is damaged to point below the
/// retention floor hides none of the live messages around it: not from a
/// consumer starting at the queue's first offset, not at its position.
/// Zeroed, it is seen to be damaged (no record starts at offset 0) and
/// repaired. Pointing where a removed record could have been, only its own
/// message, when no unit before it shows the damage, cannot be told from
/// one retention removed (`hidden`).
#[test]
fn a_unit_damaged_to_look_removed_hides_no_live_message() {
    let files = fuzzing::base_files_of(BaseImage::Retained).unwrap();
    for (pointer, want_hidden) in [(0u64, 0), (64, 1)] {
        let (mut runs, mut hidden) = (0, 0);
        for (i, (path, len)) in files.iter().enumerate() {
            if !path.starts_with("/fuzz/consumequeue/orders") && !path.starts_with("/fuzz/consumequeue/events") {
                continue;
            }
            for unit in 0..len / 20 {
                let (file, at) = (i as u16, (unit * 20) as u32);
                let mutations = vec![Mutation::Overwrite { file, at, bytes: pointer.to_be_bytes().to_vec() }];
                let plan = Plan { first_generation: false, mutations };
                let report = fuzzing::run_plan_on(BaseImage::Retained, &plan).unwrap();
                let ctx = format!("{} unit {unit} -> {pointer}: {report:?}", path.display());
                assert!(report.violations.is_empty(), "{ctx}");
                assert_eq!(report.lost, 0, "{ctx}");
                assert!(report.hidden <= 1, "{ctx}");
                runs += 1;
                hidden += report.hidden;
            }
        }
        assert!(runs >= 20, "{runs} units damaged");
        // At 64: only `orders/1`'s first stored message, whose unit opens
        // the queue's first file. Elsewhere the damaged unit follows one
        // with a larger offset, and recovery's monotonicity check repairs
        // the queue.
        assert_eq!(hidden, want_hidden, "{runs} units damaged, pointing at {pointer}");
    }
}
