//! A domain as QEMU runs it: its run directory (pid, monitor and agent
//! sockets), its state from QMP, its lifecycle (start, destroy, suspend,
//! resume, attach to a QEMU started elsewhere), and the hypervisor steps
//! of snapshot plans ([`Hypervisor`]) over QMP and the guest agent.
//!
//! Disks are found by their device id, which is the disk's target
//! (`-device ...,id=vda` as the launcher names them, or the `-drive` id
//! of an adopted QEMU), so the same code serves both; the node a device
//! uses is asked from QEMU each time, since external snapshots move it.

use std::collections::HashMap;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use snapshot_conf::{Domain, MachineDef};
use snapshot_core::hypervisor::{Hypervisor, HypervisorError, HypervisorProvider, LiveFacts};
use snapshot_core::plan::{
    AgentState, DiskAction, DiskStep, DomainState, HypervisorCaps, LiveDiskCaps, MemoryImage,
    MemorySave,
};
use snapshot_core::store::Layout;
use snapshot_core::store::domains;
use tokio::sync::Mutex;

use crate::launch::{self, Accel, RunPaths, StartMode};
use crate::qga::{Agent, AgentError};
use crate::qmp::{QemuVersion, Qmp, QmpError};

/// How long connecting to the monitor may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a graceful stop may take before QEMU is killed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The bandwidth of a memory save to a file, bytes/s: unlimited in
/// effect (the disk is the limit).
const FILE_BANDWIDTH: u64 = 1 << 50;

/// The longest pause a live memory save aims for at switchover, ms.
const SWITCHOVER_PAUSE_MS: u64 = 20;

/// After this long without converging, a live save accepts a longer
/// pause (a guest that dirties memory faster than the disk writes it).
const CONVERGE_AFTER: Duration = Duration::from_secs(10);

/// How long a memory save or a snapshot job may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(3600);

/// Why a domain operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The monitor.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// The guest agent.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// Starting QEMU.
    #[error(transparent)]
    Launch(#[from] launch::LaunchError),
    /// The domain is not running.
    #[error("domain '{0}' is not running; start it first (start)")]
    NotRunning(String),
    /// The domain runs already.
    #[error("domain '{0}' is already running; destroy it first, or use it as it is")]
    AlreadyRunning(String),
    /// No guest-agent channel.
    #[error(
        "domain '{0}' has no guest-agent channel; add <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel> to its definition and restart it"
    )]
    NoAgentChannel(String),
    /// A disk QEMU does not show.
    #[error(
        "disk {disk} of domain '{domain}' is not attached to the running QEMU (no device with id '{disk}'); was the domain started with another definition?"
    )]
    NoDevice {
        /// The domain.
        domain: String,
        /// The disk.
        disk: String,
    },
    /// A job or migration ended in failure.
    #[error("{what} failed: {why}")]
    Failed {
        /// What.
        what: String,
        /// QEMU's reason.
        why: String,
    },
    /// The domain definition.
    #[error(transparent)]
    Definition(#[from] domains::DomainError),
    /// Files.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// qemu-img, for steps done on images of a stopped domain.
    #[error(transparent)]
    Image(#[from] snapshot_core::driver::DriverError),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.to_path_buf();
    move |source| RuntimeError::Io { what, path, source }
}

/// A disk as the running QEMU has it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveDisk {
    /// The device id (the disk's target).
    pub target: String,
    /// The node the device reads (the top of its chain).
    pub node: String,
    /// That node's image file.
    pub file: String,
    /// Its format driver (`qcow2`, `raw`).
    pub format: String,
    /// Read-only.
    pub read_only: bool,
    /// Its virtual size.
    pub size: u64,
    /// Its cluster size (qcow2).
    pub cluster_size: Option<u64>,
    /// Internal snapshots in the top image, with their memory size.
    pub snapshots: Vec<(String, u64)>,
}

/// What `dominfo` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// The state.
    pub state: DomainState,
    /// QEMU's pid (not known for an adopted QEMU).
    pub pid: Option<i32>,
    /// The accelerator.
    pub accel: Option<String>,
    /// QEMU's version.
    pub version: Option<String>,
    /// The monitor socket.
    pub qmp: PathBuf,
    /// Adopted with `attach`.
    pub attached: bool,
}

/// One domain under QEMU.
#[derive(Debug)]
pub struct QemuDomain {
    layout: Layout,
    name: String,
    paths: RunPaths,
    monitor: Mutex<Option<Arc<Qmp>>>,
    /// A live memory save left waiting at switchover for the disk steps.
    switchover: Mutex<Option<PathBuf>>,
    /// Overlays made ready for a transaction: file → node.
    prepared: Mutex<HashMap<String, String>>,
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for us; /proc/PID/stat's third field says.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

fn attached_sockets(paths: &RunPaths) -> Option<(PathBuf, Option<PathBuf>)> {
    let text = std::fs::read_to_string(paths.attached()).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let qmp = PathBuf::from(v.get("qmp")?.as_str()?);
    let agent = v.get("agent").and_then(Value::as_str).map(PathBuf::from);
    Some((qmp, agent))
}

fn status_state(status: &str) -> DomainState {
    match status {
        "running" => DomainState::Running,
        "shutdown" => DomainState::Shutdown,
        "internal-error" | "guest-panicked" => DomainState::Crashed,
        "suspended" => DomainState::PmSuspended,
        _ => DomainState::Paused,
    }
}

fn job_id(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("vs-{prefix}-{n:x}")
}

impl QemuDomain {
    /// Domain `name` of the state directory `layout`.
    #[must_use]
    pub fn new(layout: &Layout, name: &str) -> Self {
        Self {
            layout: layout.clone(),
            name: name.to_string(),
            paths: RunPaths::new(&layout.run_dir(), name),
            monitor: Mutex::new(None),
            switchover: Mutex::new(None),
            prepared: Mutex::new(HashMap::new()),
        }
    }

    /// Its run directory.
    #[must_use]
    pub fn paths(&self) -> &RunPaths {
        &self.paths
    }

    /// The pid of the QEMU the launcher started, when it runs.
    #[must_use]
    pub fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.paths.pid()).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    fn qmp_path(&self) -> PathBuf {
        attached_sockets(&self.paths).map_or_else(|| self.paths.qmp(), |(q, _)| q)
    }

    fn agent_path(&self, domain: Option<&Domain>) -> Option<PathBuf> {
        if let Some((_, agent)) = attached_sockets(&self.paths) {
            return agent;
        }
        let domain = match domain {
            Some(d) => d.clone(),
            None => domains::get(&self.layout, &self.name).ok()?,
        };
        let machine = MachineDef::of(&domain).ok()?;
        machine
            .agent
            .map(|p| p.map_or_else(|| self.paths.agent(), PathBuf::from))
    }

