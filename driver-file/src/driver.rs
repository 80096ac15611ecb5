//! [`FileDriver`], the `file` volume driver: copy snapshots of any file
//! (raw, qcow2, anything), each an independent full copy made under a
//! temporary name beside its target and renamed into place (never over an
//! existing file), reverted by copying back over the volume atomically,
//! deleted by removing the copy. The copying itself is [`crate::copy`]'s;
//! this module owns the driver's checks, errors, progress and
//! cancellation, and runs the blocking work on `spawn_blocking`.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use snapshot_core::driver::{
    Capabilities, Checksum, CreatedSnapshot, DeleteContext, DriverError, Progress, RevertOutcome,
    SnapshotMode, SnapshotPlan, SnapshotRef, StorageSnapshot, Volume, VolumeDriver, VolumeState,
};
use tokio::sync::watch;

use crate::copy::{self, Existing, Placing, TempFile};

/// The driver's kind.
const KIND: &str = "file";
/// The checksum algorithm recorded and verified.
const SHA256: &str = "sha256";

/// Copy snapshots of a volume file (see the module comment).
///
/// - Volumes: regular files of any format; a block device can be copied
///   from but not reverted. A volume in use by a running guest is
///   declared unsupported (its copy would be torn).
/// - Progress counts bytes processed: the content's length for a copy,
///   twice that when the copy is also hashed (create with a checksum,
///   revert with verification), ending at `(total, total)`.
/// - Dropping an operation's future cancels the copy at its next chunk
///   and removes the temporary file; the target is never half written.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileDriver {
    _private: (),
}

impl FileDriver {
    /// The driver.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl VolumeDriver for FileDriver {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn capabilities(
        &self,
        volume: &Volume,
        state: VolumeState,
    ) -> Result<Capabilities, DriverError> {
        let meta = tokio::fs::metadata(&volume.path)
            .await
            .map_err(volume_error(&volume.path))?;
        // A copy of a file a running guest writes to is torn: the
        // hypervisor's driver must take those.
        if state == VolumeState::InUse {
            return Ok(Capabilities::default());
        }
        let kind = meta.file_type();
        let file = kind.is_file();
        if !file && !kind.is_block_device() {
            return Ok(Capabilities::default());
        }
        Ok(Capabilities {
            copy: true,
            // A block device cannot be replaced by a rename.
            revert: file,
            revert_keeps_newer: file,
            // Copies are independent: a child never needs its parent.
            delete_rebase: true,
            checksums: true,
            ..Capabilities::default()
        })
    }

    async fn create(
        &self,
        volume: &Volume,
        plan: &SnapshotPlan,
        progress: Option<&Progress>,
    ) -> Result<CreatedSnapshot, DriverError> {
        if plan.mode != SnapshotMode::Copy {
            return Err(not_a_copy(
                volume,
                format!("take the {} snapshot '{}'", plan.mode, plan.name),
            ));
        }
        let Some(target) = plan.file.clone() else {
            return Err(DriverError::Inconsistent(format!(
                "the copy snapshot '{}' of {} was given no file to copy to; give one (--file) or \
                 let the caller derive VOLUME.NAME beside the volume",
                plan.name,
                volume.path.display()
            )));
        };
        let (volume, plan) = (volume.clone(), plan.clone());
        let at = volume.path.clone();
        run(progress, &at, move |job| {
            create_copy(&volume, &plan, &target, job)
        })
        .await
    }

    async fn revert(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        verify: bool,
        progress: Option<&Progress>,
    ) -> Result<RevertOutcome, DriverError> {
        if snapshot.mode != SnapshotMode::Copy {
            return Err(not_a_copy(
                volume,
                format!(
                    "revert to the {} snapshot '{}'",
                    snapshot.mode, snapshot.name
                ),
            ));
        }
        let file = snapshot_file(volume, snapshot)?;
        let (volume, snapshot) = (volume.clone(), snapshot.clone());
        let at = volume.path.clone();
        run(progress, &at, move |job| {
            revert_copy(&volume, &snapshot, &file, verify, job)
        })
        .await?;
        Ok(RevertOutcome::Done)
    }

    async fn delete(
        &self,
        volume: &Volume,
        snapshot: &SnapshotRef,
        _context: &DeleteContext,
        progress: Option<&Progress>,
    ) -> Result<(), DriverError> {
        if snapshot.mode != SnapshotMode::Copy {
            return Err(not_a_copy(
                volume,
                format!("delete the {} snapshot '{}'", snapshot.mode, snapshot.name),
            ));
        }
        let file = snapshot_file(volume, snapshot)?;
        let at = volume.path.clone();
        let name = snapshot.name.clone();
        run(progress, &at.clone(), move |_| {
            remove_copy(&at, &file, &name)
        })
        .await
    }

    async fn list(&self, volume: &Volume) -> Result<Vec<StorageSnapshot>, DriverError> {
        Err(DriverError::Unsupported {
            driver: KIND,
            operation: "list the snapshots the storage holds".to_string(),
            volume: volume.path.display().to_string(),
            reason: "copies are ordinary files that record nothing of the volume they came from"
                .to_string(),
            hint: "list the snapshot metadata instead (virtsnap vol-snapshot-list)".to_string(),
        })
    }

    async fn undo(&self, volume: &Volume, created: &CreatedSnapshot) -> Result<(), DriverError> {
        if created.mode != SnapshotMode::Copy {
            return Err(not_a_copy(
                volume,
                format!("undo the {} snapshot '{}'", created.mode, created.name),
            ));
        }
        let Some(file) = created.file.clone() else {
            // Nothing was made.
            return Ok(());
        };
        let at = volume.path.clone();
        let name = created.name.clone();
        run(None, &at.clone(), move |_| {
            // A create that crashed mid-copy left its temporary file.
            let temp = copy::temp_path(&file);
            match fs::remove_file(&temp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(with_fix(
                        "remove the unfinished copy",
                        &temp,
                        "check the directory's permissions and remove it by hand",
                    )(e));
                }
                _ => {}
            }
            remove_copy(&at, &file, &name)
        })
        .await
    }
}

