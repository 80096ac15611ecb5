//! `plan_revert`: going back to a snapshot (libvirt's
//! `virDomainRevertToSnapshot` with RUNNING / PAUSED / FORCE).
//!
//! A running domain is stopped first (its state is replaced, as in
//! libvirt since 7.10); every disk the snapshot covers then goes back by
//! its own mechanism, offline: an internal snapshot is applied inside its
//! image, a copy is copied back, and an external snapshot gets a new
//! overlay on the image it froze, which becomes the disk's source (the
//! image stays frozen, so other branches built on it keep their data).
//! The domain definition becomes the snapshot's; the domain starts again
//! when the snapshot holds memory (running or paused as it was, or as
//! RUNNING / PAUSED say) or when RUNNING / PAUSED ask for it. The top
//! image a revert leaves behind is deleted only when no snapshot needs it
//! (it then holds only what was written since the last snapshot: what a
//! revert discards).
//!
//! A running domain going back to an internal system checkpoint of the
//! images it runs on, under the same definition, is not stopped: the
//! hypervisor loads the checkpoint in place (`snapshot-load`), which takes
//! a fraction of a restart.
//!
//! Going back inside an image that later external snapshots built
//! overlays on would change their data: refused, with the way out.

use std::collections::HashSet;

use bitflags::bitflags;
use snapshot_conf::{
    DomainSnapshotDef, EmbeddedDomain, SnapshotMode as XmlMode, SnapshotState, StorageFormat,
    external_name,
};

use super::create::source_label;
use super::error::PlanError;
use super::facts::{DomainFacts, DomainState, cannot, driver_for, recorded};
use super::step::{
    DiskAction, DiskStep, MemoryImage, Performer, Plan, PlanKind, SourceChange, Step,
};

bitflags! {
    /// libvirt's `virDomainSnapshotRevertFlags`, same bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct RevertFlags: u32 {
        /// Run the domain afterwards.
        const RUNNING = 1 << 0;
        /// Leave it paused afterwards.
        const PAUSED = 1 << 1;
        /// Accept a risky revert.
        const FORCE = 1 << 2;
        /// Recreate NVRAM from its template when starting.
        const RESET_NVRAM = 1 << 3;
    }
}

/// A revert request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevertRequest {
    /// The stored definition of the snapshot to go back to.
    pub snapshot: DomainSnapshotDef,
    /// The flags.
    pub flags: RevertFlags,
    /// Seconds since the epoch: names the new overlays of external disks
    /// (`/img/vm.qcow2` → `/img/vm.<now>`, as libvirt names them).
    pub now: i64,
    /// Images some snapshot needs: images frozen by external snapshots
    /// and images holding internal snapshots (the `<domain>` sources of
    /// every snapshot).
    pub needed_images: HashSet<String>,
    /// Images other images are built on (backing files), as read from the
    /// images.
    pub backing_images: HashSet<String>,
}

