//! The child's report lines and the parent's reading of them. Every line
//! but `@@OPENING` and `@@READY` is a [`checked_line`]: a complete line the
//! parser accepts is one the child wrote whole, and any other complete
//! `@@` line fails the round.
//!
//! * `@@ACK <seq> <queue> <queue offset> <phys> <msg id> <body crc>`: a
//!   send returned `SendOk` (for a delayed message the queue offset is its
//!   place in the schedule queue it waits in, `queue` its real queue);
//! * `@@C <S|R> <topic> <queue> <queue offset> <seq>`: the listener is
//!   about to return `Success` (S) or `ReconsumeLater` (R) for the record
//!   at that place (a retry is named by its retry topic);
//! * `@@OFF <topic> <queue> <offset>`: the group's committed offset (in
//!   memory) moved to this value;
//! * `@@BAD <text>`: the listener was handed a body that is garbage.

use crate::common::{checked_fields, checked_line, Report};
use mqstore::store::SendResult;

/// One acknowledged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Its seq.
    pub seq: u64,
    /// The queue of its real topic.
    pub queue: u32,
    /// Its place in its queue (the schedule queue, if delayed).
    pub queue_offset: u64,
    /// Where its record starts.
    pub phys: u64,
    /// Its unique id.
    pub msg_id: String,
    /// CRC32 of its body.
    pub body_crc: u32,
}

/// One delivery the listener handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Returned `Success` (else `ReconsumeLater`).
    pub success: bool,
    /// The topic the record is stored under.
    pub topic: String,
    /// Its queue.
    pub queue: u32,
    /// Its queue offset.
    pub queue_offset: u64,
    /// The seq in its body.
    pub seq: u64,
}

/// What a report line says.
#[derive(Debug)]
pub enum Event {
    /// An acknowledged send.
    Ack(Ack),
    /// A delivery the listener handled.
    Consumed(Consumed),
    /// A committed offset `(topic, queue, offset)`.
    Committed(String, u32, u64),
    /// The listener saw garbage.
    Bad(String),
    /// A complete `@@` line that does not parse or check.
    Malformed(String),
}

/// The `@@ACK` line of message `seq` sent with result `r`.
pub fn ack_line(seq: u64, r: &SendResult, body_crc: u32) -> String {
    let fields = format!("{seq} {} {} {} {} {body_crc:08x}", r.queue_id, r.queue_offset, r.physical_offset.0, r.msg_id);
    checked_line("ACK", &fields)
}

/// The `@@C` line of one delivery.
pub fn consumed_line(success: bool, topic: &str, queue: u32, queue_offset: u64, seq: u64) -> String {
    checked_line("C", &format!("{} {topic} {queue} {queue_offset} {seq}", if success { "S" } else { "R" }))
}

/// The `@@OFF` line of a committed offset.
pub fn committed_line(topic: &str, queue: u32, offset: u64) -> String {
    checked_line("OFF", &format!("{topic} {queue} {offset}"))
}

/// The `@@BAD` line of a garbage delivery (spaces become `_`).
pub fn bad_line(what: &str) -> String {
    checked_line("BAD", &what.replace(' ', "_"))
}

/// Parses one line from its `@@` (for `common::sigkill_round_timed`).
pub fn parse(line: &str) -> Option<Report<Event>> {
    let malformed = || Some(Report::Event(Event::Malformed(line.to_string())));
    let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
    match tag {
        "@@OPENING" => return Some(Report::Opening),
        "@@READY" => return Some(Report::Ready),
        "@@ACK" | "@@C" | "@@OFF" | "@@BAD" => {}
        _ => return malformed(),
    }
    let Some(f) = checked_fields(rest) else { return malformed() };
    let n = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
    let q = |i: usize| f.get(i).and_then(|s| s.parse::<u32>().ok());
    let ev = match (tag, f.len()) {
        ("@@ACK", 6) => {
            let (Some(seq), Some(queue), Some(queue_offset), Some(phys), Ok(body_crc)) =
                (n(0), q(1), n(2), n(3), u32::from_str_radix(f[5], 16))
            else {
                return malformed();
            };
            Event::Ack(Ack { seq, queue, queue_offset, phys, msg_id: f[4].to_string(), body_crc })
        }
        ("@@C", 5) => {
            let (Some(queue), Some(queue_offset), Some(seq)) = (q(2), n(3), n(4)) else { return malformed() };
            let success = match f[0] {
                "S" => true,
                "R" => false,
                _ => return malformed(),
            };
            Event::Consumed(Consumed { success, topic: f[1].to_string(), queue, queue_offset, seq })
        }
        ("@@OFF", 3) => {
            let (Some(queue), Some(offset)) = (q(1), n(2)) else { return malformed() };
            Event::Committed(f[0].to_string(), queue, offset)
        }
        ("@@BAD", _) => Event::Bad(f.join(" ")),
        _ => return malformed(),
    };
    Some(Report::Event(ev))
}
