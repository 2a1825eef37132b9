#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Crash test for the commit log: a child process appends, is killed with
//! SIGKILL at a random moment, and the parent checks what recovery kept.
//!
//! The harness re-executes this test binary (the sled approach): each parent
//! test spawns `current_exe() --exact crash_child_process --nocapture
//! --test-threads=1` with [`ENV_CHILD_DIR`] set, which turns the otherwise
//! empty `crash_child_process` test into the appender. One round:
//!
//! 1. The child opens the log in the round's directory (the same directory
//!    every round, so crashes chain: the child recovers what the previous
//!    kill left), prints `@@OPENING` before and `@@READY <end> ...` after
//!    opening, then appends forever from 1 to 4 threads, mixing single
//!    appends and batches of 2 to 4. Segments are 16 KiB, so rolls are
//!    constant; each round picks background or on-roll preallocation (3:1),
//!    the checkpoint interval and the async flush interval at random, so
//!    kills also land in segment creation and checkpoint writes. The next
//!    sequence number comes from the parent (one past the largest in the
//!    recovered log). Record `seq` has a body of 1 to 3000
//!    bytes derived from `seq` alone, queue offset and born timestamp `seq`,
//!    and its batch shape in `flag`. After every successful append it writes
//!    one `@@ACK <seq> <offset> <size> <body crc> <record crc> <check>` line
//!    per record to stdout and flushes; `check` is a CRC of the line, so a
//!    report torn by the kill is recognised and ignored.
//! 2. The parent reads the child's stdout on a thread, sends SIGKILL after a
//!    random delay (0 to 300 ms after `@@READY`, exactly 0 in about 10% of
//!    rounds; in another 10%, 0 to 5 ms after `@@OPENING`, while recovery
//!    runs), and reaps it. Any other exit is a failure, reported with the
//!    child's stderr.
//! 3. The parent copies the directory (so the next child recovers the raw
//!    crashed state, not one the parent already repaired), opens the copy
//!    with `open_with_report` and checks: every acknowledged record, of this
//!    round and every earlier one, is at its offset with the same size, CRC
//!    and byte-identical body; iterating the whole log yields only records
//!    whose contents match their sequence number, each at most once, with
//!    no gaps and strictly increasing offsets, batches contiguous (a crash
//!    may leave a prefix of an unacknowledged batch, which must be at the
//!    tail when first seen); the
//!    recovered end equals `max_offset`, nothing is readable at or past it,
//!    and the tail of the last segment file is zeros. The next child must
//!    recover to the same end. About 15% of rounds also reopen the real
//!    directory in place and close it cleanly, so clean shutdowns are mixed
//!    into the chain.
//!
//! Rounds default to 60 with [`FlushMode::Sync`] and 24 with
//! [`FlushMode::Async`] (a SIGKILL leaves the page cache intact, so even
//! async mode must lose no acknowledged record). `MQSTORE_CRASH_ROUNDS=n`
//! sets the sync rounds (async runs 40% of that), `MQSTORE_SEED` fixes the
//! random choices, `MQSTORE_CRASH_VERBOSE=1` prints every round and
//! `MQSTORE_CRASH_PREALLOC=background|onroll` forces one preallocation mode.
//! On failure the directory is kept (with `acked.txt`, every acknowledged
//! record of the epoch) and its path, the seed and the round are printed.
//! The log is started afresh in a new directory once it passes 4 MiB, which
//! bounds the per-round verification cost.

mod common;

use common::{body_for, tiny_opts, Rng};
use mqstore::commitlog::{
    CommitLog, CommitLogOptions, FlushMode, Preallocation, Record, RecordDraft, RecoveryReport, COMMITLOG_DIR,
    SEGMENT_HEADER_LEN,
};
use mqstore::PhysicalOffset;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ChildStdout;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Name of the test that becomes the appender in the child process.
const CHILD_TEST: &str = "crash_child_process";
/// Store directory for the child; unset in normal test runs.
const ENV_CHILD_DIR: &str = "MQSTORE_CRASH_CHILD";
/// The child's configuration, see [`ChildConf::encode`].
const ENV_CHILD_CONF: &str = "MQSTORE_CRASH_CHILD_CONF";
/// Exit code of a child that hit an error.
const CHILD_ERROR_EXIT: i32 = 86;
/// A child is never meant to live this long; it gives up (with
/// [`CHILD_ERROR_EXIT`]) rather than linger if the parent vanished.
const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(60);
/// How long the parent waits for `@@OPENING` / `@@READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Must match `common::tiny_opts`.
const SEGMENT_SIZE: u64 = 16 << 10;
const HEADER: u64 = SEGMENT_HEADER_LEN as u64;
const MAX_BODY: u64 = 3000;
const MAX_BATCH: u64 = 4;
const TOPICS: [&str; 3] = ["crash-a", "crash-bb", "crash-ccc"];
/// Start a fresh directory once the log is this large.
const EPOCH_LIMIT: u64 = 4 << 20;

