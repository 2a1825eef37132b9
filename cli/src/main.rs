//! `mqstore`: admin tool for mqstore store directories.
//!
//! Read-only verbs: `verify` (checks every file: commit log, consume
//! queues, index, checkpoint and config), `dump` (list
//! its records), `print` (a topic's messages), `stats` (topics, queues,
//! groups, lag), `group list` / `group progress` (consumer groups and their
//! lag), `query` / `get` (through the message index), `dlq list` and `offset reset` / `dlq resend` without `--execute`
//! (dry runs). They take no lock and change nothing, so they can run beside
//! a live store. Writing verbs: `produce`, `consume`, `offset reset
//! --execute` and `dlq resend --execute` open the store as an application
//! would, taking its lock (a second writer fails at once). `perf produce`
//! and `perf consume` are load generators (throughput and latency
//! percentiles) and take the lock too. Exit status: 0 success, 1 error, 2
//! corruption found.

mod consume;
mod dlq;
mod dump;
mod group;
mod message_line;
mod offset_reset;
mod perf;
mod print;
mod produce;
mod query;
mod report;
mod rfc3339;
mod stats;
mod verify;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use report::Status;
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "mqstore",
    version,
    about = "Admin tool for mqstore store directories",
    after_help = "Exit status: 0 success, 1 error (including bad arguments and a store \
        locked by another writer), 2 corruption found. verify, dump, print, stats, group, \
        query, get, dlq list, and offset reset and dlq resend without --execute are read-only and take \
        no lock; produce, consume, offset reset --execute and dlq resend --execute take the \
        store's lock, as do perf produce and perf consume (load generators reporting \
        throughput and latency percentiles)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Verify(verify::VerifyArgs),
    Dump(dump::DumpArgs),
    Produce(produce::ProduceArgs),
    Print(print::PrintArgs),
    Consume(consume::ConsumeArgs),
    Stats(stats::StatsArgs),
    Group(group::GroupArgs),
    Offset(offset_reset::OffsetArgs),
    Dlq(dlq::DlqArgs),
    Query(query::QueryArgs),
    Get(query::GetArgs),
    Perf(perf::PerfArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e).into(),
    };
    let status = match &cli.command {
        Command::Verify(args) => verify::run(args),
        Command::Dump(args) => dump::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Print(args) => print::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Group(args) => group::run(args),
        Command::Offset(args) => offset_reset::run(args),
        Command::Dlq(args) => dlq::run(args),
        Command::Query(args) => query::run_query(args),
        Command::Get(args) => query::run_get(args),
        Command::Perf(args) => perf::run(args),
    };
    status.into()
}

/// Reports a failed parse. Help and --version exit 0 with clap's output;
/// usage errors exit 1 (keeping 2 for "corruption found") with clap's
/// message folded onto one `error: ...` line, so scripts see one line.
fn usage_error(e: &clap::Error) -> Status {
    let full = matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if full || !e.use_stderr() {
        let _ = e.print();
        return if e.use_stderr() { Status::Error } else { Status::Ok };
    }
    let rendered = e.render().to_string();
    let line = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:"))
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    Status::Error
}
