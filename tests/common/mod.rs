//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mqstore::commitlog::{CommitLogOptions, Preallocation, RecordDraft};

pub mod crash_body;
pub mod numbered;
pub mod queue_read;

/// Small segments so rolls happen constantly.
pub fn tiny_opts() -> CommitLogOptions {
    CommitLogOptions::default().segment_size(16 << 10).max_record_size(4 << 10).prefault_window(64 << 10)
}

/// The commit log the power-loss tests run on `sim`: 16 KiB segments (so
/// rolls happen), a flush and a checkpoint every few milliseconds (so
/// crash images fall between them).
pub fn sim_log_opts(sim: &mqstore::storage::SimStorage, mode: mqstore::commitlog::FlushMode) -> CommitLogOptions {
    CommitLogOptions::default()
        .segment_size(16 << 10)
        .max_record_size(4 << 10)
        .prefault_window(32 << 10)
        .flush_mode(mode)
        .flush_interval(std::time::Duration::from_millis(1))
        .flush_min_bytes(1)
        .checkpoint_interval(std::time::Duration::from_millis(2))
        .storage(std::sync::Arc::new(sim.clone()))
}

/// Tiny segments, no background preparation (deterministic I/O).
pub fn deterministic_opts() -> CommitLogOptions {
    tiny_opts().preallocation(Preallocation::OnRoll)
}

/// A body derived from `i` so a verifier can regenerate it.
pub fn body_for(i: u64, len: usize) -> Vec<u8> {
    noise(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), len)
}

/// `len` xorshift bytes from `seed`.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn draft<'a>(topic: &'a str, i: u64, body: &'a [u8]) -> RecordDraft<'a> {
    RecordDraft { topic, queue_id: (i % 4) as u32, queue_offset: i, body, born_timestamp: i, ..Default::default() }
}

/// A fixed-seed xorshift generator; prints nothing, tests print the seed.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub fn seed() -> u64 {
    std::env::var("MQSTORE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
    })
}

/// Copies a store directory (without its LOCK file), as a crash image or a
/// fixture to damage.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Replaces `to` with a copy of `from` (as [`copy_dir`]): a crash test
/// verifies the copy and leaves `from` as the kill left it, for the next
/// child to recover.
pub fn replace_with_copy(from: &std::path::Path, to: &std::path::Path) -> Result<(), String> {
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(|e| format!("removing {to:?}: {e}"))?;
    }
    copy_dir(from, to);
    Ok(())
}

/// Paths of the files in a store's commit-log directory, sorted.
pub fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> =
        std::fs::read_dir(dir.join(mqstore::commitlog::COMMITLOG_DIR)).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// One read from a crash-test child's report pipe.
pub enum ReportLine {
    /// A whole line, without its newline.
    Complete(String),
    /// The child died mid-line: the bytes it got out.
    Torn(String),
    /// Reading the pipe failed.
    ReadError(String),
}

/// Reads a crash-test child's report lines until end of file, a torn last
/// line or a read error, handing each to `each`; stops early when `each`
/// returns false. Shared by the SIGKILL tests, whose children report one
/// line per acknowledged operation.
pub fn read_report_lines(stdout: impl std::io::Read, mut each: impl FnMut(ReportLine) -> bool) {
    use std::io::BufRead;
    let mut r = std::io::BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                each(ReportLine::ReadError(e.to_string()));
                return;
            }
        }
        let line = String::from_utf8_lossy(&buf).into_owned();
        if buf.last() != Some(&b'\n') {
            each(ReportLine::Torn(line));
            return;
        }
        if !each(ReportLine::Complete(line.trim_end().to_string())) {
            return;
        }
    }
}

/// Kills and reaps a crash-test child when dropped (a failing parent must
/// not leave it running).
pub struct ChildGuard(pub Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A crash-test child: the test binary re-run with only `child_test`.
pub struct TestChild {
    /// Owns the process.
    pub guard: ChildGuard,
    /// Its report pipe.
    pub stdout: std::process::ChildStdout,
    /// Collects everything it writes to stderr, for failure messages.
    pub stderr: std::thread::JoinHandle<String>,
}

/// Starts the running test binary again with only `child_test` selected,
/// with `envs` set, stdout piped for reports and stderr collected.
pub fn spawn_test_child(child_test: &str, envs: &[(&str, std::ffi::OsString)]) -> Result<TestChild, String> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", child_test, "--nocapture", "--test-threads=1"]).env("RUST_BACKTRACE", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning the child: {e}"))?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let mut stderr = child.stderr.take().ok_or("no child stderr")?;
    let guard = ChildGuard(Some(child));
    let stderr = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    Ok(TestChild { guard, stdout, stderr })
}

