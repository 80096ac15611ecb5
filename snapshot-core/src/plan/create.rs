//! `plan_create`: a `<domainsnapshot>` request and its flags become the
//! steps that take the snapshot, or a refusal.
//!
//! The seed's combination table (domain x memory x disks x disk-only) is
//! decided in three moves:
//!
//! 1. **What is saved.** Shut off: no memory; disks default to internal
//!    (external with DISK_ONLY). Running: DISK_ONLY or `<memory
//!    snapshot='no'>` make a disk-only snapshot (state `disk-snapshot`,
//!    disks default to external; libvirt 10.7 wants DISK_ONLY for the
//!    latter and refuses rows 14/17 without it, the 2012 table took them).
//!    Internal or external memory default the disks to the same mode.
//!    Memory left out follows the disks (row 9, which libvirt refuses):
//!    when the request lists disks and they are external or `no` but none
//!    internal, the snapshot is disk-only; otherwise memory is internal.
//! 2. **Each disk by its own mechanism.** Alignment gives every disk a
//!    mode, the domain's `snapshot=` defaults honoured and modes mixed
//!    freely. Shut off, the disk's storage driver takes it: internal where
//!    the storage can, else a full copy (raw disks: the storage keeps the
//!    snapshot, the disk its path); external as a new overlay that becomes
//!    the disk's source. Running, the hypervisor takes qcow2 disks
//!    (internal ones inside the memory checkpoint or with
//!    `blockdev-snapshot-internal-sync`, rows 13/16/20; external ones in
//!    one transaction), other storage drivers take theirs while the guest
//!    is paused (row 24 and every mix).
//! 3. **One consistency point.** Memory and every disk are captured while
//!    the guest is paused (or, LIVE, at the migration's switchover; or,
//!    with a background snapshot, at its start); QUIESCE freezes the
//!    guest's filesystems around it; the guest resumes (or HALT stops it,
//!    or `manual` disks leave it paused) before the metadata is written.

use bitflags::bitflags;
use snapshot_conf::{
    AlignParams, CookieDisk, DiskSource, DomainSnapshotDef, EmbeddedDomain,
    SnapshotMode as XmlMode, SnapshotState, SourceKind, StorageFormat, VirtsnapCookie,
};

use super::error::PlanError;
use super::facts::{AgentState, DomainFacts, DomainState, cannot, driver_for};
use super::step::{
    DiskAction, DiskStep, MemorySave, Performer, Plan, PlanKind, SourceChange, Step,
};

bitflags! {
    /// libvirt's `virDomainSnapshotCreateFlags`, same bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct CreateFlags: u32 {
        /// Redefine metadata instead of taking a snapshot.
        const REDEFINE = 1 << 0;
        /// With REDEFINE: make it current.
        const CURRENT = 1 << 1;
        /// Take the snapshot, keep no metadata.
        const NO_METADATA = 1 << 2;
        /// Stop the domain afterwards.
        const HALT = 1 << 3;
        /// Disks only, no memory.
        const DISK_ONLY = 1 << 4;
        /// External targets exist already; use them as they are.
        const REUSE_EXT = 1 << 5;
        /// Freeze the guest's filesystems around the snapshot.
        const QUIESCE = 1 << 6;
        /// All disks or none.
        const ATOMIC = 1 << 7;
        /// Do not pause the guest while saving memory.
        const LIVE = 1 << 8;
        /// Validate the XML against the schema (done by the parser).
        const VALIDATE = 1 << 9;
    }
}

/// A snapshot request: the parsed, not yet aligned `<domainsnapshot>`
/// (its name already defaulted) and the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// The definition asked for.
    pub def: DomainSnapshotDef,
    /// The flags.
    pub flags: CreateFlags,
}

/// What is saved of memory.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Memory {
    No,
    Internal,
    External(String),
}

