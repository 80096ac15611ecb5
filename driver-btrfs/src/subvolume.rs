//! Subvolume volumes: snapshots kept by name in [`snapshot_dir`] (read-only
//! unless the plan asks for a writable one), made and deleted with the
//! btrfs ioctls ([`crate::ioctl`]); reverts by a writable snapshot of the
//! snapshot swapped with the volume in one `renameat2(RENAME_EXCHANGE)`.
//!
//! Crash safety: btrfs creates a snapshot in one transaction, which the
//! ioctl commits before it returns, so a snapshot exists whole, durably,
//! or not at all. A deletion removes the subvolume's directory entry in
//! one transaction; the driver then syncs the directory, which makes
//! btrfs commit it. A revert makes the new state under the temporary name
//! `.VOLUME.virtsnap-revert` beside the volume and exchanges it with the
//! volume atomically: the volume's path holds the old state or the new
//! one, never neither. The old state, under the temporary name after the
//! exchange, is deleted last; a revert interrupted before that leaves it
//! behind, and the next revert deletes it first.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use snapshot_core::driver::{
    CreatedSnapshot, DriverError, SnapshotMode, SnapshotPlan, SnapshotRef, StorageSnapshot, Volume,
};
use snapshot_core::files as copy;

use crate::driver::{KIND, blocking, exists, volume_error, with_fix};
use crate::ioctl::{self, SubvolName};
use crate::probe;

/// The longest name btrfs gives a directory entry (`BTRFS_NAME_LEN`).
const NAME_MAX: usize = 255;

/// The directory holding the snapshots of the subvolume `volume`:
/// `.NAME.snapshots` beside it (hidden, and outside the subvolume so a
/// revert, which replaces the subvolume, keeps them).
#[must_use]
pub fn snapshot_dir(volume: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(volume.file_name().unwrap_or_else(|| OsStr::new("volume")));
    name.push(".snapshots");
    volume.with_file_name(name)
}

/// Where a revert builds the new state (and, after the exchange, where
/// the old state waits for its deletion).
fn revert_path(volume: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(volume.file_name().unwrap_or_else(|| OsStr::new("volume")));
    name.push(".virtsnap-revert");
    volume.with_file_name(name)
}

/// The volume's canonical path, checked to be a subvolume on btrfs.
async fn subvolume_path(volume: &Volume, operation: &str) -> Result<PathBuf, DriverError> {
    let given = volume.path.clone();
    let (path, kind) = blocking(&volume.path, move || {
        let path = fs::canonicalize(&given).map_err(volume_error(&given))?;
        let kind = probe::kind(&path).map_err(volume_error(&given))?;
        Ok((path, kind))
    })
    .await?;
    if kind != probe::Kind::Subvolume {
        return Err(DriverError::Unsupported {
            driver: KIND,
            operation: operation.to_string(),
            volume: volume.path.display().to_string(),
            reason: "it is not a btrfs subvolume, and internal snapshots are subvolume snapshots"
                .to_string(),
            hint: "for a file on btrfs, use --mode copy (a reflinked copy); make a directory a \
                   subvolume with `btrfs subvolume create`"
                .to_string(),
        });
    }
    Ok(path)
}

/// Checks a snapshot name can be a directory entry of its own.
fn check_name(name: &str) -> Result<(), DriverError> {
    let reason = match SubvolName::new(OsStr::new(name)) {
        Err(reason) => Some(reason),
        Ok(_) if name.len() > NAME_MAX => Some("it is longer than 255 bytes, the most btrfs takes"),
        Ok(_) => None,
    };
    match reason {
        Some(reason) => Err(DriverError::InvalidName {
            driver: KIND,
            name: name.to_string(),
            reason: reason.to_string(),
        }),
        None => Ok(()),
    }
}

/// The subvolume of snapshot `name` of the subvolume at `path`.
fn snapshot_path(path: &Path, name: &str) -> Result<PathBuf, DriverError> {
    check_name(name)?;
    Ok(snapshot_dir(path).join(name))
}