/// What a crash-test child's report line means to [`sigkill_round`].
pub enum Report<E> {
    /// `@@OPENING`: the child is about to open the store. Optional; when a
    /// child reports it, a kill aimed at recovery is timed from it rather
    /// than from the spawn (which a loaded machine can stretch past the
    /// whole window).
    Opening,
    /// `@@READY`: the child finished opening.
    Ready,
    /// Anything the caller counts (an acknowledgement, say).
    Event(E),
}

/// What one SIGKILL round saw (see [`sigkill_round_timed`]).
pub struct RoundOutcome<E> {
    /// The events, in the order the child wrote them.
    pub events: Vec<E>,
    /// The kill was aimed at the store's recovery (`Store::open`).
    pub aimed_at_open: bool,
    /// The child reported `@@READY` before it died.
    pub ready: bool,
    /// Everything the child wrote to stderr (a background thread's panic
    /// shows only there).
    pub stderr: String,
}

/// Runs one SIGKILL round of a crash-test child that prints `@@READY` once
/// open and `@@...` report lines after: kills it while it recovers (one
/// round in ten, within 8 ms of the start) or 5 to 150 ms after it is
/// ready, reaps it, and returns the events `parse` found in its lines
/// (each from its `@@`; `None` skips a line). An error if the child exited
/// on its own or never became ready; `ctx` prefixes the messages, which
/// carry the child's stderr.
pub fn sigkill_round<E: Send + 'static>(
    child: TestChild,
    rng: &mut Rng,
    ctx: &str,
    parse: fn(&str) -> Option<Report<E>>,
) -> Result<Vec<E>, String> {
    sigkill_round_timed(child, rng, ctx, parse, 5..151).map(|o| o.events)
}

/// [`sigkill_round`] with the kill after `@@READY` drawn from
/// `after_ready_ms`, returning the whole [`RoundOutcome`]. A kill aimed at
/// recovery lands 0 to 8 ms after `@@OPENING` (or after the spawn, for a
/// child that does not report it).
pub fn sigkill_round_timed<E: Send + 'static>(
    child: TestChild,
    rng: &mut Rng,
    ctx: &str,
    parse: fn(&str) -> Option<Report<E>>,
    after_ready_ms: std::ops::Range<u64>,
) -> Result<RoundOutcome<E>, String> {
    use std::os::unix::process::ExitStatusExt;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    let TestChild { mut guard, stdout, stderr } = child;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        read_report_lines(stdout, |line| {
            let ReportLine::Complete(l) = line else { return true };
            // The first report shares its line with libtest's "test ... ".
            let Some(at) = l.find("@@") else { return true };
            match parse(&l[at..]) {
                Some(r) => tx.send(r).is_ok(),
                None => true,
            }
        });
    });
    let during_open = rng.below(10) == 0;
    let span = after_ready_ms.end.saturating_sub(after_ready_ms.start);
    let after = Duration::from_millis(if during_open { rng.below(8) } else { after_ready_ms.start + rng.below(span) });
    // The moment the countdown runs from: the spawn until `@@OPENING`
    // arrives (a kill aimed at open), or `@@READY`.
    let mut start_at = if during_open { Some(Instant::now()) } else { None };
    let mut ready = false;
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut events = Vec::new();
    loop {
        if start_at.is_some_and(|t| t.elapsed() >= after) || Instant::now() > give_up {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(1)) {
            Ok(Report::Opening) => {
                if during_open {
                    start_at = Some(Instant::now());
                }
            }
            Ok(Report::Ready) => {
                ready = true;
                start_at.get_or_insert_with(Instant::now);
            }
            Ok(Report::Event(e)) => events.push(e),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let mut child = guard.0.take().ok_or("no child")?;
    let _ = child.kill();
    let status = child.wait().map_err(|e| e.to_string())?;
    reader.join().map_err(|_| "reader panicked")?;
    for r in rx.try_iter() {
        match r {
            Report::Event(e) => events.push(e),
            Report::Ready => ready = true,
            Report::Opening => {}
        }
    }
    let err = stderr.join().unwrap_or_default();
    if status.signal() != Some(libc::SIGKILL) {
        return Err(format!("{ctx}: child exited on its own ({status:?})\n{err}"));
    }
    if !ready && !during_open {
        return Err(format!("{ctx}: child never became ready\n{err}"));
    }
    Ok(RoundOutcome { events, aimed_at_open: during_open, ready, stderr: err })
}

/// A report line `@@<tag> <fields...> <check>`, newline-terminated, where
/// `check` is the CRC32 of the fields: a line a parser accepts is one the
/// child wrote whole.
pub fn checked_line(tag: &str, fields: &str) -> String {
    format!("@@{tag} {fields} {:08x}\n", crc32fast::hash(fields.as_bytes()))
}

/// The fields of a [`checked_line`] (given without its `@@<tag>`), or
/// `None` when its check does not match.
pub fn checked_fields(rest: &str) -> Option<Vec<&str>> {
    let (fields, check) = rest.trim().rsplit_once(' ')?;
    let check = u32::from_str_radix(check, 16).ok()?;
    (crc32fast::hash(fields.as_bytes()) == check).then(|| fields.split(' ').collect())
}

/// Writes a report to stdout at once (one `write` per call for lines under
/// the pipe's atomic size, so concurrent reporters never interleave).
pub fn emit(s: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes()).and_then(|()| out.flush()).map_err(|e| format!("writing a report to stdout: {e}"))
}

