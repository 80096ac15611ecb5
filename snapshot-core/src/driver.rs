//! The storage side of a snapshot: the [`VolumeDriver`] trait every
//! storage backend implements (full file copy, qcow2 internal and
//! external, LVM, btrfs, plugins), the volume it works on, what it can do
//! ([`Capabilities`]), what it is asked ([`SnapshotPlan`], [`SnapshotRef`],
//! [`DeleteContext`]) and what it answers ([`CreatedSnapshot`],
//! [`StorageSnapshot`], [`DriverError`]).
//!
//! Drivers only touch storage. The snapshot tree and its metadata belong
//! to the caller (the volume API, the executor), which hands a driver the
//! part of the tree an operation needs (the snapshot's parent and children
//! for a delete, say), records what the driver created, and journals
//! multi-step work through the store's intents. A driver knows nothing of
//! other drivers.
//!
//! Drivers are async (`async-trait`); blocking work (file copies, ioctls)
//! runs on `tokio::task::spawn_blocking`, tools (`qemu-img`, `lvcreate`)
//! run as child processes with async I/O, so a driver never blocks the
//! runtime.
//!
//! An operation a driver cannot do is refused with
//! [`DriverError::Unsupported`], which names the operation and what to do
//! instead; never a silent `Ok`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

/// The format of a volume's bytes, as far as snapshots care.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VolumeFormat {
    /// Raw bytes (a plain file or a block device).
    Raw,
    /// A qcow2 image.
    Qcow2,
    /// Anything else, by its `qemu-img` name (`vmdk`, `vdi`, ...): only
    /// whole copies can snapshot it.
    Other(String),
}

impl VolumeFormat {
    /// Its `qemu-img` name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Other(name) => name,
        }
    }

    /// The format named `name` (`qemu-img`'s names).
    #[must_use]
    pub fn from_name(name: &str) -> Self {
        match name {
            "raw" => Self::Raw,
            "qcow2" => Self::Qcow2,
            other => Self::Other(other.to_string()),
        }
    }
}

impl fmt::Display for VolumeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A storage volume: what drivers snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Volume {
    /// Where it is: a file or a block device (absolute).
    pub path: PathBuf,
    /// Its format.
    pub format: VolumeFormat,
}

impl Volume {
    /// A volume at `path` in `format`.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>, format: VolumeFormat) -> Self {
        Self {
            path: path.into(),
            format,
        }
    }

    /// The protocol of a network volume: `rbd` for `rbd:pool/image`.
    /// A network volume is named `PROTOCOL:NAME[:OPTION=VALUE...]` (QEMU's
    /// and libvirt's legacy names, `rbd:pool/image:conf=/etc/ceph/ceph.conf`)
    /// instead of by an absolute path; only drivers that declare the
    /// protocol handle it ([`VolumeDriver::handles`]).
    #[must_use]
    pub fn network_protocol(&self) -> Option<&str> {
        network_protocol(self.path.to_str()?)
    }

    /// Whether it is a network volume (see [`Volume::network_protocol`]).
    #[must_use]
    pub fn is_network(&self) -> bool {
        self.network_protocol().is_some()
    }

    /// Its file name, for messages and derived names.
    #[must_use]
    pub fn file_name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// The protocol of `name` when it names a network volume
/// (`PROTOCOL:NAME...`, the protocol lowercase ASCII letters and digits
/// starting with a letter, and not an absolute path), else `None`.
#[must_use]
pub fn network_protocol(name: &str) -> Option<&str> {
    let (protocol, rest) = name.split_once(':')?;
    let mut chars = protocol.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !rest.is_empty();
    valid.then_some(protocol)
}

/// How a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotMode {
    /// Inside the volume itself (qcow2 internal snapshots, LVM and btrfs
    /// snapshots that the storage names).
    Internal,
    /// A new image the volume's later writes go to, the old one becoming
    /// read-only (qcow2 overlays).
    External,
    /// A full, independent copy of the volume's bytes.
    Copy,
}

impl SnapshotMode {
    /// The word used in XML and on the command line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::External => "external",
            Self::Copy => "copy",
        }
    }
}

