//! The size sweep's CSV: written by the `peers` binary, read by `plot`.
//!
//! Format: `# key: value` comment lines first (machine, date, rounds,
//! volume, load), then a header line and one line per (size, variant)
//! with the columns of [`Point`]. Rates are medians over the rounds with
//! their min and max.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The column names, in order.
pub const COLUMNS: &str =
    "body_bytes,variant,messages,rounds,msgs_s,msgs_s_min,msgs_s_max,mb_s,mb_s_min,mb_s_max,x_raw_mmap,x_raft_engine,read_msgs_s,ok";

/// One (size, variant) point of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Body size in bytes.
    pub body_bytes: usize,
    /// Variant name.
    pub variant: String,
    /// Messages per run.
    pub messages: usize,
    /// Timed rounds.
    pub rounds: usize,
    /// Write msgs/s: median, min, max.
    pub msgs_s: [f64; 3],
    /// Payload MB/s: median, min, max.
    pub mb_s: [f64; 3],
    /// Median per-round ratio to raw-mmap (NaN when absent).
    pub x_raw_mmap: f64,
    /// Median per-round ratio to raft-engine (NaN when absent).
    pub x_raft_engine: f64,
    /// Median read-back msgs/s.
    pub read_msgs_s: f64,
    /// Every round read back every message.
    pub ok: bool,
}

/// A parsed CSV: the comment metadata and the points.
#[derive(Debug, Clone, Default)]
pub struct Sweep {
    /// `# key: value` lines.
    pub meta: BTreeMap<String, String>,
    /// The data lines.
    pub points: Vec<Point>,
}

impl Sweep {
    /// The CSV text.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.meta {
            let _ = writeln!(out, "# {k}: {v}");
        }
        let _ = writeln!(out, "{COLUMNS}");
        for p in &self.points {
            let _ = writeln!(
                out,
                "{},{},{},{},{:.0},{:.0},{:.0},{:.2},{:.2},{:.2},{:.4},{:.4},{:.0},{}",
                p.body_bytes,
                p.variant,
                p.messages,
                p.rounds,
                p.msgs_s[0],
                p.msgs_s[1],
                p.msgs_s[2],
                p.mb_s[0],
                p.mb_s[1],
                p.mb_s[2],
                p.x_raw_mmap,
                p.x_raft_engine,
                p.read_msgs_s,
                p.ok
            );
        }
        out
    }

    /// Parses the text [`Sweep::to_csv`] writes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut sweep = Sweep::default();
        let mut header_seen = false;
        for (no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(c) = line.strip_prefix('#') {
                if let Some((k, v)) = c.split_once(':') {
                    sweep.meta.insert(k.trim().to_string(), v.trim().to_string());
                }
                continue;
            }
            if !header_seen {
                if line != COLUMNS {
                    return Err(format!("line {}: expected the header {COLUMNS:?}", no + 1));
                }
                header_seen = true;
                continue;
            }
            sweep.points.push(parse_point(line).map_err(|e| format!("line {}: {e}", no + 1))?);
        }
        if !header_seen {
            return Err("no header line".to_string());
        }
        Ok(sweep)
    }
}

fn parse_point(line: &str) -> Result<Point, String> {
    let f: Vec<&str> = line.split(',').collect();
    if f.len() != COLUMNS.split(',').count() {
        return Err(format!("{} fields, expected {}", f.len(), COLUMNS.split(',').count()));
    }
    let num = |i: usize| f[i].parse::<f64>().map_err(|e| format!("field {i} ({:?}): {e}", f[i]));
    let int = |i: usize| f[i].parse::<usize>().map_err(|e| format!("field {i} ({:?}): {e}", f[i]));
    Ok(Point {
        body_bytes: int(0)?,
        variant: f[1].to_string(),
        messages: int(2)?,
        rounds: int(3)?,
        msgs_s: [num(4)?, num(5)?, num(6)?],
        mb_s: [num(7)?, num(8)?, num(9)?],
        x_raw_mmap: num(10)?,
        x_raft_engine: num(11)?,
        read_msgs_s: num(12)?,
        ok: f[13] == "true",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut s = Sweep::default();
        s.meta.insert("machine".into(), "2 x CPU: a, b".into());
        s.points.push(Point {
            body_bytes: 128,
            variant: "mqstore".into(),
            messages: 2_000_000,
            rounds: 5,
            msgs_s: [2_000_000.0, 1_500_000.0, 2_500_000.0],
            mb_s: [256.0, 192.0, 320.0],
            x_raw_mmap: 1.25,
            x_raft_engine: f64::NAN,
            read_msgs_s: 6_000_000.0,
            ok: true,
        });
        let back = Sweep::parse(&s.to_csv()).unwrap();
        assert_eq!(back.meta, s.meta);
        assert_eq!(back.points.len(), 1);
        let (a, b) = (&back.points[0], &s.points[0]);
        assert_eq!(
            (a.body_bytes, &a.variant, a.msgs_s, a.mb_s, a.ok),
            (b.body_bytes, &b.variant, b.msgs_s, b.mb_s, b.ok)
        );
        assert!(a.x_raft_engine.is_nan());
        assert!(Sweep::parse("body_bytes\n1").is_err());
        assert!(Sweep::parse(&format!("{COLUMNS}\n1,x")).is_err());
    }
}
