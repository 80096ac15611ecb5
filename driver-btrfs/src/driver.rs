//! [`BtrfsDriver`]: the trait implementation, dispatching on the volume
//! (a file or a subvolume, see the crate comment) and the snapshot's mode
//! (copy: a reflinked file; internal: a subvolume snapshot), and the
//! errors the two kinds share.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use snapshot_core::driver::{
    Capabilities, CreatedSnapshot, DeleteContext, DriverError, Progress, RevertOutcome,
    SnapshotMode, SnapshotPlan, SnapshotRef, StorageSnapshot, Volume, VolumeDriver, VolumeState,
};

use crate::probe::{self, Kind};
use crate::{reflink, subvolume};

/// The driver's kind.
pub(crate) const KIND: &str = "btrfs";
/// The checksum algorithm recorded and verified.
pub(crate) const SHA256: &str = "sha256";

/// Snapshots of files and subvolumes on btrfs (see the crate comment).
///
/// - Files: [`SnapshotMode::Copy`] snapshots, reflinked; the plan's file
///   must be on the same btrfs filesystem. Checksums, when asked for,
///   read the whole content (the only step that is not O(1)).
/// - Subvolumes: [`SnapshotMode::Internal`] snapshots, read-only unless
///   the plan asks for a writable one ([`SnapshotPlan::writable`]), named
///   by the snapshot's name in [`crate::snapshot_dir`]; listed from there.
/// - A volume in use by a running guest is declined (its hypervisor's
///   driver must take it), as is anything not on btrfs.
/// - Progress: the operations are short, except hashing, which reports
///   only `(1, 1)` at the end.
#[derive(Debug, Clone, Copy, Default)]
pub struct BtrfsDriver {
    _private: (),
}

impl BtrfsDriver {
    /// The driver.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl VolumeDriver for BtrfsDriver {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn capabilities(
        &self,
        volume: &Volume,
        state: VolumeState,
    ) -> Result<Capabilities, DriverError> {
        let path = volume.path.clone();
        let kind = blocking(&volume.path, move || {
            probe::kind(&path).map_err(volume_error(&path))
        })
        .await?;
        if state == VolumeState::InUse {
            return Ok(Capabilities::default());
        }
        Ok(match kind {
            Kind::File => Capabilities {
                copy: true,
                revert: true,
                revert_keeps_newer: true,
                // Snapshot files are independent of each other.
                delete_rebase: true,
                checksums: true,
                ..Capabilities::default()
            },
            Kind::Subvolume => Capabilities {
                internal: true,
                revert: true,
                revert_keeps_newer: true,
                // Subvolume snapshots are independent of each other.
                delete_rebase: true,
                list: true,
                ..Capabilities::default()
            },
            Kind::Other => Capabilities::default(),
        })
    }

    async fn create(
        &self,
        volume: &Volume,
        plan: &SnapshotPlan,
        progress: Option<&Progress>,
    ) -> Result<CreatedSnapshot, DriverError> {
        let created = match plan.mode {
            SnapshotMode::Copy => {
                let Some(target) = plan.file.clone() else {
                    return Err(DriverError::Inconsistent(format!(
                        "the reflinked snapshot '{}' of {} was given no file; give one (--file) \
                         or let the caller derive VOLUME.NAME beside the volume",
                        plan.name,
                        volume.path.display()
                    )));
                };
                let (v, p) = (volume.clone(), plan.clone());
                blocking(&volume.path, move || reflink::create(&v, &p, &target)).await?
            }
            SnapshotMode::Internal => subvolume::create(volume, plan).await?,
            SnapshotMode::External => {
                return Err(no_external(
                    volume,
                    format!("take the external snapshot '{}'", plan.name),
                ));
            }
        };
        done(progress);
        Ok(created)
    }

    async fn revert(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        verify: bool,
        progress: Option<&Progress>,
    ) -> Result<RevertOutcome, DriverError> {
        match snapshot.mode {
            SnapshotMode::Copy => {
                let file = snapshot_file(volume, snapshot)?;
                let (v, s) = (volume.clone(), snapshot.clone());
                blocking(&volume.path, move || reflink::revert(&v, &s, &file, verify)).await?;
            }
            SnapshotMode::Internal => subvolume::revert(volume, snapshot).await?,
            SnapshotMode::External => {
                return Err(no_external(
                    volume,
                    format!("revert to the external snapshot '{}'", snapshot.name),
                ));
            }
        }
        done(progress);
        Ok(RevertOutcome::Done)
    }

    async fn delete(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        _context: &DeleteContext,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        match snapshot.mode {
            SnapshotMode::Copy => {
                let file = snapshot_file(volume, snapshot)?;
                let (at, name) = (volume.path.clone(), snapshot.name.clone());
                blocking(&volume.path, move || {
                    reflink::remove(&at, &file, &name, false)
                })
                .await?;
            }
            SnapshotMode::Internal => subvolume::delete(volume, &snapshot.name).await?,
            SnapshotMode::External => {
                return Err(no_external(
                    volume,
                    format!("delete the external snapshot '{}'", snapshot.name),
                ));
            }
        }
        done(progress);
        Ok(())
    }

    async fn list(&self, volume: &Volume) -> Result<Vec<StorageSnapshot>, DriverError> {
        let path = volume.path.clone();
        let kind = blocking(&volume.path, move || {
            probe::kind(&path).map_err(volume_error(&path))
        })
        .await?;
        if kind == Kind::Subvolume {
            return subvolume::list(volume).await;
        }
        Err(DriverError::Unsupported {
            driver: KIND,
            operation: "list the snapshots the storage holds".to_string(),
            volume: volume.path.display().to_string(),
            reason: "only subvolumes keep their snapshots where the driver can find them; a \
                     reflinked snapshot file records nothing of its volume"
                .to_string(),
            hint: "list the snapshot metadata instead (virtsnap vol-snapshot-list)".to_string(),
        })
    }

    async fn undo(&self, volume: &Volume, created: &CreatedSnapshot) -> Result<(), DriverError> {
        match created.mode {
            SnapshotMode::Copy => {
                let Some(file) = created.file.clone() else {
                    // Nothing was made.
                    return Ok(());
                };
                let (at, name) = (volume.path.clone(), created.name.clone());
                blocking(&volume.path, move || {
                    reflink::remove(&at, &file, &name, true)
                })
                .await
            }
            SnapshotMode::Internal => subvolume::delete(volume, &created.name).await,
            SnapshotMode::External => Err(no_external(
                volume,
                format!("undo the external snapshot '{}'", created.name),
            )),
        }
    }
}

