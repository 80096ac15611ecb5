//! Image chains for domain disks (libvirt's external snapshots): a new
//! overlay on an image that stays where it is ([`create_overlay`]), and
//! removing a layer from a chain without changing what any image above it
//! reads, by merging its one child down into it ([`merge_layer`]) or by
//! rebasing its children past it ([`rebase_layers`]). Every operation is
//! safe to run again after a crash: it finishes what was begun.

use std::fs;
use std::path::{Path, PathBuf};

use snapshot_core::driver::{DriverError, Progress, Volume, VolumeFormat};

use crate::{
    QemuDriver, absolute, backed_by, backing_of, qcow2, remove_if_exists, s, sync_dir, sync_file,
};

/// The bytes a guest sees in `volume`.
fn virtual_size(volume: &Volume) -> Result<u64, DriverError> {
    if volume.format == VolumeFormat::Qcow2 {
        return Ok(qcow2::read_header(&volume.path)?.size);
    }
    let file = fs::File::open(&volume.path).map_err(DriverError::io("opening", &volume.path))?;
    driver_file_len(&file).map_err(DriverError::io("sizing", &volume.path))
}

/// A file's length, or a block device's capacity.
fn driver_file_len(file: &fs::File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::End(0))
}

/// `qemu-img`'s format word for an existing image.
fn format_of(path: &Path) -> Result<&'static str, DriverError> {
    match qcow2::is_qcow2(path) {
        Ok(true) => Ok("qcow2"),
        Ok(false) => Ok("raw"),
        Err(e) => Err(DriverError::io("reading the header of", path)(e)),
    }
}

/// The temporary name beside `target` an image is written under before
/// it takes its name.
fn temp_beside(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    target.with_file_name(format!(".{name}.virtsnap-new"))
}

pub(crate) async fn create_overlay(
    driver: &QemuDriver,
    base: &Volume,
    overlay: &Path,
    reuse: bool,
) -> Result<(), DriverError> {
    if !base.path.exists() {
        return Err(DriverError::NotFound {
            what: format!("image {}", base.path.display()),
        });
    }
    let base_path = absolute(&base.path)?;
    let overlay = absolute(overlay)?;
    if reuse {
        if !overlay.exists() {
            return Err(DriverError::NotFound {
                what: format!(
                    "the existing overlay {} that --reuse-external names",
                    overlay.display()
                ),
            });
        }
        if !backed_by(&overlay, &base_path) {
            return Err(DriverError::Inconsistent(format!(
                "--reuse-external: {} is not a qcow2 image backed by {}; create it with \
                 `qemu-img create -f qcow2 -F {} -b {} {}` or drop --reuse-external",
                overlay.display(),
                base_path.display(),
                base.format,
                base_path.display(),
                overlay.display()
            )));
        }
        return Ok(());
    }
    if overlay.exists() {
        return Err(DriverError::Exists {
            what: format!("external snapshot file {}", overlay.display()),
        });
    }
    let size = virtual_size(base)?;
    let mut args: Vec<String> = vec![
        "create".into(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        "-F".into(),
        base.format.as_str().into(),
        "-b".into(),
        s(&base_path),
        "-u".into(),
    ];
    if base.format == VolumeFormat::Qcow2 {
        // The overlay keeps the image's cluster size, as libvirt does.
        let cluster = qcow2::read_header(&base_path)?.cluster_size;
        args.extend(["-o".into(), format!("cluster_size={cluster}")]);
    }
    let temp = temp_beside(&overlay);
    remove_if_exists(&temp)?;
    args.extend([s(&temp), size.to_string()]);
    let made = driver
        .img(&args)
        .await
        .and_then(|_| sync_file(&temp))
        .and_then(|()| {
            // A link refuses an existing name: nothing is ever replaced.
            fs::hard_link(&temp, &overlay).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    DriverError::Exists {
                        what: format!("external snapshot file {}", overlay.display()),
                    }
                } else {
                    DriverError::io("naming the new overlay", &overlay)(e)
                }
            })
        });
    let _ = fs::remove_file(&temp);
    made?;
    sync_dir(&overlay)
}

