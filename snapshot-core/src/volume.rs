//! The volume snapshot API (the proposal's `virStorageVolSnapshot*` calls):
//! snapshots of one storage volume that belongs to no VM, kept in the
//! metadata store under the volume's key (its canonical path) and taken by
//! the [`VolumeDriver`] that fits the volume and the mode.
//!
//! Every call opens the volume's store (shared to read, exclusive to
//! change), so concurrent commands on one volume are serialised and
//! commands on different volumes never wait for each other. A change that
//! touches storage and metadata (create, revert, delete) records an intent
//! first ([`crate::store::intent`]): a crash between the storage step and
//! the metadata step is found on the next open and recovered by
//! [`VolumeApi::recover`] with the handler registered here, which finishes
//! the operation or rolls it back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use snapshot_conf::{
    DiskSource, FormatFlags, FormatOptions, ParseFlags, ParseOptions, StorageFormat, VolChecksum,
    VolSnapshotDef, VolSnapshotMode, VolSnapshotState, VolumeRef,
};

use crate::driver::{
    Capabilities, Checksum, CreatedSnapshot, DeleteContext, DriverError, Progress, RevertOutcome,
    SnapshotMode, SnapshotPlan, SnapshotRef, StorageSnapshot, Volume, VolumeDriver, VolumeFormat,
    VolumeState,
};
use crate::store::intent::{Intent, Recovery, StorageDone};
use crate::store::{Access, Layout, LayoutError, MetadataStore, Owner, SnapshotRecord, StoreError};
use crate::tree::{ChildPolicy, ListFilter};

/// What to do with a snapshot's descendants when it is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeletePolicy {
    /// Its children keep their contents and move to its parent.
    Rebase,
    /// Its descendants are deleted too.
    Children,
    /// Only its descendants are deleted.
    ChildrenOnly,
    /// Only the metadata goes; the storage is left as it is.
    MetadataOnly,
}

/// Why a volume call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// The metadata store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A storage driver refused or failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A name or path rule.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The volume does not exist.
    #[error("volume {} does not exist; give the path of an existing file", path.display())]
    NoVolume {
        /// The path given.
        path: PathBuf,
    },
    /// No snapshot of that name.
    #[error("volume {volume} has no snapshot named '{name}'; see vol-snapshot-list")]
    NoSnapshot {
        /// The volume.
        volume: String,
        /// The name.
        name: String,
    },
    /// The volume has no current snapshot.
    #[error("volume {volume} has no current snapshot")]
    NoCurrent {
        /// The volume.
        volume: String,
    },
    /// A snapshot of that name exists.
    #[error("volume {volume} already has a snapshot named '{name}'; choose another name")]
    NameTaken {
        /// The volume.
        volume: String,
        /// The name.
        name: String,
    },
    /// No registered driver can take this kind of snapshot of the volume.
    #[error("no driver can take a {mode} snapshot of {volume} ({format}); {hint}")]
    NoDriver {
        /// The volume.
        volume: String,
        /// Its format.
        format: String,
        /// The mode asked.
        mode: SnapshotMode,
        /// What to do instead.
        hint: String,
    },
    /// The request XML is not a valid `<volsnapshot>`.
    #[error("invalid <volsnapshot>: {0}")]
    Xml(#[from] snapshot_conf::ConfError),
    /// The request contradicts itself or the volume.
    #[error("{0}")]
    Invalid(String),
}

/// How to create a snapshot (what the CLI flags and the XML say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// The name; default: the creation time in seconds, as libvirt does.
    pub name: Option<String>,
    /// A description.
    pub description: Option<String>,
    /// The mode; default: internal for qcow2, a copy for anything else.
    pub mode: Option<SnapshotMode>,
    /// The new file of an external or copy snapshot; default: beside the
    /// volume, `VOLUME.NAME`.
    pub file: Option<PathBuf>,
    /// The driver, by kind; default: the first registered that supports
    /// the mode for this volume.
    pub driver: Option<String>,
    /// Record a content checksum (drivers that can).
    pub checksum: bool,
    /// Keep the snapshot writable where snapshots are read-only by default
    /// (btrfs subvolume snapshots).
    pub writable: bool,
    /// Plan only: check everything, change nothing, return the definition
    /// that would be created.
    pub dry_run: bool,
}

/// How to revert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevertOptions {
    /// Delete the target's descendants afterwards (the proposal's flag to
    /// discard what came after the target).
    pub drop_newer: bool,
    /// Verify a recorded checksum before changing anything.
    pub verify: bool,
}

/// The intent operation words of this module.
const OP_CREATE: &str = "volume-snapshot-create";
const OP_REVERT: &str = "volume-snapshot-revert";
const OP_DELETE: &str = "volume-snapshot-delete";
/// A delete that flattens the storage's clones of what it deletes.
const OP_DELETE_FLATTEN: &str = "volume-snapshot-delete-flatten-clones";

/// The volume snapshot API over a state directory and a set of drivers.
///
/// Drivers live in their own crates, which this one cannot see: the
/// runnable example is in `driver_file`'s crate documentation, and a
/// whole program in `virtsnap/examples/volume_snapshot.rs`. In short:
/// `VolumeApi::new(Layout::new(dir), drivers)`, then
/// [`VolumeApi::volume`] for a path, then the `snapshot_*` calls on it.
#[derive(Clone)]
pub struct VolumeApi {
    layout: Layout,
    drivers: Vec<Arc<dyn VolumeDriver>>,
}