/// libvirt's flag rules (`virDomainSnapshotCreateXML`, qemu driver).
fn check_flags(flags: CreateFlags) -> Result<(), PlanError> {
    let has = |f| flags.contains(f);
    if has(CreateFlags::CURRENT) && !has(CreateFlags::REDEFINE) {
        return Err(PlanError::FlagRequired {
            required: "REDEFINE",
            by: "CURRENT",
        });
    }
    for (other, name) in [
        (CreateFlags::NO_METADATA, "NO_METADATA"),
        (CreateFlags::HALT, "HALT"),
        (CreateFlags::LIVE, "LIVE"),
    ] {
        if has(CreateFlags::REDEFINE) && has(other) {
            return Err(PlanError::FlagsExclusive {
                first: "REDEFINE",
                second: name,
            });
        }
    }
    if has(CreateFlags::QUIESCE) && !has(CreateFlags::DISK_ONLY) {
        return Err(PlanError::FlagRequired {
            required: "DISK_ONLY",
            by: "QUIESCE",
        });
    }
    Ok(())
}

/// Plans a snapshot of `facts`' domain.
///
/// # Errors
/// A flag rule, a request that makes no sense ([`PlanError::Invalid`]:
/// memory of a shut-off domain, nothing selected, ...), disks that do not
/// fit the domain ([`PlanError::Conf`]), or something the storage or
/// hypervisor cannot do ([`PlanError::Unsupported`]).
pub fn plan_create(request: &CreateRequest, facts: &DomainFacts) -> Result<Plan, PlanError> {
    let flags = request.flags;
    check_flags(flags)?;
    let Some(name) = request.def.name.clone() else {
        return Err(PlanError::invalid(
            "the snapshot has no name",
            "give it a <name> (the command line defaults it to the creation time)",
        ));
    };
    if facts.disks.len() != facts.domain.def.disks.len() {
        return Err(PlanError::invalid(
            format!(
                "facts describe {} disks but domain '{}' has {}",
                facts.disks.len(),
                facts.name(),
                facts.domain.def.disks.len()
            ),
            "gather one DiskFacts per domain disk, in the definition's order",
        ));
    }
    if flags.contains(CreateFlags::REDEFINE) {
        return plan_redefine(request, facts, name);
    }
    Creation::new(request, facts, name)?.plan()
}

fn plan_redefine(
    request: &CreateRequest,
    facts: &DomainFacts,
    name: String,
) -> Result<Plan, PlanError> {
    let Some(state) = request.def.state else {
        return Err(PlanError::invalid(
            format!("redefining snapshot '{name}' needs its <state>"),
            "give the <state> it was taken in (the XML snapshot-dumpxml printed has it)",
        ));
    };
    if request.flags.contains(CreateFlags::DISK_ONLY) && state != SnapshotState::DiskSnapshot {
        return Err(PlanError::invalid(
            format!(
                "--disk-only needs redefined snapshot '{name}' to be in state disk-snapshot, not {state}"
            ),
            "drop --disk-only or correct <state>",
        ));
    }
    let mut steps = vec![Step::WriteMetadata { redefine: true }];
    if request.flags.contains(CreateFlags::CURRENT) {
        steps.push(Step::SetCurrent(name.clone()));
    }
    Ok(Plan {
        kind: PlanKind::Redefine,
        domain: facts.name().to_string(),
        snapshot: name,
        summary: format!("state {state}, metadata only"),
        steps,
        def: Some(request.def.clone()),
        notes: Vec::new(),
    })
}

/// The work of one [`plan_create`] call.
struct Creation<'a> {
    request: &'a CreateRequest,
    facts: &'a DomainFacts,
    name: String,
    active: bool,
    memory: Memory,
    state: SnapshotState,
    default_mode: XmlMode,
    notes: Vec<String>,
}

