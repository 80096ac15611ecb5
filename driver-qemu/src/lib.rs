//! The qcow2 snapshot driver: internal snapshots inside a qcow2 image and
//! external snapshots as qcow2 overlays, done offline with `qemu-img`
//! (a running guest's disks go through QMP instead, in the executor).
//!
//! External snapshots keep the volume at its path, as users of a disk
//! image expect: the image's state at the snapshot moves to the
//! snapshot's file and a new, empty overlay backed by it takes the
//! volume's path. The snapshot files therefore form the snapshot tree
//! (each backed by its parent's file) and the volume is an overlay on the
//! current snapshot's file. Every step is ordered so that a crash at any
//! point leaves the volume readable with its content, and so that
//! [`VolumeDriver::undo`] and a re-run [`VolumeDriver::delete`] finish or
//! reverse whatever step was reached:
//!
//! - create: a temporary overlay is written, the volume is hard-linked to
//!   the snapshot file (refusing an existing file), and the overlay is
//!   renamed over the volume: the volume's path is never missing;
//! - revert: a new overlay on the snapshot's file is renamed over the
//!   volume; the snapshot's file is never written;
//! - delete: with one image depending on the snapshot, that image is
//!   committed into the snapshot's file (`commit -d`, which leaves the
//!   image intact) and the file is renamed over it; with several, each is
//!   rebased onto the snapshot's parent (a safe rebase copies what
//!   differs), then the file is removed. A snapshot file already gone
//!   means the delete was done.

mod chain;
pub mod domain;
pub mod launch;
pub mod lock;
pub mod qcow2;
pub mod qemu_img;
pub mod qga;
pub mod qmp;
pub mod save;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use snapshot_core::driver::{
    Capabilities, ChainInfo, CreatedSnapshot, DeleteContext, DriverError, Progress, RevertOutcome,
    SnapshotMode, SnapshotPlan, SnapshotRef, StorageSnapshot, Volume, VolumeDriver, VolumeFormat,
    VolumeState,
};

use crate::qcow2::Qcow2Header;
use crate::qemu_img::{QemuImg, Version};

const KIND: &str = "qemu";

/// The oldest `qemu-img` the driver runs: every option it uses
/// (`create -F -u`, `commit -d`, `rebase -b ""`, `snapshot -q`) is older,
/// and it is tested with 7.2 and 10.0.
pub const MIN_QEMU_IMG: Version = (4, 0, 0);

/// The qcow2 driver (see the module comment).
#[derive(Debug, Clone, Default)]
pub struct QemuDriver {
    qemu_img: QemuImg,
    /// `qemu-img --version`, asked once.
    version: tokio::sync::OnceCell<Version>,
}

/// `qemu-img snapshot OP ARG` on the qcow2 image `path`, its format
/// forced (no probing) in a way every supported qemu-img takes: 7.2 has
/// no `-f` for `snapshot`, `--image-opts` works everywhere (commas in the
/// path doubled, as QEMU's option syntax escapes them).
fn snapshot_args(op: &str, arg: &str, path: &Path) -> Vec<String> {
    vec![
        "snapshot".into(),
        "-q".into(),
        "--image-opts".into(),
        op.into(),
        arg.into(),
        format!("driver=qcow2,file.filename={}", s(path).replace(',', ",,")),
    ]
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The temporary overlay beside `volume`.
fn temp_overlay(volume: &Path) -> PathBuf {
    let name = volume
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    volume.with_file_name(format!(".{name}.virtsnap-overlay"))
}

fn sync_dir(path: &Path) -> Result<(), DriverError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(DriverError::io("syncing the directory of", path))
}

fn sync_file(path: &Path) -> Result<(), DriverError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(DriverError::io("syncing", path))
}

fn remove_if_exists(path: &Path) -> Result<bool, DriverError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DriverError::io("removing", path)(e)),
    }
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The backing file of the qcow2 image at `image`, resolved against the
/// image's directory; `None` for an image without one or not qcow2.
fn backing_of(image: &Path) -> Option<PathBuf> {
    let header = qcow2::read_header(image).ok()?;
    let backing = PathBuf::from(header.backing_file?);
    Some(if backing.is_absolute() {
        backing
    } else {
        image
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(backing)
    })
}