/// Plans going back to `request.snapshot`.
///
/// # Errors
/// RUNNING with PAUSED, a risky revert without FORCE, a snapshot state
/// that cannot be reverted to, an internal snapshot inside an image other
/// images are built on, or memory the hypervisor cannot load.
#[allow(clippy::too_many_lines)]
pub fn plan_revert(request: &RevertRequest, facts: &DomainFacts) -> Result<Plan, PlanError> {
    let flags = request.flags;
    if flags.contains(RevertFlags::RUNNING | RevertFlags::PAUSED) {
        return Err(PlanError::FlagsExclusive {
            first: "RUNNING",
            second: "PAUSED",
        });
    }
    let snap = &request.snapshot;
    let domain_name = facts.name().to_string();
    let Some(name) = snap.name.clone() else {
        return Err(PlanError::invalid(
            "the snapshot has no name",
            "revert to a stored snapshot",
        ));
    };
    let Some(state) = snap.state else {
        return Err(PlanError::invalid(
            format!("snapshot '{name}' records no state"),
            "redefine it with its <state> (snapshot-edit)",
        ));
    };
    if state == SnapshotState::PmSuspended {
        return Err(PlanError::unsupported(
            format!(
                "snapshot '{name}' was taken while the guest was suspended by its power management, which cannot be restored"
            ),
            "revert to another snapshot",
        ));
    }
    let force = flags.contains(RevertFlags::FORCE);
    let mut notes = Vec::new();
    let snap_domain = match &snap.domain {
        Some(EmbeddedDomain::Full(d)) => &d.def,
        _ if force => {
            notes.push(format!(
                "snapshot '{name}' lacks its domain definition: the disks are reverted under the current one (--force)"
            ));
            &facts.domain.def
        }
        _ => {
            return Err(PlanError::Risky {
                reason: format!(
                    "snapshot '{name}' lacks the definition domain '{domain_name}' had when it was taken"
                ),
                consequence: "the disks are reverted under the current definition".into(),
            });
        }
    };
    let memory = match snap.memory {
        Some(XmlMode::Internal) if !state.is_offline() => {
            Some(MemoryImage::Checkpoint(name.clone()))
        }
        Some(XmlMode::External) if !state.is_offline() => {
            snap.memory_file.clone().map(MemoryImage::File)
        }
        _ => None,
    };
    if memory.is_none() && facts.managed_save && !force {
        return Err(PlanError::Risky {
            reason: format!(
                "domain '{domain_name}' has a managed save image, and snapshot '{name}' holds no memory to replace it"
            ),
            consequence: "the managed save image is discarded".into(),
        });
    }
    if let Some(m) = &memory {
        let can = if snap.memory == Some(XmlMode::Internal) {
            facts.hypervisor.snapshot_save
        } else {
            facts.hypervisor.memory_to_file
        };
        if !can {
            return Err(PlanError::unsupported(
                format!(
                    "snapshot '{name}' holds memory ({m}), which only a hypervisor that can load it brings back"
                ),
                "revert on a host whose hypervisor virtsnap can drive, or revert to a snapshot without memory",
            ));
        }
    }
    let start = if memory.is_some() {
        Some(
            !flags.contains(RevertFlags::RUNNING)
                && (state == SnapshotState::Paused || flags.contains(RevertFlags::PAUSED)),
        )
    } else if flags.intersects(RevertFlags::RUNNING | RevertFlags::PAUSED) {
        Some(flags.contains(RevertFlags::PAUSED))
    } else {
        None
    };
    if start.is_none() && !facts.persistent {
        return Err(PlanError::invalid(
            format!(
                "transient domain '{domain_name}' cannot be left shut off by reverting to offline snapshot '{name}'"
            ),
            "pass --running or --paused",
        ));
    }

    if let (Some(MemoryImage::Checkpoint(_)), Some(paused)) = (&memory, start)
        && let Some(disks) = in_place_disks(request, facts, snap_domain)
    {
        let steps = vec![
            Step::LoadCheckpoint {
                name: name.clone(),
                disks,
                paused,
            },
            Step::SetCurrent(name.clone()),
        ];
        return Ok(Plan {
            kind: PlanKind::Revert,
            domain: domain_name,
            snapshot: name,
            summary: format!(
                "snapshot state {state}; domain now {}, afterwards {}; loaded in place",
                facts.state.as_str(),
                if paused { "paused" } else { "running" }
            ),
            steps,
            def: None,
            notes,
        });
    }

    let mut steps = Vec::new();
    if facts.state.is_active() {
        steps.push(Step::StopDomain);
    }
    if facts.managed_save {
        steps.push(Step::DiscardManagedSave);
    }
    let mut changes = Vec::new();
    let mut discard = Vec::new();
    let aligned: Vec<_> = if snap.disks.is_empty() {
        // A snapshot without <disks> covered every disk by its state.
        snap_domain
            .disks
            .iter()
            .map(|d| (d, default_mode(snap, state)))
            .collect()
    } else {
        let mut found = Vec::new();
        for sd in &snap.disks {
            match snap_domain
                .disks
                .iter()
                .find(|d| d.target == sd.name || d.source.local_path() == Some(&sd.name))
            {
                Some(d) => found.push((d, sd.mode.unwrap_or(XmlMode::No))),
                None => notes.push(format!(
                    "{}: listed by the snapshot but not in its domain definition; left as it is",
                    sd.name
                )),
            }
        }
        found
    };
    let restores_definition = matches!(snap.domain, Some(EmbeddedDomain::Full(_)));
    for (dd, mode) in aligned {
        let target = dd.target.clone();
        let image = source_label(&dd.source);
        let current_df = facts.disk(&target);
        let current_source = facts
            .domain
            .def
            .disk_by_target(&target)
            .map(|d| source_label(&d.source));
        match mode {
            XmlMode::No | XmlMode::Manual => {
                notes.push(if mode == XmlMode::No {
                    format!("{target}: not in the snapshot; keeps its current content")
                } else {
                    format!(
                        "{target}: snapshotted out of band (manual); bring its storage back yourself"
                    )
                });
                // The restored definition names the image the disk had
                // then, which may since be merged away: the disk keeps
                // the one it has now.
                if restores_definition
                    && let Some(cur) = &current_source
                    && cur != &image
                {
                    changes.push(SourceChange {
                        disk: target.clone(),
                        from: image.clone(),
                        to: cur.clone(),
                    });
                }
                continue;
            }
            XmlMode::Internal | XmlMode::External => {}
        }
        let Some(df) = current_df else {
            return Err(PlanError::unsupported(
                format!(
                    "disk {target} of snapshot '{name}' is no longer in domain '{domain_name}', so its storage cannot be examined"
                ),
                "put the disk back in the domain definition (define), then revert",
            ));
        };
        if mode == XmlMode::Internal {
            if request.backing_images.contains(&image) {
                return Err(PlanError::unsupported(
                    format!(
                        "the internal snapshot of disk {target} lives in {image}, which later external snapshots built overlays on; going back inside it would change their data"
                    ),
                    format!(
                        "delete the external snapshots taken after '{name}' first, or revert to one of them"
                    ),
                ));
            }
            // The domain is stopped first: what the drivers can do offline.
            // As recorded when taken, else as the drivers see it now.
            let recorded = recorded(snap, &target, &df.offline);
            let (kind, action) = if let Some(r) = recorded.as_ref().filter(|r| r.mode == "copy") {
                (
                    r.driver.clone(),
                    DiskAction::Copy {
                        target: r.file.clone().unwrap_or_else(|| format!("{image}.{name}")),
                    },
                )
            } else if let Some(r) = recorded
                .as_ref()
                .filter(|r| r.mode == "internal" && r.driver != "hypervisor")
            {
                (r.driver.clone(), DiskAction::Internal)
            } else if let Some(k) = driver_for(&df.offline, |c| c.internal) {
                (k.to_string(), DiskAction::Internal)
            } else if let Some(k) = driver_for(&df.offline, |c| c.copy) {
                (
                    k.to_string(),
                    DiskAction::Copy {
                        target: format!("{image}.{name}"),
                    },
                )
            } else {
                return Err(PlanError::unsupported(
                    format!(
                        "disk {target} ({image}) cannot go back to an internal snapshot: {}",
                        cannot(&df.offline, "revert one")
                    ),
                    "revert it by hand, or delete the snapshot",
                ));
            };
            if let Some(cur) = &current_source
                && cur != &image
            {
                if !restores_definition {
                    // The restored definition names `image` already.
                    changes.push(SourceChange {
                        disk: target.clone(),
                        from: cur.clone(),
                        to: image.clone(),
                    });
                }
                if !request.needed_images.contains(cur) && !request.backing_images.contains(cur) {
                    discard.push((target.clone(), cur.clone()));
                }
            }
            steps.push(Step::RevertDisk(DiskStep {
                disk: target,
                image,
                by: Performer::Driver(kind),
                action,
            }));
            continue;
        }
        // External: a new overlay on the frozen image.
        let Some(kind) = driver_for(&df.offline, |c| c.overlay).map(str::to_string) else {
            return Err(PlanError::unsupported(
                format!(
                    "disk {target} cannot get a new overlay on {image}: {}",
                    cannot(&df.offline, "put one on it")
                ),
                "revert it by hand, or delete the snapshot",
            ));
        };
        let overlay = external_name(&image, &request.now.to_string());
        if let Some(cur) = &current_source {
            if !request.needed_images.contains(cur)
                && !request.backing_images.contains(cur)
                && cur != &image
            {
                discard.push((target.clone(), cur.clone()));
            } else if cur != &image {
                notes.push(format!(
                    "{target}: {cur} is kept: a snapshot or another image needs it"
                ));
            }
        }
        changes.push(SourceChange {
            disk: target.clone(),
            // Relative to the definition in force when the change applies.
            from: if restores_definition {
                image.clone()
            } else {
                current_source.unwrap_or_else(|| image.clone())
            },
            to: overlay.clone(),
        });
        steps.push(Step::RevertDisk(DiskStep {
            disk: target,
            image,
            by: Performer::Driver(kind),
            action: DiskAction::External {
                target: overlay,
                format: StorageFormat::Qcow2,
                reuse: false,
            },
        }));
    }
    for d in &facts.domain.def.disks {
        if snap_domain.disk_by_target(&d.target).is_none() {
            notes.push(format!(
                "{}: added after the snapshot; the snapshot's definition leaves it out (its image {} is kept)",
                d.target,
                source_label(&d.source)
            ));
        }
    }
    if restores_definition {
        steps.push(Step::RestoreDefinition);
        if !changes.is_empty() {
            steps.push(Step::UpdateDomain(changes));
        }
    } else if !changes.is_empty() {
        steps.push(Step::UpdateDomain(changes));
    }
    if let Some(paused) = start {
        steps.push(Step::StartDomain {
            paused,
            memory: memory.clone(),
        });
    }
    // Last: only once everything else has worked is the old state let go.
    for (disk, path) in discard {
        notes.push(format!(
            "{disk}: what was written since the last snapshot ({path}) is discarded"
        ));
        steps.push(Step::DiscardImage { disk, path });
    }
    steps.push(Step::SetCurrent(name.clone()));
    let after = match start {
        Some(true) => "paused",
        Some(false) => "running",
        None => "shut off",
    };
    Ok(Plan {
        kind: PlanKind::Revert,
        domain: domain_name,
        snapshot: name,
        summary: format!(
            "snapshot state {state}; domain now {}, afterwards {after}",
            facts.state.as_str()
        ),
        steps,
        def: None,
        notes,
    })
}

