//! The `file` driver on real files in temporary directories: copies,
//! reverts, deletes, undo, checksums, sparse files, refusals, progress,
//! and a full filesystem (a small tmpfs).

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use driver_file::FileDriver;
use driver_file::copy;
use snapshot_core::conformance::backends::Tmpfs;
use snapshot_core::driver::{
    Capabilities, DeleteContext, DriverError, SnapshotMode, SnapshotPlan, SnapshotRef, Volume,
    VolumeDriver, VolumeFormat, VolumeState,
};

const MIB: u64 = 1 << 20;

/// `len` bytes of a pattern that depends on `seed` (no zero blocks).
fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let b = (i % 251) as u8;
            b.wrapping_mul(7).wrapping_add(seed) | 1
        })
        .collect()
}

fn volume(dir: &Path, content: &[u8]) -> Volume {
    let path = dir.join("disk.img");
    fs::write(&path, content).unwrap();
    Volume::new(path, VolumeFormat::Raw)
}

fn plan(name: &str, file: &Path, checksum: bool) -> SnapshotPlan {
    SnapshotPlan {
        name: name.to_string(),
        mode: SnapshotMode::Copy,
        file: Some(file.to_path_buf()),
        checksum,
        writable: false,
    }
}

/// Panics unless the files at `a` and `b` hold the same bytes.
fn assert_same_content(a: &Path, b: &Path) {
    use std::io::Read;
    let (mut a_file, mut b_file) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut a_buf, mut b_buf) = (vec![0; 4 << 20], vec![0; 4 << 20]);
    let mut offset = 0;
    loop {
        let n = a_file.read(&mut a_buf).unwrap();
        b_file.read_exact(&mut b_buf[..n]).unwrap();
        assert!(
            a_buf[..n] == b_buf[..n],
            "{} and {} differ after offset {offset}",
            a.display(),
            b.display()
        );
        if n == 0 {
            assert_eq!(
                b_file.read(&mut b_buf).unwrap(),
                0,
                "{} is longer",
                b.display()
            );
            return;
        }
        offset += n;
    }
}

/// Files in `dir` named like a temporary copy.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(copy::TEMP_SUFFIX))
        .collect()
}

#[tokio::test]
async fn create_revert_delete_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let a = pattern(3 * MIB + 123, 1);
    let vol = volume(dir.path(), &a);
    fs::set_permissions(&vol.path, fs::Permissions::from_mode(0o640)).unwrap();
    let driver = FileDriver::new();
    assert_eq!(driver.kind(), "file");

    let target = dir.path().join("disk.img.s1");
    let created = driver
        .create(&vol, &plan("s1", &target, true), None)
        .await
        .unwrap();
    assert_eq!(created.name, "s1");
    assert_eq!(created.mode, SnapshotMode::Copy);
    assert_eq!(created.file.as_deref(), Some(target.as_path()));
    assert_eq!(created.format, Some(VolumeFormat::Raw));
    assert!(created.size.unwrap() >= a.len() as u64);
    assert_eq!(fs::read(&target).unwrap(), a);
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let checksum = created.checksum.clone().unwrap();
    assert_eq!(checksum.algorithm, "sha256");
    assert_eq!(checksum.value, copy::sha256_file(&vol.path).unwrap());
    assert!(temp_files(dir.path()).is_empty());

    // The volume changes, then comes back.
    let b = pattern(2 * MIB, 2);
    fs::write(&vol.path, &b).unwrap();
    fs::set_permissions(&vol.path, fs::Permissions::from_mode(0o604)).unwrap();
    driver
        .revert(&vol, &created.as_ref(), true, None)
        .await
        .unwrap();
    assert_eq!(fs::read(&vol.path).unwrap(), a);
    assert_eq!(
        fs::metadata(&vol.path).unwrap().permissions().mode() & 0o7777,
        0o604,
        "the volume keeps its permissions"
    );
    assert_eq!(fs::read(&target).unwrap(), a, "the snapshot is kept");
    assert!(temp_files(dir.path()).is_empty());

    driver
        .delete(&vol, &created.as_ref(), &DeleteContext::default(), None)
        .await
        .unwrap();
    assert!(!target.exists());
    assert_eq!(fs::read(&vol.path).unwrap(), a, "the volume stays");
}

