//! Entry point for the metadata files under `config/`: the envelope
//! (`crate::metafile`) and each payload parser behind it, run through the
//! loader the store itself calls.

use super::{root, set_u32, sim_with, split_mode};
use crate::error::Result;
use crate::storage::SimStorage;
use std::path::Path;

/// File name and magic of every metadata file, in mode order (FORMAT.md
/// section 11 is the normative list).
pub const METADATA_KINDS: [(&str, [u8; 8]); 7] = [
    ("topics", *b"\x8DMQT\r\n\x1A\n"),
    ("consumer_offsets", *b"\x8DMQO\r\n\x1A\n"),
    ("store", *b"\x8DMQS\r\n\x1A\n"),
    ("delay", *b"\x8DMQY\r\n\x1A\n"),
    ("dispatch", *b"\x8DMQD\r\n\x1A\n"),
    ("consumers", *b"\x8DMQC\r\n\x1A\n"),
    ("retention", *b"\x8DMQR\r\n\x1A\n"),
];

/// Envelope header length (magic, version, reserved, length, CRC).
const HEADER_LEN: usize = 20;

/// Loads the image as the metadata file `METADATA_KINDS[(mode & 0x7f) % 7]`
/// through the loader the store uses for it (topic table, consumer
/// offsets, layout settings, delay progress, dispatch checkpoint, live
/// consumers, retention floor). Whatever loads must survive being written back and read
/// again where the store rewrites that file (topics, offsets).
///
/// Mode bit 7 repairs the envelope: the kind's magic, the payload length
/// and the CRC (the version is left to the image).
pub fn metadata(data: &[u8]) -> Result<()> {
    let (mode, image) = split_mode(data);
    let (name, magic) = METADATA_KINDS[usize::from(mode & 0x7f) % METADATA_KINDS.len()];
    let mut b = image.to_vec();
    if mode & 0x80 != 0 {
        if b.len() < HEADER_LEN {
            b.resize(HEADER_LEN, 0);
        }
        b[..8].copy_from_slice(&magic);
        let len = u32::try_from(b.len() - HEADER_LEN).unwrap_or(u32::MAX);
        set_u32(&mut b, 12, len);
        set_u32(&mut b, 16, 0);
        let crc = crc32fast::hash(&b);
        set_u32(&mut b, 16, crc);
    }
    let root = root();
    let sim = sim_with(&root.join("config").join(name), &b)?;
    load(name, sim, &root)
}

fn load(name: &str, sim: std::sync::Arc<SimStorage>, root: &Path) -> Result<()> {
    match name {
        "topics" => {
            let table = crate::topic::TopicTable::open(sim.clone(), root)?;
            let mut topics = table.list();
            // Write the table back with one more topic and load it again:
            // the store rewrites it on every topic change, so whatever
            // loaded must survive that unchanged.
            let added = crate::topic::TopicConfig::new("FuzzAddedTopic", 1);
            if table.upsert(added.clone(), 0)?.is_none() {
                topics.push(added);
                topics.sort_by(|a, b| a.name.cmp(&b.name));
            }
            let again = crate::topic::TopicTable::open(sim, root)?.list();
            debug_assert_eq!(again, topics);
        }
        "consumer_offsets" => {
            let table = crate::offsetstore::OffsetTable::open(sim.clone(), root)?;
            let mut entries = table.entries();
            // Likewise: change one offset, persist, load again.
            if let Some(e) = entries.first_mut() {
                e.offset = e.offset.wrapping_add(1);
                table.reset(&e.group, &e.topic, e.queue_id, e.offset);
                table.persist()?;
            }
            let again = crate::offsetstore::OffsetTable::open(sim, root)?.entries();
            debug_assert_eq!(again, entries);
        }
        "store" => {
            // Every primary file counted present, so the records are read
            // and checked rather than refused up front.
            let layout = crate::store::layout::open(sim, root, 16, u32::MAX)?;
            debug_assert!((1..=1 << 24).contains(&layout.units()));
        }
        "delay" => {
            crate::retry::progress::read(sim.as_ref(), root)?;
        }
        "dispatch" => {
            crate::store::dispatch::parse_checkpoint(sim.as_ref(), root)?;
        }
        "retention" => {
            crate::store::retention::floor::read(sim.as_ref(), root)?;
        }
        _ => {
            crate::consumer::membership::read(sim.as_ref(), root)?;
        }
    }
    Ok(())
}
