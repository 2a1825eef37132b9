//! Quickstart: open a commit log, append records in both flush modes,
//! read them back, close, reopen and see them again.
//!
//! Run with `cargo run --release --example quickstart`.

use mqstore::commitlog::{CommitLog, CommitLogOptions, FlushMode, RecordDraft};
use mqstore::PhysicalOffset;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let opts = CommitLogOptions::default().segment_size(64 << 20);

    // Async flush (the default): appends return once in the page cache; a
    // background thread flushes every 500 ms.
    let log = CommitLog::open(dir.path(), opts.clone())?;
    for i in 0..5u64 {
        let body = format!("order #{i}");
        let at = log.append(&RecordDraft {
            topic: "orders",
            queue_id: (i % 2) as u32,
            queue_offset: i / 2,
            body: body.as_bytes(),
            ..Default::default()
        })?;
        println!("appended {body:?} at offset {} ({} bytes)", at.offset, at.size);
    }
    // Make everything durable now.
    println!("flushed up to {}", log.flush()?);
    log.close()?;

    // Sync flush: every append returns only once it is on disk; concurrent
    // appenders share one flush (group commit).
    let log = CommitLog::open(dir.path(), opts.flush_mode(FlushMode::Sync))?;
    let at = log.append(&RecordDraft { topic: "payments", body: b"durable on return", ..Default::default() })?;
    assert!(log.flushed_offset() >= at.end());
    println!("sync append at {} is durable (flushed offset {})", at.offset, log.flushed_offset());

    // Read everything back, in log order.
    for rec in log.iter(PhysicalOffset(0)) {
        let rec = rec?;
        println!(
            "  {:>6}  {:<8} queue {} offset {}  {:?}",
            rec.offset(),
            rec.topic(),
            rec.queue_id(),
            rec.queue_offset(),
            String::from_utf8_lossy(&rec.body())
        );
    }
    log.close()?;
    Ok(())
}
