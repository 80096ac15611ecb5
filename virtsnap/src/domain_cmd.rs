//! virsh's domain verbs on the state directory: definitions (`define`,
//! `undefine [--snapshots-metadata]`, `list [--all]`, `dumpxml`) and the
//! lifecycle under QEMU (`start [--paused]`, `destroy`, `shutdown`,
//! `suspend`, `resume`, `domstate`, `dominfo`, and `attach` to adopt a
//! QEMU started by something else).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use driver_qemu::domain::QemuDomain;
use snapshot_core::plan::{CreateFlags, DomainState, RevertFlags};
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
    /// Start a defined domain under QEMU.
    Start(StartArgs),
    /// Stop a running domain at once (QEMU quits; the guest is not asked).
    Destroy(DomainArg),
    /// Ask the guest to power off (ACPI power button).
    Shutdown(DomainArg),
    /// Pause a running domain's CPUs.
    Suspend(DomainArg),
    /// Resume a paused domain.
    Resume(DomainArg),
    /// Print a domain's state.
    Domstate(DomainArg),
    /// Print a domain's state, process, accelerator and QEMU version.
    Dominfo(DomainArg),
    /// Adopt a QEMU started by something else, through its QMP socket (a
    /// definition is made from its disks when NAME is not defined).
    Attach(AttachArgs),
    /// Save a running domain's memory to a file and stop it
    /// (virDomainSaveFlags: --disks snapshots its disks with it,
    /// --resume keeps it running, --quiesce freezes its filesystems).
    Save(SaveArgs),
    /// Start a domain from a file `save` wrote (its disks go back to the
    /// snapshot taken with it, when saved with --disks).
    Restore(RestoreArgs),
}

/// `save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Domain name.
    domain: String,
    /// The file to write (never overwritten).
    file: PathBuf,
    /// Also snapshot its disks (a snapshot named save-TIME holds them),
    /// so the save stays usable whatever the guest writes afterwards.
    #[arg(long)]
    disks: bool,
    /// Keep the domain running afterwards.
    #[arg(long)]
    resume: bool,
    /// Freeze the guest's filesystems (guest agent) while saving.
    #[arg(long)]
    quiesce: bool,
}

/// `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The file `save` wrote.
    file: PathBuf,
    /// Leave the domain paused.
    #[arg(long)]
    paused: bool,
}

/// A verb taking one domain.
#[derive(Debug, Args)]
pub struct DomainArg {
    /// Domain name.
    domain: String,
}

/// `start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Domain name.
    domain: String,
    /// Leave its CPUs paused.
    #[arg(long)]
    paused: bool,
}

