//! The executor: runs a create [`Plan`]'s steps against the storage
//! drivers ([`VolumeDriver`]) and the [`Hypervisor`], with undo.
//!
//! Before each step with a side effect, the executor records how to undo
//! it in the owner's intent ([`crate::store::intent`]), durably; then it
//! runs the step. When a step fails, the steps done are undone in reverse
//! order and the first error is returned with its step and disk; nothing
//! is left behind. When the process dies mid-plan, the intent stays and
//! [`recover_create`] rolls the snapshot back on the next open (or, when
//! its metadata was written already, only clears the record: the
//! snapshot is complete).
//!
//! Before anything changes, the targets are checked (no internal snapshot
//! of that name in the images, no file where a copy or overlay goes), so
//! everything an undo removes is the executor's own.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use snapshot_conf::{DiskChange, Domain, DomainSnapshotDef};

use crate::driver::{
    CreatedSnapshot, DriverError, RevertOutcome, SnapshotMode, SnapshotPlan, Volume, VolumeDriver,
    VolumeFormat,
};
use crate::plan::{DiskAction, DiskStep, MemoryImage, Performer, Plan, Step};
use crate::store::domains::{self, DomainError};
use crate::store::intent::StorageDone;
use crate::store::{Intent, Layout, MetadataStore, Recovery, SnapshotRecord, StoreError};

/// The intent operation of a domain snapshot create.
pub const OP_DOMAIN_CREATE: &str = "domain-snapshot-create";

pub use crate::hypervisor::{Hypervisor, HypervisorError};

/// Where a step is in its run, for observers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEvent {
    /// About to run (its undo is recorded).
    Begin,
    /// Done.
    Done,
}

/// Told of each step as it runs: its index in the plan, the step, and
/// whether it begins or is done (progress output, tests).
pub type Observer = dyn Fn(usize, &Step, StepEvent) + Send + Sync;

/// What became of the steps done before a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undone {
    /// Everything done before was undone (or nothing was done).
    All,
    /// Undoing failed too: the operation stays recorded and is rolled
    /// back when the domain's snapshots are next opened for a change.
    Failed(String),
    /// A revert or delete, which cannot be taken back: the steps done
    /// stay done, and the operation stays recorded to be finished when
    /// the domain's snapshots are next opened for a change.
    Pending,
}

impl fmt::Display for Undone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("nothing was left changed"),
            Self::Failed(e) => write!(
                f,
                "undoing failed too ({e}); the operation stays recorded and is rolled back the \
                 next time the domain's snapshots are changed (snapshot-recover --discard \
                 forgets it instead)"
            ),
            Self::Pending => f.write_str(
                "the steps before it stay done; the operation stays recorded and is finished \
                 the next time the domain's snapshots are changed, once the cause is fixed \
                 (snapshot-recover --discard forgets it instead)",
            ),
        }
    }
}

/// Why a plan could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// A step failed.
    #[error("step {index} ({step}){} failed: {source}; {undone}", disk.as_ref().map(|d| format!(" on disk {d}")).unwrap_or_default())]
    Step {
        /// Its number (from 1).
        index: usize,
        /// What it was.
        step: String,
        /// The disk, for disk steps.
        disk: Option<String>,
        /// The cause.
        #[source]
        source: HypervisorError,
        /// What became of the steps done before.
        undone: Undone,
    },
    /// Something a step would create exists already; nothing was changed.
    #[error("{0}; nothing was changed")]
    Conflict(String),
    /// A step needs the hypervisor and there is none.
    #[error(
        "step '{0}' needs a hypervisor to run or start the domain, and none is connected; \
         nothing was changed (shut-off domains only so far: revert without --running or \
         --paused)"
    )]
    NoHypervisor(String),
    /// A step names a driver that is not registered.
    #[error(
        "no storage driver '{0}' is registered; nothing was changed (use a build or plugin \
         with that driver, or delete the snapshot's metadata only with --metadata)"
    )]
    NoDriver(String),
    /// The metadata store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The domain definition.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The record of an interrupted create cannot be read.
    #[error("the record of the interrupted snapshot of domain '{domain}' cannot be read: {reason}")]
    BadRecord {
        /// The domain.
        domain: String,
        /// Why.
        reason: String,
    },
}

/// How to undo one step that ran (or may have run).
#[derive(Debug, Clone, PartialEq, Eq)]
enum UndoRecord {
    /// Drop internal snapshot `name` from `image` with `driver`.
    Internal {
        driver: String,
        image: String,
        format: String,
        name: String,
    },
    /// Remove the copy at `target` made from `image` by `driver`.
    Copy {
        driver: String,
        image: String,
        format: String,
        target: String,
    },
    /// Remove the overlay file `target` (not when reused).
    Overlay {
        target: String,
    },
    /// Put the domain definition back.
    Domain {
        xml: String,
    },
    /// Hypervisor steps.
    Resume,
    Thaw,
    MemoryInternal {
        name: String,
        disks: Vec<String>,
    },
    /// The memory file; with `resume`, the save paused the guest itself
    /// (live: at switchover) and undoing it resumes the guest.
    MemoryFile {
        file: String,
        resume: bool,
    },
    Transaction {
        name: String,
        disks: Vec<DiskStep>,
    },
}

/// Escapes a field for the one-record-per-line payload.
fn esc(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\t', "%09")
        .replace('\n', "%0A")
        .replace('\r', "%0D")
}

fn unesc(s: &str) -> String {
    s.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%09", "\t")
        .replace("%25", "%")
}

impl UndoRecord {
    fn encode(&self) -> String {
        let fields: Vec<String> = match self {
            Self::Internal {
                driver,
                image,
                format,
                name,
            } => vec![
                "internal".into(),
                esc(driver),
                esc(image),
                esc(format),
                esc(name),
            ],
            Self::Copy {
                driver,
                image,
                format,
                target,
            } => vec![
                "copy".into(),
                esc(driver),
                esc(image),
                esc(format),
                esc(target),
            ],
            Self::Overlay { target } => vec!["overlay".into(), esc(target)],
            Self::Domain { xml } => vec!["domain".into(), esc(xml)],
            Self::Resume => vec!["resume".into()],
            Self::Thaw => vec!["thaw".into()],
            Self::MemoryInternal { name, disks } => {
                let mut v = vec!["memory-internal".to_string(), esc(name)];
                v.extend(disks.iter().map(|d| esc(d)));
                v
            }
            Self::MemoryFile { file, resume } => {
                let mut v = vec!["memory-file".into(), esc(file)];
                if *resume {
                    v.push("resume".into());
                }
                v
            }
            Self::Transaction { name, disks } => {
                let mut v = vec!["transaction".to_string(), esc(name)];
                v.extend(disks.iter().flat_map(disk_step_fields));
                v
            }
        };
        fields.join("\t")
    }