    /// Whether a QEMU runs the domain (or one was adopted).
    fn has_process(&self) -> bool {
        self.pid().is_some() || attached_sockets(&self.paths).is_some()
    }

    /// The monitor, connected once and kept.
    ///
    /// # Errors
    /// The domain does not run, or the monitor does not answer.
    pub async fn monitor(&self) -> Result<Arc<Qmp>, RuntimeError> {
        let mut slot = self.monitor.lock().await;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        if !self.has_process() {
            return Err(RuntimeError::NotRunning(self.name.clone()));
        }
        let qmp = Arc::new(Qmp::connect(&self.qmp_path(), CONNECT_TIMEOUT).await?);
        *slot = Some(qmp.clone());
        Ok(qmp)
    }

    async fn forget_monitor(&self) {
        *self.monitor.lock().await = None;
    }

    /// The domain's state: shut off without a process, else as QEMU says.
    ///
    /// # Errors
    /// A process whose monitor does not answer.
    pub async fn domain_state(&self) -> Result<DomainState, RuntimeError> {
        if !self.has_process() {
            return Ok(DomainState::Shutoff);
        }
        let qmp = match self.monitor().await {
            Ok(q) => q,
            Err(RuntimeError::Qmp(QmpError::Connect { .. })) if self.pid().is_none() => {
                // An adopted QEMU that went away.
                return Ok(DomainState::Shutoff);
            }
            Err(e) => return Err(e),
        };
        let status = qmp.execute("query-status", None).await?;
        Ok(status_state(
            status.get("status").and_then(Value::as_str).unwrap_or(""),
        ))
    }

    /// Starts the domain from its stored definition.
    ///
    /// # Errors
    /// It runs already, or QEMU refused.
    pub async fn start_domain(&self, paused: bool) -> Result<Accel, RuntimeError> {
        let domain = domains::get(&self.layout, &self.name)?;
        self.launch(
            &domain,
            StartMode {
                paused,
                incoming: false,
            },
        )
        .await
    }

    async fn launch(&self, domain: &Domain, mode: StartMode) -> Result<Accel, RuntimeError> {
        if self.has_process() {
            if self.domain_state().await?.is_active() {
                return Err(RuntimeError::AlreadyRunning(self.name.clone()));
            }
            // A crashed QEMU, or an adopted one that went away: cleared
            // before a new one starts.
            tracing::warn!(pid = ?self.pid(), "clearing a QEMU that no longer runs the guest");
            self.destroy().await?;
        }
        self.forget_monitor().await;
        Ok(launch::start(domain, &self.paths, mode).await?)
    }

    /// Starts `domain` (this definition, not necessarily the stored one)
    /// in `mode`, loads `memory`, and leaves the CPUs paused or running.
    /// A QEMU that fails to load the memory is stopped again.
    ///
    /// # Errors
    /// It runs already, QEMU refused, or the memory did not load.
    pub async fn start_with(
        &self,
        domain: &Domain,
        mode: StartMode,
        memory: Option<&MemoryImage>,
        paused: bool,
    ) -> Result<(), RuntimeError> {
        self.launch(domain, mode).await?;
        let loaded = async {
            if let Some(m) = memory {
                self.load_memory(domain, m, None).await?;
                if !paused {
                    self.resume_cpus().await?;
                }
            }
            Ok::<(), RuntimeError>(())
        }
        .await;
        if let Err(e) = loaded {
            let _ = self.destroy().await;
            return Err(e);
        }
        Ok(())
    }

