//! File volumes: snapshots as reflinked copies (`FICLONE`), reverts as a
//! reflink into a temporary file renamed over the volume, deletes as the
//! removal of the snapshot's file. Everything here blocks (the driver
//! runs it on `spawn_blocking`); only a checksum reads the data.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::io::Errno;
use snapshot_core::driver::{
    Checksum, CreatedSnapshot, DriverError, SnapshotMode, SnapshotPlan, SnapshotRef, Volume,
};
use snapshot_core::files::{self as copy, Existing, Placing, TempFile};

use crate::driver::{KIND, SHA256, exists, volume_error, with_fix};
use crate::probe::{self, same_file};

/// Makes the reflinked copy `target` of the file volume `volume`.
pub(crate) fn create(
    volume: &Volume,
    plan: &SnapshotPlan,
    target: &Path,
) -> Result<CreatedSnapshot, DriverError> {
    let src = File::open(&volume.path).map_err(volume_error(&volume.path))?;
    let meta = src.metadata().map_err(volume_error(&volume.path))?;
    if !meta.is_file() || !probe::is_btrfs(&volume.path).map_err(volume_error(&volume.path))? {
        return Err(not_a_btrfs_file(
            volume,
            format!("take the reflinked snapshot '{}'", plan.name),
        ));
    }
    match fs::symlink_metadata(target) {
        Ok(_) => return Err(exists(target, &plan.name)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(with_fix(
                "examine the snapshot file",
                target,
                "check the permissions of its directory",
            )(e));
        }
    }
    let tmp = TempFile::beside(target).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            DriverError::NotFound {
                what: format!(
                    "the directory {} for the snapshot file of '{}' (create it or give another \
                     --file)",
                    dir_of(target).display(),
                    plan.name
                ),
            }
        } else {
            with_fix(
                "create the temporary snapshot file",
                &copy::temp_path(target),
                "check that the directory is writable",
            )(e)
        }
    })?;
    copy::reflink(&src, tmp.file()).map_err(|e| reflink_error(e, volume, &volume.path, target))?;
    // The snapshot holds the volume's data: it gets the volume's
    // permissions.
    tmp.file()
        .set_permissions(Permissions::from_mode(meta.permissions().mode() & 0o777))
        .map_err(with_fix(
            "set the permissions of",
            tmp.path(),
            "check the filesystem allows chmod",
        ))?;
    let checksum = if plan.checksum {
        let value = copy::sha256(tmp.file(), &mut copy::no_progress).map_err(with_fix(
            "hash the new snapshot file",
            tmp.path(),
            "check the filesystem holding it",
        ))?;
        Some(Checksum {
            algorithm: SHA256.to_string(),
            value,
        })
    } else {
        None
    };
    tmp.place_new(target).map_err(|e| match e {
        Placing::Exists => exists(target, &plan.name),
        Placing::Move(e) => with_fix(
            "move the snapshot file into place at",
            target,
            "check that the directory is writable",
        )(e),
        Placing::Sync(e) => with_fix(
            "sync the directory of",
            target,
            "check the filesystem (the snapshot file was removed)",
        )(e),
    })?;
    Ok(CreatedSnapshot {
        name: plan.name.clone(),
        mode: SnapshotMode::Copy,
        file: Some(target.to_path_buf()),
        format: Some(volume.format.clone()),
        checksum,
        // Shared with the volume: the space it takes grows only as either
        // is written, which nothing here can know.
        size: None,
    })
}

