//! The volume snapshot verbs (`vol-snapshot-*`), the CLI twins of the
//! proposal's `virStorageVolSnapshot*` calls, on
//! [`snapshot_core::volume::VolumeApi`] with the drivers this build has
//! (full copies and qcow2 through qemu-img). Copies and commits show a
//! progress bar when stderr is a terminal.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use snapshot_conf::{FormatFlags, FormatOptions, VolSnapshotDef};
use snapshot_core::driver::{Progress, RevertOutcome, SnapshotMode, Volume, VolumeDriver};
use snapshot_core::store::Access;
use snapshot_core::volume::{CreateOptions, DeletePolicy, RevertOptions, VolumeApi, VolumeError};
use snapshot_core::{ListFilter, Location, SnapshotTree};

use crate::snapshot_cmd::{by_name, format_time, table, tree_text};

/// The volume snapshot verbs.
#[derive(Debug, Subcommand)]
pub enum VolCommand {
    /// Take a snapshot of a volume (a disk image that belongs to no VM).
    #[command(name = "vol-snapshot-create")]
    Create(CreateArgs),
    /// List a volume's snapshots.
    #[command(name = "vol-snapshot-list")]
    List(ListArgs),
    /// Show one snapshot of a volume.
    #[command(name = "vol-snapshot-info")]
    Info(NameArgs),
    /// Print a volume snapshot's <volsnapshot> XML.
    #[command(name = "vol-snapshot-dumpxml")]
    Dumpxml(NameArgs),
    /// Print a volume's current snapshot.
    #[command(name = "vol-snapshot-current")]
    Current(CurrentArgs),
    /// Revert a volume to a snapshot (later snapshots are kept).
    #[command(name = "vol-snapshot-revert")]
    Revert(RevertArgs),
    /// Delete a volume snapshot (its children keep their contents).
    #[command(name = "vol-snapshot-delete")]
    Delete(DeleteArgs),
    /// Finish or roll back an operation on a volume that a crash interrupted.
    #[command(name = "vol-snapshot-recover")]
    Recover(VolArgs),
    /// List the snapshots inside a volume that virtsnap has no record of
    /// (made by qemu-img or libvirt), and with --import record them.
    #[command(name = "vol-snapshot-discover")]
    Discover(DiscoverArgs),
    /// Write the changes between two snapshots of a volume to a file
    /// (RBD's export-diff), to replay on another volume with
    /// vol-snapshot-import.
    #[command(name = "vol-snapshot-export")]
    Export(ExportArgs),
    /// Replay a file written by vol-snapshot-export on a volume, which
    /// then holds the exported snapshot.
    #[command(name = "vol-snapshot-import")]
    Import(ImportArgs),
}

/// `vol-snapshot-export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The volume (`rbd:POOL/IMAGE` for a Ceph RBD image).
    volume: PathBuf,
    /// The snapshot to export.
    snapshot: String,
    /// Export only what changed since this older snapshot (default:
    /// everything up to SNAPSHOT).
    #[arg(long)]
    from: Option<String>,
    /// The new file (an existing file is refused).
    file: PathBuf,
}

/// `vol-snapshot-import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The volume to replay the changes on; it must hold the export's
    /// start snapshot.
    volume: PathBuf,
    /// The file vol-snapshot-export wrote.
    file: PathBuf,
    /// The driver (default: the one of the volume's snapshots, else the
    /// first that takes the volume).
    #[arg(long)]
    driver: Option<String>,
}

/// `vol-snapshot-discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// The volume.
    volume: PathBuf,
    /// Record them (all, or the NAMEs given) as the volume's snapshots,
    /// oldest first as one line of history; the storage is not changed.
    #[arg(long)]
    import: bool,
    /// Only these snapshots (with --import).
    #[arg(requires = "import")]
    names: Vec<String>,
}

/// How a snapshot is kept, on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Inside the volume (qcow2 internal snapshot).
    Internal,
    /// A qcow2 overlay; the volume keeps its path.
    External,
    /// A full copy of the volume's bytes (any file).
    Copy,
}

impl From<ModeArg> for SnapshotMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Internal => Self::Internal,
            ModeArg::External => Self::External,
            ModeArg::Copy => Self::Copy,
        }
    }
}