    /// Stops QEMU at once (`virsh destroy`): `quit`, then SIGKILL if it
    /// lingers. Nothing to do when it does not run.
    ///
    /// # Errors
    /// A process that would not die.
    pub async fn destroy(&self) -> Result<(), RuntimeError> {
        let pid = self.pid();
        if let Ok(qmp) = self.monitor().await {
            // The reply may never come: QEMU exits.
            let _ = qmp
                .execute_with_timeout("quit", None, Duration::from_secs(2))
                .await;
        }
        self.forget_monitor().await;
        if let Some(pid) = pid {
            let deadline = tokio::time::Instant::now() + QUIT_TIMEOUT;
            while alive(pid) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if alive(pid) {
                use nix::sys::signal::{Signal, kill};
                let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                while alive(pid) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        for f in [self.paths.pid(), self.paths.attached(), self.paths.ram()] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("cannot remove", &f)(e)),
            }
        }
        Ok(())
    }

    /// Pauses the guest's CPUs (`virsh suspend`).
    ///
    /// # Errors
    /// Not running.
    pub async fn suspend(&self) -> Result<(), RuntimeError> {
        self.monitor().await?.execute("stop", None).await?;
        Ok(())
    }

    /// Resumes them (`virsh resume`).
    ///
    /// # Errors
    /// Not running, or QEMU refused (an unfinished incoming migration).
    pub async fn resume_cpus(&self) -> Result<(), RuntimeError> {
        self.monitor().await?.execute("cont", None).await?;
        Ok(())
    }

    /// Asks the guest to power off (ACPI, `virsh shutdown`).
    ///
    /// # Errors
    /// Not running.
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        self.monitor()
            .await?
            .execute("system_powerdown", None)
            .await?;
        Ok(())
    }

    /// What `dominfo` shows.
    ///
    /// # Errors
    /// A process whose monitor does not answer.
    pub async fn info(&self) -> Result<DomainInfo, RuntimeError> {
        let state = self.domain_state().await?;
        let mut info = DomainInfo {
            state,
            pid: self.pid(),
            accel: None,
            version: None,
            qmp: self.qmp_path(),
            attached: attached_sockets(&self.paths).is_some(),
        };
        if state.is_active() {
            let qmp = self.monitor().await?;
            info.version = Some(qmp.version().to_string());
            let kvm = qmp.execute("query-kvm", None).await?;
            let on = kvm.get("enabled").and_then(Value::as_bool).unwrap_or(false);
            info.accel = Some(if on { "kvm" } else { "tcg" }.to_string());
        }
        Ok(info)
    }

    /// Adopts a QEMU started by something else: its monitor (and agent)
    /// sockets are recorded in the run directory. When `name` is not
    /// defined yet, a definition is made from QEMU's disks.
    ///
    /// # Errors
    /// The monitor does not answer, or a domain of that name runs.
    pub async fn attach(&self, qmp: &Path, agent: Option<&Path>) -> Result<Domain, RuntimeError> {
        if self.has_process() {
            return Err(RuntimeError::AlreadyRunning(self.name.clone()));
        }
        let monitor = Qmp::connect(qmp, CONNECT_TIMEOUT).await?;
        let blocks = monitor.execute("query-block", None).await?;
        let memory = monitor
            .execute("query-memory-size-summary", None)
            .await
            .ok()
            .and_then(|m| m.get("base-memory").and_then(Value::as_u64))
            .unwrap_or(0);
        drop(monitor);
        let domain = match domains::get(&self.layout, &self.name) {
            Ok(d) => d,
            Err(domains::DomainError::NotDefined { .. }) => {
                let xml = adopted_definition(&self.name, &blocks, memory, agent.is_some());
                domains::define(&self.layout, &xml)?
            }
            Err(e) => return Err(e.into()),
        };
        std::fs::create_dir_all(&self.paths.dir)
            .map_err(io_err("cannot create", &self.paths.dir))?;
        let record = json!({
            "qmp": std::path::absolute(qmp).unwrap_or_else(|_| qmp.to_path_buf()),
            "agent": agent.map(|a| std::path::absolute(a).unwrap_or_else(|_| a.to_path_buf())),
        });
        std::fs::write(self.paths.attached(), record.to_string())
            .map_err(io_err("cannot write", &self.paths.attached()))?;
        Ok(domain)
    }

    /// The disks of the running QEMU, by device id.
    ///
    /// # Errors
    /// Not running.
    pub async fn live_disks(&self) -> Result<HashMap<String, LiveDisk>, RuntimeError> {
        let qmp = self.monitor().await?;
        let blocks = qmp.execute("query-block", None).await?;
        Ok(parse_blocks(&blocks))
    }

    async fn live_disk(&self, target: &str) -> Result<LiveDisk, RuntimeError> {
        self.live_disks()
            .await?
            .remove(target)
            .ok_or_else(|| RuntimeError::NoDevice {
                domain: self.name.clone(),
                disk: target.to_string(),
            })
    }

    async fn agent(&self) -> Result<Agent, RuntimeError> {
        let path = self
            .agent_path(None)
            .ok_or_else(|| RuntimeError::NoAgentChannel(self.name.clone()))?;
        Ok(Agent::connect(&path).await?)
    }

    /// Runs a job (`snapshot-save`, `block-stream`, ...) started by
    /// `command` with `args` (whose `job-id` is `id`) to its end.
    async fn run_job(
        &self,
        qmp: &Qmp,
        command: &str,
        args: Value,
        id: &str,
    ) -> Result<(), RuntimeError> {
        self.run_jobs(qmp, command, vec![(id.to_string(), args)])
            .await
    }

    /// Waits for the running migration to complete (or fail) by polling
    /// `query-migrate`; on `pre-switchover` returns that status.
    async fn wait_migration(&self, qmp: &Qmp, what: &str) -> Result<String, RuntimeError> {
        let started = tokio::time::Instant::now();
        let deadline = started + JOB_TIMEOUT;
        let mut relaxed = false;
        loop {
            if !relaxed && started.elapsed() > CONVERGE_AFTER {
                // Never converging is worse than a longer pause.
                relaxed = true;
                let _ = qmp
                    .execute(
                        "migrate-set-parameters",
                        Some(json!({ "downtime-limit": 1000 })),
                    )
                    .await;
            }
            let m = qmp.execute("query-migrate", None).await?;
            let status = m
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match status.as_str() {
                "completed" | "pre-switchover" => return Ok(status),
                "failed" | "cancelled" => {
                    return Err(RuntimeError::Failed {
                        what: what.to_string(),
                        why: m
                            .get("error-desc")
                            .and_then(Value::as_str)
                            .unwrap_or(&status)
                            .to_string(),
                    });
                }
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(RuntimeError::Failed {
                    what: what.to_string(),
                    why: format!("still {status} after {JOB_TIMEOUT:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn set_migration_caps(
        &self,
        qmp: &Qmp,
        caps: &[(&str, bool)],
    ) -> Result<(), RuntimeError> {
        let list: Vec<Value> = caps
            .iter()
            .map(|(c, on)| json!({"capability": c, "state": on}))
            .collect();
        qmp.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": list })),
        )
        .await?;
        Ok(())
    }

    /// Saves memory to `file` (created here, never overwritten). The
    /// guest is left paused where the memory was taken.
    async fn save_memory_to(&self, file: &Path, how: MemorySave) -> Result<(), RuntimeError> {
        let qmp = self.monitor().await?;
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(file)
            .map_err(io_err("cannot create the memory file", file))?;
        let background = how == MemorySave::Background;
        let result = async {
            // Live: at switchover the migration waits for us, the disk
            // steps run there, then `resume` lets it finish. Background:
            // QEMU captures the paused guest, resumes it at once and
            // writes RAM as the guest runs (the disks were taken before).
            let live = how == MemorySave::Live;
            self.set_migration_caps(
                &qmp,
                &[
                    ("pause-before-switchover", live),
                    ("background-snapshot", background),
                ],
            )
            .await?;
            // A file takes what the disk can write: no bandwidth cap
            // (QEMU's default, 128 MiB/s, made a 1 GiB save take 8 s and
            // let a live one fall behind the guest). A live save stops
            // the guest once at most SWITCHOVER_PAUSE of memory is left.
            qmp.execute(
                "migrate-set-parameters",
                Some(json!({
                    "max-bandwidth": FILE_BANDWIDTH,
                    "downtime-limit": SWITCHOVER_PAUSE_MS,
                })),
            )
            .await?;
            let fdname = job_id("mem");
            qmp.execute_with_fd("getfd", Some(json!({ "fdname": fdname })), out.as_fd())
                .await?;
            qmp.execute("migrate", Some(json!({ "uri": format!("fd:{fdname}") })))
                .await?;
            let status = self.wait_migration(&qmp, "saving memory").await?;
            if status == "pre-switchover" {
                // Finished, then made durable, by `resume` or `halt`.
                *self.switchover.lock().await = Some(file.to_path_buf());
            } else {
                // Paused: durable before the disks are taken and the
                // metadata names it. Background: the guest runs already.
                out_synced(file)?;
            }
            Ok::<(), RuntimeError>(())
        }
        .await;
        if background {
            // Off again: a later save of another kind must not inherit it.
            let _ = self
                .set_migration_caps(&qmp, &[("background-snapshot", false)])
                .await;
        }
        if result.is_err() {
            let _ = qmp.execute("migrate_cancel", None).await;
            let _ = std::fs::remove_file(file);
        }
        result
    }

    /// Whether QEMU takes a background snapshot of this guest's memory
    /// (it needs write-protectable anonymous RAM: a file-backed RAM
    /// refuses): the capability is tried and switched off again.
    async fn background_allowed(&self, qmp: &Qmp) -> bool {
        if !qmp.version().at_least(6, 0) {
            return false;
        }
        let on = self
            .set_migration_caps(
                qmp,
                &[
                    ("pause-before-switchover", false),
                    ("background-snapshot", true),
                ],
            )
            .await
            .is_ok();
        if on {
            let _ = self
                .set_migration_caps(qmp, &[("background-snapshot", false)])
                .await;
        }
        on
    }

    /// Lets a live save waiting at switchover finish, with the guest
    /// still paused.
    /// Lets a live save waiting at switchover write its last part, with
    /// the guest still paused; returns the file, to be made durable once
    /// the guest runs again (flushing 1 GiB took 0.5 s of pause).
    async fn finish_switchover(&self) -> Result<Option<PathBuf>, RuntimeError> {
        let Some(file) = self.switchover.lock().await.take() else {
            return Ok(None);
        };
        let qmp = self.monitor().await?;
        qmp.execute(
            "migrate-continue",
            Some(json!({ "state": "pre-switchover" })),
        )
        .await?;
        if let Err(e) = self.wait_migration(&qmp, "saving memory").await {
            let _ = std::fs::remove_file(&file);
            return Err(e);
        }
        Ok(Some(file))
    }

    /// Cancels a memory save this process does not own (one a crashed
    /// virtsnap left waiting at switchover): resuming the guest is the
    /// undo of the whole snapshot, and QEMU would refuse `cont` with a
    /// migration in flight.
    async fn cancel_stray_migration(&self) -> Result<(), RuntimeError> {
        let qmp = self.monitor().await?;
        let status = |m: &Value| {
            m.get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let m = qmp.execute("query-migrate", None).await?;
        if !matches!(
            status(&m).as_str(),
            "setup" | "active" | "pre-switchover" | "device" | "wait-unplug"
        ) {
            return Ok(());
        }
        tracing::warn!(status = %status(&m), "cancelling a memory save left in flight");
        qmp.execute("migrate_cancel", None).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m = qmp.execute("query-migrate", None).await?;
            if matches!(
                status(&m).as_str(),
                "cancelled" | "failed" | "completed" | ""
            ) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(RuntimeError::Failed {
                    what: "cancelling a memory save left in flight".into(),
                    why: format!("still {}", status(&m)),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Creates the overlays `(disk, file, node)` inside QEMU, all disks at
    /// once (`blockdev-create` jobs: no process per disk): each file, its
    /// qcow2 header on the disk's current image with the disk's format,
    /// size and cluster size, and the qcow2 node `node` (file node
    /// `file_node_of(node)`), not yet in any chain. What exists is
    /// recorded in `created` and `added` for the caller's cleanup.
    async fn create_overlays(
        &self,
        qmp: &Qmp,
        items: &[(LiveDisk, PathBuf, String)],
        created: &mut Vec<PathBuf>,
        added: &mut Vec<String>,
    ) -> Result<(), RuntimeError> {
        if items.is_empty() {
            return Ok(());
        }
        let files: Vec<(String, Value)> = items
            .iter()
            .map(|(_, file, _)| {
                let id = job_id("mkfile");
                let args = json!({"job-id": id, "options": {
                    "driver": "file", "filename": file.to_string_lossy(), "size": 0}});
                (id, args)
            })
            .collect();
        let files_made = self.run_jobs(qmp, "blockdev-create", files).await;
        for (_, file, _) in items {
            if file.exists() {
                created.push(file.clone());
            }
        }
        files_made?;
        for (_, file, node) in items {
            let file_node = file_node_of(node);
            qmp.execute(
                "blockdev-add",
                Some(json!({"driver": "file", "node-name": file_node,
                    "filename": file.to_string_lossy()})),
            )
            .await?;
            added.push(file_node);
        }
        let headers: Vec<(String, Value)> = items
            .iter()
            .map(|(disk, _, node)| {
                let id = job_id("mkqcow2");
                let mut options = json!({
                    "driver": "qcow2", "file": file_node_of(node), "size": disk.size,
                    "backing-file": disk.file, "backing-fmt": disk.format,
                });
                if let Some(cs) = disk.cluster_size {
                    options["cluster-size"] = json!(cs);
                }
                (id.clone(), json!({"job-id": id, "options": options}))
            })
            .collect();
        self.run_jobs(qmp, "blockdev-create", headers).await?;
        // Durable before a definition names them.
        for (_, file, _) in items {
            std::fs::File::open(file)
                .and_then(|f| f.sync_all())
                .map_err(io_err("cannot sync", file))?;
        }
        if let Some(dir) = items.first().and_then(|(_, f, _)| f.parent()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("cannot sync", dir))?;
        }
        for (_, _, node) in items {
            qmp.execute(
                "blockdev-add",
                Some(json!({"driver": "qcow2", "node-name": node,
                    "file": file_node_of(node), "backing": null})),
            )
            .await?;
            added.push(node.clone());
        }
        Ok(())
    }

    /// Starts `command` once per `(job id, args)` and waits until every
    /// job has concluded; the first error is returned, all are dismissed.
    async fn run_jobs(
        &self,
        qmp: &Qmp,
        command: &str,
        jobs: Vec<(String, Value)>,
    ) -> Result<(), RuntimeError> {
        let mut events = qmp.subscribe();
        let mut waiting: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut first_error = None;
        for (id, args) in jobs {
            match qmp.execute(command, Some(args)).await {
                Ok(_) => {
                    waiting.insert(id);
                }
                Err(e) => {
                    first_error.get_or_insert(RuntimeError::from(e));
                }
            }
        }
        let started: Vec<String> = waiting.iter().cloned().collect();
        while !waiting.is_empty() {
            let ev = Qmp::wait_event(
                &mut events,
                "JOB_STATUS_CHANGE",
                |d| {
                    d.get("status").and_then(Value::as_str) == Some("concluded")
                        && d.get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|i| waiting.contains(i))
                },
                JOB_TIMEOUT,
            )
            .await?;
            if let Some(id) = ev.data.get("id").and_then(Value::as_str) {
                waiting.remove(id);
            }
        }
        let listed = qmp.execute("query-jobs", None).await?;
        for id in &started {
            if let Some(why) = job_error(&listed, id) {
                first_error.get_or_insert(RuntimeError::Failed {
                    what: command.to_string(),
                    why,
                });
            }
            let _ = qmp.execute("job-dismiss", Some(json!({ "id": id }))).await;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Makes the new overlays of `disks` (not yet in any chain) and
    /// remembers their nodes for [`Self::transaction`].
    async fn prepare(&self, disks: &[DiskStep]) -> Result<(), RuntimeError> {
        let qmp = self.monitor().await?;
        let live = self.live_disks().await?;
        let mut items = Vec::new();
        for d in disks {
            let DiskAction::External {
                target,
                reuse: false,
                ..
            } = &d.action
            else {
                continue;
            };
            let disk = live.get(&d.disk).ok_or_else(|| RuntimeError::NoDevice {
                domain: self.name.clone(),
                disk: d.disk.clone(),
            })?;
            if Path::new(target).exists() {
                return Err(RuntimeError::Failed {
                    what: format!("the overlay of disk {}", d.disk),
                    why: format!("{target} exists already; remove it, or pass --reuse-external"),
                });
            }
            items.push((disk.clone(), PathBuf::from(target), overlay_node(&d.disk)));
        }
        let (mut created, mut added) = (Vec::new(), Vec::new());
        if let Err(e) = self
            .create_overlays(&qmp, &items, &mut created, &mut added)
            .await
        {
            for node in added.iter().rev() {
                let _ = qmp
                    .execute("blockdev-del", Some(json!({ "node-name": node })))
                    .await;
            }
            for f in &created {
                let _ = std::fs::remove_file(f);
            }
            return Err(e);
        }
        let mut prepared = self.prepared.lock().await;
        for (_, file, node) in items {
            prepared.insert(file.to_string_lossy().into_owned(), node);
        }
        Ok(())
    }

    async fn transaction(&self, name: &str, disks: &[DiskStep]) -> Result<(), RuntimeError> {
        let qmp = self.monitor().await?;
        let live = self.live_disks().await?;
        let mut actions = Vec::new();
        let mut added: Vec<String> = Vec::new();
        let mut created: Vec<PathBuf> = Vec::new();
        let mut to_create: Vec<(LiveDisk, PathBuf, String)> = Vec::new();
        let result = async {
            for d in disks {
                let disk = live.get(&d.disk).ok_or_else(|| RuntimeError::NoDevice {
                    domain: self.name.clone(),
                    disk: d.disk.clone(),
                })?;
                match &d.action {
                    DiskAction::Internal => actions.push(json!({
                        "type": "blockdev-snapshot-internal-sync",
                        "data": {"device": disk.node, "name": name},
                    })),
                    DiskAction::External { target, reuse, .. } => {
                        if let Some(node) = self.prepared.lock().await.remove(target) {
                            actions.push(json!({
                                "type": "blockdev-snapshot",
                                "data": {"node": disk.node, "overlay": node},
                            }));
                            continue;
                        }
                        let node = overlay_node(&d.disk);
                        if *reuse {
                            qmp.execute(
                                "blockdev-add",
                                Some(json!({
                                    "driver": "qcow2", "node-name": node,
                                    "file": {"driver": "file", "filename": target},
                                    "backing": null,
                                })),
                            )
                            .await?;
                            added.push(node.clone());
                        } else {
                            if Path::new(target).exists() {
                                return Err(RuntimeError::Failed {
                                    what: format!("the overlay of disk {}", d.disk),
                                    why: format!(
                                        "{target} exists already; remove it, or pass --reuse-external"
                                    ),
                                });
                            }
                            to_create.push((disk.clone(), PathBuf::from(target), node.clone()));
                        }
                        actions.push(json!({
                            "type": "blockdev-snapshot",
                            "data": {"node": disk.node, "overlay": node},
                        }));
                    }
                    DiskAction::Copy { .. } => {
                        return Err(RuntimeError::Failed {
                            what: format!("the snapshot of disk {}", d.disk),
                            why: "a full copy is not a hypervisor transaction".into(),
                        });
                    }
                }
            }
            self.create_overlays(&qmp, &to_create, &mut created, &mut added)
                .await?;
            qmp.execute("transaction", Some(json!({ "actions": actions })))
                .await?;
            Ok::<(), RuntimeError>(())
        }
        .await;
        if result.is_err() {
            for node in added.iter().rev() {
                let _ = qmp
                    .execute("blockdev-del", Some(json!({ "node-name": node })))
                    .await;
            }
            for f in &created {
                let _ = std::fs::remove_file(f);
            }
        }
        result
    }

    /// Takes a transaction's snapshots back out: an overlay on top of a
    /// disk is committed down (what the guest wrote since is kept) and
    /// removed; an internal snapshot is dropped.
    async fn untransaction(&self, name: &str, disks: &[DiskStep]) -> Result<(), RuntimeError> {
        if !self.has_process() {
            return self.untransaction_offline(name, disks).await;
        }
        let qmp = self.monitor().await?;
        for d in disks {
            let disk = self.live_disk(&d.disk).await?;
            match &d.action {
                DiskAction::Internal => {
                    let has = disk.snapshots.iter().any(|(n, _)| n == name);
                    if has {
                        qmp.execute(
                            "blockdev-snapshot-delete-internal-sync",
                            Some(json!({"device": disk.node, "name": name})),
                        )
                        .await?;
                    }
                }
                DiskAction::External { target, reuse, .. } => {
                    if same_file(&disk.file, target) {
                        let id = job_id("undo");
                        let mut events = qmp.subscribe();
                        qmp.execute(
                            "block-commit",
                            Some(
                                json!({"job-id": id, "device": disk.node, "auto-finalize": true,
                                "auto-dismiss": false}),
                            ),
                        )
                        .await?;
                        let ready = |v: &Value| {
                            v.get("id").and_then(Value::as_str) == Some(&id)
                                && matches!(
                                    v.get("status").and_then(Value::as_str),
                                    Some("ready" | "concluded")
                                )
                        };
                        let ev =
                            Qmp::wait_event(&mut events, "JOB_STATUS_CHANGE", ready, JOB_TIMEOUT)
                                .await?;
                        if ev.data.get("status").and_then(Value::as_str) == Some("ready") {
                            qmp.execute("job-complete", Some(json!({ "id": id })))
                                .await?;
                            let done = |v: &Value| {
                                v.get("id").and_then(Value::as_str) == Some(&id)
                                    && v.get("status").and_then(Value::as_str) == Some("concluded")
                            };
                            Qmp::wait_event(&mut events, "JOB_STATUS_CHANGE", done, JOB_TIMEOUT)
                                .await?;
                        }
                        let jobs = qmp.execute("query-jobs", None).await?;
                        qmp.execute("job-dismiss", Some(json!({ "id": id })))
                            .await?;
                        if let Some(why) = job_error(&jobs, &id) {
                            return Err(RuntimeError::Failed {
                                what: format!(
                                    "merging the overlay {target} of disk {} back",
                                    d.disk
                                ),
                                why,
                            });
                        }
                        release_node(&qmp, &disk.node).await;
                    }
                    if !*reuse {
                        // Made ready but never put in the chain: QEMU
                        // still holds it open.
                        if let Some(node) = self.node_of_file(&qmp, target).await? {
                            release_node(&qmp, &node).await;
                        }
                        self.prepared.lock().await.remove(target);
                        remove_if_exists(Path::new(target))?;
                    }
                }
                DiskAction::Copy { .. } => {}
            }
        }
        Ok(())
    }

    /// The same with QEMU gone (killed mid-snapshot): an overlay made is
    /// committed into its backing file with qemu-img, then removed; an
    /// internal snapshot is deleted from the image.
    async fn untransaction_offline(
        &self,
        name: &str,
        disks: &[DiskStep],
    ) -> Result<(), RuntimeError> {
        let img = crate::qemu_img::QemuImg::new("qemu-img");
        for d in disks {
            match &d.action {
                DiskAction::Internal => {
                    let held = img
                        .run(&["snapshot".into(), "-l".into(), d.image.clone()])
                        .await?;
                    if held
                        .lines()
                        .any(|l| l.split_whitespace().nth(1) == Some(name))
                    {
                        img.run(&["snapshot".into(), "-d".into(), name.into(), d.image.clone()])
                            .await?;
                    }
                }
                DiskAction::External { target, reuse, .. } => {
                    if *reuse || !Path::new(target).exists() {
                        continue;
                    }
                    img.run(&["commit".into(), "-d".into(), target.clone()])
                        .await?;
                    remove_if_exists(Path::new(target))?;
                }
                DiskAction::Copy { .. } => {}
            }
        }
        Ok(())
    }

    /// The format node QEMU opened `file` with, if any.
    async fn node_of_file(&self, qmp: &Qmp, file: &str) -> Result<Option<String>, RuntimeError> {
        Ok(self
            .graph(qmp)
            .await?
            .into_iter()
            .find(|n| same_file(&n.file, file))
            .map(|n| n.node))
    }

    /// QEMU's format nodes: name, file, backing node.
    async fn graph(&self, qmp: &Qmp) -> Result<Vec<GraphNode>, RuntimeError> {
        let nodes = qmp
            .execute("query-named-block-nodes", Some(json!({"flat": true})))
            .await?;
        Ok(nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| {
                !matches!(
                    n.get("drv").and_then(Value::as_str),
                    Some("file" | "host_device" | "host_cdrom")
                )
            })
            .filter_map(|n| {
                Some(GraphNode {
                    node: n.get("node-name")?.as_str()?.to_string(),
                    file: n.get("file")?.as_str()?.to_string(),
                    backing_file: n
                        .get("image")
                        .and_then(|i| i.get("backing-filename"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                })
            })
            .collect())
    }

    /// `block-stream` of `into` (a node of the running domain) down to
    /// `image`'s backing, so `into` no longer needs `image`.
    async fn stream(&self, disk: &str, image: &str, into: &str) -> Result<bool, RuntimeError> {
        let qmp = self.monitor().await?;
        let graph = self.graph(&qmp).await?;
        let Some(top) = graph.iter().find(|n| same_file(&n.file, into)) else {
            return Ok(false);
        };
        let uses_image = top
            .backing_file
            .as_deref()
            .is_some_and(|b| same_file(&resolve(into, b), image));
        if !uses_image {
            return Ok(false);
        }
        let Some(mid) = graph.iter().find(|n| same_file(&n.file, image)) else {
            return Ok(false);
        };
        let base = mid.backing_file.as_deref().and_then(|b| {
            let b = resolve(image, b);
            graph
                .iter()
                .find(|n| same_file(&n.file, &b))
                .map(|n| n.node.clone())
        });
        let id = job_id("stream");
        let mut args = json!({"job-id": id, "device": top.node, "auto-dismiss": false});
        if let Some(b) = base {
            args["base-node"] = json!(b);
        }
        tracing::info!(disk, image, into, "block-stream");
        self.run_job(&qmp, "block-stream", args, &id).await?;
        // Out of the chain now: QEMU lets the image go (it is deleted next).
        release_node(&qmp, &mid.node).await;
        Ok(true)
    }

    /// The node of a disk to name in a job, for each of `targets`.
    async fn nodes_of(&self, targets: &[String]) -> Result<Vec<String>, RuntimeError> {
        let live = self.live_disks().await?;
        targets
            .iter()
            .map(|t| {
                live.get(t)
                    .map(|d| d.node.clone())
                    .ok_or_else(|| RuntimeError::NoDevice {
                        domain: self.name.clone(),
                        disk: t.clone(),
                    })
            })
            .collect()
    }

    async fn load_memory(
        &self,
        domain: &Domain,
        memory: &MemoryImage,
        only: Option<&[String]>,
    ) -> Result<(), RuntimeError> {
        let qmp = self.monitor().await?;
        match memory {
            MemoryImage::File(path) => {
                let file = std::fs::File::open(path)
                    .map_err(io_err("cannot open the memory file", Path::new(path)))?;
                let fdname = job_id("in");
                qmp.execute_with_fd("getfd", Some(json!({ "fdname": fdname })), file.as_fd())
                    .await?;
                qmp.execute(
                    "migrate-incoming",
                    Some(json!({ "uri": format!("fd:{fdname}") })),
                )
                .await?;
                self.wait_migration(&qmp, "loading memory").await?;
            }
            MemoryImage::Checkpoint(name) => {
                let live = self.live_disks().await?;
                let holders: Vec<&LiveDisk> = domain
                    .def
                    .disks
                    .iter()
                    .filter(|d| only.is_none_or(|o| o.contains(&d.target)))
                    .filter_map(|d| live.get(&d.target))
                    .filter(|d| d.snapshots.iter().any(|(n, _)| n == name))
                    .collect();
                let vmstate = holders
                    .iter()
                    .find(|d| d.snapshots.iter().any(|(n, size)| n == name && *size > 0))
                    .ok_or_else(|| RuntimeError::Failed {
                        what: format!("loading checkpoint '{name}'"),
                        why: "no disk holds its memory state".into(),
                    })?;
                let id = job_id("load");
                self.run_job(
                    &qmp,
                    "snapshot-load",
                    json!({"job-id": id, "tag": name, "vmstate": vmstate.node,
                        "devices": holders.iter().map(|d| d.node.clone()).collect::<Vec<_>>()}),
                    &id,
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// The error job `id` ended with, from a `query-jobs` reply.
fn job_error(jobs: &Value, id: &str) -> Option<String> {
    jobs.as_array()?
        .iter()
        .find(|j| j.get("id").and_then(Value::as_str) == Some(id))?
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A format node of QEMU's graph.
#[derive(Debug, Clone)]
struct GraphNode {
    node: String,
    file: String,
    backing_file: Option<String>,
}

/// `backing` as named in `image`'s header, made absolute.
fn resolve(image: &str, backing: &str) -> String {
    let b = Path::new(backing);
    if b.is_absolute() {
        backing.to_string()
    } else {
        Path::new(image)
            .parent()
            .unwrap_or_else(|| Path::new("/"))
            .join(b)
            .to_string_lossy()
            .into_owned()
    }
}

fn out_synced(file: &Path) -> Result<(), RuntimeError> {
    std::fs::File::open(file)
        .and_then(|f| f.sync_all())
        .map_err(io_err("cannot sync", file))?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("cannot sync", dir))?;
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot remove", path)(e)),
    }
}

fn same_file(a: &str, b: &str) -> bool {
    a == b
        || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// Drops `node` and its file node from QEMU once no chain uses them, so
/// QEMU closes the image (nodes the monitor added stay open otherwise).
/// A node still in use is left: QEMU refuses, and that is fine.
async fn release_node(qmp: &Qmp, node: &str) {
    for n in [node.to_string(), file_node_of(node)] {
        if let Err(e) = qmp
            .execute("blockdev-del", Some(json!({ "node-name": n })))
            .await
        {
            tracing::debug!(node = %n, error = %e, "node kept");
        }
    }
}

/// The file node under an overlay node (`vs-oX-T` → `vs-fX-T`), or under
/// a disk node of the launcher (`vs-disk-T` → `vs-file-T`).
fn file_node_of(node: &str) -> String {
    if let Some(rest) = node.strip_prefix("vs-disk-") {
        format!("vs-file-{rest}")
    } else if let Some(rest) = node.strip_prefix("vs-o") {
        format!("vs-f{rest}")
    } else {
        format!("{node}-file")
    }
}

fn overlay_node(target: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() % 1_000_000_000);
    let mut node = format!("vs-o{n:x}-{target}");
    node.truncate(31);
    node
}

/// The disks of a `query-block` reply, by device id.
fn parse_blocks(blocks: &Value) -> HashMap<String, LiveDisk> {
    let mut out = HashMap::new();
    for b in blocks.as_array().into_iter().flatten() {
        let Some(inserted) = b.get("inserted") else {
            continue;
        };
        let qdev = b.get("qdev").and_then(Value::as_str).unwrap_or("");
        let device = b.get("device").and_then(Value::as_str).unwrap_or("");
        let target = if !qdev.is_empty() && !qdev.starts_with('/') {
            qdev.to_string()
        } else if let Some(rest) = qdev.strip_prefix("/machine/peripheral/") {
            rest.split('/').next().unwrap_or(rest).to_string()
        } else if !device.is_empty() {
            device.to_string()
        } else {
            continue;
        };
        let image = inserted.get("image");
        let s = |v: Option<&Value>, k: &str| {
            v.and_then(|x| x.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let snapshots = image
            .and_then(|i| i.get("snapshots"))
            .and_then(Value::as_array)
            .map(|ss| {
                ss.iter()
                    .filter_map(|x| {
                        Some((
                            x.get("name")?.as_str()?.to_string(),
                            x.get("vm-state-size").and_then(Value::as_u64).unwrap_or(0),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            target.clone(),
            LiveDisk {
                target,
                node: s(Some(inserted), "node-name"),
                file: s(Some(inserted), "file"),
                format: s(Some(inserted), "drv"),
                read_only: inserted.get("ro").and_then(Value::as_bool).unwrap_or(false),
                size: image
                    .and_then(|i| i.get("virtual-size"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                cluster_size: image
                    .and_then(|i| i.get("cluster-size"))
                    .and_then(Value::as_u64),
                snapshots,
            },
        );
    }
    out
}

/// A domain definition for an adopted QEMU, from its disks.
fn adopted_definition(name: &str, blocks: &Value, memory: u64, agent: bool) -> String {
    let mut disks = String::new();
    let mut targets: Vec<(String, LiveDisk)> = parse_blocks(blocks).into_iter().collect();
    targets.sort_by(|a, b| a.0.cmp(&b.0));
    for (target, d) in targets {
        let ro = if d.read_only { "<readonly/>" } else { "" };
        disks.push_str(&format!(
            "<disk type='file' device='disk'><driver name='qemu' type='{}'/><source file='{}'/><target dev='{}'/>{ro}</disk>",
            xml_escape(&d.format),
            xml_escape(&d.file),
            xml_escape(&target)
        ));
    }
    let channel = if agent {
        "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
    } else {
        ""
    };
    format!(
        "<domain type='qemu'><name>{}</name><memory unit='b'>{}</memory><devices>{disks}{channel}</devices></domain>",
        xml_escape(name),
        memory.max(1 << 20)
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn boxed(e: RuntimeError) -> HypervisorError {
    Box::new(e)
}

#[async_trait]
impl Hypervisor for QemuDomain {
    async fn state(&self) -> Result<DomainState, HypervisorError> {
        self.domain_state().await.map_err(boxed)
    }

    async fn live_facts(&self, domain: &Domain) -> Result<LiveFacts, HypervisorError> {
        let qmp = self.monitor().await.map_err(boxed)?;
        let version = qmp.version();
        let live = self.live_disks().await.map_err(boxed)?;
        let jobs = qmp
            .execute("query-block-jobs", None)
            .await
            .map_err(|e| boxed(e.into()))?;
        let busy: Vec<String> = jobs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j.get("device").and_then(Value::as_str).map(str::to_string))
            .collect();
        let mut disks = HashMap::new();
        for d in &domain.def.disks {
            let Some(l) = live.get(&d.target) else {
                continue;
            };
            let qcow2 = l.format == "qcow2" && !l.read_only;
            let caps = LiveDiskCaps {
                internal: qcow2,
                vmstate: qcow2,
                external: !l.read_only,
            };
            let job = busy.iter().any(|b| b == &l.node || b == &d.target);
            disks.insert(d.target.clone(), (caps, job));
        }
        let agent = match self.agent_path(Some(domain)) {
            None => AgentState::NotConfigured,
            Some(path) => match Agent::connect(&path).await {
                Ok(_) => AgentState::Connected,
                Err(_) => AgentState::Disconnected,
            },
        };
        let mut caps = caps_of(version);
        caps.background_snapshot = self.background_allowed(&qmp).await;
        Ok(LiveFacts { caps, agent, disks })
    }

    async fn offline_caps(&self, _domain: &Domain) -> HypervisorCaps {
        // The QEMU that would start it: 7.2 or later on supported hosts.
        caps_of(QemuVersion {
            major: 7,
            minor: 2,
            micro: 0,
        })
    }

    async fn freeze(&self) -> Result<(), HypervisorError> {
        let mut agent = self.agent().await.map_err(boxed)?;
        match agent.freeze().await {
            Ok(_) => Ok(()),
            Err(e) => {
                // A freeze that failed half-way may have frozen some.
                let _ = agent.thaw().await;
                Err(boxed(e.into()))
            }
        }
    }

    async fn thaw(&self) -> Result<(), HypervisorError> {
        let mut agent = self.agent().await.map_err(boxed)?;
        agent.thaw().await.map(drop).map_err(|e| boxed(e.into()))
    }

    async fn pause(&self) -> Result<(), HypervisorError> {
        self.suspend().await.map_err(boxed)
    }

    async fn resume(&self) -> Result<(), HypervisorError> {
        let saved = self.finish_switchover().await.map_err(boxed)?;
        self.cancel_stray_migration().await.map_err(boxed)?;
        self.resume_cpus().await.map_err(boxed)?;
        if let Some(file) = saved {
            out_synced(&file).map_err(boxed)?;
        }
        Ok(())
    }

    async fn save_memory_internal(
        &self,
        name: &str,
        vmstate: &str,
        disks: &[String],
    ) -> Result<(), HypervisorError> {
        let qmp = self.monitor().await.map_err(boxed)?;
        let vm = self.nodes_of(&[vmstate.to_string()]).await.map_err(boxed)?;
        let devices = self.nodes_of(disks).await.map_err(boxed)?;
        let id = job_id("save");
        self.run_job(
            &qmp,
            "snapshot-save",
            json!({"job-id": id, "tag": name, "vmstate": vm[0], "devices": devices}),
            &id,
        )
        .await
        .map_err(boxed)
    }

    async fn delete_memory_internal(
        &self,
        name: &str,
        disks: &[String],
    ) -> Result<(), HypervisorError> {
        if !self.has_process() {
            let domain = domains::get(&self.layout, &self.name).map_err(|e| boxed(e.into()))?;
            let steps: Vec<DiskStep> = disks
                .iter()
                .filter_map(|t| {
                    let d = domain.def.disk_by_target(t)?;
                    Some(DiskStep {
                        disk: t.clone(),
                        image: d.source.local_path()?.to_string(),
                        by: snapshot_core::plan::Performer::Hypervisor,
                        action: DiskAction::Internal,
                    })
                })
                .collect();
            return self
                .untransaction_offline(name, &steps)
                .await
                .map_err(boxed);
        }
        let qmp = self.monitor().await.map_err(boxed)?;
        let live = self.live_disks().await.map_err(boxed)?;
        let devices: Vec<String> = disks
            .iter()
            .filter_map(|t| live.get(t))
            .filter(|d| d.snapshots.iter().any(|(n, _)| n == name))
            .map(|d| d.node.clone())
            .collect();
        if devices.is_empty() {
            return Ok(());
        }
        let id = job_id("del");
        self.run_job(
            &qmp,
            "snapshot-delete",
            json!({"job-id": id, "tag": name, "devices": devices}),
            &id,
        )
        .await
        .map_err(boxed)
    }

    async fn save_memory(&self, file: &Path, how: MemorySave) -> Result<(), HypervisorError> {
        self.save_memory_to(file, how).await.map_err(boxed)
    }

    async fn disk_transaction(
        &self,
        name: &str,
        disks: &[DiskStep],
    ) -> Result<(), HypervisorError> {
        self.transaction(name, disks).await.map_err(boxed)
    }

    async fn prepare_disk_transaction(
        &self,
        _name: &str,
        disks: &[DiskStep],
    ) -> Result<(), HypervisorError> {
        self.prepare(disks).await.map_err(boxed)
    }

    async fn undo_disk_transaction(
        &self,
        name: &str,
        disks: &[DiskStep],
    ) -> Result<(), HypervisorError> {
        self.untransaction(name, disks).await.map_err(boxed)
    }

    async fn delete_disk_snapshot(
        &self,
        step: &DiskStep,
        name: &str,
    ) -> Result<(), HypervisorError> {
        let qmp = self.monitor().await.map_err(boxed)?;
        let node = self
            .node_of_file(&qmp, &step.image)
            .await
            .map_err(boxed)?
            .ok_or_else(|| {
                boxed(RuntimeError::Failed {
                    what: format!("dropping '{name}' from {}", step.image),
                    why: format!("the running domain does not use {}", step.image),
                })
            })?;
        let r = qmp
            .execute(
                "blockdev-snapshot-delete-internal-sync",
                Some(json!({"device": node, "name": name})),
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            // Gone already (a rerun after a crash).
            Err(e) if e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(boxed(e.into())),
        }
    }

    async fn stream_layer(
        &self,
        disk: &str,
        image: &str,
        into: &str,
    ) -> Result<bool, HypervisorError> {
        self.stream(disk, image, into).await.map_err(boxed)
    }

    async fn load_checkpoint(
        &self,
        name: &str,
        disks: &[String],
        paused: bool,
    ) -> Result<(), HypervisorError> {
        let domain = domains::get(&self.layout, &self.name).map_err(|e| boxed(e.into()))?;
        self.load_memory(
            &domain,
            &MemoryImage::Checkpoint(name.to_string()),
            Some(disks),
        )
        .await
        .map_err(boxed)?;
        let qmp = self.monitor().await.map_err(boxed)?;
        let status = qmp
            .execute("query-status", None)
            .await
            .map_err(|e| boxed(e.into()))?;
        let running = status.get("running").and_then(Value::as_bool) == Some(true);
        let cmd = match (paused, running) {
            (true, true) => Some("stop"),
            (false, false) => Some("cont"),
            _ => None,
        };
        if let Some(c) = cmd {
            qmp.execute(c, None).await.map_err(|e| boxed(e.into()))?;
        }
        Ok(())
    }

    async fn halt(&self) -> Result<(), HypervisorError> {
        let saved = self.finish_switchover().await.map_err(boxed)?;
        self.destroy().await.map_err(boxed)?;
        if let Some(file) = saved {
            out_synced(&file).map_err(boxed)?;
        }
        Ok(())
    }

    async fn stop(&self) -> Result<(), HypervisorError> {
        self.destroy().await.map_err(boxed)
    }

    async fn start(
        &self,
        domain: &Domain,
        paused: bool,
        memory: Option<&MemoryImage>,
    ) -> Result<(), HypervisorError> {
        let mode = StartMode {
            paused: paused || memory.is_some(),
            incoming: matches!(memory, Some(MemoryImage::File(_))),
        };
        self.start_with(domain, mode, memory, paused)
            .await
            .map_err(boxed)
    }
}

fn caps_of(version: QemuVersion) -> HypervisorCaps {
    HypervisorCaps {
        snapshot_save: version.at_least(6, 0),
        memory_to_file: true,
        // Asked of the running QEMU (it depends on the guest's memory).
        background_snapshot: false,
        transaction: true,
    }
}

/// QEMU domains of one state directory: the hypervisor of each.
#[derive(Debug, Clone)]
pub struct QemuHypervisors {
    layout: Layout,
}

impl QemuHypervisors {
    /// For the domains of `layout`.
    #[must_use]
    pub fn new(layout: &Layout) -> Self {
        Self {
            layout: layout.clone(),
        }
    }
}

impl HypervisorProvider for QemuHypervisors {
    fn for_domain(&self, name: &str) -> Arc<dyn Hypervisor> {
        Arc::new(QemuDomain::new(&self.layout, name))
    }
}
