//! Entry points for the fixed-layout decoders: commit-log records,
//! consume-queue files, index files and the checkpoint.

use super::{get_u32, put_file, root, set_u32, set_u64, sim_with, split_mode, REPAIR};
use crate::commitlog::{
    parse_prefix, Checkpoint, Prefix, RecordView, BLANK_LEN, CHECKPOINT_LEN, CHECKPOINT_MAGIC, COMMITLOG_DIR,
    MAX_RECORD_LEN_LIMIT, RECORD_HEADER_LEN, RECORD_MAGIC,
};
use crate::consumequeue::{ConsumeQueue, CqUnit, CQ_UNIT_LEN};
use crate::error::{CorruptionKind, Error, Result};
use crate::index::file::{lookup_offline, IndexFile};
use crate::index::{IndexFileRecovery, IndexFileSize};
use crate::message::{MessageExt, MessageRef};
use crate::offset::{PhysicalOffset, QueueOffset};
use crate::storage::SimStorage;
use bytes::Bytes;
use std::sync::Arc;

/// Physical offset at which [`record`] places the record it decodes.
const RECORD_AT: u64 = 4096;

/// Decodes one commit-log record image, as recovery and reads do: the
/// 8-byte prefix (record, end marker or zeros), then the whole-record
/// validation (CRC, own offset, lengths, UTF-8 topic), then both message
/// views ([`MessageRef`] in place and an owned [`MessageExt`]) and every
/// property they parse. The record sits at physical offset 4096 with
/// exactly a marker's room after it.
///
/// Mode bit 0 repairs the total size, magic, own offset, body length and
/// CRC, so the properties parser behind them is reached.
pub fn record(data: &[u8]) -> Result<()> {
    let (mode, image) = split_mode(data);
    let mut rec = image.to_vec();
    if mode & REPAIR != 0 {
        repair_record(&mut rec, RECORD_AT);
    }
    let corrupt = |kind| Error::corruption(COMMITLOG_DIR, RECORD_AT, kind);
    let head = rec.get(..BLANK_LEN as usize).unwrap_or(&rec);
    let room = rec.len() as u64 + u64::from(BLANK_LEN);
    match parse_prefix(head, room, MAX_RECORD_LEN_LIMIT).map_err(corrupt)? {
        Prefix::Empty | Prefix::Blank { .. } => return Ok(()),
        Prefix::Record { len } if len as usize != rec.len() => {
            return Err(corrupt(CorruptionKind::BadLength { length: u64::from(len) }))
        }
        Prefix::Record { .. } => {}
    }
    let (view, parts) = RecordView::validate(&rec, RECORD_AT).map_err(corrupt)?;
    let bytes = Bytes::from(rec.clone());
    let borrowed = MessageRef::new(&bytes, 0, view, &parts, PhysicalOffset(RECORD_AT));
    let _ = (borrowed.topic(), borrowed.body(), borrowed.tags(), borrowed.msg_id(), borrowed.keys().count());
    let owned = borrowed.to_owned_message()?;
    let ext = MessageExt::from_encoded(PhysicalOffset(RECORD_AT), bytes.clone())?;
    touch_message(&ext);
    debug_assert!(owned == ext, "the two decoders of one record disagree");
    debug_assert_eq!(ext.tags(), borrowed.tags());
    Ok(())
}

/// Reads every derived field of a decoded message.
fn touch_message(m: &MessageExt) {
    let _ = (m.topic(), m.body().len(), m.properties().len(), m.user_properties().count(), m.tags());
    let _ = (m.keys().count(), m.delay_level(), m.msg_id(), m.offset_msg_id());
}

/// Makes `rec` a record whose framing and CRC check out at `at`, keeping
/// every other byte (topic and properties lengths included).
fn repair_record(rec: &mut Vec<u8>, at: u64) {
    if rec.len() < RECORD_HEADER_LEN {
        rec.resize(RECORD_HEADER_LEN, 0);
    }
    let len = rec.len();
    set_u32(rec, 0, u32::try_from(len).unwrap_or(u32::MAX));
    set_u32(rec, 4, RECORD_MAGIC);
    set_u64(rec, 28, at);
    let t = u16::from_be_bytes([rec[60], rec[61]]) as usize;
    let p = u16::from_be_bytes([rec[62], rec[63]]) as usize;
    if let Some(b) = (len - RECORD_HEADER_LEN).checked_sub(t + p) {
        set_u32(rec, 64, u32::try_from(b).unwrap_or(u32::MAX));
    }
    set_u32(rec, 8, 0);
    let crc = crc32fast::hash(rec);
    set_u32(rec, 8, crc);
}