// ---------------------------------------------------------------------------
// Deterministic record contents.

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn body_len(seq: u64) -> usize {
    1 + (mix(seq) % MAX_BODY) as usize
}

fn expected_body(seq: u64) -> Vec<u8> {
    body_for(seq, body_len(seq))
}

fn topic_for(seq: u64) -> &'static str {
    TOPICS[(seq % TOPICS.len() as u64) as usize]
}

fn queue_id_for(seq: u64) -> u32 {
    (seq % 4) as u32
}

/// `flag` carries the batch shape: batch length and index within it.
fn batch_flag(len: u64, idx: u64) -> u32 {
    ((len << 8) | idx) as u32
}

fn draft_for(seq: u64, batch_len: u64, idx: u64, body: &[u8]) -> RecordDraft<'_> {
    RecordDraft {
        topic: topic_for(seq),
        queue_id: queue_id_for(seq),
        queue_offset: seq,
        flag: batch_flag(batch_len, idx),
        born_timestamp: seq,
        body,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// Reports on the child's stdout.

fn ack_fields(seq: u64, offset: u64, size: u32, body_crc: u32, rec_crc: u32) -> String {
    format!("{seq} {offset} {size} {body_crc:08x} {rec_crc:08x}")
}

fn ack_line(seq: u64, offset: u64, size: u32, body_crc: u32, rec_crc: u32) -> String {
    let fields = ack_fields(seq, offset, size, body_crc, rec_crc);
    let check = crc32fast::hash(fields.as_bytes());
    format!("@@ACK {fields} {check:08x}\n")
}

/// One acknowledged record as reported by the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    seq: u64,
    offset: u64,
    size: u32,
    body_crc: u32,
    rec_crc: u32,
    round: u32,
}

/// What the child said after opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ready {
    end: u64,
    records_scanned: u64,
    truncated: bool,
    clean: bool,
}

#[derive(Debug)]
enum Event {
    Opening(Instant),
    Ready(Ready, Instant),
    Ack(Ack),
    /// A newline-terminated `@@` line that does not parse or check.
    Bad(String),
    /// The final bytes, cut off by the kill (no newline).
    Torn(String),
    ReadError(String),
}

fn parse_line(line: &str, round: u32) -> Option<Event> {
    let at = line.find("@@")?;
    let mut f = line[at..].split_whitespace();
    let bad = || Some(Event::Bad(line.to_string()));
    match f.next()? {
        "@@OPENING" => Some(Event::Opening(Instant::now())),
        "@@READY" => {
            let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
            if v.len() != 4 {
                return bad();
            }
            Some(Event::Ready(
                Ready { end: v[0], records_scanned: v[1], truncated: v[2] != 0, clean: v[3] != 0 },
                Instant::now(),
            ))
        }
        "@@ACK" => {
            let parts: Vec<&str> = f.collect();
            if parts.len() != 6 {
                return bad();
            }
            let dec = |s: &str| s.parse::<u64>().ok();
            let hex = |s: &str| u32::from_str_radix(s, 16).ok();
            let (Some(seq), Some(offset), Some(size), Some(body_crc), Some(rec_crc), Some(check)) = (
                dec(parts[0]),
                dec(parts[1]),
                dec(parts[2]).and_then(|s| u32::try_from(s).ok()),
                hex(parts[3]),
                hex(parts[4]),
                hex(parts[5]),
            ) else {
                return bad();
            };
            let fields = ack_fields(seq, offset, size, body_crc, rec_crc);
            if crc32fast::hash(fields.as_bytes()) != check {
                return bad();
            }
            Some(Event::Ack(Ack { seq, offset, size, body_crc, rec_crc, round }))
        }
        _ => bad(),
    }
}

fn read_reports(stdout: ChildStdout, round: u32, tx: &Sender<Event>) {
    common::read_report_lines(stdout, |line| match line {
        common::ReportLine::Complete(l) => match parse_line(&l, round) {
            Some(ev) => tx.send(ev).is_ok(),
            None => true,
        },
        common::ReportLine::Torn(l) => {
            let _ = tx.send(Event::Torn(l));
            false
        }
        common::ReportLine::ReadError(e) => {
            let _ = tx.send(Event::ReadError(e));
            false
        }
    });
}

// ---------------------------------------------------------------------------
// The child.

/// Per-round configuration handed to the child.
#[derive(Debug, Clone, Copy)]
struct ChildConf {
    mode: FlushMode,
    prealloc: Preallocation,
    threads: u64,
    next_seq: u64,
    checkpoint_ms: u64,
    flush_ms: u64,
    seed: u64,
}

