#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Crash test of the whole store at once (reliability.md T1): commit log,
//! consume queues, index, consumer offsets, delay progress, retry and
//! dead-letter topics, all under SIGKILL at random moments.
//!
//! Each round re-executes this test binary as a child
//! (`whole_store_child_process`, turned on by [`ENV_CHILD_DIR`]; see
//! `common::spawn_test_child`) on the round's directory. The child opens
//! the store (64 KiB commit-log segments, 32-unit consume-queue files,
//! index files of 512 entries, so every kind of file rolls within a few
//! hundred milliseconds; real delay levels `100ms .. 1s`; offsets persisted
//! every 10 ms), then runs at once:
//!
//! * 1 or 2 producers sending to topics `ws-a` (4 queues) and `ws-b` (3):
//!   plain sends, selector sends, batches of 2 to 4, and delayed sends (a
//!   delay level, or a delivery time up to 1.6 s ahead, which hops
//!   through the levels), every body self-describing (seq, CRC, payload
//!   derived from the seq), reporting each `SendOk` with its place;
//! * a clustering push consumer of group `ws-g` (concurrent listener, 2
//!   threads, batches of 1 to 3) that returns `ReconsumeLater` for one
//!   call in six, so messages go through send-back, the schedule topic and
//!   `%RETRY%ws-g` (and, after 3 failures, `%DLQ%ws-g`); the listener
//!   reports every delivery it handled before returning;
//! * a thread reporting each move of the group's committed offsets.
//!
//! The parent kills the child 5 to 300 ms after it is ready, or (one round
//! in ten) 0 to 8 ms after it starts opening, during recovery. Crashes
//! chain in one directory; after each kill the parent copies the directory
//! (the next child recovers the raw crashed bytes) and opens the copy with
//! [`Store::open`], then checks (`whole_store::verify`):
//!
//! * every queue of every topic (user, schedule, retry, dead-letter) from
//!   its min offset (always 0) to its max: every unit leads to a record of
//!   exactly that topic, queue and queue offset, offsets contiguous, in
//!   log order, every body well formed (0 garbage) with the tag and keys
//!   of its seq; a user topic holds each seq once (delayed delivery is
//!   exactly once); nothing past the max;
//! * the commit log, walked record by record: each record is reached
//!   through its queue and nothing is readable at the recovered end;
//! * every acknowledged message (0 lost), at its acknowledged physical and
//!   queue offset with its body (a delayed one in the schedule queue of
//!   its level); this round's are also pulled at their queue offset,
//!   found by unique id and, once in their topic, by their key;
//! * the group's committed offsets: each must be at most one past the
//!   longest run of offsets, from 0, that the listeners reported handling
//!   (`Success`, or `ReconsumeLater` and so sent back), at most the queue's
//!   end, and never lower than the last round's. The same bound is checked
//!   on every committed offset the child reported while it ran.
//!
//! A child that panics (its stderr says so), exits on its own, reports a
//! garbage delivery or writes a report line that does not parse fails the
//! test. Once an epoch's log passes [`EPOCH_LIMIT`], and after the last
//! round, the parent recovers the directory itself and drains it
//! (`whole_store::drain`): with real time passing and the group running, every
//! acknowledged message must be consumed (in some round or now) or
//! dead-lettered, every delayed one must reach its real topic and queue,
//! every message a listener sent back must be consumed later or
//! dead-lettered, and every acknowledged key must be found by the index.
//!
//! Rounds: 150 per flush mode by default (both modes run in parallel);
//! `MQSTORE_WHOLE_CRASH_ROUNDS=n` sets them, `MQSTORE_SEED` fixes the
//! random choices (timing still varies), `MQSTORE_WHOLE_CRASH_VERBOSE=1`
//! prints every round. On failure the directory is kept and its path
//! printed.

mod common;
mod whole_store;

use common::{env_u64, mix, Rng};
use mqstore::commitlog::FlushMode;
use mqstore::store::Store;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use whole_store::child::{self, ChildConf, CHILD_ERROR_EXIT};
use whole_store::model::Epoch;
use whole_store::msg::frozen_opts;
use whole_store::report::{self, Ack, Event};
use whole_store::{drain, verify};

/// Name of the test that becomes the child.
const CHILD_TEST: &str = "whole_store_child_process";
/// Store directory for the child; unset in normal test runs.
const ENV_CHILD_DIR: &str = "MQSTORE_WHOLE_CRASH_CHILD";
/// The child's [`ChildConf`].
const ENV_CHILD_CONF: &str = "MQSTORE_WHOLE_CRASH_CHILD_CONF";
/// Start a fresh directory once the commit log is this large.
const EPOCH_LIMIT: u64 = 2 << 20;
/// When the parent kills a child that finished opening (ms after).
const KILL_AFTER_READY_MS: std::ops::Range<u64> = 5..301;