#[tokio::test]
async fn any_format_is_copied_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.qcow2");
    let content = pattern(MIB, 9);
    fs::write(&path, &content).unwrap();
    let vol = Volume::new(&path, VolumeFormat::Qcow2);
    let target = dir.path().join("disk.qcow2.s");
    let created = FileDriver::new()
        .create(&vol, &plan("s", &target, false), None)
        .await
        .unwrap();
    assert_eq!(created.format, Some(VolumeFormat::Qcow2));
    assert_eq!(created.checksum, None);
    assert_eq!(fs::read(&target).unwrap(), content);
}

#[tokio::test]
async fn revert_follows_a_symlinked_volume() {
    let dir = tempfile::tempdir().unwrap();
    let a = pattern(MIB, 3);
    let real = volume(dir.path(), &a);
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink(&real.path, &link).unwrap();
    let vol = Volume::new(&link, VolumeFormat::Raw);
    let driver = FileDriver::new();
    let target = dir.path().join("s");
    let created = driver
        .create(&vol, &plan("s", &target, false), None)
        .await
        .unwrap();
    fs::write(&real.path, b"changed").unwrap();
    driver
        .revert(&vol, &created.as_ref(), false, None)
        .await
        .unwrap();
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(&real.path).unwrap(), a);
}

#[tokio::test]
async fn sparse_copies_keep_their_holes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.img");
    {
        let mut f = fs::File::create(&path).unwrap();
        f.set_len(128 * MIB).unwrap();
        f.write_all(&pattern(MIB, 4)).unwrap();
        f.seek(SeekFrom::Start(64 * MIB)).unwrap();
        f.write_all(&pattern(MIB, 5)).unwrap();
        f.sync_all().unwrap();
    }
    let vol = Volume::new(&path, VolumeFormat::Raw);
    let driver = FileDriver::new();
    let target = dir.path().join("sparse.img.s");
    // No checksum: hashing 128 MiB is slow in unoptimised test builds.
    driver
        .create(&vol, &plan("s", &target, false), None)
        .await
        .unwrap();
    let (src, dst) = (fs::metadata(&path).unwrap(), fs::metadata(&target).unwrap());
    assert_eq!(dst.len(), 128 * MIB);
    // 512-byte blocks: allow 1 MiB of slack for filesystem metadata and
    // preallocation.
    let slack = 2048;
    assert!(
        dst.blocks() <= src.blocks() + slack,
        "the copy takes {} blocks, the source {}",
        dst.blocks(),
        src.blocks()
    );
    assert!(dst.blocks() < 16 * MIB / 512, "the copy is not sparse");
    assert_same_content(&target, &path);

    // Reverting keeps the volume sparse too.
    fs::write(&path, pattern(MIB, 6)).unwrap();
    driver
        .revert(
            &vol,
            &SnapshotRef {
                name: "s".into(),
                mode: SnapshotMode::Copy,
                file: Some(target.clone()),
                checksum: None,
            },
            false,
            None,
        )
        .await
        .unwrap();
    let back = fs::metadata(&path).unwrap();
    assert_eq!(back.len(), 128 * MIB);
    assert!(back.blocks() <= src.blocks() + slack);
    assert_same_content(&target, &path);
}

#[tokio::test]
async fn an_existing_target_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let vol = volume(dir.path(), &pattern(MIB, 1));
    let target = dir.path().join("taken");
    fs::write(&target, b"keep me").unwrap();
    let err = FileDriver::new()
        .create(&vol, &plan("s", &target, false), None)
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("taken"), "{err}");
    assert_eq!(fs::read(&target).unwrap(), b"keep me");
    assert!(temp_files(dir.path()).is_empty());
}

