//! A [`Plan`]: typed steps in the order they run, how each is undone
//! ([`Undo`]), the aligned `<domainsnapshot>` to store, and the notes that
//! explain choices (the default taken for an open row of the seed table,
//! disks left out, ...). `Display` prints it as the numbered list
//! `--dry-run` shows.

use std::fmt;

use snapshot_conf::{DomainSnapshotDef, StorageFormat};

/// Who performs a disk step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Performer {
    /// The hypervisor, on the running domain (QMP).
    Hypervisor,
    /// The storage driver of that kind (`qcow2`, `file`, ...), on the
    /// image directly.
    Driver(String),
}

impl fmt::Display for Performer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hypervisor => f.write_str("by the hypervisor"),
            Self::Driver(kind) => write!(f, "by driver {kind}"),
        }
    }
}

/// What happens to one disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DiskAction {
    /// The image keeps the snapshot inside itself (qcow2 internal
    /// snapshot); on revert, the image goes back to it; on delete, it is
    /// dropped from the image.
    Internal,
    /// A new overlay at `target` (in `format`) on top of the current
    /// image becomes the disk's source; the current image is frozen as the
    /// snapshot. With `reuse`, `target` exists already and is used as it
    /// is (REUSE_EXT).
    External {
        /// The new overlay.
        target: String,
        /// Its format.
        format: StorageFormat,
        /// Use the existing file (REUSE_EXT).
        reuse: bool,
    },
    /// A full copy (or reflink) of the image at `target`: the storage
    /// keeps the snapshot while the disk keeps its path (an internal
    /// snapshot of a format that has none, such as raw).
    Copy {
        /// Where the copy goes.
        target: String,
    },
}

/// One disk's part of a step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiskStep {
    /// The disk's target (`vda`).
    pub disk: String,
    /// The image the step works on (the disk's current source, or for a
    /// revert or delete the image that holds the snapshot).
    pub image: String,
    /// Who does it.
    pub by: Performer,
    /// What is done.
    pub action: DiskAction,
}

impl fmt::Display for DiskStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.action {
            DiskAction::Internal => {
                write!(f, "{}: internal snapshot in {}", self.disk, self.image)?;
            }
            DiskAction::External {
                target,
                format,
                reuse,
            } => {
                let how = if *reuse { "existing" } else { "new" };
                write!(
                    f,
                    "{}: {how} {format} overlay {target} on {} becomes its source",
                    self.disk, self.image
                )?;
            }
            DiskAction::Copy { target } => {
                write!(f, "{}: copy of {} to {target}", self.disk, self.image)?;
            }
        }
        write!(f, " ({})", self.by)
    }
}

/// A disk whose source changes in the domain definition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceChange {
    /// The disk's target.
    pub disk: String,
    /// Its source before.
    pub from: String,
    /// Its source after.
    pub to: String,
}

/// How memory is saved to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemorySave {
    /// The guest is paused for the whole save.
    Paused,
    /// The guest runs while RAM is copied and pauses at switchover, where
    /// the disk steps that follow run (LIVE).
    Live,
    /// The guest pauses only while the save starts and the disk steps
    /// run; RAM is written afterwards with the guest running
    /// (`background-snapshot`; LIVE where the hypervisor can).
    Background,
}

/// The memory a domain starts with on revert.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemoryImage {
    /// An internal system checkpoint of this name, in the domain's
    /// images (QMP `snapshot-load`).
    Checkpoint(String),
    /// A memory file (incoming migration).
    File(String),
}

impl fmt::Display for MemoryImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Checkpoint(name) => write!(f, "internal checkpoint '{name}'"),
            Self::File(path) => f.write_str(path),
        }
    }
}