/// A volume.
#[derive(Debug, Args)]
pub struct VolArgs {
    /// The volume: a path to a disk image or file, or `rbd:POOL/IMAGE`.
    volume: PathBuf,
}

/// `vol-snapshot-create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The volume: a path to a disk image or file, or a network volume
    /// handled by a plugin (`rbd:POOL/[NAMESPACE/]IMAGE[:conf=FILE][:id=USER]`).
    volume: PathBuf,
    /// The snapshot's name (default: the creation time in seconds).
    #[arg(long)]
    name: Option<String>,
    /// A description.
    #[arg(long)]
    description: Option<String>,
    /// How to keep it (default: internal for qcow2, copy otherwise).
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// The new file of an external or copy snapshot (default: beside the
    /// volume, VOLUME.NAME).
    #[arg(long)]
    file: Option<PathBuf>,
    /// The driver (file, qemu); default: chosen from the volume and mode.
    #[arg(long)]
    driver: Option<String>,
    /// A <volsnapshot> XML file describing the snapshot (flags win).
    #[arg(long)]
    xmlfile: Option<PathBuf>,
    /// Record a sha256 of the content, checked by vol-snapshot-revert --verify.
    #[arg(long)]
    checksum: bool,
    /// Keep the snapshot writable (btrfs subvolume snapshots are read-only
    /// otherwise).
    #[arg(long)]
    writable: bool,
    /// Check everything and print the <volsnapshot> that would be created;
    /// change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `vol-snapshot-list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The volume.
    volume: PathBuf,
    /// Show snapshots as a tree.
    #[arg(long, conflicts_with_all = ["name", "parent"])]
    tree: bool,
    /// Only internal snapshots.
    #[arg(long)]
    internal: bool,
    /// Only external snapshots (overlays and copies).
    #[arg(long)]
    external: bool,
    /// Add a column with each snapshot's parent.
    #[arg(long)]
    parent: bool,
    /// Names only.
    #[arg(long)]
    name: bool,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// A volume and one of its snapshots.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The volume.
    volume: PathBuf,
    /// The snapshot (default with --current: the current one).
    snapshot: Option<String>,
    /// The current snapshot.
    #[arg(long, conflicts_with = "snapshot")]
    current: bool,
}

/// `vol-snapshot-current`.
#[derive(Debug, Args)]
pub struct CurrentArgs {
    /// The volume.
    volume: PathBuf,
    /// Print only its name.
    #[arg(long)]
    name: bool,
}

/// `vol-snapshot-revert`.
#[derive(Debug, Args)]
pub struct RevertArgs {
    /// The volume.
    volume: PathBuf,
    /// The snapshot.
    snapshot: String,
    /// Delete the snapshots that descend from it (what came after it).
    #[arg(long)]
    drop_newer: bool,
    /// Check the snapshot's recorded checksum first (nothing changes on a
    /// mismatch).
    #[arg(long)]
    verify: bool,
}

/// `vol-snapshot-delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The volume.
    volume: PathBuf,
    /// The snapshot.
    snapshot: String,
    /// Delete its descendants too.
    #[arg(long, conflicts_with_all = ["children_only", "metadata"])]
    children: bool,
    /// Delete only its descendants.
    #[arg(long, conflicts_with = "metadata")]
    children_only: bool,
    /// Delete only the metadata, leaving the storage as it is.
    #[arg(long)]
    metadata: bool,
    /// Flatten the storage's clones of the snapshot (RBD images cloned
    /// from it) so they stop depending on it, instead of refusing.
    #[arg(long, conflicts_with = "metadata")]
    flatten_clones: bool,
}

/// The drivers of this build, in order of preference: qemu-img for qcow2,
/// LVM snapshots of logical volumes (classic ones sized by
/// `$VIRTSNAP_LVM_SNAPSHOT_SIZE`, default 20 % of the origin), btrfs
/// reflinks and subvolume snapshots on btrfs, the plugins found
/// (`plugin-list`), then full copies for anything.
pub fn drivers() -> Vec<Arc<dyn VolumeDriver>> {
    let mut drivers: Vec<Arc<dyn VolumeDriver>> = vec![
        Arc::new(driver_qemu::QemuDriver::new()),
        Arc::new(driver_lvm::LvmDriver::from_env()),
        Arc::new(driver_btrfs::BtrfsDriver::new()),
    ];
    drivers.extend(crate::plugin_cmd::plugin_drivers());
    drivers.push(Arc::new(driver_file::FileDriver::new()));
    drivers
}

