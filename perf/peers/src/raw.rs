//! The raw baselines: `raw-file` and `raw-mmap`.
//!
//! The mmap writer is the benches' own (`RawMmapLog` of
//! `benches/common/plain.rs`); the drivers are copied from
//! `benches/append.rs` (`run_raw_file`, `run_raw_mmap`) without change
//! except the scratch directory helper and the read-back added after the
//! timed region:
//!
//! * `raw-file`: a `BufWriter` (1 MiB) over a `File`; records are
//!   `[u32 len][u32 crc32][body]`; a sync point is `BufWriter::flush` +
//!   `File::sync_data` (fdatasync).
//! * `raw-mmap`: a sparse 1 GiB file (`set_len`) mapped with `memmap2`,
//!   records memcpy'd as `[len][crc][body]`; a sync point is `flush_range`
//!   (msync) over the dirty range from a page-aligned start; rolls to a new
//!   file when full.
//!
//! Read-back (timed separately): every record in order, CRC verified, as
//! the readback bench's raw-mmap reader does.

use crate::env::{allocated_bytes, scratch_dir};
use crate::inputs::{raw_header, Bodies};
use crate::plain::RawMmapLog;
use crate::workload::{Sample, Workload};
use std::fs::OpenOptions;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};


/// `raw-file`: append, sync points, final flush; then read back.
pub fn run_raw_file(w: &Workload, bodies: &Bodies) -> Sample {
    let dir = scratch_dir("raw-file");
    let path = dir.path().join("log");
    let file = OpenOptions::new().create(true).write(true).truncate(true).open(&path).expect("create raw-file log");
    let mut out = BufWriter::with_capacity(1 << 20, file);

    let start = Instant::now();
    for i in 0..w.messages {
        let body = bodies.get(i);
        out.write_all(&raw_header(body)).expect("write header");
        out.write_all(body).expect("write body");
        if w.is_sync_point(i + 1) {
            out.flush().expect("flush");
            out.get_ref().sync_data().expect("fdatasync");
        }
    }
    let append_only = start.elapsed();
    out.flush().expect("flush");
    out.get_ref().sync_data().expect("fdatasync");
    let total = start.elapsed();
    drop(out);

    let disk_bytes = allocated_bytes(dir.path());
    let start = Instant::now();
    let read_count = read_raw_file(&path);
    let read = start.elapsed();
    Sample { total, append_only, read, read_count, disk_bytes }
}

/// Reads `[len][crc][body]` records through a 1 MiB `BufReader`; returns
/// how many had a matching CRC (stops at the first that does not).
fn read_raw_file(path: &Path) -> usize {
    let file = std::fs::File::open(path).expect("open raw-file log");
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; 8];
    let mut body = Vec::new();
    let mut n = 0;
    loop {
        match input.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("raw-file read: {e}"),
        }
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        body.resize(len, 0);
        input.read_exact(&mut body).expect("raw-file body");
        if crc32fast::hash(&body) != crc {
            break;
        }
        n += 1;
    }
    n
}

/// `raw-mmap`: append, sync points, final msync; then read back.
pub fn run_raw_mmap(w: &Workload, bodies: &Bodies) -> Sample {
    let dir = scratch_dir("raw-mmap");
    let mut log = RawMmapLog::create(dir.path());

    let start = Instant::now();
    for i in 0..w.messages {
        log.append(bodies.get(i));
        if w.is_sync_point(i + 1) {
            log.sync();
        }
    }
    let append_only = start.elapsed();
    log.sync();
    let total = start.elapsed();
    drop(log);

    let disk_bytes = allocated_bytes(dir.path());
    let (read, read_count) = read_raw_mmap(dir.path());
    Sample { total, append_only, read, read_count, disk_bytes }
}

/// Maps every segment of `dir` in name order and walks its records until
/// the zero-filled tail (a zero length), verifying each CRC. Mapping is
/// outside the timing; returns (walk time, records verified).
fn read_raw_mmap(dir: &Path) -> (Duration, usize) {
    let mut names: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("list raw-mmap dir").map(|e| e.expect("dir entry").path()).collect();
    names.sort();
    let maps: Vec<memmap2::Mmap> = names
        .iter()
        .map(|p| {
            let f = std::fs::File::open(p).expect("open raw-mmap segment");
            // SAFETY: the file is private to this benchmark and no longer written.
            unsafe { memmap2::Mmap::map(&f) }.expect("map raw-mmap segment")
        })
        .collect();
    let start = Instant::now();
    let mut n = 0;
    'segments: for map in &maps {
        let data: &[u8] = map;
        let mut at = 0;
        while at + 8 <= data.len() {
            let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
            if len == 0 {
                break;
            }
            let crc = u32::from_be_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
            let Some(body) = data.get(at + 8..at + 8 + len) else { break 'segments };
            if crc32fast::hash(body) != crc {
                break 'segments;
            }
            n += 1;
            at += 8 + len;
        }
    }
    (start.elapsed(), n)
}