impl std::fmt::Debug for VolumeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<&str> = self.drivers.iter().map(|d| d.kind()).collect();
        f.debug_struct("VolumeApi")
            .field("layout", &self.layout)
            .field("drivers", &kinds)
            .finish()
    }
}

/// The qcow2 magic, `QFI\xfb`.
const QCOW2_MAGIC: [u8; 4] = [b'Q', b'F', b'I', 0xfb];

/// Seconds since the epoch, now.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn conf_mode(mode: SnapshotMode) -> VolSnapshotMode {
    match mode {
        SnapshotMode::Internal => VolSnapshotMode::Internal,
        SnapshotMode::External => VolSnapshotMode::External,
        SnapshotMode::Copy => VolSnapshotMode::Copy,
    }
}

fn driver_mode(mode: Option<VolSnapshotMode>) -> SnapshotMode {
    match mode {
        Some(VolSnapshotMode::External) => SnapshotMode::External,
        Some(VolSnapshotMode::Copy) => SnapshotMode::Copy,
        _ => SnapshotMode::Internal,
    }
}

fn storage_format(format: &VolumeFormat) -> Option<StorageFormat> {
    format.as_str().parse().ok()
}

/// The volume snapshot definition of a stored record.
fn vol_def(record: &SnapshotRecord) -> Option<&VolSnapshotDef> {
    match record {
        SnapshotRecord::Volume(v) => Some(v),
        SnapshotRecord::Domain(_) => None,
    }
}

/// The `<volume>` of a snapshot of `volume` taken by `driver`: a local
/// volume by its `<path>`, a network volume (`rbd:pool/image`) by its
/// name as `<key>`, as libvirt keys network storage volumes.
fn volume_ref(volume: &Volume, driver: Option<String>) -> VolumeRef {
    let name = volume.path.to_string_lossy().into_owned();
    let (path, key) = if volume.is_network() {
        (None, Some(name))
    } else {
        (Some(name), None)
    };
    VolumeRef {
        path,
        key,
        format: storage_format(&volume.format),
        driver,
    }
}

/// What a driver needs to know of a stored snapshot.
fn snapshot_ref(def: &VolSnapshotDef) -> SnapshotRef {
    SnapshotRef {
        name: def.name.clone().unwrap_or_default(),
        mode: driver_mode(def.target.mode),
        file: def.target.source.path.as_ref().map(PathBuf::from),
        checksum: def.target.checksum.as_ref().map(|c| Checksum {
            algorithm: c.algorithm.clone(),
            value: c.value.clone(),
        }),
    }
}

impl VolumeApi {
    /// The API over the state directory of `layout`, with `drivers` in
    /// order of preference.
    #[must_use]
    pub fn new(layout: Layout, drivers: Vec<Arc<dyn VolumeDriver>>) -> Self {
        Self { layout, drivers }
    }

    /// The volume at `path`, its format read from its first bytes (qcow2
    /// or raw) unless given.
    ///
    /// # Errors
    /// [`VolumeError::NoVolume`], or the file cannot be read.
    pub fn volume(&self, path: &Path, format: Option<VolumeFormat>) -> Result<Volume, VolumeError> {
        if let Some(name) = path.to_str()
            && let Some(protocol) = crate::driver::network_protocol(name)
        {
            // A network volume (`rbd:pool/image`): only a driver for its
            // protocol can tell whether it exists, when it is asked.
            let volume = Volume::new(name, format.unwrap_or(VolumeFormat::Raw));
            if !self.drivers.iter().any(|d| d.handles(&volume)) {
                return Err(VolumeError::Invalid(format!(
                    "no driver handles {protocol} volumes such as {name}; install the plugin \
                     for {protocol} (see `virtsnap plugin-list`) or give a file path"
                )));
            }
            return Ok(volume);
        }
        let absolute = std::path::absolute(path).map_err(|_| VolumeError::NoVolume {
            path: path.to_path_buf(),
        })?;
        if !absolute.exists() {
            return Err(VolumeError::NoVolume {
                path: path.to_path_buf(),
            });
        }
        let format = match format {
            Some(f) => f,
            None => {
                use std::io::Read as _;
                let mut magic = [0u8; 4];
                let mut file = std::fs::File::open(&absolute)
                    .map_err(DriverError::io("opening", &absolute))?;
                let read = file
                    .read(&mut magic)
                    .map_err(DriverError::io("reading", &absolute))?;
                if read == 4 && magic == QCOW2_MAGIC {
                    VolumeFormat::Qcow2
                } else {
                    VolumeFormat::Raw
                }
            }
        };
        Ok(Volume::new(absolute, format))
    }

    fn owner(volume: &Volume) -> Owner {
        Owner::Volume(volume.path.to_string_lossy().into_owned())
    }

    fn label(volume: &Volume) -> String {
        volume.path.display().to_string()
    }

    /// Opens the volume's metadata.
    ///
    /// # Errors
    /// As [`MetadataStore::open`].
    pub fn store(&self, volume: &Volume, access: Access) -> Result<MetadataStore, VolumeError> {
        Ok(MetadataStore::open(
            &self.layout,
            Self::owner(volume),
            access,
        )?)
    }

    fn driver(&self, kind: &str) -> Option<&Arc<dyn VolumeDriver>> {
        self.drivers.iter().find(|d| d.kind() == kind)
    }

