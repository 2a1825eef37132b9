//! The end of an epoch: the parent recovers the directory the last child
//! died in, lets real time pass with the group running (its listener now
//! always succeeds) and checks that nothing acknowledged or sent back
//! vanished: every acknowledged message was consumed (by a child or here)
//! or dead-lettered, every delayed one reached its real topic and queue,
//! every message a listener sent back was consumed later or
//! dead-lettered, the schedule topic is empty, and every acknowledged
//! message is found by its key.

use super::model::Epoch;
use super::msg::{store_opts, Desc, GROUP, MAX_RECONSUME, TOPICS};
use super::verify::check_key;
use mqstore::commitlog::FlushMode;
use mqstore::consumer::{ConsumeContext, ConsumeFrom, ConsumeStatus};
use mqstore::dlq::retry_topic;
use mqstore::message::MessageExt;
use mqstore::store::{PullStatus, Store, TagFilter};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the group may take to catch up (the longest retry chain waits
/// 300 ms + 500 ms + 800 ms, a delivery time up to 1.6 s).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a drain counted.
#[derive(Debug, Default)]
pub struct Drained {
    /// Messages the parent's group consumed.
    pub consumed: u64,
    /// Acknowledged messages that waited in the schedule topic, found
    /// delivered.
    pub delayed: u64,
    /// Messages sent back at least once, all accounted for.
    pub sent_back: u64,
    /// Dead letters of the group.
    pub dead: u64,
    /// Acknowledged messages found by key.
    pub keys: u64,
}

fn dead_letters(store: &Store) -> Result<HashSet<u64>, String> {
    let letters = match store.dlq_list(GROUP, 0, usize::MAX) {
        Ok(l) => l,
        Err(_) if store.topic(&mqstore::dlq::dlq_topic(GROUP)).is_none() => return Ok(HashSet::new()),
        Err(e) => return Err(format!("dlq_list: {e}")),
    };
    letters.iter().map(|d| Desc::decode(d.message.body()).map(|d| d.seq)).collect()
}

/// Where each seq sits in the user topics: (topic, queue, physical offset).
fn user_topic_contents(store: &Store) -> Result<HashMap<u64, (&'static str, u32, u64)>, String> {
    let mut out = HashMap::new();
    for (t, n) in TOPICS {
        for q in 0..n {
            let max = store.max_offset(t, q).map_err(|e| e.to_string())?;
            let mut pos = 0;
            while pos < max {
                let r = store.pull(t, q, pos, 64, &TagFilter::All).map_err(|e| e.to_string())?;
                if r.status != PullStatus::Found || r.messages.is_empty() {
                    return Err(format!("pull({t}, {q}, {pos}) below {max}: {:?}", r.status));
                }
                for m in &r.messages {
                    let d = Desc::decode(m.body())?;
                    out.insert(d.seq, (t, q, m.physical_offset().0));
                }
                pos = r.next_offset;
            }
        }
    }
    Ok(out)
}

/// Runs the drain on the directory `dir` (consumed: it is discarded after).
pub fn drain(dir: &Path, mode: FlushMode, ep: &Epoch) -> Result<Drained, String> {
    let store = Store::open(dir, store_opts(mode)).map_err(|e| format!("drain open: {e} ({e:?})"))?;
    let result = run(&store, ep);
    let closed = store.close().map_err(|e| format!("drain close: {e}"));
    let d = result?;
    closed?;
    Ok(d)
}

fn run(store: &Store, ep: &Epoch) -> Result<Drained, String> {
    // A round killed before the child created its topics (a kill aimed at
    // open, or one landing right after it) leaves the store without them:
    // only the topics that exist are consumed. An acknowledged message of a
    // missing topic is reported as missing below.
    let topics: Vec<(&str, u32)> = TOPICS.iter().copied().filter(|(t, _)| store.topic(t).is_some()).collect();
    if topics.is_empty() {
        if let Some(seq) = ep.acked.keys().next() {
            return Err(format!("no topic exists, but message {seq} was acknowledged"));
        }
        return Ok(Drained::default());
    }
    let consumed = Arc::new(Mutex::new(HashSet::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (c2, e2) = (consumed.clone(), errors.clone());
    let mut b = store.push_consumer(GROUP);
    for (t, _) in &topics {
        b = b.subscribe(t, "*").map_err(|e| e.to_string())?;
    }
    let consumer = b
        .consume_from(ConsumeFrom::FirstOffset)
        .max_reconsume_times(MAX_RECONSUME)
        .listener(move |msgs: &[MessageExt], _: &ConsumeContext| {
            for m in msgs {
                match Desc::decode(m.body()) {
                    Ok(d) => {
                        c2.lock().unwrap().insert(d.seq);
                    }
                    Err(e) => e2.lock().unwrap().push(format!("{}: {e}", crate::common::describe(m))),
                }
            }
            ConsumeStatus::Success
        })
        .start()
        .map_err(|e| format!("drain consumer: {e}"))?;
    let mut queues: Vec<(String, u32)> =
        topics.iter().flat_map(|(t, n)| (0..*n).map(move |q| (t.to_string(), q))).collect();
    queues.push((retry_topic(GROUP), 0));
    let started = Instant::now();
    let deadline = started + DRAIN_TIMEOUT;
    // When the group has caught up, nothing waits in the schedule topic
    // and nothing new was consumed for this long, what is missing is gone.
    let settle = Duration::from_secs(3);
    let mut last_change = (Instant::now(), 0usize);
    let dead = loop {
        std::thread::sleep(Duration::from_millis(20));
        let dead = dead_letters(store)?;
        let got = consumed.lock().unwrap().clone();
        let done = |s: &u64| ep.succeeded.contains(s) || got.contains(s) || dead.contains(s);
        let missing: Vec<u64> = ep.acked.keys().copied().filter(|s| !done(s)).collect();
        let vanished: Vec<u64> = ep.sent_back.iter().copied().filter(|s| !done(s)).collect();
        let stats = store.schedule_stats();
        let pending: u64 = stats.pending.iter().sum();
        // A queue that never held a message has no committed offset until
        // the consumer shuts down (a pull that finds nothing commits
        // nothing): it is caught up when it is empty.
        let behind: Vec<&(String, u32)> = queues
            .iter()
            .filter(|(t, q)| {
                let end = store.max_offset(t, *q).ok();
                let at = store.committed_offset(GROUP, t, *q).or_else(|| store.min_offset(t, *q).ok());
                at != end
            })
            .collect();
        if missing.is_empty() && vanished.is_empty() && pending == 0 && behind.is_empty() {
            break dead;
        }
        if got.len() + dead.len() != last_change.1 || pending != 0 || !behind.is_empty() {
            last_change = (Instant::now(), got.len() + dead.len());
        }
        if Instant::now() > deadline || last_change.0.elapsed() > settle {
            return Err(format!(
                "after {:.1?}: {} acknowledged messages never consumed nor dead-lettered (first {:?}), \
                 {} sent back and vanished (first {:?}), schedule {stats:?}, group behind on {behind:?}",
                started.elapsed(),
                missing.len(),
                &missing[..missing.len().min(10)],
                vanished.len(),
                &vanished[..vanished.len().min(10)],
            ));
        }
    };
    consumer.shutdown().map_err(|e| e.to_string())?;
    let errs = errors.lock().unwrap().clone();
    if !errs.is_empty() {
        return Err(format!("the drain was handed garbage: {:?}", &errs[..errs.len().min(5)]));
    }
    // Every acknowledged message is in its real topic and queue (a delayed
    // one delivered), found by its key.
    let contents = user_topic_contents(store)?;
    let mut d =
        Drained { consumed: consumed.lock().unwrap().len() as u64, dead: dead.len() as u64, ..Drained::default() };
    for (seq, a) in &ep.acked {
        let Some(&(t, q, phys)) = contents.get(seq) else {
            return Err(format!("acknowledged {a:?} is not in its topic after the drain"));
        };
        let desc = ep.descs[seq];
        if t != desc.topic() || q != a.queue {
            return Err(format!("acknowledged {a:?} was delivered to {t}/{q}"));
        }
        if ep.scheduled.contains(seq) {
            d.delayed += 1;
        }
        check_key(store, desc, phys)?;
        d.keys += 1;
    }
    d.sent_back = ep.sent_back.len() as u64;
    Ok(d)
}