impl<'a> Creation<'a> {
    fn new(
        request: &'a CreateRequest,
        facts: &'a DomainFacts,
        name: String,
    ) -> Result<Self, PlanError> {
        let flags = request.flags;
        let def = &request.def;
        let domain = facts.name();
        if facts.state == DomainState::PmSuspended {
            return Err(PlanError::unsupported(
                format!(
                    "domain '{domain}' is suspended by its guest's power management, whose \
                     memory cannot be captured"
                ),
                "wake it (dompmwakeup) or shut it down first",
            ));
        }
        if flags.contains(CreateFlags::HALT) && !facts.persistent {
            return Err(PlanError::invalid(
                format!(
                    "cannot halt after a snapshot of transient domain '{domain}': it would \
                     disappear"
                ),
                "drop --halt",
            ));
        }
        let active = facts.state.is_active();
        let disk_only = flags.contains(CreateFlags::DISK_ONLY);
        let mut notes = Vec::new();
        match def.memory {
            Some(XmlMode::Manual) => {
                return Err(PlanError::invalid(
                    "'manual' is not a memory snapshot mode",
                    "use <memory snapshot='no'/>, 'internal' or 'external' with a file",
                ));
            }
            Some(XmlMode::Internal | XmlMode::External) if !active => {
                return Err(PlanError::invalid(
                    format!(
                        "memory state cannot be saved: domain '{domain}' is {}, it has no memory",
                        facts.state.as_str()
                    ),
                    "drop <memory> or use <memory snapshot='no'/>",
                ));
            }
            Some(XmlMode::Internal | XmlMode::External) if disk_only => {
                return Err(PlanError::invalid(
                    "memory state cannot be saved with a disk-only snapshot (--disk-only)",
                    "drop --disk-only to save memory, or drop <memory>",
                ));
            }
            _ => {}
        }
        if def.memory == Some(XmlMode::External) && def.memory_file.is_none() {
            return Err(PlanError::invalid(
                "an external memory snapshot needs a file",
                "give <memory snapshot='external' file='/absolute/path'/>",
            ));
        }
        let running_state = facts.state.snapshot_state();
        let (memory, default_mode, state) = if !active {
            let mode = if disk_only {
                XmlMode::External
            } else {
                XmlMode::Internal
            };
            (Memory::No, mode, SnapshotState::Shutoff)
        } else if disk_only {
            (Memory::No, XmlMode::External, SnapshotState::DiskSnapshot)
        } else {
            match def.memory {
                Some(XmlMode::No) => {
                    notes.push(
                        "<memory snapshot='no'> on a running domain: a disk-only snapshot, as \
                         with --disk-only"
                            .to_string(),
                    );
                    (Memory::No, XmlMode::External, SnapshotState::DiskSnapshot)
                }
                Some(XmlMode::External) => (
                    Memory::External(def.memory_file.clone().unwrap_or_default()),
                    XmlMode::External,
                    running_state,
                ),
                Some(XmlMode::Internal) => (Memory::Internal, XmlMode::Internal, running_state),
                _ => {
                    let listed = |m| def.disks.iter().any(|d| d.mode == Some(m));
                    if listed(XmlMode::External) && !listed(XmlMode::Internal) {
                        notes.push(
                            "memory left out and only external disks listed: a disk-only \
                             snapshot (give <memory snapshot='internal'/> or 'external' to save \
                             memory too)"
                                .to_string(),
                        );
                        (Memory::No, XmlMode::External, SnapshotState::DiskSnapshot)
                    } else {
                        (Memory::Internal, XmlMode::Internal, running_state)
                    }
                }
            }
        };
        if flags.contains(CreateFlags::LIVE) && !(active && matches!(memory, Memory::External(_))) {
            return Err(PlanError::invalid(
                "--live only applies to a running domain whose memory is saved to a file",
                "give <memory snapshot='external' file='...'/> (--memspec), or drop --live",
            ));
        }
        Ok(Self {
            request,
            facts,
            name,
            active,
            memory,
            state,
            default_mode,
            notes,
        })
    }