/// Whether the image at `image` is backed by the file `file`.
fn backed_by(image: &Path, file: &Path) -> bool {
    backing_of(image).is_some_and(|b| same_file(&b, file))
}

fn absolute(path: &Path) -> Result<PathBuf, DriverError> {
    std::path::absolute(path).map_err(DriverError::io("resolving", path))
}

impl QemuDriver {
    /// The driver, running `qemu-img` from `PATH`.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The driver, running the given `qemu-img`.
    #[must_use]
    pub fn with_qemu_img(qemu_img: QemuImg) -> Self {
        Self {
            qemu_img,
            version: tokio::sync::OnceCell::new(),
        }
    }

    /// The version of its `qemu-img`, refusing one older than
    /// [`MIN_QEMU_IMG`].
    ///
    /// # Errors
    /// `qemu-img` cannot be run, or is too old.
    pub async fn version(&self) -> Result<Version, DriverError> {
        let version = *self
            .version
            .get_or_try_init(|| self.qemu_img.version())
            .await?;
        if version < MIN_QEMU_IMG {
            let (major, minor, micro) = version;
            let (need_major, need_minor, _) = MIN_QEMU_IMG;
            return Err(DriverError::Unsupported {
                driver: KIND,
                operation: "use qemu-img".into(),
                volume: "any volume".into(),
                reason: format!("qemu-img {major}.{minor}.{micro} is too old"),
                hint: format!(
                    "install qemu-img {need_major}.{need_minor} or newer (Debian: qemu-utils)"
                ),
            });
        }
        tracing::debug!(?version, "qemu-img version");
        Ok(version)
    }

    /// Runs `qemu-img` with `args`. When it fails, a `qemu-img` older
    /// than [`MIN_QEMU_IMG`] is the error reported (its version is asked
    /// only then, so a successful call costs one process).
    pub(crate) async fn img(&self, args: &[String]) -> Result<String, DriverError> {
        match self.qemu_img.run(args).await {
            Ok(out) => Ok(out),
            Err(e) => Err(self.explain(e).await),
        }
    }