    fn decode(line: &str) -> Option<Self> {
        let f: Vec<String> = line.split('\t').map(unesc).collect();
        let get = |i: usize| f.get(i).cloned();
        Some(match f.first()?.as_str() {
            "internal" => Self::Internal {
                driver: get(1)?,
                image: get(2)?,
                format: get(3)?,
                name: get(4)?,
            },
            "copy" => Self::Copy {
                driver: get(1)?,
                image: get(2)?,
                format: get(3)?,
                target: get(4)?,
            },
            "overlay" => Self::Overlay { target: get(1)? },
            "domain" => Self::Domain { xml: get(1)? },
            "resume" => Self::Resume,
            "thaw" => Self::Thaw,
            "memory-internal" => Self::MemoryInternal {
                name: get(1)?,
                disks: f.get(2..)?.to_vec(),
            },
            "memory-file" => Self::MemoryFile {
                file: get(1)?,
                resume: f.get(2).is_some_and(|r| r == "resume"),
            },
            "transaction" => {
                let name = get(1)?;
                let disks = f
                    .get(2..)?
                    .chunks(5)
                    .map(disk_step_from)
                    .collect::<Option<Vec<_>>>()?;
                Self::Transaction { name, disks }
            }
            _ => return None,
        })
    }
}

/// The intent payload: the snapshot's name, then one undo record per
/// line, in the order the steps ran.
fn payload(name: &str, records: &[UndoRecord]) -> String {
    let mut out = format!("{}\n", esc(name));
    for r in records {
        out.push_str(&r.encode());
        out.push('\n');
    }
    out
}

fn parse_payload(text: &str) -> Option<(String, Vec<UndoRecord>)> {
    let mut lines = text.lines();
    let name = unesc(lines.next()?);
    let records = lines
        .filter(|l| !l.is_empty())
        .map(UndoRecord::decode)
        .collect::<Option<Vec<_>>>()?;
    Some((name, records))
}

/// What the executor works with.
#[derive(Clone, Copy)]
pub struct Executor<'a> {
    /// The state directory (domain definitions).
    pub layout: &'a Layout,
    /// The storage drivers, by kind.
    pub drivers: &'a [Arc<dyn VolumeDriver>],
    /// The hypervisor running the domain, if it runs.
    pub hypervisor: Option<&'a dyn Hypervisor>,
    /// Told of each step.
    pub observer: Option<&'a Observer>,
}

impl fmt::Debug for Executor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("layout", &self.layout)
            .field(
                "drivers",
                &self.drivers.iter().map(|d| d.kind()).collect::<Vec<_>>(),
            )
            .field("hypervisor", &self.hypervisor.is_some())
            .finish_non_exhaustive()
    }
}

fn driver_by_kind<'d>(
    drivers: &'d [Arc<dyn VolumeDriver>],
    kind: &str,
) -> Result<&'d Arc<dyn VolumeDriver>, ExecError> {
    drivers
        .iter()
        .find(|d| d.kind() == kind)
        .ok_or_else(|| ExecError::NoDriver(kind.to_string()))
}

/// The volume of a disk's image: its path and its format, as the domain
/// gives it when the image is the disk's current source, else (an image
/// a snapshot froze, which may be of another format: a raw disk under a
/// qcow2 overlay) as read from the image.
fn volume_of(domain: &Domain, disk: &str, image: &str) -> Volume {
    let format = domain
        .def
        .disk_by_target(disk)
        .filter(|d| d.source.volume_name().as_deref() == Some(image))
        .and_then(|d| d.driver_type.clone())
        .map_or_else(
            || {
                if crate::driver::network_protocol(image).is_some() {
                    VolumeFormat::Raw
                } else {
                    sniff_format(Path::new(image))
                }
            },
            |t| VolumeFormat::from_name(&t),
        );
    Volume::new(image, format)
}

/// qcow2 when the file starts with its magic, else raw.
pub fn sniff_format(path: &Path) -> VolumeFormat {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    let is_qcow2 = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"QFI\xfb";
    if is_qcow2 {
        VolumeFormat::Qcow2
    } else {
        VolumeFormat::Raw
    }
}

fn step_error(
    index: usize,
    step: &Step,
    disk: Option<&str>,
    source: HypervisorError,
    undone: Undone,
) -> ExecError {
    ExecError::Step {
        index: index + 1,
        step: step.to_string(),
        disk: disk.map(str::to_string),
        source,
        undone,
    }
}

impl Executor<'_> {
    /// Points disks at new images in the domain definition (written under
    /// the lock `store` holds) and returns the changed domain. Each
    /// image's format is what the file now is: a new overlay is qcow2, an
    /// image a revert goes back to may be raw.
    fn change_sources(
        &self,
        domain: &Domain,
        changes: &[crate::plan::SourceChange],
        store: &MetadataStore,
    ) -> Result<Domain, HypervisorError> {
        let edits: Vec<DiskChange> = changes
            .iter()
            .map(|c| DiskChange {
                target: c.disk.clone(),
                file: c.to.clone(),
                format: Some(sniff_format(Path::new(&c.to)).as_str().to_string()),
            })
            .collect();
        let changed = domain.with_disk_changes(&edits)?;
        domains::define_locked(self.layout, &changed.xml.to_xml(true), store)?;
        Ok(changed)
    }
}

/// Whether `step` needs the hypervisor running (or starting) the domain.
fn needs_hypervisor(step: &Step) -> bool {
    match step {
        Step::Freeze
        | Step::Thaw
        | Step::Pause
        | Step::Resume
        | Step::Halt
        | Step::SaveMemoryInternal { .. }
        | Step::SaveMemory { .. }
        | Step::DiskTransaction(_)
        | Step::StopDomain
        | Step::StartDomain { .. }
        | Step::LoadCheckpoint { .. }
        | Step::DiscardManagedSave => true,
        Step::DiskSnapshot(d) | Step::RevertDisk(d) | Step::DeleteDiskSnapshot(d) => {
            d.by == Performer::Hypervisor
        }
        Step::MergeImage { by, .. } | Step::RebaseImages { by, .. } => *by == Performer::Hypervisor,
        _ => false,
    }
}

