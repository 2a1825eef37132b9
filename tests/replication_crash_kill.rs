#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Crash test for sync replication: a child process runs a master (sync
//! replication) and a slave joined by the in-memory link, sends messages,
//! and is killed with SIGKILL at a random moment (while sending and
//! replicating, or while recovering). Both sides crash together (they
//! share the process), each at whatever point it was.
//!
//! The child prints `@@READY` once both stores are open and connected (a
//! slave found ahead of its master is cut back first, as a host would),
//! and `@@ACK <seq>` after each send that returned `SendOk`, which under
//! sync replication means the slave had applied the message. Bodies are
//! `seq:<n>:<crc32 of "seq:<n>">`, so garbage is recognised.
//!
//! After every kill the parent opens the slave, then the master, and
//! checks that every message acknowledged so far is in each one's queues
//! with an intact body (replica acknowledgements are `Applied`, which a
//! process crash cannot undo: the page cache survives it). After the last
//! round it connects the two, waits until the slave has caught up, and
//! checks that their logs are equal record for record.
//!
//! Rounds: 20 per master flush mode by default,
//! `MQSTORE_REPL_CRASH_ROUNDS=n` to change; `MQSTORE_SEED` fixes the
//! random choices.

mod common;

use common::Rng;
use mqstore::commitlog::{CommitLogOptions, FlushMode};
use mqstore::message::Message;
use mqstore::replication::memory::MemoryLink;
use mqstore::replication::{ReplicationMode, ReplicationOptions};
use mqstore::store::{PullStatus, SendStatus, Store, StoreOptions, TagFilter};
use mqstore::topic::TopicConfig;
use mqstore::Error;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD_TEST: &str = "replication_crash_child_process";
const ENV_DIR: &str = "MQSTORE_REPL_CRASH_CHILD";
const ENV_CONF: &str = "MQSTORE_REPL_CRASH_CONF";
const TOPIC: &str = "t";
const QUEUES: u32 = 3;

fn log_opts(mode: FlushMode) -> CommitLogOptions {
    CommitLogOptions::default()
        .segment_size(64 << 10)
        .max_record_size(8 << 10)
        .prefault_window(64 << 10)
        .flush_mode(mode)
        .flush_interval(Duration::from_millis(5))
}

fn small(mode: FlushMode) -> StoreOptions {
    StoreOptions::default().commit_log_options(log_opts(mode)).max_body_size(2 << 10).max_properties_size(1 << 10)
}

fn master_opts(mode: FlushMode) -> StoreOptions {
    small(mode).replication(ReplicationOptions::master(ReplicationMode::Sync).timeout(Duration::from_secs(2)))
}

fn slave_opts() -> StoreOptions {
    small(FlushMode::Async).replication(ReplicationOptions::slave())
}

fn body(seq: u64) -> String {
    let text = format!("seq:{seq}");
    format!("{text}:{}", crc32fast::hash(text.as_bytes()))
}

fn parse(body: &[u8]) -> Result<u64, String> {
    let s = std::str::from_utf8(body).map_err(|_| format!("non-UTF-8 body {body:?}"))?;
    let mut parts = s.split(':');
    let (Some("seq"), Some(n), Some(crc), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(format!("malformed body {s:?}"));
    };
    let seq: u64 = n.parse().map_err(|_| format!("malformed body {s:?}"))?;
    if crc.parse::<u32>().ok() != Some(crc32fast::hash(format!("seq:{seq}").as_bytes())) {
        return Err(format!("garbled body {s:?}"));
    }
    Ok(seq)
}

fn emit(s: &str) {
    let _ = common::emit(s);
}