/// Decodes a checkpoint image; a decoded checkpoint must re-encode to one
/// that decodes to itself.
///
/// Mode bit 0 pads or cuts the image to 64 bytes and repairs its magic and
/// CRC.
pub fn checkpoint(data: &[u8]) -> Result<Checkpoint> {
    let (mode, image) = split_mode(data);
    let mut b = image.to_vec();
    if mode & REPAIR != 0 {
        b.resize(CHECKPOINT_LEN, 0);
        b[..8].copy_from_slice(&CHECKPOINT_MAGIC);
        let crc = crc32fast::hash(&b[..60]);
        set_u32(&mut b, 60, crc);
    }
    let cp = Checkpoint::decode(&b).map_err(|(at, kind)| Error::corruption("checkpoint", at, kind))?;
    debug_assert_eq!(Checkpoint::decode(&cp.encode()), Ok(cp));
    Ok(cp)
}

/// Opens a consume queue made of the image's units, as store recovery
/// does, and reads every unit it kept; returns how many.
///
/// The image is split into `1 + mode % 3` files of equal length (at least
/// one unit each). Mode bit 4 leaves a gap in the file names after the
/// first file, bit 5 leaves the last file short (a wrong length), bit 6
/// adds a leftover `.tmp` file and bit 7 a stray file name.
pub fn consume_queue(data: &[u8]) -> Result<u64> {
    let (mode, image) = split_mode(data);
    for chunk in image.chunks(CQ_UNIT_LEN) {
        let _ = CqUnit::decode(chunk);
    }
    let files = 1 + usize::from(mode % 3);
    let units = (image.len() / CQ_UNIT_LEN / files).clamp(1, 4096);
    let file_len = units * CQ_UNIT_LEN;
    let dir = root().join("consumequeue").join("TopicFuzz").join("0");
    let sim = Arc::new(SimStorage::new());
    for i in 0..files {
        let gap = if mode & 0x10 != 0 && i > 0 { units } else { 0 };
        let first = (i * units + gap) as u64;
        let from = (i * file_len).min(image.len());
        let mut bytes = image[from..(from + file_len).min(image.len())].to_vec();
        if mode & 0x20 == 0 || i + 1 < files {
            bytes.resize(file_len, 0);
        }
        put_file(sim.as_ref(), &dir.join(format!("{first:020}")), &bytes)?;
    }
    if mode & 0x40 != 0 {
        put_file(sim.as_ref(), &dir.join(format!("{:020}.tmp", files * units)), &[1; 20])?;
    }
    if mode & 0x80 != 0 {
        put_file(sim.as_ref(), &dir.join("stray"), b"x")?;
    }
    let q = ConsumeQueue::open(sim, &root(), "TopicFuzz", 0, units as u64)?;
    let (min, max) = (q.min_offset().0, q.max_offset().0);
    let mut out = Vec::new();
    let mut at = min;
    let mut last: Option<u64> = None;
    while at < max {
        out.clear();
        q.read(QueueOffset(at), 64, &mut out);
        let Some((next, _)) = out.last() else { break };
        for (off, unit) in &out {
            // Recovery keeps only a contiguous run of units with strictly
            // increasing physical offsets (FORMAT.md 10.4).
            debug_assert_eq!(off.0, at);
            debug_assert!(last.is_none_or(|p| unit.physical_offset.0 > p), "units out of order");
            debug_assert!(unit.physical_offset.0.checked_add(u64::from(unit.size)).is_some());
            last = Some(unit.physical_offset.0);
            at += 1;
        }
        debug_assert_eq!(next.0 + 1, at);
    }
    debug_assert_eq!(at, max, "units below the queue's max must be readable");
    let _ = (q.last(), q.get(QueueOffset(min)));
    Ok(at - min)
}

/// Keys the index entry points look up and insert.
const INDEX_KEYS: [&str; 4] = ["TopicFuzz#k0", "TopicFuzz#k1", "TopicFuzz#uniq", "orders#o-42"];