/// Makes the copy for [`FileDriver::create`].
fn create_copy(
    volume: &Volume,
    plan: &SnapshotPlan,
    target: &Path,
    job: &Job,
) -> Result<CreatedSnapshot, DriverError> {
    let src = File::open(&volume.path).map_err(volume_error(&volume.path))?;
    let meta = src.metadata().map_err(volume_error(&volume.path))?;
    let kind = meta.file_type();
    if !kind.is_file() && !kind.is_block_device() {
        return Err(DriverError::Unsupported {
            driver: KIND,
            operation: format!("copy it for snapshot '{}'", plan.name),
            volume: volume.path.display().to_string(),
            reason: "it is neither a regular file nor a block device".to_string(),
            hint: "give the path of a disk image".to_string(),
        });
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
                    "the directory {} for the copy of snapshot '{}' (create it or give another \
                     --file)",
                    dir_of(target).display(),
                    plan.name
                ),
            }
        } else {
            with_fix(
                "create the temporary copy",
                &copy::temp_path(target),
                "check that the directory is writable",
            )(e)
        }
    })?;
    let len = copy::content_len(&src).map_err(volume_error(&volume.path))?;
    let total = if plan.checksum {
        len.saturating_mul(2)
    } else {
        len
    };
    let copied = copy::copy_file(&src, tmp.file(), &mut |done, _| job.report(done, total))
        .map_err(copy_error(&volume.path, target))?;
    // The copy holds the volume's data: it gets the volume's permissions.
    let mode = if kind.is_file() {
        meta.permissions().mode() & 0o777
    } else {
        0o600
    };
    tmp.file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(with_fix(
            "set the permissions of",
            tmp.path(),
            "check the filesystem allows chmod",
        ))?;
    let checksum = if plan.checksum {
        let value = copy::sha256(tmp.file(), &mut |done, _| {
            job.report(copied.len + done, total)
        })
        .map_err(with_fix(
            "hash the new copy",
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
    let size = tmp.file().metadata().ok().map(|m| m.blocks() * 512);
    job.check(target)?;
    tmp.place_new(target).map_err(|e| match e {
        Placing::Exists => exists(target, &plan.name),
        Placing::Move(e) => with_fix(
            "move the finished copy into place at",
            target,
            "check that the directory is writable",
        )(e),
        Placing::Sync(e) => with_fix(
            "sync the directory of",
            target,
            "check the filesystem (the copy was removed)",
        )(e),
    })?;
    Ok(CreatedSnapshot {
        name: plan.name.clone(),
        mode: SnapshotMode::Copy,
        file: Some(target.to_path_buf()),
        format: Some(volume.format.clone()),
        checksum,
        size,
    })
}

/// Copies the snapshot back over the volume for [`FileDriver::revert`].
fn revert_copy(
    volume: &Volume,
    snapshot: &SnapshotRef,
    file: &Path,
    verify: bool,
    job: &Job,
) -> Result<(), DriverError> {
    let src = File::open(file).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            missing_copy(snapshot, file)
        } else {
            with_fix(
                "open the snapshot's copy",
                file,
                "check that it is readable",
            )(e)
        }
    })?;
    let src_meta = src.metadata().map_err(with_fix(
        "examine the snapshot's copy",
        file,
        "check that it is readable",
    ))?;
    // Through a symbolic link, the link stays and its target is reverted.
    let target = fs::canonicalize(&volume.path).map_err(volume_error(&volume.path))?;
    let vol_meta = fs::metadata(&target).map_err(volume_error(&volume.path))?;
    if !vol_meta.is_file() {
        return Err(DriverError::Unsupported {
            driver: KIND,
            operation: format!("revert to snapshot '{}'", snapshot.name),
            volume: volume.path.display().to_string(),
            reason: "it is not a regular file, and only a file can be replaced atomically"
                .to_string(),
            hint: format!(
                "copy {} onto the device by hand (dd conv=sparse), or snapshot it with the lvm \
                 driver",
                file.display()
            ),
        });
    }
    if !src_meta.is_file() || same_file(&src_meta, &vol_meta) {
        return Err(DriverError::Inconsistent(format!(
            "the copy {} of snapshot '{}' is {}; its metadata is damaged: redefine the snapshot \
             with the path of its copy",
            file.display(),
            snapshot.name,
            if src_meta.is_file() {
                "the volume itself"
            } else {
                "not a regular file"
            }
        )));
    }
    let len = copy::content_len(&src).map_err(with_fix(
        "examine the snapshot's copy",
        file,
        "check that it is readable",
    ))?;
    let expected = snapshot.checksum.as_ref().filter(|_| verify);
    let (done, total) = match expected {
        Some(_) => (len, len.saturating_mul(2)),
        None => (0, len),
    };
    if let Some(expected) = expected {
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
        let found = copy::sha256(&src, &mut |d, _| job.report(d, total)).map_err(with_fix(
            "hash the snapshot's copy",
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
        "create the temporary copy",
        &copy::temp_path(&target),
        "check that the volume's directory is writable",
    ))?;
    copy::copy_file(&src, tmp.file(), &mut |d, _| job.report(done + d, total))
        .map_err(copy_error(file, &target))?;
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
    job.check(&target)?;
    tmp.commit(&target, Existing::Replace).map_err(with_fix(
        "replace the volume",
        &target,
        "check that its directory is writable",
    ))?;
    copy::sync_parent(&target).map_err(with_fix(
        "sync the directory of",
        &target,
        "check the filesystem: the volume was reverted but may not survive a crash",
    ))
}