/// `attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The name the domain gets (or has).
    domain: String,
    /// QEMU's QMP socket.
    #[arg(long, value_name = "SOCKET")]
    qmp: PathBuf,
    /// The host end of its guest-agent channel.
    #[arg(long, value_name = "SOCKET")]
    agent: Option<PathBuf>,
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
    /// Include inactive domains.
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
    #[error(transparent)]
    Runtime(#[from] driver_qemu::domain::RuntimeError),
    #[error(transparent)]
    Save(#[from] driver_qemu::save::SaveError),
    #[error(transparent)]
    Snapshot(#[from] snapshot_core::domain_api::DomainApiError),
    #[error("cannot start the async runtime: {0}")]
    Tokio(std::io::Error),
    #[error("domain '{0}' is running; destroy it first")]
    Running(String),
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CmdError::Tokio)?;
    runtime.block_on(execute_in(cmd, &layout))
}

async fn save(layout: &Layout, a: &SaveArgs) -> Result<String, CmdError> {
    if !a.disks {
        if a.resume {
            eprintln!(
                "virtsnap: warning: --resume without --disks: the save is useless once the guest writes its disks"
            );
        }
        driver_qemu::save::save(layout, &a.domain, &a.file, a.resume, a.quiesce).await?;
        return Ok(format!(
            "Domain '{}' saved to {}\n",
            a.domain,
            a.file.display()
        ));
    }
    let file = std::path::absolute(&a.file).map_err(|source| CmdError::Read {
        path: a.file.clone(),
        source,
    })?;
    let name = format!(
        "save-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    let state = QemuDomain::new(layout, &a.domain).domain_state().await?;
    let xml = format!(
        "<domainsnapshot><name>{name}</name><memory snapshot='external' file='{}'/></domainsnapshot>",
        xml_escape(&file.to_string_lossy())
    );
    let mut flags = CreateFlags::empty();
    flags.set(CreateFlags::QUIESCE, a.quiesce);
    flags.set(CreateFlags::HALT, !a.resume);
    crate::vol_cmd::domain_api(layout)
        .snapshot_create_xml(&a.domain, Some(&xml), flags, false, None)
        .await?;
    let domain = domains::get(layout, &a.domain)?;
    driver_qemu::save::append_trailer(
        &file,
        &driver_qemu::save::SaveInfo {
            domain: a.domain.clone(),
            xml: domain.xml.to_xml(true),
            snapshot: Some(name.clone()),
            running: state == DomainState::Running,
        },
    )?;
    Ok(format!(
        "Domain '{}' saved to {} with its disks (snapshot {name})\n",
        a.domain,
        a.file.display()
    ))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
}

async fn states(layout: &Layout, names: &[String]) -> Vec<DomainState> {
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let state = QemuDomain::new(layout, n)
            .domain_state()
            .await
            .unwrap_or(DomainState::Shutoff);
        out.push(state);
    }
    out
}

#[allow(clippy::too_many_lines)]
async fn execute_in(cmd: &DomainCommand, layout: &Layout) -> Result<String, CmdError> {
    let layout = layout.clone();
    let qemu = |name: &str| QemuDomain::new(&layout, name);
    match cmd {
        DomainCommand::Start(a) => {
            domains::get(&layout, &a.domain)?;
            let accel = qemu(&a.domain).start_domain(a.paused).await?;
            tracing::info!(domain = %a.domain, accel = accel.as_str(), "domain started");
            Ok(format!(
                "Domain '{}' started{} ({})\n",
                a.domain,
                if a.paused { ", paused" } else { "" },
                accel.as_str()
            ))
        }
        DomainCommand::Destroy(a) => {
            let d = qemu(&a.domain);
            if !d.domain_state().await?.is_active() {
                return Err(driver_qemu::domain::RuntimeError::NotRunning(a.domain.clone()).into());
            }
            d.destroy().await?;
            Ok(format!("Domain '{}' destroyed\n", a.domain))
        }
        DomainCommand::Shutdown(a) => {
            qemu(&a.domain).shutdown().await?;
            Ok(format!("Domain '{}' is being shutdown\n", a.domain))
        }
        DomainCommand::Suspend(a) => {
            qemu(&a.domain).suspend().await?;
            Ok(format!("Domain '{}' suspended\n", a.domain))
        }
        DomainCommand::Resume(a) => {
            qemu(&a.domain).resume_cpus().await?;
            Ok(format!("Domain '{}' resumed\n", a.domain))
        }
        DomainCommand::Domstate(a) => {
            domains::get(&layout, &a.domain)?;
            Ok(format!(
                "{}\n",
                qemu(&a.domain).domain_state().await?.as_str()
            ))
        }
        DomainCommand::Dominfo(a) => {
            let d = domains::get(&layout, &a.domain)?;
            let info = qemu(&a.domain).info().await?;
            let mut out = format!("Name:           {}\n", a.domain);
            if let Some(u) = d.def.uuid {
                out.push_str(&format!("UUID:           {u}\n"));
            }
            out.push_str(&format!("State:          {}\n", info.state.as_str()));
            if let Some(pid) = info.pid {
                out.push_str(&format!("Pid:            {pid}\n"));
            }
            if let Some(accel) = &info.accel {
                out.push_str(&format!("Accelerator:    {accel}\n"));
            }
            if let Some(v) = &info.version {
                out.push_str(&format!("QEMU version:   {v}\n"));
            }
            if info.state.is_active() {
                out.push_str(&format!("Monitor:        {}\n", info.qmp.display()));
                out.push_str(&format!(
                    "Adopted:        {}\n",
                    if info.attached { "yes (attach)" } else { "no" }
                ));
            }
            Ok(out)
        }
        DomainCommand::Save(a) => save(&layout, a).await,
        DomainCommand::Restore(a) => {
            let info = driver_qemu::save::read_trailer(&a.file)?;
            if let Some(snapshot) = &info.snapshot {
                let flags = if a.paused {
                    RevertFlags::PAUSED
                } else {
                    RevertFlags::empty()
                };
                crate::vol_cmd::domain_api(&layout)
                    .revert_to_snapshot(&info.domain, snapshot, flags, false, None)
                    .await?;
            } else {
                driver_qemu::save::restore(&layout, &a.file, a.paused).await?;
            }
            Ok(format!(
                "Domain '{}' restored from {}\n",
                info.domain,
                a.file.display()
            ))
        }
        DomainCommand::Attach(a) => {
            let d = qemu(&a.domain).attach(&a.qmp, a.agent.as_deref()).await?;
            Ok(format!(
                "Domain '{}' attached through {} ({} disk(s))\n",
                a.domain,
                a.qmp.display(),
                d.def.disks.len()
            ))
        }
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
            if qemu(&a.domain).domain_state().await?.is_active() {
                return Err(CmdError::Running(a.domain.clone()));
            }
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
            let all = domains::list(&layout)?;
            let states = states(&layout, &all).await;
            // Without --all, only active domains, as virsh lists them.
            let shown: Vec<(String, DomainState)> = all
                .into_iter()
                .zip(states)
                .filter(|(_, s)| a.all || s.is_active())
                .collect();
            tracing::debug!(domains = shown.len(), "domains listed");
            if a.name {
                return Ok(shown.iter().map(|(n, _)| format!("{n}\n")).collect());
            }
            let width = shown.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(4);
            let mut out = format!(" Id   {:<width$}   State\n", "Name");
            out.push_str(&"-".repeat(width + 16));
            out.push('\n');
            for (n, s) in shown {
                let id = if s.is_active() { "+" } else { "-" };
                out.push_str(&format!(" {id}    {n:<width$}   {}\n", s.as_str()));
            }
            Ok(out)
        }
        DomainCommand::Dumpxml(a) => Ok(domains::dumpxml(&layout, &a.domain)?),
    }
}