/// Opens the pair and connects it, cutting a slave that is ahead back to
/// the master's end (what a host does on `ReplicaAhead`).
fn open_pair(dir: &Path, mode: FlushMode) -> Result<(Store, Store, MemoryLink), String> {
    let master = Store::open(dir.join("master"), master_opts(mode)).map_err(|e| format!("open master: {e}"))?;
    let mut slave = Store::open(dir.join("slave"), slave_opts()).map_err(|e| format!("open slave: {e}"))?;
    let link = MemoryLink::new();
    master.attach_replicator(link.replicator()).map_err(|e| format!("attach: {e}"))?;
    match link.start(&master, &slave) {
        Ok(()) => {}
        Err(Error::ReplicaAhead { master: end, .. }) => {
            slave.close().map_err(|e| format!("close slave: {e}"))?;
            drop(slave);
            mqstore::replication::truncate_slave(dir.join("slave"), &slave_opts(), mqstore::PhysicalOffset(end))
                .map_err(|e| format!("truncate slave: {e}"))?;
            slave = Store::open(dir.join("slave"), slave_opts()).map_err(|e| format!("reopen slave: {e}"))?;
            link.start(&master, &slave).map_err(|e| format!("connect after the cut: {e}"))?;
        }
        Err(e) => return Err(format!("connect: {e}")),
    }
    Ok((master, slave, link))
}

/// The child. Returns at once in a normal test run; in the child it never
/// returns: it is killed, or exits with status 3 on an error.
#[test]
fn replication_crash_child_process() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let err = run_child(Path::new(&dir));
    eprintln!("replication crash child: {err}");
    std::process::exit(3);
}

fn run_child(dir: &Path) -> String {
    let conf = std::env::var(ENV_CONF).unwrap_or_default();
    let parts: Vec<u64> = conf.split(',').filter_map(|p| p.parse().ok()).collect();
    let [mode, next_seq] = parts[..] else { return format!("bad conf {conf:?}") };
    let mode = if mode == 1 { FlushMode::Sync } else { FlushMode::Async };
    let (master, _slave, _link) = match open_pair(dir, mode) {
        Ok(p) => p,
        Err(e) => return e,
    };
    if master.topic(TOPIC).is_none() {
        if let Err(e) = master.create_topic(TopicConfig::new(TOPIC, QUEUES)) {
            return format!("create_topic: {e}");
        }
    }
    emit("@@READY\n");
    // Two producers, so replication acknowledgements cover several sends.
    let (tx, rx) = mpsc::channel::<String>();
    for t in 0..2u64 {
        let (m, tx) = (master.clone(), tx.clone());
        std::thread::spawn(move || {
            let mut seq = next_seq + t;
            loop {
                match m.send(Message::new(TOPIC, body(seq))) {
                    Ok(r) if r.status == SendStatus::SendOk => emit(&format!("@@ACK {seq}\n")),
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(format!("send {seq}: {e}"));
                        return;
                    }
                }
                seq += 2;
            }
        });
    }
    drop(tx);
    rx.recv().unwrap_or_else(|_| "producers ended".into())
}

/// Every sequence number in `store`'s topic, checking every body.
fn stored_seqs(store: &Store) -> Result<BTreeSet<u64>, String> {
    let mut out = BTreeSet::new();
    // A slave learns a topic's queues from the records it receives: killed
    // early, it may know fewer than the master's QUEUES.
    let Some(cfg) = store.topic(TOPIC) else {
        return Ok(out);
    };
    for q in 0..cfg.read_queues {
        let mut from = 0;
        loop {
            let r = store.pull(TOPIC, q, from, 256, &TagFilter::All).map_err(|e| format!("pull: {e}"))?;
            if r.status != PullStatus::Found {
                break;
            }
            for m in &r.messages {
                out.insert(parse(m.body())?);
            }
            from = r.next_offset;
        }
    }
    Ok(out)
}