/// Removes a snapshot's copy (a missing one is fine: recovery re-runs
/// deletes), never the volume itself.
fn remove_copy(volume: &Path, file: &Path, name: &str) -> Result<(), DriverError> {
    if let (Ok(v), Ok(f)) = (fs::metadata(volume), fs::metadata(file))
        && same_file(&v, &f)
    {
        return Err(DriverError::Inconsistent(format!(
            "the copy {} of snapshot '{name}' is the volume {} itself; nothing was removed: \
             redefine the snapshot with the path of its copy",
            file.display(),
            volume.display()
        )));
    }
    match fs::remove_file(file) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(with_fix(
                "remove the snapshot's copy",
                file,
                "check the permissions of its directory",
            )(e));
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

/// The file of a copy snapshot.
fn snapshot_file(volume: &Volume, snapshot: &SnapshotRef) -> Result<PathBuf, DriverError> {
    snapshot.file.clone().ok_or_else(|| {
        DriverError::Inconsistent(format!(
            "the copy snapshot '{}' of {} records no file; its metadata is damaged: redefine it \
             with the path of its copy",
            snapshot.name,
            volume.path.display()
        ))
    })
}

fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn not_a_copy(volume: &Volume, operation: String) -> DriverError {
    DriverError::Unsupported {
        driver: KIND,
        operation,
        volume: volume.path.display().to_string(),
        reason: "the file driver only makes full copies".to_string(),
        hint: "use --mode copy, or the qemu driver for internal and external qcow2 snapshots"
            .to_string(),
    }
}

fn exists(target: &Path, name: &str) -> DriverError {
    DriverError::Exists {
        what: format!("the file {} for snapshot '{name}'", target.display()),
    }
}

fn missing_copy(snapshot: &SnapshotRef, file: &Path) -> DriverError {
    DriverError::NotFound {
        what: format!(
            "the copy {} of snapshot '{}' (put it back, or drop the snapshot with \
             `virtsnap vol-snapshot-delete --metadata`)",
            file.display(),
            snapshot.name
        ),
    }
}

/// The error for the volume `path`: missing, or unreadable.
fn volume_error(path: &Path) -> impl FnOnce(io::Error) -> DriverError {
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
fn with_fix(
    op: &'static str,
    path: &Path,
    fix: &'static str,
) -> impl FnOnce(io::Error) -> DriverError {
    let make = DriverError::io(op, path);
    move |e| make(io::Error::new(e.kind(), format!("{e}; {fix}")))
}

/// A failed copy from `src` to `dst` (the device full: [`DriverError::NoSpace`]).
fn copy_error(src: &Path, dst: &Path) -> impl FnOnce(io::Error) -> DriverError {
    let src = src.to_path_buf();
    let make = DriverError::io("copy into", dst);
    move |e| {
        make(io::Error::new(
            e.kind(),
            format!(
                "{e} (copying from {}); check that it is readable and the target's filesystem \
                 is healthy (nothing was changed)",
                src.display()
            ),
        ))
    }
}

/// The blocking side of an operation: reports progress, learns of
/// cancellation.
#[derive(Debug)]
struct Job {
    progress: watch::Sender<Option<(u64, u64)>>,
    cancelled: Arc<AtomicBool>,
}

impl Job {
    /// Reports `done` of `total`; fails once the caller has gone.
    fn report(&self, done: u64, total: u64) -> io::Result<()> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(io::Error::other(
                "cancelled: the caller stopped waiting, nothing was changed",
            ));
        }
        self.progress.send_replace(Some((done, total)));
        Ok(())
    }

    /// Fails once the caller has gone (checked before the commit).
    fn check(&self, path: &Path) -> Result<(), DriverError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(DriverError::Io {
                op: "finish",
                path: path.to_path_buf(),
                source: io::Error::other(
                    "cancelled: the caller stopped waiting, nothing was changed",
                ),
            });
        }
        Ok(())
    }
}