    fn check_quiesce(&self, manual: &[String]) -> Result<(), PlanError> {
        if !self.request.flags.contains(CreateFlags::QUIESCE) {
            return Ok(());
        }
        let domain = self.facts.name();
        if !self.active {
            return Err(PlanError::invalid(
                format!("--quiesce needs a running guest; domain '{domain}' is shut off"),
                "drop --quiesce: a shut-off domain's disks are consistent already",
            ));
        }
        if self.facts.state == DomainState::Paused {
            return Err(PlanError::invalid(
                format!("domain '{domain}' is paused: its guest agent cannot freeze filesystems"),
                "resume it first, or drop --quiesce",
            ));
        }
        if !manual.is_empty() {
            return Err(PlanError::invalid(
                format!(
                    "--quiesce with snapshot='manual' disks ({}): the guest stays paused, so \
                     its filesystems could not be thawed",
                    manual.join(", ")
                ),
                "drop --quiesce, or give those disks another mode",
            ));
        }
        match self.facts.agent {
            AgentState::Connected => Ok(()),
            AgentState::NotConfigured => Err(PlanError::unsupported(
                format!(
                    "domain '{domain}' has no guest agent channel, so its filesystems cannot be frozen"
                ),
                "add a qemu-guest-agent channel to the domain, or drop --quiesce",
            )),
            AgentState::Disconnected => Err(PlanError::unsupported(
                format!("the guest agent of domain '{domain}' does not answer"),
                "start qemu-guest-agent in the guest, or drop --quiesce",
            )),
        }
    }

    /// The aligned definition.
    fn aligned(&self) -> Result<DomainSnapshotDef, PlanError> {
        let mut def = self.request.def.clone();
        // A creation request's own <domain> means nothing: the domain is
        // the one at hand.
        def.domain = None;
        def.inactive_domain = None;
        def.name = Some(self.name.clone());
        let params = AlignParams {
            default_mode: self.default_mode,
            uniform_internal: false,
            force_default: false,
        };
        def.align_disks(Some(&self.facts.domain.def), params, &self.facts.probe())?;
        def.state = Some(self.state);
        def.memory = Some(match self.memory {
            Memory::No => XmlMode::No,
            Memory::Internal => XmlMode::Internal,
            Memory::External(_) => XmlMode::External,
        });
        def.memory_file = match &self.memory {
            Memory::External(f) => Some(f.clone()),
            _ => None,
        };
        def.domain = Some(EmbeddedDomain::Full(Box::new(self.facts.domain.clone())));
        Ok(def)
    }