impl ChildConf {
    fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}",
            u8::from(self.mode == FlushMode::Sync),
            u8::from(self.prealloc == Preallocation::Background),
            self.threads,
            self.next_seq,
            self.checkpoint_ms,
            self.flush_ms,
            self.seed
        )
    }

    fn decode(s: &str) -> Result<Self, String> {
        let v: Vec<u64> = s
            .split_whitespace()
            .map(|x| x.parse().map_err(|e| format!("bad child conf {s:?}: {e}")))
            .collect::<Result<_, _>>()?;
        if v.len() != 7 {
            return Err(format!("bad child conf {s:?}"));
        }
        Ok(Self {
            mode: if v[0] == 1 { FlushMode::Sync } else { FlushMode::Async },
            prealloc: if v[1] == 1 { Preallocation::Background } else { Preallocation::OnRoll },
            threads: v[2],
            next_seq: v[3],
            checkpoint_ms: v[4],
            flush_ms: v[5],
            seed: v[6],
        })
    }

    fn opts(&self) -> CommitLogOptions {
        tiny_opts()
            .flush_mode(self.mode)
            .preallocation(self.prealloc)
            .checkpoint_interval(Duration::from_millis(self.checkpoint_ms))
            .flush_interval(Duration::from_millis(self.flush_ms))
    }
}

fn emit(s: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes()).and_then(|()| out.flush()).map_err(|e| format!("writing a report to stdout: {e}"))
}

/// The appender. Returns immediately in a normal test run; in the child it
/// never returns: it is killed, or exits with [`CHILD_ERROR_EXIT`].
#[test]
fn crash_child_process() {
    let Some(dir) = std::env::var_os(ENV_CHILD_DIR) else {
        return;
    };
    let err = run_child(Path::new(&dir));
    eprintln!("crash child: {err}");
    let _ = std::io::stderr().flush();
    std::process::exit(CHILD_ERROR_EXIT);
}