/// SplitMix64's finaliser: derives independent-looking values from a seed.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An integer environment variable, `None` when unset or malformed.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

/// A temporary directory on `/dev/shm` (a tmpfs: fsync costs nothing) when
/// there is one, else in the default place. For the fault-injection loops,
/// whose faults come from the storage seam, not from the disk: they open
/// and sync a store hundreds of times, and on a real disk the fsyncs alone
/// take minutes.
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// The message a panic carried (`panic!` with a literal or a format),
/// for a crash test that turns a panic in its parent into a failed round.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "non-string panic".into())
}

/// A message's place, for error messages.
pub fn describe(m: &mqstore::message::MessageExt) -> String {
    format!(
        "[{}/{} @{} phys {} size {} body {} B msg id {:?}]",
        m.stored_topic(),
        m.queue_id(),
        m.queue_offset().0,
        m.physical_offset().0,
        m.store_size(),
        m.body().len(),
        m.msg_id()
    )
}

/// One run of a sync-mode power-loss test (see [`sync_crash_states`]).
pub struct SyncCrashRun {
    /// The simulated disk, armed to take its crash image right after a
    /// randomly drawn sync.
    pub sim: mqstore::storage::SimStorage,
    /// Acknowledgements so far: the image records this value (its probe)
    /// at the moment it is taken, so the test knows which acks it covers.
    pub acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Seed, run number and sub-seed, for failure messages.
    pub ctx: String,
}

/// Drives sync-mode power-loss runs until `target` crash states were
/// really reached (a run may end before its drawn crash point; then
/// another is drawn, up to 3 × `target` runs). Each run's image is taken
/// after sync number 1..=N, N being the most syncs any run made so far
/// (at least `first_guess`). `run` does the work and the checks, and
/// returns whether its image was taken. Returns N.
pub fn sync_crash_states(base: u64, target: u64, first_guess: u64, mut run: impl FnMut(&SyncCrashRun) -> bool) -> u64 {
    use std::sync::atomic::Ordering;
    let mut rng = Rng(base);
    let mut syncs_per_run = first_guess;
    let (mut reached, mut runs) = (0u64, 0u64);
    while reached < target {
        assert!(runs < target * 3, "only {reached} crash states reached in {runs} runs");
        runs += 1;
        let s = rng.next();
        let sim = mqstore::storage::SimStorage::new();
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let probe = acked.clone();
        sim.set_probe(std::sync::Arc::new(move || probe.load(Ordering::SeqCst)));
        sim.snapshot_after_sync(1 + rng.below(syncs_per_run), s);
        let r = SyncCrashRun { sim, acked, ctx: format!("seed {base} state {runs} (sub-seed {s})") };
        if run(&r) {
            reached += 1;
        }
        syncs_per_run = syncs_per_run.max(r.sim.syncs());
    }
    syncs_per_run
}
