//! The btrfs driver on a real, loop-mounted btrfs, beyond the
//! conformance suite: a 1 GiB file snapshotted without copying its data
//! (its blocks shared, the free space unchanged), reverted and checked
//! by sha256, deleted; files off btrfs declined; subvolume snapshots
//! listed, and a revert leaving nothing behind.

mod support;

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use driver_btrfs::{BtrfsDriver, is_btrfs, snapshot_dir};
use snapshot_core::driver::{
    Capabilities, DeleteContext, DriverError, SnapshotMode, SnapshotPlan, Volume, VolumeDriver,
    VolumeFormat, VolumeState,
};
use snapshot_core::files::sha256_file;
use support::Btrfs;

const MIB: u64 = 1 << 20;

fn plan(name: &str, mode: SnapshotMode, file: Option<&Path>) -> SnapshotPlan {
    SnapshotPlan {
        name: name.to_string(),
        mode,
        file: file.map(Path::to_path_buf),
        checksum: false,
        writable: false,
    }
}

/// Free bytes of the filesystem holding `path`, after a commit.
fn free(path: &Path) -> u64 {
    support::btrfs(&["filesystem", "sync", path.to_str().expect("UTF-8")]);
    let st = rustix::fs::statvfs(path).expect("statvfs");
    st.f_bavail * st.f_frsize
}

/// Writes `len` bytes of data that does not compress or deduplicate.
fn write_data(path: &Path, len: u64) {
    let mut file = File::create(path).expect("creating the volume");
    let mut block = vec![0u8; usize::try_from(MIB).expect("1 MiB")];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..len / MIB {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&(x ^ i).to_le_bytes());
        }
        file.write_all(&block).expect("writing the volume");
    }
    file.sync_all().expect("syncing the volume");
}

/// The exclusive bytes of `path` by `btrfs filesystem du --raw`.
fn exclusive(path: &Path) -> u64 {
    let out = support::btrfs(&[
        "filesystem",
        "du",
        "-s",
        "--raw",
        path.to_str().expect("UTF-8"),
    ]);
    let line = out
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("btrfs du: {out}"));
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("btrfs du: {out}"))
}

#[tokio::test]
async fn a_1_gib_file_is_snapshotted_without_copying() {
    let Some(fs) = Btrfs::new_or_skip("2G") else {
        return;
    };
    let driver = BtrfsDriver::new();
    let disk = fs.path().join("disk.img");
    write_data(&disk, 1024 * MIB);
    let volume = Volume::new(&disk, VolumeFormat::Raw);
    let original = sha256_file(&disk).expect("hashing");

    let caps = driver
        .capabilities(&volume, VolumeState::Offline)
        .await
        .expect("capabilities");
    assert!(caps.copy && caps.revert && !caps.internal, "{caps:?}");

    let before = free(fs.path());
    let file = fs.path().join("disk.img.clean");
    let created = driver
        .create(
            &volume,
            &plan("clean", SnapshotMode::Copy, Some(&file)),
            None,
        )
        .await
        .expect("create");
    let after = free(fs.path());
    assert!(
        before.saturating_sub(after) < 16 * MIB,
        "the snapshot took {} bytes of free space",
        before.saturating_sub(after)
    );
    assert_eq!(exclusive(&file), 0, "the snapshot shares all its blocks");
    assert_eq!(fs::metadata(&file).expect("stat").len(), 1024 * MIB);

    // Change the volume, revert, and compare every byte.
    {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .expect("open");
        std::os::unix::fs::FileExt::write_all_at(&f, &[0xff; 4096], 512 * MIB).expect("write");
        f.set_len(1100 * MIB).expect("grow");
    }
    assert_ne!(sha256_file(&disk).expect("hashing"), original);
    let before = free(fs.path());
    driver
        .revert(&volume, &created.as_ref(), true, None)
        .await
        .expect("revert");
    assert_eq!(sha256_file(&disk).expect("hashing"), original);
    assert!(
        before.saturating_sub(free(fs.path())) < 16 * MIB,
        "the revert copied data"
    );

    driver
        .delete(&volume, &created.as_ref(), &DeleteContext::default(), None)
        .await
        .expect("delete");
    assert!(!file.exists(), "the snapshot file is gone");
    assert_eq!(sha256_file(&disk).expect("hashing"), original);
    let names: Vec<_> = fs::read_dir(fs.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["disk.img"], "nothing else is left");
}

