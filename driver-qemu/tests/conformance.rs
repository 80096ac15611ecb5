//! The driver conformance suite (`snapshot_core::conformance`) against
//! real qcow2 images with real `qemu-img`: once for internal snapshots,
//! once for external overlays. Content is written with `qemu-io` and read
//! back as a guest sees it with `qemu-img convert -O raw`. Each mode is
//! also a row of the integration matrix (`matrix`).

use driver_qemu::QemuDriver;
use snapshot_core::conformance::backends;
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

            snapshot_core::conformance_tests!(harness($mode), $row);
        }
    };
}

suite!(internal, SnapshotMode::Internal, "qemu-internal");
suite!(external, SnapshotMode::External, "qemu-external");
