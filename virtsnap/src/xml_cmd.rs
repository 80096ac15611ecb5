//! `virtsnap xml ...`: work on snapshot XML files without touching any
//! snapshot. `xml check` parses each file as virtsnap would accept it
//! (`<domainsnapshot>` or `<volsnapshot>`, chosen by the root element),
//! validates it against the schema, and prints it normalised the way
//! libvirt writes it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use snapshot_conf::{
    ConfError, FormatFlags, FormatOptions, ParseFlags, ParseOptions, SnapshotDocument,
    check_snapshot_name,
};

/// Commands on snapshot XML documents.
#[derive(Debug, Subcommand)]
pub enum XmlCommand {
    /// Parse, validate and print snapshot XML normalised; exit 1 if any file
    /// is refused.
    Check(CheckArgs),
}

/// Arguments of `xml check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Files holding a <domainsnapshot> or <volsnapshot> document.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Read as a redefinition of an existing snapshot (name, state and
    /// creationTime required; parent, domain and cookie kept).
    #[arg(long)]
    redefine: bool,
    /// Read as a metadata file: <active> is required, and written back.
    #[arg(long)]
    internal: bool,
    /// The domain is shut off or the snapshot is disk-only: refuse memory.
    #[arg(long)]
    offline: bool,
}

/// Why one file was refused.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: ConfError,
    },
}

/// Runs an `xml` subcommand.
pub fn run(cmd: &XmlCommand) -> ExitCode {
    match cmd {
        XmlCommand::Check(args) => check(args),
    }
}

fn check(args: &CheckArgs) -> ExitCode {
    let mut flags = ParseFlags::VALIDATE;
    flags.set(ParseFlags::REDEFINE, args.redefine);
    flags.set(ParseFlags::INTERNAL, args.internal);
    flags.set(ParseFlags::OFFLINE, args.offline);
    let options = ParseOptions::new(flags);
    let many = args.files.len() > 1;
    let mut failed = false;
    let stdout = std::io::stdout();
    for path in &args.files {
        match check_file(path, &options, args.internal) {
            Ok(xml) => {
                let mut out = stdout.lock();
                let written = if many {
                    write!(out, "<!-- {} -->\n{xml}", path.display())
                } else {
                    write!(out, "{xml}")
                };
                if written.is_err() {
                    // stdout closed (e.g. piped into `head`): nothing more to do.
                    return ExitCode::from(u8::from(failed));
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("virtsnap: error: {e}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn check_file(path: &Path, options: &ParseOptions, internal: bool) -> Result<String, CheckError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |source| CheckError::Invalid {
        path: path.to_path_buf(),
        source,
    };
    let doc = SnapshotDocument::parse(&text, options).map_err(invalid)?;
    if let Some(name) = doc.name() {
        check_snapshot_name(name).map_err(invalid)?;
    }
    let mut flags = FormatFlags::SECURE;
    if internal {
        flags |= FormatFlags::INTERNAL;
        flags.set(FormatFlags::CURRENT, doc.is_current());
    }
    Ok(doc.format(&FormatOptions::new(flags)))
}