#[tokio::test]
async fn verify_detects_a_tampered_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let vol = volume(dir.path(), &pattern(2 * MIB, 1));
    let driver = FileDriver::new();
    let target = dir.path().join("s");
    let created = driver
        .create(&vol, &plan("s", &target, true), None)
        .await
        .unwrap();
    let mut tampered = fs::read(&target).unwrap();
    tampered[1 << 20] ^= 0x40;
    fs::write(&target, &tampered).unwrap();
    let b = pattern(MIB, 2);
    fs::write(&vol.path, &b).unwrap();

    let err = driver
        .revert(&vol, &created.as_ref(), true, None)
        .await
        .unwrap_err();
    match &err {
        DriverError::ChecksumMismatch {
            name,
            file,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "s");
            assert_eq!(file, &target);
            assert_eq!(expected, &created.checksum.as_ref().unwrap().value);
            assert_ne!(found, expected);
        }
        other => panic!("expected a checksum mismatch, got {other}"),
    }
    assert_eq!(fs::read(&vol.path).unwrap(), b, "the volume is unchanged");
    assert!(temp_files(dir.path()).is_empty());

    // Without verification the revert goes ahead.
    driver
        .revert(&vol, &created.as_ref(), false, None)
        .await
        .unwrap();
    assert_eq!(fs::read(&vol.path).unwrap(), tampered);
}

#[tokio::test]
async fn revert_to_a_missing_copy_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let b = pattern(MIB, 2);
    let vol = volume(dir.path(), &b);
    let gone = dir.path().join("gone.copy");
    let err = FileDriver::new()
        .revert(
            &vol,
            &SnapshotRef {
                name: "s".into(),
                mode: SnapshotMode::Copy,
                file: Some(gone.clone()),
                checksum: None,
            },
            true,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("gone.copy"), "{err}");
    assert_eq!(fs::read(&vol.path).unwrap(), b);
}

#[tokio::test]
async fn deleting_a_missing_copy_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let vol = volume(dir.path(), b"data");
    let snapshot = SnapshotRef {
        name: "s".into(),
        mode: SnapshotMode::Copy,
        file: Some(dir.path().join("never-made")),
        checksum: None,
    };
    let driver = FileDriver::new();
    for _ in 0..2 {
        driver
            .delete(&vol, &snapshot, &DeleteContext::default(), None)
            .await
            .unwrap();
    }
    assert_eq!(fs::read(&vol.path).unwrap(), b"data");
}

#[tokio::test]
async fn delete_never_removes_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let vol = volume(dir.path(), b"data");
    let snapshot = SnapshotRef {
        name: "s".into(),
        mode: SnapshotMode::Copy,
        file: Some(vol.path.clone()),
        checksum: None,
    };
    let err = FileDriver::new()
        .delete(&vol, &snapshot, &DeleteContext::default(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Inconsistent(_)), "{err}");
    assert_eq!(fs::read(&vol.path).unwrap(), b"data");
}

#[tokio::test]
async fn undo_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let content = pattern(MIB, 1);
    let vol = volume(dir.path(), &content);
    let driver = FileDriver::new();
    let target = dir.path().join("s");
    let created = driver
        .create(&vol, &plan("s", &target, false), None)
        .await
        .unwrap();
    assert!(target.exists());
    // A stale temporary file from a crashed create goes too.
    fs::write(copy::temp_path(&target), b"half").unwrap();
    driver.undo(&vol, &created).await.unwrap();
    assert!(!target.exists());
    assert!(temp_files(dir.path()).is_empty());
    driver.undo(&vol, &created).await.unwrap();
    assert_eq!(fs::read(&vol.path).unwrap(), content);
}

#[tokio::test]
async fn progress_ends_with_done_equal_to_total() {
    let dir = tempfile::tempdir().unwrap();
    let len = 20 * MIB + 7;
    let vol = volume(dir.path(), &pattern(len, 1));
    let driver = FileDriver::new();
    for checksum in [false, true] {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&calls);
        let record = move |done: u64, total: u64| seen.lock().unwrap().push((done, total));
        let target = dir.path().join(format!("s-{checksum}"));
        driver
            .create(&vol, &plan("s", &target, checksum), Some(&record))
            .await
            .unwrap();
        let calls = calls.lock().unwrap().clone();
        let total = if checksum { 2 * len } else { len };
        assert_eq!(calls.last(), Some(&(total, total)), "{calls:?}");
        assert!(calls.iter().all(|&(_, t)| t == total), "{calls:?}");
        assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "{calls:?}");
    }

    // A revert reports too.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let record = move |done: u64, total: u64| seen.lock().unwrap().push((done, total));
    let snapshot = SnapshotRef {
        name: "s".into(),
        mode: SnapshotMode::Copy,
        file: Some(dir.path().join("s-false")),
        checksum: None,
    };
    driver
        .revert(&vol, &snapshot, true, Some(&record))
        .await
        .unwrap();
    assert_eq!(calls.lock().unwrap().last(), Some(&(len, len)));
}

