//! Opening directories full of damage never panics and never serves
//! garbage: random bytes after valid headers, random headers, random
//! checkpoints, random file names and sizes. Every outcome is either a
//! recovered log whose records all pass their CRC, or a typed error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{body_for, copy_dir, deterministic_opts, draft, seed, Rng};
use mqstore::commitlog::{CommitLog, COMMITLOG_DIR};
use mqstore::{Error, PhysicalOffset};
use std::fs;
use std::path::Path;

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next() as u8).collect()
}

/// Builds a real log in `dir`, then damages it in one random way.
fn damaged_store(dir: &Path, rng: &mut Rng) -> String {
    let live = dir.with_extension("live");
    let log = CommitLog::open(&live, deterministic_opts()).unwrap();
    for i in 0..(20 + rng.below(200)) {
        log.append(&draft("G", i, &body_for(i, 1 + rng.below(900) as usize))).unwrap();
    }
    if rng.below(2) == 0 {
        log.close().unwrap();
        copy_dir(&live, dir);
    } else {
        // Copy it as a crash would leave it (no clean checkpoint).
        copy_dir(&live, dir);
        drop(log);
    }
    let logdir = dir.join(COMMITLOG_DIR);
    let mut segs: Vec<_> = fs::read_dir(&logdir).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    let victim = segs[rng.below(segs.len() as u64) as usize].clone();
    let mut bytes = fs::read(&victim).unwrap();
    let what = match rng.below(7) {
        0 => {
            // Random bytes over a random stretch after the header.
            let at = 64 + rng.below((bytes.len() - 64) as u64) as usize;
            let n = (1 + rng.below(4096) as usize).min(bytes.len() - at);
            bytes[at..at + n].copy_from_slice(&random_bytes(rng, n));
            format!("garbage at {at}+{n} in {}", victim.display())
        }
        1 => {
            let at = rng.below(64) as usize;
            bytes[at] = rng.next() as u8;
            format!("header byte {at} of {}", victim.display())
        }
        2 => {
            let len = rng.below(bytes.len() as u64) as usize;
            bytes.truncate(len);
            format!("{} cut to {len}", victim.display())
        }
        3 => {
            bytes = random_bytes(rng, bytes.len());
            format!("{} replaced by noise", victim.display())
        }
        4 => {
            let n = rng.below(200) as usize;
            fs::write(dir.join("checkpoint"), random_bytes(rng, n)).unwrap();
            "random checkpoint".to_string()
        }
        5 => {
            let (name, n) = (rng.below(1 << 40), rng.below(9000) as usize);
            fs::write(logdir.join(format!("{name:020}")), random_bytes(rng, n)).unwrap();
            "stray segment file".to_string()
        }
        _ => {
            // Flip a few random bits anywhere in the file.
            for _ in 0..(1 + rng.below(8)) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            format!("bit flips in {}", victim.display())
        }
    };
    fs::write(&victim, &bytes).unwrap_or(());
    what
}

#[test]
fn damaged_directories_open_cleanly_or_fail_with_a_typed_error() {
    let base = seed();
    let mut rng = Rng(base);
    let rounds = std::env::var("MQSTORE_GARBAGE_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    for round in 0..rounds {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let what = damaged_store(&store, &mut rng);
        let ctx = format!("seed {base} round {round}: {what}");
        match CommitLog::open(&store, deterministic_opts()) {
            Ok(log) => {
                // Every record served passes its CRC (reads verify it) and
                // carries a body derived from its queue offset. Damage below
                // the checkpoint is not rescanned at open (that is what the
                // checkpoint is for): reading it is a typed error, never
                // garbage.
                for r in log.iter(PhysicalOffset(0)) {
                    let r = match r {
                        Ok(r) => r,
                        Err(Error::Corruption { .. }) => break,
                        Err(e) => panic!("{ctx}: read failed after a successful open: {e}"),
                    };
                    let id = r.queue_offset();
                    assert_eq!(r.topic(), "G", "{ctx}");
                    assert_eq!(&r.body()[..], &body_for(id, r.body().len())[..], "{ctx}: garbage served");
                }
                // And it still takes appends and reopens.
                log.append(&draft("G", 1_000_000, b"after")).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                log.close().unwrap_or_else(|e| panic!("{ctx}: {e}"));
                CommitLog::open(&store, deterministic_opts()).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
            }
            Err(Error::Corruption { .. }) => {}
            Err(other) => panic!("{ctx}: unexpected error kind: {other}"),
        }
    }
}
