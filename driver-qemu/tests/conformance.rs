//! The driver conformance suite (`snapshot_core::conformance`) against
//! real qcow2 images with real `qemu-img`: once for internal snapshots,
//! once for external overlays. Content is written with `qemu-io` and read
//! back as a guest sees it with `qemu-img convert -O raw`.

use std::path::Path;
use std::process::Command;

use driver_qemu::QemuDriver;
use snapshot_core::conformance::{self, Harness, VOLUME_SIZE};
use snapshot_core::driver::{SnapshotMode, Volume, VolumeDriver, VolumeFormat};

struct Qcow2Harness {
    driver: QemuDriver,
    mode: SnapshotMode,
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot run ({e}); install qemu-utils"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Harness for Qcow2Harness {
    fn driver(&self) -> &dyn VolumeDriver {
        &self.driver
    }

    fn mode(&self) -> SnapshotMode {
        self.mode
    }

    fn new_volume(&self, dir: &Path, name: &str) -> Volume {
        let path = dir.join(format!("{name}.qcow2"));
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                path.to_str().expect("utf-8 path"),
                &VOLUME_SIZE.to_string(),
            ],
        );
        Volume::new(path, VolumeFormat::Qcow2)
    }

    fn write(&self, volume: &Volume, offset: u64, len: u64, pattern: u8) {
        run(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                &format!("write -P {pattern} {offset} {len}"),
                volume.path.to_str().expect("utf-8 path"),
            ],
        );
    }

    fn content(&self, volume: &Volume) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = dir.path().join("content.raw");
        run(
            "qemu-img",
            &[
                "convert",
                "-f",
                "qcow2",
                "-O",
                "raw",
                volume.path.to_str().expect("utf-8 path"),
                raw.to_str().expect("utf-8 path"),
            ],
        );
        std::fs::read(raw).expect("reading the converted image")
    }
}

/// The harness, or `None` (with the reason printed) when `qemu-img` or
/// `qemu-io` is missing and backends are not required.
fn harness(mode: SnapshotMode) -> Option<Qcow2Harness> {
    for tool in ["qemu-img", "qemu-io"] {
        if Command::new(tool).arg("--version").output().is_err() {
            assert!(
                std::env::var_os("VIRTSNAP_REQUIRE_BACKENDS").is_none(),
                "{tool} is required (VIRTSNAP_REQUIRE_BACKENDS is set); install qemu-utils"
            );
            eprintln!("SKIP: {tool} is not installed");
            return None;
        }
    }
    Some(Qcow2Harness {
        driver: QemuDriver::new(),
        mode,
    })
}

macro_rules! suite {
    ($module:ident, $mode:expr) => {
        mod $module {
            use super::*;

            macro_rules! check {
                ($name:ident) => {
                    #[tokio::test]
                    async fn $name() {
                        let Some(h) = harness($mode) else { return };
                        let dir = tempfile::tempdir().expect("tempdir");
                        conformance::$name(&h, dir.path()).await;
                    }
                };
            }

            check!(create_revert_delete);
            check!(existing_is_refused);
            check!(undo_restores);
            check!(delete_is_idempotent);
            check!(checksum_detects_damage);
            check!(chain_with_branches);
        }
    };
}

suite!(internal, SnapshotMode::Internal);
suite!(external, SnapshotMode::External);