/// Sets the flag when dropped: the caller stopped waiting (or finished).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `work` on the blocking pool, forwarding its progress to
/// `progress` (the latest report each time, and the last one at the end);
/// dropping the future cancels the work at its next report, which then
/// removes what it started.
async fn run<T: Send + 'static>(
    progress: Option<&Progress>,
    path: &Path,
    work: impl FnOnce(&Job) -> Result<T, DriverError> + Send + 'static,
) -> Result<T, DriverError> {
    let (tx, mut rx) = watch::channel(None);
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(Arc::clone(&cancelled));
    let job = Job {
        progress: tx,
        cancelled,
    };
    let mut handle = tokio::task::spawn_blocking(move || work(&job));
    let mut last = None;
    let mut forward = |value: Option<(u64, u64)>| {
        if let (Some(p), Some(v)) = (progress, value)
            && last != Some(v)
        {
            last = Some(v);
            p(v.0, v.1);
        }
    };
    let mut open = true;
    let joined = loop {
        tokio::select! {
            joined = &mut handle => break joined,
            changed = rx.changed(), if open => match changed {
                Ok(()) => forward(*rx.borrow_and_update()),
                Err(_) => open = false,
            },
        }
    };
    forward(*rx.borrow());
    match joined {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(DriverError::Io {
            op: "finish the work on",
            path: path.to_path_buf(),
            source: io::Error::other(format!("{e}: the runtime is shutting down; retry")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn dropping_the_future_cancels_the_work() {
        let (tx, rx) = mpsc::channel();
        let work = run(None, Path::new("/v"), move |job| {
            let err = loop {
                if let Err(e) = job.report(1, 2) {
                    break e;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            let _ = tx.send((err.to_string(), job.check(Path::new("/v")).is_err()));
            Ok(())
        });
        // The work never ends by itself: the timeout drops it.
        tokio::time::timeout(Duration::from_millis(30), work)
            .await
            .unwrap_err();
        let (message, checked) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(message.contains("cancelled"), "{message}");
        assert!(checked);
    }

    #[tokio::test]
    async fn progress_is_forwarded_to_the_last_report() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let record = move |d: u64, t: u64| sink.lock().unwrap().push((d, t));
        let value = run(Some(&record), Path::new("/v"), |job| {
            for d in 0..=100 {
                job.report(d, 100).unwrap();
            }
            Ok(7)
        })
        .await
        .unwrap();
        assert_eq!(value, 7);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.last(), Some(&(100, 100)));
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    }
}