/// Reports a finished operation.
fn done(progress: Option<&Progress>) {
    if let Some(p) = progress {
        p(1, 1);
    }
}

/// Runs `work` on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> Result<T, DriverError> + Send + 'static,
) -> Result<T, DriverError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(DriverError::Io {
            op: "finish the work on",
            path: path.to_path_buf(),
            source: io::Error::other(format!("{e}: the runtime is shutting down; retry")),
        }),
    }
}

/// The file of a reflinked snapshot.
fn snapshot_file(volume: &Volume, snapshot: &SnapshotRef) -> Result<PathBuf, DriverError> {
    snapshot.file.clone().ok_or_else(|| {
        DriverError::Inconsistent(format!(
            "the reflinked snapshot '{}' of {} records no file; its metadata is damaged: \
             redefine it with the path of its file",
            snapshot.name,
            volume.path.display()
        ))
    })
}

fn no_external(volume: &Volume, operation: String) -> DriverError {
    DriverError::Unsupported {
        driver: KIND,
        operation,
        volume: volume.path.display().to_string(),
        reason: "btrfs snapshots are reflinked copies (files) or subvolume snapshots, never \
                 overlays"
            .to_string(),
        hint: "use --mode copy for a file, --mode internal for a subvolume, or the qemu driver \
               for qcow2 overlays"
            .to_string(),
    }
}

/// The error for an existing snapshot file or subvolume.
pub(crate) fn exists(target: &Path, name: &str) -> DriverError {
    DriverError::Exists {
        what: format!("{} for snapshot '{name}'", target.display()),
    }
}

/// The error for the volume `path`: missing, or unreadable.
pub(crate) fn volume_error(path: &Path) -> impl FnOnce(io::Error) -> DriverError {
    let path = path.to_path_buf();
    move |e| {
        if e.kind() == io::ErrorKind::NotFound {
            DriverError::NotFound {
                what: format!("the volume {}", path.display()),
            }
        } else {
            with_fix("open the volume", &path, "check that it is readable")(e)
        }
    }
}

/// [`DriverError::io`], the cause followed by what to do.
pub(crate) fn with_fix(
    op: &'static str,
    path: &Path,
    fix: &'static str,
) -> impl FnOnce(io::Error) -> DriverError {
    let make = DriverError::io(op, path);
    move |e| make(io::Error::new(e.kind(), format!("{e}; {fix}")))
}
