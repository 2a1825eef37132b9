//! Exit statuses and the small output helpers shared by the commands.

use mqstore::CorruptionKind;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

/// How a command ended; maps one to one onto the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Exit 0: success (a torn tail counts as success).
    Ok,
    /// Exit 1: usage error, missing store, I/O error, bad `--from`.
    Error,
    /// Exit 2: the commit log is corrupt.
    Corrupt,
}

impl From<Status> for ExitCode {
    fn from(s: Status) -> Self {
        match s {
            Status::Ok => ExitCode::SUCCESS,
            Status::Error => ExitCode::from(1),
            Status::Corrupt => ExitCode::from(2),
        }
    }
}

/// Prints `error: <msg>` on stderr and returns [`Status::Error`].
pub fn fail(msg: impl std::fmt::Display) -> Status {
    // Nothing sensible is left to do if stderr itself is gone.
    let _ = writeln!(io::stderr().lock(), "error: {msg}");
    Status::Error
}

/// An error and its chain of sources on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}

/// `corrupt at <file>:<pos>: <kind>`.
pub fn damage_line(path: &Path, pos: u64, kind: &CorruptionKind) -> String {
    format!("corrupt at {}:{pos}: {kind}", path.display())
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Handles a failed write to stdout: a closed pipe (`mqstore dump | head`)
/// ends the command quietly with `ok`; anything else is an error.
pub fn output_failed(e: &io::Error, ok: Status) -> Status {
    if e.kind() == io::ErrorKind::BrokenPipe {
        ok
    } else {
        fail(format_args!("writing output: {e}"))
    }
}

/// Prints one line on stdout, returning `status` unless the write fails.
pub fn print_line(line: &str, status: Status) -> Status {
    let mut out = io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => status,
        Err(e) => output_failed(&e, status),
    }
}

/// Reports a library error on one stderr line: corruption as
/// `corrupt at <file>:<pos>: <kind>` ([`Status::Corrupt`]), a store held
/// by another writer and everything else as `error: …` ([`Status::Error`]).
pub fn store_error(e: &mqstore::Error) -> Status {
    match e {
        mqstore::Error::Corruption { path, offset, kind } => {
            let _ = writeln!(io::stderr().lock(), "{}", damage_line(path, *offset, kind));
            Status::Corrupt
        }
        mqstore::Error::Locked { path } => {
            let dir = path.parent().unwrap_or(path);
            fail(format_args!(
                "store {} is open in another writer (lock {} is held); close it first",
                dir.display(),
                path.display()
            ))
        }
        other => fail(chain(other)),
    }
}
