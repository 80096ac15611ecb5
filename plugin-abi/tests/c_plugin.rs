//! The example C plugin (`plugins/dircopy`, full copies with sha256
//! checksums, built on jansson), compiled with the system's C compiler
//! by this test, loaded through the ABI and run through the driver
//! conformance suite on raw files and on qcow2 images; and its one
//! option, `root`, which limits the volumes it takes.

mod support;

use std::sync::Arc;

use plugin_abi::host::PluginDriver;
use snapshot_core::conformance::Harness;
use snapshot_core::conformance::backends::{self, Qcow2Harness, RawHarness};
use snapshot_core::driver::{SnapshotMode, VolumeDriver, VolumeState};

fn plugin() -> Option<PluginDriver> {
    support::dircopy().map(|p| support::driver(&p))
}

mod raw {
    use super::*;

    fn harness() -> Option<RawHarness<PluginDriver>> {
        plugin().map(|driver| RawHarness {
            driver,
            mode: SnapshotMode::Copy,
        })
    }

    snapshot_core::conformance_tests!(harness(), "dircopy-plugin-raw");
}

mod qcow2 {
    use super::*;

    fn harness() -> Option<Qcow2Harness<PluginDriver>> {
        if !backends::qemu_tools_present() {
            return None;
        }
        plugin().map(|driver| Qcow2Harness {
            driver,
            mode: SnapshotMode::Copy,
        })
    }

    snapshot_core::conformance_tests!(harness(), "dircopy-plugin-qcow2");
}

/// With `root`, the plugin takes the volumes under it and declines the
/// others; an unknown option stops it from starting.
#[tokio::test]
async fn root_limits_the_volumes_it_takes() {
    let Some(path) = support::dircopy() else {
        return;
    };
    let plugin = support::load(&path);
    assert_eq!(plugin.name, "dircopy");
    let inside = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let mut options = serde_json::Map::new();
    options.insert("root".into(), inside.path().to_str().expect("utf-8").into());
    let driver = PluginDriver::open_with(Arc::clone(&plugin), options).expect("open with root");
    let h = RawHarness {
        driver: driver_file::FileDriver::new(),
        mode: SnapshotMode::Copy,
    };
    let a = h.new_volume(inside.path(), "a");
    let b = h.new_volume(outside.path(), "b");
    let caps = driver
        .capabilities(&a, VolumeState::Offline)
        .await
        .expect("inside");
    assert!(caps.copy && caps.revert && caps.checksums, "{caps:?}");
    let caps = driver
        .capabilities(&b, VolumeState::Offline)
        .await
        .expect("outside");
    assert_eq!(
        caps,
        Default::default(),
        "a volume outside root is declined"
    );
    let caps = driver
        .capabilities(&a, VolumeState::InUse)
        .await
        .expect("in use");
    assert_eq!(caps, Default::default(), "a volume in use is declined");

    let mut typo = serde_json::Map::new();
    typo.insert("rot".into(), "/".into());
    let e = PluginDriver::open_with(plugin, typo).expect_err("unknown option");
    assert!(e.message.contains("rot"), "{e}");
}
