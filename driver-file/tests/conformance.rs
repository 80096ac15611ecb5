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
/// with the harness `$harness` gives (`None` skips the test).
macro_rules! checks {
    ($harness:expr) => {
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

    checks!(harness());
}

/// qcow2 images copied as opaque files, with real `qemu-img` and
/// `qemu-io`.
mod qcow2 {
    use std::process::Command;

    use super::*;

    struct Qcow2Harness {
        driver: FileDriver,
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
            SnapshotMode::Copy
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

    /// The harness, or `None` (with the reason printed) when `qemu-img`
    /// or `qemu-io` is missing and backends are not required.
    fn harness() -> Option<Qcow2Harness> {
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
            driver: FileDriver::new(),
        })
    }

    checks!(harness());
}