#[tokio::test]
async fn refusals_and_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let vol = volume(dir.path(), b"data");
    let driver = FileDriver::new();

    let caps = driver
        .capabilities(&vol, VolumeState::Offline)
        .await
        .unwrap();
    assert_eq!(
        caps,
        Capabilities {
            internal: false,
            external: false,
            copy: true,
            revert: true,
            revert_keeps_newer: true,
            delete_rebase: true,
            list: false,
            checksums: true,
            overlay: false,
        }
    );
    assert_eq!(caps.modes(), vec![SnapshotMode::Copy]);
    assert!(
        !driver
            .capabilities(&vol, VolumeState::InUse)
            .await
            .unwrap()
            .copy
    );

    let missing = Volume::new(dir.path().join("nope.img"), VolumeFormat::Raw);
    let err = driver
        .capabilities(&missing, VolumeState::Offline)
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("nope.img"), "{err}");
    let err = driver
        .create(&missing, &plan("s", &dir.path().join("s"), false), None)
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::NotFound { .. }), "{err}");
    assert!(temp_files(dir.path()).is_empty());

    let mut internal = plan("s", &dir.path().join("s"), false);
    internal.mode = SnapshotMode::Internal;
    let err = driver.create(&vol, &internal, None).await.unwrap_err();
    assert!(matches!(err, DriverError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("qemu"), "{err}");

    let mut no_file = plan("s", &dir.path().join("s"), false);
    no_file.file = None;
    let err = driver.create(&vol, &no_file, None).await.unwrap_err();
    assert!(matches!(err, DriverError::Inconsistent(_)), "{err}");

    let err = driver
        .create(
            &vol,
            &plan("s", &dir.path().join("no-such-dir/s"), false),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");

    let err = driver.list(&vol).await.unwrap_err();
    assert!(matches!(err, DriverError::Unsupported { .. }), "{err}");
    assert_eq!(fs::read(&vol.path).unwrap(), b"data");
}

#[tokio::test]
async fn a_full_filesystem_is_no_space_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fs_dir = dir.path().join("small");
    fs::create_dir(&fs_dir).unwrap();
    let Some(_mount) = Tmpfs::mount_or_skip(&fs_dir, "4m") else {
        return;
    };
    let content = pattern(3 * MIB, 1);
    let vol = volume(&fs_dir, &content);
    let target = fs_dir.join("disk.img.s");
    let err = FileDriver::new()
        .create(&vol, &plan("s", &target, true), None)
        .await
        .unwrap_err();
    match &err {
        DriverError::NoSpace { path } => assert_eq!(path, &target),
        other => panic!("expected NoSpace, got {other}"),
    }
    assert!(!target.exists());
    assert!(temp_files(&fs_dir).is_empty(), "{:?}", temp_files(&fs_dir));
    assert_eq!(fs::read(&vol.path).unwrap(), content);
}

#[tokio::test]
async fn a_copy_across_filesystems_keeps_holes() {
    // tmpfs to the test directory's filesystem: copy_file_range answers
    // EXDEV and the read/write fallback copies.
    let dir = tempfile::tempdir().unwrap();
    let fs_dir = dir.path().join("other");
    fs::create_dir(&fs_dir).unwrap();
    let Some(_mount) = Tmpfs::mount_or_skip(&fs_dir, "64m") else {
        return;
    };
    let path = fs_dir.join("sparse.img");
    {
        let mut f = fs::File::create(&path).unwrap();
        f.set_len(48 * MIB).unwrap();
        f.write_all(&pattern(MIB, 4)).unwrap();
        f.seek(SeekFrom::Start(32 * MIB)).unwrap();
        f.write_all(&pattern(MIB, 5)).unwrap();
    }
    let vol = Volume::new(&path, VolumeFormat::Raw);
    let target = dir.path().join("sparse.img.s");
    FileDriver::new()
        .create(&vol, &plan("s", &target, false), None)
        .await
        .unwrap();
    let copied = fs::metadata(&target).unwrap();
    assert_eq!(copied.len(), 48 * MIB);
    assert!(
        copied.blocks() < 8 * MIB / 512,
        "{} blocks",
        copied.blocks()
    );
    assert_same_content(&target, &path);
}