    /// As [`QemuDriver::img`], with progress.
    pub(crate) async fn img_with_progress(
        &self,
        args: &[String],
        total: u64,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        match self.qemu_img.run_with_progress(args, total, progress).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.explain(e).await),
        }
    }

    /// `e`, or the too-old error when that is why.
    /// A full filesystem is [`DriverError::NoSpace`] on the image the
    /// call worked on (its last argument).
    async fn explain(&self, e: DriverError) -> DriverError {
        if let DriverError::Tool { args, stderr, .. } = &e {
            let last = args.last().cloned().unwrap_or_default();
            let image = PathBuf::from(
                last.strip_prefix("driver=qcow2,file.filename=")
                    .map_or_else(|| last.clone(), |p| p.replace(",,", ",")),
            );
            if stderr.contains("No space left on device") {
                return DriverError::NoSpace { path: image };
            }
            if stderr.contains("Failed to get") && stderr.contains("lock") {
                return DriverError::InUse {
                    path: image,
                    operation: args.first().cloned().unwrap_or_default(),
                };
            }
        }
        match self.version().await {
            Err(old @ DriverError::Unsupported { .. }) => old,
            _ => e,
        }
    }

    /// The `qemu-img` it runs.
    #[must_use]
    pub fn qemu_img(&self) -> &QemuImg {
        &self.qemu_img
    }

    fn unsupported(volume: &Volume, operation: &str, reason: &str, hint: &str) -> DriverError {
        DriverError::Unsupported {
            driver: KIND,
            operation: operation.to_string(),
            volume: s(&volume.path),
            reason: reason.to_string(),
            hint: hint.to_string(),
        }
    }

    /// The volume's qcow2 header, refusing anything but a healthy qcow2
    /// image for `operation`.
    fn qcow2_header(volume: &Volume, operation: &str) -> Result<Qcow2Header, DriverError> {
        if !volume.path.exists() {
            return Err(DriverError::NotFound {
                what: format!("volume {}", volume.path.display()),
            });
        }
        if volume.format != VolumeFormat::Qcow2 {
            return Err(Self::unsupported(
                volume,
                operation,
                &format!("it is a {} image, not qcow2", volume.format),
                "use --mode copy, or convert it to qcow2 first (qemu-img convert -O qcow2)",
            ));
        }
        let header = qcow2::read_header(&volume.path)?;
        if header.is_corrupt() {
            return Err(DriverError::Inconsistent(format!(
                "{} is marked corrupt by QEMU; repair it with `qemu-img check -r all {}` first",
                volume.path.display(),
                volume.path.display()
            )));
        }
        Ok(header)
    }

    /// The internal snapshot named `name`: its id.
    fn internal_id(volume: &Volume, name: &str) -> Result<Option<String>, DriverError> {
        let (_, snaps) = qcow2::read_snapshots(&volume.path)?;
        Ok(snaps.into_iter().find(|x| x.name == name).map(|x| x.id))
    }

    /// Deletes the internal snapshot `name`; one already gone is done.
    async fn delete_internal(&self, volume: &Volume, name: &str) -> Result<(), DriverError> {
        if Self::internal_id(volume, name)?.is_none() {
            return Ok(());
        }
        // `snapshot -d` looks up names only (unlike `-a`, which tries ids
        // first), and names are unique here: create refuses a taken one.
        self.img(&snapshot_args("-d", name, &volume.path))
            .await
            .map(drop)
    }

    async fn create_internal(
        &self,
        volume: &Volume,
        plan: &SnapshotPlan,
    ) -> Result<CreatedSnapshot, DriverError> {
        let header = Self::qcow2_header(volume, "take an internal snapshot")?;
        if header.has_data_file() {
            return Err(Self::unsupported(
                volume,
                "take an internal snapshot",
                "its data lives in an external data file, which internal snapshots cannot cover",
                "use --mode external",
            ));
        }
        if plan.name.is_empty() || plan.name.len() > usize::from(u16::MAX) {
            return Err(DriverError::InvalidName {
                driver: KIND,
                name: plan.name.clone(),
                reason: "a qcow2 snapshot name has 1 to 65535 bytes".into(),
            });
        }
        if Self::internal_id(volume, &plan.name)?.is_some() {
            return Err(DriverError::Exists {
                what: format!(
                    "internal snapshot '{}' in {}",
                    plan.name,
                    volume.path.display()
                ),
            });
        }
        self.img(&snapshot_args("-c", &plan.name, &volume.path))
            .await?;
        Ok(CreatedSnapshot {
            name: plan.name.clone(),
            mode: SnapshotMode::Internal,
            file: None,
            format: None,
            checksum: None,
            size: None,
        })
    }

    /// Writes a new, empty qcow2 overlay at `overlay` backed by `backing`
    /// (a qcow2 image of `size` bytes), synced.
    async fn write_overlay(
        &self,
        overlay: &Path,
        backing: &Path,
        size: u64,
    ) -> Result<(), DriverError> {
        remove_if_exists(overlay)?;
        let made = self
            .img(&[
                "create".into(),
                "-q".into(),
                "-f".into(),
                "qcow2".into(),
                "-F".into(),
                "qcow2".into(),
                "-b".into(),
                s(backing),
                "-u".into(),
                s(overlay),
                size.to_string(),
            ])
            .await
            .and_then(|_| sync_file(overlay));
        if made.is_err() {
            // A half-written overlay must not stay behind.
            let _ = fs::remove_file(overlay);
        }
        made
    }

    async fn create_external(
        &self,
        volume: &Volume,
        plan: &SnapshotPlan,
    ) -> Result<CreatedSnapshot, DriverError> {
        let header = Self::qcow2_header(volume, "take an external snapshot")?;
        let file = absolute(plan.file.as_deref().ok_or_else(|| {
            DriverError::Inconsistent(format!(
                "an external snapshot of {} needs a file to keep the snapshot's state",
                volume.path.display()
            ))
        })?)?;
        if file.exists() {
            return Err(DriverError::Exists {
                what: format!("snapshot file {}", file.display()),
            });
        }
        Self::check_not_in_use(volume, "take an external snapshot")?;
        let overlay = temp_overlay(&volume.path);
        self.write_overlay(&overlay, &file, header.size).await?;
        // The volume's image becomes the snapshot's file; hard_link
        // refuses an existing file, and the volume's path stays valid.
        if let Err(e) = fs::hard_link(&volume.path, &file) {
            let _ = fs::remove_file(&overlay);
            return Err(if e.kind() == io::ErrorKind::AlreadyExists {
                DriverError::Exists {
                    what: format!("snapshot file {}", file.display()),
                }
            } else if e.kind() == io::ErrorKind::CrossesDevices {
                Self::unsupported(
                    volume,
                    "take an external snapshot",
                    &format!(
                        "the snapshot file {} is on another filesystem, and the volume's image \
                         moves there by a link",
                        file.display()
                    ),
                    "give a --file on the volume's filesystem (the default, beside the volume, is)",
                )
            } else {
                DriverError::io("linking the volume to", &file)(e)
            });
        }
        if let Err(e) = fs::rename(&overlay, &volume.path) {
            let _ = fs::remove_file(&file);
            let _ = fs::remove_file(&overlay);
            return Err(DriverError::io("moving the new overlay to", &volume.path)(
                e,
            ));
        }
        sync_dir(&volume.path)?;
        let size = fs::metadata(&file).map(|m| m.blocks() * 512).ok();
        Ok(CreatedSnapshot {
            name: plan.name.clone(),
            mode: SnapshotMode::External,
            file: Some(file),
            format: Some(VolumeFormat::Qcow2),
            checksum: None,
            size,
        })
    }

    /// Refuses `operation` on a volume another process writes to (a
    /// running guest): see [`lock`].
    fn check_not_in_use(volume: &Volume, operation: &str) -> Result<(), DriverError> {
        match lock::held_for_writing(&volume.path) {
            Ok(false) => Ok(()),
            Ok(true) => Err(DriverError::InUse {
                path: volume.path.clone(),
                operation: operation.to_string(),
            }),
            Err(e) => Err(DriverError::io("checking the image lock of", &volume.path)(
                e,
            )),
        }
    }

    fn snapshot_file(volume: &Volume, snapshot: &SnapshotRef) -> Result<PathBuf, DriverError> {
        snapshot.file.clone().ok_or_else(|| {
            DriverError::Inconsistent(format!(
                "external snapshot '{}' of {} records no file",
                snapshot.name,
                volume.path.display()
            ))
        })
    }

    async fn delete_external(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        context: &DeleteContext,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        let file = Self::snapshot_file(volume, snapshot)?;
        if !file.exists() {
            return Ok(());
        }
        // The images reading through this file: its children's files and
        // the volume itself.
        let mut candidates: Vec<PathBuf> = context
            .children
            .iter()
            .filter_map(|c| c.file.clone())
            .collect();
        candidates.push(volume.path.clone());
        let dependents: Vec<PathBuf> = candidates
            .into_iter()
            .filter(|d| backed_by(d, &file))
            .collect();
        if dependents.contains(&volume.path) {
            Self::check_not_in_use(volume, "delete the external snapshot under it")?;
        }
        let header = qcow2::read_header(&file)?;
        if let [only] = dependents.as_slice() {
            let top = qcow2::read_header(only)?;
            if top.size == header.size && header.nb_snapshots == 0 {
                // Fold the one dependent into this file, then let the
                // file take its place: it then holds the dependent's
                // content and is backed by this snapshot's parent.
                self.img_with_progress(
                    &[
                        "commit".into(),
                        "-f".into(),
                        "qcow2".into(),
                        "-d".into(),
                        "-p".into(),
                        s(only),
                    ],
                    top.size,
                    progress,
                )
                .await?;
                sync_file(&file)?;
                fs::rename(&file, only)
                    .map_err(DriverError::io("moving the merged image to", only))?;
                return sync_dir(only);
            }
        }
        let parent_file = match &context.parent {
            Some(p) => p.file.clone(),
            None => None,
        };
        for dependent in &dependents {
            let size = qcow2::read_header(dependent)?.size;
            let mut args: Vec<String> = vec!["rebase".into(), "-f".into(), "qcow2".into()];
            match &parent_file {
                Some(p) => {
                    args.extend(["-F".into(), "qcow2".into(), "-b".into(), s(p)]);
                }
                None => args.extend(["-b".into(), String::new()]),
            }
            args.extend(["-p".into(), s(dependent)]);
            self.img_with_progress(&args, size, progress).await?;
            sync_file(dependent)?;
        }
        remove_if_exists(&file)?;
        sync_dir(&file)
    }
}