/// How a step is undone if a later one fails (or a crash interrupts the
/// plan), recorded before the step runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Undo {
    /// The step changes nothing that needs undoing (it restores).
    Nothing,
    /// Resume the guest.
    Resume,
    /// Thaw the guest's filesystems.
    Thaw,
    /// Remove the memory file written (or drop the internal checkpoint).
    RemoveMemory,
    /// Remove the disk snapshots made (overlays, internal snapshots,
    /// copies), through whoever made them.
    RemoveDiskSnapshots,
    /// Put the previous sources back in the domain definition.
    RestoreSources,
    /// Remove the snapshot's metadata.
    RemoveMetadata,
    /// Make the previous current snapshot current again.
    RestoreCurrent,
    /// The step cannot be taken back: once begun, a failure or crash is
    /// recovered by finishing what was planned (merges, deletions,
    /// stopping the domain).
    Finish,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// Freeze the guest's filesystems (guest agent).
    Freeze,
    /// Pause the guest's CPUs.
    Pause,
    /// Save memory and the listed disks as an internal system checkpoint,
    /// the memory inside `vmstate`'s image (QMP `snapshot-save`).
    SaveMemoryInternal {
        /// The disk whose image holds the memory.
        vmstate: String,
        /// The disks snapshotted with it (an explicit device list, so a
        /// subset works).
        disks: Vec<String>,
    },
    /// Save memory to `file`.
    SaveMemory {
        /// The file.
        file: String,
        /// Paused, live or background.
        how: MemorySave,
    },
    /// Snapshot these disks of the running domain in one atomic
    /// transaction.
    DiskTransaction(Vec<DiskStep>),
    /// Snapshot one disk through its storage driver.
    DiskSnapshot(DiskStep),
    /// Change disk sources in the domain definition (external snapshots:
    /// the new overlays become the sources).
    UpdateDomain(Vec<SourceChange>),
    /// Resume the guest's CPUs.
    Resume,
    /// Leave the guest paused so the user can snapshot these disks out of
    /// band (`snapshot='manual'`).
    LeavePaused(Vec<String>),
    /// Stop the domain after the snapshot (HALT).
    Halt,
    /// Thaw the guest's filesystems.
    Thaw,
    /// Write the snapshot's metadata (REDEFINE: replace or add a
    /// definition without touching storage).
    WriteMetadata {
        /// Redefinition.
        redefine: bool,
    },
    /// Make `name` the current snapshot.
    SetCurrent(String),
    /// Stop the running domain (a revert replaces its state).
    StopDomain,
    /// Discard the domain's managed save image (FORCE).
    DiscardManagedSave,
    /// Bring one disk back to the snapshot.
    RevertDisk(DiskStep),
    /// Replace the domain definition by the snapshot's.
    RestoreDefinition,
    /// Load internal checkpoint `name` into the running domain in place
    /// (QMP `snapshot-load`: memory and `disks` go back, the process
    /// stays), then leave the guest paused or running.
    LoadCheckpoint {
        /// The checkpoint.
        name: String,
        /// The disks it covers.
        disks: Vec<String>,
        /// Leave the CPUs paused afterwards.
        paused: bool,
    },
    /// Start the domain, loading the snapshot's memory when it has some.
    StartDomain {
        /// Leave the CPUs paused.
        paused: bool,
        /// Load this memory.
        memory: Option<MemoryImage>,
    },
    /// Delete an image nothing refers to any more (the discarded top
    /// layer of a revert).
    DiscardImage {
        /// The disk.
        disk: String,
        /// The image.
        path: String,
    },
    /// Drop a disk's internal snapshot or copy.
    DeleteDiskSnapshot(DiskStep),
    /// Merge `into` (the one image built on `image`) down into `image`,
    /// which then takes `into`'s path: `into`'s users keep their path and
    /// their data, the snapshot's state is gone.
    MergeImage {
        /// The disk.
        disk: String,
        /// The image that held the snapshot.
        image: String,
        /// The image built on it.
        into: String,
        /// Who merges.
        by: Performer,
    },
    /// Rebase the images built on `image` onto `onto` (its backing, or
    /// none: they become standalone), copying what they read from
    /// `image` into them; `image` is removed after.
    RebaseImages {
        /// The disk.
        disk: String,
        /// The image that held the snapshot.
        image: String,
        /// The images built on it.
        children: Vec<String>,
        /// Their new backing.
        onto: Option<String>,
        /// Who rebases.
        by: Performer,
    },
    /// Remove an image nothing depends on any more.
    RemoveImage {
        /// The disk.
        disk: String,
        /// The image.
        path: String,
    },
    /// Remove the snapshot's memory file.
    RemoveMemoryFile(String),
    /// Remove a snapshot's metadata; its children move to its parent.
    RemoveMetadata(String),
}