/// The domain snapshot API of the CLI: the storage drivers, and QEMU as
/// the hypervisor of every domain.
#[must_use]
pub fn domain_api(layout: &snapshot_core::store::Layout) -> snapshot_core::domain_api::DomainApi {
    snapshot_core::domain_api::DomainApi::new(layout.clone(), drivers())
        .with_hypervisors(Arc::new(driver_qemu::domain::QemuHypervisors::new(layout)))
}

/// Runs a volume verb.
pub fn run(cmd: &VolCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("virtsnap: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cmd)) {
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

fn api() -> Result<VolumeApi, VolumeError> {
    let dir = snapshot_core::store::layout::state_dir().map_err(VolumeError::Layout)?;
    tracing::debug!(state_dir = %dir.display(), "state directory");
    Ok(VolumeApi::new(
        snapshot_core::store::Layout::new(dir),
        drivers(),
    ))
}

/// A progress bar on stderr when it is a terminal.
fn progress_bar(what: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    Some(bar)
}

/// Runs `f` with a progress callback feeding a bar (when shown).
async fn with_progress<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnOnce(Option<Arc<Progress>>) -> Fut,
    Fut: Future<Output = T>,
{
    let bar = progress_bar(what);
    let callback: Option<Arc<Progress>> = bar.clone().map(|b| {
        Arc::new(move |done: u64, total: u64| {
            b.set_length(total);
            b.set_position(done);
        }) as Arc<Progress>
    });
    let out = f(callback).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out
}

async fn execute(cmd: &VolCommand) -> Result<String, VolumeError> {
    let api = api()?;
    match cmd {
        VolCommand::Create(a) => create(&api, a).await,
        VolCommand::List(a) => list(&api, a),
        VolCommand::Info(a) => {
            let volume = api.volume(&a.volume, None)?;
            let name = resolve(&api, &volume, a)?;
            info(&api, &volume, &name)
        }
        VolCommand::Dumpxml(a) => {
            let volume = api.volume(&a.volume, None)?;
            let name = resolve(&api, &volume, a)?;
            api.snapshot_get_xml_desc(&volume, &name)
        }
        VolCommand::Current(a) => {
            let volume = api.volume(&a.volume, None)?;
            let def = api.snapshot_current(&volume)?;
            if a.name {
                Ok(format!("{}\n", def.name.unwrap_or_default()))
            } else {
                Ok(def.format(&FormatOptions::new(FormatFlags::SECURE)))
            }
        }
        VolCommand::Revert(a) => {
            let volume = api.volume(&a.volume, None)?;
            let options = RevertOptions {
                drop_newer: a.drop_newer,
                verify: a.verify,
            };
            let outcome = with_progress("reverting", |p| async move {
                api.revert_to_snapshot(&volume, &a.snapshot, options, p.as_deref())
                    .await
            })
            .await?;
            tracing::info!(snapshot = %a.snapshot, ?outcome, "volume reverted");
            Ok(match outcome {
                RevertOutcome::Done => format!("Volume reverted to snapshot {}\n", a.snapshot),
                RevertOutcome::Deferred { message } => format!(
                    "Volume revert to snapshot {} deferred: {message}\n",
                    a.snapshot
                ),
            })
        }
        VolCommand::Delete(a) => {
            let volume = api.volume(&a.volume, None)?;
            let policy = if a.metadata {
                DeletePolicy::MetadataOnly
            } else if a.children {
                DeletePolicy::Children
            } else if a.children_only {
                DeletePolicy::ChildrenOnly
            } else {
                DeletePolicy::Rebase
            };
            let removed = with_progress("deleting", |p| async move {
                api.snapshot_delete_flattening(
                    &volume,
                    &a.snapshot,
                    policy,
                    a.flatten_clones,
                    p.as_deref(),
                )
                .await
            })
            .await?;
            tracing::info!(?removed, "volume snapshots deleted");
            Ok(if policy == DeletePolicy::ChildrenOnly {
                format!("Volume snapshot {} children deleted\n", a.snapshot)
            } else {
                format!("Volume snapshot {} deleted\n", a.snapshot)
            })
        }
        VolCommand::Discover(a) => discover(&api, a).await,
        VolCommand::Export(a) => {
            let volume = api.volume(&a.volume, None)?;
            let file = std::path::absolute(&a.file).unwrap_or_else(|_| a.file.clone());
            let done = with_progress("exporting", |p| {
                let (volume, file) = (&volume, &file);
                async move {
                    api.snapshot_export(volume, &a.snapshot, a.from.as_deref(), file, p.as_deref())
                        .await
                }
            })
            .await?;
            Ok(format!(
                "Volume snapshot {} exported{} to {} ({} bytes, {} bytes of changed data)\n",
                a.snapshot,
                a.from
                    .as_ref()
                    .map(|f| format!(" since {f}"))
                    .unwrap_or_default(),
                file.display(),
                done.file_bytes,
                done.changed_bytes
            ))
        }
        VolCommand::Import(a) => {
            let volume = api.volume(&a.volume, None)?;
            let file = std::path::absolute(&a.file).unwrap_or_else(|_| a.file.clone());
            let def = with_progress("importing", |p| {
                let (volume, file) = (&volume, &file);
                async move {
                    api.snapshot_import(volume, file, a.driver.as_deref(), p.as_deref())
                        .await
                }
            })
            .await?;
            Ok(format!(
                "Volume snapshot {} imported from {}\n",
                def.name.unwrap_or_default(),
                file.display()
            ))
        }
        VolCommand::Recover(a) => {
            let volume = api.volume(&a.volume, None)?;
            let (intent, how) = api.recover(&volume).await?;
            Ok(format!(
                "Interrupted {} on {}: {how} done\n",
                intent.operation,
                volume.path.display()
            ))
        }
    }
}

async fn create(api: &VolumeApi, a: &CreateArgs) -> Result<String, VolumeError> {
    let volume = api.volume(&a.volume, None)?;
    let xml = match &a.xmlfile {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| VolumeError::Invalid(format!("cannot read {}: {e}", f.display())))?,
        ),
        None => None,
    };
    let options = CreateOptions {
        name: a.name.clone(),
        description: a.description.clone(),
        mode: a.mode.map(Into::into),
        file: a.file.clone(),
        driver: a.driver.clone(),
        checksum: a.checksum,
        writable: a.writable,
        dry_run: a.dry_run,
    };
    let def = with_progress("copying", |p| {
        let volume = &volume;
        let xml = xml.as_deref();
        let options = &options;
        async move {
            api.snapshot_create_xml(volume, xml, options, p.as_deref())
                .await
        }
    })
    .await?;
    if a.dry_run {
        return Ok(def.format(&FormatOptions::new(FormatFlags::SECURE)));
    }
    let name = def.name.unwrap_or_default();
    tracing::info!(snapshot = %name, volume = %volume.path.display(), "volume snapshot created");
    Ok(format!("Volume snapshot {name} created\n"))
}