#[async_trait]
impl VolumeDriver for QemuDriver {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn capabilities(
        &self,
        volume: &Volume,
        state: VolumeState,
    ) -> Result<Capabilities, DriverError> {
        if !volume.path.exists() {
            return Err(DriverError::NotFound {
                what: format!("volume {}", volume.path.display()),
            });
        }
        if state == VolumeState::InUse {
            return Ok(Capabilities::default());
        }
        if volume.format == VolumeFormat::Raw {
            // A qcow2 overlay can sit on raw bytes: a raw domain disk's
            // external snapshot.
            return Ok(Capabilities {
                overlay: true,
                ..Capabilities::default()
            });
        }
        if volume.format != VolumeFormat::Qcow2 {
            return Ok(Capabilities::default());
        }
        let header = qcow2::read_header(&volume.path)?;
        Ok(Capabilities {
            internal: !header.has_data_file(),
            external: true,
            copy: false,
            revert: true,
            revert_keeps_newer: true,
            delete_rebase: true,
            list: true,
            checksums: false,
            overlay: true,
        })
    }

    async fn create(
        &self,
        volume: &Volume,
        plan: &SnapshotPlan,
        _progress: Option<&Progress>,
    ) -> Result<CreatedSnapshot, DriverError> {
        match plan.mode {
            SnapshotMode::Internal => self.create_internal(volume, plan).await,
            SnapshotMode::External => self.create_external(volume, plan).await,
            SnapshotMode::Copy => Err(Self::unsupported(
                volume,
                "take a copy snapshot",
                "the qemu driver keeps snapshots inside qcow2 images or as overlays",
                "use the file driver (--driver file) for full copies",
            )),
        }
    }

