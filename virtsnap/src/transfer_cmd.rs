//! `snapshot-import` and `snapshot-export`: a domain's snapshot metadata
//! from or to a libvirt metadata directory (one `NAME.xml` per snapshot,
//! like `/var/lib/libvirt/qemu/snapshot/DOMAIN/`), on
//! [`snapshot_core::store::transfer`], which owns the checks and the
//! guarantees (an import is refused before any write, and one interrupted
//! half-way is finished by running it again).
//!
//! Only metadata moves: the disk images and memory files the snapshots
//! name are neither copied nor checked.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use snapshot_core::store::{
    Access, ExportOptions, ExportReport, ImportOptions, ImportReport, Layout, LayoutError,
    MetadataStore, Owner, StoreError, TransferError, defined_domain, export_dir, import_dir,
};

/// The import and export verbs.
#[derive(Debug, Subcommand)]
pub enum TransferCommand {
    /// Import snapshot metadata from a libvirt metadata directory.
    #[command(name = "snapshot-import")]
    SnapshotImport {
        /// Domain name.
        domain: String,
        /// The directory: one NAME.xml per snapshot, as libvirt keeps them
        /// in /var/lib/libvirt/qemu/snapshot/DOMAIN.
        dir: PathBuf,
        /// Overwrite snapshots that already exist with another definition.
        #[arg(long)]
        replace: bool,
    },
    /// Export snapshot metadata as a libvirt metadata directory.
    #[command(name = "snapshot-export")]
    SnapshotExport {
        /// Domain name.
        domain: String,
        /// The directory (created if missing): one NAME.xml per snapshot.
        dir: PathBuf,
        /// Overwrite files that exist with other content.
        #[arg(long)]
        force: bool,
    },
}

/// Why an import or export verb failed.
#[derive(Debug, thiserror::Error)]
enum CmdError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
}

/// Runs an import or export verb.
pub fn run(cmd: &TransferCommand) -> ExitCode {
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

fn layout() -> Result<Layout, CmdError> {
    let dir = snapshot_core::store::layout::state_dir()?;
    tracing::debug!(state_dir = %dir.display(), "state directory");
    Ok(Layout::new(dir))
}

/// Opens the snapshot metadata of `domain`, printing what loading found
/// odd as warnings.
fn open(layout: &Layout, domain: &str, access: Access) -> Result<MetadataStore, CmdError> {
    let store = MetadataStore::open(layout, Owner::Domain(domain.to_string()), access)?;
    tracing::debug!(
        owner = %store.owner(),
        ?access,
        snapshots = store.tree().len(),
        warnings = store.warnings().len(),
        "snapshot metadata opened"
    );
    for w in store.warnings() {
        eprintln!("virtsnap: warning: {w}");
    }
    Ok(store)
}

fn execute(cmd: &TransferCommand) -> Result<String, CmdError> {
    let layout = layout()?;
    match cmd {
        TransferCommand::SnapshotImport {
            domain,
            dir,
            replace,
        } => {
            let mut store = open(&layout, domain, Access::Write)?;
            let opts = ImportOptions {
                replace: *replace,
                domain: defined_domain(&layout, store.owner())?,
            };
            let report = import_dir(&mut store, dir, &opts)?;
            tracing::info!(
                domain = %domain,
                dir = %dir.display(),
                imported = report.imported.len(),
                unchanged = report.unchanged.len(),
                current = report.current.as_deref(),
                "snapshot metadata imported"
            );
            warn_import(&report, dir);
            Ok(import_text(&report, domain, dir))
        }
        TransferCommand::SnapshotExport { domain, dir, force } => {
            let store = open(&layout, domain, Access::Read)?;
            let report = export_dir(&store, dir, ExportOptions { force: *force })?;
            tracing::info!(
                domain = %domain,
                dir = %dir.display(),
                written = report.written.len(),
                unchanged = report.unchanged.len(),
                "snapshot metadata exported"
            );
            for file in &report.foreign {
                eprintln!(
                    "virtsnap: warning: '{}' also holds {file}, which is not a snapshot of \
                     domain '{domain}'; importing the directory would import it too",
                    dir.display()
                );
            }
            Ok(export_text(&report, domain, dir))
        }
    }
}

fn warn_import(report: &ImportReport, dir: &Path) {
    for entry in &report.skipped {
        eprintln!(
            "virtsnap: warning: skipped '{}': not a snapshot metadata file (NAME.xml)",
            dir.join(entry).display()
        );
    }
    for file in &report.without_active {
        eprintln!(
            "virtsnap: warning: '{}' has no <active> element (not a libvirt metadata \
             file); imported as not current",
            dir.join(file).display()
        );
    }
}

fn import_text(report: &ImportReport, domain: &str, dir: &Path) -> String {
    // Writing to a String cannot fail.
    let mut out = String::new();
    for name in &report.imported {
        let how = if report.replaced.contains(name) {
            "replaced"
        } else {
            "imported"
        };
        let _ = writeln!(out, "Domain snapshot {name} {how}");
    }
    for name in &report.unchanged {
        let _ = writeln!(out, "Domain snapshot {name} already present, unchanged");
    }
    if let Some(current) = &report.current {
        let _ = writeln!(out, "Domain snapshot {current} set as current");
    }
    let _ = writeln!(
        out,
        "Imported {} of {} snapshots from '{}' into domain '{domain}'",
        report.imported.len(),
        report.imported.len() + report.unchanged.len(),
        dir.display()
    );
    out
}

fn export_text(report: &ExportReport, domain: &str, dir: &Path) -> String {
    // Writing to a String cannot fail.
    let mut out = String::new();
    for name in &report.written {
        let _ = writeln!(out, "Domain snapshot {name} exported");
    }
    for name in &report.unchanged {
        let _ = writeln!(out, "Domain snapshot {name} already exported, unchanged");
    }
    let _ = writeln!(
        out,
        "Exported {} snapshots of domain '{domain}' to '{}'",
        report.written.len() + report.unchanged.len(),
        dir.display()
    );
    out
}