impl fmt::Display for SnapshotMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the volume is in use while a driver works on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VolumeState {
    /// No writer has it open.
    Offline,
    /// A running guest writes to it (the hypervisor must cooperate).
    InUse,
}

/// What a driver can do with one volume in one state (asked per volume
/// and state, like Proxmox's `volume_has_feature`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(clippy::struct_excessive_bools)]
pub struct Capabilities {
    /// Internal snapshots.
    pub internal: bool,
    /// External snapshots.
    pub external: bool,
    /// Full copies.
    pub copy: bool,
    /// Reverting to a snapshot.
    pub revert: bool,
    /// Reverting keeps the snapshots taken after the target.
    pub revert_keeps_newer: bool,
    /// Deleting a snapshot with children, the children keeping their
    /// contents ([`crate::ChildPolicy::Rebase`]).
    pub delete_rebase: bool,
    /// Listing what the storage itself holds.
    pub list: bool,
    /// Content checksums recorded at creation and verified on revert.
    pub checksums: bool,
    /// Putting a new overlay on the image at another path, the image
    /// staying as it is underneath ([`VolumeDriver::create_overlay`]: a
    /// domain disk's external snapshot), and the chain operations that
    /// undo such layers ([`VolumeDriver::merge_layer`],
    /// [`VolumeDriver::rebase_layers`]).
    pub overlay: bool,
}

impl Capabilities {
    /// Whether `mode` is supported.
    #[must_use]
    pub fn supports(&self, mode: SnapshotMode) -> bool {
        match mode {
            SnapshotMode::Internal => self.internal,
            SnapshotMode::External => self.external,
            SnapshotMode::Copy => self.copy,
        }
    }

    /// The modes supported, preferred first (internal, external, copy).
    #[must_use]
    pub fn modes(&self) -> Vec<SnapshotMode> {
        [
            SnapshotMode::Internal,
            SnapshotMode::External,
            SnapshotMode::Copy,
        ]
        .into_iter()
        .filter(|m| self.supports(*m))
        .collect()
    }
}

/// A content checksum of a snapshot's data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checksum {
    /// The algorithm (`sha256`).
    pub algorithm: String,
    /// Lowercase hex digest.
    pub value: String,
}

/// What to create: decided by the caller from the request and the
/// driver's capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPlan {
    /// The snapshot's name (already checked by the store's name rules).
    pub name: String,
    /// How to keep it (one the driver declared).
    pub mode: SnapshotMode,
    /// For external and copy snapshots: the new file. The caller derives
    /// a default beside the volume; drivers refuse an existing file.
    pub file: Option<PathBuf>,
    /// Record a checksum of the content (when the driver can).
    pub checksum: bool,
    /// Keep the snapshot writable where the storage makes snapshots
    /// read-only by default (btrfs subvolume snapshots). Drivers whose
    /// snapshots cannot be written refuse it; drivers whose snapshots are
    /// never exposed for writing (copies, qcow2) ignore it.
    pub writable: bool,
}

/// A snapshot as the caller's metadata knows it, handed to a driver to
/// revert to or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    /// Its name.
    pub name: String,
    /// How it is kept.
    pub mode: SnapshotMode,
    /// Its file, for external and copy snapshots.
    pub file: Option<PathBuf>,
    /// The checksum recorded at creation, if any.
    pub checksum: Option<Checksum>,
}

/// The part of the tree a delete needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteContext {
    /// The snapshot's parent, if any.
    pub parent: Option<SnapshotRef>,
    /// Its children (they keep their contents: a driver that cannot
    /// rebase them refuses).
    pub children: Vec<SnapshotRef>,
    /// Whether the volume's current state descends directly from it (it
    /// is the current snapshot): an external driver must rebase the
    /// volume's own image too.
    pub is_current: bool,
    /// Storage-level clones of the snapshot (RBD clones: images made from
    /// it outside virtsnap's tree) are flattened, made independent of it,
    /// before it goes. Without, a driver refuses to delete a snapshot
    /// clones depend on, naming them.
    pub flatten_clones: bool,
}

