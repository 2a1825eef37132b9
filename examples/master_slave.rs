//! Master/slave over TCP on 127.0.0.1: the host side of replication.
//!
//! A slave store listens on a loopback port; a master store in sync
//! replication mode connects to it with a small `Replicator` written here
//! (frames: `prev_end u64, offset u64, len u32, records`; the slave answers
//! each with its progress, `applied u64, durable u64`, and greets with it
//! on connect). A consumer group reads from the slave while a producer
//! sends 2,000 messages to the master; every `SendOk` means the slave had
//! the message. Then the master is killed (its connection cut and the
//! store dropped mid-stream), and the consumer keeps reading from the
//! slave until it has every acknowledged message.
//!
//! Run with `cargo run --release --example master_slave`.

use mqstore::consumer::{ConsumeContext, ConsumeFrom, ConsumeStatus};
use mqstore::message::{Message, MessageExt};
use mqstore::replication::{ReplicaProgress, ReplicationBatch, ReplicationMode, ReplicationOptions, Replicator};
use mqstore::store::{SendStatus, Store, StoreOptions};
use mqstore::topic::TopicConfig;
use mqstore::PhysicalOffset;
use std::collections::BTreeSet;
use std::error::Error;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const TOPIC: &str = "orders";
const MESSAGES: u64 = 2_000;

fn write_progress(w: &mut impl Write, p: ReplicaProgress) -> std::io::Result<()> {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&p.applied.get().to_be_bytes());
    b[8..].copy_from_slice(&p.durable.get().to_be_bytes());
    w.write_all(&b)
}

fn read_progress(r: &mut impl Read) -> std::io::Result<ReplicaProgress> {
    let mut b = [0u8; 16];
    r.read_exact(&mut b)?;
    let word = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or_default());
    Ok(ReplicaProgress { applied: PhysicalOffset(word(0)), durable: PhysicalOffset(word(8)) })
}

/// The slave's side of one connection: greet with our progress, then
/// apply every run and answer with the progress after it.
fn serve(slave: &Store, mut conn: TcpStream) -> std::io::Result<()> {
    write_progress(&mut conn, slave.replica_progress())?;
    let mut head = [0u8; 20];
    loop {
        conn.read_exact(&mut head)?;
        let word = |i: usize| u64::from_be_bytes(head[i..i + 8].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(head[16..20].try_into().unwrap_or_default()) as usize;
        if len > 64 << 20 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "run too large"));
        }
        let mut records = vec![0u8; len];
        conn.read_exact(&mut records)?;
        let batch =
            ReplicationBatch { prev_end: PhysicalOffset(word(0)), offset: PhysicalOffset(word(8)), records: &records };
        match slave.apply_replicated(batch) {
            Ok(progress) => write_progress(&mut conn, progress)?,
            // A run we cannot apply: drop the connection; the master
            // reconnects and starts again from our progress.
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
    }
}

/// The master's side: frames runs onto the socket.
struct TcpReplicator {
    conn: Mutex<Option<TcpStream>>,
}

impl Replicator for TcpReplicator {
    fn ship(&self, batch: ReplicationBatch<'_>) -> std::io::Result<()> {
        let mut guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = guard.as_mut().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))?;
        let mut head = [0u8; 20];
        head[..8].copy_from_slice(&batch.prev_end.get().to_be_bytes());
        head[8..16].copy_from_slice(&batch.offset.get().to_be_bytes());
        let len = u32::try_from(batch.records.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        head[16..].copy_from_slice(&len.to_be_bytes());
        conn.write_all(&head)?;
        conn.write_all(batch.records)
    }
}

/// Connects the master to the slave at `addr`: the greeting becomes
/// `replica_connected`, every later answer `replica_ack`.
fn connect(master: &Store, link: &Arc<TcpReplicator>, addr: std::net::SocketAddr) -> Result<(), Box<dyn Error>> {
    let conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    let mut reader = conn.try_clone()?;
    let hello = read_progress(&mut reader)?;
    *link.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn);
    master.replica_connected(hello)?;
    let m = master.clone();
    std::thread::Builder::new().name("example:acks".into()).spawn(move || {
        while let Ok(p) = read_progress(&mut reader) {
            if m.replica_ack(p).is_err() {
                break;
            }
        }
        m.replica_disconnected();
    })?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let slave = Store::open(dirs.1.path(), StoreOptions::default().replication(ReplicationOptions::slave()))?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let s = slave.clone();
    std::thread::Builder::new().name("example:slave".into()).spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = conn.set_nodelay(true);
            // One master at a time; a broken connection ends this one.
            let _ = serve(&s, conn);
        }
    })?;

    let master_opts = StoreOptions::default().replication(ReplicationOptions::master(ReplicationMode::Sync));
    let master = Store::open(dirs.0.path(), master_opts)?;
    let link = Arc::new(TcpReplicator { conn: Mutex::new(None) });
    master.attach_replicator(link.clone())?;
    connect(&master, &link, addr)?;
    master.create_topic(TopicConfig::new(TOPIC, 4))?;
    println!("master and slave connected over {addr} (sync replication)");

    // Consumers read from the slave.
    let consumed = Arc::new(Mutex::new(BTreeSet::new()));
    let c = consumed.clone();
    // The slave learns the topic from the first replicated record.
    let t0 = Instant::now();
    master.send(Message::new(TOPIC, "0"))?;
    while slave.topic(TOPIC).is_none() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let consumer = slave
        .push_consumer("readers")
        .subscribe(TOPIC, "*")?
        .consume_from(ConsumeFrom::FirstOffset)
        .listener(move |msgs: &[MessageExt], _ctx: &ConsumeContext| {
            let mut c = c.lock().unwrap_or_else(PoisonError::into_inner);
            for m in msgs {
                if let Ok(n) = std::str::from_utf8(m.body()).unwrap_or_default().parse::<u64>() {
                    c.insert(n);
                }
            }
            ConsumeStatus::Success
        })
        .start()?;

    // The producer: every SendOk is on the slave already.
    let mut acked = BTreeSet::from([0u64]);
    let started = Instant::now();
    for i in 1..MESSAGES {
        let r = master.send(Message::new(TOPIC, i.to_string()))?;
        match r.status {
            SendStatus::SendOk => {
                acked.insert(i);
            }
            other => println!("message {i}: {other:?}"),
        }
        if i == MESSAGES / 2 {
            println!(
                "{i} sent, slave at {:?}, consumed from the slave so far: {}",
                slave.replica_progress().applied,
                consumed.lock().unwrap_or_else(PoisonError::into_inner).len()
            );
        }
    }
    println!("{} of {MESSAGES} acknowledged in {:?} (each waited for the slave)", acked.len(), started.elapsed());

    // Kill the master: cut its connection and drop the store; the slave
    // never hears from it again.
    if let Some(conn) = link.conn.lock().unwrap_or_else(PoisonError::into_inner).take() {
        let _ = conn.shutdown(Shutdown::Both);
    }
    drop(master);
    println!("master killed; consuming from the slave only");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = consumed.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let missing = acked.difference(&got).count();
        if missing == 0 {
            println!("consumed every acknowledged message from the slave: {} messages", got.len());
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{missing} acknowledged messages never reached the slave's consumers").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    consumer.shutdown()?;
    println!("slave status: {:?}", slave.replication_status());
    slave.close()?;
    Ok(())
}