/// Runs until killed; returns the error that stopped it otherwise.
fn run_child(dir: &Path) -> String {
    let conf = match std::env::var(ENV_CHILD_CONF)
        .map_err(|e| format!("{ENV_CHILD_CONF}: {e}"))
        .and_then(|s| ChildConf::decode(&s))
    {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Err(e) = emit("@@OPENING\n") {
        return e;
    }
    let (log, report) = match CommitLog::open_with_report(dir, conf.opts()) {
        Ok(x) => x,
        Err(e) => return format!("open failed: {e} ({e:?})"),
    };
    if let Err(e) = emit(&format!(
        "@@READY {} {} {} {}\n",
        report.end.0,
        report.records_scanned,
        u8::from(report.truncated.is_some()),
        u8::from(report.clean_shutdown)
    )) {
        return e;
    }
    let next = Arc::new(AtomicU64::new(conf.next_seq));
    let (tx, rx) = mpsc::channel::<String>();
    for t in 0..conf.threads {
        let log = log.clone();
        let next = next.clone();
        let tx = tx.clone();
        let rng = Rng(mix(conf.seed ^ t) | 1);
        let spawned = std::thread::Builder::new().name(format!("appender-{t}")).spawn(move || {
            let _ = tx.send(append_loop(&log, &next, rng));
        });
        if let Err(e) = spawned {
            return format!("spawning appender {t}: {e}");
        }
    }
    drop(tx);
    match rx.recv_timeout(CHILD_MAX_LIFETIME) {
        Ok(e) => e,
        Err(RecvTimeoutError::Timeout) => {
            format!("not killed within {CHILD_MAX_LIFETIME:?}; giving up")
        }
        Err(RecvTimeoutError::Disconnected) => "every appender thread vanished".into(),
    }
}

fn append_loop(log: &CommitLog, next: &AtomicU64, mut rng: Rng) -> String {
    let mut lines = String::new();
    loop {
        let n = if rng.below(3) == 0 { 2 + rng.below(MAX_BATCH - 1) } else { 1 };
        let first = next.fetch_add(n, Ordering::Relaxed);
        let bodies: Vec<Vec<u8>> = (first..first + n).map(expected_body).collect();
        let drafts: Vec<RecordDraft<'_>> =
            bodies.iter().zip(0u64..).map(|(b, i)| draft_for(first + i, n, i, b)).collect();
        let result = if n == 1 && rng.below(2) == 0 {
            log.append(&drafts[0]).map(|a| vec![a])
        } else {
            log.append_batch(&drafts)
        };
        let appended = match result {
            Ok(a) => a,
            Err(e) => return format!("append of seq {first}..{} failed: {e} ({e:?})", first + n),
        };
        if appended.len() as u64 != n {
            return format!("append of seq {first}..{} returned {} results", first + n, appended.len());
        }
        lines.clear();
        for ((a, body), i) in appended.iter().zip(&bodies).zip(0u64..) {
            lines.push_str(&ack_line(first + i, a.offset.0, a.size, crc32fast::hash(body), a.crc));
        }
        if let Err(e) = emit(&lines) {
            return e;
        }
    }
}

// ---------------------------------------------------------------------------
// The parent.

#[derive(Debug, Clone, Copy)]
enum KillPlan {
    /// Microseconds after `@@OPENING`: lands in recovery or just after.
    DuringOpen(u64),
    /// Milliseconds after `@@READY`.
    AfterReady(u64),
}

/// What one verification found.
#[derive(Debug)]
struct Verified {
    report: RecoveryReport,
    records: u64,
    max_seq: Option<u64>,
    /// First seqs of batches seen partially for the first time.
    new_partial: Vec<u64>,
}

#[derive(Debug, Default)]
struct Totals {
    acks: u64,
    torn_reports: u64,
    killed_in_open: u64,
    killed_before_ready: u64,
    truncations: u64,
    partial_batches: u64,
    in_place: u64,
    epochs: u64,
    max_end: u64,
    records_verified: u64,
    verify_time: Duration,
}

struct Harness {
    name: &'static str,
    mode: FlushMode,
    base: PathBuf,
    rng: Rng,
    epoch: u64,
    /// Every record acknowledged in this epoch, by sequence number.
    acked: BTreeMap<u64, Ack>,
    /// Unacknowledged batches a crash left partly written in this epoch.
    partial_batches: HashSet<u64>,
    next_seq: u64,
    /// The end the next child must recover to.
    expected_end: Option<u64>,
    /// The previous round closed the log cleanly.
    clean_before: bool,
    totals: Totals,
    verbose: bool,
    /// `MQSTORE_CRASH_PREALLOC=background|onroll` forces one mode.
    prealloc: Option<Preallocation>,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

fn sync_rounds() -> u32 {
    env_u64("MQSTORE_CRASH_ROUNDS").map_or(60, |n| n.clamp(1, 1_000_000) as u32)
}

fn async_rounds() -> u32 {
    (sync_rounds() * 2).div_ceil(5)
}

fn run_variant(name: &'static str, mode: FlushMode, rounds: u32, seed_salt: u64) {
    let base_seed = common::seed();
    let seed = base_seed ^ seed_salt;
    let dir = tempfile::Builder::new().prefix(&format!("mqstore-crash-{name}-")).tempdir().unwrap();
    let mut h = Harness {
        name,
        mode,
        base: dir.path().to_path_buf(),
        rng: Rng(mix(seed) | 1),
        epoch: 0,
        acked: BTreeMap::new(),
        partial_batches: HashSet::new(),
        next_seq: 0,
        expected_end: None,
        clean_before: false,
        totals: Totals::default(),
        verbose: env_u64("MQSTORE_CRASH_VERBOSE").is_some_and(|v| v != 0),
        prealloc: match std::env::var("MQSTORE_CRASH_PREALLOC").as_deref() {
            Ok("background") => Some(Preallocation::Background),
            Ok("onroll") => Some(Preallocation::OnRoll),
            _ => None,
        },
    };
    std::fs::create_dir_all(h.epoch_dir()).unwrap();
    let started = Instant::now();
    for round in 0..rounds {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| h.round(round)));
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(msg)) => msg,
            Err(payload) => {
                let what = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_else(|| "non-string panic".into());
                format!("panic during the round: {what}")
            }
        };
        let acks: String = h
            .acked
            .values()
            .map(|a| format!("{} {} {} {:08x} {:08x} {}\n", a.seq, a.offset, a.size, a.body_crc, a.rec_crc, a.round))
            .collect();
        let _ = std::fs::write(
            h.base.join("acked.txt"),
            format!("# seq offset size body_crc record_crc round (epoch {})\n{acks}", h.epoch),
        );
        let kept = dir.keep();
        panic!(
            "crash test `{name}` FAILED in round {round} of {rounds} (epoch {}), \
             MQSTORE_SEED={base_seed}; store kept at {} (live log in {}, the \
             parent's recovered copy in {}, acknowledgements in acked.txt)\n{failure}",
            h.epoch,
            kept.display(),
            h.epoch_dir().display(),
            h.verify_dir().display(),
        );
    }
    let t = &h.totals;
    println!(
        "crash test `{name}`: {rounds} rounds in {:.1?} (verification {:.1?}), \
         MQSTORE_SEED={base_seed}: {} acknowledged records checked, {} records \
         verified, {} torn report lines ignored, {} kills aimed at open ({} before \
         ready), {} recoveries truncated a torn tail, {} partial unacknowledged \
         batches at the tail, {} in-place clean reopens, {} epochs, largest log {} KiB",
        started.elapsed(),
        t.verify_time,
        t.acks,
        t.records_verified,
        t.torn_reports,
        t.killed_in_open,
        t.killed_before_ready,
        t.truncations,
        t.partial_batches,
        t.in_place,
        t.epochs + 1,
        t.max_end >> 10,
    );
    assert!(t.acks > 0, "no append was ever acknowledged");
}

