//! `virtsnap`: the command-line face of virtsnap, with virsh-style verbs.
//!
//! One module per command group, each owning its arguments, its errors and
//! its `run` (firecracker's snapshot-editor layout). Data goes to stdout,
//! messages to stderr; the exit code is 0 on success, 1 when any input was
//! refused, 2 for usage errors (clap).

mod domain_cmd;
mod snapshot_cmd;
mod xml_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Snapshots of virtual machines and storage volumes.
#[derive(Debug, Parser)]
#[command(name = "virtsnap", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Domain(domain_cmd::DomainCommand),
    #[command(flatten)]
    Snapshot(snapshot_cmd::SnapshotCommand),
    /// Snapshot XML documents.
    #[command(subcommand)]
    Xml(xml_cmd::XmlCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Domain(cmd) => domain_cmd::run(&cmd),
        Command::Snapshot(cmd) => snapshot_cmd::run(&cmd),
        Command::Xml(cmd) => xml_cmd::run(&cmd),
    }
}