async fn discover(api: &VolumeApi, a: &DiscoverArgs) -> Result<String, VolumeError> {
    let volume = api.volume(&a.volume, None)?;
    if a.import {
        let only = (!a.names.is_empty()).then_some(a.names.as_slice());
        let names = api.snapshot_import_discovered(&volume, only).await?;
        tracing::info!(?names, "snapshots imported");
        return Ok(if names.is_empty() {
            format!("{} holds no unrecorded snapshots\n", volume.path.display())
        } else {
            names
                .iter()
                .map(|n| format!("Volume snapshot {n} imported\n"))
                .collect()
        });
    }
    let found = api.snapshot_discover(&volume).await?;
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|(driver, x)| {
            vec![
                x.name.clone(),
                format_time(x.created.unwrap_or(0)),
                x.mode.to_string(),
                x.id.clone().unwrap_or_default(),
                driver.clone(),
            ]
        })
        .collect();
    Ok(table(
        &["Name", "Creation Time", "Mode", "Id", "Driver"],
        &rows,
    ))
}

fn resolve(api: &VolumeApi, volume: &Volume, a: &NameArgs) -> Result<String, VolumeError> {
    match &a.snapshot {
        Some(n) => Ok(n.clone()),
        // No name: the current snapshot (what --current asks for).
        None => Ok(api.snapshot_current(volume)?.name.unwrap_or_default()),
    }
}