impl Harness {
    fn epoch_dir(&self) -> PathBuf {
        self.base.join(format!("epoch-{}", self.epoch))
    }

    fn verify_dir(&self) -> PathBuf {
        self.base.join("verify")
    }

    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.rng.below(choices.len() as u64) as usize]
    }

    fn round(&mut self, round: u32) -> Result<(), String> {
        let conf = ChildConf {
            mode: self.mode,
            prealloc: match (self.rng.below(4), self.prealloc) {
                (_, Some(forced)) => forced,
                (0, None) => Preallocation::OnRoll,
                (_, None) => Preallocation::Background,
            },
            threads: 1 + self.rng.below(4),
            next_seq: self.next_seq,
            checkpoint_ms: self.pick(&[1, 5, 50, 1000]),
            flush_ms: self.pick(&[1, 10, 100, 500]),
            seed: self.rng.next(),
        };
        let plan = match self.rng.below(100) {
            0..=9 => KillPlan::DuringOpen(self.rng.below(5000)),
            10..=19 => KillPlan::AfterReady(0),
            _ => KillPlan::AfterReady(1 + self.rng.below(300)),
        };
        let in_place = self.rng.below(100) < 15;

        let common::TestChild { mut guard, stdout, stderr: err_reader } = common::spawn_test_child(
            CHILD_TEST,
            &[(ENV_CHILD_DIR, self.epoch_dir().into_os_string()), (ENV_CHILD_CONF, conf.encode().into())],
        )?;
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || read_reports(stdout, round, &tx));

        let mut events = Vec::new();
        let waited = self.wait_and_kill(&rx, plan, &mut events);
        let mut child = guard.0.take().ok_or("child vanished")?;
        let _ = child.kill();
        let status = child.wait().map_err(|e| format!("reaping the child: {e}"))?;
        drop(guard);
        reader.join().map_err(|_| "stdout reader panicked".to_string())?;
        events.extend(rx.try_iter());
        let child_stderr = err_reader.join().unwrap_or_default();
        let with_stderr = |msg: String| {
            format!("{msg}\nchild exit status: {status:?}\nchild conf: {conf:?}, kill plan {plan:?}\nchild stderr:\n{child_stderr}")
        };
        waited.map_err(with_stderr)?;
        if status.signal() != Some(libc::SIGKILL) {
            return Err(with_stderr("the child exited on its own instead of being killed".into()));
        }

        // Gather what the child reported.
        let mut ready = None;
        let mut torn = None;
        let mut new_acks = Vec::new();
        for ev in events {
            match ev {
                Event::Opening(_) => {}
                Event::Ready(r, _) => ready = Some(r),
                Event::Ack(a) => new_acks.push(a),
                Event::Torn(line) => {
                    self.totals.torn_reports += 1;
                    torn = Some(line);
                }
                Event::Bad(line) => {
                    return Err(with_stderr(format!("a complete report line failed to parse or check: {line:?}")))
                }
                Event::ReadError(e) => return Err(with_stderr(format!("reading the child's stdout: {e}"))),
            }
        }
        if matches!(plan, KillPlan::DuringOpen(_)) {
            self.totals.killed_in_open += 1;
            if ready.is_none() {
                self.totals.killed_before_ready += 1;
            }
        }
        if let Some(r) = ready {
            if let Some(expected) = self.expected_end {
                if r.end != expected {
                    return Err(with_stderr(format!(
                        "the child recovered to end {} but the parent's recovery of the \
                         same bytes ended at {expected} (child ready report {r:?})",
                        r.end
                    )));
                }
            }
            if self.clean_before && (!r.clean || r.truncated || r.records_scanned != 0) {
                return Err(with_stderr(format!("after a clean close the child's recovery reported {r:?}")));
            }
        }
        for a in &new_acks {
            if let Some(prev) = self.acked.insert(a.seq, *a) {
                return Err(format!("seq {} was acknowledged twice: {prev:?} and {a:?}", a.seq));
            }
        }
        self.totals.acks += new_acks.len() as u64;

        // Verify a copy, leaving the crashed state for the next child.
        let verify = self.verify_dir();
        if verify.exists() {
            std::fs::remove_dir_all(&verify).map_err(|e| format!("removing {verify:?}: {e}"))?;
        }
        copy_tree(&self.epoch_dir(), &verify).map_err(|e| format!("copying the store: {e}"))?;
        let t0 = Instant::now();
        let v = self.verify(&verify, &new_acks).map_err(|e| {
            format!(
                "{e}\nchild ready report: {ready:?}\nchild conf: {conf:?}, kill plan \
                 {plan:?}\nacknowledged this round: {} (seq {:?}..={:?})\nchild stderr:\n{child_stderr}",
                new_acks.len(),
                new_acks.iter().map(|a| a.seq).min(),
                new_acks.iter().map(|a| a.seq).max(),
            )
        })?;
        self.totals.verify_time += t0.elapsed();
        let end = v.report.end.0;
        self.totals.records_verified += v.records;
        self.totals.truncations += u64::from(v.report.truncated.is_some());
        self.totals.partial_batches += v.new_partial.len() as u64;
        self.partial_batches.extend(&v.new_partial);
        self.totals.max_end = self.totals.max_end.max(end);
        if self.verbose {
            println!(
                "[{}] round {round}: conf {conf:?}, kill {plan:?}, ready {ready:?}, {} acks, \
                 recovered end {end}, {} records, scanned {}, truncated {:?}, checkpoint {:?}, \
                 in place {in_place}, torn report {torn:?}",
                self.name,
                new_acks.len(),
                v.records,
                v.report.records_scanned,
                v.report.truncated.as_ref().map(|t| (t.offset, &t.kind)),
                v.report.checkpoint,
            );
        }
        self.next_seq = self.next_seq.max(v.max_seq.map_or(0, |m| m + 1));
        self.expected_end = Some(end);
        self.clean_before = false;

        if in_place {
            // Recover the real directory too and close it cleanly.
            self.totals.in_place += 1;
            let (log, report) = CommitLog::open_with_report(self.epoch_dir(), verify_opts())
                .map_err(|e| format!("in-place reopen failed: {e} ({e:?})"))?;
            if report.end.0 != end {
                return Err(format!(
                    "in-place recovery ended at {} but the copy's ended at {end}: {report:?}",
                    report.end
                ));
            }
            log.close().map_err(|e| format!("closing the in-place log: {e}"))?;
            self.clean_before = true;
        }

        if end > EPOCH_LIMIT {
            std::fs::remove_dir_all(self.epoch_dir()).map_err(|e| format!("removing the old epoch: {e}"))?;
            self.epoch += 1;
            self.totals.epochs += 1;
            self.acked.clear();
            self.partial_batches.clear();
            self.expected_end = None;
            self.clean_before = false;
            std::fs::create_dir_all(self.epoch_dir()).map_err(|e| format!("creating the new epoch: {e}"))?;
        }
        Ok(())
    }

    /// Waits for the moment the plan names, then kills the child. Events
    /// seen on the way are appended to `events`.
    fn wait_and_kill(&self, rx: &Receiver<Event>, plan: KillPlan, events: &mut Vec<Event>) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = match rx.recv_timeout(left) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("the child did not reach the kill point of {plan:?} within {READY_TIMEOUT:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("the child closed stdout before the kill point of {plan:?}"))
                }
            };
            let at = match (&ev, plan) {
                (Event::Opening(t), KillPlan::DuringOpen(us)) => Some(*t + Duration::from_micros(us)),
                (Event::Ready(_, t), KillPlan::AfterReady(ms)) => Some(*t + Duration::from_millis(ms)),
                _ => None,
            };
            events.push(ev);
            if let Some(at) = at {
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                return Ok(());
            }
        }
    }

    /// The acknowledged records at or past `from`, and what reading the
    /// first few returns.
    fn describe_acks_from(&self, log: &CommitLog, from: u64) -> String {
        let after: Vec<&Ack> = self.acked.values().filter(|a| a.offset >= from).collect();
        let mut msg = format!("{} acknowledged records lie at or past offset {from}", after.len());
        let mut sorted = after;
        sorted.sort_by_key(|a| a.offset);
        for a in sorted.iter().take(8) {
            let found = log.read(PhysicalOffset(a.offset)).map_or_else(|e| format!("error: {e}"), |r| format!("{r:?}"));
            msg.push_str(&format!("\n  {a:?}; read at its offset: {found}"));
        }
        msg
    }

    /// Recovers the copy at `dir` and checks it against everything
    /// acknowledged so far in this epoch.
    fn verify(&self, dir: &Path, new_acks: &[Ack]) -> Result<Verified, String> {
        let (log, report) = CommitLog::open_with_report(dir, verify_opts())
            .map_err(|e| format!("reopening after the kill failed: {e} ({e:?})"))?;
        let end = report.end.0;
        let ctx = |msg: String| format!("{msg}\nrecovery report: {report:?}");
        if log.max_offset() != report.end {
            return Err(ctx(format!("max_offset {} differs from the recovered end {end}", log.max_offset())));
        }

        // Walk the whole log.
        let mut by_seq: HashMap<u64, (u64, u32, u32)> = HashMap::new();
        // Batch first seq -> (length, members seen, end of the last member).
        let mut batches: HashMap<u64, (u64, u64, u64)> = HashMap::new();
        let mut prev_end: Option<u64> = None;
        let mut max_seq = None;
        let mut records = 0u64;
        for item in log.iter(PhysicalOffset(0)) {
            let rec = item.map_err(|e| {
                let from = prev_end.unwrap_or(0);
                ctx(format!(
                    "iteration failed after {records} records (previous record ended at \
                     {prev_end:?}): {e} ({e:?})\n{}",
                    self.describe_acks_from(&log, from)
                ))
            })?;
            let off = rec.offset().0;
            let rec_end = rec.end().0;
            let expected_at = match prev_end {
                None => HEADER,
                Some(p) if off == p => p,
                Some(p) => (p / SEGMENT_SIZE + 1) * SEGMENT_SIZE + HEADER,
            };
            if off != expected_at {
                return Err(ctx(format!(
                    "record {rec:?} at {off} follows one ending at {prev_end:?}: a gap or overlap"
                )));
            }
            if rec_end > end || rec_end / SEGMENT_SIZE != off / SEGMENT_SIZE {
                return Err(ctx(format!("record {rec:?} ends at {rec_end}, past the recovered end or its segment")));
            }
            let seq = rec.queue_offset();
            check_content(&rec, seq).map_err(&ctx)?;
            if let Some(prev) = by_seq.insert(seq, (off, rec.size(), rec.crc())) {
                return Err(ctx(format!("seq {seq} is stored twice: at {} and at {off}", prev.0)));
            }
            let (n, i) = (u64::from(rec.flag() >> 8), u64::from(rec.flag() & 0xff));
            let first = seq - i;
            if i == 0 {
                batches.insert(first, (n, 1, rec_end));
            } else {
                match batches.get_mut(&first) {
                    Some(b) if b.1 == i && b.2 == off => {
                        b.1 += 1;
                        b.2 = rec_end;
                    }
                    other => {
                        return Err(ctx(format!(
                            "record {rec:?} (batch member {i} of {n}) does not directly follow \
                             member {} of its batch (batch state {other:?})",
                            i - 1
                        )))
                    }
                }
            }
            max_seq = max_seq.max(Some(seq));
            prev_end = Some(rec_end);
            records += 1;
        }
        let last_end = prev_end.unwrap_or(HEADER);
        let next_segment_start = (last_end / SEGMENT_SIZE + 1) * SEGMENT_SIZE + HEADER;
        if end != last_end && !(prev_end.is_some() && end == next_segment_start) {
            return Err(ctx(format!(
                "the recovered end {end} is neither the end of the last record ({last_end}) \
                 nor the start of the following segment"
            )));
        }
        // A crash in the middle of an unacknowledged batch may leave a prefix
        // of it; that prefix must be at the tail when first seen (later
        // rounds append after it).
        let mut new_partial = Vec::new();
        for (first, (n, seen, b_end)) in &batches {
            if seen < n && !self.partial_batches.contains(first) {
                if *b_end != last_end {
                    return Err(ctx(format!(
                        "batch {first}..{} has only {seen} of {n} records and is not at the tail \
                         (it ends at {b_end}, the last record at {last_end})",
                        first + n
                    )));
                }
                new_partial.push(*first);
            }
        }

        // Nothing at or past the end.
        for probe in [end, end + 8, end + 64, end + SEGMENT_SIZE] {
            if let Ok(rec) = log.read(PhysicalOffset(probe)) {
                return Err(ctx(format!("read at {probe}, at or past the recovered end {end}, returned {rec:?}")));
            }
        }
        if let Some(item) = log.iter(report.end).next() {
            return Err(ctx(format!("iterating from the recovered end {end} yielded {item:?}")));
        }
        check_tail_zeroed(dir, end).map_err(&ctx)?;

        // Every acknowledged record is there, unchanged.
        let mut missing = Vec::new();
        for a in self.acked.values() {
            match by_seq.get(&a.seq) {
                None => missing.push(*a),
                Some(&(off, size, crc)) if (off, size, crc) != (a.offset, a.size, a.rec_crc) => {
                    return Err(ctx(format!(
                        "acknowledged {a:?} was found at offset {off} with size {size} and crc \
                         {crc:08x}"
                    )));
                }
                Some(_) => {}
            }
        }
        if !missing.is_empty() {
            let mut msg = format!(
                "{} acknowledged records are missing after recovery (recovered end {end}, \
                 last record ends at {last_end}, {records} records):",
                missing.len()
            );
            for a in missing.iter().take(20) {
                let found = log
                    .read(PhysicalOffset(a.offset))
                    .map(|r| format!("{r:?}"))
                    .unwrap_or_else(|e| format!("error: {e}"));
                msg.push_str(&format!("\n  {a:?}; read at its offset: {found}"));
            }
            return Err(ctx(msg));
        }
        for a in self.acked.values() {
            let expected = expected_body(a.seq);
            if crc32fast::hash(&expected) != a.body_crc {
                return Err(format!("harness bug: body crc of {a:?} is wrong"));
            }
        }
        for a in new_acks {
            let rec = log
                .read(PhysicalOffset(a.offset))
                .map_err(|e| ctx(format!("read of acknowledged {a:?} failed: {e} ({e:?})")))?;
            check_content(&rec, a.seq).map_err(&ctx)?;
            if rec.size() != a.size || rec.crc() != a.rec_crc {
                return Err(ctx(format!("read of acknowledged {a:?} returned {rec:?}")));
            }
        }
        log.close().map_err(|e| ctx(format!("closing the verified copy: {e}")))?;
        Ok(Verified { report, records, max_seq, new_partial })
    }
}