/// How a revert treats snapshots newer than the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RevertNewer {
    /// They stay (the default; a branch forms on the next snapshot).
    #[default]
    Keep,
    /// The caller deletes them after the revert (the proposal's flag to
    /// discard what came after the target); the driver only reverts.
    Drop,
}

/// How a revert ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevertOutcome {
    /// The volume holds the snapshot's content, and the snapshot is kept.
    Done,
    /// The storage scheduled the revert for later (an LVM merge into an
    /// origin that is open finishes when the origin is next activated),
    /// and consumes the snapshot when it finishes: the caller forgets the
    /// snapshot and reports `message`, which says what happens and what to
    /// do.
    Deferred {
        /// What the user needs to know.
        message: String,
    },
}

/// What a driver created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSnapshot {
    /// The snapshot's name.
    pub name: String,
    /// How it is kept.
    pub mode: SnapshotMode,
    /// The new file (external: the image now holding the snapshot's
    /// state; copy: the copy).
    pub file: Option<PathBuf>,
    /// The file's format, when there is one.
    pub format: Option<VolumeFormat>,
    /// The content checksum, when asked for and supported.
    pub checksum: Option<Checksum>,
    /// Bytes the snapshot occupies, as far as the driver knows.
    pub size: Option<u64>,
}

impl CreatedSnapshot {
    /// A [`SnapshotRef`] to it.
    #[must_use]
    pub fn as_ref(&self) -> SnapshotRef {
        SnapshotRef {
            name: self.name.clone(),
            mode: self.mode,
            file: self.file.clone(),
            checksum: self.checksum.clone(),
        }
    }
}

/// A snapshot the storage itself holds (for discovery and checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSnapshot {
    /// Its name (a qcow2 internal snapshot's tag, a file's snapshot name).
    pub name: String,
    /// How it is kept.
    pub mode: SnapshotMode,
    /// The storage's own id (a qcow2 snapshot id), if any.
    pub id: Option<String>,
    /// Its file, for external and copy snapshots.
    pub file: Option<PathBuf>,
    /// Creation time (seconds since the epoch), when the storage records it.
    pub created: Option<i64>,
    /// Saved VM state bytes (qcow2 internal snapshots made by a running
    /// QEMU), 0 for a disk-only snapshot.
    pub vm_state_size: u64,
    /// Why its data cannot be used, when the storage says so (an LVM
    /// snapshot that overflowed its copy-on-write space): such a snapshot
    /// is never reverted to, only deleted.
    pub invalid: Option<String>,
}

/// What a driver reads from an image in a chain (a qcow2 header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// Its format (`qcow2`).
    pub format: VolumeFormat,
    /// The image it is built on, resolved to a path.
    pub backing: Option<PathBuf>,
    /// Internal snapshots it holds.
    pub internal_snapshots: u32,
    /// Bytes a guest sees.
    pub size: u64,
}

/// What an incremental export wrote ([`VolumeDriver::export_diff`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedDiff {
    /// Bytes of the file written.
    pub file_bytes: u64,
    /// Bytes of volume data that changed between the two snapshots (the
    /// data records in the file).
    pub changed_bytes: u64,
}

/// What an import applied ([`VolumeDriver::import_diff`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedDiff {
    /// The snapshot the import created on the volume (the export's end
    /// snapshot).
    pub snapshot: String,
    /// The snapshot the diff starts from, which the volume had to hold;
    /// `None` for a diff from the beginning.
    pub from: Option<String>,
    /// The volume's size after the import.
    pub size: u64,
}