    /// The driver for `mode` on `volume`: the one named, else the first
    /// that declares the mode, with its capabilities.
    async fn choose(
        &self,
        volume: &Volume,
        mode: SnapshotMode,
        named: Option<&str>,
    ) -> Result<(Arc<dyn VolumeDriver>, Capabilities), VolumeError> {
        let mut refusals = Vec::new();
        for driver in &self.drivers {
            if named.is_some_and(|n| n != driver.kind()) || !driver.handles(volume) {
                continue;
            }
            let caps = driver.capabilities(volume, VolumeState::Offline).await?;
            if caps.supports(mode) {
                return Ok((Arc::clone(driver), caps));
            }
            refusals.push(driver.kind());
        }
        let hint = match (mode, &volume.format) {
            _ if volume.is_network() && named.is_none() => format!(
                "no plugin takes {} volumes in {mode} mode; `virtsnap plugin-list --volume {}` \
                 shows what each plugin can do with it (install the plugin for its protocol)",
                volume.network_protocol().unwrap_or_default(),
                Self::label(volume)
            ),
            (SnapshotMode::Internal | SnapshotMode::External, VolumeFormat::Raw) => {
                "use --mode copy or convert to qcow2 (qemu-img convert -O qcow2)".to_string()
            }
            _ if named.is_some() && refusals.is_empty() => format!(
                "no driver named '{}' is available; known: {}",
                named.unwrap_or_default(),
                self.drivers
                    .iter()
                    .map(|d| d.kind())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "use another --mode".to_string(),
        };
        Err(VolumeError::NoDriver {
            volume: Self::label(volume),
            format: volume.format.to_string(),
            mode,
            hint,
        })
    }

    /// The mode of a first snapshot of `volume`: internal when the first
    /// driver (of those allowed by `named`) that takes the volume keeps
    /// snapshots inside it (qcow2, LVM, btrfs subvolumes), else a copy.
    async fn default_mode(
        &self,
        volume: &Volume,
        named: Option<&str>,
    ) -> Result<SnapshotMode, VolumeError> {
        for driver in &self.drivers {
            if named.is_some_and(|n| n != driver.kind()) || !driver.handles(volume) {
                continue;
            }
            let caps = driver.capabilities(volume, VolumeState::Offline).await?;
            if caps.internal {
                return Ok(SnapshotMode::Internal);
            }
            if caps.copy {
                return Ok(SnapshotMode::Copy);
            }
        }
        // Nothing takes it: `choose` explains why for this mode.
        Ok(if volume.format == VolumeFormat::Qcow2 {
            SnapshotMode::Internal
        } else {
            SnapshotMode::Copy
        })
    }

    /// The definition of `name`, with the driver that made it.
    fn stored(
        store: &MetadataStore,
        volume: &Volume,
        name: &str,
    ) -> Result<VolSnapshotDef, VolumeError> {
        store
            .get(name)
            .and_then(vol_def)
            .cloned()
            .ok_or_else(|| VolumeError::NoSnapshot {
                volume: Self::label(volume),
                name: name.to_string(),
            })
    }

    fn driver_of(
        &self,
        volume: &Volume,
        def: &VolSnapshotDef,
    ) -> Result<Arc<dyn VolumeDriver>, VolumeError> {
        let kind = def
            .volume
            .as_ref()
            .and_then(|v| v.driver.as_deref())
            .unwrap_or("");
        self.driver(kind).cloned().ok_or_else(|| {
            VolumeError::Invalid(format!(
                "snapshot '{}' of {} was taken by driver '{kind}', which is not available here",
                def.name.as_deref().unwrap_or_default(),
                Self::label(volume)
            ))
        })
    }

    /// `virStorageVolSnapshotCreateXML`: takes a snapshot of `volume`,
    /// described by `xml` (a `<volsnapshot>`, optional) and `options`
    /// (which win over the XML), and returns its definition. It becomes
    /// the current snapshot, child of the previous current one.
    ///
    /// # Errors
    /// Invalid XML or options, a taken name, no driver for the mode, the
    /// driver's refusal or failure (nothing is left behind), or the store's.
    pub async fn snapshot_create_xml(
        &self,
        volume: &Volume,
        xml: Option<&str>,
        options: &CreateOptions,
        progress: Option<&Progress>,
    ) -> Result<VolSnapshotDef, VolumeError> {
        let created_at = now();
        let mut def = match xml {
            Some(text) => {
                let mut parse = ParseOptions::new(ParseFlags::VALIDATE);
                parse.creation_time = Some(created_at);
                VolSnapshotDef::parse(text, &parse)?.def
            }
            None => VolSnapshotDef {
                name: Some(created_at.to_string()),
                ..VolSnapshotDef::default()
            },
        };
        def.creation_time = Some(created_at);
        if let Some(n) = &options.name {
            def.name = Some(n.clone());
        }
        if options.description.is_some() {
            def.description.clone_from(&options.description);
        }
        let name = def.name.clone().unwrap_or_else(|| created_at.to_string());
        crate::store::layout::snapshot_file_name(&name)?;
        let mut store = self.store(volume, Access::Write)?;
        let named = options
            .driver
            .as_deref()
            .or(def.volume.as_ref().and_then(|v| v.driver.as_deref()));
        // Default mode: what the volume's snapshots already use (they are
        // all of one family, so one of them says), else what the first
        // driver that takes the volume prefers.
        let existing = Self::family(&store);
        let mode = match options
            .mode
            .or(def.target.mode.map(|m| driver_mode(Some(m))))
            .or(existing)
        {
            Some(mode) => mode,
            None => self.default_mode(volume, named).await?,
        };
        let (driver, caps) = self.choose(volume, mode, named).await?;
        let file = match mode {
            SnapshotMode::Internal => None,
            _ => Some(
                options
                    .file
                    .clone()
                    .or_else(|| def.target.source.path.as_ref().map(PathBuf::from))
                    .map_or_else(|| default_file(volume, &name), Ok)?,
            ),
        };
        if let Some(f) = &file
            && f.exists()
        {
            return Err(DriverError::Exists {
                what: format!("snapshot file {}", f.display()),
            }
            .into());
        }
        let plan = SnapshotPlan {
            name: name.clone(),
            mode,
            file: file.clone(),
            checksum: options.checksum && caps.checksums,
            writable: options.writable,
        };
        if store.tree().contains(&name) {
            return Err(VolumeError::NameTaken {
                volume: Self::label(volume),
                name,
            });
        }
        Self::check_mixing(&store, volume, mode)?;
        def.name = Some(name.clone());
        def.state = Some(VolSnapshotState::Offline);
        def.volume = Some(volume_ref(volume, Some(driver.kind().to_string())));
        def.target.mode = Some(conf_mode(mode));
        def.target.source = match &file {
            Some(f) => DiskSource::file(f.to_string_lossy().into_owned()),
            None => DiskSource::new(snapshot_conf::SourceKind::File),
        };
        if options.dry_run {
            def.parent = store.tree().current().map(str::to_string);
            return Ok(def);
        }
        let payload = create_payload(driver.kind(), &plan);
        store.begin_intent(Intent::new(OP_CREATE, &[Recovery::RollBack], &payload))?;
        let created = match driver.create(volume, &plan, progress).await {
            Ok(c) => c,
            Err(e) => {
                // The driver left nothing behind: the intent can go.
                let _ = store.end_intent();
                return Err(e.into());
            }
        };
        // No advance_intent here: a create is rolled back from any step.
        if let Some(f) = &created.format {
            def.target.format = storage_format(f);
        }
        def.target.checksum = created.checksum.as_ref().map(|c| VolChecksum {
            algorithm: c.algorithm.clone(),
            value: c.value.clone(),
        });
        if let Err(e) = store.create(SnapshotRecord::Volume(Box::new(def.clone()))) {
            // Undone: nothing is left, the intent can go. Not undone: the
            // intent stays, and recovery rolls the create back.
            if driver.undo(volume, &created).await.is_ok() {
                let _ = store.end_intent();
            }
            return Err(e.into());
        }
        store.end_intent()?;
        def.parent = store
            .get(&name)
            .and_then(vol_def)
            .and_then(|d| d.parent.clone());
        Ok(def)
    }

    /// Writes the changes between snapshot `from` (or the volume's
    /// beginning) and snapshot `name` to the new file `file`, through the
    /// driver that took `name` (RBD's `export-diff`): replayed with
    /// [`VolumeApi::snapshot_import`] on another volume, it reproduces
    /// `name` there. Only reads the volume.
    ///
    /// # Errors
    /// An unknown snapshot, snapshots of two drivers, an existing file,
    /// the driver's refusal (no incremental export) or failure.
    pub async fn snapshot_export(
        &self,
        volume: &Volume,
        name: &str,
        from: Option<&str>,
        file: &Path,
        progress: Option<&Progress>,
    ) -> Result<crate::driver::ExportedDiff, VolumeError> {
        let store = self.store(volume, Access::Read)?;
        let def = Self::stored(&store, volume, name)?;
        let driver = self.driver_of(volume, &def)?;
        let from_ref = match from {
            Some(f) => {
                let from_def = Self::stored(&store, volume, f)?;
                if from_def.volume.as_ref().and_then(|v| v.driver.as_deref()) != Some(driver.kind())
                {
                    return Err(VolumeError::Invalid(format!(
                        "snapshots '{f}' and '{name}' of {} were taken by different drivers; \
                         an incremental export runs between two snapshots of one driver",
                        Self::label(volume)
                    )));
                }
                Some(snapshot_ref(&from_def))
            }
            None => None,
        };
        if file.exists() {
            return Err(DriverError::Exists {
                what: format!("export file {}", file.display()),
            }
            .into());
        }
        Ok(driver
            .export_diff(
                volume,
                &snapshot_ref(&def),
                from_ref.as_ref(),
                file,
                progress,
            )
            .await?)
    }

    /// Replays `file` (written by [`VolumeApi::snapshot_export`]) on
    /// `volume` and records the snapshot it creates, as a child of the
    /// diff's start snapshot when this volume's metadata knows it (else
    /// of the current snapshot); it becomes current. `volume` must hold
    /// the start snapshot in its storage. Interrupted, the import is run
    /// again: the storage's import is idempotent until its end snapshot
    /// exists, and an end snapshot created but not recorded is found by
    /// `vol-snapshot-discover`.
    ///
    /// # Errors
    /// No driver that imports, the end snapshot's name taken, the
    /// driver's refusal or failure, or the store's.
    pub async fn snapshot_import(
        &self,
        volume: &Volume,
        file: &Path,
        named: Option<&str>,
        progress: Option<&Progress>,
    ) -> Result<VolSnapshotDef, VolumeError> {
        let mut store = self.store(volume, Access::Write)?;
        // The driver of the volume's snapshots, else the first that takes
        // the volume in any mode.
        let recorded = Self::family_driver(&store);
        let named = named.or(recorded.as_deref());
        let mut chosen = None;
        for driver in &self.drivers {
            if named.is_some_and(|n| n != driver.kind()) || !driver.handles(volume) {
                continue;
            }
            let caps = driver.capabilities(volume, VolumeState::Offline).await?;
            if caps.internal || caps.external || caps.copy {
                chosen = Some(Arc::clone(driver));
                break;
            }
        }
        let Some(driver) = chosen else {
            return Err(VolumeError::Invalid(format!(
                "no driver takes {}; give a volume a plugin handles (see `virtsnap plugin-list`)",
                Self::label(volume)
            )));
        };
        let imported = driver.import_diff(volume, file, progress).await?;
        let created = CreatedSnapshot {
            name: imported.snapshot.clone(),
            mode: SnapshotMode::Internal,
            file: None,
            format: None,
            checksum: None,
            size: Some(imported.size),
        };
        let record = |store: &mut MetadataStore| -> Result<VolSnapshotDef, VolumeError> {
            if store.tree().contains(&imported.snapshot) {
                return Err(VolumeError::NameTaken {
                    volume: Self::label(volume),
                    name: imported.snapshot.clone(),
                });
            }
            if let Some(from) = &imported.from
                && store.tree().contains(from)
            {
                store.set_current(Some(from))?;
            }
            let created_at = now();
            let def = VolSnapshotDef {
                name: Some(imported.snapshot.clone()),
                description: Some(format!(
                    "imported from {}{}",
                    file.display(),
                    imported
                        .from
                        .as_ref()
                        .map(|f| format!(" (changes since '{f}')"))
                        .unwrap_or_default()
                )),
                creation_time: Some(created_at),
                state: Some(VolSnapshotState::Offline),
                volume: Some(volume_ref(volume, Some(driver.kind().to_string()))),
                target: snapshot_conf::VolSnapshotTarget {
                    mode: Some(VolSnapshotMode::Internal),
                    source: DiskSource::new(snapshot_conf::SourceKind::File),
                    ..snapshot_conf::VolSnapshotTarget::default()
                },
                ..VolSnapshotDef::default()
            };
            store.create(SnapshotRecord::Volume(Box::new(def.clone())))?;
            Ok(def)
        };
        match record(&mut store) {
            Ok(mut def) => {
                def.parent = store
                    .get(&imported.snapshot)
                    .and_then(vol_def)
                    .and_then(|d| d.parent.clone());
                Ok(def)
            }
            Err(VolumeError::NameTaken { volume: v, name }) => {
                // Imported into storage under a name the metadata already
                // uses for another snapshot: take the import back.
                let _ = driver.undo(volume, &created).await;
                Err(VolumeError::NameTaken { volume: v, name })
            }
            Err(e) => Err(e),
        }
    }

    /// One of the volume's snapshots, to speak for all of them: the
    /// current one, else the first. Every snapshot of a volume is of one
    /// family (external overlays, or internal snapshots and copies, which
    /// [`VolumeApi::check_mixing`] keeps) and of one driver, so one read
    /// answers for all; reading every definition would cost a file per
    /// snapshot.
    fn representative(store: &MetadataStore) -> Option<&VolSnapshotDef> {
        let tree = store.tree();
        let name = match tree.current() {
            Some(c) => c.to_string(),
            None => tree.list(&ListFilter::default()).ok()?.first()?.to_string(),
        };
        store.get(&name).and_then(vol_def)
    }

    /// The driver that took the volume's snapshots.
    fn family_driver(store: &MetadataStore) -> Option<String> {
        Self::representative(store).and_then(|d| d.volume.as_ref()?.driver.clone())
    }

    /// The mode of the volume's snapshots.
    fn family(store: &MetadataStore) -> Option<SnapshotMode> {
        Self::representative(store).map(|d| driver_mode(d.target.mode))
    }

    /// Refuses mixing external snapshots with the others on one volume:
    /// an external snapshot moves the volume's file (with any internal
    /// snapshot inside it) under a new overlay, and a copy of an overlay
    /// depends on the chain below it, so either would stop meaning what
    /// its metadata says.
    fn check_mixing(
        store: &MetadataStore,
        volume: &Volume,
        mode: SnapshotMode,
    ) -> Result<(), VolumeError> {
        let existing = Self::family(store)
            .filter(|m| (*m == SnapshotMode::External) != (mode == SnapshotMode::External));
        match existing {
            None => Ok(()),
            Some(other) => Err(VolumeError::Invalid(format!(
                "{} already has {other} snapshots; {mode} and {other} snapshots cannot be \
                 mixed on one volume (an external snapshot moves the volume's file under a new \
                 overlay); keep to --mode {other}, or delete its snapshots first",
                Self::label(volume)
            ))),
        }
    }

    /// `virStorageVolSnapshotListNames`, in creation order.
    ///
    /// # Errors
    /// The store's.
    pub fn snapshot_list_names(&self, volume: &Volume) -> Result<Vec<String>, VolumeError> {
        let store = self.store(volume, Access::Read)?;
        let mut names: Vec<(i64, String)> = store
            .tree()
            .list(&ListFilter::default())
            .map_err(StoreError::from)?
            .into_iter()
            .map(|n| {
                let t = store.tree().get(n).map_or(0, |i| i.creation_time);
                (t, n.to_string())
            })
            .collect();
        names.sort();
        Ok(names.into_iter().map(|(_, n)| n).collect())
    }

    /// `virStorageVolSnapshotNum`.
    ///
    /// # Errors
    /// The store's.
    pub fn snapshot_num(&self, volume: &Volume) -> Result<usize, VolumeError> {
        Ok(self.store(volume, Access::Read)?.tree().len())
    }

    /// The snapshots the volume's storage holds that its metadata does not
    /// know: internal snapshots a qcow2 got from `qemu-img snapshot -c` or
    /// from libvirt. Oldest first.
    ///
    /// # Errors
    /// The volume or its store cannot be read.
    pub async fn snapshot_discover(
        &self,
        volume: &Volume,
    ) -> Result<Vec<(String, StorageSnapshot)>, VolumeError> {
        let store = self.store(volume, Access::Read)?;
        let mut found = Vec::new();
        for driver in &self.drivers {
            if !driver.handles(volume) {
                continue;
            }
            let caps = driver.capabilities(volume, VolumeState::Offline).await?;
            if !caps.list {
                continue;
            }
            for snapshot in driver.list(volume).await? {
                if !store.tree().contains(&snapshot.name) {
                    found.push((driver.kind().to_string(), snapshot));
                }
            }
        }
        found.sort_by_key(|(_, x)| x.created.unwrap_or(0));
        Ok(found)
    }

    /// Records the snapshots [`VolumeApi::snapshot_discover`] finds (all,
    /// or those in `only`) as the volume's snapshots, without touching the
    /// storage. The storage does not say how they descend from each
    /// other, so they are taken as one line of history: oldest first, each
    /// the child of the one before, the first the child of the current
    /// snapshot, the newest becoming current (as if they had been taken
    /// through virtsnap in that order). Returns the names recorded.
    ///
    /// # Errors
    /// A name in `only` is not found in the storage, a name the store
    /// cannot take, a volume with external snapshots (whose overlay's
    /// internal snapshots would mix the two families), a store failure.
    pub async fn snapshot_import_discovered(
        &self,
        volume: &Volume,
        only: Option<&[String]>,
    ) -> Result<Vec<String>, VolumeError> {
        let mut found = self.snapshot_discover(volume).await?;
        if let Some(only) = only {
            for name in only {
                if !found.iter().any(|(_, x)| &x.name == name) {
                    return Err(VolumeError::Invalid(format!(
                        "{} holds no unrecorded snapshot named '{name}'; see vol-snapshot-discover",
                        Self::label(volume)
                    )));
                }
            }
            found.retain(|(_, x)| only.contains(&x.name));
        }
        for (_, x) in &found {
            crate::store::layout::snapshot_file_name(&x.name)?;
        }
        let mut store = self.store(volume, Access::Write)?;
        Self::check_mixing(&store, volume, SnapshotMode::Internal)?;
        let mut names = Vec::new();
        for (kind, x) in found {
            if store.tree().contains(&x.name) {
                continue;
            }
            let def = VolSnapshotDef {
                name: Some(x.name.clone()),
                description: None,
                state: Some(VolSnapshotState::Offline),
                parent: None,
                creation_time: Some(x.created.unwrap_or_else(now)),
                volume: Some(volume_ref(volume, Some(kind))),
                target: snapshot_conf::VolSnapshotTarget {
                    mode: Some(conf_mode(x.mode)),
                    source: DiskSource::new(snapshot_conf::SourceKind::File),
                    ..snapshot_conf::VolSnapshotTarget::default()
                },
            };
            store.create(SnapshotRecord::Volume(Box::new(def)))?;
            names.push(x.name);
        }
        Ok(names)
    }

    /// `virStorageVolHasCurrentSnapshot`.
    ///
    /// # Errors
    /// The store's.
    pub fn has_current_snapshot(&self, volume: &Volume) -> Result<bool, VolumeError> {
        Ok(self.store(volume, Access::Read)?.tree().current().is_some())
    }

    /// `virStorageVolSnapshotCurrent`: the current snapshot's definition.
    ///
    /// # Errors
    /// [`VolumeError::NoCurrent`], or the store's.
    pub fn snapshot_current(&self, volume: &Volume) -> Result<VolSnapshotDef, VolumeError> {
        let store = self.store(volume, Access::Read)?;
        let name = store
            .tree()
            .current()
            .ok_or_else(|| VolumeError::NoCurrent {
                volume: Self::label(volume),
            })?
            .to_string();
        Self::stored(&store, volume, &name)
    }

    /// `virStorageVolSnapshotLookupByName`.
    ///
    /// # Errors
    /// [`VolumeError::NoSnapshot`], or the store's.
    pub fn snapshot_lookup_by_name(
        &self,
        volume: &Volume,
        name: &str,
    ) -> Result<VolSnapshotDef, VolumeError> {
        let store = self.store(volume, Access::Read)?;
        let mut def = Self::stored(&store, volume, name)?;
        def.parent = store
            .tree()
            .parent(name)
            .map_err(StoreError::from)?
            .map(str::to_string);
        Ok(def)
    }

    /// `virStorageVolSnapshotGetXMLDesc`: the `<volsnapshot>` of `name`.
    ///
    /// # Errors
    /// As [`VolumeApi::snapshot_lookup_by_name`].
    pub fn snapshot_get_xml_desc(
        &self,
        volume: &Volume,
        name: &str,
    ) -> Result<String, VolumeError> {
        let def = self.snapshot_lookup_by_name(volume, name)?;
        Ok(def.format(&FormatOptions::new(FormatFlags::SECURE)))
    }

    /// `virStorageVolRevertToSnapshot`: the volume's content becomes
    /// `name`'s and `name` becomes current. Later snapshots stay unless
    /// `options.drop_newer` (then `name`'s descendants are deleted).
    ///
    /// # Errors
    /// Unknown snapshot, the driver's refusal (a checksum mismatch changes
    /// nothing), or the store's.
    pub async fn revert_to_snapshot(
        &self,
        volume: &Volume,
        name: &str,
        options: RevertOptions,
        progress: Option<&Progress>,
    ) -> Result<RevertOutcome, VolumeError> {
        let mut store = self.store(volume, Access::Write)?;
        let def = Self::stored(&store, volume, name)?;
        let driver = self.driver_of(volume, &def)?;
        let target = snapshot_ref(&def);
        store.begin_intent(Intent::new(OP_REVERT, &[Recovery::Finish], name))?;
        let outcome = match driver
            .revert(volume, &target, options.verify, progress)
            .await
        {
            Ok(outcome) => outcome,
            Err(e) => {
                // Drivers change nothing when they fail.
                let _ = store.end_intent();
                return Err(e.into());
            }
        };
        store.advance_intent(1, None)?;
        if outcome == RevertOutcome::Done {
            store.set_current(Some(name))?;
        }
        store.end_intent()?;
        drop(store);
        if options.drop_newer {
            self.snapshot_delete(volume, name, DeletePolicy::ChildrenOnly, progress)
                .await?;
        }
        if let RevertOutcome::Deferred { .. } = &outcome {
            let mut store = self.store(volume, Access::Write)?;
            Self::forget_consumed(&mut store, name)?;
        }
        Ok(outcome)
    }

    /// Forgets `name`, whose storage a deferred revert consumes: its
    /// children move to its parent, which becomes current (the volume's
    /// state descends from it once the revert finishes).
    fn forget_consumed(store: &mut MetadataStore, name: &str) -> Result<(), VolumeError> {
        if !store.tree().contains(name) {
            return Ok(());
        }
        let parent = store
            .tree()
            .parent(name)
            .map_err(StoreError::from)?
            .map(str::to_string);
        store.delete(name, ChildPolicy::Rebase)?;
        store.set_current(parent.as_deref())?;
        Ok(())
    }

    /// `virStorageVolSnapshotDelete`.
    ///
    /// # Errors
    /// Unknown snapshot, a driver's refusal (children it cannot rebase),
    /// or the store's. Storage deleted before a failure stays deleted and
    /// its metadata goes with it.
    pub async fn snapshot_delete(
        &self,
        volume: &Volume,
        name: &str,
        policy: DeletePolicy,
        progress: Option<&Progress>,
    ) -> Result<Vec<String>, VolumeError> {
        self.snapshot_delete_flattening(volume, name, policy, false, progress)
            .await
    }

    /// [`VolumeApi::snapshot_delete`], with `flatten_clones`: storage-level
    /// clones of the deleted snapshots (RBD clones) are flattened first
    /// instead of making the delete refuse ([`DeleteContext::flatten_clones`]).
    /// A crash in between is finished the same way by a recovery.
    ///
    /// # Errors
    /// As [`VolumeApi::snapshot_delete`].
    pub async fn snapshot_delete_flattening(
        &self,
        volume: &Volume,
        name: &str,
        policy: DeletePolicy,
        flatten_clones: bool,
        progress: Option<&Progress>,
    ) -> Result<Vec<String>, VolumeError> {
        let mut store = self.store(volume, Access::Write)?;
        Self::stored(&store, volume, name)?;
        if policy == DeletePolicy::MetadataOnly {
            return Ok(store.delete(name, ChildPolicy::Rebase)?);
        }
        // Children first: each is a leaf when its turn comes (reversed
        // pre-order puts every snapshot after all its descendants).
        let doomed: Vec<String> = match policy {
            DeletePolicy::Rebase | DeletePolicy::MetadataOnly => vec![name.to_string()],
            DeletePolicy::Children | DeletePolicy::ChildrenOnly => {
                let tree = store.tree();
                let mut order = Vec::new();
                let mut stack = vec![name.to_string()];
                while let Some(n) = stack.pop() {
                    for c in tree.children(&n).map_err(StoreError::from)? {
                        stack.push(c.to_string());
                    }
                    order.push(n);
                }
                if policy == DeletePolicy::ChildrenOnly {
                    order.remove(0);
                }
                order.reverse();
                order
            }
        };
        store.begin_intent(Intent::new(
            if flatten_clones {
                OP_DELETE_FLATTEN
            } else {
                OP_DELETE
            },
            &[Recovery::Finish],
            &doomed.join("\n"),
        ))?;
        for (step, gone) in doomed.iter().enumerate() {
            if let Err(e) = self
                .delete_storage(&store, volume, gone, flatten_clones, progress)
                .await
            {
                // A refusal changed nothing: the snapshots deleted before
                // it are gone with their metadata, the rest are intact,
                // and there is nothing for a recovery to finish.
                if let VolumeError::Driver(d) = &e
                    && d.changed_nothing()
                {
                    store.end_intent()?;
                }
                return Err(e);
            }
            // Its storage is gone: its metadata goes now, so a failure
            // later never leaves metadata naming storage that is gone.
            store.delete(gone, ChildPolicy::Rebase)?;
            store.advance_intent(u32::try_from(step + 1).unwrap_or(u32::MAX), None)?;
        }
        store.end_intent()?;
        Ok(doomed)
    }

    /// Removes the storage of `name`, its current children keeping their
    /// contents.
    async fn delete_storage(
        &self,
        store: &MetadataStore,
        volume: &Volume,
        name: &str,
        flatten_clones: bool,
        progress: Option<&Progress>,
    ) -> Result<(), VolumeError> {
        let def = Self::stored(store, volume, name)?;
        let driver = self.driver_of(volume, &def)?;
        let tree = store.tree();
        let refs_of = |names: Vec<&str>| -> Vec<SnapshotRef> {
            names
                .into_iter()
                .filter_map(|n| store.get(n).and_then(vol_def).map(snapshot_ref))
                .collect()
        };
        let context = DeleteContext {
            parent: tree
                .parent(name)
                .map_err(StoreError::from)?
                .and_then(|p| store.get(p).and_then(vol_def).map(snapshot_ref)),
            children: refs_of(tree.children(name).map_err(StoreError::from)?),
            is_current: tree.is_current(name),
            flatten_clones,
        };
        driver
            .delete(volume, &snapshot_ref(&def), &context, progress)
            .await?;
        Ok(())
    }

    /// Recovers an operation on `volume` that a crash interrupted (see the
    /// module comment): a create is rolled back (its storage undone, its
    /// metadata removed), a revert or delete is finished.
    ///
    /// # Errors
    /// Nothing pending, or the recovery failed (the intent stays).
    pub async fn recover(&self, volume: &Volume) -> Result<(Intent, Recovery), VolumeError> {
        let mut store = self.store(volume, Access::Write)?;
        let Some(pending) = store.pending_intent().cloned() else {
            return Err(VolumeError::Invalid(format!(
                "no interrupted operation is pending on {}",
                Self::label(volume)
            )));
        };
        let how = pending.recoveries[0];
        // Recovery needs the drivers, which are async: do the storage part
        // here, then let the store's handler finish the metadata and clear
        // the intent.
        match pending.operation.as_str() {
            OP_CREATE => {
                let (kind, plan) = parse_create_payload(&pending.payload).ok_or_else(|| {
                    VolumeError::Invalid(format!(
                        "the record of the interrupted create on {} cannot be read",
                        Self::label(volume)
                    ))
                })?;
                if store.tree().contains(&plan.name) {
                    store.delete(&plan.name, ChildPolicy::Rebase)?;
                }
                if let Some(driver) = self.driver(&kind) {
                    let created = CreatedSnapshot {
                        name: plan.name.clone(),
                        mode: plan.mode,
                        file: plan.file.clone(),
                        format: None,
                        checksum: None,
                        size: None,
                    };
                    driver.undo(volume, &created).await?;
                }
            }
            OP_REVERT => {
                let name = pending.payload.trim();
                let mut outcome = RevertOutcome::Done;
                if pending.step == 0 {
                    let def = Self::stored(&store, volume, name)?;
                    let driver = self.driver_of(volume, &def)?;
                    outcome = driver
                        .revert(volume, &snapshot_ref(&def), false, None)
                        .await?;
                }
                if let RevertOutcome::Deferred { .. } = outcome {
                    Self::forget_consumed(&mut store, name)?;
                } else if store.tree().contains(name) {
                    store.set_current(Some(name))?;
                }
            }
            OP_DELETE | OP_DELETE_FLATTEN => {
                for name in pending.payload.lines().filter(|n| !n.is_empty()) {
                    if !store.tree().contains(name) {
                        continue;
                    }
                    let flatten = pending.operation == OP_DELETE_FLATTEN;
                    self.delete_storage(&store, volume, name, flatten, None)
                        .await?;
                    store.delete(name, ChildPolicy::Rebase)?;
                }
            }
            _ => {}
        }
        Ok(store.recover_intent(&[&StorageDone(&pending.operation)], Some(how))?)
    }
}

/// `VOLUME.NAME` beside the volume.
fn default_file(volume: &Volume, name: &str) -> Result<PathBuf, VolumeError> {
    let file = format!("{}.{name}", volume.file_name());
    if file.len() > 255 {
        return Err(VolumeError::Invalid(format!(
            "the snapshot file name '{file}' would be longer than 255 bytes; give a shorter \
             snapshot name or a file with --file"
        )));
    }
    Ok(volume
        .path
        .parent()
        .map_or_else(|| PathBuf::from(&file), |d| d.join(&file)))
}

/// The payload of a create intent: driver kind, mode, name, file.
fn create_payload(kind: &str, plan: &SnapshotPlan) -> String {
    format!(
        "{kind}\n{}\n{}\n{}\n",
        plan.mode,
        plan.name,
        plan.file
            .as_ref()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}

fn parse_create_payload(payload: &str) -> Option<(String, SnapshotPlan)> {
    let mut lines = payload.split('\n');
    let kind = lines.next()?.to_string();
    let mode = match lines.next()? {
        "internal" => SnapshotMode::Internal,
        "external" => SnapshotMode::External,
        "copy" => SnapshotMode::Copy,
        _ => return None,
    };
    let name = lines.next()?.to_string();
    let file = lines.next()?;
    Some((
        kind,
        SnapshotPlan {
            name,
            mode,
            file: (!file.is_empty()).then(|| PathBuf::from(file)),
            checksum: false,
            writable: false,
        },
    ))
}
