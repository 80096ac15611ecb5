//! The driver conformance suite (`snapshot_core::conformance`) against
//! the btrfs driver on a real, loop-mounted btrfs: reflinked snapshots of
//! raw files (copy mode) and read-only snapshots of subvolumes (internal
//! mode), the volume's bytes written and read with plain file I/O. Each
//! is also a row of the integration matrix (`matrix`). Both run twice:
//! with the driver linked in, and built as a plugin loaded through the
//! plugin ABI.

mod support;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use driver_btrfs::BtrfsDriver;
use snapshot_core::conformance::{self, Harness, VOLUME_SIZE};
use snapshot_core::driver::{SnapshotMode, Volume, VolumeDriver, VolumeFormat};
use support::Btrfs;

/// The file holding a subvolume volume's bytes.
const DATA: &str = "data";

/// Writes `len` bytes of `pattern` at `offset` of the file `path`.
fn write_at(path: &Path, offset: u64, len: u64, pattern: u8) {
    let data = vec![pattern; usize::try_from(len).expect("a small write")];
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.write_all_at(&data, offset))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Raw files in a btrfs directory, snapshotted by reflink.
struct FileHarness<D> {
    driver: D,
}

impl<D: VolumeDriver> Harness for FileHarness<D> {
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
        write_at(&volume.path, offset, len, pattern);
    }

    fn content(&self, volume: &Volume) -> Vec<u8> {
        read(&volume.path)
    }
}

/// Subvolumes holding one file, [`DATA`], as their content.
struct SubvolumeHarness<D> {
    driver: D,
}

impl<D: VolumeDriver> Harness for SubvolumeHarness<D> {
    fn driver(&self) -> &dyn VolumeDriver {
        &self.driver
    }

    fn mode(&self) -> SnapshotMode {
        SnapshotMode::Internal
    }

    fn new_volume(&self, dir: &Path, name: &str) -> Volume {
        let path = dir.join(name);
        support::btrfs(&["subvolume", "create", path.to_str().expect("UTF-8")]);
        File::create(path.join(DATA))
            .and_then(|f| f.set_len(VOLUME_SIZE))
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Volume::new(path, VolumeFormat::Other("subvolume".into()))
    }

    fn write(&self, volume: &Volume, offset: u64, len: u64, pattern: u8) {
        write_at(&volume.path.join(DATA), offset, len, pattern);
    }

    fn content(&self, volume: &Volume) -> Vec<u8> {
        read(&volume.path.join(DATA))
    }
}

macro_rules! suite {
    ($module:ident, $harness:expr, $row:literal) => {
        mod $module {
            use super::*;

            macro_rules! check {
                ($name:ident) => {
                    #[tokio::test]
                    async fn $name() {
                        let Some(fs) = Btrfs::new_or_skip("300M") else {
                            return;
                        };
                        conformance::$name(&$harness, fs.path()).await;
                    }
                };
            }

            check!(create_revert_delete);
            check!(existing_is_refused);
            check!(undo_restores);
            check!(delete_is_idempotent);
            check!(checksum_detects_damage);
            check!(chain_with_branches);

            /// The integration matrix's row, on one btrfs.
            #[tokio::test]
            async fn matrix() {
                let Some(fs) = Btrfs::new_or_skip("300M") else {
                    return;
                };
                conformance::matrix::test(&$harness, fs.path(), $row).await;
            }
        }
    };
}

suite!(
    file,
    FileHarness {
        driver: BtrfsDriver::new()
    },
    "btrfs-reflink"
);
suite!(
    subvolume,
    SubvolumeHarness {
        driver: BtrfsDriver::new()
    },
    "btrfs-subvolume"
);

/// The driver built as a plugin (`plugins/btrfs`, `btrfs-plugin`), loaded
/// through the plugin ABI: the same checks as linked in.
fn plugin() -> plugin_abi::host::PluginDriver {
    let path = plugin_abi::testing::cargo_plugin("virtsnap-plugin-btrfs", "virtsnap_plugin_btrfs");
    let plugin = plugin_abi::host::load(&path).unwrap_or_else(|e| panic!("{e}"));
    plugin_abi::host::PluginDriver::open(plugin).unwrap_or_else(|e| panic!("{e}"))
}

suite!(
    plugin_file,
    FileHarness { driver: plugin() },
    "btrfs-plugin-reflink"
);
suite!(
    plugin_subvolume,
    SubvolumeHarness { driver: plugin() },
    "btrfs-plugin-subvolume"
);
