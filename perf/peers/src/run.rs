//! Interleaved rounds of one workload and their summary per variant.

use crate::inputs::Bodies;
use crate::stats::{median, min_max, rotated};
use crate::workload::{Sample, Variant, Workload};
use crate::{env, mq, raft, raw};

/// Runs variant `v` once, after `sync()`.
pub fn run_variant(v: Variant, w: &Workload, bodies: &Bodies) -> Sample {
    env::settle();
    match v {
        Variant::RawFile => raw::run_raw_file(w, bodies),
        Variant::RawMmap => raw::run_raw_mmap(w, bodies),
        Variant::RaftEngine => raft::run(w, bodies),
        Variant::MqstoreLog => mq::run_log(w, bodies, false),
        Variant::MqstoreLogSyncBatch => mq::run_log(w, bodies, true),
        Variant::Mqstore | Variant::MqstoreSend | Variant::MqstoreSyncBatch => mq::run(v, w, bodies),
    }
}

/// Every sample of one workload: `samples[round][variant]`.
pub struct Runs {
    /// The workload.
    pub workload: Workload,
    /// The variants, in table order.
    pub variants: Vec<Variant>,
    /// One row per timed round, one sample per variant (table order).
    pub samples: Vec<Vec<Sample>>,
}

/// One warm-up round (discarded), then `rounds` rounds, each running every
/// variant once with the starting variant rotated. Prints one line per
/// round to stderr as it goes.
pub fn interleaved(w: Workload, variants: &[Variant], rounds: usize) -> Runs {
    let bodies = Bodies::new(w.messages, w.body_size, 0x5eed_0001 ^ w.body_size as u64);
    for &v in variants {
        let _ = run_variant(v, &w, &bodies);
    }
    let mut samples = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let mut row: Vec<Option<Sample>> = vec![None; variants.len()];
        let mut line = format!("{} round {}/{rounds}:", w.name, r + 1);
        for v in rotated(variants, r) {
            let s = run_variant(v, &w, &bodies);
            line.push_str(&format!(" {}={}", v.name(), crate::stats::short(rate(w.messages, s))));
            if !s.ok(&w) {
                line.push_str(&format!(" (read back {} of {})", s.read_count, w.messages));
            }
            let vi = variants.iter().position(|x| *x == v).expect("variant of this workload");
            row[vi] = Some(s);
        }
        eprintln!("{line}");
        samples.push(row.into_iter().map(|s| s.expect("every variant ran")).collect());
    }
    Runs { workload: w, variants: variants.to_vec(), samples }
}

fn rate(messages: usize, s: Sample) -> f64 {
    messages as f64 / s.total.as_secs_f64()
}

/// A median with its range.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// Median over the rounds.
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Spread {
    fn of(xs: &[f64]) -> Self {
        let (min, max) = min_max(xs);
        Self { median: median(xs), min, max }
    }

    /// (max - min) / median.
    pub fn relative(&self) -> f64 {
        (self.max - self.min) / self.median
    }
}

/// One variant's figures over the rounds of a workload.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The variant.
    pub variant: Variant,
    /// Write msgs/s (appends + sync points + final flush).
    pub rate: Spread,
    /// Payload MB/s (10^6 bytes) at the write rate.
    pub mb_s: Spread,
    /// Msgs/s before the final flush.
    pub append_only: Spread,
    /// Read-back msgs/s.
    pub read: Spread,
    /// Median allocated MB after the final flush.
    pub disk_mb: f64,
    /// This variant's rate / raw-mmap's, per round, then medianed.
    pub x_raw_mmap: Option<Spread>,
    /// This variant's rate / raft-engine's, per round, then medianed.
    pub x_raft_engine: Option<Spread>,
    /// Every round read back every message.
    pub ok: bool,
}

impl Runs {
    fn column(&self, vi: usize, f: impl Fn(&Sample) -> f64) -> Vec<f64> {
        self.samples.iter().map(|row| f(&row[vi])).collect()
    }

    fn ratio_to(&self, vi: usize, base: Variant) -> Option<Spread> {
        let bi = self.variants.iter().position(|v| *v == base)?;
        let xs: Vec<f64> =
            self.samples.iter().map(|row| row[bi].total.as_secs_f64() / row[vi].total.as_secs_f64()).collect();
        Some(Spread::of(&xs))
    }

    /// The per-variant summaries, in table order.
    pub fn summaries(&self) -> Vec<Summary> {
        let w = &self.workload;
        let n = w.messages as f64;
        self.variants
            .iter()
            .enumerate()
            .map(|(vi, &variant)| Summary {
                variant,
                rate: Spread::of(&self.column(vi, |s| n / s.total.as_secs_f64())),
                mb_s: Spread::of(&self.column(vi, |s| w.payload_bytes() / 1e6 / s.total.as_secs_f64())),
                append_only: Spread::of(&self.column(vi, |s| n / s.append_only.as_secs_f64())),
                read: Spread::of(&self.column(vi, |s| s.read_count as f64 / s.read.as_secs_f64())),
                disk_mb: median(&self.column(vi, |s| s.disk_bytes as f64 / 1e6)),
                x_raw_mmap: self.ratio_to(vi, Variant::RawMmap),
                x_raft_engine: self.ratio_to(vi, Variant::RaftEngine),
                ok: self.samples.iter().all(|row| row[vi].ok(w)),
            })
            .collect()
    }
}
