//! The self-describing message body of the crash tests
//! (`tests/store_crash_kill.rs`, `tests/whole_store_crash_kill.rs`): a
//! 24-byte header (magic, `seq`, send kind, batch index and length, payload
//! length, CRC32 over header and payload) and a payload derived from `seq`
//! alone, so any body found after a crash can be checked for garbage.
//!
//! Header layout, big-endian: `[0..4]` magic, `[4..12]` seq, `[12]` kind,
//! `[13]` batch index, `[14]` batch length, `[15]` zero, `[16..20]` payload
//! length, `[20..24]` CRC32 of bytes `[0..20]` followed by the payload.
//!
//! Each test keeps its own parameters (magic, send kinds, largest batch,
//! payload lengths) in its [`BodyKind`] implementation, and adds its own
//! methods (topic, tags, keys...) to its `Desc<Kind>`.

use super::body_for;
use std::fmt::Debug;

/// Length of the body header.
pub const BODY_HEADER: usize = 24;

/// A test's send kinds and the body parameters that go with them.
pub trait BodyKind: Copy + Eq + Debug {
    /// The first four bytes of every body of this test.
    const MAGIC: [u8; 4];
    /// Largest batch length a `Batch` member may claim.
    const MAX_BATCH: u64;

    /// The kind stored as `code`, if any.
    fn from_code(code: u8) -> Option<Self>;
    /// The byte stored in the header.
    fn code(self) -> u8;
    /// A member of a batch (the only kind whose index and length vary).
    fn is_batch(self) -> bool;
    /// Payload length of message `seq`; at most the largest body less
    /// [`BODY_HEADER`].
    fn payload_len(seq: u64) -> usize;
}

/// What a message's body header says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc<K> {
    /// Its sequence number.
    pub seq: u64,
    /// How it was sent.
    pub kind: K,
    /// Index within its batch (0 outside batches).
    pub idx: u8,
    /// Batch length (1 outside batches).
    pub n: u8,
}

/// The seq a body's header claims, without checking anything else.
pub fn header_seq(body: &[u8]) -> Option<u64> {
    body.get(4..12).map(|b| u64::from_be_bytes(b.try_into().unwrap()))
}

impl<K: BodyKind> Desc<K> {
    /// Seq of the first message of its send call.
    pub fn first(&self) -> u64 {
        self.seq - u64::from(self.idx)
    }

    /// The body: header and the payload derived from `seq`.
    pub fn body(&self) -> Vec<u8> {
        let payload = body_for(self.seq, K::payload_len(self.seq));
        let mut b = Vec::with_capacity(BODY_HEADER + payload.len());
        b.extend_from_slice(&K::MAGIC);
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&[self.kind.code(), self.idx, self.n, 0]);
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&b);
        h.update(&payload);
        b.extend_from_slice(&h.finalize().to_be_bytes());
        b.extend_from_slice(&payload);
        b
    }

    /// Decodes and fully checks a body: header, CRC, batch fields and the
    /// payload `seq` implies.
    pub fn decode(body: &[u8]) -> Result<Self, String> {
        let short = |what: &str| {
            format!("body of {} bytes is garbage: {what}; first bytes {:02x?}", body.len(), &body[..body.len().min(32)])
        };
        if body.len() < BODY_HEADER || body[..4] != K::MAGIC {
            return Err(short("no header"));
        }
        let seq = u64::from_be_bytes(body[4..12].try_into().unwrap());
        let kind = K::from_code(body[12]).ok_or_else(|| short("bad kind"))?;
        let (idx, n) = (body[13], body[14]);
        let plen = u32::from_be_bytes(body[16..20].try_into().unwrap()) as usize;
        let crc = u32::from_be_bytes(body[20..24].try_into().unwrap());
        if plen != body.len() - BODY_HEADER {
            return Err(short("payload length mismatch"));
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&body[..20]);
        h.update(&body[BODY_HEADER..]);
        if h.finalize() != crc {
            return Err(short("header CRC mismatch"));
        }
        let batch_ok = if kind.is_batch() {
            n >= 2 && u64::from(n) <= K::MAX_BATCH && idx < n && u64::from(idx) <= seq
        } else {
            n == 1 && idx == 0
        };
        if body[15] != 0 || !batch_ok {
            return Err(short("bad batch fields"));
        }
        if plen != K::payload_len(seq) || body[BODY_HEADER..] != body_for(seq, plen)[..] {
            return Err(short(&format!("payload is not the one of seq {seq}")));
        }
        Ok(Self { seq, kind, idx, n })
    }
}