/// Options for the parent's reopen: no background thread may create files
/// while the directory is inspected.
fn verify_opts() -> CommitLogOptions {
    tiny_opts().preallocation(Preallocation::OnRoll).prefault_window(0).flush_mode(FlushMode::Sync)
}

/// The record's fields and body are exactly those derived from `seq`.
fn check_content(rec: &Record, seq: u64) -> Result<(), String> {
    let (n, i) = (rec.flag() >> 8, rec.flag() & 0xff);
    if rec.queue_offset() != seq
        || rec.topic() != topic_for(seq)
        || rec.queue_id() != queue_id_for(seq)
        || rec.born_timestamp() != seq
        || !(1..=MAX_BATCH as u32).contains(&n)
        || i >= n
        || u64::from(i) > seq
    {
        return Err(format!(
            "record {rec:?} (flag {:#x}, born {}) does not carry the fields derived from seq {seq}",
            rec.flag(),
            rec.born_timestamp()
        ));
    }
    let body = rec.body();
    let expected = expected_body(seq);
    if body[..] != expected[..] {
        let first_diff = body.iter().zip(&expected).position(|(a, b)| a != b);
        return Err(format!(
            "record {rec:?} has a body of {} bytes that differs from the {} derived from seq \
             {seq} (first difference at byte {first_diff:?})",
            body.len(),
            expected.len()
        ));
    }
    Ok(())
}

