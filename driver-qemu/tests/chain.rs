//! The qemu driver's image-chain operations for domain disks, on real
//! images with real qemu-img: an overlay on qcow2 and raw images (the
//! image underneath unchanged, the cluster size inherited, an existing
//! file never replaced, REUSE_EXT checked), merging a layer into its one
//! child's path and rebasing several children past a layer, each with the
//! data every image reads checked before and after, and each run twice
//! (a crash mid-way is finished by running it again).

use std::path::{Path, PathBuf};

use driver_qemu::{QemuDriver, qcow2};
use snapshot_core::conformance::backends::{self, run};
use snapshot_core::driver::{DriverError, Volume, VolumeDriver, VolumeFormat, VolumeState};

const SIZE: u64 = 4 << 20;
const SIZE_BYTES: usize = 4 << 20;

fn qcow2_image(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    backends::qcow2_create(&path, SIZE, extra);
    path
}

fn overlay_on(dir: &Path, name: &str, base: &Path) -> PathBuf {
    let path = dir.join(name);
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            path.to_str().unwrap(),
            &SIZE.to_string(),
        ],
    );
    path
}

fn write(path: &Path, offset: u64, pattern: u8) {
    backends::write(path, "qcow2", offset, 65_536, pattern);
}

fn content(path: &Path) -> Vec<u8> {
    backends::content(path, "qcow2")
}

fn qcow2_volume(path: &Path) -> Volume {
    Volume::new(path, VolumeFormat::Qcow2)
}

#[tokio::test]
async fn overlay_on_qcow2_keeps_the_base_and_its_cluster_size() {
    if !backends::qemu_tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = qcow2_image(dir.path(), "base.qcow2", &["-o", "cluster_size=131072"]);
    write(&base, 0, 0x11);
    let before = content(&base);
    let driver = QemuDriver::new();
    let caps = driver
        .capabilities(&qcow2_volume(&base), VolumeState::Offline)
        .await
        .unwrap();
    assert!(caps.overlay);
    let overlay = dir.path().join("base.s1");
    driver
        .create_overlay(&qcow2_volume(&base), &overlay, false)
        .await
        .unwrap();
    let header = qcow2::read_header(&overlay).unwrap();
    assert_eq!(header.cluster_size, 131_072);
    assert_eq!(header.size, SIZE);
    assert_eq!(header.backing_file.as_deref(), Some(base.to_str().unwrap()));
    assert_eq!(header.backing_format.as_deref(), Some("qcow2"));
    assert_eq!(content(&overlay), before);
    write(&overlay, 0, 0x22);
    assert_eq!(content(&base), before, "the base must not change");
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // An existing file is never replaced.
    let written = content(&overlay);
    let e = driver
        .create_overlay(&qcow2_volume(&base), &overlay, false)
        .await
        .expect_err("exists");
    assert!(matches!(e, DriverError::Exists { .. }), "{e}");
    assert_eq!(content(&overlay), written);

    // REUSE_EXT: accepted when backed by the base, refused otherwise.
    driver
        .create_overlay(&qcow2_volume(&base), &overlay, true)
        .await
        .unwrap();
    let stranger = qcow2_image(dir.path(), "stranger.qcow2", &[]);
    let e = driver
        .create_overlay(&qcow2_volume(&base), &stranger, true)
        .await
        .expect_err("not backed by base");
    assert!(e.to_string().contains("--reuse-external"), "{e}");
}

#[tokio::test]
async fn overlay_on_raw_reads_the_raw_bytes() {
    if !backends::qemu_tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![0x5a; SIZE_BYTES]).unwrap();
    let volume = Volume::new(&raw, VolumeFormat::Raw);
    let driver = QemuDriver::new();
    let caps = driver
        .capabilities(&volume, VolumeState::Offline)
        .await
        .unwrap();
    assert!(caps.overlay && !caps.internal && !caps.external);
    let overlay = dir.path().join("disk.s1");
    driver
        .create_overlay(&volume, &overlay, false)
        .await
        .unwrap();
    assert_eq!(content(&overlay), vec![0x5a; SIZE_BYTES]);
    assert_eq!(
        qcow2::read_header(&overlay)
            .unwrap()
            .backing_format
            .as_deref(),
        Some("raw")
    );
}

#[tokio::test]
async fn merging_a_layer_keeps_what_the_child_reads_at_its_path() {
    if !backends::qemu_tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = qcow2_image(dir.path(), "root.qcow2", &[]);
    write(&root, 0, 0x01);
    let mid = overlay_on(dir.path(), "mid.qcow2", &root);
    write(&mid, 65_536, 0x02);
    let top = overlay_on(dir.path(), "top.qcow2", &mid);
    write(&top, 131_072, 0x03);
    let want = content(&top);
    let root_before = content(&root);

    let driver = QemuDriver::new();
    driver.merge_layer(&mid, &top, None).await.unwrap();
    assert!(!mid.exists());
    assert_eq!(content(&top), want);
    assert_eq!(content(&root), root_before);
    let header = qcow2::read_header(&top).unwrap();
    assert_eq!(header.backing_file.as_deref(), Some(root.to_str().unwrap()));
    // Again (as after a crash once done): nothing to do.
    driver.merge_layer(&mid, &top, None).await.unwrap();
    assert_eq!(content(&top), want);

    // An image with internal snapshots is not merged into.
    let held = qcow2_image(dir.path(), "held.qcow2", &[]);
    run(
        "qemu-img",
        &["snapshot", "-c", "keep", held.to_str().unwrap()],
    );
    let child = overlay_on(dir.path(), "child.qcow2", &held);
    let e = driver
        .merge_layer(&held, &child, None)
        .await
        .expect_err("held");
    assert!(matches!(e, DriverError::Unsupported { .. }), "{e}");
    assert!(held.exists() && child.exists());
    // A child of another image is refused.
    let e = driver
        .merge_layer(&root, &child, None)
        .await
        .expect_err("not its child");
    assert!(matches!(e, DriverError::Inconsistent(_)), "{e}");
}

#[tokio::test]
async fn rebasing_children_past_a_layer_keeps_every_branch() {
    if !backends::qemu_tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = qcow2_image(dir.path(), "root.qcow2", &[]);
    write(&root, 0, 0x01);
    let mid = overlay_on(dir.path(), "mid.qcow2", &root);
    write(&mid, 65_536, 0x02);
    let a = overlay_on(dir.path(), "a.qcow2", &mid);
    write(&a, 131_072, 0x0a);
    let b = overlay_on(dir.path(), "b.qcow2", &mid);
    write(&b, 65_536, 0x0b);
    let (want_a, want_b) = (content(&a), content(&b));

    let driver = QemuDriver::new();
    let children = vec![a.clone(), b.clone()];
    driver
        .rebase_layers(&mid, &children, Some(&root), None)
        .await
        .unwrap();
    assert!(!mid.exists());
    assert_eq!(content(&a), want_a);
    assert_eq!(content(&b), want_b);
    for child in [&a, &b] {
        assert_eq!(
            qcow2::read_header(child).unwrap().backing_file.as_deref(),
            Some(root.to_str().unwrap())
        );
    }
    // Again: already done.
    driver
        .rebase_layers(&mid, &children, Some(&root), None)
        .await
        .unwrap();

    // Onto nothing: the children stand alone, the root can go.
    driver
        .rebase_layers(&root, &children, None, None)
        .await
        .unwrap();
    assert!(!root.exists());
    assert_eq!(content(&a), want_a);
    assert_eq!(content(&b), want_b);
    assert_eq!(qcow2::read_header(&a).unwrap().backing_file, None);
}