/// The child. Returns at once in a normal test run; in the child it never
/// returns: it is killed, or exits with [`CHILD_ERROR_EXIT`].
#[test]
fn whole_store_child_process() {
    let Some(dir) = std::env::var_os(ENV_CHILD_DIR) else {
        return;
    };
    let conf = std::env::var(ENV_CHILD_CONF).unwrap_or_default();
    let err = child::run(Path::new(&dir), &conf);
    eprintln!("whole-store crash child: {err}");
    std::process::exit(CHILD_ERROR_EXIT);
}

#[test]
fn whole_store_survives_sigkill_async() {
    run_mode("async", FlushMode::Async, 0);
}

#[test]
fn whole_store_survives_sigkill_sync() {
    run_mode("sync", FlushMode::Sync, 0x5A5A_A5A5_F0F0_0F0F);
}

#[derive(Debug, Default)]
struct Totals {
    acks: u64,
    ack_checks: u64,
    consumed: u64,
    retried: u64,
    commits_checked: u64,
    aimed_at_open: u64,
    killed_before_ready: u64,
    records_verified: u64,
    drained: u64,
    drain_consumed: u64,
    delayed_checked: u64,
    sent_back_checked: u64,
    keys_checked: u64,
    dead_letters: u64,
    max_log: u64,
    verify_time: Duration,
    drain_time: Duration,
}

struct Harness {
    name: &'static str,
    mode: FlushMode,
    base: PathBuf,
    rng: Rng,
    epoch: u32,
    ep: Epoch,
    next_seq: u64,
    totals: Totals,
    verbose: bool,
}

fn run_mode(name: &'static str, mode: FlushMode, salt: u64) {
    let rounds = env_u64("MQSTORE_WHOLE_CRASH_ROUNDS").map_or(150, |n| n.clamp(1, 1_000_000) as u32);
    let base_seed = common::seed();
    println!("whole-store crash test `{name}`: MQSTORE_SEED={base_seed}, {rounds} rounds");
    let dir = common::fast_tempdir();
    let mut h = Harness {
        name,
        mode,
        base: dir.path().to_path_buf(),
        rng: Rng(mix(base_seed ^ salt) | 1),
        epoch: 0,
        ep: Epoch::default(),
        next_seq: 0,
        totals: Totals::default(),
        verbose: env_u64("MQSTORE_WHOLE_CRASH_VERBOSE").is_some_and(|v| v != 0),
    };
    std::fs::create_dir_all(h.epoch_dir()).unwrap();
    let started = Instant::now();
    for round in 0..rounds {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| h.round(round, round + 1 == rounds)));
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(msg)) => msg,
            Err(p) => format!("panic in the parent: {}", common::panic_text(&*p)),
        };
        let kept = dir.keep();
        panic!(
            "whole-store crash test `{name}` FAILED in round {round} of {rounds} (epoch {}), MQSTORE_SEED={base_seed}; \
             directories kept in {} (live store {}, recovered copy {})\n{failure}",
            h.epoch,
            kept.display(),
            h.epoch_dir().display(),
            h.verify_dir().display()
        );
    }
    let t = &h.totals;
    println!(
        "whole-store crash test `{name}`: {rounds} rounds in {:.1?} (verification {:.1?}, drains {:.1?}), \
         MQSTORE_SEED={base_seed}: {} acknowledged messages ({} checks after kills), {} deliveries consumed, \
         {} sent back, {} committed offsets checked, {} records verified, {} kills aimed at open ({} before \
         ready), {} epochs drained ({} deliveries): {} delayed messages delivered, {} sent-back messages accounted for, {} keys \
         found, {} dead letters; largest log {} KiB",
        started.elapsed(),
        t.verify_time,
        t.drain_time,
        t.acks,
        t.ack_checks,
        t.consumed,
        t.retried,
        t.commits_checked,
        t.records_verified,
        t.aimed_at_open,
        t.killed_before_ready,
        t.drained,
        t.drain_consumed,
        t.delayed_checked,
        t.sent_back_checked,
        t.keys_checked,
        t.dead_letters,
        t.max_log >> 10,
    );
    assert!(
        t.acks > 0 && t.consumed > 0 && t.retried > 0 && t.delayed_checked > 0,
        "the rounds exercised too little: {t:?}"
    );
}

impl Harness {
    fn epoch_dir(&self) -> PathBuf {
        self.base.join(format!("epoch-{}", self.epoch))
    }

    fn verify_dir(&self) -> PathBuf {
        self.base.join("verify")
    }