/// Progress of a long operation (copies, commits): bytes done of total.
pub type Progress = dyn Fn(u64, u64) + Send + Sync;

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The driver cannot do this with this volume.
    #[error("{driver} cannot {operation} for {volume}: {reason}; {hint}")]
    Unsupported {
        /// The driver's kind.
        driver: &'static str,
        /// What was asked (`take an internal snapshot`).
        operation: String,
        /// The volume.
        volume: String,
        /// Why not.
        reason: String,
        /// What to do instead.
        hint: String,
    },
    /// Something the operation needs does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// What (`volume /x`, `snapshot 'a' in /x`).
        what: String,
    },
    /// Something the operation would create exists already; nothing was
    /// changed.
    #[error("{what} already exists; choose another name or remove it first")]
    Exists {
        /// What.
        what: String,
    },
    /// A name the storage cannot take.
    #[error("invalid snapshot name {name:?} for {driver}: {reason}")]
    InvalidName {
        /// The driver's kind.
        driver: &'static str,
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The filesystem is full; what was started was removed.
    #[error("no space left on the device holding {}; free some space and retry (nothing was changed)", path.display())]
    NoSpace {
        /// Where.
        path: PathBuf,
    },
    /// Another process (a running guest) has the volume open for writing;
    /// nothing was changed.
    #[error(
        "{} is in use: another process (a running guest?) has it open for writing, so \
         virtsnap cannot {operation} offline; shut the guest down first (nothing was changed)",
        path.display()
    )]
    InUse {
        /// The image.
        path: PathBuf,
        /// What was asked.
        operation: String,
    },
    /// A snapshot's content does not match its recorded checksum.
    #[error(
        "snapshot '{name}' ({}) does not match its recorded {algorithm} checksum \
         (expected {expected}, found {found}); the volume was not changed",
        file.display()
    )]
    ChecksumMismatch {
        /// The snapshot.
        name: String,
        /// Its file.
        file: PathBuf,
        /// The algorithm.
        algorithm: String,
        /// Recorded.
        expected: String,
        /// Computed now.
        found: String,
    },
    /// A tool (`qemu-img`, `lvcreate`) failed.
    #[error("{tool} {} failed ({status}): {stderr}", args.join(" "))]
    Tool {
        /// The program.
        tool: String,
        /// Its arguments.
        args: Vec<String>,
        /// How it ended.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The storage is not what the caller's metadata says (a snapshot's
    /// file missing, a backing file pointing elsewhere).
    #[error("{0}")]
    Inconsistent(String),
    /// A plugin reported an error of its own (its code has no closer
    /// variant here).
    #[error("plugin '{plugin}' could not {operation}: {message} [{code}]")]
    Plugin {
        /// The plugin's name.
        plugin: String,
        /// What was asked.
        operation: String,
        /// The ABI's stable error name (`io`, `permission`, ...).
        code: String,
        /// What the plugin said.
        message: String,
    },
    /// A plugin broke the plugin ABI (a malformed or missing result, a
    /// panic, an unknown return code): the host recorded nothing.
    #[error(
        "plugin '{plugin}' failed to {operation}: {problem}; virtsnap recorded nothing \
         (report this to the plugin's author)"
    )]
    PluginFault {
        /// The plugin's name.
        plugin: String,
        /// What was asked.
        operation: String,
        /// What went wrong.
        problem: String,
    },
}

impl DriverError {
    /// Whether the error is a refusal made before anything was changed
    /// (an unsupported operation, a volume in use, a bad name, a checksum
    /// mismatch, a plugin's refusal of that kind), so a caller has
    /// nothing to recover.
    #[must_use]
    pub fn changed_nothing(&self) -> bool {
        match self {
            Self::Unsupported { .. }
            | Self::InUse { .. }
            | Self::InvalidName { .. }
            | Self::Exists { .. }
            | Self::ChecksumMismatch { .. } => true,
            Self::Plugin { code, .. } => matches!(
                code.as_str(),
                "busy" | "unsupported" | "invalid-argument" | "permission" | "invalid-name"
            ),
            _ => false,
        }
    }

    /// An I/O error on `path`, turned into [`DriverError::NoSpace`] when
    /// the device is full.
    pub fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| {
            if source.kind() == io::ErrorKind::StorageFull || source.raw_os_error() == Some(28) {
                Self::NoSpace { path }
            } else {
                Self::Io { op, path, source }
            }
        }
    }
}

/// A storage backend's snapshot operations (see the module comment).
#[async_trait]
pub trait VolumeDriver: Send + Sync {
    /// Its kind (`file`, `qemu`, `lvm`, `btrfs`, a plugin's name).
    fn kind(&self) -> &'static str;