/// Opens one side after a kill (recovery runs, as in the next child) and
/// checks every acknowledged message is there.
fn check_side(path: &Path, opts: StoreOptions, acked: &BTreeSet<u64>, side: &str) -> Result<(), String> {
    let store = Store::open(path, opts).map_err(|e| format!("{side}: open after the kill: {e}"))?;
    // Dispatch of the recovered log finishes before open returns.
    let have = stored_seqs(&store).map_err(|e| format!("{side}: {e}"))?;
    store.close().map_err(|e| format!("{side}: close: {e}"))?;
    let missing: Vec<u64> = acked.difference(&have).copied().collect();
    if !missing.is_empty() {
        return Err(format!(
            "{side}: {} acknowledged messages missing (first {:?})",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    Ok(())
}

fn parse_report(l: &str) -> Option<common::Report<u64>> {
    let mut it = l.split_whitespace();
    match (it.next(), it.next().and_then(|n| n.parse::<u64>().ok())) {
        (Some("@@READY"), _) => Some(common::Report::Ready),
        (Some("@@ACK"), Some(n)) => Some(common::Report::Event(n)),
        _ => None,
    }
}

fn round(
    dir: &Path,
    mode: FlushMode,
    r: u64,
    rng: &mut Rng,
    acked: &mut BTreeSet<u64>,
    next: &mut u64,
) -> Result<(), String> {
    let conf = format!("{},{}", u64::from(mode == FlushMode::Sync), *next);
    let child = common::spawn_test_child(
        CHILD_TEST,
        &[(ENV_DIR, dir.as_os_str().to_owned()), (ENV_CONF, conf.clone().into())],
    )?;
    let round_acks = common::sigkill_round(child, rng, &format!("round {r} (conf {conf})"), parse_report)?;
    for n in round_acks {
        acked.insert(n);
        *next = (*next).max(n + 2);
    }
    // Unacknowledged sends may have been stored: skip past them too.
    *next += 1_000;
    check_side(&dir.join("slave"), slave_opts(), acked, &format!("round {r}: slave"))?;
    check_side(&dir.join("master"), master_opts(mode), acked, &format!("round {r}: master"))
}

/// Connects the pair once more and checks the slave catches up to a log
/// equal to the master's.
fn final_check(dir: &Path, mode: FlushMode, acked: &BTreeSet<u64>) -> Result<(), String> {
    let (master, slave, link) = open_pair(dir, mode)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while slave.commit_log().max_offset() != master.commit_log().max_offset() {
        if Instant::now() > deadline {
            return Err(format!("slave never caught up: {:?}", link.last_error()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    link.stop();
    let a: Vec<_> = master.commit_log().iter(mqstore::PhysicalOffset(0)).collect();
    let b: Vec<_> = slave.commit_log().iter(mqstore::PhysicalOffset(0)).collect();
    if a.len() != b.len() {
        return Err(format!("logs differ in length: {} vs {} records", a.len(), b.len()));
    }
    for (x, y) in a.into_iter().zip(b) {
        let (x, y) = (x.map_err(|e| e.to_string())?, y.map_err(|e| e.to_string())?);
        if x.offset() != y.offset() || x.encoded() != y.encoded() {
            return Err(format!("logs differ at {:?}", x.offset()));
        }
    }
    master.close().map_err(|e| e.to_string())?;
    slave.close().map_err(|e| e.to_string())?;
    eprintln!("{mode:?}: {} acknowledged messages, all on both sides; logs equal", acked.len());
    Ok(())
}

fn run_mode(mode: FlushMode) {
    let rounds: u64 = std::env::var("MQSTORE_REPL_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let seed = common::seed();
    let mut rng = Rng(seed | 1);
    let tmp = tempfile::Builder::new().prefix("mqstore-repl-crash-").tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (mut acked, mut next) = (BTreeSet::new(), 0u64);
    let result = (0..rounds)
        .try_for_each(|r| round(&dir, mode, r, &mut rng, &mut acked, &mut next))
        .and_then(|()| final_check(&dir, mode, &acked));
    if let Err(e) = result {
        let kept = tmp.keep();
        panic!("replication crash test ({mode:?}) FAILED, MQSTORE_SEED={seed}; stores kept at {}\n{e}", kept.display());
    }
}

#[test]
fn sync_replicated_messages_survive_sigkill_master_async_flush() {
    run_mode(FlushMode::Async);
}

#[test]
fn sync_replicated_messages_survive_sigkill_master_sync_flush() {
    run_mode(FlushMode::Sync);
}