    fn round(&mut self, round: u32, last: bool) -> Result<(), String> {
        let conf = ChildConf {
            mode: self.mode,
            producers: 1 + self.rng.below(2),
            next_seq: self.next_seq,
            batch: 1 + self.rng.below(3),
            seed: self.rng.next(),
        };
        let child = common::spawn_test_child(
            CHILD_TEST,
            &[(ENV_CHILD_DIR, self.epoch_dir().into_os_string()), (ENV_CHILD_CONF, conf.encode().into())],
        )?;
        let ctx = format!("[{}] round {round} (conf {conf:?})", self.name);
        let out = common::sigkill_round_timed(child, &mut self.rng, &ctx, report::parse, KILL_AFTER_READY_MS)?;
        let with_stderr = |e: String| format!("{ctx}: {e}\nchild stderr:\n{}", out.stderr);
        if out.stderr.contains("panicked") {
            return Err(with_stderr("the child panicked".into()));
        }
        self.totals.aimed_at_open += u64::from(out.aimed_at_open);
        self.totals.killed_before_ready += u64::from(!out.ready);

        // The reports, in the order the child wrote them: a committed
        // offset is checked against the deliveries reported before it.
        let mut new_acks: Vec<Ack> = Vec::new();
        for ev in &out.events {
            match ev {
                Event::Ack(a) => {
                    if self.ep.acked.insert(a.seq, a.clone()).is_some() {
                        return Err(with_stderr(format!("seq {} acknowledged twice", a.seq)));
                    }
                    new_acks.push(a.clone());
                }
                Event::Consumed(c) => {
                    self.ep.consumed(c);
                    if c.success {
                        self.totals.consumed += 1;
                    } else {
                        self.totals.retried += 1;
                    }
                }
                Event::Committed(t, q, o) => {
                    self.ep.check_commit(t, *q, *o, "while the child ran").map_err(with_stderr)?;
                    self.totals.commits_checked += 1;
                }
                Event::Bad(what) => return Err(with_stderr(format!("the listener was handed garbage: {what}"))),
                Event::Malformed(l) => return Err(with_stderr(format!("a report line does not parse: {l:?}"))),
            }
        }
        self.totals.acks += new_acks.len() as u64;

        // Verify a copy, leaving the crashed state for the next child.
        let verify_dir = self.verify_dir();
        common::replace_with_copy(&self.epoch_dir(), &verify_dir)?;
        let t0 = Instant::now();
        let store = Store::open(&verify_dir, frozen_opts(self.mode))
            .map_err(|e| with_stderr(format!("reopening: {e} ({e:?})")))?;
        let v = verify::verify(&store, &mut self.ep, &new_acks);
        let closed = store.close();
        let v = v.map_err(|e| {
            with_stderr(format!(
                "{e}\nkill aimed at open: {}, ready: {}; acknowledged this round: {}",
                out.aimed_at_open,
                out.ready,
                new_acks.len()
            ))
        })?;
        closed.map_err(|e| format!("closing the verified copy: {e}"))?;
        self.totals.verify_time += t0.elapsed();
        self.totals.commits_checked += self.ep.committed.len() as u64;
        self.totals.ack_checks += self.ep.acked.len() as u64;
        self.totals.records_verified += v.by_phys.len() as u64;
        self.totals.max_log = self.totals.max_log.max(v.log_end);
        self.next_seq = self.next_seq.max(v.max_seq.map_or(0, |m| m + 1));
        if self.verbose {
            println!(
                "[{}] round {round}: conf {conf:?}, aimed at open {}, ready {}, {} events, {} new acks, log end {}, \
                 {} records",
                self.name,
                out.aimed_at_open,
                out.ready,
                out.events.len(),
                new_acks.len(),
                v.log_end,
                v.by_phys.len()
            );
        }
        if v.log_end > EPOCH_LIMIT || last {
            self.end_epoch()?;
        }
        Ok(())
    }

    /// Drains the epoch's directory and starts a fresh one.
    fn end_epoch(&mut self) -> Result<(), String> {
        let t0 = Instant::now();
        let d = drain::drain(&self.epoch_dir(), self.mode, &self.ep)
            .map_err(|e| format!("drain of epoch {}: {e}", self.epoch))?;
        self.totals.drain_time += t0.elapsed();
        self.totals.drained += 1;
        self.totals.drain_consumed += d.consumed;
        self.totals.delayed_checked += d.delayed;
        self.totals.sent_back_checked += d.sent_back;
        self.totals.keys_checked += d.keys;
        self.totals.dead_letters += d.dead;
        if self.verbose {
            println!("[{}] epoch {} drained in {:.1?}: {d:?}", self.name, self.epoch, t0.elapsed());
        }
        std::fs::remove_dir_all(self.epoch_dir()).map_err(|e| format!("removing the old epoch: {e}"))?;
        self.epoch += 1;
        self.ep = Epoch::default();
        std::fs::create_dir_all(self.epoch_dir()).map_err(|e| format!("creating the new epoch: {e}"))?;
        Ok(())
    }
}