pub(crate) async fn merge_layer(
    driver: &QemuDriver,
    image: &Path,
    top: &Path,
    progress: Option<&Progress>,
) -> Result<(), DriverError> {
    if !image.exists() {
        // Renamed over `top` by an earlier run: done.
        if top.exists() {
            return Ok(());
        }
        return Err(DriverError::NotFound {
            what: format!("image {} and its child {}", image.display(), top.display()),
        });
    }
    if !backed_by(top, image) {
        return Err(DriverError::Inconsistent(format!(
            "{} is not backed by {}: the chain is not what the snapshot metadata says",
            top.display(),
            image.display()
        )));
    }
    let header = qcow2::read_header(image).map_err(|_| DriverError::Unsupported {
        driver: "qemu",
        operation: "merge an image layer".into(),
        volume: image.display().to_string(),
        reason: "it is not qcow2, so merging would change the format at its child's path".into(),
        hint: "rebase the child instead".into(),
    })?;
    let top_header = qcow2::read_header(top)?;
    // A relative backing name would point elsewhere from `top`'s directory.
    let relative_elsewhere = header
        .backing_file
        .as_deref()
        .is_some_and(|b| !Path::new(b).is_absolute())
        && image.parent() != top.parent();
    if header.nb_snapshots > 0 || header.size != top_header.size || relative_elsewhere {
        return Err(DriverError::Unsupported {
            driver: "qemu",
            operation: "merge an image layer".into(),
            volume: image.display().to_string(),
            reason: "it holds internal snapshots, differs in size from its child, or names its \
                     backing file relative to another directory"
                .into(),
            hint: "rebase the child instead".into(),
        });
    }
    for path in [image, top] {
        if crate::lock::held_for_writing(path)
            .map_err(DriverError::io("checking the lock of", path))?
        {
            return Err(DriverError::InUse {
                path: path.to_path_buf(),
                operation: "merge image layers".into(),
            });
        }
    }
    driver
        .img_with_progress(
            &[
                "commit".into(),
                "-f".into(),
                "qcow2".into(),
                "-d".into(),
                "-p".into(),
                s(top),
            ],
            top_header.size,
            progress,
        )
        .await?;
    sync_file(image)?;
    fs::rename(image, top).map_err(DriverError::io("moving the merged image to", top))?;
    sync_dir(top)
}

pub(crate) async fn rebase_layers(
    driver: &QemuDriver,
    image: &Path,
    children: &[PathBuf],
    onto: Option<&Path>,
    progress: Option<&Progress>,
) -> Result<(), DriverError> {
    let onto_format = match onto {
        Some(o) => Some(format_of(o)?),
        None => None,
    };
    for child in children {
        if !child.exists() {
            return Err(DriverError::NotFound {
                what: format!("image {} built on {}", child.display(), image.display()),
            });
        }
        if !image.exists() || !backed_by(child, image) {
            // Rebased by an earlier run: it must now read from `onto`.
            let now = backing_of(child);
            let fine = match (onto, &now) {
                (Some(o), Some(b)) => crate::same_file(o, b),
                (None, None) => true,
                _ => false,
            };
            if fine {
                continue;
            }
            return Err(DriverError::Inconsistent(format!(
                "{} is not backed by {} (nor already by {}): the chain is not what the \
                 snapshot metadata says",
                child.display(),
                image.display(),
                onto.map_or_else(|| "nothing".to_string(), |o| o.display().to_string())
            )));
        }
        if crate::lock::held_for_writing(child)
            .map_err(DriverError::io("checking the lock of", child))?
        {
            return Err(DriverError::InUse {
                path: child.clone(),
                operation: "rebase it".into(),
            });
        }
        let size = qcow2::read_header(child)?.size;
        let mut args: Vec<String> = vec!["rebase".into(), "-f".into(), "qcow2".into()];
        match (onto, onto_format) {
            (Some(o), Some(fmt)) => {
                args.extend(["-F".into(), fmt.into(), "-b".into(), s(&absolute(o)?)]);
            }
            _ => args.extend(["-b".into(), String::new()]),
        }
        args.extend(["-p".into(), s(child)]);
        driver.img_with_progress(&args, size, progress).await?;
        sync_file(child)?;
    }
    if remove_if_exists(image)? {
        sync_dir(image)?;
    }
    Ok(())
}