    async fn revert(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        _verify: bool,
        _progress: Option<&Progress>,
    ) -> Result<RevertOutcome, DriverError> {
        let () = match snapshot.mode {
            SnapshotMode::Internal => {
                Self::qcow2_header(volume, "revert to an internal snapshot")?;
                let id = Self::internal_id(volume, &snapshot.name)?.ok_or_else(|| {
                    DriverError::NotFound {
                        what: format!(
                            "internal snapshot '{}' in {}",
                            snapshot.name,
                            volume.path.display()
                        ),
                    }
                })?;
                // By id: a name that looks like another snapshot's id
                // must not pick that one.
                self.img(&snapshot_args("-a", &id, &volume.path))
                    .await
                    .map(drop)
            }
            SnapshotMode::External => {
                let file = Self::snapshot_file(volume, snapshot)?;
                if !file.exists() {
                    return Err(DriverError::NotFound {
                        what: format!(
                            "the file {} of snapshot '{}'",
                            file.display(),
                            snapshot.name
                        ),
                    });
                }
                let size = qcow2::read_header(&file)?.size;
                Self::check_not_in_use(volume, "revert to an external snapshot")?;
                let overlay = temp_overlay(&volume.path);
                self.write_overlay(&overlay, &file, size).await?;
                if let Err(e) = fs::rename(&overlay, &volume.path) {
                    let _ = fs::remove_file(&overlay);
                    return Err(DriverError::io("moving the new overlay to", &volume.path)(
                        e,
                    ));
                }
                sync_dir(&volume.path)
            }
            SnapshotMode::Copy => Err(Self::unsupported(
                volume,
                "revert to a copy snapshot",
                "copies are the file driver's",
                "revert with the file driver",
            )),
        }?;
        Ok(RevertOutcome::Done)
    }