    fn plan(mut self) -> Result<Plan, PlanError> {
        let flags = self.request.flags;
        let mut def = self.aligned()?;
        let domain = self.facts.name().to_string();
        let mut saved_with_memory = Vec::new(); // internal disks inside snapshot-save
        let mut vmstate = None;
        let mut transaction = Vec::new();
        let mut driver_steps = Vec::new();
        let mut manual = Vec::new();
        let mut changes = Vec::new();
        let mut internal_disks = 0usize;
        let mut modes = Vec::new();

        for ((sd, dd), df) in def
            .disks
            .iter()
            .zip(&self.facts.domain.def.disks)
            .zip(&self.facts.disks)
        {
            let mode = sd.mode.unwrap_or(XmlMode::No);
            modes.push(format!("{} {}", dd.target, mode));
            match mode {
                XmlMode::No => {
                    self.notes
                        .push(format!("{}: not snapshotted (snapshot='no')", dd.target));
                    continue;
                }
                XmlMode::Manual => {
                    manual.push(dd.target.clone());
                    continue;
                }
                XmlMode::Internal | XmlMode::External => {}
            }
            if dd.is_empty_drive() {
                return Err(PlanError::invalid(
                    format!("disk {} has no medium to snapshot", dd.target),
                    format!("give it <disk name='{}' snapshot='no'/>", dd.target),
                ));
            }
            if self.active && df.block_job {
                return Err(PlanError::invalid(
                    format!("disk {} already has an active block job", dd.target),
                    "wait for the job to finish or cancel it (blockjob --abort)",
                ));
            }
            let image = source_label(&dd.source);
            let fmt = dd.driver_type.as_deref().unwrap_or("unknown format");
            if mode == XmlMode::Internal {
                internal_disks += 1;
                if !self.active {
                    let (kind, action) = if let Some(k) = driver_for(&df.offline, |c| c.internal) {
                        (k.to_string(), DiskAction::Internal)
                    } else if let Some(k) = driver_for(&df.offline, |c| c.copy) {
                        let target = format!("{image}.{}", self.name);
                        self.notes.push(format!(
                            "{}: {fmt} has no internal snapshots: the storage keeps a full copy at {target} and the disk keeps its path",
                            dd.target
                        ));
                        (k.to_string(), DiskAction::Copy { target })
                    } else {
                        return Err(PlanError::unsupported(
                            format!(
                                "disk {} ({image}, {fmt}) cannot keep an internal snapshot: {}",
                                dd.target,
                                cannot(&df.offline, "take an internal snapshot or a copy of it")
                            ),
                            format!(
                                "use <disk name='{}' snapshot='external'/> or snapshot='no'",
                                dd.target
                            ),
                        ));
                    };
                    driver_steps.push(DiskStep {
                        disk: dd.target.clone(),
                        image,
                        by: Performer::Driver(kind),
                        action,
                    });
                } else if df.live.internal || df.live.vmstate {
                    let step = DiskStep {
                        disk: dd.target.clone(),
                        image,
                        by: Performer::Hypervisor,
                        action: DiskAction::Internal,
                    };
                    if self.memory == Memory::Internal {
                        if vmstate.is_none() && df.live.vmstate {
                            vmstate = Some(dd.target.clone());
                        }
                        saved_with_memory.push(step.disk);
                    } else {
                        transaction.push(step);
                    }
                } else if let Some(kind) = driver_for(&df.in_use, |c| c.internal) {
                    driver_steps.push(DiskStep {
                        disk: dd.target.clone(),
                        image,
                        by: Performer::Driver(kind.to_string()),
                        action: DiskAction::Internal,
                    });
                } else {
                    return Err(PlanError::unsupported(
                        format!(
                            "disk {} ({image}, {fmt}) cannot keep an internal snapshot while domain '{domain}' runs",
                            dd.target
                        ),
                        format!(
                            "use <disk name='{}' snapshot='external'/>, or shut the domain off first",
                            dd.target
                        ),
                    ));
                }
                continue;
            }
            // External.
            let Some(target) = sd.source.local_path().map(str::to_string) else {
                return Err(PlanError::unsupported(
                    format!(
                        "the new image of disk {} is not a local file or device",
                        dd.target
                    ),
                    "give <source file='/absolute/path'/> for it",
                ));
            };
            let format = sd.format.unwrap_or(StorageFormat::Qcow2);
            if format != StorageFormat::Qcow2 {
                return Err(PlanError::unsupported(
                    format!(
                        "an external snapshot of disk {} in format {format} is not supported",
                        dd.target
                    ),
                    "use qcow2 (<driver type='qcow2'/>, the default)",
                ));
            }
            let action = DiskAction::External {
                target: target.clone(),
                format,
                reuse: flags.contains(CreateFlags::REUSE_EXT),
            };
            changes.push(SourceChange {
                disk: dd.target.clone(),
                from: image.clone(),
                to: target,
            });
            if !self.active {
                let Some(kind) = driver_for(&df.offline, |c| c.overlay).map(str::to_string) else {
                    return Err(PlanError::unsupported(
                        format!(
                            "disk {} ({image}, {fmt}) cannot get an external overlay: {}",
                            dd.target,
                            cannot(&df.offline, "put one on it")
                        ),
                        format!(
                            "use <disk name='{}' snapshot='internal'/> (a copy where the format has no internal snapshots) or snapshot='no'",
                            dd.target
                        ),
                    ));
                };
                driver_steps.push(DiskStep {
                    disk: dd.target.clone(),
                    image,
                    by: Performer::Driver(kind),
                    action,
                });
            } else if df.live.external {
                transaction.push(DiskStep {
                    disk: dd.target.clone(),
                    image,
                    by: Performer::Hypervisor,
                    action,
                });
            } else {
                return Err(PlanError::unsupported(
                    format!(
                        "disk {} ({image}) cannot get an overlay while domain '{domain}' runs",
                        dd.target
                    ),
                    format!(
                        "use <disk name='{}' snapshot='no'/>, or shut the domain off first",
                        dd.target
                    ),
                ));
            }
        }

        let selected = !saved_with_memory.is_empty()
            || !transaction.is_empty()
            || !driver_steps.is_empty()
            || !manual.is_empty();
        if self.memory == Memory::No && !selected {
            return Err(PlanError::invalid(
                format!(
                    "nothing selected for snapshot: every disk of domain '{domain}' has snapshot='no' and no memory is saved"
                ),
                "select a disk (<disk name='vda' snapshot='internal'/>, or --diskspec vda,snapshot=external)",
            ));
        }
        self.check_quiesce(&manual)?;
        if !transaction.is_empty() && !self.facts.hypervisor.transaction {
            return Err(PlanError::unsupported(
                "the hypervisor cannot snapshot disks of a running domain in a transaction",
                "shut the domain off and snapshot it offline",
            ));
        }
        let memory_step = match &self.memory {
            Memory::No => None,
            Memory::Internal => {
                if !self.facts.hypervisor.snapshot_save {
                    return Err(PlanError::unsupported(
                        "the hypervisor cannot take an internal system checkpoint (snapshot-save needs QEMU 6.0)",
                        "save memory to a file (<memory snapshot='external' file='...'/>) or take a disk-only snapshot (--disk-only)",
                    ));
                }
                let Some(vmstate) = vmstate else {
                    if internal_disks == 0 {
                        return Err(PlanError::invalid(
                            format!(
                                "memory saved internally needs a disk snapshotted internally to hold it; no disk of domain '{domain}' is"
                            ),
                            "save memory to a file (<memory snapshot='external' file='...'/>), or give a qcow2 disk snapshot='internal'",
                        ));
                    }
                    return Err(PlanError::unsupported(
                        format!(
                            "none of the internal disks of domain '{domain}' can hold the memory state (a qcow2 image opened by the hypervisor is needed)"
                        ),
                        "save memory to a file (<memory snapshot='external' file='...'/>)",
                    ));
                };
                Some(Step::SaveMemoryInternal {
                    vmstate,
                    disks: saved_with_memory.clone(),
                })
            }
            Memory::External(file) => {
                if !self.facts.hypervisor.memory_to_file {
                    return Err(PlanError::unsupported(
                        "the hypervisor cannot save memory to a file",
                        "take an internal checkpoint (<memory snapshot='internal'/>) or a disk-only snapshot",
                    ));
                }
                // A background save resumes the guest as soon as it has
                // started: only for a running guest with nothing left to
                // do while it stands still.
                let how = if !flags.contains(CreateFlags::LIVE) {
                    MemorySave::Paused
                } else if self.facts.hypervisor.background_snapshot
                    && self.facts.state == DomainState::Running
                    && manual.is_empty()
                {
                    MemorySave::Background
                } else {
                    MemorySave::Live
                };
                Some(Step::SaveMemory {
                    file: file.clone(),
                    how,
                })
            }
        };

        let mut steps = Vec::new();
        if self.active {
            let cpus_running = self.facts.state != DomainState::Paused;
            let live_save = matches!(
                memory_step,
                Some(Step::SaveMemory {
                    how: MemorySave::Live,
                    ..
                })
            );
            // The guest must stand still for memory, for disks not taken
            // in one hypervisor transaction, and for manual disks.
            let needs_pause = (memory_step.is_some() && !live_save)
                || !driver_steps.is_empty()
                || !manual.is_empty();
            if flags.contains(CreateFlags::QUIESCE) {
                steps.push(Step::Freeze);
            }
            if cpus_running && needs_pause {
                steps.push(Step::Pause);
            }
            let background = matches!(
                memory_step,
                Some(Step::SaveMemory {
                    how: MemorySave::Background,
                    ..
                })
            );
            // Memory and disks are taken at one pause. A live save pauses
            // at its end (switchover), so the disks follow it; a
            // background save captures the guest at its start and lets it
            // run at once, so the disks go first.
            if !background {
                steps.extend(memory_step.clone());
            }
            if !transaction.is_empty() {
                steps.push(Step::DiskTransaction(transaction));
            }
            steps.extend(driver_steps.into_iter().map(Step::DiskSnapshot));
            if background {
                steps.extend(memory_step);
            }
            if !changes.is_empty() {
                steps.push(Step::UpdateDomain(changes));
            }
            let stopped = cpus_running && (needs_pause || live_save);
            if flags.contains(CreateFlags::HALT) {
                steps.push(Step::Halt);
                if !manual.is_empty() {
                    self.notes.push(format!(
                        "--halt: the domain is stopped, so {} can be snapshotted out of band",
                        manual.join(", ")
                    ));
                }
            } else {
                if !manual.is_empty() {
                    steps.push(Step::LeavePaused(manual.clone()));
                } else if stopped {
                    steps.push(Step::Resume);
                }
                if flags.contains(CreateFlags::QUIESCE) {
                    steps.push(Step::Thaw);
                }
            }
        } else {
            steps.extend(driver_steps.into_iter().map(Step::DiskSnapshot));
            if !changes.is_empty() {
                steps.push(Step::UpdateDomain(changes));
            }
            for m in &manual {
                self.notes.push(format!(
                    "{m}: snapshot='manual': snapshot its storage yourself; nothing is done to it"
                ));
            }
            if flags.contains(CreateFlags::HALT) {
                self.notes.push(format!(
                    "--halt: domain '{domain}' is shut off already; nothing to stop"
                ));
            }
        }
        if flags.contains(CreateFlags::NO_METADATA) {
            self.notes
                .push("--no-metadata: the snapshot is taken but not remembered".to_string());
        } else {
            steps.push(Step::WriteMetadata { redefine: false });
            steps.push(Step::SetCurrent(self.name.clone()));
        }
        let memory_word = match &self.memory {
            Memory::No => "no memory".to_string(),
            Memory::Internal => "memory internal".to_string(),
            Memory::External(f) => format!("memory to {f}"),
        };
        let summary = format!(
            "domain {}, state {}, {memory_word}; disks: {}",
            self.facts.state.as_str(),
            self.state,
            modes.join(", ")
        );
        def.cookie = Some(record_disks(&steps)?);
        Ok(Plan {
            kind: PlanKind::Create,
            domain,
            snapshot: self.name,
            summary,
            steps,
            def: Some(def),
            notes: self.notes,
        })
    }
}

