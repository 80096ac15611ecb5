//! Subvolume volumes: read-only snapshots kept by name in
//! [`snapshot_dir`], made and deleted with `btrfs` (btrfs-progs);
//! reverts by a writable snapshot of the snapshot swapped with the volume
//! in one `renameat2(RENAME_EXCHANGE)`.
//!
//! Crash safety: a snapshot is created and deleted by btrfs in one
//! transaction, so it either exists whole or not at all. A revert makes
//! the new state under the temporary name `.VOLUME.virtsnap-revert`
//! beside the volume and exchanges it with the volume atomically: the
//! volume's path holds the old state or the new one, never neither. The
//! old state, under the temporary name after the exchange, is deleted
//! last; a revert interrupted before that leaves it behind, and the next
//! revert deletes it first.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rustix::fs::{CWD, RenameFlags};
use snapshot_core::driver::{
    CreatedSnapshot, DriverError, SnapshotMode, SnapshotPlan, SnapshotRef, StorageSnapshot, Volume,
};
use snapshot_core::files as copy;
use tokio::process::Command;

use crate::driver::{KIND, blocking, exists, volume_error, with_fix};
use crate::probe;

/// The `btrfs` program.
const BTRFS: &str = "btrfs";

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
    let reason = if name.is_empty() || name == "." || name == ".." {
        Some("it is not a usable directory name")
    } else if name.contains('/') || name.contains('\0') {
        Some("it contains '/' or a NUL byte")
    } else if name.len() > 255 {
        Some("it is longer than 255 bytes")
    } else {
        None
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

/// Takes the read-only snapshot `plan` names.
pub(crate) async fn create(
    volume: &Volume,
    plan: &SnapshotPlan,
) -> Result<CreatedSnapshot, DriverError> {
    let path = subvolume_path(volume, &format!("take the snapshot '{}'", plan.name)).await?;
    let target = snapshot_path(&path, &plan.name)?;
    let dir = snapshot_dir(&path);
    let at = target.clone();
    let name = plan.name.clone();
    blocking(&volume.path, move || {
        match fs::symlink_metadata(&at) {
            Ok(_) => return Err(exists(&at, &name)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(with_fix(
                    "examine the snapshot",
                    &at,
                    "check the permissions of its directory",
                )(e));
            }
        }
        match fs::create_dir(&dir) {
            Ok(()) => copy::sync_parent(&dir).map_err(with_fix(
                "sync the directory of",
                &dir,
                "check the filesystem",
            )),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(with_fix(
                "create the snapshot directory",
                &dir,
                "check that the volume's parent directory is writable",
            )(e)),
        }
    })
    .await?;
    btrfs(&[
        OsStr::new("subvolume"),
        OsStr::new("snapshot"),
        OsStr::new("-r"),
        path.as_os_str(),
        target.as_os_str(),
    ])
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

/// Brings the subvolume back to `snapshot` (see the module comment).
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
        Some(true) => delete_subvolume(&temp).await?,
        Some(false) => {
            return Err(DriverError::Inconsistent(format!(
                "{} is in the way of the revert and is not a subvolume this driver made; move \
                 it away and retry (nothing was changed)",
                temp.display()
            )));
        }
        None => {}
    }
    btrfs(&[
        OsStr::new("subvolume"),
        OsStr::new("snapshot"),
        source.as_os_str(),
        temp.as_os_str(),
    ])
    .await?;
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
        if let Err(cleanup) = delete_subvolume(&temp).await {
            tracing::warn!("{cleanup}");
        }
        return Err(e);
    }
    // The swap succeeded: the old state is under the temporary name. A
    // failure to delete it does not undo the revert; the next revert
    // retries.
    if let Err(e) = delete_subvolume(&temp).await {
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
    delete_subvolume(&target).await?;
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

/// Removes the subvolume at `path`: nothing there is fine, anything but a
/// subvolume is refused.
async fn delete_subvolume(path: &Path) -> Result<(), DriverError> {
    let at = path.to_path_buf();
    let found = blocking(path, move || {
        probe::subvolume_at(&at).map_err(with_fix(
            "examine",
            &at,
            "check the permissions of its directory",
        ))
    })
    .await?;
    match found {
        None => Ok(()),
        Some(false) => Err(DriverError::Inconsistent(format!(
            "{} is not a btrfs subvolume; nothing was removed: move it away if it is not yours",
            path.display()
        ))),
        Some(true) => {
            btrfs(&[
                OsStr::new("subvolume"),
                OsStr::new("delete"),
                path.as_os_str(),
            ])
            .await?;
            Ok(())
        }
    }
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

/// Runs `btrfs` with `args` to success.
async fn btrfs(args: &[&OsStr]) -> Result<(), DriverError> {
    let shown = || {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    let out = Command::new(BTRFS)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| DriverError::Tool {
            tool: BTRFS.to_string(),
            args: shown(),
            status: "not started".to_string(),
            stderr: if e.kind() == io::ErrorKind::NotFound {
                "btrfs is not installed; install btrfs-progs".to_string()
            } else {
                e.to_string()
            },
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let hint = if stderr.contains("not permitted") {
        " (run as root, or mount the filesystem with user_subvol_rm_allowed to delete as a user)"
    } else {
        ""
    };
    Err(DriverError::Tool {
        tool: BTRFS.to_string(),
        args: shown(),
        status: out.status.to_string(),
        stderr: format!("{stderr}{hint}"),
    })
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
        check_name("before-upgrade").expect("an ordinary name");
    }

    #[test]
    fn a_name_as_bytes_is_kept() {
        assert_eq!(
            snapshot_dir(Path::new("v")).as_os_str().as_bytes(),
            b".v.snapshots"
        );
    }
}
