//! What the planner is told about the world: the domain (definition,
//! state, guest agent, managed save), each disk's storage driver and what
//! it can do in the domain's state, and what the hypervisor can do.
//! Gathered by the caller (the executor's front end); the planner itself
//! never looks at files or processes.

use std::collections::HashSet;

use snapshot_conf::{Domain, SnapshotState, SourceProbe};

use crate::driver::Capabilities;

/// The state of a domain (libvirt's `virDomainState`, as far as snapshots
/// care).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainState {
    /// Running.
    Running,
    /// Paused (by the user, or by an I/O error).
    Paused,
    /// Blocked on a resource (still running).
    Blocked,
    /// Being shut down (the process still runs).
    Shutdown,
    /// Shut off: no process.
    Shutoff,
    /// Crashed, the process gone.
    Crashed,
    /// Suspended by the guest's power management.
    PmSuspended,
}

impl DomainState {
    /// Whether a hypervisor process runs the domain (memory exists).
    #[must_use]
    pub fn is_active(self) -> bool {
        !matches!(self, Self::Shutoff | Self::Crashed)
    }

    /// The `<state>` a full-system snapshot of the domain records.
    #[must_use]
    pub fn snapshot_state(self) -> SnapshotState {
        match self {
            Self::Running => SnapshotState::Running,
            Self::Paused => SnapshotState::Paused,
            Self::Blocked => SnapshotState::Blocked,
            Self::Shutdown => SnapshotState::Shutdown,
            Self::Shutoff => SnapshotState::Shutoff,
            Self::Crashed => SnapshotState::Crashed,
            Self::PmSuspended => SnapshotState::PmSuspended,
        }
    }

    /// virsh's word for it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Blocked => "blocked",
            Self::Shutdown => "in shutdown",
            Self::Shutoff => "shut off",
            Self::Crashed => "crashed",
            Self::PmSuspended => "pmsuspended",
        }
    }
}

/// The guest agent, for QUIESCE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AgentState {
    /// The domain has no guest-agent channel.
    #[default]
    NotConfigured,
    /// The channel exists but the agent does not answer.
    Disconnected,
    /// The agent answers.
    Connected,
}

/// What the hypervisor can do for one disk of a running domain (QEMU over
/// QMP, asked per disk: its format and node decide).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LiveDiskCaps {
    /// An internal snapshot while the guest runs
    /// (`blockdev-snapshot-internal-sync`, qcow2 only).
    pub internal: bool,
    /// Holding the memory state of an internal system checkpoint (the
    /// `vmstate` node of `snapshot-save`, qcow2 only).
    pub vmstate: bool,
    /// An external snapshot: a new overlay becomes the active layer
    /// (`blockdev-snapshot` in a transaction).
    pub external: bool,
}

/// A storage driver that can handle a disk's image, and what it can do
/// with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StorageOption {
    /// The driver's kind (`qemu`, `file`, `lvm`, ...).
    pub driver: String,
    /// What it can do with the image.
    pub caps: Capabilities,
}

impl StorageOption {
    /// An option of `driver` with `caps`.
    #[must_use]
    pub fn new(driver: impl Into<String>, caps: Capabilities) -> Self {
        Self {
            driver: driver.into(),
            caps,
        }
    }
}

/// The first of `options` whose capabilities pass `want`.
pub(crate) fn driver_for(
    options: &[StorageOption],
    want: impl Fn(&Capabilities) -> bool,
) -> Option<&str> {
    options
        .iter()
        .find(|o| want(&o.caps))
        .map(|o| o.driver.as_str())
}

/// How disk `disk` of a stored snapshot was taken, as its cookie records,
/// when the recorded driver is among `options` and can still keep that
/// kind of snapshot (otherwise the caller infers from `options`).
pub(crate) fn recorded(
    def: &snapshot_conf::DomainSnapshotDef,
    disk: &str,
    options: &[StorageOption],
) -> Option<snapshot_conf::CookieDisk> {
    let cookie = snapshot_conf::VirtsnapCookie::from_subtree(def.cookie.as_ref()?)?;
    let r = cookie.disk(disk)?;
    let usable = options.iter().any(|o| {
        o.driver == r.driver
            && match r.mode.as_str() {
                "copy" => o.caps.copy,
                "internal" => o.caps.internal,
                _ => true,
            }
    });
    usable.then(|| r.clone())
}