/// Takes the snapshot `plan` names: read-only, or writable when the plan
/// says so.
pub(crate) async fn create(
    volume: &Volume,
    plan: &SnapshotPlan,
) -> Result<CreatedSnapshot, DriverError> {
    let path = subvolume_path(volume, &format!("take the snapshot '{}'", plan.name)).await?;
    let target = snapshot_path(&path, &plan.name)?;
    let dir = snapshot_dir(&path);
    let (name, writable) = (plan.name.clone(), plan.writable);
    blocking(&volume.path, move || {
        match fs::symlink_metadata(&target) {
            Ok(_) => return Err(exists(&target, &name)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(with_fix(
                    "examine the snapshot",
                    &target,
                    "check the permissions of its directory",
                )(e));
            }
        }
        let made_dir = match fs::create_dir(&dir) {
            Ok(()) => {
                copy::sync_parent(&dir).map_err(with_fix(
                    "sync the directory of",
                    &dir,
                    "check the filesystem",
                ))?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => {
                return Err(with_fix(
                    "create the snapshot directory",
                    &dir,
                    "check that the volume's parent directory is writable",
                )(e));
            }
        };
        let made = snapshot_subvolume(&path, &target, writable).map_err(|e| match e {
            DriverError::Exists { .. } => exists(&target, &name),
            e => e,
        });
        if made.is_err() && made_dir {
            // Leave nothing behind (the directory is empty: should the
            // removal fail, it is harmless).
            let _ = fs::remove_dir(&dir);
        }
        made
    })
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

/// Brings the subvolume back to `snapshot` (see the module comment). A
/// writable snapshot is taken as it is now, changes made to it included.
pub(crate) async fn revert(volume: &Volume, snapshot: &SnapshotRef) -> Result<(), DriverError> {
    let path = subvolume_path(volume, &format!("revert to snapshot '{}'", snapshot.name)).await?;
    let source = snapshot_path(&path, &snapshot.name)?;
    let temp = revert_path(&path);
    let (src, tmp) = (source.clone(), temp.clone());
    let (found, stale) = blocking(&volume.path, move || {
        let found = probe::subvolume_at(&src).map_err(with_fix(
            "examine the snapshot",
            &src,
            "check the permissions of its directory",
        ))?;
        let stale = probe::subvolume_at(&tmp).map_err(with_fix(
            "examine",
            &tmp,
            "check the permissions of the volume's directory",
        ))?;
        Ok((found, stale))
    })
    .await?;
    if found != Some(true) {
        return Err(DriverError::NotFound {
            what: format!(
                "the subvolume {} of snapshot '{}' (put it back, or drop the snapshot with \
                 `virtsnap vol-snapshot-delete --metadata`)",
                source.display(),
                snapshot.name
            ),
        });
    }
    match stale {
        // The old state of a revert interrupted before its cleanup.
        Some(true) => delete_subvolume(&volume.path, &temp).await?,
        Some(false) => {
            return Err(DriverError::Inconsistent(format!(
                "{} is in the way of the revert and is not a subvolume this driver made; move \
                 it away and retry (nothing was changed)",
                temp.display()
            )));
        }
        None => {}
    }
    let (src, tmp) = (source.clone(), temp.clone());
    blocking(&volume.path, move || snapshot_subvolume(&src, &tmp, true)).await?;
    let (vol, tmp) = (path.clone(), temp.clone());
    let swapped = blocking(&volume.path, move || {
        rustix::fs::renameat_with(CWD, &tmp, CWD, &vol, RenameFlags::EXCHANGE)
            .map_err(io::Error::from)
            .map_err(with_fix(
                "swap in the reverted subvolume at",
                &vol,
                "check that the volume is not a mount point and the filesystem is writable",
            ))?;
        copy::sync_parent(&vol).map_err(with_fix(
            "sync the directory of",
            &vol,
            "check the filesystem: the volume was reverted but may not survive a crash",
        ))
    })
    .await;
    if let Err(e) = swapped {
        // Before the exchange the temporary holds the new state; after a
        // failed sync, the old one: either way it may go.
        if let Err(cleanup) = delete_subvolume(&volume.path, &temp).await {
            tracing::warn!("{cleanup}");
        }
        return Err(e);
    }
    // The swap succeeded: the old state is under the temporary name. A
    // failure to delete it does not undo the revert; the next revert
    // retries.
    if let Err(e) = delete_subvolume(&volume.path, &temp).await {
        tracing::warn!(
            "reverted {} to '{}', but its old state remains at {}: {e}; remove it with \
             `btrfs subvolume delete`",
            path.display(),
            snapshot.name,
            temp.display()
        );
    }
    Ok(())
}

/// Deletes the snapshot `name` (a missing one is fine).
pub(crate) async fn delete(volume: &Volume, name: &str) -> Result<(), DriverError> {
    let path = subvolume_path(volume, &format!("delete the snapshot '{name}'")).await?;
    let target = snapshot_path(&path, name)?;
    delete_subvolume(&volume.path, &target).await?;
    // The directory goes with the last snapshot (a failure is harmless).
    let dir = snapshot_dir(&path);
    let _ = blocking(&volume.path, move || {
        if fs::remove_dir(&dir).is_ok() {
            let _ = copy::sync_parent(&dir);
        }
        Ok(())
    })
    .await;
    Ok(())
}

/// Removes the subvolume at `path` (for the volume `volume`): nothing
/// there is fine, anything but a subvolume is refused.
async fn delete_subvolume(volume: &Path, path: &Path) -> Result<(), DriverError> {
    let at = path.to_path_buf();
    blocking(volume, move || {
        let found = probe::subvolume_at(&at).map_err(with_fix(
            "examine",
            &at,
            "check the permissions of its directory",
        ))?;
        match found {
            None => Ok(()),
            Some(false) => Err(DriverError::Inconsistent(format!(
                "{} is not a btrfs subvolume; nothing was removed: move it away if it is not \
                 yours",
                at.display()
            ))),
            Some(true) => destroy_subvolume(&at),
        }
    })
    .await
}

/// Opens the directory `path` for an ioctl, not following a final
/// symbolic link.
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// `path`'s directory and its name there as a subvolume.
fn parent_and_name(path: &Path) -> Result<(&Path, SubvolName<'_>), DriverError> {
    let name = path.file_name().unwrap_or_default();
    let checked = SubvolName::new(name).map_err(|reason| DriverError::InvalidName {
        driver: KIND,
        name: name.to_string_lossy().into_owned(),
        reason: reason.to_string(),
    })?;
    Ok((path.parent().unwrap_or(Path::new("/")), checked))
}

/// Snapshots the subvolume `source` as `target`, whose directory exists:
/// read-only unless `writable`. Blocks.
fn snapshot_subvolume(source: &Path, target: &Path, writable: bool) -> Result<(), DriverError> {
    let (dir, name) = parent_and_name(target)?;
    let src = open_dir(source).map_err(with_fix(
        "open the subvolume",
        source,
        "check that it is a readable directory",
    ))?;
    // Given a directory inside a subvolume, the ioctl would snapshot the
    // whole subvolume around it: check what was opened.
    let is_subvolume = probe::is_subvolume_fd(src.as_fd()).map_err(with_fix(
        "examine the subvolume",
        source,
        "check the filesystem",
    ))?;
    if !is_subvolume {
        return Err(DriverError::Inconsistent(format!(
            "{} is not the root of a btrfs subvolume (was it replaced?); nothing was changed",
            source.display()
        )));
    }
    let parent = open_dir(dir).map_err(with_fix(
        "open the directory",
        dir,
        "check that it exists and is writable",
    ))?;
    ioctl::snapshot(src.as_fd(), parent.as_fd(), name, !writable)
        .map_err(|e| ioctl_error(Ioctl::Snapshot, target, e))
}

/// Deletes the subvolume `path` and syncs its directory, which makes
/// btrfs commit the deletion. A missing subvolume is fine. Blocks.
fn destroy_subvolume(path: &Path) -> Result<(), DriverError> {
    let (dir, name) = parent_and_name(path)?;
    let parent = open_dir(dir).map_err(with_fix(
        "open the directory",
        dir,
        "check that it exists and is writable",
    ))?;
    match ioctl::destroy(parent.as_fd(), name) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(ioctl_error(Ioctl::Destroy, path, e)),
    }
    rustix::fs::fsync(&parent)
        .map_err(io::Error::from)
        .map_err(with_fix(
            "sync the directory of",
            path,
            "check the filesystem: the subvolume is deleted but may come back after a crash",
        ))
}

/// A subvolume ioctl, for its error messages.
#[derive(Debug, Clone, Copy)]
enum Ioctl {
    Snapshot,
    Destroy,
}

/// The error for `errno` from `ioctl` on the subvolume `path`, saying what
/// to do.
fn ioctl_error(ioctl: Ioctl, path: &Path, errno: Errno) -> DriverError {
    use Ioctl::{Destroy, Snapshot};
    let fix = match (ioctl, errno) {
        (_, Errno::NOSPC | Errno::DQUOT) => {
            return DriverError::NoSpace {
                path: path.to_path_buf(),
            };
        }
        (Snapshot, Errno::EXIST) => {
            return DriverError::Exists {
                what: path.display().to_string(),
            };
        }
        (Snapshot, Errno::PERM | Errno::ACCESS) => {
            "a snapshot needs write access to its directory and ownership of the subvolume \
             (or root)"
        }
        (Destroy, Errno::PERM | Errno::ACCESS) => {
            "deleting a subvolume needs root (CAP_SYS_ADMIN), or the filesystem mounted with \
             user_subvol_rm_allowed and write access to its directory; a subvolume being sent \
             (btrfs send) cannot be deleted either"
        }
        (_, Errno::XDEV) => {
            "the subvolume and the snapshot directory are not on the same btrfs mount (is the \
             subvolume mounted on its own? then its snapshots cannot sit beside it)"
        }
        (_, Errno::ROFS) => "the filesystem is mounted read-only; remount it read-write",
        (_, Errno::NAMETOOLONG) => "btrfs takes names of at most 255 bytes",
        (Destroy, Errno::NOTEMPTY) => "it holds other subvolumes: delete those first",
        (Destroy, Errno::BUSY) => {
            "it is mounted, the filesystem's default subvolume, or holds an active swap file"
        }
        (Destroy, Errno::INVAL) => "it is not a subvolume; nothing was removed",
        (_, Errno::NOTTY | Errno::OPNOTSUPP) => {
            "it is not on btrfs, or the kernel does not have this btrfs ioctl"
        }
        _ => "check the filesystem (the kernel log may say more)",
    };
    let op = match ioctl {
        Snapshot => "take the subvolume snapshot",
        Destroy => "delete the subvolume",
    };
    with_fix(op, path, fix)(io::Error::from(errno))
}

/// The snapshots of the subvolume: the subvolumes in its snapshot
/// directory.
pub(crate) async fn list(volume: &Volume) -> Result<Vec<StorageSnapshot>, DriverError> {
    let path = subvolume_path(volume, "list its snapshots").await?;
    let dir = snapshot_dir(&path);
    blocking(&volume.path, move || {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(with_fix(
                    "read the snapshot directory",
                    &dir,
                    "check that it is readable",
                )(e));
            }
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(with_fix(
                "read the snapshot directory",
                &dir,
                "check that it is readable",
            ))?;
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name();
            // Names the store gave are UTF-8; anything else is not ours.
            let (true, Some(name)) = (probe::is_subvolume_meta(&meta), name.to_str()) else {
                continue;
            };
            let created = meta
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_secs()).ok());
            found.push(StorageSnapshot {
                name: name.to_string(),
                mode: SnapshotMode::Internal,
                id: None,
                file: None,
                created,
                vm_state_size: 0,
                invalid: None,
            });
        }
        found.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        Ok(found)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    #[test]
    fn derived_names_sit_beside_the_volume() {
        let v = Path::new("/srv/vols/data");
        assert_eq!(snapshot_dir(v), Path::new("/srv/vols/.data.snapshots"));
        assert_eq!(revert_path(v), Path::new("/srv/vols/.data.virtsnap-revert"));
        assert_eq!(
            snapshot_path(v, "s1").ok(),
            Some(PathBuf::from("/srv/vols/.data.snapshots/s1"))
        );
    }

    #[test]
    fn names_that_escape_the_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "x\0y"] {
            assert!(
                matches!(check_name(bad), Err(DriverError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(check_name(&"n".repeat(256)).is_err());
        check_name(&"n".repeat(255)).expect("the longest name btrfs takes");
        check_name("before-upgrade").expect("an ordinary name");
    }

    #[test]
    fn ioctl_errors_say_what_to_do() {
        let at = Path::new("/srv/.data.snapshots/s");
        let message = |ioctl, errno| ioctl_error(ioctl, at, errno).to_string();
        assert!(matches!(
            ioctl_error(Ioctl::Snapshot, at, Errno::NOSPC),
            DriverError::NoSpace { .. }
        ));
        assert!(matches!(
            ioctl_error(Ioctl::Snapshot, at, Errno::EXIST),
            DriverError::Exists { .. }
        ));
        for errno in [Errno::PERM, Errno::ACCESS] {
            let m = message(Ioctl::Destroy, errno);
            assert!(
                m.contains("root") && m.contains("user_subvol_rm_allowed"),
                "{m}"
            );
            assert!(message(Ioctl::Snapshot, errno).contains("write access"));
        }
        let m = message(Ioctl::Snapshot, Errno::XDEV);
        assert!(
            m.contains("same btrfs mount") && m.contains(".data.snapshots/s"),
            "{m}"
        );
        assert!(message(Ioctl::Destroy, Errno::NOTEMPTY).contains("other subvolumes"));
        assert!(message(Ioctl::Destroy, Errno::ROFS).contains("read-write"));
    }

    #[test]
    fn a_name_as_bytes_is_kept() {
        assert_eq!(
            snapshot_dir(Path::new("v")).as_os_str().as_bytes(),
            b".v.snapshots"
        );
    }
}