#[tokio::test]
async fn files_off_btrfs_are_declined() {
    let dir = tempfile::tempdir().expect("tempdir");
    if is_btrfs(dir.path()).expect("statfs") {
        eprintln!("SKIP: {} is on btrfs", dir.path().display());
        return;
    }
    let disk = dir.path().join("disk.img");
    fs::write(&disk, b"data").expect("write");
    let volume = Volume::new(&disk, VolumeFormat::Raw);
    let driver = BtrfsDriver::new();
    let caps = driver
        .capabilities(&volume, VolumeState::Offline)
        .await
        .expect("capabilities");
    assert_eq!(caps, Capabilities::default());
    let file = dir.path().join("disk.img.s");
    let err = driver
        .create(&volume, &plan("s", SnapshotMode::Copy, Some(&file)), None)
        .await
        .expect_err("a file off btrfs is refused");
    assert!(matches!(err, DriverError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("file driver"), "{err}");
    assert!(!file.exists());
    let missing = Volume::new(dir.path().join("nope"), VolumeFormat::Raw);
    let err = driver
        .capabilities(&missing, VolumeState::Offline)
        .await
        .expect_err("a missing volume");
    assert!(matches!(err, DriverError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_snapshot_file_on_another_filesystem_is_refused() {
    let Some(fs) = Btrfs::new_or_skip("300M") else {
        return;
    };
    let other = tempfile::tempdir().expect("tempdir");
    let disk = fs.path().join("disk.img");
    fs::write(&disk, b"data").expect("write");
    let volume = Volume::new(&disk, VolumeFormat::Raw);
    let file = other.path().join("disk.img.s");
    let err = BtrfsDriver::new()
        .create(&volume, &plan("s", SnapshotMode::Copy, Some(&file)), None)
        .await
        .expect_err("no reflink across filesystems");
    assert!(matches!(err, DriverError::Unsupported { .. }), "{err}");
    assert_eq!(
        fs::read_dir(other.path()).expect("readdir").count(),
        0,
        "nothing is left behind"
    );
}

#[tokio::test]
async fn in_use_volumes_are_declined() {
    let Some(fs) = Btrfs::new_or_skip("300M") else {
        return;
    };
    let disk = fs.path().join("disk.img");
    fs::write(&disk, b"data").expect("write");
    let caps = BtrfsDriver::new()
        .capabilities(&Volume::new(&disk, VolumeFormat::Raw), VolumeState::InUse)
        .await
        .expect("capabilities");
    assert_eq!(caps, Capabilities::default());
}

#[tokio::test]
async fn subvolume_snapshots_are_listed_and_reverts_leave_nothing_behind() {
    let Some(fs) = Btrfs::new_or_skip("300M") else {
        return;
    };
    let driver = BtrfsDriver::new();
    let vol = fs.path().join("data");
    support::btrfs(&["subvolume", "create", vol.to_str().expect("UTF-8")]);
    fs::write(vol.join("a"), b"one").expect("write");
    let volume = Volume::new(&vol, VolumeFormat::Other("subvolume".into()));
    let caps = driver
        .capabilities(&volume, VolumeState::Offline)
        .await
        .expect("capabilities");
    assert!(caps.internal && caps.list && !caps.copy, "{caps:?}");

    let first = driver
        .create(&volume, &plan("first", SnapshotMode::Internal, None), None)
        .await
        .expect("create");
    fs::write(vol.join("a"), b"two").expect("write");
    fs::write(vol.join("b"), b"new").expect("write");
    driver
        .create(&volume, &plan("second", SnapshotMode::Internal, None), None)
        .await
        .expect("create");
    let snap = snapshot_dir(&vol).join("first");
    let ro = support::btrfs(&[
        "property",
        "get",
        "-ts",
        snap.to_str().expect("UTF-8"),
        "ro",
    ]);
    assert_eq!(ro.trim(), "ro=true", "snapshots are read-only");

    let listed: Vec<String> = driver
        .list(&volume)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(listed, ["first", "second"]);

    driver
        .revert(&volume, &first.as_ref(), true, None)
        .await
        .expect("revert");
    assert_eq!(fs::read(vol.join("a")).expect("read"), b"one");
    assert!(!vol.join("b").exists(), "files made later are gone");
    fs::write(vol.join("c"), b"writable").expect("the reverted volume is writable");
    let mut names: Vec<_> = fs::read_dir(fs.path())
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("UTF-8"))
        .collect();
    names.sort();
    assert_eq!(names, [".data.snapshots", "data"], "no temporary left");

    // A file volume's snapshot mode is refused for a subvolume, and a
    // subvolume's for a file.
    let err = driver
        .create(
            &volume,
            &plan("c", SnapshotMode::Copy, Some(&fs.path().join("c"))),
            None,
        )
        .await
        .expect_err("copy of a subvolume");
    assert!(matches!(err, DriverError::Unsupported { .. }), "{err}");
    let err = driver
        .create(&volume, &plan("../x", SnapshotMode::Internal, None), None)
        .await
        .expect_err("a name with a slash");
    assert!(matches!(err, DriverError::InvalidName { .. }), "{err}");
}

/// A subvolume `data` on `fs` holding the file `a` ("one"), as a volume.
fn subvolume(fs: &Btrfs) -> Volume {
    let vol = fs.path().join("data");
    support::btrfs(&["subvolume", "create", vol.to_str().expect("UTF-8")]);
    fs::write(vol.join("a"), b"one").expect("write");
    Volume::new(&vol, VolumeFormat::Other("subvolume".into()))
}

/// `btrfs property get -ts PATH ro`.
fn ro_property(path: &Path) -> String {
    support::btrfs(&[
        "property",
        "get",
        "-ts",
        path.to_str().expect("UTF-8"),
        "ro",
    ])
    .trim()
    .to_string()
}

/// The paths `btrfs subvolume list` gives for the filesystem at `mount`.
fn subvolumes(mount: &Path) -> Vec<String> {
    support::btrfs(&["subvolume", "list", mount.to_str().expect("UTF-8")])
        .lines()
        .filter_map(|line| line.split_once(" path ").map(|(_, p)| p.to_string()))
        .collect()
}

/// The names in the directory `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("UTF-8"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn read_only_snapshots_refuse_writes() {
    let Some(fs) = Btrfs::new_or_skip("300M") else {
        return;
    };
    let driver = BtrfsDriver::new();
    let volume = subvolume(&fs);
    driver
        .create(&volume, &plan("ro", SnapshotMode::Internal, None), None)
        .await
        .expect("create");
    let snap = snapshot_dir(&volume.path).join("ro");
    assert_eq!(ro_property(&snap), "ro=true");
    let err = fs::OpenOptions::new()
        .write(true)
        .open(snap.join("a"))
        .expect_err("a read-only snapshot's file cannot be opened for writing");
    assert_eq!(err.kind(), std::io::ErrorKind::ReadOnlyFilesystem, "{err}");
    let err = fs::write(snap.join("new"), b"x").expect_err("nor can a file be created");
    assert_eq!(err.kind(), std::io::ErrorKind::ReadOnlyFilesystem, "{err}");
    assert_eq!(fs::read(snap.join("a")).expect("read"), b"one");
    // The volume itself stays writable.
    fs::write(volume.path.join("a"), b"two").expect("the volume is writable");
    assert_eq!(ro_property(&volume.path), "ro=false");
}

#[tokio::test]
async fn writable_snapshots_take_writes_and_revert_to_their_content() {
    let Some(fs) = Btrfs::new_or_skip("300M") else {
        return;
    };
    let driver = BtrfsDriver::new();
    let volume = subvolume(&fs);
    let mut writable = plan("rw", SnapshotMode::Internal, None);
    writable.writable = true;
    let created = driver
        .create(&volume, &writable, None)
        .await
        .expect("create");
    let snap = snapshot_dir(&volume.path).join("rw");
    assert_eq!(ro_property(&snap), "ro=false");
    assert_eq!(fs::read(snap.join("a")).expect("read"), b"one");

    // Both the snapshot and the volume change after the snapshot.
    fs::write(snap.join("a"), b"changed in the snapshot").expect("the snapshot is writable");
    fs::write(snap.join("b"), b"added to the snapshot").expect("the snapshot is writable");
    fs::write(volume.path.join("a"), b"changed in the volume").expect("write");
    fs::write(volume.path.join("c"), b"added to the volume").expect("write");
    let listed: Vec<String> = driver
        .list(&volume)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(listed, ["rw"], "writable snapshots are listed");

    // The revert restores the snapshot's content as it is now.
    driver
        .revert(&volume, &created.as_ref(), true, None)
        .await
        .expect("revert");
    assert_eq!(
        fs::read(volume.path.join("a")).expect("read"),
        b"changed in the snapshot"
    );
    assert_eq!(
        fs::read(volume.path.join("b")).expect("read"),
        b"added to the snapshot"
    );
    assert!(
        !volume.path.join("c").exists(),
        "the volume's change is gone"
    );
    assert_eq!(ro_property(&volume.path), "ro=false");
    fs::write(volume.path.join("d"), b"x").expect("the reverted volume is writable");
    // The snapshot is kept, still writable, and independent of the volume.
    assert_eq!(ro_property(&snap), "ro=false");
    assert!(!snap.join("d").exists());
    assert_eq!(entries(fs.path()), [".data.snapshots", "data"]);

    driver
        .delete(&volume, &created.as_ref(), &DeleteContext::default(), None)
        .await
        .expect("delete");
    assert_eq!(entries(fs.path()), ["data"]);

    // For a file, `writable` changes nothing: a reflinked copy as always.
    let disk = fs.path().join("disk.img");
    fs::write(&disk, b"data").expect("write");
    let file = fs.path().join("disk.img.rw");
    let mut copy = plan("rw", SnapshotMode::Copy, Some(&file));
    copy.writable = true;
    driver
        .create(&Volume::new(&disk, VolumeFormat::Raw), &copy, None)
        .await
        .expect("a writable copy");
    assert_eq!(fs::read(&file).expect("read"), b"data");
}

#[tokio::test]
async fn invalid_names_are_refused_and_nothing_is_created() {
    let Some(fs) = Btrfs::new_or_skip("300M") else {
        return;
    };
    let driver = BtrfsDriver::new();
    let volume = subvolume(&fs);
    let long = "n".repeat(256);
    let longer = "n".repeat(5000);
    for (name, why) in [
        ("", "empty"),
        (".", "'.' and '..'"),
        ("..", "'.' and '..'"),
        ("a/b", "'/'"),
        ("../escape", "'/'"),
        ("x\0y", "NUL"),
        (long.as_str(), "255 bytes"),
        (longer.as_str(), "4039 bytes"),
    ] {
        for writable in [false, true] {
            let mut p = plan(name, SnapshotMode::Internal, None);
            p.writable = writable;
            let err = driver
                .create(&volume, &p, None)
                .await
                .expect_err("an invalid name");
            let DriverError::InvalidName { reason, .. } = &err else {
                panic!("{name:?}: {err}");
            };
            assert!(reason.contains(why), "{name:?}: {err}");
            assert!(err.to_string().contains("invalid snapshot name"), "{err}");
        }
        let snapshot = snapshot_core::driver::SnapshotRef {
            name: name.to_string(),
            mode: SnapshotMode::Internal,
            file: None,
            checksum: None,
        };
        let err = driver
            .revert(&volume, &snapshot, false, None)
            .await
            .expect_err("revert to an invalid name");
        assert!(matches!(err, DriverError::InvalidName { .. }), "{err}");
        let err = driver
            .delete(&volume, &snapshot, &DeleteContext::default(), None)
            .await
            .expect_err("delete of an invalid name");
        assert!(matches!(err, DriverError::InvalidName { .. }), "{err}");
    }
    assert_eq!(entries(fs.path()), ["data"], "no snapshot directory");
    assert_eq!(subvolumes(fs.path()), ["data"], "no subvolume");
    assert_eq!(fs::read(volume.path.join("a")).expect("read"), b"one");
}

#[tokio::test]
async fn deleting_a_snapshot_removes_its_subvolume() {
    let Some(fs) = Btrfs::new_or_skip("300M") else {
        return;
    };
    let driver = BtrfsDriver::new();
    let volume = subvolume(&fs);
    let mut made = Vec::new();
    for (name, writable) in [("s1", false), ("s2", true)] {
        let mut p = plan(name, SnapshotMode::Internal, None);
        p.writable = writable;
        made.push(driver.create(&volume, &p, None).await.expect("create"));
    }
    assert_eq!(
        subvolumes(fs.path()),
        ["data", ".data.snapshots/s1", ".data.snapshots/s2"]
    );

    driver
        .delete(&volume, &made[0].as_ref(), &DeleteContext::default(), None)
        .await
        .expect("delete a read-only snapshot");
    assert_eq!(subvolumes(fs.path()), ["data", ".data.snapshots/s2"]);
    assert!(!snapshot_dir(&volume.path).join("s1").exists());
    // Again: a missing snapshot is fine.
    driver
        .delete(&volume, &made[0].as_ref(), &DeleteContext::default(), None)
        .await
        .expect("delete again");

    // Something else under a snapshot's name is not deleted.
    let squatter = snapshot_dir(&volume.path).join("s3");
    fs::create_dir(&squatter).expect("mkdir");
    fs::write(squatter.join("keep"), b"mine").expect("write");
    let s3 = snapshot_core::driver::SnapshotRef {
        name: "s3".to_string(),
        mode: SnapshotMode::Internal,
        file: None,
        checksum: None,
    };
    let err = driver
        .delete(&volume, &s3, &DeleteContext::default(), None)
        .await
        .expect_err("a plain directory is not a snapshot");
    assert!(matches!(err, DriverError::Inconsistent(_)), "{err}");
    assert_eq!(fs::read(squatter.join("keep")).expect("read"), b"mine");
    fs::remove_dir_all(&squatter).expect("cleanup");

    driver
        .delete(&volume, &made[1].as_ref(), &DeleteContext::default(), None)
        .await
        .expect("delete a writable snapshot");
    assert_eq!(subvolumes(fs.path()), ["data"]);
    assert_eq!(
        entries(fs.path()),
        ["data"],
        "the snapshot directory went too"
    );
    let listed = driver.list(&volume).await.expect("list");
    assert!(listed.is_empty(), "{listed:?}");
}