    /// Whether it may be asked about `volume` at all. By default a driver
    /// handles local volumes (paths) and no network volume; a driver for
    /// a network protocol (a plugin) says which it takes. Callers skip a
    /// driver that does not handle a volume.
    fn handles(&self, volume: &Volume) -> bool {
        !volume.is_network()
    }

    /// What it can do with `volume` in `state`.
    ///
    /// # Errors
    /// The volume cannot be examined (missing, unreadable).
    async fn capabilities(
        &self,
        volume: &Volume,
        state: VolumeState,
    ) -> Result<Capabilities, DriverError>;

    /// Takes the snapshot `plan` describes. On error nothing is left
    /// behind and the volume is unchanged.
    ///
    /// # Errors
    /// [`DriverError::Unsupported`] for a mode it does not declare,
    /// [`DriverError::Exists`], [`DriverError::NoSpace`], a tool or I/O
    /// failure.
    async fn create(
        &self,
        volume: &Volume,
        plan: &SnapshotPlan,
        progress: Option<&Progress>,
    ) -> Result<CreatedSnapshot, DriverError>;

    /// Brings the volume's content back to `snapshot`'s. With `verify`, a
    /// recorded checksum is checked first (a mismatch changes nothing).
    /// Usually [`RevertOutcome::Done`]; storage that can only revert later
    /// says so with [`RevertOutcome::Deferred`].
    ///
    /// # Errors
    /// Unsupported, the snapshot's storage missing, a checksum mismatch, a
    /// tool or I/O failure.
    async fn revert(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        verify: bool,
        progress: Option<&Progress>,
    ) -> Result<RevertOutcome, DriverError>;