    async fn delete(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        context: &DeleteContext,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        match snapshot.mode {
            SnapshotMode::Internal => {
                if !volume.path.exists() {
                    return Err(DriverError::NotFound {
                        what: format!("volume {}", volume.path.display()),
                    });
                }
                self.delete_internal(volume, &snapshot.name).await
            }
            SnapshotMode::External => {
                self.delete_external(volume, snapshot, context, progress)
                    .await
            }
            SnapshotMode::Copy => Err(Self::unsupported(
                volume,
                "delete a copy snapshot",
                "copies are the file driver's",
                "delete with the file driver",
            )),
        }
    }

    async fn list(&self, volume: &Volume) -> Result<Vec<StorageSnapshot>, DriverError> {
        Self::qcow2_header(volume, "list internal snapshots")?;
        let (_, snaps) = qcow2::read_snapshots(&volume.path)?;
        Ok(snaps
            .into_iter()
            .map(|x| StorageSnapshot {
                name: x.name,
                mode: SnapshotMode::Internal,
                id: Some(x.id),
                file: None,
                created: Some(i64::from(x.date_sec)),
                vm_state_size: x.vm_state_size,
                invalid: None,
            })
            .collect())
    }

    async fn undo(&self, volume: &Volume, created: &CreatedSnapshot) -> Result<(), DriverError> {
        match created.mode {
            SnapshotMode::Internal => {
                if !volume.path.exists() {
                    return Ok(());
                }
                self.delete_internal(volume, &created.name).await
            }
            SnapshotMode::External => {
                remove_if_exists(&temp_overlay(&volume.path))?;
                let Some(file) = &created.file else {
                    return Ok(());
                };
                if !file.exists() {
                    return Ok(());
                }
                if same_file(&volume.path, file) {
                    // Linked but the overlay not yet in place.
                    remove_if_exists(file)?;
                } else if !volume.path.exists() || backed_by(&volume.path, file) {
                    // The overlay is in place: the snapshot's file takes
                    // the volume's path back.
                    fs::rename(file, &volume.path)
                        .map_err(DriverError::io("moving back to the volume", file))?;
                } else {
                    tracing::warn!(
                        file = %file.display(),
                        volume = %volume.path.display(),
                        "not undoing: the volume is not an overlay on this file"
                    );
                    return Ok(());
                }
                sync_dir(&volume.path)
            }
            SnapshotMode::Copy => Ok(()),
        }
    }

    async fn create_overlay(
        &self,
        base: &Volume,
        overlay: &Path,
        reuse: bool,
    ) -> Result<(), DriverError> {
        chain::create_overlay(self, base, overlay, reuse).await
    }

    async fn chain_info(&self, image: &Path) -> Result<Option<ChainInfo>, DriverError> {
        if !qcow2::is_qcow2(image).map_err(DriverError::io("reading the header of", image))? {
            return Ok(None);
        }
        let header = qcow2::read_header(image)?;
        Ok(Some(ChainInfo {
            format: VolumeFormat::Qcow2,
            backing: backing_of(image),
            internal_snapshots: header.nb_snapshots,
            size: header.size,
        }))
    }

    async fn merge_layer(
        &self,
        image: &Path,
        top: &Path,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        chain::merge_layer(self, image, top, progress).await
    }

    async fn rebase_layers(
        &self,
        image: &Path,
        children: &[PathBuf],
        onto: Option<&Path>,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        chain::rebase_layers(self, image, children, onto, progress).await
    }
}