/// Opens an index file image as store recovery does (header, seal, entry
/// scan, slot rebuild), looks keys up through the mapping and offline with
/// `pread`, appends entries until full, seals a full file, and checks that
/// the result reopens.
///
/// After the mode byte, 8 bytes give the commit log's end (the bound on
/// kept entries); the rest is the file. Mode bit 0 repairs the header
/// (magic, version, sizes that fit the image, CRC) and the seal's CRC when
/// a seal magic is there; bit 1 also repairs every non-zero entry's CRC;
/// bit 2 writes a seal magic first.
pub fn index_file(data: &[u8]) -> Result<IndexFileRecovery> {
    let (mode, rest) = split_mode(data);
    let (log_end, image) = match rest.split_first_chunk::<8>() {
        Some((end, image)) => (u64::from_be_bytes(*end), image),
        None => (u64::MAX, rest),
    };
    let mut b = image.to_vec();
    if mode & REPAIR != 0 {
        repair_index(&mut b, mode);
    }
    let path = root().join("index").join(format!("{:020}", 0));
    let sim = sim_with(&path, &b)?;
    let (file, report) = IndexFile::open(sim.as_ref(), &path, log_end)?;
    let mut hits = Vec::new();
    for key in INDEX_KEYS {
        file.lookup(key, 0, u64::MAX, 32, &mut hits);
        lookup_offline(sim.as_ref(), &path, key, 0, u64::MAX, |_, _| true)?;
    }
    let _ = (file.time_range(), file.is_sealed(), file.count());
    for (i, key) in INDEX_KEYS.iter().enumerate() {
        // A record must start below the log's end, so never at u64::MAX.
        let Some(phy) = file.last_phy().checked_add(i as u64).filter(|&p| p < u64::MAX) else { break };
        if !file.put(key, phy, 1_700_000_000_000)? {
            break;
        }
    }
    file.flush()?;
    if file.is_full() {
        file.seal()?;
    }
    let count = file.count();
    drop(file);
    // What this build wrote and flushed must reopen whole.
    let reopened = IndexFile::open(sim.as_ref(), &path, u64::MAX);
    debug_assert!(
        reopened.as_ref().is_ok_and(|(f, _)| f.count() == count),
        "an index file rewritten by recovery does not reopen: {reopened:?}"
    );
    Ok(report)
}

/// Fixes the header of an index image (and the seal and entry CRCs, as
/// `mode` asks) so recovery gets past them.
fn repair_index(b: &mut Vec<u8>, mode: u8) {
    const HEADER: usize = 64;
    const SEAL: usize = 64;
    let min = HEADER + SEAL + 4 + 32;
    if b.len() < min {
        b.resize(min, 0);
    }
    // Slots from the image (kept if in 1..=64, else folded into it),
    // entries whatever fits after them.
    let slots = match get_u32(b, 12) {
        s @ 1..=64 => s,
        s => 1 + s % 64,
    };
    let slots = slots.min(((b.len() - min) / 4) as u32 + 1);
    let entries = ((b.len() - HEADER - SEAL - 4 * slots as usize) / 32) as u32;
    let size = IndexFileSize { slots, max_entries: entries.max(1) };
    b.truncate(size.file_len() as usize);
    b.resize(size.file_len() as usize, 0);
    b[..8].copy_from_slice(&crate::index::file::INDEX_MAGIC);
    b[8..10].copy_from_slice(&1u16.to_be_bytes());
    set_u32(b, 12, size.slots);
    set_u32(b, 16, size.max_entries);
    let crc = crc32fast::hash(&b[..60]);
    set_u32(b, 60, crc);
    let entries_at = HEADER + 4 * slots as usize;
    if mode & 2 != 0 {
        for e in b[entries_at..entries_at + 32 * size.max_entries as usize].chunks_exact_mut(32) {
            if e.iter().any(|&x| x != 0) {
                let crc = crc32fast::hash(&e[..28]);
                set_u32(e, 28, crc);
            }
        }
    }
    let seal_at = b.len() - SEAL;
    if mode & 4 != 0 {
        b[seal_at..seal_at + 8].copy_from_slice(&crate::index::file::INDEX_SEAL_MAGIC);
    }
    if b[seal_at..seal_at + 8] == crate::index::file::INDEX_SEAL_MAGIC {
        let crc = crc32fast::hash(&b[seal_at..seal_at + 60]);
        set_u32(b, seal_at + 60, crc);
    }
}