impl Step {
    /// How the step is undone.
    #[must_use]
    pub fn undo(&self) -> Undo {
        match self {
            Self::Freeze => Undo::Thaw,
            Self::Pause => Undo::Resume,
            Self::SaveMemoryInternal { .. } | Self::SaveMemory { .. } => Undo::RemoveMemory,
            Self::DiskTransaction(_) | Self::DiskSnapshot(_) => Undo::RemoveDiskSnapshots,
            Self::UpdateDomain(_) | Self::RestoreDefinition => Undo::RestoreSources,
            Self::Resume | Self::Thaw | Self::LeavePaused(_) => Undo::Nothing,
            Self::WriteMetadata { .. } => Undo::RemoveMetadata,
            Self::SetCurrent(_) => Undo::RestoreCurrent,
            Self::Halt
            | Self::StopDomain
            | Self::DiscardManagedSave
            | Self::RevertDisk(_)
            | Self::StartDomain { .. }
            | Self::LoadCheckpoint { .. }
            | Self::DiscardImage { .. }
            | Self::DeleteDiskSnapshot(_)
            | Self::MergeImage { .. }
            | Self::RebaseImages { .. }
            | Self::RemoveImage { .. }
            | Self::RemoveMemoryFile(_)
            | Self::RemoveMetadata(_) => Undo::Finish,
        }
    }

    /// Whether the step writes metadata (the snapshot's or the current
    /// pointer).
    #[must_use]
    pub fn is_metadata(&self) -> bool {
        matches!(
            self,
            Self::WriteMetadata { .. } | Self::SetCurrent(_) | Self::RemoveMetadata(_)
        )
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Freeze => f.write_str("freeze the guest's filesystems (guest agent)"),
            Self::Pause => f.write_str("pause the guest"),
            Self::SaveMemoryInternal { vmstate, disks } => write!(
                f,
                "save memory inside {vmstate}'s image with internal snapshots of {} (by the hypervisor, snapshot-save)",
                disks.join(", ")
            ),
            Self::SaveMemory { file, how } => {
                let how = match how {
                    MemorySave::Paused => "guest paused",
                    MemorySave::Live => "live: the guest runs until switchover",
                    MemorySave::Background => "background: the guest runs while RAM is written",
                };
                write!(f, "save memory to {file} ({how})")
            }
            Self::DiskTransaction(disks) => {
                f.write_str("in one transaction (by the hypervisor):")?;
                for d in disks {
                    write!(f, "\n       - {d}")?;
                }
                Ok(())
            }
            Self::DiskSnapshot(d) => write!(f, "{d}"),
            Self::UpdateDomain(changes) => {
                let each: Vec<String> = changes
                    .iter()
                    .map(|c| format!("{} now uses {} (was {})", c.disk, c.to, c.from))
                    .collect();
                write!(f, "domain definition: {}", each.join("; "))
            }
            Self::Resume => f.write_str("resume the guest"),
            Self::LeavePaused(disks) => write!(
                f,
                "leave the guest paused: snapshot {} yourself, then resume it",
                disks.join(", ")
            ),
            Self::Halt => f.write_str("stop the domain (--halt)"),
            Self::Thaw => f.write_str("thaw the guest's filesystems"),
            Self::WriteMetadata { redefine: false } => f.write_str("write the snapshot's metadata"),
            Self::WriteMetadata { redefine: true } => {
                f.write_str("write the redefined metadata (storage untouched)")
            }
            Self::SetCurrent(name) => write!(f, "make '{name}' the current snapshot"),
            Self::StopDomain => f.write_str("stop the domain (its current state is replaced)"),
            Self::DiscardManagedSave => f.write_str("discard the managed save image (--force)"),
            Self::RevertDisk(d) => match &d.action {
                DiskAction::Internal => write!(
                    f,
                    "{}: {} goes back to its internal snapshot ({})",
                    d.disk, d.image, d.by
                ),
                DiskAction::External { target, .. } => write!(
                    f,
                    "{}: new overlay {target} on {} becomes its source ({})",
                    d.disk, d.image, d.by
                ),
                DiskAction::Copy { target } => write!(
                    f,
                    "{}: {} gets the content of copy {target} back ({})",
                    d.disk, d.image, d.by
                ),
            },
            Self::RestoreDefinition => f.write_str("the domain definition becomes the snapshot's"),
            Self::LoadCheckpoint {
                name,
                disks,
                paused,
            } => write!(
                f,
                "load internal checkpoint '{name}' (memory, {}) into the running domain in place, then leave it {} (by the hypervisor, snapshot-load)",
                disks.join(", "),
                if *paused { "paused" } else { "running" }
            ),
            Self::StartDomain { paused, memory } => {
                f.write_str("start the domain")?;
                if let Some(m) = memory {
                    write!(f, " with the memory of {m}")?;
                }
                if *paused {
                    f.write_str(", paused")?;
                }
                Ok(())
            }
            Self::DiscardImage { disk, path } => write!(
                f,
                "{disk}: delete {path} (the discarded state: nothing refers to it)"
            ),
            Self::DeleteDiskSnapshot(d) => match &d.action {
                DiskAction::Copy { target } => {
                    write!(f, "{}: delete copy {target} ({})", d.disk, d.by)
                }
                _ => write!(
                    f,
                    "{}: drop the internal snapshot from {} ({})",
                    d.disk, d.image, d.by
                ),
            },
            Self::MergeImage {
                disk,
                image,
                into,
                by,
            } => write!(
                f,
                "{disk}: merge {into} down into {image}, which then takes the name {into} ({by}); data kept: everything {into} reads"
            ),
            Self::RebaseImages {
                disk,
                image,
                children,
                onto,
                by,
            } => {
                write!(f, "{disk}: rebase {} ", children.join(", "))?;
                match onto {
                    Some(o) => write!(f, "onto {o}")?,
                    None => f.write_str("to stand alone")?,
                }
                write!(
                    f,
                    ", copying what they read from {image} into them ({by}); then delete {image}"
                )
            }
            Self::RemoveImage { disk, path } => write!(f, "{disk}: delete {path}"),
            Self::RemoveMemoryFile(path) => write!(f, "delete the memory file {path}"),
            Self::RemoveMetadata(name) => write!(
                f,
                "remove the metadata of '{name}' (its children move to its parent)"
            ),
        }
    }
}

