//! The driver conformance suite (`snapshot_core::conformance`) against
//! real qcow2 images with real `qemu-img`: once for internal snapshots,
//! once for external overlays. Content is written with `qemu-io` and read
//! back as a guest sees it with `qemu-img convert -O raw`. Each mode is
//! also a row of the integration matrix (`matrix`).

use driver_qemu::QemuDriver;
use snapshot_core::conformance::{self, backends};
use snapshot_core::driver::SnapshotMode;

/// The harness, or `None` when the qemu tools are missing and backends
/// are not required.
fn harness(mode: SnapshotMode) -> Option<backends::Qcow2Harness<QemuDriver>> {
    backends::qemu_tools_present().then(|| backends::Qcow2Harness {
        driver: QemuDriver::new(),
        mode,
    })
}

macro_rules! suite {
    ($module:ident, $mode:expr, $row:literal) => {
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

            /// The integration matrix's row.
            #[tokio::test]
            async fn matrix() {
                let Some(h) = harness($mode) else { return };
                let dir = tempfile::tempdir().expect("tempdir");
                conformance::matrix::test(&h, dir.path(), $row).await;
            }
        }
    };
}

suite!(internal, SnapshotMode::Internal, "qemu-internal");
suite!(external, SnapshotMode::External, "qemu-external");