/// The segment holding `end` is the last one, and its bytes from `end` on
/// are zeros.
fn check_tail_zeroed(dir: &Path, end: u64) -> Result<(), String> {
    let cl = dir.join(COMMITLOG_DIR);
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(&cl).map_err(|e| format!("listing {cl:?}: {e}"))? {
        let name = entry.map_err(|e| format!("listing {cl:?}: {e}"))?.file_name().to_string_lossy().into_owned();
        match name.parse::<u64>() {
            Ok(b) if name.len() == 20 => bases.push(b),
            _ => return Err(format!("unexpected file {name:?} in {cl:?} after recovery")),
        }
    }
    bases.sort_unstable();
    let Some(&last) = bases.last() else {
        return Err(format!("no segment files in {cl:?}"));
    };
    if !(last <= end && end < last + SEGMENT_SIZE) {
        return Err(format!("the recovered end {end} is not in the last segment file (bases {bases:?})"));
    }
    let path = cl.join(format!("{last:020}"));
    let bytes = std::fs::read(&path).map_err(|e| format!("reading {path:?}: {e}"))?;
    let from = (end - last) as usize;
    if let Some(pos) = bytes.get(from..).and_then(|t| t.iter().position(|&b| b != 0)) {
        return Err(format!(
            "segment {path:?} has a non-zero byte at file position {} (log offset {}), past \
             the recovered end {end}",
            from + pos,
            end + pos as u64
        ));
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let name = entry.file_name();
        if ty.is_dir() {
            copy_tree(&entry.path(), &to.join(&name))?;
        } else if ty.is_file() && name != mqstore::commitlog::LOCK_FILE {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

#[test]
fn sync_appends_survive_sigkill() {
    run_variant("sync", FlushMode::Sync, sync_rounds(), 0);
}

#[test]
fn async_appends_survive_sigkill() {
    run_variant("async", FlushMode::Async, async_rounds(), 0xA5A5_5A5A_0F0F_F0F0);
}
