//! The run's environment: the knobs read from environment variables,
//! scratch directories, settling the disk between runs, and the machine
//! description written next to the results.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Root of every scratch directory (the work disk, as the criterion benches).
pub const BENCH_ROOT: &str = "/work/bench-tmp";

/// The knobs of one run.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Timed rounds after the warm-up round (`MQSTORE_PEERS_ROUNDS`, default 5).
    pub rounds: usize,
    /// Multiplies the message counts of the fast and durable workloads
    /// (`MQSTORE_PEERS_SCALE`, default 1.0 = 2 M x 128 B, 500 k x 1 KiB,
    /// 500 k x 128 B durable).
    pub scale: f64,
    /// Bytes of payload per size-sweep run (`MQSTORE_PEERS_SWEEP_MB`,
    /// default 256, in MB of 10^6 bytes).
    pub sweep_bytes: usize,
    /// Comma-separated substrings of the workload names to run
    /// (`MQSTORE_PEERS_ONLY`; all when unset).
    pub only: Option<Vec<String>>,
    /// Where the sweep's CSV goes (`MQSTORE_PEERS_CSV`, default
    /// `throughput.csv` in the current directory).
    pub csv: String,
    /// Also run per-message `send` (`mqstore-send`) in the size sweep
    /// (`MQSTORE_PEERS_SWEEP_SEND=1`; default off, it is the slowest
    /// variant at small sizes and the fast tables have it anyway).
    pub sweep_send: bool,
    /// Comma-separated variant names to run (`MQSTORE_PEERS_VARIANTS`, e.g.
    /// `mqstore` to profile it alone; all when unset). Ratios to a peer
    /// left out are shown as `-`.
    pub variants: Option<Vec<String>>,
}

fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(x) => Some(x),
        Err(_) => {
            eprintln!("ignoring {name}={v:?}: not a number");
            None
        }
    }
}

fn list(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|s| s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
}

impl Knobs {
    /// Reads the knobs from the environment.
    pub fn from_env() -> Self {
        Self {
            rounds: var::<usize>("MQSTORE_PEERS_ROUNDS").filter(|&n| n > 0).unwrap_or(5),
            scale: var::<f64>("MQSTORE_PEERS_SCALE").filter(|&s| s > 0.0).unwrap_or(1.0),
            sweep_bytes: var::<usize>("MQSTORE_PEERS_SWEEP_MB").filter(|&n| n > 0).unwrap_or(256) * 1_000_000,
            only: list("MQSTORE_PEERS_ONLY"),
            csv: std::env::var("MQSTORE_PEERS_CSV").unwrap_or_else(|_| "throughput.csv".to_string()),
            sweep_send: var::<u8>("MQSTORE_PEERS_SWEEP_SEND").is_some_and(|v| v != 0),
            variants: list("MQSTORE_PEERS_VARIANTS"),
        }
    }

    /// Whether the workload `name` runs.
    pub fn selected(&self, name: &str) -> bool {
        match &self.only {
            Some(list) => list.iter().any(|p| name.contains(p.as_str())),
            None => true,
        }
    }

    /// Whether the variant named `name` runs.
    pub fn runs_variant(&self, name: &str) -> bool {
        self.variants.as_ref().is_none_or(|list| list.iter().any(|v| v == name))
    }
}

/// A fresh directory under [`BENCH_ROOT`], removed on drop.
pub fn scratch_dir(label: &str) -> tempfile::TempDir {
    std::fs::create_dir_all(BENCH_ROOT).expect("create bench root");
    tempfile::Builder::new().prefix(&format!("peers-{label}-")).tempdir_in(BENCH_ROOT).expect("create scratch dir")
}

/// Flushes the whole file system before a run (untimed), so one run's
/// writeback and the discards of its deleted files (the work disk is
/// mounted with `discard`) do not land in the next run's timing.
pub fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Bytes allocated on disk under `dir` (st_blocks), recursively.
pub fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    for e in entries.flatten() {
        let Ok(md) = e.metadata() else { continue };
        if md.is_dir() {
            total += allocated_bytes(&e.path());
        } else {
            total += md.blocks() * 512;
        }
    }
    total
}

/// "2 x AMD EPYC ..., 24 GiB, Linux 6.18.44, ext4 on /dev/vda" from /proc.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / (1024.0 * 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} x {model}, {mem_gib:.0} GiB RAM, Linux {}, {}", kernel.trim(), mount_of(BENCH_ROOT))
}

/// "ext4 on /dev/vda" for the longest mount point containing `path`.
fn mount_of(path: &str) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let best = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[1].len(), format!("{} on {}", f[2], f[0])))
        })
        .max_by_key(|(len, _)| *len);
    best.map_or_else(|| "unknown file system".to_string(), |(_, s)| s)
}

/// The 1-minute load average, as /proc/loadavg has it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_781), (2026, 11, 24));
    }
}
