//! The driver conformance suite (`snapshot_core::conformance`) against
//! the file driver's full copies, twice: for raw files, written and read
//! with plain file I/O (a raw file's bytes are what a guest sees), and for
//! qcow2 images copied as opaque files, written with `qemu-io` and read
//! back as a guest sees them with `qemu-img convert -O raw`.

use std::path::Path;

use driver_file::FileDriver;
use snapshot_core::conformance::{self, Harness, VOLUME_SIZE};
use snapshot_core::driver::{SnapshotMode, Volume, VolumeDriver, VolumeFormat};

/// Runs one conformance check as a `#[tokio::test]` of the same name,
/// with the harness `$harness` gives (`None` skips the test), and the
/// integration matrix's row `$row` as the test `matrix`.
macro_rules! checks {
    ($harness:expr, $row:literal) => {
        macro_rules! check {
            ($name:ident) => {
                #[tokio::test]
                async fn $name() {
                    let Some(h) = $harness else { return };
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

        #[tokio::test]
        async fn matrix() {
            let Some(h) = $harness else { return };
            let dir = tempfile::tempdir().expect("tempdir");
            conformance::matrix::test(&h, dir.path(), $row).await;
        }
    };
}

/// Raw files, written and read with plain file I/O.
mod raw {
    use std::fs::{self, File};
    use std::os::unix::fs::FileExt;

    use super::*;

    struct RawHarness {
        driver: FileDriver,
    }

    impl Harness for RawHarness {
        fn driver(&self) -> &dyn VolumeDriver {
            &self.driver
        }

        fn mode(&self) -> SnapshotMode {
            SnapshotMode::Copy
        }

        fn new_volume(&self, dir: &Path, name: &str) -> Volume {
            let path = dir.join(format!("{name}.img"));
            File::create(&path)
                .and_then(|f| f.set_len(VOLUME_SIZE))
                .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
            Volume::new(path, VolumeFormat::Raw)
        }

        fn write(&self, volume: &Volume, offset: u64, len: u64, pattern: u8) {
            let data = vec![pattern; usize::try_from(len).expect("a small write")];
            fs::OpenOptions::new()
                .write(true)
                .open(&volume.path)
                .and_then(|f| f.write_all_at(&data, offset))
                .unwrap_or_else(|e| panic!("writing {}: {e}", volume.path.display()));
        }

        fn content(&self, volume: &Volume) -> Vec<u8> {
            fs::read(&volume.path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", volume.path.display()))
        }
    }

    fn harness() -> Option<RawHarness> {
        Some(RawHarness {
            driver: FileDriver::new(),
        })
    }

    checks!(harness(), "file-raw");
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

    checks!(harness(), "file-qcow2");
}
