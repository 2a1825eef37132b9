//! A real full disk: the store runs on a small tmpfs (mounted by the test;
//! skipped with a message where mounting is not allowed) and is written
//! until the file system is full. Appends fail with `DiskFull`, nothing
//! partial is ever visible, reads keep working, writes resume without a
//! restart once space is freed, no SIGBUS (segments are preallocated), and
//! after reopening every acknowledged message is there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use mqstore::commitlog::{CommitLogOptions, FlushMode};
use mqstore::index::IndexFileSize;
use mqstore::message::Message;
use mqstore::store::{RetentionOptions, Store, StoreOptions};
use mqstore::topic::TopicConfig;
use mqstore::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TOPIC: &str = "t";
const QUEUES: u32 = 2;

/// A mounted tmpfs, unmounted on drop (also when the test panics).
struct Tmpfs {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let parent = tempfile::tempdir().ok()?;
        let path = parent.path().join("fs");
        std::fs::create_dir(&path).ok()?;
        let out =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&path).output();
        match out {
            Ok(o) if o.status.success() => Some(Self { path, _parent: parent }),
            Ok(o) => {
                eprintln!("SKIPPED: cannot mount a tmpfs: {}", String::from_utf8_lossy(&o.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn opts(mode: FlushMode) -> StoreOptions {
    let log = CommitLogOptions::default().segment_size(1 << 20).max_record_size(64 << 10).flush_mode(mode);
    StoreOptions::default()
        .commit_log_options(log)
        .max_body_size(16 << 10)
        .max_properties_size(1 << 10)
        .consume_queue_units_per_file(16)
        .index_file_size(IndexFileSize { slots: 1024, max_entries: 4096 })
        // Only the real ENOSPC is under test here, not the ratio check.
        .retention(RetentionOptions::default().interval(Duration::from_secs(3600)))
}

fn body(i: u64) -> Vec<u8> {
    common::numbered::body(i, 4000 + (i % 7) as usize * 1000)
}

fn served(store: &Store) -> Vec<u64> {
    common::numbered::served_numbers(store, TOPIC, QUEUES)
}

/// Waits until every acknowledged message is served (dispatch is
/// asynchronous).
fn wait_served(store: &Store, acked: &[u64]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = served(store);
        if got == acked {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "served {} of {} acknowledged", got.len(), acked.len());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn fill_until_full(store: &Store, acked: &mut Vec<u64>, next: &mut u64) -> Error {
    loop {
        let end = store.commit_log().max_offset();
        match store.send(Message::new(TOPIC, body(*next))) {
            Ok(_) => acked.push(*next),
            Err(e) => {
                assert_eq!(store.commit_log().max_offset(), end, "a failed send left a partial record");
                return e;
            }
        }
        *next += 1;
        assert!(*next < 100_000, "the disk never filled");
    }
}

/// Writes `path` until the file system is full.
fn fill_file(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

fn run(fs: &Path, mode: FlushMode) {
    let dir = fs.join(format!("{mode:?}"));
    // Ballast, freed later to make room again.
    let ballast = fs.join(format!("ballast-{mode:?}"));
    std::fs::write(&ballast, vec![1u8; 3 << 20]).unwrap();
    let store = Store::open(&dir, opts(mode)).unwrap();
    store.create_topic(TopicConfig::new(TOPIC, QUEUES)).unwrap();
    let (mut acked, mut next) = (Vec::new(), 0u64);
    // Another program fills the disk while the active segment still has
    // room: appends succeed (the segment is preallocated), but new
    // consume-queue and index files cannot be made until space returns.
    let topup = fs.join(format!("topup-{mode:?}"));
    fill_file(&topup);
    for _ in 0..100 {
        store.send(Message::new(TOPIC, body(next))).unwrap();
        acked.push(next);
        next += 1;
    }
    std::fs::remove_file(&topup).unwrap();
    wait_served(&store, &acked);
    let e = fill_until_full(&store, &mut acked, &mut next);
    assert!(matches!(e, Error::DiskFull { .. }), "{mode:?}: expected DiskFull, got {e:?}");
    assert!(acked.len() > 100, "{mode:?}: only {} messages fit", acked.len());
    // Reads keep working, and a second attempt fails the same way.
    wait_served(&store, &acked);
    let again = store.send(Message::new(TOPIC, body(next)));
    assert!(matches!(again, Err(Error::DiskFull { .. })), "{mode:?}: {again:?}");
    // Space comes back: writes resume without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let resumed = fill_until_full(&store, &mut acked, &mut next);
    assert!(matches!(resumed, Error::DiskFull { .. }), "{mode:?}: {resumed:?}");
    wait_served(&store, &acked);
    drop(store);
    // Reopen needs room for nothing new; every acknowledged message is there.
    let store = Store::open(&dir, opts(mode)).unwrap();
    assert_eq!(served(&store), acked, "{mode:?}: after reopen");
    store.close().unwrap();
    eprintln!("{mode:?}: {} messages acknowledged on an 8 MiB tmpfs, all recovered", acked.len());
}

#[test]
fn a_full_tmpfs_refuses_appends_cleanly_and_recovers_when_space_returns() {
    for mode in [FlushMode::Async, FlushMode::Sync] {
        let Some(fs) = Tmpfs::mount("8m") else {
            return;
        };
        run(&fs.path, mode);
    }
}