impl Executor<'_> {
    /// Refuses, before anything changes, a plan with a step nobody here
    /// can carry out: a plan stopped half-way by a step that can never
    /// run would stay pending for ever.
    fn check_performable(&self, plan: &Plan) -> Result<(), ExecError> {
        if self.hypervisor.is_some() {
            return Ok(());
        }
        match plan.steps.iter().find(|s| needs_hypervisor(s)) {
            Some(step) => Err(ExecError::NoHypervisor(step.to_string())),
            None => Ok(()),
        }
    }

    fn hypervisor(&self, step: &Step) -> Result<&dyn Hypervisor, ExecError> {
        self.hypervisor
            .ok_or_else(|| ExecError::NoHypervisor(step.to_string()))
    }

    /// Checks that nothing a disk step would make exists already.
    async fn precheck(&self, plan: &Plan, domain: &Domain) -> Result<(), ExecError> {
        for step in &plan.steps {
            let Step::DiskSnapshot(d) = step else {
                continue;
            };
            let Performer::Driver(kind) = &d.by else {
                continue;
            };
            let driver = driver_by_kind(self.drivers, kind)?;
            match &d.action {
                DiskAction::Internal => {
                    let volume = volume_of(domain, &d.disk, &d.image);
                    let held = driver.list(&volume).await.map_err(|e| {
                        ExecError::Conflict(format!(
                            "cannot list the snapshots inside {} (disk {}): {e}",
                            d.image, d.disk
                        ))
                    })?;
                    if held.iter().any(|s| s.name == plan.snapshot) {
                        return Err(ExecError::Conflict(format!(
                            "{} (disk {}) already holds an internal snapshot named '{}'; \
                             choose another snapshot name, or import it (snapshot-create --redefine)",
                            d.image, d.disk, plan.snapshot
                        )));
                    }
                }
                DiskAction::Copy { target }
                | DiskAction::External {
                    target,
                    reuse: false,
                    ..
                } => {
                    if Path::new(target).exists() {
                        return Err(ExecError::Conflict(format!(
                            "the snapshot file {target} for disk {} exists already; remove it, \
                             give another file, or pass --reuse-external for an overlay made \
                             beforehand",
                            d.disk
                        )));
                    }
                }
                DiskAction::External { reuse: true, .. } => {}
            }
        }
        Ok(())
    }

    /// Runs a create plan of `domain` (its current definition), recording
    /// its progress in `store`'s intent. Returns the definition stored
    /// (with its parent), or `None` with NO_METADATA.
    ///
    /// # Errors
    /// A conflict found before anything changed, or a step's failure
    /// (everything done undone, or the intent kept for recovery).
    pub async fn create(
        &self,
        plan: &Plan,
        domain: &Domain,
        store: &mut MetadataStore,
    ) -> Result<Option<DomainSnapshotDef>, ExecError> {
        self.check_performable(plan)?;
        self.precheck(plan, domain).await?;
        let name = plan.snapshot.clone();
        let mut records: Vec<UndoRecord> = Vec::new();
        store.begin_intent(Intent::new(
            OP_DOMAIN_CREATE,
            &[Recovery::RollBack],
            &payload(&name, &records),
        ))?;
        let mut current_domain = domain.clone();
        for (i, step) in plan.steps.iter().enumerate() {
            if step.is_metadata() {
                continue;
            }
            // A live memory save pauses the guest at switchover, where the
            // disk transaction runs: what it needs is made before.
            let prepare = match step {
                Step::SaveMemory {
                    how: crate::plan::MemorySave::Live,
                    ..
                } => plan.steps[i..].iter().find_map(|s| match s {
                    Step::DiskTransaction(d) => Some(d),
                    _ => None,
                }),
                _ => None,
            };
            if let Some(disks) = prepare {
                let record = UndoRecord::Transaction {
                    name: name.clone(),
                    disks: disks.clone(),
                };
                if !records.contains(&record) {
                    records.push(record);
                    let step_no = u32::try_from(i).unwrap_or(u32::MAX);
                    store.advance_intent(step_no, Some(&payload(&name, &records)))?;
                }
                let h = self.hypervisor(step)?;
                if let Err(source) = h.prepare_disk_transaction(&name, disks).await {
                    let undone = self.roll_back(&records, store).await;
                    if undone == Undone::All {
                        store.end_intent()?;
                    }
                    return Err(step_error(i, step, None, source, undone));
                }
            }
            if let Some(record) = self.undo_record(step, &current_domain, &name)
                && !records.contains(&record)
            {
                records.push(record);
                let step_no = u32::try_from(i).unwrap_or(u32::MAX);
                store.advance_intent(step_no, Some(&payload(&name, &records)))?;
            }
            if let Some(observe) = self.observer {
                observe(i, step, StepEvent::Begin);
            }
            match self.run(step, &name, &mut current_domain, store).await {
                Ok(()) => {}
                Err((disk, source)) => {
                    // A failed step leaves nothing: its own record goes
                    // (a transaction's stays when it was prepared: the
                    // prepared overlays go with it).
                    if self.undo_record(step, &current_domain, &name).is_some()
                        && !(matches!(step, Step::DiskTransaction(_))
                            && prepared_transaction(plan, i))
                    {
                        records.pop();
                    }
                    let undone = self.roll_back(&records, store).await;
                    if undone == Undone::All {
                        store.end_intent()?;
                    }
                    return Err(step_error(i, step, disk.as_deref(), source, undone));
                }
            }
            if let Some(observe) = self.observer {
                observe(i, step, StepEvent::Done);
            }
        }
        let Some(def) = plan
            .def
            .clone()
            .filter(|_| plan.has(&Step::SetCurrent(name.clone())))
        else {
            // NO_METADATA: the snapshot is taken, nothing is recorded.
            store.end_intent()?;
            return Ok(None);
        };
        let index = plan
            .steps
            .iter()
            .position(Step::is_metadata)
            .unwrap_or(plan.steps.len());
        if let Some(observe) = self.observer {
            observe(index, &plan.steps[index], StepEvent::Begin);
        }
        if let Err(e) = store.create(SnapshotRecord::Domain(Box::new(def))) {
            let undone = self.roll_back(&records, store).await;
            if undone == Undone::All {
                store.end_intent()?;
            }
            return Err(step_error(
                index,
                &plan.steps[index],
                None,
                Box::new(e),
                undone,
            ));
        }
        for (i, step) in plan.steps.iter().enumerate().skip(index) {
            if let Some(observe) = self.observer {
                if i > index {
                    observe(i, step, StepEvent::Begin);
                }
                observe(i, step, StepEvent::Done);
            }
        }
        store.end_intent()?;
        let stored = match store.get(&name) {
            Some(SnapshotRecord::Domain(d)) => Some((**d).clone()),
            _ => None,
        };
        Ok(stored)
    }

    /// The record that undoes `step`, if it changes anything.
    fn undo_record(&self, step: &Step, domain: &Domain, name: &str) -> Option<UndoRecord> {
        match step {
            Step::DiskSnapshot(d) => {
                let Performer::Driver(kind) = &d.by else {
                    return None;
                };
                let format = volume_of(domain, &d.disk, &d.image)
                    .format
                    .as_str()
                    .to_string();
                Some(match &d.action {
                    DiskAction::Internal => UndoRecord::Internal {
                        driver: kind.clone(),
                        image: d.image.clone(),
                        format,
                        name: name.to_string(),
                    },
                    DiskAction::Copy { target } => UndoRecord::Copy {
                        driver: kind.clone(),
                        image: d.image.clone(),
                        format,
                        target: target.clone(),
                    },
                    DiskAction::External { target, reuse, .. } => {
                        if *reuse {
                            return None;
                        }
                        UndoRecord::Overlay {
                            target: target.clone(),
                        }
                    }
                })
            }
            Step::UpdateDomain(_) => Some(UndoRecord::Domain {
                xml: domain.xml.to_xml(true),
            }),
            Step::Pause => Some(UndoRecord::Resume),
            Step::Freeze => Some(UndoRecord::Thaw),
            Step::SaveMemoryInternal { disks, .. } => Some(UndoRecord::MemoryInternal {
                name: name.to_string(),
                disks: disks.clone(),
            }),
            Step::SaveMemory { file, how } => Some(UndoRecord::MemoryFile {
                file: file.clone(),
                resume: *how != crate::plan::MemorySave::Paused,
            }),
            Step::DiskTransaction(disks) => Some(UndoRecord::Transaction {
                name: name.to_string(),
                disks: disks.clone(),
            }),
            // Restoring steps: once the guest runs again, undoing a later
            // failure must not pause it again.
            Step::Resume | Step::Thaw => None,
            _ => None,
        }
    }

    /// Runs one step. On error: the disk it was about, and the cause.
    async fn run(
        &self,
        step: &Step,
        name: &str,
        domain: &mut Domain,
        store: &MetadataStore,
    ) -> Result<(), (Option<String>, HypervisorError)> {
        let no_disk = |e: ExecError| (None, Box::new(e) as HypervisorError);
        match step {
            Step::DiskSnapshot(d) => {
                let Performer::Driver(kind) = &d.by else {
                    return Err((
                        Some(d.disk.clone()),
                        "a disk step for the hypervisor outside a transaction".into(),
                    ));
                };
                let driver = driver_by_kind(self.drivers, kind)
                    .map_err(|e| (Some(d.disk.clone()), Box::new(e) as HypervisorError))?;
                let volume = volume_of(domain, &d.disk, &d.image);
                let on_disk =
                    |e: DriverError| (Some(d.disk.clone()), Box::new(e) as HypervisorError);
                match &d.action {
                    DiskAction::Internal | DiskAction::Copy { .. } => {
                        let (mode, file) = match &d.action {
                            DiskAction::Copy { target } => {
                                (SnapshotMode::Copy, Some(PathBuf::from(target)))
                            }
                            _ => (SnapshotMode::Internal, None),
                        };
                        let plan = SnapshotPlan {
                            name: name.to_string(),
                            mode,
                            file,
                            checksum: false,
                            writable: false,
                        };
                        driver.create(&volume, &plan, None).await.map_err(on_disk)?;
                    }
                    DiskAction::External { target, reuse, .. } => {
                        driver
                            .create_overlay(&volume, Path::new(target), *reuse)
                            .await
                            .map_err(on_disk)?;
                    }
                }
                Ok(())
            }
            Step::UpdateDomain(changes) => {
                *domain = self
                    .change_sources(domain, changes, store)
                    .map_err(|e| (None, e))?;
                Ok(())
            }
            Step::Freeze | Step::Thaw | Step::Pause | Step::Resume | Step::Halt => {
                let h = self.hypervisor(step).map_err(no_disk)?;
                let done = match step {
                    Step::Freeze => h.freeze().await,
                    Step::Thaw => h.thaw().await,
                    Step::Pause => h.pause().await,
                    Step::Resume => h.resume().await,
                    _ => h.halt().await,
                };
                done.map_err(|e| (None, e))
            }
            Step::LeavePaused(_) => Ok(()),
            Step::SaveMemoryInternal { vmstate, disks } => {
                let h = self.hypervisor(step).map_err(no_disk)?;
                h.save_memory_internal(name, vmstate, disks)
                    .await
                    .map_err(|e| (None, e))
            }
            Step::SaveMemory { file, how } => {
                let h = self.hypervisor(step).map_err(no_disk)?;
                h.save_memory(Path::new(file), *how)
                    .await
                    .map_err(|e| (None, e))
            }
            Step::DiskTransaction(disks) => {
                let h = self.hypervisor(step).map_err(no_disk)?;
                h.disk_transaction(name, disks).await.map_err(|e| (None, e))
            }
            other => Err((
                None,
                format!("step '{other}' does not belong in a create plan").into(),
            )),
        }
    }

    /// Undoes `records` in reverse; the first failure is reported, the
    /// rest still tried.
    async fn roll_back(&self, records: &[UndoRecord], store: &MetadataStore) -> Undone {
        let mut first = None;
        for r in records.iter().rev() {
            if let Err(e) = self.undo(r, store).await {
                tracing::warn!(record = ?r, error = %e, "undo failed");
                first.get_or_insert(e.to_string());
            }
        }
        first.map_or(Undone::All, Undone::Failed)
    }

    async fn undo(
        &self,
        record: &UndoRecord,
        store: &MetadataStore,
    ) -> Result<(), HypervisorError> {
        match record {
            UndoRecord::Internal {
                driver,
                image,
                format,
                name,
            } => {
                let d = driver_by_kind(self.drivers, driver)?;
                let volume = Volume::new(image, VolumeFormat::from_name(format));
                d.undo(&volume, &created(name, SnapshotMode::Internal, None))
                    .await?;
            }
            UndoRecord::Copy {
                driver,
                image,
                format,
                target,
            } => {
                let d = driver_by_kind(self.drivers, driver)?;
                let volume = Volume::new(image, VolumeFormat::from_name(format));
                d.undo(
                    &volume,
                    &created("", SnapshotMode::Copy, Some(PathBuf::from(target))),
                )
                .await?;
            }
            UndoRecord::Overlay { target } => {
                // The executor named this file and checked it did not
                // exist before: it is ours to remove.
                match std::fs::remove_file(target) {
                    Ok(()) => {
                        if let Some(dir) = Path::new(target).parent() {
                            std::fs::File::open(dir).and_then(|d| d.sync_all())?;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Box::new(e)),
                }
            }
            UndoRecord::Domain { xml } => {
                domains::define_locked(self.layout, xml, store)?;
            }
            // A guest whose hypervisor died (killed mid-snapshot) has
            // nothing left to resume or thaw.
            UndoRecord::Resume => {
                if let Some(h) = self.hypervisor
                    && h.state().await?.is_active()
                {
                    h.resume().await?;
                }
            }
            UndoRecord::Thaw => {
                if let Some(h) = self.hypervisor
                    && h.state().await?.is_active()
                {
                    h.thaw().await?;
                }
            }
            UndoRecord::MemoryInternal { name, disks } => {
                self.hypervisor
                    .ok_or("no hypervisor is connected to drop the checkpoint")?
                    .delete_memory_internal(name, disks)
                    .await?;
            }
            UndoRecord::MemoryFile { file, resume } => {
                match std::fs::remove_file(file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Box::new(e)),
                }
                if *resume
                    && let Some(h) = self.hypervisor
                    && h.state().await?.is_active()
                {
                    h.resume().await?;
                }
            }
            UndoRecord::Transaction { name, disks } => {
                self.hypervisor
                    .ok_or("no hypervisor is connected to undo the disk transaction")?
                    .undo_disk_transaction(name, disks)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Whether the transaction at step `i` was prepared by a live memory save
/// before it.
fn prepared_transaction(plan: &Plan, i: usize) -> bool {
    plan.steps[..i].iter().any(|s| {
        matches!(
            s,
            Step::SaveMemory {
                how: crate::plan::MemorySave::Live,
                ..
            }
        )
    })
}

/// The intent operation of a domain snapshot revert or delete.
pub const OP_DOMAIN_FINISH: &str = "domain-snapshot-finish";

fn performer_word(by: &Performer) -> String {
    match by {
        Performer::Hypervisor => "hv".to_string(),
        Performer::Driver(k) => format!("driver:{k}"),
    }
}

fn performer_from(word: &str) -> Option<Performer> {
    if word == "hv" {
        Some(Performer::Hypervisor)
    } else {
        word.strip_prefix("driver:")
            .map(|k| Performer::Driver(k.to_string()))
    }
}

fn disk_step_fields(d: &DiskStep) -> Vec<String> {
    let (action, target) = match &d.action {
        DiskAction::Internal => ("internal", String::new()),
        DiskAction::External { target, .. } => ("external", target.clone()),
        DiskAction::Copy { target } => ("copy", target.clone()),
    };
    vec![
        esc(&d.disk),
        esc(&d.image),
        esc(&performer_word(&d.by)),
        action.to_string(),
        esc(&target),
    ]
}

fn disk_step_from(f: &[String]) -> Option<DiskStep> {
    let [disk, image, by, action, target] = f else {
        return None;
    };
    Some(DiskStep {
        disk: disk.clone(),
        image: image.clone(),
        by: performer_from(by)?,
        action: match action.as_str() {
            "internal" => DiskAction::Internal,
            "external" => DiskAction::External {
                target: target.clone(),
                format: snapshot_conf::StorageFormat::Qcow2,
                reuse: false,
            },
            "copy" => DiskAction::Copy {
                target: target.clone(),
            },
            _ => return None,
        },
    })
}

/// A revert or delete step as one payload line, with its context: the
/// domain XML a restore needs, the snapshot a disk step is about.
fn encode_finish_step(step: &Step, definition: Option<&str>) -> Option<String> {
    let fields: Vec<String> = match step {
        Step::RevertDisk(d) => [
            vec!["revert-disk".into()],
            disk_step_fields(d),
            vec![esc(definition?)],
        ]
        .concat(),
        Step::DeleteDiskSnapshot(d) => [
            vec!["delete-disk-snapshot".into()],
            disk_step_fields(d),
            vec![esc(definition?)],
        ]
        .concat(),
        Step::RestoreDefinition => vec!["restore-definition".into(), esc(definition?)],
        Step::UpdateDomain(changes) => {
            let mut v = vec!["update-domain".to_string()];
            for c in changes {
                v.extend([esc(&c.disk), esc(&c.from), esc(&c.to)]);
            }
            v
        }
        Step::DiscardImage { disk, path } => vec!["discard-image".into(), esc(disk), esc(path)],
        Step::RemoveImage { disk, path } => vec!["remove-image".into(), esc(disk), esc(path)],
        Step::MergeImage {
            disk,
            image,
            into,
            by,
        } => vec![
            "merge-image".into(),
            esc(disk),
            esc(image),
            esc(into),
            esc(&performer_word(by)),
        ],
        Step::RebaseImages {
            disk,
            image,
            children,
            onto,
            by,
        } => {
            let mut v = vec![
                "rebase-images".to_string(),
                esc(disk),
                esc(image),
                esc(&performer_word(by)),
                onto.as_deref()
                    .map_or_else(|| "-".to_string(), |o| format!("+{}", esc(o))),
            ];
            v.extend(children.iter().map(|c| esc(c)));
            v
        }
        Step::RemoveMemoryFile(path) => vec!["remove-memory-file".into(), esc(path)],
        Step::RemoveMetadata(name) => vec!["remove-metadata".into(), esc(name)],
        Step::SetCurrent(name) => vec!["set-current".into(), esc(name)],
        Step::StopDomain => vec!["stop-domain".into()],
        Step::DiscardManagedSave => vec!["discard-managed-save".into()],
        Step::LoadCheckpoint {
            name,
            disks,
            paused,
        } => {
            let mut v = vec!["load-checkpoint".into(), paused.to_string(), esc(name)];
            v.extend(disks.iter().map(|d| esc(d)));
            v
        }
        Step::StartDomain { paused, memory } => vec![
            "start-domain".into(),
            paused.to_string(),
            match memory {
                None => "-".to_string(),
                Some(MemoryImage::Checkpoint(n)) => format!("+checkpoint:{}", esc(n)),
                Some(MemoryImage::File(f)) => format!("+file:{}", esc(f)),
            },
        ],
        _ => return None,
    };
    Some(fields.join("\t"))
}

fn optional(field: &str) -> Option<Option<String>> {
    if field == "-" {
        Some(None)
    } else {
        field.strip_prefix('+').map(|f| Some(f.to_string()))
    }
}

/// A payload line back: the step and, for a restore, the domain XML.
fn decode_finish_step(line: &str) -> Option<(Step, Option<String>)> {
    let f: Vec<String> = line.split('\t').map(unesc).collect();
    let rest = f.get(1..)?;
    Some(match f.first()?.as_str() {
        "revert-disk" => (
            Step::RevertDisk(disk_step_from(rest.get(..5)?)?),
            Some(rest.get(5)?.clone()),
        ),
        "delete-disk-snapshot" => (
            Step::DeleteDiskSnapshot(disk_step_from(rest.get(..5)?)?),
            Some(rest.get(5)?.clone()),
        ),
        "restore-definition" => (Step::RestoreDefinition, Some(rest.first()?.clone())),
        "update-domain" => {
            let mut changes = Vec::new();
            for c in rest.chunks(3) {
                let [disk, from, to] = c else {
                    return None;
                };
                changes.push(crate::plan::SourceChange {
                    disk: disk.clone(),
                    from: from.clone(),
                    to: to.clone(),
                });
            }
            (Step::UpdateDomain(changes), None)
        }
        "discard-image" => (
            Step::DiscardImage {
                disk: rest.first()?.clone(),
                path: rest.get(1)?.clone(),
            },
            None,
        ),
        "remove-image" => (
            Step::RemoveImage {
                disk: rest.first()?.clone(),
                path: rest.get(1)?.clone(),
            },
            None,
        ),
        "merge-image" => (
            Step::MergeImage {
                disk: rest.first()?.clone(),
                image: rest.get(1)?.clone(),
                into: rest.get(2)?.clone(),
                by: performer_from(rest.get(3)?)?,
            },
            None,
        ),
        "rebase-images" => (
            Step::RebaseImages {
                disk: rest.first()?.clone(),
                image: rest.get(1)?.clone(),
                by: performer_from(rest.get(2)?)?,
                onto: optional(rest.get(3)?)?,
                children: rest.get(4..)?.to_vec(),
            },
            None,
        ),
        "remove-memory-file" => (Step::RemoveMemoryFile(rest.first()?.clone()), None),
        "remove-metadata" => (Step::RemoveMetadata(rest.first()?.clone()), None),
        "set-current" => (Step::SetCurrent(rest.first()?.clone()), None),
        "stop-domain" => (Step::StopDomain, None),
        "discard-managed-save" => (Step::DiscardManagedSave, None),
        "load-checkpoint" => (
            Step::LoadCheckpoint {
                paused: rest.first()?.parse().ok()?,
                name: rest.get(1)?.clone(),
                disks: rest.get(2..)?.to_vec(),
            },
            None,
        ),
        "start-domain" => (
            Step::StartDomain {
                paused: rest.first()?.parse().ok()?,
                memory: match optional(rest.get(1)?)? {
                    None => None,
                    Some(m) => Some(if let Some(n) = m.strip_prefix("checkpoint:") {
                        MemoryImage::Checkpoint(n.to_string())
                    } else {
                        MemoryImage::File(m.strip_prefix("file:")?.to_string())
                    }),
                },
            },
            None,
        ),
        _ => return None,
    })
}

/// The steps of a revert or delete, each with its context (the domain
/// XML a restore needs, the snapshot a disk step is about), as recorded
/// in the intent.
type FinishSteps = Vec<(Step, Option<String>)>;

fn finish_payload(steps: &FinishSteps) -> Option<String> {
    let mut out = String::new();
    for (step, xml) in steps {
        out.push_str(&encode_finish_step(step, xml.as_deref())?);
        out.push('\n');
    }
    Some(out)
}

fn parse_finish_payload(text: &str) -> Option<FinishSteps> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(decode_finish_step)
        .collect()
}

impl Executor<'_> {
    /// Runs a revert or delete plan. These cannot be taken back once
    /// begun (data is merged, images removed), so they are finished
    /// instead: every step is recorded first and safe to run again, the
    /// intent keeps the step reached, and a failure or crash after the
    /// first step leaves the intent for [`recover_finish`] to complete the
    /// plan on the next open. `definition` is the snapshot's `<domain>`
    /// for a revert's restore step.
    ///
    /// # Errors
    /// A step that cannot be recorded or a step's failure (with what was
    /// done kept and recorded).
    pub async fn finish(
        &self,
        plan: &Plan,
        definition: Option<&Domain>,
        store: &mut MetadataStore,
    ) -> Result<(), ExecError> {
        let xml = definition.map(|d| d.xml.to_xml(true));
        let steps: FinishSteps = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let context = match s {
                    Step::RestoreDefinition => xml.clone(),
                    // A revert's disks go back to the snapshot made current.
                    Step::RevertDisk(_) => Some(plan.snapshot.clone()),
                    // A delete's disk steps come before their snapshot's
                    // metadata goes.
                    Step::DeleteDiskSnapshot(_) => plan.steps[i..].iter().find_map(|n| match n {
                        Step::RemoveMetadata(name) => Some(name.clone()),
                        _ => None,
                    }),
                    _ => None,
                };
                (s.clone(), context)
            })
            .collect();
        let payload = finish_payload(&steps).ok_or_else(|| {
            ExecError::Conflict(format!(
                "the plan to {} '{}' has a step this executor cannot record",
                if plan.kind == crate::plan::PlanKind::Revert {
                    "revert to"
                } else {
                    "delete"
                },
                plan.snapshot
            ))
        })?;
        self.check_performable(plan)?;
        self.precheck_finish(&steps, store).await?;
        store.begin_intent(Intent::new(OP_DOMAIN_FINISH, &[Recovery::Finish], &payload))?;
        self.run_finish(&steps, 0, store, true).await?;
        store.end_intent()?;
        Ok(())
    }

    /// Before anything changes: what a revert goes back to exists.
    async fn precheck_finish(
        &self,
        steps: &FinishSteps,
        store: &MetadataStore,
    ) -> Result<(), ExecError> {
        let domain = domains::get(self.layout, &owner_name(store))?;
        for (step, context) in steps {
            let Step::RevertDisk(d) = step else {
                continue;
            };
            let Performer::Driver(kind) = &d.by else {
                continue;
            };
            match &d.action {
                DiskAction::Internal => {
                    let driver = driver_by_kind(self.drivers, kind)?;
                    let volume = volume_of(&domain, &d.disk, &d.image);
                    let name = context.clone().unwrap_or_default();
                    let held = driver.list(&volume).await.map_err(|e| {
                        ExecError::Conflict(format!(
                            "cannot read the snapshots in {}: {e}",
                            d.image
                        ))
                    })?;
                    if !held.iter().any(|s| s.name == name) {
                        return Err(ExecError::Conflict(format!(
                            "{} (disk {}) holds no internal snapshot '{name}' to go back to; it \
                             was removed outside virtsnap (delete the snapshot's metadata with \
                             --metadata)",
                            d.image, d.disk
                        )));
                    }
                }
                DiskAction::Copy { target } => {
                    if !Path::new(target).exists() {
                        return Err(ExecError::Conflict(format!(
                            "the copy {target} of disk {} is missing; it was removed outside \
                             virtsnap (delete the snapshot's metadata with --metadata)",
                            d.disk
                        )));
                    }
                }
                DiskAction::External { .. } => {
                    if !Path::new(&d.image).exists() {
                        return Err(ExecError::Conflict(format!(
                            "the image {} that holds disk {}'s snapshot is missing",
                            d.image, d.disk
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs `steps` from `from`; with `record`, the intent begun by
    /// [`Executor::finish`] follows the progress (recovery runs with the
    /// found record instead, left as it is).
    async fn run_finish(
        &self,
        steps: &FinishSteps,
        from: usize,
        store: &mut MetadataStore,
        record: bool,
    ) -> Result<(), ExecError> {
        for (i, (step, xml)) in steps.iter().enumerate().skip(from) {
            if let Some(observe) = self.observer {
                observe(i, step, StepEvent::Begin);
            }
            if let Err((disk, source)) = self.run_finish_step(step, xml.as_deref(), store).await {
                let undone = if i == 0 && record {
                    store.end_intent()?;
                    Undone::All
                } else {
                    Undone::Pending
                };
                return Err(step_error(i, step, disk.as_deref(), source, undone));
            }
            if record {
                store.advance_intent(u32::try_from(i + 1).unwrap_or(u32::MAX), None)?;
            }
            if let Some(observe) = self.observer {
                observe(i, step, StepEvent::Done);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_lines)]
    async fn run_finish_step(
        &self,
        step: &Step,
        xml: Option<&str>,
        store: &mut MetadataStore,
    ) -> Result<(), (Option<String>, HypervisorError)> {
        let boxed = |disk: Option<&str>| {
            let disk = disk.map(str::to_string);
            move |e: DriverError| (disk, Box::new(e) as HypervisorError)
        };
        let plain = |e: ExecError| (None, Box::new(e) as HypervisorError);
        let domain = domains::get(self.layout, &owner_name(store)).map_err(|e| plain(e.into()))?;
        match step {
            Step::DeleteDiskSnapshot(d) if d.by == Performer::Hypervisor => {
                let h = self.hypervisor(step).map_err(plain)?;
                h.delete_disk_snapshot(d, xml.unwrap_or_default())
                    .await
                    .map_err(|e| (Some(d.disk.clone()), e))
            }
            Step::RevertDisk(d) | Step::DeleteDiskSnapshot(d) => {
                let Performer::Driver(kind) = &d.by else {
                    return Err(plain(ExecError::NoHypervisor(step.to_string())));
                };
                let driver = driver_by_kind(self.drivers, kind).map_err(plain)?;
                let volume = volume_of(&domain, &d.disk, &d.image);
                let name = xml.unwrap_or_default().to_string();
                let on_disk = boxed(Some(&d.disk));
                let reverting = matches!(step, Step::RevertDisk(_));
                match (&d.action, reverting) {
                    (DiskAction::External { target, .. }, true) => {
                        // Run again after a crash: the overlay made then is
                        // used as it is.
                        let reuse = Path::new(target).exists()
                            && driver
                                .chain_info(Path::new(target))
                                .await
                                .ok()
                                .flatten()
                                .and_then(|c| c.backing)
                                .is_some_and(|b| same_path(&b, Path::new(&d.image)));
                        driver
                            .create_overlay(&volume, Path::new(target), reuse)
                            .await
                            .map_err(on_disk)
                    }
                    (action, _) => {
                        let (mode, file) = match action {
                            DiskAction::Copy { target } => {
                                (SnapshotMode::Copy, Some(PathBuf::from(target)))
                            }
                            _ => (SnapshotMode::Internal, None),
                        };
                        let snapshot = crate::driver::SnapshotRef {
                            name,
                            mode,
                            file,
                            checksum: None,
                        };
                        if reverting {
                            let outcome = driver.revert(&volume, &snapshot, false, None).await;
                            match outcome {
                                Ok(RevertOutcome::Done) => Ok(()),
                                Err(e) => Err(on_disk(e)),
                                // A domain starts on its disks right after
                                // a revert: one the storage will revert
                                // only later cannot be part of it.
                                Ok(RevertOutcome::Deferred { message }) => {
                                    Err(on_disk(DriverError::Inconsistent(format!(
                                        "the storage deferred the revert of {}: {message}; \
                                         do not start the domain before it has finished",
                                        volume.path.display()
                                    ))))
                                }
                            }
                        } else {
                            driver
                                .delete(
                                    &volume,
                                    &snapshot,
                                    &crate::driver::DeleteContext::default(),
                                    None,
                                )
                                .await
                                .map_err(on_disk)
                        }
                    }
                }
            }
            Step::RestoreDefinition => {
                let xml = xml.ok_or_else(|| {
                    plain(ExecError::Conflict(
                        "the snapshot's definition is missing".into(),
                    ))
                })?;
                // The restored definition keeps the domain's own name.
                let restored =
                    Domain::parse(xml).map_err(|e| (None, Box::new(e) as HypervisorError))?;
                domains::define_locked(self.layout, &restored.xml.to_xml(true), store)
                    .map(drop)
                    .map_err(|e| plain(e.into()))
            }
            Step::UpdateDomain(changes) => self
                .change_sources(&domain, changes, store)
                .map(drop)
                .map_err(|e| (None, e)),
            Step::DiscardImage { disk, path } | Step::RemoveImage { disk, path } => {
                remove_file_synced(Path::new(path)).map_err(|e| (Some(disk.clone()), e))
            }
            Step::RemoveMemoryFile(path) => {
                remove_file_synced(Path::new(path)).map_err(|e| (None, e))
            }
            Step::MergeImage {
                disk,
                image,
                into,
                by: Performer::Hypervisor,
            } => {
                // Live: `into` pulls what it reads from `image` (it keeps
                // its path and its node), then `image` goes.
                let h = self.hypervisor(step).map_err(plain)?;
                if Path::new(image).exists() {
                    h.stream_layer(disk, image, into)
                        .await
                        .map_err(|e| (Some(disk.clone()), e))?;
                }
                remove_file_synced(Path::new(image)).map_err(|e| (Some(disk.clone()), e))
            }
            Step::MergeImage {
                disk,
                image,
                into,
                by,
            } => {
                let Performer::Driver(kind) = by else {
                    return Err(plain(ExecError::NoHypervisor(step.to_string())));
                };
                let driver = driver_by_kind(self.drivers, kind).map_err(plain)?;
                driver
                    .merge_layer(Path::new(image), Path::new(into), None)
                    .await
                    .map_err(boxed(Some(disk)))
            }
            Step::RebaseImages {
                disk,
                image,
                children,
                onto,
                by,
            } => {
                let mut children: Vec<PathBuf> = children.iter().map(PathBuf::from).collect();
                let kind = match by {
                    Performer::Driver(kind) => kind.clone(),
                    Performer::Hypervisor => {
                        // The children the running domain uses pull their
                        // data live; the others are rebased by the qcow2
                        // driver, which then removes `image`.
                        let h = self.hypervisor(step).map_err(plain)?;
                        let mut offline = Vec::new();
                        for c in children {
                            let live = Path::new(image).exists()
                                && h.stream_layer(disk, image, &c.to_string_lossy())
                                    .await
                                    .map_err(|e| (Some(disk.clone()), e))?;
                            if !live {
                                offline.push(c);
                            }
                        }
                        children = offline;
                        "qemu".to_string()
                    }
                };
                if !Path::new(image).exists() {
                    return Ok(());
                }
                if children.is_empty() {
                    return remove_file_synced(Path::new(image))
                        .map_err(|e| (Some(disk.clone()), e));
                }
                let driver = driver_by_kind(self.drivers, &kind).map_err(plain)?;
                driver
                    .rebase_layers(
                        Path::new(image),
                        &children,
                        onto.as_deref().map(Path::new),
                        None,
                    )
                    .await
                    .map_err(boxed(Some(disk)))
            }
            Step::RemoveMetadata(name) => {
                if store.tree().contains(name) {
                    store
                        .delete(name, crate::tree::ChildPolicy::Rebase)
                        .map(drop)
                        .map_err(|e| plain(e.into()))?;
                }
                Ok(())
            }
            Step::SetCurrent(name) => store.set_current(Some(name)).map_err(|e| plain(e.into())),
            Step::StopDomain => {
                let h = self.hypervisor(step).map_err(plain)?;
                h.stop().await.map_err(|e| (None, e))
            }
            Step::StartDomain { paused, memory } => {
                let h = self.hypervisor(step).map_err(plain)?;
                // Run again after a crash: the domain started then stays.
                if h.state().await.map_err(|e| (None, e))?.is_active() {
                    tracing::info!("the domain runs already; start skipped");
                    return Ok(());
                }
                h.start(&domain, *paused, memory.as_ref())
                    .await
                    .map_err(|e| (None, e))
            }
            Step::LoadCheckpoint {
                name,
                disks,
                paused,
            } => {
                let h = self.hypervisor(step).map_err(plain)?;
                h.load_checkpoint(name, disks, *paused)
                    .await
                    .map_err(|e| (None, e))
            }
            Step::DiscardManagedSave => Ok(()),
            other => Err(plain(ExecError::NoHypervisor(other.to_string()))),
        }
    }
}

fn owner_name(store: &MetadataStore) -> String {
    match store.owner() {
        crate::store::Owner::Domain(n) | crate::store::Owner::Volume(n) => n.clone(),
    }
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn remove_file_synced(path: &Path) -> Result<(), HypervisorError> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir).and_then(|d| d.sync_all())?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Box::new(e)),
    }
}

/// Finishes a revert or delete a crash (or a failure) interrupted: runs
/// its recorded steps again from the one reached, each safe to repeat.
///
/// # Errors
/// The record cannot be read, or a step fails again (the record stays).
pub async fn recover_finish(
    executor: &Executor<'_>,
    store: &mut MetadataStore,
) -> Result<(), ExecError> {
    let Some(pending) = store.pending_intent().cloned() else {
        return Err(ExecError::BadRecord {
            domain: owner_name(store),
            reason: "no interrupted operation is pending".into(),
        });
    };
    let steps = parse_finish_payload(&pending.payload).ok_or_else(|| ExecError::BadRecord {
        domain: owner_name(store),
        reason: "its payload is malformed".into(),
    })?;
    // The record stays while the rest runs (each step is safe to repeat,
    // so a crash now only means running them again), and goes after.
    let from = usize::try_from(pending.step).unwrap_or(0).min(steps.len());
    executor.run_finish(&steps, from, store, false).await?;
    store.recover_intent(&[&StorageDone(OP_DOMAIN_FINISH)], Some(Recovery::Finish))?;
    Ok(())
}

fn created(name: &str, mode: SnapshotMode, file: Option<PathBuf>) -> CreatedSnapshot {
    CreatedSnapshot {
        name: name.to_string(),
        mode,
        file,
        format: None,
        checksum: None,
        size: None,
    }
}

/// Recovers a create a crash interrupted on `store`'s owner: when its
/// metadata was written the snapshot is complete and only the record goes;
/// otherwise every recorded step is undone (each undo tolerates a step
/// that never ran). Returns the snapshot's name and whether it was kept.
///
/// # Errors
/// The record cannot be read, or an undo failed (the record stays).
pub async fn recover_create(
    executor: &Executor<'_>,
    store: &mut MetadataStore,
) -> Result<(String, bool), ExecError> {
    let Some(pending) = store.pending_intent().cloned() else {
        return Err(ExecError::BadRecord {
            domain: store.owner().to_string(),
            reason: "no interrupted operation is pending".into(),
        });
    };
    let (name, records) = parse_payload(&pending.payload).ok_or_else(|| ExecError::BadRecord {
        domain: store.owner().to_string(),
        reason: "its payload is malformed".into(),
    })?;
    let kept = store.tree().contains(&name);
    if !kept && let Undone::Failed(e) = executor.roll_back(&records, store).await {
        return Err(ExecError::BadRecord {
            domain: store.owner().to_string(),
            reason: format!("rolling back snapshot '{name}' failed: {e}"),
        });
    }
    store.recover_intent(&[&StorageDone(OP_DOMAIN_CREATE)], Some(Recovery::RollBack))?;
    Ok((name, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_undo_records_survive_the_payload_round_trip() {
        let records = vec![
            UndoRecord::Internal {
                driver: "qemu".into(),
                image: "/img/a\tb%.qcow2".into(),
                format: "qcow2".into(),
                name: "s\n1".into(),
            },
            UndoRecord::Copy {
                driver: "file".into(),
                image: "/img/c.raw".into(),
                format: "raw".into(),
                target: "/img/c.raw.s1".into(),
            },
            UndoRecord::Overlay {
                target: "/img/b.s1".into(),
            },
            UndoRecord::Domain {
                xml: "<domain>\n  <name>vm</name>\n</domain>".into(),
            },
            UndoRecord::Resume,
            UndoRecord::Thaw,
            UndoRecord::MemoryInternal {
                name: "s1".into(),
                disks: vec!["vda".into(), "vdb".into()],
            },
            UndoRecord::MemoryFile {
                file: "/mem/s1".into(),
                resume: false,
            },
            UndoRecord::MemoryFile {
                file: "/mem/s2".into(),
                resume: true,
            },
            UndoRecord::Transaction {
                name: "s1".into(),
                disks: vec![DiskStep {
                    disk: "vda".into(),
                    image: "/img/a.qcow2".into(),
                    by: Performer::Hypervisor,
                    action: DiskAction::Internal,
                }],
            },
        ];
        let text = payload("s%1", &records);
        let (name, back) = parse_payload(&text).expect("parses");
        assert_eq!(name, "s%1");
        assert_eq!(back, records);
        assert!(parse_payload("s1\nnonsense\tx\n").is_none());
    }
}
