//! `mqstore`: admin tool for mqstore store directories.
//!
//! Verbs: `verify` (full CRC scan of the commit log) and `dump` (list its
//! records). Both are read-only and take no lock, so they can run beside a
//! live store. Exit status: 0 success, 1 error, 2 corruption found.

mod dump;
mod report;
mod verify;

use clap::{Parser, Subcommand};
use report::Status;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "mqstore",
    version,
    about = "Admin tool for mqstore store directories",
    after_help = "Exit status: 0 success, 1 error (including bad arguments), \
        2 corruption found. Commands are read-only and take no lock."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Verify(verify::VerifyArgs),
    Dump(dump::DumpArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and --version exit 0; usage errors exit 1, keeping 2
            // for "corruption found".
            return if e.use_stderr() { Status::Error.into() } else { Status::Ok.into() };
        }
    };
    let status = match &cli.command {
        Command::Verify(args) => verify::run(args),
        Command::Dump(args) => dump::run(args),
    };
    status.into()
}
