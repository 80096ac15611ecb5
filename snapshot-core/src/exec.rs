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

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use snapshot_conf::{DiskChange, Domain, DomainSnapshotDef};

use crate::driver::{
    CreatedSnapshot, DriverError, SnapshotMode, SnapshotPlan, Volume, VolumeDriver, VolumeFormat,
};
use crate::plan::{DiskAction, DiskStep, MemorySave, Performer, Plan, Step};
use crate::store::domains::{self, DomainError};
use crate::store::{Intent, Layout, MetadataStore, Recovery, SnapshotRecord, StoreError};

/// The intent operation of a domain snapshot create.
pub const OP_DOMAIN_CREATE: &str = "domain-snapshot-create";

/// An error of the hypervisor, as its implementation words it.
pub type HypervisorError = Box<dyn std::error::Error + Send + Sync>;

/// What the executor asks of the hypervisor running a domain (QEMU over
/// QMP). Each call does one plan step and fails without side effects or
/// says what it left.
#[async_trait]
pub trait Hypervisor: Send + Sync {
    /// Freezes the guest's filesystems (guest agent).
    async fn freeze(&self) -> Result<(), HypervisorError>;
    /// Thaws them.
    async fn thaw(&self) -> Result<(), HypervisorError>;
    /// Pauses the guest's CPUs.
    async fn pause(&self) -> Result<(), HypervisorError>;
    /// Resumes them.
    async fn resume(&self) -> Result<(), HypervisorError>;
    /// Takes internal system checkpoint `name`: memory in `vmstate`'s
    /// image, internal snapshots of `disks`.
    async fn save_memory_internal(
        &self,
        name: &str,
        vmstate: &str,
        disks: &[String],
    ) -> Result<(), HypervisorError>;
    /// Drops internal checkpoint `name` from `disks` (an undo).
    async fn delete_memory_internal(
        &self,
        name: &str,
        disks: &[String],
    ) -> Result<(), HypervisorError>;
    /// Saves memory to `file`.
    async fn save_memory(&self, file: &Path, how: MemorySave) -> Result<(), HypervisorError>;
    /// Snapshots `disks` in one transaction (internal ones named `name`).
    async fn disk_transaction(&self, name: &str, disks: &[DiskStep])
    -> Result<(), HypervisorError>;
    /// Undoes a transaction: drops the internal snapshots, takes the
    /// overlays back out of the chains.
    async fn undo_disk_transaction(
        &self,
        name: &str,
        disks: &[DiskStep],
    ) -> Result<(), HypervisorError>;
    /// Stops the domain.
    async fn halt(&self) -> Result<(), HypervisorError>;
}

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

/// What became of the undo after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undone {
    /// Everything done before was undone.
    All,
    /// Undoing failed too: the operation stays recorded and is rolled
    /// back when the domain's snapshots are next opened.
    Failed(String),
}

impl fmt::Display for Undone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("everything done before was undone"),
            Self::Failed(e) => write!(
                f,
                "undoing failed too ({e}); the operation stays recorded and is rolled back the \
                 next time the domain's snapshots are opened"
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
        "step '{0}' needs the hypervisor running the domain, and none is connected; nothing was changed"
    )]
    NoHypervisor(String),
    /// A step names a driver that is not registered.
    #[error("no storage driver '{0}' is registered; nothing was changed")]
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
    MemoryFile {
        file: String,
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
            Self::MemoryFile { file } => vec!["memory-file".into(), esc(file)],
            Self::Transaction { name, disks } => {
                let mut v = vec!["transaction".to_string(), esc(name)];
                for d in disks {
                    let (kind, target) = match &d.action {
                        DiskAction::Internal => ("internal", String::new()),
                        DiskAction::External { target, .. } => ("external", target.clone()),
                        DiskAction::Copy { target } => ("copy", target.clone()),
                    };
                    v.extend([esc(&d.disk), esc(&d.image), kind.into(), esc(&target)]);
                }
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
            "memory-file" => Self::MemoryFile { file: get(1)? },
            "transaction" => {
                let name = get(1)?;
                let mut disks = Vec::new();
                for c in f.get(2..)?.chunks(4) {
                    let [disk, image, kind, target] = c else {
                        return None;
                    };
                    let action = match kind.as_str() {
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
                    };
                    disks.push(DiskStep {
                        disk: disk.clone(),
                        image: image.clone(),
                        by: Performer::Hypervisor,
                        action,
                    });
                }
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

/// The volume of a disk's image: its path and the format the domain
/// gives it (read from the image when the domain says nothing).
fn volume_of(domain: &Domain, disk: &str, image: &str) -> Volume {
    let format = domain
        .def
        .disk_by_target(disk)
        .and_then(|d| d.driver_type.clone())
        .map_or_else(
            || sniff_format(Path::new(image)),
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
            if let Some(record) = self.undo_record(step, &current_domain, &name) {
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
                    // A failed step leaves nothing: its own record goes.
                    if self.undo_record(step, &current_domain, &name).is_some() {
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
            Step::SaveMemory { file, .. } => Some(UndoRecord::MemoryFile { file: file.clone() }),
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
                let edits: Vec<DiskChange> = changes
                    .iter()
                    .map(|c| DiskChange {
                        target: c.disk.clone(),
                        file: c.to.clone(),
                        format: Some("qcow2".into()),
                    })
                    .collect();
                let changed = domain
                    .with_disk_changes(&edits)
                    .map_err(|e| (None, Box::new(e) as HypervisorError))?;
                domains::define_locked(self.layout, &changed.xml.to_xml(true), store)
                    .map_err(|e| no_disk(e.into()))?;
                *domain = changed;
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
            UndoRecord::Resume => {
                if let Some(h) = self.hypervisor {
                    h.resume().await?;
                }
            }
            UndoRecord::Thaw => {
                if let Some(h) = self.hypervisor {
                    h.thaw().await?;
                }
            }
            UndoRecord::MemoryInternal { name, disks } => {
                self.hypervisor
                    .ok_or("no hypervisor is connected to drop the checkpoint")?
                    .delete_memory_internal(name, disks)
                    .await?;
            }
            UndoRecord::MemoryFile { file } => match std::fs::remove_file(file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Box::new(e)),
            },
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
    store.recover_intent(&[&Cleared], Some(Recovery::RollBack))?;
    Ok((name, kept))
}

/// The store-side handler once [`recover_create`] has done the storage
/// part: nothing is left but clearing the record.
struct Cleared;

impl crate::store::IntentHandler for Cleared {
    fn operation(&self) -> &str {
        OP_DOMAIN_CREATE
    }

    fn recover(
        &self,
        _store: &mut MetadataStore,
        _intent: &Intent,
        _how: Recovery,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
}

/// Per-disk formats, for callers building volumes from a definition.
#[must_use]
pub fn disk_formats(domain: &Domain) -> HashMap<String, VolumeFormat> {
    domain
        .def
        .disks
        .iter()
        .filter_map(|d| {
            let path = d.source.local_path()?;
            let format = d
                .driver_type
                .as_deref()
                .map_or_else(|| sniff_format(Path::new(path)), VolumeFormat::from_name);
            Some((d.target.clone(), format))
        })
        .collect()
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