/// virtsnap's cookie for the snapshot: how each disk is taken, so a
/// revert or delete later uses the same mechanism.
fn record_disks(steps: &[Step]) -> Result<snapshot_conf::XmlSubtree, PlanError> {
    let mut cookie = VirtsnapCookie::default();
    for step in steps {
        let disks: Vec<&DiskStep> = match step {
            Step::DiskTransaction(d) => d.iter().collect(),
            Step::DiskSnapshot(d) => vec![d],
            Step::SaveMemoryInternal { disks, .. } => {
                cookie.disks.extend(disks.iter().map(|d| CookieDisk {
                    name: d.clone(),
                    driver: "hypervisor".into(),
                    mode: "internal".into(),
                    file: None,
                }));
                Vec::new()
            }
            _ => Vec::new(),
        };
        for d in disks {
            let (mode, file) = match &d.action {
                DiskAction::Internal => ("internal", None),
                DiskAction::Copy { target } => ("copy", Some(target.clone())),
                DiskAction::External { target, .. } => ("external", Some(target.clone())),
            };
            cookie.disks.push(CookieDisk {
                name: d.disk.clone(),
                driver: match &d.by {
                    Performer::Hypervisor => "hypervisor".into(),
                    Performer::Driver(k) => k.clone(),
                },
                mode: mode.into(),
                file,
            });
        }
    }
    Ok(cookie.to_subtree()?)
}

/// A source for messages and steps: its path, or `protocol:name`.
pub(crate) fn source_label(source: &DiskSource) -> String {
    if let Some(name) = source.volume_name() {
        return name;
    }
    match (source.kind, &source.protocol, &source.path) {
        (SourceKind::Network, Some(proto), Some(name)) => format!("{proto}:{name}"),
        (kind, _, Some(p)) => format!("{kind}:{p}"),
        (kind, _, None) => format!("({kind} source)"),
    }
}