fn mode_word(def: &VolSnapshotDef) -> &'static str {
    def.target
        .mode
        .map_or("internal", snapshot_conf::VolSnapshotMode::as_str)
}

fn list(api: &VolumeApi, a: &ListArgs) -> Result<String, VolumeError> {
    let volume = api.volume(&a.volume, None)?;
    let store = api.store(&volume, Access::Read)?;
    let tree: &SnapshotTree = store.tree();
    let filter = ListFilter {
        internal: a.internal,
        external: a.external,
        ..ListFilter::default()
    };
    let names = by_name(
        tree.list(&filter)
            .map_err(snapshot_core::store::StoreError::from)?,
    );
    let def_of = |n: &str| match store.get(n) {
        Some(snapshot_core::store::SnapshotRecord::Volume(v)) => Some((**v).clone()),
        _ => None,
    };
    if a.json {
        let rows: Vec<serde_json::Value> = names
            .iter()
            .map(|n| {
                let def = def_of(n);
                let info = tree.get(n);
                serde_json::json!({
                    "name": n,
                    "creation_time": info.map(|i| i.creation_time),
                    "mode": def.as_ref().map(mode_word),
                    "file": def.as_ref().and_then(|d| d.target.source.path.clone()),
                    "parent": tree.parent(n).ok().flatten(),
                    "current": tree.is_current(n),
                    "checksum": def.as_ref().and_then(|d| d.target.checksum.as_ref().map(|c| format!("{}:{}", c.algorithm, c.value))),
                })
            })
            .collect();
        return Ok(format!("{}\n", serde_json::Value::Array(rows)));
    }
    if a.tree {
        return Ok(tree_text(tree, None, &names));
    }
    if a.name {
        return Ok(names.iter().map(|n| format!("{n}\n")).collect());
    }
    let mut header = vec!["Name", "Creation Time", "Mode"];
    if a.parent {
        header.push("Parent");
    }
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| {
            let time = tree.get(n).map_or(0, |i| i.creation_time);
            let mode = def_of(n).as_ref().map_or_else(
                || match tree.get(n).map(|i| i.location) {
                    Some(Location::External) => "external",
                    _ => "internal",
                },
                mode_word,
            );
            let mut row = vec![(*n).to_string(), format_time(time), mode.to_string()];
            if a.parent {
                row.push(
                    tree.parent(n)
                        .ok()
                        .flatten()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            row
        })
        .collect();
    Ok(table(&header, &rows))
}

fn info(api: &VolumeApi, volume: &Volume, name: &str) -> Result<String, VolumeError> {
    let def = api.snapshot_lookup_by_name(volume, name)?;
    let store = api.store(volume, Access::Read)?;
    let tree = store.tree();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let count = |descendants| tree.child_count(name, descendants).unwrap_or(0).to_string();
    let rows = [
        ("Name", name.to_string()),
        ("Volume", volume.path.display().to_string()),
        ("Current", yes_no(tree.is_current(name)).to_string()),
        ("Mode", mode_word(&def).to_string()),
        (
            "Driver",
            def.volume
                .as_ref()
                .and_then(|v| v.driver.clone())
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "File",
            def.target.source.path.clone().unwrap_or_else(|| "-".into()),
        ),
        ("Parent", def.parent.clone().unwrap_or_else(|| "-".into())),
        ("Children", count(false)),
        ("Descendants", count(true)),
        (
            "Checksum",
            def.target
                .checksum
                .as_ref()
                .map_or_else(|| "-".into(), |c| format!("{}:{}", c.algorithm, c.value)),
        ),
    ];
    Ok(rows
        .iter()
        .map(|(k, v)| format!("{:<15} {v}\n", format!("{k}:")))
        .collect())
}