/// Why none of `options` did it: "no storage driver handles it", or
/// "its drivers (a, b) cannot VERB".
pub(crate) fn cannot(options: &[StorageOption], verb: &str) -> String {
    if options.is_empty() {
        "no storage driver handles it".to_string()
    } else {
        let names: Vec<&str> = options.iter().map(|o| o.driver.as_str()).collect();
        format!("its drivers ({}) cannot {verb}", names.join(", "))
    }
}

/// What is known of one disk of the domain, in the domain's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskFacts {
    /// The storage drivers that handle the disk's image with the domain
    /// shut off, preferred first, with what each can do then (creates of
    /// a shut-off domain; reverts and deletes, which stop the domain or
    /// work on images it does not use).
    pub offline: Vec<StorageOption>,
    /// The same while the domain runs and writes the image (storage-level
    /// snapshots of an image in use, LVM or btrfs, taken with the guest
    /// paused); empty when the domain is shut off.
    pub in_use: Vec<StorageOption>,
    /// What the hypervisor can do with it while the domain runs.
    pub live: LiveDiskCaps,
    /// The disk's current image is a regular file (external snapshots get
    /// default names only then).
    pub regular_file: bool,
    /// A block job (copy, commit, ...) runs on the disk.
    pub block_job: bool,
}

/// What the hypervisor can do for the whole domain: the one running it,
/// or, for a shut-off domain, the one that would start it (loading a
/// snapshot's memory on revert). Empty when no hypervisor is at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(clippy::struct_excessive_bools)]
pub struct HypervisorCaps {
    /// An internal system checkpoint with an explicit device list and
    /// vmstate disk (QMP `snapshot-save`).
    pub snapshot_save: bool,
    /// Saving memory to a file (migration to a file).
    pub memory_to_file: bool,
    /// A background snapshot of memory (the guest never stops for the RAM
    /// copy; needs the `background-snapshot` migration capability and a
    /// memory backend that allows write protection).
    pub background_snapshot: bool,
    /// One atomic transaction across disks (QMP `transaction`).
    pub transaction: bool,
}

/// Everything the planner knows of the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainFacts {
    /// The domain's definition (the live one while it runs).
    pub domain: Domain,
    /// Its state.
    pub state: DomainState,
    /// It has a persistent definition (not transient).
    pub persistent: bool,
    /// Its guest agent.
    pub agent: AgentState,
    /// A managed save image exists (`virsh managedsave`).
    pub managed_save: bool,
    /// One entry per domain disk, in the definition's order.
    pub disks: Vec<DiskFacts>,
    /// What the hypervisor can do.
    pub hypervisor: HypervisorCaps,
}

impl DomainFacts {
    /// Facts for a shut-off domain whose disks are as given, the
    /// hypervisor unused.
    #[must_use]
    pub fn offline(domain: Domain, disks: Vec<DiskFacts>) -> Self {
        Self {
            domain,
            state: DomainState::Shutoff,
            persistent: true,
            agent: AgentState::NotConfigured,
            managed_save: false,
            disks,
            hypervisor: HypervisorCaps::default(),
        }
    }

    /// The facts of the disk whose target is `target`.
    #[must_use]
    pub fn disk(&self, target: &str) -> Option<&DiskFacts> {
        let i = self
            .domain
            .def
            .disks
            .iter()
            .position(|d| d.target == target)?;
        self.disks.get(i)
    }

    /// The domain's name, for messages.
    #[must_use]
    pub fn name(&self) -> &str {
        self.domain.def.name.as_deref().unwrap_or("(unnamed)")
    }

    /// A [`SourceProbe`] answering from these facts (no filesystem).
    pub(crate) fn probe(&self) -> FactsProbe {
        let files = self
            .domain
            .def
            .disks
            .iter()
            .zip(&self.disks)
            .filter(|(_, f)| f.regular_file)
            .filter_map(|(d, _)| d.source.local_path().map(str::to_string))
            .collect();
        FactsProbe { files }
    }
}

/// Answers "is this a regular file" from the disk facts.
pub(crate) struct FactsProbe {
    files: HashSet<String>,
}

impl SourceProbe for FactsProbe {
    fn is_regular_file(&self, path: &str) -> bool {
        self.files.contains(path)
    }
}