/// What a plan does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PlanKind {
    /// Take a snapshot.
    Create,
    /// Redefine a snapshot's metadata.
    Redefine,
    /// Revert to a snapshot.
    Revert,
    /// Delete snapshots.
    Delete,
}

/// The planner's answer: the steps, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What it does.
    pub kind: PlanKind,
    /// The domain.
    pub domain: String,
    /// The snapshot it is about.
    pub snapshot: String,
    /// A one-line summary (state, memory, disks).
    pub summary: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// For a create or redefine: the aligned definition to store.
    pub def: Option<DomainSnapshotDef>,
    /// Explanations: defaults chosen, disks left out, what is kept.
    pub notes: Vec<String>,
}

impl Plan {
    /// The disk steps of the plan, wherever they are (transactions
    /// included).
    pub fn disk_steps(&self) -> impl Iterator<Item = &DiskStep> {
        self.steps.iter().flat_map(|s| match s {
            Step::DiskTransaction(d) => d.iter().collect::<Vec<_>>(),
            Step::DiskSnapshot(d) | Step::RevertDisk(d) | Step::DeleteDiskSnapshot(d) => vec![d],
            _ => Vec::new(),
        })
    }

    /// Whether some step is `step`.
    #[must_use]
    pub fn has(&self, step: &Step) -> bool {
        self.steps.contains(step)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.kind {
            PlanKind::Create => "create snapshot",
            PlanKind::Redefine => "redefine snapshot",
            PlanKind::Revert => "revert to snapshot",
            PlanKind::Delete => "delete snapshot",
        };
        writeln!(
            f,
            "plan: {verb} '{}' of domain '{}': {}",
            self.snapshot, self.domain, self.summary
        )?;
        if self.steps.is_empty() {
            writeln!(f, "  (nothing to do)")?;
        }
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {:>2}. {step}", i + 1)?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}
