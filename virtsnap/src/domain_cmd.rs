//! virsh's domain definition verbs on the state directory: `define`,
//! `undefine [--snapshots-metadata]`, `list --all` and `dumpxml`. Domains
//! cannot be started yet (the live-domain issue), so every domain listed is
//! shut off.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use snapshot_core::store::Layout;
use snapshot_core::store::domains::{self, DomainError, SnapshotMetadata};

/// The domain verbs.
#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Define a domain from an XML file (libvirt's domain XML).
    Define(DefineArgs),
    /// Undefine a domain.
    Undefine(UndefineArgs),
    /// List domains.
    List(ListArgs),
    /// Print a domain's XML, as it was defined.
    Dumpxml(DumpxmlArgs),
}

/// `define`.
#[derive(Debug, Args)]
pub struct DefineArgs {
    /// The domain XML.
    file: PathBuf,
}

/// `undefine`.
#[derive(Debug, Args)]
pub struct UndefineArgs {
    /// Domain name.
    domain: String,
    /// Also delete the metadata of its snapshots (their storage is kept).
    #[arg(long)]
    snapshots_metadata: bool,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Include inactive domains (every domain is inactive for now).
    #[arg(long)]
    all: bool,
    /// Names only.
    #[arg(long)]
    name: bool,
}

/// `dumpxml`.
#[derive(Debug, Args)]
pub struct DumpxmlArgs {
    /// Domain name.
    domain: String,
}

#[derive(Debug, thiserror::Error)]
enum CmdError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Layout(#[from] snapshot_core::store::LayoutError),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs a domain verb.
pub fn run(cmd: &DomainCommand) -> ExitCode {
    match execute(cmd) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("virtsnap: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn execute(cmd: &DomainCommand) -> Result<String, CmdError> {
    let dir = snapshot_core::store::layout::state_dir()?;
    tracing::debug!(state_dir = %dir.display(), "state directory");
    let layout = Layout::new(dir);
    match cmd {
        DomainCommand::Define(a) => {
            let xml = std::fs::read_to_string(&a.file).map_err(|source| CmdError::Read {
                path: a.file.clone(),
                source,
            })?;
            let d = domains::define(&layout, &xml)?;
            tracing::info!(domain = ?d.def.name, file = %a.file.display(), "domain defined");
            Ok(format!(
                "Domain '{}' defined from {}\n",
                d.def.name.unwrap_or_default(),
                a.file.display()
            ))
        }
        DomainCommand::Undefine(a) => {
            let metadata = if a.snapshots_metadata {
                SnapshotMetadata::Delete
            } else {
                SnapshotMetadata::Refuse
            };
            domains::undefine(&layout, &a.domain, metadata)?;
            tracing::info!(domain = %a.domain, ?metadata, "domain undefined");
            Ok(format!("Domain '{}' has been undefined\n", a.domain))
        }
        DomainCommand::List(a) => {
            let names = domains::list(&layout)?;
            tracing::debug!(domains = names.len(), "domains listed");
            if a.name {
                return Ok(names.iter().map(|n| format!("{n}\n")).collect());
            }
            if !a.all {
                // Only running domains are listed without --all; none run yet.
                return Ok(" Id   Name   State\n--------------------\n".to_string());
            }
            let width = names.iter().map(String::len).max().unwrap_or(0).max(4);
            let mut out = format!(" Id   {:<width$}   State\n", "Name");
            out.push_str(&"-".repeat(width + 16));
            out.push('\n');
            for n in names {
                out.push_str(&format!(" -    {n:<width$}   shut off\n"));
            }
            Ok(out)
        }
        DomainCommand::Dumpxml(a) => Ok(domains::dumpxml(&layout, &a.domain)?),
    }
}