    /// Removes `snapshot`'s storage; the children in `context` (and the
    /// volume, when it is current) keep their contents.
    ///
    /// # Errors
    /// Unsupported (children it cannot rebase), a tool or I/O failure.
    async fn delete(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        context: &DeleteContext,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError>;

    /// The snapshots the storage itself holds.
    ///
    /// # Errors
    /// Unsupported, or the volume cannot be read.
    async fn list(&self, volume: &Volume) -> Result<Vec<StorageSnapshot>, DriverError>;

    /// Undoes a [`VolumeDriver::create`] that succeeded, for an executor
    /// whose later step failed: the volume is as before the create.
    ///
    /// # Errors
    /// A tool or I/O failure.
    async fn undo(&self, volume: &Volume, created: &CreatedSnapshot) -> Result<(), DriverError>;

    /// Writes the changes between `from` (or the volume's beginning) and
    /// `snapshot` to a new file `file` (refused when it exists), in a
    /// format [`VolumeDriver::import_diff`] replays on another volume: the
    /// incremental export that replicates a volume's history (RBD's
    /// `export-diff`). On error no file is left behind.
    ///
    /// # Errors
    /// Unsupported (the default), NotFound, Exists, a storage or I/O
    /// failure.
    async fn export_diff(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        from: Option<&SnapshotRef>,
        file: &Path,
        progress: Option<&Progress>,
    ) -> Result<ExportedDiff, DriverError> {
        let _ = (snapshot, from, file, progress);
        Err(DriverError::Unsupported {
            driver: self.kind(),
            operation: "export the changes between two snapshots".into(),
            volume: volume.path.display().to_string(),
            reason: "this driver has no incremental export".into(),
            hint: "copy the volume whole (a copy snapshot) instead".into(),
        })
    }

    /// Replays a file written by [`VolumeDriver::export_diff`] on
    /// `volume`, which must hold the diff's start snapshot (none for a
    /// diff from the beginning), and creates its end snapshot there.
    ///
    /// # Errors
    /// Unsupported (the default), the start snapshot missing, the end
    /// snapshot existing, a malformed file, a storage or I/O failure.
    async fn import_diff(
        &self,
        volume: &Volume,
        file: &Path,
        progress: Option<&Progress>,
    ) -> Result<ImportedDiff, DriverError> {
        let _ = (file, progress);
        Err(DriverError::Unsupported {
            driver: self.kind(),
            operation: "import an incremental export".into(),
            volume: volume.path.display().to_string(),
            reason: "this driver has no incremental import".into(),
            hint: "import it into a volume of the driver that exported it".into(),
        })
    }

    /// Puts a new, empty overlay at `overlay` on top of `base`, which
    /// stays as it is (its read-only backing from now on): the external
    /// snapshot of a domain disk, whose source then becomes the overlay.
    /// With `reuse` the overlay exists already (REUSE_EXT) and is only
    /// checked to be an image backed by `base`. Without, an existing
    /// `overlay` is refused ([`DriverError::Exists`]). On error nothing is
    /// left behind.
    ///
    /// # Errors
    /// Unsupported (the default), Exists, NoSpace, a tool or I/O failure.
    async fn create_overlay(
        &self,
        base: &Volume,
        overlay: &Path,
        reuse: bool,
    ) -> Result<(), DriverError> {
        let _ = (overlay, reuse);
        Err(DriverError::Unsupported {
            driver: self.kind(),
            operation: "put an overlay on an image".into(),
            volume: base.path.display().to_string(),
            reason: "this driver has no image chains".into(),
            hint: "snapshot this disk with snapshot='internal' (a copy where the format has no internal snapshots)".into(),
        })
    }

    /// Removes the layer `image` from a chain whose only image built on it
    /// is `top`: `top`'s data is merged down into `image`, which then
    /// takes `top`'s path (whoever uses `top` keeps its path and reads the
    /// same data). A merge interrupted by a crash is finished by calling
    /// it again: when `image` is gone and `top` exists, it is done.
    ///
    /// # Errors
    /// Unsupported (the default: callers then use
    /// [`VolumeDriver::rebase_layers`]), a tool or I/O failure.
    async fn merge_layer(
        &self,
        image: &Path,
        top: &Path,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        let _ = (top, progress);
        Err(DriverError::Unsupported {
            driver: self.kind(),
            operation: "merge an image layer".into(),
            volume: image.display().to_string(),
            reason: "this driver has no image chains".into(),
            hint: "delete the snapshot's metadata only (--metadata)".into(),
        })
    }

    /// What `image` is in a chain: `Ok(None)` when it is not an image
    /// this driver chains (the default, and a raw file).
    ///
    /// # Errors
    /// The image cannot be read.
    async fn chain_info(&self, image: &Path) -> Result<Option<ChainInfo>, DriverError> {
        let _ = image;
        Ok(None)
    }

    /// Removes the layer `image` from a chain: every image in `children`
    /// (built on `image`) is rebased onto `onto` (`image`'s backing, or
    /// none: they stand alone), copying what it read from `image` into
    /// it; then `image` is deleted. Idempotent: a child already rebased is
    /// left alone, a missing `image` means it was done.
    ///
    /// # Errors
    /// Unsupported (the default), a tool or I/O failure.
    async fn rebase_layers(
        &self,
        image: &Path,
        children: &[PathBuf],
        onto: Option<&Path>,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        let _ = (children, onto, progress);
        Err(DriverError::Unsupported {
            driver: self.kind(),
            operation: "rebase image layers".into(),
            volume: image.display().to_string(),
            reason: "this driver has no image chains".into(),
            hint: "delete the snapshot's metadata only (--metadata)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_names_are_told_from_paths() {
        assert_eq!(network_protocol("rbd:pool/image"), Some("rbd"));
        assert_eq!(
            network_protocol("rbd:pool/ns/image:conf=/etc/ceph/ceph.conf:id=admin"),
            Some("rbd")
        );
        assert_eq!(network_protocol("/var/lib/images/a:b.qcow2"), None);
        assert_eq!(network_protocol("images/a.qcow2"), None);
        assert_eq!(network_protocol("rbd:"), None);
        assert_eq!(network_protocol("RBD:pool/image"), None);
        assert_eq!(network_protocol("1rbd:pool/image"), None);
        let v = Volume::new("rbd:pool/image", VolumeFormat::Raw);
        assert!(v.is_network());
        assert!(!Volume::new("/a/b", VolumeFormat::Raw).is_network());
    }
}
