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
    assert_eq!(p.abi, (1, 0));
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
