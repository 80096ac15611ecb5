//! btrfs volume snapshots: [`BtrfsDriver`], the `btrfs`
//! [`snapshot_core::driver::VolumeDriver`], for two kinds of volume on a
//! btrfs filesystem.
//!
//! - **Files** (a raw or qcow2 image, any file in a btrfs directory):
//!   a snapshot is a reflinked copy (`FICLONE`) beside the volume, in the
//!   volume's format, sharing every block with it until either is
//!   written: O(1) in time and space whatever the file's size. Revert
//!   reflinks the snapshot into a temporary file beside the volume and
//!   renames it over the volume (the old content stays whole until the
//!   rename); delete removes the snapshot's file. These are
//!   [`snapshot_core::driver::SnapshotMode::Copy`] snapshots, as the
//!   `file` driver makes, but never a byte is copied: where a reflink is
//!   impossible the driver refuses instead of copying.
//! - **Subvolumes** (the volume's path is a btrfs subvolume): a snapshot
//!   is a read-only subvolume snapshot (`btrfs subvolume snapshot -r`),
//!   kept by name in the directory `.VOLUME.snapshots` beside the volume
//!   ([`snapshot_dir`]): [`snapshot_core::driver::SnapshotMode::Internal`]
//!   snapshots that [`snapshot_core::driver::VolumeDriver::list`] finds
//!   again. Revert makes a writable snapshot of the snapshot under a
//!   temporary name beside the volume and swaps the two atomically
//!   (`renameat2(RENAME_EXCHANGE)`), then deletes the old state; delete
//!   is `btrfs subvolume delete`.
//!
//! On any other filesystem the driver declares nothing (default
//! [`snapshot_core::driver::Capabilities`]), so a caller that tries
//! drivers in order of preference falls through to the `file` driver.
//! A volume a running guest writes to is declined too.
//!
//! Subvolume work runs `btrfs` (btrfs-progs): the subvolume ioctls need
//! `unsafe` code, which this workspace forbids. File work is plain
//! syscalls through `rustix`, on `tokio::task::spawn_blocking`.

mod driver;
mod probe;
mod reflink;
mod subvolume;

pub use driver::BtrfsDriver;
pub use probe::{BTRFS_SUPER_MAGIC, is_btrfs};
pub use subvolume::snapshot_dir;
