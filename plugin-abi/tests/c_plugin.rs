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

/// A network volume: dircopy takes only local files, so it refuses every
/// request that requires `network-volume` (with a reason that says so),
/// which the host takes as declining the volume in `capabilities`; and it
/// has no incremental export. Nothing appears on disk.
#[tokio::test]
async fn network_volumes_are_declined() {
    use snapshot_core::driver::{DriverError, SnapshotRef, Volume, VolumeFormat};
    let Some(driver) = plugin() else {
        return;
    };
    let rbd = Volume::new("rbd:pool/image", VolumeFormat::Raw);
    for state in [VolumeState::Offline, VolumeState::InUse] {
        let caps = driver.capabilities(&rbd, state).await.expect("declined");
        assert_eq!(caps, Default::default(), "{state:?}");
    }
    let e = driver.list(&rbd).await.expect_err("list");
    match &e {
        DriverError::Unsupported { driver, reason, .. } => {
            assert_eq!(*driver, "dircopy");
            assert!(
                reason.contains("only local files") && reason.contains("rbd:pool/image"),
                "{e}"
            );
        }
        other => panic!("expected Unsupported, got {other:?}: {other}"),
    }
    assert!(
        !std::path::Path::new("rbd:pool").exists(),
        "nothing in the cwd"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let h = RawHarness {
        driver: driver_file::FileDriver::new(),
        mode: SnapshotMode::Copy,
    };
    let v = h.new_volume(dir.path(), "v");
    let before = std::fs::read(&v.path).expect("volume");
    let snapshot = SnapshotRef {
        name: "a".into(),
        mode: SnapshotMode::Copy,
        file: Some(v.path.with_extension("a")),
        checksum: None,
    };
    let file = dir.path().join("v.diff");
    let e = driver
        .export_diff(&v, &snapshot, None, &file, None)
        .await
        .expect_err("export_diff");
    assert!(
        matches!(&e, DriverError::Unsupported { reason, .. } if reason.contains("plugin 'dircopy'") && reason.contains("export_diff")),
        "{e:?}"
    );
    assert!(!file.exists());
    assert_eq!(std::fs::read(&v.path).expect("volume"), before);
}

/// A delete asking to flatten clones carries the `flatten-clones`
/// feature; dircopy, which does not know it, refuses the delete and its
/// copy stays; the same delete without the flag goes through.
#[tokio::test]
async fn a_delete_that_flattens_clones_is_refused_by_a_plugin_that_does_not_know_it() {
    use snapshot_core::driver::{DeleteContext, DriverError, SnapshotPlan};
    let Some(driver) = plugin() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let h = RawHarness {
        driver: driver_file::FileDriver::new(),
        mode: SnapshotMode::Copy,
    };
    let v = h.new_volume(dir.path(), "disk");
    let copy = dir.path().join("disk.a");
    let created = driver
        .create(
            &v,
            &SnapshotPlan {
                name: "a".into(),
                mode: SnapshotMode::Copy,
                file: Some(copy.clone()),
                checksum: false,
                writable: false,
            },
            None,
        )
        .await
        .expect("created");
    let flattening = DeleteContext {
        is_current: true,
        flatten_clones: true,
        ..DeleteContext::default()
    };
    let e = driver
        .delete(&v, &created.as_ref(), &flattening, None)
        .await
        .expect_err("flatten-clones is a feature dircopy does not know");
    assert!(matches!(e, DriverError::Unsupported { .. }), "{e:?}");
    assert!(e.to_string().contains("flatten-clones"), "{e}");
    assert!(copy.exists(), "the refused delete removed the copy");
    let plain = DeleteContext {
        is_current: true,
        ..DeleteContext::default()
    };
    driver
        .delete(&v, &created.as_ref(), &plain, None)
        .await
        .expect("deleted");
    assert!(!copy.exists());
}
