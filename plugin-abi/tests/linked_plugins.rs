//! Built-in drivers built as `cdylib` plugins with the SDK's bridge
//! (`plugins/file`: `file-plugin`, `plugins/qemu`: `qemu-plugin`), loaded
//! through the ABI and run through the same conformance suite as when
//! linked in: full copies of raw files and of qcow2 images, qcow2
//! internal snapshots and external overlays. (`btrfs-plugin` runs in
//! driver-btrfs's tests, which have the loop-mounted btrfs; `lvm-plugin`
//! in the LVM test guest.)

mod support;

use plugin_abi::host::PluginDriver;
use snapshot_core::conformance::Harness;
use snapshot_core::conformance::backends::{self, Qcow2Harness, RawHarness};
use snapshot_core::driver::SnapshotMode;

fn plugin() -> PluginDriver {
    support::driver(&support::cargo_plugin(
        "virtsnap-plugin-file",
        "virtsnap_plugin_file",
    ))
}

fn qemu_plugin() -> PluginDriver {
    support::driver(&support::cargo_plugin(
        "virtsnap-plugin-qemu",
        "virtsnap_plugin_qemu",
    ))
}

mod raw {
    use super::*;

    fn harness() -> Option<RawHarness<PluginDriver>> {
        Some(RawHarness {
            driver: plugin(),
            mode: SnapshotMode::Copy,
        })
    }

    snapshot_core::conformance_tests!(harness(), "file-plugin-raw");
}

mod qcow2 {
    use super::*;

    fn harness() -> Option<Qcow2Harness<PluginDriver>> {
        backends::qemu_tools_present().then(|| Qcow2Harness {
            driver: plugin(),
            mode: SnapshotMode::Copy,
        })
    }

    snapshot_core::conformance_tests!(harness(), "file-plugin-qcow2");
}

mod qemu_internal {
    use super::*;

    fn harness() -> Option<Qcow2Harness<PluginDriver>> {
        backends::qemu_tools_present().then(|| Qcow2Harness {
            driver: qemu_plugin(),
            mode: SnapshotMode::Internal,
        })
    }

    snapshot_core::conformance_tests!(harness(), "qemu-plugin-internal");
}

mod qemu_external {
    use super::*;

    fn harness() -> Option<Qcow2Harness<PluginDriver>> {
        backends::qemu_tools_present().then(|| Qcow2Harness {
            driver: qemu_plugin(),
            mode: SnapshotMode::External,
        })
    }

    snapshot_core::conformance_tests!(harness(), "qemu-plugin-external");
}

/// The plugin says what it is, and its capabilities are the linked
/// driver's, through the ABI.
#[tokio::test]
async fn describes_itself_like_the_linked_driver() {
    use snapshot_core::driver::{VolumeDriver, VolumeState};
    let driver = plugin();
    let p = driver.plugin();
    assert_eq!(p.name, "file-plugin");
    assert_eq!(p.abi, (1, 1));
    // driver-file has no incremental export: the bridge's default slots.
    assert_eq!(p.optional_ops(), ["revert", "list", "undo"]);
    let h = RawHarness {
        driver: driver_file::FileDriver::new(),
        mode: SnapshotMode::Copy,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = h.new_volume(dir.path(), "v");
    for state in [VolumeState::Offline, VolumeState::InUse] {
        let linked = h.driver.capabilities(&volume, state).await.expect("linked");
        let through = driver.capabilities(&volume, state).await.expect("plugin");
        assert_eq!(through, linked, "capabilities in {state:?}");
    }
    let missing =
        snapshot_core::driver::Volume::new(dir.path().join("nope"), volume.format.clone());
    let err = driver
        .capabilities(&missing, VolumeState::Offline)
        .await
        .expect_err("a missing volume");
    assert!(err.to_string().contains("nope"), "{err}");
}

/// A network volume through the bridge: driver-file does not handle
/// `rbd:pool/image`, so the plugin declines it in `capabilities` and
/// refuses every other operation without passing it to the driver; and
/// nothing appears on disk (the name is never taken for a path).
#[tokio::test]
async fn network_volumes_are_declined_and_refused_by_the_bridge() {
    use snapshot_core::driver::{
        DeleteContext, DriverError, SnapshotPlan, SnapshotRef, Volume, VolumeDriver, VolumeFormat,
        VolumeState,
    };
    let driver = plugin();
    let rbd = Volume::new("rbd:pool/image", VolumeFormat::Raw);
    assert!(driver.handles(&rbd), "a plugin is asked about every volume");
    for state in [VolumeState::Offline, VolumeState::InUse] {
        let caps = driver.capabilities(&rbd, state).await.expect("declined");
        assert_eq!(caps, Default::default(), "{state:?}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = SnapshotRef {
        name: "a".into(),
        mode: SnapshotMode::Copy,
        file: Some(dir.path().join("image.a")),
        checksum: None,
    };
    let plan = SnapshotPlan {
        name: "a".into(),
        mode: SnapshotMode::Copy,
        file: snapshot.file.clone(),
        checksum: false,
        writable: false,
    };
    let errors = [
        driver.create(&rbd, &plan, None).await.expect_err("create"),
        driver
            .revert(&rbd, &snapshot, false, None)
            .await
            .expect_err("revert"),
        driver
            .delete(&rbd, &snapshot, &DeleteContext::default(), None)
            .await
            .expect_err("delete"),
        driver.list(&rbd).await.expect_err("list"),
    ];
    for e in errors {
        match &e {
            DriverError::Unsupported { driver, reason, .. } => {
                assert_eq!(*driver, "file-plugin");
                assert!(
                    reason.contains("does not handle network volumes") && reason.contains("rbd"),
                    "{e}"
                );
            }
            other => panic!("expected Unsupported, got {other:?}: {other}"),
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "nothing was created"
    );
    assert!(
        !std::path::Path::new("rbd:pool").exists(),
        "nothing in the cwd"
    );

    // Its table has no incremental export: unsupported, naming the plugin.
    let e = driver
        .export_diff(&rbd, &snapshot, None, &dir.path().join("d"), None)
        .await
        .expect_err("export_diff");
    assert!(
        matches!(&e, DriverError::Unsupported { reason, .. } if reason.contains("plugin 'file-plugin'") && reason.contains("export_diff")),
        "{e:?}"
    );
}