/// The disks of an internal checkpoint the running domain can load in
/// place: the domain runs, its definition is the one the snapshot
/// recorded, every disk the checkpoint covers still uses the image that
/// holds it and the hypervisor can snapshot it internally, and no later
/// external snapshot built on those images. `None` otherwise (the domain
/// is then stopped and started again).
fn in_place_disks(
    request: &RevertRequest,
    facts: &DomainFacts,
    snap_domain: &snapshot_conf::DomainDef,
) -> Option<Vec<String>> {
    let snap = &request.snapshot;
    if !facts.state.is_active() || !facts.hypervisor.snapshot_save {
        return None;
    }
    match &snap.domain {
        Some(EmbeddedDomain::Full(d)) if d.xml == facts.domain.xml => {}
        _ => return None,
    }
    let state = snap.state?;
    let mut disks = Vec::new();
    for d in &snap_domain.disks {
        let mode = if snap.disks.is_empty() {
            default_mode(snap, state)
        } else {
            snap.disks
                .iter()
                .find(|sd| sd.name == d.target)
                .and_then(|sd| sd.mode)
                .unwrap_or(XmlMode::No)
        };
        match mode {
            XmlMode::Internal => {
                let image = source_label(&d.source);
                let current = facts.domain.def.disk_by_target(&d.target)?;
                let live = facts.disk(&d.target)?.live;
                if source_label(&current.source) != image
                    || !live.internal
                    || request.backing_images.contains(&image)
                {
                    return None;
                }
                disks.push(d.target.clone());
            }
            XmlMode::No => {}
            XmlMode::External | XmlMode::Manual => return None,
        }
    }
    (!disks.is_empty()).then_some(disks)
}

/// The mode of a disk a snapshot without `<disks>` covered.
fn default_mode(snap: &DomainSnapshotDef, state: SnapshotState) -> XmlMode {
    if snap.is_external() || state == SnapshotState::DiskSnapshot {
        XmlMode::External
    } else {
        XmlMode::Internal
    }
}

/// The domain state a reverted domain ends in, for callers that report it.
#[must_use]
pub fn state_after(plan: &Plan) -> DomainState {
    match plan.steps.iter().rev().find_map(|s| match s {
        Step::StartDomain { paused, .. } | Step::LoadCheckpoint { paused, .. } => Some(*paused),
        _ => None,
    }) {
        Some(true) => DomainState::Paused,
        Some(false) => DomainState::Running,
        None => DomainState::Shutoff,
    }
}