/// Brings the file volume back to the snapshot file `file`.
pub(crate) fn revert(
    volume: &Volume,
    snapshot: &SnapshotRef,
    file: &Path,
    verify: bool,
) -> Result<(), DriverError> {
    let src = File::open(file).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            missing_file(snapshot, file)
        } else {
            with_fix("open the snapshot file", file, "check that it is readable")(e)
        }
    })?;
    let src_meta = src.metadata().map_err(with_fix(
        "examine the snapshot file",
        file,
        "check that it is readable",
    ))?;
    // Through a symbolic link, the link stays and its target is reverted.
    let target = fs::canonicalize(&volume.path).map_err(volume_error(&volume.path))?;
    let vol_meta = fs::metadata(&target).map_err(volume_error(&volume.path))?;
    if !vol_meta.is_file() || !probe::is_btrfs(&target).map_err(volume_error(&volume.path))? {
        return Err(not_a_btrfs_file(
            volume,
            format!("revert to snapshot '{}'", snapshot.name),
        ));
    }
    if !src_meta.is_file() || same_file(&src_meta, &vol_meta) {
        return Err(DriverError::Inconsistent(format!(
            "the file {} of snapshot '{}' is {}; its metadata is damaged: redefine the snapshot \
             with the path of its file",
            file.display(),
            snapshot.name,
            if src_meta.is_file() {
                "the volume itself"
            } else {
                "not a regular file"
            }
        )));
    }
    if let Some(expected) = snapshot.checksum.as_ref().filter(|_| verify) {
        if !expected.algorithm.eq_ignore_ascii_case(SHA256) {
            return Err(DriverError::Unsupported {
                driver: KIND,
                operation: format!("verify snapshot '{}'", snapshot.name),
                volume: volume.path.display().to_string(),
                reason: format!(
                    "its checksum is {}, which this driver does not compute",
                    expected.algorithm
                ),
                hint: "revert without verification".to_string(),
            });
        }
        let found = copy::sha256(&src, &mut copy::no_progress).map_err(with_fix(
            "hash the snapshot file",
            file,
            "check that it is readable",
        ))?;
        if !found.eq_ignore_ascii_case(&expected.value) {
            return Err(DriverError::ChecksumMismatch {
                name: snapshot.name.clone(),
                file: file.to_path_buf(),
                algorithm: SHA256.to_string(),
                expected: expected.value.clone(),
                found,
            });
        }
    }
    let tmp = TempFile::beside(&target).map_err(with_fix(
        "create the temporary file",
        &copy::temp_path(&target),
        "check that the volume's directory is writable",
    ))?;
    copy::reflink(&src, tmp.file()).map_err(|e| reflink_error(e, volume, file, &target))?;
    // The volume keeps its owner and permissions (chown first: it clears
    // set-id bits).
    let tmp_meta =
        tmp.file()
            .metadata()
            .map_err(with_fix("examine", tmp.path(), "check the filesystem"))?;
    if (tmp_meta.uid(), tmp_meta.gid()) != (vol_meta.uid(), vol_meta.gid()) {
        std::os::unix::fs::fchown(tmp.file(), Some(vol_meta.uid()), Some(vol_meta.gid())).map_err(
            with_fix(
                "give the volume's owner to",
                tmp.path(),
                "run as root or as the volume's owner",
            ),
        )?;
    }
    tmp.file()
        .set_permissions(vol_meta.permissions())
        .map_err(with_fix(
            "give the volume's permissions to",
            tmp.path(),
            "check the filesystem allows chmod",
        ))?;
    tmp.commit(&target, Existing::Replace).map_err(with_fix(
        "replace the volume",
        &target,
        "check that its directory is writable (the volume was not changed)",
    ))?;
    copy::sync_parent(&target).map_err(with_fix(
        "sync the directory of",
        &target,
        "check the filesystem: the volume was reverted but may not survive a crash",
    ))
}

/// Removes a snapshot's file (a missing one is fine: recovery re-runs
/// deletes), never the volume itself; with `undo`, also the temporary
/// file a create interrupted by a crash left.
pub(crate) fn remove(
    volume: &Path,
    file: &Path,
    name: &str,
    undo: bool,
) -> Result<(), DriverError> {
    if let (Ok(v), Ok(f)) = (fs::metadata(volume), fs::metadata(file))
        && same_file(&v, &f)
    {
        return Err(DriverError::Inconsistent(format!(
            "the file {} of snapshot '{name}' is the volume {} itself; nothing was removed: \
             redefine the snapshot with the path of its file",
            file.display(),
            volume.display()
        )));
    }
    let temp = copy::temp_path(file);
    let doomed = if undo {
        vec![temp.as_path(), file]
    } else {
        vec![file]
    };
    for path in doomed {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(with_fix(
                    "remove the snapshot file",
                    path,
                    "check the permissions of its directory",
                )(e));
            }
            _ => {}
        }
    }
    match copy::sync_parent(file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_fix(
            "sync the directory of",
            file,
            "check the filesystem",
        )(e)),
        _ => Ok(()),
    }
}

/// A failed `FICLONE` from `src` into the file that becomes `dst`.
fn reflink_error(e: io::Error, volume: &Volume, src: &Path, dst: &Path) -> DriverError {
    let errno = e.raw_os_error().map(Errno::from_raw_os_error);
    if errno == Some(Errno::XDEV) {
        return DriverError::Unsupported {
            driver: KIND,
            operation: format!("reflink {} to {}", src.display(), dst.display()),
            volume: volume.path.display().to_string(),
            reason: "they are on different filesystems, and blocks are shared only within one \
                     btrfs"
                .to_string(),
            hint: "put the snapshot file on the volume's btrfs filesystem, or let the file \
                   driver make a full copy"
                .to_string(),
        };
    }
    if errno == Some(Errno::OPNOTSUPP) || errno == Some(Errno::INVAL) {
        return DriverError::Unsupported {
            driver: KIND,
            operation: format!("reflink {} to {}", src.display(), dst.display()),
            volume: volume.path.display().to_string(),
            reason: format!("the filesystem refuses to share the blocks ({e})"),
            hint: "check that both files are on the same btrfs filesystem and that the volume \
                   is not a swap file or NOCOW file with compression mismatch, or let the file \
                   driver make a full copy"
                .to_string(),
        };
    }
    with_fix(
        "reflink into",
        dst,
        "check that the volume is readable and the filesystem healthy (nothing was changed)",
    )(e)
}

fn not_a_btrfs_file(volume: &Volume, operation: String) -> DriverError {
    DriverError::Unsupported {
        driver: KIND,
        operation,
        volume: volume.path.display().to_string(),
        reason: "it is not a regular file on a btrfs filesystem".to_string(),
        hint: "use the file driver, which makes full copies on any filesystem".to_string(),
    }
}

fn missing_file(snapshot: &SnapshotRef, file: &Path) -> DriverError {
    DriverError::NotFound {
        what: format!(
            "the file {} of snapshot '{}' (put it back, or drop the snapshot with \
             `virtsnap vol-snapshot-delete --metadata`)",
            file.display(),
            snapshot.name
        ),
    }
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}
