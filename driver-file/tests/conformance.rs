//! The driver conformance suite (`snapshot_core::conformance`) against
//! the file driver's full copies, twice: for raw files, written and read
//! with plain file I/O (a raw file's bytes are what a guest sees), and for
//! qcow2 images copied as opaque files, written with `qemu-io` and read
//! back as a guest sees them with `qemu-img convert -O raw`.

use driver_file::FileDriver;
use snapshot_core::driver::SnapshotMode;

/// Raw files, written and read with plain file I/O.
mod raw {
    use snapshot_core::conformance::backends::RawHarness;

    use super::*;

    fn harness() -> Option<RawHarness<FileDriver>> {
        Some(RawHarness {
            driver: FileDriver::new(),
            mode: SnapshotMode::Copy,
        })
    }

    snapshot_core::conformance_tests!(harness(), "file-raw");
}

/// qcow2 images copied as opaque files, with real `qemu-img` and
/// `qemu-io`.
mod qcow2 {
    use snapshot_core::conformance::backends::{self, Qcow2Harness};

    use super::*;

    /// The harness, or `None` when the qemu tools are missing and backends
    /// are not required.
    fn harness() -> Option<Qcow2Harness<FileDriver>> {
        backends::qemu_tools_present().then(|| Qcow2Harness {
            driver: FileDriver::new(),
            mode: SnapshotMode::Copy,
        })
    }

    snapshot_core::conformance_tests!(harness(), "file-qcow2");
}
